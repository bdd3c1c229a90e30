/*
 * store.c - the daemon's embedded store (see store.h).
 *
 * One SQLite database file in WAL mode, one connection per process,
 * serialised by a mutex in struct sbx_store.  The daemon opens it at start;
 * `sbxd keys` may open the same file at the same time from another process
 * (WAL lets its reads run beside the daemon's writes; busy_timeout covers
 * the short moments when both want to write).
 *
 * Tables:
 *
 *   orgs        organisations, their plan and limits (plans.h)
 *   api_keys    SHA-256 of each key (never the key), its hint and its org
 *   sandboxes   one record per sandbox, replaced whole on every change
 *   sandbox_time
 *               the metering ledger: the intervals each sandbox ran, one
 *               open (end_ms NULL) while it runs; kept by every save of a
 *               record, in its transaction (see store.h)
 *   runs        code run in a sandbox and its outcome (seed 002's /run)
 *   events      lifecycle events; seq (AUTOINCREMENT) orders them
 *   webhooks    subscriptions; events is a JSON array of event types
 *   deliveries  one row per (webhook, event): the outbox of the webhook
 *               sender, which polls sbx_store_delivery_next()
 *   captures    checkpoints of a workspace and kept artifacts (seed 004);
 *               their content is in STATE/captures/ID (checkpoints.c)
 *   capture_files  one row per file, directory or symlink of a capture
 *   sandbox_storage  what a sandbox keeps when it ends (ephemeral: false,
 *               artifacts and their prefix)
 *   templates   templates built through E2B's build API, per organisation
 *   template_builds  their builds; a ready one names the layer it made
 *   template_tags    tags of a template, each naming one build
 *   sandbox_samples  the sandboxes' metrics histories (store_samples.c)
 *   agents, sessions, session_events
 *               seed 000's agents, their sessions and what happened in
 *               them (store_agents.c, through store_db.h)
 *
 * An event and the deliveries it causes are written in one transaction,
 * so a crash never loses a notification nor sends one for an event that
 * was not recorded.
 *
 * The schema is versioned (PRAGMA user_version); columns added since
 * version 1 are listed in added_columns[] and added to older files at
 * open, so that existing state directories keep working.
 *
 * Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT),
 * with bound parameters only, and reset after each use; the API key lookup
 * runs on every HTTP request, so it must not parse SQL.  A statement in
 * use is reset by a cleanup attribute before the mutex is released, so an
 * early return can never leave one half-stepped.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../common/util.h"
#include "plans.h"
#include "store_db.h"
#include "store_samples.h"

#define SCHEMA_VERSION 3
#define ID_RANDOM_CHARS 20
#define KEY_RANDOM_BYTES 20       /* 40 hex characters */
#define KEY_HINT_CHARS 10
#define MAX_KEY_LEN 256           /* longer "keys" are refused unhashed */
#define MAX_DELIVERY_ERROR 1000   /* bytes of last_error kept */

#define DEFAULT_MAX_UPLOAD_BYTES (100ull * 1024 * 1024)

/* ---------------------------------------------------------------- schema */

static const char schema_sql[]
    = "CREATE TABLE IF NOT EXISTS orgs ("
      "  id TEXT PRIMARY KEY,"
      "  name TEXT NOT NULL UNIQUE,"
      "  max_sandboxes INTEGER NOT NULL,"
      "  max_timeout_s INTEGER NOT NULL,"
      "  max_upload_bytes INTEGER NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  plan TEXT NOT NULL DEFAULT 'default',"
      /* the limit is monthly_ms; monthly_hours, all schema 2 had, is
         kept as its whole hours rounded up, for readers of the file */
      "  monthly_hours INTEGER NOT NULL DEFAULT 0,"
      "  monthly_ms INTEGER NOT NULL DEFAULT 0);"
      "CREATE TABLE IF NOT EXISTS api_keys ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL REFERENCES orgs (id),"
      "  hash TEXT NOT NULL,"
      "  hint TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  revoked_ms INTEGER NOT NULL DEFAULT 0);"
      "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_hash ON api_keys (hash);"
      /* No foreign key to orgs for sandboxes, events and webhooks: their
         org ids come from key lookups, and records must never be refused
         (or cascaded away) over bookkeeping. */
      "CREATE TABLE IF NOT EXISTS sandboxes ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  template_id TEXT NOT NULL,"
      "  status TEXT NOT NULL,"
      "  metadata TEXT,"
      "  started_ms INTEGER NOT NULL,"
      "  end_ms INTEGER NOT NULL,"
      "  stopped_ms INTEGER NOT NULL,"
      "  stop_reason TEXT NOT NULL,"
      "  cpu_count INTEGER NOT NULL,"
      "  memory_mb INTEGER NOT NULL,"
      "  disk_mb INTEGER NOT NULL,"
      "  agent_id TEXT NOT NULL DEFAULT '',"
      "  mode TEXT NOT NULL DEFAULT '');"
      "CREATE INDEX IF NOT EXISTS sandboxes_org_started ON sandboxes (org_id, started_ms);"
      /* the live ones alone: quotas and the operator's census
         (store_census.c) read them without the stopped history */
      "CREATE INDEX IF NOT EXISTS sandboxes_live ON sandboxes (org_id, status)"
      "  WHERE status IN ('running', 'paused', 'creating');"
      "CREATE TABLE IF NOT EXISTS sandbox_time ("
      "  sandbox_id TEXT NOT NULL,"
      "  org_id TEXT NOT NULL,"
      "  start_ms INTEGER NOT NULL,"
      "  end_ms INTEGER);"                /* NULL while it runs */
      /* usage reads an organisation's intervals still open or ended after
         the month began, never its older history */
      "CREATE INDEX IF NOT EXISTS sandbox_time_org_end ON sandbox_time (org_id, end_ms);"
      /* at most one open interval per sandbox */
      "CREATE UNIQUE INDEX IF NOT EXISTS sandbox_time_open ON sandbox_time (sandbox_id) WHERE end_ms IS NULL;"
      "CREATE TABLE IF NOT EXISTS runs ("
      "  id TEXT PRIMARY KEY,"
      "  sandbox_id TEXT NOT NULL,"
      "  org_id TEXT NOT NULL,"
      "  status TEXT NOT NULL,"           /* running, completed, failed, timeout */
      "  code TEXT NOT NULL,"
      "  stdout TEXT,"
      "  stderr TEXT,"
      "  exit_code INTEGER NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  finished_ms INTEGER NOT NULL,"
      "  timeout_s INTEGER NOT NULL,"
      "  reason TEXT,"
      "  stdout_truncated INTEGER NOT NULL,"
      "  stderr_truncated INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS runs_sandbox_created ON runs (sandbox_id, created_ms);"
      "CREATE INDEX IF NOT EXISTS runs_org_created ON runs (org_id, created_ms);"
      /* start-up recovery reads the unfinished ones, a handful among many */
      "CREATE INDEX IF NOT EXISTS runs_running ON runs (created_ms) WHERE status = 'running';"
      "CREATE TABLE IF NOT EXISTS events ("
      "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  id TEXT NOT NULL UNIQUE,"
      "  org_id TEXT NOT NULL,"
      "  sandbox_id TEXT NOT NULL,"
      "  template_id TEXT NOT NULL,"
      "  type TEXT NOT NULL,"
      "  timestamp_ms INTEGER NOT NULL,"
      "  data TEXT);"
      "CREATE INDEX IF NOT EXISTS events_org_seq ON events (org_id, seq);"
      "CREATE INDEX IF NOT EXISTS events_sandbox_seq ON events (sandbox_id, seq);"
      "CREATE TABLE IF NOT EXISTS webhooks ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  name TEXT NOT NULL,"
      "  url TEXT NOT NULL,"
      "  enabled INTEGER NOT NULL,"
      "  events TEXT NOT NULL,"
      "  secret TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS webhooks_org ON webhooks (org_id, created_ms);"
      "CREATE TABLE IF NOT EXISTS deliveries ("
      "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,"
      "  event_id TEXT NOT NULL REFERENCES events (id),"
      "  state TEXT NOT NULL,"            /* pending, delivered, failed */
      "  attempts INTEGER NOT NULL,"
      "  next_ms INTEGER NOT NULL,"
      "  last_status INTEGER NOT NULL,"
      "  last_error TEXT,"
      "  created_ms INTEGER NOT NULL,"
      "  updated_ms INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS deliveries_state_next ON deliveries (state, next_ms);"
      "CREATE INDEX IF NOT EXISTS deliveries_webhook ON deliveries (webhook_id, id);"
      /* version 3: seed 004's checkpoints and artifacts */
      "CREATE TABLE IF NOT EXISTS captures ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  sandbox_id TEXT NOT NULL,"
      "  kind TEXT NOT NULL,"               /* checkpoint, artifacts */
      "  prefix TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  size_bytes INTEGER NOT NULL,"
      "  files INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS captures_org ON captures (org_id, kind, created_ms);"
      "CREATE INDEX IF NOT EXISTS captures_sandbox ON captures (sandbox_id, kind);"
      "CREATE TABLE IF NOT EXISTS capture_files ("
      "  capture_id TEXT NOT NULL REFERENCES captures (id) ON DELETE CASCADE,"
      "  n INTEGER NOT NULL,"               /* its content: file N of the capture's directory; 0: none */
      "  path TEXT NOT NULL,"
      "  type INTEGER NOT NULL,"
      "  size INTEGER NOT NULL,"
      "  mode INTEGER NOT NULL,"
      "  uid INTEGER NOT NULL,"
      "  gid INTEGER NOT NULL,"
      "  mtime_ms INTEGER NOT NULL,"
      "  link TEXT,"
      "  PRIMARY KEY (capture_id, path));"
      "CREATE TABLE IF NOT EXISTS sandbox_storage ("
      "  sandbox_id TEXT PRIMARY KEY,"
      "  keep_workspace INTEGER NOT NULL,"
      "  keep_artifacts INTEGER NOT NULL,"
      "  prefix TEXT NOT NULL);"
      /* who may reach a sandbox's ports by host name (sbxd serve --domain) */
      "CREATE TABLE IF NOT EXISTS sandbox_ingress ("
      "  sandbox_id TEXT PRIMARY KEY,"
      "  public INTEGER NOT NULL,"
      "  mask_host TEXT NOT NULL);"
      /* E2B's volumes (captures of kind "volume", volumes.c) a sandbox mounts */
      "CREATE TABLE IF NOT EXISTS volume_mounts ("
      "  sandbox_id TEXT NOT NULL,"
      "  volume_id TEXT NOT NULL,"
      "  path TEXT NOT NULL,"
      "  PRIMARY KEY (sandbox_id, path));"
      "CREATE INDEX IF NOT EXISTS volume_mounts_volume ON volume_mounts (volume_id);"

      /* templates built through the E2B build API (builds.c) */
      "CREATE TABLE IF NOT EXISTS templates ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  name TEXT NOT NULL,"
      "  public INTEGER NOT NULL,"
      "  cpu_count INTEGER NOT NULL,"
      "  memory_mb INTEGER NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  updated_ms INTEGER NOT NULL,"
      "  build_count INTEGER NOT NULL,"
      "  UNIQUE (org_id, name));"
      "CREATE TABLE IF NOT EXISTS template_builds ("
      "  id TEXT PRIMARY KEY,"
      "  template_id TEXT NOT NULL,"
      "  org_id TEXT NOT NULL,"
      "  status TEXT NOT NULL,"             /* waiting, building, ready, error */
      "  tree TEXT NOT NULL,"               /* the layer it made, once ready */
      "  reason TEXT,"
      "  step TEXT NOT NULL,"
      "  tags TEXT,"                        /* JSON array: tags to give it when ready */
      "  layers TEXT,"                      /* the layers it made, one name a line */
      "  cpu_count INTEGER NOT NULL,"
      "  memory_mb INTEGER NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  updated_ms INTEGER NOT NULL,"
      "  finished_ms INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS template_builds_tmpl ON template_builds (template_id, created_ms);"
      "CREATE TABLE IF NOT EXISTS template_tags ("
      "  template_id TEXT NOT NULL,"
      "  tag TEXT NOT NULL,"
      "  build_id TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  PRIMARY KEY (template_id, tag));";

/* Indexes on columns added_columns[] (below) may have had to add first. */
static const char schema_indexes_sql[]
    = "CREATE INDEX IF NOT EXISTS sandboxes_org_agent ON sandboxes (org_id, agent_id, started_ms);";

#define SBX_STRINGIFY_(x) #x
#define SBX_STRINGIFY(x) SBX_STRINGIFY_ (x)

/* ------------------------------------------------------------ statements */

#define ORG_COLS "o.id, o.name, o.max_sandboxes, o.max_timeout_s, o.max_upload_bytes, o.plan, o.monthly_ms"
#define ORG_NCOLS 7
#define SB_COLS                                                                                        \
  "id, org_id, template_id, status, metadata, started_ms, end_ms, stopped_ms, stop_reason, cpu_count, " \
  "memory_mb, disk_mb, agent_id, mode"
#define RUN_COLS                                                                                       \
  "id, sandbox_id, org_id, status, code, stdout, stderr, exit_code, created_ms, finished_ms, timeout_s, " \
  "reason, stdout_truncated, stderr_truncated"
#define EV_COLS "seq, id, org_id, sandbox_id, template_id, type, timestamp_ms, data"
#define WH_COLS "w.id, w.org_id, w.name, w.url, w.enabled, w.events, w.secret, w.created_ms"
#define DL_COLS                                                                                        \
  "d.id, d.webhook_id, d.event_id, d.state, d.attempts, d.next_ms, d.last_status, d.last_error, "       \
  "d.created_ms, d.updated_ms"

#define CAP_COLS "id, org_id, sandbox_id, kind, prefix, created_ms, size_bytes, files"
#define CF_COLS "n, path, type, size, mode, uid, gid, mtime_ms, link"
#define TPL_COLS "id, org_id, name, public, cpu_count, memory_mb, created_ms, updated_ms, build_count"
#define BLD_COLS                                                                                       \
  "id, template_id, org_id, status, tree, reason, step, tags, cpu_count, memory_mb, created_ms, updated_ms, " \
  "finished_ms, layers"

/* The oldest pending delivery of every enabled webhook: only these may be
   sent, so that a webhook sees its events in order.  A disabled webhook's
   queue is paused, not dropped.  Found through deliveries_state_next, so
   the delivered history is never read. */
#define DL_HEADS                                                                                       \
  " FROM (SELECT MIN(id) AS id FROM deliveries WHERE state = 'pending' GROUP BY webhook_id) AS h"      \
  " JOIN deliveries AS d ON d.id = h.id JOIN webhooks AS w ON w.id = d.webhook_id"                     \
  " WHERE w.enabled = 1"

/* Event list: ?1 org, ?2 JSON array of types or NULL, ?3 limit, ?4 offset,
   ?5 sandbox.  The unary + keeps SQLite on the (sandbox_id, seq) index
   when a sandbox is given. */
#define EV_LIST_TYPES " AND (?2 IS NULL OR type IN (SELECT value FROM json_each(?2)))"
#define EV_LIST_ORG "SELECT " EV_COLS " FROM events WHERE org_id = ?1" EV_LIST_TYPES
#define EV_LIST_SB "SELECT " EV_COLS " FROM events WHERE +org_id = ?1 AND sandbox_id = ?5" EV_LIST_TYPES

/* The part of interval t inside the window [?2, ?3): an open one runs
   until ?3. */
#define TIME_IN_WINDOW "MAX (0, MIN (COALESCE (t.end_ms, ?3), ?3) - MAX (t.start_ms, ?2))"
#define TIME_WINDOW " (t.end_ms IS NULL OR t.end_ms > ?2) AND t.start_ms < ?3"

