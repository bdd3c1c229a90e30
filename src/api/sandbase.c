/*
 * sandbase.c - seed 001's dialect (SandBase, E2B-compatible): the
 * sandboxes control plane (create, list, get, kill, pause, connect,
 * timeout, metrics), processes (synchronous and streamed exec, signals,
 * input) and the filesystem, under /sandboxes.  Answers and errors use
 * seed 001's shapes: every error is {"code": <status>, "message": "..."}.
 * docs/api.md describes every endpoint.
 *
 * Streaming answers (NDJSON process events) are produced by a worker
 * thread into a pipe that libmicrohttpd sends as a chunked body; when the
 * client goes away the pipe breaks and the worker stops listening, while
 * the process goes on.
 */
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/util.h"
#include "../service/encode.h"
#include "../service/output.h"
#include "../service/samples.h"
#include "../service/service.h"

#define MAX_READ_BYTES (1u << 20)     /* seed 001: reads larger than 1 MB are refused */
#define MAX_CAPTURE (16u << 20)       /* stdout/stderr kept by a synchronous exec, each, JSON-encoded */
#define DEFAULT_EXEC_TIMEOUT_S 60     /* seed 001 */
#define MAX_EXEC_TIMEOUT_S 3600

/* ---- sandbox objects ---- */

static void lifecycle_object (struct http_server *h, const char *id, json_t *obj);

static json_t *
sandbox_object_of (struct http_server *h, const struct sbx_sandbox_rec *r, bool with_token, bool read_ingress,
                   bool read_mounts)
{
  char started[40], end[40];
  sbx_rfc3339 (r->started_ms, started, sizeof started);
  sbx_rfc3339 (r->end_ms, end, sizeof end);
  json_t *meta = r->metadata_json ? json_loads (r->metadata_json, 0, NULL) : NULL;
  if (meta == NULL)
    meta = json_object ();
  json_t *j = json_pack ("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:n}", "sandboxID", r->id,
                         "templateID", r->template_id, "alias", r->template_id, "clientID", "sbxd", "metadata", meta,
                         "startedAt", started, "endAt", end, "status", r->status, "state", r->status, "cpuCount",
                         (int) r->cpu_count, "memoryMB", (int) r->memory_mb, "diskSizeMB", (int) r->disk_mb,
                         "envdVersion", "0.6.13", "domain");
  /* its ports are at PORT-ID.DOMAIN (proxy.c), envd at 49983-ID.DOMAIN */
  if (j && h->domain[0])
    json_object_set_new (j, "domain", json_string (h->domain));
  if (j && strcmp (r->status, "stopped") == 0 && r->stop_reason[0])
    json_object_set_new (j, "stopReason", json_string (r->stop_reason));
  if (j && (strcmp (r->status, "running") == 0 || strcmp (r->status, "paused") == 0))
    {
      network_object_with (h, r->id, j, read_ingress);
      lifecycle_object (h, r->id, j);
    }
  /* E2B's volumeMounts: [{name, path}] */
  struct sbx_volume_mount_rec *vm = NULL;
  size_t n_vm = 0;
  struct sbx_err verr;
  if (j && (!read_mounts || sbx_service_volume_mounts (h->svc, r->id, &vm, &n_vm, &verr) == 0))
    {
      json_t *arr = json_array ();
      for (size_t i = 0; i < n_vm; i++)
        json_array_append_new (arr, json_pack ("{s:s, s:s}", "name", vm[i].name, "path", vm[i].path));
      free (vm);
      json_object_set_new (j, "volumeMounts", arr);
    }
  if (j && with_token)
    {
      char token[65];
      e2b_access_token (h, r->id, token);
      json_object_set_new (j, "envdAccessToken", json_string (token));
      /* E2B gives it only to sandboxes whose ports are not public; the
         code interpreter SDK sends it on its contexts calls, so it is
         always given here (it opens the ports, and port 49999, only) */
      e2b_traffic_token (h, r->id, token);
      json_object_set_new (j, "trafficAccessToken", json_string (token));
    }
  return j;
}

json_t *
sandbox_object (struct http_server *h, const struct sbx_sandbox_rec *r, bool with_token)
{
  return sandbox_object_of (h, r, with_token, true, true);
}

json_t *
sandbox_object_created (struct http_server *h, const struct sbx_sandbox_rec *r, bool has_ingress, bool has_mounts)
{
  return sandbox_object_of (h, r, true, has_ingress, has_mounts);
}

bool
own_sandbox (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id,
             struct sbx_sandbox_rec *rec, enum MHD_Result *ret)
{
  struct sbx_err err;
  if (sbx_service_sandbox_get (h->svc, &rq->org, id, rec, &err) < 0)
    {
      *ret = send_fail (c, &err);
      return false;
    }
  return true;
}

/* E2B's lifecycle of a live sandbox: {"onTimeout": "kill"|"pause",
   "autoResume": bool}. */
static void
lifecycle_object (struct http_server *h, const char *id, json_t *obj)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    return;
  json_object_set_new (obj, "lifecycle",
                       json_pack ("{s:s, s:b}", "onTimeout", info.on_timeout == SBX_ON_TIMEOUT_KILL ? "kill" : "pause",
                                  "autoResume", info.auto_resume));
  sbx_info_free (&info);
}

/* Answer with the current record of ID. */
static enum MHD_Result
send_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, unsigned status)
{
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (sbx_store_sandbox_get (h->store, id, &rec, &err) < 0)
    return send_fail (c, &err);
  /* create and connect answers carry the envd access token */
  bool token = status == 201 || status == 200;
  enum MHD_Result r = send_json (c, status, sandbox_object (h, &rec, token));
  sbx_sandbox_rec_free (&rec);
  return r;
}

/* Answer 201 with the record of ID, just created (sandbox_object_created). */
static enum MHD_Result
send_created (struct http_server *h, struct MHD_Connection *c, const char *id, bool has_ingress, bool has_mounts)
{
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (sbx_store_sandbox_get (h->store, id, &rec, &err) < 0)
    return send_fail (c, &err);
  enum MHD_Result r = send_json (c, 201, sandbox_object_created (h, &rec, has_ingress, has_mounts));
  sbx_sandbox_rec_free (&rec);
  return r;
}

/* ---- sandbox endpoints ---- */

