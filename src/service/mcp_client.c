/*
 * mcp_client.c - a client of remote MCP servers over Streamable HTTP
 * (mcp_client.h), with libcurl through the outbound guard.
 *
 * One request at a time per client, each a blocking transfer on the
 * caller's thread (the agent loop's), bounded in time and bytes.  The
 * answer is read as it arrives: a JSON body is kept whole (at most
 * SBX_MCP_ANSWER_MAX bytes) and parsed at the end; an SSE stream is cut
 * into events by the small parser below (written here: libcurl has no
 * SSE reader and the format is a few lines of text), each event's data
 * parsed as a JSON-RPC message, and the transfer ends as soon as the
 * response to the request has come, since a server may keep the stream
 * open after it.
 */
#include "mcp_client.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../common/util.h"

#define SESSION_ID_MAX 256
#define CLOSE_TIMEOUT_MS 2000u

struct sbx_mcp_client {
  const struct sbx_outbound *ob;
  char *url;
  struct curl_slist *user_headers; /* "Name: value" */
  uint32_t timeout_ms;
  const volatile bool *cancel;
  char session[SESSION_ID_MAX + 1]; /* "" before initialize, or none given */
  char version[32];                 /* agreed at initialize; "" before */
  json_int_t next_id;
};

/* ---- answers ---- */

struct answer {
  json_int_t id;                    /* -1: none expected (a notification) */
  char ctype[128];
  char session[SESSION_ID_MAX + 1];
  bool session_bad;
  bool sse;                         /* decided at the first body byte */
  bool started;
  bool cr;                          /* SSE: the last byte was a CR */
  size_t total;
  bool too_big;
  char *data;                       /* JSON body, or the SSE line being read */
  size_t len, cap;
  char *ev;                         /* SSE: the data of the event being read */
  size_t ev_len, ev_cap;
  json_t *msg;                      /* the response, once found */
};

static void
answer_free (struct answer *a)
{
  free (a->data);
  free (a->ev);
  json_decref (a->msg);
}

static bool
is_response (json_t *m, json_int_t id)
{
  json_t *jid = json_object_get (m, "id");
  return json_is_object (m) && json_is_integer (jid) && json_integer_value (jid) == id
         && json_object_get (m, "method") == NULL
         && (json_object_get (m, "result") != NULL || json_object_get (m, "error") != NULL);
}

/* A message (or, as 2025-03-26 allowed, a batch) answering A's request. */
static void
take_response (struct answer *a, json_t *j)
{
  if (a->msg || j == NULL)
    return;
  if (is_response (j, a->id))
    a->msg = json_incref (j);
  else if (json_is_array (j))
    {
      size_t i;
      json_t *m;
      json_array_foreach (j, i, m)
      {
        if (is_response (m, a->id))
          {
            a->msg = json_incref (m);
            break;
          }
      }
    }
}

