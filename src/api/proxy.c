/*
 * proxy.c - sandbox ports by host name (sbxd serve --domain D): a request
 * whose Host is PORT-ID.D goes to PORT on the loopback of sandbox ID, as
 * E2B's getHost(PORT) URLs do.  envd's port (49983) and the code
 * interpreter's (49999) are served by sbxd itself: such a request becomes
 * an envd call (e2b_envd.c, interp.c) for that sandbox.
 *
 * Who may reach a port: anyone who knows the name, unless the sandbox was
 * created with network.allowPublicTraffic false; then only a request
 * carrying its traffic token (E2B's trafficAccessToken) in the header
 * e2b-traffic-access-token.  network.maskRequestHost replaces the Host
 * the sandbox's server sees ("${PORT}" is the port).  The connection to
 * the port is made inside the sandbox's network namespace
 * (sbx_port_connect): it cannot lead anywhere but that sandbox.
 *
 * HTTP.  One connection to the sandbox per request, "Connection: close".
 * The request head goes first (its target exactly as the client sent it,
 * hop-by-hop headers dropped, X-Forwarded-For/-Proto/-Host set), then the
 * body as it arrives (re-chunked when the client chunked it), through a
 * buffer of BUF_MAX bytes: when the sandbox does not read, the
 * connection is suspended and libmicrohttpd reads no more from the
 * client.  The answer's head (at most HEAD_MAX bytes) is parsed with
 * http-parser (Debian's libhttp-parser), and its body streamed to the
 * client as it comes, decoded from chunks and re-framed by
 * libmicrohttpd, again never more than one read ahead.  While waiting
 * on the sandbox, in either direction, the connection is suspended and
 * the resumer thread (server.c) wakes it: no thread is held by a slow or
 * idle request.  A suspended connection does not time out, so a request
 * the sandbox never answers lasts at most as long as the sandbox.
 *
 * Upgrades (WebSocket, or any "Connection: Upgrade" request): the
 * request goes to the sandbox the same way; if the sandbox answers 101,
 * the client gets that 101 (libmicrohttpd's upgrade) and from then on the
 * bytes are copied both ways by one relay thread, an epoll loop over
 * every upgraded pair, with a buffer of RELAY_BUF bytes each way.  At most
 * RELAY_MAX pairs at once (then 503).
 *
 * A request for a paused sandbox calls proxy_paused (below): a sandbox
 * created with E2B's autoResume is resumed, as an envd call does
 * (e2b_auto_resume).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "../common/log.h"
#include "../common/util.h"
#include "api.h"

#define BUF_MAX (64u << 10)   /* request bytes on their way to the sandbox */
#define HEAD_MAX (32u << 10)  /* the sandbox's answer head */
#define RELAY_BUF (32u << 10) /* each way, per upgraded connection */
/* After the sandbox's end is done, the client gets RELAY_LINGER_MS to take
   the rest and close; then the pair is closed, but while libmicrohttpd
   still has bytes of it to forward (a slow TLS client) at most
   RELAY_LINGER_MAX_MS in all. */
#define RELAY_LINGER_MS 1000
#define RELAY_LINGER_MAX_MS 10000
#define RELAY_MAX 1024        /* upgraded connections at once */
#define ENVD_PORT 49983
#define INTERP_PORT 49999
#define TRAFFIC_HEADER "e2b-traffic-access-token"

/* ---- names ---- */

bool
sbx_http_domain_valid (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n >= SBX_DOMAIN_MAX)
    return false;
  const char *colon = strchr (s, ':');
  size_t name_len = colon ? (size_t) (colon - s) : n;
  if (name_len == 0 || s[0] == '.' || s[0] == '-' || s[name_len - 1] == '.')
    return false;
  for (size_t i = 0; i < name_len; i++)
    {
      char c = s[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
        return false;
      if (c == '.' && s[i + 1] == '.')
        return false;
    }
  if (colon)
    {
      char *end;
      unsigned long port = strtoul (colon + 1, &end, 10);
      if (colon[1] < '0' || colon[1] > '9' || *end || port < 1 || port > 65535)
        return false;
    }
  return true;
}

void
e2b_traffic_token (struct http_server *h, const char *id, char out[65])
{
  /* an HMAC of the id under the envd secret, like the access token, but
     of another message: one never gives the other */
  char msg[SBX_ID_MAX + 16];
  int n = snprintf (msg, sizeof msg, "traffic:%s", id);
  unsigned char md[32];
  unsigned int len = 0;
  HMAC (EVP_sha256 (), h->envd_secret, sizeof h->envd_secret, (const unsigned char *) msg, (size_t) n, md, &len);
  for (unsigned i = 0; i < 32; i++)
    snprintf (out + 2 * i, 3, "%02x", md[i]);
}

char *
proxy_url (struct http_server *h, struct MHD_Connection *c, const char *id, unsigned port)
{
  if (h->domain[0] == '\0')
    return NULL;
  bool https = h->tls;
  if (!https && c)
    {
      /* plain HTTP behind a reverse proxy that terminates TLS */
      const char *p = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "X-Forwarded-Proto");
      https = p && strncasecmp (p, "https", 5) == 0;
    }
  char *url = NULL;
  int r = port ? asprintf (&url, "%s://%u-%s.%s", https ? "https" : "http", port, id, h->domain)
               : asprintf (&url, "%s://{port}-%s.%s", https ? "https" : "http", id, h->domain);
  return r < 0 ? NULL : url;
}

