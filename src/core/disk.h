/*
 * disk.h - the per-sandbox disk: a sparse ext4 image on a loop device that
 * holds the overlay's writable layer, so the kernel enforces the disk quota
 * (a full disk is ENOSPC inside the sandbox).  The file system is mounted
 * detached (fsmount) and never appears in the host's mount table; it lives
 * exactly as long as the sandbox's mount namespace uses it, and the loop
 * device clears itself (LO_FLAGS_AUTOCLEAR) after that.
 */
#ifndef SBX_DISK_H
#define SBX_DISK_H

#include <stdint.h>
#include <sys/types.h>

#include "../common/error.h"

/* Create IMAGE as a sparse file of SIZE_MB and format it (mkfs.ext4). */
int sbx_disk_format (const char *image, uint32_t size_mb, struct sbx_err *err);
/* Attach IMAGE to a free loop device and mount it detached.  Returns the
   mount fd (O_CLOEXEC) or -1; *LOOP_NR (if not NULL) gets the loop
   device's number.  The device clears itself with the last use of the
   mount, and stays, free, for the next attach. */
int sbx_disk_mount (const char *image, int *loop_nr, struct sbx_err *err);
/* Remove free loop device LOOP_NR (LOOP_CTL_REMOVE; it takes tens of
   milliseconds).  0, or -EBUSY when it is in use again. */
int sbx_disk_loop_remove (int loop_nr);
/* Call FN for every loop device bound to a file, with its number and
   the file's path as the kernel shows it (/sys/block/loopN/loop/
   backing_file; " (deleted)" after it once unlinked). */
void sbx_disk_loops_each (void (*fn) (int loop_nr, const char *backing, void *ud), void *ud);
/* The same, read-only (loop device and file system): a snapshot's layer,
   which many sandboxes mount at once. */
int sbx_disk_mount_ro (const char *image, struct sbx_err *err);
/* Copy disk image SRC into the empty file DST, sparse as it is (reflinked
   where the file system can); *BYTES gets what SRC holds. */
int sbx_disk_copy (int src, int dst, uint64_t *bytes, struct sbx_err *err);

/* Volumes: persistent file systems that outlive sandboxes and are shared
   by them (a volume mounted by two sandboxes at once is one file system).

   Create IMAGE as a sparse ext4 file system of SIZE_MB with a journal
   (a volume outlives host crashes), its root directory mode 0777 and
   owned by id 0 (the root of whichever sandbox mounts it), without
   lost+found. */
int sbx_disk_volume_format (const char *image, uint32_t size_mb, struct sbx_err *err);
/* A detached mount (nodev, nosuid; O_CLOEXEC fd) of volume IMAGE.  When
   the image is already on a loop device (a sandbox, or a request, has it
   mounted, possibly since before a daemon restart), that device is
   mounted again, which gives the same file system: an ext4 image must
   never be mounted through two devices at once.  Serialised in the
   process, so two callers never attach it twice. */
int sbx_disk_volume_mount (const char *image, struct sbx_err *err);

#endif
