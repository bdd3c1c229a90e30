/*
 * main.c - the sbxd command line: `serve` runs the daemon, `template`
 * manages templates, `keys` API keys and `orgs` organisations and their
 * plans.  It only parses arguments and calls the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../core/netlink.h"
#include "../core/sandbox.h"
#include "../core/template.h"
#include "../service/agents.h"
#include "../service/builds.h"
#include "../service/fairshare.h"
#include "../service/samples.h"
#include "../service/service.h"
#include "../api/server.h"
#include "../service/store.h"
#include "../service/outbound.h"
#include "../service/warm.h"
#include "../service/webhook.h"
#include "../service/plans.h"
#include "log_json.h"

#ifndef SBXD_SPEC_DIR
#define SBXD_SPEC_DIR "templates"
#endif
#ifndef SBXD_DOCS_DIR
#define SBXD_DOCS_DIR "docs"
#endif
#define DEFAULT_STATE_DIR "/var/lib/sbxd/state"

static void
usage (FILE *f)
{
  fputs ("usage:\n"
         "  sbxd serve [--listen ADDR:PORT] [--state-dir DIR] [--template-dir DIR]\n"
         "             [--dns-upstream IP[:PORT]] [--net-allow CIDR]... [--no-network]\n"
         "             [--outbound-allow CIDR]...   (ranges webhooks and MCP servers may reach despite denials)\n"
         "             [--dns-rate N] [--filter-conns N]   (per sandbox; docs/network.md)\n"
         "             [--egress-ca-file FILE]   (more roots trusted for HTTPS with request transforms)\n"
         "             [--log-level debug|info|warn|error] [--log-format text|json]\n"
         "             [--image ALIAS=TEMPLATE]...   (seed 002's approved images)\n"
         "             [--disk-reserve-mb MB] [--disk-overcommit RATIO]\n"
         "             [--conn-timeout SECONDS] [--conn-per-ip N]\n"
         "             [--terminal-ttl SECONDS]   (seed 004's terminalUrl tokens)\n"
         "             [--storage-quota-mb MB]   (checkpoints and artifacts per organisation; 0: none)\n"
         "             [--capacity-sandboxes N] [--capacity-memory-mb MB]   (more wait queued)\n"
         "             [--warm TEMPLATE=N]...   (N sandboxes of TEMPLATE kept created and started)\n"
         "             [--domain DOMAIN[:PORT]]   (sandbox ports at PORT-ID.DOMAIN)\n"
         "             [--tls-cert FILE --tls-key FILE]   (serve HTTPS)\n"
         "             [--build-workers N]   (template builds at once; default 1)\n"
         "             [--metrics-interval-ms MS]   (sandbox metrics history; default 5000)\n"
         "             [--metrics-token TOKEN]   (GET /metrics on --listen with Authorization: Bearer TOKEN)\n"
         "             [--metrics-listen ADDR:PORT]   (GET /metrics there, without a credential)\n"
         "             [--spares-max N]   (spare sandboxes kept for bursts at most; default 256; 0: none)\n"
         "             [--spares-min N]   (spare sandboxes kept when idle; default 100, at most --spares-max)\n"
         "             [--sandboxes-cpu-weight W]   (all sandboxes' CPU weight against the host's processes,\n"
         "                                           100 as a nice-0 process; default 12, 1 to 10000)\n"
         "  sbxd template build NAME [--spec-dir DIR] [--template-dir DIR]\n"
         "  sbxd template list [--template-dir DIR]\n"
         "  sbxd template rm NAME [--template-dir DIR]\n"
         "  sbxd template gc [--template-dir DIR]\n"
         "  sbxd keys create [--state-dir DIR] [--org NAME] [--e2b]\n"
         "  sbxd keys list [--state-dir DIR]\n"
         "  sbxd keys revoke KEY-ID [--state-dir DIR]\n"
         "  sbxd orgs list [--state-dir DIR]\n"
         "  sbxd orgs create NAME [--state-dir DIR] [--plan PLAN] [--max-sandboxes N]\n"
         "             [--max-timeout SECONDS] [--monthly-hours HOURS]\n"
         "  sbxd orgs set NAME [--state-dir DIR] [--plan PLAN] [--max-sandboxes N]\n"
         "             [--max-timeout SECONDS] [--monthly-hours HOURS]\n"
         "  (PLAN: default, free, builder, pro, scale; --monthly-hours: decimals allowed, 0: unlimited)\n",
         f);
}

static int
parse_listen (const char *s, struct sockaddr_in *sa)
{
  char host[64];
  const char *colon = strrchr (s, ':');
  if (colon == NULL || (size_t) (colon - s) >= sizeof host)
    return -1;
  memcpy (host, s, (size_t) (colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol (colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535)
    return -1;
  memset (sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons ((uint16_t) port);
  return inet_pton (AF_INET, *host ? host : "127.0.0.1", &sa->sin_addr) == 1 ? 0 : -1;
}

/* The store of a state directory (created with it). */
static struct sbx_store *
open_store (const char *state, struct sbx_err *err)
{
  char path[4096];
  if (sbx_mkdir_p (state, 0700, err) < 0 || sbx_path (path, sizeof path, "%s/sbxd.db", state) < 0)
    return NULL;
  struct sbx_store *st;
  if (sbx_store_open (path, &st, err) < 0)
    return NULL;
  return st;
}

