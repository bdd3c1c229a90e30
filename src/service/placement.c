/*
 * placement.c - the machine's capacity for running sandboxes, and the one
 * queue of creates and resumes waiting for it (seed 004's "queued" and
 * "assigning"), with the steps a sandbox goes through on the way
 * ("pausing", "ending").
 *
 * The operator sets the capacity (`sbxd serve --capacity-sandboxes N
 * --capacity-memory-mb MB`): how many sandboxes may run at once and how
 * much memory their limits may promise together.  By default the count
 * has no cap and memory is what the host can hold: the head of the queue
 * waits while the host's available memory (MemAvailable) is below 5% of
 * its memory (at least 256 MiB).  A sandbox holds a place while it runs;
 * pausing gives the place back (a frozen sandbox uses no CPU; its pages
 * stay resident, which the memory count then leaves out) and resuming
 * asks for one again.  An empty machine always takes the head, so a
 * sandbox larger than the capacity does not wait forever.
 *
 * One FIFO queue, nothing overtakes:
 * - seed 004's creates and resumes are jobs: the request is answered at
 *   once (queued), and when the job reaches the head and fits, a thread
 *   of its own runs it (assigning), at most SBX_PLACE_ASSIGN_MAX at once;
 *   a create that finds nothing waiting and room free runs at once
 *   instead, with a spare sandbox (create_now);
 * - every other create (and E2B's resume) is a ticket its request thread
 *   waits on in the same queue, at most SBX_PLACE_WAIT_MS, then fails with
 *   SBX_E_UNAVAILABLE (503): a handler thread is not held longer.
 * The organisation's concurrency limit is something else: it is taken
 * (sbx_store_sandbox_reserve) before anything enters the queue, so queued
 * sandboxes count, and past it a create fails at once (429).
 *
 * The queue lives in memory.  A daemon that stops leaves queued creates
 * as "creating" records, which the next start records as lost (seed 004
 * shows them failed).  A thread re-checks the head every second, since
 * the host's memory frees without telling anyone.
 */
#include "placement.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "checkpoints.h"

enum waiter_kind { W_TICKET, W_CREATE, W_RESUME };

/* One entry of the queue: a request thread's ticket (on its stack) or a
   job (seed 004's create or resume, owned by the queue, then by its
   thread). */
struct waiter {
  enum waiter_kind kind;
  char id[SBX_STORE_ID_MAX]; /* jobs: the sandbox */
  uint32_t memory_mb;
  uint64_t ticket;           /* its place, once given */
  bool granted;
  bool cancel;               /* an assigning create was ended meanwhile */
  /* a create's copy of what it was asked */
  struct sbx_service *svc;
  struct sbx_org org;
  struct sbx_sandbox_spec spec;
  char **env;
  uint32_t live;
  struct waiter *next;
};

struct holder {
  char id[SBX_STORE_ID_MAX]; /* "" while its create runs */
  uint64_t ticket;
  uint32_t memory_mb;
};

/* A sandbox between two states: pausing or ending. */
struct step {
  char id[SBX_STORE_ID_MAX];
  const char *name;
  struct step *next;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;       /* a ticket was granted, a job or an end finished, stop */
  uint32_t cap_sandboxes;    /* 0: no cap */
  uint32_t cap_memory_mb;    /* 0: what the host can hold */
  struct holder *held;
  size_t n_held, alloc_held;
  uint64_t held_mb;
  uint64_t next_ticket;
  struct waiter *head, *tail; /* the queue */
  struct waiter *running;     /* jobs being assigned */
  unsigned n_running, n_ending;
  struct step *steps;
  bool started, stop;
  bool room;                  /* host_has_room_locked's last answer */
  uint64_t room_ns;           /* when it was read (monotonic), 0: never */
  pthread_t thread;
} P = { .lock = PTHREAD_MUTEX_INITIALIZER, .next_ticket = 1 };

static pthread_once_t place_once = PTHREAD_ONCE_INIT;

