/*
 * cgroup.c - sandbox cgroups on cgroup v1, v2 and hybrid hosts.
 *
 * The layout is detected once: statfs on /sys/fs/cgroup tells a pure v2
 * host (cgroup2) from a tmpfs holding v1 hierarchies, and statfs on
 * /sys/fs/cgroup/unified tells hybrid from pure v1.  On v1 and hybrid the
 * mount point of every controller we use (memory, cpu, cpuacct, pids,
 * freezer) comes from /proc/self/mountinfo, because controllers may be
 * co-mounted ("cpu,cpuacct") or mounted somewhere unusual.  A sandbox NAME
 * is then the same relative path below every hierarchy; the distinct
 * hierarchies are kept in one small table that create, enter, kill and
 * destroy walk.
 *
 * Mechanisms, by layout:
 *  - limits: v2 memory.max / cpu.max / pids.max, v1 memory.limit_in_bytes
 *    (+ memsw), cpu.cfs_quota_us, pids.max.
 *  - freeze: the v1 freezer when it is mounted, else cgroup.freeze of the
 *    cgroup2 hierarchy (pure v2, or hybrid without a v1 freezer).  One
 *    freezer is used for freeze, thaw, kill and stats, so "frozen" always
 *    means the same thing.
 *  - kill: cgroup.kill of the cgroup2 hierarchy when the kernel has it
 *    (5.14+), else freeze / SIGKILL every pid / thaw until nothing new
 *    shows up.
 *
 * All state is written once under pthread_once and only read afterwards,
 * so every function is thread safe.
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif

#include "cgroup.h"
#include "../common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
# define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_UNIFIED CGROUP_ROOT "/unified"

#define FREEZE_TIMEOUT_MS 5000
#define KILL_TIMEOUT_MS 5000
#define CPU_PERIOD_US 100000ull
/* The kernel refuses cfs quotas below 1 ms. */
#define CPU_QUOTA_MIN_US 1000ull
/* v1 reports "unlimited" as a page-rounded LONG_MAX; anything this big is no limit. */
#define V1_UNLIMITED (1ull << 62)
#define SMALL_FILE_MAX (64 * 1024)
#define MAX_DEPTH 64

enum { CTL_MEMORY, CTL_CPU, CTL_CPUACCT, CTL_PIDS, CTL_FREEZER, CTL_N };
static const char *const ctl_names[CTL_N] = { "memory", "cpu", "cpuacct", "pids", "freezer" };

enum freezer_kind { FREEZER_NONE, FREEZER_V1, FREEZER_V2 };

/* Distinct hierarchies: at most one per v1 controller plus cgroup2. */
#define MAX_HIER (CTL_N + 1)

struct layout
{
  enum sbx_cgroup_mode mode;
  char *ctl[CTL_N];     /* v1 mount point of each controller, NULL if absent */
  char *unified;        /* cgroup2 mount (the root on v2), NULL on pure v1 */
  const char *hier[MAX_HIER];
  size_t n_hier;
  enum freezer_kind freezer;
};

static struct layout layout;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static int detect_rc;
static struct sbx_err detect_err;

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* NAME is relative and must stay below the hierarchy roots. */
static int
check_name (const char *name, struct sbx_err *err)
{
  if (name == NULL || name[0] == '\0')
    return sbx_failx (err, EINVAL, "invalid cgroup name: empty");
  if (name[0] == '/' || strstr (name, "..") != NULL)
    return sbx_failx (err, EINVAL, "invalid cgroup name `%s`", name);
  /* Empty or "." components would make two spellings of one cgroup. */
  for (const char *p = name; *p;)
    {
      size_t len = strcspn (p, "/");
      if (len == 0 || (len == 1 && p[0] == '.'))
        return sbx_failx (err, EINVAL, "invalid cgroup name `%s`", name);
      p += len;
      if (*p == '/')
        p++;
      if (*p == '\0' && p[-1] == '/')
        return sbx_failx (err, EINVAL, "invalid cgroup name `%s`", name);
    }
  return 0;
}

/* ROOT/NAME[/FILE] into BUF. */
static int
cg_path (char *buf, size_t size, const char *root, const char *name, const char *file,
         struct sbx_err *err)
{
  int n;
  if (file)
    n = snprintf (buf, size, "%s/%s/%s", root, name, file);
  else
    n = snprintf (buf, size, "%s/%s", root, name);
  if (n < 0 || (size_t) n >= size)
    return sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s/%s", root, name);
  return 0;
}

static bool
file_exists (const char *path)
{
  return access (path, F_OK) == 0;
}

static int
pass_err (struct sbx_err *err, const struct sbx_err *e)
{
  if (err)
    *err = *e;
  return -1;
}

static int
write_str (const char *path, const char *data, struct sbx_err *err)
{
  return sbx_write_file_at (AT_FDCWD, path, data, err);
}

/* Read a whole file of any size (cgroup.procs can be long). */
static int
read_all (const char *path, char **out, struct sbx_err *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "open %s", path);
  size_t cap = 4096, len = 0;
  cleanup_free char *buf = malloc (cap);
  if (buf == NULL)
    return sbx_fail (err, ENOMEM, "read %s", path);
  for (;;)
    {
      if (len + 1 >= cap)
        {
          char *nb = realloc (buf, cap * 2);
          if (nb == NULL)
            return sbx_fail (err, ENOMEM, "read %s", path);
          buf = nb;
          cap *= 2;
        }
      ssize_t n = read (fd, buf + len, cap - len - 1);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return sbx_fail (err, errno, "read %s", path);
        }
      if (n == 0)
        break;
      len += (size_t) n;
    }
  buf[len] = '\0';
  *out = steal_pointer (&buf);
  return 0;
}