/* Does HOST (as in a Host header) name PORT-ID under the domain?  1 with
   *PORT and ID, 0 when it is another name, -1 for a name under the domain
   that cannot be a sandbox port (400). */
static int
parse_host (struct http_server *h, const char *host, unsigned *port, char id[SBX_ID_MAX])
{
  char name[256];
  size_t n = strcspn (host, ":");
  if (n == 0 || n >= sizeof name)
    return 0;
  for (size_t i = 0; i < n; i++)
    name[i] = (char) (host[i] >= 'A' && host[i] <= 'Z' ? host[i] - 'A' + 'a' : host[i]);
  name[n] = '\0';
  if (n > 0 && name[n - 1] == '.')
    name[--n] = '\0';
  size_t d = strlen (h->domain_name);
  if (n <= d + 1 || name[n - d - 1] != '.' || strcmp (name + n - d, h->domain_name) != 0)
    return 0;
  name[n - d - 1] = '\0';
  /* "PORT-ID": anything else under the domain (api.D) is the API's */
  char *dash = strchr (name, '-');
  if (dash == NULL || dash == name || strspn (name, "0123456789") != (size_t) (dash - name))
    return 0;
  *dash = '\0';
  if (dash - name > 5 || strtoul (name, NULL, 10) < 1 || strtoul (name, NULL, 10) > 65535 || strlen (dash + 1) >= SBX_ID_MAX)
    return -1;
  *port = (unsigned) strtoul (name, NULL, 10);
  snprintf (id, SBX_ID_MAX, "%s", dash + 1);
  return 1;
}

/* ---- E2B's answers for what the proxy itself refuses ---- */

static enum MHD_Result
proxy_error (struct MHD_Connection *c, unsigned status, const char *id, unsigned port, const char *msg)
{
  json_t *j = json_pack ("{s:i, s:s}", "code", (int) status, "message", msg);
  if (j && id)
    json_object_set_new (j, "sandboxId", json_string (id));
  if (j && port)
    json_object_set_new (j, "port", json_integer (port));
  return send_json (c, status, j);
}

/* ---- automatic resumption ---- */

/* A routed request met sandbox REC paused.  Resume it if it asked to be
   resumed by traffic (E2B's autoResume) and answer true; false leaves it
   paused and the request is refused (409).  Sandboxes cannot ask for
   that yet: the lifecycle settings (autoPause, autoResume) decide here
   once they exist.  Called on a libmicrohttpd thread: a resumption must
   be quick (a thaw is), or be moved to a handler thread. */
static bool
proxy_paused (struct http_server *h, const struct sbx_sandbox_rec *rec)
{
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (h->engine, rec->id, &info, &err) < 0)
    return false;
  bool resumed = info.state == SBX_PAUSED && e2b_auto_resume (h, &info);
  sbx_info_free (&info);
  return resumed;
}

/* ---- one proxied request ---- */

struct proxy {
  atomic_int refs;             /* the request's, and its answer's */
  struct http_server *h;
  struct MHD_Connection *c;
  int fd;                      /* to the sandbox's port */
  struct conn_waiter *w;
  char id[SBX_ID_MAX];
  unsigned port;
  bool connected, chunked, body_done, answered, upgrade, head_only;
  char *out;                   /* bytes for the sandbox: head, then body */
  size_t out_len, out_off;
  /* the answer */
  http_parser parser;
  char *in;                    /* what was read of it and not yet used */
  size_t in_len, in_off;
  bool head_done, msg_done, status_101;
  char *hdr;                   /* its headers: "name\0value\0"... */
  size_t hdr_len;
  bool in_value;
  char *body;                  /* where on_body copies to (libmicrohttpd's buffer) */
  size_t body_len, body_max;
};

static void
proxy_unref (struct proxy *px)
{
  if (atomic_fetch_sub (&px->refs, 1) != 1)
    return;
  conn_waiter_free (px->w);
  if (px->fd >= 0)
    close (px->fd);
  free (px->out);
  free (px->in);
  free (px->hdr);
  free (px);
}

void
proxy_request_done (struct request *rq)
{
  if (rq->proxy)
    proxy_unref (rq->proxy);
  rq->proxy = NULL;
}

static bool
out_add (struct proxy *px, const char *p, size_t n)
{
  if (px->out_len + n > BUF_MAX)
    return false;
  memcpy (px->out + px->out_len, p, n);
  px->out_len += n;
  return true;
}

