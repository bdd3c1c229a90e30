/*
 * api_events.c - the lifecycle events and webhooks endpoints (seed 001's
 * events endpoints, in E2B's shapes):
 *
 *   GET    /events/sandboxes              the organisation's events
 *   GET    /events/sandboxes/:id          one sandbox's events
 *   POST   /events/webhooks               register      (201)
 *   GET    /events/webhooks               list
 *   GET    /events/webhooks/:id           one
 *   PATCH  /events/webhooks/:id           replace the given fields
 *   DELETE /events/webhooks/:id           delete        (204)
 *   GET    /events/webhooks/:id/deliveries  the delivery log
 *
 * Event lists take offset (default 0), limit (default 10, at most 100),
 * orderAsc (default false: newest first) and types (repeatable).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "api.h"
#include "../service/encode.h"

static const char *const event_types[] = { "sandbox.lifecycle.created", "sandbox.lifecycle.updated",
                                           "sandbox.lifecycle.paused",  "sandbox.lifecycle.resumed",
                                           "sandbox.lifecycle.killed",  NULL };

static bool
known_type (const char *t)
{
  for (int i = 0; event_types[i]; i++)
    if (strcmp (t, event_types[i]) == 0)
      return true;
  return false;
}

struct type_acc {
  const char *v[16];
  int n;
  const char *bad;
};

static enum MHD_Result
collect_types (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  (void) kind;
  struct type_acc *a = cls;
  if (strcmp (key, "types") != 0 || value == NULL)
    return MHD_YES;
  /* types may repeat, or be one comma-separated value */
  char buf[512];
  snprintf (buf, sizeof buf, "%s", value);
  char *save = NULL;
  for (char *t = strtok_r (buf, ",", &save); t; t = strtok_r (NULL, ",", &save))
    {
      int i;
      for (i = 0; event_types[i] && strcmp (event_types[i], t) != 0; i++)
        ;
      if (event_types[i] == NULL)
        {
          a->bad = value;
          return MHD_NO;
        }
      if (a->n < 15)
        a->v[a->n++] = event_types[i];
    }
  return MHD_YES;
}

static int
uint_param (struct MHD_Connection *c, const char *key, uint32_t def, uint32_t min, uint32_t max, uint32_t *out,
            enum MHD_Result *ret)
{
  const char *v = query (c, key);
  *out = def;
  if (v == NULL)
    return 0;
  char *end;
  errno = 0;
  unsigned long x = strtoul (v, &end, 10);
  if (*v == '\0' || *end || errno || x > max || x < min || *v == '-')
    {
      *ret = send_error (c, 400, "%s must be an integer between %u and %u", key, min, max);
      return -1;
    }
  *out = (uint32_t) x;
  return 0;
}

static enum MHD_Result
list_events (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *sandbox_id)
{
  enum MHD_Result ret;
  uint32_t offset, limit;
  if (uint_param (c, "offset", 0, 0, 1u << 30, &offset, &ret) < 0
      || uint_param (c, "limit", 10, 1, 100, &limit, &ret) < 0)
    return ret;
  const char *asc = query (c, "orderAsc");
  if (asc && strcmp (asc, "true") && strcmp (asc, "false"))
    return send_error (c, 400, "orderAsc must be true or false");
  struct type_acc types = { .n = 0 };
  MHD_get_connection_values (c, MHD_GET_ARGUMENT_KIND, collect_types, &types);
  if (types.bad)
    return send_error (c, 400, "unknown event type: %s", types.bad);
  types.v[types.n] = NULL;
  if (sandbox_id)
    {
      if (!valid_id (sandbox_id))
        return send_error (c, 400, "invalid sandbox id");
      struct sbx_sandbox_rec rec;
      if (!own_sandbox (h, c, rq, sandbox_id, &rec, &ret))
        return ret;
      sbx_sandbox_rec_free (&rec);
    }
  struct sbx_event *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_event_list (h->store, rq->org.id, sandbox_id, offset, limit, asc && strcmp (asc, "true") == 0,
                            types.n ? types.v : NULL, &v, &n, &err)
      < 0)
    return send_fail (c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, sbx_event_json (&v[i]));
  sbx_events_free (v, n);
  return send_json (c, 200, arr);
}

