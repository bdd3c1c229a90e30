/*
 * netproxy.c - the DNS filter and the HTTP/TLS name filter (see
 * netproxy.h for what they enforce).
 *
 * Threads:
 *   - the DNS thread serves the UDP socket and accepts TCP DNS connections
 *     on the same port number; each UDP query is answered on a short-lived
 *     detached worker (at most UDP_WORKERS_MAX at once, further queries are
 *     dropped), each TCP DNS connection on a detached worker of its own;
 *   - the accept thread accepts HTTP/TLS connections and hands each to a
 *     detached worker, which reads the name, decides, connects to the
 *     original destination and relays both ways.
 * Only registered sandboxes are served: anything from another source is
 * dropped or closed at once.  TCP connections (DNS and relayed) count
 * against a per-sandbox cap (CONNS_PER_SANDBOX).
 *
 * Locking: one mutex guards the sandbox table (policies, remembered
 * addresses, connection counts, egress logs), the list of TCP connections
 * and the worker counts.  A connection's descriptors are closed only under the
 * mutex, after the connection left the list, so a thread that changes a
 * policy can shutdown() the descriptors of the connections it no longer
 * allows without racing with their reuse; the shutdown makes the worker's
 * reads end, and the worker cleans up.
 *
 * Stopping: an eventfd, polled by every thread and worker wherever it
 * waits, becomes readable; the two threads are joined and sbx_netproxy_stop
 * waits (a condition variable on the worker count) until the last worker
 * has left before freeing anything.  A worker's last access to the proxy is
 * the decrement under the mutex.
 *
 * DNS messages are parsed with ldns.  The answers made here (REFUSED, an
 * empty AAAA answer, SERVFAIL, FORMERR) are not built with ldns: they are
 * the query's header and question copied, with QR and RA set, AA and TC
 * cleared, the opcode and RD kept, the RCODE set and the answer, authority
 * and additional counts zeroed (an OPT record of the query is not echoed,
 * which tells the client that this answer carries no EDNS).
 *
 * The TLS ClientHello and HTTP request parsers are written by hand: no
 * library reads the server_name of a ClientHello without terminating TLS,
 * which this filter must not do.  They read untrusted bytes from sandboxes
 * and check every length against the bytes present.
 */
#include "netproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <linux/netfilter_ipv4.h>

#include "../common/util.h"
#include "egress.h"
#include "netproxy_internal.h"

#define UDP_WORKERS_MAX 128
#define CONNS_PER_SANDBOX 256
#define MEMO_MAX 4096
#define HELLO_MAX (16384 + 5)       /* one TLS record, header included */
#define HELLO_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_MS 10000
#define DNS_TCP_IDLE_MS 10000
#define UPSTREAM_UDP_TIMEOUT_MS 2000 /* per try; one retry */
#define UPSTREAM_TCP_TIMEOUT_MS 5000
#define RELAY_BUF 65536
#define DNS_MSG_MAX 65535
#define TTL_MIN 60
#define TTL_MAX 3600
#define REMEMBER_MAX 64              /* A records taken from one answer */
#define WORKER_STACK (256 * 1024)

#define MS 1000000ull

/* ------------------------------------------------------------------ names */

