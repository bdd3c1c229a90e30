/*
 * outbound.h - the guard on every request the daemon makes for a tenant
 * (webhook deliveries now; MCP servers and model providers later):
 * outbound.c.
 *
 * A tenant names a URL; the daemon must not become its way into the
 * host's loopback services, the private networks around it or a cloud
 * metadata service.  The guard parses the URL with libcurl's own parser
 * (so the host is the one curl will connect to), allows http and https
 * only, resolves the name, refuses when ANY address is in a denied range
 * (sbx_outbound_denied_range) or is one of this host's own, and then ties
 * the transfer to the address it checked (CURLOPT_CONNECT_TO with the
 * literal address; Host and SNI stay the URL's), so the name cannot
 * resolve elsewhere between the check and the connect.  No redirects, no
 * proxy from the environment.
 *
 * The operator opens ranges with `sbxd serve --outbound-allow CIDR`
 * (struct sbx_outbound); nothing is open by default.  A range opens the
 * addresses it names (an IPv4 range also their IPv4-mapped IPv6 form),
 * and wins over every denial, this host's addresses included.
 *
 * Use:
 *   struct sbx_outbound_target t;
 *   if (sbx_outbound_open (ob, url, curl, &t, &err) < 0)   refused: err
 *   ... set the method, headers, body; curl_easy_perform ...
 *   sbx_outbound_close (&t);   after curl_easy_cleanup or the last perform
 * Registration of a URL (no resolution): sbx_outbound_parse, then
 * sbx_outbound_target_free.
 */
#ifndef SBX_SERVICE_OUTBOUND_H
#define SBX_SERVICE_OUTBOUND_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"

/* An address range.  IPv4 is held as IPv4-mapped IPv6 (::ffff:a.b.c.d),
   so an IPv4 /n is prefix 96 + n. */
struct sbx_ip_range {
  struct in6_addr addr; /* host bits cleared */
  uint8_t prefix;       /* 0..128 */
};

#define SBX_OUTBOUND_ALLOW_MAX 64 /* operator ranges */
#define SBX_OUTBOUND_URL_MAX 2048 /* bytes of a URL */

/* What the operator opened.  Zeroed: nothing. */
struct sbx_outbound {
  struct sbx_ip_range allow[SBX_OUTBOUND_ALLOW_MAX];
  size_t n_allow;
};

/* "a.b.c.d", "a.b.c.d/n", "v6", "v6/n" (inet_pton forms).  0 or -1. */
int sbx_ip_range_parse (const char *s, struct sbx_ip_range *out);
/* "a.b.c.d/n" or "v6/n" into BUF. */
void sbx_ip_range_format (const struct sbx_ip_range *r, char *buf, size_t n);
bool sbx_ip_range_contains (const struct sbx_ip_range *r, const struct in6_addr *a);
/* Add a range to OB (the --outbound-allow flag).  0, or -1 when S is not
   a range or OB is full. */
int sbx_outbound_allow (struct sbx_outbound *ob, const char *s);

/* Why A (IPv4 as mapped) is in a denied range, e.g. "a loopback
   address", "the cloud metadata address", "a NAT64 form of a private
   address"; NULL when it is not.  Operator ranges and this host's own
   addresses are not considered here. */
const char *sbx_outbound_denied_range (const struct in6_addr *a);
/* The verdict on A: NULL when a request may go to it, else why not.
   OPENED (may be NULL) is set when A is allowed only because an operator
   range covers an address the platform denies: errors of requests to it
   are then not shown to tenants in detail. */
const char *sbx_outbound_verdict (const struct sbx_outbound *ob, const struct in6_addr *a, bool *opened);

/* A URL checked for a request. */
struct sbx_outbound_target {
  CURLU *url;                  /* as curl parsed it; the transfer uses this */
  char host[256];              /* the URL's host as curl sends it (Host, SNI), no brackets */
  unsigned port;               /* the URL's port, or the scheme's */
  bool literal;                /* the host is an address */
  char addr[INET6_ADDRSTRLEN]; /* after a check: the address the request goes to */
  bool opened;                 /* ... allowed only by an operator range */
  struct curl_slist *connect_to;
};

/* Parse URL into T without resolving: http or https, an ASCII host, no
   zone id, a port from 1 to 65535.  A literal address is checked now (and
   becomes T's address); so are names of loopback ("localhost",
   "*.localhost").  Fails with kind SBX_E_INVALID and a message for the
   caller; T needs sbx_outbound_target_free in every case. */
int sbx_outbound_parse (const struct sbx_outbound *ob, const char *url, struct sbx_outbound_target *t,
                        struct sbx_err *err);
/* Resolve T's host (getaddrinfo, blocking) and check every address with
   sbx_outbound_pick.  Literal hosts were checked by the parse. */
int sbx_outbound_resolve (const struct sbx_outbound *ob, struct sbx_outbound_target *t, struct sbx_err *err);
/* The check of T against the addresses AI (a getaddrinfo list): refused
   (kind SBX_E_FORBIDDEN) when any is denied or is this host's own, or
   when there is none; else the first becomes T's address. */
int sbx_outbound_pick (const struct sbx_outbound *ob, struct sbx_outbound_target *t, const struct addrinfo *ai,
                       struct sbx_err *err);
/* Point CURL at T's checked address: its parsed URL, CONNECT_TO the
   address and port, http and https only, no redirects, no proxy. */
int sbx_outbound_apply (CURL *curl, struct sbx_outbound_target *t, struct sbx_err *err);
/* Parse, resolve and apply. */
int sbx_outbound_open (const struct sbx_outbound *ob, const char *url, CURL *curl, struct sbx_outbound_target *t,
                       struct sbx_err *err);
void sbx_outbound_target_free (struct sbx_outbound_target *t);
#define sbx_outbound_close sbx_outbound_target_free

#endif
