/*
 * terminal.c - seed 004's terminal: an interactive PTY shell in a sandbox
 * over a WebSocket, reached through the terminalUrl of the sandbox object.
 *
 * The URL is ws://HOST/v1/sandboxes/terminal?id=ID&token=TOKEN (wss://
 * when the request came over TLS or says X-Forwarded-Proto: https).  The
 * token is the credential, so the route takes no API key: "EXP.MAC", EXP
 * its expiry in seconds since the epoch and MAC the hex HMAC-SHA256 of
 * "sbxd-terminal", the sandbox id and EXP under a key derived from the
 * daemon's envd secret.  Nothing is stored, tokens survive a restart, and
 * one opens only the sandbox it was made for until it expires
 * (--terminal-ttl, SBX_TERMINAL_TTL_S by default).  Every refusal (token,
 * the sandbox's state, the limits, not a WebSocket request) is an HTTP
 * answer in seed 004's {error: message} shape, before any upgrade.
 *
 * A terminal is one process started with a PTY as the sandbox's default
 * user (bash -l) and a WebSocket upgraded by libmicrohttpd
 * (MHD_create_response_for_upgrade) and framed by wslay.  Terminal output
 * goes to the client in binary messages; the client's binary and text
 * messages are typed, except a text message that is exactly a JSON object
 * {"type":"resize","cols":N,"rows":M}, which resizes (xterm.js's attach
 * addon and its usual resize message).  The shell exiting closes the
 * socket with a normal close (1000); the socket closing, the idle timeout
 * or the daemon stopping kill the shell and everything it started
 * (sbx_proc_kill_tree).  While it is open the sandbox counts as busy
 * (seed 004's "active").
 *
 * Threads.  Each terminal has a thread of its own, which polls (poll(2))
 * its socket, its process's event stream and the daemon's stop event.  A
 * terminal makes synchronous calls to its sandbox's agent (every keystroke
 * is an INPUT request answered by the agent), and one sandbox slow to
 * answer must not hold up the others' terminals, as it would in one
 * shared loop; the thread is the price of that isolation, so terminals
 * are capped: TERMINALS_PER_SANDBOX in a sandbox and TERMINALS_MAX in the
 * daemon (429 and 503 beyond).  Bounds of one terminal: a client message
 * of TERM_IN_MSG_MAX bytes (wslay closes with 1009 beyond), at most
 * TERM_OUT_MAX bytes queued for the client before the shell's output is
 * left waiting in the sandbox, 64 KiB of client bytes read per round (so
 * a flood of pings cannot grow the queue of pongs without bound), and
 * TERM_IDLE_S without a keystroke or resize, or TERM_DEAD_S without any
 * frame (the server pings every TERM_PING_S), before it is closed.
 */
#include "api.h"
#include "terminal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"

#define TERM_ROUND_IN (64u << 10) /* client bytes read per round of the loop */
#define TERM_UPGRADE_WAIT_S 30    /* from the 101 answer queued to the upgrade */
#define TERM_CLOSE_S 5            /* for the client's close once ours is sent */
#define TERM_PING_S 30
#define TERM_DEAD_S 90
#define TERM_IDLE_S 900
#define TOKEN_MAX 96
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct terminal;

struct terminals {
  pthread_mutex_t lock;
  pthread_cond_t done;
  struct terminal *list;
  unsigned n;
  uint64_t seq;
  int stop_fd;          /* an eventfd written once at stop; every terminal polls it */
  bool stopping;
  unsigned char key[32]; /* of the tokens */
};

enum term_state {
  TERM_PENDING,   /* the 101 answer is on its way */
  TERM_OPEN,      /* upgraded: the thread owns the socket */
  TERM_ABANDONED, /* the upgrade will not come */
};

struct terminal {
  struct http_server *h;
  struct terminals *ts;
  struct terminal *prev, *next;
  uint64_t seq;
  enum term_state state;
  int wake_fd;          /* an eventfd: the upgrade came, or will not */
  char sandbox_id[SBX_ID_MAX];
  struct sbx_proc_stream *ps;
  uint32_t pid;
  bool shell_ended;     /* nothing left to kill */
  bool gone;            /* the sandbox went away */
  /* from the upgrade */
  struct MHD_UpgradeResponseHandle *urh;
  int sock;
  uint8_t *extra;       /* bytes libmicrohttpd read past the request */
  size_t extra_len, extra_off;
  /* the loop */
  struct term_io io;
  wslay_event_context_ptr ws;
  size_t round_left;
  uint64_t last_input_ns, last_frame_ns;
  const char *end_reason;
};