/* The condition waits on the monotonic clock: a change of the wall clock
   does not stretch a bounded wait. */
static void
place_init (void)
{
  pthread_condattr_t a;
  pthread_condattr_init (&a);
  pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
  pthread_cond_init (&P.cond, &a);
  pthread_condattr_destroy (&a);
}

static void
place_lock (void)
{
  pthread_once (&place_once, place_init);
  pthread_mutex_lock (&P.lock);
}

/* ---- places ---- */

static struct holder *
holder_find_locked (const char *id, uint64_t ticket)
{
  for (size_t i = 0; i < P.n_held; i++)
    if ((ticket && P.held[i].ticket == ticket) || (id && *id && strcmp (P.held[i].id, id) == 0))
      return &P.held[i];
  return NULL;
}

static void
holder_drop_locked (struct holder *h)
{
  P.held_mb -= h->memory_mb;
  *h = P.held[--P.n_held];
}

/* A new place for ID ("" for a create); its ticket, 0 when out of memory. */
static uint64_t
holder_add_locked (const char *id, uint32_t memory_mb)
{
  struct holder *h = sbx_grow (&P.held, &P.n_held, &P.alloc_held, sizeof *P.held);
  if (h == NULL)
    return 0;
  snprintf (h->id, sizeof h->id, "%s", id);
  h->ticket = P.next_ticket++;
  h->memory_mb = memory_mb;
  P.held_mb += memory_mb;
  return h->ticket;
}

/* Whether the host's available memory is above its floor (5% of it, at
   least 256 MiB), from /proc/meminfo. */
static bool
host_has_room (void)
{
  FILE *f = fopen ("/proc/meminfo", "re");
  if (f == NULL)
    return true;
  char line[128];
  unsigned long long total = 0, avail = 0, v;
  while (fgets (line, sizeof line, f))
    if (sscanf (line, "MemTotal: %llu kB", &v) == 1)
      total = v;
    else if (sscanf (line, "MemAvailable: %llu kB", &v) == 1)
      avail = v;
  fclose (f);
  unsigned long long floor_kb = total / 20 > (256ull << 10) ? total / 20 : 256ull << 10;
  return total == 0 || avail >= floor_kb;
}

/* host_has_room, read at most every ROOM_TTL_NS: the head of the queue
   asks for every create, and the read took 40 to 70 microseconds of a
   create's 0.8 ms on a busy machine (8 alone); what the sandboxes use
   does not move much in that time, and one waiting asks again within a
   second (sbx_place_admit). */
#define ROOM_TTL_NS (100 * 1000000ULL)

static bool
host_has_room_locked (void)
{
  uint64_t now = sbx_now_ns ();
  if (P.room_ns == 0 || now - P.room_ns >= ROOM_TTL_NS)
    {
      P.room = host_has_room ();
      P.room_ns = now;
    }
  return P.room;
}

static bool
fits_locked (const struct waiter *w)
{
  if (w->kind != W_TICKET && P.n_running >= SBX_PLACE_ASSIGN_MAX)
    return false;
  if (P.n_held == 0)
    return true;
  if (P.cap_sandboxes && P.n_held >= P.cap_sandboxes)
    return false;
  if (P.cap_memory_mb)
    return P.held_mb + w->memory_mb <= P.cap_memory_mb;
  return host_has_room_locked ();
}

/* ---- the queue ---- */

static void
enqueue_locked (struct waiter *w)
{
  w->next = NULL;
  if (P.tail)
    P.tail->next = w;
  else
    P.head = w;
  P.tail = w;
}

static bool
unqueue_locked (struct waiter *w)
{
  struct waiter *prev = NULL;
  for (struct waiter *x = P.head; x; prev = x, x = x->next)
    if (x == w)
      {
        if (prev)
          prev->next = w->next;
        else
          P.head = w->next;
        if (P.tail == w)
          P.tail = prev;
        w->next = NULL;
        return true;
      }
  return false;
}

