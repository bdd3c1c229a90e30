/*
 * e2b_snapshots.c - E2B's snapshots and forks (service/snapshots.c):
 *
 *   POST   /sandboxes/:id/snapshots  {name?}         201 {snapshotID, names}
 *   GET    /snapshots ?sandboxID ?name ?limit ?nextToken   200 [{snapshotID, names}]
 *   DELETE /templates/:id            a snapshot, by id or name: 204; else a
 *                                    built template (e2b_templates.c)
 *   POST   /sandboxes/:id/fork       {count?, timeout?} 201 [{sandbox} | {error}]
 *
 * Sandbox.create(snapshotId) is the ordinary create (sandbase.c), whose
 * templateID may name one of the organisation's snapshots.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

static json_t *
snapshot_object (const struct sbx_saved *c)
{
  json_t *names = json_array ();
  if (c->prefix[0])
    json_array_append_new (names, json_string (c->prefix));
  return json_pack ("{s:s, s:o}", "snapshotID", c->id, "names", names);
}

enum MHD_Result
e2b_snapshot_create (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *name = NULL;
  if (opt_string (k->c, b, "name", &name, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  struct sbx_saved c;
  struct sbx_err err;
  int r = sbx_service_snapshot_create (k->h->svc, &k->rq->org, k->arg[0], name && *name ? name : NULL, &c, &err);
  json_decref (b);
  if (r < 0)
    {
      /* E2B: an ended sandbox is not found */
      if (sbx_err_kind (&err) == SBX_E_STOPPED)
        return send_error (k->c, 404, "sandbox not found");
      return send_fail (k->c, &err);
    }
  return send_json (k->c, 201, snapshot_object (&c));
}

enum MHD_Result
e2b_snapshot_list (struct call *k)
{
  struct MHD_Connection *c = k->c;
  const char *ls = query (c, "limit"), *next = query (c, "nextToken");
  const char *sid = query (c, "sandboxID"), *name = query (c, "name");
  long limit = 100;
  if (ls)
    {
      char *end;
      limit = strtol (ls, &end, 10);
      if (*end || limit < 1 || limit > 100)
        return send_error (c, 400, "limit must be between 1 and 100");
    }
  struct sbx_saved *v;
  size_t n;
  struct sbx_err err;
  if (sbx_service_snapshot_list (k->h->svc, &k->rq->org, sid && *sid ? sid : NULL, name && *name ? name : NULL, &v,
                                 &n, &err)
      < 0)
    return send_fail (c, &err);
  size_t i = 0;
  if (next && *next)
    {
      /* the token is the last id of the page before */
      while (i < n && strcmp (v[i].id, next) != 0)
        i++;
      if (i == n)
        {
          free (v);
          return send_error (c, 400, "invalid nextToken");
        }
      i++;
    }
  json_t *arr = json_array ();
  char token[SBX_STORE_ID_MAX] = "";
  for (; i < n; i++)
    {
      if ((long) json_array_size (arr) == limit)
        {
          snprintf (token, sizeof token, "%s", v[i - 1].id);
          break;
        }
      json_array_append_new (arr, snapshot_object (&v[i]));
    }
  free (v);
  char *text = json_dumps (arr, JSON_COMPACT);
  json_decref (arr);
  if (text == NULL)
    return send_error (c, 500, "cannot encode the answer");
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
  MHD_add_response_header (r, "Content-Type", "application/json");
  if (*token)
    MHD_add_response_header (r, "x-next-token", token);
  return queue_response (c, 200, r);
}

enum MHD_Result
e2b_template_delete (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_snapshot_delete (k->h->svc, &k->rq->org, k->arg[0], &err) < 0)
    {
      /* not a snapshot: a template built through the build API */
      if (sbx_err_kind (&err) == SBX_E_NOT_FOUND)
        return e2bt_delete (k);
      return send_fail (k->c, &err);
    }
  return send_empty (k->c, 204);
}

enum MHD_Result
e2b_fork (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  long long count = 1, timeout = 0;
  int r = opt_int (k->c, b, "count", 1, SBX_FORK_MAX, &count, &ret) < 0
                  || opt_int (k->c, b, "timeout", 0, k->rq->org.max_timeout_s, &timeout, &ret) < 0
              ? -1
              : 0;
  json_decref (b);
  if (r < 0)
    return ret;
  struct sbx_fork_result *res = calloc ((size_t) count, sizeof *res);
  if (res == NULL)
    return send_error (k->c, 500, "out of memory");
  struct sbx_err err;
  if (sbx_service_fork (k->h->svc, &k->rq->org, k->arg[0], (uint32_t) count, (uint32_t) timeout, res, &err) < 0)
    {
      free (res);
      if (sbx_err_kind (&err) == SBX_E_STOPPED)
        return send_error (k->c, 404, "sandbox not found");
      return send_fail (k->c, &err);
    }
  json_t *arr = json_array ();
  for (long long i = 0; i < count; i++)
    {
      if (res[i].ok)
        {
          json_array_append_new (arr, json_pack ("{s:o}", "sandbox", sandbox_object (k->h, &res[i].rec, true)));
          sbx_sandbox_rec_free (&res[i].rec);
        }
      else
        {
          unsigned status = current_dialect ()->status[sbx_err_kind (&res[i].err)];
          json_array_append_new (arr, json_pack ("{s:{s:i, s:s}}", "error", "code", (int) status, "message",
                                                 res[i].err.msg));
        }
    }
  free (res);
  return send_json (k->c, 201, arr);
}
