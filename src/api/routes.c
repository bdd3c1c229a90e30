/*
 * routes.c - the one route table of the HTTP API: method and path pattern
 * to handler and dialect.  The router (server.c) takes the first entry
 * whose pattern matches the path and whose method matches; a path that
 * matches with another method only answers 405.  ROUTE_SANDBOX entries get
 * their ":id" checked against the caller's organisation first (404 when it
 * is not the caller's), so handlers never see another tenant's sandbox.
 * All of that is decided from the headers, before the body is read; a
 * body may be JSON_BODY_MAX bytes, or BIG_BODY_MAX on ROUTE_BIG_BODY
 * entries (file contents in base64, stdin, code).  Handlers run on a
 * handler thread, except ROUTE_INLINE ones (server.c).
 *
 * Calls the E2B SDKs make to a sandbox's own agent (envd, with an
 * E2b-Sandbox-Id header) and signed file URLs do not come through this
 * table: they carry no API key and are checked in e2b_envd.c.
 */
#include "api.h"

#define SB ROUTE_SANDBOX
#define BIG ROUTE_BIG_BODY
#define D1 (&dialect_sandbase)
#define D2 (&dialect_seed002)
#define D4 (&dialect_v1)
#define DM (&dialect_mcp)

const struct route api_routes[] = {
  { "GET", "/health", send_health, ROUTE_PUBLIC | ROUTE_INLINE, D1 },
  { "GET", "/openapi.yaml", send_openapi, ROUTE_PUBLIC | ROUTE_INLINE, D1 },
  /* the operator's, with its own token (metrics.c) */
  { "GET", "/metrics", metrics_route, ROUTE_PUBLIC, D1 },

  /* seed 001 (SandBase) and E2B's control plane */
  { "POST", "/sandboxes", sandbase_create, 0, D1 },
  { "GET", "/sandboxes", sandbase_list, 0, D1 },
  { "GET", "/v2/sandboxes", e2b_list_v2, 0, D1 },
  { "GET", "/sandboxes/metrics", sandbase_metrics_many, 0, D1 },
  { "GET", "/v2/sandboxes/:id/logs", e2b_logs_v2, SB, D1 },
  { "GET", "/sandboxes/:id/logs", e2b_logs_v1, SB, D1 },
  { "GET", "/sandboxes/:id", sandbase_get, SB, D1 },
  { "DELETE", "/sandboxes/:id", sandbase_kill, SB, D1 },
  { "POST", "/sandboxes/:id/pause", sandbase_pause, SB, D1 },
  { "POST", "/sandboxes/:id/connect", sandbase_connect, SB, D1 },
  { "POST", "/sandboxes/:id/resume", sandbase_connect, SB, D1 },
  { "POST", "/sandboxes/:id/timeout", sandbase_timeout, SB, D1 },
  { "POST", "/sandboxes/:id/refreshes", sandbase_refresh, SB, D1 },
  { "GET", "/sandboxes/:id/metrics", sandbase_metrics, SB, D1 },
  { "PUT", "/sandboxes/:id/network", sandbase_network, SB, D1 },
  { "POST", "/sandboxes/:id/snapshots", e2b_snapshot_create, SB, D1 },
  { "POST", "/sandboxes/:id/fork", e2b_fork, SB, D1 },
  { "GET", "/snapshots", e2b_snapshot_list, 0, D1 },
  { "GET", "/sandboxes/:id/network/log", egress_log_route, SB, D1 },
  { "GET", "/sandboxes/:id/files", sandbase_download, SB, D1 },
  { "POST", "/sandboxes/:id/processes", sandbase_exec, SB, D1 },
  { "GET", "/sandboxes/:id/processes", sandbase_processes, SB, D1 },
  { "POST", "/sandboxes/:id/processes/stream", sandbase_exec_stream, SB, D1 },
  { "GET", "/sandboxes/:id/processes/:pid/stream", sandbase_attach, SB, D1 },
  { "POST", "/sandboxes/:id/processes/:pid/:action", sandbase_process_action, SB | BIG, D1 },
  { "*", "/sandboxes/:id/filesystem", sandbase_filesystem, SB | BIG, D1 },
  { "*", "/sandboxes/:id/filesystem/:op", sandbase_filesystem, SB, D1 },

  /* E2B's template build API (e2b_templates.c) */
  { "POST", "/v3/templates", e2bt_request, 0, D1 },
  { "POST", "/v2/templates", e2bt_request, 0, D1 },
  { "GET", "/v2/templates", e2bt_list, 0, D1 },
  { "GET", "/templates", e2bt_list, 0, D1 },
  { "GET", "/templates/aliases/:alias", e2bt_alias, 0, D1 },
  { "POST", "/templates/tags", e2bt_tags_assign, 0, D1 },
  { "DELETE", "/templates/tags", e2bt_tags_remove, 0, D1 },
  { "GET", "/templates/:id/tags", e2bt_tags_list, 0, D1 },
  { "GET", "/templates/:id/files/:hash", e2bt_file_link, 0, D1 },
  /* the signed URL is the credential, checked before the body is read */
  { "PUT", "/templates/:id/files/:hash", e2bt_file_put, ROUTE_PUBLIC | ROUTE_SIGNED | BIG, D1 },
  { "POST", "/v2/templates/:id/builds/:build", e2bt_build_start, 0, D1 },
  { "GET", "/templates/:id/builds/:build/status", e2bt_build_status, 0, D1 },
  { "GET", "/templates/:id/builds/:build/logs", e2bt_build_logs, 0, D1 },
  { "GET", "/templates/:id", e2bt_get, 0, D1 },
  { "PATCH", "/templates/:id", e2bt_patch, 0, D1 },
  { "PATCH", "/v2/templates/:id", e2bt_patch, 0, D1 },
  /* a snapshot (e2b_snapshots.c), else a built template; after /templates/tags */
  { "DELETE", "/templates/:id", e2b_template_delete, 0, D1 },

  /* E2B's volumes (e2b_volumes.c); their content answers to the volume's
     token, checked before the body is read */
  { "POST", "/volumes", e2b_volume_create, 0, D1 },
  { "GET", "/volumes", e2b_volume_list, 0, D1 },
  { "GET", "/volumes/:id", e2b_volume_get, 0, D1 },
  { "DELETE", "/volumes/:id", e2b_volume_delete, 0, D1 },
  { "GET", "/volumecontent/:id/path", e2b_volume_path, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "PATCH", "/volumecontent/:id/path", e2b_volume_path, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "DELETE", "/volumecontent/:id/path", e2b_volume_path, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "GET", "/volumecontent/:id/dir", e2b_volume_dir, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "POST", "/volumecontent/:id/dir", e2b_volume_dir, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "GET", "/volumecontent/:id/file", e2b_volume_file, ROUTE_PUBLIC | ROUTE_SIGNED, D1 },
  { "PUT", "/volumecontent/:id/file", e2b_volume_file, ROUTE_PUBLIC | ROUTE_SIGNED | BIG, D1 },

  /* lifecycle events and webhooks (E2B's shapes) */
  { "*", "/events/*", events_route, 0, D1 },

  /* seed 000: agents and sessions (agents.c) */
  { "POST", "/default/v1/agents", agents_create, 0, D1 },
  { "GET", "/default/v1/agents", agents_list, 0, D1 },
  { "GET", "/default/v1/agents/:id", agents_get, 0, D1 },
  { "DELETE", "/default/v1/agents/:id", agents_delete, 0, D1 },
  { "POST", "/default/v1/sessions", sessions_create, 0, D1 },
  { "GET", "/default/v1/sessions", sessions_list, 0, D1 },
  { "GET", "/default/v1/sessions/:id", sessions_get, 0, D1 },
  { "DELETE", "/default/v1/sessions/:id", sessions_delete, 0, D1 },
  { "POST", "/default/v1/sessions/:id/events", session_events_post, 0, D1 },
  { "GET", "/default/v1/sessions/:id/events", session_events_get, 0, D1 },

  /* seed 002 */
  { "POST", "/api/sandbox/create", seed002_create, 0, D2 },
  { "GET", "/api/sandbox", seed002_list, 0, D2 },
  { "GET", "/api/sandbox/:id", seed002_get, SB, D2 },
  { "DELETE", "/api/sandbox/:id", seed002_destroy, SB, D2 },
  { "POST", "/api/sandbox/:id/run", seed002_run, SB | BIG, D2 },
  { "GET", "/api/sandbox/:id/run/:run", seed002_run_get, SB, D2 },
  { "GET", "/api/sandbox/:id/runs", seed002_runs, SB, D2 },
  { "GET", "/api/sandbox/:id/network/log", egress_log_route, SB, D2 },

  /* the MCP server (Streamable HTTP); tool calls carry file contents */
  { "*", "/mcp", mcp_route, BIG, DM },

  /* seed 004: sandboxes are named by ?id= or the body's "id" (v1.c) */
  { "GET", "/v1/sandboxes/terminal", v1_terminal, ROUTE_PUBLIC, D4 }, /* the token is the credential */
  { "POST", "/v1/sandboxes/terminal", v1_terminal_new, 0, D4 },
  { "POST", "/v1/sandboxes/checkpoint", v1_checkpoint_create, 0, D4 },
  { "GET", "/v1/checkpoints", v1_checkpoint_list, 0, D4 },
  { "DELETE", "/v1/checkpoints", v1_checkpoint_delete, 0, D4 },
  { "GET", "/v1/sandboxes/artifacts", v1_artifacts_list, 0, D4 },
  { "DELETE", "/v1/sandboxes/artifacts", v1_artifacts_delete, 0, D4 },
  { "GET", "/v1/sandboxes/artifacts/file", v1_artifact_file, 0, D4 },
  { "POST", "/v1/sandboxes", v1_sandboxes_post, 0, D4 },
  { "GET", "/v1/sandboxes", v1_sandboxes_get, 0, D4 },
  { "DELETE", "/v1/sandboxes", v1_sandboxes_delete, 0, D4 },
  { "POST", "/v1/sandboxes/pause", v1_pause, 0, D4 },
  { "POST", "/v1/sandboxes/resume", v1_resume, 0, D4 },
  { "POST", "/v1/sandboxes/exec", v1_exec, 0, D4 },
  { "POST", "/v1/sandboxes/code", v1_code, BIG, D4 },
  { "POST", "/v1/sandboxes/files", v1_file_write, BIG, D4 },
  { "GET", "/v1/sandboxes/files", v1_file_read, 0, D4 },
  { "DELETE", "/v1/sandboxes/files", v1_file_delete, 0, D4 },
  { "GET", "/v1/sandboxes/files/list", v1_file_list, 0, D4 },
  { "GET", "/v1/usage", v1_usage, 0, D4 },
};

const size_t api_n_routes = sizeof api_routes / sizeof api_routes[0];

/* What checks the signed URLs of ROUTE_SIGNED routes. */
route_check_fn
route_check_of (const struct route *r)
{
  if (r->fn == e2bt_file_put)
    return e2bt_upload_check;
  if (r->fn == e2b_volume_path || r->fn == e2b_volume_dir || r->fn == e2b_volume_file)
    return e2b_volume_token_check;
  return NULL;
}