enum stmt_id
{
  S_BEGIN,
  S_COMMIT,
  S_ROLLBACK,
  S_ORG_BY_NAME,
  S_ORG_BY_ID,
  S_ORG_INSERT,
  S_ORG_LIMITS,
  S_ORG_UPDATE,
  S_ORG_LIST,
  S_KEY_INSERT,
  S_KEY_LOOKUP,
  S_KEY_LIST,
  S_KEY_REVOKE,
  S_KEY_COUNT,
  S_SB_PUT,
  S_SB_GET,
  S_SB_LIST,
  S_SB_LIVE,
  S_SB_DELETE,
  S_SB_LIVE_ALL,
  S_SB_AGENT,
  S_SB_USAGE,
  S_TIME_OPEN,
  S_TIME_CLOSE,
  S_ORGS_OUT,
  S_RUN_INSERT,
  S_RUN_FINISH,
  S_RUN_STATUS,
  S_RUN_GET,
  S_RUN_LIST_ORG,
  S_RUN_LIST_SB,
  S_RUN_UNFINISHED,
  S_EV_INSERT,
  S_EV_QUEUE,
  S_EV_BY_ID,
  S_EV_LIST_ORG_DESC,
  S_EV_LIST_ORG_ASC,
  S_EV_LIST_SB_DESC,
  S_EV_LIST_SB_ASC,
  S_WH_INSERT,
  S_WH_GET,
  S_WH_BY_ID,
  S_WH_LIST,
  S_WH_UPDATE,
  S_WH_DELETE,
  S_WH_DELETE_DELIVERIES,
  S_WH_EXISTS,
  S_DL_NEXT,
  S_DL_NEXT_DUE,
  S_DL_RECORD,
  S_DL_LIST,
  S_CAP_INSERT,
  S_CAP_FILE_INSERT,
  S_CAP_GET,
  S_CAP_LIST,
  S_CAP_FILES,
  S_CAP_FILE_GET,
  S_CAP_DELETE,
  S_CAP_FILES_DELETE,
  S_CAP_USED,
  S_STORAGE_PUT,
  S_STORAGE_GET,
  S_INGRESS_PUT,
  S_INGRESS_GET,
  S_VMOUNT_PUT,
  S_VMOUNT_LIST,
  S_VMOUNT_BUSY,
  S_VMOUNT_FORGET,
  S_TPL_PUT,
  S_TPL_GET,
  S_TPL_LIST,
  S_TPL_DELETE,
  S_TPL_DELETE_BUILDS,
  S_TPL_DELETE_TAGS,
  S_BLD_PUT,
  S_BLD_GET,
  S_BLD_LIST,
  S_BLD_FAIL_UNFINISHED,
  S_BLD_TREE_REFS,
  S_TAG_SET,
  S_TAG_DELETE,
  S_TAG_LIST,
  S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
  [S_BEGIN] = "BEGIN IMMEDIATE",
  [S_COMMIT] = "COMMIT",
  [S_ROLLBACK] = "ROLLBACK",

  [S_ORG_BY_NAME] = "SELECT " ORG_COLS " FROM orgs AS o WHERE o.name = ?1",
  [S_ORG_BY_ID] = "SELECT " ORG_COLS " FROM orgs AS o WHERE o.id = ?1",
  [S_ORG_INSERT] = "INSERT OR IGNORE INTO orgs (id, name, max_sandboxes, max_timeout_s, max_upload_bytes, created_ms,"
                   " plan, monthly_ms, monthly_hours) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
  [S_ORG_LIMITS] = "UPDATE orgs SET"
                   " max_sandboxes = CASE WHEN ?2 > 0 THEN ?2 ELSE max_sandboxes END,"
                   " max_timeout_s = CASE WHEN ?3 > 0 THEN ?3 ELSE max_timeout_s END,"
                   " max_upload_bytes = CASE WHEN ?4 > 0 THEN ?4 ELSE max_upload_bytes END"
                   " WHERE name = ?1",
  [S_ORG_UPDATE] = "UPDATE orgs SET plan = ?2, max_sandboxes = ?3, max_timeout_s = ?4, monthly_ms = ?5,"
                   " monthly_hours = ?6 WHERE name = ?1",
  [S_ORG_LIST] = "SELECT " ORG_COLS " FROM orgs AS o ORDER BY o.created_ms, o.rowid",

  [S_KEY_INSERT] = "INSERT INTO api_keys (id, org_id, hash, hint, created_ms, revoked_ms)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, 0)",
  [S_KEY_LOOKUP] = "SELECT " ORG_COLS ", k.revoked_ms FROM api_keys AS k JOIN orgs AS o ON o.id = k.org_id"
                   " WHERE k.hash = ?1",
  [S_KEY_LIST] = "SELECT k.id, o.name, k.hint, k.created_ms, k.revoked_ms"
                 " FROM api_keys AS k JOIN orgs AS o ON o.id = k.org_id ORDER BY k.created_ms, k.rowid",
  /* Revoking twice keeps the first revocation time. */
  [S_KEY_REVOKE] = "UPDATE api_keys SET revoked_ms = CASE WHEN revoked_ms = 0 THEN ?3 ELSE revoked_ms END"
                   " WHERE id = ?1 OR hash = ?2",
  [S_KEY_COUNT] = "SELECT COUNT(*) FROM api_keys",

  /* The whole record but agent_id and mode, which the engine's reports
     (events.c) do not know: an empty one keeps what is stored. */
  [S_SB_PUT] = "INSERT INTO sandboxes (" SB_COLS ")"
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
               " ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, template_id = excluded.template_id,"
               " status = excluded.status, metadata = excluded.metadata, started_ms = excluded.started_ms,"
               " end_ms = excluded.end_ms, stopped_ms = excluded.stopped_ms, stop_reason = excluded.stop_reason,"
               " cpu_count = excluded.cpu_count, memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb,"
               " agent_id = CASE WHEN excluded.agent_id = '' THEN agent_id ELSE excluded.agent_id END,"
               " mode = CASE WHEN excluded.mode = '' THEN mode ELSE excluded.mode END",
  [S_SB_AGENT] = "UPDATE sandboxes SET agent_id = ?2, mode = ?3 WHERE id = ?1",
  [S_SB_GET] = "SELECT " SB_COLS " FROM sandboxes WHERE id = ?1",
  /* placeholders of creates in progress ("rsv_...") are not listed */
  [S_SB_LIST] = "SELECT " SB_COLS " FROM sandboxes WHERE org_id = ?1 AND (?2 IS NULL OR status = ?2)"
                " AND (?3 IS NULL OR agent_id = ?3) AND id NOT LIKE 'rsv!_%' ESCAPE '!'"
                " ORDER BY started_ms DESC, id",
  [S_SB_LIVE] = "SELECT COUNT(*) FROM sandboxes WHERE org_id = ?1 AND status IN ('running', 'paused', 'creating')",
  /* ?1 org, ?2 window start, ?3 now; through sandbox_time_org_end */
  [S_SB_USAGE] = "SELECT TOTAL (" TIME_IN_WINDOW ") FROM sandbox_time AS t WHERE t.org_id = ?1 AND" TIME_WINDOW,
  [S_TIME_OPEN] = "INSERT INTO sandbox_time (sandbox_id, org_id, start_ms, end_ms) VALUES (?1, ?2, ?3, NULL)"
                  " ON CONFLICT (sandbox_id) WHERE end_ms IS NULL DO NOTHING",
  [S_TIME_CLOSE] = "UPDATE sandbox_time SET end_ms = MAX (start_ms, ?2) WHERE sandbox_id = ?1 AND end_ms IS NULL",
  /* ?2 window start, ?3 now, ?4 at most; only organisations with a
     sandbox running now, found through sandbox_time_open */
  [S_ORGS_OUT] = "SELECT o.id FROM (SELECT DISTINCT org_id FROM sandbox_time WHERE end_ms IS NULL) AS r"
                 " JOIN orgs AS o ON o.id = r.org_id WHERE o.monthly_ms > 0"
                 " AND (SELECT TOTAL (" TIME_IN_WINDOW ") FROM sandbox_time AS t WHERE t.org_id = o.id AND"
                 TIME_WINDOW ") >= o.monthly_ms ORDER BY o.id LIMIT ?4",
  [S_SB_DELETE] = "DELETE FROM sandboxes WHERE id = ?1",
  [S_SB_LIVE_ALL] = "SELECT " SB_COLS " FROM sandboxes WHERE status IN ('running', 'paused', 'creating')"
                    " ORDER BY started_ms, id",

  [S_RUN_INSERT] = "INSERT INTO runs (" RUN_COLS ")"
                   " VALUES (?1, ?2, ?3, 'running', ?4, NULL, NULL, -1, ?5, 0, ?6, NULL, 0, 0)",
  /* Only a running run finishes, once. */
  [S_RUN_FINISH] = "UPDATE runs SET status = ?3, stdout = ?4, stderr = ?5, exit_code = ?6, finished_ms = ?7,"
                   " reason = ?8, stdout_truncated = ?9, stderr_truncated = ?10"
                   " WHERE id = ?1 AND org_id = ?2 AND status = 'running'",
  [S_RUN_STATUS] = "SELECT status FROM runs WHERE id = ?1 AND org_id = ?2",
  [S_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1 AND org_id = ?2 AND (?3 IS NULL OR sandbox_id = ?3)",
  [S_RUN_LIST_ORG] = "SELECT " RUN_COLS " FROM runs WHERE org_id = ?1"
                     " ORDER BY created_ms DESC, rowid DESC LIMIT ?3 OFFSET ?4",
  [S_RUN_LIST_SB] = "SELECT " RUN_COLS " FROM runs WHERE sandbox_id = ?2 AND +org_id = ?1"
                    " ORDER BY created_ms DESC, rowid DESC LIMIT ?3 OFFSET ?4",
  [S_RUN_UNFINISHED] = "SELECT " RUN_COLS " FROM runs WHERE status = 'running' ORDER BY created_ms, rowid",

  [S_EV_INSERT] = "INSERT INTO events (id, org_id, sandbox_id, template_id, type, timestamp_ms, data)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
  [S_EV_QUEUE] = "INSERT INTO deliveries (webhook_id, event_id, state, attempts, next_ms, last_status, last_error,"
                 " created_ms, updated_ms)"
                 " SELECT w.id, ?1, 'pending', 0, ?2, 0, NULL, ?2, ?2 FROM webhooks AS w"
                 " WHERE w.org_id = ?3 AND w.enabled = 1"
                 " AND EXISTS (SELECT 1 FROM json_each (w.events) AS e WHERE e.value = ?4)"
                 " ORDER BY w.created_ms, w.rowid",
  [S_EV_BY_ID] = "SELECT " EV_COLS " FROM events WHERE id = ?1",
  [S_EV_LIST_ORG_DESC] = EV_LIST_ORG " ORDER BY seq DESC LIMIT ?3 OFFSET ?4",
  [S_EV_LIST_ORG_ASC] = EV_LIST_ORG " ORDER BY seq ASC LIMIT ?3 OFFSET ?4",
  [S_EV_LIST_SB_DESC] = EV_LIST_SB " ORDER BY seq DESC LIMIT ?3 OFFSET ?4",
  [S_EV_LIST_SB_ASC] = EV_LIST_SB " ORDER BY seq ASC LIMIT ?3 OFFSET ?4",

  [S_WH_INSERT] = "INSERT INTO webhooks (id, org_id, name, url, enabled, events, secret, created_ms)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
  [S_WH_GET] = "SELECT " WH_COLS " FROM webhooks AS w WHERE w.id = ?1 AND w.org_id = ?2",
  [S_WH_BY_ID] = "SELECT " WH_COLS " FROM webhooks AS w WHERE w.id = ?1",
  [S_WH_LIST] = "SELECT " WH_COLS " FROM webhooks AS w WHERE w.org_id = ?1 ORDER BY w.created_ms, w.rowid",
  [S_WH_UPDATE] = "UPDATE webhooks SET name = COALESCE (?3, name), url = COALESCE (?4, url), enabled = ?5,"
                  " events = COALESCE (?6, events), secret = COALESCE (?7, secret)"
                  " WHERE id = ?1 AND org_id = ?2",
  [S_WH_DELETE] = "DELETE FROM webhooks WHERE id = ?1 AND org_id = ?2",
  [S_WH_DELETE_DELIVERIES] = "DELETE FROM deliveries WHERE webhook_id = ?1",
  [S_WH_EXISTS] = "SELECT 1 FROM webhooks WHERE id = ?1 AND org_id = ?2",

  [S_DL_NEXT] = "SELECT " DL_COLS DL_HEADS " AND d.next_ms <= ?1 ORDER BY d.next_ms, d.id LIMIT 1",
  [S_DL_NEXT_DUE] = "SELECT MIN (d.next_ms)" DL_HEADS " AND d.next_ms > ?1",
  [S_DL_RECORD] = "UPDATE deliveries SET attempts = attempts + 1, last_status = ?2, last_error = ?3, updated_ms = ?4,"
                  " next_ms = CASE WHEN ?5 > 0 THEN ?5 ELSE next_ms END,"
                  " state = CASE WHEN ?5 > 0 THEN 'pending' WHEN ?6 THEN 'delivered' ELSE 'failed' END"
                  " WHERE id = ?1",
  [S_DL_LIST] = "SELECT " DL_COLS " FROM deliveries AS d WHERE d.webhook_id = ?1 ORDER BY d.id",

  [S_CAP_INSERT] = "INSERT INTO captures (" CAP_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
  [S_CAP_FILE_INSERT] = "INSERT INTO capture_files (capture_id, " CF_COLS ")"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
  [S_CAP_GET] = "SELECT " CAP_COLS " FROM captures WHERE id = ?1",
  /* ?1 org (NULL: all), ?2 kind (NULL: all), ?3 sandbox (NULL: all) */
  [S_CAP_LIST] = "SELECT " CAP_COLS " FROM captures WHERE (?1 IS NULL OR org_id = ?1) AND (?2 IS NULL OR kind = ?2)"
                 " AND (?3 IS NULL OR sandbox_id = ?3) ORDER BY created_ms DESC, id",
  [S_CAP_FILES] = "SELECT " CF_COLS " FROM capture_files WHERE capture_id = ?1 ORDER BY path",
  [S_CAP_FILE_GET] = "SELECT " CF_COLS " FROM capture_files WHERE capture_id = ?1 AND path = ?2",
  [S_CAP_DELETE] = "DELETE FROM captures WHERE id = ?1 AND (?2 IS NULL OR org_id = ?2)",
  [S_CAP_FILES_DELETE] = "DELETE FROM capture_files WHERE capture_id = ?1",
  [S_CAP_USED] = "SELECT TOTAL (size_bytes) FROM captures WHERE org_id = ?1",
  [S_STORAGE_PUT] = "INSERT OR REPLACE INTO sandbox_storage (sandbox_id, keep_workspace, keep_artifacts, prefix)"
                    " VALUES (?1, ?2, ?3, ?4)",
  [S_STORAGE_GET] = "SELECT keep_workspace, keep_artifacts, prefix FROM sandbox_storage WHERE sandbox_id = ?1",
  [S_INGRESS_PUT] = "INSERT OR REPLACE INTO sandbox_ingress (sandbox_id, public, mask_host) VALUES (?1, ?2, ?3)",
  [S_INGRESS_GET] = "SELECT public, mask_host FROM sandbox_ingress WHERE sandbox_id = ?1",
  [S_VMOUNT_PUT] = "INSERT OR REPLACE INTO volume_mounts (sandbox_id, volume_id, path) VALUES (?1, ?2, ?3)",
  [S_VMOUNT_LIST] = "SELECT m.volume_id, COALESCE (c.prefix, ''), m.path FROM volume_mounts m"
                    " LEFT JOIN captures c ON c.id = m.volume_id WHERE m.sandbox_id = ?1 ORDER BY m.path",
  [S_VMOUNT_BUSY] = "SELECT m.sandbox_id FROM volume_mounts m JOIN sandboxes s ON s.id = m.sandbox_id"
                    " WHERE m.volume_id = ?1 AND s.status IN ('running', 'paused') LIMIT 1",
  [S_VMOUNT_FORGET] = "DELETE FROM volume_mounts WHERE volume_id = ?1",

  [S_TPL_PUT] = "INSERT OR REPLACE INTO templates (" TPL_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
  /* ?1 org, ?2 an id (the org's, or a public one) or one of the org's names */
  [S_TPL_GET] = "SELECT " TPL_COLS " FROM templates WHERE (id = ?2 AND (org_id = ?1 OR public = 1))"
                " OR (org_id = ?1 AND name = ?2) ORDER BY org_id = ?1 DESC LIMIT 1",
  [S_TPL_LIST] = "SELECT " TPL_COLS " FROM templates WHERE org_id = ?1 ORDER BY created_ms, id",
  [S_TPL_DELETE] = "DELETE FROM templates WHERE id = ?1 AND org_id = ?2",
  [S_TPL_DELETE_BUILDS] = "DELETE FROM template_builds WHERE template_id = ?1",
  [S_TPL_DELETE_TAGS] = "DELETE FROM template_tags WHERE template_id = ?1",
  [S_BLD_PUT] = "INSERT OR REPLACE INTO template_builds (" BLD_COLS ")"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
  [S_BLD_GET] = "SELECT " BLD_COLS " FROM template_builds WHERE id = ?1",
  [S_BLD_LIST] = "SELECT " BLD_COLS " FROM template_builds WHERE template_id = ?1 ORDER BY created_ms DESC, id",
  [S_BLD_FAIL_UNFINISHED] = "UPDATE template_builds SET status = 'error', reason = ?1, updated_ms = ?2,"
                            " finished_ms = ?2 WHERE status IN ('waiting', 'building')",
  [S_BLD_TREE_REFS] = "SELECT COUNT(*) FROM template_builds WHERE (tree = ?1 OR instr (layers, ?1 || char (10)) > 0)"
                      " AND template_id != ?2",
  [S_TAG_SET] = "INSERT OR REPLACE INTO template_tags (template_id, tag, build_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
  [S_TAG_DELETE] = "DELETE FROM template_tags WHERE template_id = ?1 AND tag = ?2",
  [S_TAG_LIST] = "SELECT tag, build_id, created_ms FROM template_tags WHERE template_id = ?1 ORDER BY created_ms, tag",
};

/* A place taken by sbx_store_sandbox_reserve for a create in progress:
   held in memory, not written (see there). */
struct held_place {
  char id[SBX_STORE_ID_MAX];
  char org_id[SBX_STORE_ID_MAX];
};

/* The WAL's checkpoints, on a thread of their own (see ckpt_main). */
struct checkpointer {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  sqlite3 *db;   /* its own connection to the file */
  int pages;     /* the WAL's length after the last commit */
  bool stopping;
};

/* One piece of work handed over by sbx_store_later. */
struct later {
  struct later *next;
  sbx_store_later_fn fn;
  void *ud;
};

/* The work sbx_store_later queues, done by a thread of its own; whoever
   takes the store's lock first waits for it (or does it), so that no one
   reads the store as it was before. */
struct laters {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct later *head, **tail;
  unsigned pending;             /* queued or being done */
  pthread_t thread;
  bool started, stopping;
};

struct sbx_store {
  pthread_mutex_t lock;         /* held around every use of db and stmt[], and of held[] */
  sqlite3 *db;
  sqlite3_stmt *stmt[S_COUNT];
  struct held_place *held;      /* creates in progress; at most one per
                                   live place an organisation may have */
  size_t n_held, cap_held;
  struct checkpointer *ckpt;    /* NULL: SQLite checkpoints in the committing call */
  struct laters later;
};

/* --------------------------------------------------------------- helpers */

static void
store_unlockp (struct sbx_store **st)
{
  if (*st)
    {
      pthread_mutex_unlock (&(*st)->lock);
      sbx_thread_hold_end ();
    }
}

/* "unused": the guard does its work in its cleanup only. */
#define cleanup_unlock __attribute__ ((cleanup (store_unlockp), unused))

static void later_settle (struct sbx_store *st);

static struct sbx_store *
store_lock (struct sbx_store *st)
{
  later_settle (st);
  sbx_thread_hold_begin (); /* before it waits: the holder may be bulk too */
  pthread_mutex_lock (&st->lock);
  return st;
}

/* Reset a cached statement (and drop its bindings) when it goes out of
   scope. */
static void
stmt_resetp (sqlite3_stmt **s)
{
  if (*s)
    {
      sqlite3_reset (*s);
      sqlite3_clear_bindings (*s);
    }
}

#define cleanup_reset __attribute__ ((cleanup (stmt_resetp)))

/* Roll back an open transaction when the guard goes out of scope still
   set; declared before the statements of a function, so that these are
   reset first. */
static void
tx_rollbackp (struct sbx_store **st)
{
  if (*st && !sqlite3_get_autocommit ((*st)->db))
    {
      sqlite3_stmt *s = (*st)->stmt[S_ROLLBACK];
      sqlite3_step (s);
      sqlite3_reset (s);
    }
}

#define cleanup_rollback __attribute__ ((cleanup (tx_rollbackp)))

static int
db_code (int rc)
{
  switch (rc & 0xff)
    {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return EBUSY;
    case SQLITE_NOMEM:
      return ENOMEM;
    case SQLITE_FULL:
      return ENOSPC;
    case SQLITE_READONLY:
      return EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return EACCES;
    case SQLITE_CONSTRAINT:
      return EEXIST;
    case SQLITE_CANTOPEN:
      return ENOENT;
    default:
      return EIO;
    }
}

/* Fill ERR from the connection's last error; RC the failing result. */
static int
db_fail (sqlite3 *db, int rc, struct sbx_err *err, const char *what)
{
  return sbx_failx (err, db_code (rc), "database: %s: %s", what,
                    db ? sqlite3_errmsg (db) : sqlite3_errstr (rc));
}

/* Step S, expecting no row. */
static int
step_done (struct sbx_store *st, sqlite3_stmt *s, struct sbx_err *err, const char *what)
{
  int rc = sqlite3_step (s);
  if (rc != SQLITE_DONE)
    return db_fail (st->db, rc == SQLITE_ROW ? SQLITE_MISUSE : rc, err, what);
  return 0;
}

/* Step S: 1 with a row, 0 at the end, -1 on error. */
static int
step_row (struct sbx_store *st, sqlite3_stmt *s, struct sbx_err *err, const char *what)
{
  int rc = sqlite3_step (s);
  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  return db_fail (st->db, rc, err, what);
}

static int
run (struct sbx_store *st, enum stmt_id id, struct sbx_err *err, const char *what)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[id];
  return step_done (st, s, err, what);
}

