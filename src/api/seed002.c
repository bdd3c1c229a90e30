/*
 * seed002.c - seed 002's dialect: /api/sandbox routes, sandboxes with
 * filesystem, network and resource policies, synchronous and asynchronous
 * runs of Python code, and a "wasm" mode where the code runs in Pyodide.
 *
 * Everything here translates: bodies into a struct sbx_sandbox_spec or a
 * struct sbx_run_request for the service layer, and records into the
 * seed's shapes.  Errors are {"error": {"code": "...", "message": "..."}}
 * with the status of the error's kind (dialect_seed002).
 *
 * Approved images: config.image must name one of the operator's images
 * (sbxd serve --image ALIAS=TEMPLATE); by default the seed's example image
 * and the quick-start templates.  Anything else answers 400 naming them.
 */
#include "api.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "../core/net.h"
#include "../service/encode.h"
#include "../service/output.h"

#define DEFAULT_TIMEOUT_S 1800  /* the seed's field table: at most 3600 */
#define MAX_TIMEOUT_S 3600
#define DEFAULT_RUN_TIMEOUT_S 30
#define MAX_RUN_TIMEOUT_S 600
#define MIN_MEMORY_MB 64
#define MAX_MEMORY_MB 4096
#define AGENT_ID_MAX 127
#define WASM_TEMPLATE "pyodide"
#define LIST_MAX 1000

/* ---- the dialect ---- */

static const char *
error_code (unsigned status)
{
  switch (status)
    {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 414:
      return "uri_too_long";
    case 429:
      return "limit_exceeded";
    case 503:
      return "unavailable";
    case 507:
      return "insufficient_storage";
    default:
      return "internal_error";
    }
}

static json_t *
seed002_error_body (unsigned status, const char *msg)
{
  return json_pack ("{s:{s:s, s:s}}", "error", "code", error_code (status), "message", msg);
}

const struct dialect dialect_seed002 = {
  .name = "seed002",
  .status = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,   [SBX_E_NOT_FOUND] = 404, [SBX_E_CONFLICT] = 409,
              [SBX_E_PAUSED] = 409,    [SBX_E_STOPPED] = 409,   [SBX_E_LIMIT] = 429,     [SBX_E_FORBIDDEN] = 403,
              [SBX_E_TOO_LARGE] = 413, [SBX_E_NO_SPACE] = 507,  [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 },
  .bad_sandbox_id = 404,
  .error_body = seed002_error_body,
};

/* ---- approved images ---- */

static const char *const default_images[] = {
  "agentcop/agent-sandbox:latest=base", /* the seed's example */
  "agentcop/agent-sandbox=base",
  "base=base",
  "code_interpreter=code_interpreter",
  NULL,
};

static const char *const *
images (struct http_server *h)
{
  return h->images && h->images[0] ? h->images : default_images;
}

/* The template of IMAGE, or NULL when it is not approved. */
static const char *
image_template (struct http_server *h, const char *image, char *buf, size_t size)
{
  size_t n = strlen (image);
  for (const char *const *p = images (h); *p; p++)
    if (strncmp (*p, image, n) == 0 && (*p)[n] == '=')
      {
        snprintf (buf, size, "%s", *p + n + 1);
        return buf;
      }
  return NULL;
}

static enum MHD_Result
image_refused (struct http_server *h, struct MHD_Connection *c, const char *image)
{
  char list[1024] = "";
  size_t used = 0;
  for (const char *const *p = images (h); *p; p++)
    {
      const char *eq = strchr (*p, '=');
      int len = eq ? (int) (eq - *p) : (int) strlen (*p);
      int w = snprintf (list + used, sizeof list - used, "%s%.*s", used ? ", " : "", len, *p);
      if (w < 0 || (size_t) w >= sizeof list - used)
        break;
      used += (size_t) w;
    }
  return send_error (c, 400, "config.image: '%.200s' is not an approved image; approved images: %s", image, list);
}

/* ---- parsing ---- */

/* config.resources.memory: "512m", "2g", "1024k", "512Mi", "2GB" or a
   number of bytes (string or integer), in MB. */
