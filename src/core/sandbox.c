/*
 * sandbox.c - the sandbox engine (see sandbox.h): bookkeeping of sandboxes,
 * their life cycle (create, timeout, pause, resume, destroy, re-attach after
 * a daemon restart) and the client side of the init agent protocol.
 *
 * Isolation itself is isolate.c's job, limits are cgroup.c's and disk.c's;
 * this file only decides what to ask of them and remembers the answers.
 *
 * Locking: one engine mutex guards the table and every sandbox's fields.
 * Sandboxes are reference counted so that a request in flight (a streaming
 * exec, say) keeps its sandbox's memory alive while it is destroyed; the
 * destroy kills the agent, which ends the request.
 */
#include "sandbox.h"

#include <dirent.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "agent.h"
#include "cgroup.h"
#include "disk.h"
#include "isolate.h"
#include "netlink.h"
#include "seccomp.h"
#include "template.h"

#define UID_SLOT_DIR "/run/sbxd/idmap"
#define UID_RANGE 65536u
#define UID_FIRST 100000u
#define UID_SLOTS 30000u
#define STOPPED_KEEP 256 /* stopped sandboxes remembered for status queries */
#define SPARE_WORKERS 8     /* threads preparing spares at once */
#define SPARE_IDLE_MS 10000 /* the pool halves after this long without a claim */
#define SPARE_WINDOW_MS 2000 /* claims this recent size the pool */
#define SPARE_REFILL_DELAY_MS 20 /* a refill waits this long after a claim (see below) */
#define SPARE_BUSY_MS 250        /* creates came this recently: the pool refills gently (see below), */
#define SPARE_BUSY_WORKERS 2     /* with this many workers at most */
#define SPARE_CHECK_MS 1000      /* booted spares' templates are looked at this often (pool_check_booted_locked) */
#define SPARE_BOOTED_MAX 32      /* spares booted ahead for one template, at most (booted_want_locked) */
#define ID_CHAINS 16384 /* the id index's chains: under one sandbox each up to ten thousand */
#define DEFAULT_MEMORY_MB 2048
#define DEFAULT_CPU_MILLIS 2000
#define DEFAULT_PIDS 1024
#define DEFAULT_NOFILE 4096
#define TEARDOWN_WORKERS 4 /* sandboxes torn down at once (teardown_main) */
#define LOOPS_KEEP 128     /* free loop devices of ended sandboxes kept for the next disks (loops_main) */
#define TEARDOWN_TAKE 32    /* sandboxes one worker tears down together, at most (teardown_main) */
#define TEARDOWN_BACKLOG 64 /* doomed sandboxes waiting or being torn down, at most, before a destroy waits (doom) */
#define TEARDOWN_JOURNAL "destroying" /* in STATE/sandboxes/ID: its teardown is owed */
#define GONE_PREFIX ".gone-"         /* STATE/sandboxes/.gone-ID: a torn-down sandbox's directory being removed */

struct sandbox {
  char id[SBX_ID_MAX];
  char template_name[64];
  char default_user[32];
  char workdir[256];             /* the template's: where its default user's commands start ("": home) */
  enum sbx_state state;
  int64_t created_ms, end_ms;
  uint32_t timeout_s;
  struct sbx_limits limits;
  char *reason;
  pid_t init_pid;
  unsigned long long init_start; /* start time of init, guards pid reuse */
  int pidfd;                     /* its only descriptor while it lives (sandbox_dir) */
  int loop_nr;                   /* its disk's loop device; -1: not known (re-attached) */
  bool watched;                  /* its pidfd is in the reaper's epoll set */
  bool init_gone;                /* the reaper saw its pidfd readable: its init died */
  uint32_t uid_slot;
  bool has_net;                  /* a veth and rules exist for its slot */
  bool net_asked_set, net_asked; /* whether the client asked for internet access, as it said it */
  struct sbx_net_policy net;
  uint64_t cpu_sample_ns, cpu_sample_at;
  int refs;
  bool busy;                     /* a state change is in progress */
  bool doomed;                   /* answered as gone (doom): its teardown is queued or under way */
  struct sandbox *tnext;         /* in the teardown queue */
  char **env;                    /* the caller's environment (snapshots keep it); NULL: none */
  enum sbx_on_timeout on_timeout;
  bool auto_resume;
  bool memory_dropped;           /* paused by sbx_pause_files */
  bool disk_ids0;                /* its disk holds the sandbox's own ids (idmapped layers): it can be copied */
  uint32_t n_layers;             /* snapshot layers below its disk: layer-N.img in its directory */
  struct sandbox *next;
  struct sandbox *id_next;       /* in its chain of the engine's id index */
  /* a spare booted ahead for its template (boot_spare), and the identity
     of the template's tree it booted from (a rebuild replaces the tree) */
  bool booted;
  dev_t boot_dev;
  ino_t boot_ino;
  /* until it boots: its disk, agent socket, layers' idmapping and waiting child */
  int disk_fd, agent_fd, idmap_fd;
  struct sbx_isolate_proc proc;
};

struct sbx_engine {
  char state_dir[PATH_MAX];
  char sandboxes_dir[PATH_MAX];
  int sandboxes_fd;              /* O_PATH of sandboxes_dir */
  char fs_block_dir[PATH_MAX];   /* STATE/fsblock: what blocked paths are covered with */
  char blank_dir[PATH_MAX];      /* STATE/blanks: formatted empty disks, one per size (make_disk) */
  char template_dir[PATH_MAX];
  int init_fd;
  struct sbx_isolate_spawner *spawner; /* sandboxes are cloned there */
  sbx_event_fn on_event;
  void *event_ud;
  sbx_ending_fn on_ending;
  uint32_t max_timeout_s;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct sandbox *list;
  struct sandbox *by_id[ID_CHAINS]; /* the list again, by id (find_locked) */
  int n_stopped;
  pthread_t reaper;
  int reaper_wake;               /* eventfd: the engine closes */
  bool stop;
  /* spares: sandboxes prepared up to the point where the template
     matters (see "the spare pool" below) */
  struct sandbox **spares;       /* spares_max slots */
  int n_spares, spares_target, spares_min, spares_max;
  int spares_preparing;          /* by the pool's workers, now */
  int inline_preparing;          /* by creates that found no spare, now */
  int spares_booting;            /* creates booting a spare they took, now */
  int spares_booting_ahead;      /* workers preparing a spare to boot for boot_template, now */
  uint64_t spare_hits, spare_misses, spare_booted_hits;
  uint64_t claims_recent[2];     /* claims in this and the previous window */
  uint64_t other_recent[2];      /* of them, creates no spare booted for boot_template could serve */
  uint64_t booted_checked_ns;    /* when booted spares' templates were last looked at */
  char boot_template[64];        /* spares are booted ahead for this template ("": none yet) */
  int64_t claims_window;         /* the window claims_recent[0] counts */
  uint64_t last_claim_ns;
  pthread_cond_t spare_cond;
  pthread_t spare_threads[SPARE_WORKERS];
  int n_spare_threads;
  struct sbx_net *net; /* NULL: sandboxes have loopback only */
  /* disk admission (disk_admit) */
  bool disk_reserve_set;
  uint64_t disk_reserve;         /* bytes, when set */
  double disk_overcommit;
  uint64_t disk_pending;         /* bytes promised to creates not yet in the list */
  /* teardowns (doom, teardown_main): a FIFO of doomed sandboxes and the
     workers that empty it */
  struct sandbox *tq_head, *tq_tail;
  size_t tq_len;
  unsigned teardowns_pending;    /* doomed sandboxes, queued or being torn down */
  pthread_cond_t tq_cond;
  pthread_t teardown_threads[TEARDOWN_WORKERS];
  int n_teardown_threads;
  bool tq_stop;                  /* workers leave once the queue is empty */
  /* the loop devices of torn-down sandboxes, free, oldest first; beyond
     LOOPS_KEEP the loops thread removes them (loops_main) */
  int *loops_free;
  size_t n_loops_free, cap_loops_free;
  pthread_cond_t loops_cond;
  pthread_t loops_thread;
  bool loops_thread_on;
};

void
sbx_engine_stats (struct sbx_engine *e, struct sbx_engine_stats *out)
{
  memset (out, 0, sizeof *out);
  pthread_mutex_lock (&e->lock);
  for (struct sandbox *s = e->list; s; s = s->next)
    out->live += s->state != SBX_STOPPED && !s->doomed;
  out->spares = (unsigned) e->n_spares;
  for (int i = 0; i < e->n_spares; i++)
    out->spares_booted += e->spares[i]->booted;
  out->spares_target = (unsigned) e->spares_target;
  out->spare_hits = e->spare_hits;
  out->spare_booted_hits = e->spare_booted_hits;
  out->spare_misses = e->spare_misses;
  out->teardowns_pending = e->teardowns_pending;
  pthread_mutex_unlock (&e->lock);
}

const char *
sbx_state_name (enum sbx_state s)
{
  switch (s)
    {
    case SBX_CREATING:
      return "creating";
    case SBX_RUNNING:
      return "running";
    case SBX_PAUSED:
      return "paused";
    case SBX_STOPPED:
      return "stopped";
    default:
      return "error";
    }
}

static void
emit (struct sbx_engine *e, const char *id, enum sbx_event_kind k, const char *reason)
{
  if (e->on_event)
    e->on_event (e->event_ud, e, id, k, reason);
}

/* ---- where a create's time goes: one debug line per create, the
   milliseconds of each phase ("create phases"), for the operator who
   asks why creates are slow; costs a clock read per phase ---- */

#define CLOCK_PHASES 12

struct create_clock {
  uint64_t last;
  int n;
  const char *name[CLOCK_PHASES];
  uint64_t ns[CLOCK_PHASES];
};

static void
clock_start (struct create_clock *c)
{
  c->n = 0;
  c->last = sbx_now_ns ();
}

static void
clock_mark (struct create_clock *c, const char *phase)
{
  uint64_t now = sbx_now_ns ();
  if (c->n < CLOCK_PHASES)
    {
      c->name[c->n] = phase;
      c->ns[c->n++] = now - c->last;
    }
  c->last = now;
}

static void
clock_log (const struct create_clock *c, const char *what, const char *id, const char *spare)
{
  if (!sbx_log_enabled (SBX_LOG_DEBUG))
    return;
  char text[512];
  size_t k = 0;
  uint64_t total = 0;
  for (int i = 0; i < c->n && k < sizeof text; i++)
    {
      total += c->ns[i];
      int w = snprintf (text + k, sizeof text - k, "%s%s=%.3f", i ? " " : "", c->name[i], (double) c->ns[i] / 1e6);
      k += w > 0 ? (size_t) w : 0;
    }
  char ms[32];
  snprintf (ms, sizeof ms, "%.3f", (double) total / 1e6);
  if (spare)
    sbx_log_fields (SBX_LOG_DEBUG, what, "sandbox", id, "spare", spare, "total_ms", ms, "phases_ms", text, NULL);
  else
    sbx_log_fields (SBX_LOG_DEBUG, what, "sandbox", id, "total_ms", ms, "phases_ms", text, NULL);
}

/* ---- references ---- */

static void
sandbox_free (struct sandbox *s)
{
  if (s->disk_fd >= 0)
    close (s->disk_fd);
  if (s->agent_fd >= 0)
    close (s->agent_fd);
  if (s->idmap_fd >= 0)
    close (s->idmap_fd);
  if (s->proc.sock >= 0)
    close (s->proc.sock);
  if (s->pidfd >= 0)
    close (s->pidfd);
  free (s->reason);
  sbx_strv_free (s->env);
  sbx_net_policy_free (&s->net);
  free (s);
}

/* The engine's list is indexed by id, so that finding a sandbox costs
   the same at ten thousand as at ten: a walk of the list compared every
   id before it, under the engine's lock, for each request and for each
   sandbox at every pass of the metrics sampler. */
static struct sandbox **
id_chain (struct sbx_engine *e, const char *id)
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *) id; *p; p++)
    h = (h ^ *p) * 16777619u;
  return &e->by_id[h % ID_CHAINS];
}

/* S joins the index (it has joined the list).  Lock held. */
static void
id_index_add_locked (struct sbx_engine *e, struct sandbox *s)
{
  struct sandbox **chain = id_chain (e, s->id);
  s->id_next = *chain;
  *chain = s;
}

/* S leaves the index (it leaves the list).  Lock held. */
static void
id_index_del_locked (struct sbx_engine *e, struct sandbox *s)
{
  for (struct sandbox **pp = id_chain (e, s->id); *pp; pp = &(*pp)->id_next)
    if (*pp == s)
      {
        *pp = s->id_next;
        return;
      }
}

/* Find a sandbox of the list (the newest of that id); caller holds
   e->lock. */
static struct sandbox *
find_locked (struct sbx_engine *e, const char *id)
{
  for (struct sandbox *s = *id_chain (e, id); s; s = s->id_next)
    if (strcmp (s->id, id) == 0)
      return s;
  return NULL;
}

static struct sandbox *
get (struct sbx_engine *e, const char *id, struct sbx_err *err)
{
  pthread_mutex_lock (&e->lock);
  struct sandbox *s = find_locked (e, id);
  if (s)
    s->refs++;
  pthread_mutex_unlock (&e->lock);
  if (s == NULL)
    sbx_failk (err, SBX_E_NOT_FOUND, "sandbox not found");
  return s;
}

/* A stopped sandbox stays in the list for status queries (at most
   STOPPED_KEEP of them) but keeps no descriptor: its pidfd is closed once
   the list's is the only reference left (no caller can still be using
   it).  So the daemon holds one descriptor per live sandbox (sandbox_dir)
   and none per ended one.  Lock held. */
static void
close_if_done_locked (struct sbx_engine *e, struct sandbox *s)
{
  if (s->refs != 1 || s->state != SBX_STOPPED || s->doomed || s->pidfd < 0 || find_locked (e, s->id) != s)
    return;
  close (s->pidfd);
  s->pidfd = -1;
}

/* S's directory, STATE/sandboxes/ID, as a new O_PATH descriptor; -1 with
   errno set.  Opened when needed rather than held: the daemon's hard
   RLIMIT_NOFILE may be as low as 20,000 where it cannot raise it, and a
   held descriptor per sandbox halved the sandboxes that fit beside their
   pidfds.  An open is a few microseconds next to what it serves. */
