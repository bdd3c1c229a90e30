/*
 * cp.c - sbx cp: files into and out of a sandbox, streamed.
 *
 *   sbx cp LOCAL ID:PATH   POST /sandboxes/:id/files (multipart, read from
 *                          the file as it is sent; `-` reads stdin, sent
 *                          chunked)
 *   sbx cp ID:PATH LOCAL   GET /sandboxes/:id/files?path= (written as it
 *                          arrives to a temporary file beside LOCAL, renamed
 *                          over it once whole; `-` writes stdout)
 *
 * Neither side holds a file in memory.  On a terminal, transfers of 1 MB
 * or more show a progress bar on stderr.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "ID:PATH" when ARG starts with a sandbox id and a colon. */
static bool
split_remote (const char *arg, char **id, const char **path)
{
  size_t n = strspn (arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");
  if (n == 0 || arg[n] != ':')
    return false;
  *id = strndup (arg, n);
  *path = arg + n + 1;
  return *id != NULL;
}

/* The query "path=P[&user=U]", escaped. */
static char *
file_query (CURL *h, const char *path, const char *user)
{
  char *p = curl_easy_escape (h, path, 0), *u = user ? curl_easy_escape (h, user, 0) : NULL;
  char *q = NULL;
  if (p && (u || !user) && asprintf (&q, "path=%s%s%s", p, u ? "&user=" : "", u ? u : "") < 0)
    q = NULL;
  curl_free (p);
  curl_free (u);
  return q;
}

static int
xferinfo (void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
  struct cli_progress *p = ud;
  (void) dltotal;
  (void) ultotal;
  if (dlnow > 0)
    cli_progress_update (p, (uint64_t) dlnow, 0);
  else if (ulnow > 0)
    cli_progress_update (p, (uint64_t) ulnow > p->total ? p->total : (uint64_t) ulnow, 0);
  return 0;
}

/* ---- upload ---- */

static size_t
read_stdin (char *buf, size_t size, size_t n, void *ud)
{
  (void) ud;
  ssize_t r;
  do
    r = read (0, buf, size * n);
  while (r < 0 && errno == EINTR);
  return r < 0 ? CURL_READFUNC_ABORT : (size_t) r;
}

static int
upload (struct cli *c, const char *local, const char *id, const char *rpath, const char *user)
{
  bool from_stdin = strcmp (local, "-") == 0;
  struct stat st = { 0 };
  if (!from_stdin)
    {
      if (stat (local, &st) < 0)
        return cli_fail (SBX_EXIT_LOCAL, "%s: %s", local, strerror (errno));
      if (!S_ISREG (st.st_mode))
        return cli_fail (SBX_EXIT_LOCAL, "%s: not a regular file", local);
      if (access (local, R_OK) < 0)
        return cli_fail (SBX_EXIT_LOCAL, "%s: %s", local, strerror (errno));
    }
  char *dup = strdup (local), *base = basename (dup);
  /* "ID:" or "ID:dir/" names a directory: the file keeps its name */
  char *dest = NULL;
  size_t rn = strlen (rpath);
  if (rn == 0 || rpath[rn - 1] == '/')
    {
      if (from_stdin)
        {
          free (dup);
          return cli_usage ("cp: from stdin, the sandbox path must name a file");
        }
      if (asprintf (&dest, "%s%s", rpath, base) < 0)
        dest = NULL;
    }
  else
    dest = strdup (rpath);

  struct curl_slist *hdrs = NULL;
  CURL *h = curl_easy_init ();
  char *q = h && dest ? file_query (h, dest, user) : NULL, *path = NULL;
  if (q == NULL || asprintf (&path, "/sandboxes/%s/files?%s", id, q) < 0)
    path = NULL;
  curl_easy_cleanup (h);
  h = path ? cli_easy (c, path, false, &hdrs) : NULL;
  if (h == NULL)
    {
      free (dup), free (dest), free (q), free (path);
      return cli_fail (SBX_EXIT_LOCAL, "out of memory");
    }
  curl_mime *mime = curl_mime_init (h);
  curl_mimepart *part = curl_mime_addpart (mime);
  curl_mime_name (part, "file");
  if (from_stdin)
    curl_mime_data_cb (part, -1, read_stdin, NULL, NULL, NULL);
  else
    curl_mime_filedata (part, local);
  curl_mime_filename (part, base);
  curl_mime_type (part, "application/octet-stream");
  curl_easy_setopt (h, CURLOPT_MIMEPOST, mime);

  struct cli_progress prog;
  cli_progress_start (&prog, base, (uint64_t) st.st_size);
  struct cli_buf ans = { .max = 1 << 20 };
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, cli_buf_write);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, &ans);
  curl_easy_setopt (h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt (h, CURLOPT_XFERINFOFUNCTION, xferinfo);
  curl_easy_setopt (h, CURLOPT_XFERINFODATA, &prog);
  CURLcode res = curl_easy_perform (h);
  int rc = cli_check_answer (h, res, &ans, "upload");
  cli_progress_end (&prog, rc == 0);
  if (rc == 0 && c->json)
    {
      json_t *j = json_loadb (ans.data ? ans.data : "", ans.len, 0, NULL);
      if (j)
        cli_print_json (j);
      json_decref (j);
    }
  cli_buf_free (&ans);
  curl_mime_free (mime);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
  free (dup), free (dest), free (q), free (path);
  return rc;
}

