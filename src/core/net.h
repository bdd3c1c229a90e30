/*
 * net.h - sandbox networking: egress policies (this file's first half),
 * the veth link of each sandbox and the nftables rules that enforce the
 * policies (net.c), and the DNS and HTTP/TLS filter (netproxy.c).
 *
 * Addresses are IPv4 in host byte order unless a name says otherwise.
 */
#ifndef SBX_NET_H
#define SBX_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"

struct sbx_cidr {
  uint32_t addr; /* host byte order, host bits cleared */
  uint8_t prefix;
};

/* A request transform (E2B's network "rules"): HTTP headers set on the
   requests whose Host matches HOST ("x.y" exactly, "*.x.y" the names
   below x.y), replacing any of the same name. */
struct sbx_net_header {
  char *name, *value;
};
struct sbx_net_rule {
  char *host; /* lower case, no final dot */
  struct sbx_net_header *headers;
  size_t n_headers;
};

/* A SOCKS5 proxy that carries the sandbox's outbound TCP (E2B's
   egressProxy): HOST as given ("name:port" or "a.b.c.d:port"), the
   address it was resolved to when set. */
struct sbx_net_socks {
  char address[262];
  uint32_t ip;
  uint16_t port;
  char *user, *pass; /* NULL: no authentication */
};

#define SBX_NET_RULE_HOSTS_MAX 64     /* hosts with rules, per sandbox */
#define SBX_NET_RULE_BYTES_MAX 8192   /* headers one request gets, as sent */

/* What a sandbox may reach, besides what no sandbox ever reaches (the
   host, private, link-local and other special ranges; sbx_net_platform_denied).
   E2B's rules: an address allowed by ALLOW or by a domain in DOMAINS is
   reachable even when DENY covers it; otherwise DENY decides.  RULES and
   PROXY decide nothing: they change what passes. */
struct sbx_net_policy {
  bool enabled;           /* false: mode "none", loopback only */
  struct sbx_cidr *allow; /* allowed addresses and CIDRs */
  size_t n_allow;
  struct sbx_cidr *deny;  /* denied addresses and CIDRs */
  size_t n_deny;
  char **domains;         /* allowed names: lower case, no final dot; "*.x.y" matches below x.y only */
  size_t n_domains;
  struct sbx_net_rule *rules; /* in order; a host's rules one after another */
  size_t n_rules;
  struct sbx_net_socks *proxy; /* NULL: straight out */
};

void sbx_net_policy_free (struct sbx_net_policy *p);
int sbx_net_policy_copy (struct sbx_net_policy *dst, const struct sbx_net_policy *src, struct sbx_err *err);

/* Build a policy from rule strings: ALLOW entries are IPv4 addresses,
   CIDR blocks or domain names ("*.x.y" for the names below x.y), DENY
   entries addresses or CIDR blocks.  INTERNET false gives mode none when
   ALLOW is empty, else 0.0.0.0/0 added to DENY (allowed entries still
   win).  A bad entry fails with kind SBX_E_INVALID and a message naming
   it and its list (ALLOW_NAME or DENY_NAME, the caller's words). */
int sbx_net_policy_build (bool internet, const char *const *allow, size_t n_allow, const char *allow_name,
                          const char *const *deny, size_t n_deny, const char *deny_name, struct sbx_net_policy *p,
                          struct sbx_err *err);
/* P's rules as strings in the form sbx_net_policy_build takes (addresses
   and CIDR blocks, then names; deny), NULL-terminated and newly
   allocated: free each list with sbx_strv_free. */
int sbx_net_policy_rules (const struct sbx_net_policy *p, char ***allow, size_t *n_allow, char ***deny,
                          size_t *n_deny, struct sbx_err *err);

/* Append a rule for HOST (a domain name or "*." wildcard, any case)
   setting the N headers NAMES[i]: VALUES[i] (HTTP token names; values
   without control characters).  SBX_E_INVALID, naming what is wrong,
   past SBX_NET_RULE_HOSTS_MAX hosts or when a host's headers would take
   more than SBX_NET_RULE_BYTES_MAX bytes. */
