/*
 * fuzz_egress_packet.c - fuzz harness for sbx_egress_packet_parse
 * (src/core/egress.c), which reads the headers of packets a sandbox sent
 * (as NFLOG hands them to the daemon) for the egress log.
 *
 * libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DSBX_LIBFUZZER -D_GNU_SOURCE -Isrc \
 *     -o /tmp/fuzz_egress_packet tests/fuzz/fuzz_egress_packet.c src/core/egress.c \
 *     && mkdir -p /tmp/fuzz-new && /tmp/fuzz_egress_packet /tmp/fuzz-new tests/fuzz/corpus/egress_packet
 * Plain driver (gcc), replaying the corpus files named (or every file of
 * the directories named), then random mutations of them:
 *   gcc -std=c17 -g -O1 -fsanitize=address,undefined -D_GNU_SOURCE -Isrc \
 *     -o /tmp/fuzz_egress_packet tests/fuzz/fuzz_egress_packet.c src/core/egress.c \
 *     && /tmp/fuzz_egress_packet tests/fuzz/corpus/egress_packet
 * (libFuzzer adds what it finds to the first directory named: a scratch
 * one, so the corpus here stays as it is.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/egress.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct sbx_egress_packet pk;
  if (sbx_egress_packet_parse (data, size, &pk) == 0)
    {
      /* what it gives must come from the bytes there */
      size_t ihl = (size_t) (data[0] & 0x0f) * 4;
      if (size < 20 || ihl < 20 || ihl > size || (data[0] >> 4) != 4)
        abort ();
      if (pk.port != 0 && size < ihl + 4)
        abort ();
      (void) sbx_egress_proto_name (pk.proto);
    }
  return 0;
}

#ifndef SBX_LIBFUZZER
#include <dirent.h>

#define INPUT_MAX 4096

static size_t n_inputs;
static uint8_t *inputs[256];
static size_t sizes[256];

static void
run_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  if (f == NULL)
    return;
  uint8_t *buf = malloc (INPUT_MAX);
  size_t n = buf ? fread (buf, 1, INPUT_MAX, f) : 0;
  fclose (f);
  if (buf == NULL)
    return;
  /* an exact-size copy, so that a read past the end is caught */
  uint8_t *exact = malloc (n ? n : 1);
  memcpy (exact, buf, n);
  LLVMFuzzerTestOneInput (exact, n);
  if (n_inputs < sizeof inputs / sizeof inputs[0])
    {
      inputs[n_inputs] = exact;
      sizes[n_inputs++] = n;
    }
  else
    free (exact);
  free (buf);
}

static void
run_path (const char *path)
{
  DIR *d = opendir (path);
  if (d == NULL)
    {
      run_file (path);
      return;
    }
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      char p[4096];
      snprintf (p, sizeof p, "%s/%s", path, de->d_name);
      run_file (p);
    }
  closedir (d);
}

int
main (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    run_path (argv[i]);
  printf ("replayed %zu inputs\n", n_inputs);
  /* then mutations of them: flipped bytes, cut or grown */
  srand (1);
  for (int round = 0; round < 200000 && n_inputs; round++)
    {
      size_t k = (size_t) rand () % n_inputs;
      size_t n = sizes[k] + (size_t) (rand () % 9) - 4;
      if (n > INPUT_MAX)
        n = (size_t) rand () % 64;
      uint8_t *b = malloc (n ? n : 1);
      for (size_t i = 0; i < n; i++)
        b[i] = i < sizes[k] ? inputs[k][i] : (uint8_t) rand ();
      for (int flips = rand () % 4; flips > 0 && n; flips--)
        b[(size_t) rand () % n] ^= (uint8_t) (1u << (rand () % 8));
      LLVMFuzzerTestOneInput (b, n);
      free (b);
    }
  for (size_t i = 0; i < n_inputs; i++)
    free (inputs[i]);
  printf ("ok\n");
  return 0;
}
#endif
