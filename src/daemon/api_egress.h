/*
 * api_egress.h - the egress audit log of a sandbox over HTTP
 * (api_egress.c).
 */
#ifndef SBX_DAEMON_API_EGRESS_H
#define SBX_DAEMON_API_EGRESS_H

#include "http_internal.h"

/* GET /sandboxes/:id/network/log[?after=SEQ&limit=N] of a sandbox the
   caller owns: {"records": [...], "dropped": N}. */
enum MHD_Result egress_log_answer (struct http_server *h, struct MHD_Connection *c, const char *id);

#endif
