/*
 * volumes.c - E2B's volumes: persistent file systems of an organisation
 * that its sandboxes mount (service.h explains what they are).
 *
 * A volume is a sparse ext4 image made by the engine
 * (sbx_disk_volume_format) in STATE/captures/ID/volume.img and a row of
 * the captures table (kind "volume", its name as prefix, its full size
 * as size_bytes), so it shares the storage quota of snapshots and
 * checkpoints, their all-or-nothing making (made in .tmp-ID, renamed when
 * whole, recorded with the quota checked in the same transaction) and
 * their sweep at start-up.  The size of the file system is the bound the
 * kernel enforces on what sandboxes write into it (ENOSPC inside).
 *
 * Mounts: a create names volumes (spec->volumes); the sandbox gets each
 * at its path, idmapped (the engine), and a row of volume_mounts says
 * so.  A volume that a running or paused sandbox mounts cannot be
 * deleted.  One lock orders the two: a create holds it shared from the
 * look-up of its volumes until its mounts are recorded, a delete
 * exclusively, so a delete never slips between them.  The lock is the
 * process's: one service runs in a daemon.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../core/disk.h"
#include "checkpoints.h"
#include "service.h"

#define KIND "volume"
#define ID_PREFIX "vol_"
#define IMAGE "volume.img"

static pthread_rwlock_t volumes_lock = PTHREAD_RWLOCK_INITIALIZER;

static bool
valid_name (const char *name)
{
  size_t n = strlen (name);
  if (n == 0 || n > SBX_VOLUME_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    {
      char c = name[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        return false;
    }
  return true;
}

static struct sbx_saves *
saves (struct sbx_service *svc, struct sbx_err *err)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  if (sv == NULL)
    sbx_failk (err, SBX_E_UNAVAILABLE, "this server keeps no volumes");
  return sv;
}

static int
image_path (struct sbx_saves *sv, const char *id, char out[PATH_MAX], struct sbx_err *err)
{
  if (sbx_path (out, PATH_MAX, "%s/%s/" IMAGE, sbx_saves_dir (sv), id) < 0)
    return sbx_fail (err, ENAMETOOLONG, "volume path");
  return 0;
}

/* ORG's volume named NAME into *OUT: 1, 0 when none. */
static int
by_name (struct sbx_service *svc, const struct sbx_org *org, const char *name, struct sbx_saved *out, size_t *count,
         struct sbx_err *err)
{
  struct sbx_saved *v;
  size_t n;
  if (sbx_store_saved_list (sbx_service_store (svc), org->id, KIND, NULL, &v, &n, err) < 0)
    return -1;
  int found = 0;
  for (size_t i = 0; i < n && !found; i++)
    if (strcmp (v[i].prefix, name) == 0)
      {
        *out = v[i];
        found = 1;
      }
  free (v);
  if (count)
    *count = n;
  return found;
}

