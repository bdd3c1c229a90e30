/*
 * server.c - the HTTP server of sbxd (libmicrohttpd): reads requests,
 * authenticates them, routes them through the route table (routes.c) to
 * the dialects' handlers, and logs one line per request.  It also holds
 * the helpers every dialect shares: JSON answers, error answers in the
 * request's dialect, and body parsing.
 *
 * libmicrohttpd runs one thread per connection, so a handler may block on
 * the core (a synchronous exec, a large read).
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

#include "../common/log.h"
#include "../common/util.h"
#include "../service/encode.h"
#include "../service/interp.h"

#define MAX_JSON_BODY (64u << 20)     /* base64 writes of files up to ~48 MB */
#define DEFAULT_UPLOAD_MAX (100ull << 20) /* seed 000 */

/* ---- dialects ---- */

static json_t *
sandbase_error_body (unsigned status, const char *msg)
{
  return json_pack ("{s:i, s:s}", "code", (int) status, "message", msg);
}

const struct dialect dialect_sandbase = {
  .name = "sandbase",
  .status = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,   [SBX_E_NOT_FOUND] = 404, [SBX_E_CONFLICT] = 409,
              [SBX_E_PAUSED] = 409,    [SBX_E_STOPPED] = 409,   [SBX_E_LIMIT] = 429,     [SBX_E_FORBIDDEN] = 403,
              [SBX_E_TOO_LARGE] = 400, [SBX_E_NO_SPACE] = 507,  [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 },
  .bad_sandbox_id = 400,
  .error_body = sandbase_error_body,
};

/* The request this thread answers, for the answer helpers (api.h). */
static __thread const struct dialect *tl_dialect;
static __thread unsigned tl_status;

const struct dialect *
current_dialect (void)
{
  return tl_dialect ? tl_dialect : &dialect_sandbase;
}

/* ---- responses ---- */

enum MHD_Result
send_json (struct MHD_Connection *c, unsigned status, json_t *j)
{
  char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  if (text == NULL && status < 500)
    {
      /* an answer that could not be built (a string that is not UTF-8,
         out of memory): a 500 in the dialect's shape, not a connection
         closed without any answer */
      return send_json (c, 500, current_dialect ()->error_body (500, "cannot encode the answer"));
    }
  if (text == NULL)
    return MHD_NO;
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
  MHD_add_response_header (r, "Content-Type", "application/json");
  enum MHD_Result ret = queue_response (c, status, r);
  MHD_destroy_response (r);
  return ret;
}

enum MHD_Result
queue_response (struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
  tl_status = status;
  return MHD_queue_response (c, status, r);
}


enum MHD_Result
send_error (struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
  char msg[600];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  /* a message may quote bytes a client or a sandbox sent: JSON needs
     UTF-8, so text_json replaces what is not */
  json_t *text = text_json (msg, strlen (msg));
  json_t *body = current_dialect ()->error_body (status, text ? json_string_value (text) : "error");
  json_decref (text);
  return send_json (c, status, body);
}

enum MHD_Result
send_fail (struct MHD_Connection *c, const struct sbx_err *err)
{
  return send_error (c, current_dialect ()->status[sbx_err_kind (err)], "%s", err->msg);
}

