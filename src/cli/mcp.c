/*
 * mcp.c - sbx mcp: MCP's stdio transport bridged to the daemon's
 * Streamable HTTP endpoint (POST /mcp, spec revision 2025-06-18).
 *
 * stdin carries newline-delimited JSON-RPC messages from the client (a
 * desktop agent that starts `sbx mcp`); each is POSTed to /mcp as it is,
 * with the API key, `Accept: application/json, text/event-stream`, the
 * Mcp-Session-Id the daemon gave at initialize and the negotiated
 * MCP-Protocol-Version.  The daemon answers 202 (a notification or a
 * response), one JSON object, or an SSE stream whose `data:` events are
 * messages; each message goes to stdout compactly on one line.  When the
 * daemon cannot be reached or refuses a request, the client gets a
 * JSON-RPC error for that request's id, never silence; the reason also
 * goes to stderr.  At the end of stdin the session is ended with DELETE.
 *
 * Requests other than initialize run on their own threads (at most 16 at
 * once), so a long tool call does not hold up a ping; initialize and
 * notifications are sent in order on the reading thread.  stdout is
 * written under a lock, one whole line at a time.
 */
#include "cli.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MESSAGE_MAX (16u << 20) /* one message from the client or the daemon */
#define IN_FLIGHT 16
#define DEFAULT_PROTOCOL "2025-06-18"

struct bridge {
  struct cli *c;
  pthread_mutex_t lock; /* stdout, and the session fields */
  char session[256];
  char protocol[64];
  sem_t slots;
};

/* One message to stdout (compact, one line). */
static void
emit (struct bridge *br, json_t *msg)
{
  char *s = json_dumps (msg, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s == NULL)
    return;
  pthread_mutex_lock (&br->lock);
  cli_write_all (1, s, strlen (s));
  cli_write_all (1, "\n", 1);
  pthread_mutex_unlock (&br->lock);
  free (s);
}

static void
emit_raw (struct bridge *br, const char *p, size_t n)
{
  json_t *j = json_loadb (p, n, 0, NULL);
  if (j)
    emit (br, j);
  else
    fprintf (stderr, "sbx: mcp: the daemon sent a message that is not JSON (dropped)\n");
  json_decref (j);
}

