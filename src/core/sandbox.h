/*
 * sandbox.h - the sandbox core of sbxd: create, control and destroy
 * isolated Linux sandboxes, run processes in them and move files in and
 * out.  The daemon's HTTP layers only call this interface; nothing here
 * knows about HTTP.
 *
 * An engine owns one state directory.  Each sandbox lives in
 * STATE/sandboxes/ID/ (its record, its disk image and the socket of its
 * init agent); the engine re-attaches to every live sandbox found there
 * when it opens, so the daemon can stop or crash without losing any.
 *
 * Every function is thread safe.  Functions that name a sandbox fail with
 * err->kind SBX_E_NOT_FOUND when there is no such sandbox, SBX_E_PAUSED
 * when the sandbox is paused and the operation needs it running, and
 * SBX_E_STOPPED when it has stopped.  The engine keeps no bookkeeping of
 * its callers (owners, metadata, quotas): that is the service layer's.
 */
#ifndef SBX_SANDBOX_H
#define SBX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/error.h"
#include "../common/proto.h"
#include "fspolicy.h"
#include "net.h"

struct sbx_net_config;

#define SBX_ID_MAX 40

enum sbx_state { SBX_CREATING, SBX_RUNNING, SBX_PAUSED, SBX_STOPPED, SBX_ERROR };

const char *sbx_state_name (enum sbx_state s);

/* KILLED: the sandbox is gone for its callers (a destroy answered, its
   timeout, its death); RELEASED follows it once the teardown is done and
   what the sandbox held (processes, memory, disk, id range) is free: it
   changes nothing a client sees. */
enum sbx_event_kind { SBX_EVENT_CREATED, SBX_EVENT_UPDATED, SBX_EVENT_PAUSED, SBX_EVENT_RESUMED, SBX_EVENT_KILLED,
                      SBX_EVENT_RELEASED };

struct sbx_engine;

/* Called (from any thread, no engine lock held) when a sandbox changes;
   REASON is e.g. "request", "timeout" or "died". */
typedef void (*sbx_event_fn) (void *ud, struct sbx_engine *e, const char *id, enum sbx_event_kind kind,
                              const char *reason);

/* Called when a running or paused sandbox is about to be torn down (a
   destroy, its timeout), before its disk goes: the last moment its files
   can be read (sbx_file_list, sbx_file_read).  A paused sandbox is thawed
   for it first.  Not called for a sandbox that died (its files went with
   it).  It runs after the destroy was answered (sbx_destroy), on a thread
   of its own; the teardown worker waits for it at most SBX_ENDING_MS, then
   goes on, which ends the agent calls it still makes
   (they fail) and waits for it to return. */
typedef void (*sbx_ending_fn) (void *ud, struct sbx_engine *e, const char *id, const char *reason);
#define SBX_ENDING_MS 30000u

struct sbx_engine_config {
  const char *state_dir;    /* required */
  const char *template_dir; /* NULL: sbx_template_dir () */
  const char *init_path;    /* the sbx-init binary; NULL: next to the running program */
  sbx_event_fn on_event;
  void *event_ud;
  sbx_ending_fn on_ending;  /* may be NULL; its UD is event_ud */
  uint32_t max_timeout_s;   /* 0: 3600 */
  int spares;               /* sandboxes prepared ahead of requests, at least (the pool's
                               size when idle); 0: SBX_SPARES_DEFAULT, <0: none */
  int spares_max;           /* the pool grows with demand up to this many; 0:
                               SBX_SPARES_MAX_DEFAULT (at most SBX_SPARES_MAX_CAP;
                               none at all when spares < 0) */
  const struct sbx_net_config *net; /* NULL: sandboxes get loopback only (netlink.h) */
  /* Disk admission (sbx_create): a create is admitted only while every
     live sandbox's disk can still grow to its full size in the state file
     system's free space, less a reserve kept for the store, logs and
     templates; one that does not fit fails with SBX_E_NO_SPACE. */
  bool disk_reserve_set;    /* false: SBX_DISK_RESERVE_MIN_MB or SBX_DISK_RESERVE_PCT, whichever is more */
  uint64_t disk_reserve_mb;
  double disk_overcommit;   /* promises may reach this many times the room; 0: 1 (never more than the room) */
  unsigned sandboxes_cpu_weight; /* the CPU weight of the cgroup that holds every sandbox, against the
                                    host's processes (the daemon's own threads among them); 0:
                                    SBX_SANDBOXES_CPU_WEIGHT */
};

