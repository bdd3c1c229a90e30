/*
 * netpolicy.c - sandbox egress policies: parsing E2B's allowOut/denyOut
 * lists, and the verdicts that nftables (net.c) and the DNS and HTTP/TLS
 * filter (netproxy.c) both enforce.
 */
#include "net.h"

#include "../common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Never reachable from a sandbox unless an operator range allows it.
   The host's own addresses are not listed: traffic to them is local and
   the input rules drop it whatever its address. */
const struct sbx_cidr sbx_net_platform_deny[] = {
  { 0x00000000, 8 },  /* 0.0.0.0/8 "this network" */
  { 0x0a000000, 8 },  /* 10/8 private */
  { 0x64400000, 10 }, /* 100.64/10 carrier-grade NAT */
  { 0x7f000000, 8 },  /* 127/8 loopback */
  { 0xa9fe0000, 16 }, /* 169.254/16 link-local, cloud metadata */
  { 0xac100000, 12 }, /* 172.16/12 private */
  { 0xc0000000, 24 }, /* 192.0.0.0/24 IETF protocol assignments */
  { 0xc0a80000, 16 }, /* 192.168/16 private */
  { 0xc6120000, 15 }, /* 198.18/15 benchmarking */
  { 0xe0000000, 3 },  /* 224/4 multicast, 240/4 reserved, broadcast */
};
const size_t sbx_net_platform_deny_count = sizeof sbx_net_platform_deny / sizeof sbx_net_platform_deny[0];

static uint32_t
prefix_mask (uint8_t prefix)
{
  return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

bool
sbx_cidr_contains (const struct sbx_cidr *c, uint32_t ip)
{
  return (ip & prefix_mask (c->prefix)) == c->addr;
}

static bool
in_list (const struct sbx_cidr *list, size_t n, uint32_t ip)
{
  for (size_t i = 0; i < n; i++)
    if (sbx_cidr_contains (&list[i], ip))
      return true;
  return false;
}

bool
sbx_net_platform_denied (uint32_t ip)
{
  return in_list (sbx_net_platform_deny, sbx_net_platform_deny_count, ip);
}

/* "a.b.c.d" or "a.b.c.d/n"; strict dotted quad (inet_pton). */
int
sbx_cidr_parse (const char *s, struct sbx_cidr *out)
{
  char buf[32];
  if (s == NULL || strlen (s) >= sizeof buf)
    return -1;
  strcpy (buf, s);
  int prefix = 32;
  char *slash = strchr (buf, '/');
  if (slash)
    {
      *slash++ = '\0';
      if (*slash == '\0' || strlen (slash) > 2)
        return -1;
      for (const char *d = slash; *d; d++)
        if (!isdigit ((unsigned char) *d))
          return -1;
      prefix = atoi (slash);
      if (prefix > 32)
        return -1;
    }
  struct in_addr a;
  if (inet_pton (AF_INET, buf, &a) != 1)
    return -1;
  out->prefix = (uint8_t) prefix;
  out->addr = ntohl (a.s_addr) & prefix_mask (out->prefix);
  return 0;
}

void
sbx_cidr_format (const struct sbx_cidr *c, char *buf, size_t n)
{
  struct in_addr a = { htonl (c->addr) };
  char ip[INET_ADDRSTRLEN];
  inet_ntop (AF_INET, &a, ip, sizeof ip);
  if (c->prefix == 32)
    snprintf (buf, n, "%s", ip);
  else
    snprintf (buf, n, "%s/%u", ip, c->prefix);
}

/* A domain name or a "*." wildcard: letters, digits, '-' and '_', labels
   of 1..63, 253 in all; stored lower case without a final dot. */
static int
domain_normalise (const char *s, char **out)
{
  size_t len = strlen (s);
  if (len && s[len - 1] == '.')
    len--;
  const char *p = s;
  if (len > 2 && p[0] == '*' && p[1] == '.')
    p += 2;
  size_t body = len - (size_t) (p - s);
  if (body == 0 || body > 253)
    return -1;
  size_t label = 0;
  bool alpha = false;
  for (size_t i = 0; i < body; i++)
    {
      unsigned char ch = (unsigned char) p[i];
      if (ch == '.')
        {
          if (label == 0 || p[i - 1] == '-')
            return -1;
          label = 0;
          continue;
        }
      if (!(isalnum (ch) || ch == '-' || ch == '_') || ++label > 63 || (label == 1 && ch == '-'))
        return -1;
      if (isalpha (ch))
        alpha = true;
    }
  if (label == 0 || !alpha)
    return -1; /* empty last label, or something like an address */
  char *d = strndup (s, len);
  if (d == NULL)
    return -1;
  for (char *c = d; *c; c++)
    *c = (char) tolower ((unsigned char) *c);
  *out = d;
  return 0;
}

static void
rule_free (struct sbx_net_rule *r)
{
  for (size_t i = 0; i < r->n_headers; i++)
    {
      free (r->headers[i].name);
      free (r->headers[i].value);
    }
  free (r->headers);
  free (r->host);
}

static void
socks_free (struct sbx_net_socks *s)
{
  if (s == NULL)
    return;
  free (s->user);
  if (s->pass)
    explicit_bzero (s->pass, strlen (s->pass));
  free (s->pass);
  free (s);
}

void
sbx_net_policy_free (struct sbx_net_policy *p)
{
  free (p->allow);
  free (p->deny);
  for (size_t i = 0; i < p->n_domains; i++)
    free (p->domains[i]);
  free (p->domains);
  for (size_t i = 0; i < p->n_rules; i++)
    rule_free (&p->rules[i]);
  free (p->rules);
  socks_free (p->proxy);
  memset (p, 0, sizeof *p);
}

/* An HTTP token (RFC 9110): a header name. */
static bool
token_ok (const char *s)
{
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!(isalnum ((unsigned char) *s) || strchr ("!#$%&'*+-.^_`|~", *s)))
      return false;
  return true;
}

