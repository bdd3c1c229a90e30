/*
 * error.h - the one error model of sbxd.
 *
 * Every fallible function returns int (negative on failure) and fills a
 * struct sbx_err passed by pointer, so the top level can print one precise
 * line such as "mount overlay on /var/lib/...: Permission denied".  The
 * code field carries errno (or 0 when the failure is not a system error).
 *
 * The kind says what the failure means to a caller, whatever errno caused
 * it: each API dialect has one table from kind to its status and shape.
 * Domain failures (no such sandbox, a paused sandbox, a limit) set the kind
 * with sbx_failk; system failures leave it unset and sbx_err_kind derives it
 * from errno (ENOENT inside a sandbox is "not found", ENOSPC "no space").
 */
#ifndef SBX_ERROR_H
#define SBX_ERROR_H

#include <stdarg.h>

#define SBX_ERR_MSG_MAX 512

enum sbx_err_kind {
  SBX_E_SYSTEM = 0,   /* not classified: derived from code by sbx_err_kind */
  SBX_E_INVALID,      /* the request is malformed or out of range */
  SBX_E_NOT_FOUND,    /* no such object (for this caller) */
  SBX_E_CONFLICT,     /* the object's state forbids it, or it exists already */
  SBX_E_PAUSED,       /* the sandbox is paused and this needs it running */
  SBX_E_STOPPED,      /* the sandbox has stopped */
  SBX_E_LIMIT,        /* a quota or plan limit is reached */
  SBX_E_FORBIDDEN,    /* not permitted (by the plan, or inside the sandbox) */
  SBX_E_TOO_LARGE,    /* a size limit */
  SBX_E_NO_SPACE,     /* a disk is full, or the disk a create asks for cannot be promised */
  SBX_E_UNAVAILABLE,  /* cannot be served now; may work later */
  SBX_E_INTERNAL,     /* a fault of the daemon or the host */
};

struct sbx_err {
  int code;                   /* errno value, or 0 */
  enum sbx_err_kind kind;     /* SBX_E_SYSTEM: see sbx_err_kind */
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

/* A domain failure: kind KIND, code 0, "fmt...", return -1. */
int sbx_failk (struct sbx_err *err, enum sbx_err_kind kind, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* The kind of ERR: the one set, or the one its errno implies. */
enum sbx_err_kind sbx_err_kind (const struct sbx_err *err);
const char *sbx_err_kind_name (enum sbx_err_kind kind);

/* Prefix the message already in ERR with "fmt...: " and return -1. */
int sbx_err_wrap (struct sbx_err *err, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

void sbx_err_clear (struct sbx_err *err);

#endif
