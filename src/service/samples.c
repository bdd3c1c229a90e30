/*
 * samples.c - the history of every sandbox's metrics.
 *
 * E2B samples each sandbox every 5 seconds and answers getMetrics({start,
 * end}) from that history.  Here one thread does it for all sandboxes: at
 * every interval it lists the engine's sandboxes and asks the core for
 * the numbers of each running one (sbx_get_metrics: its cgroup, v1, v2
 * or hybrid, and its disk), then appends them to that sandbox's ring.  A
 * thread per sandbox would cost a stack per sandbox for work that takes
 * microseconds; a pass over a thousand sandboxes reads a few files each.
 *
 * The rings live in memory, and in the store (store_samples.c) so that a
 * daemon restart keeps them: each pass writes its samples in one
 * transaction, and trims a full ring's sandbox to the ring's samples; at
 * start the rings are read back (E2B keeps its own a few days; the last
 * hour is what the SDK's callers look at).  Each holds at most SBX_SAMPLES_MAX samples of
 * sizeof (struct sbx_sample) bytes (80 on x86-64): 56 KiB per sandbox at
 * most, grown by doubling as the samples come, the oldest overwritten
 * once full.  A history is dropped when its sandbox ends (the service's
 * killed event), and any a pass no longer finds running or paused in
 * the engine goes at that pass.
 *
 * A pass reads a few cgroup files per sandbox, about 0.1 ms: at ten
 * thousand sandboxes a second each pass.  So the passes keep to a share
 * of one core (PASS_SHARE): after a pass of T, the next waits at least
 * T / PASS_SHARE, longer than the interval once there are thousands of
 * sandboxes; and the reading runs at the priority of bulk work
 * (sbx_thread_bulk), behind requests, the locked bookkeeping after it at
 * the normal one.
 *
 * A paused sandbox gets no samples (its processes are frozen; E2B's
 * paused sandboxes have none either), so its history has a gap; the
 * first sample after the resume averages its CPU over that gap.
 *
 * The histories are kept in an array sorted by id, under one mutex, and
 * found by a binary search: a linear one cost a comparison per live
 * sandbox for each sandbox of each pass, a fifth of a core at 3,500
 * sandboxes.  Nothing here holds the mutex while reading a cgroup.
 */
#include "samples.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/util.h"
#include "store_samples.h"

#define PASS_SHARE 0.05 /* of one core, at most, for the passes */

struct history {
  char id[SBX_ID_MAX];
  struct sbx_sample_ring ring;
  bool seen; /* by the current pass */
};

struct sbx_sampler {
  struct sbx_engine *engine;
  struct sbx_store *store; /* NULL: memory only */
  uint32_t interval_ms;
  pthread_t thread;
  pthread_mutex_t lock; /* everything below */
  pthread_cond_t cond;  /* on CLOCK_MONOTONIC */
  bool stopping;
  struct history *h;
  size_t n_h, cap_h;
};