static volatile sig_atomic_t stop_requested;

static void
on_signal (int sig)
{
  (void) sig;
  stop_requested = 1;
}

/* "IPv4" or "IPv4:PORT" */
static int
parse_upstream (const char *s, struct sbx_net_config *net)
{
  char host[32];
  const char *colon = strchr (s, ':');
  size_t n = colon ? (size_t) (colon - s) : strlen (s);
  if (n >= sizeof host)
    return -1;
  memcpy (host, s, n);
  host[n] = '\0';
  struct in_addr a;
  if (inet_pton (AF_INET, host, &a) != 1)
    return -1;
  long port = 53;
  if (colon)
    {
      char *end;
      port = strtol (colon + 1, &end, 10);
      if (*end || port < 1 || port > 65535)
        return -1;
    }
  net->dns_upstream_ip = ntohl (a.s_addr);
  net->dns_upstream_port = (uint16_t) port;
  return 0;
}

/* An unsigned decimal number in [MIN, MAX] into *OUT. */
static int
parse_u32 (const char *opt, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (*s < '0' || *s > '9' || *end || errno || v < min || v > max)
    {
      fprintf (stderr, "sbxd: invalid %s %s (want a whole number from %u to %u)\n", opt, s, min, max);
      return -1;
    }
  *out = (uint32_t) v;
  return 0;
}