static json_t *
webhook_json (const struct sbx_webhook *w)
{
  char created[40];
  sbx_rfc3339 (w->created_ms, created, sizeof created);
  json_t *events = json_array ();
  for (char **e = w->events; e && *e; e++)
    json_array_append_new (events, json_string (*e));
  return json_pack ("{s:s, s:s, s:s, s:s, s:b, s:s, s:o}", "id", w->id, "teamID", w->org_id, "name",
                    w->name ? w->name : "", "createdAt", created, "enabled", w->enabled, "url", w->url ? w->url : "",
                    "events", events);
}

/* Validate and take the fields of a webhook body into W.  With CREATING,
   url and events are required.  Strings point into B.  The url goes
   through the outbound guard without resolving: a literal address the
   platform denies, or a loopback name, is refused now; names are
   resolved and checked at each delivery. */
static int
webhook_fields (struct http_server *h, struct MHD_Connection *c, json_t *b, bool creating, struct sbx_webhook *w,
                enum MHD_Result *ret)
{
  const char *name = NULL, *url = NULL, *secret = NULL;
  bool enabled = true;
  if (opt_string (c, b, "name", &name, ret) < 0 || opt_string (c, b, "url", &url, ret) < 0
      || opt_string (c, b, "signatureSecret", &secret, ret) < 0 || opt_bool (c, b, "enabled", &enabled, ret) < 0)
    return -1;
  if (url)
    {
      if (strncmp (url, "http://", 7) != 0 && strncmp (url, "https://", 8) != 0)
        {
          *ret = send_error (c, 400, "url must be an http or https URL");
          return -1;
        }
      if (strlen (url) > 2000)
        {
          *ret = send_error (c, 400, "url too long");
          return -1;
        }
      struct sbx_outbound_target t;
      struct sbx_err err;
      int r = sbx_outbound_parse (&h->outbound, url, &t, &err);
      sbx_outbound_target_free (&t);
      if (r < 0)
        {
          *ret = send_error (c, 400, "url: %s", err.msg);
          return -1;
        }
    }
  else if (creating)
    {
      *ret = send_error (c, 400, "url is required");
      return -1;
    }
  if (name && strlen (name) > 200)
    {
      *ret = send_error (c, 400, "name too long");
      return -1;
    }
  if (secret && strlen (secret) > 200)
    {
      *ret = send_error (c, 400, "signatureSecret too long");
      return -1;
    }
  json_t *events = json_object_get (b, "events");
  if (events && !json_is_null (events))
    {
      if (!json_is_array (events) || json_array_size (events) == 0 || json_array_size (events) > 16)
        {
          *ret = send_error (c, 400, "events must be a non-empty array of event types");
          return -1;
        }
      w->events = calloc (json_array_size (events) + 1, sizeof *w->events);
      for (size_t i = 0; i < json_array_size (events); i++)
        {
          json_t *t = json_array_get (events, i);
          if (!json_is_string (t) || !known_type (json_string_value (t)))
            {
              free (w->events);
              w->events = NULL;
              *ret = send_error (c, 400, "unknown event type: %s", json_is_string (t) ? json_string_value (t) : "?");
              return -1;
            }
          w->events[i] = (char *) json_string_value (t);
        }
    }
  else if (creating)
    {
      *ret = send_error (c, 400, "events is required");
      return -1;
    }
  w->name = (char *) (name ? name : creating ? "" : NULL);
  w->url = (char *) url;
  w->secret = (char *) (secret ? secret : creating ? "" : NULL);
  w->enabled = enabled;
  return 0;
}