/* Bind helpers: a failed bind surfaces as SQLITE_RANGE or SQLITE_NOMEM,
   which the following step reports again; binds are therefore chained
   with | and checked once. */
static int
bind_text (sqlite3_stmt *s, int i, const char *text)
{
  if (text == NULL)
    return sqlite3_bind_null (s, i);
  return sqlite3_bind_text (s, i, text, -1, SQLITE_TRANSIENT);
}

/* A fixed char array of a struct, which may lack its terminator. */
static int
bind_fixed (sqlite3_stmt *s, int i, const char *buf, size_t size)
{
  return sqlite3_bind_text (s, i, buf, (int) strnlen (buf, size), SQLITE_TRANSIENT);
}

#define BIND_FIXED(s, i, arr) bind_fixed ((s), (i), (arr), sizeof (arr))

static int
bind_check (struct sbx_store *st, int rc, struct sbx_err *err, const char *what)
{
  if (rc != SQLITE_OK)
    return db_fail (st->db, SQLITE_MISUSE, err, what);
  return 0;
}

static void
copy_str (char *dst, size_t size, const char *src)
{
  size_t len = src ? strnlen (src, size - 1) : 0;
  if (len)
    memcpy (dst, src, len);
  dst[len] = '\0';
}

static void
col_copy (sqlite3_stmt *s, int i, char *dst, size_t size)
{
  copy_str (dst, size, (const char *) sqlite3_column_text (s, i));
}

#define COL_COPY(s, i, arr) col_copy ((s), (i), (arr), sizeof (arr))

/* A new copy of column I in *OUT (NULL for SQL NULL); -1 when out of
   memory. */
static int
col_dup (sqlite3_stmt *s, int i, char **out)
{
  *out = NULL;
  if (sqlite3_column_type (s, i) == SQLITE_NULL)
    return 0;
  const char *t = (const char *) sqlite3_column_text (s, i);
  if (t == NULL)
    return -1;
  *out = strdup (t);
  return *out ? 0 : -1;
}

static int
fail_nomem (struct sbx_err *err)
{
  return sbx_fail (err, ENOMEM, "database");
}

/* PREFIX + 20 characters of [a-z0-9], unbiased. */
static int
random_id (char *buf, size_t size, const char *prefix, struct sbx_err *err)
{
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  size_t plen = strlen (prefix), got = 0;
  if (plen + ID_RANDOM_CHARS + 1 > size)
    return sbx_failx (err, EINVAL, "id buffer too small");
  memcpy (buf, prefix, plen);
  while (got < ID_RANDOM_CHARS)
    {
      unsigned char rnd[32];
      if (sbx_random_bytes (rnd, sizeof rnd) < 0)
        return sbx_fail (err, errno, "getrandom");
      for (size_t i = 0; i < sizeof rnd && got < ID_RANDOM_CHARS; i++)
        if (rnd[i] < 252)       /* 7 * 36: larger bytes would favour a..d */
          buf[plen + got++] = alphabet[rnd[i] % 36];
    }
  buf[plen + got] = '\0';
  return 0;
}

int
sbx_store_random_id (char *buf, size_t size, const char *prefix, struct sbx_err *err)
{
  return random_id (buf, size, prefix, err);
}

sqlite3 *
sbx_store_db_lock (struct sbx_store *st)
{
  later_settle (st);
  sbx_thread_hold_begin ();
  pthread_mutex_lock (&st->lock);
  return st->db;
}

void
sbx_store_db_unlock (struct sbx_store *st)
{
  pthread_mutex_unlock (&st->lock);
  sbx_thread_hold_end ();
}

static void
hex (const unsigned char *in, size_t n, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++)
    {
      out[2 * i] = digits[in[i] >> 4];
      out[2 * i + 1] = digits[in[i] & 0xf];
    }
  out[2 * n] = '\0';
}

/* A random UUID, version 4: xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx. */
static int
random_uuid (char *buf, size_t size, struct sbx_err *err)
{
  unsigned char b[16];
  char h[33];
  if (size < 37)
    return sbx_failx (err, EINVAL, "id buffer too small");
  if (sbx_random_bytes (b, sizeof b) < 0)
    return sbx_fail (err, errno, "getrandom");
  b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
  hex (b, sizeof b, h);
  snprintf (buf, size, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
  return 0;
}

static int
sha256_hex (const char *s, char out[65], struct sbx_err *err)
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest (s, strlen (s), md, &len, EVP_sha256 (), NULL) != 1 || len != 32)
    return sbx_failx (err, EIO, "SHA-256 failed");
  hex (md, len, out);
  return 0;
}

/* A JSON array of the strings of V (NULL-terminated) in *OUT. */
static int
strv_to_json (char *const *v, char **out, struct sbx_err *err)
{
  json_t *arr = json_array ();
  *out = NULL;
  if (arr == NULL)
    return fail_nomem (err);
  for (size_t i = 0; v && v[i]; i++)
    if (json_array_append_new (arr, json_string (v[i])) < 0)
      {
        json_decref (arr);
        return sbx_failx (err, EINVAL, "event type is not valid UTF-8");
      }
  *out = json_dumps (arr, JSON_COMPACT);
  json_decref (arr);
  return *out ? 0 : fail_nomem (err);
}