static bool
out_printf (struct proxy *px, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static bool
out_printf (struct proxy *px, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (px->out + px->out_len, BUF_MAX - px->out_len, fmt, ap);
  va_end (ap);
  if (n < 0 || (size_t) n >= BUF_MAX - px->out_len)
    return false;
  px->out_len += (size_t) n;
  return true;
}

/* Does the comma-separated header value LIST hold TOKEN (any case)? */
static bool
has_token (const char *list, const char *token)
{
  size_t t = strlen (token);
  for (const char *p = list; p && *p;)
    {
      p += strspn (p, " \t,");
      size_t n = strcspn (p, ",");
      size_t m = n;
      while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
        m--;
      if (m == t && strncasecmp (p, token, t) == 0)
        return true;
      p += n;
    }
  return false;
}

/* Headers never passed on: hop-by-hop ones, what the proxy sets itself,
   and the traffic token (the sandbox has no use for it). */
static bool
hop_header (const char *name, const char *connection)
{
  static const char *const drop[] = { "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
                                      "Transfer-Encoding", "Upgrade", "Content-Length", "Expect", "Host",
                                      TRAFFIC_HEADER, "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host" };
  for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
    if (strcasecmp (name, drop[i]) == 0)
      return true;
  return connection && has_token (connection, name);
}

struct head_ctx {
  struct proxy *px;
  const char *connection;
  bool ok;
};

static enum MHD_Result
add_request_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  (void) kind;
  struct head_ctx *hc = cls;
  if (key == NULL || hop_header (key, hc->connection))
    return MHD_YES;
  /* libmicrohttpd has already refused CR and LF in headers */
  if (!out_printf (hc->px, "%s: %s\r\n", key, value ? value : ""))
    hc->ok = false;
  return MHD_YES;
}

/* The request head for the sandbox. */
static bool
request_head (struct request *rq, struct proxy *px, const struct sbx_ingress *in, const char *host)
{
  struct MHD_Connection *c = rq->c;
  const char *connection = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Connection");
  const char *upgrade = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Upgrade");
  const char *te = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Transfer-Encoding");
  const char *cl = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Length");
  px->upgrade = upgrade && connection && has_token (connection, "upgrade");
  px->chunked = te && has_token (te, "chunked");
  px->head_only = strcmp (rq->mhd_method, "HEAD") == 0;
  const char *target = rq->raw_url ? rq->raw_url : rq->mhd_url;
  bool ok = out_printf (px, "%s %s HTTP/1.1\r\n", rq->mhd_method, target);
  /* the Host the sandbox's server sees */
  if (in->mask_host[0])
    {
      char mask[300] = "";
      size_t m = 0;
      for (const char *p = in->mask_host; *p && m + 8 < sizeof mask;)
        if (strncmp (p, "${PORT}", 7) == 0)
          {
            m += (size_t) snprintf (mask + m, sizeof mask - m, "%u", px->port);
            p += 7;
          }
        else
          mask[m++] = *p++;
      mask[m] = '\0';
      ok = ok && out_printf (px, "Host: %s\r\n", mask);
    }
  else
    ok = ok && out_printf (px, "Host: %s\r\n", host);
  struct head_ctx hc = { px, connection, true };
  MHD_get_connection_values (c, MHD_HEADER_KIND, add_request_header, &hc);
  ok = ok && hc.ok;
  char addr[INET6_ADDRSTRLEN] = "";
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
    inet_ntop (AF_INET, &((const struct sockaddr_in *) ci->client_addr)->sin_addr, addr, sizeof addr);
  else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6)
    inet_ntop (AF_INET6, &((const struct sockaddr_in6 *) ci->client_addr)->sin6_addr, addr, sizeof addr);
  bool https = MHD_get_connection_info (c, MHD_CONNECTION_INFO_PROTOCOL) != NULL;
  if (addr[0])
    ok = ok && out_printf (px, "X-Forwarded-For: %s\r\n", addr);
  ok = ok && out_printf (px, "X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n", https ? "https" : "http", host);
  if (px->upgrade)
    ok = ok && out_printf (px, "Connection: Upgrade\r\nUpgrade: %s\r\n", upgrade);
  else
    ok = ok && out_printf (px, "Connection: close\r\n");
  if (px->chunked)
    ok = ok && out_printf (px, "Transfer-Encoding: chunked\r\n");
  else if (cl)
    ok = ok && out_printf (px, "Content-Length: %llu\r\n", strtoull (cl, NULL, 10));
  else
    px->body_done = true; /* no body: nothing will be added */
  return ok && out_printf (px, "\r\n");
}

