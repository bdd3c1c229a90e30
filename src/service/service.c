/*
 * service.c - the service layer (service.h): ownership, quotas, sandbox
 * records and their lifecycle events.
 *
 * Records are the service's: the engine knows sandboxes as processes,
 * disks and cgroups, not who owns them or what metadata a client gave.
 * Every change the engine reports (created, updated, paused, resumed,
 * killed, whether by a request, by expiry or by the sandbox dying) updates
 * the sandbox's record, is recorded as a lifecycle event with E2B's type
 * names, and is queued for the webhooks that asked for it, in one
 * transaction.  The webhook worker is then woken; nothing here waits on a
 * receiver.
 */
#include "service.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "builds.h"
#include "checkpoints.h"
#include "encode.h"
#include "fairshare.h"
#include "placement.h"
#include "samples.h"
#include "telemetry.h"
#include "warm.h"
#include "webhook.h"

struct sbx_service {
  struct sbx_store *store;
  struct sbx_engine *engine;     /* set once opened */
  struct sbx_webhooks *webhooks; /* may be NULL until started */
  struct sbx_fairshare *fair;    /* NULL: sandboxes keep equal weights */
  struct sbx_sampler *sampler;   /* NULL: no metrics history */
  struct sbx_saves *saves;       /* checkpoints and artifacts (checkpoints.c); NULL: none */
};

static const char *const type_names[] = {
  [SBX_EVENT_CREATED] = "sandbox.lifecycle.created", [SBX_EVENT_UPDATED] = "sandbox.lifecycle.updated",
  [SBX_EVENT_PAUSED] = "sandbox.lifecycle.paused",   [SBX_EVENT_RESUMED] = "sandbox.lifecycle.resumed",
  [SBX_EVENT_KILLED] = "sandbox.lifecycle.killed",
};

int
sbx_service_open (struct sbx_store *store, struct sbx_service **out, struct sbx_err *err)
{
  struct sbx_service *svc = calloc (1, sizeof *svc);
  if (svc == NULL)
    return sbx_fail (err, ENOMEM, "service");
  svc->store = store;
  *out = svc;
  return 0;
}

void
sbx_service_close (struct sbx_service *svc)
{
  if (svc && svc->store)
    sbx_store_flush (svc->store); /* its records of ends use SVC */
  if (svc)
    sbx_saves_free (svc->saves);
  free (svc);
}

void
sbx_service_put_saves (struct sbx_service *svc, struct sbx_saves *s)
{
  sbx_saves_free (svc->saves);
  svc->saves = s;
}

struct sbx_saves *
sbx_service_saves (struct sbx_service *svc)
{
  return svc->saves;
}

void
sbx_service_set_engine (struct sbx_service *svc, struct sbx_engine *engine)
{
  svc->engine = engine;
}

void
sbx_service_set_webhooks (struct sbx_service *svc, struct sbx_webhooks *wh)
{
  svc->webhooks = wh;
}

void
sbx_service_set_fairshare (struct sbx_service *svc, struct sbx_fairshare *fair)
{
  svc->fair = fair;
}

void
sbx_service_set_sampler (struct sbx_service *svc, struct sbx_sampler *sampler)
{
  svc->sampler = sampler;
}

struct sbx_sampler *
sbx_service_sampler (struct sbx_service *svc)
{
  return svc->sampler;
}

struct sbx_engine *
sbx_service_engine (struct sbx_service *svc)
{
  return svc->engine;
}

struct sbx_store *
sbx_service_store (struct sbx_service *svc)
{
  return svc->store;
}

/* ---- records and events ---- */

/* Copy what the engine knows of a sandbox into record R, keeping what the
   service owns (organisation, metadata, agent, mode). */
