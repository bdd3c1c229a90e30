/*
 * test_webhook.c - the webhook sender (service/webhook.c) against a real
 * store file and a receiver on loopback: an event queued while the sender
 * is finishing the delivery before it is sent at once, not after the
 * sender's idle poll.
 *
 * The receiver answers each POST and then lets the test queue the next
 * event at once (after a jitter of 0 to 3 ms), so that the queueing falls
 * again and again in the moment the sender records the last delivery and
 * looks for the next.  A wake-up lost there leaves the event waiting for
 * the idle poll (a second); each event must arrive well before that.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "service/outbound.h"
#include "service/store.h"
#include "service/webhook.h"

#include "check.h"

#define ROUNDS 400
/* the sender polls every 1000 ms when idle: a lost wake-up costs about
   that, a delivery on loopback a few milliseconds */
#define LATE_MS 500

static struct
{
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int got;
  char last_id[64];
} rx = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, "" };

static int listen_fd;

/* Read one HTTP request (headers and a Content-Length body) into BUF. */
static ssize_t
read_request (int fd, char *buf, size_t n, char **body)
{
  size_t len = 0;
  long want = -1;
  for (;;)
    {
      if (len + 1 >= n)
        return -1;
      ssize_t r = read (fd, buf + len, n - 1 - len);
      if (r <= 0)
        return -1;
      len += (size_t) r;
      buf[len] = '\0';
      char *end = strstr (buf, "\r\n\r\n");
      if (end == NULL)
        continue;
      if (want < 0)
        {
          const char *cl = strcasestr (buf, "content-length:");
          if (cl == NULL || cl > end)
            return -1;
          want = strtol (cl + 15, NULL, 10);
        }
      *body = end + 4;
      if ((long) (len - (size_t) (end + 4 - buf)) >= want)
        return (ssize_t) len;
    }
}

static void *
receiver (void *arg)
{
  (void) arg;
  for (;;)
    {
      int c = accept (listen_fd, NULL, NULL);
      if (c < 0)
        return NULL;
      char buf[16384], *body = NULL;
      if (read_request (c, buf, sizeof buf, &body) < 0)
        {
          close (c);
          continue;
        }
      json_t *j = json_loads (body, 0, NULL);
      const char *id = json_string_value (json_object_get (j, "id"));
      static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      if (write (c, ok, sizeof ok - 1) < 0)
        perror ("write");
      close (c);
      pthread_mutex_lock (&rx.lock);
      snprintf (rx.last_id, sizeof rx.last_id, "%s", id ? id : "");
      rx.got++;
      pthread_cond_broadcast (&rx.cond);
      pthread_mutex_unlock (&rx.lock);
      json_decref (j);
    }
}

/* Wait up to 5 s for the receiver's count to reach N; 0 or -1. */
static int
wait_got (int n)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  int r = 0;
  pthread_mutex_lock (&rx.lock);
  while (rx.got < n && r == 0)
    r = pthread_cond_timedwait (&rx.cond, &rx.lock, &ts);
  pthread_mutex_unlock (&rx.lock);
  return r == 0 ? 0 : -1;
}

int
main (void)
{
  char dir[] = "/tmp/sbx-webhook-test-XXXXXX", path[128];
  if (mkdtemp (dir) == NULL)
    {
      perror ("mkdtemp");
      return 2;
    }
  snprintf (path, sizeof path, "%s/sbxd.db", dir);
  struct sbx_err err = { 0 };
  struct sbx_store *st = NULL;
  if (sbx_store_open (path, &st, &err) < 0)
    {
      fprintf (stderr, "open: %s\n", err.msg);
      return 2;
    }

  listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t sl = sizeof sa;
  if (listen_fd < 0 || bind (listen_fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (listen_fd, 16) < 0
      || getsockname (listen_fd, (struct sockaddr *) &sa, &sl) < 0)
    {
      perror ("listen");
      return 2;
    }
  pthread_t rt;
  pthread_create (&rt, NULL, receiver, NULL);

  struct sbx_org o;
  CHECK (sbx_store_org_ensure (st, "hooks", &o, &err) == 0);
  char *types[] = { "sandbox.lifecycle.created", NULL };
  struct sbx_webhook w = { .name = "rx", .enabled = true, .events = types, .secret = "s" };
  char url[64];
  snprintf (url, sizeof url, "http://127.0.0.1:%u/hook", ntohs (sa.sin_port));
  w.url = url;
  snprintf (w.org_id, sizeof w.org_id, "%s", o.id);
  CHECK (sbx_store_webhook_create (st, &w, &err) == 0);

  /* the receiver is on loopback: the operator opens it */
  struct sbx_outbound ob = { .n_allow = 1 };
  CHECK (sbx_ip_range_parse ("127.0.0.1/32", &ob.allow[0]) == 0);
  struct sbx_webhooks *wh = NULL;
  CHECK (sbx_webhooks_start (st, 1.0, &ob, &wh, &err) == 0);
  if (wh == NULL)
    return 2;

  unsigned seed = (unsigned) getpid ();
  int late = 0, lost = 0;
  int64_t worst = 0;
  for (int i = 0; i < ROUNDS; i++)
    {
      struct timespec jitter = { 0, (long) (rand_r (&seed) % 3000) * 1000L };
      nanosleep (&jitter, NULL);
      struct sbx_event ev;
      memset (&ev, 0, sizeof ev);
      snprintf (ev.org_id, sizeof ev.org_id, "%s", o.id);
      snprintf (ev.sandbox_id, sizeof ev.sandbox_id, "sbx%d", i);
      snprintf (ev.template_id, sizeof ev.template_id, "base");
      snprintf (ev.type, sizeof ev.type, "%s", types[0]);
      ev.data_json = (char *) "{}";
      if (sbx_store_event_add (st, &ev, &err) < 0)
        {
          fprintf (stderr, "event_add: %s\n", err.msg);
          failed++;
          break;
        }
      sbx_webhooks_kick (wh);
      uint64_t t0 = sbx_now_ns ();
      if (wait_got (i + 1) < 0)
        {
          lost++;
          break;
        }
      int64_t took = (int64_t) ((sbx_now_ns () - t0) / 1000000);
      worst = took > worst ? took : worst;
      if (took >= LATE_MS)
        late++;
      pthread_mutex_lock (&rx.lock);
      bool same = strcmp (rx.last_id, ev.id) == 0;
      pthread_mutex_unlock (&rx.lock);
      CHECK (same);
    }
  printf ("webhook: %d events, slowest %lld ms, %d at %d ms or later\n", ROUNDS, (long long) worst, late, LATE_MS);
  CHECK (lost == 0);
  CHECK (late == 0);

  sbx_webhooks_stop (wh);
  shutdown (listen_fd, SHUT_RDWR);
  close (listen_fd);
  pthread_join (rt, NULL);
  sbx_store_close (st);
  if (sbx_rm_rf (dir, &err) < 0)
    fprintf (stderr, "cannot remove %s: %s\n", dir, err.msg);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
