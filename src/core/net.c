/*
 * net.c - each sandbox's veth link (rtnetlink through libmnl) and the
 * nftables rules that enforce its egress policy (libnftables).
 *
 * The table "inet sbxd" is shared by every sbxd on the machine.  Its base
 * chains take what crosses a host-side veth ("sbxh*") and drop what
 * belongs to no known sandbox:
 *
 *   forward:  replies into a sandbox pass, nothing else enters one; IPv6
 *             from a sandbox is dropped; the rest goes to the sandbox's
 *             out rules: platform-denied ranges (minus operator ranges)
 *             rejected, then allowOut accepted, then denyOut rejected,
 *             then accepted.
 *   input:    nothing from a sandbox reaches the host except what was
 *             redirected to the DNS or HTTP/TLS filter (its in rules), at
 *             a bounded rate per sandbox (UDP goes to them even when
 *             established, for that bound).
 *   prerouting (nat): DNS sent to the gateway goes to the DNS filter and,
 *             for policies with domains, TCP 80 and 443 to the HTTP/TLS
 *             filter; with request transforms TCP 80 and 443 too; with an
 *             egress proxy every TCP connection (the filter then judges
 *             each by the out rules).
 *   postrouting (nat): sandbox traffic leaving the host is masqueraded.
 *
 * Nearly every sandbox has the plain policy (internet, no lists), so the
 * rules of plain sandboxes are not theirs but their daemon's: chains
 * po_TAG, pi_TAG and pn_TAG, where TAG names the daemon by its state
 * directory, and the sandbox is only an element of that daemon's sets
 * own_TAG (its interface and address) and gw_TAG (its interface and
 * gateway).  The base chains jump to the dispatch chains, which hold one
 * rule per daemon: a packet whose interface and source address are an
 * element of own_TAG goes to that daemon's chains (a forged source
 * matches none and is dropped).  The per-sandbox bounds of those chains
 * are meters (dynamic sets keyed by interface, one per rule).  A sandbox
 * with any other policy has chains of its own, o<slot>, i<slot> and
 * n<slot>, reached through verdict maps keyed by interface before the
 * dispatch.
 *
 * Why: a chain per sandbox made every change cost more the more
 * sandboxes there were.  libnftables reads every chain of the table
 * before it evaluates a command that names one, and a verdict-map
 * element that jumps makes the kernel check every chain reachable from
 * the base chains at each commit: about 80 ms a transaction with 5,000
 * sandboxes.  Adding a set element is neither, so a plain sandbox's
 * rules cost the same at 10,000 sandboxes as at one.
 *
 * Every change is one nftables transaction, so a sandbox never runs with
 * half its rules.  Rules are re-evaluated for every packet a sandbox
 * sends, established connections included, so a tightened policy also
 * cuts connections that are open.
 *
 * A daemon holds the lock file RUN_DIR/nft/TAG while it runs.  Starting
 * and stopping, under the lock RUN_DIR/nft/lock, it rewrites the dispatch
 * chains for the daemons whose chains are in the table, and removes the
 * chains and sets of a daemon that is gone and has no sandbox left in
 * own_TAG (its own, when it stops with none).
 *
 * The egress audit log (net.h) learns the kernel's decisions on direct
 * connections through NFLOG: before each verdict of the out rules and
 * before the final reject of the in rules, a rule logs the first packet
 * of a new connection attempt (ct state new, not yet confirmed: a
 * rejected attempt is never confirmed, so each one is logged; an
 * accepted flow only once), at most LOG_RATE a second per rule and
 * sandbox, to this daemon's NFLOG group with a prefix naming the rule
 * ("sbxd:D": denyOut, ...).  A thread reads them (libnetfilter_log over
 * libmnl) and hands them to netproxy.c, which keeps the logs.  Several
 * sbxd may share the machine: each takes the first free group from
 * NFLOG_GROUP_BASE on (the kernel lets one socket bind a group) and names
 * it in its own rules, which are renewed when it restarts.
 */
#include "netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_log/libnetfilter_log.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "egress.h"
#include "netproxy.h"

#define POOL_BASE 0x0ac80000u /* 10.200.0.0/15: a /30 per slot */
#define POOL_SLOTS 32768u
#define RUN_DIR "/run/sbxd"
#define NFT_DIR RUN_DIR "/nft"
#define TAG_LEN 8 /* hex digits */

/* NFLOG groups tried, in order, until one is free: one per sbxd. */
#define NFLOG_GROUP_BASE 23504 /* 0x5bd0 */
#define NFLOG_GROUP_TRIES 64
#define NFLOG_SNAPLEN 80 /* an IPv4 header with options and the ports */
/* The kernel's own limit, per logging rule and sandbox: above the log's
   (SBX_EGRESS_RATE, SBX_EGRESS_BURST), so that what it lets through and
   the log cannot keep is counted as dropped. */
#define LOG_RATE "limit rate 100/second burst 400 packets"
/* New TCP connections a second from one sandbox to each of the filters,
   in bursts of twice that: beyond it the kernel drops the SYN (the
   client tries again after a second). */
#define NEW_CONN_RATE 200

struct nft_job;

struct sbx_net {
  pthread_mutex_t lock; /* the nft context */
  struct nft_ctx *nft;
  /* nft_run's queue: the transactions waiting while one runs */
  pthread_mutex_t q_lock;
  pthread_cond_t q_done;
  struct nft_job *q_head, **q_tail;
  bool q_running;
  struct sbx_netproxy *proxy;
  struct sbx_cidr *ops;
  size_t n_ops;
  /* NFLOG: group -1 when the kernel offers none (no kernel log then) */
  struct mnl_socket *nflog;
  int nflog_group;
  int stop_fd;
  pthread_t nflog_thread;
  bool nflog_started;
  /* this daemon's chains and sets (see above), and the lock that says
     it runs; the tags whose chains were kept at start, this one's among
     them */
  char tag[TAG_LEN + 1];
  int tag_fd;
  char (*kept)[TAG_LEN + 1];
  size_t n_kept;
};

void
sbx_net_addresses (uint32_t slot, uint32_t *addr, uint32_t *gateway)
{
  uint32_t base = POOL_BASE + (slot % POOL_SLOTS) * 4;
  *gateway = base + 1;
  *addr = base + 2;
}

static void
ip_str (uint32_t ip, char *buf, size_t n)
{
  struct in_addr a = { htonl (ip) };
  inet_ntop (AF_INET, &a, buf, (socklen_t) n);
}

/* ---- nftables ---- */

/* A growing text buffer for one transaction. */
struct cmd {
  char *buf;
  size_t len, cap;
  bool oom;
};

static void __attribute__ ((format (printf, 2, 3)))
cmd_add (struct cmd *c, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (NULL, 0, fmt, ap);
  va_end (ap);
  if (c->oom || n < 0 || sbx_reserve (&c->buf, &c->cap, c->len + (size_t) n + 1, 4096) < 0)
    {
      c->oom = true;
      return;
    }
  va_start (ap, fmt);
  vsnprintf (c->buf + c->len, c->cap - c->len, fmt, ap);
  va_end (ap);
  c->len += (size_t) n;
}

/* One transaction of nft_run's queue. */
struct nft_job {
  const char *buf;
  int r;
  char msg[200];
  bool done;
  struct nft_job *next;
};

