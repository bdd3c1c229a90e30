/*
 * store.h - the daemon's embedded store: one SQLite database (WAL) in the
 * state directory holding organisations, API keys, sandbox records and
 * their history, runs, lifecycle events, webhooks and webhook deliveries.
 *
 * Everything survives a restart, kill -9 included.  The functions are
 * thread safe (one connection, serialised by a mutex; SQLite's WAL keeps
 * readers of other processes, such as `sbxd keys`, working meanwhile).
 * Strings returned in structs are owned by the struct and freed by the
 * matching *_free function.
 */
#ifndef SBX_SERVICE_STORE_H
#define SBX_SERVICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"

#define SBX_STORE_ID_MAX 48

struct sbx_store;
struct sbx_event;

int sbx_store_open (const char *path, struct sbx_store **out, struct sbx_err *err);
/* Does what sbx_store_later queued first. */
void sbx_store_close (struct sbx_store *st);

/* FN (ST, UD), which writes to the store, done after the caller returns:
   by a thread of the store's, or by whoever uses the store first, which
   waits for it, so every read sees it done.  For writes a request need
   not wait for (a destroy's killed event).  FN runs exactly once; it is
   run at once when it cannot be queued (LATER_MAX pieces are already). */
typedef void (*sbx_store_later_fn) (struct sbx_store *st, void *ud);
void sbx_store_later (struct sbx_store *st, sbx_store_later_fn fn, void *ud);
/* Returns once what sbx_store_later queued before is done. */
void sbx_store_flush (struct sbx_store *st);

/* ---- organisations ---- */

/* An organisation and its limits.  PLAN (plans.h) names where the limits
   came from; max_sandboxes, max_timeout_s and monthly_ms start as the
   plan's and may each be overridden by the operator. */
struct sbx_org {
  char id[SBX_STORE_ID_MAX];   /* "org_" + random */
  char name[128];
  char plan[16];               /* default, free, builder, pro, scale */
  uint32_t max_sandboxes;      /* concurrent (running + paused) */
  uint32_t max_timeout_s;      /* longest sandbox lifetime, at most SBX_PLAN_TIMEOUT_CAP */
  int64_t monthly_ms;          /* sandbox time per calendar month, in ms (a plan's hours
                                  times SBX_MS_PER_HOUR, or any fraction of an hour);
                                  0: unlimited; at most SBX_PLAN_MONTHLY_MS_CAP */
  uint64_t max_upload_bytes;   /* default 100 MB */
};

/* The organisation called NAME, created on the default plan if missing. */
int sbx_store_org_ensure (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err);
/* The organisation called NAME; ENOENT when there is none. */
int sbx_store_org_get (struct sbx_store *st, const char *name, struct sbx_org *out, struct sbx_err *err);
/* The organisation whose id is ID; ENOENT when there is none. */
int sbx_store_org_get_id (struct sbx_store *st, const char *id, struct sbx_org *out, struct sbx_err *err);
/* Every organisation, oldest first; free *V with free(). */
int sbx_store_org_list (struct sbx_store *st, struct sbx_org **v, size_t *n, struct sbx_err *err);
/* Create organisation O->name with O's plan and limits (max_upload_bytes 0:
   the default); fills O->id.  EEXIST when the name is taken, EINVAL for an
   unknown plan or a limit out of bounds (see plans.h). */
int sbx_store_org_create (struct sbx_store *st, struct sbx_org *o, struct sbx_err *err);
/* Replace plan, max_sandboxes, max_timeout_s and monthly_ms of the
   organisation O->name; ENOENT when there is none, EINVAL as above.
   Running daemons see the change at their next request. */
int sbx_store_org_update (struct sbx_store *st, const struct sbx_org *o, struct sbx_err *err);
/* Change an organisation's limits (0 leaves a field as it is). */
int sbx_store_org_set_limits (struct sbx_store *st, const char *name, uint32_t max_sandboxes, uint32_t max_timeout_s,
                              uint64_t max_upload_bytes, struct sbx_err *err);

/* ---- API keys: stored as SHA-256 hashes, never in clear ---- */