static int
parse_memory (json_t *v, uint32_t *mb)
{
  unsigned long long bytes;
  if (json_is_integer (v))
    {
      if (json_integer_value (v) <= 0)
        return -1;
      bytes = (unsigned long long) json_integer_value (v);
    }
  else if (json_is_string (v))
    {
      const char *s = json_string_value (v);
      char *end;
      errno = 0;
      double x = strtod (s, &end);
      if (end == s || errno || !(x > 0) || x > 1e15)
        return -1;
      unsigned long long mult = 1;
      switch (*end)
        {
        case 'k':
        case 'K':
          mult = 1ull << 10;
          end++;
          break;
        case 'm':
        case 'M':
          mult = 1ull << 20;
          end++;
          break;
        case 'g':
        case 'G':
          mult = 1ull << 30;
          end++;
          break;
        case '\0':
          break;
        default:
          return -1;
        }
      if (mult > 1 && (*end == 'i' || *end == 'I'))
        end++;
      if (mult > 1 && (*end == 'b' || *end == 'B'))
        end++;
      if (*end)
        return -1;
      bytes = (unsigned long long) (x * (double) mult);
    }
  else
    return -1;
  *mb = (uint32_t) (bytes >> 20 > UINT32_MAX ? UINT32_MAX : bytes >> 20);
  return 0;
}

/* config.resources.cpu: "0.5" or 0.5, in thousandths of a core. */
static int
parse_cpu (json_t *v, uint32_t *millis)
{
  double x;
  if (json_is_number (v))
    x = json_number_value (v);
  else if (json_is_string (v))
    {
      const char *s = json_string_value (v);
      char *end;
      errno = 0;
      x = strtod (s, &end);
      if (end == s || *end || errno)
        return -1;
    }
  else
    return -1;
  long cores = sysconf (_SC_NPROCESSORS_ONLN);
  if (!(x >= 0.1) || x > (double) (cores > 0 ? cores : 1))
    return -1;
  *millis = (uint32_t) lround (x * 1000.0);
  return 0;
}

struct path_list {
  struct sbx_fs_rule rules[SBX_FS_RULES_MAX];
  size_t n;
};

/* Append the paths of config.filesystem.KEY with ACCESS. */
static int
fs_list (struct MHD_Connection *c, json_t *fs, const char *key, enum sbx_fs_access access, struct path_list *pl,
         enum MHD_Result *ret)
{
  json_t *arr = json_object_get (fs, key);
  if (arr == NULL || json_is_null (arr))
    return 0;
  if (!json_is_array (arr))
    {
      *ret = send_error (c, 400, "config.filesystem.%s must be a list of paths", key);
      return -1;
    }
  size_t i;
  json_t *v;
  json_array_foreach (arr, i, v)
  {
    if (!json_is_string (v) || strlen (json_string_value (v)) != json_string_length (v))
      {
        *ret = send_error (c, 400, "config.filesystem.%s must be a list of paths", key);
        return -1;
      }
    if (pl->n == SBX_FS_RULES_MAX)
      {
        *ret = send_error (c, 400, "config.filesystem: at most %d paths", SBX_FS_RULES_MAX);
        return -1;
      }
    pl->rules[pl->n].path = json_string_value (v);
    pl->rules[pl->n].access = access;
    pl->n++;
  }
  return 0;
}

/* The environment a wasm sandbox's runner reads its mounts from
   (templates/files/wasm-run.mjs): ENV gets "SBXD_WASM_RO=...",
   "SBXD_WASM_RW=..." and "SBXD_WASM_BLOCKED=...", colon-separated. */
static int
wasm_env (const struct path_list *pl, char **env)
{
  static const char *const names[] = { [SBX_FS_READ_ONLY] = "SBXD_WASM_RO", [SBX_FS_READ_WRITE] = "SBXD_WASM_RW",
                                       [SBX_FS_BLOCKED] = "SBXD_WASM_BLOCKED" };
  for (int kind = 0; kind < 3; kind++)
    {
      size_t len = 0;
      FILE *f = open_memstream (&env[kind], &len);
      if (f == NULL)
        return -1;
      fprintf (f, "%s=", names[kind]);
      bool first = true;
      for (size_t i = 0; i < pl->n; i++)
        if ((int) pl->rules[i].access == kind)
          {
            fprintf (f, "%s%s", first ? "" : ":", pl->rules[i].path);
            first = false;
          }
      if (fclose (f) != 0)
        return -1;
    }
  env[3] = NULL;
  return 0;
}

