/*
 * http.h - the HTTP API server (http.c).
 */
#ifndef SBX_DAEMON_HTTP_H
#define SBX_DAEMON_HTTP_H

#include <sys/socket.h>

#include "../common/error.h"
#include "../core/sandbox.h"

struct http_server;

struct http_server *sbx_http_start (struct sbx_engine *engine, const struct sockaddr *addr, struct sbx_err *err);
void sbx_http_stop (struct http_server *h);

#endif