struct sbx_key_info {
  char id[SBX_STORE_ID_MAX];   /* "key_" + random: how keys are named for revoke */
  char org_name[128];
  char hint[24];               /* the first characters of the key, e.g. "sk-sb-1a2b" */
  int64_t created_ms;
  int64_t revoked_ms;          /* 0 while valid */
};

/* Create a key for organisation ORG_NAME (created if missing).  STYLE is
   "sk-sb-" or "e2b_"; the key is STYLE + 40 hex characters and is written
   to KEY (at least 64 bytes).  Only its hash is stored. */
int sbx_store_key_create (struct sbx_store *st, const char *org_name, const char *style, char *key, size_t key_size,
                          struct sbx_key_info *info, struct sbx_err *err);
/* The organisation of a valid key.  err->code: ENOENT unknown key,
   EKEYREVOKED revoked key. */
int sbx_store_key_lookup (struct sbx_store *st, const char *key, struct sbx_org *org, struct sbx_err *err);
int sbx_store_key_list (struct sbx_store *st, struct sbx_key_info **keys, size_t *n, struct sbx_err *err);
/* Revoke by key id (or by the full key); ENOENT when none matches. */
int sbx_store_key_revoke (struct sbx_store *st, const char *id_or_key, struct sbx_err *err);
/* Number of keys ever created (the first `serve` creates one when 0). */
int sbx_store_key_count (struct sbx_store *st, int *n, struct sbx_err *err);

/* ---- sandbox records ---- */

struct sbx_sandbox_rec {
  char id[SBX_STORE_ID_MAX];
  char org_id[SBX_STORE_ID_MAX];
  char template_id[64];
  char status[16];             /* creating, running, paused, stopped, error */
  char *metadata_json;         /* JSON object text, or NULL */
  int64_t started_ms, end_ms, stopped_ms;
  char stop_reason[32];        /* request, timeout, died, ... */
  uint32_t cpu_count, memory_mb, disk_mb;
  char agent_id[128];          /* the agent it was created for (seed 002), "" when none */
  char mode[16];               /* "container", "wasm", or "" when not given */
};

void sbx_sandbox_rec_free (struct sbx_sandbox_rec *r);
void sbx_sandbox_recs_free (struct sbx_sandbox_rec *v, size_t n);

/* Insert or replace the record R->id; but an empty R->agent_id or R->mode
   keeps the stored one (the engine's reports do not know them). */
int sbx_store_sandbox_put (struct sbx_store *st, const struct sbx_sandbox_rec *r, struct sbx_err *err);
/* Set agent_id and mode (NULL or "": none) of the existing record ID:
   for the API to call after sbx_create, whose report wrote the record.
   ENOENT when there is no record; EINVAL when a value does not fit. */
int sbx_store_sandbox_set_agent (struct sbx_store *st, const char *id, const char *agent_id, const char *mode,
                                 struct sbx_err *err);
/* ENOENT when unknown. */
int sbx_store_sandbox_get (struct sbx_store *st, const char *id, struct sbx_sandbox_rec *r, struct sbx_err *err);
/* ORG's records, newest first; STATUS NULL for all. */
int sbx_store_sandbox_list (struct sbx_store *st, const char *org_id, const char *status, struct sbx_sandbox_rec **v,
                            size_t *n, struct sbx_err *err);
/* Take one of ORG's MAX concurrent sandboxes: count its live records
   (creating, running, paused) and the places held for its creates in
   progress and, below MAX, hold one more, in memory only, under an id
   ("rsv_...") written to ID, and the count it makes (this one included)
   to *LIVE.  At MAX it fails with kind SBX_E_LIMIT.  The place is given
   back as the real record commits (sbx_store_sandbox_record with DROP_ID
   = ID), or by sbx_store_sandbox_record (ID, NULL, NULL) when the create
   fails. */
int sbx_store_sandbox_reserve (struct sbx_store *st, const char *org_id, uint32_t max, const char *template_id,
                               char id[SBX_STORE_ID_MAX], uint32_t *live, struct sbx_err *err);
/* The same with the place's id given, written as a "creating"
   placeholder record: a sandbox id chosen before its create
   (sbx_new_id), so the record answers under it from the start; the
   create's record replaces it (DROP_ID = the same id). */
