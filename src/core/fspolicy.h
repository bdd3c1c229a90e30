/*
 * fspolicy.h - the filesystem policy of a sandbox: paths of its root file
 * system made read-only, writable or blocked (fspolicy.c checks and
 * encodes the rules; isolate.c mounts them inside the sandbox's mount
 * namespace before anything of the sandbox runs).
 */
#ifndef SBX_FSPOLICY_H
#define SBX_FSPOLICY_H

#include <stddef.h>
#include <sys/types.h>

#include "../common/error.h"

enum sbx_fs_access { SBX_FS_READ_ONLY, SBX_FS_READ_WRITE, SBX_FS_BLOCKED };

struct sbx_fs_rule {
  const char *path;
  enum sbx_fs_access access;
};

#define SBX_FS_RULES_MAX 64
#define SBX_FS_PATH_MAX 1024 /* a rule's path is shorter than this */

/* Validate rules: at most SBX_FS_RULES_MAX, each path absolute and
   normalised (no "." or ".." component, no "//", no trailing "/"), shorter
   than SBX_FS_PATH_MAX, without control characters, not "/" itself, not on the kernel's file systems
   (/proc, /sys, /dev and below), listed once, and not below a blocked path
   (nothing there can be reached).  Fails with err->code EINVAL and a
   message naming the offending path. */
int sbx_fs_rules_check (const struct sbx_fs_rule *rules, size_t n, struct sbx_err *err);

/* Mount points of volumes: at most SBX_FS_MOUNTS_MAX paths, each as a
   rule's path must be, listed once, none below another. */
#define SBX_FS_MOUNTS_MAX 16
int sbx_fs_mount_paths_check (const char *const *paths, size_t n, struct sbx_err *err);

/* The encoded form sent to a booting sandbox: one record per rule,
   shallowest path first ("/a" before "/a/b", so that a more specific
   rule is mounted over a more general one): the access as one byte
   ('r', 'w' or 'b'), the path, a NUL. */
#define SBX_FS_ENCODED_MAX (SBX_FS_RULES_MAX * (SBX_FS_PATH_MAX + 1))

/* Check and encode RULES into a malloc'd buffer (*OUT, *LEN; NULL, 0 when
   N is 0). */
int sbx_fs_rules_encode (const struct sbx_fs_rule *rules, size_t n, char **out, size_t *len, struct sbx_err *err);

#endif