static enum MHD_Result
create_sandbox (struct http_server *h, struct MHD_Connection *c, struct request *rq)
{
  enum MHD_Result ret;
  json_t *b = body_object (c, rq, &ret);
  if (b == NULL)
    return ret;
  const char *tmpl = NULL;
  long long timeout = 300, cpu = 0, mem = 0, disk = 0;
  char **env = NULL;
  cleanup_free char *meta_text = NULL;
  struct sbx_net_policy net = { 0 };
  int allow_internet = 0;
  bool net_given = false, ingress_given = false;
  struct sbx_ingress ingress;
  ret = MHD_NO;
  if (opt_string (c, b, "templateID", &tmpl, &ret) < 0
      || opt_int (c, b, "timeout", 1, rq->org.max_timeout_s, &timeout, &ret) < 0
      || opt_int (c, b, "cpuCount", 1, 8, &cpu, &ret) < 0 || opt_int (c, b, "memoryMB", 64, 4096, &mem, &ret) < 0
      || opt_int (c, b, "diskSizeMB", 64, 102400, &disk, &ret) < 0 || env_list (c, b, "envVars", &env, &ret) < 0)
    goto out;
  if (tmpl == NULL || *tmpl == '\0')
    {
      ret = send_error (c, 400, "templateID is required");
      goto out;
    }
  json_t *meta = json_object_get (b, "metadata");
  if (meta && !json_is_null (meta))
    {
      if (!json_is_object (meta))
        {
          ret = send_error (c, 400, "metadata must be an object");
          goto out;
        }
      meta_text = json_dumps (meta, JSON_COMPACT);
    }
  if (body_network (c, b, false, &net, &allow_internet, &net_given, &ret) < 0
      || body_ingress (c, b, &ingress, &ingress_given, &ret) < 0)
    goto out;
  /* E2B's lifecycle: autoPause (pause at the timeout instead of killing),
     autoPauseMemory (false: without the processes), autoResume
     {"enabled": bool} (a call to the paused sandbox resumes it) */
  bool auto_pause = false, pause_memory = true, auto_resume = false;
  if (opt_bool (c, b, "autoPause", &auto_pause, &ret) < 0 || opt_bool (c, b, "autoPauseMemory", &pause_memory, &ret) < 0)
    goto out;
  json_t *ar = json_object_get (b, "autoResume");
  if (ar && !json_is_null (ar))
    {
      json_t *en = json_is_object (ar) ? json_object_get (ar, "enabled") : ar;
      if (en && !json_is_null (en) && !json_is_boolean (en))
        {
          ret = send_error (c, 400, "autoResume must be {\"enabled\": true|false}");
          goto out;
        }
      auto_resume = json_is_true (en);
    }
  if (auto_resume && (!auto_pause || !pause_memory))
    {
      ret = send_error (c, 400, "autoResume needs autoPause, with its memory kept");
      goto out;
    }
  /* E2B's volumeMounts: [{name, path}], the organisation's volumes */
  struct sbx_volume_use vols[SBX_FS_MOUNTS_MAX];
  size_t n_vols = 0;
  json_t *vm = json_object_get (b, "volumeMounts");
  if (vm && !json_is_null (vm))
    {
      if (!json_is_array (vm) || json_array_size (vm) > SBX_FS_MOUNTS_MAX)
        {
          ret = send_error (c, 400, "volumeMounts must be an array of at most %d {name, path}", SBX_FS_MOUNTS_MAX);
          goto out;
        }
      size_t i;
      json_t *m;
      json_array_foreach (vm, i, m)
      {
        json_t *name = json_object_get (m, "name"), *path = json_object_get (m, "path");
        if (!json_is_object (m) || !json_is_string (name) || !json_is_string (path))
          {
            ret = send_error (c, 400, "volumeMounts[%zu] must be {\"name\": string, \"path\": string}", i);
            goto out;
          }
        vols[n_vols++] = (struct sbx_volume_use) { json_string_value (name), json_string_value (path) };
      }
    }
  /* a snapshot of the organisation, by id or name, else a template */
  struct sbx_saved snap;
  char snap_dir[PATH_MAX];
  bool from_snapshot = false;
  struct sbx_err serr;
  if (sbx_service_snapshot_find (h->svc, &rq->org, tmpl, &snap, snap_dir, &serr) == 0)
    from_snapshot = true;
  else if (sbx_err_kind (&serr) != SBX_E_NOT_FOUND)
    {
      ret = send_fail (c, &serr);
      goto out;
    }
  char snap_template[64];
  if (from_snapshot && sbx_snapshot_template (snap_dir, snap_template, &serr) < 0)
    {
      ret = send_fail (c, &serr);
      goto out;
    }
  struct sbx_sandbox_spec spec = { .template_name = from_snapshot ? snap_template : tmpl,
                                   .on_timeout = !auto_pause     ? SBX_ON_TIMEOUT_KILL
                                                 : pause_memory ? SBX_ON_TIMEOUT_PAUSE
                                                                : SBX_ON_TIMEOUT_PAUSE_FILES,
                                   .auto_resume = auto_resume,
                                   .snapshot_dir = from_snapshot ? snap_dir : NULL,
                                   .timeout_s = (uint32_t) timeout,
                                   .env = (const char *const *) env,
                                   .metadata_json = meta_text,
                                   .limits = { .cpu_millis = (uint32_t) cpu * 1000,
                                               .memory_mb = (uint32_t) mem,
                                               .disk_mb = (uint32_t) disk },
                                   .net = net_given ? &net : NULL,
                                   .internet_asked = allow_internet,
                                   .volumes = vols,
                                   .n_volumes = n_vols };
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (sbx_service_sandbox_create (h->svc, &rq->org, &spec, &rec, &err) < 0)
    {
      ret = sbx_err_kind (&err) != SBX_E_LIMIT ? send_fail (c, &err)
            : sbx_service_err_is_hours (&err)    ? send_error (c, 429, "%s", err.msg)
                                                 : send_error (c, 429, "concurrent sandbox limit reached");
      goto out;
    }
  char id[SBX_ID_MAX];
  snprintf (id, sizeof id, "%.*s", SBX_ID_MAX - 1, rec.id);
  snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, rec.id);
  sbx_sandbox_rec_free (&rec);
  /* before anyone knows its name, so no request meets it public */
  if (ingress_given && sbx_store_ingress_put (h->store, id, &ingress, &err) < 0)
    {
      sbx_destroy (h->engine, id, &err);
      ret = send_error (c, 500, "cannot keep the network settings: %s", err.msg);
      goto out;
    }
  /* what the create gave is not read back: with no ingress settings or
     volumes given, it has none */
  ret = send_created (h, c, id, ingress_given || from_snapshot, n_vols > 0 || from_snapshot);
