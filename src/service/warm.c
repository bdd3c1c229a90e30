/*
 * warm.c - started warm pools per template (warm.h).
 *
 * The engine's spares (sandbox.c) are prepared up to the point where the
 * template matters; a template with a start command (desktop's X
 * session, browser's Chromium, code_interpreter's Jupyter server) then
 * still costs its start and ready commands on every create: 0.2 to 2.5 s.
 * `sbxd serve --warm TEMPLATE=N` keeps N sandboxes of TEMPLATE created
 * *and* started, so that a create of it answers in the few milliseconds
 * of a template without one.
 *
 * A pooled sandbox is an ordinary engine sandbox with no record: no
 * organisation owns it, no dialect lists it (they list records), no
 * quota counts it, the meter does not see it (it meters records).  It
 * holds a place on the machine (placement.c) like any running sandbox,
 * so the operator's capacity (--capacity-sandboxes, --capacity-memory-mb)
 * counts it; the pool fills only when a place is free at once and nothing
 * waits in the queue, so it never makes a tenant's create wait, but what
 * it holds is not free for other templates.  Its lifetime is the longest
 * a plan allows; one that ends in the pool (that lifetime, a crash of its
 * init) is dropped and replaced.
 *
 * A create is served from the pool (sbx_warm_claim, called by service.c
 * once the organisation's place is held, before a place is asked
 * for: the pooled sandbox brings its own) when it asks for a template
 * with a pool, not one the organisation built, and nothing a running
 * sandbox cannot be given:
 *   - taken: timeout, on_timeout, autoResume (its lifetime starts at the
 *     claim), metadata, the organisation's records, events and webhooks
 *     (service.c records the create as any other), environment variables
 *     (set in init's base environment: every later command sees them;
 *     the start command's processes, already running, keep the
 *     environment they started with), CPU and memory limits (a live
 *     cgroup's; memory no higher than the pooled sandbox's, whose place
 *     is sized by it, and not below what it already uses), network
 *     policy, CPU weight, keep_workspace/keep_artifacts;
 *   - not taken (the normal path runs): filesystem rules, volumes,
 *     snapshots, checkpoints, a chosen id (seed 004's queued creates),
 *     a disk size other than the template's (a disk cannot be resized
 *     under a running sandbox), pids or open-file limits, a template the
 *     organisation built (its own layer).
 * After a claim the pool refills in the background, one sandbox at a
 * time for all pools.  A preparation that fails is logged and retried
 * after a delay that doubles from SBX_WARM_BACKOFF_MIN_MS to
 * SBX_WARM_BACKOFF_MAX_MS, so a broken template never loops hot.
 *
 * Pooled sandboxes do not outlive the daemon unowned: sbx_warm_stop
 * destroys them, and a daemon that did not get there (a crash) leaves
 * sandboxes without a record, which the next start's reconciliation
 * (sbx_service_reconcile) destroys before the pools start again.
 */
#include "warm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "builds.h"
#include "placement.h"
#include "plans.h"

#define WARM_CHECK_MS 5000 /* how often the pooled sandboxes are looked at */

struct pool {
  char name[64];                              /* the template's own name */
  uint32_t target;
  char ids[SBX_WARM_COUNT_MAX][SBX_ID_MAX];   /* ready, oldest first */
  size_t n;
  uint32_t disk_mb, memory_mb;                /* what its sandboxes were made with */
  uint64_t next_try_ns;                       /* 0: now */
  uint32_t backoff_ms;                        /* 0 after a success */
  uint64_t claims, failures;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond; /* a claim took one, or stop */
  struct sbx_service *svc;
  struct pool pools[SBX_WARM_TEMPLATES_MAX];
  size_t n;
  bool started, stop;
  pthread_t thread;
} W = { .lock = PTHREAD_MUTEX_INITIALIZER };

