/*
 * test_fspolicy.c - the filesystem policy (fspolicy.h) end to end through
 * the core: an engine on a temporary state directory boots real sandboxes
 * of the template "base" with rules, and commands (sbx_exec) and the files
 * API (sbx_file_*) inside them meet the kernel's answers: EROFS on
 * read-only paths, writes that work on read-write ones, EACCES on blocked
 * ones for root and the default user alike, by every road in.  A sandbox
 * of the same template without rules runs the same commands as the
 * control, so that no check passes for a reason other than the policy.
 *
 * Needs root, the template base (/var/lib/sbxd/templates/base) and
 * build/sbx-init next to this program (scripts/test builds it there).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/common/util.h"
#include "../../src/core/sandbox.h"
#include "check.h"

static struct sbx_engine *eng;
static char state_dir[] = "/tmp/sbx-fspolicy-XXXXXX";

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

/* Run SCRIPT with sh as USER; its exit code, output (both streams) in O. */
static int
sh (const char *id, const char *user, struct out *o, const char *fmt, ...)
{
  char script[2048];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (script, sizeof script, fmt, ap);
  va_end (ap);
  const char *argv[] = { "sh", "-c", script, NULL };
  struct sbx_exec_opts eo = { .argv = argv, .user = user, .timeout_ms = 30000 };
  memset (o, 0, sizeof *o);
  o->code = -1000;
  struct sbx_err err;
  if (sbx_exec (eng, id, &eo, on_event, o, &err) < 0)
    {
      fprintf (stderr, "exec %s: %s\n", script, err.msg);
      return -1000;
    }
  if (getenv ("SBX_TEST_VERBOSE"))
    fprintf (stderr, "[%s] %s -> %d: %s\n", user, script, o->code, o->text);
  return o->code;
}

/* Exit code of SCRIPT as USER, output dropped. */
#define RUN(id, user, ...) (sh ((id), (user), &o, __VA_ARGS__))

static bool
has (const struct out *o, const char *s)
{
  bool r = strstr (o->text, s) != NULL;
  if (!r)
    fprintf (stderr, "  output was: %s\n", o->text);
  return r;
}

static int
create (const struct sbx_fs_rule *rules, size_t n, char id[SBX_ID_MAX], struct sbx_err *err)
{
  struct sbx_create_opts co = { .template_name = "base", .timeout_s = 600, .fs_rules = rules, .n_fs_rules = n };
  return sbx_create (eng, &co, id, err);
}

/* ---- sbx_fs_rules_check ---- */

static void
expect_refused (const struct sbx_fs_rule *r, size_t n, const char *what)
{
  struct sbx_err err = { 0 };
  int rc = sbx_fs_rules_check (r, n, &err);
  CHECK (rc < 0 && err.code == EINVAL && sbx_err_kind (&err) == SBX_E_INVALID);
  if (rc < 0 && !strstr (err.msg, what))
    {
      fprintf (stderr, "FAIL message \"%s\" does not name %s\n", err.msg, what);
      failed++;
    }
}