out:
  sbx_net_policy_free (&net);
  sbx_strv_free (env);
  json_decref (b);
  return ret;
}

static enum MHD_Result
list_sandboxes (struct http_server *h, struct MHD_Connection *c, struct request *rq)
{
  const char *status = query (c, "status");
  if (status && strcmp (status, "running") && strcmp (status, "paused") && strcmp (status, "stopped")
      && strcmp (status, "creating") && strcmp (status, "error"))
    return send_error (c, 400, "invalid status: %s", status);
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list (h->store, rq->org.id, status, &v, &n, &err) < 0)
    return send_fail (c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, sandbox_object (h, &v[i], false));
  sbx_sandbox_recs_free (v, n);
  return send_json (c, 200, arr);
}

/* The optional "timeout" of a body, at most the organisation's limit;
   *TIMEOUT stays -1 when absent. */
static int
body_timeout (struct MHD_Connection *c, struct request *rq, long long *timeout, enum MHD_Result *ret)
{
  json_t *b = body_object (c, rq, ret);
  if (b == NULL)
    return -1;
  *timeout = -1;
  int r = opt_int (c, b, "timeout", 1, rq->org.max_timeout_s, timeout, ret);
  json_decref (b);
  return r;
}

static enum MHD_Result
timeout_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq, bool refresh)
{
  enum MHD_Result ret;
  long long timeout = -1;
  if (refresh)
    {
      /* E2B's refresh: {"duration": seconds}, optional */
      json_t *b = body_object (c, rq, &ret);
      if (b == NULL)
        return ret;
      int r = opt_int (c, b, "duration", 0, rq->org.max_timeout_s, &timeout, &ret);
      json_decref (b);
      if (r < 0)
        return ret;
      if (timeout <= 0)
        timeout = 60;
    }
  else
    {
      if (body_timeout (c, rq, &timeout, &ret) < 0)
        return ret;
      if (timeout < 0)
        return send_error (c, 400, "timeout is required");
    }
  struct sbx_err err;
  if (sbx_set_timeout (h->engine, id, (uint32_t) timeout, &err) < 0)
    return send_fail (c, &err);
  return send_empty (c, 204);
}

static enum MHD_Result
connect_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq)
{
  enum MHD_Result ret;
  long long timeout = -1;
  bool memory = true;
  json_t *b = body_object (c, rq, &ret);
  if (b == NULL)
    return ret;
  int pr = opt_int (c, b, "timeout", 0, rq->org.max_timeout_s, &timeout, &ret) < 0
                   || opt_bool (c, b, "memory", &memory, &ret) < 0
               ? -1
               : 0;
  json_decref (b);
  if (pr < 0)
    return ret;
  struct sbx_info info;
  struct sbx_err err;
  /* E2B: a sandbox that was killed (or never was) is not found */
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    return send_error (c, 404, "sandbox not found");
  enum sbx_state st = info.state;
  bool dropped = info.memory_dropped;
  sbx_info_free (&info);
  if (st == SBX_STOPPED || st == SBX_ERROR)
    return send_error (c, 404, "sandbox not found");
  /* "memory": false resumes from the files only (E2B's onResume "reboot") */
  if (st == SBX_PAUSED && !memory && !dropped && sbx_pause_files (h->engine, id, &err) < 0)
    return send_fail (c, &err);
  /* a resume takes a place on the machine, waiting for one a bounded time */
  if (st == SBX_PAUSED && sbx_service_sandbox_resume (h->svc, &rq->org, id, false, &err) < 0
      && sbx_err_kind (&err) != SBX_E_CONFLICT)
    return sbx_service_err_is_hours (&err) ? send_error (c, 429, "%s", err.msg)
           : sbx_err_kind (&err) == SBX_E_UNAVAILABLE
               ? send_fail (c, &err)
               : send_error (c, 502, "failed to resume sandbox in provider: %s", err.msg);
  /* a connect never brings the end closer */
  if (timeout > 0 && sbx_extend_timeout (h->engine, id, (uint32_t) timeout, &err) < 0)
    return send_fail (c, &err);
  return send_sandbox (h, c, id, 200);
}

/* One sample in E2B's shape (SandboxMetric), with SandBase's oomKills and
   pids. */
static json_t *
sample_json (const struct sbx_sample *sm)
{
  const struct sbx_metrics *m = &sm->m;
  char at[40];
  sbx_rfc3339 (sm->at_ms, at, sizeof at);
  json_t *o = json_pack ("{s:s, s:I, s:f, s:i, s:I, s:I, s:I, s:I, s:I}", "timestamp", at, "timestampUnix",
                         (json_int_t) (sm->at_ms / 1000), "cpuUsedPct", m->cpu_used_pct, "cpuCount",
                         (int) m->cpu_count, "memUsed", (json_int_t) m->mem_used, "memTotal",
                         (json_int_t) m->mem_total, "memCache", (json_int_t) m->mem_cache, "diskUsed",
                         (json_int_t) m->disk_used, "diskTotal", (json_int_t) m->disk_total);
  if (o)
    {
      json_object_set_new (o, "oomKills", json_integer ((json_int_t) m->oom_kills));
      json_object_set_new (o, "pids", json_integer ((json_int_t) m->pids));
    }
  return o;
}

/* Unix times from here on in milliseconds: seconds (what E2B's SDKs
   send, rounded) until the year 5138. */
#define UNIX_MS_FROM 100000000000LL

/* E2B's start and end: the samples of the history (service/samples.c)
   taken within them, oldest first.  A time in seconds covers its whole
   second, since the SDKs round their dates to seconds. */