/* The pool's idle size: a burst of 100 creates finds a spare for each.
   Beyond the pool a create prepares its sandbox inline, about 6.5 ms of
   CPU alone and much more side by side (the kernel's locks for loop
   devices, namespaces and links): on two cores a first burst of 100
   that found 4 to 54 spares took 0.42 to 1.3 s, one that found 120 to
   150 0.10 to 0.15 s.  Each idle spare holds about 1 MiB of the host's
   memory (100 MiB for the pool), a disk (sparse), a loop device and a
   veth; the pool fills in about half a second after the start. */
#define SBX_SPARES_DEFAULT 100
/* cpu.weight units (100: a nice-0 process's share; v1's cpu.shares 1024):
   on a busy host all the sandboxes together weigh an eighth of one
   daemon thread, so that the daemon answering a well-behaved tenant is not
   queued behind other tenants' floods (measured under the hostile load
   on two cores: create p50 0.75x to 3.7x its quiet value, median 1.5x
   in eleven runs; 7.7x to 11.6x at 100).
   The weight only matters while the CPUs are all busy. */
#define SBX_SANDBOXES_CPU_WEIGHT 12
#define SBX_SPARES_MAX_DEFAULT 256
#define SBX_SPARES_MAX_CAP 4096
#define SBX_DEFAULT_DISK_MB 10240 /* seed 000: 10 GB */
#define SBX_DISK_RESERVE_MIN_MB 1024 /* the default reserve: at least 1 GiB, */
#define SBX_DISK_RESERVE_PCT 5       /* or 5% of the state file system if that is more */

struct sbx_engine;

int sbx_engine_open (const struct sbx_engine_config *cfg, struct sbx_engine **out, struct sbx_err *err);
/* Stops the engine's threads; sandboxes keep running. */
void sbx_engine_close (struct sbx_engine *e);

/* A consistent reading of the engine's counters, for the operator's
   metrics.  Counters only grow while the engine is open. */
struct sbx_engine_stats {
  unsigned live;             /* sandboxes neither stopped nor destroyed */
  unsigned spares;           /* spares ready now */
  unsigned spares_target;    /* how many the pool aims to keep */
  unsigned spares_booted;    /* of the spares, those booted ahead for a template */
  uint64_t spare_hits;       /* creates that took a ready spare */
  uint64_t spare_booted_hits; /* of them, those that took one booted ahead for their template */
  uint64_t spare_misses;     /* creates that prepared their sandbox inline */
  unsigned teardowns_pending; /* sandboxes answered as gone, still being torn down */
};
void sbx_engine_stats (struct sbx_engine *e, struct sbx_engine_stats *out);

struct sbx_limits {
  uint32_t cpu_millis;  /* 1000 per vCPU */
  uint32_t memory_mb;
  uint32_t disk_mb;
  uint32_t pids_max;
  uint32_t nofile;      /* RLIMIT_NOFILE of every process */
};

/* What the end of a sandbox's lifetime does (sbx_create_opts.on_timeout). */
enum sbx_on_timeout {
  SBX_ON_TIMEOUT_KILL,        /* destroy it (the default) */
  SBX_ON_TIMEOUT_PAUSE,       /* pause it (sbx_pause) */
  SBX_ON_TIMEOUT_PAUSE_FILES, /* pause it without its processes (sbx_pause_files) */
};

