/*
 * netproxy.c - the DNS filter and the HTTP/TLS name filter (see
 * netproxy.h for what they enforce).
 *
 * Threads: two, each an event loop (epoll) that serves everything of its
 * kind without blocking:
 *   - the DNS loop reads the UDP sockets (a group of SBX_DNS_SOCKS: see
 *     dns_socks_bind), accepts TCP DNS connections on
 *     the same port number and reads their queries; a query that goes
 *     upstream gets a socket of its own (UDP: a fresh source port, the
 *     answer matched by the connected address and the id; TCP: a
 *     connection of its own), watched by the same loop with a timeout;
 *   - the HTTP/TLS loop accepts the redirected connections, reads their
 *     first bytes, decides, connects to the original destination and
 *     relays both ways through two buffers.
 * So a slow upstream or a stalled peer costs a socket and a little
 * memory, never a thread, and the bounds below keep one sandbox from
 * taking what another needs.
 *
 * Bounds (sbx_netproxy_limits; docs/network.md, "Bounds of the filters"):
 * per sandbox, DNS queries waiting for the upstream (DNS_INFLIGHT) and a
 * query rate (DNS_RATE, a token bucket), TCP connections, DNS and relayed
 * (CONNS_PER_SANDBOX), and relayed connections whose first bytes are still
 * awaited (HELLO_PER_SANDBOX, each for at most HELLO_TIMEOUT_MS).  A query
 * over a bound gets SERVFAIL at once; a connection over a bound is closed
 * at once.  Of each sandbox's queries and connections the first few
 * (DNS_INFLIGHT_OWN, CONNS_OWN) are always there; the rest come from a
 * pool shared by all sandboxes (DNS_INFLIGHT_SHARED, CONNS_SHARED), so
 * that the sandboxes together are bounded too and no sandbox, however
 * many others flood, is left with nothing.
 * Only registered sandboxes are served: anything from another source is
 * dropped or closed at once.
 *
 * Locking: one mutex guards the sandbox table (policies, remembered
 * addresses, counts, egress logs), the pools and the list of TCP
 * connections.  A sandbox is referenced by the table and by each of its
 * queries and connections, and freed with the last reference, so that a
 * loop never holds a freed one.  A connection's descriptors are closed
 * only under the mutex, after the connection left the list, so a thread
 * that changes a policy can shutdown() the descriptors of the connections
 * it no longer allows without racing with their reuse; the shutdown makes
 * the loop's reads end, and the loop cleans up.
 *
 * Stopping: an eventfd in both loops' epoll sets becomes readable; the
 * loops return, are joined, and sbx_netproxy_stop ends what they served.
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
 * which this filter does only for names with request transforms (then
 * with OpenSSL, egress_tls.h, on BIO pairs in this same loop: see struct
 * tls_relay).  They read untrusted bytes from sandboxes and check every
 * length against the bytes present.
 */
#include "netproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <search.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <linux/filter.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <linux/netfilter_ipv4.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../common/log.h"
#include "../common/util.h"
#include "egress.h"
#include "egress_tls.h"
#include "netproxy_internal.h"

/* the bounds; sbx_netproxy_limits may change the per-sandbox ones */
#define DNS_INFLIGHT 64              /* per sandbox: queries waiting for the upstream */
#define DNS_INFLIGHT_OWN 16          /* ... of which always there */
#define DNS_INFLIGHT_SHARED 2048     /* all sandboxes: the rest */
#define DNS_RATE 200                 /* per sandbox: queries a second, in bursts of twice that */
#define DNS_WAITING 256              /* per sandbox: UDP queries read and waiting for their turn */
#define DNS_WAITING_BYTES 65536      /* ... and their bytes */
#define DNS_SOCK_INTAKE 256          /* UDP queries read from one of the DNS sockets in one turn, at most */
#define DNS_TURNS 16                 /* ... and served, one sandbox after another, before they are read again */
#define CONNS_PER_SANDBOX 256        /* per sandbox: TCP connections, DNS and relayed */
#define CONNS_OWN 32                 /* ... of which always there */
#define CONNS_SHARED 2048            /* all sandboxes: the rest */
#define HELLO_PER_SANDBOX 32         /* per sandbox: relayed connections whose first bytes are awaited */
#define HELLO_TIMEOUT_MS 5000        /* ... for at most this long */
#define TLS_PER_SANDBOX 8            /* per sandbox: intercepted connections in their TLS handshakes */
#define TLS_HANDSHAKE_MS 10000       /* ... both of them (destination, then sandbox) within this */

#define MEMO_MAX 4096
#define HELLO_MAX (16384 + 5)        /* one TLS record, header included */
#define RELAY_BUF 32768              /* each way, once relaying, while bytes wait */
#define RELAY_ROUNDS 16              /* buffers each way in one turn of a connection */
_Static_assert (RELAY_BUF >= HELLO_MAX, "the first bytes go on in the relay buffer");
#define TLS_PAIR_BUF 18432           /* each BIO pair's buffer, each way: a ClientHello (HELLO_MAX) fits */
_Static_assert (TLS_PAIR_BUF >= HELLO_MAX, "the ClientHello goes into the pair at once");
#define CONNECT_TIMEOUT_MS 10000
#define DNS_TCP_IDLE_MS 10000
#define UPSTREAM_UDP_TIMEOUT_MS 2000 /* per try; one retry */
#define DNS_UDP_RCVBUF (512 << 10) /* each query socket's buffer, bytes (SBX_DNS_SOCKS of them) */
#define UPSTREAM_TCP_TIMEOUT_MS 5000
#define ACCEPT_PAUSE_MS 100          /* accepting again after EMFILE and the like */
#define DNS_MSG_MAX 65535
#define TTL_MIN 60
#define TTL_MAX 3600
#define REMEMBER_MAX 64              /* A records taken from one answer */

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
  if (!hs->any_host && (sbx_http_host_parse (hs->buf, hs->len, name, sizeof name) != 1 || strcmp (name, hs->name) != 0))
    return -1;
  hs->head_len = hs->len;
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
  bool in_head = hs->state == HS_HEAD;
  while (i < n)
    if (hs->rewrite && !in_head && hs->state == HS_HEAD)
      return (ssize_t) i; /* a head starts: the caller takes it apart */
    else
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
              if (empty && hs->rewrite)
                {
                  hs->head_ready = true;
                  return (ssize_t) i;
                }
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

/* Is the header line S (L bytes) one of NAMES? */
static bool
header_named (const uint8_t *s, size_t l, const char *const *names, size_t n)
{
  const uint8_t *colon = memchr (s, ':', l);
  if (colon == NULL)
    return false;
  size_t k = (size_t) (colon - s);
  for (size_t i = 0; i < n; i++)
    if (strlen (names[i]) == k && strncasecmp ((const char *) s, names[i], k) == 0)
      return true;
  return false;
}