static enum MHD_Result
metrics_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id)
{
  int64_t bound[2] = { 0, INT64_MAX };
  const char *names[2] = { "start", "end" };
  for (int i = 0; i < 2; i++)
    {
      const char *t = query (c, names[i]);
      if (t == NULL || *t == '\0')
        continue;
      char *end;
      errno = 0;
      long long v = strtoll (t, &end, 10);
      if (*t < '0' || *t > '9' || *end || errno || v < 0)
        return send_error (c, 400, "%s must be a unix time in seconds", names[i]);
      bound[i] = v >= UNIX_MS_FROM ? v : v * 1000 + (i ? 999 : 0);
    }
  if (bound[0] > bound[1])
    return send_error (c, 400, "start must not be after end");
  struct sbx_sampler *sampler = sbx_service_sampler (h->svc);
  if (sampler == NULL)
    return send_error (c, 503, "metrics are not kept");
  struct sbx_sample *v;
  size_t n;
  struct sbx_err err;
  if (sbx_sampler_window (sampler, id, bound[0], bound[1], &v, &n, &err) < 0)
    return send_fail (c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n && arr; i++)
    if (json_array_append_new (arr, sample_json (&v[i])) < 0)
      {
        json_decref (arr);
        arr = NULL;
      }
  free (v);
  if (arr == NULL)
    return send_error (c, 500, "out of memory");
  return send_json (c, 200, arr);
}

/* E2B's GET /sandboxes/metrics?sandbox_ids=a,b (SandboxesWithMetrics):
   the newest sample of each of the caller's sandboxes named, under its
   id; ids of no sandbox of the caller's, stopped ones and those with no
   sample yet are left out, as E2B leaves out all but running ones. */
#define METRICS_IDS_MAX 100

enum MHD_Result
sandbase_metrics_many (struct call *k)
{
  struct MHD_Connection *c = k->c;
  const char *ids = query (c, "sandbox_ids");
  if (ids == NULL || *ids == '\0')
    return send_error (c, 400, "sandbox_ids is required");
  struct sbx_sampler *sampler = sbx_service_sampler (k->h->svc);
  if (sampler == NULL)
    return send_error (c, 503, "metrics are not kept");
  char seen[METRICS_IDS_MAX][SBX_ID_MAX];
  size_t n_seen = 0;
  json_t *by_id = json_object ();
  if (by_id == NULL)
    return send_error (c, 500, "out of memory");
  for (const char *p = ids; *p;)
    {
      size_t len = strcspn (p, ",");
      char id[SBX_ID_MAX];
      if (len == 0 || len >= sizeof id)
        {
          json_decref (by_id);
          return send_error (c, 400, "sandbox_ids must be sandbox ids separated by commas");
        }
      memcpy (id, p, len);
      id[len] = '\0';
      p += len + (p[len] == ',');
      for (size_t i = 0; i < n_seen; i++)
        if (strcmp (seen[i], id) == 0)
          {
            json_decref (by_id);
            return send_error (c, 400, "sandbox_ids must not repeat an id");
          }
      if (n_seen == METRICS_IDS_MAX)
        {
          json_decref (by_id);
          return send_error (c, 400, "sandbox_ids may name at most %d sandboxes", METRICS_IDS_MAX);
        }
      memcpy (seen[n_seen++], id, sizeof id);
    }
  for (size_t i = 0; i < n_seen; i++)
    {
      struct sbx_sandbox_rec rec;
      struct sbx_err err;
      if (sbx_service_sandbox_get (k->h->svc, &k->rq->org, seen[i], &rec, &err) < 0)
        continue; /* not the caller's: as if it did not exist */
      sbx_sandbox_rec_free (&rec);
      struct sbx_sample sm;
      bool found;
      if (sbx_sampler_latest (sampler, seen[i], &sm, &found, &err) < 0 || !found)
        continue;
      json_object_set_new (by_id, seen[i], sample_json (&sm));
    }
  return send_json (c, 200, json_pack ("{s:o}", "sandboxes", by_id));
}

/* ---- processes ---- */

struct exec_params {
  char **argv;
  char **env;
  const char *cwd, *user;
  uint32_t timeout_ms;
  bool background, stdin_open, pty;
  uint32_t rows, cols;
  json_t *body; /* owns the strings above */
};

static void
exec_params_free (struct exec_params *p)
{
  sbx_strv_free (p->argv);
  sbx_strv_free (p->env);
  json_decref (p->body);
}

static int
parse_exec (struct MHD_Connection *c, struct request *rq, struct exec_params *p, enum MHD_Result *ret)
{
  memset (p, 0, sizeof *p);
  p->body = body_object (c, rq, ret);
  if (p->body == NULL)
    return -1;
  const char *cmd = NULL;
  long long timeout = DEFAULT_EXEC_TIMEOUT_S;
  if (opt_string (c, p->body, "cmd", &cmd, ret) < 0 || opt_int (c, p->body, "timeout", 0, MAX_EXEC_TIMEOUT_S, &timeout, ret) < 0
      || opt_string (c, p->body, "cwd", &p->cwd, ret) < 0 || opt_string (c, p->body, "user", &p->user, ret) < 0
      || env_list (c, p->body, "envs", &p->env, ret) < 0)
    return -1;
  if (cmd == NULL || *cmd == '\0')
    {
      *ret = send_error (c, 400, "cmd is required");
      return -1;
    }
  if (opt_bool (c, p->body, "background", &p->background, ret) < 0
      || opt_bool (c, p->body, "stdin", &p->stdin_open, ret) < 0)
    return -1;
  json_t *pty = json_object_get (p->body, "pty");
  if (pty && !json_is_null (pty))
    {
      long long rows = 24, cols = 80;
      if (!json_is_object (pty))
        {
          *ret = send_error (c, 400, "pty must be an object {rows, cols}");
          return -1;
        }
      if (opt_int (c, pty, "rows", 1, 1000, &rows, ret) < 0 || opt_int (c, pty, "cols", 1, 1000, &cols, ret) < 0)
        return -1;
      p->pty = true;
      p->rows = (uint32_t) rows;
      p->cols = (uint32_t) cols;
    }
  json_t *args = json_object_get (p->body, "args");
  if (args && !json_is_null (args) && !json_is_array (args))
    {
      *ret = send_error (c, 400, "args must be an array of strings");
      return -1;
    }
  size_t n = args ? json_array_size (args) : 0;
  if (n > 4096)
    {
      *ret = send_error (c, 400, "too many args (max 4096)");
      return -1;
    }
  p->argv = calloc (n + 2, sizeof *p->argv);
  p->argv[0] = strdup (cmd);
  for (size_t i = 0; i < n; i++)
    {
      json_t *a = json_array_get (args, i);
      if (!json_is_string (a) || strlen (json_string_value (a)) != json_string_length (a))
        {
          *ret = send_error (c, 400, "args must be an array of strings");
          return -1;
        }
      p->argv[i + 1] = strdup (json_string_value (a));
    }
  p->timeout_ms = (uint32_t) timeout * 1000;
  return 0;
}