int sbx_store_sandbox_reserve_id (struct sbx_store *st, const char *org_id, uint32_t max, const char *template_id,
                                  const char *id, uint32_t *live, struct sbx_err *err);
/* One transaction: delete record DROP_ID (may be NULL), save R (may be
   NULL) and add EV (may be NULL; filled as by sbx_store_event_add) with
   its webhook deliveries. */
int sbx_store_sandbox_record (struct sbx_store *st, const char *drop_id, const struct sbx_sandbox_rec *r,
                              struct sbx_event *ev, struct sbx_err *err);
/* Live records (creating, running, paused) of every organisation, oldest
   first: what start-up reconciles with the engine. */
int sbx_store_sandbox_list_live (struct sbx_store *st, struct sbx_sandbox_rec **v, size_t *n, struct sbx_err *err);
/* The same, only those created for AGENT_ID (NULL: any agent, as above;
   "": those created for none). */
int sbx_store_sandbox_list_by_agent (struct sbx_store *st, const char *org_id, const char *agent_id,
                                     const char *status, struct sbx_sandbox_rec **v, size_t *n, struct sbx_err *err);
/* Running and paused sandboxes of ORG, and creates under way (their
   placeholders and the places held for them). */
int sbx_store_sandbox_count_live (struct sbx_store *st, const char *org_id, uint32_t *n, struct sbx_err *err);
/* Sandbox time of ORG between SINCE_MS and NOW_MS, in ms, into *MS: the
   part inside that window of the intervals its sandboxes ran (the ledger
   below), an interval still open counting until NOW_MS.  For plans'
   monthly sandbox hours, with SINCE_MS = sbx_plan_month_start_ms (NOW_MS). */
int sbx_store_sandbox_usage_ms (struct sbx_store *st, const char *org_id, int64_t since_ms, int64_t now_ms,
                                int64_t *ms, struct sbx_err *err);
/* The metering ledger: every save of a sandbox record (sbx_store_sandbox_put,
   sbx_store_sandbox_record), in its transaction, opens an interval of
   sandbox time when the record becomes "running" (at the time of the save)
   and closes it when the record becomes anything else ("paused", "stopped",
   "error"; at the record's stop time when it has one, else at the time of
   the save).  A sandbox has at most one open interval, so saving a running
   record again (a new timeout, a daemon restarted and re-attached) neither
   opens a second one nor loses the time since the first: the time a
   sandbox ran while no daemon was there counts.  Creating (queued) and
   paused time do not. */

/* Organisations with a monthly limit, a sandbox running now, and their
   time since SINCE_MS (up to NOW_MS) at or past the limit: at most MAX ids
   into IDS, their number into *N. */
int sbx_store_orgs_out_of_time (struct sbx_store *st, int64_t since_ms, int64_t now_ms,
                                char (*ids)[SBX_STORE_ID_MAX], size_t max, size_t *n, struct sbx_err *err);

/* ---- runs: code executed in a sandbox (seed 002's /run) ---- */

/* Bounds: code longer than SBX_RUN_CODE_MAX is refused (EINVAL); output
   past SBX_RUN_OUTPUT_MAX per stream is cut (on a UTF-8 character
   boundary) and its *_truncated flag set; reason is cut at 1000 bytes. */
#define SBX_RUN_CODE_MAX (1024 * 1024)
#define SBX_RUN_OUTPUT_MAX (1024 * 1024)

struct sbx_run_rec {
  char id[SBX_STORE_ID_MAX];   /* "run_" + random, assigned by the store */
  char sandbox_id[SBX_STORE_ID_MAX];
  char org_id[SBX_STORE_ID_MAX];
  char status[16];             /* running, completed, failed, timeout */
  char *code;                  /* what was run */
  char *stdout_text, *stderr_text;   /* NULL while running */
  int exit_code;               /* -1 until finished */
  int64_t created_ms, finished_ms;   /* finished_ms 0 while running */
  uint32_t timeout_s;
  char *reason;                /* why it failed, e.g. "daemon restarted"; NULL if none */
  bool stdout_truncated, stderr_truncated;
};

