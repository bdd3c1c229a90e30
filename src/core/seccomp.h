/*
 * seccomp.h - the system call filter every sandbox process runs under.
 */
#ifndef SBX_SECCOMP_H
#define SBX_SECCOMP_H

#include "../common/error.h"

/* Compile the filter once per process (thread safe). */
int sbx_seccomp_prepare (struct sbx_err *err);
/* Load the compiled filter; allocates nothing, so it is safe in the child
   of a fork-like clone of a multi-threaded process. */
int sbx_seccomp_apply (struct sbx_err *err);

/* Prepare and apply: load the sandbox filter into the calling (single-threaded) process.
   PR_SET_NO_NEW_PRIVS must already be set.  The filter is inherited by
   every child and survives execve. */
int sbx_seccomp_load (struct sbx_err *err);

#endif
