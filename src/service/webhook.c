/*
 * webhook.c - delivery of lifecycle events to webhooks, in E2B's format.
 *
 * Events are queued as deliveries in the store (store.c) in the same
 * transaction that records them, so none is lost by a crash.  One worker
 * thread takes the next due delivery (a webhook's deliveries go out one at
 * a time, in event order), POSTs the event with libcurl and records the
 * outcome: a 2xx ends it; anything else (or no answer within the timeout)
 * schedules a retry with a growing delay, until the schedule runs out and
 * the delivery is marked failed.  Pending deliveries survive restarts: the
 * worker simply finds them in the store.  The API never waits on this.
 *
 * The body is {version:"v2", id, type, timestamp, sandboxId, sandboxTeamId,
 * sandboxTemplateId, sandboxBuildId, sandboxExecutionId, eventData} and the
 * headers e2b-webhook-id, e2b-delivery-id (one per attempt),
 * e2b-signature-version: v1 and e2b-signature: base64 (without trailing
 * '=') of SHA-256 over the secret followed by the raw body.
 *
 * Every attempt goes through the outbound guard (outbound.c): the URL's
 * host is resolved and checked again, and the POST goes to the address
 * that was checked.  What the delivery log shows the tenant is "refused"
 * when the guard said no, "HTTP <status>", or for no answer the generic
 * libcurl reason ("no answer" when the receiver is in a range only the
 * operator opened); the detail goes to the daemon's log alone.
 */
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "encode.h"
#include "outbound.h"
#include "telemetry.h"

/* Seconds after the first attempt at which retries are made: more and
   longer than E2B's three retries 10 s apart, so a receiver that is down
   for a while still gets everything (about 2.5 hours in all). */
static const int retry_delays_s[] = { 10, 30, 60, 120, 300, 600, 1800, 3600, 3600 };
#define MAX_ATTEMPTS ((int) (sizeof retry_delays_s / sizeof retry_delays_s[0]) + 1)

struct sbx_webhooks {
  struct sbx_store *store;
  double scale; /* multiplies every delay; tests make it small */
  long timeout_ms;
  struct sbx_outbound outbound; /* what the operator opened */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool kicked; /* an event was queued since the worker last looked */
  bool stop;
  pthread_t thread;
};

/* JSON body of an event, as delivered and as listed by the events API. */
json_t *
sbx_event_json (const struct sbx_event *ev)
{
  char ts[40];
  sbx_rfc3339 (ev->timestamp_ms, ts, sizeof ts);
  json_t *data = ev->data_json ? json_loads (ev->data_json, 0, NULL) : NULL;
  if (data == NULL)
    data = json_object ();
  return json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "version", "v2", "id", ev->id, "type",
                    ev->type, "timestamp", ts, "sandboxId", ev->sandbox_id, "sandboxTeamId", ev->org_id,
                    "sandboxTemplateId", ev->template_id, "sandboxBuildId", ev->template_id, "sandboxExecutionId",
                    ev->sandbox_id, "eventData", data);
}

void
sbx_webhook_signature (const char *secret, const char *body, size_t len, char *out, size_t n)
{
  sbx_sha256_b64 (secret, strlen (secret), body, len, out, n);
}

static size_t
discard_body (char *ptr, size_t size, size_t nmemb, void *ud)
{
  (void) ptr;
  (void) ud;
  return size * nmemb;
}

/* What the delivery log shows the tenant for an attempt without an
   answer: nothing that tells a closed port from a filtered one. */
#define SHOWN_REFUSED "refused"
#define SHOWN_NO_ANSWER "no answer"
#define DETAIL_MAX (SBX_ERR_MSG_MAX + 64)

/* One attempt.  Returns the HTTP status, or 0 when there was no answer:
   then SHOWN is what the tenant is told and DETAIL (DETAIL_MAX bytes)
   what the daemon's log says. */
