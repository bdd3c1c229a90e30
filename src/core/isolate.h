/*
 * isolate.h - start a sandbox's PID 1 in fresh namespaces (isolate.c).
 */
#ifndef SBX_ISOLATE_H
#define SBX_ISOLATE_H

#include <stdint.h>
#include <sys/types.h>

#include "../common/error.h"

struct sbx_isolate_spec {
  const char *template_rootfs; /* lower layer (root-owned tree) */
  int disk_fd;                 /* detached mount of the sandbox disk, with upper/ and work/ */
  const char *mountpoint;      /* empty host directory the root is attached on, privately */
  int agent_fd;                /* listening agent socket: fd 3 of init */
  int init_fd;                 /* sbx-init executable (sealed memfd) */
  uid_t uid_base;              /* host id of the sandbox's root */
  uint32_t uid_count;
  const char *hostname;
  const char *cgroup_name;
  char *const *init_env;       /* environment of init = base of every command */
  uint32_t nofile;
};

/* Start the sandbox; on success *PID is the host pid of its init, which is
   a child of the caller. */
int sbx_isolate_start (const struct sbx_isolate_spec *s, pid_t *pid, struct sbx_err *err);

#endif