bool
proxy_begin (struct request *rq, enum MHD_Result *ret)
{
  struct http_server *h = rq->h;
  struct MHD_Connection *c = rq->c;
  const char *host = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Host");
  unsigned port = 0;
  char id[SBX_ID_MAX];
  int k = host ? parse_host (h, host, &port, id) : 0;
  if (k == 0)
    return true;
  if (k < 0)
    {
      *ret = proxy_error (c, 400, NULL, 0, "invalid sandbox host name");
      return false;
    }
  snprintf (rq->sandbox_id, sizeof rq->sandbox_id, "%s", id);
  if (port == ENVD_PORT || port == INTERP_PORT)
    {
      /* envd and the code interpreter: the headers the SDK sends with
         E2B_SANDBOX_URL, from the name; headers that say otherwise are
         refused rather than one of the two believed */
      const char *hid = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Id");
      const char *hport = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Port");
      snprintf (rq->host_id, sizeof rq->host_id, "%s", id);
      snprintf (rq->host_port, sizeof rq->host_port, "%u", port);
      if ((hid && strcmp (hid, rq->host_id) != 0) || (hport && strcmp (hport, rq->host_port) != 0))
        {
          *ret = proxy_error (c, 400, id, port, "E2b-Sandbox-Id or E2b-Sandbox-Port differ from the host name");
          return false;
        }
      if ((hid == NULL && MHD_set_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Id", rq->host_id) != MHD_YES)
          || (hport == NULL
              && MHD_set_connection_value (c, MHD_HEADER_KIND, "E2b-Sandbox-Port", rq->host_port) != MHD_YES))
        {
          *ret = send_error (c, 500, "out of memory");
          return false;
        }
      return true;
    }
  *ret = MHD_YES;
  /* the sandbox: known, not another shape; anyone may ask for a public
     one, so the answer says no more than E2B's does */
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (!valid_id (id) || sbx_store_sandbox_get (h->store, id, &rec, &err) < 0)
    {
      *ret = proxy_error (c, 502, id, 0, "The sandbox was not found");
      return false;
    }
  struct sbx_ingress in;
  if (sbx_store_ingress_get (h->store, id, &in, &err) < 0)
    {
      sbx_sandbox_rec_free (&rec);
      *ret = send_fail (c, &err);
      return false;
    }
  if (!in.public)
    {
      char want[65];
      e2b_traffic_token (h, id, want);
      const char *tok = MHD_lookup_connection_value (c, MHD_HEADER_KIND, TRAFFIC_HEADER);
      if (tok == NULL || strlen (tok) != 64 || CRYPTO_memcmp (tok, want, 64) != 0)
        {
          sbx_sandbox_rec_free (&rec);
          *ret = proxy_error (c, 403, id, port,
                              tok ? "invalid traffic access token" : "missing traffic access token (header " TRAFFIC_HEADER ")");
          return false;
        }
    }
  int fd = sbx_port_connect (h->engine, id, (uint16_t) port, &err);
  if (fd < 0 && sbx_err_kind (&err) == SBX_E_PAUSED && proxy_paused (h, &rec))
    fd = sbx_port_connect (h->engine, id, (uint16_t) port, &err);
  sbx_sandbox_rec_free (&rec);
  if (fd < 0)
    {
      enum sbx_err_kind kind = sbx_err_kind (&err);
      *ret = kind == SBX_E_PAUSED ? proxy_error (c, 409, id, port, "The sandbox is paused")
             : kind == SBX_E_NOT_FOUND || kind == SBX_E_STOPPED
                 ? proxy_error (c, 502, id, 0, "The sandbox was not found")
                 : proxy_error (c, 502, id, port, err.msg);
      return false;
    }
  struct proxy *px = calloc (1, sizeof *px);
  if (px)
    {
      px->fd = fd;
      px->out = malloc (BUF_MAX);
      px->w = conn_waiter_new (h, c, fd);
    }
  if (px == NULL || px->out == NULL || px->w == NULL)
    {
      if (px)
        {
          px->refs = 1;
          proxy_unref (px);
        }
      else
        close (fd);
      *ret = send_error (c, 503, "out of memory");
      return false;
    }
  px->refs = 1;
  px->h = h;
  px->c = c;
  px->port = port;
  snprintf (px->id, sizeof px->id, "%s", id);
  if (!request_head (rq, px, &in, host))
    {
      proxy_unref (px);
      *ret = send_error (c, 431, "request headers too large");
      return false;
    }
  rq->proxy = px;
  return false;
}

/* ---- the answer ---- */

static int
on_header_field (http_parser *p, const char *at, size_t n)
{
  struct proxy *px = p->data;
  if (px->in_value || px->hdr_len == 0)
    {
      if (px->hdr_len + 2 > HEAD_MAX)
        return -1;
      if (px->hdr_len)
        px->hdr[px->hdr_len++] = '\0'; /* the end of the last value */
      px->in_value = false;
    }
  if (px->hdr_len + n + 2 > HEAD_MAX)
    return -1;
  memcpy (px->hdr + px->hdr_len, at, n);
  px->hdr_len += n;
  return 0;
}

static int
on_header_value (http_parser *p, const char *at, size_t n)
{
  struct proxy *px = p->data;
  if (!px->in_value)
    {
      if (px->hdr_len + 2 > HEAD_MAX)
        return -1;
      px->hdr[px->hdr_len++] = '\0'; /* the end of the name */
      px->in_value = true;
    }
  if (px->hdr_len + n + 2 > HEAD_MAX)
    return -1;
  memcpy (px->hdr + px->hdr_len, at, n);
  px->hdr_len += n;
  return 0;
}

static int
on_headers_complete (http_parser *p)
{
  struct proxy *px = p->data;
  if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
    {
      /* an interim answer (103 Early Hints): the real one follows */
      px->hdr_len = 0;
      px->in_value = false;
      return 0;
    }
  if (px->in_value || px->hdr_len)
    px->hdr[px->hdr_len++] = '\0';
  px->head_done = true;
  px->status_101 = p->status_code == 101;
  http_parser_pause (p, 1);
  return px->head_only ? 1 : 0;
}

static int
on_body (http_parser *p, const char *at, size_t n)
{
  struct proxy *px = p->data;
  if (px->body == NULL || n > px->body_max - px->body_len)
    return -1; /* cannot happen: decoding never makes more bytes than it reads */
  memcpy (px->body + px->body_len, at, n);
  px->body_len += n;
  return 0;
}

static int
on_message_complete (http_parser *p)
{
  struct proxy *px = p->data;
  if (px->head_done)
    px->msg_done = true;
  return 0;
}

static const http_parser_settings parser_settings = {
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* The answer's body for libmicrohttpd: decoded from what the sandbox
   sends, at most MAX bytes of it read at a time. */
static ssize_t
body_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  (void) pos;
  struct proxy *px = cls;
  for (;;)
    {
      if (px->msg_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
      if (px->in_off == px->in_len)
        {
          px->in_off = px->in_len = 0;
          size_t want = max < HEAD_MAX ? max : HEAD_MAX;
          ssize_t n = read (px->fd, px->in, want);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && errno == EAGAIN)
            return conn_wait (px->w, EPOLLIN) ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
          if (n < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
          if (n == 0)
            {
              /* the end: a body that runs to the close ends here */
              px->body = NULL;
              http_parser_execute (&px->parser, &parser_settings, NULL, 0);
              return px->msg_done ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
            }
          px->in_len = (size_t) n;
        }
      size_t n = px->in_len - px->in_off;
      if (n > max)
        n = max;
      px->body = buf;
      px->body_len = 0;
      px->body_max = max;
      size_t used = http_parser_execute (&px->parser, &parser_settings, px->in + px->in_off, n);
      px->body = NULL;
      if (HTTP_PARSER_ERRNO (&px->parser) != HPE_OK)
        return MHD_CONTENT_READER_END_WITH_ERROR;
      px->in_off += used;
      if (px->msg_done)
        px->in_off = px->in_len; /* anything after the answer is not the client's */
      if (px->body_len)
        return (ssize_t) px->body_len;
    }
}

static void
body_free (void *cls)
{
  proxy_unref (cls);
}

/* ---- upgraded connections: the relay ---- */

struct pair;

struct end {
  struct pair *pp;
  int fd;
  bool read_eof;   /* nothing more comes from this end */
  bool shut;       /* no more goes to it */
};

struct pipebuf {
  char *data;
  size_t size, off, len;
};

/* An upgraded client connection and its sandbox connection. */
struct pair {
  struct end e[2];                 /* 0: the client, 1: the sandbox */
  struct pipebuf to[2];            /* bytes waiting to be written to e[i] */
  struct MHD_UpgradeResponseHandle *urh;
  int tls_fd;                      /* with TLS, the client's TCP socket (libmicrohttpd's), else -1 */
  uint64_t linger_ns;              /* the sandbox's end is done: when the pair ends (0: not yet) */
  uint64_t linger_cap_ns;          /* and when it ends whatever libmicrohttpd still holds */
  bool closed;
  struct pair *prev, *next;        /* in the relay's list */
  struct pair *done_next;          /* closed in this round of the loop */
};

struct relay {
  int ep, stop_fd;
  pthread_t thread;
  pthread_mutex_t lock; /* the list and the count */
  struct pair *pairs;
  unsigned n;
  bool started;
};

static void
pair_close (struct relay *r, struct pair *pp)
{
  if (pp->closed)
    return;
  pp->closed = true;
  epoll_ctl (r->ep, EPOLL_CTL_DEL, pp->e[0].fd, NULL);
  epoll_ctl (r->ep, EPOLL_CTL_DEL, pp->e[1].fd, NULL);
  close (pp->e[1].fd);
  /* libmicrohttpd (0.9.75) does not always end an upgraded TLS
     connection on this close, which left clients of an ended sandbox
     waiting for ever: the TCP socket is shut down first (libmicrohttpd
     still closes it; what the kernel holds still goes out) */
  if (pp->tls_fd >= 0)
    shutdown (pp->tls_fd, SHUT_RDWR);
  MHD_upgrade_action (pp->urh, MHD_UPGRADE_ACTION_CLOSE);
}

static void
pair_free (struct relay *r, struct pair *pp)
{
  pthread_mutex_lock (&r->lock);
  if (pp->prev)
    pp->prev->next = pp->next;
  else
    r->pairs = pp->next;
  if (pp->next)
    pp->next->prev = pp->prev;
  r->n--;
  pthread_mutex_unlock (&r->lock);
  free (pp->to[0].data);
  free (pp->to[1].data);
  free (pp);
}

/* What end I waits for: to read while the other way has room, to write
   while bytes wait for it. */
static void
pair_watch (struct relay *r, struct pair *pp, int i, int op)
{
  struct pipebuf *out = &pp->to[1 - i], *in = &pp->to[i];
  uint32_t ev = 0;
  if (!pp->e[i].read_eof && out->len < out->size)
    ev |= EPOLLIN;
  if (in->len > 0 && !pp->e[i].shut)
    ev |= EPOLLOUT;
  struct epoll_event e = { .events = ev, .data.ptr = &pp->e[i] };
  epoll_ctl (r->ep, op, pp->e[i].fd, &e);
}

/* Move what can be moved; false when the pair is over. */
static bool
pair_pump (struct pair *pp)
{
  for (int i = 0; i < 2; i++)
    {
      struct end *src = &pp->e[i], *dst = &pp->e[1 - i];
      struct pipebuf *b = &pp->to[1 - i];
      for (;;)
        {
          /* write what waits, then read more */
          while (b->len > 0 && !dst->shut)
            {
              ssize_t n = send (dst->fd, b->data + b->off, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
              if (n < 0 && errno == EINTR)
                continue;
              if (n < 0 && errno == EAGAIN)
                break;
              if (n <= 0)
                return false;
              b->off += (size_t) n;
              b->len -= (size_t) n;
            }
          if (b->len == 0)
            b->off = 0;
          if (b->len > 0 || src->read_eof || dst->shut)
            break;
          ssize_t n = recv (src->fd, b->data, b->size, MSG_DONTWAIT);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && errno == EAGAIN)
            break;
          if (n < 0)
            return false;
          if (n == 0)
            {
              src->read_eof = true;
              break;
            }
          b->len = (size_t) n;
        }
      if (src->read_eof && b->len == 0 && !dst->shut)
        {
          shutdown (dst->fd, SHUT_WR);
          dst->shut = true;
        }
    }
  /* The sandbox's end is done and all it sent is passed on: the client
     has a while to take it and close (relay_main ends the pair then; a
     half-close does not reach a TLS client, as libmicrohttpd's
     forwarding of an upgraded TLS connection does not pass it on) */
  if (pp->e[1].read_eof && pp->to[0].len == 0 && pp->linger_ns == 0)
    {
      uint64_t now = sbx_now_ns ();
      pp->linger_ns = now + (uint64_t) RELAY_LINGER_MS * 1000000u;
      pp->linger_cap_ns = now + (uint64_t) RELAY_LINGER_MAX_MS * 1000000u;
    }
  return !(pp->e[0].read_eof && pp->e[1].read_eof && pp->to[0].len == 0 && pp->to[1].len == 0);
}

static void *
relay_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-portrelay");
  struct relay *r = arg;
  struct epoll_event ev[64];
  for (;;)
    {
      /* the next end of a lingering pair */
      uint64_t now = sbx_now_ns (), next = 0;
      pthread_mutex_lock (&r->lock);
      for (struct pair *pp = r->pairs; pp; pp = pp->next)
        if (pp->linger_ns && !pp->closed && (next == 0 || pp->linger_ns < next))
          next = pp->linger_ns;
      pthread_mutex_unlock (&r->lock);
      int wait_ms = next == 0 ? -1 : next <= now ? 0 : (int) ((next - now) / 1000000u) + 1;
      int n = epoll_wait (r->ep, ev, 64, wait_ms);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          sbx_log_fields (SBX_LOG_ERROR, "port relay stopped", "error", strerror (errno), NULL);
          return NULL;
        }
      struct pair *done = NULL;
      for (int i = 0; i < n; i++)
        {
          struct end *e = ev[i].data.ptr;
          if (e == NULL)
            return NULL; /* stopping: relay_stop closes the pairs */
          struct pair *pp = e->pp;
          if (pp->closed)
            continue;
          if (!pair_pump (pp) || (ev[i].events & EPOLLERR))
            {
              pair_close (r, pp);
              /* freed after this round: later events of it may follow */
              pp->done_next = done;
              done = pp;
              continue;
            }
          pair_watch (r, pp, 0, EPOLL_CTL_MOD);
          pair_watch (r, pp, 1, EPOLL_CTL_MOD);
        }
      /* lingering pairs whose time is up (a TLS one waits while
         libmicrohttpd has not taken all it was given, up to a bound) */
      now = sbx_now_ns ();
      pthread_mutex_lock (&r->lock);
      for (struct pair *pp = r->pairs; pp; pp = pp->next)
        {
          if (pp->closed || pp->linger_ns == 0 || now < pp->linger_ns)
            continue;
          int unread = 0;
          if (pp->tls_fd >= 0 && ioctl (pp->e[0].fd, SIOCOUTQ, &unread) == 0 && unread > 0 && now < pp->linger_cap_ns)
            {
              pp->linger_ns = now + 20000000u; /* look again in 20 ms */
              continue;
            }
          pp->linger_ns = 0;
          pp->done_next = done;
          done = pp;
        }
      pthread_mutex_unlock (&r->lock);
      while (done)
        {
          pair_close (r, done); /* closed already, unless its linger ended */
          struct pair *next = done->done_next;
          pair_free (r, done);
          done = next;
        }
    }
}

