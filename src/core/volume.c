/*
 * volume.c - a volume's files without a sandbox (volume.h).
 *
 * The daemon is the host's root and the tree it works in was written by
 * sandboxes, possibly while it works (a sandbox may have the volume
 * mounted).  So nothing here follows a name the tree chose: every path
 * is resolved with openat2 from the volume's root with RESOLVE_IN_ROOT
 * ("/.." stays the root), RESOLVE_NO_SYMLINKS (a symlink anywhere in a
 * path fails instead of leading somewhere; a symlink as the last
 * component is looked at, never through) and RESOLVE_NO_XDEV; then each
 * call works on the fds it got (fstat, fchown, fchmod, unlinkat of a
 * name in an opened directory).  Content is only opened on regular
 * files, O_NONBLOCK and checked before any byte moves, so a FIFO never
 * blocks a thread.  The mount is nosuid and nodev, detached from the
 * host's mount table.
 */
#include "volume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../common/util.h"

void
sbx_volume_entry_free (struct sbx_volume_entry *e)
{
  if (e == NULL)
    return;
  free (e->name);
  free (e->path);
  free (e->target);
  e->name = e->path = e->target = NULL;
}

void
sbx_volume_entries_free (struct sbx_volume_entry *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    sbx_volume_entry_free (&v[i]);
  free (v);
}

/* PATH as "/a/b" into OUT: empty and "." components dropped; ".." is
   refused (it could only mean the root's parent or a name's, and the
   caller should say which). */
static int
normalise (const char *path, char out[SBX_VOLUME_PATH_MAX], struct sbx_err *err)
{
  if (path == NULL || *path == '\0')
    return sbx_failk (err, SBX_E_INVALID, "a path is required");
  if (strlen (path) >= SBX_VOLUME_PATH_MAX)
    return sbx_failk (err, SBX_E_INVALID, "path too long (at most %d bytes)", SBX_VOLUME_PATH_MAX - 1);
  size_t w = 0;
  const char *c = path;
  while (*c)
    {
      while (*c == '/')
        c++;
      if (*c == '\0')
        break;
      const char *end = strchr (c, '/');
      size_t n = end ? (size_t) (end - c) : strlen (c);
      if (n == 2 && c[0] == '.' && c[1] == '.')
        return sbx_failk (err, SBX_E_INVALID, "path %s has a \"..\" component", path);
      if (!(n == 1 && c[0] == '.'))
        {
          out[w++] = '/';
          memcpy (out + w, c, n);
          w += n;
        }
      c += n;
    }
  if (w == 0)
    out[w++] = '/';
  out[w] = '\0';
  return 0;
}

static int
resolve (int root, const char *norm, int flags)
{
  struct open_how how = { .flags = (uint64_t) (flags | O_CLOEXEC),
                          .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
                                     | RESOLVE_NO_XDEV };
  return (int) syscall (SYS_openat2, root, norm[1] ? norm + 1 : ".", &how, sizeof how);
}

static int
fail_path (struct sbx_err *err, int e, const char *norm)
{
  if (e == ENOENT || e == ENOTDIR)
    return sbx_failk (err, SBX_E_NOT_FOUND, "path %s not found", norm);
  if (e == ELOOP)
    return sbx_failk (err, SBX_E_INVALID, "path %s goes through a symbolic link", norm);
  if (e == EXDEV)
    return sbx_failk (err, SBX_E_INVALID, "path %s leaves the volume", norm);
  return sbx_fail (err, e, "%s", norm);
}

/* The parent directory of NORM (not "/") opened, its last component in
   *NAME (pointing into NORM). */
