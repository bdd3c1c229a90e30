/*
 * v1.c - seed 004's dialect: /v1/sandboxes with runtimes, states and
 * queueing, pause and resume, commands, code and files, checkpoints and
 * artifacts, and the usage of the organisation's plan.
 *
 * Sandboxes are named by an "id" in the query (GET, DELETE) or in the JSON
 * body (POST), never in the path, so the router cannot check ownership
 * from the headers: every handler calls v1_sandbox.  Errors are
 * {"error": "message"} with the seed's messages word for word; a missing or
 * invalid key is 401 "Invalid or missing API key".
 *
 * A create is answered at once, "queued": the service's queue
 * (service/placement.c) creates it when the machine has room, under the
 * id answered.  What only this dialect knows of a sandbox (its runtime,
 * size, region, capabilities and when it was asked for) is kept in its
 * record's metadata, as one string under "sbxd.v1", so other dialects
 * showing the record still see string metadata.
 *
 * States, from the record, the service's steps and what executes:
 *   queued     waiting in the queue for a place on the machine (a create,
 *              or a resume)
 *   assigning  being created (or resumed)
 *   ready      running, nothing executing for a caller
 *   active     running, a command, code or a terminal executing
 *   pausing    being paused;  paused: frozen, its place given back
 *   ending     being destroyed;  ended: gone (asked, or maxDurationMs)
 *   failed     its create failed (nothing of it is left), or it was lost
 */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/util.h"
#include "../service/encode.h"
#include "../service/output.h"
#include "../service/plans.h"

#define META_KEY "sbxd.v1"
#define V1_MEMORY_MB 4096      /* the seed's standard shape: 2 shared vCPUs, 4 GB */
#define V1_CPU_MILLIS 2000
#define V1_EXEC_TIMEOUT_MS 300000u  /* an exec without timeoutMs */
#define V1_OUTPUT_MAX (16u << 20)   /* kept of each output stream */
#define V1_READ_MAX (32u << 20)     /* a file read into an answer */
#define V1_LIST_MAX 1000            /* sandboxes in a list, newest first */
#define V1_SIZE_SHOWN 64            /* of a bad size, in its message */

static json_t *
v1_error_body (unsigned status, const char *msg)
{
  (void) status;
  return json_pack ("{s:s}", "error", msg);
}

const struct dialect dialect_v1 = {
  .name = "v1",
  .status = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,   [SBX_E_NOT_FOUND] = 404, [SBX_E_CONFLICT] = 409,
              [SBX_E_PAUSED] = 409,    [SBX_E_STOPPED] = 409,   [SBX_E_LIMIT] = 429,     [SBX_E_FORBIDDEN] = 403,
              [SBX_E_TOO_LARGE] = 413, [SBX_E_NO_SPACE] = 507,  [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 },
  .bad_sandbox_id = 404,
  .error_body = v1_error_body,
  .unauthorized = "Invalid or missing API key",
};

bool
v1_sandbox (struct call *k, const char *id, struct sbx_sandbox_rec *rec, enum MHD_Result *ret)
{
  if (id == NULL || *id == '\0')
    {
      *ret = send_error (k->c, 400, "Missing sandbox id");
      return false;
    }
  snprintf (k->rq->sandbox_id, sizeof k->rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, id);
  if (!valid_id (id))
    {
      *ret = send_error (k->c, 404, "Sandbox not found");
      return false;
    }
  struct sbx_err err;
  if (sbx_service_sandbox_get (k->h->svc, &k->rq->org, id, rec, &err) < 0)
    {
      *ret = sbx_err_kind (&err) == SBX_E_NOT_FOUND ? send_error (k->c, 404, "Sandbox not found")
                                                    : send_fail (k->c, &err);
      return false;
    }
  return true;
}

/* ---- what the dialect keeps in a record ---- */

/* The v1 fields of REC's metadata, or NULL for a sandbox created by
   another dialect. */
static json_t *
v1_meta (const struct sbx_sandbox_rec *rec)
{
  json_t *m = rec->metadata_json ? json_loads (rec->metadata_json, 0, NULL) : NULL;
  json_t *s = json_object_get (m, META_KEY);
  json_t *v = json_is_string (s) ? json_loads (json_string_value (s), 0, NULL) : NULL;
  json_decref (m);
  if (v && !json_is_object (v))
    {
      json_decref (v);
      v = NULL;
    }
  return v;
}

/* The seed's state of REC. */
static const char *
v1_status (const struct sbx_sandbox_rec *rec)
{
  char step[16];
  sbx_service_sandbox_phase (rec->id, step);
  if (*step)
    return strcmp (step, "queued") == 0      ? "queued"
           : strcmp (step, "assigning") == 0 ? "assigning"
           : strcmp (step, "pausing") == 0   ? "pausing"
                                             : "ending";
  if (strcmp (rec->status, "running") == 0)
    return sbx_service_busy (rec->id) > 0 ? "active" : "ready";
  if (strcmp (rec->status, "paused") == 0)
    return "paused";
  if (strcmp (rec->status, "creating") == 0)
    return "assigning"; /* another dialect's create under way */
  if (strcmp (rec->status, "stopped") == 0)
    return strcmp (rec->stop_reason, "lost") == 0 ? "failed" : "ended";
  return "failed";
}

