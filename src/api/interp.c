/*
 * interp.c - the code interpreter (E2B's port 49999): envd calls with
 * E2b-Sandbox-Port 49999 are forwarded, as E2B's edge does, to the code
 * interpreter server inside the sandbox (templates/files/interpreter/
 * server.py; src/service/interp.c reaches it): POST /execute, GET and
 * POST /contexts, DELETE /contexts/ID, POST /contexts/ID/restart.
 *
 * Each call is one HTTP/1.0 request on a fresh connection, so the answer
 * ends when the server closes it.  The server is the sandbox's, so what
 * it answers is untrusted: the head is read within HEAD_MAX bytes and
 * HEAD_TIMEOUT_MS, a plain answer within BODY_MAX bytes (and re-encoded:
 * an error in the dialect's shape, a success as JSON), and an execution's
 * NDJSON stream is passed on as it comes by a thread of its own, through a
 * pipe that libmicrohttpd streams, so a slow client only fills the pipe.
 * After KEEPALIVE_MS of silence between lines the thread sends a
 * {"type":"keepalive"} line of its own (and so notices a client that has
 * gone, even while the server is stuck); when the client goes away the
 * connection is closed, which interrupts the cell.  A stream that ends
 * without the server's end_of_execution gets an error line of E2B's
 * names and an end_of_execution.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../common/util.h"
#include "../service/interp.h"
#include "api.h"

#define END_JSON "{\"type\":\"end_of_execution\"}"
#define HEAD_MAX (16u << 10)
#define BODY_MAX (1u << 20)
#define HEAD_TIMEOUT_MS 180000 /* a context's kernel may take long to start */
#define BODY_TIMEOUT_MS 30000
#define KEEPALIVE_MS 5000
#define CHUNK (64u << 10)