static void
record_from_info (const struct sbx_info *in, struct sbx_sandbox_rec *r)
{
  snprintf (r->id, sizeof r->id, "%s", in->id);
  snprintf (r->template_id, sizeof r->template_id, "%s", in->template_name);
  snprintf (r->status, sizeof r->status, "%s", sbx_state_name (in->state));
  r->started_ms = in->created_ms;
  r->end_ms = in->end_ms;
  if (in->state == SBX_STOPPED)
    {
      r->stopped_ms = in->end_ms;
      snprintf (r->stop_reason, sizeof r->stop_reason, "%s", in->reason ? in->reason : "");
    }
  r->cpu_count = (in->limits.cpu_millis + 999) / 1000;
  r->memory_mb = in->limits.memory_mb;
  r->disk_mb = in->limits.disk_mb;
}

/* eventData, after E2B: the sandbox's metadata, and for paused and killed
   the execution it had (start, size, how long it ran). */
static char *
event_data (const struct sbx_sandbox_rec *r, const struct sbx_info *in, enum sbx_event_kind kind,
            const char *reason)
{
  json_t *meta = r->metadata_json ? json_loads (r->metadata_json, 0, NULL) : NULL;
  json_t *d = json_pack ("{s:o}", "sandbox_metadata", meta ? meta : json_object ());
  if (d == NULL)
    return NULL;
  if (kind == SBX_EVENT_PAUSED || kind == SBX_EVENT_KILLED)
    {
      char started[40];
      sbx_rfc3339_s (in->created_ms, started, sizeof started);
      int64_t ran = sbx_wall_ms () - in->created_ms;
      json_object_set_new (d, "execution",
                           json_pack ("{s:s, s:i, s:i, s:I}", "started_at", started, "vcpu_count",
                                      (int) ((in->limits.cpu_millis + 999) / 1000), "memory_mb",
                                      (int) in->limits.memory_mb, "execution_time", (json_int_t) (ran > 0 ? ran : 0)));
    }
  if (kind == SBX_EVENT_KILLED || kind == SBX_EVENT_UPDATED)
    json_object_set_new (d, "reason", json_string (reason));
  if (kind == SBX_EVENT_UPDATED || kind == SBX_EVENT_CREATED || kind == SBX_EVENT_RESUMED)
    json_object_set_new (d, "timeout", json_integer (in->timeout_s));
  char *text = json_dumps (d, JSON_COMPACT);
  json_decref (d);
  return text;
}

/* Save record R and the event KIND of it in one transaction, dropping
   record DROP_ID (a placeholder) in the same one. */
static int
record_change (struct sbx_service *svc, const char *drop_id, const struct sbx_sandbox_rec *r,
               const struct sbx_info *in, enum sbx_event_kind kind, const char *reason, struct sbx_err *err)
{
  struct sbx_event ev;
  memset (&ev, 0, sizeof ev);
  snprintf (ev.org_id, sizeof ev.org_id, "%s", r->org_id);
  snprintf (ev.sandbox_id, sizeof ev.sandbox_id, "%s", r->id);
  snprintf (ev.template_id, sizeof ev.template_id, "%s", r->template_id);
  snprintf (ev.type, sizeof ev.type, "%s", type_names[kind]);
  ev.data_json = event_data (r, in, kind, reason);
  int ret = sbx_store_sandbox_record (svc->store, drop_id, r, &ev, err);
  free (ev.data_json);
  if (ret == 0 && svc->webhooks)
    sbx_webhooks_kick (svc->webhooks);
  if (ret == 0)
    sbx_fairshare_kick (svc->fair);
  return ret;
}

/* A change the engine reported, with what it knew of the sandbox then. */
struct engine_change {
  struct sbx_service *svc;
  struct sbx_info info;
  enum sbx_event_kind kind;
  char reason[64];
};

/* Record change C (freed here) in the sandbox's record and its event. */
static void
record_engine_change (struct sbx_store *st, void *ud)
{
  struct engine_change *c = ud;
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  /* (no record: a sandbox whose create is not recorded yet, or an
     orphan that start-up reconciliation removes) */
  if (sbx_store_sandbox_get (st, c->info.id, &rec, &err) == 0)
    {
      /* a killed one recorded already: a teardown finished after a restart */
      if (!(c->kind == SBX_EVENT_KILLED && strcmp (rec.status, "stopped") == 0))
        {
          if (c->kind == SBX_EVENT_RESUMED) /* resumed without asking for a place first */
            sbx_place_hold (c->info.id, c->info.limits.memory_mb);
          record_from_info (&c->info, &rec);
          if (record_change (c->svc, NULL, &rec, &c->info, c->kind, c->reason, &err) < 0)
            sbx_log_fields (SBX_LOG_ERROR, "record sandbox change", "sandbox", c->info.id, "error", err.msg, NULL);
        }
      sbx_sandbox_rec_free (&rec);
    }
  sbx_info_free (&c->info);
  free (c);
}