/* Where ID is or would go in the sorted histories. */
static size_t
place (const struct sbx_sampler *s, const char *id, bool *found)
{
  size_t lo = 0, hi = s->n_h;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      int c = strcmp (s->h[mid].id, id);
      if (c == 0)
        {
          *found = true;
          return mid;
        }
      if (c < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
  *found = false;
  return lo;
}

static struct history *
find (struct sbx_sampler *s, const char *id)
{
  bool found;
  size_t i = place (s, id, &found);
  return found ? &s->h[i] : NULL;
}

static struct history *
find_or_add (struct sbx_sampler *s, const char *id)
{
  bool found;
  size_t at = place (s, id, &found);
  if (found)
    return &s->h[at];
  if (s->n_h == s->cap_h)
    {
      size_t cap = s->cap_h ? s->cap_h * 2 : 16;
      struct history *nh = realloc (s->h, cap * sizeof *nh);
      if (nh == NULL)
        return NULL;
      s->h = nh;
      s->cap_h = cap;
    }
  memmove (&s->h[at + 1], &s->h[at], (s->n_h - at) * sizeof *s->h);
  s->n_h++;
  struct history *h = &s->h[at];
  memset (h, 0, sizeof *h);
  snprintf (h->id, sizeof h->id, "%s", id);
  return h;
}

/* The history at I goes; the rest stay in order. */
static void
drop_at (struct sbx_sampler *s, size_t i)
{
  sbx_sample_ring_free (&s->h[i].ring);
  memmove (&s->h[i], &s->h[i + 1], (--s->n_h - i) * sizeof *s->h);
}

static int
take (struct sbx_sampler *s, const char *id, struct sbx_sample *sample, struct sbx_err *err)
{
  if (sbx_get_metrics (s->engine, id, &sample->m, err) < 0)
    return -1;
  sample->at_ms = sbx_wall_ms ();
  return 0;
}

/* Where sample_all collects what to write once the pass is done. */
struct batch {
  struct sbx_sample_row *rows;
  size_t n_rows;
  char (*gone)[SBX_ID_MAX];
  size_t n_gone;
};

/* Under the lock: H took SAMPLE; its row, trimming to the ring once full. */
static void
batch_row (struct batch *b, size_t cap, const struct history *h, const struct sbx_sample *sample)
{
  if (b->rows == NULL || b->n_rows >= cap)
    return;
  struct sbx_sample_row *w = &b->rows[b->n_rows++];
  snprintf (w->id, sizeof w->id, "%s", h->id);
  w->s = *sample;
  w->keep_from_ms = h->ring.n >= SBX_SAMPLES_MAX ? sbx_sample_ring_at (&h->ring, 0)->at_ms : 0;
}

static void
batch_write (struct sbx_sampler *s, struct batch *b)
{
  struct sbx_err err;
  if (s->store && sbx_store_samples_put (s->store, b->rows, b->n_rows, b->gone, b->n_gone, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot keep metrics samples", "error", err.msg, NULL);
  free (b->rows);
  free (b->gone);
}

/* One pass: a sample of every running sandbox; the histories of those no
   longer running or paused go. */
static void
sample_all (struct sbx_sampler *s)
{
  /* unmarked before the listing: a history a request starts meanwhile
     (ready) is marked, and its sandbox is listed or newer */
  pthread_mutex_lock (&s->lock);
  for (size_t i = 0; i < s->n_h; i++)
    s->h[i].seen = false;
  pthread_mutex_unlock (&s->lock);
  struct sbx_info *infos;
  size_t n;
  struct sbx_err err;
  if (sbx_list (s->engine, &infos, &n, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "metrics sampler", "error", err.msg, NULL);
      return;
    }
  /* without memory for the batch the pass still samples; the store
     misses this pass */
  struct batch b = { .rows = s->store && n ? calloc (n, sizeof *b.rows) : NULL };
  /* the reading first, at the bulk priority; the locks after, at the
     normal one (sbx_thread_hold_begin says why) */
  struct sbx_sample *got = n ? calloc (n, sizeof *got) : NULL;
  if (n && got == NULL)
    {
      /* this pass is skipped, the histories kept */
      free (b.rows);
      sbx_list_free (infos, n);
      return;
    }
  sbx_thread_bulk (true);
  for (size_t i = 0; i < n; i++)
    if (infos[i].state != SBX_RUNNING || take (s, infos[i].id, &got[i], &err) < 0)
      got[i].at_ms = -1;
  sbx_thread_bulk (false);
  for (size_t i = 0; i < n; i++)
    {
      enum sbx_state st = infos[i].state;
      struct sbx_sample sample = got[i];
      bool have = sample.at_ms >= 0;
      if (st != SBX_RUNNING && st != SBX_PAUSED)
        continue;
      pthread_mutex_lock (&s->lock);
      struct history *h = have ? find_or_add (s, infos[i].id) : find (s, infos[i].id);
      if (h)
        {
          h->seen = true;
          if (have)
            {
              size_t before = h->ring.n;
              int64_t newest = before ? sbx_sample_ring_at (&h->ring, before - 1)->at_ms : 0;
              sbx_sample_ring_push (&h->ring, &sample);
              if (h->ring.n > before || (h->ring.n && sbx_sample_ring_at (&h->ring, h->ring.n - 1)->at_ms != newest))
                batch_row (&b, n, h, &sample);
            }
        }
      pthread_mutex_unlock (&s->lock);
    }
  pthread_mutex_lock (&s->lock);
  size_t dropped = 0;
  for (size_t i = 0; i < s->n_h; i++)
    dropped += !s->h[i].seen;
  if (dropped && s->store)
    b.gone = calloc (dropped, sizeof *b.gone);
  /* the unseen go in one sweep that keeps the order */
  size_t kept = 0;
  for (size_t i = 0; i < s->n_h; i++)
    if (s->h[i].seen)
      s->h[kept++] = s->h[i];
    else
      {
        if (b.gone)
          snprintf (b.gone[b.n_gone++], SBX_ID_MAX, "%s", s->h[i].id);
        sbx_sample_ring_free (&s->h[i].ring);
      }
  s->n_h = kept;
  pthread_mutex_unlock (&s->lock);
  free (got);
  sbx_list_free (infos, n);
  batch_write (s, &b);
}

static void *
sampler_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-sampler");
  struct sbx_sampler *s = arg;
  uint64_t wait_ms = s->interval_ms;
  pthread_mutex_lock (&s->lock);
  while (!s->stopping)
    {
      struct timespec ts;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_sec += (time_t) (wait_ms / 1000);
      ts.tv_nsec += (long) (wait_ms % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L)
        {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
      while (!s->stopping && pthread_cond_timedwait (&s->cond, &s->lock, &ts) != ETIMEDOUT)
        ;
      if (s->stopping)
        break;
      pthread_mutex_unlock (&s->lock);
      uint64_t t0 = sbx_now_ns ();
      sample_all (s);
      uint64_t took_ms = (sbx_now_ns () - t0) / 1000000u;
      wait_ms = (uint64_t) ((double) took_ms / PASS_SHARE);
      if (wait_ms < s->interval_ms)
        wait_ms = s->interval_ms;
      pthread_mutex_lock (&s->lock);
    }
  pthread_mutex_unlock (&s->lock);
  return NULL;
}

/* A stored sample back into its ring, at start (no other thread yet). */
static int
load_one (void *ud, const char *id, const struct sbx_sample *sample, struct sbx_err *err)
{
  struct sbx_sampler *s = ud;
  struct history *h = find_or_add (s, id);
  if (h == NULL)
    return sbx_fail (err, ENOMEM, "metrics history");
  sbx_sample_ring_push (&h->ring, sample);
  return 0;
}

int
sbx_sampler_start (struct sbx_engine *engine, struct sbx_store *store, uint32_t interval_ms,
                   struct sbx_sampler **out, struct sbx_err *err)
{
  struct sbx_sampler *s = calloc (1, sizeof *s);
  if (s == NULL)
    return sbx_fail (err, ENOMEM, "metrics sampler");
  s->engine = engine;
  s->store = store;
  /* the histories of before a restart; those of sandboxes no longer there
     go at the first pass */
  struct sbx_err lerr;
  if (store && sbx_store_samples_each (store, load_one, s, &lerr) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot read the kept metrics samples", "error", lerr.msg, NULL);
  s->interval_ms = interval_ms ? interval_ms : SBX_SAMPLE_INTERVAL_MS;
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&s->cond, &ca);
  pthread_condattr_destroy (&ca);
  pthread_mutex_init (&s->lock, NULL);
  int e = pthread_create (&s->thread, NULL, sampler_main, s);
  if (e != 0)
    {
      pthread_cond_destroy (&s->cond);
      pthread_mutex_destroy (&s->lock);
      free (s);
      return sbx_fail (err, e, "metrics sampler thread");
    }
  *out = s;
  return 0;
}

void
sbx_sampler_stop (struct sbx_sampler *s)
{
  if (s == NULL)
    return;
  pthread_mutex_lock (&s->lock);
  s->stopping = true;
  pthread_cond_signal (&s->cond);
  pthread_mutex_unlock (&s->lock);
  pthread_join (s->thread, NULL);
  while (s->n_h)
    drop_at (s, s->n_h - 1);
  free (s->h);
  pthread_cond_destroy (&s->cond);
  pthread_mutex_destroy (&s->lock);
  free (s);
}

/* The stored samples of the sandbox named in UD (freed here). */
static void
forget_stored (struct sbx_store *st, void *ud)
{
  char (*gone)[SBX_ID_MAX] = ud;
  struct sbx_err err;
  if (sbx_store_samples_put (st, NULL, 0, gone, 1, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot drop metrics samples", "sandbox", gone[0], "error", err.msg, NULL);
  free (gone);
}

void
sbx_sampler_forget (struct sbx_sampler *s, const char *id)
{
  if (s == NULL)
    return;
  pthread_mutex_lock (&s->lock);
  bool found;
  size_t i = place (s, id, &found);
  if (found)
    drop_at (s, i);
  pthread_mutex_unlock (&s->lock);
  /* its stored samples go after the answer of the destroy that ends it */
  char (*gone)[SBX_ID_MAX] = s->store ? calloc (1, sizeof *gone) : NULL;
  if (gone)
    {
      snprintf (gone[0], SBX_ID_MAX, "%s", id);
      sbx_store_later (s->store, forget_stored, gone);
    }
}

/* Sandbox ID's state checked, and its first sample taken when it is
   running and has none yet. */
static int
ready (struct sbx_sampler *s, const char *id, struct sbx_err *err)
{
  struct sbx_info info;
  if (sbx_get_info (s->engine, id, &info, err) < 0)
    return -1;
  enum sbx_state st = info.state;
  sbx_info_free (&info);
  if (st == SBX_STOPPED || st == SBX_ERROR)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox is not running");
  if (st != SBX_RUNNING)
    return 0;
  pthread_mutex_lock (&s->lock);
  struct history *h = find (s, id);
  bool empty = h == NULL || h->ring.n == 0;
  pthread_mutex_unlock (&s->lock);
  if (!empty)
    return 0;
  struct sbx_sample sample;
  if (take (s, id, &sample, err) < 0)
    return -1;
  pthread_mutex_lock (&s->lock);
  h = find_or_add (s, id);
  struct batch b = { .rows = s->store ? calloc (1, sizeof *b.rows) : NULL };
  if (h)
    {
      h->seen = true;
      sbx_sample_ring_push (&h->ring, &sample);
      batch_row (&b, 1, h, &sample);
    }
  pthread_mutex_unlock (&s->lock);
  batch_write (s, &b);
  return 0;
}

int
sbx_sampler_window (struct sbx_sampler *s, const char *id, int64_t from_ms, int64_t to_ms,
                    struct sbx_sample **out, size_t *n, struct sbx_err *err)
{
  *out = NULL;
  *n = 0;
  if (ready (s, id, err) < 0)
    return -1;
  pthread_mutex_lock (&s->lock);
  struct history *h = find (s, id);
  size_t first = 0, count = h ? sbx_sample_ring_window (&h->ring, from_ms, to_ms, &first) : 0;
  if (count > 0)
    {
      *out = malloc (count * sizeof **out);
      if (*out == NULL)
        {
          pthread_mutex_unlock (&s->lock);
          return sbx_fail (err, ENOMEM, "metrics");
        }
      for (size_t i = 0; i < count; i++)
        (*out)[i] = *sbx_sample_ring_at (&h->ring, first + i);
      *n = count;
    }
  pthread_mutex_unlock (&s->lock);
  return 0;
}

int
sbx_sampler_latest (struct sbx_sampler *s, const char *id, struct sbx_sample *out, bool *found,
                    struct sbx_err *err)
{
  *found = false;
  if (ready (s, id, err) < 0)
    return -1;
  pthread_mutex_lock (&s->lock);
  struct history *h = find (s, id);
  if (h && h->ring.n > 0)
    {
      *out = *sbx_sample_ring_at (&h->ring, h->ring.n - 1);
      *found = true;
    }
  pthread_mutex_unlock (&s->lock);
  return 0;
}