size_t
sbx_http_head_rewrite (const uint8_t *head, size_t len, const char *const *names, const char *const *values,
                       size_t n, uint8_t *out, size_t cap)
{
  size_t o = 0, off = 0;
  bool dropping = false;
#define PUT(p, l)                                                                                                     \
  do                                                                                                                  \
    {                                                                                                                 \
      if ((l) > cap - o)                                                                                              \
        return 0;                                                                                                     \
      memcpy (out + o, (p), (l));                                                                                     \
      o += (l);                                                                                                       \
    }                                                                                                                 \
  while (0)
  for (bool first = true; off < len; first = false)
    {
      const uint8_t *nl = memchr (head + off, '\n', len - off);
      size_t end = nl ? (size_t) (nl - head) + 1 : len; /* the line with its end */
      const uint8_t *s = head + off;
      size_t l = end - off;
      size_t bare = l;
      while (bare > 0 && (s[bare - 1] == '\n' || s[bare - 1] == '\r'))
        bare--;
      if (!first && bare == 0)
        {
          /* the empty line: the new headers first */
          for (size_t i = 0; i < n; i++)
            {
              PUT (names[i], strlen (names[i]));
              PUT (": ", 2);
              PUT (values[i], strlen (values[i]));
              PUT ("\r\n", 2);
            }
          PUT (s, len - off);
          return o;
        }
      /* obsolete line folding (a line starting with a space) continues
         the header before it: it goes with it */
      if (!first && s[0] != ' ' && s[0] != '\t')
        dropping = header_named (s, bare, names, n);
      if (!dropping)
        PUT (s, l);
      off = end;
    }
#undef PUT
  return 0; /* no empty line: not a head */
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

/* ----------------------------------------------------- sandboxes, pools */

/* A sandbox known to the filters.  Referenced by the table and by each of
   its queries and connections: a removed sandbox (REMOVED, out of the
   table) is freed with its last reference.  Everything here is guarded
   by the proxy's mutex. */
struct np_sandbox {
  uint32_t ip;
  unsigned refs;
  bool removed;
  struct sbx_net_policy policy;
  struct sbx_memo memo;
  struct sbx_egress_ring log; /* its egress audit log */
  unsigned n_conns;           /* TCP connections (DNS and relayed) */
  unsigned n_hello;           /* relayed ones whose first bytes are awaited */
  unsigned n_tls;             /* intercepted ones in their TLS handshakes */
  unsigned n_queries;         /* DNS queries waiting for the upstream */
  double tokens;              /* DNS query rate: a token bucket */
  uint64_t refill_ns;         /* 0: full */
  /* UDP queries read and waiting for their turn (dns_udp_ready): only the
     DNS loop's thread touches these.  A sandbox with waiting queries is in
     the loop's turns, holding a reference. */
  struct np_waiting *waiting, *waiting_tail;
  unsigned n_waiting;
  size_t waiting_bytes;
  struct np_sandbox *turn_next;
};

struct np_waiting {
  struct np_waiting *next;
  struct sockaddr_in from;
  size_t len;
  uint8_t msg[];
};

/* A capacity shared by the sandboxes: a sandbox may hold up to CAP, of
   which its first OWN are its own (always there, whatever the others
   hold) and the rest come from a pool of MAX shared by all. */
struct np_pool {
  unsigned cap, own, max;
  unsigned used; /* of the shared MAX */
};

/* Take one for a sandbox holding *N: false when it may not. */
static bool
pool_take (struct np_pool *pl, unsigned *n)
{
  if (*n >= pl->cap)
    return false;
  if (*n >= pl->own)
    {
      if (pl->used >= pl->max)
        return false;
      pl->used++;
    }
  (*n)++;
  return true;
}

static void
pool_give (struct np_pool *pl, unsigned *n)
{
  (*n)--;
  if (*n >= pl->own)
    pl->used--;
}

/* ----------------------------------------------------------- the loops */

/* Each of the two threads (DNS; HTTP/TLS) runs one of these: epoll,
   level-triggered, and timers.  epoll is used directly: what is needed
   is readiness of a few kinds of sockets and timers of a few fixed
   lengths, about a hundred lines, where libevent or libev would be one
   more library for every program that links the core.

   Timers: every timer of one kind has the same length, so a list per
   kind, appended at its tail, stays in the order of expiry; arming,
   disarming and finding the next expiry are O(1).

   An object (query, connection) that ends is marked dead and freed only
   after the batch of events being handled, which may still name it; a
   watch whose events are 0 is not registered and its events are
   ignored. */
struct np_timer;

struct np_timers {
  struct np_timer *head, *tail;
  uint64_t ns; /* the length of every timer of this kind */
};

struct np_timer {
  struct np_timer *prev, *next;
  struct np_timers *on; /* NULL: not armed */
  uint64_t due;
  void (*fire) (struct np_timer *t);
};

struct np_watch {
  int fd;
  uint32_t events; /* registered for these; 0: not registered */
  void (*ready) (struct np_watch *w, uint32_t events);
};

enum { T_UDP_TRY, T_TCP_UPSTREAM, T_DNS_IDLE, T_HELLO, T_CONNECT, T_PAUSE, T_TLS, T_KINDS };

/* One of the DNS port's UDP sockets (sbx_netproxy_start), watched by the
   DNS loop. */
struct np_udp {
  struct np_watch w;
  struct np_loop *l;
};

enum conn_kind { CONN_DNS, CONN_RELAY };

struct np_conn;
struct np_query;

struct np_loop {
  struct sbx_netproxy *p;
  int ep;
  pthread_t thread;
  bool started;
  struct np_timers timers[T_KINDS];
  enum conn_kind kind;   /* of the connections accepted on LISTEN */
  struct np_watch listen;
  struct np_timer listen_pause; /* accepting again after EMFILE and the like */
  struct np_udp udp[SBX_DNS_SOCKS]; /* the DNS loop: queries over UDP */
  struct np_conn *dead_conns;
  struct np_query *dead_queries;
  struct np_conn *ready;  /* relayed connections with more to move */
  struct np_sandbox *turns, *turns_tail; /* the DNS loop: sandboxes with waiting queries */
  uint8_t *rx, *tx;      /* the DNS loop: DNS_MSG_MAX + 1 bytes each */
};

#define container_of(ptr, type, member) ((type *) (void *) ((char *) (ptr) - offsetof (type, member)))

static void
timer_stop (struct np_timer *t)
{
  struct np_timers *l = t->on;
  if (l == NULL)
    return;
  if (t->prev)
    t->prev->next = t->next;
  else
    l->head = t->next;
  if (t->next)
    t->next->prev = t->prev;
  else
    l->tail = t->prev;
  t->prev = t->next = NULL;
  t->on = NULL;
}

/* (Re)arm T to fire after the length of its kind L. */
static void
timer_start (struct np_timers *l, struct np_timer *t)
{
  timer_stop (t);
  t->due = sbx_now_ns () + l->ns;
  t->on = l;
  t->prev = l->tail;
  t->next = NULL;
  if (l->tail)
    l->tail->next = t;
  else
    l->head = t;
  l->tail = t;
}

/* Milliseconds until the next timer is due (-1: none). */
static int
timers_wait_ms (struct np_loop *l)
{
  uint64_t next = UINT64_MAX, now = sbx_now_ns ();
  for (int k = 0; k < T_KINDS; k++)
    if (l->timers[k].head && l->timers[k].head->due < next)
      next = l->timers[k].head->due;
  if (next == UINT64_MAX)
    return -1;
  if (next <= now)
    return 0;
  uint64_t ms = (next - now + MS - 1) / MS;
  return ms > INT_MAX ? INT_MAX : (int) ms;
}

static void
timers_run (struct np_loop *l)
{
  uint64_t now = sbx_now_ns ();
  for (int k = 0; k < T_KINDS; k++)
    while (l->timers[k].head && l->timers[k].head->due <= now)
      {
        struct np_timer *t = l->timers[k].head;
        timer_stop (t);
        t->fire (t); /* may arm it again: later than now */
      }
}

/* Watch W's descriptor for EVENTS (0: not at all).  -1 when epoll
   refuses (out of memory). */
static int
watch_set (struct np_loop *l, struct np_watch *w, uint32_t events)
{
  if (events == w->events)
    return 0;
  if (events == 0)
    {
      epoll_ctl (l->ep, EPOLL_CTL_DEL, w->fd, NULL);
      w->events = 0;
      return 0;
    }
  struct epoll_event e = { .events = events, .data.ptr = w };
  if (epoll_ctl (l->ep, w->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &e) < 0)
    return -1;
  w->events = events;
  return 0;
}

/* ---------------------------------------------------------- the proxy */

struct np_conn {
  struct np_conn *prev, *next; /* p->conns, under the mutex */
  struct np_loop *l;
  struct np_sandbox *sb;       /* a reference */
  enum conn_kind kind;
  bool dead;                   /* ended: freed after this batch of events */
  /* under the mutex: the descriptors (-1 when none), closed only after
     unlinking, so that sbx_netproxy_set and _remove may shut them down */
  struct np_watch cw, uw;      /* the client (sandbox) side, the upstream side */
  bool killed;                 /* shut down by a policy change or a removal */
  bool relaying;               /* DST and NAME are set */
  bool remembered;             /* DST was remembered for NAME when connecting */
  bool hello;                  /* holds one of the sandbox's header-phase places */
  uint32_t dst;
  char name[SBX_NETPROXY_NAME_MAX + 1];
  struct np_timer timer;       /* the deadline of the current phase */
  struct np_conn *next_dead;
  struct np_conn *next_ready;  /* on the loop's ready list */
  bool queued;                 /* ... that is */

  /* CONN_RELAY */
  int phase;                   /* R_HELLO, R_CONNECT, R_RELAY */
  struct sockaddr_in odst;     /* the original destination */
  bool found;                  /* NAME came in the first bytes */
  bool sniff;                  /* a name is looked for in the first bytes */
  bool ip_ok;                  /* an address rule alone lets it through */
  struct socks *sx;            /* through the sandbox's SOCKS5 proxy, or NULL */
  struct tls_relay *tls;       /* TLS terminated both ways (request transforms), or NULL */
  struct half {
    uint8_t *buf;
    size_t cap, off, len;
    size_t room;                /* bytes of buf (0: cap); more than cap when heads are rewritten */
    size_t ok;                  /* buf[off..ok) may be sent (client to server) */
    bool eof;
    struct sbx_http_stream *hs; /* client to server: the requests' check, or NULL */
  } h[2];                      /* h[0] client to upstream, h[1] back */

  /* CONN_DNS */
  uint8_t hdr[2];
  uint8_t *in;                 /* the query being read */
  size_t in_len, in_off;       /* in_off counts the 2 length bytes too */
  uint8_t *out;                /* the answer being written, with its length */
  size_t out_len, out_off;
  struct np_query *query;      /* waiting for the upstream */
};

enum { R_HELLO, R_CONNECT, R_RELAY };

/* The SOCKS5 exchange (RFC 1928, RFC 1929) with the sandbox's egress
   proxy, before the relay: what to send, and the answer being read. */
enum { SX_HELLO, SX_AUTH, SX_CONNECT };
struct socks {
  int step;
  bool by_name;                 /* CONNECT by name (remote DNS): a domain rule allowed it */
  struct sockaddr_in addr;      /* the proxy */
  char user[256], pass[256];    /* user "": no authentication */
  uint8_t in[4 + 1 + 255 + 2];  /* the answer so far */
  size_t in_len;
};

/* A connection whose TLS the filter terminates, because its name has
   request transforms: TLS toward the destination first (a verifying
   client), then toward the sandbox (a server presenting a leaf of the
   daemon's CA), then the plaintext goes through the halves as a plain
   HTTP connection's does, its request heads rewritten.  Each SSL talks
   to a BIO pair of fixed size (TLS_PAIR_BUF each way) whose other end
   the loop moves to and from the socket: nothing blocks, and the bytes a
   connection holds are bounded. */
enum { TLS_UP, TLS_DOWN, TLS_RELAY };
struct tls_relay {
  int step;                     /* TLS_UP, TLS_DOWN (handshakes), TLS_RELAY */
  bool slot;                    /* holds one of the sandbox's handshake places */
  SSL *ssl[2];                  /* [0] toward the sandbox (server), [1] toward the destination */
  BIO *net[2];                  /* the loop's ends of their BIO pairs */
  bool rd_eof[2];               /* the socket's end of file reached */
  bool close[2];                /* the other way ended: close_notify, then shutdown(SHUT_WR) */
  bool closed[2], wr_shut[2];
};

/* Room for rewritten request heads beyond RELAY_BUF (see judge_rewrite). */
#define REWRITE_ROOM (16384 + 5 + SBX_NET_RULE_BYTES_MAX + 16)

/* A DNS query sent upstream, for a UDP client (FROM) or a TCP connection
   (CLIENT), which waits for it.  Over UDP: a connected socket of its own
   (a fresh source port for each query, as a resolver does), tried twice;
   over TCP: a connection of its own. */
struct np_query {
  struct np_query *prev, *next; /* p->queries (the DNS loop's own) */
  struct np_loop *l;
  struct np_sandbox *sb;        /* a reference */
  struct np_conn *client;
  struct sockaddr_in from;
  struct np_watch up;
  struct np_timer timer;
  bool tcp, dead, allowed, connected;
  int tries;
  char name[SBX_NETPROXY_NAME_MAX + 2]; /* the name asked, when allowed */
  size_t off;                   /* TCP: bytes sent, then bytes read */
  uint8_t hdr[2];
  uint8_t *ans;                 /* TCP: the answer read */
  size_t ans_len;
  struct np_query *next_dead;
  size_t qlen;
  uint8_t msg[];                /* the query's 2 length bytes, then the query */
};

struct sbx_netproxy {
  struct sockaddr_in upstream;
  struct sbx_cidr *ops;
  size_t n_ops;
  int udp_fds[SBX_DNS_SOCKS]; /* the DNS port's, one group (dns_socks_bind) */
  int dns_tcp_fd, tcp_fd, stop_fd;
  uint16_t dns_port, tcp_port;
  unsigned dns_rate, hello_timeout_ms;
  struct np_loop dns, relay;

  pthread_mutex_t lock;
  bool stopping;
  /* The sandboxes by address: glibc's balanced tree (tsearch), as every
     DNS query and connection looks its sandbox up, under the lock; a
     list scanned whole cost a pointer chase per sandbox each time. */
  void *sb;
  struct np_conn *conns;
  struct np_pool conn_pool, query_pool;
  unsigned hello_cap;
  struct sbx_egress_tls *tls; /* NULL: no request transforms on HTTPS */
  struct np_query *queries; /* the DNS loop's (no lock) */
};

static int
sandbox_cmp (const void *a, const void *b)
{
  uint32_t x = ((const struct np_sandbox *) a)->ip, y = ((const struct np_sandbox *) b)->ip;
  return x < y ? -1 : x > y;
}

/* Under the mutex. */
static struct np_sandbox *
find_sandbox (struct sbx_netproxy *p, uint32_t ip)
{
  struct np_sandbox key = { .ip = ip };
  struct np_sandbox **found = tfind (&key, &p->sb, sandbox_cmp);
  return found ? *found : NULL;
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

/* tdestroy's: the table's sandboxes at the end. */
static void
sandbox_free_node (void *sb)
{
  sandbox_free (sb);
}

/* Under the mutex. */
static void
sandbox_unref_locked (struct np_sandbox *sb)
{
  if (--sb->refs == 0)
    sandbox_free (sb);
}

/* Every decision recorded, by kind and verdict (sbx_filter_decisions):
   process-wide, as the filters are one per daemon. */
static _Atomic uint64_t decisions[SBX_FILTER_KINDS][2];

const char *
sbx_filter_kind_name (enum sbx_filter_kind k)
{
  static const char *const names[SBX_FILTER_KINDS] = { [SBX_FILTER_DNS] = "dns", [SBX_FILTER_HTTP] = "http",
                                                       [SBX_FILTER_TLS] = "tls", [SBX_FILTER_PACKET] = "packet" };
  return (unsigned) k < SBX_FILTER_KINDS ? names[k] : "unknown";
}

void
sbx_filter_decisions (struct sbx_filter_decisions *out)
{
  for (int k = 0; k < SBX_FILTER_KINDS; k++)
    {
      out->allowed[k] = atomic_load_explicit (&decisions[k][1], memory_order_relaxed);
      out->denied[k] = atomic_load_explicit (&decisions[k][0], memory_order_relaxed);
    }
}

/* Under the mutex: add a decision to SB's egress log.  DST 0: no
   address (a refused name). */
static void
record_locked (struct np_sandbox *sb, const char *proto, uint32_t dst, uint16_t port, const char *name, bool allowed,
               const char *rule)
{
  enum sbx_filter_kind kind = strcmp (proto, "dns") == 0    ? SBX_FILTER_DNS
                              : strcmp (proto, "http") == 0 ? SBX_FILTER_HTTP
                              : strcmp (proto, "tls") == 0  ? SBX_FILTER_TLS
                                                            : SBX_FILTER_PACKET;
  atomic_fetch_add_explicit (&decisions[kind][allowed], 1, memory_order_relaxed);
  if (sb->removed)
    return; /* its log is gone */
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

/* Under the mutex. */
static void
conn_kill (struct np_conn *c)
{
  c->killed = true;
  if (c->cw.fd >= 0)
    shutdown (c->cw.fd, SHUT_RDWR);
  if (c->uw.fd >= 0)
    shutdown (c->uw.fd, SHUT_RDWR);
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

/* A non-blocking TCP connection to ADDR being made: its descriptor, and
   in *DONE whether it is made already; -1 when it failed. */
static int
connect_start (const struct sockaddr_in *addr, bool *done)
{
  cleanup_close int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  *done = connect (fd, (const struct sockaddr *) addr, sizeof *addr) == 0;
  if (!*done && errno != EINPROGRESS)
    return -1;
  return steal_fd (&fd);
}

/* Did the connection FD, reported writable, get made? */
static bool
connect_done (int fd)
{
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  return getsockopt (fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0;
}

/* The end of connection C (in its loop): its pending query goes, its
   places are given back, its descriptors closed; freed after the batch. */
static void query_end (struct np_query *q);

static void
conn_end (struct np_conn *c)
{
  if (c->dead)
    return;
  c->dead = true;
  struct np_loop *l = c->l;
  struct sbx_netproxy *p = l->p;
  timer_stop (&c->timer);
  watch_set (l, &c->cw, 0);
  watch_set (l, &c->uw, 0);
  if (c->query)
    {
      c->query->client = NULL;
      query_end (c->query);
      c->query = NULL;
    }
  pthread_mutex_lock (&p->lock);
  if (c->prev)
    c->prev->next = c->next;
  else
    p->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->hello)
    c->sb->n_hello--;
  if (c->tls && c->tls->slot)
    c->sb->n_tls--;
  pool_give (&p->conn_pool, &c->sb->n_conns);
  sandbox_unref_locked (c->sb);
  c->sb = NULL;
  if (c->cw.fd >= 0)
    close (c->cw.fd);
  if (c->uw.fd >= 0)
    close (c->uw.fd);
  c->cw.fd = c->uw.fd = -1;
  pthread_mutex_unlock (&p->lock);
  c->next_dead = l->dead_conns;
  l->dead_conns = c;
}

static void
conn_free (struct np_conn *c)
{
  free (c->h[0].buf);
  free (c->h[1].buf);
  free (c->h[0].hs);
  if (c->tls)
    for (int i = 0; i < 2; i++)
      {
        SSL_free (c->tls->ssl[i]); /* and its end of the pair */
        BIO_free (c->tls->net[i]);
      }
  free (c->tls);
  if (c->sx)
    explicit_bzero (c->sx, sizeof *c->sx);
  free (c->sx);
  free (c->in);
  free (c->out);
  free (c);
}

/* Free what ended in this batch of events. */
static void
loop_reap (struct np_loop *l)
{
  while (l->dead_conns)
    {
      struct np_conn *c = l->dead_conns;
      l->dead_conns = c->next_dead;
      conn_free (c);
    }
  while (l->dead_queries)
    {
      struct np_query *q = l->dead_queries;
      l->dead_queries = q->next_dead;
      free (q->ans);
      free (q);
    }
}

/* Stop accepting on L's listener for a moment: the process is out of
   descriptors or memory, and the pending connection would be reported
   again at once. */
static void
listen_pause (struct np_loop *l)
{
  watch_set (l, &l->listen, 0);
  timer_start (&l->timers[T_PAUSE], &l->listen_pause);
}

static void
listen_resume (struct np_timer *t)
{
  struct np_loop *l = container_of (t, struct np_loop, listen_pause);
  if (watch_set (l, &l->listen, EPOLLIN) < 0)
    timer_start (&l->timers[T_PAUSE], &l->listen_pause);
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

/* Remember the A records of ANS, the upstream's answer to NAME, for the
   sandbox SB. */
static void
remember_answer (struct sbx_netproxy *p, struct np_sandbox *sb, const char *name, const uint8_t *ans, size_t len)
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
  for (size_t i = 0; !sb->removed && i < n; i++)
    sbx_memo_put (&sb->memo, name, addrs[i], now + ttls[i] * 1000 * MS, now); /* out of memory: not remembered */
  pthread_mutex_unlock (&p->lock);
}

/* Under the mutex: may SB ask one more DNS query now (its rate)? */
static bool
query_rate_ok (struct sbx_netproxy *p, struct np_sandbox *sb)
{
  uint64_t now = sbx_now_ns ();
  double burst = 2.0 * p->dns_rate;
  if (sb->refill_ns == 0)
    sb->tokens = burst;
  else
    {
      sb->tokens += (double) (now - sb->refill_ns) * p->dns_rate / 1e9;
      if (sb->tokens > burst)
        sb->tokens = burst;
    }
  sb->refill_ns = now;
  if (sb->tokens < 1.0)
    return false;
  sb->tokens -= 1.0;
  return true;
}

enum dns_action {
  DNS_DROP,    /* no answer at all */
  DNS_REPLY,   /* answered here with *RCODE */
  DNS_FORWARD, /* to the upstream: one of SB's places for queries is taken */
};

/* The fate of query Q (QLEN bytes) of the sandbox SB.  For DNS_FORWARD,
   NAME gets the name asked when *ALLOWED (a domain rule allows it: its
   answer's addresses are remembered). */
static enum dns_action
dns_judge (struct sbx_netproxy *p, struct np_sandbox *sb, const uint8_t *q, size_t qlen, ldns_pkt_rcode *rcode,
           char *name, bool *allowed)
{
  *allowed = false;
  if (qlen < 12 || (q[2] & 0x80))
    return DNS_DROP; /* too short to answer, or a response */
  pthread_mutex_lock (&p->lock);
  bool known = !sb->removed, rate_ok = known && query_rate_ok (p, sb);
  if (known && !rate_ok)
    record_locked (sb, "dns", 0, 0, "", false, "quota: query rate");
  pthread_mutex_unlock (&p->lock);
  if (!known)
    return DNS_DROP; /* removed meanwhile: as from any unknown source */
  *rcode = LDNS_RCODE_SERVFAIL;
  if (!rate_ok)
    return DNS_REPLY; /* over its rate: refused at once, before any parsing */

  ldns_pkt *pkt = NULL;
  bool parsed = ldns_wire2pkt (&pkt, q, qlen) == LDNS_STATUS_OK;
  ldns_pkt_opcode opcode = parsed ? ldns_pkt_get_opcode (pkt) : LDNS_PACKET_QUERY;
  ldns_rr_list *qs = parsed ? ldns_pkt_question (pkt) : NULL;
  ldns_rr *question = qs && ldns_rr_list_rr_count (qs) == 1 ? ldns_rr_list_rr (qs, 0) : NULL;
  ldns_rr_type qtype = question ? ldns_rr_get_type (question) : 0;
  bool named = question && dname_text (ldns_rr_owner (question), name, SBX_NETPROXY_NAME_MAX + 2);
  bool one_question = question != NULL;
  ldns_pkt_free (pkt);

  enum dns_action act = DNS_REPLY;
  pthread_mutex_lock (&p->lock);
  bool deny_all = sbx_net_policy_deny_all (&sb->policy);
  const char *domain = named ? sbx_net_domain_rule (&sb->policy, name) : NULL;
  /* the decision, in the sandbox's log */
  const char *shown = named ? name : "";
  char rule[SBX_NETPROXY_NAME_MAX + 16];
  if (!parsed || !one_question)
    {
      record_locked (sb, "dns", 0, 0, shown, false, "malformed query");
      *rcode = LDNS_RCODE_FORMERR;
    }
  else if (opcode != LDNS_PACKET_QUERY)
    {
      record_locked (sb, "dns", 0, 0, shown, false, "not a query");
      *rcode = LDNS_RCODE_NOTIMPL;
    }
  else if (qtype == LDNS_RR_TYPE_AAAA)
    {
      record_locked (sb, "dns", 0, 0, shown, false, "IPv4 only (AAAA)");
      *rcode = LDNS_RCODE_NOERROR; /* IPv4 only: no records */
    }
  else if (deny_all && domain == NULL)
    {
      record_locked (sb, "dns", 0, 0, shown, false, sb->policy.enabled ? "denyOut 0.0.0.0/0" : "mode none");
      *rcode = LDNS_RCODE_REFUSED;
    }
  else if (!pool_take (&p->query_pool, &sb->n_queries))
    record_locked (sb, "dns", 0, 0, shown, false, "quota: queries in flight"); /* SERVFAIL at once */
  else
    {
      if (domain)
        snprintf (rule, sizeof rule, "allowOut %s", domain);
      else
        snprintf (rule, sizeof rule, "default internet");
      record_locked (sb, "dns", ntohl (p->upstream.sin_addr.s_addr), ntohs (p->upstream.sin_port), shown, true,
                     rule);
      *allowed = domain != NULL;
      act = DNS_FORWARD;
    }
  pthread_mutex_unlock (&p->lock);
  return act;
}

static void conn_dns_answer (struct np_conn *c, const uint8_t *ans, size_t len);

/* The end of query Q: its upstream socket closed, its place given back;
   freed after the batch. */
static void
query_end (struct np_query *q)
{
  if (q->dead)
    return;
  q->dead = true;
  struct np_loop *l = q->l;
  struct sbx_netproxy *p = l->p;
  timer_stop (&q->timer);
  watch_set (l, &q->up, 0);
  if (q->up.fd >= 0)
    close (q->up.fd);
  q->up.fd = -1;
  if (q->client)
    q->client->query = NULL;
  pthread_mutex_lock (&p->lock);
  pool_give (&p->query_pool, &q->sb->n_queries);
  sandbox_unref_locked (q->sb);
  pthread_mutex_unlock (&p->lock);
  if (q->prev)
    q->prev->next = q->next;
  else
    p->queries = q->next;
  if (q->next)
    q->next->prev = q->prev;
  q->next_dead = l->dead_queries;
  l->dead_queries = q;
}

/* Q is answered with ANS (LEN bytes; NULL: SERVFAIL made here). */
static void
query_finish (struct np_query *q, const uint8_t *ans, size_t len)
{
  struct np_loop *l = q->l;
  struct sbx_netproxy *p = l->p;
  const uint8_t *query = q->msg + 2;
  if (ans == NULL)
    {
      len = make_reply (query, q->qlen, LDNS_RCODE_SERVFAIL, l->tx);
      ans = l->tx;
    }
  else if (q->allowed)
    remember_answer (p, q->sb, q->name, ans, len);
  if (q->tcp)
    {
      struct np_conn *c = q->client;
      if (c)
        {
          q->client = NULL;
          c->query = NULL;
          conn_dns_answer (c, ans, len);
        }
    }
  else
    sendto (p->udp_fds[0], ans, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *) &q->from, sizeof q->from);
  query_end (q);
}

/* UDP upstream: send (again). */
static bool
query_udp_send (struct np_query *q)
{
  q->tries++;
  if (send (q->up.fd, q->msg + 2, q->qlen, MSG_NOSIGNAL) < 0 && errno != ECONNREFUSED && errno != EAGAIN)
    return false;
  timer_start (&q->l->timers[T_UDP_TRY], &q->timer);
  return true;
}

static void
query_udp_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_query *q = container_of (w, struct np_query, up);
  uint8_t *ans = q->l->rx;
  for (int i = 0; i < 16 && !q->dead; i++)
    {
      ssize_t k = recv (w->fd, ans, DNS_MSG_MAX, 0);
      if (k < 0)
        {
          if (errno == EAGAIN)
            return;
          if (errno == EINTR || errno == ECONNREFUSED)
            continue; /* as long as the try lasts */
          query_finish (q, NULL, 0);
          return;
        }
      /* same id and a response: ours (the socket is connected) */
      if (k >= 12 && ans[0] == q->msg[2] && ans[1] == q->msg[3] && (ans[2] & 0x80))
        query_finish (q, ans, (size_t) k);
    }
}

/* TCP upstream: connect, send the query with its length, read the
   answer's length, then the answer. */
static void
query_tcp_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_query *q = container_of (w, struct np_query, up);
  struct np_loop *l = q->l;
  if (!q->connected)
    {
      if (!connect_done (w->fd))
        goto fail;
      q->connected = true;
    }
  size_t total = 2 + q->qlen;
  while (q->off < total)
    {
      ssize_t k = send (w->fd, q->msg + q->off, total - q->off, MSG_NOSIGNAL);
      if (k < 0)
        {
          if (errno == EAGAIN)
            {
              if (watch_set (l, w, EPOLLOUT) < 0)
                goto fail;
              return;
            }
          if (errno == EINTR)
            continue;
          goto fail;
        }
      q->off += (size_t) k;
    }
  for (;;)
    {
      size_t got = q->off - total, want = q->ans ? 2 + q->ans_len : 2;
      if (got == want && q->ans)
        break;
      uint8_t *dst = got < 2 ? q->hdr + got : q->ans + (got - 2);
      ssize_t k = recv (w->fd, dst, want - got, 0);
      if (k < 0)
        {
          if (errno == EAGAIN)
            {
              if (watch_set (l, w, EPOLLIN) < 0)
                goto fail;
              return;
            }
          if (errno == EINTR)
            continue;
          goto fail;
        }
      if (k == 0)
        goto fail;
      q->off += (size_t) k;
      if (q->off - total == 2 && q->ans == NULL)
        {
          q->ans_len = get16 (q->hdr);
          if (q->ans_len < 12 || (q->ans = malloc (q->ans_len)) == NULL)
            goto fail;
        }
    }
  if (q->ans[0] != q->msg[2] || q->ans[1] != q->msg[3] || !(q->ans[2] & 0x80))
    goto fail;
  query_finish (q, q->ans, q->ans_len);
  return;
fail:
  query_finish (q, NULL, 0);
}

static void
query_expired (struct np_timer *t)
{
  struct np_query *q = container_of (t, struct np_query, timer);
  if (!q->tcp && q->tries < 2 && query_udp_send (q))
    return; /* the second try */
  query_finish (q, NULL, 0);
}

/* Send query Q (QLEN bytes) of sandbox SB upstream; the sandbox's place
   for it (and a reference to SB) is taken already and goes with the
   query.  For a UDP client at FROM, or the TCP connection CLIENT. */
static void
query_start (struct np_loop *l, struct np_sandbox *sb, const uint8_t *q, size_t qlen, const struct sockaddr_in *from,
             struct np_conn *client, const char *name, bool allowed)
{
  struct sbx_netproxy *p = l->p;
  struct np_query *x = calloc (1, sizeof *x + 2 + qlen);
  if (x == NULL)
    {
      pthread_mutex_lock (&p->lock);
      pool_give (&p->query_pool, &sb->n_queries);
      sandbox_unref_locked (sb);
      pthread_mutex_unlock (&p->lock);
      size_t n = make_reply (q, qlen, LDNS_RCODE_SERVFAIL, l->tx);
      if (client)
        conn_dns_answer (client, l->tx, n);
      else
        sendto (p->udp_fds[0], l->tx, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *) from, sizeof *from);
      return;
    }
  x->l = l;
  x->sb = sb;
  x->client = client;
  x->tcp = client != NULL;
  if (from)
    x->from = *from;
  x->allowed = allowed;
  if (allowed)
    snprintf (x->name, sizeof x->name, "%s", name);
  x->qlen = qlen;
  x->msg[0] = (uint8_t) (qlen >> 8);
  x->msg[1] = (uint8_t) qlen;
  memcpy (x->msg + 2, q, qlen);
  x->timer.fire = query_expired;
  x->up.fd = -1;
  x->next = p->queries;
  if (p->queries)
    p->queries->prev = x;
  p->queries = x;
  if (client)
    client->query = x;

  /* A TC answer to a UDP client goes back as it is: the client asks
     again over TCP, and a TCP client's query goes upstream over TCP. */
  if (x->tcp)
    {
      x->up.ready = query_tcp_ready;
      bool done;
      x->up.fd = connect_start (&p->upstream, &done);
      if (x->up.fd < 0 || watch_set (l, &x->up, EPOLLOUT) < 0)
        goto fail;
      timer_start (&l->timers[T_TCP_UPSTREAM], &x->timer);
      return;
    }
  x->up.ready = query_udp_ready;
  x->up.fd = socket (AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (x->up.fd < 0 || connect (x->up.fd, (const struct sockaddr *) &p->upstream, sizeof p->upstream) < 0
      || watch_set (l, &x->up, EPOLLIN) < 0 || !query_udp_send (x))
    goto fail;
  return;
fail:
  query_finish (x, NULL, 0);
}

/* Query Q (LEN bytes) of SB, over UDP from FROM or from the TCP
   connection CLIENT: answered here, sent upstream, or dropped.  Takes a
   reference to SB that the caller holds.  Returns false when dropped (a
   TCP client is then closed). */
static bool
dns_query (struct np_loop *l, struct np_sandbox *sb, const uint8_t *q, size_t len, const struct sockaddr_in *from,
           struct np_conn *client)
{
  struct sbx_netproxy *p = l->p;
  ldns_pkt_rcode rcode;
  char name[SBX_NETPROXY_NAME_MAX + 2];
  bool allowed;
  enum dns_action act = dns_judge (p, sb, q, len, &rcode, name, &allowed);
  if (act == DNS_FORWARD)
    {
      query_start (l, sb, q, len, from, client, name, allowed); /* takes the reference */
      return true;
    }
  pthread_mutex_lock (&p->lock);
  sandbox_unref_locked (sb);
  pthread_mutex_unlock (&p->lock);
  if (act == DNS_DROP)
    return false;
  size_t n = make_reply (q, len, rcode, l->tx);
  if (client)
    conn_dns_answer (client, l->tx, n);
  else
    sendto (p->udp_fds[0], l->tx, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *) from, sizeof *from);
  return true;
}