enum MHD_Result
send_empty (struct MHD_Connection *c, unsigned status)
{
  struct MHD_Response *r = MHD_create_response_from_buffer (0, NULL, MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret = queue_response (c, status, r);
  MHD_destroy_response (r);
  return ret;
}


enum MHD_Result
send_pipe (struct MHD_Connection *c, int fd, const char *content_type, ...)
{
  struct MHD_Response *r = MHD_create_response_from_pipe (fd);
  MHD_add_response_header (r, "Content-Type", content_type);
  va_list ap;
  va_start (ap, content_type);
  for (const char *name; (name = va_arg (ap, const char *)) != NULL;)
    MHD_add_response_header (r, name, va_arg (ap, const char *));
  va_end (ap);
  enum MHD_Result ret = queue_response (c, 200, r);
  MHD_destroy_response (r);
  return ret;
}

/* ---- request parsing ---- */

bool
valid_id (const char *id)
{
  size_t n = strlen (id);
  if (n < 5 || n >= SBX_ID_MAX || strncmp (id, "sbx_", 4) != 0)
    return false;
  for (size_t i = 4; i < n; i++)
    if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
      return false;
  return true;
}

/* Parse the body as a JSON object; an empty body is an empty object. */
json_t *
body_object (struct MHD_Connection *c, struct request *rq, enum MHD_Result *ret)
{
  if (rq->too_big)
    {
      *ret = send_error (c, 413, "request body too large (max %u bytes)", MAX_JSON_BODY);
      return NULL;
    }
  if (rq->len == 0)
    return json_object ();
  json_error_t jerr;
  json_t *j = json_loadb (rq->body, rq->len, JSON_REJECT_DUPLICATES, &jerr);
  if (j == NULL)
    {
      *ret = send_error (c, 400, "malformed JSON body: %s", jerr.text);
      return NULL;
    }
  if (!json_is_object (j))
    {
      json_decref (j);
      *ret = send_error (c, 400, "request body must be a JSON object");
      return NULL;
    }
  return j;
}

/* Optional integer field in [lo, hi]; returns 0, or -1 after sending 400. */
int
opt_int (struct MHD_Connection *c, json_t *o, const char *key, long long lo, long long hi, long long *out,
         enum MHD_Result *ret)
{
  json_t *v = json_object_get (o, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_integer (v))
    {
      *ret = send_error (c, 400, "%s must be an integer", key);
      return -1;
    }
  long long x = json_integer_value (v);
  if (x < lo || x > hi)
    {
      *ret = send_error (c, 400, "%s must be between %lld and %lld", key, lo, hi);
      return -1;
    }
  *out = x;
  return 0;
}

int
opt_string (struct MHD_Connection *c, json_t *o, const char *key, const char **out, enum MHD_Result *ret)
{
  json_t *v = json_object_get (o, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_string (v) || strlen (json_string_value (v)) != json_string_length (v))
    {
      *ret = send_error (c, 400, "%s must be a string", key);
      return -1;
    }
  *out = json_string_value (v);
  return 0;
}

int
opt_bool (struct MHD_Connection *c, json_t *o, const char *key, bool *out, enum MHD_Result *ret)
{
  json_t *v = json_object_get (o, key);
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_boolean (v))
    {
      *ret = send_error (c, 400, "%s must be a boolean", key);
      return -1;
    }
  *out = json_is_true (v);
  return 0;
}

int
env_list (struct MHD_Connection *c, json_t *o, const char *key, char ***out, enum MHD_Result *ret)
{
  json_t *v = json_object_get (o, key);
  *out = NULL;
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_object (v))
    {
      *ret = send_error (c, 400, "%s must be an object of strings", key);
      return -1;
    }
  char **env = calloc (json_object_size (v) + 1, sizeof *env);
  size_t n = 0;
  const char *k;
  json_t *val;
  json_object_foreach (v, k, val)
  {
    if (!json_is_string (val) || *k == '\0' || strchr (k, '=') || strlen (json_string_value (val)) != json_string_length (val))
      {
        for (size_t i = 0; i < n; i++)
          free (env[i]);
        free (env);
        *ret = send_error (c, 400, "%s: invalid variable %s", key, k);
        return -1;
      }
    if (asprintf (&env[n], "%s=%s", k, json_string_value (val)) < 0)
      break;
    n++;
  }
  *out = env;
  return 0;
}


const char *
query (struct MHD_Connection *c, const char *key)
{
  return MHD_lookup_connection_value (c, MHD_GET_ARGUMENT_KIND, key);
}

/* ---- routing ---- */

