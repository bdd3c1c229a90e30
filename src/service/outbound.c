/*
 * outbound.c - the guard on requests the daemon makes for tenants: what
 * the URL names (libcurl's URL parser, the one the transfer then uses),
 * which addresses it resolves to, which of those the platform denies, and
 * pinning the transfer to the address that was checked.  See outbound.h.
 *
 * The denied ranges are written here (there is no Debian library that
 * holds the IANA special-purpose registries in a usable form); the list
 * follows RFC 6890 and its updates, plus the cloud metadata addresses.
 * IPv6 forms that carry an IPv4 address (NAT64, IPv4-translated, 6to4,
 * Teredo) are judged by the IPv4 address they carry; IPv4-compatible
 * (::a.b.c.d, deprecated) is refused outright, and so is everything
 * outside global unicast (2000::/3) that is not otherwise named (the
 * IPv4-translated ::ffff:0:a.b.c.d among them).
 */
#include "outbound.h"

#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

/* ------------------------------------------------------------ ranges */

struct denied {
  const char *cidr;
  const char *why;
};

/* Specific entries first: the first match names the reason. */
static const struct denied denied_table[] = {
  { "169.254.169.254/32", "the cloud metadata address" },
  { "0.0.0.0/8", "a \"this network\" address" },
  { "10.0.0.0/8", "a private address" },
  { "100.64.0.0/10", "a carrier-grade NAT address" },
  { "127.0.0.0/8", "a loopback address" },
  { "169.254.0.0/16", "a link-local address" },
  { "172.16.0.0/12", "a private address" },
  { "192.0.0.0/24", "an IETF protocol assignment" },
  { "192.0.2.0/24", "a documentation address" },
  { "192.88.99.0/24", "a 6to4 relay address" },
  { "192.168.0.0/16", "a private address" },
  { "198.18.0.0/15", "a benchmarking address" },
  { "198.51.100.0/24", "a documentation address" },
  { "203.0.113.0/24", "a documentation address" },
  { "224.0.0.0/4", "a multicast address" },
  { "255.255.255.255/32", "the broadcast address" },
  { "240.0.0.0/4", "a reserved address" },
  { "::/128", "the unspecified address" },
  { "::1/128", "a loopback address" },
  { "fd00:ec2::254/128", "the cloud metadata address" },
  { "::/96", "an IPv4-compatible address" },
  { "64:ff9b:1::/48", "a local-use NAT64 address" },
  { "100::/64", "a discard-only address" },
  { "2001:2::/48", "a benchmarking address" },
  { "2001:10::/28", "an ORCHID address" },
  { "2001:20::/28", "an ORCHID address" },
  { "2001:db8::/32", "a documentation address" },
  { "3fff::/20", "a documentation address" },
  { "5f00::/16", "a segment routing address" },
  { "fc00::/7", "a private (unique local) address" },
  { "fe80::/10", "a link-local address" },
  { "fec0::/10", "a site-local address" },
  { "ff00::/8", "a multicast address" },
};
#define N_DENIED (sizeof denied_table / sizeof denied_table[0])

/* IPv6 prefixes that carry an IPv4 address at byte V4_AT (and, for
   Teredo, an obfuscated second one at byte 12). */
struct embedding {
  const char *cidr;
  unsigned v4_at;
  bool teredo;
  const char *why;
};

static const struct embedding embed_table[] = {
  { "64:ff9b::/96", 12, false, "a NAT64 form of a denied IPv4 address" },
  { "2002::/16", 2, false, "a 6to4 form of a denied IPv4 address" },
  { "2001::/32", 4, true, "a Teredo form of a denied IPv4 address" },
};
#define N_EMBED (sizeof embed_table / sizeof embed_table[0])

static struct sbx_ip_range denied_ranges[N_DENIED], embed_ranges[N_EMBED], mapped_range, global_unicast;
static pthread_once_t ranges_once = PTHREAD_ONCE_INIT;