/* UDP queries are read as fast as they come and served in turns, one
   query of each sandbox with queries waiting after another (dns_turns).
   A socket's queue is first come, first served: served in the order they
   arrive, a sandbox's flood of queries stood in front of every other
   sandbox's in its socket, for as long as the flood took to serve (tens
   of milliseconds under fifty hostile sandboxes).  Reading is cheap next
   to serving (a judgement, often a socket and a send upstream), so the
   sockets' queues stay short; each socket is read DNS_SOCK_INTAKE queries
   at a time, so a flood in one delays the reading of the others by that
   much at most.  What a sandbox sends beyond DNS_WAITING queries waiting
   gets SERVFAIL at once, as a query over its rate does. */
/* SB takes its place at the end of L's turns. */
static void
turns_append (struct np_loop *l, struct np_sandbox *sb)
{
  sb->turn_next = NULL;
  if (l->turns_tail)
    l->turns_tail->turn_next = sb;
  else
    l->turns = sb;
  l->turns_tail = sb;
}

static void
dns_udp_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_loop *l = container_of (w, struct np_udp, w)->l;
  struct sbx_netproxy *p = l->p;
  for (int i = 0; i < DNS_SOCK_INTAKE; i++)
    {
      struct sockaddr_in from;
      socklen_t fl = sizeof from;
      ssize_t k = recvfrom (w->fd, l->rx, DNS_MSG_MAX + 1, MSG_TRUNC, (struct sockaddr *) &from, &fl);
      if (k < 0)
        break;
      if ((size_t) k > DNS_MSG_MAX || fl != sizeof from || from.sin_family != AF_INET)
        continue;
      pthread_mutex_lock (&p->lock);
      struct np_sandbox *sb = find_sandbox (p, ntohl (from.sin_addr.s_addr));
      struct np_waiting *q = NULL;
      bool refused = false;
      if (sb == NULL)
        ; /* an unknown source: dropped */
      else if (sb->n_waiting >= DNS_WAITING || sb->waiting_bytes + (size_t) k > DNS_WAITING_BYTES)
        {
          record_locked (sb, "dns", 0, 0, "", false, "quota: queries waiting");
          refused = true;
        }
      else if ((q = malloc (sizeof *q + (size_t) k)) != NULL)
        {
          q->next = NULL;
          q->from = from;
          q->len = (size_t) k;
          memcpy (q->msg, l->rx, (size_t) k);
          if (sb->waiting == NULL)
            {
              sb->refs++; /* the turns' */
              sb->waiting = q;
              turns_append (l, sb);
            }
          else
            sb->waiting_tail->next = q;
          sb->waiting_tail = q;
          sb->n_waiting++;
          sb->waiting_bytes += (size_t) k;
        }
      pthread_mutex_unlock (&p->lock);
      if (refused && k >= 12 && !(l->rx[2] & 0x80))
        {
          size_t n = make_reply (l->rx, (size_t) k, LDNS_RCODE_SERVFAIL, l->tx);
          sendto (p->udp_fds[0], l->tx, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *) &from, sizeof from);
        }
    }
}