/* Run BUF alone; lock held. */
static int
nft_run_one (struct sbx_net *n, struct nft_job *j)
{
  j->r = nft_run_cmd_from_buffer (n->nft, j->buf);
  if (j->r != 0)
    {
      const char *msg = nft_ctx_get_error_buffer (n->nft);
      const char *nl = msg ? strchr (msg, '\n') : NULL;
      snprintf (j->msg, sizeof j->msg, "%.*s", nl ? (int) (nl - msg) : 199, msg ? msg : "failed");
    }
  return j->r;
}

/* Run the jobs of LIST as one transaction, or each alone if that fails
   (a transaction is all or nothing, so the failure is then told to the
   job that caused it only). */
static void
nft_run_batch (struct sbx_net *n, struct nft_job *list)
{
  pthread_mutex_lock (&n->lock);
  if (list->next)
    {
      size_t len = 0;
      for (struct nft_job *j = list; j; j = j->next)
        len += strlen (j->buf) + 1;
      char *all = malloc (len + 1);
      if (all)
        {
          size_t k = 0;
          for (struct nft_job *j = list; j; j = j->next)
            {
              size_t m = strlen (j->buf);
              memcpy (all + k, j->buf, m);
              k += m;
              all[k++] = '\n';
            }
          all[k] = '\0';
          struct nft_job batch = { .buf = all };
          int r = nft_run_one (n, &batch);
          free (all);
          if (r == 0)
            {
              for (struct nft_job *j = list; j; j = j->next)
                j->r = 0;
              pthread_mutex_unlock (&n->lock);
              return;
            }
        }
    }
  for (struct nft_job *j = list; j; j = j->next)
    nft_run_one (n, j);
  pthread_mutex_unlock (&n->lock);
}

/* Run C's commands as one nftables transaction.

   Transactions that arrive while one runs are queued, and the next to
   run takes the whole queue as one transaction.  What an nftables call
   costs is mostly fixed (the library reads the table's chains and sets
   from the kernel before it evaluates a command, and the kernel checks
   the table at each commit), and grows with the table, so a burst of
   sandboxes made or destroyed together pays it once rather than once
   each, one after the other. */
static int
nft_run (struct sbx_net *n, struct cmd *c, struct sbx_err *err)
{
  if (c->oom || c->buf == NULL)
    {
      free (c->buf);
      return sbx_failx (err, ENOMEM, "nftables rules");
    }
  struct nft_job job = { .buf = c->buf };
  pthread_mutex_lock (&n->q_lock);
  *n->q_tail = &job;
  n->q_tail = &job.next;
  while (!job.done)
    {
      if (n->q_running)
        {
          pthread_cond_wait (&n->q_done, &n->q_lock);
          continue;
        }
      /* this thread runs the queue, its own job among it */
      struct nft_job *list = n->q_head;
      n->q_head = NULL;
      n->q_tail = &n->q_head;
      n->q_running = true;
      pthread_mutex_unlock (&n->q_lock);
      nft_run_batch (n, list);
      pthread_mutex_lock (&n->q_lock);
      for (struct nft_job *j = list, *next; j; j = next)
        {
          next = j->next; /* J lives on a waiting thread's stack */
          j->done = true;
        }
      n->q_running = false;
      pthread_cond_broadcast (&n->q_done);
    }
  pthread_mutex_unlock (&n->q_lock);
  free (c->buf);
  if (job.r != 0)
    return sbx_failx (err, EIO, "nftables: %s", job.msg);
  return 0;
}

/* "{ a, b/n, ... }" of LIST, without entries inside another entry (an
   interval set refuses overlaps; CIDR blocks either nest or are apart). */
static void
cmd_set (struct cmd *c, const struct sbx_cidr *list, size_t n)
{
  cmd_add (c, "{ ");
  bool first = true;
  for (size_t i = 0; i < n; i++)
    {
      bool covered = false;
      for (size_t j = 0; j < n && !covered; j++)
        covered = j != i && list[j].prefix <= list[i].prefix && sbx_cidr_contains (&list[j], list[i].addr)
                  && (list[j].prefix < list[i].prefix || j < i);
      if (covered)
        continue;
      char buf[32];
      sbx_cidr_format (&list[i], buf, sizeof buf);
      cmd_add (c, "%s%s", first ? "" : ", ", buf);
      first = false;
    }
  cmd_add (c, " }");
}

static const char base_rules[]
    = "add table inet sbxd\n"
      "add map inet sbxd out_map { type ifname : verdict; }\n"
      "add map inet sbxd in_map { type ifname : verdict; }\n"
      "add map inet sbxd nat_map { type ifname : verdict; }\n"
      "add set inet sbxd platform { type ipv4_addr; flags interval; }\n"
      "flush set inet sbxd platform\n"
      "add chain inet sbxd forward { type filter hook forward priority filter; policy accept; }\n"
      "add chain inet sbxd input { type filter hook input priority filter; policy accept; }\n"
      "add chain inet sbxd prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
      "add chain inet sbxd postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
      "add chain inet sbxd dispatch_o\n"
      "add chain inet sbxd dispatch_i\n"
      "add chain inet sbxd dispatch_n\n"
      "flush chain inet sbxd forward\n"
      "flush chain inet sbxd input\n"
      "flush chain inet sbxd prerouting\n"
      "flush chain inet sbxd postrouting\n"
      "add rule inet sbxd forward oifname \"sbxh*\" ct state established,related accept\n"
      "add rule inet sbxd forward oifname \"sbxh*\" drop\n"
      "add rule inet sbxd forward iifname \"sbxh*\" meta nfproto ipv6 drop\n"
      "add rule inet sbxd forward iifname \"sbxh*\" iifname vmap @out_map\n"
      "add rule inet sbxd forward iifname \"sbxh*\" jump dispatch_o\n"
      "add rule inet sbxd forward iifname \"sbxh*\" drop\n"
      "add rule inet sbxd input iifname \"sbxh*\" meta nfproto ipv6 drop\n"
      /* UDP goes on to the sandbox's rules even when established: its
         DNS to the filter is one long flow, and those rules bound its rate */
      "add rule inet sbxd input iifname \"sbxh*\" ct state established,related meta l4proto != udp accept\n"
      "add rule inet sbxd input iifname \"sbxh*\" iifname vmap @in_map\n"
      "add rule inet sbxd input iifname \"sbxh*\" jump dispatch_i\n"
      "add rule inet sbxd input iifname \"sbxh*\" drop\n"
      "add rule inet sbxd prerouting iifname \"sbxh*\" iifname vmap @nat_map\n"
      "add rule inet sbxd prerouting iifname \"sbxh*\" jump dispatch_n\n"
      "add rule inet sbxd postrouting iifname \"sbxh*\" oifname != \"sbxh*\" masquerade\n";

/* ---- the rules ---- */

#define REJECT "reject with icmpx type admin-prohibited"

/* The meters of a daemon's chains, one per rule that bounds a rate: a
   bucket per sandbox, keyed by its interface (DNS over UDP and TCP, new
   connections to the HTTP/TLS filter, and the three log rules). */
static const char *const meters[] = { "mu", "mt", "mc", "lp", "li", "lh" };
#define N_METERS (sizeof meters / sizeof meters[0])

/* A rule of CHAIN that logs the first packet of a new connection
   attempt, for the egress log: cmd_log_start, the match (if any),
   cmd_log_end with WHY, the verdict that follows.  The connection state
   comes first: the packets of established flows, nearly all of them,
   skip the rest of the rule at once.  METER: the meter of a daemon's
   chain that bounds it per sandbox; NULL in a sandbox's own chain. */
static void
cmd_log_start (struct cmd *c, const char *chain)
{
  cmd_add (c, "add rule inet sbxd %s ct state new ct status ! confirmed", chain);
}

