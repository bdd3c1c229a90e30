/*
 * checkpoints.c - seed 004's storage: checkpoints of a sandbox's
 * workspace (/workspace), the artifacts it leaves in /artifacts, and
 * starting a sandbox from a checkpoint.
 *
 * A "saved set" (struct sbx_saved) is either: a checkpoint, asked for
 * (POST /v1/sandboxes/checkpoint) or taken when a sandbox created with
 * ephemeral:false ends; or the artifacts a sandbox had when it ended.
 *
 * How files leave a sandbox.  Only through its agent (sbx_file_list and
 * sbx_file_read), which runs inside the sandbox's own namespaces as its
 * root (an unprivileged id on the host), resolves every path with
 * openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, lists without following
 * symlinks, reads regular files only (a FIFO is never opened, a device
 * never read) and is bounded in time, frames and bytes (core/agent.h).
 * The daemon, root on the host, never walks a sandbox's tree itself.
 * The other way, openat2 with RESOLVE_IN_ROOT and O_NOFOLLOW over the
 * overlay's upper layer, would put the host's root in front of every name
 * the sandbox made (hard links, FIFOs, devices, swapped directories),
 * would need the disk mounted on the host, and would miss files the
 * workspace has from the template (the lower layer).
 *
 * What the daemon writes.  STATE/captures/ID/N, N a number of its own:
 * content only, mode 0600.  Names, types, owners, modes and symlink
 * targets are rows of the store (captures, capture_files); no name from a
 * sandbox ever becomes a path on the host.  A download looks its path up
 * in the store and opens N.
 *
 * All or nothing.  A set is written into STATE/captures/.tmp-ID, renamed
 * to STATE/captures/ID when whole, then recorded (with the quota checked
 * in the same transaction); any failure removes it, and start-up removes
 * directories without a record and records without a directory.
 *
 * Bounds: SBX_SAVE_BYTES_MAX of content and SBX_SAVE_FILES_MAX entries a
 * set, SBX_SAVE_DEPTH_MAX levels, the organisation's quota of all its sets
 * together (sbxd serve --storage-quota-mb), and time: SBX_SAVE_MS for a
 * request, the core's SBX_ENDING_MS for what is kept at the end.  Past a
 * bound a set fails with a message saying which (too large, limit) and
 * nothing of it stays.  FIFOs, sockets and devices are skipped; symlinks
 * are kept as links in checkpoints (never followed), left out of
 * artifacts.
 *
 * Restore writes every entry through the new sandbox's agent as its root,
 * with the owner, group and mode the entry had inside the old one
 * (sbx_file_writer_open_owned, sbx_file_mkdir_owned, sbx_file_symlink),
 * before the create answers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "checkpoints.h"
#include "service.h"

struct sbx_saves {
  char dir[PATH_MAX]; /* STATE/captures */
  uint64_t quota;     /* bytes per organisation; 0: none */
};

void
sbx_saves_free (struct sbx_saves *s)
{
  free (s);
}

const char *
sbx_saves_dir (const struct sbx_saves *s)
{
  return s->dir;
}

uint64_t
sbx_saves_quota (const struct sbx_saves *s)
{
  return s->quota;
}

/* ---- ids and paths ---- */

int
sbx_saved_new_id (const char *prefix, char out[SBX_STORE_ID_MAX], struct sbx_err *err)
{
  unsigned char rnd[10];
  if (sbx_random_bytes (rnd, sizeof rnd) < 0)
    return sbx_fail (err, errno, "getrandom");
  int w = snprintf (out, SBX_STORE_ID_MAX, "%s", prefix);
  for (size_t i = 0; i < sizeof rnd; i++)
    w += snprintf (out + w, SBX_STORE_ID_MAX - (size_t) w, "%02x", rnd[i]);
  return 0;
}

bool
sbx_saved_id_valid (const char *id, const char *prefix)
{
  size_t n = id ? strlen (id) : 0, p = strlen (prefix);
  if (n <= p || n >= SBX_STORE_ID_MAX || strncmp (id, prefix, p) != 0)
    return false;
  for (size_t i = p; i < n; i++)
    if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
      return false;
  return true;
}

/* ---- start-up ---- */

/* Remove what a crash left half made: temporary directories, directories
   without a record, records without a directory. */
