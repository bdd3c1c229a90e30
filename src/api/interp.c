/*
 * api_interp.c - the code interpreter (E2B's port 49999): stateful Python
 * contexts with /execute streaming NDJSON, and the contexts API.
 *
 * A context is one long-running Python process inside the sandbox running
 * share/kernel.py, started as the template's default user with
 *
 *     python3 -u -c BOOTSTRAP N
 *
 * BOOTSTRAP reads exactly N bytes from stdin (the kernel's source, which
 * the daemon sends right after the start) and runs them.  So nothing is
 * written to the sandbox's disk (no file the user could break or a full
 * disk could stop), every start runs the daemon's own copy of the kernel,
 * and the process list shows a short command line rather than a 20 kB
 * argument.
 *
 * The process carries the tag "sbxd-context:ID:LANGUAGE:CWD" (the default
 * context "sbxd-default-context:..."), so the contexts of a sandbox can be
 * found again from its process list after the daemon restarts: the daemon
 * keeps no state of its own beyond what it learnt since it started (which
 * contexts exist, a mutex per context that serialises its executions).
 *
 * An execution attaches to the kernel first, then sends one request line
 * {"id", "code", "env_vars"} to its stdin, and forwards the kernel's lines
 * "ID JSON" for that id as the NDJSON body until the kernel's
 * end_of_execution (see share/kernel.py for the kernel's side).  If the
 * client goes away the cell is interrupted (SIGINT).  If the kernel dies
 * the execution ends with an error and a fresh kernel replaces it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../common/util.h"
#include "api.h"

#define CTX_ID_MAX 40
#define LANG_MAX 16
#define CWD_MAX 1024
#define DEFAULT_CWD "/home/user"
#define TAG_PREFIX "sbxd-context:"
#define TAG_DEFAULT_PREFIX "sbxd-default-context:"
#define END_JSON "{\"type\":\"end_of_execution\"}"
#define KEEPALIVE_MS 2000u          /* a keepalive line after this much silence */
#define START_TIMEOUT_S 60u         /* for a new kernel to answer its first ping */
#define GONE_GRACE_NS (10ull * 1000000000ull) /* wait after an interrupt */
#define LINE_MAX_BYTES (64u << 20)  /* longer protocol lines are dropped */
#define INPUT_CHUNK 60000u          /* stdin is sent in pieces under a frame */

static const char BOOTSTRAP[] = "import os,sys\n"
                                "n=int(sys.argv[1]);b=b''\n"
                                "while len(b)<n:\n"
                                " c=os.read(0,n-len(b))\n"
                                " if not c:sys.exit(1)\n"
                                " b+=c\n"
                                "exec(compile(b,'<sbxd-kernel>','exec'))\n";

/* ---- what the daemon knows: sandboxes and their contexts ---- */

struct ictx {
  struct ictx *next;
  char id[CTX_ID_MAX];
  char lang[LANG_MAX];
  char cwd[CWD_MAX];
  bool is_default;
  bool deleted;
  unsigned refs;
  unsigned generation; /* restarts asked for */
  pthread_mutex_t exec; /* one execution (or start) at a time */
};

struct ibox {
  struct ibox *next;
  char sid[SBX_ID_MAX];
  unsigned refs;
  bool synced; /* the process list has been read once */
  pthread_mutex_t lock; /* the contexts list */
  struct ictx *ctxs;
};

static pthread_mutex_t boxes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ibox *boxes;

static void
box_free (struct ibox *b)
{
  while (b->ctxs)
    {
      struct ictx *c = b->ctxs;
      b->ctxs = c->next;
      pthread_mutex_destroy (&c->exec);
      free (c);
    }
  pthread_mutex_destroy (&b->lock);
  free (b);
}

/* The entry of sandbox SID (a reference); forgets unused entries of
   sandboxes that are gone when it makes a new one. */
static struct ibox *
box_get (struct http_server *h, const char *sid)
{
  pthread_mutex_lock (&boxes_lock);
  struct ibox *b;
  for (b = boxes; b; b = b->next)
    if (strcmp (b->sid, sid) == 0)
      break;
  if (b == NULL)
    {
      for (struct ibox **pp = &boxes; *pp;)
        {
          struct ibox *o = *pp;
          struct sbx_info info;
          struct sbx_err err;
          bool gone = false;
          if (o->refs == 0)
            {
              if (sbx_get_info (h->engine, o->sid, &info, &err) < 0)
                gone = sbx_err_kind (&err) == SBX_E_NOT_FOUND;
              else
                {
                  gone = info.state == SBX_STOPPED;
                  sbx_info_free (&info);
                }
            }
          if (gone)
            {
              *pp = o->next;
              box_free (o);
            }
          else
            pp = &o->next;
        }
      b = calloc (1, sizeof *b);
      if (b == NULL)
        {
          pthread_mutex_unlock (&boxes_lock);
          return NULL;
        }
      snprintf (b->sid, sizeof b->sid, "%s", sid);
      pthread_mutex_init (&b->lock, NULL);
      b->next = boxes;
      boxes = b;
    }
  b->refs++;
  pthread_mutex_unlock (&boxes_lock);
  return b;
}