static int
append (char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
  if (sbx_reserve (buf, cap, *len + n + 1, 256) < 0)
    return -1;
  memcpy (*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

/* The end of an SSE event: its data is one JSON-RPC message. */
static void
sse_dispatch (struct answer *a)
{
  if (a->ev_len > 0)
    {
      json_t *j = json_loadb (a->ev, a->ev_len - 1, JSON_REJECT_DUPLICATES, NULL); /* without the last '\n' */
      take_response (a, j);
      json_decref (j);
    }
  a->ev_len = 0;
}

/* One line of an SSE stream (without its end). */
static int
sse_line (struct answer *a, const char *line, size_t n)
{
  if (n == 0)
    {
      sse_dispatch (a);
      return 0;
    }
  if (line[0] == ':')
    return 0; /* a comment */
  const char *colon = memchr (line, ':', n);
  size_t flen = colon ? (size_t) (colon - line) : n;
  if (flen != 4 || memcmp (line, "data", 4) != 0)
    return 0; /* event, id, retry: nothing this client needs */
  const char *v = colon ? colon + 1 : line + n;
  size_t vlen = (size_t) (line + n - v);
  if (vlen && *v == ' ')
    {
      v++;
      vlen--;
    }
  if (append (&a->ev, &a->ev_len, &a->ev_cap, v, vlen) < 0 || append (&a->ev, &a->ev_len, &a->ev_cap, "\n", 1) < 0)
    return -1;
  return 0;
}

/* Bytes of an SSE stream; lines end with LF, CRLF or CR. */
static int
sse_feed (struct answer *a, const char *p, size_t n)
{
  for (size_t i = 0; i < n && a->msg == NULL; i++)
    {
      char ch = p[i];
      bool after_cr = a->cr;
      a->cr = ch == '\r';
      if (ch == '\n' && after_cr)
        continue; /* the LF of a CRLF */
      if (ch == '\n' || ch == '\r')
        {
          if (sse_line (a, a->data ? a->data : "", a->len) < 0)
            return -1;
          a->len = 0;
          continue;
        }
      if (append (&a->data, &a->len, &a->cap, &ch, 1) < 0)
        return -1;
    }
  return 0;
}

/* The end of the body: what is left of a stream, or the JSON body. */
static void
answer_finish (struct answer *a)
{
  if (a->msg)
    return;
  if (a->sse)
    {
      if (a->len)
        sse_line (a, a->data, a->len);
      a->len = 0;
      sse_dispatch (a);
      return;
    }
  json_t *j = a->data ? json_loadb (a->data, a->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
  take_response (a, j);
  json_decref (j);
}

static bool
media_is (const char *ctype, const char *type)
{
  size_t n = strlen (type);
  return strncasecmp (ctype, type, n) == 0 && (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

static int
answer_feed (struct answer *a, const char *p, size_t n)
{
  if (!a->started)
    {
      a->started = true;
      a->sse = media_is (a->ctype, "text/event-stream");
    }
  if (a->total + n > SBX_MCP_ANSWER_MAX)
    {
      a->too_big = true;
      return -1;
    }
  a->total += n;
  if (a->sse)
    return sse_feed (a, p, n);
  return append (&a->data, &a->len, &a->cap, p, n);
}

int
sbx_mcp_answer_parse (const char *ctype, const char *body, size_t len, json_int_t id, json_t **msg,
                      struct sbx_err *err)
{
  *msg = NULL;
  struct answer a = { .id = id };
  snprintf (a.ctype, sizeof a.ctype, "%s", ctype ? ctype : "");
  int r = answer_feed (&a, body, len);
  if (r == 0)
    answer_finish (&a);
  if (a.msg)
    {
      *msg = a.msg;
      a.msg = NULL;
    }
  answer_free (&a);
  if (*msg)
    return 0;
  if (a.too_big)
    return sbx_failk (err, SBX_E_TOO_LARGE, "the answer is larger than %u bytes", SBX_MCP_ANSWER_MAX);
  return sbx_failk (err, SBX_E_UNAVAILABLE, "the answer holds no response to the request");
}

/* ---- transfers ---- */

static size_t
on_body (char *p, size_t size, size_t nmemb, void *ud)
{
  struct answer *a = ud;
  size_t n = size * nmemb;
  if (a->msg)
    return 0;
  if (answer_feed (a, p, n) < 0)
    return 0;
  return a->msg ? 0 : n; /* the response came: stop reading */
}

static size_t
on_header (char *p, size_t size, size_t nmemb, void *ud)
{
  struct answer *a = ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp (p, "HTTP/", 5) == 0)
    {
      a->ctype[0] = a->session[0] = '\0'; /* a new response (after a 100) */
      a->session_bad = false;
      return n;
    }
  const char *colon = memchr (p, ':', n);
  if (colon == NULL)
    return n;
  size_t name_len = (size_t) (colon - p);
  const char *v = colon + 1, *end = p + n;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t vlen = (size_t) (end - v);
  if (name_len == 12 && strncasecmp (p, "content-type", 12) == 0)
    snprintf (a->ctype, sizeof a->ctype, "%.*s", (int) (vlen < sizeof a->ctype ? vlen : sizeof a->ctype - 1), v);
  else if (name_len == 14 && strncasecmp (p, "mcp-session-id", 14) == 0)
    {
      /* visible ASCII (0x21 to 0x7E), as the spec asks */
      bool ok = vlen > 0 && vlen <= SESSION_ID_MAX;
      for (size_t i = 0; ok && i < vlen; i++)
        ok = (unsigned char) v[i] >= 0x21 && (unsigned char) v[i] <= 0x7e;
      a->session_bad = !ok;
      if (ok)
        {
          memcpy (a->session, v, vlen);
          a->session[vlen] = '\0';
        }
    }
  return n;
}

static int
on_progress (void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
  (void) dlt;
  (void) dln;
  (void) ult;
  (void) uln;
  const volatile bool *cancel = ud;
  return cancel && *cancel ? 1 : 0;
}

static bool
add_header (struct curl_slist **h, const char *line)
{
  struct curl_slist *n = curl_slist_append (*h, line);
  if (n)
    *h = n;
  return n != NULL;
}

/* One HTTP request to C's server: METHOD "POST" with BODY, or "DELETE".
   *STATUS gets the HTTP status, A what came back (A->id set by the
   caller). */
static int
exchange (struct sbx_mcp_client *c, const char *method, const char *body, uint32_t timeout_ms, long *status,
          struct answer *a, struct sbx_err *err)
{
  *status = 0;
  CURL *curl = curl_easy_init ();
  if (curl == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "curl_easy_init failed");
  struct sbx_outbound_target t;
  struct curl_slist *hdrs = NULL;
  int ret = -1;
  if (sbx_outbound_open (c->ob, c->url, curl, &t, err) < 0)
    {
      if (sbx_err_kind (err) == SBX_E_FORBIDDEN)
        {
          /* as for webhooks, the addresses a name resolves to go to the
             daemon's log only */
          sbx_log_fields (SBX_LOG_INFO, "remote MCP server refused", "host", t.host, "error", err->msg, NULL);
          sbx_failk (err, SBX_E_FORBIDDEN, "%s: refused (it resolves to an address the platform denies)", t.host);
        }
      else if (sbx_err_kind (err) == SBX_E_INVALID)
        err->kind = SBX_E_FORBIDDEN; /* what the tenant wrote: a denied literal address or a loopback name */
      goto out;
    }
  char h_session[SESSION_ID_MAX + 32], h_version[64];
  snprintf (h_session, sizeof h_session, "Mcp-Session-Id: %s", c->session);
  snprintf (h_version, sizeof h_version, "MCP-Protocol-Version: %s", c->version);
  bool post = strcmp (method, "POST") == 0;
  bool ok = (!post || add_header (&hdrs, "Content-Type: application/json"))
            && add_header (&hdrs, "Accept: application/json, text/event-stream")
            && (!c->session[0] || add_header (&hdrs, h_session)) && (!c->version[0] || add_header (&hdrs, h_version))
            && add_header (&hdrs, "User-Agent: sbxd-mcp-client/1")
            && add_header (&hdrs, "Expect:"); /* no 100-continue round trip */
  for (struct curl_slist *u = c->user_headers; ok && u; u = u->next)
    ok = add_header (&hdrs, u->data);
  if (!ok)
    {
      sbx_failk (err, SBX_E_INTERNAL, "out of memory");
      goto out;
    }
  curl_easy_setopt (curl, CURLOPT_HTTPHEADER, hdrs);
  if (post)
    {
      curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
      curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) strlen (body));
    }
  else
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT_MS, (long) (timeout_ms < 30000 ? timeout_ms : 30000));
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt (curl, CURLOPT_WRITEDATA, a);
  curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt (curl, CURLOPT_HEADERDATA, a);
  curl_easy_setopt (curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt (curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt (curl, CURLOPT_XFERINFODATA, (void *) c->cancel);
  curl_easy_setopt (curl, CURLOPT_ACCEPT_ENCODING, "");
  char cerr[CURL_ERROR_SIZE] = "";
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, cerr);
  CURLcode rc = curl_easy_perform (curl);
  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, status);
  if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && a->msg))
    {
      answer_finish (a);
      ret = 0;
    }
  else if (a->too_big)
    sbx_failk (err, SBX_E_UNAVAILABLE, "the answer is larger than %u bytes", SBX_MCP_ANSWER_MAX);
  else if (rc == CURLE_OPERATION_TIMEDOUT)
    sbx_failk (err, SBX_E_UNAVAILABLE, "no answer within %.1f s", timeout_ms / 1000.0);
  else if (rc == CURLE_ABORTED_BY_CALLBACK)
    sbx_failk (err, SBX_E_UNAVAILABLE, "cancelled");
  else
    {
      sbx_log_fields (SBX_LOG_INFO, "remote MCP server: no answer", "host", t.host, "address", t.addr, "error",
                      cerr[0] ? cerr : curl_easy_strerror (rc), NULL);
      /* the generic reason names no address; for a server in a range
         the platform denies (opened by the operator) not even that */
      sbx_failk (err, SBX_E_UNAVAILABLE, "%s", t.opened ? "no answer" : curl_easy_strerror (rc));
    }