struct capture {
  struct sbx_capture out, err; /* JSON text, ready to send */
  char *tail;                  /* the answer's other fields */
  uint32_t pid;
  int exit_code, signal;
  bool timed_out, ended, stop_after_start;
};

static int
capture_event (const struct sbx_proc_event *ev, void *ud)
{
  struct capture *cp = ud;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      cp->pid = ev->pid;
      return cp->stop_after_start ? -1 : 0;
    case SBX_PROC_STDOUT:
    case SBX_PROC_PTY:
      sbx_capture_add (&cp->out, ev->data, ev->len);
      return 0;
    case SBX_PROC_STDERR:
      sbx_capture_add (&cp->err, ev->data, ev->len);
      return 0;
    case SBX_PROC_KEEPALIVE:
      return 0;
    case SBX_PROC_END:
      cp->ended = true;
      cp->exit_code = ev->exit_code;
      cp->signal = ev->signal;
      cp->timed_out = ev->timed_out;
      return 0;
    }
  return 0;
}

/* JSON strings must be UTF-8: invalid bytes become U+FFFD. */
json_t *
text_json (const char *s, size_t n)
{
  return sbx_json_text (s, n);
}

static void
capture_free (void *cls)
{
  struct capture *cp = cls;
  sbx_capture_free (&cp->out);
  sbx_capture_free (&cp->err);
  free (cp->tail);
  free (cp);
}

/* The answer of a synchronous exec: {"stdout": ..., "stderr": ..., and
   the rest}.  The two outputs are already JSON text (escaped as they
   came, bounded after encoding): they are sent from where they are, not
   copied into one more buffer, and their memory stays counted in the
   output budget until the answer is sent. */
static enum MHD_Result
send_exec_answer (struct MHD_Connection *c, struct capture *cp, json_t *rest)
{
  cp->tail = json_dumps (rest, JSON_COMPACT);
  json_decref (rest);
  if (cp->tail == NULL || cp->tail[0] != '{')
    {
      capture_free (cp);
      return MHD_NO;
    }
  cp->tail[0] = ','; /* {"exitCode": ...} goes on after the outputs */
  struct MHD_IoVec iov[] = { { "{\"stdout\":\"", 11 }, { cp->out.data, cp->out.len },
                             { "\",\"stderr\":\"", 12 }, { cp->err.data, cp->err.len },
                             { "\"", 1 },                  { cp->tail, strlen (cp->tail) } };
  struct MHD_Response *r = MHD_create_response_from_iovec (iov, sizeof iov / sizeof iov[0], capture_free, cp);
  if (r == NULL)
    {
      capture_free (cp);
      return MHD_NO;
    }
  MHD_add_response_header (r, "Content-Type", "application/json");
  return queue_response (c, 200, r);
}

static enum MHD_Result
exec_sync (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq)
{
  struct exec_params p;
  enum MHD_Result ret;
  if (parse_exec (c, rq, &p, &ret) < 0)
    {
      exec_params_free (&p);
      return ret;
    }
  struct sbx_exec_opts o = { .argv = (const char *const *) p.argv,
                             .env = (const char *const *) p.env,
                             .cwd = p.cwd,
                             .user = p.user,
                             .pty = p.pty,
                             .rows = p.rows,
                             .cols = p.cols,
                             .timeout_ms = p.background ? 0 : p.timeout_ms };
  struct capture *cp = calloc (1, sizeof *cp);
  if (cp == NULL)
    {
      exec_params_free (&p);
      return send_error (c, 500, "out of memory");
    }
  cp->stop_after_start = p.background;
  sbx_capture_init (&cp->out, MAX_CAPTURE, true);
  sbx_capture_init (&cp->err, MAX_CAPTURE, true);
  struct sbx_err err;
  int r = sbx_service_exec (h->svc, id, &o, capture_event, cp, &err);
  exec_params_free (&p);
  if (r < 0)
    {
      capture_free (cp);
      return send_fail (c, &err);
    }
  if (p.background)
    {
      uint32_t pid = cp->pid;
      capture_free (cp);
      return send_json (c, 200, json_pack ("{s:i}", "pid", (int) pid));
    }
  if (!cp->ended)
    {
      uint32_t pid = cp->pid;
      capture_free (cp);
      return send_error (c, 500, "process %u ended without a status", pid);
    }
  sbx_capture_end (&cp->out);
  sbx_capture_end (&cp->err);
  int code = cp->signal ? 128 + cp->signal : cp->exit_code;
  json_t *j = json_pack ("{s:i, s:i, s:b}", "exitCode", code, "pid", (int) cp->pid, "timedOut", cp->timed_out);
  if (cp->signal)
    json_object_set_new (j, "signal", json_integer (cp->signal));
  if (cp->out.truncated || cp->err.truncated)
    json_object_set_new (j, "truncated", json_true ());
  return send_exec_answer (c, cp, j);
}

/* Streaming: a worker writes NDJSON lines to a pipe that MHD sends. */
struct stream_job {
  struct sbx_engine *engine;
  struct sbx_service *svc;
  char id[SBX_ID_MAX];
  struct exec_params p; /* exec; p.argv NULL for an attach */
  uint32_t pid;
  int fd;
};

static int
stream_event (const struct sbx_proc_event *ev, void *ud)
{
  struct stream_job *job = ud;
  json_t *j = NULL;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      j = json_pack ("{s:s, s:i}", "type", "start", "pid", (int) ev->pid);
      break;
    case SBX_PROC_STDOUT:
    case SBX_PROC_STDERR:
    case SBX_PROC_PTY:
      {
        char *b64 = sbx_b64_encode (ev->data, ev->len);
        j = json_pack ("{s:s, s:s}", "type",
                       ev->kind == SBX_PROC_STDOUT ? "stdout" : ev->kind == SBX_PROC_STDERR ? "stderr" : "pty", "data",
                       b64 ? b64 : "");
        free (b64);
        break;
      }
    case SBX_PROC_KEEPALIVE:
      break;
    case SBX_PROC_END:
      j = json_pack ("{s:s, s:i, s:i, s:b}", "type", "end", "exitCode",
                     ev->signal ? 128 + ev->signal : ev->exit_code, "signal", ev->signal, "timedOut", ev->timed_out);
      break;
    }
  if (j == NULL)
    return 0;
  char *line = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  if (line == NULL)
    return -1;
  size_t n = strlen (line);
  line[n] = '\n';
  ssize_t w = sbx_write_full (job->fd, line, n + 1);
  free (line);
  return w < 0 ? -1 : 0; /* the client went away: stop listening */
}

