/*
 * metrics.c - GET /metrics: the daemon's state for the operator, in
 * Prometheus's text exposition format (version 0.0.4).  The list of
 * metrics, with what each counts, is in docs/operations.md.
 *
 * What is rendered comes from where it lives: the service's counters and
 * latency histograms (service/telemetry.h), the live records by
 * organisation and state and the webhook queue (the store's census,
 * store_census.c), the engine's own counters (sbx_engine_stats: live
 * sandboxes, spares, teardowns), the network filters' decisions
 * (sbx_filter_decisions) and the daemon's descriptors, threads and memory
 * (/proc/self).  Nothing is cached: each scrape reads them anew.
 *
 * Who may read it.  It is the operator's, never a tenant's: it names
 * every organisation.  Two ways, either or both:
 *  - on the API's address with `sbxd serve --metrics-token T`: the
 *    request must carry "Authorization: Bearer T" (compared in constant
 *    time); anything else, a tenant's API key included, is 401.  Without
 *    a token the path does not exist there: 401 without a key, as any
 *    unknown path, and 404 with a tenant's key;
 *  - on an address of its own (`--metrics-listen ADDR:PORT`), which
 *    answers GET /metrics and nothing else, without any credential: the
 *    operator keeps it on loopback or a management network.
 *
 * Bounds: the organisations are labelled one by one only for the
 * METRICS_ORGS_MAX with the most live sandboxes; the others are summed in
 * sbxd_other_orgs_sandboxes.  Every other label set is fixed, so an
 * answer is at most a few tens of KiB.  The listener of its own serves at
 * most METRICS_CONNS connections, on one thread.
 */
#include "api.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../core/netproxy.h"
#include "../service/telemetry.h"
#include "../service/warm.h"

