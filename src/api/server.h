/*
 * server.h - the HTTP API server (server.c).
 */
#ifndef SBX_API_SERVER_H
#define SBX_API_SERVER_H

#include <stdbool.h>
#include <sys/socket.h>

#include "../common/error.h"
#include "../core/sandbox.h"
#include "../service/outbound.h"

struct http_server;
struct sbx_store;
struct sbx_webhooks;
struct sbx_service;
struct sbx_agents;

struct sbx_http_config {
  struct sbx_engine *engine;
  struct sbx_store *store;
  struct sbx_webhooks *webhooks;
  const struct sbx_outbound *outbound; /* what the operator opened to tenants' URLs (copied); NULL: nothing */
  struct sbx_service *svc;
  struct sbx_agents *agents; /* seed 000's agents and sessions */
  const char *const *images; /* seed 002's approved images, "ALIAS=TEMPLATE", NULL-terminated; NULL: defaults */
  const struct sockaddr *addr;
  const char *docs_dir;  /* where openapi.yaml is */
  const char *state_dir; /* for spooling uploads */
  unsigned conn_timeout_s; /* a connection that sends nothing for this long (headers, keep-alive) is closed */
  unsigned conn_per_ip;  /* connections one client address may hold; 0: no cap */
  unsigned terminal_ttl_s; /* the life of a terminalUrl's token; 0: SBX_TERMINAL_TTL_S (terminal.h) */
  const char *domain;      /* sandbox ports are reached at PORT-ID.DOMAIN (proxy.c); NULL: not at all */
  const char *tls_cert, *tls_key; /* PEM files: serve HTTPS; NULL: plain HTTP */
  const char *metrics_token; /* GET /metrics with "Authorization: Bearer" this; NULL: not on this address */
};

/* Is S a --domain: a DNS name (letters, digits, '-', dots), optionally
   ":PORT", at most SBX_DOMAIN_MAX - 1 bytes? */
#define SBX_DOMAIN_MAX 200
bool sbx_http_domain_valid (const char *s);

/* Defaults of the two settings above (sbxd serve --conn-timeout, --conn-per-ip). */
#define SBX_HTTP_CONN_TIMEOUT_S 30
#define SBX_HTTP_CONN_PER_IP 256
/* Default life of a seed 004 terminalUrl's token (sbxd serve --terminal-ttl). */
#define SBX_TERMINAL_TTL_S 600

/* The operator's token for GET /metrics (sbxd serve --metrics-token):
   SBX_METRICS_TOKEN_MIN to SBX_METRICS_TOKEN_MAX - 1 printable ASCII
   characters, no space. */
#define SBX_METRICS_TOKEN_MIN 16
#define SBX_METRICS_TOKEN_MAX 257
bool sbx_metrics_token_valid (const char *s);

/* GET /metrics alone, without any credential, on an address of its own
   (sbxd serve --metrics-listen), on one thread of its own. */
struct sbx_metrics_listener;
struct sbx_metrics_listener *sbx_metrics_listen (const struct sockaddr *addr, struct sbx_engine *engine,
                                                 struct sbx_store *store, struct sbx_err *err);
void sbx_metrics_stop (struct sbx_metrics_listener *m);

struct http_server *sbx_http_start (const struct sbx_http_config *cfg, struct sbx_err *err);
/* Stop serving.  False when requests were still being handled after a
   grace period: their threads use the engine, which must then be left as
   it is (the process ends). */
bool sbx_http_stop (struct http_server *h);

#endif