static void
strv_free (char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* The strings of the JSON array TEXT, NULL-terminated; anything else in
   the column reads as an empty list. */
static char **
strv_from_json (const char *text)
{
  json_t *arr = text ? json_loads (text, 0, NULL) : NULL;
  size_t n = json_is_array (arr) ? json_array_size (arr) : 0, k = 0;
  char **v = calloc (n + 1, sizeof *v);
  if (v == NULL)
    {
      json_decref (arr);
      return NULL;
    }
  for (size_t i = 0; i < n; i++)
    {
      const char *t = json_string_value (json_array_get (arr, i));
      if (t == NULL)
        continue;
      if ((v[k] = strdup (t)) == NULL)
        {
          strv_free (v);
          json_decref (arr);
          return NULL;
        }
      k++;
    }
  json_decref (arr);
  return v;
}

/* ------------------------------------------------------------ open/close */

static int
journal_mode_cb (void *data, int ncol, char **vals, char **names)
{
  (void) names;
  if (ncol > 0 && vals[0])
    copy_str (data, 16, vals[0]);
  return 0;
}

static int
user_version_cb (void *data, int ncol, char **vals, char **names)
{
  (void) names;
  if (ncol > 0 && vals[0])
    *(int *) data = atoi (vals[0]);
  return 0;
}

static int
exec (struct sbx_store *st, const char *sql, int (*cb) (void *, int, char **, char **), void *data,
      struct sbx_err *err, const char *what)
{
  char *msg = NULL;
  int rc = sqlite3_exec (st->db, sql, cb, data, &msg);
  if (rc != SQLITE_OK)
    {
      sbx_failx (err, db_code (rc), "database: %s: %s", what, msg ? msg : sqlite3_errstr (rc));
      sqlite3_free (msg);
      return -1;
    }
  return 0;
}

/* Columns added since schema version 1.  A file written by an older sbxd
   gets them on open, with these defaults; CREATE TABLE above already has
   them for a new file.  Only ever append to this list. */
static const struct
{
  const char *table, *column, *decl;
} added_columns[] = {
  { "orgs", "plan", "TEXT NOT NULL DEFAULT 'default'" },
  { "orgs", "monthly_hours", "INTEGER NOT NULL DEFAULT 0" },
  { "sandboxes", "agent_id", "TEXT NOT NULL DEFAULT ''" },
  { "sandboxes", "mode", "TEXT NOT NULL DEFAULT ''" },
  { "orgs", "monthly_ms", "INTEGER NOT NULL DEFAULT 0" },
};

/* From schema 2 to 3, once: the limit moves from whole hours to ms, and
   the ledger starts from the records (%1$lld is now).  Records keep no
   pause history: a sandbox paused now counts as having run until now,
   as schema 2 counted it, and from now on not. */
static const char ledger_from_records_sql[]
    = "UPDATE orgs SET monthly_ms = monthly_hours * 3600000 WHERE monthly_ms = 0;"
      "INSERT INTO sandbox_time (sandbox_id, org_id, start_ms, end_ms)"
      " SELECT id, org_id, started_ms, CASE WHEN status = 'running' THEN NULL"
      "  ELSE MAX (started_ms, MIN (%1$lld, CASE WHEN status = 'paused' THEN %1$lld"
      "   WHEN stopped_ms > 0 THEN stopped_ms ELSE end_ms END)) END"
      " FROM sandboxes WHERE status IN ('running', 'paused', 'stopped', 'error') AND id NOT LIKE 'rsv!_%%' ESCAPE '!'"
      " AND started_ms <= %1$lld;";

/* 1 when TABLE has COLUMN, 0 when not. */
static int
has_column (struct sbx_store *st, const char *table, const char *column, struct sbx_err *err)
{
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2 (st->db, "SELECT 1 FROM pragma_table_info (?1) WHERE name = ?2", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return db_fail (st->db, rc, err, "schema");
  rc = bind_text (s, 1, table) | bind_text (s, 2, column);
  int r = bind_check (st, rc, err, "schema");
  if (r == 0)
    r = step_row (st, s, err, "schema");
  sqlite3_finalize (s);
  return r;
}

static int
migrate_columns (struct sbx_store *st, struct sbx_err *err)
{
  for (size_t i = 0; i < sizeof added_columns / sizeof added_columns[0]; i++)
    {
      char sql[256];
      int r = has_column (st, added_columns[i].table, added_columns[i].column, err);
      if (r < 0)
        return -1;
      if (r > 0)
        continue;
      /* Names from the table above, never from input: ALTER TABLE takes
         no bound parameters. */
      snprintf (sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", added_columns[i].table, added_columns[i].column,
                added_columns[i].decl);
      if (exec (st, sql, NULL, NULL, err, "add column") < 0)
        return -1;
    }
  return 0;
}

static int
create_schema (struct sbx_store *st, struct sbx_err *err)
{
  int version = 0;
  if (exec (st, "BEGIN IMMEDIATE", NULL, NULL, err, "begin") < 0)
    return -1;
  if (exec (st, "PRAGMA user_version", user_version_cb, &version, err, "schema version") < 0)
    goto fail;
  if (version > SCHEMA_VERSION)
    {
      sbx_failx (err, EPROTO, "database: schema version %d is newer than this sbxd's (%d)", version,
                 SCHEMA_VERSION);
      goto fail;
    }
  if (exec (st, schema_sql, NULL, NULL, err, "create schema") < 0 || migrate_columns (st, err) < 0
      || exec (st, schema_indexes_sql, NULL, NULL, err, "create indexes") < 0)
    goto fail;
  if (version < 3)
    {
      char sql[sizeof ledger_from_records_sql + 64];
      snprintf (sql, sizeof sql, ledger_from_records_sql, (long long) sbx_wall_ms ());
      if (exec (st, sql, NULL, NULL, err, "start the metering ledger") < 0)
        goto fail;
    }
  /* A constant: PRAGMA takes no bound parameters. */
  if (version < SCHEMA_VERSION
      && exec (st, "PRAGMA user_version = " SBX_STRINGIFY (SCHEMA_VERSION), NULL, NULL, err, "schema version") < 0)
    goto fail;
  if (exec (st, "COMMIT", NULL, NULL, err, "commit") < 0)
    goto fail;
  return 0;

fail:
  if (!sqlite3_get_autocommit (st->db))
    sqlite3_exec (st->db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* Checkpoints copy the WAL back into the database file (and, with
   synchronous=NORMAL, sync both), every CKPT_PAGES pages of WAL.  SQLite
   does that by default in the commit that passes the mark, while the
   store's lock is held: every 100th create or so waited milliseconds for
   it.  Here the commit only notes the WAL's length (wal_hook), and this
   thread runs a passive checkpoint on a connection of its own, which
   takes no lock a writer or a reader needs.  SQLite starts the WAL over
   only once all of it is copied; under writes without a pause the thread
   never catches up, so past CKPT_BEHIND pages the commit checkpoints
   itself, as SQLite would, and the WAL stays bounded.  At close the last
   connection checkpoints what is left. */
#define CKPT_PAGES 1000
#define CKPT_BEHIND (2 * CKPT_PAGES)

static void *
ckpt_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-checkpoint");
  struct checkpointer *c = arg;
  pthread_mutex_lock (&c->lock);
  while (!c->stopping)
    {
      if (c->pages < CKPT_PAGES)
        {
          pthread_cond_wait (&c->cond, &c->lock);
          continue;
        }
      c->pages = 0;
      pthread_mutex_unlock (&c->lock);
      /* a failed one (busy, out of space) is tried again at the next
         mark, and by the last close */
      sqlite3_wal_checkpoint_v2 (c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
      pthread_mutex_lock (&c->lock);
    }
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

/* After each commit of the store's connection, with its lock held. */
static int
ckpt_wal_hook (void *arg, sqlite3 *db, const char *name, int pages)
{
  struct checkpointer *c = arg;
  if (pages >= CKPT_BEHIND)
    {
      sqlite3_wal_checkpoint_v2 (db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
      return SQLITE_OK;
    }
  pthread_mutex_lock (&c->lock);
  c->pages = pages;
  if (pages >= CKPT_PAGES)
    pthread_cond_signal (&c->cond);
  pthread_mutex_unlock (&c->lock);
  return SQLITE_OK;
}

static void
ckpt_stop (struct sbx_store *st)
{
  struct checkpointer *c = st->ckpt;
  if (c == NULL)
    return;
  sqlite3_wal_hook (st->db, NULL, NULL);
  pthread_mutex_lock (&c->lock);
  c->stopping = true;
  pthread_cond_signal (&c->cond);
  pthread_mutex_unlock (&c->lock);
  pthread_join (c->thread, NULL);
  sqlite3_close (c->db);
  pthread_cond_destroy (&c->cond);
  pthread_mutex_destroy (&c->lock);
  free (c);
  st->ckpt = NULL;
}

/* Start the checkpointer of ST's file PATH; without one (no memory, no
   thread, no second connection) SQLite's own automatic checkpoints stay. */
static void
ckpt_start (struct sbx_store *st, const char *path)
{
  struct checkpointer *c = calloc (1, sizeof *c);
  if (c == NULL)
    return;
  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->cond, NULL);
  if (sqlite3_open_v2 (path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK
      || sqlite3_busy_timeout (c->db, 1000) != SQLITE_OK || pthread_create (&c->thread, NULL, ckpt_main, c) != 0)
    {
      sqlite3_close (c->db);
      pthread_cond_destroy (&c->cond);
      pthread_mutex_destroy (&c->lock);
      free (c);
      return;
    }
  st->ckpt = c;
  /* replaces SQLite's automatic checkpoints, which use the same hook */
  sqlite3_wal_hook (st->db, ckpt_wal_hook, c);
}

/* ---- work after the answer (sbx_store_later) ---- */

#define LATER_MAX 64 /* queued at most; past it the caller does its own */

/* The store whose queued work this thread is doing: its own use of the
   store must not wait for that work. */
static __thread const struct sbx_store *doing_later;

static void
later_do (struct sbx_store *st, struct later *w)
{
  const struct sbx_store *outer = doing_later;
  doing_later = st;
  w->fn (st, w->ud);
  doing_later = outer;
  free (w);
  pthread_mutex_lock (&st->later.lock);
  __atomic_store_n (&st->later.pending, st->later.pending - 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&st->later.cond);
  pthread_mutex_unlock (&st->later.lock);
}

/* Take the next queued piece; called with later.lock held. */
static struct later *
later_take (struct laters *l)
{
  struct later *w = l->head;
  if (w)
    {
      l->head = w->next;
      if (l->head == NULL)
        l->tail = &l->head;
    }
  return w;
}

/* Do what is queued, and wait for more: the store's thread (THREAD)
   until it is stopped, a user of the store until nothing is queued or
   being done. */
static void
later_work (struct sbx_store *st, bool thread)
{
  struct laters *l = &st->later;
  pthread_mutex_lock (&l->lock);
  while (thread ? !l->stopping : l->pending > 0)
    {
      struct later *w = later_take (l);
      if (w == NULL)
        {
          pthread_cond_wait (&l->cond, &l->lock);
          continue;
        }
      pthread_mutex_unlock (&l->lock);
      later_do (st, w);
      pthread_mutex_lock (&l->lock);
    }
  pthread_mutex_unlock (&l->lock);
}

static void
later_settle (struct sbx_store *st)
{
  if (doing_later != st && __atomic_load_n (&st->later.pending, __ATOMIC_ACQUIRE) > 0)
    later_work (st, false);
}

static void *
later_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-later");
  /* at the normal priority, whatever its creator's: requests wait for it */
  setpriority (PRIO_PROCESS, (id_t) gettid (), 0);
  later_work (arg, true);
  return NULL;
}

void
sbx_store_later (struct sbx_store *st, sbx_store_later_fn fn, void *ud)
{
  struct laters *l = &st->later;
  struct later *w = malloc (sizeof *w);
  pthread_mutex_lock (&l->lock);
  if (w && !l->started && !l->stopping)
    l->started = pthread_create (&l->thread, NULL, later_main, st) == 0;
  if (w == NULL || !l->started || l->stopping || l->pending >= LATER_MAX)
    {
      /* done now instead, after what was queued before it */
      pthread_mutex_unlock (&l->lock);
      free (w);
      fn (st, ud);
      return;
    }
  *w = (struct later) { .fn = fn, .ud = ud };
  *l->tail = w;
  l->tail = &w->next;
  __atomic_store_n (&l->pending, l->pending + 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

void
sbx_store_flush (struct sbx_store *st)
{
  later_settle (st);
}

/* Stop the thread; what is still queued is done by the caller. */
static void
later_stop (struct sbx_store *st)
{
  struct laters *l = &st->later;
  pthread_mutex_lock (&l->lock);
  l->stopping = true;
  pthread_cond_broadcast (&l->cond);
  bool started = l->started;
  pthread_mutex_unlock (&l->lock);
  if (started)
    pthread_join (l->thread, NULL);
  later_settle (st);
  pthread_cond_destroy (&l->cond);
  pthread_mutex_destroy (&l->lock);
}

void
sbx_store_close (struct sbx_store *st)
{
  if (st == NULL)
    return;
  later_stop (st);
  ckpt_stop (st);
  for (int i = 0; i < S_COUNT; i++)
    sqlite3_finalize (st->stmt[i]);
  /* The last connection to close checkpoints and removes the -wal file. */
  sqlite3_close (st->db);
  pthread_mutex_destroy (&st->lock);
  free (st->held);
  free (st);
}

int
sbx_store_open (const char *path, struct sbx_store **out, struct sbx_err *err)
{
  *out = NULL;
  if (path == NULL || *path == '\0')
    return sbx_failx (err, EINVAL, "database: no path");

  /* Create the file ourselves, 0600: it holds key hashes and webhook
     secrets, SQLite would make it 0644, and gives the -wal and -shm files
     the mode of the database. */
  if (strcmp (path, ":memory:") != 0)
    {
      cleanup_close int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0)
        return sbx_fail (err, errno, "open %s", path);
    }

  struct sbx_store *st = calloc (1, sizeof *st);
  if (st == NULL)
    return fail_nomem (err);
  pthread_mutex_init (&st->lock, NULL);
  pthread_mutex_init (&st->later.lock, NULL);
  pthread_cond_init (&st->later.cond, NULL);
  st->later.tail = &st->later.head;

  /* NOMUTEX: the connection is only used under st->lock. */
  int rc = sqlite3_open_v2 (path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK)
    {
      sbx_failx (err, db_code (rc), "database: open %s: %s", path,
                 st->db ? sqlite3_errmsg (st->db) : sqlite3_errstr (rc));
      sbx_store_close (st);
      return -1;
    }

  char mode[16] = "";
  /* busy_timeout first: switching to WAL needs a lock another process may
     hold.  synchronous=NORMAL in WAL mode cannot corrupt the database; a
     power cut may lose the last commits, a crashed process loses none. */
  if (exec (st, "PRAGMA busy_timeout = 5000", NULL, NULL, err, "busy_timeout") < 0
      || exec (st, "PRAGMA journal_mode = WAL", journal_mode_cb, mode, err, "journal_mode") < 0
      || exec (st, "PRAGMA synchronous = NORMAL", NULL, NULL, err, "synchronous") < 0
      || exec (st, "PRAGMA foreign_keys = ON", NULL, NULL, err, "foreign_keys") < 0)
    goto fail;
  if (strcmp (mode, "wal") != 0 && strcmp (path, ":memory:") != 0)
    {
      sbx_failx (err, EIO, "database: cannot use WAL mode (journal mode is %s)", mode);
      goto fail;
    }
  if (create_schema (st, err) < 0 || sbx_store_agents_schema (st, err) < 0 || sbx_store_samples_schema (st, err) < 0)
    goto fail;

  for (int i = 0; i < S_COUNT; i++)
    {
      rc = sqlite3_prepare_v3 (st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
      if (rc != SQLITE_OK)
        {
          char what[32];
          snprintf (what, sizeof what, "prepare statement %d", i);
          db_fail (st->db, rc, err, what);
          goto fail;
        }
    }
  if (strcmp (path, ":memory:") != 0)
    ckpt_start (st, path);
  *out = st;
  return 0;

fail:
  sbx_err_wrap (err, "%s", path);
  sbx_store_close (st);
  return -1;
}

/* --------------------------------------------------------- organisations */

static void
org_from_row (sqlite3_stmt *s, struct sbx_org *o)
{
  memset (o, 0, sizeof *o);
  COL_COPY (s, 0, o->id);
  COL_COPY (s, 1, o->name);
  o->max_sandboxes = (uint32_t) sqlite3_column_int64 (s, 2);
  o->max_timeout_s = (uint32_t) sqlite3_column_int64 (s, 3);
  o->max_upload_bytes = (uint64_t) sqlite3_column_int64 (s, 4);
  COL_COPY (s, 5, o->plan);
  o->monthly_ms = sqlite3_column_int64 (s, 6);
}

static int
check_org_name (const char *name, struct sbx_err *err)
{
  if (name == NULL || *name == '\0')
    return sbx_failx (err, EINVAL, "organisation name is empty");
  if (strlen (name) >= sizeof ((struct sbx_org *) 0)->name)
    return sbx_failx (err, EINVAL, "organisation name is too long");
  for (const char *c = name; *c; c++)
    if ((unsigned char) *c < 0x20 || *c == 0x7f)
      return sbx_failx (err, EINVAL, "organisation name contains a control character");
  return 0;
}

/* The legacy monthly_hours column: MS in whole hours, rounded up. */
static int64_t
whole_hours (int64_t ms)
{
  return (ms + SBX_MS_PER_HOUR - 1) / SBX_MS_PER_HOUR;
}

/* The plan and limits of O are ones an organisation may have. */
static int
check_org_limits (const struct sbx_org *o, struct sbx_err *err)
{
  if (sbx_plan_find (o->plan) == NULL)
    return sbx_failx (err, EINVAL, "unknown plan %.*s (%s)", (int) strnlen (o->plan, sizeof o->plan), o->plan,
                      sbx_plan_names ());
  if (o->max_sandboxes < 1 || o->max_sandboxes > SBX_PLAN_MAX_SANDBOXES_CAP)
    return sbx_failx (err, EINVAL, "max sandboxes must be between 1 and %u", SBX_PLAN_MAX_SANDBOXES_CAP);
  if (o->max_timeout_s < 1 || o->max_timeout_s > SBX_PLAN_TIMEOUT_CAP)
    return sbx_failx (err, EINVAL, "max timeout must be between 1 and %u seconds", SBX_PLAN_TIMEOUT_CAP);
  if (o->monthly_ms < 0 || o->monthly_ms > SBX_PLAN_MONTHLY_MS_CAP)
    return sbx_failx (err, EINVAL, "monthly hours must be at most %u (0: unlimited)", SBX_PLAN_MONTHLY_HOURS_CAP);
  if (o->max_upload_bytes > INT64_MAX)
    return sbx_failx (err, EINVAL, "upload limit too large");
  return 0;
}

/* Insert O (id assigned into ID); 1 when inserted, 0 when the name exists. */
static int
org_insert (struct sbx_store *st, const struct sbx_org *o, char id[SBX_STORE_ID_MAX], struct sbx_err *err)
{
  if (random_id (id, SBX_STORE_ID_MAX, "org_", err) < 0)
    return -1;
  /* OR IGNORE: another process may have created it meanwhile. */
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_INSERT];
  uint64_t upload = o->max_upload_bytes ? o->max_upload_bytes : DEFAULT_MAX_UPLOAD_BYTES;
  int rc = bind_text (s, 1, id) | BIND_FIXED (s, 2, o->name) | sqlite3_bind_int64 (s, 3, o->max_sandboxes)
           | sqlite3_bind_int64 (s, 4, o->max_timeout_s) | sqlite3_bind_int64 (s, 5, (sqlite3_int64) upload)
           | sqlite3_bind_int64 (s, 6, sbx_wall_ms ()) | BIND_FIXED (s, 7, o->plan)
           | sqlite3_bind_int64 (s, 8, o->monthly_ms) | sqlite3_bind_int64 (s, 9, whole_hours (o->monthly_ms));
  if (bind_check (st, rc, err, "create organisation") < 0 || step_done (st, s, err, "create organisation") < 0)
    return -1;
  return sqlite3_changes (st->db) > 0;
}

/* 1 and *OUT when the organisation exists, else 0. */
static int
org_find (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_BY_NAME];
  if (bind_check (st, bind_text (s, 1, name), err, "find organisation") < 0)
    return -1;
  int r = step_row (st, s, err, "find organisation");
  if (r > 0)
    org_from_row (s, out);
  return r;
}

static int
org_ensure_locked (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err)
{
  int r = org_find (st, name, out, err);
  if (r != 0)
    return r < 0 ? -1 : 0;

  const struct sbx_plan *p = sbx_plan_default ();
  struct sbx_org o = { .max_sandboxes = p->max_sandboxes, .max_timeout_s = p->max_timeout_s,
                       .monthly_ms = p->monthly_hours * SBX_MS_PER_HOUR };
  char id[SBX_STORE_ID_MAX];
  copy_str (o.name, sizeof o.name, name);
  copy_str (o.plan, sizeof o.plan, p->name);
  if (org_insert (st, &o, id, err) < 0)
    return -1;
  r = org_find (st, name, out, err);
  if (r == 0)
    return sbx_failx (err, EIO, "database: organisation %s vanished", name);
  return r < 0 ? -1 : 0;
}

int
sbx_store_org_ensure (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err)
{
  struct sbx_org tmp;
  if (check_org_name (name, err) < 0)
    return -1;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  return org_ensure_locked (st, name, out ? out : &tmp, err);
}

int
sbx_store_org_get (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  if (check_org_name (name, err) < 0)
    return -1;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  int r = org_find (st, name, out, err);
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "organisation %s not found", name);
  return 0;
}

int
sbx_store_org_get_id (struct sbx_store *st, const char *id, struct sbx_org *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_BY_ID];
  if (bind_check (st, bind_text (s, 1, id), err, "find organisation") < 0)
    return -1;
  int r = step_row (st, s, err, "find organisation");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "organisation %s not found", id);
  org_from_row (s, out);
  return 0;
}

int
sbx_store_org_list (struct sbx_store *st, struct sbx_org **v, size_t *n, struct sbx_err *err)
{
  struct sbx_org *orgs = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_LIST];
  while ((r = step_row (st, s, err, "list organisations")) > 0)
    {
      struct sbx_org *one = sbx_grow (&orgs, &count, &cap, sizeof *orgs);
      if (one == NULL)
        {
          r = fail_nomem (err);
          break;
        }
      org_from_row (s, one);
    }
  if (r < 0)
    {
      free (orgs);
      return -1;
    }
  *v = orgs;
  *n = count;
  return 0;
}

int
sbx_store_org_create (struct sbx_store *st, struct sbx_org *o, struct sbx_err *err)
{
  char id[SBX_STORE_ID_MAX];
  if (o == NULL)
    return sbx_failx (err, EINVAL, "no organisation");
  o->name[sizeof o->name - 1] = '\0';
  if (check_org_name (o->name, err) < 0 || check_org_limits (o, err) < 0)
    return -1;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  int r = org_insert (st, o, id, err);
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, EEXIST, "organisation %s already exists", o->name);
  copy_str (o->id, sizeof o->id, id);
  if (o->max_upload_bytes == 0)
    o->max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES;
  return 0;
}

int
sbx_store_org_update (struct sbx_store *st, const struct sbx_org *o, struct sbx_err *err)
{
  if (o == NULL)
    return sbx_failx (err, EINVAL, "no organisation");
  if (strnlen (o->name, sizeof o->name) == sizeof o->name)
    return sbx_failx (err, EINVAL, "organisation name is too long");
  if (check_org_name (o->name, err) < 0 || check_org_limits (o, err) < 0)
    return -1;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_UPDATE];
  int rc = bind_text (s, 1, o->name) | BIND_FIXED (s, 2, o->plan) | sqlite3_bind_int64 (s, 3, o->max_sandboxes)
           | sqlite3_bind_int64 (s, 4, o->max_timeout_s) | sqlite3_bind_int64 (s, 5, o->monthly_ms)
           | sqlite3_bind_int64 (s, 6, whole_hours (o->monthly_ms));
  if (bind_check (st, rc, err, "update organisation") < 0 || step_done (st, s, err, "update organisation") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "organisation %s not found", o->name);
  return 0;
}

int
sbx_store_org_set_limits (struct sbx_store *st, const char *name, uint32_t max_sandboxes, uint32_t max_timeout_s,
                          uint64_t max_upload_bytes, struct sbx_err *err)
{
  if (check_org_name (name, err) < 0)
    return -1;
  if (max_upload_bytes > INT64_MAX)
    return sbx_failx (err, EINVAL, "upload limit too large");
  if (max_timeout_s > SBX_PLAN_TIMEOUT_CAP || max_sandboxes > SBX_PLAN_MAX_SANDBOXES_CAP)
    return sbx_failx (err, EINVAL, "limit out of bounds");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORG_LIMITS];
  int rc = bind_text (s, 1, name) | sqlite3_bind_int64 (s, 2, max_sandboxes) | sqlite3_bind_int64 (s, 3, max_timeout_s)
           | sqlite3_bind_int64 (s, 4, (sqlite3_int64) max_upload_bytes);
  if (bind_check (st, rc, err, "set limits") < 0 || step_done (st, s, err, "set limits") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "organisation %s not found", name);
  return 0;
}