/* A header value: visible characters, spaces and tabs, nothing that
   could end the line it goes into. */
static bool
value_ok (const char *s)
{
  for (; *s; s++)
    if ((unsigned char) *s < 0x20 ? *s != '\t' : *s == 0x7f)
      return false;
  return true;
}

int
sbx_net_rule_add (struct sbx_net_policy *p, const char *host, const char *const *names,
                  const char *const *values, size_t n, struct sbx_err *err)
{
  char *h = NULL;
  if (host == NULL || strchr (host, '/') || domain_normalise (host, &h) < 0)
    return sbx_failk (err, SBX_E_INVALID, "rules: \"%.64s\" is not a domain name or a \"*.\" wildcard",
                      host ? host : "");
  size_t hosts = 1, bytes = 0;
  for (size_t i = 0; i < p->n_rules; i++)
    {
      bool same = strcmp (p->rules[i].host, h) == 0;
      if (same)
        for (size_t j = 0; j < p->rules[i].n_headers; j++)
          bytes += strlen (p->rules[i].headers[j].name) + strlen (p->rules[i].headers[j].value) + 4;
      if (!same && (i == 0 || strcmp (p->rules[i - 1].host, p->rules[i].host) != 0))
        hosts++;
    }
  if (hosts > SBX_NET_RULE_HOSTS_MAX)
    {
      free (h);
      return sbx_failk (err, SBX_E_INVALID, "rules: at most %d hosts", SBX_NET_RULE_HOSTS_MAX);
    }
  for (size_t i = 0; i < n; i++)
    {
      if (names[i] == NULL || values[i] == NULL || !token_ok (names[i]) || !value_ok (values[i]))
        {
          free (h);
          return sbx_failk (err, SBX_E_INVALID, "rules[\"%.64s\"]: header \"%.64s\" must be an HTTP token with a"
                            " string value without control characters", host, names[i] ? names[i] : "");
        }
      bytes += strlen (names[i]) + strlen (values[i]) + 4;
    }
  if (bytes > SBX_NET_RULE_BYTES_MAX)
    {
      free (h);
      return sbx_failk (err, SBX_E_INVALID, "rules[\"%.64s\"]: the headers take more than %d bytes", host,
                        SBX_NET_RULE_BYTES_MAX);
    }
  struct sbx_net_rule *l = realloc (p->rules, (p->n_rules + 1) * sizeof *l);
  if (l == NULL)
    {
      free (h);
      return sbx_fail (err, ENOMEM, "network rules");
    }
  p->rules = l;
  struct sbx_net_rule *r = &l[p->n_rules];
  *r = (struct sbx_net_rule) { .host = h, .headers = calloc (n + 1, sizeof *r->headers) };
  if (r->headers == NULL)
    {
      free (h);
      return sbx_fail (err, ENOMEM, "network rules");
    }
  p->n_rules++;
  for (size_t i = 0; i < n; i++)
    {
      r->headers[i].name = strdup (names[i]);
      r->headers[i].value = strdup (values[i]);
      r->n_headers++;
      if (r->headers[i].name == NULL || r->headers[i].value == NULL)
        return sbx_fail (err, ENOMEM, "network rules");
    }
  return 0;
}

