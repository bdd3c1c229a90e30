/*
 * log.c - the one logger (see log.h): levels, RFC 3339 times, text lines
 * with key=value fields, and a sink hook for other formats.
 *
 * No JSON here and nothing allocated: the file is linked into the static
 * sbx-init too, and a logger that can fail for want of memory is no help
 * when memory is short.  A record is formatted into a buffer on the
 * stack and written whole under a lock: write(2) is atomic on a pipe only
 * up to PIPE_BUF bytes, and a line may be longer.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static atomic_int log_level = SBX_LOG_INFO;
static atomic_int log_fd = STDERR_FILENO;
static sbx_log_sink_fn log_sink;
static void *log_sink_ud;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
  [SBX_LOG_DEBUG] = "debug", [SBX_LOG_INFO] = "info", [SBX_LOG_WARN] = "warn", [SBX_LOG_ERROR] = "error"
};

void
sbx_log_set_level (enum sbx_log_level level)
{
  atomic_store (&log_level, (int) level);
}

enum sbx_log_level
sbx_log_get_level (void)
{
  return (enum sbx_log_level) atomic_load (&log_level);
}

bool
sbx_log_enabled (enum sbx_log_level level)
{
  return (int) level >= atomic_load (&log_level);
}

int
sbx_log_level_parse (const char *name, enum sbx_log_level *out)
{
  for (int i = SBX_LOG_DEBUG; name && i <= SBX_LOG_ERROR; i++)
    if (strcmp (name, level_names[i]) == 0)
      {
        *out = (enum sbx_log_level) i;
        return 0;
      }
  if (name && strcmp (name, "warning") == 0)
    {
      *out = SBX_LOG_WARN;
      return 0;
    }
  return -1;
}

const char *
sbx_log_level_name (enum sbx_log_level level)
{
  return (int) level >= SBX_LOG_DEBUG && level <= SBX_LOG_ERROR ? level_names[level] : "unknown";
}

void
sbx_log_set_fd (int fd)
{
  atomic_store (&log_fd, fd);
}

int
sbx_log_get_fd (void)
{
  return atomic_load (&log_fd);
}

void
sbx_log_set_sink (sbx_log_sink_fn fn, void *ud)
{
  log_sink = fn;
  log_sink_ud = ud;
}

void
sbx_log_format_time (int64_t time_ms, char *buf, size_t size)
{
  time_t t = (time_t) (time_ms / 1000);
  struct tm tm;
  gmtime_r (&t, &tm);
  snprintf (buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
            tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (time_ms % 1000));
}

/* A bounded line being built: what does not fit is dropped and noted. */
struct line {
  char *buf;
  size_t size, len;   /* room keeps 5 bytes for "...\n" and the terminator */
  bool cut;
};

static void
put (struct line *l, const char *s, size_t n)
{
  size_t room = l->size - 5 - l->len;
  if (n > room)
    {
      n = room;
      l->cut = true;
    }
  memcpy (l->buf + l->len, s, n);
  l->len += n;
}

static void
put_str (struct line *l, const char *s)
{
  put (l, s, strlen (s));
}

/* S with control characters, and in a quoted value quotes and
   backslashes, escaped. */
static void
put_escaped (struct line *l, const char *s, bool quoted)
{
  for (; *s; s++)
    {
      unsigned char c = (unsigned char) *s;
      char esc[8];
      if (c == '\n')
        put_str (l, "\\n");
      else if (c == '\t')
        put_str (l, "\\t");
      else if (c == '\r')
        put_str (l, "\\r");
      else if (c < 0x20 || c == 0x7f)
        {
          snprintf (esc, sizeof esc, "\\x%02x", c);
          put_str (l, esc);
        }
      else if (quoted && (c == '"' || c == '\\'))
        {
          esc[0] = '\\';
          esc[1] = (char) c;
          put (l, esc, 2);
        }
      else
        put (l, s, 1);
    }
}

static bool
needs_quotes (const char *v)
{
  if (*v == '\0')
    return true;
  for (; *v; v++)
    if ((unsigned char) *v <= ' ' || *v == '"' || *v == '=' || *v == 0x7f || *v == '\\')
      return true;
  return false;
}

size_t
sbx_log_format_text (const struct sbx_log_record *rec, char *buf, size_t size)
{
  if (size < 8)
    return 0;
  struct line l = { .buf = buf, .size = size };
  char when[32];
  sbx_log_format_time (rec->time_ms, when, sizeof when);
  put_str (&l, when);
  put_str (&l, " ");
  put_str (&l, sbx_log_level_name (rec->level));
  put_str (&l, " ");
  put_escaped (&l, rec->msg ? rec->msg : "", false);
  for (size_t i = 0; i < rec->n_fields; i++)
    {
      const char *k = rec->fields[2 * i], *v = rec->fields[2 * i + 1];
      put_str (&l, " ");
      put_escaped (&l, k ? k : "", false);
      put_str (&l, "=");
      v = v ? v : "";
      bool q = needs_quotes (v);
      if (q)
        put_str (&l, "\"");
      put_escaped (&l, v, q);
      if (q)
        put_str (&l, "\"");
    }
  if (l.cut)
    {
      memcpy (l.buf + l.len, "...", 3);
      l.len += 3;
    }
  l.buf[l.len++] = '\n';
  l.buf[l.len] = '\0';
  return l.len;
}

void
sbx_log_write (const char *line, size_t n)
{
  int saved = errno;   /* logging must not disturb the caller's errno */
  pthread_mutex_lock (&write_lock);
  (void) !sbx_write_full (atomic_load (&log_fd), line, n);
  pthread_mutex_unlock (&write_lock);
  errno = saved;
}

static void
emit (const struct sbx_log_record *rec)
{
  if (log_sink)
    {
      log_sink (rec, log_sink_ud);
      return;
    }
  char line[SBX_LOG_LINE_MAX];
  size_t n = sbx_log_format_text (rec, line, sizeof line);
  sbx_log_write (line, n);
}

void
sbx_log (enum sbx_log_level level, const char *fmt, ...)
{
  if (!sbx_log_enabled (level))
    return;
  int saved = errno;   /* for %m */
  char msg[SBX_LOG_MSG_MAX];
  va_list ap;
  va_start (ap, fmt);
  errno = saved;
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  struct sbx_log_record rec = { .level = level, .time_ms = sbx_wall_ms (), .msg = msg };
  emit (&rec);
  errno = saved;
}

void
sbx_log_fieldsv (enum sbx_log_level level, const char *msg, va_list ap)
{
  if (!sbx_log_enabled (level))
    return;
  const char *fields[2 * SBX_LOG_MAX_FIELDS];
  size_t n = 0;
  const char *k;
  while ((k = va_arg (ap, const char *)) != NULL)
    {
      const char *v = va_arg (ap, const char *);
      if (n < SBX_LOG_MAX_FIELDS)
        {
          fields[2 * n] = k;
          fields[2 * n + 1] = v ? v : "";
          n++;
        }
    }
  struct sbx_log_record rec = { .level = level, .time_ms = sbx_wall_ms (), .msg = msg, .fields = fields,
                                .n_fields = n };
  emit (&rec);
}

void
sbx_log_fields (enum sbx_log_level level, const char *msg, ...)
{
  va_list ap;
  va_start (ap, msg);
  sbx_log_fieldsv (level, msg, ap);
  va_end (ap);
}
