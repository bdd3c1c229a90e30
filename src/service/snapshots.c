/*
 * snapshots.c - E2B's snapshots and forks of a sandbox's files.
 *
 * A snapshot is what the engine's sbx_snapshot_take leaves in a
 * directory: disk images of the sandbox's writable layer and of the
 * layers it started from, and a manifest (sandbox.h explains them).  Here
 * it becomes a set of the organisation: a row of the captures table
 * (kind "snapshot", its name in the prefix column, the bytes of its own
 * layer as its size) and the directory STATE/captures/ID.  So it shares
 * the checkpoints' quota, their all-or-nothing writing (made as
 * .tmp-ID, renamed when whole, then recorded with the quota checked in
 * the same transaction) and their sweep at start-up (checkpoints.c).
 *
 * Nothing here reads a sandbox's files: the engine copies its disk image
 * block by block while it is frozen, so no name the sandbox made is ever
 * resolved on the host.
 *
 * A fork is a snapshot that is never recorded (STATE/captures/.tmp-fork-
 * ID), a create from it for each copy, and its removal: the new
 * sandboxes hold hard links to its layers, so their blocks stay as long
 * as one of them runs.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "checkpoints.h"
#include "service.h"

#define KIND "snapshot"
#define ID_PREFIX "snap_"

static bool
valid_name (const char *name)
{
  size_t n = strlen (name);
  if (n == 0 || n > SBX_SNAPSHOT_NAME_MAX || strncmp (name, ID_PREFIX, strlen (ID_PREFIX)) == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    {
      char c = name[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_'
            || c == '-'))
        return false;
    }
  return strcmp (name, ".") != 0 && strcmp (name, "..") != 0;
}

static struct sbx_saves *
saves (struct sbx_service *svc, struct sbx_err *err)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  if (sv == NULL)
    sbx_failk (err, SBX_E_UNAVAILABLE, "this server keeps no snapshots");
  return sv;
}

/* ORG's snapshot named or numbered ID_OR_NAME, or SBX_E_NOT_FOUND. */
static int
own_snapshot (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name, struct sbx_saved *out,
              struct sbx_err *err)
{
  struct sbx_store *store = sbx_service_store (svc);
  if (id_or_name && sbx_saved_id_valid (id_or_name, ID_PREFIX))
    {
      struct sbx_err e2;
      if (sbx_store_saved_get (store, id_or_name, out, &e2) < 0)
        {
          if (e2.code == ENOENT)
            return sbx_failk (err, SBX_E_NOT_FOUND, "snapshot not found");
          *err = e2;
          return -1;
        }
      if (strcmp (out->org_id, org->id) == 0 && strcmp (out->kind, KIND) == 0)
        return 0;
      return sbx_failk (err, SBX_E_NOT_FOUND, "snapshot not found");
    }
  if (id_or_name == NULL || !valid_name (id_or_name))
    return sbx_failk (err, SBX_E_NOT_FOUND, "snapshot not found");
  struct sbx_saved *v;
  size_t n;
  if (sbx_store_saved_list (store, org->id, KIND, NULL, &v, &n, err) < 0)
    return -1;
  bool found = false;
  for (size_t i = 0; i < n && !found; i++)
    if (strcmp (v[i].prefix, id_or_name) == 0)
      {
        *out = v[i];
        found = true;
      }
  free (v);
  return found ? 0 : sbx_failk (err, SBX_E_NOT_FOUND, "snapshot not found");
}

int
sbx_service_snapshot_find (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                           struct sbx_saved *out, char dir[PATH_MAX], struct sbx_err *err)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  if (sv == NULL)
    return sbx_failk (err, SBX_E_NOT_FOUND, "snapshot not found");
  if (own_snapshot (svc, org, id_or_name, out, err) < 0)
    return -1;
  if (sbx_path (dir, PATH_MAX, "%s/%s", sbx_saves_dir (sv), out->id) < 0)
    return sbx_fail (err, ENAMETOOLONG, "snapshot directory");
  return 0;
}

int
sbx_service_snapshot_list (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                           const char *name, struct sbx_saved **v, size_t *n, struct sbx_err *err)
{
  if (sbx_store_saved_list (sbx_service_store (svc), org->id, KIND, sandbox_id, v, n, err) < 0)
    return -1;
  if (name == NULL)
    return 0;
  size_t w = 0;
  for (size_t i = 0; i < *n; i++)
    if (strcmp ((*v)[i].prefix, name) == 0 || strcmp ((*v)[i].id, name) == 0)
      (*v)[w++] = (*v)[i];
  *n = w;
  return 0;
}