static struct waiter *
job_find (struct waiter *list, const char *id)
{
  for (struct waiter *w = list; w; w = w->next)
    if (w->kind != W_TICKET && strcmp (w->id, id) == 0)
      return w;
  return NULL;
}

static void
job_free (struct waiter *w)
{
  if (w == NULL)
    return;
  free ((char *) w->spec.template_name);
  free ((char *) w->spec.metadata_json);
  free ((char *) w->spec.checkpoint_id);
  free ((char *) w->spec.artifact_prefix);
  sbx_strv_free (w->env);
  free (w);
}

static void *job_main (void *arg);

/* Give places to the head of the queue while it fits. */
static void
pump_locked (void)
{
  while (P.head && !P.stop && fits_locked (P.head))
    {
      struct waiter *w = P.head;
      /* a resume whose sandbox runs again already (E2B resumed it) needs no second place */
      bool have = w->kind == W_RESUME && holder_find_locked (w->id, 0) != NULL;
      uint64_t t = have ? 0 : holder_add_locked (w->kind == W_RESUME ? w->id : "", w->memory_mb);
      if (!have && t == 0)
        return; /* out of memory: the next pump tries again */
      unqueue_locked (w);
      w->ticket = t;
      if (w->kind == W_TICKET)
        {
          w->granted = true;
          pthread_cond_broadcast (&P.cond);
          continue;
        }
      w->next = P.running;
      P.running = w;
      P.n_running++;
      if (!sbx_start_detached (job_main, w))
        {
          /* no thread now: back to the head, tried again in a second */
          P.running = w->next;
          P.n_running--;
          struct holder *h = t ? holder_find_locked (NULL, t) : NULL;
          if (h)
            holder_drop_locked (h);
          w->next = P.head;
          P.head = w;
          if (P.tail == NULL)
            P.tail = w;
          return;
        }
    }
}

int
sbx_place_admit (uint32_t memory_mb, uint32_t wait_ms, uint64_t *ticket, struct sbx_err *err)
{
  struct waiter w = { .kind = W_TICKET, .memory_mb = memory_mb };
  struct timespec deadline;
  clock_gettime (CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += wait_ms / 1000;
  deadline.tv_nsec += (long) (wait_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L)
    {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
  place_lock ();
  enqueue_locked (&w);
  pump_locked ();
  while (!w.granted)
    {
      struct timespec now, until;
      clock_gettime (CLOCK_MONOTONIC, &now);
      if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)
          || P.stop)
        break;
      until = now;
      until.tv_sec++;
      if (until.tv_sec > deadline.tv_sec || (until.tv_sec == deadline.tv_sec && until.tv_nsec > deadline.tv_nsec))
        until = deadline;
      pthread_cond_timedwait (&P.cond, &P.lock, &until);
      if (!w.granted)
        pump_locked ();
    }
  if (!w.granted)
    {
      unqueue_locked (&w);
      pump_locked (); /* what waited behind it may fit */
      size_t n = P.n_held;
      pthread_mutex_unlock (&P.lock);
      return sbx_failk (err, SBX_E_UNAVAILABLE,
                        "this machine is at capacity (%zu sandboxes running); try again later", n);
    }
  *ticket = w.ticket;
  pthread_mutex_unlock (&P.lock);
  return 0;
}

void
sbx_place_bind (uint64_t ticket, const char *id, uint32_t memory_mb)
{
  place_lock ();
  struct holder *h = holder_find_locked (NULL, ticket);
  if (h && holder_find_locked (id, 0))
    holder_drop_locked (h); /* it holds one already (a resume reported first) */
  else if (h)
    {
      snprintf (h->id, sizeof h->id, "%s", id);
      P.held_mb = P.held_mb - h->memory_mb + memory_mb;
      h->memory_mb = memory_mb;
    }
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
}

void
sbx_place_cancel (uint64_t ticket)
{
  place_lock ();
  struct holder *h = ticket ? holder_find_locked (NULL, ticket) : NULL;
  if (h)
    holder_drop_locked (h);
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
}

