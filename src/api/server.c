/*
 * server.c - the HTTP server of sbxd (libmicrohttpd): reads requests,
 * authenticates them, routes them through the route table (routes.c) to
 * the dialects' handlers, and logs one line per request.  It also holds
 * the helpers every dialect shares: JSON answers, error answers in the
 * request's dialect, and body parsing.
 *
 * Threads.  libmicrohttpd runs a small pool of threads (HTTP_THREADS),
 * each an epoll loop over its share of the connections, so an idle
 * connection costs a little memory, not a thread.  Those threads never
 * wait on a sandbox:
 *  - the key (or an envd access token, or a signed URL) is checked from
 *    the headers, before any body is read: 401, and 413 for a
 *    Content-Length over the route's limit, go out at once and the
 *    connection is closed unread (a body of at most DRAIN_MAX bytes is
 *    read and dropped first, so that a client sending it whole sees the
 *    answer rather than a reset);
 *  - a body is collected up to the route's limit (JSON_BODY_MAX,
 *    BIG_BODY_MAX for routes carrying file contents, ENVD_BODY_MAX), in
 *    memory taken from a daemon-wide budget (BODY_BUDGET; 503 past it);
 *  - then the connection is suspended and the handler runs on a handler
 *    thread, at most HANDLERS_MAX of them (a request finding them all at
 *    work is answered 503 at once, not queued: a queue behind hour-long
 *    synchronous execs would only hide the wait); its answer, given to
 *    queue_response, is kept in the request, the connection resumed and
 *    the answer queued on the next call;
 *  - an upload goes to the sandbox the same way, STAGE_MAX bytes per
 *    handler job, never held whole in memory;
 *  - a streamed answer (send_pipe) reads its pipe without blocking; when
 *    the pipe is empty the connection is suspended and the resumer thread
 *    (one epoll set over the waiting pipes) resumes it once the pipe is
 *    readable or closed.
 * A connection that sends nothing for the configured timeout is closed,
 * headers included (a client that never finishes them); a suspended one
 * (a handler at work, a stream waiting for data) does not time out.  One
 * client address holds at most the configured number of connections, and
 * all together at most half the descriptors the process may open.
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../service/encode.h"
#include "../service/output.h"
#include "terminal.h"

#define JSON_BODY_MAX (1u << 20)      /* a JSON body */
#define BIG_BODY_MAX (64u << 20)      /* ROUTE_BIG_BODY: base64 file writes up to ~48 MB, stdin, code */
#define ENVD_BODY_MAX (16u << 20)     /* a Connect or code interpreter call */
#define BODY_BUDGET (256u << 20)      /* bodies in memory, all requests together */
#define STAGE_MAX (256u << 10)        /* upload bytes handed to one handler job */
#define DRAIN_MAX (64u << 10)         /* a body read (and dropped) before a refusal */
#define DEFAULT_UPLOAD_MAX (100ull << 20) /* seed 000 */
#define HTTP_THREADS 4                /* libmicrohttpd's epoll threads */
#define HANDLERS_MAX 256              /* threads running handlers */
#define HANDLERS_SPARE 4              /* idle handler threads kept */
#define HANDLER_IDLE_S 30             /* after which other idle ones end */
#define BIG_ANSWER (1u << 20)         /* larger JSON answers take room from the output budget until sent */
#define NOFILE_WANT 65536             /* the descriptor limit asked for at start */
#define CONN_MAX 65536                /* connections, whatever the descriptor limit */

static struct sbx_budget body_budget = { .max = BODY_BUDGET };

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

/* The request this thread works on: set by the access handler on
   libmicrohttpd's threads and by a handler thread for its job. */
static __thread struct request *tl_rq;

const struct dialect *
current_dialect (void)
{
  return tl_rq && tl_rq->dialect ? tl_rq->dialect : &dialect_sandbase;
}

/* ---- responses ---- */

static void
big_answer_free (void *text)
{
  sbx_budget_give (&sbx_output_budget, strlen (text));
  free (text);
}

enum MHD_Result
send_json (struct MHD_Connection *c, unsigned status, json_t *j)
{
  return send_json_with (c, status, j, NULL, NULL, NULL);
}

enum MHD_Result
send_json_with (struct MHD_Connection *c, unsigned status, json_t *j, const char *content_type, const char *name,
                const char *value)
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
  if (content_type && strcmp (content_type, "text/event-stream") == 0)
    {
      /* one Server-Sent Event of type message carrying the JSON */
      char *ev = NULL;
      int k = asprintf (&ev, "event: message\ndata: %s\n\n", text);
      free (text);
      if (k < 0)
        return MHD_NO;
      text = ev;
    }
  size_t n = strlen (text);
  struct MHD_Response *r;
  if (n > BIG_ANSWER)
    {
      /* held until the client has read it: from the output budget */
      if (!sbx_budget_take (&sbx_output_budget, n))
        {
          free (text);
          return send_error (c, 503, "server busy: answers waiting to be sent fill %u MiB; retry later",
                             SBX_OUTPUT_BUDGET >> 20);
        }
      r = MHD_create_response_from_buffer_with_free_callback (n, text, big_answer_free);
      if (r == NULL)
        big_answer_free (text);
    }
  else
    r = MHD_create_response_from_buffer (n, text, MHD_RESPMEM_MUST_FREE);
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header (r, "Content-Type", content_type ? content_type : "application/json");
  if (name && value)
    MHD_add_response_header (r, name, value);
  return queue_response (c, status, r);
}