/* Takes the first waiting query of the first sandbox in L's turns, and a
   reference to the sandbox for it; the sandbox goes to the end of the
   turns, or leaves them (its turns' reference passes to the query).
   Under the mutex.  NULL: no turns. */
static struct np_waiting *
turn_take_locked (struct np_loop *l, struct np_sandbox **sbp)
{
  struct np_sandbox *sb = l->turns;
  if (sb == NULL)
    return NULL;
  struct np_waiting *q = sb->waiting;
  sb->waiting = q->next;
  sb->n_waiting--;
  sb->waiting_bytes -= q->len;
  l->turns = sb->turn_next;
  if (l->turns == NULL)
    l->turns_tail = NULL;
  if (sb->waiting)
    {
      sb->refs++;
      turns_append (l, sb);
    }
  else
    sb->waiting_tail = NULL;
  *sbp = sb;
  return q;
}

/* Serves up to DNS_TURNS waiting UDP queries, a sandbox at a time. */
static void
dns_turns (struct np_loop *l)
{
  struct sbx_netproxy *p = l->p;
  for (int i = 0; i < DNS_TURNS && l->turns; i++)
    {
      struct np_sandbox *sb;
      pthread_mutex_lock (&p->lock);
      struct np_waiting *q = turn_take_locked (l, &sb);
      pthread_mutex_unlock (&p->lock);
      dns_query (l, sb, q->msg, q->len, &q->from, NULL);
      free (q);
    }
}

/* The loop stops: the queries still waiting are dropped. */
static void
dns_turns_drop (struct np_loop *l)
{
  struct sbx_netproxy *p = l->p;
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb;
  struct np_waiting *q;
  while ((q = turn_take_locked (l, &sb)) != NULL)
    {
      sandbox_unref_locked (sb);
      free (q);
    }
  pthread_mutex_unlock (&p->lock);
}

/* ------------------------------------------------------- DNS over TCP */

/* What C waits for now: the next query, the upstream, or the writing of
   an answer. */
static void
conn_dns_next (struct np_conn *c)
{
  struct np_loop *l = c->l;
  uint32_t ev = c->out ? EPOLLOUT : c->query ? 0 : EPOLLIN;
  if (watch_set (l, &c->cw, ev) < 0)
    {
      conn_end (c);
      return;
    }
  if (c->query)
    timer_stop (&c->timer); /* the query has its own deadline */
  else if (c->timer.on == NULL)
    timer_start (&l->timers[T_DNS_IDLE], &c->timer);
}

static void
conn_dns_answer (struct np_conn *c, const uint8_t *ans, size_t len)
{
  c->out = malloc (2 + len);
  if (c->out == NULL)
    {
      conn_end (c);
      return;
    }
  c->out[0] = (uint8_t) (len >> 8);
  c->out[1] = (uint8_t) len;
  memcpy (c->out + 2, ans, len);
  c->out_len = 2 + len;
  c->out_off = 0;
  timer_stop (&c->timer); /* writing it has a deadline of its own */
  conn_dns_next (c);
}

static void
conn_dns_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_conn *c = container_of (w, struct np_conn, cw);
  while (!c->dead && c->out)
    {
      ssize_t k = send (w->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
      if (k < 0)
        {
          if (errno == EAGAIN)
            {
              conn_dns_next (c);
              return;
            }
          if (errno != EINTR)
            conn_end (c);
          continue;
        }
      c->out_off += (size_t) k;
      if (c->out_off == c->out_len)
        {
          free (c->out);
          c->out = NULL;
          timer_stop (&c->timer); /* the next query: 10 s again */
        }
    }
  for (int i = 0; i < 16 && !c->dead && !c->out && !c->query; i++)
    {
      /* 2 length bytes, then the query */
      size_t want = c->in ? 2 + c->in_len : 2;
      uint8_t *dst = c->in_off < 2 ? c->hdr + c->in_off : c->in + (c->in_off - 2);
      ssize_t k = recv (w->fd, dst, want - c->in_off, 0);
      if (k < 0)
        {
          if (errno == EAGAIN)
            break;
          if (errno != EINTR)
            conn_end (c);
          continue;
        }
      if (k == 0)
        {
          conn_end (c);
          break;
        }
      c->in_off += (size_t) k;
      if (c->in_off == 2 && c->in == NULL)
        {
          c->in_len = get16 (c->hdr);
          if (c->in_len == 0 || (c->in = malloc (c->in_len)) == NULL)
            conn_end (c);
          continue;
        }
      if (c->in && c->in_off == 2 + c->in_len)
        {
          uint8_t *q = c->in;
          size_t len = c->in_len;
          c->in = NULL;
          c->in_off = c->in_len = 0;
          pthread_mutex_lock (&c->l->p->lock);
          c->sb->refs++;
          pthread_mutex_unlock (&c->l->p->lock);
          if (!dns_query (c->l, c->sb, q, len, NULL, c))
            conn_end (c);
          free (q);
        }
    }
  if (!c->dead)
    conn_dns_next (c);
}

