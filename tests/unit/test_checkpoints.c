/*
 * test_checkpoints.c - seed 004's checkpoints end to end through the
 * service and the core, without HTTP: real sandboxes of the template
 * "base" on a temporary state directory and store.
 *
 *   - a sandbox created with keep_workspace and keep_artifacts keeps its
 *     /workspace (as a checkpoint) and /artifacts when it is destroyed,
 *     and when its timeout ends it;
 *   - a sandbox created with that checkpoint (spec.checkpoint_id) starts
 *     with the files, directories and symlinks, each with the owner, group
 *     and mode it had (set-id bits included), before the create returns;
 *   - another organisation's checkpoint is not found, and a create naming
 *     it takes nothing (no sandbox, no record).
 *
 * This is the restore that POST /v1/sandboxes {checkpointId} uses.  Needs
 * root, the template base and build/sbx-init next to this program
 * (scripts/test builds it there).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/util.h"
#include "../../src/core/sandbox.h"
#include "../../src/service/service.h"
#include "check.h"

static struct sbx_engine *eng;
static struct sbx_service *svc;
static char state_dir[] = "/tmp/sbx-checkpoints-XXXXXX";

struct out {
  char text[16384];
  size_t n;
  int code;
};

static int
on_event (const struct sbx_proc_event *ev, void *ud)
{
  struct out *o = ud;
  if (ev->kind == SBX_PROC_STDOUT || ev->kind == SBX_PROC_STDERR)
    {
      size_t k = ev->len < sizeof o->text - 1 - o->n ? ev->len : sizeof o->text - 1 - o->n;
      memcpy (o->text + o->n, ev->data, k);
      o->n += k;
      o->text[o->n] = '\0';
    }
  else if (ev->kind == SBX_PROC_END)
    o->code = ev->exit_code;
  return 0;
}

static int
sh (const char *id, struct out *o, const char *fmt, ...)
{
  char script[2048];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (script, sizeof script, fmt, ap);
  va_end (ap);
  const char *argv[] = { "sh", "-c", script, NULL };
  struct sbx_exec_opts eo = { .argv = argv, .user = "root", .timeout_ms = 30000 };
  memset (o, 0, sizeof *o);
  o->code = -1000;
  struct sbx_err err;
  if (sbx_exec (eng, id, &eo, on_event, o, &err) < 0)
    {
      fprintf (stderr, "exec %s: %s\n", script, err.msg);
      return -1000;
    }
  if (getenv ("SBX_TEST_VERBOSE"))
    fprintf (stderr, "%s -> %d: %s\n", script, o->code, o->text);
  return o->code;
}

/* ORG's checkpoints of sandbox ID: how many, the newest in *C. */
static size_t
checkpoints_of (const struct sbx_org *org, const char *id, struct sbx_saved *c)
{
  struct sbx_saved *v;
  size_t n, mine = 0;
  struct sbx_err err;
  if (sbx_service_checkpoint_list (svc, org, &v, &n, &err) < 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp (v[i].sandbox_id, id) == 0 && mine++ == 0)
      *c = v[i];
  free (v);
  return mine;
}

