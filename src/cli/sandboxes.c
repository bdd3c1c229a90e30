/*
 * sandboxes.c - sbx create, ls, info, kill, pause, resume and logs: one
 * request each (logs --follow polls), over POST/GET/DELETE /sandboxes.
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Add "K=V" to the object O; the usage error otherwise. */
static int
add_kv (json_t *o, const char *arg, const char *what)
{
  const char *eq = strchr (arg, '=');
  if (eq == NULL || eq == arg)
    return cli_usage ("%s: expected KEY=VALUE, got '%.80s'", what, arg);
  char *k = strndup (arg, (size_t) (eq - arg));
  json_object_set_new (o, k, json_string (eq + 1));
  free (k);
  return 0;
}

static int
one_id (int argc, char **argv, const char *cmd, const char **id)
{
  if (optind + 1 != argc)
    return cli_usage ("usage: sbx %s ID", cmd);
  *id = argv[optind];
  return cli_check_id (*id);
}

/* ---- create ---- */

int
cmd_create (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "timeout", required_argument, NULL, 't' },
                                        { "env", required_argument, NULL, 'e' },
                                        { "metadata", required_argument, NULL, 'm' },
                                        { "cpu", required_argument, NULL, 'c' },
                                        { "memory", required_argument, NULL, 'M' },
                                        { NULL, 0, NULL, 0 } };
  json_t *body = json_object (), *env = json_object (), *meta = json_object ();
  int o, rc = 0;
  uint64_t v;
  while (rc == 0 && (o = cli_getopt (argc, argv, "t:e:m:", opts, "create")) != -1)
    switch (o)
      {
      case 't':
        if (!cli_parse_uint (optarg, 1u << 30, &v))
          rc = cli_usage ("create: --timeout takes seconds, not '%.40s'", optarg);
        else
          json_object_set_new (body, "timeout", json_integer ((json_int_t) v));
        break;
      case 'c':
      case 'M':
        if (!cli_parse_uint (optarg, 1u << 30, &v))
          rc = cli_usage ("create: --%s takes a number, not '%.40s'", o == 'c' ? "cpu" : "memory", optarg);
        else
          json_object_set_new (body, o == 'c' ? "cpuCount" : "memoryMB", json_integer ((json_int_t) v));
        break;
      case 'e':
        rc = add_kv (env, optarg, "create --env");
        break;
      case 'm':
        rc = add_kv (meta, optarg, "create --metadata");
        break;
      default:
        rc = SBX_EXIT_USAGE;
      }
  if (rc == 0 && argc - optind > 1)
    rc = cli_usage ("usage: sbx create [TEMPLATE] [--timeout S] [--env K=V]... [--metadata K=V]...");
  json_t *ans = NULL;
  if (rc == 0)
    {
      json_object_set_new (body, "templateID", json_string (optind < argc ? argv[optind] : "base"));
      if (json_object_size (env))
        json_object_set (body, "envVars", env);
      if (json_object_size (meta))
        json_object_set (body, "metadata", meta);
      rc = cli_call (c, "POST", "/sandboxes", body, &ans);
    }
  if (rc == 0)
    {
      if (c->json)
        cli_print_json (ans);
      else
        {
          const char *id = json_string_value (json_object_get (ans, "sandboxID"));
          printf ("%s\n", id ? id : "?");
        }
    }
  json_decref (ans);
  json_decref (body);
  json_decref (env);
  json_decref (meta);
  return rc;
}

/* ---- ls ---- */

static char *
metadata_text (json_t *m)
{
  struct cli_buf b = { .max = 200 };
  const char *k;
  json_t *v;
  json_object_foreach (m, k, v)
  {
    if (b.len)
      cli_buf_add (&b, ",", 1);
    cli_buf_add (&b, k, strlen (k));
    cli_buf_add (&b, "=", 1);
    const char *s = json_is_string (v) ? json_string_value (v) : "...";
    cli_buf_add (&b, s, strlen (s));
  }
  return b.data;
}