const char *
sbx_net_rule_key (const struct sbx_net_policy *p, const char *name)
{
  if (name == NULL || p->n_rules == 0)
    return NULL;
  size_t len = strlen (name);
  if (len && name[len - 1] == '.')
    len--;
  const char *best = NULL;
  size_t best_len = 0;
  for (size_t i = 0; i < p->n_rules; i++)
    {
      const char *k = p->rules[i].host;
      if (k[0] == '*' && k[1] == '.')
        {
          size_t kl = strlen (k + 1); /* ".example.com" */
          if (len > kl && strncasecmp (name + len - kl, k + 1, kl) == 0 && kl > best_len)
            {
              best = k;
              best_len = kl;
            }
        }
      else if (strlen (k) == len && strncasecmp (name, k, len) == 0)
        return k; /* an exact rule comes first */
    }
  return best;
}

int
sbx_net_socks_set (struct sbx_net_policy *p, const char *address, uint32_t ip, uint16_t port, const char *user,
                   const char *pass, struct sbx_err *err)
{
  if (address == NULL || strlen (address) >= sizeof p->proxy->address || port == 0)
    return sbx_failk (err, SBX_E_INVALID, "egressProxy.address must be host:port");
  if ((user && strlen (user) > 255) || (pass && strlen (pass) > 255) || (pass && user == NULL)
      || (user && *user == '\0'))
    return sbx_failk (err, SBX_E_INVALID,
                      "egressProxy: username and password have 1 to 255 bytes, a password only with a username");
  struct sbx_net_socks *s = calloc (1, sizeof *s);
  if (s == NULL)
    return sbx_fail (err, ENOMEM, "egress proxy");
  snprintf (s->address, sizeof s->address, "%s", address);
  s->ip = ip;
  s->port = port;
  s->user = user ? strdup (user) : NULL;
  s->pass = user ? strdup (pass ? pass : "") : NULL;
  if (user && (s->user == NULL || s->pass == NULL))
    {
      socks_free (s);
      return sbx_fail (err, ENOMEM, "egress proxy");
    }
  socks_free (p->proxy);
  p->proxy = s;
  return 0;
}

int
sbx_net_policy_copy (struct sbx_net_policy *dst, const struct sbx_net_policy *src, struct sbx_err *err)
{
  memset (dst, 0, sizeof *dst);
  dst->enabled = src->enabled;
  dst->allow = calloc (src->n_allow + 1, sizeof *dst->allow);
  dst->deny = calloc (src->n_deny + 1, sizeof *dst->deny);
  dst->domains = calloc (src->n_domains + 1, sizeof *dst->domains);
  if (dst->allow == NULL || dst->deny == NULL || dst->domains == NULL)
    goto nomem;
  if (src->n_allow)
    memcpy (dst->allow, src->allow, src->n_allow * sizeof *dst->allow);
  dst->n_allow = src->n_allow;
  if (src->n_deny)
    memcpy (dst->deny, src->deny, src->n_deny * sizeof *dst->deny);
  dst->n_deny = src->n_deny;
  for (size_t i = 0; i < src->n_domains; i++)
    {
      if ((dst->domains[i] = strdup (src->domains[i])) == NULL)
        goto nomem;
      dst->n_domains = i + 1;
    }
  for (size_t i = 0; i < src->n_rules; i++)
    {
      const struct sbx_net_rule *r = &src->rules[i];
      const char **names = calloc (r->n_headers + 1, sizeof *names), **values = calloc (r->n_headers + 1, sizeof *values);
      int ok = names && values ? 0 : -1;
      for (size_t j = 0; ok == 0 && j < r->n_headers; j++)
        {
          names[j] = r->headers[j].name;
          values[j] = r->headers[j].value;
        }
      if (ok == 0)
        ok = sbx_net_rule_add (dst, r->host, names, values, r->n_headers, err);
      free (names);
      free (values);
      if (ok < 0)
        goto nomem;
    }
  if (src->proxy
      && sbx_net_socks_set (dst, src->proxy->address, src->proxy->ip, src->proxy->port, src->proxy->user,
                            src->proxy->pass, err) < 0)
    goto nomem;
  return 0;
nomem:
  sbx_net_policy_free (dst);
  return sbx_fail (err, ENOMEM, "copy network policy");
}