static void
conn_expired (struct np_timer *t)
{
  conn_end (container_of (t, struct np_conn, timer));
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
  if (c->sb->removed || c->killed || p->stopping)
    return false;
  struct memo_ctx m = { &c->sb->memo, sbx_now_ns (), false };
  bool ok = sbx_netproxy_decide_why (&c->sb->policy, p->ops, p->n_ops, memo_remembered, &m, name, dst, rule, n);
  *remembered = m.hit;
  return ok;
}

/* The headers the rules of C's sandbox set on a request for NAME, into
   NAMES and VALUES (at most MAX, pointing into STORE of STORE_CAP bytes):
   each header once, the last rule's value.  How many. */
static size_t
rule_headers (struct sbx_netproxy *p, struct np_conn *c, const char *name, const char **names, const char **values,
              size_t max, char *store, size_t store_cap)
{
  size_t n = 0, used = 0;
  pthread_mutex_lock (&p->lock);
  const struct sbx_net_policy *pol = &c->sb->policy;
  const char *key = c->sb->removed ? NULL : sbx_net_rule_key (pol, name);
  for (size_t i = 0; key && i < pol->n_rules; i++)
    {
      if (strcmp (pol->rules[i].host, key) != 0)
        continue;
      for (size_t j = 0; j < pol->rules[i].n_headers; j++)
        {
          const struct sbx_net_header *h = &pol->rules[i].headers[j];
          size_t nl = strlen (h->name) + 1, vl = strlen (h->value) + 1;
          size_t k = 0;
          while (k < n && strcasecmp (names[k], h->name) != 0)
            k++;
          if ((k == n && n == max) || nl + vl > store_cap - used)
            continue; /* cannot be: the rules' bound is below these */
          memcpy (store + used, h->name, nl);
          names[k] = store + used;
          used += nl;
          memcpy (store + used, h->value, vl);
          values[k] = store + used;
          used += vl;
          if (k == n)
            n++;
        }
    }
  pthread_mutex_unlock (&p->lock);
  return n;
}

/* The client's bytes judged, with each request head replaced by itself
   with the rules' headers (the tracker holds a head's bytes until it is
   whole: they leave X's buffer as they come, and the rewritten head
   takes their place).  X's buffer has REWRITE_ROOM beyond RELAY_BUF: at
   most RELAY_BUF bytes are in it when a head (at most 16 KiB) comes back
   with at most SBX_NET_RULE_BYTES_MAX more. */
static bool
judge_rewrite (struct np_conn *c, struct half *x)
{
  struct sbx_http_stream *hs = x->hs;
  while (x->ok < x->len)
    {
      bool head = hs->state == HS_HEAD;
      ssize_t k = sbx_http_stream_client (hs, x->buf + x->ok, x->len - x->ok);
      if (k < 0)
        return false;
      if (!head)
        {
          x->ok += (size_t) k;
          if (k == 0 || hs->state != HS_HEAD)
            break;
          continue;
        }
      memmove (x->buf + x->ok, x->buf + x->ok + k, x->len - x->ok - (size_t) k);
      x->len -= (size_t) k;
      if (!hs->head_ready)
        continue; /* all taken: more bytes will come */
      hs->head_ready = false;
      const char *names[128], *values[128];
      char store[SBX_NET_RULE_BYTES_MAX + 256];
      char name[SBX_NETPROXY_NAME_MAX + 1];
      size_t n = 0;
      if (sbx_http_host_parse (hs->buf, hs->head_len, name, sizeof name) == 1)
        n = rule_headers (c->l->p, c, name, names, values, 128, store, sizeof store);
      uint8_t *out = malloc (hs->head_len + sizeof store + 256);
      if (out == NULL)
        return false;
      size_t r = n ? sbx_http_head_rewrite (hs->buf, hs->head_len, names, values, n, out,
                                            hs->head_len + sizeof store + 256)
                   : 0;
      if (r == 0)
        {
          memcpy (out, hs->buf, hs->head_len);
          r = hs->head_len;
        }
      if (x->len + r > x->room)
        {
          free (out);
          return false;
        }
      memmove (x->buf + x->ok + r, x->buf + x->ok, x->len - x->ok);
      memcpy (x->buf + x->ok, out, r);
      free (out);
      x->len += r;
      x->ok += r;
    }
  return true;
}

/* Let the check see the client's bytes not yet judged; false: end. */
static bool
judge (struct np_conn *c, struct half *x)
{
  if (x->hs == NULL)
    {
      x->ok = x->len;
      return true;
    }
  if (x->hs->rewrite)
    return judge_rewrite (c, x);
  ssize_t k = sbx_http_stream_client (x->hs, x->buf + x->ok, x->len - x->ok);
  if (k < 0)
    return false;
  x->ok += (size_t) k;
  return true;
}

/* ------------------------------------------------ terminated TLS */

/* Move bytes between C's sockets and the network ends of its BIO pairs:
   what the SSLs wrote goes out, what came in goes to them (into the
   room the pair has).  Toward the sandbox nothing is read before its
   ClientHello went in (TLS_DOWN).  *MOVED when anything moved; -1 on a
   socket error. */
static int
tls_pump (struct np_conn *c, bool *moved)
{
  struct tls_relay *t = c->tls;
  int fd[2] = { c->cw.fd, c->uw.fd };
  for (int s = 0; s < 2; s++)
    {
      BIO *net = t->net[s];
      char *p;
      int n;
      while ((n = BIO_nread0 (net, &p)) > 0)
        {
          ssize_t k = send (fd[s], p, (size_t) n, MSG_NOSIGNAL);
          if (k > 0)
            {
              BIO_nread (net, &p, (int) k);
              *moved = true;
              continue;
            }
          if (k < 0 && errno == EINTR)
            continue;
          if (k < 0 && errno == EAGAIN)
            break;
          return -1;
        }
      if (t->closed[s] && !t->wr_shut[s] && BIO_ctrl_pending (net) == 0)
        {
          t->wr_shut[s] = true;
          shutdown (fd[s], SHUT_WR);
          *moved = true;
        }
      if (t->rd_eof[s] || (s == 0 && t->step == TLS_UP))
        continue;
      while ((n = BIO_nwrite0 (net, &p)) > 0)
        {
          ssize_t k = recv (fd[s], p, (size_t) n, 0);
          if (k > 0)
            {
              BIO_nwrite (net, &p, (int) k);
              *moved = true;
              continue;
            }
          if (k == 0)
            {
              t->rd_eof[s] = true;
              BIO_shutdown_wr (net);
              *moved = true;
              break;
            }
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN)
            break;
          return -1;
        }
    }
  return 0;
}

/* The destination's TLS did not come up: fail closed, and say why in
   the egress log when its certificate did not verify. */
static void
tls_refused (struct np_conn *c)
{
  struct sbx_netproxy *p = c->l->p;
  char rule[sizeof ((struct sbx_egress_record *) 0)->rule];
  long v = SSL_get_verify_result (c->tls->ssl[1]);
  if (v != X509_V_OK)
    snprintf (rule, sizeof rule, "tls: the certificate of %.60s does not verify: %s", c->name,
              X509_verify_cert_error_string (v));
  else
    snprintf (rule, sizeof rule, "tls: no handshake with %.100s", c->name);
  ERR_clear_error ();
  pthread_mutex_lock (&p->lock);
  record_locked (c->sb, "tls", c->dst, ntohs (c->odst.sin_port), c->name, false, rule);
  pthread_mutex_unlock (&p->lock);
}

/* Is R from SSL function of S a wait for bytes (true), or the end (false,
   *EOF set for an orderly one)? */
static bool
tls_wants (SSL *s, int r, bool *eof)
{
  int e = SSL_get_error (s, r);
  ERR_clear_error ();
  *eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && r == 0);
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* The handshakes, in order; false: the connection ends. */
static bool
tls_handshake (struct np_conn *c, bool *moved)
{
  struct tls_relay *t = c->tls;
  struct sbx_netproxy *p = c->l->p;
  bool eof;
  if (t->step == TLS_UP)
    {
      int r = SSL_do_handshake (t->ssl[1]);
      if (r != 1)
        {
          if (tls_wants (t->ssl[1], r, &eof))
            return true;
          tls_refused (c);
          return false;
        }
      /* verified: now the sandbox's ClientHello, as it came */
      struct half *x = &c->h[0];
      char *q;
      if (BIO_nwrite0 (t->net[0], &q) < (int) x->len)
        return false; /* cannot be: the pair holds a whole hello */
      memcpy (q, x->buf, x->len);
      BIO_nwrite (t->net[0], &q, (int) x->len);
      x->len = x->off = x->ok = 0;
      t->step = TLS_DOWN;
      *moved = true;
    }
  int r = SSL_do_handshake (t->ssl[0]);
  if (r != 1)
    return tls_wants (t->ssl[0], r, &eof);
  t->step = TLS_RELAY;
  timer_stop (&c->timer);
  pthread_mutex_lock (&p->lock);
  t->slot = false;
  c->sb->n_tls--;
  pthread_mutex_unlock (&p->lock);
  *moved = true;
  return true;
}

/* C has moved RELAY_ROUNDS rounds: the others' turn, it goes on in the
   loop's next pass over the ready list. */
static void
ready_later (struct np_conn *c)
{
  if (!c->queued)
    {
      c->queued = true;
      c->next_ready = c->l->ready;
      c->l->ready = c;
    }
}

/* relay_step for a terminated connection: the same halves, filled by
   SSL_read and drained by SSL_write, the sockets moved by tls_pump. */
static void
tls_step (struct np_conn *c)
{
  struct tls_relay *t = c->tls;
  for (int round = 0;; round++)
    {
      if (round == RELAY_ROUNDS)
        {
          ready_later (c);
          return;
        }
      bool moved = false, eof;
      if (tls_pump (c, &moved) < 0)
        goto end;
      if (t->step != TLS_RELAY && !tls_handshake (c, &moved))
        goto end;
      for (int i = 0; i < 2 && t->step == TLS_RELAY; i++)
        {
          struct half *x = &c->h[i];
          SSL *in = t->ssl[i], *out = t->ssl[1 - i];
          if (x->off < x->ok)
            {
              int k = SSL_write (out, x->buf + x->off, (int) (x->ok - x->off));
              if (k > 0)
                {
                  moved = true;
                  x->off += (size_t) k;
                  if (x->off == x->len)
                    x->off = x->len = x->ok = 0;
                }
              else if (!tls_wants (out, k, &eof))
                goto end;
            }
          if (x->len == 0 && !x->eof)
            {
              if (x->buf == NULL && (x->buf = malloc (x->room ? x->room : RELAY_BUF)) == NULL)
                goto end;
              int k = SSL_read (in, x->buf, (int) x->cap);
              if (k > 0)
                {
                  moved = true;
                  x->len = (size_t) k;
                  if (!judge (c, x))
                    goto end;
                  if (i == 1 && c->h[0].hs && sbx_http_stream_waiting (c->h[0].hs))
                    {
                      sbx_http_stream_server (c->h[0].hs, x->buf, x->len);
                      if (!judge (c, &c->h[0]))
                        goto end;
                    }
                }
              else if (tls_wants (in, k, &eof))
                {
                  free (x->buf);
                  x->buf = NULL;
                }
              else if (eof)
                {
                  moved = true;
                  x->eof = true;
                  t->close[1 - i] = true;
                }
              else
                goto end;
            }
          if (x->eof && x->len == 0 && t->close[1 - i] && !t->closed[1 - i])
            {
              SSL_shutdown (out); /* queues close_notify */
              ERR_clear_error ();
              t->closed[1 - i] = true;
              moved = true;
            }
        }
      if (tls_pump (c, &moved) < 0)
        goto end;
      if (!moved)
        break;
    }
  bool awaited = t->step != TLS_RELAY;
  for (int i = 0; i < 2; i++)
    awaited |= (c->h[i].len == 0 && !c->h[i].eof) || c->h[i].off < c->h[i].ok || BIO_ctrl_pending (t->net[i]) > 0;
  if (awaited)
    return;
end:
  conn_end (c);
}

