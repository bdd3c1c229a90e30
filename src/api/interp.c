/*
 * interp.c - the code interpreter (E2B's port 49999): /execute streaming
 * NDJSON, and the contexts API, over the contexts of src/service/interp.c.
 *
 * An execution's answer is one JSON object a line: the kernel's own lines
 * as they come (results, stdout, stderr, errors, its end_of_execution),
 * {"type":"keepalive"} after silences, and when the execution ends early
 * an {"type":"error"} line of E2B's names and our own end_of_execution.
 * The execution runs in a thread of its own writing into a pipe that
 * libmicrohttpd streams, so a slow client only fills the pipe; when the
 * client goes away the write fails and the service interrupts the cell.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../common/util.h"
#include "../service/interp.h"
#include "api.h"

#define END_JSON "{\"type\":\"end_of_execution\"}"

/* One /execute being answered. */
struct exec_job {
  struct sbx_interp_box *box;
  struct sbx_interp_ctx *ctx;
  struct sbx_interp_exec *exec;
  int fd; /* the response body */
};

/* Write one NDJSON line to the client; <0 once it has gone. */
static int
emit (struct exec_job *job, const char *p, size_t n)
{
  struct iovec iov[2] = { { (void *) p, n }, { (void *) "\n", 1 } };
  size_t total = n + 1;
  while (total)
    {
      ssize_t w = writev (job->fd, iov, 2);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
      total -= (size_t) w;
      for (int i = 0; i < 2 && w > 0; i++)
        {
          size_t k = (size_t) w < iov[i].iov_len ? (size_t) w : iov[i].iov_len;
          iov[i].iov_base = (char *) iov[i].iov_base + k;
          iov[i].iov_len -= k;
          w -= (ssize_t) k;
        }
    }
  return 0;
}

static int
emit_json (struct exec_job *job, json_t *j)
{
  char *s = j ? json_dumps (j, JSON_COMPACT) : NULL;
  json_decref (j);
  int r = s ? emit (job, s, strlen (s)) : 0;
  free (s);
  return r;
}

/* E2B's names for the ways an execution ends early. */
static const char *
failure_name (enum sbx_interp_failure f)
{
  switch (f)
    {
    case SBX_INTERP_NO_KERNEL:
      return "ContextError";
    case SBX_INTERP_KERNEL_DIED:
      return "ContextRestarting";
    case SBX_INTERP_CUT_SHORT:
      break;
    }
  return "UnexpectedEndOfExecution";
}

static int
exec_out (const struct sbx_interp_event *ev, void *ud)
{
  struct exec_job *job = ud;
  switch (ev->kind)
    {
    case SBX_INTERP_LINE:
      return emit (job, ev->data, ev->len);
    case SBX_INTERP_DROPPED:
      return emit_json (job, json_pack ("{s:s, s:s}", "type", "stderr", "text",
                                        "[sbxd: an output of more than 64 MiB was dropped]\n"));
    case SBX_INTERP_KEEPALIVE:
      return emit (job, "{\"type\":\"keepalive\"}", 20);
    case SBX_INTERP_FAILED:
      return emit_json (job, json_pack ("{s:s, s:s, s:s%, s:s}", "type", "error", "name", failure_name (ev->failure),
                                        "value", ev->data, ev->len, "traceback", ""));
    case SBX_INTERP_END:
      return emit (job, END_JSON, strlen (END_JSON));
    }
  return 0;
}

static void
exec_job_free (struct exec_job *job)
{
  if (job->fd >= 0)
    close (job->fd);
  if (job->ctx)
    sbx_interp_ctx_put (job->box, job->ctx);
  if (job->box)
    sbx_interp_box_close (job->box);
  sbx_interp_exec_free (job->exec);
  free (job);
}

static void *
exec_main (void *arg)
{
  struct exec_job *job = arg;
  sbx_interp_exec_run (job->exec, job->box, job->ctx, exec_out, job);
  exec_job_free (job);
  return NULL;
}

/* ---- HTTP ---- */

