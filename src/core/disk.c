/*
 * disk.c - per-sandbox disks (see disk.h).
 *
 * Why a loop device per sandbox: this machine kind's kernel has no XFS or
 * ext4 quota support (CONFIG_XFS_QUOTA and CONFIG_QFMT_V2 are off), so the
 * only kernel-enforced size limit for a writable layer is the size of the
 * file system it lives on.  A sparse image costs no disk until written.
 */
#include "disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/util.h"

/* A sparse image of SIZE_MB at IMAGE (which must not exist), formatted
   ext4 with mkfs.ext4 -q -F -m 0 and OPTS (NULL-terminated, at most 6);
   KIND names it in errors. */
static int
make_ext4 (const char *image, uint32_t size_mb, const char *kind, const char *const *opts, struct sbx_err *err)
{
  {
    cleanup_close int fd = open (image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
      return sbx_fail (err, errno, "create %s image %s", kind, image);
    if (ftruncate (fd, (off_t) size_mb << 20) < 0)
      return sbx_fail (err, errno, "size %s image %s", kind, image);
  }
  const char *argv[16] = { "mkfs.ext4", "-q", "-F", "-m", "0" };
  size_t n = 5;
  for (; *opts && n < 14; opts++)
    argv[n++] = *opts;
  argv[n++] = image;
  argv[n] = NULL;
  /* posix_spawn, not fork: it shares this process's memory until the
     exec instead of copying the page tables of a daemon of many threads
     and write-protecting its memory for the time the copy lives */
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init (&fa) != 0)
    return sbx_failx (err, ENOMEM, "spawn mkfs");
  posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDWR, 0);
  posix_spawn_file_actions_adddup2 (&fa, 0, 1);
  pid_t pid;
  int r = posix_spawnp (&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  if (r != 0)
    return sbx_fail (err, r, "spawn mkfs.ext4");
  int status;
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return sbx_fail (err, errno, "wait mkfs");
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    return sbx_failx (err, EIO, "mkfs.ext4 %s failed (status %d)", image, status);
  return 0;
}

int
sbx_disk_format (const char *image, uint32_t size_mb, struct sbx_err *err)
{
  /* no journal: the disk lives no longer than the sandbox's processes, so
     there is nothing to recover after a host crash; no blocks reserved
     for growing the file system, which never grows (4 MB less to write
     per disk of 10 GB) */
  static const char *const opts[] = { "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard",
                                      NULL };
  return make_ext4 (image, size_mb, "disk", opts, err);
}

#define LOOP_TRIES 2048

/* *LOOP_NR (if not NULL) gets the device's number. */
static int
loop_attach (int image_fd, bool read_only, char *dev, size_t n, int *loop_nr, struct sbx_err *err)
{
  cleanup_close int ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0)
    return sbx_fail (err, errno, "open /dev/loop-control");
  /* LOOP_CTL_GET_FREE names the lowest free device without taking it, so
     the attaches of a burst are all handed the same one and all but one
     lose the race (EBUSY) and ask again: an attach may lose once to every
     other attach in flight (at most the request threads, the pool's and
     the builders', a few hundred).  64 tries failed a burst of 100
     creates with "no free loop device". */
  for (int tries = 0; tries < LOOP_TRIES; tries++)
    {
      int nr = ioctl (ctl, LOOP_CTL_GET_FREE);
      if (nr < 0)
        return sbx_fail (err, errno, "find a free loop device");
      snprintf (dev, n, "/dev/loop%d", nr);
      int lfd = open (dev, O_RDWR | O_CLOEXEC);
      if (lfd < 0)
        {
          if (errno == ENOENT)
            continue;
          return sbx_fail (err, errno, "open %s", dev);
        }
      struct loop_config cfg;
      memset (&cfg, 0, sizeof cfg);
      cfg.fd = (uint32_t) image_fd;
      cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (read_only ? LO_FLAGS_READ_ONLY : 0);
      if (ioctl (lfd, LOOP_CONFIGURE, &cfg) == 0)
        {
          if (loop_nr)
            *loop_nr = nr;
          return lfd;
        }
      int e = errno;
      close (lfd);
      if (e != EBUSY) /* another process took it first: try the next */
        return sbx_fail (err, e, "configure %s", dev);
    }
  return sbx_failx (err, EBUSY, "no free loop device");
}