void sbx_run_rec_free (struct sbx_run_rec *r);
void sbx_run_recs_free (struct sbx_run_rec *v, size_t n);

/* Record a new run of R->code in R->sandbox_id for R->org_id (both
   required): fills R->id and R->created_ms, sets status "running" and
   exit_code -1; outputs and reason are not stored yet. */
int sbx_store_run_create (struct sbx_store *st, struct sbx_run_rec *r, struct sbx_err *err);
/* Finish run R->id (of R->org_id): stores R's status (completed, failed
   or timeout; EINVAL otherwise), outputs, exit_code, reason and
   finished_ms (now when 0).  ENOENT when there is no such run. */
int sbx_store_run_finish (struct sbx_store *st, const struct sbx_run_rec *r, struct sbx_err *err);
/* Run RUN_ID of ORG_ID in SANDBOX_ID (NULL: in any sandbox); ENOENT
   otherwise. */
int sbx_store_run_get (struct sbx_store *st, const char *org_id, const char *sandbox_id, const char *run_id,
                       struct sbx_run_rec *r, struct sbx_err *err);
/* Runs of ORG_ID in SANDBOX_ID (NULL: all its sandboxes), newest first;
   LIMIT 0: no limit. */
int sbx_store_run_list (struct sbx_store *st, const char *org_id, const char *sandbox_id, uint32_t offset,
                        uint32_t limit, struct sbx_run_rec **v, size_t *n, struct sbx_err *err);
/* Every run still "running", of all organisations, oldest first: at
   start-up these are runs a previous daemon did not finish. */
int sbx_store_run_list_unfinished (struct sbx_store *st, struct sbx_run_rec **v, size_t *n, struct sbx_err *err);

/* ---- lifecycle events ---- */

struct sbx_event {
  int64_t seq;                 /* increasing, assigned by the store */
  char id[SBX_STORE_ID_MAX];   /* uuid-like, assigned by the store */
  char org_id[SBX_STORE_ID_MAX];
  char sandbox_id[SBX_STORE_ID_MAX];
  char template_id[64];
  char type[48];               /* sandbox.lifecycle.created|updated|paused|resumed|killed */
  int64_t timestamp_ms;
  char *data_json;             /* eventData: JSON object text */
};

void sbx_event_free (struct sbx_event *e);
void sbx_events_free (struct sbx_event *v, size_t n);

/* Record EV (seq, id and, when 0, timestamp are filled in) and, in the
   same transaction, queue one delivery for every enabled webhook of the
   organisation that subscribed to EV->type. */
int sbx_store_event_add (struct sbx_store *st, struct sbx_event *ev, struct sbx_err *err);
/* Events of ORG (of one sandbox when SANDBOX_ID is not NULL), newest first
   unless ASC; TYPES (NULL-terminated, may be NULL) filters by type. */
int sbx_store_event_list (struct sbx_store *st, const char *org_id, const char *sandbox_id, uint32_t offset,
                          uint32_t limit, bool asc, const char *const *types, struct sbx_event **v, size_t *n,
                          struct sbx_err *err);

/* ---- the operator's census (store_census.c) ---- */

/* Live sandboxes (creating, running, paused) of one organisation. */
enum { SBX_CENSUS_CREATING, SBX_CENSUS_RUNNING, SBX_CENSUS_PAUSED, SBX_CENSUS_STATES };
struct sbx_census_org {
  char name[128];                  /* the organisation's name (its id if it has none) */
  uint32_t n[SBX_CENSUS_STATES];
};
/* The MAX organisations with the most live sandboxes into ORGS (*N of
   them, most first), and the live sandboxes of all the others together
   into OTHER. */
int sbx_store_sandbox_census (struct sbx_store *st, struct sbx_census_org *orgs, size_t max, size_t *n,
                              uint32_t other[SBX_CENSUS_STATES], struct sbx_err *err);
/* Webhook deliveries waiting for an attempt (the queue) and given up. */
int sbx_store_delivery_census (struct sbx_store *st, uint64_t *pending, uint64_t *failed, struct sbx_err *err);

/* ---- webhooks ---- */