int
cmd_ls (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "all", no_argument, NULL, 'a' },
                                        { "status", required_argument, NULL, 's' },
                                        { NULL, 0, NULL, 0 } };
  bool all = false;
  const char *status = NULL;
  int o;
  while ((o = cli_getopt (argc, argv, "as:", opts, "ls")) != -1)
    switch (o)
      {
      case 'a':
        all = true;
        break;
      case 's':
        status = optarg;
        break;
      default:
        return SBX_EXIT_USAGE;
      }
  if (optind != argc)
    return cli_usage ("usage: sbx ls [--all | --status S]");
  char path[128] = "/sandboxes";
  if (status)
    {
      if (strspn (status, "abcdefghijklmnopqrstuvwxyz") != strlen (status) || strlen (status) > 32)
        return cli_usage ("ls: invalid status '%.40s'", status);
      snprintf (path, sizeof path, "/sandboxes?status=%s", status);
    }
  json_t *ans = NULL;
  int rc = cli_call (c, "GET", path, NULL, &ans);
  if (rc)
    return rc;
  if (!json_is_array (ans))
    {
      json_decref (ans);
      return cli_fail (SBX_EXIT_CONNECT, "the daemon's list is not an array");
    }
  /* without --all or --status: the sandboxes that are still there */
  json_t *shown = json_array ();
  size_t i;
  json_t *s;
  json_array_foreach (ans, i, s)
  {
    const char *st = json_string_value (json_object_get (s, "status"));
    if (all || status || (st && strcmp (st, "stopped") != 0 && strcmp (st, "error") != 0))
      json_array_append (shown, s);
  }
  if (c->json)
    cli_print_json (shown);
  else
    {
      struct cli_table t;
      cli_table_init (&t, 6, "SANDBOX ID", "TEMPLATE", "STATUS", "STARTED (UTC)", "ENDS (UTC)", "METADATA");
      json_array_foreach (shown, i, s)
      {
        char t1[32], t2[32];
        char *meta = metadata_text (json_object_get (s, "metadata"));
        /* the name a user gave (alias), unless it is a build's layer */
        const char *alias = json_string_value (json_object_get (s, "alias"));
        const char *tmpl = alias && alias[0] != '_' ? alias : json_string_value (json_object_get (s, "templateID"));
        cli_table_row (&t, json_string_value (json_object_get (s, "sandboxID")), tmpl,
                       json_string_value (json_object_get (s, "status")),
                       cli_time (json_string_value (json_object_get (s, "startedAt")), t1, sizeof t1),
                       cli_time (json_string_value (json_object_get (s, "endAt")), t2, sizeof t2), meta);
        free (meta);
      }
      cli_table_print (&t);
      cli_table_free (&t);
    }
  json_decref (shown);
  json_decref (ans);
  return 0;
}

/* ---- info ---- */

static void
info_line (const char *k, const char *v)
{
  char *d = strdup (v && *v ? v : "-");
  if (d == NULL)
    return;
  for (char *p = d; *p; p++)
    if ((unsigned char) *p < 0x20 || *p == 0x7f)
      *p = '?';
  printf ("%-14s %s\n", k, d);
  free (d);
}

static void
info_int (const char *k, json_t *v)
{
  char buf[32];
  if (json_is_integer (v))
    snprintf (buf, sizeof buf, "%lld", (long long) json_integer_value (v));
  else
    snprintf (buf, sizeof buf, "-");
  info_line (k, buf);
}

int
cmd_info (struct cli *c, int argc, char **argv)
{
  const char *id = NULL;
  optind = 1;
  if (argc > 1 && argv[1][0] == '-')
    return cli_usage ("info: unknown option %.40s", argv[1]);
  int rc = one_id (argc, argv, "info", &id);
  if (rc)
    return rc;
  char path[128];
  snprintf (path, sizeof path, "/sandboxes/%s", id);
  json_t *s = NULL;
  rc = cli_call (c, "GET", path, NULL, &s);
  if (rc)
    return rc;
  if (c->json)
    cli_print_json (s);
  else
    {
      char t[32];
      info_line ("id", json_string_value (json_object_get (s, "sandboxID")));
      info_line ("template", json_string_value (json_object_get (s, "templateID")));
      info_line ("status", json_string_value (json_object_get (s, "status")));
      if (json_object_get (s, "stopReason"))
        info_line ("stop reason", json_string_value (json_object_get (s, "stopReason")));
      info_line ("started (UTC)", cli_time (json_string_value (json_object_get (s, "startedAt")), t, sizeof t));
      info_line ("ends (UTC)", cli_time (json_string_value (json_object_get (s, "endAt")), t, sizeof t));
      info_int ("cpus", json_object_get (s, "cpuCount"));
      info_int ("memory MB", json_object_get (s, "memoryMB"));
      info_int ("disk MB", json_object_get (s, "diskSizeMB"));
      json_t *net = json_object_get (s, "network");
      if (json_is_object (net))
        {
          info_line ("network", json_string_value (json_object_get (net, "mode")));
          info_line ("address", json_string_value (json_object_get (net, "address")));
        }
      char *meta = metadata_text (json_object_get (s, "metadata"));
      info_line ("metadata", meta);
      free (meta);
    }
  json_decref (s);
  return 0;
}

/* ---- kill, pause, resume ---- */

static int
simple_action (struct cli *c, int argc, char **argv, const char *cmd, const char *method, const char *suffix)
{
  const char *id = NULL;
  optind = 1;
  if (argc > 1 && argv[1][0] == '-')
    return cli_usage ("%s: unknown option %.40s", cmd, argv[1]);
  int rc = one_id (argc, argv, cmd, &id);
  if (rc)
    return rc;
  char path[128];
  snprintf (path, sizeof path, "/sandboxes/%s%s", id, suffix);
  rc = cli_call (c, method, path, NULL, NULL);
  if (rc == 0 && c->json)
    {
      json_t *j = json_pack ("{s:s, s:b}", "sandboxID", id, "ok", 1);
      cli_print_json (j);
      json_decref (j);
    }
  return rc;
}

