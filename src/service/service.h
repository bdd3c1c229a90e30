/*
 * service.h - the service layer of sbxd: the one owner of organisations,
 * their plans and quotas, ownership of sandboxes, sandbox records, runs,
 * lifecycle events and webhook deliveries.
 *
 * Every API dialect (src/api) calls it with dialect-neutral C structs and
 * gets records back; none of them reads the store or the engine's list to
 * decide who owns what.  The sandbox engine (src/core) reports every change
 * of a sandbox to it (sbx_service_on_change), and the service records the
 * change and its event in one transaction.
 *
 * Ownership: a sandbox of another organisation does not exist for the
 * caller (SBX_E_NOT_FOUND), whatever the dialect.
 *
 * Quotas: a create first takes one of the organisation's concurrent
 * sandboxes in a transaction (a "creating" placeholder record), then asks
 * the engine, then replaces the placeholder with the sandbox's record and
 * its "created" event in one transaction.  No lock is held across the
 * engine's create, so creates of one organisation run in parallel and
 * still never pass its limit together.
 */
#ifndef SBX_SERVICE_H
#define SBX_SERVICE_H

#include <stdbool.h>
#include <limits.h>
#include <stdint.h>

#include "../common/error.h"
#include "../core/sandbox.h"
#include "store.h"

struct sbx_fs_rule;

struct sbx_service;
struct sbx_webhooks;

/* The service over STORE.  The engine is attached once opened (it reports
   to the service while it opens, re-attaching to running sandboxes). */
int sbx_service_open (struct sbx_store *store, struct sbx_service **out, struct sbx_err *err);
void sbx_service_close (struct sbx_service *svc);
void sbx_service_set_engine (struct sbx_service *svc, struct sbx_engine *engine);
void sbx_service_set_webhooks (struct sbx_service *svc, struct sbx_webhooks *wh);
/* The CPU fair share between organisations (fairshare.h), kicked after
   each recorded change; NULL detaches it. */
struct sbx_fairshare;
void sbx_service_set_fairshare (struct sbx_service *svc, struct sbx_fairshare *fair);
/* The history of the sandboxes' metrics (samples.h); a sandbox's is
   dropped at its killed event. */
struct sbx_sampler;
void sbx_service_set_sampler (struct sbx_service *svc, struct sbx_sampler *sampler);
struct sbx_sampler *sbx_service_sampler (struct sbx_service *svc);
struct sbx_engine *sbx_service_engine (struct sbx_service *svc);
struct sbx_store *sbx_service_store (struct sbx_service *svc);

/* The engine's event callback (sbx_engine_config.on_event); UD is the
   service. */
void sbx_service_on_change (void *ud, struct sbx_engine *e, const char *id, enum sbx_event_kind kind,
                            const char *reason);

/* Make the records and the engine agree, at start-up: placeholders of
   creates that never finished are dropped; a live record whose sandbox the
   engine does not know is recorded as stopped ("lost"); a sandbox the
   engine runs without any record (its create never got recorded) is
   destroyed.  Returns the number of changes made. */
int sbx_service_reconcile (struct sbx_service *svc, struct sbx_err *err);

/* The organisation of an API key.  SBX_E_FORBIDDEN-free: an unknown or
   revoked key fails with kind SBX_E_INVALID and a message saying which. */
int sbx_service_authenticate (struct sbx_service *svc, const char *key, struct sbx_org *org, struct sbx_err *err);

/* ---- sandboxes ---- */

struct sbx_volume_use {
  const char *name;
  const char *path;
};