static int
open_parent (int root, const char *norm, const char **name, struct sbx_err *err)
{
  if (strcmp (norm, "/") == 0)
    return sbx_failk (err, SBX_E_INVALID, "the volume's root cannot be made, written or removed");
  const char *slash = strrchr (norm, '/');
  char parent[SBX_VOLUME_PATH_MAX];
  size_t n = (size_t) (slash - norm);
  memcpy (parent, norm, n);
  parent[n] = '\0';
  if (n == 0)
    snprintf (parent, sizeof parent, "/");
  *name = slash + 1;
  int fd = resolve (root, parent, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return fail_path (err, errno, parent);
  return fd;
}

static int
entry_fill (int fd, const char *norm, const struct stat *st, struct sbx_volume_entry *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  const char *slash = strrchr (norm, '/');
  out->path = strdup (norm);
  out->name = strdup (norm[1] ? slash + 1 : "/");
  if (out->path == NULL || out->name == NULL)
    {
      sbx_volume_entry_free (out);
      return sbx_fail (err, ENOMEM, "entry");
    }
  out->type = S_ISREG (st->st_mode)   ? SBX_VOL_FILE
              : S_ISDIR (st->st_mode) ? SBX_VOL_DIR
              : S_ISLNK (st->st_mode) ? SBX_VOL_SYMLINK
                                      : SBX_VOL_UNKNOWN;
  out->size = (uint64_t) st->st_size;
  out->mode = st->st_mode;
  out->uid = st->st_uid;
  out->gid = st->st_gid;
  out->atime = st->st_atim;
  out->mtime = st->st_mtim;
  out->ctime = st->st_ctim;
  if (out->type == SBX_VOL_SYMLINK && fd >= 0)
    {
      char buf[SBX_VOLUME_PATH_MAX];
      ssize_t n = readlinkat (fd, "", buf, sizeof buf - 1);
      if (n >= 0)
        {
          buf[n] = '\0';
          out->target = strdup (buf);
        }
    }
  return 0;
}

/* Stat NAME in directory DIR (no symlink followed). */
static int
entry_at (int dir, const char *name, const char *norm, struct sbx_volume_entry *out, struct sbx_err *err)
{
  cleanup_close int fd = openat (dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0)
    return fail_path (err, errno, norm);
  return entry_fill (fd, norm, &st, out, err);
}

int
sbx_volume_stat (int root, const char *path, struct sbx_volume_entry *out, struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0)
    return -1;
  cleanup_close int fd = resolve (root, norm, O_PATH | O_NOFOLLOW);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0)
    return fail_path (err, errno, norm);
  return entry_fill (fd, norm, &st, out, err);
}