/* ---- answers ---- */

static const char *
status_name (const struct sbx_sandbox_rec *r)
{
  if (strcmp (r->status, "creating") == 0)
    return "provisioning";
  if (strcmp (r->status, "stopped") == 0)
    return "destroyed";
  if (strcmp (r->status, "error") == 0)
    return "error";
  if (strcmp (r->status, "paused") == 0)
    return "paused";
  return sbx_service_runs_active (r->id) ? "running" : "ready";
}

static json_t *
sandbox_json (const struct sbx_sandbox_rec *r)
{
  char created[40], expires[40];
  sbx_rfc3339_s (r->started_ms, created, sizeof created);
  sbx_rfc3339_s (r->end_ms, expires, sizeof expires);
  json_t *j = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s}", "sandbox_id", r->id, "status", status_name (r), "mode",
                         r->mode[0] ? r->mode : "container", "image", r->template_id, "created_at", created,
                         "expires_at", expires);
  if (j == NULL)
    return NULL;
  json_object_set_new (j, "agent_id", r->agent_id[0] ? json_string (r->agent_id) : json_null ());
  if (strcmp (r->status, "stopped") == 0)
    {
      char stopped[40];
      sbx_rfc3339_s (r->stopped_ms, stopped, sizeof stopped);
      json_object_set_new (j, "destroyed_at", json_string (stopped));
      json_object_set_new (j, "destroy_reason", json_string (r->stop_reason));
    }
  return j;
}

static json_t *
run_json (const struct sbx_run_rec *r)
{
  json_t *j = json_pack ("{s:s, s:s}", "run_id", r->id, "status", r->status);
  if (j == NULL || strcmp (r->status, "running") == 0)
    return j;
  const char *out = r->stdout_text ? r->stdout_text : "", *err = r->stderr_text ? r->stderr_text : "";
  json_object_set_new (j, "stdout", text_json (out, strlen (out)));
  json_object_set_new (j, "stderr", text_json (err, strlen (err)));
  json_object_set_new (j, "exit_code", json_integer (r->exit_code));
  json_object_set_new (j, "duration_ms", json_integer (r->finished_ms - r->created_ms));
  if (r->stdout_truncated || r->stderr_truncated)
    json_object_set_new (j, "truncated", json_true ());
  if (r->reason && *r->reason)
    json_object_set_new (j, "error", json_string (r->reason));
  return j;
}

/* ---- POST /api/sandbox/create ---- */