/* -------------------------------------------------------------- API keys */

int
sbx_store_key_create (struct sbx_store *st, const char *org_name, const char *style, char *key, size_t key_size,
                      struct sbx_key_info *info, struct sbx_err *err)
{
  if (style == NULL || (strcmp (style, "sk-sb-") != 0 && strcmp (style, "e2b_") != 0))
    return sbx_failx (err, EINVAL, "unknown API key style %s (sk-sb- or e2b_)", style ? style : "(null)");
  if (check_org_name (org_name, err) < 0)
    return -1;
  size_t slen = strlen (style);
  if (key == NULL || key_size < slen + 2 * KEY_RANDOM_BYTES + 1)
    return sbx_failx (err, EINVAL, "API key buffer too small");

  unsigned char rnd[KEY_RANDOM_BYTES];
  char plain[64], hash[65], hint[KEY_HINT_CHARS + 1], id[SBX_STORE_ID_MAX];
  if (sbx_random_bytes (rnd, sizeof rnd) < 0)
    return sbx_fail (err, errno, "getrandom");
  memcpy (plain, style, slen);
  hex (rnd, sizeof rnd, plain + slen);
  explicit_bzero (rnd, sizeof rnd);
  copy_str (hint, sizeof hint, plain);
  int64_t now = sbx_wall_ms ();
  if (sha256_hex (plain, hash, err) < 0 || random_id (id, sizeof id, "key_", err) < 0)
    goto fail;

  {
    cleanup_unlock struct sbx_store *locked = store_lock (st);
    cleanup_rollback struct sbx_store *tx = NULL;
    struct sbx_org org;
    if (run (st, S_BEGIN, err, "begin") < 0)
      goto fail;
    tx = st;
    if (org_ensure_locked (st, org_name, &org, err) < 0)
      goto fail;
    {
      cleanup_reset sqlite3_stmt *s = st->stmt[S_KEY_INSERT];
      int rc = bind_text (s, 1, id) | BIND_FIXED (s, 2, org.id) | bind_text (s, 3, hash) | bind_text (s, 4, hint)
               | sqlite3_bind_int64 (s, 5, now);
      if (bind_check (st, rc, err, "create API key") < 0 || step_done (st, s, err, "create API key") < 0)
        goto fail;
    }
    if (run (st, S_COMMIT, err, "commit") < 0)
      goto fail;
    tx = NULL;
    if (info)
      {
        memset (info, 0, sizeof *info);
        copy_str (info->id, sizeof info->id, id);
        copy_str (info->org_name, sizeof info->org_name, org.name);
        copy_str (info->hint, sizeof info->hint, hint);
        info->created_ms = now;
      }
  }
  memcpy (key, plain, strlen (plain) + 1);
  explicit_bzero (plain, sizeof plain);
  return 0;

fail:
  explicit_bzero (plain, sizeof plain);
  return -1;
}

int
sbx_store_key_lookup (struct sbx_store *st, const char *key, struct sbx_org *org, struct sbx_err *err)
{
  char hash[65];
  if (key == NULL || *key == '\0' || strnlen (key, MAX_KEY_LEN + 1) > MAX_KEY_LEN)
    return sbx_failx (err, ENOENT, "invalid API key");
  /* Hashing needs no lock. */
  if (sha256_hex (key, hash, err) < 0)
    return -1;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_KEY_LOOKUP];
  if (bind_check (st, bind_text (s, 1, hash), err, "look up API key") < 0)
    return -1;
  int r = step_row (st, s, err, "look up API key");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "invalid API key");
  if (sqlite3_column_int64 (s, ORG_NCOLS) != 0)
    return sbx_failx (err, EKEYREVOKED, "API key revoked");
  if (org)
    org_from_row (s, org);
  return 0;
}

int
sbx_store_key_list (struct sbx_store *st, struct sbx_key_info **keys, size_t *n, struct sbx_err *err)
{
  struct sbx_key_info *v = NULL;
  size_t count = 0, cap = 0;
  int r;
  *keys = NULL;
  *n = 0;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_KEY_LIST];
  while ((r = step_row (st, s, err, "list API keys")) > 0)
    {
      struct sbx_key_info *k = sbx_grow (&v, &count, &cap, sizeof *v);
      if (k == NULL)
        {
          free (v);
          return fail_nomem (err);
        }
      COL_COPY (s, 0, k->id);
      COL_COPY (s, 1, k->org_name);
      COL_COPY (s, 2, k->hint);
      k->created_ms = sqlite3_column_int64 (s, 3);
      k->revoked_ms = sqlite3_column_int64 (s, 4);
    }
  if (r < 0)
    {
      free (v);
      return -1;
    }
  *keys = v;
  *n = count;
  return 0;
}

int
sbx_store_key_revoke (struct sbx_store *st, const char *id_or_key, struct sbx_err *err)
{
  char hash[65];
  if (id_or_key == NULL || *id_or_key == '\0' || strnlen (id_or_key, MAX_KEY_LEN + 1) > MAX_KEY_LEN)
    return sbx_failx (err, ENOENT, "no such API key");
  /* Key ids ("key_...") and keys ("sk-sb-...", "e2b_...") never look
     alike, so one statement matches either. */
  if (sha256_hex (id_or_key, hash, err) < 0)
    return -1;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_KEY_REVOKE];
  int rc = bind_text (s, 1, id_or_key) | bind_text (s, 2, hash) | sqlite3_bind_int64 (s, 3, sbx_wall_ms ());
  if (bind_check (st, rc, err, "revoke API key") < 0 || step_done (st, s, err, "revoke API key") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "no such API key");
  return 0;
}

int
sbx_store_key_count (struct sbx_store *st, int *n, struct sbx_err *err)
{
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_KEY_COUNT];
  int r = step_row (st, s, err, "count API keys");
  if (r < 0)
    return -1;
  *n = r ? (int) sqlite3_column_int64 (s, 0) : 0;
  return 0;
}

/* ------------------------------------------------------- sandbox records */

void
sbx_sandbox_rec_free (struct sbx_sandbox_rec *r)
{
  if (r == NULL)
    return;
  free (r->metadata_json);
  r->metadata_json = NULL;
}

void
sbx_sandbox_recs_free (struct sbx_sandbox_rec *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_sandbox_rec_free (&v[i]);
  free (v);
}

static int
sandbox_from_row (sqlite3_stmt *s, struct sbx_sandbox_rec *r)
{
  memset (r, 0, sizeof *r);
  COL_COPY (s, 0, r->id);
  COL_COPY (s, 1, r->org_id);
  COL_COPY (s, 2, r->template_id);
  COL_COPY (s, 3, r->status);
  r->started_ms = sqlite3_column_int64 (s, 5);
  r->end_ms = sqlite3_column_int64 (s, 6);
  r->stopped_ms = sqlite3_column_int64 (s, 7);
  COL_COPY (s, 8, r->stop_reason);
  r->cpu_count = (uint32_t) sqlite3_column_int64 (s, 9);
  r->memory_mb = (uint32_t) sqlite3_column_int64 (s, 10);
  r->disk_mb = (uint32_t) sqlite3_column_int64 (s, 11);
  COL_COPY (s, 12, r->agent_id);
  COL_COPY (s, 13, r->mode);
  return col_dup (s, 4, &r->metadata_json);
}

/* The ledger's part of saving record R (store.h, "The metering ledger");
   in the caller's transaction. */
static int
meter_locked (struct sbx_store *st, const struct sbx_sandbox_rec *r, struct sbx_err *err)
{
  int64_t now = sbx_wall_ms ();
  int rc;
  if (strcmp (r->status, "creating") == 0)
    return 0;
  if (strcmp (r->status, "running") == 0)
    {
      cleanup_reset sqlite3_stmt *s = st->stmt[S_TIME_OPEN];
      rc = BIND_FIXED (s, 1, r->id) | BIND_FIXED (s, 2, r->org_id) | sqlite3_bind_int64 (s, 3, now);
      if (bind_check (st, rc, err, "meter sandbox") < 0 || step_done (st, s, err, "meter sandbox") < 0)
        return -1;
      return 0;
    }
  int64_t end = r->stopped_ms > 0 && r->stopped_ms < now ? r->stopped_ms : now;
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TIME_CLOSE];
  rc = BIND_FIXED (s, 1, r->id) | sqlite3_bind_int64 (s, 2, end);
  if (bind_check (st, rc, err, "meter sandbox") < 0 || step_done (st, s, err, "meter sandbox") < 0)
    return -1;
  return 0;
}

static int
sandbox_put_locked (struct sbx_store *st, const struct sbx_sandbox_rec *r, struct sbx_err *err)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_PUT];
  int rc = BIND_FIXED (s, 1, r->id) | BIND_FIXED (s, 2, r->org_id) | BIND_FIXED (s, 3, r->template_id)
           | BIND_FIXED (s, 4, r->status) | bind_text (s, 5, r->metadata_json)
           | sqlite3_bind_int64 (s, 6, r->started_ms) | sqlite3_bind_int64 (s, 7, r->end_ms)
           | sqlite3_bind_int64 (s, 8, r->stopped_ms) | BIND_FIXED (s, 9, r->stop_reason)
           | sqlite3_bind_int64 (s, 10, r->cpu_count) | sqlite3_bind_int64 (s, 11, r->memory_mb)
           | sqlite3_bind_int64 (s, 12, r->disk_mb) | BIND_FIXED (s, 13, r->agent_id) | BIND_FIXED (s, 14, r->mode);
  if (bind_check (st, rc, err, "save sandbox") < 0 || step_done (st, s, err, "save sandbox") < 0)
    return -1;
  return meter_locked (st, r, err);
}

int
sbx_store_sandbox_put (struct sbx_store *st, const struct sbx_sandbox_rec *r, struct sbx_err *err)
{
  if (r == NULL || r->id[0] == '\0')
    return sbx_failx (err, EINVAL, "sandbox record without id");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  if (sandbox_put_locked (st, r, err) < 0 || run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

int
sbx_store_sandbox_set_agent (struct sbx_store *st, const char *id, const char *agent_id, const char *mode,
                             struct sbx_err *err)
{
  if (id == NULL)
    return sbx_failx (err, ENOENT, "sandbox not found");
  agent_id = agent_id ? agent_id : "";
  mode = mode ? mode : "";
  if (strlen (agent_id) >= sizeof ((struct sbx_sandbox_rec *) 0)->agent_id)
    return sbx_failx (err, EINVAL, "agent_id is longer than %zu bytes",
                      sizeof ((struct sbx_sandbox_rec *) 0)->agent_id - 1);
  if (strlen (mode) >= sizeof ((struct sbx_sandbox_rec *) 0)->mode)
    return sbx_failx (err, EINVAL, "mode is too long");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_AGENT];
  int rc = bind_text (s, 1, id) | bind_text (s, 2, agent_id) | bind_text (s, 3, mode);
  if (bind_check (st, rc, err, "set sandbox agent") < 0 || step_done (st, s, err, "set sandbox agent") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "sandbox not found");
  return 0;
}

int
sbx_store_sandbox_get (struct sbx_store *st, const char *id, struct sbx_sandbox_rec *r, struct sbx_err *err)
{
  memset (r, 0, sizeof *r);
  if (id == NULL)
    return sbx_failx (err, ENOENT, "sandbox not found");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_GET];
  if (bind_check (st, bind_text (s, 1, id), err, "get sandbox") < 0)
    return -1;
  int rr = step_row (st, s, err, "get sandbox");
  if (rr < 0)
    return -1;
  if (rr == 0)
    return sbx_failx (err, ENOENT, "sandbox not found");
  if (sandbox_from_row (s, r) < 0)
    return fail_nomem (err);
  return 0;
}

int
sbx_store_sandbox_list (struct sbx_store *st, const char *org_id, const char *status, struct sbx_sandbox_rec **v,
                        size_t *n, struct sbx_err *err)
{
  return sbx_store_sandbox_list_by_agent (st, org_id, NULL, status, v, n, err);
}

int
sbx_store_sandbox_list_by_agent (struct sbx_store *st, const char *org_id, const char *agent_id, const char *status,
                                 struct sbx_sandbox_rec **v, size_t *n, struct sbx_err *err)
{
  struct sbx_sandbox_rec *recs = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  if (org_id == NULL)
    return 0;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_LIST];
  int rc = bind_text (s, 1, org_id) | bind_text (s, 2, status) | bind_text (s, 3, agent_id);
  if (bind_check (st, rc, err, "list sandboxes") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list sandboxes")) > 0)
    {
      struct sbx_sandbox_rec *one = sbx_grow (&recs, &count, &cap, sizeof *recs);
      if (one == NULL || sandbox_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_sandbox_recs_free (recs, count);
      return -1;
    }
  *v = recs;
  *n = count;
  return 0;
}

static int count_live_locked (struct sbx_store *st, const char *org_id, uint64_t *n, struct sbx_err *err);

int
sbx_store_sandbox_count_live (struct sbx_store *st, const char *org_id, uint32_t *n, struct sbx_err *err)
{
  *n = 0;
  if (org_id == NULL)
    return 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  uint64_t live;
  if (count_live_locked (st, org_id, &live, err) < 0)
    return -1;
  *n = (uint32_t) live;
  return 0;
}

int
sbx_store_sandbox_usage_ms (struct sbx_store *st, const char *org_id, int64_t since_ms, int64_t now_ms, int64_t *ms,
                            struct sbx_err *err)
{
  *ms = 0;
  if (org_id == NULL || now_ms <= since_ms)
    return 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_USAGE];
  int rc = bind_text (s, 1, org_id) | sqlite3_bind_int64 (s, 2, since_ms) | sqlite3_bind_int64 (s, 3, now_ms);
  if (bind_check (st, rc, err, "sandbox usage") < 0)
    return -1;
  int r = step_row (st, s, err, "sandbox usage");
  if (r < 0)
    return -1;
  /* TOTAL is a float, exact for sums below 2^53 ms (285,000 years) */
  *ms = r ? (int64_t) sqlite3_column_double (s, 0) : 0;
  return 0;
}

int
sbx_store_orgs_out_of_time (struct sbx_store *st, int64_t since_ms, int64_t now_ms, char (*ids)[SBX_STORE_ID_MAX],
                            size_t max, size_t *n, struct sbx_err *err)
{
  *n = 0;
  if (max == 0 || now_ms <= since_ms)
    return 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_ORGS_OUT];
  int rc = sqlite3_bind_int64 (s, 2, since_ms) | sqlite3_bind_int64 (s, 3, now_ms)
           | sqlite3_bind_int64 (s, 4, (sqlite3_int64) (max > INT32_MAX ? INT32_MAX : max));
  if (bind_check (st, rc, err, "organisations out of time") < 0)
    return -1;
  int r = 0;
  while (*n < max && (r = step_row (st, s, err, "organisations out of time")) > 0)
    col_copy (s, 0, ids[(*n)++], SBX_STORE_ID_MAX);
  return r < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ runs */

#define MAX_RUN_REASON 1000

void
sbx_run_rec_free (struct sbx_run_rec *r)
{
  if (r == NULL)
    return;
  free (r->code);
  free (r->stdout_text);
  free (r->stderr_text);
  free (r->reason);
  r->code = r->stdout_text = r->stderr_text = r->reason = NULL;
}

void
sbx_run_recs_free (struct sbx_run_rec *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_run_rec_free (&v[i]);
  free (v);
}

/* The length of TEXT cut to at most MAX bytes, on a UTF-8 character
   boundary; *CUT tells whether it was cut. */
static int
utf8_prefix_len (const char *text, size_t max, bool *cut)
{
  size_t l = strnlen (text, max + 1);
  *cut = l > max;
  if (*cut)
    for (l = max; l > 0 && ((unsigned char) text[l] & 0xc0) == 0x80; l--)
      ;
  return (int) l;
}

/* Bind TEXT (NULL: SQL NULL) cut to MAX bytes; sets *CUT when it was. */
static int
bind_text_max (sqlite3_stmt *s, int i, const char *text, size_t max, bool *cut)
{
  *cut = false;
  if (text == NULL)
    return sqlite3_bind_null (s, i);
  return sqlite3_bind_text (s, i, text, utf8_prefix_len (text, max, cut), SQLITE_TRANSIENT);
}

