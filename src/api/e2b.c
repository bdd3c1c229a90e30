/*
 * e2b.c - E2B's control-plane routes that seed 001 does not share with it:
 * GET /v2/sandboxes (state filters, metadata filters and cursor paging).
 * The rest of E2B's control plane is seed 001's /sandboxes (sandbase.c).
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
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

/* GET /v2/sandboxes: newest first; the cursor is the id of the last
   sandbox of the previous page. */
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
  struct state_acc st = { false, false, false };
  MHD_get_connection_values (c, MHD_GET_ARGUMENT_KIND, collect_states, &st);
  if (!st.any)
    st.running = st.paused = true;
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list (h->store, rq->org.id, NULL, &v, &n, &err) < 0)
    return send_fail (c, &err);
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
      if (!want || !metadata_matches (meta, v[i].metadata_json))
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
  enum MHD_Result ret = MHD_queue_response (c, 200, r);
  MHD_destroy_response (r);
  return ret;
}

