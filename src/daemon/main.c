/*
 * main.c - the sbxd command line: `serve` runs the daemon, `template`
 * manages templates.  It only parses arguments and calls the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"
#include "../core/netlink.h"
#include "../core/sandbox.h"
#include "../core/template.h"
#include "../service/service.h"
#include "../api/server.h"
#include "../service/store.h"
#include "../service/webhook.h"

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
         "  sbxd template build NAME [--spec-dir DIR] [--template-dir DIR]\n"
         "  sbxd template list [--template-dir DIR]\n"
         "  sbxd template rm NAME [--template-dir DIR]\n"
         "  sbxd template gc [--template-dir DIR]\n"
         "  sbxd keys create [--state-dir DIR] [--org NAME] [--e2b]\n"
         "  sbxd keys list [--state-dir DIR]\n"
         "  sbxd keys revoke KEY-ID [--state-dir DIR]\n",
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
                                        { NULL, 0, NULL, 0 } };
  struct sbx_net_config net = { 0 };
  struct sbx_cidr ops[64];
  bool network = true;
  int c;
  while ((c = getopt_long (argc, argv, "l:s:t:", opts, NULL)) != -1)
    switch (c)
      {
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
  struct sockaddr_in sa;
  if (parse_listen (listen, &sa) < 0)
    {
      fprintf (stderr, "sbxd: invalid --listen %s (want ADDR:PORT)\n", listen);
      return 2;
    }
  signal (SIGPIPE, SIG_IGN);
  struct sbx_err err;
  struct sbx_store *store = open_store (state, &err);
  if (store == NULL)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
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
          fprintf (stderr, "sbxd: created API key %s for organisation default (shown once)\n", info.id);
        }
    }
  const char *scale_env = getenv ("SBXD_WEBHOOK_RETRY_SCALE");
  double scale = scale_env ? strtod (scale_env, NULL) : 1.0;
  struct sbx_service *svc;
  if (sbx_service_open (store, &svc, &err) < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      sbx_store_close (store);
      return 1;
    }
  net.operator_allow = ops;
  struct sbx_engine_config cfg = { .state_dir = state,
                                   .template_dir = tmpl,
                                   .on_event = sbx_service_on_change,
                                   .event_ud = svc,
                                   .net = network ? &net : NULL };
  struct sbx_engine *engine;
  if (sbx_engine_open (&cfg, &engine, &err) < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      sbx_store_close (store);
      return 1;
    }
  sbx_service_set_engine (svc, engine);
  struct sbx_webhooks *webhooks;
  if (sbx_webhooks_start (store, scale, &webhooks, &err) < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  sbx_service_set_webhooks (svc, webhooks);
  int changes = sbx_service_reconcile (svc, &err);
  if (changes < 0)
    fprintf (stderr, "sbxd: reconcile records with sandboxes: %s\n", err.msg);
  struct sbx_http_config hc = { .engine = engine,
                                .store = store,
                                .svc = svc,
                                .webhooks = webhooks,
                                .addr = (struct sockaddr *) &sa,
                                .docs_dir = SBXD_DOCS_DIR,
                                .state_dir = state };
  struct http_server *h = sbx_http_start (&hc, &err);
  if (h == NULL)
    {
      fprintf (stderr, "sbxd: listen on %s: %s\n", listen, err.msg);
      sbx_engine_close (engine);
      return 1;
    }
  fprintf (stderr, "sbxd: listening on http://%s (state %s)\n", listen, state);
  struct sigaction act = { .sa_handler = on_signal };
  sigaction (SIGINT, &act, NULL);
  sigaction (SIGTERM, &act, NULL);
  while (!stop_requested)
    pause ();
  fprintf (stderr, "sbxd: stopping; sandboxes keep running\n");
  sbx_http_stop (h);
  sbx_engine_close (engine);
  sbx_service_set_webhooks (svc, NULL);
  sbx_webhooks_stop (webhooks);
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
  if (strcmp (argv[1], "help") == 0 || strcmp (argv[1], "--help") == 0)
    {
      usage (stdout);
      return 0;
    }
  usage (stderr);
  return 2;
}
