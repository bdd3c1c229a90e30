/*
 * samples.h - the history of every sandbox's metrics (E2B's getMetrics):
 * one sampler thread takes a sample of each running sandbox every
 * interval and keeps the last SBX_SAMPLES_MAX of each, in memory and in
 * the store (samples.c tells how).
 */
#ifndef SBX_SERVICE_SAMPLES_H
#define SBX_SERVICE_SAMPLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"
#include "sample_ring.h"

/* The interval between two samples of a sandbox, by default (E2B's). */
#define SBX_SAMPLE_INTERVAL_MS 5000u
/* The bounds of sbxd serve --metrics-interval-ms. */
#define SBX_SAMPLE_INTERVAL_MIN_MS 100u
#define SBX_SAMPLE_INTERVAL_MAX_MS 600000u

struct sbx_sampler;

/* Start the sampler thread for the sandboxes of ENGINE, one sample of
   each running sandbox every INTERVAL_MS.  With STORE, the histories are
   kept there too and read back from it now (store_samples.h). */
struct sbx_store;
int sbx_sampler_start (struct sbx_engine *engine, struct sbx_store *store, uint32_t interval_ms,
                       struct sbx_sampler **out, struct sbx_err *err);
/* Stop the thread and free every history.  NULL does nothing. */
void sbx_sampler_stop (struct sbx_sampler *s);
/* Sandbox ID has ended: drop its history.  NULL does nothing. */
void sbx_sampler_forget (struct sbx_sampler *s, const char *id);
/* The samples of sandbox ID taken within [FROM_MS, TO_MS] (wall clock),
   oldest first, into *OUT (free it; NULL when *N is 0).  A running
   sandbox with no sample yet (created since the last pass) is sampled
   first.  SBX_E_STOPPED once it has stopped, SBX_E_NOT_FOUND if the
   engine does not know it. */
int sbx_sampler_window (struct sbx_sampler *s, const char *id, int64_t from_ms, int64_t to_ms,
                        struct sbx_sample **out, size_t *n, struct sbx_err *err);
/* The newest sample of sandbox ID into *OUT, as sbx_sampler_window
   would give it; 0 with *FOUND false when there is none (paused before
   its first sample). */
int sbx_sampler_latest (struct sbx_sampler *s, const char *id, struct sbx_sample *out, bool *found,
                        struct sbx_err *err);

#endif