static json_t *
meta_or_null (json_t *meta, const char *key)
{
  json_t *v = json_object_get (meta, key);
  return v ? json_incref (v) : json_null ();
}

/* The sandbox object of the seed; FULL false: a list item. */
static json_t *
v1_object (struct call *k, const struct sbx_sandbox_rec *rec, bool full)
{
  json_t *meta = v1_meta (rec);
  const char *status = v1_status (rec);
  bool made = strcmp (rec->status, "creating") != 0 && strcmp (rec->status, "error") != 0;
  json_t *created = json_object_get (meta, "createdAt");
  json_t *runtime = json_object_get (meta, "runtime"), *size = json_object_get (meta, "size");
  json_t *o = json_pack ("{s:s, s:s, s:o, s:o, s:o}", "id", rec->id, "status", status, "runtime",
                         runtime ? json_incref (runtime) : json_string (rec->template_id), "size",
                         size ? json_incref (size) : json_string ("standard"), "region",
                         meta_or_null (meta, "region"));
  if (o == NULL)
    {
      json_decref (meta);
      return NULL;
    }
  if (full)
    {
      char *url = strcmp (status, "ready") == 0 || strcmp (status, "active") == 0 ? v1_terminal_url (k, rec->id)
                                                                                    : NULL;
      json_object_set_new (o, "terminalUrl", url ? json_string (url) : json_null ());
      free (url);
      /* with --domain: the sandbox's ports, "{port}" standing for one
         (https://{port}-ID.DOMAIN); proxy.c serves them */
      char *preview = proxy_url (k->h, k->c, rec->id, 0);
      json_object_set_new (o, "previewBaseUrl", preview ? json_string (preview) : json_null ());
      free (preview);
      json_object_set_new (o, "capabilities", meta_or_null (meta, "capabilities"));
      /* the browser capability's Chromium, driven from inside the sandbox
         (templates/browser.spec); no recording or stream preview */
      json_t *caps_v = json_object_get (meta, "capabilities");
      json_object_set_new (o, "pairedBrowser",
                           json_is_object (json_object_get (caps_v, "browser"))
                               ? json_pack ("{s:s, s:s}", "mode", "paired-banata-browser", "cdpUrl",
                                            "http://127.0.0.1:9222")
                               : json_null ());
      json_object_set_new (o, "opencode", json_null ());
      json_object_set_new (o, "browserPreview", json_null ());
      json_object_set_new (o, "humanHandoff", json_null ());
      /* what /artifacts holds, as far as known without asking the sandbox */
      struct sbx_artifacts_summary as;
      struct sbx_err aerr;
      json_object_set_new (o, "artifacts",
                           sbx_service_artifacts_summary (k->h->svc, rec, &as, &aerr) < 1 || (!as.kept && !*as.prefix)
                               ? json_null ()
                           : as.kept ? json_pack ("{s:I, s:I, s:b, s:s?}", "count", (json_int_t) as.count, "bytes",
                                                  (json_int_t) as.bytes, "kept", 1, "prefix",
                                                  *as.prefix ? as.prefix : NULL)
                                     : json_pack ("{s:b, s:s}", "kept", 0, "prefix", as.prefix));
      bool over = strcmp (status, "ended") == 0 || strcmp (status, "failed") == 0;
      json_object_set_new (o, "duration",
                           over && made && rec->stopped_ms >= rec->started_ms
                               ? json_integer (rec->stopped_ms - rec->started_ms)
                               : json_null ());
    }
  json_object_set_new (o, "createdAt", created ? json_incref (created) : json_integer (rec->started_ms));
  json_object_set_new (o, "startedAt", made ? json_integer (rec->started_ms) : json_null ());
  json_decref (meta);
  return o;
}

/* ---- create ---- */

static const char *const runtimes[] = { "bun", "python", "base", NULL };

static bool
one_of (const char *s, const char *const *v)
{
  for (; *v; v++)
    if (strcmp (s, *v) == 0)
      return true;
  return false;
}

/* A field of a capability: TYPE 'b' boolean, 's' string. */
struct cap_field {
  const char *name;
  char type;
};

struct cap {
  const char *name;
  const struct cap_field *fields;
};

static const struct cap_field opencode_fields[] = { { "enabled", 'b' }, { "defaultAgent", 's' },
                                                    { "allowPromptApi", 'b' }, { NULL, 0 } };
static const struct cap_field browser_fields[] = { { "mode", 's' }, { "recording", 'b' }, { "streamPreview", 'b' },
                                                   { NULL, 0 } };