struct sbx_create_opts {
  const char *template_name;  /* NULL with SNAPSHOT_DIR: the snapshot's */
  uint32_t timeout_s;         /* 0: 300 */
  const char *const *env;     /* NULL-terminated "KEY=VALUE", may be NULL */
  struct sbx_limits limits;   /* 0 fields take the template's defaults */
  const struct sbx_net_policy *net; /* NULL: the template's default (net.h) */
  int internet_asked;         /* whether the client asked for internet access, shown back as it said it:
                                 0 not said, >0 yes, <0 no */
  /* filesystem policy (fspolicy.h: enum sbx_fs_access, struct sbx_fs_rule,
     SBX_FS_RULES_MAX, sbx_fs_rules_check): paths made read-only, writable
     or blocked for everyone inside, root included, before anything of
     the sandbox runs; checked by sbx_create (EINVAL) */
  const struct sbx_fs_rule *fs_rules;
  size_t n_fs_rules;
  unsigned cpu_weight;        /* its CPU share from the start (as sbx_set_cpu_weight); 0: the kernel's default */
  const char *id;             /* the id to give it, from sbx_new_id (for a caller that must name it before it
                                 exists); NULL: a new one.  Such a create takes no spare (about 20 ms more). */
  bool keep_upper;            /* keep its disk for sbx_upper_open (template builds); not across a restart */
  enum sbx_on_timeout on_timeout;
  bool auto_resume;           /* kept and shown back (sbx_info); the caller decides what resumes it */
  /* start from the files of a snapshot (sbx_snapshot_take): its template
     (TEMPLATE_NAME, if given, must be the same) and environment (ENV adds
     to it and overrides it) */
  const char *snapshot_dir;
  /* volumes (disk.h: sbx_disk_volume_format) mounted read-write at their
     paths (absolute, normalised, at most SBX_FS_MOUNTS_MAX, none below
     another: sbx_fs_mount_paths_check), idmapped so that ids on a volume
     are the sandbox's own; not with FS_RULES */
  const char *const *volume_images;
  const char *const *volume_paths;
  size_t n_volumes;
};

/* A new sandbox id ("sbx" and 20 of [0-9a-z]: a valid host name label,
   since a sandbox's ports are reached at PORT-ID.DOMAIN) for
   sbx_create_opts.id. */
void sbx_new_id (char id[SBX_ID_MAX]);
/* Whether ID has the form of a sandbox id: sbx_new_id's, or "sbx_" and
   [0-9a-z] as ids were made before they became host names (their
   sandboxes are re-attached after an upgrade).  Only such ids are ever
   used in paths. */
bool sbx_id_wellformed (const char *id);
/* Whether template NAME can be used now: SBX_E_INVALID when there is no
   such template, SBX_E_UNAVAILABLE while it is being built. */
int sbx_template_check (struct sbx_engine *e, const char *name, struct sbx_err *err);
/* The name of the template NAME (a name or an alias) into OUT. */
int sbx_template_name (struct sbx_engine *e, const char *name, char out[64], struct sbx_err *err);

struct sbx_info {
  char id[SBX_ID_MAX];
  char template_name[64];
  enum sbx_state state;
  int64_t created_ms, end_ms; /* wall clock, ms since the epoch */
  struct sbx_limits limits;
  char *reason;               /* why it stopped, when it has; owned: free with sbx_info_free */
  uint32_t timeout_s;         /* the lifetime last asked for */
  bool has_network;           /* false: loopback only */
  struct sbx_net_policy network; /* its egress policy (owned) when has_network */
  char net_address[16], net_gateway[16]; /* its link, "" once stopped */
  int internet_asked;         /* as in sbx_create_opts, as last set */
  enum sbx_on_timeout on_timeout;
  bool auto_resume;
  bool memory_dropped;        /* paused by sbx_pause_files: nothing but its init is left */
};

void sbx_info_free (struct sbx_info *info);

/* Create and boot a sandbox.  Its disk (limits.disk_mb) is a promise the
   engine keeps: it fails with SBX_E_NO_SPACE, before touching anything,
   when the state file system could not hold that disk filled up together
   with what the live sandboxes' disks may still take (see
   sbx_engine_config). */
int sbx_create (struct sbx_engine *e, const struct sbx_create_opts *o, char id[SBX_ID_MAX], struct sbx_err *err);
/* Destroy: the sandbox is stopped for every caller when this returns
   (sbx_get_info says stopped, its agent answers no one, the killed event
   has been sent), and its teardown (the ending hook, its processes,
   cgroups, disk, id range, network) is journaled in its directory and
   queued for a small pool of workers: it takes well under a millisecond.
   Until the teardown is done the sandbox still counts for disk admission
   and holds its id range; SBX_EVENT_RELEASED says when it is done.  A
   daemon that stops with teardowns queued finishes them when the engine
   opens again. */
int sbx_destroy (struct sbx_engine *e, const char *id, struct sbx_err *err);
/* sbx_destroy saying why: REASON (e.g. "quota") becomes the sandbox's
   stop reason and its killed event's; sbx_destroy's is "request". */