static bool
name_char_ok (unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static char
lower (unsigned char c)
{
  return (char) (c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
}

/* Copy the host name S (LEN bytes, untrusted) into NAME (N bytes), lower
   case, without one final dot.  Labels of 1..63 letters, digits, '-' or
   '_', 253 bytes in all.  1, or -1 when it is not such a name. */
static int
name_finish (const uint8_t *s, size_t len, char *name, size_t n)
{
  if (len && s[len - 1] == '.')
    len--;
  if (len == 0 || len > SBX_NETPROXY_NAME_MAX || len >= n)
    return -1;
  size_t label = 0;
  for (size_t i = 0; i < len; i++)
    {
      if (s[i] == '.')
        {
          if (label == 0)
            return -1;
          label = 0;
        }
      else if (!name_char_ok (s[i]) || ++label > 63)
        return -1;
      name[i] = lower (s[i]);
    }
  if (label == 0)
    return -1;
  name[len] = '\0';
  return 1;
}

/* ------------------------------------------------------ TLS ClientHello */

/* A bounded reader: every read checks the bytes left. */
struct rd {
  const uint8_t *p;
  size_t len, off;
};

static bool
rd_u8 (struct rd *r, size_t *v)
{
  if (r->len - r->off < 1)
    return false;
  *v = r->p[r->off++];
  return true;
}

static bool
rd_u16 (struct rd *r, size_t *v)
{
  if (r->len - r->off < 2)
    return false;
  *v = (size_t) r->p[r->off] << 8 | r->p[r->off + 1];
  r->off += 2;
  return true;
}

static bool
rd_u24 (struct rd *r, size_t *v)
{
  if (r->len - r->off < 3)
    return false;
  *v = (size_t) r->p[r->off] << 16 | (size_t) r->p[r->off + 1] << 8 | r->p[r->off + 2];
  r->off += 3;
  return true;
}

/* Take the next LEN bytes as a reader of their own. */
static bool
rd_sub (struct rd *r, size_t len, struct rd *sub)
{
  if (r->len - r->off < len)
    return false;
  sub->p = r->p + r->off;
  sub->len = len;
  sub->off = 0;
  r->off += len;
  return true;
}

static bool
rd_skip (struct rd *r, size_t len)
{
  struct rd unused;
  return rd_sub (r, len, &unused);
}

/* The server_name extension (RFC 6066 section 3): the first host_name. */
static int
sni_ext (struct rd *ext, char *name, size_t n)
{
  size_t list_len, type, len;
  struct rd list, host;
  if (!rd_u16 (ext, &list_len) || list_len == 0 || !rd_sub (ext, list_len, &list) || ext->off != ext->len)
    return -1;
  while (list.off < list.len)
    {
      if (!rd_u8 (&list, &type) || !rd_u16 (&list, &len) || !rd_sub (&list, len, &host))
        return -1;
      if (type == 0) /* host_name */
        return name_finish (host.p, host.len, name, n);
    }
  return -1;
}

int
sbx_sni_parse (const uint8_t *buf, size_t len, char *name, size_t n)
{
  /* TLSPlaintext: type 22 (handshake), legacy_record_version 3.x, length */
  if (len >= 1 && buf[0] != 0x16)
    return -1;
  if (len >= 2 && buf[1] != 0x03)
    return -1;
  if (len >= 6 && buf[5] != 0x01) /* handshake type client_hello */
    return -1;
  if (len < 5)
    return 0;
  size_t rec_len = (size_t) buf[3] << 8 | buf[4];
  if (rec_len == 0 || rec_len > 16384)
    return -1;
  if (len - 5 < rec_len)
    return 0; /* the record is not complete yet */

  struct rd rec = { buf + 5, rec_len, 0 }, hello, ext_all, ext;
  size_t type, hs_len, v;
  /* A ClientHello fragmented over several records is not read: it would
     need more than HELLO_MAX bytes of buffer, and no client sends one with
     a server_name this large. */
  if (!rd_u8 (&rec, &type) || type != 1 || !rd_u24 (&rec, &hs_len) || !rd_sub (&rec, hs_len, &hello))
    return -1;
  if (!rd_skip (&hello, 2 + 32)                                   /* legacy_version, random */
      || !rd_u8 (&hello, &v) || v > 32 || !rd_skip (&hello, v)     /* legacy_session_id */
      || !rd_u16 (&hello, &v) || v < 2 || v % 2 || !rd_skip (&hello, v) /* cipher_suites */
      || !rd_u8 (&hello, &v) || v < 1 || !rd_skip (&hello, v))     /* legacy_compression_methods */
    return -1;
  if (hello.off == hello.len)
    return -1; /* no extensions, so no server_name */
  if (!rd_u16 (&hello, &v) || !rd_sub (&hello, v, &ext_all) || hello.off != hello.len)
    return -1;
  int found = -1;
  bool seen = false;
  while (ext_all.off < ext_all.len)
    {
      size_t ext_type, ext_len;
      if (!rd_u16 (&ext_all, &ext_type) || !rd_u16 (&ext_all, &ext_len) || !rd_sub (&ext_all, ext_len, &ext))
        return -1;
      if (ext_type == 0)
        {
          if (seen) /* twice: a client must not send that (RFC 8446 4.2) */
            return -1;
          seen = true;
          found = sni_ext (&ext, name, n);
          if (found < 0)
            return -1;
        }
    }
  return found;
}

/* ----------------------------------------------------------- HTTP Host */

static bool
tchar (unsigned char c)
{
  return name_char_ok (c) || (c && strchr ("!#$%&'*+.^`|~", c) != NULL);
}

/* The Host value V (LEN bytes, blanks trimmed): a name with an optional
   :port.  An IP literal in brackets gives no name. */
static int
host_value (const uint8_t *v, size_t len, char *name, size_t n)
{
  const uint8_t *colon = memchr (v, ':', len);
  if (colon)
    {
      size_t digits = len - (size_t) (colon - v) - 1;
      if (digits == 0 || digits > 5)
        return -1;
      for (size_t i = 0; i < digits; i++)
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
          return -1;
      len = (size_t) (colon - v);
    }
  return name_finish (v, len, name, n);
}

/* The request line so far (LEN bytes, no line end): is it possibly the
   start of "METHOD SP target SP HTTP/1.x"? */
static bool
request_line_ok (const uint8_t *s, size_t len, bool complete)
{
  size_t i = 0;
  while (i < len && tchar (s[i]))
    i++;
  if (i == 0 && len > 0)
    return false;
  if (i > 32) /* no method is this long */
    return false;
  if (i == len)
    return !complete;
  if (s[i] != ' ')
    return false;
  size_t t = ++i;
  /* origin form ("/path") or "*" only: a server takes the name of an
     absolute-form target ("http://other/") over the Host header, and an
     authority-form target is CONNECT's */
  if (t < len && s[t] != '/' && s[t] != '*')
    return false;
  while (i < len && s[i] > ' ' && s[i] < 0x7f)
    i++;
  if (i == len)
    return !complete;
  if (i == t || s[i] != ' ' || (s[t] == '*' && i != t + 1))
    return false;
  i++;
  static const char version[] = "HTTP/1.";
  size_t rest = len - i;
  if (memcmp (s + i, version, rest < 7 ? rest : 7) != 0)
    return false;
  if (rest < 8)
    return !complete;
  return rest == 8 && s[i + 7] >= '0' && s[i + 7] <= '9';
}

int
sbx_http_host_parse (const uint8_t *buf, size_t len, char *name, size_t n)
{
  size_t off = 0, hosts = 0;
  int found = -1;
  for (size_t line_no = 0;; line_no++)
    {
      const uint8_t *nl = memchr (buf + off, '\n', len - off);
      size_t end = nl ? (size_t) (nl - buf) : len;
      const uint8_t *s = buf + off;
      size_t l = end - off;
      if (l > 0 && s[l - 1] == '\r')
        l--; /* a line end, or the start of one still arriving */
      if (memchr (s, '\r', l))
        return -1; /* a bare CR */
      if (line_no == 0)
        {
          if (!request_line_ok (s, l, nl != NULL))
            return -1;
        }
      else if (nl == NULL)
        ; /* a header line still arriving: judged when complete */
      else if (l == 0)
        {
          /* the end of the head */
          if (hosts != 1)
            return -1;
          return found;
        }
      else
        {
          if (s[0] == ' ' || s[0] == '\t')
            return -1; /* obsolete line folding */
          size_t k = 0;
          while (k < l && tchar (s[k]))
            k++;
          if (k == 0 || k == l || s[k] != ':')
            return -1;
          size_t vs = k + 1, ve = l;
          for (size_t i = vs; i < l; i++)
            if ((s[i] < ' ' && s[i] != '\t') || s[i] == 0x7f)
              return -1;
          while (vs < ve && (s[vs] == ' ' || s[vs] == '\t'))
            vs++;
          while (ve > vs && (s[ve - 1] == ' ' || s[ve - 1] == '\t'))
            ve--;
          if (k == 4 && strncasecmp ((const char *) s, "host", 4) == 0)
            {
              if (++hosts > 1)
                return -1; /* two Host headers: ambiguous */
              found = host_value (s + vs, ve - vs, name, n);
              if (found < 0)
                return -1;
            }
        }
      if (nl == NULL)
        return 0;
      off = end + 1;
    }
}

/* ------------------------------------------- requests after the first */

enum { HS_HEAD, HS_BODY, HS_CHUNK_LINE, HS_CHUNK_DATA, HS_CHUNK_END, HS_TRAILER, HS_WAIT, HS_OPAQUE };

void
sbx_http_stream_init (struct sbx_http_stream *hs, const char *name)
{
  memset (hs, 0, sizeof *hs);
  snprintf (hs->name, sizeof hs->name, "%s", name);
  hs->state = HS_HEAD;
}

bool
sbx_http_stream_waiting (const struct sbx_http_stream *hs)
{
  return hs->state == HS_WAIT;
}

/* Is the header line S (L bytes, no line end) "NAME: ..."?  Then its
   value, trimmed, in *V, *VL. */
static bool
header_is (const uint8_t *s, size_t l, const char *name, const uint8_t **v, size_t *vl)
{
  size_t k = strlen (name);
  if (l <= k || s[k] != ':' || strncasecmp ((const char *) s, name, k) != 0)
    return false;
  size_t a = k + 1, b = l;
  while (a < b && (s[a] == ' ' || s[a] == '\t'))
    a++;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
    b--;
  *v = s + a;
  *vl = b - a;
  return true;
}

/* A complete request head in hs->buf: same host, and its body's framing.
   0, or -1 when the connection must end. */
static int
head_done (struct sbx_http_stream *hs)
{
  char name[SBX_NETPROXY_NAME_MAX + 1];
  if (sbx_http_host_parse (hs->buf, hs->len, name, sizeof name) != 1 || strcmp (name, hs->name) != 0)
    return -1;
  bool has_length = false, chunked = false, has_te = false;
  uint64_t length = 0;
  hs->upgrade = false;
  size_t off = 0;
  for (bool first = true;; first = false)
    {
      const uint8_t *nl = memchr (hs->buf + off, '\n', hs->len - off);
      if (nl == NULL)
        break;
      const uint8_t *s = hs->buf + off;
      size_t l = (size_t) (nl - s);
      if (l > 0 && s[l - 1] == '\r')
        l--;
      off = (size_t) (nl - hs->buf) + 1;
      if (first)
        continue; /* the request line */
      const uint8_t *v;
      size_t vl;
      if (header_is (s, l, "content-length", &v, &vl))
        {
          if (has_length || vl == 0 || vl > 15)
            return -1;
          for (size_t i = 0; i < vl; i++)
            {
              if (v[i] < '0' || v[i] > '9')
                return -1;
              length = length * 10 + (uint64_t) (v[i] - '0');
            }
          has_length = true;
        }
      else if (header_is (s, l, "transfer-encoding", &v, &vl))
        {
          /* the last coding must be chunked, or the end is unknowable */
          if (has_te)
            return -1;
          has_te = true;
          chunked = vl >= 7 && strncasecmp ((const char *) v + vl - 7, "chunked", 7) == 0
                    && (vl == 7 || v[vl - 8] == ',' || v[vl - 8] == ' ');
          if (!chunked)
            return -1;
        }
      else if (header_is (s, l, "upgrade", &v, &vl))
        hs->upgrade = true;
    }
  if (has_length && has_te)
    return -1; /* the classic request smuggling ambiguity */
  hs->len = 0;
  if (chunked)
    hs->state = HS_CHUNK_LINE;
  else if (length > 0)
    {
      hs->state = HS_BODY;
      hs->left = length;
    }
  else
    hs->state = hs->upgrade ? HS_WAIT : HS_HEAD;
  return 0;
}

/* Append byte C to hs->buf; false when the line or head is too long. */
static bool
take (struct sbx_http_stream *hs, uint8_t c)
{
  if (hs->len == sizeof hs->buf)
    return false;
  hs->buf[hs->len++] = c;
  return true;
}

/* The line in hs->buf (ending in '\n') without its line end: length. */
static size_t
line_len (const struct sbx_http_stream *hs)
{
  size_t l = hs->len - 1;
  if (l > 0 && hs->buf[l - 1] == '\r')
    l--;
  return l;
}

static void
request_end (struct sbx_http_stream *hs)
{
  hs->len = 0;
  hs->state = hs->upgrade ? HS_WAIT : HS_HEAD;
}

ssize_t
sbx_http_stream_client (struct sbx_http_stream *hs, const uint8_t *b, size_t n)
{
  size_t i = 0;
  while (i < n)
    switch (hs->state)
      {
      case HS_OPAQUE:
        return (ssize_t) n;
      case HS_WAIT:
        return (ssize_t) i;
      case HS_BODY:
      case HS_CHUNK_DATA:
        {
          uint64_t k = n - i < hs->left ? n - i : hs->left;
          i += (size_t) k;
          hs->left -= k;
          if (hs->left == 0)
            {
              if (hs->state == HS_BODY)
                request_end (hs);
              else
                hs->state = HS_CHUNK_END;
            }
          break;
        }
      default:
        {
          /* a head, or a line of chunked framing */
          uint8_t c = b[i++];
          if (hs->state == HS_HEAD && hs->len == 0 && (c == '\r' || c == '\n'))
            break; /* blank lines between requests are allowed */
          if (!take (hs, c) || (hs->state != HS_HEAD && hs->len > 1024))
            return -1;
          if (c != '\n')
            break;
          if (hs->state == HS_HEAD)
            {
              /* the head ends at an empty line: "\n\n" or "\n\r\n" */
              size_t e = hs->len - 1;
              bool empty = (e >= 1 && hs->buf[e - 1] == '\n')
                           || (e >= 2 && hs->buf[e - 1] == '\r' && hs->buf[e - 2] == '\n');
              if (empty && head_done (hs) < 0)
                return -1;
              break;
            }
          size_t l = line_len (hs);
          if (hs->state == HS_CHUNK_LINE)
            {
              uint64_t size = 0;
              size_t d = 0;
              while (d < l && d < 16)
                {
                  uint8_t x = hs->buf[d];
                  int v = x >= '0' && x <= '9' ? x - '0' : x >= 'a' && x <= 'f' ? x - 'a' + 10
                                                        : x >= 'A' && x <= 'F' ? x - 'A' + 10 : -1;
                  if (v < 0)
                    break;
                  size = size * 16 + (uint64_t) v;
                  d++;
                }
              if (d == 0 || (d < l && hs->buf[d] != ';' && hs->buf[d] != ' ' && hs->buf[d] != '\t'))
                return -1;
              hs->len = 0;
              if (size == 0)
                hs->state = HS_TRAILER;
              else
                {
                  hs->state = HS_CHUNK_DATA;
                  hs->left = size;
                }
            }
          else if (hs->state == HS_CHUNK_END)
            {
              if (l != 0)
                return -1;
              hs->len = 0;
              hs->state = HS_CHUNK_LINE;
            }
          else /* HS_TRAILER: header lines up to an empty one */
            {
              if (l == 0)
                request_end (hs);
              else
                hs->len = 0;
            }
          break;
        }
      }
  return (ssize_t) i;
}

void
sbx_http_stream_server (struct sbx_http_stream *hs, const uint8_t *b, size_t n)
{
  if (hs->state != HS_WAIT)
    return;
  /* "HTTP/1.x 101": switched, the rest is not HTTP; anything else: the
     server goes on with HTTP, and so does the check */
  static const char want[] = "HTTP/1.x 101";
  for (size_t i = 0; i < n && hs->len < sizeof want - 1; i++)
    hs->buf[hs->len++] = b[i];
  if (hs->len < sizeof want - 1)
    return;
  bool switched = memcmp (hs->buf, "HTTP/1.", 7) == 0 && memcmp (hs->buf + 8, " 101", 4) == 0;
  hs->len = 0;
  hs->state = switched ? HS_OPAQUE : HS_HEAD;
}

/* ------------------------------------------------ remembered addresses */

static uint32_t
name_hash (const char *s)
{
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char) *s) * 16777619u;
  return h;
}

