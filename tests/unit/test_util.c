/*
 * test_util.c - tests of the shared helpers (src/common/util.c) that the
 * other unit programs do not reach through their own code.
 *
 * sbx_read_file_at: a small file whole, a file past MAX cut at MAX, a
 * file of MAX exactly, an empty file, a file that grows between the
 * size the kernel reports and the read (a FIFO's writer here, whose size
 * reads 0), and /proc's files, which report a size of 0.
 *
 * sbx_thread_bulk and sbx_thread_hold_begin/end: a bulk thread runs at
 * SBX_BULK_NICE but at the normal priority while it holds a lock, holds
 * nesting, and a bulk asked inside a hold takes effect at its end (as
 * root: raising a priority back needs CAP_SYS_NICE).
 *
 * sbx_proc_stat_start and sbx_proc_start_time: lines whose command name
 * holds blanks and ')', cut short, or not numbers; a process that is
 * gone; and threads reading the start times of different processes at
 * once, each of which must always read its own (creates boot side by
 * side and record their inits' start times; a parser with one hidden
 * position, strtok's, gave a thread another's field now and then).
 * About a second.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O2 -Isrc -o /tmp/test_util tests/unit/test_util.c \
 *     src/common/error.c src/common/util.c -lpthread && /tmp/test_util
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"

#include "check.h"

static char dir[] = "/tmp/sbxd-test-util-XXXXXX";

/* A file NAME in DIR of LEN bytes, byte i being 'a' + i % 26. */
static void
make_file (const char *name, size_t len)
{
  char path[128];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen (path, "we");
  if (f == NULL)
    abort ();
  for (size_t i = 0; i < len; i++)
    fputc ('a' + (int) (i % 26), f);
  fclose (f);
}

static bool
pattern (const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (s[i] != 'a' + (int) (i % 26))
      return false;
  return s[len] == '\0';
}