enum MHD_Result
queue_response (struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
  struct request *rq = tl_rq;
  if (r == NULL)
    return MHD_NO;
  if (rq && (rq->phase == RQ_RUNNING || rq->drain))
    {
      /* a handler thread (libmicrohttpd queues only on its own threads),
         or an early answer that waits for a small body to be read */
      if (rq->answer)
        {
          MHD_destroy_response (r);
          return MHD_NO;
        }
      rq->answer = r;
      rq->status = status;
      return MHD_YES;
    }
  if (rq)
    rq->status = status;
  enum MHD_Result ret = MHD_queue_response (c, status, r);
  MHD_destroy_response (r);
  return ret;
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
  return queue_response (c, status, MHD_create_response_from_buffer (0, NULL, MHD_RESPMEM_PERSISTENT));
}

/* ---- streamed answers ---- */

/* A streamed answer: the read end of a pipe whose writer is a thread of
   the handler's (a process's events, a download, an interpreter cell). */
struct pipe_stream {
  struct resumer *rs;
  struct MHD_Connection *c;
  int fd;
  bool in_epoll;
  bool waiting;                     /* suspended until the pipe is readable */
  struct pipe_stream *prev, *next;  /* in the resumer's waiting list */
};

/* Any descriptor a connection waits on (proxy.c's sockets) is waited on
   the same way. */
struct conn_waiter {
  struct pipe_stream p;
};

/* One thread with one epoll set over the pipes of suspended streams. */
struct resumer {
  int ep;
  int stop_fd;                      /* an eventfd that ends the thread */
  pthread_t thread;
  pthread_mutex_t lock;             /* the list, the flags and suspending */
  struct pipe_stream *waiting;
  bool stopping;
};

static void *
resumer_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-resumer");
  struct resumer *rs = arg;
  struct epoll_event ev[64];
  for (;;)
    {
      int n = epoll_wait (rs->ep, ev, 64, -1);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          sbx_log_fields (SBX_LOG_ERROR, "stream resumer stopped", "error", strerror (errno), NULL);
          return NULL;
        }
      bool stop = false;
      pthread_mutex_lock (&rs->lock);
      for (int i = 0; i < n; i++)
        {
          struct pipe_stream *p = ev[i].data.ptr;
          if (p == NULL)
            stop = true;
          else if (p->waiting)
            {
              p->waiting = false;
              if (p->prev)
                p->prev->next = p->next;
              else
                rs->waiting = p->next;
              if (p->next)
                p->next->prev = p->prev;
              /* p is libmicrohttpd's again from here */
              MHD_resume_connection (p->c);
            }
        }
      pthread_mutex_unlock (&rs->lock);
      if (stop)
        return NULL;
    }
}

/* Suspend P's connection until its pipe is readable; false when the
   server is stopping (or epoll fails), and the stream should end. */
static bool
resumer_wait_for (struct pipe_stream *p, uint32_t events)
{
  struct resumer *rs = p->rs;
  bool ok = false;
  pthread_mutex_lock (&rs->lock);
  if (!rs->stopping)
    {
      /* EPOLLONESHOT: one wake-up per suspension; the resumer is the only
         one to touch P until it resumes the connection */
      struct epoll_event ev = { .events = events | EPOLLONESHOT, .data.ptr = p };
      ok = epoll_ctl (rs->ep, p->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, p->fd, &ev) == 0;
      if (ok)
        {
          p->in_epoll = true;
          /* under the lock, so the resumer cannot resume it before */
          MHD_suspend_connection (p->c);
          p->waiting = true;
          p->prev = NULL;
          p->next = rs->waiting;
          if (rs->waiting)
            rs->waiting->prev = p;
          rs->waiting = p;
        }
    }
  pthread_mutex_unlock (&rs->lock);
  return ok;
}

static bool
resumer_wait (struct pipe_stream *p)
{
  return resumer_wait_for (p, EPOLLIN);
}

struct conn_waiter *
conn_waiter_new (struct http_server *h, struct MHD_Connection *c, int fd)
{
  struct conn_waiter *w = calloc (1, sizeof *w);
  if (w)
    w->p = (struct pipe_stream) { .rs = h->resumer, .c = c, .fd = fd };
  return w;
}

bool
conn_wait (struct conn_waiter *w, uint32_t events)
{
  return resumer_wait_for (&w->p, events);
}

void
conn_waiter_free (struct conn_waiter *w)
{
  if (w == NULL)
    return;
  if (w->p.in_epoll)
    epoll_ctl (w->p.rs->ep, EPOLL_CTL_DEL, w->p.fd, NULL);
  free (w);
}

static ssize_t
pipe_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  (void) pos;
  struct pipe_stream *p = cls;
  for (;;)
    {
      ssize_t n = read (p->fd, buf, max);
      if (n > 0)
        return n;
      if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
      if (errno != EINTR)
        break;
    }
  if (errno != EAGAIN || !resumer_wait (p))
    return MHD_CONTENT_READER_END_WITH_ERROR;
  return 0; /* suspended: libmicrohttpd calls again once resumed */
}

static void
pipe_free (void *cls)
{
  struct pipe_stream *p = cls;
  if (p->in_epoll)
    epoll_ctl (p->rs->ep, EPOLL_CTL_DEL, p->fd, NULL);
  close (p->fd); /* the writer's next write fails: it stops */
  free (p);
}

