/*
 * e2b_envd.c - the E2B dialect of a sandbox's own agent: what the
 * unmodified E2B SDKs send to envd, as described in shared/E2B-WIRE.md.
 * (E2B's control plane is sandbase.c's /sandboxes and e2b.c.)
 *
 * envd (requests with an E2b-Sandbox-Id header, checked against the
 * sandbox's X-Access-Token): the Connect protocol with JSON for
 * process.Process and filesystem.Filesystem, GET/POST /files and
 * GET /health.  A sandbox's access token is an HMAC of its id under a
 * secret kept in the state directory, so it needs no storage and survives
 * restarts.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/util.h"
#include "api.h"
#include "../common/log.h"
#include "../service/encode.h"

#define CONNECT_MAX_MESSAGE (4u << 20)

/* ---- access tokens ---- */

int
e2b_load_secret (struct http_server *h, struct sbx_err *err)
{
  char path[4200];
  if (sbx_path (path, sizeof path, "%s/envd.secret", h->state_dir) < 0)
    return sbx_fail (err, errno, "envd secret path");
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0)
    {
      ssize_t n = sbx_read_full (fd, h->envd_secret, sizeof h->envd_secret);
      close (fd);
      if (n == (ssize_t) sizeof h->envd_secret)
        return 0;
    }
  if (sbx_random_bytes (h->envd_secret, sizeof h->envd_secret) < 0)
    return sbx_fail (err, errno, "random");
  char tmp[4300];
  snprintf (tmp, sizeof tmp, "%s.tmp", path);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || sbx_write_full (fd, h->envd_secret, sizeof h->envd_secret) < 0 || close (fd) < 0
      || rename (tmp, path) < 0)
    return sbx_fail (err, errno, "write %s", path);
  return 0;
}

void
e2b_access_token (struct http_server *h, const char *id, char out[65])
{
  unsigned char md[32];
  unsigned int len = 0;
  HMAC (EVP_sha256 (), h->envd_secret, sizeof h->envd_secret, (const unsigned char *) id, strlen (id), md, &len);
  for (unsigned i = 0; i < 32; i++)
    snprintf (out + 2 * i, 3, "%02x", md[i]);
}

/* ---- envd: Connect protocol ---- */

static const char *
connect_code (int status)
{
  switch (status)
    {
    case 400:
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 409:
      return "already_exists";
    case 412:
      return "failed_precondition";
    case 429:
      return "resource_exhausted";
    case 501:
      return "unimplemented";
    case 503:
      return "unavailable";
    case 504:
      return "deadline_exceeded";
    default:
      return "internal";
    }
}

static enum MHD_Result
connect_error (struct MHD_Connection *c, unsigned status, const char *msg)
{
  return send_json (c, status, json_pack ("{s:s, s:s}", "code", connect_code (status), "message", msg));
}

/* The HTTP status of a core error, for envd answers. */
static unsigned
status_of (const struct sbx_err *err)
{
  static const unsigned status[SBX_E_INTERNAL + 1]
      = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,  [SBX_E_NOT_FOUND] = 404,  [SBX_E_CONFLICT] = 409,
          [SBX_E_PAUSED] = 503,    [SBX_E_STOPPED] = 404,  [SBX_E_LIMIT] = 429,      [SBX_E_FORBIDDEN] = 403,
          [SBX_E_TOO_LARGE] = 400, [SBX_E_NO_SPACE] = 507, [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 };
  return status[sbx_err_kind (err)];
}

/* The user of an envd call: "Authorization: Basic base64(user:)", else the
   template's default. */
static void
envd_user (struct MHD_Connection *c, char *out, size_t n)
{
  out[0] = '\0';
  const char *auth = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Authorization");
  if (auth == NULL || strncasecmp (auth, "Basic ", 6) != 0)
    return;
  size_t len;
  uint8_t *dec = sbx_b64_decode (auth + 6, &len);
  if (dec == NULL)
    return;
  size_t k = 0;
  while (k < len && dec[k] != ':' && k + 1 < n)
    k++;
  memcpy (out, dec, k);
  out[k] = '\0';
  free (dec);
}

/* A symlink's target as an absolute path, as E2B's envd gives it: a
   relative TARGET is taken from the directory of the link at PATH, and
   "." and ".." are resolved by name (the sandbox's other symlinks are not
   followed). */
static void
absolute_target (const char *path, const char *target, char *out, size_t n)
{
  char buf[8200];
  if (target[0] == '/')
    snprintf (buf, sizeof buf, "%s", target);
  else
    {
      const char *slash = path ? strrchr (path, '/') : NULL;
      int dl = slash ? (int) (slash - path) : 0;
      snprintf (buf, sizeof buf, "%.*s/%s", dl, path ? path : "", target);
    }
  /* normalise: components one by one onto OUT */
  size_t len = 0;
  out[0] = '\0';
  char *save = NULL;
  for (char *c = strtok_r (buf, "/", &save); c; c = strtok_r (NULL, "/", &save))
    {
      if (strcmp (c, ".") == 0)
        continue;
      if (strcmp (c, "..") == 0)
        {
          char *up = strrchr (out, '/');
          len = up ? (size_t) (up - out) : 0;
          out[len] = '\0';
          continue;
        }
      size_t cl = strlen (c);
      if (len + 1 + cl + 1 > n)
        break;
      out[len++] = '/';
      memcpy (out + len, c, cl + 1);
      len += cl;
    }
  if (len == 0 && n > 1)
    snprintf (out, n, "/");
}