out:
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (curl);
  sbx_outbound_close (&t);
  return ret;
}

/* The server's explanation in a JSON-RPC error M. */
static void
rpc_error_text (json_t *m, char *out, size_t n)
{
  json_t *e = json_object_get (m, "error");
  const char *msg = json_string_value (json_object_get (e, "message"));
  json_t *code = json_object_get (e, "code");
  snprintf (out, n, "error %lld: %.300s", json_is_integer (code) ? (long long) json_integer_value (code) : 0ll,
            msg ? msg : "(no message)");
}

static int rpc (struct sbx_mcp_client *c, const char *method, json_t *params, uint32_t timeout_ms, bool retry,
                json_t **result, struct sbx_err *err);

static int
initialize (struct sbx_mcp_client *c, struct sbx_err *err)
{
  c->session[0] = c->version[0] = '\0';
  json_t *params = json_pack ("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion", SBX_MCP_PROTOCOL, "capabilities",
                              "clientInfo", "name", "sbxd", "version", "1");
  json_t *res = NULL;
  int r = rpc (c, "initialize", params, c->timeout_ms, false, &res, err);
  json_decref (params);
  if (r < 0)
    return sbx_err_wrap (err, "initialize");
  const char *v = json_string_value (json_object_get (res, "protocolVersion"));
  if (v == NULL || (strcmp (v, "2025-06-18") != 0 && strcmp (v, "2025-03-26") != 0))
    {
      sbx_failk (err, SBX_E_UNAVAILABLE, "initialize: the server speaks MCP %.32s, not %s over Streamable HTTP",
                 v ? v : "(no version)", SBX_MCP_PROTOCOL);
      json_decref (res);
      return -1;
    }
  snprintf (c->version, sizeof c->version, "%s", v);
  json_decref (res);
  /* the notification; a server answers 202 */
  struct answer a = { .id = -1 };
  long status;
  r = exchange (c, "POST", "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", c->timeout_ms, &status,
                &a, err);
  answer_free (&a);
  if (r < 0)
    return sbx_err_wrap (err, "notifications/initialized");
  if (status < 200 || status > 299)
    return sbx_failk (err, SBX_E_UNAVAILABLE, "notifications/initialized: the server answered HTTP %ld", status);
  return 0;
}

