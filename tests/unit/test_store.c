/*
 * test_store.c - tests of src/service/store.c on a real SQLite file.
 *
 * Everything runs in a temporary directory: organisations, plans and
 * limits, the metering ledger (sandbox time, pauses, windows, hours in
 * decimals), the migration of version 1 and 2 files, API
 * keys (formats, lookup, revocation, and that no key is ever written in
 * clear, WAL file included), sandbox records (by agent too), runs and
 * their bounds, events and their filters,
 * webhooks, the delivery queue (per-webhook order, retries, final states),
 * work done after the answer (sbx_store_later: the next read waits for
 * it, and closing does what is queued), persistence across close and
 * reopen and across kill -9, a second
 * connection on the same file, and a small concurrency run.  No root, no network; a second or so.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -Wformat=2 -O2 -Isrc -o /tmp/test_store \
 *     tests/unit/test_store.c src/service/store.c src/service/store_agents.c src/service/plans.c \
 *     src/common/error.c src/common/util.c \
 *     -lsqlite3 -ljansson -lcrypto -lpthread && /tmp/test_store
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "service/plans.h"
#include "service/store.h"

#include "check.h"
#include "service/store_agents.h"

/* A call that must succeed; prints the store's message otherwise. */
#define CHECK_OK(call)                                                                                 \
  do                                                                                                   \
    {                                                                                                  \
      struct sbx_err e_ = { 0 };                                                                       \
      struct sbx_err *err = &e_;                                                                       \
      (void) err;                                                                                      \
      if ((call) >= 0)                                                                                 \
        passed++;                                                                                      \
      else                                                                                             \
        {                                                                                              \
          failed++;                                                                                    \
          fprintf (stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, e_.msg);                 \
        }                                                                                              \
    }                                                                                                  \
  while (0)