int sbx_net_rule_add (struct sbx_net_policy *p, const char *host, const char *const *names,
                      const char *const *values, size_t n, struct sbx_err *err);
/* The rules' key that applies to a request for NAME: an exact one, else
   the longest "*." one below which NAME is; NULL when none. */
const char *sbx_net_rule_key (const struct sbx_net_policy *p, const char *name);
/* Set P's proxy: ADDRESS as given, resolved to IP:PORT; USER and PASS
   (NULL: none) of at most 255 bytes; PASS only with USER. */
int sbx_net_socks_set (struct sbx_net_policy *p, const char *address, uint32_t ip, uint16_t port, const char *user,
                       const char *pass, struct sbx_err *err);

int sbx_cidr_parse (const char *s, struct sbx_cidr *out);
bool sbx_cidr_contains (const struct sbx_cidr *c, uint32_t ip);
void sbx_cidr_format (const struct sbx_cidr *c, char *buf, size_t n);

/* Addresses no sandbox reaches unless the operator allows them: this
   host's loopback, private ranges, CGNAT, link-local, multicast, ... */
bool sbx_net_platform_denied (uint32_t ip);
extern const struct sbx_cidr sbx_net_platform_deny[];
extern const size_t sbx_net_platform_deny_count;

/* Is P the default (internet on, no lists, no rules, no proxy)? */
bool sbx_net_policy_plain (const struct sbx_net_policy *p);
/* Does the policy deny every address not allowed (a 0.0.0.0/0 deny)? */
bool sbx_net_policy_deny_all (const struct sbx_net_policy *p);
/* Is NAME (any case, final dot or not) allowed by one of p->domains? */
bool sbx_net_domain_allowed (const struct sbx_net_policy *p, const char *name);
/* The verdict for a connection to IP by address rules alone, operator
   ranges (OPS, N_OPS) included. */
bool sbx_net_ip_allowed (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops, uint32_t ip);
/* The same verdict, and in RULE (N bytes) the rule that gave it:
   "mode none", "platform 10.0.0.0/8", "allowOut 1.2.3.0/24",
   "denyOut 0.0.0.0/0" or "default internet". */
bool sbx_net_ip_verdict (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops, uint32_t ip,
                         char *rule, size_t n);
/* The entry of p->domains that allows NAME, or NULL. */
const char *sbx_net_domain_rule (const struct sbx_net_policy *p, const char *name);

/* ---- the egress audit log ----

   Every egress decision about a sandbox (the DNS filter's, the HTTP/TLS
   filter's, and the kernel's on direct connections, read through NFLOG)
   is recorded in memory, per sandbox: a ring of SBX_EGRESS_LOG_MAX
   records, filled at most SBX_EGRESS_RATE records a second (bursts of
   SBX_EGRESS_BURST); what the ring or the rate limit loses is counted.
   The log goes with the sandbox and with the daemon (it is not stored). */
enum sbx_egress_verdict { SBX_EGRESS_ALLOWED, SBX_EGRESS_DENIED };

struct sbx_egress_record {
  uint64_t seq;    /* increasing per sandbox, from 1 */
  int64_t time_ms; /* wall clock */
  char proto[8];   /* "dns", "http", "tls", "tcp", "udp", "icmp", "ip" */
  char addr[46];   /* destination address, "" when none (a refused DNS name) */
  uint16_t port;
  char name[256];  /* DNS query name, SNI or Host; "" when none */
  enum sbx_egress_verdict verdict;
  char rule[160];  /* what decided it, human readable */
};

#define SBX_EGRESS_LOG_MAX 1024 /* records kept per sandbox (ring); older ones are dropped */
#define SBX_EGRESS_RATE 50      /* records a second per sandbox, sustained */
#define SBX_EGRESS_BURST 200    /* ... and in a burst */

#endif