/* libmicrohttpd has sent the 101: the client's socket is ours to relay. */
static void
upgraded (void *cls, struct MHD_Connection *c, void *con_cls, const char *extra_in, size_t extra_in_size,
          MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
  (void) con_cls;
  struct proxy *px = cls;
  struct relay *r = px->h->relay;
  struct pair *pp = calloc (1, sizeof *pp);
  size_t s0 = extra_in_size > RELAY_BUF ? extra_in_size : RELAY_BUF; /* toward the sandbox */
  size_t rest = px->in_len - px->in_off;
  size_t s1 = rest > RELAY_BUF ? rest : RELAY_BUF;                   /* toward the client */
  if (pp)
    {
      pp->to[1].data = malloc (s0);
      pp->to[0].data = malloc (s1);
    }
  if (pp == NULL || pp->to[0].data == NULL || pp->to[1].data == NULL)
    {
      if (pp)
        {
          free (pp->to[0].data);
          free (pp->to[1].data);
          free (pp);
        }
      MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
      proxy_unref (px);
      return;
    }
  pp->to[1].size = s0;
  pp->to[0].size = s1;
  memcpy (pp->to[1].data, extra_in, extra_in_size);
  pp->to[1].len = extra_in_size;
  memcpy (pp->to[0].data, px->in + px->in_off, rest);
  pp->to[0].len = rest;
  pp->urh = urh;
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (c, MHD_CONNECTION_INFO_CONNECTION_FD);
  pp->tls_fd = ci && ci->connect_fd != sock ? ci->connect_fd : -1;
  pp->e[0] = (struct end) { .pp = pp, .fd = sock };
  pp->e[1] = (struct end) { .pp = pp, .fd = px->fd };
  px->fd = -1; /* the pair's now */
  conn_waiter_free (px->w);
  px->w = NULL;
  proxy_unref (px);
  fcntl (sock, F_SETFL, fcntl (sock, F_GETFL) | O_NONBLOCK);
  pthread_mutex_lock (&r->lock);
  pp->next = r->pairs;
  if (r->pairs)
    r->pairs->prev = pp;
  r->pairs = pp;
  /* epoll_ctl under the lock: relay_stop must not miss the pair */
  pair_watch (r, pp, 0, EPOLL_CTL_ADD);
  pair_watch (r, pp, 1, EPOLL_CTL_ADD);
  pthread_mutex_unlock (&r->lock);
}