static const struct cap_field documents_fields[] = { { "libreofficeHeadless", 'b' }, { NULL, 0 } };
static const struct cap_field storage_fields[] = { { "workspace", 's' }, { "artifactPrefix", 's' }, { NULL, 0 } };
static const struct cap caps[] = { { "opencode", opencode_fields },
                                   { "browser", browser_fields },
                                   { "documents", documents_fields },
                                   { "storage", storage_fields },
                                   { NULL, NULL } };

/* An artifact prefix: a relative path of [A-Za-z0-9._-] segments, no
   ".." or empty segment but a final "/", at most 200 bytes. */
static bool
valid_prefix (const char *p)
{
  size_t n = strlen (p);
  if (n == 0 || n > 200 || p[0] == '/')
    return false;
  for (const char *seg = p; *seg;)
    {
      const char *end = strchr (seg, '/');
      size_t len = end ? (size_t) (end - seg) : strlen (seg);
      if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        return false;
      for (size_t i = 0; i < len; i++)
        if (!((seg[i] >= 'a' && seg[i] <= 'z') || (seg[i] >= 'A' && seg[i] <= 'Z') || (seg[i] >= '0' && seg[i] <= '9')
              || seg[i] == '.' || seg[i] == '_' || seg[i] == '-'))
          return false;
      seg += len;
      if (*seg == '/')
        seg++;
    }
  return true;
}

static bool
plan_has_pro (const struct sbx_org *org)
{
  return strcmp (org->plan, "pro") == 0 || strcmp (org->plan, "scale") == 0;
}

/* What a create's capabilities ask for. */
struct v1_caps {
  bool documents;          /* LibreOffice headless: the documents template */
  bool browser;            /* a paired browser: the browser template */
  bool keep_workspace;     /* storage.workspace "checkpointed" */
  const char *artifact_prefix;
};

/* Check capabilities CAPS (an object or null) field by field; 0, or -1
   after answering. */
static int
check_caps (struct call *k, json_t *v, struct v1_caps *out, enum MHD_Result *ret)
{
  memset (out, 0, sizeof *out);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_object (v))
    {
      *ret = send_error (k->c, 400, "capabilities must be an object");
      return -1;
    }
  const char *name;
  json_t *val;
  json_object_foreach (v, name, val)
  {
    const struct cap *cap;
    for (cap = caps; cap->name && strcmp (cap->name, name) != 0; cap++)
      ;
    if (cap->name == NULL)
      {
        *ret = send_error (k->c, 400, "Invalid capability: '%.64s'. Must be one of: opencode, browser, documents, storage",
                           name);
        return -1;
      }
    if (json_is_null (val))
      continue;
    if (!json_is_object (val))
      {
        *ret = send_error (k->c, 400, "capabilities.%s must be an object", name);
        return -1;
      }
    const char *fname;
    json_t *fval;
    json_object_foreach (val, fname, fval)
    {
      const struct cap_field *f;
      for (f = cap->fields; f->name && strcmp (f->name, fname) != 0; f++)
        ;
      if (f->name == NULL)
        {
          *ret = send_error (k->c, 400, "Invalid field capabilities.%s.%.64s", name, fname);
          return -1;
        }
      if ((f->type == 'b' && !json_is_boolean (fval))
          || (f->type == 's' && (!json_is_string (fval) || strlen (json_string_value (fval)) != json_string_length (fval))))
        {
          *ret = send_error (k->c, 400, "capabilities.%s.%s must be a %s", name, fname,
                             f->type == 'b' ? "boolean" : "string");
          return -1;
        }
    }
  }
  json_t *browser = json_object_get (v, "browser");
  if (json_is_object (browser))
    {
      json_t *mode = json_object_get (browser, "mode");
      if (mode && strcmp (json_string_value (mode), "paired-banata-browser") != 0)
        {
          *ret = send_error (k->c, 400, "Invalid capabilities.browser.mode: '%.64s'. Must be one of: paired-banata-browser",
                             json_string_value (mode));
          return -1;
        }
      if (!plan_has_pro (&k->rq->org))
        {
          *ret = send_error (k->c, 403, "Paired browser is not available on your current plan. Upgrade to Pro or higher.");
          return -1;
        }
      /* the browser template: a headless Chromium in the sandbox itself,
         its CDP endpoint on the sandbox's loopback (pairedBrowser) */
      out->browser = true;
    }
  json_t *opencode = json_object_get (v, "opencode");
  if (json_is_object (opencode) && !json_is_false (json_object_get (opencode, "enabled")))
    {
      *ret = plan_has_pro (&k->rq->org)
                 ? send_error (k->c, 400, "OpenCode is not available on this server: it has no opencode template")
                 : send_error (k->c, 403, "OpenCode is not available on your current plan. Upgrade to Pro or higher.");
      return -1;
    }
  out->documents = json_is_true (json_object_get (json_object_get (v, "documents"), "libreofficeHeadless"));
  if (out->browser && out->documents)
    {
      *ret = send_error (k->c, 400, "capabilities.browser and capabilities.documents cannot be combined on this server: "
                                    "they are different templates");
      return -1;
    }
  json_t *storage = json_object_get (v, "storage");
  const char *ws = json_string_value (json_object_get (storage, "workspace"));
  if (ws && strcmp (ws, "ephemeral") != 0 && strcmp (ws, "checkpointed") != 0)
    {
      *ret = send_error (k->c, 400, "Invalid capabilities.storage.workspace: '%.64s'. Must be one of: ephemeral, checkpointed",
                         ws);
      return -1;
    }
  out->keep_workspace = ws && strcmp (ws, "checkpointed") == 0;
  out->artifact_prefix = json_string_value (json_object_get (storage, "artifactPrefix"));
  if (out->artifact_prefix && !valid_prefix (out->artifact_prefix))
    {
      *ret = send_error (k->c, 400,
                         "Invalid capabilities.storage.artifactPrefix: a relative path of letters, digits, '.', '_' "
                         "and '-' segments, at most 200 bytes");
      return -1;
    }
  return 0;
}

