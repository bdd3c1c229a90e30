/*
 * sample_ring.h - the bounded ring of one sandbox's metrics samples, in
 * time order (samples.c keeps one per sandbox).
 */
#ifndef SBX_SERVICE_SAMPLE_RING_H
#define SBX_SERVICE_SAMPLE_RING_H

#include <stddef.h>
#include <stdint.h>

#include "../core/sandbox.h"

/* Samples kept per sandbox: the last hour at E2B's 5 s. */
#define SBX_SAMPLES_MAX 720u

struct sbx_sample {
  int64_t at_ms;        /* wall clock, ms since the epoch */
  struct sbx_metrics m; /* cpu_used_pct: averaged since the previous sample */
};

/* All zero is an empty ring.  It grows by doubling up to SBX_SAMPLES_MAX,
   then the newest sample overwrites the oldest. */
struct sbx_sample_ring {
  struct sbx_sample *v; /* v[(head + i) % cap] is the i-th oldest */
  size_t cap, n, head;
};

/* Append SAMPLE, unless it is not newer than the newest (two samplers at
   once) or memory runs out: then it is lost and the ring stays. */
void sbx_sample_ring_push (struct sbx_sample_ring *r, const struct sbx_sample *sample);
/* The I-th oldest sample (I < r->n). */
const struct sbx_sample *sbx_sample_ring_at (const struct sbx_sample_ring *r, size_t i);
/* The samples taken within [FROM_MS, TO_MS]: the run of them from the
   *FIRST-th oldest on; returns how many. */
size_t sbx_sample_ring_window (const struct sbx_sample_ring *r, int64_t from_ms, int64_t to_ms, size_t *first);
void sbx_sample_ring_free (struct sbx_sample_ring *r);

#endif