struct sbx_sandbox_spec {
  const char *template_name;
  uint32_t timeout_s;               /* 0: the engine's default */
  const char *const *env;           /* NULL-terminated "KEY=VALUE", may be NULL */
  const char *metadata_json;        /* a JSON object's text, kept on the record, may be NULL */
  struct sbx_limits limits;         /* 0 fields: the template's */
  const struct sbx_net_policy *net; /* NULL: the template's default */
  int internet_asked;               /* as in sbx_create_opts */
  const struct sbx_fs_rule *fs_rules;
  size_t n_fs_rules;
  const char *agent_id;             /* kept on the record (seed 002), may be NULL */
  const char *mode;                 /* "container" or "wasm", kept on the record, may be NULL */
  /* seed 004's storage (checkpoints.c) */
  const char *checkpoint_id;        /* start with this checkpoint's workspace, may be NULL */
  bool keep_workspace;              /* checkpoint the workspace when it ends (ephemeral: false) */
  bool keep_artifacts;              /* keep what it writes to /artifacts after it ends */
  const char *artifact_prefix;      /* ... under this prefix, may be NULL */
  /* E2B's lifecycle and snapshots (snapshots.c) */
  enum sbx_on_timeout on_timeout;
  bool auto_resume;
  const char *snapshot_dir;         /* start from these files (sbx_service_snapshot_find), may be NULL */
  /* E2B's volumes (volumes.c): the organisation's volume NAME mounted at PATH */
  const struct sbx_volume_use *volumes;
  size_t n_volumes;
};

/* Create a sandbox for ORG within its quota; REC gets its record.  Fails
   with SBX_E_LIMIT at the organisation's concurrent limit or when its
   monthly sandbox hours are used up (SBX_MSG_HOURS_LIMIT), SBX_E_INVALID
   for a timeout over its limit or an unknown template. */
int sbx_service_sandbox_create (struct sbx_service *svc, const struct sbx_org *org,
                                const struct sbx_sandbox_spec *spec, struct sbx_sandbox_rec *rec, struct sbx_err *err);
/* The record of ORG's sandbox ID (stopped ones too); SBX_E_NOT_FOUND for
   an unknown id, a placeholder or another organisation's sandbox. */
int sbx_service_sandbox_get (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                             struct sbx_sandbox_rec *rec, struct sbx_err *err);
/* Destroy ORG's sandbox ID.  SBX_E_NOT_FOUND if it is not ORG's,
   SBX_E_STOPPED if it had already stopped. */
int sbx_service_sandbox_kill (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                              struct sbx_err *err);
/* sbx_destroy, counted and timed for the operator (telemetry.h): every
   destroy a tenant asks for, in any dialect, goes through here. */
int sbx_service_destroy (struct sbx_service *svc, const char *id, struct sbx_err *err);
/* sbx_exec, counted for the operator, and timed until the process has
   started (its run time is the tenant's, not the daemon's). */
int sbx_service_exec (struct sbx_service *svc, const char *id, const struct sbx_exec_opts *o, sbx_proc_fn fn,
                      void *ud, struct sbx_err *err);

/* ---- checkpoints and artifacts (checkpoints.c) ----

   A checkpoint is a copy of a sandbox's /workspace (files, directories,
   symlinks, with their owners and modes), taken on request or, for a
   sandbox created with keep_workspace, when it ends however it ends
   (destroy, timeout).  What a sandbox has in /artifacts when it ends is
   kept too (its "artifact set").  Both are read through the sandbox's
   agent, never by walking its files on the host. */

#define SBX_SAVE_BYTES_MAX (1ull << 30)  /* content of one checkpoint or artifact set */
#define SBX_SAVE_FILES_MAX 10000u        /* its entries */
#define SBX_SAVE_DEPTH_MAX 32u           /* directory levels below /workspace or /artifacts */
#define SBX_SAVE_QUOTA_MB 4096u          /* an organisation's sets together (sbxd serve --storage-quota-mb) */
#define SBX_SAVE_MS 120000u              /* a checkpoint asked for by a request */
#define SBX_WORKSPACE "/workspace"
#define SBX_ARTIFACTS "/artifacts"

/* Keep checkpoints and artifacts in STATE_DIR/captures, at most
   QUOTA_BYTES per organisation (0: no quota); removes what a crash left
   half made.  Before the engine opens (its ending hook uses it). */
int sbx_service_set_storage (struct sbx_service *svc, const char *state_dir, uint64_t quota_bytes,
                             struct sbx_err *err);
/* The engine's ending hook (sbx_engine_config.on_ending); UD is the
   service.  Keeps the workspace (keep_workspace) and /artifacts. */
