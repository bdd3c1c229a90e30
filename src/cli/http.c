/*
 * http.c - sbx's requests to the daemon (libcurl), its error lines and the
 * small helpers every command uses.
 *
 * Every answer the daemon sends is bounded here before it is parsed
 * (64 MiB for a JSON answer, 4 KiB of an error body shown), and anything
 * printed from it is made one printable line: the daemon is trusted to
 * be the daemon, not to send well-formed bytes.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ANSWER_MAX (64u << 20)
#define ERROR_BODY_MAX 4096

static void
one_line (char *s)
{
  for (; *s; s++)
    if ((unsigned char) *s < 0x20 || *s == 0x7f)
      *s = ' ';
}

static int vfail (int code, const char *fmt, va_list ap) __attribute__ ((format (printf, 2, 0)));

static int
vfail (int code, const char *fmt, va_list ap)
{
  char msg[1024];
  vsnprintf (msg, sizeof msg, fmt, ap);
  one_line (msg);
  fprintf (stderr, "sbx: %s\n", msg);
  return code;
}

int
cli_fail (int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfail (code, fmt, ap);
  va_end (ap);
  return code;
}

int
cli_usage (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfail (SBX_EXIT_USAGE, fmt, ap);
  va_end (ap);
  return SBX_EXIT_USAGE;
}

int
cli_getopt (int argc, char **argv, const char *shortopts, const struct option *longopts, const char *cmd)
{
  opterr = 0;
  int o = getopt_long (argc, argv, shortopts, longopts, NULL);
  if (o == '?' || o == ':')
    {
      const char *arg = argv[optind - 1];
      if (optopt && strncmp (arg, "--", 2) != 0)
        cli_usage ("%s: %s -%c (see sbx %s --help)", cmd, o == ':' ? "missing value for" : "unknown option",
                   optopt, cmd);
      else
        cli_usage ("%s: %s %s (see sbx %s --help)", cmd, o == ':' ? "missing value for" : "unknown or incomplete option",
                   arg, cmd);
      return '?';
    }
  return o;
}

int
cli_check_id (const char *id)
{
  size_t n = strlen (id);
  if (n == 0 || n > 64 || strspn (id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != n)
    return cli_usage ("invalid sandbox id: '%.80s'", id);
  return 0;
}

bool
cli_parse_uint (const char *s, uint64_t max, uint64_t *out)
{
  if (s == NULL || *s < '0' || *s > '9')
    return false;
  errno = 0;
  char *end;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno || *end || v > max)
    return false;
  *out = v;
  return true;
}

/* ---- buffers ---- */

int
cli_buf_add (struct cli_buf *b, const void *p, size_t n)
{
  if (b->max && b->len + n > b->max)
    {
      b->over = true;
      n = b->max - b->len;
    }
  if (b->len + n + 1 > b->cap)
    {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + n + 1)
        cap *= 2;
      char *d = realloc (b->data, cap);
      if (d == NULL)
        return -1;
      b->data = d;
      b->cap = cap;
    }
  memcpy (b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void
cli_buf_free (struct cli_buf *b)
{
  free (b->data);
  memset (b, 0, sizeof *b);
}

size_t
cli_buf_write (char *p, size_t size, size_t n, void *ud)
{
  struct cli_buf *b = ud;
  /* past the bound the rest is dropped (b->over says so), not an error:
     an error body is still shown by its start */
  return cli_buf_add (b, p, size * n) < 0 ? 0 : size * n;
}

/* ---- requests ---- */

CURL *
cli_easy (struct cli *c, const char *path, bool json_body, struct curl_slist **hdrs)
{
  CURL *h = curl_easy_init ();
  if (h == NULL)
    return NULL;
  size_t n = strlen (c->url) + strlen (path) + 1;
  char *url = malloc (n);
  char auth[600];
  if (url == NULL)
    {
      curl_easy_cleanup (h);
      return NULL;
    }
  snprintf (url, n, "%s%s", c->url, path);
  curl_easy_setopt (h, CURLOPT_URL, url);
  free (url);
  struct curl_slist *l = NULL;
  if (c->key)
    {
      snprintf (auth, sizeof auth, "Authorization: Bearer %s", c->key);
      l = curl_slist_append (l, auth);
    }
  if (json_body)
    l = curl_slist_append (l, "Content-Type: application/json");
  l = curl_slist_append (l, "Expect:"); /* no 100-continue round trip */
  *hdrs = l;
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, l);
  curl_easy_setopt (h, CURLOPT_USERAGENT, "sbx/1");
  curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt (h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
  return h;
}

void
cli_error_message (const char *body, size_t len, char *buf, size_t n)
{
  json_t *j = body && len ? json_loadb (body, len, 0, NULL) : NULL;
  const char *m = NULL;
  if (json_is_object (j))
    {
      json_t *e = json_object_get (j, "error");
      if (json_is_string (e))
        m = json_string_value (e);
      else if (json_is_object (e) && json_is_string (json_object_get (e, "message")))
        m = json_string_value (json_object_get (e, "message"));
      else if (json_is_string (json_object_get (j, "message")))
        m = json_string_value (json_object_get (j, "message"));
    }
  if (m)
    snprintf (buf, n, "%s", m);
  else if (body && len)
    snprintf (buf, n, "%.*s", (int) (len < 200 ? len : 200), body);
  else
    snprintf (buf, n, "no message");
  json_decref (j);
  one_line (buf);
}

int
cli_check_answer (CURL *h, CURLcode res, const struct cli_buf *body, const char *what)
{
  if (res != CURLE_OK)
    {
      char *url = NULL;
      curl_easy_getinfo (h, CURLINFO_EFFECTIVE_URL, &url);
      return cli_fail (SBX_EXIT_CONNECT, "%s: %s (%s)", what, curl_easy_strerror (res), url ? url : "?");
    }
  long status = 0;
  curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300)
    return 0;
  char msg[ERROR_BODY_MAX];
  cli_error_message (body ? body->data : NULL, body ? body->len : 0, msg, sizeof msg);
  return cli_fail (SBX_EXIT_SERVER, "%s (HTTP %ld)", msg, status);
}