static int
sandbox_dir (const struct sbx_engine *e, const struct sandbox *s)
{
  return openat (e->sandboxes_fd, s->id, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static void
put (struct sbx_engine *e, struct sandbox *s)
{
  pthread_mutex_lock (&e->lock);
  bool last = --s->refs == 0;
  if (!last)
    close_if_done_locked (e, s);
  pthread_mutex_unlock (&e->lock);
  if (last)
    sandbox_free (s);
}

/* ---- persistence: STATE/sandboxes/ID/sandbox.json ----

   The engine's own runtime state, what it needs to re-attach to a sandbox
   after a restart; who owns the sandbox and what clients said of it are
   the service's records. */

static size_t
strv_len (char *const *v)
{
  size_t n = 0;
  while (v && v[n])
    n++;
  return n;
}

static json_t *
strv_json (char **v, size_t n)
{
  json_t *a = json_array ();
  for (size_t i = 0; a && i < n; i++)
    json_array_append_new (a, json_string (v[i]));
  return a;
}

/* A JSON array of strings as a NULL-terminated vector (NULL when empty
   or not such an array). */
static char **
strv_load (const json_t *a)
{
  size_t n = json_is_array (a) ? json_array_size (a) : 0;
  if (n == 0 || n > SBX_ISOLATE_ENV_COUNT)
    return NULL;
  char **v = calloc (n + 1, sizeof *v);
  for (size_t i = 0; v && i < n; i++)
    {
      const char *str = json_string_value (json_array_get (a, i));
      if (str == NULL || (v[i] = strdup (str)) == NULL)
        {
          sbx_strv_free (v);
          return NULL;
        }
    }
  return v;
}

/* {"mode": "internet"|"none", "allow": [...], "deny": [...]} */
static json_t *
net_state_json (const struct sbx_net_policy *p)
{
  char **allow, **deny;
  size_t na, nd;
  struct sbx_err err;
  if (sbx_net_policy_rules (p, &allow, &na, &deny, &nd, &err) < 0)
    return NULL;
  json_t *j = json_pack ("{s:s, s:o, s:o}", "mode", p->enabled ? "internet" : "none", "allow", strv_json (allow, na),
                         "deny", strv_json (deny, nd));
  sbx_strv_free (allow);
  sbx_strv_free (deny);
  if (j && p->n_rules)
    {
      /* [{"host", "headers": [[name, value], ...]}, ...], in order */
      json_t *rules = json_array ();
      for (size_t i = 0; i < p->n_rules; i++)
        {
          json_t *h = json_array ();
          for (size_t k = 0; k < p->rules[i].n_headers; k++)
            json_array_append_new (h, json_pack ("[s, s]", p->rules[i].headers[k].name, p->rules[i].headers[k].value));
          json_array_append_new (rules, json_pack ("{s:s, s:o}", "host", p->rules[i].host, "headers", h));
        }
      json_object_set_new (j, "rules", rules);
    }
  if (j && p->proxy)
    json_object_set_new (j, "proxy",
                         json_pack ("{s:s, s:I, s:i, s:s?, s:s?}", "address", p->proxy->address,
                                    "ip", (json_int_t) p->proxy->ip, "port", (int) p->proxy->port, "user",
                                    p->proxy->user, "pass", p->proxy->pass));
  return j;
}

/* The rules and the proxy of a network state (net_state_json) into P. */
static int
net_state_load_extra (const json_t *j, struct sbx_net_policy *p, struct sbx_err *err)
{
  const json_t *rules = json_object_get (j, "rules"), *r;
  size_t i;
  json_array_foreach (rules, i, r)
    {
      const json_t *h = json_object_get (r, "headers");
      size_t n = json_array_size (h);
      const char **names = calloc (n + 1, sizeof *names), **values = calloc (n + 1, sizeof *values);
      int ok = names && values ? 0 : sbx_fail (err, ENOMEM, "network state");
      for (size_t k = 0; ok == 0 && k < n; k++)
        {
          names[k] = json_string_value (json_array_get (json_array_get (h, k), 0));
          values[k] = json_string_value (json_array_get (json_array_get (h, k), 1));
        }
      if (ok == 0)
        ok = sbx_net_rule_add (p, json_string_value (json_object_get (r, "host")), names, values, n, err);
      free (names);
      free (values);
      if (ok < 0)
        return -1;
    }
  const json_t *x = json_object_get (j, "proxy");
  if (x)
    return sbx_net_socks_set (p, json_string_value (json_object_get (x, "address")),
                              (uint32_t) json_integer_value (json_object_get (x, "ip")),
                              (uint16_t) json_integer_value (json_object_get (x, "port")),
                              json_string_value (json_object_get (x, "user")),
                              json_string_value (json_object_get (x, "pass")), err);
  return 0;
}

static int
net_state_load (const json_t *j, struct sbx_net_policy *p, struct sbx_err *err)
{
  const char *mode = json_string_value (json_object_get (j, "mode"));
  const json_t *allow = json_object_get (j, "allow"), *deny = json_object_get (j, "deny");
  if (mode == NULL || !json_is_array (allow) || !json_is_array (deny))
    return sbx_failx (err, EINVAL, "network state without a mode or rules");
  size_t na = json_array_size (allow), nd = json_array_size (deny);
  const char **a = calloc (na + 1, sizeof *a), **d = calloc (nd + 1, sizeof *d);
  int r = -1;
  if (a && d)
    {
      for (size_t i = 0; i < na; i++)
        a[i] = json_string_value (json_array_get (allow, i));
      for (size_t i = 0; i < nd; i++)
        d[i] = json_string_value (json_array_get (deny, i));
      r = sbx_net_policy_build (true, a, na, "allow", d, nd, "deny", p, err);
      if (r == 0)
        p->enabled = strcmp (mode, "none") != 0;
      if (r == 0 && (r = net_state_load_extra (j, p, err)) < 0)
        sbx_net_policy_free (p);
    }
  else
    sbx_fail (err, ENOMEM, "network state");
  free (a);
  free (d);
  return r;
}

static int
save_locked (struct sbx_engine *e, struct sandbox *s, struct sbx_err *err)
{
  json_t *j = json_pack ("{s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:I, s:i, s:{s:i, s:i, s:i, s:i, s:i}}", "id",
                         s->id, "template", s->template_name, "user", s->default_user, "state",
                         sbx_state_name (s->state), "created_ms", (json_int_t) s->created_ms, "end_ms",
                         (json_int_t) s->end_ms, "timeout_s", (int) s->timeout_s, "init_pid", (int) s->init_pid,
                         "init_start", (json_int_t) s->init_start, "uid_slot", (int) s->uid_slot, "limits", "cpu_millis",
                         (int) s->limits.cpu_millis, "memory_mb", (int) s->limits.memory_mb, "disk_mb",
                         (int) s->limits.disk_mb, "pids_max", (int) s->limits.pids_max, "nofile", (int) s->limits.nofile);
  if (j == NULL)
    return sbx_failx (err, ENOMEM, "encode sandbox record");
  if (s->workdir[0])
    json_object_set_new (j, "workdir", json_string (s->workdir));
  if (s->has_net)
    {
      json_t *net = net_state_json (&s->net);
      if (net == NULL)
        {
          json_decref (j);
          return sbx_failx (err, ENOMEM, "encode sandbox record");
        }
      if (s->net_asked_set)
        json_object_set_new (net, "internet_asked", json_boolean (s->net_asked));
      json_object_set_new (j, "network", net);
    }
  json_object_set_new (j, "env", strv_json (s->env, strv_len (s->env)));
  json_object_set_new (j, "on_timeout", json_integer (s->on_timeout));
  json_object_set_new (j, "auto_resume", json_boolean (s->auto_resume));
  json_object_set_new (j, "memory_dropped", json_boolean (s->memory_dropped));
  json_object_set_new (j, "disk_ids0", json_boolean (s->disk_ids0));
  json_object_set_new (j, "layers", json_integer (s->n_layers));
  cleanup_free char *text = json_dumps (j, JSON_COMPACT);
  json_decref (j);
  if (text == NULL)
    return sbx_failx (err, ENOMEM, "encode sandbox record");
  cleanup_close int dfd = sandbox_dir (e, s);
  /* the temporary file is kept between saves and written again: making a
     new inode made a create's save take 0.3 to 0.7 ms while the spare
     pool made its own files; reusing one, 0.1 to 0.2 ms.  It is written
     over and then cut to the record's length, never emptied first: ext4
     flushes a file emptied by a truncation when it is closed
     (auto_da_alloc), which was half of a save (0.08 ms; 0.04 without) */
  cleanup_close int fd = dfd < 0 ? -1 : openat (dfd, "sandbox.json.tmp", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return sbx_fail (err, errno, "write record of %s", s->id);
  /* no fsync: a host crash ends the sandbox's processes anyway, and the
     exchange keeps the record whole */
  size_t len = strlen (text);
  if (sbx_write_full (fd, text, len) < 0 || ftruncate (fd, (off_t) len) < 0)
    return sbx_fail (err, errno, "write record of %s", s->id);
  /* exchanged, not renamed over: ext4 flushes a file renamed over another
     (auto_da_alloc), which made this write a fifth of a create's time in
     the engine; the record is whole at every moment either way, and the
     old one is the next save's temporary file */
  if (renameat2 (dfd, "sandbox.json.tmp", dfd, "sandbox.json", RENAME_EXCHANGE) == 0)
    return 0;
  if (errno != ENOENT || renameat (dfd, "sandbox.json.tmp", dfd, "sandbox.json") < 0)
    return sbx_fail (err, errno, "write record of %s", s->id);
  /* the first save: the next one finds its temporary file made */
  int next = openat (dfd, "sandbox.json.tmp", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (next >= 0)
    close (next);
  return 0;
}

/* ---- machine-wide uid ranges: one 65536-id range per sandbox, claimed
   with an O_EXCL file so that instances sharing the machine never hand
   the same host ids to two sandboxes.  The file names its owner, the
   sandbox's directory ("STATE/sandboxes/ID\n"), so that what a crash
   left can be told from what another instance holds (sweep_uid_slots). ---- */

#define UID_SLOT_OWNER_MAX (PATH_MAX + SBX_ID_MAX + 2)
#define UID_SLOT_GRACE_S 60 /* an ownerless range younger than this may be being claimed */

static void
uid_slot_owner (struct sbx_engine *e, const char *id, char buf[UID_SLOT_OWNER_MAX])
{
  snprintf (buf, UID_SLOT_OWNER_MAX, "%s/%s\n", e->sandboxes_dir, id);
}

static int
uid_slot_claim (const char *owner, uint32_t *slot, struct sbx_err *err)
{
  if (sbx_mkdir_p (UID_SLOT_DIR, 0700, err) < 0)
    return -1;
  uint32_t start;
  sbx_random_bytes (&start, sizeof start);
  for (uint32_t i = 0; i < UID_SLOTS; i++)
    {
      uint32_t k = (start + i) % UID_SLOTS;
      char path[64];
      snprintf (path, sizeof path, UID_SLOT_DIR "/%u", k);
      int fd = open (path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
      if (fd >= 0)
        {
          int w = sbx_write_full (fd, owner, strlen (owner));
          int e2 = errno;
          close (fd);
          if (w < 0)
            {
              unlink (path);
              return sbx_fail (err, e2, "claim uid range");
            }
          *slot = k;
          return 0;
        }
      if (errno != EEXIST)
        return sbx_fail (err, errno, "claim uid range");
    }
  return sbx_failk (err, SBX_E_UNAVAILABLE, "no free uid range");
}

/* The owner named in SLOT's file into BUF (without its newline): its
   length, 0 for a file that names none (written by an older sbxd), -1
   when there is no file. */
static ssize_t
uid_slot_read (uint32_t slot, char buf[UID_SLOT_OWNER_MAX], struct stat *st)
{
  char path[64];
  snprintf (path, sizeof path, UID_SLOT_DIR "/%u", slot);
  cleanup_close int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || (st && fstat (fd, st) < 0))
    return -1;
  ssize_t n = sbx_read_full (fd, buf, UID_SLOT_OWNER_MAX - 1);
  if (n < 0)
    return -1;
  buf[n] = '\0';
  if (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  return n;
}

/* Release SLOT, which OWNER claimed: a file that names another owner is
   someone else's now and stays. */
static void
uid_slot_release (const char *owner, uint32_t slot)
{
  if (slot >= UID_SLOTS)
    return;
  char have[UID_SLOT_OWNER_MAX];
  ssize_t n = uid_slot_read (slot, have, NULL);
  size_t len = strlen (owner);
  if (len && owner[len - 1] == '\n')
    len--;
  if (n > 0 && ((size_t) n != len || memcmp (have, owner, len) != 0))
    {
      sbx_log_fields (SBX_LOG_WARN, "an id range is claimed by someone else, leaving it", "owner", have, NULL);
      return;
    }
  char path[64];
  snprintf (path, sizeof path, UID_SLOT_DIR "/%u", slot);
  unlink (path);
}

/* Whether OWNER's range SLOT is still claimed for it (a file of an older
   sbxd names no owner, and counts as anyone's).  A teardown resumed after
   a crash may find its range released already, and perhaps claimed since
   by someone else, whose network rules it must not touch. */
static bool
uid_slot_ours (const char *owner, uint32_t slot)
{
  char have[UID_SLOT_OWNER_MAX];
  ssize_t n = slot < UID_SLOTS ? uid_slot_read (slot, have, NULL) : -1;
  size_t len = strlen (owner);
  if (len && owner[len - 1] == '\n')
    len--;
  return n == 0 || (n > 0 && (size_t) n == len && memcmp (have, owner, len) == 0);
}

static uid_t
uid_base (uint32_t slot)
{
  return UID_FIRST + slot * UID_RANGE;
}

#define SANDBOXES_CGROUP "sbxd" /* every sandbox's cgroup is one of its children */

static void
cgroup_name (const char *id, char *buf, size_t n)
{
  sbx_path (buf, n, SANDBOXES_CGROUP "/%s", id);
}

/* End what runs in sandbox ID's cgroups and remove them, waiting up to
   TIMEOUT_MS; a failure is logged as WHAT. */
static void
cgroups_destroy (const char *id, int timeout_ms, const char *what)
{
  char cg[128];
  struct sbx_err err;
  cgroup_name (id, cg, sizeof cg);
  if (sbx_cgroup_destroy (cg, timeout_ms, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, what, "sandbox", id, "error", err.msg, NULL);
}

/* ---- teardown ---- */

/* ---- free loop devices ----

   A loop device detaches itself when its sandbox's disk is unmounted,
   but stays, free, until removed: about 175 KiB of kernel memory each.
   Attaching reuses a free one (LOOP_CTL_GET_FREE), so their number is
   the most disks there have been at once: after 6,900 sandboxes, 6,900
   free devices held 1.2 GB until the machine rebooted.  Removing one
   takes about 45 ms (the kernel waits for grace periods), and making one
   a quarter of a millisecond, so the LOOPS_KEEP most recently freed stay
   for the next disks and a thread of their own, at the background
   priority, removes the older ones: neither a create nor a teardown
   waits for it. */

/* S's disk is unmounted (its processes are gone, its mount descriptor
   closed): its loop device is free. */
static void
loop_released (struct sbx_engine *e, struct sandbox *s)
{
  if (s->loop_nr < 0)
    return;
  pthread_mutex_lock (&e->lock);
  if (sbx_reserve (&e->loops_free, &e->cap_loops_free, (e->n_loops_free + 1) * sizeof *e->loops_free, 256) == 0)
    {
      e->loops_free[e->n_loops_free++] = s->loop_nr;
      if (e->n_loops_free > LOOPS_KEEP)
        pthread_cond_signal (&e->loops_cond);
    }
  pthread_mutex_unlock (&e->lock);
  s->loop_nr = -1;
}

/* At start: the loop devices of the disks of the sandboxes re-attached
   (their disks stayed mounted while no daemon ran) are known by their
   backing files, STATE/sandboxes/ID/disk.img, so that they are counted
   free when those sandboxes end like those of sandboxes made since. */
struct adopt {
  struct sbx_engine *e;
  char dir[PATH_MAX]; /* sandboxes_dir, resolved as the kernel shows it */
  size_t len;
  unsigned found;
};

static void
adopt_loop (int nr, const char *backing, void *ud)
{
  struct adopt *a = ud;
  char id[SBX_ID_MAX];
  const char *rest = backing + a->len;
  size_t n = strncmp (backing, a->dir, a->len) == 0 && *rest == '/' ? strcspn (rest + 1, "/") : 0;
  if (n == 0 || n >= sizeof id || strcmp (rest + 1 + n, "/disk.img") != 0)
    return;
  memcpy (id, rest + 1, n);
  id[n] = '\0';
  struct sandbox *s = find_locked (a->e, id);
  if (s && s->state != SBX_STOPPED && s->loop_nr < 0)
    {
      s->loop_nr = nr;
      a->found++;
    }
}

static void
adopt_loops (struct sbx_engine *e)
{
  struct adopt a = { .e = e };
  if (realpath (e->sandboxes_dir, a.dir) == NULL)
    return;
  a.len = strlen (a.dir);
  pthread_mutex_lock (&e->lock);
  sbx_disk_loops_each (adopt_loop, &a);
  pthread_mutex_unlock (&e->lock);
  char n[16];
  snprintf (n, sizeof n, "%u", a.found);
  sbx_log_fields (SBX_LOG_DEBUG, "loop devices of re-attached disks", "count", n, NULL);
}

static void *
loops_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-loops");
  struct sbx_engine *e = arg;
  sbx_thread_bulk (true);
  sbx_thread_hold_begin (); /* the engine's lock, at the normal priority */
  pthread_mutex_lock (&e->lock);
  while (!e->stop)
    {
      if (e->n_loops_free <= LOOPS_KEEP)
        {
          pthread_cond_wait (&e->loops_cond, &e->lock);
          continue;
        }
      int nr = e->loops_free[0];
      memmove (e->loops_free, e->loops_free + 1, --e->n_loops_free * sizeof *e->loops_free);
      pthread_mutex_unlock (&e->lock);
      sbx_thread_hold_end ();
      /* -EBUSY: attached again since (by a create of ours, or anyone's) */
      sbx_disk_loop_remove (nr);
      sbx_thread_hold_begin ();
      pthread_mutex_lock (&e->lock);
    }
  pthread_mutex_unlock (&e->lock);
  sbx_thread_hold_end ();
  return NULL;
}

/* Kill everything and remove every trace of the N sandboxes of SS;
   called without the lock, with their s->busy set by the caller.  Every
   step may be repeated: a teardown cut off by a crash is done again from
   the start (its directory, with the journal in it, goes last).  All are
   killed before any is waited for, and their network rules go in one
   nftables transaction: what a transaction costs grows with the table,
   and thousands of sandboxes destroyed one transaction each went at a
   few a second. */
static void
teardown_many (struct sbx_engine *e, struct sandbox *const *ss, size_t n)
{
  struct sbx_err err;
  for (size_t i = 0; i < n; i++)
    if (ss[i]->init_pid > 0 && ss[i]->pidfd >= 0)
      syscall (SYS_pidfd_send_signal, ss[i]->pidfd, SIGKILL, NULL, 0);
  uint32_t one, *slots = n > 1 ? calloc (n, sizeof *slots) : &one;
  size_t n_slots = 0;
  for (size_t i = 0; i < n; i++)
    {
      struct sandbox *s = ss[i];
      cgroups_destroy (s->id, 10000, "cannot remove the sandbox's cgroups");
      if (s->disk_fd >= 0)
        {
          /* a kept disk (keep_upper): its loop device goes with the last use */
          close (s->disk_fd);
          s->disk_fd = -1;
        }
      char owner[UID_SLOT_OWNER_MAX];
      uid_slot_owner (e, s->id, owner);
      if (e->net && s->has_net && uid_slot_ours (owner, s->uid_slot))
        {
          if (slots)
            slots[n_slots++] = s->uid_slot;
          else
            sbx_net_forget (e->net, s->uid_slot); /* no memory for the batch */
        }
      s->has_net = false;
    }
  if (n_slots > 0)
    sbx_net_forget_many (e->net, n_slots, slots);
  if (slots != &one)
    free (slots);
  for (size_t i = 0; i < n; i++)
    {
      struct sandbox *s = ss[i];
      loop_released (e, s);
      char owner[UID_SLOT_OWNER_MAX];
      uid_slot_owner (e, s->id, owner);
      uid_slot_release (owner, s->uid_slot);
      /* the directory goes at once (renamed, then removed), so that it is
         never seen half removed without its journal: a spare's directory,
         to whoever counts them, or one a restart does not know what to
         make of */
      char dir[PATH_MAX], gone[PATH_MAX];
      sbx_path (dir, sizeof dir, "%s/%s", e->sandboxes_dir, s->id);
      if (sbx_path (gone, sizeof gone, "%s/" GONE_PREFIX "%s", e->sandboxes_dir, s->id) == 0
          && rename (dir, gone) == 0)
        snprintf (dir, sizeof dir, "%s", gone);
      if (sbx_rm_rf (dir, &err) < 0)
        sbx_log_fields (SBX_LOG_WARN, "cannot remove the sandbox's directory", "sandbox", s->id, "error", err.msg,
                        NULL);
    }
}

static void
teardown (struct sbx_engine *e, struct sandbox *s)
{
  teardown_many (e, &s, 1);
}

/* Mark S stopped and forget the oldest stopped ones; lock held. */
static void
mark_stopped_locked (struct sbx_engine *e, struct sandbox *s, const char *reason)
{
  s->state = SBX_STOPPED;
  free (s->reason);
  s->reason = strdup (reason);
  s->end_ms = sbx_wall_ms ();
  if (++e->n_stopped <= STOPPED_KEEP)
    return;
  /* drop the oldest stopped sandbox (the list is newest first) */
  struct sandbox **last = NULL;
  for (struct sandbox **pp = &e->list; *pp; pp = &(*pp)->next)
    if ((*pp)->state == SBX_STOPPED)
      last = pp;
  if (last)
    {
      struct sandbox *old = *last;
      *last = old->next;
      id_index_del_locked (e, old);
      e->n_stopped--;
      if (--old->refs == 0)
        sandbox_free (old);
    }
}

/* The ending hook (sbx_ending_fn) of one sandbox, on a thread of its own
   so that the teardown can stop waiting for it. */
struct ending {
  struct sbx_engine *e;
  struct sandbox *s;
  char id[SBX_ID_MAX];
  char reason[32];
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
};

/* The sandbox whose ending hook this thread runs: the one caller whose
   agent calls a doomed sandbox still answers (agent_connect). */
static __thread const struct sandbox *ending_self;
static __thread bool teardown_thread; /* one of teardown_main's */

static void *
ending_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-ending");
  struct ending *en = arg;
  ending_self = en->s;
  en->e->on_ending (en->e->event_ud, en->e, en->id, en->reason);
  pthread_mutex_lock (&en->lock);
  en->done = true;
  pthread_cond_signal (&en->cond);
  pthread_mutex_unlock (&en->lock);
  return NULL;
}

/* Start the ending hook of S before it is torn down (s->busy held): a
   paused sandbox is thawed (it will never run again, and its agent must
   answer), then the hook runs on a thread of its own; ending_wait gives
   it until a deadline.  Past that the teardown goes on; killing the
   sandbox ends the hook's agent calls, and it is joined after the
   teardown (ending_end). */
static bool
ending_begin (struct sbx_engine *e, struct sandbox *s, const char *reason, struct ending **out)
{
  *out = NULL;
  if (e->on_ending == NULL || strcmp (reason, "died") == 0)
    return false;
  pthread_mutex_lock (&e->lock);
  enum sbx_state st = s->state;
  pthread_mutex_unlock (&e->lock);
  if (st == SBX_PAUSED)
    {
      char cg[128];
      struct sbx_err err;
      cgroup_name (s->id, cg, sizeof cg);
      if (sbx_cgroup_freeze (cg, false, &err) < 0)
        return false;
      pthread_mutex_lock (&e->lock);
      s->state = SBX_RUNNING;
      pthread_mutex_unlock (&e->lock);
    }
  else if (st != SBX_RUNNING)
    return false;
  struct ending *en = calloc (1, sizeof *en);
  if (en == NULL)
    return false;
  en->e = e;
  en->s = s;
  snprintf (en->id, sizeof en->id, "%s", s->id);
  snprintf (en->reason, sizeof en->reason, "%s", reason);
  pthread_mutex_init (&en->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&en->cond, &ca);
  pthread_condattr_destroy (&ca);
  if (pthread_create (&en->thread, NULL, ending_main, en) != 0)
    {
      pthread_cond_destroy (&en->cond);
      pthread_mutex_destroy (&en->lock);
      free (en);
      return false;
    }
  *out = en;
  return true;
}

/* Wait for the hook of EN until UNTIL (CLOCK_MONOTONIC). */
static void
ending_wait (struct ending *en, const struct timespec *until)
{
  pthread_mutex_lock (&en->lock);
  while (!en->done && pthread_cond_timedwait (&en->cond, &en->lock, until) != ETIMEDOUT)
    ;
  if (!en->done)
    sbx_log_fields (SBX_LOG_WARN, "sandbox's ending hook ran out of time: tearing it down", "sandbox", en->id, NULL);
  pthread_mutex_unlock (&en->lock);
}

static void
ending_end (struct ending *en)
{
  pthread_join (en->thread, NULL);
  pthread_cond_destroy (&en->cond);
  pthread_mutex_destroy (&en->lock);
  free (en);
}

/* ---- destroy: answered at once, torn down after ----

   A destroy (a request, a timeout, a quota, a death) only dooms the
   sandbox: under the lock it is marked, from then on every caller sees it
   stopped (fill_info, agent_connect, begin_change), a journal file
   (TEARDOWN_JOURNAL, holding the reason) is written in its directory, the
   killed event goes out, and it joins the teardown queue.  That is the
   whole cost on the caller's path, well under a millisecond; the teardown
   itself (the ending hook, killing the cgroup and waiting for it to
   empty, the id range, the network rules, the directory) takes tens of
   milliseconds and is done by TEARDOWN_WORKERS threads, oldest first.

   Until its teardown ends a doomed sandbox still holds what it holds: its
   disk counts for disk admission and its id range stays claimed (its
   internal state is still running or paused), and the released event
   (SBX_EVENT_RELEASED) tells the service when its place on the machine is
   free.  The journal survives the daemon: a daemon killed with teardowns
   pending finds the journals when it opens (reattach) and queues them
   again; the directory, and the journal with it, is the last thing a
   teardown removes.  The journal is not synced, like the record: a host
   crash ends the sandbox's processes anyway, and the start after it
   cleans up a sandbox whose init is gone. */

/* The state callers see. */
static enum sbx_state
state_seen (const struct sandbox *s)
{
  return s->doomed ? SBX_STOPPED : s->state;
}

static bool
journal_write (struct sbx_engine *e, struct sandbox *s, const char *reason)
{
  cleanup_close int dfd = sandbox_dir (e, s);
  int fd = dfd >= 0 ? openat (dfd, TEARDOWN_JOURNAL, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
  bool ok = fd >= 0 && sbx_write_full (fd, reason, strlen (reason)) >= 0;
  int e2 = errno;
  if (fd >= 0)
    close (fd);
  if (!ok)
    sbx_log_fields (SBX_LOG_WARN, "cannot journal a sandbox's teardown: tearing it down at once", "sandbox", s->id,
                    "error", strerror (e2), NULL);
  return ok;
}

/* The reason journaled in DIRFD into REASON (letters, digits and '_'
   only: it comes from a file); false when there is no journal. */
static bool
journal_read (int dirfd, char reason[32])
{
  cleanup_close int fd = dirfd >= 0 ? openat (dirfd, TEARDOWN_JOURNAL, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
  if (fd < 0)
    return false;
  ssize_t n = sbx_read_full (fd, reason, 31);
  n = n < 0 ? 0 : n;
  reason[n] = '\0';
  for (ssize_t i = 0; i < n; i++)
    if (!((reason[i] >= 'a' && reason[i] <= 'z') || (reason[i] >= '0' && reason[i] <= '9') || reason[i] == '_'))
      reason[i] = '_';
  if (n == 0)
    snprintf (reason, 32, "request");
  return true;
}

/* Tear down the N doomed sandboxes of SS (the queue's references are
   handed over): their ending hooks, the teardown, then each is stopped
   for good and its resources are released. */
static void
finish_many (struct sbx_engine *e, struct sandbox *const *ss, size_t n)
{
  struct ending *hooks[TEARDOWN_TAKE];
  for (size_t i = 0; i < n; i++)
    {
      char reason[32];
      pthread_mutex_lock (&e->lock);
      snprintf (reason, sizeof reason, "%s", ss[i]->reason ? ss[i]->reason : "request");
      pthread_mutex_unlock (&e->lock);
      ending_begin (e, ss[i], reason, &hooks[i]);
    }
  /* the hooks run side by side, each for at most SBX_ENDING_MS */
  struct timespec until;
  clock_gettime (CLOCK_MONOTONIC, &until);
  until.tv_sec += SBX_ENDING_MS / 1000;
  for (size_t i = 0; i < n; i++)
    if (hooks[i])
      ending_wait (hooks[i], &until);
  teardown_many (e, ss, n);
  for (size_t i = 0; i < n; i++)
    {
      struct sandbox *s = ss[i];
      if (hooks[i])
        ending_end (hooks[i]);
      pthread_mutex_lock (&e->lock);
      char reason[32];
      snprintf (reason, sizeof reason, "%s", s->reason ? s->reason : "request");
      int64_t end = s->end_ms; /* it ended when it was answered as gone */
      mark_stopped_locked (e, s, reason);
      s->end_ms = end;
      s->doomed = false;
      s->busy = false;
      e->teardowns_pending--;
      pthread_cond_broadcast (&e->cond);
      pthread_mutex_unlock (&e->lock);
      emit (e, s->id, SBX_EVENT_RELEASED, reason);
      put (e, s);
    }
}

static void
finish (struct sbx_engine *e, struct sandbox *s)
{
  finish_many (e, &s, 1);
}

static void
enqueue_teardown (struct sbx_engine *e, struct sandbox *s)
{
  pthread_mutex_lock (&e->lock);
  s->tnext = NULL;
  if (e->tq_tail)
    e->tq_tail->tnext = s;
  else
    e->tq_head = s;
  e->tq_tail = s;
  e->tq_len++;
  pthread_cond_signal (&e->tq_cond);
  pthread_mutex_unlock (&e->lock);
}

static void *
teardown_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-teardown");
  struct sbx_engine *e = arg;
  teardown_thread = true; /* what it does never waits for the backlog it works off (doom) */
  pthread_mutex_lock (&e->lock);
  for (;;)
    {
      while (e->tq_head == NULL && !e->tq_stop)
        pthread_cond_wait (&e->tq_cond, &e->lock);
      if (e->tq_head == NULL)
        break;
      /* a share of the queue: when it is long, several at once (one
         transaction for their network rules, teardown_many), spread over
         the workers (of TEARDOWN_WORKERS, not of n_teardown_threads:
         that counts them as they start, and is 0 when the first takes
         the teardowns a restart found owed) */
      size_t want = (e->tq_len + TEARDOWN_WORKERS - 1) / TEARDOWN_WORKERS;
      want = want < 1 ? 1 : want > TEARDOWN_TAKE ? TEARDOWN_TAKE : want;
      struct sandbox *batch[TEARDOWN_TAKE];
      size_t n = 0;
      while (n < want && e->tq_head)
        {
          batch[n++] = e->tq_head;
          e->tq_head = e->tq_head->tnext;
          e->tq_len--;
        }
      if (e->tq_head == NULL)
        e->tq_tail = NULL;
      pthread_mutex_unlock (&e->lock);
      finish_many (e, batch, n);
      pthread_mutex_lock (&e->lock);
    }
  pthread_mutex_unlock (&e->lock);
  return NULL;
}

/* Answer S as gone for REASON and queue its teardown; false if it was
   stopped or doomed already. */
static bool
doom (struct sbx_engine *e, struct sandbox *s, const char *reason)
{
  pthread_mutex_lock (&e->lock);
  while (s->busy && !s->doomed)
    pthread_cond_wait (&e->cond, &e->lock);
  if (s->doomed || s->state == SBX_STOPPED)
    {
      pthread_mutex_unlock (&e->lock);
      return false;
    }
  s->doomed = s->busy = true;
  free (s->reason);
  s->reason = strdup (reason);
  s->end_ms = sbx_wall_ms ();
  s->refs++; /* the queue's */
  e->teardowns_pending++;
  pthread_mutex_unlock (&e->lock);
  bool journaled = journal_write (e, s, reason);
  emit (e, s->id, SBX_EVENT_KILLED, reason);
  if (journaled && e->n_teardown_threads > 0)
    {
      enqueue_teardown (e, s);
      /* a caller that destroys faster than the workers tear down waits
         here until the backlog is back under its bound: what doomed
         sandboxes hold (disks, mounts, memory) stays bounded however long
         the churn, where it used to grow by hundreds a minute */
      pthread_mutex_lock (&e->lock);
      while (e->teardowns_pending > TEARDOWN_BACKLOG && !e->tq_stop && !teardown_thread && ending_self == NULL)
        pthread_cond_wait (&e->cond, &e->lock);
      pthread_mutex_unlock (&e->lock);
    }
  else
    finish (e, s);
  return true;
}

static void end_change (struct sbx_engine *e, struct sandbox *s);
static int pause_held (struct sbx_engine *e, struct sandbox *s, bool drop_memory, struct sbx_err *err);

/* ---- the reaper: timeouts and sandboxes whose init died ---- */

static void *
reaper_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-reaper");
  /* Each sandbox's pidfd is added to an epoll set once (by the walk
     below, the first time it sees it), one-shot: the kernel reports an
     init's death once, and the sandbox keeps it (init_gone).  Polling
     every pidfd ten times a second cost a seventh of a core at 6,800
     sandboxes.  A reported pidfd is checked again under the lock (its
     number may name another sandbox's by then).  Every 100 ms a walk of
     the list finds timeouts. */
  struct sbx_engine *e = arg;
  int ep = epoll_create1 (EPOLL_CLOEXEC);
  struct epoll_event wake = { .events = EPOLLIN, .data.fd = e->reaper_wake };
  if (ep < 0 || epoll_ctl (ep, EPOLL_CTL_ADD, e->reaper_wake, &wake) < 0)
    sbx_log (SBX_LOG_WARN, "reaper: no epoll set (%s): deaths are found by polling", strerror (errno));
  bool again = false; /* the last round found a victim: look for more at once */
  pthread_mutex_lock (&e->lock);
  while (!e->stop)
    {
      pthread_mutex_unlock (&e->lock);
      struct epoll_event evs[64];
      int ready = ep >= 0 ? epoll_wait (ep, evs, 64, again ? 0 : 100) : (usleep (again ? 0 : 100000), 0);
      pthread_mutex_lock (&e->lock);
      again = false;
      if (e->stop)
        break;
      int reported_fds[64];
      size_t n_reported = 0;
      for (int i = 0; i < ready; i++)
        if (evs[i].data.fd != e->reaper_wake)
          reported_fds[n_reported++] = evs[i].data.fd;
      int64_t now = sbx_wall_ms ();
      struct sandbox *victim = NULL;
      const char *why = NULL;
      for (struct sandbox *s = e->list; s; s = s->next)
        {
          if (s->state == SBX_STOPPED || s->pidfd < 0)
            continue;
          for (size_t i = 0; i < n_reported; i++)
            if (reported_fds[i] == s->pidfd)
              {
                struct pollfd one = { s->pidfd, POLLIN, 0 };
                s->init_gone |= poll (&one, 1, 0) == 1;
              }
          if (!s->watched)
            {
              struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.fd = s->pidfd };
              s->watched = ep >= 0 && epoll_ctl (ep, EPOLL_CTL_ADD, s->pidfd, &ev) == 0;
              if (!s->watched)
                {
                  /* no room in the set: looked at on every walk */
                  struct pollfd one = { s->pidfd, POLLIN, 0 };
                  s->init_gone |= poll (&one, 1, 0) == 1;
                }
            }
          if (victim || s->busy || s->state == SBX_CREATING)
            continue;
          if (s->init_gone)
            victim = s, why = "died";
          else if (s->state == SBX_RUNNING && s->end_ms <= now)
            victim = s, why = "timeout";
        }
      again = victim != NULL;
      if (victim && strcmp (why, "timeout") == 0 && victim->on_timeout != SBX_ON_TIMEOUT_KILL)
        {
          /* paused at its end instead: it stays until resumed or killed */
          victim->refs++;
          victim->busy = true;
          pthread_mutex_unlock (&e->lock);
          struct sbx_err err;
          int r = pause_held (e, victim, victim->on_timeout == SBX_ON_TIMEOUT_PAUSE_FILES, &err);
          end_change (e, victim);
          if (r == 0)
            emit (e, victim->id, SBX_EVENT_PAUSED, "timeout");
          else
            {
              sbx_log_fields (SBX_LOG_WARN, "cannot pause a sandbox at its timeout: killing it", "sandbox",
                              victim->id, "error", err.msg, NULL);
              doom (e, victim, why);
            }
          put (e, victim);
          pthread_mutex_lock (&e->lock);
        }
      else if (victim)
        {
          victim->refs++;
          pthread_mutex_unlock (&e->lock);
          doom (e, victim, why);
          put (e, victim);
          pthread_mutex_lock (&e->lock);
        }
    }
  pthread_mutex_unlock (&e->lock);
  if (ep >= 0)
    close (ep);
  return NULL;
}

/* ---- disk admission ----

   A sandbox's disk is a sparse image: it takes space on the state file
   system only as the sandbox writes, up to its size.  Allocating every
   image whole (fallocate) would cost 10 GB per sandbox that writes
   nothing, so the engine keeps an account instead.  A live sandbox may
   still take the bytes of its size not yet allocated to its image
   (st_blocks); a create is admitted only if its size fits in the free
   space (f_bavail), less the reserve, less what every live sandbox and
   every create in progress may still take.  The decision and the pending
   promise it adds are one step under the engine lock, so concurrent
   creates cannot both pass.  The kernel then enforces each share: an
   image cannot outgrow its size, so a full disk is ENOSPC inside that
   sandbox, while the space the other disks were promised and the reserve
   (the store, the logs, templates built later) stay free.

   With an overcommit ratio R above 1 the promises may reach R times that
   room: then the guarantee is gone, and sandboxes that do write what they
   were promised fill the file system (their writes are lost with EIO,
   and the store fails).  Spares run nothing and count only once a create
   claims them; the claim is admitted before a spare is taken. */

struct disk_room {
  uint64_t avail, reserve, outstanding, promisable; /* bytes */
};

/* At most what the live sandboxes' disks may still take, without a
   look at any image: their sizes; lock held. */
static uint64_t
disk_promised_locked (struct sbx_engine *e)
{
  uint64_t sum = e->disk_pending;
  for (struct sandbox *s = e->list; s; s = s->next)
    if (s->state != SBX_STOPPED)
      sum += (uint64_t) s->limits.disk_mb << 20;
  return sum;
}

/* What the live sandboxes' disks may still take; lock held. */
static uint64_t
disk_outstanding_locked (struct sbx_engine *e)
{
  uint64_t sum = e->disk_pending;
  for (struct sandbox *s = e->list; s; s = s->next)
    {
      if (s->state == SBX_STOPPED)
        continue;
      uint64_t size = (uint64_t) s->limits.disk_mb << 20, used = 0;
      struct stat st;
      /* an image that cannot be looked at counts whole */
      char image[SBX_ID_MAX + 16];
      snprintf (image, sizeof image, "%s/disk.img", s->id);
      if (fstatat (e->sandboxes_fd, image, &st, AT_SYMLINK_NOFOLLOW) == 0)
        used = (uint64_t) st.st_blocks * 512;
      sum += size > used ? size - used : 0;
    }
  return sum;
}

static int
disk_room_locked (struct sbx_engine *e, struct disk_room *r, bool upper_bound, struct sbx_err *err)
{
  struct statvfs sv;
  if (statvfs (e->sandboxes_dir, &sv) < 0)
    return sbx_fail (err, errno, "statvfs %s", e->sandboxes_dir);
  r->avail = (uint64_t) sv.f_bavail * sv.f_frsize;
  if (e->disk_reserve_set)
    r->reserve = e->disk_reserve;
  else
    {
      uint64_t pct = (uint64_t) sv.f_blocks * sv.f_frsize / 100 * SBX_DISK_RESERVE_PCT;
      uint64_t min = (uint64_t) SBX_DISK_RESERVE_MIN_MB << 20;
      r->reserve = pct > min ? pct : min;
    }
  r->outstanding = upper_bound ? disk_promised_locked (e) : disk_outstanding_locked (e);
  double room = r->avail > r->reserve ? (double) (r->avail - r->reserve) * e->disk_overcommit : 0;
  double left = room - (double) r->outstanding;
  r->promisable = left <= 0 ? 0 : left >= 0x1p63 ? UINT64_MAX >> 1 : (uint64_t) left;
  return 0;
}

/* Admit a disk of SIZE_MB: its bytes are pending until the sandbox joins
   the list (or disk_release). */
static int
disk_admit (struct sbx_engine *e, uint32_t size_mb, struct sbx_err *err)
{
  uint64_t want = (uint64_t) size_mb << 20;
  struct disk_room r;
  pthread_mutex_lock (&e->lock);
  /* first against every live disk counted whole, which needs no stat of
     thousands of images under the lock; only when that does not fit,
     against what the images really hold */
  int ok = disk_room_locked (e, &r, true, err);
  if (ok == 0 && want > r.promisable)
    ok = disk_room_locked (e, &r, false, err);
  if (ok == 0 && want <= r.promisable)
    e->disk_pending += want;
  pthread_mutex_unlock (&e->lock);
  if (ok < 0)
    return -1;
  if (want <= r.promisable)
    return 0;
  char asked[24], avail[24], reserve[24], outstanding[24];
  snprintf (asked, sizeof asked, "%u", size_mb);
  snprintf (avail, sizeof avail, "%llu", (unsigned long long) (r.avail >> 20));
  snprintf (reserve, sizeof reserve, "%llu", (unsigned long long) (r.reserve >> 20));
  snprintf (outstanding, sizeof outstanding, "%llu", (unsigned long long) (r.outstanding >> 20));
  sbx_log_fields (SBX_LOG_INFO, "create refused: its disk does not fit", "asked_mb", asked, "free_mb", avail,
                  "reserve_mb", reserve, "outstanding_mb", outstanding, NULL);
  return sbx_failk (err, SBX_E_NO_SPACE, "not enough disk on this host: %u MB asked, %llu MB can still be promised",
                    size_mb, (unsigned long long) (r.promisable >> 20));
}

static void
disk_release (struct sbx_engine *e, uint32_t size_mb)
{
  pthread_mutex_lock (&e->lock);
  e->disk_pending -= (uint64_t) size_mb << 20;
  pthread_mutex_unlock (&e->lock);
}

/* ---- engine ---- */

static void *spare_main (void *arg);
static void discard (struct sbx_engine *e, struct sandbox *s);
static void discard_many (struct sbx_engine *e, struct sandbox *const *ss, size_t n);
static int boot_spare (struct sbx_engine *e, struct sandbox *s, const char *name, struct sbx_err *err);
static int booted_want_locked (const struct sbx_engine *e);
static void booted_count_locked (const struct sbx_engine *e, int *hot, int *cold);

static int
load_init (struct sbx_engine *e, const char *path, struct sbx_err *err)
{
  char self[PATH_MAX];
  if (path == NULL)
    {
      ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 16);
      if (n < 0)
        return sbx_fail (err, errno, "readlink /proc/self/exe");
      self[n] = '\0';
      char *slash = strrchr (self, '/');
      strcpy (slash + 1, "sbx-init");
      path = self;
    }
  cleanup_close int src = open (path, O_RDONLY | O_CLOEXEC);
  if (src < 0)
    return sbx_fail (err, errno, "open %s", path);
  /* a sealed private copy: the sandbox can read /proc/1/exe, but neither it
     nor anyone else can change what future sandboxes run */
  int fd = (int) syscall (SYS_memfd_create, "sbx-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return sbx_fail (err, errno, "memfd_create");
  char buf[65536];
  ssize_t n;
  while ((n = read (src, buf, sizeof buf)) > 0)
    if (sbx_write_full (fd, buf, (size_t) n) < 0)
      break;
  if (n != 0 || fchmod (fd, 0555) < 0
      || fcntl (fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
    {
      close (fd);
      return sbx_fail (err, errno, "copy %s", path);
    }
  e->init_fd = fd;
  return 0;
}

/* Re-attach to (or clean up after) the sandbox recorded in DIR/ID. */
static void
reattach (struct sbx_engine *e, const char *id)
{
  struct sbx_err err;
  char path[PATH_MAX];
  sbx_path (path, sizeof path, "%s/%s/sandbox.json", e->sandboxes_dir, id);
  json_error_t jerr;
  json_t *j = json_load_file (path, 0, &jerr);
  struct sandbox *s = calloc (1, sizeof *s);
  if (s == NULL)
    {
      json_decref (j);
      return;
    }
  s->pidfd = s->disk_fd = s->agent_fd = s->idmap_fd = s->proc.sock = s->loop_nr = -1;
  s->refs = 1;
  sbx_path (s->id, sizeof s->id, "%s", id);
  const char *tmpl = NULL, *user = NULL, *state = NULL;
  json_int_t created = 0, end = 0, start = 0;
  int pid = 0, slot = -1, timeout = 0, cpu = 0, mem = 0, disk = 0, pids = 0, nofile = 0;
  if (j == NULL
      || json_unpack (j, "{s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:I, s:i, s:{s:i, s:i, s:i, s:i, s:i}}",
                      "template", &tmpl, "user", &user, "state", &state, "created_ms", &created, "end_ms", &end,
                      "timeout_s", &timeout, "init_pid", &pid, "init_start", &start, "uid_slot", &slot,
                      "limits", "cpu_millis", &cpu, "memory_mb", &mem, "disk_mb", &disk, "pids_max", &pids, "nofile",
                      &nofile)
             < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "unreadable sandbox record, removing it", "sandbox", id, NULL);
      /* its id range, network rules and link are released by
         sweep_uid_slots: the range's file names this sandbox */
      char dir[PATH_MAX];
      sbx_path (dir, sizeof dir, "%s/%s", e->sandboxes_dir, id);
      char cg[128];
      cgroup_name (id, cg, sizeof cg);
      sbx_cgroup_destroy (cg, 5000, &err);
      sbx_rm_rf (dir, &err);
      json_decref (j);
      free (s);
      return;
    }
  sbx_path (s->template_name, sizeof s->template_name, "%s", tmpl);
  sbx_path (s->default_user, sizeof s->default_user, "%s", user);
  const char *wd = json_string_value (json_object_get (j, "workdir"));
  if (wd && wd[0] == '/')
    snprintf (s->workdir, sizeof s->workdir, "%s", wd);
  s->created_ms = created;
  s->end_ms = end;
  s->timeout_s = (uint32_t) timeout;
  s->init_pid = pid;
  s->init_start = (unsigned long long) start;
  s->uid_slot = (uint32_t) slot;
  s->limits = (struct sbx_limits) { (uint32_t) cpu, (uint32_t) mem, (uint32_t) disk, (uint32_t) pids, (uint32_t) nofile };
  json_t *net = json_object_get (j, "network");
  if (net && net_state_load (net, &s->net, &err) == 0)
    {
      s->has_net = true;
      json_t *ai = json_object_get (net, "internet_asked");
      s->net_asked_set = json_is_boolean (ai);
      s->net_asked = json_is_true (ai);
    }
  s->env = strv_load (json_object_get (j, "env"));
  json_int_t on_timeout = json_integer_value (json_object_get (j, "on_timeout"));
  s->on_timeout = on_timeout == SBX_ON_TIMEOUT_PAUSE || on_timeout == SBX_ON_TIMEOUT_PAUSE_FILES
                      ? (enum sbx_on_timeout) on_timeout : SBX_ON_TIMEOUT_KILL;
  s->auto_resume = json_is_true (json_object_get (j, "auto_resume"));
  s->memory_dropped = json_is_true (json_object_get (j, "memory_dropped"));
  s->disk_ids0 = json_is_true (json_object_get (j, "disk_ids0"));
  json_int_t layers = json_integer_value (json_object_get (j, "layers"));
  s->n_layers = layers > 0 && layers <= SBX_SNAPSHOT_LAYERS ? (uint32_t) layers : 0;
  bool was_spare = strcmp (state, "creating") == 0;
  s->state = strcmp (state, "paused") == 0 ? SBX_PAUSED : SBX_RUNNING;
  json_decref (j);

  cleanup_close int dfd = sandbox_dir (e, s);
  s->pidfd = (int) syscall (SYS_pidfd_open, pid, 0);
  /* the pid must still be the same process: check after pidfd_open */
  /* a spare (state creating) never outlives the daemon that made it */
  /* a zombie (nobody reaped it while we were away) has exited too */
  struct pollfd pf = { s->pidfd, POLLIN, 0 };
  bool same = s->pidfd >= 0 && sbx_proc_start_time (pid) == s->init_start;
  bool alive = dfd >= 0 && same && !was_spare && poll (&pf, 1, 0) == 0;
  /* for the log: a live sandbox taken for a dead one is lost, so say why */
  const char *gone = dfd < 0 ? "its directory cannot be opened" : s->pidfd < 0 ? "no process has its pid"
                     : !same ? "its pid is another process's" : "it has ended";
  if (!alive && s->pidfd >= 0 && !same)
    {
      /* the pid is another process's now: never signal it */
      close (s->pidfd);
      s->pidfd = -1;
      s->init_pid = 0;
    }
  if (!alive && was_spare)
    {
      teardown (e, s);
      sandbox_free (s);
      return;
    }
  /* a teardown owed since before the daemon stopped (doom) */
  char journaled[32];
  bool doomed = journal_read (dfd, journaled);
  const char *why = doomed ? journaled : "died";
  if (!alive)
    {
      sbx_log_fields (SBX_LOG_INFO, doomed ? "finishing a sandbox's teardown" : "sandbox's init is gone, cleaning up",
                      "sandbox", id, "init", gone, NULL);
      if (s->pidfd >= 0)
        close (s->pidfd);
      s->pidfd = -1;
      s->init_pid = 0;
      teardown (e, s);
      s->state = SBX_STOPPED;
      s->reason = strdup (why);
      e->n_stopped++;
    }
  else if (doomed)
    {
      /* still running: torn down by the workers once they start, its
         ending hook included */
      sbx_log_fields (SBX_LOG_INFO, "finishing a sandbox's teardown", "sandbox", id, NULL);
      s->doomed = s->busy = true;
      s->reason = strdup (why);
      s->end_ms = sbx_wall_ms ();
      s->refs++; /* the queue's */
      e->teardowns_pending++;
      enqueue_teardown (e, s);
    }
  else
    {
      char cg[128];
      struct sbx_cgroup_stats st;
      cgroup_name (id, cg, sizeof cg);
      if (sbx_cgroup_stats (cg, &st, &err) == 0)
        s->state = st.frozen ? SBX_PAUSED : SBX_RUNNING;
    }
  /* keep the list newest first */
  struct sandbox **pp = &e->list;
  while (*pp && (*pp)->created_ms > s->created_ms)
    pp = &(*pp)->next;
  s->next = *pp;
  *pp = s;
  id_index_add_locked (e, s);
  /* it ended while nobody watched, or its end was not recorded yet: say
     so now, as the reaper would have (the service ignores a killed event
     it has recorded already) */
  if (!alive)
    {
      s->end_ms = sbx_wall_ms ();
      emit (e, s->id, SBX_EVENT_KILLED, why);
      emit (e, s->id, SBX_EVENT_RELEASED, why);
    }
  else if (doomed)
    emit (e, s->id, SBX_EVENT_KILLED, why);
}

static void
reapply_failed (void *ud, size_t i, const char *msg)
{
  struct sandbox **which = ud;
  sbx_log_fields (SBX_LOG_ERROR, "cannot renew the sandbox's network rules", "sandbox", which[i]->id, "error", msg,
                  NULL);
}

/* At start: the network rules of every sandbox still running, renewed
   (they name the filters' ports, which are this process's), in few
   transactions (sbx_net_reapply_many). */
static int
reapply_all (struct sbx_engine *e)
{
  size_t n = 0;
  for (struct sandbox *s = e->list; s; s = s->next)
    n += e->net && s->has_net && state_seen (s) != SBX_STOPPED;
  if (n == 0)
    return 0;
  cleanup_free struct sandbox **which = calloc (n, sizeof *which);
  cleanup_free uint32_t *slots = calloc (n, sizeof *slots);
  cleanup_free const struct sbx_net_policy **ps = calloc (n, sizeof *ps);
  if (which == NULL || slots == NULL || ps == NULL)
    return -1;
  size_t k = 0;
  for (struct sandbox *s = e->list; s; s = s->next)
    if (e->net && s->has_net && state_seen (s) != SBX_STOPPED)
      {
        which[k] = s;
        slots[k] = s->uid_slot;
        ps[k++] = &s->net;
      }
  sbx_net_reapply_many (e->net, n, slots, ps, reapply_failed, which);
  return 0;
}

/* The uid ranges that some user namespace on the machine maps, one bit per
   slot: those of every live sandbox, of every instance, and of sandboxes
   being prepared (whose first process waits in its namespaces).  NULL
   when /proc cannot be read. */
static uint8_t *
mapped_uid_slots (void)
{
  uint8_t *bits = calloc (UID_SLOTS / 8 + 1, 1);
  DIR *d = opendir ("/proc");
  if (bits == NULL || d == NULL)
    {
      free (bits);
      if (d)
        closedir (d);
      return NULL;
    }
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      char *end;
      long pid = strtol (de->d_name, &end, 10);
      if (de->d_name[0] < '1' || de->d_name[0] > '9' || *end != '\0')
        continue;
      char path[64], buf[1024];
      snprintf (path, sizeof path, "/proc/%ld/uid_map", pid);
      cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
      ssize_t n = fd >= 0 ? sbx_read_full (fd, buf, sizeof buf - 1) : -1;
      if (n <= 0)
        continue;
      buf[n] = '\0';
      /* "inside outside count" per line; outside is a host id here */
      for (char *line = buf; line && *line; line = strchr (line, '\n') ? strchr (line, '\n') + 1 : NULL)
        {
          unsigned long in, out, count;
          if (sscanf (line, "%lu %lu %lu", &in, &out, &count) != 3 || out < UID_FIRST
              || (out - UID_FIRST) % UID_RANGE != 0)
            continue;
          unsigned long k = (out - UID_FIRST) / UID_RANGE;
          if (k < UID_SLOTS)
            bits[k / 8] |= (uint8_t) (1u << (k % 8));
        }
    }
  closedir (d);
  return bits;
}

/* Whether SLOT's bit is set in BITS, of mapped_uid_slots. */
static bool
slot_mapped (const uint8_t *bits, uint32_t slot)
{
  return (bits[slot / 8] & (1u << (slot % 8))) != 0;
}

static bool
uid_slot_held_locked (struct sbx_engine *e, uint32_t slot)
{
  for (struct sandbox *s = e->list; s; s = s->next)
    if (s->state != SBX_STOPPED && s->uid_slot == slot)
      return true;
  return false;
}

/* The sandbox id in OWNER (of length N), a range's owner, when it names
   a sandbox of E's state directory (SANDBOXES_DIR/ID); else NULL. */
static const char *
slot_owner_ours (struct sbx_engine *e, const char *owner, ssize_t n)
{
  size_t dlen = strlen (e->sandboxes_dir);
  if (n <= (ssize_t) dlen || memcmp (owner, e->sandboxes_dir, dlen) != 0 || owner[dlen] != '/'
      || strchr (owner + dlen + 1, '/') != NULL)
    return NULL;
  return owner + dlen + 1;
}

/* NAME, an entry of UID_SLOT_DIR, as a range no sandbox of E holds:
   its owner's length (OWNER filled, ST if not NULL), or -1 for anything
   else. */
static ssize_t
slot_entry (struct sbx_engine *e, const char *name, uint32_t *slot, char owner[UID_SLOT_OWNER_MAX], struct stat *st)
{
  char *end;
  unsigned long k = strtoul (name, &end, 10);
  if (name[0] < '0' || name[0] > '9' || *end != '\0' || k >= UID_SLOTS)
    return -1;
  *slot = (uint32_t) k;
  if (uid_slot_held_locked (e, *slot)) /* no other thread runs yet */
    return -1;
  return uid_slot_read (*slot, owner, st);
}

/* After re-attaching: release the uid ranges (and the network rules and
   link of their slot) whose owner is gone.  A range that names a sandbox
   of this state directory is ours, and stale unless a sandbox we
   re-attached holds it: a crash can leave one claimed for a sandbox whose
   record was never written, and a directory removed from outside leaves
   its sandbox's processes running (they are ended with its cgroup
   first).  Another instance's range is stale once its sandbox's
   directory is gone (its sandbox's cgroups go with it); so is a range
   without an owner (written by an older sbxd), after a grace period in
   which it may be being claimed.
   No range is released while a user namespace maps it.  Runs before the
   spare thread starts, so none of ours is being claimed. */
static void
sweep_uid_slots (struct sbx_engine *e)
{
  DIR *d = opendir (UID_SLOT_DIR);
  if (d == NULL)
    return;
  struct dirent *de;
  /* first, the ranges of ours that no sandbox holds: their processes may
     live on (their directory removed under them from outside).  They
     end with their cgroups, all before the look at which ranges are
     mapped below */
  while ((de = readdir (d)) != NULL)
    {
      uint32_t slot;
      char owner[UID_SLOT_OWNER_MAX];
      ssize_t n = slot_entry (e, de->d_name, &slot, owner, NULL);
      const char *id = n < 0 ? NULL : slot_owner_ours (e, owner, n);
      struct sandbox *live;
      if (id && sbx_id_wellformed (id) && !((live = find_locked (e, id)) && live->state != SBX_STOPPED))
        cgroups_destroy (id, 5000, "cannot end the processes of a sandbox without a record");
    }
  rewinddir (d);
  uint8_t *mapped = NULL;
  bool scanned = false;
  int waited_ms = 0; /* for processes ended above, at most 2 s in all */
  while ((de = readdir (d)) != NULL)
    {
      uint32_t slot;
      char owner[UID_SLOT_OWNER_MAX];
      struct stat st;
      ssize_t n = slot_entry (e, de->d_name, &slot, owner, &st);
      if (n < 0)
        continue;
      bool ours = slot_owner_ours (e, owner, n) != NULL;
      if (!ours && time (NULL) - st.st_mtime < UID_SLOT_GRACE_S)
        continue;
      if (!ours && n > 0 && access (owner, F_OK) == 0)
        continue;
      /* a range some process still maps is never handed out again */
      if (!scanned)
        {
          mapped = mapped_uid_slots ();
          scanned = true;
        }
      /* processes just ended above map theirs until their parent (the
         host's init, since their daemon is gone) reaps them */
      while (ours && mapped && slot_mapped (mapped, slot) && waited_ms < 2000)
        {
          usleep (50000);
          waited_ms += 50;
          free (mapped);
          mapped = mapped_uid_slots ();
        }
      if (mapped == NULL || slot_mapped (mapped, slot))
        {
          if (ours)
            sbx_log_fields (SBX_LOG_WARN, "an id range still in use by processes of no sandbox: kept", "slot",
                            de->d_name, "owner", owner, NULL);
          continue;
        }
      sbx_log_fields (SBX_LOG_INFO, "releasing an id range whose sandbox is gone", "slot", de->d_name, "owner",
                      n > 0 ? owner : "-", NULL);
      /* another instance's sandbox, gone with its directory, may have
         left its cgroups: a killed daemon's spares (their inits end with
         it) when its directory is removed before it starts again.  No
         process maps the range, so they are empty, and nothing else
         would ever remove them */
      const char *gone = !ours && n > 0 ? strrchr (owner, '/') : NULL;
      if (gone && sbx_id_wellformed (gone + 1))
        cgroups_destroy (gone + 1, 1000, "cannot remove the cgroups of a gone sandbox");
      if (e->net)
        sbx_net_forget_stale (e->net, slot);
      char path[64];
      snprintf (path, sizeof path, UID_SLOT_DIR "/%u", slot);
      unlink (path);
    }
  closedir (d);
  free (mapped);
}

/* Join the spare workers (E->stop set) and the teardown workers, which
   first finish the teardowns already answered (not left for the next
   start), and discard the spares. */
static void
workers_stop (struct sbx_engine *e)
{
  pthread_cond_broadcast (&e->spare_cond);
  for (int i = 0; i < e->n_spare_threads; i++)
    pthread_join (e->spare_threads[i], NULL);
  pthread_mutex_lock (&e->lock);
  e->tq_stop = true;
  pthread_cond_broadcast (&e->tq_cond);
  pthread_mutex_unlock (&e->lock);
  for (int i = 0; i < e->n_teardown_threads; i++)
    pthread_join (e->teardown_threads[i], NULL);
  if (e->loops_thread_on)
    {
      pthread_mutex_lock (&e->lock);
      pthread_cond_broadcast (&e->loops_cond);
      pthread_mutex_unlock (&e->lock);
      pthread_join (e->loops_thread, NULL);
      e->loops_thread_on = false;
    }
  discard_many (e, e->spares, (size_t) e->n_spares);
  free (e->spares);
}

/* The weight of the cgroup above every sandbox's (SBX_SANDBOXES_CPU_WEIGHT).
   Best effort: without it the sandboxes only compete with the daemon as
   equals. */
static void
sandboxes_weigh (unsigned weight)
{
  struct sbx_err err;
  if (sbx_cgroup_create (SANDBOXES_CGROUP, NULL, &err) < 0
      || sbx_cgroup_set_cpu_weight (SANDBOXES_CGROUP, weight, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot weigh the sandboxes' CPU against the host's processes", "error", err.msg,
                    NULL);
}

int
sbx_engine_open (const struct sbx_engine_config *cfg, struct sbx_engine **out, struct sbx_err *err)
{
  if (sbx_cgroup_detect (err) < 0 || sbx_seccomp_prepare (err) < 0)
    return -1;
  struct sbx_engine *e = calloc (1, sizeof *e);
  if (e == NULL)
    return sbx_fail (err, ENOMEM, "engine");
  e->init_fd = e->sandboxes_fd = -1;
  e->reaper_wake = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->reaper_wake < 0)
    {
      free (e);
      return sbx_fail (err, errno, "eventfd");
    }
  pthread_mutex_init (&e->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_cond_init (&e->cond, &ca);
  pthread_cond_init (&e->tq_cond, NULL);
  pthread_cond_init (&e->loops_cond, NULL);
  pthread_condattr_t mono;
  pthread_condattr_init (&mono);
  pthread_condattr_setclock (&mono, CLOCK_MONOTONIC);
  pthread_cond_init (&e->spare_cond, &mono);
  pthread_condattr_destroy (&mono);
  e->on_event = cfg->on_event;
  e->event_ud = cfg->event_ud;
  e->on_ending = cfg->on_ending;
  e->max_timeout_s = cfg->max_timeout_s ? cfg->max_timeout_s : 3600;
  e->disk_reserve_set = cfg->disk_reserve_set;
  e->disk_reserve = cfg->disk_reserve_mb > UINT64_MAX >> 20 ? UINT64_MAX : cfg->disk_reserve_mb << 20;
  e->disk_overcommit = cfg->disk_overcommit > 0 ? cfg->disk_overcommit : 1.0;
  if (realpath (cfg->state_dir, e->state_dir) == NULL)
    {
      if (sbx_mkdir_p (cfg->state_dir, 0700, err) < 0 || realpath (cfg->state_dir, e->state_dir) == NULL)
        {
          sbx_fail (err, errno, "state directory %s", cfg->state_dir);
          goto fail;
        }
    }
  if (sbx_path (e->sandboxes_dir, sizeof e->sandboxes_dir, "%s/sandboxes", e->state_dir) < 0)
    {
      sbx_fail (err, errno, "state directory %s", e->state_dir);
      goto fail;
    }
  if (sbx_mkdir_p (e->sandboxes_dir, 0700, err) < 0)
    goto fail;
  e->sandboxes_fd = open (e->sandboxes_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (e->sandboxes_fd < 0)
    {
      sbx_fail (err, errno, "open %s", e->sandboxes_dir);
      goto fail;
    }
  if (sbx_path (e->fs_block_dir, sizeof e->fs_block_dir, "%s/fsblock", e->state_dir) < 0)
    {
      sbx_fail (err, errno, "state directory %s", e->state_dir);
      goto fail;
    }
  if (sbx_isolate_block_dir (e->fs_block_dir, err) < 0)
    goto fail;
  /* blanks are made again by each start: a new version may format
     differently */
  if (sbx_path (e->blank_dir, sizeof e->blank_dir, "%s/blanks", e->state_dir) < 0
      || sbx_rm_rf (e->blank_dir, err) < 0 || sbx_mkdir_p (e->blank_dir, 0700, err) < 0)
    {
      sbx_err_wrap (err, "blank disks in %s", e->state_dir);
      goto fail;
    }
  if (cfg->template_dir)
    sbx_path (e->template_dir, sizeof e->template_dir, "%s", cfg->template_dir);
  else
    sbx_template_dir (e->template_dir, sizeof e->template_dir);
  if (load_init (e, cfg->init_path, err) < 0)
    goto fail;
  sandboxes_weigh (cfg->sandboxes_cpu_weight ? cfg->sandboxes_cpu_weight : SBX_SANDBOXES_CPU_WEIGHT);
  /* a fork of this process (isolate.h): before the threads below, while
     it is small */
  if (sbx_isolate_spawner_start (&e->spawner, err) < 0)
    goto fail;
  /* the egress CA lives in the state directory (root only), unless the
     caller put it elsewhere */
  struct sbx_net_config nc = { 0 };
  char tls_dir[PATH_MAX];
  if (cfg->net)
    {
      nc = *cfg->net;
      if (nc.tls_dir == NULL && sbx_path (tls_dir, sizeof tls_dir, "%s/egress-ca", e->state_dir) == 0)
        nc.tls_dir = tls_dir;
      nc.owner = e->state_dir;
    }
  if (cfg->net && sbx_net_open (&nc, &e->net, err) < 0)
    {
      sbx_err_wrap (err, "sandbox networking (--no-network runs without it)");
      goto fail;
    }

  DIR *d = opendir (e->sandboxes_dir);
  if (d == NULL)
    {
      sbx_fail (err, errno, "open %s", e->sandboxes_dir);
      goto fail;
    }
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (sbx_id_wellformed (de->d_name))
      reattach (e, de->d_name);
    else if (strncmp (de->d_name, GONE_PREFIX, strlen (GONE_PREFIX)) == 0)
      {
        /* a removal a stop cut short: its teardown was done */
        char gone[PATH_MAX];
        struct sbx_err rm_err;
        if (sbx_path (gone, sizeof gone, "%s/%s", e->sandboxes_dir, de->d_name) == 0)
          sbx_rm_rf (gone, &rm_err);
      }
  closedir (d);
  adopt_loops (e);
  sweep_uid_slots (e);
  /* the rules name this process's filter ports: renew them */
  if (reapply_all (e) < 0)
    {
      sbx_fail (err, ENOMEM, "renew the sandboxes' network rules");
      goto fail;
    }

  /* what disk admission starts from, for the operator */
  struct disk_room room;
  if (disk_room_locked (e, &room, false, err) < 0)
    goto fail;
  char avail[24], reserve[24], outstanding[24], promisable[24], ratio[24];
  snprintf (avail, sizeof avail, "%llu", (unsigned long long) (room.avail >> 20));
  snprintf (reserve, sizeof reserve, "%llu", (unsigned long long) (room.reserve >> 20));
  snprintf (outstanding, sizeof outstanding, "%llu", (unsigned long long) (room.outstanding >> 20));
  snprintf (promisable, sizeof promisable, "%llu", (unsigned long long) (room.promisable >> 20));
  snprintf (ratio, sizeof ratio, "%g", e->disk_overcommit);
  sbx_log_fields (SBX_LOG_INFO, "disk admission", "free_mb", avail, "reserve_mb", reserve, "outstanding_mb",
                  outstanding, "promisable_mb", promisable, "overcommit", ratio, NULL);

  e->spares_max = cfg->spares < 0 ? 0 : cfg->spares_max > 0 ? cfg->spares_max : SBX_SPARES_MAX_DEFAULT;
  if (e->spares_max > SBX_SPARES_MAX_CAP)
    e->spares_max = SBX_SPARES_MAX_CAP;
  e->spares_min = cfg->spares < 0 ? 0 : cfg->spares ? cfg->spares : SBX_SPARES_DEFAULT;
  if (e->spares_min > e->spares_max)
    e->spares_min = e->spares_max;
  e->spares_target = e->spares_min;
  e->last_claim_ns = sbx_now_ns ();
  e->spares = calloc ((size_t) e->spares_max + 1, sizeof *e->spares);
  if (e->spares == NULL)
    {
      sbx_fail (err, ENOMEM, "spare pool");
      goto fail;
    }
  /* no workers when the pool may hold nothing */
  for (int i = 0; i < SPARE_WORKERS && e->spares_max > 0; i++)
    {
      if (pthread_create (&e->spare_threads[i], NULL, spare_main, e) != 0)
        {
          sbx_failx (err, EAGAIN, "start spare threads");
          goto fail;
        }
      e->n_spare_threads++;
    }
  for (int i = 0; i < TEARDOWN_WORKERS; i++)
    if (pthread_create (&e->teardown_threads[e->n_teardown_threads], NULL, teardown_main, e) == 0)
      e->n_teardown_threads++;
  if (e->n_teardown_threads == 0)
    {
      sbx_failx (err, EAGAIN, "start teardown threads");
      goto fail;
    }
  e->loops_thread_on = pthread_create (&e->loops_thread, NULL, loops_main, e) == 0;
  if (pthread_create (&e->reaper, NULL, reaper_main, e) != 0)
    {
      sbx_failx (err, EAGAIN, "start reaper thread");
      goto fail;
    }
  *out = e;
  return 0;
fail:
  /* the workers that did start, and what they prepared */
  pthread_mutex_lock (&e->lock);
  e->stop = true;
  pthread_mutex_unlock (&e->lock);
  workers_stop (e);
  sbx_isolate_spawner_stop (e->spawner);
  if (e->init_fd >= 0)
    close (e->init_fd);
  if (e->sandboxes_fd >= 0)
    close (e->sandboxes_fd);
  close (e->reaper_wake);
  sbx_net_close (e->net);
  free (e->loops_free);
  free (e);
  return -1;
}

void
sbx_engine_close (struct sbx_engine *e)
{
  pthread_mutex_lock (&e->lock);
  e->stop = true;
  pthread_cond_broadcast (&e->cond);
  pthread_mutex_unlock (&e->lock);
  pthread_cond_broadcast (&e->spare_cond);
  uint64_t one = 1;
  if (write (e->reaper_wake, &one, sizeof one) < 0)
    sbx_log (SBX_LOG_WARN, "cannot wake the reaper: %s", strerror (errno));
  pthread_join (e->reaper, NULL);
  close (e->reaper_wake);
  workers_stop (e);
  while (e->list)
    {
      struct sandbox *s = e->list;
      e->list = s->next;
      id_index_del_locked (e, s);
      sandbox_free (s);
    }
  sbx_isolate_spawner_stop (e->spawner);
  close (e->init_fd);
  close (e->sandboxes_fd);
  sbx_net_close (e->net);
  free (e->loops_free);
  free (e);
}

/* ---- create ---- */

static void
make_id (char id[SBX_ID_MAX])
{
  sbx_new_id (id);
}

void
sbx_new_id (char id[SBX_ID_MAX])
{
  static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  unsigned char rnd[20];
  sbx_random_bytes (rnd, sizeof rnd);
  memcpy (id, "sbx", 3);
  for (int i = 0; i < 20; i++)
    id[3 + i] = alphabet[rnd[i] % 36];
  id[23] = '\0';
}

bool
sbx_id_wellformed (const char *id)
{
  size_t n = strlen (id);
  if (n >= SBX_ID_MAX || strncmp (id, "sbx", 3) != 0)
    return false;
  size_t i = id[3] == '_' ? 4 : 3;
  if (i == n)
    return false;
  for (; i < n; i++)
    if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
      return false;
  return true;
}

/* Where the egress CA is installed in every sandbox (isolate.c), and the
   variables that point the usual TLS stacks at it (Node adds its file to
   its own roots; OpenSSL, Python's requests and the like read the
   bundle, which holds the template's roots and the CA). */
static const char *const trust_env[] = {
  "NODE_EXTRA_CA_CERTS=" SBX_ISOLATE_CA_FILE,
  "SSL_CERT_FILE=" SBX_ISOLATE_CA_BUNDLE,
  "REQUESTS_CA_BUNDLE=" SBX_ISOLATE_CA_BUNDLE,
};

/* The environment of init: the template's, defaults (PATH; the trust
   variables when TRUST), the caller's. */
static char **
init_env (const struct sbx_template *t, const char *const *extra, bool trust)
{
  size_t n = 0, m = 0;
  while (t->env && t->env[n])
    n++;
  while (extra && extra[m])
    m++;
  char **env = calloc (n + m + 2 + sizeof trust_env / sizeof trust_env[0], sizeof *env);
  if (env == NULL)
    return NULL;
  size_t k = 0;
  bool has_path = false;
  for (size_t i = 0; i < n; i++)
    {
      env[k++] = t->env[i];
      has_path |= strncmp (t->env[i], "PATH=", 5) == 0;
    }
  if (!has_path)
    env[k++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (size_t i = 0; trust && i < sizeof trust_env / sizeof trust_env[0]; i++)
    {
      size_t klen = (size_t) (strchr (trust_env[i], '=') - trust_env[i]) + 1;
      size_t j = 0;
      while (j < k && strncmp (env[j], trust_env[i], klen) != 0)
        j++;
      if (j == k)
        env[k++] = (char *) trust_env[i];
    }
  for (size_t i = 0; i < m; i++)
    {
      const char *eq = strchr (extra[i], '=');
      size_t klen = eq ? (size_t) (eq - extra[i]) : strlen (extra[i]);
      size_t j;
      for (j = 0; j < k; j++)
        if (strncmp (env[j], extra[i], klen) == 0 && env[j][klen] == '=')
          break;
      env[j] = (char *) extra[i];
      if (j == k)
        k++;
    }
  env[k] = NULL;
  return env;
}

static int
bind_agent_socket (const struct sbx_engine *e, const struct sandbox *s, struct sbx_err *err)
{
  cleanup_close int dirfd = sandbox_dir (e, s);
  if (dirfd < 0)
    return sbx_fail (err, errno, "open the directory of %s", s->id);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sbx_fail (err, errno, "agent socket");
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  /* through the directory fd: state paths can be longer than sun_path */
  snprintf (sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/agent.sock", dirfd);
  if (bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (fd, 128) < 0)
    {
      int e = errno;
      close (fd);
      return sbx_fail (err, e, "bind agent socket");
    }
  return fd;
}

/* An empty file system of SIZE_MB, formatted once per size and kept in
   STATE/blanks, opened for reading.

   Each disk is a copy of it rather than an mkfs of its own: mkfs costs a
   fork, an exec and some milliseconds of CPU per disk, which a burst of
   creates pays many times over, while the copy writes the blank's few
   hundred KB of metadata (or shares them, where the file system can
   reflink).  Every disk of a size then has the same file system UUID and
   directory hash seed; nothing on the host looks a disk up by UUID (it is
   mounted by loop device), and a hash seed known to a sandbox only lets
   it slow its own directories.  Concurrent first creates of a size may
   each format one: the last rename wins, and each is whole. */
static int
blank_open (struct sbx_engine *e, uint32_t size_mb, struct sbx_err *err)
{
  char path[PATH_MAX], tmp[PATH_MAX];
  if (sbx_path (path, sizeof path, "%s/%u.img", e->blank_dir, size_mb) < 0)
    return sbx_fail (err, errno, "blank disk path");
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0 || errno != ENOENT)
    return fd >= 0 ? fd : sbx_fail (err, errno, "open %s", path);
  if (sbx_path (tmp, sizeof tmp, "%s/%u.img.%ld", e->blank_dir, size_mb, (long) syscall (SYS_gettid)) < 0)
    return sbx_fail (err, errno, "blank disk path");
  unlink (tmp);
  if (sbx_disk_format (tmp, size_mb, err) < 0)
    {
      unlink (tmp);
      return -1;
    }
  if (rename (tmp, path) < 0)
    {
      sbx_fail (err, errno, "keep %s", path);
      unlink (tmp);
      return -1;
    }
  fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  return fd >= 0 ? fd : sbx_fail (err, errno, "open %s", path);
}

/* Make and mount a disk of SIZE_MB at DIR/disk.img with upper/ and
   work/. */
static int
make_disk (struct sbx_engine *e, struct sandbox *s, const char *dir, uint32_t size_mb, struct sbx_err *err)
{
  char image[PATH_MAX];
  if (sbx_path (image, sizeof image, "%s/disk.img", dir) < 0)
    return sbx_fail (err, errno, "disk image path");
  if (s->disk_fd >= 0)
    {
      close (s->disk_fd);
      s->disk_fd = -1;
      unlink (image);
    }
  cleanup_close int blank = blank_open (e, size_mb, err);
  if (blank < 0)
    return -1;
  cleanup_close int fd = open (image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  uint64_t bytes;
  if (fd < 0)
    return sbx_fail (err, errno, "create disk image %s", image);
  if (sbx_disk_copy (blank, fd, &bytes, err) < 0)
    return -1;
  s->disk_fd = sbx_disk_mount (image, &s->loop_nr, err);
  if (s->disk_fd < 0)
    return -1;
  /* owned by id 0: the sandbox's root through the idmapped disk
     (isolate.c), whatever its host range */
  if (mkdirat (s->disk_fd, "upper", 0755) < 0 || mkdirat (s->disk_fd, "work", 0700) < 0)
    return sbx_fail (err, errno, "prepare the disk of %s", s->id);
  s->disk_ids0 = true;
  return 0;
}

/* Undo N sandboxes that never booted; lock not held, none in the list.
   All are killed before any is waited for, and torn down together
   (teardown_many): a stop's 100 spares took 3.8 s one at a time, 0.4 s
   so. */
static void
discard_many (struct sbx_engine *e, struct sandbox *const *ss, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (ss[i]->proc.pid > 0 && ss[i]->pidfd >= 0)
      syscall (SYS_pidfd_send_signal, ss[i]->pidfd, SIGKILL, NULL, 0);
  for (size_t i = 0; i < n; i++)
    {
      struct sandbox *s = ss[i];
      sbx_isolate_abort (&s->proc, s->pidfd);
      s->init_pid = 0;
      if (s->pidfd >= 0)
        close (s->pidfd);
      s->pidfd = -1;
    }
  teardown_many (e, ss, n);
  for (size_t i = 0; i < n; i++)
    sandbox_free (ss[i]);
}

/* Undo a sandbox that never booted; lock not held, S not in the list. */
static void
discard (struct sbx_engine *e, struct sandbox *s)
{
  discard_many (e, &s, 1);
}

/* Everything that does not depend on the template: directory, uid range,
   disk, agent socket, cgroup, and a child waiting in fresh namespaces. */
static struct sandbox *
prepare (struct sbx_engine *e, const char *want_id, struct sbx_err *err)
{
  struct sandbox *s = calloc (1, sizeof *s);
  if (s == NULL)
    {
      sbx_fail (err, ENOMEM, "create sandbox");
      return NULL;
    }
  s->pidfd = s->disk_fd = s->agent_fd = s->idmap_fd = s->proc.sock = s->loop_nr = -1;
  s->refs = 1;
  s->state = SBX_CREATING;
  s->uid_slot = UINT32_MAX;
  if (want_id)
    snprintf (s->id, sizeof s->id, "%s", want_id);
  else
    make_id (s->id);
  s->limits = (struct sbx_limits) { DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MB, SBX_DEFAULT_DISK_MB, DEFAULT_PIDS,
                                    DEFAULT_NOFILE };
  snprintf (s->template_name, sizeof s->template_name, "-");
  snprintf (s->default_user, sizeof s->default_user, "root");
  s->created_ms = s->end_ms = sbx_wall_ms ();
  struct create_clock clk;
  clock_start (&clk);

  char dir[PATH_MAX], root[PATH_MAX], cg[128];
  if (sbx_path (dir, sizeof dir, "%s/%s", e->sandboxes_dir, s->id) < 0
      || sbx_path (root, sizeof root, "%s/root", dir) < 0)
    {
      sbx_fail (err, errno, "sandbox path");
      free (s);
      return NULL;
    }
  cgroup_name (s->id, cg, sizeof cg);
  if (mkdir (dir, 0700) < 0 || mkdir (root, 0700) < 0)
    {
      sbx_fail (err, errno, "create %s", dir);
      goto fail;
    }
  char owner[UID_SLOT_OWNER_MAX];
  uid_slot_owner (e, s->id, owner);
  if (uid_slot_claim (owner, &s->uid_slot, err) < 0)
    goto fail;
  clock_mark (&clk, "dir_ids");
  if (make_disk (e, s, dir, s->limits.disk_mb, err) < 0)
    goto fail;
  clock_mark (&clk, "disk");
  s->idmap_fd = sbx_isolate_layer_userns (uid_base (s->uid_slot), UID_RANGE, err);
  if (s->idmap_fd < 0)
    goto fail;
  s->agent_fd = bind_agent_socket (e, s, err);
  if (s->agent_fd < 0)
    goto fail;
  clock_mark (&clk, "userns_socket");
  struct sbx_cgroup_limits cl = { (uint64_t) s->limits.memory_mb << 20, s->limits.cpu_millis, s->limits.pids_max };
  if (sbx_cgroup_create (cg, &cl, err) < 0)
    goto fail;
  clock_mark (&clk, "cgroup");
  struct sbx_isolate_spec spec = {
    .mountpoint = root,
    .agent_fd = s->agent_fd,
    .init_fd = e->init_fd,
    .uid_base = uid_base (s->uid_slot),
    .uid_count = UID_RANGE,
    .hostname = s->id,
    .cgroup_name = cg,
    .fs_block_dir = e->fs_block_dir,
    .egress_ca_pem = sbx_net_egress_ca_pem (e->net),
  };
  if (sbx_isolate_spawn (e->spawner, &spec, &s->proc, &s->pidfd, err) < 0)
    goto fail;
  clock_mark (&clk, "spawn");
  s->init_pid = s->proc.pid;
  s->init_start = sbx_proc_start_time (s->init_pid);
  if (e->net)
    {
      /* the link and the default rules (internet, no rules) */
      if (sbx_net_link_create (e->net, s->uid_slot, s->init_pid, err) < 0)
        goto fail;
      s->has_net = true;
      s->net.enabled = true;
      clock_mark (&clk, "net_link");
    }
  /* so a crash leaves nothing unknown behind; without the engine's
     lock, since S is no one else's yet */
  if (save_locked (e, s, err) < 0)
    goto fail;
  clock_mark (&clk, "save");
  clock_log (&clk, "prepare phases", s->id, NULL);
  return s;
fail:
  discard (e, s);
  return NULL;
}

/* ---- the spare pool ----

   Spares are sandboxes prepared up to the point where the template
   matters (prepare): a create that takes one skips the disk format, the
   cgroups with their attach (on v1 hierarchies a write to cgroup.procs
   waits for an RCU grace period) and the clone into fresh namespaces.

   SPARE_WORKERS threads prepare spares at once, so that what makes one
   slow without keeping a CPU busy (grace periods, the disk's writes, the
   wait for mkfs) overlaps.  The pool follows demand: every claim raises
   its target to spares_min plus the claims of the last one or two
   SPARE_WINDOW_MS windows, within spares_max, so a burst of N creates
   finds about N spares the next time; after SPARE_IDLE_MS without a claim
   the target halves, down to spares_min, and the workers discard the
   spares above it (each holds a mounted disk, a process, a veth).

   A create that finds the pool empty prepares its sandbox inline, on its
   own thread, in parallel with the others.  While such creates run the
   workers start no more than SPARE_WORKERS at once between them and the
   creates (but always at least one), so that the refill does not take
   the CPU from the creates that wait.  Nor do they start one while a
   create boots the spare it took, or within SPARE_REFILL_DELAY_MS of a
   claim, unless the pool is below half its target: on two cores a refill
   beside a create (its boot, then its record and answer, about 5 ms)
   doubled its time, so a create alone finds its refill done after it. */

/* The spare to discard first: one booted for a template the pool no
   longer boots for, then one of the kind (booted for boot_template or
   plain) the pool has more of than it wants; -1 if none should go.
   EXCESS: the pool holds more than its target.  Lock held. */
static int
pool_victim_locked (struct sbx_engine *e, bool excess)
{
  int hot, cold, want = booted_want_locked (e);
  booted_count_locked (e, &hot, &cold);
  int plain = e->n_spares - hot - cold, plain_want = e->spares_target - want;
  /* counting those being made: short of one kind and long of another,
     the pool makes room for the kind it lacks (after a create of a new
     template, a change of demand) */
  int hot_all = hot + e->spares_booting_ahead, plain_all = plain + e->spares_preparing - e->spares_booting_ahead;
  bool rebalance = (hot_all < want && (cold || plain > plain_want))
                   || (plain_all < plain_want && (cold || hot > want));
  if (!excess && !rebalance)
    return -1;
  int pick = -1;
  for (int i = e->n_spares - 1; i >= 0; i--)
    {
      struct sandbox *c = e->spares[i];
      bool is_hot = c->booted && strcmp (c->template_name, e->boot_template) == 0;
      if (c->booted && !is_hot)
        return i;
      if (pick < 0 && (is_hot ? hot > want : plain > plain_want))
        pick = i;
    }
  return excess && pick < 0 ? e->n_spares - 1 : pick;
}

static void
pool_discard_excess_locked (struct sbx_engine *e)
{
  int i;
  while (!e->stop && (i = pool_victim_locked (e, e->n_spares > e->spares_target)) >= 0)
    {
      struct sandbox *s = e->spares[i];
      e->spares[i] = e->spares[--e->n_spares];
      pthread_mutex_unlock (&e->lock);
      discard (e, s);
      pthread_mutex_lock (&e->lock);
    }
}

/* A claim (hit or miss) of a create that could use a spare; OTHER: one
   that a spare booted for boot_template could not serve.  Lock held. */
static void
pool_claimed_locked (struct sbx_engine *e, bool other)
{
  uint64_t now = sbx_now_ns ();
  int64_t window = (int64_t) (now / ((uint64_t) SPARE_WINDOW_MS * 1000000));
  if (window != e->claims_window)
    {
      bool next = window == e->claims_window + 1;
      e->claims_recent[1] = next ? e->claims_recent[0] : 0;
      e->other_recent[1] = next ? e->other_recent[0] : 0;
      e->claims_recent[0] = e->other_recent[0] = 0;
      e->claims_window = window;
    }
  e->claims_recent[0]++;
  e->other_recent[0] += other;
  e->last_claim_ns = now;
  uint64_t want = (uint64_t) e->spares_min + e->claims_recent[0] + e->claims_recent[1];
  if (want > (uint64_t) e->spares_max)
    want = (uint64_t) e->spares_max;
  if ((int) want > e->spares_target)
    {
      e->spares_target = (int) want;
      char t[16];
      snprintf (t, sizeof t, "%d", e->spares_target);
      sbx_log_fields (SBX_LOG_DEBUG, "spare pool grows", "target", t, NULL);
    }
  pthread_cond_broadcast (&e->spare_cond);
}

/* Halve the target if nothing was claimed for SPARE_IDLE_MS; lock held.
   Returns when to look again (monotonic ns), 0 for never. */
static uint64_t
pool_shrink_locked (struct sbx_engine *e)
{
  if (e->spares_target <= e->spares_min)
    return 0;
  uint64_t now = sbx_now_ns (), due = e->last_claim_ns + (uint64_t) SPARE_IDLE_MS * 1000000;
  if (now < due)
    return due;
  e->spares_target = e->spares_target / 2 > e->spares_min ? e->spares_target / 2 : e->spares_min;
  e->last_claim_ns = now; /* the next halving is another idle period away */
  char t[16];
  snprintf (t, sizeof t, "%d", e->spares_target);
  sbx_log_fields (SBX_LOG_DEBUG, "spare pool shrinks", "target", t, NULL);
  pthread_cond_broadcast (&e->spare_cond);
  return now + (uint64_t) SPARE_IDLE_MS * 1000000;
}

/* Discard the booted spares whose template is gone or was rebuilt since
   they booted (they would hold its retired tree: `sbxd template gc`
   could not delete it), once every SPARE_CHECK_MS.  Lock held; returns
   when to look again (monotonic ns), 0 for never. */
static uint64_t
pool_check_booted_locked (struct sbx_engine *e)
{
  uint64_t now = sbx_now_ns (), due = e->booted_checked_ns + (uint64_t) SPARE_CHECK_MS * 1000000;
  bool any = false;
  for (int i = 0; i < e->n_spares && !any; i++)
    any = e->spares[i]->booted;
  if (!any)
    return 0;
  if (now < due)
    return due;
  e->booted_checked_ns = now;
  char names[4][64];
  size_t n_names = 0;
  for (int i = 0; i < e->n_spares && n_names < sizeof names / sizeof names[0]; i++)
    {
      struct sandbox *c = e->spares[i];
      size_t k = 0;
      while (k < n_names && strcmp (names[k], c->template_name) != 0)
        k++;
      if (c->booted && k == n_names)
        snprintf (names[n_names++], sizeof names[0], "%s", c->template_name);
    }
  for (size_t k = 0; k < n_names && !e->stop; k++)
    {
      pthread_mutex_unlock (&e->lock);
      struct sbx_template t;
      memset (&t, 0, sizeof t);
      bool there = sbx_template_load (e->template_dir, names[k], &t, NULL) == 0;
      dev_t dev = t.rootfs_dev;
      ino_t ino = t.rootfs_ino;
      sbx_template_free (&t);
      pthread_mutex_lock (&e->lock);
      struct sandbox *stale[16];
      size_t n_stale = 0;
      for (int i = e->n_spares - 1; i >= 0 && n_stale < sizeof stale / sizeof stale[0]; i--)
        {
          struct sandbox *c = e->spares[i];
          if (c->booted && strcmp (c->template_name, names[k]) == 0
              && !(there && c->boot_dev == dev && c->boot_ino == ino))
            {
              e->spares[i] = e->spares[--e->n_spares];
              stale[n_stale++] = c;
            }
        }
      pthread_mutex_unlock (&e->lock);
      for (size_t i = 0; i < n_stale; i++)
        discard (e, stale[i]);
      pthread_mutex_lock (&e->lock);
    }
  return now + (uint64_t) SPARE_CHECK_MS * 1000000;
}

static void *
spare_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-spare");
  struct sbx_engine *e = arg;
  pthread_mutex_lock (&e->lock);
  while (!e->stop)
    {
      uint64_t wake = pool_shrink_locked (e), check = pool_check_booted_locked (e);
      if (check && (wake == 0 || check < wake))
        wake = check;
      pool_discard_excess_locked (e);
      uint64_t now = sbx_now_ns ();
      bool room = e->n_spares + e->spares_preparing < e->spares_target;
      uint64_t busy_until = e->last_claim_ns + (uint64_t) SPARE_BUSY_MS * 1000000;
      bool busy = now < busy_until && e->n_spares > 0;
      int workers = busy ? SPARE_BUSY_WORKERS : SPARE_WORKERS;
      bool cpu = e->spares_preparing == 0 || e->spares_preparing + e->inline_preparing < workers;
      if (room && !cpu && busy && (wake == 0 || busy_until < wake))
        wake = busy_until;
      uint64_t refill_at = e->last_claim_ns + (uint64_t) SPARE_REFILL_DELAY_MS * 1000000;
      bool low = e->n_spares * 2 < e->spares_target;
      bool quiet = low || (e->spares_booting == 0 && now >= refill_at);
      if (room && cpu && !quiet && e->spares_booting == 0 && (wake == 0 || refill_at < wake))
        wake = refill_at;
      if (e->stop || !room || !cpu || !quiet)
        {
          if (e->stop)
            break;
          if (wake)
            {
              struct timespec ts = { (time_t) (wake / 1000000000), (long) (wake % 1000000000) };
              pthread_cond_timedwait (&e->spare_cond, &e->lock, &ts);
            }
          else
            pthread_cond_wait (&e->spare_cond, &e->lock);
          continue;
        }
      e->spares_preparing++;
      /* booted ahead for boot_template while fewer are than the pool wants */
      int hot, cold;
      booted_count_locked (e, &hot, &cold);
      char boot_for[64] = "";
      if (hot + e->spares_booting_ahead < booted_want_locked (e))
        {
          snprintf (boot_for, sizeof boot_for, "%s", e->boot_template);
          e->spares_booting_ahead++;
        }
      pthread_mutex_unlock (&e->lock);
      /* background work: a request's own work comes first under load (the
         sandboxes it makes run at their normal priority: the spawner,
         which clones them, runs at it), but only while it holds no lock: preempted
         at the bulk priority with the engine's lock held, a worker
         would keep every create behind it waiting */
      sbx_thread_bulk (true);
      struct sbx_err err;
      struct sandbox *s = prepare (e, NULL, &err);
      if (s == NULL)
        {
          sbx_log_fields (SBX_LOG_WARN, "cannot prepare a spare sandbox", "error", err.msg, NULL);
          sleep (1); /* do not spin on a broken host */
        }
      else if (boot_for[0] && boot_spare (e, s, boot_for, &err) < 0)
        {
          /* the pool boots for it no more until a create of it succeeds */
          sbx_log_fields (SBX_LOG_WARN, "cannot boot a spare sandbox", "template", boot_for, "error", err.msg, NULL);
          discard (e, s);
          s = NULL;
          pthread_mutex_lock (&e->lock);
          if (strcmp (e->boot_template, boot_for) == 0)
            e->boot_template[0] = '\0';
          pthread_mutex_unlock (&e->lock);
        }
      sbx_thread_bulk (false);
      pthread_mutex_lock (&e->lock);
      if (boot_for[0])
        e->spares_booting_ahead--;
      e->spares_preparing--;
      if (s && (e->stop || e->n_spares >= e->spares_max))
        {
          pthread_mutex_unlock (&e->lock);
          discard (e, s);
          pthread_mutex_lock (&e->lock);
        }
      else if (s)
        e->spares[e->n_spares++] = s;
    }
  pthread_mutex_unlock (&e->lock);
  return NULL;
}

/* ID has sbx_new_id's form and names no sandbox the engine knows. */
static bool
valid_new_id (struct sbx_engine *e, const char *id)
{
  if (strlen (id) != 23 || id[3] == '_' || !sbx_id_wellformed (id))
    return false;
  pthread_mutex_lock (&e->lock);
  bool taken = find_locked (e, id) != NULL;
  for (int i = 0; i < e->n_spares && !taken; i++)
    taken = strcmp (e->spares[i]->id, id) == 0;
  pthread_mutex_unlock (&e->lock);
  return !taken;
}

int
sbx_template_check (struct sbx_engine *e, const char *name, struct sbx_err *err)
{
  struct sbx_template t;
  if (sbx_template_load (e->template_dir, name, &t, err) < 0)
    {
      if (err && err->code == ENOENT)
        err->kind = SBX_E_INVALID;
      return -1;
    }
  sbx_template_free (&t);
  return 0;
}

/* ---- snapshots' manifests: DIR/snapshot.json, written by
   sbx_snapshot_take ---- */

struct manifest {
  char template_name[64];
  uint32_t layers;
  char **env;
  struct sbx_limits limits;
};

static void
manifest_free (struct manifest *m)
{
  sbx_strv_free (m->env);
  m->env = NULL;
}

static int
manifest_read (int dirfd, struct manifest *m, struct sbx_err *err)
{
  memset (m, 0, sizeof *m);
  cleanup_close int fd = openat (dirfd, "snapshot.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "open snapshot manifest");
  json_error_t jerr;
  json_t *j = json_loadfd (fd, 0, &jerr);
  const char *tmpl = NULL;
  json_int_t layers = 0, cpu = 0, mem = 0, disk = 0;
  if (j == NULL
      || json_unpack (j, "{s:s, s:I, s:{s:I, s:I, s:I}}", "template", &tmpl, "layers", &layers, "limits",
                      "cpu_millis", &cpu, "memory_mb", &mem, "disk_mb", &disk)
             < 0
      || strlen (tmpl) >= sizeof m->template_name || layers < 1 || layers > SBX_SNAPSHOT_LAYERS || cpu < 0
      || cpu > UINT32_MAX || mem < 0 || mem > UINT32_MAX || disk < 0 || disk > UINT32_MAX)
    {
      json_decref (j);
      return sbx_failx (err, EINVAL, "unreadable snapshot manifest");
    }
  snprintf (m->template_name, sizeof m->template_name, "%s", tmpl);
  m->layers = (uint32_t) layers;
  m->limits.cpu_millis = (uint32_t) cpu;
  m->limits.memory_mb = (uint32_t) mem;
  m->limits.disk_mb = (uint32_t) disk;
  m->env = strv_load (json_object_get (j, "env"));
  json_decref (j);
  return 0;
}

static int
manifest_write (int dirfd, const struct sandbox *s, uint32_t layers, struct sbx_err *err)
{
  json_t *j = json_pack ("{s:s, s:i, s:o, s:{s:i, s:i, s:i}}", "template", s->template_name, "layers", (int) layers,
                         "env", strv_json (s->env, strv_len (s->env)), "limits", "cpu_millis",
                         (int) s->limits.cpu_millis, "memory_mb", (int) s->limits.memory_mb, "disk_mb",
                         (int) s->limits.disk_mb);
  cleanup_free char *text = j ? json_dumps (j, JSON_COMPACT) : NULL;
  json_decref (j);
  if (text == NULL)
    return sbx_failx (err, ENOMEM, "encode snapshot manifest");
  cleanup_close int fd = openat (dirfd, "snapshot.json", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 || sbx_write_full (fd, text, strlen (text)) < 0)
    return sbx_fail (err, errno, "write snapshot manifest");
  return 0;
}

int
sbx_snapshot_template (const char *dir, char name[64], struct sbx_err *err)
{
  cleanup_close int dfd = open (dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0)
    return sbx_fail (err, errno, "open snapshot %s", dir);
  struct manifest m;
  if (manifest_read (dfd, &m, err) < 0)
    return -1;
  snprintf (name, 64, "%s", m.template_name);
  manifest_free (&m);
  return 0;
}

/* A copy of BASE with EXTRA's variables added or replacing those of the
   same name (NULL when both are empty or out of memory: *OK says which). */
static char **
env_merge (char *const *base, const char *const *extra, bool *ok)
{
  size_t nb = strv_len (base), ne = strv_len ((char *const *) extra);
  *ok = true;
  if (nb + ne == 0)
    return NULL;
  char **v = calloc (nb + ne + 1, sizeof *v);
  if (v == NULL)
    {
      *ok = false;
      return NULL;
    }
  size_t k = 0;
  for (size_t i = 0; i < nb + ne; i++)
    {
      const char *var = i < nb ? base[i] : extra[i - nb];
      const char *eq = strchr (var, '=');
      size_t klen = eq ? (size_t) (eq - var) : strlen (var);
      size_t j;
      for (j = 0; j < k; j++)
        if (strncmp (v[j], var, klen) == 0 && v[j][klen] == '=')
          break;
      char *copy = strdup (var);
      if (copy == NULL)
        {
          sbx_strv_free (v);
          *ok = false;
          return NULL;
        }
      if (j < k)
        free (v[j]);
      v[j] = copy;
      if (j == k)
        k++;
    }
  return v;
}

/* Hard-link the layers of snapshot SNAP_FD into S's directory and mount
   them read-only into FDS (newest first). */
static int
layers_mount (struct sbx_engine *e, struct sandbox *s, int snap_fd, uint32_t n, int *fds, struct sbx_err *err)
{
  for (uint32_t i = 0; i < n; i++)
    {
      char name[32], image[PATH_MAX];
      snprintf (name, sizeof name, "layer-%u.img", i);
      char in_dir[SBX_ID_MAX + 32];
      snprintf (in_dir, sizeof in_dir, "%s/%s", s->id, name);
      if (linkat (snap_fd, name, e->sandboxes_fd, in_dir, 0) < 0)
        return sbx_fail (err, errno, "link snapshot layer %u", i);
      s->n_layers = i + 1;
      if (sbx_path (image, sizeof image, "%s/%s/%s", e->sandboxes_dir, s->id, name) < 0)
        return sbx_fail (err, errno, "layer path");
      if ((fds[i] = sbx_disk_mount_ro (image, err)) < 0)
        return -1;
    }
  return 0;
}

/* Fill the limits a create leaves at 0 from template T or the defaults. */
static void
template_limits (const struct sbx_template *t, struct sbx_limits *lim)
{
  if (!lim->cpu_millis)
    lim->cpu_millis = t->cpu_count ? t->cpu_count * 1000 : DEFAULT_CPU_MILLIS;
  if (!lim->memory_mb)
    lim->memory_mb = t->memory_mb ? t->memory_mb : DEFAULT_MEMORY_MB;
  if (!lim->disk_mb)
    lim->disk_mb = t->disk_mb ? t->disk_mb : SBX_DEFAULT_DISK_MB;
  if (!lim->pids_max)
    lim->pids_max = DEFAULT_PIDS;
  if (!lim->nofile)
    lim->nofile = DEFAULT_NOFILE;
}

/* Whether a sandbox of limits LIM can come from a booted spare: what a
   boot fixes (the disk a spare is prepared with, the pids and open-file
   limits init starts under) is what every booted spare has. */
static bool
booted_limits_fit (const struct sbx_limits *lim)
{
  return lim->disk_mb == SBX_DEFAULT_DISK_MB && lim->pids_max == DEFAULT_PIDS && lim->nofile == DEFAULT_NOFILE;
}

/* Boot S, prepared (prepare), as a sandbox of template T with limits LIM
   and what O asks at boot: environment, network policy, filesystem rules,
   volumes, CPU weight, keep_upper; MAN and SNAP_FD: a snapshot's layers.
   S's state is SBX_RUNNING after; on failure the caller discards S. */
static int
boot (struct sbx_engine *e, struct sandbox *s, const struct sbx_template *t, const struct sbx_limits *lim,
      const struct sbx_create_opts *o, const struct manifest *man, int snap_fd, bool ahead, struct create_clock *clk,
      struct sbx_err *err)
{
  snprintf (s->template_name, sizeof s->template_name, "%s", t->name);
  snprintf (s->default_user, sizeof s->default_user, "%s", *t->user ? t->user : "root");
  snprintf (s->workdir, sizeof s->workdir, "%s", t->workdir);
  s->limits = *lim;
  s->on_timeout = o->on_timeout;
  s->auto_resume = o->auto_resume;
  int r = -1;
  int layer_fds[SBX_SNAPSHOT_LAYERS];
  size_t n_layer_fds = 0;
  for (size_t i = 0; i < SBX_SNAPSHOT_LAYERS; i++)
    layer_fds[i] = -1;
  int vol_fds[SBX_FS_MOUNTS_MAX];
  for (size_t i = 0; i < SBX_FS_MOUNTS_MAX; i++)
    vol_fds[i] = -1;
  bool env_ok;
  sbx_strv_free (s->env);
  s->env = env_merge (man ? man->env : NULL, o->env, &env_ok);

  char dir[PATH_MAX], cg[128];
  char **env = NULL;
  cleanup_close int tree_fd = -1;
  cleanup_close int lock_fd = -1;
  cgroup_name (s->id, cg, sizeof cg);
  if (!env_ok)
    {
      sbx_fail (err, ENOMEM, "environment");
      goto out;
    }
  if (sbx_path (dir, sizeof dir, "%s/%s", e->sandboxes_dir, s->id) < 0)
    {
      sbx_fail (err, errno, "sandbox path");
      goto out;
    }
  if (man)
    {
      n_layer_fds = man->layers;
      if (layers_mount (e, s, snap_fd, man->layers, layer_fds, err) < 0)
        goto out;
    }
  if (s->has_net)
    {
      struct sbx_net_policy want = { .enabled = t->internet };
      sbx_net_policy_free (&s->net);
      s->net_asked_set = o->internet_asked != 0;
      s->net_asked = o->internet_asked > 0;
      if (sbx_net_policy_copy (&s->net, o->net ? o->net : &want, err) < 0)
        goto out;
    }
  if (s->limits.disk_mb != SBX_DEFAULT_DISK_MB && make_disk (e, s, dir, s->limits.disk_mb, err) < 0)
    goto out;
  clock_mark (clk, "layers_disk");
  struct sbx_cgroup_limits cl = { (uint64_t) s->limits.memory_mb << 20, s->limits.cpu_millis, s->limits.pids_max };
  if (sbx_cgroup_create (cg, &cl, err) < 0
      || (o->cpu_weight && sbx_cgroup_set_cpu_weight (cg, o->cpu_weight, err) < 0))
    goto out;
  clock_mark (clk, "cgroup");
  env = init_env (t, (const char *const *) s->env, sbx_net_egress_ca_pem (e->net) != NULL && !o->keep_upper);
  if (env == NULL)
    {
      sbx_fail (err, ENOMEM, "environment");
      goto out;
    }
  /* lock the tree first, then use it through the same directory fd: a
     rebuild that retires it meanwhile cannot pull it from under us */
  char tree[PATH_MAX];
  if (sbx_path (tree, sizeof tree, "%s", t->rootfs) < 0 || strrchr (tree, '/') == NULL)
    {
      sbx_fail (err, EINVAL, "template path %s", t->rootfs);
      goto out;
    }
  *strrchr (tree, '/') = '\0';
  tree_fd = open (tree, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (tree_fd >= 0)
    lock_fd = openat (tree_fd, ".inuse", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  if (tree_fd < 0 || lock_fd < 0 || flock (lock_fd, LOCK_SH) < 0)
    {
      sbx_fail (err, errno, "lock template %s", t->name);
      goto out;
    }
  uint32_t net_addr = 0, net_gw = 0;
  if (s->has_net)
    sbx_net_addresses (s->uid_slot, &net_addr, &net_gw);
  for (size_t i = 0; i < o->n_volumes; i++)
    if ((vol_fds[i] = sbx_disk_volume_mount (o->volume_images[i], err)) < 0)
      goto out;
  struct sbx_isolate_disk disk = { s->idmap_fd, s->disk_fd, layer_fds, n_layer_fds,
                                   vol_fds, o->volume_paths, o->n_volumes, o->keep_upper, ahead };
  if (sbx_isolate_boot_start (&s->proc, tree_fd, lock_fd, &disk, env, s->limits.nofile, net_addr, net_gw,
                              o->fs_rules, o->n_fs_rules, err)
      < 0)
    goto out;
  clock_mark (clk, "boot_start");
  /* the overlay holds the layers now, the sandbox its volumes */
  for (size_t i = 0; i < n_layer_fds; i++)
    {
      close (layer_fds[i]);
      layer_fds[i] = -1;
    }
  for (size_t i = 0; i < o->n_volumes; i++)
    {
      close (vol_fds[i]);
      vol_fds[i] = -1;
    }
  /* The link was made with the plain internet rules; other rules are put
     in place while the sandbox sets itself up.  Nothing of the caller's
     runs in it before this function returns. */
  if (s->has_net && !sbx_net_policy_plain (&s->net) && sbx_net_apply (e->net, s->uid_slot, &s->net, err) < 0)
    goto out;
  clock_mark (clk, "net_rules");
  if (sbx_isolate_boot_wait (&s->proc, err) < 0)
    goto out;
  clock_mark (clk, "boot_wait");
  /* the sandbox holds its disk and socket now (a template build keeps
     the disk, whose upper layer it publishes: sbx_upper_open) */
  if (!o->keep_upper)
    {
      close (s->disk_fd);
      s->disk_fd = -1;
    }
  close (s->agent_fd);
  close (s->idmap_fd);
  s->agent_fd = s->idmap_fd = -1;
  s->state = SBX_RUNNING;
  r = 0;
out:
  for (size_t i = 0; i < SBX_SNAPSHOT_LAYERS; i++)
    if (layer_fds[i] >= 0)
      close (layer_fds[i]);
  for (size_t i = 0; i < SBX_FS_MOUNTS_MAX; i++)
    if (vol_fds[i] >= 0)
      close (vol_fds[i]);
  free (env);
  return r;
}

/* ---- booted spares ----

   Booting a spare (boot: the template's layers, /proc, /dev and /sys,
   the masks, the sandbox's files, init's exec) is most of what a create
   from a spare costs, about 4 ms here.  The pool therefore boots its
   spares ahead for the template last created (boot_template) with
   nothing asked (boot_spare), and a create of that template takes one
   (take_booted) when it asks nothing a boot alone can give: no snapshot,
   filesystem rules, volumes or chosen id, not a template build, the
   default disk, pids and open-file limits.  What it may ask is given to
   the running sandbox (claim_booted): its environment (init's, which
   every later command gets: nothing of the template's runs before it),
   CPU and memory limits, CPU weight and network policy.  The sandbox's
   life starts at the claim; until then it is a spare, invisible, and one
   that outlived a crash is removed at the next start like any spare.

   The pool keeps plain spares too, for every other create: at least one,
   and as many as such creates took lately (other_recent).  It boots at
   most SPARE_BOOTED_MAX ahead beyond what demand grew the target by
   (spares_target - spares_min): the first create of a template, and
   each change of template, has the pool discard and boot that many again
   beside the creates that follow (with all of a pool of 100 booted
   ahead, creates one at a time took 4.4 to 4.9 ms p50 for seconds after
   the first, against 1.3 to 1.5 ms with 32).  A burst of 100 that found
   32 booted and the rest plain took 149 to 151 ms, 69 ms with all 100
   booted, 168 to 206 ms with 16.  A spare
   booted for a template the pool no longer boots for is discarded first
   when the pool shrinks or needs room; one whose template was rebuilt
   since is discarded when a create of it finds it. */

/* How many spares to keep booted for boot_template; lock held. */
static int
booted_want_locked (const struct sbx_engine *e)
{
  if (!e->boot_template[0])
    return 0;
  uint64_t other = e->other_recent[0] + e->other_recent[1];
  int plain = other + 1 < (uint64_t) e->spares_target ? (int) other + 1 : e->spares_target;
  int want = e->spares_target - plain, most = SPARE_BOOTED_MAX + e->spares_target - e->spares_min;
  return want < most ? want : most;
}

/* Spares booted for boot_template (HOT) and for another template; lock held. */
static void
booted_count_locked (const struct sbx_engine *e, int *hot, int *cold)
{
  *hot = *cold = 0;
  for (int i = 0; i < e->n_spares; i++)
    if (e->spares[i]->booted)
      {
        if (strcmp (e->spares[i]->template_name, e->boot_template) == 0)
          (*hot)++;
        else
          (*cold)++;
      }
}

/* Boot S, a spare just prepared, for template NAME as a create of it with
   nothing asked would.  On failure the caller discards S. */
static int
boot_spare (struct sbx_engine *e, struct sandbox *s, const char *name, struct sbx_err *err)
{
  struct sbx_template t;
  memset (&t, 0, sizeof t);
  if (sbx_template_load (e->template_dir, name, &t, err) < 0)
    return -1;
  struct sbx_limits lim = { 0 };
  template_limits (&t, &lim);
  struct sbx_create_opts o = { .template_name = t.name };
  struct create_clock clk;
  clock_start (&clk);
  int r = -1;
  if (!booted_limits_fit (&lim))
    sbx_failx (err, EINVAL, "template %s has a disk of its own size", t.name);
  else
    {
      /* booted in the background, below requests; once booted it runs
         like any sandbox */
      setpriority (PRIO_PROCESS, (id_t) s->init_pid, SBX_BULK_NICE);
      if (boot (e, s, &t, &lim, &o, NULL, -1, true, &clk, err) == 0)
        {
          setpriority (PRIO_PROCESS, (id_t) s->init_pid, 0);
          s->booted = true;
          s->boot_dev = t.rootfs_dev;
          s->boot_ino = t.rootfs_ino;
          clock_log (&clk, "spare boot phases", s->id, NULL);
          r = 0;
        }
    }
  sbx_template_free (&t);
  return r;
}

static int agent_connect (struct sbx_engine *e, struct sandbox *s, struct sbx_err *err);
static int agent_send (struct sbx_engine *e, struct sandbox *s, const struct sbx_msg *req, struct sbx_err *err);
static int agent_call_on (struct sbx_engine *e, struct sandbox *s, const struct sbx_msg *req,
                          const struct sbx_agent_bounds *b, sbx_agent_frame_fn fn, void *ud, struct sbx_err *err);

#define SPARE_RETRIES 8 /* spares a create takes that turn out dead, at most */

/* A spare claimed by a create did not boot: the refill may start. */
static void
spare_boot_failed (struct sbx_engine *e)
{
  pthread_mutex_lock (&e->lock);
  e->spares_booting--;
  pthread_cond_broadcast (&e->spare_cond);
  pthread_mutex_unlock (&e->lock);
}

/* S's process has ended (a spare whose spawner was killed, say), or does
   within WITHIN_MS. */
static bool
process_ends (const struct sandbox *s, int within_ms)
{
  struct pollfd pf = { s->pidfd, POLLIN, 0 };
  return s->pidfd < 0 || poll (&pf, 1, within_ms) != 0;
}

static bool
process_ended (const struct sandbox *s)
{
  return process_ends (s, 0);
}

/* S's timeout of TIMEOUT_S seconds runs from now */
static void
stamp (struct sandbox *s, uint32_t timeout_s)
{
  s->timeout_s = timeout_s;
  s->created_ms = sbx_wall_ms ();
  s->end_ms = s->created_ms + (int64_t) timeout_s * 1000;
}

/* The claimed spare's init answers the claim under SCHED_DEADLINE, a
   reservation of CLAIM_RUNTIME_NS in every CLAIM_PERIOD_NS, and goes back
   to the normal policy itself once it has answered (init.c, the
   environment).  Its cgroup is one among every sandbox's, under a parent
   that weighs little next to the daemon's threads (sandboxes_weigh): with
   the CPUs busy serving other tenants' floods its wake-up waited 1 to 200
   ms for a core (the hostile load, measured), where a deadline task is
   run ahead of every normal one.  Nothing of a tenant's runs in a spare
   before its claim, and init starts nothing while it has the deadline
   (one request at a time, and the flag resets its children's policy);
   the kernel bounds it to its reservation whatever it does.  The
   reservation is small so that a burst of claims passes the kernel's
   admission test; one refused (EBUSY) is claimed at the normal policy. */
#define CLAIM_RUNTIME_NS 200000ULL  /* 0.2 ms */
#define CLAIM_PERIOD_NS 10000000ULL /* 10 ms */

/* Give S, booted for the create's template, what O asks beyond the
   template's defaults (see above), and LIM; its life of TIMEOUT_S
   seconds starts now, and its record is written.  On failure the caller
   discards S. */
static int
claim_booted (struct sbx_engine *e, struct sandbox *s, const struct sbx_create_opts *o, const struct sbx_limits *lim,
              uint32_t timeout_s, struct sbx_err *err)
{
  if (process_ended (s))
    return sbx_failx (err, ESRCH, "the spare's init has ended");
  char cg[128];
  cgroup_name (s->id, cg, sizeof cg);
  /* its share of the CPU first: the call below waits for its init, which
     at a spare's share among busy sandboxes got the CPU tens of
     milliseconds late (the create under load took 40 ms) */
  if (o->cpu_weight && sbx_cgroup_set_cpu_weight (cg, o->cpu_weight, err) < 0)
    return -1;
  /* always sent, with the environment asked if any: it tells init it is
     claimed, so that it outlives the daemon from now on (boot).  Its
     answer is read last: the init's wake-up (0.03 to 0.6 ms) overlaps
     the rest of the claim and the record. */
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_SETENV);
  for (const char *const *v = o->env; v && *v; v++)
    sbx_msg_put_str (&req, SBX_T_ENV, *v);
  int rc = sbx_task_deadline (s->init_pid, CLAIM_RUNTIME_NS, CLAIM_PERIOD_NS);
  if (rc < 0)
    sbx_log_fields (SBX_LOG_DEBUG, "claim at the normal policy", "sandbox", s->id, "error", strerror (-rc), NULL);
  cleanup_close int fd = agent_send (e, s, &req, err);
  sbx_msg_free (&req);
  if (fd < 0)
    return -1;
  if (o->env && *o->env)
    {
      bool ok;
      char **env = env_merge (NULL, o->env, &ok);
      if (!ok)
        return sbx_fail (err, ENOMEM, "environment");
      sbx_strv_free (s->env);
      s->env = env;
    }
  struct sbx_cgroup_limits cl = { lim->memory_mb != s->limits.memory_mb ? (uint64_t) lim->memory_mb << 20 : 0,
                                  lim->cpu_millis != s->limits.cpu_millis ? lim->cpu_millis : 0, 0 };
  if ((cl.memory_bytes || cl.cpu_millis) && sbx_cgroup_set_limits (cg, &cl, err) < 0)
    return -1;
  s->limits = *lim;
  if (s->has_net)
    {
      s->net_asked_set = o->internet_asked != 0;
      s->net_asked = o->internet_asked > 0;
      if (o->net && !(sbx_net_policy_plain (o->net) && sbx_net_policy_plain (&s->net)))
        {
          struct sbx_net_policy p;
          if (sbx_net_policy_copy (&p, o->net, err) < 0)
            return -1;
          if (sbx_net_apply (e->net, s->uid_slot, &p, err) < 0)
            {
              sbx_net_policy_free (&p);
              return -1;
            }
          sbx_net_policy_free (&s->net);
          s->net = p;
        }
    }
  s->on_timeout = o->on_timeout;
  s->auto_resume = o->auto_resume;
  stamp (s, timeout_s);
  if (save_locked (e, s, err) < 0)
    return -1;
  return sbx_agent_answer (fd, s->id, &sbx_agent_plain, NULL, NULL, err);
}

/* Take a spare booted for T and give it what O and LIM ask: 0 and *OUT,
   or -1 when there is none (or it could not take them: then it is
   discarded, and the create goes the plain way). */
static int
take_booted (struct sbx_engine *e, const struct sbx_template *t, const struct sbx_create_opts *o,
             const struct sbx_limits *lim, uint32_t timeout_s, struct sandbox **out)
{
  struct sandbox *s = NULL;
  pthread_mutex_lock (&e->lock);
  /* one booted from a tree since rebuilt is left to the pool, which
     discards it (pool_check_booted_locked) */
  for (int i = e->n_spares - 1; i >= 0 && s == NULL; i--)
    {
      struct sandbox *c = e->spares[i];
      if (c->booted && strcmp (c->template_name, t->name) == 0 && c->boot_dev == t->rootfs_dev
          && c->boot_ino == t->rootfs_ino)
        {
          e->spares[i] = e->spares[--e->n_spares];
          s = c;
        }
    }
  pthread_mutex_unlock (&e->lock);
  if (s == NULL)
    return -1;
  struct sbx_err err;
  if (claim_booted (e, s, o, lim, timeout_s, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "cannot take a booted spare", "sandbox", s->id, "error", err.msg, NULL);
      discard (e, s);
      return -1;
    }
  pthread_mutex_lock (&e->lock);
  e->spare_hits++;
  e->spare_booted_hits++;
  pool_claimed_locked (e, false);
  pthread_mutex_unlock (&e->lock);
  *out = s;
  return 0;
}

static int create (struct sbx_engine *e, const struct sbx_create_opts *o, const struct manifest *man, int snap_fd,
                   char id_out[SBX_ID_MAX], struct sbx_err *err);

int
sbx_template_name (struct sbx_engine *e, const char *name, char out[64], struct sbx_err *err)
{
  struct sbx_template t;
  if (sbx_template_load (e->template_dir, name, &t, err) < 0)
    return -1;
  snprintf (out, 64, "%s", t.name);
  sbx_template_free (&t);
  return 0;
}

int
sbx_create (struct sbx_engine *e, const struct sbx_create_opts *o, char id_out[SBX_ID_MAX], struct sbx_err *err)
{
  struct manifest man = { 0 };
  cleanup_close int snap_fd = -1;
  if (o->snapshot_dir)
    {
      snap_fd = open (o->snapshot_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (snap_fd < 0)
        return sbx_fail (err, errno, "open snapshot %s", o->snapshot_dir);
      if (manifest_read (snap_fd, &man, err) < 0)
        return -1;
      if (o->template_name && strcmp (o->template_name, man.template_name) != 0)
        {
          manifest_free (&man);
          return sbx_failk (err, SBX_E_INVALID, "the snapshot is of template %s", man.template_name);
        }
    }
  int r = create (e, o, o->snapshot_dir ? &man : NULL, snap_fd, id_out, err);
  manifest_free (&man);
  return r;
}

static int
create (struct sbx_engine *e, const struct sbx_create_opts *o, const struct manifest *man, int snap_fd,
        char id_out[SBX_ID_MAX], struct sbx_err *err)
{
  const char *template_name = man ? man->template_name : o->template_name;
  struct create_clock clk;
  clock_start (&clk);
  if (template_name == NULL || *template_name == '\0')
    return sbx_failk (err, SBX_E_INVALID, "a template is required");
  uint32_t timeout = o->timeout_s ? o->timeout_s : 300;
  if (timeout > e->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", e->max_timeout_s);
  if (sbx_fs_rules_check (o->fs_rules, o->n_fs_rules, err) < 0
      || sbx_fs_mount_paths_check (o->volume_paths, o->n_volumes, err) < 0)
    return -1;
  if (o->n_volumes && o->n_fs_rules)
    return sbx_failk (err, SBX_E_INVALID, "volumes and filesystem rules cannot be combined");
  if (o->id && !valid_new_id (e, o->id))
    return sbx_failk (err, SBX_E_INVALID, "sandbox id %s is malformed or taken", o->id);
  struct sbx_template t;
  memset (&t, 0, sizeof t);
  if (sbx_template_load (e->template_dir, template_name, &t, err) < 0)
    {
      /* naming a template that is not there is the caller's mistake */
      if (err && err->code == ENOENT)
        err->kind = SBX_E_INVALID;
      return -1;
    }

  struct sbx_limits lim = o->limits;
  if (man)
    {
      /* a snapshot's sandbox is sized as its source was, unless asked */
      if (!lim.cpu_millis)
        lim.cpu_millis = man->limits.cpu_millis;
      if (!lim.memory_mb)
        lim.memory_mb = man->limits.memory_mb;
      if (!lim.disk_mb)
        lim.disk_mb = man->limits.disk_mb;
    }
  template_limits (&t, &lim);
  clock_mark (&clk, "template");
  /* its disk must fit before a spare is claimed: one that does not stays
     a spare */
  if (disk_admit (e, lim.disk_mb, err) < 0)
    {
      sbx_template_free (&t);
      return -1;
    }
  clock_mark (&clk, "disk_admit");

  /* A spare booted ahead for this template if the create asks nothing
     that only a boot can give (boot_spare); else a spare if one is
     ready, else one prepared now.  A sandbox whose id was chosen
     beforehand is always prepared now, since a spare's id is already its
     directory's, its cgroups' and its host name. */
  bool bootable = man == NULL && o->id == NULL && o->n_fs_rules == 0 && o->n_volumes == 0 && !o->keep_upper
                  && booted_limits_fit (&lim);
  struct sandbox *s = NULL;
  bool spare = false, booting = false;
  bool saved = false;
  if (bootable && take_booted (e, &t, o, &lim, timeout, &s) == 0)
    {
      spare = saved = true; /* its record was written as it was claimed */
      clock_mark (&clk, "claim_booted");
    }
  else
    for (int tries = 0;; tries++)
      {
        struct sandbox *ended = NULL; /* spares whose process has gone */
        pthread_mutex_lock (&e->lock);
        if (o->id == NULL)
          {
            for (int i = e->n_spares - 1; i >= 0 && s == NULL; i--)
              if (!e->spares[i]->booted)
                {
                  struct sandbox *c = e->spares[i];
                  e->spares[i] = e->spares[--e->n_spares];
                  if (process_ended (c))
                    {
                      c->next = ended;
                      ended = c;
                    }
                  else
                    s = c;
                }
            pool_claimed_locked (e, !bootable || strcmp (t.name, e->boot_template) != 0);
          }
        spare = booting = s != NULL;
        if (s)
          {
            e->spare_hits++;
            e->spares_booting++;
          }
        else
          {
            e->spare_misses++;
            e->inline_preparing++;
          }
        pthread_mutex_unlock (&e->lock);
        while (ended)
          {
            struct sandbox *c = ended;
            ended = c->next;
            sbx_log_fields (SBX_LOG_WARN, "a spare's process has ended; discarding it", "sandbox", c->id, NULL);
            discard (e, c);
          }
        if (s == NULL)
          {
            s = prepare (e, o->id, err);
            pthread_mutex_lock (&e->lock);
            e->inline_preparing--;
            pthread_cond_broadcast (&e->spare_cond);
            pthread_mutex_unlock (&e->lock);
          }
        if (s == NULL)
          {
            disk_release (e, lim.disk_mb);
            sbx_template_free (&t);
            return -1;
          }
        clock_mark (&clk, spare ? "claim" : "prepare");
        if (boot (e, s, &t, &lim, o, man, snap_fd, false, &clk, err) == 0)
          break;
        /* a spare whose process ended under it (its spawner was killed, and
           the spares waiting in it with it), seen as a handover to a
           closed socket: another, or one prepared now.  A setup that
           fails answers with its reason instead, and fails the create. */
        if (!spare || tries == SPARE_RETRIES || (err->code != EPIPE && err->code != ECONNRESET)
            || !process_ends (s, 1000))
          goto fail;
        sbx_log_fields (SBX_LOG_WARN, "a spare's process ended as it booted; taking another", "sandbox", s->id,
                        "error", err->msg, NULL);
        if (booting)
          spare_boot_failed (e);
        booting = false;
        discard (e, s);
        s = NULL;
      }
  /* S is in no list yet: its record is written without the engine's
     lock, which a burst of creates would otherwise queue on */
  if (!saved)
    {
      stamp (s, timeout);
      if (save_locked (e, s, err) < 0)
        goto fail;
    }
  clock_mark (&clk, "record");
  pthread_mutex_lock (&e->lock);
  if (booting)
    {
      booting = false; /* booted: the refill may start */
      e->spares_booting--;
      pthread_cond_broadcast (&e->spare_cond);
    }
  if (bootable && strcmp (e->boot_template, t.name) != 0)
    {
      /* the pool boots its spares for the template last asked for */
      snprintf (e->boot_template, sizeof e->boot_template, "%s", t.name);
      pthread_cond_broadcast (&e->spare_cond);
    }
  s->next = e->list;
  e->list = s;
  id_index_add_locked (e, s);
  e->disk_pending -= (uint64_t) lim.disk_mb << 20; /* it counts in the list now */
  pthread_mutex_unlock (&e->lock);
  clock_mark (&clk, "save");
  memcpy (id_out, s->id, SBX_ID_MAX);
  sbx_template_free (&t);
  emit (e, id_out, SBX_EVENT_CREATED, "request");
  clock_mark (&clk, "event");
  clock_log (&clk, "create phases", id_out, s->booted ? "booted" : spare ? "yes" : "no");
  return 0;

fail:
  if (booting)
    spare_boot_failed (e);
  sbx_template_free (&t);
  discard (e, s);
  disk_release (e, lim.disk_mb);
  return -1;
}

/* ---- life cycle ---- */

int
sbx_destroy (struct sbx_engine *e, const char *id, struct sbx_err *err)
{
  return sbx_destroy_for (e, id, "request", err);
}

int
sbx_destroy_for (struct sbx_engine *e, const char *id, const char *reason, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  bool stopped = doom (e, s, reason);
  put (e, s);
  if (!stopped)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
  return 0;
}

int
sbx_teardown_wait (struct sbx_engine *e, const char *id, uint32_t timeout_ms, struct sbx_err *err)
{
  struct timespec until;
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L)
    {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  pthread_mutex_lock (&e->lock);
  struct sandbox *s = find_locked (e, id);
  if (s)
    s->refs++;
  int r = 0;
  while (s && s->doomed && r == 0)
    r = pthread_cond_timedwait (&e->cond, &e->lock, &until);
  bool pending = s && s->doomed;
  pthread_mutex_unlock (&e->lock);
  if (s)
    put (e, s);
  if (pending)
    return sbx_failk (err, SBX_E_UNAVAILABLE, "sandbox %s is still being torn down", id);
  return 0;
}

/* Take S for a state change; fails unless it is in one of the states in
   MASK (bit per enum sbx_state). */
static int
begin_change (struct sbx_engine *e, struct sandbox *s, unsigned mask, struct sbx_err *err)
{
  pthread_mutex_lock (&e->lock);
  while (s->busy && !s->doomed)
    pthread_cond_wait (&e->cond, &e->lock);
  if (s->doomed || !(mask & (1u << s->state)))
    {
      enum sbx_state st = state_seen (s);
      pthread_mutex_unlock (&e->lock);
      if (st == SBX_STOPPED)
        return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
      if (st == SBX_PAUSED)
        return sbx_failk (err, SBX_E_PAUSED, "sandbox is paused");
      return sbx_failk (err, SBX_E_CONFLICT, "sandbox is %s", sbx_state_name (st));
    }
  s->busy = true;
  pthread_mutex_unlock (&e->lock);
  return 0;
}

static void
end_change (struct sbx_engine *e, struct sandbox *s)
{
  pthread_mutex_lock (&e->lock);
  s->busy = false;
  pthread_cond_broadcast (&e->cond);
  pthread_mutex_unlock (&e->lock);
}

static int
change_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, bool extend_only, struct sbx_err *err);

int
sbx_set_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, struct sbx_err *err)
{
  return change_timeout (e, id, timeout_s, false, err);
}

int
sbx_extend_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, struct sbx_err *err)
{
  return change_timeout (e, id, timeout_s, true, err);
}

static int
change_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, bool extend_only, struct sbx_err *err)
{
  if (timeout_s > e->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", e->max_timeout_s);
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = begin_change (e, s, 1u << SBX_RUNNING | 1u << SBX_PAUSED, err);
  if (r == 0)
    {
      pthread_mutex_lock (&e->lock);
      int64_t end = sbx_wall_ms () + (int64_t) timeout_s * 1000;
      if (!extend_only || end > s->end_ms)
        {
          s->timeout_s = timeout_s;
          s->end_ms = end;
        }
      r = save_locked (e, s, err);
      pthread_mutex_unlock (&e->lock);
      end_change (e, s);
      if (r == 0)
        emit (e, id, SBX_EVENT_UPDATED, "timeout");
    }
  put (e, s);
  return r;
}

int
sbx_set_network (struct sbx_engine *e, const char *id, const struct sbx_net_policy *policy, int internet_asked,
                 struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = begin_change (e, s, 1u << SBX_RUNNING | 1u << SBX_PAUSED, err);
  if (r == 0)
    {
      struct sbx_net_policy copy;
      if (!s->has_net || e->net == NULL)
        r = sbx_failk (err, SBX_E_CONFLICT, "this sandbox has no network");
      else if ((r = sbx_net_policy_copy (&copy, policy, err)) == 0)
        {
          r = sbx_net_apply (e->net, s->uid_slot, policy, err);
          if (r == 0)
            {
              pthread_mutex_lock (&e->lock);
              sbx_net_policy_free (&s->net);
              s->net = copy;
              s->net_asked_set = internet_asked != 0;
              s->net_asked = internet_asked > 0;
              r = save_locked (e, s, err);
              pthread_mutex_unlock (&e->lock);
            }
          else
            sbx_net_policy_free (&copy);
        }
      end_change (e, s);
      if (r == 0)
        emit (e, id, SBX_EVENT_UPDATED, "network");
    }
  put (e, s);
  return r;
}

int
sbx_egress_log (struct sbx_engine *e, const char *id, uint64_t after, size_t limit, struct sbx_egress_record **out,
                size_t *n, uint64_t *dropped, struct sbx_err *err)
{
  *out = NULL;
  *n = 0;
  *dropped = 0;
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = 0;
  /* under the engine's lock: the slot cannot be handed to another
     sandbox meanwhile (teardown forgets the log before the slot) */
  pthread_mutex_lock (&e->lock);
  if (e->net && s->has_net && state_seen (s) != SBX_STOPPED)
    r = sbx_net_egress_log (e->net, s->uid_slot, after, limit, out, n, dropped, err);
  pthread_mutex_unlock (&e->lock);
  put (e, s);
  return r;
}

/* Pause S (s->busy held): freeze it, after killing everything but its
   init when DROP_MEMORY (a paused sandbox can be so too). */
static int
pause_held (struct sbx_engine *e, struct sandbox *s, bool drop_memory, struct sbx_err *err)
{
  char cg[128];
  cgroup_name (s->id, cg, sizeof cg);
  /* the kill leaves the tree thawed: the killed die, init reaps them */
  if (drop_memory && sbx_cgroup_kill_except (cg, s->init_pid, 5000, err) < 0)
    {
      /* as it was: a paused one frozen again */
      pthread_mutex_lock (&e->lock);
      bool was_paused = s->state == SBX_PAUSED;
      pthread_mutex_unlock (&e->lock);
      if (was_paused)
        sbx_cgroup_freeze (cg, true, NULL);
      return -1;
    }
  if (sbx_cgroup_freeze (cg, true, err) < 0)
    {
      pthread_mutex_lock (&e->lock);
      if (s->state == SBX_PAUSED)
        s->state = SBX_RUNNING; /* thawed by the kill, and staying so */
      save_locked (e, s, NULL);
      pthread_mutex_unlock (&e->lock);
      return -1;
    }
  pthread_mutex_lock (&e->lock);
  s->state = SBX_PAUSED;
  s->memory_dropped |= drop_memory;
  int r = save_locked (e, s, err);
  pthread_mutex_unlock (&e->lock);
  return r;
}

static int
set_frozen (struct sbx_engine *e, const char *id, bool frozen, bool drop_memory, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  unsigned from = frozen ? 1u << SBX_RUNNING : 1u << SBX_PAUSED;
  if (drop_memory)
    {
      /* a paused sandbox may still drop its memory, once */
      pthread_mutex_lock (&e->lock);
      bool dropped = s->memory_dropped;
      pthread_mutex_unlock (&e->lock);
      if (!dropped)
        from |= 1u << SBX_PAUSED;
    }
  int r = begin_change (e, s, from, err);
  if (r < 0)
    {
      put (e, s);
      return -1;
    }
  if (frozen)
    r = pause_held (e, s, drop_memory, err);
  else
    {
      char cg[128];
      cgroup_name (s->id, cg, sizeof cg);
      r = sbx_cgroup_freeze (cg, false, err);
      if (r == 0)
        {
          pthread_mutex_lock (&e->lock);
          s->state = SBX_RUNNING;
          s->memory_dropped = false;
          s->end_ms = sbx_wall_ms () + (int64_t) s->timeout_s * 1000;
          r = save_locked (e, s, err);
          pthread_mutex_unlock (&e->lock);
        }
    }
  end_change (e, s);
  if (r == 0)
    emit (e, id, frozen ? SBX_EVENT_PAUSED : SBX_EVENT_RESUMED, "request");
  put (e, s);
  return r;
}

int
sbx_pause (struct sbx_engine *e, const char *id, struct sbx_err *err)
{
  return set_frozen (e, id, true, false, err);
}

int
sbx_pause_files (struct sbx_engine *e, const char *id, struct sbx_err *err)
{
  return set_frozen (e, id, true, true, err);
}

int
sbx_resume (struct sbx_engine *e, const char *id, struct sbx_err *err)
{
  return set_frozen (e, id, false, false, err);
}

/* ---- snapshots ---- */

/* Write back what S's file system holds in memory, so that its disk
   image has it all: syncfs on its root (the overlay) syncs the upper
   layer's file system, its disk.  Opened as root through /proc: a
   directory, used for nothing else. */
static int
sync_disk (struct sandbox *s, struct sbx_err *err)
{
  char root[64];
  snprintf (root, sizeof root, "/proc/%d/root", (int) s->init_pid);
  cleanup_close int fd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || syncfs (fd) < 0)
    return sbx_fail (err, errno, "sync the disk of %s", s->id);
  return 0;
}

/* Snapshot S (s->busy held) into DIR. */
static int
snapshot_held (struct sbx_engine *e, struct sandbox *s, const char *dir, uint64_t *bytes, struct sbx_err *err)
{
  if (!s->disk_ids0)
    return sbx_failk (err, SBX_E_CONFLICT, "sandbox %s was created before snapshots existed: start a new one",
                      s->id);
  if (s->n_layers + 1 > SBX_SNAPSHOT_LAYERS)
    return sbx_failk (err, SBX_E_LIMIT, "a snapshot holds at most %d layers; this sandbox starts from %u",
                      SBX_SNAPSHOT_LAYERS, s->n_layers);
  cleanup_close int sdir = sandbox_dir (e, s);
  cleanup_close int src = sdir < 0 ? -1 : openat (sdir, "disk.img", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (src < 0 || fstat (src, &st) < 0)
    return sbx_fail (err, errno, "open the disk of %s", s->id);
  /* the copy must fit what is free, after the reserve and the promises */
  uint64_t want = (uint64_t) st.st_blocks * 512;
  struct disk_room room;
  pthread_mutex_lock (&e->lock);
  int rr = disk_room_locked (e, &room, false, err);
  pthread_mutex_unlock (&e->lock);
  if (rr < 0)
    return -1;
  if (want > room.promisable)
    return sbx_failk (err, SBX_E_NO_SPACE, "not enough disk on this host for a snapshot of %llu MB",
                      (unsigned long long) (want >> 20));
  if (mkdir (dir, 0700) < 0)
    return sbx_fail (err, errno, "create %s", dir);
  cleanup_close int dst = -1;
  cleanup_close int dfd = open (dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0)
    {
      sbx_fail (err, errno, "open %s", dir);
      goto fail;
    }

  pthread_mutex_lock (&e->lock);
  bool was_running = s->state == SBX_RUNNING;
  pthread_mutex_unlock (&e->lock);
  char cg[128];
  cgroup_name (s->id, cg, sizeof cg);
  /* most of it is written back while the sandbox still runs, the rest
     once it is frozen; the copy is made frozen, so it is whole */
  if (sync_disk (s, err) < 0 || (was_running && sbx_cgroup_freeze (cg, true, err) < 0))
    goto fail;
  int r = sync_disk (s, err);
  if (r == 0)
    {
      dst = openat (dfd, "layer-0.img", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      r = dst < 0 ? sbx_fail (err, errno, "create a snapshot layer") : sbx_disk_copy (src, dst, bytes, err);
    }
  struct sbx_err thaw_err;
  if (was_running && sbx_cgroup_freeze (cg, false, &thaw_err) < 0)
    {
      /* left frozen: say so rather than pretend it runs */
      sbx_log_fields (SBX_LOG_WARN, "cannot thaw a sandbox after its snapshot", "sandbox", s->id, "error",
                      thaw_err.msg, NULL);
      pthread_mutex_lock (&e->lock);
      s->state = SBX_PAUSED;
      save_locked (e, s, NULL);
      pthread_mutex_unlock (&e->lock);
    }
  /* on disk before it is used: after the thaw, so the sandbox does not
     wait for it (a loop device over a file with dirty pages would write
     them back when a new sandbox mounts it anyway) */
  if (r == 0 && fdatasync (dst) < 0)
    r = sbx_fail (err, errno, "write a snapshot layer");
  if (r < 0)
    goto fail;
  /* the layers it started from are shared, never copied */
  for (uint32_t i = 0; i < s->n_layers; i++)
    {
      char from[32], to[32];
      snprintf (from, sizeof from, "layer-%u.img", i);
      snprintf (to, sizeof to, "layer-%u.img", i + 1);
      if (linkat (sdir, from, dfd, to, 0) < 0)
        {
          sbx_fail (err, errno, "link snapshot layer %u", i);
          goto fail;
        }
    }
  if (manifest_write (dfd, s, s->n_layers + 1, err) < 0)
    goto fail;
  return 0;
fail:;
  struct sbx_err rm_err;
  sbx_rm_rf (dir, &rm_err);
  return -1;
}

int
sbx_snapshot_take (struct sbx_engine *e, const char *id, const char *dir, uint64_t *bytes, struct sbx_err *err)
{
  *bytes = 0;
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = begin_change (e, s, 1u << SBX_RUNNING | 1u << SBX_PAUSED, err);
  if (r == 0)
    {
      r = snapshot_held (e, s, dir, bytes, err);
      end_change (e, s);
    }
  put (e, s);
  return r;
}

int
sbx_upper_open (struct sbx_engine *e, const char *id, int *fd, uint32_t *id_base, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = 0;
  *fd = -1;
  pthread_mutex_lock (&e->lock);
  bool stopped = state_seen (s) == SBX_STOPPED;
  pthread_mutex_unlock (&e->lock);
  if (stopped || s->disk_fd < 0)
    r = sbx_failk (err, SBX_E_STOPPED, "sandbox %s keeps no upper layer", id);
  else if ((*fd = openat (s->disk_fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
    r = sbx_fail (err, errno, "open the upper layer of %s", id);
  else
    *id_base = 0; /* the disk holds the sandbox's own ids (idmapped layers) */
  put (e, s);
  return r;
}

int
sbx_set_cpu_weight (struct sbx_engine *e, const char *id, unsigned weight, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = 0;
  pthread_mutex_lock (&e->lock);
  bool stopped = state_seen (s) == SBX_STOPPED;
  pthread_mutex_unlock (&e->lock);
  if (!stopped)
    {
      char cg[128];
      cgroup_name (s->id, cg, sizeof cg);
      r = sbx_cgroup_set_cpu_weight (cg, weight, err);
    }
  put (e, s);
  return r;
}

static int agent_call (struct sbx_engine *e, const char *id, const struct sbx_msg *req,
                       const struct sbx_agent_bounds *b, sbx_agent_frame_fn fn, void *ud, struct sbx_err *err);

int
sbx_claim (struct sbx_engine *e, const char *id, const struct sbx_claim_opts *o, struct sbx_err *err)
{
  uint32_t timeout = o->timeout_s ? o->timeout_s : 300;
  if (timeout > e->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", e->max_timeout_s);
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = begin_change (e, s, 1u << SBX_RUNNING, err);
  if (r < 0)
    {
      put (e, s);
      return -1;
    }
  char cg[128];
  cgroup_name (s->id, cg, sizeof cg);
  bool env_ok = true;
  char **env = NULL;
  struct sbx_net_policy net;
  bool have_net = false;
  if (o->env && *o->env)
    {
      /* init's environment first: what it has is what later commands get */
      struct sbx_msg req;
      sbx_msg_init (&req, SBX_REQ_SETENV);
      for (const char *const *v = o->env; *v; v++)
        sbx_msg_put_str (&req, SBX_T_ENV, *v);
      r = agent_call (e, id, &req, &sbx_agent_plain, NULL, NULL, err);
      sbx_msg_free (&req);
      if (r == 0 && (env = env_merge (s->env, o->env, &env_ok)) == NULL && !env_ok)
        r = sbx_fail (err, ENOMEM, "environment");
    }
  struct sbx_cgroup_limits cl = { (uint64_t) o->memory_mb << 20, o->cpu_millis, 0 };
  if (r == 0 && (o->memory_mb || o->cpu_millis))
    r = sbx_cgroup_set_limits (cg, &cl, err);
  if (r == 0 && o->cpu_weight)
    r = sbx_cgroup_set_cpu_weight (cg, o->cpu_weight, err);
  if (r == 0 && o->net && s->has_net && e->net)
    {
      r = sbx_net_policy_copy (&net, o->net, err);
      have_net = r == 0;
      if (r == 0)
        r = sbx_net_apply (e->net, s->uid_slot, o->net, err);
    }
  if (r == 0)
    {
      pthread_mutex_lock (&e->lock);
      if (env)
        {
          sbx_strv_free (s->env);
          s->env = env;
          env = NULL;
        }
      if (have_net)
        {
          sbx_net_policy_free (&s->net);
          s->net = net;
          have_net = false;
        }
      if (s->has_net && (o->net || o->internet_asked))
        {
          s->net_asked_set = o->internet_asked != 0;
          s->net_asked = o->internet_asked > 0;
        }
      if (o->memory_mb)
        s->limits.memory_mb = o->memory_mb;
      if (o->cpu_millis)
        s->limits.cpu_millis = o->cpu_millis;
      s->on_timeout = o->on_timeout;
      s->auto_resume = o->auto_resume;
      stamp (s, timeout);
      r = save_locked (e, s, err);
      pthread_mutex_unlock (&e->lock);
    }
  if (have_net)
    sbx_net_policy_free (&net);
  sbx_strv_free (env);
  end_change (e, s);
  put (e, s);
  return r;
}

static void
fill_info (const struct sandbox *s, struct sbx_info *info)
{
  memset (info, 0, sizeof *info);
  memcpy (info->id, s->id, sizeof info->id);
  memcpy (info->template_name, s->template_name, sizeof info->template_name);
  info->state = state_seen (s);
  info->created_ms = s->created_ms;
  info->end_ms = s->end_ms;
  info->limits = s->limits;
  info->reason = s->reason ? strdup (s->reason) : NULL;
  info->timeout_s = s->timeout_s;
  info->on_timeout = s->on_timeout;
  info->auto_resume = s->auto_resume;
  info->memory_dropped = s->memory_dropped;
  if (s->has_net)
    {
      struct sbx_err err;
      info->has_network = sbx_net_policy_copy (&info->network, &s->net, &err) == 0;
      uint32_t addr, gw;
      sbx_net_addresses (s->uid_slot, &addr, &gw);
      struct in_addr ia = { htonl (addr) }, ig = { htonl (gw) };
      if (info->has_network && info->state != SBX_STOPPED)
        {
          inet_ntop (AF_INET, &ia, info->net_address, sizeof info->net_address);
          inet_ntop (AF_INET, &ig, info->net_gateway, sizeof info->net_gateway);
        }
      info->internet_asked = s->net_asked_set ? (s->net_asked ? 1 : -1) : 0;
    }
}

void
sbx_info_free (struct sbx_info *info)
{
  free (info->reason);
  info->reason = NULL;
  if (info->has_network)
    sbx_net_policy_free (&info->network);
  info->has_network = false;
}

int
sbx_get_info (struct sbx_engine *e, const char *id, struct sbx_info *info, struct sbx_err *err)
{
  pthread_mutex_lock (&e->lock);
  struct sandbox *s = find_locked (e, id);
  if (s)
    fill_info (s, info);
  pthread_mutex_unlock (&e->lock);
  if (s == NULL)
    return sbx_failk (err, SBX_E_NOT_FOUND, "sandbox not found");
  return 0;
}

int
sbx_list (struct sbx_engine *e, struct sbx_info **infos, size_t *n, struct sbx_err *err)
{
  pthread_mutex_lock (&e->lock);
  size_t count = 0;
  for (struct sandbox *s = e->list; s; s = s->next)
    count++;
  struct sbx_info *arr = calloc (count ? count : 1, sizeof *arr);
  if (arr == NULL)
    {
      pthread_mutex_unlock (&e->lock);
      return sbx_fail (err, ENOMEM, "list");
    }
  size_t i = 0;
  for (struct sandbox *s = e->list; s; s = s->next)
    fill_info (s, &arr[i++]);
  pthread_mutex_unlock (&e->lock);
  *infos = arr;
  *n = count;
  return 0;
}

void
sbx_list_free (struct sbx_info *infos, size_t n)
{
  for (size_t i = 0; i < n; i++)
    sbx_info_free (&infos[i]);
  free (infos);
}

int
sbx_get_metrics (struct sbx_engine *e, const char *id, struct sbx_metrics *m, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  memset (m, 0, sizeof *m);
  char cg[128];
  cgroup_name (s->id, cg, sizeof cg);
  struct sbx_cgroup_stats st;
  int r = -1;
  pthread_mutex_lock (&e->lock);
  enum sbx_state state = state_seen (s);
  pthread_mutex_unlock (&e->lock);
  if (state == SBX_STOPPED)
    {
      sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
      goto out;
    }
  if (sbx_cgroup_stats (cg, &st, err) < 0)
    goto out;
  uint64_t now = sbx_now_ns ();
  pthread_mutex_lock (&e->lock);
  uint64_t since = s->cpu_sample_at ? now - s->cpu_sample_at
                                    : (uint64_t) (sbx_wall_ms () - s->created_ms) * 1000000ull;
  uint64_t used = st.cpu_usage_ns - (s->cpu_sample_at ? s->cpu_sample_ns : 0);
  s->cpu_sample_ns = st.cpu_usage_ns;
  s->cpu_sample_at = now;
  pthread_mutex_unlock (&e->lock);
  m->cpu_count = (s->limits.cpu_millis + 999) / 1000;
  if (since > 0)
    m->cpu_used_pct = 100.0 * (double) used / (double) since / (s->limits.cpu_millis / 1000.0);
  if (m->cpu_used_pct > 100.0)
    m->cpu_used_pct = 100.0;
  m->mem_used = st.memory_current;
  m->mem_total = st.memory_max ? st.memory_max : (uint64_t) s->limits.memory_mb << 20;
  m->mem_cache = st.memory_cache;
  m->oom_kills = st.oom_kills;
  m->pids = st.pids_current;
  char root[64];
  snprintf (root, sizeof root, "/proc/%d/root", (int) s->init_pid);
  struct statfs sf;
  /* an overlay reports the statistics of its upper layer: the sandbox disk */
  if (statfs (root, &sf) == 0)
    {
      m->disk_total = (uint64_t) sf.f_blocks * (uint64_t) sf.f_bsize;
      m->disk_used = (uint64_t) (sf.f_blocks - sf.f_bfree) * (uint64_t) sf.f_bsize;
    }
  r = 0;
out:
  put (e, s);
  return r;
}

/* ---- ports inside a sandbox ---- */

/* The socket is made by a thread of its own that joins the sandbox's
   network namespace and ends: no thread of the daemon that goes on
   running is ever left in a sandbox's namespace, whatever fails.  A socket
   stays in the namespace it was made in, so the connection below goes to
   the sandbox's own loopback, never to the host's, and never through the
   host's routing (the sandbox's egress rules are not involved: nothing
   leaves the sandbox).  The cost is one short thread per connection. */
struct port_socket {
  int nsfd;   /* a pidfd of the sandbox's init */
  int fd;     /* the socket, or -1 */
  int error;  /* errno when fd is -1 */
};

static void *
port_socket_main (void *arg)
{
  struct port_socket *ps = arg;
  if (setns (ps->nsfd, CLONE_NEWNET) < 0)
    {
      ps->error = errno;
      return NULL;
    }
  ps->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ps->fd < 0)
    ps->error = errno;
  return NULL;
}

int
sbx_port_connect (struct sbx_engine *e, const char *id, uint16_t port, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  pthread_mutex_lock (&e->lock);
  enum sbx_state st = state_seen (s);
  int nsfd = st == SBX_RUNNING && s->pidfd >= 0 ? fcntl (s->pidfd, F_DUPFD_CLOEXEC, 0) : -1;
  pthread_mutex_unlock (&e->lock);
  put (e, s);
  if (st == SBX_PAUSED)
    return sbx_failk (err, SBX_E_PAUSED, "sandbox is paused");
  if (st != SBX_RUNNING)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
  if (nsfd < 0)
    return sbx_fail (err, errno, "sandbox %s: its process", id);
  struct port_socket ps = { .nsfd = nsfd, .fd = -1 };
  pthread_t t;
  int rc = pthread_create (&t, NULL, port_socket_main, &ps);
  if (rc == 0)
    pthread_join (t, NULL);
  close (nsfd);
  if (rc != 0)
    return sbx_fail (err, rc, "sandbox %s: a thread to enter its network", id);
  if (ps.fd < 0)
    return sbx_fail (err, ps.error, "sandbox %s: a socket in its network", id);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (port), .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  if (connect (ps.fd, (struct sockaddr *) &sa, sizeof sa) < 0 && errno != EINPROGRESS)
    {
      int e2 = errno;
      close (ps.fd);
      return sbx_fail (err, e2, "sandbox %s: connect to port %u", id, (unsigned) port);
    }
  return ps.fd;
}

/* ---- the agent protocol, client side ---- */

/* Connect to the agent of a running sandbox. */
static int
agent_connect (struct sbx_engine *e, struct sandbox *s, struct sbx_err *err)
{
  pthread_mutex_lock (&e->lock);
  /* a doomed sandbox answers its ending hook only */
  enum sbx_state st = ending_self == s ? s->state : state_seen (s);
  pthread_mutex_unlock (&e->lock);
  if (st == SBX_PAUSED)
    return sbx_failk (err, SBX_E_PAUSED, "sandbox is paused");
  if (st != SBX_RUNNING)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
  cleanup_close int dfd = sandbox_dir (e, s);
  if (dfd < 0)
    return sbx_fail (err, errno, "connect to the agent of %s", s->id);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sbx_fail (err, errno, "socket");
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/agent.sock", dfd);
  /* an agent that stops reading cannot hold a sender forever either */
  struct timeval tv = { SBX_AGENT_FRAME_MS / 1000, 0 };
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0
      || setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
    {
      int e2 = errno;
      close (fd);
      return sbx_fail (err, e2, "connect to the agent of %s", s->id);
    }
  return fd;
}

/* Send REQ on a new connection and read the answer within bounds B (see
   agent.h); frames before it go to FN. */
static int
agent_call (struct sbx_engine *e, const char *id, const struct sbx_msg *req, const struct sbx_agent_bounds *b,
            sbx_agent_frame_fn fn, void *ud, struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int r = agent_call_on (e, s, req, b, fn, ud, err);
  put (e, s);
  return r;
}

/* Connect to S's agent and send REQ: the connection, or -1 with ERR. */
static int
agent_send (struct sbx_engine *e, struct sandbox *s, const struct sbx_msg *req, struct sbx_err *err)
{
  int fd = agent_connect (e, s, err);
  if (fd >= 0 && sbx_msg_send (fd, req) < 0)
    {
      sbx_fail (err, errno, "send to sandbox agent");
      close (fd);
      return -1;
    }
  return fd;
}

/* agent_call to S, referenced by the caller (or no one's but its yet) */
static int
agent_call_on (struct sbx_engine *e, struct sandbox *s, const struct sbx_msg *req, const struct sbx_agent_bounds *b,
               sbx_agent_frame_fn fn, void *ud, struct sbx_err *err)
{
  cleanup_close int fd = agent_send (e, s, req, err);
  if (fd < 0)
    return -1;
  return sbx_agent_answer (fd, s->id, b, fn, ud, err);
}

/* A request's own connection to a sandbox's agent, with the sandbox held
   until it closes: what a file reader, a file writer and a watcher keep. */
struct agent_conn {
  struct sbx_engine *e;
  struct sandbox *s;
  int fd;
};

/* Hold sandbox ID and send REQ to its agent: 0, or -1 with ERR and
   nothing held. */
static int
agent_conn_open (struct sbx_engine *e, const char *id, const struct sbx_msg *req, struct agent_conn *c,
                 struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  int fd = agent_send (e, s, req, err);
  if (fd < 0)
    {
      put (e, s);
      return -1;
    }
  *c = (struct agent_conn) { e, s, fd };
  return 0;
}

static void
agent_conn_close (struct agent_conn *c)
{
  close (c->fd);
  put (c->e, c->s);
}

/* A frame of a stream that has begun must be whole in SBX_AGENT_FRAME_MS. */
static uint64_t
frame_deadline (void)
{
  return sbx_now_ns () + (uint64_t) SBX_AGENT_FRAME_MS * 1000000ull;
}

static const char *
user_or_default (struct sbx_engine *e, const char *id, const char *user, char buf[32])
{
  if (user && *user)
    return user;
  pthread_mutex_lock (&e->lock);
  struct sandbox *s = find_locked (e, id);
  snprintf (buf, 32, "%s", s ? s->default_user : "root");
  pthread_mutex_unlock (&e->lock);
  return buf;
}

/* The process event frame M stands for, in *EV (its data points into M):
   1, or 0 for a frame that is none (skipped), or -1 with ERR when the
   agent reported an error.  *PID is the process's, once START gave it. */
static int
proc_event_of (const struct sbx_msg *m, uint32_t *pid, struct sbx_proc_event *ev, struct sbx_err *err)
{
  *ev = (struct sbx_proc_event) { .pid = *pid };
  const uint8_t *d;
  uint32_t l;
  switch (m->type)
    {
    case SBX_EV_ERROR:
      sbx_agent_error (m, err);
      return -1;
    case SBX_EV_START:
      *pid = ev->pid = sbx_msg_u32 (m, SBX_T_PID, 0);
      ev->kind = SBX_PROC_START;
      return 1;
    case SBX_EV_STDOUT:
    case SBX_EV_STDERR:
    case SBX_EV_PTY:
      ev->kind = m->type == SBX_EV_STDOUT ? SBX_PROC_STDOUT : m->type == SBX_EV_STDERR ? SBX_PROC_STDERR : SBX_PROC_PTY;
      if (!sbx_msg_get (m, SBX_T_DATA, &d, &l))
        return 0;
      ev->data = d;
      ev->len = l;
      return 1;
    case SBX_EV_END:
      ev->kind = SBX_PROC_END;
      ev->exit_code = (int) sbx_msg_u32 (m, SBX_T_EXIT, (uint32_t) -1);
      ev->signal = sbx_msg_termsig (m);
      if (ev->signal < 0)
        {
          /* not a signal: how it ended is unknown */
          ev->signal = 0;
          ev->exit_code = -1;
        }
      ev->timed_out = sbx_msg_u32 (m, SBX_T_TIMEDOUT, 0) != 0;
      return 1;
    default:
      return 0;
    }
}

/* Stream process events of an EXEC or ATTACH connection to FN. */
static int
stream_events (int fd, const char *id, uint32_t keepalive_ms, sbx_proc_fn fn, void *ud, struct sbx_err *err)
{
  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  int r = -1;
  uint32_t pid = 0;
  for (;;)
    {
      /* a process may be quiet for as long as it likes; a frame it began
         must be complete in time */
      struct pollfd pf = { fd, POLLIN, 0 };
      int pr = poll (&pf, 1, keepalive_ms ? (int) keepalive_ms : -1);
      if (pr < 0 && errno == EINTR)
        continue;
      if (pr == 0)
        {
          struct sbx_proc_event ka = { .kind = SBX_PROC_KEEPALIVE, .pid = pid };
          if (fn (&ka, ud) < 0)
            {
              r = 0;
              break;
            }
          continue;
        }
      if (sbx_agent_recv (fd, id, frame_deadline (), &m, err) < 0)
        break;
      struct sbx_proc_event ev;
      int k = proc_event_of (&m, &pid, &ev, err);
      if (k < 0)
        break;
      if (k == 0)
        continue;
      if (fn (&ev, ud) < 0 || ev.kind == SBX_PROC_END)
        {
          r = 0;
          break;
        }
    }
  sbx_msg_free (&m);
  return r;
}

/* The EXEC request of O. */
static void
exec_request (struct sbx_engine *e, const char *id, const struct sbx_exec_opts *o, struct sbx_msg *req)
{
  char ubuf[32];
  sbx_msg_init (req, SBX_REQ_EXEC);
  for (const char *const *a = o->argv; *a; a++)
    sbx_msg_put_str (req, SBX_T_ARG, *a);
  for (const char *const *v = o->env; v && *v; v++)
    sbx_msg_put_str (req, SBX_T_ENV, *v);
  const char *user = user_or_default (e, id, o->user, ubuf);
  uint32_t flags = o->timeout_command_only ? SBX_EXEC_F_TIMEOUT_COMMAND : 0;
  if (o->cwd && *o->cwd)
    sbx_msg_put_str (req, SBX_T_CWD, o->cwd);
  else
    {
      /* the template's workdir, for its default user (E2B: "the last set
         user and workdir in the template" are the sandbox's defaults);
         other users start in their home */
      char wd[256] = "";
      pthread_mutex_lock (&e->lock);
      struct sandbox *s = find_locked (e, id);
      if (s && strcmp (user, s->default_user) == 0)
        snprintf (wd, sizeof wd, "%s", s->workdir);
      pthread_mutex_unlock (&e->lock);
      if (wd[0] == '/' && wd[1] != '\0') /* "/", the spec format's default, means none */
        {
          sbx_msg_put_str (req, SBX_T_CWD, wd);
          flags |= SBX_EXEC_F_CWD_DEFAULT;
        }
    }
  sbx_msg_put_str (req, SBX_T_USER, user);
  if (o->tag)
    sbx_msg_put_str (req, SBX_T_TAG, o->tag);
  if (o->pty)
    {
      uint32_t rc[2] = { o->rows ? o->rows : 24, o->cols ? o->cols : 80 };
      sbx_msg_put (req, SBX_T_PTY, rc, sizeof rc);
    }
  if (o->stdin_open)
    sbx_msg_put_u32 (req, SBX_T_STDIN, 1);
  if (o->timeout_ms)
    sbx_msg_put_u32 (req, SBX_T_TIMEOUT, o->timeout_ms);
  if (flags)
    sbx_msg_put_u32 (req, SBX_T_FLAGS, flags);
}

int
sbx_exec (struct sbx_engine *e, const char *id, const struct sbx_exec_opts *o, sbx_proc_fn fn, void *ud,
          struct sbx_err *err)
{
  if (o->argv == NULL || o->argv[0] == NULL || *o->argv[0] == '\0')
    return sbx_failk (err, SBX_E_INVALID, "cmd is required");
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  struct sbx_msg req;
  exec_request (e, id, o, &req);
  cleanup_close int fd = agent_send (e, s, &req, err);
  sbx_msg_free (&req);
  int r = fd < 0 ? -1 : stream_events (fd, s->id, o->keepalive_ms, fn, ud, err);
  put (e, s);
  return r;
}

struct sbx_proc_stream {
  struct sbx_engine *e;
  struct sandbox *s;  /* a reference, for the stream's life */
  int fd;
  uint32_t pid;
  bool ended;
  struct sbx_msg m;   /* the last frame read: what the last event points into */
};

int
sbx_exec_stream (struct sbx_engine *e, const char *id, const struct sbx_exec_opts *o, struct sbx_proc_stream **out,
                 struct sbx_err *err)
{
  *out = NULL;
  if (o->argv == NULL || o->argv[0] == NULL || *o->argv[0] == '\0')
    return sbx_failk (err, SBX_E_INVALID, "cmd is required");
  struct sbx_proc_stream *ps = calloc (1, sizeof *ps);
  if (ps == NULL)
    return sbx_fail (err, ENOMEM, "process stream");
  ps->e = e;
  ps->fd = -1;
  sbx_msg_init (&ps->m, 0);
  if ((ps->s = get (e, id, err)) == NULL)
    {
      free (ps);
      return -1;
    }
  struct sbx_msg req;
  exec_request (e, id, o, &req);
  ps->fd = agent_send (e, ps->s, &req, err);
  sbx_msg_free (&req);
  if (ps->fd < 0)
    {
      sbx_proc_stream_close (ps);
      return -1;
    }
  *out = ps;
  return 0;
}

int
sbx_proc_stream_fd (const struct sbx_proc_stream *ps)
{
  return ps->fd;
}

int
sbx_proc_stream_next (struct sbx_proc_stream *ps, struct sbx_proc_event *ev, struct sbx_err *err)
{
  if (ps->ended)
    return 0;
  for (;;)
    {
      if (sbx_agent_recv (ps->fd, ps->s->id, frame_deadline (), &ps->m, err) < 0)
        return -1;
      int k = proc_event_of (&ps->m, &ps->pid, ev, err);
      if (k < 0)
        return -1;
      if (k == 0)
        {
          /* a frame that is no event: wait for another only if one is there */
          struct pollfd pf = { ps->fd, POLLIN, 0 };
          if (poll (&pf, 1, 0) == 1)
            continue;
          *ev = (struct sbx_proc_event) { .kind = SBX_PROC_KEEPALIVE, .pid = ps->pid };
          return 1;
        }
      ps->ended = ev->kind == SBX_PROC_END;
      return 1;
    }
}

void
sbx_proc_stream_close (struct sbx_proc_stream *ps)
{
  if (ps == NULL)
    return;
  if (ps->fd >= 0)
    close (ps->fd);
  sbx_msg_free (&ps->m);
  put (ps->e, ps->s);
  free (ps);
}

int
sbx_attach (struct sbx_engine *e, const char *id, uint32_t pid, uint32_t keepalive_ms, sbx_proc_fn fn, void *ud,
            struct sbx_err *err)
{
  struct sandbox *s = get (e, id, err);
  if (s == NULL)
    return -1;
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_ATTACH);
  sbx_msg_put_u32 (&req, SBX_T_PID, pid);
  cleanup_close int fd = agent_send (e, s, &req, err);
  sbx_msg_free (&req);
  int r = fd < 0 ? -1 : stream_events (fd, s->id, keepalive_ms, fn, ud, err);
  put (e, s);
  return r;
}

static int
simple_proc_call (struct sbx_engine *e, const char *id, struct sbx_msg *req, struct sbx_err *err)
{
  int r = agent_call (e, id, req, &sbx_agent_plain, NULL, NULL, err);
  sbx_msg_free (req);
  return r;
}

int
sbx_proc_input (struct sbx_engine *e, const char *id, uint32_t pid, const void *data, size_t len, struct sbx_err *err)
{
  /* in pieces well under a frame, so that any length goes through */
  const uint8_t *p = data;
  size_t off = 0;
  do
    {
      size_t n = len - off < SBX_PROC_INPUT_CHUNK ? len - off : SBX_PROC_INPUT_CHUNK;
      struct sbx_msg req;
      sbx_msg_init (&req, SBX_REQ_INPUT);
      sbx_msg_put_u32 (&req, SBX_T_PID, pid);
      sbx_msg_put (&req, SBX_T_DATA, p + off, n);
      if (simple_proc_call (e, id, &req, err) < 0)
        return -1;
      off += n;
    }
  while (off < len);
  return 0;
}

int
sbx_proc_close_stdin (struct sbx_engine *e, const char *id, uint32_t pid, struct sbx_err *err)
{
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_CLOSE_STDIN);
  sbx_msg_put_u32 (&req, SBX_T_PID, pid);
  return simple_proc_call (e, id, &req, err);
}

int
sbx_proc_signal (struct sbx_engine *e, const char *id, uint32_t pid, int sig, struct sbx_err *err)
{
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_SIGNAL);
  sbx_msg_put_u32 (&req, SBX_T_PID, pid);
  sbx_msg_put_u32 (&req, SBX_T_SIGNAL, (uint32_t) sig);
  return simple_proc_call (e, id, &req, err);
}

int
sbx_proc_kill_tree (struct sbx_engine *e, const char *id, uint32_t pid, struct sbx_err *err)
{
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_SIGNAL);
  sbx_msg_put_u32 (&req, SBX_T_PID, pid);
  sbx_msg_put_u32 (&req, SBX_T_SIGNAL, SIGKILL);
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, SBX_SIGNAL_F_TREE);
  return simple_proc_call (e, id, &req, err);
}

int
sbx_proc_resize (struct sbx_engine *e, const char *id, uint32_t pid, uint32_t rows, uint32_t cols, struct sbx_err *err)
{
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_RESIZE);
  sbx_msg_put_u32 (&req, SBX_T_PID, pid);
  sbx_msg_put_u32 (&req, SBX_T_ROWS, rows);
  sbx_msg_put_u32 (&req, SBX_T_COLS, cols);
  return simple_proc_call (e, id, &req, err);
}

int
sbx_proc_list (struct sbx_engine *e, const char *id, struct sbx_proc_info **procs, size_t *n, struct sbx_err *err)
{
  struct sbx_msg req;
  sbx_msg_init (&req, SBX_REQ_LIST);
  struct sbx_agent_procs a = { 0 };
  int r = agent_call (e, id, &req, &sbx_agent_listing, sbx_agent_collect_proc, &a, err);
  sbx_msg_free (&req);
  if (r < 0)
    {
      sbx_proc_list_free (a.v, a.n);
      return -1;
    }
  *procs = a.v;
  *n = a.n;
  return 0;
}

/* ---- files ---- */

static void
file_req (struct sbx_engine *e, const char *id, struct sbx_msg *req, uint32_t op, const char *path, const char *user)
{
  char ubuf[32];
  sbx_msg_init (req, SBX_REQ_FILE);
  sbx_msg_put_u32 (req, SBX_T_OP, op);
  sbx_msg_put_str (req, SBX_T_PATH, path ? path : "");
  sbx_msg_put_str (req, SBX_T_USER, user_or_default (e, id, user, ubuf));
}

static int
entry_call (struct sbx_engine *e, const char *id, struct sbx_msg *req, struct sbx_entry *out, struct sbx_err *err)
{
  struct sbx_agent_one one = { 0 };
  int r = agent_call (e, id, req, &sbx_agent_plain, sbx_agent_one_entry, &one, err);
  sbx_msg_free (req);
  if (r == 0 && out)
    *out = one.en;
  else
    sbx_entry_free (&one.en);
  return r;
}

int
sbx_file_stat (struct sbx_engine *e, const char *id, const char *path, const char *user, struct sbx_entry *out,
               struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_STAT, path, user);
  return entry_call (e, id, &req, out, err);
}

int
sbx_file_mkdir (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
                struct sbx_entry *out, struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_MKDIR, path, user);
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, flags);
  return entry_call (e, id, &req, out, err);
}

int
sbx_file_move (struct sbx_engine *e, const char *id, const char *from, const char *to, const char *user,
               struct sbx_entry *out, struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_MOVE, from, user);
  sbx_msg_put_str (&req, SBX_T_PATH2, to ? to : "");
  return entry_call (e, id, &req, out, err);
}

int
sbx_file_remove (struct sbx_engine *e, const char *id, const char *path, const char *user, struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_REMOVE, path, user);
  return entry_call (e, id, &req, NULL, err);
}

