/*
 * driver.h - the plain driver every fuzz harness here shares when it is
 * not built for libFuzzer (-DSBX_LIBFUZZER): it replays the corpus files
 * named on the command line (or every file of the directories named),
 * each in a buffer of its exact size so that a read past the end is
 * caught by ASan, then runs FUZZ_ROUNDS mutations of them (bytes flipped
 * or replaced by one of FUZZ_SPECIAL, inputs cut or grown).
 *
 * A harness defines, before including this file:
 *   FUZZ_INPUT_MAX   the largest input it reads
 *   FUZZ_ROUNDS      how many mutations to run
 *   FUZZ_SPECIAL     a brace list of bytes its parser cares about
 */
#ifndef SBX_LIBFUZZER
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t fuzz_special[] = FUZZ_SPECIAL;
static size_t fuzz_n_inputs;
static uint8_t *fuzz_inputs[256];
static size_t fuzz_sizes[256];

static void
fuzz_run_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  if (f == NULL)
    return;
  uint8_t *buf = malloc (FUZZ_INPUT_MAX);
  size_t n = buf ? fread (buf, 1, FUZZ_INPUT_MAX, f) : 0;
  fclose (f);
  if (buf == NULL)
    return;
  uint8_t *exact = malloc (n ? n : 1);
  if (exact == NULL)
    {
      free (buf);
      return;
    }
  memcpy (exact, buf, n);
  LLVMFuzzerTestOneInput (exact, n);
  if (fuzz_n_inputs < sizeof fuzz_inputs / sizeof fuzz_inputs[0])
    {
      fuzz_inputs[fuzz_n_inputs] = exact;
      fuzz_sizes[fuzz_n_inputs++] = n;
    }
  else
    free (exact);
  free (buf);
}

static void
fuzz_run_path (const char *path)
{
  DIR *d = opendir (path);
  if (d == NULL)
    {
      fuzz_run_file (path);
      return;
    }
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      char p[4096];
      snprintf (p, sizeof p, "%s/%s", path, de->d_name);
      fuzz_run_file (p);
    }
  closedir (d);
}

int
main (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    fuzz_run_path (argv[i]);
  printf ("replayed %zu inputs\n", fuzz_n_inputs);
  size_t n_special = sizeof fuzz_special / sizeof fuzz_special[0];
  srand (1);
  for (int round = 0; round < FUZZ_ROUNDS && fuzz_n_inputs; round++)
    {
      size_t k = (size_t) rand () % fuzz_n_inputs;
      size_t n = fuzz_sizes[k] + (size_t) (rand () % 9) - 4;
      if (n > FUZZ_INPUT_MAX)
        n = (size_t) rand () % 64;
      uint8_t *b = malloc (n ? n : 1);
      if (b == NULL)
        break;
      for (size_t i = 0; i < n; i++)
        b[i] = i < fuzz_sizes[k] ? fuzz_inputs[k][i]
               : rand () % 2    ? fuzz_special[(size_t) rand () % n_special]
                                : (uint8_t) rand ();
      for (int flips = rand () % 4; flips > 0 && n; flips--)
        if (rand () % 2)
          b[(size_t) rand () % n] ^= (uint8_t) (1u << (rand () % 8));
        else
          b[(size_t) rand () % n] = fuzz_special[(size_t) rand () % n_special];
      LLVMFuzzerTestOneInput (b, n);
      free (b);
    }
  for (size_t i = 0; i < fuzz_n_inputs; i++)
    free (fuzz_inputs[i]);
  printf ("ok\n");
  return 0;
}
#endif
