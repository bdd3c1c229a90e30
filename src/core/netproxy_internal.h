/*
 * netproxy_internal.h - the pure parts of netproxy.c, exposed for its unit
 * test (tests/unit/test_netproxy.c): the TLS server_name and HTTP Host
 * parsers, the per-sandbox table of remembered addresses and the verdict
 * on a relayed connection.  Nothing else should call these.
 */
#ifndef SBX_NETPROXY_INTERNAL_H
#define SBX_NETPROXY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "net.h"

struct sock_fprog;

/* The DNS filter's UDP sockets (netproxy.c, dns_socks_bind): how many,
   and the program that picks one for a query by its sender's address
   (SO_ATTACH_REUSEPORT_CBPF), the sandbox's slot modulo their number. */
#define SBX_DNS_SOCKS 64
const struct sock_fprog *sbx_dns_steer (void);

/* Longest name the parsers give (RFC 1035: 253 characters without the
   final dot); NAME buffers should hold SBX_NETPROXY_NAME_MAX + 1 bytes. */
#define SBX_NETPROXY_NAME_MAX 253

/* The first bytes of a connection (BUF, LEN: everything read so far).
   Return 1 with the name, lower case, without a final dot, in NAME (of N
   bytes); 0 when more bytes are needed; -1 when no name will come
   (malformed, not this protocol, or no name in it).
   sbx_sni_parse reads one TLS record holding a ClientHello and answers
   only once that record is complete (every proper prefix of a valid one
   gives 0).  sbx_http_host_parse reads an HTTP/1.x request's head and
   answers once the head (up to the empty line) is complete. */
int sbx_sni_parse (const uint8_t *buf, size_t len, char *name, size_t n);
int sbx_http_host_parse (const uint8_t *buf, size_t len, char *name, size_t n);

/* Remembered addresses of one sandbox: name asked -> address, until an
   expiry (CLOCK_MONOTONIC ns).  At most MAX entries (0: the default,
   4096); when full, an expired entry or else the least recently stored
   one makes room. */
struct sbx_memo_entry {
  char *name;
  uint32_t hash;
  uint32_t addr;
  uint64_t expires;
  uint64_t seq;
};

struct sbx_memo {
  struct sbx_memo_entry *e;
  size_t n, cap, max;
  uint64_t seq;
};

/* 0, or -1 when out of memory (the table is unchanged). */
int sbx_memo_put (struct sbx_memo *m, const char *name, uint32_t addr, uint64_t expires, uint64_t now);
bool sbx_memo_has (const struct sbx_memo *m, const char *name, uint32_t addr, uint64_t now);
void sbx_memo_free (struct sbx_memo *m);

/* Was ADDR remembered for NAME (lower case, no final dot)? */
typedef bool (*sbx_netproxy_remembered_fn) (void *ctx, const char *name, uint32_t addr);

/* The verdict on a connection to DST carrying NAME (NULL: none found):
   DST must not be platform-denied unless an operator range (OPS, N_OPS)
   covers it, and either NAME is allowed by a domain of P and DST was
   remembered for NAME, or DST is allowed by address rules alone. */
bool sbx_netproxy_decide (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops,
                          sbx_netproxy_remembered_fn remembered, void *ctx, const char *name, uint32_t dst);
/* The same verdict, and in RULE (N bytes, may be NULL) what gave it, for
   the egress log: "allowOut example.com", "platform 10.0.0.0/8",
   "denyOut 0.0.0.0/0", ... (sbx_net_ip_verdict). */
bool sbx_netproxy_decide_why (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops,
                              sbx_netproxy_remembered_fn remembered, void *ctx, const char *name, uint32_t dst,
                              char *rule, size_t n);

/* The requests that follow the first on a plain HTTP connection let
   through by its Host: each must name that same host, or a keep-alive
   connection to an allowed name could carry requests for another
   (virtual) host of the same server.  The tracker follows HTTP/1.x
   framing (Content-Length, chunked bodies); after a request asking for an
   Upgrade it holds the client's bytes until the server's status line says
   whether the protocol switched (101: the rest is opaque) or not. */
struct sbx_http_stream {
  char name[SBX_NETPROXY_NAME_MAX + 1]; /* the host every request must name */
  bool any_host;                        /* ... unless this (an address rule let it through) */
  /* Rewriting (the caller transforms each request head): the client's
     bytes are taken up to the end of a head, or up to the start of one,
     and no further; a head's bytes are the caller's to replace: when
     HEAD_READY, buf[0..head_len) holds the whole head just taken. */
  bool rewrite, head_ready;
  size_t head_len;
  int state;
  bool upgrade;                         /* the current request asks for one */
  uint64_t left;                        /* bytes left in a body or chunk */
  size_t len;                           /* bytes in buf */
  uint8_t buf[16384 + 5];               /* a head, a chunk line or a status line */
};

void sbx_http_stream_init (struct sbx_http_stream *hs, const char *name);
/* Take client bytes B[0..N): how many of them may go to the server now
   (the rest, if any, must be offered again later, after the server
   answered), or -1 when the connection must end. */
ssize_t sbx_http_stream_client (struct sbx_http_stream *hs, const uint8_t *b, size_t n);
/* A request head HEAD (LEN bytes, up to its empty line) with the N
   headers NAMES[i]: VALUES[i] set: every line of the same name (any
   case) goes, the new ones come before the empty line.  Into OUT (CAP
   bytes); returns the length, or 0 when it does not fit. */
size_t sbx_http_head_rewrite (const uint8_t *head, size_t len, const char *const *names, const char *const *values,
                              size_t n, uint8_t *out, size_t cap);
/* Server bytes: they matter only while an Upgrade waits for its answer. */
void sbx_http_stream_server (struct sbx_http_stream *hs, const uint8_t *b, size_t n);
/* Waiting for the server's answer to an Upgrade? */
bool sbx_http_stream_waiting (const struct sbx_http_stream *hs);

#endif