static enum MHD_Result
webhooks (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method, const char *id,
          const char *sub)
{
  enum MHD_Result ret;
  struct sbx_err err;
  if (id == NULL && strcmp (method, "POST") == 0)
    {
      json_t *b = body_object (c, rq, &ret);
      if (b == NULL)
        return ret;
      struct sbx_webhook w;
      memset (&w, 0, sizeof w);
      if (webhook_fields (h, c, b, true, &w, &ret) < 0)
        {
          json_decref (b);
          return ret;
        }
      snprintf (w.org_id, sizeof w.org_id, "%s", rq->org.id);
      int r = sbx_store_webhook_create (h->store, &w, &err);
      json_t *j = r == 0 ? webhook_json (&w) : NULL;
      free (w.events);
      json_decref (b);
      return r < 0 ? send_fail (c, &err) : send_json (c, 201, j);
    }
  if (id == NULL && strcmp (method, "GET") == 0)
    {
      struct sbx_webhook *v;
      size_t n;
      if (sbx_store_webhook_list (h->store, rq->org.id, &v, &n, &err) < 0)
        return send_fail (c, &err);
      json_t *arr = json_array ();
      for (size_t i = 0; i < n; i++)
        json_array_append_new (arr, webhook_json (&v[i]));
      sbx_webhooks_free (v, n);
      return send_json (c, 200, arr);
    }
  if (id == NULL)
    return send_error (c, 405, "method not allowed");

  struct sbx_webhook cur;
  if (sbx_store_webhook_get (h->store, rq->org.id, id, &cur, &err) < 0)
    return sbx_err_kind (&err) == SBX_E_NOT_FOUND ? send_error (c, 404, "webhook not found") : send_fail (c, &err);
  if (sub && strcmp (sub, "deliveries") == 0 && strcmp (method, "GET") == 0)
    {
      sbx_webhook_free (&cur);
      struct sbx_delivery *v;
      size_t n;
      if (sbx_store_delivery_list (h->store, rq->org.id, id, &v, &n, &err) < 0)
        return send_fail (c, &err);
      json_t *arr = json_array ();
      static const char *const states[] = { "pending", "delivered", "failed" };
      for (size_t i = 0; i < n; i++)
        {
          char next[40];
          sbx_rfc3339 (v[i].next_ms, next, sizeof next);
          json_array_append_new (arr, json_pack ("{s:I, s:s, s:s, s:i, s:i, s:s?, s:s}", "id", (json_int_t) v[i].id,
                                                 "eventID", v[i].event_id, "state", states[v[i].state], "attempts",
                                                 (int) v[i].attempts, "lastStatus", v[i].last_status, "lastError",
                                                 v[i].last_error, "nextAttemptAt", next));
        }
      sbx_deliveries_free (v, n);
      return send_json (c, 200, arr);
    }
  if (sub)
    {
      sbx_webhook_free (&cur);
      return send_error (c, 404, "not found");
    }
  if (strcmp (method, "GET") == 0)
    {
      enum MHD_Result r = send_json (c, 200, webhook_json (&cur));
      sbx_webhook_free (&cur);
      return r;
    }
  if (strcmp (method, "DELETE") == 0)
    {
      sbx_webhook_free (&cur);
      if (sbx_store_webhook_delete (h->store, rq->org.id, id, &err) < 0)
        return sbx_err_kind (&err) == SBX_E_NOT_FOUND ? send_error (c, 404, "webhook not found") : send_fail (c, &err);
      return send_empty (c, 204);
    }
  if (strcmp (method, "PATCH") == 0)
    {
      json_t *b = body_object (c, rq, &ret);
      if (b == NULL)
        {
          sbx_webhook_free (&cur);
          return ret;
        }
      struct sbx_webhook w;
      memset (&w, 0, sizeof w);
      w.enabled = cur.enabled;
      if (webhook_fields (h, c, b, false, &w, &ret) < 0)
        {
          sbx_webhook_free (&cur);
          json_decref (b);
          return ret;
        }
      if (json_object_get (b, "enabled") == NULL)
        w.enabled = cur.enabled;
      memcpy (w.id, cur.id, sizeof w.id);
      memcpy (w.org_id, cur.org_id, sizeof w.org_id);
      int r = sbx_store_webhook_update (h->store, &w, &err);
      free (w.events);
      json_decref (b);
      sbx_webhook_free (&cur);
      if (r < 0)
        return send_fail (c, &err);
      if (sbx_store_webhook_get (h->store, rq->org.id, id, &cur, &err) < 0)
        return send_fail (c, &err);
      enum MHD_Result res = send_json (c, 200, webhook_json (&cur));
      sbx_webhook_free (&cur);
      return res;
    }
  sbx_webhook_free (&cur);
  return send_error (c, 405, "method not allowed");
}

enum MHD_Result
events_route (struct call *k)
{
  struct http_server *h = k->h;
  struct MHD_Connection *c = k->c;
  struct request *rq = k->rq;
  const char *method = k->method;
  char **seg = k->seg;
  int n = k->n;
  if (n >= 2 && strcmp (seg[1], "sandboxes") == 0 && n <= 3)
    {
      if (strcmp (method, "GET") != 0)
        return send_error (c, 405, "method not allowed");
      return list_events (h, c, rq, n == 3 ? seg[2] : NULL);
    }
  if (n >= 2 && strcmp (seg[1], "webhooks") == 0 && n <= 4)
    return webhooks (h, c, rq, method, n >= 3 ? seg[2] : NULL, n == 4 ? seg[3] : NULL);
  return send_error (c, 404, "not found");
}