static bool
valid_region (const char *r)
{
  return strlen (r) == 3 && r[0] >= 'a' && r[0] <= 'z' && r[1] >= 'a' && r[1] <= 'z' && r[2] >= 'a' && r[2] <= 'z';
}

static bool
valid_checkpoint_id (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n >= SBX_STORE_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'
          || s[i] == '-'))
      return false;
  return true;
}

static enum MHD_Result
v1_create (struct call *k)
{
  enum MHD_Result ret;
  struct MHD_Connection *c = k->c;
  const struct sbx_org *org = &k->rq->org;
  json_t *b = body_object (c, k->rq, &ret);
  if (b == NULL)
    return ret;
  char **env = NULL;
  char *meta_text = NULL;
  json_t *meta = NULL;

  json_t *v = json_object_get (b, "runtime");
  const char *runtime = "bun";
  if (v && !json_is_null (v))
    {
      runtime = json_string_value (v);
      if (runtime == NULL || !one_of (runtime, runtimes))
        {
          ret = send_error (c, 400, "Invalid runtime. Must be one of: bun, python, base");
          goto out;
        }
    }
  v = json_object_get (b, "size");
  if (v && !json_is_null (v) && (!json_is_string (v) || strcmp (json_string_value (v), "standard") != 0))
    {
      char *shown = json_is_string (v) ? strdup (json_string_value (v)) : json_dumps (v, JSON_ENCODE_ANY | JSON_COMPACT);
      ret = send_error (c, 400, "Invalid size: '%.*s'. Must be one of: standard", V1_SIZE_SHOWN, shown ? shown : "");
      free (shown);
      goto out;
    }
  bool ephemeral = true;
  if (env_list (c, b, "env", &env, &ret) < 0 || opt_bool (c, b, "ephemeral", &ephemeral, &ret) < 0)
    goto out;
  /* maxDurationMs: positive, at most the plan's longest lifetime */
  uint64_t plan_ms = (uint64_t) org->max_timeout_s * 1000u, max_ms = plan_ms;
  v = json_object_get (b, "maxDurationMs");
  if (v && !json_is_null (v))
    {
      double d = json_is_number (v) ? json_number_value (v) : -1;
      if (!(d > 0) || d > (double) plan_ms)
        {
          ret = send_error (c, 400, "Invalid maxDurationMs");
          goto out;
        }
      max_ms = (uint64_t) d;
      if ((double) max_ms < d)
        max_ms++;
    }
  const char *region = NULL, *checkpoint = NULL;
  v = json_object_get (b, "region");
  if (v && !json_is_null (v))
    {
      region = json_string_value (v);
      if (region == NULL || !valid_region (region))
        {
          ret = send_error (c, 400, "Invalid region: must match /^[a-z]{3}$/");
          goto out;
        }
    }
  if (opt_string (c, b, "checkpointId", &checkpoint, &ret) < 0)
    goto out;
  if (checkpoint && !valid_checkpoint_id (checkpoint))
    {
      ret = send_error (c, 400, "Invalid checkpointId");
      goto out;
    }
  struct v1_caps cp;
  json_t *capabilities = json_object_get (b, "capabilities");
  if (check_caps (k, capabilities, &cp, &ret) < 0)
    goto out;

  struct sbx_err err;
  const char *tmpl = cp.browser ? "browser" : cp.documents ? "documents" : runtime;
  if (sbx_template_check (k->h->engine, tmpl, &err) < 0)
    {
      ret = sbx_err_kind (&err) == SBX_E_INVALID
                ? send_error (c, 503, "Runtime %s is not available on this server yet: template %s is not built",
                              runtime, tmpl)
                : send_fail (c, &err);
      goto out;
    }

  int64_t now = sbx_wall_ms ();
  meta = json_pack ("{s:s, s:s, s:o, s:O, s:I, s:I}", "runtime", runtime, "size", "standard", "region",
                    region ? json_string (region) : json_null (), "capabilities",
                    capabilities ? capabilities : json_null (), "createdAt", (json_int_t) now, "maxDurationMs",
                    (json_int_t) max_ms);
  char *inner = meta ? json_dumps (meta, JSON_COMPACT) : NULL;
  json_t *outer = inner ? json_pack ("{s:s}", META_KEY, inner) : NULL;
  free (inner);
  meta_text = outer ? json_dumps (outer, JSON_COMPACT) : NULL;
  json_decref (outer);
  if (meta_text == NULL)
    {
      ret = send_error (c, 500, "out of memory");
      goto out;
    }
  struct sbx_sandbox_spec spec = {
    .template_name = tmpl,
    .timeout_s = (uint32_t) ((max_ms + 999) / 1000),
    .env = (const char *const *) env,
    .metadata_json = meta_text,
    .limits = { .cpu_millis = V1_CPU_MILLIS, .memory_mb = V1_MEMORY_MB },
    .checkpoint_id = checkpoint,
    .keep_workspace = !ephemeral || cp.keep_workspace,
    .keep_artifacts = true,
    .artifact_prefix = cp.artifact_prefix,
  };
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_enqueue (k->h->svc, org, &spec, &rec, &err) < 0)
    {
      /* the service's message for the monthly hours is the seed's */
      ret = sbx_err_kind (&err) == SBX_E_LIMIT && !sbx_service_err_is_hours (&err)
                ? send_error (c, 429, "Concurrent sandbox limit reached")
                : send_fail (c, &err);
      goto out;
    }
  snprintf (k->rq->sandbox_id, sizeof k->rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, rec.id);
  ret = send_json (c, 200,
                   json_pack ("{s:s, s:s, s:s, s:s, s:O}", "id", rec.id, "status", "queued", "runtime", runtime, "size",
                              "standard", "capabilities", capabilities ? capabilities : json_null ()));
  sbx_sandbox_rec_free (&rec);
