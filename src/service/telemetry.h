/*
 * telemetry.h - the daemon's counters and latency histograms for the
 * operator (telemetry.c), read by GET /metrics (api/metrics.c).
 */
#ifndef SBX_SERVICE_TELEMETRY_H
#define SBX_SERVICE_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/error.h"

/* The operations whose count, failures and latency are kept. */
enum sbx_tm_op {
  SBX_TM_CREATE,  /* a sandbox made by the engine and recorded (sbx_service_create_reserved) */
  SBX_TM_EXEC,    /* a process started in a sandbox, until its start is known (sbx_service_exec) */
  SBX_TM_DESTROY, /* a sandbox destroyed on request (sbx_service_destroy) */
  SBX_TM_OPS
};

/* The upper bounds of the histograms' buckets, in seconds, ascending; the
   last bucket (+Inf) is implicit. */
#define SBX_TM_BUCKETS 15
extern const double sbx_tm_bucket_le[SBX_TM_BUCKETS];

/* One operation's reading.  A failure is counted by its error kind and
   not observed in the histogram (a refusal in microseconds would hide the
   latency of the work done). */
struct sbx_tm_op_stats {
  uint64_t count;                       /* successes */
  uint64_t bucket[SBX_TM_BUCKETS + 1];  /* successes of at most sbx_tm_bucket_le[i] s (not cumulative); last: the rest */
  uint64_t sum_ns;
  uint64_t failures[SBX_E_INTERNAL + 1]; /* by sbx_err_kind */
};

struct sbx_tm_stats {
  struct sbx_tm_op_stats op[SBX_TM_OPS];
  uint64_t webhook_delivered;  /* attempts answered 2xx */
  uint64_t webhook_retried;    /* failed attempts that will be retried */
  uint64_t webhook_failed;     /* deliveries given up (their last attempt failed) */
};

/* Count one OP that took NS nanoseconds: a success when ERR is NULL,
   else a failure of ERR's kind.  Lock-free; any thread. */
void sbx_telemetry_observe (enum sbx_tm_op op, uint64_t ns, const struct sbx_err *err);
/* One webhook delivery attempt: DELIVERED (2xx), or failed and FINAL
   (no retry left). */
void sbx_telemetry_webhook (bool delivered, bool final);
/* A reading of everything (each counter read atomically; the set is not
   one instant, which Prometheus does not need). */
void sbx_telemetry_read (struct sbx_tm_stats *out);
const char *sbx_tm_op_name (enum sbx_tm_op op);

#endif
