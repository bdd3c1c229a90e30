/*
 * agents.h - seed 000's agents and sessions (agents.c): an agent is a
 * model, a system prompt and tools; a session is an agent bound to a
 * sandbox of its own, and a conversation whose messages run the agent
 * loop.
 *
 * The loop, for one user message: the model gets the system prompt, the
 * whole conversation and the tools; each tool_use it answers is run by
 * the built-in code-exec tools (tools.h) in the session's sandbox, and
 * the results go back to it, until it ends its turn.  Everything that
 * happens is a session event in the store, written as it happens (so a
 * stream can follow it, and a restart loses nothing recorded).  The loop
 * is bounded: model turns (the agent's max_turns, at most
 * SBX_AGENT_TURNS_CAP), a wall clock, and the tokens of one message; a
 * provider's error or timeout ends it with a "failed" event, and the
 * session goes on.
 *
 * An agent may also name remote MCP servers by URL (Streamable HTTP,
 * mcp_client.h): {type:"mcp", url, name, headers}.  At the start of each
 * message's loop the daemon opens an MCP session with each and lists its
 * tools, which the model is offered as NAME__TOOL (within
 * SBX_AGENT_REMOTE_TOOLS_MAX and SBX_AGENT_SCHEMA_MAX); a server that
 * cannot be reached gives an "mcp_server_error" event and no tools, and
 * a call that fails or times out a tool result with is_error.  The URL
 * goes through the outbound guard as webhooks' do: a literal address the
 * platform denies (or a loopback name) is refused when the agent is
 * created, a name resolving to one at each request.
 *
 * A session ends when its sandbox does (its timeout, a DELETE of the
 * session, the sandbox killed by any API) and is kept as a record.
 *
 * The operator sets the bounds through the daemon's environment:
 *   SBXD_AGENT_MAX_TURNS    default model turns of an agent (25)
 *   SBXD_AGENT_TIMEOUT_S    wall clock of one message's loop (600)
 *   SBXD_AGENT_MAX_TOKENS   input + output tokens of one message (1000000)
 *   SBXD_MODEL_TIMEOUT_S    one model request (120)
 *   SBXD_MCP_TIMEOUT_S      one request to a remote MCP server (60)
 * and the providers as models.h says.
 */
#ifndef SBX_SERVICE_AGENTS_H
#define SBX_SERVICE_AGENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "service.h"
#include "store_agents.h"

#define SBX_AGENT_TURNS_CAP 100u        /* model turns of one message */
#define SBX_AGENT_LOOPS_MAX 32u         /* loops running at once in the daemon */
#define SBX_AGENT_TEXT_MAX (100u << 10) /* bytes of a name, system prompt or user message */
#define SBX_AGENT_TOOLS_MAX 16u         /* entries of an agent's tools */
#define SBX_AGENT_CALLS_MAX 16u         /* tool calls run in one model turn */
#define SBX_AGENT_RESULT_TEXT_MAX (256u << 10) /* text of a tool result kept and shown to the model */
#define SBX_AGENT_IMAGES_MAX 8u         /* images of one tool result */
#define SBX_AGENT_IMAGE_MAX (5u << 20)  /* base64 bytes of one image */
#define SBX_AGENT_CONTEXT_MAX (16u << 20) /* bytes of the conversation sent to the model */
#define SBX_AGENT_REPLY_TOKENS_MAX 64000u /* an agent's model.max_tokens */
#define SBX_AGENT_BUILTIN_SERVER "code-exec"
#define SBX_AGENT_SERVERS_MAX 4u        /* remote MCP servers of an agent */
#define SBX_AGENT_SERVER_NAME_MAX 32u   /* bytes of a remote server's name */
#define SBX_AGENT_REMOTE_TOOLS_MAX 64u  /* remote tools offered to the model, all servers */
#define SBX_AGENT_SCHEMA_MAX (16u << 10) /* bytes of a remote tool's inputSchema */
#define SBX_AGENT_DESCRIPTION_MAX 2048u /* bytes of a remote tool's description shown */