void
sbx_place_hold (const char *id, uint32_t memory_mb)
{
  place_lock ();
  if (holder_find_locked (id, 0) == NULL)
    holder_add_locked (id, memory_mb);
  pthread_mutex_unlock (&P.lock);
}

void
sbx_place_resize (const char *id, uint32_t memory_mb)
{
  place_lock ();
  struct holder *h = holder_find_locked (id, 0);
  if (h)
    {
      P.held_mb = P.held_mb - h->memory_mb + memory_mb;
      h->memory_mb = memory_mb;
    }
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
}

void
sbx_place_release (const char *id)
{
  place_lock ();
  struct holder *h = holder_find_locked (id, 0);
  if (h)
    holder_drop_locked (h);
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
}

/* ---- steps ---- */

static struct step *
step_find_locked (const char *id)
{
  for (struct step *s = P.steps; s; s = s->next)
    if (strcmp (s->id, id) == 0)
      return s;
  return NULL;
}

/* Set ID's step to NAME (NULL: none); false when out of memory. */
static bool
step_set_locked (const char *id, const char *name)
{
  for (struct step **pp = &P.steps; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->id, id) == 0)
      {
        if (name)
          (*pp)->name = name;
        else
          {
            struct step *s = *pp;
            *pp = s->next;
            free (s);
          }
        return true;
      }
  if (name == NULL)
    return true;
  struct step *s = calloc (1, sizeof *s);
  if (s == NULL)
    return false;
  snprintf (s->id, sizeof s->id, "%s", id);
  s->name = name;
  s->next = P.steps;
  P.steps = s;
  return true;
}

void
sbx_place_ending (const char *id, bool ending)
{
  place_lock ();
  struct step *s = step_find_locked (id);
  if (ending)
    step_set_locked (id, "ending");
  else if (s && strcmp (s->name, "ending") == 0)
    step_set_locked (id, NULL);
  pthread_mutex_unlock (&P.lock);
}

/* ID's step NAME is over (unless another took its place). */
static void
step_clear (const char *id, const char *name)
{
  place_lock ();
  struct step *s = step_find_locked (id);
  if (s && strcmp (s->name, name) == 0)
    step_set_locked (id, NULL);
  pthread_mutex_unlock (&P.lock);
}

void
sbx_service_sandbox_phase (const char *id, char out[16])
{
  out[0] = '\0';
  place_lock ();
  struct step *s = step_find_locked (id);
  const char *name = s                         ? s->name
                     : job_find (P.running, id) ? "assigning"
                     : job_find (P.head, id)    ? "queued"
                                                : "";
  snprintf (out, 16, "%s", name);
  pthread_mutex_unlock (&P.lock);
}

/* ---- jobs ---- */

/* Record seed 004's create ID as failed: it never ran, so it takes no
   sandbox time (stopped when it was queued). */