int
cli_call (struct cli *c, const char *method, const char *path, json_t *body, json_t **out)
{
  if (out)
    *out = NULL;
  struct curl_slist *hdrs = NULL;
  CURL *h = cli_easy (c, path, body != NULL, &hdrs);
  if (h == NULL)
    return cli_fail (SBX_EXIT_LOCAL, "out of memory");
  char *data = body ? json_dumps (body, JSON_COMPACT) : NULL;
  struct cli_buf ans = { .max = ANSWER_MAX };
  curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, method);
  if (data)
    curl_easy_setopt (h, CURLOPT_POSTFIELDS, data);
  else if (strcmp (method, "POST") == 0)
    curl_easy_setopt (h, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, cli_buf_write);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, &ans);
  CURLcode res = curl_easy_perform (h);
  int rc = cli_check_answer (h, res, &ans, "cannot reach the daemon");
  if (rc == 0 && ans.over)
    rc = cli_fail (SBX_EXIT_CONNECT, "the daemon's answer is larger than %u MiB", ANSWER_MAX >> 20);
  if (rc == 0 && out && ans.len)
    {
      json_error_t je;
      *out = json_loadb (ans.data, ans.len, 0, &je);
      if (*out == NULL)
        rc = cli_fail (SBX_EXIT_CONNECT, "the daemon's answer is not JSON: %s", je.text);
    }
  cli_buf_free (&ans);
  free (data);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
  return rc;
}

/* ---- base64 (OpenSSL's, already linked for the daemon) ---- */

char *
cli_b64_encode (const void *p, size_t n)
{
  char *s = malloc (4 * ((n + 2) / 3) + 1);
  if (s)
    EVP_EncodeBlock ((unsigned char *) s, p, (int) n);
  return s;
}

int
cli_b64_decode (const char *s, size_t n, unsigned char **out, size_t *outlen)
{
  *out = NULL;
  *outlen = 0;
  if (n % 4 != 0 || n > (size_t) 1 << 30)
    return -1;
  unsigned char *d = malloc (n / 4 * 3 + 1);
  if (d == NULL)
    return -1;
  int r = n ? EVP_DecodeBlock (d, (const unsigned char *) s, (int) n) : 0;
  if (r < 0)
    {
      free (d);
      return -1;
    }
  /* EVP_DecodeBlock counts the padding as zero bytes */
  size_t pad = (n >= 1 && s[n - 1] == '=') + (n >= 2 && s[n - 2] == '=');
  *out = d;
  *outlen = (size_t) r - pad;
  return 0;
}

int
cli_write_all (int fd, const void *buf, size_t n)
{
  const char *p = buf;
  while (n)
    {
      ssize_t w = write (fd, p, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
      p += w;
      n -= (size_t) w;
    }
  return 0;
}