/* A call that must fail with errno CODE. */
#define CHECK_ERR(call, want)                                                                          \
  do                                                                                                   \
    {                                                                                                  \
      struct sbx_err e_ = { 0 };                                                                       \
      struct sbx_err *err = &e_;                                                                       \
      (void) err;                                                                                      \
      if ((call) < 0 && e_.code == (want))                                                             \
        passed++;                                                                                      \
      else                                                                                             \
        {                                                                                              \
          failed++;                                                                                    \
          fprintf (stderr, "FAIL %s:%d: %s: expected %s, got code %d (%s)\n", __FILE__, __LINE__,      \
                   #call, #want, e_.code, e_.msg);                                                     \
        }                                                                                              \
    }                                                                                                  \
  while (0)

static char dir[64], db_path[PATH_MAX];
static struct sbx_store *st;

/* What later sections (and the reopen) check again. */
static char key_live[64], key_by_id[64], key_e2b[64];
static struct sbx_org org_a;
static char wh_keep[SBX_STORE_ID_MAX];
static int64_t dl_pending_id;

static void
die (const char *what)
{
  perror (what);
  exit (2);
}

static bool
all_of (const char *s, size_t n, const char *alphabet)
{
  if (strlen (s) != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (strchr (alphabet, s[i]) == NULL)
      return false;
  return true;
}

static bool
good_id (const char *id, const char *prefix)
{
  size_t p = strlen (prefix);
  return strncmp (id, prefix, p) == 0 && all_of (id + p, 20, "abcdefghijklmnopqrstuvwxyz0123456789");
}

static bool
good_uuid (const char *id)
{
  if (strlen (id) != 36)
    return false;
  for (int i = 0; i < 36; i++)
    {
      bool dash = i == 8 || i == 13 || i == 18 || i == 23;
      if (dash ? id[i] != '-' : !(isdigit ((unsigned char) id[i]) || (id[i] >= 'a' && id[i] <= 'f')))
        return false;
    }
  return id[14] == '4' && strchr ("89ab", id[19]) != NULL;
}

static struct sbx_store *
open_store (void)
{
  struct sbx_store *s = NULL;
  struct sbx_err err = { 0 };
  if (sbx_store_open (db_path, &s, &err) < 0)
    {
      fprintf (stderr, "open: %s\n", err.msg);
      exit (2);
    }
  return s;
}

/* ------------------------------------------------------------------ orgs */

static void
test_orgs (void)
{
  struct sbx_org o, o2;
  CHECK_OK (sbx_store_org_ensure (st, "acme", &o, err));
  CHECK (good_id (o.id, "org_"));
  CHECK (strcmp (o.name, "acme") == 0);
  CHECK (o.max_sandboxes == 10 && o.max_timeout_s == 3600 && o.max_upload_bytes == 100ull * 1024 * 1024);
  CHECK (strcmp (o.plan, "default") == 0 && o.monthly_ms == 0);
  CHECK_OK (sbx_store_org_ensure (st, "acme", &o2, err));
  CHECK (strcmp (o.id, o2.id) == 0);

  CHECK_OK (sbx_store_org_set_limits (st, "acme", 5, 0, 0, err));
  CHECK_OK (sbx_store_org_ensure (st, "acme", &o2, err));
  CHECK (o2.max_sandboxes == 5 && o2.max_timeout_s == 3600 && o2.max_upload_bytes == 100ull * 1024 * 1024);
  CHECK_OK (sbx_store_org_set_limits (st, "acme", 0, 600, 1234, err));
  CHECK_OK (sbx_store_org_ensure (st, "acme", &o2, err));
  CHECK (o2.max_sandboxes == 5 && o2.max_timeout_s == 600 && o2.max_upload_bytes == 1234);
  CHECK_ERR (sbx_store_org_set_limits (st, "nobody", 1, 1, 1, err), ENOENT);
  CHECK_ERR (sbx_store_org_ensure (st, "", &o2, err), EINVAL);
  CHECK_ERR (sbx_store_org_ensure (st, "bad\nname", &o2, err), EINVAL);
  CHECK_ERR (sbx_store_org_set_limits (st, "acme", 0, 7201, 0, err), EINVAL);
  org_a = o2;
}

/* Plans: the table, creating organisations on a plan, overriding limits,
   listing, and what is refused. */
static void
test_plans (void)
{
  const struct sbx_plan *p = sbx_plan_find ("free");
  CHECK (p && p->max_sandboxes == 1 && p->max_timeout_s == 300 && p->monthly_hours == 5);
  p = sbx_plan_find ("builder");
  CHECK (p && p->max_sandboxes == 3 && p->max_timeout_s == 1800 && p->monthly_hours == 50);
  p = sbx_plan_find ("pro");
  CHECK (p && p->max_sandboxes == 10 && p->max_timeout_s == 3600 && p->monthly_hours == 500);
  p = sbx_plan_find ("scale");
  CHECK (p && p->max_sandboxes == 50 && p->max_timeout_s == 7200 && p->monthly_hours == 5000);
  CHECK (p && p->max_timeout_s <= SBX_PLAN_TIMEOUT_CAP);
  p = sbx_plan_default ();
  CHECK (strcmp (p->name, "default") == 0 && p->max_sandboxes == 10 && p->max_timeout_s == 3600
         && p->monthly_hours == 0);
  CHECK (sbx_plan_find ("gold") == NULL && sbx_plan_find (NULL) == NULL && sbx_plan_find ("Free") == NULL);
  int nplans = 0;
  for (const struct sbx_plan *const *v = sbx_plans (); *v; v++)
    nplans++;
  CHECK (nplans == 5);

  struct sbx_org o = { .name = "startup", .plan = "free", .max_sandboxes = 3, .max_timeout_s = 300,
                       .monthly_ms = 5 * SBX_MS_PER_HOUR };
  CHECK_OK (sbx_store_org_create (st, &o, err));
  CHECK (good_id (o.id, "org_") && o.max_upload_bytes == 100ull * 1024 * 1024);
  struct sbx_org g;
  CHECK_OK (sbx_store_org_get (st, "startup", &g, err));
  CHECK (strcmp (g.id, o.id) == 0 && strcmp (g.plan, "free") == 0 && g.max_sandboxes == 3 && g.max_timeout_s == 300
         && g.monthly_ms == 5 * SBX_MS_PER_HOUR && g.max_upload_bytes == 100ull * 1024 * 1024);
  /* ensure finds it as it is, and a key of it carries the plan */
  CHECK_OK (sbx_store_org_ensure (st, "startup", &g, err));
  CHECK (strcmp (g.plan, "free") == 0 && g.max_sandboxes == 3);
  char key[64];
  CHECK_OK (sbx_store_key_create (st, "startup", "sk-sb-", key, sizeof key, NULL, err));
  CHECK_OK (sbx_store_key_lookup (st, key, &g, err));
  CHECK (strcmp (g.plan, "free") == 0 && g.max_timeout_s == 300 && g.monthly_ms == 5 * SBX_MS_PER_HOUR);

  struct sbx_org dup = o;
  CHECK_ERR (sbx_store_org_create (st, &dup, err), EEXIST);
  struct sbx_org bad = { .name = "b", .plan = "gold", .max_sandboxes = 1, .max_timeout_s = 1 };
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  snprintf (bad.plan, sizeof bad.plan, "pro");
  bad.max_sandboxes = 0;
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  bad.max_sandboxes = 1;
  bad.max_timeout_s = SBX_PLAN_TIMEOUT_CAP + 1;
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  bad.max_timeout_s = 0;
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  bad.max_timeout_s = 1;
  bad.monthly_ms = SBX_PLAN_MONTHLY_MS_CAP + 1;
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  bad.monthly_ms = -1;
  CHECK_ERR (sbx_store_org_create (st, &bad, err), EINVAL);
  CHECK_ERR (sbx_store_org_get (st, "b", &g, err), ENOENT);

  /* the operator moves it to scale and overrides one limit */
  o = (struct sbx_org){ .name = "startup", .plan = "scale", .max_sandboxes = 2, .max_timeout_s = 7200,
                        .monthly_ms = 0 };
  CHECK_OK (sbx_store_org_update (st, &o, err));
  CHECK_OK (sbx_store_org_get (st, "startup", &g, err));
  CHECK (strcmp (g.plan, "scale") == 0 && g.max_sandboxes == 2 && g.max_timeout_s == 7200 && g.monthly_ms == 0);
  /* a fraction of an hour is kept to the millisecond */
  o.monthly_ms = 18000;   /* 0.005 h */
  CHECK_OK (sbx_store_org_update (st, &o, err));
  CHECK_OK (sbx_store_org_get (st, "startup", &g, err));
  CHECK (g.monthly_ms == 18000);
  o.monthly_ms = 0;
  CHECK_OK (sbx_store_org_update (st, &o, err));
  CHECK_OK (sbx_store_key_lookup (st, key, &g, err));
  CHECK (g.max_sandboxes == 2);
  o.max_sandboxes = 0;
  CHECK_ERR (sbx_store_org_update (st, &o, err), EINVAL);
  snprintf (o.name, sizeof o.name, "nobody");
  o.max_sandboxes = 1;
  CHECK_ERR (sbx_store_org_update (st, &o, err), ENOENT);
  CHECK_ERR (sbx_store_org_get (st, "nobody", &g, err), ENOENT);

  struct sbx_org *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_org_list (st, &v, &n, err));
  CHECK (n == 3);
  if (n == 3)   /* oldest first */
    CHECK (strcmp (v[0].name, "acme") == 0 && strcmp (v[1].name, "beta") == 0 && strcmp (v[2].name, "startup") == 0
           && strcmp (v[2].plan, "scale") == 0 && v[2].max_sandboxes == 2);
  free (v);
}

/* ------------------------------------------------------------------ keys */

static void
test_keys (void)
{
  struct sbx_key_info ki, ki2, ki3;
  struct sbx_org o;
  char small[20];
  int n = -1;

  CHECK_OK (sbx_store_key_count (st, &n, err));
  CHECK (n == 0);

  CHECK_OK (sbx_store_key_create (st, "acme", "sk-sb-", key_live, sizeof key_live, &ki, err));
  CHECK (strncmp (key_live, "sk-sb-", 6) == 0 && all_of (key_live + 6, 40, "0123456789abcdef"));
  CHECK (good_id (ki.id, "key_"));
  CHECK (strcmp (ki.org_name, "acme") == 0);
  CHECK (strlen (ki.hint) == 10 && strncmp (ki.hint, key_live, 10) == 0);
  CHECK (ki.created_ms > 0 && ki.revoked_ms == 0);

  CHECK_OK (sbx_store_key_create (st, "acme", "sk-sb-", key_by_id, sizeof key_by_id, &ki2, err));
  CHECK (strcmp (key_by_id, key_live) != 0 && strcmp (ki.id, ki2.id) != 0);
  /* A new organisation comes with the key. */
  CHECK_OK (sbx_store_key_create (st, "beta", "e2b_", key_e2b, sizeof key_e2b, &ki3, err));
  CHECK (strncmp (key_e2b, "e2b_", 4) == 0 && all_of (key_e2b + 4, 40, "0123456789abcdef"));
  CHECK (strcmp (ki3.org_name, "beta") == 0 && strncmp (ki3.hint, "e2b_", 4) == 0);

  CHECK_ERR (sbx_store_key_create (st, "acme", "pk-", small, sizeof small, NULL, err), EINVAL);
  CHECK_ERR (sbx_store_key_create (st, "acme", "sk-sb-", small, sizeof small, NULL, err), EINVAL);

  CHECK_OK (sbx_store_key_lookup (st, key_live, &o, err));
  CHECK (strcmp (o.name, "acme") == 0 && strcmp (o.id, org_a.id) == 0 && o.max_sandboxes == 5);
  CHECK_OK (sbx_store_key_lookup (st, key_e2b, &o, err));
  CHECK (strcmp (o.name, "beta") == 0 && o.max_sandboxes == 10);

  char wrong[64];
  snprintf (wrong, sizeof wrong, "%s", key_live);
  wrong[20] = wrong[20] == 'a' ? 'b' : 'a';
  CHECK_ERR (sbx_store_key_lookup (st, wrong, &o, err), ENOENT);
  CHECK_ERR (sbx_store_key_lookup (st, "", &o, err), ENOENT);
  CHECK_ERR (sbx_store_key_lookup (st, NULL, &o, err), ENOENT);

  CHECK_OK (sbx_store_key_revoke (st, ki2.id, err));
  CHECK_ERR (sbx_store_key_lookup (st, key_by_id, &o, err), EKEYREVOKED);
  CHECK_OK (sbx_store_key_revoke (st, key_e2b, err));
  CHECK_ERR (sbx_store_key_lookup (st, key_e2b, &o, err), EKEYREVOKED);
  CHECK_OK (sbx_store_key_revoke (st, ki2.id, err));    /* again: still fine */
  CHECK_ERR (sbx_store_key_revoke (st, "key_doesnotexist0000000", err), ENOENT);
  CHECK_ERR (sbx_store_key_revoke (st, wrong, err), ENOENT);
  CHECK_OK (sbx_store_key_lookup (st, key_live, &o, err));

  struct sbx_key_info *v = NULL;
  size_t nv = 0;
  CHECK_OK (sbx_store_key_list (st, &v, &nv, err));
  CHECK (nv == 3);
  if (nv == 3)
    {
      CHECK (strcmp (v[0].id, ki.id) == 0 && strcmp (v[0].hint, ki.hint) == 0 && v[0].revoked_ms == 0);
      CHECK (strcmp (v[1].id, ki2.id) == 0 && v[1].revoked_ms > 0);
      CHECK (strcmp (v[2].id, ki3.id) == 0 && strcmp (v[2].org_name, "beta") == 0 && v[2].revoked_ms > 0);
      CHECK (strcmp (v[2].hint, ki3.hint) == 0 && v[0].created_ms > 0);
    }
  free (v);

  CHECK_OK (sbx_store_key_count (st, &n, err));
  CHECK (n == 3);
}

/* Is NEEDLE anywhere in the file at PATH? (A missing file has nothing.) */
static bool
file_contains (const char *path, const char *needle)
{
  FILE *f = fopen (path, "rb");
  if (f == NULL)
    return false;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc (cap);
  size_t r;
  while (buf && (r = fread (buf + len, 1, cap - len, f)) > 0)
    {
      len += r;
      if (len == cap)
        {
          char *p = realloc (buf, cap *= 2);
          if (p == NULL)
            free (buf);
          buf = p;
        }
    }
  fclose (f);
  if (buf == NULL)
    die ("realloc");
  bool found = memmem (buf, len, needle, strlen (needle)) != NULL;
  free (buf);
  return found;
}

static void
check_no_plain_keys (const char *when)
{
  const char *keys[] = { key_live, key_by_id, key_e2b };
  const char *suffix[] = { "", "-wal", "-shm", "-journal" };
  int leaks = 0;
  for (size_t k = 0; k < 3; k++)
    for (size_t s = 0; s < 4; s++)
      {
        char path[PATH_MAX + 16];
        snprintf (path, sizeof path, "%s%s", db_path, suffix[s]);
        /* The whole key, and its secret part alone. */
        const char *secret = keys[k] + (keys[k][0] == 'e' ? 4 : 6);
        if (file_contains (path, keys[k]) || file_contains (path, secret))
          {
            fprintf (stderr, "key %zu found in %s (%s)\n", k, path, when);
            leaks++;
          }
      }
  CHECK (leaks == 0);
  struct stat sb;
  CHECK (stat (db_path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
}

/* ------------------------------------------------------------- sandboxes */

static struct sbx_sandbox_rec
rec (const char *id, const char *org, const char *status, int64_t started, const char *meta)
{
  struct sbx_sandbox_rec r;
  memset (&r, 0, sizeof r);
  snprintf (r.id, sizeof r.id, "%s", id);
  snprintf (r.org_id, sizeof r.org_id, "%s", org);
  snprintf (r.template_id, sizeof r.template_id, "base");
  snprintf (r.status, sizeof r.status, "%s", status);
  r.metadata_json = (char *) meta;
  r.started_ms = started;
  r.end_ms = started + 300000;
  r.cpu_count = 2;
  r.memory_mb = 512;
  r.disk_mb = 1024;
  return r;
}

static void
test_sandboxes (void)
{
  struct sbx_sandbox_rec r1 = rec ("sb1", org_a.id, "running", 1000, "{\"user\":\"x\"}");
  struct sbx_sandbox_rec r2 = rec ("sb2", org_a.id, "paused", 3000, NULL);
  struct sbx_sandbox_rec r3 = rec ("sb3", org_a.id, "stopped", 2000, NULL);
  struct sbx_sandbox_rec r4 = rec ("sb4", org_a.id, "creating", 3000, NULL);
  struct sbx_sandbox_rec r5 = rec ("sb5", "org_other", "running", 9000, NULL);
  snprintf (r3.stop_reason, sizeof r3.stop_reason, "timeout");
  r3.stopped_ms = 2500;
  CHECK_OK (sbx_store_sandbox_put (st, &r1, err));
  CHECK_OK (sbx_store_sandbox_put (st, &r2, err));
  CHECK_OK (sbx_store_sandbox_put (st, &r3, err));
  CHECK_OK (sbx_store_sandbox_put (st, &r4, err));
  CHECK_OK (sbx_store_sandbox_put (st, &r5, err));

  struct sbx_sandbox_rec g;
  CHECK_OK (sbx_store_sandbox_get (st, "sb1", &g, err));
  CHECK (strcmp (g.org_id, org_a.id) == 0 && strcmp (g.status, "running") == 0);
  CHECK (g.metadata_json && strcmp (g.metadata_json, "{\"user\":\"x\"}") == 0);
  CHECK (g.started_ms == 1000 && g.end_ms == 301000 && g.cpu_count == 2 && g.memory_mb == 512 && g.disk_mb == 1024);
  CHECK (strcmp (g.template_id, "base") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK (g.metadata_json == NULL);
  CHECK_OK (sbx_store_sandbox_get (st, "sb3", &g, err));
  CHECK (g.metadata_json == NULL && strcmp (g.stop_reason, "timeout") == 0 && g.stopped_ms == 2500);
  sbx_sandbox_rec_free (&g);
  CHECK_ERR (sbx_store_sandbox_get (st, "nope", &g, err), ENOENT);

  struct sbx_sandbox_rec *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_sandbox_list (st, org_a.id, NULL, &v, &n, err));
  CHECK (n == 4);
  if (n == 4)   /* newest first, ties by id */
    CHECK (strcmp (v[0].id, "sb2") == 0 && strcmp (v[1].id, "sb4") == 0 && strcmp (v[2].id, "sb3") == 0
           && strcmp (v[3].id, "sb1") == 0);
  if (n == 4)
    CHECK (v[3].metadata_json && strcmp (v[3].metadata_json, "{\"user\":\"x\"}") == 0);
  sbx_sandbox_recs_free (v, n);
  CHECK_OK (sbx_store_sandbox_list (st, org_a.id, "running", &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, "sb1") == 0);
  sbx_sandbox_recs_free (v, n);
  CHECK_OK (sbx_store_sandbox_list (st, "org_none", NULL, &v, &n, err));
  CHECK (n == 0 && v == NULL);

  uint32_t live = 99;
  CHECK_OK (sbx_store_sandbox_count_live (st, org_a.id, &live, err));
  CHECK (live == 3);
  /* Replace: sb1 stops. */
  r1.metadata_json = NULL;
  snprintf (r1.status, sizeof r1.status, "stopped");
  snprintf (r1.stop_reason, sizeof r1.stop_reason, "request");
  CHECK_OK (sbx_store_sandbox_put (st, &r1, err));
  CHECK_OK (sbx_store_sandbox_count_live (st, org_a.id, &live, err));
  CHECK (live == 2);
  CHECK_OK (sbx_store_sandbox_get (st, "sb1", &g, err));
  CHECK (strcmp (g.status, "stopped") == 0 && g.metadata_json == NULL && strcmp (g.stop_reason, "request") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_count_live (st, "org_other", &live, err));
  CHECK (live == 1);
}

/* Seed 004's placeholder under the sandbox's own id: it counts toward the
   limit, answers under that id, and the create's record replaces it. */
static void
test_sandbox_reserve_id (void)
{
  uint32_t live = 0;
  CHECK_OK (sbx_store_sandbox_reserve_id (st, "org_rsvid", 2, "bun", "sbx_queued0000000000001", &live, err));
  CHECK (live == 1);
  struct sbx_sandbox_rec g;
  CHECK_OK (sbx_store_sandbox_get (st, "sbx_queued0000000000001", &g, err));
  CHECK (strcmp (g.status, "creating") == 0 && strcmp (g.template_id, "bun") == 0 && g.started_ms > 0);
  sbx_sandbox_rec_free (&g);
  char rsv[SBX_STORE_ID_MAX];
  CHECK_OK (sbx_store_sandbox_reserve (st, "org_rsvid", 2, "base", rsv, &live, err));
  CHECK (live == 2 && strncmp (rsv, "rsv_", 4) == 0);
  struct sbx_err e3 = { 0 };
  CHECK (sbx_store_sandbox_reserve_id (st, "org_rsvid", 2, "bun", "sbx_queued0000000000002", &live, &e3) < 0
         && e3.kind == SBX_E_LIMIT);
  /* the same id twice is refused, and takes nothing */
  CHECK (sbx_store_sandbox_reserve_id (st, "org_rsvid", 3, "bun", "sbx_queued0000000000001", &live, &e3) < 0);
  uint32_t n = 0;
  CHECK_OK (sbx_store_sandbox_count_live (st, "org_rsvid", &n, err));
  CHECK (n == 2);
  struct sbx_sandbox_rec r = rec ("sbx_queued0000000000001", "org_rsvid", "running", 1000, NULL);
  CHECK_OK (sbx_store_sandbox_record (st, "sbx_queued0000000000001", &r, NULL, err));
  CHECK_OK (sbx_store_sandbox_get (st, "sbx_queued0000000000001", &g, err));
  CHECK (strcmp (g.status, "running") == 0 && g.started_ms == 1000);
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_count_live (st, "org_rsvid", &n, err));
  CHECK (n == 2);
}

/* A create's place is held in memory: it counts toward the limit beside
   the records, writes nothing, and is given back by its record's commit
   or by a drop. */
static void
test_sandbox_reserve_held (void)
{
  const char *org = "org_held";
  struct sbx_sandbox_rec r0 = rec ("held0", org, "running", 100, NULL);
  CHECK_OK (sbx_store_sandbox_put (st, &r0, err));
  char a[SBX_STORE_ID_MAX], b[SBX_STORE_ID_MAX], c[SBX_STORE_ID_MAX];
  uint32_t live = 0, n = 0;
  CHECK_OK (sbx_store_sandbox_reserve (st, org, 3, "base", a, &live, err));
  CHECK (live == 2 && strncmp (a, "rsv_", 4) == 0);
  CHECK_OK (sbx_store_sandbox_reserve (st, org, 3, "base", b, &live, err));
  CHECK (live == 3 && strcmp (a, b) != 0);
  struct sbx_err e3 = { 0 };
  CHECK (sbx_store_sandbox_reserve (st, org, 3, "base", c, &live, &e3) < 0 && e3.kind == SBX_E_LIMIT);
  CHECK (sbx_store_sandbox_reserve_id (st, org, 3, "bun", "sbx_held00000000000001", &live, &e3) < 0
         && e3.kind == SBX_E_LIMIT);
  /* nothing written: not listed, not found */
  struct sbx_sandbox_rec g;
  CHECK_ERR (sbx_store_sandbox_get (st, a, &g, err), ENOENT);
  struct sbx_sandbox_rec *v = NULL;
  size_t nv = 0;
  CHECK_OK (sbx_store_sandbox_list (st, org, NULL, &v, &nv, err));
  CHECK (nv == 1);
  sbx_sandbox_recs_free (v, nv);
  CHECK_OK (sbx_store_sandbox_count_live (st, org, &n, err));
  CHECK (n == 3);
  /* A's record takes its place: still 3, and the record is there */
  struct sbx_sandbox_rec ra = rec ("held1", org, "running", 200, NULL);
  CHECK_OK (sbx_store_sandbox_record (st, a, &ra, NULL, err));
  CHECK_OK (sbx_store_sandbox_count_live (st, org, &n, err));
  CHECK (n == 3);
  CHECK_OK (sbx_store_sandbox_get (st, "held1", &g, err));
  sbx_sandbox_rec_free (&g);
  /* B's create failed: its place is free again, once */
  CHECK_OK (sbx_store_sandbox_record (st, b, NULL, NULL, err));
  CHECK_OK (sbx_store_sandbox_record (st, b, NULL, NULL, err));
  CHECK_OK (sbx_store_sandbox_count_live (st, org, &n, err));
  CHECK (n == 2);
  CHECK_OK (sbx_store_sandbox_reserve (st, org, 3, "base", c, &live, err));
  CHECK (live == 3);
  CHECK (sbx_store_sandbox_reserve (st, org, 3, "base", b, &live, &e3) < 0 && e3.kind == SBX_E_LIMIT);
  CHECK_OK (sbx_store_sandbox_record (st, c, NULL, NULL, err));
}

/* The WAL is checkpointed by the store's own thread, not by the commits:
   after many commits it has been copied back and restarted, so it stays
   near the checkpoint mark (1000 pages) instead of growing with them. */
static void
test_wal_checkpoints (void)
{
  char wal[sizeof db_path + 8];
  snprintf (wal, sizeof wal, "%s-wal", db_path);
  char big[2048];
  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  for (int i = 0; i < 6000; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "wal%d", i % 50);
      struct sbx_sandbox_rec r = rec (id, "org_wal", i % 2 ? "running" : "stopped", 100 + i, big);
      CHECK_OK (sbx_store_sandbox_record (st, NULL, &r, NULL, err));
    }
  struct stat sb;
  CHECK (stat (wal, &sb) == 0);
  /* 6000 commits of at least 2 pages each: 48 MB of WAL if never copied */
  CHECK (sb.st_size < (off_t) 16 << 20);
}

/* Seed 002's agent_id and mode, and listing by agent. */
static void
test_sandbox_agents (void)
{
  struct sbx_sandbox_rec a1 = rec ("ag1", "org_agents", "running", 100, NULL);
  struct sbx_sandbox_rec a2 = rec ("ag2", "org_agents", "stopped", 200, NULL);
  struct sbx_sandbox_rec a3 = rec ("ag3", "org_agents", "running", 300, NULL);
  struct sbx_sandbox_rec a4 = rec ("ag4", "org_agents", "running", 400, NULL);
  struct sbx_sandbox_rec a5 = rec ("ag5", "org_agents2", "running", 500, NULL);
  snprintf (a1.agent_id, sizeof a1.agent_id, "data-processor");
  snprintf (a1.mode, sizeof a1.mode, "container");
  snprintf (a2.agent_id, sizeof a2.agent_id, "data-processor");
  snprintf (a3.agent_id, sizeof a3.agent_id, "other");
  snprintf (a3.mode, sizeof a3.mode, "wasm");
  snprintf (a5.agent_id, sizeof a5.agent_id, "data-processor");
  /* the longest agent id that fits, and its terminator */
  memset (a4.agent_id, 'x', sizeof a4.agent_id - 1);
  CHECK_OK (sbx_store_sandbox_put (st, &a1, err));
  CHECK_OK (sbx_store_sandbox_put (st, &a2, err));
  CHECK_OK (sbx_store_sandbox_put (st, &a3, err));
  CHECK_OK (sbx_store_sandbox_put (st, &a4, err));
  CHECK_OK (sbx_store_sandbox_put (st, &a5, err));

  struct sbx_sandbox_rec g;
  CHECK_OK (sbx_store_sandbox_get (st, "ag1", &g, err));
  CHECK (strcmp (g.agent_id, "data-processor") == 0 && strcmp (g.mode, "container") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_get (st, "ag3", &g, err));
  CHECK (strcmp (g.agent_id, "other") == 0 && strcmp (g.mode, "wasm") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_get (st, "ag4", &g, err));
  CHECK (strlen (g.agent_id) == sizeof g.agent_id - 1 && g.mode[0] == '\0');
  sbx_sandbox_rec_free (&g);

  struct sbx_sandbox_rec *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents", "data-processor", NULL, &v, &n, err));
  CHECK (n == 2 && strcmp (v[0].id, "ag2") == 0 && strcmp (v[1].id, "ag1") == 0);
  sbx_sandbox_recs_free (v, n);
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents", "data-processor", "running", &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, "ag1") == 0);
  sbx_sandbox_recs_free (v, n);
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents", "nobody", NULL, &v, &n, err));
  CHECK (n == 0 && v == NULL);
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents", NULL, NULL, &v, &n, err));
  CHECK (n == 4);
  sbx_sandbox_recs_free (v, n);
  CHECK_OK (sbx_store_sandbox_list (st, "org_agents", "running", &v, &n, err));
  CHECK (n == 3);
  sbx_sandbox_recs_free (v, n);
  /* the engine's later reports know no agent: the stored one stays */
  struct sbx_sandbox_rec report = rec ("ag1", "org_agents", "paused", 100, "{\"k\":1}");
  CHECK_OK (sbx_store_sandbox_put (st, &report, err));
  CHECK_OK (sbx_store_sandbox_get (st, "ag1", &g, err));
  CHECK (strcmp (g.status, "paused") == 0 && strcmp (g.agent_id, "data-processor") == 0
         && strcmp (g.mode, "container") == 0 && g.metadata_json && strcmp (g.metadata_json, "{\"k\":1}") == 0);
  sbx_sandbox_rec_free (&g);
  /* set_agent after the engine wrote the record */
  struct sbx_sandbox_rec fresh = rec ("ag6", "org_agents", "running", 600, NULL);
  CHECK_OK (sbx_store_sandbox_put (st, &fresh, err));
  CHECK_OK (sbx_store_sandbox_set_agent (st, "ag6", "late-agent", "wasm", err));
  CHECK_OK (sbx_store_sandbox_get (st, "ag6", &g, err));
  CHECK (strcmp (g.agent_id, "late-agent") == 0 && strcmp (g.mode, "wasm") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_set_agent (st, "ag6", NULL, NULL, err));
  CHECK_OK (sbx_store_sandbox_get (st, "ag6", &g, err));
  CHECK (g.agent_id[0] == '\0' && g.mode[0] == '\0');
  sbx_sandbox_rec_free (&g);
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents", "", NULL, &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, "ag6") == 0);
  sbx_sandbox_recs_free (v, n);
  CHECK_ERR (sbx_store_sandbox_set_agent (st, "nope", "a", "wasm", err), ENOENT);
  char long_agent[200];
  memset (long_agent, 'a', sizeof long_agent - 1);
  long_agent[sizeof long_agent - 1] = '\0';
  CHECK_ERR (sbx_store_sandbox_set_agent (st, "ag6", long_agent, "wasm", err), EINVAL);
  CHECK_ERR (sbx_store_sandbox_set_agent (st, "ag6", "a", "webassembly-mode", err), EINVAL);

  /* other organisations' sandboxes of the same agent stay apart */
  CHECK_OK (sbx_store_sandbox_list_by_agent (st, "org_agents2", "data-processor", NULL, &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, "ag5") == 0);
  sbx_sandbox_recs_free (v, n);
}

static void
sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

static int64_t
usage (const char *org, int64_t since, int64_t now)
{
  int64_t ms = -1;
  CHECK_OK (sbx_store_sandbox_usage_ms (st, org, since, now, &ms, err));
  return ms;
}

/* Save record R with status STATUS; *BEFORE and *AFTER (may be NULL) get
   the wall clock around the save, between which the ledger's time is. */
static void
save_as (struct sbx_sandbox_rec *r, const char *status, int64_t *before, int64_t *after)
{
  snprintf (r->status, sizeof r->status, "%s", status);
  if (before)
    *before = sbx_wall_ms ();
  CHECK_OK (sbx_store_sandbox_put (st, r, err));
  if (after)
    *after = sbx_wall_ms ();
}

/* The metering ledger: sandbox time counts while a record is running,
   not while it is creating or paused, once however often a running
   record is saved (a restarted daemon re-attaching), until its stop time;
   a window clips it. */
static void
test_usage (void)
{
  int64_t t0, t1, p0, p1, r0, r1, s0, s1;
  struct sbx_sandbox_rec u1 = rec ("u1", "org_usage", "creating", 1000, NULL);
  save_as (&u1, "creating", NULL, NULL);
  sleep_ms (30);
  CHECK (usage ("org_usage", 0, sbx_wall_ms () + 100000) == 0);   /* queued time is not counted */
  save_as (&u1, "running", &t0, &t1);
  sleep_ms (30);
  save_as (&u1, "running", NULL, NULL);   /* a new timeout: still one interval */
  int64_t ms = usage ("org_usage", 0, t1 + 1000);
  CHECK (ms >= 1000 && ms <= 1000 + (t1 - t0));
  CHECK (usage ("org_usage", t1 + 500, t1 + 1000) == 500);   /* the window clips it */
  CHECK (usage ("org_usage", 0, t0 - 1) == 0);
  CHECK (usage ("org_usage", 5, 5) == 0);

  /* paused: the time stops, whatever the clock does */
  save_as (&u1, "paused", &p0, &p1);
  int64_t ran = usage ("org_usage", 0, p1 + 100000);
  CHECK (ran >= p0 - t1 && ran <= p1 - t0 && ran >= 30);
  CHECK (usage ("org_usage", 0, p1 + 200000) == ran);
  sleep_ms (30);
  /* resumed: a second interval */
  save_as (&u1, "running", &r0, &r1);
  ms = usage ("org_usage", 0, r1 + 1000);
  CHECK (ms >= ran + 1000 && ms <= ran + 1000 + (r1 - r0));
  /* stopped at its stop time, here before the save */
  sleep_ms (30);
  u1.stopped_ms = r1 + 10;
  save_as (&u1, "stopped", &s0, &s1);
  ms = usage ("org_usage", 0, s1 + 100000);
  CHECK (ms >= ran + (r1 + 10 - r1) && ms <= ran + (r1 + 10 - r0));
  /* saved again stopped (a second report): nothing changes */
  save_as (&u1, "stopped", NULL, NULL);
  CHECK (usage ("org_usage", 0, s1 + 100000) == ms);

  /* another organisation's time is its own; one that never ran has none */
  struct sbx_sandbox_rec u2 = rec ("u2", "org_usage_other", "running", 1000, NULL);
  save_as (&u2, "running", NULL, NULL);
  CHECK (usage ("org_usage", 0, s1 + 100000) == ms);
  CHECK (usage ("org_none", 0, s1 + 100000) == 0);

  /* through the record-and-event transaction too, and across a reopen:
     the open interval is found again, not doubled */
  struct sbx_sandbox_rec u3 = rec ("u3", "org_usage", "running", 1000, NULL);
  int64_t a0 = sbx_wall_ms ();
  CHECK_OK (sbx_store_sandbox_record (st, NULL, &u3, NULL, err));
  int64_t a1 = sbx_wall_ms ();
  sbx_store_close (st);
  st = open_store ();
  CHECK_OK (sbx_store_sandbox_record (st, NULL, &u3, NULL, err));
  int64_t later = a1 + 50000;
  int64_t with3 = usage ("org_usage", 0, later);
  CHECK (with3 - ms >= later - a1 && with3 - ms <= later - a0);

  /* organisations out of time: a limit, a running sandbox, past the limit */
  struct sbx_org lim = { .name = "usage-limited", .plan = "free", .max_sandboxes = 1, .max_timeout_s = 300,
                         .monthly_ms = 2000 };
  CHECK_OK (sbx_store_org_create (st, &lim, err));
  struct sbx_sandbox_rec u4 = rec ("u4", lim.id, "running", 1000, NULL);
  int64_t b0, b1;
  save_as (&u4, "running", &b0, &b1);
  char ids[4][SBX_STORE_ID_MAX];
  size_t n = 9;
  CHECK_OK (sbx_store_orgs_out_of_time (st, 0, b1 + 1000, ids, 4, &n, err));
  CHECK (n == 0);
  CHECK_OK (sbx_store_orgs_out_of_time (st, 0, b1 + 2100, ids, 4, &n, err));
  CHECK (n == 1 && strcmp (ids[0], lim.id) == 0);
  CHECK_OK (sbx_store_orgs_out_of_time (st, b1 + 1500, b1 + 2100, ids, 4, &n, err));   /* a new month */
  CHECK (n == 0);
  save_as (&u4, "paused", NULL, NULL);   /* nothing running: nothing to end */
  CHECK_OK (sbx_store_orgs_out_of_time (st, 0, b1 + 100000, ids, 4, &n, err));
  CHECK (n == 0);

  /* hours given in decimals, to the millisecond */
  int64_t h = -1;
  CHECK (sbx_plan_parse_hours ("0.005", &h) == 0 && h == 18000);
  CHECK (sbx_plan_parse_hours ("5", &h) == 0 && h == 5 * SBX_MS_PER_HOUR);
  CHECK (sbx_plan_parse_hours ("0", &h) == 0 && h == 0);
  CHECK (sbx_plan_parse_hours ("1.25", &h) == 0 && h == 4500000);
  CHECK (sbx_plan_parse_hours ("10000000", &h) == 0 && h == SBX_PLAN_MONTHLY_MS_CAP);
  CHECK (sbx_plan_parse_hours ("0.0000001", &h) == -1);   /* 0.36 ms would read as unlimited */
  const char *bad[] = { "", ".5", "5.", "-1", "+1", "1e3", "0x10", "1,5", " 1", "1 ", "10000000.1", "99999999999" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK (sbx_plan_parse_hours (bad[i], &h) == -1);
  char buf[32];
  sbx_plan_format_hours (18000, buf, sizeof buf);
  CHECK (strcmp (buf, "0.005") == 0);
  sbx_plan_format_hours (5 * SBX_MS_PER_HOUR, buf, sizeof buf);
  CHECK (strcmp (buf, "5") == 0);
  sbx_plan_format_hours (4500000, buf, sizeof buf);
  CHECK (strcmp (buf, "1.25") == 0);
  sbx_plan_format_hours (0, buf, sizeof buf);
  CHECK (strcmp (buf, "0") == 0);
  sbx_plan_format_hours (1, buf, sizeof buf);
  CHECK (strcmp (buf, "0.0000003") == 0);

  CHECK (sbx_plan_month_start_ms (1764574543123) == 1764547200000);   /* 2025-12-01 07:35 UTC */
  CHECK (sbx_plan_month_start_ms (1709208000000) == 1706745600000);   /* 2024-02-29 12:00 UTC */
  CHECK (sbx_plan_month_start_ms (1764547200000) == 1764547200000);
}

/* ------------------------------------------------------------------ runs */

static struct sbx_run_rec
new_run (const char *org, const char *sandbox, const char *code)
{
  struct sbx_run_rec r;
  memset (&r, 0, sizeof r);
  snprintf (r.org_id, sizeof r.org_id, "%s", org);
  snprintf (r.sandbox_id, sizeof r.sandbox_id, "%s", sandbox);
  r.code = (char *) code;
  r.timeout_s = 30;
  return r;
}

static char run_left_running[SBX_STORE_ID_MAX];

static void
test_runs (void)
{
  struct sbx_run_rec r1 = new_run ("org_r", "sbr1", "print(1)");
  CHECK_OK (sbx_store_run_create (st, &r1, err));
  CHECK (good_id (r1.id, "run_") && strcmp (r1.status, "running") == 0 && r1.created_ms > 0 && r1.exit_code == -1);

  struct sbx_run_rec g;
  CHECK_OK (sbx_store_run_get (st, "org_r", "sbr1", r1.id, &g, err));
  CHECK (strcmp (g.status, "running") == 0 && strcmp (g.code, "print(1)") == 0 && g.stdout_text == NULL
         && g.stderr_text == NULL && g.reason == NULL && g.exit_code == -1 && g.finished_ms == 0 && g.timeout_s == 30
         && g.created_ms == r1.created_ms && strcmp (g.sandbox_id, "sbr1") == 0 && strcmp (g.org_id, "org_r") == 0);
  sbx_run_rec_free (&g);
  CHECK (g.code == NULL);
  CHECK_OK (sbx_store_run_get (st, "org_r", NULL, r1.id, &g, err));
  sbx_run_rec_free (&g);
  /* another organisation, another sandbox, another id: not found */
  CHECK_ERR (sbx_store_run_get (st, "org_x", "sbr1", r1.id, &g, err), ENOENT);
  CHECK_ERR (sbx_store_run_get (st, "org_r", "sbr2", r1.id, &g, err), ENOENT);
  CHECK_ERR (sbx_store_run_get (st, "org_r", "sbr1", "run_nope", &g, err), ENOENT);
  CHECK_ERR (sbx_store_run_get (st, NULL, "sbr1", r1.id, &g, err), ENOENT);

  /* finish: outputs, exit code, time */
  snprintf (r1.status, sizeof r1.status, "completed");
  r1.stdout_text = "1\n";
  r1.stderr_text = "";
  r1.exit_code = 0;
  CHECK_OK (sbx_store_run_finish (st, &r1, err));
  CHECK_OK (sbx_store_run_get (st, "org_r", "sbr1", r1.id, &g, err));
  CHECK (strcmp (g.status, "completed") == 0 && strcmp (g.stdout_text, "1\n") == 0 && strcmp (g.stderr_text, "") == 0
         && g.exit_code == 0 && g.finished_ms >= g.created_ms && !g.stdout_truncated && !g.stderr_truncated
         && g.reason == NULL);
  sbx_run_rec_free (&g);
  /* a finished run stays as it finished */
  snprintf (r1.status, sizeof r1.status, "failed");
  CHECK_ERR (sbx_store_run_finish (st, &r1, err), EALREADY);
  struct sbx_run_rec ghost = r1;
  snprintf (ghost.id, sizeof ghost.id, "run_ghost");
  CHECK_ERR (sbx_store_run_finish (st, &ghost, err), ENOENT);
  /* another organisation cannot finish it */
  struct sbx_run_rec r2 = new_run ("org_r", "sbr1", "while True: pass");
  CHECK_OK (sbx_store_run_create (st, &r2, err));
  struct sbx_run_rec foreign = r2;
  snprintf (foreign.org_id, sizeof foreign.org_id, "org_x");
  snprintf (foreign.status, sizeof foreign.status, "failed");
  CHECK_ERR (sbx_store_run_finish (st, &foreign, err), ENOENT);
  /* statuses a run cannot finish with */
  snprintf (r2.status, sizeof r2.status, "running");
  CHECK_ERR (sbx_store_run_finish (st, &r2, err), EINVAL);
  snprintf (r2.status, sizeof r2.status, "done");
  CHECK_ERR (sbx_store_run_finish (st, &r2, err), EINVAL);
  /* timeout, with a reason and a given finish time */
  snprintf (r2.status, sizeof r2.status, "timeout");
  r2.exit_code = 137;
  r2.reason = "timed out after 30 s";
  r2.finished_ms = r2.created_ms + 30000;
  r2.stderr_truncated = true;   /* cut before it got here */
  CHECK_OK (sbx_store_run_finish (st, &r2, err));
  CHECK_OK (sbx_store_run_get (st, "org_r", "sbr1", r2.id, &g, err));
  CHECK (strcmp (g.status, "timeout") == 0 && g.exit_code == 137 && strcmp (g.reason, "timed out after 30 s") == 0
         && g.finished_ms == r2.created_ms + 30000 && g.stdout_text == NULL && g.stderr_truncated
         && !g.stdout_truncated);
  sbx_run_rec_free (&g);

  /* bounds: output past SBX_RUN_OUTPUT_MAX is cut on a character boundary */
  struct sbx_run_rec r3 = new_run ("org_r", "sbr2", "print('é' * 10**6)");
  CHECK_OK (sbx_store_run_create (st, &r3, err));
  size_t big = SBX_RUN_OUTPUT_MAX + 10;
  char *out = malloc (big + 1);
  if (out == NULL)
    die ("malloc");
  /* "x" then é (two bytes) over and over: byte SBX_RUN_OUTPUT_MAX - 1 is
     the first half of an é, so a cut at the limit would split it */
  out[0] = 'x';
  for (size_t i = 1; i + 2 < big; i += 2)
    memcpy (out + i, "\xc3\xa9", 2);
  out[big - 1] = 'x';
  out[big] = '\0';
  snprintf (r3.status, sizeof r3.status, "completed");
  r3.stdout_text = out;
  r3.stderr_text = "short";
  CHECK_OK (sbx_store_run_finish (st, &r3, err));
  CHECK_OK (sbx_store_run_get (st, "org_r", NULL, r3.id, &g, err));
  size_t got = g.stdout_text ? strlen (g.stdout_text) : 0;
  CHECK (g.stdout_truncated && !g.stderr_truncated && got == SBX_RUN_OUTPUT_MAX - 1);
  CHECK (got && (unsigned char) g.stdout_text[got - 1] == 0xa9);   /* ends with a whole é */
  CHECK (g.stdout_text && memcmp (g.stdout_text, out, got) == 0);
  sbx_run_rec_free (&g);
  free (out);
  /* code past SBX_RUN_CODE_MAX is refused; a run needs its sandbox and org */
  char *code = malloc (SBX_RUN_CODE_MAX + 2);
  if (code == NULL)
    die ("malloc");
  memset (code, '#', SBX_RUN_CODE_MAX + 1);
  code[SBX_RUN_CODE_MAX + 1] = '\0';
  struct sbx_run_rec r4 = new_run ("org_r", "sbr2", code);
  CHECK_ERR (sbx_store_run_create (st, &r4, err), EINVAL);
  code[SBX_RUN_CODE_MAX] = '\0';
  CHECK_OK (sbx_store_run_create (st, &r4, err));
  free (code);
  struct sbx_run_rec bad = new_run ("", "sbr2", "x");
  CHECK_ERR (sbx_store_run_create (st, &bad, err), EINVAL);
  bad = new_run ("org_r", "", "x");
  CHECK_ERR (sbx_store_run_create (st, &bad, err), EINVAL);
  /* a run of no code is a run of "" */
  struct sbx_run_rec r5 = new_run ("org_r", "sbr1", NULL);
  CHECK_OK (sbx_store_run_create (st, &r5, err));
  snprintf (run_left_running, sizeof run_left_running, "%s", r5.id);

  /* lists: newest first, per sandbox or the whole org, paged */
  struct sbx_run_rec *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_run_list (st, "org_r", "sbr1", 0, 0, &v, &n, err));
  CHECK (n == 3);
  if (n == 3)
    CHECK (strcmp (v[0].id, r5.id) == 0 && strcmp (v[1].id, r2.id) == 0 && strcmp (v[2].id, r1.id) == 0
           && v[0].code && v[0].code[0] == '\0');
  sbx_run_recs_free (v, n);
  CHECK_OK (sbx_store_run_list (st, "org_r", NULL, 0, 0, &v, &n, err));
  CHECK (n == 5);
  sbx_run_recs_free (v, n);
  CHECK_OK (sbx_store_run_list (st, "org_r", NULL, 1, 2, &v, &n, err));
  CHECK (n == 2 && strcmp (v[0].id, r4.id) == 0 && strcmp (v[1].id, r3.id) == 0);
  sbx_run_recs_free (v, n);
  CHECK_OK (sbx_store_run_list (st, "org_x", "sbr1", 0, 0, &v, &n, err));
  CHECK (n == 0 && v == NULL);
  CHECK_OK (sbx_store_run_list (st, NULL, NULL, 0, 0, &v, &n, err));
  CHECK (n == 0 && v == NULL);

  /* unfinished ones of every organisation, oldest first */
  struct sbx_run_rec r6 = new_run ("org_r2", "sbq", "x = 1");
  CHECK_OK (sbx_store_run_create (st, &r6, err));
  CHECK_OK (sbx_store_run_list_unfinished (st, &v, &n, err));
  CHECK (n == 3);
  if (n == 3)
    CHECK (strcmp (v[0].id, r4.id) == 0 && strcmp (v[1].id, r5.id) == 0 && strcmp (v[2].id, r6.id) == 0
           && strcmp (v[2].org_id, "org_r2") == 0);
  sbx_run_recs_free (v, n);
  /* recovery marks them failed */
  snprintf (r4.status, sizeof r4.status, "failed");
  r4.reason = "daemon restarted";
  r4.code = NULL;
  CHECK_OK (sbx_store_run_finish (st, &r4, err));
  snprintf (r6.status, sizeof r6.status, "failed");
  r6.reason = "daemon restarted";
  CHECK_OK (sbx_store_run_finish (st, &r6, err));
  CHECK_OK (sbx_store_run_list_unfinished (st, &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, r5.id) == 0);
  sbx_run_recs_free (v, n);
  CHECK_OK (sbx_store_run_get (st, "org_r", "sbr2", r4.id, &g, err));
  CHECK (strcmp (g.status, "failed") == 0 && strcmp (g.reason, "daemon restarted") == 0 && g.code
         && strlen (g.code) == SBX_RUN_CODE_MAX);
  sbx_run_rec_free (&g);
}

/* ---------------------------------------------------------------- events */

static int
add_event (const char *org, const char *sandbox, const char *type, int64_t ts, const char *data, struct sbx_event *out)
{
  struct sbx_event ev;
  struct sbx_err err = { 0 };
  memset (&ev, 0, sizeof ev);
  snprintf (ev.org_id, sizeof ev.org_id, "%s", org);
  snprintf (ev.sandbox_id, sizeof ev.sandbox_id, "%s", sandbox);
  snprintf (ev.template_id, sizeof ev.template_id, "base");
  snprintf (ev.type, sizeof ev.type, "sandbox.lifecycle.%s", type);
  ev.timestamp_ms = ts;
  ev.data_json = (char *) data;
  int r = sbx_store_event_add (st, &ev, &err);
  if (r < 0)
    fprintf (stderr, "event_add: %s\n", err.msg);
  if (out)
    *out = ev;
  return r;
}

static void
test_events (void)
{
  struct sbx_event e[6];
  int64_t before = sbx_wall_ms ();
  CHECK_OK (add_event (org_a.id, "sb1", "created", 0, "{\"n\":1}", &e[0]));
  CHECK_OK (add_event (org_a.id, "sb2", "created", 0, NULL, &e[1]));
  CHECK_OK (add_event (org_a.id, "sb1", "paused", 0, NULL, &e[2]));
  CHECK_OK (add_event (org_a.id, "sb1", "resumed", 0, NULL, &e[3]));
  CHECK_OK (add_event (org_a.id, "sb1", "killed", 12345, NULL, &e[4]));
  CHECK_OK (add_event ("org_other", "sb5", "created", 0, NULL, &e[5]));
  for (int i = 0; i < 6; i++)
    CHECK (good_uuid (e[i].id));
  for (int i = 1; i < 6; i++)
    CHECK (e[i].seq > e[i - 1].seq && strcmp (e[i].id, e[i - 1].id) != 0);
  CHECK (e[0].timestamp_ms >= before && e[0].timestamp_ms <= sbx_wall_ms ());
  CHECK (e[4].timestamp_ms == 12345);

  struct sbx_event *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 0, 0, false, NULL, &v, &n, err));
  CHECK (n == 5);
  if (n == 5)
    {
      CHECK (v[0].seq == e[4].seq && v[4].seq == e[0].seq);
      CHECK (strcmp (v[4].id, e[0].id) == 0 && strcmp (v[4].type, "sandbox.lifecycle.created") == 0);
      CHECK (v[4].data_json && strcmp (v[4].data_json, "{\"n\":1}") == 0 && v[3].data_json == NULL);
      CHECK (strcmp (v[4].sandbox_id, "sb1") == 0 && strcmp (v[4].template_id, "base") == 0);
      CHECK (strcmp (v[4].org_id, org_a.id) == 0 && v[4].timestamp_ms == e[0].timestamp_ms);
    }
  sbx_events_free (v, n);

  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 1, 2, false, NULL, &v, &n, err));
  CHECK (n == 2 && v[0].seq == e[3].seq && v[1].seq == e[2].seq);
  sbx_events_free (v, n);
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 1, 2, true, NULL, &v, &n, err));
  CHECK (n == 2 && v[0].seq == e[1].seq && v[1].seq == e[2].seq);
  sbx_events_free (v, n);
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 10, 2, true, NULL, &v, &n, err));
  CHECK (n == 0 && v == NULL);
  sbx_events_free (v, n);

  const char *types[] = { "sandbox.lifecycle.created", "sandbox.lifecycle.killed", NULL };
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 0, 0, true, types, &v, &n, err));
  CHECK (n == 3 && v[0].seq == e[0].seq && v[1].seq == e[1].seq && v[2].seq == e[4].seq);
  sbx_events_free (v, n);
  const char *no_types[] = { NULL };
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 0, 0, true, no_types, &v, &n, err));
  CHECK (n == 5);
  sbx_events_free (v, n);

  CHECK_OK (sbx_store_event_list (st, org_a.id, "sb1", 0, 0, false, NULL, &v, &n, err));
  CHECK (n == 4 && v[0].seq == e[4].seq && v[3].seq == e[0].seq);
  sbx_events_free (v, n);
  CHECK_OK (sbx_store_event_list (st, org_a.id, "sb1", 0, 1, true, types, &v, &n, err));
  CHECK (n == 1 && v[0].seq == e[0].seq);
  sbx_events_free (v, n);
  /* Another organisation's sandbox is invisible. */
  CHECK_OK (sbx_store_event_list (st, org_a.id, "sb5", 0, 0, false, NULL, &v, &n, err));
  CHECK (n == 0);
  sbx_events_free (v, n);
  CHECK_OK (sbx_store_event_list (st, "org_other", NULL, 0, 0, false, NULL, &v, &n, err));
  CHECK (n == 1 && v[0].seq == e[5].seq);
  sbx_events_free (v, n);

  struct sbx_event bad;
  memset (&bad, 0, sizeof bad);
  CHECK_ERR (sbx_store_event_add (st, &bad, err), EINVAL);
}