static json_t *
envd_entry (const struct sbx_entry *en)
{
  static const char *const types[] = { "FILE_TYPE_UNSPECIFIED", "FILE_TYPE_FILE", "FILE_TYPE_DIRECTORY",
                                       "FILE_TYPE_SYMLINK", "FILE_TYPE_UNSPECIFIED" };
  char perms[11] = "----------";
  uint32_t m = en->mode;
  perms[0] = en->type == SBX_FT_DIR ? 'd' : en->type == SBX_FT_SYMLINK ? 'l' : '-';
  static const char rwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; i++)
    if (m & (1u << (8 - i)))
      perms[1 + i] = rwx[i];
  char mtime[40], size[32];
  sbx_rfc3339 ((int64_t) (en->mtime_ns / 1000000ull), mtime, sizeof mtime);
  snprintf (size, sizeof size, "%llu", (unsigned long long) en->size);
  json_t *j = json_pack ("{s:o, s:s, s:o, s:s, s:i, s:s, s:s?, s:s?, s:s}", "name",
                         text_json (en->name, en->name ? strlen (en->name) : 0), "type",
                         types[en->type <= SBX_FT_OTHER ? en->type : 0], "path",
                         text_json (en->path, en->path ? strlen (en->path) : 0), "size", size, "mode",
                         (int) (m & 07777), "permissions", perms, "owner", en->owner, "group", en->group,
                         "modifiedTime", mtime);
  if (en->link)
    {
      char target[8200];
      absolute_target (en->path, en->link, target, sizeof target);
      json_object_set_new (j, "symlinkTarget", text_json (target, strlen (target)));
    }
  if (en->n_meta)
    {
      json_t *meta = json_object ();
      for (size_t i = 0; i < en->n_meta; i++)
        json_object_set_new (meta, en->meta[i].key, text_json (en->meta[i].value, strlen (en->meta[i].value)));
      json_object_set_new (j, "metadata", meta);
    }
  return j;
}

static const char *
json_str (json_t *o, const char *key)
{
  json_t *v = json_object_get (o, key);
  return json_is_string (v) ? json_string_value (v) : NULL;
}

static enum MHD_Result
send_entry_message (struct MHD_Connection *c, const char *key, const struct sbx_entry *en)
{
  return send_json (c, 200, json_pack ("{s:o}", key, envd_entry (en)));
}

static enum MHD_Result
filesystem_unary (struct http_server *h, struct MHD_Connection *c, const char *id, const char *method, json_t *b,
                  const char *user)
{
  struct sbx_err err;
  struct sbx_entry en;
  const char *path = json_str (b, "path");
  if (strcmp (method, "Move") == 0)
    {
      const char *from = json_str (b, "source"), *to = json_str (b, "destination");
      if (from == NULL || to == NULL)
        return connect_error (c, 400, "source and destination are required");
      if (sbx_file_move (h->engine, id, from, to, user, &en, &err) < 0)
        return connect_error (c, status_of (&err), err.msg);
      enum MHD_Result r = send_entry_message (c, "entry", &en);
      sbx_entry_free (&en);
      return r;
    }
  if (path == NULL)
    return connect_error (c, 400, "path is required");
  if (strcmp (method, "Stat") == 0 || strcmp (method, "MakeDir") == 0)
    {
      int r = strcmp (method, "Stat") == 0 ? sbx_file_stat (h->engine, id, path, user, &en, &err)
                                            : sbx_file_mkdir (h->engine, id, path, user, SBX_FILE_F_PARENTS, &en, &err);
      if (r < 0)
        return connect_error (c, status_of (&err), err.msg);
      enum MHD_Result ret = send_entry_message (c, "entry", &en);
      sbx_entry_free (&en);
      return ret;
    }
  if (strcmp (method, "Remove") == 0)
    {
      /* a missing file is no error: E2B's envd removes with RemoveAll */
      if (sbx_file_remove (h->engine, id, path, user, &err) < 0 && err.code != ENOENT)
        return connect_error (c, status_of (&err), err.msg);
      return send_json (c, 200, json_object ());
    }
  if (strcmp (method, "ListDir") == 0)
    {
      json_int_t depth = json_integer_value (json_object_get (b, "depth"));
      struct sbx_entry st;
      if (sbx_file_stat (h->engine, id, path, user, &st, &err) < 0)
        return connect_error (c, status_of (&err), err.msg);
      bool dir = st.type == SBX_FT_DIR;
      sbx_entry_free (&st);
      if (!dir)
        return connect_error (c, 400, "path is not a directory");
      struct sbx_entry *v;
      size_t n;
      if (sbx_file_list (h->engine, id, path, user, depth > 0 ? (uint32_t) depth : 1, &v, &n, &err) < 0)
        return connect_error (c, status_of (&err), err.msg);
      json_t *arr = json_array ();
      for (size_t i = 0; i < n; i++)
        json_array_append_new (arr, envd_entry (&v[i]));
      sbx_entries_free (v, n);
      return send_json (c, 200, json_pack ("{s:o}", "entries", arr));
    }
  return connect_error (c, 501, "method not implemented");
}