enum MHD_Result
send_pipe (struct MHD_Connection *c, int fd, const char *content_type, ...)
{
  struct pipe_stream *p = calloc (1, sizeof *p);
  if (p == NULL || tl_rq == NULL)
    {
      free (p);
      close (fd);
      return send_error (c, 500, "cannot start the stream");
    }
  p->rs = tl_rq->h->resumer;
  p->c = c;
  p->fd = fd;
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
  struct MHD_Response *r = MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, 32 * 1024, pipe_read, p, pipe_free);
  if (r == NULL)
    {
      pipe_free (p);
      return MHD_NO;
    }
  MHD_add_response_header (r, "Content-Type", content_type);
  va_list ap;
  va_start (ap, content_type);
  for (const char *name; (name = va_arg (ap, const char *)) != NULL;)
    MHD_add_response_header (r, name, va_arg (ap, const char *));
  va_end (ap);
  return queue_response (c, 200, r);
}

/* ---- request parsing ---- */

bool
valid_id (const char *id)
{
  return sbx_id_wellformed (id);
}

/* An id of another system's shape (E2B's, say): letters, digits, '-' and
   '_', shorter than SBX_ID_MAX.  It is never used as a path. */
static bool
id_like (const char *id)
{
  size_t n = strlen (id);
  if (n == 0 || n >= SBX_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9')
          || id[i] == '-' || id[i] == '_'))
      return false;
  return true;
}

/* Parse the body as a JSON object; an empty body is an empty object. */
json_t *
body_object (struct MHD_Connection *c, struct request *rq, enum MHD_Result *ret)
{
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
      const struct dialect *d = rq->dialect;
      *ret = sbx_err_kind (&err) != SBX_E_INVALID ? send_fail (c, &err)
             : d && d->unauthorized             ? send_error (c, 401, "%s", d->unauthorized)
                                                : send_error (c, 401, "%s", err.msg);
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
  if (r == NULL)
    {
      free (text);
      return MHD_NO;
    }
  MHD_add_response_header (r, "Content-Type", "application/yaml");
  return queue_response (k->c, 200, r);
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
  if (n >= 1 && strcmp (seg[0], "api") == 0)
    return &dialect_seed002;
  if (n >= 1 && strcmp (seg[0], "v1") == 0)
    return &dialect_v1;
  return &dialect_sandbase;
}


/* ---- handler threads ---- */

/* At most HANDLERS_MAX threads, started when needed; a request is taken
   only when a thread is free for it or can be started (reserve), so
   nothing waits in the queue behind busy threads. */
struct handlers {
  pthread_mutex_t lock;
  pthread_cond_t work, done;
  struct request *head, *tail; /* jobs reserved and queued */
  unsigned threads;            /* alive */
  unsigned free;               /* waiting without a reservation */
  unsigned busy;               /* reservations not finished */
  bool stopping;
};

/* Run RQ's job here, then hand the connection back to libmicrohttpd. */
static void
run_job (struct request *rq)
{
  tl_rq = rq;
  enum MHD_Result ret = rq->job (rq);
  tl_rq = NULL;
  sbx_thread_bulk (false); /* the next request starts at normal priority */
  /* an upload piece goes on reading; anything else has answered (or
     failed, and the connection is closed) */
  rq->phase = rq->answer || ret == MHD_NO ? RQ_ANSWERED : RQ_READING;
  MHD_resume_connection (rq->c); /* RQ is libmicrohttpd's from here */
}

static void *
handler_main (void *arg)
{
  struct handlers *p = arg;
  pthread_mutex_lock (&p->lock);
  for (;;)
    {
      while (p->head == NULL && !p->stopping)
        {
          struct timespec ts;
          clock_gettime (CLOCK_REALTIME, &ts);
          ts.tv_sec += HANDLER_IDLE_S;
          if (pthread_cond_timedwait (&p->work, &p->lock, &ts) == ETIMEDOUT && p->head == NULL && p->free > 0
              && p->threads > HANDLERS_SPARE)
            {
              p->free--;
              p->threads--;
              pthread_mutex_unlock (&p->lock);
              return NULL;
            }
        }
      if (p->head == NULL)
        break; /* stopping */
      struct request *rq = p->head;
      p->head = rq->next_job;
      if (p->head == NULL)
        p->tail = NULL;
      pthread_mutex_unlock (&p->lock);
      run_job (rq);
      pthread_mutex_lock (&p->lock);
      p->busy--;
      p->free++;
      pthread_cond_broadcast (&p->done);
    }
  p->threads--;
  pthread_cond_broadcast (&p->done);
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

/* A thread for one more job; false when all HANDLERS_MAX are at work (or
   the server is stopping). */
static bool
handlers_reserve (struct handlers *p)
{
  pthread_mutex_lock (&p->lock);
  bool ok = !p->stopping;
  if (ok && p->free > 0)
    p->free--;
  else if (ok && p->threads < HANDLERS_MAX && sbx_start_detached (handler_main, p))
    p->threads++;
  else
    ok = false;
  if (ok)
    p->busy++;
  pthread_mutex_unlock (&p->lock);
  return ok;
}

static void
handlers_enqueue (struct handlers *p, struct request *rq)
{
  pthread_mutex_lock (&p->lock);
  rq->next_job = NULL;
  if (p->tail)
    p->tail->next_job = rq;
  else
    p->head = rq;
  p->tail = rq;
  pthread_cond_signal (&p->work);
  pthread_mutex_unlock (&p->lock);
}

/* Stop taking jobs and wait up to GRACE_S for the running ones and the
   threads; false when some are still at work. */
static bool
handlers_stop (struct handlers *p, int grace_s)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += grace_s;
  pthread_mutex_lock (&p->lock);
  p->stopping = true;
  pthread_cond_broadcast (&p->work);
  while ((p->busy || p->threads) && pthread_cond_timedwait (&p->done, &p->lock, &ts) != ETIMEDOUT)
    ;
  bool idle = p->busy == 0 && p->threads == 0;
  pthread_mutex_unlock (&p->lock);
  return idle;
}

