/*
 * template.c - build, load, list and remove templates (see template.h).
 *
 * A template is built from a spec file (templates/NAME.spec, format in
 * templates/README.md) by running mmdebstrap into a hidden build directory
 * next to the final one:
 *
 *   TEMPLATE_DIR/.lock-NAME            flock(2) held while building/removing
 *   TEMPLATE_DIR/.build-NAME-PID/      the tree being built
 *   TEMPLATE_DIR/NAME/{rootfs,template.json}
 *   TEMPLATE_DIR/ALIAS -> NAME
 *
 * The finished tree replaces the previous one with a single rename, so a
 * reader sees either the old template or the new one, never half of one.
 * Everything hidden (leading '.') belongs to this file; template and alias
 * names therefore may not start with '.'.
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif
#include "template.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"

#define DEFAULT_TEMPLATE_DIR "/var/lib/sbxd/templates"
#define SPEC_MAX (1u << 20)
#define JSON_MAX (1u << 20)
#define INCLUDE_MAX_DEPTH 8

/* What a spec leaves unset.  Deliberately modest: a spec that wants more
   says so. */
#define DEFAULT_SUITE "bookworm"
#define DEFAULT_USER "root"
#define DEFAULT_WORKDIR "/"
#define DEFAULT_CPU 1
#define DEFAULT_MEMORY_MB 512
#define DEFAULT_DISK_MB 4096
#define START_MAX 1024 /* a spec's start: and ready: commands, with the NUL */

/* Setup lines run inside the new root with a fixed environment: whatever
   the daemon was started with (TMPDIR, a host PATH, proxies...) must not
   leak into the image. */
#define SETUP_ENV                                                              \
  "HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin " \
  "LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive"

/* ---------------------------------------------------------------- helpers */

/* A growable, always NULL-terminated list of owned strings, so that it can
   be handed over as an envp-style array. */
struct strv {
  char **v;
  size_t n, cap;
};

static void
strv_free (struct strv *s)
{
  for (size_t i = 0; i < s->n; i++)
    free (s->v[i]);
  free (s->v);
  s->v = NULL;
  s->n = s->cap = 0;
}

static int
strv_push_n (struct strv *s, const char *str, size_t len)
{
  if (s->n + 2 > s->cap)
    {
      size_t cap = s->cap ? s->cap * 2 : 8;
      char **v = realloc (s->v, cap * sizeof *v);
      if (v == NULL)
        return -1;
      s->v = v;
      s->cap = cap;
    }
  char *dup = strndup (str, len);
  if (dup == NULL)
    return -1;
  s->v[s->n++] = dup;
  s->v[s->n] = NULL;
  return 0;
}

static int
strv_push (struct strv *s, const char *str)
{
  return strv_push_n (s, str, strlen (str));
}

static bool
strv_contains_n (const struct strv *s, const char *str, size_t len)
{
  for (size_t i = 0; i < s->n; i++)
    if (strlen (s->v[i]) == len && memcmp (s->v[i], str, len) == 0)
      return true;
  return false;
}

static bool
strv_contains (const struct strv *s, const char *str)
{
  return strv_contains_n (s, str, strlen (str));
}