static void
cmd_log_end (struct sbx_net *n, struct cmd *c, const char *meter, char why)
{
  if (meter)
    cmd_add (c, " update @%s_%s { iifname " LOG_RATE " }", meter, n->tag);
  else
    cmd_add (c, " " LOG_RATE);
  cmd_add (c, " log group %d snaplen %d prefix \"sbxd:%c\"\n", n->nflog_group, NFLOG_SNAPLEN, why);
}

/* A verdict of CHAIN on the addresses of LIST (N_LIST of them; NULL:
   the platform's denials, unless an operator range allows), after a
   rule that logs it as WHY when logging (METER: as in cmd_log_end). */
static void
cmd_out_verdict (struct sbx_net *n, struct cmd *c, const char *chain, const char *meter,
                 const struct sbx_cidr *list, size_t n_list, char why, const char *verdict)
{
  for (int pass = n->nflog_group >= 0 ? 0 : 1; pass < 2; pass++)
    {
      if (pass == 0)
        cmd_log_start (c, chain);
      else
        cmd_add (c, "add rule inet sbxd %s", chain);
      if (list)
        {
          cmd_add (c, " ip daddr ");
          cmd_set (c, list, n_list);
        }
      else
        {
          cmd_add (c, " ip daddr @platform");
          if (n->n_ops)
            {
              cmd_add (c, " ip daddr != ");
              cmd_set (c, n->ops, n->n_ops);
            }
        }
      if (pass == 0)
        cmd_log_end (n, c, meter, why);
      else
        cmd_add (c, " %s\n", verdict);
    }
}

/* A daemon's tag: a hash of its state directory, so that a restart
   finds its chains again. */
static void
owner_tag (const char *owner, char tag[TAG_LEN + 1])
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *) owner; *p; p++)
    h = (h ^ *p) * 16777619u;
  snprintf (tag, TAG_LEN + 1, "%08x", h);
}

/* TAG's sets and chains, declared (each a no-op where it exists). */
static void
cmd_tag_declare (struct cmd *c, const char *tag)
{
  cmd_add (c, "add set inet sbxd own_%s { type ifname . ipv4_addr; }\n", tag);
  cmd_add (c, "add set inet sbxd gw_%s { type ifname . ipv4_addr; }\n", tag);
  /* a bucket lasts a minute after the sandbox's last packet; room for
     every slot */
  for (size_t k = 0; k < N_METERS; k++)
    cmd_add (c, "add set inet sbxd %s_%s { type ifname; flags dynamic,timeout; timeout 1m; size %u; }\n", meters[k],
             tag, 2 * POOL_SLOTS);
  for (const char *k = "oin"; *k; k++)
    cmd_add (c, "add chain inet sbxd p%c_%s\n", *k, tag);
}

/* TAG's sets and chains removed (declared first, so that none can be
   missing; the dispatch chains no longer name them). */
static void
cmd_tag_remove (struct cmd *c, const char *tag)
{
  cmd_tag_declare (c, tag);
  for (const char *k = "oin"; *k; k++)
    cmd_add (c, "flush chain inet sbxd p%c_%s\ndelete chain inet sbxd p%c_%s\n", *k, tag, *k, tag);
  cmd_add (c, "delete set inet sbxd own_%s\ndelete set inet sbxd gw_%s\n", tag, tag);
  for (size_t k = 0; k < N_METERS; k++)
    cmd_add (c, "delete set inet sbxd %s_%s\n", meters[k], tag);
}

/* This daemon's chains, rewritten: the rules of its plain sandboxes,
   and the in and nat rules its other sandboxes' chains jump to. */
static void
cmd_tag_rules (struct sbx_net *n, struct cmd *c)
{
  const char *t = n->tag;
  uint16_t dns = sbx_netproxy_dns_port (n->proxy), tcp = sbx_netproxy_tcp_port (n->proxy);
  bool log = n->nflog_group >= 0;
  char chain[16];
  for (const char *k = "oin"; *k; k++)
    cmd_add (c, "flush chain inet sbxd p%c_%s\n", *k, t);
  /* out */
  snprintf (chain, sizeof chain, "po_%s", t);
  cmd_out_verdict (n, c, chain, "lp", NULL, 0, 'P', REJECT);
  if (log)
    {
      cmd_log_start (c, chain);
      cmd_log_end (n, c, "li", 'I');
    }
  cmd_add (c, "add rule inet sbxd %s accept\n", chain);
  /* in: only what was redirected to the filters (single values rather
     than sets: anonymous sets are kernel objects of their own).  First
     each sandbox's own bound on what reaches the filters' sockets,
     which sandboxes share: a flood beyond a few times the DNS filter's
     rate (beyond which it answers SERVFAIL anyway) would fill the UDP
     socket's buffer that its slot shares with others (netproxy.c,
     dns_socks_bind) and the listeners' queues, and others' queries and
     connections would be lost there.  Dropped here,
     per sandbox, it costs the others nothing. */
  snprintf (chain, sizeof chain, "pi_%s", t);
  unsigned pps = 4 * sbx_netproxy_dns_rate (n->proxy);
  cmd_add (c, "add rule inet sbxd %s udp dport %u update @mu_%s { iifname limit rate over %u/second burst %u packets } drop\n",
           chain, dns, t, pps, 2 * pps);
  cmd_add (c,
           "add rule inet sbxd %s tcp dport %u ct state new update @mt_%s { iifname limit rate over %u/second burst %u "
           "packets } drop\n",
           chain, dns, t, NEW_CONN_RATE, 2 * NEW_CONN_RATE);
  cmd_add (c,
           "add rule inet sbxd %s tcp dport %u ct state new update @mc_%s { iifname limit rate over %u/second burst %u "
           "packets } drop\n",
           chain, tcp, t, NEW_CONN_RATE, 2 * NEW_CONN_RATE);
  cmd_add (c, "add rule inet sbxd %s udp dport %u ct status dnat accept\n", chain, dns);
  cmd_add (c, "add rule inet sbxd %s tcp dport %u ct status dnat accept\n", chain, dns);
  cmd_add (c, "add rule inet sbxd %s tcp dport %u ct status dnat accept\n", chain, tcp);
  if (log)
    {
      cmd_log_start (c, chain);
      cmd_log_end (n, c, "lh", 'H');
    }
  cmd_add (c, "add rule inet sbxd %s " REJECT "\n", chain);
  /* nat: DNS to the gateway */
  cmd_add (c, "add rule inet sbxd pn_%s iifname . ip daddr @gw_%s udp dport 53 redirect to :%u\n", t, t, dns);
  cmd_add (c, "add rule inet sbxd pn_%s iifname . ip daddr @gw_%s tcp dport 53 redirect to :%u\n", t, t, dns);
}

/* The dispatch chains, rewritten for the daemons of TAGS: a sandbox in
   own_TAG goes to TAG's chains. */
static void
cmd_dispatch (struct cmd *c, char (*tags)[TAG_LEN + 1], size_t n_tags)
{
  for (const char *k = "oin"; *k; k++)
    {
      cmd_add (c, "flush chain inet sbxd dispatch_%c\n", *k);
      for (size_t i = 0; i < n_tags; i++)
        cmd_add (c, "add rule inet sbxd dispatch_%c iifname . ip saddr @own_%s jump p%c_%s\n", *k, tags[i], *k,
                 tags[i]);
    }
}

/* Run a listing command; its output, allocated, in *OUT (NULL if the
   command failed, the object not being there among the causes). */