/* Request METHOD with PARAMS (borrowed, may be NULL); *RESULT gets the
   result object.  With RETRY, a session the server no longer knows (404)
   is opened again and the request sent once more. */
static int
rpc (struct sbx_mcp_client *c, const char *method, json_t *params, uint32_t timeout_ms, bool retry, json_t **result,
     struct sbx_err *err)
{
  *result = NULL;
  json_int_t id = c->next_id++;
  json_t *m = json_pack ("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", id, "method", method);
  if (m && params)
    json_object_set (m, "params", params);
  cleanup_free char *body = m ? json_dumps (m, JSON_COMPACT) : NULL;
  json_decref (m);
  if (body == NULL)
    return sbx_failk (err, SBX_E_INVALID, "the request cannot be encoded (arguments must be UTF-8 text)");
  struct answer a = { .id = id };
  long status;
  if (exchange (c, "POST", body, timeout_ms, &status, &a, err) < 0)
    {
      answer_free (&a);
      return -1;
    }
  if (status == 404 && c->session[0] && retry)
    {
      answer_free (&a);
      if (initialize (c, err) < 0)
        return -1;
      return rpc (c, method, params, timeout_ms, false, result, err);
    }
  int ret = -1;
  char detail[400];
  if (a.msg && json_object_get (a.msg, "error"))
    {
      rpc_error_text (a.msg, detail, sizeof detail);
      sbx_failk (err, SBX_E_UNAVAILABLE, "the server answered %s", detail);
    }
  else if (status != 200)
    sbx_failk (err, SBX_E_UNAVAILABLE, "the server answered HTTP %ld", status);
  else if (a.msg == NULL)
    sbx_failk (err, SBX_E_UNAVAILABLE, "the server's answer holds no response to the request");
  else if (!json_is_object (json_object_get (a.msg, "result")))
    sbx_failk (err, SBX_E_UNAVAILABLE, "the server's result is not an object");
  else if (strcmp (method, "initialize") == 0 && a.session_bad)
    sbx_failk (err, SBX_E_UNAVAILABLE, "the server gave an invalid Mcp-Session-Id");
  else
    {
      if (strcmp (method, "initialize") == 0)
        snprintf (c->session, sizeof c->session, "%s", a.session);
      *result = json_incref (json_object_get (a.msg, "result"));
      ret = 0;
    }
  answer_free (&a);
  return ret;
}

