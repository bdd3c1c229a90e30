/*
 * test_seccomp.c - unit test of the sandbox system call filter.
 *
 * Every check runs in a child of its own: the child sets
 * PR_SET_NO_NEW_PRIVS, loads the filter with sbx_seccomp_load, attempts one
 * operation and reports through its exit status (0 pass, 1 fail, 77 skip),
 * or is expected to die of SIGSYS.  The parent never loads the filter.
 *
 * Probes of dangerous calls use arguments that would be harmless, and fail
 * with some other errno, were the filter to let them through: the test runs
 * as root on a development host.
 *
 * Build:
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O2 -Isrc -o test_seccomp \
 *       tests/unit/test_seccomp.c src/core/seccomp.c src/common/error.c \
 *       src/common/util.c -lseccomp
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif

#include "core/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define PASS 0
#define FAIL 1
#define SKIP 77
#define LOAD_FAILED 99

/* A path that exists nowhere, so that path-taking calls fail with ENOENT
   rather than act should they get past the filter. */
#define NOWHERE "/nonexistent-sbxd-seccomp-test"

static const char *self_exe;
static int n_pass, n_fail, n_skip;

static int
expect_errno (const char *what, long ret, int want)
{
  if (ret == -1 && errno == want)
    return PASS;
  if (ret == -1)
    fprintf (stderr, "    %s: failed with %s, want %s\n", what,
             strerrorname_np (errno), strerrorname_np (want));
  else
    fprintf (stderr, "    %s: returned %ld, want %s\n", what, ret,
             strerrorname_np (want));
  return FAIL;
}

static int
expect_ok (const char *what, long ret)
{
  if (ret >= 0)
    return PASS;
  fprintf (stderr, "    %s: failed with %s\n", what, strerrorname_np (errno));
  return FAIL;
}

/* Wait for PID; return its exit code, or 128 + signal. */
static int
wait_status (pid_t pid)
{
  int status;
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  if (WIFSIGNALED (status))
    return 128 + WTERMSIG (status);
  return -1;
}

/* Run ARGV (already under the filter) and expect exit status 0. */
static int
run_program (char *const argv[])
{
  pid_t pid = fork ();
  if (pid < 0)
    return expect_ok ("fork", -1);
  if (pid == 0)
    {
      int null = open ("/dev/null", O_WRONLY);
      if (null >= 0)
        dup2 (null, STDOUT_FILENO);
      execv (argv[0], argv);
      _exit (127);
    }
  int st = wait_status (pid);
  if (st == 0)
    return PASS;
  fprintf (stderr, "    %s exited with status %d\n", argv[0], st);
  return FAIL;
}

/* --- the checks; each runs in a filtered child -------------------------- */

static int
check_unshare_user (void)
{
  return expect_errno ("unshare(CLONE_NEWUSER)", unshare (CLONE_NEWUSER), EPERM);
}

static int
check_unshare_mount (void)
{
  return expect_errno ("unshare(CLONE_NEWNS)", unshare (CLONE_NEWNS), EPERM);
}