enum MHD_Result
seed002_create (struct call *k)
{
  struct MHD_Connection *c = k->c;
  struct request *rq = k->rq;
  enum MHD_Result ret;
  json_t *b = body_object (c, rq, &ret);
  if (b == NULL)
    return ret;
  const char *agent = NULL, *mode = "container", *image = NULL;
  struct path_list *pl = calloc (1, sizeof *pl);
  struct sbx_net_policy net = { 0 };
  int internet = 0;
  bool net_given = false;
  char *env[4] = { NULL, NULL, NULL, NULL };
  char tmpl_buf[128];
  const char *tmpl = NULL;
  json_t *empty = NULL; /* the config when the body has none */
  ret = MHD_NO;
  if (pl == NULL)
    {
      ret = send_error (c, 500, "out of memory");
      goto out;
    }
  if (opt_string (c, b, "agent_id", &agent, &ret) < 0 || opt_string (c, b, "mode", &mode, &ret) < 0)
    goto out;
  if (agent && strlen (agent) > AGENT_ID_MAX)
    {
      ret = send_error (c, 400, "agent_id is longer than %d characters", AGENT_ID_MAX);
      goto out;
    }
  bool wasm = strcmp (mode, "wasm") == 0;
  if (!wasm && strcmp (mode, "container") != 0)
    {
      ret = send_error (c, 400, "mode must be \"container\" or \"wasm\"");
      goto out;
    }
  json_t *config = json_object_get (b, "config");
  if (config == NULL || json_is_null (config))
    config = NULL;
  else if (!json_is_object (config))
    {
      ret = send_error (c, 400, "config must be an object");
      goto out;
    }
  empty = json_object ();
  json_t *cfg = config ? config : empty;
  if (opt_string (c, cfg, "image", &image, &ret) < 0)
    goto out;
  if (image && (tmpl = image_template (k->h, image, tmpl_buf, sizeof tmpl_buf)) == NULL)
    {
      ret = image_refused (k->h, c, image);
      goto out;
    }
  if (tmpl == NULL)
    {
      /* no image named: the operator's first one */
      const char *first = images (k->h)[0], *eq = strchr (first, '=');
      snprintf (tmpl_buf, sizeof tmpl_buf, "%s", eq ? eq + 1 : first);
      tmpl = tmpl_buf;
    }
  if (wasm)
    tmpl = WASM_TEMPLATE; /* the image's files are not what Pyodide sees */

  /* filesystem */
  json_t *fs = json_object_get (cfg, "filesystem");
  if (fs && !json_is_null (fs) && !json_is_object (fs))
    {
      ret = send_error (c, 400, "config.filesystem must be an object");
      goto out;
    }
  if (fs && json_is_object (fs)
      && (fs_list (c, fs, "read_only", SBX_FS_READ_ONLY, pl, &ret) < 0
          || fs_list (c, fs, "read_write", SBX_FS_READ_WRITE, pl, &ret) < 0
          || fs_list (c, fs, "blocked", SBX_FS_BLOCKED, pl, &ret) < 0))
    goto out;
  struct sbx_err err;
  if (sbx_fs_rules_check (pl->rules, pl->n, &err) < 0)
    {
      ret = send_error (c, 400, "config.filesystem: %s", err.msg);
      goto out;
    }

  /* network: {allow, block_outbound}; a wasm sandbox has none unless asked */
  json_t *jnet = json_object_get (cfg, "network");
  if (body_network (c, cfg, false, &net, &internet, &net_given, &ret) < 0)
    goto out;
  if (net_given && (jnet == NULL || !json_is_true (json_object_get (jnet, "block_outbound"))))
    {
      /* block_outbound false or absent: the default internet mode (which
         a wasm sandbox's template does not have, so it is said) */
      sbx_net_policy_free (&net);
      net_given = wasm;
      net.enabled = wasm;
    }
  if (wasm && !net_given && (jnet == NULL || json_is_null (jnet)))
    {
      net.enabled = false;
      net_given = true;
    }

  /* resources */
  uint32_t cpu = 0, mem = 0;
  long long timeout = -1;
  json_t *res = json_object_get (cfg, "resources");
  if (res && !json_is_null (res) && !json_is_object (res))
    {
      ret = send_error (c, 400, "config.resources must be an object");
      goto out;
    }
  if (res && json_is_object (res))
    {
      json_t *v = json_object_get (res, "cpu");
      long cores = sysconf (_SC_NPROCESSORS_ONLN);
      if (v && !json_is_null (v) && parse_cpu (v, &cpu) < 0)
        {
          ret = send_error (c, 400, "config.resources.cpu must be a number of cores between 0.1 and %ld, e.g. \"0.5\"",
                            cores > 0 ? cores : 1);
          goto out;
        }
      v = json_object_get (res, "memory");
      if (v && !json_is_null (v) && (parse_memory (v, &mem) < 0 || mem < MIN_MEMORY_MB || mem > MAX_MEMORY_MB))
        {
          ret = send_error (c, 400, "config.resources.memory must be between %dm and %dg, e.g. \"512m\"",
                            MIN_MEMORY_MB, MAX_MEMORY_MB / 1024);
          goto out;
        }
      v = json_object_get (res, "timeout");
      if (v && !json_is_null (v))
        {
          if (!json_is_integer (v) || json_integer_value (v) < 1 || json_integer_value (v) > MAX_TIMEOUT_S)
            {
              ret = send_error (c, 400, "config.resources.timeout must be an integer between 1 and %d seconds",
                                MAX_TIMEOUT_S);
              goto out;
            }
          timeout = json_integer_value (v);
        }
    }
  if (timeout > (long long) rq->org.max_timeout_s)
    {
      ret = send_error (c, 400, "config.resources.timeout must be at most %u seconds on this plan",
                        rq->org.max_timeout_s);
      goto out;
    }
  if (timeout < 0)
    timeout = DEFAULT_TIMEOUT_S < rq->org.max_timeout_s ? DEFAULT_TIMEOUT_S : rq->org.max_timeout_s;
  if (wasm && wasm_env (pl, env) < 0)
    {
      ret = send_error (c, 500, "out of memory");
      goto out;
    }

  struct sbx_sandbox_spec spec = { .template_name = tmpl,
                                   .timeout_s = (uint32_t) timeout,
                                   .env = wasm ? (const char *const *) env : NULL,
                                   .limits = { .cpu_millis = cpu, .memory_mb = mem },
                                   .net = net_given ? &net : NULL,
                                   .internet_asked = internet,
                                   .fs_rules = pl->rules,
                                   .n_fs_rules = pl->n,
                                   .agent_id = agent,
                                   .mode = mode };
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_create (k->h->svc, &rq->org, &spec, &rec, &err) < 0)
    {
      ret = sbx_err_kind (&err) != SBX_E_LIMIT ? send_fail (c, &err)
            : sbx_service_err_is_hours (&err)
                ? send_error (c, 429, "%s", err.msg)
                : send_error (c, 429, "concurrent sandbox limit reached: your plan allows %u at once",
                              rq->org.max_sandboxes);
      goto out;
    }
  snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, rec.id);
  char created[40], expires[40];
  sbx_rfc3339_s (rec.started_ms, created, sizeof created);
  sbx_rfc3339_s (rec.end_ms, expires, sizeof expires);
  ret = send_json (c, 201,
                   json_pack ("{s:s, s:s, s:s, s:s, s:s}", "sandbox_id", rec.id, "status", "ready", "mode", mode,
                              "created_at", created, "expires_at", expires));
  sbx_sandbox_rec_free (&rec);
