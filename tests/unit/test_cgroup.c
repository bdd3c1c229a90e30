/*
 * test_cgroup.c - exercises src/core/cgroup.c against the real kernel.
 *
 * Must run as root.  Creates "sbxd-test/<random>" with memory, CPU and pids
 * limits, moves children into it and checks: accounting, freeze (a busy
 * child gets no CPU while frozen), the CPU quota, OOM kill counting, the
 * pids limit, kill of a frozen tree, and that destroy leaves no process and
 * no directory in any cgroup hierarchy.
 *
 * The checks run in a forked "runner"; the top process only waits for it
 * (with a watchdog) and then destroys the test cgroups whatever happened,
 * so a crash or a hang in the runner still leaves the host clean.  The last
 * line of output is "N passed, N failed".
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif

#include "core/cgroup.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_PARENT "sbxd-test"
#define MIB (1024ull * 1024ull)
#define RUNNER_TIMEOUT_S 120

static int passed, failed;
static char cg_name[64];

static void
check (bool ok, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  printf ("%s: ", ok ? "ok  " : "FAIL");
  vprintf (fmt, ap);
  printf ("\n");
  va_end (ap);
  if (ok)
    passed++;
  else
    failed++;
}

static void
msleep (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* ------------------------------------------------------------------ */
/* an independent view of the cgroup mounts, to verify the module      */

struct mnt
{
  char path[512];
  bool v2;
  bool used; /* a hierarchy sbxd creates NAME in */
};

static struct mnt mnts[32];

/* WORD is one of the comma-separated items of LIST. */
static bool
has_token (const char *list, const char *word)
{
  size_t wlen = strlen (word);
  for (const char *p = list; *p;)
    {
      size_t len = strcspn (p, ",");
      if (len == wlen && strncmp (p, word, len) == 0)
        return true;
      p += len;
      if (*p == ',')
        p++;
    }
  return false;
}
static size_t n_mnts;

static void
load_mounts (void)
{
  FILE *f = fopen ("/proc/self/mountinfo", "re");
  char line[4096];
  if (f == NULL)
    return;
  while (fgets (line, sizeof line, f) && n_mnts < sizeof mnts / sizeof mnts[0])
    {
      char mp[512], rest[2048];
      if (sscanf (line, "%*s %*s %*s %*s %511s %*s %2047[^\n]", mp, rest) != 2)
        continue;
      char *sep = strstr (rest, "- ");
      if (sep == NULL)
        continue;
      char fstype[64], src[256], opts[1024];
      if (sscanf (sep + 2, "%63s %255s %1023s", fstype, src, opts) != 3)
        continue;
      bool v2 = strcmp (fstype, "cgroup2") == 0;
      if (!v2 && strcmp (fstype, "cgroup") != 0)
        continue;
      struct mnt *m = &mnts[n_mnts++];
      snprintf (m->path, sizeof m->path, "%s", mp);
      m->v2 = v2;
      m->used = v2;
      static const char *const ctls[] = { "memory", "cpu", "cpuacct", "pids", "freezer" };
      for (size_t i = 0; !v2 && i < sizeof ctls / sizeof ctls[0]; i++)
        m->used = m->used || has_token (opts, ctls[i]);
    }
  fclose (f);
}