int
sbx_memo_put (struct sbx_memo *m, const char *name, uint32_t addr, uint64_t expires, uint64_t now)
{
  uint32_t h = name_hash (name);
  size_t max = m->max ? m->max : MEMO_MAX;
  struct sbx_memo_entry *victim = NULL;
  bool victim_expired = false;
  for (size_t i = 0; i < m->n; i++)
    {
      struct sbx_memo_entry *e = &m->e[i];
      if (e->hash == h && e->addr == addr && strcmp (e->name, name) == 0)
        {
          if (expires > e->expires || e->expires <= now)
            e->expires = expires;
          e->seq = ++m->seq;
          return 0;
        }
      if (victim_expired)
        continue;
      if (e->expires <= now)
        {
          victim = e;
          victim_expired = true;
        }
      else if (victim == NULL || e->seq < victim->seq)
        victim = e;
    }
  char *copy = strdup (name);
  if (copy == NULL)
    return -1;
  if (!victim_expired && m->n < max)
    {
      victim = sbx_grow (&m->e, &m->n, &m->cap, sizeof *m->e);
      if (victim == NULL)
        {
          free (copy);
          return -1;
        }
    }
  else
    free (victim->name);
  *victim = (struct sbx_memo_entry) { .name = copy, .hash = h, .addr = addr, .expires = expires, .seq = ++m->seq };
  return 0;
}

bool
sbx_memo_has (const struct sbx_memo *m, const char *name, uint32_t addr, uint64_t now)
{
  uint32_t h = name_hash (name);
  for (size_t i = 0; i < m->n; i++)
    {
      const struct sbx_memo_entry *e = &m->e[i];
      if (e->hash == h && e->addr == addr && e->expires > now && strcmp (e->name, name) == 0)
        return true;
    }
  return false;
}

void
sbx_memo_free (struct sbx_memo *m)
{
  for (size_t i = 0; i < m->n; i++)
    free (m->e[i].name);
  free (m->e);
  *m = (struct sbx_memo) { 0 };
}

/* ------------------------------------------------------------- verdict */

bool
sbx_netproxy_decide_why (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops,
                         sbx_netproxy_remembered_fn remembered, void *ctx, const char *name, uint32_t dst, char *rule,
                         size_t n)
{
  static const struct sbx_net_policy none = { .enabled = false };
  if (p == NULL || !p->enabled)
    return sbx_net_ip_verdict (&none, NULL, 0, dst, rule, n);
  if (sbx_net_platform_denied (dst))
    {
      bool op = false;
      for (size_t i = 0; i < n_ops && !op; i++)
        op = sbx_cidr_contains (&ops[i], dst);
      if (!op)
        return sbx_net_ip_verdict (p, ops, n_ops, dst, rule, n);
    }
  const char *domain = name != NULL && name[0] != '\0' ? sbx_net_domain_rule (p, name) : NULL;
  if (domain != NULL && remembered != NULL && remembered (ctx, name, dst))
    {
      if (rule && n)
        snprintf (rule, n, "allowOut %s", domain);
      return true;
    }
  bool ok = sbx_net_ip_verdict (p, ops, n_ops, dst, rule, n);
  if (!ok && domain != NULL && rule && n)
    {
      /* the name is allowed, the address was not given for it */
      size_t l = strlen (rule);
      snprintf (rule + l, n - l, " (allowOut %s: not an address resolved for it)", domain);
    }
  return ok;
}

bool
sbx_netproxy_decide (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops,
                     sbx_netproxy_remembered_fn remembered, void *ctx, const char *name, uint32_t dst)
{
  return sbx_netproxy_decide_why (p, ops, n_ops, remembered, ctx, name, dst, NULL, 0);
}

/* ---------------------------------------------------------- the proxy */

struct np_sandbox {
  uint32_t ip;
  struct sbx_net_policy policy;
  struct sbx_memo memo;
  unsigned n_conns;
  struct sbx_egress_ring log; /* its egress audit log */
};

enum conn_kind { CONN_DNS, CONN_RELAY };

struct np_conn {
  struct np_conn *prev, *next;
  struct sbx_netproxy *p;
  struct np_sandbox *sb; /* NULL once the sandbox is removed */
  enum conn_kind kind;
  uint32_t src;
  int cfd, ufd;          /* closed under the mutex, after unlinking */
  bool killed;           /* shut down by a policy change or a removal */
  bool relaying;         /* DST and NAME are set */
  bool remembered;       /* DST was remembered for NAME when connecting */
  uint32_t dst;
  char name[SBX_NETPROXY_NAME_MAX + 1];
};

struct sbx_netproxy {
  struct sockaddr_in upstream;
  struct sbx_cidr *ops;
  size_t n_ops;
  int udp_fd, dns_tcp_fd, tcp_fd, stop_fd;
  uint16_t dns_port, tcp_port;
  pthread_t dns_thread, accept_thread;
  bool dns_started, accept_started;

  pthread_mutex_t lock;
  pthread_cond_t idle; /* n_workers reached 0 */
  bool stopping;
  struct np_sandbox **sb;
  size_t n_sb, cap_sb;
  struct np_conn *conns;
  unsigned n_workers, n_udp;
};