static void
record_failed (struct sbx_service *svc, const char *id, const char *status, const char *reason)
{
  struct sbx_store *st = sbx_service_store (svc);
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (sbx_store_sandbox_get (st, id, &rec, &err) < 0)
    return;
  snprintf (rec.status, sizeof rec.status, "%s", status);
  snprintf (rec.stop_reason, sizeof rec.stop_reason, "%s", reason);
  rec.stopped_ms = rec.end_ms = rec.started_ms;
  if (sbx_store_sandbox_put (st, &rec, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "record sandbox", "sandbox", id, "error", err.msg, NULL);
  sbx_sandbox_rec_free (&rec);
}

static void *
job_main (void *arg)
{
  struct waiter *w = arg;
  struct sbx_engine *e = sbx_service_engine (w->svc);
  struct sbx_err err;
  if (w->kind == W_CREATE)
    {
      struct sbx_sandbox_rec rec;
      if (sbx_service_create_reserved (w->svc, &w->org, &w->spec, w->id, w->id, w->live, w->ticket, &rec, &err) < 0)
        {
          sbx_log_fields (SBX_LOG_WARN, "queued create failed", "sandbox", w->id, "error", err.msg, NULL);
          record_failed (w->svc, w->id, "error", "failed");
        }
      else
        sbx_sandbox_rec_free (&rec);
    }
  else
    {
      if (sbx_resume (e, w->id, &err) < 0 && sbx_err_kind (&err) != SBX_E_CONFLICT)
        {
          sbx_log_fields (SBX_LOG_WARN, "queued resume failed", "sandbox", w->id, "error", err.msg, NULL);
          sbx_place_release (w->id);
        }
    }
  place_lock ();
  for (struct waiter **pp = &P.running; *pp; pp = &(*pp)->next)
    if (*pp == w)
      {
        *pp = w->next;
        break;
      }
  P.n_running--;
  bool cancel = w->cancel;
  pump_locked ();
  pthread_cond_broadcast (&P.cond);
  pthread_mutex_unlock (&P.lock);
  if (cancel)
    {
      /* ended while it was being assigned */
      if (sbx_destroy (e, w->id, &err) < 0 && sbx_err_kind (&err) == SBX_E_NOT_FOUND)
        record_failed (w->svc, w->id, "stopped", "request");
      sbx_teardown_wait (e, w->id, SBX_ENDING_MS + 30000, &err);
      step_clear (w->id, "ending");
    }
  job_free (w);
  return NULL;
}

static char *
dup_or_null (const char *s, bool *ok)
{
  if (s == NULL)
    return NULL;
  char *d = strdup (s);
  if (d == NULL)
    *ok = false;
  return d;
}

/* Seed 004's create when nothing waits and the machine has room now: it
   runs on the request's thread and may take a spare sandbox, which a
   queued create cannot (its id is chosen before it starts, and a spare's
   is already its directory's, cgroups' and host name: about 20 ms more).
   The answer is the same; the sandbox is ready sooner.  1: created (REC),
   0: no room now (queue it), -1: failed (ERR). */
static int
create_now (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
            struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  place_lock ();
  bool waiting = P.head != NULL;
  pthread_mutex_unlock (&P.lock);
  if (waiting)
    return 0;
  struct sbx_store *st = sbx_service_store (svc);
  char rsv[SBX_STORE_ID_MAX];
  uint32_t live;
  if (sbx_store_sandbox_reserve (st, org->id, org->max_sandboxes, spec->template_name, rsv, &live, err) < 0)
    return -1;
  int warm = sbx_service_create_warm (svc, org, spec, rsv, live, rec, err);
  if (warm != 0)
    return warm;
  uint64_t ticket;
  struct sbx_err e2;
  uint32_t memory_mb = spec->limits.memory_mb ? spec->limits.memory_mb : SBX_PLACE_DEFAULT_MEMORY_MB;
  if (sbx_place_admit (memory_mb, 0, &ticket, &e2) < 0)
    {
      sbx_store_sandbox_record (st, rsv, NULL, NULL, &e2);
      return 0;
    }
  return sbx_service_create_reserved (svc, org, spec, rsv, NULL, live, ticket, rec, err) < 0 ? -1 : 1;
}

int
sbx_service_sandbox_enqueue (struct sbx_service *svc, const struct sbx_org *org,
                             const struct sbx_sandbox_spec *spec, struct sbx_sandbox_rec *rec, struct sbx_err *err)
{
  memset (rec, 0, sizeof *rec);
  if (spec->timeout_s > org->max_timeout_s)
    return sbx_failk (err, SBX_E_INVALID, "timeout must be at most %u seconds", org->max_timeout_s);
  if (spec->net || spec->n_fs_rules)
    return sbx_failk (err, SBX_E_INVALID, "a queued create takes no network policy or filesystem rules");
  /* what would fail the create later fails the request now */
  if (sbx_service_check_hours (svc, org, err) < 0)
    return -1;
  if (spec->checkpoint_id && *spec->checkpoint_id
      && sbx_service_checkpoint_check (svc, org, spec->checkpoint_id, err) < 0)
    return -1;
  /* a checkpoint's restore may take a while: that one always queues */
  if (!(spec->checkpoint_id && *spec->checkpoint_id))
    {
      int now = create_now (svc, org, spec, rec, err);
      if (now != 0)
        return now < 0 ? -1 : 0;
    }
  struct waiter *w = calloc (1, sizeof *w);
  if (w == NULL)
    return sbx_fail (err, ENOMEM, "queue a create");
  bool ok = true;
  w->kind = W_CREATE;
  w->svc = svc;
  w->org = *org;
  w->spec = *spec;
  w->memory_mb = spec->limits.memory_mb ? spec->limits.memory_mb : SBX_PLACE_DEFAULT_MEMORY_MB;
  w->spec.template_name = dup_or_null (spec->template_name, &ok);
  w->spec.metadata_json = dup_or_null (spec->metadata_json, &ok);
  w->spec.checkpoint_id = dup_or_null (spec->checkpoint_id, &ok);
  w->spec.artifact_prefix = dup_or_null (spec->artifact_prefix, &ok);
  w->spec.agent_id = w->spec.mode = NULL;
  size_t n_env = 0;
  while (spec->env && spec->env[n_env])
    n_env++;
  if (n_env && (w->env = calloc (n_env + 1, sizeof *w->env)) == NULL)
    ok = false;
  for (size_t i = 0; ok && i < n_env; i++)
    w->env[i] = dup_or_null (spec->env[i], &ok);
  w->spec.env = (const char *const *) w->env;
  if (!ok)
    {
      job_free (w);
      return sbx_fail (err, ENOMEM, "queue a create");
    }
  char id[SBX_ID_MAX];
  sbx_new_id (id);
  snprintf (w->id, sizeof w->id, "%s", id);
  struct sbx_store *st = sbx_service_store (svc);
  if (sbx_store_sandbox_reserve_id (st, org->id, org->max_sandboxes, spec->template_name, id, &w->live, err) < 0)
    {
      job_free (w);
      return -1;
    }
  /* the placeholder answers under the sandbox's id, with its metadata,
     from now on */
  snprintf (rec->id, sizeof rec->id, "%s", id);
  snprintf (rec->org_id, sizeof rec->org_id, "%s", org->id);
  snprintf (rec->template_id, sizeof rec->template_id, "%s", spec->template_name);
  snprintf (rec->status, sizeof rec->status, "creating");
  rec->started_ms = sbx_wall_ms ();
  rec->metadata_json = spec->metadata_json ? strdup (spec->metadata_json) : NULL;
  rec->memory_mb = w->memory_mb;
  struct sbx_err e2;
  if (sbx_store_sandbox_put (st, rec, err) < 0)
    {
      sbx_store_sandbox_record (st, id, NULL, NULL, &e2);
      sbx_sandbox_rec_free (rec);
      job_free (w);
      return -1;
    }
  place_lock ();
  enqueue_locked (w);
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
  return 0;
}

/* ORG's sandbox ID as recorded, with STATUS checked against WANT (NULL:
   any live one). */
static int
live_record (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_sandbox_rec *rec,
             struct sbx_err *err)
{
  if (sbx_service_sandbox_get (svc, org, id, rec, err) < 0)
    return -1;
  if (strcmp (rec->status, "stopped") == 0 || strcmp (rec->status, "error") == 0)
    {
      sbx_sandbox_rec_free (rec);
      return sbx_failk (err, SBX_E_STOPPED, "sandbox has ended");
    }
  return 0;
}

int
sbx_service_sandbox_pause (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (live_record (svc, org, id, &rec, err) < 0)
    return -1;
  bool running = strcmp (rec.status, "running") == 0, paused = strcmp (rec.status, "paused") == 0;
  sbx_sandbox_rec_free (&rec);
  place_lock ();
  struct step *s = step_find_locked (id);
  bool queued = job_find (P.head, id) || job_find (P.running, id);
  if (s || queued || !running)
    {
      pthread_mutex_unlock (&P.lock);
      if (paused && !s && !queued)
        return sbx_failk (err, SBX_E_PAUSED, "sandbox is already paused");
      return sbx_failk (err, SBX_E_CONFLICT, "sandbox is %s; it can be paused once it is ready",
                        s ? s->name : queued ? "not ready yet" : rec.status);
    }
  bool ok = step_set_locked (id, "pausing");
  pthread_mutex_unlock (&P.lock);
  if (!ok)
    return sbx_fail (err, ENOMEM, "pause");
  int r = sbx_pause (sbx_service_engine (svc), id, err);
  step_clear (id, "pausing");
  return r;
}

int
sbx_service_sandbox_resume (struct sbx_service *svc, const struct sbx_org *org, const char *id, bool queue,
                            struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (live_record (svc, org, id, &rec, err) < 0)
    return -1;
  bool paused = strcmp (rec.status, "paused") == 0;
  uint32_t memory_mb = rec.memory_mb ? rec.memory_mb : SBX_PLACE_DEFAULT_MEMORY_MB;
  sbx_sandbox_rec_free (&rec);
  if (paused && sbx_service_check_hours (svc, org, err) < 0)
    return -1;
  if (!queue)
    {
      if (!paused)
        return 0;
      uint64_t ticket;
      if (sbx_place_admit (memory_mb, SBX_PLACE_WAIT_MS, &ticket, err) < 0)
        return -1;
      if (sbx_resume (sbx_service_engine (svc), id, err) < 0)
        {
          sbx_place_cancel (ticket);
          return -1;
        }
      sbx_place_bind (ticket, id, memory_mb);
      return 0;
    }
  place_lock ();
  struct step *s = step_find_locked (id);
  bool queued = job_find (P.head, id) || job_find (P.running, id);
  if (s || queued || !paused)
    {
      pthread_mutex_unlock (&P.lock);
      if (queued || (!s && !paused))
        return 0; /* on its way, or running already */
      return sbx_failk (err, SBX_E_CONFLICT, "sandbox is %s", s->name);
    }
  struct waiter *w = calloc (1, sizeof *w);
  if (w == NULL)
    {
      pthread_mutex_unlock (&P.lock);
      return sbx_fail (err, ENOMEM, "queue a resume");
    }
  w->kind = W_RESUME;
  w->svc = svc;
  w->org = *org;
  w->memory_mb = memory_mb;
  snprintf (w->id, sizeof w->id, "%s", id);
  enqueue_locked (w);
  pump_locked ();
  pthread_mutex_unlock (&P.lock);
  return 0;
}

int
sbx_service_sandbox_auto_resume (struct sbx_service *svc, const char *id, struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (sbx_store_sandbox_get (sbx_service_store (svc), id, &rec, err) < 0)
    return -1;
  struct sbx_org org;
  int r = sbx_store_org_get_id (sbx_service_store (svc), rec.org_id, &org, err);
  sbx_sandbox_rec_free (&rec);
  return r < 0 ? -1 : sbx_service_sandbox_resume (svc, &org, id, false, err);
}

struct ender {
  struct sbx_service *svc;
  char id[SBX_STORE_ID_MAX];
};

static void *
end_main (void *arg)
{
  struct ender *en = arg;
  struct sbx_err err;
  struct sbx_engine *e = sbx_service_engine (en->svc);
  if (sbx_service_destroy (en->svc, en->id, &err) < 0 && sbx_err_kind (&err) != SBX_E_STOPPED)
    sbx_log_fields (SBX_LOG_WARN, "end sandbox", "sandbox", en->id, "error", err.msg, NULL);
  /* `ending` lasts until its teardown is done: its files are kept
     (the ending hook) before seed 004 says `ended` */
  sbx_teardown_wait (e, en->id, SBX_ENDING_MS + 30000, &err);
  place_lock ();
  step_set_locked (en->id, NULL);
  P.n_ending--;
  pthread_cond_broadcast (&P.cond);
  pthread_mutex_unlock (&P.lock);
  free (en);
  return NULL;
}

int
sbx_service_sandbox_end (struct sbx_service *svc, const struct sbx_org *org, const char *id, struct sbx_err *err)
{
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_get (svc, org, id, &rec, err) < 0)
    return -1;
  bool ended = strcmp (rec.status, "stopped") == 0 || strcmp (rec.status, "error") == 0;
  sbx_sandbox_rec_free (&rec);
  if (ended)
    return 0;
  struct ender *en = calloc (1, sizeof *en);
  if (en == NULL)
    return sbx_fail (err, ENOMEM, "end sandbox");
  en->svc = svc;
  snprintf (en->id, sizeof en->id, "%s", id);
  place_lock ();
  struct waiter *w = job_find (P.head, id);
  if (w)
    unqueue_locked (w);
  struct waiter *assigning = job_find (P.running, id);
  struct step *s = step_find_locked (id);
  if ((s && strcmp (s->name, "ending") == 0) || (w && w->kind == W_CREATE))
    {
      /* ending already, or never started: nothing to destroy */
      pump_locked ();
      pthread_mutex_unlock (&P.lock);
      free (en);
      if (w)
        record_failed (svc, id, "stopped", "request");
      job_free (w);
      return 0;
    }
  job_free (w); /* a queued resume: the paused sandbox is destroyed */
  if (!step_set_locked (id, "ending"))
    {
      pthread_mutex_unlock (&P.lock);
      free (en);
      return sbx_fail (err, ENOMEM, "end sandbox");
    }
  if (assigning && assigning->kind == W_CREATE)
    {
      /* its job destroys it once made */
      assigning->cancel = true;
      pthread_mutex_unlock (&P.lock);
      free (en);
      return 0;
    }
  P.n_ending++;
  pthread_mutex_unlock (&P.lock);
  if (!sbx_start_detached (end_main, en))
    end_main (en);
  return 0;
}