static void
sweep (struct sbx_service *svc, struct sbx_saves *sv)
{
  struct sbx_err err;
  DIR *d = opendir (sv->dir);
  if (d)
    {
      struct dirent *de;
      while ((de = readdir (d)) != NULL)
        {
          if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || strcmp (de->d_name, "..") == 0))
            continue;
          struct sbx_saved c;
          if (strncmp (de->d_name, ".tmp-", 5) != 0
              && sbx_store_saved_get (sbx_service_store (svc), de->d_name, &c, &err) == 0)
            continue;
          char path[PATH_MAX];
          if (sbx_path (path, sizeof path, "%s/%s", sv->dir, de->d_name) == 0 && sbx_rm_rf (path, &err) == 0)
            sbx_log_fields (SBX_LOG_INFO, "removed an unfinished checkpoint or artifact set", "name", de->d_name,
                            NULL);
        }
      closedir (d);
    }
  struct sbx_saved *v;
  size_t n;
  if (sbx_store_saved_list (sbx_service_store (svc), NULL, NULL, NULL, &v, &n, &err) < 0)
    return;
  for (size_t i = 0; i < n; i++)
    {
      char path[PATH_MAX];
      struct stat st;
      if (sbx_path (path, sizeof path, "%s/%s", sv->dir, v[i].id) == 0 && stat (path, &st) < 0 && errno == ENOENT)
        {
          sbx_log_fields (SBX_LOG_WARN, "a checkpoint or artifact set lost its content: forgetting it", "id",
                          v[i].id, NULL);
          sbx_store_saved_delete (sbx_service_store (svc), NULL, v[i].id, &err);
        }
    }
  free (v);
}

int
sbx_service_set_storage (struct sbx_service *svc, const char *state_dir, uint64_t quota_bytes, struct sbx_err *err)
{
  struct sbx_saves *sv = calloc (1, sizeof *sv);
  if (sv == NULL)
    return sbx_fail (err, ENOMEM, "storage");
  sv->quota = quota_bytes;
  if (sbx_path (sv->dir, sizeof sv->dir, "%s/captures", state_dir) < 0)
    {
      free (sv);
      return sbx_fail (err, ENAMETOOLONG, "storage directory");
    }
  if (sbx_mkdir_p (sv->dir, 0700, err) < 0)
    {
      free (sv);
      return -1;
    }
  sweep (svc, sv);
  sbx_service_put_saves (svc, sv);
  return 0;
}

/* ---- taking a set ---- */

struct blob_sink {
  int fd;
  uint64_t deadline_ns;
  bool late;
};

static int
blob_write (const void *data, size_t len, void *ud)
{
  struct blob_sink *b = ud;
  if (sbx_now_ns () > b->deadline_ns)
    {
      b->late = true;
      return -1;
    }
  return sbx_write_full (b->fd, data, len) < 0 ? -1 : 0;
}

static int
by_path (const void *a, const void *b)
{
  return strcmp (((const struct sbx_entry *) a)->path, ((const struct sbx_entry *) b)->path);
}

static unsigned
depth_of (const char *rel)
{
  unsigned d = 1;
  for (const char *p = rel; *p; p++)
    d += *p == '/';
  return d;
}

/* ROOT needs NEED bytes (0: more than ROOM) and does not fit in ROOM:
   past the bound of one set (too large), or past what is left of the
   organisation's quota (limit). */
static int
too_large (struct sbx_err *err, const char *root, uint64_t room, uint64_t need)
{
  if (room < SBX_SAVE_BYTES_MAX && need <= SBX_SAVE_BYTES_MAX)
    return sbx_failk (err, SBX_E_LIMIT,
                      "%s does not fit in what is left of the organisation's storage for checkpoints and "
                      "artifacts (%llu MB)",
                      root, (unsigned long long) (room >> 20));
  return sbx_failk (err, SBX_E_TOO_LARGE, "%s is larger than the %llu MB a checkpoint or artifact set may hold", root,
                    (unsigned long long) (SBX_SAVE_BYTES_MAX >> 20));
}

/* Take the set KIND of ROOT in sandbox ID for ORG_ID: 1 when recorded in
   *OUT, 0 when there was nothing to keep and KEEP_EMPTY is false, -1 on
   failure (nothing kept). */
