/*
 * api_network.c - sandbox egress rules in the API: the network fields of
 * create (E2B's allow_internet_access and network {allowOut, denyOut},
 * seed 002's network {allow, block_outbound}), the sandbox object's
 * "network", and PUT /sandboxes/:id/network.
 */
#include <errno.h>
#include <string.h>

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
  if (!always && *allow_internet == 0 && (net == NULL || json_is_null (net)))
    return 0; /* the template decides */
  json_t *allow = json_array (), *deny = json_array ();
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
    }
  struct sbx_err err;
  if (sbx_net_policy_from_json (*allow_internet >= 0, allow, deny, p, &err) < 0)
    {
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

void
network_object (struct http_server *h, const char *id, json_t *obj)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, id, &info, &err) < 0)
    return;
  if (info.has_network)
    {
      json_t *net = sbx_net_policy_to_json (&info.network);
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
