/*
 * test_log.c - tests of the logger (src/common/log.c) and the daemon's
 * JSON-lines sink (src/daemon/log_json.c).
 *
 * Lines are captured through a pipe, as the daemon's stderr would carry
 * them: text format (time, level, message, key=value fields, quoting and
 * escaping, so that one record is one line whatever it holds), levels,
 * bounds (fields, line length), errno kept, a custom sink, the JSON sink
 * (parsed back with jansson, values bounded), and lines of concurrent
 * threads never interleaving, even past PIPE_BUF.  No root; well under a second.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O2 -Isrc -o /tmp/test_log tests/unit/test_log.c \
 *     src/common/log.c src/daemon/log_json.c src/common/util.c src/common/error.c -ljansson -lpthread \
 *     && /tmp/test_log
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/log_json.h"

#include "check.h"

static int pipe_rd = -1, pipe_wr = -1;

/* Everything written to the log since the last call (non-blocking read). */
static char *
drain (void)
{
  static char buf[1 << 20];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof buf - 1 && (n = read (pipe_rd, buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t) n;
  buf[len] = '\0';
  return buf;
}

/* The text after the "TIME LEVEL " prefix of a one-line capture, checking
   the prefix's shape on the way. */
static const char *
after_prefix (const char *line, const char *level)
{
  /* 2026-12-01T07:45:43.123Z */
  if (strlen (line) < 25 || line[4] != '-' || line[7] != '-' || line[10] != 'T' || line[13] != ':'
      || line[16] != ':' || line[19] != '.' || line[23] != 'Z' || line[24] != ' ')
    return NULL;
  size_t l = strlen (level);
  if (strncmp (line + 25, level, l) != 0 || line[25 + l] != ' ')
    return NULL;
  return line + 25 + l + 1;
}

static void
test_time (void)
{
  char t[32];
  sbx_log_format_time (0, t, sizeof t);
  CHECK (strcmp (t, "1970-01-01T00:00:00.000Z") == 0);
  sbx_log_format_time (1764574543123, t, sizeof t);   /* 2025-12-01 07:35:43.123 UTC */
  CHECK (strcmp (t, "2025-12-01T07:35:43.123Z") == 0);
  sbx_log_format_time (951782400007, t, sizeof t);    /* a leap day */
  CHECK (strcmp (t, "2000-02-29T00:00:00.007Z") == 0);

  /* a line carries the time it was written */
  int64_t before = sbx_wall_ms ();
  sbx_log (SBX_LOG_INFO, "now");
  int64_t after = sbx_wall_ms ();
  const char *out = drain ();
  char lo[32], hi[32];
  sbx_log_format_time (before, lo, sizeof lo);
  sbx_log_format_time (after, hi, sizeof hi);
  CHECK (strncmp (out, lo, 24) >= 0 && strncmp (out, hi, 24) <= 0);
}

static void
test_text (void)
{
  sbx_log (SBX_LOG_INFO, "listening on %s:%d", "127.0.0.1", 49982);
  const char *out = drain ();
  const char *rest = after_prefix (out, "info");
  CHECK (rest && strcmp (rest, "listening on 127.0.0.1:49982\n") == 0);

  sbx_log_fields (SBX_LOG_WARN, "sandbox stopped", "sandbox", "sbx_1a2b", "reason", "by request", "empty", "",
                  "quote", "say \"hi\"", "eq", "a=b", "null", NULL, "path", "C:\\x", NULL);
  out = drain ();
  rest = after_prefix (out, "warn");
  CHECK (rest
         && strcmp (rest, "sandbox stopped sandbox=sbx_1a2b reason=\"by request\" empty=\"\" quote=\"say \\\"hi\\\"\""
                          " eq=\"a=b\" null=\"\" path=\"C:\\\\x\"\n")
                == 0);

  /* control characters never split a record: one line, escaped */
  sbx_log_fields (SBX_LOG_ERROR, "bad\nmessage\x01", "output", "line1\nline2\r\t\x1b[31m", NULL);
  out = drain ();
  rest = after_prefix (out, "error");
  CHECK (rest && strcmp (rest, "bad\\nmessage\\x01 output=\"line1\\nline2\\r\\t\\x1b[31m\"\n") == 0);
  CHECK (strchr (out, '\n') == out + strlen (out) - 1);
  sbx_log (SBX_LOG_INFO, "%s", "two\nlines");
  out = drain ();
  CHECK (strstr (out, "two\\nlines\n") != NULL && strchr (out, '\n') == out + strlen (out) - 1);

  /* UTF-8 passes through unquoted */
  sbx_log_fields (SBX_LOG_INFO, "données", "clé", "été", NULL);
  rest = after_prefix (drain (), "info");
  CHECK (rest && strcmp (rest, "données clé=été\n") == 0);
}

static void
test_levels (void)
{
  enum sbx_log_level l;
  CHECK (sbx_log_level_parse ("debug", &l) == 0 && l == SBX_LOG_DEBUG);
  CHECK (sbx_log_level_parse ("info", &l) == 0 && l == SBX_LOG_INFO);
  CHECK (sbx_log_level_parse ("warn", &l) == 0 && l == SBX_LOG_WARN);
  CHECK (sbx_log_level_parse ("warning", &l) == 0 && l == SBX_LOG_WARN);
  CHECK (sbx_log_level_parse ("error", &l) == 0 && l == SBX_LOG_ERROR);
  CHECK (sbx_log_level_parse ("INFO", &l) < 0 && sbx_log_level_parse ("", &l) < 0
         && sbx_log_level_parse (NULL, &l) < 0);
  CHECK (strcmp (sbx_log_level_name (SBX_LOG_WARN), "warn") == 0);

  CHECK (sbx_log_get_level () == SBX_LOG_INFO);   /* the default */
  sbx_log (SBX_LOG_DEBUG, "hidden");
  CHECK (drain ()[0] == '\0');
  sbx_log_set_level (SBX_LOG_DEBUG);
  sbx_log (SBX_LOG_DEBUG, "shown");
  CHECK (after_prefix (drain (), "debug") != NULL);
  sbx_log_set_level (SBX_LOG_ERROR);
  sbx_log (SBX_LOG_WARN, "hidden");
  sbx_log_fields (SBX_LOG_INFO, "hidden", "k", "v", NULL);
  CHECK (drain ()[0] == '\0');
  sbx_log (SBX_LOG_ERROR, "shown");
  CHECK (after_prefix (drain (), "error") != NULL);
  CHECK (!sbx_log_enabled (SBX_LOG_WARN) && sbx_log_enabled (SBX_LOG_ERROR));
  sbx_log_set_level (SBX_LOG_INFO);
}

static void
test_bounds (void)
{
  /* more than SBX_LOG_MAX_FIELDS fields: the first ones are kept */
  sbx_log_fields (SBX_LOG_INFO, "many", "f1", "1", "f2", "2", "f3", "3", "f4", "4", "f5", "5", "f6", "6", "f7", "7",
                  "f8", "8", "f9", "9", "f10", "10", "f11", "11", "f12", "12", "f13", "13", "f14", "14", "f15", "15",
                  "f16", "16", "f17", "17", NULL);
  const char *out = drain ();
  CHECK (strstr (out, " f16=16\n") != NULL && strstr (out, "f17") == NULL);

  /* a huge value: the line is cut, ends with "...\n", and fits the bound */
  size_t big = 3 * SBX_LOG_LINE_MAX;
  char *v = malloc (big + 1);
  if (v == NULL)
    abort ();
  memset (v, 'v', big);
  v[big] = '\0';
  sbx_log_fields (SBX_LOG_INFO, "big", "value", v, "after", "x", NULL);
  out = drain ();
  size_t n = strlen (out);
  CHECK (n <= SBX_LOG_LINE_MAX && n > SBX_LOG_LINE_MAX - 16);
  CHECK (n > 4 && strcmp (out + n - 4, "...\n") == 0 && strchr (out, '\n') == out + n - 1);
  /* and a huge message is bounded too */
  sbx_log (SBX_LOG_INFO, "%s", v);
  out = drain ();
  CHECK (strlen (out) < SBX_LOG_MSG_MAX + 64 && out[strlen (out) - 1] == '\n');
  free (v);

  /* format_text into a small buffer stays inside it */
  char small[40];
  memset (small, '#', sizeof small);
  const char *fields[] = { "key", "a long value that does not fit" };
  struct sbx_log_record rec = { .level = SBX_LOG_INFO, .time_ms = 0, .msg = "message", .fields = fields,
                                .n_fields = 1 };
  size_t len = sbx_log_format_text (&rec, small, 32);
  CHECK (len == 31 && small[31] == '\0' && small[32] == '#' && strcmp (small + 27, "...\n") == 0);
}

static void
test_errno_kept (void)
{
  errno = EPERM;
  sbx_log_fields (SBX_LOG_INFO, "x", "k", "v", NULL);
  CHECK (errno == EPERM);
  errno = ENOENT;
  sbx_log (SBX_LOG_INFO, "open: %m");
  CHECK (errno == ENOENT);
  CHECK (strstr (drain (), "open: No such file or directory\n") != NULL);
}

/* ------------------------------------------------------------- sinks */

static int sink_calls;
static char sink_msg[64], sink_fields[256];

static void
capture_sink (const struct sbx_log_record *rec, void *ud)
{
  sink_calls++;
  CHECK (ud == &sink_calls);
  snprintf (sink_msg, sizeof sink_msg, "%s/%s", sbx_log_level_name (rec->level), rec->msg);
  sink_fields[0] = '\0';
  for (size_t i = 0; i < rec->n_fields; i++)
    {
      size_t l = strlen (sink_fields);
      snprintf (sink_fields + l, sizeof sink_fields - l, "%s:%s;", rec->fields[2 * i], rec->fields[2 * i + 1]);
    }
}

static void
test_sink (void)
{
  sbx_log_set_sink (capture_sink, &sink_calls);
  sbx_log_fields (SBX_LOG_WARN, "m", "a", "1", "b", NULL, NULL);
  CHECK (sink_calls == 1 && strcmp (sink_msg, "warn/m") == 0 && strcmp (sink_fields, "a:1;b:;") == 0);
  sbx_log (SBX_LOG_DEBUG, "filtered before the sink");
  CHECK (sink_calls == 1);
  sbx_log (SBX_LOG_ERROR, "n=%d", 5);
  CHECK (sink_calls == 2 && strcmp (sink_msg, "error/n=5") == 0 && sink_fields[0] == '\0');
  CHECK (drain ()[0] == '\0');   /* the sink replaced the text */
  sbx_log_set_sink (NULL, NULL);
  sbx_log (SBX_LOG_INFO, "text again");
  CHECK (after_prefix (drain (), "info") != NULL && sink_calls == 2);
}

static json_t *
json_line (void)
{
  const char *out = drain ();
  size_t n = strlen (out);
  CHECK (n > 0 && out[n - 1] == '\n' && strchr (out, '\n') == out + n - 1);
  json_error_t e;
  json_t *j = json_loads (out, 0, &e);
  if (j == NULL)
    fprintf (stderr, "not JSON (%s): %s", e.text, out);
  return j;
}

static void
test_json_sink (void)
{
  sbx_log_set_sink (sbx_log_json_sink, NULL);
  int64_t before = sbx_wall_ms ();
  sbx_log_fields (SBX_LOG_INFO, "listening", "url", "http://127.0.0.1:49982", "state_dir", "/var/lib/sbxd/state",
                  NULL);
  json_t *j = json_line ();
  CHECK (j && json_object_size (j) == 5);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "level")), "info") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "msg")), "listening") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "url")), "http://127.0.0.1:49982") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "state_dir")), "/var/lib/sbxd/state") == 0);
  const char *t = j ? json_string_value (json_object_get (j, "time")) : NULL;
  char lo[32];
  sbx_log_format_time (before, lo, sizeof lo);
  CHECK (t && strlen (t) == 24 && t[23] == 'Z' && strncmp (t, lo, 16) >= 0);
  json_decref (j);

  /* the order: time, level, msg, then the fields */
  sbx_log_fields (SBX_LOG_ERROR, "m", "k", "v", NULL);
  const char *out = drain ();
  CHECK (strncmp (out, "{\"time\":\"", 9) == 0);
  CHECK (strstr (out, "\"level\":\"error\",\"msg\":\"m\",\"k\":\"v\"}\n") != NULL);

  /* control characters, quotes, invalid UTF-8, reserved and repeated names */
  sbx_log_fields (SBX_LOG_WARN, "multi\nline \"q\"", "out", "a\nb\x01", "bin", "ok\xff\xfe", "msg", "spoof",
                  "level", "debug", "k", "first", "k", "second", NULL);
  j = json_line ();
  CHECK (j && strcmp (json_string_value (json_object_get (j, "msg")), "multi\nline \"q\"") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "level")), "warn") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "out")), "a\nb\x01") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "bin")), "ok??") == 0);
  CHECK (j && strcmp (json_string_value (json_object_get (j, "k")), "first") == 0);
  CHECK (j && json_object_size (j) == 6);
  json_decref (j);

  sbx_log (SBX_LOG_DEBUG, "filtered");
  CHECK (drain ()[0] == '\0');
  errno = EXDEV;
  sbx_log (SBX_LOG_INFO, "printf %s %d", "style", 7);
  CHECK (errno == EXDEV);
  j = json_line ();
  CHECK (j && strcmp (json_string_value (json_object_get (j, "msg")), "printf style 7") == 0
         && json_object_size (j) == 3);
  json_decref (j);

  /* values are bounded: cut on a character boundary, with "..." */
  char big[SBX_LOG_VALUE_MAX + 100];
  big[0] = 'x';
  for (size_t i = 1; i + 2 < sizeof big; i += 2)
    memcpy (big + i, "\xc3\xa9", 2);
  big[sizeof big - 1] = '\0';
  sbx_log_fields (SBX_LOG_INFO, "big", "v", big, NULL);
  j = json_line ();
  const char *v = j ? json_string_value (json_object_get (j, "v")) : NULL;
  CHECK (v && strlen (v) == SBX_LOG_VALUE_MAX - 1 + 3 && strcmp (v + strlen (v) - 3, "...") == 0
         && memcmp (v, big, SBX_LOG_VALUE_MAX - 1) == 0);
  json_decref (j);
  sbx_log_set_sink (NULL, NULL);
}