static int
run_from_row (sqlite3_stmt *s, struct sbx_run_rec *r)
{
  memset (r, 0, sizeof *r);
  COL_COPY (s, 0, r->id);
  COL_COPY (s, 1, r->sandbox_id);
  COL_COPY (s, 2, r->org_id);
  COL_COPY (s, 3, r->status);
  r->exit_code = sqlite3_column_int (s, 7);
  r->created_ms = sqlite3_column_int64 (s, 8);
  r->finished_ms = sqlite3_column_int64 (s, 9);
  r->timeout_s = (uint32_t) sqlite3_column_int64 (s, 10);
  r->stdout_truncated = sqlite3_column_int (s, 12) != 0;
  r->stderr_truncated = sqlite3_column_int (s, 13) != 0;
  if (col_dup (s, 4, &r->code) < 0 || col_dup (s, 5, &r->stdout_text) < 0 || col_dup (s, 6, &r->stderr_text) < 0
      || col_dup (s, 11, &r->reason) < 0)
    {
      sbx_run_rec_free (r);
      return -1;
    }
  return 0;
}

/* Step the bound statement S and collect its rows into *V, *N. */
static int
runs_collect (struct sbx_store *st, sqlite3_stmt *s, struct sbx_run_rec **v, size_t *n, struct sbx_err *err)
{
  struct sbx_run_rec *runs = NULL;
  size_t count = 0, cap = 0;
  int r;
  while ((r = step_row (st, s, err, "list runs")) > 0)
    {
      struct sbx_run_rec *one = sbx_grow (&runs, &count, &cap, sizeof *runs);
      if (one == NULL || run_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_run_recs_free (runs, count);
      return -1;
    }
  *v = runs;
  *n = count;
  return 0;
}

int
sbx_store_run_create (struct sbx_store *st, struct sbx_run_rec *r, struct sbx_err *err)
{
  if (r == NULL || r->sandbox_id[0] == '\0' || r->org_id[0] == '\0')
    return sbx_failx (err, EINVAL, "run without sandbox or organisation");
  const char *code = r->code ? r->code : "";
  if (strnlen (code, SBX_RUN_CODE_MAX + 1) > SBX_RUN_CODE_MAX)
    return sbx_failx (err, EINVAL, "code is longer than %d bytes", SBX_RUN_CODE_MAX);
  char id[SBX_STORE_ID_MAX];
  if (random_id (id, sizeof id, "run_", err) < 0)
    return -1;
  int64_t now = sbx_wall_ms ();

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_RUN_INSERT];
  int rc = bind_text (s, 1, id) | BIND_FIXED (s, 2, r->sandbox_id) | BIND_FIXED (s, 3, r->org_id)
           | bind_text (s, 4, code) | sqlite3_bind_int64 (s, 5, now) | sqlite3_bind_int64 (s, 6, r->timeout_s);
  if (bind_check (st, rc, err, "create run") < 0 || step_done (st, s, err, "create run") < 0)
    return -1;
  copy_str (r->id, sizeof r->id, id);
  copy_str (r->status, sizeof r->status, "running");
  r->created_ms = now;
  r->finished_ms = 0;
  r->exit_code = -1;
  return 0;
}

int
sbx_store_run_finish (struct sbx_store *st, const struct sbx_run_rec *r, struct sbx_err *err)
{
  if (r == NULL || r->id[0] == '\0')
    return sbx_failx (err, EINVAL, "run without id");
  const char *status = r->status;
  if (strcmp (status, "completed") != 0 && strcmp (status, "failed") != 0 && strcmp (status, "timeout") != 0)
    return sbx_failx (err, EINVAL, "a run finishes as completed, failed or timeout, not %.*s",
                      (int) strnlen (status, sizeof r->status), status);
  bool out_cut, err_cut, reason_cut;
  int64_t finished = r->finished_ms ? r->finished_ms : sbx_wall_ms ();

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_RUN_FINISH];
    int rc = BIND_FIXED (s, 1, r->id) | BIND_FIXED (s, 2, r->org_id) | BIND_FIXED (s, 3, r->status)
             | bind_text_max (s, 4, r->stdout_text, SBX_RUN_OUTPUT_MAX, &out_cut)
             | bind_text_max (s, 5, r->stderr_text, SBX_RUN_OUTPUT_MAX, &err_cut)
             | sqlite3_bind_int (s, 6, r->exit_code) | sqlite3_bind_int64 (s, 7, finished)
             | bind_text_max (s, 8, r->reason, MAX_RUN_REASON, &reason_cut);
    rc |= sqlite3_bind_int (s, 9, r->stdout_truncated || out_cut)
          | sqlite3_bind_int (s, 10, r->stderr_truncated || err_cut);
    if (bind_check (st, rc, err, "finish run") < 0 || step_done (st, s, err, "finish run") < 0)
      return -1;
    if (sqlite3_changes (st->db) > 0)
      return 0;
  }
  /* Nothing changed: no such run, or one that is already finished. */
  cleanup_reset sqlite3_stmt *s = st->stmt[S_RUN_STATUS];
  if (bind_check (st, BIND_FIXED (s, 1, r->id) | BIND_FIXED (s, 2, r->org_id), err, "finish run") < 0)
    return -1;
  int found = step_row (st, s, err, "finish run");
  if (found < 0)
    return -1;
  if (found == 0)
    return sbx_failx (err, ENOENT, "run not found");
  return sbx_failx (err, EALREADY, "run %s is already %s", r->id, (const char *) sqlite3_column_text (s, 0));
}

int
sbx_store_run_get (struct sbx_store *st, const char *org_id, const char *sandbox_id, const char *run_id,
                   struct sbx_run_rec *r, struct sbx_err *err)
{
  memset (r, 0, sizeof *r);
  if (org_id == NULL || run_id == NULL)
    return sbx_failx (err, ENOENT, "run not found");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_RUN_GET];
  int rc = bind_text (s, 1, run_id) | bind_text (s, 2, org_id) | bind_text (s, 3, sandbox_id);
  if (bind_check (st, rc, err, "get run") < 0)
    return -1;
  int found = step_row (st, s, err, "get run");
  if (found < 0)
    return -1;
  if (found == 0)
    return sbx_failx (err, ENOENT, "run not found");
  if (run_from_row (s, r) < 0)
    return fail_nomem (err);
  return 0;
}

int
sbx_store_run_list (struct sbx_store *st, const char *org_id, const char *sandbox_id, uint32_t offset,
                    uint32_t limit, struct sbx_run_rec **v, size_t *n, struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  if (org_id == NULL)
    return 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[sandbox_id ? S_RUN_LIST_SB : S_RUN_LIST_ORG];
  /* LIMIT -1: no limit. */
  int rc = bind_text (s, 1, org_id) | sqlite3_bind_int64 (s, 3, limit ? (sqlite3_int64) limit : -1)
           | sqlite3_bind_int64 (s, 4, offset);
  if (sandbox_id)
    rc |= bind_text (s, 2, sandbox_id);
  if (bind_check (st, rc, err, "list runs") < 0)
    return -1;
  return runs_collect (st, s, v, n, err);
}

int
sbx_store_run_list_unfinished (struct sbx_store *st, struct sbx_run_rec **v, size_t *n, struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_RUN_UNFINISHED];
  return runs_collect (st, s, v, n, err);
}

/* ---------------------------------------------------------------- events */

void
sbx_event_free (struct sbx_event *e)
{
  if (e == NULL)
    return;
  free (e->data_json);
  e->data_json = NULL;
}

void
sbx_events_free (struct sbx_event *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_event_free (&v[i]);
  free (v);
}

static int
event_from_row (sqlite3_stmt *s, struct sbx_event *e)
{
  memset (e, 0, sizeof *e);
  e->seq = sqlite3_column_int64 (s, 0);
  COL_COPY (s, 1, e->id);
  COL_COPY (s, 2, e->org_id);
  COL_COPY (s, 3, e->sandbox_id);
  COL_COPY (s, 4, e->template_id);
  COL_COPY (s, 5, e->type);
  e->timestamp_ms = sqlite3_column_int64 (s, 6);
  return col_dup (s, 7, &e->data_json);
}

/* Insert EV and queue its deliveries; the caller holds the lock and an open
   transaction.  Fills EV's identity only in *SEQ and ID, which the caller
   copies once the transaction commits. */
static int
event_add_tx (struct sbx_store *st, const struct sbx_event *ev, const char *id, int64_t now, int64_t ts, int64_t *seq,
              struct sbx_err *err)
{
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_EV_INSERT];
    int rc = bind_text (s, 1, id) | BIND_FIXED (s, 2, ev->org_id) | BIND_FIXED (s, 3, ev->sandbox_id)
             | BIND_FIXED (s, 4, ev->template_id) | BIND_FIXED (s, 5, ev->type) | sqlite3_bind_int64 (s, 6, ts)
             | bind_text (s, 7, ev->data_json);
    if (bind_check (st, rc, err, "add event") < 0 || step_done (st, s, err, "add event") < 0)
      return -1;
    *seq = sqlite3_last_insert_rowid (st->db);
  }
  cleanup_reset sqlite3_stmt *s = st->stmt[S_EV_QUEUE];
  int rc = bind_text (s, 1, id) | sqlite3_bind_int64 (s, 2, now) | BIND_FIXED (s, 3, ev->org_id)
           | BIND_FIXED (s, 4, ev->type);
  if (bind_check (st, rc, err, "queue deliveries") < 0 || step_done (st, s, err, "queue deliveries") < 0)
    return -1;
  return 0;
}

/* The index of the place held under ID, or st->n_held; the caller holds
   the lock. */
static size_t
held_find (struct sbx_store *st, const char *id)
{
  size_t i = 0;
  while (i < st->n_held && strcmp (st->held[i].id, id) != 0)
    i++;
  return i;
}

static void
held_drop (struct sbx_store *st, size_t i)
{
  st->held[i] = st->held[--st->n_held];
}

/* One transaction: delete record DROP_ID (may be NULL), save record R (may
   be NULL), and add event EV (may be NULL) with its deliveries. */
static int
record_tx (struct sbx_store *st, const char *drop_id, const struct sbx_sandbox_rec *r, struct sbx_event *ev,
           struct sbx_err *err)
{
  if (ev && (ev->type[0] == '\0' || ev->org_id[0] == '\0'))
    return sbx_failx (err, EINVAL, "event without type or organisation");
  if (r && r->id[0] == '\0')
    return sbx_failx (err, EINVAL, "sandbox record without id");
  char id[SBX_STORE_ID_MAX];
  if (ev && random_uuid (id, sizeof id, err) < 0)
    return -1;
  int64_t now = sbx_wall_ms ();
  int64_t ts = ev && ev->timestamp_ms ? ev->timestamp_ms : now;
  int64_t seq = 0;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  /* a place held in memory is given back with no transaction, or as its
     record commits (under the same lock, so no reserve counts neither) */
  size_t held = drop_id ? held_find (st, drop_id) : st->n_held;
  if (held < st->n_held && r == NULL && ev == NULL)
    {
      held_drop (st, held);
      return 0;
    }
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  if (drop_id && held == st->n_held)
    {
      cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_DELETE];
      if (bind_check (st, bind_text (s, 1, drop_id), err, "delete sandbox") < 0
          || step_done (st, s, err, "delete sandbox") < 0)
        return -1;
    }
  if (r && sandbox_put_locked (st, r, err) < 0)
    return -1;
  if (ev && event_add_tx (st, ev, id, now, ts, &seq, err) < 0)
    return -1;
  if (run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  if (held < st->n_held)
    held_drop (st, held);

  /* Only a committed event gets its identity. */
  if (ev)
    {
      ev->seq = seq;
      copy_str (ev->id, sizeof ev->id, id);
      ev->timestamp_ms = ts;
    }
  return 0;
}

int
sbx_store_event_add (struct sbx_store *st, struct sbx_event *ev, struct sbx_err *err)
{
  if (ev == NULL)
    return sbx_failx (err, EINVAL, "event without type or organisation");
  return record_tx (st, NULL, NULL, ev, err);
}

int
sbx_store_sandbox_record (struct sbx_store *st, const char *drop_id, const struct sbx_sandbox_rec *r,
                          struct sbx_event *ev, struct sbx_err *err)
{
  return record_tx (st, drop_id, r, ev, err);
}

/* ORG_ID's live records, and the places held for its creates in
   progress, into *N; the caller holds the lock. */
static int
count_live_locked (struct sbx_store *st, const char *org_id, uint64_t *n, struct sbx_err *err)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_LIVE];
  if (bind_check (st, bind_text (s, 1, org_id), err, "count sandboxes") < 0)
    return -1;
  int rr = step_row (st, s, err, "count sandboxes");
  if (rr < 0)
    return -1;
  *n = rr ? (uint64_t) sqlite3_column_int64 (s, 0) : 0;
  for (size_t i = 0; i < st->n_held; i++)
    if (strcmp (st->held[i].org_id, org_id) == 0)
      ++*n;
  return 0;
}

/* The place of a create in progress is held in memory, not written as a
   placeholder record: one write transaction fewer per create (its record
   is the first write), and nothing to clean after a crash (a sandbox
   whose record was never written is destroyed at start).  The count and
   the hold happen under the store's lock, as does the record's commit
   that gives the place back, so concurrent creates never pass MAX. */
int
sbx_store_sandbox_reserve (struct sbx_store *st, const char *org_id, uint32_t max, const char *template_id,
                           char id[SBX_STORE_ID_MAX], uint32_t *live, struct sbx_err *err)
{
  (void) template_id;
  if (random_id (id, SBX_STORE_ID_MAX, "rsv_", err) < 0)
    return -1;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  uint64_t n;
  if (count_live_locked (st, org_id, &n, err) < 0)
    return -1;
  if (n >= max)
    return sbx_failk (err, SBX_E_LIMIT, "concurrent sandbox limit reached (%u)", max);
  struct held_place *h = sbx_grow (&st->held, &st->n_held, &st->cap_held, sizeof *st->held);
  if (h == NULL)
    return fail_nomem (err);
  copy_str (h->id, sizeof h->id, id);
  copy_str (h->org_id, sizeof h->org_id, org_id);
  *live = (uint32_t) n + 1;
  return 0;
}

int
sbx_store_sandbox_reserve_id (struct sbx_store *st, const char *org_id, uint32_t max, const char *template_id,
                              const char *id, uint32_t *live, struct sbx_err *err)
{
  struct sbx_sandbox_rec r;
  memset (&r, 0, sizeof r);
  copy_str (r.id, sizeof r.id, id);
  copy_str (r.org_id, sizeof r.org_id, org_id);
  copy_str (r.template_id, sizeof r.template_id, template_id ? template_id : "");
  copy_str (r.status, sizeof r.status, "creating");
  r.started_ms = sbx_wall_ms ();

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  uint64_t n;
  if (count_live_locked (st, org_id, &n, err) < 0)
    return -1;
  if (n >= max)
    return sbx_failk (err, SBX_E_LIMIT, "concurrent sandbox limit reached (%u)", max);
  *live = (uint32_t) n + 1;
  {
    /* a put would replace a record of that id: refuse instead */
    cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_GET];
    if (bind_check (st, bind_text (s, 1, id), err, "reserve sandbox") < 0)
      return -1;
    int rr = step_row (st, s, err, "reserve sandbox");
    if (rr < 0)
      return -1;
    if (rr > 0)
      return sbx_failx (err, EEXIST, "sandbox %s exists already", id);
  }
  if (sandbox_put_locked (st, &r, err) < 0 || run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

int
sbx_store_sandbox_list_live (struct sbx_store *st, struct sbx_sandbox_rec **v, size_t *n, struct sbx_err *err)
{
  struct sbx_sandbox_rec *recs = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_SB_LIVE_ALL];
  while ((r = step_row (st, s, err, "list live sandboxes")) > 0)
    {
      struct sbx_sandbox_rec *one = sbx_grow (&recs, &count, &cap, sizeof *recs);
      if (one == NULL || sandbox_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_sandbox_recs_free (recs, count);
      return -1;
    }
  *v = recs;
  *n = count;
  return 0;
}

int
sbx_store_event_list (struct sbx_store *st, const char *org_id, const char *sandbox_id, uint32_t offset,
                      uint32_t limit, bool asc, const char *const *types, struct sbx_event **v, size_t *n,
                      struct sbx_err *err)
{
  cleanup_free char *types_json = NULL;
  struct sbx_event *evs = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  if (org_id == NULL)
    return 0;
  if (types && types[0] && strv_to_json ((char *const *) types, &types_json, err) < 0)
    return -1;

  enum stmt_id id = sandbox_id ? (asc ? S_EV_LIST_SB_ASC : S_EV_LIST_SB_DESC)
                               : (asc ? S_EV_LIST_ORG_ASC : S_EV_LIST_ORG_DESC);
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[id];
  /* LIMIT -1: no limit. */
  int rc = bind_text (s, 1, org_id) | bind_text (s, 2, types_json)
           | sqlite3_bind_int64 (s, 3, limit ? (sqlite3_int64) limit : -1) | sqlite3_bind_int64 (s, 4, offset);
  if (sandbox_id)
    rc |= bind_text (s, 5, sandbox_id);
  if (bind_check (st, rc, err, "list events") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list events")) > 0)
    {
      struct sbx_event *one = sbx_grow (&evs, &count, &cap, sizeof *evs);
      if (one == NULL || event_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_events_free (evs, count);
      return -1;
    }
  *v = evs;
  *n = count;
  return 0;
}

/* -------------------------------------------------------------- webhooks */

void
sbx_webhook_free (struct sbx_webhook *w)
{
  if (w == NULL)
    return;
  free (w->name);
  free (w->url);
  strv_free (w->events);
  if (w->secret)
    explicit_bzero (w->secret, strlen (w->secret));
  free (w->secret);
  w->name = w->url = w->secret = NULL;
  w->events = NULL;
}

void
sbx_webhooks_free (struct sbx_webhook *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_webhook_free (&v[i]);
  free (v);
}

static int
webhook_from_row (sqlite3_stmt *s, struct sbx_webhook *w)
{
  memset (w, 0, sizeof *w);
  COL_COPY (s, 0, w->id);
  COL_COPY (s, 1, w->org_id);
  w->enabled = sqlite3_column_int (s, 4) != 0;
  w->created_ms = sqlite3_column_int64 (s, 7);
  if (col_dup (s, 2, &w->name) < 0 || col_dup (s, 3, &w->url) < 0 || col_dup (s, 6, &w->secret) < 0
      || (w->events = strv_from_json ((const char *) sqlite3_column_text (s, 5))) == NULL)
    {
      sbx_webhook_free (w);
      return -1;
    }
  return 0;
}

/* 1 and *W for webhook ID (of ORG_ID unless NULL), 0 when there is none. */
static int
webhook_load (struct sbx_store *st, const char *org_id, const char *id, struct sbx_webhook *w, struct sbx_err *err)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[org_id ? S_WH_GET : S_WH_BY_ID];
  int rc = bind_text (s, 1, id);
  if (org_id)
    rc |= bind_text (s, 2, org_id);
  if (bind_check (st, rc, err, "get webhook") < 0)
    return -1;
  int r = step_row (st, s, err, "get webhook");
  if (r > 0 && webhook_from_row (s, w) < 0)
    return fail_nomem (err);
  return r;
}

int
sbx_store_webhook_create (struct sbx_store *st, struct sbx_webhook *w, struct sbx_err *err)
{
  if (w == NULL || w->org_id[0] == '\0' || w->url == NULL)
    return sbx_failx (err, EINVAL, "webhook without organisation or url");
  cleanup_free char *events = NULL;
  char id[SBX_STORE_ID_MAX];
  if (strv_to_json (w->events, &events, err) < 0 || random_id (id, sizeof id, "wh_", err) < 0)
    return -1;
  int64_t now = sbx_wall_ms ();

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_INSERT];
  int rc = bind_text (s, 1, id) | BIND_FIXED (s, 2, w->org_id) | bind_text (s, 3, w->name ? w->name : "")
           | bind_text (s, 4, w->url) | sqlite3_bind_int (s, 5, w->enabled ? 1 : 0) | bind_text (s, 6, events)
           | bind_text (s, 7, w->secret ? w->secret : "") | sqlite3_bind_int64 (s, 8, now);
  if (bind_check (st, rc, err, "create webhook") < 0 || step_done (st, s, err, "create webhook") < 0)
    return -1;
  copy_str (w->id, sizeof w->id, id);
  w->created_ms = now;
  return 0;
}

int
sbx_store_webhook_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_webhook *w,
                       struct sbx_err *err)
{
  memset (w, 0, sizeof *w);
  if (org_id == NULL || id == NULL)
    return sbx_failx (err, ENOENT, "webhook not found");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  int r = webhook_load (st, org_id, id, w, err);
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "webhook not found");
  return 0;
}