static int
take (struct sbx_service *svc, struct sbx_engine *e, const char *org_id, const char *id, const char *root,
      const char *kind, const char *prefix, bool keep_empty, uint64_t deadline_ns, struct sbx_saved *out,
      struct sbx_err *err)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  struct sbx_store *store = sbx_service_store (svc);
  bool checkpoint = strcmp (kind, "checkpoint") == 0;
  if (sv == NULL)
    return sbx_failk (err, SBX_E_UNAVAILABLE, "this server keeps no checkpoints or artifacts");
  uint64_t used;
  if (sbx_store_saved_used (store, org_id, &used, err) < 0)
    return -1;
  uint64_t room = SBX_SAVE_BYTES_MAX;
  if (sv->quota && sv->quota - (used < sv->quota ? used : sv->quota) < room)
    room = sv->quota - (used < sv->quota ? used : sv->quota);
  if (sv->quota && room == 0)
    return sbx_failk (err, SBX_E_LIMIT, "the organisation's storage for checkpoints and artifacts is full (%llu MB)",
                      (unsigned long long) (sv->quota >> 20));

  struct sbx_entry *ents = NULL;
  size_t n = 0;
  struct sbx_err lerr;
  if (sbx_file_list (e, id, root, "root", SBX_SAVE_DEPTH_MAX + 1, &ents, &n, &lerr) < 0)
    {
      if (sbx_err_kind (&lerr) == SBX_E_NOT_FOUND || lerr.code == ENOTDIR)
        n = 0; /* nothing there */
      else
        {
          *err = lerr;
          if (sbx_err_kind (&lerr) == SBX_E_TOO_LARGE)
            sbx_failk (err, SBX_E_TOO_LARGE, "%s holds more than %u entries", root, SBX_SAVE_FILES_MAX);
          return -1;
        }
    }
  if (n > SBX_SAVE_FILES_MAX)
    {
      sbx_entries_free (ents, n);
      return sbx_failk (err, SBX_E_TOO_LARGE, "%s holds more than %u entries", root, SBX_SAVE_FILES_MAX);
    }
  if (n == 0 && !keep_empty)
    {
      free (ents);
      return 0;
    }
  qsort (ents, n, sizeof *ents, by_path);

  struct sbx_saved c;
  memset (&c, 0, sizeof c);
  if (sbx_saved_new_id (checkpoint ? "ckpt_" : "art_", c.id, err) < 0)
    {
      sbx_entries_free (ents, n);
      return -1;
    }
  snprintf (c.org_id, sizeof c.org_id, "%s", org_id);
  snprintf (c.sandbox_id, sizeof c.sandbox_id, "%s", id);
  snprintf (c.kind, sizeof c.kind, "%s", kind);
  snprintf (c.prefix, sizeof c.prefix, "%s", prefix ? prefix : "");
  char tmp[PATH_MAX] = "", final[PATH_MAX];
  struct sbx_saved_file *files = calloc (n ? n : 1, sizeof *files);
  size_t nf = 0;
  uint32_t blobs = 0;
  bool made = false;
  int r = -1;
  cleanup_close int dfd = -1;
  if (files == NULL)
    {
      sbx_fail (err, ENOMEM, "checkpoint");
      goto out;
    }
  if (sbx_path (tmp, sizeof tmp, "%s/.tmp-%s", sv->dir, c.id) < 0
      || sbx_path (final, sizeof final, "%s/%s", sv->dir, c.id) < 0)
    {
      sbx_fail (err, ENAMETOOLONG, "storage directory");
      goto out;
    }
  if (mkdir (tmp, 0700) == 0)
    made = true;
  if (!made || (dfd = open (tmp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
    {
      sbx_fail (err, errno, "create %s", tmp);
      goto out;
    }
  size_t rootlen = strlen (root);
  for (size_t i = 0; i < n; i++)
    {
      struct sbx_entry *en = &ents[i];
      if (sbx_now_ns () > deadline_ns)
        {
          sbx_failk (err, SBX_E_UNAVAILABLE, "copying %s took too long", root);
          goto out;
        }
      /* the agent lists below ROOT; anything else is not ours to keep */
      if (strncmp (en->path, root, rootlen) != 0 || en->path[rootlen] != '/' || en->path[rootlen + 1] == '\0')
        continue;
      const char *rel = en->path + rootlen + 1;
      if (depth_of (rel) > SBX_SAVE_DEPTH_MAX)
        {
          sbx_failk (err, SBX_E_TOO_LARGE, "%s is nested deeper than %u levels", root, SBX_SAVE_DEPTH_MAX);
          goto out;
        }
      if (en->type == SBX_FT_OTHER || ((en->type == SBX_FT_DIR || en->type == SBX_FT_SYMLINK) && !checkpoint))
        continue; /* FIFOs, sockets, devices; artifacts are regular files */
      struct sbx_saved_file *f = &files[nf];
      f->type = en->type;
      f->mode = en->mode & 07777;
      f->uid = en->uid;
      f->gid = en->gid;
      f->mtime_ms = (int64_t) (en->mtime_ns / 1000000u);
      if (en->type == SBX_FT_SYMLINK)
        f->link = en->link ? strdup (en->link) : strdup ("");
      if ((f->path = strdup (rel)) == NULL || (en->type == SBX_FT_SYMLINK && f->link == NULL))
        {
          sbx_fail (err, ENOMEM, "checkpoint");
          goto out;
        }
      nf++;
      if (en->type != SBX_FT_FILE)
        continue;
      if (en->size > room - c.size_bytes)
        {
          too_large (err, root, room, c.size_bytes + en->size);
          goto out;
        }
      char name[16];
      f->blob = ++blobs;
      snprintf (name, sizeof name, "%u", f->blob);
      cleanup_close int bfd = openat (dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (bfd < 0)
        {
          sbx_fail (err, errno, "create a file in %s", tmp);
          goto out;
        }
      struct blob_sink sink = { bfd, deadline_ns, false };
      struct sbx_entry st;
      struct sbx_err rerr;
      if (sbx_file_read (e, id, en->path, "root", room - c.size_bytes, &st, blob_write, &sink, &rerr) < 0)
        {
          enum sbx_err_kind k = sbx_err_kind (&rerr);
          if (k == SBX_E_NOT_FOUND || k == SBX_E_INVALID || rerr.code == EISDIR)
            {
              /* gone, or no longer a regular file (a FIFO took its place):
                 as if it had not been there */
              free (files[--nf].path);
              files[nf].path = NULL;
              unlinkat (dfd, name, 0);
              continue;
            }
          if (sink.late)
            sbx_failk (err, SBX_E_UNAVAILABLE, "copying %s took too long", root);
          else if (k == SBX_E_TOO_LARGE)
            too_large (err, root, room, 0);
          else
            *err = rerr;
          goto out;
        }
      struct stat bst;
      if (fstat (bfd, &bst) < 0)
        {
          sbx_entry_free (&st);
          sbx_fail (err, errno, "stat a file in %s", tmp);
          goto out;
        }
      f->size = (uint64_t) bst.st_size;
      f->mode = st.mode & 07777;
      f->uid = st.uid;
      f->gid = st.gid;
      sbx_entry_free (&st);
      c.size_bytes += f->size;
    }
  if (nf == 0 && !keep_empty)
    {
      r = 0;
      goto out;
    }
  c.files = (uint32_t) nf;
  c.created_ms = sbx_wall_ms ();
  if (rename (tmp, final) < 0)
    {
      sbx_fail (err, errno, "rename %s", tmp);
      goto out;
    }
  if (sbx_store_saved_add (store, &c, files, nf, sv->quota, err) < 0)
    {
      struct sbx_err e2;
      sbx_rm_rf (final, &e2);
      if (err->code == EDQUOT)
        err->kind = SBX_E_LIMIT;
      goto out_freed;
    }
  *out = c;
  r = 1;
  goto out_freed;
out:
  if (made)
    {
      struct sbx_err e2;
      sbx_rm_rf (tmp, &e2);
      rmdir (tmp);
    }
out_freed:
  sbx_saved_files_free (files, nf);
  sbx_entries_free (ents, n);
  return r;
}

/* ---- checkpoints ---- */

int
sbx_service_checkpoint_create (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                               struct sbx_saved *out, struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_get (svc, org, sandbox_id, &rec, err) < 0)
    return -1;
  bool stopped = strcmp (rec.status, "stopped") == 0 || strcmp (rec.status, "error") == 0;
  sbx_sandbox_rec_free (&rec);
  if (stopped)
    {
      /* its workspace may have been kept when it ended (ephemeral: false) */
      struct sbx_saved *v;
      size_t n;
      if (sbx_store_saved_list (sbx_service_store (svc), org->id, "checkpoint", sandbox_id, &v, &n, err) < 0)
        return -1;
      bool have = n > 0;
      if (have)
        *out = v[0];
      free (v);
      if (have)
        return 0;
      return sbx_failk (err, SBX_E_STOPPED, "sandbox has ended and its workspace was not kept");
    }
  int r = take (svc, sbx_service_engine (svc), org->id, sandbox_id, SBX_WORKSPACE, "checkpoint", NULL, true,
                sbx_now_ns () + (uint64_t) SBX_SAVE_MS * 1000000u, out, err);
  if (r == 1)
    sbx_log_fields (SBX_LOG_INFO, "checkpoint", "sandbox", sandbox_id, "checkpoint", out->id, NULL);
  return r < 0 ? -1 : 0;
}

int
sbx_service_checkpoint_list (struct sbx_service *svc, const struct sbx_org *org, struct sbx_saved **v, size_t *n,
                             struct sbx_err *err)
{
  return sbx_store_saved_list (sbx_service_store (svc), org->id, "checkpoint", NULL, v, n, err);
}

/* ORG's checkpoint ID into *C; SBX_E_NOT_FOUND otherwise. */
static int
own_checkpoint (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_saved *c,
                struct sbx_err *err)
{
  if (!sbx_saved_id_valid (id, "ckpt_") || sbx_store_saved_get (sbx_service_store (svc), id, c, err) < 0
      || strcmp (c->org_id, org->id) != 0 || strcmp (c->kind, "checkpoint") != 0)
    {
      if (id && sbx_saved_id_valid (id, "ckpt_") && err->code != ENOENT && err->code != 0)
        return -1;
      return sbx_failk (err, SBX_E_NOT_FOUND, "Checkpoint not found");
    }
  return 0;
}

static void
remove_content (struct sbx_service *svc, const char *id)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  char path[PATH_MAX];
  struct sbx_err err;
  if (sv && sbx_path (path, sizeof path, "%s/%s", sv->dir, id) == 0 && sbx_rm_rf (path, &err) == 0)
    rmdir (path);
}

int
sbx_service_checkpoint_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                               struct sbx_err *err)
{
  struct sbx_saved c;
  if (own_checkpoint (svc, org, id, &c, err) < 0)
    return -1;
  if (sbx_store_saved_delete (sbx_service_store (svc), org->id, id, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failk (err, SBX_E_NOT_FOUND, "Checkpoint not found");
      return -1;
    }
  remove_content (svc, id);
  return 0;
}

int
sbx_service_checkpoint_check (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                              struct sbx_err *err)
{
  struct sbx_saved c;
  return own_checkpoint (svc, org, id, &c, err);
}

/* Open blob B of set ID for reading. */
static int
open_blob (struct sbx_service *svc, const char *id, uint32_t b, struct sbx_err *err)
{
  struct sbx_saves *sv = sbx_service_saves (svc);
  char path[PATH_MAX];
  if (sv == NULL || sbx_path (path, sizeof path, "%s/%s/%u", sv->dir, id, b) < 0)
    return sbx_failk (err, SBX_E_INTERNAL, "no storage directory");
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "open the content of %s", id);
  return fd;
}