static const struct
{
  const char *name;
  int sig;
} signal_names[] = { { "SIGNAL_SIGKILL", SIGKILL }, { "SIGNAL_SIGTERM", SIGTERM }, { "SIGNAL_SIGINT", SIGINT },
                     { "SIGNAL_SIGHUP", SIGHUP } };

/* The pid in {"process": {"pid": N}} (or {"process": {"selector": ...}}). */
static uint32_t
selector_pid (json_t *b)
{
  json_t *p = json_object_get (b, "process");
  json_t *pid = json_object_get (p, "pid");
  if (pid == NULL)
    pid = json_object_get (json_object_get (p, "selector"), "pid");
  if (json_is_string (pid))
    return (uint32_t) strtoul (json_string_value (pid), NULL, 10);
  return (uint32_t) json_integer_value (pid);
}

/* The tag in {"process": {"tag": T}}: the pid of the process with it. */
static uint32_t
selector_pid_or_tag (struct http_server *h, const char *id, json_t *b)
{
  uint32_t pid = selector_pid (b);
  const char *tag = json_str (json_object_get (b, "process"), "tag");
  if (pid || tag == NULL)
    return pid;
  struct sbx_proc_info *ps;
  size_t n;
  struct sbx_err err;
  if (sbx_proc_list (h->engine, id, &ps, &n, &err) < 0)
    return 0;
  for (size_t i = 0; i < n && !pid; i++)
    if (ps[i].tag && strcmp (ps[i].tag, tag) == 0)
      pid = ps[i].pid;
  sbx_proc_list_free (ps, n);
  return pid;
}

static enum MHD_Result
process_unary (struct http_server *h, struct MHD_Connection *c, const char *id, const char *method, json_t *b)
{
  struct sbx_err err;
  if (strcmp (method, "List") == 0)
    {
      struct sbx_proc_info *ps;
      size_t n;
      if (sbx_proc_list (h->engine, id, &ps, &n, &err) < 0)
        return connect_error (c, status_of (&err), err.msg);
      json_t *arr = json_array ();
      for (size_t i = 0; i < n; i++)
        {
          json_t *args = json_array ();
          for (char **a = ps[i].argv + (ps[i].argv[0] ? 1 : 0); *a; a++)
            json_array_append_new (args, text_json (*a, strlen (*a)));
          json_t *cfg = json_pack ("{s:s, s:o, s:o}", "cmd", ps[i].argv[0] ? ps[i].argv[0] : "", "args", args, "envs",
                                   json_object ());
          if (ps[i].cwd)
            json_object_set_new (cfg, "cwd", json_string (ps[i].cwd));
          json_t *p = json_pack ("{s:o, s:i}", "config", cfg, "pid", (int) ps[i].pid);
          if (ps[i].tag)
            json_object_set_new (p, "tag", json_string (ps[i].tag));
          json_array_append_new (arr, p);
        }
      sbx_proc_list_free (ps, n);
      return send_json (c, 200, json_pack ("{s:o}", "processes", arr));
    }
  uint32_t pid = selector_pid_or_tag (h, id, b);
  if (pid == 0)
    return connect_error (c, 400, "a process pid is required");
  int r;
  if (strcmp (method, "SendInput") == 0)
    {
      json_t *in = json_object_get (b, "input");
      const char *data = json_str (in, "stdin");
      if (data == NULL)
        data = json_str (in, "pty");
      size_t len = 0;
      uint8_t *bytes = sbx_b64_decode (data ? data : "", &len);
      if (bytes == NULL)
        return connect_error (c, 400, "input must be base64");
      r = len ? sbx_proc_input (h->engine, id, pid, bytes, len, &err) : 0;
      free (bytes);
    }
  else if (strcmp (method, "SendSignal") == 0)
    {
      const char *name = json_str (b, "signal");
      int sig = 0;
      for (size_t i = 0; name && i < sizeof signal_names / sizeof signal_names[0]; i++)
        if (strcmp (name, signal_names[i].name) == 0)
          sig = signal_names[i].sig;
      if (sig == 0)
        return connect_error (c, 400, "unknown signal");
      r = sbx_proc_signal (h->engine, id, pid, sig, &err);
    }
  else if (strcmp (method, "CloseStdin") == 0)
    r = sbx_proc_close_stdin (h->engine, id, pid, &err);
  else if (strcmp (method, "Update") == 0)
    {
      json_t *size = json_object_get (json_object_get (b, "pty"), "size");
      r = sbx_proc_resize (h->engine, id, pid, (uint32_t) json_integer_value (json_object_get (size, "rows")),
                           (uint32_t) json_integer_value (json_object_get (size, "cols")), &err);
    }
  else
    return connect_error (c, 501, "method not implemented");
  if (r < 0)
    return connect_error (c, status_of (&err), err.msg);
  return send_json (c, 200, json_object ());
}

/* ---- streaming: Process.Start and Process.Connect ---- */

struct envd_stream {
  struct sbx_engine *engine;
  struct sbx_service *svc;
  char id[SBX_ID_MAX];
  char user[64];
  json_t *req; /* the request message */
  bool start;  /* Start (else Connect) */
  uint32_t pid;
  uint32_t timeout_ms, keepalive_ms;
  int fd;
};