static void
say (FILE *progress, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
say (FILE *progress, const char *fmt, ...)
{
  if (progress == NULL)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (progress, fmt, ap);
  va_end (ap);
  fputc ('\n', progress);
  fflush (progress);
}

/* snprintf into a path buffer, failing instead of truncating. */
static int
path_fmt (char *buf, size_t n, struct sbx_err *err, const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

static int
path_fmt (char *buf, size_t n, struct sbx_err *err, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = vsnprintf (buf, n, fmt, ap);
  va_end (ap);
  if (r < 0 || (size_t) r >= n)
    return sbx_failx (err, ENAMETOOLONG, "path too long: %s...", buf);
  return 0;
}

static char *
trim (char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen (s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

static bool
is_alnum (char c)
{
  /* Not isalnum(3): names must not depend on the locale. */
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9_.-]+, shorter than the name field, no "..", and not starting
   with '.' (hidden entries are our lock and build files) or '-' (it would
   read as an option on a command line). */
static bool
valid_name (const char *name)
{
  size_t len = strlen (name);
  if (len == 0 || len >= sizeof ((struct sbx_template *) 0)->name)
    return false;
  if (name[0] == '.' || name[0] == '-' || strstr (name, "..") != NULL)
    return false;
  for (const char *p = name; *p; p++)
    if (! is_alnum (*p) && *p != '_' && *p != '.' && *p != '-')
      return false;
  return true;
}

static int
check_name (const char *name, struct sbx_err *err)
{
  if (! valid_name (name))
    return sbx_failx (err, EINVAL, "invalid template name: '%s'", name);
  return 0;
}

static int
copy_str (char *dst, size_t n, const char *src)
{
  size_t len = strlen (src);
  if (len >= n)
    return -1;
  memcpy (dst, src, len + 1);
  return 0;
}

/* Resolve TMPL_DIR to a canonical absolute path: the mount table lookups
   and the rootfs path handed to callers both need it. */
static int
canonical_dir (const char *tmpl_dir, char **out, struct sbx_err *err)
{
  char *p = realpath (tmpl_dir, NULL);
  if (p == NULL)
    return sbx_fail (err, errno, "resolve %s", tmpl_dir);
  *out = p;
  return 0;
}

/* ------------------------------------------------------------ safe removal */


static int
mounts_below (const char *path, struct strv *out, struct sbx_err *err)
{
  FILE *f = fopen ("/proc/self/mountinfo", "re");
  if (f == NULL)
    return sbx_fail (err, errno, "open /proc/self/mountinfo");
  size_t plen = strlen (path);
  cleanup_free char *line = NULL;
  size_t cap = 0;
  int ret = 0;
  while (getline (&line, &cap, f) >= 0)
    {
      /* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
      char *save = NULL, *field = strtok_r (line, " ", &save);
      for (int i = 0; field != NULL && i < 4; i++)
        field = strtok_r (NULL, " ", &save);
      if (field == NULL)
        continue;
      sbx_unescape_octal (field);
      if (strncmp (field, path, plen) == 0 && (field[plen] == '/' || field[plen] == '\0')
          && strv_push (out, field) < 0)
        {
          ret = sbx_fail (err, ENOMEM, "read /proc/self/mountinfo");
          break;
        }
    }
  fclose (f);
  return ret;
}

static int
cmp_len_desc (const void *a, const void *b)
{
  size_t la = strlen (*(char *const *) a), lb = strlen (*(char *const *) b);
  return la < lb ? 1 : la > lb ? -1 : 0;
}

/* rm -rf PATH, but first detach anything mounted below it.  A build that
   was killed can leave mmdebstrap's /proc, /sys or /dev mounts behind in
   the rootfs, and deleting through a bind mount would delete host files.
   Detaching a mount can uncover one it was hiding, hence the rounds; if
   something stays mounted we refuse rather than guess. */
static int
safe_remove (const char *path, struct sbx_err *err)
{
  struct strv m = { 0 };
  for (int round = 0;; round++)
    {
      strv_free (&m);
      if (mounts_below (path, &m, err) < 0)
        goto fail;
      if (m.n == 0)
        break;
      if (round == 8)
        {
          sbx_failx (err, EBUSY, "refusing to remove %s: %s is still mounted", path, m.v[0]);
          goto fail;
        }
      qsort (m.v, m.n, sizeof *m.v, cmp_len_desc);
      for (size_t i = 0; i < m.n; i++)
        /* EINVAL/ENOENT: gone with a detached parent, or hidden by a mount
           above it (then the next round gets it). */
        if (umount2 (m.v[i], MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
          {
            sbx_fail (err, errno, "unmount %s", m.v[i]);
            goto fail;
          }
    }
  strv_free (&m);
  return sbx_rm_rf (path, err);

fail:
  strv_free (&m);
  return -1;
}

/* ------------------------------------------------------------- disk usage */

static _Thread_local uint64_t du_bytes;

static int
du_one (const char *fpath, const struct stat *sb, int type, struct FTW *ftw)
{
  (void) fpath;
  (void) ftw;
  if (type == FTW_NS)
    return 0;
  uint64_t b = (uint64_t) sb->st_blocks * 512;
  /* Share hard-linked blocks among the links so they are counted once in
     total without remembering inodes. */
  if (! S_ISDIR (sb->st_mode) && sb->st_nlink > 1)
    b /= sb->st_nlink;
  du_bytes += b;
  return 0;
}

static uint64_t
disk_usage (const char *path)
{
  du_bytes = 0;
  nftw (path, du_one, 64, FTW_PHYS | FTW_MOUNT);
  return du_bytes;
}

static unsigned long long
to_mb (uint64_t bytes)
{
  return (unsigned long long) ((bytes + (1u << 20) - 1) >> 20);
}

/* ------------------------------------------------------------------ locks */

/* Exclusive per-template lock, shared by every sbxd instance using this
   template directory.  The lock files are never removed: unlinking a lock
   file another process is about to flock is how two processes end up
   holding "the" lock at once. */
static int
take_lock (int dfd, const char *name, bool wait, bool *waited, FILE *progress, struct sbx_err *err)
{
  char lockname[96];
  snprintf (lockname, sizeof lockname, ".lock-%s", name);
  cleanup_close int fd = openat (dfd, lockname, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return sbx_fail (err, errno, "open lock file %s", lockname);
  if (waited)
    *waited = false;
  if (flock (fd, LOCK_EX | LOCK_NB) == 0)
    return steal_fd (&fd);
  if (errno != EWOULDBLOCK)
    return sbx_fail (err, errno, "lock %s", lockname);
  if (! wait)
    return sbx_failx (err, EBUSY, "template %s is being built by another process", name);
  say (progress, "template %s: waiting for another build of it to finish...", name);
  while (flock (fd, LOCK_EX) < 0)
    if (errno != EINTR)
      return sbx_fail (err, errno, "lock %s", lockname);
  if (waited)
    *waited = true;
  return steal_fd (&fd);
}

/* --------------------------------------------------------------- the spec */

struct spec {
  char suite[64];
  char user[32];
  char workdir[256];
  uint32_t cpu_count, memory_mb, disk_mb;
  bool no_internet;
  struct strv aliases, packages, env, setup;
  /* "file:" lines: file_src[i] (an absolute host path) is copied to
     file_dest[i] in the image. */
  struct strv file_src, file_dest;
  /* a layer's (sbx_layer_commit), or the spec's `start:` and `ready:`
     lines (start_buf, ready_buf) */
  const char *start_cmd, *ready_cmd;
  char start_buf[START_MAX], ready_buf[START_MAX];
};

static void
spec_init (struct spec *s)
{
  memset (s, 0, sizeof *s);
  strcpy (s->suite, DEFAULT_SUITE);
  strcpy (s->user, DEFAULT_USER);
  strcpy (s->workdir, DEFAULT_WORKDIR);
  s->cpu_count = DEFAULT_CPU;
  s->memory_mb = DEFAULT_MEMORY_MB;
  s->disk_mb = DEFAULT_DISK_MB;
}

static void
spec_free (struct spec *s)
{
  strv_free (&s->aliases);
  strv_free (&s->packages);
  strv_free (&s->env);
  strv_free (&s->setup);
  strv_free (&s->file_src);
  strv_free (&s->file_dest);
}

/* Debian package names plus what apt accepts after them (":arch",
   "=version", "/release").  No commas: the list is joined with them. */
static bool
valid_package (const char *p, size_t len)
{
  if (len == 0 || len > 255 || ! is_alnum (p[0]))
    return false;
  for (size_t i = 0; i < len; i++)
    if (! is_alnum (p[i]) && strchr ("+-.:=~_/", p[i]) == NULL)
      return false;
  return true;
}

static bool
valid_env (const char *kv)
{
  const char *eq = strchr (kv, '=');
  if (eq == NULL || eq == kv || ! (is_alnum (kv[0]) || kv[0] == '_') || (kv[0] >= '0' && kv[0] <= '9'))
    return false;
  for (const char *p = kv; p < eq; p++)
    if (! is_alnum (*p) && *p != '_')
      return false;
  return true;
}

/* A later "env: KEY=..." replaces an earlier one in place, so a spec can
   override what it included. */
static int
spec_set_env (struct spec *s, const char *kv)
{
  size_t klen = (size_t) (strchr (kv, '=') - kv) + 1;
  for (size_t i = 0; i < s->env.n; i++)
    if (strncmp (s->env.v[i], kv, klen) == 0)
      {
        char *dup = strdup (kv);
        if (dup == NULL)
          return -1;
        free (s->env.v[i]);
        s->env.v[i] = dup;
        return 0;
      }
  return strv_push (&s->env, kv);
}

static int
parse_u32 (const char *v, uint32_t *out)
{
  char *end;
  errno = 0;
  unsigned long long n = strtoull (v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n == 0 || n > UINT32_MAX)
    return -1;
  *out = (uint32_t) n;
  return 0;
}

/* Call FN on every space separated word of VALUE. */
static int
for_each_word (const char *value, int (*fn) (const char *w, size_t len, void *data), void *data)
{
  for (const char *p = value;;)
    {
      p += strspn (p, " \t");
      if (*p == '\0')
        return 0;
      size_t len = strcspn (p, " \t");
      if (fn (p, len, data) < 0)
        return -1;
      p += len;
    }
}

struct word_ctx {
  struct spec *s;
  const char *name;
  const char *path;
  int lineno;
  struct sbx_err *err;
};

static int
add_package (const char *w, size_t len, void *data)
{
  struct word_ctx *c = data;
  if (! valid_package (w, len))
    return sbx_failx (c->err, EINVAL, "%s:%d: invalid package name '%.*s'", c->path, c->lineno, (int) len, w);
  if (! strv_contains_n (&c->s->packages, w, len) && strv_push_n (&c->s->packages, w, len) < 0)
    return sbx_fail (c->err, ENOMEM, "%s:%d", c->path, c->lineno);
  return 0;
}

static int
add_alias (const char *w, size_t len, void *data)
{
  struct word_ctx *c = data;
  char alias[64];
  if (len >= sizeof alias)
    return sbx_failx (c->err, EINVAL, "%s:%d: alias too long: '%.*s'", c->path, c->lineno, (int) len, w);
  memcpy (alias, w, len);
  alias[len] = '\0';
  if (! valid_name (alias) || strcmp (alias, c->name) == 0)
    return sbx_failx (c->err, EINVAL, "%s:%d: invalid alias '%s'", c->path, c->lineno, alias);
  if (! strv_contains (&c->s->aliases, alias) && strv_push (&c->s->aliases, alias) < 0)
    return sbx_fail (c->err, ENOMEM, "%s:%d", c->path, c->lineno);
  return 0;
}

/* True if PATH has a component that is "." or "..". */
static bool
has_dot_component (const char *path)
{
  for (const char *p = path; *p;)
    {
      size_t len = strcspn (p, "/");
      if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
        return true;
      p += len;
      p += strspn (p, "/");
    }
  return false;
}

/* "file: SRC DEST": SRC is a regular file below the spec directory (named
   relative to it), DEST an absolute path in the image.  Both are checked
   now, so that a typo fails before anything is downloaded, and SRC is kept
   as an absolute path because mmdebstrap does not run in our directory. */
static int
add_file (const char *spec_dir, const char *value, struct spec *s, const char *path, int lineno,
          struct sbx_err *err)
{
  size_t slen = strcspn (value, " \t");
  const char *dest = value + slen;
  dest += strspn (dest, " \t");
  size_t dlen = strcspn (dest, " \t");
  if (slen == 0 || dlen == 0 || dest[dlen + strspn (dest + dlen, " \t")] != '\0')
    return sbx_failx (err, EINVAL, "%s:%d: expected file: SOURCE DESTINATION", path, lineno);

  cleanup_free char *src = strndup (value, slen);
  if (src == NULL)
    return sbx_fail (err, ENOMEM, "%s:%d", path, lineno);
  if (src[0] == '/' || has_dot_component (src))
    return sbx_failx (err, EINVAL, "%s:%d: file source must be a path below the spec directory: '%s'", path,
                      lineno, src);
  if (dest[0] != '/' || dest[dlen - 1] == '/' || has_dot_component (dest) || dlen >= PATH_MAX)
    return sbx_failx (err, EINVAL, "%s:%d: file destination must be an absolute file path: '%.*s'", path,
                      lineno, (int) dlen, dest);

  char joined[PATH_MAX];
  if (path_fmt (joined, sizeof joined, err, "%s/%s", spec_dir, src) < 0)
    return -1;
  cleanup_free char *dir = realpath (spec_dir, NULL);
  cleanup_free char *real = realpath (joined, NULL);
  if (dir == NULL || real == NULL)
    return sbx_fail (err, errno, "%s:%d: file source %s", path, lineno, joined);
  /* A symlink in the spec directory must not smuggle in a host file. */
  size_t n = strlen (dir);
  struct stat st;
  if (strncmp (real, dir, n) != 0 || real[n] != '/')
    return sbx_failx (err, EINVAL, "%s:%d: file source %s is outside the spec directory", path, lineno, joined);
  if (stat (real, &st) < 0)
    return sbx_fail (err, errno, "%s:%d: file source %s", path, lineno, joined);
  if (! S_ISREG (st.st_mode))
    return sbx_failx (err, EINVAL, "%s:%d: file source %s is not a regular file", path, lineno, joined);
  if (strv_push (&s->file_src, real) < 0 || strv_push_n (&s->file_dest, dest, dlen) < 0)
    return sbx_fail (err, ENOMEM, "%s:%d", path, lineno);
  return 0;
}

/* Parse SPEC_DIR/NAME.spec into S, on top of whatever S already holds.
   STACK holds the names being parsed, outermost first, to catch include
   cycles.  Aliases are taken from the outermost spec only: an alias names
   exactly one template. */
static int
parse_spec (const char *spec_dir, const char *name, struct spec *s, const char **stack, int depth,
            struct sbx_err *err)
{
  char path[PATH_MAX];
  if (path_fmt (path, sizeof path, err, "%s/%s.spec", spec_dir, name) < 0)
    return -1;

  cleanup_free char *text = NULL;
  if (sbx_read_file_at (AT_FDCWD, path, &text, SPEC_MAX, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failx (err, ENOENT, "no spec for template %s: %s does not exist", name, path);
      return -1;
    }
  stack[depth] = name;

  bool seen_other = false;
  int lineno = 0;
  char *next = NULL;
  for (char *line = text; line != NULL; line = next)
    {
      next = strchr (line, '\n');
      if (next != NULL)
        *next++ = '\0';
      lineno++;

      char *p = trim (line);
      if (*p == '\0' || *p == '#')
        continue;
      char *colon = strchr (p, ':');
      if (colon == NULL)
        return sbx_failx (err, EINVAL, "%s:%d: expected 'key: value'", path, lineno);
      *colon = '\0';
      const char *key = trim (p);
      const char *value = trim (colon + 1);
      struct word_ctx wc = { s, name, path, lineno, err };

      if (strcmp (key, "name") == 0)
        {
          if (strcmp (value, name) != 0)
            return sbx_failx (err, EINVAL, "%s:%d: name '%s' does not match the file name", path, lineno,
                              value);
          continue;
        }
      if (strcmp (key, "include") == 0)
        {
          /* Included settings come first so that ours override them; an
             include after our own lines would silently undo them. */
          if (seen_other)
            return sbx_failx (err, EINVAL, "%s:%d: include must come before other keys", path, lineno);
          if (! valid_name (value))
            return sbx_failx (err, EINVAL, "%s:%d: invalid include '%s'", path, lineno, value);
          for (int i = 0; i <= depth; i++)
            if (strcmp (stack[i], value) == 0)
              return sbx_failx (err, EINVAL, "%s:%d: include cycle through '%s'", path, lineno, value);
          if (depth + 1 >= INCLUDE_MAX_DEPTH)
            return sbx_failx (err, EINVAL, "%s:%d: includes nested too deeply", path, lineno);
          if (parse_spec (spec_dir, value, s, stack, depth + 1, err) < 0)
            return sbx_err_wrap (err, "%s:%d", path, lineno);
          continue;
        }

      seen_other = true;
      if (strcmp (key, "suite") == 0)
        {
          bool ok = value[0] != '\0' && copy_str (s->suite, sizeof s->suite, value) == 0;
          for (const char *q = value; ok && *q; q++)
            ok = is_alnum (*q) || *q == '-' || *q == '.';
          if (! ok)
            return sbx_failx (err, EINVAL, "%s:%d: invalid suite '%s'", path, lineno, value);
        }
      else if (strcmp (key, "aliases") == 0)
        {
          if (depth == 0 && for_each_word (value, add_alias, &wc) < 0)
            return -1;
        }
      else if (strcmp (key, "packages") == 0)
        {
          if (for_each_word (value, add_package, &wc) < 0)
            return -1;
        }
      else if (strcmp (key, "env") == 0)
        {
          if (! valid_env (value))
            return sbx_failx (err, EINVAL, "%s:%d: expected env: KEY=VALUE", path, lineno);
          if (spec_set_env (s, value) < 0)
            return sbx_fail (err, ENOMEM, "%s:%d", path, lineno);
        }
      else if (strcmp (key, "user") == 0)
        {
          bool ok = value[0] != '\0' && copy_str (s->user, sizeof s->user, value) == 0;
          for (const char *q = value; ok && *q; q++)
            ok = is_alnum (*q) || *q == '_' || *q == '-' || *q == '.';
          if (! ok)
            return sbx_failx (err, EINVAL, "%s:%d: invalid user '%s'", path, lineno, value);
        }
      else if (strcmp (key, "workdir") == 0)
        {
          if (value[0] != '/' || copy_str (s->workdir, sizeof s->workdir, value) < 0)
            return sbx_failx (err, EINVAL, "%s:%d: workdir must be an absolute path", path, lineno);
        }
      else if (strcmp (key, "cpu") == 0 || strcmp (key, "memory_mb") == 0 || strcmp (key, "disk_mb") == 0)
        {
          uint32_t *dst = key[0] == 'c' ? &s->cpu_count : key[0] == 'm' ? &s->memory_mb : &s->disk_mb;
          if (parse_u32 (value, dst) < 0)
            return sbx_failx (err, EINVAL, "%s:%d: %s must be a positive integer", path, lineno, key);
        }
      else if (strcmp (key, "internet") == 0)
        {
          if (strcmp (value, "yes") != 0 && strcmp (value, "no") != 0)
            return sbx_failx (err, EINVAL, "%s:%d: internet must be yes or no", path, lineno);
          s->no_internet = strcmp (value, "no") == 0;
        }
      else if (strcmp (key, "start") == 0 || strcmp (key, "ready") == 0)
        {
          bool start = key[0] == 's';
          char *buf = start ? s->start_buf : s->ready_buf;
          if (value[0] == '\0' || copy_str (buf, START_MAX, value) < 0)
            return sbx_failx (err, EINVAL, "%s:%d: %s must be a command of 1 to %d bytes", path, lineno, key,
                              START_MAX - 1);
          if (start)
            s->start_cmd = buf;
          else
            s->ready_cmd = buf;
        }
      else if (strcmp (key, "file") == 0)
        {
          if (add_file (spec_dir, value, s, path, lineno, err) < 0)
            return -1;
        }
      else if (strcmp (key, "setup") == 0)
        {
          if (value[0] == '\0')
            return sbx_failx (err, EINVAL, "%s:%d: empty setup command", path, lineno);
          if (strv_push (&s->setup, value) < 0)
            return sbx_fail (err, ENOMEM, "%s:%d", path, lineno);
        }
      else
        return sbx_failx (err, EINVAL, "%s:%d: unknown key '%s'", path, lineno, key);
    }
  return 0;
}

/* --------------------------------------------------------------- building */

/* 'S' with every ' written as '\'' : the one quoting rule of sh that has no
   exceptions. */
static char *
shell_quote (const char *s)
{
  size_t n = 3;
  for (const char *p = s; *p; p++)
    n += *p == '\'' ? 4 : 1;
  char *out = malloc (n), *w = out;
  if (out == NULL)
    return NULL;
  *w++ = '\'';
  for (const char *p = s; *p; p++)
    if (*p == '\'')
      {
        memcpy (w, "'\\''", 4);
        w += 4;
      }
    else
      *w++ = *p;
  *w++ = '\'';
  *w = '\0';
  return out;
}

/* The build host's CA bundle.  Setup lines that download over TLS trust
   what the host trusts (a site may have its own CA, or a TLS-inspecting
   proxy): the bundle is copied to HOST_CA_IN_ROOT for the setup lines, named
   by the usual variables, and removed after the last one. */
#define HOST_CA "/etc/ssl/certs/ca-certificates.crt"
#define HOST_CA_IN_ROOT "/tmp/.sbxd-build-ca.crt"
#define HOST_CA_ENV                                                            \
  "SSL_CERT_FILE=" HOST_CA_IN_ROOT " NODE_EXTRA_CA_CERTS=" HOST_CA_IN_ROOT       \
  " CURL_CA_BUNDLE=" HOST_CA_IN_ROOT " PIP_CERT=" HOST_CA_IN_ROOT                \
  " REQUESTS_CA_BUNDLE=" HOST_CA_IN_ROOT

/* The build host's resolver, for setup lines that download: it is put
   back before every line, because a line of an included spec may have
   emptied it (base does, so that no host's resolver ends up in an image),
   and emptied after the last one.  Sandboxes get theirs when they start. */
#define HOST_RESOLV "/etc/resolv.conf"

/* mmdebstrap runs each hook with sh -c HOOK exec TARGET, so the hook is
   necessarily shell text; LINE is embedded as one quoted word and never
   spliced in raw.  ENV: extra "K=V" words for env(1), or "". */
static int
push_chroot_hook (struct strv *argv, const char *env, const char *line, struct sbx_err *err)
{
  cleanup_free char *q = shell_quote (line);
  cleanup_free char *hook = NULL;
  if (q == NULL
      || asprintf (&hook, "--customize-hook=chroot \"$1\" /usr/bin/env -i " SETUP_ENV " %s /bin/sh -ec %s", env, q)
             < 0
      || strv_push (argv, hook) < 0)
    return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
  return 0;
}

static int
build_argv (const struct spec *s, const char *rootfs, struct strv *argv, struct sbx_err *err)
{
  if (strv_push (argv, "mmdebstrap") < 0 || strv_push (argv, "--mode=root") < 0
      || strv_push (argv, "--variant=minbase") < 0 || strv_push (argv, "--format=directory") < 0)
    return sbx_fail (err, ENOMEM, "mmdebstrap arguments");

  if (s->packages.n > 0)
    {
      size_t len = strlen ("--include=");
      for (size_t i = 0; i < s->packages.n; i++)
        len += strlen (s->packages.v[i]) + 1;
      cleanup_free char *inc = malloc (len + 1);
      if (inc == NULL)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
      char *w = stpcpy (inc, "--include=");
      for (size_t i = 0; i < s->packages.n; i++)
        {
          if (i > 0)
            *w++ = ',';
          w = stpcpy (w, s->packages.v[i]);
        }
      if (strv_push (argv, inc) < 0)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
    }

  /* Files first, so that setup lines can use them.  "upload" is one of
     mmdebstrap's own hooks: it resolves the destination inside the new
     root (a symlink in the image cannot send it to the host's files).  It
     needs the parent directory, and leaves the mode to the umask, hence
     the two setup-style steps around it. */
  for (size_t i = 0; i < s->file_src.n; i++)
    {
      const char *dest = s->file_dest.v[i];
      size_t plen = (size_t) (strrchr (dest, '/') - dest);
      cleanup_free char *parent = strndup (dest, plen > 0 ? plen : 1);
      cleanup_free char *mk = NULL, *mode = NULL, *upload = NULL, *qs = NULL, *qd = NULL, *qp = NULL;
      if (parent == NULL || (qs = shell_quote (s->file_src.v[i])) == NULL || (qd = shell_quote (dest)) == NULL
          || (qp = shell_quote (parent)) == NULL)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
      if (asprintf (&mk, "mkdir -p -- %s", qp) < 0 || asprintf (&mode, "chmod 0644 -- %s", qd) < 0
          || asprintf (&upload, "--customize-hook=upload %s %s", qs, qd) < 0)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
      if (push_chroot_hook (argv, "", mk, err) < 0 || strv_push (argv, upload) < 0
          || push_chroot_hook (argv, "", mode, err) < 0)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
    }

  const char *ca_env = "";
  bool host_ca = s->setup.n > 0 && access (HOST_CA, R_OK) == 0;
  bool host_resolv = s->setup.n > 0 && access (HOST_RESOLV, R_OK) == 0;
  if (host_ca)
    {
      ca_env = HOST_CA_ENV;
      if (strv_push (argv, "--customize-hook=upload " HOST_CA " " HOST_CA_IN_ROOT) < 0)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
    }
  for (size_t i = 0; i < s->setup.n; i++)
    {
      if (host_resolv && strv_push (argv, "--customize-hook=upload " HOST_RESOLV " " HOST_RESOLV) < 0)
        return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
      if (push_chroot_hook (argv, ca_env, s->setup.v[i], err) < 0)
        return -1;
    }
  if (host_ca && push_chroot_hook (argv, "", "rm -f " HOST_CA_IN_ROOT, err) < 0)
    return -1;
  if (host_resolv && push_chroot_hook (argv, "", ": > " HOST_RESOLV, err) < 0)
    return -1;

  if (strv_push (argv, s->suite) < 0 || strv_push (argv, rootfs) < 0)
    return sbx_fail (err, ENOMEM, "mmdebstrap arguments");
  return 0;
}

/* Run ARGV with stdout and stderr copied to PROGRESS (through a pipe, so
   any FILE works, memory streams included). */
static int
run_streaming (char **argv, FILE *progress, struct sbx_err *err)
{
  int pfd[2];
  if (pipe2 (pfd, O_CLOEXEC) < 0)
    return sbx_fail (err, errno, "pipe");
  cleanup_close int rd = pfd[0];
  cleanup_close int wr = pfd[1];
  cleanup_close int devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0)
    return sbx_fail (err, errno, "open /dev/null");
  if (progress != NULL)
    fflush (progress);

  pid_t pid = fork ();
  if (pid < 0)
    return sbx_fail (err, errno, "fork");
  if (pid == 0)
    {
      /* Only async-signal-safe calls from here on: the daemon may be
         multi-threaded.  Undo the daemon's signal setup, which would
         otherwise survive exec (blocked and ignored signals do). */
      sigset_t none;
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      struct sigaction dfl;
      memset (&dfl, 0, sizeof dfl);
      dfl.sa_handler = SIG_DFL;
      for (int sig = 1; sig < NSIG; sig++)
        sigaction (sig, &dfl, NULL);
      if (dup2 (devnull, 0) < 0 || dup2 (wr, 1) < 0 || dup2 (wr, 2) < 0)
        _exit (126);
      execvp (argv[0], argv);
      _exit (127);
    }

  close (steal_fd (&wr));
  char buf[4096];
  for (;;)
    {
      ssize_t n = read (rd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      /* Keep draining even if PROGRESS fails (a client went away): a full
         pipe would stall the build. */
      if (progress != NULL)
        {
          fwrite (buf, 1, (size_t) n, progress);
          fflush (progress);
        }
    }

  int status;
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return sbx_fail (err, errno, "wait for %s", argv[0]);
  if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    return 0;
  if (WIFEXITED (status) && WEXITSTATUS (status) == 127)
    return sbx_failx (err, ENOENT, "cannot run %s (is it installed?)", argv[0]);
  if (WIFEXITED (status))
    return sbx_failx (err, EIO, "%s failed with exit status %d", argv[0], WEXITSTATUS (status));
  return sbx_failx (err, EIO, "%s killed by signal %d", argv[0], WTERMSIG (status));
}

static json_t *
json_strv (const struct strv *s)
{
  json_t *a = json_array ();
  for (size_t i = 0; a != NULL && i < s->n; i++)
    /* json_string is NULL for invalid UTF-8; append_new then fails. */
    if (json_array_append_new (a, json_string (s->v[i])) < 0)
      {
        json_decref (a);
        return NULL;
      }
  return a;
}

static int
write_template_json (const char *dir, const char *name, const struct spec *s, struct sbx_err *err)
{
  char built_at[32];
  time_t now = time (NULL);
  struct tm tm;
  gmtime_r (&now, &tm);
  strftime (built_at, sizeof built_at, "%Y-%m-%dT%H:%M:%SZ", &tm);

  json_t *root = json_object ();
  bool ok = root != NULL;
  ok = ok && json_object_set_new (root, "name", json_string (name)) == 0;
  ok = ok && json_object_set_new (root, "aliases", json_strv (&s->aliases)) == 0;
  ok = ok && json_object_set_new (root, "suite", json_string (s->suite)) == 0;
  ok = ok && json_object_set_new (root, "env", json_strv (&s->env)) == 0;
  ok = ok && json_object_set_new (root, "user", json_string (s->user)) == 0;
  ok = ok && json_object_set_new (root, "workdir", json_string (s->workdir)) == 0;
  ok = ok && json_object_set_new (root, "cpu_count", json_integer (s->cpu_count)) == 0;
  ok = ok && json_object_set_new (root, "memory_mb", json_integer (s->memory_mb)) == 0;
  ok = ok && json_object_set_new (root, "disk_mb", json_integer (s->disk_mb)) == 0;
  ok = ok && json_object_set_new (root, "internet", json_boolean (!s->no_internet)) == 0;
  ok = ok && json_object_set_new (root, "built_at", json_string (built_at)) == 0;
  ok = ok && json_object_set_new (root, "packages", json_strv (&s->packages)) == 0;
  if (s->start_cmd)
    ok = ok && json_object_set_new (root, "start_cmd", json_string (s->start_cmd)) == 0;
  if (s->ready_cmd)
    ok = ok && json_object_set_new (root, "ready_cmd", json_string (s->ready_cmd)) == 0;
  cleanup_free char *text = ok ? json_dumps (root, JSON_INDENT (2)) : NULL;
  json_decref (root);
  if (text == NULL)
    return sbx_failx (err, EINVAL, "template %s: cannot encode template.json (invalid UTF-8 in spec?)", name);

  char path[PATH_MAX];
  if (path_fmt (path, sizeof path, err, "%s/template.json", dir) < 0)
    return -1;
  cleanup_close int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return sbx_fail (err, errno, "create %s", path);
  /* fsync: the rename that publishes the template must not be able to
     outlive, across a crash, the file that describes it. */
  if (fchmod (fd, 0644) < 0 || sbx_write_full (fd, text, strlen (text)) < 0 || sbx_write_full (fd, "\n", 1) < 0
      || fsync (fd) < 0)
    return sbx_fail (err, errno, "write %s", path);
  if (close (steal_fd (&fd)) < 0)
    return sbx_fail (err, errno, "write %s", path);
  return 0;
}

/* Leftovers of builds of NAME that died (we hold the lock, so nobody else
   is building NAME): ".build-NAME-PID", ".old-NAME-PID", ".alias-NAME-PID".
   The suffix must be all digits, so "a" never matches "a-b"'s entries. */
static int
remove_stale (const char *tdir, const char *name, FILE *progress, struct sbx_err *err)
{
  static const char *const prefixes[] = { ".build-", ".old-", ".alias-" };
  DIR *d = opendir (tdir);
  if (d == NULL)
    return sbx_fail (err, errno, "open %s", tdir);
  size_t nlen = strlen (name);
  struct strv stale = { 0 };
  int ret = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
      {
        size_t plen = strlen (prefixes[i]);
        const char *n = de->d_name;
        if (strncmp (n, prefixes[i], plen) != 0 || strncmp (n + plen, name, nlen) != 0 || n[plen + nlen] != '-')
          continue;
        const char *digits = n + plen + nlen + 1;
        if (*digits == '\0' || strspn (digits, "0123456789") != strlen (digits))
          continue;
        if (strv_push (&stale, n) < 0)
          ret = sbx_fail (err, ENOMEM, "scan %s", tdir);
      }
  closedir (d);

  for (size_t i = 0; ret == 0 && i < stale.n; i++)
    {
      char path[PATH_MAX];
      if (path_fmt (path, sizeof path, err, "%s/%s", tdir, stale.v[i]) < 0)
        {
          ret = -1;
          break;
        }
      say (progress, "template %s: removing leftover %s", name, stale.v[i]);
      ret = safe_remove (path, err);
    }
  strv_free (&stale);
  return ret;
}

/* A replaced or removed tree is not deleted at once: sandboxes may still
   run on it (it is their overlay's lower layer).  It moves to
   TDIR/.retired/, and every sandbox holds a shared flock on its tree's
   ".inuse" file for as long as it lives; a retired tree whose lock can be
   taken exclusively is used by nobody and is deleted. */
static int
retire_tree (const char *tdir, const char *path, const char *name, struct sbx_err *err)
{
  char dir[PATH_MAX], dest[PATH_MAX];
  if (path_fmt (dir, sizeof dir, err, "%s/.retired", tdir) < 0
      || path_fmt (dest, sizeof dest, err, "%s/%s-%lld-%d", dir, name, (long long) time (NULL), (int) getpid ()) < 0)
    return -1;
  if (mkdir (dir, 0700) < 0 && errno != EEXIST)
    return sbx_fail (err, errno, "mkdir %s", dir);
  if (rename (path, dest) < 0)
    return sbx_fail (err, errno, "rename %s to %s", path, dest);
  return sbx_template_gc (tdir, err);
}

int
sbx_template_gc (const char *tdir, struct sbx_err *err)
{
  char dir[PATH_MAX];
  if (path_fmt (dir, sizeof dir, err, "%s/.retired", tdir) < 0)
    return -1;
  DIR *d = opendir (dir);
  if (d == NULL)
    return errno == ENOENT ? 0 : sbx_fail (err, errno, "open %s", dir);
  int ret = 0;
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      if (e->d_name[0] == '.')
        continue;
      char tree[PATH_MAX], lock[PATH_MAX];
      if (path_fmt (tree, sizeof tree, err, "%s/%s", dir, e->d_name) < 0
          || path_fmt (lock, sizeof lock, err, "%s/.inuse", tree) < 0)
        continue;
      cleanup_close int fd = open (lock, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0 || flock (fd, LOCK_EX | LOCK_NB) < 0)
        continue; /* a sandbox still runs on it */
      if (safe_remove (tree, err) < 0)
        ret = -1;
    }
  closedir (d);
  return ret;
}

/* Publish BUILDDIR as TDIR/NAME.  With RENAME_EXCHANGE the switch is a
   single atomic step and BUILDDIR is left holding the previous tree. */
static int
install_tree (const char *tdir, const char *name, const char *builddir, struct sbx_err *err)
{
  char final[PATH_MAX], old[PATH_MAX];
  if (path_fmt (final, sizeof final, err, "%s/%s", tdir, name) < 0
      || path_fmt (old, sizeof old, err, "%s/.old-%s-%d", tdir, name, (int) getpid ()) < 0)
    return -1;

  if (renameat2 (AT_FDCWD, builddir, AT_FDCWD, final, RENAME_EXCHANGE) == 0)
    return retire_tree (tdir, builddir, name, err);
  if (errno == ENOENT)
    {
      if (rename (builddir, final) < 0)
        return sbx_fail (err, errno, "rename %s to %s", builddir, final);
      return 0;
    }
  if (errno != EINVAL && errno != ENOSYS)
    return sbx_fail (err, errno, "exchange %s and %s", builddir, final);

  /* No RENAME_EXCHANGE on this filesystem: move the old tree aside first,
     leaving a short window in which NAME does not exist. */
  if (rename (final, old) < 0)
    return sbx_fail (err, errno, "rename %s to %s", final, old);
  if (rename (builddir, final) < 0)
    {
      int saved = errno;
      rename (old, final);
      return sbx_fail (err, saved, "rename %s to %s", builddir, final);
    }
  return retire_tree (tdir, old, name, err);
}

/* Read the target of symlink NAME in DFD into BUF; -1 if not a symlink. */
static int
read_alias (int dfd, const char *name, char *buf, size_t n)
{
  ssize_t len = readlinkat (dfd, name, buf, n - 1);
  if (len < 0 || (size_t) len >= n - 1)
    return -1;
  buf[len] = '\0';
  return 0;
}

/* Point every alias of the spec at NAME and drop symlinks that point at
   NAME but are no longer listed. */
static int
install_aliases (int dfd, const char *name, const struct spec *s, FILE *progress, struct sbx_err *err)
{
  char tmp[96];
  snprintf (tmp, sizeof tmp, ".alias-%s-%d", name, (int) getpid ());
  for (size_t i = 0; i < s->aliases.n; i++)
    {
      const char *alias = s->aliases.v[i];
      struct stat st;
      char target[256];
      if (fstatat (dfd, alias, &st, AT_SYMLINK_NOFOLLOW) == 0)
        {
          if (! S_ISLNK (st.st_mode))
            return sbx_failx (err, EEXIST, "alias %s of template %s clashes with a template of that name",
                              alias, name);
          if (read_alias (dfd, alias, target, sizeof target) == 0 && strcmp (target, name) == 0)
            continue;
          say (progress, "template %s: alias %s taken over from %s", name, alias, target);
        }
      /* Create then rename: the alias never disappears, even for a moment. */
      unlinkat (dfd, tmp, 0);
      if (symlinkat (name, dfd, tmp) < 0)
        return sbx_fail (err, errno, "create alias %s", alias);
      if (renameat (dfd, tmp, dfd, alias) < 0)
        {
          int saved = errno;
          unlinkat (dfd, tmp, 0);
          return sbx_fail (err, saved, "create alias %s", alias);
        }
    }

  DIR *d = fdopendir (dup (dfd));
  if (d == NULL)
    return sbx_fail (err, errno, "open template directory");
  rewinddir (d);
  struct strv gone = { 0 };
  struct dirent *de;
  int ret = 0;
  while ((de = readdir (d)) != NULL)
    {
      char target[256];
      if (de->d_name[0] == '.' || strv_contains (&s->aliases, de->d_name)
          || read_alias (dfd, de->d_name, target, sizeof target) < 0 || strcmp (target, name) != 0)
        continue;
      if (strv_push (&gone, de->d_name) < 0)
        ret = sbx_fail (err, ENOMEM, "scan template directory");
    }
  closedir (d);
  for (size_t i = 0; ret == 0 && i < gone.n; i++)
    {
      say (progress, "template %s: removing old alias %s", name, gone.v[i]);
      if (unlinkat (dfd, gone.v[i], 0) < 0 && errno != ENOENT)
        ret = sbx_fail (err, errno, "remove alias %s", gone.v[i]);
    }
  strv_free (&gone);
  return ret;
}

/* Was NAME (re)built after START_MS?  Used when we waited for another
   process that was building the very same template. */
static bool
built_since (int dfd, const char *name, int64_t start_ms)
{
  char path[128];
  struct stat st;
  snprintf (path, sizeof path, "%s/template.json", name);
  if (fstatat (dfd, path, &st, 0) < 0)
    return false;
  int64_t mtime_ms = (int64_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
  return mtime_ms >= start_ms;
}

/* The part of a build that owns BUILDDIR; the caller removes BUILDDIR if
   this fails. */
static int
build_into (const char *tdir, int dfd, const char *name, const struct spec *s, const char *builddir,
            FILE *progress, struct sbx_err *err)
{
  uint64_t t0 = sbx_now_ns ();
  char rootfs[PATH_MAX];
  if (path_fmt (rootfs, sizeof rootfs, err, "%s/rootfs", builddir) < 0)
    return -1;

  struct strv argv = { 0 };
  if (build_argv (s, rootfs, &argv, err) < 0)
    {
      strv_free (&argv);
      return -1;
    }
  say (progress, "template %s: building with %zu package%s on Debian %s, %zu setup step%s...", name,
       s->packages.n, s->packages.n == 1 ? "" : "s", s->suite, s->setup.n, s->setup.n == 1 ? "" : "s");
  int r = run_streaming (argv.v, progress, err);
  strv_free (&argv);
  if (r < 0)
    return sbx_err_wrap (err, "template %s", name);

  /* The rootfs becomes the / of every sandbox: it must be root's and
     traversable by everyone, whatever umask the daemon has. */
  if (chown (rootfs, 0, 0) < 0 || chmod (rootfs, 0755) < 0)
    return sbx_fail (err, errno, "set owner and mode of %s", rootfs);
  if (write_template_json (builddir, name, s, err) < 0)
    return -1;
  if (install_tree (tdir, name, builddir, err) < 0)
    return -1;
  if (install_aliases (dfd, name, s, progress, err) < 0)
    return -1;

  char final[PATH_MAX];
  if (path_fmt (final, sizeof final, err, "%s/%s", tdir, name) < 0)
    return -1;
  uint64_t ms = (sbx_now_ns () - t0) / 1000000;
  say (progress, "template %s: done in %llu.%llu s, %llu MB", name, (unsigned long long) (ms / 1000),
       (unsigned long long) (ms % 1000 / 100), to_mb (disk_usage (final)));
  return 0;
}

static int build_spec (const char *tmpl_dir, const char *name, const struct spec *s, int64_t start_ms,
                       FILE *progress, struct sbx_err *err);

int
sbx_template_build (const char *spec_dir, const char *tmpl_dir, const char *name, FILE *progress,
                    struct sbx_err *err)
{
  struct sbx_err dummy;
  if (err == NULL)
    err = &dummy;
  int64_t start_ms = sbx_wall_ms ();
  if (check_name (name, err) < 0)
    return -1;

  /* Parse everything before touching the template directory: a typo in a
     spec must not cost a lock, a directory or a download. */
  struct spec s;
  spec_init (&s);
  const char *stack[INCLUDE_MAX_DEPTH];
  if (parse_spec (spec_dir, name, &s, stack, 0, err) < 0)
    {
      spec_free (&s);
      return -1;
    }

  int ret = build_spec (tmpl_dir, name, &s, start_ms, progress, err);
  spec_free (&s);
  return ret;
}

/* Build template NAME from spec S (parsed or made up) under its lock. */
static int
build_spec (const char *tmpl_dir, const char *name, const struct spec *s, int64_t start_ms, FILE *progress,
            struct sbx_err *err)
{
  int ret = -1;
  cleanup_free char *tdir = NULL;
  cleanup_close int dfd = -1;
  cleanup_close int lockfd = -1;
  char builddir[PATH_MAX];
  bool waited = false;

  if (sbx_mkdir_p (tmpl_dir, 0755, err) < 0 || canonical_dir (tmpl_dir, &tdir, err) < 0)
    goto out;
  dfd = open (tdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    {
      sbx_fail (err, errno, "open %s", tdir);
      goto out;
    }
  lockfd = take_lock (dfd, name, true, &waited, progress, err);
  if (lockfd < 0)
    goto out;
  if (waited && built_since (dfd, name, start_ms))
    {
      /* Two instances asked for the same template at once; the other one
         just finished it from the same kind of spec. */
      say (progress, "template %s: built meanwhile by another process", name);
      ret = 0;
      goto out;
    }
  if (remove_stale (tdir, name, progress, err) < 0)
    goto out;

  if (path_fmt (builddir, sizeof builddir, err, "%s/.build-%s-%d", tdir, name, (int) getpid ()) < 0)
    goto out;
  if (mkdir (builddir, 0755) < 0 || chmod (builddir, 0755) < 0)
    {
      sbx_fail (err, errno, "mkdir %s", builddir);
      goto out;
    }
  ret = build_into (tdir, dfd, name, s, builddir, progress, err);
  if (ret < 0 && access (builddir, F_OK) == 0)
    {
      struct sbx_err e2;
      if (safe_remove (builddir, &e2) < 0)
        say (progress, "template %s: could not clean up: %s", name, e2.msg);
    }

out:
  return ret;
}

/* ---------------------------------------------------------------- reading */

void
sbx_template_dir (char *out, size_t n)
{
  const char *env = getenv ("SBXD_TEMPLATE_DIR");
  snprintf (out, n, "%s", env != NULL && env[0] != '\0' ? env : DEFAULT_TEMPLATE_DIR);
}

/* Map NAME (a template or an alias) to the template's directory name in
   TARGET.  An alias is followed only when it is a symlink to a plain
   name, so no alias can lead out of the template directory. */
static int
resolve (int dfd, const char *name, char *target, size_t n, struct sbx_err *err)
{
  struct stat st;
  if (fstatat (dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return sbx_fail (err, errno, "stat template %s", name);
    }
  if (S_ISLNK (st.st_mode))
    {
      char link[256];
      if (read_alias (dfd, name, link, sizeof link) < 0 || ! valid_name (link))
        return sbx_failx (err, EINVAL, "template alias %s does not point to a template name", name);
      if (fstatat (dfd, link, &st, AT_SYMLINK_NOFOLLOW) < 0 || ! S_ISDIR (st.st_mode))
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return copy_str (target, n, link) < 0 ? sbx_failx (err, EINVAL, "invalid template name") : 0;
    }
  if (! S_ISDIR (st.st_mode))
    return sbx_failx (err, ENOENT, "unknown template: %s", name);
  return copy_str (target, n, name) < 0 ? sbx_failx (err, EINVAL, "invalid template name") : 0;
}

static int
json_u32 (json_t *root, const char *key, uint32_t def, uint32_t *out)
{
  json_t *v = json_object_get (root, key);
  if (v == NULL)
    {
      *out = def;
      return 0;
    }
  if (! json_is_integer (v) || json_integer_value (v) <= 0 || json_integer_value (v) > UINT32_MAX)
    return -1;
  *out = (uint32_t) json_integer_value (v);
  return 0;
}

static int
json_str (json_t *root, const char *key, const char *def, char *out, size_t n)
{
  json_t *v = json_object_get (root, key);
  if (v == NULL)
    return copy_str (out, n, def);
  if (! json_is_string (v))
    return -1;
  return copy_str (out, n, json_string_value (v));
}

static int
load_json (int dfd, const char *name, const char *target, struct sbx_template *t,
           struct sbx_err *err)
{
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/template.json", target);
  cleanup_free char *text = NULL;
  if (sbx_read_file_at (dfd, path, &text, JSON_MAX, err) < 0)
    {
      /* A directory without template.json is a leftover, not a template. */
      if (err->code == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return sbx_err_wrap (err, "template %s", name);
    }

  json_error_t jerr;
  json_t *root = json_loads (text, 0, &jerr);
  if (root == NULL)
    return sbx_failx (err, EINVAL, "template %s: template.json:%d: %s", target, jerr.line, jerr.text);

  int ret = -1;
  const char *bad = NULL;
  json_t *env = json_object_get (root, "env");
  if (! json_is_object (root))
    bad = "not an object";
  else if (json_str (root, "user", DEFAULT_USER, t->user, sizeof t->user) < 0)
    bad = "user";
  else if (json_str (root, "workdir", DEFAULT_WORKDIR, t->workdir, sizeof t->workdir) < 0)
    bad = "workdir";
  else if (json_u32 (root, "cpu_count", DEFAULT_CPU, &t->cpu_count) < 0)
    bad = "cpu_count";
  else if (json_u32 (root, "memory_mb", DEFAULT_MEMORY_MB, &t->memory_mb) < 0)
    bad = "memory_mb";
  else if (json_u32 (root, "disk_mb", DEFAULT_DISK_MB, &t->disk_mb) < 0)
    bad = "disk_mb";
  else if (env != NULL && ! json_is_array (env))
    bad = "env";
  else if (json_object_get (root, "internet") && ! json_is_boolean (json_object_get (root, "internet")))
    bad = "internet";
  else if (json_object_get (root, "start_cmd") && ! json_is_string (json_object_get (root, "start_cmd")))
    bad = "start_cmd";
  else if (json_object_get (root, "ready_cmd") && ! json_is_string (json_object_get (root, "ready_cmd")))
    bad = "ready_cmd";
  if (bad != NULL)
    {
      sbx_failx (err, EINVAL, "template %s: template.json: bad %s", target, bad);
      goto out;
    }

  /* templates built before the key existed had internet access */
  t->internet = ! json_is_false (json_object_get (root, "internet"));
  const char *start = json_string_value (json_object_get (root, "start_cmd"));
  const char *ready = json_string_value (json_object_get (root, "ready_cmd"));
  if ((start && (t->start_cmd = strdup (start)) == NULL) || (ready && (t->ready_cmd = strdup (ready)) == NULL))
    {
      sbx_fail (err, ENOMEM, "template %s", target);
      goto out;
    }
  size_t n = env ? json_array_size (env) : 0;
  t->env = calloc (n + 1, sizeof *t->env);
  if (t->env == NULL)
    {
      sbx_fail (err, ENOMEM, "template %s", target);
      goto out;
    }
  for (size_t i = 0; i < n; i++)
    {
      const char *kv = json_string_value (json_array_get (env, i));
      if (kv == NULL || ! valid_env (kv))
        {
          sbx_failx (err, EINVAL, "template %s: template.json: bad env entry %zu", target, i);
          goto out;
        }
      t->env[i] = strdup (kv);
      if (t->env[i] == NULL)
        {
          sbx_fail (err, ENOMEM, "template %s", target);
          goto out;
        }
    }
  ret = 0;

out:
  json_decref (root);
  return ret;
}

/* Whether a build of NAME is running: its build directory
   (.build-NAME-PID) exists and PID is a live sbxd.  Lets a create that
   names a template not built yet say so instead of "unknown".  Only the
   template's own name is recognised, not its aliases (they appear when
   the build is done). */
static bool
being_built (int dfd, const char *name)
{
  int fd = openat (dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  if (d == NULL)
    {
      if (fd >= 0)
        close (fd);
      return false;
    }
  char prefix[96];
  int plen = snprintf (prefix, sizeof prefix, ".build-%s-", name);
  bool found = false;
  struct dirent *de;
  while (! found && plen > 0 && (size_t) plen < sizeof prefix && (de = readdir (d)) != NULL)
    {
      char *end;
      if (strncmp (de->d_name, prefix, (size_t) plen) != 0)
        continue;
      long pid = strtol (de->d_name + plen, &end, 10);
      if (*end != '\0' || pid <= 0)
        continue;
      /* "PID (sbxd) S ...": an sbxd, and not a zombie (a killed build's
         may linger until its new parent reaps it) */
      char path[64], stat[64] = "";
      snprintf (path, sizeof path, "/proc/%ld/stat", pid);
      cleanup_close int sfd = open (path, O_RDONLY | O_CLOEXEC);
      ssize_t n = sfd >= 0 ? read (sfd, stat, sizeof stat - 1) : -1;
      const char *comm = n > 0 ? strchr (stat, '(') : NULL;
      found = comm && strncmp (comm, "(sbxd) ", 7) == 0 && comm[7] != 'Z' && comm[7] != 'X';
    }
  closedir (d);
  return found;
}

int
sbx_template_load (const char *tmpl_dir, const char *name, struct sbx_template *t, struct sbx_err *err)
{
  struct sbx_err dummy;
  if (err == NULL)
    err = &dummy;
  memset (t, 0, sizeof *t);
  if (check_name (name, err) < 0)
    return -1;

  cleanup_close int dfd = open (tmpl_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    {
      if (errno == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return sbx_fail (err, errno, "open %s", tmpl_dir);
    }
  char target[sizeof t->name];
  if (resolve (dfd, name, target, sizeof target, err) < 0)
    {
      if (err->code == ENOENT && being_built (dfd, name))
        return sbx_failk (err, SBX_E_UNAVAILABLE, "template %s is still being built; try again when it is done",
                          name);
      return -1;
    }

  cleanup_free char *tdir = NULL;
  if (canonical_dir (tmpl_dir, &tdir, err) < 0)
    return -1;
  if (path_fmt (t->rootfs, sizeof t->rootfs, err, "%s/%s/rootfs", tdir, target) < 0)
    return -1;
  char rel[sizeof t->name + 8];
  snprintf (rel, sizeof rel, "%s/rootfs", target);
  struct stat st;
  if (fstatat (dfd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return sbx_fail (err, errno, "template %s: rootfs", target);
  if (! S_ISDIR (st.st_mode))
    return sbx_failx (err, ENOTDIR, "template %s: rootfs is not a directory", target);
  t->rootfs_dev = st.st_dev;
  t->rootfs_ino = st.st_ino;

  strcpy (t->name, target);
  if (load_json (dfd, name, target, t, err) < 0)
    {
      sbx_template_free (t);
      return -1;
    }
  return 0;
}

void
sbx_template_free (struct sbx_template *t)
{
  if (t->env != NULL)
    for (char **e = t->env; *e; e++)
      free (*e);
  free (t->env);
  t->env = NULL;
  free (t->start_cmd);
  free (t->ready_cmd);
  t->start_cmd = t->ready_cmd = NULL;
}

/* Hidden: our own entries, and the layers of builds (the build API's
   templates are listed by its records). */
static int
not_hidden (const struct dirent *de)
{
  return de->d_name[0] != '.' && strncmp (de->d_name, SBX_LAYER_PREFIX, strlen (SBX_LAYER_PREFIX)) != 0;
}

int
sbx_template_list (const char *tmpl_dir, FILE *out, struct sbx_err *err)
{
  struct sbx_err dummy;
  if (err == NULL)
    err = &dummy;
  cleanup_close int dfd = open (tmpl_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    {
      /* Nothing built yet is an empty list, not an error. */
      if (errno == ENOENT)
        return 0;
      return sbx_fail (err, errno, "open %s", tmpl_dir);
    }

  struct dirent **ents = NULL;
  int n = scandir (tmpl_dir, &ents, not_hidden, alphasort);
  if (n < 0)
    return sbx_fail (err, errno, "scan %s", tmpl_dir);

  /* Aliases first, so each template's line can name its own. */
  struct strv links = { 0 }, targets = { 0 };
  int ret = 0;
  for (int i = 0; ret == 0 && i < n; i++)
    {
      char target[256];
      if (read_alias (dfd, ents[i]->d_name, target, sizeof target) == 0 && valid_name (target)
          && (strv_push (&links, ents[i]->d_name) < 0 || strv_push (&targets, target) < 0))
        ret = sbx_fail (err, ENOMEM, "scan %s", tmpl_dir);
    }

  for (int i = 0; ret == 0 && i < n; i++)
    {
      const char *name = ents[i]->d_name;
      char path[PATH_MAX];
      struct stat st;
      snprintf (path, sizeof path, "%s/template.json", name);
      if (! valid_name (name) || fstatat (dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || ! S_ISDIR (st.st_mode)
          || fstatat (dfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        continue;

      if (path_fmt (path, sizeof path, err, "%s/%s", tmpl_dir, name) < 0)
        {
          ret = -1;
          break;
        }
      fprintf (out, "%s\t%llu\t", name, to_mb (disk_usage (path)));
      bool first = true;
      for (size_t j = 0; j < links.n; j++)
        if (strcmp (targets.v[j], name) == 0)
          {
            fprintf (out, "%s%s", first ? "" : ",", links.v[j]);
            first = false;
          }
      fputc ('\n', out);
    }
  if (ret == 0 && fflush (out) != 0)
    ret = sbx_fail (err, errno, "write template list");

  strv_free (&links);
  strv_free (&targets);
  for (int i = 0; i < n; i++)
    free (ents[i]);
  free (ents);
  return ret;
}

int
sbx_template_remove (const char *tmpl_dir, const char *name, struct sbx_err *err)
{
  struct sbx_err dummy;
  if (err == NULL)
    err = &dummy;
  if (check_name (name, err) < 0)
    return -1;
  cleanup_free char *tdir = NULL;
  if (canonical_dir (tmpl_dir, &tdir, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return -1;
    }
  cleanup_close int dfd = open (tdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return sbx_fail (err, errno, "open %s", tdir);

  char target[64];
  if (resolve (dfd, name, target, sizeof target, err) < 0)
    return -1;
  /* Removing under a running build would race with its final rename;
     refuse instead of waiting for a template we are about to delete. */
  cleanup_close int lockfd = take_lock (dfd, target, false, NULL, NULL, err);
  if (lockfd < 0)
    return -1;

  /* Rename first: from this instant loads fail cleanly with ENOENT rather
     than find a half-deleted tree. */
  char from[PATH_MAX], old[PATH_MAX];
  if (path_fmt (from, sizeof from, err, "%s/%s", tdir, target) < 0
      || path_fmt (old, sizeof old, err, "%s/.old-%s-%d", tdir, target, (int) getpid ()) < 0)
    return -1;
  if (rename (from, old) < 0)
    {
      if (errno == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return sbx_fail (err, errno, "rename %s to %s", from, old);
    }

  struct spec none;
  spec_init (&none);
  int ret = install_aliases (dfd, target, &none, NULL, err);
  spec_free (&none);
  if (retire_tree (tdir, old, target, ret < 0 ? &dummy : err) < 0)
    ret = -1;
  return ret;
}

/* ------------------------------------------------------------------ layers */

#define LAYER_DEPTH_MAX 256

bool
sbx_template_exists (const char *tmpl_dir, const char *name)
{
  char path[PATH_MAX];
  struct stat st;
  if (! valid_name (name))
    return false;
  int n = snprintf (path, sizeof path, "%s/%s/template.json", tmpl_dir, name);
  return n > 0 && (size_t) n < sizeof path && stat (path, &st) == 0 && S_ISREG (st.st_mode);
}

int
sbx_template_identity (const char *tmpl_dir, const char *name, char *out, size_t n, struct sbx_err *err)
{
  char path[PATH_MAX];
  struct stat st;
  if (check_name (name, err) < 0 || path_fmt (path, sizeof path, err, "%s/%s/template.json", tmpl_dir, name) < 0)
    return -1;
  if (stat (path, &st) < 0)
    {
      if (errno == ENOENT)
        return sbx_failx (err, ENOENT, "unknown template: %s", name);
      return sbx_fail (err, errno, "stat %s", path);
    }
  snprintf (out, n, "%s:%llu:%lld.%09ld", name, (unsigned long long) st.st_ino, (long long) st.st_ctim.tv_sec,
            st.st_ctim.tv_nsec);
  return 0;
}

/* rm -rf NAME in directory DFD, never following a symlink.  Only used on
   trees this file made. */
static int
remove_at (int dfd, const char *name, int depth, struct sbx_err *err)
{
  struct stat st;
  if (fstatat (dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : sbx_fail (err, errno, "stat %s", name);
  if (! S_ISDIR (st.st_mode))
    {
      if (unlinkat (dfd, name, 0) < 0 && errno != ENOENT)
        return sbx_fail (err, errno, "remove %s", name);
      return 0;
    }
  if (depth > LAYER_DEPTH_MAX)
    return sbx_failx (err, ELOOP, "remove %s: directories nested too deeply", name);
  int fd = openat (dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  if (d == NULL)
    {
      if (fd >= 0)
        close (fd);
      return sbx_fail (err, errno, "open %s", name);
    }
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
      ret = remove_at (dirfd (d), de->d_name, depth + 1, err);
  closedir (d);
  if (ret == 0 && unlinkat (dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    ret = sbx_fail (err, errno, "remove %s", name);
  return ret;
}

/* An id of the sandbox's range (BASE..BASE+65535 on the host) as it is
   inside; anything else (there should be nothing else) becomes nobody. */
static uint32_t
shift_id (uint32_t id, uint32_t base)
{
  return id >= base && id - base < 65536 ? id - base : 65534;
}

static int
copy_content (int in, int out, struct sbx_err *err)
{
  for (;;)
    {
      ssize_t n = copy_file_range (in, NULL, out, NULL, 1u << 30, 0);
      if (n == 0)
        return 0;
      if (n > 0)
        continue;
      if (errno == EINTR)
        continue;
      if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
        return sbx_fail (err, errno, "copy file");
      break;
    }
  char buf[65536];
  for (;;)
    {
      ssize_t n = read (in, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return sbx_fail (err, errno, "read file");
      if (n == 0)
        return 0;
      if (sbx_write_full (out, buf, (size_t) n) < 0)
        return sbx_fail (err, errno, "write file");
    }
}

static bool
has_xattr (int fd, const char *name, char want)
{
  char v[4];
  ssize_t n = fgetxattr (fd, name, v, sizeof v);
  return n >= 0 && (want == 0 || (n >= 1 && v[0] == want));
}

/* Apply the overlay upper directory UP onto tree directory DST (see
   sbx_layer_commit).  Hand-written: no tool knows overlayfs whiteouts and
   opaque directories, and rsync or tar would follow the sandbox's names
   with root's rights unless told exactly what not to do. */
static int
apply_upper (int up, int dst, uint32_t base, int depth, struct sbx_err *err)
{
  if (depth > LAYER_DEPTH_MAX)
    return sbx_failx (err, ELOOP, "layer: directories nested too deeply");
  int fd = dup (up);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  if (d == NULL)
    {
      if (fd >= 0)
        close (fd);
      return sbx_fail (err, errno, "open a layer directory");
    }
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (de = readdir (d)) != NULL)
    {
      const char *name = de->d_name;
      if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
        continue;
      struct stat st, dst_st;
      if (fstatat (up, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          ret = sbx_fail (err, errno, "stat %s", name);
          break;
        }
      uid_t uid = shift_id (st.st_uid, base);
      gid_t gid = shift_id (st.st_gid, base);
      struct timespec times[2] = { st.st_atim, st.st_mtim };
      if (S_ISCHR (st.st_mode) && st.st_rdev == 0)
        {
          /* a whiteout: the name was removed */
          ret = remove_at (dst, name, 0, err);
        }
      else if (S_ISDIR (st.st_mode))
        {
          cleanup_close int sub = openat (up, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub < 0)
            {
              ret = sbx_fail (err, errno, "open %s", name);
              break;
            }
          if (has_xattr (sub, "trusted.overlay.redirect", 0) || has_xattr (sub, "trusted.overlay.metacopy", 0))
            {
              ret = sbx_failx (err, EOPNOTSUPP, "layer: %s uses overlayfs redirects, which layers do not support",
                               name);
              break;
            }
          bool opaque = has_xattr (sub, "trusted.overlay.opaque", 'y');
          bool exists = fstatat (dst, name, &dst_st, AT_SYMLINK_NOFOLLOW) == 0;
          if (exists && (opaque || ! S_ISDIR (dst_st.st_mode)))
            {
              if (remove_at (dst, name, 0, err) < 0)
                {
                  ret = -1;
                  break;
                }
              exists = false;
            }
          if (! exists && mkdirat (dst, name, 0700) < 0)
            {
              ret = sbx_fail (err, errno, "mkdir %s", name);
              break;
            }
          cleanup_close int dsub = openat (dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (dsub < 0)
            ret = sbx_fail (err, errno, "open %s", name);
          else if (apply_upper (sub, dsub, base, depth + 1, err) < 0)
            ret = -1;
          else if (fchown (dsub, uid, gid) < 0 || fchmod (dsub, st.st_mode & 07777) < 0
                   || futimens (dsub, times) < 0)
            ret = sbx_fail (err, errno, "set owner and mode of %s", name);
        }
      else if (S_ISREG (st.st_mode))
        {
          cleanup_close int in = openat (up, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
          struct stat in_st;
          if (in < 0 || fstat (in, &in_st) < 0)
            {
              ret = sbx_fail (err, errno, "open %s", name);
              break;
            }
          if (! S_ISREG (in_st.st_mode))
            continue;
          if (has_xattr (in, "trusted.overlay.whiteout", 0))
            {
              ret = remove_at (dst, name, 0, err);
              continue;
            }
          if (has_xattr (in, "trusted.overlay.metacopy", 0))
            {
              ret = sbx_failx (err, EOPNOTSUPP, "layer: %s is an overlayfs metacopy, which layers do not support",
                               name);
              break;
            }
          /* never write through the name: it is a hard link to the
             parent layer's file */
          if (remove_at (dst, name, 0, err) < 0)
            {
              ret = -1;
              break;
            }
          cleanup_close int out
              = openat (dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
          if (out < 0)
            ret = sbx_fail (err, errno, "create %s", name);
          else if (copy_content (in, out, err) < 0)
            ret = -1;
          /* the owner first: chown clears set-user-id bits */
          else if (fchown (out, uid, gid) < 0 || fchmod (out, in_st.st_mode & 07777) < 0
                   || futimens (out, times) < 0)
            ret = sbx_fail (err, errno, "set owner and mode of %s", name);
        }
      else if (S_ISLNK (st.st_mode))
        {
          char target[PATH_MAX];
          ssize_t n = readlinkat (up, name, target, sizeof target - 1);
          if (n < 0)
            {
              ret = sbx_fail (err, errno, "read link %s", name);
              break;
            }
          target[n] = '\0';
          if (remove_at (dst, name, 0, err) < 0)
            ret = -1;
          else if (symlinkat (target, dst, name) < 0)
            ret = sbx_fail (err, errno, "symlink %s", name);
          else if (fchownat (dst, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0
                   || utimensat (dst, name, times, AT_SYMLINK_NOFOLLOW) < 0)
            ret = sbx_fail (err, errno, "set owner of %s", name);
        }
      /* FIFOs, sockets and devices made by a build are not kept */
    }
  closedir (d);
  return ret;
}

static int
spec_from_meta (struct spec *s, const struct sbx_layer_meta *m, struct sbx_err *err)
{
  spec_init (s);
  if ((m->user && copy_str (s->user, sizeof s->user, m->user) < 0)
      || (m->workdir && copy_str (s->workdir, sizeof s->workdir, m->workdir) < 0))
    return sbx_failx (err, EINVAL, "user or workdir too long");
  for (const char *const *e = m->env; e && *e; e++)
    {
      if (! valid_env (*e))
        return sbx_failx (err, EINVAL, "invalid environment variable '%s'", *e);
      if (spec_set_env (s, *e) < 0)
        return sbx_fail (err, ENOMEM, "layer");
    }
  if (m->cpu_count)
    s->cpu_count = m->cpu_count;
  if (m->memory_mb)
    s->memory_mb = m->memory_mb;
  if (m->disk_mb)
    s->disk_mb = m->disk_mb;
  s->no_internet = m->no_internet;
  s->start_cmd = m->start_cmd;
  s->ready_cmd = m->ready_cmd;
  return 0;
}

int
sbx_layer_commit (const char *tmpl_dir, const char *name, const char *base, int upper_fd, uint32_t id_base,
                  const struct sbx_layer_meta *meta, FILE *progress, struct sbx_err *err)
{
  if (check_name (name, err) < 0 || check_name (base, err) < 0)
    return -1;
  if (sbx_template_exists (tmpl_dir, name))
    return 0;
  struct spec s;
  if (spec_from_meta (&s, meta, err) < 0)
    {
      spec_free (&s);
      return -1;
    }
  int ret = -1;
  cleanup_free char *tdir = NULL;
  cleanup_close int dfd = -1, lockfd = -1, rootfd = -1;
  char builddir[PATH_MAX], src[PATH_MAX], rootfs[PATH_MAX], target[64];
  if (canonical_dir (tmpl_dir, &tdir, err) < 0)
    goto out;
  dfd = open (tdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    {
      sbx_fail (err, errno, "open %s", tdir);
      goto out;
    }
  lockfd = take_lock (dfd, name, true, NULL, progress, err);
  if (lockfd < 0)
    goto out;
  if (sbx_template_exists (tmpl_dir, name))
    {
      ret = 0; /* made meanwhile by another build */
      goto out;
    }
  if (remove_stale (tdir, name, progress, err) < 0 || resolve (dfd, base, target, sizeof target, err) < 0
      || path_fmt (builddir, sizeof builddir, err, "%s/.build-%s-%d", tdir, name, (int) getpid ()) < 0
      || path_fmt (src, sizeof src, err, "%s/%s/rootfs", tdir, target) < 0
      || path_fmt (rootfs, sizeof rootfs, err, "%s/rootfs", builddir) < 0)
    goto out;
  if (mkdir (builddir, 0755) < 0 || chmod (builddir, 0755) < 0)
    {
      sbx_fail (err, errno, "mkdir %s", builddir);
      goto out;
    }
  /* coreutils' cp: hard links for files, fresh directories (their owner
     and mode may be changed without touching the parent layer) */
  char *argv[] = { "cp", "-a", "-l", "--", src, rootfs, NULL };
  if (run_streaming (argv, progress, err) < 0)
    goto fail;
  rootfd = open (rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (rootfd < 0)
    {
      sbx_fail (err, errno, "open %s", rootfs);
      goto fail;
    }
  if (upper_fd >= 0 && apply_upper (upper_fd, rootfd, id_base, 0, err) < 0)
    goto fail;
  if (fchown (rootfd, 0, 0) < 0 || fchmod (rootfd, 0755) < 0)
    {
      sbx_fail (err, errno, "set owner and mode of %s", rootfs);
      goto fail;
    }
  if (write_template_json (builddir, name, &s, err) < 0 || install_tree (tdir, name, builddir, err) < 0)
    goto fail;
  ret = 0;
  goto out;

fail:
  {
    struct sbx_err e2;
    if (access (builddir, F_OK) == 0 && safe_remove (builddir, &e2) < 0)
      say (progress, "layer %s: could not clean up: %s", name, e2.msg);
  }
out:
  spec_free (&s);
  return ret;
}

int
sbx_template_build_suite (const char *tmpl_dir, const char *name, const char *suite, FILE *progress,
                          struct sbx_err *err)
{
  if (check_name (name, err) < 0)
    return -1;
  if (sbx_template_exists (tmpl_dir, name))
    return 0;
  bool ok = suite[0] != '\0' && strlen (suite) < sizeof ((struct spec *) 0)->suite;
  for (const char *q = suite; ok && *q; q++)
    ok = is_alnum (*q) || *q == '-' || *q == '.';
  if (! ok)
    return sbx_failx (err, EINVAL, "invalid Debian suite '%s'", suite);
  struct spec s;
  spec_init (&s);
  strcpy (s.suite, suite);
  strcpy (s.user, "user");
  strcpy (s.workdir, "/home/user");
  s.cpu_count = 2;
  s.memory_mb = 1024;
  s.disk_mb = 10240;
  int ret = -1;
  /* the user E2B's images have, with the host's resolver left out */
  if (strv_push (&s.env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0
      || strv_push (&s.env, "LANG=C.UTF-8") < 0
      || strv_push (&s.setup, "groupadd -g 1000 user && useradd -m -u 1000 -g 1000 -s /bin/bash user") < 0
      || strv_push (&s.setup, "echo sandbox > /etc/hostname") < 0
      || strv_push (&s.setup, "printf '127.0.0.1\\tlocalhost sandbox\\n::1\\tlocalhost\\n' > /etc/hosts") < 0
      || strv_push (&s.setup, "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin") < 0)
    sbx_fail (err, ENOMEM, "template %s", name);
  else
    ret = build_spec (tmpl_dir, name, &s, sbx_wall_ms (), progress, err);
  spec_free (&s);
  return ret;
}
