/*
 * isolate.h - start a sandbox's PID 1 in fresh namespaces (isolate.c).
 */
#ifndef SBX_ISOLATE_H
#define SBX_ISOLATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/error.h"
#include "fspolicy.h"

#define SBX_ISOLATE_ENV_MAX (256u << 10) /* bytes of environment */
#define SBX_ISOLATE_ENV_COUNT 4096

/* What a sandbox needs before its template is known. */
struct sbx_isolate_spec {
  const char *mountpoint;      /* empty host directory the root is attached on, privately */
  int agent_fd;                /* listening agent socket: fd 3 of init */
  int init_fd;                 /* sbx-init executable (sealed memfd) */
  uid_t uid_base;              /* host id of the sandbox's root */
  uint32_t uid_count;
  const char *hostname;
  const char *cgroup_name;
  const char *fs_block_dir;    /* holds "dir" and "file", mode 000, owned by the host's root: what
                                  blocked paths and the masked directories of /proc and /sys are
                                  covered with (sbx_isolate_block_dir); NULL: masks are tmpfs */
  const char *egress_ca_pem;   /* the egress CA (netproxy.h) the sandbox trusts, PEM; NULL: none */
};

/* Where the egress CA goes in the sandbox: a file of its own, and the end
   of the system bundle (the template's, if it has one) in the sandbox's
   own overlay. */
#define SBX_ISOLATE_CA_FILE "/usr/local/share/ca-certificates/sbxd-egress-ca.crt"
#define SBX_ISOLATE_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* The helper process sandboxes are cloned from (isolate.c says why): a
   fork of this process that ends when stopped or when this process ends.
   The children it made that have not booted end with it. */
struct sbx_isolate_spawner;
int sbx_isolate_spawner_start (struct sbx_isolate_spawner **out, struct sbx_err *err);
void sbx_isolate_spawner_stop (struct sbx_isolate_spawner *sp);

/* A spawned child that waits for its root file system. */
struct sbx_isolate_proc {
  pid_t pid; /* host pid; the spawner's child, reaped by the kernel, not the caller's */
  int sock;
};

/* Phase one: clone into new namespaces (from SP), map ids, enter the
   cgroup.  The child then waits, so that this costly part can be done
   ahead of time.  *PIDFD gets a pidfd of it, the caller's to close. */
int sbx_isolate_spawn (struct sbx_isolate_spawner *sp, const struct sbx_isolate_spec *s, struct sbx_isolate_proc *p,
                       int *pidfd, struct sbx_err *err);
/* The writable disk of a sandbox (a mount holding upper/ and work/) and
   the read-only layers below it (mounts each holding upper/, newest
   first), from a snapshot; all of them store the sandbox's own ids (0 is
   its root) and are idmapped to its host range. */
#define SBX_ISOLATE_LAYERS_MAX 16
struct sbx_isolate_disk {
  int userns_fd;               /* sbx_isolate_layer_userns of the sandbox's range */
  int disk_fd;
  const int *layer_fds;
  size_t n_layers;
  /* volumes (sbx_disk_volume_mount), idmapped like the layers and
     mounted at their paths (checked with sbx_fs_mount_paths_check) */
  const int *volume_fds;
  const char *const *volume_paths;
  size_t n_volumes;
  /* the writable disk becomes a template layer (a build): nothing of
     this daemon's goes into it (the egress CA is not installed) */
  bool layer_build;
  /* booted ahead of its claim (a booted spare): until its init is told it
     is claimed (SBX_REQ_SETENV) it dies with the daemon's thread that
     made it, as a spare waiting to boot does */
  bool ahead;
};

/* The user namespace every layer of a sandbox is idmapped with: ids
   0..COUNT-1 on disk are the sandbox's (host BASE..), and COUNT is the
   host's root, which overlayfs works as in its work directory and
   whiteouts (a mount's idmapping must map the mounter).  Returns its fd. */
int sbx_isolate_layer_userns (uid_t base, uint32_t count, struct sbx_err *err);

/* Phase two: build the root file system from the template tree (TREE_FD
   is the directory holding rootfs/) and DISK, hand it over with the template's in-use lock (kept by init
   as fd 4), the environment of init, the open files limit, and the
   address of eth0 with its gateway (0: no eth0 set up); returns once
   sbx-init runs. */
int sbx_isolate_boot (struct sbx_isolate_proc *p, int tree_fd, int lock_fd, const struct sbx_isolate_disk *disk,
                      char *const *env, uint32_t nofile, uint32_t net_addr, uint32_t net_gw,
                      const struct sbx_fs_rule *fs_rules, size_t n_fs_rules, struct sbx_err *err);
/* Make DIR (in the daemon's root-only state directory) hold what blocked
   paths are covered with: an empty directory "dir" and an empty file
   "file", both mode 000 and owned by the host's root. */
int sbx_isolate_block_dir (const char *dir, struct sbx_err *err);
/* Kill a spawned child that will not be booted (or failed to boot), and
   wait for its end; PIDFD is the pidfd sbx_isolate_spawn gave (-1: it
   is not signalled). */
void sbx_isolate_abort (struct sbx_isolate_proc *p, int pidfd);
/* sbx_isolate_boot in two halves, so that the caller can work while the
   child sets itself up: hand over, then wait for sbx-init to run. */
int sbx_isolate_boot_start (struct sbx_isolate_proc *p, int tree_fd, int lock_fd,
                            const struct sbx_isolate_disk *disk, char *const *env, uint32_t nofile, uint32_t net_addr,
                            uint32_t net_gw, const struct sbx_fs_rule *fs_rules, size_t n_fs_rules,
                            struct sbx_err *err);
int sbx_isolate_boot_wait (struct sbx_isolate_proc *p, struct sbx_err *err);

#endif