static void
emit_error (struct bridge *br, json_t *id, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static void
emit_error (struct bridge *br, json_t *id, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  fprintf (stderr, "sbx: mcp: %s\n", msg);
  if (id == NULL || json_is_null (id))
    return; /* a notification or a response: nobody waits for an answer */
  json_t *e = json_pack ("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", -32000, "message",
                         msg);
  emit (br, e);
  json_decref (e);
}

/* ---- one POST ---- */

struct post {
  struct bridge *br;
  CURL *h;
  long status;
  bool sse;
  struct cli_buf body;  /* a JSON answer, or an error */
  struct cli_buf event; /* the SSE event being read: its data lines */
  struct cli_buf line;  /* the SSE line being read */
  int sent;             /* messages written to stdout */
  char session[256];
};

static void
sse_line (struct post *p, char *l, size_t n)
{
  if (n && l[n - 1] == '\r')
    l[--n] = '\0';
  if (n == 0)
    {
      /* the end of an event */
      if (p->event.len)
        {
          emit_raw (p->br, p->event.data, p->event.len);
          p->sent++;
        }
      p->event.len = 0;
      return;
    }
  if (n >= 5 && strncmp (l, "data:", 5) == 0)
    {
      size_t skip = n > 5 && l[5] == ' ' ? 6 : 5;
      if (p->event.len)
        cli_buf_add (&p->event, "\n", 1);
      cli_buf_add (&p->event, l + skip, n - skip);
    }
  /* event:, id:, retry: and comments carry nothing a stdio client needs */
}

static size_t
post_write (char *d, size_t size, size_t n, void *ud)
{
  struct post *p = ud;
  size_t len = size * n;
  if (p->status == 0)
    {
      curl_easy_getinfo (p->h, CURLINFO_RESPONSE_CODE, &p->status);
      char *ct = NULL;
      curl_easy_getinfo (p->h, CURLINFO_CONTENT_TYPE, &ct);
      p->sse = p->status < 300 && ct && strncasecmp (ct, "text/event-stream", 17) == 0;
    }
  if (!p->sse)
    return cli_buf_write (d, size, n, &p->body);
  for (size_t i = 0; i < len;)
    {
      char *nl = memchr (d + i, '\n', len - i);
      size_t take = nl ? (size_t) (nl - (d + i)) : len - i;
      if (cli_buf_add (&p->line, d + i, take) < 0 || p->line.over || p->event.over)
        return 0;
      i += take;
      if (nl)
        {
          i++;
          sse_line (p, p->line.data, p->line.len);
          p->line.len = 0;
        }
    }
  return len;
}

static size_t
post_header (char *d, size_t size, size_t n, void *ud)
{
  struct post *p = ud;
  size_t len = size * n;
  static const char name[] = "mcp-session-id:";
  if (len > sizeof name - 1 && strncasecmp (d, name, sizeof name - 1) == 0)
    {
      const char *v = d + sizeof name - 1;
      size_t vn = len - (sizeof name - 1);
      while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
      while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
        vn--;
      /* visible ASCII only, as the spec says of session ids */
      bool ok = vn && vn < sizeof p->session;
      for (size_t i = 0; ok && i < vn; i++)
        ok = v[i] > 0x20 && v[i] < 0x7f;
      if (ok)
        snprintf (p->session, sizeof p->session, "%.*s", (int) vn, v);
    }
  return len;
}

/* POST MSG (its text TEXT) to /mcp; writes what comes back. */
static void
post (struct bridge *br, json_t *msg, const char *text)
{
  struct post p = { .br = br, .body = { .max = MESSAGE_MAX }, .event = { .max = MESSAGE_MAX },
                    .line = { .max = MESSAGE_MAX } };
  json_t *id = json_object_get (msg, "id");
  bool request = json_is_object (msg) && json_object_get (msg, "method") && id && !json_is_null (id);
  struct curl_slist *hdrs = NULL;
  p.h = cli_easy (br->c, "/mcp", true, &hdrs);
  if (p.h == NULL)
    {
      emit_error (br, request ? id : NULL, "out of memory");
      return;
    }
  char h1[320], h2[100];
  pthread_mutex_lock (&br->lock);
  snprintf (h1, sizeof h1, "Mcp-Session-Id: %s", br->session);
  snprintf (h2, sizeof h2, "MCP-Protocol-Version: %s", br->protocol);
  bool have_session = br->session[0] != '\0';
  pthread_mutex_unlock (&br->lock);
  hdrs = curl_slist_append (hdrs, "Accept: application/json, text/event-stream");
  if (have_session)
    hdrs = curl_slist_append (hdrs, h1);
  hdrs = curl_slist_append (hdrs, h2);
  curl_easy_setopt (p.h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (p.h, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt (p.h, CURLOPT_WRITEFUNCTION, post_write);
  curl_easy_setopt (p.h, CURLOPT_WRITEDATA, &p);
  curl_easy_setopt (p.h, CURLOPT_HEADERFUNCTION, post_header);
  curl_easy_setopt (p.h, CURLOPT_HEADERDATA, &p);
  CURLcode res = curl_easy_perform (p.h);
  if (p.status == 0)
    curl_easy_getinfo (p.h, CURLINFO_RESPONSE_CODE, &p.status);

  const char *method = json_string_value (json_object_get (msg, "method"));
  if (res != CURLE_OK)
    emit_error (br, request ? id : NULL, "cannot reach the daemon's /mcp: %s", curl_easy_strerror (res));
  else if (p.status >= 300)
    {
      char m[1024];
      cli_error_message (p.body.data, p.body.len, m, sizeof m);
      if (p.status == 404 && have_session)
        emit_error (br, request ? id : NULL, "the MCP session has ended on the daemon (HTTP 404): %s", m);
      else
        emit_error (br, request ? id : NULL, "the daemon refused: %s (HTTP %ld)", m, p.status);
    }
  else
    {
      if (p.sse && p.event.len)
        {
          emit_raw (br, p.event.data, p.event.len); /* a last event without its blank line */
          p.sent++;
        }
      if (!p.sse && p.body.len)
        {
          json_t *ans = json_loadb (p.body.data, p.body.len, 0, NULL);
          if (ans)
            {
              emit (br, ans);
              p.sent++;
              if (method && strcmp (method, "initialize") == 0)
                {
                  const char *v = json_string_value (json_object_get (json_object_get (ans, "result"),
                                                                     "protocolVersion"));
                  pthread_mutex_lock (&br->lock);
                  if (v && strlen (v) < sizeof br->protocol && strpbrk (v, "\r\n") == NULL)
                    snprintf (br->protocol, sizeof br->protocol, "%s", v);
                  pthread_mutex_unlock (&br->lock);
                }
            }
          else
            emit_error (br, request ? id : NULL, "the daemon's answer is not JSON");
          json_decref (ans);
        }
      if (request && p.sent == 0)
        emit_error (br, id, "the daemon answered the request with nothing (HTTP %ld)", p.status);
      if (method && strcmp (method, "initialize") == 0 && p.session[0])
        {
          pthread_mutex_lock (&br->lock);
          snprintf (br->session, sizeof br->session, "%s", p.session);
          pthread_mutex_unlock (&br->lock);
        }
    }
  cli_buf_free (&p.body);
  cli_buf_free (&p.event);
  cli_buf_free (&p.line);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (p.h);
}

/* ---- threads for requests ---- */

struct job {
  struct bridge *br;
  json_t *msg;
  char *text;
};

static void *
job_main (void *arg)
{
  struct job *j = arg;
  post (j->br, j->msg, j->text);
  json_decref (j->msg);
  free (j->text);
  sem_post (&j->br->slots);
  free (j);
  return NULL;
}

static void
end_session (struct bridge *br)
{
  if (br->session[0] == '\0')
    return;
  struct curl_slist *hdrs = NULL;
  CURL *h = cli_easy (br->c, "/mcp", false, &hdrs);
  if (h == NULL)
    return;
  char hdr[320];
  snprintf (hdr, sizeof hdr, "Mcp-Session-Id: %s", br->session);
  hdrs = curl_slist_append (hdrs, hdr);
  struct cli_buf sink = { .max = 4096 };
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, "DELETE");
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, cli_buf_write);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt (h, CURLOPT_TIMEOUT, 10L);
  curl_easy_perform (h); /* 405 (no explicit end) is fine too */
  cli_buf_free (&sink);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
}

int
cmd_mcp (struct cli *c, int argc, char **argv)
{
  (void) argv;
  if (argc != 1)
    return cli_usage ("usage: sbx mcp (newline-delimited JSON-RPC on stdin and stdout)");
  struct bridge br = { .c = c };
  pthread_mutex_init (&br.lock, NULL);
  sem_init (&br.slots, 0, IN_FLIGHT);
  snprintf (br.protocol, sizeof br.protocol, "%s", DEFAULT_PROTOCOL);

  struct cli_buf line = { .max = MESSAGE_MAX };
  char buf[65536];
  ssize_t r;
  bool too_long = false;
  for (;;)
    {
      r = read (0, buf, sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      for (ssize_t i = 0; i < r;)
        {
          char *nl = memchr (buf + i, '\n', (size_t) (r - i));
          size_t take = nl ? (size_t) (nl - (buf + i)) : (size_t) (r - i);
          cli_buf_add (&line, buf + i, take);
          if (line.over)
            too_long = true;
          i += (ssize_t) take;
          if (!nl)
            break;
          i++;
          if (too_long)
            {
              json_t *e = json_pack ("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code", -32600,
                                     "message", "message longer than 16 MiB");
              emit (&br, e);
              json_decref (e);
            }
          else if (line.len)
            {
              json_error_t je;
              json_t *msg = json_loadb (line.data, line.len, 0, &je);
              if (msg == NULL)
                {
                  json_t *e = json_pack ("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code",
                                         -32700, "message", "parse error");
                  emit (&br, e);
                  json_decref (e);
                }
              else
                {
                  const char *method = json_string_value (json_object_get (msg, "method"));
                  json_t *id = json_object_get (msg, "id");
                  bool request = method && id && !json_is_null (id);
                  if (!request || strcmp (method, "initialize") == 0)
                    {
                      post (&br, msg, line.data);
                      json_decref (msg);
                    }
                  else
                    {
                      struct job *j = calloc (1, sizeof *j);
                      pthread_t t;
                      sem_wait (&br.slots);
                      if (j == NULL || (j->text = strndup (line.data, line.len)) == NULL)
                        {
                          free (j);
                          sem_post (&br.slots);
                          emit_error (&br, id, "out of memory");
                          json_decref (msg);
                        }
                      else
                        {
                          j->br = &br;
                          j->msg = msg;
                          if (pthread_create (&t, NULL, job_main, j) != 0)
                            {
                              emit_error (&br, id, "cannot start a thread");
                              json_decref (msg);
                              free (j->text);
                              free (j);
                              sem_post (&br.slots);
                            }
                          else
                            pthread_detach (t);
                        }
                    }
                }
            }
          line.len = 0;
          line.over = false;
          too_long = false;
        }
    }
  /* wait for the requests in flight, then end the session */
  for (int k = 0; k < IN_FLIGHT; k++)
    sem_wait (&br.slots);
  end_session (&br);
  cli_buf_free (&line);
  return 0;
}
