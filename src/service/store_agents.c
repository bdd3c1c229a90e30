/*
 * store_agents.c - seed 000's tables in the store (store_agents.h).
 *
 * They live in the store's database and use its connection under its
 * lock (store_db.h).  Statements are prepared per call rather than once
 * at open as store.c's are: agents and sessions are written a few times
 * per model turn, not on every request, and keeping them here leaves
 * store.c's statement table alone.
 */
#include "store_agents.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "store_db.h"

static const char agents_schema_sql[]
    = "CREATE TABLE IF NOT EXISTS agents ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  doc TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS agents_org ON agents (org_id, created_ms);"
      "CREATE TABLE IF NOT EXISTS sessions ("
      "  id TEXT PRIMARY KEY,"
      "  org_id TEXT NOT NULL,"
      "  agent_id TEXT NOT NULL,"
      "  sandbox_id TEXT NOT NULL,"
      "  template_id TEXT NOT NULL,"
      "  status TEXT NOT NULL,"
      "  end_reason TEXT NOT NULL DEFAULT '',"
      "  timeout_s INTEGER NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  ended_ms INTEGER NOT NULL DEFAULT 0,"
      "  input_tokens INTEGER NOT NULL DEFAULT 0,"
      "  output_tokens INTEGER NOT NULL DEFAULT 0,"
      "  model_turns INTEGER NOT NULL DEFAULT 0,"
      "  agent TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS sessions_org ON sessions (org_id, created_ms);"
      "CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status);"
      "CREATE TABLE IF NOT EXISTS session_events ("
      "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  id TEXT NOT NULL UNIQUE,"
      "  session_id TEXT NOT NULL,"
      "  type TEXT NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  doc TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS session_events_session ON session_events (session_id, seq);";

/* ---- helpers ---- */

struct q {
  struct sbx_store *st;
  sqlite3 *db;
  sqlite3_stmt *s;
};

/* Lock the store and prepare SQL. */
static int
q_open (struct q *q, struct sbx_store *st, const char *sql, struct sbx_err *err)
{
  q->st = st;
  q->db = sbx_store_db_lock (st);
  q->s = NULL;
  int rc = sqlite3_prepare_v2 (q->db, sql, -1, &q->s, NULL);
  if (rc != SQLITE_OK)
    {
      sbx_failx (err, EIO, "database: prepare: %s", sqlite3_errmsg (q->db));
      sbx_store_db_unlock (st);
      q->st = NULL;
      return -1;
    }
  return 0;
}

static void
q_closep (struct q *q)
{
  if (q->st == NULL)
    return;
  sqlite3_finalize (q->s);
  sbx_store_db_unlock (q->st);
  q->st = NULL;
}

#define cleanup_q __attribute__ ((cleanup (q_closep)))

static int
q_fail (struct q *q, int rc, struct sbx_err *err, const char *what)
{
  return sbx_failx (err, (rc & 0xff) == SQLITE_FULL ? ENOSPC : (rc & 0xff) == SQLITE_NOMEM ? ENOMEM : EIO,
                    "database: %s: %s", what, sqlite3_errmsg (q->db));
}

/* Step: 1 row, 0 done, -1 error. */
static int
q_step (struct q *q, struct sbx_err *err, const char *what)
{
  int rc = sqlite3_step (q->s);
  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  return q_fail (q, rc, err, what);
}

static void
q_text (struct q *q, int i, const char *v)
{
  if (v == NULL)
    sqlite3_bind_null (q->s, i);
  else
    sqlite3_bind_text (q->s, i, v, -1, SQLITE_TRANSIENT);
}

static void
col_copy (sqlite3_stmt *s, int i, char *dst, size_t size)
{
  const char *t = (const char *) sqlite3_column_text (s, i);
  size_t len = t ? strnlen (t, size - 1) : 0;
  if (len)
    memcpy (dst, t, len);
  dst[len] = '\0';
}

#define COL_COPY(s, i, arr) col_copy ((s), (i), (arr), sizeof (arr))

static char *
col_dup (sqlite3_stmt *s, int i)
{
  const char *t = (const char *) sqlite3_column_text (s, i);
  return strdup (t ? t : "");
}

