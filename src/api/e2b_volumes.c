/*
 * e2b_volumes.c - E2B's volumes (service/volumes.c), as the SDK's Volume
 * class calls them:
 *
 *   POST   /volumes       {name}   201 {volumeID, name, token}
 *   GET    /volumes                200 [{volumeID, name}]
 *   GET    /volumes/:id            200 {volumeID, name, token}
 *   DELETE /volumes/:id            204; 409 while a sandbox mounts it
 *
 * and their content API, authenticated by the volume's token
 * ("Authorization: Bearer TOKEN", checked from the headers before the
 * body is read) instead of an API key:
 *
 *   GET    /volumecontent/:id/path ?path             the entry
 *   PATCH  /volumecontent/:id/path ?path {uid, gid, mode}
 *   DELETE /volumecontent/:id/path ?path             204
 *   GET    /volumecontent/:id/dir  ?path ?depth      [entries]
 *   POST   /volumecontent/:id/dir  ?path ?uid ?gid ?mode ?force   201
 *   GET    /volumecontent/:id/file ?path             its bytes
 *   PUT    /volumecontent/:id/file ?path ?uid ?gid ?mode ?force   201
 *
 * A token is an HMAC of the volume's id under a key of the daemon (as
 * sandboxes' access tokens): nothing is stored, and a token dies with
 * its volume.  Sandbox.create({volumeMounts}) is the ordinary create
 * (sandbase.c).
 */
#include "api.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"
#include "../core/volume.h"
#include "../service/encode.h"

#define TOKEN_PREFIX "sbxvol_"
#define TOKEN_LEN (sizeof TOKEN_PREFIX - 1 + 64)

static void
volume_token (struct http_server *h, const char *id, char out[TOKEN_LEN + 1])
{
  char msg[128];
  int n = snprintf (msg, sizeof msg, "sbxd-volume\n%s", id);
  unsigned char md[32];
  unsigned int len = 0;
  HMAC (EVP_sha256 (), h->envd_secret, sizeof h->envd_secret, (const unsigned char *) msg, (size_t) n, md, &len);
  int w = snprintf (out, TOKEN_LEN + 1, TOKEN_PREFIX);
  for (int i = 0; i < 32; i++)
    w += snprintf (out + w, TOKEN_LEN + 1 - (size_t) w, "%02x", md[i]);
}

static json_t *
volume_object (struct http_server *h, const struct sbx_saved *v, bool with_token)
{
  json_t *o = json_pack ("{s:s, s:s}", "volumeID", v->id, "name", v->prefix);
  if (o && with_token)
    {
      char token[TOKEN_LEN + 1];
      volume_token (h, v->id, token);
      json_object_set_new (o, "token", json_string (token));
    }
  return o;
}

enum MHD_Result
e2b_volume_create (struct call *k)
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
  struct sbx_saved v;
  struct sbx_err err;
  int r = sbx_service_volume_create (k->h->svc, &k->rq->org, name, &v, &err);
  json_decref (b);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 201, volume_object (k->h, &v, true));
}

