/*
 * files.c - moving whole files in and out of a sandbox:
 *
 *   POST /sandboxes/:id/files   multipart/form-data with a field `file`
 *                               and a form field `path` (seed 000): the
 *                               upload is streamed into the sandbox as it
 *                               arrives, up to the organisation's limit
 *                               (100 MB by default, then 413)
 *   GET  /sandboxes/:id/files?path=P   the raw bytes, streamed (seed 003;
 *                               no 1 MB limit)
 *
 * Everything that talks to the sandbox (opening the destination, each
 * piece, the end) runs on a handler thread (server.c hands the body over
 * in pieces), never on libmicrohttpd's threads.
 *
 * libmicrohttpd's post processor parses the multipart body.  When the
 * `path` field comes before the file (as most clients send it) the bytes
 * go straight to the sandbox; when it comes after, they are spooled to an
 * unlinked temporary file in the state directory first.  Either way the
 * sandbox's file is replaced atomically only when the upload is complete.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "../common/util.h"
#include "../service/encode.h"
#include "api.h"

struct upload {
  struct http_server *h;
  char id[SBX_ID_MAX];
  struct MHD_PostProcessor *pp;
  char path[4096];
  size_t path_len;
  bool path_done;           /* the path field has ended (the file began) */
  char filename[256];
  char user[64];
  struct sbx_file_writer *w;
  int spool;                /* temporary file when the path came late */
  uint64_t bytes, max;
  uint64_t part_bytes;      /* of the file part being written */
  bool raw;                 /* an application/octet-stream body */
  bool envd;                /* E2B's envd (or a signed URL): its shapes */
  json_t *written;          /* the entries of the files written so far */
  json_t *paths;            /* the paths asked for so far (envd) */
  struct sbx_meta meta[SBX_META_MAX]; /* X-Metadata-* headers (envd) */
  size_t n_meta;
  z_stream *gz;             /* Content-Encoding: gzip */
  bool gz_end;              /* the last gzip member ended */
  uint64_t inflated;        /* bytes that came out of it */
  unsigned status;          /* an error to answer at the end, or 0 */
  char msg[600];
};

bool
envd_upload_wanted (struct MHD_Connection *c, const char *method, const char *url)
{
  (void) c;
  return strcmp (method, "POST") == 0 && strcmp (url, "/files") == 0;
}

bool
upload_wanted (const char *method, char **seg, int n)
{
  return strcmp (method, "POST") == 0 && n == 3 && strcmp (seg[0], "sandboxes") == 0 && strcmp (seg[2], "files") == 0;
}

static int
fail (struct upload *u, unsigned status, const char *msg)
{
  if (u->status == 0)
    {
      u->status = status;
      snprintf (u->msg, sizeof u->msg, "%s", msg);
    }
  return -1;
}

static int
open_writer (struct upload *u)
{
  struct sbx_err err;
  const char *path = u->path_len ? u->path : u->filename;
  if (*path == '\0')
    return fail (u, 400, "path is required");
  if (u->envd)
    {
      /* as E2B's envd: one file per path in one upload */
      size_t i;
      json_t *p;
      json_array_foreach (u->paths, i, p)
        if (strcmp (json_string_value (p), path) == 0)
          {
            char m[sizeof u->msg];
            snprintf (m, sizeof m,
                      "you cannot upload multiple files to the same path '%.400s' in one upload request, only the "
                      "first specified file was uploaded",
                      path);
            return fail (u, 400, m);
          }
      json_array_append_new (u->paths, json_string (path));
    }
  u->part_bytes = 0;
  if (sbx_file_writer_open_meta (u->h->engine, u->id, path, *u->user ? u->user : NULL, SBX_FILE_F_PARENTS, u->meta,
                                 u->n_meta, &u->w, &err)
      < 0)
    return fail (u, current_dialect ()->status[sbx_err_kind (&err)], err.msg);
  return 0;
}

/* The answer's entry of a file written: E2B's envd answers with its name,
   path and type only (and its metadata, when it has some). */
static json_t *
written_json (const struct upload *u, const struct sbx_entry *en)
{
  if (!u->envd)
    return entry_json (en);
  json_t *j = json_pack ("{s:o, s:o, s:s}", "name", text_json (en->name, strlen (en->name)), "path",
                         text_json (en->path, strlen (en->path)), "type", "file");
  if (en->n_meta)
    {
      json_t *meta = json_object ();
      for (size_t i = 0; i < en->n_meta; i++)
        json_object_set_new (meta, en->meta[i].key, text_json (en->meta[i].value, strlen (en->meta[i].value)));
      json_object_set_new (j, "metadata", meta);
    }
  return j;
}

