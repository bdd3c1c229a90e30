/*
 * test_netproxy.c - tests of src/core/netproxy.c.
 *
 * The TLS server_name and HTTP Host parsers on real ClientHellos (made by
 * OpenSSL on a memory BIO pair), on every prefix of them and on random
 * corruptions; the table of remembered addresses; the verdict on relayed
 * connections; then the DNS filter end to end on loopback, against a fake
 * upstream resolver in a thread: unknown sources get no answer, allowed
 * names are answered, other names REFUSED under deny-all, AAAA empty, a
 * truncated UDP answer passed on and the TCP retry served over TCP.  The
 * TCP relay itself needs an nftables redirect (SO_ORIGINAL_DST), so here
 * only its refusals are checked.  The egress log: its ring (order, seq,
 * paging, the cap), its rate limit on a simulated clock, the packet
 * header reader, the rule each verdict names, and the DNS filter's
 * decisions as recorded.  No root, no network; a few seconds.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -Wformat=2 -O2 -Isrc -o /tmp/test_netproxy \
 *     tests/unit/test_netproxy.c src/core/netproxy.c src/core/netpolicy.c src/core/egress.c src/core/egress_tls.c src/common/log.c \
 *     src/common/error.c src/common/util.c -lldns -lssl -lcrypto -ljansson -lpthread && /tmp/test_netproxy
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "core/egress.h"
#include "core/netproxy.h"
#include "core/netproxy_internal.h"

#include "check.h"

#define HELLO_BUF 16384

static int ok_n, failed_before;

/* One line per group of checks: "ok N ..." or "not ok N ...". */
static void
ok (const char *what)
{
  printf ("%sok %d %s\n", failed > failed_before ? "not " : "", ++ok_n, what);
  failed_before = failed;
}

/* ------------------------------------------------------------ parsers */

/* The first flight of a TLS client for HOST (NULL: no server_name). */
static size_t
client_hello (const char *host, int max_version, uint8_t *out, size_t cap)
{
  SSL_CTX *ctx = SSL_CTX_new (TLS_client_method ());
  SSL *ssl = SSL_new (ctx);
  BIO *inner, *outer;
  BIO_new_bio_pair (&inner, 0, &outer, 0);
  SSL_set_bio (ssl, inner, inner);
  if (max_version)
    SSL_set_max_proto_version (ssl, max_version);
  if (host)
    SSL_set_tlsext_host_name (ssl, host);
  SSL_set_connect_state (ssl);
  SSL_do_handshake (ssl); /* wants to read: the hello is written */
  int n = BIO_read (outer, out, (int) cap);
  SSL_free (ssl);
  BIO_free (outer);
  SSL_CTX_free (ctx);
  return n > 0 ? (size_t) n : 0;
}

static bool
valid_name (const char *s)
{
  size_t len = strlen (s);
  if (len == 0 || len > SBX_NETPROXY_NAME_MAX || s[len - 1] == '.' || s[0] == '.')
    return false;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'
          || s[i] == '.'))
      return false;
  return strstr (s, "..") == NULL;
}

