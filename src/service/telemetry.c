/*
 * telemetry.c - the daemon's own counters for the operator: how many
 * sandboxes were created, processes started and sandboxes destroyed, how
 * many of each failed and why (by error kind), how long the successful
 * ones took (histograms), and how webhook deliveries went.  GET /metrics
 * (api/metrics.c) renders them with what is read live elsewhere (the
 * engine's counters, the store's records, /proc/self).
 *
 * Every counter is a relaxed atomic: observing costs a few atomic adds
 * and no lock, on paths (create, exec) whose latency the operator watches.
 * A reader sees each counter whole but not all of them at one instant,
 * which Prometheus does not ask for (a histogram's sum may lag its
 * buckets by an observation).  Counters live for the process: they start at zero with
 * the daemon, as Prometheus expects of counters.
 */
#include "telemetry.h"

#include <stdatomic.h>
#include <string.h>

/* From half a millisecond (an exec on an idle machine) to half a minute
   (a create waiting on a loaded disk). */
const double sbx_tm_bucket_le[SBX_TM_BUCKETS] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25,   0.5,   1,      2.5,   5,    10,   30 };

struct tm_op {
  _Atomic uint64_t bucket[SBX_TM_BUCKETS + 1];
  _Atomic uint64_t sum_ns;
  _Atomic uint64_t failures[SBX_E_INTERNAL + 1];
};

static struct tm_op ops[SBX_TM_OPS];
static _Atomic uint64_t webhook_delivered, webhook_retried, webhook_failed;

const char *
sbx_tm_op_name (enum sbx_tm_op op)
{
  static const char *const names[SBX_TM_OPS] = { [SBX_TM_CREATE] = "create", [SBX_TM_EXEC] = "exec",
                                                 [SBX_TM_DESTROY] = "destroy" };
  return (unsigned) op < SBX_TM_OPS ? names[op] : "unknown";
}

void
sbx_telemetry_observe (enum sbx_tm_op op, uint64_t ns, const struct sbx_err *err)
{
  if ((unsigned) op >= SBX_TM_OPS)
    return;
  struct tm_op *o = &ops[op];
  if (err)
    {
      unsigned kind = (unsigned) sbx_err_kind (err);
      if (kind > SBX_E_INTERNAL)
        kind = SBX_E_INTERNAL;
      atomic_fetch_add_explicit (&o->failures[kind], 1, memory_order_relaxed);
      return;
    }
  double s = (double) ns / 1e9;
  unsigned i = 0;
  while (i < SBX_TM_BUCKETS && s > sbx_tm_bucket_le[i])
    i++;
  atomic_fetch_add_explicit (&o->bucket[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit (&o->sum_ns, ns, memory_order_relaxed);
}

void
sbx_telemetry_webhook (bool delivered, bool final)
{
  atomic_fetch_add_explicit (delivered ? &webhook_delivered : final ? &webhook_failed : &webhook_retried, 1,
                             memory_order_relaxed);
}

void
sbx_telemetry_read (struct sbx_tm_stats *out)
{
  memset (out, 0, sizeof *out);
  for (unsigned op = 0; op < SBX_TM_OPS; op++)
    {
      struct tm_op *o = &ops[op];
      struct sbx_tm_op_stats *r = &out->op[op];
      /* the count is the buckets' sum, so that the histogram read is
         consistent (+Inf equals _count) even while observations race */
      for (unsigned i = 0; i <= SBX_TM_BUCKETS; i++)
        {
          r->bucket[i] = atomic_load_explicit (&o->bucket[i], memory_order_relaxed);
          r->count += r->bucket[i];
        }
      r->sum_ns = atomic_load_explicit (&o->sum_ns, memory_order_relaxed);
      for (unsigned k = 0; k <= SBX_E_INTERNAL; k++)
        r->failures[k] = atomic_load_explicit (&o->failures[k], memory_order_relaxed);
    }
  out->webhook_delivered = atomic_load_explicit (&webhook_delivered, memory_order_relaxed);
  out->webhook_retried = atomic_load_explicit (&webhook_retried, memory_order_relaxed);
  out->webhook_failed = atomic_load_explicit (&webhook_failed, memory_order_relaxed);
}