/* A directory of STATE/captures named PREFIX and a fresh id. */
static int
scratch_dir (struct sbx_saves *sv, const char *prefix, char out[PATH_MAX], struct sbx_err *err)
{
  char id[SBX_STORE_ID_MAX];
  if (sbx_saved_new_id (prefix, id, err) < 0)
    return -1;
  if (sbx_path (out, PATH_MAX, "%s/%s", sbx_saves_dir (sv), id) < 0)
    return sbx_fail (err, ENAMETOOLONG, "snapshot directory");
  return 0;
}

int
sbx_service_snapshot_create (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                             const char *name, struct sbx_saved *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  if (name && !valid_name (name))
    return sbx_failk (err, SBX_E_INVALID,
                      "invalid snapshot name: 1 to %u of A-Z a-z 0-9 . _ -, not starting with \"" ID_PREFIX "\"",
                      SBX_SNAPSHOT_NAME_MAX);
  struct sbx_store *store = sbx_service_store (svc);
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_get (svc, org, sandbox_id, &rec, err) < 0)
    return -1;
  bool live = strcmp (rec.status, "running") == 0 || strcmp (rec.status, "paused") == 0;
  sbx_sandbox_rec_free (&rec);
  if (!live)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");

  /* bounds first: the count, and a quota already full */
  struct sbx_saved *v;
  size_t n;
  if (sbx_store_saved_list (store, org->id, KIND, NULL, &v, &n, err) < 0)
    return -1;
  struct sbx_saved old;
  bool renaming = false;
  for (size_t i = 0; name && i < n && !renaming; i++)
    if (strcmp (v[i].prefix, name) == 0)
      {
        old = v[i];
        renaming = true;
      }
  free (v);
  if (n >= SBX_SNAPSHOTS_MAX && !renaming)
    return sbx_failk (err, SBX_E_LIMIT, "an organisation keeps at most %u snapshots: delete one first",
                      SBX_SNAPSHOTS_MAX);
  uint64_t used;
  if (sbx_store_saved_used (store, org->id, &used, err) < 0)
    return -1;
  uint64_t quota = sbx_saves_quota (sv);
  if (quota && used >= quota)
    return sbx_failk (err, SBX_E_LIMIT, "the organisation's storage is full (%llu MB)",
                      (unsigned long long) (quota >> 20));

  struct sbx_saved c;
  memset (&c, 0, sizeof c);
  if (sbx_saved_new_id (ID_PREFIX, c.id, err) < 0)
    return -1;
  snprintf (c.org_id, sizeof c.org_id, "%s", org->id);
  snprintf (c.sandbox_id, sizeof c.sandbox_id, "%s", sandbox_id);
  snprintf (c.kind, sizeof c.kind, KIND);
  snprintf (c.prefix, sizeof c.prefix, "%s", name ? name : "");
  char tmp[PATH_MAX], final[PATH_MAX];
  if (sbx_path (tmp, sizeof tmp, "%s/.tmp-%s", sbx_saves_dir (sv), c.id) < 0
      || sbx_path (final, sizeof final, "%s/%s", sbx_saves_dir (sv), c.id) < 0)
    return sbx_fail (err, ENAMETOOLONG, "snapshot directory");
  int64_t t0 = sbx_now_ns ();
  if (sbx_snapshot_take (sbx_service_engine (svc), sandbox_id, tmp, &c.size_bytes, err) < 0)
    return -1;
  c.created_ms = sbx_wall_ms ();
  struct sbx_err e2;
  if (rename (tmp, final) < 0)
    {
      sbx_fail (err, errno, "keep snapshot %s", c.id);
      sbx_rm_rf (tmp, &e2);
      return -1;
    }
  /* the name moves: the old snapshot goes (its blocks stay while
     sandboxes made from it run), the new one takes its id */
  if (renaming)
    {
      char olddir[PATH_MAX], aside[PATH_MAX];
      if (sbx_path (olddir, sizeof olddir, "%s/%s", sbx_saves_dir (sv), old.id) < 0
          || scratch_dir (sv, ".tmp-old-", aside, err) < 0)
        {
          sbx_rm_rf (final, &e2);
          return -1;
        }
      if (rename (olddir, aside) < 0 || rename (final, olddir) < 0
          || sbx_store_saved_delete (store, org->id, old.id, &e2) < 0)
        {
          sbx_fail (err, errno, "replace snapshot %s", old.id);
          rename (aside, olddir);
          sbx_rm_rf (final, &e2);
          return -1;
        }
      sbx_rm_rf (aside, &e2);
      snprintf (c.id, sizeof c.id, "%s", old.id);
      snprintf (final, sizeof final, "%s", olddir);
    }
  if (sbx_store_saved_add (store, &c, NULL, 0, quota, err) < 0)
    {
      if (err->code == EDQUOT)
        err->kind = SBX_E_LIMIT;
      sbx_rm_rf (final, &e2);
      return -1;
    }
  char ms[24], mb[24];
  snprintf (ms, sizeof ms, "%lld", (long long) ((sbx_now_ns () - t0) / 1000000));
  snprintf (mb, sizeof mb, "%llu", (unsigned long long) (c.size_bytes >> 20));
  sbx_log_fields (SBX_LOG_INFO, "snapshot", "sandbox", sandbox_id, "snapshot", c.id, "ms", ms, "mb", mb, NULL);
  *out = c;
  return 0;
}

