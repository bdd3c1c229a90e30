/*
 * store_samples.c - the sandboxes' metrics histories in the store
 * (store_samples.h).
 *
 * The sampler (samples.c) writes each pass's samples in one transaction:
 * a thousand sandboxes at E2B's 5 s make 200 rows a second, one commit
 * every interval.  A sandbox's rows are keyed by (sandbox, time) without
 * a rowid, so its trim (the rows older than its ring's oldest) and its
 * history at start-up are range reads of that key.
 */
#include "store_samples.h"

#include <errno.h>
#include <string.h>

#include "../common/util.h"
#include "store_db.h"

static const char samples_schema_sql[]
    = "CREATE TABLE IF NOT EXISTS sandbox_samples ("
      "  sandbox_id TEXT NOT NULL,"
      "  at_ms INTEGER NOT NULL,"
      "  cpu_pct REAL NOT NULL,"
      "  cpu_count INTEGER NOT NULL,"
      "  mem_used INTEGER NOT NULL,"
      "  mem_total INTEGER NOT NULL,"
      "  mem_cache INTEGER NOT NULL,"
      "  disk_used INTEGER NOT NULL,"
      "  disk_total INTEGER NOT NULL,"
      "  oom_kills INTEGER NOT NULL,"
      "  pids INTEGER NOT NULL,"
      "  PRIMARY KEY (sandbox_id, at_ms)) WITHOUT ROWID;"
      /* a sandbox's history goes with its record */
      "CREATE TRIGGER IF NOT EXISTS sandbox_samples_gone AFTER DELETE ON sandboxes"
      " BEGIN DELETE FROM sandbox_samples WHERE sandbox_id = old.id; END;";

static int
fail (sqlite3 *db, int rc, struct sbx_err *err, const char *what)
{
  return sbx_failx (err, (rc & 0xff) == SQLITE_FULL ? ENOSPC : (rc & 0xff) == SQLITE_NOMEM ? ENOMEM : EIO,
                    "database: %s: %s", what, sqlite3_errmsg (db));
}