out:
  json_decref (meta);
  free (meta_text);
  sbx_strv_free (env);
  json_decref (b);
  return ret;
}

/* ---- reading, ending, pausing ---- */

enum MHD_Result
v1_sandboxes_post (struct call *k)
{
  return v1_create (k);
}

enum MHD_Result
v1_sandboxes_get (struct call *k)
{
  enum MHD_Result ret;
  const char *id = query (k->c, "id");
  if (id)
    {
      struct sbx_sandbox_rec rec;
      if (!v1_sandbox (k, id, &rec, &ret))
        return ret;
      json_t *o = v1_object (k, &rec, true);
      sbx_sandbox_rec_free (&rec);
      return send_json (k->c, 200, o);
    }
  struct sbx_sandbox_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list (k->h->store, k->rq->org.id, NULL, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *items = json_array ();
  for (size_t i = 0, shown = 0; i < n && shown < V1_LIST_MAX; i++)
    if (strncmp (v[i].id, "rsv_", 4) != 0)
      {
        json_array_append_new (items, v1_object (k, &v[i], false));
        shown++;
      }
  sbx_sandbox_recs_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:o}", "items", items));
}

enum MHD_Result
v1_sandboxes_delete (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  if (!v1_sandbox (k, query (k->c, "id"), &rec, &ret))
    return ret;
  struct sbx_err err;
  int r = sbx_service_sandbox_end (k->h->svc, &k->rq->org, rec.id, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, json_pack ("{s:b}", "ok", 1));
}

/* The body of a POST naming a sandbox: *B and the record; false after
   answering. */
static bool
v1_body_sandbox (struct call *k, json_t **b, struct sbx_sandbox_rec *rec, enum MHD_Result *ret)
{
  *b = body_object (k->c, k->rq, ret);
  if (*b == NULL)
    return false;
  json_t *id = json_object_get (*b, "id");
  if (id && !json_is_string (id))
    {
      json_decref (*b);
      *ret = send_error (k->c, 400, "id must be a string");
      return false;
    }
  if (!v1_sandbox (k, json_string_value (id), rec, ret))
    {
      json_decref (*b);
      return false;
    }
  return true;
}

