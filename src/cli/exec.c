/*
 * exec.c - sbx exec and sbx shell: a process in the sandbox, its output
 * streamed as it comes, its exit code sbx's.
 *
 * Both run over POST /sandboxes/:id/processes/stream (NDJSON events:
 * start, stdout/stderr/pty, end) and send what the user types with
 * POST .../processes/:pid/stdin, terminal sizes with .../resize and
 * signals with .../signal.  The shell is that stream with a PTY, not seed
 * 004's WebSocket terminal: it is plain HTTP through libcurl (TLS and
 * proxies included) with no second protocol stack, and the process's
 * exit code comes back in the `end` event.
 *
 * One thread runs one curl multi handle: the stream, and at most one
 * request of each other kind in flight, so keystrokes arrive in order.
 * What is typed while a stdin request is in flight waits in a 64 KiB
 * buffer; past that stdin is not read until it drains.  Signals arrive on
 * a signalfd polled with curl's sockets (curl_multi_poll's extra fds).
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#define LINE_MAX_BYTES (32u << 20) /* one NDJSON event; the daemon sends far less */
#define STDIN_BUF 65536

enum side_kind { SIDE_STDIN, SIDE_RESIZE, SIDE_SIGNAL, SIDE_N };

struct side {
  CURL *h;
  struct curl_slist *hdrs;
  char *body;
  bool busy;
  struct cli_buf ans;
};

struct session {
  struct cli *c;
  const char *id;
  bool pty;
  CURLM *multi;
  CURL *stream;
  struct curl_slist *stream_hdrs;
  long status;
  struct cli_buf line, errbody;

  long pid;                 /* from `start`; 0 before */
  bool ended;               /* `end` came */
  int exit_code;
  bool timed_out;
  char *error;              /* an `error` event's message */
  bool write_failed;

  bool forward_stdin, stdin_eof, stdin_closed;
  char in[STDIN_BUF];
  size_t inlen;

  bool want_resize;
  const char *want_signal;
  bool quit;                /* SIGTERM or SIGHUP to sbx: end after the signal is sent */

  struct side side[SIDE_N];
  int sigfd;
};

/* ---- events ---- */

static void
handle_event (struct session *s, const char *p, size_t n)
{
  if (s->c->json)
    {
      /* --json: the daemon's events as they are, one a line */
      if (cli_write_all (1, p, n) < 0 || cli_write_all (1, "\n", 1) < 0)
        s->write_failed = true;
    }
  json_t *j = json_loadb (p, n, 0, NULL);
  const char *type = json_string_value (json_object_get (j, "type"));
  if (type == NULL)
    ;
  else if (strcmp (type, "start") == 0)
    s->pid = (long) json_integer_value (json_object_get (j, "pid"));
  else if (strcmp (type, "end") == 0)
    {
      s->ended = true;
      s->exit_code = (int) json_integer_value (json_object_get (j, "exitCode"));
      s->timed_out = json_is_true (json_object_get (j, "timedOut"));
    }
  else if (strcmp (type, "error") == 0)
    {
      free (s->error);
      s->error = strdup (json_string_value (json_object_get (j, "message")) ?: "error");
    }
  else if (!s->c->json && (strcmp (type, "stdout") == 0 || strcmp (type, "stderr") == 0 || strcmp (type, "pty") == 0))
    {
      const char *d = json_string_value (json_object_get (j, "data"));
      unsigned char *out;
      size_t len;
      if (d && cli_b64_decode (d, strlen (d), &out, &len) == 0)
        {
          if (cli_write_all (strcmp (type, "stderr") == 0 ? 2 : 1, out, len) < 0)
            s->write_failed = true;
          free (out);
        }
    }
  json_decref (j);
}