static void
ranges_init (void)
{
  for (size_t i = 0; i < N_DENIED; i++)
    if (sbx_ip_range_parse (denied_table[i].cidr, &denied_ranges[i]) < 0)
      abort ();
  for (size_t i = 0; i < N_EMBED; i++)
    if (sbx_ip_range_parse (embed_table[i].cidr, &embed_ranges[i]) < 0)
      abort ();
  if (sbx_ip_range_parse ("::ffff:0:0/96", &mapped_range) < 0 || sbx_ip_range_parse ("2000::/3", &global_unicast) < 0)
    abort ();
}

static void
map_v4 (const void *v4, struct in6_addr *out)
{
  memset (out, 0, sizeof *out);
  out->s6_addr[10] = out->s6_addr[11] = 0xff;
  memcpy (&out->s6_addr[12], v4, 4);
}

static bool
is_mapped (const struct in6_addr *a)
{
  return IN6_IS_ADDR_V4MAPPED (a);
}

static void
clear_host_bits (struct in6_addr *a, unsigned prefix)
{
  for (unsigned i = 0; i < 16; i++)
    {
      unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
      if (bits < 8)
        a->s6_addr[i] &= (uint8_t) (0xff00u >> bits);
    }
}

int
sbx_ip_range_parse (const char *s, struct sbx_ip_range *out)
{
  char buf[INET6_ADDRSTRLEN + 8];
  if (s == NULL || strlen (s) >= sizeof buf)
    return -1;
  strcpy (buf, s);
  char *slash = strchr (buf, '/');
  long prefix = -1;
  if (slash)
    {
      *slash++ = '\0';
      if (*slash == '\0' || strlen (slash) > 3)
        return -1;
      for (const char *d = slash; *d; d++)
        if (!isdigit ((unsigned char) *d))
          return -1;
      prefix = strtol (slash, NULL, 10);
    }
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton (AF_INET, buf, &a4) == 1)
    {
      if (prefix > 32)
        return -1;
      map_v4 (&a4, &a6);
      prefix = prefix < 0 ? 128 : prefix + 96;
    }
  else if (inet_pton (AF_INET6, buf, &a6) == 1)
    {
      if (prefix > 128)
        return -1;
      if (prefix < 0)
        prefix = 128;
    }
  else
    return -1;
  clear_host_bits (&a6, (unsigned) prefix);
  out->addr = a6;
  out->prefix = (uint8_t) prefix;
  return 0;
}

void
sbx_ip_range_format (const struct sbx_ip_range *r, char *buf, size_t n)
{
  char ip[INET6_ADDRSTRLEN];
  if (is_mapped (&r->addr) && r->prefix >= 96)
    {
      inet_ntop (AF_INET, &r->addr.s6_addr[12], ip, sizeof ip);
      snprintf (buf, n, "%s/%u", ip, r->prefix - 96u);
    }
  else
    {
      inet_ntop (AF_INET6, &r->addr, ip, sizeof ip);
      snprintf (buf, n, "%s/%u", ip, r->prefix);
    }
}

bool
sbx_ip_range_contains (const struct sbx_ip_range *r, const struct in6_addr *a)
{
  struct in6_addr x = *a;
  clear_host_bits (&x, r->prefix);
  return memcmp (&x, &r->addr, sizeof x) == 0;
}

int
sbx_outbound_allow (struct sbx_outbound *ob, const char *s)
{
  if (ob->n_allow == SBX_OUTBOUND_ALLOW_MAX || sbx_ip_range_parse (s, &ob->allow[ob->n_allow]) < 0)
    return -1;
  ob->n_allow++;
  return 0;
}

/* The reason from the plain table alone. */
static const char *
table_reason (const struct in6_addr *a)
{
  for (size_t i = 0; i < N_DENIED; i++)
    if (sbx_ip_range_contains (&denied_ranges[i], a))
      return denied_table[i].why;
  return NULL;
}