/* ---- download ---- */

struct sink {
  CURL *h;
  int fd;
  long status;
  uint64_t written;
  bool failed;
  int err;
  struct cli_buf errbody;
  struct cli_progress *prog;
};

static size_t
sink_write (char *p, size_t size, size_t n, void *ud)
{
  struct sink *s = ud;
  if (s->status == 0)
    curl_easy_getinfo (s->h, CURLINFO_RESPONSE_CODE, &s->status);
  if (s->status >= 300)
    return cli_buf_write (p, size, n, &s->errbody);
  if (cli_write_all (s->fd, p, size * n) < 0)
    {
      s->failed = true;
      s->err = errno;
      return 0;
    }
  s->written += size * n;
  return size * n;
}

static size_t
sink_header (char *p, size_t size, size_t n, void *ud)
{
  struct sink *s = ud;
  size_t len = size * n;
  static const char name[] = "x-file-size:";
  if (len > sizeof name - 1 && strncasecmp (p, name, sizeof name - 1) == 0)
    {
      char v[32];
      size_t vn = len - (sizeof name - 1);
      snprintf (v, sizeof v, "%.*s", (int) (vn < sizeof v - 1 ? vn : sizeof v - 1), p + sizeof name - 1);
      unsigned long long size_v = strtoull (v, NULL, 10);
      s->prog->total = size_v;
    }
  return len;
}

