/*
 * test_outbound.c - the outbound guard (src/service/outbound.c): the
 * denied ranges and their IPv6 disguises, operator ranges, this host's
 * own addresses, URL normalisation through libcurl's parser (numeric
 * IPv4 forms, IPv6 literals, userinfo, schemes, names of loopback), the
 * any-address rule, and pinning: a transfer goes to the address that was
 * checked even when the name now resolves elsewhere (DNS rebinding),
 * follows no redirect and uses no proxy from the environment.  The
 * transfers go to listeners of this program on 127.0.0.1 and 127.0.0.2.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "service/outbound.h"

static struct in6_addr
addr (const char *s)
{
  struct in6_addr a;
  struct in_addr a4;
  if (inet_pton (AF_INET, s, &a4) == 1)
    {
      memset (&a, 0, sizeof a);
      a.s6_addr[10] = a.s6_addr[11] = 0xff;
      memcpy (&a.s6_addr[12], &a4, 4);
    }
  else if (inet_pton (AF_INET6, s, &a) != 1)
    {
      fprintf (stderr, "bad test address %s\n", s);
      abort ();
    }
  return a;
}

/* -------------------------------------------------------------- ranges */

static void
test_range_parse (void)
{
  struct sbx_ip_range r;
  char buf[64];
  static const char *const good[][2] = {
    { "10.1.2.3/8", "10.0.0.0/8" },   { "127.0.0.1", "127.0.0.1/32" },   { "0.0.0.0/0", "0.0.0.0/0" },
    { "fd00::1/8", "fd00::/8" },      { "::1", "::1/128" },              { "2001:db8::/32", "2001:db8::/32" },
    { "::ffff:10.0.0.1", "10.0.0.1/32" },
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    {
      CHECK (sbx_ip_range_parse (good[i][0], &r) == 0);
      sbx_ip_range_format (&r, buf, sizeof buf);
      if (strcmp (buf, good[i][1]) != 0)
        fprintf (stderr, "range %s formats as %s\n", good[i][0], buf);
      CHECK (strcmp (buf, good[i][1]) == 0);
    }
  static const char *const bad[] = { "",          "x",          "10.0.0.0/33", "1.2.3.4/",  "1.2.3/8", "::/129",
                                     "10.0.0.0/-1", "10.0.0.0/8x", "0x7f000001",  "127.1",     "fe80::1%eth0",
                                     "1.2.3.4/0008" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      bool refused = sbx_ip_range_parse (bad[i], &r) < 0;
      if (!refused)
        fprintf (stderr, "range %s was accepted\n", bad[i]);
      CHECK (refused);
    }
  struct sbx_outbound ob = { .n_allow = 0 };
  for (int i = 0; i < SBX_OUTBOUND_ALLOW_MAX; i++)
    CHECK (sbx_outbound_allow (&ob, "10.0.0.0/8") == 0);
  CHECK (sbx_outbound_allow (&ob, "10.0.0.0/8") < 0);
}

/* An address and a word of the reason it is denied ("" for allowed). */
static const char *const ranges[][2] = {
  /* IPv4 */
  { "127.0.0.1", "loopback" },
  { "127.255.255.254", "loopback" },
  { "0.0.0.0", "this network" },
  { "0.1.2.3", "this network" },
  { "10.0.0.1", "private" },
  { "172.16.0.1", "private" },
  { "172.31.255.255", "private" },
  { "192.168.1.1", "private" },
  { "169.254.169.254", "metadata" },
  { "169.254.1.1", "link-local" },
  { "100.64.0.1", "carrier-grade NAT" },
  { "100.127.255.255", "carrier-grade NAT" },
  { "198.18.0.1", "benchmarking" },
  { "198.19.255.255", "benchmarking" },
  { "192.0.0.8", "IETF" },
  { "192.0.2.1", "documentation" },
  { "198.51.100.7", "documentation" },
  { "203.0.113.9", "documentation" },
  { "192.88.99.1", "6to4 relay" },
  { "224.0.0.1", "multicast" },
  { "239.255.255.250", "multicast" },
  { "240.0.0.1", "reserved" },
  { "255.255.255.255", "broadcast" },
  { "8.8.8.8", "" },
  { "1.1.1.1", "" },
  { "100.63.255.255", "" },
  { "100.128.0.0", "" },
  { "172.15.255.255", "" },
  { "172.32.0.0", "" },
  { "169.253.255.255", "" },
  { "198.17.255.255", "" },
  { "198.20.0.0", "" },
  { "223.255.255.255", "" },
  { "11.0.0.1", "" },
  /* IPv6 */
  { "::1", "loopback" },
  { "::", "unspecified" },
  { "::ffff:127.0.0.1", "loopback" },
  { "::ffff:169.254.169.254", "metadata" },
  { "::ffff:8.8.8.8", "" },
  { "::127.0.0.1", "IPv4-compatible" },
  { "::8.8.8.8", "IPv4-compatible" },
  { "::ffff:0:127.0.0.1", "reserved" },  /* IPv4-translated */
  { "64:ff9b::127.0.0.1", "NAT64" },
  { "64:ff9b::10.0.0.1", "NAT64" },
  { "64:ff9b::169.254.169.254", "NAT64" },
  { "64:ff9b::8.8.8.8", "" },
  { "64:ff9b:1::8.8.8.8", "local-use NAT64" },
  { "2002:7f00:1::1", "6to4" },
  { "2002:a9fe:a9fe::", "6to4" },
  { "2002:c0a8:101::1", "6to4" },
  { "2002:808:808::1", "" },
  { "2001:0:7f00:1::", "Teredo" },                  /* server 127.0.0.1 */
  { "2001:0:808:808:0:0:f5ff:fffe", "Teredo" },     /* client ~ = 10.0.0.1 */
  { "2001:0:808:808:0:0:f7f7:f7f7", "" },           /* client 8.8.8.8 */
  { "fc00::1", "private" },
  { "fd12:3456::1", "private" },
  { "fd00:ec2::254", "metadata" },
  { "fe80::1", "link-local" },
  { "febf:ffff::1", "link-local" },
  { "fec0::1", "site-local" },
  { "ff02::1", "multicast" },
  { "ff0e::1", "multicast" },
  { "2001:db8::1", "documentation" },
  { "3fff::1", "documentation" },
  { "100::1", "discard" },
  { "2001:2::1", "benchmarking" },
  { "2001:20::1", "ORCHID" },
  { "5f00::1", "segment routing" },
  { "4000::1", "reserved" },
  { "e000::1", "reserved" },
  { "2606:4700:4700::1111", "" },
  { "2a00:1450:4001::1", "" },
};

static void
test_denied_ranges (void)
{
  for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
    {
      struct in6_addr a = addr (ranges[i][0]);
      const char *why = sbx_outbound_denied_range (&a);
      bool want_denied = ranges[i][1][0] != '\0';
      bool ok = want_denied ? why && strstr (why, ranges[i][1]) : why == NULL;
      if (!ok)
        fprintf (stderr, "%s: want %s, got %s\n", ranges[i][0], want_denied ? ranges[i][1] : "allowed",
                 why ? why : "allowed");
      CHECK (ok);
    }
}

static void
test_operator_ranges_and_host_addresses (void)
{
  struct sbx_outbound ob = { .n_allow = 0 };
  CHECK (sbx_outbound_allow (&ob, "127.0.0.1/32") == 0);
  CHECK (sbx_outbound_allow (&ob, "fd00:ec2::/32") == 0);
  bool opened = false;
  struct in6_addr a = addr ("127.0.0.1");
  CHECK (sbx_outbound_verdict (&ob, &a, &opened) == NULL && opened);
  a = addr ("::ffff:127.0.0.1"); /* an IPv4 range opens the mapped form too */
  CHECK (sbx_outbound_verdict (&ob, &a, &opened) == NULL && opened);
  a = addr ("127.0.0.2");
  CHECK (sbx_outbound_verdict (&ob, &a, &opened) != NULL && !opened);
  a = addr ("::1");
  CHECK (sbx_outbound_verdict (&ob, &a, NULL) != NULL);
  a = addr ("64:ff9b::127.0.0.1"); /* a range opens what it names, not its disguises */
  CHECK (sbx_outbound_verdict (&ob, &a, NULL) != NULL);
  a = addr ("fd00:ec2::254");
  CHECK (sbx_outbound_verdict (&ob, &a, &opened) == NULL && opened);
  a = addr ("8.8.8.8");
  CHECK (sbx_outbound_verdict (&ob, &a, &opened) == NULL && !opened);
  CHECK (sbx_outbound_verdict (NULL, &a, NULL) == NULL);

  /* every address of this host is refused, public ones included */
  struct ifaddrs *ifa = NULL, *i;
  CHECK (getifaddrs (&ifa) == 0);
  int n = 0;
  for (i = ifa; i; i = i->ifa_next)
    {
      if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
        continue;
      char text[INET6_ADDRSTRLEN];
      if (i->ifa_addr->sa_family == AF_INET)
        inet_ntop (AF_INET, &((struct sockaddr_in *) (void *) i->ifa_addr)->sin_addr, text, sizeof text);
      else
        inet_ntop (AF_INET6, &((struct sockaddr_in6 *) (void *) i->ifa_addr)->sin6_addr, text, sizeof text);
      a = addr (text);
      const char *why = sbx_outbound_verdict (NULL, &a, NULL);
      if (why == NULL)
        fprintf (stderr, "this host's address %s is allowed\n", text);
      CHECK (why != NULL);
      if (sbx_outbound_denied_range (&a) == NULL)
        CHECK (why && strstr (why, "this host"));
      n++;
    }
  CHECK (n > 0);
  freeifaddrs (ifa);
}

/* ---------------------------------------------------------------- URLs */

/* URLs refused without resolving, and a word of the message. */
static const char *const refused_urls[][2] = {
  { "http://127.0.0.1:8080/", "127.0.0.1 is a loopback address" },
  { "http://0x7f000001/", "127.0.0.1 is a loopback" },
  { "http://2130706433:8080/hook", "127.0.0.1 is a loopback" },
  { "http://0177.0.0.1/", "127.0.0.1 is a loopback" },
  { "http://127.1/", "127.0.0.1 is a loopback" },
  { "http://0x7f.1/", "127.0.0.1 is a loopback" },
  { "http://%31%32%37.0.0.1/", "127.0.0.1 is a loopback" },
  { "http://example.com@127.0.0.1/", "127.0.0.1 is a loopback" },
  { "http://user:pw@127.0.0.1:9/", "127.0.0.1 is a loopback" },
  { "http://[::ffff:127.0.0.1]/", "is a loopback" },
  { "http://[0:0:0:0:0:ffff:7f00:1]/", "is a loopback" },
  { "http://[::1]:8080/", "::1 is a loopback" },
  { "http://[::]/", "unspecified" },
  { "http://0/", "0.0.0.0 is a \"this network\"" },
  { "http://0.0.0.0:80/", "this network" },
  { "http://169.254.169.254/latest/meta-data/", "the cloud metadata address" },
  { "http://[fd00:ec2::254]/", "the cloud metadata address" },
  { "http://10.0.0.1/", "10.0.0.1 is a private address" },
  { "https://192.168.0.1/", "private" },
  { "http://[64:ff9b::7f00:1]/", "NAT64" },
  { "http://[2002:7f00:1::]/", "6to4" },
  { "http://[::127.0.0.1]/", "IPv4-compatible" },
  { "http://localhost/", "loopback name" },
  { "http://LOCALHOST./", "loopback name" },
  { "http://hooks.localhost:8080/", "loopback name" },
  { "http://[fe80::1%25eth0]/", "zone" },
  { "ftp://example.com/", "only http and https" },
  { "file:///etc/passwd", "only http and https" },
  { "gopher://example.com/", "only http and https" },
  { "dict://example.com:11211/", "only http and https" },
  { "http://example.com:0/", "port" },
  { "http://b\xc3\xbc" "cher.example/", "ASCII" },
  { "http://\xe2\x91\xa0\xe2\x91\xa1\xe2\x91\xa6.0.0.1/", "ASCII" }, /* circled 1, 2, 7 */
  { "http://a b/", "not a valid URL" },
  { "example.com/hook", "not a valid URL" },
  { "", "not a valid URL" },
};

struct accepted_url {
  const char *url, *host, *addr; /* addr NULL: a name */
  unsigned port;
};

static const struct accepted_url accepted_urls[] = {
  { "https://example.com/hook", "example.com", NULL, 443 },
  { "http://user:pw@hooks.example.org:8080/p?q=1#f", "hooks.example.org", NULL, 8080 },
  { "HTTP://Example.COM/", "Example.COM", NULL, 80 },
  { "http://notlocalhost.example/", "notlocalhost.example", NULL, 80 },
  { "http://localhost.example/", "localhost.example", NULL, 80 },
  { "http://8.8.8.8/", "8.8.8.8", "8.8.8.8", 80 },
  { "http://0x08080808:81/", "8.8.8.8", "8.8.8.8", 81 },
  { "https://[2606:4700:4700::1111]:8443/", "2606:4700:4700::1111", "2606:4700:4700::1111", 8443 },
  { "http://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8", "8.8.8.8", 80 },
};

static void
test_urls (void)
{
  struct sbx_outbound_target t;
  struct sbx_err err;
  for (size_t i = 0; i < sizeof refused_urls / sizeof refused_urls[0]; i++)
    {
      int r = sbx_outbound_parse (NULL, refused_urls[i][0], &t, &err);
      bool ok = r < 0 && strstr (err.msg, refused_urls[i][1]) && sbx_err_kind (&err) == SBX_E_INVALID;
      if (!ok)
        fprintf (stderr, "%s: want refused (%s), got %s\n", refused_urls[i][0], refused_urls[i][1],
                 r < 0 ? err.msg : "accepted");
      CHECK (ok);
      sbx_outbound_target_free (&t);
    }
  for (size_t i = 0; i < sizeof accepted_urls / sizeof accepted_urls[0]; i++)
    {
      const struct accepted_url *u = &accepted_urls[i];
      int r = sbx_outbound_parse (NULL, u->url, &t, &err);
      bool ok = r == 0 && strcmp (t.host, u->host) == 0 && t.port == u->port && t.literal == (u->addr != NULL)
                && strcmp (t.addr, u->addr ? u->addr : "") == 0 && !t.opened;
      if (!ok)
        fprintf (stderr, "%s: want host %s addr %s port %u, got %s: host %s addr %s port %u\n", u->url, u->host,
                 u->addr ? u->addr : "-", u->port, r < 0 ? err.msg : "accepted", t.host, t.addr, t.port);
      CHECK (ok);
      sbx_outbound_target_free (&t);
    }
  /* a URL too long */
  char *big = malloc (SBX_OUTBOUND_URL_MAX + 100);
  memset (big, 'a', SBX_OUTBOUND_URL_MAX + 99);
  memcpy (big, "http://x/", 9);
  big[SBX_OUTBOUND_URL_MAX + 99] = '\0';
  CHECK (sbx_outbound_parse (NULL, big, &t, &err) < 0 && strstr (err.msg, "longer"));
  sbx_outbound_target_free (&t);
  free (big);

  /* opened by the operator: accepted, the address normalised */
  struct sbx_outbound ob = { .n_allow = 0 };
  CHECK (sbx_outbound_allow (&ob, "127.0.0.1/32") == 0);
  static const char *const opened[] = { "http://0x7f000001:8080/", "http://2130706433:8080/", "http://127.1:8080/",
                                        "http://[::ffff:127.0.0.1]:8080/", "http://x@0177.0.0.1:8080/" };
  for (size_t i = 0; i < sizeof opened / sizeof opened[0]; i++)
    {
      int r = sbx_outbound_parse (&ob, opened[i], &t, &err);
      bool ok = r == 0 && t.literal && strcmp (t.addr, "127.0.0.1") == 0 && t.opened && t.port == 8080;
      if (!ok)
        fprintf (stderr, "%s (127.0.0.1/32 open): %s, addr %s\n", opened[i], r < 0 ? err.msg : "accepted", t.addr);
      CHECK (ok);
      sbx_outbound_target_free (&t);
    }
  CHECK (sbx_outbound_parse (&ob, "http://127.0.0.2/", &t, &err) < 0);
  sbx_outbound_target_free (&t);
  CHECK (sbx_outbound_parse (&ob, "http://[::1]/", &t, &err) < 0);
  sbx_outbound_target_free (&t);
  CHECK (sbx_outbound_parse (&ob, "http://localhost/", &t, &err) < 0); /* a name of loopback stays refused */
  sbx_outbound_target_free (&t);
}

/* ------------------------------------------------- resolved addresses */

/* An addrinfo list of the addresses in V (NULL-terminated). */
struct fake_ai {
  struct addrinfo ai[8];
  struct sockaddr_in6 sa[8];
};

static struct addrinfo *
fake_list (struct fake_ai *f, const char *const *v)
{
  memset (f, 0, sizeof *f);
  int n = 0;
  for (; v[n]; n++)
    {
      struct in_addr a4;
      if (inet_pton (AF_INET, v[n], &a4) == 1)
        {
          struct sockaddr_in *s = (struct sockaddr_in *) (void *) &f->sa[n];
          s->sin_family = AF_INET;
          s->sin_addr = a4;
          f->ai[n].ai_family = AF_INET;
          f->ai[n].ai_addrlen = sizeof *s;
        }
      else
        {
          f->sa[n].sin6_family = AF_INET6;
          inet_pton (AF_INET6, v[n], &f->sa[n].sin6_addr);
          f->ai[n].ai_family = AF_INET6;
          f->ai[n].ai_addrlen = sizeof f->sa[n];
        }
      f->ai[n].ai_addr = (struct sockaddr *) &f->sa[n];
      f->ai[n].ai_next = v[n + 1] ? &f->ai[n + 1] : NULL;
    }
  return n ? &f->ai[0] : NULL;
}

static int
pick (const struct sbx_outbound *ob, const char *const *v, struct sbx_outbound_target *t, struct sbx_err *err)
{
  struct fake_ai f;
  CHECK (sbx_outbound_parse (ob, "http://hooks.example:8080/x", t, err) == 0);
  return sbx_outbound_pick (ob, t, fake_list (&f, v), err);
}

static void
test_any_address_refuses (void)
{
  struct sbx_outbound_target t;
  struct sbx_err err;
  CHECK (pick (NULL, (const char *[]){ "8.8.8.8", "2606:4700:4700::1111", NULL }, &t, &err) == 0
         && strcmp (t.addr, "8.8.8.8") == 0 && !t.opened);
  sbx_outbound_target_free (&t);
  CHECK (pick (NULL, (const char *[]){ "8.8.8.8", "10.0.0.1", NULL }, &t, &err) < 0
         && sbx_err_kind (&err) == SBX_E_FORBIDDEN && strstr (err.msg, "10.0.0.1, a private address")
         && t.addr[0] == '\0');
  sbx_outbound_target_free (&t);
  CHECK (pick (NULL, (const char *[]){ "2606:4700:4700::1111", "::ffff:169.254.169.254", NULL }, &t, &err) < 0
         && strstr (err.msg, "169.254.169.254, the cloud metadata address"));
  sbx_outbound_target_free (&t);
  CHECK (pick (NULL, (const char *[]){ "::1", NULL }, &t, &err) < 0 && strstr (err.msg, "loopback"));
  sbx_outbound_target_free (&t);
  CHECK (pick (NULL, (const char *[]){ NULL }, &t, &err) < 0 && strstr (err.msg, "no address"));
  sbx_outbound_target_free (&t);
  struct sbx_outbound ob = { .n_allow = 0 };
  CHECK (sbx_outbound_allow (&ob, "127.0.0.2/32") == 0);
  CHECK (pick (&ob, (const char *[]){ "127.0.0.2", NULL }, &t, &err) == 0 && strcmp (t.addr, "127.0.0.2") == 0
         && t.opened);
  sbx_outbound_target_free (&t);
  CHECK (pick (&ob, (const char *[]){ "127.0.0.2", "127.0.0.1", NULL }, &t, &err) < 0
         && strstr (err.msg, "127.0.0.1, a loopback address"));
  sbx_outbound_target_free (&t);
  CHECK (pick (&ob, (const char *[]){ "2001:db8::1", "127.0.0.2", NULL }, &t, &err) < 0);
  sbx_outbound_target_free (&t);
  /* an unchecked target is never applied */
  CURL *curl = curl_easy_init ();
  CHECK (sbx_outbound_parse (NULL, "http://hooks.example/", &t, &err) == 0);
  CHECK (sbx_outbound_apply (curl, &t, &err) < 0);
  sbx_outbound_target_free (&t);
  curl_easy_cleanup (curl);
}

/* ---------------------------------------------------------- pinning */

/* A listener on ADDR that answers every request with ANSWER and counts
   them, keeping the last Host header. */
struct listener {
  int fd;
  unsigned port;
  const char *answer;
  atomic_int requests;
  atomic_bool stop;
  char host[128];
  pthread_t thread;
};

static void *
listener_main (void *arg)
{
  struct listener *l = arg;
  while (!l->stop)
    {
      struct pollfd p = { .fd = l->fd, .events = POLLIN };
      if (poll (&p, 1, 50) <= 0)
        continue;
      int c = accept (l->fd, NULL, NULL);
      if (c < 0)
        continue;
      char buf[4096];
      size_t n = 0;
      while (n < sizeof buf - 1 && !strstr (buf, "\r\n\r\n"))
        {
          struct pollfd q = { .fd = c, .events = POLLIN };
          if (poll (&q, 1, 2000) <= 0)
            break;
          ssize_t r = read (c, buf + n, sizeof buf - 1 - n);
          if (r <= 0)
            break;
          n += (size_t) r;
          buf[n] = '\0';
        }
      buf[n] = '\0';
      const char *h = strcasestr (buf, "\r\nHost: ");
      if (h)
        {
          h += 8;
          size_t k = strcspn (h, "\r\n");
          snprintf (l->host, sizeof l->host, "%.*s", (int) (k < sizeof l->host ? k : sizeof l->host - 1), h);
        }
      l->requests++;
      if (write (c, l->answer, strlen (l->answer)) < 0)
        perror ("write");
      close (c);
    }
  return NULL;
}

static int
listener_start (struct listener *l, const char *ip, unsigned port, const char *answer)
{
  memset (l, 0, sizeof *l);
  l->answer = answer;
  l->fd = socket (AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
  inet_pton (AF_INET, ip, &sa.sin_addr);
  if (bind (l->fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (l->fd, 8) < 0)
    {
      close (l->fd);
      return -1;
    }
  socklen_t len = sizeof sa;
  getsockname (l->fd, (struct sockaddr *) &sa, &len);
  l->port = ntohs (sa.sin_port);
  pthread_create (&l->thread, NULL, listener_main, l);
  return 0;
}

static void
listener_stop (struct listener *l)
{
  l->stop = true;
  pthread_join (l->thread, NULL);
  close (l->fd);
}

static size_t
discard (char *p, size_t s, size_t n, void *u)
{
  (void) p;
  (void) u;
  return s * n;
}

/* GOOD on 127.0.0.2:P (opened by the operator), BAD on 127.0.0.1:P. */
static int
two_listeners (struct listener *good, struct listener *bad, const char *good_answer)
{
  for (int tries = 0; tries < 20; tries++)
    {
      if (listener_start (good, "127.0.0.2", 0, good_answer) < 0)
        return -1;
      if (listener_start (bad, "127.0.0.1", good->port, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == 0)
        return 0;
      listener_stop (good);
    }
  return -1;
}

static void
test_pinning (void)
{
  struct listener good, bad;
  if (two_listeners (&good, &bad, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n") < 0)
    {
      CHECK (!"two listeners on one port of 127.0.0.1 and 127.0.0.2");
      return;
    }
  struct sbx_outbound ob = { .n_allow = 0 };
  CHECK (sbx_outbound_allow (&ob, "127.0.0.2/32") == 0);
  char url[96], rebound[96];
  snprintf (url, sizeof url, "http://rebind.example:%u/hook", good.port);
  /* the name was checked when it resolved to 127.0.0.2; by the time of
     the connect it "resolves" to 127.0.0.1 (seeded into curl's own DNS
     cache, so no resolver is asked) */
  snprintf (rebound, sizeof rebound, "rebind.example:%u:127.0.0.1", good.port);
  struct sbx_outbound_target t;
  struct sbx_err err;
  struct fake_ai f;
  CHECK (sbx_outbound_parse (&ob, url, &t, &err) == 0);
  CHECK (sbx_outbound_pick (&ob, &t, fake_list (&f, (const char *[]){ "127.0.0.2", NULL }), &err) == 0);
  CURL *curl = curl_easy_init ();
  struct curl_slist *dns = curl_slist_append (NULL, rebound);
  curl_easy_setopt (curl, CURLOPT_RESOLVE, dns);
  CHECK (sbx_outbound_apply (curl, &t, &err) == 0);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
  CHECK (curl_easy_perform (curl) == CURLE_OK);
  long status = 0;
  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  CHECK (status == 204);
  char want_host[64];
  snprintf (want_host, sizeof want_host, "rebind.example:%u", good.port);
  CHECK (good.requests == 1 && strcmp (good.host, want_host) == 0);
  CHECK (bad.requests == 0);
  curl_easy_cleanup (curl);
  curl_slist_free_all (dns);
  sbx_outbound_target_free (&t);

  /* a proxy from the environment is not used */
  char proxy[64];
  snprintf (proxy, sizeof proxy, "http://127.0.0.1:%u", bad.port);
  setenv ("http_proxy", proxy, 1);
  setenv ("HTTP_PROXY", proxy, 1);
  curl = curl_easy_init ();
  snprintf (url, sizeof url, "http://127.0.0.2:%u/p", good.port);
  CHECK (sbx_outbound_open (&ob, url, curl, &t, &err) == 0);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
  CHECK (curl_easy_perform (curl) == CURLE_OK);
  CHECK (good.requests == 2 && bad.requests == 0);
  curl_easy_cleanup (curl);
  sbx_outbound_target_free (&t);
  unsetenv ("http_proxy");
  unsetenv ("HTTP_PROXY");
  listener_stop (&good);
  listener_stop (&bad);

  /* a redirect to a denied address is not followed */
  char redirect[160] = "";
  if (two_listeners (&good, &bad, redirect) < 0)
    {
      CHECK (!"two listeners on one port of 127.0.0.1 and 127.0.0.2");
      return;
    }
  snprintf (redirect, sizeof redirect,
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%u/next\r\nContent-Length: 0\r\n\r\n", good.port);
  snprintf (url, sizeof url, "http://127.0.0.2:%u/r", good.port);
  curl = curl_easy_init ();
  CHECK (sbx_outbound_open (&ob, url, curl, &t, &err) == 0);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
  CHECK (curl_easy_perform (curl) == CURLE_OK);
  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  CHECK (status == 302 && good.requests == 1 && bad.requests == 0);
  curl_easy_cleanup (curl);
  sbx_outbound_target_free (&t);
  listener_stop (&good);
  listener_stop (&bad);
}

int
main (void)
{
  curl_global_init (CURL_GLOBAL_DEFAULT);
  test_range_parse ();
  test_denied_ranges ();
  test_operator_ranges_and_host_addresses ();
  test_urls ();
  test_any_address_refuses ();
  test_pinning ();
  curl_global_cleanup ();
  printf ("outbound: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