int
proxy_start (struct http_server *h, struct sbx_err *err)
{
  if (h->domain[0] == '\0')
    return 0;
  struct relay *r = calloc (1, sizeof *r);
  if (r == NULL)
    return sbx_fail (err, ENOMEM, "port relay");
  pthread_mutex_init (&r->lock, NULL);
  r->ep = epoll_create1 (EPOLL_CLOEXEC);
  r->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  if (r->ep < 0 || r->stop_fd < 0 || epoll_ctl (r->ep, EPOLL_CTL_ADD, r->stop_fd, &ev) < 0
      || pthread_create (&r->thread, NULL, relay_main, r) != 0)
    {
      int e = errno;
      if (r->ep >= 0)
        close (r->ep);
      if (r->stop_fd >= 0)
        close (r->stop_fd);
      pthread_mutex_destroy (&r->lock);
      free (r);
      return sbx_fail (err, e, "port relay");
    }
  r->started = true;
  h->relay = r;
  return 0;
}

/* Close every upgraded connection and end the thread (before
   libmicrohttpd stops: it wants its upgraded sockets back). */
void
proxy_stop (struct http_server *h)
{
  struct relay *r = h->relay;
  if (r == NULL)
    return;
  uint64_t one = 1;
  if (write (r->stop_fd, &one, sizeof one) < 0)
    sbx_log_fields (SBX_LOG_WARN, "port relay", "error", strerror (errno), NULL);
  pthread_join (r->thread, NULL);
  while (r->pairs)
    {
      struct pair *pp = r->pairs;
      pair_close (r, pp);
      pair_free (r, pp);
    }
  close (r->ep);
  close (r->stop_fd);
  pthread_mutex_destroy (&r->lock);
  free (r);
  h->relay = NULL;
}