struct sbx_webhook {
  char id[SBX_STORE_ID_MAX];   /* "wh_" + random */
  char org_id[SBX_STORE_ID_MAX];
  char *name;
  char *url;
  bool enabled;
  char **events;               /* NULL-terminated event types */
  char *secret;                /* signature secret; never returned by the API */
  int64_t created_ms;
};

void sbx_webhook_free (struct sbx_webhook *w);
void sbx_webhooks_free (struct sbx_webhook *v, size_t n);

/* W->id and created_ms are filled in. */
int sbx_store_webhook_create (struct sbx_store *st, struct sbx_webhook *w, struct sbx_err *err);
/* ENOENT unless ID exists and belongs to ORG_ID. */
int sbx_store_webhook_get (struct sbx_store *st, const char *org_id, const char *id, struct sbx_webhook *w,
                           struct sbx_err *err);
int sbx_store_webhook_list (struct sbx_store *st, const char *org_id, struct sbx_webhook **v, size_t *n,
                            struct sbx_err *err);
/* Replace name, url, enabled, events and secret of W (same id and org);
   a NULL string or events list keeps the stored value. */
int sbx_store_webhook_update (struct sbx_store *st, const struct sbx_webhook *w, struct sbx_err *err);
/* Deletes the webhook and its pending deliveries. */
int sbx_store_webhook_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err);

/* ---- deliveries ---- */

enum sbx_delivery_state { SBX_DELIVERY_PENDING, SBX_DELIVERY_DELIVERED, SBX_DELIVERY_FAILED };

struct sbx_delivery {
  int64_t id;
  char webhook_id[SBX_STORE_ID_MAX];
  char event_id[SBX_STORE_ID_MAX];
  enum sbx_delivery_state state;
  uint32_t attempts;           /* attempts made so far */
  int64_t next_ms;             /* when the next attempt is due */
  int last_status;             /* HTTP status of the last attempt, 0 if none */
  char *last_error;
  int64_t created_ms, updated_ms;
};

void sbx_delivery_free (struct sbx_delivery *d);
void sbx_deliveries_free (struct sbx_delivery *v, size_t n);

/* The next delivery to attempt at NOW_MS: a pending delivery that is due
   and is the oldest pending one of its webhook (a webhook receives its
   events in order: a later event waits while an earlier one is retried).
   Returns 1 and fills D, W and EV, or 0 when nothing is due.  *NEXT_DUE_MS
   (may be NULL) gets the earliest future due time, or 0 if none. */
int sbx_store_delivery_next (struct sbx_store *st, int64_t now_ms, struct sbx_delivery *d, struct sbx_webhook *w,
                             struct sbx_event *ev, int64_t *next_due_ms, struct sbx_err *err);
/* Record an attempt: STATUS the HTTP status (0 when there was no answer),
   ERROR a short text or NULL.  NEXT_MS > 0 keeps it pending for a retry at
   that time; NEXT_MS == 0 ends it (delivered when DELIVERED, else failed). */
int sbx_store_delivery_record (struct sbx_store *st, int64_t id, int status, const char *error, bool delivered,
                               int64_t next_ms, struct sbx_err *err);
/* Deliveries of one webhook of ORG, oldest first. */
int sbx_store_delivery_list (struct sbx_store *st, const char *org_id, const char *webhook_id,
                             struct sbx_delivery **v, size_t *n, struct sbx_err *err);

/* ---- captures: checkpoints of a workspace and kept artifacts (seed 004;
   checkpoints.c keeps their content in STATE/captures/ID) ---- */

struct sbx_saved {
  char id[SBX_STORE_ID_MAX];         /* "ckpt_..." or "art_..." */
  char org_id[SBX_STORE_ID_MAX];
  char sandbox_id[SBX_STORE_ID_MAX]; /* the sandbox it was taken of */
  char kind[16];                     /* checkpoint, artifacts */
  char prefix[128];                  /* artifacts: the artifactPrefix, else "" */
  int64_t created_ms;
  uint64_t size_bytes;               /* the regular files' bytes */
  uint32_t files;                    /* entries (files, directories, symlinks) */
};

