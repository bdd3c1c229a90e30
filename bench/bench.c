/*
 * bench.c - sbxd-bench: latency of the sandbox core on this machine, as
 * JSON on stdout.  It measures, over N rounds:
 *   create     sbx_create until the sandbox runs (its init answers)
 *   exec       a round trip of `true` in a running sandbox
 *   cycle      create + exec `true` + destroy
 *   destroy    sbx_destroy until it answers (the sandbox is gone for callers)
 *   teardown   sbx_destroy until every trace is gone (sbx_teardown_wait)
 * create is measured three times, each with its own engine: networking
 * off, networking on (internet, no rules), and networking on with egress
 * rules (an allowed CIDR, an allowed domain, everything else denied);
 * the other numbers come from the second.
 * And, in the same run, the one-shot floor that bubblewrap gives for
 * `bwrap --unshare-all ... true` on the same template, for comparison.
 *
 * With --api URL --key KEY it also measures a running daemon over HTTP on
 * loopback: create latency (POST /sandboxes), the exec round trip of
 * `true` (POST /sandboxes/:id/processes), destroy latency (DELETE
 * /sandboxes/:id, the answer; the teardown follows it), and the throughput of
 * GET /sandboxes/:id with wrk (2 threads, 32 connections, 5 s).
 *
 * usage: sbxd-bench [--rounds N] [--template NAME] [--state-dir DIR]
 *                   [--api URL --key KEY]
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/common/util.h"
#include "../src/core/netlink.h"
#include "../src/core/sandbox.h"
#include "../src/core/template.h"

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static void
print_stats (const char *name, uint64_t *v, int n, int last)
{
  qsort (v, (size_t) n, sizeof *v, cmp_u64);
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += (double) v[i];
  int p99 = (int) ((n - 1) * 0.99 + 0.5);
  printf ("    \"%s\": {\"n\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_ms\": %.3f, \"min_ms\": %.3f}%s\n", name, n,
          (double) v[n / 2] / 1e6, (double) v[p99] / 1e6, sum / n / 1e6, (double) v[0] / 1e6, last ? "" : ",");
}

static int
on_event (const struct sbx_proc_event *ev, void *ud)
{
  (void) ev;
  (void) ud;
  return 0;
}

static int
run_true (struct sbx_engine *e, const char *id)
{
  static const char *const argv[] = { "true", NULL };
  struct sbx_exec_opts o = { .argv = argv, .user = "root" };
  struct sbx_err err;
  if (sbx_exec (e, id, &o, on_event, NULL, &err) < 0)
    {
      fprintf (stderr, "exec: %s\n", err.msg);
      return -1;
    }
  return 0;
}

static uint64_t
run_bwrap (const char *rootfs)
{
  uint64_t t0 = sbx_now_ns ();
  pid_t pid = fork ();
  if (pid == 0)
    {
      execlp ("bwrap", "bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/", "--proc", "/proc", "--dev",
              "/dev", "--tmpfs", "/tmp", "true", (char *) NULL);
      _exit (127);
    }
  int st;
  waitpid (pid, &st, 0);
  if (!WIFEXITED (st) || WEXITSTATUS (st) != 0)
    return 0;
  return sbx_now_ns () - t0;
}

struct buf {
  char *p;
  size_t n;
};

static size_t
collect (char *ptr, size_t size, size_t nmemb, void *ud)
{
  struct buf *b = ud;
  size_t len = size * nmemb;
  char *np = realloc (b->p, b->n + len + 1);
  if (np == NULL)
    return 0;
  memcpy (np + b->n, ptr, len);
  b->n += len;
  np[b->n] = '\0';
  b->p = np;
  return len;
}

/* One request on a kept-alive handle; returns the status, body in B. */
static long
api_call (CURL *c, const char *method, const char *url, const char *body, struct curl_slist *hdrs, struct buf *b)
{
  b->n = 0;
  curl_easy_setopt (c, CURLOPT_URL, url);
  curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, b);
  if (curl_easy_perform (c) != CURLE_OK)
    return 0;
  long status = 0;
  curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

static double
run_wrk (const char *url, const char *key)
{
  char hdr[256], cmd[1536];
  snprintf (hdr, sizeof hdr, "Authorization: Bearer %s", key);
  snprintf (cmd, sizeof cmd, "wrk -t2 -c32 -d5s -H '%s' '%s' 2>&1", hdr, url);
  FILE *f = popen (cmd, "r");
  if (f == NULL)
    return -1;
  char line[512];
  double rps = -1;
  while (fgets (line, sizeof line, f))
    if (sscanf (line, "Requests/sec: %lf", &rps) == 1)
      break;
  while (fgets (line, sizeof line, f))
    ;
  pclose (f);
  return rps;
}

