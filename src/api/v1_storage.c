/*
 * v1_storage.c - seed 004's checkpoints and artifacts, in v1's shapes
 * (errors {"error": "message"}, sandboxes named by ?id= or the body's
 * "id" through v1_sandbox, times in ms since the epoch):
 *
 *   POST   /v1/sandboxes/checkpoint {id}     {checkpointId, createdAt, sizeBytes}
 *   GET    /v1/checkpoints                   {items: [{checkpointId, sandboxId, createdAt, sizeBytes, files}]}
 *   DELETE /v1/checkpoints?id=               {ok: true}
 *   GET    /v1/sandboxes/artifacts?id=       {items: [{path, key, size, mode, modifiedAt}], totalBytes, kept, ...}
 *   GET    /v1/sandboxes/artifacts/file?id=&path=   the bytes
 *
 * A sandbox that has ended answers too: its kept artifacts, and (for a
 * checkpoint) the one taken when it ended.  The work is the service's
 * (service/checkpoints.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"

static json_t *
checkpoint_json (const struct sbx_saved *c, bool full)
{
  json_t *o = json_pack ("{s:s, s:I, s:I}", "checkpointId", c->id, "createdAt", (json_int_t) c->created_ms,
                         "sizeBytes", (json_int_t) c->size_bytes);
  if (o && full)
    {
      json_object_set_new (o, "sandboxId", json_string (c->sandbox_id));
      json_object_set_new (o, "files", json_integer (c->files));
    }
  return o;
}

enum MHD_Result
v1_checkpoint_create (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *id = NULL;
  struct sbx_sandbox_rec rec;
  if (opt_string (k->c, b, "id", &id, &ret) < 0 || !v1_sandbox (k, id, &rec, &ret))
    {
      json_decref (b);
      return ret;
    }
  sbx_sandbox_rec_free (&rec);
  struct sbx_saved c;
  struct sbx_err err;
  int r = sbx_service_checkpoint_create (k->h->svc, &k->rq->org, id, &c, &err);
  json_decref (b);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, checkpoint_json (&c, false));
}

enum MHD_Result
v1_checkpoint_list (struct call *k)
{
  struct sbx_saved *v;
  size_t n;
  struct sbx_err err;
  if (sbx_service_checkpoint_list (k->h->svc, &k->rq->org, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *items = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (items, checkpoint_json (&v[i], true));
  free (v);
  return send_json (k->c, 200, json_pack ("{s:o}", "items", items));
}

enum MHD_Result
v1_checkpoint_delete (struct call *k)
{
  const char *id = query (k->c, "id");
  if (id == NULL || *id == '\0')
    return send_error (k->c, 400, "Missing checkpoint id");
  struct sbx_err err;
  if (sbx_service_checkpoint_delete (k->h->svc, &k->rq->org, id, &err) < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, json_pack ("{s:b}", "ok", 1));
}

enum MHD_Result
v1_artifacts_list (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  if (!v1_sandbox (k, query (k->c, "id"), &rec, &ret))
    return ret;
  struct sbx_artifacts a;
  struct sbx_err err;
  int r = sbx_service_artifacts_list (k->h->svc, &rec, &a, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  json_t *items = json_array ();
  for (size_t i = 0; i < a.n; i++)
    {
      size_t klen = strlen (a.prefix) + strlen (a.v[i].path) + 1;
      char *key = malloc (klen);
      if (key)
        snprintf (key, klen, "%s%s", a.prefix, a.v[i].path);
      json_array_append_new (items, json_pack ("{s:s, s:s?, s:I, s:i, s:I}", "path", a.v[i].path, "key", key,
                                               "size", (json_int_t) a.v[i].size, "mode", (int) a.v[i].mode,
                                               "modifiedAt", (json_int_t) a.v[i].mtime_ms));
      free (key);
    }
  json_t *o = json_pack ("{s:o, s:I, s:b, s:s}", "items", items, "totalBytes", (json_int_t) a.bytes, "kept",
                         a.kept, "prefix", a.prefix);
  if (o && a.kept)
    json_object_set_new (o, "keptAt", json_integer (a.kept_ms));
  sbx_artifacts_free (&a);
  return send_json (k->c, 200, o);
}

enum MHD_Result
v1_artifacts_delete (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  if (!v1_sandbox (k, query (k->c, "id"), &rec, &ret))
    return ret;
  struct sbx_err err;
  int r = sbx_service_artifacts_delete (k->h->svc, &rec, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, json_pack ("{s:b}", "ok", 1));
}

enum MHD_Result
v1_artifact_file (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  if (!v1_sandbox (k, query (k->c, "id"), &rec, &ret))
    return ret;
  const char *path = query (k->c, "path");
  if (path == NULL || *path == '\0')
    {
      sbx_sandbox_rec_free (&rec);
      return send_error (k->c, 400, "Missing path");
    }
  struct sbx_artifact_src src;
  struct sbx_err err;
  int r = sbx_service_artifact_open (k->h->svc, &rec, path, &src, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  if (src.reader)
    return send_download (k->c, src.reader, src.name, src.size);
  /* a kept artifact: a file of the daemon's own, sent as it is */
  struct MHD_Response *resp = MHD_create_response_from_fd64 (src.size, src.fd);
  if (resp == NULL)
    {
      close (src.fd);
      return send_error (k->c, 500, "cannot send the artifact");
    }
  char disp[320];
  for (char *p = src.name; *p; p++)
    if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
      *p = '_';
  snprintf (disp, sizeof disp, "attachment; filename=\"%s\"", src.name);
  MHD_add_response_header (resp, "Content-Type", "application/octet-stream");
  MHD_add_response_header (resp, "Content-Disposition", disp);
  return queue_response (k->c, 200, resp);
}
