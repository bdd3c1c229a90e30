/*
 * e2b.c - E2B's control-plane routes that seed 001 does not share with it:
 * GET /v2/sandboxes (state filters, metadata filters and cursor paging)
 * and a sandbox's logs (GET /v2/sandboxes/:id/logs, and v1's).
 * The rest of E2B's control plane is seed 001's /sandboxes (sandbase.c).
 */
#include "api.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/util.h"
#include "../service/encode.h"
/* ---- control plane ---- */

/* A metadata filter "k1=v1&k2=v2" (already URL-decoded once by MHD): does
   META (JSON object text) hold every pair? */
static bool
metadata_matches (const char *filter, const char *meta_text)
{
  if (filter == NULL || *filter == '\0')
    return true;
  json_t *meta = meta_text ? json_loads (meta_text, 0, NULL) : NULL;
  char buf[2048];
  snprintf (buf, sizeof buf, "%s", filter);
  bool ok = true;
  char *save = NULL;
  for (char *pair = strtok_r (buf, "&", &save); pair && ok; pair = strtok_r (NULL, "&", &save))
    {
      char *eq = strchr (pair, '=');
      if (eq == NULL)
        continue;
      *eq = '\0';
      MHD_http_unescape (pair);
      MHD_http_unescape (eq + 1);
      json_t *v = meta ? json_object_get (meta, pair) : NULL;
      ok = v && json_is_string (v) && strcmp (json_string_value (v), eq + 1) == 0;
    }
  json_decref (meta);
  return ok;
}

/* Does the template filter (a name, or CANON, what its alias names:
   code-interpreter-v1 is code_interpreter) name TEMPLATE_ID? */
static bool
template_matches (const char *name, const char *canon, const char *template_id)
{
  return strcmp (name, template_id) == 0 || (*canon && strcmp (canon, template_id) == 0);
}

struct state_acc {
  bool running, paused, any;
};

static enum MHD_Result
collect_states (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  (void) kind;
  struct state_acc *a = cls;
  if (strcmp (key, "state") != 0 || value == NULL)
    return MHD_YES;
  char buf[128];
  snprintf (buf, sizeof buf, "%s", value);
  char *save = NULL;
  for (char *t = strtok_r (buf, ",", &save); t; t = strtok_r (NULL, ",", &save))
    {
      a->any = true;
      if (strcmp (t, "running") == 0)
        a->running = true;
      else if (strcmp (t, "paused") == 0)
        a->paused = true;
    }
  return MHD_YES;
}

/* An RFC 3339 date-time ("2025-01-02T03:04:05.678Z", or with an offset
   "+01:00") as ms since the epoch; -1 when TEXT is not one.  Written here
   as glibc's strptime takes neither fractions nor "Z" with offsets. */