static void *
stream_main (void *arg)
{
  struct stream_job *job = arg;
  struct sbx_err err;
  int r;
  if (job->p.argv)
    {
      struct sbx_exec_opts o = { .argv = (const char *const *) job->p.argv,
                                 .env = (const char *const *) job->p.env,
                                 .cwd = job->p.cwd,
                                 .user = job->p.user,
                                 .stdin_open = job->p.stdin_open,
                                 .pty = job->p.pty,
                                 .rows = job->p.rows,
                                 .cols = job->p.cols,
                                 .timeout_ms = job->p.timeout_ms };
      r = sbx_service_exec (job->svc, job->id, &o, stream_event, job, &err);
    }
  else
    r = sbx_attach (job->engine, job->id, job->pid, 0, stream_event, job, &err);
  if (r < 0)
    {
      json_t *j = json_pack ("{s:s, s:s}", "type", "error", "message", err.msg);
      char *line = json_dumps (j, JSON_COMPACT);
      json_decref (j);
      if (line)
        {
          dprintf (job->fd, "%s\n", line);
          free (line);
        }
    }
  close (job->fd);
  exec_params_free (&job->p);
  free (job);
  return NULL;
}

static enum MHD_Result
start_stream (struct http_server *h, struct MHD_Connection *c, const char *id, struct stream_job *job)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    {
      exec_params_free (&job->p);
      free (job);
      return send_fail (c, &err);
    }
  enum sbx_state st = info.state;
  sbx_info_free (&info);
  if (st != SBX_RUNNING)
    {
      exec_params_free (&job->p);
      free (job);
      return send_error (c, 409, st == SBX_PAUSED ? "sandbox is paused" : "sandbox is not running");
    }
  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    {
      exec_params_free (&job->p);
      free (job);
      return send_error (c, 500, "pipe: %s", strerror (errno));
    }
  job->engine = h->engine;
  job->svc = h->svc;
  snprintf (job->id, sizeof job->id, "%s", id);
  job->fd = fds[1];
  if (!sbx_start_detached (stream_main, job))
    {
      close (fds[0]);
      close (fds[1]);
      exec_params_free (&job->p);
      free (job);
      return send_error (c, 500, "cannot start stream");
    }
  return send_pipe (c, fds[0], "application/x-ndjson", NULL);
}

static enum MHD_Result
exec_stream (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq)
{
  struct stream_job *job = calloc (1, sizeof *job);
  enum MHD_Result ret;
  if (parse_exec (c, rq, &job->p, &ret) < 0)
    {
      exec_params_free (&job->p);
      free (job);
      return ret;
    }
  return start_stream (h, c, id, job);
}

static int
parse_pid (const char *s, uint32_t *pid)
{
  char *end;
  errno = 0;
  unsigned long v = strtoul (s, &end, 10);
  if (errno || *end || *s == '\0' || v == 0 || v > 4194304)
    return -1;
  *pid = (uint32_t) v;
  return 0;
}

static enum MHD_Result
list_processes (struct http_server *h, struct MHD_Connection *c, const char *id)
{
  struct sbx_proc_info *ps;
  size_t n;
  struct sbx_err err;
  if (sbx_proc_list (h->engine, id, &ps, &n, &err) < 0)
    return send_fail (c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    {
      json_t *args = json_array ();
      for (char **a = ps[i].argv + (ps[i].argv[0] ? 1 : 0); *a; a++)
        json_array_append_new (args, text_json (*a, strlen (*a)));
      json_t *j = json_pack ("{s:i, s:s?, s:o, s:s?, s:b}", "pid", (int) ps[i].pid, "cmd", ps[i].argv[0], "args", args,
                             "cwd", ps[i].cwd, "pty", ps[i].pty);
      if (ps[i].tag)
        json_object_set_new (j, "tag", json_string (ps[i].tag));
      json_array_append_new (arr, j);
    }
  sbx_proc_list_free (ps, n);
  return send_json (c, 200, arr);
}

static const struct
{
  const char *name;
  int sig;
} signals[] = { { "SIGKILL", SIGKILL }, { "SIGTERM", SIGTERM }, { "SIGINT", SIGINT },   { "SIGHUP", SIGHUP },
                { "SIGQUIT", SIGQUIT }, { "SIGUSR1", SIGUSR1 }, { "SIGUSR2", SIGUSR2 }, { "SIGSTOP", SIGSTOP },
                { "SIGCONT", SIGCONT } };

static enum MHD_Result
process_action (struct http_server *h, struct MHD_Connection *c, const char *id, uint32_t pid, const char *action,
                struct request *rq)
{
  enum MHD_Result ret;
  json_t *b = body_object (c, rq, &ret);
  if (b == NULL)
    return ret;
  struct sbx_err err;
  int r = -1;
  ret = MHD_NO;
  if (strcmp (action, "signal") == 0)
    {
      const char *name = "SIGKILL";
      if (opt_string (c, b, "signal", &name, &ret) < 0)
        goto out;
      int sig = 0;
      for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp (signals[i].name, name) == 0)
          sig = signals[i].sig;
      if (sig == 0)
        {
          ret = send_error (c, 400, "unknown signal: %s", name);
          goto out;
        }
      r = sbx_proc_signal (h->engine, id, pid, sig, &err);
    }
  else if (strcmp (action, "stdin") == 0)
    {
      const char *data = NULL;
      if (opt_string (c, b, "data", &data, &ret) < 0)
        goto out;
      json_t *close_v = json_object_get (b, "close");
      size_t len = 0;
      cleanup_free uint8_t *bytes = NULL;
      if (data)
        {
          bytes = sbx_b64_decode (data, &len);
          if (bytes == NULL)
            {
              ret = send_error (c, 400, "data must be base64");
              goto out;
            }
        }
      r = 0;
      if (len)
        r = sbx_proc_input (h->engine, id, pid, bytes, len, &err);
      if (r == 0 && json_is_true (close_v))
        r = sbx_proc_close_stdin (h->engine, id, pid, &err);
    }
  else if (strcmp (action, "resize") == 0)
    {
      long long rows = 0, cols = 0;
      if (opt_int (c, b, "rows", 1, 1000, &rows, &ret) < 0 || opt_int (c, b, "cols", 1, 1000, &cols, &ret) < 0)
        goto out;
      if (!rows || !cols)
        {
          ret = send_error (c, 400, "rows and cols are required");
          goto out;
        }
      r = sbx_proc_resize (h->engine, id, pid, (uint32_t) rows, (uint32_t) cols, &err);
    }
  else
    {
      ret = send_error (c, 404, "not found");
      goto out;
    }
  if (r < 0)
    ret = send_fail (c, &err);
  else
    ret = send_empty (c, 204);
out:
  json_decref (b);
  return ret;
}

