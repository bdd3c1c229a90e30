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

#include "../common/util.h"
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
  bool raw;                 /* an application/octet-stream body */
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
  if (sbx_file_writer_open (u->h->engine, u->id, path, *u->user ? u->user : NULL, SBX_FILE_F_PARENTS, 0, &u->w, &err)
      < 0)
    return fail (u, current_dialect ()->status[sbx_err_kind (&err)], err.msg);
  return 0;
}

static int
push (struct upload *u, const char *data, size_t size)
{
  u->bytes += size;
  if (u->bytes > u->max)
    {
      char m[128];
      snprintf (m, sizeof m, "upload too large (max %llu bytes)", (unsigned long long) u->max);
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
  (void) off;
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
      if ((u->path_done && u->w != NULL) || u->path_len + size >= sizeof u->path)
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
  if (u->w == NULL && u->spool < 0)
    {
      u->path_done = true;
      if (filename)
        snprintf (u->filename, sizeof u->filename, "%s", filename);
      if (u->path_len)
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

enum MHD_Result
upload_begin (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id)
{
  const char *ct = MHD_lookup_connection_value (c, MHD_HEADER_KIND, "Content-Type");
  bool raw = ct && strncasecmp (ct, "application/octet-stream", 24) == 0;
  if (!raw && (ct == NULL || strncasecmp (ct, "multipart/form-data", 19) != 0))
    return send_error (c, 400, "expected multipart/form-data with a file field");
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
  snprintf (u->id, sizeof u->id, "%s", id);
  const char *qpath = query (c, "path");
  if (qpath && *qpath && strlen (qpath) < sizeof u->path)
    u->path_len = (size_t) snprintf (u->path, sizeof u->path, "%s", qpath);
  const char *quser = query (c, "user");
  if (quser == NULL)
    quser = query (c, "username"); /* E2B's envd */
  if (quser)
    snprintf (u->user, sizeof u->user, "%s", quser);
  rq->upload = u;
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
      rq->upload = NULL;
      free (u);
      return send_error (c, 400, "malformed multipart body");
    }
  return MHD_YES;
}

enum MHD_Result
upload_feed (struct request *rq, const char *data, size_t size)
{
  struct upload *u = rq->upload;
  if (u->raw)
    {
      if (u->status == 0)
        push (u, data, size);
      return MHD_YES;
    }
  if (u->status == 0 && MHD_post_process (u->pp, data, size) != MHD_YES && u->status == 0)
    fail (u, 400, "malformed multipart body");
  return MHD_YES; /* keep reading; the error is answered at the end */
}

enum MHD_Result
upload_end (struct http_server *h, struct MHD_Connection *c, struct request *rq)
{
  (void) h;
  struct upload *u = rq->upload;
  struct sbx_err err;
  if (u->status == 0 && u->raw && u->w == NULL)
    open_writer (u); /* an empty file */
  if (u->status == 0 && u->w == NULL && u->spool < 0)
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
  struct sbx_entry en;
  int r = sbx_file_writer_finish (u->w, &en, &err);
  u->w = NULL;
  if (r < 0)
    return send_fail (c, &err);
  json_t *arr = json_array ();
  json_array_append_new (arr, entry_json (&en));
  sbx_entry_free (&en);
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
};

static int
to_pipe (const void *data, size_t len, void *ud)
{
  struct download *d = ud;
  return sbx_write_full (d->fd, data, len) < 0 ? -1 : 0;
}

static void *
download_main (void *arg)
{
  struct download *d = arg;
  struct sbx_err err;
  /* a failure after the headers went out can only cut the body short */
  sbx_file_reader_stream (d->r, to_pipe, d, &err);
  close (d->fd);
  free (d);
  return NULL;
}

enum MHD_Result
download_file (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id)
{
  (void) rq;
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
  return send_download (c, r, name, size);
}

enum MHD_Result
send_download (struct MHD_Connection *c, struct sbx_file_reader *r, const char *filename, uint64_t size)
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
  d->r = r;
  d->fd = fds[1];
  if (!sbx_start_detached (download_main, d))
    {
      close (fds[0]);
      close (fds[1]);
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
  return send_pipe (c, fds[0], "application/octet-stream", "Content-Disposition", disp, "X-File-Size", len, NULL);
}
