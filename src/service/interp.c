/*
 * interp.c - code interpreter contexts: the daemon's table of them and the
 * Python kernels that run them (see interp.h; src/api/interp.c speaks
 * E2B's /execute and /contexts over it).
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
 * {"id", "code", "env_vars"} to its stdin, and passes on the kernel's
 * lines "ID JSON" for that id until the kernel's end_of_execution (see
 * share/kernel.py for the kernel's side).  If the client goes away the
 * cell is interrupted (SIGINT).  If the kernel dies the execution ends
 * with a failure and a fresh kernel replaces it.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"
#include "output.h"
#include "../core/sandbox.h"
#include "interp.h"

#define CTX_ID_MAX SBX_INTERP_ID_MAX
#define LANG_MAX SBX_INTERP_LANG_MAX
#define CWD_MAX SBX_INTERP_CWD_MAX
#define DEFAULT_CWD SBX_INTERP_DEFAULT_CWD
#define TAG_PREFIX "sbxd-context:"
#define TAG_DEFAULT_PREFIX "sbxd-default-context:"
#define END_JSON "{\"type\":\"end_of_execution\"}" /* the kernel's last line of an execution */
#define KEEPALIVE_MS 2000u          /* a keepalive event after this much silence */
#define START_TIMEOUT_S 60u         /* for a new kernel to answer its first ping */
#define GONE_GRACE_NS (10ull * 1000000000ull) /* wait after an interrupt */
#define LINE_MAX_BYTES (64u << 20)  /* longer protocol lines are dropped */

struct sbx_interp {
  struct sbx_engine *engine;
  char *kernel_path;
  pthread_mutex_t lock; /* the boxes list and their refs */
  struct sbx_interp_box *boxes;
};

static const char BOOTSTRAP[] = "import os,sys\n"
                                "n=int(sys.argv[1]);b=b''\n"
                                "while len(b)<n:\n"
                                " c=os.read(0,n-len(b))\n"
                                " if not c:sys.exit(1)\n"
                                " b+=c\n"
                                "exec(compile(b,'<sbxd-kernel>','exec'))\n";

/* ---- what the daemon knows: sandboxes and their contexts ---- */

struct sbx_interp_ctx {
  struct sbx_interp_ctx *next;
  char id[CTX_ID_MAX];
  char lang[LANG_MAX];
  char cwd[CWD_MAX];
  bool is_default;
  bool deleted;
  unsigned refs;
  unsigned generation; /* restarts asked for */
  pthread_mutex_t exec; /* one execution (or start) at a time */
};

struct sbx_interp_box {
  struct sbx_interp_box *next;
  struct sbx_interp *ip;
  char sid[SBX_ID_MAX];
  unsigned refs;
  bool synced; /* the process list has been read once */
  pthread_mutex_t lock; /* the contexts list */
  struct sbx_interp_ctx *ctxs;
};


static void
box_free (struct sbx_interp_box *b)
{
  while (b->ctxs)
    {
      struct sbx_interp_ctx *c = b->ctxs;
      b->ctxs = c->next;
      pthread_mutex_destroy (&c->exec);
      free (c);
    }
  pthread_mutex_destroy (&b->lock);
  free (b);
}

/* The entry of sandbox SID (a reference); forgets unused entries of
   sandboxes that are gone when it makes a new one. */
