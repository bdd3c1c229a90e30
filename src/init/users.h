/*
 * users.h - user and group lookup inside the sandbox.  The agent is a
 * static binary, so it reads /etc/passwd and /etc/group itself instead of
 * going through NSS.
 */
#ifndef SBX_INIT_USERS_H
#define SBX_INIT_USERS_H

#include <sys/types.h>

struct sbx_user {
  uid_t uid;
  gid_t gid;
  char name[64];
  char home[256];
  char shell[128];
};

/* Read and close the copies of /etc/passwd and /etc/group sbxd hands
   init at boot when the sandbox has a filesystem policy (fds that are not
   open are skipped); lookups use them when the files themselves cannot be
   read. */
void sbx_users_snapshot (int passwd_fd, int group_fd);
/* Look up NAME (a user name or a decimal uid) in /etc/passwd.  A uid that
   has no entry is accepted with home "/" and gid = uid.  Returns 0 or -1
   (errno ENOENT for an unknown name). */
int sbx_user_lookup (const char *name, struct sbx_user *u);
/* Supplementary groups of a user from /etc/group; returns the count. */
int sbx_user_groups (const struct sbx_user *u, gid_t *groups, int max);
/* Switch the calling process to U (groups, gid, uid). */
int sbx_user_become (const struct sbx_user *u);
/* Name of a uid / gid, or its decimal value, into BUF. */
void sbx_uid_name (uid_t uid, char *buf, size_t n);
void sbx_gid_name (gid_t gid, char *buf, size_t n);

#endif