/* One entry of a capture, PATH relative to the captured directory. */
struct sbx_saved_file {
  uint32_t blob;                     /* a regular file's content: STATE/captures/ID/BLOB; 0: none */
  char *path;
  char *link;                        /* a symlink's target (never followed), else NULL */
  uint32_t type;                     /* enum sbx_file_type */
  uint64_t size;
  uint32_t mode, uid, gid;           /* as inside the sandbox */
  int64_t mtime_ms;
};

void sbx_saved_files_free (struct sbx_saved_file *v, size_t n);

/* Record capture C and its N entries in one transaction, unless C's size
   would take its organisation past ORG_QUOTA bytes (0: no quota): EDQUOT. */
int sbx_store_saved_add (struct sbx_store *st, const struct sbx_saved *c, const struct sbx_saved_file *files,
                           size_t n, uint64_t org_quota, struct sbx_err *err);
/* ENOENT when unknown. */
int sbx_store_saved_get (struct sbx_store *st, const char *id, struct sbx_saved *c, struct sbx_err *err);
/* Newest first; ORG_ID, KIND, SANDBOX_ID NULL: any. */
int sbx_store_saved_list (struct sbx_store *st, const char *org_id, const char *kind, const char *sandbox_id,
                            struct sbx_saved **v, size_t *n, struct sbx_err *err);
/* The entries of capture ID, by path (a directory before what it holds). */
int sbx_store_saved_files (struct sbx_store *st, const char *id, struct sbx_saved_file **v, size_t *n,
                             struct sbx_err *err);
/* The entry PATH of capture ID; ENOENT when there is none. */
int sbx_store_saved_file (struct sbx_store *st, const char *id, const char *path, struct sbx_saved_file *f,
                            struct sbx_err *err);
/* Delete capture ID of ORG_ID (NULL: of anyone) and its entries; ENOENT
   when there is none. */
int sbx_store_saved_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err);
/* The bytes ORG_ID's captures take. */
int sbx_store_saved_used (struct sbx_store *st, const char *org_id, uint64_t *bytes, struct sbx_err *err);

/* What a sandbox keeps when it ends. */
struct sbx_storage {
  bool keep_workspace;
  bool keep_artifacts;
  char prefix[128];
};
int sbx_store_storage_put (struct sbx_store *st, const char *sandbox_id, const struct sbx_storage *sto,
                           struct sbx_err *err);
/* ENOENT when the sandbox has no settings (it keeps nothing asked). */
int sbx_store_storage_get (struct sbx_store *st, const char *sandbox_id, struct sbx_storage *sto, struct sbx_err *err);

/* Who may reach a sandbox's ports by host name (sbxd serve --domain):
   anyone (PUBLIC), or only with its traffic token; MASK_HOST, when not
   empty, is the Host the sandbox's servers are shown ("${PORT}" stands
   for the port). */
struct sbx_ingress {
  bool public;
  char mask_host[256];
  bool stored;         /* from sbx_store_ingress_get: the sandbox has settings */
};
int sbx_store_ingress_put (struct sbx_store *st, const char *sandbox_id, const struct sbx_ingress *in,
                           struct sbx_err *err);
/* A sandbox without settings is public, unmasked. */
int sbx_store_ingress_get (struct sbx_store *st, const char *sandbox_id, struct sbx_ingress *in, struct sbx_err *err);

/* ---- volumes mounted by sandboxes (volumes.c) ---- */

struct sbx_volume_mount_rec {
  char volume_id[SBX_STORE_ID_MAX];
  char name[128];                    /* the volume's, "" once it is deleted */
  char path[1024];
};
int sbx_store_volume_mount_put (struct sbx_store *st, const char *sandbox_id, const char *volume_id,
                                const char *path, struct sbx_err *err);
/* The volumes SANDBOX_ID mounts, by path (free *V). */
int sbx_store_volume_mounts (struct sbx_store *st, const char *sandbox_id, struct sbx_volume_mount_rec **v,
                             size_t *n, struct sbx_err *err);
/* A running or paused sandbox that mounts VOLUME_ID into SANDBOX_ID, ""
   when none does. */