/* Write all of P to FD; <0 once the reader has gone. */
static int
write_all (int fd, const char *p, size_t n)
{
  while (n)
    {
      ssize_t w = write (fd, p, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
      p += w;
      n -= (size_t) w;
    }
  return 0;
}

/* Read from FD into BUF (at most N bytes) within TIMEOUT_MS; bytes read,
   0 at the end, -1 on an error or the timeout. */
static ssize_t
read_within (int fd, char *buf, size_t n, int timeout_ms)
{
  struct pollfd p = { fd, POLLIN, 0 };
  int r;
  do
    r = poll (&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  if (r == 0)
    errno = ETIMEDOUT;
  if (r <= 0)
    return -1;
  ssize_t k;
  do
    k = read (fd, buf, n);
  while (k < 0 && errno == EINTR);
  return k;
}

/* ---- an execution's stream ---- */

struct stream_job {
  int up;   /* the server's connection */
  int out;  /* the response body (a pipe) */
  char *pending; /* body bytes read with the head */
  size_t n_pending;
};

/* Forward DATA; tracks whether the last line ended and was the end. */
struct line_state {
  bool at_line_start;
  bool saw_end;
  char last[sizeof END_JSON]; /* the start of the current line */
  size_t n_last;
};

static void
track (struct line_state *ls, const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      if (p[i] == '\n')
        {
          ls->saw_end = ls->n_last == sizeof END_JSON - 1 && memcmp (ls->last, END_JSON, ls->n_last) == 0;
          ls->n_last = 0;
          ls->at_line_start = true;
          continue;
        }
      ls->at_line_start = false;
      if (ls->n_last < sizeof ls->last)
        ls->last[ls->n_last] = p[i];
      ls->n_last++;
    }
}

static void *
stream_main (void *arg)
{
  struct stream_job *job = arg;
  struct line_state ls = { .at_line_start = true };
  cleanup_free char *buf = malloc (CHUNK);
  bool client_gone = false, server_ended = false;
  if (job->n_pending)
    {
      track (&ls, job->pending, job->n_pending);
      client_gone = write_all (job->out, job->pending, job->n_pending) < 0;
    }
  while (buf && !client_gone)
    {
      struct pollfd p = { job->up, POLLIN, 0 };
      int r = poll (&p, 1, KEEPALIVE_MS);
      if (r < 0 && errno == EINTR)
        continue;
      if (r == 0)
        {
          /* silence: tell the client (and find out whether it is still
             there), but never in the middle of a line */
          if (ls.at_line_start)
            client_gone = write_all (job->out, "{\"type\":\"keepalive\"}\n", 21) < 0;
          continue;
        }
      ssize_t k = read (job->up, buf, CHUNK);
      if (k < 0 && errno == EINTR)
        continue;
      if (k <= 0)
        {
          server_ended = true;
          break;
        }
      track (&ls, buf, (size_t) k);
      client_gone = write_all (job->out, buf, (size_t) k) < 0;
    }
  if (server_ended && !(ls.saw_end && ls.at_line_start))
    {
      /* the server went away mid-execution (killed, or the sandbox
         stopped): end the stream the way E2B's clients understand */
      char line[256];
      int n = snprintf (line, sizeof line,
                        "%s{\"type\":\"error\",\"name\":\"UnexpectedEndOfExecution\",\"value\":\"the code "
                        "interpreter stopped before the execution ended\",\"traceback\":\"\"}\n" END_JSON "\n",
                        ls.at_line_start ? "" : "\n");
      write_all (job->out, line, (size_t) n);
    }
  close (job->up); /* a client gone: the server interrupts the cell */
  close (job->out);
  free (job->pending);
  free (job);
  return NULL;
}

/* ---- forwarding ---- */

/* Is U a path we forward (the server's routes, nothing that could change
   the request line)? */
static bool
forwardable (const char *u)
{
  if (strcmp (u, "/execute") == 0 || strcmp (u, "/contexts") == 0)
    return true;
  if (strncmp (u, "/contexts/", 10) != 0)
    return false;
  size_t n = 0;
  for (const char *p = u + 10; *p && *p != '/'; p++, n++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'
          || *p == '_'))
      return false;
  const char *rest = u + 10 + n;
  return n > 0 && n <= 64 && (*rest == '\0' || strcmp (rest, "/restart") == 0);
}