int sbx_destroy_for (struct sbx_engine *e, const char *id, const char *reason, struct sbx_err *err);
/* Wait, at most TIMEOUT_MS, until the teardown of destroyed sandbox ID is
   done (its ending hook has returned, its resources are released): 0, at
   once when none is pending; SBX_E_UNAVAILABLE past the time. */
int sbx_teardown_wait (struct sbx_engine *e, const char *id, uint32_t timeout_ms, struct sbx_err *err);
int sbx_set_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, struct sbx_err *err);
/* Replace the egress policy of a running or paused sandbox; takes effect
   at once.  INTERNET_ASKED as in sbx_create_opts. */
int sbx_set_network (struct sbx_engine *e, const char *id, const struct sbx_net_policy *policy, int internet_asked,
                     struct sbx_err *err);
/* sbx_set_timeout that never brings the end closer: the end becomes
   now + TIMEOUT_S only when that is later than it was. */
int sbx_extend_timeout (struct sbx_engine *e, const char *id, uint32_t timeout_s, struct sbx_err *err);
int sbx_pause (struct sbx_engine *e, const char *id, struct sbx_err *err);
/* Pause without memory: every process of the sandbox but its init is
   killed, and its files stay.  The next sbx_resume starts it with nothing
   running, as a fresh boot from those files would (same disk, network,
   id and machine id).  A running or paused (with memory) sandbox can be
   paused so; SBX_E_PAUSED when it already is. */
int sbx_pause_files (struct sbx_engine *e, const char *id, struct sbx_err *err);
int sbx_resume (struct sbx_engine *e, const char *id, struct sbx_err *err);
/* A descriptor of the overlay upper directory of sandbox ID, created with
   keep_upper (close it), and the uid its root's files have there: 0, since
   every layer is idmapped and the disk stores the sandbox's own ids (files
   there are owned by ID_BASE + their uid inside).  Freeze the sandbox
   (sbx_pause) while reading it. */
int sbx_upper_open (struct sbx_engine *e, const char *id, int *fd, uint32_t *id_base, struct sbx_err *err);

/* ---- snapshots: a sandbox's files, for new sandboxes ----

   A snapshot is a directory the caller names, holding disk images
   (layer-N.img, read-only from then on) and snapshot.json (the template,
   the environment and the limits).  Layer 0 is a copy of the sandbox's
   own disk, taken while the sandbox is frozen (then thawed if it was
   running): sparse, reflinked where the file system can, else only its
   allocated blocks copied, so its cost is what the sandbox wrote, never
   the template's size.  The layers the sandbox itself started from are
   hard links, not copies.  A sandbox created from it (sbx_create_opts.
   snapshot_dir) hard-links the layers into its own directory and mounts
   them read-only below a fresh disk of its own: any number of sandboxes
   share them, and removing the snapshot's directory frees their blocks
   once the last such sandbox ends.  Memory is not part of it.  The
   sandbox must have been created by this version (SBX_E_CONFLICT
   otherwise); at most SBX_SNAPSHOT_LAYERS layers (SBX_E_LIMIT); the
   copy must fit the state file system's free room (SBX_E_NO_SPACE). */
#define SBX_SNAPSHOT_LAYERS 16
int sbx_snapshot_take (struct sbx_engine *e, const char *id, const char *dir, uint64_t *bytes, struct sbx_err *err);
/* The template a snapshot directory starts from (into NAME). */
int sbx_snapshot_template (const char *dir, char name[64], struct sbx_err *err);
int sbx_get_info (struct sbx_engine *e, const char *id, struct sbx_info *info, struct sbx_err *err);
/* ID's share of the CPU against the other sandboxes when they all want
   it (cgroup cpu.weight units, 1..10000; a new sandbox has 100). */
int sbx_set_cpu_weight (struct sbx_engine *e, const char *id, unsigned weight, struct sbx_err *err);

/* What a create gives a sandbox that can also be given to one already
   running: for a sandbox created ahead of its request (a caller's pool of
   started sandboxes) when the request comes. */
