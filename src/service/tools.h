/*
 * tools.h - the built-in code-execution tools ("code-exec"), bound to a
 * sandbox of an organisation: what the MCP server (/mcp, `sbx mcp`) lists
 * and calls, and what the agent loop of seed 000's sessions runs for a
 * model's tool_use.  One implementation for both.
 *
 * Arguments and results are JSON (jansson), in MCP's shapes: a tool's
 * inputSchema, and a CallToolResult {content: [...], isError, ...}.  A
 * tool that fails (a bad argument, a command that cannot start, a
 * sandbox that ended) answers a result with isError true, never a failed
 * call; the call itself fails (-1) only when the daemon cannot answer at
 * all (out of memory).
 */
#ifndef SBX_SERVICE_TOOLS_H
#define SBX_SERVICE_TOOLS_H

#include <jansson.h>

#include "service.h"

/* The tools, as MCP's tools/list "tools" array (a new reference). */
json_t *sbx_tools_list (void);

/* Call tool NAME with ARGS (an object, borrowed) for ORG.  SANDBOX_ID: the
   sandbox the tools are bound to (a session's), or NULL when the caller
   names it in ARGS ("sandbox_id") or creates one (create_sandbox).
   *RESULT gets a CallToolResult (a new reference). */
int sbx_tool_call (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, const char *name,
                   json_t *args, json_t **result, struct sbx_err *err);

#endif