#define METRICS_ORGS_MAX 100
#define STR_(x) #x
#define STR(x) STR_ (x)
#define METRICS_CONNS 16
#define METRICS_TIMEOUT_S 10
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static void
family (FILE *f, const char *name, const char *type, const char *help)
{
  fprintf (f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and line feed escaped, as the
   format asks; anything else as it is (names are UTF-8 in the store). */
static void
label_value (FILE *f, const char *s)
{
  for (; *s; s++)
    if (*s == '\\')
      fputs ("\\\\", f);
    else if (*s == '"')
      fputs ("\\\"", f);
    else if (*s == '\n')
      fputs ("\\n", f);
    else
      fputc (*s, f);
}

static void
histogram (FILE *f, const char *name, const char *help, const struct sbx_tm_op_stats *st)
{
  family (f, name, "histogram", help);
  uint64_t cum = 0;
  for (unsigned i = 0; i < SBX_TM_BUCKETS; i++)
    {
      cum += st->bucket[i];
      fprintf (f, "%s_bucket{le=\"%g\"} %llu\n", name, sbx_tm_bucket_le[i], (unsigned long long) cum);
    }
  fprintf (f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long) st->count);
  fprintf (f, "%s_sum %.9f\n", name, (double) st->sum_ns / 1e9);
  fprintf (f, "%s_count %llu\n", name, (unsigned long long) st->count);
}

static void
failures (FILE *f, const char *name, const char *help, const struct sbx_tm_op_stats *st)
{
  family (f, name, "counter", help);
  /* SBX_E_SYSTEM is never a kind once derived (sbx_err_kind): from 1 */
  for (unsigned k = SBX_E_INVALID; k <= SBX_E_INTERNAL; k++)
    fprintf (f, "%s{kind=\"%s\"} %llu\n", name, sbx_err_kind_name ((enum sbx_err_kind) k),
             (unsigned long long) st->failures[k]);
}

/* The operations: count, failures by kind, latency. */
static void
render_operations (FILE *f)
{
  struct sbx_tm_stats t;
  sbx_telemetry_read (&t);
  const struct sbx_tm_op_stats *c = &t.op[SBX_TM_CREATE], *x = &t.op[SBX_TM_EXEC], *d = &t.op[SBX_TM_DESTROY];
  family (f, "sbxd_creates_total", "counter", "Sandboxes created and recorded, in any dialect, queued or not.");
  fprintf (f, "sbxd_creates_total %llu\n", (unsigned long long) c->count);
  failures (f, "sbxd_create_failures_total", "Creates that failed after their quota was taken, by error kind.", c);
  histogram (f, "sbxd_create_seconds", "Latency of successful creates (engine, storage and records).", c);
  family (f, "sbxd_execs_total", "counter", "Processes started in sandboxes through the API.");
  fprintf (f, "sbxd_execs_total %llu\n", (unsigned long long) x->count);
  failures (f, "sbxd_exec_failures_total", "Processes that could not be started, by error kind.", x);
  histogram (f, "sbxd_exec_start_seconds", "Latency from an exec's call to its process's start.", x);
  family (f, "sbxd_destroys_total", "counter", "Sandboxes destroyed on request.");
  fprintf (f, "sbxd_destroys_total %llu\n", (unsigned long long) d->count);
  failures (f, "sbxd_destroy_failures_total", "Destroys that failed, by error kind.", d);
  histogram (f, "sbxd_destroy_seconds", "Latency of successful destroys, until the answer.", d);
  family (f, "sbxd_webhook_attempts_total", "counter", "Webhook delivery attempts by outcome.");
  fprintf (f, "sbxd_webhook_attempts_total{outcome=\"delivered\"} %llu\n", (unsigned long long) t.webhook_delivered);
  fprintf (f, "sbxd_webhook_attempts_total{outcome=\"retry\"} %llu\n", (unsigned long long) t.webhook_retried);
  fprintf (f, "sbxd_webhook_attempts_total{outcome=\"failed\"} %llu\n", (unsigned long long) t.webhook_failed);
}

static const char *const census_state[SBX_CENSUS_STATES]
    = { [SBX_CENSUS_CREATING] = "creating", [SBX_CENSUS_RUNNING] = "running", [SBX_CENSUS_PAUSED] = "paused" };

/* The records: live sandboxes by state and organisation, the webhook
   queue.  Left out (and logged) when the store cannot be read. */
static void
render_census (FILE *f, struct sbx_store *store)
{
  struct sbx_census_org *orgs = calloc (METRICS_ORGS_MAX, sizeof *orgs);
  size_t n = 0;
  uint32_t other[SBX_CENSUS_STATES];
  struct sbx_err err;
  if (orgs == NULL || sbx_store_sandbox_census (store, orgs, METRICS_ORGS_MAX, &n, other, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "metrics: cannot count the sandboxes", "error", orgs ? err.msg : "out of memory",
                    NULL);
  else
    {
      uint64_t total[SBX_CENSUS_STATES];
      for (int s = 0; s < SBX_CENSUS_STATES; s++)
        {
          total[s] = other[s];
          for (size_t i = 0; i < n; i++)
            total[s] += orgs[i].n[s];
        }
      family (f, "sbxd_sandboxes", "gauge", "Live sandboxes by state, from their records.");
      for (int s = 0; s < SBX_CENSUS_STATES; s++)
        fprintf (f, "sbxd_sandboxes{state=\"%s\"} %llu\n", census_state[s], (unsigned long long) total[s]);
      family (f, "sbxd_org_sandboxes", "gauge",
              "Live sandboxes by organisation and state (the " STR (METRICS_ORGS_MAX) " organisations with the most).");
      for (size_t i = 0; i < n; i++)
        for (int s = 0; s < SBX_CENSUS_STATES; s++)
          {
            fputs ("sbxd_org_sandboxes{org=\"", f);
            label_value (f, orgs[i].name);
            fprintf (f, "\",state=\"%s\"} %u\n", census_state[s], orgs[i].n[s]);
          }
      family (f, "sbxd_other_orgs_sandboxes", "gauge", "Live sandboxes of the organisations not listed one by one.");
      for (int s = 0; s < SBX_CENSUS_STATES; s++)
        fprintf (f, "sbxd_other_orgs_sandboxes{state=\"%s\"} %u\n", census_state[s], other[s]);
    }
  free (orgs);
  uint64_t pending, failed;
  if (sbx_store_delivery_census (store, &pending, &failed, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "metrics: cannot count the webhook deliveries", "error", err.msg, NULL);
  else
    {
      family (f, "sbxd_webhook_queue_depth", "gauge", "Webhook deliveries waiting for an attempt or a retry.");
      fprintf (f, "sbxd_webhook_queue_depth %llu\n", (unsigned long long) pending);
      family (f, "sbxd_webhook_deliveries_failed", "gauge", "Webhook deliveries given up, as kept in the store.");
      fprintf (f, "sbxd_webhook_deliveries_failed %llu\n", (unsigned long long) failed);
    }
}

static void
render_engine (FILE *f, struct sbx_engine *engine)
{
  struct sbx_engine_stats es;
  sbx_engine_stats (engine, &es);
  family (f, "sbxd_engine_sandboxes", "gauge", "Sandboxes the engine holds, in any state.");
  fprintf (f, "sbxd_engine_sandboxes %u\n", es.live);
  family (f, "sbxd_teardowns_pending", "gauge", "Sandboxes answered as destroyed and still being torn down.");
  fprintf (f, "sbxd_teardowns_pending %u\n", es.teardowns_pending);
  family (f, "sbxd_spares", "gauge", "Spare sandboxes ready for a create.");
  fprintf (f, "sbxd_spares %u\n", es.spares);
  family (f, "sbxd_spares_target", "gauge", "Spare sandboxes the pool aims to keep.");
  fprintf (f, "sbxd_spares_target %u\n", es.spares_target);
  family (f, "sbxd_spares_booted", "gauge", "Spare sandboxes booted ahead for the template last created.");
  fprintf (f, "sbxd_spares_booted %u\n", es.spares_booted);
  family (f, "sbxd_spare_hits_total", "counter", "Creates that took a ready spare.");
  fprintf (f, "sbxd_spare_hits_total %llu\n", (unsigned long long) es.spare_hits);
  family (f, "sbxd_spare_booted_hits_total", "counter", "Creates that took a spare booted ahead for their template.");
  fprintf (f, "sbxd_spare_booted_hits_total %llu\n", (unsigned long long) es.spare_booted_hits);
  family (f, "sbxd_spare_misses_total", "counter", "Creates that found no spare and prepared their sandbox inline.");
  fprintf (f, "sbxd_spare_misses_total %llu\n", (unsigned long long) es.spare_misses);
  struct sbx_warm_stat ws[SBX_WARM_TEMPLATES_MAX];
  size_t nw = sbx_warm_stats (ws, SBX_WARM_TEMPLATES_MAX);
  if (nw)
    {
      /* template names are [A-Za-z0-9._-] (template.c): nothing to escape */
      family (f, "sbxd_warm_ready", "gauge", "Started sandboxes ready in a template's warm pool.");
      for (size_t i = 0; i < nw; i++)
        fprintf (f, "sbxd_warm_ready{template=\"%s\"} %u\n", ws[i].template_name, ws[i].ready);
      family (f, "sbxd_warm_target", "gauge", "Started sandboxes a template's warm pool aims to keep.");
      for (size_t i = 0; i < nw; i++)
        fprintf (f, "sbxd_warm_target{template=\"%s\"} %u\n", ws[i].template_name, ws[i].target);
      family (f, "sbxd_warm_claims_total", "counter", "Creates served from a template's warm pool.");
      for (size_t i = 0; i < nw; i++)
        fprintf (f, "sbxd_warm_claims_total{template=\"%s\"} %llu\n", ws[i].template_name,
                 (unsigned long long) ws[i].claims);
      family (f, "sbxd_warm_failures_total", "counter", "Warm sandboxes whose preparation failed.");
      for (size_t i = 0; i < nw; i++)
        fprintf (f, "sbxd_warm_failures_total{template=\"%s\"} %llu\n", ws[i].template_name,
                 (unsigned long long) ws[i].failures);
    }
  struct sbx_filter_decisions fd;
  sbx_filter_decisions (&fd);
  family (f, "sbxd_filter_decisions_total", "counter",
          "Network filter decisions by kind (dns, http, tls; packet: the kernel's, as logged) and verdict.");
  for (int k = 0; k < SBX_FILTER_KINDS; k++)
    {
      const char *kind = sbx_filter_kind_name ((enum sbx_filter_kind) k);
      fprintf (f, "sbxd_filter_decisions_total{kind=\"%s\",verdict=\"allowed\"} %llu\n", kind,
               (unsigned long long) fd.allowed[k]);
      fprintf (f, "sbxd_filter_decisions_total{kind=\"%s\",verdict=\"denied\"} %llu\n", kind,
               (unsigned long long) fd.denied[k]);
    }
}

/* The value of FIELD ("Threads:") in /proc/self/status; -1 when absent. */
static long long
status_field (const char *text, const char *field)
{
  const char *p = text;
  size_t n = strlen (field);
  while (p && *p)
    {
      if (strncmp (p, field, n) == 0)
        return strtoll (p + n, NULL, 10);
      p = strchr (p, '\n');
      if (p)
        p++;
    }
  return -1;
}

static void
render_process (FILE *f)
{
  long long fds = -1;
  DIR *d = opendir ("/proc/self/fd");
  if (d)
    {
      fds = 0;
      for (struct dirent *e; (e = readdir (d)) != NULL;)
        if (e->d_name[0] != '.')
          fds++;
      fds--; /* the directory's own */
      closedir (d);
    }
  struct rlimit rl;
  long long max_fds = getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long long) rl.rlim_cur : -1;
  char *status = NULL;
  struct sbx_err err;
  long long threads = -1, rss_kb = -1;
  if (sbx_read_file_at (AT_FDCWD, "/proc/self/status", &status, 64u << 10, &err) == 0)
    {
      threads = status_field (status, "Threads:");
      rss_kb = status_field (status, "VmRSS:");
    }
  free (status);
  if (fds >= 0)
    {
      family (f, "process_open_fds", "gauge", "Open file descriptors of the daemon.");
      fprintf (f, "process_open_fds %lld\n", fds);
    }
  if (max_fds >= 0)
    {
      family (f, "process_max_fds", "gauge", "The daemon's descriptor limit (RLIMIT_NOFILE).");
      fprintf (f, "process_max_fds %lld\n", max_fds);
    }
  if (threads >= 0)
    {
      family (f, "process_threads", "gauge", "Threads of the daemon.");
      fprintf (f, "process_threads %lld\n", threads);
    }
  if (rss_kb >= 0)
    {
      family (f, "process_resident_memory_bytes", "gauge", "Resident memory of the daemon.");
      fprintf (f, "process_resident_memory_bytes %lld\n", rss_kb * 1024);
    }
}

/* The whole answer, in memory of its own (free it), or NULL. */
static char *
metrics_render (struct sbx_engine *engine, struct sbx_store *store, size_t *len)
{
  char *text = NULL;
  FILE *f = open_memstream (&text, len);
  if (f == NULL)
    return NULL;
  render_census (f, store);
  render_engine (f, engine);
  render_operations (f);
  render_process (f);
  if (fclose (f) != 0)
    {
      free (text);
      return NULL;
    }
  return text;
}

static struct MHD_Response *
metrics_response (struct sbx_engine *engine, struct sbx_store *store)
{
  size_t len = 0;
  char *text = metrics_render (engine, store, &len);
  if (text == NULL)
    return NULL;
  struct MHD_Response *r = MHD_create_response_from_buffer (len, text, MHD_RESPMEM_MUST_FREE);
  if (r == NULL)
    {
      free (text);
      return NULL;
    }
  MHD_add_response_header (r, "Content-Type", METRICS_CONTENT_TYPE);
  return r;
}

/* ---- on the API's address ---- */

/* Is the request's "Authorization: Bearer" the operator's token? */
static bool
operator_token (struct http_server *h, struct MHD_Connection *c)
{
  const char *auth = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Authorization");
  if (auth == NULL || strncasecmp (auth, "Bearer ", 7) != 0)
    return false;
  const char *t = auth + 7;
  while (*t == ' ')
    t++;
  size_t n = strlen (h->metrics_token);
  return strlen (t) == n && CRYPTO_memcmp (t, h->metrics_token, n) == 0;
}

enum MHD_Result
metrics_route (struct call *k)
{
  enum MHD_Result ret;
  if (k->h->metrics_token[0] == '\0')
    {
      /* not served here: the answer of a path that does not exist */
      if (!authenticate (k->h, k->c, k->rq, &ret))
        return ret;
      return send_error (k->c, 404, "not found");
    }
  if (!operator_token (k->h, k->c))
    return send_error (k->c, 401, "the metrics need the operator's token (sbxd serve --metrics-token)");
  struct MHD_Response *r = metrics_response (k->h->engine, k->h->store);
  if (r == NULL)
    return send_error (k->c, 500, "cannot render the metrics");
  return queue_response (k->c, 200, r);
}

/* ---- on an address of its own ---- */

struct sbx_metrics_listener {
  struct MHD_Daemon *mhd;
  struct sbx_engine *engine;
  struct sbx_store *store;
};

static enum MHD_Result
plain (struct MHD_Connection *c, unsigned status, const char *text)
{
  struct MHD_Response *r = MHD_create_response_from_buffer (strlen (text), (void *) text, MHD_RESPMEM_PERSISTENT);
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header (r, "Content-Type", "text/plain; charset=utf-8");
  enum MHD_Result ret = MHD_queue_response (c, status, r);
  MHD_destroy_response (r);
  return ret;
}

static enum MHD_Result
on_metrics_request (void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
                    const char *upload_data, size_t *upload_size, void **con_cls)
{
  (void) version;
  (void) upload_data;
  struct sbx_metrics_listener *m = cls;
  if (*con_cls == NULL)
    {
      /* the first call has the headers only: answer on the next */
      *con_cls = m;
      return MHD_YES;
    }
  if (*upload_size)
    {
      *upload_size = 0; /* a body is read and dropped */
      return MHD_YES;
    }
  if (strcmp (url, "/metrics") != 0)
    return plain (c, 404, "not found\n");
  if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
    return plain (c, 405, "method not allowed\n");
  struct MHD_Response *r = metrics_response (m->engine, m->store);
  if (r == NULL)
    return plain (c, 500, "cannot render the metrics\n");
  enum MHD_Result ret = MHD_queue_response (c, 200, r);
  MHD_destroy_response (r);
  return ret;
}

struct sbx_metrics_listener *
sbx_metrics_listen (const struct sockaddr *addr, struct sbx_engine *engine, struct sbx_store *store,
                    struct sbx_err *err)
{
  struct sbx_metrics_listener *m = calloc (1, sizeof *m);
  if (m == NULL)
    {
      sbx_fail (err, ENOMEM, "metrics listener");
      return NULL;
    }
  m->engine = engine;
  m->store = store;
  m->mhd = MHD_start_daemon (MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, on_metrics_request, m,
                             MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned) METRICS_CONNS,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) METRICS_TIMEOUT_S,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned) 1, MHD_OPTION_END);
  if (m->mhd == NULL)
    {
      free (m);
      sbx_failx (err, EADDRINUSE, "cannot listen for metrics (address in use or not available)");
      return NULL;
    }
  return m;
}

void
sbx_metrics_stop (struct sbx_metrics_listener *m)
{
  if (m == NULL)
    return;
  MHD_stop_daemon (m->mhd);
  free (m);
}

bool
sbx_metrics_token_valid (const char *s)
{
  size_t n = strlen (s);
  if (n < SBX_METRICS_TOKEN_MIN || n >= SBX_METRICS_TOKEN_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] <= ' ' || s[i] > '~')
      return false;
  return true;
}