int
sbx_service_checkpoint_restore (struct sbx_service *svc, const struct sbx_org *org, const char *checkpoint_id,
                                const char *sandbox_id, struct sbx_err *err)
{
  struct sbx_saved c;
  if (own_checkpoint (svc, org, checkpoint_id, &c, err) < 0)
    return -1;
  struct sbx_engine *e = sbx_service_engine (svc);
  struct sbx_saved_file *files;
  size_t n;
  if (sbx_store_saved_files (sbx_service_store (svc), checkpoint_id, &files, &n, err) < 0)
    return -1;
  int r = 0;
  char *chunk = malloc (SBX_PROTO_CHUNK);
  if (chunk == NULL)
    r = sbx_fail (err, ENOMEM, "restore");
  /* by path: a directory comes before what it holds */
  for (size_t i = 0; i < n && r == 0; i++)
    {
      struct sbx_saved_file *f = &files[i];
      char path[4200];
      if (sbx_path (path, sizeof path, "%s/%s", SBX_WORKSPACE, f->path) < 0)
        {
          r = sbx_failk (err, SBX_E_INVALID, "a path of the checkpoint is too long");
          break;
        }
      struct sbx_file_owner own = { f->uid, f->gid, f->mode };
      if (f->type == SBX_FT_DIR)
        r = sbx_file_mkdir_owned (e, sandbox_id, path, &own, err);
      else if (f->type == SBX_FT_SYMLINK)
        r = sbx_file_symlink (e, sandbox_id, path, f->link ? f->link : "", &own, err);
      else if (f->type == SBX_FT_FILE)
        {
          cleanup_close int fd = open_blob (svc, checkpoint_id, f->blob, err);
          struct sbx_file_writer *w;
          if (fd < 0 || sbx_file_writer_open_owned (e, sandbox_id, path, &own, &w, err) < 0)
            {
              r = -1;
              break;
            }
          for (;;)
            {
              ssize_t got = read (fd, chunk, SBX_PROTO_CHUNK);
              if (got < 0 && errno == EINTR)
                continue;
              if (got < 0)
                {
                  r = sbx_fail (err, errno, "read the checkpoint");
                  break;
                }
              if (got == 0 || (r = sbx_file_writer_push (w, chunk, (size_t) got, err)) < 0)
                break;
            }
          if (r < 0)
            sbx_file_writer_abort (w);
          else
            r = sbx_file_writer_finish (w, NULL, err);
        }
      if (r < 0)
        sbx_err_wrap (err, "restore %s", path);
    }
  free (chunk);
  sbx_saved_files_free (files, n);
  return r;
}