static int
bench_api (const char *api, const char *key, const char *tmpl, int rounds)
{
  CURL *c = curl_easy_init ();
  char auth[256], url[1024], body[256];
  snprintf (auth, sizeof auth, "Authorization: Bearer %s", key);
  struct curl_slist *hdrs = curl_slist_append (NULL, auth);
  hdrs = curl_slist_append (hdrs, "Content-Type: application/json");
  struct buf b = { 0 };
  uint64_t *create = calloc ((size_t) rounds, sizeof (uint64_t));
  uint64_t *exec = calloc ((size_t) rounds * 10, sizeof (uint64_t));
  uint64_t *destroy = calloc ((size_t) rounds, sizeof (uint64_t));
  int n_exec = 0;
  char id[64] = "";
  snprintf (body, sizeof body, "{\"templateID\": \"%s\", \"timeout\": 600}", tmpl);
  for (int i = 0; i < rounds; i++)
    {
      snprintf (url, sizeof url, "%s/sandboxes", api);
      uint64_t t0 = sbx_now_ns ();
      long st = api_call (c, "POST", url, body, hdrs, &b);
      create[i] = sbx_now_ns () - t0;
      json_t *j = st == 201 ? json_loads (b.p, 0, NULL) : NULL;
      const char *sid = j ? json_string_value (json_object_get (j, "sandboxID")) : NULL;
      if (sid == NULL)
        {
          fprintf (stderr, "sbxd-bench: create over HTTP: %ld %s\n", st, b.p ? b.p : "");
          return -1;
        }
      snprintf (id, sizeof id, "%s", sid);
      json_decref (j);
      snprintf (url, sizeof url, "%s/sandboxes/%s/processes", api, id);
      for (int k = 0; k < 10; k++)
        {
          uint64_t a = sbx_now_ns ();
          if (api_call (c, "POST", url, "{\"cmd\": \"true\", \"user\": \"root\"}", hdrs, &b) != 200)
            {
              fprintf (stderr, "sbxd-bench: exec over HTTP: %s\n", b.p ? b.p : "");
              return -1;
            }
          exec[n_exec++] = sbx_now_ns () - a;
        }
      if (i < rounds - 1)
        {
          snprintf (url, sizeof url, "%s/sandboxes/%s", api, id);
          uint64_t a = sbx_now_ns ();
          if (api_call (c, "DELETE", url, NULL, hdrs, &b) != 204)
            {
              fprintf (stderr, "sbxd-bench: destroy over HTTP: %s\n", b.p ? b.p : "");
              return -1;
            }
          destroy[i] = sbx_now_ns () - a;
          usleep (20000);
        }
    }
  snprintf (url, sizeof url, "%s/sandboxes/%s", api, id);
  double rps = run_wrk (url, key);
  api_call (c, "DELETE", url, NULL, hdrs, &b);
  printf ("  \"api\": {\n");
  print_stats ("create", create, rounds, 0);
  print_stats ("exec_true_round_trip", exec, n_exec, 0);
  print_stats ("destroy", destroy, rounds - 1, 0);
  printf ("    \"get_sandbox_requests_per_s\": %.0f\n  },\n", rps);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (c);
  free (b.p);
  return 0;
}

/* One engine's create / exec / destroy rounds. */
struct run {
  const char *name;
  const char *state;
  const struct sbx_net_config *net;
  const struct sbx_net_policy *policy;
  uint64_t *create, *exec, *destroy, *teardown, *cycle;
  int n_exec;
};

static int
run_core (struct run *r, const char *tmpl, int rounds)
{
  struct sbx_engine_config cfg = { .state_dir = r->state, .spares = 8, .net = r->net };
  struct sbx_engine *e;
  struct sbx_err err;
  if (sbx_engine_open (&cfg, &e, &err) < 0)
    {
      fprintf (stderr, "sbxd-bench: %s\n", err.msg);
      return -1;
    }
  sleep (2); /* let the spare pool fill, as it is on a running daemon */
  r->create = calloc ((size_t) rounds, sizeof (uint64_t));
  r->exec = calloc ((size_t) rounds * 10, sizeof (uint64_t));
  r->destroy = calloc ((size_t) rounds, sizeof (uint64_t));
  r->teardown = calloc ((size_t) rounds, sizeof (uint64_t));
  r->cycle = calloc ((size_t) rounds, sizeof (uint64_t));
  struct sbx_create_opts co = { .template_name = tmpl, .timeout_s = 600, .net = r->policy };
  char id[SBX_ID_MAX];
  for (int i = 0; i < rounds; i++)
    {
      /* create, then ten `true` round trips, then destroy */
      uint64_t t0 = sbx_now_ns ();
      if (sbx_create (e, &co, id, &err) < 0)
        {
          fprintf (stderr, "sbxd-bench: create: %s\n", err.msg);
          return -1;
        }
      uint64_t t1 = sbx_now_ns ();
      if (run_true (e, id) < 0)
        return -1;
      uint64_t t2 = sbx_now_ns ();
      r->exec[r->n_exec++] = t2 - t1;
      for (int k = 0; k < 9; k++)
        {
          uint64_t a = sbx_now_ns ();
          if (run_true (e, id) < 0)
            return -1;
          r->exec[r->n_exec++] = sbx_now_ns () - a;
        }
      uint64_t t3 = sbx_now_ns ();
      if (sbx_destroy (e, id, &err) < 0)
        {
          fprintf (stderr, "sbxd-bench: destroy: %s\n", err.msg);
          return -1;
        }
      uint64_t t4 = sbx_now_ns ();
      if (sbx_teardown_wait (e, id, 60000, &err) < 0)
        {
          fprintf (stderr, "sbxd-bench: teardown: %s\n", err.msg);
          return -1;
        }
      r->create[i] = t1 - t0;
      r->destroy[i] = t4 - t3;
      r->teardown[i] = sbx_now_ns () - t3;
      r->cycle[i] = (t2 - t0) + (t4 - t3);
      /* give the spare pool the time a real client's think time would */
      usleep (20000);
    }
  sbx_engine_close (e);
  return 0;
}

