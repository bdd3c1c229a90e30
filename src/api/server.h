/*
 * server.h - the HTTP API server (server.c).
 */
#ifndef SBX_API_SERVER_H
#define SBX_API_SERVER_H

#include <sys/socket.h>

#include "../common/error.h"
#include "../core/sandbox.h"
#include "../service/outbound.h"

struct http_server;
struct sbx_store;
struct sbx_webhooks;
struct sbx_service;

struct sbx_http_config {
  struct sbx_engine *engine;
  struct sbx_store *store;
  struct sbx_webhooks *webhooks;
  const struct sbx_outbound *outbound; /* what the operator opened to tenants' URLs (copied); NULL: nothing */
  struct sbx_service *svc;
  const char *const *images; /* seed 002's approved images, "ALIAS=TEMPLATE", NULL-terminated; NULL: defaults */
  const struct sockaddr *addr;
  const char *docs_dir;  /* where openapi.yaml is */
  const char *state_dir; /* for spooling uploads */
};

struct http_server *sbx_http_start (const struct sbx_http_config *cfg, struct sbx_err *err);
void sbx_http_stop (struct http_server *h);

#endif