static int
by_name (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

struct listing {
  struct sbx_volume_entry *v;
  size_t n, cap;
};

static int
list_dir (int dir, const char *norm, uint32_t depth, struct listing *l, struct sbx_err *err)
{
  int dfd = openat (dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return fail_path (err, errno, norm);
  DIR *d = fdopendir (dfd);
  if (d == NULL)
    {
      close (dfd);
      return sbx_fail (err, errno, "list %s", norm);
    }
  /* names first, sorted, then each looked at: a listing in name order */
  char **names = NULL;
  size_t nn = 0, cap = 0;
  int ret = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (l->n + nn >= SBX_VOLUME_LIST_MAX)
        {
          ret = sbx_failk (err, SBX_E_TOO_LARGE, "more than %d entries: list with a smaller depth",
                           SBX_VOLUME_LIST_MAX);
          break;
        }
      char **slot = sbx_grow (&names, &nn, &cap, sizeof *names);
      if (slot == NULL || (*slot = strdup (de->d_name)) == NULL)
        {
          if (slot)
            nn--;
          ret = sbx_fail (err, ENOMEM, "list %s", norm);
          break;
        }
    }
  if (ret == 0)
    qsort (names, nn, sizeof *names, by_name);
  for (size_t i = 0; ret == 0 && i < nn; i++)
    {
      char child[SBX_VOLUME_PATH_MAX];
      if (snprintf (child, sizeof child, "%s/%s", norm[1] ? norm : "", names[i]) >= (int) sizeof child)
        continue;
      struct sbx_volume_entry *e = sbx_grow (&l->v, &l->n, &l->cap, sizeof *l->v);
      if (e == NULL)
        {
          ret = sbx_fail (err, ENOMEM, "list %s", norm);
          break;
        }
      struct sbx_err e2;
      if (entry_at (dirfd (d), names[i], child, e, &e2) < 0)
        {
          l->n--; /* gone meanwhile */
          continue;
        }
      if (e->type == SBX_VOL_DIR && depth > 1)
        {
          cleanup_close int sub = openat (dirfd (d), names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub >= 0)
            ret = list_dir (sub, child, depth - 1, l, err);
        }
    }
  for (size_t i = 0; i < nn; i++)
    free (names[i]);
  free (names);
  closedir (d);
  return ret;
}

int
sbx_volume_list (int root, const char *path, uint32_t depth, struct sbx_volume_entry **v, size_t *n,
                 struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0)
    return -1;
  if (depth < 1)
    depth = 1;
  if (depth > SBX_VOLUME_DEPTH_MAX)
    return sbx_failk (err, SBX_E_INVALID, "depth must be at most %d", SBX_VOLUME_DEPTH_MAX);
  cleanup_close int fd = resolve (root, norm, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return fail_path (err, errno, norm);
  struct listing l = { 0 };
  if (list_dir (fd, norm, depth, &l, err) < 0)
    {
      sbx_volume_entries_free (l.v, l.n);
      return -1;
    }
  *v = l.v;
  *n = l.n;
  return 0;
}

static int
meta_check (const struct sbx_volume_meta *m, struct sbx_err *err)
{
  if (m == NULL)
    return 0;
  if (m->uid > SBX_VOLUME_ID_MAX || m->gid > SBX_VOLUME_ID_MAX)
    return sbx_failk (err, SBX_E_INVALID, "uid and gid must be 0 to %d", SBX_VOLUME_ID_MAX);
  if (m->mode > 07777)
    return sbx_failk (err, SBX_E_INVALID, "mode must be at most 07777");
  return 0;
}

/* Apply M to FD (opened on the entry itself, not O_PATH). */
static int
meta_apply (int fd, const struct sbx_volume_meta *m, const char *norm, struct sbx_err *err)
{
  if (m == NULL)
    return 0;
  if ((m->uid >= 0 || m->gid >= 0)
      && fchown (fd, m->uid >= 0 ? (uid_t) m->uid : (uid_t) -1, m->gid >= 0 ? (gid_t) m->gid : (gid_t) -1) < 0)
    return sbx_fail (err, errno, "chown %s", norm);
  /* after chown, which clears set-id bits */
  if (m->mode >= 0 && fchmod (fd, (mode_t) m->mode) < 0)
    return sbx_fail (err, errno, "chmod %s", norm);
  return 0;
}

static int
mkdir_one (int root, const char *norm, mode_t mode, struct sbx_err *err)
{
  const char *name;
  cleanup_close int parent = open_parent (root, norm, &name, err);
  if (parent < 0)
    return -1;
  if (mkdirat (parent, name, mode) < 0)
    {
      if (errno == EEXIST)
        return sbx_failk (err, SBX_E_CONFLICT, "path %s already exists", norm);
      return fail_path (err, errno, norm);
    }
  return 0;
}

int
sbx_volume_mkdir (int root, const char *path, const struct sbx_volume_meta *m, bool parents,
                  struct sbx_volume_entry *out, struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0 || meta_check (m, err) < 0)
    return -1;
  if (parents)
    for (char *s = strchr (norm + 1, '/'); s; s = strchr (s + 1, '/'))
      {
        *s = '\0';
        struct sbx_err e2;
        int r = mkdir_one (root, norm, 0755, &e2);
        *s = '/';
        if (r < 0 && sbx_err_kind (&e2) != SBX_E_CONFLICT)
          {
            *err = e2;
            return -1;
          }
      }
  if (mkdir_one (root, norm, 0755, err) < 0)
    return -1;
  cleanup_close int fd = resolve (root, norm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  struct stat st;
  if (fd < 0)
    return fail_path (err, errno, norm);
  if (meta_apply (fd, m, norm, err) < 0)
    return -1;
  if (fstat (fd, &st) < 0)
    return sbx_fail (err, errno, "stat %s", norm);
  return entry_fill (fd, norm, &st, out, err);
}

int
sbx_volume_write (int root, const char *path, const void *data, size_t len, const struct sbx_volume_meta *m,
                  struct sbx_volume_entry *out, struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0 || meta_check (m, err) < 0)
    return -1;
  const char *name;
  cleanup_close int parent = open_parent (root, norm, &name, err);
  if (parent < 0)
    return -1;
  /* written beside it and renamed over it: a reader never sees half a
     file, and what stood there (even a FIFO or a directory's name taken
     by a symlink) is replaced, never opened */
  char tmp[64];
  unsigned char rnd[8];
  if (sbx_random_bytes (rnd, sizeof rnd) < 0)
    return sbx_fail (err, errno, "getrandom");
  snprintf (tmp, sizeof tmp, ".sbxd-upload-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
            rnd[4], rnd[5], rnd[6], rnd[7]);
  cleanup_close int fd = openat (parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail_path (err, errno, norm);
  struct stat st;
  if (sbx_write_full (fd, data, len) < 0)
    {
      sbx_fail (err, errno, "write %s", norm);
      unlinkat (parent, tmp, 0);
      return -1;
    }
  if (meta_apply (fd, m, norm, err) < 0 || (fstat (fd, &st) < 0 && sbx_fail (err, errno, "stat %s", norm) < 0))
    {
      unlinkat (parent, tmp, 0);
      return -1;
    }
  struct stat old;
  if (fstatat (parent, name, &old, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR (old.st_mode))
    {
      unlinkat (parent, tmp, 0);
      return sbx_failk (err, SBX_E_CONFLICT, "path %s is a directory", norm);
    }
  if (renameat (parent, tmp, parent, name) < 0)
    {
      int e = errno;
      unlinkat (parent, tmp, 0);
      return fail_path (err, e, norm);
    }
  return entry_fill (fd, norm, &st, out, err);
}

int
sbx_volume_open_read (int root, const char *path, uint64_t *size, struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0)
    return -1;
  int fd = resolve (root, norm, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return fail_path (err, errno, norm);
  struct stat st;
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      close (fd);
      return S_ISDIR (st.st_mode) ? sbx_failk (err, SBX_E_INVALID, "path %s is a directory", norm)
                                  : sbx_failk (err, SBX_E_INVALID, "path %s is not a regular file", norm);
    }
  *size = (uint64_t) st.st_size;
  return fd;
}

/* Remove everything in directory DIR, DEPTH levels at most. */
static int
empty_dir (int dir, uint32_t depth, const char *norm, struct sbx_err *err)
{
  if (depth == 0)
    return sbx_failk (err, SBX_E_TOO_LARGE, "%s is more than %d levels deep", norm, SBX_VOLUME_DEPTH_MAX);
  int dfd = openat (dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return sbx_fail (err, errno, "open %s", norm);
  DIR *d = fdopendir (dfd);
  if (d == NULL)
    {
      close (dfd);
      return sbx_fail (err, errno, "open %s", norm);
    }
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (unlinkat (dirfd (d), de->d_name, 0) == 0 || errno == ENOENT)
        continue;
      if (errno != EISDIR && errno != EPERM)
        {
          ret = sbx_fail (err, errno, "remove in %s", norm);
          break;
        }
      cleanup_close int sub = openat (dirfd (d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0)
        {
          ret = sbx_fail (err, errno, "remove in %s", norm);
          break;
        }
      ret = empty_dir (sub, depth - 1, norm, err);
      if (ret == 0 && unlinkat (dirfd (d), de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        ret = sbx_fail (err, errno, "remove in %s", norm);
      rewinddir (d);
    }
  closedir (d);
  return ret;
}

int
sbx_volume_remove (int root, const char *path, struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0)
    return -1;
  const char *name;
  cleanup_close int parent = open_parent (root, norm, &name, err);
  if (parent < 0)
    return -1;
  struct stat st;
  if (fstatat (parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return fail_path (err, errno, norm);
  if (!S_ISDIR (st.st_mode))
    return unlinkat (parent, name, 0) == 0 ? 0 : fail_path (err, errno, norm);
  cleanup_close int dir = openat (parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0)
    return fail_path (err, errno, norm);
  if (empty_dir (dir, SBX_VOLUME_DEPTH_MAX, norm, err) < 0)
    return -1;
  return unlinkat (parent, name, AT_REMOVEDIR) == 0 ? 0 : fail_path (err, errno, norm);
}

int
sbx_volume_set_meta (int root, const char *path, const struct sbx_volume_meta *m, struct sbx_volume_entry *out,
                     struct sbx_err *err)
{
  char norm[SBX_VOLUME_PATH_MAX];
  if (normalise (path, norm, err) < 0 || meta_check (m, err) < 0)
    return -1;
  /* not O_PATH: fchown and fchmod need a real open; O_NONBLOCK so that a
     FIFO does not wait for a writer */
  cleanup_close int fd = resolve (root, norm, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return fail_path (err, errno, norm);
  struct stat st;
  if (meta_apply (fd, m, norm, err) < 0)
    return -1;
  if (fstat (fd, &st) < 0)
    return sbx_fail (err, errno, "stat %s", norm);
  return entry_fill (-1, norm, &st, out, err);
}