static int
clone_flags (unsigned long flags)
{
  long ret = syscall (SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (ret == 0)
    _exit (0);
  if (ret > 0)
    wait_status ((pid_t) ret);
  return expect_errno ("clone(namespace flag)", ret, EPERM);
}

static int
check_clone_newuser (void)
{
  return clone_flags (CLONE_NEWUSER);
}

static int
check_clone_newnet (void)
{
  return clone_flags (CLONE_NEWNET);
}

static int
check_clone3_enosys (void)
{
  /* struct clone_args, version 0: flags, pidfd, child_tid, parent_tid,
     exit_signal, stack, stack_size, tls. */
  uint64_t args[8] = { 0 };
  args[4] = SIGCHLD;
  long ret = syscall (SYS_clone3, args, sizeof args);
  if (ret == 0)
    _exit (0);
  if (ret > 0)
    wait_status ((pid_t) ret);
  return expect_errno ("clone3", ret, ENOSYS);
}

static int
check_fork (void)
{
  pid_t pid = fork ();
  if (pid < 0)
    return expect_ok ("fork", -1);
  if (pid == 0)
    _exit (42);
  int st = wait_status (pid);
  if (st == 42)
    return PASS;
  fprintf (stderr, "    fork child status %d, want 42\n", st);
  return FAIL;
}

static void *
thread_main (void *arg)
{
  return arg;
}

/* glibc >= 2.34 creates threads with clone3 and must fall back to clone. */
static int
check_pthread (void)
{
  pthread_t t;
  void *out = NULL;
  int ret = pthread_create (&t, NULL, thread_main, (void *) 0x5bd);
  if (ret != 0)
    {
      fprintf (stderr, "    pthread_create: %s\n", strerror (ret));
      return FAIL;
    }
  pthread_join (t, &out);
  return out == (void *) 0x5bd ? PASS : FAIL;
}

static int
check_exec_true (void)
{
  char *argv[] = { "/bin/true", NULL };
  return run_program (argv);
}

static int
check_exec_shell (void)
{
  char *argv[] = { "/bin/sh", "-c",
                   "ls / >/dev/null && cat /proc/self/status >/dev/null",
                   NULL };
  return run_program (argv);
}

static int
check_exec_python (void)
{
  if (access ("/usr/bin/python3", X_OK) < 0)
    return SKIP;
  char *argv[] = { "/usr/bin/python3", "-c",
                   "import json,subprocess; subprocess.run([\"true\"], check=True)",
                   NULL };
  return run_program (argv);
}

/* Re-execute this binary (see main) to check that the filter, both halves
   of it, survives execve. */
static int
check_survives_exec (void)
{
  char *argv[] = { (char *) self_exe, "--probe-after-exec", NULL };
  return run_program (argv);
}

static int
probe_after_exec (void)
{
  int rc = expect_errno ("unshare after exec", unshare (CLONE_NEWUSER), EPERM);
  FILE *f = fopen ("/proc/self/status", "r");
  char line[256];
  int filters = -1;
  while (f && fgets (line, sizeof line, f))
    sscanf (line, "Seccomp_filters: %d", &filters);
  if (f)
    fclose (f);
  if (filters != 2)
    {
      fprintf (stderr, "    Seccomp_filters after exec: %d, want 2\n", filters);
      rc = FAIL;
    }
  return rc;
}

static int
check_mount (void)
{
  return expect_errno ("mount", mount ("none", NOWHERE, "tmpfs", 0, NULL), EPERM);
}

static int
check_keyctl (void)
{
  /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, no create. */
  return expect_errno ("keyctl", syscall (SYS_keyctl, 0, -3, 0), EPERM);
}

static int
check_bpf (void)
{
  return expect_errno ("bpf", syscall (SYS_bpf, 0, NULL, 0), EPERM);
}

static int
check_perf_event_open (void)
{
  return expect_errno ("perf_event_open",
                       syscall (SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
}

static int
check_userfaultfd (void)
{
  return expect_errno ("userfaultfd", syscall (SYS_userfaultfd, O_CLOEXEC), EPERM);
}

static int
check_open_by_handle_at (void)
{
  return expect_errno ("open_by_handle_at",
                       syscall (SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY),
                       EPERM);
}

static int
check_kexec_load (void)
{
  /* A foreign KEXEC_ARCH in the flags: EINVAL if it got through. */
  return expect_errno ("kexec_load",
                       syscall (SYS_kexec_load, 0, 0, NULL, 0x7fff0000UL), EPERM);
}

static int
check_io_uring_setup (void)
{
  return expect_errno ("io_uring_setup",
                       syscall (SYS_io_uring_setup, 1, NULL), EPERM);
}

/* More calls that must be refused, all with harmless arguments. */
struct denied {
  const char *name;
  long nr;
  long a[6];
};

static int
check_denied_misc (void)
{
  static char handle[256];
  /* Out of the +-15 h range: EINVAL before anything is set. */
  static struct timezone bad_tz = { 9999, 0 };
  const struct denied calls[] = {
    { "umount2", SYS_umount2, { (long) NOWHERE, 0 } },
    { "pivot_root", SYS_pivot_root, { (long) NOWHERE, (long) NOWHERE } },
    { "setns", SYS_setns, { -1, 0 } },
    { "add_key", SYS_add_key, { 0, 0, 0, 0, 0 } },
    { "request_key", SYS_request_key, { 0, 0, 0, 0 } },
    { "name_to_handle_at", SYS_name_to_handle_at,
      { AT_FDCWD, (long) NOWHERE, (long) handle, 0, 0 } },
    { "kexec_file_load", SYS_kexec_file_load, { -1, -1, 0, 0, 0 } },
    { "init_module", SYS_init_module, { 0, 0, (long) "" } },
    { "finit_module", SYS_finit_module, { -1, (long) "", 0 } },
    { "delete_module", SYS_delete_module, { (long) "sbxd_no_such_module", O_NONBLOCK } },
    { "iopl", SYS_iopl, { 0 } },
    { "ioperm", SYS_ioperm, { 0, 0, 0 } },
    { "swapon", SYS_swapon, { (long) NOWHERE, 0 } },
    { "swapoff", SYS_swapoff, { (long) NOWHERE } },
    { "reboot", SYS_reboot, { 0, 0, 0, 0 } },
    { "acct", SYS_acct, { (long) NOWHERE } },
    { "clock_settime", SYS_clock_settime, { CLOCK_REALTIME, 0 } },
    { "settimeofday", SYS_settimeofday, { 0, (long) &bad_tz } },
    { "adjtimex", SYS_adjtimex, { 0 } },
    { "clock_adjtime", SYS_clock_adjtime, { CLOCK_REALTIME, 0 } },
    { "syslog", SYS_syslog, { 10, 0, 0 } },
    { "quotactl", SYS_quotactl, { 0, 0, 0, 0 } },
    { "quotactl_fd", SYS_quotactl_fd, { -1, 0, 0, 0 } },
    { "lookup_dcookie", SYS_lookup_dcookie, { 0, 0, 0 } },
    { "sethostname", SYS_sethostname, { 0, 1 << 20 } },
    { "pidfd_getfd", SYS_pidfd_getfd, { -1, 0, 0 } },
    { "process_vm_readv", SYS_process_vm_readv, { 0, 0, 0, 0, 0, 0 } },
    { "process_vm_writev", SYS_process_vm_writev, { 0, 0, 0, 0, 0, 0 } },
    { "kcmp", SYS_kcmp, { 0, 0, 99, 0, 0 } },
    { "io_uring_enter", SYS_io_uring_enter, { -1, 0, 0, 0, 0, 0 } },
    { "io_uring_register", SYS_io_uring_register, { -1, 0, 0, 0 } },
    { "fsopen", SYS_fsopen, { 0, 0 } },
    { "fsconfig", SYS_fsconfig, { -1, 0, 0, 0, 0 } },
    { "fsmount", SYS_fsmount, { -1, 0, 0 } },
    { "fspick", SYS_fspick, { -1, 0, 0 } },
    { "open_tree", SYS_open_tree, { -1, 0, 0 } },
    { "move_mount", SYS_move_mount, { -1, 0, -1, 0, 0 } },
    { "mount_setattr", SYS_mount_setattr, { -1, 0, 0, 0, 0 } },
    { "fanotify_init", SYS_fanotify_init, { ~0L, 0 } },
    { "mbind", SYS_mbind, { 0, 0, 0, 0, 0, 0 } },
    { "set_mempolicy", SYS_set_mempolicy, { -1, 0, 0 } },
    { "migrate_pages", SYS_migrate_pages, { -1, 0, 0, 0 } },
    { "move_pages", SYS_move_pages, { -1, 0, 0, 0, 0, 0 } },
    { "uselib", SYS_uselib, { 0 } },
    { "ustat", SYS_ustat, { 0, 0 } },
    { "sysfs", SYS_sysfs, { 99 } },
    { "_sysctl", SYS__sysctl, { 0 } },
#ifdef SYS_lsm_list_modules
    { "lsm_list_modules", SYS_lsm_list_modules, { 0, 0, 0 } },
#else
    { "lsm_list_modules", 461, { 0, 0, 0 } },
#endif
  };
  int rc = PASS;
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
    {
      const struct denied *c = &calls[i];
      long ret = syscall (c->nr, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4],
                          c->a[5]);
      if (expect_errno (c->name, ret, EPERM) != PASS)
        rc = FAIL;
    }
  return rc;
}

static int
check_socket_denied (void)
{
  struct {
    const char *name;
    long domain, type, protocol;
    int want;
  } calls[] = {
    { "AF_ALG", AF_ALG, SOCK_SEQPACKET, 0, EAFNOSUPPORT },
    { "AF_VSOCK", AF_VSOCK, SOCK_STREAM, 0, EAFNOSUPPORT },
    { "AF_PACKET raw", AF_PACKET, SOCK_RAW, 0, EAFNOSUPPORT },
    { "AF_PACKET dgram", AF_PACKET, SOCK_DGRAM, 0, EAFNOSUPPORT },
    { "AF_KEY", AF_KEY, SOCK_RAW, 2, EAFNOSUPPORT },
    { "AF_INET raw icmp", AF_INET, SOCK_RAW | SOCK_CLOEXEC, 1, EPERM },
    { "AF_INET6 raw", AF_INET6, SOCK_RAW | SOCK_NONBLOCK, 58, EPERM },
    { "AF_UNIX raw", AF_UNIX, SOCK_RAW, 0, EPERM },
    /* High bits the kernel ignores must not hide the value. */
    { "AF_ALG high bits", (1L << 32) | AF_ALG, SOCK_SEQPACKET, 0, EAFNOSUPPORT },
    { "AF_VSOCK high bits", (1L << 32) | AF_VSOCK, SOCK_STREAM, 0, EAFNOSUPPORT },
    { "AF_INET raw high bits", AF_INET, (1L << 32) | SOCK_RAW, 1, EPERM },
  };
  int rc = PASS;
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
    if (expect_errno (calls[i].name,
                      syscall (SYS_socket, calls[i].domain, calls[i].type,
                               calls[i].protocol),
                      calls[i].want) != PASS)
      rc = FAIL;
  return rc;
}

static int
check_socket_allowed (void)
{
  struct {
    const char *name;
    int domain, type, protocol;
  } calls[] = {
    { "AF_INET stream", AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0 },
    { "AF_INET dgram", AF_INET, SOCK_DGRAM, 0 },
    { "AF_UNIX stream", AF_UNIX, SOCK_STREAM, 0 },
    { "AF_UNIX dgram", AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0 },
    { "AF_NETLINK raw", AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0 /* ROUTE */ },
  };
  int rc = PASS;
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
    {
      int fd = socket (calls[i].domain, calls[i].type, calls[i].protocol);
      if (expect_ok (calls[i].name, fd) != PASS)
        rc = FAIL;
      if (fd >= 0)
        close (fd);
    }

  /* getifaddrs talks to the kernel over a SOCK_RAW netlink socket. */
  struct ifaddrs *ifa = NULL;
  if (expect_ok ("getifaddrs", getifaddrs (&ifa)) != PASS)
    rc = FAIL;
  if (ifa)
    freeifaddrs (ifa);
  return rc;
}

static int
check_ioctl_tty (void)
{
  int master = posix_openpt (O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt (master) < 0 || unlockpt (master) < 0)
    {
      fprintf (stderr, "    no pty: %s\n", strerror (errno));
      return SKIP;
    }
  int slave = open (ptsname (master), O_RDWR | O_NOCTTY);
  if (slave < 0)
    return expect_ok ("open pty slave", -1);

  int rc = PASS;
  struct winsize ws;
  char c = 'x';
  if (expect_ok ("ioctl(TIOCGWINSZ)", ioctl (slave, TIOCGWINSZ, &ws)) != PASS)
    rc = FAIL;
  if (expect_errno ("ioctl(TIOCSTI)", ioctl (slave, TIOCSTI, &c), EPERM) != PASS)
    rc = FAIL;
  if (expect_errno ("ioctl(TIOCSTI | 1 << 32)",
                    syscall (SYS_ioctl, slave, (1UL << 32) | TIOCSTI, &c),
                    EPERM) != PASS)
    rc = FAIL;
  char sel = 0; /* TIOCL_SETSEL with no data: ENOTTY/EINVAL if let through */
  if (expect_errno ("ioctl(TIOCLINUX)", ioctl (slave, TIOCLINUX, &sel), EPERM)
      != PASS)
    rc = FAIL;
  close (slave);
  close (master);
  return rc;
}

static int
check_personality (void)
{
  int rc = PASS;
  if (expect_ok ("personality(query)", personality (0xffffffff)) != PASS)
    rc = FAIL;
  if (expect_ok ("personality(PER_LINUX)", personality (PER_LINUX)) != PASS)
    rc = FAIL;
  if (expect_errno ("personality(READ_IMPLIES_EXEC)",
                    personality (READ_IMPLIES_EXEC), EPERM) != PASS)
    rc = FAIL;
  if (expect_errno ("personality(ADDR_NO_RANDOMIZE)",
                    personality (ADDR_NO_RANDOMIZE), EPERM) != PASS)
    rc = FAIL;
  return rc;
}

/* ptrace of one's own child is allowed. */
static int
check_ptrace_child (void)
{
  pid_t pid = fork ();
  if (pid < 0)
    return expect_ok ("fork", -1);
  if (pid == 0)
    {
      if (ptrace (PTRACE_TRACEME, 0, NULL, NULL) < 0)
        _exit (3);
      raise (SIGSTOP);
      _exit (0);
    }
  int status;
  if (waitpid (pid, &status, 0) < 0 || !WIFSTOPPED (status))
    {
      fprintf (stderr, "    traced child did not stop (status %#x)\n", status);
      return FAIL;
    }
  if (expect_ok ("ptrace(PTRACE_CONT)", ptrace (PTRACE_CONT, pid, NULL, NULL))
      != PASS)
    {
      kill (pid, SIGKILL);
      wait_status (pid);
      return FAIL;
    }
  return wait_status (pid) == 0 ? PASS : FAIL;
}

/* A 64-bit process making i386 (int 0x80) or x32 system calls: killed. */
static int
check_x32_killed (void)
{
#if defined(__x86_64__)
  syscall (0x40000000L | SYS_getpid);
  return FAIL;
#else
  return SKIP;
#endif
}

static int
check_i386_killed (void)
{
#if defined(__x86_64__)
  /* A kernel without IA32 emulation (ia32_emulation=0) answers int 0x80
     with SIGSEGV, which the harness reports as a skip; AddressSanitizer's
     handler would turn it into an exit status, so the default action is
     put back first, by the raw call (the sanitizer keeps its handler
     against sigaction) */
  struct
  {
    void (*handler) (int);
    unsigned long flags;
    void (*restorer) (void);
    unsigned long mask;
  } dfl = { SIG_DFL, 0, NULL, 0 };
  if (syscall (SYS_rt_sigaction, SIGSEGV, &dfl, NULL, sizeof dfl.mask) < 0)
    return FAIL;
  long ret;
  /* 20 is getpid in the i386 table. */
  __asm__ volatile ("int $0x80"
                    : "=a"(ret)
                    : "a"(20L)
                    : "memory", "r8", "r9", "r10", "r11");
  (void) ret;
  return FAIL;
#else
  return SKIP;
#endif
}

/* --- harness ------------------------------------------------------------- */

struct check {
  const char *name;
  int (*fn) (void);
  int want_signal; /* 0: exit status decides */
};

static const struct check checks[] = {
  { "unshare(CLONE_NEWUSER) -> EPERM", check_unshare_user, 0 },
  { "unshare(CLONE_NEWNS) -> EPERM", check_unshare_mount, 0 },
  { "clone(CLONE_NEWUSER) -> EPERM", check_clone_newuser, 0 },
  { "clone(CLONE_NEWNET) -> EPERM", check_clone_newnet, 0 },
  { "clone3 -> ENOSYS", check_clone3_enosys, 0 },
  { "fork works", check_fork, 0 },
  { "pthread_create works", check_pthread, 0 },
  { "exec /bin/true", check_exec_true, 0 },
  { "exec /bin/sh (ls, cat)", check_exec_shell, 0 },
  { "exec python3 subprocess", check_exec_python, 0 },
  { "filter survives exec", check_survives_exec, 0 },
  { "mount -> EPERM", check_mount, 0 },
  { "keyctl -> EPERM", check_keyctl, 0 },
  { "bpf -> EPERM", check_bpf, 0 },
  { "perf_event_open -> EPERM", check_perf_event_open, 0 },
  { "userfaultfd -> EPERM", check_userfaultfd, 0 },
  { "open_by_handle_at -> EPERM", check_open_by_handle_at, 0 },
  { "kexec_load -> EPERM", check_kexec_load, 0 },
  { "io_uring_setup -> EPERM", check_io_uring_setup, 0 },
  { "other privileged calls -> EPERM", check_denied_misc, 0 },
  { "socket: denied families and SOCK_RAW", check_socket_denied, 0 },
  { "socket: inet, unix, netlink allowed", check_socket_allowed, 0 },
  { "ioctl: TIOCSTI denied, TIOCGWINSZ allowed", check_ioctl_tty, 0 },
  { "personality", check_personality, 0 },
  { "ptrace of own child", check_ptrace_child, 0 },
  { "x32 syscall -> SIGSYS", check_x32_killed, SIGSYS },
  { "i386 int 0x80 -> SIGSYS", check_i386_killed, SIGSYS },
};

static void
report (const char *name, int result, const char *why)
{
  const char *tag = result == PASS ? "ok  " : result == SKIP ? "skip" : "FAIL";
  if (result == PASS)
    n_pass++;
  else if (result == SKIP)
    n_skip++;
  else
    n_fail++;
  printf ("%s  %s%s%s\n", tag, name, why ? ": " : "", why ? why : "");
  fflush (stdout);
}

static void
run_check (const struct check *c)
{
  fflush (stdout);
  fflush (stderr);
  pid_t pid = fork ();
  if (pid < 0)
    {
      report (c->name, FAIL, "fork failed");
      return;
    }
  if (pid == 0)
    {
      struct sbx_err err = { 0 };
      if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        _exit (LOAD_FAILED);
      if (sbx_seccomp_load (&err) < 0)
        {
          fprintf (stderr, "    %s\n", err.msg);
          _exit (LOAD_FAILED);
        }
      _exit (c->fn ());
    }

  int st = wait_status (pid);
  char why[64];
  if (c->want_signal)
    {
      if (st == 128 + c->want_signal)
        report (c->name, PASS, NULL);
      else if (st == 128 + SIGSEGV && c->want_signal == SIGSYS
               && c->fn == check_i386_killed)
        report (c->name, SKIP, "no IA32 emulation in this kernel");
      else
        {
          snprintf (why, sizeof why, "status %d", st);
          report (c->name, FAIL, why);
        }
      return;
    }
  if (st == PASS || st == SKIP)
    report (c->name, st, NULL);
  else
    {
      snprintf (why, sizeof why, st == LOAD_FAILED ? "filter did not load"
                : st > 128 ? "killed by signal %d" : "status %d",
                st > 128 ? st - 128 : st);
      report (c->name, FAIL, why);
    }
}

/* Without CAP_SYS_ADMIN and no_new_privs the kernel refuses the filter:
   the error must say so, and no filter may be left behind. */
static void
check_load_error (void)
{
  const char *name = "load without no_new_privs fails cleanly";
  fflush (stdout);
  pid_t pid = fork ();
  if (pid == 0)
    {
      struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
      struct __user_cap_data_struct data[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
      if (syscall (SYS_capset, &hdr, data) < 0)
        _exit (SKIP);
      struct sbx_err err = { 0 };
      if (sbx_seccomp_load (&err) == 0)
        _exit (FAIL);
      if (err.code != EACCES || strstr (err.msg, "no_new_privs") == NULL)
        {
          fprintf (stderr, "    error: code %d, \"%s\"\n", err.code, err.msg);
          _exit (FAIL);
        }
      /* Still unfiltered: a call the filter denies gives its own errno. */
      _exit (expect_errno ("setns after failed load", syscall (SYS_setns, -1, 0),
                           EBADF));
    }
  int st = pid < 0 ? FAIL : wait_status (pid);
  report (name, st == PASS || st == SKIP ? st : FAIL, NULL);
}

int
main (int argc, char **argv)
{
  if (argc > 1 && strcmp (argv[1], "--probe-after-exec") == 0)
    return probe_after_exec ();

  /* The re-exec check needs a path that stays valid in the children. */
  static char exe[4096];
  ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
  self_exe = n > 0 ? (exe[n] = '\0', exe) : argv[0];

  for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
    run_check (&checks[i]);
  check_load_error ();

  if (n_skip)
    printf ("(%d skipped)\n", n_skip);
  printf ("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