static void
test_sni (void)
{
  uint8_t hello[HELLO_BUF];
  char name[SBX_NETPROXY_NAME_MAX + 1];
  const int versions[] = { 0, TLS1_2_VERSION };
  for (size_t v = 0; v < 2; v++)
    {
      size_t len = client_hello ("Api.Example.COM", versions[v], hello, sizeof hello);
      CHECK (len > 100 && len == 5 + (size_t) (hello[3] << 8 | hello[4]));
      CHECK (sbx_sni_parse (hello, len, name, sizeof name) == 1 && strcmp (name, "api.example.com") == 0);
      bool prefixes = true;
      for (size_t i = 0; i < len; i++)
        if (sbx_sni_parse (hello, i, name, sizeof name) != 0)
          {
            fprintf (stderr, "prefix %zu of %zu\n", i, len);
            prefixes = false;
          }
      CHECK (prefixes);
      /* bytes after the record (the next flight) change nothing */
      uint8_t more[HELLO_BUF + 16];
      memcpy (more, hello, len);
      memset (more + len, 0x17, 16);
      CHECK (sbx_sni_parse (more, len + 16, name, sizeof name) == 1 && strcmp (name, "api.example.com") == 0);
    }
  ok ("sni: real ClientHellos (TLS 1.3 and 1.2), every prefix needs more");

  size_t len = client_hello ("example.com.", 0, hello, sizeof hello);
  CHECK (sbx_sni_parse (hello, len, name, sizeof name) == 1 && strcmp (name, "example.com") == 0);
  len = client_hello (NULL, 0, hello, sizeof hello);
  CHECK (len > 0 && sbx_sni_parse (hello, len, name, sizeof name) == -1);
  /* a name that does not fit the caller's buffer */
  len = client_hello ("example.com", 0, hello, sizeof hello);
  CHECK (sbx_sni_parse (hello, len, name, 5) == -1);
  ok ("sni: final dot, no server_name, small buffer");

  /* not TLS, not a handshake, not a ClientHello, bad record lengths */
  CHECK (sbx_sni_parse ((const uint8_t *) "GET / HTTP/1.1\r\n", 16, name, sizeof name) == -1);
  CHECK (sbx_sni_parse ((const uint8_t *) "\x16\x02", 2, name, sizeof name) == -1);
  CHECK (sbx_sni_parse ((const uint8_t *) "\x16\x03\x01\x00\x10\x02", 6, name, sizeof name) == -1);
  CHECK (sbx_sni_parse ((const uint8_t *) "\x16\x03\x01\x40\x01", 5, name, sizeof name) == -1);
  CHECK (sbx_sni_parse ((const uint8_t *) "\x16\x03\x01\x00\x00", 5, name, sizeof name) == -1);
  CHECK (sbx_sni_parse ((const uint8_t *) "\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9, name, sizeof name) == -1);
  /* a handshake longer than its record (fragmented): not read */
  uint8_t frag[HELLO_BUF];
  len = client_hello ("example.com", 0, frag, sizeof frag);
  frag[7]++;
  CHECK (sbx_sni_parse (frag, len, name, sizeof name) == -1);
  /* extensions' length one byte too long or too short */
  len = client_hello ("example.com", 0, hello, sizeof hello);
  size_t sid = hello[5 + 4 + 34];
  size_t cs_off = 5 + 4 + 35 + sid;
  size_t cs = (size_t) hello[cs_off] << 8 | hello[cs_off + 1];
  size_t comp_off = cs_off + 2 + cs;
  size_t ext_off = comp_off + 1 + hello[comp_off];
  memcpy (frag, hello, len);
  frag[ext_off + 1]++;
  CHECK (sbx_sni_parse (frag, len, name, sizeof name) == -1);
  memcpy (frag, hello, len);
  frag[ext_off + 1]--;
  CHECK (sbx_sni_parse (frag, len, name, sizeof name) == -1);
  ok ("sni: malformed records and handshakes");

  /* random corruption never crashes and never gives a bad name */
  srand (1234);
  bool sane = true;
  int found = 0;
  for (int round = 0; round < 20000; round++)
    {
      memcpy (frag, hello, len);
      int flips = 1 + rand () % 4;
      for (int f = 0; f < flips; f++)
        {
          size_t at = (size_t) rand () % len;
          frag[at] ^= (uint8_t) (1u << (rand () % 8));
        }
      size_t l = round % 4 == 0 ? (size_t) rand () % (len + 1) : len;
      name[0] = '\0';
      int r = sbx_sni_parse (frag, l, name, sizeof name);
      if (r < -1 || r > 1 || (r == 1 && !valid_name (name)))
        sane = false;
      found += r == 1;
    }
  /* random bytes too */
  for (int round = 0; round < 2000; round++)
    {
      uint8_t junk[600];
      for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t) rand ();
      junk[0] = 0x16;
      junk[1] = 3;
      junk[5] = 1;
      int r = sbx_sni_parse (junk, (size_t) rand () % sizeof junk, name, sizeof name);
      if (r < -1 || r > 1 || (r == 1 && !valid_name (name)))
        sane = false;
    }
  CHECK (sane);
  CHECK (found > 0); /* flips outside the structure keep the name */
  ok ("sni: 20000 corrupted hellos and 2000 random records");
}

static int
host (const char *req, char *name)
{
  return sbx_http_host_parse ((const uint8_t *) req, strlen (req), name, SBX_NETPROXY_NAME_MAX + 1);
}

static void
test_http (void)
{
  char name[SBX_NETPROXY_NAME_MAX + 1];
  CHECK (host ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", name) == 1 && strcmp (name, "example.com") == 0);
  CHECK (host ("GET /x?y HTTP/1.1\r\nUser-Agent: t\r\nhOsT:Api.Example.COM:8080\r\nAccept: */*\r\n\r\nbody", name)
             == 1
         && strcmp (name, "api.example.com") == 0);
  CHECK (host ("POST / HTTP/1.0\nHOST: \t example.com. \t\n\n", name) == 1 && strcmp (name, "example.com") == 0);
  CHECK (host ("GET / HTTP/1.1\r\nX-Host: evil.com\r\nHost: ok.example.com:80\r\n\r\n", name) == 1
         && strcmp (name, "ok.example.com") == 0);
  ok ("http: Host in various cases, with a port, a final dot, LF-only lines");

  CHECK (host ("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", name) == -1);             /* no Host */
  CHECK (host ("GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n", name) == -1); /* two */
  CHECK (host ("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a.com:\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a.com:80x\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a b.com\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a..com\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost:\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost : a.com\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a.com\r\n folded\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/1.1\r\nHost: a\r.com\r\n\r\n", name) == -1);
  CHECK (host ("GET / HTTP/2.0\r\nHost: a.com\r\n\r\n", name) == -1);
  CHECK (host ("GET /\r\nHost: a.com\r\n\r\n", name) == -1);
  CHECK (host ("\x01\x02\x03\x04", name) == -1);
  CHECK (host ("SSH-2.0-OpenSSH_9.2\r\n", name) == -1);
  CHECK (host ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", name) == -1);
  /* a server takes an absolute-form target's name over the Host header */
  CHECK (host ("GET http://evil.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", name) == -1);
  CHECK (host ("CONNECT evil.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", name) == -1);
  CHECK (host ("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", name) == 1);
  CHECK (host ("OPTIONS *x HTTP/1.1\r\nHost: example.com\r\n\r\n", name) == -1);
  ok ("http: no Host, two Hosts, IP literal, bad ports and names, folding, not HTTP/1, absolute targets");

  const char *req = "GET /index.html HTTP/1.1\r\nHost: www.Example.com:443\r\nConnection: close\r\n\r\n";
  bool prefixes = true;
  for (size_t i = 0; i < strlen (req); i++)
    if (sbx_http_host_parse ((const uint8_t *) req, i, name, sizeof name) != 0)
      {
        fprintf (stderr, "http prefix %zu\n", i);
        prefixes = false;
      }
  CHECK (prefixes);
  CHECK (host (req, name) == 1 && strcmp (name, "www.example.com") == 0);
  /* random corruption */
  bool sane = true;
  size_t len = strlen (req);
  for (int round = 0; round < 20000; round++)
    {
      char buf[128];
      memcpy (buf, req, len);
      buf[(size_t) rand () % len] ^= (char) (1u << (rand () % 8));
      int r = sbx_http_host_parse ((const uint8_t *) buf, (size_t) rand () % (len + 1), name, sizeof name);
      if (r < -1 || r > 1 || (r == 1 && !valid_name (name)))
        sane = false;
    }
  CHECK (sane);
  ok ("http: every prefix needs more, corrupted requests");
}

/* Feed S to a fresh stream for HOST in pieces of STEP bytes (0: whole);
   the bytes let through, or -1. */
static long
stream (const char *host, const char *s, size_t step)
{
  static struct sbx_http_stream hs;
  sbx_http_stream_init (&hs, host);
  size_t len = strlen (s), done = 0;
  while (done < len)
    {
      size_t n = step && len - done > step ? step : len - done;
      ssize_t k = sbx_http_stream_client (&hs, (const uint8_t *) s + done, n);
      if (k < 0)
        return -1;
      done += (size_t) k;
      if ((size_t) k < n)
        break; /* held: waiting for the server */
    }
  return (long) done;
}

static void
test_http_stream (void)
{
  const char *two = "GET / HTTP/1.1\r\nHost: a.com\r\n\r\nGET /2 HTTP/1.1\r\nHost: A.com:80\r\n\r\n";
  const char *other = "GET / HTTP/1.1\r\nHost: a.com\r\n\r\nGET /2 HTTP/1.1\r\nHost: b.com\r\n\r\n";
  const char *body = "POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 33\r\n\r\n"
                     "\r\nHost: b.com\r\n\r\nGET / HTTP/1.1\r\n"
                     "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n";
  const char *chunked = "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "1f;ext=1\r\nGET / HTTP/1.1\r\nHost: b.com\r\n\r\n\r\n0\r\nX-T: 1\r\n\r\n"
                        "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n";
  bool all = true;
  for (size_t step = 0; step < 40; step++)
    {
      all &= stream ("a.com", two, step) == (long) strlen (two);
      all &= stream ("a.com", other, step) == -1;
      all &= stream ("a.com", body, step) == (long) strlen (body);
      all &= stream ("a.com", chunked, step) == (long) strlen (chunked);
    }
  CHECK (all);
  ok ("http stream: keep-alive requests must name the same host, bodies and chunks skipped, any split");

  const char *smuggle = "POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK (stream ("a.com", smuggle, 0) == -1);
  CHECK (stream ("a.com", "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: gzip\r\n\r\n", 0) == -1);
  CHECK (stream ("a.com", "POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 0)
         == -1);
  CHECK (stream ("a.com", "GET http://b.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", 0) == -1);
  CHECK (stream ("a.com", "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0) == -1);
  ok ("http stream: ambiguous framing, unknown codings, absolute targets end the connection");

  /* an Upgrade: held until the server says whether it switched */
  static struct sbx_http_stream hs;
  const char *up = "GET /ws HTTP/1.1\r\nHost: a.com\r\nUpgrade: websocket\r\n\r\n";
  const char *next = "GET / HTTP/1.1\r\nHost: b.com\r\n\r\n";
  sbx_http_stream_init (&hs, "a.com");
  CHECK (sbx_http_stream_client (&hs, (const uint8_t *) up, strlen (up)) == (ssize_t) strlen (up));
  CHECK (sbx_http_stream_waiting (&hs));
  CHECK (sbx_http_stream_client (&hs, (const uint8_t *) next, strlen (next)) == 0);
  sbx_http_stream_server (&hs, (const uint8_t *) "HTTP/1.1 2", 10);
  CHECK (sbx_http_stream_waiting (&hs));
  sbx_http_stream_server (&hs, (const uint8_t *) "00 OK\r\n", 7);
  CHECK (!sbx_http_stream_waiting (&hs));
  CHECK (sbx_http_stream_client (&hs, (const uint8_t *) next, strlen (next)) == -1);

  sbx_http_stream_init (&hs, "a.com");
  CHECK (sbx_http_stream_client (&hs, (const uint8_t *) up, strlen (up)) == (ssize_t) strlen (up));
  sbx_http_stream_server (&hs, (const uint8_t *) "HTTP/1.1 101 Switching Protocols\r\n", 34);
  CHECK (!sbx_http_stream_waiting (&hs));
  CHECK (sbx_http_stream_client (&hs, (const uint8_t *) next, strlen (next)) == (ssize_t) strlen (next));
  ok ("http stream: after an Upgrade, opaque only if the server answered 101");

  /* random bytes never crash it */
  bool sane = true;
  for (int round = 0; round < 2000; round++)
    {
      uint8_t buf[512];
      for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t) "GET / HTTP/1.1\r\nHost: a.comContent-Length: 9chunked\r\n0123456789abcdef;:"[rand () % 72];
      sbx_http_stream_init (&hs, "a.com");
      ssize_t k = sbx_http_stream_client (&hs, buf, sizeof buf);
      sane &= k >= -1 && k <= (ssize_t) sizeof buf;
    }
  CHECK (sane);
  ok ("http stream: random input");
}

/* ------------------------------------------------ memo and verdict */

static void
test_memo (void)
{
  struct sbx_memo m = { .max = 4 };
  CHECK (sbx_memo_put (&m, "a.com", 1, 100, 0) == 0);
  CHECK (sbx_memo_has (&m, "a.com", 1, 50));
  CHECK (!sbx_memo_has (&m, "a.com", 1, 100)); /* expired */
  CHECK (!sbx_memo_has (&m, "a.com", 2, 50));
  CHECK (!sbx_memo_has (&m, "b.com", 1, 50));
  sbx_memo_put (&m, "a.com", 2, 100, 0);
  sbx_memo_put (&m, "b.com", 3, 100, 0);
  sbx_memo_put (&m, "c.com", 4, 100, 0);
  sbx_memo_put (&m, "a.com", 1, 200, 10); /* refreshed: now the newest */
  CHECK (m.n == 4);
  sbx_memo_put (&m, "d.com", 5, 100, 10); /* full: a.com/2 is the oldest */
  CHECK (m.n == 4);
  CHECK (!sbx_memo_has (&m, "a.com", 2, 20));
  CHECK (sbx_memo_has (&m, "a.com", 1, 150));
  CHECK (sbx_memo_has (&m, "d.com", 5, 20));
  /* an expired entry makes room before the oldest live one */
  sbx_memo_put (&m, "e.com", 6, 300, 150);
  CHECK (sbx_memo_has (&m, "a.com", 1, 160) && sbx_memo_has (&m, "e.com", 6, 160) && m.n == 4);
  sbx_memo_free (&m);
  struct sbx_memo big = { 0 };
  char nm[32];
  for (int i = 0; i < 5000; i++)
    {
      snprintf (nm, sizeof nm, "h%d.example.com", i);
      sbx_memo_put (&big, nm, (uint32_t) i, 1000, 0);
    }
  CHECK (big.n == 4096);
  CHECK (!sbx_memo_has (&big, "h0.example.com", 0, 1) && sbx_memo_has (&big, "h4999.example.com", 4999, 1));
  sbx_memo_free (&big);
  ok ("memo: expiry, refresh, eviction of the oldest, cap 4096");
}

struct fake_memo {
  const char *name;
  uint32_t addr;
};

static bool
fake_remembered (void *ctx, const char *name, uint32_t addr)
{
  const struct fake_memo *m = ctx;
  for (; m->name; m++)
    if (strcmp (m->name, name) == 0 && m->addr == addr)
      return true;
  return false;
}

#define IP(a, b, c, d) ((uint32_t) (a) << 24 | (uint32_t) (b) << 16 | (uint32_t) (c) << 8 | (uint32_t) (d))

static void
test_decide (void)
{
  char *domains[] = { "example.com", "*.cdn.net" };
  struct sbx_cidr deny_all = { 0, 0 };
  struct sbx_cidr allow[] = { { IP (1, 2, 3, 4), 32 }, { IP (10, 1, 0, 0), 16 } };
  struct sbx_net_policy pol = { .enabled = true,
                                .allow = allow,
                                .n_allow = 2,
                                .deny = &deny_all,
                                .n_deny = 1,
                                .domains = domains,
                                .n_domains = 2 };
  const struct fake_memo memo[] = { { "example.com", IP (198, 51, 100, 10) },
                                    { "a.cdn.net", IP (198, 51, 100, 20) },
                                    { "evil.com", IP (198, 51, 100, 30) },
                                    { "example.com", IP (10, 0, 0, 5) },
                                    { NULL, 0 } };
  void *ctx = (void *) memo;
  sbx_netproxy_remembered_fn rem = fake_remembered;
  CHECK (sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "example.com", IP (198, 51, 100, 10)));
  CHECK (sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "a.cdn.net", IP (198, 51, 100, 20)));
  /* allowed name, address remembered for another name */
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "example.com", IP (198, 51, 100, 20)));
  /* allowed name, address never remembered */
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "example.com", IP (203, 0, 113, 1)));
  /* remembered but not allowed */
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "evil.com", IP (198, 51, 100, 30)));
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "cdn.net", IP (198, 51, 100, 20)));
  /* no name, or no memory */
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, NULL, IP (198, 51, 100, 10)));
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, NULL, NULL, "example.com", IP (198, 51, 100, 10)));
  /* the address alone */
  CHECK (sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, NULL, IP (1, 2, 3, 4)));
  CHECK (sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "evil.com", IP (1, 2, 3, 4)));
  /* platform-denied, even allowed and remembered, unless an operator range says so */
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, "example.com", IP (10, 0, 0, 5)));
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, NULL, IP (10, 1, 2, 3)));
  struct sbx_cidr ops = { IP (10, 0, 0, 0), 8 };
  CHECK (sbx_netproxy_decide (&pol, &ops, 1, rem, ctx, "example.com", IP (10, 0, 0, 5)));
  CHECK (!sbx_netproxy_decide (&pol, &ops, 1, rem, ctx, "example.com", IP (10, 0, 0, 6)));
  CHECK (!sbx_netproxy_decide (&pol, NULL, 0, rem, ctx, NULL, IP (127, 0, 0, 1)));
  /* a policy without deny-all: any public address */
  struct sbx_net_policy open = { .enabled = true, .domains = domains, .n_domains = 2 };
  CHECK (sbx_netproxy_decide (&open, NULL, 0, rem, ctx, NULL, IP (203, 0, 113, 1)));
  CHECK (sbx_netproxy_decide (&open, NULL, 0, rem, ctx, "evil.com", IP (203, 0, 113, 1)));
  CHECK (!sbx_netproxy_decide (&open, NULL, 0, rem, ctx, NULL, IP (192, 168, 1, 1)));
  /* mode none */
  struct sbx_net_policy none = { .enabled = false };
  CHECK (!sbx_netproxy_decide (&none, NULL, 0, rem, ctx, "example.com", IP (198, 51, 100, 10)));
  CHECK (!sbx_netproxy_decide (NULL, NULL, 0, rem, ctx, "example.com", IP (198, 51, 100, 10)));
  ok ("decide: name and remembered address, address rules, platform and operator ranges, mode none");
}