void sbx_service_on_ending (void *ud, struct sbx_engine *e, const char *id, const char *reason);

/* A checkpoint of ORG's sandbox SANDBOX_ID's workspace into *OUT.  For a
   sandbox that has ended, the checkpoint kept when it ended, else
   SBX_E_STOPPED.  SBX_E_TOO_LARGE past the bounds above, SBX_E_LIMIT
   past the organisation's quota; nothing is kept then. */
int sbx_service_checkpoint_create (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                                   struct sbx_saved *out, struct sbx_err *err);
/* ORG's checkpoints, newest first (free *V). */
int sbx_service_checkpoint_list (struct sbx_service *svc, const struct sbx_org *org, struct sbx_saved **v,
                                 size_t *n, struct sbx_err *err);
/* Delete ORG's checkpoint ID and free its disk; SBX_E_NOT_FOUND
   ("Checkpoint not found") when it is not ORG's. */
int sbx_service_checkpoint_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                                   struct sbx_err *err);
/* Write ORG's checkpoint CHECKPOINT_ID into the workspace of running
   sandbox SANDBOX_ID, each entry owned and moded as it was.  The create
   does it for spec->checkpoint_id. */
int sbx_service_checkpoint_restore (struct sbx_service *svc, const struct sbx_org *org, const char *checkpoint_id,
                                    const char *sandbox_id, struct sbx_err *err);
/* ID looks like an id of a set of that PREFIX ("ckpt_", "art_"). */
bool sbx_saved_id_valid (const char *id, const char *prefix);

struct sbx_artifact {
  char *path;          /* relative to /artifacts */
  uint64_t size;
  uint32_t mode;
  int64_t mtime_ms;
};

struct sbx_artifacts {
  struct sbx_artifact *v;
  size_t n, cap;
  uint64_t bytes;
  bool kept;           /* the set kept when it ended (else: the live /artifacts) */
  int64_t kept_ms;
  char prefix[128];    /* artifactPrefix, "" when none */
};
void sbx_artifacts_free (struct sbx_artifacts *a);

/* The artifacts of sandbox REC (already checked to be the caller's): a
   running one's /artifacts as it is now (regular files only), an ended
   one's kept set (empty when nothing was kept).  SBX_E_PAUSED for a
   paused one. */
int sbx_service_artifacts_list (struct sbx_service *svc, const struct sbx_sandbox_rec *rec,
                                struct sbx_artifacts *out, struct sbx_err *err);
/* Remove the kept set of ended sandbox REC, freeing its quota:
   SBX_E_NOT_FOUND "No artifacts kept" when there is none, SBX_E_CONFLICT
   while the sandbox lives (its /artifacts are then its own files). */
int sbx_service_artifacts_delete (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, struct sbx_err *err);

/* Where an artifact's bytes come from: FD (a kept one; close it) or
   READER (a running sandbox's; sbx_file_reader_stream or _close it). */
struct sbx_artifact_src {
  int fd;
  struct sbx_file_reader *reader;
  uint64_t size;
  char name[256];      /* its last component */
};
/* Open artifact PATH (relative to /artifacts; "/artifacts/..." and the
   prefix are taken off) of sandbox REC.  SBX_E_INVALID for a path with
   "..", "." or empty components, SBX_E_NOT_FOUND ("Artifact not found")
   for anything but a regular file reached through directories. */
int sbx_service_artifact_open (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, const char *path,
                               struct sbx_artifact_src *out, struct sbx_err *err);

/* For the sandbox object's `artifacts` field, without asking the sandbox
   anything: 1 and *OUT when there is something to say (an ended sandbox's
   kept set: count and bytes; a running one created with keep_artifacts:
   its prefix, kept false), 0 when nothing (null). */
struct sbx_artifacts_summary {
  uint32_t count;
  uint64_t bytes;
  bool kept;
  char prefix[128];
};
int sbx_service_artifacts_summary (struct sbx_service *svc, const struct sbx_sandbox_rec *rec,
                                   struct sbx_artifacts_summary *out, struct sbx_err *err);