int
sbx_file_list (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t depth,
               struct sbx_entry **out, size_t *n, struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_LIST, path, user);
  sbx_msg_put_u32 (&req, SBX_T_DEPTH, depth ? depth : 1);
  struct sbx_agent_entries a = { 0 };
  int r = agent_call (e, id, &req, &sbx_agent_listing, sbx_agent_collect_entry, &a, err);
  sbx_msg_free (&req);
  if (r < 0)
    {
      sbx_entries_free (a.v, a.n);
      return -1;
    }
  *out = a.v;
  *n = a.n;
  return 0;
}

struct sbx_file_reader {
  struct agent_conn c;
  uint64_t max;
};

int
sbx_file_reader_open (struct sbx_engine *e, const char *id, const char *path, const char *user, uint64_t max_size,
                      struct sbx_entry *st, struct sbx_file_reader **out, struct sbx_err *err)
{
  memset (st, 0, sizeof *st);
  struct sbx_file_reader *rd = calloc (1, sizeof *rd);
  if (rd == NULL)
    return sbx_fail (err, ENOMEM, "read %s", path);
  rd->max = max_size;
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_READ, path, user);
  int r = agent_conn_open (e, id, &req, &rd->c, err);
  sbx_msg_free (&req);
  if (r < 0)
    {
      free (rd);
      return -1;
    }
  if (sbx_agent_read_begin (rd->c.fd, rd->c.s->id, max_size, st, err) < 0)
    {
      sbx_file_reader_close (rd);
      return -1;
    }
  *out = rd;
  return 0;
}