int
sbx_store_webhook_list (struct sbx_store *st, const char *org_id, struct sbx_webhook **v, size_t *n,
                        struct sbx_err *err)
{
  struct sbx_webhook *hooks = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  if (org_id == NULL)
    return 0;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_LIST];
  if (bind_check (st, bind_text (s, 1, org_id), err, "list webhooks") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list webhooks")) > 0)
    {
      struct sbx_webhook *one = sbx_grow (&hooks, &count, &cap, sizeof *hooks);
      if (one == NULL || webhook_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_webhooks_free (hooks, count);
      return -1;
    }
  *v = hooks;
  *n = count;
  return 0;
}

int
sbx_store_webhook_update (struct sbx_store *st, const struct sbx_webhook *w, struct sbx_err *err)
{
  if (w == NULL)
    return sbx_failx (err, EINVAL, "no webhook");
  cleanup_free char *events = NULL;
  if (w->events && strv_to_json (w->events, &events, err) < 0)
    return -1;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_UPDATE];
  int rc = BIND_FIXED (s, 1, w->id) | BIND_FIXED (s, 2, w->org_id) | bind_text (s, 3, w->name)
           | bind_text (s, 4, w->url) | sqlite3_bind_int (s, 5, w->enabled ? 1 : 0) | bind_text (s, 6, events)
           | bind_text (s, 7, w->secret);
  if (bind_check (st, rc, err, "update webhook") < 0 || step_done (st, s, err, "update webhook") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "webhook not found");
  return 0;
}

int
sbx_store_webhook_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err)
{
  if (org_id == NULL || id == NULL)
    return sbx_failx (err, ENOENT, "webhook not found");
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_DELETE];
    int rc = bind_text (s, 1, id) | bind_text (s, 2, org_id);
    if (bind_check (st, rc, err, "delete webhook") < 0 || step_done (st, s, err, "delete webhook") < 0)
      return -1;
    if (sqlite3_changes (st->db) == 0)
      return sbx_failx (err, ENOENT, "webhook not found");
  }
  {
    /* The foreign key cascades too; this keeps the promise should the
       file ever be used with foreign keys off. */
    cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_DELETE_DELIVERIES];
    if (bind_check (st, bind_text (s, 1, id), err, "delete deliveries") < 0
        || step_done (st, s, err, "delete deliveries") < 0)
      return -1;
  }
  if (run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

/* ------------------------------------------------------------ deliveries */

void
sbx_delivery_free (struct sbx_delivery *d)
{
  if (d == NULL)
    return;
  free (d->last_error);
  d->last_error = NULL;
}

void
sbx_deliveries_free (struct sbx_delivery *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_delivery_free (&v[i]);
  free (v);
}

static int
delivery_from_row (sqlite3_stmt *s, struct sbx_delivery *d)
{
  memset (d, 0, sizeof *d);
  d->id = sqlite3_column_int64 (s, 0);
  COL_COPY (s, 1, d->webhook_id);
  COL_COPY (s, 2, d->event_id);
  const char *state = (const char *) sqlite3_column_text (s, 3);
  if (state && strcmp (state, "delivered") == 0)
    d->state = SBX_DELIVERY_DELIVERED;
  else if (state && strcmp (state, "failed") == 0)
    d->state = SBX_DELIVERY_FAILED;
  else
    d->state = SBX_DELIVERY_PENDING;
  d->attempts = (uint32_t) sqlite3_column_int64 (s, 4);
  d->next_ms = sqlite3_column_int64 (s, 5);
  d->last_status = sqlite3_column_int (s, 6);
  d->created_ms = sqlite3_column_int64 (s, 8);
  d->updated_ms = sqlite3_column_int64 (s, 9);
  return col_dup (s, 7, &d->last_error);
}

/* 1 and *EV for event ID, 0 when there is none. */
static int
event_load (struct sbx_store *st, const char *id, struct sbx_event *ev, struct sbx_err *err)
{
  cleanup_reset sqlite3_stmt *s = st->stmt[S_EV_BY_ID];
  if (bind_check (st, bind_text (s, 1, id), err, "get event") < 0)
    return -1;
  int r = step_row (st, s, err, "get event");
  if (r > 0 && event_from_row (s, ev) < 0)
    return fail_nomem (err);
  return r;
}

int
sbx_store_delivery_next (struct sbx_store *st, int64_t now_ms, struct sbx_delivery *d, struct sbx_webhook *w,
                         struct sbx_event *ev, int64_t *next_due_ms, struct sbx_err *err)
{
  struct sbx_delivery dl = { 0 };
  struct sbx_webhook wh = { 0 };
  struct sbx_event e = { 0 };
  int found, r;
  if (d)
    memset (d, 0, sizeof *d);
  if (w)
    memset (w, 0, sizeof *w);
  if (ev)
    memset (ev, 0, sizeof *ev);
  if (next_due_ms)
    *next_due_ms = 0;

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_DL_NEXT];
    if (bind_check (st, sqlite3_bind_int64 (s, 1, now_ms), err, "next delivery") < 0)
      return -1;
    found = step_row (st, s, err, "next delivery");
    if (found < 0)
      return -1;
    if (found && delivery_from_row (s, &dl) < 0)
      return fail_nomem (err);
  }
  if (found)
    {
      /* Both exist: deliveries cascade with their webhook, events are
         never deleted. */
      if ((r = webhook_load (st, NULL, dl.webhook_id, &wh, err)) <= 0
          || (r = event_load (st, dl.event_id, &e, err)) <= 0)
        {
          if (r == 0)
            sbx_failx (err, EIO, "database: delivery %lld has lost its webhook or event", (long long) dl.id);
          goto fail;
        }
    }
  if (next_due_ms)
    {
      cleanup_reset sqlite3_stmt *s = st->stmt[S_DL_NEXT_DUE];
      if (bind_check (st, sqlite3_bind_int64 (s, 1, now_ms), err, "next delivery") < 0)
        goto fail;
      if ((r = step_row (st, s, err, "next delivery")) < 0)
        goto fail;
      *next_due_ms = r ? sqlite3_column_int64 (s, 0) : 0;   /* NULL reads as 0 */
    }

  if (d)
    *d = dl;
  else
    sbx_delivery_free (&dl);
  if (w)
    *w = wh;
  else
    sbx_webhook_free (&wh);
  if (ev)
    *ev = e;
  else
    sbx_event_free (&e);
  return found;

fail:
  sbx_delivery_free (&dl);
  sbx_webhook_free (&wh);
  sbx_event_free (&e);
  return -1;
}

int
sbx_store_delivery_record (struct sbx_store *st, int64_t id, int status, const char *error, bool delivered,
                           int64_t next_ms, struct sbx_err *err)
{
  int len = 0;
  if (error)
    {
      /* Keep it short, cut on a UTF-8 character boundary. */
      size_t l = strnlen (error, MAX_DELIVERY_ERROR + 1);
      if (l > MAX_DELIVERY_ERROR)
        for (l = MAX_DELIVERY_ERROR; l > 0 && ((unsigned char) error[l] & 0xc0) == 0x80; l--)
          ;
      len = (int) l;
    }

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_DL_RECORD];
  int rc = sqlite3_bind_int64 (s, 1, id) | sqlite3_bind_int (s, 2, status)
           | (error ? sqlite3_bind_text (s, 3, error, len, SQLITE_TRANSIENT) : sqlite3_bind_null (s, 3))
           | sqlite3_bind_int64 (s, 4, sbx_wall_ms ()) | sqlite3_bind_int64 (s, 5, next_ms > 0 ? next_ms : 0)
           | sqlite3_bind_int (s, 6, delivered ? 1 : 0);
  if (bind_check (st, rc, err, "record delivery") < 0 || step_done (st, s, err, "record delivery") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "delivery %lld not found", (long long) id);
  return 0;
}

int
sbx_store_delivery_list (struct sbx_store *st, const char *org_id, const char *webhook_id,
                         struct sbx_delivery **v, size_t *n, struct sbx_err *err)
{
  struct sbx_delivery *dls = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  if (org_id == NULL || webhook_id == NULL)
    return sbx_failx (err, ENOENT, "webhook not found");

  cleanup_unlock struct sbx_store *locked = store_lock (st);
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_WH_EXISTS];
    if (bind_check (st, bind_text (s, 1, webhook_id) | bind_text (s, 2, org_id), err, "list deliveries") < 0)
      return -1;
    r = step_row (st, s, err, "list deliveries");
    if (r < 0)
      return -1;
    if (r == 0)
      return sbx_failx (err, ENOENT, "webhook not found");
  }
  cleanup_reset sqlite3_stmt *s = st->stmt[S_DL_LIST];
  if (bind_check (st, bind_text (s, 1, webhook_id), err, "list deliveries") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list deliveries")) > 0)
    {
      struct sbx_delivery *one = sbx_grow (&dls, &count, &cap, sizeof *dls);
      if (one == NULL || delivery_from_row (s, one) < 0)
        {
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_deliveries_free (dls, count);
      return -1;
    }
  *v = dls;
  *n = count;
  return 0;
}

/* -------------------------------------------------------------- captures */

void
sbx_saved_files_free (struct sbx_saved_file *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      free (v[i].path);
      free (v[i].link);
    }
  free (v);
}

static void
capture_from_row (sqlite3_stmt *s, struct sbx_saved *c)
{
  memset (c, 0, sizeof *c);
  COL_COPY (s, 0, c->id);
  COL_COPY (s, 1, c->org_id);
  COL_COPY (s, 2, c->sandbox_id);
  COL_COPY (s, 3, c->kind);
  COL_COPY (s, 4, c->prefix);
  c->created_ms = sqlite3_column_int64 (s, 5);
  c->size_bytes = (uint64_t) sqlite3_column_int64 (s, 6);
  c->files = (uint32_t) sqlite3_column_int64 (s, 7);
}

static int
capture_file_from_row (sqlite3_stmt *s, struct sbx_saved_file *f)
{
  memset (f, 0, sizeof *f);
  f->blob = (uint32_t) sqlite3_column_int64 (s, 0);
  f->type = (uint32_t) sqlite3_column_int64 (s, 2);
  f->size = (uint64_t) sqlite3_column_int64 (s, 3);
  f->mode = (uint32_t) sqlite3_column_int64 (s, 4);
  f->uid = (uint32_t) sqlite3_column_int64 (s, 5);
  f->gid = (uint32_t) sqlite3_column_int64 (s, 6);
  f->mtime_ms = sqlite3_column_int64 (s, 7);
  if (col_dup (s, 1, &f->path) < 0 || f->path == NULL || col_dup (s, 8, &f->link) < 0)
    {
      free (f->path);
      free (f->link);
      f->path = f->link = NULL;
      return -1;
    }
  return 0;
}

int
sbx_store_saved_add (struct sbx_store *st, const struct sbx_saved *c, const struct sbx_saved_file *files,
                       size_t n, uint64_t org_quota, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  {
    /* the quota is checked in the transaction that takes from it */
    cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_USED];
    if (bind_check (st, BIND_FIXED (s, 1, c->org_id), err, "capture quota") < 0
        || step_row (st, s, err, "capture quota") < 0)
      return -1;
    double used = sqlite3_column_double (s, 0);
    if (org_quota && used + (double) c->size_bytes > (double) org_quota)
      return sbx_failx (err, EDQUOT, "the organisation's storage is full: %.0f of %llu MB used, %llu MB more asked",
                        used / 1048576.0, (unsigned long long) (org_quota >> 20),
                        (unsigned long long) ((c->size_bytes + 1048575) >> 20));
  }
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_INSERT];
    int rc = BIND_FIXED (s, 1, c->id) | BIND_FIXED (s, 2, c->org_id) | BIND_FIXED (s, 3, c->sandbox_id)
             | BIND_FIXED (s, 4, c->kind) | BIND_FIXED (s, 5, c->prefix) | sqlite3_bind_int64 (s, 6, c->created_ms)
             | sqlite3_bind_int64 (s, 7, (sqlite3_int64) c->size_bytes) | sqlite3_bind_int64 (s, 8, c->files);
    if (bind_check (st, rc, err, "add capture") < 0 || step_done (st, s, err, "add capture") < 0)
      return -1;
  }
  for (size_t i = 0; i < n; i++)
    {
      const struct sbx_saved_file *f = &files[i];
      cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_FILE_INSERT];
      int rc = BIND_FIXED (s, 1, c->id) | sqlite3_bind_int64 (s, 2, f->blob) | bind_text (s, 3, f->path)
               | sqlite3_bind_int64 (s, 4, f->type) | sqlite3_bind_int64 (s, 5, (sqlite3_int64) f->size)
               | sqlite3_bind_int64 (s, 6, f->mode) | sqlite3_bind_int64 (s, 7, f->uid)
               | sqlite3_bind_int64 (s, 8, f->gid) | sqlite3_bind_int64 (s, 9, f->mtime_ms)
               | bind_text (s, 10, f->link);
      if (bind_check (st, rc, err, "add capture file") < 0 || step_done (st, s, err, "add capture file") < 0)
        return -1;
    }
  if (run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

int
sbx_store_saved_get (struct sbx_store *st, const char *id, struct sbx_saved *c, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_GET];
  if (bind_check (st, bind_text (s, 1, id), err, "get capture") < 0)
    return -1;
  int r = step_row (st, s, err, "get capture");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "capture not found");
  capture_from_row (s, c);
  return 0;
}

int
sbx_store_saved_list (struct sbx_store *st, const char *org_id, const char *kind, const char *sandbox_id,
                        struct sbx_saved **v, size_t *n, struct sbx_err *err)
{
  struct sbx_saved *caps = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_LIST];
  int rc = bind_text (s, 1, org_id) | bind_text (s, 2, kind) | bind_text (s, 3, sandbox_id);
  if (bind_check (st, rc, err, "list captures") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list captures")) > 0)
    {
      struct sbx_saved *one = sbx_grow (&caps, &count, &cap, sizeof *caps);
      if (one == NULL)
        {
          r = fail_nomem (err);
          break;
        }
      capture_from_row (s, one);
    }
  if (r < 0)
    {
      free (caps);
      return -1;
    }
  *v = caps;
  *n = count;
  return 0;
}