/* ---- what a sandbox keeps when it ends ---- */

int
sbx_service_storage_start (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                           const struct sbx_sandbox_spec *spec, struct sbx_err *err)
{
  if (spec->checkpoint_id && *spec->checkpoint_id
      && sbx_service_checkpoint_restore (svc, org, spec->checkpoint_id, sandbox_id, err) < 0)
    return -1;
  if (!spec->keep_workspace && !spec->keep_artifacts)
    return 0;
  struct sbx_storage sto = { spec->keep_workspace, spec->keep_artifacts, "" };
  if (spec->artifact_prefix && strlen (spec->artifact_prefix) >= sizeof sto.prefix)
    return sbx_failk (err, SBX_E_INVALID, "artifactPrefix is longer than %zu bytes", sizeof sto.prefix - 1);
  snprintf (sto.prefix, sizeof sto.prefix, "%s", spec->artifact_prefix ? spec->artifact_prefix : "");
  if (spec->keep_artifacts)
    {
      /* a place every user of the sandbox can write to, like /tmp */
      struct sbx_file_owner own = { 0, 0, 01777 };
      if (sbx_file_mkdir_owned (sbx_service_engine (svc), sandbox_id, SBX_ARTIFACTS, &own, err) < 0)
        return -1;
    }
  return sbx_store_storage_put (sbx_service_store (svc), sandbox_id, &sto, err);
}

