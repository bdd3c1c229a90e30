/*
 * mcp.c - the built-in MCP server ("code-exec") at /mcp: the Model Context
 * Protocol's Streamable HTTP transport (revision 2025-06-18; 2025-03-26
 * clients too) in front of the tools of service/tools.c.
 *
 * A client POSTs one JSON-RPC message per request, with the same API key
 * as every other route (Authorization: Bearer, or X-API-Key).  An
 * `initialize` request opens an MCP session, bound to the key's
 * organisation, whose id comes back in the Mcp-Session-Id header; every
 * later message carries it (400 without, 404 for a session this
 * organisation does not have: the client then initializes again).
 * Requests are answered with one JSON object (application/json), or as
 * one Server-Sent Event when the client accepts only text/event-stream;
 * notifications and responses with 202 and no body.  GET, the stream of
 * messages the server would start, answers 405: this server sends none.
 * DELETE ends a session.
 *
 * The message is untrusted: it is parsed with jansson (duplicate keys
 * refused) and checked member by member (mcp_message_parse); what is not
 * a JSON-RPC 2.0 request, notification or response gets a JSON-RPC error
 * (-32700, -32600, -32601, -32602) with the request's id where it has
 * one.  A tool that fails answers a result with isError true (tools.c),
 * never a dropped connection; a tool call holds a handler thread until it
 * ends (run_command's and run_code's timeouts bound it).
 *
 * Sessions live in memory (a restarted daemon answers 404 and clients
 * initialize again), at most MCP_SESSIONS_PER_ORG per organisation and
 * MCP_SESSIONS_MAX in all; one unused for MCP_SESSION_IDLE_MS is dropped
 * when room is needed.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../service/tools.h"
#include "api.h"

#define MCP_SESSIONS_PER_ORG 32u
#define MCP_SESSIONS_MAX 1024u
#define MCP_SESSION_IDLE_MS (3600 * 1000)
#define MCP_SESSION_ID_LEN 32 /* hex digits of 16 random bytes */
#define MCP_VERSION_DEFAULT "2025-03-26" /* a client that sends no MCP-Protocol-Version header */

/* The revisions this server speaks, newest first: an initialize asking
   for another is answered with the first. */
static const char *const mcp_versions[] = { "2025-06-18", "2025-03-26", NULL };

/* JSON-RPC's error codes, and the one this server uses for the rest. */
#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)
#define RPC_INTERNAL_ERROR (-32603)
#define RPC_SERVER_ERROR (-32000)
#define RPC_SESSION_NOT_FOUND (-32001)

/* ---- the error shape ---- */

static json_t *
rpc_error (json_t *id, int code, const char *msg)
{
  return json_pack ("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null (), "error", "code", code,
                    "message", msg);
}

/* Errors the server answers before this file sees the request (401, 413,
   503, ...): JSON-RPC errors without an id. */
static json_t *
mcp_error_body (unsigned status, const char *msg)
{
  (void) status;
  return rpc_error (NULL, RPC_SERVER_ERROR, msg);
}

const struct dialect dialect_mcp = {
  .name = "mcp",
  .status = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,   [SBX_E_NOT_FOUND] = 404, [SBX_E_CONFLICT] = 409,
              [SBX_E_PAUSED] = 409,    [SBX_E_STOPPED] = 409,   [SBX_E_LIMIT] = 429,     [SBX_E_FORBIDDEN] = 403,
              [SBX_E_TOO_LARGE] = 413, [SBX_E_NO_SPACE] = 507,  [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 },
  .bad_sandbox_id = 404,
  .error_body = mcp_error_body,
};

/* ---- sessions ---- */

struct mcp_session {
  char id[MCP_SESSION_ID_LEN + 1]; /* "" when the slot is free */
  char org_id[SBX_STORE_ID_MAX];
  char version[16];
  bool initialized;                /* notifications/initialized came */
  int64_t used_ms;
};

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mcp_session sessions[MCP_SESSIONS_MAX];

/* A new session of ORG speaking VERSION into ID; SBX_E_LIMIT when ORG
   holds MCP_SESSIONS_PER_ORG, or the daemon MCP_SESSIONS_MAX, that are
   not idle. */