static void
test_check (void)
{
  struct sbx_err err;
  struct sbx_fs_rule good[] = { { "/workspace/data", SBX_FS_READ_ONLY },
                                { "/workspace/data/output", SBX_FS_READ_WRITE },
                                { "/etc", SBX_FS_BLOCKED },
                                { "/root", SBX_FS_BLOCKED },
                                { "/etcetera", SBX_FS_READ_ONLY }, /* not below /etc */
                                { "/devices", SBX_FS_READ_ONLY } };  /* not below /dev */
  CHECK (sbx_fs_rules_check (good, sizeof good / sizeof good[0], &err) == 0);
  CHECK (sbx_fs_rules_check (NULL, 0, &err) == 0);

  static const char *const bad[] = { "relative/path", "", "/", "/a\nb", "/a/", "/a//b", "/a/./b", "/a/../b", "/a/..",
                                     "/a/.", "/./a", "/proc", "/proc/sys", "/sys/fs", "/dev", "/dev/shm" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      struct sbx_fs_rule r = { bad[i], SBX_FS_READ_ONLY };
      expect_refused (&r, 1, !*bad[i] ? "empty" : strchr (bad[i], '\n') ? "control character" : bad[i]);
    }
  char longp[SBX_FS_PATH_MAX + 8];
  longp[0] = '/';
  memset (longp + 1, 'x', sizeof longp - 2);
  longp[sizeof longp - 1] = '\0';
  struct sbx_fs_rule lr = { longp, SBX_FS_BLOCKED };
  expect_refused (&lr, 1, "too long");
  longp[SBX_FS_PATH_MAX - 1] = '\0'; /* 1023 bytes: allowed */
  CHECK (sbx_fs_rules_check (&lr, 1, &err) == 0);

  struct sbx_fs_rule many[SBX_FS_RULES_MAX + 1];
  char names[SBX_FS_RULES_MAX + 1][16];
  for (size_t i = 0; i <= SBX_FS_RULES_MAX; i++)
    {
      snprintf (names[i], sizeof names[i], "/d%zu", i);
      many[i] = (struct sbx_fs_rule) { names[i], SBX_FS_READ_ONLY };
    }
  CHECK (sbx_fs_rules_check (many, SBX_FS_RULES_MAX, &err) == 0);
  expect_refused (many, SBX_FS_RULES_MAX + 1, "at most 64");

  struct sbx_fs_rule dup[] = { { "/data", SBX_FS_READ_ONLY }, { "/data", SBX_FS_READ_WRITE } };
  expect_refused (dup, 2, "/data");
  struct sbx_fs_rule under[] = { { "/etc/ssl", SBX_FS_READ_ONLY }, { "/etc", SBX_FS_BLOCKED } };
  expect_refused (under, 2, "/etc/ssl");
  struct sbx_fs_rule mode[] = { { "/data", (enum sbx_fs_access) 7 } };
  expect_refused (mode, 1, "/data");

  /* sbx_create checks them too, before it touches anything */
  char id[SBX_ID_MAX];
  struct sbx_fs_rule rel = { "etc", SBX_FS_BLOCKED };
  memset (&err, 0, sizeof err);
  CHECK (create (&rel, 1, id, &err) < 0 && err.code == EINVAL && strstr (err.msg, "etc"));
  struct sbx_info *infos;
  size_t n;
  CHECK (sbx_list (eng, &infos, &n, &err) == 0 && n == 0);
  sbx_list_free (infos, n);
}

/* ---- in sandboxes ---- */

static pid_t
init_pid (const char *id)
{
  char path[512];
  snprintf (path, sizeof path, "%s/sandboxes/%s/sandbox.json", state_dir, id);
  cleanup_free char *text = NULL;
  struct sbx_err err;
  if (sbx_read_file_at (AT_FDCWD, path, &text, 1 << 20, &err) < 0)
    return -1;
  const char *p = strstr (text, "\"init_pid\":");
  return p ? (pid_t) atoi (p + 11) : -1;
}

/* In a child of this program that joins the sandbox's user and mount
   namespaces from outside, with every capability there (more than any
   process of the sandbox has), try to make PATH writable again and to
   unmount it.  Returns the errno of each in *REMOUNT and *UMOUNT (0 for
   success). */
static void
try_unlock (pid_t pid, const char *path, int *remount, int *umount)
{
  int p[2];
  if (pipe (p) < 0)
    return;
  pid_t c = fork ();
  if (c == 0)
    {
      char ns[64];
      snprintf (ns, sizeof ns, "/proc/%d/ns/user", (int) pid);
      int u = open (ns, O_RDONLY);
      snprintf (ns, sizeof ns, "/proc/%d/ns/mnt", (int) pid);
      int m = open (ns, O_RDONLY);
      int r[2] = { -1, -1 };
      if (u >= 0 && m >= 0 && setns (u, CLONE_NEWUSER) == 0 && setns (m, CLONE_NEWNS) == 0)
        {
          r[0] = mount (NULL, path, NULL, MS_BIND | MS_REMOUNT, NULL) == 0 ? 0 : errno;
          r[1] = umount2 (path, MNT_DETACH) == 0 ? 0 : errno;
        }
      if (write (p[1], r, sizeof r) < 0)
        _exit (1);
      _exit (0);
    }
  close (p[1]);
  int r[2] = { -2, -2 };
  if (read (p[0], r, sizeof r) != sizeof r)
    r[0] = r[1] = -2;
  close (p[0]);
  waitpid (c, NULL, 0);
  *remount = r[0];
  *umount = r[1];
}

