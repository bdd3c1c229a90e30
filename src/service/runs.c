/*
 * runs.c - runs: a piece of Python code executed in a sandbox, recorded
 * in the store from start to end (seed 002's POST /api/sandbox/:id/run).
 *
 * A container sandbox runs the code with the template's python3; a wasm
 * sandbox runs it in Pyodide on Node.js (templates/pyodide.spec), through
 * the runner at SBX_WASM_RUNNER.  The code goes to the interpreter's
 * standard input, so its size is not bounded by the kernel's argument
 * limit, only by SBX_RUN_CODE_MAX.
 *
 * Bounds: each output stream keeps what fits in SBX_RUN_OUTPUT_MAX bytes
 * once encoded for a JSON answer, within the daemon's output budget
 * (output.h; the rest is dropped and the run says truncated); at most SBX_RUN_ACTIVE_MAX runs execute
 * at once per sandbox and SBX_RUN_ASYNC_MAX asynchronous runs in the
 * daemon (one thread each); past these a run fails with SBX_E_LIMIT.
 *
 * The active-run counts live in memory; the records are the store's.  A
 * run still "running" in the store when the daemon starts was cut off by
 * the restart: its output is gone (nobody listened), so it is recorded as
 * failed with that reason (sbx_service_runs_recover).
 */
#include "service.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "output.h"

#define SBX_WASM_RUNNER "/opt/sbxd/wasm-run.mjs"

struct active {
  char sandbox_id[SBX_STORE_ID_MAX];
  unsigned n;
  struct active *next;
};

static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static struct active *active_list;
static unsigned async_running;

/* Count one more run of SANDBOX_ID (and one more async run when ASYNC);
   false at a bound. */
static bool
active_take (const char *sandbox_id, bool async)
{
  pthread_mutex_lock (&active_lock);
  struct active *a;
  for (a = active_list; a && strcmp (a->sandbox_id, sandbox_id) != 0; a = a->next)
    ;
  bool ok = (!async || async_running < SBX_RUN_ASYNC_MAX) && (a == NULL || a->n < SBX_RUN_ACTIVE_MAX);
  if (ok && a == NULL)
    {
      a = calloc (1, sizeof *a);
      if (a == NULL)
        ok = false;
      else
        {
          snprintf (a->sandbox_id, sizeof a->sandbox_id, "%s", sandbox_id);
          a->next = active_list;
          active_list = a;
        }
    }
  if (ok)
    {
      a->n++;
      if (async)
        async_running++;
    }
  pthread_mutex_unlock (&active_lock);
  return ok;
}

static void
active_drop (const char *sandbox_id, bool async)
{
  pthread_mutex_lock (&active_lock);
  for (struct active **pp = &active_list; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->sandbox_id, sandbox_id) == 0)
      {
        struct active *a = *pp;
        if (--a->n == 0)
          {
            *pp = a->next;
            free (a);
          }
        break;
      }
  if (async)
    async_running--;
  pthread_mutex_unlock (&active_lock);
}

unsigned
sbx_service_runs_active (const char *sandbox_id)
{
  unsigned n = 0;
  pthread_mutex_lock (&active_lock);
  for (struct active *a = active_list; a; a = a->next)
    if (strcmp (a->sandbox_id, sandbox_id) == 0)
      n = a->n;
  pthread_mutex_unlock (&active_lock);
  return n;
}

unsigned
sbx_service_runs_in_progress (void)
{
  unsigned n = 0;
  pthread_mutex_lock (&active_lock);
  for (struct active *a = active_list; a; a = a->next)
    n += a->n;
  pthread_mutex_unlock (&active_lock);
  return n;
}

/* ---- executing ---- */

struct job {
  struct sbx_service *svc;
  struct sbx_run_rec run;
  bool wasm, async;
  /* output as it comes, raw, bounded after encoding */
  struct sbx_capture out, err;
  uint32_t pid;
  bool ended;
  int exit_code, signal;
  bool timed_out;
  struct sbx_err input_err;
  bool input_failed;
};

static void
job_free (struct job *j)
{
  sbx_run_rec_free (&j->run);
  sbx_capture_free (&j->out);
  sbx_capture_free (&j->err);
  free (j);
}