/* One Connect envelope: flags, big-endian length, JSON. */
static int
write_envelope (int fd, uint8_t flags, json_t *j)
{
  char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  if (text == NULL)
    return -1;
  size_t n = strlen (text);
  uint8_t hdr[5] = { flags, (uint8_t) (n >> 24), (uint8_t) (n >> 16), (uint8_t) (n >> 8), (uint8_t) n };
  int r = sbx_write_full (fd, hdr, 5) < 0 || sbx_write_full (fd, text, n) < 0 ? -1 : 0;
  free (text);
  return r;
}

static int
envd_event (const struct sbx_proc_event *ev, void *ud)
{
  struct envd_stream *s = ud;
  json_t *e = NULL;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      e = json_pack ("{s:{s:i}}", "start", "pid", (int) ev->pid);
      break;
    case SBX_PROC_STDOUT:
    case SBX_PROC_STDERR:
    case SBX_PROC_PTY:
      {
        char *b64 = sbx_b64_encode (ev->data, ev->len);
        e = json_pack ("{s:{s:s}}", "data",
                       ev->kind == SBX_PROC_STDOUT ? "stdout" : ev->kind == SBX_PROC_STDERR ? "stderr" : "pty",
                       b64 ? b64 : "");
        free (b64);
        break;
      }
    case SBX_PROC_KEEPALIVE:
      e = json_pack ("{s:{}}", "keepalive");
      break;
    case SBX_PROC_END:
      {
        char status[64];
        int code = ev->signal ? -1 : ev->exit_code;
        if (ev->signal)
          snprintf (status, sizeof status, "signal: %s", strsignal (ev->signal));
        else
          snprintf (status, sizeof status, "exit status %d", ev->exit_code);
        e = json_pack ("{s:{s:i, s:b, s:s}}", "end", "exitCode", code, "exited", ev->signal == 0, "status", status);
        if (ev->timed_out)
          json_object_set_new (json_object_get (e, "end"), "error", json_string ("process timed out"));
        break;
      }
    }
  if (e == NULL)
    return 0;
  return write_envelope (s->fd, 0, json_pack ("{s:o}", "event", e));
}

/* The end of a stream: {} or its error.  A stream cut short because its
   sandbox was killed (or timed out) meanwhile ends with "unavailable", as
   the E2B SDKs then raise their TimeoutError ("the sandbox was killed or
   reached its end of life while the request was in flight"), which is what
   E2B's SDK users catch when a sandbox dies under a stream. */
static void
end_stream (int fd, struct sbx_engine *engine, const char *id, int r, const struct sbx_err *err)
{
  if (r == 0)
    {
      write_envelope (fd, 2, json_object ());
      return;
    }
  unsigned status = status_of (err);
  char msg[SBX_ERR_MSG_MAX + 200];
  snprintf (msg, sizeof msg, "%s", err->msg);
  /* the agent hangs up as the kill begins, before the sandbox is marked
     stopped: give the kill a moment (at most 5 s) to finish */
  bool gone = false;
  for (int tries = 0; tries < 100 && !gone; tries++)
    {
      struct sbx_info info;
      struct sbx_err ierr;
      if (sbx_get_info (engine, id, &info, &ierr) < 0)
        gone = true;
      else
        {
          gone = info.state == SBX_STOPPED || info.state == SBX_ERROR;
          sbx_info_free (&info);
        }
      if (gone || sbx_err_kind (err) != SBX_E_STOPPED)
        break;
      usleep (50000);
    }
  if (gone)
    {
      status = 503;
      snprintf (msg, sizeof msg, "sandbox %s was killed while the request was in flight (%s)", id, err->msg);
    }
  write_envelope (fd, 2, json_pack ("{s:{s:s, s:s}}", "error", "code", connect_code (status), "message", msg));
}

static void *
envd_stream_main (void *arg)
{
  struct envd_stream *s = arg;
  struct sbx_err err;
  int r;
  if (s->start)
    {
      json_t *p = json_object_get (s->req, "process");
      json_t *args = json_object_get (p, "args");
      json_t *envs = json_object_get (p, "envs");
      size_t na = json_is_array (args) ? json_array_size (args) : 0;
      char **argv = calloc (na + 2, sizeof *argv);
      char **env = calloc (json_object_size (envs) + 1, sizeof *env);
      argv[0] = (char *) json_str (p, "cmd");
      for (size_t i = 0; i < na; i++)
        argv[i + 1] = (char *) json_string_value (json_array_get (args, i));
      size_t k = 0;
      const char *key;
      json_t *val;
      json_object_foreach (envs, key, val)
      {
        if (json_is_string (val) && *key && !strchr (key, '=') && asprintf (&env[k], "%s=%s", key, json_string_value (val)) >= 0)
          k++;
      }
      json_t *size = json_object_get (json_object_get (s->req, "pty"), "size");
      struct sbx_exec_opts o = { .argv = (const char *const *) argv,
                                 .env = (const char *const *) env,
                                 .cwd = json_str (p, "cwd"),
                                 .user = *s->user ? s->user : NULL,
                                 .tag = json_str (s->req, "tag"),
                                 .pty = size != NULL,
                                 .rows = (uint32_t) json_integer_value (json_object_get (size, "rows")),
                                 .cols = (uint32_t) json_integer_value (json_object_get (size, "cols")),
                                 .stdin_open = json_is_true (json_object_get (s->req, "stdin")),
                                 .timeout_ms = s->timeout_ms,
                                 /* envd's timeout (exec.CommandContext) kills the
                                    command's own process: a browser that
                                    `xdg-open` started lives on */
                                 .timeout_command_only = true,
                                 .keepalive_ms = s->keepalive_ms };
      r = argv[0] ? sbx_service_exec (s->svc, s->id, &o, envd_event, s, &err) : sbx_failx (&err, EINVAL, "cmd is required");
      for (size_t i = 0; i < k; i++)
        free (env[i]);
      free (env);
      free (argv);
    }
  else
    r = sbx_attach (s->engine, s->id, s->pid, s->keepalive_ms, envd_event, s, &err);
  end_stream (s->fd, s->engine, s->id, r < 0 ? -1 : 0, &err);
  close (s->fd);
  json_decref (s->req);
  free (s);
  return NULL;
}

