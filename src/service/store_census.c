/*
 * store_census.c - what the operator's metrics read from the store
 * (store.h, "the operator's census"): live sandboxes by organisation and
 * state, and the webhook deliveries' queue.
 *
 * Both are aggregates over indexes (sandboxes_live, a partial index of
 * the live records, and deliveries_state_next), so a scrape costs a walk
 * over the live sandboxes and the pending deliveries, never over the
 * history of stopped sandboxes.  Statements are prepared per call, as
 * store_agents.c's: a scrape comes every few seconds at most.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store_db.h"

static int
db_fail (sqlite3 *db, int rc, struct sbx_err *err, const char *what)
{
  return sbx_failx (err, (rc & 0xff) == SQLITE_NOMEM ? ENOMEM : EIO, "database: %s: %s", what, sqlite3_errmsg (db));
}

int
sbx_store_sandbox_census (struct sbx_store *st, struct sbx_census_org *orgs, size_t max, size_t *n,
                          uint32_t other[SBX_CENSUS_STATES], struct sbx_err *err)
{
  /* the WHERE clause is the partial index's, word for word, so that
     SQLite uses it */
  static const char sql[]
      = "WITH c AS (SELECT org_id, SUM (status = 'creating') AS cr, SUM (status = 'running') AS ru,"
        "  SUM (status = 'paused') AS pa FROM sandboxes"
        "  WHERE status IN ('running', 'paused', 'creating') GROUP BY org_id)"
        " SELECT COALESCE (o.name, c.org_id), c.cr, c.ru, c.pa FROM c LEFT JOIN orgs AS o ON o.id = c.org_id"
        " ORDER BY c.cr + c.ru + c.pa DESC, 1";
  *n = 0;
  memset (other, 0, SBX_CENSUS_STATES * sizeof *other);
  sqlite3 *db = sbx_store_db_lock (st);
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2 (db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK)
    {
      db_fail (db, rc, err, "sandbox census");
      sbx_store_db_unlock (st);
      return -1;
    }
  while ((rc = sqlite3_step (s)) == SQLITE_ROW)
    {
      uint32_t v[SBX_CENSUS_STATES];
      for (int i = 0; i < SBX_CENSUS_STATES; i++)
        v[i] = (uint32_t) sqlite3_column_int64 (s, 1 + i);
      if (*n < max)
        {
          struct sbx_census_org *o = &orgs[(*n)++];
          const char *name = (const char *) sqlite3_column_text (s, 0);
          snprintf (o->name, sizeof o->name, "%s", name ? name : "");
          memcpy (o->n, v, sizeof v);
        }
      else
        for (int i = 0; i < SBX_CENSUS_STATES; i++)
          other[i] += v[i];
    }
  int r = rc == SQLITE_DONE ? 0 : db_fail (db, rc, err, "sandbox census");
  sqlite3_finalize (s);
  sbx_store_db_unlock (st);
  return r;
}

int
sbx_store_delivery_census (struct sbx_store *st, uint64_t *pending, uint64_t *failed, struct sbx_err *err)
{
  static const char sql[] = "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending'),"
                            " (SELECT COUNT(*) FROM deliveries WHERE state = 'failed')";
  *pending = *failed = 0;
  sqlite3 *db = sbx_store_db_lock (st);
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2 (db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step (s)) == SQLITE_ROW)
    {
      *pending = (uint64_t) sqlite3_column_int64 (s, 0);
      *failed = (uint64_t) sqlite3_column_int64 (s, 1);
      rc = SQLITE_OK;
    }
  int r = rc == SQLITE_OK ? 0 : db_fail (db, rc, err, "delivery census");
  sqlite3_finalize (s);
  sbx_store_db_unlock (st);
  return r;
}