/* The file being written is complete: replace the sandbox's file and keep
   its entry for the answer. */
static int
finish_writer (struct upload *u)
{
  struct sbx_entry en;
  struct sbx_err err;
  int r = sbx_file_writer_finish (u->w, &en, &err);
  u->w = NULL;
  if (r < 0)
    return fail (u, current_dialect ()->status[sbx_err_kind (&err)], err.msg);
  json_array_append_new (u->written, written_json (u, &en));
  sbx_entry_free (&en);
  return 0;
}

static int
push (struct upload *u, const char *data, size_t size)
{
  u->bytes += size;
  u->part_bytes += size;
  if (u->bytes > u->max)
    {
      char m[128];
      snprintf (m, sizeof m, "upload too large (max %llu bytes%s)", (unsigned long long) u->max,
                u->gz ? " once decompressed" : "");
      return fail (u, 413, m);
    }
  if (size == 0)
    return 0;
  if (u->raw && u->w == NULL && open_writer (u) < 0)
    return -1;
  if (u->w)
    {
      struct sbx_err err;
      if (sbx_file_writer_push (u->w, data, size, &err) < 0)
        return fail (u, current_dialect ()->status[sbx_err_kind (&err)], err.msg);
      return 0;
    }
  if (sbx_write_full (u->spool, data, size) < 0)
    return fail (u, 500, "spool upload");
  return 0;
}

