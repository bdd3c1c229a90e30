/*
 * events.c - the bridge from the sandbox core to the store: every change
 * the engine reports (created, updated, paused, resumed, killed, whether
 * by a request, by expiry or by the sandbox dying) updates the sandbox's
 * record, is recorded as a lifecycle event with E2B's type names, and is
 * queued for the webhooks that asked for it, in one transaction.  The
 * webhook worker is then woken; nothing here waits on a receiver.
 */
#include "events.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "../common/util.h"

static const char *const type_names[] = {
  [SBX_EVENT_CREATED] = "sandbox.lifecycle.created", [SBX_EVENT_UPDATED] = "sandbox.lifecycle.updated",
  [SBX_EVENT_PAUSED] = "sandbox.lifecycle.paused",   [SBX_EVENT_RESUMED] = "sandbox.lifecycle.resumed",
  [SBX_EVENT_KILLED] = "sandbox.lifecycle.killed",
};

void
sbx_events_record (const struct sbx_info *in, struct sbx_sandbox_rec *r)
{
  memset (r, 0, sizeof *r);
  snprintf (r->id, sizeof r->id, "%s", in->id);
  snprintf (r->org_id, sizeof r->org_id, "%s", in->owner);
  snprintf (r->template_id, sizeof r->template_id, "%s", in->template_name);
  snprintf (r->status, sizeof r->status, "%s", sbx_state_name (in->state));
  r->metadata_json = in->metadata_json;
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
event_data (const struct sbx_info *in, enum sbx_event_kind kind, const char *reason)
{
  json_t *meta = in->metadata_json ? json_loads (in->metadata_json, 0, NULL) : NULL;
  json_t *d = json_pack ("{s:o}", "sandbox_metadata", meta ? meta : json_object ());
  if (kind == SBX_EVENT_PAUSED || kind == SBX_EVENT_KILLED)
    {
      char started[40];
      snprintf (started, sizeof started, "%s", "");
      time_t t = (time_t) (in->created_ms / 1000);
      struct tm tm;
      gmtime_r (&t, &tm);
      strftime (started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
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

void
sbx_events_on_change (void *ud, struct sbx_engine *e, const char *id, enum sbx_event_kind kind, const char *reason)
{
  struct sbx_events *ev = ud;
  struct sbx_info info;
  struct sbx_err err;
  fprintf (stderr, "sbxd: sandbox %s %s (%s)\n", id, type_names[kind] + strlen ("sandbox.lifecycle."), reason);
  if (ev == NULL || ev->store == NULL || sbx_get_info (e, id, &info, &err) < 0)
    return;
  struct sbx_sandbox_rec rec;
  sbx_events_record (&info, &rec);
  if (sbx_store_sandbox_put (ev->store, &rec, &err) < 0)
    fprintf (stderr, "sbxd: record of %s: %s\n", id, err.msg);
  struct sbx_event event;
  memset (&event, 0, sizeof event);
  snprintf (event.org_id, sizeof event.org_id, "%s", info.owner);
  snprintf (event.sandbox_id, sizeof event.sandbox_id, "%s", id);
  snprintf (event.template_id, sizeof event.template_id, "%s", info.template_name);
  snprintf (event.type, sizeof event.type, "%s", type_names[kind]);
  event.data_json = event_data (&info, kind, reason);
  if (sbx_store_event_add (ev->store, &event, &err) < 0)
    fprintf (stderr, "sbxd: event of %s: %s\n", id, err.msg);
  else if (ev->webhooks)
    sbx_webhooks_kick (ev->webhooks);
  free (event.data_json);
  sbx_info_free (&info);
}
