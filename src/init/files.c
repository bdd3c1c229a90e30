/*
 * files.c - file operations of the agent, run in a worker forked per
 * request (so a large transfer never stalls process I/O in PID 1).
 *
 * The worker first becomes the requested user, so permissions inside the
 * sandbox apply as they would to that user's own programs.  Every path is
 * resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) against the
 * sandbox root: "..", absolute symlinks and symlinks swapped in the middle
 * of an operation all stay inside the root.  Operations that name an entry
 * (create, rename, remove) first resolve the parent directory that way and
 * then act on a single final component relative to that directory fd, with
 * AT_SYMLINK_NOFOLLOW semantics, so no path is ever joined as a string.
 */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../common/util.h"
#include "users.h"

#define MAX_DEPTH 64

static int root_fd = -1;
static const char *home = "/";

static int
open_in_root (const char *path, int flags, mode_t mode)
{
  struct open_how how = { .flags = (uint64_t) flags | O_CLOEXEC,
                          .mode = (flags & O_CREAT) ? mode : 0,
                          .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
  for (;;)
    {
      long r = syscall (SYS_openat2, root_fd, path, &how, sizeof how);
      if (r < 0 && errno == EAGAIN)
        continue; /* a rename raced with the lookup: try again */
      return (int) r;
    }
}

/* Make PATH absolute against the user's home and split it into the parent
   directory and the last component.  "/" has no parent: returns -1. */
static int
split_path (const char *path, char *abs, size_t n, char **parent, char **base)
{
  if (path == NULL || *path == '\0')
    {
      errno = EINVAL;
      return -1;
    }
  int w = path[0] == '/' ? snprintf (abs, n, "%s", path) : snprintf (abs, n, "%s/%s", home, path);
  if (w < 0 || (size_t) w >= n)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  /* drop trailing slashes */
  size_t len = strlen (abs);
  while (len > 1 && abs[len - 1] == '/')
    abs[--len] = '\0';
  char *slash = strrchr (abs, '/');
  if (slash == NULL || slash[1] == '\0')
    {
      errno = EINVAL;
      return -1;
    }
  *base = slash + 1;
  if (strcmp (*base, ".") == 0 || strcmp (*base, "..") == 0)
    {
      errno = EINVAL;
      return -1;
    }
  *slash = '\0';
  *parent = slash == abs ? "/" : abs;
  return 0;
}

static const char *
resolve_abs (const char *path, char *abs, size_t n)
{
  int w = path[0] == '/' ? snprintf (abs, n, "%s", path) : snprintf (abs, n, "%s/%s", home, path);
  if (w < 0 || (size_t) w >= n)
    return NULL;
  return abs;
}

/* mkdir -p inside the root: each level is created relative to the fd of
   the level above it, itself opened with RESOLVE_IN_ROOT. */
static int
mkdir_parents (const char *dir, mode_t mode)
{
  char buf[4096];
  if (snprintf (buf, sizeof buf, "%s", dir) >= (int) sizeof buf)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  if (strcmp (buf, "/") == 0)
    return 0; /* the root is there: nothing to make (mkdirat of "" would fail) */
  for (char *p = buf + 1;; p++)
    {
      if (*p != '/' && *p != '\0')
        continue;
      char saved = *p;
      *p = '\0';
      char *slash = strrchr (buf, '/');
      *slash = '\0';
      int pfd = open_in_root (slash == buf ? "/" : buf, O_PATH | O_DIRECTORY, 0);
      *slash = '/';
      if (pfd < 0)
        return -1;
      int r = mkdirat (pfd, slash + 1, mode);
      int e = errno;
      close (pfd);
      if (r < 0 && e != EEXIST)
        {
          errno = e;
          return -1;
        }
      *p = saved;
      if (saved == '\0')
        return 0;
    }
}

/* Resolve PATH's parent directory inside the root, creating it first when
   FLAGS has SBX_FILE_F_PARENTS.  ORIG gets the absolute path and *BASE its
   last component (pointing into ABS).  On failure the error has been sent
   to CONN and -1 is returned. */
static int
open_parent (int conn, const char *path, uint32_t flags, char orig[4096], char abs[4096], char **base)
{
  char *parent;
  errno = 0;
  if (resolve_abs (path, orig, 4096) == NULL || split_path (orig, abs, 4096, &parent, base) < 0)
    {
      sbx_msg_send_error (conn, errno ? errno : EINVAL, "invalid path %s", path);
      return -1;
    }
  if ((flags & SBX_FILE_F_PARENTS) && mkdir_parents (parent, 0755) < 0)
    {
      sbx_msg_send_error (conn, errno, "create parents of %s: %s", path, strerror (errno));
      return -1;
    }
  int pfd = open_in_root (parent, O_PATH | O_DIRECTORY, 0);
  if (pfd < 0)
    sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  return pfd;
}

/* The metadata of a regular file or directory (its user.e2b.*
   extended attributes) as SBX_T_META fields of M.  The entry is opened
   with O_PATH (nothing is opened for real, a FIFO cannot block) and its
   attributes are read through /proc/self/fd, as there is no *at form of
   listxattr.  Attributes the daemon would refuse (too long, a NUL byte)
   are left out rather than failing the whole entry. */
static void
put_metadata (struct sbx_msg *m, int dirfd, const char *name)
{
  cleanup_close int fd = *name ? openat (dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC) : dup (dirfd);
  if (fd < 0)
    return;
  char proc[64];
  snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
  static char names[65536];
  ssize_t n = listxattr (proc, names, sizeof names);
  if (n <= 0)
    return;
  const size_t plen = strlen (SBX_META_PREFIX);
  unsigned kept = 0;
  for (char *k = names; k < names + n && kept < SBX_META_MAX; k += strlen (k) + 1)
    {
      size_t klen = strlen (k);
      if (klen <= plen || klen - plen > SBX_META_KEY_MAX || strncmp (k, SBX_META_PREFIX, plen) != 0)
        continue;
      char field[SBX_META_KEY_MAX + 1 + SBX_META_VALUE_MAX + 1];
      memcpy (field, k + plen, klen - plen + 1);
      char *value = field + (klen - plen) + 1;
      ssize_t vl = getxattr (proc, k, value, SBX_META_VALUE_MAX);
      if (vl < 0 || memchr (value, '\0', (size_t) vl) != NULL)
        continue;
      sbx_msg_put (m, SBX_T_META, field, (klen - plen) + 1 + (size_t) vl);
      kept++;
    }
}

static void
send_entry (int conn, int dirfd, const char *name, const char *path)
{
  struct stat st;
  if (fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH)) < 0)
    return;
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  const char *slash = strrchr (path, '/');
  sbx_msg_put_str (&m, SBX_T_NAME, slash && slash[1] ? slash + 1 : path);
  sbx_msg_put_str (&m, SBX_T_PATH, path);
  uint32_t type = S_ISREG (st.st_mode)   ? SBX_FT_FILE
                  : S_ISDIR (st.st_mode) ? SBX_FT_DIR
                  : S_ISLNK (st.st_mode) ? SBX_FT_SYMLINK
                                         : SBX_FT_OTHER;
  sbx_msg_put_u32 (&m, SBX_T_TYPE, type);
  sbx_msg_put_u64 (&m, SBX_T_SIZE, (uint64_t) st.st_size);
  sbx_msg_put_u32 (&m, SBX_T_MODE, st.st_mode);
  sbx_msg_put_u32 (&m, SBX_T_UID, st.st_uid);
  sbx_msg_put_u32 (&m, SBX_T_GID, st.st_gid);
  char nm[64];
  sbx_uid_name (st.st_uid, nm, sizeof nm);
  sbx_msg_put_str (&m, SBX_T_OWNER, nm);
  sbx_gid_name (st.st_gid, nm, sizeof nm);
  sbx_msg_put_str (&m, SBX_T_GROUP, nm);
  sbx_msg_put_u64 (&m, SBX_T_MTIME, (uint64_t) st.st_mtim.tv_sec * 1000000000ull + (uint64_t) st.st_mtim.tv_nsec);
  if (S_ISREG (st.st_mode) || S_ISDIR (st.st_mode))
    put_metadata (&m, dirfd, name);
  if (S_ISLNK (st.st_mode))
    {
      char target[4096];
      ssize_t n = readlinkat (dirfd, name, target, sizeof target - 1);
      if (n >= 0)
        {
          target[n] = '\0';
          sbx_msg_put_str (&m, SBX_T_LINK, target);
        }
    }
  sbx_msg_send (conn, &m);
  sbx_msg_free (&m);
}