/* -------------------------------------------------------------- webhooks */

static void
test_webhooks (void)
{
  char *ev1[] = { "sandbox.lifecycle.created", NULL };
  char *ev2[] = { "sandbox.lifecycle.killed", "sandbox.lifecycle.paused", NULL };
  struct sbx_webhook w1 = { .name = "one", .url = "http://127.0.0.1:1/a", .enabled = true, .events = ev1,
                            .secret = "s3cret" };
  struct sbx_webhook w2 = { .name = "two", .url = "http://127.0.0.1:1/b", .enabled = false, .events = ev2,
                            .secret = "other" };
  snprintf (w1.org_id, sizeof w1.org_id, "%s", org_a.id);
  snprintf (w2.org_id, sizeof w2.org_id, "%s", org_a.id);
  CHECK_OK (sbx_store_webhook_create (st, &w1, err));
  CHECK_OK (sbx_store_webhook_create (st, &w2, err));
  CHECK (good_id (w1.id, "wh_") && good_id (w2.id, "wh_") && strcmp (w1.id, w2.id) != 0);
  CHECK (w1.created_ms > 0);

  struct sbx_webhook g;
  CHECK_OK (sbx_store_webhook_get (st, org_a.id, w1.id, &g, err));
  CHECK (strcmp (g.id, w1.id) == 0 && strcmp (g.org_id, org_a.id) == 0 && strcmp (g.name, "one") == 0);
  CHECK (strcmp (g.url, w1.url) == 0 && g.enabled && strcmp (g.secret, "s3cret") == 0);
  CHECK (g.events && g.events[0] && strcmp (g.events[0], ev1[0]) == 0 && g.events[1] == NULL);
  CHECK (g.created_ms == w1.created_ms);
  sbx_webhook_free (&g);
  CHECK_ERR (sbx_store_webhook_get (st, "org_other", w1.id, &g, err), ENOENT);
  CHECK_ERR (sbx_store_webhook_get (st, org_a.id, "wh_nope", &g, err), ENOENT);

  struct sbx_webhook *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_webhook_list (st, org_a.id, &v, &n, err));
  CHECK (n == 2 && strcmp (v[0].id, w1.id) == 0 && strcmp (v[1].id, w2.id) == 0);
  if (n == 2)
    CHECK (!v[1].enabled && v[1].events[0] && v[1].events[1] && v[1].events[2] == NULL
           && strcmp (v[1].events[1], "sandbox.lifecycle.paused") == 0);
  sbx_webhooks_free (v, n);
  CHECK_OK (sbx_store_webhook_list (st, "org_other", &v, &n, err));
  CHECK (n == 0);
  sbx_webhooks_free (v, n);

  /* Update: NULLs keep, enabled always replaced. */
  struct sbx_webhook u = { .name = "two-renamed", .enabled = true };
  snprintf (u.id, sizeof u.id, "%s", w2.id);
  snprintf (u.org_id, sizeof u.org_id, "%s", org_a.id);
  CHECK_OK (sbx_store_webhook_update (st, &u, err));
  CHECK_OK (sbx_store_webhook_get (st, org_a.id, w2.id, &g, err));
  CHECK (strcmp (g.name, "two-renamed") == 0 && strcmp (g.url, w2.url) == 0 && g.enabled);
  CHECK (strcmp (g.secret, "other") == 0 && g.events[0] && strcmp (g.events[0], ev2[0]) == 0 && g.events[2] == NULL);
  sbx_webhook_free (&g);
  char *ev3[] = { NULL };
  u.name = NULL;
  u.url = "http://127.0.0.1:1/c";
  u.events = ev3;
  u.secret = "new";
  u.enabled = false;
  CHECK_OK (sbx_store_webhook_update (st, &u, err));
  CHECK_OK (sbx_store_webhook_get (st, org_a.id, w2.id, &g, err));
  CHECK (strcmp (g.name, "two-renamed") == 0 && strcmp (g.url, "http://127.0.0.1:1/c") == 0 && !g.enabled);
  CHECK (strcmp (g.secret, "new") == 0 && g.events && g.events[0] == NULL);
  sbx_webhook_free (&g);
  snprintf (u.org_id, sizeof u.org_id, "org_other");
  CHECK_ERR (sbx_store_webhook_update (st, &u, err), ENOENT);

  CHECK_ERR (sbx_store_webhook_delete (st, "org_other", w1.id, err), ENOENT);
  CHECK_OK (sbx_store_webhook_delete (st, org_a.id, w2.id, err));
  CHECK_ERR (sbx_store_webhook_get (st, org_a.id, w2.id, &g, err), ENOENT);
  CHECK_ERR (sbx_store_webhook_delete (st, org_a.id, w2.id, err), ENOENT);
  CHECK_OK (sbx_store_webhook_list (st, org_a.id, &v, &n, err));
  CHECK (n == 1);
  sbx_webhooks_free (v, n);
  CHECK_OK (sbx_store_webhook_delete (st, org_a.id, w1.id, err));
}