const char *
sbx_outbound_denied_range (const struct in6_addr *a)
{
  pthread_once (&ranges_once, ranges_init);
  const char *why = table_reason (a);
  if (why || is_mapped (a))
    return why;
  for (size_t i = 0; i < N_EMBED; i++)
    if (sbx_ip_range_contains (&embed_ranges[i], a))
      {
        const struct embedding *e = &embed_table[i];
        struct in6_addr v4;
        map_v4 (&a->s6_addr[e->v4_at], &v4);
        if (table_reason (&v4))
          return e->why;
        if (e->teredo)
          {
            /* the client's address, each bit inverted (RFC 4380) */
            uint8_t client[4];
            for (int k = 0; k < 4; k++)
              client[k] = (uint8_t) ~a->s6_addr[12 + k];
            map_v4 (client, &v4);
            if (table_reason (&v4))
              return e->why;
          }
        return NULL;
      }
  if (!sbx_ip_range_contains (&global_unicast, a))
    return "a reserved IPv6 address";
  return NULL;
}

/* Is A one of the addresses of this host's interfaces (IFA)? */
static bool
own_address (const struct ifaddrs *ifa, const struct in6_addr *a)
{
  for (; ifa; ifa = ifa->ifa_next)
    {
      if (ifa->ifa_addr == NULL)
        continue;
      struct in6_addr x;
      if (ifa->ifa_addr->sa_family == AF_INET)
        map_v4 (&((const struct sockaddr_in *) (const void *) ifa->ifa_addr)->sin_addr, &x);
      else if (ifa->ifa_addr->sa_family == AF_INET6)
        x = ((const struct sockaddr_in6 *) (const void *) ifa->ifa_addr)->sin6_addr;
      else
        continue;
      if (memcmp (&x, a, sizeof x) == 0)
        return true;
    }
  return false;
}

static const char *
verdict_with (const struct sbx_outbound *ob, const struct in6_addr *a, bool ifa_ok, const struct ifaddrs *ifa,
              bool *opened)
{
  const char *why = sbx_outbound_denied_range (a);
  if (why == NULL)
    {
      if (!ifa_ok)
        why = "not checked against this host's addresses (they cannot be read)";
      else if (own_address (ifa, a))
        why = "an address of this host";
    }
  bool allowed = false;
  for (size_t i = 0; ob && i < ob->n_allow && !allowed; i++)
    allowed = sbx_ip_range_contains (&ob->allow[i], a);
  if (opened)
    *opened = allowed && why != NULL;
  return allowed ? NULL : why;
}

const char *
sbx_outbound_verdict (const struct sbx_outbound *ob, const struct in6_addr *a, bool *opened)
{
  struct ifaddrs *ifa = NULL;
  bool ifa_ok = getifaddrs (&ifa) == 0;
  const char *why = verdict_with (ob, a, ifa_ok, ifa, opened);
  if (ifa_ok)
    freeifaddrs (ifa);
  return why;
}

/* ------------------------------------------------------------ targets */

static void
curl_freep (void *p)
{
  curl_free (*(char **) p);
}
#define cleanup_curl __attribute__ ((cleanup (curl_freep)))

static void
addr_text (const struct in6_addr *a, char *buf, size_t n)
{
  if (is_mapped (a))
    inet_ntop (AF_INET, &a->s6_addr[12], buf, (socklen_t) n);
  else
    inet_ntop (AF_INET6, a, buf, (socklen_t) n);
}

/* "localhost" and the names below it are loopback (RFC 6761), and curl
   answers them itself without asking the resolver. */
static bool
localhost_name (const char *host)
{
  size_t n = strlen (host);
  while (n && host[n - 1] == '.')
    n--;
  static const char lh[] = "localhost";
  size_t l = sizeof lh - 1;
  return n >= l && strncasecmp (host + n - l, lh, l) == 0 && (n == l || host[n - l - 1] == '.');
}