/* One number; "max" reads as 0 (unlimited).  Returns 1 when the file does
   not exist (controller not there), so stats can leave the field at 0. */
static int
read_u64 (const char *path, uint64_t *out, struct sbx_err *err)
{
  cleanup_free char *buf = NULL;
  struct sbx_err e;
  *out = 0;
  if (sbx_read_file_at (AT_FDCWD, path, &buf, SMALL_FILE_MAX, &e) < 0)
    {
      if (e.code == ENOENT)
        return 1;
      return pass_err (err, &e);
    }
  if (strncmp (buf, "max", 3) == 0)
    return 0;
  errno = 0;
  char *end;
  unsigned long long v = strtoull (buf, &end, 10);
  if (errno != 0 || end == buf)
    return sbx_failx (err, EINVAL, "cannot parse %s: `%.32s`", path, buf);
  *out = v;
  return 0;
}

/* "KEY VALUE" line of a flat keyed file.  Returns 1 when the file or the
   key is missing. */
static int
read_keyed (const char *path, const char *key, uint64_t *out, struct sbx_err *err)
{
  cleanup_free char *buf = NULL;
  struct sbx_err e;
  size_t klen = strlen (key);
  *out = 0;
  if (sbx_read_file_at (AT_FDCWD, path, &buf, SMALL_FILE_MAX, &e) < 0)
    {
      if (e.code == ENOENT)
        return 1;
      return pass_err (err, &e);
    }
  for (char *line = buf; *line;)
    {
      if (strncmp (line, key, klen) == 0 && line[klen] == ' ')
        {
          *out = strtoull (line + klen + 1, NULL, 10);
          return 0;
        }
      char *nl = strchr (line, '\n');
      if (nl == NULL)
        break;
      line = nl + 1;
    }
  return 1;
}

/* ------------------------------------------------------------------ */
/* detection                                                           */

static bool
has_option (const char *opts, const char *want)
{
  size_t wlen = strlen (want);
  for (const char *p = opts; *p;)
    {
      size_t len = strcspn (p, ",");
      if (len == wlen && strncmp (p, want, wlen) == 0)
        return true;
      p += len;
      if (*p == ',')
        p++;
    }
  return false;
}

static bool
under_cgroup_root (const char *mnt)
{
  return strncmp (mnt, CGROUP_ROOT "/", sizeof CGROUP_ROOT) == 0;
}

/* Find the v1 mount point of every controller we use. */
static int
scan_mountinfo (struct layout *l, struct sbx_err *err)
{
  FILE *f = fopen ("/proc/self/mountinfo", "re");
  if (f == NULL)
    return sbx_fail (err, errno, "open /proc/self/mountinfo");
  char *line = NULL;
  size_t cap = 0;
  while (getline (&line, &cap, f) > 0)
    {
      /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
      char *save = NULL, *mnt = NULL, *fstype = NULL, *superopts = NULL;
      int i = 0;
      bool after_sep = false;
      for (char *tok = strtok_r (line, " \n", &save); tok; tok = strtok_r (NULL, " \n", &save), i++)
        {
          if (!after_sep && i == 4)
            mnt = tok;
          else if (!after_sep && i > 5 && strcmp (tok, "-") == 0)
            {
              after_sep = true;
              i = 0;
            }
          else if (after_sep && i == 1)
            fstype = tok;
          else if (after_sep && i == 3)
            superopts = tok;
        }
      if (mnt == NULL || fstype == NULL || superopts == NULL || strcmp (fstype, "cgroup") != 0)
        continue;
      sbx_unescape_octal (mnt);
      for (int c = 0; c < CTL_N; c++)
        {
          if (!has_option (superopts, ctl_names[c]))
            continue;
          /* A hierarchy can be mounted twice; the one under /sys/fs/cgroup wins. */
          if (l->ctl[c] && (under_cgroup_root (l->ctl[c]) || !under_cgroup_root (mnt)))
            continue;
          char *dup = strdup (mnt);
          if (dup == NULL)
            {
              free (line);
              fclose (f);
              return sbx_fail (err, ENOMEM, "read /proc/self/mountinfo");
            }
          free (l->ctl[c]);
          l->ctl[c] = dup;
        }
    }
  free (line);
  fclose (f);
  return 0;
}

static int
statfs_type (const char *path, long *type, struct sbx_err *err)
{
  struct statfs sfs;
  if (statfs (path, &sfs) < 0)
    return sbx_fail (err, errno, "statfs %s", path);
  *type = (long) sfs.f_type;
  return 0;
}