int
sbx_file_reader_stream (struct sbx_file_reader *rd, sbx_data_fn fn, void *ud, struct sbx_err *err)
{
  int r = sbx_agent_read_data (rd->c.fd, rd->c.s->id, rd->max, fn, ud, err);
  sbx_file_reader_close (rd);
  return r;
}

void
sbx_file_reader_close (struct sbx_file_reader *rd)
{
  agent_conn_close (&rd->c);
  free (rd);
}

int
sbx_file_read (struct sbx_engine *e, const char *id, const char *path, const char *user, uint64_t max_size,
               struct sbx_entry *st, sbx_data_fn fn, void *ud, struct sbx_err *err)
{
  struct sbx_entry tmp;
  struct sbx_file_reader *rd;
  if (sbx_file_reader_open (e, id, path, user, max_size, &tmp, &rd, err) < 0)
    return -1;
  int r = sbx_file_reader_stream (rd, fn, ud, err);
  /* the caller owns the entry only when the read succeeded */
  if (r == 0 && st)
    *st = tmp;
  else
    {
      sbx_entry_free (&tmp);
      if (st)
        memset (st, 0, sizeof *st);
    }
  return r;
}

struct sbx_file_writer {
  struct agent_conn c;
};

static void owner_put (struct sbx_msg *req, const struct sbx_file_owner *o);