/* Queue the answer whose head was read. */
static enum MHD_Result
answer (struct request *rq, struct proxy *px)
{
  struct MHD_Connection *c = rq->c;
  unsigned status = px->parser.status_code;
  struct MHD_Response *r;
  bool upgrade = px->status_101 && px->upgrade;
  if (px->status_101 && !px->upgrade)
    return proxy_error (c, 502, px->id, px->port, "the sandbox's server answered 101 to a request without Upgrade");
  if (upgrade)
    {
      pthread_mutex_lock (&px->h->relay->lock);
      bool room = px->h->relay->n < RELAY_MAX;
      if (room)
        px->h->relay->n++;
      pthread_mutex_unlock (&px->h->relay->lock);
      if (!room)
        return proxy_error (c, 503, px->id, px->port, "too many upgraded connections; retry later");
      atomic_fetch_add (&px->refs, 1);
      r = MHD_create_response_for_upgrade (upgraded, px);
      if (r == NULL)
        {
          pthread_mutex_lock (&px->h->relay->lock);
          px->h->relay->n--;
          pthread_mutex_unlock (&px->h->relay->lock);
          proxy_unref (px);
          return MHD_NO;
        }
    }
  else if (px->head_only || status == 204 || status == 304)
    {
      r = MHD_create_response_from_buffer (0, NULL, MHD_RESPMEM_PERSISTENT);
    }
  else
    {
      bool sized = !(px->parser.flags & F_CHUNKED) && px->parser.content_length != ULLONG_MAX;
      atomic_fetch_add (&px->refs, 1);
      r = MHD_create_response_from_callback (sized ? px->parser.content_length : MHD_SIZE_UNKNOWN, 32 * 1024,
                                             body_read, px, body_free);
      if (r == NULL)
        {
          proxy_unref (px);
          return MHD_NO;
        }
      if (sized && px->parser.content_length == 0)
        px->msg_done = true;
    }
  for (size_t off = 0; off < px->hdr_len;)
    {
      const char *name = px->hdr + off;
      off += strlen (name) + 1;
      const char *value = off < px->hdr_len ? px->hdr + off : "";
      off += strlen (value) + 1;
      bool keep = upgrade ? strcasecmp (name, "Connection") != 0 && strcasecmp (name, "Content-Length") != 0
                                && strcasecmp (name, "Transfer-Encoding") != 0
                          : !hop_header (name, NULL);
      if (keep)
        MHD_add_response_header (r, name, value);
    }
  return queue_response (c, status, r);
}

