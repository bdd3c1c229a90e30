/*
 * seccomp.h - the system call filter every sandbox process runs under.
 */
#ifndef SBX_SECCOMP_H
#define SBX_SECCOMP_H

#include "../common/error.h"

/* Load the sandbox filter into the calling (single-threaded) process.
   PR_SET_NO_NEW_PRIVS must already be set.  The filter is inherited by
   every child and survives execve. */
int sbx_seccomp_load (struct sbx_err *err);

#endif