static size_t
stream_write (char *p, size_t size, size_t n, void *ud)
{
  struct session *s = ud;
  size_t len = size * n;
  if (s->status == 0)
    curl_easy_getinfo (s->stream, CURLINFO_RESPONSE_CODE, &s->status);
  if (s->status >= 300)
    return cli_buf_write (p, 1, len, &s->errbody);
  for (size_t i = 0; i < len;)
    {
      char *nl = memchr (p + i, '\n', len - i);
      size_t take = nl ? (size_t) (nl - (p + i)) : len - i;
      if (s->line.len + take > LINE_MAX_BYTES)
        return 0; /* a line beyond any event's size: break off */
      if (cli_buf_add (&s->line, p + i, take) < 0)
        return 0;
      i += take;
      if (nl)
        {
          i++;
          if (s->line.len)
            handle_event (s, s->line.data, s->line.len);
          s->line.len = 0;
        }
    }
  return s->write_failed ? 0 : len;
}

/* ---- the requests beside the stream ---- */

static int
side_send (struct session *s, enum side_kind k, const char *action, json_t *body)
{
  struct side *sd = &s->side[k];
  char path[160];
  snprintf (path, sizeof path, "/sandboxes/%s/processes/%ld/%s", s->id, s->pid, action);
  if (sd->h)
    {
      curl_easy_cleanup (sd->h);
      curl_slist_free_all (sd->hdrs);
    }
  free (sd->body);
  cli_buf_free (&sd->ans);
  sd->ans.max = 4096;
  sd->body = json_dumps (body, JSON_COMPACT);
  json_decref (body);
  sd->h = cli_easy (s->c, path, true, &sd->hdrs);
  if (sd->h == NULL || sd->body == NULL)
    return -1;
  curl_easy_setopt (sd->h, CURLOPT_POSTFIELDS, sd->body);
  curl_easy_setopt (sd->h, CURLOPT_WRITEFUNCTION, cli_buf_write);
  curl_easy_setopt (sd->h, CURLOPT_WRITEDATA, &sd->ans);
  curl_easy_setopt (sd->h, CURLOPT_PRIVATE, sd);
  sd->busy = true;
  return curl_multi_add_handle (s->multi, sd->h) == CURLM_OK ? 0 : -1;
}

static void
window_size (int *rows, int *cols)
{
  struct winsize ws;
  *rows = 24;
  *cols = 80;
  if ((ioctl (1, TIOCGWINSZ, &ws) == 0 || ioctl (0, TIOCGWINSZ, &ws) == 0) && ws.ws_row && ws.ws_col)
    {
      *rows = ws.ws_row > 1000 ? 1000 : ws.ws_row;
      *cols = ws.ws_col > 1000 ? 1000 : ws.ws_col;
    }
}

/* Start what is due: typed bytes, stdin's end, a resize, a signal. */
static int
kick (struct session *s)
{
  if (s->pid <= 0 || s->ended)
    return 0;
  if (!s->side[SIDE_STDIN].busy && s->inlen)
    {
      char *b64 = cli_b64_encode (s->in, s->inlen);
      if (b64 == NULL)
        return -1;
      s->inlen = 0;
      json_t *b = json_pack ("{s:s}", "data", b64);
      free (b64);
      if (side_send (s, SIDE_STDIN, "stdin", b) < 0)
        return -1;
    }
  else if (!s->side[SIDE_STDIN].busy && s->stdin_eof && !s->stdin_closed && s->forward_stdin)
    {
      s->stdin_closed = true;
      if (side_send (s, SIDE_STDIN, "stdin", json_pack ("{s:s, s:b}", "data", "", "close", 1)) < 0)
        return -1;
    }
  if (!s->side[SIDE_RESIZE].busy && s->want_resize && s->pty)
    {
      int rows, cols;
      window_size (&rows, &cols);
      s->want_resize = false;
      if (side_send (s, SIDE_RESIZE, "resize", json_pack ("{s:i, s:i}", "rows", rows, "cols", cols)) < 0)
        return -1;
    }
  if (!s->side[SIDE_SIGNAL].busy && s->want_signal)
    {
      const char *sig = s->want_signal;
      s->want_signal = NULL;
      if (side_send (s, SIDE_SIGNAL, "signal", json_pack ("{s:s}", "signal", sig)) < 0)
        return -1;
    }
  return 0;
}