void
sbx_service_on_ending (void *ud, struct sbx_engine *e, const char *id, const char *reason)
{
  struct sbx_service *svc = ud;
  if (svc == NULL || sbx_service_saves (svc) == NULL)
    return;
  /* a little less than the core waits, so that a set past it fails here
     (and is removed) rather than being cut by the teardown */
  uint64_t deadline = sbx_now_ns () + (uint64_t) (SBX_ENDING_MS - 2000) * 1000000u;
  struct sbx_err err;
  struct sbx_sandbox_rec rec;
  if (sbx_store_sandbox_get (sbx_service_store (svc), id, &rec, &err) < 0)
    return; /* nobody's: an orphan, or a create that failed */
  struct sbx_storage sto;
  if (sbx_store_storage_get (sbx_service_store (svc), id, &sto, &err) < 0)
    memset (&sto, 0, sizeof sto);
  struct sbx_saved c;
  if (sto.keep_workspace)
    {
      int r = take (svc, e, rec.org_id, id, SBX_WORKSPACE, "checkpoint", NULL, true, deadline, &c, &err);
      if (r < 0)
        sbx_log_fields (SBX_LOG_WARN, "cannot keep the workspace of an ending sandbox", "sandbox", id, "reason",
                        reason, "error", err.msg, NULL);
      else
        sbx_log_fields (SBX_LOG_INFO, "kept the workspace of an ending sandbox", "sandbox", id, "checkpoint", c.id,
                        NULL);
    }
  /* what a sandbox wrote to /artifacts is kept, asked or not (seed 004:
     "files the sandbox writes to /artifacts are kept after it ends") */
  int r = take (svc, e, rec.org_id, id, SBX_ARTIFACTS, "artifacts", sto.prefix, sto.keep_artifacts, deadline, &c,
                &err);
  if (r < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot keep the artifacts of an ending sandbox", "sandbox", id, "reason", reason,
                    "error", err.msg, NULL);
  else if (r > 0)
    sbx_log_fields (SBX_LOG_INFO, "kept the artifacts of an ending sandbox", "sandbox", id, "set", c.id, NULL);
  sbx_sandbox_rec_free (&rec);
}

/* ---- artifacts ---- */

void
sbx_artifacts_free (struct sbx_artifacts *a)
{
  for (size_t i = 0; i < a->n; i++)
    free (a->v[i].path);
  free (a->v);
  memset (a, 0, sizeof *a);
}


/* Whether sandbox REC's /artifacts are its live files: its record says it
   lives and the engine has it, not destroyed (a destroyed one's are being
   kept, or gone, however its record reads yet). */
static bool
is_live (struct sbx_service *svc, const struct sbx_sandbox_rec *rec)
{
  if (strcmp (rec->status, "running") != 0 && strcmp (rec->status, "paused") != 0
      && strcmp (rec->status, "creating") != 0)
    return false;
  struct sbx_info info;
  struct sbx_err err;
  if (sbx_get_info (sbx_service_engine (svc), rec->id, &info, &err) < 0)
    return false;
  bool up = info.state != SBX_STOPPED && info.state != SBX_ERROR; /* a destroyed one reads stopped */
  sbx_info_free (&info);
  return up;
}

/* The kept set of sandbox ID: 1 and *C, or 0 when none.  A sandbox
   destroyed a moment ago may still be in its ending hook: with WAIT its
   set is waited for (sbx_teardown_wait), so that a client who asks for
   it after the destroy was answered finds it. */