bool
authenticate (struct http_server *h, struct MHD_Connection *c, struct request *rq, enum MHD_Result *ret)
{
  if (rq->authed)
    return true;
  const char *key = NULL;
  const char *auth = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Authorization");
  if (auth && strncasecmp (auth, "Bearer ", 7) == 0)
    for (key = auth + 7; *key == ' '; key++)
      ;
  if (key == NULL || *key == '\0')
    key = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "X-API-Key");
  struct sbx_err err;
  if (sbx_service_authenticate (h->svc, key, &rq->org, &err) < 0)
    {
      *ret = sbx_err_kind (&err) == SBX_E_INVALID ? send_error (c, 401, "%s", err.msg) : send_fail (c, &err);
      return false;
    }
  rq->authed = true;
  return true;
}

enum MHD_Result
send_openapi (struct call *k)
{
  char path[4200];
  snprintf (path, sizeof path, "%s/openapi.yaml", k->h->docs_dir);
  char *text = NULL;
  struct sbx_err err;
  if (sbx_read_file_at (AT_FDCWD, path, &text, 4u << 20, &err) < 0)
    return send_error (k->c, 404, "openapi.yaml not found");
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
  MHD_add_response_header (r, "Content-Type", "application/yaml");
  enum MHD_Result ret = queue_response (k->c, 200, r);
  MHD_destroy_response (r);
  return ret;
}

enum MHD_Result
send_health (struct call *k)
{
  return send_json (k->c, 200, json_pack ("{s:s}", "status", "ok"));
}

/* Split URL into at most MAX segments in BUF. */
static int
split_url (const char *url, char *buf, size_t size, char **seg, int max)
{
  if (snprintf (buf, size, "%s", url) >= (int) size)
    return -1;
  int n = 0;
  char *save = NULL;
  for (char *tok = strtok_r (buf, "/", &save); tok && n < max; tok = strtok_r (NULL, "/", &save))
    seg[n++] = tok;
  return n;
}

/* Does PATTERN match the N segments SEG?  Fills ARG with the ":name"
   segments. */
static bool
pattern_match (const char *pattern, char *const *seg, int n, const char **arg)
{
  int i = 0, a = 0;
  const char *p = pattern;
  while (*p == '/')
    p++;
  while (*p)
    {
      const char *end = strchr (p, '/');
      size_t len = end ? (size_t) (end - p) : strlen (p);
      if (len == 1 && *p == '*')
        return true;
      if (i >= n)
        return false;
      if (*p == ':')
        {
          if (a < 4)
            arg[a++] = seg[i];
        }
      else if (strlen (seg[i]) != len || strncmp (seg[i], p, len) != 0)
        return false;
      i++;
      p += len;
      while (*p == '/')
        p++;
    }
  return i == n;
}

/* The route for METHOD and the segments; *PATH_KNOWN tells a wrong method
   (405) from an unknown path (404). */
static const struct route *
find_route (const char *method, char *const *seg, int n, const char **arg, bool *path_known)
{
  *path_known = false;
  for (size_t i = 0; i < api_n_routes; i++)
    {
      const struct route *r = &api_routes[i];
      const char *a[4] = { NULL, NULL, NULL, NULL };
      if (!pattern_match (r->pattern, seg, n, a))
        continue;
      *path_known = true;
      if (strcmp (r->method, "*") != 0 && strcmp (r->method, method) != 0)
        continue;
      memcpy (arg, a, sizeof a);
      return r;
    }
  return NULL;
}

/* The dialect that answers a path no route takes. */
static const struct dialect *
dialect_of_path (char *const *seg, int n)
{
  return n >= 1 && strcmp (seg[0], "api") == 0 ? &dialect_seed002 : &dialect_sandbase;
}