/* ------------------------------------------------------- concurrency */

#define THREADS 4
#define LINES 400

static void *
writer (void *arg)
{
  char id[8];
  snprintf (id, sizeof id, "%ld", (long) arg);
  char filler[6000];   /* a line longer than PIPE_BUF: written whole all the same */
  memset (filler, 'a' + (int) (long) arg, sizeof filler - 1);
  filler[sizeof filler - 1] = '\0';
  for (int i = 0; i < LINES; i++)
    sbx_log_fields (SBX_LOG_INFO, "line", "thread", id, "filler", filler, NULL);
  return NULL;
}

struct reader_state {
  int fd;
  long lines, bad;
};

static void *
reader (void *arg)
{
  struct reader_state *rs = arg;
  FILE *f = fdopen (rs->fd, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline (&line, &cap, f)) > 0)
    {
      rs->lines++;
      const char *rest = after_prefix (line, "info");
      const char *fill = rest ? strstr (rest, "filler=") : NULL;
      /* a whole line holds one thread's filler and nothing else */
      if (rest == NULL || fill == NULL || strncmp (rest, "line thread=", 12) != 0 || strlen (fill) != 7 + 5999 + 1)
        rs->bad++;
      else
        for (int i = 8; i < 7 + 5999; i++)
          if (fill[i] != fill[7])
            {
              rs->bad++;
              break;
            }
    }
  free (line);
  fclose (f);
  return NULL;
}