static bool
dir_exists (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

/* How many used hierarchies have NAME, and how many cgroup mounts at all. */
static void
count_dirs (const char *name, int *in_used, int *in_any, int *n_used)
{
  *in_used = *in_any = *n_used = 0;
  for (size_t i = 0; i < n_mnts; i++)
    {
      char path[1024];
      if (snprintf (path, sizeof path, "%s/%s", mnts[i].path, name) >= (int) sizeof path)
        continue;
      bool e = dir_exists (path);
      *n_used += mnts[i].used;
      *in_used += e && mnts[i].used;
      *in_any += e;
    }
}

/* ------------------------------------------------------------------ */
/* processes                                                           */

static bool
pid_in_cgroup (pid_t pid, const char *name)
{
  char path[64], line[1024], want[256];
  snprintf (path, sizeof path, "/proc/%d/cgroup", (int) pid);
  snprintf (want, sizeof want, "/%s", name);
  FILE *f = fopen (path, "re");
  if (f == NULL)
    return false;
  int need = 0, have = 0;
  while (fgets (line, sizeof line, f))
    {
      line[strcspn (line, "\n")] = '\0';
      char *c1 = strchr (line, ':');
      char *c2 = c1 ? strchr (c1 + 1, ':') : NULL;
      if (c2 == NULL)
        continue;
      *c2 = '\0';
      const char *ctls = c1 + 1, *cgpath = c2 + 1;
      /* On a pure v1 host the cgroup2 line is not ours to check. */
      bool v2_line = ctls[0] == '\0' && sbx_cgroup_mode () != SBX_CGROUP_V1;
      bool relevant = v2_line || has_token (ctls, "memory") || has_token (ctls, "pids")
                      || has_token (ctls, "freezer") || has_token (ctls, "cpu")
                      || has_token (ctls, "cpuacct");
      if (!relevant)
        continue;
      need++;
      have += strcmp (cgpath, want) == 0;
    }
  fclose (f);
  return need > 0 && need == have;
}

/* utime + stime in clock ticks, and the one-letter state. */
static long long
proc_cpu_ticks (pid_t pid, char *state)
{
  char path[64], buf[2048];
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  char *p = strrchr (buf, ')');
  if (p == NULL)
    return -1;
  char st;
  unsigned long long utime, stime;
  /* fields after comm: state(3) ... utime(14) stime(15) */
  if (sscanf (p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &st, &utime, &stime)
      != 3)
    return -1;
  if (state)
    *state = st;
  return (long long) (utime + stime);
}

/* Fork a child that runs FN once it has been moved into the cgroup. */
static pid_t
spawn_in_cgroup (int (*fn) (void *), void *arg)
{
  int gate[2];
  struct sbx_err err;
  if (pipe2 (gate, O_CLOEXEC) < 0)
    return -1;
  fflush (stdout);
  pid_t pid = fork ();
  if (pid < 0)
    return -1;
  if (pid == 0)
    {
      char c;
      close (gate[1]);
      if (read (gate[0], &c, 1) != 1)
        _exit (100);
      close (gate[0]);
      _exit (fn (arg));
    }
  close (gate[0]);
  if (sbx_cgroup_enter (cg_name, pid, &err) < 0)
    {
      printf ("enter %d: %s\n", (int) pid, err.msg);
      kill (pid, SIGKILL);
      close (gate[1]);
      waitpid (pid, NULL, 0);
      return -1;
    }
  if (write (gate[1], "x", 1) != 1)
    printf ("gate write failed\n");
  close (gate[1]);
  return pid;
}

/* waitpid with a deadline; 0 on success, -1 on timeout or error. */
static int
wait_timeout (pid_t pid, int *status, int timeout_ms)
{
  for (int waited = 0;; waited++)
    {
      pid_t r = waitpid (pid, status, WNOHANG);
      if (r == pid)
        return 0;
      if (r < 0 || waited >= timeout_ms)
        return -1;
      msleep (1);
    }
}

static bool
killed_by (int status, int sig)
{
  return WIFSIGNALED (status) && WTERMSIG (status) == sig;
}

static int
child_sleep (void *arg)
{
  (void) arg;
  for (;;)
    pause ();
  return 0;
}

static int
child_busy (void *arg)
{
  (void) arg;
  volatile unsigned long n = 0;
  for (;;)
    n++;
  return 0;
}

static int
child_hog (void *arg)
{
  size_t size = *(size_t *) arg;
  /* volatile: the compiler may not drop an allocation nobody reads. */
  volatile char *p = malloc (size);
  if (p == NULL)
    return 2;
  for (size_t off = 0; off < size; off += 4096)
    p[off] = 1;
  return 0;
}

/* Fork 32 times inside the cgroup; the exit code is how many forks got
   EAGAIN (pids.max), 200 + errno for any other failure. */
static int
child_forker (void *arg)
{
  (void) arg;
  pid_t kids[32];
  int nkids = 0, eagain = 0, other = 0;
  for (int i = 0; i < 32; i++)
    {
      pid_t p = fork ();
      if (p == 0)
        {
          for (;;)
            pause ();
        }
      if (p > 0)
        kids[nkids++] = p;
      else if (errno == EAGAIN)
        eagain++;
      else
        other = errno;
    }
  for (int i = 0; i < nkids; i++)
    kill (kids[i], SIGKILL);
  for (int i = 0; i < nkids; i++)
    waitpid (kids[i], NULL, 0);
  if (other)
    return 200 + (other % 50);
  return eagain > 199 ? 199 : eagain;
}

/* Forks a grandchild, reports its pid through the pipe, then sleeps. */
static int
child_double (void *arg)
{
  int fd = *(int *) arg;
  pid_t g = fork ();
  if (g == 0)
    {
      for (;;)
        pause ();
    }
  if (write (fd, &g, sizeof g) != sizeof g)
    return 3;
  for (;;)
    pause ();
}

static bool
get_stats (struct sbx_cgroup_stats *st)
{
  struct sbx_err err;
  if (sbx_cgroup_stats (cg_name, st, &err) < 0)
    {
      printf ("stats: %s\n", err.msg);
      return false;
    }
  return true;
}

/* ------------------------------------------------------------------ */
/* the checks                                                          */

static void
test_names (void)
{
  struct sbx_err err;
  static const char *const bad[] = { "../evil", "/abs", "a/../b", "a/..", "", "a//b", "a/" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      int r = sbx_cgroup_create (bad[i], NULL, &err);
      check (r < 0 && err.code == EINVAL, "create rejects name `%s`", bad[i]);
    }
}

static void
run_tests (void)
{
  struct sbx_err err;
  struct sbx_cgroup_stats st;
  int status, in_used, in_any, n_used;

  setvbuf (stdout, NULL, _IOLBF, 0);
  /* Orphaned grandchildren come back to us, so nothing escapes waitpid. */
  prctl (PR_SET_CHILD_SUBREAPER, 1);

  int r = sbx_cgroup_detect (&err);
  check (r == 0, "detect%s%s", r ? ": " : "", r ? err.msg : "");
  if (r < 0)
    return;
  enum sbx_cgroup_mode mode = sbx_cgroup_mode ();
  printf ("mode: %s\n", mode == SBX_CGROUP_V1 ? "v1" : mode == SBX_CGROUP_V2 ? "v2" : "hybrid");
  load_mounts ();

  test_names ();

  check (!sbx_cgroup_exists (cg_name), "%s does not exist yet", cg_name);
  struct sbx_cgroup_limits lim = { .memory_bytes = 64 * MIB, .cpu_millis = 500, .pids_max = 16 };
  r = sbx_cgroup_create (cg_name, &lim, &err);
  check (r == 0, "create %s%s%s", cg_name, r ? ": " : "", r ? err.msg : "");
  if (r < 0)
    return;
  check (sbx_cgroup_exists (cg_name), "exists after create");
  count_dirs (cg_name, &in_used, &in_any, &n_used);
  check (n_used > 0 && in_used == n_used, "directory in every hierarchy (%d of %d)", in_used,
         n_used);
  check (sbx_cgroup_empty (cg_name), "empty after create");

  /* --- accounting -------------------------------------------------- */
  pid_t sleeper = spawn_in_cgroup (child_sleep, NULL);
  check (sleeper > 0, "spawn sleeper in cgroup");
  if (sleeper < 0)
    return;
  check (pid_in_cgroup (sleeper, cg_name), "/proc/%d/cgroup names %s in every hierarchy",
         (int) sleeper, cg_name);
  check (!sbx_cgroup_empty (cg_name), "not empty with a process in it");
  if (get_stats (&st))
    {
      check (st.pids_current >= 1, "pids_current %llu >= 1", (unsigned long long) st.pids_current);
      check (st.memory_max == 64 * MIB, "memory_max %llu == 64 MiB",
             (unsigned long long) st.memory_max);
      check (!st.frozen, "not frozen initially");
    }

  /* --- freeze ------------------------------------------------------ */
  pid_t busy = spawn_in_cgroup (child_busy, NULL);
  check (busy > 0, "spawn busy loop in cgroup");
  if (busy < 0)
    return;
  msleep (300);
  long long t0 = proc_cpu_ticks (busy, NULL);
  msleep (300);
  long long t1 = proc_cpu_ticks (busy, NULL);
  check (t1 > t0, "busy child runs before freeze (%lld ticks)", t1 - t0);

  uint64_t start = sbx_now_ns ();
  r = sbx_cgroup_freeze (cg_name, true, &err);
  double freeze_ms = (double) (sbx_now_ns () - start) / 1e6;
  check (r == 0, "freeze (%.2f ms)%s%s", freeze_ms, r ? ": " : "", r ? err.msg : "");
  char state = '?', sstate = '?';
  if (get_stats (&st))
    check (st.frozen, "stats report frozen");
  t0 = proc_cpu_ticks (busy, &state);
  proc_cpu_ticks (sleeper, &sstate);
  printf ("info: /proc state while frozen: busy=%c sleeper=%c\n", state, sstate);
  uint64_t c0 = get_stats (&st) ? st.cpu_usage_ns : 0;
  msleep (500);
  t1 = proc_cpu_ticks (busy, NULL);
  uint64_t c1 = get_stats (&st) ? st.cpu_usage_ns : 0;
  check (t1 == t0 && t0 >= 0, "busy child gets no CPU while frozen (%lld ticks in 500 ms)",
         t1 - t0);
  check (c1 - c0 < 1000000, "cgroup CPU usage flat while frozen (%llu ns in 500 ms)",
         (unsigned long long) (c1 - c0));

  start = sbx_now_ns ();
  r = sbx_cgroup_freeze (cg_name, false, &err);
  double thaw_ms = (double) (sbx_now_ns () - start) / 1e6;
  check (r == 0, "thaw (%.2f ms)%s%s", thaw_ms, r ? ": " : "", r ? err.msg : "");
  if (get_stats (&st))
    check (!st.frozen, "stats report thawed");

  /* --- CPU quota: 500 millis = half a CPU for a single busy loop ---- */
  c0 = get_stats (&st) ? st.cpu_usage_ns : 0;
  start = sbx_now_ns ();
  msleep (1000);
  c1 = get_stats (&st) ? st.cpu_usage_ns : 0;
  double share = (double) (c1 - c0) / (double) (sbx_now_ns () - start);
  check (share > 0.3 && share < 0.7, "CPU share under 500 millis is %.2f (want ~0.5)", share);

  /* --- OOM --------------------------------------------------------- */
  uint64_t oom_before = get_stats (&st) ? st.oom_kills : 0;
  size_t hog_size = 200 * MIB;
  pid_t hog = spawn_in_cgroup (child_hog, &hog_size);
  check (hog > 0, "spawn 200 MiB allocator in cgroup");
  if (hog > 0)
    {
      r = wait_timeout (hog, &status, 20000);
      check (r == 0 && killed_by (status, SIGKILL), "allocator killed by SIGKILL (status 0x%x)",
             r == 0 ? status : -1);
      if (r < 0)
        {
          kill (hog, SIGKILL);
          waitpid (hog, NULL, 0);
        }
      if (get_stats (&st))
        {
          check (st.oom_kills >= oom_before + 1, "oom_kills %llu >= 1",
                 (unsigned long long) st.oom_kills);
          check (st.memory_current <= 64 * MIB, "memory_current %llu <= limit",
                 (unsigned long long) st.memory_current);
          printf ("info: memory_cache %llu\n", (unsigned long long) st.memory_cache);
        }
    }

  /* --- pids.max ---------------------------------------------------- */
  pid_t forker = spawn_in_cgroup (child_forker, NULL);
  check (forker > 0, "spawn forker in cgroup");
  if (forker > 0)
    {
      r = wait_timeout (forker, &status, 20000);
      bool exited = r == 0 && WIFEXITED (status);
      int code = exited ? WEXITSTATUS (status) : -1;
      check (exited && code >= 1 && code < 200, "%d of 32 forks failed with EAGAIN (exit %d)",
             code < 200 ? code : 0, code);
      if (r < 0)
        {
          kill (forker, SIGKILL);
          waitpid (forker, NULL, 0);
        }
      if (get_stats (&st))
        check (st.pids_current == 2, "pids_current back to 2 (is %llu)",
               (unsigned long long) st.pids_current);
    }

  /* --- kill of a frozen tree ---------------------------------------- */
  r = sbx_cgroup_freeze (cg_name, true, &err);
  check (r == 0, "freeze again%s%s", r ? ": " : "", r ? err.msg : "");
  start = sbx_now_ns ();
  r = sbx_cgroup_kill (cg_name, &err);
  check (r == 0, "kill frozen cgroup%s%s", r ? ": " : "", r ? err.msg : "");
  r = wait_timeout (sleeper, &status, 3000);
  check (r == 0 && killed_by (status, SIGKILL), "sleeper died of SIGKILL");
  int r2 = wait_timeout (busy, &status, 3000);
  check (r2 == 0 && killed_by (status, SIGKILL), "busy child died of SIGKILL (%.1f ms)",
         (double) (sbx_now_ns () - start) / 1e6);
  if (r < 0)
    waitpid (sleeper, NULL, 0);
  if (r2 < 0)
    waitpid (busy, NULL, 0);
  for (int i = 0; i < 1000 && !sbx_cgroup_empty (cg_name); i++)
    msleep (1);
  check (sbx_cgroup_empty (cg_name), "empty after kill");
  if (get_stats (&st))
    check (!st.frozen, "kill left the cgroup thawed");

  /* --- destroy with a live process tree ----------------------------- */
  int pfd[2];
  if (pipe2 (pfd, O_CLOEXEC) < 0)
    return;
  pid_t dbl = spawn_in_cgroup (child_double, &pfd[1]);
  close (pfd[1]);
  pid_t grand = -1;
  if (dbl > 0 && read (pfd[0], &grand, sizeof grand) != sizeof grand)
    grand = -1;
  close (pfd[0]);
  check (dbl > 0 && grand > 0, "spawn child + grandchild in cgroup");
  if (grand > 0)
    check (pid_in_cgroup (grand, cg_name), "grandchild inherited the cgroup");

  start = sbx_now_ns ();
  r = sbx_cgroup_destroy (cg_name, 2000, &err);
  check (r == 0, "destroy (%.1f ms)%s%s", (double) (sbx_now_ns () - start) / 1e6, r ? ": " : "",
         r ? err.msg : "");
  if (dbl > 0)
    {
      r = wait_timeout (dbl, &status, 3000);
      check (r == 0 && killed_by (status, SIGKILL), "child killed by destroy");
    }
  if (grand > 0)
    {
      /* Reparented to us (subreaper) once its parent died. */
      r = wait_timeout (grand, &status, 3000);
      check (r == 0 && killed_by (status, SIGKILL), "grandchild killed by destroy");
    }
  check (!sbx_cgroup_exists (cg_name), "gone after destroy");
  count_dirs (cg_name, &in_used, &in_any, &n_used);
  check (in_any == 0, "no directory left in any cgroup mount (%d left)", in_any);
  check (sbx_cgroup_empty (cg_name), "no process left");
  r = sbx_cgroup_destroy (cg_name, 100, &err);
  check (r == 0, "destroy of a missing cgroup is fine");
  r = sbx_cgroup_stats (cg_name, &st, &err);
  check (r < 0 && err.code == ENOENT, "stats of a missing cgroup fail with ENOENT");
  r = sbx_cgroup_kill (cg_name, &err);
  check (r < 0 && err.code == ENOENT, "kill of a missing cgroup fails with ENOENT");

  /* A sibling with no limits: stats report unlimited memory as 0. */
  char plain[96];
  snprintf (plain, sizeof plain, "%s-plain", cg_name);
  r = sbx_cgroup_create (plain, NULL, &err);
  check (r == 0, "create %s without limits%s%s", plain, r ? ": " : "", r ? err.msg : "");
  if (r == 0)
    {
      r = sbx_cgroup_stats (plain, &st, &err);
      check (r == 0 && st.memory_max == 0, "unlimited memory_max reads 0 (%llu)",
             (unsigned long long) st.memory_max);
      r = sbx_cgroup_destroy (plain, 1000, &err);
      check (r == 0 && !sbx_cgroup_exists (plain), "destroy %s", plain);
    }
}

/* ------------------------------------------------------------------ */

static void
cleanup_all (void)
{
  struct sbx_err err;
  char plain[96];
  snprintf (plain, sizeof plain, "%s-plain", cg_name);
  if (sbx_cgroup_destroy (cg_name, 2000, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  if (sbx_cgroup_destroy (plain, 2000, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  /* The shared parent goes only if no other run still uses it. */
  if (n_mnts == 0)
    load_mounts ();
  for (size_t i = 0; i < n_mnts; i++)
    {
      char path[1024];
      if (snprintf (path, sizeof path, "%s/%s", mnts[i].path, TEST_PARENT) >= (int) sizeof path)
        continue;
      if (rmdir (path) < 0 && errno != ENOENT && errno != EBUSY)
        fprintf (stderr, "cleanup: rmdir %s: %s\n", path, strerror (errno));
    }
}

int
main (void)
{
  if (geteuid () != 0)
    {
      printf ("test_cgroup: needs root, skipped\n0 passed, 0 failed\n");
      return 77;
    }
  unsigned char rnd[6];
  if (sbx_random_bytes (rnd, sizeof rnd) < 0)
    return 1;
  snprintf (cg_name, sizeof cg_name, TEST_PARENT "/t%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
            rnd[2], rnd[3], rnd[4], rnd[5]);
  prctl (PR_SET_CHILD_SUBREAPER, 1);

  int res[2];
  if (pipe2 (res, O_CLOEXEC) < 0)
    return 1;
  fflush (stdout);
  pid_t runner = fork ();
  if (runner < 0)
    return 1;
  if (runner == 0)
    {
      close (res[0]);
      run_tests ();
      int counts[2] = { passed, failed };
      if (write (res[1], counts, sizeof counts) != sizeof counts)
        _exit (1);
      fflush (stdout);
      _exit (0);
    }
  close (res[1]);
  /* The runner's children inherit the write end; never wait for them. */
  fcntl (res[0], F_SETFL, O_NONBLOCK);

  int status = 0;
  if (wait_timeout (runner, &status, RUNNER_TIMEOUT_S * 1000) < 0)
    {
      printf ("FAIL: runner hung for %d s, killed\n", RUNNER_TIMEOUT_S);
      kill (runner, SIGKILL);
      waitpid (runner, &status, 0);
    }
  int counts[2];
  if (read (res[0], counts, sizeof counts) == sizeof counts)
    {
      passed = counts[0];
      failed = counts[1];
    }
  else
    {
      printf ("FAIL: runner died (status 0x%x)\n", status);
      failed++;
    }

  cleanup_all ();
  /* Reap whatever the runner left behind (we are its subreaper). */
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;

  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
