/*
 * main.c - `sbx`: configuration, global options and the commands.
 *
 * The daemon's URL and API key come from SBXD_URL and SBXD_API_KEY, else
 * from the config file ($SBX_CONFIG, else $XDG_CONFIG_HOME/sbx/config,
 * else ~/.config/sbx/config): lines `url = ...` and `api_key = ...`, `#`
 * comments.  The URL defaults to http://127.0.0.1:49982.
 */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "http://127.0.0.1:49982"

static const char usage_text[] =
    "usage: sbx [--json] COMMAND [ARGS]\n"
    "\n"
    "Sandboxes:\n"
    "  sbx create [TEMPLATE] [--timeout S] [--env K=V]... [--metadata K=V]...\n"
    "  sbx ls [--all | --status S]\n"
    "  sbx info ID\n"
    "  sbx kill ID\n"
    "  sbx pause ID\n"
    "  sbx resume ID [--timeout S]\n"
    "  sbx logs ID [--follow] [--level L]\n"
    "Commands and files:\n"
    "  sbx exec [--cwd D] [--user U] [--env K=V]... [--timeout S] [-i] ID -- CMD [ARG]...\n"
    "  sbx shell [--user U] [--cwd D] ID\n"
    "  sbx cp [--user U] LOCAL ID:PATH       (LOCAL may be - for stdin)\n"
    "  sbx cp [--user U] ID:PATH LOCAL       (LOCAL may be - for stdout)\n"
    "Templates:\n"
    "  sbx template build NAME [--from T | --from-image I] [--file DOCKERFILE]\n"
    "                          [--run CMD]... [--env K=V]... [--workdir D] [--user U]\n"
    "                          [--start-cmd CMD] [--ready-cmd CMD] [--tag T]...\n"
    "                          [--cpu N] [--memory MB] [--force]\n"
    "  sbx template build NAME --spec-dir DIR    (the local builder, as root)\n"
    "MCP:\n"
    "  sbx mcp                  stdio MCP transport bridged to the daemon's /mcp\n"
    "\n"
    "Configuration: SBXD_URL and SBXD_API_KEY, else ~/.config/sbx/config\n"
    "(`url = ...`, `api_key = ...`).  --json prints the daemon's JSON.\n"
    "Exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 daemon unreachable,\n"
    "4 local error; exec and shell exit with the command's code.\n";