/* Parse a Connect streaming request body: one enveloped JSON message. */
static json_t *
unwrap_envelope (const char *body, size_t len)
{
  if (len < 5)
    return NULL;
  const uint8_t *b = (const uint8_t *) body;
  uint32_t n = (uint32_t) b[1] << 24 | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 8 | b[4];
  if (b[0] != 0 || n > len - 5)
    return NULL; /* compressed or truncated */
  return json_loadb (body + 5, n, 0, NULL);
}

static enum MHD_Result
process_stream (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id, bool start,
                const char *user)
{
  json_t *b = unwrap_envelope (rq->body, rq->len);
  if (b == NULL || !json_is_object (b))
    {
      json_decref (b);
      return connect_error (c, 400, "malformed Connect envelope");
    }
  uint32_t pid = start ? 0 : selector_pid_or_tag (h, id, b);
  if (!start && pid == 0)
    {
      json_decref (b);
      return connect_error (c, 400, "a process pid is required");
    }
  int fds[2];
  struct envd_stream *s = calloc (1, sizeof *s);
  if (s == NULL || pipe2 (fds, O_CLOEXEC) < 0)
    {
      free (s);
      json_decref (b);
      return connect_error (c, 500, "cannot start stream");
    }
  s->engine = h->engine;
  s->svc = h->svc;
  snprintf (s->id, sizeof s->id, "%s", id);
  snprintf (s->user, sizeof s->user, "%s", user);
  s->req = b;
  s->start = start;
  s->pid = pid;
  const char *t = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Connect-Timeout-Ms");
  s->timeout_ms = start && t ? (uint32_t) strtoul (t, NULL, 10) : 0;
  /* keepalives every few seconds keep proxies and the SDK's idle timers happy */
  s->keepalive_ms = 5000;
  s->fd = fds[1];
  if (!sbx_start_detached (envd_stream_main, s))
    {
      close (fds[0]);
      close (fds[1]);
      json_decref (b);
      free (s);
      return connect_error (c, 500, "cannot start stream");
    }
  return send_pipe (c, fds[0], "application/connect+json", NULL);
}

/* ---- filesystem watching ---- */

static const char *const fs_event_names[]
    = { "EVENT_TYPE_UNSPECIFIED", "EVENT_TYPE_CREATE", "EVENT_TYPE_WRITE", "EVENT_TYPE_REMOVE",
        "EVENT_TYPE_RENAME",      "EVENT_TYPE_CHMOD" };

static json_t *
fs_event_json (int type, const char *name)
{
  return json_pack ("{s:o, s:s}", "name", text_json (name, strlen (name)), "type",
                    fs_event_names[type >= 1 && type <= 5 ? type : 0]);
}

/* WatchDir: a stream of envelopes fed by sbx_watch_run from a worker
   thread.  The watch is armed before the stream's start envelope, which
   the SDK waits for: a change made once watchDir returned is reported. */
struct watch_stream {
  struct sbx_engine *engine;
  char id[SBX_ID_MAX];
  struct sbx_watcher *watcher;
  int fd;
};

static int
watch_stream_event (int type, const char *name, void *ud)
{
  struct watch_stream *w = ud;
  /* WatchDirResponse's oneof has no wrapper field in JSON */
  json_t *e = type == 0 ? json_pack ("{s:{}}", "keepalive")
                        : json_pack ("{s:o}", "filesystem", fs_event_json (type, name));
  return write_envelope (w->fd, 0, e);
}

static void *
watch_stream_main (void *arg)
{
  struct watch_stream *w = arg;
  struct sbx_err err;
  int r = sbx_watch_run (w->watcher, 5000, watch_stream_event, w, &err);
  end_stream (w->fd, w->engine, w->id, r < 0 ? -1 : 0, &err);
  close (w->fd);
  free (w);
  return NULL;
}

/* Stat PATH and answer unless it is a directory. */
static bool
is_dir_or_answer (struct http_server *h, struct MHD_Connection *c, const char *id, const char *path, const char *user,
                  enum MHD_Result *ret)
{
  struct sbx_entry st;
  struct sbx_err err;
  if (sbx_file_stat (h->engine, id, path, *user ? user : NULL, &st, &err) < 0)
    {
      *ret = connect_error (c, status_of (&err), err.msg);
      return false;
    }
  bool dir = st.type == SBX_FT_DIR;
  sbx_entry_free (&st);
  if (!dir)
    *ret = connect_error (c, 400, "path is not a directory");
  return dir;
}

/* A stream that ends at once with an error (STATUS's Connect code, MSG):
   how a Connect server answers a streaming call that fails before its
   first message, so the client reads the error from the stream. */