int
sbx_store_agents_schema (struct sbx_store *st, struct sbx_err *err)
{
  sqlite3 *db = sbx_store_db_lock (st);
  char *msg = NULL;
  int rc = sqlite3_exec (db, agents_schema_sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    sbx_failx (err, EIO, "database: create the agents' tables: %s", msg ? msg : sqlite3_errstr (rc));
  sqlite3_free (msg);
  sbx_store_db_unlock (st);
  return rc == SQLITE_OK ? 0 : -1;
}

/* ---- agents ---- */

void
sbx_agent_docs_free (struct sbx_agent_doc *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    free (v[i].json);
  free (v);
}

int
sbx_store_agent_put (struct sbx_store *st, const char *org_id, struct sbx_agent_doc *d, struct sbx_err *err)
{
  if (sbx_store_random_id (d->id, sizeof d->id, "agent_", err) < 0)
    return -1;
  {
    cleanup_q struct q q;
    if (q_open (&q, st, "SELECT COUNT(*) FROM agents WHERE org_id = ?1", err) < 0)
      return -1;
    q_text (&q, 1, org_id);
    if (q_step (&q, err, "count agents") < 0)
      return -1;
    if (sqlite3_column_int64 (q.s, 0) >= SBX_AGENTS_MAX)
      return sbx_failk (err, SBX_E_LIMIT, "an organisation has at most %u agents", SBX_AGENTS_MAX);
  }
  cleanup_q struct q q;
  if (q_open (&q, st, "INSERT INTO agents (id, org_id, created_ms, doc) VALUES (?1, ?2, ?3, ?4)", err) < 0)
    return -1;
  q_text (&q, 1, d->id);
  q_text (&q, 2, org_id);
  sqlite3_bind_int64 (q.s, 3, d->created_ms);
  q_text (&q, 4, d->json);
  return q_step (&q, err, "insert agent") < 0 ? -1 : 0;
}

static int
agent_from_row (sqlite3_stmt *s, struct sbx_agent_doc *d)
{
  COL_COPY (s, 0, d->id);
  d->created_ms = sqlite3_column_int64 (s, 1);
  d->json = col_dup (s, 2);
  return d->json ? 0 : -1;
}

int
sbx_store_agent_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_agent_doc *d,
                     struct sbx_err *err)
{
  memset (d, 0, sizeof *d);
  cleanup_q struct q q;
  if (q_open (&q, st, "SELECT id, created_ms, doc FROM agents WHERE id = ?1 AND org_id = ?2", err) < 0)
    return -1;
  q_text (&q, 1, id);
  q_text (&q, 2, org_id);
  int r = q_step (&q, err, "get agent");
  if (r < 0)
    return -1;
  if (r == 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "agent %.64s not found", id);
  return agent_from_row (q.s, d) < 0 ? sbx_fail (err, ENOMEM, "agent") : 0;
}

int
sbx_store_agent_list (struct sbx_store *st, const char *org_id, struct sbx_agent_doc **v, size_t *n,
                      struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  size_t cap = 0;
  cleanup_q struct q q;
  if (q_open (&q, st, "SELECT id, created_ms, doc FROM agents WHERE org_id = ?1 ORDER BY created_ms DESC, id",
              err) < 0)
    return -1;
  q_text (&q, 1, org_id);
  int r;
  while ((r = q_step (&q, err, "list agents")) == 1)
    {
      struct sbx_agent_doc *d = sbx_grow (v, n, &cap, sizeof **v);
      if (d == NULL)
        goto nomem;
      if (agent_from_row (q.s, d) < 0)
        goto nomem;
    }
  if (r == 0)
    return 0;
  sbx_agent_docs_free (*v, *n);
  *v = NULL;
  *n = 0;
  return -1;
nomem:
  sbx_agent_docs_free (*v, *n);
  *v = NULL;
  *n = 0;
  return sbx_fail (err, ENOMEM, "list agents");
}

int
sbx_store_agent_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err)
{
  cleanup_q struct q q;
  if (q_open (&q, st, "DELETE FROM agents WHERE id = ?1 AND org_id = ?2", err) < 0)
    return -1;
  q_text (&q, 1, id);
  q_text (&q, 2, org_id);
  if (q_step (&q, err, "delete agent") < 0)
    return -1;
  if (sqlite3_changes (q.db) == 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "agent %.64s not found", id);
  return 0;
}

/* ---- sessions ---- */

#define SESSION_COLS                                                                                   \
  "id, org_id, agent_id, sandbox_id, template_id, status, end_reason, timeout_s, created_ms, ended_ms, " \
  "input_tokens, output_tokens, model_turns, agent"

void
sbx_session_rec_free (struct sbx_session_rec *r)
{
  if (r)
    {
      free (r->agent_json);
      r->agent_json = NULL;
    }
}

void
sbx_session_recs_free (struct sbx_session_rec *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    sbx_session_rec_free (&v[i]);
  free (v);
}