static char *
trim (char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen (s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

/* Read the config file (missing is fine) into C's unset fields. */
static int
read_config (struct cli *c)
{
  char path[4096];
  const char *p = getenv ("SBX_CONFIG"), *xdg = getenv ("XDG_CONFIG_HOME"), *home = getenv ("HOME");
  if (p && *p)
    snprintf (path, sizeof path, "%s", p);
  else if (xdg && *xdg)
    snprintf (path, sizeof path, "%s/sbx/config", xdg);
  else if (home && *home)
    snprintf (path, sizeof path, "%s/.config/sbx/config", home);
  else
    return 0;
  FILE *f = fopen (path, "r");
  if (f == NULL)
    {
      if (errno == ENOENT && !(p && *p))
        return 0;
      return cli_usage ("cannot read %s: %s", path, strerror (errno));
    }
  char line[4096];
  int lineno = 0, rc = 0;
  while (fgets (line, sizeof line, f))
    {
      lineno++;
      char *s = trim (line);
      if (*s == '\0' || *s == '#')
        continue;
      char *eq = strchr (s, '=');
      if (eq == NULL)
        {
          rc = cli_usage ("%s:%d: expected KEY = VALUE", path, lineno);
          break;
        }
      *eq = '\0';
      char *k = trim (s), *v = trim (eq + 1);
      size_t vn = strlen (v);
      if (vn >= 2 && (v[0] == '"' || v[0] == '\'') && v[vn - 1] == v[0])
        {
          v[vn - 1] = '\0';
          v++;
        }
      if (strcmp (k, "url") == 0)
        {
          if (c->url == NULL)
            c->url = strdup (v);
        }
      else if (strcmp (k, "api_key") == 0)
        {
          if (c->key == NULL)
            c->key = strdup (v);
        }
      else
        {
          rc = cli_usage ("%s:%d: unknown key '%s' (url, api_key)", path, lineno, k);
          break;
        }
    }
  fclose (f);
  return rc;
}

static int
configure (struct cli *c, bool need_key)
{
  const char *u = getenv ("SBXD_URL"), *k = getenv ("SBXD_API_KEY");
  if (u && *u)
    c->url = strdup (u);
  if (k && *k)
    c->key = strdup (k);
  int rc = c->url && c->key ? 0 : read_config (c);
  if (rc)
    return rc;
  if (c->url == NULL)
    c->url = strdup (DEFAULT_URL);
  size_t n = strlen (c->url);
  while (n && c->url[n - 1] == '/')
    c->url[--n] = '\0';
  if (strncmp (c->url, "http://", 7) != 0 && strncmp (c->url, "https://", 8) != 0)
    return cli_usage ("SBXD_URL must start with http:// or https:// (it is '%.100s')", c->url);
  if ((c->key == NULL || *c->key == '\0') && need_key)
    return cli_usage ("no API key: set SBXD_API_KEY, or api_key in ~/.config/sbx/config");
  if (c->key && strpbrk (c->key, "\r\n"))
    return cli_usage ("the API key has a line break in it");
  return 0;
}

struct command {
  const char *name;
  int (*fn) (struct cli *, int, char **);
};

static const struct command commands[] = {
  { "create", cmd_create }, { "ls", cmd_ls },       { "list", cmd_ls },         { "info", cmd_info },
  { "kill", cmd_kill },     { "rm", cmd_kill },     { "pause", cmd_pause },     { "resume", cmd_resume },
  { "logs", cmd_logs },     { "exec", cmd_exec },   { "shell", cmd_shell },     { "cp", cmd_cp },
  { "template", cmd_template }, { "mcp", cmd_mcp },
};

int
main (int argc, char **argv)
{
  struct cli c = { 0 };
  signal (SIGPIPE, SIG_IGN);

  /* global options before the command; --json is also taken after it (up
     to a "--", behind which the arguments are a command's) */
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++)
    {
      if (strcmp (argv[i], "--json") == 0)
        c.json = true;
      else if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0)
        {
          fputs (usage_text, stdout);
          return 0;
        }
      else if (strcmp (argv[i], "--version") == 0)
        {
          puts ("sbx 1");
          return 0;
        }
      else
        return cli_usage ("unknown option %s (see sbx --help)", argv[i]);
    }
  if (i == argc)
    return cli_usage ("no command (see sbx --help)");
  if (strcmp (argv[i], "help") == 0)
    {
      fputs (usage_text, stdout);
      return 0;
    }
  const struct command *cmd = NULL;
  for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
    if (strcmp (argv[i], commands[k].name) == 0)
      cmd = &commands[k];
  if (cmd == NULL)
    return cli_usage ("unknown command '%.80s' (see sbx --help)", argv[i]);

  int sub_argc = 0;
  char **sub_argv = calloc ((size_t) (argc - i + 1), sizeof *sub_argv);
  if (sub_argv == NULL)
    return cli_fail (SBX_EXIT_LOCAL, "out of memory");
  bool dashdash = false;
  for (int k = i; k < argc; k++)
    {
      if (!dashdash && strcmp (argv[k], "--") == 0)
        dashdash = true;
      if (!dashdash && k > i && strcmp (argv[k], "--json") == 0)
        {
          c.json = true;
          continue;
        }
      if (!dashdash && k > i && (strcmp (argv[k], "--help") == 0 || strcmp (argv[k], "-h") == 0))
        {
          fputs (usage_text, stdout);
          free (sub_argv);
          return 0;
        }
      sub_argv[sub_argc++] = argv[k];
    }

  /* the local template builder talks to no daemon */
  bool need_key = true;
  for (int k = 0; k < sub_argc && cmd->fn == cmd_template; k++)
    if (strncmp (sub_argv[k], "--spec-dir", 10) == 0)
      need_key = false;
  int rc = configure (&c, need_key);
  if (rc == 0)
    {
      curl_global_init (CURL_GLOBAL_DEFAULT);
      rc = cmd->fn (&c, sub_argc, sub_argv);
      curl_global_cleanup ();
    }
  free (sub_argv);
  free (c.url);
  free (c.key);
  fflush (stdout);
  if (ferror (stdout) && rc == 0)
    rc = SBX_EXIT_LOCAL;
  return rc;
}