/* A WRITE of PATH as USER with FLAGS, and MODE or OWNER (NULL: none). */
static int
writer_open (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
             uint32_t mode, const struct sbx_file_owner *owner, const struct sbx_meta *meta, size_t n_meta,
             struct sbx_file_writer **out, struct sbx_err *err)
{
  if (n_meta > SBX_META_MAX)
    return sbx_failk (err, SBX_E_INVALID, "at most %u metadata entries", SBX_META_MAX);
  for (size_t i = 0; i < n_meta; i++)
    {
      size_t kl = strlen (meta[i].key), vl = strlen (meta[i].value);
      if (kl == 0 || kl > SBX_META_KEY_MAX || vl > SBX_META_VALUE_MAX)
        return sbx_failk (err, SBX_E_INVALID,
                          "metadata keys are 1 to %u bytes and values at most %u bytes (key %.64s)",
                          SBX_META_KEY_MAX, SBX_META_VALUE_MAX, meta[i].key);
    }
  struct sbx_file_writer *w = calloc (1, sizeof *w);
  if (w == NULL)
    return sbx_fail (err, ENOMEM, "write %s", path);
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_WRITE, path, user);
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, flags);
  if (owner)
    owner_put (&req, owner);
  else if (mode)
    sbx_msg_put_u32 (&req, SBX_T_MODE, mode);
  for (size_t i = 0; i < n_meta; i++)
    {
      char field[SBX_META_KEY_MAX + 1 + SBX_META_VALUE_MAX];
      size_t kl = strlen (meta[i].key), vl = strlen (meta[i].value);
      memcpy (field, meta[i].key, kl + 1);
      memcpy (field + kl + 1, meta[i].value, vl);
      sbx_msg_put (&req, SBX_T_META, field, kl + 1 + vl);
    }
  int r = agent_conn_open (e, id, &req, &w->c, err);
  sbx_msg_free (&req);
  if (r < 0)
    {
      free (w);
      return -1;
    }
  *out = w;
  return 0;
}