static int
session_from_row (sqlite3_stmt *s, struct sbx_session_rec *r)
{
  memset (r, 0, sizeof *r);
  COL_COPY (s, 0, r->id);
  COL_COPY (s, 1, r->org_id);
  COL_COPY (s, 2, r->agent_id);
  COL_COPY (s, 3, r->sandbox_id);
  COL_COPY (s, 4, r->template_id);
  COL_COPY (s, 5, r->status);
  COL_COPY (s, 6, r->end_reason);
  r->timeout_s = (uint32_t) sqlite3_column_int64 (s, 7);
  r->created_ms = sqlite3_column_int64 (s, 8);
  r->ended_ms = sqlite3_column_int64 (s, 9);
  r->input_tokens = sqlite3_column_int64 (s, 10);
  r->output_tokens = sqlite3_column_int64 (s, 11);
  r->model_turns = sqlite3_column_int64 (s, 12);
  r->agent_json = col_dup (s, 13);
  return r->agent_json ? 0 : -1;
}

int
sbx_store_session_new_id (char *buf, size_t size, struct sbx_err *err)
{
  return sbx_store_random_id (buf, size, "sess_", err);
}

int
sbx_store_session_put (struct sbx_store *st, const struct sbx_session_rec *r, struct sbx_err *err)
{
  cleanup_q struct q q;
  if (q_open (&q, st,
              "INSERT INTO sessions (" SESSION_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
              "?13, ?14)",
              err) < 0)
    return -1;
  q_text (&q, 1, r->id);
  q_text (&q, 2, r->org_id);
  q_text (&q, 3, r->agent_id);
  q_text (&q, 4, r->sandbox_id);
  q_text (&q, 5, r->template_id);
  q_text (&q, 6, r->status);
  q_text (&q, 7, r->end_reason);
  sqlite3_bind_int64 (q.s, 8, r->timeout_s);
  sqlite3_bind_int64 (q.s, 9, r->created_ms);
  sqlite3_bind_int64 (q.s, 10, r->ended_ms);
  sqlite3_bind_int64 (q.s, 11, r->input_tokens);
  sqlite3_bind_int64 (q.s, 12, r->output_tokens);
  sqlite3_bind_int64 (q.s, 13, r->model_turns);
  q_text (&q, 14, r->agent_json ? r->agent_json : "{}");
  return q_step (&q, err, "insert session") < 0 ? -1 : 0;
}

int
sbx_store_session_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_session_rec *r,
                       struct sbx_err *err)
{
  memset (r, 0, sizeof *r);
  cleanup_q struct q q;
  if (q_open (&q, st, "SELECT " SESSION_COLS " FROM sessions WHERE id = ?1 AND org_id = ?2", err) < 0)
    return -1;
  q_text (&q, 1, id);
  q_text (&q, 2, org_id);
  int k = q_step (&q, err, "get session");
  if (k < 0)
    return -1;
  if (k == 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "session %.64s not found", id);
  return session_from_row (q.s, r) < 0 ? sbx_fail (err, ENOMEM, "session") : 0;
}

int
sbx_store_session_list (struct sbx_store *st, const char *org_id, const char *agent_id, const char *status,
                        struct sbx_session_rec **v, size_t *n, struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  size_t cap = 0;
  cleanup_q struct q q;
  if (q_open (&q, st,
              "SELECT " SESSION_COLS " FROM sessions WHERE (?1 IS NULL OR org_id = ?1)"
              " AND (?2 IS NULL OR agent_id = ?2) AND (?3 IS NULL OR status = ?3)"
              " ORDER BY created_ms DESC, id LIMIT 10000",
              err) < 0)
    return -1;
  q_text (&q, 1, org_id);
  q_text (&q, 2, agent_id);
  q_text (&q, 3, status);
  int k;
  while ((k = q_step (&q, err, "list sessions")) == 1)
    {
      struct sbx_session_rec *r = sbx_grow (v, n, &cap, sizeof **v);
      if (r == NULL)
        goto nomem;
      if (session_from_row (q.s, r) < 0)
        goto nomem;
    }
  if (k == 0)
    return 0;
  sbx_session_recs_free (*v, *n);
  *v = NULL;
  *n = 0;
  return -1;
nomem:
  sbx_session_recs_free (*v, *n);
  *v = NULL;
  *n = 0;
  return sbx_fail (err, ENOMEM, "list sessions");
}

int
sbx_store_session_status (struct sbx_store *st, const char *id, const char *status, const char *end_reason,
                          int64_t ended_ms, struct sbx_err *err)
{
  cleanup_q struct q q;
  /* an ended session stays ended */
  if (q_open (&q, st,
              "UPDATE sessions SET status = ?2,"
              " end_reason = CASE WHEN ?2 = 'ended' THEN ?3 ELSE end_reason END,"
              " ended_ms = CASE WHEN ?2 = 'ended' THEN ?4 ELSE ended_ms END"
              " WHERE id = ?1 AND status <> 'ended'",
              err) < 0)
    return -1;
  q_text (&q, 1, id);
  q_text (&q, 2, status);
  q_text (&q, 3, end_reason ? end_reason : "");
  sqlite3_bind_int64 (q.s, 4, ended_ms);
  return q_step (&q, err, "session status") < 0 ? -1 : 0;
}