/* ---- snapshots and forks (snapshots.c) ----

   E2B's snapshots: a sandbox's files (not its memory) kept as a set of
   the organisation (kind "snapshot" among its captures, its name in the
   prefix), for new sandboxes to start from; and forks, sandboxes made
   from a sandbox's files at once.  The engine makes and mounts the disk
   images (sbx_snapshot_take); they live in STATE/captures/ID and count
   against the organisation's storage quota (--storage-quota-mb). */

#define SBX_SNAPSHOTS_MAX 100u      /* an organisation's snapshots */
#define SBX_SNAPSHOT_NAME_MAX 64u   /* a name's bytes: [A-Za-z0-9._-], not starting with "snap_" */
#define SBX_FORK_MAX 100u           /* sandboxes one fork makes */

/* Snapshot ORG's sandbox SANDBOX_ID (running or paused; it is frozen for
   the copy) as NAME (NULL: none).  A NAME ORG already gave a snapshot
   moves to the new one, whose id stays the old one's (E2B: a new build
   of the same template).  SBX_E_INVALID for a bad name, SBX_E_STOPPED for
   an ended sandbox, SBX_E_LIMIT past SBX_SNAPSHOTS_MAX or the storage
   quota, SBX_E_NO_SPACE when the host has no room; nothing is kept then. */
int sbx_service_snapshot_create (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                                 const char *name, struct sbx_saved *out, struct sbx_err *err);
/* ORG's snapshots, newest first; SANDBOX_ID and NAME (an id or a name)
   filter when not NULL. */
int sbx_service_snapshot_list (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                               const char *name, struct sbx_saved **v, size_t *n, struct sbx_err *err);
/* ORG's snapshot by id or name into *OUT and its directory into DIR;
   SBX_E_NOT_FOUND when it has none such. */
int sbx_service_snapshot_find (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                               struct sbx_saved *out, char dir[PATH_MAX], struct sbx_err *err);
/* Delete ORG's snapshot (by id or name) and free its disk (the blocks
   sandboxes made from it still use are freed when they end). */
int sbx_service_snapshot_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                                 struct sbx_err *err);

/* ---- volumes (volumes.c) ----

   E2B's volumes: persistent file systems of the organisation, each an
   ext4 image of SBX_VOLUME_MB (sparse; STATE/captures/ID/volume.img,
   recorded as a capture of kind "volume", its name in the prefix), so
   its full size counts against the organisation's storage quota
   (--storage-quota-mb) with its snapshots and checkpoints.  Sandboxes
   mount them at create (spec->volumes); the volume's files can also be
   reached without a sandbox (sbx_service_volume_root). */

#define SBX_VOLUMES_MAX 100u       /* an organisation's volumes */
#define SBX_VOLUME_NAME_MAX 64u    /* a name's bytes: [A-Za-z0-9_-] */
#define SBX_VOLUME_MB 1024u        /* a volume's size */

/* A new volume NAME of ORG.  SBX_E_INVALID for a bad name, SBX_E_CONFLICT
   when ORG has one of that name, SBX_E_LIMIT past SBX_VOLUMES_MAX or the
   storage quota, SBX_E_NO_SPACE when the host has no room for it. */
int sbx_service_volume_create (struct sbx_service *svc, const struct sbx_org *org, const char *name,
                               struct sbx_saved *out, struct sbx_err *err);
/* ORG's volumes, by name (free *V). */
int sbx_service_volume_list (struct sbx_service *svc, const struct sbx_org *org, struct sbx_saved **v, size_t *n,
                             struct sbx_err *err);
/* ORG's volume ID; SBX_E_NOT_FOUND when ORG has none such (ORG NULL: any
   organisation's, for a caller holding the volume's own token). */
int sbx_service_volume_get (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                            struct sbx_saved *out, struct sbx_err *err);
/* Delete ORG's volume ID and its files; SBX_E_CONFLICT while a running or
   paused sandbox mounts it. */