int
sbx_file_writer_open (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
                      uint32_t mode, struct sbx_file_writer **out, struct sbx_err *err)
{
  return writer_open (e, id, path, user, flags, mode, NULL, NULL, 0, out, err);
}

int
sbx_file_writer_open_meta (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
                           const struct sbx_meta *meta, size_t n, struct sbx_file_writer **out, struct sbx_err *err)
{
  return writer_open (e, id, path, user, flags, 0, NULL, meta, n, out, err);
}

static void
owner_put (struct sbx_msg *req, const struct sbx_file_owner *o)
{
  sbx_msg_put_u32 (req, SBX_T_UID, o->uid);
  sbx_msg_put_u32 (req, SBX_T_GID, o->gid);
  sbx_msg_put_u32 (req, SBX_T_MODE, o->mode & 07777);
}

int
sbx_file_writer_open_owned (struct sbx_engine *e, const char *id, const char *path, const struct sbx_file_owner *owner,
                            struct sbx_file_writer **out, struct sbx_err *err)
{
  return writer_open (e, id, path, "root", SBX_FILE_F_PARENTS | SBX_FILE_F_OWNER, 0, owner, NULL, 0, out, err);
}

int
sbx_file_mkdir_owned (struct sbx_engine *e, const char *id, const char *path, const struct sbx_file_owner *owner,
                      struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_MKDIR, path, "root");
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, SBX_FILE_F_PARENTS | SBX_FILE_F_EXIST_OK | SBX_FILE_F_OWNER);
  owner_put (&req, owner);
  return entry_call (e, id, &req, NULL, err);
}