/* ---- tokens and the URL ---- */

static void
token_mac (const struct terminals *ts, const char *id, long long exp, char hex[65])
{
  char msg[128];
  int n = snprintf (msg, sizeof msg, "sbxd-terminal\n%s\n%lld", id, exp);
  unsigned char md[32];
  unsigned len = 0;
  HMAC (EVP_sha256 (), ts->key, sizeof ts->key, (const unsigned char *) msg, (size_t) n, md, &len);
  for (unsigned i = 0; i < 32; i++)
    snprintf (hex + 2 * i, 3, "%02x", md[i]);
}

enum token_check { TOKEN_OK, TOKEN_MALFORMED, TOKEN_WRONG, TOKEN_EXPIRED };

static enum token_check
token_check (const struct terminals *ts, const char *id, const char *token, long long now_s)
{
  if (token == NULL)
    return TOKEN_MALFORMED;
  long long exp = 0;
  size_t i = 0;
  for (; token[i] >= '0' && token[i] <= '9' && i < 12; i++)
    exp = exp * 10 + (token[i] - '0');
  if (i == 0 || token[i] != '.' || strlen (token + i + 1) != 64)
    return TOKEN_MALFORMED;
  char want[65];
  token_mac (ts, id, exp, want);
  /* constant time: a MAC must not be guessable byte by byte */
  if (CRYPTO_memcmp (want, token + i + 1, 64) != 0)
    return TOKEN_WRONG;
  return exp < now_s ? TOKEN_EXPIRED : TOKEN_OK;
}

/* HOST is a host[:port] fit to put in a URL. */
static bool
host_ok (const char *host)
{
  size_t n = strlen (host);
  if (n == 0 || n > 255)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!(host[i] >= 'a' && host[i] <= 'z') && !(host[i] >= 'A' && host[i] <= 'Z')
        && !(host[i] >= '0' && host[i] <= '9') && !strchr (".-:[]_", host[i]))
      return false;
  return true;
}

/* The address the request came to, when it named no usable Host. */
static void
local_host (struct MHD_Connection *c, char *out, size_t size)
{
  snprintf (out, size, "127.0.0.1");
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (c, MHD_CONNECTION_INFO_CONNECTION_FD);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (ci == NULL || getsockname (ci->connect_fd, (struct sockaddr *) &ss, &len) < 0)
    return;
  char a[64];
  if (ss.ss_family == AF_INET)
    {
      struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
      if (inet_ntop (AF_INET, &sin->sin_addr, a, sizeof a))
        snprintf (out, size, "%s:%u", a, (unsigned) ntohs (sin->sin_port));
    }
  else if (ss.ss_family == AF_INET6)
    {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
      if (inet_ntop (AF_INET6, &sin6->sin6_addr, a, sizeof a))
        snprintf (out, size, "[%s]:%u", a, (unsigned) ntohs (sin6->sin6_port));
    }
}

static bool
came_over_tls (struct MHD_Connection *c)
{
  if (MHD_get_connection_info (c, MHD_CONNECTION_INFO_PROTOCOL) != NULL)
    return true;
  const char *p = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "X-Forwarded-Proto");
  if (p == NULL)
    return false;
  while (*p == ' ')
    p++;
  return strncasecmp (p, "https", 5) == 0 && (p[5] == '\0' || p[5] == ',' || p[5] == ' ');
}

/* The URL and its expiry (ms since the epoch). */
static char *
terminal_url (struct call *k, const char *id, int64_t *expires_ms)
{
  struct terminals *ts = k->h->terminals;
  if (ts == NULL || !valid_id (id))
    return NULL;
  long long exp = sbx_wall_ms () / 1000 + k->h->terminal_ttl_s;
  char mac[65];
  token_mac (ts, id, exp, mac);
  char host[300];
  const char *hh = MHD_lookup_connection_value (k->c, MHD_HEADER_KIND, "Host");
  if (hh && host_ok (hh))
    snprintf (host, sizeof host, "%s", hh);
  else
    local_host (k->c, host, sizeof host);
  char *url = NULL;
  if (asprintf (&url, "%s://%s/v1/sandboxes/terminal?id=%s&token=%lld.%s", came_over_tls (k->c) ? "wss" : "ws",
                host, id, exp, mac)
      < 0)
    return NULL;
  if (expires_ms)
    *expires_ms = (int64_t) exp * 1000;
  return url;
}