/* Pause or resume, answered with the sandbox as it is then. */
static enum MHD_Result
pause_resume (struct call *k, bool pause)
{
  enum MHD_Result ret;
  json_t *b;
  struct sbx_sandbox_rec rec;
  if (!v1_body_sandbox (k, &b, &rec, &ret))
    return ret;
  json_decref (b);
  struct sbx_err err;
  int r = pause ? sbx_service_sandbox_pause (k->h->svc, &k->rq->org, rec.id, &err)
                : sbx_service_sandbox_resume (k->h->svc, &k->rq->org, rec.id, true, &err);
  if (r < 0)
    {
      sbx_sandbox_rec_free (&rec);
      switch (sbx_err_kind (&err))
        {
        case SBX_E_PAUSED:
          return send_error (k->c, 409, "Sandbox is already paused");
        case SBX_E_STOPPED:
          return send_error (k->c, 409, "Sandbox has ended");
        default:
          return send_fail (k->c, &err);
        }
    }
  struct sbx_sandbox_rec now;
  if (sbx_service_sandbox_get (k->h->svc, &k->rq->org, rec.id, &now, &err) < 0)
    {
      sbx_sandbox_rec_free (&rec);
      return send_fail (k->c, &err);
    }
  sbx_sandbox_rec_free (&rec);
  json_t *o = v1_object (k, &now, true);
  sbx_sandbox_rec_free (&now);
  return send_json (k->c, 200, o);
}

enum MHD_Result
v1_pause (struct call *k)
{
  return pause_resume (k, true);
}

enum MHD_Result
v1_resume (struct call *k)
{
  return pause_resume (k, false);
}

/* ---- commands and code ---- */

/* Whether REC can run something now; false after answering 409. */
static bool
v1_runnable (struct call *k, const struct sbx_sandbox_rec *rec, enum MHD_Result *ret)
{
  const char *st = v1_status (rec);
  if (strcmp (st, "ready") == 0 || strcmp (st, "active") == 0)
    return true;
  *ret = strcmp (st, "paused") == 0 || strcmp (st, "pausing") == 0
             ? send_error (k->c, 409, "Sandbox is %s; resume it first", st)
         : strcmp (st, "queued") == 0 || strcmp (st, "assigning") == 0
             ? send_error (k->c, 409, "Sandbox is not ready yet (%s)", st)
             : send_error (k->c, 409, "Sandbox has %s", strcmp (st, "ending") == 0 ? "ended" : st);
  return false;
}

/* Run ARGV in sandbox ID ("active" meanwhile) and answer {stdout, stderr,
   exitCode, durationMs}; a process its timeout killed exits 124, as
   timeout(1) says it. */
static enum MHD_Result
v1_run_answer (struct call *k, const char *id, const char *const *argv, const char *const *env, const char *cwd,
               uint32_t timeout_ms)
{
  struct sbx_proc_capture r = { 0 };
  sbx_capture_init (&r.out, V1_OUTPUT_MAX, false);
  sbx_capture_init (&r.err, V1_OUTPUT_MAX, false);
  struct sbx_exec_opts o = { .argv = argv, .env = env, .cwd = cwd, .timeout_ms = timeout_ms, .tag = "sbxd-v1" };
  struct sbx_err err;
  int64_t t0 = sbx_wall_ms ();
  sbx_service_busy_begin (id);
  int rc = sbx_service_exec (k->h->svc, id, &o, sbx_proc_capture_event, &r, &err);
  sbx_service_busy_end (id);
  int64_t ms = sbx_wall_ms () - t0;
  enum MHD_Result ret;
  if (rc < 0 || !r.ended)
    {
      ret = rc < 0 ? send_fail (k->c, &err) : send_error (k->c, 500, "the process ended without a status");
      sbx_capture_free (&r.out);
      sbx_capture_free (&r.err);
      return ret;
    }
  sbx_capture_end (&r.out);
  sbx_capture_end (&r.err);
  size_t no, ne;
  char *so = sbx_capture_take (&r.out, &no), *se = sbx_capture_take (&r.err, &ne);
  int code = r.timed_out ? 124 : r.signal ? 128 + r.signal : r.exit_code;
  json_t *j = json_pack ("{s:o, s:o, s:i, s:I}", "stdout", text_json (so, no), "stderr", text_json (se, ne),
                         "exitCode", code, "durationMs", (json_int_t) (ms > 0 ? ms : 0));
  if (j && r.timed_out)
    json_object_set_new (j, "timedOut", json_true ());
  if (j && (r.out.truncated || r.err.truncated))
    json_object_set_new (j, "truncated", json_true ());
  free (so);
  free (se);
  sbx_capture_free (&r.out);
  sbx_capture_free (&r.err);
  return send_json (k->c, 200, j);
}

enum MHD_Result
v1_exec (struct call *k)
{
  enum MHD_Result ret;
  json_t *b;
  struct sbx_sandbox_rec rec;
  if (!v1_body_sandbox (k, &b, &rec, &ret))
    return ret;
  const char *command = NULL, *cwd = NULL;
  long long timeout = V1_EXEC_TIMEOUT_MS;
  char **env = NULL;
  if (opt_string (k->c, b, "command", &command, &ret) < 0 || opt_string (k->c, b, "cwd", &cwd, &ret) < 0
      || opt_int (k->c, b, "timeoutMs", 1, SBX_PLAN_TIMEOUT_CAP * 1000LL, &timeout, &ret) < 0
      || env_list (k->c, b, "env", &env, &ret) < 0)
    goto out;
  if (command == NULL || *command == '\0')
    {
      ret = send_error (k->c, 400, "command is required");
      goto out;
    }
  if (!v1_runnable (k, &rec, &ret))
    goto out;
  const char *argv[] = { "/bin/sh", "-c", command, NULL };
  ret = v1_run_answer (k, rec.id, argv, (const char *const *) env, cwd, (uint32_t) timeout);
out:
  sbx_strv_free (env);
  json_decref (b);
  sbx_sandbox_rec_free (&rec);
  return ret;
}