int
sbx_service_snapshot_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                             struct sbx_err *err)
{
  struct sbx_saved c;
  char dir[PATH_MAX];
  if (sbx_service_snapshot_find (svc, org, id_or_name, &c, dir, err) < 0)
    return -1;
  /* the record first: a crash in between leaves a directory that the
     sweep at start-up removes, never a record without its files */
  if (sbx_store_saved_delete (sbx_service_store (svc), org->id, c.id, err) < 0)
    return -1;
  struct sbx_err e2;
  if (sbx_rm_rf (dir, &e2) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot remove a snapshot's files", "snapshot", c.id, "error", e2.msg, NULL);
  return 0;
}

int
sbx_service_fork (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, uint32_t count,
                  uint32_t timeout_s, struct sbx_fork_result *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out * count);
  if (count < 1 || count > SBX_FORK_MAX)
    return sbx_failk (err, SBX_E_INVALID, "count must be 1 to %u", SBX_FORK_MAX);
  if (timeout_s > org->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", org->max_timeout_s);
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_get (svc, org, sandbox_id, &rec, err) < 0)
    return -1;
  struct sbx_info info;
  if (strcmp (rec.status, "running") != 0 && strcmp (rec.status, "paused") != 0)
    {
      sbx_sandbox_rec_free (&rec);
      return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
    }
  if (sbx_get_info (sbx_service_engine (svc), sandbox_id, &info, err) < 0)
    {
      sbx_sandbox_rec_free (&rec);
      return -1;
    }
  char dir[PATH_MAX];
  uint64_t bytes;
  int r = scratch_dir (sv, ".tmp-fork-", dir, err);
  if (r == 0)
    r = sbx_snapshot_take (sbx_service_engine (svc), sandbox_id, dir, &bytes, err);
  if (r < 0)
    {
      sbx_info_free (&info);
      sbx_sandbox_rec_free (&rec);
      return -1;
    }
  struct sbx_sandbox_spec spec = {
    .template_name = info.template_name,
    .timeout_s = timeout_s,
    .metadata_json = rec.metadata_json,
    .limits = { .cpu_millis = info.limits.cpu_millis,
                .memory_mb = info.limits.memory_mb,
                .disk_mb = info.limits.disk_mb },
    .net = info.has_network ? &info.network : NULL,
    .internet_asked = info.internet_asked,
    .on_timeout = info.on_timeout,
    .auto_resume = info.auto_resume,
    .snapshot_dir = dir,
  };
  uint32_t made = 0;
  for (uint32_t i = 0; i < count; i++)
    {
      out[i].ok = sbx_service_sandbox_create (svc, org, &spec, &out[i].rec, &out[i].err) == 0;
      made += out[i].ok;
    }
  struct sbx_err e2;
  sbx_rm_rf (dir, &e2);
  char n[16], ok[16];
  snprintf (n, sizeof n, "%u", count);
  snprintf (ok, sizeof ok, "%u", made);
  sbx_log_fields (SBX_LOG_INFO, "fork", "sandbox", sandbox_id, "asked", n, "made", ok, NULL);
  sbx_info_free (&info);
  sbx_sandbox_rec_free (&rec);
  return 0;
}