/* ---- the loop ---- */

static void
read_signals (struct session *s)
{
  struct signalfd_siginfo si;
  while (read (s->sigfd, &si, sizeof si) == (ssize_t) sizeof si)
    switch (si.ssi_signo)
      {
      case SIGWINCH:
        s->want_resize = true;
        break;
      case SIGINT:
        s->want_signal = "SIGINT";
        break;
      case SIGQUIT:
        s->want_signal = "SIGQUIT";
        break;
      case SIGTERM:
        /* an interactive bash ignores SIGTERM: a shell is hung up on */
        s->want_signal = s->pty ? "SIGHUP" : "SIGTERM";
        s->quit = true;
        break;
      case SIGHUP:
        s->want_signal = "SIGHUP";
        s->quit = true;
        break;
      }
}

static void
read_stdin (struct session *s)
{
  ssize_t r = read (0, s->in + s->inlen, sizeof s->in - s->inlen);
  if (r > 0)
    s->inlen += (size_t) r;
  else if (r == 0 || (errno != EINTR && errno != EAGAIN))
    s->stdin_eof = true;
}

/* Run the session until the stream ends; returns sbx's exit code. */
static int
run (struct session *s, json_t *body)
{
  char path[128];
  snprintf (path, sizeof path, "/sandboxes/%s/processes/stream", s->id);
  char *data = json_dumps (body, JSON_COMPACT);
  s->line.max = 0;
  s->errbody.max = 4096;
  s->multi = curl_multi_init ();
  s->stream = cli_easy (s->c, path, true, &s->stream_hdrs);
  if (s->multi == NULL || s->stream == NULL || data == NULL)
    return free (data), cli_fail (SBX_EXIT_LOCAL, "out of memory");
  curl_easy_setopt (s->stream, CURLOPT_POSTFIELDS, data);
  curl_easy_setopt (s->stream, CURLOPT_WRITEFUNCTION, stream_write);
  curl_easy_setopt (s->stream, CURLOPT_WRITEDATA, s);
  curl_multi_add_handle (s->multi, s->stream);

  int rc = -1;
  CURLcode stream_res = CURLE_OK;
  bool stream_done = false, quitting = false;
  while (!stream_done)
    {
      if (kick (s) < 0)
        {
          rc = cli_fail (SBX_EXIT_LOCAL, "out of memory");
          break;
        }
      if (s->quit && s->want_signal == NULL && !s->side[SIDE_SIGNAL].busy && s->pid > 0)
        {
          /* the signal reached the daemon: leave, the process is told */
          quitting = true;
          break;
        }
      int running;
      curl_multi_perform (s->multi, &running);
      CURLMsg *m;
      int left;
      while ((m = curl_multi_info_read (s->multi, &left)))
        {
          if (m->msg != CURLMSG_DONE)
            continue;
          if (m->easy_handle == s->stream)
            {
              stream_done = true;
              stream_res = m->data.result;
              continue;
            }
          struct side *sd = NULL;
          curl_easy_getinfo (m->easy_handle, CURLINFO_PRIVATE, (char **) &sd);
          curl_multi_remove_handle (s->multi, m->easy_handle);
          if (sd)
            {
              sd->busy = false;
              long st = 0;
              curl_easy_getinfo (sd->h, CURLINFO_RESPONSE_CODE, &st);
              /* a keystroke after the process ended, a resize or a signal
                 refused: the stream tells the outcome; nothing to say */
              (void) st;
            }
        }
      if (stream_done)
        break;
      struct curl_waitfd extra[2];
      unsigned nextra = 0;
      extra[nextra++] = (struct curl_waitfd) { .fd = s->sigfd, .events = CURL_WAIT_POLLIN };
      bool watch_stdin = s->forward_stdin && !s->stdin_eof && s->inlen < sizeof s->in && s->pid > 0;
      if (watch_stdin)
        extra[nextra++] = (struct curl_waitfd) { .fd = 0, .events = CURL_WAIT_POLLIN };
      curl_multi_poll (s->multi, extra, nextra, 1000, NULL);
      if (extra[0].revents)
        read_signals (s);
      if (watch_stdin && extra[1].revents)
        read_stdin (s);
    }

  if (stream_done && s->status == 0)
    curl_easy_getinfo (s->stream, CURLINFO_RESPONSE_CODE, &s->status);
  if (rc < 0 && quitting)
    rc = 128 + SIGTERM;
  else if (rc < 0)
    {
      if (s->status >= 300)
        {
          char msg[4096];
          cli_error_message (s->errbody.data, s->errbody.len, msg, sizeof msg);
          rc = cli_fail (SBX_EXIT_SERVER, "%s (HTTP %ld)", msg, s->status);
        }
      else if (s->ended)
        {
          rc = s->exit_code;
          if (s->timed_out && !s->c->json)
            cli_fail (rc, "the command timed out");
        }
      else if (s->write_failed)
        rc = SBX_EXIT_LOCAL;
      else if (s->error)
        rc = cli_fail (SBX_EXIT_SERVER, "%s", s->error);
      else if (stream_res != CURLE_OK)
        rc = cli_fail (SBX_EXIT_CONNECT, "the stream broke off: %s", curl_easy_strerror (stream_res));
      else
        rc = cli_fail (SBX_EXIT_CONNECT, "the stream ended before the command did");
    }

  for (int k = 0; k < SIDE_N; k++)
    {
      if (s->side[k].h)
        {
          curl_multi_remove_handle (s->multi, s->side[k].h);
          curl_easy_cleanup (s->side[k].h);
        }
      curl_slist_free_all (s->side[k].hdrs);
      free (s->side[k].body);
      cli_buf_free (&s->side[k].ans);
    }
  curl_multi_remove_handle (s->multi, s->stream);
  curl_easy_cleanup (s->stream);
  curl_slist_free_all (s->stream_hdrs);
  curl_multi_cleanup (s->multi);
  cli_buf_free (&s->line);
  cli_buf_free (&s->errbody);
  free (s->error);
  free (data);
  return rc;
}