enum MHD_Result
e2b_volume_list (struct call *k)
{
  struct sbx_saved *v;
  size_t n;
  struct sbx_err err;
  if (sbx_service_volume_list (k->h->svc, &k->rq->org, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, volume_object (k->h, &v[i], false));
  free (v);
  return send_json (k->c, 200, arr);
}

enum MHD_Result
e2b_volume_get (struct call *k)
{
  struct sbx_saved v;
  struct sbx_err err;
  if (sbx_service_volume_get (k->h->svc, &k->rq->org, k->arg[0], &v, &err) < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, volume_object (k->h, &v, true));
}

enum MHD_Result
e2b_volume_delete (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_volume_delete (k->h->svc, &k->rq->org, k->arg[0], &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 204);
}

/* ---- content ---- */

/* Checked from the headers (struct route's check): the bearer token is
   the volume's. */
bool
e2b_volume_token_check (struct call *k, enum MHD_Result *ret)
{
  const char *auth = MHD_lookup_connection_value (k->c, MHD_HEADER_KIND, "Authorization");
  const char *tok = NULL;
  if (auth && strncasecmp (auth, "Bearer ", 7) == 0)
    for (tok = auth + 7; *tok == ' '; tok++)
      ;
  char want[TOKEN_LEN + 1];
  volume_token (k->h, k->arg[0], want);
  if (tok == NULL || strlen (tok) != TOKEN_LEN || CRYPTO_memcmp (tok, want, TOKEN_LEN) != 0)
    {
      *ret = send_error (k->c, 401, "invalid volume token");
      return false;
    }
  return true;
}

static json_t *
entry_object (const struct sbx_volume_entry *e)
{
  static const char *const types[] = { "unknown", "file", "directory", "symlink" };
  char at[40], mt[40], ct[40];
  sbx_rfc3339 ((int64_t) e->atime.tv_sec * 1000 + e->atime.tv_nsec / 1000000, at, sizeof at);
  sbx_rfc3339 ((int64_t) e->mtime.tv_sec * 1000 + e->mtime.tv_nsec / 1000000, mt, sizeof mt);
  sbx_rfc3339 ((int64_t) e->ctime.tv_sec * 1000 + e->ctime.tv_nsec / 1000000, ct, sizeof ct);
  json_t *o = json_pack ("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:s}", "name", e->name, "type",
                         types[e->type], "path", e->path, "size", (json_int_t) e->size, "mode",
                         (json_int_t) (e->mode & 07777), "uid", (json_int_t) e->uid, "gid", (json_int_t) e->gid,
                         "atime", at, "mtime", mt, "ctime", ct);
  if (o && e->target)
    json_object_set_new (o, "target", json_string (e->target));
  return o;
}

static enum MHD_Result
send_entry (struct MHD_Connection *c, unsigned status, struct sbx_volume_entry *e)
{
  json_t *o = entry_object (e);
  sbx_volume_entry_free (e);
  return send_json (c, status, o);
}

/* A query number in [0, MAX] into *OUT (-1 when absent). */
static bool
query_num (struct MHD_Connection *c, const char *key, long long max, int64_t *out, enum MHD_Result *ret)
{
  const char *s = query (c, key);
  *out = -1;
  if (s == NULL || *s == '\0')
    return true;
  char *end;
  long long v = strtoll (s, &end, 10);
  if (*end || v < 0 || v > max)
    {
      *ret = send_error (c, 400, "%s must be a number from 0 to %lld", key, max);
      return false;
    }
  *out = v;
  return true;
}

static bool
query_meta (struct MHD_Connection *c, struct sbx_volume_meta *m, enum MHD_Result *ret)
{
  return query_num (c, "uid", SBX_VOLUME_ID_MAX, &m->uid, ret) && query_num (c, "gid", SBX_VOLUME_ID_MAX, &m->gid, ret)
         && query_num (c, "mode", 07777, &m->mode, ret);
}

static bool
query_force (struct MHD_Connection *c)
{
  const char *f = query (c, "force");
  return f && (strcmp (f, "true") == 0 || strcmp (f, "1") == 0);
}

/* The volume's root for this request, or -1 after answering. */
static int
content_root (struct call *k, const char **path, enum MHD_Result *ret)
{
  *path = query (k->c, "path");
  if (*path == NULL || **path == '\0')
    {
      *ret = send_error (k->c, 400, "path is required");
      return -1;
    }
  struct sbx_err err;
  int root = sbx_service_volume_root (k->h->svc, k->arg[0], &err);
  if (root < 0)
    *ret = send_fail (k->c, &err);
  return root;
}

enum MHD_Result
e2b_volume_path (struct call *k)
{
  enum MHD_Result ret;
  const char *path;
  cleanup_close int root = content_root (k, &path, &ret);
  if (root < 0)
    return ret;
  struct sbx_volume_entry e;
  struct sbx_err err;
  if (strcmp (k->method, "DELETE") == 0)
    {
      if (sbx_volume_remove (root, path, &err) < 0)
        return send_fail (k->c, &err);
      return send_empty (k->c, 204);
    }
  if (strcmp (k->method, "PATCH") == 0)
    {
      json_t *b = body_object (k->c, k->rq, &ret);
      if (b == NULL)
        return ret;
      long long uid = -1, gid = -1, mode = -1;
      int r = opt_int (k->c, b, "uid", 0, SBX_VOLUME_ID_MAX, &uid, &ret) < 0
                      || opt_int (k->c, b, "gid", 0, SBX_VOLUME_ID_MAX, &gid, &ret) < 0
                      || opt_int (k->c, b, "mode", 0, 07777, &mode, &ret) < 0
                  ? -1
                  : 0;
      json_decref (b);
      if (r < 0)
        return ret;
      struct sbx_volume_meta m = { uid, gid, mode };
      if (sbx_volume_set_meta (root, path, &m, &e, &err) < 0)
        return send_fail (k->c, &err);
      return send_entry (k->c, 200, &e);
    }
  if (sbx_volume_stat (root, path, &e, &err) < 0)
    return send_fail (k->c, &err);
  return send_entry (k->c, 200, &e);
}

enum MHD_Result
e2b_volume_dir (struct call *k)
{
  enum MHD_Result ret;
  const char *path;
  cleanup_close int root = content_root (k, &path, &ret);
  if (root < 0)
    return ret;
  struct sbx_err err;
  if (strcmp (k->method, "POST") == 0)
    {
      struct sbx_volume_meta m;
      if (!query_meta (k->c, &m, &ret))
        return ret;
      struct sbx_volume_entry e;
      if (sbx_volume_mkdir (root, path, &m, query_force (k->c), &e, &err) < 0)
        return send_fail (k->c, &err);
      return send_entry (k->c, 201, &e);
    }
  int64_t depth;
  if (!query_num (k->c, "depth", SBX_VOLUME_DEPTH_MAX, &depth, &ret))
    return ret;
  struct sbx_volume_entry *v;
  size_t n;
  if (sbx_volume_list (root, path, depth < 1 ? 1 : (uint32_t) depth, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, entry_object (&v[i]));
  sbx_volume_entries_free (v, n);
  return send_json (k->c, 200, arr);
}

enum MHD_Result
e2b_volume_file (struct call *k)
{
  enum MHD_Result ret;
  const char *path;
  cleanup_close int root = content_root (k, &path, &ret);
  if (root < 0)
    return ret;
  struct sbx_err err;
  if (strcmp (k->method, "PUT") == 0)
    {
      struct sbx_volume_meta m;
      if (!query_meta (k->c, &m, &ret))
        return ret;
      struct sbx_volume_entry e;
      if (sbx_volume_write (root, path, k->rq->body ? k->rq->body : "", k->rq->len, &m, &e, &err) < 0)
        return send_fail (k->c, &err);
      return send_entry (k->c, 201, &e);
    }
  uint64_t size;
  int fd = sbx_volume_open_read (root, path, &size, &err);
  if (fd < 0)
    return send_fail (k->c, &err);
  /* the open file keeps the volume's file system mounted until sent */
  struct MHD_Response *resp = MHD_create_response_from_fd64 (size, fd);
  if (resp == NULL)
    {
      close (fd);
      return send_error (k->c, 500, "cannot send the file");
    }
  MHD_add_response_header (resp, "Content-Type", "application/octet-stream");
  return queue_response (k->c, 200, resp);
}