static int
do_detect (struct layout *l, struct sbx_err *err)
{
  long type = 0;
  if (statfs_type (CGROUP_ROOT, &type, err) < 0)
    return -1;

  if (type == (long) CGROUP2_SUPER_MAGIC)
    {
      l->mode = SBX_CGROUP_V2;
      l->unified = strdup (CGROUP_ROOT);
      if (l->unified == NULL)
        return sbx_fail (err, ENOMEM, "cgroup detection");
      l->hier[l->n_hier++] = l->unified;
      l->freezer = FREEZER_V2;
      return 0;
    }

  l->mode = SBX_CGROUP_V1;
  if (statfs_type (CGROUP_UNIFIED, &type, NULL) == 0 && type == (long) CGROUP2_SUPER_MAGIC)
    {
      l->mode = SBX_CGROUP_HYBRID;
      l->unified = strdup (CGROUP_UNIFIED);
      if (l->unified == NULL)
        return sbx_fail (err, ENOMEM, "cgroup detection");
    }

  if (scan_mountinfo (l, err) < 0)
    return -1;

  /* Memory first: it is "the first hierarchy" sbx_cgroup_exists looks at. */
  for (int c = 0; c < CTL_N; c++)
    {
      if (l->ctl[c] == NULL)
        continue;
      bool seen = false;
      for (size_t i = 0; i < l->n_hier; i++)
        seen = seen || strcmp (l->hier[i], l->ctl[c]) == 0;
      if (!seen)
        l->hier[l->n_hier++] = l->ctl[c];
    }
  if (l->n_hier == 0)
    return sbx_failx (err, ENOENT, "no cgroup v1 controller mounted (looked in /proc/self/mountinfo)");
  if (l->unified)
    l->hier[l->n_hier++] = l->unified;

  if (l->ctl[CTL_FREEZER])
    l->freezer = FREEZER_V1;
  else if (l->unified)
    l->freezer = FREEZER_V2;
  else
    l->freezer = FREEZER_NONE;
  return 0;
}

static void
detect_once_fn (void)
{
  detect_rc = do_detect (&layout, &detect_err);
}

static int
ensure_detected (struct sbx_err *err)
{
  pthread_once (&detect_once, detect_once_fn);
  if (detect_rc < 0)
    {
      if (err)
        *err = detect_err;
      return -1;
    }
  return 0;
}

int
sbx_cgroup_detect (struct sbx_err *err)
{
  return ensure_detected (err);
}

enum sbx_cgroup_mode
sbx_cgroup_mode (void)
{
  ensure_detected (NULL);
  return layout.mode;
}


/* ------------------------------------------------------------------ */
/* process lists                                                       */

/* 1 when DIR and all its descendants hold no process, 0 when some process
   is there, -1 on error.  A missing DIR is empty. */
static int
tree_empty (const char *dir, int depth, struct sbx_err *err)
{
  char path[PATH_MAX];
  if (snprintf (path, sizeof path, "%s/cgroup.procs", dir) >= (int) sizeof path)
    return sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s", dir);
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 1 : sbx_fail (err, errno, "open %s", path);
  char c;
  ssize_t n;
  do
    n = read (fd, &c, 1);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == ENODEV ? 1 : sbx_fail (err, errno, "read %s", path);
  if (n > 0)
    return 0;
  if (depth >= MAX_DEPTH)
    return 1;

  DIR *d = opendir (dir);
  if (d == NULL)
    return errno == ENOENT ? 1 : sbx_fail (err, errno, "opendir %s", dir);
  int ret = 1;
  struct dirent *de;
  while (ret == 1 && (de = readdir (d)) != NULL)
    {
      if (de->d_type != DT_DIR || de->d_name[0] == '.')
        continue;
      if (snprintf (path, sizeof path, "%s/%s", dir, de->d_name) >= (int) sizeof path)
        ret = sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s", dir);
      else
        ret = tree_empty (path, depth + 1, err);
    }
  closedir (d);
  return ret;
}

/* 1 when NAME is empty in every hierarchy. */
static int
all_empty (const char *name, struct sbx_err *err)
{
  char dir[PATH_MAX];
  for (size_t i = 0; i < layout.n_hier; i++)
    {
      if (cg_path (dir, sizeof dir, layout.hier[i], name, NULL, err) < 0)
        return -1;
      int r = tree_empty (dir, 0, err);
      if (r != 1)
        return r;
    }
  return 1;
}

struct pidset
{
  pid_t *v;
  size_t n, cap;
};

static int
pidset_add (struct pidset *s, pid_t pid)
{
  pid_t *slot = sbx_grow (&s->v, &s->n, &s->cap, sizeof *s->v);
  if (slot == NULL)
    return -1;
  *slot = pid;
  return 0;
}

static int
cmp_pid (const void *a, const void *b)
{
  pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
  return (x > y) - (x < y);
}

static void
pidset_sort_unique (struct pidset *s)
{
  if (s->n == 0)
    return;
  qsort (s->v, s->n, sizeof *s->v, cmp_pid);
  size_t w = 1;
  for (size_t r = 1; r < s->n; r++)
    if (s->v[r] != s->v[w - 1])
      s->v[w++] = s->v[r];
  s->n = w;
}

