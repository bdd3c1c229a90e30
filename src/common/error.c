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
      err->msg[0] = '\0';
    }
}