static struct np_sandbox *
find_sandbox (struct sbx_netproxy *p, uint32_t ip)
{
  for (size_t i = 0; i < p->n_sb; i++)
    if (p->sb[i]->ip == ip)
      return p->sb[i];
  return NULL;
}

/* Under the mutex: add a decision to SB's egress log.  DST 0: no
   address (a refused name). */
static void
record_locked (struct np_sandbox *sb, const char *proto, uint32_t dst, uint16_t port, const char *name, bool allowed,
               const char *rule)
{
  struct sbx_egress_record r = { .time_ms = sbx_wall_ms (),
                                 .port = port,
                                 .verdict = allowed ? SBX_EGRESS_ALLOWED : SBX_EGRESS_DENIED };
  snprintf (r.proto, sizeof r.proto, "%s", proto);
  if (dst)
    {
      struct in_addr a = { htonl (dst) };
      inet_ntop (AF_INET, &a, r.addr, sizeof r.addr);
    }
  snprintf (r.name, sizeof r.name, "%s", name ? name : "");
  snprintf (r.rule, sizeof r.rule, "%s", rule);
  sbx_egress_ring_add (&sb->log, &r, sbx_now_ns ());
}

static bool
start_detached (void *(*fn) (void *), void *arg)
{
  pthread_t th;
  pthread_attr_t attr;
  if (pthread_attr_init (&attr) != 0)
    return false;
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize (&attr, WORKER_STACK);
  bool ok = pthread_create (&th, &attr, fn, arg) == 0;
  pthread_attr_destroy (&attr);
  return ok;
}

/* Under the mutex: the last thing a worker does with the proxy. */
static void
worker_done_locked (struct sbx_netproxy *p)
{
  if (--p->n_workers == 0)
    pthread_cond_broadcast (&p->idle);
}

/* Under the mutex. */
static void
conn_kill (struct np_conn *c)
{
  c->killed = true;
  if (c->cfd >= 0)
    shutdown (c->cfd, SHUT_RDWR);
  if (c->ufd >= 0)
    shutdown (c->ufd, SHUT_RDWR);
}

/* Wait until FD is ready for EVENTS or DEADLINE (CLOCK_MONOTONIC ns)
   passes: 1 ready, 0 timed out, -1 stopping or poll failed. */
static int
wait_fd (struct sbx_netproxy *p, int fd, short events, uint64_t deadline)
{
  for (;;)
    {
      uint64_t now = sbx_now_ns ();
      if (now >= deadline)
        return 0;
      uint64_t ms = (deadline - now + MS - 1) / MS;
      struct pollfd pfd[2] = { { fd, events, 0 }, { p->stop_fd, POLLIN, 0 } };
      int r = poll (pfd, 2, ms > INT_MAX ? INT_MAX : (int) ms);
      if (r < 0 && errno != EINTR)
        return -1;
      if (r <= 0)
        continue;
      if (pfd[1].revents)
        return -1;
      if (pfd[0].revents)
        return 1;
    }
}

/* Read exactly LEN bytes of a non-blocking socket before DEADLINE:
   1 done, 0 end of file before any byte, -1 otherwise. */
static int
read_exact (struct sbx_netproxy *p, int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t k = recv (fd, buf + done, len - done, 0);
      if (k > 0)
        done += (size_t) k;
      else if (k == 0)
        return done == 0 ? 0 : -1;
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (wait_fd (p, fd, POLLIN, deadline) <= 0)
            return -1;
        }
      else
        return -1;
    }
  return 1;
}

static int
write_all (struct sbx_netproxy *p, int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
  size_t done = 0;
  while (done < len)
    {
      ssize_t k = send (fd, buf + done, len - done, MSG_NOSIGNAL);
      if (k >= 0)
        done += (size_t) k;
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (wait_fd (p, fd, POLLOUT, deadline) <= 0)
            return -1;
        }
      else
        return -1;
    }
  return 0;
}

/* Is ADDR one of this host's own addresses?  The kernel answers: a bind
   to an address that is not local fails.  Asked at each connection, as
   the host's addresses change (any public one may be among them). */
static bool
host_address (const struct sockaddr_in *addr)
{
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return true; /* cannot tell: refuse */
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr = addr->sin_addr };
  bool local = bind (fd, (const struct sockaddr *) &a, sizeof a) == 0 || errno != EADDRNOTAVAIL;
  close (fd);
  return local;
}

/* A non-blocking TCP connection to ADDR, or -1. */
static int
connect_to (struct sbx_netproxy *p, const struct sockaddr_in *addr, uint64_t deadline)
{
  cleanup_close int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect (fd, (const struct sockaddr *) addr, sizeof *addr) < 0)
    {
      if (errno != EINPROGRESS)
        return -1;
      if (wait_fd (p, fd, POLLOUT, deadline) <= 0)
        return -1;
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0)
        return -1;
    }
  return steal_fd (&fd);
}

/* ------------------------------------------------------------------ DNS */

static uint16_t
get16 (const uint8_t *b)
{
  return (uint16_t) (b[0] << 8 | b[1]);
}

/* The end of the first question of message Q, or 0 when there is none. */
static size_t
question_end (const uint8_t *q, size_t len)
{
  if (len < 12 || get16 (q + 4) == 0)
    return 0;
  size_t off = 12;
  for (;;)
    {
      if (off >= len)
        return 0;
      uint8_t l = q[off];
      if (l == 0)
        {
          off++;
          break;
        }
      if ((l & 0xc0) == 0xc0)
        {
          off += 2;
          break;
        }
      if (l & 0xc0)
        return 0;
      off += 1u + l;
    }
  return off + 4 <= len ? off + 4 : 0;
}

/* An answer made here (see the top of the file) to query Q (LEN >= 12)
   into ANS (at least LEN bytes); its length. */
static size_t
make_reply (const uint8_t *q, size_t len, ldns_pkt_rcode rcode, uint8_t *ans)
{
  size_t end = question_end (q, len);
  size_t n = end ? end : 12;
  memcpy (ans, q, n);
  ans[2] = (uint8_t) (0x80 | (q[2] & 0x79)); /* QR, opcode and RD kept */
  ans[3] = (uint8_t) (0x80 | (rcode & 0x0f)); /* RA */
  memset (ans + 4, 0, 8);
  ans[5] = end ? 1 : 0;
  return n;
}

/* The text of a domain name (wire form in RDF), lower case, no final dot;
   false when a label holds anything but letters, digits, '-' and '_'
   (such a name is never allowed by a domain rule). */
static bool
dname_text (const ldns_rdf *rdf, char *out, size_t n)
{
  if (rdf == NULL || ldns_rdf_get_type (rdf) != LDNS_RDF_TYPE_DNAME)
    return false;
  const uint8_t *d = ldns_rdf_data (rdf);
  size_t size = ldns_rdf_size (rdf), pos = 0, o = 0;
  while (pos < size)
    {
      size_t l = d[pos++];
      if (l == 0)
        break;
      if (l > 63 || l > size - pos)
        return false;
      if (o > 0)
        {
          if (o + 1 >= n)
            return false;
          out[o++] = '.';
        }
      for (size_t i = 0; i < l; i++)
        {
          if (!name_char_ok (d[pos + i]) || o + 1 >= n)
            return false;
          out[o++] = lower (d[pos + i]);
        }
      pos += l;
    }
  out[o] = '\0';
  return o > 0;
}

/* Ask the upstream over UDP (2 s, one retry); the answer's length in ANS
   (of CAP bytes), or -1. */
static ssize_t
upstream_udp (struct sbx_netproxy *p, const uint8_t *q, size_t qlen, uint8_t *ans, size_t cap)
{
  cleanup_close int fd = socket (AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect (fd, (const struct sockaddr *) &p->upstream, sizeof p->upstream) < 0)
    return -1;
  for (int attempt = 0; attempt < 2; attempt++)
    {
      if (send (fd, q, qlen, MSG_NOSIGNAL) < 0 && errno != ECONNREFUSED)
        return -1;
      uint64_t deadline = sbx_now_ns () + UPSTREAM_UDP_TIMEOUT_MS * MS;
      for (;;)
        {
          int r = wait_fd (p, fd, POLLIN, deadline);
          if (r < 0)
            return -1;
          if (r == 0)
            break;
          ssize_t k = recv (fd, ans, cap, 0);
          if (k < 0)
            {
              if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
                continue;
              return -1;
            }
          /* same id and a response: ours (the socket is connected) */
          if (k >= 12 && ans[0] == q[0] && ans[1] == q[1] && (ans[2] & 0x80))
            return k;
        }
    }
  return -1;
}

