/*
 * builds.c - templates built through E2B's build API (see builds.h).
 *
 * Records: templates, template_builds and template_tags in the store.
 * Files: STATE/build-files/ORG/HASH, the archives uploaded for COPY
 * steps (content only, mode 0600, never unpacked by the daemon: they are
 * written into the build's sandbox and unpacked there by tar, as the
 * sandbox's root); STATE/builds/BUILD.log, a build's log, one JSON object
 * a line ({"t": ms, "l": level, "s": step, "m": message}), at most
 * SBX_BUILD_LOG_MAX bytes.
 *
 * A build.  A worker (one of --build-workers, default 1; at most
 * SBX_BUILD_QUEUE_MAX builds wait) takes the build, finds its base tree,
 * and walks its steps, computing each step's layer key:
 *
 *   key0 = H(org, base tree's identity)     (a rebuilt base changes it)
 *   key_i = H(key_{i-1}, step i's type, args, files hash)
 *   final = H(key_n, user, workdir, env, start and ready commands, size)
 *
 * ENV and USER only change what later steps run with.  RUN, COPY and
 * WORKDIR change files: when layer "_l-" key_i exists (and nothing before
 * was rebuilt, and neither the step nor the build says force) the step is
 * "CACHED"; otherwise the build's sandbox (created once, on the last
 * cached layer, with keep_upper) runs it, is frozen, and its upper layer
 * is published as layer key_i (sbx_layer_commit).  The last layer with the
 * final settings becomes the build's tree, which sandboxes start from.
 * A start command is checked at the end of the build as at every create:
 * started in the background, then the ready command until it exits 0.
 *
 * Bounds: SBX_BUILD_MS for a whole build (each step gets what is left),
 * SBX_BUILD_DISK_MB of disk for what its steps write (the sandbox's disk),
 * SBX_BUILD_STEPS_MAX steps, SBX_BUILD_FILE_MAX per upload, the log's
 * size.  Layers are kept as the cache of later builds; a template's
 * delete removes the layers its builds made that no other template's
 * build made or used.
 */
#include "builds.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../core/sandbox.h"
#include "../core/template.h"
#include "service.h"

/* ---- the module's state ---- */

struct job {
  struct job *next;
  char org_id[SBX_STORE_ID_MAX];
  char template_id[SBX_STORE_ID_MAX];
  char build_id[SBX_BUILD_ID_MAX];
  char name[SBX_TMPL_NAME_MAX];
  uint32_t cpu_count, memory_mb;
  struct sbx_build_spec spec;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct job *head, **tail;
  size_t queued;
  bool started, stopping;
  pthread_t *threads;
  uint32_t n_threads;
  struct sbx_service *svc;
  char state_dir[PATH_MAX];
  char tmpl_dir[PATH_MAX];
} B = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* ---- small helpers ---- */

void
sbx_build_spec_free (struct sbx_build_spec *s)
{
  for (size_t i = 0; i < s->n_steps; i++)
    {
      for (size_t j = 0; j < s->steps[i].n_args; j++)
        free (s->steps[i].args[j]);
      free (s->steps[i].args);
    }
  free (s->steps);
  free (s->from_image);
  free (s->from_template);
  free (s->start_cmd);
  free (s->ready_cmd);
  memset (s, 0, sizeof *s);
}

static const char *const step_names[] = { "RUN", "COPY", "ENV", "WORKDIR", "USER" };

int
sbx_step_kind_parse (const char *type)
{
  for (size_t i = 0; i < sizeof step_names / sizeof *step_names; i++)
    if (strcmp (type, step_names[i]) == 0)
      return (int) i;
  return -1;
}

/* Template names and tags: [A-Za-z0-9_.-], starting with a letter or a
   digit (so never a layer's "_l-"), at most 63 characters. */
static bool
valid_word (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n > 63)
    return false;
  if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9')))
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'
          || *p == '.' || *p == '-'))
      return false;
  return strstr (s, "..") == NULL;
}