int
sbx_warm_parse (const char *arg, struct sbx_warm_want *w)
{
  const char *eq = strrchr (arg, '=');
  if (eq == NULL || eq == arg || (size_t) (eq - arg) >= sizeof w->template_name)
    return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul (eq + 1, &end, 10);
  if (eq[1] < '0' || eq[1] > '9' || *end || errno || v < 1 || v > SBX_WARM_COUNT_MAX)
    return -1;
  /* a template name's characters (template.c), so that it is shown
     anywhere as it is */
  for (const char *c = arg; c < eq; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '_'
          || *c == '-'))
      return -1;
  snprintf (w->template_name, sizeof w->template_name, "%.*s", (int) (eq - arg), arg);
  w->count = (uint32_t) v;
  return 0;
}

static struct pool *
pool_find_locked (const char *name)
{
  for (size_t i = 0; i < W.n; i++)
    if (strcmp (W.pools[i].name, name) == 0)
      return &W.pools[i];
  return NULL;
}

/* ---- filling ---- */

/* Create and start one sandbox of template NAME with a place of its own:
   0 with its id and sizes, 1 when the machine has no place free now, -1
   with ERR. */
static int
prepare (const char *name, char id[SBX_ID_MAX], uint32_t *disk_mb, uint32_t *memory_mb, struct sbx_err *err)
{
  struct sbx_engine *e = sbx_service_engine (W.svc);
  uint64_t ticket;
  struct sbx_err e2;
  if (sbx_place_admit (SBX_PLACE_DEFAULT_MEMORY_MB, 0, &ticket, &e2) < 0)
    return 1;
  struct sbx_create_opts o = { .template_name = name, .timeout_s = SBX_PLAN_TIMEOUT_CAP };
  if (sbx_create (e, &o, id, err) < 0)
    {
      sbx_place_cancel (ticket);
      return -1;
    }
  struct sbx_info info;
  if (sbx_builds_started (W.svc, id, name, err) < 0 || sbx_get_info (e, id, &info, err) < 0)
    {
      sbx_place_cancel (ticket);
      sbx_destroy (e, id, &e2);
      return -1;
    }
  sbx_place_bind (ticket, id, info.limits.memory_mb);
  *disk_mb = info.limits.disk_mb;
  *memory_mb = info.limits.memory_mb;
  bool running = info.state == SBX_RUNNING;
  sbx_info_free (&info);
  if (!running)
    return sbx_failk (err, SBX_E_STOPPED, "it stopped while starting");
  return 0;
}

/* The pool to fill next (round robin from the one after LAST), or NULL;
   *WAIT_MS gets how long until one may be tried. */
static struct pool *
next_pool_locked (size_t *last, uint64_t now, int64_t *wait_ms)
{
  for (size_t k = 1; k <= W.n; k++)
    {
      size_t i = (*last + k) % W.n;
      struct pool *p = &W.pools[i];
      if (p->n >= p->target)
        continue;
      if (p->next_try_ns > now)
        {
          int64_t ms = (int64_t) ((p->next_try_ns - now) / 1000000u) + 1;
          if (ms < *wait_ms)
            *wait_ms = ms;
          continue;
        }
      *last = i;
      return p;
    }
  return NULL;
}

/* Drop from the pools every sandbox that is no longer running. */
static void
check_pools (void)
{
  struct sbx_engine *e = sbx_service_engine (W.svc);
  char ids[SBX_WARM_TEMPLATES_MAX * SBX_WARM_COUNT_MAX][SBX_ID_MAX];
  size_t n = 0;
  pthread_mutex_lock (&W.lock);
  for (size_t i = 0; i < W.n; i++)
    for (size_t j = 0; j < W.pools[i].n; j++)
      memcpy (ids[n++], W.pools[i].ids[j], SBX_ID_MAX);
  pthread_mutex_unlock (&W.lock);
  for (size_t k = 0; k < n; k++)
    {
      struct sbx_info info;
      struct sbx_err err;
      bool gone = sbx_get_info (e, ids[k], &info, &err) < 0;
      if (!gone)
        {
          gone = info.state != SBX_RUNNING;
          if (gone && info.state != SBX_STOPPED)
            sbx_destroy (e, ids[k], &err);
          sbx_info_free (&info);
        }
      if (!gone)
        continue;
      pthread_mutex_lock (&W.lock);
      for (size_t i = 0; i < W.n; i++)
        for (size_t j = 0; j < W.pools[i].n; j++)
          if (strcmp (W.pools[i].ids[j], ids[k]) == 0)
            {
              memmove (W.pools[i].ids[j], W.pools[i].ids[j + 1], (W.pools[i].n - j - 1) * SBX_ID_MAX);
              W.pools[i].n--;
              sbx_log_fields (SBX_LOG_INFO, "warm sandbox ended in its pool: replacing it", "template",
                              W.pools[i].name, "sandbox", ids[k], NULL);
              break;
            }
      pthread_mutex_unlock (&W.lock);
    }
}