static enum MHD_Result
route (struct http_server *h, struct MHD_Connection *c, const char *method, const char *url, struct request *rq)
{
  char path[1024];
  struct call k = { .h = h, .c = c, .rq = rq, .method = method };
  tl_dialect = &dialect_sandbase;
  k.n = split_url (url, path, sizeof path, k.seg, CALL_MAX_SEGS);
  if (k.n < 0)
    return send_error (c, 414, "URL too long");
  bool known;
  const struct route *r = find_route (method, k.seg, k.n, k.arg, &known);
  if (r == NULL && k.n >= 2 && strcmp (k.seg[0], "v2") == 0 && strcmp (k.seg[1], "sandboxes") == 0)
    {
      /* E2B's v2 control plane: the same sandboxes as v1 where it has no
         route of its own (POST /v2/sandboxes, .../connect, ...) */
      bool known_v1;
      r = find_route (method, k.seg + 1, k.n - 1, k.arg, &known_v1);
      known = known || known_v1;
    }
  enum MHD_Result ret;
  if (r == NULL)
    {
      /* without a key, nothing is told about which paths exist */
      tl_dialect = dialect_of_path (k.seg, k.n);
      if (!authenticate (h, c, rq, &ret))
        return ret;
      return known ? send_error (c, 405, "method not allowed") : send_error (c, 404, "not found");
    }
  tl_dialect = r->dialect;
  rq->route = r->pattern;
  if (!(r->flags & ROUTE_PUBLIC) && !authenticate (h, c, rq, &ret))
    return ret;
  if (r->flags & ROUTE_SANDBOX)
    {
      const char *id = k.arg[0];
      snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, id);
      if (!valid_id (id))
        return r->dialect->bad_sandbox_id == 404 ? send_error (c, 404, "sandbox not found")
                                                 : send_error (c, r->dialect->bad_sandbox_id, "invalid sandbox id");
      struct sbx_err err;
      if (sbx_service_sandbox_get (h->svc, &rq->org, id, &k.rec, &err) < 0)
        return send_fail (c, &err);
      k.have_rec = true;
    }
  ret = r->fn (&k);
  if (k.have_rec)
    sbx_sandbox_rec_free (&k.rec);
  return ret;
}

/* A multipart upload is streamed into the sandbox as it arrives instead of
   being collected: it starts on the first call, once headers are in. */
static enum MHD_Result
begin_upload (struct http_server *h, struct MHD_Connection *c, const char *method, const char *url,
              struct request *rq, bool *handled)
{
  char path[1024];
  char *seg[8];
  int n = split_url (url, path, sizeof path, seg, 8);
  *handled = n > 0 && upload_wanted (method, seg, n);
  if (!*handled)
    return MHD_YES;
  enum MHD_Result ret;
  if (!authenticate (h, c, rq, &ret))
    return ret;
  if (!valid_id (seg[1]))
    return send_error (c, 400, "invalid sandbox id");
  struct sbx_sandbox_rec rec;
  if (!own_sandbox (h, c, rq, seg[1], &rec, &ret))
    return ret;
  sbx_sandbox_rec_free (&rec);
  return upload_begin (h, c, rq, seg[1]);
}

/* One line per request: method, route, status, duration, organisation,
   sandbox. */