/* ---- the client ---- */

static const char *const reserved_headers[] = {
  "accept", "accept-encoding", "connection", "content-length", "content-type", "expect", "host", "keep-alive",
  "mcp-protocol-version", "mcp-session-id", "proxy-authorization", "proxy-connection", "te", "trailer",
  "transfer-encoding", "upgrade", "user-agent",
};

static bool
token_char (unsigned char ch)
{
  return isalnum (ch) || (ch && strchr ("!#$%&'*+-.^_`|~", ch));
}

int
sbx_mcp_headers_check (json_t *headers, struct sbx_err *err)
{
  if (headers == NULL || json_is_null (headers))
    return 0;
  if (!json_is_object (headers))
    return sbx_failk (err, SBX_E_INVALID, "headers must be an object of strings");
  if (json_object_size (headers) > SBX_MCP_HEADERS_MAX)
    return sbx_failk (err, SBX_E_INVALID, "at most %u headers", SBX_MCP_HEADERS_MAX);
  const char *name;
  json_t *v;
  json_object_foreach (headers, name, v)
  {
    size_t n = strlen (name);
    bool ok = n > 0 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
      ok = token_char ((unsigned char) name[i]);
    if (!ok)
      return sbx_failk (err, SBX_E_INVALID, "header name \"%.64s\" is not an HTTP token (at most 64 bytes)", name);
    for (size_t i = 0; i < sizeof reserved_headers / sizeof reserved_headers[0]; i++)
      if (strcasecmp (name, reserved_headers[i]) == 0)
        return sbx_failk (err, SBX_E_INVALID, "header %s is set by the daemon", name);
    if (!json_is_string (v))
      return sbx_failk (err, SBX_E_INVALID, "header %s: the value must be a string", name);
    const char *s = json_string_value (v);
    size_t len = json_string_length (v);
    if (len > SBX_MCP_HEADER_MAX || strlen (s) != len || strpbrk (s, "\r\n"))
      return sbx_failk (err, SBX_E_INVALID, "header %s: the value must be one line of at most %u bytes", name,
                        SBX_MCP_HEADER_MAX);
  }
  return 0;
}