/* ------------------------------------------------------------ deliveries */

static void
expect_next (int64_t now, int want, const char *webhook_id, const char *event_id, int64_t want_due, int line)
{
  struct sbx_delivery d;
  struct sbx_webhook w;
  struct sbx_event ev;
  struct sbx_err err = { 0 };
  int64_t due = -1;
  int r = sbx_store_delivery_next (st, now, &d, &w, &ev, &due, &err);
  bool ok = r == want && due == want_due;
  if (ok && want)
    ok = strcmp (d.webhook_id, webhook_id) == 0 && strcmp (d.event_id, event_id) == 0
         && strcmp (w.id, webhook_id) == 0 && strcmp (ev.id, event_id) == 0 && w.secret && w.url
         && d.state == SBX_DELIVERY_PENDING;
  if (ok)
    passed++;
  else
    {
      failed++;
      fprintf (stderr, "FAIL %s:%d: delivery_next: r=%d (want %d) due=%lld (want %lld) wh=%s ev=%s %s\n", __FILE__,
               line, r, want, (long long) due, (long long) want_due, r > 0 ? d.webhook_id : "-",
               r > 0 ? d.event_id : "-", err.msg);
    }
  sbx_delivery_free (&d);
  sbx_webhook_free (&w);
  sbx_event_free (&ev);
}