struct sbx_claim_opts {
  uint32_t timeout_s;             /* 0: 300; its lifetime starts now */
  const char *const *env;         /* NULL-terminated "KEY=VALUE" added to its base environment, may be NULL */
  uint32_t cpu_millis, memory_mb; /* 0: keep its own */
  const struct sbx_net_policy *net; /* NULL: keep its own */
  int internet_asked;             /* as in sbx_create_opts */
  unsigned cpu_weight;            /* as in sbx_create_opts; 0: keep */
  enum sbx_on_timeout on_timeout;
  bool auto_resume;
};
/* Give running sandbox ID what O says, as if it had been created with it
   now: its created time and end become now and now + the timeout.  The
   variables of ENV are set in the environment of every later command
   (and kept by sbx_snapshot_take); processes already running keep the
   environment they started with.  No event is sent (the caller records
   the create).  Kind conflict when ID is not running. */
int sbx_claim (struct sbx_engine *e, const char *id, const struct sbx_claim_opts *o, struct sbx_err *err);

/* All sandboxes the engine knows (stopped ones included until forgotten),
   newest first. */
int sbx_list (struct sbx_engine *e, struct sbx_info **infos, size_t *n, struct sbx_err *err);
void sbx_list_free (struct sbx_info *infos, size_t n);

struct sbx_metrics {
  double cpu_used_pct;      /* of the sandbox's CPU allowance, over the last interval */
  uint32_t cpu_count;
  uint64_t mem_used, mem_total, mem_cache;
  uint64_t disk_used, disk_total;
  uint64_t oom_kills;
  uint64_t pids;
};

int sbx_get_metrics (struct sbx_engine *e, const char *id, struct sbx_metrics *m, struct sbx_err *err);

/* The egress audit log of sandbox ID (net.h): its records with seq >
   AFTER, oldest first, at most LIMIT (0 or more than SBX_EGRESS_LOG_MAX:
   SBX_EGRESS_LOG_MAX), in *OUT (free it; NULL when *N is 0).  *DROPPED
   gets how many records were lost so far to the ring's size or to the
   rate limit.  A sandbox without networking, or stopped, has an empty
   log. */
int sbx_egress_log (struct sbx_engine *e, const char *id, uint64_t after, size_t limit,
                    struct sbx_egress_record **out, size_t *n, uint64_t *dropped, struct sbx_err *err);

/* ---- ports ---- */

/* A TCP connection to PORT on the loopback of running sandbox ID, made
   from inside its network namespace (so a server bound to 127.0.0.1 in
   the sandbox is reached too, and nothing else can be: not the host, not
   another sandbox).  Returns a non-blocking socket whose connect may
   still be in progress (poll it for POLLOUT, then SO_ERROR:
   ECONNREFUSED when nothing listens), or -1: kind paused, stopped or not
   found. */
int sbx_port_connect (struct sbx_engine *e, const char *id, uint16_t port, struct sbx_err *err);

/* ---- processes ---- */

struct sbx_exec_opts {
  const char *const *argv;  /* argv[0] is looked up in PATH */
  const char *const *env;   /* extra "KEY=VALUE", may be NULL */
  const char *cwd;          /* NULL: the user's home */
  const char *user;         /* NULL: the template's default user */
  const char *tag;
  bool pty;
  uint32_t rows, cols;
  bool stdin_open;
  uint32_t timeout_ms;      /* 0: no timeout */
  bool timeout_command_only; /* the timeout kills the command, not what it started */
  uint32_t keepalive_ms;    /* 0: none; else a KEEPALIVE event after this much silence */
};

enum sbx_proc_event_kind { SBX_PROC_START, SBX_PROC_STDOUT, SBX_PROC_STDERR, SBX_PROC_PTY, SBX_PROC_END,
                           SBX_PROC_KEEPALIVE };

struct sbx_proc_event {
  enum sbx_proc_event_kind kind;
  uint32_t pid;
  const uint8_t *data;
  size_t len;
  int exit_code;   /* END: exit status, -1 when killed by a signal */
  int signal;      /* END: the signal that ended it, 0 if none */
  bool timed_out;  /* END: killed because its timeout expired */
};

/* Return a negative value to stop listening; the process goes on. */
typedef int (*sbx_proc_fn) (const struct sbx_proc_event *ev, void *ud);

/* Start a process and stream its events to FN until it ends (or FN stops).
   Returns 0 once END was seen or FN stopped, -1 on failure. */
int sbx_exec (struct sbx_engine *e, const char *id, const struct sbx_exec_opts *o, sbx_proc_fn fn, void *ud,
              struct sbx_err *err);