static int
session_open (const struct sbx_org *org, const char *version, char id[MCP_SESSION_ID_LEN + 1], struct sbx_err *err)
{
  unsigned char rnd[MCP_SESSION_ID_LEN / 2];
  if (sbx_random_bytes (rnd, sizeof rnd) < 0)
    return sbx_failk (err, SBX_E_INTERNAL, "no random bytes for a session id");
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf (id + 2 * i, 3, "%02x", rnd[i]);
  int64_t now = sbx_wall_ms ();
  pthread_mutex_lock (&sessions_lock);
  struct mcp_session *free_slot = NULL;
  unsigned mine = 0;
  for (size_t i = 0; i < MCP_SESSIONS_MAX; i++)
    {
      struct mcp_session *s = &sessions[i];
      if (s->id[0] && now - s->used_ms > MCP_SESSION_IDLE_MS)
        s->id[0] = '\0';
      if (s->id[0] == '\0')
        {
          if (free_slot == NULL)
            free_slot = s;
          continue;
        }
      if (strcmp (s->org_id, org->id) == 0)
        mine++;
    }
  if (mine >= MCP_SESSIONS_PER_ORG || free_slot == NULL)
    {
      pthread_mutex_unlock (&sessions_lock);
      return sbx_failk (err, SBX_E_LIMIT, "too many MCP sessions: %u for this organisation, %u in all; end one "
                        "(DELETE /mcp) or wait until one is unused for %d minutes",
                        MCP_SESSIONS_PER_ORG, MCP_SESSIONS_MAX, MCP_SESSION_IDLE_MS / 60000);
    }
  *free_slot = (struct mcp_session) { .used_ms = now };
  memcpy (free_slot->id, id, MCP_SESSION_ID_LEN + 1);
  snprintf (free_slot->org_id, sizeof free_slot->org_id, "%s", org->id);
  snprintf (free_slot->version, sizeof free_slot->version, "%s", version);
  pthread_mutex_unlock (&sessions_lock);
  return 0;
}

/* Session ID of ORG, marked used; a copy into *OUT.  False when there is
   none (another organisation's does not exist for ORG).  With END it is
   ended. */
static bool
session_find (const struct sbx_org *org, const char *id, bool end, struct mcp_session *out)
{
  if (id == NULL || strlen (id) != MCP_SESSION_ID_LEN)
    return false;
  bool found = false;
  int64_t now = sbx_wall_ms ();
  pthread_mutex_lock (&sessions_lock);
  for (size_t i = 0; i < MCP_SESSIONS_MAX && !found; i++)
    {
      struct mcp_session *s = &sessions[i];
      if (s->id[0] == '\0' || strcmp (s->id, id) != 0 || strcmp (s->org_id, org->id) != 0)
        continue;
      if (now - s->used_ms > MCP_SESSION_IDLE_MS)
        {
          s->id[0] = '\0';
          break;
        }
      s->used_ms = now;
      if (out)
        *out = *s;
      if (end)
        s->id[0] = '\0';
      found = true;
    }
  pthread_mutex_unlock (&sessions_lock);
  return found;
}

static void
session_initialized (const char *id)
{
  pthread_mutex_lock (&sessions_lock);
  for (size_t i = 0; i < MCP_SESSIONS_MAX; i++)
    if (strcmp (sessions[i].id, id) == 0)
      sessions[i].initialized = true;
  pthread_mutex_unlock (&sessions_lock);
}

/* ---- messages ---- */