/* Ask the upstream over TCP (5 s in all). */
static ssize_t
upstream_tcp (struct sbx_netproxy *p, const uint8_t *q, size_t qlen, uint8_t *ans, size_t cap)
{
  uint64_t deadline = sbx_now_ns () + UPSTREAM_TCP_TIMEOUT_MS * MS;
  cleanup_close int fd = connect_to (p, &p->upstream, deadline);
  if (fd < 0)
    return -1;
  uint8_t hdr[2] = { (uint8_t) (qlen >> 8), (uint8_t) qlen };
  if (write_all (p, fd, hdr, 2, deadline) < 0 || write_all (p, fd, q, qlen, deadline) < 0)
    return -1;
  if (read_exact (p, fd, hdr, 2, deadline) <= 0)
    return -1;
  size_t len = get16 (hdr);
  if (len < 12 || len > cap || read_exact (p, fd, ans, len, deadline) <= 0)
    return -1;
  if (ans[0] != q[0] || ans[1] != q[1] || !(ans[2] & 0x80))
    return -1;
  return (ssize_t) len;
}

/* Remember the A records of ANS, the upstream's answer to NAME, for the
   sandbox SRC. */
static void
remember_answer (struct sbx_netproxy *p, uint32_t src, const char *name, const uint8_t *ans, size_t len)
{
  ldns_pkt *pkt = NULL;
  if (ldns_wire2pkt (&pkt, ans, len) != LDNS_STATUS_OK)
    return;
  uint32_t addrs[REMEMBER_MAX];
  uint32_t ttls[REMEMBER_MAX];
  size_t n = 0;
  char qname[SBX_NETPROXY_NAME_MAX + 2];
  ldns_rr_list *qs = ldns_pkt_question (pkt);
  ldns_rr_list *an = ldns_pkt_answer (pkt);
  /* only an answer to the very question asked */
  if (ldns_pkt_get_rcode (pkt) == LDNS_RCODE_NOERROR && qs && ldns_rr_list_rr_count (qs) == 1
      && dname_text (ldns_rr_owner (ldns_rr_list_rr (qs, 0)), qname, sizeof qname) && strcmp (qname, name) == 0
      && an)
    for (size_t i = 0; i < ldns_rr_list_rr_count (an) && n < REMEMBER_MAX; i++)
      {
        ldns_rr *rr = ldns_rr_list_rr (an, i);
        if (ldns_rr_get_type (rr) != LDNS_RR_TYPE_A || ldns_rr_get_class (rr) != LDNS_RR_CLASS_IN)
          continue;
        ldns_rdf *a = ldns_rr_a_address (rr);
        if (a == NULL || ldns_rdf_size (a) != 4)
          continue;
        const uint8_t *d = ldns_rdf_data (a);
        addrs[n] = (uint32_t) d[0] << 24 | (uint32_t) d[1] << 16 | (uint32_t) d[2] << 8 | d[3];
        uint32_t ttl = ldns_rr_ttl (rr);
        ttls[n++] = ttl < TTL_MIN ? TTL_MIN : ttl > TTL_MAX ? TTL_MAX : ttl;
      }
  ldns_pkt_free (pkt);
  if (n == 0)
    return;
  uint64_t now = sbx_now_ns ();
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, src);
  for (size_t i = 0; sb && i < n; i++)
    sbx_memo_put (&sb->memo, name, addrs[i], now + ttls[i] * 1000 * MS, now); /* out of memory: not remembered */
  pthread_mutex_unlock (&p->lock);
}

/* The answer to query Q (QLEN bytes) from sandbox SRC, into ANS (of
   DNS_MSG_MAX bytes); its length, or 0 for no answer at all. */
static size_t
answer_query (struct sbx_netproxy *p, uint32_t src, const uint8_t *q, size_t qlen, bool tcp, uint8_t *ans)
{
  if (qlen < 12 || (q[2] & 0x80))
    return 0; /* too short to answer, or a response */
  ldns_pkt *pkt = NULL;
  bool parsed = ldns_wire2pkt (&pkt, q, qlen) == LDNS_STATUS_OK;
  ldns_pkt_opcode opcode = parsed ? ldns_pkt_get_opcode (pkt) : LDNS_PACKET_QUERY;
  ldns_rr_list *qs = parsed ? ldns_pkt_question (pkt) : NULL;
  ldns_rr *question = qs && ldns_rr_list_rr_count (qs) == 1 ? ldns_rr_list_rr (qs, 0) : NULL;
  ldns_rr_type qtype = question ? ldns_rr_get_type (question) : 0;
  char name[SBX_NETPROXY_NAME_MAX + 2];
  bool named = question && dname_text (ldns_rr_owner (question), name, sizeof name);
  bool one_question = question != NULL;
  ldns_pkt_free (pkt);

  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, src);
  bool known = sb != NULL;
  bool deny_all = sb && sbx_net_policy_deny_all (&sb->policy);
  const char *domain = sb && named ? sbx_net_domain_rule (&sb->policy, name) : NULL;
  bool allowed = domain != NULL;
  if (sb)
    {
      /* the decision taken below, in the sandbox's log */
      const char *shown = named ? name : "";
      char rule[SBX_NETPROXY_NAME_MAX + 16];
      if (!parsed || !one_question)
        record_locked (sb, "dns", 0, 0, shown, false, "malformed query");
      else if (opcode != LDNS_PACKET_QUERY)
        record_locked (sb, "dns", 0, 0, shown, false, "not a query");
      else if (qtype == LDNS_RR_TYPE_AAAA)
        record_locked (sb, "dns", 0, 0, shown, false, "IPv4 only (AAAA)");
      else if (deny_all && !allowed)
        record_locked (sb, "dns", 0, 0, shown, false, sb->policy.enabled ? "denyOut 0.0.0.0/0" : "mode none");
      else
        {
          if (domain)
            snprintf (rule, sizeof rule, "allowOut %s", domain);
          else
            snprintf (rule, sizeof rule, "default internet");
          record_locked (sb, "dns", ntohl (p->upstream.sin_addr.s_addr), ntohs (p->upstream.sin_port), shown, true,
                         rule);
        }
    }
  pthread_mutex_unlock (&p->lock);
  if (!known)
    return 0; /* removed meanwhile: as from any unknown source */
  if (!parsed)
    return make_reply (q, qlen, LDNS_RCODE_FORMERR, ans);
  if (opcode != LDNS_PACKET_QUERY)
    return make_reply (q, qlen, LDNS_RCODE_NOTIMPL, ans);
  if (!one_question)
    return make_reply (q, qlen, LDNS_RCODE_FORMERR, ans);
  if (qtype == LDNS_RR_TYPE_AAAA)
    return make_reply (q, qlen, LDNS_RCODE_NOERROR, ans); /* IPv4 only: no records */
  if (deny_all && !allowed)
    return make_reply (q, qlen, LDNS_RCODE_REFUSED, ans);

  /* A TC answer to a UDP client goes back as it is: the client asks
     again over TCP, and a TCP client's query goes upstream over TCP. */
  ssize_t alen = tcp ? upstream_tcp (p, q, qlen, ans, DNS_MSG_MAX) : upstream_udp (p, q, qlen, ans, DNS_MSG_MAX);
  if (alen < 0)
    return make_reply (q, qlen, LDNS_RCODE_SERVFAIL, ans);
  if (allowed)
    remember_answer (p, src, name, ans, (size_t) alen);
  return (size_t) alen;
}

struct udp_job {
  struct sbx_netproxy *p;
  struct sockaddr_in from;
  size_t len;
  uint8_t q[];
};