int
sbx_store_samples_schema (struct sbx_store *st, struct sbx_err *err)
{
  sqlite3 *db = sbx_store_db_lock (st);
  char *msg = NULL;
  int rc = sqlite3_exec (db, samples_schema_sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    sbx_failx (err, EIO, "database: create the metrics table: %s", msg ? msg : sqlite3_errstr (rc));
  sqlite3_free (msg);
  sbx_store_db_unlock (st);
  return rc == SQLITE_OK ? 0 : -1;
}

/* Step S once, expecting no row; reset it. */
static int
step_done (sqlite3 *db, sqlite3_stmt *s, struct sbx_err *err, const char *what)
{
  int rc = sqlite3_step (s);
  sqlite3_reset (s);
  sqlite3_clear_bindings (s);
  return rc == SQLITE_DONE ? 0 : fail (db, rc, err, what);
}

int
sbx_store_samples_put (struct sbx_store *st, const struct sbx_sample_row *rows, size_t n,
                       char (*gone)[SBX_ID_MAX], size_t n_gone, struct sbx_err *err)
{
  if (n == 0 && n_gone == 0)
    return 0;
  sqlite3 *db = sbx_store_db_lock (st);
  sqlite3_stmt *ins = NULL, *trim = NULL, *del = NULL;
  int r = -1, rc;
  if ((rc = sqlite3_prepare_v2 (db,
                                "INSERT OR REPLACE INTO sandbox_samples (sandbox_id, at_ms, cpu_pct, cpu_count,"
                                " mem_used, mem_total, mem_cache, disk_used, disk_total, oom_kills, pids)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                                -1, &ins, NULL))
          != SQLITE_OK
      || (rc = sqlite3_prepare_v2 (db, "DELETE FROM sandbox_samples WHERE sandbox_id = ?1 AND at_ms < ?2", -1,
                                   &trim, NULL))
             != SQLITE_OK
      || (rc = sqlite3_prepare_v2 (db, "DELETE FROM sandbox_samples WHERE sandbox_id = ?1", -1, &del, NULL))
             != SQLITE_OK)
    {
      fail (db, rc, err, "prepare");
      goto out;
    }
  if ((rc = sqlite3_exec (db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
    {
      fail (db, rc, err, "begin");
      goto out;
    }
  for (size_t i = 0; i < n; i++)
    {
      const struct sbx_sample_row *w = &rows[i];
      const struct sbx_metrics *m = &w->s.m;
      sqlite3_bind_text (ins, 1, w->id, -1, SQLITE_STATIC);
      sqlite3_bind_int64 (ins, 2, w->s.at_ms);
      sqlite3_bind_double (ins, 3, m->cpu_used_pct);
      sqlite3_bind_int64 (ins, 4, m->cpu_count);
      sqlite3_bind_int64 (ins, 5, (sqlite3_int64) m->mem_used);
      sqlite3_bind_int64 (ins, 6, (sqlite3_int64) m->mem_total);
      sqlite3_bind_int64 (ins, 7, (sqlite3_int64) m->mem_cache);
      sqlite3_bind_int64 (ins, 8, (sqlite3_int64) m->disk_used);
      sqlite3_bind_int64 (ins, 9, (sqlite3_int64) m->disk_total);
      sqlite3_bind_int64 (ins, 10, (sqlite3_int64) m->oom_kills);
      sqlite3_bind_int64 (ins, 11, (sqlite3_int64) m->pids);
      if (step_done (db, ins, err, "add a metrics sample") < 0)
        goto rollback;
      if (w->keep_from_ms > 0)
        {
          sqlite3_bind_text (trim, 1, w->id, -1, SQLITE_STATIC);
          sqlite3_bind_int64 (trim, 2, w->keep_from_ms);
          if (step_done (db, trim, err, "trim metrics samples") < 0)
            goto rollback;
        }
    }
  for (size_t i = 0; i < n_gone; i++)
    {
      sqlite3_bind_text (del, 1, gone[i], -1, SQLITE_STATIC);
      if (step_done (db, del, err, "remove metrics samples") < 0)
        goto rollback;
    }
  if ((rc = sqlite3_exec (db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
    {
      fail (db, rc, err, "commit");
      goto rollback;
    }
  r = 0;
  goto out;
rollback:
  if (!sqlite3_get_autocommit (db))
    sqlite3_exec (db, "ROLLBACK", NULL, NULL, NULL);
out:
  sqlite3_finalize (ins);
  sqlite3_finalize (trim);
  sqlite3_finalize (del);
  sbx_store_db_unlock (st);
  return r;
}

int
sbx_store_samples_each (struct sbx_store *st,
                        int (*cb) (void *ud, const char *id, const struct sbx_sample *s, struct sbx_err *err),
                        void *ud, struct sbx_err *err)
{
  sqlite3 *db = sbx_store_db_lock (st);
  sqlite3_stmt *q = NULL;
  int r = -1;
  int rc = sqlite3_prepare_v2 (db,
                               "SELECT sandbox_id, at_ms, cpu_pct, cpu_count, mem_used, mem_total, mem_cache,"
                               " disk_used, disk_total, oom_kills, pids FROM sandbox_samples"
                               " ORDER BY sandbox_id, at_ms",
                               -1, &q, NULL);
  if (rc != SQLITE_OK)
    {
      fail (db, rc, err, "prepare");
      goto out;
    }
  while ((rc = sqlite3_step (q)) == SQLITE_ROW)
    {
      const char *id = (const char *) sqlite3_column_text (q, 0);
      if (id == NULL || strlen (id) >= SBX_ID_MAX)
        continue;
      struct sbx_sample s = { .at_ms = sqlite3_column_int64 (q, 1) };
      s.m.cpu_used_pct = sqlite3_column_double (q, 2);
      s.m.cpu_count = (uint32_t) sqlite3_column_int64 (q, 3);
      s.m.mem_used = (uint64_t) sqlite3_column_int64 (q, 4);
      s.m.mem_total = (uint64_t) sqlite3_column_int64 (q, 5);
      s.m.mem_cache = (uint64_t) sqlite3_column_int64 (q, 6);
      s.m.disk_used = (uint64_t) sqlite3_column_int64 (q, 7);
      s.m.disk_total = (uint64_t) sqlite3_column_int64 (q, 8);
      s.m.oom_kills = (uint64_t) sqlite3_column_int64 (q, 9);
      s.m.pids = (uint64_t) sqlite3_column_int64 (q, 10);
      if (cb (ud, id, &s, err) < 0)
        goto out;
    }
  if (rc != SQLITE_DONE)
    {
      fail (db, rc, err, "read metrics samples");
      goto out;
    }
  r = 0;
out:
  sqlite3_finalize (q);
  sbx_store_db_unlock (st);
  return r;
}