/* ----------------------------------------------------- egress log */

static struct sbx_egress_record
rec_named (const char *name)
{
  struct sbx_egress_record r = { .time_ms = 1, .port = 80, .verdict = SBX_EGRESS_DENIED };
  snprintf (r.proto, sizeof r.proto, "tcp");
  snprintf (r.name, sizeof r.name, "%s", name);
  snprintf (r.rule, sizeof r.rule, "denyOut 0.0.0.0/0");
  return r;
}

static void
test_egress_ring (void)
{
  /* no rate limit to speak of: a huge bucket */
  struct sbx_egress_ring g = { .max = 8, .rate = 1000000, .burst = 1000000 };
  struct sbx_egress_record *out = NULL;
  size_t n = 99;
  CHECK (sbx_egress_ring_read (&g, 0, 0, &out, &n) == 0 && n == 0 && out == NULL);
  char name[32];
  for (int i = 1; i <= 5; i++)
    {
      snprintf (name, sizeof name, "n%d", i);
      struct sbx_egress_record r = rec_named (name);
      r.seq = 777; /* the ring gives the seq */
      CHECK (sbx_egress_ring_add (&g, &r, (uint64_t) i * 1000) == 1);
    }
  CHECK (sbx_egress_ring_read (&g, 0, 0, &out, &n) == 0 && n == 5);
  for (size_t i = 0; out && i < n; i++)
    {
      snprintf (name, sizeof name, "n%zu", i + 1);
      CHECK (out[i].seq == i + 1 && strcmp (out[i].name, name) == 0 && strcmp (out[i].rule, "denyOut 0.0.0.0/0") == 0);
    }
  free (out);
  CHECK (sbx_egress_ring_read (&g, 3, 0, &out, &n) == 0 && n == 2 && out[0].seq == 4 && out[1].seq == 5);
  free (out);
  CHECK (sbx_egress_ring_read (&g, 1, 2, &out, &n) == 0 && n == 2 && out[0].seq == 2 && out[1].seq == 3);
  free (out);
  CHECK (sbx_egress_ring_read (&g, 5, 0, &out, &n) == 0 && n == 0 && out == NULL);
  CHECK (sbx_egress_ring_read (&g, 500, 0, &out, &n) == 0 && n == 0);
  CHECK (g.dropped == 0);
  ok ("egress ring: seqs from 1 in order, after and limit page through it");

  /* past the cap: the oldest go, and are counted */
  for (int i = 6; i <= 20; i++)
    {
      snprintf (name, sizeof name, "n%d", i);
      struct sbx_egress_record r = rec_named (name);
      sbx_egress_ring_add (&g, &r, (uint64_t) i * 1000);
    }
  CHECK (g.n == 8 && g.cap == 8 && g.dropped == 12);
  CHECK (sbx_egress_ring_read (&g, 0, 0, &out, &n) == 0 && n == 8);
  for (size_t i = 0; out && i < n; i++)
    {
      snprintf (name, sizeof name, "n%zu", i + 13);
      CHECK (out[i].seq == i + 13 && strcmp (out[i].name, name) == 0);
    }
  free (out);
  CHECK (sbx_egress_ring_read (&g, 15, 3, &out, &n) == 0 && n == 3 && out[0].seq == 16 && out[2].seq == 18);
  free (out);
  CHECK (sbx_egress_ring_read (&g, 2, 100, &out, &n) == 0 && n == 8 && out[0].seq == 13);
  free (out);
  sbx_egress_ring_free (&g);
  CHECK (g.rec == NULL && g.n == 0 && g.seq == 0);
  ok ("egress ring: capped, the oldest dropped and counted, paging across the wrap");

  /* the default cap, and strings that do not end are cut */
  struct sbx_egress_ring d = { .rate = 1000000, .burst = 1000000 };
  struct sbx_egress_record big;
  memset (&big, 'x', sizeof big);
  for (int i = 0; i < SBX_EGRESS_LOG_MAX + 10; i++)
    sbx_egress_ring_add (&d, &big, (uint64_t) (i + 1));
  CHECK (d.n == SBX_EGRESS_LOG_MAX && d.cap == SBX_EGRESS_LOG_MAX && d.dropped == 10 && d.seq == SBX_EGRESS_LOG_MAX + 10);
  CHECK (sbx_egress_ring_read (&d, 0, 0, &out, &n) == 0 && n == SBX_EGRESS_LOG_MAX && out[0].seq == 11);
  CHECK (out && strlen (out[0].name) == sizeof big.name - 1 && strlen (out[0].rule) == sizeof big.rule - 1
         && strlen (out[0].addr) == sizeof big.addr - 1 && strlen (out[0].proto) == sizeof big.proto - 1);
  free (out);
  CHECK (sbx_egress_ring_read (&d, 0, SBX_EGRESS_LOG_MAX * 4, &out, &n) == 0 && n == SBX_EGRESS_LOG_MAX);
  free (out);
  sbx_egress_ring_free (&d);
  ok ("egress ring: SBX_EGRESS_LOG_MAX records at most, strings always end");
}

static void
test_egress_rate (void)
{
  /* the defaults: a burst of SBX_EGRESS_BURST, then SBX_EGRESS_RATE a second */
  struct sbx_egress_ring g = { 0 };
  struct sbx_egress_record r = rec_named ("flood.test");
  uint64_t t = 5000000000ull;
  int kept = 0;
  for (int i = 0; i < 1000; i++)
    kept += sbx_egress_ring_add (&g, &r, t);
  CHECK (kept == SBX_EGRESS_BURST && g.dropped == 1000 - SBX_EGRESS_BURST && g.seq == SBX_EGRESS_BURST);
  /* one second later: RATE more, not one more */
  t += 1000000000ull;
  kept = 0;
  for (int i = 0; i < 1000; i++)
    kept += sbx_egress_ring_add (&g, &r, t);
  CHECK (kept == SBX_EGRESS_RATE);
  /* 10 s of a steady flood, 1000 a second: RATE a second kept */
  kept = 0;
  for (int i = 0; i < 10000; i++)
    kept += sbx_egress_ring_add (&g, &r, t + (uint64_t) (i + 1) * 1000000ull);
  CHECK (kept >= 10 * SBX_EGRESS_RATE - 1 && kept <= 10 * SBX_EGRESS_RATE + 1);
  /* quiet for a long time: the bucket refills to the burst, no more */
  t += 3600 * 1000000000ull;
  kept = 0;
  for (int i = 0; i < 1000; i++)
    kept += sbx_egress_ring_add (&g, &r, t);
  CHECK (kept == SBX_EGRESS_BURST);
  /* everything not kept was counted (the ring is not full yet) */
  CHECK (g.seq < SBX_EGRESS_LOG_MAX && g.n == g.seq && g.dropped == 1000 * 3 + 10000 - g.seq);
  /* a clock that does not move (or goes back) gives nothing back */
  struct sbx_egress_ring h = { .rate = 10, .burst = 2 };
  CHECK (sbx_egress_ring_add (&h, &r, 100) == 1 && sbx_egress_ring_add (&h, &r, 100) == 1);
  CHECK (sbx_egress_ring_add (&h, &r, 50) == 0 && sbx_egress_ring_add (&h, &r, 100) == 0);
  CHECK (sbx_egress_ring_add (&h, &r, 100 + 100000000ull) == 1); /* 0.1 s at 10/s: one */
  CHECK (h.dropped == 2 && h.seq == 3);
  sbx_egress_ring_free (&g);
  sbx_egress_ring_free (&h);
  ok ("egress rate limit: the burst, then the rate; refilled up to the burst only; excess counted");
}