int
sbx_outbound_parse (const struct sbx_outbound *ob, const char *url, struct sbx_outbound_target *t,
                    struct sbx_err *err)
{
  memset (t, 0, sizeof *t);
  if (url == NULL || strlen (url) > SBX_OUTBOUND_URL_MAX)
    return sbx_failk (err, SBX_E_INVALID, "URL longer than %d bytes", SBX_OUTBOUND_URL_MAX);
  t->url = curl_url ();
  if (t->url == NULL)
    return sbx_fail (err, ENOMEM, "curl_url");
  CURLUcode rc = curl_url_set (t->url, CURLUPART_URL, url, 0);
  if (rc != CURLUE_OK)
    return sbx_failk (err, SBX_E_INVALID, "not a valid URL (%s)", curl_url_strerror (rc));
  cleanup_curl char *scheme = NULL, *host = NULL, *zone = NULL, *port = NULL;
  if (curl_url_get (t->url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
      || (strcmp (scheme, "http") != 0 && strcmp (scheme, "https") != 0))
    return sbx_failk (err, SBX_E_INVALID, "only http and https URLs are allowed");
  if (curl_url_get (t->url, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
    return sbx_failk (err, SBX_E_INVALID, "the URL has no host");
  for (const char *p = host; *p; p++)
    if ((unsigned char) *p >= 0x80)
      return sbx_failk (err, SBX_E_INVALID, "the host must be ASCII (write international names as xn--)");
  if (curl_url_get (t->url, CURLUPART_ZONEID, &zone, 0) == CURLUE_OK && zone)
    return sbx_failk (err, SBX_E_INVALID, "IPv6 zone ids are not allowed");
  if (curl_url_get (t->url, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
    return sbx_failk (err, SBX_E_INVALID, "the URL has no port");
  char *end;
  unsigned long p = strtoul (port, &end, 10);
  if (*end || p < 1 || p > 65535)
    return sbx_failk (err, SBX_E_INVALID, "port %s out of range", port);
  t->port = (unsigned) p;
  size_t n = strlen (host);
  const char *h = host;
  if (h[0] == '[' && n > 2 && h[n - 1] == ']')
    {
      h++;
      n -= 2;
    }
  if (n >= sizeof t->host)
    return sbx_failk (err, SBX_E_INVALID, "host name too long");
  memcpy (t->host, h, n);
  t->host[n] = '\0';

  struct in_addr a4;
  struct in6_addr a6;
  if (host[0] == '[')
    {
      if (inet_pton (AF_INET6, t->host, &a6) != 1)
        return sbx_failk (err, SBX_E_INVALID, "bad IPv6 address %s", t->host);
      t->literal = true;
    }
  else if (inet_pton (AF_INET, t->host, &a4) == 1)
    {
      map_v4 (&a4, &a6);
      t->literal = true;
    }
  if (t->literal)
    {
      const char *why = sbx_outbound_verdict (ob, &a6, &t->opened);
      if (why)
        return sbx_failk (err, SBX_E_INVALID, "%s is %s: refused", t->host, why);
      addr_text (&a6, t->addr, sizeof t->addr);
      return 0;
    }
  if (localhost_name (t->host))
    return sbx_failk (err, SBX_E_INVALID, "%s is a loopback name: refused", t->host);
  return 0;
}

int
sbx_outbound_pick (const struct sbx_outbound *ob, struct sbx_outbound_target *t, const struct addrinfo *ai,
                   struct sbx_err *err)
{
  t->addr[0] = '\0';
  struct ifaddrs *ifa = NULL;
  bool ifa_ok = getifaddrs (&ifa) == 0;
  int ret = 0;
  for (; ai; ai = ai->ai_next)
    {
      struct in6_addr a;
      if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof (struct sockaddr_in))
        map_v4 (&((const struct sockaddr_in *) (const void *) ai->ai_addr)->sin_addr, &a);
      else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof (struct sockaddr_in6))
        a = ((const struct sockaddr_in6 *) (const void *) ai->ai_addr)->sin6_addr;
      else
        continue;
      bool opened;
      const char *why = verdict_with (ob, &a, ifa_ok, ifa, &opened);
      char text[INET6_ADDRSTRLEN];
      addr_text (&a, text, sizeof text);
      if (why)
        {
          t->addr[0] = '\0';
          ret = sbx_failk (err, SBX_E_FORBIDDEN, "%s resolves to %s, %s: refused", t->host, text, why);
          break;
        }
      if (t->addr[0] == '\0')
        {
          snprintf (t->addr, sizeof t->addr, "%s", text);
          t->opened = opened;
        }
    }
  if (ifa_ok)
    freeifaddrs (ifa);
  if (ret == 0 && t->addr[0] == '\0')
    ret = sbx_failk (err, SBX_E_FORBIDDEN, "%s has no address: refused", t->host);
  return ret;
}

int
sbx_outbound_resolve (const struct sbx_outbound *ob, struct sbx_outbound_target *t, struct sbx_err *err)
{
  if (t->literal)
    return t->addr[0] ? 0 : sbx_failk (err, SBX_E_FORBIDDEN, "%s: not checked", t->host);
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
  struct addrinfo *ai = NULL;
  int rc = getaddrinfo (t->host, NULL, &hints, &ai);
  if (rc != 0)
    return sbx_failk (err, SBX_E_UNAVAILABLE, "cannot resolve %s: %s", t->host,
                      rc == EAI_SYSTEM ? strerror (errno) : gai_strerror (rc));
  int r = sbx_outbound_pick (ob, t, ai, err);
  freeaddrinfo (ai);
  return r;
}

int
sbx_outbound_apply (CURL *curl, struct sbx_outbound_target *t, struct sbx_err *err)
{
  if (t->url == NULL || t->addr[0] == '\0')
    return sbx_failk (err, SBX_E_INTERNAL, "outbound request to an unchecked address");
  /* "::ADDR:PORT": whatever host and port, connect to the checked
     address; curl does not resolve a literal, so nothing can answer
     differently now than at the check */
  char line[INET6_ADDRSTRLEN + 16];
  bool v6 = strchr (t->addr, ':') != NULL;
  snprintf (line, sizeof line, "::%s%s%s:%u", v6 ? "[" : "", t->addr, v6 ? "]" : "", t->port);
  curl_slist_free_all (t->connect_to);
  t->connect_to = curl_slist_append (NULL, line);
  if (t->connect_to == NULL)
    return sbx_fail (err, ENOMEM, "curl_slist_append");
  if (curl_easy_setopt (curl, CURLOPT_CURLU, t->url) != CURLE_OK
      || curl_easy_setopt (curl, CURLOPT_CONNECT_TO, t->connect_to) != CURLE_OK
      || curl_easy_setopt (curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
      || curl_easy_setopt (curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK
      || curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
      /* "" disables proxies, those of the environment too */
      || curl_easy_setopt (curl, CURLOPT_PROXY, "") != CURLE_OK)
    return sbx_failk (err, SBX_E_INTERNAL, "libcurl refused an outbound option");
  return 0;
}

int
sbx_outbound_open (const struct sbx_outbound *ob, const char *url, CURL *curl, struct sbx_outbound_target *t,
                   struct sbx_err *err)
{
  if (sbx_outbound_parse (ob, url, t, err) < 0 || sbx_outbound_resolve (ob, t, err) < 0)
    return -1;
  return sbx_outbound_apply (curl, t, err);
}

void
sbx_outbound_target_free (struct sbx_outbound_target *t)
{
  curl_url_cleanup (t->url);
  curl_slist_free_all (t->connect_to);
  t->url = NULL;
  t->connect_to = NULL;
}