static int
block_signals (struct session *s, bool shell)
{
  sigset_t set;
  sigemptyset (&set);
  sigaddset (&set, SIGWINCH);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGHUP);
  if (!shell)
    {
      /* exec: ^C and ^\ typed at sbx go to the command */
      sigaddset (&set, SIGINT);
      sigaddset (&set, SIGQUIT);
    }
  sigprocmask (SIG_BLOCK, &set, NULL);
  s->sigfd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  return s->sigfd < 0 ? cli_fail (SBX_EXIT_LOCAL, "signalfd: %s", strerror (errno)) : 0;
}

/* ---- exec ---- */

int
cmd_exec (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "cwd", required_argument, NULL, 'w' },
                                        { "user", required_argument, NULL, 'u' },
                                        { "env", required_argument, NULL, 'e' },
                                        { "timeout", required_argument, NULL, 't' },
                                        { "stdin", no_argument, NULL, 'i' },
                                        { NULL, 0, NULL, 0 } };
  json_t *body = json_object (), *envs = json_object ();
  struct session s = { .c = c, .sigfd = -1 };
  int o, rc = 0;
  uint64_t v;
  json_object_set_new (body, "timeout", json_integer (0));
  while (rc == 0 && (o = cli_getopt (argc, argv, "w:u:e:t:i", opts, "exec")) != -1)
    switch (o)
      {
      case 'w':
        json_object_set_new (body, "cwd", json_string (optarg));
        break;
      case 'u':
        json_object_set_new (body, "user", json_string (optarg));
        break;
      case 'e':
        {
          const char *eq = strchr (optarg, '=');
          if (eq == NULL || eq == optarg)
            rc = cli_usage ("exec --env: expected KEY=VALUE, got '%.80s'", optarg);
          else
            {
              char *k = strndup (optarg, (size_t) (eq - optarg));
              json_object_set_new (envs, k, json_string (eq + 1));
              free (k);
            }
          break;
        }
      case 't':
        if (!cli_parse_uint (optarg, 3600, &v))
          rc = cli_usage ("exec: --timeout takes 0..3600 seconds, not '%.40s'", optarg);
        else
          json_object_set_new (body, "timeout", json_integer ((json_int_t) v));
        break;
      case 'i':
        s.forward_stdin = true;
        break;
      default:
        rc = SBX_EXIT_USAGE;
      }
  if (rc == 0 && argc - optind < 2)
    rc = cli_usage ("usage: sbx exec [OPTIONS] ID -- CMD [ARG]...");
  if (rc == 0)
    rc = cli_check_id (argv[optind]);
  if (rc == 0)
    {
      s.id = argv[optind];
      json_object_set_new (body, "cmd", json_string (argv[optind + 1]));
      json_t *args = json_array ();
      for (int i = optind + 2; i < argc; i++)
        json_array_append_new (args, json_string (argv[i]));
      json_object_set_new (body, "args", args);
      if (json_object_size (envs))
        json_object_set (body, "envs", envs);
      json_object_set_new (body, "stdin", json_boolean (s.forward_stdin));
      rc = block_signals (&s, false);
    }
  if (rc == 0)
    rc = run (&s, body);
  if (s.sigfd >= 0)
    close (s.sigfd);
  json_decref (envs);
  json_decref (body);
  return rc;
}