static void
test_threads (void)
{
  int fds[2];
  if (pipe (fds) < 0)
    abort ();
  struct reader_state rs = { .fd = fds[0] };
  pthread_t r, w[THREADS];
  pthread_create (&r, NULL, reader, &rs);
  sbx_log_set_fd (fds[1]);
  for (long t = 0; t < THREADS; t++)
    pthread_create (&w[t], NULL, writer, (void *) t);
  for (int t = 0; t < THREADS; t++)
    pthread_join (w[t], NULL);
  close (fds[1]);
  pthread_join (r, NULL);
  sbx_log_set_fd (pipe_wr);
  CHECK (rs.lines == THREADS * LINES);
  CHECK (rs.bad == 0);
}

int
main (void)
{
  int fds[2];
  if (pipe2 (fds, O_NONBLOCK) < 0)
    abort ();
  pipe_rd = fds[0];
  pipe_wr = fds[1];
  fcntl (pipe_wr, F_SETPIPE_SZ, 1 << 20);
  sbx_log_set_fd (pipe_wr);
  CHECK (sbx_log_get_fd () == pipe_wr);

  test_time ();
  test_text ();
  test_levels ();
  test_bounds ();
  test_errno_kept ();
  test_sink ();
  test_json_sink ();
  test_threads ();

  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