struct sbx_agents;
struct sbx_outbound;

/* The agents of SVC: providers and bounds from the environment; a session
   a previous daemon left answering gets a "failed" event ("the daemon
   restarted ...") and is idle again.  OB (copied; NULL: nothing opened)
   is what the operator opened to tenants' URLs (remote MCP servers). */
int sbx_agents_open (struct sbx_service *svc, const struct sbx_outbound *ob, struct sbx_agents **out,
                     struct sbx_err *err);
/* Cancel the loops under way (their model requests stop, and they end
   with a "failed" event); before the HTTP server stops. */
void sbx_agents_stop (struct sbx_agents *a);
void sbx_agents_close (struct sbx_agents *a);

/* ---- agents ---- */

struct sbx_agent_def {
  const char *name;
  const char *model;          /* a name a provider serves */
  uint32_t max_tokens;        /* of a model reply; 0: 4096 */
  const char *system;         /* may be NULL */
  json_t *tools;              /* [{type:"mcp", server:"code-exec"} | {type:"mcp", url, name, headers}], may be NULL */
  uint32_t max_turns;         /* 0: the operator's default */
};

/* Check DEF (SBX_E_INVALID with a message saying what is wrong: a model
   no provider serves, a tool that is neither the built-in server nor a
   remote one the outbound guard allows) and keep
   it as ORG's agent; D gets its record, whose JSON is the agent's
   definition. */
int sbx_agent_create (struct sbx_agents *a, const struct sbx_org *org, const struct sbx_agent_def *def,
                      struct sbx_agent_doc *d, struct sbx_err *err);

/* ---- sessions ---- */

/* A session of ORG's agent AGENT_ID with a new sandbox of TEMPLATE and
   TIMEOUT_S (the sandbox's lifetime; 0: 300). */
int sbx_session_create (struct sbx_agents *a, const struct sbx_org *org, const char *agent_id, const char *tmpl,
                        uint32_t timeout_s, struct sbx_session_rec *out, struct sbx_err *err);
/* ORG's session ID, ended when its sandbox has ended (recorded so). */
int sbx_session_get (struct sbx_agents *a, const struct sbx_org *org, const char *id, struct sbx_session_rec *out,
                     struct sbx_err *err);
/* ORG's sessions, newest first, each brought up to date as above. */
int sbx_session_list (struct sbx_agents *a, const struct sbx_org *org, struct sbx_session_rec **v, size_t *n,
                      struct sbx_err *err);
/* Kill the session's sandbox and end it ("deleted"); the record stays.
   An ended session is left as it is. */
int sbx_session_delete (struct sbx_agents *a, const struct sbx_org *org, const char *id, struct sbx_err *err);

/* ---- messages and the loop ---- */

struct sbx_agent_run;

/* Record user message CONTENT in ORG's session ID and make the session
   "running"; *RUN is the loop to run (sbx_agent_run_loop), *BEFORE the
   seq of the last event before the message.  SBX_E_CONFLICT while the
   session answers another message, SBX_E_STOPPED once it has ended,
   SBX_E_UNAVAILABLE when SBX_AGENT_LOOPS_MAX loops run. */
int sbx_session_message (struct sbx_agents *a, const struct sbx_org *org, const char *id, const char *content,
                         struct sbx_agent_run **run, int64_t *before, struct sbx_err *err);
/* Run the loop to its end (any thread), then free RUN. */
void sbx_agent_run_loop (struct sbx_agent_run *run);

/* Whether session ID's loop is running now. */
bool sbx_session_running (struct sbx_agents *a, const char *id);
/* Wait at most TIMEOUT_MS for an event after seq AFTER of session ID, or
   for its loop to end. */
void sbx_session_wait (struct sbx_agents *a, const char *id, int64_t after, uint32_t timeout_ms);

/* A session event as the API shows it: its fields and id, seq, type,
   created_at (a new reference; NULL when out of memory). */
json_t *sbx_session_event_json (const struct sbx_session_event *e);

#endif
