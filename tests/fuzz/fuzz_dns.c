/*
 * fuzz_dns.c - fuzz harness for the DNS filter (src/core/netproxy.c), end
 * to end through its public interface (netproxy.h): queries a sandbox
 * sends, and the answers of the upstream resolver it passes them to.
 *
 * The filter runs in this process on loopback, its upstream a fake
 * resolver on another loopback port that answers what the input says.
 * Two sandboxes are registered: 127.0.0.1, whose policy denies all but
 * example.com and *.fuzz.test (queries for other names must be REFUSED
 * without asking the upstream), and 127.0.0.2, open to the internet.
 *
 * An input: one byte of flags (bit 0: over TCP, else UDP; bit 1: from the
 * open sandbox), two bytes (big endian) of query length, the query, and
 * the rest is the upstream's answer (its id and QR bit set to match; at
 * least a header, so that the filter takes it at once).
 *
 * What it checks besides the sanitizers: the deny-all sandbox's queries
 * reach the upstream only for its allowed names (read here with ldns), and
 * an answer comes back within 10 s to every query the filter must answer.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/dns
 *   build-clang/fuzz_dns -max_total_time=600 build/fuzz-corpus/dns tests/fuzz/corpus/dns
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include "common/log.h"
#include "common/util.h"
#include "core/netproxy.h"
#include "fuzz_net.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define DNS_MAX 65535

static struct sbx_netproxy *proxy;
static uint16_t dns_port;
static int up_udp, up_tcp;
static pthread_mutex_t up_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t up_answer[DNS_MAX];
static size_t up_answer_len;
static bool up_strict; /* the current query comes from the deny-all sandbox */

/* Is the question of query Q one the deny-all sandbox may ask? */
static bool
name_allowed (const uint8_t *q, size_t len)
{
  ldns_pkt *pkt = NULL;
  if (ldns_wire2pkt (&pkt, q, len) != LDNS_STATUS_OK)
    return false;
  bool ok = false;
  ldns_rr_list *qs = ldns_pkt_question (pkt);
  if (qs && ldns_rr_list_rr_count (qs) == 1)
    {
      char *s = ldns_rdf2str (ldns_rr_owner (ldns_rr_list_rr (qs, 0)));
      if (s)
        {
          size_t l = strlen (s);
          if (l && s[l - 1] == '.')
            s[--l] = '\0';
          for (size_t i = 0; i < l; i++)
            s[i] = (char) tolower ((unsigned char) s[i]);
          ok = strcmp (s, "example.com") == 0 || (l > 10 && strcmp (s + l - 10, ".fuzz.test") == 0);
          free (s);
        }
    }
  ldns_pkt_free (pkt);
  return ok;
}

/* The answer to query Q, into A: the input's, with Q's id and QR set. */
static size_t
make_answer (const uint8_t *q, size_t qlen, uint8_t *a)
{
  pthread_mutex_lock (&up_lock);
  if (up_strict && !name_allowed (q, qlen))
    {
      fprintf (stderr, "fuzz_dns: the upstream was asked a name the policy denies:");
      for (size_t i = 0; i < qlen; i++)
        fprintf (stderr, " %02x", q[i]);
      fprintf (stderr, "\n");
      abort ();
    }
  size_t n = up_answer_len < 12 ? 12 : up_answer_len;
  memset (a, 0, 12);
  memcpy (a, up_answer, up_answer_len);
  pthread_mutex_unlock (&up_lock);
  a[0] = qlen > 0 ? q[0] : 0;
  a[1] = qlen > 1 ? q[1] : 0;
  a[2] |= 0x80;
  return n;
}

