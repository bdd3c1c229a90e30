/*
 * template.c - sbx template build: a template built by the daemon through
 * E2B's template build API (docs/api.md, "Templates"), or by the local
 * builder from a spec directory.
 *
 * Through the API: POST /v3/templates names the template and makes a
 * build; POST /v2/templates/:id/builds/:build gives its base and steps,
 * from the options in their order and/or a Dockerfile (FROM, RUN, ENV,
 * WORKDIR, USER, COPY, CMD); GET .../status?logsOffset=N is then polled
 * every half second, the build's new log lines printed as they come.
 * COPY sources are packed with tar(1) from the Dockerfile's directory and
 * uploaded by their SHA-256 unless the daemon has them already.
 *
 * With --spec-dir DIR, `sbxd template build NAME --spec-dir DIR` runs
 * instead (the machine's own builder, as root, no daemon involved).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DOCKERFILE_MAX (1u << 20)

struct build {
  json_t *steps;       /* [{type, args, filesHash?}] */
  const char *from_template, *from_image;
  char *from_owned;
  const char *start_cmd, *ready_cmd;
  char *start_owned;
  bool force;
  const char *context; /* the Dockerfile's directory, for COPY */
  json_t *copies;      /* [{src, step}] to pack and upload */
};

static void
add_step (struct build *b, const char *type, json_t *args)
{
  json_array_append_new (b->steps, json_pack ("{s:s, s:o}", "type", type, "args", args));
}

static int
add_env (struct build *b, const char *kv, const char *what)
{
  const char *eq = strchr (kv, '=');
  if (eq == NULL || eq == kv)
    return cli_usage ("%s: expected KEY=VALUE, got '%.80s'", what, kv);
  json_t *args = json_array ();
  json_array_append_new (args, json_stringn (kv, (size_t) (eq - kv)));
  json_array_append_new (args, json_string (eq + 1));
  add_step (b, "ENV", args);
  return 0;
}

