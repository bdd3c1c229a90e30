/*
 * e2b_templates.c - E2B's template build API, as the `e2b` SDK's Template
 * class drives it (Template.build, buildInBackground, exists, tags):
 *
 *   POST /v3/templates                          a template and a build of it
 *   GET  /templates/:id/files/:hash             upload link, or already there
 *   PUT  /templates/:id/files/:hash?...         the upload (signed URL)
 *   POST /v2/templates/:id/builds/:build        its steps: the build starts
 *   GET  /templates/:id/builds/:build/status    status and log (logsOffset)
 *   GET  /templates/:id/builds/:build/logs      the log (cursor, direction)
 *   GET  /templates/aliases/:alias              does this name exist
 *   GET  /v2/templates, GET /templates          the organisation's templates
 *   GET, PATCH, DELETE /templates/:id           one, public or not, removed
 *   POST, DELETE /templates/tags, GET /templates/:id/tags
 *
 * The work and the records are service/builds.c's; this file translates.
 * A template is its organisation's: another one's answers 404.
 *
 * The upload URL is the daemon's own, signed like the terminal's: an HMAC
 * of the organisation, the hash and an expiry under a key derived from
 * STATE/envd.secret; the SDK sends the archive there without its API key.
 * The signature is checked from the URL before the body is read.
 */
#include "api.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "../service/builds.h"
#include "../service/encode.h"

#define UPLOAD_TTL_S 3600
#define ENVD_VERSION "0.6.13"

/* ---- answers ---- */

static json_t *
time_json (int64_t ms)
{
  char ts[40];
  sbx_rfc3339 (ms, ts, sizeof ts);
  return json_string (ts);
}

static json_t *
names_json (const struct sbx_tmpl_rec *t)
{
  return json_pack ("[s]", t->name);
}

/* The newest build of T (and the newest ready one's id in READY_ID). */
static void
latest_builds (struct http_server *h, const struct sbx_tmpl_rec *t, char status[16], char ready_id[SBX_BUILD_ID_MAX])
{
  struct sbx_build_rec *v;
  size_t n;
  struct sbx_err err;
  snprintf (status, 16, "waiting");
  ready_id[0] = '\0';
  if (sbx_store_build_list (h->store, t->id, &v, &n, &err) < 0)
    return;
  if (n > 0)
    snprintf (status, 16, "%s", v[0].status);
  for (size_t i = 0; i < n && !ready_id[0]; i++)
    if (strcmp (v[i].status, "ready") == 0)
      snprintf (ready_id, SBX_BUILD_ID_MAX, "%s", v[i].id);
  sbx_build_recs_free (v, n);
}

static json_t *
template_json (struct http_server *h, const struct sbx_tmpl_rec *t)
{
  char status[16], ready[SBX_BUILD_ID_MAX];
  latest_builds (h, t, status, ready);
  return json_pack ("{s:s, s:s, s:i, s:i, s:i, s:b, s:o, s:o, s:o, s:o, s:n, s:n, s:i, s:i, s:s, s:s}",
                    "templateID", t->id, "buildID", ready, "cpuCount", (int) t->cpu_count, "memoryMB",
                    (int) t->memory_mb, "diskSizeMB", (int) SBX_BUILD_DISK_MB, "public", t->is_public, "aliases",
                    names_json (t), "names", names_json (t), "createdAt", time_json (t->created_ms), "updatedAt",
                    time_json (t->updated_ms), "createdBy", "lastSpawnedAt", "spawnCount", 0, "buildCount",
                    (int) t->build_count, "envdVersion", ENVD_VERSION, "buildStatus", status);
}

static json_t *
log_entry_json (const struct sbx_build_log *e)
{
  json_t *o = json_pack ("{s:o, s:s, s:s}", "timestamp", time_json (e->ms), "level", e->level, "message", e->msg);
  if (o && e->step[0])
    json_object_set_new (o, "step", json_string (e->step));
  return o;
}

/* A JSON array of strings (at most MAX, each a string) into a
   NULL-terminated list pointing into A; -1 after answering 400. */
