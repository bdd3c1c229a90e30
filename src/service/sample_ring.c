/*
 * sample_ring.c - the bounded ring of one sandbox's metrics samples.
 *
 * A plain array used as a ring: appended to until it holds
 * SBX_SAMPLES_MAX, grown by doubling meanwhile (a sandbox that lives a
 * minute costs a few samples, not the hour's 56 KiB), then each new
 * sample takes the oldest one's place.  The samples are in time order,
 * so any time window is one run of them, found by two bisections.
 */
#include "sample_ring.h"

#include <stdlib.h>

const struct sbx_sample *
sbx_sample_ring_at (const struct sbx_sample_ring *r, size_t i)
{
  return &r->v[(r->head + i) % r->cap];
}

void
sbx_sample_ring_push (struct sbx_sample_ring *r, const struct sbx_sample *sample)
{
  if (r->n > 0 && sbx_sample_ring_at (r, r->n - 1)->at_ms >= sample->at_ms)
    return;
  if (r->n == r->cap && r->cap < SBX_SAMPLES_MAX)
    {
      /* not wrapped yet: head stays 0 until the ring is at its bound */
      size_t cap = r->cap ? r->cap * 2 : 16;
      if (cap > SBX_SAMPLES_MAX)
        cap = SBX_SAMPLES_MAX;
      struct sbx_sample *v = realloc (r->v, cap * sizeof *v);
      if (v == NULL)
        return;
      r->v = v;
      r->cap = cap;
    }
  if (r->n < r->cap)
    r->v[(r->head + r->n++) % r->cap] = *sample;
  else
    {
      r->v[r->head] = *sample;
      r->head = (r->head + 1) % r->cap;
    }
}

/* The number of samples older than AT_MS (AFTER false) or not newer
   than it (AFTER true). */
static size_t
count_before (const struct sbx_sample_ring *r, int64_t at_ms, int after)
{
  size_t lo = 0, hi = r->n;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      int64_t t = sbx_sample_ring_at (r, mid)->at_ms;
      if (t < at_ms || (after && t == at_ms))
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo;
}

size_t
sbx_sample_ring_window (const struct sbx_sample_ring *r, int64_t from_ms, int64_t to_ms, size_t *first)
{
  *first = count_before (r, from_ms, 0);
  size_t end = count_before (r, to_ms, 1);
  return end > *first ? end - *first : 0;
}

void
sbx_sample_ring_free (struct sbx_sample_ring *r)
{
  free (r->v);
  *r = (struct sbx_sample_ring) { 0 };
}