static void
test_egress_packet (void)
{
  /* IPv4 TCP 10.200.0.2 -> 198.51.100.10:8080 */
  uint8_t tcp[40] = { 0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 200, 0, 2, 198, 51, 100, 10,
                      0xc3, 0x50, 0x1f, 0x90 };
  struct sbx_egress_packet pk;
  CHECK (sbx_egress_packet_parse (tcp, sizeof tcp, &pk) == 0 && pk.proto == 6 && pk.src == IP (10, 200, 0, 2)
         && pk.dst == IP (198, 51, 100, 10) && pk.port == 8080);
  CHECK (strcmp (sbx_egress_proto_name (pk.proto), "tcp") == 0);
  /* cut after the header: no port */
  CHECK (sbx_egress_packet_parse (tcp, 22, &pk) == 0 && pk.port == 0 && pk.dst == IP (198, 51, 100, 10));
  /* UDP with options (IHL 6) */
  uint8_t udp[32] = { 0x46, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 200, 0, 6, 203, 0, 113, 1, 1, 1, 1, 1,
                      0x30, 0x39, 0x00, 0x35 };
  CHECK (sbx_egress_packet_parse (udp, sizeof udp, &pk) == 0 && pk.proto == 17 && pk.port == 53
         && pk.src == IP (10, 200, 0, 6));
  CHECK (strcmp (sbx_egress_proto_name (17), "udp") == 0 && strcmp (sbx_egress_proto_name (1), "icmp") == 0
         && strcmp (sbx_egress_proto_name (47), "ip") == 0);
  /* a later fragment carries no ports */
  udp[6] = 0x00;
  udp[7] = 0x10;
  CHECK (sbx_egress_packet_parse (udp, sizeof udp, &pk) == 0 && pk.port == 0);
  /* not IPv4, too short, a header longer than the bytes */
  uint8_t v6[40] = { 0x60 };
  CHECK (sbx_egress_packet_parse (v6, sizeof v6, &pk) < 0);
  CHECK (sbx_egress_packet_parse (tcp, 19, &pk) < 0);
  CHECK (sbx_egress_packet_parse (tcp, 0, &pk) < 0);
  uint8_t bad = tcp[0];
  tcp[0] = 0x4f; /* 60 bytes of header in 40 */
  CHECK (sbx_egress_packet_parse (tcp, sizeof tcp, &pk) < 0);
  tcp[0] = 0x44; /* shorter than 20 */
  CHECK (sbx_egress_packet_parse (tcp, sizeof tcp, &pk) < 0);
  tcp[0] = bad;
  /* every length and random bytes: never a read past the end (ASan, valgrind) */
  uint8_t junk[64];
  for (int round = 0; round < 2000; round++)
    {
      for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t) rand ();
      junk[0] = (uint8_t) (0x40 | (junk[0] & 0x0f));
      size_t len = (size_t) rand () % (sizeof junk + 1);
      uint8_t *copy = malloc (len ? len : 1);
      memcpy (copy, junk, len);
      if (sbx_egress_packet_parse (copy, len, &pk) == 0)
        CHECK (len >= 20 && (size_t) (copy[0] & 0x0f) * 4 <= len);
      free (copy);
    }
  ok ("egress packets: addresses, protocol and port from IPv4 headers; bad ones refused");
}

static void
test_egress_rules (void)
{
  char *domains[] = { "example.com", "*.cdn.net" };
  struct sbx_cidr deny[] = { { IP (198, 51, 100, 0), 24 }, { 0, 0 } };
  struct sbx_cidr allow[] = { { IP (198, 51, 100, 11), 32 }, { IP (10, 1, 0, 0), 16 } };
  struct sbx_net_policy pol = { .enabled = true,
                                .allow = allow,
                                .n_allow = 2,
                                .deny = deny,
                                .n_deny = 2,
                                .domains = domains,
                                .n_domains = 2 };
  char rule[160];
  CHECK (!sbx_net_ip_verdict (&pol, NULL, 0, IP (198, 51, 100, 10), rule, sizeof rule)
         && strcmp (rule, "denyOut 198.51.100.0/24") == 0);
  CHECK (!sbx_net_ip_verdict (&pol, NULL, 0, IP (203, 0, 113, 1), rule, sizeof rule)
         && strcmp (rule, "denyOut 0.0.0.0/0") == 0);
  CHECK (sbx_net_ip_verdict (&pol, NULL, 0, IP (198, 51, 100, 11), rule, sizeof rule)
         && strcmp (rule, "allowOut 198.51.100.11") == 0);
  CHECK (!sbx_net_ip_verdict (&pol, NULL, 0, IP (10, 1, 2, 3), rule, sizeof rule)
         && strcmp (rule, "platform 10.0.0.0/8") == 0);
  struct sbx_cidr ops = { IP (10, 1, 0, 0), 16 };
  CHECK (sbx_net_ip_verdict (&pol, &ops, 1, IP (10, 1, 2, 3), rule, sizeof rule)
         && strcmp (rule, "allowOut 10.1.0.0/16") == 0);
  CHECK (!sbx_net_ip_verdict (&pol, NULL, 0, IP (169, 254, 169, 254), rule, sizeof rule)
         && strcmp (rule, "platform 169.254.0.0/16") == 0);
  struct sbx_net_policy open = { .enabled = true };
  CHECK (sbx_net_ip_verdict (&open, NULL, 0, IP (203, 0, 113, 1), rule, sizeof rule)
         && strcmp (rule, "default internet") == 0);
  struct sbx_net_policy none = { .enabled = false };
  CHECK (!sbx_net_ip_verdict (&none, NULL, 0, IP (203, 0, 113, 1), rule, sizeof rule)
         && strcmp (rule, "mode none") == 0);
  /* the verdicts are sbx_net_ip_allowed's */
  for (uint32_t ip = IP (198, 51, 99, 250); ip < IP (198, 51, 101, 5); ip++)
    CHECK (sbx_net_ip_verdict (&pol, NULL, 0, ip, rule, sizeof rule) == sbx_net_ip_allowed (&pol, NULL, 0, ip));
  CHECK (sbx_net_domain_rule (&pol, "Example.COM.") == domains[0]);
  CHECK (sbx_net_domain_rule (&pol, "a.b.cdn.net") == domains[1]);
  CHECK (sbx_net_domain_rule (&pol, "cdn.net") == NULL && sbx_net_domain_rule (&none, "example.com") == NULL);

  const struct fake_memo memo[] = { { "example.com", IP (203, 0, 113, 10) }, { NULL, 0 } };
  void *ctx = (void *) memo;
  CHECK (sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, "example.com", IP (203, 0, 113, 10), rule,
                                  sizeof rule)
         && strcmp (rule, "allowOut example.com") == 0);
  CHECK (!sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, "example.com", IP (203, 0, 113, 20), rule,
                                   sizeof rule)
         && strncmp (rule, "denyOut 0.0.0.0/0 (allowOut example.com:", 40) == 0);
  CHECK (!sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, "evil.com", IP (203, 0, 113, 10), rule,
                                   sizeof rule)
         && strcmp (rule, "denyOut 0.0.0.0/0") == 0);
  CHECK (!sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, "example.com", IP (127, 0, 0, 1), rule,
                                   sizeof rule)
         && strcmp (rule, "platform 127.0.0.0/8") == 0);
  CHECK (sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, NULL, IP (198, 51, 100, 11), rule,
                                  sizeof rule)
         && strcmp (rule, "allowOut 198.51.100.11") == 0);
  CHECK (!sbx_netproxy_decide_why (NULL, NULL, 0, fake_remembered, ctx, "example.com", IP (203, 0, 113, 10), rule,
                                   sizeof rule)
         && strcmp (rule, "mode none") == 0);
  /* a tiny buffer is not overrun */
  char small[8];
  sbx_netproxy_decide_why (&pol, NULL, 0, fake_remembered, ctx, "example.com", IP (203, 0, 113, 20), small,
                           sizeof small);
  CHECK (strlen (small) == sizeof small - 1);
  ok ("egress rules: each verdict names the rule (and entry) that gave it");
}

/* The egress log of the sandbox at IP, newer than AFTER. */
static size_t
log_of (struct sbx_netproxy *p, uint32_t ip, uint64_t after, struct sbx_egress_record **out, uint64_t *dropped)
{
  size_t n = 0;
  struct sbx_err err;
  if (sbx_netproxy_egress_log (p, ip, after, 0, out, &n, dropped, &err) < 0)
    return 0;
  return n;
}

/* ------------------------------------------------ DNS end to end */

struct upstream {
  int udp, tcp, stop[2];
  uint16_t port;
  int queries; /* atomic enough: read after join or under the test's timing */
  pthread_mutex_t lock;
  pthread_t th;
};