static int
string_list (struct MHD_Connection *c, json_t *a, const char *what, size_t max, const char ***out, size_t *n,
             enum MHD_Result *ret)
{
  *out = NULL;
  *n = 0;
  if (a == NULL || json_is_null (a))
    return 0;
  if (!json_is_array (a) || json_array_size (a) > max)
    {
      *ret = send_error (c, 400, "%s must be an array of at most %zu strings", what, max);
      return -1;
    }
  const char **v = calloc (json_array_size (a) + 1, sizeof *v);
  if (v == NULL)
    {
      *ret = send_error (c, 500, "out of memory");
      return -1;
    }
  size_t i;
  json_t *x;
  json_array_foreach (a, i, x)
  {
    if (!json_is_string (x))
      {
        free (v);
        *ret = send_error (c, 400, "%s must be an array of strings", what);
        return -1;
      }
    v[i] = json_string_value (x);
  }
  *out = v;
  *n = json_array_size (a);
  return 0;
}

/* ---- templates ---- */

/* POST /v3/templates {name ("name:tag"), tags, cpuCount, memoryMB}, and
   the older POST /v2/templates {alias, ...} */
enum MHD_Result
e2bt_request (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *name = NULL, *alias = NULL;
  long long cpu = 0, mem = 0;
  const char **tags = NULL;
  size_t n_tags = 0;
  if (opt_string (k->c, b, "name", &name, &ret) < 0 || opt_string (k->c, b, "alias", &alias, &ret) < 0
      || opt_int (k->c, b, "cpuCount", 1, 64, &cpu, &ret) < 0
      || opt_int (k->c, b, "memoryMB", 128, 262144, &mem, &ret) < 0
      || string_list (k->c, json_object_get (b, "tags"), "tags", 16, &tags, &n_tags, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  if (name == NULL)
    name = alias;
  if (name == NULL || *name == '\0')
    {
      free (tags);
      json_decref (b);
      return send_error (k->c, 400, "name is required");
    }
  struct sbx_tmpl_rec t;
  struct sbx_build_rec br;
  struct sbx_err err;
  int r = sbx_service_template_request (k->h->svc, &k->rq->org, name, tags, n_tags, (uint32_t) cpu, (uint32_t) mem,
                                        &t, &br, &err);
  free (tags);
  json_decref (b);
  if (r < 0)
    return send_fail (k->c, &err);
  json_t *tj = br.tags_json ? json_loads (br.tags_json, 0, NULL) : NULL;
  json_t *o = json_pack ("{s:s, s:s, s:b, s:o, s:o, s:o}", "templateID", t.id, "buildID", br.id, "public",
                         t.is_public, "aliases", names_json (&t), "names", names_json (&t), "tags",
                         tj ? tj : json_array ());
  sbx_build_rec_free (&br);
  return send_json (k->c, 202, o);
}

/* GET /v2/templates and GET /templates */
enum MHD_Result
e2bt_list (struct call *k)
{
  struct sbx_tmpl_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_tmpl_list (k->h->store, k->rq->org.id, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *a = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (a, template_json (k->h, &v[i]));
  free (v);
  return send_json (k->c, 200, a);
}

/* GET /templates/:id: the template with its builds */
enum MHD_Result
e2bt_get (struct call *k)
{
  struct sbx_tmpl_rec t;
  struct sbx_err err;
  if (sbx_service_template_get (k->h->svc, &k->rq->org, k->arg[0], &t, &err) < 0)
    return send_fail (k->c, &err);
  struct sbx_build_rec *v;
  size_t n;
  if (sbx_store_build_list (k->h->store, t.id, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *builds = json_array ();
  for (size_t i = 0; i < n; i++)
    {
      json_t *o = json_pack ("{s:s, s:s, s:o, s:o, s:i, s:i, s:i, s:s}", "buildID", v[i].id, "status", v[i].status,
                             "createdAt", time_json (v[i].created_ms), "updatedAt", time_json (v[i].updated_ms),
                             "cpuCount", (int) v[i].cpu_count, "memoryMB", (int) v[i].memory_mb, "diskSizeMB",
                             (int) SBX_BUILD_DISK_MB, "envdVersion", ENVD_VERSION);
      if (o && v[i].finished_ms)
        json_object_set_new (o, "finishedAt", time_json (v[i].finished_ms));
      json_array_append_new (builds, o);
    }
  sbx_build_recs_free (v, n);
  json_t *o = json_pack ("{s:s, s:b, s:o, s:o, s:o, s:o, s:n, s:i, s:o}", "templateID", t.id, "public",
                         t.is_public, "aliases", names_json (&t), "names", names_json (&t), "createdAt",
                         time_json (t.created_ms), "updatedAt", time_json (t.updated_ms), "lastSpawnedAt",
                         "spawnCount", 0, "builds", builds);
  return send_json (k->c, 200, o);
}

/* PATCH /templates/:id and /v2/templates/:id {public} */
enum MHD_Result
e2bt_patch (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  json_t *pub = json_object_get (b, "public");
  if (pub != NULL && !json_is_boolean (pub))
    {
      json_decref (b);
      return send_error (k->c, 400, "public must be a boolean");
    }
  struct sbx_tmpl_rec t;
  struct sbx_err err;
  int r = pub ? sbx_service_template_set_public (k->h->svc, &k->rq->org, k->arg[0], json_is_true (pub), &t, &err)
              : sbx_service_template_get (k->h->svc, &k->rq->org, k->arg[0], &t, &err);
  json_decref (b);
  if (r == 0 && strcmp (t.org_id, k->rq->org.id) != 0)
    r = sbx_failk (&err, SBX_E_NOT_FOUND, "template '%s' not found", k->arg[0]);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, json_pack ("{s:o}", "names", names_json (&t)));
}

/* DELETE /templates/:id */
enum MHD_Result
e2bt_delete (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_template_delete (k->h->svc, &k->rq->org, k->arg[0], &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 204);
}

/* GET /templates/aliases/:alias: 200 for the organisation's template of
   that name, or a template of this machine (public); else 404. */
enum MHD_Result
e2bt_alias (struct call *k)
{
  struct sbx_tmpl_rec t;
  struct sbx_err err;
  const char *alias = k->arg[0];
  if (sbx_store_tmpl_get (k->h->store, k->rq->org.id, alias, &t, &err) == 0 && strcmp (t.org_id, k->rq->org.id) == 0)
    return send_json (k->c, 200, json_pack ("{s:s, s:b}", "templateID", t.id, "public", t.is_public));
  if (sbx_service_template_shipped (k->h->svc, alias))
    return send_json (k->c, 200, json_pack ("{s:s, s:b}", "templateID", alias, "public", 1));
  return send_error (k->c, 404, "template '%s' not found", alias);
}

/* ---- uploads ---- */

static void
upload_mac (struct http_server *h, const char *org, const char *hash, long long expires, char out[65])
{
  char msg[256];
  int n = snprintf (msg, sizeof msg, "sbxd-template-upload\n%s\n%s\n%lld", org, hash, expires);
  unsigned char md[32];
  unsigned int len = 0;
  HMAC (EVP_sha256 (), h->envd_secret, sizeof h->envd_secret, (const unsigned char *) msg, (size_t) n, md, &len);
  for (int i = 0; i < 32; i++)
    sprintf (out + 2 * i, "%02x", md[i]);
}

/* GET /templates/:id/files/:hash */
enum MHD_Result
e2bt_file_link (struct call *k)
{
  bool present = false;
  struct sbx_err err;
  if (sbx_service_build_file_present (k->h->svc, &k->rq->org, k->arg[0], k->arg[1], &present, &err) < 0)
    return send_fail (k->c, &err);
  long long expires = (long long) (sbx_wall_ms () / 1000) + UPLOAD_TTL_S;
  char mac[65];
  upload_mac (k->h, k->rq->org.id, k->arg[1], expires, mac);
  const char *host = MHD_lookup_connection_value (k->c, MHD_HEADER_KIND, "Host");
  const char *proto = MHD_lookup_connection_value (k->c, MHD_HEADER_KIND, "X-Forwarded-Proto");
  if (host == NULL || strpbrk (host, "/?#@ \t") != NULL || strlen (host) > 255)
    return send_error (k->c, 400, "a Host header is needed to give an upload URL");
  char *url = NULL;
  if (asprintf (&url, "%s://%s/templates/%s/files/%s?org=%s&expires=%lld&signature=%s",
                proto && strcmp (proto, "https") == 0 ? "https" : "http", host, k->arg[0], k->arg[1],
                k->rq->org.id, expires, mac)
      < 0)
    return send_error (k->c, 500, "out of memory");
  json_t *o = json_pack ("{s:b, s:s}", "present", present, "url", url);
  free (url);
  return send_json (k->c, 201, o);
}

/* Checked from the headers, before the body is read (struct route's
   check). */
bool
e2bt_upload_check (struct call *k, enum MHD_Result *ret)
{
  const char *org = query (k->c, "org"), *exp = query (k->c, "expires"), *sig = query (k->c, "signature");
  char mac[65];
  long long expires = exp ? strtoll (exp, NULL, 10) : 0;
  bool ok = org && sig && exp && strlen (sig) == 64 && strlen (org) < SBX_STORE_ID_MAX;
  if (ok)
    {
      upload_mac (k->h, org, k->arg[1], expires, mac);
      ok = CRYPTO_memcmp (mac, sig, 64) == 0;
    }
  if (!ok)
    {
      *ret = send_error (k->c, 401, "invalid upload signature");
      return false;
    }
  if (expires < sbx_wall_ms () / 1000)
    {
      *ret = send_error (k->c, 401, "the upload URL has expired");
      return false;
    }
  return true;
}

/* PUT /templates/:id/files/:hash?org=&expires=&signature= */
enum MHD_Result
e2bt_file_put (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_build_file_put (k->h->svc, query (k->c, "org"), k->arg[1], k->rq->body, k->rq->len, &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 200);
}

/* ---- builds ---- */

static int
parse_steps (struct MHD_Connection *c, json_t *a, struct sbx_build_spec *spec, enum MHD_Result *ret)
{
  if (a == NULL || json_is_null (a))
    return 0;
  if (!json_is_array (a) || json_array_size (a) > SBX_BUILD_STEPS_MAX)
    {
      *ret = send_error (c, 400, "steps must be an array of at most %u steps", SBX_BUILD_STEPS_MAX);
      return -1;
    }
  spec->steps = calloc (json_array_size (a) + 1, sizeof *spec->steps);
  if (spec->steps == NULL)
    {
      *ret = send_error (c, 500, "out of memory");
      return -1;
    }
  size_t i;
  json_t *s;
  json_array_foreach (a, i, s)
  {
    struct sbx_build_step *st = &spec->steps[spec->n_steps++];
    const char *type = json_string_value (json_object_get (s, "type"));
    json_t *args = json_object_get (s, "args");
    json_t *hash = json_object_get (s, "filesHash");
    json_t *force = json_object_get (s, "force");
    int kind = type ? sbx_step_kind_parse (type) : -1;
    if (!json_is_object (s) || kind < 0)
      {
        *ret = send_error (c, 400, "step %zu: unknown type %s%s%s (sbxd builds RUN, COPY, ENV, WORKDIR and USER)",
                           i + 1, type ? "'" : "", type ? type : "(none)", type ? "'" : "");
        return -1;
      }
    st->kind = (enum sbx_step_kind) kind;
    if ((args && !json_is_array (args)) || (hash && !json_is_null (hash) && !json_is_string (hash))
        || (force && !json_is_null (force) && !json_is_boolean (force)))
      {
        *ret = send_error (c, 400, "step %zu: args must be an array of strings, filesHash a string", i + 1);
        return -1;
      }
    st->force = json_is_true (force);
    if (json_is_string (hash))
      snprintf (st->files_hash, sizeof st->files_hash, "%s", json_string_value (hash));
    if (hash && json_is_string (hash) && strlen (json_string_value (hash)) >= sizeof st->files_hash)
      {
        *ret = send_error (c, 400, "step %zu: filesHash must be 64 hex digits", i + 1);
        return -1;
      }
    size_t n = args ? json_array_size (args) : 0;
    if (n > SBX_BUILD_ARGS_MAX)
      {
        *ret = send_error (c, 400, "step %zu: at most %u arguments", i + 1, SBX_BUILD_ARGS_MAX);
        return -1;
      }
    st->args = calloc (n + 1, sizeof *st->args);
    if (st->args == NULL)
      {
        *ret = send_error (c, 500, "out of memory");
        return -1;
      }
    for (size_t j = 0; j < n; j++)
      {
        const char *v = json_string_value (json_array_get (args, j));
        if (v == NULL)
          {
            *ret = send_error (c, 400, "step %zu: args must be strings", i + 1);
            return -1;
          }
        if ((st->args[j] = strdup (v)) == NULL)
          {
            *ret = send_error (c, 500, "out of memory");
            return -1;
          }
        st->n_args++;
      }
  }
  return 0;
}

static int
dup_opt (struct MHD_Connection *c, json_t *b, const char *key, char **out, enum MHD_Result *ret)
{
  const char *v = NULL;
  if (opt_string (c, b, key, &v, ret) < 0)
    return -1;
  if (v && *v && (*out = strdup (v)) == NULL)
    {
      *ret = send_error (c, 500, "out of memory");
      return -1;
    }
  return 0;
}

/* POST /v2/templates/:id/builds/:build (TemplateBuildStartV2) */
enum MHD_Result
e2bt_build_start (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  struct sbx_build_spec spec;
  memset (&spec, 0, sizeof spec);
  bool force = false;
  if (dup_opt (k->c, b, "fromImage", &spec.from_image, &ret) < 0
      || dup_opt (k->c, b, "fromTemplate", &spec.from_template, &ret) < 0
      || dup_opt (k->c, b, "startCmd", &spec.start_cmd, &ret) < 0
      || dup_opt (k->c, b, "readyCmd", &spec.ready_cmd, &ret) < 0 || opt_bool (k->c, b, "force", &force, &ret) < 0
      || parse_steps (k->c, json_object_get (b, "steps"), &spec, &ret) < 0)
    goto fail;
  spec.force = force;
  json_t *reg = json_object_get (b, "fromImageRegistry");
  if (reg && !json_is_null (reg))
    {
      ret = send_error (k->c, 400, "fromImageRegistry: sbxd pulls no images from registries; build from a Debian "
                                   "suite (fromImage debian:bookworm) or a template (fromTemplate)");
      goto fail;
    }
  if (spec.from_image && spec.from_template)
    {
      ret = send_error (k->c, 400, "give fromImage or fromTemplate, not both");
      goto fail;
    }
  json_decref (b);
  struct sbx_err err;
  if (sbx_service_build_begin (k->h->svc, &k->rq->org, k->arg[0], k->arg[1], &spec, &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 202);

fail:
  sbx_build_spec_free (&spec);
  json_decref (b);
  return ret;
}

static int
query_count (struct MHD_Connection *c, const char *key, long def, long max, long *out, enum MHD_Result *ret)
{
  const char *v = query (c, key);
  *out = def;
  if (v == NULL)
    return 0;
  char *end;
  long n = strtol (v, &end, 10);
  if (*v == '\0' || *end || n < 0 || n > max)
    {
      *ret = send_error (c, 400, "%s must be a whole number from 0 to %ld", key, max);
      return -1;
    }
  *out = n;
  return 0;
}

/* GET /templates/:id/builds/:build/status?logsOffset=&limit= */
enum MHD_Result
e2bt_build_status (struct call *k)
{
  enum MHD_Result ret;
  long offset, limit;
  if (query_count (k->c, "logsOffset", 0, 1L << 30, &offset, &ret) < 0
      || query_count (k->c, "limit", 100, 100, &limit, &ret) < 0)
    return ret;
  struct sbx_build_rec br;
  struct sbx_err err;
  if (sbx_service_build_get (k->h->svc, &k->rq->org, k->arg[0], k->arg[1], &br, &err) < 0)
    return send_fail (k->c, &err);
  struct sbx_build_log *v = NULL;
  size_t n = 0;
  if (sbx_service_build_logs (k->h->svc, br.id, (size_t) offset, (size_t) limit, &v, &n, &err) < 0)
    {
      sbx_build_rec_free (&br);
      return send_fail (k->c, &err);
    }
  json_t *entries = json_array (), *lines = json_array ();
  for (size_t i = 0; i < n; i++)
    {
      json_array_append_new (entries, log_entry_json (&v[i]));
      char ts[40];
      sbx_rfc3339 (v[i].ms, ts, sizeof ts);
      char *line = NULL;
      if (asprintf (&line, "[%s] %s", ts, v[i].msg) >= 0)
        {
          json_array_append_new (lines, json_string (line) ?: json_string ("(not UTF-8)"));
          free (line);
        }
    }
  sbx_build_logs_free (v, n);
  json_t *o = json_pack ("{s:s, s:s, s:s, s:o, s:o}", "templateID", br.template_id, "buildID", br.id, "status",
                         br.status, "logs", lines, "logEntries", entries);
  if (o && strcmp (br.status, "error") == 0)
    {
      json_t *reason = json_pack ("{s:s, s:[]}", "message", br.reason ? br.reason : "the build failed", "logEntries");
      if (reason && br.step[0])
        json_object_set_new (reason, "step", json_string (br.step));
      json_object_set_new (o, "reason", reason);
    }
  sbx_build_rec_free (&br);
  return send_json (k->c, 200, o);
}

static int
level_rank (const char *l)
{
  static const char *const order[] = { "debug", "info", "warn", "error" };
  for (int i = 0; i < 4; i++)
    if (l && strcmp (l, order[i]) == 0)
      return i;
  return -1;
}

/* GET /templates/:id/builds/:build/logs?cursor=&limit=&direction=&level= */
enum MHD_Result
e2bt_build_logs (struct call *k)
{
  enum MHD_Result ret;
  long limit;
  if (query_count (k->c, "limit", 100, 100, &limit, &ret) < 0)
    return ret;
  const char *cursor = query (k->c, "cursor"), *direction = query (k->c, "direction"), *level = query (k->c, "level");
  long long from = cursor ? strtoll (cursor, NULL, 10) : 0;
  bool backward = direction && strcmp (direction, "backward") == 0;
  if ((direction && !backward && strcmp (direction, "forward") != 0) || (level && level_rank (level) < 0))
    return send_error (k->c, 400, "direction is forward or backward; level is debug, info, warn or error");
  struct sbx_build_rec br;
  struct sbx_err err;
  if (sbx_service_build_get (k->h->svc, &k->rq->org, k->arg[0], k->arg[1], &br, &err) < 0)
    return send_fail (k->c, &err);
  struct sbx_build_log *v = NULL;
  size_t n = 0;
  int r = sbx_service_build_logs (k->h->svc, br.id, 0, SIZE_MAX, &v, &n, &err);
  sbx_build_rec_free (&br);
  if (r < 0)
    return send_fail (k->c, &err);
  json_t *a = json_array ();
  int min = level ? level_rank (level) : 0;
  for (size_t idx = 0; idx < n && json_array_size (a) < (size_t) limit; idx++)
    {
      const struct sbx_build_log *e = &v[backward ? n - 1 - idx : idx];
      if (level_rank (e->level) < min)
        continue;
      if (cursor && (backward ? e->ms > from : e->ms < from))
        continue;
      json_array_append_new (a, log_entry_json (e));
    }
  sbx_build_logs_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:o}", "logs", a));
}

/* ---- tags ---- */

/* POST /templates/tags {target: "name:tag", tags} */
enum MHD_Result
e2bt_tags_assign (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *target = NULL;
  const char **tags = NULL;
  size_t n = 0;
  if (opt_string (k->c, b, "target", &target, &ret) < 0
      || string_list (k->c, json_object_get (b, "tags"), "tags", 16, &tags, &n, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  if (target == NULL || n == 0)
    {
      free (tags);
      json_decref (b);
      return send_error (k->c, 400, "target and tags are required");
    }
  char build_id[SBX_BUILD_ID_MAX];
  struct sbx_err err;
  int r = sbx_service_tags_assign (k->h->svc, &k->rq->org, target, tags, n, build_id, &err);
  json_t *o = r == 0 ? json_pack ("{s:s, s:O}", "buildID", build_id, "tags", json_object_get (b, "tags")) : NULL;
  free (tags);
  json_decref (b);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 201, o);
}

/* DELETE /templates/tags {name, tags} */
enum MHD_Result
e2bt_tags_remove (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *name = NULL;
  const char **tags = NULL;
  size_t n = 0;
  if (opt_string (k->c, b, "name", &name, &ret) < 0
      || string_list (k->c, json_object_get (b, "tags"), "tags", 16, &tags, &n, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  struct sbx_err err;
  int r = name && n ? sbx_service_tags_remove (k->h->svc, &k->rq->org, name, tags, n, &err)
                    : sbx_failk (&err, SBX_E_INVALID, "name and tags are required");
  free (tags);
  json_decref (b);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 204);
}

/* GET /templates/:id/tags */
enum MHD_Result
e2bt_tags_list (struct call *k)
{
  struct sbx_tag_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_service_tags_list (k->h->svc, &k->rq->org, k->arg[0], &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *a = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (a, json_pack ("{s:s, s:s, s:o}", "tag", v[i].tag, "buildID", v[i].build_id, "createdAt",
                                         time_json (v[i].created_ms)));
  free (v);
  return send_json (k->c, 200, a);
}