static void *
udp_main (void *arg)
{
  struct udp_job *job = arg;
  struct sbx_netproxy *p = job->p;
  uint8_t *ans = malloc (DNS_MSG_MAX);
  if (ans)
    {
      size_t alen = answer_query (p, ntohl (job->from.sin_addr.s_addr), job->q, job->len, false, ans);
      if (alen > 0)
        sendto (p->udp_fd, ans, alen, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &job->from,
                sizeof job->from);
      free (ans);
    }
  free (job);
  pthread_mutex_lock (&p->lock);
  p->n_udp--;
  worker_done_locked (p);
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

static void
spawn_udp (struct sbx_netproxy *p, const struct sockaddr_in *from, const uint8_t *q, size_t len)
{
  pthread_mutex_lock (&p->lock);
  bool ok = !p->stopping && p->n_udp < UDP_WORKERS_MAX && find_sandbox (p, ntohl (from->sin_addr.s_addr));
  if (ok)
    {
      p->n_udp++;
      p->n_workers++;
    }
  pthread_mutex_unlock (&p->lock);
  if (!ok)
    return; /* unknown source, or too many queries in flight: dropped */
  struct udp_job *job = malloc (sizeof *job + len);
  if (job)
    {
      job->p = p;
      job->from = *from;
      job->len = len;
      memcpy (job->q, q, len);
      if (start_detached (udp_main, job))
        return;
      free (job);
    }
  pthread_mutex_lock (&p->lock);
  p->n_udp--;
  worker_done_locked (p);
  pthread_mutex_unlock (&p->lock);
}

/* The worker's end: unlink, close, count down, free. */
static void
conn_end (struct np_conn *c)
{
  struct sbx_netproxy *p = c->p;
  pthread_mutex_lock (&p->lock);
  if (c->prev)
    c->prev->next = c->next;
  else
    p->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->sb)
    c->sb->n_conns--;
  if (c->cfd >= 0)
    close (c->cfd);
  if (c->ufd >= 0)
    close (c->ufd);
  worker_done_locked (p);
  pthread_mutex_unlock (&p->lock);
  free (c);
}

static void *
dns_tcp_main (void *arg)
{
  struct np_conn *c = arg;
  struct sbx_netproxy *p = c->p;
  uint8_t *q = malloc (DNS_MSG_MAX);
  uint8_t *ans = malloc (2 + DNS_MSG_MAX);
  while (q && ans)
    {
      uint64_t deadline = sbx_now_ns () + DNS_TCP_IDLE_MS * MS;
      uint8_t hdr[2];
      if (read_exact (p, c->cfd, hdr, 2, deadline) <= 0)
        break;
      size_t qlen = get16 (hdr);
      if (qlen == 0 || read_exact (p, c->cfd, q, qlen, deadline) <= 0)
        break;
      size_t alen = answer_query (p, c->src, q, qlen, true, ans + 2);
      if (alen == 0)
        break;
      ans[0] = (uint8_t) (alen >> 8);
      ans[1] = (uint8_t) alen;
      if (write_all (p, c->cfd, ans, alen + 2, sbx_now_ns () + DNS_TCP_IDLE_MS * MS) < 0)
        break;
    }
  free (q);
  free (ans);
  conn_end (c);
  return NULL;
}

/* ---------------------------------------------------------- TCP relay */

struct memo_ctx {
  const struct sbx_memo *memo;
  uint64_t now;
  bool hit;
};

static bool
memo_remembered (void *ctx, const char *name, uint32_t addr)
{
  struct memo_ctx *m = ctx;
  m->hit = sbx_memo_has (m->memo, name, addr, m->now);
  return m->hit;
}

/* A relayed connection judged again: was its address remembered for its
   name when it was made? */
static bool
conn_remembered (void *ctx, const char *name, uint32_t addr)
{
  const struct np_conn *c = ctx;
  return c->remembered && addr == c->dst && strcmp (name, c->name) == 0;
}

/* Under the mutex: may C go on to DST with NAME (NULL: none)?  RULE (of
   N bytes) gets what decided. */
static bool
conn_allowed_locked (struct sbx_netproxy *p, struct np_conn *c, const char *name, uint32_t dst, bool *remembered,
                     char *rule, size_t n)
{
  snprintf (rule, n, "%s", "sandbox removed");
  if (c->sb == NULL || c->killed || p->stopping)
    return false;
  struct memo_ctx m = { &c->sb->memo, sbx_now_ns (), false };
  bool ok = sbx_netproxy_decide_why (&c->sb->policy, p->ops, p->n_ops, memo_remembered, &m, name, dst, rule, n);
  *remembered = m.hit;
  return ok;
}

struct half {
  int from, to;
  uint8_t *buf;
  size_t off, len;
  bool eof;
  size_t ok;                  /* buf[off..ok) may be sent (client to server) */
  struct sbx_http_stream *hs; /* client to server: the requests' check, or NULL */
};

/* Let the check see the client's bytes not yet judged; false: end. */
static bool
judge (struct half *x)
{
  if (x->hs == NULL)
    {
      x->ok = x->len;
      return true;
    }
  ssize_t k = sbx_http_stream_client (x->hs, x->buf + x->ok, x->len - x->ok);
  if (k < 0)
    return false;
  x->ok += (size_t) k;
  return true;
}

/* Copy both ways until both sides reached end of file (each passed on
   with shutdown(SHUT_WR)), an error, or the proxy stops.  H[0] is client
   to upstream and may start with bytes already read. */
