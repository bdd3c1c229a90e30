/*
 * store_db.h - the store's connection for the store's other files
 * (store_agents.c), which keep their tables and statements beside
 * store.c's rather than in it.  Only files of the store include this.
 */
#ifndef SBX_SERVICE_STORE_DB_H
#define SBX_SERVICE_STORE_DB_H

#include <sqlite3.h>

#include "store.h"

/* The connection, with the store's lock held until sbx_store_db_unlock:
   every use of it is under the lock. */
sqlite3 *sbx_store_db_lock (struct sbx_store *st);
void sbx_store_db_unlock (struct sbx_store *st);
/* PREFIX + 20 characters of [a-z0-9], as the store's own ids. */
int sbx_store_random_id (char *buf, size_t size, const char *prefix, struct sbx_err *err);

/* store_agents.c, store_samples.c: their tables, created at open (IF NOT EXISTS). */
int sbx_store_agents_schema (struct sbx_store *st, struct sbx_err *err);

#endif