int
sbx_store_saved_files (struct sbx_store *st, const char *id, struct sbx_saved_file **v, size_t *n,
                         struct sbx_err *err)
{
  struct sbx_saved_file *files = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_FILES];
  if (bind_check (st, bind_text (s, 1, id), err, "list capture files") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list capture files")) > 0)
    {
      struct sbx_saved_file *one = sbx_grow (&files, &count, &cap, sizeof *files);
      if (one == NULL || capture_file_from_row (s, one) < 0)
        {
          if (one)
            count--;
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_saved_files_free (files, count);
      return -1;
    }
  *v = files;
  *n = count;
  return 0;
}

int
sbx_store_saved_file (struct sbx_store *st, const char *id, const char *path, struct sbx_saved_file *f,
                        struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_FILE_GET];
  if (bind_check (st, bind_text (s, 1, id) | bind_text (s, 2, path), err, "get capture file") < 0)
    return -1;
  int r = step_row (st, s, err, "get capture file");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "file not found");
  if (capture_file_from_row (s, f) < 0)
    return fail_nomem (err);
  return 0;
}

int
sbx_store_saved_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_DELETE];
    if (bind_check (st, bind_text (s, 1, id) | bind_text (s, 2, org_id), err, "delete capture") < 0
        || step_done (st, s, err, "delete capture") < 0)
      return -1;
    if (sqlite3_changes (st->db) == 0)
      return sbx_failx (err, ENOENT, "capture not found");
  }
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_FILES_DELETE];
    if (bind_check (st, bind_text (s, 1, id), err, "delete capture files") < 0
        || step_done (st, s, err, "delete capture files") < 0)
      return -1;
  }
  if (run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

int
sbx_store_saved_used (struct sbx_store *st, const char *org_id, uint64_t *bytes, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_CAP_USED];
  if (bind_check (st, bind_text (s, 1, org_id), err, "capture quota") < 0
      || step_row (st, s, err, "capture quota") < 0)
    return -1;
  *bytes = (uint64_t) sqlite3_column_int64 (s, 0);
  return 0;
}

int
sbx_store_storage_put (struct sbx_store *st, const char *sandbox_id, const struct sbx_storage *sto,
                       struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_STORAGE_PUT];
  int rc = bind_text (s, 1, sandbox_id) | sqlite3_bind_int (s, 2, sto->keep_workspace)
           | sqlite3_bind_int (s, 3, sto->keep_artifacts) | BIND_FIXED (s, 4, sto->prefix);
  if (bind_check (st, rc, err, "sandbox storage") < 0 || step_done (st, s, err, "sandbox storage") < 0)
    return -1;
  return 0;
}

int
sbx_store_storage_get (struct sbx_store *st, const char *sandbox_id, struct sbx_storage *sto, struct sbx_err *err)
{
  memset (sto, 0, sizeof *sto);
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_STORAGE_GET];
  if (bind_check (st, bind_text (s, 1, sandbox_id), err, "sandbox storage") < 0)
    return -1;
  int r = step_row (st, s, err, "sandbox storage");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "no storage settings");
  sto->keep_workspace = sqlite3_column_int (s, 0) != 0;
  sto->keep_artifacts = sqlite3_column_int (s, 1) != 0;
  COL_COPY (s, 2, sto->prefix);
  return 0;
}

int
sbx_store_ingress_put (struct sbx_store *st, const char *sandbox_id, const struct sbx_ingress *in, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_INGRESS_PUT];
  int rc = bind_text (s, 1, sandbox_id) | sqlite3_bind_int (s, 2, in->public) | BIND_FIXED (s, 3, in->mask_host);
  if (bind_check (st, rc, err, "sandbox ingress") < 0 || step_done (st, s, err, "sandbox ingress") < 0)
    return -1;
  return 0;
}

int
sbx_store_ingress_get (struct sbx_store *st, const char *sandbox_id, struct sbx_ingress *in, struct sbx_err *err)
{
  *in = (struct sbx_ingress) { .public = true };
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_INGRESS_GET];
  if (bind_check (st, bind_text (s, 1, sandbox_id), err, "sandbox ingress") < 0)
    return -1;
  int r = step_row (st, s, err, "sandbox ingress");
  if (r < 0)
    return -1;
  if (r > 0)
    {
      in->public = sqlite3_column_int (s, 0) != 0;
      COL_COPY (s, 1, in->mask_host);
      in->stored = true;
    }
  return 0;
}

/* --------------------------------------------------------- volume mounts */

int
sbx_store_volume_mount_put (struct sbx_store *st, const char *sandbox_id, const char *volume_id, const char *path,
                            struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_VMOUNT_PUT];
  int rc = bind_text (s, 1, sandbox_id) | bind_text (s, 2, volume_id) | bind_text (s, 3, path);
  if (bind_check (st, rc, err, "volume mount") < 0 || step_done (st, s, err, "volume mount") < 0)
    return -1;
  return 0;
}

int
sbx_store_volume_mounts (struct sbx_store *st, const char *sandbox_id, struct sbx_volume_mount_rec **v, size_t *n,
                         struct sbx_err *err)
{
  struct sbx_volume_mount_rec *out = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_VMOUNT_LIST];
  if (bind_check (st, bind_text (s, 1, sandbox_id), err, "volume mounts") < 0)
    return -1;
  while ((r = step_row (st, s, err, "volume mounts")) > 0)
    {
      struct sbx_volume_mount_rec *one = sbx_grow (&out, &count, &cap, sizeof *out);
      if (one == NULL)
        {
          r = fail_nomem (err);
          break;
        }
      memset (one, 0, sizeof *one);
      COL_COPY (s, 0, one->volume_id);
      COL_COPY (s, 1, one->name);
      COL_COPY (s, 2, one->path);
    }
  if (r < 0)
    {
      free (out);
      return -1;
    }
  *v = out;
  *n = count;
  return 0;
}

int
sbx_store_volume_busy (struct sbx_store *st, const char *volume_id, char sandbox_id[SBX_STORE_ID_MAX],
                       struct sbx_err *err)
{
  sandbox_id[0] = '\0';
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_VMOUNT_BUSY];
  if (bind_check (st, bind_text (s, 1, volume_id), err, "volume in use") < 0)
    return -1;
  int r = step_row (st, s, err, "volume in use");
  if (r < 0)
    return -1;
  if (r > 0)
    col_copy (s, 0, sandbox_id, SBX_STORE_ID_MAX);
  return 0;
}

int
sbx_store_volume_mounts_forget (struct sbx_store *st, const char *volume_id, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_VMOUNT_FORGET];
  if (bind_check (st, bind_text (s, 1, volume_id), err, "forget volume mounts") < 0
      || step_done (st, s, err, "forget volume mounts") < 0)
    return -1;
  return 0;
}

/* ------------------------------------------------------------- templates */

static void
tmpl_from_row (sqlite3_stmt *s, struct sbx_tmpl_rec *t)
{
  memset (t, 0, sizeof *t);
  COL_COPY (s, 0, t->id);
  COL_COPY (s, 1, t->org_id);
  COL_COPY (s, 2, t->name);
  t->is_public = sqlite3_column_int (s, 3) != 0;
  t->cpu_count = (uint32_t) sqlite3_column_int64 (s, 4);
  t->memory_mb = (uint32_t) sqlite3_column_int64 (s, 5);
  t->created_ms = sqlite3_column_int64 (s, 6);
  t->updated_ms = sqlite3_column_int64 (s, 7);
  t->build_count = (uint32_t) sqlite3_column_int64 (s, 8);
}

int
sbx_store_tmpl_put (struct sbx_store *st, const struct sbx_tmpl_rec *t, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TPL_PUT];
  int rc = BIND_FIXED (s, 1, t->id) | BIND_FIXED (s, 2, t->org_id) | BIND_FIXED (s, 3, t->name)
           | sqlite3_bind_int (s, 4, t->is_public) | sqlite3_bind_int64 (s, 5, t->cpu_count)
           | sqlite3_bind_int64 (s, 6, t->memory_mb) | sqlite3_bind_int64 (s, 7, t->created_ms)
           | sqlite3_bind_int64 (s, 8, t->updated_ms) | sqlite3_bind_int64 (s, 9, t->build_count);
  if (bind_check (st, rc, err, "put template") < 0)
    return -1;
  return step_done (st, s, err, "put template");
}

int
sbx_store_tmpl_get (struct sbx_store *st, const char *org_id, const char *id_or_name, struct sbx_tmpl_rec *t,
                    struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TPL_GET];
  if (bind_check (st, bind_text (s, 1, org_id) | bind_text (s, 2, id_or_name), err, "get template") < 0)
    return -1;
  int r = step_row (st, s, err, "get template");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "template not found");
  tmpl_from_row (s, t);
  return 0;
}

int
sbx_store_tmpl_list (struct sbx_store *st, const char *org_id, struct sbx_tmpl_rec **v, size_t *n,
                     struct sbx_err *err)
{
  struct sbx_tmpl_rec *out = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TPL_LIST];
  if (bind_check (st, bind_text (s, 1, org_id), err, "list templates") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list templates")) > 0)
    {
      struct sbx_tmpl_rec *one = sbx_grow (&out, &count, &cap, sizeof *out);
      if (one == NULL)
        {
          r = fail_nomem (err);
          break;
        }
      tmpl_from_row (s, one);
    }
  if (r < 0)
    {
      free (out);
      return -1;
    }
  *v = out;
  *n = count;
  return 0;
}

int
sbx_store_tmpl_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_rollback struct sbx_store *tx = NULL;
  if (run (st, S_BEGIN, err, "begin") < 0)
    return -1;
  tx = st;
  {
    cleanup_reset sqlite3_stmt *s = st->stmt[S_TPL_DELETE];
    if (bind_check (st, bind_text (s, 1, id) | bind_text (s, 2, org_id), err, "delete template") < 0
        || step_done (st, s, err, "delete template") < 0)
      return -1;
    if (sqlite3_changes (st->db) == 0)
      return sbx_failx (err, ENOENT, "template not found");
  }
  for (int i = 0; i < 2; i++)
    {
      cleanup_reset sqlite3_stmt *s = st->stmt[i == 0 ? S_TPL_DELETE_BUILDS : S_TPL_DELETE_TAGS];
      if (bind_check (st, bind_text (s, 1, id), err, "delete template") < 0
          || step_done (st, s, err, "delete template") < 0)
        return -1;
    }
  if (run (st, S_COMMIT, err, "commit") < 0)
    return -1;
  tx = NULL;
  return 0;
}

void
sbx_build_rec_free (struct sbx_build_rec *b)
{
  free (b->reason);
  free (b->tags_json);
  free (b->layers);
  b->reason = b->tags_json = b->layers = NULL;
}

static int
build_from_row (sqlite3_stmt *s, struct sbx_build_rec *b)
{
  memset (b, 0, sizeof *b);
  COL_COPY (s, 0, b->id);
  COL_COPY (s, 1, b->template_id);
  COL_COPY (s, 2, b->org_id);
  COL_COPY (s, 3, b->status);
  COL_COPY (s, 4, b->tree);
  COL_COPY (s, 6, b->step);
  b->cpu_count = (uint32_t) sqlite3_column_int64 (s, 8);
  b->memory_mb = (uint32_t) sqlite3_column_int64 (s, 9);
  b->created_ms = sqlite3_column_int64 (s, 10);
  b->updated_ms = sqlite3_column_int64 (s, 11);
  b->finished_ms = sqlite3_column_int64 (s, 12);
  if (col_dup (s, 5, &b->reason) < 0 || col_dup (s, 7, &b->tags_json) < 0 || col_dup (s, 13, &b->layers) < 0)
    {
      sbx_build_rec_free (b);
      return -1;
    }
  return 0;
}

int
sbx_store_build_put (struct sbx_store *st, const struct sbx_build_rec *b, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_BLD_PUT];
  int rc = BIND_FIXED (s, 1, b->id) | BIND_FIXED (s, 2, b->template_id) | BIND_FIXED (s, 3, b->org_id)
           | BIND_FIXED (s, 4, b->status) | BIND_FIXED (s, 5, b->tree) | bind_text (s, 6, b->reason)
           | BIND_FIXED (s, 7, b->step) | bind_text (s, 8, b->tags_json) | sqlite3_bind_int64 (s, 9, b->cpu_count)
           | sqlite3_bind_int64 (s, 10, b->memory_mb) | sqlite3_bind_int64 (s, 11, b->created_ms)
           | sqlite3_bind_int64 (s, 12, b->updated_ms) | sqlite3_bind_int64 (s, 13, b->finished_ms)
           | bind_text (s, 14, b->layers);
  if (bind_check (st, rc, err, "put build") < 0)
    return -1;
  return step_done (st, s, err, "put build");
}

int
sbx_store_build_get (struct sbx_store *st, const char *id, struct sbx_build_rec *b, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_BLD_GET];
  if (bind_check (st, bind_text (s, 1, id), err, "get build") < 0)
    return -1;
  int r = step_row (st, s, err, "get build");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failx (err, ENOENT, "build not found");
  return build_from_row (s, b) < 0 ? fail_nomem (err) : 0;
}

void
sbx_build_recs_free (struct sbx_build_rec *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    sbx_build_rec_free (&v[i]);
  free (v);
}

int
sbx_store_build_list (struct sbx_store *st, const char *template_id, struct sbx_build_rec **v, size_t *n,
                      struct sbx_err *err)
{
  struct sbx_build_rec *out = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_BLD_LIST];
  if (bind_check (st, bind_text (s, 1, template_id), err, "list builds") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list builds")) > 0)
    {
      struct sbx_build_rec *one = sbx_grow (&out, &count, &cap, sizeof *out);
      if (one == NULL || build_from_row (s, one) < 0)
        {
          if (one)
            count--;
          r = fail_nomem (err);
          break;
        }
    }
  if (r < 0)
    {
      sbx_build_recs_free (out, count);
      return -1;
    }
  *v = out;
  *n = count;
  return 0;
}

int
sbx_store_build_fail_unfinished (struct sbx_store *st, const char *reason, int64_t now_ms, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_BLD_FAIL_UNFINISHED];
  if (bind_check (st, bind_text (s, 1, reason) | sqlite3_bind_int64 (s, 2, now_ms), err, "fail builds") < 0)
    return -1;
  if (step_done (st, s, err, "fail builds") < 0)
    return -1;
  return sqlite3_changes (st->db);
}

int
sbx_store_build_tree_refs (struct sbx_store *st, const char *tree, const char *other_than_template, uint32_t *n,
                           struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_BLD_TREE_REFS];
  if (bind_check (st, bind_text (s, 1, tree) | bind_text (s, 2, other_than_template), err, "count trees") < 0
      || step_row (st, s, err, "count trees") < 0)
    return -1;
  *n = (uint32_t) sqlite3_column_int64 (s, 0);
  return 0;
}

int
sbx_store_tag_set (struct sbx_store *st, const char *template_id, const char *tag, const char *build_id,
                   int64_t now_ms, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TAG_SET];
  int rc = bind_text (s, 1, template_id) | bind_text (s, 2, tag) | bind_text (s, 3, build_id)
           | sqlite3_bind_int64 (s, 4, now_ms);
  if (bind_check (st, rc, err, "set tag") < 0)
    return -1;
  return step_done (st, s, err, "set tag");
}

int
sbx_store_tag_delete (struct sbx_store *st, const char *template_id, const char *tag, struct sbx_err *err)
{
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TAG_DELETE];
  if (bind_check (st, bind_text (s, 1, template_id) | bind_text (s, 2, tag), err, "delete tag") < 0
      || step_done (st, s, err, "delete tag") < 0)
    return -1;
  if (sqlite3_changes (st->db) == 0)
    return sbx_failx (err, ENOENT, "tag not found");
  return 0;
}

int
sbx_store_tag_list (struct sbx_store *st, const char *template_id, struct sbx_tag_rec **v, size_t *n,
                    struct sbx_err *err)
{
  struct sbx_tag_rec *out = NULL;
  size_t count = 0, cap = 0;
  int r;
  *v = NULL;
  *n = 0;
  cleanup_unlock struct sbx_store *locked = store_lock (st);
  cleanup_reset sqlite3_stmt *s = st->stmt[S_TAG_LIST];
  if (bind_check (st, bind_text (s, 1, template_id), err, "list tags") < 0)
    return -1;
  while ((r = step_row (st, s, err, "list tags")) > 0)
    {
      struct sbx_tag_rec *one = sbx_grow (&out, &count, &cap, sizeof *out);
      if (one == NULL)
        {
          r = fail_nomem (err);
          break;
        }
      memset (one, 0, sizeof *one);
      COL_COPY (s, 0, one->tag);
      COL_COPY (s, 1, one->build_id);
      one->created_ms = sqlite3_column_int64 (s, 2);
    }
  if (r < 0)
    {
      free (out);
      return -1;
    }
  *v = out;
  *n = count;
  return 0;
}
