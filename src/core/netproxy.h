/*
 * netproxy.h - the DNS filter and the HTTP/TLS name filter that enforce
 * the domain rules of sandbox egress policies (netproxy.c).
 *
 * nftables (net.c) redirects to these listeners, on the host side of each
 * sandbox's veth:
 *   - UDP and TCP port 53 sent to the sandbox's gateway -> the DNS port;
 *   - for sandboxes whose policy has domains, TCP ports 80 and 443 to any
 *     address not allowed by address rules -> the TCP port.
 * A sandbox is known by its own address (the source of what it sends).
 *
 * DNS: a query from an unknown source is dropped.  AAAA queries are
 * answered with no records (sandboxes are IPv4-only).  When the policy
 * denies all (sbx_net_policy_deny_all) and the name is not allowed
 * (sbx_net_domain_allowed), the answer is REFUSED.  Otherwise the query
 * goes to the upstream resolver and its answer back to the sandbox; the A
 * records of an answer to an allowed name are remembered for that sandbox
 * (name asked -> address, until the TTL, at least 60 s, at most 1 h).
 *
 * TCP: the first bytes (up to 16 KiB, 5 s by default) give the name: the
 * Host header of an HTTP request or the server_name of a TLS ClientHello.  The
 * connection goes on to its original destination (SO_ORIGINAL_DST) only
 * if that address is not platform-denied (unless an operator range allows
 * it) and either the name is allowed and the address was remembered for
 * that same name, or the address alone is allowed (sbx_net_ip_allowed).
 * Otherwise it is closed.  A TLS connection whose name has request
 * transforms (net.h, struct sbx_net_rule) is terminated both ways, when
 * the config names a CA directory (egress_tls.h): the destination must
 * verify, the sandbox gets a leaf of the daemon's CA, and the HTTP/1.1
 * requests inside are rewritten as plain HTTP's are.
 *
 * Both are event loops, and fair: each sandbox has its own bounds
 * (sbx_netproxy_limits) on DNS queries waiting for the upstream, on its
 * query rate, on its TCP connections and on those whose first bytes are
 * still awaited.  A query over a bound gets SERVFAIL at once (recorded as
 * denied, rule "quota: ..."); a connection over a bound is closed at
 * once.  Part of each bound is the sandbox's own whatever the others do;
 * the rest comes from pools shared by all sandboxes.
 *
 * Each of these decisions, and those of the kernel that net.c reads, goes
 * to the sandbox's egress log (net.h, egress.h), kept here with its
 * policy and freed with it.
 */
#ifndef SBX_NETPROXY_H
#define SBX_NETPROXY_H

#include <stdint.h>

#include "net.h"

struct sbx_netproxy;

/* Per-sandbox bounds; 0 means the default (in brackets). */
struct sbx_netproxy_limits {
  unsigned dns_inflight;     /* DNS queries waiting for the upstream [64] */
  unsigned dns_rate;         /* DNS queries a second, in bursts of twice that [200] */
  unsigned conns;            /* TCP connections, DNS and relayed [256] */
  unsigned hello;            /* relayed connections whose first bytes are awaited [32] */
  unsigned hello_timeout_ms; /* how long those bytes may take [5000] */
};

struct sbx_netproxy_config {
  uint32_t upstream_ip;   /* upstream resolver, host byte order */
  uint16_t upstream_port; /* 0: 53 */
  const struct sbx_cidr *operator_allow; /* copied */
  size_t n_operator_allow;
  struct sbx_netproxy_limits limits;
  /* request transforms on HTTPS (egress_tls.h): where the daemon's CA is
     kept (NULL: none; such connections pass by their name, unchanged),
     and a PEM file of more roots trusted upstream (NULL: the system's) */
  const char *tls_dir;
  const char *egress_ca_file;
};

/* Binds UDP+TCP on 0.0.0.0:<ephemeral> for DNS and TCP on another
   ephemeral port for HTTP/TLS, starts the two loops' threads. */
int sbx_netproxy_start (const struct sbx_netproxy_config *cfg, struct sbx_netproxy **out, struct sbx_err *err);
uint16_t sbx_netproxy_dns_port (const struct sbx_netproxy *p);
uint16_t sbx_netproxy_tcp_port (const struct sbx_netproxy *p);
/* The certificate (PEM) of the CA sandboxes must trust for request
   transforms on HTTPS; NULL when there is none.  Valid until stopped. */
const char *sbx_netproxy_ca_pem (const struct sbx_netproxy *p);
/* The DNS queries a second each sandbox may ask (sbx_netproxy_limits). */
unsigned sbx_netproxy_dns_rate (const struct sbx_netproxy *p);
/* Set (copy) or replace the policy of the sandbox at SANDBOX_IP.  A
   replaced policy applies to new queries and connections; connections
   it no longer allows are closed. */
int sbx_netproxy_set (struct sbx_netproxy *p, uint32_t sandbox_ip, const struct sbx_net_policy *policy,
                      struct sbx_err *err);
/* Forget a sandbox: its remembered addresses go, its connections close,
   its egress log goes. */
void sbx_netproxy_remove (struct sbx_netproxy *p, uint32_t sandbox_ip);
void sbx_netproxy_stop (struct sbx_netproxy *p);

/* The egress audit log (net.h) lives here, with each sandbox's policy:
   the DNS and HTTP/TLS filters add their own decisions, and net.c adds
   the kernel's, which it reads through NFLOG.  WHY is the kind of rule
   that logged the packet (each logging rule of net.c says which). */
enum sbx_netproxy_kernel_rule {
  SBX_KRULE_PLATFORM, /* rejected: a platform-denied range */
  SBX_KRULE_DENY,     /* rejected: denyOut */
  SBX_KRULE_ALLOW,    /* accepted: allowOut */
  SBX_KRULE_INTERNET, /* accepted: no rule denies it */
  SBX_KRULE_NONE,     /* rejected: mode none */
  SBX_KRULE_HOST,     /* rejected: to the host itself */
};
/* Record a new connection attempt of the sandbox at SRC to DST:PORT
   (PROTO "tcp", "udp", ...); nothing when SRC is no sandbox. */
void sbx_netproxy_record_packet (struct sbx_netproxy *p, uint32_t src, enum sbx_netproxy_kernel_rule why,
                                 const char *proto, uint32_t dst, uint16_t port);
/* The filters' decisions since the process started, for the operator's
   metrics: the DNS filter's answers, the HTTP and TLS name filter's
   connections, and the kernel's verdicts on new connections as logged
   (at most 100 a second per rule and sandbox, net.c's LOG_LIMIT). */
enum sbx_filter_kind { SBX_FILTER_DNS, SBX_FILTER_HTTP, SBX_FILTER_TLS, SBX_FILTER_PACKET, SBX_FILTER_KINDS };
struct sbx_filter_decisions {
  uint64_t allowed[SBX_FILTER_KINDS];
  uint64_t denied[SBX_FILTER_KINDS];
};
void sbx_filter_decisions (struct sbx_filter_decisions *out);
const char *sbx_filter_kind_name (enum sbx_filter_kind k);

/* As sbx_egress_log (sandbox.h), for the sandbox at SANDBOX_IP; an
   unknown one has an empty log. */
int sbx_netproxy_egress_log (struct sbx_netproxy *p, uint32_t sandbox_ip, uint64_t after, size_t limit,
                             struct sbx_egress_record **out, size_t *n, uint64_t *dropped, struct sbx_err *err);

#endif