static void
box_put (struct ibox *b)
{
  pthread_mutex_lock (&boxes_lock);
  b->refs--;
  pthread_mutex_unlock (&boxes_lock);
}

/* with b->lock held */
static struct ictx *
ctx_find_locked (struct ibox *b, const char *id, bool deleted_too)
{
  for (struct ictx *c = b->ctxs; c; c = c->next)
    if (strcmp (c->id, id) == 0 && (deleted_too || !c->deleted))
      return c;
  return NULL;
}

static struct ictx *
ctx_default_locked (struct ibox *b)
{
  for (struct ictx *c = b->ctxs; c; c = c->next)
    if (c->is_default && !c->deleted)
      return c;
  return NULL;
}

static struct ictx *
ctx_add_locked (struct ibox *b, const char *id, const char *lang, const char *cwd, bool is_default)
{
  struct ictx *c = calloc (1, sizeof *c);
  if (c == NULL)
    return NULL;
  snprintf (c->id, sizeof c->id, "%s", id);
  snprintf (c->lang, sizeof c->lang, "%s", lang);
  snprintf (c->cwd, sizeof c->cwd, "%s", cwd);
  c->is_default = is_default;
  pthread_mutex_init (&c->exec, NULL);
  struct ictx **pp = &b->ctxs; /* in creation order */
  while (*pp)
    pp = &(*pp)->next;
  *pp = c;
  return c;
}

/* Drop a reference taken under b->lock; a deleted context goes with its
   last one. */
static void
ctx_put (struct ibox *b, struct ictx *c)
{
  pthread_mutex_lock (&b->lock);
  if (--c->refs == 0 && c->deleted)
    {
      for (struct ictx **pp = &b->ctxs; *pp; pp = &(*pp)->next)
        if (*pp == c)
          {
            *pp = c->next;
            break;
          }
      pthread_mutex_destroy (&c->exec);
      free (c);
    }
  pthread_mutex_unlock (&b->lock);
}

static bool
ctx_deleted (struct ibox *b, struct ictx *c)
{
  pthread_mutex_lock (&b->lock);
  bool d = c->deleted;
  pthread_mutex_unlock (&b->lock);
  return d;
}

static unsigned
ctx_generation (struct ibox *b, struct ictx *c)
{
  pthread_mutex_lock (&b->lock);
  unsigned g = c->generation;
  pthread_mutex_unlock (&b->lock);
  return g;
}

static int
new_ctx_id (char out[CTX_ID_MAX], struct sbx_err *err)
{
  uint8_t r[16];
  if (sbx_random_bytes (r, sizeof r) < 0)
    return sbx_fail (err, errno, "random");
  r[6] = (uint8_t) ((r[6] & 0x0f) | 0x40);
  r[8] = (uint8_t) ((r[8] & 0x3f) | 0x80);
  snprintf (out, CTX_ID_MAX, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
            r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
  return 0;
}

static bool
valid_ctx_id (const char *s, size_t n)
{
  if (n == 0 || n >= CTX_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'
          || s[i] == '_'))
      return false;
  return true;
}

/* ---- kernels in the process list ---- */

struct kproc {
  uint32_t pid;
  char id[CTX_ID_MAX];
  char lang[LANG_MAX];
  char cwd[CWD_MAX];
  bool is_default;
};

static bool
parse_tag (const char *tag, struct kproc *k)
{
  const char *p;
  if (tag == NULL)
    return false;
  if (strncmp (tag, TAG_PREFIX, strlen (TAG_PREFIX)) == 0)
    {
      p = tag + strlen (TAG_PREFIX);
      k->is_default = false;
    }
  else if (strncmp (tag, TAG_DEFAULT_PREFIX, strlen (TAG_DEFAULT_PREFIX)) == 0)
    {
      p = tag + strlen (TAG_DEFAULT_PREFIX);
      k->is_default = true;
    }
  else
    return false;
  const char *c1 = strchr (p, ':');
  if (c1 == NULL || !valid_ctx_id (p, (size_t) (c1 - p)))
    return false;
  const char *c2 = strchr (c1 + 1, ':');
  if (c2 == NULL || c2 == c1 + 1 || (size_t) (c2 - c1 - 1) >= LANG_MAX || strlen (c2 + 1) >= CWD_MAX)
    return false;
  snprintf (k->id, sizeof k->id, "%.*s", (int) (c1 - p), p);
  snprintf (k->lang, sizeof k->lang, "%.*s", (int) (c2 - c1 - 1), c1 + 1);
  snprintf (k->cwd, sizeof k->cwd, "%s", c2 + 1);
  return true;
}