static int
job_event (const struct sbx_proc_event *ev, void *ud)
{
  struct job *j = ud;
  switch (ev->kind)
    {
    case SBX_PROC_START:
      {
        j->pid = ev->pid;
        /* the code goes in on stdin, then stdin closes */
        struct sbx_engine *e = sbx_service_engine (j->svc);
        const char *code = j->run.code ? j->run.code : "";
        if (sbx_proc_input (e, j->run.sandbox_id, j->pid, code, strlen (code), &j->input_err) < 0
            || sbx_proc_close_stdin (e, j->run.sandbox_id, j->pid, &j->input_err) < 0)
          j->input_failed = true;
        return 0;
      }
    case SBX_PROC_STDOUT:
    case SBX_PROC_PTY:
      sbx_capture_add (&j->out, ev->data, ev->len);
      return 0;
    case SBX_PROC_STDERR:
      sbx_capture_add (&j->err, ev->data, ev->len);
      return 0;
    case SBX_PROC_KEEPALIVE:
      return 0;
    case SBX_PROC_END:
      j->ended = true;
      j->exit_code = ev->exit_code;
      j->signal = ev->signal;
      j->timed_out = ev->timed_out;
      return 0;
    }
  return 0;
}

/* Execute J's run to its end and record how it ended. */
static void
job_execute (struct job *j)
{
  struct sbx_engine *e = sbx_service_engine (j->svc);
  const char *py[] = { "python3", "-", NULL };
  const char *wasm[] = { "node", SBX_WASM_RUNNER, NULL };
  struct sbx_exec_opts o = { .argv = j->wasm ? wasm : py,
                             .cwd = "/workspace",
                             .stdin_open = true,
                             .tag = "sbxd-run",
                             .timeout_ms = j->run.timeout_s * 1000u };
  struct sbx_err err;
  int64_t t0 = sbx_wall_ms ();
  int r = sbx_service_exec (j->svc, j->run.sandbox_id, &o, job_event, j, &err);
  struct sbx_run_rec *run = &j->run;
  run->finished_ms = sbx_wall_ms ();
  if (run->finished_ms < t0)
    run->finished_ms = t0;
  free (run->stdout_text);
  free (run->stderr_text);
  sbx_capture_end (&j->out);
  sbx_capture_end (&j->err);
  run->stdout_truncated = j->out.truncated;
  run->stderr_truncated = j->err.truncated;
  run->stdout_text = sbx_capture_take (&j->out, NULL);
  run->stderr_text = sbx_capture_take (&j->err, NULL);
  if (r < 0 || !j->ended)
    {
      snprintf (run->status, sizeof run->status, "failed");
      run->exit_code = -1;
      struct sbx_info info;
      bool gone = sbx_get_info (e, run->sandbox_id, &info, &err) < 0 || info.state == SBX_STOPPED;
      if (gone)
        run->reason = strdup ("the sandbox was destroyed during the run");
      else
        {
          sbx_info_free (&info);
          run->reason = strdup (r < 0 ? err.msg : "the run ended without a status");
        }
    }
  else if (j->timed_out)
    {
      snprintf (run->status, sizeof run->status, "timeout");
      run->exit_code = -1;
      if (asprintf (&run->reason, "killed after its timeout of %u s", run->timeout_s) < 0)
        run->reason = NULL;
    }
  else
    {
      run->exit_code = j->signal ? 128 + (j->signal & 0x7f) : j->exit_code;
      snprintf (run->status, sizeof run->status, "%s", run->exit_code == 0 ? "completed" : "failed");
      if (j->input_failed)
        run->reason = strdup (j->input_err.msg);
    }
  if (sbx_store_run_finish (sbx_service_store (j->svc), run, &err) < 0)
    sbx_log_fields (SBX_LOG_ERROR, "record run", "run", run->id, "error", err.msg, NULL);
  sbx_log_fields (SBX_LOG_INFO, "run", "sandbox", run->sandbox_id, "run", run->id, "status", run->status, NULL);
}

static void *
job_main (void *arg)
{
  struct job *j = arg;
  job_execute (j);
  active_drop (j->run.sandbox_id, true);
  job_free (j);
  return NULL;
}