int
sbx_file_symlink (struct sbx_engine *e, const char *id, const char *path, const char *target,
                  const struct sbx_file_owner *owner, struct sbx_err *err)
{
  struct sbx_msg req;
  file_req (e, id, &req, SBX_FILE_SYMLINK, path, "root");
  sbx_msg_put_str (&req, SBX_T_PATH2, target ? target : "");
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, SBX_FILE_F_PARENTS | SBX_FILE_F_OWNER);
  owner_put (&req, owner);
  return entry_call (e, id, &req, NULL, err);
}

/* When the agent refused the write early, its error frame is waiting. */
static int
writer_error (struct sbx_file_writer *w, struct sbx_err *err)
{
  int saved = errno;
  struct pollfd pf = { w->c.fd, POLLIN, 0 };
  if (poll (&pf, 1, 0) == 1)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, 0);
      struct sbx_err rerr;
      if (sbx_agent_recv (w->c.fd, w->c.s->id, frame_deadline (), &m, &rerr) == 0 && m.type == SBX_EV_ERROR)
        {
          sbx_agent_error (&m, err);
          sbx_msg_free (&m);
          return -1;
        }
      sbx_msg_free (&m);
    }
  if (saved == EAGAIN || saved == EWOULDBLOCK)
    return sbx_failk (err, SBX_E_INTERNAL, "sandbox agent stopped reading the file");
  return sbx_fail (err, saved ? saved : EPIPE, "write to sandbox agent");
}