#define MAX_RULES 1024

static int
add_cidr (struct sbx_cidr **list, size_t *n, const struct sbx_cidr *c, struct sbx_err *err)
{
  for (size_t i = 0; i < *n; i++)
    if ((*list)[i].addr == c->addr && (*list)[i].prefix == c->prefix)
      return 0;
  struct sbx_cidr *l = realloc (*list, (*n + 1) * sizeof *l);
  if (l == NULL)
    return sbx_fail (err, ENOMEM, "network rules");
  l[(*n)++] = *c;
  *list = l;
  return 0;
}

static int
parse_list (const char *const *v, size_t n, const char *field, bool domains_ok, struct sbx_net_policy *p, bool deny,
            struct sbx_err *err)
{
  if (n > MAX_RULES)
    return sbx_failk (err, SBX_E_INVALID, "%s has more than %d entries", field, MAX_RULES);
  for (size_t i = 0; i < n; i++)
    {
      const char *s = v[i];
      if (s == NULL)
        return sbx_failk (err, SBX_E_INVALID, "%s must be a list of strings", field);
      struct sbx_cidr c;
      if (sbx_cidr_parse (s, &c) == 0)
        {
          if (add_cidr (deny ? &p->deny : &p->allow, deny ? &p->n_deny : &p->n_allow, &c, err) < 0)
            return -1;
          continue;
        }
      char *d = NULL;
      if (!domains_ok || strchr (s, '/') || domain_normalise (s, &d) < 0)
        return sbx_failk (err, SBX_E_INVALID, "%s: \"%.64s\" is not %s", field, s,
                          domains_ok ? "an IPv4 address, a CIDR block or a domain name"
                                     : "an IPv4 address or CIDR block");
      char **l = realloc (p->domains, (p->n_domains + 1) * sizeof *l);
      if (l == NULL)
        {
          free (d);
          return sbx_fail (err, ENOMEM, "network rules");
        }
      l[p->n_domains++] = d;
      p->domains = l;
    }
  return 0;
}

int
sbx_net_policy_build (bool internet, const char *const *allow, size_t n_allow, const char *allow_name,
                      const char *const *deny, size_t n_deny, const char *deny_name, struct sbx_net_policy *p,
                      struct sbx_err *err)
{
  memset (p, 0, sizeof *p);
  p->enabled = true;
  if (parse_list (allow, n_allow, allow_name ? allow_name : "allow", true, p, false, err) < 0
      || parse_list (deny, n_deny, deny_name ? deny_name : "deny", false, p, true, err) < 0)
    {
      sbx_net_policy_free (p);
      return -1;
    }
  if (!internet)
    {
      if (p->n_allow == 0 && p->n_domains == 0)
        {
          sbx_net_policy_free (p);
          p->enabled = false;
          return 0;
        }
      struct sbx_cidr all = { 0, 0 };
      if (add_cidr (&p->deny, &p->n_deny, &all, err) < 0)
        {
          sbx_net_policy_free (p);
          return -1;
        }
    }
  return 0;
}

