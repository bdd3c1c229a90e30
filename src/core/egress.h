/*
 * egress.h - the parts of the egress audit log (net.h) that hold no lock
 * and do no I/O (egress.c): the per-sandbox ring of records with its rate
 * limit, and the reading of the packet headers that the kernel's rules
 * log through NFLOG (net.c).  Exposed for tests/unit/test_netproxy.c and
 * tests/fuzz; the daemon calls them through netproxy.c and net.c.
 */
#ifndef SBX_EGRESS_H
#define SBX_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

/* One sandbox's log.  Zeroed is empty and ready; the records are
   allocated as they come (doubling, up to MAX), so a sandbox that sends
   nothing costs nothing.  MAX, RATE and BURST 0 mean SBX_EGRESS_LOG_MAX,
   SBX_EGRESS_RATE and SBX_EGRESS_BURST (tests set smaller ones). */
struct sbx_egress_ring {
  struct sbx_egress_record *rec;
  size_t cap, n, head; /* head: the oldest record, once the ring is full */
  uint64_t seq;        /* the last seq given */
  uint64_t dropped;    /* lost to the ring's size or the rate limit */
  size_t max;
  unsigned rate, burst;
  double tokens;       /* token bucket, refilled at RATE a second up to BURST */
  uint64_t refill_ns;  /* CLOCK_MONOTONIC of the last refill; 0: full */
};

/* Add a copy of R (its seq is set here) at NOW_NS (CLOCK_MONOTONIC).
   1 kept; 0 dropped by the rate limit or for want of memory (counted). */
int sbx_egress_ring_add (struct sbx_egress_ring *g, const struct sbx_egress_record *r, uint64_t now_ns);
/* The records with seq > AFTER, oldest first, at most LIMIT (0: MAX), as
   a new array in *OUT (NULL when none) and their number in *N; -1 when
   out of memory. */
int sbx_egress_ring_read (const struct sbx_egress_ring *g, uint64_t after, size_t limit,
                          struct sbx_egress_record **out, size_t *n);
void sbx_egress_ring_free (struct sbx_egress_ring *g);

/* The headers of a packet as NFLOG gives it (from its IPv4 header on;
   untrusted: a sandbox made it).  PORT is the TCP or UDP destination
   port, 0 for other protocols or when the transport header is cut. */
struct sbx_egress_packet {
  uint8_t proto; /* IPPROTO_* */
  uint32_t src, dst;
  uint16_t port;
};

/* 0, or -1 when BUF does not hold an IPv4 header. */
int sbx_egress_packet_parse (const uint8_t *buf, size_t len, struct sbx_egress_packet *pk);
/* "tcp", "udp", "icmp", or "ip" for the others. */
const char *sbx_egress_proto_name (uint8_t proto);

#endif
