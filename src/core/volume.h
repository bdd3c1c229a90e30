/*
 * volume.h - the files of a volume (disk.h: sbx_disk_volume_format and
 * sbx_disk_volume_mount), reached without any sandbox: E2B's volume
 * content API.  Every call takes ROOT, a detached mount of the volume,
 * and a PATH inside it ("/" its root).
 */
#ifndef SBX_VOLUME_H
#define SBX_VOLUME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "../common/error.h"

#define SBX_VOLUME_PATH_MAX 4096  /* a path's bytes */
#define SBX_VOLUME_LIST_MAX 10000 /* entries one listing gives */
#define SBX_VOLUME_DEPTH_MAX 32   /* levels a listing or a removal goes down */
#define SBX_VOLUME_ID_MAX 65535   /* owners are a sandbox's ids: 0 (its root) to this */

enum sbx_volume_type { SBX_VOL_UNKNOWN, SBX_VOL_FILE, SBX_VOL_DIR, SBX_VOL_SYMLINK };

struct sbx_volume_entry {
  char *name;                 /* its last component ("/" for the root) */
  char *path;                 /* absolute inside the volume, normalised */
  char *target;               /* a symlink's, else NULL */
  enum sbx_volume_type type;
  uint64_t size;
  uint32_t mode, uid, gid;    /* mode: type and permission bits, as st_mode */
  struct timespec atime, mtime, ctime;
};
void sbx_volume_entry_free (struct sbx_volume_entry *e);
void sbx_volume_entries_free (struct sbx_volume_entry *v, size_t n);

/* Owner and mode asked for a new entry or a change; -1: not given. */
struct sbx_volume_meta {
  int64_t uid, gid, mode;
};

/* Paths are resolved inside ROOT with openat2 (RESOLVE_IN_ROOT, no
   symlinks followed, no crossing into another mount): a volume's files
   are written by sandboxes, and the daemon reading them is the host's
   root.  A path through a symlink fails (SBX_E_INVALID); a missing one is
   SBX_E_NOT_FOUND; anything but a regular file is never opened for its
   content. */
int sbx_volume_stat (int root, const char *path, struct sbx_volume_entry *out, struct sbx_err *err);
/* The entries below directory PATH, DEPTH levels down (1: its own),
   at most SBX_VOLUME_LIST_MAX (SBX_E_TOO_LARGE past it). */
int sbx_volume_list (int root, const char *path, uint32_t depth, struct sbx_volume_entry **v, size_t *n,
                     struct sbx_err *err);
/* Make directory PATH (PARENTS: and the missing ones above it);
   SBX_E_CONFLICT when it exists. */
int sbx_volume_mkdir (int root, const char *path, const struct sbx_volume_meta *m, bool parents,
                      struct sbx_volume_entry *out, struct sbx_err *err);
/* Write DATA as regular file PATH (a new one, or replacing one), its
   parent directory existing. */
int sbx_volume_write (int root, const char *path, const void *data, size_t len, const struct sbx_volume_meta *m,
                      struct sbx_volume_entry *out, struct sbx_err *err);
/* Regular file PATH open for reading (O_CLOEXEC), its size in *SIZE. */
int sbx_volume_open_read (int root, const char *path, uint64_t *size, struct sbx_err *err);
/* Remove PATH, a directory with everything in it. */
int sbx_volume_remove (int root, const char *path, struct sbx_err *err);
/* Change the owner and mode of PATH. */
int sbx_volume_set_meta (int root, const char *path, const struct sbx_volume_meta *m, struct sbx_volume_entry *out,
                         struct sbx_err *err);

#endif