int
sbx_net_policy_rules (const struct sbx_net_policy *p, char ***allow, size_t *n_allow, char ***deny, size_t *n_deny,
                      struct sbx_err *err)
{
  *allow = calloc (p->n_allow + p->n_domains + 1, sizeof **allow);
  *deny = calloc (p->n_deny + 1, sizeof **deny);
  *n_allow = *n_deny = 0;
  if (*allow == NULL || *deny == NULL)
    goto nomem;
  char buf[32];
  for (size_t i = 0; i < p->n_allow; i++)
    {
      sbx_cidr_format (&p->allow[i], buf, sizeof buf);
      if (((*allow)[(*n_allow)++] = strdup (buf)) == NULL)
        goto nomem;
    }
  for (size_t i = 0; i < p->n_domains; i++)
    if (((*allow)[(*n_allow)++] = strdup (p->domains[i])) == NULL)
      goto nomem;
  for (size_t i = 0; i < p->n_deny; i++)
    {
      sbx_cidr_format (&p->deny[i], buf, sizeof buf);
      if (((*deny)[(*n_deny)++] = strdup (buf)) == NULL)
        goto nomem;
    }
  return 0;
nomem:
  sbx_strv_free (*allow);
  sbx_strv_free (*deny);
  *allow = *deny = NULL;
  *n_allow = *n_deny = 0;
  return sbx_fail (err, ENOMEM, "network rules");
}

bool
sbx_net_policy_plain (const struct sbx_net_policy *p)
{
  return p->enabled && !p->n_allow && !p->n_deny && !p->n_domains && !p->n_rules && !p->proxy;
}

bool
sbx_net_policy_deny_all (const struct sbx_net_policy *p)
{
  if (!p->enabled)
    return true;
  for (size_t i = 0; i < p->n_deny; i++)
    if (p->deny[i].prefix == 0)
      return true;
  return false;
}

const char *
sbx_net_domain_rule (const struct sbx_net_policy *p, const char *name)
{
  if (!p->enabled || name == NULL)
    return NULL;
  char n[256];
  size_t len = strlen (name);
  if (len && name[len - 1] == '.')
    len--;
  if (len == 0 || len >= sizeof n)
    return NULL;
  for (size_t i = 0; i < len; i++)
    n[i] = (char) tolower ((unsigned char) name[i]);
  n[len] = '\0';
  for (size_t i = 0; i < p->n_domains; i++)
    {
      const char *d = p->domains[i];
      if (d[0] == '*' && d[1] == '.')
        {
          /* "*.example.com": strictly below example.com */
          size_t dl = strlen (d + 1); /* ".example.com" */
          if (len > dl && strcmp (n + len - dl, d + 1) == 0)
            return d;
        }
      else if (strcmp (n, d) == 0)
        return d;
    }
  return NULL;
}

bool
sbx_net_domain_allowed (const struct sbx_net_policy *p, const char *name)
{
  return sbx_net_domain_rule (p, name) != NULL;
}

/* The first entry of LIST that holds IP, or NULL. */
static const struct sbx_cidr *
find_cidr (const struct sbx_cidr *list, size_t n, uint32_t ip)
{
  for (size_t i = 0; i < n; i++)
    if (sbx_cidr_contains (&list[i], ip))
      return &list[i];
  return NULL;
}

/* "WHAT a.b.c.d/n" into RULE (N bytes; RULE may be NULL). */
static void
rule_cidr (char *rule, size_t n, const char *what, const struct sbx_cidr *c)
{
  if (rule == NULL || n == 0)
    return;
  char buf[32];
  sbx_cidr_format (c, buf, sizeof buf);
  snprintf (rule, n, "%s %s", what, buf);
}

static void
rule_text (char *rule, size_t n, const char *text)
{
  if (rule && n)
    snprintf (rule, n, "%s", text);
}

bool
sbx_net_ip_verdict (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops, uint32_t ip,
                    char *rule, size_t n)
{
  if (!p->enabled)
    {
      rule_text (rule, n, "mode none");
      return false;
    }
  const struct sbx_cidr *c = find_cidr (sbx_net_platform_deny, sbx_net_platform_deny_count, ip);
  if (c && !in_list (ops, n_ops, ip))
    {
      rule_cidr (rule, n, "platform", c);
      return false;
    }
  if ((c = find_cidr (p->allow, p->n_allow, ip)) != NULL)
    {
      rule_cidr (rule, n, "allowOut", c);
      return true;
    }
  if ((c = find_cidr (p->deny, p->n_deny, ip)) != NULL)
    {
      rule_cidr (rule, n, "denyOut", c);
      return false;
    }
  rule_text (rule, n, "default internet");
  return true;
}

bool
sbx_net_ip_allowed (const struct sbx_net_policy *p, const struct sbx_cidr *ops, size_t n_ops, uint32_t ip)
{
  return sbx_net_ip_verdict (p, ops, n_ops, ip, NULL, 0);
}
