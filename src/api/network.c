/*
 * network.c - sandbox egress rules in the API: the network fields of
 * create (E2B's allow_internet_access and network {allowOut, denyOut},
 * seed 002's network {allow, block_outbound}), the sandbox object's
 * "network", and PUT /sandboxes/:id/network.  E2B's "rules" (headers set
 * on a host's requests) and "egressProxy" (a SOCKS5 proxy) go with the
 * lists into the same policy.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "../core/net.h"
#include "api.h"

/* Append the strings of FROM (an array, or absent) to TO. */
static int
merge_list (struct MHD_Connection *c, json_t *to, json_t *from, const char *key, enum MHD_Result *ret)
{
  if (from == NULL || json_is_null (from))
    return 0;
  if (!json_is_array (from))
    {
      *ret = send_error (c, 400, "%s must be a list of strings", key);
      return -1;
    }
  json_array_extend (to, from);
  return 0;
}

/* E2B's rules: {"host": [{"transform": {"headers": {name: value}}}, ...]}. */
static int
body_rules (json_t *rules, struct sbx_net_policy *p, struct sbx_err *err)
{
  if (rules == NULL || json_is_null (rules))
    return 0;
  if (!json_is_object (rules))
    return sbx_failk (err, SBX_E_INVALID, "network.rules must be an object of host: [rule, ...]");
  const char *host;
  json_t *list;
  json_object_foreach (rules, host, list)
    {
      if (!json_is_array (list))
        return sbx_failk (err, SBX_E_INVALID, "network.rules[\"%.64s\"] must be a list of rules", host);
      size_t i;
      json_t *rule;
      json_array_foreach (list, i, rule)
        {
          json_t *t = json_is_object (rule) ? json_object_get (rule, "transform") : NULL;
          json_t *h = json_is_object (t) ? json_object_get (t, "headers") : NULL;
          if (!json_is_object (rule) || (t && !json_is_null (t) && !json_is_object (t))
              || (h && !json_is_null (h) && !json_is_object (h)))
            return sbx_failk (err, SBX_E_INVALID,
                              "network.rules[\"%.64s\"]: a rule is {\"transform\": {\"headers\": {name: value}}}", host);
          size_t n = json_is_object (h) ? json_object_size (h) : 0;
          if (n > 128)
            return sbx_failk (err, SBX_E_INVALID, "network.rules[\"%.64s\"]: at most 128 headers a rule", host);
          const char *names[129], *values[129];
          const char *k;
          json_t *v;
          size_t j = 0;
          if (n)
            json_object_foreach (h, k, v)
              {
                names[j] = k;
                values[j++] = json_string_value (v); /* NULL: refused by name */
                if (strcasecmp (k, "content-length") == 0 || strcasecmp (k, "transfer-encoding") == 0)
                  return sbx_failk (err, SBX_E_INVALID,
                                    "network.rules[\"%.64s\"]: %s is the request's framing; it cannot be set", host, k);
              }
          if (sbx_net_rule_add (p, host, names, values, n, err) < 0)
            return -1;
        }
    }
  return 0;
}

/* E2B's egressProxy: {"address": "host:port", "username", "password"};
   a host name is resolved now, once, and the address kept. */
static int
body_egress_proxy (json_t *x, struct sbx_net_policy *p, struct sbx_err *err)
{
  if (x == NULL || json_is_null (x))
    return 0;
  const char *address = json_string_value (json_object_get (x, "address"));
  json_t *u = json_object_get (x, "username"), *pw = json_object_get (x, "password");
  if (!json_is_object (x) || address == NULL || (u && !json_is_null (u) && !json_is_string (u))
      || (pw && !json_is_null (pw) && !json_is_string (pw)))
    return sbx_failk (err, SBX_E_INVALID,
                      "network.egressProxy must be {\"address\": \"host:port\", \"username\", \"password\"}");
  const char *colon = strrchr (address, ':');
  char host[256], *end = NULL;
  errno = 0;
  unsigned long port = colon ? strtoul (colon + 1, &end, 10) : 0;
  if (colon == NULL || colon == address || (size_t) (colon - address) >= sizeof host || errno || end == colon + 1
      || *end || colon[1] < '0' || colon[1] > '9' || port == 0 || port > 65535)
    return sbx_failk (err, SBX_E_INVALID, "network.egressProxy.address must be host:port, not \"%.64s\"", address);
  memcpy (host, address, (size_t) (colon - address));
  host[colon - address] = '\0';
  struct in_addr a;
  if (inet_pton (AF_INET, host, &a) != 1)
    {
      struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
      if (getaddrinfo (host, NULL, &hints, &res) != 0 || res == NULL)
        return sbx_failk (err, SBX_E_INVALID, "network.egressProxy.address: \"%.64s\" does not resolve", host);
      a = ((struct sockaddr_in *) (void *) res->ai_addr)->sin_addr;
      freeaddrinfo (res);
    }
  return sbx_net_socks_set (p, address, ntohl (a.s_addr), (uint16_t) port, json_string_value (u),
                            json_string_value (pw), err);
}