#define EXPECT_NEXT(now, want, wh, ev, due) expect_next ((now), (want), (wh), (ev), (due), __LINE__)

static int64_t
delivery_id (const char *org, const char *wh, size_t index)
{
  struct sbx_delivery *v = NULL;
  size_t n = 0;
  struct sbx_err err = { 0 };
  int64_t id = -1;
  if (sbx_store_delivery_list (st, org, wh, &v, &n, &err) == 0 && index < n)
    id = v[index].id;
  sbx_deliveries_free (v, n);
  return id;
}

static void
test_deliveries (void)
{
  struct sbx_org o;
  CHECK_OK (sbx_store_org_ensure (st, "hooks", &o, err));
  char *all[] = { "sandbox.lifecycle.created", "sandbox.lifecycle.killed", NULL };
  char *created[] = { "sandbox.lifecycle.created", NULL };
  char *updated[] = { "sandbox.lifecycle.updated", NULL };
  struct sbx_webhook w1 = { .name = "all", .url = "http://x/1", .enabled = true, .events = all, .secret = "k1" };
  struct sbx_webhook w2 = { .name = "created", .url = "http://x/2", .enabled = true, .events = created,
                            .secret = "k2" };
  struct sbx_webhook w3 = { .name = "off", .url = "http://x/3", .enabled = false, .events = all, .secret = "k3" };
  struct sbx_webhook w4 = { .name = "upd", .url = "http://x/4", .enabled = true, .events = updated,
                            .secret = "k4" };
  struct sbx_webhook *ws[] = { &w1, &w2, &w3, &w4 };
  for (int i = 0; i < 4; i++)
    {
      snprintf (ws[i]->org_id, sizeof ws[i]->org_id, "%s", o.id);
      CHECK_OK (sbx_store_webhook_create (st, ws[i], err));
    }

  /* Nothing queued yet. */
  EXPECT_NEXT (INT64_MAX / 2, 0, NULL, NULL, 0);

  int64_t t0 = sbx_wall_ms ();
  struct sbx_event e1, e2;
  CHECK_OK (add_event (o.id, "sbx", "created", 0, "{}", &e1));
  CHECK_OK (add_event (o.id, "sbx", "killed", 0, NULL, &e2));
  int64_t t1 = sbx_wall_ms ();

  struct sbx_delivery *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_delivery_list (st, o.id, w1.id, &v, &n, err));
  CHECK (n == 2 && strcmp (v[0].event_id, e1.id) == 0 && strcmp (v[1].event_id, e2.id) == 0);
  if (n == 2)
    CHECK (v[0].state == SBX_DELIVERY_PENDING && v[0].attempts == 0 && v[0].next_ms >= t0 && v[0].next_ms <= t1
           && v[0].created_ms == v[0].next_ms && v[0].last_status == 0 && v[0].last_error == NULL
           && v[0].id < v[1].id);
  sbx_deliveries_free (v, n);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w2.id, &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].event_id, e1.id) == 0);
  sbx_deliveries_free (v, n);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w3.id, &v, &n, err));
  CHECK (n == 0);
  sbx_deliveries_free (v, n);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w4.id, &v, &n, err));
  CHECK (n == 0);
  sbx_deliveries_free (v, n);
  CHECK_ERR (sbx_store_delivery_list (st, org_a.id, w1.id, &v, &n, err), ENOENT);

  int64_t d1 = delivery_id (o.id, w1.id, 0), d3 = delivery_id (o.id, w1.id, 1), d2 = delivery_id (o.id, w2.id, 0);
  CHECK (d1 > 0 && d2 > d1 && d3 > d2);

  /* Before they were queued nothing is due; the earliest is w1's first
     (w1's second is not eligible). */
  int64_t first_ms = 0;
  CHECK_OK (sbx_store_delivery_list (st, o.id, w1.id, &v, &n, err));
  if (n > 0)
    first_ms = v[0].next_ms;
  sbx_deliveries_free (v, n);
  EXPECT_NEXT (t0 - 1, 0, NULL, NULL, first_ms);

  int64_t now = t1 + 1000, retry = t1 + 60000;
  EXPECT_NEXT (now, 1, w1.id, e1.id, 0);
  {
    struct sbx_delivery d;
    struct sbx_webhook w;
    struct sbx_event ev;
    CHECK_OK (sbx_store_delivery_next (st, now, &d, &w, &ev, NULL, err));
    CHECK (d.id == d1 && strcmp (w.secret, "k1") == 0 && strcmp (w.url, "http://x/1") == 0);
    CHECK (w.events && w.events[1] && strcmp (w.events[1], "sandbox.lifecycle.killed") == 0);
    CHECK (strcmp (ev.type, "sandbox.lifecycle.created") == 0 && ev.data_json && strcmp (ev.data_json, "{}") == 0);
    CHECK (ev.seq == e1.seq && strcmp (ev.sandbox_id, "sbx") == 0);
    sbx_delivery_free (&d);
    sbx_webhook_free (&w);
    sbx_event_free (&ev);
  }
  /* W, EV and next_due may be left out. */
  {
    struct sbx_delivery d;
    int r = sbx_store_delivery_next (st, now, &d, NULL, NULL, NULL, NULL);
    CHECK (r == 1 && d.id == d1);
    sbx_delivery_free (&d);
  }

  /* d1 fails and is retried later: w1's killed delivery waits behind it,
     w2's delivery does not. */
  CHECK_OK (sbx_store_delivery_record (st, d1, 500, "HTTP 500", false, retry, err));
  EXPECT_NEXT (now, 1, w2.id, e1.id, retry);
  CHECK_OK (sbx_store_delivery_record (st, d2, 200, NULL, true, 0, err));
  EXPECT_NEXT (now, 0, NULL, NULL, retry);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w1.id, &v, &n, err));
  CHECK (n == 2 && v[0].state == SBX_DELIVERY_PENDING && v[0].attempts == 1 && v[0].last_status == 500
         && v[0].last_error && strcmp (v[0].last_error, "HTTP 500") == 0 && v[0].next_ms == retry
         && v[0].updated_ms >= t0);
  sbx_deliveries_free (v, n);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w2.id, &v, &n, err));
  CHECK (n == 1 && v[0].state == SBX_DELIVERY_DELIVERED && v[0].attempts == 1 && v[0].last_status == 200
         && v[0].last_error == NULL);
  sbx_deliveries_free (v, n);

  /* At the retry time: d1 again, then (delivered) d3. */
  EXPECT_NEXT (retry, 1, w1.id, e1.id, 0);
  CHECK_OK (sbx_store_delivery_record (st, d1, 204, NULL, true, 0, err));
  EXPECT_NEXT (retry, 1, w1.id, e2.id, 0);
  CHECK_OK (sbx_store_delivery_record (st, d3, 0, "connection refused", false, 0, err));
  EXPECT_NEXT (retry, 0, NULL, NULL, 0);
  CHECK_OK (sbx_store_delivery_list (st, o.id, w1.id, &v, &n, err));
  CHECK (n == 2 && v[0].state == SBX_DELIVERY_DELIVERED && v[0].attempts == 2 && v[0].last_status == 204);
  if (n == 2)
    CHECK (v[1].state == SBX_DELIVERY_FAILED && v[1].attempts == 1 && v[1].last_status == 0 && v[1].last_error
           && strcmp (v[1].last_error, "connection refused") == 0);
  sbx_deliveries_free (v, n);
  CHECK_ERR (sbx_store_delivery_record (st, 987654321, 200, NULL, true, 0, err), ENOENT);

  /* A long error is kept short. */
  char longerr[3000];
  memset (longerr, 'x', sizeof longerr - 1);
  longerr[sizeof longerr - 1] = '\0';

  /* A disabled webhook's queue pauses and resumes. */
  struct sbx_event e3;
  CHECK_OK (add_event (o.id, "sbx", "updated", 0, NULL, &e3));
  int64_t later = sbx_wall_ms () + 600000;   /* due: everything queued from here on */
  EXPECT_NEXT (later, 1, w4.id, e3.id, 0);
  CHECK_ERR (sbx_store_webhook_update (st, &(struct sbx_webhook){ .enabled = false }, err), ENOENT);
  {
    struct sbx_webhook u = { .enabled = false };
    snprintf (u.id, sizeof u.id, "%s", w4.id);
    snprintf (u.org_id, sizeof u.org_id, "%s", o.id);
    CHECK_OK (sbx_store_webhook_update (st, &u, err));
    EXPECT_NEXT (later, 0, NULL, NULL, 0);
    /* No new deliveries for a disabled webhook either. */
    CHECK_OK (add_event (o.id, "sbx", "updated", 0, NULL, NULL));
    u.enabled = true;
    CHECK_OK (sbx_store_webhook_update (st, &u, err));
    EXPECT_NEXT (later, 1, w4.id, e3.id, 0);
  }
  dl_pending_id = delivery_id (o.id, w4.id, 0);
  CHECK (delivery_id (o.id, w4.id, 1) == -1);
  CHECK_OK (sbx_store_delivery_record (st, dl_pending_id, 503, longerr, false, later + 5000, err));
  CHECK_OK (sbx_store_delivery_list (st, o.id, w4.id, &v, &n, err));
  CHECK (n == 1 && v[0].last_error && strlen (v[0].last_error) <= 1000 && strlen (v[0].last_error) >= 900);
  sbx_deliveries_free (v, n);
  EXPECT_NEXT (later, 0, NULL, NULL, later + 5000);
  snprintf (wh_keep, sizeof wh_keep, "%s", w4.id);

  /* Deleting a webhook deletes its deliveries. */
  struct sbx_event e4;
  CHECK_OK (add_event (o.id, "sbx", "created", 0, NULL, &e4));
  EXPECT_NEXT (later, 1, w1.id, e4.id, later + 5000);
  CHECK_OK (sbx_store_webhook_delete (st, o.id, w1.id, err));
  EXPECT_NEXT (later, 1, w2.id, e4.id, later + 5000);
  CHECK_OK (sbx_store_webhook_delete (st, o.id, w2.id, err));
  EXPECT_NEXT (later, 0, NULL, NULL, later + 5000);
  CHECK_ERR (sbx_store_delivery_list (st, o.id, w1.id, &v, &n, err), ENOENT);
  CHECK_ERR (sbx_store_delivery_record (st, d1, 200, NULL, true, 0, err), ENOENT);
}