static int64_t
parse_rfc3339_ms (const char *text)
{
  struct tm tm = { 0 };
  int n = 0;
  if (sscanf (text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
              &tm.tm_sec, &n)
          != 6
      || n != 19 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23
      || tm.tm_min > 59 || tm.tm_sec > 60)
    return -1;
  const char *p = text + n;
  int64_t ms = 0;
  if (*p == '.')
    {
      int digits = 0;
      for (p++; *p >= '0' && *p <= '9'; p++, digits++)
        if (digits < 3)
          ms = ms * 10 + (*p - '0');
      if (digits == 0)
        return -1;
      for (; digits < 3; digits++)
        ms *= 10;
    }
  int64_t offset_s = 0;
  if (*p == 'Z' || *p == 'z')
    p++;
  else if (*p == '+' || *p == '-')
    {
      int oh, om, k = 0;
      if (sscanf (p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
        return -1;
      offset_s = (oh * 3600 + om * 60) * (*p == '+' ? 1 : -1);
      p += 6;
    }
  else
    return -1;
  if (*p != '\0')
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm (&tm);
  return ((int64_t) t - offset_s) * 1000 + ms;
}

/* GET /v2/sandboxes: newest first (order=asc: oldest first); the cursor
   is the id of the last sandbox of the previous page.  Filters: state,
   metadata, template (its id or alias), startedAfter and startedBefore
   (RFC 3339, inclusive; E2B's API has the first). */
enum MHD_Result
e2b_list_v2 (struct call *k)
{
  struct http_server *h = k->h;
  struct MHD_Connection *c = k->c;
  struct request *rq = k->rq;
  const char *ls = query (c, "limit"), *next = query (c, "nextToken"), *meta = query (c, "metadata");
  long limit = 100;
  if (ls)
    {
      char *end;
      limit = strtol (ls, &end, 10);
      if (*end || limit < 1 || limit > 100)
        return send_error (c, 400, "limit must be between 1 and 100");
    }
  const char *order = query (c, "order"), *tmpl = query (c, "template");
  if (order && strcmp (order, "asc") != 0 && strcmp (order, "desc") != 0)
    return send_error (c, 400, "order must be asc or desc");
  bool asc = order && strcmp (order, "asc") == 0;
  int64_t after = INT64_MIN, before = INT64_MAX;
  const char *names[2] = { "startedAfter", "startedBefore" };
  int64_t *bounds[2] = { &after, &before };
  for (int b = 0; b < 2; b++)
    {
      const char *t = query (c, names[b]);
      if (t == NULL || *t == '\0')
        continue;
      *bounds[b] = parse_rfc3339_ms (t);
      if (*bounds[b] < 0)
        return send_error (c, 400, "%s must be an RFC 3339 date-time (e.g. 2025-01-02T03:04:05Z)", names[b]);
    }
  char canon[64] = "";
  struct sbx_err terr;
  if (tmpl && *tmpl && sbx_template_name (h->engine, tmpl, canon, &terr) < 0)
    canon[0] = '\0'; /* no such template now: its sandboxes may still be listed by name */
  struct state_acc st = { false, false, false };
  MHD_get_connection_values (c, MHD_GET_ARGUMENT_KIND, collect_states, &st);
  if (!st.any)
    st.running = st.paused = true;
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list (h->store, rq->org.id, NULL, &v, &n, &err) < 0)
    return send_fail (c, &err);
  if (asc)
    for (size_t a = 0, z = n ? n - 1 : 0; a < z; a++, z--)
      {
        struct sbx_sandbox_rec t = v[a];
        v[a] = v[z];
        v[z] = t;
      }
  json_t *arr = json_array ();
  size_t i = 0;
  if (next && *next)
    {
      while (i < n && strcmp (v[i].id, next) != 0)
        i++;
      if (i == n)
        {
          sbx_sandbox_recs_free (v, n);
          json_decref (arr);
          return send_error (c, 400, "invalid nextToken");
        }
      i++;
    }
  const char *last = NULL;
  bool more = false;
  for (; i < n; i++)
    {
      bool want = (st.running && strcmp (v[i].status, "running") == 0) || (st.paused && strcmp (v[i].status, "paused") == 0);
      if (!want || !metadata_matches (meta, v[i].metadata_json) || v[i].started_ms < after
          || v[i].started_ms > before || (tmpl && *tmpl && !template_matches (tmpl, canon, v[i].template_id)))
        continue;
      if ((long) json_array_size (arr) == limit)
        {
          more = true;
          break;
        }
      json_array_append_new (arr, sandbox_object (h, &v[i], false));
      last = v[i].id;
    }
  char token[SBX_STORE_ID_MAX];
  snprintf (token, sizeof token, "%s", more && last ? last : "");
  sbx_sandbox_recs_free (v, n);
  char *text = json_dumps (arr, JSON_COMPACT);
  json_decref (arr);
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
  MHD_add_response_header (r, "Content-Type", "application/json");
  if (*token)
    MHD_add_response_header (r, "x-next-token", token);
  return queue_response (c, 200, r);
}


/* ---- GET /v2/sandboxes/:id/logs (and v1's /sandboxes/:id/logs) ----

   A sandbox's structured log: its lifecycle events (from the store) and
   its egress decisions (the core's audit ring), merged by time.  Egress
   refusals are "warn", everything else "info".  v2's filters: cursor (ms,
   where to start), limit (at most 1000), direction (forward from the
   cursor, or backward to it), level (the lowest to show) and search (a
   case-sensitive substring of the message). */

#define LOGS_MAX 1000

struct log_entry {
  int64_t ms;
  int level;        /* 0 debug, 1 info, 2 warn, 3 error */
  json_t *fields;   /* owned */
  char message[800];
};

static const char *const level_names[] = { "debug", "info", "warn", "error" };

static int
entry_cmp (const void *a, const void *b)
{
  const struct log_entry *x = a, *y = b;
  return (x->ms > y->ms) - (x->ms < y->ms);
}

static enum MHD_Result
sandbox_logs (struct call *k, bool v2)
{
  struct MHD_Connection *c = k->c;
  const char *id = k->arg[0];
  long long cursor = -1, limit = LOGS_MAX;
  int min_level = 0;
  bool backward = false;
  const char *s, *search = query (c, "search");
  char *end;
  if ((s = query (c, v2 ? "cursor" : "start")) && ((cursor = strtoll (s, &end, 10)) < 0 || *end))
    return send_error (c, 400, "%s must be a timestamp in milliseconds", v2 ? "cursor" : "start");
  if ((s = query (c, "limit")) && ((limit = strtoll (s, &end, 10)) < 0 || limit > LOGS_MAX || *end))
    return send_error (c, 400, "limit must be between 0 and %d", LOGS_MAX);
  if ((s = query (c, "direction")) && !(strcmp (s, "forward") == 0 || (backward = strcmp (s, "backward") == 0)))
    return send_error (c, 400, "direction must be forward or backward");
  if ((s = query (c, "level")))
    {
      for (min_level = 0; min_level < 4 && strcmp (level_names[min_level], s) != 0; min_level++)
        ;
      if (min_level == 4)
        return send_error (c, 400, "level must be debug, info, warn or error");
    }
  if (search && strlen (search) > 256)
    return send_error (c, 400, "search is longer than 256 characters");

  struct sbx_event *ev = NULL;
  size_t nev = 0, nrec = 0;
  struct sbx_egress_record *rec = NULL;
  uint64_t dropped = 0;
  struct sbx_err err;
  if (sbx_store_event_list (k->h->store, k->rq->org.id, id, 0, LOGS_MAX, true, NULL, &ev, &nev, &err) < 0)
    return send_fail (c, &err);
  /* a stopped sandbox's egress ring went with it */
  if (sbx_egress_log (k->h->engine, id, 0, SBX_EGRESS_LOG_MAX, &rec, &nrec, &dropped, &err) < 0)
    nrec = 0;
  struct log_entry *all = calloc (nev + nrec + 1, sizeof *all);
  if (all == NULL)
    {
      sbx_events_free (ev, nev);
      free (rec);
      return send_error (c, 500, "out of memory");
    }
  size_t n = 0;
  for (size_t i = 0; i < nev; i++)
    {
      struct log_entry *e = &all[n++];
      const char *what = strrchr (ev[i].type, '.') ? strrchr (ev[i].type, '.') + 1 : ev[i].type;
      json_t *data = ev[i].data_json ? json_loads (ev[i].data_json, 0, NULL) : NULL;
      const char *reason = json_string_value (json_object_get (data, "reason"));
      e->ms = ev[i].timestamp_ms;
      e->level = 1;
      snprintf (e->message, sizeof e->message, "sandbox %s%s%s%s", what, reason ? " (" : "", reason ? reason : "",
                reason ? ")" : "");
      e->fields = json_pack ("{s:s, s:s}", "logger", "lifecycle", "type", ev[i].type);
      if (reason)
        json_object_set_new (e->fields, "reason", json_string (reason));
      json_decref (data);
    }
  for (size_t i = 0; i < nrec; i++)
    {
      struct log_entry *e = &all[n++];
      bool denied = rec[i].verdict != SBX_EGRESS_ALLOWED;
      char port[8];
      snprintf (port, sizeof port, "%u", (unsigned) rec[i].port);
      e->ms = rec[i].time_ms;
      e->level = denied ? 2 : 1;
      snprintf (e->message, sizeof e->message, "egress %s: %s %s%s%s%s%s (%s)", denied ? "denied" : "allowed",
                rec[i].proto, rec[i].name, rec[i].name[0] && rec[i].addr[0] ? " " : "", rec[i].addr,
                rec[i].addr[0] ? ":" : "", rec[i].addr[0] ? port : "", rec[i].rule);
      e->fields = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "logger", "egress", "protocol", rec[i].proto,
                             "address", rec[i].addr, "port", port, "name", rec[i].name, "verdict",
                             denied ? "denied" : "allowed", "rule", rec[i].rule);
    }
  sbx_events_free (ev, nev);
  free (rec);
  qsort (all, n, sizeof *all, entry_cmp);

  json_t *entries = json_array (), *lines = json_array ();
  for (size_t j = 0; j < n; j++)
    {
      struct log_entry *e = &all[backward ? n - 1 - j : j];
      bool in_range = cursor < 0 || (backward ? e->ms <= cursor : e->ms >= cursor);
      if (!in_range || e->level < min_level || (search && strstr (e->message, search) == NULL)
          || json_array_size (entries) >= (size_t) limit)
        continue;
      char ts[40];
      sbx_rfc3339 (e->ms, ts, sizeof ts);
      json_array_append_new (entries, json_pack ("{s:s, s:s, s:s, s:O}", "timestamp", ts, "level",
                                                 level_names[e->level], "message", e->message, "fields", e->fields));
      json_array_append_new (lines, json_pack ("{s:s, s:s}", "timestamp", ts, "line", e->message));
    }
  for (size_t j = 0; j < n; j++)
    json_decref (all[j].fields);
  free (all);
  if (v2)
    {
      json_decref (lines);
      return send_json (c, 200, json_pack ("{s:o}", "logs", entries));
    }
  return send_json (c, 200, json_pack ("{s:o, s:o}", "logs", lines, "logEntries", entries));
}

enum MHD_Result
e2b_logs_v2 (struct call *k)
{
  return sandbox_logs (k, true);
}

enum MHD_Result
e2b_logs_v1 (struct call *k)
{
  return sandbox_logs (k, false);
}
