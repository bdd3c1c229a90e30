/*
 * fairshare.c - the CPU between organisations.
 *
 * Every sandbox has a cgroup of its own, side by side under one parent,
 * and the kernel shares the CPU among siblings by their weights.  With
 * equal weights an organisation running fifty busy sandboxes would take
 * fifty times the CPU of one running one.  So each sandbox weighs its
 * organisation's share divided by the organisation's live sandboxes: when
 * all want the CPU, every organisation gets the same, whatever the number
 * of its sandboxes.  (A cgroup level per organisation would do the same in
 * the kernel, but sandboxes are made ahead of time, before their owner is
 * known, and moving a running tree between cgroups is what v1 makes slow.)
 *
 * A worker thread does the weighing after each recorded change, a few
 * changes at a time: creates and destroys never wait for it.
 */
#include "fairshare.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../core/sandbox.h"
#include "store.h"

/* What one organisation's live sandboxes weigh together, in cgroup v2
   cpu.weight units: a lone sandbox weighs the most the kernel allows,
   fifty weigh 200 each. */
#define ORG_WEIGHT 10000u
/* Changes that come this close together are weighed once. */
#define COALESCE_MS 100

struct weighed {
  char id[SBX_STORE_ID_MAX];
  unsigned weight;
};

struct sbx_fairshare {
  struct sbx_store *store;
  struct sbx_engine *engine;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool kicked, stopping;
  struct weighed *last; /* the previous pass, sorted by id */
  size_t n_last;
};

unsigned
sbx_fairshare_weight (unsigned n)
{
  return ORG_WEIGHT / (n ? n : 1);
}

static int
cmp_rec_org (const void *a, const void *b)
{
  const struct sbx_sandbox_rec *x = a, *y = b;
  return strcmp (x->org_id, y->org_id);
}

static int
cmp_weighed (const void *a, const void *b)
{
  return strcmp (((const struct weighed *) a)->id, ((const struct weighed *) b)->id);
}

static unsigned
last_weight (struct sbx_fairshare *f, const char *id)
{
  struct weighed key;
  snprintf (key.id, sizeof key.id, "%s", id);
  struct weighed *w = f->last ? bsearch (&key, f->last, f->n_last, sizeof *w, cmp_weighed) : NULL;
  return w ? w->weight : 0;
}

/* One pass: every running or paused sandbox gets its organisation's share
   divided by the organisation's count; only changed weights are written. */
static void
weigh (struct sbx_fairshare *f)
{
  struct sbx_sandbox_rec *recs;
  size_t n;
  struct sbx_err err;
  if (sbx_store_sandbox_list_live (f->store, &recs, &n, &err) < 0)
    {
      sbx_log_fields (SBX_LOG_WARN, "cpu fair share", "error", err.msg, NULL);
      return;
    }
  qsort (recs, n, sizeof *recs, cmp_rec_org);
  struct weighed *now = calloc (n ? n : 1, sizeof *now);
  size_t k = 0;
  for (size_t i = 0; i < n && now;)
    {
      size_t j = i;
      while (j < n && strcmp (recs[j].org_id, recs[i].org_id) == 0)
        j++;
      unsigned w = sbx_fairshare_weight ((unsigned) (j - i));
      for (; i < j; i++)
        {
          if (strcmp (recs[i].status, "running") != 0 && strcmp (recs[i].status, "paused") != 0)
            continue;
          unsigned got = w;
          if (last_weight (f, recs[i].id) != w && sbx_set_cpu_weight (f->engine, recs[i].id, w, &err) < 0)
            {
              got = 0; /* tried again at the next pass */
              if (sbx_err_kind (&err) != SBX_E_NOT_FOUND)
                sbx_log_fields (SBX_LOG_DEBUG, "cpu fair share", "sandbox", recs[i].id, "error", err.msg, NULL);
            }
          snprintf (now[k].id, sizeof now[k].id, "%s", recs[i].id);
          now[k++].weight = got;
        }
    }
  for (size_t i = 0; i < n; i++)
    sbx_sandbox_rec_free (&recs[i]);
  free (recs);
  if (now == NULL)
    return;
  qsort (now, k, sizeof *now, cmp_weighed);
  free (f->last);
  f->last = now;
  f->n_last = k;
}

static void *
worker_main (void *arg)
{
  pthread_setname_np (pthread_self (), "sbx-fairshare");
  struct sbx_fairshare *f = arg;
  pthread_mutex_lock (&f->lock);
  for (;;)
    {
      while (!f->kicked && !f->stopping)
        pthread_cond_wait (&f->cond, &f->lock);
      if (f->stopping)
        break;
      pthread_mutex_unlock (&f->lock);
      struct timespec ts = { 0, COALESCE_MS * 1000000L };
      nanosleep (&ts, NULL);
      pthread_mutex_lock (&f->lock);
      f->kicked = false;
      pthread_mutex_unlock (&f->lock);
      weigh (f);
      pthread_mutex_lock (&f->lock);
    }
  pthread_mutex_unlock (&f->lock);
  return NULL;
}

int
sbx_fairshare_start (struct sbx_store *store, struct sbx_engine *engine, struct sbx_fairshare **out,
                     struct sbx_err *err)
{
  struct sbx_fairshare *f = calloc (1, sizeof *f);
  if (f == NULL)
    return sbx_fail (err, ENOMEM, "cpu fair share");
  f->store = store;
  f->engine = engine;
  f->kicked = true; /* the sandboxes a restart found */
  pthread_mutex_init (&f->lock, NULL);
  pthread_cond_init (&f->cond, NULL);
  int e = pthread_create (&f->thread, NULL, worker_main, f);
  if (e != 0)
    {
      pthread_cond_destroy (&f->cond);
      pthread_mutex_destroy (&f->lock);
      free (f);
      return sbx_fail (err, e, "cpu fair share thread");
    }
  *out = f;
  return 0;
}

void
sbx_fairshare_kick (struct sbx_fairshare *f)
{
  if (f == NULL)
    return;
  pthread_mutex_lock (&f->lock);
  f->kicked = true;
  pthread_cond_signal (&f->cond);
  pthread_mutex_unlock (&f->lock);
}

void
sbx_fairshare_stop (struct sbx_fairshare *f)
{
  if (f == NULL)
    return;
  pthread_mutex_lock (&f->lock);
  f->stopping = true;
  pthread_cond_signal (&f->cond);
  pthread_mutex_unlock (&f->lock);
  pthread_join (f->thread, NULL);
  pthread_cond_destroy (&f->cond);
  pthread_mutex_destroy (&f->lock);
  free (f->last);
  free (f);
}