void
sbx_service_on_change (void *ud, struct sbx_engine *e, const char *id, enum sbx_event_kind kind, const char *reason)
{
  struct sbx_service *svc = ud;
  /* a running sandbox holds a place on the machine; a paused one gives
     it back (placement.c), and an ended one once its teardown has freed
     what it held, so that creates are not admitted onto memory still in
     use */
  if (kind == SBX_EVENT_RELEASED)
    {
      sbx_place_release (id);
      sbx_place_ending (id, false);
      return;
    }
  if (kind == SBX_EVENT_KILLED)
    sbx_place_ending (id, true); /* until its released event */
  sbx_log_fields (SBX_LOG_INFO, "sandbox", "sandbox", id, "change", type_names[kind] + strlen ("sandbox.lifecycle."),
                  "reason", reason, NULL);
  if (kind == SBX_EVENT_PAUSED)
    sbx_place_release (id);
  if (kind == SBX_EVENT_KILLED && svc)
    sbx_sampler_forget (svc->sampler, id);
  /* a create records its sandbox itself, with what only the service knows */
  if (svc == NULL || kind == SBX_EVENT_CREATED)
    return;
  struct engine_change *c = calloc (1, sizeof *c);
  struct sbx_err err;
  if (c == NULL || sbx_get_info (e, id, &c->info, &err) < 0)
    {
      free (c);
      return;
    }
  c->svc = svc;
  c->kind = kind;
  snprintf (c->reason, sizeof c->reason, "%s", reason ? reason : "");
  /* A sandbox's end is recorded after the answer: the destroy's caller
     does not wait for the transaction (about a third of its time), and
     whoever reads the store next sees it done (sbx_store_later).  The
     engine's teardown journal keeps the end if the daemon dies first. */
  if (kind == SBX_EVENT_KILLED)
    sbx_store_later (svc->store, record_engine_change, c);
  else
    record_engine_change (svc->store, c);
}

/* ---- start-up ---- */

static bool
is_placeholder (const char *id)
{
  return strncmp (id, "rsv_", 4) == 0;
}