/* Answer an A query: 198.51.100.10, TTL 30 (the name by a pointer to the
   question).  "big.*" over UDP: TC and no records.  "slow.*": no answer.
   Other types: no records. */
static size_t
fake_answer (const uint8_t *q, size_t len, bool tcp, uint8_t *out)
{
  if (len < 17 || len > 400)
    return 0;
  size_t off = 12;
  while (off < len && q[off])
    off += 1u + q[off];
  if (off + 5 > len)
    return 0;
  off++;
  uint16_t qtype = (uint16_t) (q[off] << 8 | q[off + 1]);
  size_t qend = off + 4;
  memcpy (out, q, qend);
  out[2] = (uint8_t) (0x80 | (q[2] & 0x01));
  out[3] = 0x80;
  memset (out + 6, 0, 6);
  if (q[12] == 4 && memcmp (q + 13, "slow", 4) == 0)
    return 0; /* never answered (over TCP: an empty, unusable answer) */
  bool big = q[12] == 3 && memcmp (q + 13, "big", 3) == 0;
  if (big && !tcp)
    {
      out[2] |= 0x02;
      return qend;
    }
  if (qtype != 1)
    return qend;
  static const uint8_t rr[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 51, 100, 10 };
  memcpy (out + qend, rr, sizeof rr);
  out[7] = 1;
  return qend + sizeof rr;
}

static void *
upstream_main (void *arg)
{
  struct upstream *u = arg;
  for (;;)
    {
      struct pollfd pfd[3] = { { u->udp, POLLIN, 0 }, { u->tcp, POLLIN, 0 }, { u->stop[0], POLLIN, 0 } };
      if (poll (pfd, 3, -1) < 0 || pfd[2].revents)
        break;
      uint8_t q[512], a[600];
      if (pfd[0].revents)
        {
          struct sockaddr_in from;
          socklen_t fl = sizeof from;
          ssize_t n = recvfrom (u->udp, q, sizeof q, 0, (struct sockaddr *) &from, &fl);
          size_t al = n > 0 ? fake_answer (q, (size_t) n, false, a) : 0;
          pthread_mutex_lock (&u->lock);
          u->queries++;
          pthread_mutex_unlock (&u->lock);
          if (al)
            sendto (u->udp, a, al, 0, (struct sockaddr *) &from, fl);
        }
      if (pfd[1].revents)
        {
          int c = accept (u->tcp, NULL, NULL);
          if (c < 0)
            continue;
          uint8_t hdr[2];
          if (sbx_read_full (c, hdr, 2) == 2)
            {
              size_t n = (size_t) (hdr[0] << 8 | hdr[1]);
              if (n <= sizeof q && sbx_read_full (c, q, n) == (ssize_t) n)
                {
                  pthread_mutex_lock (&u->lock);
                  u->queries++;
                  pthread_mutex_unlock (&u->lock);
                  size_t al = fake_answer (q, n, true, a + 2);
                  a[0] = (uint8_t) (al >> 8);
                  a[1] = (uint8_t) al;
                  sbx_write_full (c, a, al + 2);
                }
            }
          close (c);
        }
    }
  return NULL;
}

static int
upstream_queries (struct upstream *u)
{
  pthread_mutex_lock (&u->lock);
  int n = u->queries;
  pthread_mutex_unlock (&u->lock);
  return n;
}

static int
loopback_socket (int type, uint16_t port, uint16_t *got)
{
  int fd = socket (AF_INET, type | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  if (fd < 0 || bind (fd, (struct sockaddr *) &a, sizeof a) < 0)
    {
      if (fd >= 0)
        close (fd);
      return -1;
    }
  socklen_t al = sizeof a;
  getsockname (fd, (struct sockaddr *) &a, &al);
  if (type == SOCK_STREAM)
    listen (fd, 16);
  *got = ntohs (a.sin_port);
  return fd;
}

static size_t
make_query (const char *name, uint16_t type, uint16_t id, uint8_t *q)
{
  memset (q, 0, 12);
  q[0] = (uint8_t) (id >> 8);
  q[1] = (uint8_t) id;
  q[2] = 0x01; /* RD */
  q[5] = 1;
  size_t off = 12;
  while (*name)
    {
      const char *dot = strchr (name, '.');
      size_t l = dot ? (size_t) (dot - name) : strlen (name);
      q[off++] = (uint8_t) l;
      memcpy (q + off, name, l);
      off += l;
      name += l + (dot ? 1 : 0);
    }
  q[off++] = 0;
  q[off++] = (uint8_t) (type >> 8);
  q[off++] = (uint8_t) type;
  q[off++] = 0;
  q[off++] = 1;
  return off;
}

struct reply {
  int got; /* 0: no answer within the wait */
  uint16_t id;
  int rcode, tc, qd, an;
  uint32_t a; /* the last 4 bytes, when an > 0 */
};

static void
read_reply (const uint8_t *r, ssize_t n, struct reply *out)
{
  memset (out, 0, sizeof *out);
  if (n < 12)
    return;
  out->got = 1;
  out->id = (uint16_t) (r[0] << 8 | r[1]);
  out->rcode = r[3] & 0x0f;
  out->tc = (r[2] & 0x02) != 0;
  out->qd = r[4] << 8 | r[5];
  out->an = r[6] << 8 | r[7];
  if (out->an)
    out->a = (uint32_t) r[n - 4] << 24 | (uint32_t) r[n - 3] << 16 | (uint32_t) r[n - 2] << 8 | r[n - 1];
}

static void
ask_udp (uint16_t port, const char *name, uint16_t type, int wait_ms, struct reply *out)
{
  static uint16_t id = 100;
  uint8_t q[300], r[1500];
  size_t ql = make_query (name, type, ++id, q);
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  memset (out, 0, sizeof *out);
  if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0 && send (fd, q, ql, 0) == (ssize_t) ql)
    {
      struct pollfd pfd = { fd, POLLIN, 0 };
      if (poll (&pfd, 1, wait_ms) == 1)
        read_reply (r, recv (fd, r, sizeof r, 0), out);
    }
  close (fd);
  if (out->got && out->id != id)
    out->got = -1;
}

static void
ask_tcp (uint16_t port, const char *name, uint16_t type, struct reply *out)
{
  uint8_t q[302], r[1500];
  size_t ql = make_query (name, type, 4242, q + 2);
  q[0] = 0;
  q[1] = (uint8_t) ql;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  memset (out, 0, sizeof *out);
  struct timeval tv = { 5, 0 };
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0 && sbx_write_full (fd, q, ql + 2) == (ssize_t) ql + 2)
    {
      uint8_t hdr[2];
      if (sbx_read_full (fd, hdr, 2) == 2)
        {
          size_t n = (size_t) (hdr[0] << 8 | hdr[1]);
          if (n <= sizeof r && sbx_read_full (fd, r, n) == (ssize_t) n)
            read_reply (r, (ssize_t) n, out);
        }
    }
  close (fd);
}

/* Connect to PORT on loopback and see whether the other side closes at
   once (within 2 s) without a byte. */
static bool
closed_at_once (uint16_t port, const char *send_first)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  bool closed = false;
  if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0)
    {
      if (send_first)
        send (fd, send_first, strlen (send_first), MSG_NOSIGNAL);
      struct pollfd pfd = { fd, POLLIN, 0 };
      char c;
      closed = poll (&pfd, 1, 2000) == 1 && recv (fd, &c, 1, 0) <= 0;
    }
  close (fd);
  return closed;
}

static int
count_fds (void)
{
  int n = 0;
  DIR *d = opendir ("/proc/self/fd");
  if (d == NULL)
    return -1;
  while (readdir (d))
    n++;
  closedir (d);
  return n;
}

/* The fake upstream, started in its thread. */
static void
upstream_open (struct upstream *u)
{
  memset (u, 0, sizeof *u);
  pthread_mutex_init (&u->lock, NULL);
  /* UDP and TCP on one port: the port the kernel gives the UDP socket may
     be taken for TCP, so try again with another */
  uint16_t same;
  u->tcp = -1;
  for (int tries = 0; tries < 50 && u->tcp < 0; tries++)
    {
      if (tries)
        close (u->udp);
      u->udp = loopback_socket (SOCK_DGRAM, 0, &u->port);
      u->tcp = u->udp < 0 ? -1 : loopback_socket (SOCK_STREAM, u->port, &same);
    }
  CHECK (u->udp >= 0 && u->tcp >= 0 && pipe (u->stop) == 0);
  pthread_create (&u->th, NULL, upstream_main, u);
}

static void
upstream_close (struct upstream *u)
{
  write (u->stop[1], "x", 1);
  pthread_join (u->th, NULL);
  close (u->udp);
  close (u->tcp);
  close (u->stop[0]);
  close (u->stop[1]);
  pthread_mutex_destroy (&u->lock);
}