static int
disk_mount (const char *image, bool read_only, int *loop_nr, struct sbx_err *err)
{
  cleanup_close int ifd = open (image, (read_only ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_CLOEXEC);
  if (ifd < 0)
    return sbx_fail (err, errno, "open disk image %s", image);
  char dev[64];
  cleanup_close int lfd = loop_attach (ifd, read_only, dev, sizeof dev, loop_nr, err);
  if (lfd < 0)
    return -1;
  cleanup_close int fs = (int) syscall (SYS_fsopen, "ext4", FSOPEN_CLOEXEC);
  if (fs < 0)
    return sbx_fail (err, errno, "fsopen ext4");
  if (syscall (SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0
      /* no background inode table zeroing: it would compete with the
         sandbox for the disk right when it starts */
      || syscall (SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "noinit_itable", NULL, 0) < 0
      || (read_only && syscall (SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0)
      || syscall (SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
    return sbx_fail (err, errno, "mount %s on %s", image, dev);
  int mfd = (int) syscall (SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                           MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (read_only ? MOUNT_ATTR_RDONLY : 0));
  if (mfd < 0)
    return sbx_fail (err, errno, "fsmount %s", dev);
  return mfd;
}

int
sbx_disk_mount (const char *image, int *loop_nr, struct sbx_err *err)
{
  return disk_mount (image, false, loop_nr, err);
}

int
sbx_disk_mount_ro (const char *image, struct sbx_err *err)
{
  return disk_mount (image, true, NULL, err);
}

int
sbx_disk_loop_remove (int loop_nr)
{
  cleanup_close int ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0 || ioctl (ctl, LOOP_CTL_REMOVE, loop_nr) < 0)
    return -errno;
  return 0;
}

void
sbx_disk_loops_each (void (*fn) (int loop_nr, const char *backing, void *ud), void *ud)
{
  DIR *d = opendir ("/sys/block");
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      char *end;
      if (strncmp (de->d_name, "loop", 4) != 0 || de->d_name[4] < '0' || de->d_name[4] > '9')
        continue;
      long nr = strtol (de->d_name + 4, &end, 10);
      if (*end != '\0' || nr > INT32_MAX)
        continue;
      char path[300], backing[PATH_MAX + 16];
      snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", de->d_name);
      cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC); /* only while bound */
      ssize_t n = fd < 0 ? -1 : sbx_read_full (fd, backing, sizeof backing - 1);
      if (n <= 0)
        continue;
      backing[n] = '\0';
      backing[strcspn (backing, "\n")] = '\0';
      fn ((int) nr, backing, ud);
    }
  closedir (d);
}

/* Copy SRC into DST (empty) as it is, holes included.  FICLONE shares the
   blocks on a file system with reflinks (XFS, btrfs): no data moves.
   Elsewhere (ext4) only the allocated ranges are copied, found with
   SEEK_DATA/SEEK_HOLE and moved by copy_file_range inside the kernel, so
   the time is that of the bytes the disk holds, never of its size. */
int
sbx_disk_copy (int src, int dst, uint64_t *bytes, struct sbx_err *err)
{
  struct stat st;
  if (fstat (src, &st) < 0)
    return sbx_fail (err, errno, "stat disk image");
  *bytes = (uint64_t) st.st_blocks * 512;
  if (ioctl (dst, FICLONE, src) == 0)
    return 0;
  if (ftruncate (dst, st.st_size) < 0)
    return sbx_fail (err, errno, "size disk copy");
  off_t off = 0;
  while (off < st.st_size)
    {
      off_t data = lseek (src, off, SEEK_DATA);
      if (data < 0)
        {
          if (errno == ENXIO)
            break; /* only a hole is left */
          return sbx_fail (err, errno, "find data in disk image");
        }
      off_t hole = lseek (src, data, SEEK_HOLE);
      if (hole < 0)
        return sbx_fail (err, errno, "find a hole in disk image");
      loff_t in = data, out = data;
      while (in < hole)
        {
          ssize_t n = copy_file_range (src, &in, dst, &out, (size_t) (hole - in), 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            return sbx_fail (err, errno, "copy disk image");
          if (n == 0)
            return sbx_failx (err, EIO, "disk image shrank while copied");
        }
      off = hole;
    }
  return 0;
}

/* ---- volumes ---- */

int
sbx_disk_volume_format (const char *image, uint32_t size_mb, struct sbx_err *err)
{
  static const char *const opts[] = { "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
                                      NULL };
  if (make_ext4 (image, size_mb, "volume", opts, err) < 0)
    return -1;
  cleanup_close int m = sbx_disk_volume_mount (image, err);
  if (m < 0)
    return -1;
  /* lost+found would be a directory no one inside may enter; fsck makes
     it again if it is ever needed */
  if (unlinkat (m, "lost+found", AT_REMOVEDIR) < 0 && errno != ENOENT)
    return sbx_fail (err, errno, "prepare volume %s", image);
  cleanup_close int top = openat (m, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (top < 0 || fchmod (top, 0777) < 0)
    return sbx_fail (err, errno, "prepare volume %s", image);
  return 0;
}

/* The loop device that has IMAGE (ST) attached, opened (which keeps it
   from clearing itself until closed), or -1. */
static int
loop_find (const struct stat *st, char *dev, size_t n)
{
  DIR *d = opendir ("/sys/block");
  if (d == NULL)
    return -1;
  int found = -1;
  struct dirent *de;
  while (found < 0 && (de = readdir (d)) != NULL)
    {
      if (strncmp (de->d_name, "loop", 4) != 0 || strlen (de->d_name) > 32)
        continue;
      snprintf (dev, n, "/dev/%.32s", de->d_name);
      int fd = open (dev, O_RDWR | O_CLOEXEC);
      if (fd < 0)
        continue;
      struct loop_info64 li;
      if (ioctl (fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == st->st_ino && li.lo_device == st->st_dev
          && !(li.lo_flags & LO_FLAGS_READ_ONLY))
        found = fd;
      else
        close (fd);
    }
  closedir (d);
  return found;
}

static pthread_mutex_t volume_lock = PTHREAD_MUTEX_INITIALIZER;

int
sbx_disk_volume_mount (const char *image, struct sbx_err *err)
{
  cleanup_close int ifd = open (image, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (ifd < 0)
    return sbx_fail (err, errno, "open volume image %s", image);
  struct stat st;
  if (fstat (ifd, &st) < 0 || !S_ISREG (st.st_mode))
    return sbx_failx (err, EINVAL, "volume image %s is not a file", image);
  pthread_mutex_lock (&volume_lock);
  char dev[64];
  int lfd = loop_find (&st, dev, sizeof dev);
  if (lfd < 0)
    lfd = loop_attach (ifd, false, dev, sizeof dev, NULL, err);
  int mfd = -1;
  if (lfd >= 0)
    {
      cleanup_close int fs = (int) syscall (SYS_fsopen, "ext4", FSOPEN_CLOEXEC);
      if (fs < 0)
        sbx_fail (err, errno, "fsopen ext4");
      else if (syscall (SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0
               || syscall (SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "noinit_itable", NULL, 0) < 0
               || syscall (SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        sbx_fail (err, errno, "mount volume %s on %s", image, dev);
      else if ((mfd = (int) syscall (SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID)) < 0)
        sbx_fail (err, errno, "fsmount %s", dev);
      close (lfd);
    }
  pthread_mutex_unlock (&volume_lock);
  return mfd;
}