static int
collect (const void *data, size_t len, void *ud)
{
  struct out *o = ud;
  size_t k = len < sizeof o->text - 1 - o->n ? len : sizeof o->text - 1 - o->n;
  memcpy (o->text + o->n, data, k);
  o->n += k;
  o->text[o->n] = '\0';
  return 0;
}

/* The same probes in the sandbox with rules (POLICY) and in the one
   without (CONTROL). */
static void
test_sandboxes (void)
{
  struct out o;
  struct sbx_err err;
  char ctl[SBX_ID_MAX], pol[SBX_ID_MAX];
  struct sbx_fs_rule rules[] = {
    { "/etc", SBX_FS_BLOCKED },
    { "/root", SBX_FS_BLOCKED },
    { "/usr/share", SBX_FS_READ_ONLY },
    { "/workspace/data", SBX_FS_READ_ONLY },          /* does not exist in base */
    { "/workspace/data/output", SBX_FS_READ_WRITE },  /* nor this, under a read-only one */
    { "/home/user/.bashrc", SBX_FS_BLOCKED },         /* a file */
    { "/opt/secret/deep", SBX_FS_BLOCKED },           /* created, then blocked */
    { "/usr/share/doc", SBX_FS_READ_WRITE },          /* writable under read-only */
  };
  if (create (NULL, 0, ctl, &err) < 0)
    {
      fprintf (stderr, "FAIL create control: %s\n", err.msg);
      failed++;
      return;
    }
  sleep (1); /* the spare pool refills: this one boots a prepared sandbox */
  if (create (rules, sizeof rules / sizeof rules[0], pol, &err) < 0)
    {
      fprintf (stderr, "FAIL create with rules: %s\n", err.msg);
      failed++;
      sbx_destroy (eng, ctl, &err);
      return;
    }
  const char *users[] = { "root", "user" };

  /* python runs with /etc and /root blocked, as root and as the user,
     and init still knows the users (from its copy of /etc/passwd) */
  for (int u = 0; u < 2; u++)
    {
      CHECK (RUN (pol, users[u], "python3 -c 'print(1)'") == 0 && has (&o, "1"));
      CHECK (RUN (pol, users[u], "id -u; pwd") == 0);
      CHECK (u == 0 ? has (&o, "0\n/\n") : has (&o, "1000\n/home/user\n"));
    }
  CHECK (RUN (pol, "user", "whoami") != 0); /* no /etc/passwd for the user's own tools */
  CHECK (RUN (ctl, "user", "whoami") == 0 && has (&o, "user"));

  /* blocked directories: not readable, listable, enterable or writable */
  for (int u = 0; u < 2; u++)
    for (int s = 0; s < 2; s++)
      {
        const char *id = s ? pol : ctl;
        bool blocked = s == 1;
        /* the control shows each probe can succeed where it may */
        CHECK ((RUN (id, users[u], "cat /etc/hostname /etc/passwd >/dev/null") == 0) == !blocked);
        if (blocked)
          CHECK (has (&o, "Permission denied"));
        CHECK ((RUN (id, users[u], "ls /etc >/dev/null") == 0) == !blocked);
        CHECK ((RUN (id, users[u], "cd /etc") == 0) == !blocked);
        CHECK ((RUN (id, users[u], "cat /home/user/.bashrc >/dev/null") == 0) == !blocked);
        if (u == 0)
          {
            CHECK ((RUN (id, "root", "touch /etc/new && rm /etc/new") == 0) == !blocked);
            CHECK ((RUN (id, "root", "ls /root >/dev/null && touch /root/x") == 0) == !blocked);
            CHECK ((RUN (id, "root", "echo x >> /home/user/.bashrc") == 0) == !blocked);
            /* by other roads: a symlink, "..", /proc/self/root, /proc/1/root,
               a hard link, python's open */
            CHECK ((RUN (id, "root", "ln -sf /etc /tmp/etc-link && cat /tmp/etc-link/hostname") == 0) == !blocked);
            CHECK ((RUN (id, "root", "cat /usr/../etc/hostname") == 0) == !blocked);
            CHECK ((RUN (id, "root", "cat /proc/self/root/etc/hostname") == 0) == !blocked);
            CHECK ((RUN (id, "root", "cd /proc/self/root/root") == 0) == !blocked);
            CHECK ((RUN (id, "root", "ln /etc/hostname /tmp/hard-%d", s) == 0) == !blocked);
            CHECK ((RUN (id, "root", "ln /home/user/.bashrc /tmp/hard-rc-%d", s) == 0) == !blocked);
            CHECK ((RUN (id, "root", "ln -s /etc/hostname /tmp/hn && cp /tmp/hn /tmp/hn-copy") == 0) == !blocked);
            CHECK ((RUN (id, "root", "python3 -c 'open(\"/etc/hostname\").read()'") == 0) == !blocked);
            if (blocked)
              CHECK (has (&o, "PermissionError"));
            /* root cannot take the block away: chmod, chown, rmdir, mv,
               umount (the control shows the first four work on a plain
               directory) */
            if (!blocked)
              RUN (id, "root", "mkdir -p /opt/secret/deep");
            CHECK ((RUN (id, "root", "chmod 755 /opt/secret/deep") == 0) == !blocked);
            CHECK ((RUN (id, "root", "chown 1000 /opt/secret/deep") == 0) == !blocked);
            CHECK ((RUN (id, "root", "mv /opt/secret/deep /opt/moved && mv /opt/moved /opt/secret/deep") == 0)
                   == !blocked);
            CHECK ((RUN (id, "root", "rmdir /opt/secret/deep") == 0) == !blocked);
            CHECK (RUN (id, "root",
                        "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                        "print(l.umount2(b\"/etc\", 2), ctypes.get_errno())'")
                       == 0
                   && has (&o, blocked ? "-1 1\n" : "-1 "));
          }
      }
  /* a command asked to start in a blocked directory does not */
  const char *argv[] = { "true", NULL };
  struct sbx_exec_opts in_etc = { .argv = argv, .user = "root", .cwd = "/etc" };
  memset (&o, 0, sizeof o);
  CHECK (sbx_exec (eng, pol, &in_etc, on_event, &o, &err) == 0 && o.code == 126 && has (&o, "Permission denied"));
  memset (&o, 0, sizeof o);
  CHECK (sbx_exec (eng, ctl, &in_etc, on_event, &o, &err) == 0 && o.code == 0);
  /* root keeps the low ports (the mounts are locked in a nested user
     namespace, which the network namespace does not belong to) */
  for (int u = 0; u < 2; u++)
    CHECK (RUN (pol, users[u], "python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 80))'") == 0);
  /* a blocked path looks like an empty directory (or file) no one owns,
     mode 000, and stays so */
  CHECK (RUN (pol, "root", "stat -c '%%a %%u %%F' /etc /opt/secret/deep /home/user/.bashrc") == 0
         && has (&o, "0 65534 directory\n0 65534 directory\n0 65534 regular empty file\n"));

  /* read-only: EROFS for root too, reads work; and the control writes */
  CHECK (RUN (pol, "root", "ls /usr/share/base-files >/dev/null && cat /usr/share/base-files/motd >/dev/null") == 0);
  CHECK (RUN (pol, "root", "touch /usr/share/x") != 0 && has (&o, "Read-only file system"));
  CHECK (RUN (pol, "root", "rm -rf /usr/share/base-files") != 0 && has (&o, "Read-only file system"));
  CHECK (RUN (pol, "root", "mount -o remount,rw /usr/share") != 0);
  CHECK (RUN (ctl, "root", "touch /usr/share/x && rm /usr/share/x") == 0);
  CHECK (RUN (pol, "root", "touch /workspace/data/x") != 0 && has (&o, "Read-only file system"));
  /* read-write under read-only: created, writable by the user */
  CHECK (RUN (pol, "user", "echo out > /workspace/data/output/f && cat /workspace/data/output/f") == 0
         && has (&o, "out"));
  CHECK (RUN (pol, "root", "touch /usr/share/doc/new && rm /usr/share/doc/new") == 0);
  /* elsewhere the disk stays as it was */
  CHECK (RUN (pol, "user", "echo hi > /tmp/t && echo hi > /home/user/t && cat /tmp/t /home/user/t") == 0);

  /* the kernel locked the flags: even with every capability of the
     sandbox's namespaces, its read-only mount stays read-only and its
     blocks stay in place; in the control the same remount succeeds (on
     its read-only /proc/sys) */
  int remount = -3, umnt = -3;
  try_unlock (init_pid (pol), "/usr/share", &remount, &umnt);
  CHECK (remount == EPERM);
  CHECK (umnt == EINVAL);
  try_unlock (init_pid (pol), "/etc", &remount, &umnt);
  CHECK (umnt == EINVAL);
  try_unlock (init_pid (ctl), "/proc/sys", &remount, &umnt);
  CHECK (remount == 0);

  /* the files API obeys the policy: its worker is in the same namespace */
  for (int u = 0; u < 2; u++)
    for (int s = 0; s < 2; s++)
      {
        const char *id = s ? pol : ctl;
        bool blocked = s == 1;
        memset (&o, 0, sizeof o);
        memset (&err, 0, sizeof err);
        int rc = sbx_file_read (eng, id, "/etc/hostname", users[u], 0, NULL, collect, &o, &err);
        CHECK ((rc == 0) == !blocked);
        if (blocked)
          CHECK (err.code == EACCES);
        struct sbx_entry *ents = NULL;
        size_t n = 0;
        rc = sbx_file_list (eng, id, "/etc", users[u], 1, &ents, &n, &err);
        CHECK ((rc == 0 && n > 0) == !blocked);
        if (blocked)
          CHECK (rc < 0 && err.code == EACCES);
        if (rc == 0)
          sbx_entries_free (ents, n);
        rc = sbx_file_read (eng, id, "/root/.bashrc", "root", 0, NULL, collect, &o, &err);
        CHECK ((rc == 0) == !blocked);
        rc = sbx_file_write (eng, id, "/etc/fromapi", users[u], "x", 1, NULL, &err);
        CHECK ((rc == 0) == (!blocked && u == 0));
        if (blocked)
          CHECK (err.code == EACCES);
        rc = sbx_file_write (eng, id, "/usr/share/fromapi", "root", "x", 1, NULL, &err);
        CHECK ((rc == 0) == !blocked);
        if (blocked)
          CHECK (err.code == EROFS);
        rc = sbx_file_read (eng, id, "/home/user/.bashrc", users[u], 0, NULL, collect, &o, &err);
        CHECK ((rc == 0) == !blocked);
      }
  /* the files API through a symlink (made by the probes above) */
  memset (&o, 0, sizeof o);
  CHECK (sbx_file_read (eng, pol, "/tmp/hn", "root", 0, NULL, collect, &o, &err) < 0 && err.code == EACCES);
  CHECK (sbx_file_read (eng, ctl, "/tmp/hn", "root", 0, NULL, collect, &o, &err) == 0 && has (&o, "sandbox"));
  /* nor can it move or remove a block, or write under a read-only path
     by moving a file in */
  CHECK (sbx_file_remove (eng, pol, "/opt/secret/deep", "root", &err) < 0);
  CHECK (sbx_file_move (eng, pol, "/etc", "/etc2", "root", NULL, &err) < 0);
  CHECK (sbx_file_move (eng, pol, "/opt/secret", "/opt/secret2", "root", NULL, &err) == 0);
  CHECK (sbx_file_write (eng, pol, "/tmp/f", "root", "f", 1, NULL, &err) == 0);
  CHECK (sbx_file_move (eng, pol, "/tmp/f", "/usr/share/f", "root", NULL, &err) < 0);
  CHECK (RUN (pol, "root", "stat -c '%%a %%u' /etc /opt/secret2/deep && ls /opt/secret2/deep") != 0
         && has (&o, "0 65534\n0 65534\n") && has (&o, "Permission denied"));
  CHECK (sbx_file_write (eng, pol, "/workspace/data/output/api", "user", "api", 3, NULL, &err) == 0);
  memset (&o, 0, sizeof o);
  CHECK (sbx_file_read (eng, pol, "/workspace/data/output/api", "user", 0, NULL, collect, &o, &err) == 0
         && strcmp (o.text, "api") == 0);

  /* the daemon still sees the sandbox's disk through init's root */
  struct sbx_metrics met;
  CHECK (sbx_get_metrics (eng, pol, &met, &err) == 0 && met.disk_total > 0);
  /* nothing leaked into the host's mount namespace */
  cleanup_free char *mi = NULL;
  CHECK (sbx_read_file_at (AT_FDCWD, "/proc/self/mountinfo", &mi, 16 << 20, &err) == 0 && mi
         && strstr (mi, "fsblock") == NULL && strstr (mi, "/usr/share") == NULL);

  CHECK (sbx_destroy (eng, pol, &err) == 0);
  CHECK (sbx_destroy (eng, ctl, &err) == 0);
}

/* The example of the seed's API, as it is. */
static void
test_seed_example (void)
{
  struct out o;
  struct sbx_err err;
  char id[SBX_ID_MAX];
  struct sbx_fs_rule r[] = { { "/workspace/data", SBX_FS_READ_ONLY },
                             { "/workspace/output", SBX_FS_READ_WRITE },
                             { "/etc", SBX_FS_BLOCKED },
                             { "/root", SBX_FS_BLOCKED } };
  if (create (r, 4, id, &err) < 0)
    {
      fprintf (stderr, "FAIL create: %s\n", err.msg);
      failed++;
      return;
    }
  for (int u = 0; u < 2; u++)
    {
      const char *user = u ? "user" : "root";
      CHECK (RUN (id, user, "python3 -c 'print(6 * 7)'") == 0 && has (&o, "42"));
      CHECK (RUN (id, user, "echo r > /workspace/output/r-%d && cat /workspace/output/r-%d", u, u) == 0);
      CHECK (RUN (id, user, "touch /workspace/data/x") != 0 && has (&o, "Read-only file system"));
      CHECK (RUN (id, user, "ls /etc") != 0 && has (&o, "Permission denied"));
      CHECK (RUN (id, user, "ls /root") != 0 && has (&o, "Permission denied"));
      /* the rest of /workspace is as the image has it: the user's */
      CHECK ((RUN (id, user, "touch /workspace/w-%d", u) == 0));
    }
  sbx_destroy (eng, id, &err);
}

/* Rule paths follow the image's symlinks, inside the sandbox's root; a
   rule that cannot be put in place fails the creation, and the engine
   goes on. */
static void
test_symlinks_and_failures (void)
{
  struct out o;
  struct sbx_err err;
  char id[SBX_ID_MAX];
  /* below a file: the sandbox cannot be set up */
  struct sbx_fs_rule r = { "/home/user/.bashrc/x", SBX_FS_READ_ONLY };
  memset (&err, 0, sizeof err);
  int rc = create (&r, 1, id, &err);
  CHECK (rc < 0);
  if (rc == 0)
    sbx_destroy (eng, id, &err);
  else
    CHECK (strstr (err.msg, "/home/user/.bashrc/x") != NULL);
  struct sbx_info *infos;
  size_t n;
  CHECK (sbx_list (eng, &infos, &n, &err) == 0);
  for (size_t i = 0; i < n; i++)
    CHECK (infos[i].state == SBX_STOPPED);
  sbx_list_free (infos, n);
  /* /var/run is a symlink to /run in Debian */
  struct sbx_fs_rule ok = { "/var/run", SBX_FS_READ_ONLY };
  CHECK (create (&ok, 1, id, &err) == 0);
  CHECK (RUN (id, "root", "touch /run/x") != 0 && has (&o, "Read-only"));
  CHECK (RUN (id, "root", "touch /var/x && rm /var/x") == 0);
  sbx_destroy (eng, id, &err);
}

int
main (void)
{
  if (geteuid () != 0)
    {
      fprintf (stderr, "test_fspolicy: needs root\n");
      return 1;
    }
  if (access ("/var/lib/sbxd/templates/base/template.json", R_OK) < 0)
    {
      fprintf (stderr, "test_fspolicy: needs the template base (scripts/deps.sh: sbxd_ensure_template base)\n");
      return 1;
    }
  signal (SIGPIPE, SIG_IGN); /* output piped to head must not leave sandboxes behind */
  if (mkdtemp (state_dir) == NULL)
    return 1;
  /* one spare: creations take a sandbox prepared before the rules were
     known; its disks (two of 10 GB live at once) write a few MB, so it
     overcommits the machine's disk knowingly, as tests/conftest.py says */
  struct sbx_engine_config cfg = { .state_dir = state_dir, .spares = 1, .disk_overcommit = 16 };
  struct sbx_err err;
  if (sbx_engine_open (&cfg, &eng, &err) < 0)
    {
      fprintf (stderr, "test_fspolicy: %s\n", err.msg);
      return 1;
    }
  test_check ();
  test_sandboxes ();
  test_seed_example ();
  test_symlinks_and_failures ();
  sbx_engine_close (eng);
  sbx_rm_rf (state_dir, &err);
  printf ("fspolicy: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