enum MHD_Result
v1_code (struct call *k)
{
  enum MHD_Result ret;
  json_t *b;
  struct sbx_sandbox_rec rec;
  if (!v1_body_sandbox (k, &b, &rec, &ret))
    return ret;
  const char *language = NULL, *code = NULL;
  if (opt_string (k->c, b, "language", &language, &ret) < 0 || opt_string (k->c, b, "code", &code, &ret) < 0)
    goto out;
  static const char *const langs[] = { "python", "javascript", "typescript", NULL };
  if (language == NULL || !one_of (language, langs))
    {
      ret = send_error (k->c, 400, "Invalid language: '%.64s'. Must be one of: python, javascript, typescript",
                        language ? language : "");
      goto out;
    }
  if (code == NULL)
    {
      ret = send_error (k->c, 400, "code is required");
      goto out;
    }
  if (!v1_runnable (k, &rec, &ret))
    goto out;
  /* the code goes to a file of its own (no argument-length limit, and
     bun runs a file by its extension), removed afterwards */
  unsigned char rnd[8];
  sbx_random_bytes (rnd, sizeof rnd);
  char path[96];
  const char *ext = strcmp (language, "python") == 0 ? "py" : strcmp (language, "javascript") == 0 ? "js" : "ts";
  snprintf (path, sizeof path, "/tmp/.sbxd-code-%02x%02x%02x%02x%02x%02x%02x%02x.%s", rnd[0], rnd[1], rnd[2], rnd[3],
            rnd[4], rnd[5], rnd[6], rnd[7], ext);
  struct sbx_err err;
  if (sbx_file_write (k->h->engine, rec.id, path, NULL, code, strlen (code), NULL, &err) < 0)
    {
      ret = send_fail (k->c, &err);
      goto out;
    }
  const char *py[] = { "python3", path, NULL };
  const char *bun[] = { "bun", "run", path, NULL };
  ret = v1_run_answer (k, rec.id, strcmp (language, "python") == 0 ? py : bun, NULL, NULL, V1_EXEC_TIMEOUT_MS);
  sbx_file_remove (k->h->engine, rec.id, path, NULL, &err);
out:
  json_decref (b);
  sbx_sandbox_rec_free (&rec);
  return ret;
}

/* ---- files ---- */

/* The sandbox named by ?id= and a ?path=, ready for file calls; false
   after answering. */
static bool
v1_query_file (struct call *k, struct sbx_sandbox_rec *rec, const char **path, const char *dflt,
               enum MHD_Result *ret)
{
  if (!v1_sandbox (k, query (k->c, "id"), rec, ret))
    return false;
  *path = query (k->c, "path");
  if (*path == NULL || **path == '\0')
    *path = dflt;
  if (*path == NULL)
    *ret = send_error (k->c, 400, "path is required");
  else if (v1_runnable (k, rec, ret))
    return true;
  sbx_sandbox_rec_free (rec);
  return false;
}

enum MHD_Result
v1_file_write (struct call *k)
{
  enum MHD_Result ret;
  json_t *b;
  struct sbx_sandbox_rec rec;
  if (!v1_body_sandbox (k, &b, &rec, &ret))
    return ret;
  const char *path = NULL, *content = NULL, *encoding = "utf8";
  uint8_t *decoded = NULL;
  if (opt_string (k->c, b, "path", &path, &ret) < 0 || opt_string (k->c, b, "encoding", &encoding, &ret) < 0)
    goto out;
  json_t *cv = json_object_get (b, "content");
  if (path == NULL || *path == '\0')
    {
      ret = send_error (k->c, 400, "path is required");
      goto out;
    }
  if (!json_is_string (cv))
    {
      ret = send_error (k->c, 400, "content must be a string");
      goto out;
    }
  if (strcmp (encoding, "utf8") != 0 && strcmp (encoding, "base64") != 0)
    {
      ret = send_error (k->c, 400, "Invalid encoding: '%.64s'. Must be one of: utf8, base64", encoding);
      goto out;
    }
  if (!v1_runnable (k, &rec, &ret))
    goto out;
  content = json_string_value (cv);
  size_t len = json_string_length (cv);
  if (strcmp (encoding, "base64") == 0)
    {
      decoded = sbx_b64_decode (content, &len);
      if (decoded == NULL)
        {
          ret = send_error (k->c, 400, "content is not valid base64");
          goto out;
        }
    }
  struct sbx_entry en;
  struct sbx_err err;
  if (sbx_file_write (k->h->engine, rec.id, path, NULL, decoded ? (const void *) decoded : content, len, &en, &err) < 0)
    {
      ret = send_fail (k->c, &err);
      goto out;
    }
  ret = send_json (k->c, 200, json_pack ("{s:b, s:o, s:I}", "ok", 1, "path", text_json (en.path, strlen (en.path ? en.path : "")),
                                         "size", (json_int_t) en.size));
  sbx_entry_free (&en);
out:
  free (decoded);
  json_decref (b);
  sbx_sandbox_rec_free (&rec);
  return ret;
}