int
sbx_service_run (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_rec *sb,
                 const struct sbx_run_request *req, struct sbx_run_rec *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  if (strcmp (sb->org_id, org->id) != 0)
    return sbx_failk (err, SBX_E_NOT_FOUND, "sandbox not found");
  if (strcmp (sb->status, "running") != 0)
    return strcmp (sb->status, "paused") == 0 ? sbx_failk (err, SBX_E_PAUSED, "sandbox is paused")
                                                : sbx_failk (err, SBX_E_STOPPED, "sandbox is %s",
                                                             strcmp (sb->status, "stopped") == 0 ? "destroyed"
                                                                                                 : sb->status);
  if (req->code == NULL)
    return sbx_failk (err, SBX_E_INVALID, "code is required");
  if (strlen (req->code) > SBX_RUN_CODE_MAX)
    return sbx_failk (err, SBX_E_TOO_LARGE, "code is larger than %u bytes", SBX_RUN_CODE_MAX);
  if (!active_take (sb->id, req->async))
    return sbx_failk (err, SBX_E_LIMIT, "too many runs in progress (at most %u per sandbox, %u asynchronous)",
                      SBX_RUN_ACTIVE_MAX, SBX_RUN_ASYNC_MAX);
  struct job *j = calloc (1, sizeof *j);
  if (j == NULL)
    {
      active_drop (sb->id, req->async);
      return sbx_fail (err, ENOMEM, "run");
    }
  j->svc = svc;
  sbx_capture_init (&j->out, SBX_RUN_OUTPUT_MAX, false);
  sbx_capture_init (&j->err, SBX_RUN_OUTPUT_MAX, false);
  j->async = req->async;
  j->wasm = strcmp (sb->mode, "wasm") == 0;
  snprintf (j->run.sandbox_id, sizeof j->run.sandbox_id, "%s", sb->id);
  snprintf (j->run.org_id, sizeof j->run.org_id, "%s", org->id);
  j->run.timeout_s = req->timeout_s;
  j->run.code = strdup (req->code);
  if (j->run.code == NULL || sbx_store_run_create (sbx_service_store (svc), &j->run, err) < 0)
    {
      if (j->run.code == NULL)
        sbx_fail (err, ENOMEM, "run");
      active_drop (sb->id, req->async);
      job_free (j);
      return -1;
    }
  if (req->async)
    {
      /* answer with the run as it starts; the thread owns the job */
      snprintf (out->id, sizeof out->id, "%s", j->run.id);
      snprintf (out->sandbox_id, sizeof out->sandbox_id, "%s", sb->id);
      snprintf (out->org_id, sizeof out->org_id, "%s", org->id);
      snprintf (out->status, sizeof out->status, "running");
      out->created_ms = j->run.created_ms;
      out->timeout_s = req->timeout_s;
      if (!sbx_start_detached (job_main, j))
        {
          snprintf (j->run.status, sizeof j->run.status, "failed");
          j->run.reason = strdup ("cannot start a thread for the run");
          j->run.finished_ms = sbx_wall_ms ();
          sbx_store_run_finish (sbx_service_store (svc), &j->run, err);
          active_drop (sb->id, true);
          job_free (j);
          return sbx_failk (err, SBX_E_UNAVAILABLE, "cannot start the run now");
        }
      return 0;
    }
  job_execute (j);
  active_drop (sb->id, false);
  *out = j->run;
  memset (&j->run, 0, sizeof j->run);
  job_free (j);
  return 0;
}

int
sbx_service_run_get (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, const char *run_id,
                     struct sbx_run_rec *out, struct sbx_err *err)
{
  if (sbx_store_run_get (sbx_service_store (svc), org->id, sandbox_id, run_id, out, err) < 0)
    {
      if (err->code == ENOENT || sbx_err_kind (err) == SBX_E_NOT_FOUND)
        return sbx_failk (err, SBX_E_NOT_FOUND, "run not found");
      return -1;
    }
  return 0;
}

int
sbx_service_runs_recover (struct sbx_service *svc, struct sbx_err *err)
{
  struct sbx_run_rec *v;
  size_t n;
  if (sbx_store_run_list_unfinished (sbx_service_store (svc), &v, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    {
      struct sbx_run_rec *r = &v[i];
      snprintf (r->status, sizeof r->status, "failed");
      r->exit_code = -1;
      r->finished_ms = sbx_wall_ms ();
      free (r->reason);
      r->reason = strdup ("interrupted: sbxd restarted while the run was in progress");
      struct sbx_err e2;
      if (sbx_store_run_finish (sbx_service_store (svc), r, &e2) < 0)
        sbx_log_fields (SBX_LOG_ERROR, "record interrupted run", "run", r->id, "error", e2.msg, NULL);
    }
  sbx_run_recs_free (v, n);
  return (int) n;
}
