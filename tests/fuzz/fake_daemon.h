/*
 * fake_daemon.h - the daemon's HTTP API in a fuzz harness: the real server
 * (sbx_http_start, every dialect, the service and its store) on a loopback
 * port, in front of fake_sandbox.h's engine, whose one sandbox FAKE_ID is
 * recorded in the store as the default organisation's and whose agent
 * gives the well-behaved answers of fake_agent_canned.  No webhook sender
 * runs, so a harness must not send event or webhook routes.
 *
 * fake_request sends one request (its own connection, Connection: close)
 * and reads the whole answer; no answer within 30 s is a finding.  With
 * FUZZ_LOG set in the environment the daemon logs as it would (debug).
 */
#include "fake_sandbox.h"

#include <netinet/in.h>

#include "fuzz_net.h"

#include "api/api.h"
#include "common/log.h"
#include "service/agents.h"

static struct http_server *fake_http;
static uint16_t fake_port;
static char fake_key[96];      /* Authorization: Bearer, the default organisation's */
static char fake_token[65];    /* X-Access-Token of FAKE_ID (E2B envd) */

static void
fake_check (int r, const struct sbx_err *err, const char *what)
{
  if (r < 0)
    {
      fprintf (stderr, "fake daemon: %s: %s\n", what, err->msg);
      abort ();
    }
}

static void
fake_daemon_start (void)
{
  sbx_log_set_level (getenv ("FUZZ_LOG") ? SBX_LOG_DEBUG : SBX_LOG_ERROR);
  fuzz_threads_begin ();
  const char *dir = fake_dir ();
  char path[128];
  snprintf (path, sizeof path, "%s/sandbox", dir);
  if (mkdir (path, 0700) < 0)
    abort ();
  struct sbx_engine *engine = fake_engine (path, fake_agent_canned, NULL);

  struct sbx_err err;
  struct sbx_store *store;
  struct sbx_service *svc;
  struct sbx_key_info info;
  struct sbx_org org;
  snprintf (path, sizeof path, "%s/sbxd.db", dir);
  fake_check (sbx_store_open (path, &store, &err), &err, "store");
  fake_check (sbx_store_key_create (store, "default", "sk-sb-", fake_key, sizeof fake_key, &info, &err), &err, "key");
  fake_check (sbx_store_org_get (store, "default", &org, &err), &err, "organisation");
  fake_check (sbx_service_open (store, &svc, &err), &err, "service");
  sbx_service_set_engine (svc, engine);
  struct sbx_sandbox_rec rec = { .id = FAKE_ID, .template_id = "base", .status = "running", .cpu_count = 1,
                                 .memory_mb = 512, .disk_mb = 1024 };
  snprintf (rec.org_id, sizeof rec.org_id, "%s", org.id);
  rec.started_ms = sbx_wall_ms ();
  rec.end_ms = rec.started_ms + 3600 * 1000;
  fake_check (sbx_store_sandbox_put (store, &rec, &err), &err, "sandbox record");

  /* a provider that is on (agents can be made) and answers nothing: the
     harnesses send no message that would reach it */
  setenv ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9", 1);
  struct sbx_agents *agents;
  fake_check (sbx_agents_open (svc, NULL, &agents, &err), &err, "agents");

  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  struct sbx_http_config hc = { .engine = engine,
                                .store = store,
                                .svc = svc,
                                .agents = agents,
                                .addr = (struct sockaddr *) &sa,
                                .docs_dir = SBXD_DOCS_DIR,
                                .state_dir = dir };
  fake_http = sbx_http_start (&hc, &err);
  if (fake_http == NULL)
    fake_check (-1, &err, "http");
  const union MHD_DaemonInfo *di = MHD_get_daemon_info (fake_http->mhd, MHD_DAEMON_INFO_BIND_PORT);
  if (di == NULL || di->port == 0)
    abort ();
  fake_port = di->port;
  fuzz_threads_end ();
  e2b_access_token (fake_http, FAKE_ID, fake_token);
}

/* Send HEAD (the request line and headers, each ending in CRLF, without
   Content-Length and the empty line) and BODY; the status of the answer,
   its head and body in *ANSWER (malloc'd, NUL-terminated, *LEN bytes). */
static int
fake_request (const char *head, const void *body, size_t len, char **answer, size_t *alen)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (fake_port),
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  struct timeval tv = { 30, 0 };
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (fd < 0 || fuzz_connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      perror ("fake request: connect");
      abort ();
    }
  char *req = NULL;
  int hl = asprintf (&req, "%sHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n", head, len);
  if (hl < 0)
    abort ();
  /* the server may answer (and close) before it read all: no matter */
  if (sbx_write_full (fd, req, (size_t) hl) >= 0 && len)
    sbx_write_full (fd, body, len);
  free (req);
  size_t n = 0, cap = 4096;
  char *buf = malloc (cap + 1);
  for (;;)
    {
      if (n == cap)
        {
          char *nb = realloc (buf, (cap *= 2) + 1);
          if (nb == NULL)
            abort ();
          buf = nb;
        }
      ssize_t k = read (fd, buf + n, cap - n);
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        {
          fprintf (stderr, "fake request: no complete answer within 30 s\n");
          abort ();
        }
      if (k <= 0)
        break;
      n += (size_t) k;
    }
  close (fd);
  /* the server closed first: wait for its connection thread to finish,
     and for the agent's (see fake_quiesce) */
  for (int i = 0; i < 20000; i++)
    {
      const union MHD_DaemonInfo *di = MHD_get_daemon_info (fake_http->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
      if (di == NULL || di->num_connections == 0)
        break;
      usleep (50);
    }
  fake_quiesce ();
  buf[n] = '\0';
  int status = 0;
  if (n >= 12 && strncmp (buf, "HTTP/1.", 7) == 0)
    status = atoi (buf + 9);
  if (answer)
    {
      *answer = buf;
      *alen = n;
    }
  else
    free (buf);
  return status;
}

/* The body of ANSWER (after the empty line), or NULL. */
static const char *
fake_answer_body (const char *answer)
{
  const char *p = strstr (answer, "\r\n\r\n");
  return p ? p + 4 : NULL;
}

/* An answer every harness checks: there is one, and an error's body (not
   chunked) is JSON in the dialect's shape. */
static void
fake_check_answer (int status, const char *answer)
{
  if (status < 100 || status > 599)
    {
      fprintf (stderr, "fake daemon: no HTTP answer: %.200s\n", answer);
      abort ();
    }
  const char *body = fake_answer_body (answer);
  if (status >= 400 && body && *body && strcasestr (answer, "Transfer-Encoding: chunked") == NULL
      && strcasestr (answer, "Content-Type: application/json"))
    {
      json_t *j = json_loads (body, 0, NULL);
      if (j == NULL || !json_is_object (j))
        {
          fprintf (stderr, "fake daemon: an error answer that is no JSON object: %.300s\n", answer);
          abort ();
        }
      json_decref (j);
    }
}