/* ---- shell ---- */

static struct termios saved_tio;
static bool raw_on;

static void
restore_tty (void)
{
  if (raw_on)
    tcsetattr (0, TCSAFLUSH, &saved_tio);
  raw_on = false;
}

int
cmd_shell (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "user", required_argument, NULL, 'u' },
                                        { "cwd", required_argument, NULL, 'w' },
                                        { NULL, 0, NULL, 0 } };
  json_t *body = json_object ();
  int o;
  while ((o = cli_getopt (argc, argv, "u:w:", opts, "shell")) != -1)
    {
      if (o == 'u')
        json_object_set_new (body, "user", json_string (optarg));
      else if (o == 'w')
        json_object_set_new (body, "cwd", json_string (optarg));
      else
        return json_decref (body), SBX_EXIT_USAGE;
    }
  if (argc - optind != 1)
    return json_decref (body), cli_usage ("usage: sbx shell [--user U] [--cwd D] ID");
  int rc = cli_check_id (argv[optind]);
  if (rc)
    return json_decref (body), rc;

  struct session s = { .c = c, .id = argv[optind], .pty = true, .forward_stdin = true, .sigfd = -1 };
  int rows, cols;
  window_size (&rows, &cols);
  const char *term = getenv ("TERM");
  json_object_set_new (body, "cmd", json_string ("bash"));
  json_object_set_new (body, "args", json_pack ("[s]", "-l"));
  json_object_set_new (body, "timeout", json_integer (0));
  json_object_set_new (body, "stdin", json_true ());
  json_object_set_new (body, "pty", json_pack ("{s:i, s:i}", "rows", rows, "cols", cols));
  json_object_set_new (body, "envs", json_pack ("{s:s}", "TERM", term && *term ? term : "xterm-256color"));

  rc = block_signals (&s, true);
  if (rc == 0 && isatty (0))
    {
      /* raw: every key, ^C and ^D included, goes to the sandbox's
         terminal, whose line discipline gives them their meaning */
      if (tcgetattr (0, &saved_tio) < 0)
        rc = cli_fail (SBX_EXIT_LOCAL, "tcgetattr: %s", strerror (errno));
      else
        {
          struct termios raw = saved_tio;
          cfmakeraw (&raw);
          raw.c_cc[VMIN] = 1;
          raw.c_cc[VTIME] = 0;
          if (tcsetattr (0, TCSAFLUSH, &raw) == 0)
            {
              raw_on = true;
              atexit (restore_tty);
            }
        }
    }
  if (rc == 0)
    {
      rc = run (&s, body);
      restore_tty ();
    }
  if (s.sigfd >= 0)
    close (s.sigfd);
  json_decref (body);
  return rc;
}