/* "python" (the default) or 400. */
static bool
check_language (struct MHD_Connection *c, const char *lang, enum MHD_Result *ret)
{
  if (lang == NULL)
    return true;
  char l[SBX_INTERP_LANG_MAX + 1];
  while (*lang == ' ' || *lang == '\t' || *lang == '\n')
    lang++;
  size_t n = strlen (lang);
  while (n && (lang[n - 1] == ' ' || lang[n - 1] == '\t' || lang[n - 1] == '\n'))
    n--;
  if (n == 0)
    return true;
  if (n < sizeof l)
    {
      for (size_t i = 0; i < n; i++)
        l[i] = (char) (lang[i] >= 'A' && lang[i] <= 'Z' ? lang[i] + 32 : lang[i]);
      l[n] = '\0';
      if (strcmp (l, SBX_INTERP_LANGUAGE) == 0)
        return true;
    }
  *ret = send_error (c, 400, "language \"%.*s\" is not supported: the code interpreter runs python only",
                     (int) (n > 64 ? 64 : n), lang);
  return false;
}

/* The sandbox's contexts; NULL after answering. */
static struct sbx_interp_box *
box_open (struct http_server *h, struct MHD_Connection *c, const char *sid, enum MHD_Result *ret)
{
  struct sbx_interp_box *b;
  struct sbx_err err;
  if (sbx_interp_box_open (h->interp, sid, &b, &err) < 0)
    {
      *ret = send_error (c, sbx_err_kind (&err) == SBX_E_UNAVAILABLE ? 502 : 500, "%s", err.msg);
      return NULL;
    }
  return b;
}

static json_t *
ctx_json (const struct sbx_interp_ctx_info *x)
{
  return json_pack ("{s:s, s:s, s:s}", "id", x->id, "language", x->language, "cwd", x->cwd);
}

static enum MHD_Result
execute (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *sid)
{
  enum MHD_Result ret;
  json_t *body = body_object (c, rq, &ret);
  if (body == NULL)
    return ret;
  const char *cid = NULL, *lang = NULL;
  json_t *code = json_object_get (body, "code");
  json_t *env = json_object_get (body, "env_vars");
  if (!json_is_string (code))
    {
      json_decref (body);
      return send_error (c, 400, "code must be a string");
    }
  if (opt_string (c, body, "context_id", &cid, &ret) < 0 || opt_string (c, body, "language", &lang, &ret) < 0)
    {
      json_decref (body);
      return ret;
    }
  if (cid && *cid == '\0')
    cid = NULL;
  if (cid && lang && *lang)
    {
      json_decref (body);
      return send_error (c, 400, "Only one of context_id or language can be provided");
    }
  if (!check_language (c, lang, &ret))
    {
      json_decref (body);
      return ret;
    }
  if (json_is_null (env))
    env = NULL;
  if (env)
    {
      const char *k;
      json_t *v;
      bool ok = json_is_object (env);
      json_object_foreach (env, k, v)
      {
        if (!json_is_string (v))
          ok = false;
      }
      if (!ok)
        {
          json_decref (body);
          return send_error (c, 400, "env_vars must be an object of strings");
        }
    }
  char cidbuf[SBX_INTERP_ID_MAX];
  if (cid && !sbx_interp_valid_ctx_id (cid, strlen (cid)))
    {
      ret = send_error (c, 404, "Context %.64s not found", cid);
      json_decref (body);
      return ret;
    }
  if (cid)
    cid = strcpy (cidbuf, cid); /* the body goes before cid's last use */

  struct exec_job *job = calloc (1, sizeof *job);
  size_t n_env = env ? json_object_size (env) : 0;
  struct sbx_interp_env *vars = env ? calloc (n_env ? n_env : 1, sizeof *vars) : NULL;
  if (job == NULL || (env && vars == NULL))
    {
      free (job);
      free (vars);
      json_decref (body);
      return send_error (c, 500, "cannot start the execution");
    }
  job->fd = -1;
  if (env)
    {
      const char *k;
      json_t *v;
      size_t i = 0;
      json_object_foreach (env, k, v)
      {
        vars[i++] = (struct sbx_interp_env) { k, json_string_value (v), json_string_length (v) };
      }
    }
  struct sbx_err err;
  int r = sbx_interp_exec_new (json_string_value (code), json_string_length (code), vars, n_env, &job->exec, &err);
  free (vars);
  json_decref (body);
  if (r < 0)
    {
      free (job);
      return send_error (c, 500, err.code == ENOMEM ? "out of memory" : "cannot start the execution");
    }

  if ((job->box = box_open (h, c, sid, &ret)) == NULL)
    {
      exec_job_free (job);
      return ret;
    }
  if (sbx_interp_ctx_get (job->box, cid, &job->ctx, &err) < 0)
    {
      exec_job_free (job);
      if (sbx_err_kind (&err) == SBX_E_NOT_FOUND)
        return send_error (c, 404, "%s", err.msg);
      return send_error (c, 500, "cannot make the default context");
    }

  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    {
      exec_job_free (job);
      return send_error (c, 500, "pipe: %s", strerror (errno));
    }
  fcntl (fds[1], F_SETPIPE_SZ, 1 << 20); /* best effort: room for a chart */
  job->fd = fds[1];
  if (!sbx_start_detached (exec_main, job))
    {
      close (fds[0]);
      exec_job_free (job);
      return send_error (c, 500, "cannot start the execution");
    }
  return send_pipe (c, fds[0], "application/x-ndjson", "Cache-Control", "no-cache", NULL);
}