int sbx_service_volume_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                               struct sbx_err *err);
/* A detached mount of volume ID (already checked to be the caller's) for
   the file calls of core/volume.h; close it when done. */
int sbx_service_volume_root (struct sbx_service *svc, const char *id, struct sbx_err *err);
/* The volumes sandbox ID mounts (free *V). */
int sbx_service_volume_mounts (struct sbx_service *svc, const char *sandbox_id, struct sbx_volume_mount_rec **v,
                               size_t *n, struct sbx_err *err);

/* One sandbox of a fork: its record, or why it could not be made. */
struct sbx_fork_result {
  bool ok;
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
};
/* COUNT (1..SBX_FORK_MAX) new sandboxes of ORG with the files of its
   sandbox SANDBOX_ID as they are now, its template, limits, network
   rules, metadata and lifecycle, each with TIMEOUT_S (0: the default), a
   machine id, host name and access token of its own.  The source is
   frozen while its disk is copied (once, whatever COUNT), then goes on
   as it was.  Fails as a whole (-1) only when nothing could be forked;
   then each of OUT[COUNT] says how it went (free the records with
   sbx_sandbox_rec_free). */
int sbx_service_fork (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, uint32_t count,
                      uint32_t timeout_s, struct sbx_fork_result *out, struct sbx_err *err);

/* ---- runs (runs.c) ---- */

/* SBX_RUN_CODE_MAX and SBX_RUN_OUTPUT_MAX: store.h */
#define SBX_RUN_ACTIVE_MAX 8u          /* runs executing at once in one sandbox */
#define SBX_RUN_ASYNC_MAX 64u          /* asynchronous runs executing in the daemon */

struct sbx_run_request {
  const char *code;   /* Python source */
  uint32_t timeout_s;
  bool async;
};

/* Run REQ's code in ORG's sandbox SB (its record, as the caller read it).
   Synchronous: returns when the run ended, OUT its finished record.
   Asynchronous: returns at once, OUT the record as it starts ("running").
   SBX_E_STOPPED for a stopped sandbox, SBX_E_LIMIT past the bounds. */
int sbx_service_run (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_rec *sb,
                     const struct sbx_run_request *req, struct sbx_run_rec *out, struct sbx_err *err);
int sbx_service_run_get (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                         const char *run_id, struct sbx_run_rec *out, struct sbx_err *err);
/* Runs of SANDBOX_ID executing now; runs executing in the daemon. */
unsigned sbx_service_runs_active (const char *sandbox_id);
unsigned sbx_service_runs_in_progress (void);
/* At start-up: runs the last daemon left "running" are recorded failed. */
int sbx_service_runs_recover (struct sbx_service *svc, struct sbx_err *err);

/* ---- activity (activity.c) ---- */

/* Something executes in sandbox ID for a caller (a command, a terminal):
   seed 004's "active" state.  Every begin is paired with an end. */
void sbx_service_busy_begin (const char *sandbox_id);
void sbx_service_busy_end (const char *sandbox_id);
/* How many are executing in it now, runs included. */
unsigned sbx_service_busy (const char *sandbox_id);

/* ---- metering (metering.c) ---- */

/* The message of the SBX_E_LIMIT failure of a create or a resume when the
   organisation's monthly sandbox hours are used up: seed 004's words,
   which every dialect shows in its own error shape (429). */
#define SBX_MSG_HOURS_LIMIT "Monthly sandbox hours limit reached"
/* ---- the machine's capacity and its queue (placement.c) ---- */

struct sbx_capacity {
  uint32_t sandboxes;  /* running at once; 0: no cap */
  uint32_t memory_mb;  /* their memory limits together; 0: what the host can hold */
};

/* Set the capacity and start the thread that re-checks the head of the
   queue.  Creates and resumes of every dialect meet it: seed 004's wait
   in the queue (answered at once, "queued"), the others' wait in the same
   queue at most SBX_PLACE_WAIT_MS (placement.h), then fail with
   SBX_E_UNAVAILABLE. */
int sbx_service_placement_start (struct sbx_service *svc, const struct sbx_capacity *cap, struct sbx_err *err);
/* Stop that thread and wait for the creates, resumes and ends under way
   (before the engine closes); queued creates stay "creating" records. */