static void relay_ready (struct np_watch *w, uint32_t events);
static void relay_ready_up (struct np_watch *w, uint32_t events);

/* Judged and connected, with a name that has request transforms: the
   two SSLs, and the handshakes begin (toward the destination first). */
static void
tls_start (struct np_conn *c)
{
  struct tls_relay *t = c->tls;
  struct sbx_egress_tls *et = c->l->p->tls;
  t->ssl[0] = sbx_egress_tls_server (et, c->name);
  t->ssl[1] = sbx_egress_tls_client (et, c->name);
  for (int i = 0; i < 2; i++)
    {
      BIO *in;
      if (t->ssl[i] == NULL || BIO_new_bio_pair (&in, TLS_PAIR_BUF, &t->net[i], TLS_PAIR_BUF) != 1)
        {
          ERR_clear_error ();
          conn_end (c);
          return;
        }
      SSL_set_bio (t->ssl[i], in, in);
    }
  c->phase = R_RELAY;
  c->cw.ready = relay_ready;
  c->uw.ready = relay_ready_up;
  if (watch_set (c->l, &c->cw, EPOLLIN | EPOLLOUT | EPOLLET) < 0
      || watch_set (c->l, &c->uw, EPOLLIN | EPOLLOUT | EPOLLET) < 0)
    {
      conn_end (c);
      return;
    }
  timer_start (&c->l->timers[T_TLS], &c->timer);
  tls_step (c);
}

/* Copy both ways until the sockets say EAGAIN to everything awaited
   (they are watched edge-triggered, so that a flow under back-pressure
   costs no epoll_ctl per buffer), or at most RELAY_ROUNDS buffers each
   way: then the connection waits on the loop's ready list for its next
   turn, after the others.  It ends when both sides reached end of file
   (each passed on with shutdown(SHUT_WR)) or on an error. */
static void
relay_step (struct np_conn *c)
{
  if (c->tls)
    {
      tls_step (c);
      return;
    }
  int fd[2] = { c->cw.fd, c->uw.fd }; /* h[i] reads fd[i], writes fd[1 - i] */
  for (int round = 0;; round++)
    {
      if (round == RELAY_ROUNDS)
        {
          ready_later (c);
          return;
        }
      bool moved = false;
      for (int i = 0; i < 2; i++)
        {
          struct half *x = &c->h[i];
          if (x->off < x->ok)
            {
              ssize_t k = send (fd[1 - i], x->buf + x->off, x->ok - x->off, MSG_NOSIGNAL);
              if (k < 0 && errno != EAGAIN)
                {
                  if (errno != EINTR)
                    goto end;
                  moved = true;
                }
              if (k > 0)
                {
                  moved = true;
                  x->off += (size_t) k;
                  if (x->off == x->len)
                    x->off = x->len = x->ok = 0;
                }
            }
          if (x->len == 0 && !x->eof)
            {
              if (x->buf == NULL && (x->buf = malloc (x->room ? x->room : RELAY_BUF)) == NULL)
                goto end;
              ssize_t k = recv (fd[i], x->buf, x->cap, 0);
              if (k < 0 && errno != EAGAIN)
                {
                  if (errno != EINTR)
                    goto end;
                  moved = true;
                }
              if (k < 0 && errno == EAGAIN)
                {
                  /* idle this way: its buffer goes until bytes come */
                  free (x->buf);
                  x->buf = NULL;
                }
              if (k == 0)
                {
                  moved = true;
                  x->eof = true;
                  shutdown (fd[1 - i], SHUT_WR);
                }
              else if (k > 0)
                {
                  moved = true;
                  x->len = (size_t) k;
                  if (!judge (c, x))
                    goto end;
                  if (i == 1 && c->h[0].hs && sbx_http_stream_waiting (c->h[0].hs))
                    {
                      /* the answer to an Upgrade: the held bytes again */
                      sbx_http_stream_server (c->h[0].hs, x->buf, x->len);
                      if (!judge (c, &c->h[0]))
                        goto end;
                    }
                }
            }
        }
      if (!moved)
        break;
    }
  /* everything awaited said EAGAIN: the next edge brings the
     connection back; unless nothing is awaited any more */
  bool awaited = false;
  for (int i = 0; i < 2; i++)
    awaited |= (c->h[i].len == 0 && !c->h[i].eof) || c->h[i].off < c->h[i].ok;
  /* both ends closed, or bytes held for an Upgrade's answer that will
     not come: without this, nothing would ever end it */
  if (awaited)
    return;
end:
  conn_end (c);
}

/* The connections that used up their turn, each one turn more. */
static void
relay_run_ready (struct np_loop *l)
{
  struct np_conn *list = l->ready;
  l->ready = NULL;
  while (list)
    {
      struct np_conn *c = list;
      list = c->next_ready;
      c->queued = false;
      if (!c->dead)
        relay_step (c);
    }
}

static void
relay_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  relay_step (container_of (w, struct np_conn, cw));
}

static void
relay_ready_up (struct np_watch *w, uint32_t events)
{
  (void) events;
  relay_step (container_of (w, struct np_conn, uw));
}

static const char *
conn_proto (const struct np_conn *c)
{
  if (!c->sniff)
    return "tcp";
  return c->h[0].len > 0 && c->h[0].buf[0] == 0x16 ? "tls" : "http";
}

/* Judged, connected (and through the proxy): relay both ways. */
static void
relay_start (struct np_conn *c)
{
  struct sbx_netproxy *p = c->l->p;
  timer_stop (&c->timer);
  /* a plain HTTP connection let through by its Host (and not by an
     address rule): every later request must name the same host; and
     with request transforms, each request's head is rewritten */
  struct half *h = c->h;
  bool plain = c->found && h[0].len > 0 && h[0].buf[0] != 0x16;
  /* TLS to a name with request transforms is terminated (tls_start),
     within the sandbox's bound on handshakes at once */
  bool tls = c->found && h[0].len > 0 && h[0].buf[0] == 0x16 && p->tls != NULL;
  if (tls && (c->tls = calloc (1, sizeof *c->tls)) == NULL)
    {
      conn_end (c);
      return;
    }
  pthread_mutex_lock (&p->lock);
  bool rewrite = plain && c->sb->policy.n_rules > 0;
  bool intercept = tls && sbx_net_rule_key (&c->sb->policy, c->name) != NULL;
  bool busy = intercept && c->sb->n_tls >= TLS_PER_SANDBOX;
  if (busy)
    record_locked (c->sb, "tls", c->dst, ntohs (c->odst.sin_port), c->name, false, "quota: TLS handshakes");
  else if (intercept)
    {
      c->sb->n_tls++;
      c->tls->slot = true;
    }
  pthread_mutex_unlock (&p->lock);
  if (busy)
    {
      conn_end (c);
      return;
    }
  if (tls && !intercept)
    {
      free (c->tls);
      c->tls = NULL;
    }
  rewrite |= intercept;
  if ((plain && (!c->ip_ok || rewrite)) || intercept)
    {
      h[0].hs = malloc (sizeof *h[0].hs);
      if (h[0].hs == NULL)
        {
          conn_end (c);
          return;
        }
      sbx_http_stream_init (h[0].hs, c->name);
      h[0].hs->any_host = c->ip_ok;
      h[0].hs->rewrite = rewrite;
    }
  size_t room = rewrite ? RELAY_BUF + REWRITE_ROOM : RELAY_BUF;
  if (h[0].buf == NULL || h[0].cap < room)
    {
      uint8_t *bigger = realloc (h[0].buf, room);
      if (bigger == NULL)
        {
          conn_end (c);
          return;
        }
      h[0].buf = bigger;
    }
  h[0].room = room;
  h[0].cap = h[1].cap = RELAY_BUF; /* h[1].buf comes with its first bytes */
  if (intercept)
    {
      tls_start (c); /* h[0] holds the ClientHello until its turn */
      return;
    }
  if (!judge (c, &h[0]))
    {
      conn_end (c);
      return;
    }
  c->phase = R_RELAY;
  c->cw.ready = relay_ready;
  c->uw.ready = relay_ready_up;
  /* edge-triggered from now on (see relay_step) */
  if (watch_set (c->l, &c->cw, EPOLLIN | EPOLLOUT | EPOLLET) < 0
      || watch_set (c->l, &c->uw, EPOLLIN | EPOLLOUT | EPOLLET) < 0)
    {
      conn_end (c);
      return;
    }
  relay_step (c);
}

/* Send all of B (a SOCKS message: small, to a fresh connection, so the
   socket takes it at once; if it does not, the proxy is not one). */
static bool
send_all (int fd, const uint8_t *b, size_t n)
{
  ssize_t k = send (fd, b, n, MSG_NOSIGNAL);
  return k == (ssize_t) n;
}

/* The next SOCKS message of C, for its step. */
static bool
socks_send (struct np_conn *c)
{
  struct socks *x = c->sx;
  uint8_t m[3 + 2 * 256];
  size_t n = 0;
  if (x->step == SX_HELLO)
    {
      m[n++] = 5;
      m[n++] = 1;
      m[n++] = x->user[0] ? 2 : 0; /* username/password, or none */
    }
  else if (x->step == SX_AUTH)
    {
      size_t ul = strlen (x->user), pl = strlen (x->pass);
      m[n++] = 1;
      m[n++] = (uint8_t) ul;
      memcpy (m + n, x->user, ul);
      n += ul;
      m[n++] = (uint8_t) pl;
      memcpy (m + n, x->pass, pl);
      n += pl;
    }
  else
    {
      m[n++] = 5;
      m[n++] = 1; /* CONNECT */
      m[n++] = 0;
      if (x->by_name)
        {
          size_t l = strlen (c->name);
          m[n++] = 3;
          m[n++] = (uint8_t) l;
          memcpy (m + n, c->name, l);
          n += l;
        }
      else
        {
          m[n++] = 1;
          memcpy (m + n, &c->odst.sin_addr.s_addr, 4);
          n += 4;
        }
      memcpy (m + n, &c->odst.sin_port, 2);
      n += 2;
    }
  bool ok = send_all (c->uw.fd, m, n);
  explicit_bzero (m, sizeof m);
  x->in_len = 0;
  return ok;
}

/* The proxy's answers: method, authentication, CONNECT; then relay. */
static void
relay_socks_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_conn *c = container_of (w, struct np_conn, uw);
  struct socks *x = c->sx;
  for (;;)
    {
      /* the answer's length: 2, 2, or a CONNECT reply's by its type */
      size_t want = 2;
      if (x->step == SX_CONNECT)
        {
          want = 5;
          if (x->in_len >= 5)
            want = x->in[3] == 1 ? 10 : x->in[3] == 4 ? 22 : x->in[3] == 3 ? 7u + x->in[4] : 0;
          if (want == 0)
            goto fail;
        }
      if (x->in_len < want)
        {
          ssize_t k = recv (w->fd, x->in + x->in_len, want - x->in_len, 0);
          if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return;
          if (k <= 0)
            goto fail;
          x->in_len += (size_t) k;
          continue;
        }
      if (x->step == SX_HELLO)
        {
          if (x->in[0] != 5 || x->in[1] != (x->user[0] ? 2 : 0))
            goto fail;
          x->step = x->user[0] ? SX_AUTH : SX_CONNECT;
        }
      else if (x->step == SX_AUTH)
        {
          if (x->in[0] != 1 || x->in[1] != 0)
            goto fail;
          x->step = SX_CONNECT;
        }
      else
        {
          if (x->in[0] != 5 || x->in[1] != 0)
            goto fail;
          watch_set (c->l, &c->uw, 0);
          relay_start (c);
          return;
        }
      if (!socks_send (c))
        goto fail;
    }
fail:
  /* fail closed: never straight out instead */
  conn_end (c);
}