char *
v1_terminal_url (struct call *k, const char *sandbox_id)
{
  return terminal_url (k, sandbox_id, NULL);
}

/* POST /v1/sandboxes/terminal {id}: a fresh terminalUrl (the sandbox
   object's expires with its token). */
enum MHD_Result
v1_terminal_new (struct call *k)
{
  enum MHD_Result ret;
  json_t *b = body_object (k->c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *id = NULL;
  if (opt_string (k->c, b, "id", &id, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  struct sbx_sandbox_rec rec;
  if (!v1_sandbox (k, id, &rec, &ret))
    {
      json_decref (b);
      return ret;
    }
  sbx_sandbox_rec_free (&rec);
  int64_t exp_ms = 0;
  char *url = terminal_url (k, id, &exp_ms);
  json_decref (b);
  if (url == NULL)
    return send_error (k->c, 500, "Cannot make a terminal URL");
  json_t *o = json_pack ("{s:s, s:I}", "terminalUrl", url, "expiresAt", (json_int_t) exp_ms);
  free (url);
  return send_json (k->c, 200, o);
}

/* ---- a client's messages ---- */

enum term_msg
terminal_message (uint8_t opcode, const uint8_t *data, size_t len, unsigned *rows, unsigned *cols)
{
  if ((opcode != WSLAY_TEXT_FRAME && opcode != WSLAY_BINARY_FRAME) || len == 0)
    return TERM_MSG_NONE;
  if (opcode == WSLAY_BINARY_FRAME || len > TERM_RESIZE_MSG_MAX || data[0] != '{')
    return TERM_MSG_INPUT;
  json_t *j = json_loadb ((const char *) data, len, JSON_REJECT_DUPLICATES, NULL);
  json_t *type = json_object_get (j, "type");
  if (!json_is_object (j) || !json_is_string (type) || json_string_length (type) != 6
      || memcmp (json_string_value (type), "resize", 6) != 0)
    {
      json_decref (j);
      return TERM_MSG_INPUT;
    }
  /* a resize that is not one (sizes missing, not integers, out of range)
     is dropped, not typed into the shell */
  json_t *c = json_object_get (j, "cols"), *r = json_object_get (j, "rows");
  enum term_msg m = TERM_MSG_NONE;
  if (json_is_integer (c) && json_is_integer (r) && json_integer_value (c) >= 1
      && json_integer_value (c) <= TERM_SIZE_MAX && json_integer_value (r) >= 1
      && json_integer_value (r) <= TERM_SIZE_MAX)
    {
      *cols = (unsigned) json_integer_value (c);
      *rows = (unsigned) json_integer_value (r);
      m = TERM_MSG_RESIZE;
    }
  json_decref (j);
  return m;
}

static ssize_t
ws_recv (wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
  (void) flags;
  struct term_io *io = ud;
  ssize_t n = io->recv (io->ud, buf, len);
  if (n == 0)
    wslay_event_set_error (ctx, WSLAY_ERR_WOULDBLOCK);
  else if (n < 0)
    wslay_event_set_error (ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return n > 0 ? n : -1;
}

static ssize_t
ws_send (wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
  (void) flags;
  struct term_io *io = ud;
  ssize_t n = io->send (io->ud, data, len);
  if (n == 0)
    wslay_event_set_error (ctx, WSLAY_ERR_WOULDBLOCK);
  else if (n < 0)
    wslay_event_set_error (ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return n > 0 ? n : -1;
}

static void
ws_message (wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
  (void) ctx;
  struct term_io *io = ud;
  bool data = arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME;
  if (io->activity)
    io->activity (io->ud, data);
  unsigned rows = 0, cols = 0;
  switch (terminal_message (arg->opcode, arg->msg, arg->msg_length, &rows, &cols))
    {
    case TERM_MSG_INPUT:
      io->input (io->ud, arg->msg, arg->msg_length);
      break;
    case TERM_MSG_RESIZE:
      io->resize (io->ud, rows, cols);
      break;
    case TERM_MSG_NONE:
      break;
    }
}

wslay_event_context_ptr
terminal_ws_new (struct term_io *io)
{
  struct wslay_event_callbacks cb = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .on_msg_recv_callback = ws_message,
  };
  wslay_event_context_ptr ctx = NULL;
  if (wslay_event_context_server_init (&ctx, &cb, io) != 0)
    return NULL;
  wslay_event_config_set_max_recv_msg_length (ctx, TERM_IN_MSG_MAX);
  return ctx;
}

/* ---- a terminal's socket and process ---- */

static ssize_t
sock_recv (void *ud, uint8_t *buf, size_t len)
{
  struct terminal *t = ud;
  if (t->extra_off < t->extra_len)
    {
      size_t n = t->extra_len - t->extra_off < len ? t->extra_len - t->extra_off : len;
      memcpy (buf, t->extra + t->extra_off, n);
      t->extra_off += n;
      return (ssize_t) n;
    }
  if (t->round_left == 0)
    return 0;
  if (len > t->round_left)
    len = t->round_left;
  for (;;)
    {
      ssize_t n = recv (t->sock, buf, len, MSG_DONTWAIT);
      if (n > 0)
        {
          t->round_left -= (size_t) n;
          return n;
        }
      if (n == 0)
        {
          t->end_reason = "client disconnected";
          return -1;
        }
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      t->end_reason = "client connection failed";
      return -1;
    }
}

static ssize_t
sock_send (void *ud, const uint8_t *buf, size_t len)
{
  struct terminal *t = ud;
  for (;;)
    {
      ssize_t n = send (t->sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0)
        return n;
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      t->end_reason = "client connection failed";
      return -1;
    }
}

static void
queue_close (struct terminal *t, uint16_t code, const char *reason)
{
  if (wslay_event_queue_close (t->ws, code, (const uint8_t *) reason, strlen (reason)) == 0 && !t->end_reason)
    t->end_reason = reason;
}

/* A call into the sandbox failed: it may have gone. */
static void
sandbox_failed (struct terminal *t, const struct sbx_err *err)
{
  enum sbx_err_kind kind = sbx_err_kind (err);
  if (kind == SBX_E_STOPPED || kind == SBX_E_NOT_FOUND)
    {
      t->gone = t->shell_ended = true;
      queue_close (t, WSLAY_CODE_GOING_AWAY, "sandbox ended");
    }
  /* paused (keystrokes are dropped until it resumes), or a shell not
     reading its terminal: the terminal goes on */
}

static void
term_input (void *ud, const uint8_t *data, size_t len)
{
  struct terminal *t = ud;
  struct sbx_err err;
  if (!t->gone && sbx_proc_input (t->h->engine, t->sandbox_id, t->pid, data, len, &err) < 0)
    sandbox_failed (t, &err);
}

static void
term_resize (void *ud, unsigned rows, unsigned cols)
{
  struct terminal *t = ud;
  struct sbx_err err;
  if (!t->gone && sbx_proc_resize (t->h->engine, t->sandbox_id, t->pid, rows, cols, &err) < 0)
    sandbox_failed (t, &err);
}

static void
term_activity (void *ud, bool data)
{
  struct terminal *t = ud;
  uint64_t now = sbx_now_ns ();
  t->last_frame_ns = now;
  if (data)
    t->last_input_ns = now;
}

/* One event of the shell. */
static void
shell_event (struct terminal *t)
{
  struct sbx_proc_event ev;
  struct sbx_err err;
  int r = sbx_proc_stream_next (t->ps, &ev, &err);
  if (r < 0)
    {
      if (sbx_err_kind (&err) == SBX_E_STOPPED)
        sandbox_failed (t, &err);
      else
        queue_close (t, WSLAY_CODE_INTERNAL_SERVER_ERROR, "terminal failed");
      t->shell_ended = true; /* the stream is over either way */
      return;
    }
  if (r == 0 || ev.kind == SBX_PROC_END)
    {
      t->shell_ended = true;
      queue_close (t, WSLAY_CODE_NORMAL_CLOSURE, "shell exited");
      return;
    }
  if ((ev.kind == SBX_PROC_PTY || ev.kind == SBX_PROC_STDOUT || ev.kind == SBX_PROC_STDERR) && ev.len)
    {
      /* binary: a chunk of terminal output may end inside a character */
      struct wslay_event_msg m = { WSLAY_BINARY_FRAME, ev.data, ev.len };
      wslay_event_queue_msg (t->ws, &m);
    }
}

static int
ms_until (uint64_t when_ns, uint64_t now_ns)
{
  if (when_ns <= now_ns)
    return 0;
  uint64_t ms = (when_ns - now_ns) / 1000000u + 1;
  return ms > 60000 ? 60000 : (int) ms;
}

static void
terminal_loop (struct terminal *t)
{
  const uint64_t s = 1000000000ull;
  uint64_t now = sbx_now_ns ();
  uint64_t next_ping = now + TERM_PING_S * s, close_by = 0;
  t->last_input_ns = t->last_frame_ns = now;
  int one = 1;
  setsockopt (t->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* keystrokes go out at once */
  bool stopped = false;
  for (;;)
    {
      if (!wslay_event_want_read (t->ws) && !wslay_event_want_write (t->ws))
        break; /* closed both ways, or failed */
      now = sbx_now_ns ();
      /* once a close is on its way, either side's, the other has a few
         seconds to finish the handshake */
      if (close_by == 0 && (t->end_reason || wslay_event_get_close_received (t->ws)))
        close_by = now + (stopped ? 1 : TERM_CLOSE_S) * s;
      if (close_by && now >= close_by)
        break;
      bool room = wslay_event_get_queued_msg_length (t->ws) < TERM_OUT_MAX;
      struct pollfd pf[3] = {
        { t->sock, (short) ((wslay_event_want_read (t->ws) && room ? POLLIN : 0)
                            | (wslay_event_want_write (t->ws) ? POLLOUT : 0)), 0 },
        { t->shell_ended || close_by || !room ? -1 : sbx_proc_stream_fd (t->ps), POLLIN, 0 },
        { stopped ? -1 : t->ts->stop_fd, POLLIN, 0 },
      };
      uint64_t wake = next_ping;
      if (t->last_input_ns + TERM_IDLE_S * s < wake)
        wake = t->last_input_ns + TERM_IDLE_S * s;
      if (t->last_frame_ns + TERM_DEAD_S * s < wake)
        wake = t->last_frame_ns + TERM_DEAD_S * s;
      if (close_by && close_by < wake)
        wake = close_by;
      int n = poll (pf, 3, ms_until (wake, now));
      if (n < 0 && errno != EINTR)
        {
          t->end_reason = "poll failed";
          break;
        }
      if (n > 0 && (pf[2].revents & POLLIN))
        {
          stopped = true;
          close_by = 0;
          queue_close (t, WSLAY_CODE_GOING_AWAY, "server stopping");
        }
      if (n > 0 && pf[1].revents)
        shell_event (t);
      if (n > 0 && (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) && wslay_event_want_read (t->ws))
        {
          t->round_left = TERM_ROUND_IN;
          if (wslay_event_recv (t->ws) != 0)
            break;
        }
      if (wslay_event_want_write (t->ws) && wslay_event_send (t->ws) != 0)
        break;
      now = sbx_now_ns ();
      if (close_by)
        continue;
      if (now >= t->last_frame_ns + TERM_DEAD_S * s)
        {
          t->end_reason = "client stopped answering";
          break;
        }
      if (now >= t->last_input_ns + TERM_IDLE_S * s)
        queue_close (t, WSLAY_CODE_GOING_AWAY, "idle for too long");
      else if (now >= next_ping)
        {
          struct wslay_event_msg ping = { WSLAY_PING, NULL, 0 };
          wslay_event_queue_msg (t->ws, &ping);
          next_ping = now + TERM_PING_S * s;
        }
    }
  if (!t->end_reason)
    t->end_reason = wslay_event_get_close_received (t->ws) ? "client closed" : "closed";
}

/* ---- the terminals ---- */

static struct terminal *
find_locked (struct terminals *ts, uint64_t seq)
{
  for (struct terminal *t = ts->list; t; t = t->next)
    if (t->seq == seq)
      return t;
  return NULL;
}

static void
wake (int fd)
{
  uint64_t one = 1;
  if (write (fd, &one, sizeof one) < 0)
    sbx_log_fields (SBX_LOG_WARN, "terminal wake-up", "error", strerror (errno), NULL);
}

/* Everything of T goes, its slot included. */
static void
terminal_end (struct terminal *t)
{
  struct terminals *ts = t->ts;
  if (!t->shell_ended)
    {
      struct sbx_err err;
      if (sbx_proc_kill_tree (t->h->engine, t->sandbox_id, t->pid, &err) < 0)
        sbx_log_fields (SBX_LOG_DEBUG, "terminal shell not killed", "sandbox", t->sandbox_id, "error", err.msg,
                        NULL);
    }
  sbx_proc_stream_close (t->ps);
  if (t->ws)
    wslay_event_context_free (t->ws);
  if (t->urh)
    MHD_upgrade_action (t->urh, MHD_UPGRADE_ACTION_CLOSE);
  free (t->extra);
  if (t->wake_fd >= 0)
    close (t->wake_fd);
  pthread_mutex_lock (&ts->lock);
  if (t->prev)
    t->prev->next = t->next;
  else
    ts->list = t->next;
  if (t->next)
    t->next->prev = t->prev;
  ts->n--;
  pthread_cond_broadcast (&ts->done);
  pthread_mutex_unlock (&ts->lock);
  free (t);
}

static void *
terminal_main (void *arg)
{
  struct terminal *t = arg;
  struct terminals *ts = t->ts;
  struct pollfd pf[2] = { { t->wake_fd, POLLIN, 0 }, { ts->stop_fd, POLLIN, 0 } };
  while (poll (pf, 2, TERM_UPGRADE_WAIT_S * 1000) < 0 && errno == EINTR)
    ;
  pthread_mutex_lock (&ts->lock);
  bool open = t->state == TERM_OPEN;
  if (!open)
    t->state = TERM_ABANDONED;
  pthread_mutex_unlock (&ts->lock);
  if (open)
    {
      t->io = (struct term_io) { sock_recv, sock_send, term_input, term_resize, term_activity, t };
      t->ws = terminal_ws_new (&t->io);
      char pid[16];
      snprintf (pid, sizeof pid, "%u", t->pid);
      sbx_log_fields (SBX_LOG_INFO, "terminal opened", "sandbox", t->sandbox_id, "pid", pid, NULL);
      sbx_service_busy_begin (t->sandbox_id);
      if (t->ws)
        terminal_loop (t);
      sbx_service_busy_end (t->sandbox_id);
      sbx_log_fields (SBX_LOG_INFO, "terminal closed", "sandbox", t->sandbox_id, "pid", pid, "reason",
                      t->end_reason ? t->end_reason : "out of memory", NULL);
    }
  terminal_end (t);
  return NULL;
}

/* libmicrohttpd's thread, once the 101 answer is out: hand the socket to
   the terminal's thread (never blocks).  CON_CLS is the request, NULL if
   it is already over. */
static void
on_upgrade (void *cls, struct MHD_Connection *c, void *con_cls, const char *extra_in, size_t extra_in_size,
            MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
  (void) c;
  struct terminals *ts = cls;
  struct request *rq = con_cls;
  uint8_t *extra = NULL;
  if (extra_in_size && (extra = malloc (extra_in_size)) != NULL)
    memcpy (extra, extra_in, extra_in_size);
  pthread_mutex_lock (&ts->lock);
  struct terminal *t = rq ? find_locked (ts, rq->terminal_seq) : NULL;
  if (t && t->state == TERM_PENDING && (extra || extra_in_size == 0))
    {
      t->state = TERM_OPEN;
      t->sock = sock;
      t->urh = urh;
      t->extra = extra;
      t->extra_len = extra_in_size;
      wake (t->wake_fd);
      pthread_mutex_unlock (&ts->lock);
      return;
    }
  pthread_mutex_unlock (&ts->lock);
  free (extra);
  MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
}

void
terminal_request_done (struct http_server *h, uint64_t seq)
{
  struct terminals *ts = h->terminals;
  pthread_mutex_lock (&ts->lock);
  struct terminal *t = find_locked (ts, seq);
  if (t && t->state == TERM_PENDING)
    {
      t->state = TERM_ABANDONED;
      wake (t->wake_fd);
    }
  pthread_mutex_unlock (&ts->lock);
}

/* Does the comma-separated list of header NAME hold TOKEN? */
static bool
header_has (struct MHD_Connection *c, const char *name, const char *token)
{
  const char *v = MHD_lookup_connection_value (c, MHD_HEADER_KIND, name);
  size_t tl = strlen (token);
  while (v && *v)
    {
      while (*v == ' ' || *v == '\t' || *v == ',')
        v++;
      size_t n = strcspn (v, ",");
      size_t m = n;
      while (m && (v[m - 1] == ' ' || v[m - 1] == '\t'))
        m--;
      if (m == tl && strncasecmp (v, token, tl) == 0)
        return true;
      v += n;
    }
  return false;
}

/* Sec-WebSocket-Accept for the client's KEY (RFC 6455: base64 of the SHA-1
   of the key and the protocol's GUID); false for a key that is not the
   base64 of 16 bytes. */
static bool
ws_accept (const char *key, char out[32])
{
  unsigned char raw[24];
  size_t kl = strlen (key);
  if (kl != 24 || EVP_DecodeBlock (raw, (const unsigned char *) key, 24) != 18 || key[22] != '=' || key[23] != '=')
    return false;
  char buf[64];
  snprintf (buf, sizeof buf, "%s%s", key, WS_GUID);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdl = 0;
  if (!EVP_Digest (buf, strlen (buf), md, &mdl, EVP_sha1 (), NULL) || mdl != 20)
    return false;
  EVP_EncodeBlock ((unsigned char *) out, md, 20);
  return true;
}

/* A slot for a terminal in sandbox ID; NULL after answering. */
static struct terminal *
terminal_reserve (struct call *k, const char *id, enum MHD_Result *ret)
{
  struct terminals *ts = k->h->terminals;
  struct terminal *t = calloc (1, sizeof *t);
  int wfd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t == NULL || wfd < 0)
    {
      free (t);
      if (wfd >= 0)
        close (wfd);
      *ret = send_error (k->c, 503, "Cannot open a terminal now; retry later");
      return NULL;
    }
  pthread_mutex_lock (&ts->lock);
  unsigned here = 0;
  for (struct terminal *o = ts->list; o; o = o->next)
    here += strcmp (o->sandbox_id, id) == 0;
  const char *why = ts->stopping ? "Server is stopping" : ts->n >= TERMINALS_MAX ? "Too many terminals open" : NULL;
  if (why == NULL && here < TERMINALS_PER_SANDBOX)
    {
      *t = (struct terminal) { .h = k->h, .ts = ts, .seq = ++ts->seq, .state = TERM_PENDING, .wake_fd = wfd,
                               .sock = -1, .next = ts->list };
      snprintf (t->sandbox_id, sizeof t->sandbox_id, "%s", id);
      if (ts->list)
        ts->list->prev = t;
      ts->list = t;
      ts->n++;
      pthread_mutex_unlock (&ts->lock);
      return t;
    }
  pthread_mutex_unlock (&ts->lock);
  free (t);
  close (wfd);
  *ret = why ? send_error (k->c, 503, "%s on this server (at most %u); retry later", why, TERMINALS_MAX)
             : send_error (k->c, 429, "Too many terminals open in this sandbox (at most %u)",
                           TERMINALS_PER_SANDBOX);
  return NULL;
}

/* GET /v1/sandboxes/terminal?id=ID&token=TOKEN: the WebSocket. */
enum MHD_Result
v1_terminal (struct call *k)
{
  struct MHD_Connection *c = k->c;
  const char *id = query (c, "id"), *token = query (c, "token");
  if (id == NULL || *id == '\0')
    return send_error (c, 400, "Missing sandbox id");
  snprintf (k->rq->sandbox_id, sizeof k->rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, id);
  if (!valid_id (id))
    return send_error (c, 404, "Sandbox not found");
  switch (token_check (k->h->terminals, id, token, sbx_wall_ms () / 1000))
    {
    case TOKEN_OK:
      break;
    case TOKEN_MALFORMED:
      return send_error (c, 401, "Missing or malformed terminal token");
    case TOKEN_WRONG:
      return send_error (c, 403, "Terminal token is not valid for this sandbox");
    case TOKEN_EXPIRED:
      return send_error (c, 401, "Terminal token has expired");
    }
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (k->h->engine, id, &info, &err) < 0)
    return sbx_err_kind (&err) == SBX_E_NOT_FOUND ? send_error (c, 404, "Sandbox not found") : send_fail (c, &err);
  enum sbx_state st = info.state;
  sbx_info_free (&info);
  if (st == SBX_PAUSED)
    return send_error (c, 409, "Sandbox is paused: resume it to open a terminal");
  if (st == SBX_CREATING)
    return send_error (c, 409, "Sandbox is not ready yet");
  if (st != SBX_RUNNING)
    return send_error (c, 409, "Sandbox has ended");
  const char *ver = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
  const char *key = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
  char accept[32];
  if (!header_has (c, "Upgrade", "websocket") || !header_has (c, "Connection", "upgrade"))
    return send_error (c, 426, "This URL is a WebSocket: connect with a WebSocket client");
  if (ver == NULL || strcmp (ver, "13") != 0)
    return send_error (c, 426, "Unsupported WebSocket version (13 is)");
  if (key == NULL || !ws_accept (key, accept))
    return send_error (c, 400, "Invalid Sec-WebSocket-Key");

  enum MHD_Result ret;
  struct terminal *t = terminal_reserve (k, id, &ret);
  if (t == NULL)
    return ret;
  /* the shell starts before the answer, so that a sandbox that cannot
     run one is told in an answer, not in a close frame */
  const char *argv[] = { "/bin/bash", "-l", NULL };
  struct sbx_exec_opts o = { .argv = argv, .pty = true, .rows = 24, .cols = 80, .tag = "terminal" };
  struct sbx_proc_event ev;
  int r = sbx_exec_stream (k->h->engine, id, &o, &t->ps, &err);
  if (r == 0 && (r = sbx_proc_stream_next (t->ps, &ev, &err)) == 1 && ev.kind != SBX_PROC_START)
    r = sbx_failk (&err, SBX_E_INTERNAL, "the shell did not start");
  if (r < 0 || r == 0)
    {
      t->shell_ended = true;
      terminal_end (t);
      return r == 0 ? send_error (c, 500, "The shell did not start") : send_fail (c, &err);
    }
  t->pid = ev.pid;
  struct MHD_Response *resp = MHD_create_response_for_upgrade (on_upgrade, k->h->terminals);
  if (resp == NULL || !sbx_start_detached (terminal_main, t))
    {
      if (resp)
        MHD_destroy_response (resp);
      terminal_end (t);
      return send_error (c, 503, "Cannot open a terminal now; retry later");
    }
  /* from here the thread owns T: it waits for the upgrade, or for the
     request to end without one (terminal_request_done) */
  k->rq->terminal_seq = t->seq;
  MHD_add_response_header (resp, "Upgrade", "websocket");
  MHD_add_response_header (resp, "Sec-WebSocket-Accept", accept);
  return queue_response (c, 101, resp);
}

int
terminals_start (struct http_server *h, struct sbx_err *err)
{
  struct terminals *ts = calloc (1, sizeof *ts);
  if (ts == NULL)
    return sbx_fail (err, ENOMEM, "terminals");
  ts->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ts->stop_fd < 0)
    {
      int e = errno;
      free (ts);
      return sbx_fail (err, e, "eventfd");
    }
  pthread_mutex_init (&ts->lock, NULL);
  pthread_cond_init (&ts->done, NULL);
  /* a key of its own, so a token is never an envd access token */
  static const char label[] = "sbxd terminal tokens";
  unsigned len = 0;
  HMAC (EVP_sha256 (), h->envd_secret, sizeof h->envd_secret, (const unsigned char *) label, sizeof label - 1,
        ts->key, &len);
  h->terminals = ts;
  return 0;
}

bool
terminals_stop (struct http_server *h, int grace_s)
{
  struct terminals *ts = h->terminals;
  if (ts == NULL)
    return true;
  pthread_mutex_lock (&ts->lock);
  ts->stopping = true;
  pthread_mutex_unlock (&ts->lock);
  wake (ts->stop_fd);
  struct timespec until;
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += grace_s;
  pthread_mutex_lock (&ts->lock);
  while (ts->n && pthread_cond_timedwait (&ts->done, &ts->lock, &until) != ETIMEDOUT)
    ;
  bool idle = ts->n == 0;
  pthread_mutex_unlock (&ts->lock);
  return idle;
}

void
terminals_free (struct http_server *h)
{
  struct terminals *ts = h->terminals;
  if (ts == NULL)
    return;
  close (ts->stop_fd);
  pthread_mutex_destroy (&ts->lock);
  pthread_cond_destroy (&ts->done);
  free (ts);
  h->terminals = NULL;
}