void sbx_service_placement_stop (void);

/* Seed 004's create: checks ORG's concurrent limit (SBX_E_LIMIT) and
   answers at once with the record as queued (REC; its id is the
   sandbox's for good); the sandbox is created when its turn comes, or
   recorded "error" if that fails.  When nothing waits and there is room,
   it is created before this returns (REC then its record, running).  SPEC takes no network policy or
   filesystem rules. */
int sbx_service_sandbox_enqueue (struct sbx_service *svc, const struct sbx_org *org,
                                 const struct sbx_sandbox_spec *spec, struct sbx_sandbox_rec *rec,
                                 struct sbx_err *err);
/* Pause ORG's running sandbox ID ("pausing" meanwhile); its place on the
   machine goes to the queue.  SBX_E_PAUSED if paused already,
   SBX_E_CONFLICT while it is in another step or not ready, SBX_E_STOPPED
   once ended. */
int sbx_service_sandbox_pause (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                               struct sbx_err *err);
/* Resume ORG's paused sandbox ID.  QUEUE: answer at once, the resume waits
   its turn in the queue (seed 004); otherwise wait for a place as a
   synchronous create does.  A running sandbox is left as it is.  Fails
   with SBX_E_LIMIT (SBX_MSG_HOURS_LIMIT) when ORG's monthly sandbox hours
   are used up. */
int sbx_service_sandbox_resume (struct sbx_service *svc, const struct sbx_org *org, const char *id, bool queue,
                                struct sbx_err *err);
/* Resume paused sandbox ID for a request that reached it without a key
   (E2B's autoResume, through envd or a port): as a synchronous resume by
   its own organisation, with that organisation's hours and the operator's
   capacity checked. */
int sbx_service_sandbox_auto_resume (struct sbx_service *svc, const char *id, struct sbx_err *err);
/* End ORG's sandbox ID: answered at once, destroyed on a thread of its own
   ("ending"); a queued create is dropped from the queue and recorded
   stopped.  Ending an ended sandbox does nothing. */
int sbx_service_sandbox_end (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                             struct sbx_err *err);
/* The step sandbox ID is in now, "" if none: "queued", "assigning",
   "pausing" or "ending". */
void sbx_service_sandbox_phase (const char *id, char out[16]);

/* ---- usage ---- */

struct sbx_usage {
  int64_t month_start_ms;  /* the calendar month (UTC) it counts */
  int64_t used_ms;         /* sandbox time of the organisation in it (running, not paused nor queued) */
  int64_t limit_ms;        /* the monthly limit, exact; 0: unlimited */
  uint32_t limit_hours;    /* the same in whole hours, rounded up (a fraction of an hour reads 1); 0: unlimited */
};

/* ORG's sandbox time this calendar month. */
int sbx_service_usage (struct sbx_service *svc, const struct sbx_org *org, struct sbx_usage *u, struct sbx_err *err);
/* 0 while ORG has sandbox time left this month (or no limit); else -1
   with SBX_E_LIMIT and SBX_MSG_HOURS_LIMIT. */
int sbx_service_check_hours (struct sbx_service *svc, const struct sbx_org *org, struct sbx_err *err);
/* Whether ERR is that failure (and not, say, the concurrent limit). */
bool sbx_service_err_is_hours (const struct sbx_err *err);

/* The meter: a worker that, every SBX_METER_PERIOD_MS, ends the running
   sandboxes (stop reason "quota", with their killed events) of the
   organisations whose monthly sandbox hours are used up, at most
   SBX_METER_ENDS_MAX a pass.  Paused sandboxes are left paused. */
#define SBX_METER_PERIOD_MS 1000
#define SBX_METER_ENDS_MAX 64
struct sbx_meter;
int sbx_meter_start (struct sbx_service *svc, struct sbx_meter **out, struct sbx_err *err);
/* Stops the worker; before the engine closes.  NULL does nothing. */
void sbx_meter_stop (struct sbx_meter *m);

#endif