/* Connected to the original destination (or the proxy): judged again
   (the policy may have changed meanwhile), then relayed. */
static void
relay_connected (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_conn *c = container_of (w, struct np_conn, uw);
  struct sbx_netproxy *p = c->l->p;
  if (!connect_done (w->fd))
    {
      conn_end (c);
      return;
    }
  uint32_t dst_ip = ntohl (c->odst.sin_addr.s_addr);
  char rule[sizeof ((struct sbx_egress_record *) 0)->rule];
  bool remembered;
  pthread_mutex_lock (&p->lock);
  bool ok = conn_allowed_locked (p, c, c->found ? c->name : NULL, dst_ip, &remembered, rule, sizeof rule);
  if (!ok)
    record_locked (c->sb, conn_proto (c), dst_ip, ntohs (c->odst.sin_port), c->found ? c->name : "", false, rule);
  c->ip_ok = ok && sbx_net_ip_allowed (&c->sb->policy, p->ops, p->n_ops, dst_ip);
  if (ok)
    {
      c->dst = dst_ip;
      if (!c->found)
        c->name[0] = '\0';
      c->remembered = remembered;
      c->relaying = true;
    }
  pthread_mutex_unlock (&p->lock);
  if (!ok)
    {
      conn_end (c);
      return;
    }
  if (c->sx)
    {
      /* the proxy's answers within the connect's time */
      c->uw.ready = relay_socks_ready;
      if (!socks_send (c) || watch_set (c->l, &c->uw, EPOLLIN) < 0)
        conn_end (c);
      return;
    }
  relay_start (c);
}

/* The first bytes have given a name, or will not (malformed, end of
   file, the buffer full, the time up), or none is looked for: decide,
   and if the connection may go on, connect to its original destination
   or to the sandbox's proxy. */
static void
relay_decide (struct np_conn *c)
{
  struct np_loop *l = c->l;
  struct sbx_netproxy *p = l->p;
  timer_stop (&c->timer);
  watch_set (l, &c->cw, 0);
  uint32_t dst_ip = ntohl (c->odst.sin_addr.s_addr);
  const char *name = c->found ? c->name : NULL;
  char rule[sizeof ((struct sbx_egress_record *) 0)->rule];
  bool remembered;
  pthread_mutex_lock (&p->lock);
  bool ok = conn_allowed_locked (p, c, name, dst_ip, &remembered, rule, sizeof rule);
  const struct sbx_net_socks *px = c->sb->policy.proxy;
  if (ok && px)
    {
      c->sx = calloc (1, sizeof *c->sx);
      if (c->sx == NULL)
        ok = false;
      else
        {
          c->sx->addr = (struct sockaddr_in) { .sin_family = AF_INET, .sin_port = htons (px->port),
                                               .sin_addr.s_addr = htonl (px->ip) };
          snprintf (c->sx->user, sizeof c->sx->user, "%s", px->user ? px->user : "");
          snprintf (c->sx->pass, sizeof c->sx->pass, "%s", px->pass ? px->pass : "");
          /* remote DNS for what a domain rule allowed */
          c->sx->by_name = name != NULL && remembered && !sbx_net_ip_allowed (&c->sb->policy, p->ops, p->n_ops, dst_ip);
          /* the proxy is held to the platform's ranges as any destination */
          bool op = false;
          for (size_t i = 0; i < p->n_ops && !op; i++)
            op = sbx_cidr_contains (&p->ops[i], px->ip);
          if (sbx_net_platform_denied (px->ip) && !op)
            {
              ok = false;
              snprintf (rule, sizeof rule, "egressProxy %.100s: a platform-denied address", px->address);
            }
        }
    }
  pthread_mutex_unlock (&p->lock);
  const struct sockaddr_in *to = c->sx ? &c->sx->addr : &c->odst;
  /* never to the host itself: the filter runs on the host, where the
     host's rules for sandboxes (the input chain) do not see it */
  if (ok && (host_address (&c->odst) || host_address (to)))
    {
      ok = false;
      snprintf (rule, sizeof rule, "host");
    }
  pthread_mutex_lock (&p->lock);
  record_locked (c->sb, conn_proto (c), dst_ip, ntohs (c->odst.sin_port), name ? name : "", ok, rule);
  /* the header phase is over: its place goes to the next connection */
  c->hello = false;
  c->sb->n_hello--;
  pthread_mutex_unlock (&p->lock);
  if (!ok)
    {
      conn_end (c);
      return;
    }
  bool done;
  int fd = connect_start (to, &done);
  if (fd < 0)
    {
      conn_end (c);
      return;
    }
  pthread_mutex_lock (&p->lock);
  c->uw.fd = fd; /* from now on a policy change may shut it down */
  bool killed = c->killed;
  pthread_mutex_unlock (&p->lock);
  if (killed)
    {
      conn_end (c);
      return;
    }
  c->phase = R_CONNECT;
  c->uw.ready = relay_connected;
  if (watch_set (l, &c->uw, EPOLLOUT) < 0)
    {
      conn_end (c);
      return;
    }
  timer_start (&l->timers[T_CONNECT], &c->timer);
}

/* The client's first bytes, up to HELLO_MAX. */
static void
relay_hello_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_conn *c = container_of (w, struct np_conn, cw);
  struct half *x = &c->h[0];
  while (x->len < x->cap)
    {
      ssize_t k = recv (w->fd, x->buf + x->len, x->cap - x->len, 0);
      if (k < 0)
        {
          if (errno == EAGAIN)
            return;
          if (errno == EINTR)
            continue;
          conn_end (c);
          return;
        }
      if (k == 0)
        break; /* decide with what came */
      x->len += (size_t) k;
      int r = x->buf[0] == 0x16 ? sbx_sni_parse (x->buf, x->len, c->name, sizeof c->name)
                                : sbx_http_host_parse (x->buf, x->len, c->name, sizeof c->name);
      if (r != 0)
        {
          c->found = r > 0;
          break;
        }
    }
  relay_decide (c);
}

static void
relay_expired (struct np_timer *t)
{
  struct np_conn *c = container_of (t, struct np_conn, timer);
  if (c->phase == R_HELLO)
    relay_decide (c); /* the time is up: decide with what came */
  else
    conn_end (c); /* no connection to the destination in time */
}

/* ------------------------------------------------------------ accepting */

/* Refuse an accepted connection with a reset rather than a close: the
   host's connection tracking then forgets it in seconds (CLOSE) instead
   of two minutes (TIME_WAIT), so a sandbox reconnecting in a loop cannot
   fill the host's shared conntrack table with refused connections. */
static void
close_reset (int fd)
{
  struct linger lg = { 1, 0 };
  setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close (fd);
}

/* A connection accepted from SRC on L: served if SRC is a sandbox with
   room for it, else closed at once. */
static void
conn_accept (struct np_loop *l, int fd, uint32_t src)
{
  struct sbx_netproxy *p = l->p;
  struct sockaddr_in dst = { 0 };
  if (l->kind == CONN_RELAY)
    {
      struct sockaddr_in self;
      socklen_t dl = sizeof dst, sl = sizeof self;
      if (getsockopt (fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dl) < 0 || dst.sin_family != AF_INET
          || getsockname (fd, (struct sockaddr *) &self, &sl) < 0
          /* not redirected: a connection made to the proxy itself */
          || (dst.sin_addr.s_addr == self.sin_addr.s_addr && dst.sin_port == self.sin_port))
        {
          close_reset (fd);
          return;
        }
    }
  struct np_conn *c = calloc (1, sizeof *c);
  uint8_t *buf = l->kind == CONN_RELAY && c ? malloc (HELLO_MAX) : NULL;
  if (c == NULL || (l->kind == CONN_RELAY && buf == NULL))
    {
      free (c);
      close_reset (fd);
      return;
    }
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, src);
  bool ok = !p->stopping && sb != NULL && pool_take (&p->conn_pool, &sb->n_conns);
  if (ok && l->kind == CONN_RELAY)
    {
      if (sb->n_hello < p->hello_cap)
        sb->n_hello++;
      else
        {
          pool_give (&p->conn_pool, &sb->n_conns);
          ok = false;
        }
    }
  if (!ok)
    {
      pthread_mutex_unlock (&p->lock);
      close_reset (fd);
      free (buf);
      free (c);
      return;
    }
  c->l = l;
  c->kind = l->kind;
  c->sb = sb;
  sb->refs++;
  /* the Host or server name is looked for where names decide, or where
     plain HTTP requests are transformed; other connections (through an
     egress proxy) are judged by their address at once */
  uint16_t dport = ntohs (dst.sin_port);
  const struct sbx_net_policy *pol = &sb->policy;
  c->sniff = (dport == 80 || dport == 443)
             && ((pol->n_domains && pol->n_deny) || pol->n_rules || !pol->proxy);
  c->hello = l->kind == CONN_RELAY;
  c->cw.fd = fd;
  c->uw.fd = -1;
  c->next = p->conns;
  if (p->conns)
    p->conns->prev = c;
  p->conns = c;
  pthread_mutex_unlock (&p->lock);
  c->timer.fire = conn_expired;
  if (l->kind == CONN_DNS)
    {
      c->cw.ready = conn_dns_ready;
      conn_dns_next (c);
      return;
    }
  c->odst = dst;
  c->phase = R_HELLO;
  c->h[0].buf = buf;
  c->h[0].cap = HELLO_MAX;
  c->timer.fire = relay_expired;
  if (!c->sniff)
    {
      relay_decide (c);
      return;
    }
  c->cw.ready = relay_hello_ready;
  if (watch_set (l, &c->cw, EPOLLIN) < 0)
    {
      conn_end (c);
      return;
    }
  timer_start (&l->timers[T_HELLO], &c->timer);
}

static void
listen_ready (struct np_watch *w, uint32_t events)
{
  (void) events;
  struct np_loop *l = container_of (w, struct np_loop, listen);
  for (int i = 0; i < 64; i++)
    {
      struct sockaddr_in from;
      socklen_t fl = sizeof from;
      int fd = accept4 (w->fd, (struct sockaddr *) &from, &fl, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0)
        {
          int e = errno;
          if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
            listen_pause (l);
          else if (e == EINTR || e == ECONNABORTED || e == EPERM || e == EPROTO)
            continue; /* that connection failed already */
          return;
        }
      if (fl != sizeof from || from.sin_family != AF_INET)
        {
          close (fd);
          continue;
        }
      conn_accept (l, fd, ntohl (from.sin_addr.s_addr));
    }
}

static void *
loop_main (void *arg)
{
  struct np_loop *l = arg;
  pthread_setname_np (pthread_self (), l->kind == CONN_DNS ? "sbx-dns" : "sbx-filter");
  /* best effort: without CAP_SYS_NICE it runs at the normal priority */
  setpriority (PRIO_PROCESS, (id_t) gettid (), SBX_FILTER_NICE);
  if (l->kind == CONN_DNS)
    {
      int rc = sbx_thread_deadline (SBX_DNS_RUNTIME_NS, SBX_DNS_PERIOD_NS);
      if (rc != 0)
        sbx_log (SBX_LOG_WARN, "the DNS filter runs at nice %d: the kernel refused it a deadline reservation (%s)",
                 SBX_FILTER_NICE, strerror (-rc));
    }
  struct epoll_event ev[64];
  for (;;)
    {
      int n = epoll_wait (l->ep, ev, 64, l->ready || l->turns ? 0 : timers_wait_ms (l));
      if (n < 0 && errno != EINTR)
        break;
      bool stop = false;
      for (int i = 0; i < n; i++)
        {
          struct np_watch *w = ev[i].data.ptr;
          if (w == NULL)
            stop = true;
          else if (w->events != 0) /* else: no longer watched (an earlier event of this batch) */
            w->ready (w, ev[i].events);
        }
      timers_run (l);
      relay_run_ready (l);
      dns_turns (l);
      loop_reap (l);
      if (stop)
        break;
    }
  dns_turns_drop (l);
  return NULL;
}
/* ------------------------------------------------------------------ API */

/* A socket of TYPE, with the socket option REUSE (SO_REUSEADDR or
   SO_REUSEPORT) set, bound to 0.0.0.0:PORT (0: any); its port in *GOT. */