static struct sbx_interp_box *
box_get (struct sbx_interp *ip, const char *sid)
{
  pthread_mutex_lock (&ip->lock);
  struct sbx_interp_box *b;
  for (b = ip->boxes; b; b = b->next)
    if (strcmp (b->sid, sid) == 0)
      break;
  if (b == NULL)
    {
      for (struct sbx_interp_box **pp = &ip->boxes; *pp;)
        {
          struct sbx_interp_box *o = *pp;
          struct sbx_info info;
          struct sbx_err err;
          bool gone = false;
          if (o->refs == 0)
            {
              if (sbx_get_info (ip->engine, o->sid, &info, &err) < 0)
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
          pthread_mutex_unlock (&ip->lock);
          return NULL;
        }
      b->ip = ip;
      snprintf (b->sid, sizeof b->sid, "%s", sid);
      pthread_mutex_init (&b->lock, NULL);
      b->next = ip->boxes;
      ip->boxes = b;
    }
  b->refs++;
  pthread_mutex_unlock (&ip->lock);
  return b;
}

static void
box_put (struct sbx_interp_box *b)
{
  pthread_mutex_lock (&b->ip->lock);
  b->refs--;
  pthread_mutex_unlock (&b->ip->lock);
}

/* with b->lock held */
static struct sbx_interp_ctx *
ctx_find_locked (struct sbx_interp_box *b, const char *id, bool deleted_too)
{
  for (struct sbx_interp_ctx *c = b->ctxs; c; c = c->next)
    if (strcmp (c->id, id) == 0 && (deleted_too || !c->deleted))
      return c;
  return NULL;
}

static struct sbx_interp_ctx *
ctx_default_locked (struct sbx_interp_box *b)
{
  for (struct sbx_interp_ctx *c = b->ctxs; c; c = c->next)
    if (c->is_default && !c->deleted)
      return c;
  return NULL;
}

static struct sbx_interp_ctx *
ctx_add_locked (struct sbx_interp_box *b, const char *id, const char *lang, const char *cwd, bool is_default)
{
  struct sbx_interp_ctx *c = calloc (1, sizeof *c);
  if (c == NULL)
    return NULL;
  snprintf (c->id, sizeof c->id, "%s", id);
  snprintf (c->lang, sizeof c->lang, "%s", lang);
  snprintf (c->cwd, sizeof c->cwd, "%s", cwd);
  c->is_default = is_default;
  pthread_mutex_init (&c->exec, NULL);
  struct sbx_interp_ctx **pp = &b->ctxs; /* in creation order */
  while (*pp)
    pp = &(*pp)->next;
  *pp = c;
  return c;
}

/* Drop a reference taken under b->lock; a deleted context goes with its
   last one. */
static void
ctx_put (struct sbx_interp_box *b, struct sbx_interp_ctx *c)
{
  pthread_mutex_lock (&b->lock);
  if (--c->refs == 0 && c->deleted)
    {
      for (struct sbx_interp_ctx **pp = &b->ctxs; *pp; pp = &(*pp)->next)
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
ctx_deleted (struct sbx_interp_box *b, struct sbx_interp_ctx *c)
{
  pthread_mutex_lock (&b->lock);
  bool d = c->deleted;
  pthread_mutex_unlock (&b->lock);
  return d;
}

static unsigned
ctx_generation (struct sbx_interp_box *b, struct sbx_interp_ctx *c)
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
make_tag (const struct sbx_interp_ctx *c, char *out, size_t n)
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
box_sync_locked (struct sbx_interp_box *b, struct sbx_err *err)
{
  if (b->synced)
    return 0;
  struct kproc *k;
  size_t n;
  if (kernels_list (b->ip->engine, b->sid, &k, &n, err) < 0)
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

/* Room for NEED bytes of a line; its memory comes from the daemon's
   output budget (output.h), so lines of many cells together stay
   bounded: a line finding none is dropped like an over-long one. */
static bool
lines_room (struct lines *l, size_t need)
{
  if (need <= l->cap)
    return true;
  size_t ncap = l->cap ? l->cap : 4096;
  while (ncap < need)
    ncap *= 2;
  if (!sbx_budget_take (&sbx_output_budget, ncap - l->cap))
    return false;
  char *nb = realloc (l->buf, ncap);
  if (nb == NULL)
    {
      sbx_budget_give (&sbx_output_budget, ncap - l->cap);
      return false;
    }
  l->buf = nb;
  l->cap = ncap;
  return true;
}

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
          if (!lines_room (l, l->len + seg))
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
  sbx_budget_give (&sbx_output_budget, l->cap);
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
load_kernel (struct sbx_interp *ip, char **src, struct sbx_err *err)
{
  if (sbx_read_file_at (AT_FDCWD, ip->kernel_path, src, 1u << 20, err) < 0)
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
        if (sbx_proc_input (st->engine, st->sid, st->pid, st->src, strlen (st->src), &st->in_err) < 0
            || sbx_proc_input (st->engine, st->sid, st->pid, ping, strlen (ping), &st->in_err) < 0)
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
kernel_start (struct sbx_interp *ip, const char *sid, const struct sbx_interp_ctx *c, uint32_t *pid, struct sbx_err *err)
{
  cleanup_free char *src = NULL;
  if (load_kernel (ip, &src, err) < 0)
    return -1;
  struct start_state st = { .engine = ip->engine, .sid = sid, .src = src };
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
  int r = sbx_exec (ip->engine, sid, &o, start_event, &st, err);
  lines_free (&st.lines);
  if (st.ready)
    {
      *pid = st.pid;
      return 0;
    }
  if (st.pid && !st.ended)
    kernel_kill (ip->engine, sid, st.pid);
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
ensure_kernel_locked (struct sbx_interp_box *b, struct sbx_interp_ctx *c, uint32_t *pid, struct sbx_err *err)
{
  if (ctx_deleted (b, c))
    return sbx_failk (err, SBX_E_NOT_FOUND, "context %s was removed", c->id);
  if (kernel_pid (b->ip->engine, b->sid, c->id, pid, err) < 0)
    return -1;
  if (*pid)
    return 0;
  if (kernel_start (b->ip, b->sid, c, pid, err) < 0)
    return -1;
  if (ctx_deleted (b, c)) /* removed while it started */
    {
      kernel_kill (b->ip->engine, b->sid, *pid);
      return sbx_failk (err, SBX_E_NOT_FOUND, "context %s was removed", c->id);
    }
  return 0;
}

/* ---- the interface ---- */

int
sbx_interp_new (struct sbx_engine *engine, const char *kernel_path, struct sbx_interp **out, struct sbx_err *err)
{
  struct sbx_interp *ip = calloc (1, sizeof *ip);
  if (ip == NULL || (ip->kernel_path = strdup (kernel_path)) == NULL)
    {
      free (ip);
      return sbx_fail (err, ENOMEM, "code interpreter");
    }
  ip->engine = engine;
  pthread_mutex_init (&ip->lock, NULL);
  *out = ip;
  return 0;
}

void
sbx_interp_free (struct sbx_interp *ip)
{
  if (ip == NULL)
    return;
  while (ip->boxes)
    {
      struct sbx_interp_box *b = ip->boxes;
      ip->boxes = b->next;
      box_free (b);
    }
  pthread_mutex_destroy (&ip->lock);
  free (ip->kernel_path);
  free (ip);
}

bool
sbx_interp_valid_ctx_id (const char *s, size_t n)
{
  return valid_ctx_id (s, n);
}

int
sbx_interp_box_open (struct sbx_interp *ip, const char *sid, struct sbx_interp_box **out, struct sbx_err *err)
{
  struct sbx_interp_box *b = box_get (ip, sid);
  if (b == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "out of memory");
  pthread_mutex_lock (&b->lock);
  int r = box_sync_locked (b, err);
  pthread_mutex_unlock (&b->lock);
  if (r < 0)
    {
      box_put (b);
      sbx_err_wrap (err, "cannot list the sandbox's contexts");
      /* whatever the cause (even a sandbox gone meanwhile), the contexts
         could not be reached: not a missing context */
      err->kind = SBX_E_UNAVAILABLE;
      return -1;
    }
  *out = b;
  return 0;
}

void
sbx_interp_box_close (struct sbx_interp_box *b)
{
  box_put (b);
}

static void
info_of (const struct sbx_interp_ctx *c, struct sbx_interp_ctx_info *out)
{
  snprintf (out->id, sizeof out->id, "%s", c->id);
  snprintf (out->language, sizeof out->language, "%s", c->lang);
  snprintf (out->cwd, sizeof out->cwd, "%s", *c->cwd ? c->cwd : DEFAULT_CWD);
}

void
sbx_interp_ctx_info (struct sbx_interp_box *b, struct sbx_interp_ctx *c, struct sbx_interp_ctx_info *out)
{
  pthread_mutex_lock (&b->lock);
  info_of (c, out);
  pthread_mutex_unlock (&b->lock);
}

int
sbx_interp_ctx_list (struct sbx_interp_box *b, struct sbx_interp_ctx_info **out, size_t *n, struct sbx_err *err)
{
  pthread_mutex_lock (&b->lock);
  size_t k = 0;
  for (struct sbx_interp_ctx *x = b->ctxs; x; x = x->next)
    if (!x->deleted)
      k++;
  struct sbx_interp_ctx_info *v = calloc (k ? k : 1, sizeof *v);
  if (v == NULL)
    {
      pthread_mutex_unlock (&b->lock);
      return sbx_fail (err, ENOMEM, "contexts");
    }
  k = 0;
  for (struct sbx_interp_ctx *x = b->ctxs; x; x = x->next)
    if (!x->deleted)
      info_of (x, &v[k++]);
  pthread_mutex_unlock (&b->lock);
  *out = v;
  *n = k;
  return 0;
}

int
sbx_interp_check_cwd (const char *cwd, struct sbx_err *err)
{
  bool bad = cwd && strlen (cwd) >= CWD_MAX;
  for (const char *p = cwd; p && *p; p++)
    if ((unsigned char) *p < 0x20) /* it goes into the kernel's tag, one line of the process list */
      bad = true;
  if (bad)
    return sbx_failk (err, SBX_E_INVALID, "cwd must be a path of at most %d bytes", CWD_MAX - 1);
  return 0;
}

int
sbx_interp_ctx_create (struct sbx_interp_box *b, const char *cwd, struct sbx_interp_ctx_info *out,
                       struct sbx_err *err)
{
  if (sbx_interp_check_cwd (cwd, err) < 0)
    return -1;
  char dir[CWD_MAX];
  snprintf (dir, sizeof dir, "%s", cwd && *cwd ? cwd : DEFAULT_CWD);
  char id[CTX_ID_MAX];
  if (new_ctx_id (id, err) < 0)
    return -1;
  pthread_mutex_lock (&b->lock);
  struct sbx_interp_ctx *x = ctx_add_locked (b, id, SBX_INTERP_LANGUAGE, dir, false);
  if (x)
    x->refs++;
  pthread_mutex_unlock (&b->lock);
  if (x == NULL)
    return sbx_failx (err, ENOMEM, "out of memory");
  uint32_t pid;
  pthread_mutex_lock (&x->exec);
  int r = ensure_kernel_locked (b, x, &pid, err);
  pthread_mutex_unlock (&x->exec);
  if (r < 0)
    {
      pthread_mutex_lock (&b->lock);
      x->deleted = true;
      pthread_mutex_unlock (&b->lock);
      ctx_put (b, x);
      return -1;
    }
  sbx_interp_ctx_info (b, x, out);
  ctx_put (b, x);
  return 0;
}

int
sbx_interp_ctx_get (struct sbx_interp_box *b, const char *cid, struct sbx_interp_ctx **out, struct sbx_err *err)
{
  if (cid && !valid_ctx_id (cid, strlen (cid)))
    return sbx_failk (err, SBX_E_NOT_FOUND, "Context %.64s not found", cid);
  pthread_mutex_lock (&b->lock);
  struct sbx_interp_ctx *x = cid ? ctx_find_locked (b, cid, false) : ctx_default_locked (b);
  if (x == NULL && cid)
    {
      pthread_mutex_unlock (&b->lock);
      return sbx_failk (err, SBX_E_NOT_FOUND, "Context %s not found", cid);
    }
  if (x == NULL)
    {
      char id[CTX_ID_MAX];
      if (new_ctx_id (id, err) < 0)
        {
          pthread_mutex_unlock (&b->lock);
          return -1;
        }
      if ((x = ctx_add_locked (b, id, SBX_INTERP_LANGUAGE, DEFAULT_CWD, true)) == NULL)
        {
          pthread_mutex_unlock (&b->lock);
          return sbx_failx (err, ENOMEM, "out of memory");
        }
    }
  x->refs++;
  pthread_mutex_unlock (&b->lock);
  *out = x;
  return 0;
}

void
sbx_interp_ctx_put (struct sbx_interp_box *b, struct sbx_interp_ctx *c)
{
  ctx_put (b, c);
}

static int
ctx_stop (struct sbx_interp_box *b, const char *cid, bool restart, struct sbx_err *err)
{
  pthread_mutex_lock (&b->lock);
  struct sbx_interp_ctx *x = ctx_find_locked (b, cid, false);
  if (x == NULL)
    {
      pthread_mutex_unlock (&b->lock);
      return sbx_failk (err, SBX_E_NOT_FOUND, "Context %s not found", cid);
    }
  x->refs++;
  if (restart)
    x->generation++;
  else
    x->deleted = true;
  pthread_mutex_unlock (&b->lock);

  uint32_t pid;
  int r = kernel_pid (b->ip->engine, b->sid, x->id, &pid, err);
  if (r == 0 && pid)
    kernel_kill (b->ip->engine, b->sid, pid);
  if (r == 0 && restart)
    {
      /* after the execution the kill ended (if any) has let go */
      pthread_mutex_lock (&x->exec);
      r = ensure_kernel_locked (b, x, &pid, err);
      pthread_mutex_unlock (&x->exec);
    }
  ctx_put (b, x);
  if (r < 0)
    err->kind = SBX_E_UNAVAILABLE; /* the context existed: say so, whatever failed */
  return r;
}

int
sbx_interp_ctx_delete (struct sbx_interp_box *b, const char *cid, struct sbx_err *err)
{
  return ctx_stop (b, cid, false, err);
}

int
sbx_interp_ctx_restart (struct sbx_interp_box *b, const char *cid, struct sbx_err *err)
{
  return ctx_stop (b, cid, true, err);
}

/* ---- executions ---- */

struct sbx_interp_exec {
  struct sbx_interp_box *box;
  struct sbx_interp_ctx *ctx;
  sbx_interp_event_fn fn;
  void *ud;
  char rid[33];
  char *req; /* the request line */
  uint32_t pid;
  unsigned generation;
  bool sent, started, done, ended, gone, input_failed;
  int exit_code, signal;
  uint64_t gone_at;
  struct lines lines;
  struct sbx_err in_err;
};

/* Pass an event on; notices when the client has gone and then interrupts
   the cell. */
static void
deliver (struct sbx_interp_exec *x, const struct sbx_interp_event *ev)
{
  if (x->gone)
    return;
  if (x->fn (ev, x->ud) < 0)
    {
      struct sbx_err err;
      x->gone = true;
      x->gone_at = sbx_now_ns ();
      if (x->pid && !x->done)
        sbx_proc_signal (x->box->ip->engine, x->box->sid, x->pid, SIGINT, &err);
    }
}

static void
deliver_kind (struct sbx_interp_exec *x, enum sbx_interp_event_kind kind)
{
  struct sbx_interp_event ev = { .kind = kind };
  deliver (x, &ev);
}

static void
deliver_failure (struct sbx_interp_exec *x, enum sbx_interp_failure f, const char *msg)
{
  struct sbx_interp_event ev = { .kind = SBX_INTERP_FAILED, .data = msg, .len = strlen (msg), .failure = f };
  deliver (x, &ev);
}

static int
exec_line (const char *line, size_t n, void *ud)
{
  struct sbx_interp_exec *x = ud;
  const char *p;
  size_t pn;
  if (!line_for (line, n, x->rid, &p, &pn))
    return 0;
  struct sbx_interp_event ev = { .kind = SBX_INTERP_LINE, .data = p, .len = pn };
  deliver (x, &ev);
  if (is_end (p, pn))
    {
      x->done = true;
      return -1;
    }
  return 0;
}

static int
exec_event (const struct sbx_proc_event *ev, void *ud)
{
  struct sbx_interp_exec *x = ud;
  if (x->gone && sbx_now_ns () - x->gone_at > GONE_GRACE_NS)
    return -1; /* the cell ignores the interrupt: stop waiting for it */
  switch (ev->kind)
    {
    case SBX_PROC_START:
      x->started = true;
      if (!x->sent)
        {
          x->sent = true;
          if (sbx_proc_input (x->box->ip->engine, x->box->sid, x->pid, x->req, strlen (x->req), &x->in_err) < 0)
            {
              x->input_failed = true;
              return -1;
            }
        }
      return 0;
    case SBX_PROC_STDOUT:
      {
        int r = lines_feed (&x->lines, ev->data, ev->len, exec_line, x);
        if (x->lines.dropped)
          {
            x->lines.dropped = false;
            deliver_kind (x, SBX_INTERP_DROPPED);
          }
        return r;
      }
    case SBX_PROC_KEEPALIVE:
      /* like E2B's server: lets the client's idle timers (and us, if it has
         gone) know */
      deliver_kind (x, SBX_INTERP_KEEPALIVE);
      return 0;
    case SBX_PROC_END:
      x->ended = true;
      x->exit_code = ev->exit_code;
      x->signal = ev->signal;
      return -1;
    default:
      return 0;
    }
}

int
sbx_interp_exec_new (const char *code, size_t code_len, const struct sbx_interp_env *env, size_t n_env,
                     struct sbx_interp_exec **out, struct sbx_err *err)
{
  struct sbx_interp_exec *x = calloc (1, sizeof *x);
  if (x == NULL)
    return sbx_failx (err, ENOMEM, "out of memory");
  if (new_rid (x->rid, err) < 0)
    {
      free (x);
      return -1;
    }
  /* the kernel's request line: {"id", "code", "env_vars"} */
  json_t *vars = NULL;
  if (env)
    {
      vars = json_object ();
      for (size_t i = 0; vars && i < n_env; i++)
        if (json_object_set_new (vars, env[i].name, json_stringn (env[i].value, env[i].value_len)) < 0)
          {
            json_decref (vars);
            vars = NULL;
          }
    }
  json_t *req = env && vars == NULL
                    ? NULL
                    : json_pack ("{s:s, s:s%, s:o?}", "id", x->rid, "code", code, code_len, "env_vars", vars);
  char *line = req ? json_dumps (req, JSON_COMPACT) : NULL;
  json_decref (req);
  if (line == NULL || (x->req = malloc (strlen (line) + 2)) == NULL)
    {
      free (line);
      free (x);
      return sbx_failx (err, ENOMEM, "out of memory");
    }
  sprintf (x->req, "%s\n", line);
  free (line);
  *out = x;
  return 0;
}

void
sbx_interp_exec_free (struct sbx_interp_exec *x)
{
  if (x == NULL)
    return;
  lines_free (&x->lines);
  free (x->req);
  free (x);
}

void
sbx_interp_exec_run (struct sbx_interp_exec *x, struct sbx_interp_box *b, struct sbx_interp_ctx *c,
                     sbx_interp_event_fn fn, void *ud)
{
  struct sbx_engine *e = b->ip->engine;
  struct sbx_err err = { 0 };
  int r = -1;
  x->box = b;
  x->ctx = c;
  x->fn = fn;
  x->ud = ud;
  pthread_mutex_lock (&c->exec);
  x->generation = ctx_generation (b, c);
  for (int attempt = 0; attempt < 2; attempt++)
    {
      uint32_t pid;
      if (ensure_kernel_locked (b, c, &pid, &err) < 0)
        {
          deliver_failure (x, SBX_INTERP_NO_KERNEL, err.msg);
          goto end;
        }
      x->pid = pid;
      x->started = false;
      r = sbx_attach (e, b->sid, pid, KEEPALIVE_MS, exec_event, x, &err);
      if (r < 0 && !x->started && attempt == 0)
        continue; /* the kernel went away in between: start another */
      break;
    }
  if (x->done || x->gone)
    goto out;
  if (x->ended)
    {
      char msg[256];
      bool restarted = ctx_generation (b, c) != x->generation;
      bool deleted = ctx_deleted (b, c);
      if (deleted)
        snprintf (msg, sizeof msg, "Context was removed");
      else if (restarted)
        snprintf (msg, sizeof msg, "Context was restarted");
      else if (x->signal)
        snprintf (msg, sizeof msg, "The context's Python process was killed by signal %d (%s); its state is lost",
                  x->signal, strsignal (x->signal));
      else
        snprintf (msg, sizeof msg, "The context's Python process exited with status %d; its state is lost",
                  x->exit_code);
      deliver_failure (x, SBX_INTERP_KERNEL_DIED, msg);
      uint32_t pid;
      if (!deleted && !restarted)
        ensure_kernel_locked (b, c, &pid, &err); /* a fresh one for the next execution */
    }
  else if (x->input_failed)
    deliver_failure (x, SBX_INTERP_CUT_SHORT, x->in_err.msg);
  else if (r < 0)
    deliver_failure (x, SBX_INTERP_CUT_SHORT, err.msg);
  else
    deliver_failure (x, SBX_INTERP_CUT_SHORT, "the execution stopped before it finished");
end:
  deliver_kind (x, SBX_INTERP_END);
out:
  pthread_mutex_unlock (&c->exec);
}
