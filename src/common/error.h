/*
 * error.h - the one error model of sbxd.
 *
 * Every fallible function returns int (negative on failure) and fills a
 * struct sbx_err passed by pointer, so the top level can print one precise
 * line such as "mount overlay on /var/lib/...: Permission denied".  The
 * code field carries errno (or 0 when the failure is not a system error).
 */
#ifndef SBX_ERROR_H
#define SBX_ERROR_H

#include <stdarg.h>

#define SBX_ERR_MSG_MAX 512

struct sbx_err {
  int code;                   /* errno value, or 0 */
  char msg[SBX_ERR_MSG_MAX];  /* human readable, one line */
};

#define UNLIKELY(x) __builtin_expect (!!(x), 0)
#define LIKELY(x) __builtin_expect (!!(x), 1)

/* Fill ERR with "fmt...: strerror(errnum)" and return -1.  ERR may be NULL. */
int sbx_fail (struct sbx_err *err, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Fill ERR with "fmt..." (no errno suffix), code set to CODE, return -1. */
int sbx_failx (struct sbx_err *err, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Prefix the message already in ERR with "fmt...: " and return -1. */
int sbx_err_wrap (struct sbx_err *err, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

void sbx_err_clear (struct sbx_err *err);

#endif