static void *
upstream_main (void *arg)
{
  (void) arg;
  static uint8_t q[DNS_MAX], a[DNS_MAX + 2];
  for (;;)
    {
      struct pollfd pfd[2] = { { up_udp, POLLIN, 0 }, { up_tcp, POLLIN, 0 } };
      if (poll (pfd, 2, -1) <= 0)
        continue;
      if (pfd[0].revents)
        {
          struct sockaddr_in from;
          socklen_t fl = sizeof from;
          ssize_t n = recvfrom (up_udp, q, sizeof q, 0, (struct sockaddr *) &from, &fl);
          if (n >= 0)
            {
              size_t al = make_answer (q, (size_t) n, a);
              sendto (up_udp, a, al, 0, (struct sockaddr *) &from, fl);
            }
        }
      if (pfd[1].revents)
        {
          int c = accept4 (up_tcp, NULL, NULL, SOCK_CLOEXEC);
          if (c < 0)
            continue;
          struct timeval tv = { 5, 0 };
          setsockopt (c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          uint8_t hdr[2];
          if (sbx_read_full (c, hdr, 2) == 2)
            {
              size_t n = (size_t) (hdr[0] << 8 | hdr[1]);
              if (sbx_read_full (c, q, n) == (ssize_t) n)
                {
                  size_t al = make_answer (q, n, a + 2);
                  a[0] = (uint8_t) (al >> 8);
                  a[1] = (uint8_t) al;
                  sbx_write_full (c, a, al + 2);
                  /* the filter closes first: wait for it */
                  while (read (c, hdr, sizeof hdr) > 0)
                    ;
                }
            }
          close (c);
        }
    }
  return NULL;
}

static int
loopback (int type, uint32_t ip, uint16_t port, uint16_t *got)
{
  /* no SO_REUSEADDR: a client's UDP socket could then share the
     upstream's port and get its packets */
  int fd = socket (AF_INET, type | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (ip) };
  if (fd < 0 || bind (fd, (struct sockaddr *) &a, sizeof a) < 0)
    {
      if (fd >= 0)
        close (fd);
      return -1;
    }
  socklen_t al = sizeof a;
  getsockname (fd, (struct sockaddr *) &a, &al);
  if (type == SOCK_STREAM)
    listen (fd, 64);
  if (got)
    *got = ntohs (a.sin_port);
  return fd;
}

static void
setup (void)
{
  sbx_log_set_level (SBX_LOG_ERROR);
  fuzz_threads_begin ();
  uint16_t port = 0, same;
  up_tcp = -1;
  for (int tries = 0; tries < 50 && up_tcp < 0; tries++)
    {
      if (tries)
        close (up_udp);
      up_udp = loopback (SOCK_DGRAM, INADDR_LOOPBACK, 0, &port);
      up_tcp = up_udp < 0 ? -1 : loopback (SOCK_STREAM, INADDR_LOOPBACK, port, &same);
    }
  pthread_t th;
  if (up_tcp < 0 || pthread_create (&th, NULL, upstream_main, NULL) != 0)
    abort ();
  struct sbx_netproxy_config cfg = { .upstream_ip = INADDR_LOOPBACK, .upstream_port = port };
  struct sbx_err err;
  if (sbx_netproxy_start (&cfg, &proxy, &err) < 0)
    {
      fprintf (stderr, "fuzz_dns: %s\n", err.msg);
      abort ();
    }
  dns_port = sbx_netproxy_dns_port (proxy);
  const char *allow[] = { "example.com", "*.fuzz.test" };
  struct sbx_net_policy strict = { 0 }, open = { 0 };
  if (sbx_net_policy_build (false, allow, 2, "allow", NULL, 0, "deny", &strict, &err) < 0
      || sbx_net_policy_build (true, NULL, 0, "allow", NULL, 0, "deny", &open, &err) < 0
      || sbx_netproxy_set (proxy, INADDR_LOOPBACK, &strict, &err) < 0
      || sbx_netproxy_set (proxy, INADDR_LOOPBACK + 1, &open, &err) < 0)
    {
      fprintf (stderr, "fuzz_dns: %s\n", err.msg);
      abort ();
    }
  sbx_net_policy_free (&strict);
  sbx_net_policy_free (&open);
  fuzz_threads_end ();
}

/* Wait up to 10 s for FD when the filter MUST answer: nothing then is a
   finding (a hang or a lost worker).  Other queries are not waited for. */
static bool
wait_answer (int fd, bool must)
{
  if (!must)
    return false;
  if (fuzz_readable (fd, 10000))
    return true;
  fprintf (stderr, "fuzz_dns: no answer within 10 s\n");
  abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (proxy == NULL)
    setup ();
  if (size < 3)
    return 0;
  bool tcp = data[0] & 1, open = data[0] & 2;
  size_t qlen = (size_t) (data[1] << 8 | data[2]);
  if (qlen > size - 3)
    qlen = size - 3;
  const uint8_t *q = data + 3;
  pthread_mutex_lock (&up_lock);
  up_answer_len = size - 3 - qlen;
  memcpy (up_answer, q + qlen, up_answer_len);
  up_strict = !open;
  pthread_mutex_unlock (&up_lock);
  /* what the filter answers at all: a query (QR clear) with a header */
  bool must = qlen >= 12 && !(q[2] & 0x80);
  uint32_t src = INADDR_LOOPBACK + (open ? 1 : 0);
  int fd = loopback (tcp ? SOCK_STREAM : SOCK_DGRAM, src, 0, NULL);
  if (fd < 0)
    return 0;
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons (dns_port),
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  static uint8_t buf[DNS_MAX + 2];
  if (tcp)
    {
      /* an empty TCP query cannot be sent (its length would be 0) */
      buf[0] = (uint8_t) (qlen >> 8);
      buf[1] = (uint8_t) qlen;
      memcpy (buf + 2, q, qlen);
      if (fuzz_connect (fd, (struct sockaddr *) &to, sizeof to) == 0 && sbx_write_full (fd, buf, qlen + 2) >= 0
          && wait_answer (fd, must))
        {
          uint8_t hdr[2];
          if (sbx_read_full (fd, hdr, 2) == 2)
            sbx_read_full (fd, buf, (size_t) (hdr[0] << 8 | hdr[1]));
        }
      struct linger lg = { 1, 0 }; /* no TIME_WAIT for millions of these */
      setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
  else if (sendto (fd, q, qlen, 0, (struct sockaddr *) &to, sizeof to) == (ssize_t) qlen && wait_answer (fd, must))
    {
      ssize_t n = recv (fd, buf, sizeof buf, 0);
      if (n >= 2 && (buf[0] != q[0] || buf[1] != q[1]))
        {
          fprintf (stderr, "fuzz_dns: an answer with another id\n");
          abort ();
        }
    }
  close (fd);
  return 0;
}
