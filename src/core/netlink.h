/*
 * netlink.h - the veth link of each sandbox and the nftables rules that
 * enforce its egress policy (net.c).
 *
 * Sandbox N (its machine-wide uid slot) gets a veth pair: "sbxh<N>" on the
 * host, "eth0" in the sandbox's network namespace, addressed from
 * 10.200.0.0/15 in a /30 per slot.  All rules live in the nftables table
 * "inet sbxd", shared by every sbxd on the machine: a sandbox with the
 * plain policy is an element of its daemon's sets, one with any other has
 * chains of its own, named after its slot (net.c says why).
 */
#ifndef SBX_NETLINK_H
#define SBX_NETLINK_H

#include <stdint.h>
#include <sys/types.h>

#include "net.h"
#include "netproxy.h"

#define SBX_NET_IFPREFIX "sbxh"

struct sbx_net;

struct sbx_net_config {
  uint32_t dns_upstream_ip;  /* host byte order; 0: the first nameserver of /etc/resolv.conf */
  uint16_t dns_upstream_port;
  const struct sbx_cidr *operator_allow; /* ranges sandboxes may reach despite the platform's denials */
  size_t n_operator_allow;
  struct sbx_netproxy_limits limits;     /* per-sandbox bounds of the DNS and HTTP/TLS filter (0: defaults) */
  const char *tls_dir;                   /* the egress CA's directory (netproxy.h); NULL: no transforms on HTTPS */
  const char *egress_ca_file;            /* more roots trusted for destinations (PEM); NULL: the system's only */
  const char *owner;                     /* what names this daemon's rules: its state directory */
};

/* Set up the host side: forwarding, the base table, the DNS and HTTP/TLS
   filter.  Sandboxes of an earlier run are re-applied with sbx_net_apply. */
int sbx_net_open (const struct sbx_net_config *cfg, struct sbx_net **out, struct sbx_err *err);
void sbx_net_close (struct sbx_net *n);
/* The egress CA's certificate, PEM, that sandboxes trust (NULL: none). */
const char *sbx_net_egress_ca_pem (struct sbx_net *n);

/* The sandbox's address and its gateway (the host side) for SLOT. */
void sbx_net_addresses (uint32_t slot, uint32_t *addr, uint32_t *gateway);

/* Create the veth pair of SLOT with its inner end in the network
   namespace of PID, and the slot's rules for the default policy
   (internet, no rules). */
int sbx_net_link_create (struct sbx_net *n, uint32_t slot, pid_t pid, struct sbx_err *err);
/* Enforce POLICY for SLOT (a single nftables transaction), whatever
   rules the slot had. */
int sbx_net_apply (struct sbx_net *n, uint32_t slot, const struct sbx_net_policy *policy, struct sbx_err *err);
/* sbx_net_apply for COUNT slots at once (at start: in few
   transactions); FAILED(UD, I, MESSAGE) for each I that could not be. */
void sbx_net_reapply_many (struct sbx_net *n, size_t count, const uint32_t *slots,
                           const struct sbx_net_policy *const *policies,
                           void (*failed) (void *ud, size_t i, const char *msg), void *ud);
/* Remove SLOT's rules, filter state (its egress log too) and link; quiet
   if already gone. */
void sbx_net_forget (struct sbx_net *n, uint32_t slot);
/* sbx_net_forget for COUNT slots at once (in few transactions). */
void sbx_net_forget_many (struct sbx_net *n, size_t count, const uint32_t *slots);
/* sbx_net_forget for a slot whose sandbox may have been another
   daemon's (an id range released at start): also out of the sets of the
   daemons found at start. */
void sbx_net_forget_stale (struct sbx_net *n, uint32_t slot);
/* The egress log of SLOT's sandbox: as sbx_egress_log (sandbox.h). */
int sbx_net_egress_log (struct sbx_net *n, uint32_t slot, uint64_t after, size_t limit, struct sbx_egress_record **out,
                        size_t *count, uint64_t *dropped, struct sbx_err *err);

#endif