int
sbx_mcp_connect (const struct sbx_outbound *ob, const char *url, json_t *headers, uint32_t timeout_ms,
                 const volatile bool *cancel, struct sbx_mcp_client **out, struct sbx_err *err)
{
  *out = NULL;
  if (sbx_mcp_headers_check (headers, err) < 0)
    return -1;
  struct sbx_mcp_client *c = calloc (1, sizeof *c);
  if (c == NULL || (c->url = strdup (url)) == NULL)
    {
      free (c);
      return sbx_fail (err, ENOMEM, "MCP client");
    }
  c->ob = ob;
  c->timeout_ms = timeout_ms ? timeout_ms : 1;
  c->cancel = cancel;
  c->next_id = 1;
  const char *name;
  json_t *v;
  json_object_foreach (headers, name, v)
  {
    const char *s = json_string_value (v);
    cleanup_free char *line = NULL;
    /* "Name;" is how curl sends a header with an empty value */
    if ((*s ? asprintf (&line, "%s: %s", name, s) : asprintf (&line, "%s;", name)) < 0)
      line = NULL;
    struct curl_slist *l = line ? curl_slist_append (c->user_headers, line) : NULL;
    if (l == NULL)
      {
        sbx_mcp_close (c);
        return sbx_fail (err, ENOMEM, "MCP client headers");
      }
    c->user_headers = l;
  }
  if (initialize (c, err) < 0)
    {
      c->session[0] = '\0'; /* nothing to end */
      sbx_mcp_close (c);
      return -1;
    }
  *out = c;
  return 0;
}

int
sbx_mcp_list_tools (struct sbx_mcp_client *c, json_t **tools, struct sbx_err *err)
{
  *tools = json_array ();
  cleanup_free char *cursor = NULL;
  for (unsigned page = 0; page < SBX_MCP_LIST_PAGES_MAX; page++)
    {
      json_t *params = cursor ? json_pack ("{s:s}", "cursor", cursor) : json_object ();
      json_t *res = NULL;
      int r = rpc (c, "tools/list", params, c->timeout_ms, true, &res, err);
      json_decref (params);
      if (r < 0)
        {
          json_decref (*tools);
          *tools = NULL;
          return sbx_err_wrap (err, "tools/list");
        }
      json_t *list = json_object_get (res, "tools"), *t;
      size_t i;
      json_array_foreach (list, i, t)
      {
        if (json_array_size (*tools) >= SBX_MCP_LIST_TOOLS_MAX)
          break;
        json_array_append (*tools, t);
      }
      free (cursor);
      cursor = NULL;
      const char *next = json_string_value (json_object_get (res, "nextCursor"));
      if (next && *next && strlen (next) <= 1024 && json_array_size (*tools) < SBX_MCP_LIST_TOOLS_MAX)
        cursor = strdup (next);
      json_decref (res);
      if (cursor == NULL)
        break;
    }
  return 0;
}

int
sbx_mcp_call_tool (struct sbx_mcp_client *c, const char *name, json_t *args, uint32_t timeout_ms, json_t **result,
                   struct sbx_err *err)
{
  *result = NULL;
  json_t *params = json_pack ("{s:s, s:o}", "name", name, "arguments",
                              json_is_object (args) ? json_incref (args) : json_object ());
  if (params == NULL)
    return sbx_failk (err, SBX_E_INVALID, "the tool's name must be UTF-8 text");
  int r = rpc (c, "tools/call", params, timeout_ms ? timeout_ms : c->timeout_ms, true, result, err);
  json_decref (params);
  if (r < 0)
    return -1;
  if (!json_is_array (json_object_get (*result, "content")))
    {
      json_decref (*result);
      *result = NULL;
      return sbx_failk (err, SBX_E_UNAVAILABLE, "the server's answer is not a tool result (it has no content)");
    }
  return 0;
}

void
sbx_mcp_close (struct sbx_mcp_client *c)
{
  if (c == NULL)
    return;
  if (c->session[0] && !(c->cancel && *c->cancel))
    {
      /* ends the server's session; a server that does not allow it
         answers 405, which is fine too */
      struct answer a = { .id = -1 };
      long status;
      struct sbx_err err;
      exchange (c, "DELETE", NULL, c->timeout_ms < CLOSE_TIMEOUT_MS ? c->timeout_ms : CLOSE_TIMEOUT_MS, &status, &a,
                &err);
      answer_free (&a);
    }
  curl_slist_free_all (c->user_headers);
  free (c->url);
  free (c);
}