static enum MHD_Result
stream_error (struct MHD_Connection *c, unsigned status, const char *msg)
{
  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return connect_error (c, status, msg);
  write_envelope (fds[1], 2, json_pack ("{s:{s:s, s:s}}", "error", "code", connect_code (status), "message", msg));
  close (fds[1]);
  return send_pipe (c, fds[0], "application/connect+json", NULL);
}

static enum MHD_Result
watch_dir_stream (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id,
                  const char *user)
{
  json_t *b = unwrap_envelope (rq->body, rq->len);
  const char *path = b ? json_str (b, "path") : NULL;
  if (path == NULL)
    {
      json_decref (b);
      return connect_error (c, 400, "path is required");
    }
  /* a missing directory (or not a directory) ends the stream with the
     error, as E2B's envd fails the call before its start event */
  struct sbx_entry st;
  struct sbx_err err;
  if (sbx_file_stat (h->engine, id, path, *user ? user : NULL, &st, &err) < 0)
    {
      json_decref (b);
      return stream_error (c, status_of (&err), err.msg);
    }
  bool dir = st.type == SBX_FT_DIR;
  sbx_entry_free (&st);
  if (!dir)
    {
      char msg[4200];
      snprintf (msg, sizeof msg, "path %s is not a directory", path);
      json_decref (b);
      return stream_error (c, 400, msg);
    }
  struct sbx_watcher *watcher;
  int armed = sbx_watch_open (h->engine, id, path, *user ? user : NULL, json_is_true (json_object_get (b, "recursive")),
                              &watcher, &err);
  json_decref (b);
  if (armed < 0)
    return stream_error (c, status_of (&err), err.msg);
  int fds[2];
  struct watch_stream *w = calloc (1, sizeof *w);
  if (w == NULL || pipe2 (fds, O_CLOEXEC) < 0)
    {
      free (w);
      sbx_watch_close (watcher);
      return connect_error (c, 500, "cannot start watch");
    }
  w->engine = h->engine;
  snprintf (w->id, sizeof w->id, "%s", id);
  w->watcher = watcher;
  w->fd = fds[1];
  write_envelope (w->fd, 0, json_pack ("{s:{}}", "start"));
  if (!sbx_start_detached (watch_stream_main, w))
    {
      close (fds[0]);
      close (fds[1]);
      sbx_watch_close (watcher);
      free (w);
      return connect_error (c, 500, "cannot start watch");
    }
  return send_pipe (c, fds[0], "application/connect+json", NULL);
}

/* CreateWatcher / GetWatcherEvents / RemoveWatcher: a watch kept by the
   daemon, whose events are collected until fetched: at most
   WATCHER_EVENTS_MAX of them and WATCHER_BYTES_MAX of names.  A queue
   that overflows is dropped and the watch ends: GetWatcherEvents then
   answers with that error (resource_exhausted) instead of events, as it
   does, once the events queued before are fetched, when the watch ended
   for another reason (the sandbox stopped, its agent failed). */
#define WATCHER_EVENTS_MAX 10000
#define WATCHER_BYTES_MAX (4u << 20)
#define WATCHER_EVENT_COST 64 /* an event's JSON beside its name */

struct watcher {
  char wid[32];
  char sandbox[SBX_ID_MAX];
  json_t *events;
  size_t bytes;                 /* of the queued events */
  bool stop, done;
  unsigned error_status;        /* the watch ended with this error, or 0 */
  char error[SBX_ERR_MSG_MAX];
  struct watcher *next;
};

static pthread_mutex_t watchers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct watcher *watchers;

struct watcher_job {
  struct sbx_watcher *watcher;
  struct watcher *w;
};

static int
watcher_event (int type, const char *name, void *ud)
{
  struct watcher_job *j = ud;
  struct watcher *w = j->w;
  pthread_mutex_lock (&watchers_lock);
  bool stop = w->stop;
  size_t cost = strlen (name) + WATCHER_EVENT_COST;
  if (!stop && type && (json_array_size (w->events) >= WATCHER_EVENTS_MAX || w->bytes + cost > WATCHER_BYTES_MAX))
    {
      json_array_clear (w->events);
      w->bytes = 0;
      w->error_status = 429;
      snprintf (w->error, sizeof w->error,
                "watcher %s overflowed: more than %u events or %u MiB were not fetched, events were lost", w->wid,
                WATCHER_EVENTS_MAX, WATCHER_BYTES_MAX >> 20);
      stop = true;
    }
  else if (!stop && type)
    {
      json_array_append_new (w->events, fs_event_json (type, name));
      w->bytes += cost;
    }
  pthread_mutex_unlock (&watchers_lock);
  return stop ? -1 : 0;
}

static void *
watcher_main (void *arg)
{
  struct watcher_job *j = arg;
  struct sbx_err err;
  int r = sbx_watch_run (j->watcher, 200, watcher_event, j, &err);
  pthread_mutex_lock (&watchers_lock);
  j->w->done = true;
  if (r < 0 && j->w->error_status == 0)
    {
      j->w->error_status = status_of (&err);
      snprintf (j->w->error, sizeof j->w->error, "watcher %s ended: %.400s", j->w->wid, err.msg);
    }
  if (j->w->stop)
    {
      /* removed meanwhile: nobody else holds it */
      json_decref (j->w->events);
      free (j->w);
    }
  pthread_mutex_unlock (&watchers_lock);
  free (j);
  return NULL;
}