static char *
trim (char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen (s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

/* A shell-form or JSON exec-form command as one shell line. */
static char *
command_text (const char *v)
{
  json_t *a = *v == '[' ? json_loads (v, 0, NULL) : NULL;
  if (!json_is_array (a))
    {
      json_decref (a);
      return strdup (v);
    }
  struct cli_buf b = { 0 };
  size_t i;
  json_t *e;
  json_array_foreach (a, i, e)
  {
    const char *s = json_string_value (e) ?: "";
    if (i)
      cli_buf_add (&b, " ", 1);
    cli_buf_add (&b, "'", 1);
    for (; *s; s++)
      if (*s == '\'')
        cli_buf_add (&b, "'\\''", 4);
      else
        cli_buf_add (&b, s, 1);
    cli_buf_add (&b, "'", 1);
  }
  json_decref (a);
  return b.data ? b.data : strdup ("");
}

/* One Dockerfile instruction (continuations joined). */
static int
dockerfile_line (struct build *b, char *line, const char *file, int lineno)
{
  char *s = trim (line);
  if (*s == '\0' || *s == '#')
    return 0;
  size_t kn = strcspn (s, " \t");
  char *v = trim (s + kn);
  s[kn] = '\0';
  for (char *p = s; *p; p++)
    *p = (char) (*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
  if (*v == '\0')
    return cli_usage ("%s:%d: %s needs an argument", file, lineno, s);
  if (strcmp (s, "FROM") == 0)
    {
      free (b->from_owned);
      b->from_owned = strndup (v, strcspn (v, " \t"));
      /* an image reference (debian:bookworm, e2bdev/base) or a template */
      if (strpbrk (b->from_owned, ":/"))
        b->from_image = b->from_owned, b->from_template = NULL;
      else
        b->from_template = b->from_owned, b->from_image = NULL;
    }
  else if (strcmp (s, "RUN") == 0)
    {
      char *cmd = command_text (v);
      add_step (b, "RUN", json_pack ("[s]", cmd));
      free (cmd);
    }
  else if (strcmp (s, "ENV") == 0)
    {
      if (strchr (v, '=') == NULL)
        {
          /* ENV KEY VALUE */
          size_t n = strcspn (v, " \t");
          if (v[n] == '\0')
            return cli_usage ("%s:%d: ENV KEY VALUE or ENV KEY=VALUE...", file, lineno);
          v[n] = '\0';
          add_step (b, "ENV", json_pack ("[s, s]", v, trim (v + n + 1)));
        }
      else
        {
          /* ENV K=V K2="V 2": words split at blanks outside quotes, the
             quotes the Dockerfile's, not the value's */
          char *w = v, *out = v;
          while (*w)
            {
              while (*w == ' ' || *w == '\t')
                w++;
              if (*w == '\0')
                break;
              char *word = out;
              char quote = 0;
              for (; *w && (quote || (*w != ' ' && *w != '\t')); w++)
                {
                  if (quote && *w == quote)
                    quote = 0;
                  else if (!quote && (*w == '"' || *w == '\''))
                    quote = *w;
                  else if (*w == '\\' && w[1] && quote != '\'')
                    *out++ = *++w;
                  else
                    *out++ = *w;
                }
              if (quote)
                return cli_usage ("%s:%d: ENV: a quote is not closed", file, lineno);
              bool end = *w == '\0';
              *out = '\0';
              if (add_env (b, word, file))
                return SBX_EXIT_USAGE;
              if (end)
                break;
              w++;
              out = w; /* the rest is moved left as it is read */
            }
        }
    }
  else if (strcmp (s, "WORKDIR") == 0 || strcmp (s, "USER") == 0)
    add_step (b, s, json_pack ("[s]", v));
  else if (strcmp (s, "COPY") == 0 || strcmp (s, "ADD") == 0)
    {
      if (strncmp (v, "--", 2) == 0 || *v == '[')
        return cli_usage ("%s:%d: COPY SRC DEST (no options or JSON form)", file, lineno);
      char *last = strrchr (v, ' ');
      if (last == NULL)
        return cli_usage ("%s:%d: COPY SRC DEST", file, lineno);
      *last = '\0';
      char *src = trim (v), *dest = trim (last + 1);
      if (*src == '/' || strstr (src, ".."))
        return cli_usage ("%s:%d: COPY sources are relative to the Dockerfile's directory", file, lineno);
      json_array_append_new (b->copies, json_pack ("{s:s, s:i}", "src", src, "step", (int) json_array_size (b->steps)));
      add_step (b, "COPY", json_pack ("[s, s]", src, dest));
    }
  else if (strcmp (s, "CMD") == 0 || strcmp (s, "ENTRYPOINT") == 0)
    {
      free (b->start_owned);
      b->start_owned = command_text (v);
      b->start_cmd = b->start_owned;
    }
  else if (strcmp (s, "LABEL") == 0 || strcmp (s, "EXPOSE") == 0 || strcmp (s, "ARG") == 0)
    ; /* nothing to build */
  else
    return cli_usage ("%s:%d: %s is not supported (FROM, RUN, ENV, WORKDIR, USER, COPY, CMD)", file, lineno, s);
  return 0;
}

static int
read_dockerfile (struct build *b, const char *file)
{
  FILE *f = fopen (file, "r");
  if (f == NULL)
    return cli_fail (SBX_EXIT_LOCAL, "%s: %s", file, strerror (errno));
  struct cli_buf cur = { .max = DOCKERFILE_MAX };
  char line[8192];
  int lineno = 0, start = 1, rc = 0;
  while (rc == 0 && fgets (line, sizeof line, f))
    {
      lineno++;
      size_t n = strlen (line);
      while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
      if (cur.len == 0)
        start = lineno;
      if (n && line[n - 1] == '\\')
        {
          line[n - 1] = ' ';
          cli_buf_add (&cur, line, n);
          continue;
        }
      char *t = trim (line);
      if (cur.len && *t == '#')
        continue; /* a comment inside a continued instruction */
      cli_buf_add (&cur, line, n);
      if (cur.over)
        rc = cli_usage ("%s:%d: instruction too long", file, start);
      else
        rc = dockerfile_line (b, cur.data, file, start);
      cur.len = 0;
    }
  if (rc == 0 && cur.len)
    rc = dockerfile_line (b, cur.data, file, start);
  cli_buf_free (&cur);
  fclose (f);
  return rc;
}

/* ---- COPY sources ---- */

/* Pack SRC (relative to CTX) into a temporary tar file; its SHA-256 in
   HEX.  Returns the open file (positioned at 0) or -1. */
static int
pack (const char *ctx, const char *src, char hex[65], off_t *size)
{
  char tmpl[] = "/tmp/sbx-copy-XXXXXX";
  int fd = mkstemp (tmpl);
  if (fd < 0)
    return cli_fail (SBX_EXIT_LOCAL, "mkstemp: %s", strerror (errno)), -1;
  unlink (tmpl);
  pid_t pid = fork ();
  if (pid == 0)
    {
      dup2 (fd, 1);
      /* each space-separated source, as the daemon's COPY reads them */
      char *argv[64] = { "tar", "-C", (char *) ctx, "-cf", "-", "--" };
      int n = 6;
      char *s = strdup (src);
      for (char *save = NULL, *t = strtok_r (s, " ", &save); t && n < 63; t = strtok_r (NULL, " ", &save))
        argv[n++] = t;
      argv[n] = NULL;
      execvp ("tar", argv);
      _exit (127);
    }
  int st = 0;
  if (pid < 0 || waitpid (pid, &st, 0) < 0 || !WIFEXITED (st) || WEXITSTATUS (st) != 0)
    {
      close (fd);
      return cli_fail (SBX_EXIT_LOCAL, "COPY %s: tar failed in %s", src, ctx), -1;
    }
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  unsigned char buf[65536], dg[32];
  unsigned dn = 0;
  ssize_t r;
  lseek (fd, 0, SEEK_SET);
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  while ((r = read (fd, buf, sizeof buf)) > 0)
    EVP_DigestUpdate (md, buf, (size_t) r);
  EVP_DigestFinal_ex (md, dg, &dn);
  EVP_MD_CTX_free (md);
  for (unsigned i = 0; i < 32; i++)
    snprintf (hex + 2 * i, 3, "%02x", dg[i]);
  *size = lseek (fd, 0, SEEK_END);
  lseek (fd, 0, SEEK_SET);
  return fd;
}

static int
upload_copies (struct cli *c, struct build *b, const char *tid)
{
  size_t i;
  json_t *cp;
  json_array_foreach (b->copies, i, cp)
  {
    const char *src = json_string_value (json_object_get (cp, "src"));
    json_t *step = json_array_get (b->steps, (size_t) json_integer_value (json_object_get (cp, "step")));
    char hex[65];
    off_t size;
    int fd = pack (b->context, src, hex, &size);
    if (fd < 0)
      return SBX_EXIT_LOCAL;
    json_object_set_new (step, "filesHash", json_string (hex));
    char path[256];
    snprintf (path, sizeof path, "/templates/%s/files/%s", tid, hex);
    json_t *ans = NULL;
    int rc = cli_call (c, "GET", path, NULL, &ans);
    const char *url = json_string_value (json_object_get (ans, "url"));
    if (rc == 0 && !json_is_true (json_object_get (ans, "present")) && url)
      {
        FILE *f = fdopen (fd, "rb");
        CURL *h = curl_easy_init ();
        struct cli_buf out = { .max = 4096 };
        curl_easy_setopt (h, CURLOPT_URL, url);
        curl_easy_setopt (h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt (h, CURLOPT_READDATA, f);
        curl_easy_setopt (h, CURLOPT_INFILESIZE_LARGE, (curl_off_t) size);
        curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, cli_buf_write);
        curl_easy_setopt (h, CURLOPT_WRITEDATA, &out);
        curl_easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
        rc = cli_check_answer (h, curl_easy_perform (h), &out, "upload of COPY files");
        curl_easy_cleanup (h);
        cli_buf_free (&out);
        fclose (f);
      }
    else
      close (fd);
    json_decref (ans);
    if (rc)
      return rc;
  }
  return 0;
}

/* ---- the build ---- */

static void
sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

static int
follow (struct cli *c, const char *name, const char *tid, const char *bid)
{
  long offset = 0;
  const char *last_status = "";
  char status_buf[32] = "";
  time_t start = time (NULL);
  FILE *logs = c->json ? stderr : stdout;
  for (;;)
    {
      char path[512];
      snprintf (path, sizeof path, "/templates/%s/builds/%s/status?logsOffset=%ld&limit=100", tid, bid, offset);
      json_t *st = NULL;
      int rc = cli_call (c, "GET", path, NULL, &st);
      if (rc)
        return rc;
      json_t *entries = json_object_get (st, "logEntries");
      size_t i;
      json_t *e;
      json_array_foreach (entries, i, e)
      {
        char *msg = strdup (json_string_value (json_object_get (e, "message")) ?: "");
        for (char *p = msg; p && *p; p++)
          if ((unsigned char) *p < 0x20 && *p != '\t')
            *p = ' ';
        fprintf (logs, "%s\n", msg ? msg : "");
        free (msg);
      }
      fflush (logs);
      offset += (long) json_array_size (entries);
      const char *status = json_string_value (json_object_get (st, "status")) ?: "?";
      if (strcmp (status, last_status) != 0 && isatty (2))
        {
          fprintf (stderr, "sbx: %s: %s (%lds)\n", name, status, (long) (time (NULL) - start));
          snprintf (status_buf, sizeof status_buf, "%s", status);
          last_status = status_buf;
        }
      if (strcmp (status, "ready") == 0 || strcmp (status, "error") == 0)
        {
          /* the rest of the log first */
          if (json_array_size (entries) == 100)
            {
              json_decref (st);
              continue;
            }
          if (c->json)
            cli_print_json (st);
          else if (strcmp (status, "ready") == 0)
            printf ("%s: ready (template %s, build %s)\n", name, tid, bid);
          if (strcmp (status, "error") == 0)
            {
              json_t *r = json_object_get (st, "reason");
              rc = cli_fail (SBX_EXIT_SERVER, "%s: build failed: %s", name,
                             json_string_value (json_object_get (r, "message")) ?: "no reason given");
            }
          json_decref (st);
          return rc;
        }
      json_decref (st);
      if (json_array_size (entries) < 100)
        sleep_ms (500);
    }
}

static int
local_build (const char *name, const char *spec_dir)
{
  char self[PATH_MAX], sbxd[PATH_MAX + 8];
  ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 1);
  const char *prog = "sbxd";
  if (n > 0)
    {
      self[n] = '\0';
      snprintf (sbxd, sizeof sbxd, "%s/sbxd", dirname (self));
      if (access (sbxd, X_OK) == 0)
        prog = sbxd;
    }
  fflush (stdout);
  execlp (prog, "sbxd", "template", "build", name, "--spec-dir", spec_dir, (char *) NULL);
  return cli_fail (SBX_EXIT_LOCAL, "cannot run %s: %s", prog, strerror (errno));
}

int
cmd_template (struct cli *c, int argc, char **argv)
{
  if (argc < 2 || strcmp (argv[1], "build") != 0)
    return cli_usage ("usage: sbx template build NAME [OPTIONS] (see sbx --help)");
  argc--, argv++;
  static const struct option opts[] = { { "from", required_argument, NULL, 'F' },
                                        { "from-image", required_argument, NULL, 'I' },
                                        { "file", required_argument, NULL, 'f' },
                                        { "run", required_argument, NULL, 'r' },
                                        { "env", required_argument, NULL, 'e' },
                                        { "workdir", required_argument, NULL, 'w' },
                                        { "user", required_argument, NULL, 'u' },
                                        { "start-cmd", required_argument, NULL, 's' },
                                        { "ready-cmd", required_argument, NULL, 'R' },
                                        { "tag", required_argument, NULL, 't' },
                                        { "cpu", required_argument, NULL, 'c' },
                                        { "memory", required_argument, NULL, 'm' },
                                        { "force", no_argument, NULL, 'x' },
                                        { "spec-dir", required_argument, NULL, 'S' },
                                        { NULL, 0, NULL, 0 } };
  struct build b = { .steps = json_array (), .copies = json_array () };
  json_t *tmpl = json_object (), *tags = json_array ();
  const char *spec_dir = NULL;
  char *file_dup = NULL;
  int o, rc = 0;
  uint64_t v;
  while (rc == 0 && (o = cli_getopt (argc, argv, "f:", opts, "template build")) != -1)
    switch (o)
      {
      case 'F':
        b.from_template = optarg, b.from_image = NULL;
        break;
      case 'I':
        b.from_image = optarg, b.from_template = NULL;
        break;
      case 'f':
        if (b.context)
          {
            rc = cli_usage ("template build: one --file");
            break;
          }
        file_dup = strdup (optarg);
        b.context = dirname (file_dup);
        rc = read_dockerfile (&b, optarg);
        break;
      case 'r':
        add_step (&b, "RUN", json_pack ("[s]", optarg));
        break;
      case 'e':
        rc = add_env (&b, optarg, "template build --env");
        break;
      case 'w':
        add_step (&b, "WORKDIR", json_pack ("[s]", optarg));
        break;
      case 'u':
        add_step (&b, "USER", json_pack ("[s]", optarg));
        break;
      case 's':
        b.start_cmd = optarg;
        break;
      case 'R':
        b.ready_cmd = optarg;
        break;
      case 't':
        json_array_append_new (tags, json_string (optarg));
        break;
      case 'c':
      case 'm':
        if (!cli_parse_uint (optarg, 1u << 20, &v))
          rc = cli_usage ("template build: --%s takes a number", o == 'c' ? "cpu" : "memory");
        else
          json_object_set_new (tmpl, o == 'c' ? "cpuCount" : "memoryMB", json_integer ((json_int_t) v));
        break;
      case 'x':
        b.force = true;
        break;
      case 'S':
        spec_dir = optarg;
        break;
      default:
        rc = SBX_EXIT_USAGE;
      }
  if (rc == 0 && argc - optind != 1)
    rc = cli_usage ("usage: sbx template build NAME [OPTIONS] (see sbx --help)");
  const char *name = rc == 0 ? argv[optind] : NULL;
  if (rc == 0 && spec_dir)
    {
      if (json_array_size (b.steps) || b.from_image || b.from_template || b.start_cmd)
        rc = cli_usage ("template build: --spec-dir builds from the spec alone (no steps or --from)");
      else
        rc = local_build (name, spec_dir);
    }
  json_t *ans = NULL;
  char *tid = NULL, *bid = NULL;
  if (rc == 0)
    {
      json_object_set_new (tmpl, "name", json_string (name));
      if (json_array_size (tags))
        json_object_set (tmpl, "tags", tags);
      rc = cli_call (c, "POST", "/v3/templates", tmpl, &ans);
    }
  if (rc == 0)
    {
      const char *t = json_string_value (json_object_get (ans, "templateID"));
      const char *bb = json_string_value (json_object_get (ans, "buildID"));
      if (t == NULL || bb == NULL || cli_check_id (t) || cli_check_id (bb))
        rc = cli_fail (SBX_EXIT_CONNECT, "the daemon's answer has no templateID and buildID");
      else
        tid = strdup (t), bid = strdup (bb);
    }
  if (rc == 0)
    rc = upload_copies (c, &b, tid);
  if (rc == 0)
    {
      json_t *body = json_pack ("{s:O, s:b}", "steps", b.steps, "force", b.force);
      if (b.from_image)
        json_object_set_new (body, "fromImage", json_string (b.from_image));
      else
        json_object_set_new (body, "fromTemplate", json_string (b.from_template ? b.from_template : "base"));
      if (b.start_cmd)
        json_object_set_new (body, "startCmd", json_string (b.start_cmd));
      if (b.ready_cmd)
        json_object_set_new (body, "readyCmd", json_string (b.ready_cmd));
      char path[256];
      snprintf (path, sizeof path, "/v2/templates/%s/builds/%s", tid, bid);
      rc = cli_call (c, "POST", path, body, NULL);
      json_decref (body);
    }
  if (rc == 0)
    rc = follow (c, name, tid, bid);
  free (tid);
  free (bid);
  free (file_dup);
  free (b.from_owned);
  free (b.start_owned);
  json_decref (ans);
  json_decref (tmpl);
  json_decref (tags);
  json_decref (b.steps);
  json_decref (b.copies);
  return rc;
}