/* Whether the N bytes at S are UTF-8 without NUL (text jansson keeps as it is). */
static bool
is_text (const char *s, size_t n)
{
  if (memchr (s, '\0', n))
    return false;
  json_t *j = json_stringn (s, n);
  json_decref (j);
  return j != NULL;
}

enum MHD_Result
v1_file_read (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  const char *path;
  if (!v1_query_file (k, &rec, &path, NULL, &ret))
    return ret;
  const char *want = query (k->c, "encoding");
  if (want && strcmp (want, "utf8") != 0 && strcmp (want, "base64") != 0)
    {
      sbx_sandbox_rec_free (&rec);
      return send_error (k->c, 400, "Invalid encoding: '%.64s'. Must be one of: utf8, base64", want);
    }
  struct read_buf b = { 0 };
  struct sbx_entry en;
  struct sbx_err err;
  if (sbx_file_read (k->h->engine, rec.id, path, NULL, V1_READ_MAX, &en, read_into, &b, &err) < 0)
    {
      free (b.data);
      sbx_sandbox_rec_free (&rec);
      if (sbx_err_kind (&err) == SBX_E_TOO_LARGE)
        return send_error (k->c, 413, "File is larger than %u MiB", V1_READ_MAX >> 20);
      return send_fail (k->c, &err);
    }
  sbx_sandbox_rec_free (&rec);
  const char *data = b.data ? b.data : "";
  /* utf8 unless the bytes are not text, or base64 was asked for */
  bool text = (want == NULL || strcmp (want, "utf8") == 0) && is_text (data, b.len);
  if (want && strcmp (want, "utf8") == 0 && !text)
    {
      free (b.data);
      sbx_entry_free (&en);
      return send_error (k->c, 400, "File is not UTF-8 text; read it with encoding=base64");
    }
  char *b64 = text ? NULL : sbx_b64_encode (data, b.len);
  json_t *j = json_pack ("{s:o, s:o, s:s, s:I}", "path", text_json (en.path, strlen (en.path ? en.path : "")),
                         "content", text ? json_stringn (data, b.len) : json_string (b64 ? b64 : ""), "encoding",
                         text ? "utf8" : "base64", "size", (json_int_t) b.len);
  free (b64);
  free (b.data);
  sbx_entry_free (&en);
  return send_json (k->c, 200, j);
}

enum MHD_Result
v1_file_list (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  const char *path;
  if (!v1_query_file (k, &rec, &path, ".", &ret))
    return ret;
  struct sbx_entry *v;
  size_t n;
  struct sbx_err err;
  int r = sbx_file_list (k->h->engine, rec.id, path, NULL, 1, &v, &n, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  json_t *items = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (items, entry_json (&v[i]));
  sbx_entries_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:s, s:o}", "path", path, "entries", items));
}

enum MHD_Result
v1_file_delete (struct call *k)
{
  enum MHD_Result ret;
  struct sbx_sandbox_rec rec;
  const char *path;
  if (!v1_query_file (k, &rec, &path, NULL, &ret))
    return ret;
  struct sbx_err err;
  int r = sbx_file_remove (k->h->engine, rec.id, path, NULL, &err);
  sbx_sandbox_rec_free (&rec);
  if (r < 0)
    return send_fail (k->c, &err);
  return send_json (k->c, 200, json_pack ("{s:b}", "ok", 1));
}

/* ---- usage ---- */

enum MHD_Result
v1_usage (struct call *k)
{
  struct sbx_usage u;
  struct sbx_err err;
  if (sbx_service_usage (k->h->svc, &k->rq->org, &u, &err) < 0)
    return send_fail (k->c, &err);
  time_t t = (time_t) (u.month_start_ms / 1000);
  struct tm tm;
  gmtime_r (&t, &tm);
  char month[32];
  snprintf (month, sizeof month, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
  return send_json (k->c, 200,
                    json_pack ("{s:s, s:I, s:f, s:o, s:o}", "month", month, "usedMs", (json_int_t) u.used_ms,
                               "usedHours", (double) u.used_ms / SBX_MS_PER_HOUR, "limitHours",
                               u.limit_ms ? json_real ((double) u.limit_ms / SBX_MS_PER_HOUR) : json_null (),
                               "limitMs", u.limit_ms ? json_integer (u.limit_ms) : json_null ()));
}