/* Run JOB for RQ on a handler thread; the connection waits suspended.
   503 at once when no thread is free. */
static enum MHD_Result
dispatch (struct request *rq, enum MHD_Result (*job) (struct request *))
{
  if (!handlers_reserve (rq->h->handlers))
    return send_error (rq->c, 503, "server busy: all %u request handlers are at work; retry later", HANDLERS_MAX);
  rq->job = job;
  rq->phase = RQ_RUNNING;
  /* suspended before the job is queued, so it is never resumed first */
  MHD_suspend_connection (rq->c);
  handlers_enqueue (rq->h->handlers, rq);
  return MHD_YES;
}

/* ---- jobs ---- */

static enum MHD_Result
route_job (struct request *rq)
{
  return rq->r->fn (&rq->k);
}

static enum MHD_Result
envd_job (struct request *rq)
{
  return e2b_envd (rq->h, rq->c, rq, rq->mhd_method, rq->mhd_url);
}

static enum MHD_Result
signed_download_job (struct request *rq)
{
  return download_file (rq->h, rq->c, rq, rq->signed_id);
}

/* The staged bytes of an upload go to the sandbox. */
static enum MHD_Result
upload_piece_job (struct request *rq)
{
  upload_feed (rq, rq->stage, rq->stage_len);
  rq->stage_len = 0;
  return MHD_YES;
}

static enum MHD_Result
upload_end_job (struct request *rq)
{
  if (rq->stage_len)
    upload_piece_job (rq);
  return upload_end (rq->h, rq->c, rq);
}

/* ---- the first call: headers ---- */

/* 413 at once when the body announced is over the request's limit. */
static enum MHD_Result
check_length (struct request *rq)
{
  const char *cl = MHD_lookup_connection_value (rq->c, MHD_HEADER_KIND, "Content-Length");
  if (cl && strtoull (cl, NULL, 10) > rq->body_max)
    return send_error (rq->c, 413, "request body too large (max %zu bytes)", rq->body_max);
  return MHD_YES;
}

/* Route the request from its headers: the route, the key, the sandbox it
   names; the handler runs once the body is in. */
static enum MHD_Result
route_begin (struct request *rq)
{
  struct MHD_Connection *c = rq->c;
  struct call *k = &rq->k;
  *k = (struct call) { .h = rq->h, .c = c, .rq = rq, .method = rq->mhd_method };
  k->n = split_url (rq->mhd_url, rq->path, sizeof rq->path, k->seg, CALL_MAX_SEGS);
  if (k->n < 0)
    return send_error (c, 414, "URL too long");
  bool known;
  const struct route *r = find_route (rq->mhd_method, k->seg, k->n, k->arg, &known);
  if (r == NULL && k->n >= 2 && strcmp (k->seg[0], "v2") == 0 && strcmp (k->seg[1], "sandboxes") == 0)
    {
      /* E2B's v2 control plane: the same sandboxes as v1 where it has no
         route of its own (POST /v2/sandboxes, .../connect, ...) */
      bool known_v1;
      r = find_route (rq->mhd_method, k->seg + 1, k->n - 1, k->arg, &known_v1);
      known = known || known_v1;
    }
  enum MHD_Result ret;
  if (r == NULL)
    {
      /* without a key, nothing is told about which paths exist */
      rq->dialect = dialect_of_path (k->seg, k->n);
      if (!authenticate (rq->h, c, rq, &ret))
        return ret;
      return known ? send_error (c, 405, "method not allowed") : send_error (c, 404, "not found");
    }
  rq->dialect = r->dialect;
  rq->route = r->pattern;
  if (!(r->flags & ROUTE_PUBLIC) && !authenticate (rq->h, c, rq, &ret))
    return ret;
  if (r->flags & ROUTE_SANDBOX)
    {
      const char *id = k->arg[0];
      snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, id);
      /* an id of another shape names no sandbox of ours: 404 as for any
         unknown one (E2B's SDKs then say false, not an error), unless it
         could not be an id at all */
      if (!valid_id (id))
        return r->dialect->bad_sandbox_id == 404 || id_like (id) ? send_error (c, 404, "sandbox not found")
                                                                  : send_error (c, r->dialect->bad_sandbox_id,
                                                                                "invalid sandbox id");
      struct sbx_err err;
      if (sbx_service_sandbox_get (rq->h->svc, &rq->org, id, &k->rec, &err) < 0)
        return send_fail (c, &err);
      k->have_rec = true;
    }
  /* a public route's own credential (a signed URL), before the body */
  if (r->flags & ROUTE_SIGNED)
    {
      route_check_fn check = route_check_of (r);
      if (check == NULL)
        return send_error (c, 500, "no check for a signed route");
      if (!check (k, &ret))
        return ret;
    }
  rq->r = r;
  rq->job = route_job;
  rq->body_max = r->flags & ROUTE_BIG_BODY ? BIG_BODY_MAX : JSON_BODY_MAX;
  return check_length (rq);
}

/* A multipart upload (POST /sandboxes/:id/files) is streamed into the
   sandbox as it arrives instead of being collected. */