int
sbx_service_volume_create (struct sbx_service *svc, const struct sbx_org *org, const char *name,
                           struct sbx_saved *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  if (name == NULL || !valid_name (name))
    return sbx_failk (err, SBX_E_INVALID, "invalid volume name: 1 to %u of A-Z a-z 0-9 _ -", SBX_VOLUME_NAME_MAX);
  /* one create at a time: names are unique in an organisation */
  pthread_rwlock_wrlock (&volumes_lock);
  struct sbx_saved old;
  size_t count = 0;
  int r = by_name (svc, org, name, &old, &count, err);
  if (r > 0)
    r = sbx_failk (err, SBX_E_CONFLICT, "volume '%s' already exists", name);
  else if (r == 0 && count >= SBX_VOLUMES_MAX)
    r = sbx_failk (err, SBX_E_LIMIT, "an organisation keeps at most %u volumes: delete one first", SBX_VOLUMES_MAX);
  uint64_t size = (uint64_t) SBX_VOLUME_MB << 20, used = 0, quota = sbx_saves_quota (sv);
  if (r == 0 && sbx_store_saved_used (sbx_service_store (svc), org->id, &used, err) < 0)
    r = -1;
  if (r == 0 && quota && used + size > quota)
    r = sbx_failk (err, SBX_E_LIMIT,
                   "the organisation's storage is full: a volume takes %u MB, %llu of %llu MB are used",
                   SBX_VOLUME_MB, (unsigned long long) (used >> 20), (unsigned long long) (quota >> 20));
  struct statvfs vfs;
  if (r == 0 && statvfs (sbx_saves_dir (sv), &vfs) == 0 && (uint64_t) vfs.f_bavail * vfs.f_frsize < size)
    r = sbx_failk (err, SBX_E_NO_SPACE, "the server has no room for a volume of %u MB", SBX_VOLUME_MB);
  struct sbx_saved c;
  memset (&c, 0, sizeof c);
  char tmp[PATH_MAX], final[PATH_MAX], image[PATH_MAX];
  if (r == 0 && sbx_saved_new_id (ID_PREFIX, c.id, err) < 0)
    r = -1;
  if (r == 0
      && (sbx_path (tmp, sizeof tmp, "%s/.tmp-%s", sbx_saves_dir (sv), c.id) < 0
          || sbx_path (final, sizeof final, "%s/%s", sbx_saves_dir (sv), c.id) < 0
          || sbx_path (image, sizeof image, "%s/" IMAGE, tmp) < 0))
    r = sbx_fail (err, ENAMETOOLONG, "volume directory");
  if (r < 0)
    {
      pthread_rwlock_unlock (&volumes_lock);
      return -1;
    }
  snprintf (c.org_id, sizeof c.org_id, "%s", org->id);
  snprintf (c.kind, sizeof c.kind, KIND);
  snprintf (c.prefix, sizeof c.prefix, "%s", name);
  c.size_bytes = size;
  c.created_ms = sbx_wall_ms ();
  struct sbx_err e2;
  if (sbx_mkdir_p (tmp, 0700, err) < 0 || sbx_disk_volume_format (image, SBX_VOLUME_MB, err) < 0
      || (rename (tmp, final) < 0 && sbx_fail (err, errno, "keep volume %s", c.id) < 0))
    {
      sbx_rm_rf (tmp, &e2);
      pthread_rwlock_unlock (&volumes_lock);
      return -1;
    }
  if (sbx_store_saved_add (sbx_service_store (svc), &c, NULL, 0, quota, err) < 0)
    {
      if (err->code == EDQUOT)
        err->kind = SBX_E_LIMIT;
      sbx_rm_rf (final, &e2);
      pthread_rwlock_unlock (&volumes_lock);
      return -1;
    }
  pthread_rwlock_unlock (&volumes_lock);
  sbx_log_fields (SBX_LOG_INFO, "volume created", "volume", c.id, "org", org->id, NULL);
  *out = c;
  return 0;
}

static int
by_id (const void *a, const void *b)
{
  return strcmp (((const struct sbx_saved *) a)->prefix, ((const struct sbx_saved *) b)->prefix);
}

int
sbx_service_volume_list (struct sbx_service *svc, const struct sbx_org *org, struct sbx_saved **v, size_t *n,
                         struct sbx_err *err)
{
  if (sbx_store_saved_list (sbx_service_store (svc), org->id, KIND, NULL, v, n, err) < 0)
    return -1;
  qsort (*v, *n, sizeof **v, by_id);
  return 0;
}

int
sbx_service_volume_get (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_saved *out,
                        struct sbx_err *err)
{
  struct sbx_err e2;
  if (id == NULL || !sbx_saved_id_valid (id, ID_PREFIX)
      || sbx_store_saved_get (sbx_service_store (svc), id, out, &e2) < 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "volume not found");
  if (strcmp (out->kind, KIND) != 0 || (org && strcmp (out->org_id, org->id) != 0))
    return sbx_failk (err, SBX_E_NOT_FOUND, "volume not found");
  return 0;
}