static bool
pidset_equal (const struct pidset *a, const struct pidset *b)
{
  return a->n == b->n && (a->n == 0 || memcmp (a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* Add every pid in DIR and its descendants to S. */
static int
collect_pids (const char *dir, struct pidset *s, int depth, struct sbx_err *err)
{
  char path[PATH_MAX];
  if (snprintf (path, sizeof path, "%s/cgroup.procs", dir) >= (int) sizeof path)
    return sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s", dir);
  cleanup_free char *buf = NULL;
  struct sbx_err e;
  if (read_all (path, &buf, &e) < 0)
    {
      /* Raced with rmdir. */
      if (e.code == ENOENT || e.code == ENODEV)
        return 0;
      return pass_err (err, &e);
    }
  for (char *p = buf; *p;)
    {
      char *end;
      long pid = strtol (p, &end, 10);
      if (end == p)
        break;
      if (pid > 0 && pidset_add (s, (pid_t) pid) < 0)
        return sbx_fail (err, ENOMEM, "read %s", path);
      p = end;
    }
  if (depth >= MAX_DEPTH)
    return 0;

  DIR *d = opendir (dir);
  if (d == NULL)
    return errno == ENOENT ? 0 : sbx_fail (err, errno, "opendir %s", dir);
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (de = readdir (d)) != NULL)
    {
      if (de->d_type != DT_DIR || de->d_name[0] == '.')
        continue;
      if (snprintf (path, sizeof path, "%s/%s", dir, de->d_name) >= (int) sizeof path)
        ret = sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s", dir);
      else
        ret = collect_pids (path, s, depth + 1, err);
    }
  closedir (d);
  return ret;
}

/* ------------------------------------------------------------------ */
/* create / enter                                                      */

static bool
word_in (const char *list, const char *word)
{
  size_t wlen = strlen (word);
  for (const char *p = list; *p;)
    {
      p += strspn (p, " \n");
      size_t len = strcspn (p, " \n");
      if (len == wlen && strncmp (p, word, wlen) == 0)
        return true;
      p += len;
    }
  return false;
}

/* Delegate to DIR's children every controller we use that DIR offers
   (v2 only: a controller is usable in a cgroup only when every ancestor
   enabled it in cgroup.subtree_control). */
static int
enable_controllers (const char *dir, struct sbx_err *err)
{
  static const char *const wanted[] = { "memory", "pids", "cpu" };
  char path[PATH_MAX];
  cleanup_free char *avail = NULL;
  cleanup_free char *enabled = NULL;

  if (cg_path (path, sizeof path, dir, "cgroup.controllers", NULL, err) < 0
      || sbx_read_file_at (AT_FDCWD, path, &avail, SMALL_FILE_MAX, err) < 0)
    return -1;
  if (cg_path (path, sizeof path, dir, "cgroup.subtree_control", NULL, err) < 0
      || sbx_read_file_at (AT_FDCWD, path, &enabled, SMALL_FILE_MAX, err) < 0)
    return -1;

  for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
    {
      char cmd[32];
      if (!word_in (avail, wanted[i]) || word_in (enabled, wanted[i]))
        continue;
      /* One write per controller so a failure names the culprit. */
      snprintf (cmd, sizeof cmd, "+%s", wanted[i]);
      if (write_str (path, cmd, err) < 0)
        return sbx_err_wrap (err, "enable %s controller", wanted[i]);
    }
  return 0;
}

/* mkdir ROOT/NAME one level at a time, delegating controllers at every
   level above the leaf when DELEGATE.  *MADE tells whether the leaf is new. */
static int
make_tree (const char *root, const char *name, bool delegate, bool *made, struct sbx_err *err)
{
  char path[PATH_MAX];
  *made = false;
  if (cg_path (path, sizeof path, root, name, NULL, err) < 0)
    return -1;
  char *slash = path + strlen (root);
  for (;;)
    {
      if (delegate)
        {
          *slash = '\0';
          int r = enable_controllers (path, err);
          *slash = '/';
          if (r < 0)
            return -1;
        }
      char *next = strchr (slash + 1, '/');
      if (next)
        *next = '\0';
      if (mkdir (path, 0755) == 0)
        *made = next == NULL;
      else if (errno != EEXIST)
        return sbx_fail (err, errno, "mkdir %s", path);
      if (next == NULL)
        return 0;
      *next = '/';
      slash = next;
    }
}

static int
write_limit (const char *root, const char *name, const char *file, const char *val,
             struct sbx_err *err)
{
  char path[PATH_MAX];
  if (cg_path (path, sizeof path, root, name, file, err) < 0)
    return -1;
  return write_str (path, val, err);
}

static uint64_t
cpu_quota_us (uint32_t millis)
{
  uint64_t q = (uint64_t) millis * CPU_PERIOD_US / 1000;
  return q < CPU_QUOTA_MIN_US ? CPU_QUOTA_MIN_US : q;
}

static int
apply_limits_v2 (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err)
{
  const char *root = layout.unified;
  char val[64], path[PATH_MAX];

  if (lim->memory_bytes)
    {
      snprintf (val, sizeof val, "%" PRIu64, lim->memory_bytes);
      if (write_limit (root, name, "memory.max", val, err) < 0)
        return -1;
      /* Same meaning as memsw on v1: the limit cannot be dodged by swapping. */
      if (cg_path (path, sizeof path, root, name, "memory.swap.max", err) < 0)
        return -1;
      if (file_exists (path) && write_str (path, "0", err) < 0)
        return -1;
    }
  if (lim->cpu_millis)
    {
      snprintf (val, sizeof val, "%" PRIu64 " %llu", cpu_quota_us (lim->cpu_millis), CPU_PERIOD_US);
      if (write_limit (root, name, "cpu.max", val, err) < 0)
        return -1;
    }
  if (lim->pids_max)
    {
      snprintf (val, sizeof val, "%" PRIu32, lim->pids_max);
      if (write_limit (root, name, "pids.max", val, err) < 0)
        return -1;
    }
  return 0;
}

static int
need_ctl (int ctl, struct sbx_err *err)
{
  if (layout.ctl[ctl] == NULL)
    return sbx_failx (err, ENOTSUP, "cgroup v1 %s controller is not mounted", ctl_names[ctl]);
  return 0;
}

static int
apply_limits_v1 (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err)
{
  char val[64], memsw[PATH_MAX];

  if (lim->memory_bytes)
    {
      const char *root = layout.ctl[CTL_MEMORY];
      if (need_ctl (CTL_MEMORY, err) < 0)
        return -1;
      snprintf (val, sizeof val, "%" PRIu64, lim->memory_bytes);
      if (cg_path (memsw, sizeof memsw, root, name, "memory.memsw.limit_in_bytes", err) < 0)
        return -1;
      bool has_memsw = file_exists (memsw);
      struct sbx_err e;
      if (write_limit (root, name, "memory.limit_in_bytes", val, &e) < 0)
        {
          /* The kernel wants limit <= memsw; raising an existing pair
             has to move memsw first. */
          if (!has_memsw || e.code != EINVAL)
            return pass_err (err, &e);
          if (write_str (memsw, val, err) < 0
              || write_limit (root, name, "memory.limit_in_bytes", val, err) < 0)
            return -1;
        }
      if (has_memsw && write_str (memsw, val, err) < 0)
        return -1;
    }
  if (lim->cpu_millis)
    {
      const char *root = layout.ctl[CTL_CPU];
      if (need_ctl (CTL_CPU, err) < 0)
        return -1;
      snprintf (val, sizeof val, "%llu", CPU_PERIOD_US);
      if (write_limit (root, name, "cpu.cfs_period_us", val, err) < 0)
        return -1;
      snprintf (val, sizeof val, "%" PRIu64, cpu_quota_us (lim->cpu_millis));
      if (write_limit (root, name, "cpu.cfs_quota_us", val, err) < 0)
        return -1;
    }
  if (lim->pids_max)
    {
      if (need_ctl (CTL_PIDS, err) < 0)
        return -1;
      snprintf (val, sizeof val, "%" PRIu32, lim->pids_max);
      if (write_limit (layout.ctl[CTL_PIDS], name, "pids.max", val, err) < 0)
        return -1;
    }
  return 0;
}

int
sbx_cgroup_set_cpu_weight (const char *name, unsigned weight, struct sbx_err *err)
{
  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (weight < SBX_CPU_WEIGHT_MIN)
    weight = SBX_CPU_WEIGHT_MIN;
  if (weight > SBX_CPU_WEIGHT_MAX)
    weight = SBX_CPU_WEIGHT_MAX;
  char val[32];
  if (layout.mode == SBX_CGROUP_V2)
    {
      snprintf (val, sizeof val, "%u", weight);
      return write_limit (layout.unified, name, "cpu.weight", val, err);
    }
  if (need_ctl (CTL_CPU, err) < 0)
    return -1;
  /* v1's cpu.shares: 1024 is what cpu.weight calls 100 */
  unsigned long shares = (unsigned long) weight * 1024 / 100;
  snprintf (val, sizeof val, "%lu", shares < 2 ? 2ul : shares);
  return write_limit (layout.ctl[CTL_CPU], name, "cpu.shares", val, err);
}

int
sbx_cgroup_set_limits (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err)
{
  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if ((layout.mode == SBX_CGROUP_V2 ? apply_limits_v2 (name, lim, err) : apply_limits_v1 (name, lim, err)) < 0)
    return sbx_err_wrap (err, "limit cgroup %s", name);
  return 0;
}

int
sbx_cgroup_create (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err)
{
  static const struct sbx_cgroup_limits unlimited;
  bool made[MAX_HIER] = { false };
  char path[PATH_MAX];

  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (lim == NULL)
    lim = &unlimited;

  for (size_t i = 0; i < layout.n_hier; i++)
    {
      /* Only a pure v2 host has controllers on the cgroup2 hierarchy. */
      bool delegate = layout.mode == SBX_CGROUP_V2;
      if (make_tree (layout.hier[i], name, delegate, &made[i], err) < 0)
        goto fail;
    }
  if ((layout.mode == SBX_CGROUP_V2 ? apply_limits_v2 (name, lim, err)
                                    : apply_limits_v1 (name, lim, err))
      < 0)
    goto fail;
  return 0;

fail:
  /* Undo only what this call created; ancestors may be shared. */
  for (size_t i = 0; i < layout.n_hier; i++)
    if (made[i] && cg_path (path, sizeof path, layout.hier[i], name, NULL, NULL) == 0)
      rmdir (path);
  return sbx_err_wrap (err, "create cgroup %s", name);
}

int
sbx_cgroup_enter (const char *name, pid_t pid, struct sbx_err *err)
{
  char path[PATH_MAX], val[32];

  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  snprintf (val, sizeof val, "%d", (int) pid);

  /* cgroup2 first: it is where cgroup.kill acts, so a pid that made it
     into any hierarchy can be killed even if a later write fails. */
  if (layout.unified)
    {
      if (cg_path (path, sizeof path, layout.unified, name, "cgroup.procs", err) < 0
          || write_str (path, val, err) < 0)
        return sbx_err_wrap (err, "move pid %d into cgroup %s", (int) pid, name);
    }
  for (size_t i = 0; i < layout.n_hier; i++)
    {
      if (layout.hier[i] == layout.unified)
        continue;
      if (cg_path (path, sizeof path, layout.hier[i], name, "cgroup.procs", err) < 0
          || write_str (path, val, err) < 0)
        return sbx_err_wrap (err, "move pid %d into cgroup %s", (int) pid, name);
    }
  return 0;
}

/* ------------------------------------------------------------------ */
/* freeze / kill                                                       */

/* 1 when the freezer of NAME reports frozen, 0 when not, -1 on error. */
static int
read_frozen (const char *name, struct sbx_err *err)
{
  char path[PATH_MAX];
  if (layout.freezer == FREEZER_V1)
    {
      cleanup_free char *state = NULL;
      if (cg_path (path, sizeof path, layout.ctl[CTL_FREEZER], name, "freezer.state", err) < 0
          || sbx_read_file_at (AT_FDCWD, path, &state, SMALL_FILE_MAX, err) < 0)
        return -1;
      return strncmp (state, "FROZEN", 6) == 0 && (state[6] == '\n' || state[6] == '\0');
    }
  if (layout.freezer == FREEZER_V2)
    {
      uint64_t v;
      if (cg_path (path, sizeof path, layout.unified, name, "cgroup.events", err) < 0)
        return -1;
      int r = read_keyed (path, "frozen", &v, err);
      if (r < 0)
        return -1;
      if (r > 0)
        return sbx_failx (err, ENOTSUP, "%s has no `frozen` key (kernel < 5.2?)", path);
      return v == 1;
    }
  return 0;
}

static int
request_frozen (const char *name, bool frozen, struct sbx_err *err)
{
  char path[PATH_MAX];
  switch (layout.freezer)
    {
    case FREEZER_V1:
      if (cg_path (path, sizeof path, layout.ctl[CTL_FREEZER], name, "freezer.state", err) < 0)
        return -1;
      return write_str (path, frozen ? "FROZEN" : "THAWED", err);
    case FREEZER_V2:
      if (cg_path (path, sizeof path, layout.unified, name, "cgroup.freeze", err) < 0)
        return -1;
      return write_str (path, frozen ? "1" : "0", err);
    case FREEZER_NONE:
    default:
      return sbx_failx (err, ENOTSUP, "no cgroup freezer on this host");
    }
}

/* Ask for the new state and poll until the kernel reports it.  When
   freezing times out and REVERT, thaw again: a half-frozen tree (the v1
   FREEZING state) is worse than a running one. */
static int
set_frozen (const char *name, bool frozen, int timeout_ms, bool revert, struct sbx_err *err)
{
  uint64_t deadline = sbx_now_ns () + (uint64_t) timeout_ms * 1000000ull;
  unsigned delay = 1;

  for (int round = 0;; round++)
    {
      /* v1 can sit in FREEZING when a task was busy in the kernel;
         writing FROZEN again retries the tasks that did not stop. */
      if ((round == 0 || layout.freezer == FREEZER_V1) && request_frozen (name, frozen, err) < 0)
        return -1;
      int r = read_frozen (name, err);
      if (r < 0)
        return -1;
      if (r == (int) frozen)
        return 0;
      if (sbx_now_ns () >= deadline)
        break;
      sleep_ms (delay);
      if (delay < 8)
        delay *= 2;
    }
  if (frozen && revert)
    request_frozen (name, false, NULL);
  return sbx_failx (err, ETIMEDOUT, "cgroup %s not %s after %d ms", name,
                    frozen ? "frozen" : "thawed", timeout_ms);
}

int
sbx_cgroup_freeze (const char *name, bool frozen, struct sbx_err *err)
{
  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  return set_frozen (name, frozen, FREEZE_TIMEOUT_MS, true, err);
}

/* Kill without cgroup.kill: freeze, SIGKILL every listed pid, thaw.  A
   frozen tree cannot fork and its pids cannot be recycled, so the list is
   complete and every signal hits the right process.  Stop when the tree is
   empty or a round finds exactly the pids already killed (they are dying,
   maybe stuck in the kernel; waiting for them is the caller's business). */
static int
kill_by_pid (const char *name, pid_t keep, struct sbx_err *err)
{
  struct pidset prev = { 0 }, cur = { 0 };
  uint64_t deadline = sbx_now_ns () + KILL_TIMEOUT_MS * 1000000ull;
  char dir[PATH_MAX];
  int ret = 0;

  for (;;)
    {
      bool can_freeze = layout.freezer != FREEZER_NONE;
      /* A task stuck in D state must not block the kill: short, best effort. */
      if (can_freeze)
        set_frozen (name, true, 100, false, NULL);

      cur.n = 0;
      for (size_t i = 0; ret == 0 && i < layout.n_hier; i++)
        {
          if (cg_path (dir, sizeof dir, layout.hier[i], name, NULL, err) < 0
              || collect_pids (dir, &cur, 0, err) < 0)
            ret = -1;
        }
      pidset_sort_unique (&cur);
      size_t w = 0;
      for (size_t i = 0; i < cur.n; i++)
        if (cur.v[i] != keep)
          {
            kill (cur.v[i], SIGKILL);
            cur.v[w++] = cur.v[i];
          }
      cur.n = w;

      if (can_freeze)
        set_frozen (name, false, 1000, false, NULL);

      if (ret < 0 || cur.n == 0 || pidset_equal (&prev, &cur) || sbx_now_ns () >= deadline)
        break;

      for (int ms = 0; ms < 10 && (keep > 0 || all_empty (name, NULL) == 0); ms++)
        sleep_ms (1);
      struct pidset tmp = prev;
      prev = cur;
      cur = tmp;
    }
  free (prev.v);
  free (cur.v);
  return ret;
}

int
sbx_cgroup_kill (const char *name, struct sbx_err *err)
{
  char path[PATH_MAX];

  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (!sbx_cgroup_exists (name))
    return sbx_failx (err, ENOENT, "kill cgroup %s: no such cgroup", name);

  if (layout.unified)
    {
      if (cg_path (path, sizeof path, layout.unified, name, "cgroup.kill", err) < 0)
        return -1;
      if (file_exists (path))
        {
          if (write_str (path, "1", err) < 0)
            return sbx_err_wrap (err, "kill cgroup %s", name);
          /* SIGKILL is pending now, but a task frozen by the v1 freezer
             only acts on it once thawed. */
          if (layout.freezer != FREEZER_NONE)
            set_frozen (name, false, 1000, false, NULL);
          return 0;
        }
    }
  if (kill_by_pid (name, 0, err) < 0)
    return sbx_err_wrap (err, "kill cgroup %s", name);
  return 0;
}

int
sbx_cgroup_kill_except (const char *name, pid_t keep, int timeout_ms, struct sbx_err *err)
{
  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (kill_by_pid (name, keep, err) < 0)
    return sbx_err_wrap (err, "kill cgroup %s", name);
  /* wait until only KEEP is listed */
  uint64_t deadline = sbx_now_ns () + (uint64_t) timeout_ms * 1000000ull;
  char dir[PATH_MAX];
  for (;;)
    {
      struct pidset cur = { 0 };
      int ret = 0;
      for (size_t i = 0; ret == 0 && i < layout.n_hier; i++)
        if (cg_path (dir, sizeof dir, layout.hier[i], name, NULL, err) < 0 || collect_pids (dir, &cur, 0, err) < 0)
          ret = -1;
      pidset_sort_unique (&cur);
      bool only_keep = cur.n == 0 || (cur.n == 1 && cur.v[0] == keep);
      free (cur.v);
      if (ret < 0)
        return -1;
      if (only_keep)
        return 0;
      if (sbx_now_ns () >= deadline)
        return sbx_failx (err, ETIMEDOUT, "processes of cgroup %s still there after %d ms", name, timeout_ms);
      if (kill_by_pid (name, keep, err) < 0)
        return -1;
      sleep_ms (2);
    }
}

/* ------------------------------------------------------------------ */
/* destroy / queries                                                   */

/* rmdir DIR after its child cgroups.  EBUSY is retried until DEADLINE:
   the kernel may still count a task that just left cgroup.procs. */
static int
remove_tree (const char *dir, int depth, uint64_t deadline, struct sbx_err *err)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return errno == ENOENT ? 0 : sbx_fail (err, errno, "opendir %s", dir);
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && depth < MAX_DEPTH && (de = readdir (d)) != NULL)
    {
      char path[PATH_MAX];
      if (de->d_type != DT_DIR || de->d_name[0] == '.')
        continue;
      if (snprintf (path, sizeof path, "%s/%s", dir, de->d_name) >= (int) sizeof path)
        ret = sbx_failx (err, ENAMETOOLONG, "cgroup path too long: %s", dir);
      else
        ret = remove_tree (path, depth + 1, deadline, err);
    }
  closedir (d);
  if (ret < 0)
    return -1;

  while (rmdir (dir) < 0)
    {
      if (errno == ENOENT)
        return 0;
      if (errno != EBUSY || sbx_now_ns () >= deadline)
        return sbx_fail (err, errno, "rmdir %s", dir);
      sleep_ms (1);
    }
  return 0;
}