int
mcp_message_parse (const char *body, size_t len, struct mcp_message *m)
{
  *m = (struct mcp_message) { .kind = MCP_MSG_INVALID };
  json_error_t jerr;
  m->root = json_loadb (body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
  if (m->root == NULL)
    {
      m->code = RPC_PARSE_ERROR;
      snprintf (m->error, sizeof m->error, "Parse error: %s", jerr.text);
      return -1;
    }
  m->code = RPC_INVALID_REQUEST;
  if (json_is_array (m->root))
    {
      snprintf (m->error, sizeof m->error, "Invalid Request: send one JSON-RPC message per request (no batches)");
      return -1;
    }
  if (!json_is_object (m->root))
    {
      snprintf (m->error, sizeof m->error, "Invalid Request: a JSON-RPC message is a JSON object");
      return -1;
    }
  json_t *id = json_object_get (m->root, "id");
  /* an id is a string or an integer (MCP: not null) */
  if (json_is_string (id) || json_is_integer (id))
    m->id = id;
  const char *v = json_string_value (json_object_get (m->root, "jsonrpc"));
  if (v == NULL || strcmp (v, "2.0") != 0)
    {
      snprintf (m->error, sizeof m->error, "Invalid Request: jsonrpc must be \"2.0\"");
      return -1;
    }
  if (id && m->id == NULL)
    {
      snprintf (m->error, sizeof m->error, "Invalid Request: id must be a string or an integer");
      return -1;
    }
  json_t *method = json_object_get (m->root, "method");
  if (method == NULL)
    {
      /* a response to a request of the server's (it sends none) */
      bool result = json_object_get (m->root, "result") != NULL, error = json_object_get (m->root, "error") != NULL;
      if (m->id == NULL || result == error)
        {
          snprintf (m->error, sizeof m->error, "Invalid Request: no method, and not a response");
          return -1;
        }
      m->kind = MCP_MSG_RESPONSE;
      return 0;
    }
  if (!json_is_string (method) || json_string_length (method) == 0
      || strlen (json_string_value (method)) != json_string_length (method))
    {
      snprintf (m->error, sizeof m->error, "Invalid Request: method must be a non-empty string");
      return -1;
    }
  m->method = json_string_value (method);
  m->params = json_object_get (m->root, "params");
  if (m->params && !json_is_object (m->params))
    {
      m->code = RPC_INVALID_PARAMS;
      snprintf (m->error, sizeof m->error, "Invalid params: params must be an object");
      /* still a request or a notification: answered with its id */
      m->kind = m->id ? MCP_MSG_REQUEST : MCP_MSG_NOTIFICATION;
      return -1;
    }
  m->kind = m->id ? MCP_MSG_REQUEST : MCP_MSG_NOTIFICATION;
  return 0;
}

void
mcp_message_free (struct mcp_message *m)
{
  json_decref (m->root);
  m->root = NULL;
}

/* ---- HTTP ---- */

/* Does header NAME's list hold media type TYPE ("a/b")? */
static bool
accepts (const char *list, const char *type)
{
  size_t n = strlen (type);
  for (const char *p = list; p && *p;)
    {
      while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
      if (strncasecmp (p, type, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ';' || p[n] == ' '))
        return true;
      p = strchr (p, ',');
    }
  return false;
}

/* One answer of this route: JSON, or one SSE event when the client takes
   only that; SESSION, when not NULL, as Mcp-Session-Id. */
struct mcp_call {
  struct call *k;
  bool sse;
  const char *session;
};

static enum MHD_Result
mcp_send (struct mcp_call *m, unsigned status, json_t *j)
{
  return send_json_with (m->k->c, status, j, m->sse ? "text/event-stream" : NULL, m->session ? "Mcp-Session-Id" : NULL,
                         m->session);
}

static enum MHD_Result
mcp_fail (struct mcp_call *m, unsigned status, json_t *id, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));
static enum MHD_Result
mcp_fail (struct mcp_call *m, unsigned status, json_t *id, int code, const char *fmt, ...)
{
  char msg[SBX_ERR_MSG_MAX + 128];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  json_t *text = text_json (msg, strlen (msg));
  json_t *j = rpc_error (id, code, text ? json_string_value (text) : "error");
  json_decref (text);
  return mcp_send (m, status, j);
}