static void
relay (struct sbx_netproxy *p, struct half h[2])
{
  for (;;)
    {
      if (h[0].eof && h[1].eof && h[0].len == 0 && h[1].len == 0)
        return;
      /* pfd[0] is h[0].from (the client), pfd[1] is h[1].from */
      struct pollfd pfd[3] = { { h[0].from, 0, 0 }, { h[1].from, 0, 0 }, { p->stop_fd, POLLIN, 0 } };
      for (int i = 0; i < 2; i++)
        {
          if (h[i].len > 0)
            {
              if (h[i].off < h[i].ok)
                pfd[1 - i].events |= POLLOUT;
            }
          else if (!h[i].eof)
            pfd[i].events |= POLLIN;
        }
      for (int i = 0; i < 2; i++)
        if (pfd[i].events == 0)
          pfd[i].fd = -1;
      if (poll (pfd, 3, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          return;
        }
      if (pfd[2].revents)
        return;
      for (int i = 0; i < 2; i++)
        {
          struct half *x = &h[i];
          short from_ev = pfd[i].revents, to_ev = pfd[1 - i].revents;
          if (x->len > 0 && x->off < x->ok && (to_ev & (POLLOUT | POLLERR | POLLHUP)))
            {
              ssize_t k = send (x->to, x->buf + x->off, x->ok - x->off, MSG_NOSIGNAL);
              if (k < 0 && errno != EAGAIN && errno != EINTR)
                return;
              if (k > 0)
                {
                  x->off += (size_t) k;
                  if (x->off == x->len)
                    x->off = x->len = x->ok = 0;
                }
            }
          else if (x->len == 0 && !x->eof && (from_ev & (POLLIN | POLLERR | POLLHUP)))
            {
              ssize_t k = recv (x->from, x->buf, RELAY_BUF, 0);
              if (k < 0 && errno != EAGAIN && errno != EINTR)
                return;
              if (k == 0)
                {
                  x->eof = true;
                  shutdown (x->to, SHUT_WR);
                }
              else if (k > 0)
                {
                  x->len = (size_t) k;
                  if (!judge (x))
                    return;
                  if (i == 1 && h[0].hs && sbx_http_stream_waiting (h[0].hs))
                    {
                      /* the answer to an Upgrade: the held bytes again */
                      sbx_http_stream_server (h[0].hs, x->buf, x->len);
                      if (!judge (&h[0]))
                        return;
                    }
                }
            }
        }
    }
}

/* Read the first bytes of the client until they give a name (or will
   not), HELLO_MAX bytes or 5 s.  The length read, or -1 to give up. */
static ssize_t
read_hello (struct sbx_netproxy *p, int fd, uint8_t *buf, char *name, size_t n, bool *found)
{
  uint64_t deadline = sbx_now_ns () + HELLO_TIMEOUT_MS * MS;
  size_t len = 0;
  *found = false;
  while (len < HELLO_MAX)
    {
      ssize_t k = recv (fd, buf + len, HELLO_MAX - len, 0);
      if (k < 0)
        {
          if (errno != EAGAIN && errno != EINTR)
            return -1;
          int r = wait_fd (p, fd, POLLIN, deadline);
          if (r < 0)
            return -1;
          if (r == 0)
            break; /* 5 s: decide with what came */
          continue;
        }
      if (k == 0)
        break;
      len += (size_t) k;
      int r = buf[0] == 0x16 ? sbx_sni_parse (buf, len, name, n) : sbx_http_host_parse (buf, len, name, n);
      if (r != 0)
        {
          *found = r > 0;
          break;
        }
    }
  return (ssize_t) len;
}

static void *
relay_main (void *arg)
{
  struct np_conn *c = arg;
  struct sbx_netproxy *p = c->p;
  uint8_t *cbuf = NULL, *ubuf = NULL;
  int ufd = -1;
  struct sockaddr_in dst, self;
  socklen_t dl = sizeof dst, sl = sizeof self;
  if (getsockopt (c->cfd, SOL_IP, SO_ORIGINAL_DST, &dst, &dl) < 0 || dst.sin_family != AF_INET
      || getsockname (c->cfd, (struct sockaddr *) &self, &sl) < 0)
    goto out;
  /* not redirected: a connection made to the proxy itself */
  if (dst.sin_addr.s_addr == self.sin_addr.s_addr && dst.sin_port == self.sin_port)
    goto out;
  uint32_t dst_ip = ntohl (dst.sin_addr.s_addr);
  cbuf = malloc (RELAY_BUF);
  ubuf = malloc (RELAY_BUF);
  if (cbuf == NULL || ubuf == NULL)
    goto out;
  char name[SBX_NETPROXY_NAME_MAX + 1];
  bool found, remembered;
  ssize_t len = read_hello (p, c->cfd, cbuf, name, sizeof name, &found);
  if (len < 0)
    goto out;
  const char *proto = len > 0 && cbuf[0] == 0x16 ? "tls" : "http";
  uint16_t dst_port = ntohs (dst.sin_port);
  char rule[sizeof ((struct sbx_egress_record *) 0)->rule];
  pthread_mutex_lock (&p->lock);
  bool ok = conn_allowed_locked (p, c, found ? name : NULL, dst_ip, &remembered, rule, sizeof rule);
  pthread_mutex_unlock (&p->lock);
  /* never to the host itself: the filter runs on the host, where the
     host's rules for sandboxes (the input chain) do not see it */
  if (ok && host_address (&dst))
    {
      ok = false;
      snprintf (rule, sizeof rule, "host");
    }
  pthread_mutex_lock (&p->lock);
  if (c->sb)
    record_locked (c->sb, proto, dst_ip, dst_port, found ? name : "", ok, rule);
  pthread_mutex_unlock (&p->lock);
  if (!ok)
    goto out;
  ufd = connect_to (p, &dst, sbx_now_ns () + CONNECT_TIMEOUT_MS * MS);
  if (ufd < 0)
    goto out;
  /* judged again: the policy may have changed while connecting */
  pthread_mutex_lock (&p->lock);
  ok = conn_allowed_locked (p, c, found ? name : NULL, dst_ip, &remembered, rule, sizeof rule);
  if (!ok && c->sb)
    record_locked (c->sb, proto, dst_ip, dst_port, found ? name : "", false, rule);
  bool ip_ok = ok && sbx_net_ip_allowed (&c->sb->policy, p->ops, p->n_ops, dst_ip);
  if (ok)
    {
      c->ufd = ufd;
      c->dst = dst_ip;
      snprintf (c->name, sizeof c->name, "%s", found ? name : "");
      c->remembered = remembered;
      c->relaying = true;
    }
  pthread_mutex_unlock (&p->lock);
  if (!ok)
    {
      close (ufd);
      goto out;
    }
  /* a plain HTTP connection let through by its Host (and not by an
     address rule): every later request must name the same host */
  struct sbx_http_stream *hs = NULL;
  if (found && len > 0 && cbuf[0] != 0x16 && !ip_ok)
    {
      hs = malloc (sizeof *hs);
      if (hs == NULL)
        goto out;
      sbx_http_stream_init (hs, name);
    }
  struct half h[2] = { { c->cfd, c->ufd, cbuf, 0, (size_t) len, false, 0, hs },
                       { c->ufd, c->cfd, ubuf, 0, 0, false, 0, NULL } };
  if (judge (&h[0]))
    relay (p, h);
  free (hs);
out:
  free (cbuf);
  free (ubuf);
  conn_end (c);
  return NULL;
}

/* A connection accepted from SRC: served by a worker if SRC is a
   sandbox with room for it, else closed. */
static void
spawn_conn (struct sbx_netproxy *p, int fd, uint32_t src, enum conn_kind kind)
{
  struct np_conn *c = calloc (1, sizeof *c);
  if (c == NULL)
    {
      close (fd);
      return;
    }
  c->p = p;
  c->kind = kind;
  c->src = src;
  c->cfd = fd;
  c->ufd = -1;
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, src);
  if (p->stopping || sb == NULL || sb->n_conns >= CONNS_PER_SANDBOX)
    {
      pthread_mutex_unlock (&p->lock);
      close (fd);
      free (c);
      return;
    }
  c->sb = sb;
  sb->n_conns++;
  p->n_workers++;
  c->next = p->conns;
  if (p->conns)
    p->conns->prev = c;
  p->conns = c;
  pthread_mutex_unlock (&p->lock);
  if (!start_detached (kind == CONN_DNS ? dns_tcp_main : relay_main, c))
    conn_end (c);
}

static void
accept_all (struct sbx_netproxy *p, int lfd, enum conn_kind kind)
{
  for (int i = 0; i < 64; i++)
    {
      struct sockaddr_in from;
      socklen_t fl = sizeof from;
      int fd = accept4 (lfd, (struct sockaddr *) &from, &fl, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0)
        return; /* EAGAIN, or a connection that failed already */
      if (fl != sizeof from || from.sin_family != AF_INET)
        {
          close (fd);
          continue;
        }
      spawn_conn (p, fd, ntohl (from.sin_addr.s_addr), kind);
    }
}

