/*
 * test_samples.c - the ring of a sandbox's metrics samples
 * (src/service/sample_ring.c): it never holds more than SBX_SAMPLES_MAX,
 * keeps the newest in time order once wrapped, ignores a sample not newer
 * than its newest, and answers every time window with exactly the samples
 * inside it, wrapped or not.
 */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "service/sample_ring.h"

static struct sbx_sample
at (int64_t ms)
{
  struct sbx_sample s = { .at_ms = ms };
  s.m.pids = (uint64_t) ms;
  return s;
}

/* The window [FROM, TO] against a count by hand. */
static void
check_window (const struct sbx_sample_ring *r, int64_t from, int64_t to)
{
  size_t want_first = r->n, want = 0;
  for (size_t i = 0; i < r->n; i++)
    {
      int64_t t = sbx_sample_ring_at (r, i)->at_ms;
      if (t >= from && t <= to)
        {
          if (want == 0)
            want_first = i;
          want++;
        }
    }
  size_t first;
  size_t n = sbx_sample_ring_window (r, from, to, &first);
  CHECK (n == want);
  if (want)
    CHECK (first == want_first);
}

int
main (void)
{
  struct sbx_sample_ring r = { 0 };
  struct sbx_sample s;
  size_t first;
  CHECK (sbx_sample_ring_window (&r, 0, INT64_MAX, &first) == 0);

  /* every 5 s from t = 5000: growing, never past the bound */
  for (int64_t i = 1; i <= 2000; i++)
    {
      s = at (i * 5000);
      sbx_sample_ring_push (&r, &s);
      CHECK (r.n == (size_t) (i < SBX_SAMPLES_MAX ? i : SBX_SAMPLES_MAX));
      CHECK (r.cap <= SBX_SAMPLES_MAX && r.cap >= r.n);
      if (i == 100)
        {
          check_window (&r, 0, INT64_MAX);
          check_window (&r, 12000, 30000);
          check_window (&r, 15000, 15000);
          check_window (&r, 15001, 19999);
        }
    }
  CHECK (r.n == SBX_SAMPLES_MAX && r.cap == SBX_SAMPLES_MAX);
  /* the newest 720, oldest first */
  CHECK (sbx_sample_ring_at (&r, 0)->at_ms == (2000 - SBX_SAMPLES_MAX + 1) * 5000);
  CHECK (sbx_sample_ring_at (&r, r.n - 1)->at_ms == 2000 * 5000);
  for (size_t i = 1; i < r.n; i++)
    CHECK (sbx_sample_ring_at (&r, i)->at_ms - sbx_sample_ring_at (&r, i - 1)->at_ms == 5000);
  CHECK (sbx_sample_ring_at (&r, 7)->m.pids == (uint64_t) sbx_sample_ring_at (&r, 7)->at_ms);

  /* a sample not newer than the newest is not kept */
  s = at (2000 * 5000);
  sbx_sample_ring_push (&r, &s);
  s = at (1000);
  sbx_sample_ring_push (&r, &s);
  CHECK (r.n == SBX_SAMPLES_MAX && sbx_sample_ring_at (&r, r.n - 1)->at_ms == 2000 * 5000);

  /* windows of a wrapped ring, against a count by hand */
  int64_t edges[] = { 0, 1000, 1281 * 5000 - 1, 1281 * 5000, 1500 * 5000 + 1, 1700 * 5000, 2000 * 5000,
                      2000 * 5000 + 1, INT64_MAX };
  size_t ne = sizeof edges / sizeof *edges;
  for (size_t i = 0; i < ne; i++)
    for (size_t j = i; j < ne; j++)
      check_window (&r, edges[i], edges[j]);
  CHECK (sbx_sample_ring_window (&r, 1500 * 5000, 1509 * 5000, &first) == 10);
  CHECK (sbx_sample_ring_at (&r, first)->at_ms == 1500 * 5000);
  CHECK (sbx_sample_ring_window (&r, 0, 1000, &first) == 0);
  CHECK (sbx_sample_ring_window (&r, 2001 * 5000, INT64_MAX, &first) == 0);

  sbx_sample_ring_free (&r);
  CHECK (r.n == 0 && r.v == NULL);
  printf ("samples: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