static void
test_dns (void)
{
  int fds_before = count_fds ();
  struct upstream u;
  upstream_open (&u);

  struct sbx_cidr ops = { IP (100, 64, 0, 0), 10 };
  struct sbx_netproxy_config cfg = { .upstream_ip = INADDR_LOOPBACK, .upstream_port = u.port,
                                     .operator_allow = &ops, .n_operator_allow = 1 };
  struct sbx_netproxy *p = NULL;
  struct sbx_err err = { 0 };
  CHECK (sbx_netproxy_start (&cfg, &p, &err) == 0);
  if (p == NULL)
    {
      fprintf (stderr, "start: %s\n", err.msg);
      return;
    }
  uint16_t dport = sbx_netproxy_dns_port (p), tport = sbx_netproxy_tcp_port (p);
  CHECK (dport != 0 && tport != 0 && dport != tport);
  ok ("dns: proxy started");

  struct reply r;
  ask_udp (dport, "example.com", 1, 500, &r);
  CHECK (r.got == 0);
  ask_tcp (dport, "example.com", 1, &r);
  CHECK (r.got == 0);
  CHECK (closed_at_once (tport, NULL));
  CHECK (upstream_queries (&u) == 0);
  ok ("dns: an unknown source gets no answer, its connections are closed");

  char *domains[] = { "example.com", "*.example.org" };
  struct sbx_cidr deny_all = { 0, 0 };
  struct sbx_net_policy pol = { .enabled = true, .deny = &deny_all, .n_deny = 1, .domains = domains, .n_domains = 2 };
  CHECK (sbx_netproxy_set (p, IP (127, 0, 0, 1), &pol, &err) == 0);

  ask_udp (dport, "Example.COM", 1, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 0 && r.an == 1 && r.a == IP (198, 51, 100, 10));
  CHECK (upstream_queries (&u) == 1);
  ask_udp (dport, "www.example.org", 1, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 0 && r.an == 1 && r.a == IP (198, 51, 100, 10));
  ok ("dns: allowed names answered from the upstream");

  int before = upstream_queries (&u);
  ask_udp (dport, "evil.com", 1, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 5 && r.qd == 1 && r.an == 0);
  ask_udp (dport, "example.org", 1, 5000, &r); /* "*.example.org" is below it only */
  CHECK (r.got == 1 && r.rcode == 5);
  ask_tcp (dport, "evil.com", 1, &r);
  CHECK (r.got == 1 && r.rcode == 5);
  CHECK (upstream_queries (&u) == before);
  ok ("dns: other names REFUSED under deny-all, over UDP and TCP, upstream not asked");

  ask_udp (dport, "example.com", 28, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 0 && r.an == 0 && r.qd == 1);
  ask_udp (dport, "evil.com", 28, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 0 && r.an == 0);
  CHECK (upstream_queries (&u) == before);
  ok ("dns: AAAA answered with no records");

  /* the decisions so far, as recorded */
  struct sbx_egress_record *rec = NULL;
  uint64_t dropped = 99;
  size_t nrec = log_of (p, IP (127, 0, 0, 1), 0, &rec, &dropped);
  CHECK (nrec == 7 && dropped == 0);
  static const struct
  {
    const char *name, *verdict_rule, *addr;
    enum sbx_egress_verdict verdict;
  } want[] = { { "example.com", "allowOut example.com", "127.0.0.1", SBX_EGRESS_ALLOWED },
               { "www.example.org", "allowOut *.example.org", "127.0.0.1", SBX_EGRESS_ALLOWED },
               { "evil.com", "denyOut 0.0.0.0/0", "", SBX_EGRESS_DENIED },
               { "example.org", "denyOut 0.0.0.0/0", "", SBX_EGRESS_DENIED },
               { "evil.com", "denyOut 0.0.0.0/0", "", SBX_EGRESS_DENIED },
               { "example.com", "IPv4 only (AAAA)", "", SBX_EGRESS_DENIED },
               { "evil.com", "IPv4 only (AAAA)", "", SBX_EGRESS_DENIED } };
  for (size_t i = 0; rec && i < nrec && i < 7; i++)
    {
      CHECK (rec[i].seq == i + 1 && strcmp (rec[i].proto, "dns") == 0 && strcmp (rec[i].name, want[i].name) == 0);
      CHECK (rec[i].verdict == want[i].verdict && strcmp (rec[i].rule, want[i].verdict_rule) == 0);
      CHECK (strcmp (rec[i].addr, want[i].addr) == 0 && rec[i].port == (want[i].addr[0] ? u.port : 0));
      CHECK (rec[i].time_ms > 1700000000000ll && (i == 0 || rec[i].time_ms >= rec[i - 1].time_ms));
    }
  free (rec);
  ok ("egress log: the DNS filter's decisions, names, rules and upstream, in order");

  /* the kernel's decisions, as net.c hands them over */
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), SBX_KRULE_DENY, "tcp", IP (203, 0, 113, 5), 8080);
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), SBX_KRULE_PLATFORM, "udp", IP (10, 9, 8, 7), 53);
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), SBX_KRULE_HOST, "tcp", IP (127, 0, 0, 2), 22);
  /* a rule the policy no longer has: the kind of rule only */
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), SBX_KRULE_ALLOW, "icmp", IP (203, 0, 113, 5), 0);
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), SBX_KRULE_INTERNET, "tcp", IP (203, 0, 113, 5), 443);
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 9), SBX_KRULE_DENY, "tcp", IP (203, 0, 113, 5), 8080); /* no sandbox */
  sbx_netproxy_record_packet (p, IP (127, 0, 0, 1), (enum sbx_netproxy_kernel_rule) 42, "tcp", IP (203, 0, 113, 5),
                              1);
  nrec = log_of (p, IP (127, 0, 0, 1), 7, &rec, &dropped);
  CHECK (nrec == 5);
  if (nrec == 5)
    {
      CHECK (rec[0].seq == 8 && strcmp (rec[0].proto, "tcp") == 0 && strcmp (rec[0].addr, "203.0.113.5") == 0
             && rec[0].port == 8080 && rec[0].verdict == SBX_EGRESS_DENIED && rec[0].name[0] == '\0'
             && strcmp (rec[0].rule, "denyOut 0.0.0.0/0") == 0);
      CHECK (strcmp (rec[1].rule, "platform 10.0.0.0/8") == 0 && strcmp (rec[1].proto, "udp") == 0
             && rec[1].verdict == SBX_EGRESS_DENIED);
      CHECK (strcmp (rec[2].rule, "host") == 0 && rec[2].verdict == SBX_EGRESS_DENIED);
      CHECK (strcmp (rec[3].rule, "allowOut") == 0 && rec[3].verdict == SBX_EGRESS_ALLOWED && rec[3].port == 0);
      CHECK (strcmp (rec[4].rule, "default internet") == 0 && rec[4].verdict == SBX_EGRESS_ALLOWED);
    }
  free (rec);
  CHECK (log_of (p, IP (127, 0, 0, 9), 0, &rec, &dropped) == 0 && rec == NULL && dropped == 0);
  ok ("egress log: the kernel's decisions get the policy's entry; unknown sources none");

  ask_udp (dport, "big.example.org", 1, 5000, &r);
  CHECK (r.got == 1 && r.tc == 1 && r.an == 0);
  ask_tcp (dport, "big.example.org", 1, &r);
  CHECK (r.got == 1 && r.tc == 0 && r.an == 1 && r.a == IP (198, 51, 100, 10));
  ok ("dns: a truncated answer passed on over UDP, the TCP retry served over TCP");

  /* the relay refuses what it cannot judge: no redirect here, so no
     original destination (or the proxy's own) */
  CHECK (closed_at_once (tport, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
  ok ("tcp: a connection without an original destination is closed");

  /* a policy without deny-all: every name goes upstream */
  struct sbx_net_policy open = { .enabled = true };
  CHECK (sbx_netproxy_set (p, IP (127, 0, 0, 1), &open, &err) == 0);
  ask_udp (dport, "evil.com", 1, 5000, &r);
  CHECK (r.got == 1 && r.rcode == 0 && r.an == 1);
  ok ("dns: a replaced policy applies to new queries");

  /* an idle TCP DNS connection ends when the sandbox is removed */
  int idle = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (dport), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  CHECK (connect (idle, (struct sockaddr *) &a, sizeof a) == 0);
  usleep (100 * 1000);
  sbx_netproxy_remove (p, IP (127, 0, 0, 1));
  struct pollfd pfd = { idle, POLLIN, 0 };
  char c;
  CHECK (poll (&pfd, 1, 2000) == 1 && recv (idle, &c, 1, 0) <= 0);
  close (idle);
  ask_udp (dport, "example.com", 1, 500, &r);
  CHECK (r.got == 0);
  CHECK (log_of (p, IP (127, 0, 0, 1), 0, &rec, &dropped) == 0 && rec == NULL);
  ok ("dns: a removed sandbox's connections close, its queries get no answer, its log is gone");

  /* stop with a TCP DNS connection open: its worker must leave at once */
  CHECK (sbx_netproxy_set (p, IP (127, 0, 0, 1), &pol, &err) == 0);
  idle = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK (connect (idle, (struct sockaddr *) &a, sizeof a) == 0);
  usleep (100 * 1000);
  uint64_t t0 = sbx_now_ns ();
  sbx_netproxy_stop (p);
  uint64_t took_ms = (sbx_now_ns () - t0) / 1000000;
  CHECK (took_ms < 1000);
  close (idle);
  ok ("stop: prompt with a connection open");

  upstream_close (&u);
  CHECK (count_fds () == fds_before);
  ok ("no descriptor left open");
}

/* A UDP socket on SRC (a loopback address: a sandbox of its own to the
   proxy) connected to the proxy's DNS PORT. */
static int
sandbox_socket (uint32_t src, uint16_t port)
{
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in me = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (src) };
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  if (fd >= 0 && (bind (fd, (struct sockaddr *) &me, sizeof me) < 0 || connect (fd, (struct sockaddr *) &to, sizeof to) < 0))
    {
      close (fd);
      return -1;
    }
  return fd;
}

static void
send_query (int fd, const char *name, uint16_t type, uint16_t id)
{
  uint8_t q[300];
  size_t ql = make_query (name, type, id, q);
  CHECK (send (fd, q, ql, 0) == (ssize_t) ql);
}