int
sbx_cgroup_destroy (const char *name, int timeout_ms, struct sbx_err *err)
{
  char dir[PATH_MAX];
  struct stat st;
  bool any = false;

  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (timeout_ms < 0)
    timeout_ms = 0;
  for (size_t i = 0; i < layout.n_hier; i++)
    {
      if (cg_path (dir, sizeof dir, layout.hier[i], name, NULL, err) < 0)
        return -1;
      any = any || stat (dir, &st) == 0;
    }
  if (!any)
    return 0;

  uint64_t deadline = sbx_now_ns () + (uint64_t) timeout_ms * 1000000ull;
  struct sbx_err kerr = { 0 };
  int kill_rc = 0;
  int r = all_empty (name, err);
  if (r < 0)
    return sbx_err_wrap (err, "destroy cgroup %s", name);
  if (r == 0)
    kill_rc = sbx_cgroup_kill (name, &kerr);

  for (;;)
    {
      r = all_empty (name, err);
      if (r < 0)
        return sbx_err_wrap (err, "destroy cgroup %s", name);
      if (r == 1)
        break;
      if (sbx_now_ns () >= deadline)
        {
          if (kill_rc < 0 && kerr.code != ENOENT)
            {
              if (err)
                *err = kerr;
              return sbx_err_wrap (err, "destroy cgroup %s", name);
            }
          return sbx_failx (err, EBUSY, "destroy cgroup %s: processes left %d ms after SIGKILL",
                            name, timeout_ms);
        }
      sleep_ms (1);
    }

  /* Give rmdir a little slack even with a zero timeout. */
  uint64_t rm_deadline = sbx_now_ns () + 200 * 1000000ull;
  if (rm_deadline < deadline)
    rm_deadline = deadline;
  for (size_t i = 0; i < layout.n_hier; i++)
    {
      if (cg_path (dir, sizeof dir, layout.hier[i], name, NULL, err) < 0
          || remove_tree (dir, 0, rm_deadline, err) < 0)
        return sbx_err_wrap (err, "destroy cgroup %s", name);
    }
  return 0;
}

