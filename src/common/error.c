/*
 * error.c - formatting of struct sbx_err (see error.h).
 */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int vfill (struct sbx_err *err, int code, int with_errno, const char *fmt, va_list ap)
    __attribute__ ((format (printf, 4, 0)));

static int
vfill (struct sbx_err *err, int code, int with_errno, const char *fmt, va_list ap)
{
  if (err == NULL)
    return -1;
  err->code = code;
  err->kind = SBX_E_SYSTEM;
  int n = vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  if (with_errno && n >= 0 && (size_t) n < sizeof err->msg)
    snprintf (err->msg + n, sizeof err->msg - n, ": %s", strerror (code));
  return -1;
}

int
sbx_fail (struct sbx_err *err, int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfill (err, errnum, 1, fmt, ap);
  va_end (ap);
  return -1;
}

int
sbx_failx (struct sbx_err *err, int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfill (err, code, 0, fmt, ap);
  va_end (ap);
  return -1;
}

int
sbx_failk (struct sbx_err *err, enum sbx_err_kind kind, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vfill (err, 0, 0, fmt, ap);
  va_end (ap);
  if (err)
    err->kind = kind;
  return -1;
}

enum sbx_err_kind
sbx_err_kind (const struct sbx_err *err)
{
  if (err->kind != SBX_E_SYSTEM)
    return err->kind;
  switch (err->code)
    {
    case ENOENT:
    case ESRCH: /* a process inside a sandbox */
      return SBX_E_NOT_FOUND;
    case EACCES:
    case EPERM:
    case EROFS:
      return SBX_E_FORBIDDEN;
    case EEXIST:
    case ENOTEMPTY:
    case EBUSY:
    case EPIPE: /* input to a process whose stdin is closed */
    case EAGAIN:
      return SBX_E_CONFLICT;
    case ENOSPC:
    case EDQUOT:
      return SBX_E_NO_SPACE;
    case EFBIG:
    case E2BIG:
      return SBX_E_TOO_LARGE;
    case EINVAL:
    case EISDIR:
    case ENOTDIR:
    case ELOOP:
    case EXDEV:
    case ENAMETOOLONG:
    case ENOTTY:
      return SBX_E_INVALID;
    case EMFILE: /* the daemon's descriptors are all in use (docs/architecture.md) */
    case ENFILE:
      return SBX_E_UNAVAILABLE;
    default:
      return SBX_E_INTERNAL;
    }
}

const char *
sbx_err_kind_name (enum sbx_err_kind kind)
{
  static const char *const names[] = { "internal", "invalid", "not_found", "conflict", "paused",  "stopped",
                                        "limit",    "forbidden", "too_large", "no_space", "unavailable", "internal" };
  return (unsigned) kind < sizeof names / sizeof names[0] ? names[kind] : "internal";
}

int
sbx_err_wrap (struct sbx_err *err, const char *fmt, ...)
{
  if (err == NULL)
    return -1;
  char prefix[SBX_ERR_MSG_MAX], old[SBX_ERR_MSG_MAX];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, err->msg, sizeof old);
  snprintf (err->msg, sizeof err->msg, "%.200s: %.300s", prefix, old);
  return -1;
}

void
sbx_err_clear (struct sbx_err *err)
{
  if (err)
    {
      err->code = 0;
      err->kind = SBX_E_SYSTEM;
      err->msg[0] = '\0';
    }
}
