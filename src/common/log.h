/*
 * log.h - the one logger of sbxd.
 *
 * A record is a level, a time, a message and optional key/value fields.
 * By default records at or above the chosen level are written as text
 * lines to stderr:
 *
 *   2026-12-01T07:45:43.123Z info sandbox stopped sandbox=sbx_1a2b reason="by request"
 *
 * (time in RFC 3339 UTC with milliseconds; a value is quoted when it is
 * empty or holds a space, a quote, '=' or a control character, and
 * control characters are escaped, so one record is always one line
 * whatever the strings hold).  A sink (sbx_log_set_sink) replaces the text
 * output: the daemon installs one writing JSON lines (log_json.c), which
 * keeps this file free of any JSON library, since it is also linked into
 * the static sbx-init.
 *
 * Thread safe: a line is written whole, under a lock, so the lines of
 * concurrent threads never mix, however long.  Configure (level, sink,
 * fd) before other threads start.  Not for a child between fork and exec
 * (the lock may be held by a thread that was not copied).
 */
#ifndef SBX_LOG_H
#define SBX_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sbx_log_level { SBX_LOG_DEBUG, SBX_LOG_INFO, SBX_LOG_WARN, SBX_LOG_ERROR };

/* Bounds: a record keeps at most SBX_LOG_MAX_FIELDS fields, a message
   SBX_LOG_MSG_MAX - 1 bytes, and a text line SBX_LOG_LINE_MAX bytes (a
   longer one is cut and ends with "..."). */
#define SBX_LOG_MAX_FIELDS 16
#define SBX_LOG_MSG_MAX 2048
#define SBX_LOG_LINE_MAX 8192
/* JSON lines: each value (and the message) is cut to this many bytes. */
#define SBX_LOG_VALUE_MAX 2048

struct sbx_log_record {
  enum sbx_log_level level;
  int64_t time_ms;              /* wall clock, ms since the epoch */
  const char *msg;
  const char *const *fields;    /* key, value, key, value, ... */
  size_t n_fields;              /* pairs */
};

typedef void (*sbx_log_sink_fn) (const struct sbx_log_record *rec, void *ud);

/* Records below LEVEL are dropped (default: info). */
void sbx_log_set_level (enum sbx_log_level level);
enum sbx_log_level sbx_log_get_level (void);
bool sbx_log_enabled (enum sbx_log_level level);
/* "debug", "info", "warn" (or "warning"), "error"; -1 for anything else. */
int sbx_log_level_parse (const char *name, enum sbx_log_level *out);
const char *sbx_log_level_name (enum sbx_log_level level);

/* Where lines go (default 2, stderr); sinks may write there too. */
void sbx_log_set_fd (int fd);
int sbx_log_get_fd (void);
/* Hand every record to FN instead of writing text; NULL restores text. */
void sbx_log_set_sink (sbx_log_sink_fn fn, void *ud);
/* Write LINE (N bytes, its newline included) whole to the log's fd, not
   mixed with other lines of this process: for sinks. */
void sbx_log_write (const char *line, size_t n);

/* A record with a printf-style message. */
void sbx_log (enum sbx_log_level level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* A record with message MSG and fields: KEY, VALUE, ..., NULL (a NULL
   value reads as ""). */
void sbx_log_fields (enum sbx_log_level level, const char *msg, ...) __attribute__ ((sentinel));
void sbx_log_fieldsv (enum sbx_log_level level, const char *msg, va_list ap);

/* "2026-12-01T07:45:43.123Z" into BUF (at least 32 bytes). */
void sbx_log_format_time (int64_t time_ms, char *buf, size_t size);
/* The text line of REC, newline included, into BUF; its length. */
size_t sbx_log_format_text (const struct sbx_log_record *rec, char *buf, size_t size);

#endif