static enum MHD_Result
begin_upload (struct request *rq, bool *handled)
{
  char path[1024];
  char *seg[8];
  int n = split_url (rq->mhd_url, path, sizeof path, seg, 8);
  *handled = n > 0 && upload_wanted (rq->mhd_method, seg, n);
  if (!*handled)
    return MHD_YES;
  enum MHD_Result ret;
  if (!authenticate (rq->h, rq->c, rq, &ret))
    return ret;
  snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, seg[1]);
  if (!valid_id (seg[1]))
    return id_like (seg[1]) ? send_error (rq->c, 404, "sandbox not found") : send_error (rq->c, 400, "invalid sandbox id");
  struct sbx_sandbox_rec rec;
  if (!own_sandbox (rq->h, rq->c, rq, seg[1], &rec, &ret))
    return ret;
  sbx_sandbox_rec_free (&rec);
  return upload_begin (rq->h, rq->c, rq, seg[1]);
}

static enum MHD_Result
first_call (struct request *rq)
{
  struct http_server *h = rq->h;
  struct MHD_Connection *c = rq->c;
  const char *method = rq->mhd_method, *url = rq->mhd_url;
  enum MHD_Result ret;
  rq->body_max = JSON_BODY_MAX;
  /* PORT-ID.DOMAIN: a sandbox's port, or its envd */
  if (h->domain[0] && !proxy_begin (rq, &ret))
    return ret;
  if (e2b_is_envd (c))
    {
      /* E2B's envd: the sandbox's access token instead of a key */
      rq->envd = true;
      if (!e2b_envd_check (h, c, rq->sandbox_id, &ret))
        return ret;
      if (envd_upload_wanted (c, method, url))
        {
          /* envd calls carry no API key: the seed's upload limit */
          rq->org.max_upload_bytes = DEFAULT_UPLOAD_MAX;
          return upload_begin (h, c, rq, rq->sandbox_id);
        }
      rq->job = envd_job;
      rq->body_max = ENVD_BODY_MAX;
      return check_length (rq);
    }
  char sid[SBX_ID_MAX];
  int signed_file = e2b_signed_file (h, c, method, url, sid, &ret);
  if (signed_file < 0)
    return ret;
  if (signed_file > 0)
    {
      /* a signed URL stands for the access token of its sandbox */
      rq->envd = true;
      snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%s", sid);
      rq->org.max_upload_bytes = DEFAULT_UPLOAD_MAX;
      if (strcmp (method, "POST") == 0)
        return upload_begin (h, c, rq, sid);
      snprintf (rq->signed_id, sizeof rq->signed_id, "%s", sid);
      rq->job = signed_download_job;
      return check_length (rq);
    }
  bool upload;
  ret = begin_upload (rq, &upload);
  if (upload)
    return ret;
  return route_begin (rq);
}

/* ---- the body ---- */

static void
body_drop (struct request *rq)
{
  free (rq->body);
  sbx_budget_give (&body_budget, rq->alloc);
  rq->body = NULL;
  rq->len = rq->alloc = 0;
}

/* Keep N more bytes of a JSON (or Connect) body, within its limit and the
   body budget. */
static void
body_take (struct request *rq, const char *data, size_t n)
{
  if (rq->too_big || rq->no_room)
    return;
  if (n > rq->body_max - rq->len)
    {
      rq->too_big = true;
      body_drop (rq);
      return;
    }
  size_t need = rq->len + n + 1;
  if (need > rq->alloc)
    {
      size_t a = rq->alloc ? rq->alloc * 2 : 4096;
      const char *cl = MHD_lookup_connection_value (rq->c, MHD_HEADER_KIND, "Content-Length");
      if (rq->alloc == 0 && cl)
        a = (size_t) strtoull (cl, NULL, 10) + 1; /* all at once: checked against the limit */
      if (a < need)
        a = need;
      if (a > rq->body_max + 1)
        a = rq->body_max + 1;
      char *nb = NULL;
      if (!sbx_budget_take (&body_budget, a - rq->alloc))
        goto no_room;
      if ((nb = realloc (rq->body, a)) == NULL)
        {
          sbx_budget_give (&body_budget, a - rq->alloc);
          goto no_room;
        }
      rq->body = nb;
      rq->alloc = a;
    }
  memcpy (rq->body + rq->len, data, n);
  rq->len += n;
  rq->body[rq->len] = '\0';
  return;
no_room:
  rq->no_room = true;
  body_drop (rq);
}

/* Upload bytes: staged, and every STAGE_MAX of them sent to the sandbox
   by a handler job. */
static enum MHD_Result
upload_data (struct request *rq, const char *data, size_t *size)
{
  if (rq->no_room)
    {
      *size = 0; /* no thread was free: the rest is read and dropped */
      return MHD_YES;
    }
  if (rq->stage == NULL)
    {
      if (!sbx_budget_take (&body_budget, STAGE_MAX))
        {
          rq->no_room = true;
          *size = 0;
          return MHD_YES;
        }
      if ((rq->stage = malloc (STAGE_MAX)) == NULL)
        {
          sbx_budget_give (&body_budget, STAGE_MAX);
          return MHD_NO;
        }
    }
  size_t n = *size < STAGE_MAX - rq->stage_len ? *size : STAGE_MAX - rq->stage_len;
  memcpy (rq->stage + rq->stage_len, data, n);
  rq->stage_len += n;
  *size -= n;
  if (rq->stage_len < STAGE_MAX)
    return MHD_YES;
  if (!handlers_reserve (rq->h->handlers))
    {
      /* the answer can only go out once the body is in */
      rq->no_room = true;
      rq->stage_len = 0;
      *size = 0;
      return MHD_YES;
    }
  rq->job = upload_piece_job;
  rq->phase = RQ_RUNNING;
  MHD_suspend_connection (rq->c);
  handlers_enqueue (rq->h->handlers, rq);
  return MHD_YES;
}

