/*
 * mcp_client.h - a client of remote MCP servers over Streamable HTTP
 * (spec revision 2025-06-18): what the agent loop uses for an agent's
 * tools {type:"mcp", url, name, headers} (mcp_client.c).
 *
 * One struct sbx_mcp_client is one MCP session with one server:
 * sbx_mcp_connect sends initialize and notifications/initialized, keeps
 * the Mcp-Session-Id the server gives and the protocol version it
 * agreed; sbx_mcp_list_tools and sbx_mcp_call_tool are tools/list and
 * tools/call; sbx_mcp_close ends the session (DELETE) and frees.  The
 * server may answer a request with JSON or with an SSE stream; in a
 * stream, the one message answering the request is taken (the transfer
 * stops there) and everything else (notifications, the server's own
 * requests, which this client does not serve) is skipped.  A session the
 * server forgot (404) is opened again once.
 *
 * Every request goes through the outbound guard (outbound.h) with the
 * ranges the operator opened, as webhooks do: the name is resolved and
 * checked at each request, the connection tied to the checked address,
 * no redirects, no proxy.  Bounds: SBX_MCP_ANSWER_MAX bytes of an answer,
 * the caller's time per request, pages of tools/list.
 *
 * Errors (kind SBX_E_UNAVAILABLE, SBX_E_FORBIDDEN when the guard refused)
 * carry a message fit for the tenant: the server's status or JSON-RPC
 * error, never an address the operator opened.
 */
#ifndef SBX_SERVICE_MCP_CLIENT_H
#define SBX_SERVICE_MCP_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"
#include "outbound.h"

#define SBX_MCP_PROTOCOL "2025-06-18"
#define SBX_MCP_ANSWER_MAX (8u << 20) /* bytes of one answer (JSON or SSE) */
#define SBX_MCP_LIST_PAGES_MAX 8u     /* pages of one tools/list */
#define SBX_MCP_LIST_TOOLS_MAX 256u   /* tools of one tools/list, all pages */
#define SBX_MCP_HEADERS_MAX 16u       /* headers an agent sets for a server */
#define SBX_MCP_HEADER_MAX 4096u      /* bytes of one such header's value */

struct sbx_mcp_client;

/* Open an MCP session with the server at URL, sending HEADERS ({name:
   value}, borrowed, may be NULL) with every request.  TIMEOUT_MS bounds
   each request; CANCEL (may be NULL) stops one when it becomes true. */
int sbx_mcp_connect (const struct sbx_outbound *ob, const char *url, json_t *headers, uint32_t timeout_ms,
                     const volatile bool *cancel, struct sbx_mcp_client **out, struct sbx_err *err);
/* The server's tools, all pages (at most SBX_MCP_LIST_TOOLS_MAX): *TOOLS
   gets MCP's tools array (a new reference). */
int sbx_mcp_list_tools (struct sbx_mcp_client *c, json_t **tools, struct sbx_err *err);
/* tools/call NAME with ARGS (an object, borrowed) within TIMEOUT_MS (0:
   the client's).  *RESULT gets the server's CallToolResult (an object
   with a content array; a new reference), isError or not. */
int sbx_mcp_call_tool (struct sbx_mcp_client *c, const char *name, json_t *args, uint32_t timeout_ms, json_t **result,
                       struct sbx_err *err);
/* End the session (DELETE, a short bounded try) and free C (may be NULL). */
void sbx_mcp_close (struct sbx_mcp_client *c);

/* Check HEADERS as an agent gives them for a server: an object of at most
   SBX_MCP_HEADERS_MAX string values, names HTTP tokens, values without
   line breaks, none of the headers the transport sets itself. */
int sbx_mcp_headers_check (json_t *headers, struct sbx_err *err);

/* The answer to request ID in BODY (LEN bytes) of media type CTYPE
   (application/json or text/event-stream): *MSG gets the JSON-RPC
   response (a new reference).  Exposed for the fuzz harness; the client
   parses streams as they arrive with the same code. */
int sbx_mcp_answer_parse (const char *ctype, const char *body, size_t len, json_int_t id, json_t **msg,
                          struct sbx_err *err);

#endif