/* The status and the end of the head ("\r\n\r\n") in BUF[0..N), or 0. */
static unsigned
parse_head (const char *buf, size_t n, size_t *head_len)
{
  const char *end = memmem (buf, n, "\r\n\r\n", 4);
  if (end == NULL)
    return 0;
  *head_len = (size_t) (end - buf) + 4;
  unsigned status = 0;
  if (n < 12 || memcmp (buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
    return 0;
  for (int i = 9; i < 12; i++)
    {
      if (buf[i] < '0' || buf[i] > '9')
        return 0;
      status = status * 10 + (unsigned) (buf[i] - '0');
    }
  return status >= 100 && status <= 599 ? status : 0;
}

/* The server's answer that is not a stream: re-encoded. */
static enum MHD_Result
plain_answer (struct MHD_Connection *c, unsigned status, const char *body, size_t n)
{
  if (status == 204 || (n == 0 && status < 300))
    return send_empty (c, status);
  json_t *j = json_loadb (body, n, 0, NULL);
  if (status >= 400)
    {
      const char *msg = json_string_value (json_object_get (j, "message"));
      enum MHD_Result r = send_error (c, status, "%s", msg ? msg : "the code interpreter failed");
      json_decref (j);
      return r;
    }
  if (j == NULL)
    return send_error (c, 502, "the code interpreter gave a malformed answer");
  return send_json (c, status, j);
}

enum MHD_Result
interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                const char *url, const char *id)
{
  bool get = strcmp (method, "GET") == 0, post = strcmp (method, "POST") == 0,
       del = strcmp (method, "DELETE") == 0;
  if (!forwardable (url))
    return send_error (c, 404, "not found");
  if (!get && !post && !del)
    return send_error (c, 405, "method not allowed");

  cleanup_free char *buf = malloc (HEAD_MAX);
  if (buf == NULL)
    return send_error (c, 500, "out of memory");
  cleanup_close int up = -1;
  size_t n = 0, head_len = 0;
  unsigned status = 0;
  /* A server killed a moment ago may still take the connection and then
     drop it unanswered: that (no byte at all) is tried once more, on a
     fresh connection, which starts the server again if need be. */
  for (int attempt = 0; status == 0; attempt++)
    {
      struct sbx_err err;
      int fd;
      if (up >= 0)
        close (up);
      up = -1;
      n = 0;
      if (sbx_interp_connect (h->svc, id, &fd, &err) < 0)
        return send_error (c, 502, "%s", err.msg);
      up = fd;
      char head[256];
      int hn = snprintf (head, sizeof head,
                         "%s %s HTTP/1.0\r\nHost: localhost:%d\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         method, url, SBX_INTERP_PORT, rq->len);
      bool sent = hn > 0 && (size_t) hn < sizeof head && write_all (up, head, (size_t) hn) == 0
                  && (rq->len == 0 || write_all (up, rq->body, rq->len) == 0);
      /* the head, and whatever of the body came with it */
      bool dropped = !sent;
      while (sent && status == 0)
        {
          ssize_t k = n < HEAD_MAX ? read_within (up, buf + n, HEAD_MAX - n, HEAD_TIMEOUT_MS) : -1;
          dropped = k == 0 || (k < 0 && (errno == ECONNRESET || errno == EPIPE));
          if (k <= 0)
            break;
          n += (size_t) k;
          status = parse_head (buf, n, &head_len);
          if (status == 0 && memmem (buf, n, "\r\n\r\n", 4))
            return send_error (c, 502, "the code interpreter gave a malformed answer");
        }
      if (status == 0 && (n > 0 || attempt > 0 || !dropped))
        return send_error (c, 502, "the code interpreter did not answer");
    }

  if (strcmp (url, "/execute") == 0 && status == 200)
    {
      struct stream_job *job = calloc (1, sizeof *job);
      int fds[2] = { -1, -1 };
      if (job == NULL || pipe2 (fds, O_CLOEXEC) < 0)
        {
          free (job);
          return send_error (c, 500, "cannot start the execution");
        }
      fcntl (fds[1], F_SETPIPE_SZ, 1 << 20); /* best effort: room for a chart */
      job->n_pending = n - head_len;
      job->pending = job->n_pending ? malloc (job->n_pending) : NULL;
      if (job->n_pending && job->pending)
        memcpy (job->pending, buf + head_len, job->n_pending);
      job->up = up;
      job->out = fds[1];
      if ((job->n_pending && job->pending == NULL) || !sbx_start_detached (stream_main, job))
        {
          close (fds[0]);
          close (fds[1]);
          free (job->pending);
          free (job);
          return send_error (c, 500, "cannot start the execution");
        }
      up = -1; /* the thread's now */
      return send_pipe (c, fds[0], "application/x-ndjson", "Cache-Control", "no-cache", NULL);
    }

  /* a plain answer: the rest of it, bounded */
  size_t body_n = n - head_len;
  cleanup_free char *body = malloc (BODY_MAX);
  if (body == NULL)
    return send_error (c, 500, "out of memory");
  memcpy (body, buf + head_len, body_n);
  for (;;)
    {
      if (body_n >= BODY_MAX)
        return send_error (c, 502, "the code interpreter's answer is over %u bytes", BODY_MAX);
      ssize_t k = read_within (up, body + body_n, BODY_MAX - body_n, BODY_TIMEOUT_MS);
      if (k < 0)
        return send_error (c, 502, "the code interpreter did not finish its answer");
      if (k == 0)
        break;
      body_n += (size_t) k;
    }
  return plain_answer (c, status, body, body_n);
}