static int
op_stat (int conn, const char *path)
{
  char abs[4096], orig[4096];
  char *base;
  if (resolve_abs (path, orig, sizeof orig) == NULL)
    return sbx_msg_send_error (conn, ENAMETOOLONG, "path too long");
  if (strcmp (orig, "/") == 0)
    {
      send_entry (conn, root_fd, "", "/");
      return sbx_msg_send_ok (conn);
    }
  cleanup_close int pfd = open_parent (conn, path, 0, orig, abs, &base);
  if (pfd < 0)
    return -1;
  struct stat st;
  if (fstatat (pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  send_entry (conn, pfd, base, orig);
  return sbx_msg_send_ok (conn);
}

static int
name_cmp (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* A directory's names, sorted byte-wise (listings are in name order, as
   E2B's, which walks directories in lexical order).  At most
   LIST_NAMES_MAX: the daemon takes no more entries in a listing
   anyway, so a larger directory fails there as too large. */
#define LIST_NAMES_MAX 100001u

static char **
sorted_names (int dfd, size_t *n)
{
  *n = 0;
  int fd = dup (dfd);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  if (d == NULL)
    {
      if (fd >= 0)
        close (fd);
      return NULL;
    }
  char **v = NULL;
  size_t cap = 0;
  struct dirent *e;
  while (*n < LIST_NAMES_MAX && (e = readdir (d)) != NULL)
    {
      if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
        continue;
      char *name = strdup (e->d_name);
      char **slot = name ? sbx_grow (&v, n, &cap, sizeof *v) : NULL;
      if (slot == NULL)
        {
          free (name);
          break;
        }
      *slot = name;
    }
  closedir (d);
  if (*n)
    qsort (v, *n, sizeof *v, name_cmp);
  return v;
}

static void
list_dir (int conn, int dfd, const char *path, unsigned depth)
{
  size_t n;
  char **names = sorted_names (dfd, &n);
  for (size_t i = 0; i < n; i++)
    {
      char child[4096];
      if (snprintf (child, sizeof child, "%s/%s", strcmp (path, "/") ? path : "", names[i]) < (int) sizeof child)
        {
          send_entry (conn, dfd, names[i], child);
          if (depth > 1)
            {
              /* descend without following symlinks */
              int cfd = openat (dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
              if (cfd >= 0)
                {
                  list_dir (conn, cfd, child, depth - 1);
                  close (cfd);
                }
            }
        }
      free (names[i]);
    }
  free (names);
}

/* Open directory PATH inside the root; ABS gets its absolute form.  On
   failure the error has been sent and -1 is returned. */
static int
open_dir (int conn, const char *path, char abs[4096])
{
  if (resolve_abs (path, abs, 4096) == NULL)
    {
      sbx_msg_send_error (conn, ENAMETOOLONG, "path too long");
      return -1;
    }
  int fd = open_in_root (abs, O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0)
    sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  return fd;
}

static int
op_list (int conn, const char *path, unsigned depth)
{
  char abs[4096];
  cleanup_close int fd = open_dir (conn, path, abs);
  if (fd < 0)
    return -1;
  list_dir (conn, fd, abs, depth ? (depth > MAX_DEPTH ? MAX_DEPTH : depth) : 1);
  return sbx_msg_send_ok (conn);
}

/* What a file that is neither regular nor a directory is, for errors. */
static const char *
special_kind (mode_t mode)
{
  return S_ISFIFO (mode)  ? "a named pipe (FIFO)"
         : S_ISSOCK (mode) ? "a socket"
         : S_ISCHR (mode)  ? "a character device"
         : S_ISBLK (mode)  ? "a block device"
                           : "a special file";
}

/* The files API moves the content of regular files only: reading a FIFO
   would wait for a writer, a device could be endless or act on being
   opened.  EINVAL, which the daemon answers with 400. */
static int
refuse_special (int conn, const char *path, mode_t mode)
{
  return sbx_msg_send_error (conn, EINVAL, "%s is %s, not a regular file", path, special_kind (mode));
}

static int
op_read (int conn, const char *path)
{
  char abs[4096];
  if (resolve_abs (path, abs, sizeof abs) == NULL)
    return sbx_msg_send_error (conn, ENAMETOOLONG, "path too long");
  /* look before opening: an O_PATH descriptor opens nothing, so a FIFO
     cannot block and a device is never opened */
  struct stat st;
  {
    cleanup_close int pfd = open_in_root (abs, O_PATH, 0);
    if (pfd < 0 || fstat (pfd, &st) < 0)
      return sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  }
  if (S_ISDIR (st.st_mode))
    return sbx_msg_send_error (conn, EISDIR, "%s: %s", path, strerror (EISDIR));
  if (!S_ISREG (st.st_mode))
    return refuse_special (conn, path, st.st_mode);
  /* O_NONBLOCK in case a FIFO took the file's place meanwhile */
  cleanup_close int fd = open_in_root (abs, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
  if (fd < 0)
    return sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  if (fstat (fd, &st) < 0)
    return sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  if (!S_ISREG (st.st_mode))
    return S_ISDIR (st.st_mode) ? sbx_msg_send_error (conn, EISDIR, "%s: %s", path, strerror (EISDIR))
                                : refuse_special (conn, path, st.st_mode);
  /* first an entry, so the caller knows the size before the data */
  send_entry (conn, fd, "", abs);
  static char buf[SBX_PROTO_CHUNK];
  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return sbx_msg_send_error (conn, errno, "read %s: %s", path, strerror (errno));
      if (n == 0)
        break;
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_DATA);
      sbx_msg_put (&m, SBX_T_DATA, buf, (size_t) n);
      int r = sbx_msg_send (conn, &m);
      sbx_msg_free (&m);
      if (r < 0)
        return -1;
    }
  return sbx_msg_send_ok (conn);
}

/* Write: data arrives in REQ_DATA frames up to REQ_EOF; it goes to a new
   file next to the target that replaces the target only when complete. */
/* The owner and mode a restore asks for (SBX_FILE_F_OWNER), given to what
   a write, mkdir or symlink creates. */
struct owner {
  bool set;
  uid_t uid;
  gid_t gid;
};

/* Set the metadata of REQ (SBX_T_META fields) on FD: user.e2b.KEY for
   each.  A file system without user attributes keeps the file without
   them, as E2B's envd does; 0 or an errno. */
static int
set_metadata (int fd, const struct sbx_msg *req)
{
  size_t pos = 0;
  uint8_t tag;
  const uint8_t *d;
  uint32_t l;
  unsigned n = 0;
  while (sbx_msg_next (req, &pos, &tag, &d, &l) == 1)
    {
      if (tag != SBX_T_META)
        continue;
      const uint8_t *nul = memchr (d, '\0', l);
      size_t klen = nul ? (size_t) (nul - d) : 0;
      size_t vlen = nul ? l - klen - 1 : 0;
      if (nul == NULL || klen == 0 || klen > SBX_META_KEY_MAX || vlen > SBX_META_VALUE_MAX || ++n > SBX_META_MAX)
        return EINVAL;
      char name[sizeof SBX_META_PREFIX + SBX_META_KEY_MAX];
      snprintf (name, sizeof name, "%s%.*s", SBX_META_PREFIX, (int) klen, (const char *) d);
      if (fsetxattr (fd, name, nul + 1, vlen, 0) < 0)
        {
          if (errno == ENOTSUP)
            return 0;
          return errno;
        }
    }
  return 0;
}

static int
op_write (int conn, const struct sbx_msg *req, const char *path, uint32_t flags, uint32_t mode,
          const struct owner *own)
{
  char abs[4096], orig[4096], tmpname[64];
  char *base;
  cleanup_close int pfd = open_parent (conn, path, flags, orig, abs, &base);
  if (pfd < 0)
    return -1;
  struct stat old;
  int have_old = fstatat (pfd, base, &old, AT_SYMLINK_NOFOLLOW) == 0;
  if (have_old && S_ISDIR (old.st_mode))
    return sbx_msg_send_error (conn, EISDIR, "%s: %s", path, strerror (EISDIR));
  if (have_old && !S_ISREG (old.st_mode) && !S_ISLNK (old.st_mode))
    return refuse_special (conn, path, old.st_mode);
  int fd = -1;
  for (int tries = 0; tries < 16 && fd < 0; tries++)
    {
      unsigned char rnd[6];
      sbx_random_bytes (rnd, sizeof rnd);
      /* "w" when it replaces a file: a watch reports that rename as a
         write, as the file was rewritten (op_watch) */
      snprintf (tmpname, sizeof tmpname, ".sbxd-%c%02x%02x%02x%02x%02x%02x", have_old ? 'w' : 'c', rnd[0], rnd[1],
                rnd[2], rnd[3], rnd[4], rnd[5]);
      fd = openat (pfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0 && errno != EEXIST)
        break;
    }
  if (fd < 0)
    return sbx_msg_send_error (conn, errno, "create %s: %s", path, strerror (errno));
  mode_t final_mode = have_old && S_ISREG (old.st_mode) ? (old.st_mode & 07777) : (mode ? mode & 07777 : 0644);
  if (own->set)
    final_mode = mode & 07777;

  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  int err = 0;
  for (;;)
    {
      int r = sbx_msg_recv (conn, &m);
      if (r != 1)
        {
          err = r == 0 ? EPIPE : errno;
          break;
        }
      if (m.type == SBX_REQ_EOF)
        break;
      const uint8_t *d;
      uint32_t l;
      if (m.type != SBX_REQ_DATA || !sbx_msg_get (&m, SBX_T_DATA, &d, &l))
        {
          err = EPROTO;
          break;
        }
      if (sbx_write_full (fd, d, l) < 0)
        {
          err = errno;
          break;
        }
    }
  sbx_msg_free (&m);
  if (err == 0)
    err = set_metadata (fd, req);
  /* owner before mode: chown clears the set-id bits */
  if (err == 0 && own->set && fchown (fd, own->uid, own->gid) < 0)
    err = errno;
  if (err == 0 && fchmod (fd, final_mode) < 0)
    err = errno;
  if (err == 0 && !own->set && have_old && S_ISREG (old.st_mode) && (old.st_uid != getuid () || old.st_gid != getgid ()))
    {
      /* keep the owner of a replaced file when we are allowed to */
      if (fchown (fd, old.st_uid, old.st_gid) < 0 && errno != EPERM)
        err = errno;
    }
  if (close (fd) < 0 && err == 0)
    err = errno;
  if (err == 0 && renameat (pfd, tmpname, pfd, base) < 0)
    err = errno;
  if (err)
    {
      unlinkat (pfd, tmpname, 0);
      return sbx_msg_send_error (conn, err, "write %s: %s", path, strerror (err));
    }
  send_entry (conn, pfd, base, orig);
  return sbx_msg_send_ok (conn);
}

static int
op_mkdir (int conn, const char *path, uint32_t flags, uint32_t mode, const struct owner *own)
{
  char abs[4096], orig[4096];
  char *base;
  cleanup_close int pfd = open_parent (conn, path, flags, orig, abs, &base);
  if (pfd < 0)
    return -1;
  if (mkdirat (pfd, base, mode ? mode & 07777 : 0755) < 0)
    {
      int e = errno;
      struct stat st;
      if (!(e == EEXIST && (flags & SBX_FILE_F_EXIST_OK) && fstatat (pfd, base, &st, 0) == 0 && S_ISDIR (st.st_mode)))
        return sbx_msg_send_error (conn, e, "mkdir %s: %s", path, strerror (e));
    }
  if (own->set)
    {
      /* on the directory itself, never through a symlink put in its place */
      cleanup_close int dfd = openat (pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (dfd < 0 || fchown (dfd, own->uid, own->gid) < 0 || fchmod (dfd, mode & 07777) < 0)
        return sbx_msg_send_error (conn, errno, "mkdir %s: %s", path, strerror (errno));
    }
  send_entry (conn, pfd, base, orig);
  return sbx_msg_send_ok (conn);
}

static int
op_symlink (int conn, const char *path, const char *target, uint32_t flags, const struct owner *own)
{
  char abs[4096], orig[4096];
  char *base;
  cleanup_close int pfd = open_parent (conn, path, flags, orig, abs, &base);
  if (pfd < 0)
    return -1;
  if (symlinkat (target, pfd, base) < 0
      || (own->set && fchownat (pfd, base, own->uid, own->gid, AT_SYMLINK_NOFOLLOW) < 0))
    return sbx_msg_send_error (conn, errno, "symlink %s: %s", path, strerror (errno));
  send_entry (conn, pfd, base, orig);
  return sbx_msg_send_ok (conn);
}

static int
op_move (int conn, const char *from, const char *to, uint32_t flags)
{
  char a1[4096], o1[4096], a2[4096], o2[4096];
  char *b1, *b2;
  cleanup_close int f1 = open_parent (conn, from, 0, o1, a1, &b1);
  if (f1 < 0)
    return -1;
  cleanup_close int f2 = open_parent (conn, to, flags, o2, a2, &b2);
  if (f2 < 0)
    return -1;
  if (renameat (f1, b1, f2, b2) < 0)
    return sbx_msg_send_error (conn, errno, "move %s to %s: %s", from, to, strerror (errno));
  send_entry (conn, f2, b2, o2);
  return sbx_msg_send_ok (conn);
}

/* rm -rf of NAME inside directory DFD; never follows symlinks and never
   leaves the file system it started on. */
static int
remove_at (int dfd, const char *name, dev_t dev, int level)
{
  if (unlinkat (dfd, name, 0) == 0)
    return 0;
  if (errno != EISDIR && errno != EPERM)
    return -1;
  if (level > 256)
    {
      errno = ELOOP;
      return -1;
    }
  int fd = openat (dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  if (fstat (fd, &st) < 0 || st.st_dev != dev)
    {
      close (fd);
      errno = EXDEV;
      return -1;
    }
  DIR *d = fdopendir (fd);
  if (d == NULL)
    {
      close (fd);
      return -1;
    }
  struct dirent *e;
  int rc = 0;
  while ((e = readdir (d)) != NULL)
    {
      if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
        continue;
      if (remove_at (dirfd (d), e->d_name, dev, level + 1) < 0)
        rc = -1;
    }
  int saved = errno;
  closedir (d);
  if (rc < 0)
    {
      errno = saved;
      return -1;
    }
  return unlinkat (dfd, name, AT_REMOVEDIR);
}

static int
op_remove (int conn, const char *path)
{
  char abs[4096], orig[4096];
  char *base;
  cleanup_close int pfd = open_parent (conn, path, 0, orig, abs, &base);
  if (pfd < 0)
    return -1;
  struct stat st;
  if (fstatat (pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return sbx_msg_send_error (conn, errno, "%s: %s", path, strerror (errno));
  if (remove_at (pfd, base, st.st_dev, 0) < 0)
    return sbx_msg_send_error (conn, errno, "remove %s: %s", path, strerror (errno));
  return sbx_msg_send_ok (conn);
}


/* ---- watching a directory ---- */

#define WATCH_MAX 8192

struct watch_dir {
  int wd;
  char rel[1024]; /* relative to the watched directory, "" for itself */
};

static struct watch_dir *watches;
static int n_watches;

static int
watch_send (int conn, const char *name, uint32_t type)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_FSEVENT);
  sbx_msg_put_str (&m, SBX_T_NAME, name);
  sbx_msg_put_u32 (&m, SBX_T_TYPE, type);
  int r = sbx_msg_send (conn, &m);
  sbx_msg_free (&m);
  return r;
}

/* Watch DFD (a directory known as REL); with RECURSIVE, its
   subdirectories too.  The watch is added through /proc/self/fd so that
   the directory is the one already resolved inside the root.  A directory
   that appeared while watched is added with REPORT, the connection: what
   was made in it before its watch was in place (mkdir d && echo x > d/f)
   is reported on it as created, and a file with data as written too. */
static void
watch_add (int ifd, int dfd, const char *rel, bool recursive, int level, int report)
{
  if (n_watches >= WATCH_MAX || level > 32)
    return;
  char path[64];
  snprintf (path, sizeof path, "/proc/self/fd/%d", dfd);
  int wd = inotify_add_watch (ifd, path,
                              IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB
                                  | IN_DELETE_SELF | IN_ONLYDIR);
  if (wd < 0)
    return;
  watches[n_watches].wd = wd;
  snprintf (watches[n_watches].rel, sizeof watches[n_watches].rel, "%s", rel);
  n_watches++;
  if (!recursive)
    return;
  int fd = dup (dfd);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  if (d == NULL)
    {
      if (fd >= 0)
        close (fd);
      return;
    }
  struct dirent *e;
  while ((e = readdir (d)) != NULL)
    {
      if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
        continue;
      char crel[1024];
      snprintf (crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
      struct stat st;
      if (report >= 0 && strncmp (e->d_name, ".sbxd-", 6) != 0
          && fstatat (dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        {
          watch_send (report, crel, SBX_FS_CREATE);
          if (S_ISREG (st.st_mode) && st.st_size > 0)
            watch_send (report, crel, SBX_FS_WRITE);
        }
      int cfd = openat (dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0)
        continue;
      watch_add (ifd, cfd, crel, true, level + 1, report);
      close (cfd);
    }
  closedir (d);
}

static const char *
watch_rel (int wd)
{
  for (int i = 0; i < n_watches; i++)
    if (watches[i].wd == wd)
      return watches[i].rel;
  return NULL;
}

static int
op_watch (int conn, const char *path, bool recursive)
{
  char abs[4096];
  cleanup_close int dfd = open_dir (conn, path, abs);
  if (dfd < 0)
    return -1;
  cleanup_close int ifd = inotify_init1 (IN_CLOEXEC);
  watches = calloc (WATCH_MAX, sizeof *watches);
  if (ifd < 0 || watches == NULL)
    return sbx_msg_send_error (conn, errno, "watch %s: %s", path, strerror (errno));
  watch_add (ifd, dfd, "", recursive, 0, -1);
  if (n_watches == 0)
    return sbx_msg_send_error (conn, errno, "watch %s: %s", path, strerror (errno));
  if (sbx_msg_send_ok (conn) < 0)
    return -1;
  static char buf[65536] __attribute__ ((aligned (__alignof__ (struct inotify_event))));
  /* the cookie of the last rename away from a temporary file of a write
     that replaces a file (".sbxd-w..."): its arrival is a WRITE */
  uint32_t rewrite_cookie = 0;
  for (;;)
    {
      struct pollfd pf[2] = { { ifd, POLLIN, 0 }, { conn, POLLIN | POLLRDHUP, 0 } };
      if (poll (pf, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      if (pf[1].revents)
        return 0; /* the daemon hung up: the watch is over */
      ssize_t n = read (ifd, buf, sizeof buf);
      if (n <= 0)
        continue;
      for (char *p = buf; p < buf + n;)
        {
          struct inotify_event *ev = (struct inotify_event *) p;
          p += sizeof *ev + ev->len;
          const char *rel = watch_rel (ev->wd);
          if (rel == NULL || ev->len == 0)
            continue;
          uint32_t type = ev->mask & (IN_CREATE | IN_MOVED_TO)  ? SBX_FS_CREATE
                          : ev->mask & IN_MODIFY                ? SBX_FS_WRITE
                          : ev->mask & IN_DELETE                ? SBX_FS_REMOVE
                          : ev->mask & IN_MOVED_FROM            ? SBX_FS_RENAME
                          : ev->mask & IN_ATTRIB                ? SBX_FS_CHMOD
                                                                : 0;
          /* our own temporary files of atomic writes are not news */
          if (type == 0 || strncmp (ev->name, ".sbxd-", 6) == 0)
            {
              if ((ev->mask & IN_MOVED_FROM) && ev->cookie && strncmp (ev->name, ".sbxd-w", 7) == 0)
                rewrite_cookie = ev->cookie;
              continue;
            }
          if ((ev->mask & IN_MOVED_TO) && ev->cookie && ev->cookie == rewrite_cookie && !(ev->mask & IN_ISDIR))
            type = SBX_FS_WRITE;
          char name[2048];
          snprintf (name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", ev->name);
          if (watch_send (conn, name, type) < 0)
            return 0;
          if (recursive && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
            {
              /* a new directory: watch it too, after its own event */
              int cfd = openat (dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
              if (cfd >= 0)
                {
                  int level = 1;
                  for (const char *c = name; *c; c++)
                    level += *c == '/';
                  watch_add (ifd, cfd, name, true, level, conn);
                  close (cfd);
                }
            }
        }
    }
}

void
sbx_files_serve (int conn, struct sbx_msg *req)
{
  char *user = sbx_msg_strdup (req, SBX_T_USER);
  struct sbx_user u;
  if (sbx_user_lookup (user ? user : "root", &u) < 0)
    {
      sbx_msg_send_error (conn, EINVAL, "unknown user %s", user ? user : "root");
      return;
    }
  if (sbx_user_become (&u) < 0)
    {
      sbx_msg_send_error (conn, errno, "cannot switch to user %s: %s", u.name, strerror (errno));
      return;
    }
  umask (022);
  home = u.home;
  root_fd = open ("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  char *path = sbx_msg_strdup (req, SBX_T_PATH);
  char *path2 = sbx_msg_strdup (req, SBX_T_PATH2);
  uint32_t op = sbx_msg_u32 (req, SBX_T_OP, 0);
  uint32_t flags = sbx_msg_u32 (req, SBX_T_FLAGS, 0);
  uint32_t mode = sbx_msg_u32 (req, SBX_T_MODE, 0);
  struct owner own = { (flags & SBX_FILE_F_OWNER) != 0, (uid_t) sbx_msg_u32 (req, SBX_T_UID, 0),
                       (gid_t) sbx_msg_u32 (req, SBX_T_GID, 0) };
  if (path == NULL || *path == '\0' || strlen (path) >= 4096)
    {
      sbx_msg_send_error (conn, EINVAL, "a path is required");
      return;
    }
  if (req->type == SBX_REQ_WATCH)
    {
      op_watch (conn, path, (flags & SBX_FILE_F_RECURSIVE) != 0);
      return;
    }
  switch (op)
    {
    case SBX_FILE_READ:
      op_read (conn, path);
      break;
    case SBX_FILE_WRITE:
      op_write (conn, req, path, flags, mode, &own);
      break;
    case SBX_FILE_STAT:
      op_stat (conn, path);
      break;
    case SBX_FILE_LIST:
      op_list (conn, path, sbx_msg_u32 (req, SBX_T_DEPTH, 1));
      break;
    case SBX_FILE_MKDIR:
      op_mkdir (conn, path, flags, mode, &own);
      break;
    case SBX_FILE_SYMLINK:
      if (path2 == NULL || *path2 == '\0')
        sbx_msg_send_error (conn, EINVAL, "a target is required");
      else
        op_symlink (conn, path, path2, flags, &own);
      break;
    case SBX_FILE_MOVE:
      if (path2 == NULL || *path2 == '\0')
        sbx_msg_send_error (conn, EINVAL, "a destination is required");
      else
        op_move (conn, path, path2, flags);
      break;
    case SBX_FILE_REMOVE:
      op_remove (conn, path);
      break;
    default:
      sbx_msg_send_error (conn, EINVAL, "unknown file operation %u", op);
    }
}