static enum MHD_Result
create_context (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *sid)
{
  enum MHD_Result ret;
  json_t *body = body_object (c, rq, &ret);
  if (body == NULL)
    return ret;
  const char *lang = NULL, *cwd = NULL;
  if (opt_string (c, body, "language", &lang, &ret) < 0 || opt_string (c, body, "cwd", &cwd, &ret) < 0
      || !check_language (c, lang, &ret))
    {
      json_decref (body);
      return ret;
    }
  char dir[SBX_INTERP_CWD_MAX];
  struct sbx_err err;
  snprintf (dir, sizeof dir, "%s", cwd ? cwd : "");
  bool bad = sbx_interp_check_cwd (cwd, &err) < 0;
  json_decref (body);
  if (bad)
    return send_error (c, 400, "%s", err.msg);

  struct sbx_interp_box *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  struct sbx_interp_ctx_info info;
  int r = sbx_interp_ctx_create (b, dir, &info, &err);
  sbx_interp_box_close (b);
  if (r < 0 && err.code == ENOMEM)
    return send_error (c, 500, "out of memory");
  if (r < 0)
    return send_error (c, 500, "Failed to create context: %s", err.msg);
  return send_json (c, 200, ctx_json (&info));
}

static enum MHD_Result
list_contexts (struct http_server *h, struct MHD_Connection *c, const char *sid)
{
  enum MHD_Result ret;
  struct sbx_interp_box *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  cleanup_free struct sbx_interp_ctx_info *v = NULL;
  size_t n;
  struct sbx_err err;
  int r = sbx_interp_ctx_list (b, &v, &n, &err);
  sbx_interp_box_close (b);
  if (r < 0)
    return send_error (c, 500, "%s", err.msg);
  json_t *a = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (a, ctx_json (&v[i]));
  return send_json (c, 200, a);
}

/* DELETE /contexts/ID, or POST /contexts/ID/restart. */
static enum MHD_Result
stop_context (struct http_server *h, struct MHD_Connection *c, const char *sid, const char *cid, bool restart)
{
  enum MHD_Result ret;
  struct sbx_interp_box *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  struct sbx_err err;
  int r = restart ? sbx_interp_ctx_restart (b, cid, &err) : sbx_interp_ctx_delete (b, cid, &err);
  sbx_interp_box_close (b);
  if (r < 0 && sbx_err_kind (&err) == SBX_E_NOT_FOUND)
    return send_error (c, 404, "%s", err.msg);
  if (r < 0)
    return send_error (c, restart ? 500 : 502, "%s context %s: %s", restart ? "Failed to restart" : "Failed to remove",
                       cid, err.msg);
  return send_empty (c, 204);
}

enum MHD_Result
interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                const char *url, const char *id)
{
  bool post = strcmp (method, "POST") == 0;
  if (strcmp (url, "/execute") == 0)
    return post ? execute (h, c, rq, id) : send_error (c, 405, "method not allowed");
  if (strcmp (url, "/contexts") == 0)
    {
      if (post)
        return create_context (h, c, rq, id);
      if (strcmp (method, "GET") == 0)
        return list_contexts (h, c, id);
      return send_error (c, 405, "method not allowed");
    }
  if (strncmp (url, "/contexts/", 10) == 0)
    {
      const char *rest = url + 10, *slash = strchr (rest, '/');
      size_t n = slash ? (size_t) (slash - rest) : strlen (rest);
      char cid[SBX_INTERP_ID_MAX];
      if (!sbx_interp_valid_ctx_id (rest, n))
        return send_error (c, 404, "Context not found");
      snprintf (cid, sizeof cid, "%.*s", (int) n, rest);
      if (slash == NULL)
        return strcmp (method, "DELETE") == 0 ? stop_context (h, c, id, cid, false)
                                              : send_error (c, 405, "method not allowed");
      if (strcmp (slash, "/restart") == 0)
        return post ? stop_context (h, c, id, cid, true) : send_error (c, 405, "method not allowed");
    }
  return send_error (c, 404, "not found");
}