static enum MHD_Result
on_field (void *cls, enum MHD_ValueKind kind, const char *key, const char *filename, const char *content_type,
          const char *transfer_encoding, const char *data, uint64_t off, size_t size)
{
  (void) kind;
  (void) content_type;
  (void) transfer_encoding;
  struct upload *u = cls;
  if (u->status)
    return MHD_NO;
  if (key == NULL)
    return fail (u, 400, "malformed multipart body: a part has no name (Content-Disposition: form-data; name=...)"),
           MHD_NO;
  if (strcmp (key, "path") == 0 && filename == NULL)
    {
      /* a path after the file is fine while the file is spooled; once
         bytes went to a destination, another path cannot change it */
      if ((u->path_done && (u->w != NULL || json_array_size (u->written))) || u->path_len + size >= sizeof u->path)
        return fail (u, 400, "invalid path field"), MHD_NO;
      memcpy (u->path + u->path_len, data, size);
      u->path_len += size;
      u->path[u->path_len] = '\0';
      return MHD_YES;
    }
  if (strcmp (key, "user") == 0 && filename == NULL)
    {
      snprintf (u->user, sizeof u->user, "%.*s", (int) size, data);
      return MHD_YES;
    }
  if (strcmp (key, "file") != 0)
    return MHD_YES; /* other fields are ignored */
  /* A part starts at offset 0: a file part after one already begun is
     another file (E2B's files.write([...]) sends one part per file, each
     named by its filename).  The first call of a part may carry no bytes,
     so only a part that got bytes, or whose filename differs, has ended. */
  bool begun = u->w != NULL || u->spool >= 0;
  if (begun && off == 0 && (u->part_bytes > 0 || strcmp (u->filename, filename ? filename : "") != 0))
    {
      /* (envd's open_writer refuses one path for several files in E2B's words) */
      if (u->spool >= 0 || (u->path_len && !u->envd))
        return fail (u, 400, "with several files, each is named by its filename, not a path field"), MHD_NO;
      if (finish_writer (u) < 0)
        return MHD_NO;
      begun = false;
    }
  if (!begun)
    {
      u->path_done = true;
      snprintf (u->filename, sizeof u->filename, "%s", filename ? filename : "");
      if (u->path_len || (u->envd && *u->filename))
        {
          if (open_writer (u) < 0)
            return MHD_NO;
        }
      else
        {
          /* the path may still come: keep the bytes aside until the end */
          u->spool = open (u->h->state_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
          if (u->spool < 0)
            return fail (u, 500, "cannot spool upload"), MHD_NO;
        }
    }
  return push (u, data, size) < 0 ? MHD_NO : MHD_YES;
}

/* ---- Content-Encoding: gzip ----

   zlib inflates the body as it arrives, before the multipart parser or
   the raw file sees it.  What comes out counts against the upload's limit
   (the file's bytes, plus GZIP_FRAMING for a multipart body's framing),
   so a small body that inflates to gigabytes (a "gzip bomb") fails with
   413 after at most that many bytes, never holding more than one output
   buffer.  Concatenated gzip members are one stream, as Go's reader (and
   so E2B's envd) takes them. */
#define GZIP_FRAMING (1u << 20)
#define GZIP_OUT (64u << 10)

static int
body_bytes (struct upload *u, const char *data, size_t size)
{
  if (u->raw)
    return push (u, data, size);
  if (MHD_post_process (u->pp, data, size) != MHD_YES && u->status == 0)
    fail (u, 400, "malformed multipart body");
  return u->status ? -1 : 0;
}

static int
gunzip_feed (struct upload *u, const char *data, size_t size)
{
  static __thread char out[GZIP_OUT];
  u->gz->next_in = (Bytef *) data;
  u->gz->avail_in = (uInt) size;
  while (u->gz->avail_in > 0 && u->status == 0)
    {
      if (u->gz_end)
        {
          /* another member follows; anything else after the end is not gzip */
          if (inflateReset (u->gz) != Z_OK)
            return fail (u, 500, "gzip: cannot go on");
          u->gz_end = false;
        }
      u->gz->next_out = (Bytef *) out;
      u->gz->avail_out = sizeof out;
      int r = inflate (u->gz, Z_NO_FLUSH);
      size_t got = sizeof out - u->gz->avail_out;
      if (r != Z_OK && r != Z_STREAM_END && !(r == Z_BUF_ERROR && got > 0))
        {
          char m[200];
          snprintf (m, sizeof m, "error decompressing request body: %s",
                    u->gz->msg ? u->gz->msg : "not a gzip stream");
          return fail (u, 400, m);
        }
      u->inflated += got;
      if (u->inflated > u->max + GZIP_FRAMING)
        {
          char m[160];
          snprintf (m, sizeof m, "upload too large (max %llu bytes once decompressed)", (unsigned long long) u->max);
          return fail (u, 413, m);
        }
      if (got && body_bytes (u, out, got) < 0)
        return -1;
      if (r == Z_STREAM_END)
        u->gz_end = true;
    }
  return u->status ? -1 : 0;
}

/* The Content-Encoding of an upload: 0 none, 1 gzip, -1 not supported. */
static int
content_encoding (struct MHD_Connection *c)
{
  const char *ce = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Encoding");
  if (ce == NULL)
    return 0;
  while (*ce == ' ' || *ce == '\t')
    ce++;
  size_t n = strcspn (ce, " \t;,");
  if (n == 0 || (n == 8 && strncasecmp (ce, "identity", 8) == 0))
    return 0;
  if ((n == 4 && strncasecmp (ce, "gzip", 4) == 0) || (n == 6 && strncasecmp (ce, "x-gzip", 6) == 0))
    return ce[n] == '\0' || ce[n] == ';' || ce[n] == ' ' ? 1 : -1;
  return -1;
}

/* ---- X-Metadata-* (E2B's file metadata) ---- */

struct meta_acc {
  struct upload *u;
  const char *bad; /* why a header was refused */
  char why[400];
};

static enum MHD_Result
collect_meta (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  (void) kind;
  struct meta_acc *a = cls;
  static const char prefix[] = "X-Metadata-";
  if (key == NULL || strncasecmp (key, prefix, sizeof prefix - 1) != 0)
    return MHD_YES;
  const char *k = key + sizeof prefix - 1;
  if (*k == '\0')
    return MHD_YES; /* an empty key is dropped, as E2B does */
  struct upload *u = a->u;
  if (value == NULL)
    value = "";
  size_t kl = strlen (k), vl = strlen (value);
  for (size_t i = 0; i < u->n_meta; i++)
    if (strcasecmp (u->meta[i].key, k) == 0)
      return MHD_YES; /* the first of a repeated header */
  if (u->n_meta == SBX_META_MAX)
    snprintf (a->why, sizeof a->why, "invalid metadata: more than %u X-Metadata-* headers", SBX_META_MAX);
  else if (kl > SBX_META_KEY_MAX)
    snprintf (a->why, sizeof a->why, "invalid metadata: metadata key \"%.64s...\" exceeds %u bytes", k,
              SBX_META_KEY_MAX);
  else if (vl > SBX_META_VALUE_MAX)
    snprintf (a->why, sizeof a->why, "invalid metadata: metadata value for key \"%.64s\" exceeds %u bytes", k,
              SBX_META_VALUE_MAX);
  else
    {
      for (size_t i = 0; i < vl; i++)
        if ((unsigned char) value[i] < 0x20 || (unsigned char) value[i] > 0x7e)
          {
            snprintf (a->why, sizeof a->why,
                      "invalid metadata: metadata value for key \"%.64s\" contains non-printable-ASCII byte 0x%02x",
                      k, (unsigned char) value[i]);
            break;
          }
      if (a->why[0] == '\0')
        {
          char *lk = strdup (k), *v = strdup (value);
          if (lk == NULL || v == NULL)
            {
              free (lk);
              free (v);
              snprintf (a->why, sizeof a->why, "out of memory");
            }
          else
            {
              /* header names are case-insensitive: keys are kept lowercased, as E2B keeps them */
              for (char *p = lk; *p; p++)
                *p = (char) (*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
              u->meta[u->n_meta++] = (struct sbx_meta) { lk, v };
            }
        }
    }
  if (a->why[0])
    {
      a->bad = a->why;
      return MHD_NO;
    }
  return MHD_YES;
}

enum MHD_Result
upload_begin (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id)
{
  const char *ct = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Type");
  bool raw = ct && strncasecmp (ct, "application/octet-stream", 24) == 0;
  if (!raw && (ct == NULL || strncasecmp (ct, "multipart/form-data", 19) != 0))
    return send_error (c, 400, "expected multipart/form-data with a file field");
  int encoding = content_encoding (c);
  if (encoding < 0)
    return send_error (c, 400, "unsupported Content-Encoding: %.100s, supported: [gzip]",
                       MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Encoding"));
  const char *cl = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Length");
  /* a body larger than the limit plus room for the form's framing */
  if (cl && strtoull (cl, NULL, 10) > rq->org.max_upload_bytes + (1u << 20))
    return send_error (c, 413, "upload too large (max %llu bytes)", (unsigned long long) rq->org.max_upload_bytes);
  struct upload *u = calloc (1, sizeof *u);
  if (u == NULL)
    return MHD_NO;
  u->h = h;
  u->spool = -1;
  u->max = rq->org.max_upload_bytes;
  u->envd = rq->envd;
  u->written = json_array ();
  u->paths = json_array ();
  snprintf (u->id, sizeof u->id, "%s", id);
  rq->upload = u;
  const char *qpath = query (c, "path");
  if (qpath && *qpath && strlen (qpath) < sizeof u->path)
    u->path_len = (size_t) snprintf (u->path, sizeof u->path, "%s", qpath);
  const char *quser = query (c, "user");
  if (quser == NULL)
    quser = query (c, "username"); /* E2B's envd */
  if (quser)
    snprintf (u->user, sizeof u->user, "%s", quser);
  if (u->envd)
    {
      struct meta_acc a = { .u = u };
      MHD_get_connection_values (c, MHD_HEADER_KIND, collect_meta, &a);
      if (a.bad)
        {
          upload_free (rq);
          return send_error (c, 400, "%s", a.bad);
        }
    }
  if (encoding == 1)
    {
      u->gz = calloc (1, sizeof *u->gz);
      /* 16 + MAX_WBITS: a gzip header and trailer, not zlib's */
      if (u->gz == NULL || inflateInit2 (u->gz, 16 + MAX_WBITS) != Z_OK)
        {
          free (u->gz);
          u->gz = NULL;
          upload_free (rq);
          return send_error (c, 500, "cannot decompress the upload");
        }
    }
  if (raw)
    {
      /* the whole body is the file (E2B's octet-stream upload); the
         destination is opened by the first handler job (upload_feed), as
         this runs on libmicrohttpd's thread, which must not wait on the
         sandbox */
      u->raw = true;
      return MHD_YES;
    }
  u->pp = MHD_create_post_processor (c, 64 * 1024, on_field, u);
  if (u->pp == NULL)
    {
      upload_free (rq);
      return send_error (c, 400, "malformed multipart body");
    }
  return MHD_YES;
}

enum MHD_Result
upload_feed (struct request *rq, const char *data, size_t size)
{
  struct upload *u = rq->upload;
  if (u->status)
    return MHD_YES; /* keep reading; the error is answered at the end */
  if (u->gz)
    gunzip_feed (u, data, size);
  else
    body_bytes (u, data, size);
  return MHD_YES;
}

enum MHD_Result
upload_end (struct http_server *h, struct MHD_Connection *c, struct request *rq)
{
  (void) h;
  struct upload *u = rq->upload;
  struct sbx_err err;
  if (u->status == 0 && u->gz && !u->gz_end)
    fail (u, 400, u->inflated || u->gz->total_in ? "error decompressing request body: unexpected end of the gzip stream"
                                                 : "error decompressing request body: empty gzip stream");
  if (u->status == 0 && u->raw && u->w == NULL && json_array_size (u->written) == 0)
    open_writer (u); /* an empty file */
  if (u->status == 0 && u->w == NULL && u->spool < 0 && json_array_size (u->written) == 0)
    fail (u, 400, "the file field is missing");
  if (u->status == 0 && u->spool >= 0)
    {
      /* the path came after the file: send the spooled bytes now */
      if (open_writer (u) == 0)
        {
          char buf[65536];
          ssize_t n;
          lseek (u->spool, 0, SEEK_SET);
          while (u->status == 0 && (n = read (u->spool, buf, sizeof buf)) > 0)
            if (sbx_file_writer_push (u->w, buf, (size_t) n, &err) < 0)
              fail (u, current_dialect ()->status[sbx_err_kind (&err)], err.msg);
        }
    }
  if (u->status)
    {
      if (u->w)
        sbx_file_writer_abort (u->w);
      u->w = NULL;
      return send_error (c, u->status, "%s", u->msg);
    }
  if (u->w && finish_writer (u) < 0)
    return send_error (c, u->status, "%s", u->msg);
  json_t *arr = u->written;
  u->written = NULL;
  return send_json (c, 200, arr);
}

void
upload_free (struct request *rq)
{
  struct upload *u = rq->upload;
  if (u == NULL)
    return;
  if (u->pp)
    MHD_destroy_post_processor (u->pp);
  if (u->w)
    sbx_file_writer_abort (u->w);
  if (u->spool >= 0)
    close (u->spool);
  if (u->gz)
    {
      inflateEnd (u->gz);
      free (u->gz);
    }
  for (size_t i = 0; i < u->n_meta; i++)
    {
      free (u->meta[i].key);
      free (u->meta[i].value);
    }
  json_decref (u->written);
  json_decref (u->paths);
  free (u);
  rq->upload = NULL;
}

/* ---- download ---- */

int
read_into (const void *d, size_t n, void *ud)
{
  struct read_buf *b = ud;
  char *nb = realloc (b->data, b->len + n + 1);
  if (nb == NULL)
    return -1;
  memcpy (nb + b->len, d, n);
  b->len += n;
  b->data = nb;
  return 0;
}

struct download {
  struct sbx_file_reader *r;
  int fd;
  z_stream *gz; /* Content-Encoding: gzip */
};

/* Compress LEN bytes of DATA to the pipe; FINISH ends the gzip stream. */
static int
gzip_to_pipe (struct download *d, const void *data, size_t len, bool finish)
{
  static __thread unsigned char out[GZIP_OUT];
  d->gz->next_in = (Bytef *) data;
  d->gz->avail_in = (uInt) len;
  int r;
  do
    {
      d->gz->next_out = out;
      d->gz->avail_out = sizeof out;
      r = deflate (d->gz, finish ? Z_FINISH : Z_NO_FLUSH);
      if (r == Z_STREAM_ERROR)
        return -1;
      if (sbx_write_full (d->fd, out, sizeof out - d->gz->avail_out) < 0)
        return -1;
    }
  while (d->gz->avail_out == 0 || (finish && r != Z_STREAM_END));
  return 0;
}

static int
to_pipe (const void *data, size_t len, void *ud)
{
  struct download *d = ud;
  if (d->gz)
    return len ? gzip_to_pipe (d, data, len, false) : 0;
  return sbx_write_full (d->fd, data, len) < 0 ? -1 : 0;
}

static void *
download_main (void *arg)
{
  struct download *d = arg;
  struct sbx_err err;
  /* a failure after the headers went out can only cut the body short
     (a gzip stream then lacks its trailer, which its reader notices) */
  if (sbx_file_reader_stream (d->r, to_pipe, d, &err) == 0 && d->gz)
    gzip_to_pipe (d, "", 0, true);
  close (d->fd);
  if (d->gz)
    {
      deflateEnd (d->gz);
      free (d->gz);
    }
  free (d);
  return NULL;
}

/* Does the request's Accept-Encoding take gzip (with a q-value above 0)? */
static bool
accepts_gzip (struct MHD_Connection *c)
{
  const char *ae = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Accept-Encoding");
  char buf[512];
  if (ae == NULL || strlen (ae) >= sizeof buf)
    return false;
  snprintf (buf, sizeof buf, "%s", ae);
  char *save = NULL;
  for (char *t = strtok_r (buf, ",", &save); t; t = strtok_r (NULL, ",", &save))
    {
      while (*t == ' ' || *t == '\t')
        t++;
      size_t n = strcspn (t, " \t;");
      if (!((n == 4 && strncasecmp (t, "gzip", 4) == 0) || (n == 6 && strncasecmp (t, "x-gzip", 6) == 0)))
        continue;
      const char *q = strstr (t + n, "q=");
      return q == NULL || strtod (q + 2, NULL) > 0;
    }
  return false;
}

static enum MHD_Result start_download (struct MHD_Connection *c, struct sbx_file_reader *r, const char *filename,
                                       uint64_t size, bool gzip);

enum MHD_Result
download_file (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id)
{
  const char *path = query (c, "path");
  const char *user = query (c, "user");
  if (user == NULL)
    user = query (c, "username"); /* E2B's envd */
  if (path == NULL || *path == '\0')
    return send_error (c, 400, "path is required");
  if (strlen (path) >= 4096)
    return send_error (c, 400, "path too long");
  /* the agent answers with the file's entry (or why it cannot be read:
     not found, a directory, not a regular file) before the headers go */
  struct sbx_entry st;
  struct sbx_err err;
  struct sbx_file_reader *r;
  if (sbx_file_reader_open (h->engine, id, path, user, 0, &st, &r, &err) < 0)
    {
      if (err.code == EISDIR)
        return send_error (c, 400, "%s is a directory", path);
      return send_fail (c, &err);
    }
  uint64_t size = st.size;
  char name[256];
  snprintf (name, sizeof name, "%s", st.name ? st.name : "file");
  sbx_entry_free (&st);
  /* E2B's envd compresses when asked to (files.read(..., {gzip: true})) */
  return start_download (c, r, name, size, rq->envd && accepts_gzip (c));
}

enum MHD_Result
send_download (struct MHD_Connection *c, struct sbx_file_reader *r, const char *filename, uint64_t size)
{
  return start_download (c, r, filename, size, false);
}

static enum MHD_Result
start_download (struct MHD_Connection *c, struct sbx_file_reader *r, const char *filename, uint64_t size, bool gzip)
{
  char name[256];
  snprintf (name, sizeof name, "%s", filename && *filename ? filename : "file");
  struct download *d = calloc (1, sizeof *d);
  int fds[2];
  if (d == NULL || pipe2 (fds, O_CLOEXEC) < 0)
    {
      free (d);
      sbx_file_reader_close (r);
      return send_error (c, 500, "cannot start download");
    }
  if (gzip)
    {
      d->gz = calloc (1, sizeof *d->gz);
      /* 16 + MAX_WBITS: a gzip wrapper */
      if (d->gz == NULL || deflateInit2 (d->gz, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY)
                               != Z_OK)
        {
          free (d->gz);
          free (d);
          close (fds[0]);
          close (fds[1]);
          sbx_file_reader_close (r);
          return send_error (c, 500, "cannot start download");
        }
    }
  d->r = r;
  d->fd = fds[1];
  if (!sbx_start_detached (download_main, d))
    {
      close (fds[0]);
      close (fds[1]);
      if (d->gz)
        {
          deflateEnd (d->gz);
          free (d->gz);
        }
      free (d);
      sbx_file_reader_close (r);
      return send_error (c, 500, "cannot start download");
    }
  char disp[320], len[32];
  for (char *p = name; *p; p++)
    if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
      *p = '_';
  snprintf (disp, sizeof disp, "attachment; filename=\"%s\"", name);
  snprintf (len, sizeof len, "%llu", (unsigned long long) size);
  if (gzip)
    return send_pipe (c, fds[0], "application/octet-stream", "Content-Disposition", disp, "X-File-Size", len,
                      "Content-Encoding", "gzip", "Vary", "Accept-Encoding", NULL);
  return send_pipe (c, fds[0], "application/octet-stream", "Content-Disposition", disp, "X-File-Size", len, NULL);
}