/* The same start, for a caller that waits for the events itself (with
   other descriptors, in its own poll loop): the stream's descriptor is
   readable when an event is there; sbx_proc_stream_next then reads it
   into *EV (its data valid until the next call): 1, or 0 once END was
   given, or -1 with ERR (kind stopped: the sandbox went away).  A frame
   once begun must be whole within the agent's frame deadline
   (agent.h).  Closing the stream leaves the process running. */
struct sbx_proc_stream;
int sbx_exec_stream (struct sbx_engine *e, const char *id, const struct sbx_exec_opts *o,
                     struct sbx_proc_stream **out, struct sbx_err *err);
int sbx_proc_stream_fd (const struct sbx_proc_stream *ps);
int sbx_proc_stream_next (struct sbx_proc_stream *ps, struct sbx_proc_event *ev, struct sbx_err *err);
void sbx_proc_stream_close (struct sbx_proc_stream *ps);
/* Re-attach to a running process by pid (KEEPALIVE_MS as in exec). */
int sbx_attach (struct sbx_engine *e, const char *id, uint32_t pid, uint32_t keepalive_ms, sbx_proc_fn fn, void *ud,
                struct sbx_err *err);
/* Write DATA to the process's stdin; any length (it is sent in pieces of
   SBX_PROC_INPUT_CHUNK bytes). */
#define SBX_PROC_INPUT_CHUNK 60000u
int sbx_proc_input (struct sbx_engine *e, const char *id, uint32_t pid, const void *data, size_t len,
                    struct sbx_err *err);
int sbx_proc_close_stdin (struct sbx_engine *e, const char *id, uint32_t pid, struct sbx_err *err);
int sbx_proc_signal (struct sbx_engine *e, const char *id, uint32_t pid, int sig, struct sbx_err *err);
/* Kill process PID and everything it started (SIGKILL), background and
   setsid()ed processes included, as its timeout would. */
int sbx_proc_kill_tree (struct sbx_engine *e, const char *id, uint32_t pid, struct sbx_err *err);
int sbx_proc_resize (struct sbx_engine *e, const char *id, uint32_t pid, uint32_t rows, uint32_t cols,
                     struct sbx_err *err);

struct sbx_proc_info {
  uint32_t pid;
  char *tag, *cwd;
  char **argv; /* NULL-terminated */
  bool pty;
};
int sbx_proc_list (struct sbx_engine *e, const char *id, struct sbx_proc_info **procs, size_t *n, struct sbx_err *err);
void sbx_proc_list_free (struct sbx_proc_info *procs, size_t n);

/* ---- files (paths are inside the sandbox; relative ones start at the
   user's home) ---- */

/* A file's metadata: its user.e2b.KEY extended attributes (proto.h,
   SBX_META_*). */
struct sbx_meta {
  char *key, *value;
};

struct sbx_entry {
  char *name, *path, *owner, *group, *link;
  enum sbx_file_type type;
  uint64_t size;
  uint32_t mode, uid, gid;
  uint64_t mtime_ns;
  struct sbx_meta *meta; /* N_META of them, at most SBX_META_MAX */
  size_t n_meta;
};
void sbx_entry_free (struct sbx_entry *en);
void sbx_entries_free (struct sbx_entry *en, size_t n);

int sbx_file_stat (struct sbx_engine *e, const char *id, const char *path, const char *user, struct sbx_entry *out,
                   struct sbx_err *err);
int sbx_file_list (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t depth,
                   struct sbx_entry **out, size_t *n, struct sbx_err *err);
/* flags: SBX_FILE_F_PARENTS, SBX_FILE_F_EXIST_OK */
int sbx_file_mkdir (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
                    struct sbx_entry *out, struct sbx_err *err);
int sbx_file_move (struct sbx_engine *e, const char *id, const char *from, const char *to, const char *user,
                   struct sbx_entry *out, struct sbx_err *err);
int sbx_file_remove (struct sbx_engine *e, const char *id, const char *path, const char *user, struct sbx_err *err);

/* Read: FN gets the content in chunks; return <0 from it to abort.  If
   MAX_SIZE is non-zero a larger file fails (kind too large) before any
   data, or as soon as more than MAX_SIZE bytes came.  ST (may be NULL)
   gets the file's entry when the read succeeds and is left empty when it
   fails.  Only regular files can be read (anything else: kind invalid). */