int sbx_store_volume_busy (struct sbx_store *st, const char *volume_id, char sandbox_id[SBX_STORE_ID_MAX],
                           struct sbx_err *err);
int sbx_store_volume_mounts_forget (struct sbx_store *st, const char *volume_id, struct sbx_err *err);

/* ---- templates built through E2B's build API (builds.c) ---- */

#define SBX_TMPL_NAME_MAX 128
#define SBX_BUILD_ID_MAX 40

struct sbx_tmpl_rec {
  char id[SBX_STORE_ID_MAX];         /* "tpl_..." */
  char org_id[SBX_STORE_ID_MAX];
  char name[SBX_TMPL_NAME_MAX];      /* unique in its organisation */
  bool is_public;                    /* other organisations may start it by id */
  uint32_t cpu_count, memory_mb;
  int64_t created_ms, updated_ms;
  uint32_t build_count;
};

struct sbx_build_rec {
  char id[SBX_BUILD_ID_MAX];         /* a UUID */
  char template_id[SBX_STORE_ID_MAX];
  char org_id[SBX_STORE_ID_MAX];
  char status[16];                   /* waiting, building, ready, error */
  char tree[64];                     /* the layer it made (a template name), once ready */
  char *reason;                      /* why it failed, or NULL */
  char step[16];                     /* the step that failed, or "" */
  char *tags_json;                   /* JSON array of the tags it gets when ready, or NULL */
  char *layers;                      /* the layers it made, each name followed by a newline, or NULL */
  uint32_t cpu_count, memory_mb;
  int64_t created_ms, updated_ms, finished_ms;
};

struct sbx_tag_rec {
  char tag[SBX_TMPL_NAME_MAX];
  char build_id[SBX_BUILD_ID_MAX];
  int64_t created_ms;
};

void sbx_build_rec_free (struct sbx_build_rec *b);
void sbx_build_recs_free (struct sbx_build_rec *v, size_t n);
int sbx_store_tmpl_put (struct sbx_store *st, const struct sbx_tmpl_rec *t, struct sbx_err *err);
/* ORG_ID's template named ID_OR_NAME, or the one of id ID_OR_NAME if it is
   ORG_ID's or public; ENOENT otherwise. */
int sbx_store_tmpl_get (struct sbx_store *st, const char *org_id, const char *id_or_name, struct sbx_tmpl_rec *t,
                        struct sbx_err *err);
int sbx_store_tmpl_list (struct sbx_store *st, const char *org_id, struct sbx_tmpl_rec **v, size_t *n,
                         struct sbx_err *err);
/* The template, its builds and its tags, in one transaction; ENOENT when
   it is not ORG_ID's. */
int sbx_store_tmpl_delete (struct sbx_store *st, const char *org_id, const char *id, struct sbx_err *err);
int sbx_store_build_put (struct sbx_store *st, const struct sbx_build_rec *b, struct sbx_err *err);
int sbx_store_build_get (struct sbx_store *st, const char *id, struct sbx_build_rec *b, struct sbx_err *err);
/* A template's builds, newest first. */
int sbx_store_build_list (struct sbx_store *st, const char *template_id, struct sbx_build_rec **v, size_t *n,
                          struct sbx_err *err);
/* Builds left waiting or building are recorded failed with REASON; returns
   how many. */
int sbx_store_build_fail_unfinished (struct sbx_store *st, const char *reason, int64_t now_ms, struct sbx_err *err);
/* How many builds of other templates than OTHER_THAN_TEMPLATE name TREE
   (as their tree or one of their layers). */
int sbx_store_build_tree_refs (struct sbx_store *st, const char *tree, const char *other_than_template, uint32_t *n,
                               struct sbx_err *err);
int sbx_store_tag_set (struct sbx_store *st, const char *template_id, const char *tag, const char *build_id,
                       int64_t now_ms, struct sbx_err *err);
/* ENOENT when the template has no such tag. */
int sbx_store_tag_delete (struct sbx_store *st, const char *template_id, const char *tag, struct sbx_err *err);
/* Oldest first. */
int sbx_store_tag_list (struct sbx_store *st, const char *template_id, struct sbx_tag_rec **v, size_t *n,
                        struct sbx_err *err);

#endif