static enum MHD_Result
mcp_result (struct mcp_call *m, json_t *id, json_t *result)
{
  return mcp_send (m, 200, json_pack ("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

/* A browser page of another site must not reach a daemon on loopback
   through DNS rebinding: an Origin, when sent, is this server's own or a
   loopback one. */
static bool
origin_ok (struct MHD_Connection *c)
{
  const char *origin = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Origin");
  if (origin == NULL || strcmp (origin, "null") == 0)
    return origin == NULL;
  const char *host = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Host");
  const char *p = strstr (origin, "://");
  if (p == NULL)
    return false;
  p += 3;
  if (host && strcasecmp (p, host) == 0)
    return true;
  static const char *const loopback[] = { "localhost", "127.0.0.1", "[::1]", NULL };
  for (size_t i = 0; loopback[i]; i++)
    {
      size_t n = strlen (loopback[i]);
      if (strncasecmp (p, loopback[i], n) == 0 && (p[n] == '\0' || p[n] == ':'))
        return true;
    }
  return false;
}

static enum MHD_Result
mcp_initialize (struct mcp_call *m, struct mcp_message *msg)
{
  struct call *k = m->k;
  json_t *pv = json_object_get (msg->params, "protocolVersion");
  if (!json_is_string (pv))
    return mcp_fail (m, 200, msg->id, RPC_INVALID_PARAMS, "Invalid params: protocolVersion must be a string");
  const char *version = mcp_versions[0];
  for (size_t i = 0; mcp_versions[i]; i++)
    if (strcmp (json_string_value (pv), mcp_versions[i]) == 0)
      version = mcp_versions[i];
  char id[MCP_SESSION_ID_LEN + 1];
  struct sbx_err err;
  if (session_open (&k->rq->org, version, id, &err) < 0)
    return mcp_fail (m, 429, msg->id, RPC_SERVER_ERROR, "%s", err.msg);
  m->session = id;
  json_t *result = json_pack ("{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", version,
                              "capabilities", "tools", "listChanged", 0, "serverInfo", "name", "sbxd", "title",
                              "sbxd code-exec", "version", "1.0.0", "instructions",
                              "Sandboxes for running code. create_sandbox gives a sandbox_id; run_code (Python, "
                              "with charts), run_command, read_file, write_file and list_files work in it; "
                              "kill_sandbox ends it.");
  sbx_log (SBX_LOG_DEBUG, "mcp session opened org=%s version=%s", k->rq->org.name, version);
  return mcp_result (m, msg->id, result);
}

static enum MHD_Result
mcp_tools_call (struct mcp_call *m, struct mcp_message *msg)
{
  struct call *k = m->k;
  json_t *name = json_object_get (msg->params, "name");
  json_t *args = json_object_get (msg->params, "arguments");
  if (!json_is_string (name) || strlen (json_string_value (name)) != json_string_length (name))
    return mcp_fail (m, 200, msg->id, RPC_INVALID_PARAMS, "Invalid params: name must be a string");
  if (args && !json_is_object (args) && !json_is_null (args))
    return mcp_fail (m, 200, msg->id, RPC_INVALID_PARAMS, "Invalid params: arguments must be an object");
  json_t *result;
  struct sbx_err err;
  if (sbx_tool_call (k->h->svc, &k->rq->org, NULL, json_string_value (name), args, &result, &err) < 0)
    return mcp_fail (m, 500, msg->id, RPC_INTERNAL_ERROR, "Internal error: %s", err.msg);
  return mcp_result (m, msg->id, result);
}

static enum MHD_Result
mcp_post (struct mcp_call *m)
{
  struct call *k = m->k;
  struct MHD_Connection *c = k->c;
  const char *accept = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Accept");
  bool json = accept == NULL || accepts (accept, "application/json") || accepts (accept, "*/*")
              || accepts (accept, "application/*");
  m->sse = !json && accepts (accept, "text/event-stream");
  if (!json && !m->sse)
    return mcp_fail (m, 406, NULL, RPC_SERVER_ERROR,
                     "Not Acceptable: the client must accept application/json and text/event-stream");
  const char *ctype = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Type");
  if (ctype && strncasecmp (ctype, "application/json", 16) != 0)
    return mcp_fail (m, 415, NULL, RPC_SERVER_ERROR, "Unsupported Media Type: the body must be application/json");

  struct mcp_message msg;
  int pr = mcp_message_parse (k->rq->body, k->rq->len, &msg);
  enum MHD_Result ret;
  if (pr < 0 && msg.kind == MCP_MSG_INVALID)
    {
      ret = mcp_fail (m, 400, msg.id, msg.code, "%s", msg.error);
      goto out;
    }
  bool initialize = msg.kind == MCP_MSG_REQUEST && strcmp (msg.method, "initialize") == 0;
  const char *version = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "MCP-Protocol-Version");
  if (version && !initialize)
    {
      bool known = false;
      for (size_t i = 0; mcp_versions[i]; i++)
        known = known || strcmp (version, mcp_versions[i]) == 0;
      if (!known)
        {
          ret = mcp_fail (m, 400, msg.id, RPC_SERVER_ERROR, "Bad Request: unsupported MCP-Protocol-Version %.32s (this "
                          "server speaks %s and %s)", version, mcp_versions[0], mcp_versions[1]);
          goto out;
        }
    }
  if (initialize)
    {
      ret = pr < 0 ? mcp_fail (m, 200, msg.id, msg.code, "%s", msg.error) : mcp_initialize (m, &msg);
      goto out;
    }
  const char *sid = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Mcp-Session-Id");
  if (sid == NULL || *sid == '\0')
    {
      ret = mcp_fail (m, 400, msg.id, RPC_SERVER_ERROR,
                      "Bad Request: no Mcp-Session-Id header (send initialize first, without one)");
      goto out;
    }
  if (!session_find (&k->rq->org, sid, false, NULL))
    {
      ret = mcp_fail (m, 404, msg.id, RPC_SESSION_NOT_FOUND, "Session not found: initialize a new one");
      goto out;
    }
  if (pr < 0)
    {
      /* a request or notification with params that are no object */
      ret = msg.kind == MCP_MSG_REQUEST ? mcp_fail (m, 200, msg.id, msg.code, "%s", msg.error) : send_empty (c, 202);
      goto out;
    }
  if (msg.kind != MCP_MSG_REQUEST)
    {
      /* notifications (initialized, cancelled, ...) and responses: taken */
      if (msg.kind == MCP_MSG_NOTIFICATION && strcmp (msg.method, "notifications/initialized") == 0)
        session_initialized (sid);
      ret = send_empty (c, 202);
      goto out;
    }
  if (strcmp (msg.method, "ping") == 0)
    ret = mcp_result (m, msg.id, json_object ());
  else if (strcmp (msg.method, "tools/list") == 0)
    ret = mcp_result (m, msg.id, json_pack ("{s:o}", "tools", sbx_tools_list ()));
  else if (strcmp (msg.method, "tools/call") == 0)
    ret = mcp_tools_call (m, &msg);
  else
    ret = mcp_fail (m, 200, msg.id, RPC_METHOD_NOT_FOUND, "Method not found: %.128s", msg.method);
out:
  mcp_message_free (&msg);
  return ret;
}

enum MHD_Result
mcp_route (struct call *k)
{
  struct mcp_call m = { .k = k };
  if (!origin_ok (k->c))
    return mcp_fail (&m, 403, NULL, RPC_SERVER_ERROR, "Forbidden: Origin is not this server's");
  if (strcmp (k->method, "POST") == 0)
    return mcp_post (&m);
  if (strcmp (k->method, "DELETE") == 0)
    {
      const char *sid = MHD_lookup_connection_value (k->c, MHD_HEADER_KIND, "Mcp-Session-Id");
      if (sid == NULL || *sid == '\0')
        return mcp_fail (&m, 400, NULL, RPC_SERVER_ERROR, "Bad Request: no Mcp-Session-Id header");
      if (!session_find (&k->rq->org, sid, true, NULL))
        return mcp_fail (&m, 404, NULL, RPC_SESSION_NOT_FOUND, "Session not found");
      return send_empty (k->c, 204);
    }
  /* GET would open a stream for the server's own messages: it has none */
  return send_json_with (k->c, 405, rpc_error (NULL, RPC_SERVER_ERROR, "Method Not Allowed: POST or DELETE"), NULL,
                         "Allow", "POST, DELETE");
}