/* ---- the access handler ---- */

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
            const char *upload_data_p, size_t *upload_size, void **con_cls)
{
  (void) version;
  struct request *rq = *con_cls;
  if (rq == NULL || rq->h == NULL)
    {
      /* usually made by on_uri, with the request target as sent */
      if (rq == NULL)
        rq = calloc (1, sizeof *rq);
      if (rq == NULL)
        return MHD_NO;
      *con_cls = rq;
      rq->h = cls;
      rq->c = c;
      rq->mhd_method = method;
      rq->mhd_url = url;
      rq->start_ns = (int64_t) sbx_now_ns ();
      snprintf (rq->method, sizeof rq->method, "%s", method);
      snprintf (rq->url, sizeof rq->url, "%s", url);
      rq->dialect = &dialect_sandbase;
      tl_rq = rq;
      /* A refusal goes out before the body is read.  A small body is read
         first (and dropped), though: a client that sends it whole before
         reading could otherwise see the connection reset instead of the
         answer.  Anything larger (or announced with Expect:
         100-continue, or without a length) gets the answer at once and
         the connection is closed unread. */
      const char *cl = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Length");
      unsigned long long n = cl ? strtoull (cl, NULL, 10) : 0;
      rq->drain = n > 0 && n <= DRAIN_MAX && MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Expect") == NULL;
      enum MHD_Result r = first_call (rq);
      if (rq->answer == NULL)
        rq->drain = false;
      tl_rq = NULL;
      return r;
    }
  if (rq->phase == RQ_RUNNING)
    return MHD_YES; /* libmicrohttpd retrying body data while a job runs: kept for later */
  tl_rq = rq;
  enum MHD_Result ret;
  if (rq->drain)
    {
      /* refused from its headers: the small body is read and dropped */
      ret = MHD_YES;
      if (*upload_size)
        *upload_size = 0;
      else
        {
          ret = MHD_queue_response (c, rq->status, rq->answer);
          MHD_destroy_response (rq->answer);
          rq->answer = NULL;
          rq->drain = false;
          rq->dispatched = true;
        }
    }
  else if (rq->phase == RQ_ANSWERED)
    {
      /* the handler thread's answer */
      ret = MHD_NO;
      if (rq->answer)
        {
          ret = MHD_queue_response (c, rq->status, rq->answer);
          MHD_destroy_response (rq->answer);
          rq->answer = NULL;
        }
    }
  else if (rq->proxy)
    ret = proxy_step (rq, upload_data_p, upload_size);
  else if (*upload_size)
    {
      if (rq->upload)
        ret = upload_data (rq, upload_data_p, upload_size);
      else
        {
          body_take (rq, upload_data_p, *upload_size);
          *upload_size = 0;
          ret = MHD_YES;
        }
    }
  else if (rq->dispatched)
    ret = MHD_NO; /* a handler that did not answer */
  else
    {
      /* the whole request is in */
      rq->dispatched = true;
      if (rq->no_room)
        ret = send_error (c, 503, "server busy: request bodies in memory fill %u MiB; retry later", BODY_BUDGET >> 20);
      else if (rq->too_big)
        ret = send_error (c, 413, "request body too large (max %zu bytes)", rq->body_max);
      else if (rq->upload)
        ret = dispatch (rq, upload_end_job);
      else if (rq->r && (rq->r->flags & ROUTE_INLINE))
        ret = route_job (rq);
      else if (rq->job)
        ret = dispatch (rq, rq->job);
      else
        ret = MHD_NO;
    }
  tl_rq = NULL;
  return ret;
}

static void
on_completed (void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
  (void) cls;
  (void) c;
  (void) toe;
  struct request *rq = *con_cls;
  if (rq && rq->h == NULL)
    {
      /* made by on_uri for a request libmicrohttpd refused itself */
      free (rq->raw_url);
      free (rq);
      rq = NULL;
    }
  if (rq)
    {
      log_request (rq, rq->status);
      if (rq->terminal_seq)
        terminal_request_done (rq->h, rq->terminal_seq);
      tl_rq = rq;
      upload_free (rq);
      tl_rq = NULL;
      if (rq->stage)
        {
          free (rq->stage);
          sbx_budget_give (&body_budget, STAGE_MAX);
        }
      body_drop (rq);
      if (rq->k.have_rec)
        sbx_sandbox_rec_free (&rq->k.rec);
      if (rq->answer)
        MHD_destroy_response (rq->answer);
      proxy_request_done (rq);
      free (rq->raw_url);
      free (rq);
    }
  *con_cls = NULL;
}

/* The request line's target, before libmicrohttpd decodes it: kept for
   requests passed on to a sandbox's port (proxy.c), which must get it
   as the client sent it.  What this returns is the request's first
   *con_cls. */
static void *
on_uri (void *cls, const char *uri, struct MHD_Connection *c)
{
  (void) cls;
  (void) c;
  struct request *rq = calloc (1, sizeof *rq);
  if (rq && uri)
    rq->raw_url = strdup (uri);
  return rq;
}

/* libmicrohttpd's own messages (refused connections, send errors). */
static void on_mhd_log (void *cls, const char *fmt, va_list ap) __attribute__ ((format (printf, 2, 0)));