static void
log_request (struct request *rq, unsigned status)
{
  const char *method = rq->method, *url = rq->url;
  char st[16], ms[32];
  snprintf (st, sizeof st, "%u", status);
  snprintf (ms, sizeof ms, "%.3f", (double) ((int64_t) sbx_now_ns () - rq->start_ns) / 1e6);
  sbx_log_fields (status >= 500 ? SBX_LOG_WARN : SBX_LOG_INFO, "request", "method", method, "route",
                  rq->route ? rq->route : url, "status", st, "ms", ms, "org", rq->authed ? rq->org.name : "-",
                  "sandbox", rq->sandbox_id[0] ? rq->sandbox_id : "-", NULL);
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
            const char *upload_data, size_t *upload_size, void **con_cls)
{
  (void) version;
  struct http_server *h = cls;
  struct request *rq = *con_cls;
  if (rq == NULL)
    {
      rq = calloc (1, sizeof *rq);
      if (rq == NULL)
        return MHD_NO;
      *con_cls = rq;
      rq->start_ns = (int64_t) sbx_now_ns ();
      snprintf (rq->method, sizeof rq->method, "%s", method);
      snprintf (rq->url, sizeof rq->url, "%s", url);
      tl_status = 0;
      tl_dialect = NULL;
      char sid[SBX_ID_MAX];
      if (!e2b_is_envd (c) && e2b_signed_file (h, c, method, url, sid))
        {
          /* a signed URL stands for the access token of its sandbox */
          rq->org.max_upload_bytes = DEFAULT_UPLOAD_MAX;
          if (strcmp (method, "POST") == 0)
            return upload_begin (h, c, rq, sid);
          snprintf (rq->signed_id, sizeof rq->signed_id, "%s", sid);
          return MHD_YES;
        }
      if (e2b_is_envd (c))
        {
          rq->envd = true;
          if (envd_upload_wanted (c, method, url))
            {
              char id[SBX_ID_MAX];
              enum MHD_Result r;
              if (!e2b_envd_check (h, c, id, &r))
                return r;
              /* envd calls carry no API key: the seed's upload limit */
              rq->org.max_upload_bytes = DEFAULT_UPLOAD_MAX;
              return upload_begin (h, c, rq, id);
            }
          return MHD_YES;
        }
      bool handled;
      enum MHD_Result r = begin_upload (h, c, method, url, rq, &handled);
      (void) handled;
      return r;
    }
  if (rq->upload)
    {
      if (*upload_size)
        {
          enum MHD_Result r = upload_feed (rq, upload_data, *upload_size);
          *upload_size = 0;
          return r;
        }
      return upload_end (h, c, rq);
    }
  if (*upload_size)
    {
      if (!rq->too_big && rq->len + *upload_size <= MAX_JSON_BODY)
        {
          char *nb = realloc (rq->body, rq->len + *upload_size + 1);
          if (nb == NULL)
            rq->too_big = true;
          else
            {
              memcpy (nb + rq->len, upload_data, *upload_size);
              rq->body = nb;
              rq->len += *upload_size;
            }
        }
      else
        rq->too_big = true;
      *upload_size = 0;
      return MHD_YES;
    }
  if (rq->envd)
    return e2b_envd (h, c, rq, method, url);
  if (rq->signed_id[0])
    return download_file (h, c, rq, rq->signed_id);
  return route (h, c, method, url, rq);
}

static void
on_completed (void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
  (void) cls;
  (void) c;
  (void) toe;
  struct request *rq = *con_cls;
  if (rq)
    {
      log_request (rq, tl_status);
      upload_free (rq);
      free (rq->body);
      free (rq);
    }
  *con_cls = NULL;
}

struct http_server *
sbx_http_start (const struct sbx_http_config *cfg, struct sbx_err *err)
{
  struct http_server *h = calloc (1, sizeof *h);
  if (h == NULL)
    {
      sbx_fail (err, ENOMEM, "http server");
      return NULL;
    }
  h->engine = cfg->engine;
  h->store = cfg->store;
  h->webhooks = cfg->webhooks;
  h->svc = cfg->svc;
  h->images = cfg->images;
  snprintf (h->docs_dir, sizeof h->docs_dir, "%s", cfg->docs_dir ? cfg->docs_dir : "docs");
  snprintf (h->state_dir, sizeof h->state_dir, "%s", cfg->state_dir ? cfg->state_dir : "/var/tmp");
  if (e2b_load_secret (h, err) < 0)
    {
      free (h);
      return NULL;
    }
  char kernel[4200];
#ifdef SBXD_SHARE_DIR
  snprintf (kernel, sizeof kernel, "%s/kernel.py", SBXD_SHARE_DIR);
#else
  snprintf (kernel, sizeof kernel, "%s/../share/kernel.py", h->docs_dir);
#endif
  if (sbx_interp_new (h->engine, kernel, &h->interp, err) < 0)
    {
      free (h);
      return NULL;
    }
  h->mhd = MHD_start_daemon (MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                             0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, cfg->addr, MHD_OPTION_NOTIFY_COMPLETED,
                             on_completed, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 0,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned) 1000, MHD_OPTION_LISTENING_ADDRESS_REUSE,
                             (unsigned) 1, MHD_OPTION_END);
  if (h->mhd == NULL)
    {
      sbx_failx (err, EADDRINUSE, "cannot listen (address in use or not available)");
      sbx_interp_free (h->interp);
      free (h);
      return NULL;
    }
  return h;
}

void
sbx_http_stop (struct http_server *h)
{
  MHD_stop_daemon (h->mhd);
  free (h);
}