static enum MHD_Result
watcher_call (struct http_server *h, struct MHD_Connection *c, const char *id, const char *method, json_t *b,
              const char *user)
{
  enum MHD_Result ret;
  if (strcmp (method, "CreateWatcher") == 0)
    {
      const char *path = json_str (b, "path");
      if (path == NULL)
        return connect_error (c, 400, "path is required");
      if (!is_dir_or_answer (h, c, id, path, user, &ret))
        return ret;
      struct sbx_err err;
      struct sbx_watcher *watcher;
      if (sbx_watch_open (h->engine, id, path, *user ? user : NULL, json_is_true (json_object_get (b, "recursive")),
                          &watcher, &err)
          < 0)
        return connect_error (c, status_of (&err), err.msg);
      struct watcher *w = calloc (1, sizeof *w);
      struct watcher_job *j = calloc (1, sizeof *j);
      if (w == NULL || j == NULL)
        {
          free (w);
          free (j);
          sbx_watch_close (watcher);
          return connect_error (c, 500, "out of memory");
        }
      unsigned char rnd[8];
      sbx_random_bytes (rnd, sizeof rnd);
      snprintf (w->wid, sizeof w->wid, "w_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
                rnd[5], rnd[6], rnd[7]);
      snprintf (w->sandbox, sizeof w->sandbox, "%s", id);
      w->events = json_array ();
      char wid[sizeof w->wid];
      memcpy (wid, w->wid, sizeof wid);
      j->watcher = watcher;
      j->w = w;
      /* listed before the thread runs, which may free it once removed */
      pthread_mutex_lock (&watchers_lock);
      w->next = watchers;
      watchers = w;
      pthread_mutex_unlock (&watchers_lock);
      if (!sbx_start_detached (watcher_main, j))
        {
          pthread_mutex_lock (&watchers_lock);
          struct watcher **pp = &watchers;
          while (*pp != w)
            pp = &(*pp)->next;
          *pp = w->next;
          pthread_mutex_unlock (&watchers_lock);
          sbx_watch_close (watcher);
          json_decref (w->events);
          free (w);
          free (j);
          return connect_error (c, 500, "cannot start watch");
        }
      /* the watch was armed before sbx_watch_open returned */
      return send_json (c, 200, json_pack ("{s:s}", "watcherId", wid));
    }
  const char *wid = json_str (b, "watcherId");
  if (wid == NULL)
    return connect_error (c, 400, "watcherId is required");
  pthread_mutex_lock (&watchers_lock);
  struct watcher **pp = &watchers;
  while (*pp && (strcmp ((*pp)->wid, wid) != 0 || strcmp ((*pp)->sandbox, id) != 0))
    pp = &(*pp)->next;
  struct watcher *w = *pp;
  if (w == NULL)
    {
      pthread_mutex_unlock (&watchers_lock);
      return connect_error (c, 404, "watcher not found");
    }
  json_t *answer;
  if (strcmp (method, "GetWatcherEvents") == 0)
    {
      if (json_array_size (w->events) == 0 && w->error_status)
        {
          unsigned status = w->error_status;
          char msg[SBX_ERR_MSG_MAX];
          snprintf (msg, sizeof msg, "%s", w->error);
          pthread_mutex_unlock (&watchers_lock);
          return connect_error (c, status, msg);
        }
      answer = json_pack ("{s:o}", "events", w->events);
      w->events = json_array ();
      w->bytes = 0;
    }
  else
    {
      *pp = w->next;
      w->stop = true;
      if (w->done)
        {
          json_decref (w->events);
          free (w);
        }
      answer = json_object ();
    }
  pthread_mutex_unlock (&watchers_lock);
  return send_json (c, 200, answer);
}


/* ---- signed file URLs ---- */

/* E2B's signature: "v1_" + base64(sha256("path:op:user:token[:exp]"))
   without padding. */
static void
file_signature (const char *path, const char *op, const char *user, const char *token, const char *exp, char *out,
                size_t n)
{
  char raw[8400];
  if (exp && *exp)
    snprintf (raw, sizeof raw, "%s:%s:%s:%s:%s", path, op, user ? user : "", token, exp);
  else
    snprintf (raw, sizeof raw, "%s:%s:%s:%s", path, op, user ? user : "", token);
  char b64[48]; /* 43 characters for 32 bytes */
  sbx_sha256_b64 (raw, strlen (raw), "", 0, b64, sizeof b64);
  snprintf (out, n, "v1_%s", b64);
}