/* The next answer on FD within WAIT_MS (got 0: none). */
static void
next_reply (int fd, int wait_ms, struct reply *out)
{
  uint8_t r[1500];
  struct pollfd pfd = { fd, POLLIN, 0 };
  memset (out, 0, sizeof *out);
  if (poll (&pfd, 1, wait_ms) == 1)
    read_reply (r, recv (fd, r, sizeof r, 0), out);
}

static uint64_t
ms_since (uint64_t t0)
{
  return (sbx_now_ns () - t0) / 1000000;
}

/* A proxy with LIMITS forwarding to a scripted upstream, and two open
   sandboxes at 127.0.0.FIRST and the next address, with a socket each
   connected to its DNS port. */
struct two {
  struct upstream u;
  struct sbx_netproxy *p;
  uint32_t a_ip, b_ip;
  int a, b;
};

static bool
two_open (struct two *t, struct sbx_netproxy_limits limits, uint8_t first)
{
  upstream_open (&t->u);
  struct sbx_netproxy_config cfg = { .upstream_ip = INADDR_LOOPBACK, .upstream_port = t->u.port, .limits = limits };
  struct sbx_err err = { 0 };
  t->p = NULL;
  CHECK (sbx_netproxy_start (&cfg, &t->p, &err) == 0);
  if (t->p == NULL)
    return false;
  uint16_t dport = sbx_netproxy_dns_port (t->p);
  struct sbx_net_policy open = { .enabled = true };
  t->a_ip = IP (127, 0, 0, first);
  t->b_ip = IP (127, 0, 0, first + 1);
  CHECK (sbx_netproxy_set (t->p, t->a_ip, &open, &err) == 0 && sbx_netproxy_set (t->p, t->b_ip, &open, &err) == 0);
  t->a = sandbox_socket (t->a_ip, dport);
  t->b = sandbox_socket (t->b_ip, dport);
  CHECK (t->a >= 0 && t->b >= 0);
  return true;
}

static void
two_close (struct two *t)
{
  close (t->a);
  close (t->b);
  sbx_netproxy_stop (t->p);
  upstream_close (&t->u);
}

/* The bounds per sandbox: queries waiting for the upstream, and the
   query rate.  Sandbox A (127.0.0.1) asks names the upstream never
   answers; sandbox B (127.0.0.2) is served meanwhile. */
static void
test_dns_bounds (void)
{
  int fds_before = count_fds ();
  struct two t;
  if (!two_open (&t, (struct sbx_netproxy_limits) { .dns_inflight = 4, .dns_rate = 50 }, 1))
    return;
  struct sbx_netproxy *p = t.p;
  uint32_t a_ip = t.a_ip, b_ip = t.b_ip;
  int a = t.a, b = t.b;

  for (uint16_t id = 1; id <= 4; id++)
    send_query (a, "slow.example.com", 1, id);
  usleep (200 * 1000);
  struct reply r;
  next_reply (a, 0, &r);
  CHECK (r.got == 0); /* all four wait for the upstream */
  uint64_t t0 = sbx_now_ns ();
  send_query (a, "slow.example.com", 1, 5);
  next_reply (a, 1000, &r);
  CHECK (r.got == 1 && r.id == 5 && r.rcode == 2 && r.qd == 1 && r.an == 0);
  CHECK (ms_since (t0) < 500);
  t0 = sbx_now_ns ();
  send_query (b, "example.com", 1, 6);
  next_reply (b, 1000, &r);
  CHECK (r.got == 1 && r.id == 6 && r.rcode == 0 && r.an == 1 && r.a == IP (198, 51, 100, 10));
  CHECK (ms_since (t0) < 500);
  ok ("dns bounds: a sandbox's queries in flight are capped, one more gets SERVFAIL at once; another sandbox is "
      "answered meanwhile");

  /* the upstream never answers: SERVFAIL after two tries of 2 s */
  int servfail = 0;
  for (int i = 0; i < 4; i++)
    {
      next_reply (a, 6000, &r);
      servfail += r.got == 1 && r.rcode == 2 && r.id >= 1 && r.id <= 4;
    }
  CHECK (servfail == 4 && ms_since (t0) >= 3000);
  send_query (a, "example.com", 1, 7);
  next_reply (a, 1000, &r);
  CHECK (r.got == 1 && r.id == 7 && r.rcode == 0 && r.an == 1);
  ok ("dns bounds: a query the upstream never answers gets SERVFAIL after two tries, and frees its place");

  /* the rate: 50 a second in bursts of 100; AAAA queries are answered
     here, so only the rate limits them */
  int noerror = 0, refused = 0;
  for (uint16_t id = 100; id < 250; id++)
    send_query (b, "example.com", 28, id);
  for (int i = 0; i < 150; i++)
    {
      next_reply (b, 1000, &r);
      noerror += r.got == 1 && r.rcode == 0;
      refused += r.got == 1 && r.rcode == 2;
    }
  CHECK (noerror >= 99 && noerror <= 110 && noerror + refused == 150);
  next_reply (a, 0, &r);
  CHECK (r.got == 0);
  send_query (a, "example.com", 28, 8); /* A's own rate is untouched */
  next_reply (a, 1000, &r);
  CHECK (r.got == 1 && r.id == 8 && r.rcode == 0);
  ok ("dns bounds: over its query rate a sandbox gets SERVFAIL at once; another sandbox's rate is its own");

  struct sbx_egress_record *rec = NULL;
  uint64_t dropped;
  size_t n = log_of (p, a_ip, 0, &rec, &dropped);
  bool inflight = false;
  for (size_t i = 0; i < n; i++)
    inflight |= strcmp (rec[i].rule, "quota: queries in flight") == 0 && rec[i].verdict == SBX_EGRESS_DENIED
                && strcmp (rec[i].name, "slow.example.com") == 0;
  free (rec);
  n = log_of (p, b_ip, 0, &rec, &dropped);
  size_t rate = 0;
  for (size_t i = 0; i < n; i++)
    rate += strcmp (rec[i].rule, "quota: query rate") == 0 && rec[i].verdict == SBX_EGRESS_DENIED;
  free (rec);
  CHECK (inflight && rate == (size_t) refused);
  ok ("egress log: queries over a bound are recorded as denied, with the bound");

  two_close (&t);
  CHECK (count_fds () == fds_before);
  ok ("dns bounds: no descriptor left open");
}

/* The time the kernel put REPLY's datagram on FD's queue (loopback: when
   the proxy sent it), in ns; 0: no reply within WAIT_MS. */