int
sbx_service_volume_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_err *err)
{
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  pthread_rwlock_wrlock (&volumes_lock);
  struct sbx_saved c;
  char busy[SBX_STORE_ID_MAX], dir[PATH_MAX];
  struct sbx_store *store = sbx_service_store (svc);
  int r = sbx_service_volume_get (svc, org, id, &c, err);
  if (r == 0 && sbx_store_volume_busy (store, c.id, busy, err) < 0)
    r = -1;
  if (r == 0 && busy[0])
    r = sbx_failk (err, SBX_E_CONFLICT, "volume '%s' is mounted by sandbox %s: kill it first", c.prefix, busy);
  if (r == 0 && sbx_path (dir, sizeof dir, "%s/%s", sbx_saves_dir (sv), c.id) < 0)
    r = sbx_fail (err, ENAMETOOLONG, "volume directory");
  /* the record first: a crash in between leaves a directory that the
     sweep at start-up removes, never a record without its files */
  if (r == 0 && (sbx_store_saved_delete (store, org->id, c.id, err) < 0
                 || sbx_store_volume_mounts_forget (store, c.id, err) < 0))
    r = -1;
  pthread_rwlock_unlock (&volumes_lock);
  if (r < 0)
    return -1;
  struct sbx_err e2;
  if (sbx_rm_rf (dir, &e2) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot remove a volume's files", "volume", c.id, "error", e2.msg, NULL);
  sbx_log_fields (SBX_LOG_INFO, "volume deleted", "volume", c.id, "org", org->id, NULL);
  return 0;
}

int
sbx_service_volume_root (struct sbx_service *svc, const char *id, struct sbx_err *err)
{
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  char image[PATH_MAX];
  if (image_path (sv, id, image, err) < 0)
    return -1;
  /* shared: a delete does not remove the image under the mount */
  pthread_rwlock_rdlock (&volumes_lock);
  struct sbx_saved c;
  int fd = sbx_service_volume_get (svc, NULL, id, &c, err);
  if (fd == 0)
    fd = sbx_disk_volume_mount (image, err);
  pthread_rwlock_unlock (&volumes_lock);
  return fd;
}

int
sbx_service_volume_mounts (struct sbx_service *svc, const char *sandbox_id, struct sbx_volume_mount_rec **v,
                           size_t *n, struct sbx_err *err)
{
  return sbx_store_volume_mounts (sbx_service_store (svc), sandbox_id, v, n, err);
}

/* ---- for creates (checkpoints.h) ---- */

struct sbx_volume_set {
  size_t n;
  bool locked;
  char ids[SBX_FS_MOUNTS_MAX][SBX_STORE_ID_MAX];
  char images[SBX_FS_MOUNTS_MAX][PATH_MAX];
  const char *image_p[SBX_FS_MOUNTS_MAX];
  const char *path_p[SBX_FS_MOUNTS_MAX];
};

int
sbx_volumes_take (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                  struct sbx_volume_set **out, struct sbx_err *err)
{
  *out = NULL;
  if (spec->n_volumes == 0)
    return 0;
  if (spec->n_volumes > SBX_FS_MOUNTS_MAX)
    return sbx_failk (err, SBX_E_INVALID, "at most %d volume mounts", SBX_FS_MOUNTS_MAX);
  struct sbx_saves *sv = saves (svc, err);
  if (sv == NULL)
    return -1;
  struct sbx_volume_set *vs = calloc (1, sizeof *vs);
  if (vs == NULL)
    return sbx_fail (err, ENOMEM, "volumes");
  pthread_rwlock_rdlock (&volumes_lock);
  vs->locked = true;
  for (size_t i = 0; i < spec->n_volumes; i++)
    {
      const struct sbx_volume_use *u = &spec->volumes[i];
      struct sbx_saved c;
      int r = u->name && valid_name (u->name) ? by_name (svc, org, u->name, &c, NULL, err) : 0;
      if (r < 0)
        goto fail;
      if (r == 0)
        {
          sbx_failk (err, SBX_E_INVALID, "volume '%s' not found", u->name ? u->name : "");
          goto fail;
        }
      snprintf (vs->ids[i], sizeof vs->ids[i], "%s", c.id);
      if (image_path (sv, c.id, vs->images[i], err) < 0)
        goto fail;
      vs->image_p[i] = vs->images[i];
      vs->path_p[i] = u->path;
      vs->n++;
    }
  /* the engine checks the paths again; here for a clear message early */
  if (sbx_fs_mount_paths_check (vs->path_p, vs->n, err) < 0)
    {
      err->kind = SBX_E_INVALID;
      goto fail;
    }
  *out = vs;
  return 0;
fail:
  sbx_volumes_give (vs);
  return -1;
}

void
sbx_volumes_opts (const struct sbx_volume_set *vs, struct sbx_create_opts *o)
{
  if (vs == NULL)
    return;
  o->volume_images = vs->image_p;
  o->volume_paths = vs->path_p;
  o->n_volumes = vs->n;
}

int
sbx_volumes_record (struct sbx_service *svc, const struct sbx_volume_set *vs, const char *sandbox_id,
                    struct sbx_err *err)
{
  for (size_t i = 0; vs && i < vs->n; i++)
    if (sbx_store_volume_mount_put (sbx_service_store (svc), sandbox_id, vs->ids[i], vs->path_p[i], err) < 0)
      return -1;
  return 0;
}

void
sbx_volumes_give (struct sbx_volume_set *vs)
{
  if (vs == NULL)
    return;
  if (vs->locked)
    pthread_rwlock_unlock (&volumes_lock);
  free (vs);
}