static void
make_tag (const struct ictx *c, char *out, size_t n)
{
  snprintf (out, n, "%s%s:%s:%s", c->is_default ? TAG_DEFAULT_PREFIX : TAG_PREFIX, c->id, c->lang, c->cwd);
}

/* The kernels running in sandbox SID. */
static int
kernels_list (struct sbx_engine *e, const char *sid, struct kproc **out, size_t *n, struct sbx_err *err)
{
  struct sbx_proc_info *procs;
  size_t np;
  *out = NULL;
  *n = 0;
  if (sbx_proc_list (e, sid, &procs, &np, err) < 0)
    return -1;
  struct kproc *v = calloc (np ? np : 1, sizeof *v);
  if (v == NULL)
    {
      sbx_proc_list_free (procs, np);
      return sbx_fail (err, ENOMEM, "kernels");
    }
  size_t k = 0;
  for (size_t i = 0; i < np; i++)
    if (parse_tag (procs[i].tag, &v[k]))
      v[k++].pid = procs[i].pid;
  sbx_proc_list_free (procs, np);
  *out = v;
  *n = k;
  return 0;
}

/* The pid of context ID's kernel, 0 if none runs. */
static int
kernel_pid (struct sbx_engine *e, const char *sid, const char *id, uint32_t *pid, struct sbx_err *err)
{
  struct kproc *k;
  size_t n;
  *pid = 0;
  if (kernels_list (e, sid, &k, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (strcmp (k[i].id, id) == 0)
      *pid = k[i].pid;
  free (k);
  return 0;
}

/* Learn the contexts of a sandbox from its process list, once. */
static int
box_sync_locked (struct http_server *h, struct ibox *b, struct sbx_err *err)
{
  if (b->synced)
    return 0;
  struct kproc *k;
  size_t n;
  if (kernels_list (h->engine, b->sid, &k, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (ctx_find_locked (b, k[i].id, true) == NULL
        && ctx_add_locked (b, k[i].id, k[i].lang, k[i].cwd, k[i].is_default) == NULL)
      {
        free (k);
        return sbx_fail (err, ENOMEM, "contexts");
      }
  free (k);
  b->synced = true;
  return 0;
}

/* ---- protocol lines ---- */

struct lines {
  char *buf;
  size_t len, cap;
  bool skipping; /* dropping an over-long line up to its end */
  bool dropped;  /* a line was dropped since the flag was last cleared */
};

typedef int (*line_fn) (const char *line, size_t n, void *ud);

/* Feed output; FN gets every complete line (without its newline) and may
   return <0 to stop, which this returns. */
static int
lines_feed (struct lines *l, const uint8_t *data, size_t n, line_fn fn, void *ud)
{
  const char *p = (const char *) data, *end = p + n;
  while (p < end)
    {
      const char *nl = memchr (p, '\n', (size_t) (end - p));
      size_t seg = (size_t) ((nl ? nl : end) - p);
      if (l->skipping)
        {
          if (nl)
            l->skipping = false;
        }
      else if (nl && l->len == 0)
        {
          if (fn (p, seg, ud) < 0)
            return -1;
        }
      else if (l->len + seg > LINE_MAX_BYTES)
        {
          l->len = 0;
          l->dropped = true;
          l->skipping = nl == NULL;
        }
      else
        {
          if (sbx_reserve (&l->buf, &l->cap, l->len + seg, 4096) < 0)
            {
              l->len = 0;
              l->dropped = true;
              l->skipping = nl == NULL;
              p += seg + (nl != NULL);
              continue;
            }
          memcpy (l->buf + l->len, p, seg);
          l->len += seg;
          if (nl)
            {
              size_t len = l->len;
              l->len = 0;
              if (fn (l->buf, len, ud) < 0)
                return -1;
            }
        }
      p += seg + (nl != NULL);
    }
  return 0;
}

static void
lines_free (struct lines *l)
{
  free (l->buf);
  memset (l, 0, sizeof *l);
}

/* Is LINE "RID {end_of_execution}"? or does it carry RID (payload in *P)? */
static bool
line_for (const char *line, size_t n, const char *rid, const char **p, size_t *pn)
{
  size_t r = strlen (rid);
  if (n <= r + 1 || memcmp (line, rid, r) != 0 || line[r] != ' ')
    return false;
  *p = line + r + 1;
  *pn = n - r - 1;
  return true;
}

static bool
is_end (const char *p, size_t n)
{
  return n == strlen (END_JSON) && memcmp (p, END_JSON, n) == 0;
}

static int
send_input (struct sbx_engine *e, const char *sid, uint32_t pid, const char *data, size_t len, struct sbx_err *err)
{
  for (size_t off = 0; off < len;)
    {
      size_t n = len - off < INPUT_CHUNK ? len - off : INPUT_CHUNK;
      if (sbx_proc_input (e, sid, pid, data + off, n, err) < 0)
        return -1;
      off += n;
    }
  return 0;
}

static int
new_rid (char out[33], struct sbx_err *err)
{
  uint8_t r[16];
  if (sbx_random_bytes (r, sizeof r) < 0)
    return sbx_fail (err, errno, "random");
  for (int i = 0; i < 16; i++)
    snprintf (out + 2 * i, 3, "%02x", r[i]);
  return 0;
}

/* ---- starting and stopping kernels ---- */

static int
load_kernel (struct http_server *h, char **src, struct sbx_err *err)
{
  char path[4200];
#ifdef SBXD_SHARE_DIR
  (void) h;
  snprintf (path, sizeof path, "%s/kernel.py", SBXD_SHARE_DIR);
#else
  snprintf (path, sizeof path, "%s/../share/kernel.py", h->docs_dir);
#endif
  if (sbx_read_file_at (AT_FDCWD, path, src, 1u << 20, err) < 0)
    return sbx_err_wrap (err, "the code interpreter's kernel");
  return 0;
}

struct start_state {
  struct sbx_engine *engine;
  const char *sid;
  const char *src;
  char ping[33];
  uint32_t pid;
  bool ready, ended, input_failed;
  int exit_code, signal;
  unsigned ticks;
  struct lines lines;
  char errtext[512];
  size_t errlen;
  struct sbx_err in_err;
};

static int
start_line (const char *line, size_t n, void *ud)
{
  struct start_state *st = ud;
  const char *p;
  size_t pn;
  if (line_for (line, n, st->ping, &p, &pn) && is_end (p, pn))
    {
      st->ready = true;
      return -1;
    }
  return 0;
}

static int
start_event (const struct sbx_proc_event *ev, void *ud)
{
  struct start_state *st = ud;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      {
        st->pid = ev->pid;
        char ping[80];
        snprintf (ping, sizeof ping, "{\"id\":\"%s\",\"ping\":true}\n", st->ping);
        if (send_input (st->engine, st->sid, st->pid, st->src, strlen (st->src), &st->in_err) < 0
            || send_input (st->engine, st->sid, st->pid, ping, strlen (ping), &st->in_err) < 0)
          {
            st->input_failed = true;
            return -1;
          }
        return 0;
      }
    case SBX_PROC_STDOUT:
      return lines_feed (&st->lines, ev->data, ev->len, start_line, st);
    case SBX_PROC_STDERR:
    case SBX_PROC_PTY:
      {
        size_t room = sizeof st->errtext - 1 - st->errlen;
        size_t n = ev->len < room ? ev->len : room;
        memcpy (st->errtext + st->errlen, ev->data, n);
        st->errlen += n;
        st->errtext[st->errlen] = '\0';
        return 0;
      }
    case SBX_PROC_KEEPALIVE:
      return ++st->ticks >= START_TIMEOUT_S ? -1 : 0;
    case SBX_PROC_END:
      st->ended = true;
      st->exit_code = ev->exit_code;
      st->signal = ev->signal;
      return -1;
    }
  return 0;
}

struct kill_state {
  struct sbx_engine *engine;
  const char *sid;
  unsigned ticks;
  bool ended;
};

static int
kill_event (const struct sbx_proc_event *ev, void *ud)
{
  struct kill_state *ks = ud;
  struct sbx_err err;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      return sbx_proc_signal (ks->engine, ks->sid, ev->pid, SIGKILL, &err) < 0 ? -1 : 0;
    case SBX_PROC_END:
      ks->ended = true;
      return -1;
    case SBX_PROC_KEEPALIVE:
      return ++ks->ticks >= 10 ? -1 : 0;
    default:
      return 0;
    }
}

/* Kill a kernel (and its process group) and wait until it has gone. */
static void
kernel_kill (struct sbx_engine *e, const char *sid, uint32_t pid)
{
  struct kill_state ks = { .engine = e, .sid = sid };
  struct sbx_err err;
  sbx_attach (e, sid, pid, 1000, kill_event, &ks, &err);
}

/* Trim a kernel's complaint to its last line for an error message. */
static const char *
last_line (char *s)
{
  size_t n = strlen (s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
    s[--n] = '\0';
  char *nl = strrchr (s, '\n');
  return nl ? nl + 1 : s;
}

static int
kernel_start (struct http_server *h, const char *sid, const struct ictx *c, uint32_t *pid, struct sbx_err *err)
{
  cleanup_free char *src = NULL;
  if (load_kernel (h, &src, err) < 0)
    return -1;
  struct start_state st = { .engine = h->engine, .sid = sid, .src = src };
  if (new_rid (st.ping, err) < 0)
    return -1;
  char nbuf[24], tag[CWD_MAX + 128];
  snprintf (nbuf, sizeof nbuf, "%zu", strlen (src));
  make_tag (c, tag, sizeof tag);
  const char *argv[] = { "python3", "-u", "-c", BOOTSTRAP, nbuf, NULL };
  struct sbx_exec_opts o = { .argv = argv,
                             .cwd = *c->cwd ? c->cwd : NULL,
                             .tag = tag,
                             .stdin_open = true,
                             .keepalive_ms = 1000 };
  int r = sbx_exec (h->engine, sid, &o, start_event, &st, err);
  lines_free (&st.lines);
  if (st.ready)
    {
      *pid = st.pid;
      return 0;
    }
  if (st.pid && !st.ended)
    kernel_kill (h->engine, sid, st.pid);
  if (r < 0)
    return sbx_err_wrap (err, "start python");
  if (st.input_failed)
    return sbx_failx (err, st.in_err.code ? st.in_err.code : EIO, "start python: %s", st.in_err.msg);
  if (st.errlen)
    return sbx_failx (err, EIO, "python did not start: %s", last_line (st.errtext));
  if (st.ended)
    return sbx_failx (err, EIO, "python exited at start (status %d, signal %d)", st.exit_code, st.signal);
  return sbx_failx (err, ETIMEDOUT, "python did not start within %u s", START_TIMEOUT_S);
}

/* The pid of context C's kernel, started if it does not run; with
   c->exec held. */
static int
ensure_kernel (struct http_server *h, struct ibox *b, struct ictx *c, uint32_t *pid, struct sbx_err *err)
{
  if (ctx_deleted (b, c))
    return sbx_failx (err, ENOENT, "context %s was removed", c->id);
  if (kernel_pid (h->engine, b->sid, c->id, pid, err) < 0)
    return -1;
  if (*pid)
    return 0;
  if (kernel_start (h, b->sid, c, pid, err) < 0)
    return -1;
  if (ctx_deleted (b, c)) /* removed while it started */
    {
      kernel_kill (h->engine, b->sid, *pid);
      return sbx_failx (err, ENOENT, "context %s was removed", c->id);
    }
  return 0;
}

/* ---- executions ---- */

struct exec_job {
  struct http_server *h;
  struct ibox *box;
  struct ictx *ctx;
  char rid[33];
  char *req; /* the request line */
  int fd;    /* the response body */
  uint32_t pid;
  unsigned generation;
  bool sent, started, done, ended, gone, input_failed;
  int exit_code, signal;
  uint64_t gone_at;
  struct lines lines;
  struct sbx_err in_err;
};

/* Write one NDJSON line to the client; notices when it has gone and then
   interrupts the cell. */
static void
emit (struct exec_job *job, const char *p, size_t n)
{
  if (job->gone)
    return;
  struct iovec iov[2] = { { (void *) p, n }, { (void *) "\n", 1 } };
  size_t total = n + 1;
  while (total)
    {
      ssize_t w = writev (job->fd, iov, 2);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        {
          struct sbx_err err;
          job->gone = true;
          job->gone_at = sbx_now_ns ();
          if (job->pid && !job->done)
            sbx_proc_signal (job->h->engine, job->box->sid, job->pid, SIGINT, &err);
          return;
        }
      total -= (size_t) w;
      for (int i = 0; i < 2 && w > 0; i++)
        {
          size_t k = (size_t) w < iov[i].iov_len ? (size_t) w : iov[i].iov_len;
          iov[i].iov_base = (char *) iov[i].iov_base + k;
          iov[i].iov_len -= k;
          w -= (ssize_t) k;
        }
    }
}

static void
emit_json (struct exec_job *job, json_t *j)
{
  char *s = j ? json_dumps (j, JSON_COMPACT) : NULL;
  json_decref (j);
  if (s)
    emit (job, s, strlen (s));
  free (s);
}

static void
emit_error (struct exec_job *job, const char *name, const char *value)
{
  emit_json (job, json_pack ("{s:s, s:s, s:s, s:s}", "type", "error", "name", name, "value", value, "traceback", ""));
}

static int
exec_line (const char *line, size_t n, void *ud)
{
  struct exec_job *job = ud;
  const char *p;
  size_t pn;
  if (!line_for (line, n, job->rid, &p, &pn))
    return 0;
  emit (job, p, pn);
  if (is_end (p, pn))
    {
      job->done = true;
      return -1;
    }
  return 0;
}

static int
exec_event (const struct sbx_proc_event *ev, void *ud)
{
  struct exec_job *job = ud;
  if (job->gone && sbx_now_ns () - job->gone_at > GONE_GRACE_NS)
    return -1; /* the cell ignores the interrupt: stop waiting for it */
  switch (ev->kind)
    {
    case SBX_PROC_START:
      job->started = true;
      if (!job->sent)
        {
          job->sent = true;
          if (send_input (job->h->engine, job->box->sid, job->pid, job->req, strlen (job->req), &job->in_err) < 0)
            {
              job->input_failed = true;
              return -1;
            }
        }
      return 0;
    case SBX_PROC_STDOUT:
      {
        int r = lines_feed (&job->lines, ev->data, ev->len, exec_line, job);
        if (job->lines.dropped)
          {
            job->lines.dropped = false;
            emit_json (job, json_pack ("{s:s, s:s}", "type", "stderr", "text",
                                       "[sbxd: an output of more than 64 MiB was dropped]\n"));
          }
        return r;
      }
    case SBX_PROC_KEEPALIVE:
      /* like E2B's server: lets the client's idle timers (and us, if it has
         gone) know */
      emit (job, "{\"type\":\"keepalive\"}", 20);
      return 0;
    case SBX_PROC_END:
      job->ended = true;
      job->exit_code = ev->exit_code;
      job->signal = ev->signal;
      return -1;
    default:
      return 0;
    }
}

static void
exec_job_free (struct exec_job *job)
{
  if (job->fd >= 0)
    close (job->fd);
  lines_free (&job->lines);
  if (job->ctx)
    ctx_put (job->box, job->ctx);
  if (job->box)
    box_put (job->box);
  free (job->req);
  free (job);
}

static void *
exec_main (void *arg)
{
  struct exec_job *job = arg;
  struct http_server *h = job->h;
  struct ibox *b = job->box;
  struct ictx *c = job->ctx;
  struct sbx_err err = { 0 };
  int r = -1;
  pthread_mutex_lock (&c->exec);
  job->generation = ctx_generation (b, c);
  for (int attempt = 0; attempt < 2; attempt++)
    {
      uint32_t pid;
      if (ensure_kernel (h, b, c, &pid, &err) < 0)
        {
          emit_error (job, "ContextError", err.msg);
          goto end;
        }
      job->pid = pid;
      job->started = false;
      r = sbx_attach (h->engine, b->sid, pid, KEEPALIVE_MS, exec_event, job, &err);
      if (r < 0 && !job->started && attempt == 0)
        continue; /* the kernel went away in between: start another */
      break;
    }
  if (job->done || job->gone)
    goto out;
  if (job->ended)
    {
      char msg[256];
      bool restarted = ctx_generation (b, c) != job->generation;
      bool deleted = ctx_deleted (b, c);
      if (deleted)
        snprintf (msg, sizeof msg, "Context was removed");
      else if (restarted)
        snprintf (msg, sizeof msg, "Context was restarted");
      else if (job->signal)
        snprintf (msg, sizeof msg, "The context's Python process was killed by signal %d (%s); its state is lost",
                  job->signal, strsignal (job->signal));
      else
        snprintf (msg, sizeof msg, "The context's Python process exited with status %d; its state is lost",
                  job->exit_code);
      emit_error (job, "ContextRestarting", msg);
      uint32_t pid;
      if (!deleted && !restarted)
        ensure_kernel (h, b, c, &pid, &err); /* a fresh one for the next execution */
    }
  else if (job->input_failed)
    emit_error (job, "UnexpectedEndOfExecution", job->in_err.msg);
  else if (r < 0)
    emit_error (job, "UnexpectedEndOfExecution", err.msg);
  else
    emit_error (job, "UnexpectedEndOfExecution", "the execution stopped before it finished");
end:
  emit (job, END_JSON, strlen (END_JSON));
out:
  pthread_mutex_unlock (&c->exec);
  exec_job_free (job);
  return NULL;
}

/* ---- HTTP ---- */

/* "python" (the default) or 400. */
static bool
check_language (struct MHD_Connection *c, const char *lang, enum MHD_Result *ret)
{
  if (lang == NULL)
    return true;
  char l[LANG_MAX + 1];
  while (*lang == ' ' || *lang == '\t' || *lang == '\n')
    lang++;
  size_t n = strlen (lang);
  while (n && (lang[n - 1] == ' ' || lang[n - 1] == '\t' || lang[n - 1] == '\n'))
    n--;
  if (n == 0)
    return true;
  if (n < sizeof l)
    {
      for (size_t i = 0; i < n; i++)
        l[i] = (char) (lang[i] >= 'A' && lang[i] <= 'Z' ? lang[i] + 32 : lang[i]);
      l[n] = '\0';
      if (strcmp (l, "python") == 0)
        return true;
    }
  *ret = send_error (c, 400, "language \"%.*s\" is not supported: the code interpreter runs python only",
                     (int) (n > 64 ? 64 : n), lang);
  return false;
}

/* The sandbox's entry, locked and synced; NULL after answering. */
static struct ibox *
box_open (struct http_server *h, struct MHD_Connection *c, const char *sid, enum MHD_Result *ret)
{
  struct ibox *b = box_get (h, sid);
  if (b == NULL)
    {
      *ret = send_error (c, 500, "out of memory");
      return NULL;
    }
  pthread_mutex_lock (&b->lock);
  struct sbx_err err;
  if (box_sync_locked (h, b, &err) < 0)
    {
      pthread_mutex_unlock (&b->lock);
      box_put (b);
      *ret = send_error (c, 502, "cannot list the sandbox's contexts: %s", err.msg);
      return NULL;
    }
  return b;
}

static json_t *
ctx_json (const struct ictx *c)
{
  return json_pack ("{s:s, s:s, s:s}", "id", c->id, "language", c->lang, "cwd", *c->cwd ? c->cwd : DEFAULT_CWD);
}

static enum MHD_Result
execute (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *sid)
{
  enum MHD_Result ret;
  json_t *body = body_object (c, rq, &ret);
  if (body == NULL)
    return ret;
  const char *cid = NULL, *lang = NULL;
  json_t *code = json_object_get (body, "code");
  json_t *env = json_object_get (body, "env_vars");
  if (!json_is_string (code))
    {
      json_decref (body);
      return send_error (c, 400, "code must be a string");
    }
  if (opt_string (c, body, "context_id", &cid, &ret) < 0 || opt_string (c, body, "language", &lang, &ret) < 0)
    {
      json_decref (body);
      return ret;
    }
  if (cid && *cid == '\0')
    cid = NULL;
  if (cid && lang && *lang)
    {
      json_decref (body);
      return send_error (c, 400, "Only one of context_id or language can be provided");
    }
  if (!check_language (c, lang, &ret))
    {
      json_decref (body);
      return ret;
    }
  if (json_is_null (env))
    env = NULL;
  if (env)
    {
      const char *k;
      json_t *v;
      bool ok = json_is_object (env);
      json_object_foreach (env, k, v)
      {
        if (!json_is_string (v))
          ok = false;
      }
      if (!ok)
        {
          json_decref (body);
          return send_error (c, 400, "env_vars must be an object of strings");
        }
    }
  char cidbuf[CTX_ID_MAX];
  if (cid && !valid_ctx_id (cid, strlen (cid)))
    {
      ret = send_error (c, 404, "Context %.64s not found", cid);
      json_decref (body);
      return ret;
    }
  if (cid)
    cid = strcpy (cidbuf, cid); /* the body goes before cid's last use */

  struct exec_job *job = calloc (1, sizeof *job);
  struct sbx_err err;
  if (job == NULL || new_rid (job->rid, &err) < 0)
    {
      free (job);
      json_decref (body);
      return send_error (c, 500, "cannot start the execution");
    }
  job->fd = -1;
  job->h = h;
  json_t *req = json_pack ("{s:s, s:O, s:O?}", "id", job->rid, "code", code, "env_vars", env);
  char *line = req ? json_dumps (req, JSON_COMPACT) : NULL;
  json_decref (req);
  json_decref (body);
  if (line == NULL || (job->req = malloc (strlen (line) + 2)) == NULL)
    {
      free (line);
      free (job);
      return send_error (c, 500, "out of memory");
    }
  sprintf (job->req, "%s\n", line);
  free (line);

  struct ibox *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    {
      exec_job_free (job);
      return ret;
    }
  job->box = b;
  struct ictx *x = cid ? ctx_find_locked (b, cid, false) : ctx_default_locked (b);
  if (x == NULL && cid)
    {
      pthread_mutex_unlock (&b->lock);
      exec_job_free (job);
      return send_error (c, 404, "Context %s not found", cid);
    }
  if (x == NULL)
    {
      char id[CTX_ID_MAX];
      if (new_ctx_id (id, &err) < 0 || (x = ctx_add_locked (b, id, "python", DEFAULT_CWD, true)) == NULL)
        {
          pthread_mutex_unlock (&b->lock);
          exec_job_free (job);
          return send_error (c, 500, "cannot make the default context");
        }
    }
  x->refs++;
  job->ctx = x;
  pthread_mutex_unlock (&b->lock);

  int fds[2];
  if (pipe2 (fds, O_CLOEXEC) < 0)
    {
      exec_job_free (job);
      return send_error (c, 500, "pipe: %s", strerror (errno));
    }
  fcntl (fds[1], F_SETPIPE_SZ, 1 << 20); /* best effort: room for a chart */
  job->fd = fds[1];
  if (!sbx_start_detached (exec_main, job))
    {
      close (fds[0]);
      exec_job_free (job);
      return send_error (c, 500, "cannot start the execution");
    }
  return send_pipe (c, fds[0], "application/x-ndjson", "Cache-Control", "no-cache", NULL);
}

static enum MHD_Result
create_context (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *sid)
{
  enum MHD_Result ret;
  json_t *body = body_object (c, rq, &ret);
  if (body == NULL)
    return ret;
  const char *lang = NULL, *cwd = NULL;
  if (opt_string (c, body, "language", &lang, &ret) < 0 || opt_string (c, body, "cwd", &cwd, &ret) < 0
      || !check_language (c, lang, &ret))
    {
      json_decref (body);
      return ret;
    }
  char dir[CWD_MAX];
  snprintf (dir, sizeof dir, "%s", cwd && *cwd ? cwd : DEFAULT_CWD);
  bool bad = cwd && strlen (cwd) >= CWD_MAX;
  for (const char *p = dir; *p; p++)
    if ((unsigned char) *p < 0x20)
      bad = true;
  json_decref (body);
  if (bad)
    return send_error (c, 400, "cwd must be a path of at most %d bytes", CWD_MAX - 1);

  char id[CTX_ID_MAX];
  struct sbx_err err;
  if (new_ctx_id (id, &err) < 0)
    return send_error (c, 500, "%s", err.msg);
  struct ibox *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  struct ictx *x = ctx_add_locked (b, id, "python", dir, false);
  if (x)
    x->refs++;
  pthread_mutex_unlock (&b->lock);
  if (x == NULL)
    {
      box_put (b);
      return send_error (c, 500, "out of memory");
    }
  uint32_t pid;
  pthread_mutex_lock (&x->exec);
  int r = ensure_kernel (h, b, x, &pid, &err);
  pthread_mutex_unlock (&x->exec);
  if (r < 0)
    {
      pthread_mutex_lock (&b->lock);
      x->deleted = true;
      pthread_mutex_unlock (&b->lock);
      ctx_put (b, x);
      box_put (b);
      return send_error (c, 500, "Failed to create context: %s", err.msg);
    }
  json_t *j = ctx_json (x);
  ctx_put (b, x);
  box_put (b);
  return send_json (c, 200, j);
}

static enum MHD_Result
list_contexts (struct http_server *h, struct MHD_Connection *c, const char *sid)
{
  enum MHD_Result ret;
  struct ibox *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  json_t *a = json_array ();
  for (struct ictx *x = b->ctxs; x; x = x->next)
    if (!x->deleted)
      json_array_append_new (a, ctx_json (x));
  pthread_mutex_unlock (&b->lock);
  box_put (b);
  return send_json (c, 200, a);
}

/* DELETE /contexts/ID, or POST /contexts/ID/restart. */
static enum MHD_Result
stop_context (struct http_server *h, struct MHD_Connection *c, const char *sid, const char *cid, bool restart)
{
  enum MHD_Result ret;
  struct ibox *b = box_open (h, c, sid, &ret);
  if (b == NULL)
    return ret;
  struct ictx *x = ctx_find_locked (b, cid, false);
  if (x == NULL)
    {
      pthread_mutex_unlock (&b->lock);
      box_put (b);
      return send_error (c, 404, "Context %s not found", cid);
    }
  x->refs++;
  if (restart)
    x->generation++;
  else
    x->deleted = true;
  pthread_mutex_unlock (&b->lock);

  struct sbx_err err;
  uint32_t pid;
  int r = kernel_pid (h->engine, sid, cid, &pid, &err);
  if (r == 0 && pid)
    kernel_kill (h->engine, sid, pid);
  if (r == 0 && restart)
    {
      /* after the execution the kill ended (if any) has let go */
      pthread_mutex_lock (&x->exec);
      r = ensure_kernel (h, b, x, &pid, &err);
      pthread_mutex_unlock (&x->exec);
    }
  ctx_put (b, x);
  box_put (b);
  if (r < 0)
    return send_error (c, restart ? 500 : 502, "%s context %s: %s", restart ? "Failed to restart" : "Failed to remove",
                       cid, err.msg);
  return send_empty (c, 204);
}

enum MHD_Result
interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                const char *url, const char *id)
{
  bool post = strcmp (method, "POST") == 0;
  if (strcmp (url, "/execute") == 0)
    return post ? execute (h, c, rq, id) : send_error (c, 405, "method not allowed");
  if (strcmp (url, "/contexts") == 0)
    {
      if (post)
        return create_context (h, c, rq, id);
      if (strcmp (method, "GET") == 0)
        return list_contexts (h, c, id);
      return send_error (c, 405, "method not allowed");
    }
  if (strncmp (url, "/contexts/", 10) == 0)
    {
      const char *rest = url + 10, *slash = strchr (rest, '/');
      size_t n = slash ? (size_t) (slash - rest) : strlen (rest);
      char cid[CTX_ID_MAX];
      if (!valid_ctx_id (rest, n))
        return send_error (c, 404, "Context not found");
      snprintf (cid, sizeof cid, "%.*s", (int) n, rest);
      if (slash == NULL)
        return strcmp (method, "DELETE") == 0 ? stop_context (h, c, id, cid, false)
                                              : send_error (c, 405, "method not allowed");
      if (strcmp (slash, "/restart") == 0)
        return post ? stop_context (h, c, id, cid, true) : send_error (c, 405, "method not allowed");
    }
  return send_error (c, 404, "not found");
}