static uint64_t
next_reply_at (int fd, int wait_ms, struct reply *out)
{
  uint8_t r[1500];
  char ctl[CMSG_SPACE (sizeof (struct timespec))];
  struct iovec iov = { r, sizeof r };
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
  struct pollfd pfd = { fd, POLLIN, 0 };
  memset (out, 0, sizeof *out);
  if (poll (&pfd, 1, wait_ms) != 1)
    return 0;
  read_reply (r, recvmsg (fd, &m, 0), out);
  for (struct cmsghdr *c = CMSG_FIRSTHDR (&m); c; c = CMSG_NXTHDR (&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS)
      {
        struct timespec ts;
        memcpy (&ts, CMSG_DATA (c), sizeof ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
      }
  return 0;
}

/* Turns: sandbox A sends 200 queries at once, then sandbox B one.  B's is
   answered before most of A's that were still waiting when it came,
   although it came last: waiting queries are served a sandbox at a time,
   not in the order they came (the socket's).  AAAA queries are answered
   by the proxy itself, so only the serving orders them; the kernel's
   receive timestamps tell the order in which the answers were sent.  How
   many of A's still wait when B's comes depends on the scheduling (a
   busy machine may let the proxy serve most of them first): a round in
   which fewer than 64 did tests too little and is run again.  B's waits
   behind at most the turns the loop has begun (16) and one of A's. */
static void
test_dns_turns (void)
{
  int fds_before = count_fds ();
  struct two t;
  if (!two_open (&t, (struct sbx_netproxy_limits) { .dns_rate = 10000 }, 3))
    return;
  int a = t.a, b = t.b, on = 1, big = 1 << 20;
  CHECK (setsockopt (a, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) == 0
         && setsockopt (b, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) == 0
         && setsockopt (a, SOL_SOCKET, SO_RCVBUF, &big, sizeof big) == 0);
  enum { N = 200, ROUNDS = 10 };
  int got = 0, waiting = 0, after_b = 0, round = 0;
  bool b_ok = true;
  for (; round < ROUNDS && waiting < 64; round++)
    {
      for (uint16_t id = 1; id <= N; id++)
        send_query (a, "example.com", 28, (uint16_t) (round * N + id));
      struct timespec sent;
      clock_gettime (CLOCK_REALTIME, &sent);
      uint64_t b_sent = (uint64_t) sent.tv_sec * 1000000000u + (uint64_t) sent.tv_nsec;
      send_query (b, "example.com", 28, (uint16_t) (60000 + round));
      struct reply r;
      uint64_t b_at = next_reply_at (b, 2000, &r);
      b_ok = b_ok && b_at != 0 && r.id == 60000 + round && r.rcode == 0;
      got = waiting = after_b = 0;
      for (int i = 0; i < N; i++)
        {
          uint64_t at = next_reply_at (a, 2000, &r);
          got += at != 0 && r.rcode == 0;
          waiting += at > b_sent; /* not answered yet when B's was sent */
          after_b += at > b_at;
        }
      CHECK (got == N);
    }
  CHECK (b_ok);
  CHECK (waiting >= 64);
  /* in the order they came, all of those would have come before B's */
  CHECK (after_b >= waiting / 2);
  if (waiting < 64 || after_b < waiting / 2)
    fprintf (stderr, "dns turns: of A's %d answers, %d not sent yet when B's query was, %d came after B's answer (%d rounds)\n",
             N, waiting, after_b, round);
  ok ("dns turns: a sandbox's query is served before another's earlier flood of them, which is answered too");

  two_close (&t);
  CHECK (count_fds () == fds_before);
  ok ("dns turns: no descriptor left open");
}

/* How many UDP sockets hold 0.0.0.0:PORT (/proc/net/udp). */
static int
udp_port_count (uint16_t port)
{
  char line[512];
  FILE *f = fopen ("/proc/net/udp", "re");
  int n = 0;
  while (f && fgets (line, sizeof line, f))
    {
      unsigned addr, lport; /* the local address, as the kernel prints it */
      n += sscanf (line, " %*u: %x:%x", &addr, &lport) == 2 && addr == 0 && lport == port;
    }
  if (f)
    fclose (f);
  return n;
}

/* The DNS port's sockets: the proxy holds SBX_DNS_SOCKS of them, and the
   program it steers queries with puts every query of a sender in the same
   one, the sender's slot (address over four) modulo their number: checked
   on a group of our own with that program, sending from twice as many
   addresses as sockets. */
static void
test_dns_steer (void)
{
  int fds_before = count_fds ();
  struct two t;
  if (!two_open (&t, (struct sbx_netproxy_limits) { 0 }, 9))
    return;
  CHECK (udp_port_count (sbx_netproxy_dns_port (t.p)) == SBX_DNS_SOCKS);
  two_close (&t);
  CHECK (count_fds () == fds_before);
  ok ("dns steer: the proxy holds its UDP sockets, and closes them");

  int g[SBX_DNS_SOCKS], one = 1;
  uint16_t port = 0;
  for (int i = 0; i < SBX_DNS_SOCKS; i++)
    {
      g[i] = socket (AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_ANY) };
      socklen_t al = sizeof a;
      CHECK (g[i] >= 0 && setsockopt (g[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0
             && bind (g[i], (struct sockaddr *) &a, sizeof a) == 0 && getsockname (g[i], (struct sockaddr *) &a, &al) == 0);
      port = ntohs (a.sin_port);
    }
  CHECK (setsockopt (g[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, sbx_dns_steer (), sizeof (struct sock_fprog)) == 0);
  int wrong = 0, lost = 0;
  for (uint32_t slot = 0; slot < 2 * SBX_DNS_SOCKS; slot++)
    {
      uint32_t src = IP (127, 0, 2, 0) + slot * 4 + 2; /* as net.c numbers sandboxes */
      for (int k = 0; k < 3; k++)
        {
          int c = sandbox_socket (src, port);
          CHECK (c >= 0 && send (c, "q", 1, 0) == 1);
          close (c);
          int want = (int) (((IP (127, 0, 2, 0) >> 2) + slot) % SBX_DNS_SOCKS), got = -1;
          for (int tries = 0; tries < 100 && got < 0; tries++)
            {
              char b;
              for (int i = 0; i < SBX_DNS_SOCKS && got < 0; i++)
                if (recv (g[i], &b, 1, 0) == 1)
                  got = i;
              if (got < 0)
                usleep (1000);
            }
          wrong += got >= 0 && got != want;
          lost += got < 0;
        }
    }
  CHECK (wrong == 0 && lost == 0);
  if (wrong || lost)
    fprintf (stderr, "dns steer: %d of %d queries in another socket than their slot's, %d not received\n", wrong,
             6 * SBX_DNS_SOCKS, lost);
  for (int i = 0; i < SBX_DNS_SOCKS; i++)
    close (g[i]);
  ok ("dns steer: every query of a sandbox goes to its slot's socket");
}

/* Request transforms: a head rewritten, the rules' keys matched. */
static void
test_head_rewrite (void)
{
  static const char head[] = "GET /x HTTP/1.1\r\nHost: a.example\r\nauthorization: old\r\n"
                             "X-Fold: one\r\n two\r\nAccept: */*\r\n\r\n";
  const char *names[] = { "Authorization", "X-Fold", "X-New" }, *values[] = { "Bearer t", "f", "n" };
  uint8_t out[512];
  size_t n = sbx_http_head_rewrite ((const uint8_t *) head, strlen (head), names, values, 3, out, sizeof out);
  static const char want[] = "GET /x HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n"
                             "Authorization: Bearer t\r\nX-Fold: f\r\nX-New: n\r\n\r\n";
  CHECK (n == strlen (want) && memcmp (out, want, n) == 0);
  /* too small an output, or no empty line: 0 */
  CHECK (sbx_http_head_rewrite ((const uint8_t *) head, strlen (head), names, values, 3, out, 40) == 0);
  CHECK (sbx_http_head_rewrite ((const uint8_t *) head, 20, names, values, 3, out, sizeof out) == 0);

  struct sbx_net_policy p = { .enabled = true };
  struct sbx_err err;
  const char *hn[] = { "X-A" }, *hv[] = { "1" }, *bad[] = { "X\r\nY" };
  CHECK (sbx_net_rule_add (&p, "API.example.com", hn, hv, 1, &err) == 0);
  CHECK (sbx_net_rule_add (&p, "*.example.com", hn, hv, 1, &err) == 0);
  CHECK (sbx_net_rule_add (&p, "*.api.example.com", hn, hv, 1, &err) == 0);
  CHECK (sbx_net_rule_add (&p, "*", hn, hv, 1, &err) < 0);
  CHECK (sbx_net_rule_add (&p, "x.example.com", hn, bad, 1, &err) < 0);
  CHECK (sbx_net_rule_add (&p, "x.example.com", bad, hv, 1, &err) < 0);
  CHECK (strcmp (sbx_net_rule_key (&p, "api.example.com"), "api.example.com") == 0);
  CHECK (strcmp (sbx_net_rule_key (&p, "v1.api.example.com"), "*.api.example.com") == 0);
  CHECK (strcmp (sbx_net_rule_key (&p, "www.Example.com."), "*.example.com") == 0);
  CHECK (sbx_net_rule_key (&p, "example.com") == NULL);
  struct sbx_net_policy q;
  CHECK (sbx_net_socks_set (&p, "p.example:1080", 0x01020304, 1080, "u", "pw", &err) == 0);
  CHECK (sbx_net_socks_set (&p, "p.example:1080", 0x01020304, 1080, NULL, "pw", &err) < 0);
  CHECK (sbx_net_policy_copy (&q, &p, &err) == 0 && q.n_rules == 3 && q.proxy && strcmp (q.proxy->pass, "pw") == 0);
  sbx_net_policy_free (&q);
  sbx_net_policy_free (&p);
}

/* The proxy's table of sandboxes (a tree by address): thousands added in
   an order that is not their addresses', a third removed, some added
   again; each address finds its own sandbox (its own egress log) and a
   removed one finds none.  ASan checks that the table frees them all. */
static void
test_sandbox_table (void)
{
  enum { N = 3000 };
  struct sbx_netproxy_config cfg = { .upstream_ip = INADDR_LOOPBACK, .upstream_port = 9 };
  struct sbx_netproxy *p = NULL;
  struct sbx_err err = { 0 };
  CHECK (sbx_netproxy_start (&cfg, &p, &err) == 0);
  if (p == NULL)
    return;
  struct sbx_cidr deny_all = { 0, 0 };
  struct sbx_net_policy pol = { .enabled = true, .deny = &deny_all, .n_deny = 1 };
  /* the i-th sandbox: slot k = i * 7 mod N (7 and N coprime), at
     100.64.0.0 + 4k + 2 as the daemon gives them */
#define TABLE_IP(i) (IP (100, 64, 0, 0) + 4u * (uint32_t) (((i) * 7) % N) + 2u)
  bool all_set = true;
  for (int i = 0; i < N; i++)
    all_set &= sbx_netproxy_set (p, TABLE_IP (i), &pol, &err) == 0;
  CHECK (all_set);
  for (int i = 0; i < N; i++)
    sbx_netproxy_record_packet (p, TABLE_IP (i), SBX_KRULE_DENY, "tcp", IP (203, 0, 113, 5), (uint16_t) (i + 1));
  for (int i = 0; i < N; i += 3)
    sbx_netproxy_remove (p, TABLE_IP (i));
  sbx_netproxy_remove (p, IP (100, 64, 0, 1)); /* none there */
  for (int i = 0; i < N; i += 30)
    CHECK (sbx_netproxy_set (p, TABLE_IP (i), &pol, &err) == 0); /* a new sandbox at that address */
  for (int i = 1; i < N; i += 3) /* an update keeps the sandbox (and its log) */
    CHECK (sbx_netproxy_set (p, TABLE_IP (i), &pol, &err) == 0);
  int wrong = 0;
  for (int i = 0; i < N; i++)
    {
      struct sbx_egress_record *rec = NULL;
      uint64_t dropped = 0;
      size_t n = log_of (p, TABLE_IP (i), 0, &rec, &dropped);
      if (i % 3 == 0)
        wrong += n != 0; /* removed, or removed and added again */
      else
        wrong += n != 1 || rec[0].port != i + 1;
      free (rec);
    }
  CHECK (wrong == 0);
  if (wrong)
    fprintf (stderr, "sandbox table: %d of %d addresses found the wrong log\n", wrong, N);
#undef TABLE_IP
  sbx_netproxy_stop (p);
  ok ("sandbox table: thousands added, removed and added again, each found by its address");
}

int
main (void)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  test_sni ();
  test_http ();
  test_http_stream ();
  test_head_rewrite ();
  test_memo ();
  test_decide ();
  test_egress_ring ();
  test_egress_rate ();
  test_egress_packet ();
  test_egress_rules ();
  test_dns ();
  test_dns_bounds ();
  test_dns_turns ();
  test_dns_steer ();
  test_sandbox_table ();
  printf ("%d checks passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