static int
kept_set (struct sbx_service *svc, const char *org_id, const char *id, bool wait, struct sbx_saved *c,
          struct sbx_err *err)
{
  struct sbx_err werr;
  if (wait && sbx_service_engine (svc)
      && sbx_teardown_wait (sbx_service_engine (svc), id, SBX_ENDING_MS, &werr) < 0)
    {
      *err = werr;
      return -1;
    }
  struct sbx_saved *v;
  size_t n;
  if (sbx_store_saved_list (sbx_service_store (svc), org_id, "artifacts", id, &v, &n, err) < 0)
    return -1;
  if (n)
    *c = v[0];
  free (v);
  return n > 0;
}

int
sbx_service_artifacts_list (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, struct sbx_artifacts *out,
                            struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  struct sbx_storage sto;
  if (sbx_store_storage_get (sbx_service_store (svc), rec->id, &sto, err) == 0)
    snprintf (out->prefix, sizeof out->prefix, "%s", sto.prefix);
  if (is_live (svc, rec))
    {
      struct sbx_entry *ents;
      size_t n;
      struct sbx_err lerr;
      if (sbx_file_list (sbx_service_engine (svc), rec->id, SBX_ARTIFACTS, "root", SBX_SAVE_DEPTH_MAX, &ents, &n,
                         &lerr)
          < 0)
        {
          if (sbx_err_kind (&lerr) == SBX_E_NOT_FOUND || lerr.code == ENOTDIR)
            return 0;
          *err = lerr;
          return -1;
        }
      qsort (ents, n, sizeof *ents, by_path);
      size_t rootlen = strlen (SBX_ARTIFACTS);
      for (size_t i = 0; i < n; i++)
        {
          if (ents[i].type != SBX_FT_FILE || strncmp (ents[i].path, SBX_ARTIFACTS "/", rootlen + 1) != 0)
            continue;
          struct sbx_artifact *a = sbx_grow (&out->v, &out->n, &out->cap, sizeof *out->v);
          if (a == NULL || (a->path = strdup (ents[i].path + rootlen + 1)) == NULL)
            {
              if (a)
                out->n--;
              sbx_entries_free (ents, n);
              sbx_artifacts_free (out);
              return sbx_fail (err, ENOMEM, "list artifacts");
            }
          a->size = ents[i].size;
          a->mode = ents[i].mode & 07777;
          a->mtime_ms = (int64_t) (ents[i].mtime_ns / 1000000u);
          out->bytes += a->size;
        }
      sbx_entries_free (ents, n);
      return 0;
    }
  struct sbx_saved c;
  int k = kept_set (svc, rec->org_id, rec->id, true, &c, err);
  if (k <= 0)
    return k;
  out->kept = true;
  out->kept_ms = c.created_ms;
  snprintf (out->prefix, sizeof out->prefix, "%s", c.prefix);
  struct sbx_saved_file *files;
  size_t n;
  if (sbx_store_saved_files (sbx_service_store (svc), c.id, &files, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    {
      if (files[i].type != SBX_FT_FILE)
        continue;
      struct sbx_artifact *a = sbx_grow (&out->v, &out->n, &out->cap, sizeof *out->v);
      if (a == NULL)
        {
          sbx_saved_files_free (files, n);
          sbx_artifacts_free (out);
          return sbx_fail (err, ENOMEM, "list artifacts");
        }
      a->path = files[i].path;
      files[i].path = NULL;
      a->size = files[i].size;
      a->mode = files[i].mode;
      a->mtime_ms = files[i].mtime_ms;
      out->bytes += a->size;
    }
  sbx_saved_files_free (files, n);
  return 0;
}

int
sbx_service_artifacts_delete (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  if (is_live (svc, rec))
    return sbx_failk (err, SBX_E_CONFLICT, "Sandbox is still running; its /artifacts are its own files");
  struct sbx_saved c;
  int k = kept_set (svc, rec->org_id, rec->id, true, &c, err);
  if (k < 0)
    return -1;
  if (k == 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "No artifacts kept");
  if (sbx_store_saved_delete (sbx_service_store (svc), rec->org_id, c.id, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failk (err, SBX_E_NOT_FOUND, "No artifacts kept");
      return -1;
    }
  remove_content (svc, c.id);
  return 0;
}

/* PATH as a client names an artifact: relative to /artifacts (a leading
   "/artifacts/" or the set's PREFIX is taken off), normalised: no empty,
   "." or ".." component.  NULL when it is not acceptable. */
static const char *
artifact_rel (const char *path, const char *prefix)
{
  if (path == NULL)
    return NULL;
  if (strncmp (path, SBX_ARTIFACTS "/", strlen (SBX_ARTIFACTS) + 1) == 0)
    path += strlen (SBX_ARTIFACTS) + 1;
  else if (prefix && *prefix && strncmp (path, prefix, strlen (prefix)) == 0)
    path += strlen (prefix);
  size_t len = strlen (path);
  if (len == 0 || len >= 4096 || path[0] == '/' || depth_of (path) > SBX_SAVE_DEPTH_MAX)
    return NULL;
  for (const char *p = path; *p;)
    {
      const char *slash = strchr (p, '/');
      size_t l = slash ? (size_t) (slash - p) : strlen (p);
      if (l == 0 || (l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.'))
        return NULL;
      p += l + (slash != NULL);
      if (slash && *p == '\0')
        return NULL;
    }
  return path;
}

int
sbx_service_artifact_open (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, const char *path,
                           struct sbx_artifact_src *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  out->fd = -1;
  struct sbx_storage sto;
  if (sbx_store_storage_get (sbx_service_store (svc), rec->id, &sto, err) < 0)
    memset (&sto, 0, sizeof sto);
  struct sbx_saved c;
  int k = 0;
  bool live = is_live (svc, rec);
  if (!live && (k = kept_set (svc, rec->org_id, rec->id, true, &c, err)) < 0)
    return -1;
  const char *rel = artifact_rel (path, k > 0 ? c.prefix : sto.prefix);
  if (rel == NULL)
    return sbx_failk (err, SBX_E_INVALID, "Invalid path: a path inside /artifacts is required");
  const char *slash = strrchr (rel, '/');
  snprintf (out->name, sizeof out->name, "%s", slash ? slash + 1 : rel);
  if (live)
    {
      /* each directory on the way must be one (not a symlink), as the
         listing shows them, and the file a regular one */
      struct sbx_engine *e = sbx_service_engine (svc);
      char abs[4200];
      if (sbx_path (abs, sizeof abs, "%s/%s", SBX_ARTIFACTS, rel) < 0)
        return sbx_failk (err, SBX_E_INVALID, "Invalid path");
      for (char *p = abs + strlen (SBX_ARTIFACTS) + 1;; p++)
        {
          bool last = *p == '\0';
          if (*p != '/' && !last)
            continue;
          char saved = *p;
          *p = '\0';
          struct sbx_entry st;
          int r = sbx_file_stat (e, rec->id, abs, "root", &st, err);
          *p = saved;
          if (r < 0)
            return sbx_err_kind (err) == SBX_E_NOT_FOUND ? sbx_failk (err, SBX_E_NOT_FOUND, "Artifact not found")
                                                          : -1;
          bool ok = last ? st.type == SBX_FT_FILE : st.type == SBX_FT_DIR;
          sbx_entry_free (&st);
          if (!ok)
            return sbx_failk (err, SBX_E_NOT_FOUND, "Artifact not found");
          if (last)
            break;
        }
      struct sbx_entry st;
      if (sbx_file_reader_open (e, rec->id, abs, "root", SBX_SAVE_BYTES_MAX, &st, &out->reader, err) < 0)
        return -1;
      out->size = st.size;
      sbx_entry_free (&st);
      return 0;
    }
  if (k == 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "Artifact not found");
  struct sbx_saved_file f;
  if (sbx_store_saved_file (sbx_service_store (svc), c.id, rel, &f, err) < 0)
    return err->code == ENOENT ? sbx_failk (err, SBX_E_NOT_FOUND, "Artifact not found") : -1;
  bool regular = f.type == SBX_FT_FILE;
  uint32_t blob = f.blob;
  free (f.path);
  free (f.link);
  if (!regular)
    return sbx_failk (err, SBX_E_NOT_FOUND, "Artifact not found");
  out->fd = open_blob (svc, c.id, blob, err);
  if (out->fd < 0)
    return -1;
  struct stat st;
  if (fstat (out->fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      close (out->fd);
      out->fd = -1;
      return sbx_failk (err, SBX_E_INTERNAL, "the content of an artifact is missing");
    }
  out->size = (uint64_t) st.st_size;
  return 0;
}

int
sbx_service_artifacts_summary (struct sbx_service *svc, const struct sbx_sandbox_rec *rec,
                               struct sbx_artifacts_summary *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  if (is_live (svc, rec))
    {
      struct sbx_storage sto;
      if (sbx_store_storage_get (sbx_service_store (svc), rec->id, &sto, err) < 0 || !sto.keep_artifacts)
        return 0;
      snprintf (out->prefix, sizeof out->prefix, "%s", sto.prefix);
      return 1;
    }
  struct sbx_saved c;
  int k = kept_set (svc, rec->org_id, rec->id, false, &c, err);
  if (k <= 0)
    return k;
  out->kept = true;
  out->count = c.files;
  out->bytes = c.size_bytes;
  snprintf (out->prefix, sizeof out->prefix, "%s", c.prefix);
  return 1;
}
