/*
 * output.c - what sbx prints: JSON for scripts, aligned tables and times
 * for people, and the progress bar of long transfers.
 */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void
cli_print_json (const json_t *j)
{
  json_dumpf (j, stdout, JSON_INDENT (2) | JSON_ENCODE_ANY);
  fputc ('\n', stdout);
}

/* ---- tables ---- */

static char *
cell (const char *s)
{
  char *d = strdup (s && *s ? s : "-");
  if (d)
    for (char *p = d; *p; p++)
      if ((unsigned char) *p < 0x20 || *p == 0x7f)
        *p = '?';
  return d;
}

static void
add_row (struct cli_table *t, va_list ap)
{
  if (t->nrow == t->cap)
    {
      size_t cap = t->cap ? 2 * t->cap : 16;
      char **c = realloc (t->cells, cap * t->ncol * sizeof *c);
      if (c == NULL)
        return;
      t->cells = c;
      t->cap = cap;
    }
  for (size_t i = 0; i < t->ncol; i++)
    t->cells[t->nrow * t->ncol + i] = cell (va_arg (ap, const char *));
  t->nrow++;
}

void
cli_table_init (struct cli_table *t, size_t ncol, ...)
{
  memset (t, 0, sizeof *t);
  t->ncol = ncol;
  va_list ap;
  va_start (ap, ncol);
  add_row (t, ap);
  va_end (ap);
}

void
cli_table_row (struct cli_table *t, ...)
{
  va_list ap;
  va_start (ap, t);
  add_row (t, ap);
  va_end (ap);
}

void
cli_table_print (struct cli_table *t)
{
  size_t *w = calloc (t->ncol, sizeof *w);
  if (w == NULL)
    return;
  for (size_t r = 0; r < t->nrow; r++)
    for (size_t i = 0; i < t->ncol; i++)
      {
        const char *s = t->cells[r * t->ncol + i];
        size_t n = s ? strlen (s) : 0;
        if (n > w[i])
          w[i] = n;
      }
  for (size_t r = 0; r < t->nrow; r++)
    {
      for (size_t i = 0; i < t->ncol; i++)
        {
          const char *s = t->cells[r * t->ncol + i];
          if (i + 1 < t->ncol)
            printf ("%-*s  ", (int) w[i], s ? s : "");
          else
            printf ("%s\n", s ? s : "");
        }
    }
  free (w);
}

void
cli_table_free (struct cli_table *t)
{
  for (size_t i = 0; i < t->nrow * t->ncol; i++)
    free (t->cells[i]);
  free (t->cells);
  memset (t, 0, sizeof *t);
}

/* ---- times ---- */

const char *
cli_time (const char *s, char *buf, size_t n)
{
  if (s == NULL || strlen (s) < 19)
    return s;
  snprintf (buf, n, "%.10s %.8s", s, s + 11);
  return buf;
}

int64_t
cli_time_ms (const char *s)
{
  struct tm tm = { 0 };
  int ms = 0, used = 0;
  if (s == NULL
      || sscanf (s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                 &tm.tm_sec, &used)
             != 6)
    return -1;
  if (s[used] == '.')
    {
      int d = 0;
      for (const char *p = s + used + 1; *p >= '0' && *p <= '9'; p++, d++)
        if (d < 3)
          ms = ms * 10 + (*p - '0');
      for (; d < 3; d++)
        ms *= 10;
    }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm (&tm);
  return t < 0 ? -1 : (int64_t) t * 1000 + ms;
}

/* ---- progress ---- */

#define PROGRESS_MIN_BYTES (1u << 20) /* smaller transfers show none */

static uint64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

void
cli_progress_start (struct cli_progress *p, const char *label, uint64_t total)
{
  memset (p, 0, sizeof *p);
  p->label = label;
  p->total = total;
  p->start_ns = now_ns ();
  p->on = isatty (2) && getenv ("SBX_NO_PROGRESS") == NULL;
}

static void
draw (struct cli_progress *p)
{
  double secs = (double) (now_ns () - p->start_ns) / 1e9;
  double rate = secs > 0 ? (double) p->done / secs : 0;
  unsigned pct = p->total ? (unsigned) (p->done * 100 / p->total) : 0;
  char bar[31];
  size_t fill = p->total ? (size_t) (p->done * 30 / p->total) : 0;
  for (size_t i = 0; i < 30; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[30] = '\0';
  fprintf (stderr, "\r%.40s [%s] %3u%% %.1f/%.1f MB %.1f MB/s\033[K", p->label, bar, pct, p->done / 1e6,
           p->total / 1e6, rate / 1e6);
}

void
cli_progress_update (struct cli_progress *p, uint64_t done, uint64_t total)
{
  if (total)
    p->total = total;
  p->done = done;
  if (!p->on || p->total < PROGRESS_MIN_BYTES)
    return;
  uint64_t t = now_ns ();
  if (t - p->last_ns < 100000000u)
    return;
  p->last_ns = t;
  draw (p);
}

void
cli_progress_end (struct cli_progress *p, bool ok)
{
  if (!p->on || p->total < PROGRESS_MIN_BYTES || p->last_ns == 0)
    return;
  if (ok)
    {
      p->done = p->total;
      draw (p);
      fputc ('\n', stderr);
    }
  else
    fputs ("\r\033[K", stderr);
}