static long
post_event (struct sbx_webhooks *wh, const struct sbx_webhook *w, const struct sbx_delivery *d, const char *body,
            const char **shown, char *detail)
{
  *shown = SHOWN_NO_ANSWER;
  CURL *curl = curl_easy_init ();
  if (curl == NULL)
    {
      snprintf (detail, DETAIL_MAX, "curl_easy_init failed");
      return 0;
    }
  struct sbx_outbound_target target;
  struct sbx_err err;
  if (sbx_outbound_open (&wh->outbound, w->url, curl, &target, &err) < 0)
    {
      *shown = SHOWN_REFUSED;
      snprintf (detail, DETAIL_MAX, "%s", err.msg);
      sbx_outbound_close (&target);
      curl_easy_cleanup (curl);
      return 0;
    }
  char sig[64], h_sig[96], h_id[96], h_del[96];
  sbx_webhook_signature (w->secret ? w->secret : "", body, strlen (body), sig, sizeof sig);
  snprintf (h_sig, sizeof h_sig, "e2b-signature: %s", sig);
  snprintf (h_id, sizeof h_id, "e2b-webhook-id: %s", w->id);
  unsigned char rnd[8];
  sbx_random_bytes (rnd, sizeof rnd);
  snprintf (h_del, sizeof h_del, "e2b-delivery-id: %lld-%u-%02x%02x%02x%02x", (long long) d->id, d->attempts + 1,
            rnd[0], rnd[1], rnd[2], rnd[3]);
  struct curl_slist *hdrs = NULL;
  hdrs = curl_slist_append (hdrs, "Content-Type: application/json");
  hdrs = curl_slist_append (hdrs, "User-Agent: sbxd-webhooks/1");
  hdrs = curl_slist_append (hdrs, "e2b-signature-version: v1");
  hdrs = curl_slist_append (hdrs, h_sig);
  hdrs = curl_slist_append (hdrs, h_id);
  hdrs = curl_slist_append (hdrs, h_del);
  curl_easy_setopt (curl, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) strlen (body));
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, wh->timeout_ms);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT_MS, wh->timeout_ms);
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard_body);
  char cerr[CURL_ERROR_SIZE];
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, cerr);
  cerr[0] = '\0';
  long status = 0;
  CURLcode rc = curl_easy_perform (curl);
  if (rc == CURLE_OK)
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  else
    {
      snprintf (detail, DETAIL_MAX, "%s (at %s)", cerr[0] ? cerr : curl_easy_strerror (rc), target.addr);
      /* the generic reason names no address; for a receiver in a range
         the platform denies (opened by the operator) not even that */
      *shown = target.opened ? SHOWN_NO_ANSWER : curl_easy_strerror (rc);
    }
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (curl);
  sbx_outbound_close (&target);
  return status;
}