int
body_network (struct MHD_Connection *c, json_t *b, bool always, struct sbx_net_policy *p, int *allow_internet,
              bool *given, enum MHD_Result *ret)
{
  *given = false;
  *allow_internet = 0;
  json_t *ai = json_object_get (b, "allow_internet_access");
  if (ai == NULL)
    ai = json_object_get (b, "allowInternetAccess");
  if (ai && !json_is_null (ai))
    {
      if (!json_is_boolean (ai))
        {
          *ret = send_error (c, 400, "allow_internet_access must be a boolean");
          return -1;
        }
      *allow_internet = json_is_true (ai) ? 1 : -1;
    }
  json_t *net = json_object_get (b, "network");
  /* PUT .../network carries the lists themselves */
  if (always && net == NULL)
    net = b;
  if (net && !json_is_null (net) && !json_is_object (net))
    {
      *ret = send_error (c, 400, "network must be an object");
      return -1;
    }
  if (!always && *allow_internet == 0
      && (net == NULL || json_is_null (net)
          || (json_object_get (net, "allowOut") == NULL && json_object_get (net, "denyOut") == NULL
              && json_object_get (net, "allow") == NULL && json_object_get (net, "block_outbound") == NULL
              && json_object_get (net, "rules") == NULL && json_object_get (net, "egressProxy") == NULL)))
    return 0; /* the template decides (a network object may say only who reaches its ports) */
  json_t *allow = json_array (), *deny = json_array ();
  const char *allow_name = "allowOut";
  int r = -1;
  if (net && json_is_object (net))
    {
      json_t *block = json_object_get (net, "block_outbound");
      if (block && !json_is_null (block) && !json_is_boolean (block))
        {
          *ret = send_error (c, 400, "network.block_outbound must be a boolean");
          goto out;
        }
      if (merge_list (c, allow, json_object_get (net, "allowOut"), "allowOut", ret) < 0
          || merge_list (c, allow, json_object_get (net, "allow"), "network.allow", ret) < 0
          || merge_list (c, deny, json_object_get (net, "denyOut"), "denyOut", ret) < 0)
        goto out;
      if (json_is_true (block))
        json_array_append_new (deny, json_string ("0.0.0.0/0"));
      if (json_object_get (net, "allow") && !json_object_get (net, "allowOut"))
        allow_name = "network.allow";
    }
  struct sbx_err err;
  size_t na = json_array_size (allow), nd = json_array_size (deny);
  const char **a = calloc (na + 1, sizeof *a), **d = calloc (nd + 1, sizeof *d);
  if (a == NULL || d == NULL)
    {
      free (a);
      free (d);
      *ret = send_error (c, 500, "out of memory");
      goto out;
    }
  /* a non-string entry stays NULL, which the core refuses by name */
  for (size_t i = 0; i < na; i++)
    a[i] = json_string_value (json_array_get (allow, i));
  for (size_t i = 0; i < nd; i++)
    d[i] = json_string_value (json_array_get (deny, i));
  int built = sbx_net_policy_build (*allow_internet >= 0, a, na, allow_name, d, nd, "denyOut", p, &err);
  free (a);
  free (d);
  if (built < 0)
    {
      *ret = send_error (c, 400, "%s", err.msg);
      goto out;
    }
  if (net && json_is_object (net)
      && (body_rules (json_object_get (net, "rules"), p, &err) < 0
          || body_egress_proxy (json_object_get (net, "egressProxy"), p, &err) < 0))
    {
      sbx_net_policy_free (p);
      *ret = send_error (c, 400, "%s", err.msg);
      goto out;
    }
  *given = true;
  r = 0;
out:
  json_decref (allow);
  json_decref (deny);
  return r;
}

