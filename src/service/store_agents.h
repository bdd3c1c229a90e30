/*
 * store_agents.h - seed 000's records in the store (store_agents.c):
 * agents, sessions and session events.
 *
 *   agents          an agent's definition (name, model, system prompt,
 *                   tools, limits) as a JSON document; immutable
 *   sessions        one per session: its agent (a copy of the definition
 *                   taken at create, so deleting the agent leaves its
 *                   sessions whole), its sandbox, status and token usage
 *   session_events  what happened in a session, in order (seq): user and
 *                   assistant messages, tool calls and results, failures;
 *                   each a JSON document
 *
 * Strings returned in structs are owned by the struct (free with the
 * matching *_free).
 */
#ifndef SBX_SERVICE_STORE_AGENTS_H
#define SBX_SERVICE_STORE_AGENTS_H

#include <stdint.h>

#include "store.h"

#define SBX_AGENTS_MAX 1000u          /* agents of one organisation */
#define SBX_SESSION_EVENTS_MAX 10000u /* events of one session */

struct sbx_agent_doc {
  char id[SBX_STORE_ID_MAX];          /* "agent_" + random */
  int64_t created_ms;
  char *json;                          /* the definition */
};
void sbx_agent_docs_free (struct sbx_agent_doc *v, size_t n);

/* Insert agent D (D->id assigned here) of ORG; SBX_E_LIMIT past
   SBX_AGENTS_MAX. */
int sbx_store_agent_put (struct sbx_store *st, const char *org_id, struct sbx_agent_doc *d, struct sbx_err *err);
/* ENOENT (kind SBX_E_NOT_FOUND) when ORG has no agent ID. */
int sbx_store_agent_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_agent_doc *d,
                         struct sbx_err *err);
/* ORG's agents, newest first. */
int sbx_store_agent_list (struct sbx_store *st, const char *org_id, struct sbx_agent_doc **v, size_t *n,
                          struct sbx_err *err);
int sbx_store_agent_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err);

struct sbx_session_rec {
  char id[SBX_STORE_ID_MAX];          /* "sess_" + random */
  char org_id[SBX_STORE_ID_MAX];
  char agent_id[SBX_STORE_ID_MAX];
  char sandbox_id[SBX_STORE_ID_MAX];
  char template_id[64];
  char status[16];                     /* idle, running, ended */
  char end_reason[32];                 /* deleted, timeout, ... ("" while not ended) */
  uint32_t timeout_s;
  int64_t created_ms, ended_ms;
  int64_t input_tokens, output_tokens;
  int64_t model_turns;
  char *agent_json;                    /* the agent as it was at create */
};
void sbx_session_rec_free (struct sbx_session_rec *r);
void sbx_session_recs_free (struct sbx_session_rec *v, size_t n);

/* A new session id ("sess_" + random) into BUF. */
int sbx_store_session_new_id (char *buf, size_t size, struct sbx_err *err);
/* Insert session R (R->id from sbx_store_session_new_id). */
int sbx_store_session_put (struct sbx_store *st, const struct sbx_session_rec *r, struct sbx_err *err);
int sbx_store_session_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_session_rec *r,
                           struct sbx_err *err);
/* ORG's sessions, newest first (AGENT_ID filters when not NULL); STATUS
   "running" and ORG NULL: every organisation's running sessions. */
int sbx_store_session_list (struct sbx_store *st, const char *org_id, const char *agent_id, const char *status,
                            struct sbx_session_rec **v, size_t *n, struct sbx_err *err);
/* Set STATUS; "ended" also sets END_REASON and ENDED_MS. */
int sbx_store_session_status (struct sbx_store *st, const char *id, const char *status, const char *end_reason,
                              int64_t ended_ms, struct sbx_err *err);
/* Add to the session's counters. */
int sbx_store_session_usage (struct sbx_store *st, const char *id, int64_t input_tokens, int64_t output_tokens,
                             int64_t model_turns, struct sbx_err *err);

struct sbx_session_event {
  int64_t seq;                         /* its place among all events */
  char id[SBX_STORE_ID_MAX];          /* "sevt_" + random */
  char type[24];                       /* message, tool_call, tool_result, failed */
  int64_t created_ms;
  char *json;                          /* its fields */
};
void sbx_session_events_free (struct sbx_session_event *v, size_t n);

/* Append an event of TYPE with fields JSON to session SESSION_ID; E gets
   it (seq, id, time).  SBX_E_LIMIT past SBX_SESSION_EVENTS_MAX. */
int sbx_store_session_event_add (struct sbx_store *st, const char *session_id, const char *type, const char *json,
                                 struct sbx_session_event *e, struct sbx_err *err);
/* The session's events after seq AFTER, oldest first, at most LIMIT. */
int sbx_store_session_events (struct sbx_store *st, const char *session_id, int64_t after, uint32_t limit,
                              struct sbx_session_event **v, size_t *n, struct sbx_err *err);
/* The seq of the session's last event (0 when none). */
int sbx_store_session_last_seq (struct sbx_store *st, const char *session_id, int64_t *seq, struct sbx_err *err);

#endif