static int
cmd_serve (int argc, char **argv)
{
  const char *listen = "127.0.0.1:49982", *state = DEFAULT_STATE_DIR, *tmpl = NULL;
  static const struct option opts[] = { { "listen", required_argument, NULL, 'l' },
                                        { "state-dir", required_argument, NULL, 's' },
                                        { "template-dir", required_argument, NULL, 't' },
                                        { "dns-upstream", required_argument, NULL, 'd' },
                                        { "net-allow", required_argument, NULL, 'a' },
                                        { "no-network", no_argument, NULL, 'N' },
                                        { "dns-rate", required_argument, NULL, 'r' },
                                        { "filter-conns", required_argument, NULL, 'f' },
                                        { "log-level", required_argument, NULL, 'L' },
                                        { "log-format", required_argument, NULL, 'F' },
                                        { "image", required_argument, NULL, 'I' },
                                        { "outbound-allow", required_argument, NULL, 'O' },
                                        { "disk-reserve-mb", required_argument, NULL, 'R' },
                                        { "disk-overcommit", required_argument, NULL, 'C' },
                                        { "conn-timeout", required_argument, NULL, 'T' },
                                        { "conn-per-ip", required_argument, NULL, 'P' },
                                        { "terminal-ttl", required_argument, NULL, 'W' },
                                        { "storage-quota-mb", required_argument, NULL, 'Q' },
                                        { "capacity-sandboxes", required_argument, NULL, 'S' },
                                        { "capacity-memory-mb", required_argument, NULL, 'M' },
                                        { "domain", required_argument, NULL, 'D' },
                                        { "tls-cert", required_argument, NULL, 'E' },
                                        { "tls-key", required_argument, NULL, 'K' },
                                        { "build-workers", required_argument, NULL, 'B' },
                                        { "metrics-interval-ms", required_argument, NULL, 'X' },
                                        { "metrics-token", required_argument, NULL, 'G' },
                                        { "metrics-listen", required_argument, NULL, 'g' },
                                        { "egress-ca-file", required_argument, NULL, 'Y' },
                                        { "spares-max", required_argument, NULL, 'p' },
                                        { "spares-min", required_argument, NULL, 'j' },
                                        { "warm", required_argument, NULL, 'w' },
                                        { "sandboxes-cpu-weight", required_argument, NULL, 'U' },
                                        { NULL, 0, NULL, 0 } };
  /* seed 002's approved images: --image replaces the defaults */
  const char *images[65] = { NULL };
  size_t n_images = 0;
  struct sbx_net_config net = { 0 };
  enum sbx_log_level log_level = SBX_LOG_INFO;
  bool log_json = false;
  struct sbx_cidr ops[64];
  /* ranges tenants' URLs (webhooks) may reach although the platform denies them */
  static struct sbx_outbound outbound;
  bool network = true;
  bool reserve_set = false;
  uint32_t reserve_mb = 0;
  double overcommit = 1.0;
  uint32_t conn_timeout = SBX_HTTP_CONN_TIMEOUT_S, conn_per_ip = SBX_HTTP_CONN_PER_IP;
  uint32_t terminal_ttl = SBX_TERMINAL_TTL_S;
  uint32_t storage_quota_mb = SBX_SAVE_QUOTA_MB;
  struct sbx_capacity capacity = { 0 }; /* no cap on the count; memory: what the host can hold */
  const char *domain = NULL, *tls_cert = NULL, *tls_key = NULL;
  uint32_t build_workers = SBX_BUILD_WORKERS;
  uint32_t metrics_interval_ms = SBX_SAMPLE_INTERVAL_MS;
  const char *metrics_token = NULL, *metrics_listen = NULL;
  uint32_t spares_max = SBX_SPARES_MAX_DEFAULT, spares_min = SBX_SPARES_DEFAULT;
  bool spares_min_set = false;
  uint32_t sandboxes_weight = SBX_SANDBOXES_CPU_WEIGHT;
  struct sbx_warm_want warm[SBX_WARM_TEMPLATES_MAX];
  size_t n_warm = 0;
  int c;
  while ((c = getopt_long (argc, argv, "l:s:t:", opts, NULL)) != -1)
    switch (c)
      {
      case 'p':
        /* the spare pool's cap; 0: no spares */
        if (parse_u32 ("--spares-max", optarg, 0, SBX_SPARES_MAX_CAP, &spares_max) < 0)
          return 2;
        break;
      case 'j':
        /* the pool's idle size: a burst of up to N creates finds N spares */
        if (parse_u32 ("--spares-min", optarg, 1, SBX_SPARES_MAX_CAP, &spares_min) < 0)
          return 2;
        spares_min_set = true;
        break;
      case 'U':
        if (parse_u32 ("--sandboxes-cpu-weight", optarg, 1, 10000, &sandboxes_weight) < 0)
          return 2;
        break;
      case 'd':
        if (parse_upstream (optarg, &net) < 0)
          {
            fprintf (stderr, "sbxd: invalid --dns-upstream %s (want IPv4[:PORT])\n", optarg);
            return 2;
          }
        break;
      case 'a':
        if (net.n_operator_allow == sizeof ops / sizeof ops[0] || sbx_cidr_parse (optarg, &ops[net.n_operator_allow]) < 0)
          {
            fprintf (stderr, "sbxd: invalid --net-allow %s (want an IPv4 CIDR block; at most 64)\n", optarg);
            return 2;
          }
        net.n_operator_allow++;
        break;
      case 'N':
        network = false;
        break;
      case 'O':
        if (sbx_outbound_allow (&outbound, optarg) < 0)
          {
            fprintf (stderr, "sbxd: invalid --outbound-allow %s (want an IPv4 or IPv6 CIDR block; at most %d)\n",
                     optarg, SBX_OUTBOUND_ALLOW_MAX);
            return 2;
          }
        break;
      case 'r':
        /* per sandbox: DNS queries a second */
        if (parse_u32 ("--dns-rate", optarg, 1, 100000, &net.limits.dns_rate) < 0)
          return 2;
        break;
      case 'f':
        /* per sandbox: TCP connections through the filters */
        if (parse_u32 ("--filter-conns", optarg, 1, 100000, &net.limits.conns) < 0)
          return 2;
        break;
      case 'L':
        if (sbx_log_level_parse (optarg, &log_level) < 0)
          {
            fprintf (stderr, "sbxd: invalid --log-level %s (debug, info, warn or error)\n", optarg);
            return 2;
          }
        break;
      case 'F':
        if (strcmp (optarg, "json") != 0 && strcmp (optarg, "text") != 0)
          {
            fprintf (stderr, "sbxd: invalid --log-format %s (text or json)\n", optarg);
            return 2;
          }
        log_json = strcmp (optarg, "json") == 0;
        break;
      case 'I':
        {
          const char *eq = strchr (optarg, '=');
          if (n_images == sizeof images / sizeof images[0] - 1 || eq == NULL || eq == optarg || eq[1] == '\0'
              || strlen (optarg) > 200)
            {
              fprintf (stderr, "sbxd: invalid --image %s (want ALIAS=TEMPLATE; at most 64)\n", optarg);
              return 2;
            }
          images[n_images++] = optarg;
          break;
        }
      case 'R':
        if (parse_u32 ("--disk-reserve-mb", optarg, 0, UINT32_MAX, &reserve_mb) < 0)
          return 2;
        reserve_set = true;
        break;
      case 'C':
        {
          char *end;
          errno = 0;
          overcommit = strtod (optarg, &end);
          if (end == optarg || *end || errno || !(overcommit > 0 && overcommit <= 10000))
            {
              fprintf (stderr,
                       "sbxd: invalid --disk-overcommit %s (want a ratio above 0 and at most 10000;"
                       " 1: never promise more disk than there is)\n",
                       optarg);
              return 2;
            }
          break;
        }
      case 'T':
        if (parse_u32 ("--conn-timeout", optarg, 1, 3600, &conn_timeout) < 0)
          return 2;
        break;
      case 'P':
        /* 0: no cap */
        if (parse_u32 ("--conn-per-ip", optarg, 0, 1000000, &conn_per_ip) < 0)
          return 2;
        break;
      case 'W':
        if (parse_u32 ("--terminal-ttl", optarg, 1, 86400, &terminal_ttl) < 0)
          return 2;
        break;
      case 'Q':
        /* 0: no quota */
        if (parse_u32 ("--storage-quota-mb", optarg, 0, UINT32_MAX, &storage_quota_mb) < 0)
          return 2;
        break;
      case 'S':
        /* sandboxes running at once on this machine; more wait queued */
        if (parse_u32 ("--capacity-sandboxes", optarg, 1, 1000000, &capacity.sandboxes) < 0)
          return 2;
        break;
      case 'M':
        /* the memory limits of the running sandboxes together */
        if (parse_u32 ("--capacity-memory-mb", optarg, 1, UINT32_MAX, &capacity.memory_mb) < 0)
          return 2;
        break;
      case 'D':
        /* sandbox ports at PORT-ID.DOMAIN, routed by Host */
        if (!sbx_http_domain_valid (optarg))
          {
            fprintf (stderr, "sbxd: invalid --domain %s (want a host name, optionally :PORT)\n", optarg);
            return 2;
          }
        domain = optarg;
        break;
      case 'E':
        tls_cert = optarg;
        break;
      case 'K':
        tls_key = optarg;
        break;
      case 'B':
        /* template builds at once (the E2B build API) */
        if (parse_u32 ("--build-workers", optarg, 1, 64, &build_workers) < 0)
          return 2;
        break;
      case 'X':
        /* the sandboxes' metrics history (E2B's getMetrics): every 5 s as
           E2B, shorter for tests */
        if (parse_u32 ("--metrics-interval-ms", optarg, SBX_SAMPLE_INTERVAL_MIN_MS, SBX_SAMPLE_INTERVAL_MAX_MS,
                       &metrics_interval_ms) < 0)
          return 2;
        break;
      case 'G':
        /* the operator's metrics on the API's address */
        if (!sbx_metrics_token_valid (optarg))
          {
            fprintf (stderr, "sbxd: invalid --metrics-token (want %d to %d printable characters, no space)\n",
                     SBX_METRICS_TOKEN_MIN, SBX_METRICS_TOKEN_MAX - 1);
            return 2;
          }
        metrics_token = optarg;
        break;
      case 'g':
        metrics_listen = optarg;
        break;
      case 'Y':
        /* roots trusted, besides the system's, for the destinations of
           HTTPS whose TLS the filter terminates (request transforms) */
        net.egress_ca_file = optarg;
        break;
      case 'w':
        /* started warm pools (service/warm.c) */
        if (n_warm == SBX_WARM_TEMPLATES_MAX || sbx_warm_parse (optarg, &warm[n_warm]) < 0)
          {
            fprintf (stderr, "sbxd: invalid --warm %s (want TEMPLATE=N, N from 1 to %d, at most %d of them)\n",
                     optarg, SBX_WARM_COUNT_MAX, SBX_WARM_TEMPLATES_MAX);
            return 2;
          }
        n_warm++;
        break;
      case 'l':
        listen = optarg;
        break;
      case 's':
        state = optarg;
        break;
      case 't':
        tmpl = optarg;
        break;
      default:
        usage (stderr);
        return 2;
      }
  if ((tls_cert == NULL) != (tls_key == NULL))
    {
      fprintf (stderr, "sbxd: --tls-cert and --tls-key go together\n");
      return 2;
    }
  if (spares_min_set && spares_min > spares_max)
    {
      fprintf (stderr, "sbxd: --spares-min %u is over --spares-max %u\n", spares_min, spares_max);
      return 2;
    }
  struct sockaddr_in sa;
  if (parse_listen (listen, &sa) < 0)
    {
      fprintf (stderr, "sbxd: invalid --listen %s (want ADDR:PORT)\n", listen);
      return 2;
    }
  struct sockaddr_in metrics_sa;
  if (metrics_listen && parse_listen (metrics_listen, &metrics_sa) < 0)
    {
      fprintf (stderr, "sbxd: invalid --metrics-listen %s (want ADDR:PORT)\n", metrics_listen);
      return 2;
    }
  /* From here on the daemon speaks through the logger only. */
  sbx_log_set_level (log_level);
  if (log_json)
    sbx_log_set_sink (sbx_log_json_sink, NULL);
  signal (SIGPIPE, SIG_IGN);
  /* before any of the start's work: a SIGTERM while the daemon starts
     (or right after the API first answers) stops it at the end of the
     start, through the same orderly stop, instead of killing it */
  struct sigaction act = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
  sigaction (SIGINT, &act, NULL);
  sigaction (SIGTERM, &act, NULL);
  /* buffers of a MiB and more (outputs, bodies) are mappings of their
     own, so their memory goes back to the system when they are freed */
  mallopt (M_MMAP_THRESHOLD, 1 << 20);
  struct sbx_err err;
  struct sbx_store *store = open_store (state, &err);
  if (store == NULL)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot open the store", "error", err.msg, NULL);
      return 1;
    }
  /* the first start on an empty state directory makes a key to use */
  int nkeys = 0;
  if (sbx_store_key_count (store, &nkeys, &err) == 0 && nkeys == 0)
    {
      char key[96];
      struct sbx_key_info info;
      if (sbx_store_key_create (store, "default", "sk-sb-", key, sizeof key, &info, &err) == 0)
        {
          printf ("%s\n", key);
          fflush (stdout);
          sbx_log_fields (SBX_LOG_INFO, "created an API key (printed once on stdout)", "key_id", info.id, "org",
                          "default", NULL);
        }
    }
  const char *scale_env = getenv ("SBXD_WEBHOOK_RETRY_SCALE");
  double scale = scale_env ? strtod (scale_env, NULL) : 1.0;
  struct sbx_service *svc;
  if (sbx_service_open (store, &svc, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot start the service", "error", err.msg, NULL);
      sbx_store_close (store);
      return 1;
    }
  if (sbx_service_set_storage (svc, state, (uint64_t) storage_quota_mb << 20, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot keep checkpoints and artifacts", "error", err.msg, NULL);
      sbx_store_close (store);
      return 1;
    }
  net.operator_allow = ops;
  struct sbx_engine_config cfg = { .state_dir = state,
                                   .template_dir = tmpl,
                                   .on_event = sbx_service_on_change,
                                   .on_ending = sbx_service_on_ending,
                                   .event_ud = svc,
                                   /* per-organisation limits are the real cap */
                                   .max_timeout_s = SBX_PLAN_TIMEOUT_CAP,
                                   .net = network ? &net : NULL,
                                   .disk_reserve_set = reserve_set,
                                   .disk_reserve_mb = reserve_mb,
                                   .disk_overcommit = overcommit,
                                   .spares = spares_max ? (int) spares_min : -1,
                                   .spares_max = (int) spares_max,
                                   .sandboxes_cpu_weight = sandboxes_weight };
  struct sbx_engine *engine;
  if (sbx_engine_open (&cfg, &engine, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot start the sandbox engine", "error", err.msg, NULL);
      sbx_store_close (store);
      return 1;
    }
  sbx_service_set_engine (svc, engine);
  if (sbx_builds_start (svc, state, tmpl, build_workers, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot start the template builders", "error", err.msg, NULL);
  struct sbx_webhooks *webhooks;
  for (size_t i = 0; i < outbound.n_allow; i++)
    {
      char range[64];
      sbx_ip_range_format (&outbound.allow[i], range, sizeof range);
      sbx_log_fields (SBX_LOG_WARN, "outbound requests for tenants may reach a range the platform denies", "range",
                      range, NULL);
    }
  if (sbx_webhooks_start (store, scale, &outbound, &webhooks, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot start the webhook sender", "error", err.msg, NULL);
      return 1;
    }
  sbx_service_set_webhooks (svc, webhooks);
  if (sbx_service_placement_start (svc, &capacity, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot start the queue", "error", err.msg, NULL);
      return 1;
    }
  int changes = sbx_service_reconcile (svc, &err);
  if (changes < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot reconcile records with sandboxes", "error", err.msg, NULL);
  if (sbx_service_runs_recover (svc, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot recover runs", "error", err.msg, NULL);
  /* after the reconciliation, which destroys what an earlier daemon's
     pools left (no record) */
  if (sbx_warm_start (svc, warm, n_warm, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot keep warm pools", "error", err.msg, NULL);
  struct sbx_fairshare *fair = NULL;
  if (sbx_fairshare_start (store, engine, &fair, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot share the CPU between organisations", "error", err.msg, NULL);
  sbx_service_set_fairshare (svc, fair);
  struct sbx_sampler *sampler = NULL;
  if (sbx_sampler_start (engine, store, metrics_interval_ms, &sampler, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot keep the sandboxes' metrics history", "error", err.msg, NULL);
  sbx_service_set_sampler (svc, sampler);
  struct sbx_meter *meter = NULL;
  if (sbx_meter_start (svc, &meter, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot start the meter of monthly sandbox hours", "error", err.msg, NULL);
  struct sbx_agents *agents = NULL;
  if (sbx_agents_open (svc, &outbound, &agents, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot start the agents", "error", err.msg, NULL);
      return 1;
    }
  struct sbx_http_config hc = { .engine = engine,
                                .agents = agents,
                                .store = store,
                                .svc = svc,
                                .images = n_images ? images : NULL,
                                .webhooks = webhooks,
                                .outbound = &outbound,
                                .addr = (struct sockaddr *) &sa,
                                .docs_dir = SBXD_DOCS_DIR,
                                .state_dir = state,
                                .conn_timeout_s = conn_timeout,
                                .conn_per_ip = conn_per_ip,
                                .terminal_ttl_s = terminal_ttl,
                                .domain = domain,
                                .tls_cert = tls_cert,
                                .tls_key = tls_key,
                                .metrics_token = metrics_token };
  /* before the API: once the API answers, so does the metrics address */
  struct sbx_metrics_listener *metrics = NULL;
  if (metrics_listen)
    {
      if ((metrics = sbx_metrics_listen ((struct sockaddr *) &metrics_sa, engine, store, &err)) == NULL)
        {
          sbx_log_fields (SBX_LOG_ERROR, "cannot listen for metrics", "addr", metrics_listen, "error", err.msg, NULL);
          sbx_engine_close (engine);
          return 1;
        }
      sbx_log_fields (SBX_LOG_INFO, "serving metrics", "url", metrics_listen, NULL);
    }
  struct http_server *h = sbx_http_start (&hc, &err);
  if (h == NULL)
    {
      sbx_log_fields (SBX_LOG_ERROR, "cannot listen", "addr", listen, "error", err.msg, NULL);
      sbx_metrics_stop (metrics);
      sbx_engine_close (engine);
      return 1;
    }
  char url[96];
  snprintf (url, sizeof url, "%s://%s", tls_cert ? "https" : "http", listen);
  sbx_log_fields (SBX_LOG_INFO, "listening", "url", url, "state_dir", state, NULL);
  /* not pause(): no thread blocks these signals, so the kernel may run
     the handler on another thread, and this one would sleep on (a
     SIGTERM once went unanswered until the SIGKILL that followed it) */
  while (!stop_requested)
    {
      struct timespec tick = { 0, 100000000 };
      nanosleep (&tick, NULL);
    }
  sbx_log (SBX_LOG_INFO, "stopping; sandboxes keep running");
  /* first, so that no return below leaves them: nobody owns them */
  sbx_warm_stop ();
  sbx_agents_stop (agents);
  sbx_metrics_stop (metrics);
  if (!sbx_http_stop (h))
    return 0; /* handlers still use the engine: the process ends under them */
  unsigned busy = sbx_service_runs_in_progress ();
  if (busy)
    {
      /* asynchronous runs wait inside the engine on processes that may go
         on for minutes: the engine cannot be freed under them, so the
         process ends here, and the next start records them failed */
      char n[16];
      snprintf (n, sizeof n, "%u", busy);
      sbx_log_fields (SBX_LOG_WARN, "stopping with runs in progress; they are recorded failed at the next start",
                      "runs", n, NULL);
      return 0;
    }
  sbx_meter_stop (meter);
  sbx_service_set_sampler (svc, NULL);
  sbx_sampler_stop (sampler);
  sbx_builds_stop ();
  sbx_service_placement_stop ();
  sbx_store_flush (store); /* ends recorded after their answers kick the workers below */
  sbx_service_set_fairshare (svc, NULL);
  sbx_fairshare_stop (fair);
  sbx_engine_close (engine);
  sbx_service_set_webhooks (svc, NULL);
  sbx_webhooks_stop (webhooks);
  sbx_agents_close (agents);
  sbx_service_close (svc);
  sbx_store_close (store);
  return 0;
}

static int
cmd_template (int argc, char **argv)
{
  if (argc < 2)
    {
      usage (stderr);
      return 2;
    }
  const char *sub = argv[1];
  char tdir[4096];
  const char *spec_dir = SBXD_SPEC_DIR, *tmpl = NULL;
  static const struct option opts[] = { { "spec-dir", required_argument, NULL, 'p' },
                                        { "template-dir", required_argument, NULL, 't' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  optind = 2;
  while ((c = getopt_long (argc, argv, "p:t:", opts, NULL)) != -1)
    switch (c)
      {
      case 'p':
        spec_dir = optarg;
        break;
      case 't':
        tmpl = optarg;
        break;
      default:
        usage (stderr);
        return 2;
      }
  if (tmpl)
    snprintf (tdir, sizeof tdir, "%s", tmpl);
  else
    sbx_template_dir (tdir, sizeof tdir);
  struct sbx_err err;
  int r;
  if (strcmp (sub, "list") == 0)
    r = sbx_template_list (tdir, stdout, &err);
  else if (strcmp (sub, "gc") == 0)
    r = sbx_template_gc (tdir, &err);
  else if ((strcmp (sub, "build") == 0 || strcmp (sub, "rm") == 0) && optind < argc)
    r = strcmp (sub, "build") == 0 ? sbx_template_build (spec_dir, tdir, argv[optind], stderr, &err)
                                   : sbx_template_remove (tdir, argv[optind], &err);
  else
    {
      usage (stderr);
      return 2;
    }
  if (r < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  return 0;
}

static int
cmd_keys (int argc, char **argv)
{
  if (argc < 2)
    {
      usage (stderr);
      return 2;
    }
  const char *sub = argv[1], *state = DEFAULT_STATE_DIR, *org = "default", *style = "sk-sb-";
  static const struct option opts[] = { { "state-dir", required_argument, NULL, 's' },
                                        { "org", required_argument, NULL, 'o' },
                                        { "e2b", no_argument, NULL, 'e' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  optind = 2;
  while ((c = getopt_long (argc, argv, "s:o:e", opts, NULL)) != -1)
    switch (c)
      {
      case 's':
        state = optarg;
        break;
      case 'o':
        org = optarg;
        break;
      case 'e':
        style = "e2b_";
        break;
      default:
        usage (stderr);
        return 2;
      }
  struct sbx_err err;
  struct sbx_store *st = open_store (state, &err);
  if (st == NULL)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  int r = 0;
  if (strcmp (sub, "create") == 0 && optind == argc)
    {
      char key[96];
      struct sbx_key_info info;
      r = sbx_store_key_create (st, org, style, key, sizeof key, &info, &err);
      if (r == 0)
        {
          printf ("%s\n", key);
          fprintf (stderr, "sbxd: key %s for organisation %s\n", info.id, info.org_name);
        }
    }
  else if (strcmp (sub, "list") == 0 && optind == argc)
    {
      struct sbx_key_info *keys;
      size_t n;
      r = sbx_store_key_list (st, &keys, &n, &err);
      for (size_t i = 0; r == 0 && i < n; i++)
        printf ("%s\t%s\t%s...\t%s\n", keys[i].id, keys[i].org_name, keys[i].hint,
                keys[i].revoked_ms ? "revoked" : "valid");
      if (r == 0)
        free (keys);
    }
  else if (strcmp (sub, "revoke") == 0 && optind == argc - 1)
    r = sbx_store_key_revoke (st, argv[optind], &err);
  else
    {
      usage (stderr);
      sbx_store_close (st);
      return 2;
    }
  sbx_store_close (st);
  if (r < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  return 0;
}

/* The organisations' table, with each one's sandbox time this calendar
   month (UTC) as USED_HOURS. */
static int
print_orgs (struct sbx_store *st, const struct sbx_org *v, size_t n, struct sbx_err *err)
{
  int wname = 4, wid = 2;
  for (size_t i = 0; i < n; i++)
    {
      int l = (int) strlen (v[i].name);
      wname = l > wname ? l : wname;
      l = (int) strlen (v[i].id);
      wid = l > wid ? l : wid;
    }
  int64_t now = sbx_wall_ms (), since = sbx_plan_month_start_ms (now);
  printf ("%-*s  %-*s  %-8s  %13s  %13s  %13s  %10s\n", wname, "NAME", wid, "ID", "PLAN", "MAX_SANDBOXES",
          "MAX_TIMEOUT_S", "MONTHLY_HOURS", "USED_HOURS");
  for (size_t i = 0; i < n; i++)
    {
      char hours[32] = "unlimited", used[32];
      int64_t used_ms;
      if (sbx_store_sandbox_usage_ms (st, v[i].id, since, now, &used_ms, err) < 0)
        return -1;
      if (v[i].monthly_ms)
        sbx_plan_format_hours (v[i].monthly_ms, hours, sizeof hours);
      sbx_plan_format_hours (used_ms, used, sizeof used);
      printf ("%-*s  %-*s  %-8s  %13u  %13u  %13s  %10s\n", wname, v[i].name, wid, v[i].id, v[i].plan,
              v[i].max_sandboxes, v[i].max_timeout_s, hours, used);
    }
  return 0;
}

/* `sbxd orgs`: list, create and change organisations.  For create and
   set, --plan gives the plan's three limits, and the other flags then
   override single ones. */
static int
cmd_orgs (int argc, char **argv)
{
  if (argc < 2)
    {
      usage (stderr);
      return 2;
    }
  const char *sub = argv[1], *state = DEFAULT_STATE_DIR;
  const struct sbx_plan *plan = NULL;
  uint32_t max_sandboxes = 0, max_timeout = 0;
  int64_t monthly_ms = 0;
  bool set_sandboxes = false, set_timeout = false, set_hours = false;
  static const struct option opts[] = { { "state-dir", required_argument, NULL, 's' },
                                        { "plan", required_argument, NULL, 'p' },
                                        { "max-sandboxes", required_argument, NULL, 'm' },
                                        { "max-timeout", required_argument, NULL, 't' },
                                        { "monthly-hours", required_argument, NULL, 'H' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  optind = 2;
  while ((c = getopt_long (argc, argv, "s:", opts, NULL)) != -1)
    switch (c)
      {
      case 's':
        state = optarg;
        break;
      case 'p':
        if ((plan = sbx_plan_find (optarg)) == NULL)
          {
            fprintf (stderr, "sbxd: unknown plan %s (one of: %s)\n", optarg, sbx_plan_names ());
            return 2;
          }
        break;
      case 'm':
        if (parse_u32 ("--max-sandboxes", optarg, 1, SBX_PLAN_MAX_SANDBOXES_CAP, &max_sandboxes) < 0)
          return 2;
        set_sandboxes = true;
        break;
      case 't':
        if (parse_u32 ("--max-timeout", optarg, 1, SBX_PLAN_TIMEOUT_CAP, &max_timeout) < 0)
          return 2;
        set_timeout = true;
        break;
      case 'H':
        if (sbx_plan_parse_hours (optarg, &monthly_ms) < 0)
          {
            fprintf (stderr,
                     "sbxd: invalid --monthly-hours %s (want hours from 0 to %u, decimals allowed, at least a "
                     "millisecond; 0: unlimited)\n",
                     optarg, SBX_PLAN_MONTHLY_HOURS_CAP);
            return 2;
          }
        set_hours = true;
        break;
      default:
        usage (stderr);
        return 2;
      }
  bool list = strcmp (sub, "list") == 0, create = strcmp (sub, "create") == 0, set = strcmp (sub, "set") == 0;
  bool changes = plan || set_sandboxes || set_timeout || set_hours;
  if (!(list && optind == argc && !changes) && !((create || set) && optind == argc - 1))
    {
      usage (stderr);
      return 2;
    }
  if (set && !changes)
    {
      fprintf (stderr, "sbxd: orgs set: nothing to change (give --plan, --max-sandboxes, --max-timeout or "
                       "--monthly-hours)\n");
      return 2;
    }

  struct sbx_err err;
  struct sbx_store *st = open_store (state, &err);
  if (st == NULL)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  int r;
  struct sbx_org o = { 0 };
  if (list)
    {
      struct sbx_org *v;
      size_t n;
      r = sbx_store_org_list (st, &v, &n, &err);
      if (r == 0)
        {
          r = print_orgs (st, v, n, &err);
          free (v);
        }
    }
  else
    {
      const char *name = argv[optind];
      if (create)
        {
          if (strlen (name) >= sizeof o.name)
            r = sbx_failx (&err, EINVAL, "organisation name is too long");
          else
            {
              snprintf (o.name, sizeof o.name, "%s", name);
              r = 0;
            }
          if (plan == NULL)
            plan = sbx_plan_default ();
        }
      else
        r = sbx_store_org_get (st, name, &o, &err);
      if (r == 0)
        {
          if (plan)
            {
              snprintf (o.plan, sizeof o.plan, "%s", plan->name);
              o.max_sandboxes = plan->max_sandboxes;
              o.max_timeout_s = plan->max_timeout_s;
              o.monthly_ms = plan->monthly_hours * SBX_MS_PER_HOUR;
            }
          if (set_sandboxes)
            o.max_sandboxes = max_sandboxes;
          if (set_timeout)
            o.max_timeout_s = max_timeout;
          if (set_hours)
            o.monthly_ms = monthly_ms;
          r = create ? sbx_store_org_create (st, &o, &err) : sbx_store_org_update (st, &o, &err);
        }
      if (r == 0 && (r = sbx_store_org_get (st, name, &o, &err)) == 0)
        r = print_orgs (st, &o, 1, &err);
    }
  sbx_store_close (st);
  if (r < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc < 2)
    {
      usage (stderr);
      return 2;
    }
  if (strcmp (argv[1], "serve") == 0)
    return cmd_serve (argc - 1, argv + 1);
  if (strcmp (argv[1], "template") == 0)
    return cmd_template (argc - 1, argv + 1);
  if (strcmp (argv[1], "keys") == 0)
    return cmd_keys (argc - 1, argv + 1);
  if (strcmp (argv[1], "orgs") == 0)
    return cmd_orgs (argc - 1, argv + 1);
  if (strcmp (argv[1], "help") == 0 || strcmp (argv[1], "--help") == 0)
    {
      usage (stdout);
      return 0;
    }
  usage (stderr);
  return 2;
}