static void
test_sizes (void)
{
  int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct sbx_err err;
  char *text = NULL;
  struct {
    const char *name;
    size_t len, max, want;
  } cases[] = {
    { "small", 727, 1u << 20, 727 },         /* a template.json */
    { "empty", 0, 1u << 20, 0 },
    { "exact", 5000, 5000, 5000 },
    { "over", 9000, 5000, 5000 },            /* cut at MAX */
    { "big", 300000, 1u << 20, 300000 },     /* past the first guess */
    { "page", 4096, 1u << 20, 4096 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      make_file (cases[i].name, cases[i].len);
      text = NULL;
      CHECK (sbx_read_file_at (dfd, cases[i].name, &text, cases[i].max, &err) == 0);
      CHECK (text && strlen (text) == cases[i].want && pattern (text, cases[i].want));
      free (text);
    }
  text = NULL;
  CHECK (sbx_read_file_at (dfd, "missing", &text, 100, &err) < 0 && err.code == ENOENT && text == NULL);
  close (dfd);
}

/* /proc reports 0 for the size of its files: they are read whole all the
   same, past the first 4 KiB. */
static void
test_proc (void)
{
  struct sbx_err err;
  char *text = NULL;
  CHECK (sbx_read_file_at (AT_FDCWD, "/proc/self/status", &text, 1u << 20, &err) == 0);
  CHECK (text && strstr (text, "VmRSS:") && strstr (text, "voluntary_ctxt_switches"));
  free (text);
  text = NULL;
  /* /proc/self/smaps runs well past 4 KiB (a score of lines per mapping) */
  CHECK (sbx_read_file_at (AT_FDCWD, "/proc/self/smaps", &text, 1u << 22, &err) == 0);
  CHECK (text && strlen (text) > 4096 && text[strlen (text) - 1] == '\n');
  free (text);
}

/* A FIFO: no size to go by, and what is written arrives in pieces. */
static void
test_fifo (void)
{
  char path[128];
  snprintf (path, sizeof path, "%s/fifo", dir);
  if (mkfifo (path, 0600) < 0)
    abort ();
  pid_t pid = fork ();
  if (pid == 0)
    {
      int fd = open (path, O_WRONLY);
      char chunk[3000];
      for (int i = 0; i < 5; i++)
        {
          memset (chunk, 'x', sizeof chunk);
          if (write (fd, chunk, sizeof chunk) != (ssize_t) sizeof chunk)
            _exit (1);
          usleep (10000);
        }
      _exit (0);
    }
  struct sbx_err err;
  char *text = NULL;
  CHECK (sbx_read_file_at (AT_FDCWD, path, &text, 10000, &err) == 0);
  CHECK (text && strlen (text) == 10000 && strspn (text, "x") == 10000);
  free (text);
  int status;
  waitpid (pid, &status, 0);
}

static int
my_nice (void)
{
  errno = 0;
  return getpriority (PRIO_PROCESS, (id_t) gettid ());
}

static void
test_priorities (void)
{
  if (geteuid () != 0)
    {
      fprintf (stderr, "test_priorities: skipped (not root)\n");
      return;
    }
  CHECK (my_nice () == 0);
  sbx_thread_bulk (true);
  CHECK (my_nice () == SBX_BULK_NICE);
  sbx_thread_hold_begin ();
  CHECK (my_nice () == 0);
  sbx_thread_hold_begin ();
  sbx_thread_hold_end ();
  CHECK (my_nice () == 0); /* still held once */
  sbx_thread_hold_end ();
  CHECK (my_nice () == SBX_BULK_NICE);
  sbx_thread_bulk (false);
  CHECK (my_nice () == 0);
  /* a hold outside bulk work changes nothing */
  sbx_thread_hold_begin ();
  CHECK (my_nice () == 0);
  /* bulk asked while holding: from the end of the hold */
  sbx_thread_bulk (true);
  CHECK (my_nice () == 0);
  sbx_thread_hold_end ();
  CHECK (my_nice () == SBX_BULK_NICE);
  /* an unmatched end is ignored */
  sbx_thread_hold_end ();
  CHECK (my_nice () == SBX_BULK_NICE);
  sbx_thread_bulk (false);
  CHECK (my_nice () == 0);
}

static void
test_stat_parse (void)
{
  /* field 3 is S, fields 4 to 21 the numbers 4 to 21, field 22 4242 */
  const char *tail = " S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 4242 23 24\n";
  char line[256];
  snprintf (line, sizeof line, "12 (sbx-init)%s", tail);
  CHECK (sbx_proc_stat_start (line) == 4242);
  snprintf (line, sizeof line, "12 (a) b (c) 7 8)%s", tail);
  CHECK (sbx_proc_stat_start (line) == 4242);
  snprintf (line, sizeof line, "12 (x)  S  4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21  99 23");
  CHECK (sbx_proc_stat_start (line) == 99);
  CHECK (sbx_proc_stat_start ("12 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21") == 0);
  CHECK (sbx_proc_stat_start ("12 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 ") == 0);
  CHECK (sbx_proc_stat_start ("12 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 -5 23") == 0);
  CHECK (sbx_proc_stat_start ("12 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 99999999999999999999999 23")
         == 0);
  CHECK (sbx_proc_stat_start ("12 x S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 4242 23") == 0);
  CHECK (sbx_proc_stat_start ("") == 0);
}

#define STARTERS 4
#define READS 20000

struct starter {
  pid_t pid;
  unsigned long long start;
  int wrong;
};

static void *
read_start (void *arg)
{
  struct starter *st = arg;
  for (int i = 0; i < READS; i++)
    if (sbx_proc_start_time (st->pid) != st->start)
      st->wrong++;
  return NULL;
}

static void
test_start_times (void)
{
  /* what ps(1) reads, for this process */
  unsigned long long mine = 0;
  FILE *f = fopen ("/proc/self/stat", "re");
  if (f)
    {
      char buf[1024] = "";
      if (fgets (buf, sizeof buf, f))
        {
          char *p = strrchr (buf, ')');
          int field = 2;
          for (char *save = NULL, *tok = p ? strtok_r (p + 1, " ", &save) : NULL; tok;
               tok = strtok_r (NULL, " ", &save))
            if (++field == 22)
              mine = strtoull (tok, NULL, 10);
        }
      fclose (f);
    }
  CHECK (mine > 0 && sbx_proc_start_time (getpid ()) == mine);
  /* processes started a few clock ticks apart, so that their start
     times differ */
  struct starter st[STARTERS];
  for (int i = 0; i < STARTERS; i++)
    {
      st[i].pid = fork ();
      if (st[i].pid == 0)
        {
          pause ();
          _exit (0);
        }
      st[i].start = sbx_proc_start_time (st[i].pid);
      st[i].wrong = 0;
      usleep (30000);
    }
  for (int i = 1; i < STARTERS; i++)
    CHECK (st[i].start > st[i - 1].start && st[0].start >= mine);
  pthread_t th[STARTERS];
  for (int i = 0; i < STARTERS; i++)
    pthread_create (&th[i], NULL, read_start, &st[i]);
  for (int i = 0; i < STARTERS; i++)
    pthread_join (th[i], NULL);
  for (int i = 0; i < STARTERS; i++)
    {
      if (st[i].wrong)
        fprintf (stderr, "start time of %d read wrong %d times in %d\n", (int) st[i].pid, st[i].wrong, READS);
      CHECK (st[i].wrong == 0);
    }
  /* gone (reaped): no start time */
  pid_t gone = st[0].pid;
  for (int i = 0; i < STARTERS; i++)
    {
      kill (st[i].pid, SIGKILL);
      waitpid (st[i].pid, NULL, 0);
    }
  CHECK (sbx_proc_start_time (gone) == 0);
}

int
main (void)
{
  if (mkdtemp (dir) == NULL)
    abort ();
  test_sizes ();
  test_proc ();
  test_fifo ();
  test_priorities ();
  test_stat_parse ();
  test_start_times ();
  char cmd[128];
  snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
  if (system (cmd) != 0)
    fprintf (stderr, "cannot remove %s\n", dir);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