static char *
nft_list (struct sbx_net *n, const char *cmd)
{
  pthread_mutex_lock (&n->lock);
  char *out = nft_run_cmd_from_buffer (n->nft, cmd) == 0 ? strdup (nft_ctx_get_output_buffer (n->nft)) : NULL;
  pthread_mutex_unlock (&n->lock);
  return out;
}

/* Does own_TAG hold a sandbox? (Yes when it cannot be told.) */
static bool
tag_has_sandboxes (struct sbx_net *n, const char *tag)
{
  char cmd[64];
  snprintf (cmd, sizeof cmd, "list set inet sbxd own_%s", tag);
  char *out = nft_list (n, cmd);
  bool has = out == NULL || strstr (out, "elements") != NULL;
  free (out);
  return has;
}

/* Hold NFT_DIR/NAME: its descriptor, or -1 (errno EWOULDBLOCK: another
   holds it; WAIT: until it is free). */
static int
lock_file (const char *name, bool wait)
{
  char path[128];
  snprintf (path, sizeof path, NFT_DIR "/%s", name);
  int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0 && flock (fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0)
    {
      int e = errno;
      close (fd);
      errno = e;
      return -1;
    }
  return fd;
}

/* Bring the daemons' chains in order, under NFT_DIR/lock: the dispatch
   chains rewritten for the daemons whose chains are in the table, those
   of a daemon that is gone removed once it has no sandbox left; this
   daemon's own declared and rewritten (OURS, at start, after PREFIX,
   the base rules), or removed when it has no sandbox left (at stop). */
static int
tags_sync (struct sbx_net *n, bool ours, const struct cmd *prefix, struct sbx_err *err)
{
  int lock = lock_file ("lock", true);
  if (lock < 0)
    return sbx_fail (err, errno, "lock " NFT_DIR "/lock");
  /* under that lock: a daemon that removes a gone one's chains holds
     its lock file until it has removed that too */
  if (ours && n->tag_fd < 0 && (n->tag_fd = lock_file (n->tag, false)) < 0)
    {
      sbx_fail (err, errno, "lock " NFT_DIR "/%s (another sbxd's state directory has this one's tag)", n->tag);
      close (lock);
      return -1;
    }
  /* (it lists nothing, successfully, before the table exists; a failure
     would drop the other daemons from the dispatch chains) */
  char *chains = nft_list (n, "list chains inet");
  if (chains == NULL)
    {
      close (lock);
      return sbx_failx (err, EIO, "nftables: cannot list the chains");
    }
  size_t cap = 1;
  for (const char *p = chains; (p = strstr (p, "chain po_")); p++)
    cap++;
  char (*keep)[TAG_LEN + 1] = calloc (cap, sizeof *keep);
  char (*gone)[TAG_LEN + 1] = calloc (cap, sizeof *gone);
  int *gone_fd = calloc (cap, sizeof *gone_fd);
  size_t n_keep = 0, n_gone = 0;
  int r = -1;
  if (keep == NULL || gone == NULL || gone_fd == NULL)
    {
      sbx_fail (err, ENOMEM, "nftables rules");
      goto out;
    }
  if (ours)
    memcpy (keep[n_keep++], n->tag, TAG_LEN + 1);
  for (const char *p = chains; (p = strstr (p, "chain po_")); p++)
    {
      char tag[TAG_LEN + 1];
      snprintf (tag, sizeof tag, "%.*s", TAG_LEN, p + strlen ("chain po_"));
      if (strlen (tag) != TAG_LEN || strspn (tag, "0123456789abcdef") != TAG_LEN)
        continue;
      if (strcmp (tag, n->tag) == 0)
        {
          if (!ours)
            {
              gone_fd[n_gone] = -1;
              memcpy (gone[n_gone++], tag, sizeof tag);
            }
          continue;
        }
      /* its daemon is gone when its lock is free; its chains stay while
         sandboxes it left running are in its set */
      int fd = lock_file (tag, false);
      if (fd >= 0 && !tag_has_sandboxes (n, tag))
        {
          gone_fd[n_gone] = fd;
          memcpy (gone[n_gone++], tag, sizeof tag);
          continue;
        }
      if (fd >= 0)
        close (fd);
      memcpy (keep[n_keep++], tag, sizeof tag);
    }
  struct cmd c = { 0 };
  if (prefix)
    cmd_add (&c, "%s", prefix->buf);
  if (ours)
    {
      cmd_tag_declare (&c, n->tag);
      cmd_tag_rules (n, &c);
    }
  cmd_dispatch (&c, keep, n_keep);
  for (size_t i = 0; i < n_gone; i++)
    cmd_tag_remove (&c, gone[i]);
  r = nft_run (n, &c, err);
  for (size_t i = 0; r == 0 && i < n_gone; i++)
    {
      char path[128];
      snprintf (path, sizeof path, NFT_DIR "/%s", gone[i]);
      unlink (path);
    }
  /* the tags kept, for sbx_net_forget_stale */
  if (r == 0 && ours)
    {
      free (n->kept);
      n->kept = keep;
      n->n_kept = n_keep;
      keep = NULL;
    }
out:
  for (size_t i = 0; gone_fd && i < n_gone; i++)
    if (gone_fd[i] >= 0)
      close (gone_fd[i]);
  free (gone_fd);
  free (gone);
  free (keep);
  free (chains);
  close (lock);
  return r;
}

/* SLOT's elements of TAG's sets (own, gw) added, and with DEL removed
   again (so that a removal cannot fail on what is gone). */
static void
cmd_members (struct cmd *c, const char *tag, uint32_t slot, bool del)
{
  uint32_t ip[2];
  sbx_net_addresses (slot, &ip[0], &ip[1]);
  static const char *const sets[] = { "own", "gw" };
  for (int pass = 0; pass < (del ? 2 : 1); pass++)
    for (int k = 0; k < 2; k++)
      {
        char a[INET_ADDRSTRLEN];
        ip_str (ip[k], a, sizeof a);
        cmd_add (c, "%s element inet sbxd %s_%s { \"" SBX_NET_IFPREFIX "%u\" . %s }\n", pass ? "delete" : "add",
                 sets[k], tag, slot, a);
      }
}

/* The slot's three chains and its map entries, ensured. */
static void
cmd_slot_ensure (struct cmd *c, uint32_t slot)
{
  static const char kinds[] = "oin";
  static const char *const maps[] = { "out_map", "in_map", "nat_map" };
  for (int k = 0; k < 3; k++)
    cmd_add (c, "add chain inet sbxd %c%u\n", kinds[k], slot);
  for (int k = 0; k < 3; k++)
    cmd_add (c, "add element inet sbxd %s { \"" SBX_NET_IFPREFIX "%u\" : jump %c%u }\n", maps[k], slot, kinds[k],
             slot);
}

static void
cmd_slot_flush (struct cmd *c, uint32_t slot)
{
  cmd_add (c, "flush chain inet sbxd o%u\nflush chain inet sbxd i%u\nflush chain inet sbxd n%u\n", slot, slot, slot);
}

/* The slot's own chains and map entries removed (ensured first, so that
   the deletions cannot fail on what is gone). */
static void
cmd_slot_remove (struct cmd *c, uint32_t slot)
{
  static const char kinds[] = "oin";
  static const char *const maps[] = { "out_map", "in_map", "nat_map" };
  cmd_slot_ensure (c, slot);
  cmd_slot_flush (c, slot);
  for (int k = 0; k < 3; k++)
    cmd_add (c, "delete element inet sbxd %s { \"" SBX_NET_IFPREFIX "%u\" }\n", maps[k], slot);
  for (int k = 0; k < 3; k++)
    cmd_add (c, "delete chain inet sbxd %c%u\n", kinds[k], slot);
}