static void *
warm_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-warm");
  (void) arg;
  size_t last = 0;
  uint64_t next_check = sbx_now_ns () + (uint64_t) WARM_CHECK_MS * 1000000u;
  pthread_mutex_lock (&W.lock);
  while (!W.stop)
    {
      uint64_t now = sbx_now_ns ();
      if (now >= next_check)
        {
          pthread_mutex_unlock (&W.lock);
          check_pools ();
          pthread_mutex_lock (&W.lock);
          next_check = sbx_now_ns () + (uint64_t) WARM_CHECK_MS * 1000000u;
          continue;
        }
      int64_t wait_ms = (int64_t) ((next_check - now) / 1000000u) + 1;
      struct pool *p = next_pool_locked (&last, now, &wait_ms);
      if (p == NULL)
        {
          struct timespec until;
          clock_gettime (CLOCK_MONOTONIC, &until);
          until.tv_sec += wait_ms / 1000;
          until.tv_nsec += (wait_ms % 1000) * 1000000L;
          if (until.tv_nsec >= 1000000000L)
            {
              until.tv_sec++;
              until.tv_nsec -= 1000000000L;
            }
          pthread_cond_timedwait (&W.cond, &W.lock, &until);
          continue;
        }
      char name[64], id[SBX_ID_MAX];
      memcpy (name, p->name, sizeof name);
      pthread_mutex_unlock (&W.lock);
      uint32_t disk_mb = 0, memory_mb = 0;
      struct sbx_err err;
      uint64_t t0 = sbx_now_ns ();
      int r = prepare (name, id, &disk_mb, &memory_mb, &err);
      pthread_mutex_lock (&W.lock);
      p = pool_find_locked (name);
      if (r == 0 && (W.stop || p == NULL || p->n >= p->target))
        {
          /* stopping meanwhile: it never joins the pool */
          pthread_mutex_unlock (&W.lock);
          struct sbx_err e2;
          sbx_destroy (sbx_service_engine (W.svc), id, &e2);
          pthread_mutex_lock (&W.lock);
          continue;
        }
      if (p == NULL)
        continue;
      if (r == 0)
        {
          memcpy (p->ids[p->n++], id, SBX_ID_MAX);
          p->disk_mb = disk_mb;
          p->memory_mb = memory_mb;
          p->backoff_ms = 0;
          p->next_try_ns = 0;
          char ms[24];
          snprintf (ms, sizeof ms, "%.1f", (double) (sbx_now_ns () - t0) / 1e6);
          sbx_log_fields (SBX_LOG_DEBUG, "warm sandbox ready", "template", name, "sandbox", id, "ms", ms, NULL);
        }
      else if (r > 0)
        p->next_try_ns = sbx_now_ns () + (uint64_t) SBX_WARM_BACKOFF_MIN_MS * 1000000u; /* no place now */
      else
        {
          p->failures++;
          p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : SBX_WARM_BACKOFF_MIN_MS;
          if (p->backoff_ms > SBX_WARM_BACKOFF_MAX_MS)
            p->backoff_ms = SBX_WARM_BACKOFF_MAX_MS;
          p->next_try_ns = sbx_now_ns () + (uint64_t) p->backoff_ms * 1000000u;
          char retry[24];
          snprintf (retry, sizeof retry, "%u", p->backoff_ms);
          sbx_log_fields (SBX_LOG_WARN, "cannot prepare a warm sandbox", "template", name, "error", err.msg,
                          "retry_ms", retry, NULL);
        }
    }
  pthread_mutex_unlock (&W.lock);
  return NULL;
}