out:
  json_decref (empty);
  for (int i = 0; i < 3; i++)
    free (env[i]);
  free (pl);
  sbx_net_policy_free (&net);
  json_decref (b);
  return ret;
}

/* ---- sandboxes ---- */

enum MHD_Result
seed002_list (struct call *k)
{
  const char *agent = query (k->c, "agent_id"), *status = query (k->c, "status");
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list_by_agent (k->h->store, k->rq->org.id, agent, NULL, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n && json_array_size (arr) < LIST_MAX; i++)
    {
      if (status && strcmp (status_name (&v[i]), status) != 0)
        continue;
      json_array_append_new (arr, sandbox_json (&v[i]));
    }
  sbx_sandbox_recs_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:o}", "sandboxes", arr));
}

enum MHD_Result
seed002_get (struct call *k)
{
  return send_json (k->c, 200, sandbox_json (&k->rec));
}

enum MHD_Result
seed002_destroy (struct call *k)
{
  struct sbx_err err;
  if (sbx_service_sandbox_kill (k->h->svc, &k->rq->org, k->arg[0], &err) < 0
      && sbx_err_kind (&err) != SBX_E_STOPPED)
    return send_fail (k->c, &err);
  /* destroying a destroyed sandbox changes nothing: 204 again */
  return send_empty (k->c, 204);
}

/* ---- runs ---- */

