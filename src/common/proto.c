/*
 * proto.c - framing of the sbxd <-> init agent protocol (see proto.h).
 * Written by hand because both ends must stay tiny (the agent is a static
 * binary) and the format is a few dozen lines; no library fits better.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "util.h"

void
sbx_msg_init (struct sbx_msg *m, uint8_t type)
{
  memset (m, 0, sizeof *m);
  m->type = type;
}

void
sbx_msg_free (struct sbx_msg *m)
{
  free (m->buf);
  m->buf = NULL;
  m->len = m->cap = 0;
}

static int
reserve (struct sbx_msg *m, size_t extra)
{
  if (sbx_reserve (&m->buf, &m->cap, m->len + extra, 256) < 0)
    {
      m->oom = 1;
      return -1;
    }
  return 0;
}

static void
put_le32 (uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

static uint32_t
get_le32 (const uint8_t *p)
{
  return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

void
sbx_msg_put (struct sbx_msg *m, uint8_t tag, const void *data, size_t len)
{
  if (len > SBX_PROTO_MAX_FRAME || reserve (m, 5 + len) < 0)
    {
      m->oom = 1;
      return;
    }
  m->buf[m->len] = tag;
  put_le32 (m->buf + m->len + 1, (uint32_t) len);
  if (len)
    memcpy (m->buf + m->len + 5, data, len);
  m->len += 5 + len;
}

void
sbx_msg_put_str (struct sbx_msg *m, uint8_t tag, const char *s)
{
  sbx_msg_put (m, tag, s, strlen (s));
}

void
sbx_msg_put_u32 (struct sbx_msg *m, uint8_t tag, uint32_t v)
{
  uint8_t b[4];
  put_le32 (b, v);
  sbx_msg_put (m, tag, b, 4);
}

void
sbx_msg_put_u64 (struct sbx_msg *m, uint8_t tag, uint64_t v)
{
  uint8_t b[8];
  put_le32 (b, (uint32_t) v);
  put_le32 (b + 4, (uint32_t) (v >> 32));
  sbx_msg_put (m, tag, b, 8);
}

int
sbx_msg_send (int fd, const struct sbx_msg *m)
{
  if (m->oom || m->len + 1 > SBX_PROTO_MAX_FRAME + 64)
    {
      errno = EMSGSIZE;
      return -1;
    }
  uint8_t hdr[5];
  put_le32 (hdr, (uint32_t) (m->len + 1));
  hdr[4] = m->type;
  struct iovec iov[2] = { { hdr, 5 }, { m->buf, m->len } };
  size_t total = 5 + m->len, done = 0;
  int n_iov = m->len ? 2 : 1;
  while (done < total)
    {
      ssize_t n = writev (fd, iov, n_iov);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      done += (size_t) n;
      /* advance the iovecs past what was written */
      size_t k = (size_t) n;
      for (int i = 0; i < n_iov && k > 0; i++)
        {
          size_t take = k < iov[i].iov_len ? k : iov[i].iov_len;
          iov[i].iov_base = (char *) iov[i].iov_base + take;
          iov[i].iov_len -= take;
          k -= take;
        }
    }
  return 0;
}

int
sbx_msg_recv_by (int fd, struct sbx_msg *m, uint64_t deadline_ns)
{
  uint8_t hdr[5];
  ssize_t n = sbx_read_by (fd, hdr, 5, deadline_ns);
  if (n < 0)
    return -1;
  if (n == 0)
    return 0;
  if (n < 5)
    {
      errno = EPROTO;
      return -1;
    }
  uint32_t len = get_le32 (hdr);
  if (len < 1 || len > SBX_PROTO_MAX_FRAME + 64)
    {
      errno = EPROTO;
      return -1;
    }
  sbx_msg_free (m);
  sbx_msg_init (m, hdr[4]);
  if (reserve (m, len) < 0)
    {
      errno = ENOMEM;
      return -1;
    }
  n = sbx_read_by (fd, m->buf, len - 1, deadline_ns);
  if (n < 0)
    return -1;
  if ((size_t) n < len - 1)
    {
      errno = EPROTO;
      return -1;
    }
  m->len = len - 1;
  return 1;
}

int
sbx_msg_recv (int fd, struct sbx_msg *m)
{
  return sbx_msg_recv_by (fd, m, 0);
}

int
sbx_msg_next (const struct sbx_msg *m, size_t *pos, uint8_t *tag, const uint8_t **data, uint32_t *len)
{
  if (*pos >= m->len)
    return 0;
  if (m->len - *pos < 5)
    return -1;
  uint32_t l = get_le32 (m->buf + *pos + 1);
  if (l > m->len - *pos - 5)
    return -1;
  *tag = m->buf[*pos];
  *data = m->buf + *pos + 5;
  *len = l;
  *pos += 5 + l;
  return 1;
}

int
sbx_msg_get (const struct sbx_msg *m, uint8_t tag, const uint8_t **data, uint32_t *len)
{
  size_t pos = 0;
  uint8_t t;
  while (sbx_msg_next (m, &pos, &t, data, len) == 1)
    if (t == tag)
      return 1;
  return 0;
}

uint32_t
sbx_msg_u32 (const struct sbx_msg *m, uint8_t tag, uint32_t def)
{
  const uint8_t *d;
  uint32_t l;
  if (!sbx_msg_get (m, tag, &d, &l) || l != 4)
    return def;
  return get_le32 (d);
}

int
sbx_msg_termsig (const struct sbx_msg *m)
{
  uint32_t sig = sbx_msg_u32 (m, SBX_T_TERMSIG, 0);
  return sig <= 64 ? (int) sig : -1;
}

uint64_t
sbx_msg_u64 (const struct sbx_msg *m, uint8_t tag, uint64_t def)
{
  const uint8_t *d;
  uint32_t l;
  if (!sbx_msg_get (m, tag, &d, &l) || l != 8)
    return def;
  return (uint64_t) get_le32 (d) | (uint64_t) get_le32 (d + 4) << 32;
}

char *
sbx_msg_strdup (const struct sbx_msg *m, uint8_t tag)
{
  const uint8_t *d;
  uint32_t l;
  if (!sbx_msg_get (m, tag, &d, &l))
    return NULL;
  if (memchr (d, '\0', l) != NULL)
    return NULL; /* strings never carry NUL bytes */
  return strndup ((const char *) d, l);
}

int
sbx_msg_send_error (int fd, int errnum, const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ERROR);
  sbx_msg_put_u32 (&m, SBX_T_ERRNO, (uint32_t) errnum);
  sbx_msg_put_str (&m, SBX_T_MSG, buf);
  int r = sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  return r;
}

int
sbx_msg_send_ok (int fd)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_OK);
  int r = sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  return r;
}