static int apply_build (struct sbx_net *n, uint32_t slot, const struct sbx_net_policy *p, struct cmd *c,
                        struct sbx_err *err);

static int
apply (struct sbx_net *n, uint32_t slot, const struct sbx_net_policy *p, struct sbx_err *err)
{
  struct cmd c = { 0 };
  if (apply_build (n, slot, p, &c, err) < 0)
    {
      free (c.buf);
      return -1;
    }
  return nft_run (n, &c, err);
}

int
sbx_net_apply (struct sbx_net *n, uint32_t slot, const struct sbx_net_policy *p, struct sbx_err *err)
{
  return apply (n, slot, p, err);
}

/* Turn on IPv4 forwarding.  If it was off, remember that (machine-wide,
   for every sbxd) and forward nothing but sandbox traffic, so the host
   does not become a router for anything else. */
static int
enable_forwarding (bool *guard, struct sbx_err *err)
{
  char cur[8] = "";
  int fd = open ("/proc/sys/net/ipv4/ip_forward", O_RDWR | O_CLOEXEC);
  if (fd < 0 || read (fd, cur, sizeof cur - 1) < 0)
    {
      int e = errno;
      if (fd >= 0)
        close (fd);
      return sbx_fail (err, e, "read net.ipv4.ip_forward");
    }
  if (cur[0] == '0')
    {
      if (sbx_mkdir_p (RUN_DIR, 0700, err) < 0)
        {
          close (fd);
          return -1;
        }
      int o = open (RUN_DIR "/ip_forward.off", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (o >= 0)
        close (o);
      if (pwrite (fd, "1\n", 2, 0) != 2)
        {
          int e = errno;
          close (fd);
          return sbx_fail (err, e, "turn on net.ipv4.ip_forward");
        }
    }
  close (fd);
  *guard = access (RUN_DIR "/ip_forward.off", F_OK) == 0;
  return 0;
}

static uint32_t
resolv_conf_nameserver (void)
{
  FILE *f = fopen ("/etc/resolv.conf", "re");
  if (f == NULL)
    return 0;
  char line[256];
  uint32_t ip = 0;
  while (ip == 0 && fgets (line, sizeof line, f))
    {
      char addr[64];
      struct in_addr a;
      if (sscanf (line, " nameserver %63s", addr) == 1 && inet_pton (AF_INET, addr, &a) == 1)
        ip = ntohl (a.s_addr);
    }
  fclose (f);
  return ip;
}

/* ---- NFLOG: the kernel's decisions, for the egress log ---- */

/* Send a configuration message and wait for its acknowledgement; log
   messages that arrive meanwhile (a group of an earlier run) are
   skipped.  0, or -1 with errno. */
static int
nflog_talk (struct mnl_socket *nl, struct nlmsghdr *nlh)
{
  static uint32_t seq;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = ++seq;
  if (mnl_socket_sendto (nl, nlh, nlh->nlmsg_len) < 0)
    return -1;
  for (;;)
    {
      ssize_t r = mnl_socket_recvfrom (nl, buf, sizeof buf);
      if (r < 0)
        return -1;
      int cb = mnl_cb_run (buf, (size_t) r, nlh->nlmsg_seq, mnl_socket_get_portid (nl), NULL, NULL);
      if (cb <= MNL_CB_STOP)
        return cb < 0 ? -1 : 0;
    }
}

/* Which rule logged a packet, from its prefix ("sbxd:X"); -1 if none. */
static int
nflog_why (const struct nlattr *prefix)
{
  static const char kinds[] = { [SBX_KRULE_PLATFORM] = 'P', [SBX_KRULE_DENY] = 'D', [SBX_KRULE_ALLOW] = 'A',
                                [SBX_KRULE_INTERNET] = 'I', [SBX_KRULE_NONE] = 'N', [SBX_KRULE_HOST] = 'H' };
  const char *p = mnl_attr_get_payload (prefix);
  size_t len = mnl_attr_get_payload_len (prefix);
  /* "sbxd:X" and its NUL */
  if (len < 6 || memcmp (p, "sbxd:", 5) != 0 || (len > 6 && p[6] != '\0'))
    return -1;
  for (size_t k = 0; k < sizeof kinds; k++)
    if (kinds[k] == p[5])
      return (int) k;
  return -1;
}

static int
nflog_packet (const struct nlmsghdr *nlh, void *data)
{
  struct sbx_net *n = data;
  if ((nlh->nlmsg_type & 0xff) != NFULNL_MSG_PACKET)
    return MNL_CB_OK;
  struct nlattr *attr[NFULA_MAX + 1] = { 0 };
  if (nflog_nlmsg_parse (nlh, attr) < 0 || attr[NFULA_PREFIX] == NULL || attr[NFULA_PAYLOAD] == NULL)
    return MNL_CB_OK;
  int why = nflog_why (attr[NFULA_PREFIX]);
  struct sbx_egress_packet pk;
  if (why < 0
      || sbx_egress_packet_parse (mnl_attr_get_payload (attr[NFULA_PAYLOAD]),
                                  mnl_attr_get_payload_len (attr[NFULA_PAYLOAD]), &pk) < 0)
    return MNL_CB_OK;
  sbx_netproxy_record_packet (n->proxy, pk.src, (enum sbx_netproxy_kernel_rule) why, sbx_egress_proto_name (pk.proto),
                              pk.dst, pk.port);
  return MNL_CB_OK;
}

static void *
nflog_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-nflog");
  struct sbx_net *n = arg;
  static const size_t cap = 65536;
  char *buf = malloc (cap);
  int fd = mnl_socket_get_fd (n->nflog);
  while (buf)
    {
      struct pollfd pfd[2] = { { fd, POLLIN, 0 }, { n->stop_fd, POLLIN, 0 } };
      if (poll (pfd, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (pfd[1].revents)
        break;
      ssize_t r = recv (fd, buf, cap, MSG_DONTWAIT);
      if (r < 0)
        {
          /* ENOBUFS: the kernel dropped messages (lost, not counted) */
          if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS)
            continue;
          break;
        }
      mnl_cb_run (buf, (size_t) r, 0, mnl_socket_get_portid (n->nflog), nflog_packet, n);
    }
  free (buf);
  return NULL;
}

/* Bind the first free NFLOG group and start reading it.  Without NFLOG
   (a kernel without nfnetlink_log) the daemon runs on, and the log has
   only the DNS and HTTP/TLS filters' decisions. */
static void
nflog_start (struct sbx_net *n)
{
  char buf[MNL_SOCKET_BUFFER_SIZE];
  struct mnl_socket *nl = mnl_socket_open2 (NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (nl == NULL || mnl_socket_bind (nl, 0, MNL_SOCKET_AUTOPID) < 0)
    goto fail;
  int group = -1;
  for (int g = NFLOG_GROUP_BASE; g < NFLOG_GROUP_BASE + NFLOG_GROUP_TRIES && group < 0; g++)
    {
      struct nlmsghdr *nlh = nflog_nlmsg_put_header (buf, NFULNL_MSG_CONFIG, AF_UNSPEC, (uint16_t) g);
      nflog_attr_put_cfg_cmd (nlh, NFULNL_CFG_CMD_BIND);
      if (nflog_talk (nl, nlh) == 0)
        group = g;
      else if (errno != EBUSY && errno != EPERM && errno != EEXIST)
        goto fail; /* not "taken": no NFLOG at all */
    }
  if (group < 0)
    goto fail;
  struct nlmsghdr *nlh = nflog_nlmsg_put_header (buf, NFULNL_MSG_CONFIG, AF_UNSPEC, (uint16_t) group);
  nflog_attr_put_cfg_mode (nlh, NFULNL_COPY_PACKET, NFLOG_SNAPLEN);
  /* each packet at once, not batched for up to a second */
  mnl_attr_put_u32 (nlh, NFULA_CFG_QTHRESH, htonl (1));
  if (nflog_talk (nl, nlh) < 0)
    goto fail;
  int rcvbuf = 1 << 20;
  setsockopt (mnl_socket_get_fd (nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  mnl_socket_setsockopt (nl, NETLINK_NO_ENOBUFS, &one, sizeof one);
  n->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (n->stop_fd < 0)
    goto fail;
  n->nflog = nl;
  n->nflog_group = group;
  if (pthread_create (&n->nflog_thread, NULL, nflog_main, n) != 0)
    {
      n->nflog = NULL;
      n->nflog_group = -1;
      goto fail;
    }
  n->nflog_started = true;
  return;
fail:
  sbx_log_fields (SBX_LOG_WARN, "NFLOG unavailable: the egress log shows no direct connections", "error",
                  strerror (errno), NULL);
  if (nl)
    mnl_socket_close (nl);
}

int
sbx_net_open (const struct sbx_net_config *cfg, struct sbx_net **out, struct sbx_err *err)
{
  struct sbx_net *n = calloc (1, sizeof *n);
  if (n == NULL)
    return sbx_fail (err, ENOMEM, "network");
  pthread_mutex_init (&n->lock, NULL);
  pthread_mutex_init (&n->q_lock, NULL);
  pthread_cond_init (&n->q_done, NULL);
  n->q_tail = &n->q_head;
  n->nflog_group = -1;
  n->stop_fd = -1;
  n->tag_fd = -1;
  if (cfg->n_operator_allow)
    {
      n->ops = calloc (cfg->n_operator_allow, sizeof *n->ops);
      if (n->ops == NULL)
        {
          sbx_fail (err, ENOMEM, "network");
          goto fail;
        }
      memcpy (n->ops, cfg->operator_allow, cfg->n_operator_allow * sizeof *n->ops);
      n->n_ops = cfg->n_operator_allow;
    }
  n->nft = nft_ctx_new (NFT_CTX_DEFAULT);
  if (n->nft == NULL || nft_ctx_buffer_output (n->nft) < 0 || nft_ctx_buffer_error (n->nft) < 0)
    {
      sbx_failx (err, ENOMEM, "nftables context");
      goto fail;
    }
  bool guard = false;
  if (enable_forwarding (&guard, err) < 0)
    goto fail;
  struct sbx_netproxy_config pc = {
    .upstream_ip = cfg->dns_upstream_ip ? cfg->dns_upstream_ip : resolv_conf_nameserver (),
    .upstream_port = cfg->dns_upstream_port,
    .operator_allow = n->ops,
    .n_operator_allow = n->n_ops,
    .limits = cfg->limits,
    .tls_dir = cfg->tls_dir,
    .egress_ca_file = cfg->egress_ca_file,
  };
  if (pc.upstream_ip == 0)
    pc.upstream_ip = 0x7f000001; /* resolv.conf's own default */
  if (sbx_netproxy_start (&pc, &n->proxy, err) < 0)
    goto fail;
  nflog_start (n);
  /* this daemon's chains name the filters' ports and its NFLOG group */
  owner_tag (cfg->owner ? cfg->owner : "", n->tag);
  if (sbx_mkdir_p (NFT_DIR, 0700, err) < 0)
    goto fail;
  struct cmd base = { 0 };
  cmd_add (&base, "%s", base_rules);
  cmd_add (&base, "add element inet sbxd platform ");
  cmd_set (&base, sbx_net_platform_deny, sbx_net_platform_deny_count);
  cmd_add (&base, "\n");
  if (guard)
    cmd_add (&base, "add rule inet sbxd forward iifname != \"sbxh*\" oifname != \"sbxh*\" drop\n");
  if (base.oom)
    {
      free (base.buf);
      sbx_failx (err, ENOMEM, "nftables rules");
      goto fail;
    }
  int r = tags_sync (n, true, &base, err);
  free (base.buf);
  if (r < 0)
    goto fail;
  *out = n;
  return 0;
fail:
  sbx_net_close (n);
  return -1;
}

const char *
sbx_net_egress_ca_pem (struct sbx_net *n)
{
  return n ? sbx_netproxy_ca_pem (n->proxy) : NULL;
}

void
sbx_net_close (struct sbx_net *n)
{
  if (n == NULL)
    return;
  /* this daemon's chains go with it unless sandboxes it leaves running
     use them */
  if (n->tag_fd >= 0 && !tag_has_sandboxes (n, n->tag))
    {
      struct sbx_err err;
      if (tags_sync (n, false, NULL, &err) < 0)
        sbx_log_fields (SBX_LOG_WARN, "cannot remove this daemon's network rules", "error", err.msg, NULL);
    }
  if (n->tag_fd >= 0)
    close (n->tag_fd);
  if (n->nflog_started)
    {
      eventfd_write (n->stop_fd, 1);
      pthread_join (n->nflog_thread, NULL);
    }
  if (n->nflog)
    mnl_socket_close (n->nflog);
  if (n->stop_fd >= 0)
    close (n->stop_fd);
  if (n->proxy)
    sbx_netproxy_stop (n->proxy);
  if (n->nft)
    nft_ctx_free (n->nft);
  pthread_mutex_destroy (&n->lock);
  pthread_mutex_destroy (&n->q_lock);
  pthread_cond_destroy (&n->q_done);
  free (n->ops);
  free (n->kept);
  free (n);
}

/* At most this many sandboxes' rules in one transaction of
   nft_run_batched. */
#define NFT_BATCH 256

/* Run the commands BUILD writes for items 0 .. COUNT-1 in transactions
   of NFT_BATCH items.  A transaction is all or nothing, so the items
   of one that fails are run one at a time, and each that fails is told
   to FAILED.  One transaction per sandbox made a start with thousands of
   sandboxes take minutes (3,480: four minutes), and destroying thousands
   go at a few a second: the kernel checks the whole table at each
   commit, so each costs more the more sandboxes there are (about 80 ms
   with 5,000 sandboxes' chains).  In batches it is a second or two. */
static void
nft_run_batched (struct sbx_net *n, size_t count, int (*build) (void *ud, size_t i, struct cmd *c, struct sbx_err *err),
                 void (*failed) (void *ud, size_t i, const char *msg), void *ud)
{
  for (size_t first = 0; first < count; first += NFT_BATCH)
    {
      size_t end = count - first > NFT_BATCH ? first + NFT_BATCH : count;
      struct cmd c = { 0 };
      struct sbx_err err;
      bool built = true;
      for (size_t i = first; i < end && built; i++)
        built = build (ud, i, &c, &err) == 0;
      if (built && nft_run (n, &c, &err) == 0)
        continue;
      if (!built)
        free (c.buf);
      for (size_t i = first; i < end; i++)
        {
          struct cmd one = { 0 };
          if (build (ud, i, &one, &err) < 0)
            {
              free (one.buf);
              failed (ud, i, err.msg);
            }
          else if (nft_run (n, &one, &err) < 0)
            failed (ud, i, err.msg);
        }
    }
}

struct reapply_batch {
  struct sbx_net *n;
  const uint32_t *slots;
  const struct sbx_net_policy *const *ps;
  void (*failed) (void *ud, size_t i, const char *msg);
  void *ud;
};

static int
reapply_build (void *ud, size_t i, struct cmd *c, struct sbx_err *err)
{
  struct reapply_batch *b = ud;
  return apply_build (b->n, b->slots[i], b->ps[i], c, err);
}

static void
reapply_failed (void *ud, size_t i, const char *msg)
{
  struct reapply_batch *b = ud;
  b->failed (b->ud, i, msg);
}

void
sbx_net_reapply_many (struct sbx_net *n, size_t count, const uint32_t *slots, const struct sbx_net_policy *const *ps,
                      void (*failed) (void *ud, size_t i, const char *msg), void *ud)
{
  struct reapply_batch b = { n, slots, ps, failed, ud };
  nft_run_batched (n, count, reapply_build, reapply_failed, &b);
}

/* SLOT's rules for policy P: a plain sandbox is an element of this
   daemon's sets, with no chain of its own (any it had are removed);
   another gets its chains, which jump to this daemon's for what they
   share. */
static int
apply_build (struct sbx_net *n, uint32_t slot, const struct sbx_net_policy *p, struct cmd *cp, struct sbx_err *err)
{
  uint32_t addr, gw;
  sbx_net_addresses (slot, &addr, &gw);
  if (sbx_netproxy_set (n->proxy, addr, p, err) < 0)
    return -1;
  cmd_members (cp, n->tag, slot, false);
  if (sbx_net_policy_plain (p))
    {
      cmd_slot_remove (cp, slot);
      return 0;
    }
  char gws[INET_ADDRSTRLEN], addrs[INET_ADDRSTRLEN], chain[16];
  ip_str (gw, gws, sizeof gws);
  ip_str (addr, addrs, sizeof addrs);
  uint16_t tcp = sbx_netproxy_tcp_port (n->proxy);
  cmd_slot_ensure (cp, slot);
  cmd_slot_flush (cp, slot);
  /* only the sandbox's own address: never another's (the kernel already
     refuses a foreign source without CAP_NET_ADMIN; this does not rely on it) */
  cmd_add (cp, "add rule inet sbxd o%u ip saddr != %s drop\n", slot, addrs);
  cmd_add (cp, "add rule inet sbxd i%u ip saddr != %s drop\n", slot, addrs);
  /* each verdict below comes twice when logging: a rule that logs (it
     cannot also decide, as its rate limit would skip the verdict too),
     then the same match with the verdict */
  bool log = n->nflog_group >= 0;
  snprintf (chain, sizeof chain, "o%u", slot);
  if (!p->enabled)
    {
      if (log)
        {
          cmd_log_start (cp, chain);
          cmd_log_end (n, cp, NULL, 'N');
          snprintf (chain, sizeof chain, "i%u", slot);
          cmd_log_start (cp, chain);
          cmd_log_end (n, cp, NULL, 'N');
        }
      cmd_add (cp, "add rule inet sbxd o%u " REJECT "\n", slot);
      cmd_add (cp, "add rule inet sbxd i%u " REJECT "\n", slot);
      cmd_add (cp, "add rule inet sbxd n%u accept\n", slot);
      return 0;
    }
  /* out: the platform's denials first, unless an operator range
     allows; then allowOut, then denyOut */
  cmd_out_verdict (n, cp, chain, NULL, NULL, 0, 'P', REJECT);
  if (p->n_allow)
    cmd_out_verdict (n, cp, chain, NULL, p->allow, p->n_allow, 'A', "accept");
  if (p->n_deny)
    cmd_out_verdict (n, cp, chain, NULL, p->deny, p->n_deny, 'D', REJECT);
  if (log)
    {
      cmd_log_start (cp, chain);
      cmd_log_end (n, cp, NULL, 'I');
    }
  cmd_add (cp, "add rule inet sbxd %s accept\n", chain);
  /* in: as every sandbox's with a network */
  cmd_add (cp, "add rule inet sbxd i%u jump pi_%s\n", slot, n->tag);
  /* nat: DNS to the gateway as every sandbox's, then web traffic when
     names decide */
  cmd_add (cp, "add rule inet sbxd n%u jump pn_%s\n", slot, n->tag);
  if (p->proxy)
    {
      /* every TCP connection goes through the filter, which judges it as
         the rules above would and carries it through the proxy */
      cmd_add (cp, "add rule inet sbxd n%u ip daddr != %s meta l4proto tcp redirect to :%u\n", slot, gws, tcp);
      return 0;
    }
  /* web traffic, whatever allows it, when requests are transformed
     (HTTP, and HTTPS: the filter terminates TLS for the hosts with rules
     and lets the others pass by their server name) */
  if (p->n_rules)
    {
      cmd_add (cp, "add rule inet sbxd n%u tcp dport 80 redirect to :%u\n", slot, tcp);
      cmd_add (cp, "add rule inet sbxd n%u tcp dport 443 redirect to :%u\n", slot, tcp);
    }
  if (p->n_domains && p->n_deny)
    {
      /* addresses allowed by address rules go straight out */
      if (p->n_allow)
        {
          cmd_add (cp, "add rule inet sbxd n%u ip daddr ", slot);
          cmd_set (cp, p->allow, p->n_allow);
          cmd_add (cp, " accept\n");
        }
      cmd_add (cp, "add rule inet sbxd n%u tcp dport 80 redirect to :%u\n", slot, tcp);
      cmd_add (cp, "add rule inet sbxd n%u tcp dport 443 redirect to :%u\n", slot, tcp);
    }
  return 0;
}

/* ---- rtnetlink ---- */

static int
nl_talk (struct mnl_socket *nl, struct nlmsghdr *nlh, struct sbx_err *err, const char *what)
{
  char buf[MNL_SOCKET_BUFFER_SIZE];
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = (uint32_t) time (NULL);
  if (mnl_socket_sendto (nl, nlh, nlh->nlmsg_len) < 0)
    return sbx_fail (err, errno, "%s", what);
  ssize_t r = mnl_socket_recvfrom (nl, buf, sizeof buf);
  if (r < 0)
    return sbx_fail (err, errno, "%s", what);
  if (mnl_cb_run (buf, (size_t) r, nlh->nlmsg_seq, mnl_socket_get_portid (nl), NULL, NULL) < 0)
    return sbx_fail (err, errno, "%s", what);
  return 0;
}

static struct mnl_socket *
nl_open (struct sbx_err *err)
{
  struct mnl_socket *nl = mnl_socket_open2 (NETLINK_ROUTE, SOCK_CLOEXEC);
  if (nl == NULL || mnl_socket_bind (nl, 0, MNL_SOCKET_AUTOPID) < 0)
    {
      sbx_fail (err, errno, "rtnetlink socket");
      if (nl)
        mnl_socket_close (nl);
      return NULL;
    }
  return nl;
}

/* A link message in BUF: its header, and its ifinfomsg in *IFI. */
static struct nlmsghdr *
link_msg (char *buf, uint16_t type, uint16_t flags, struct ifinfomsg **ifi)
{
  struct nlmsghdr *nlh = mnl_nlmsg_put_header (buf);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  *ifi = mnl_nlmsg_put_extra_header (nlh, sizeof **ifi);
  (*ifi)->ifi_family = AF_UNSPEC;
  return nlh;
}

static int
link_delete (struct mnl_socket *nl, const char *name, struct sbx_err *err)
{
  char buf[512];
  struct ifinfomsg *ifi;
  struct nlmsghdr *nlh = link_msg (buf, RTM_DELLINK, 0, &ifi);
  mnl_attr_put_strz (nlh, IFLA_IFNAME, name);
  return nl_talk (nl, nlh, err, "delete link");
}

static int
veth_create (struct mnl_socket *nl, const char *name, pid_t pid, struct sbx_err *err)
{
  char buf[1024];
  struct ifinfomsg *ifi;
  struct nlmsghdr *nlh = link_msg (buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi);
  mnl_attr_put_strz (nlh, IFLA_IFNAME, name);
  struct nlattr *linkinfo = mnl_attr_nest_start (nlh, IFLA_LINKINFO);
  mnl_attr_put_strz (nlh, IFLA_INFO_KIND, "veth");
  struct nlattr *data = mnl_attr_nest_start (nlh, IFLA_INFO_DATA);
  struct nlattr *peer = mnl_attr_nest_start (nlh, VETH_INFO_PEER);
  struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header (nlh, sizeof *pifi);
  pifi->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz (nlh, IFLA_IFNAME, "eth0");
  mnl_attr_put_u32 (nlh, IFLA_NET_NS_PID, (uint32_t) pid);
  mnl_attr_nest_end (nlh, peer);
  mnl_attr_nest_end (nlh, data);
  mnl_attr_nest_end (nlh, linkinfo);
  return nl_talk (nl, nlh, err, "create veth");
}

static int
addr_add_up (struct mnl_socket *nl, const char *name, uint32_t ip, struct sbx_err *err)
{
  unsigned idx = if_nametoindex (name);
  if (idx == 0)
    return sbx_fail (err, errno, "find %s", name);
  char buf[512];
  struct nlmsghdr *nlh = mnl_nlmsg_put_header (buf);
  nlh->nlmsg_type = RTM_NEWADDR;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE;
  struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header (nlh, sizeof *ifa);
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = 30;
  ifa->ifa_index = idx;
  uint32_t be = htonl (ip);
  mnl_attr_put_u32 (nlh, IFA_LOCAL, be);
  mnl_attr_put_u32 (nlh, IFA_ADDRESS, be);
  if (nl_talk (nl, nlh, err, "address the host side") < 0)
    return -1;
  struct ifinfomsg *ifi;
  nlh = link_msg (buf, RTM_NEWLINK, 0, &ifi);
  ifi->ifi_index = (int) idx;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return nl_talk (nl, nlh, err, "bring the host side up");
}

/* Set a per-link sysctl; quiet when the host lacks it (no IPv6). */
static void
link_sysctl (const char *family, const char *name, const char *knob, const char *value)
{
  char path[128];
  snprintf (path, sizeof path, "/proc/sys/net/%s/conf/%s/%s", family, name, knob);
  int fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd >= 0)
    {
      if (write (fd, value, strlen (value)) < 0)
        sbx_log_fields (SBX_LOG_WARN, "cannot set a network sysctl", "path", path, "error", strerror (errno), NULL);
      close (fd);
    }
}

int
sbx_net_link_create (struct sbx_net *n, uint32_t slot, pid_t pid, struct sbx_err *err)
{
  char name[IFNAMSIZ];
  snprintf (name, sizeof name, SBX_NET_IFPREFIX "%u", slot);
  uint32_t addr, gw;
  sbx_net_addresses (slot, &addr, &gw);
  struct mnl_socket *nl = nl_open (err);
  if (nl == NULL)
    return -1;
  struct sbx_err ignored;
  int r = veth_create (nl, name, pid, err);
  if (r < 0 && err->code == EEXIST)
    {
      /* left by an earlier sandbox of this slot whose namespace the
         kernel has not yet torn down, or by a crash */
      link_delete (nl, name, &ignored);
      r = veth_create (nl, name, pid, err);
    }
  if (r == 0)
    {
      /* the host side: no IPv6, and strict reverse-path filtering */
      link_sysctl ("ipv6", name, "disable_ipv6", "1");
      link_sysctl ("ipv4", name, "rp_filter", "1");
      r = addr_add_up (nl, name, gw, err);
      if (r < 0)
        link_delete (nl, name, &ignored);
    }
  mnl_socket_close (nl);
  if (r < 0)
    return -1;
  struct sbx_net_policy internet = { .enabled = true };
  if (apply (n, slot, &internet, err) < 0)
    {
      sbx_net_forget (n, slot);
      return -1;
    }
  return 0;
}

struct forget_batch {
  struct sbx_net *n;
  const uint32_t *slots;
};

/* The removal of SLOTS[I]: its elements of this daemon's sets, and its
   own chains if it had any. */
static int
forget_build (void *ud, size_t i, struct cmd *c, struct sbx_err *err)
{
  (void) err;
  struct forget_batch *b = ud;
  cmd_members (c, b->n->tag, b->slots[i], true);
  cmd_slot_remove (c, b->slots[i]);
  return 0;
}

static void
forget_failed (void *ud, size_t i, const char *msg)
{
  char s[16];
  snprintf (s, sizeof s, "%u", ((struct forget_batch *) ud)->slots[i]);
  sbx_log_fields (SBX_LOG_WARN, "cannot remove a network slot's rules", "slot", s, "error", msg, NULL);
}

void
sbx_net_forget_many (struct sbx_net *n, size_t count, const uint32_t *slots)
{
  for (size_t i = 0; i < count; i++)
    {
      uint32_t addr, gw;
      sbx_net_addresses (slots[i], &addr, &gw);
      sbx_netproxy_remove (n->proxy, addr);
    }
  struct forget_batch b = { n, slots };
  nft_run_batched (n, count, forget_build, forget_failed, &b);
  struct sbx_err err;
  struct mnl_socket *nl = nl_open (&err);
  if (nl == NULL)
    {
      sbx_log_fields (SBX_LOG_WARN, "cannot delete network links", "error", err.msg, NULL);
      return;
    }
  for (size_t i = 0; i < count; i++)
    {
      char name[IFNAMSIZ];
      snprintf (name, sizeof name, SBX_NET_IFPREFIX "%u", slots[i]);
      if (link_delete (nl, name, &err) < 0 && err.code != ENODEV)
        sbx_log_fields (SBX_LOG_WARN, "cannot delete a network link", "link", name, "error", err.msg, NULL);
    }
  mnl_socket_close (nl);
}

void
sbx_net_forget (struct sbx_net *n, uint32_t slot)
{
  sbx_net_forget_many (n, 1, &slot);
}

void
sbx_net_forget_stale (struct sbx_net *n, uint32_t slot)
{
  sbx_net_forget (n, slot);
  /* another daemon's sandbox, gone: its elements would send a new
     sandbox of the slot to that daemon's chains */
  for (size_t i = 0; i < n->n_kept; i++)
    if (strcmp (n->kept[i], n->tag) != 0)
      {
        struct cmd c = { 0 };
        struct sbx_err err;
        cmd_members (&c, n->kept[i], slot, true);
        if (nft_run (n, &c, &err) < 0)
          sbx_log_fields (SBX_LOG_DEBUG, "cannot remove a slot from another daemon's set", "error", err.msg, NULL);
      }
}

int
sbx_net_egress_log (struct sbx_net *n, uint32_t slot, uint64_t after, size_t limit, struct sbx_egress_record **out,
                    size_t *count, uint64_t *dropped, struct sbx_err *err)
{
  uint32_t addr, gw;
  sbx_net_addresses (slot, &addr, &gw);
  return sbx_netproxy_egress_log (n->proxy, addr, after, limit, out, count, dropped, err);
}