int
e2b_signed_file (struct http_server *h, struct MHD_Connection *c, const char *method, const char *url,
                 char id[SBX_ID_MAX], enum MHD_Result *ret)
{
  const char *sig = query (c, "signature");
  const char *path = query (c, "path");
  if (sig == NULL || strcmp (url, "/files") != 0)
    return 0;
  const char *op = strcmp (method, "GET") == 0 ? "read" : strcmp (method, "POST") == 0 ? "write" : NULL;
  if (op == NULL || path == NULL)
    return 0;
  const char *exp = query (c, "signature_expiration");
  /* the URL names no sandbox: find the one whose token signed it */
  struct sbx_info *infos;
  size_t n;
  struct sbx_err err;
  if (sbx_list (h->engine, &infos, &n, &err) < 0)
    {
      *ret = send_fail (c, &err);
      return -1;
    }
  bool found = false;
  for (size_t i = 0; i < n && !found; i++)
    {
      if (infos[i].state != SBX_RUNNING)
        continue;
      char token[65], want[64];
      e2b_access_token (h, infos[i].id, token);
      file_signature (path, op, query (c, "username"), token, exp, want, sizeof want);
      /* in constant time, as the tokens are (e2b_envd_check) */
      size_t n_want = strlen (want);
      if (strlen (sig) == n_want && CRYPTO_memcmp (want, sig, n_want) == 0)
        {
          snprintf (id, SBX_ID_MAX, "%s", infos[i].id);
          found = true;
        }
    }
  sbx_list_free (infos, n);
  /* E2B's envd answers 401 with these messages: the signature first, then
     its expiration */
  if (!found)
    *ret = send_error (c, 401, "invalid signature");
  else if (exp && strtoll (exp, NULL, 10) < sbx_wall_ms () / 1000)
    *ret = send_error (c, 401, "signature is already expired");
  else
    return 1;
  return -1;
}

bool
e2b_envd_check (struct http_server *h, struct MHD_Connection *c, char id[SBX_ID_MAX], enum MHD_Result *ret)
{
  const char *sid = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Id");
  if (sid == NULL || !valid_id (sid))
    {
      *ret = send_error (c, 400, "invalid sandbox id");
      return false;
    }
  snprintf (id, SBX_ID_MAX, "%s", sid);
  char want[65];
  e2b_access_token (h, id, want);
  const char *tok = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "X-Access-Token");
  /* the code interpreter SDK sends the token this way on its contexts calls */
  const char *port = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Port");
  if (tok == NULL && port && strcmp (port, "49999") == 0)
    {
      /* ... with the sandbox's traffic token (proxy.c), which opens its
         ports: the interpreter's is one */
      tok = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2B-Traffic-Access-Token");
      e2b_traffic_token (h, id, want);
    }
  if (tok == NULL || strlen (tok) != 64 || CRYPTO_memcmp (tok, want, 64) != 0)
    {
      *ret = send_error (c, 401, "invalid access token");
      return false;
    }
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0 || info.state == SBX_STOPPED)
    {
      if (err.code == 0)
        sbx_info_free (&info);
      *ret = send_error (c, 502, "sandbox %s is not running", id);
      return false;
    }
  bool paused = info.state == SBX_PAUSED && !e2b_auto_resume (h, &info);
  sbx_info_free (&info);
  if (paused)
    {
      *ret = send_error (c, 502, "sandbox %s is paused", id);
      return false;
    }
  return true;
}

bool
e2b_auto_resume (struct http_server *h, const struct sbx_info *info)
{
  /* a thaw, quick, but admitted as any resume: the organisation's hours
     and the operator's capacity */
  if (!info->auto_resume || info->memory_dropped)
    return false;
  struct sbx_err err;
  if (sbx_service_sandbox_auto_resume (h->svc, info->id, &err) == 0)
    return true;
  /* failing because it runs already (another call resumed it) is fine */
  if (sbx_err_kind (&err) == SBX_E_CONFLICT)
    return true;
  sbx_log_fields (SBX_LOG_INFO, "auto-resume refused", "sandbox", info->id, "error", err.msg, NULL);
  return false;
}

bool
e2b_is_envd (struct MHD_Connection *c)
{
  return MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Id") != NULL;
}

enum MHD_Result
e2b_envd (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method, const char *url)
{
  /* the sandbox and its access token were checked from the headers */
  const char *id = rq->sandbox_id;
  enum MHD_Result ret;
  if (strcmp (url, "/health") == 0)
    return send_empty (c, 204);
  const char *port = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Port");
  if (port && strcmp (port, "49999") == 0)
    return interp_request (h, c, rq, method, url, id);
  char user[64];
  envd_user (c, user, sizeof user);
  if (strcmp (url, "/files") == 0 && strcmp (method, "GET") == 0)
    return download_file (h, c, rq, id);
  if (strcmp (method, "POST") != 0)
    return send_error (c, 405, "method not allowed");
  if (strncmp (url, "/process.Process/", 17) == 0)
    {
      const char *m = url + 17;
      if (strcmp (m, "Start") == 0 || strcmp (m, "Connect") == 0)
        return process_stream (h, c, rq, id, strcmp (m, "Start") == 0, user);
      json_t *b = rq->len ? json_loadb (rq->body, rq->len, 0, NULL) : json_object ();
      if (b == NULL)
        return connect_error (c, 400, "malformed JSON body");
      ret = process_unary (h, c, id, m, b);
      json_decref (b);
      return ret;
    }
  if (strncmp (url, "/filesystem.Filesystem/", 23) == 0)
    {
      const char *m = url + 23;
      if (strcmp (m, "WatchDir") == 0)
        return watch_dir_stream (h, c, rq, id, user);
      json_t *b = rq->len ? json_loadb (rq->body, rq->len, 0, NULL) : json_object ();
      if (b == NULL)
        return connect_error (c, 400, "malformed JSON body");
      if (strcmp (m, "CreateWatcher") == 0 || strcmp (m, "GetWatcherEvents") == 0 || strcmp (m, "RemoveWatcher") == 0)
        ret = watcher_call (h, c, id, m, b, user);
      else
        ret = filesystem_unary (h, c, id, m, b, *user ? user : NULL);
      json_decref (b);
      return ret;
    }
  return send_error (c, 404, "not found");
}