static int
bind_any (int type, int reuse, uint16_t port, uint16_t *got, struct sbx_err *err)
{
  cleanup_close int fd = socket (AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sbx_fail (err, errno, "netproxy: socket");
  int one = 1;
  if (setsockopt (fd, SOL_SOCKET, reuse, &one, sizeof one) < 0)
    return sbx_fail (err, errno, "netproxy: %s", reuse == SO_REUSEPORT ? "SO_REUSEPORT" : "SO_REUSEADDR");
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

/* The DNS port's UDP sockets: SBX_DNS_SOCKS sockets in one SO_REUSEPORT
   group on 0.0.0.0:<ephemeral>, and the kernel puts each query in the one
   sbx_dns_steer names for its sender.  All sandboxes' queries in one
   socket queued as they came: a sandbox's flood filled the queue in front
   of everyone's queries, and when the loop fell behind (a CPU taken by
   floods) the kernel dropped every sandbox's alike.  Now a flood fills its
   own sender's socket (and its slot-mates', one in SBX_DNS_SOCKS), the
   loop reads every socket a bounded number of queries at a time, and
   what overflows is the flood's.  A fixed number of descriptors, not one
   per sandbox (docs/architecture.md, "Descriptors"). */
const struct sock_fprog *
sbx_dns_steer (void)
{
  /* sandboxes' addresses are four apart (a /30 each, net.c): the
     source address over four, modulo the sockets, is the sandbox's slot
     modulo the sockets, so neighbours in the pool land apart */
  static struct sock_filter code[] = {
    { BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t) SKF_NET_OFF + 12 }, /* the IPv4 source address */
    { BPF_ALU | BPF_RSH | BPF_K, 0, 0, 2 },
    { BPF_ALU | BPF_MOD | BPF_K, 0, 0, SBX_DNS_SOCKS },
    { BPF_RET | BPF_A, 0, 0, 0 },
  };
  static const struct sock_fprog prog = { sizeof code / sizeof code[0], code };
  return &prog;
}

static void
dns_socks_close (struct sbx_netproxy *p)
{
  for (int i = 0; i < SBX_DNS_SOCKS; i++)
    if (p->udp_fds[i] >= 0)
      {
        close (p->udp_fds[i]);
        p->udp_fds[i] = -1;
      }
}

/* Binds the group; its port in p->dns_port. */
static int
dns_socks_bind (struct sbx_netproxy *p, struct sbx_err *err)
{
  for (int i = 0; i < SBX_DNS_SOCKS; i++)
    {
      /* the first takes a port, the others join it */
      int fd = bind_any (SOCK_DGRAM, SO_REUSEPORT, i ? p->dns_port : 0, &p->dns_port, err);
      if (fd < 0)
        return -1;
      p->udp_fds[i] = fd;
      /* deep enough for the bursts the per-sandbox kernel bound lets
         through (net.c) from the sandboxes that share it */
      int rcv = DNS_UDP_RCVBUF;
      if (setsockopt (fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
        setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    }
  if (setsockopt (p->udp_fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, sbx_dns_steer (), sizeof (struct sock_fprog)) < 0)
    return sbx_fail (err, errno, "netproxy: SO_ATTACH_REUSEPORT_CBPF");
  return 0;
}

/* The epoll set of a loop accepting KIND connections on LISTEN_FD (and,
   for the DNS loop, reading UDP_FDS, SBX_DNS_SOCKS of them). */
static int
loop_init (struct sbx_netproxy *p, struct np_loop *l, enum conn_kind kind, int listen_fd, const int *udp_fds,
           struct sbx_err *err)
{
  static const unsigned ms[T_KINDS] = { [T_UDP_TRY] = UPSTREAM_UDP_TIMEOUT_MS, [T_TCP_UPSTREAM] = UPSTREAM_TCP_TIMEOUT_MS,
                                        [T_DNS_IDLE] = DNS_TCP_IDLE_MS, [T_CONNECT] = CONNECT_TIMEOUT_MS,
                                        [T_PAUSE] = ACCEPT_PAUSE_MS, [T_TLS] = TLS_HANDSHAKE_MS };
  l->p = p;
  l->kind = kind;
  for (int k = 0; k < T_KINDS; k++)
    l->timers[k].ns = (k == T_HELLO ? p->hello_timeout_ms : ms[k]) * MS;
  l->listen = (struct np_watch) { .fd = listen_fd, .ready = listen_ready };
  l->listen_pause.fire = listen_resume;
  for (int i = 0; i < SBX_DNS_SOCKS && udp_fds; i++)
    l->udp[i] = (struct np_udp) { .w = { .fd = udp_fds[i], .ready = dns_udp_ready }, .l = l };
  l->ep = epoll_create1 (EPOLL_CLOEXEC);
  if (l->ep < 0)
    return sbx_fail (err, errno, "netproxy: epoll_create1");
  struct epoll_event stop = { .events = EPOLLIN, .data.ptr = NULL };
  if (epoll_ctl (l->ep, EPOLL_CTL_ADD, p->stop_fd, &stop) < 0 || watch_set (l, &l->listen, EPOLLIN) < 0)
    return sbx_fail (err, errno, "netproxy: epoll_ctl");
  if (udp_fds)
    {
      l->rx = malloc (DNS_MSG_MAX + 1);
      l->tx = malloc (DNS_MSG_MAX + 1);
      if (l->rx == NULL || l->tx == NULL)
        return sbx_fail (err, ENOMEM, "netproxy");
      for (int i = 0; i < SBX_DNS_SOCKS; i++)
        if (watch_set (l, &l->udp[i].w, EPOLLIN) < 0)
          return sbx_fail (err, errno, "netproxy: epoll_ctl");
    }
  return 0;
}

/* Everything but the threads and what they serve. */
static void
proxy_free (struct sbx_netproxy *p)
{
  tdestroy (p->sb, sandbox_free_node);
  p->sb = NULL;
  free (p->ops);
  sbx_egress_tls_close (p->tls);
  struct np_loop *loops[] = { &p->dns, &p->relay };
  for (size_t i = 0; i < 2; i++)
    {
      if (loops[i]->ep >= 0)
        close (loops[i]->ep);
      free (loops[i]->rx);
      free (loops[i]->tx);
    }
  int *fds[] = { &p->dns_tcp_fd, &p->tcp_fd, &p->stop_fd };
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0)
      close (*fds[i]);
  dns_socks_close (p);
  pthread_mutex_destroy (&p->lock);
  free (p);
}

static unsigned
or_default (unsigned v, unsigned def)
{
  return v ? v : def;
}

static unsigned
min_u (unsigned a, unsigned b)
{
  return a < b ? a : b;
}

/* The bounds of LIM (0: the defaults).  Each shared pool takes at most
   a quarter of the descriptors the process may open (a relayed
   connection holds two, a query one), so that a low limit shrinks them
   rather than leaving the daemon without descriptors. */
static void
set_limits (struct sbx_netproxy *p, const struct sbx_netproxy_limits *lim)
{
  unsigned conns = or_default (lim->conns, CONNS_PER_SANDBOX);
  unsigned queries = or_default (lim->dns_inflight, DNS_INFLIGHT);
  unsigned fds = UINT_MAX;
  struct rlimit rl;
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < UINT_MAX)
    fds = (unsigned) (rl.rlim_cur / 4);
  p->conn_pool = (struct np_pool) { .cap = conns, .own = min_u (conns, CONNS_OWN), .max = min_u (CONNS_SHARED, fds / 2) };
  p->query_pool = (struct np_pool) { .cap = queries, .own = min_u (queries, DNS_INFLIGHT_OWN),
                                     .max = min_u (DNS_INFLIGHT_SHARED, fds) };
  p->dns_rate = or_default (lim->dns_rate, DNS_RATE);
  p->hello_cap = or_default (lim->hello, HELLO_PER_SANDBOX);
  p->hello_timeout_ms = or_default (lim->hello_timeout_ms, HELLO_TIMEOUT_MS);
}

int
sbx_netproxy_start (const struct sbx_netproxy_config *cfg, struct sbx_netproxy **out, struct sbx_err *err)
{
  if (cfg == NULL || out == NULL || (cfg->n_operator_allow && cfg->operator_allow == NULL))
    return sbx_failx (err, EINVAL, "netproxy: bad configuration");
  struct sbx_netproxy *p = calloc (1, sizeof *p);
  if (p == NULL)
    return sbx_fail (err, ENOMEM, "netproxy");
  p->dns_tcp_fd = p->tcp_fd = p->stop_fd = p->dns.ep = p->relay.ep = -1;
  for (int i = 0; i < SBX_DNS_SOCKS; i++)
    p->udp_fds[i] = -1;
  pthread_mutex_init (&p->lock, NULL);
  set_limits (p, &cfg->limits);
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
  if (cfg->tls_dir && sbx_egress_tls_open (cfg->tls_dir, cfg->egress_ca_file, &p->tls, err) < 0)
    {
      sbx_err_wrap (err, "the egress CA (request transforms on HTTPS)");
      proxy_free (p);
      return -1;
    }
  /* UDP and TCP DNS on one port number: take a UDP port, then the same
     for TCP; another socket may hold it for TCP, so try a few. */
  for (int tries = 0; tries < 32 && p->dns_tcp_fd < 0; tries++)
    {
      struct sbx_err e = { 0 };
      dns_socks_close (p);
      if (dns_socks_bind (p, err) < 0)
        goto fail;
      uint16_t same;
      p->dns_tcp_fd = bind_any (SOCK_STREAM, SO_REUSEADDR, p->dns_port, &same, &e);
      if (p->dns_tcp_fd < 0 && (e.code != EADDRINUSE || tries == 31))
        {
          if (err)
            *err = e;
          goto fail;
        }
    }
  p->tcp_fd = bind_any (SOCK_STREAM, SO_REUSEADDR, 0, &p->tcp_port, err);
  if (p->tcp_fd < 0)
    goto fail;
  p->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->stop_fd < 0)
    {
      sbx_fail (err, errno, "netproxy: eventfd");
      goto fail;
    }
  if (loop_init (p, &p->dns, CONN_DNS, p->dns_tcp_fd, p->udp_fds, err) < 0
      || loop_init (p, &p->relay, CONN_RELAY, p->tcp_fd, NULL, err) < 0)
    goto fail;
  int e = pthread_create (&p->dns.thread, NULL, loop_main, &p->dns);
  if (e != 0)
    {
      sbx_fail (err, e, "netproxy: start the DNS thread");
      goto fail;
    }
  p->dns.started = true;
  e = pthread_create (&p->relay.thread, NULL, loop_main, &p->relay);
  if (e != 0)
    {
      sbx_fail (err, e, "netproxy: start the HTTP/TLS thread");
      sbx_netproxy_stop (p);
      return -1;
    }
  p->relay.started = true;
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

const char *
sbx_netproxy_ca_pem (const struct sbx_netproxy *p)
{
  return p ? sbx_egress_tls_ca_pem (p->tls) : NULL;
}

unsigned
sbx_netproxy_dns_rate (const struct sbx_netproxy *p)
{
  return p->dns_rate;
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
      if (sb)
        sb->ip = sandbox_ip;
      if (sb == NULL || tsearch (sb, &p->sb, sandbox_cmp) == NULL)
        {
          pthread_mutex_unlock (&p->lock);
          free (sb);
          sbx_net_policy_free (&copy);
          return sbx_fail (err, ENOMEM, "netproxy: add a sandbox");
        }
      sb->refs = 1; /* the table's */
      sb->policy = copy;
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
  pthread_mutex_lock (&p->lock);
  struct np_sandbox *sb = find_sandbox (p, sandbox_ip);
  if (sb)
    {
      tdelete (sb, &p->sb, sandbox_cmp);
      sb->removed = true;
      for (struct np_conn *c = p->conns; c; c = c->next)
        if (c->sb == sb)
          conn_kill (c);
      /* freed now, or by its last query or connection as it ends */
      sandbox_unref_locked (sb);
    }
  pthread_mutex_unlock (&p->lock);
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
  if (p->dns.started)
    pthread_join (p->dns.thread, NULL);
  if (p->relay.started)
    pthread_join (p->relay.thread, NULL);
  /* what the loops served when they stopped */
  while (p->queries)
    query_end (p->queries);
  while (p->conns)
    conn_end (p->conns);
  loop_reap (&p->dns);
  loop_reap (&p->relay);
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