int
sbx_file_writer_push (struct sbx_file_writer *w, const void *data, size_t len, struct sbx_err *err)
{
  const uint8_t *p = data;
  while (len > 0)
    {
      size_t n = len < SBX_PROTO_CHUNK ? len : SBX_PROTO_CHUNK;
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_REQ_DATA);
      sbx_msg_put (&m, SBX_T_DATA, p, n);
      int r = sbx_msg_send (w->c.fd, &m);
      sbx_msg_free (&m);
      if (r < 0)
        return writer_error (w, err);
      p += n;
      len -= n;
    }
  return 0;
}

static void
writer_close (struct sbx_file_writer *w)
{
  agent_conn_close (&w->c);
  free (w);
}

int
sbx_file_writer_finish (struct sbx_file_writer *w, struct sbx_entry *out, struct sbx_err *err)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_REQ_EOF);
  int r = sbx_msg_send (w->c.fd, &m);
  sbx_msg_free (&m);
  if (r < 0)
    {
      r = writer_error (w, err);
      writer_close (w);
      return r;
    }
  struct sbx_agent_one one = { 0 };
  r = sbx_agent_answer (w->c.fd, w->c.s->id, &sbx_agent_plain, sbx_agent_one_entry, &one, err);
  if (r == 0 && out)
    *out = one.en;
  else
    sbx_entry_free (&one.en);
  writer_close (w);
  return r;
}

void
sbx_file_writer_abort (struct sbx_file_writer *w)
{
  /* closing without EOF makes the agent drop the temporary file */
  writer_close (w);
}

int
sbx_file_write (struct sbx_engine *e, const char *id, const char *path, const char *user, const void *data,
                size_t len, struct sbx_entry *out, struct sbx_err *err)
{
  struct sbx_file_writer *w;
  if (sbx_file_writer_open (e, id, path, user, SBX_FILE_F_PARENTS, 0, &w, err) < 0)
    return -1;
  if (sbx_file_writer_push (w, data, len, err) < 0)
    {
      sbx_file_writer_abort (w);
      return -1;
    }
  return sbx_file_writer_finish (w, out, err);
}

struct sbx_watcher {
  struct agent_conn c;
};

void
sbx_watch_close (struct sbx_watcher *w)
{
  if (w == NULL)
    return;
  agent_conn_close (&w->c);
  free (w);
}

int
sbx_watch_open (struct sbx_engine *e, const char *id, const char *path, const char *user, bool recursive,
                struct sbx_watcher **out, struct sbx_err *err)
{
  struct sbx_watcher *w = calloc (1, sizeof *w);
  if (w == NULL)
    return sbx_fail (err, ENOMEM, "watch %s", path);
  struct sbx_msg req;
  file_req (e, id, &req, 0, path, user);
  req.type = SBX_REQ_WATCH;
  sbx_msg_put_u32 (&req, SBX_T_FLAGS, recursive ? SBX_FILE_F_RECURSIVE : 0);
  int r = agent_conn_open (e, id, &req, &w->c, err);
  sbx_msg_free (&req);
  if (r < 0)
    {
      free (w);
      return -1;
    }
  /* the first answer says whether the watch is in place */
  if (sbx_agent_answer (w->c.fd, w->c.s->id, &sbx_agent_plain, NULL, NULL, err) < 0)
    {
      sbx_watch_close (w);
      return -1;
    }
  *out = w;
  return 0;
}

int
sbx_watch_run (struct sbx_watcher *w, uint32_t keepalive_ms, sbx_watch_fn fn, void *ud, struct sbx_err *err)
{
  int r = -1;
  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  for (;;)
    {
      struct pollfd pf = { w->c.fd, POLLIN, 0 };
      int pr = poll (&pf, 1, keepalive_ms ? (int) keepalive_ms : -1);
      if (pr < 0 && errno == EINTR)
        continue;
      if (pr == 0)
        {
          if (fn (0, "", ud) < 0)
            {
              r = 0;
              break;
            }
          continue;
        }
      if (sbx_agent_recv (w->c.fd, w->c.s->id, frame_deadline (), &m, err) < 0)
        break;
      if (m.type != SBX_EV_FSEVENT)
        continue;
      int type;
      cleanup_free char *name = NULL;
      if (sbx_agent_fs_event (&m, w->c.s->id, &type, &name, err) < 0)
        break;
      if (fn (type, name, ud) < 0)
        {
          r = 0;
          break;
        }
    }
  sbx_msg_free (&m);
  sbx_watch_close (w);
  return r;
}