typedef int (*sbx_data_fn) (const void *data, size_t len, void *ud);
int sbx_file_read (struct sbx_engine *e, const char *id, const char *path, const char *user, uint64_t max_size,
                   struct sbx_entry *st, sbx_data_fn fn, void *ud, struct sbx_err *err);

/* The same read in two steps, for a caller that must know the file (its
   size, or the error) before it streams the content: open fills ST (the
   caller frees it), stream sends the content to FN and ends the reader,
   close abandons it. */
struct sbx_file_reader;
int sbx_file_reader_open (struct sbx_engine *e, const char *id, const char *path, const char *user, uint64_t max_size,
                          struct sbx_entry *st, struct sbx_file_reader **r, struct sbx_err *err);
int sbx_file_reader_stream (struct sbx_file_reader *r, sbx_data_fn fn, void *ud, struct sbx_err *err);
void sbx_file_reader_close (struct sbx_file_reader *r);

/* Watch a directory.  sbx_watch_open returns once the watch is in place
   inside the sandbox (changes made after it are reported); sbx_watch_run
   then calls FN with each change (TYPE an enum sbx_fs_event, NAME relative
   to PATH), and with TYPE 0 after KEEPALIVE_MS of quiet, until FN returns
   a negative value (0 is returned) or the sandbox goes away (-1); it
   closes the watcher.  sbx_watch_close drops a watcher never run. */
struct sbx_watcher;
typedef int (*sbx_watch_fn) (int type, const char *name, void *ud);
int sbx_watch_open (struct sbx_engine *e, const char *id, const char *path, const char *user, bool recursive,
                    struct sbx_watcher **w, struct sbx_err *err);
int sbx_watch_run (struct sbx_watcher *w, uint32_t keepalive_ms, sbx_watch_fn fn, void *ud, struct sbx_err *err);
void sbx_watch_close (struct sbx_watcher *w);

/* Write (atomic replace): open, push chunks, finish.  Abandoning a writer
   (sbx_file_writer_abort) leaves the old file as it was. */
struct sbx_file_writer;
int sbx_file_writer_open (struct sbx_engine *e, const char *id, const char *path, const char *user, uint32_t flags,
                          uint32_t mode, struct sbx_file_writer **w, struct sbx_err *err);
int sbx_file_writer_push (struct sbx_file_writer *w, const void *data, size_t len, struct sbx_err *err);
int sbx_file_writer_finish (struct sbx_file_writer *w, struct sbx_entry *out, struct sbx_err *err);
void sbx_file_writer_abort (struct sbx_file_writer *w);
/* The same open, the file getting metadata META (N of them, at most
   SBX_META_MAX; keys and values within SBX_META_KEY_MAX and
   SBX_META_VALUE_MAX, else kind invalid) when it is complete.  The file
   that replaces another has only these. */
int sbx_file_writer_open_meta (struct sbx_engine *e, const char *id, const char *path, const char *user,
                               uint32_t flags, const struct sbx_meta *meta, size_t n, struct sbx_file_writer **w,
                               struct sbx_err *err);
/* Restoring files as they were: as root inside the sandbox, each created
   with owner UID:GID and MODE (permission bits) whatever the sandbox's
   users are.  A writer opened this way makes missing parents (as root). */
struct sbx_file_owner {
  uint32_t uid, gid, mode;
};
int sbx_file_writer_open_owned (struct sbx_engine *e, const char *id, const char *path,
                                const struct sbx_file_owner *owner, struct sbx_file_writer **w, struct sbx_err *err);
/* A directory (an existing one gets OWNER too). */
int sbx_file_mkdir_owned (struct sbx_engine *e, const char *id, const char *path, const struct sbx_file_owner *owner,
                          struct sbx_err *err);
/* A symbolic link PATH -> TARGET (TARGET is stored as given, never
   followed); OWNER's mode is ignored. */
int sbx_file_symlink (struct sbx_engine *e, const char *id, const char *path, const char *target,
                      const struct sbx_file_owner *owner, struct sbx_err *err);

/* Convenience: write a whole buffer. */
int sbx_file_write (struct sbx_engine *e, const char *id, const char *path, const char *user, const void *data,
                    size_t len, struct sbx_entry *out, struct sbx_err *err);

#endif
