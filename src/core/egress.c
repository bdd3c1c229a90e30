/*
 * egress.c - the egress audit log's ring of records, its rate limit, and
 * the reading of logged packet headers (see egress.h).
 *
 * The ring keeps the newest SBX_EGRESS_LOG_MAX records of a sandbox.  It
 * grows by doubling until it holds that many, and only then wraps, so
 * until it is full the records sit in order from index 0; after that the
 * oldest is at HEAD.  Seqs are given in order and without gaps to the
 * records kept, so the oldest kept has seq SEQ - N + 1 and a reader
 * finds where to start by arithmetic.
 *
 * The rate limit is a token bucket: a record costs one token, tokens come
 * back at RATE a second up to BURST.  A sandbox that floods its log gets
 * BURST records at once and RATE a second after that; the rest is only
 * counted, so the log cannot cost the daemon more than a fixed amount of
 * work per sandbox and second, whatever the sandbox sends.
 */
#include "egress.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static size_t
ring_max (const struct sbx_egress_ring *g)
{
  return g->max ? g->max : SBX_EGRESS_LOG_MAX;
}

/* Take a token if there is one. */
static bool
bucket_take (struct sbx_egress_ring *g, uint64_t now_ns)
{
  double rate = g->rate ? g->rate : SBX_EGRESS_RATE;
  double burst = g->burst ? g->burst : SBX_EGRESS_BURST;
  if (g->refill_ns == 0)
    g->tokens = burst; /* a new log starts full */
  else if (now_ns > g->refill_ns)
    {
      g->tokens += (double) (now_ns - g->refill_ns) * rate / 1e9;
      if (g->tokens > burst)
        g->tokens = burst;
    }
  g->refill_ns = now_ns ? now_ns : 1;
  if (g->tokens < 1.0)
    return false;
  g->tokens -= 1.0;
  return true;
}

int
sbx_egress_ring_add (struct sbx_egress_ring *g, const struct sbx_egress_record *r, uint64_t now_ns)
{
  if (!bucket_take (g, now_ns))
    {
      g->dropped++;
      return 0;
    }
  size_t max = ring_max (g);
  struct sbx_egress_record *slot;
  if (g->n < g->cap)
    slot = &g->rec[g->n++];
  else if (g->cap < max)
    {
      size_t cap = g->cap ? g->cap * 2 : 16;
      if (cap > max)
        cap = max;
      struct sbx_egress_record *v = realloc (g->rec, cap * sizeof *v);
      if (v == NULL)
        {
          g->dropped++;
          return 0;
        }
      g->rec = v;
      g->cap = cap;
      slot = &g->rec[g->n++];
    }
  else
    {
      /* full: the oldest goes */
      slot = &g->rec[g->head];
      g->head = (g->head + 1) % g->cap;
      g->dropped++;
    }
  *slot = *r;
  slot->seq = ++g->seq;
  /* the strings are the caller's: make sure they end */
  slot->proto[sizeof slot->proto - 1] = '\0';
  slot->addr[sizeof slot->addr - 1] = '\0';
  slot->name[sizeof slot->name - 1] = '\0';
  slot->rule[sizeof slot->rule - 1] = '\0';
  return 1;
}

int
sbx_egress_ring_read (const struct sbx_egress_ring *g, uint64_t after, size_t limit, struct sbx_egress_record **out,
                      size_t *n)
{
  *out = NULL;
  *n = 0;
  size_t max = ring_max (g);
  if (limit == 0 || limit > max)
    limit = max;
  uint64_t first = g->seq - g->n + 1; /* the oldest kept */
  if (g->n == 0 || after >= g->seq)
    return 0;
  size_t skip = after < first ? 0 : (size_t) (after - first + 1);
  size_t count = g->n - skip;
  if (count > limit)
    count = limit;
  struct sbx_egress_record *v = malloc (count * sizeof *v);
  if (v == NULL)
    return -1;
  for (size_t i = 0; i < count; i++)
    v[i] = g->rec[(g->head + skip + i) % g->cap];
  *out = v;
  *n = count;
  return 0;
}

void
sbx_egress_ring_free (struct sbx_egress_ring *g)
{
  free (g->rec);
  memset (g, 0, sizeof *g);
}

int
sbx_egress_packet_parse (const uint8_t *buf, size_t len, struct sbx_egress_packet *pk)
{
  memset (pk, 0, sizeof *pk);
  if (len < 20 || buf[0] >> 4 != 4)
    return -1;
  size_t ihl = (size_t) (buf[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > len)
    return -1;
  pk->proto = buf[9];
  pk->src = (uint32_t) buf[12] << 24 | (uint32_t) buf[13] << 16 | (uint32_t) buf[14] << 8 | buf[15];
  pk->dst = (uint32_t) buf[16] << 24 | (uint32_t) buf[17] << 16 | (uint32_t) buf[18] << 8 | buf[19];
  /* the ports are in the first fragment only */
  uint16_t frag = (uint16_t) ((buf[6] & 0x1f) << 8 | buf[7]);
  if ((pk->proto == IPPROTO_TCP || pk->proto == IPPROTO_UDP) && frag == 0 && len - ihl >= 4)
    pk->port = (uint16_t) (buf[ihl + 2] << 8 | buf[ihl + 3]);
  return 0;
}

const char *
sbx_egress_proto_name (uint8_t proto)
{
  switch (proto)
    {
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_ICMP:
      return "icmp";
    default:
      return "ip";
    }
}