/* ---- files ---- */

static const char *
type_name (enum sbx_file_type t)
{
  return t == SBX_FT_FILE ? "file" : t == SBX_FT_DIR ? "dir" : t == SBX_FT_SYMLINK ? "symlink" : "other";
}

json_t *
entry_json (const struct sbx_entry *en)
{
  char mtime[40];
  sbx_rfc3339 ((int64_t) (en->mtime_ns / 1000000ull), mtime, sizeof mtime);
  char perm[8];
  snprintf (perm, sizeof perm, "%04o", en->mode & 07777);
  json_t *j = json_pack ("{s:o, s:s, s:o, s:I, s:s, s:s?, s:s?, s:s}", "name", text_json (en->name, strlen (en->name ? en->name : "")),
                         "type", type_name (en->type), "path", text_json (en->path, strlen (en->path ? en->path : "")),
                         "size", (json_int_t) en->size, "mode", perm, "owner", en->owner, "group", en->group,
                         "modifiedTime", mtime);
  if (en->link)
    json_object_set_new (j, "symlinkTarget", text_json (en->link, strlen (en->link)));
  return j;
}

/* 200 with the entry EN, which is freed. */
static enum MHD_Result
send_entry_answer (struct MHD_Connection *c, struct sbx_entry *en)
{
  json_t *j = entry_json (en);
  sbx_entry_free (en);
  return send_json (c, 200, j);
}

/* The sandbox must exist before file errors can mean "file not found". */
static bool
sandbox_exists (struct http_server *h, struct MHD_Connection *c, const char *id, enum MHD_Result *ret)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    {
      *ret = send_fail (c, &err);
      return false;
    }
  enum sbx_state st = info.state;
  sbx_info_free (&info);
  if (st != SBX_RUNNING)
    {
      *ret = send_error (c, 409, st == SBX_PAUSED ? "sandbox is paused" : "sandbox is not running");
      return false;
    }
  return true;
}

static const char *
require_path (struct MHD_Connection *c, const char *path, enum MHD_Result *ret)
{
  if (path == NULL || *path == '\0')
    {
      *ret = send_error (c, 400, "path is required");
      return NULL;
    }
  if (strlen (path) >= 4096)
    {
      *ret = send_error (c, 400, "path too long");
      return NULL;
    }
  return path;
}

static enum MHD_Result
files_endpoint (struct http_server *h, struct MHD_Connection *c, const char *id, const char *method, const char *sub,
                struct request *rq)
{
  enum MHD_Result ret;
  if (!sandbox_exists (h, c, id, &ret))
    return ret;
  struct sbx_err err;
  const char *user = query (c, "user");
  if (strcmp (method, "GET") == 0 && strcmp (sub, "list") == 0)
    {
      const char *path = require_path (c, query (c, "path"), &ret);
      if (path == NULL)
        return ret;
      const char *ds = query (c, "depth");
      uint32_t depth = 1;
      if (ds && (parse_pid (ds, &depth) < 0 || depth > 64))
        return send_error (c, 400, "depth must be between 1 and 64");
      struct sbx_entry *en;
      size_t n;
      if (sbx_file_list (h->engine, id, path, user, depth, &en, &n, &err) < 0)
        return send_fail (c, &err);
      json_t *arr = json_array ();
      for (size_t i = 0; i < n; i++)
        json_array_append_new (arr, entry_json (&en[i]));
      sbx_entries_free (en, n);
      return send_json (c, 200, arr);
    }
  if (strcmp (method, "GET") == 0 && strcmp (sub, "stat") == 0)
    {
      const char *path = require_path (c, query (c, "path"), &ret);
      if (path == NULL)
        return ret;
      struct sbx_entry en;
      if (sbx_file_stat (h->engine, id, path, user, &en, &err) < 0)
        return send_fail (c, &err);
      return send_entry_answer (c, &en);
    }
  if (strcmp (method, "GET") == 0 && *sub == '\0')
    {
      const char *path = require_path (c, query (c, "path"), &ret);
      if (path == NULL)
        return ret;
      struct read_buf b = { 0 };
      struct sbx_entry en;
      if (sbx_file_read (h->engine, id, path, user, MAX_READ_BYTES, &en, read_into, &b, &err) < 0)
        {
          free (b.data);
          if (sbx_err_kind (&err) == SBX_E_TOO_LARGE)
            return send_error (c, 400, "file too large: %s is larger than 1 MB (download it with GET /sandboxes/%s/files)",
                               path, id);
          return send_fail (c, &err);
        }
      char *b64 = sbx_b64_encode (b.data ? b.data : "", b.len);
      free (b.data);
      json_t *j = json_pack ("{s:s, s:o}", "content", b64 ? b64 : "", "path", text_json (en.path, strlen (en.path ? en.path : "")));
      free (b64);
      sbx_entry_free (&en);
      return send_json (c, 200, j);
    }
  if (strcmp (method, "POST") == 0 && *sub == '\0')
    {
      json_t *b = body_object (c, rq, &ret);
      if (b == NULL)
        return ret;
      const char *path = NULL, *content = NULL;
      if (opt_string (c, b, "path", &path, &ret) < 0 || opt_string (c, b, "content", &content, &ret) < 0
          || opt_string (c, b, "user", &user, &ret) < 0 || require_path (c, path, &ret) == NULL)
        {
          json_decref (b);
          return ret;
        }
      size_t len = 0;
      cleanup_free uint8_t *data = sbx_b64_decode (content ? content : "", &len);
      if (data == NULL)
        {
          json_decref (b);
          return send_error (c, 400, "content must be base64");
        }
      struct sbx_entry en;
      int r = sbx_file_write (h->engine, id, path, user, data, len, &en, &err);
      json_decref (b);
      if (r < 0)
        return send_fail (c, &err);
      return send_entry_answer (c, &en);
    }
  if (strcmp (method, "DELETE") == 0 && *sub == '\0')
    {
      const char *path = require_path (c, query (c, "path"), &ret);
      if (path == NULL)
        return ret;
      if (sbx_file_remove (h->engine, id, path, user, &err) < 0)
        return send_fail (c, &err);
      return send_empty (c, 204);
    }
  if (strcmp (method, "POST") == 0 && (strcmp (sub, "mkdir") == 0 || strcmp (sub, "move") == 0))
    {
      json_t *b = body_object (c, rq, &ret);
      if (b == NULL)
        return ret;
      const char *path = NULL, *from = NULL, *to = NULL;
      struct sbx_entry en;
      int r;
      if (opt_string (c, b, "path", &path, &ret) < 0 || opt_string (c, b, "from", &from, &ret) < 0
          || opt_string (c, b, "to", &to, &ret) < 0 || opt_string (c, b, "user", &user, &ret) < 0)
        {
          json_decref (b);
          return ret;
        }
      if (strcmp (sub, "mkdir") == 0)
        {
          if (require_path (c, path, &ret) == NULL)
            {
              json_decref (b);
              return ret;
            }
          r = sbx_file_mkdir (h->engine, id, path, user, SBX_FILE_F_PARENTS | SBX_FILE_F_EXIST_OK, &en, &err);
        }
      else
        {
          if (require_path (c, from, &ret) == NULL || require_path (c, to, &ret) == NULL)
            {
              json_decref (b);
              return ret;
            }
          r = sbx_file_move (h->engine, id, from, to, user, &en, &err);
        }
      json_decref (b);
      if (r < 0)
        return send_fail (c, &err);
      return send_entry_answer (c, &en);
    }
  return send_error (c, 405, "method not allowed");
}