/* Send what waits for the sandbox; false on a failure (answered). */
static int
flush_out (struct proxy *px)
{
  while (px->out_off < px->out_len)
    {
      ssize_t n = send (px->fd, px->out + px->out_off, px->out_len - px->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return 0;
      if (n < 0)
        return -1;
      px->out_off += (size_t) n;
    }
  px->out_off = px->out_len = 0;
  return 1;
}

enum MHD_Result
proxy_step (struct request *rq, const char *data, size_t *size)
{
  struct proxy *px = rq->proxy;
  struct MHD_Connection *c = rq->c;
  if (px->answered)
    {
      *size = 0;
      return MHD_YES;
    }
  if (!px->connected)
    {
      struct pollfd pf = { px->fd, POLLOUT, 0 };
      if (poll (&pf, 1, 0) == 0)
        return conn_wait (px->w, EPOLLOUT) ? MHD_YES : MHD_NO;
      int e = 0;
      socklen_t len = sizeof e;
      if (getsockopt (px->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        e = errno;
      if (e)
        {
          px->answered = true;
          return e == ECONNREFUSED ? proxy_error (c, 502, px->id, px->port, "The sandbox is running but port is not open")
                                   : proxy_error (c, 502, px->id, px->port, strerror (e));
        }
      px->connected = true;
    }
  for (;;)
    {
      /* the body into the buffer, as far as it has room */
      if (*size && !px->body_done)
        {
          size_t room = BUF_MAX - px->out_len;
          if (px->chunked)
            {
              size_t n = room > 32 ? room - 32 : 0;
              if (n > *size)
                n = *size;
              if (n)
                {
                  out_printf (px, "%zx\r\n", n);
                  out_add (px, data, n);
                  out_add (px, "\r\n", 2);
                  data += n;
                  *size -= n;
                }
            }
          else
            {
              size_t n = room < *size ? room : *size;
              out_add (px, data, n);
              data += n;
              *size -= n;
            }
        }
      else if (*size == 0 && !px->body_done)
        {
          if (px->chunked && !out_add (px, "0\r\n\r\n", 5))
            goto wait_out;
          px->body_done = true;
        }
      int f = flush_out (px);
      if (f < 0)
        {
          px->answered = true;
          return proxy_error (c, 502, px->id, px->port, "the sandbox's server closed the connection");
        }
      if (f == 0)
        goto wait_out;
      if (*size)
        continue;     /* all sent: room for more of this piece */
      if (!px->body_done)
        return MHD_YES; /* libmicrohttpd calls again with more, or with the end */
      break;
    }
  /* the answer's head */
  if (px->in == NULL)
    {
      px->in = malloc (HEAD_MAX);
      px->hdr = malloc (HEAD_MAX);
      if (px->in == NULL || px->hdr == NULL)
        {
          px->answered = true;
          return send_error (c, 503, "out of memory");
        }
      http_parser_init (&px->parser, HTTP_RESPONSE);
      px->parser.data = px;
    }
  while (!px->head_done)
    {
      if (px->in_len == HEAD_MAX)
        {
          px->answered = true;
          return proxy_error (c, 502, px->id, px->port, "the sandbox's answer head is too large");
        }
      ssize_t n = read (px->fd, px->in + px->in_len, HEAD_MAX - px->in_len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return conn_wait (px->w, EPOLLIN) ? MHD_YES : MHD_NO;
      if (n <= 0)
        {
          px->answered = true;
          return proxy_error (c, 502, px->id, px->port, "the sandbox's server closed the connection without an answer");
        }
      size_t used = http_parser_execute (&px->parser, &parser_settings, px->in + px->in_len, (size_t) n);
      px->in_len += (size_t) n;
      enum http_errno he = HTTP_PARSER_ERRNO (&px->parser);
      if (px->head_done)
        {
          /* paused in on_headers_complete, just before the head's last
             LF: the body parse goes on from there; an upgraded
             connection's bytes start after it */
          px->in_off = px->in_len - (size_t) n + used;
          http_parser_pause (&px->parser, 0);
          if (px->status_101 && px->in_off < px->in_len)
            px->in_off++;
          break;
        }
      if (he != HPE_OK)
        {
          px->answered = true;
          return proxy_error (c, 502, px->id, px->port, "the sandbox's server sent a malformed answer");
        }
    }
  px->answered = true;
  return answer (rq, px);
wait_out:
  return conn_wait (px->w, EPOLLOUT) ? MHD_YES : MHD_NO;
}