int
main (int argc, char **argv)
{
  int rounds = 50;
  const char *tmpl = "base";
  char state[PATH_MAX] = "";
  const char *api = NULL, *key = NULL;
  static const struct option opts[] = { { "rounds", required_argument, NULL, 'n' },
                                        { "template", required_argument, NULL, 't' },
                                        { "state-dir", required_argument, NULL, 's' },
                                        { "api", required_argument, NULL, 'a' },
                                        { "key", required_argument, NULL, 'k' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  while ((c = getopt_long (argc, argv, "n:t:s:a:k:", opts, NULL)) != -1)
    switch (c)
      {
      case 'n':
        rounds = atoi (optarg);
        break;
      case 't':
        tmpl = optarg;
        break;
      case 's':
        snprintf (state, sizeof state, "%s", optarg);
        break;
      case 'a':
        api = optarg;
        break;
      case 'k':
        key = optarg;
        break;
      default:
        fprintf (stderr, "usage: sbxd-bench [--rounds N] [--template NAME] [--state-dir DIR] [--api URL --key KEY]\n");
        return 2;
      }
  if (rounds < 2)
    rounds = 2;
  bool own_state = *state == '\0';
  if (own_state && mkdtemp (strcpy (state, "/tmp/sbxd-bench-XXXXXX")) == NULL)
    return 1;

  /* three engines, one after the other: networking off, networking on
     (internet, no rules), and networking on with egress rules */
  char state_net[PATH_MAX + 8], state_rules[PATH_MAX + 8];
  snprintf (state_net, sizeof state_net, "%s/net", state);
  snprintf (state_rules, sizeof state_rules, "%s/rules", state);
  struct sbx_net_config netcfg = { 0 };
  struct sbx_cidr allow = { 0xc6336400, 24 }; /* 198.51.100.0/24 */
  struct sbx_cidr deny = { 0, 0 };
  char *domain = "example.com";
  struct sbx_net_policy rules = { .enabled = true, .allow = &allow, .n_allow = 1, .deny = &deny, .n_deny = 1,
                                  .domains = &domain, .n_domains = 1 };
  struct run runs[3] = {
    { .name = "create_to_ready_no_network", .state = state },
    { .name = "create_to_ready", .state = state_net, .net = &netcfg },
    { .name = "create_to_ready_egress_rules", .state = state_rules, .net = &netcfg, .policy = &rules },
  };
  for (int r = 0; r < 3; r++)
    if (run_core (&runs[r], tmpl, rounds) < 0)
      return 1;
  struct run *main_run = &runs[1];
  uint64_t *bwrap = calloc ((size_t) rounds, sizeof (uint64_t));
  int n_bwrap = 0;
  struct sbx_err err;
  struct sbx_template t;
  char tdir[PATH_MAX];
  sbx_template_dir (tdir, sizeof tdir);
  if (sbx_template_load (tdir, tmpl, &t, &err) == 0)
    {
      for (int i = 0; i < rounds; i++)
        {
          uint64_t d = run_bwrap (t.rootfs);
          if (d)
            bwrap[n_bwrap++] = d;
        }
      sbx_template_free (&t);
    }

  printf ("{\n  \"machine\": {\"cpus\": %ld},\n  \"template\": \"%s\",\n  \"core\": {\n", sysconf (_SC_NPROCESSORS_ONLN),
          tmpl);
  for (int r = 0; r < 3; r++)
    print_stats (runs[r].name, runs[r].create, rounds, 0);
  print_stats ("exec_true_round_trip", main_run->exec, main_run->n_exec, 0);
  print_stats ("destroy", main_run->destroy, rounds, 0);
  print_stats ("teardown", main_run->teardown, rounds, 0);
  print_stats ("create_exec_destroy", main_run->cycle, rounds, 1);
  printf ("  },\n");
  if (api && key && bench_api (api, key, tmpl, rounds) < 0)
    return 1;
  printf ("  \"bwrap_one_shot\": {\n");
  if (n_bwrap)
    print_stats ("bwrap_unshare_all_true", bwrap, n_bwrap, 1);
  printf ("  }\n}\n");


  if (own_state)
    sbx_rm_rf (state, &err);
  return 0;
}