enum MHD_Result
seed002_run (struct call *k)
{
  struct MHD_Connection *c = k->c;
  enum MHD_Result ret;
  json_t *b = body_object (c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *code = NULL;
  long long timeout = DEFAULT_RUN_TIMEOUT_S;
  bool async = false;
  ret = MHD_NO;
  if (opt_string (c, b, "code", &code, &ret) < 0 || opt_bool (c, b, "async", &async, &ret) < 0)
    goto out;
  json_t *t = json_object_get (b, "timeout");
  if (t && !json_is_null (t))
    {
      if (!json_is_integer (t) || json_integer_value (t) < 1 || json_integer_value (t) > MAX_RUN_TIMEOUT_S)
        {
          ret = send_error (c, 400, "timeout must be an integer between 1 and %d seconds", MAX_RUN_TIMEOUT_S);
          goto out;
        }
      timeout = json_integer_value (t);
    }
  if (code == NULL)
    {
      ret = send_error (c, 400, "code is required");
      goto out;
    }
  struct sbx_run_request req = { .code = code, .timeout_s = (uint32_t) timeout, .async = async };
  struct sbx_run_rec run;
  struct sbx_err err;
  if (sbx_service_run (k->h->svc, &k->rq->org, &k->rec, &req, &run, &err) < 0)
    {
      enum sbx_err_kind kind = sbx_err_kind (&err);
      if (kind == SBX_E_STOPPED)
        ret = send_error (c, 409, "sandbox %s is destroyed: runs need a live sandbox", k->rec.id);
      else
        ret = send_fail (c, &err);
      goto out;
    }
  ret = send_json (c, async ? 202 : 200, run_json (&run));
  sbx_run_rec_free (&run);
out:
  json_decref (b);
  return ret;
}

enum MHD_Result
seed002_run_get (struct call *k)
{
  struct sbx_run_rec run;
  struct sbx_err err;
  if (sbx_service_run_get (k->h->svc, &k->rq->org, k->arg[0], k->arg[1], &run, &err) < 0)
    return send_fail (k->c, &err);
  enum MHD_Result ret = send_json (k->c, 200, run_json (&run));
  sbx_run_rec_free (&run);
  return ret;
}

/* A runs list holds the runs' outputs: it stops before this many bytes
   of them (encoded), reading the store a few runs at a time, and says
   where to go on (truncated, next_offset). */
#define RUNS_ANSWER_MAX (8u << 20)
#define RUNS_PAGE 8

enum MHD_Result
seed002_runs (struct call *k)
{
  long long limit = 100, offset = 0;
  const char *ls = query (k->c, "limit"), *os = query (k->c, "offset");
  char *end;
  if (ls && ((limit = strtoll (ls, &end, 10)) < 1 || limit > LIST_MAX || *end))
    return send_error (k->c, 400, "limit must be between 1 and %d", LIST_MAX);
  if (os && ((offset = strtoll (os, &end, 10)) < 0 || offset > UINT32_MAX || *end))
    return send_error (k->c, 400, "offset must be a non-negative integer");
  json_t *arr = json_array ();
  long long taken = 0;
  size_t bytes = 0;
  bool cut = false, more = true;
  while (more && !cut && taken < limit && offset + taken <= UINT32_MAX)
    {
      struct sbx_run_rec *v;
      size_t n;
      struct sbx_err err;
      uint32_t want = limit - taken < RUNS_PAGE ? (uint32_t) (limit - taken) : RUNS_PAGE;
      if (sbx_store_run_list (k->h->store, k->rq->org.id, k->arg[0], (uint32_t) (offset + taken), want, &v, &n, &err)
          < 0)
        {
          json_decref (arr);
          return send_fail (k->c, &err);
        }
      more = n == want;
      for (size_t i = 0; i < n; i++)
        {
          const char *o = v[i].stdout_text ? v[i].stdout_text : "", *e = v[i].stderr_text ? v[i].stderr_text : "";
          size_t size = sbx_json_text_size (o, strlen (o)) + sbx_json_text_size (e, strlen (e)) + 1024;
          if (taken > 0 && bytes + size > RUNS_ANSWER_MAX)
            {
              cut = true;
              break;
            }
          bytes += size;
          json_t *j = run_json (&v[i]);
          char created[40];
          sbx_rfc3339_s (v[i].created_ms, created, sizeof created);
          json_object_set_new (j, "created_at", json_string (created));
          json_array_append_new (arr, j);
          taken++;
        }
      sbx_run_recs_free (v, n);
    }
  json_t *answer = json_pack ("{s:o}", "runs", arr);
  if (cut)
    {
      json_object_set_new (answer, "truncated", json_true ());
      json_object_set_new (answer, "next_offset", json_integer (offset + taken));
    }
  return send_json (k->c, 200, answer);
}