static void
deliver_one (struct sbx_webhooks *wh, struct sbx_delivery *d, struct sbx_webhook *w, struct sbx_event *ev)
{
  json_t *j = sbx_event_json (ev);
  char *body = j ? json_dumps (j, JSON_COMPACT) : NULL;
  json_decref (j);
  char detail[DETAIL_MAX];
  const char *shown = SHOWN_NO_ANSWER;
  long status = body ? post_event (wh, w, d, body, &shown, detail) : 0;
  if (body == NULL)
    {
      snprintf (detail, sizeof detail, "cannot encode the event");
      shown = "internal error";
    }
  free (body);
  bool ok = status >= 200 && status < 300;
  int64_t next = 0;
  uint32_t made = d->attempts + 1;
  if (!ok && made < MAX_ATTEMPTS)
    next = sbx_wall_ms () + (int64_t) (retry_delays_s[made - 1] * 1000.0 * wh->scale);
  char http[32];
  if (!ok && status)
    {
      snprintf (http, sizeof http, "HTTP %ld", status);
      shown = http;
      snprintf (detail, sizeof detail, "%s", http);
    }
  struct sbx_err err;
  if (sbx_store_delivery_record (wh->store, d->id, (int) status, ok ? NULL : shown, ok, next, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot record a webhook delivery", "webhook", w->id, "error", err.msg, NULL);
  sbx_telemetry_webhook (ok, next == 0);
  if (!ok)
    {
      char delivery[24], attempt[16];
      snprintf (delivery, sizeof delivery, "%lld", (long long) d->id);
      snprintf (attempt, sizeof attempt, "%u", made);
      sbx_log_fields (next ? SBX_LOG_INFO : SBX_LOG_WARN, next ? "webhook delivery failed, will retry"
                                                              : "webhook delivery failed, giving up",
                      "webhook", w->id, "delivery", delivery, "attempt", attempt, "error", detail, NULL);
    }
}

static void *
worker_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-webhook");
  struct sbx_webhooks *wh = arg;
  for (;;)
    {
      /* clear the kick before looking, so that an event queued from
         here on (even while a delivery is being recorded) wakes the
         wait below instead of waiting for its timeout */
      pthread_mutex_lock (&wh->lock);
      bool stop = wh->stop;
      wh->kicked = false;
      pthread_mutex_unlock (&wh->lock);
      if (stop)
        break;
      struct sbx_delivery d;
      struct sbx_webhook w;
      struct sbx_event ev;
      int64_t next_due = 0;
      struct sbx_err err;
      int r = sbx_store_delivery_next (wh->store, sbx_wall_ms (), &d, &w, &ev, &next_due, &err);
      if (r == 1)
        {
          deliver_one (wh, &d, &w, &ev);
          sbx_delivery_free (&d);
          sbx_webhook_free (&w);
          sbx_event_free (&ev);
          continue;
        }
      if (r < 0)
        sbx_log_fields (SBX_LOG_ERROR, "webhook sender", "error", err.msg, NULL);
      /* sleep until the next retry is due or a new event is queued */
      int64_t wait_ms = 1000;
      if (next_due > 0)
        {
          int64_t d_ms = next_due - sbx_wall_ms ();
          wait_ms = d_ms < 1 ? 1 : d_ms < wait_ms ? d_ms : wait_ms;
        }
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_sec += wait_ms / 1000;
      ts.tv_nsec += (wait_ms % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L)
        {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
      pthread_mutex_lock (&wh->lock);
      if (!wh->stop && !wh->kicked)
        pthread_cond_timedwait (&wh->cond, &wh->lock, &ts);
      pthread_mutex_unlock (&wh->lock);
    }
  return NULL;
}

static void
curl_init_once (void)
{
  curl_global_init (CURL_GLOBAL_DEFAULT);
}

int
sbx_webhooks_start (struct sbx_store *store, double scale, const struct sbx_outbound *ob, struct sbx_webhooks **out,
                    struct sbx_err *err)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once (&once, curl_init_once);
  struct sbx_webhooks *wh = calloc (1, sizeof *wh);
  if (wh == NULL)
    return sbx_fail (err, ENOMEM, "webhooks");
  wh->store = store;
  wh->scale = scale > 0 ? scale : 1.0;
  wh->timeout_ms = 10000;
  if (ob)
    wh->outbound = *ob;
  pthread_mutex_init (&wh->lock, NULL);
  pthread_cond_init (&wh->cond, NULL);
  if (pthread_create (&wh->thread, NULL, worker_main, wh) != 0)
    {
      free (wh);
      return sbx_failx (err, EAGAIN, "start the webhook worker");
    }
  *out = wh;
  return 0;
}

void
sbx_webhooks_kick (struct sbx_webhooks *wh)
{
  pthread_mutex_lock (&wh->lock);
  wh->kicked = true;
  pthread_cond_signal (&wh->cond);
  pthread_mutex_unlock (&wh->lock);
}

void
sbx_webhooks_stop (struct sbx_webhooks *wh)
{
  pthread_mutex_lock (&wh->lock);
  wh->stop = true;
  pthread_cond_signal (&wh->cond);
  pthread_mutex_unlock (&wh->lock);
  pthread_join (wh->thread, NULL);
  free (wh);
}
