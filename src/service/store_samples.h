/*
 * store_samples.h - the sandboxes' metrics histories in the store
 * (store_samples.c), so that getMetrics answers for the time before a
 * daemon restart.
 *
 *   sandbox_samples  one row a sample: the sandbox, when, the numbers;
 *                    at most SBX_SAMPLES_MAX rows per sandbox (the
 *                    sampler trims them as its ring turns), and a
 *                    sandbox's rows go with its record (a trigger) or
 *                    when the sampler forgets it
 */
#ifndef SBX_SERVICE_STORE_SAMPLES_H
#define SBX_SERVICE_STORE_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

#include "sample_ring.h"
#include "store.h"

/* A sample to add, and what to trim: the sandbox's rows older than
   KEEP_FROM_MS go (0: none). */
struct sbx_sample_row {
  char id[SBX_ID_MAX];
  struct sbx_sample s;
  int64_t keep_from_ms;
};

int sbx_store_samples_schema (struct sbx_store *st, struct sbx_err *err);
/* In one transaction: add ROWS, trim as they say, and remove every row
   of the N_GONE sandboxes GONE. */
int sbx_store_samples_put (struct sbx_store *st, const struct sbx_sample_row *rows, size_t n,
                           char (*gone)[SBX_ID_MAX], size_t n_gone, struct sbx_err *err);
/* Every stored sample, sandbox after sandbox, each's oldest first, to
   CB (which returns 0, or -1 to stop with an error in ERR). */
int sbx_store_samples_each (struct sbx_store *st,
                            int (*cb) (void *ud, const char *id, const struct sbx_sample *s, struct sbx_err *err),
                            void *ud, struct sbx_err *err);

#endif