int
sbx_store_session_usage (struct sbx_store *st, const char *id, int64_t input_tokens, int64_t output_tokens,
                         int64_t model_turns, struct sbx_err *err)
{
  cleanup_q struct q q;
  if (q_open (&q, st,
              "UPDATE sessions SET input_tokens = input_tokens + ?2, output_tokens = output_tokens + ?3,"
              " model_turns = model_turns + ?4 WHERE id = ?1",
              err) < 0)
    return -1;
  q_text (&q, 1, id);
  sqlite3_bind_int64 (q.s, 2, input_tokens);
  sqlite3_bind_int64 (q.s, 3, output_tokens);
  sqlite3_bind_int64 (q.s, 4, model_turns);
  return q_step (&q, err, "session usage") < 0 ? -1 : 0;
}

/* ---- events ---- */

void
sbx_session_events_free (struct sbx_session_event *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    free (v[i].json);
  free (v);
}

int
sbx_store_session_event_add (struct sbx_store *st, const char *session_id, const char *type, const char *json,
                             struct sbx_session_event *e, struct sbx_err *err)
{
  memset (e, 0, sizeof *e);
  if (sbx_store_random_id (e->id, sizeof e->id, "sevt_", err) < 0)
    return -1;
  snprintf (e->type, sizeof e->type, "%s", type);
  e->created_ms = sbx_wall_ms ();
  {
    cleanup_q struct q q;
    if (q_open (&q, st, "SELECT COUNT(*) FROM session_events WHERE session_id = ?1", err) < 0)
      return -1;
    q_text (&q, 1, session_id);
    if (q_step (&q, err, "count events") < 0)
      return -1;
    if (sqlite3_column_int64 (q.s, 0) >= SBX_SESSION_EVENTS_MAX)
      return sbx_failk (err, SBX_E_LIMIT, "a session holds at most %u events", SBX_SESSION_EVENTS_MAX);
  }
  cleanup_q struct q q;
  if (q_open (&q, st,
              "INSERT INTO session_events (id, session_id, type, created_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
              err) < 0)
    return -1;
  q_text (&q, 1, e->id);
  q_text (&q, 2, session_id);
  q_text (&q, 3, type);
  sqlite3_bind_int64 (q.s, 4, e->created_ms);
  q_text (&q, 5, json);
  if (q_step (&q, err, "add event") < 0)
    return -1;
  e->seq = sqlite3_last_insert_rowid (q.db);
  return 0;
}

int
sbx_store_session_events (struct sbx_store *st, const char *session_id, int64_t after, uint32_t limit,
                          struct sbx_session_event **v, size_t *n, struct sbx_err *err)
{
  *v = NULL;
  *n = 0;
  size_t cap = 0;
  cleanup_q struct q q;
  if (q_open (&q, st,
              "SELECT seq, id, type, created_ms, doc FROM session_events WHERE session_id = ?1 AND seq > ?2"
              " ORDER BY seq LIMIT ?3",
              err) < 0)
    return -1;
  q_text (&q, 1, session_id);
  sqlite3_bind_int64 (q.s, 2, after);
  sqlite3_bind_int64 (q.s, 3, limit);
  int k;
  while ((k = q_step (&q, err, "list events")) == 1)
    {
      struct sbx_session_event *e = sbx_grow (v, n, &cap, sizeof **v);
      if (e == NULL)
        goto nomem;
      e->seq = sqlite3_column_int64 (q.s, 0);
      COL_COPY (q.s, 1, e->id);
      COL_COPY (q.s, 2, e->type);
      e->created_ms = sqlite3_column_int64 (q.s, 3);
      if ((e->json = col_dup (q.s, 4)) == NULL)
        goto nomem;
    }
  if (k == 0)
    return 0;
  sbx_session_events_free (*v, *n);
  *v = NULL;
  *n = 0;
  return -1;
nomem:
  sbx_session_events_free (*v, *n);
  *v = NULL;
  *n = 0;
  return sbx_fail (err, ENOMEM, "list events");
}

int
sbx_store_session_last_seq (struct sbx_store *st, const char *session_id, int64_t *seq, struct sbx_err *err)
{
  cleanup_q struct q q;
  if (q_open (&q, st, "SELECT COALESCE (MAX (seq), 0) FROM session_events WHERE session_id = ?1", err) < 0)
    return -1;
  q_text (&q, 1, session_id);
  if (q_step (&q, err, "last event") < 0)
    return -1;
  *seq = sqlite3_column_int64 (q.s, 0);
  return 0;
}