int
body_ingress (struct MHD_Connection *c, json_t *b, struct sbx_ingress *in, bool *given, enum MHD_Result *ret)
{
  *in = (struct sbx_ingress) { .public = true };
  *given = false;
  json_t *net = json_object_get (b, "network");
  if (!json_is_object (net))
    return 0; /* body_network refuses what is not an object */
  json_t *pub = json_object_get (net, "allowPublicTraffic");
  if (pub && !json_is_null (pub))
    {
      if (!json_is_boolean (pub))
        {
          *ret = send_error (c, 400, "network.allowPublicTraffic must be a boolean");
          return -1;
        }
      in->public = json_is_true (pub);
      *given = true;
    }
  json_t *mask = json_object_get (net, "maskRequestHost");
  if (mask && !json_is_null (mask))
    {
      const char *m = json_string_value (mask);
      /* a host name, a port, and ${PORT}: nothing that could end the
         header it goes into */
      bool ok = m && *m && strlen (m) < sizeof in->mask_host && strlen (m) == json_string_length (mask);
      for (const char *p = m; ok && *p;)
        if (strncmp (p, "${PORT}", 7) == 0)
          p += 7;
        else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'
                 || *p == '.' || *p == ':' || *p == '_' || *p == '[' || *p == ']')
          p++;
        else
          ok = false;
      if (!ok)
        {
          *ret = send_error (c, 400, "network.maskRequestHost must be a host name, optionally with :PORT or ${PORT}");
          return -1;
        }
      snprintf (in->mask_host, sizeof in->mask_host, "%s", m);
      *given = true;
    }
  return 0;
}

/* {"mode", "allowOut", "denyOut"}: E2B's names for a policy's rules. */
static json_t *
policy_json (const struct sbx_net_policy *p)
{
  char **allow, **deny;
  size_t na, nd;
  struct sbx_err err;
  if (sbx_net_policy_rules (p, &allow, &na, &deny, &nd, &err) < 0)
    return NULL;
  json_t *a = json_array (), *d = json_array ();
  for (size_t i = 0; i < na; i++)
    json_array_append_new (a, json_string (allow[i]));
  for (size_t i = 0; i < nd; i++)
    json_array_append_new (d, json_string (deny[i]));
  sbx_strv_free (allow);
  sbx_strv_free (deny);
  json_t *j = json_pack ("{s:s, s:o, s:o}", "mode", p->enabled ? "internet" : "none", "allowOut", a, "denyOut", d);
  if (j && p->n_rules)
    {
      json_t *rules = json_object ();
      for (size_t i = 0; i < p->n_rules; i++)
        {
          json_t *list = json_object_get (rules, p->rules[i].host);
          if (list == NULL)
            json_object_set_new (rules, p->rules[i].host, list = json_array ());
          json_t *h = json_object ();
          for (size_t k = 0; k < p->rules[i].n_headers; k++)
            json_object_set_new (h, p->rules[i].headers[k].name, json_string (p->rules[i].headers[k].value));
          json_array_append_new (list, json_pack ("{s:{s:o}}", "transform", "headers", h));
        }
      json_object_set_new (j, "rules", rules);
    }
  /* never the password, as E2B */
  if (j && p->proxy)
    json_object_set_new (j, "egressProxy",
                         json_pack ("{s:s, s:s*}", "address", p->proxy->address, "username", p->proxy->user));
  return j;
}

void
network_object (struct http_server *h, const char *id, json_t *obj)
{
  network_object_with (h, id, obj, true);
}

void
network_object_with (struct http_server *h, const char *id, json_t *obj, bool with_ingress)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    return;
  if (info.has_network)
    {
      json_t *net = policy_json (&info.network);
      if (net && info.net_address[0])
        {
          json_object_set_new (net, "address", json_string (info.net_address));
          json_object_set_new (net, "gateway", json_string (info.net_gateway));
        }
      json_object_set_new (obj, "allowInternetAccess",
                           info.internet_asked ? json_boolean (info.internet_asked > 0) : json_null ());
      if (net)
        json_object_set_new (obj, "network", net);
    }
  sbx_info_free (&info);
  /* who may reach its ports by host name, when the create said */
  struct sbx_ingress in;
  if (with_ingress && sbx_store_ingress_get (h->store, id, &in, &err) == 0 && in.stored)
    {
      json_t *net = json_object_get (obj, "network");
      if (net == NULL)
        json_object_set_new (obj, "network", net = json_object ());
      json_object_set_new (net, "allowPublicTraffic", json_boolean (in.public));
      if (in.mask_host[0])
        json_object_set_new (net, "maskRequestHost", json_string (in.mask_host));
    }
}

enum MHD_Result
network_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq)
{
  enum MHD_Result ret;
  json_t *b = body_object (c, rq, &ret);
  if (b == NULL)
    return ret;
  struct sbx_net_policy p;
  int allow_internet;
  bool given;
  if (body_network (c, b, true, &p, &allow_internet, &given, &ret) < 0)
    {
      json_decref (b);
      return ret;
    }
  json_decref (b);
  struct sbx_err err;
  int r = sbx_set_network (h->engine, id, &p, allow_internet, &err);
  sbx_net_policy_free (&p);
  if (r == 0)
    return send_empty (c, 204);
  if (sbx_err_kind (&err) == SBX_E_NOT_FOUND)
    return send_error (c, 409, "sandbox is not running");
  return send_fail (c, &err);
}