/* ---- the re-checking thread ---- */

static void *
place_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-place");
  (void) arg;
  place_lock ();
  while (!P.stop)
    {
      pump_locked ();
      struct timespec t;
      clock_gettime (CLOCK_MONOTONIC, &t);
      t.tv_sec++;
      pthread_cond_timedwait (&P.cond, &P.lock, &t);
    }
  pthread_mutex_unlock (&P.lock);
  return NULL;
}

int
sbx_service_placement_start (struct sbx_service *svc, const struct sbx_capacity *cap, struct sbx_err *err)
{
  (void) svc;
  place_lock ();
  P.cap_sandboxes = cap->sandboxes;
  P.cap_memory_mb = cap->memory_mb;
  P.stop = false;
  int r = P.started ? 0 : pthread_create (&P.thread, NULL, place_main, NULL);
  if (r == 0)
    P.started = true;
  pthread_mutex_unlock (&P.lock);
  if (r != 0)
    return sbx_fail (err, r, "start the placement thread");
  char n[16], mb[16];
  snprintf (n, sizeof n, "%u", cap->sandboxes);
  snprintf (mb, sizeof mb, "%u", cap->memory_mb);
  sbx_log_fields (SBX_LOG_INFO, "capacity", "sandboxes", cap->sandboxes ? n : "no cap", "memory_mb",
                  cap->memory_mb ? mb : "what the host can hold", NULL);
  return 0;
}

void
sbx_service_placement_stop (void)
{
  place_lock ();
  P.stop = true;
  pthread_cond_broadcast (&P.cond);
  bool started = P.started;
  P.started = false;
  pthread_mutex_unlock (&P.lock);
  if (started)
    pthread_join (P.thread, NULL);
  /* creates, resumes and ends under way use the engine: wait for them */
  place_lock ();
  while (P.n_running || P.n_ending)
    pthread_cond_wait (&P.cond, &P.lock);
  pthread_mutex_unlock (&P.lock);
}