int
cmd_kill (struct cli *c, int argc, char **argv)
{
  return simple_action (c, argc, argv, "kill", "DELETE", "");
}

int
cmd_pause (struct cli *c, int argc, char **argv)
{
  return simple_action (c, argc, argv, "pause", "POST", "/pause");
}

int
cmd_resume (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "timeout", required_argument, NULL, 't' }, { NULL, 0, NULL, 0 } };
  json_t *body = json_object ();
  int o;
  uint64_t v;
  while ((o = cli_getopt (argc, argv, "t:", opts, "resume")) != -1)
    {
      if (o != 't')
        return json_decref (body), SBX_EXIT_USAGE;
      if (!cli_parse_uint (optarg, 1u << 30, &v))
        return json_decref (body), cli_usage ("resume: --timeout takes seconds, not '%.40s'", optarg);
      json_object_set_new (body, "timeout", json_integer ((json_int_t) v));
    }
  const char *id = NULL;
  int rc = one_id (argc, argv, "resume", &id);
  json_t *ans = NULL;
  if (rc == 0)
    {
      char path[128];
      snprintf (path, sizeof path, "/sandboxes/%s/connect", id);
      rc = cli_call (c, "POST", path, body, &ans);
    }
  if (rc == 0 && c->json)
    cli_print_json (ans);
  json_decref (ans);
  json_decref (body);
  return rc;
}

/* ---- logs ---- */

static int64_t
print_entries (struct cli *c, json_t *logs, int64_t after_ms)
{
  size_t i;
  json_t *e;
  int64_t last = after_ms;
  json_array_foreach (logs, i, e)
  {
    int64_t ms = cli_time_ms (json_string_value (json_object_get (e, "timestamp")));
    if (ms >= 0 && ms <= after_ms)
      continue; /* seen on an earlier round */
    if (ms > last)
      last = ms;
    if (c->json)
      {
        char *line = json_dumps (e, JSON_COMPACT);
        if (line)
          printf ("%s\n", line);
        free (line);
      }
    else
      {
        char t[32], *msg = strdup (json_string_value (json_object_get (e, "message")) ?: "");
        for (char *p = msg; p && *p; p++)
          if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = ' ';
        printf ("%s  %-5s  %s\n", cli_time (json_string_value (json_object_get (e, "timestamp")), t, sizeof t) ?: "-",
                json_string_value (json_object_get (e, "level")) ?: "-", msg ? msg : "");
        free (msg);
      }
  }
  fflush (stdout);
  return last;
}

int
cmd_logs (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "follow", no_argument, NULL, 'f' },
                                        { "level", required_argument, NULL, 'l' },
                                        { NULL, 0, NULL, 0 } };
  bool follow = false;
  const char *level = "debug";
  int o;
  while ((o = cli_getopt (argc, argv, "fl:", opts, "logs")) != -1)
    switch (o)
      {
      case 'f':
        follow = true;
        break;
      case 'l':
        level = optarg;
        break;
      default:
        return SBX_EXIT_USAGE;
      }
  if (strcmp (level, "debug") && strcmp (level, "info") && strcmp (level, "warn") && strcmp (level, "error"))
    return cli_usage ("logs: --level is debug, info, warn or error");
  const char *id = NULL;
  int rc = one_id (argc, argv, "logs", &id);
  if (rc)
    return rc;
  char path[256];
  snprintf (path, sizeof path, "/v2/sandboxes/%s/logs?limit=1000&direction=forward&level=%s", id, level);
  json_t *ans = NULL;
  rc = cli_call (c, "GET", path, NULL, &ans);
  if (rc)
    return rc;
  json_t *logs = json_object_get (ans, "logs");
  if (!json_is_array (logs))
    {
      json_decref (ans);
      return cli_fail (SBX_EXIT_CONNECT, "the daemon's logs have no list");
    }
  if (c->json && !follow)
    {
      cli_print_json (ans);
      json_decref (ans);
      return 0;
    }
  int64_t last = print_entries (c, logs, -1);
  json_decref (ans);
  /* --follow: ask for what came since, each second, until the sandbox is
     gone (one more round after that picks up its last entries) */
  bool ended = false;
  while (follow && !ended)
    {
      struct timespec ts = { 1, 0 };
      nanosleep (&ts, NULL);
      json_t *s = NULL;
      snprintf (path, sizeof path, "/sandboxes/%s", id);
      if (cli_call (c, "GET", path, NULL, &s))
        return SBX_EXIT_SERVER;
      const char *st = json_string_value (json_object_get (s, "status"));
      ended = st && (strcmp (st, "stopped") == 0 || strcmp (st, "error") == 0);
      json_decref (s);
      snprintf (path, sizeof path, "/v2/sandboxes/%s/logs?limit=1000&direction=forward&level=%s&cursor=%lld", id,
                level, (long long) (last < 0 ? 0 : last));
      if ((rc = cli_call (c, "GET", path, NULL, &ans)))
        return rc;
      last = print_entries (c, json_object_get (ans, "logs"), last);
      json_decref (ans);
    }
  return 0;
}