int
sbx_warm_start (struct sbx_service *svc, const struct sbx_warm_want *want, size_t n, struct sbx_err *err)
{
  if (n == 0)
    return 0;
  struct sbx_engine *e = sbx_service_engine (svc);
  pthread_mutex_lock (&W.lock);
  if (W.started)
    {
      pthread_mutex_unlock (&W.lock);
      return sbx_failk (err, SBX_E_CONFLICT, "warm pools already started");
    }
  W.svc = svc;
  W.n = 0;
  W.stop = false;
  for (size_t i = 0; i < n; i++)
    {
      /* pools are keyed by the template's own name, which a create's alias
         resolves to; a template not there yet keeps the name given and is
         retried (it may be being built) */
      char name[64];
      struct sbx_err e2;
      if (sbx_template_name (e, want[i].template_name, name, &e2) < 0)
        {
          snprintf (name, sizeof name, "%s", want[i].template_name);
          sbx_log_fields (SBX_LOG_WARN, "warm pool of a template that cannot be used now", "template", name,
                          "error", e2.msg, NULL);
        }
      struct pool *p = pool_find_locked (name);
      if (p == NULL)
        {
          if (W.n == SBX_WARM_TEMPLATES_MAX)
            {
              pthread_mutex_unlock (&W.lock);
              return sbx_failk (err, SBX_E_INVALID, "at most %d templates have warm pools", SBX_WARM_TEMPLATES_MAX);
            }
          p = &W.pools[W.n++];
          memset (p, 0, sizeof *p);
          snprintf (p->name, sizeof p->name, "%s", name);
        }
      p->target += want[i].count;
      if (p->target > SBX_WARM_COUNT_MAX)
        p->target = SBX_WARM_COUNT_MAX;
    }
  pthread_condattr_t a;
  pthread_condattr_init (&a);
  pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
  pthread_cond_init (&W.cond, &a);
  pthread_condattr_destroy (&a);
  int r = pthread_create (&W.thread, NULL, warm_main, NULL);
  W.started = r == 0;
  for (size_t i = 0; r == 0 && i < W.n; i++)
    {
      char target[16];
      snprintf (target, sizeof target, "%u", W.pools[i].target);
      sbx_log_fields (SBX_LOG_INFO, "warm pool", "template", W.pools[i].name, "sandboxes", target, NULL);
    }
  pthread_mutex_unlock (&W.lock);
  if (r != 0)
    return sbx_fail (err, r, "start the warm pools");
  return 0;
}

void
sbx_warm_stop (void)
{
  pthread_mutex_lock (&W.lock);
  bool started = W.started;
  W.stop = true;
  if (started)
    pthread_cond_broadcast (&W.cond);
  pthread_mutex_unlock (&W.lock);
  if (!started)
    return;
  pthread_join (W.thread, NULL);
  struct sbx_engine *e = sbx_service_engine (W.svc);
  pthread_mutex_lock (&W.lock);
  W.started = false;
  for (size_t i = 0; i < W.n; i++)
    {
      struct pool *p = &W.pools[i];
      for (size_t j = 0; j < p->n; j++)
        {
          /* its place is given back by its released event (service.c) */
          struct sbx_err err;
          if (sbx_destroy (e, p->ids[j], &err) < 0 && sbx_err_kind (&err) != SBX_E_STOPPED)
            sbx_log_fields (SBX_LOG_WARN, "cannot destroy a warm sandbox", "sandbox", p->ids[j], "error", err.msg,
                            NULL);
        }
      p->n = 0;
    }
  pthread_cond_destroy (&W.cond);
  pthread_mutex_unlock (&W.lock);
}

/* ---- claims ---- */

/* Whether SPEC asks nothing a running sandbox cannot be given (the
   pool's sizes are checked with the pool). */
static bool
spec_can_be_warm (const struct sbx_sandbox_spec *spec)
{
  return spec->template_name && *spec->template_name && spec->n_fs_rules == 0 && spec->n_volumes == 0
         && spec->snapshot_dir == NULL && !(spec->checkpoint_id && *spec->checkpoint_id)
         && spec->limits.pids_max == 0 && spec->limits.nofile == 0;
}