bool
sbx_cgroup_exists (const char *name)
{
  char dir[PATH_MAX];
  struct stat st;
  if (ensure_detected (NULL) < 0 || check_name (name, NULL) < 0
      || cg_path (dir, sizeof dir, layout.hier[0], name, NULL, NULL) < 0)
    return false;
  return stat (dir, &st) == 0 && S_ISDIR (st.st_mode);
}

bool
sbx_cgroup_empty (const char *name)
{
  if (ensure_detected (NULL) < 0 || check_name (name, NULL) < 0)
    return false;
  return all_empty (name, NULL) == 1;
}

/* ROOT/NAME/FILE (a number, or the KEY line when KEY) into *OUT; a
   missing file or key leaves 0. */
static int
stat_value (const char *root, const char *name, const char *file, const char *key, uint64_t *out,
            struct sbx_err *err)
{
  char path[PATH_MAX];
  *out = 0;
  if (root == NULL)
    return 0;
  if (cg_path (path, sizeof path, root, name, file, err) < 0)
    return -1;
  int r = key ? read_keyed (path, key, out, err) : read_u64 (path, out, err);
  return r < 0 ? -1 : 0;
}

int
sbx_cgroup_stats (const char *name, struct sbx_cgroup_stats *st, struct sbx_err *err)
{
  uint64_t usec = 0;

  memset (st, 0, sizeof *st);
  if (ensure_detected (err) < 0 || check_name (name, err) < 0)
    return -1;
  if (!sbx_cgroup_exists (name))
    return sbx_failx (err, ENOENT, "stats of cgroup %s: no such cgroup", name);

  if (layout.mode == SBX_CGROUP_V2)
    {
      const char *root = layout.unified;
      if (stat_value (root, name, "cpu.stat", "usage_usec", &usec, err) < 0
          || stat_value (root, name, "memory.current", NULL, &st->memory_current, err) < 0
          || stat_value (root, name, "memory.max", NULL, &st->memory_max, err) < 0
          || stat_value (root, name, "memory.stat", "file", &st->memory_cache, err) < 0
          || stat_value (root, name, "memory.events", "oom_kill", &st->oom_kills, err) < 0
          || stat_value (root, name, "pids.current", NULL, &st->pids_current, err) < 0)
        goto fail;
      st->cpu_usage_ns = usec * 1000;
    }
  else
    {
      const char *mem = layout.ctl[CTL_MEMORY];
      if (layout.ctl[CTL_CPUACCT])
        {
          if (stat_value (layout.ctl[CTL_CPUACCT], name, "cpuacct.usage", NULL, &st->cpu_usage_ns,
                          err)
              < 0)
            goto fail;
        }
      else
        {
          /* The controller-less cgroup2 tree still accounts CPU time. */
          if (stat_value (layout.unified, name, "cpu.stat", "usage_usec", &usec, err) < 0)
            goto fail;
          st->cpu_usage_ns = usec * 1000;
        }
      if (stat_value (mem, name, "memory.usage_in_bytes", NULL, &st->memory_current, err) < 0
          || stat_value (mem, name, "memory.limit_in_bytes", NULL, &st->memory_max, err) < 0
          || stat_value (mem, name, "memory.oom_control", "oom_kill", &st->oom_kills, err) < 0
          || stat_value (layout.ctl[CTL_PIDS], name, "pids.current", NULL, &st->pids_current, err)
                 < 0)
        goto fail;
      if (st->memory_max >= V1_UNLIMITED)
        st->memory_max = 0;
      /* total_cache includes child cgroups; older kernels only have cache. */
      char path[PATH_MAX];
      if (mem)
        {
          if (cg_path (path, sizeof path, mem, name, "memory.stat", err) < 0)
            goto fail;
          int r = read_keyed (path, "total_cache", &st->memory_cache, err);
          if (r > 0)
            r = read_keyed (path, "cache", &st->memory_cache, err);
          if (r < 0)
            goto fail;
        }
    }

  int fr = read_frozen (name, err);
  if (fr < 0)
    goto fail;
  st->frozen = fr == 1;
  return 0;

fail:
  return sbx_err_wrap (err, "stats of cgroup %s", name);
}