int
main (void)
{
  if (geteuid () != 0)
    {
      fprintf (stderr, "test_checkpoints: needs root\n");
      return 77;
    }
  char init_path[4200], self[4096];
  ssize_t sl = readlink ("/proc/self/exe", self, sizeof self - 1);
  if (sl < 0)
    return 1;
  self[sl] = '\0';
  *strrchr (self, '/') = '\0';
  snprintf (init_path, sizeof init_path, "%s/sbx-init", self);
  if (mkdtemp (state_dir) == NULL)
    return 1;
  char db[4200];
  snprintf (db, sizeof db, "%s/sbxd.db", state_dir);
  struct sbx_err err;
  struct sbx_store *store;
  if (sbx_store_open (db, &store, &err) < 0 || sbx_service_open (store, &svc, &err) < 0
      || sbx_service_set_storage (svc, state_dir, 0, &err) < 0)
    {
      fprintf (stderr, "service: %s\n", err.msg);
      return 1;
    }
  struct sbx_engine_config cfg = { .state_dir = state_dir,
                                   .init_path = init_path,
                                   .on_event = sbx_service_on_change,
                                   .on_ending = sbx_service_on_ending,
                                   .event_ud = svc,
                                   .spares = -1,
                                   .disk_overcommit = 64 };
  if (sbx_engine_open (&cfg, &eng, &err) < 0)
    {
      fprintf (stderr, "engine: %s\n", err.msg);
      return 1;
    }
  sbx_service_set_engine (svc, eng);
  struct sbx_org org, other;
  if (sbx_store_org_ensure (store, "default", &org, &err) < 0 || sbx_store_org_ensure (store, "other", &other, &err) < 0)
    {
      fprintf (stderr, "orgs: %s\n", err.msg);
      return 1;
    }
  struct out o;

  /* a sandbox that keeps its workspace and artifacts */
  struct sbx_sandbox_spec spec = { .template_name = "base",
                                   .keep_workspace = true,
                                   .keep_artifacts = true,
                                   .artifact_prefix = "p/" };
  struct sbx_sandbox_rec a, b;
  CHECK (sbx_service_sandbox_create (svc, &org, &spec, &a, &err) == 0);
  if (failed)
    fprintf (stderr, "create: %s\n", err.msg);
  CHECK (sh (a.id, &o, "stat -c '%%a %%u' /artifacts") == 0 && strcmp (o.text, "1777 0\n") == 0);
  CHECK (sh (a.id, &o,
             "cd /workspace && echo kept > f.txt && chown 1000:1000 f.txt && chmod 640 f.txt"
             " && mkdir d && echo in > d/g && chown 0:1000 d && chmod 2750 d && chmod 4755 d/g"
             " && ln -s f.txt l && chown -h 1000:1000 l && mkfifo fifo && echo art > /artifacts/a.txt")
         == 0);
  CHECK (sbx_service_sandbox_kill (svc, &org, a.id, &err) == 0);
  /* the kill is answered before the teardown, which keeps what it keeps */
  CHECK (sbx_teardown_wait (eng, a.id, 30000, &err) == 0);
  struct sbx_saved c;
  CHECK (checkpoints_of (&org, a.id, &c) == 1);
  CHECK (c.files == 4 && c.size_bytes == 8); /* f.txt, d, d/g, l; not the FIFO */
  struct sbx_sandbox_rec stopped;
  struct sbx_artifacts_summary sum;
  CHECK (sbx_service_sandbox_get (svc, &org, a.id, &stopped, &err) == 0);
  CHECK (sbx_service_artifacts_summary (svc, &stopped, &sum, &err) == 1);
  CHECK (sum.kept && sum.count == 1 && sum.bytes == 4 && strcmp (sum.prefix, "p/") == 0);
  sbx_sandbox_rec_free (&stopped);

  /* a new sandbox from it: everything as it was */
  char ckpt[SBX_STORE_ID_MAX];
  snprintf (ckpt, sizeof ckpt, "%s", c.id);
  struct sbx_sandbox_spec from = { .template_name = "base", .checkpoint_id = ckpt };
  CHECK (sbx_service_sandbox_create (svc, &org, &from, &b, &err) == 0);
  CHECK (sh (b.id, &o,
             "cd /workspace && stat -c '%%n %%u:%%g %%a' f.txt d d/g && cat f.txt d/g && readlink l"
             " && stat -c '%%u:%%g' l && test ! -e fifo")
         == 0);
  CHECK (strcmp (o.text, "f.txt 1000:1000 640\nd 0:1000 2750\nd/g 0:0 4755\nkept\nin\nf.txt\n1000:1000\n") == 0);
  if (strcmp (o.text, "f.txt 1000:1000 640\nd 0:1000 2750\nd/g 0:0 4755\nkept\nin\nf.txt\n1000:1000\n") != 0)
    fprintf (stderr, "restored: %s\n", o.text);
  /* the restore's records: none for a sandbox that did not ask to keep */
  CHECK (sbx_service_sandbox_kill (svc, &org, b.id, &err) == 0);
  CHECK (sbx_teardown_wait (eng, b.id, 30000, &err) == 0);
  CHECK (checkpoints_of (&org, b.id, &c) == 0);
  sbx_sandbox_rec_free (&b);

  /* another organisation's checkpoint does not exist for the caller */
  struct sbx_sandbox_rec none;
  CHECK (sbx_service_sandbox_create (svc, &other, &from, &none, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_NOT_FOUND && strcmp (err.msg, "Checkpoint not found") == 0);
  uint32_t live = 99;
  CHECK (sbx_store_sandbox_count_live (store, other.id, &live, &err) == 0 && live == 0);
  CHECK (sbx_service_checkpoint_delete (svc, &other, from.checkpoint_id, &err) < 0
         && sbx_err_kind (&err) == SBX_E_NOT_FOUND);

  /* the timeout ends it: the workspace is kept all the same */
  struct sbx_sandbox_spec brief = { .template_name = "base", .timeout_s = 2, .keep_workspace = true };
  CHECK (sbx_service_sandbox_create (svc, &org, &brief, &b, &err) == 0);
  CHECK (sh (b.id, &o, "echo late > /workspace/t") == 0);
  for (int i = 0; i < 100 && checkpoints_of (&org, b.id, &c) == 0; i++)
    usleep (100000);
  CHECK (checkpoints_of (&org, b.id, &c) == 1 && c.files == 1 && c.size_bytes == 5);
  sbx_sandbox_rec_free (&b);

  /* deleting frees its disk */
  char path[4300];
  snprintf (path, sizeof path, "%s/captures/%s", state_dir, c.id);
  CHECK (access (path, F_OK) == 0);
  CHECK (sbx_service_checkpoint_delete (svc, &org, c.id, &err) == 0);
  CHECK (access (path, F_OK) < 0 && errno == ENOENT);

  sbx_sandbox_rec_free (&a);
  sbx_engine_close (eng);
  sbx_service_close (svc);
  sbx_store_close (store);
  sbx_rm_rf (state_dir, &err);
  rmdir (state_dir);
  printf ("test_checkpoints: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