static void *
dns_main (void *arg)
{
  struct sbx_netproxy *p = arg;
  static const size_t cap = DNS_MSG_MAX + 1;
  uint8_t *buf = malloc (cap);
  while (buf)
    {
      struct pollfd pfd[3] = { { p->udp_fd, POLLIN, 0 }, { p->dns_tcp_fd, POLLIN, 0 }, { p->stop_fd, POLLIN, 0 } };
      if (poll (pfd, 3, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (pfd[2].revents)
        break;
      for (int i = 0; i < 64 && (pfd[0].revents & POLLIN); i++)
        {
          struct sockaddr_in from;
          socklen_t fl = sizeof from;
          ssize_t k = recvfrom (p->udp_fd, buf, cap, MSG_TRUNC, (struct sockaddr *) &from, &fl);
          if (k < 0)
            break;
          if ((size_t) k < cap && fl == sizeof from && from.sin_family == AF_INET)
            spawn_udp (p, &from, buf, (size_t) k);
        }
      if (pfd[1].revents & POLLIN)
        accept_all (p, p->dns_tcp_fd, CONN_DNS);
    }
  free (buf);
  return NULL;
}

static void *
accept_main (void *arg)
{
  struct sbx_netproxy *p = arg;
  for (;;)
    {
      struct pollfd pfd[2] = { { p->tcp_fd, POLLIN, 0 }, { p->stop_fd, POLLIN, 0 } };
      if (poll (pfd, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (pfd[1].revents)
        break;
      if (pfd[0].revents & POLLIN)
        accept_all (p, p->tcp_fd, CONN_RELAY);
    }
  return NULL;
}

/* ------------------------------------------------------------------ API */

/* A socket of TYPE bound to 0.0.0.0:PORT (0: any); its port in *GOT. */
static int
bind_any (int type, uint16_t port, uint16_t *got, struct sbx_err *err)
{
  cleanup_close int fd = socket (AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sbx_fail (err, errno, "netproxy: socket");
  int one = 1;
  if (setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
    return sbx_fail (err, errno, "netproxy: SO_REUSEADDR");
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_ANY) };
  if (bind (fd, (struct sockaddr *) &a, sizeof a) < 0)
    return sbx_fail (err, errno, "netproxy: bind 0.0.0.0:%u", port);
  socklen_t al = sizeof a;
  if (getsockname (fd, (struct sockaddr *) &a, &al) < 0)
    return sbx_fail (err, errno, "netproxy: getsockname");
  if (type == SOCK_STREAM && listen (fd, SOMAXCONN) < 0)
    return sbx_fail (err, errno, "netproxy: listen");
  *got = ntohs (a.sin_port);
  return steal_fd (&fd);
}

static void
sandbox_free (struct np_sandbox *sb)
{
  if (sb)
    {
      sbx_net_policy_free (&sb->policy);
      sbx_memo_free (&sb->memo);
      sbx_egress_ring_free (&sb->log);
      free (sb);
    }
}

/* Everything but the threads and the workers. */
static void
proxy_free (struct sbx_netproxy *p)
{
  for (size_t i = 0; i < p->n_sb; i++)
    sandbox_free (p->sb[i]);
  free (p->sb);
  free (p->ops);
  int *fds[] = { &p->udp_fd, &p->dns_tcp_fd, &p->tcp_fd, &p->stop_fd };
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0)
      close (*fds[i]);
  pthread_cond_destroy (&p->idle);
  pthread_mutex_destroy (&p->lock);
  free (p);
}

int
sbx_netproxy_start (const struct sbx_netproxy_config *cfg, struct sbx_netproxy **out, struct sbx_err *err)
{
  if (cfg == NULL || out == NULL || (cfg->n_operator_allow && cfg->operator_allow == NULL))
    return sbx_failx (err, EINVAL, "netproxy: bad configuration");
  struct sbx_netproxy *p = calloc (1, sizeof *p);
  if (p == NULL)
    return sbx_fail (err, ENOMEM, "netproxy");
  p->udp_fd = p->dns_tcp_fd = p->tcp_fd = p->stop_fd = -1;
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->idle, NULL);
  p->upstream.sin_family = AF_INET;
  p->upstream.sin_addr.s_addr = htonl (cfg->upstream_ip);
  p->upstream.sin_port = htons (cfg->upstream_port ? cfg->upstream_port : 53);
  if (cfg->n_operator_allow)
    {
      p->ops = calloc (cfg->n_operator_allow, sizeof *p->ops);
      if (p->ops == NULL)
        {
          proxy_free (p);
          return sbx_fail (err, ENOMEM, "netproxy");
        }
      memcpy (p->ops, cfg->operator_allow, cfg->n_operator_allow * sizeof *p->ops);
      p->n_ops = cfg->n_operator_allow;
    }
  /* UDP and TCP DNS on one port number: take a UDP port, then the same
     for TCP; another socket may hold it for TCP, so try a few. */
  for (int tries = 0; tries < 32 && p->dns_tcp_fd < 0; tries++)
    {
      struct sbx_err e = { 0 };
      if (p->udp_fd >= 0)
        close (p->udp_fd);
      p->udp_fd = bind_any (SOCK_DGRAM, 0, &p->dns_port, err);
      if (p->udp_fd < 0)
        goto fail;
      uint16_t same;
      p->dns_tcp_fd = bind_any (SOCK_STREAM, p->dns_port, &same, &e);
      if (p->dns_tcp_fd < 0 && (e.code != EADDRINUSE || tries == 31))
        {
          if (err)
            *err = e;
          goto fail;
        }
    }
  p->tcp_fd = bind_any (SOCK_STREAM, 0, &p->tcp_port, err);
  if (p->tcp_fd < 0)
    goto fail;
  p->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->stop_fd < 0)
    {
      sbx_fail (err, errno, "netproxy: eventfd");
      goto fail;
    }
  int e = pthread_create (&p->dns_thread, NULL, dns_main, p);
  if (e != 0)
    {
      sbx_fail (err, e, "netproxy: start the DNS thread");
      goto fail;
    }
  p->dns_started = true;
  e = pthread_create (&p->accept_thread, NULL, accept_main, p);
  if (e != 0)
    {
      sbx_fail (err, e, "netproxy: start the accept thread");
      sbx_netproxy_stop (p);
      return -1;
    }
  p->accept_started = true;
  *out = p;
  return 0;
fail:
  proxy_free (p);
  return -1;
}

uint16_t
sbx_netproxy_dns_port (const struct sbx_netproxy *p)
{
  return p->dns_port;
}

uint16_t
sbx_netproxy_tcp_port (const struct sbx_netproxy *p)
{
  return p->tcp_port;
}

int
sbx_netproxy_set (struct sbx_netproxy *p, uint32_t sandbox_ip, const struct sbx_net_policy *policy,
                  struct sbx_err *err)
{
  if (p == NULL || policy == NULL)
    return sbx_failx (err, EINVAL, "netproxy: no policy");
  struct sbx_net_policy copy;
  if (sbx_net_policy_copy (&copy, policy, err) < 0)
    return -1;
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, sandbox_ip);
  if (sb == NULL)
    {
      sb = calloc (1, sizeof *sb);
      struct np_sandbox **slot = sb ? sbx_grow (&p->sb, &p->n_sb, &p->cap_sb, sizeof *p->sb) : NULL;
      if (slot == NULL)
        {
          pthread_mutex_unlock (&p->lock);
          free (sb);
          sbx_net_policy_free (&copy);
          return sbx_fail (err, ENOMEM, "netproxy: add a sandbox");
        }
      sb->ip = sandbox_ip;
      sb->policy = copy;
      *slot = sb;
      pthread_mutex_unlock (&p->lock);
      return 0;
    }
  struct sbx_net_policy old = sb->policy;
  sb->policy = copy;
  /* relayed connections the new policy no longer allows are closed; one
     still waiting for its verdict gets it from the new policy */
  for (struct np_conn *c = p->conns; c; c = c->next)
    if (c->sb == sb && c->kind == CONN_RELAY && c->relaying && !c->killed
        && !sbx_netproxy_decide (&sb->policy, p->ops, p->n_ops, conn_remembered, c, c->name[0] ? c->name : NULL,
                                 c->dst))
      conn_kill (c);
  pthread_mutex_unlock (&p->lock);
  sbx_net_policy_free (&old);
  return 0;
}

void
sbx_netproxy_remove (struct sbx_netproxy *p, uint32_t sandbox_ip)
{
  if (p == NULL)
    return;
  struct np_sandbox *sb = NULL;
  pthread_mutex_lock (&p->lock);
  for (size_t i = 0; i < p->n_sb; i++)
    if (p->sb[i]->ip == sandbox_ip)
      {
        sb = p->sb[i];
        p->sb[i] = p->sb[--p->n_sb];
        break;
      }
  if (sb)
    for (struct np_conn *c = p->conns; c; c = c->next)
      if (c->sb == sb)
        {
          conn_kill (c);
          c->sb = NULL;
        }
  pthread_mutex_unlock (&p->lock);
  sandbox_free (sb);
}

void
sbx_netproxy_stop (struct sbx_netproxy *p)
{
  if (p == NULL)
    return;
  pthread_mutex_lock (&p->lock);
  p->stopping = true;
  pthread_mutex_unlock (&p->lock);
  if (p->stop_fd >= 0)
    eventfd_write (p->stop_fd, 1);
  if (p->dns_started)
    pthread_join (p->dns_thread, NULL);
  if (p->accept_started)
    pthread_join (p->accept_thread, NULL);
  pthread_mutex_lock (&p->lock);
  for (struct np_conn *c = p->conns; c; c = c->next)
    conn_kill (c);
  while (p->n_workers > 0)
    pthread_cond_wait (&p->idle, &p->lock);
  pthread_mutex_unlock (&p->lock);
  proxy_free (p);
}

void
sbx_netproxy_record_packet (struct sbx_netproxy *p, uint32_t src, enum sbx_netproxy_kernel_rule why,
                            const char *proto, uint32_t dst, uint16_t port)
{
  if (p == NULL)
    return;
  static const char *const kinds[] = { [SBX_KRULE_PLATFORM] = "platform", [SBX_KRULE_DENY] = "denyOut",
                                       [SBX_KRULE_ALLOW] = "allowOut", [SBX_KRULE_INTERNET] = "default internet",
                                       [SBX_KRULE_NONE] = "mode none", [SBX_KRULE_HOST] = "host" };
  if ((unsigned) why >= sizeof kinds / sizeof kinds[0])
    return;
  bool allowed = why == SBX_KRULE_ALLOW || why == SBX_KRULE_INTERNET;
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, src);
  if (sb)
    {
      /* the kernel says which rule; the policy says which entry of it (if
         the policy changed since, just the rule) */
      char rule[sizeof ((struct sbx_egress_record *) 0)->rule];
      sbx_net_ip_verdict (&sb->policy, p->ops, p->n_ops, dst, rule, sizeof rule);
      size_t kl = strlen (kinds[why]);
      if (why == SBX_KRULE_HOST || strncmp (rule, kinds[why], kl) != 0 || (rule[kl] != ' ' && rule[kl] != '\0'))
        snprintf (rule, sizeof rule, "%s", kinds[why]);
      record_locked (sb, proto, dst, port, "", allowed, rule);
    }
  pthread_mutex_unlock (&p->lock);
}

int
sbx_netproxy_egress_log (struct sbx_netproxy *p, uint32_t sandbox_ip, uint64_t after, size_t limit,
                         struct sbx_egress_record **out, size_t *n, uint64_t *dropped, struct sbx_err *err)
{
  *out = NULL;
  *n = 0;
  *dropped = 0;
  if (p == NULL)
    return 0;
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, sandbox_ip);
  int r = sb ? sbx_egress_ring_read (&sb->log, after, limit, out, n) : 0;
  if (sb)
    *dropped = sb->log.dropped;
  pthread_mutex_unlock (&p->lock);
  if (r < 0)
    return sbx_fail (err, ENOMEM, "egress log");
  return 0;
}