static int
download (struct cli *c, const char *id, const char *rpath, const char *local, const char *user)
{
  if (*rpath == '\0')
    return cli_usage ("cp: ID:PATH needs a path");
  bool to_stdout = strcmp (local, "-") == 0;
  char *dest = NULL, *tmp = NULL;
  char *rdup = strdup (rpath), *rbase = basename (rdup);
  struct stat st;
  if (!to_stdout)
    {
      if (stat (local, &st) == 0 && S_ISDIR (st.st_mode))
        {
          if (asprintf (&dest, "%s/%s", local, rbase) < 0)
            dest = NULL;
        }
      else
        dest = strdup (local);
      if (dest == NULL || asprintf (&tmp, "%s.sbx-XXXXXX", dest) < 0)
        {
          free (rdup), free (dest);
          return cli_fail (SBX_EXIT_LOCAL, "out of memory");
        }
    }
  struct sink s = { .fd = 1, .errbody = { .max = 4096 } };
  if (!to_stdout)
    {
      s.fd = mkstemp (tmp);
      if (s.fd < 0)
        {
          int e = errno;
          free (rdup), free (dest), free (tmp);
          return cli_fail (SBX_EXIT_LOCAL, "%s: %s", local, strerror (e));
        }
      mode_t um = umask (0);
      umask (um);
      fchmod (s.fd, 0666 & ~um);
    }

  struct curl_slist *hdrs = NULL;
  CURL *h = curl_easy_init ();
  char *q = h ? file_query (h, rpath, user) : NULL, *path = NULL;
  if (q == NULL || asprintf (&path, "/sandboxes/%s/files?%s", id, q) < 0)
    path = NULL;
  curl_easy_cleanup (h);
  h = path ? cli_easy (c, path, false, &hdrs) : NULL;
  int rc;
  if (h == NULL)
    rc = cli_fail (SBX_EXIT_LOCAL, "out of memory");
  else
    {
      struct cli_progress prog;
      cli_progress_start (&prog, rbase, 0);
      s.h = h;
      s.prog = &prog;
      curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, sink_write);
      curl_easy_setopt (h, CURLOPT_WRITEDATA, &s);
      curl_easy_setopt (h, CURLOPT_HEADERFUNCTION, sink_header);
      curl_easy_setopt (h, CURLOPT_HEADERDATA, &s);
      curl_easy_setopt (h, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt (h, CURLOPT_XFERINFOFUNCTION, xferinfo);
      curl_easy_setopt (h, CURLOPT_XFERINFODATA, &prog);
      CURLcode res = curl_easy_perform (h);
      if (s.failed)
        rc = cli_fail (SBX_EXIT_LOCAL, "%s: %s", to_stdout ? "stdout" : local, strerror (s.err));
      else
        rc = cli_check_answer (h, res, &s.errbody, "download");
      if (rc == 0 && prog.total && s.written != prog.total)
        rc = cli_fail (SBX_EXIT_CONNECT, "download: %llu of %llu bytes came", (unsigned long long) s.written,
                       (unsigned long long) prog.total);
      cli_progress_end (&prog, rc == 0);
    }
  if (!to_stdout)
    {
      if (rc == 0 && (fsync (s.fd) < 0 || close (s.fd) < 0))
        rc = cli_fail (SBX_EXIT_LOCAL, "%s: %s", local, strerror (errno));
      else if (rc)
        close (s.fd);
      if (rc == 0 && rename (tmp, dest) < 0)
        rc = cli_fail (SBX_EXIT_LOCAL, "%s: %s", dest, strerror (errno));
      if (rc)
        unlink (tmp);
    }
  if (rc == 0 && c->json)
    {
      json_t *j = json_pack ("{s:s, s:s, s:I}", "path", rpath, "local", to_stdout ? "-" : dest, "size",
                             (json_int_t) s.written);
      /* stdout holds the file itself with `-` */
      if (!to_stdout)
        cli_print_json (j);
      json_decref (j);
    }
  cli_buf_free (&s.errbody);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
  free (rdup), free (dest), free (tmp), free (q), free (path);
  return rc;
}

int
cmd_cp (struct cli *c, int argc, char **argv)
{
  static const struct option opts[] = { { "user", required_argument, NULL, 'u' }, { NULL, 0, NULL, 0 } };
  const char *user = NULL;
  int o;
  while ((o = cli_getopt (argc, argv, "u:", opts, "cp")) != -1)
    {
      if (o != 'u')
        return SBX_EXIT_USAGE;
      user = optarg;
    }
  if (argc - optind != 2)
    return cli_usage ("usage: sbx cp LOCAL ID:PATH, or sbx cp ID:PATH LOCAL");
  const char *src = argv[optind], *dst = argv[optind + 1], *spath = NULL, *dpath = NULL;
  char *sid = NULL, *did = NULL;
  bool sr = split_remote (src, &sid, &spath), dr = split_remote (dst, &did, &dpath);
  int rc;
  if (sr == dr)
    rc = cli_usage ("cp: exactly one of the two must be ID:PATH (a local name with a colon: ./NAME)");
  else if (dr)
    rc = upload (c, src, did, dpath, user);
  else
    rc = download (c, sid, spath, dst, user);
  free (sid);
  free (did);
  return rc;
}
