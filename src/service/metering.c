/*
 * metering.c - sandbox time per organisation and calendar month, and the
 * plans' monthly sandbox hours enforced on it.
 *
 * The time itself is kept by the store: every save of a sandbox record
 * opens or closes an interval of its ledger in the same transaction (see
 * store.h, "The metering ledger"), so the lifecycle the engine reports is
 * the only source, a daemon restart neither loses nor doubles any time,
 * and paused or queued time is not counted (seed 004 pauses sandboxes "to
 * save costs").
 *
 * Enforcement has two halves.  A create or a resume is refused once the
 * month's hours are used up (sbx_service_check_hours, called by
 * service.c).  A sandbox that was running when they ran out is ended by
 * the meter, a worker that looks every SBX_METER_PERIOD_MS; one query
 * finds the organisations out of time among those running something, so
 * a pass costs nothing while no organisation is over.  Looking once a
 * second rather than sleeping until each organisation's exact moment
 * keeps the worker simple; a sandbox may overrun its organisation's hours
 * by about that second.
 */
#include "service.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "plans.h"

/* Organisations looked at in one pass; more wait for the next. */
#define METER_ORGS_MAX 16

int
sbx_service_usage (struct sbx_service *svc, const struct sbx_org *org, struct sbx_usage *u, struct sbx_err *err)
{
  int64_t now = sbx_wall_ms ();
  *u = (struct sbx_usage) { .month_start_ms = sbx_plan_month_start_ms (now),
                            .limit_ms = org->monthly_ms,
                            .limit_hours = (uint32_t) ((org->monthly_ms + SBX_MS_PER_HOUR - 1) / SBX_MS_PER_HOUR) };
  return sbx_store_sandbox_usage_ms (sbx_service_store (svc), org->id, u->month_start_ms, now, &u->used_ms, err);
}

int
sbx_service_check_hours (struct sbx_service *svc, const struct sbx_org *org, struct sbx_err *err)
{
  if (org->monthly_ms <= 0)
    return 0;
  struct sbx_usage u;
  if (sbx_service_usage (svc, org, &u, err) < 0)
    return -1;
  if (u.used_ms >= u.limit_ms)
    return sbx_failk (err, SBX_E_LIMIT, SBX_MSG_HOURS_LIMIT);
  return 0;
}

bool
sbx_service_err_is_hours (const struct sbx_err *err)
{
  return sbx_err_kind (err) == SBX_E_LIMIT && strcmp (err->msg, SBX_MSG_HOURS_LIMIT) == 0;
}

/* ---- the meter ---- */

struct sbx_meter {
  struct sbx_service *svc;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* on CLOCK_MONOTONIC */
  bool stopping;
};

/* End the running sandboxes of organisation ORG_ID, at most *BUDGET. */
static void
end_running (struct sbx_meter *m, const char *org_id, unsigned *budget)
{
  struct sbx_store *st = sbx_service_store (m->svc);
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list (st, org_id, "running", &v, &n, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "meter", "org", org_id, "error", err.msg, NULL);
      return;
    }
  for (size_t i = 0; i < n && *budget > 0; i++, (*budget)--)
    {
      sbx_log_fields (SBX_LOG_INFO, "monthly sandbox hours used up: ending the sandbox", "sandbox", v[i].id, "org",
                      org_id, NULL);
      /* the engine's killed event records it stopped ("quota") and closes
         its interval of the ledger */
      if (sbx_destroy_for (sbx_service_engine (m->svc), v[i].id, "quota", &err) < 0
          && sbx_err_kind (&err) != SBX_E_STOPPED && sbx_err_kind (&err) != SBX_E_NOT_FOUND)
        sbx_log_fields (SBX_LOG_WARN, "meter: cannot end the sandbox", "sandbox", v[i].id, "error", err.msg, NULL);
    }
  sbx_sandbox_recs_free (v, n);
}

static void
meter_pass (struct sbx_meter *m)
{
  int64_t now = sbx_wall_ms ();
  char ids[METER_ORGS_MAX][SBX_STORE_ID_MAX];
  size_t n;
  struct sbx_err err;
  if (sbx_store_orgs_out_of_time (sbx_service_store (m->svc), sbx_plan_month_start_ms (now), now, ids,
                                  METER_ORGS_MAX, &n, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "meter", "error", err.msg, NULL);
      return;
    }
  unsigned budget = SBX_METER_ENDS_MAX;
  for (size_t i = 0; i < n && budget > 0; i++)
    end_running (m, ids[i], &budget);
}

static void *
meter_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-meter");
  struct sbx_meter *m = arg;
  pthread_mutex_lock (&m->lock);
  while (!m->stopping)
    {
      struct timespec ts;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_sec += SBX_METER_PERIOD_MS / 1000;
      ts.tv_nsec += (SBX_METER_PERIOD_MS % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L)
        {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
      while (!m->stopping && pthread_cond_timedwait (&m->cond, &m->lock, &ts) != ETIMEDOUT)
        ;
      if (m->stopping)
        break;
      pthread_mutex_unlock (&m->lock);
      meter_pass (m);
      pthread_mutex_lock (&m->lock);
    }
  pthread_mutex_unlock (&m->lock);
  return NULL;
}

int
sbx_meter_start (struct sbx_service *svc, struct sbx_meter **out, struct sbx_err *err)
{
  struct sbx_meter *m = calloc (1, sizeof *m);
  if (m == NULL)
    return sbx_fail (err, ENOMEM, "meter");
  m->svc = svc;
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&m->cond, &ca);
  pthread_condattr_destroy (&ca);
  pthread_mutex_init (&m->lock, NULL);
  int e = pthread_create (&m->thread, NULL, meter_main, m);
  if (e != 0)
    {
      pthread_cond_destroy (&m->cond);
      pthread_mutex_destroy (&m->lock);
      free (m);
      return sbx_fail (err, e, "meter thread");
    }
  *out = m;
  return 0;
}

void
sbx_meter_stop (struct sbx_meter *m)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->stopping = true;
  pthread_cond_signal (&m->cond);
  pthread_mutex_unlock (&m->lock);
  pthread_join (m->thread, NULL);
  pthread_cond_destroy (&m->cond);
  pthread_mutex_destroy (&m->lock);
  free (m);
}