static bool
valid_hash (const char *h)
{
  if (strlen (h) != 64)
    return false;
  for (const char *p = h; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

/* Split "name:tag" into NAME and TAG ("" when none). */
static int
split_name (const char *in, char name[SBX_TMPL_NAME_MAX], char tag[SBX_TMPL_NAME_MAX], struct sbx_err *err)
{
  const char *colon = strchr (in, ':');
  size_t n = colon ? (size_t) (colon - in) : strlen (in);
  if (n >= SBX_TMPL_NAME_MAX)
    return sbx_failk (err, SBX_E_INVALID, "template name too long");
  memcpy (name, in, n);
  name[n] = '\0';
  snprintf (tag, SBX_TMPL_NAME_MAX, "%s", colon ? colon + 1 : "");
  if (!valid_word (name))
    return sbx_failk (err, SBX_E_INVALID,
                      "invalid template name '%s': letters, digits, '_', '.' and '-', starting with a letter or a "
                      "digit, at most 63",
                      name);
  if (colon && !valid_word (tag))
    return sbx_failk (err, SBX_E_INVALID, "invalid tag '%s'", tag);
  return 0;
}

static void
hex (const unsigned char *md, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++)
    sprintf (out + 2 * i, "%02x", md[i]);
}

/* A UUID (version 4), as E2B's build ids are. */
static void
new_uuid (char out[SBX_BUILD_ID_MAX])
{
  unsigned char r[16];
  sbx_random_bytes (r, sizeof r);
  r[6] = (unsigned char) ((r[6] & 0x0f) | 0x40);
  r[8] = (unsigned char) ((r[8] & 0x3f) | 0x80);
  char h[33];
  hex (r, 16, h);
  snprintf (out, SBX_BUILD_ID_MAX, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

static void
new_template_id (char out[SBX_STORE_ID_MAX])
{
  static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  unsigned char r[20];
  sbx_random_bytes (r, sizeof r);
  char *w = out + sprintf (out, "tpl");
  for (size_t i = 0; i < sizeof r; i++)
    *w++ = alphabet[r[i] % 36];
  *w = '\0';
}

/* A layer key: SHA-256 over parts separated by NUL bytes. */
struct hasher {
  EVP_MD_CTX *ctx;
};

static void
hash_part (struct hasher *h, const char *s)
{
  EVP_DigestUpdate (h->ctx, s ? s : "", s ? strlen (s) + 1 : 1);
}

static void
hash_end (struct hasher *h, char out[65])
{
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex (h->ctx, md, &len);
  EVP_MD_CTX_free (h->ctx);
  hex (md, 32, out);
}

static int
hash_begin (struct hasher *h, const char *prev, struct sbx_err *err)
{
  h->ctx = EVP_MD_CTX_new ();
  if (h->ctx == NULL || EVP_DigestInit_ex (h->ctx, EVP_sha256 (), NULL) != 1)
    {
      EVP_MD_CTX_free (h->ctx);
      return sbx_fail (err, ENOMEM, "hash");
    }
  hash_part (h, "sbxd-layer-2"); /* the builder's version: a change of how steps run */
  hash_part (h, prev);
  return 0;
}

static void
layer_name (const char *key, char out[64])
{
  snprintf (out, 64, SBX_LAYER_PREFIX "%.40s", key);
}

/* ---- files uploaded for COPY ---- */

static int
file_path (const char *org_id, const char *hash, char *out, size_t n, struct sbx_err *err)
{
  if (sbx_path (out, n, "%s/build-files/%s/%s", B.state_dir, org_id, hash) < 0)
    return sbx_fail (err, ENAMETOOLONG, "upload path");
  return 0;
}

int
sbx_service_build_file_present (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                                const char *hash, bool *present, struct sbx_err *err)
{
  struct sbx_tmpl_rec t;
  if (sbx_service_template_get (svc, org, template_id, &t, err) < 0)
    return -1;
  if (strcmp (t.org_id, org->id) != 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "template not found");
  if (!valid_hash (hash))
    return sbx_failk (err, SBX_E_INVALID, "invalid files hash (want 64 hex digits)");
  char path[PATH_MAX];
  if (file_path (org->id, hash, path, sizeof path, err) < 0)
    return -1;
  *present = access (path, F_OK) == 0;
  return 0;
}

int
sbx_service_build_file_put (struct sbx_service *svc, const char *org_id, const char *hash, const void *data,
                            size_t len, struct sbx_err *err)
{
  (void) svc;
  if (!valid_hash (hash))
    return sbx_failk (err, SBX_E_INVALID, "invalid files hash");
  if (len > SBX_BUILD_FILE_MAX)
    return sbx_failk (err, SBX_E_TOO_LARGE, "an upload may be at most %u MiB", SBX_BUILD_FILE_MAX >> 20);
  char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
  if (sbx_path (dir, sizeof dir, "%s/build-files/%s", B.state_dir, org_id) < 0
      || file_path (org_id, hash, path, sizeof path, err) < 0
      || sbx_path (tmp, sizeof tmp, "%s/.tmp-%s-%lu", dir, hash, (unsigned long) pthread_self ()) < 0)
    return sbx_fail (err, ENAMETOOLONG, "upload path");
  if (sbx_mkdir_p (dir, 0700, err) < 0)
    return -1;
  cleanup_close int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return sbx_fail (err, errno, "create %s", tmp);
  if (sbx_write_full (fd, data, len) < 0 || fsync (fd) < 0 || rename (tmp, path) < 0)
    {
      int e = errno;
      unlink (tmp);
      return sbx_fail (err, e, "keep upload %s", hash);
    }
  return 0;
}

/* ---- logs ---- */

struct blog {
  FILE *f;
  size_t bytes;
  bool full;
  char step[16];
};

static void
blog_add (struct blog *l, const char *level, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static void
blog_add (struct blog *l, const char *level, const char *fmt, ...)
{
  if (l->f == NULL || l->full)
    return;
  char msg[4096];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  json_t *o = json_pack ("{s:I, s:s, s:s, s:s%}", "t", (json_int_t) sbx_wall_ms (), "l", level, "s", l->step, "m",
                         msg, strlen (msg));
  if (o == NULL) /* invalid UTF-8: keep what can be said */
    o = json_pack ("{s:I, s:s, s:s, s:s}", "t", (json_int_t) sbx_wall_ms (), "l", level, "s", l->step, "m",
                   "(output that is not UTF-8)");
  char *line = o ? json_dumps (o, JSON_COMPACT) : NULL;
  json_decref (o);
  if (line == NULL)
    return;
  size_t n = strlen (line);
  if (l->bytes + n + 1 > SBX_BUILD_LOG_MAX)
    {
      l->full = true;
      fprintf (l->f, "{\"t\":%lld,\"l\":\"warn\",\"s\":\"\",\"m\":\"the log is full; what follows is not kept\"}\n",
               (long long) sbx_wall_ms ());
    }
  else
    {
      fprintf (l->f, "%s\n", line);
      l->bytes += n + 1;
    }
  fflush (l->f);
  free (line);
}

/* Output of commands, line by line (a partial line is kept until its end
   or 4 KiB). */
struct line_buf {
  struct blog *log;
  const char *level;
  char buf[4096];
  size_t len;
};

static void
lines_feed (struct line_buf *lb, const char *data, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      char c = data[i];
      if (c == '\n' || lb->len == sizeof lb->buf - 1)
        {
          lb->buf[lb->len] = '\0';
          blog_add (lb->log, lb->level, "%s", lb->buf);
          lb->len = 0;
          if (c == '\n')
            continue;
        }
      if (c != '\r')
        lb->buf[lb->len++] = c;
    }
}

static void
lines_flush (struct line_buf *lb)
{
  if (lb->len)
    {
      lb->buf[lb->len] = '\0';
      blog_add (lb->log, lb->level, "%s", lb->buf);
      lb->len = 0;
    }
}

/* A FILE for the core's progress text (mmdebstrap, cp): each line becomes
   a log entry. */
static ssize_t
progress_write (void *cookie, const char *data, size_t n)
{
  lines_feed (cookie, data, n);
  return (ssize_t) n;
}

static FILE *
progress_open (struct line_buf *lb)
{
  cookie_io_functions_t io = { .write = progress_write };
  return fopencookie (lb, "w", io);
}

void
sbx_build_logs_free (struct sbx_build_log *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (v[i].msg);
  free (v);
}

int
sbx_service_build_logs (struct sbx_service *svc, const char *build_id, size_t offset, size_t limit,
                        struct sbx_build_log **v, size_t *n, struct sbx_err *err)
{
  (void) svc;
  *v = NULL;
  *n = 0;
  char path[PATH_MAX];
  if (sbx_path (path, sizeof path, "%s/builds/%s.log", B.state_dir, build_id) < 0)
    return sbx_fail (err, ENAMETOOLONG, "log path");
  FILE *f = fopen (path, "re");
  if (f == NULL)
    return errno == ENOENT ? 0 : sbx_fail (err, errno, "open %s", path);
  struct sbx_build_log *out = NULL;
  size_t count = 0, cap = 0, index = 0;
  char *line = NULL;
  size_t lcap = 0;
  int ret = 0;
  while (count < limit && getline (&line, &lcap, f) > 0)
    {
      if (index++ < offset)
        continue;
      json_t *o = json_loads (line, 0, NULL);
      const char *m = json_string_value (json_object_get (o, "m"));
      struct sbx_build_log *e = m ? sbx_grow (&out, &count, &cap, sizeof *out) : NULL;
      if (e != NULL)
        {
          e->ms = json_integer_value (json_object_get (o, "t"));
          snprintf (e->level, sizeof e->level, "%s", json_string_value (json_object_get (o, "l")) ?: "info");
          snprintf (e->step, sizeof e->step, "%s", json_string_value (json_object_get (o, "s")) ?: "");
          e->msg = strdup (m);
          if (e->msg == NULL)
            count--;
        }
      json_decref (o);
    }
  free (line);
  fclose (f);
  *v = out;
  *n = count;
  return ret;
}

/* ---- records ---- */

static struct sbx_store *
store (struct sbx_service *svc)
{
  return sbx_service_store (svc);
}

int
sbx_service_template_get (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                          struct sbx_tmpl_rec *t, struct sbx_err *err)
{
  if (sbx_store_tmpl_get (store (svc), org->id, id_or_name, t, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failk (err, SBX_E_NOT_FOUND, "template '%s' not found", id_or_name);
      return -1;
    }
  return 0;
}

/* ORG's own template (not merely a public one). */
static int
own_template (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name, struct sbx_tmpl_rec *t,
              struct sbx_err *err)
{
  if (sbx_service_template_get (svc, org, id_or_name, t, err) < 0)
    return -1;
  if (strcmp (t->org_id, org->id) != 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "template '%s' not found", id_or_name);
  return 0;
}

bool
sbx_service_template_shipped (struct sbx_service *svc, const char *name)
{
  (void) svc;
  return name[0] != '_' && sbx_template_exists (B.tmpl_dir, name);
}

int
sbx_service_template_request (struct sbx_service *svc, const struct sbx_org *org, const char *name_tag,
                              const char *const *tags, size_t n_tags, uint32_t cpu_count, uint32_t memory_mb,
                              struct sbx_tmpl_rec *t, struct sbx_build_rec *b, struct sbx_err *err)
{
  char name[SBX_TMPL_NAME_MAX], tag[SBX_TMPL_NAME_MAX];
  memset (b, 0, sizeof *b);
  if (split_name (name_tag, name, tag, err) < 0)
    return -1;
  if (n_tags > 16)
    return sbx_failk (err, SBX_E_INVALID, "at most 16 tags");
  json_t *tj = json_array ();
  if (tag[0])
    json_array_append_new (tj, json_string (tag));
  for (size_t i = 0; i < n_tags; i++)
    {
      if (!valid_word (tags[i]))
        {
          json_decref (tj);
          return sbx_failk (err, SBX_E_INVALID, "invalid tag '%s'", tags[i]);
        }
      json_array_append_new (tj, json_string (tags[i]));
    }
  if (json_array_size (tj) == 0)
    json_array_append_new (tj, json_string ("default"));
  char *tags_text = json_dumps (tj, JSON_COMPACT);
  json_decref (tj);
  if (tags_text == NULL)
    return sbx_fail (err, ENOMEM, "tags");

  int64_t now = sbx_wall_ms ();
  struct sbx_err e2;
  if (sbx_store_tmpl_get (store (svc), org->id, name, t, &e2) < 0 || strcmp (t->org_id, org->id) != 0)
    {
      if (sbx_service_template_shipped (svc, name))
        {
          free (tags_text);
          return sbx_failk (err, SBX_E_CONFLICT, "'%s' is a template of this machine; choose another name", name);
        }
      memset (t, 0, sizeof *t);
      new_template_id (t->id);
      snprintf (t->org_id, sizeof t->org_id, "%s", org->id);
      snprintf (t->name, sizeof t->name, "%s", name);
      t->created_ms = now;
    }
  if (cpu_count)
    t->cpu_count = cpu_count;
  if (memory_mb)
    t->memory_mb = memory_mb;
  t->updated_ms = now;
  if (sbx_store_tmpl_put (store (svc), t, err) < 0)
    {
      free (tags_text);
      return -1;
    }
  new_uuid (b->id);
  snprintf (b->template_id, sizeof b->template_id, "%s", t->id);
  snprintf (b->org_id, sizeof b->org_id, "%s", org->id);
  snprintf (b->status, sizeof b->status, "waiting");
  b->tags_json = tags_text;
  b->cpu_count = t->cpu_count;
  b->memory_mb = t->memory_mb;
  b->created_ms = b->updated_ms = now;
  if (sbx_store_build_put (store (svc), b, err) < 0)
    {
      sbx_build_rec_free (b);
      return -1;
    }
  return 0;
}

int
sbx_service_template_set_public (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                                 bool is_public, struct sbx_tmpl_rec *t, struct sbx_err *err)
{
  if (own_template (svc, org, id_or_name, t, err) < 0)
    return -1;
  t->is_public = is_public;
  t->updated_ms = sbx_wall_ms ();
  return sbx_store_tmpl_put (store (svc), t, err);
}

int
sbx_service_template_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                             struct sbx_err *err)
{
  struct sbx_tmpl_rec t;
  if (own_template (svc, org, id_or_name, &t, err) < 0)
    return -1;
  struct sbx_build_rec *v;
  size_t n;
  if (sbx_store_build_list (store (svc), t.id, &v, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (strcmp (v[i].status, "waiting") == 0 || strcmp (v[i].status, "building") == 0)
      {
        sbx_build_recs_free (v, n);
        return sbx_failk (err, SBX_E_CONFLICT, "template '%s' is being built", t.name);
      }
  if (sbx_store_tmpl_delete (store (svc), org->id, t.id, err) < 0)
    {
      sbx_build_recs_free (v, n);
      return -1;
    }
  /* the layers its builds made that no other template's build names;
     running sandboxes keep theirs until they end (a removed tree is
     retired, not deleted) */
  for (size_t i = 0; i < n; i++)
    for (char *p = v[i].layers; p && *p;)
      {
        char *nl = strchr (p, '\n');
        if (nl == NULL)
          break;
        *nl = '\0';
        uint32_t refs = 1;
        struct sbx_err e2;
        if (strncmp (p, SBX_LAYER_PREFIX, strlen (SBX_LAYER_PREFIX)) == 0
            && sbx_store_build_tree_refs (store (svc), p, t.id, &refs, &e2) == 0 && refs == 0
            && sbx_template_exists (B.tmpl_dir, p) && sbx_template_remove (B.tmpl_dir, p, &e2) < 0)
          sbx_log_fields (SBX_LOG_WARN, "cannot remove a template's layer", "layer", p, "error", e2.msg, NULL);
        p = nl + 1;
      }
  sbx_build_recs_free (v, n);
  return 0;
}

int
sbx_service_build_get (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                       const char *build_id, struct sbx_build_rec *b, struct sbx_err *err)
{
  struct sbx_tmpl_rec t;
  if (own_template (svc, org, template_id, &t, err) < 0)
    return -1;
  if (sbx_store_build_get (store (svc), build_id, b, err) < 0)
    {
      if (err->code == ENOENT)
        return sbx_failk (err, SBX_E_NOT_FOUND, "build '%s' not found", build_id);
      return -1;
    }
  if (strcmp (b->template_id, t.id) != 0)
    {
      sbx_build_rec_free (b);
      return sbx_failk (err, SBX_E_NOT_FOUND, "build '%s' not found", build_id);
    }
  return 0;
}

/* The build a tag of template T names; no tag: "default", else the newest
   ready build. */
static int
tagged_build (struct sbx_service *svc, const struct sbx_tmpl_rec *t, const char *tag, struct sbx_build_rec *b,
              struct sbx_err *err)
{
  struct sbx_tag_rec *tv;
  size_t tn;
  if (sbx_store_tag_list (store (svc), t->id, &tv, &tn, err) < 0)
    return -1;
  const char *want = tag && *tag ? tag : "default";
  char build_id[SBX_BUILD_ID_MAX] = "";
  for (size_t i = 0; i < tn; i++)
    if (strcmp (tv[i].tag, want) == 0)
      snprintf (build_id, sizeof build_id, "%s", tv[i].build_id);
  free (tv);
  if (build_id[0])
    return sbx_store_build_get (store (svc), build_id, b, err);
  if (tag && *tag)
    return sbx_failk (err, SBX_E_NOT_FOUND, "template '%s' has no tag '%s'", t->name, tag);
  struct sbx_build_rec *v;
  size_t n;
  if (sbx_store_build_list (store (svc), t->id, &v, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (strcmp (v[i].status, "ready") == 0)
      {
        *b = v[i];
        memset (&v[i], 0, sizeof v[i]);
        sbx_build_recs_free (v, n);
        return 0;
      }
  sbx_build_recs_free (v, n);
  return sbx_failk (err, SBX_E_UNAVAILABLE, "template '%s' has no finished build yet", t->name);
}

int
sbx_service_tags_assign (struct sbx_service *svc, const struct sbx_org *org, const char *target,
                         const char *const *tags, size_t n_tags, char build_id[SBX_BUILD_ID_MAX], struct sbx_err *err)
{
  char name[SBX_TMPL_NAME_MAX], tag[SBX_TMPL_NAME_MAX];
  struct sbx_tmpl_rec t;
  struct sbx_build_rec b;
  if (split_name (target, name, tag, err) < 0 || own_template (svc, org, name, &t, err) < 0)
    return -1;
  if (n_tags == 0)
    return sbx_failk (err, SBX_E_INVALID, "no tags to assign");
  for (size_t i = 0; i < n_tags; i++)
    if (!valid_word (tags[i]))
      return sbx_failk (err, SBX_E_INVALID, "invalid tag '%s'", tags[i]);
  if (tagged_build (svc, &t, tag, &b, err) < 0)
    return -1;
  bool ready = strcmp (b.status, "ready") == 0;
  snprintf (build_id, SBX_BUILD_ID_MAX, "%s", b.id);
  sbx_build_rec_free (&b);
  if (!ready)
    return sbx_failk (err, SBX_E_INVALID, "build %s of '%s' is not ready", build_id, name);
  for (size_t i = 0; i < n_tags; i++)
    if (sbx_store_tag_set (store (svc), t.id, tags[i], build_id, sbx_wall_ms (), err) < 0)
      return -1;
  return 0;
}

int
sbx_service_tags_remove (struct sbx_service *svc, const struct sbx_org *org, const char *name,
                         const char *const *tags, size_t n_tags, struct sbx_err *err)
{
  struct sbx_tmpl_rec t;
  if (own_template (svc, org, name, &t, err) < 0)
    return -1;
  for (size_t i = 0; i < n_tags; i++)
    if (sbx_store_tag_delete (store (svc), t.id, tags[i], err) < 0)
      {
        if (err->code == ENOENT)
          return sbx_failk (err, SBX_E_NOT_FOUND, "template '%s' has no tag '%s'", t.name, tags[i]);
        return -1;
      }
  return 0;
}

int
sbx_service_tags_list (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                       struct sbx_tag_rec **v, size_t *n, struct sbx_err *err)
{
  struct sbx_tmpl_rec t;
  if (own_template (svc, org, id_or_name, &t, err) < 0)
    return -1;
  return sbx_store_tag_list (store (svc), t.id, v, n, err);
}

int
sbx_builds_resolve (struct sbx_service *svc, const struct sbx_org *org, const char *name, char *tree, size_t n,
                    struct sbx_err *err)
{
  if (name == NULL)
    return 0;
  /* the layers are nobody's to name */
  if (strncmp (name, SBX_LAYER_PREFIX, strlen (SBX_LAYER_PREFIX)) == 0
      || strncmp (name, SBX_IMAGE_PREFIX, strlen (SBX_IMAGE_PREFIX)) == 0)
    return sbx_failk (err, SBX_E_INVALID, "unknown template: %s", name);
  char base[SBX_TMPL_NAME_MAX], tag[SBX_TMPL_NAME_MAX];
  const char *colon = strchr (name, ':');
  size_t len = colon ? (size_t) (colon - name) : strlen (name);
  if (len == 0 || len >= sizeof base)
    return 0;
  memcpy (base, name, len);
  base[len] = '\0';
  snprintf (tag, sizeof tag, "%s", colon ? colon + 1 : "");
  struct sbx_tmpl_rec t;
  struct sbx_err e2;
  if (sbx_store_tmpl_get (store (svc), org->id, base, &t, &e2) < 0)
    return 0;
  struct sbx_build_rec b;
  if (tagged_build (svc, &t, tag, &b, err) < 0)
    return -1;
  bool ready = strcmp (b.status, "ready") == 0 && b.tree[0];
  snprintf (tree, n, "%s", b.tree);
  sbx_build_rec_free (&b);
  if (!ready)
    return sbx_failk (err, SBX_E_UNAVAILABLE, "template '%s' has no finished build yet", name);
  return 1;
}

/* ---- start and ready commands ---- */

struct exit_wait {
  int code;
  bool ended;
  struct line_buf *out;
};

static int
on_proc (const struct sbx_proc_event *ev, void *ud)
{
  struct exit_wait *w = ud;
  if ((ev->kind == SBX_PROC_STDOUT || ev->kind == SBX_PROC_STDERR) && w->out)
    lines_feed (w->out, (const char *) ev->data, ev->len);
  if (ev->kind == SBX_PROC_END)
    {
      w->ended = true;
      w->code = ev->timed_out ? -2 : ev->exit_code;
    }
  return 0;
}

/* Run "sh -c CMD" in sandbox ID as USER (NULL: the template's) in CWD
   (NULL: home) with ENV; *CODE its exit status (-2: timed out). */
static int
run_sh (struct sbx_engine *e, const char *id, const char *cmd, const char *user, const char *cwd,
        const char *const *env, uint32_t timeout_ms, struct line_buf *out, int *code, struct sbx_err *err)
{
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
  struct sbx_exec_opts o = { .argv = argv, .env = env, .cwd = cwd, .user = user, .timeout_ms = timeout_ms };
  struct exit_wait w = { .code = -1, .out = out };
  if (sbx_exec (e, id, &o, on_proc, &w, err) < 0)
    return -1;
  if (out)
    lines_flush (out);
  *code = w.ended ? w.code : -1;
  return 0;
}

/* Start START in the background of sandbox ID and wait for READY. */
static int
start_and_wait (struct sbx_engine *e, const char *id, const char *start, const char *ready, struct blog *log,
                struct sbx_err *err)
{
  int code;
  /* "$0" is START, a word of its own: nothing of it is parsed here */
  const char *argv[] = { "/bin/sh", "-c", "sh -c \"$0\" </dev/null >/dev/null 2>&1 &", start, NULL };
  struct sbx_exec_opts o = { .argv = argv, .timeout_ms = 10000 };
  struct exit_wait w = { .code = -1 };
  if (sbx_exec (e, id, &o, on_proc, &w, err) < 0)
    return sbx_err_wrap (err, "start command");
  if (log)
    blog_add (log, "info", "start command running: %s", start);
  if (ready == NULL || *ready == '\0')
    return 0;
  uint64_t deadline = sbx_now_ns () + (uint64_t) SBX_BUILD_READY_MS * 1000000u;
  while (sbx_now_ns () < deadline)
    {
      if (run_sh (e, id, ready, NULL, NULL, NULL, 10000, NULL, &code, err) < 0)
        return sbx_err_wrap (err, "ready command");
      if (code == 0)
        {
          if (log)
            blog_add (log, "info", "ready command succeeded: %s", ready);
          return 0;
        }
      usleep (200000);
    }
  return sbx_failk (err, SBX_E_UNAVAILABLE, "the ready command did not succeed within %u s: %s",
                    SBX_BUILD_READY_MS / 1000, ready);
}

/* A template's start and ready commands, read from its template.json
   once rather than on every create.  An entry is good while the
   template.json that NAME resolves to is the same file (device, inode,
   size and modification time): a rebuilt template is a new tree, a new
   file.  Checking that costs one stat; reading it again, an open of the
   template directory, a realpath, a read and a JSON parse. */
#define START_CACHE_MAX 32

struct start_entry {
  char name[SBX_TMPL_NAME_MAX + 8];
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  char *start_cmd; /* NULL: none */
  char *ready_cmd;
};

static struct {
  pthread_mutex_t lock;
  struct start_entry e[START_CACHE_MAX];
  unsigned next; /* the entry replaced next when none is free */
} start_cache = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool
same_file (const struct start_entry *e, const struct stat *st)
{
  return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size
         && e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* TREE's start and ready commands into *START and *READY (malloc'd, NULL
   when none); -1 when it is no template. */
static int
template_commands (const char *tree, char **start, char **ready)
{
  *start = *ready = NULL;
  if (B.tmpl_dir[0] == '\0' || strlen (tree) >= sizeof start_cache.e[0].name)
    return -1;
  char path[PATH_MAX];
  struct stat st;
  bool known = snprintf (path, sizeof path, "%s/%s/template.json", B.tmpl_dir, tree) < (int) sizeof path
               && strchr (tree, '/') == NULL && stat (path, &st) == 0;
  if (known)
    {
      pthread_mutex_lock (&start_cache.lock);
      for (unsigned i = 0; i < START_CACHE_MAX; i++)
        {
          struct start_entry *e = &start_cache.e[i];
          if (e->name[0] && strcmp (e->name, tree) == 0 && same_file (e, &st))
            {
              *start = e->start_cmd ? strdup (e->start_cmd) : NULL;
              *ready = e->ready_cmd ? strdup (e->ready_cmd) : NULL;
              bool ok = (*start != NULL) == (e->start_cmd != NULL) && (*ready != NULL) == (e->ready_cmd != NULL);
              pthread_mutex_unlock (&start_cache.lock);
              if (ok)
                return 0;
              free (*start);
              free (*ready);
              *start = *ready = NULL;
              return -1;
            }
        }
      pthread_mutex_unlock (&start_cache.lock);
    }
  struct sbx_template t;
  struct sbx_err e2;
  if (sbx_template_load (B.tmpl_dir, tree, &t, &e2) < 0)
    return -1;
  *start = t.start_cmd && *t.start_cmd ? strdup (t.start_cmd) : NULL;
  *ready = t.ready_cmd && *t.ready_cmd ? strdup (t.ready_cmd) : NULL;
  bool whole = (*start != NULL) == (t.start_cmd && *t.start_cmd) && (*ready != NULL) == (t.ready_cmd && *t.ready_cmd);
  sbx_template_free (&t);
  if (!whole)
    {
      free (*start);
      free (*ready);
      *start = *ready = NULL;
      return -1;
    }
  /* kept only when the file read is the one stat saw (a rebuild in
     between makes the next create read it again) */
  struct stat after;
  if (!known || stat (path, &after) < 0 || after.st_ino != st.st_ino || after.st_dev != st.st_dev)
    return 0;
  char *sc = *start ? strdup (*start) : NULL, *rc = *ready ? strdup (*ready) : NULL;
  if ((*start && sc == NULL) || (*ready && rc == NULL))
    {
      free (sc);
      free (rc);
      return 0;
    }
  pthread_mutex_lock (&start_cache.lock);
  struct start_entry *slot = NULL;
  for (unsigned i = 0; i < START_CACHE_MAX && slot == NULL; i++)
    if (start_cache.e[i].name[0] == '\0' || strcmp (start_cache.e[i].name, tree) == 0)
      slot = &start_cache.e[i];
  if (slot == NULL)
    slot = &start_cache.e[start_cache.next++ % START_CACHE_MAX];
  free (slot->start_cmd);
  free (slot->ready_cmd);
  snprintf (slot->name, sizeof slot->name, "%s", tree);
  slot->dev = st.st_dev;
  slot->ino = st.st_ino;
  slot->size = st.st_size;
  slot->mtime = st.st_mtim;
  slot->start_cmd = sc;
  slot->ready_cmd = rc;
  pthread_mutex_unlock (&start_cache.lock);
  return 0;
}

int
sbx_builds_started (struct sbx_service *svc, const char *id, const char *tree, struct sbx_err *err)
{
  char *start, *ready;
  if (template_commands (tree, &start, &ready) < 0)
    return 0;
  int r = 0;
  if (start)
    r = start_and_wait (sbx_service_engine (svc), id, start, ready, NULL, err);
  free (start);
  free (ready);
  return r;
}

bool
sbx_builds_has_start (struct sbx_service *svc, const char *tree)
{
  (void) svc;
  char *start, *ready;
  if (template_commands (tree, &start, &ready) < 0)
    return false;
  bool has = start != NULL;
  free (start);
  free (ready);
  return has;
}

/* ---- the build ---- */

/* What later steps run with. */
struct build_state {
  char user[64];
  char workdir[PATH_MAX];
  char **env; /* "K=V", NULL-terminated, owned */
  size_t n_env;
};

static void
state_free (struct build_state *s)
{
  for (size_t i = 0; i < s->n_env; i++)
    free (s->env[i]);
  free (s->env);
  s->env = NULL;
  s->n_env = 0;
}

static int
state_set_env (struct build_state *s, const char *key, const char *value)
{
  char *kv = NULL;
  if (asprintf (&kv, "%s=%s", key, value) < 0)
    return -1;
  size_t klen = strlen (key) + 1;
  for (size_t i = 0; i < s->n_env; i++)
    if (strncmp (s->env[i], kv, klen) == 0)
      {
        free (s->env[i]);
        s->env[i] = kv;
        return 0;
      }
  char **v = realloc (s->env, (s->n_env + 2) * sizeof *v);
  if (v == NULL)
    {
      free (kv);
      return -1;
    }
  s->env = v;
  s->env[s->n_env++] = kv;
  s->env[s->n_env] = NULL;
  return 0;
}

struct build {
  struct job *job;
  struct sbx_service *svc;
  struct sbx_engine *e;
  struct blog log;
  struct build_state st;
  char base_tree[64];        /* the tree the build's sandbox started on */
  char cur_tree[64];         /* the last layer */
  char sandbox[SBX_ID_MAX];  /* the build's sandbox, "" before the first step that runs */
  uint32_t disk_mb;
  uint64_t deadline_ns;
  char *made;                /* the layers it made, each followed by a newline */
  size_t made_len;
};

static void
made_add (struct build *b, const char *name)
{
  size_t n = strlen (name);
  char *m = realloc (b->made, b->made_len + n + 2);
  if (m == NULL)
    return;
  memcpy (m + b->made_len, name, n);
  m[b->made_len + n] = '\n';
  m[b->made_len + n + 1] = '\0';
  b->made = m;
  b->made_len += n + 1;
}

static uint32_t
remaining_ms (const struct build *b)
{
  uint64_t now = sbx_now_ns ();
  return now >= b->deadline_ns ? 1 : (uint32_t) ((b->deadline_ns - now) / 1000000u);
}

static void
layer_meta (const struct build *b, struct sbx_layer_meta *m)
{
  memset (m, 0, sizeof *m);
  m->env = (const char *const *) b->st.env;
  m->user = b->st.user;
  m->workdir = b->st.workdir;
  m->cpu_count = b->job->cpu_count;
  m->memory_mb = b->job->memory_mb;
  m->disk_mb = b->disk_mb;
}

static int
ensure_sandbox (struct build *b, struct sbx_err *err)
{
  if (b->sandbox[0])
    return 0;
  struct sbx_create_opts o = { .template_name = b->cur_tree,
                               .timeout_s = SBX_BUILD_MS / 1000 + 60,
                               .limits = { .cpu_millis = b->job->cpu_count * 1000,
                                           .memory_mb = b->job->memory_mb,
                                           .disk_mb = SBX_BUILD_DISK_MB },
                               .keep_upper = true };
  if (sbx_create (b->e, &o, b->sandbox, err) < 0)
    {
      b->sandbox[0] = '\0';
      return sbx_err_wrap (err, "start the build's sandbox");
    }
  snprintf (b->base_tree, sizeof b->base_tree, "%s", b->cur_tree);
  return 0;
}

/* Publish what the build's sandbox changed so far as layer NAME. */
static int
commit (struct build *b, const char *name, struct sbx_err *err)
{
  int fd = -1;
  uint32_t id_base = 0;
  struct sbx_layer_meta m;
  layer_meta (b, &m);
  if (sbx_pause (b->e, b->sandbox, err) < 0)
    return sbx_err_wrap (err, "freeze the build's sandbox");
  int r = sbx_upper_open (b->e, b->sandbox, &fd, &id_base, err);
  if (r == 0)
    {
      struct line_buf lb = { .log = &b->log, .level = "info" };
      FILE *p = progress_open (&lb);
      r = sbx_layer_commit (B.tmpl_dir, name, b->base_tree, fd, id_base, &m, p, err);
      if (p)
        fclose (p);
      lines_flush (&lb);
      close (fd);
    }
  struct sbx_err e2;
  if (sbx_resume (b->e, b->sandbox, &e2) < 0 && r == 0)
    {
      *err = e2;
      r = -1;
    }
  if (r == 0)
    {
      snprintf (b->cur_tree, sizeof b->cur_tree, "%s", name);
      made_add (b, name);
    }
  return r;
}

/* The shell script of a COPY, run as root in the build's sandbox with
   everything it needs in its environment (nothing is spliced into it). */
static const char copy_script[]
    = "set -e\n"
      /* directories it makes belong to the owner too */
      "mkdirp () { d=\"$1\"; top=; while [ ! -e \"$d\" ]; do top=\"$d\"; d=$(dirname \"$d\"); done\n"
      "  mkdir -p \"$1\"; [ -z \"$top\" ] || [ -z \"$SBXD_OWNER\" ] || chown -R \"$SBXD_OWNER:\" \"$top\"; }\n"
      "t=$(mktemp -d /tmp/.sbxd-copy.XXXXXX)\n"
      "tar -xf \"$SBXD_ARCHIVE\" -C \"$t\" --no-same-owner\n"
      "rm -f \"$SBXD_ARCHIVE\"\n"
      "case \"$SBXD_DEST\" in /*) dest=\"$SBXD_DEST\" ;; *) dest=\"$SBXD_WORKDIR/$SBXD_DEST\" ;; esac\n"
      "cd \"$t\"\n"
      "found=\n"
      "for src in $SBXD_SRC; do\n"
      "  [ -e \"$src\" ] || [ -L \"$src\" ] || continue\n"
      "  found=1\n"
      "  if [ -d \"$src\" ] && [ ! -L \"$src\" ]; then\n"
      "    mkdirp \"$dest\"\n"
      "    (cd \"$src\" && find . -mindepth 1 -maxdepth 1) | while IFS= read -r e; do\n"
      "      rm -rf \"$dest/$e\"; cp -a \"$src/$e\" \"$dest/$e\"\n"
      "      [ -z \"$SBXD_OWNER\" ] || chown -R -h \"$SBXD_OWNER:\" \"$dest/$e\"\n"
      "      [ -z \"$SBXD_MODE\" ] || chmod -R \"$SBXD_MODE\" \"$dest/$e\"\n"
      "    done\n"
      "  else\n"
      "    case \"$SBXD_DEST\" in */) mkdirp \"$dest\"; to=\"$dest/$(basename \"$src\")\" ;;\n"
      "      *) if [ -d \"$dest\" ]; then to=\"$dest/$(basename \"$src\")\"; else mkdirp \"$(dirname \"$dest\")\"; "
      "to=\"$dest\"; fi ;; esac\n"
      "    rm -rf \"$to\"; cp -a \"$src\" \"$to\"\n"
      "    [ -z \"$SBXD_OWNER\" ] || chown -h \"$SBXD_OWNER:\" \"$to\"\n"
      "    [ -z \"$SBXD_MODE\" ] || chmod \"$SBXD_MODE\" \"$to\"\n"
      "  fi\n"
      "done\n"
      "cd /\n"
      "rm -rf \"$t\"\n"
      "[ -n \"$found\" ] || { echo \"COPY: nothing in the upload matches $SBXD_SRC\" >&2; exit 1; }\n";

static int
put_archive (struct build *b, const char *hash, const char *dest, struct sbx_err *err)
{
  char path[PATH_MAX];
  if (file_path (b->job->org_id, hash, path, sizeof path, err) < 0)
    return -1;
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return sbx_fail (err, errno, "the files of a COPY step (hash %s) were not uploaded", hash);
  struct sbx_file_writer *w;
  if (sbx_file_writer_open (b->e, b->sandbox, dest, "root", 0, 0600, &w, err) < 0)
    return -1;
  char buf[1 << 16];
  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          sbx_file_writer_abort (w);
          return sbx_fail (err, errno, "read %s", path);
        }
      if (n == 0)
        break;
      if (sbx_file_writer_push (w, buf, (size_t) n, err) < 0)
        {
          sbx_file_writer_abort (w);
          return -1;
        }
    }
  struct sbx_entry en;
  memset (&en, 0, sizeof en);
  if (sbx_file_writer_finish (w, &en, err) < 0)
    return -1;
  sbx_entry_free (&en);
  return 0;
}

static int
step_exec (struct build *b, const struct sbx_build_step *s, struct sbx_err *err)
{
  int code = 0;
  struct line_buf out = { .log = &b->log, .level = "info" };
  const char *const *env = (const char *const *) b->st.env;
  switch (s->kind)
    {
    case SBX_STEP_RUN:
      {
        const char *user = s->n_args > 1 && s->args[1][0] ? s->args[1] : b->st.user;
        if (run_sh (b->e, b->sandbox, s->args[0], user, b->st.workdir, env, remaining_ms (b), &out, &code, err) < 0)
          return -1;
        break;
      }
    case SBX_STEP_WORKDIR:
      {
        char *cmd = NULL;
        const char *senv[] = { NULL, NULL, NULL };
        if (asprintf (&cmd, "SBXD_DIR=%s", b->st.workdir) < 0)
          return sbx_fail (err, ENOMEM, "step");
        char *owner = NULL;
        if (asprintf (&owner, "SBXD_OWNER=%s", strcmp (b->st.user, "root") == 0 ? "" : b->st.user) < 0)
          {
            free (cmd);
            return sbx_fail (err, ENOMEM, "step");
          }
        senv[0] = cmd;
        senv[1] = owner;
        int r = run_sh (b->e, b->sandbox,
                        "[ -d \"$SBXD_DIR\" ] || { mkdir -p \"$SBXD_DIR\"; [ -z \"$SBXD_OWNER\" ] || chown "
                        "\"$SBXD_OWNER:\" \"$SBXD_DIR\"; }",
                        "root", "/", senv, remaining_ms (b), &out, &code, err);
        free (cmd);
        free (owner);
        if (r < 0)
          return -1;
        break;
      }
    case SBX_STEP_COPY:
      {
        char archive[64];
        snprintf (archive, sizeof archive, "/tmp/.sbxd-copy-%.16s.tar", s->files_hash);
        if (put_archive (b, s->files_hash, archive, err) < 0)
          return -1;
        const char *owner = s->n_args > 2 && s->args[2][0] ? s->args[2] : b->st.user;
        char *senv[7] = { NULL };
        int n = 0;
        if (asprintf (&senv[n++], "SBXD_ARCHIVE=%s", archive) < 0
            || asprintf (&senv[n++], "SBXD_SRC=%s", s->args[0]) < 0
            || asprintf (&senv[n++], "SBXD_DEST=%s", s->args[1]) < 0
            || asprintf (&senv[n++], "SBXD_WORKDIR=%s", b->st.workdir) < 0
            || asprintf (&senv[n++], "SBXD_OWNER=%s", strcmp (owner, "root") == 0 ? "" : owner) < 0
            || asprintf (&senv[n++], "SBXD_MODE=%s", s->n_args > 3 ? s->args[3] : "") < 0)
          {
            for (int i = 0; i < 7; i++)
              free (senv[i]);
            return sbx_fail (err, ENOMEM, "step");
          }
        int r = run_sh (b->e, b->sandbox, copy_script, "root", "/", (const char *const *) senv, remaining_ms (b),
                        &out, &code, err);
        for (int i = 0; i < 7; i++)
          free (senv[i]);
        if (r < 0)
          return -1;
        break;
      }
    default:
      return 0;
    }
  if (code == -2)
    return sbx_failk (err, SBX_E_LIMIT, "the build ran out of time (%u minutes)", SBX_BUILD_MS / 60000);
  if (code != 0)
    return sbx_failk (err, SBX_E_INVALID, "the %s step failed with exit code %d", step_names[s->kind], code);
  return 0;
}

/* Debian suites fromImage may name ("debian:SUITE", "debian:VERSION"). */
static const char *
debian_suite (const char *image)
{
  static const struct {
    const char *tag, *suite;
  } map[] = { { "", "stable" },          { "latest", "stable" },     { "stable", "stable" },
              { "testing", "testing" },  { "unstable", "unstable" }, { "sid", "unstable" },
              { "oldstable", "oldstable" }, { "bullseye", "bullseye" }, { "11", "bullseye" },
              { "bookworm", "bookworm" }, { "12", "bookworm" },     { "trixie", "trixie" },
              { "13", "trixie" },        { "bookworm-slim", "bookworm" }, { "trixie-slim", "trixie" },
              { "stable-slim", "stable" } };
  const char *tag;
  if (strcmp (image, "debian") == 0)
    tag = "";
  else if (strncmp (image, "debian:", 7) == 0)
    tag = image + 7;
  else if (strncmp (image, "docker.io/library/debian:", 25) == 0)
    tag = image + 25;
  else
    return NULL;
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (strcmp (tag, map[i].tag) == 0)
      return map[i].suite;
  return NULL;
}

/* The tree a build starts from: *TREE, or an image to build first
   (*SUITE). */
static int
base_of (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_build_spec *spec, char tree[64],
         const char **suite, struct sbx_err *err)
{
  *suite = NULL;
  if (spec->from_image)
    {
      /* the SDK's default base image is E2B's own: the `base` template here */
      if (strcmp (spec->from_image, "e2bdev/base") == 0 || strcmp (spec->from_image, "e2bdev/base:latest") == 0)
        {
          snprintf (tree, 64, "base");
          return 0;
        }
      *suite = debian_suite (spec->from_image);
      if (*suite == NULL)
        return sbx_failk (err, SBX_E_INVALID,
                          "fromImage '%s' cannot be pulled here: sbxd builds images from Debian suites only "
                          "(debian:bookworm, debian:trixie, debian:stable, ...) and from templates (fromTemplate)",
                          spec->from_image);
      snprintf (tree, 64, SBX_IMAGE_PREFIX "debian-%s", *suite);
      return 0;
    }
  const char *name = spec->from_template ? spec->from_template : "base";
  char layer[64];
  int r = sbx_builds_resolve (svc, org, name, layer, sizeof layer, err);
  if (r < 0)
    return -1;
  if (r > 0)
    {
      snprintf (tree, 64, "%s", layer);
      return 0;
    }
  if (!sbx_service_template_shipped (svc, name))
    return sbx_failk (err, SBX_E_INVALID, "fromTemplate: unknown template '%s'", name);
  snprintf (tree, 64, "%s", name);
  return 0;
}

static void
record (struct build *b, const char *status, const char *tree, const char *reason, const char *step)
{
  struct sbx_build_rec r;
  struct sbx_err err;
  if (sbx_store_build_get (store (b->svc), b->job->build_id, &r, &err) < 0)
    return;
  snprintf (r.status, sizeof r.status, "%s", status);
  if (tree)
    snprintf (r.tree, sizeof r.tree, "%s", tree);
  if (reason)
    {
      free (r.reason);
      r.reason = strdup (reason);
    }
  snprintf (r.step, sizeof r.step, "%s", step ? step : "");
  r.updated_ms = sbx_wall_ms ();
  if (strcmp (status, "ready") == 0 || strcmp (status, "error") == 0)
    r.finished_ms = r.updated_ms;
  if (b->made)
    {
      free (r.layers);
      r.layers = strdup (b->made);
    }
  if (sbx_store_build_put (store (b->svc), &r, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "cannot record a build", "build", r.id, "error", err.msg, NULL);
  if (strcmp (status, "ready") == 0)
    {
      /* its tags, and the template's count */
      json_t *tags = r.tags_json ? json_loads (r.tags_json, 0, NULL) : NULL;
      size_t i;
      json_t *v;
      json_array_foreach (tags, i, v)
      {
        if (json_is_string (v) && sbx_store_tag_set (store (b->svc), r.template_id, json_string_value (v), r.id,
                                                     sbx_wall_ms (), &err) < 0)
          sbx_log_fields (SBX_LOG_ERROR, "cannot tag a build", "build", r.id, "error", err.msg, NULL);
      }
      json_decref (tags);
      struct sbx_tmpl_rec t;
      if (sbx_store_tmpl_get (store (b->svc), r.org_id, r.template_id, &t, &err) == 0)
        {
          t.build_count++;
          t.updated_ms = sbx_wall_ms ();
          sbx_store_tmpl_put (store (b->svc), &t, &err);
        }
    }
  sbx_build_rec_free (&r);
}

static const char *
step_label (size_t i, char buf[16])
{
  snprintf (buf, 16, "%u", (unsigned) (i % SBX_BUILD_STEPS_MAX) + 1);
  return buf;
}

static void
describe (const struct sbx_build_step *s, char *out, size_t n)
{
  size_t w = (size_t) snprintf (out, n, "%s", step_names[s->kind]);
  for (size_t i = 0; i < s->n_args && w < n; i++)
    if (s->args[i][0])
      w += (size_t) snprintf (out + w, n - w, " %s", s->args[i]);
  if (w >= n && n > 4)
    strcpy (out + n - 4, "...");
}

static int
run_build (struct build *b, struct sbx_err *err)
{
  struct job *j = b->job;
  struct sbx_org org;
  memset (&org, 0, sizeof org);
  snprintf (org.id, sizeof org.id, "%s", j->org_id);
  const char *suite = NULL;
  snprintf (b->log.step, sizeof b->log.step, "base");
  if (base_of (b->svc, &org, &j->spec, b->cur_tree, &suite, err) < 0)
    return -1;
  if (suite)
    {
      if (!sbx_template_exists (B.tmpl_dir, b->cur_tree))
        blog_add (&b->log, "info", "building Debian %s with mmdebstrap (once per machine)", suite);
      struct line_buf lb = { .log = &b->log, .level = "info" };
      FILE *p = progress_open (&lb);
      int r = sbx_template_build_suite (B.tmpl_dir, b->cur_tree, suite, p, err);
      if (p)
        fclose (p);
      lines_flush (&lb);
      if (r < 0)
        return -1;
    }
  /* what the base gives: its user, workdir, environment and size */
  struct sbx_template t;
  if (sbx_template_load (B.tmpl_dir, b->cur_tree, &t, err) < 0)
    return -1;
  snprintf (b->st.user, sizeof b->st.user, "%s", t.user);
  snprintf (b->st.workdir, sizeof b->st.workdir, "%s", t.workdir);
  int bad = 0;
  for (char **e = t.env; e && *e; e++)
    {
      char *eq = strchr (*e, '=');
      *eq = '\0';
      bad |= state_set_env (&b->st, *e, eq + 1);
      *eq = '=';
    }
  if (j->cpu_count == 0)
    j->cpu_count = t.cpu_count;
  if (j->memory_mb == 0)
    j->memory_mb = t.memory_mb;
  b->disk_mb = t.disk_mb;
  sbx_template_free (&t);
  if (bad)
    return sbx_fail (err, ENOMEM, "environment");
  char ident[256], key[65];
  if (sbx_template_identity (B.tmpl_dir, b->cur_tree, ident, sizeof ident, err) < 0)
    return -1;
  struct hasher h;
  if (hash_begin (&h, j->org_id, err) < 0)
    return -1;
  hash_part (&h, ident);
  hash_end (&h, key);
  blog_add (&b->log, "info", "FROM %s", j->spec.from_image ? j->spec.from_image
                                                             : (j->spec.from_template ? j->spec.from_template
                                                                                      : "base"));

  bool rebuilding = j->spec.force;
  size_t n = j->spec.n_steps;
  for (size_t i = 0; i < n; i++)
    {
      const struct sbx_build_step *s = &j->spec.steps[i];
      char label[16], what[512];
      step_label (i, label);
      snprintf (b->log.step, sizeof b->log.step, "%s", label);
      describe (s, what, sizeof what);
      if (hash_begin (&h, key, err) < 0)
        return -1;
      hash_part (&h, step_names[s->kind]);
      for (size_t a = 0; a < s->n_args; a++)
        hash_part (&h, s->args[a]);
      hash_part (&h, s->files_hash);
      hash_end (&h, key);
      rebuilding = rebuilding || s->force;

      if (s->kind == SBX_STEP_ENV)
        {
          for (size_t a = 0; a + 1 < s->n_args; a += 2)
            if (state_set_env (&b->st, s->args[a], s->args[a + 1]) < 0)
              return sbx_fail (err, ENOMEM, "environment");
          blog_add (&b->log, "info", "[%zu/%zu] %s", i + 1, n, what);
          continue;
        }
      if (s->kind == SBX_STEP_USER)
        {
          snprintf (b->st.user, sizeof b->st.user, "%s", s->args[0]);
          blog_add (&b->log, "info", "[%zu/%zu] %s", i + 1, n, what);
          continue;
        }
      if (s->kind == SBX_STEP_WORKDIR)
        {
          char wd[sizeof b->st.workdir];
          int w = s->args[0][0] == '/' ? snprintf (wd, sizeof wd, "%s", s->args[0])
                                       : snprintf (wd, sizeof wd, "%s/%s",
                                                   strcmp (b->st.workdir, "/") == 0 ? "" : b->st.workdir, s->args[0]);
          if (w < 0 || (size_t) w >= sizeof wd)
            return sbx_failk (err, SBX_E_INVALID, "WORKDIR: path too long");
          memcpy (b->st.workdir, wd, sizeof wd);
        }
      char name[64];
      layer_name (key, name);
      if (!rebuilding && sbx_template_exists (B.tmpl_dir, name))
        {
          blog_add (&b->log, "info", "CACHED [%zu/%zu] %s", i + 1, n, what);
          snprintf (b->cur_tree, sizeof b->cur_tree, "%s", name);
          continue;
        }
      rebuilding = true;
      blog_add (&b->log, "info", "[%zu/%zu] %s", i + 1, n, what);
      uint64_t t0 = sbx_now_ns ();
      if (ensure_sandbox (b, err) < 0 || step_exec (b, s, err) < 0 || commit (b, name, err) < 0)
        return -1;
      blog_add (&b->log, "info", "done in %.1f s", (double) (sbx_now_ns () - t0) / 1e9);
    }

  /* the template itself: the last layer with the build's settings */
  snprintf (b->log.step, sizeof b->log.step, "finalize");
  if (hash_begin (&h, key, err) < 0)
    return -1;
  hash_part (&h, "final");
  hash_part (&h, b->st.user);
  hash_part (&h, b->st.workdir);
  for (size_t i = 0; i < b->st.n_env; i++)
    hash_part (&h, b->st.env[i]);
  hash_part (&h, j->spec.start_cmd);
  hash_part (&h, j->spec.ready_cmd);
  char size[64];
  snprintf (size, sizeof size, "%u %u %u", j->cpu_count, j->memory_mb, b->disk_mb);
  hash_part (&h, size);
  hash_end (&h, key);
  char final[64];
  layer_name (key, final);
  if (rebuilding || !sbx_template_exists (B.tmpl_dir, final))
    {
      struct sbx_layer_meta m;
      layer_meta (b, &m);
      m.start_cmd = j->spec.start_cmd;
      m.ready_cmd = j->spec.ready_cmd;
      const char *from = b->cur_tree;
      char built[64];
      snprintf (built, sizeof built, "%s", from);
      if (sbx_layer_commit (B.tmpl_dir, final, built, -1, 0, &m, NULL, err) < 0)
        return -1;
      made_add (b, final);
    }
  else
    blog_add (&b->log, "info", "CACHED template");
  if (j->spec.start_cmd && *j->spec.start_cmd)
    {
      /* checked now, as every sandbox of it will be */
      char id[SBX_ID_MAX];
      struct sbx_create_opts o = { .template_name = final, .timeout_s = SBX_BUILD_READY_MS / 1000 + 60 };
      if (sbx_create (b->e, &o, id, err) < 0)
        return sbx_err_wrap (err, "start a sandbox of the template");
      int r = start_and_wait (b->e, id, j->spec.start_cmd, j->spec.ready_cmd, &b->log, err);
      struct sbx_err e2;
      sbx_destroy (b->e, id, &e2);
      if (r < 0)
        return -1;
    }
  snprintf (b->cur_tree, sizeof b->cur_tree, "%s", final);
  return 0;
}

static void
build_one (struct job *j)
{
  struct build b;
  memset (&b, 0, sizeof b);
  b.job = j;
  b.svc = B.svc;
  b.e = sbx_service_engine (B.svc);
  b.deadline_ns = sbx_now_ns () + (uint64_t) SBX_BUILD_MS * 1000000u;
  char path[PATH_MAX];
  if (sbx_path (path, sizeof path, "%s/builds/%s.log", B.state_dir, j->build_id) == 0)
    b.log.f = fopen (path, "ae");
  int64_t t0 = sbx_wall_ms ();
  record (&b, "building", NULL, NULL, NULL);
  blog_add (&b.log, "info", "Building template %s (build %s)", j->name, j->build_id);
  struct sbx_err err;
  memset (&err, 0, sizeof err);
  int r = run_build (&b, &err);
  if (b.sandbox[0])
    {
      struct sbx_err e2;
      sbx_destroy (b.e, b.sandbox, &e2);
    }
  if (r == 0)
    {
      snprintf (b.log.step, sizeof b.log.step, "finalize");
      blog_add (&b.log, "info", "Build finished in %.1f s", (double) (sbx_wall_ms () - t0) / 1000.0);
      record (&b, "ready", b.cur_tree, NULL, NULL);
    }
  else
    {
      blog_add (&b.log, "error", "Build failed: %s", err.msg);
      record (&b, "error", NULL, err.msg, b.log.step);
    }
  sbx_log_fields (r == 0 ? SBX_LOG_INFO : SBX_LOG_WARN, "template build", "build", j->build_id, "template",
                  j->template_id, "status", r == 0 ? "ready" : "error", "error", r == 0 ? NULL : err.msg, NULL);
  state_free (&b.st);
  free (b.made);
  if (b.log.f)
    fclose (b.log.f);
}

static void *
worker (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-build");
  (void) arg;
  pthread_mutex_lock (&B.lock);
  for (;;)
    {
      while (B.head == NULL && !B.stopping)
        pthread_cond_wait (&B.cond, &B.lock);
      if (B.stopping)
        break;
      struct job *j = B.head;
      B.head = j->next;
      if (B.head == NULL)
        B.tail = &B.head;
      B.queued--;
      pthread_mutex_unlock (&B.lock);
      build_one (j);
      sbx_build_spec_free (&j->spec);
      free (j);
      pthread_mutex_lock (&B.lock);
    }
  pthread_mutex_unlock (&B.lock);
  return NULL;
}

int
sbx_builds_start (struct sbx_service *svc, const char *state_dir, const char *tmpl_dir, uint32_t workers,
                  struct sbx_err *err)
{
  B.svc = svc;
  snprintf (B.state_dir, sizeof B.state_dir, "%s", state_dir);
  if (tmpl_dir)
    snprintf (B.tmpl_dir, sizeof B.tmpl_dir, "%s", tmpl_dir);
  else
    sbx_template_dir (B.tmpl_dir, sizeof B.tmpl_dir);
  char dir[PATH_MAX];
  if (sbx_path (dir, sizeof dir, "%s/builds", state_dir) < 0 || sbx_mkdir_p (dir, 0700, err) < 0)
    return -1;
  int n = sbx_store_build_fail_unfinished (sbx_service_store (svc), "the daemon stopped during the build",
                                           sbx_wall_ms (), err);
  if (n < 0)
    return -1;
  if (n > 0)
    sbx_log_fields (SBX_LOG_WARN, "template builds the last daemon left unfinished are recorded failed", NULL);
  B.tail = &B.head;
  B.n_threads = workers ? workers : SBX_BUILD_WORKERS;
  B.threads = calloc (B.n_threads, sizeof *B.threads);
  if (B.threads == NULL)
    return sbx_fail (err, ENOMEM, "build workers");
  for (uint32_t i = 0; i < B.n_threads; i++)
    if (pthread_create (&B.threads[i], NULL, worker, NULL) != 0)
      {
        B.n_threads = i;
        return sbx_fail (err, errno, "start a build worker");
      }
  B.started = true;
  return 0;
}

void
sbx_builds_stop (void)
{
  if (!B.started)
    return;
  pthread_mutex_lock (&B.lock);
  B.stopping = true;
  pthread_cond_broadcast (&B.cond);
  pthread_mutex_unlock (&B.lock);
  /* a running build is not waited for: it may take many minutes; its
     record says "building" until the next start fails it */
  for (uint32_t i = 0; i < B.n_threads; i++)
    pthread_detach (B.threads[i]);
  B.started = false;
}

int
sbx_service_build_begin (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                         const char *build_id, struct sbx_build_spec *spec, struct sbx_err *err)
{
  struct job *j = NULL;
  struct sbx_build_rec b;
  struct sbx_tmpl_rec t;
  memset (&b, 0, sizeof b);
  int ret = -1;
  if (!B.started)
    {
      sbx_failk (err, SBX_E_UNAVAILABLE, "template builds are not available");
      goto out;
    }
  if (sbx_service_build_get (svc, org, template_id, build_id, &b, err) < 0
      || sbx_store_tmpl_get (store (svc), org->id, b.template_id, &t, err) < 0)
    goto out;
  if (strcmp (b.status, "waiting") != 0 || b.updated_ms != b.created_ms)
    {
      sbx_failk (err, SBX_E_CONFLICT, "build %s was started already", build_id);
      goto out;
    }
  /* everything that can be checked now fails the request, not the build */
  if (spec->n_steps > SBX_BUILD_STEPS_MAX)
    {
      sbx_failk (err, SBX_E_INVALID, "at most %u steps", SBX_BUILD_STEPS_MAX);
      goto out;
    }
  char tree[64];
  const char *suite;
  if (base_of (svc, org, spec, tree, &suite, err) < 0)
    goto out;
  for (size_t i = 0; i < spec->n_steps; i++)
    {
      const struct sbx_build_step *s = &spec->steps[i];
      size_t need = s->kind == SBX_STEP_COPY ? 2 : 1;
      if (s->n_args < need || s->n_args > SBX_BUILD_ARGS_MAX || (s->kind == SBX_STEP_ENV && s->n_args % 2))
        {
          sbx_failk (err, SBX_E_INVALID, "step %zu (%s): wrong number of arguments", i + 1, step_names[s->kind]);
          goto out;
        }
      if ((s->kind == SBX_STEP_RUN || s->kind == SBX_STEP_WORKDIR || s->kind == SBX_STEP_USER
           || s->kind == SBX_STEP_COPY)
          && s->args[0][0] == '\0')
        {
          sbx_failk (err, SBX_E_INVALID, "step %zu (%s): empty argument", i + 1, step_names[s->kind]);
          goto out;
        }
      if (s->kind == SBX_STEP_ENV)
        for (size_t a = 0; a < s->n_args; a += 2)
          {
            const char *k = s->args[a];
            bool ok = k[0] && !(k[0] >= '0' && k[0] <= '9');
            for (const char *p = k; ok && *p; p++)
              ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_';
            if (!ok)
              {
                sbx_failk (err, SBX_E_INVALID, "step %zu (ENV): invalid variable name '%s'", i + 1, k);
                goto out;
              }
          }
      if (s->kind == SBX_STEP_USER && !valid_word (s->args[0]))
        {
          sbx_failk (err, SBX_E_INVALID, "step %zu (USER): invalid user '%s'", i + 1, s->args[0]);
          goto out;
        }
      if (s->kind == SBX_STEP_COPY)
        {
          bool present = false;
          char path[PATH_MAX];
          if (!valid_hash (s->files_hash))
            {
              sbx_failk (err, SBX_E_INVALID, "step %zu (COPY): filesHash must be 64 hex digits", i + 1);
              goto out;
            }
          if (file_path (org->id, s->files_hash, path, sizeof path, err) < 0)
            goto out;
          present = access (path, F_OK) == 0;
          if (!present)
            {
              sbx_failk (err, SBX_E_INVALID, "step %zu (COPY %s): its files were not uploaded", i + 1, s->args[0]);
              goto out;
            }
        }
    }
  j = calloc (1, sizeof *j);
  if (j == NULL)
    {
      sbx_fail (err, ENOMEM, "build");
      goto out;
    }
  snprintf (j->org_id, sizeof j->org_id, "%s", org->id);
  snprintf (j->template_id, sizeof j->template_id, "%s", t.id);
  snprintf (j->build_id, sizeof j->build_id, "%s", b.id);
  snprintf (j->name, sizeof j->name, "%s", t.name);
  j->cpu_count = b.cpu_count;
  j->memory_mb = b.memory_mb;
  j->spec = *spec;
  memset (spec, 0, sizeof *spec);
  /* started: a second POST is a conflict */
  b.updated_ms = b.created_ms + 1;
  if (sbx_store_build_put (store (svc), &b, err) < 0)
    goto out;
  pthread_mutex_lock (&B.lock);
  if (B.queued >= SBX_BUILD_QUEUE_MAX)
    {
      pthread_mutex_unlock (&B.lock);
      sbx_failk (err, SBX_E_LIMIT, "too many builds waiting (%u); try again later", SBX_BUILD_QUEUE_MAX);
      snprintf (b.status, sizeof b.status, "error");
      free (b.reason);
      b.reason = strdup (err->msg);
      struct sbx_err e2;
      sbx_store_build_put (store (svc), &b, &e2);
      goto out;
    }
  *B.tail = j;
  B.tail = &j->next;
  B.queued++;
  j = NULL;
  pthread_cond_signal (&B.cond);
  pthread_mutex_unlock (&B.lock);
  ret = 0;

out:
  if (j)
    {
      sbx_build_spec_free (&j->spec);
      free (j);
    }
  sbx_build_spec_free (spec);
  sbx_build_rec_free (&b);
  return ret;
}