bool
sbx_warm_may_claim (const struct sbx_sandbox_spec *spec)
{
  pthread_mutex_lock (&W.lock);
  bool any = W.started && !W.stop && W.n > 0;
  pthread_mutex_unlock (&W.lock);
  return any && spec_can_be_warm (spec);
}

int
sbx_warm_claim (struct sbx_service *svc, const struct sbx_sandbox_spec *spec, unsigned cpu_weight,
                char id[SBX_ID_MAX])
{
  if (!sbx_warm_may_claim (spec))
    return 0;
  struct sbx_engine *e = sbx_service_engine (svc);
  char name[64];
  struct sbx_err err;
  if (sbx_template_name (e, spec->template_name, name, &err) < 0)
    return 0; /* the normal path says what is wrong */
  for (;;)
    {
      pthread_mutex_lock (&W.lock);
      struct pool *p = W.started && !W.stop ? pool_find_locked (name) : NULL;
      uint32_t pool_memory = p ? p->memory_mb : 0;
      if (p == NULL || p->n == 0 || (spec->limits.disk_mb && spec->limits.disk_mb != p->disk_mb)
          || spec->limits.memory_mb > p->memory_mb)
        {
          pthread_mutex_unlock (&W.lock);
          return 0;
        }
      /* the newest: the longest lifetime left in the pool */
      memcpy (id, p->ids[--p->n], SBX_ID_MAX);
      pthread_cond_broadcast (&W.cond); /* refill */
      pthread_mutex_unlock (&W.lock);

      uint32_t memory_mb = spec->limits.memory_mb;
      if (memory_mb && memory_mb < pool_memory)
        {
          /* a lower limit only where what it uses already fits well under
             it: lowering under a running server would make the kernel
             reclaim or kill it */
          struct sbx_metrics m;
          if (sbx_get_metrics (e, id, &m, &err) < 0 || m.mem_used > ((uint64_t) memory_mb << 20) / 4 * 3)
            {
              pthread_mutex_lock (&W.lock);
              p = pool_find_locked (name);
              bool back = p && !W.stop && p->n < SBX_WARM_COUNT_MAX;
              if (back)
                memcpy (p->ids[p->n++], id, SBX_ID_MAX);
              pthread_mutex_unlock (&W.lock);
              if (!back)
                sbx_destroy (e, id, &err);
              return 0;
            }
        }
      struct sbx_claim_opts o = { .timeout_s = spec->timeout_s,
                                  .env = spec->env,
                                  .cpu_millis = spec->limits.cpu_millis,
                                  .memory_mb = memory_mb,
                                  .net = spec->net,
                                  .internet_asked = spec->internet_asked,
                                  .cpu_weight = cpu_weight,
                                  .on_timeout = spec->on_timeout,
                                  .auto_resume = spec->auto_resume };
      if (sbx_claim (e, id, &o, &err) == 0)
        {
          if (memory_mb)
            sbx_place_resize (id, memory_mb);
          pthread_mutex_lock (&W.lock);
          p = pool_find_locked (name);
          if (p)
            p->claims++;
          pthread_mutex_unlock (&W.lock);
          sbx_log_fields (SBX_LOG_DEBUG, "warm sandbox claimed", "template", name, "sandbox", id, NULL);
          return 1;
        }
      /* it died in the pool, or cannot take what was asked: try the next */
      sbx_log_fields (SBX_LOG_WARN, "cannot claim a warm sandbox", "template", name, "sandbox", id, "error", err.msg,
                      NULL);
      struct sbx_err e2;
      sbx_destroy (e, id, &e2);
      if (sbx_err_kind (&err) == SBX_E_INVALID)
        return 0;
    }
}

size_t
sbx_warm_stats (struct sbx_warm_stat *out, size_t max)
{
  pthread_mutex_lock (&W.lock);
  size_t n = 0;
  for (size_t i = 0; W.started && i < W.n && n < max; i++, n++)
    {
      snprintf (out[n].template_name, sizeof out[n].template_name, "%s", W.pools[i].name);
      out[n].ready = (unsigned) W.pools[i].n;
      out[n].target = W.pools[i].target;
      out[n].claims = W.pools[i].claims;
      out[n].failures = W.pools[i].failures;
    }
  pthread_mutex_unlock (&W.lock);
  return n;
}
