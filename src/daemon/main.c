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

#include "../core/sandbox.h"
#include "../core/template.h"
#include "http.h"

#ifndef SBXD_SPEC_DIR
#define SBXD_SPEC_DIR "templates"
#endif

static void
usage (FILE *f)
{
  fputs ("usage:\n"
         "  sbxd serve [--listen ADDR:PORT] [--state-dir DIR] [--template-dir DIR]\n"
         "  sbxd template build NAME [--spec-dir DIR] [--template-dir DIR]\n"
         "  sbxd template list [--template-dir DIR]\n"
         "  sbxd template rm NAME [--template-dir DIR]\n"
         "  sbxd template gc [--template-dir DIR]\n",
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

static void
log_event (void *ud, const char *id, enum sbx_event_kind kind, const char *reason)
{
  (void) ud;
  static const char *const names[] = { "created", "updated", "paused", "resumed", "killed" };
  fprintf (stderr, "sbxd: sandbox %s %s (%s)\n", id, names[kind], reason);
}

static volatile sig_atomic_t stop_requested;

static void
on_signal (int sig)
{
  (void) sig;
  stop_requested = 1;
}

static int
cmd_serve (int argc, char **argv)
{
  const char *listen = "127.0.0.1:49982", *state = "/var/lib/sbxd/state", *tmpl = NULL;
  static const struct option opts[] = { { "listen", required_argument, NULL, 'l' },
                                        { "state-dir", required_argument, NULL, 's' },
                                        { "template-dir", required_argument, NULL, 't' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  while ((c = getopt_long (argc, argv, "l:s:t:", opts, NULL)) != -1)
    switch (c)
      {
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
  struct sbx_engine_config cfg = { .state_dir = state, .template_dir = tmpl, .on_event = log_event };
  struct sbx_engine *engine;
  struct sbx_err err;
  if (sbx_engine_open (&cfg, &engine, &err) < 0)
    {
      fprintf (stderr, "sbxd: %s\n", err.msg);
      return 1;
    }
  struct http_server *h = sbx_http_start (engine, (struct sockaddr *) &sa, &err);
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
  if (strcmp (argv[1], "help") == 0 || strcmp (argv[1], "--help") == 0)
    {
      usage (stdout);
      return 0;
    }
  usage (stderr);
  return 2;
}