static void
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
  (void) cls;
  char msg[512];
  vsnprintf (msg, sizeof msg, fmt, ap);
  size_t n = strlen (msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
    msg[--n] = '\0';
  sbx_log_fields (SBX_LOG_DEBUG, "http", "detail", msg, NULL);
}

/* Raise the descriptor limit to the hard one (first to NOFILE_WANT when
   the hard one is lower and the process may), and split it; the
   connection limit.  The budget (docs/architecture.md, "Descriptors"):
   - a live sandbox holds NOFILE_PER_SANDBOX (its pidfd; its directory
     is opened when needed), an ended one none; one being prepared (a
     spare) or torn down holds a few more for a moment;
   - a connection holds its socket, and while it streams or is proxied a
     pipe's end or a socket more (NOFILE_PER_CONN counts two);
   - the daemon itself (the store, logs, epoll sets, templates, builds,
     the filters' sockets) at most NOFILE_FIXED.
   Connections get a fifth of the limit, at most CONN_MAX: at 65536 that
   is 13107 connections, and the rest holds the daemon and about 38,000
   live sandboxes; at 20,000 (a hard limit the daemon may not raise on
   some machines) 4,000 connections and about 10,900 sandboxes.  A limit that cannot hold SBX_NOFILE_SANDBOXES
   sandboxes besides is logged as a warning naming how many it holds; past
   it a create fails with EMFILE, which is "unavailable" (503). */
#define NOFILE_PER_SANDBOX 1
#define NOFILE_PER_CONN 2
#define NOFILE_FIXED 1024
#define SBX_NOFILE_SANDBOXES 10000 /* the idle sandboxes one machine is meant to hold */
static unsigned
raise_nofile (void)
{
  struct rlimit rl;
  if (getrlimit (RLIMIT_NOFILE, &rl) < 0)
    return 512;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < NOFILE_WANT)
    {
      struct rlimit want = { NOFILE_WANT, NOFILE_WANT };
      if (setrlimit (RLIMIT_NOFILE, &want) == 0)
        rl = want;
    }
  if (rl.rlim_cur < rl.rlim_max)
    {
      struct rlimit want = { rl.rlim_max == RLIM_INFINITY ? 1u << 20 : rl.rlim_max, rl.rlim_max };
      if (setrlimit (RLIMIT_NOFILE, &want) == 0)
        rl.rlim_cur = want.rlim_cur;
    }
  rlim_t conns = rl.rlim_cur / 5;
  conns = conns > CONN_MAX ? CONN_MAX : conns < 64 ? 64 : conns;
  rlim_t used = conns * NOFILE_PER_CONN + NOFILE_FIXED;
  rlim_t sandboxes = rl.rlim_cur > used ? (rl.rlim_cur - used) / NOFILE_PER_SANDBOX : 0;
  char limit[24], nconns[24], nsandboxes[24];
  snprintf (limit, sizeof limit, "%llu", (unsigned long long) rl.rlim_cur);
  snprintf (nconns, sizeof nconns, "%llu", (unsigned long long) conns);
  snprintf (nsandboxes, sizeof nsandboxes, "%llu", (unsigned long long) sandboxes);
  sbx_log_fields (sandboxes < SBX_NOFILE_SANDBOXES ? SBX_LOG_WARN : SBX_LOG_INFO,
                  sandboxes < SBX_NOFILE_SANDBOXES
                      ? "descriptors: the limit holds fewer sandboxes than planned (raise the hard RLIMIT_NOFILE)"
                      : "descriptors",
                  "limit", limit, "connections", nconns, "sandboxes", nsandboxes, NULL);
  return (unsigned) conns;
}

static struct resumer *
resumer_start (void)
{
  struct resumer *rs = calloc (1, sizeof *rs);
  if (rs == NULL)
    return NULL;
  pthread_mutex_init (&rs->lock, NULL);
  rs->ep = epoll_create1 (EPOLL_CLOEXEC);
  rs->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  if (rs->ep < 0 || rs->stop_fd < 0 || epoll_ctl (rs->ep, EPOLL_CTL_ADD, rs->stop_fd, &ev) < 0
      || pthread_create (&rs->thread, NULL, resumer_main, rs) != 0)
    {
      if (rs->ep >= 0)
        close (rs->ep);
      if (rs->stop_fd >= 0)
        close (rs->stop_fd);
      pthread_mutex_destroy (&rs->lock);
      free (rs);
      return NULL;
    }
  return rs;
}

/* Resume every waiting stream (each then ends) and stop the thread. */
static void
resumer_stop (struct resumer *rs)
{
  pthread_mutex_lock (&rs->lock);
  rs->stopping = true;
  for (struct pipe_stream *p = rs->waiting; p; p = p->next)
    {
      p->waiting = false;
      MHD_resume_connection (p->c);
    }
  rs->waiting = NULL;
  pthread_mutex_unlock (&rs->lock);
  uint64_t one = 1;
  if (write (rs->stop_fd, &one, sizeof one) < 0)
    sbx_log_fields (SBX_LOG_WARN, "stream resumer", "error", strerror (errno), NULL);
  pthread_join (rs->thread, NULL);
}

static void
resumer_free (struct resumer *rs)
{
  close (rs->ep);
  close (rs->stop_fd);
  pthread_mutex_destroy (&rs->lock);
  free (rs);
}