/* ------------------------------------------------------------- reopening */

static void
test_reopen (void)
{
  sbx_store_close (st);
  st = open_store ();

  struct sbx_org o;
  CHECK_OK (sbx_store_key_lookup (st, key_live, &o, err));
  CHECK (strcmp (o.id, org_a.id) == 0 && o.max_sandboxes == 5 && o.max_timeout_s == 600
         && o.max_upload_bytes == 1234);
  CHECK_ERR (sbx_store_key_lookup (st, key_by_id, &o, err), EKEYREVOKED);
  CHECK_ERR (sbx_store_key_lookup (st, key_e2b, &o, err), EKEYREVOKED);
  int n = 0;
  CHECK_OK (sbx_store_key_count (st, &n, err));
  CHECK (n == 4);
  CHECK_OK (sbx_store_org_get (st, "startup", &o, err));
  CHECK (strcmp (o.plan, "scale") == 0 && o.max_sandboxes == 2 && o.max_timeout_s == 7200);
  struct sbx_run_rec *runs = NULL;
  size_t nruns = 0;
  CHECK_OK (sbx_store_run_list_unfinished (st, &runs, &nruns, err));
  CHECK (nruns == 1 && strcmp (runs[0].id, run_left_running) == 0);
  sbx_run_recs_free (runs, nruns);
  CHECK_OK (sbx_store_run_list (st, "org_r", NULL, 0, 0, &runs, &nruns, err));
  CHECK (nruns == 5);
  sbx_run_recs_free (runs, nruns);

  struct sbx_sandbox_rec g;
  CHECK_OK (sbx_store_sandbox_get (st, "sb3", &g, err));
  CHECK (strcmp (g.status, "stopped") == 0 && g.started_ms == 2000);
  sbx_sandbox_rec_free (&g);
  uint32_t live = 0;
  CHECK_OK (sbx_store_sandbox_count_live (st, org_a.id, &live, err));
  CHECK (live == 2);

  struct sbx_event *v = NULL;
  size_t nv = 0;
  CHECK_OK (sbx_store_event_list (st, org_a.id, NULL, 0, 0, false, NULL, &v, &nv, err));
  CHECK (nv == 5);
  int64_t last_seq = nv ? v[0].seq : 0;
  sbx_events_free (v, nv);

  struct sbx_org h;
  CHECK_OK (sbx_store_org_ensure (st, "hooks", &h, err));
  struct sbx_webhook w;
  CHECK_OK (sbx_store_webhook_get (st, h.id, wh_keep, &w, err));
  CHECK (w.secret && strcmp (w.secret, "k4") == 0 && w.enabled);
  sbx_webhook_free (&w);

  /* The pending, retried delivery survived with its schedule. */
  struct sbx_delivery d;
  struct sbx_event ev;
  int64_t due = 0;
  CHECK (sbx_store_delivery_next (st, 0, &d, NULL, NULL, &due, NULL) == 0 && due > 0);
  CHECK (sbx_store_delivery_next (st, due, &d, &w, &ev, NULL, NULL) == 1);
  CHECK (d.id == dl_pending_id && d.attempts == 1 && d.last_status == 503 && strcmp (w.id, wh_keep) == 0
         && strcmp (ev.type, "sandbox.lifecycle.updated") == 0);
  sbx_delivery_free (&d);
  sbx_webhook_free (&w);
  sbx_event_free (&ev);

  /* Sequence numbers keep growing. */
  struct sbx_event e;
  CHECK_OK (add_event (org_a.id, "sb1", "updated", 0, NULL, &e));
  CHECK (e.seq > last_seq);

  /* The schema is versioned and indexed. */
  sqlite3 *db = NULL;
  CHECK (sqlite3_open_v2 (db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
  sqlite3_stmt *s = NULL;
  CHECK (sqlite3_prepare_v2 (db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK);
  CHECK (s && sqlite3_step (s) == SQLITE_ROW && sqlite3_column_int (s, 0) == 3);
  sqlite3_finalize (s);
  CHECK (sqlite3_prepare_v2 (db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN"
                                 " ('api_keys_hash', 'sandboxes_org_started', 'events_org_seq',"
                                 " 'events_sandbox_seq', 'deliveries_state_next', 'deliveries_webhook',"
                                 " 'sandboxes_org_agent', 'runs_sandbox_created', 'runs_org_created', 'runs_running')",
                             -1, &s, NULL)
         == SQLITE_OK);
  CHECK (s && sqlite3_step (s) == SQLITE_ROW && sqlite3_column_int (s, 0) == 10);
  sqlite3_finalize (s);
  CHECK (sqlite3_prepare_v2 (db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
  CHECK (s && sqlite3_step (s) == SQLITE_ROW && strcmp ((const char *) sqlite3_column_text (s, 0), "wal") == 0);
  sqlite3_finalize (s);
  sqlite3_close (db);
}

/* A second process (here: connection), as `sbxd keys` would be. */
static void
test_second_connection (void)
{
  struct sbx_store *other = open_store ();
  char key[64];
  struct sbx_key_info ki;
  struct sbx_org o;
  CHECK_OK (sbx_store_key_create (other, "acme", "sk-sb-", key, sizeof key, &ki, err));
  CHECK_OK (sbx_store_key_lookup (st, key, &o, err));
  CHECK (strcmp (o.id, org_a.id) == 0);
  CHECK_OK (sbx_store_key_revoke (st, ki.id, err));
  CHECK_ERR (sbx_store_key_lookup (other, key, &o, err), EKEYREVOKED);
  sbx_store_close (other);
}

static void
test_newer_schema (void)
{
  char path[PATH_MAX + 16];
  snprintf (path, sizeof path, "%s/newer.db", dir);
  sqlite3 *db = NULL;
  CHECK (sqlite3_open (path, &db) == SQLITE_OK
         && sqlite3_exec (db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close (db);
  struct sbx_store *s = NULL;
  CHECK_ERR (sbx_store_open (path, &s, err), EPROTO);
  CHECK (s == NULL);
}

/* A file written by the first sbxd (schema version 1) opens, keeps its
   rows and gains the new columns with their defaults. */
static const char v1_schema[]
    = "CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, max_sandboxes INTEGER NOT NULL,"
      " max_timeout_s INTEGER NOT NULL, max_upload_bytes INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
      "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, template_id TEXT NOT NULL,"
      " status TEXT NOT NULL, metadata TEXT, started_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,"
      " stopped_ms INTEGER NOT NULL, stop_reason TEXT NOT NULL, cpu_count INTEGER NOT NULL,"
      " memory_mb INTEGER NOT NULL, disk_mb INTEGER NOT NULL);"
      "INSERT INTO orgs VALUES ('org_old', 'old', 4, 900, 1000, 1);"
      "INSERT INTO sandboxes VALUES ('sb_old', 'org_old', 'base', 'running', NULL, 5, 6, 0, '', 1, 256, 512);"
      "PRAGMA user_version = 1;";

static void
test_migration (void)
{
  char path[PATH_MAX + 16];
  snprintf (path, sizeof path, "%s/v1.db", dir);
  sqlite3 *db = NULL;
  CHECK (sqlite3_open (path, &db) == SQLITE_OK && sqlite3_exec (db, v1_schema, NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close (db);

  for (int round = 0; round < 2; round++)   /* the second open finds nothing to migrate */
    {
      struct sbx_store *s = NULL;
      CHECK_OK (sbx_store_open (path, &s, err));
      if (s == NULL)
        return;
      struct sbx_org o;
      CHECK_OK (sbx_store_org_get (s, "old", &o, err));
      /* the first round sets 7 monthly hours, which the second finds */
      CHECK (strcmp (o.id, "org_old") == 0 && strcmp (o.plan, "default") == 0
             && o.monthly_ms == (round ? 7 * SBX_MS_PER_HOUR : 0) && o.max_sandboxes == 4
             && o.max_timeout_s == 900);
      o.monthly_ms = 7 * SBX_MS_PER_HOUR;
      if (round == 0)
        CHECK_OK (sbx_store_org_update (s, &o, err));
      struct sbx_sandbox_rec r;
      CHECK_OK (sbx_store_sandbox_get (s, "sb_old", &r, err));
      CHECK (strcmp (r.status, "running") == 0 && r.memory_mb == 256 && r.agent_id[0] == '\0' && r.mode[0] == '\0');
      sbx_sandbox_rec_free (&r);
      struct sbx_sandbox_rec *v = NULL;
      size_t n = 0;
      CHECK_OK (sbx_store_sandbox_list_by_agent (s, "org_old", "", NULL, &v, &n, err));
      CHECK (n == 1);
      sbx_sandbox_recs_free (v, n);
      if (round == 0)
        {
          struct sbx_run_rec run = new_run ("org_old", "sb_old", "1");
          CHECK_OK (sbx_store_run_create (s, &run, err));
        }
      struct sbx_run_rec *runs = NULL;
      CHECK_OK (sbx_store_run_list (s, "org_old", "sb_old", 0, 0, &runs, &n, err));
      CHECK (n == 1);
      sbx_run_recs_free (runs, n);
      sbx_store_close (s);
    }
  CHECK (sqlite3_open (path, &db) == SQLITE_OK);
  sqlite3_stmt *s = NULL;
  CHECK (sqlite3_prepare_v2 (db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK);
  CHECK (s && sqlite3_step (s) == SQLITE_ROW && sqlite3_column_int (s, 0) == 3);
  sqlite3_finalize (s);
  sqlite3_close (db);
}

/* A file of schema version 2: the monthly limit in whole hours becomes
   ms, and the metering ledger starts from the records (running ones stay
   open, paused ones are closed at the migration, stopped ones at their
   stop time). */
static const char v2_schema[]
    = "CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, max_sandboxes INTEGER NOT NULL,"
      " max_timeout_s INTEGER NOT NULL, max_upload_bytes INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
      " plan TEXT NOT NULL DEFAULT 'default', monthly_hours INTEGER NOT NULL DEFAULT 0);"
      "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, template_id TEXT NOT NULL,"
      " status TEXT NOT NULL, metadata TEXT, started_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,"
      " stopped_ms INTEGER NOT NULL, stop_reason TEXT NOT NULL, cpu_count INTEGER NOT NULL,"
      " memory_mb INTEGER NOT NULL, disk_mb INTEGER NOT NULL, agent_id TEXT NOT NULL DEFAULT '',"
      " mode TEXT NOT NULL DEFAULT '');"
      "INSERT INTO orgs VALUES ('org_v2', 'v2', 3, 300, 1000, 1, 'free', 5);"
      "INSERT INTO sandboxes VALUES ('sb_run', 'org_v2', 'base', 'running', NULL, 5, 9000000000000, 0, '', 1, 256,"
      " 512, '', '');"
      "INSERT INTO sandboxes VALUES ('sb_stop', 'org_v2', 'base', 'stopped', NULL, 10, 99, 30, 'request', 1, 256,"
      " 512, '', '');"
      "INSERT INTO sandboxes VALUES ('rsv_x', 'org_v2', 'base', 'creating', NULL, 7, 0, 0, '', 0, 0, 0, '', '');"
      "INSERT INTO sandboxes VALUES ('sb_pause', 'org_v2p', 'base', 'paused', NULL, 100, 9000000000000, 0, '', 1,"
      " 256, 512, '', '');"
      "PRAGMA user_version = 2;";

static void
test_migration_v2 (void)
{
  char path[PATH_MAX + 16];
  snprintf (path, sizeof path, "%s/v2.db", dir);
  sqlite3 *db = NULL;
  CHECK (sqlite3_open (path, &db) == SQLITE_OK && sqlite3_exec (db, v2_schema, NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close (db);
  for (int round = 0; round < 2; round++)   /* the second open migrates nothing again */
    {
      struct sbx_store *s = NULL;
      CHECK_OK (sbx_store_open (path, &s, err));
      if (s == NULL)
        return;
      int64_t now = sbx_wall_ms (), ms = -1, ms2 = -1;
      struct sbx_org o;
      CHECK_OK (sbx_store_org_get (s, "v2", &o, err));
      CHECK (o.monthly_ms == 5 * SBX_MS_PER_HOUR && strcmp (o.plan, "free") == 0);
      /* running 5..50 and stopped 10..30; the placeholder does not count */
      CHECK_OK (sbx_store_sandbox_usage_ms (s, "org_v2", 0, 50, &ms, err));
      CHECK (ms == 45 + 20);
      CHECK_OK (sbx_store_sandbox_usage_ms (s, "org_v2", 0, now + 1000, &ms, err));
      CHECK (ms >= now + 1000 - 5 + 20);
      /* paused: counted until the migration, no longer */
      CHECK_OK (sbx_store_sandbox_usage_ms (s, "org_v2p", 0, now + 1000, &ms, err));
      CHECK_OK (sbx_store_sandbox_usage_ms (s, "org_v2p", 0, now + 900000, &ms2, err));
      CHECK (ms > 0 && ms == ms2 && ms <= now - 100);
      sbx_store_close (s);
    }
}

/* ----------------------------------------------------------- concurrency */

#define THREADS 4
#define PER_THREAD 200

static volatile int adders_done;
static char conc_org[SBX_STORE_ID_MAX];

static void *
adder (void *arg)
{
  long t = (long) arg;
  char sandbox[32];
  snprintf (sandbox, sizeof sandbox, "conc%ld", t);
  for (int i = 0; i < PER_THREAD; i++)
    if (add_event (conc_org, sandbox, i % 2 ? "paused" : "resumed", 0, NULL, NULL) < 0)
      return (void *) 1;
  return NULL;
}

static void *
lister (void *arg)
{
  (void) arg;
  long bad = 0, rounds = 0;
  while (!__atomic_load_n (&adders_done, __ATOMIC_SEQ_CST) || rounds == 0)
    {
      struct sbx_event *v = NULL;
      size_t n = 0;
      struct sbx_err err = { 0 };
      if (sbx_store_event_list (st, conc_org, NULL, 0, 50, false, NULL, &v, &n, &err) < 0)
        bad++;
      for (size_t i = 1; i < n; i++)
        if (v[i].seq >= v[i - 1].seq)
          bad++;
      sbx_events_free (v, n);
      rounds++;
    }
  return (void *) bad;
}

static void
test_concurrency (void)
{
  struct sbx_org o;
  CHECK_OK (sbx_store_org_ensure (st, "concurrent", &o, err));
  snprintf (conc_org, sizeof conc_org, "%s", o.id);
  /* Deliveries are queued inside the adders' transactions. */
  char *types[] = { "sandbox.lifecycle.paused", NULL };
  struct sbx_webhook w = { .name = "c", .url = "http://x/c", .enabled = true, .events = types, .secret = "c" };
  snprintf (w.org_id, sizeof w.org_id, "%s", o.id);
  CHECK_OK (sbx_store_webhook_create (st, &w, err));

  pthread_t add[THREADS], list;
  if (pthread_create (&list, NULL, lister, NULL) != 0)
    die ("pthread_create");
  for (long t = 0; t < THREADS; t++)
    if (pthread_create (&add[t], NULL, adder, (void *) t) != 0)
      die ("pthread_create");
  int add_failures = 0;
  for (int t = 0; t < THREADS; t++)
    {
      void *r;
      pthread_join (add[t], &r);
      add_failures += r != NULL;
    }
  __atomic_store_n (&adders_done, 1, __ATOMIC_SEQ_CST);
  void *lr;
  pthread_join (list, &lr);
  CHECK (add_failures == 0);
  CHECK (lr == NULL);

  struct sbx_event *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_event_list (st, conc_org, NULL, 0, 0, true, NULL, &v, &n, err));
  CHECK (n == THREADS * PER_THREAD);
  int order = 0;
  for (size_t i = 1; i < n; i++)
    order += v[i].seq <= v[i - 1].seq;
  CHECK (order == 0);
  sbx_events_free (v, n);
  CHECK_OK (sbx_store_event_list (st, conc_org, "conc2", 0, 0, true, NULL, &v, &n, err));
  CHECK (n == PER_THREAD);
  sbx_events_free (v, n);

  struct sbx_delivery *d = NULL;
  CHECK_OK (sbx_store_delivery_list (st, o.id, w.id, &d, &n, err));
  CHECK (n == THREADS * PER_THREAD / 2);
  sbx_deliveries_free (d, n);
}

/* ---- work after the answer (sbx_store_later) ---- */

static int later_runs;
static int later_gate = -1; /* -1: none; else the piece waits (2 s at most) until it is 1 */
static bool later_gate_missed;

/* Record the sandbox named in UD stopped, after the gate if there is one. */
static void
later_stop_one (struct sbx_store *s, void *ud)
{
  char *id = ud;
  for (int i = 0; __atomic_load_n (&later_gate, __ATOMIC_SEQ_CST) == 0; i++)
    {
      if (i == 2000)
        {
          later_gate_missed = true; /* run by the caller, which cannot open it */
          break;
        }
      struct timespec ts = { 0, 1000000L };
      nanosleep (&ts, NULL);
    }
  struct sbx_sandbox_rec r = rec (id, org_a.id, "stopped", 1000, NULL);
  struct sbx_err e = { 0 };
  if (sbx_store_sandbox_put (s, &r, &e) < 0)
    fprintf (stderr, "later: %s\n", e.msg);
  __atomic_add_fetch (&later_runs, 1, __ATOMIC_SEQ_CST);
  free (id);
}

static void
test_later (void)
{
  /* queued: the caller goes on at once (it opens the gate the piece
     waits for), and the next read waits for the piece */
  struct sbx_sandbox_rec r = rec ("later0", org_a.id, "running", 1000, NULL);
  CHECK_OK (sbx_store_sandbox_put (st, &r, err));
  later_gate = 0;
  sbx_store_later (st, later_stop_one, strdup ("later0"));
  __atomic_store_n (&later_gate, 1, __ATOMIC_SEQ_CST);
  struct sbx_sandbox_rec g;
  CHECK_OK (sbx_store_sandbox_get (st, "later0", &g, err));
  CHECK (strcmp (g.status, "stopped") == 0);
  sbx_sandbox_rec_free (&g);
  CHECK (later_runs == 1 && !later_gate_missed);
  later_gate = -1;

  /* more than are queued at most: the rest are done by the caller; each
     exactly once, and every one of them written once the store closes */
  later_runs = 0;
  for (int i = 0; i < 100; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "later%d", i + 1);
      sbx_store_later (st, later_stop_one, strdup (id));
    }
  sbx_store_close (st);
  CHECK (later_runs == 100);
  st = open_store ();
  for (int i = 0; i < 100; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "later%d", i + 1);
      CHECK_OK (sbx_store_sandbox_get (st, id, &g, err));
      CHECK (strcmp (g.status, "stopped") == 0);
      sbx_sandbox_rec_free (&g);
    }
  /* and sbx_store_flush waits for what is queued */
  later_runs = 0;
  sbx_store_later (st, later_stop_one, strdup ("later0"));
  sbx_store_flush (st);
  CHECK (later_runs == 1);
}

/* A daemon killed with SIGKILL right after its writes loses none of
   them.  The store is closed around the fork: an SQLite connection must
   not cross one. */
static void
test_kill9 (void)
{
  int fds[2];
  char key[64] = "";
  sbx_store_close (st);
  st = NULL;
  if (pipe (fds) < 0)
    die ("pipe");
  pid_t pid = fork ();
  if (pid < 0)
    die ("fork");
  if (pid == 0)
    {
      struct sbx_store *s = open_store ();
      struct sbx_err err = { 0 };
      struct sbx_event ev;
      memset (&ev, 0, sizeof ev);
      snprintf (ev.org_id, sizeof ev.org_id, "org_crash");
      snprintf (ev.type, sizeof ev.type, "sandbox.lifecycle.killed");
      if (sbx_store_key_create (s, "crash", "sk-sb-", key, sizeof key, NULL, &err) < 0
          || sbx_store_event_add (s, &ev, &err) < 0)
        _exit (1);
      if (write (fds[1], key, sizeof key) != (ssize_t) sizeof key)
        _exit (1);
      raise (SIGKILL);
      _exit (1);
    }
  close (fds[1]);
  ssize_t r = read (fds[0], key, sizeof key);
  close (fds[0]);
  int status = 0;
  waitpid (pid, &status, 0);
  CHECK (r == (ssize_t) sizeof key && WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);

  st = open_store ();
  struct sbx_org o;
  CHECK_OK (sbx_store_key_lookup (st, key, &o, err));
  CHECK (strcmp (o.name, "crash") == 0);
  struct sbx_event *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_event_list (st, "org_crash", NULL, 0, 0, false, NULL, &v, &n, err));
  CHECK (n == 1);
  sbx_events_free (v, n);
}

/* Checkpoints and artifact sets: recorded whole with their entries, the
   organisation's quota checked in the same transaction, deleted with
   them; what a sandbox keeps. */
static void
test_saved (void)
{
  struct sbx_saved c = { .id = "ckpt_one", .org_id = "org_s", .sandbox_id = "sbx_a", .kind = "checkpoint",
                         .created_ms = 5, .size_bytes = 700, .files = 2 };
  struct sbx_saved_file files[2] = { { .blob = 0, .path = "d", .type = 2, .mode = 0755, .uid = 1000, .gid = 1000 },
                                     { .blob = 1, .path = "d/f", .type = 1, .size = 700, .mode = 04750, .gid = 5 } };
  CHECK_OK (sbx_store_saved_add (st, &c, files, 2, 1000, err));
  /* 700 + 400 passes 1000: nothing of it is recorded */
  struct sbx_saved c2 = c;
  snprintf (c2.id, sizeof c2.id, "ckpt_two");
  c2.size_bytes = 400;
  struct sbx_err e2 = { 0 };
  CHECK (sbx_store_saved_add (st, &c2, files, 2, 1000, &e2) < 0 && e2.code == EDQUOT);
  CHECK (sbx_store_saved_get (st, "ckpt_two", &c2, &e2) < 0 && e2.code == ENOENT);
  /* another organisation has its own quota */
  snprintf (c2.org_id, sizeof c2.org_id, "org_t");
  CHECK_OK (sbx_store_saved_add (st, &c2, files, 1, 1000, err));
  uint64_t used = 0;
  CHECK_OK (sbx_store_saved_used (st, "org_s", &used, err));
  CHECK (used == 700);
  struct sbx_saved *v = NULL;
  size_t n = 0;
  CHECK_OK (sbx_store_saved_list (st, "org_s", "checkpoint", NULL, &v, &n, err));
  CHECK (n == 1 && strcmp (v[0].id, "ckpt_one") == 0 && v[0].files == 2 && v[0].size_bytes == 700);
  free (v);
  struct sbx_saved_file *fv = NULL;
  CHECK_OK (sbx_store_saved_files (st, "ckpt_one", &fv, &n, err));
  CHECK (n == 2 && strcmp (fv[0].path, "d") == 0 && strcmp (fv[1].path, "d/f") == 0 && fv[1].blob == 1
         && fv[1].mode == 04750 && fv[1].gid == 5 && fv[0].uid == 1000);
  sbx_saved_files_free (fv, n);
  struct sbx_saved_file f;
  CHECK_OK (sbx_store_saved_file (st, "ckpt_one", "d/f", &f, err));
  CHECK (f.size == 700 && f.link == NULL);
  free (f.path);
  CHECK (sbx_store_saved_file (st, "ckpt_one", "d/../d/f", &f, &e2) < 0 && e2.code == ENOENT);
  /* only its organisation deletes it */
  CHECK (sbx_store_saved_delete (st, "org_t", "ckpt_one", &e2) < 0 && e2.code == ENOENT);
  CHECK_OK (sbx_store_saved_delete (st, "org_s", "ckpt_one", err));
  CHECK_OK (sbx_store_saved_files (st, "ckpt_one", &fv, &n, err));
  CHECK (n == 0);
  free (fv);
  CHECK_OK (sbx_store_saved_used (st, "org_s", &used, err));
  CHECK (used == 0);

  struct sbx_storage sto = { true, false, "my-project/" }, got;
  CHECK (sbx_store_storage_get (st, "sbx_a", &got, &e2) < 0 && e2.code == ENOENT);
  CHECK_OK (sbx_store_storage_put (st, "sbx_a", &sto, err));
  CHECK_OK (sbx_store_storage_get (st, "sbx_a", &got, err));
  CHECK (got.keep_workspace && !got.keep_artifacts && strcmp (got.prefix, "my-project/") == 0);
}

/* ------------------------------------------------- agents and sessions */

/* store_agents.c: agents per organisation, sessions whose end sticks,
   events in order with their bound, all kept across a reopen. */
static void
test_agents (void)
{
  struct sbx_agent_doc a = { .created_ms = 1000, .json = (char *) "{\"name\":\"one\"}" }, b = a, g;
  CHECK_OK (sbx_store_agent_put (st, "org_x", &a, err));
  CHECK (good_id (a.id, "agent_"));
  b.created_ms = 2000;
  CHECK_OK (sbx_store_agent_put (st, "org_x", &b, err));
  CHECK_OK (sbx_store_agent_get (st, "org_x", a.id, &g, err));
  CHECK (strcmp (g.json, "{\"name\":\"one\"}") == 0 && g.created_ms == 1000);
  free (g.json);
  struct sbx_err e = { 0 };
  CHECK (sbx_store_agent_get (st, "org_y", a.id, &g, &e) < 0 && sbx_err_kind (&e) == SBX_E_NOT_FOUND);
  struct sbx_agent_doc *v;
  size_t n;
  CHECK_OK (sbx_store_agent_list (st, "org_x", &v, &n, err));
  CHECK (n == 2 && strcmp (v[0].id, b.id) == 0 && strcmp (v[1].id, a.id) == 0);
  sbx_agent_docs_free (v, n);
  CHECK (sbx_store_agent_delete (st, "org_y", b.id, &e) < 0 && sbx_err_kind (&e) == SBX_E_NOT_FOUND);
  CHECK_OK (sbx_store_agent_delete (st, "org_x", b.id, err));

  struct sbx_session_rec s = { .timeout_s = 300, .created_ms = 5, .agent_json = (char *) "{}" }, r;
  CHECK_OK (sbx_store_session_new_id (s.id, sizeof s.id, err));
  CHECK (good_id (s.id, "sess_"));
  snprintf (s.org_id, sizeof s.org_id, "org_x");
  snprintf (s.agent_id, sizeof s.agent_id, "%s", a.id);
  snprintf (s.sandbox_id, sizeof s.sandbox_id, "sbx0123");
  snprintf (s.template_id, sizeof s.template_id, "base");
  snprintf (s.status, sizeof s.status, "running");
  CHECK_OK (sbx_store_session_put (st, &s, err));
  CHECK_OK (sbx_store_session_usage (st, s.id, 10, 2, 1, err));
  CHECK_OK (sbx_store_session_usage (st, s.id, 5, 1, 1, err));
  struct sbx_session_rec *sv;
  CHECK_OK (sbx_store_session_list (st, NULL, NULL, "running", &sv, &n, err));
  CHECK (n == 1 && strcmp (sv[0].id, s.id) == 0);
  sbx_session_recs_free (sv, n);
  CHECK_OK (sbx_store_session_status (st, s.id, "ended", "deleted", 77, err));
  CHECK_OK (sbx_store_session_status (st, s.id, "idle", NULL, 0, err)); /* an ended session stays ended */
  CHECK (sbx_store_session_get (st, "org_y", s.id, &r, &e) < 0 && sbx_err_kind (&e) == SBX_E_NOT_FOUND);

  struct sbx_session_event ev;
  CHECK_OK (sbx_store_session_event_add (st, s.id, "message", "{\"content\":\"a\"}", &ev, err));
  int64_t first = ev.seq;
  CHECK (good_id (ev.id, "sevt_"));
  CHECK_OK (sbx_store_session_event_add (st, s.id, "done", "{}", &ev, err));
  CHECK (ev.seq > first);
  CHECK_OK (sbx_store_session_event_add (st, "sess_other", "message", "{}", &ev, err));

  sbx_store_close (st);
  st = open_store ();
  CHECK_OK (sbx_store_session_get (st, "org_x", s.id, &r, err));
  CHECK (strcmp (r.status, "ended") == 0 && strcmp (r.end_reason, "deleted") == 0 && r.ended_ms == 77);
  CHECK (r.input_tokens == 15 && r.output_tokens == 3 && r.model_turns == 2 && strcmp (r.agent_json, "{}") == 0);
  sbx_session_rec_free (&r);
  struct sbx_session_event *evs;
  CHECK_OK (sbx_store_session_events (st, s.id, 0, 100, &evs, &n, err));
  CHECK (n == 2 && evs[0].seq == first && strcmp (evs[0].type, "message") == 0
         && strcmp (evs[0].json, "{\"content\":\"a\"}") == 0 && strcmp (evs[1].type, "done") == 0);
  sbx_session_events_free (evs, n);
  CHECK_OK (sbx_store_session_events (st, s.id, first, 100, &evs, &n, err));
  CHECK (n == 1 && strcmp (evs[0].type, "done") == 0);
  sbx_session_events_free (evs, n);
  int64_t last = 0;
  CHECK_OK (sbx_store_session_last_seq (st, s.id, &last, err));
  CHECK (last > first);
  CHECK_OK (sbx_store_session_last_seq (st, "sess_none", &last, err));
  CHECK (last == 0);
}

int
main (void)
{
  snprintf (dir, sizeof dir, "/tmp/sbx-store-test-XXXXXX");
  if (mkdtemp (dir) == NULL)
    die ("mkdtemp");
  snprintf (db_path, sizeof db_path, "%s/sbxd.db", dir);
  st = open_store ();

  test_orgs ();
  test_keys ();
  test_plans ();
  check_no_plain_keys ("open");
  test_sandboxes ();
  test_sandbox_agents ();
  test_sandbox_reserve_id ();
  test_sandbox_reserve_held ();
  test_wal_checkpoints ();
  test_usage ();
  test_runs ();
  test_events ();
  test_webhooks ();
  test_deliveries ();
  test_saved ();
  test_agents ();
  test_reopen ();
  test_second_connection ();
  test_newer_schema ();
  test_migration ();
  test_migration_v2 ();
  test_concurrency ();
  test_later ();
  test_kill9 ();
  check_no_plain_keys ("end");
  sbx_store_close (st);
  check_no_plain_keys ("closed");

  struct sbx_err err = { 0 };
  if (sbx_rm_rf (dir, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