int
sbx_service_reconcile (struct sbx_service *svc, struct sbx_err *err)
{
  int changes = 0;
  struct sbx_sandbox_rec *recs;
  size_t n;
  if (sbx_store_sandbox_list_live (svc->store, &recs, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    {
      struct sbx_sandbox_rec *r = &recs[i];
      struct sbx_err e2;
      if (is_placeholder (r->id))
        {
          if (sbx_store_sandbox_record (svc->store, r->id, NULL, NULL, &e2) == 0)
            changes++;
          continue;
        }
      struct sbx_info info;
      if (sbx_get_info (svc->engine, r->id, &info, &e2) == 0)
        {
          sbx_info_free (&info);
          continue;
        }
      /* the engine has no trace of it (its state directory lost it) */
      snprintf (r->status, sizeof r->status, "stopped");
      snprintf (r->stop_reason, sizeof r->stop_reason, "lost");
      r->stopped_ms = sbx_wall_ms ();
      struct sbx_info none = { .created_ms = r->started_ms, .end_ms = r->stopped_ms, .timeout_s = 0 };
      snprintf (none.id, sizeof none.id, "%.*s", SBX_ID_MAX - 1, r->id);
      if (record_change (svc, NULL, r, &none, SBX_EVENT_KILLED, "lost", &e2) == 0)
        changes++;
      sbx_log_fields (SBX_LOG_WARN, "sandbox record without a sandbox: recorded as stopped", "sandbox", r->id, NULL);
    }
  sbx_sandbox_recs_free (recs, n);

  struct sbx_info *infos;
  if (sbx_list (svc->engine, &infos, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    {
      if (infos[i].state == SBX_STOPPED)
        continue;
      if (infos[i].state == SBX_RUNNING)
        sbx_place_hold (infos[i].id, infos[i].limits.memory_mb);
      struct sbx_sandbox_rec rec;
      struct sbx_err e2;
      if (sbx_store_sandbox_get (svc->store, infos[i].id, &rec, &e2) == 0)
        {
          sbx_sandbox_rec_free (&rec);
          continue;
        }
      /* its create never got recorded: nobody owns it */
      sbx_log_fields (SBX_LOG_WARN, "sandbox without a record: destroying it", "sandbox", infos[i].id, NULL);
      if (sbx_destroy (svc->engine, infos[i].id, &e2) == 0)
        changes++;
    }
  sbx_list_free (infos, n);
  return changes;
}

/* ---- keys ---- */

int
sbx_service_authenticate (struct sbx_service *svc, const char *key, struct sbx_org *org, struct sbx_err *err)
{
  if (key == NULL || *key == '\0')
    return sbx_failk (err, SBX_E_INVALID, "missing API key");
  if (sbx_store_key_lookup (svc->store, key, org, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failk (err, SBX_E_INVALID, "invalid API key");
      if (err->code == EKEYREVOKED)
        return sbx_failk (err, SBX_E_INVALID, "API key revoked");
      return -1;
    }
  return 0;
}

/* ---- sandboxes ---- */

/* The memory a create asks for, for the machine's capacity (placement.c):
   its limit, or the engine's default when the template decides. */
static uint32_t
spec_memory_mb (const struct sbx_sandbox_spec *spec)
{
  return spec->limits.memory_mb ? spec->limits.memory_mb : SBX_PLACE_DEFAULT_MEMORY_MB;
}

int
sbx_service_sandbox_create (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                            struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  memset (rec, 0, sizeof *rec);
  if (spec->timeout_s > org->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", org->max_timeout_s);
  if (sbx_service_check_hours (svc, org, err) < 0)
    return -1;
  if (spec->checkpoint_id && *spec->checkpoint_id
      && sbx_service_checkpoint_check (svc, org, spec->checkpoint_id, err) < 0)
    return -1;
  char rsv[SBX_STORE_ID_MAX];
  uint32_t live; /* this create's held place included */
  if (sbx_store_sandbox_reserve (svc->store, org->id, org->max_sandboxes, spec->template_name, rsv, &live, err) < 0)
    return -1;
  /* a warm pool's sandbox, started already, with the place it holds */
  int warm = sbx_service_create_warm (svc, org, spec, rsv, live, rec, err);
  if (warm != 0)
    return warm < 0 ? -1 : 0;
  /* a place on the machine: at once, or after a bounded wait in the queue */
  uint64_t ticket;
  struct sbx_err e2;
  if (sbx_place_admit (spec_memory_mb (spec), SBX_PLACE_WAIT_MS, &ticket, err) < 0)
    {
      sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      return -1;
    }
  return sbx_service_create_reserved (svc, org, spec, rsv, NULL, live, ticket, rec, err);
}

static int create_reserved (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                            const char *rsv, const char *want_id, uint32_t live, uint64_t ticket,
                            struct sbx_sandbox_rec *rec, struct sbx_err *err);

/* Every sandbox the engine makes for a tenant passes here, whichever
   dialect asked and whether it waited in the queue: the operator's create
   count and latency (telemetry.h) are taken here. */
int
sbx_service_create_reserved (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                             const char *rsv, const char *want_id, uint32_t live, uint64_t ticket,
                             struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  uint64_t t0 = sbx_now_ns ();
  int r = create_reserved (svc, org, spec, rsv, want_id, live, ticket, rec, err);
  sbx_telemetry_observe (SBX_TM_CREATE, sbx_now_ns () - t0, r < 0 ? err : NULL);
  return r;
}

static int
create_reserved (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                 const char *rsv, const char *want_id, uint32_t live, uint64_t ticket, struct sbx_sandbox_rec *rec,
                 struct sbx_err *err)
{
  memset (rec, 0, sizeof *rec);
  /* a template the organisation built (builds.c) starts from its layer */
  char tree[64];
  int built = sbx_builds_resolve (svc, org, spec->template_name, tree, sizeof tree, err);
  if (built < 0)
    {
      sbx_place_cancel (ticket);
      if (want_id == NULL)
        {
          struct sbx_err e3;
          sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e3);
        }
      return -1;
    }
  /* its volumes, held until its mounts are recorded (volumes.c) */
  struct sbx_volume_set *vols;
  if (sbx_volumes_take (svc, org, spec, &vols, err) < 0)
    {
      sbx_place_cancel (ticket);
      if (want_id == NULL)
        {
          struct sbx_err e3;
          sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e3);
        }
      return -1;
    }
  struct sbx_create_opts o = { .template_name = built ? tree : spec->template_name,
                               .timeout_s = spec->timeout_s,
                               .env = spec->env,
                               .limits = spec->limits,
                               .net = spec->net,
                               .internet_asked = spec->internet_asked,
                               .fs_rules = spec->fs_rules,
                               .n_fs_rules = spec->n_fs_rules,
                               .id = want_id,
                               .on_timeout = spec->on_timeout,
                               .auto_resume = spec->auto_resume,
                               .snapshot_dir = spec->snapshot_dir };
  sbx_volumes_opts (vols, &o);
  char id[SBX_ID_MAX];
  struct sbx_err e2;
  if (svc->fair)
    o.cpu_weight = sbx_fairshare_weight (live); /* its share from its first instruction */
  if (sbx_create (svc->engine, &o, id, err) < 0)
    {
      sbx_volumes_give (vols);
      sbx_place_cancel (ticket);
      if (want_id == NULL)
        sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      return -1;
    }
  /* its checkpoint's workspace is in, and its template's start command
     ready, before anyone sees it ready (a built template's, or a shipped
     one's `start:` line, such as code_interpreter's server) */
  struct sbx_info info;
  if (sbx_service_storage_start (svc, org, id, spec, err) < 0
      || sbx_builds_started (svc, id, built ? tree : spec->template_name, err) < 0
      || sbx_get_info (svc->engine, id, &info, err) < 0)
    {
      sbx_volumes_give (vols);
      sbx_place_cancel (ticket);
      if (want_id == NULL)
        sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      sbx_destroy (svc->engine, id, &e2);
      return -1;
    }
  sbx_place_bind (ticket, id, info.limits.memory_mb);
  snprintf (rec->org_id, sizeof rec->org_id, "%s", org->id);
  snprintf (rec->agent_id, sizeof rec->agent_id, "%s", spec->agent_id ? spec->agent_id : "");
  snprintf (rec->mode, sizeof rec->mode, "%s", spec->mode ? spec->mode : "");
  rec->metadata_json = spec->metadata_json ? strdup (spec->metadata_json) : NULL;
  record_from_info (&info, rec);
  int r = record_change (svc, rsv, rec, &info, SBX_EVENT_CREATED, "request", err);
  sbx_info_free (&info);
  if (r == 0)
    r = sbx_volumes_record (svc, vols, id, err);
  sbx_volumes_give (vols);
  if (r < 0)
    {
      /* a sandbox nobody could be billed for must not run */
      if (want_id == NULL)
        sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      sbx_destroy (svc->engine, id, &e2);
      sbx_sandbox_rec_free (rec);
      return -1;
    }
  /* it may have died before its place was bound to it: give the place back */
  if (sbx_get_info (svc->engine, id, &info, &e2) == 0)
    {
      if (info.state == SBX_STOPPED)
        sbx_place_release (id);
      sbx_info_free (&info);
    }
  return 0;
}

int
sbx_service_create_warm (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                         const char *rsv, uint32_t live, struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  memset (rec, 0, sizeof *rec);
  if (!sbx_warm_may_claim (spec))
    return 0;
  /* a template the organisation built is its own layer: never pooled */
  char tree[64];
  struct sbx_err e2;
  if (sbx_builds_resolve (svc, org, spec->template_name, tree, sizeof tree, &e2) != 0)
    return 0;
  uint64_t t0 = sbx_now_ns ();
  char id[SBX_ID_MAX];
  if (sbx_warm_claim (svc, spec, svc->fair ? sbx_fairshare_weight (live) : 0, id) <= 0)
    return 0;
  struct sbx_info info;
  if (sbx_service_storage_start (svc, org, id, spec, err) < 0 || sbx_get_info (svc->engine, id, &info, err) < 0)
    {
      sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      sbx_destroy (svc->engine, id, &e2);
      sbx_telemetry_observe (SBX_TM_CREATE, sbx_now_ns () - t0, err);
      return -1;
    }
  snprintf (rec->org_id, sizeof rec->org_id, "%s", org->id);
  snprintf (rec->agent_id, sizeof rec->agent_id, "%s", spec->agent_id ? spec->agent_id : "");
  snprintf (rec->mode, sizeof rec->mode, "%s", spec->mode ? spec->mode : "");
  rec->metadata_json = spec->metadata_json ? strdup (spec->metadata_json) : NULL;
  record_from_info (&info, rec);
  int r = record_change (svc, rsv, rec, &info, SBX_EVENT_CREATED, "request", err);
  sbx_info_free (&info);
  if (r < 0)
    {
      /* a sandbox nobody could be billed for must not run */
      sbx_store_sandbox_record (svc->store, rsv, NULL, NULL, &e2);
      sbx_destroy (svc->engine, id, &e2);
      sbx_sandbox_rec_free (rec);
    }
  sbx_telemetry_observe (SBX_TM_CREATE, sbx_now_ns () - t0, r < 0 ? err : NULL);
  return r < 0 ? -1 : 1;
}

int
sbx_service_sandbox_get (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                         struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  if (id == NULL || is_placeholder (id) || sbx_store_sandbox_get (svc->store, id, rec, err) < 0)
    {
      if (id && !is_placeholder (id) && err->code != ENOENT)
        return -1;
      return sbx_failk (err, SBX_E_NOT_FOUND, "sandbox not found");
    }
  if (strcmp (rec->org_id, org->id) != 0)
    {
      /* another organisation's sandbox does not exist for this caller */
      sbx_sandbox_rec_free (rec);
      return sbx_failk (err, SBX_E_NOT_FOUND, "sandbox not found");
    }
  return 0;
}

int
sbx_service_sandbox_kill (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_get (svc, org, id, &rec, err) < 0)
    return -1;
  bool stopped = strcmp (rec.status, "stopped") == 0;
  sbx_sandbox_rec_free (&rec);
  if (stopped)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
  return sbx_service_destroy (svc, id, err);
}

int
sbx_service_destroy (struct sbx_service *svc, const char *id, struct sbx_err *err)
{
  uint64_t t0 = sbx_now_ns ();
  int r = sbx_destroy (svc->engine, id, err);
  sbx_telemetry_observe (SBX_TM_DESTROY, sbx_now_ns () - t0, r < 0 ? err : NULL);
  return r;
}

/* What sbx_service_exec puts between the engine and the caller's FN. */
struct exec_watch {
  sbx_proc_fn fn;
  void *ud;
  uint64_t t0;
  bool started;
};

static int
exec_watch_event (const struct sbx_proc_event *ev, void *ud)
{
  struct exec_watch *w = ud;
  if (!w->started && ev->kind == SBX_PROC_START)
    {
      w->started = true;
      sbx_telemetry_observe (SBX_TM_EXEC, sbx_now_ns () - w->t0, NULL);
    }
  return w->fn (ev, w->ud);
}

int
sbx_service_exec (struct sbx_service *svc, const char *id, const struct sbx_exec_opts *o, sbx_proc_fn fn, void *ud,
                  struct sbx_err *err)
{
  struct exec_watch w = { .fn = fn, .ud = ud, .t0 = sbx_now_ns () };
  int r = sbx_exec (svc->engine, id, o, exec_watch_event, &w, err);
  if (r < 0 && !w.started)
    sbx_telemetry_observe (SBX_TM_EXEC, 0, err);
  return r;
}