static void
server_free (struct http_server *h)
{
  if (h->handlers)
    {
      pthread_mutex_destroy (&h->handlers->lock);
      pthread_cond_destroy (&h->handlers->work);
      pthread_cond_destroy (&h->handlers->done);
      free (h->handlers);
    }
  if (h->resumer)
    resumer_free (h->resumer);
  terminals_free (h);
  free (h->tls_cert);
  free (h->tls_key);
  free (h);
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
  if (cfg->outbound)
    h->outbound = *cfg->outbound;
  h->svc = cfg->svc;
  h->agents = cfg->agents;
  h->images = cfg->images;
  snprintf (h->docs_dir, sizeof h->docs_dir, "%s", cfg->docs_dir ? cfg->docs_dir : "docs");
  snprintf (h->state_dir, sizeof h->state_dir, "%s", cfg->state_dir ? cfg->state_dir : "/var/tmp");
  h->terminal_ttl_s = cfg->terminal_ttl_s ? cfg->terminal_ttl_s : SBX_TERMINAL_TTL_S;
  if (cfg->metrics_token)
    snprintf (h->metrics_token, sizeof h->metrics_token, "%s", cfg->metrics_token);
  if (cfg->domain)
    {
      snprintf (h->domain, sizeof h->domain, "%s", cfg->domain);
      size_t i = 0;
      for (; cfg->domain[i] && cfg->domain[i] != ':' && i + 1 < sizeof h->domain_name; i++)
        h->domain_name[i] = (char) (cfg->domain[i] >= 'A' && cfg->domain[i] <= 'Z' ? cfg->domain[i] - 'A' + 'a'
                                                                                   : cfg->domain[i]);
      h->domain_name[i] = '\0';
    }
  if (cfg->tls_cert && cfg->tls_key)
    {
      /* libmicrohttpd (GnuTLS) takes the PEM text, kept for its life */
      if (sbx_read_file_at (AT_FDCWD, cfg->tls_cert, &h->tls_cert, 1u << 20, err) < 0
          || sbx_read_file_at (AT_FDCWD, cfg->tls_key, &h->tls_key, 1u << 20, err) < 0)
        {
          free (h->tls_cert);
          free (h);
          return NULL;
        }
      h->tls = true;
    }
  if (e2b_load_secret (h, err) < 0 || terminals_start (h, err) < 0)
    {
      free (h->tls_cert);
      free (h->tls_key);
      free (h);
      return NULL;
    }
  h->handlers = calloc (1, sizeof *h->handlers);
  h->resumer = resumer_start ();
  if (h->handlers == NULL || h->resumer == NULL)
    {
      free (h->handlers);
      h->handlers = NULL;
      server_free (h);
      sbx_fail (err, ENOMEM, "http server threads");
      return NULL;
    }
  pthread_mutex_init (&h->handlers->lock, NULL);
  pthread_cond_init (&h->handlers->work, NULL);
  pthread_cond_init (&h->handlers->done, NULL);
  unsigned conns = raise_nofile ();
  unsigned timeout = cfg->conn_timeout_s ? cfg->conn_timeout_s : SBX_HTTP_CONN_TIMEOUT_S;
  if (proxy_start (h, err) < 0)
    {
      resumer_stop (h->resumer);
      server_free (h);
      return NULL;
    }
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
  if (h->tls)
    flags |= MHD_USE_TLS;
  /* the certificate and key only with TLS (libmicrohttpd warns otherwise) */
  struct MHD_OptionItem tls_opts[] = {
    { h->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, h->tls ? h->tls_cert : NULL },
    { MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls ? h->tls_key : NULL },
    { MHD_OPTION_END, 0, NULL },
  };
  h->mhd = MHD_start_daemon (flags, 0, NULL,
                             NULL, on_request, h, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
                             NULL, MHD_OPTION_SOCK_ADDR, cfg->addr, MHD_OPTION_THREAD_POOL_SIZE,
                             (unsigned) HTTP_THREADS, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                             MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_LIMIT, conns,
                             MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->conn_per_ip, MHD_OPTION_LISTEN_BACKLOG_SIZE,
                             (unsigned) 1024, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned) 1, MHD_OPTION_END);
  if (h->mhd == NULL)
    {
      sbx_failx (err, EADDRINUSE,
                 h->tls ? "cannot listen (address in use or not available, or the TLS certificate or key is not valid PEM)"
                        : "cannot listen (address in use or not available)");
      proxy_stop (h);
      resumer_stop (h->resumer);
      server_free (h);
      return NULL;
    }
  char c_s[16], t_s[16], ip_s[16];
  snprintf (c_s, sizeof c_s, "%u", conns);
  snprintf (t_s, sizeof t_s, "%u", timeout);
  snprintf (ip_s, sizeof ip_s, "%u", cfg->conn_per_ip);
  sbx_log_fields (SBX_LOG_DEBUG, "http server", "max_connections", c_s, "conn_timeout_s", t_s, "conn_per_ip", ip_s,
                  NULL);
  return h;
}

bool
sbx_http_stop (struct http_server *h)
{
  /* streams waiting for data end; handlers get a few seconds; terminals
     end (their shells killed), and must have given their sockets back
     before libmicrohttpd stops */
  resumer_stop (h->resumer);
  if (!handlers_stop (h->handlers, 5) || !terminals_stop (h, 5))
    {
      sbx_log (SBX_LOG_WARN, "stopping while requests are being handled; their connections are dropped");
      return false;
    }
  proxy_stop (h);
  MHD_stop_daemon (h->mhd);
  server_free (h);
  return true;
}