/* ---- routes (routes.c) ---- */

enum MHD_Result
sandbase_create (struct call *k)
{
  return create_sandbox (k->h, k->c, k->rq);
}

enum MHD_Result
sandbase_list (struct call *k)
{
  return list_sandboxes (k->h, k->c, k->rq);
}

enum MHD_Result
sandbase_get (struct call *k)
{
  return send_json (k->c, 200, sandbox_object (k->h, &k->rec, true));
}

enum MHD_Result
sandbase_kill (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_sandbox_kill (k->h->svc, &k->rq->org, k->arg[0], &err) < 0)
    {
      /* E2B: killing a sandbox that is gone is "not found" */
      enum sbx_err_kind kind = sbx_err_kind (&err);
      return kind == SBX_E_STOPPED || kind == SBX_E_NOT_FOUND ? send_error (k->c, 404, "sandbox not found")
                                                              : send_fail (k->c, &err);
    }
  return send_empty (k->c, 204);
}

enum MHD_Result
sandbase_pause (struct call *k)
{
  /* E2B: {"memory": false} keeps the files only */
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  bool memory = true;
  int r = opt_bool (k->c, b, "memory", &memory, &ret);
  json_decref (b);
  if (r < 0)
    return ret;
  struct sbx_err err;
  if ((memory ? sbx_pause (k->h->engine, k->arg[0], &err) : sbx_pause_files (k->h->engine, k->arg[0], &err)) < 0)
    {
      enum sbx_err_kind kind = sbx_err_kind (&err);
      if (kind == SBX_E_PAUSED || kind == SBX_E_CONFLICT)
        return send_error (k->c, 409, "sandbox is already paused");
      if (kind == SBX_E_STOPPED || kind == SBX_E_NOT_FOUND)
        return send_error (k->c, 409, "sandbox is not running");
      return send_error (k->c, 502, "failed to pause sandbox in provider");
    }
  return send_empty (k->c, 204);
}

enum MHD_Result
sandbase_connect (struct call *k)
{
  return connect_sandbox (k->h, k->c, k->arg[0], k->rq);
}

enum MHD_Result
sandbase_timeout (struct call *k)
{
  return timeout_sandbox (k->h, k->c, k->arg[0], k->rq, false);
}

enum MHD_Result
sandbase_refresh (struct call *k)
{
  return timeout_sandbox (k->h, k->c, k->arg[0], k->rq, true);
}

enum MHD_Result
sandbase_metrics (struct call *k)
{
  return metrics_sandbox (k->h, k->c, k->arg[0]);
}

enum MHD_Result
sandbase_exec (struct call *k)
{
  return exec_sync (k->h, k->c, k->arg[0], k->rq);
}

enum MHD_Result
sandbase_exec_stream (struct call *k)
{
  return exec_stream (k->h, k->c, k->arg[0], k->rq);
}

enum MHD_Result
sandbase_processes (struct call *k)
{
  return list_processes (k->h, k->c, k->arg[0]);
}

enum MHD_Result
sandbase_attach (struct call *k)
{
  uint32_t pid;
  if (parse_pid (k->arg[1], &pid) < 0)
    return send_error (k->c, 400, "invalid pid");
  struct stream_job *job = calloc (1, sizeof *job);
  if (job == NULL)
    return send_error (k->c, 500, "out of memory");
  job->pid = pid;
  return start_stream (k->h, k->c, k->arg[0], job);
}

enum MHD_Result
sandbase_process_action (struct call *k)
{
  uint32_t pid;
  if (parse_pid (k->arg[1], &pid) < 0)
    return send_error (k->c, 400, "invalid pid");
  return process_action (k->h, k->c, k->arg[0], pid, k->arg[2], k->rq);
}

enum MHD_Result
sandbase_filesystem (struct call *k)
{
  return files_endpoint (k->h, k->c, k->arg[0], k->method, k->arg[1] ? k->arg[1] : "", k->rq);
}

enum MHD_Result
sandbase_download (struct call *k)
{
  return download_file (k->h, k->c, k->rq, k->arg[0]);
}

enum MHD_Result
sandbase_network (struct call *k)
{
  return network_sandbox (k->h, k->c, k->arg[0], k->rq);
}
