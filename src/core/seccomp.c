/*
 * seccomp.c - the system call filter every sandbox process runs under.
 *
 * WHAT.  An allow-list modelled on Docker's (moby) default seccomp profile
 * as Docker applies it to a container holding the default capability set:
 * every system call an ordinary program makes is allowed, and everything
 * else fails with EPERM.  The calls Docker only allows with extra
 * capabilities (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_TIME,
 * CAP_SYS_NICE, CAP_SYSLOG, CAP_BPF, ...) stay denied, so a sandbox never
 * gets to mount, create namespaces, load BPF or kernel modules, use the
 * keyring, set the clock and so on, whatever its credentials say.  chroot
 * stays allowed, as under Docker, whose default set has CAP_SYS_CHROOT.
 *
 * WHY.  The sandbox runs arbitrary code as (namespaced) root; the filter
 * shrinks the kernel surface that code can reach to what programs need.
 * It is stricter than Docker where nothing ordinary loses out:
 *   - io_uring_* is denied: the operations in a ring (openat, socket,
 *     connect, ...) are never seen by seccomp, and io_uring has a long CVE
 *     record.  Current Docker profiles deny it as well; libuv and
 *     friends fall back to plain syscalls.
 *   - name_to_handle_at, process_vm_readv/writev, kcmp, pidfd_getfd,
 *     adjtimex and clock_adjtime are denied: nothing ordinary needs them.
 *   - ptrace IS allowed (debuggers, strace on one's own children).  The
 *     sandbox's PID 1 is protected by other means, and since Linux 4.8
 *     seccomp re-checks a syscall a tracer has rewritten, so ptrace is no
 *     way around the filter.
 * It also allows the recent variants of allowed calls (fchmodat2, the
 * *xattrat family, futex_wake/wait/requeue, map_shadow_stack, mseal,
 * cachestat), so that programs built against a new libc keep working.
 *
 * The default action is ERRNO(EPERM), not KILL: an unknown or newer
 * syscall then fails softly and programs take their fallback paths, and
 * EPERM is what Docker returns, so software already copes with it.
 *
 * ARCHITECTURES.  Only the native ABI is in the filter; a system call made
 * through any other ABI (on x86_64: the i386 ABI via int 0x80, and x32,
 * whose numbers carry bit 30 -- libseccomp sends both to the bad-arch
 * action when they are absent from the filter) kills the process.  Docker
 * also admits x86 and x32, but:
 *   - every rule below would need a second numbering;
 *   - i386 multiplexes sockets and SysV IPC through socketcall(2) and
 *     ipc(2), whose real arguments sit in user memory that BPF cannot
 *     read, so the socket family rules could simply be walked around;
 *   - the compat entry paths are a classic source of kernel bugs.
 * Killing rather than failing with EPERM makes the cause obvious (SIGSYS
 * in the exit status) instead of leaving a 32-bit program to stumble.
 *
 * TWO FILTERS.  Some rules are "allow X except these argument values"
 * (ioctl except TIOCSTI, socket except some families and SOCK_RAW).  One
 * libseccomp filter cannot say that when the exception's action equals the
 * default action: seccomp_rule_add refuses such a rule (EACCES), and an
 * unconditional rule for a syscall silently absorbs every conditional rule
 * for it (checked with libseccomp 2.5.4).  The kernel, though, runs every
 * filter attached to a task and keeps the most severe verdict, ERRNO
 * beating ALLOW.  So a second, small filter whose default is ALLOW holds
 * the exceptions as plain ERRNO rules.  It costs next to nothing: since
 * Linux 5.11 the kernel caches, per syscall, "every filter allows this
 * whatever the arguments", so plainly allowed calls run no BPF at all and
 * only refused or argument-checked ones (ioctl, socket, clone, ...) pay
 * for the second program's few instructions.
 *
 * Integer arguments are compared on their low 32 bits only
 * (SCMP_CMP_MASKED_EQ with 0xffffffff): the kernel truncates an int or
 * unsigned int argument, so a plain 64-bit comparison could be sidestepped
 * by setting high bits (the flatpak TIOCSTI bypass, CVE-2019-10063).
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE
#endif

#include "seccomp.h"
#include "../common/util.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <seccomp.h>

/* Mask selecting the part of a 64-bit argument register that the kernel
   reads for an int / unsigned int parameter. */
#define ARG32 0xffffffffULL

/* The namespace flags of clone(2).  CLONE_NEWTIME (0x80) is left out on
   purpose, as in Docker: for clone(2) that bit lies inside CSIGNAL (the
   exit signal), and a time namespace can only be made with unshare or
   clone3, both denied below. */
#define CLONE_NS_FLAGS                                                  \
  ((uint64_t) (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER  \
               | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP))

/* Allowed unconditionally.  Names the installed libseccomp does not know,
   or that do not exist on the native architecture (stat on aarch64,
   arch_prctl off x86), are skipped: the list is the same on every 64-bit
   build.  Absent on purpose (so denied with EPERM) are, among others:
   mount, umount2, pivot_root, the new mount API (fsopen, fsconfig,
   fsmount, fspick, move_mount, open_tree, mount_setattr, statmount,
   listmount), unshare, setns, clone3 (see below), keyctl, add_key,
   request_key, bpf, perf_event_open, userfaultfd, io_uring_*, kexec_*,
   *_module, open_by_handle_at, name_to_handle_at, iopl, ioperm, swapon,
   swapoff, reboot, acct, settimeofday, clock_settime, clock_adjtime,
   adjtimex, syslog, lookup_dcookie, quotactl, quotactl_fd, nfsservctl,
   vhangup, sethostname, setdomainname, pidfd_getfd, process_vm_readv,
   process_vm_writev, process_madvise, kcmp, lsm_*, fanotify_init, mbind,
   migrate_pages, move_pages, get/set_mempolicy, vm86, uselib, ustat,
   sysfs, _sysctl and the long-removed module calls. */
static const char *const allowed_syscalls[] = {
  /* File descriptors and plain I/O. */
  "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
  "preadv2", "pwritev", "pwritev2", "open", "openat", "openat2", "creat",
  "close", "close_range", "dup", "dup2", "dup3", "lseek", "fcntl", "flock",
  "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fallocate",
  "truncate", "ftruncate", "sendfile", "splice", "tee", "vmsplice",
  "copy_file_range", "readahead", "fadvise64", "pipe", "pipe2",
  /* ioctl is restricted by the exception filter (TIOCSTI, TIOCLINUX). */
  "ioctl",

  /* File system metadata. */
  "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
  "access", "faccessat", "faccessat2", "getdents", "getdents64", "getcwd",
  "chdir", "fchdir", "chroot", "rename", "renameat", "renameat2", "mkdir",
  "mkdirat", "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink",
  "symlinkat", "readlink", "readlinkat", "chmod", "fchmod", "fchmodat",
  "fchmodat2", "chown", "fchown", "lchown", "fchownat", "umask", "mknod",
  "mknodat", "utime", "utimes", "futimesat", "utimensat",
  "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr",
  "lsetxattr", "fsetxattr", "setxattrat", "listxattr", "llistxattr",
  "flistxattr", "listxattrat", "removexattr", "lremovexattr",
  "fremovexattr", "removexattrat",

  /* Change notification; fanotify_mark is inert without fanotify_init. */
  "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
  "fanotify_mark",

  /* Waiting and event sources; Linux AIO (not io_uring). */
  "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1",
  "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
  "epoll_ctl_old", "epoll_wait_old", "eventfd", "eventfd2", "signalfd",
  "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_gettime",
  "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
  "io_pgetevents",

  /* Memory. */
  "brk", "mmap", "munmap", "mremap", "mprotect", "msync", "mincore",
  "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
  "remap_file_pages", "memfd_create", "memfd_secret", "membarrier",
  "pkey_alloc", "pkey_free", "pkey_mprotect", "cachestat",
  "map_shadow_stack", "mseal", "process_mrelease",

  /* Processes and threads (clone, clone3, personality: see below). */
  "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4",
  "waitid", "kill", "tkill", "tgkill", "getpid", "getppid", "gettid",
  "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
  "set_robust_list", "get_robust_list", "rseq", "restart_syscall",
  "pidfd_open", "pidfd_send_signal", "ptrace", "prctl", "arch_prctl",
  "modify_ldt", "set_thread_area", "get_thread_area", "capget", "capset",
  "getrusage", "getrlimit", "setrlimit", "prlimit64", "times", "uname",
  "sysinfo", "getcpu", "getrandom", "seccomp", "landlock_create_ruleset",
  "landlock_add_rule", "landlock_restrict_self",

  /* Scheduling. */
  "sched_yield", "sched_getaffinity", "sched_setaffinity",
  "sched_getparam", "sched_setparam", "sched_getscheduler",
  "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
  "sched_rr_get_interval", "sched_getattr", "sched_setattr", "getpriority",
  "setpriority", "ioprio_get", "ioprio_set",

  /* Credentials (the kernel still checks capabilities). */
  "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
  "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid",
  "setresgid", "setgroups", "setfsuid", "setfsgid",

  /* Signals. */
  "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
  "rt_sigsuspend", "rt_sigtimedwait", "rt_sigqueueinfo",
  "rt_tgsigqueueinfo", "sigaltstack", "pause", "alarm",

  /* Time (reading clocks and sleeping; never setting them). */
  "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
  "gettimeofday", "time", "getitimer", "setitimer", "timer_create",
  "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",

  /* Futexes and System V / POSIX IPC (namespaced by the sandbox). */
  "futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
  "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
  "semctl", "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink",
  "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",

  /* Sockets (socket itself is restricted by the exception filter). */
  "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
  "getsockname", "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg",
  "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt",
};

/* Syscalls numbered after Linux 5.1 share one number on every
   architecture but alpha, mips and ia64.  sbxd is linked statically
   against Debian 12's libseccomp 2.5.4, whose table stops at futex_requeue
   (older releases stop earlier still); resolving the rest by number keeps
   the filter independent of the libseccomp release.  It matters most for
   clone3, which must fail with ENOSYS (not the default EPERM) for glibc
   >= 2.34 to fall back to clone, and for fchmodat2, whose failure glibc
   >= 2.39 only papers over on ENOSYS. */
struct syscall_number {
  const char *name;
  int nr;
};

static const struct syscall_number unified_syscalls[] = {
#if (defined(__x86_64__) && !defined(__ILP32__)) || defined(__aarch64__)
  { "clone3", 435 }, { "close_range", 436 }, { "openat2", 437 },
  { "faccessat2", 439 }, { "epoll_pwait2", 441 },
  { "landlock_create_ruleset", 444 }, { "landlock_add_rule", 445 },
  { "landlock_restrict_self", 446 }, { "memfd_secret", 447 },
  { "process_mrelease", 448 }, { "futex_waitv", 449 },
  { "cachestat", 451 }, { "fchmodat2", 452 }, { "map_shadow_stack", 453 },
  { "futex_wake", 454 }, { "futex_wait", 455 }, { "futex_requeue", 456 },
  { "mseal", 462 }, { "setxattrat", 463 }, { "getxattrat", 464 },
  { "listxattrat", 465 }, { "removexattrat", 466 },
#endif
  { NULL, -1 },
};

static void
cleanup_scmp_ctxp (scmp_filter_ctx *ctx)
{
  if (*ctx != NULL)
    seccomp_release (*ctx);
}

#define cleanup_scmp __attribute__ ((cleanup (cleanup_scmp_ctxp)))

/* The native syscall number of NAME, or -1 when it does not exist here.
   libseccomp answers negative "pseudo" numbers for calls that exist only
   on other architectures (socketcall on x86_64); those are skipped too. */
static int
resolve_syscall (const char *name)
{
  int nr = seccomp_syscall_resolve_name (name);
  if (nr >= 0)
    return nr;
  for (const struct syscall_number *s = unified_syscalls; s->name; s++)
    if (strcmp (s->name, name) == 0)
      return s->nr;
  return -1;
}

/* Add one rule, quietly skipping a syscall unknown on this system. */
static int
add_rule (scmp_filter_ctx ctx, uint32_t action, const char *name,
          unsigned int n_args, const struct scmp_arg_cmp *args,
          struct sbx_err *err)
{
  int nr = resolve_syscall (name);
  if (nr < 0)
    return 0;

  int ret = seccomp_rule_add_array (ctx, action, nr, n_args, args);
  if (UNLIKELY (ret < 0))
    return sbx_fail (err, -ret, "seccomp: add rule for %s", name);
  return 0;
}

/* A context for the native architecture only, with the attributes both
   filters share. */
static int
new_filter (scmp_filter_ctx *out, uint32_t default_action, const char *what,
            struct sbx_err *err)
{
  cleanup_scmp scmp_filter_ctx ctx = seccomp_init (default_action);
  if (UNLIKELY (ctx == NULL))
    return sbx_fail (err, ENOMEM, "seccomp: create %s filter", what);

  /* Foreign ABIs kill the whole process (see the top of the file).
     KILL_PROCESS needs Linux 4.14; before that, kill the thread. */
  int ret = seccomp_attr_set (ctx, SCMP_FLTATR_ACT_BADARCH,
                              SCMP_ACT_KILL_PROCESS);
  if (ret < 0)
    ret = seccomp_attr_set (ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL);
  if (UNLIKELY (ret < 0))
    return sbx_fail (err, -ret, "seccomp: set %s filter bad-arch action",
                     what);

  /* The caller set PR_SET_NO_NEW_PRIVS itself; libseccomp must not touch
     process attributes behind its back. */
  ret = seccomp_attr_set (ctx, SCMP_FLTATR_CTL_NNP, 0);
  if (UNLIKELY (ret < 0))
    return sbx_fail (err, -ret, "seccomp: clear %s filter NNP attribute",
                     what);

  /* The caller is single-threaded, so there is nothing to synchronise.
     Off is the default; EOPNOTSUPP only says the kernel lacks TSYNC. */
  ret = seccomp_attr_set (ctx, SCMP_FLTATR_CTL_TSYNC, 0);
  if (UNLIKELY (ret < 0 && ret != -EOPNOTSUPP))
    return sbx_fail (err, -ret, "seccomp: clear %s filter TSYNC attribute",
                     what);

  /* A binary search over syscall numbers instead of a linear scan of the
     ~300 allowed ones; only speed is at stake, so a failure is ignored. */
  (void) seccomp_attr_set (ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);

  /* Have seccomp_load report the kernel's errno (EACCES, EINVAL, ...)
     rather than libseccomp's catch-all ECANCELED; again only the quality
     of the error message is at stake. */
  (void) seccomp_attr_set (ctx, SCMP_FLTATR_API_SYSRAWRC, 1);

  *out = steal_pointer (&ctx);
  return 0;
}

/* 32-bit compare of argument N against VALUE. */
#define ARG_EQ32(n, value) SCMP_CMP ((n), SCMP_CMP_MASKED_EQ, ARG32, (value))

/* The allow-list proper: default EPERM. */
static int
build_allow_filter (scmp_filter_ctx ctx, struct sbx_err *err)
{
  size_t n = sizeof allowed_syscalls / sizeof allowed_syscalls[0];
  for (size_t i = 0; i < n; i++)
    if (add_rule (ctx, SCMP_ACT_ALLOW, allowed_syscalls[i], 0, NULL, err) < 0)
      return -1;

  /* clone makes threads and processes, never namespaces: unprivileged
     user namespaces are the door to most of the kernel's root-only code
     (mount, netfilter, ...).  The flags are argument 0 on every
     architecture sbxd builds for (s390 alone swaps the first two). */
  const struct scmp_arg_cmp no_new_ns[] = {
    SCMP_CMP (0, SCMP_CMP_MASKED_EQ, CLONE_NS_FLAGS, 0),
  };
  if (add_rule (ctx, SCMP_ACT_ALLOW, "clone", 1, no_new_ns, err) < 0)
    return -1;

  /* clone3 passes its flags in a struct in user memory, which BPF cannot
     inspect, so it cannot be limited like clone.  ENOSYS, as Docker
     returns, makes glibc (pthread_create, posix_spawn) and Go fall back to
     clone; EPERM would be reported to the program as a hard failure. */
  if (add_rule (ctx, SCMP_ACT_ERRNO (ENOSYS), "clone3", 0, NULL, err) < 0)
    return -1;

  /* personality: only the harmless personas Docker allows -- Linux, the
     32-bit uname of setarch/linux32, the 2.6-style uname (UNAME26), both,
     and 0xffffffff, which only queries.  Others such as READ_IMPLIES_EXEC
     weaken exploit mitigations. */
  static const uint64_t personas[] = {
    PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32 | UNAME26, 0xffffffffULL,
  };
  for (size_t i = 0; i < sizeof personas / sizeof personas[0]; i++)
    {
      const struct scmp_arg_cmp persona[] = { ARG_EQ32 (0, personas[i]) };
      if (add_rule (ctx, SCMP_ACT_ALLOW, "personality", 1, persona, err) < 0)
        return -1;
    }

  return 0;
}

/* The exceptions to what the allow-list lets through: default ALLOW,
   and each rule here turns an allowed call into an error. */
static int
build_exception_filter (scmp_filter_ctx ctx, struct sbx_err *err)
{
  /* TIOCSTI pushes bytes into a terminal's input queue, so a sandboxed
     program could type commands into whoever shares its terminal; the
     same holds for TIOCLINUX's selection paste on a virtual console. */
  static const uint64_t tty_requests[] = { TIOCSTI, TIOCLINUX };
  for (size_t i = 0; i < sizeof tty_requests / sizeof tty_requests[0]; i++)
    {
      const struct scmp_arg_cmp req[] = { ARG_EQ32 (1, tty_requests[i]) };
      if (add_rule (ctx, SCMP_ACT_ERRNO (EPERM), "ioctl", 1, req, err) < 0)
        return -1;
    }

  /* Socket families with a poor security record and no use in a sandbox:
     AF_KEY (IPsec keys), AF_PACKET (raw link-layer access), AF_ALG (the
     kernel crypto API) and AF_VSOCK (host <-> guest channels; Docker
     blocks only this one).  EAFNOSUPPORT is what a kernel without the
     family answers, which programs handle gracefully. */
  static const uint64_t families[] = { AF_KEY, AF_PACKET, AF_ALG, AF_VSOCK };
  for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
    {
      const struct scmp_arg_cmp fam[] = { ARG_EQ32 (0, families[i]) };
      if (add_rule (ctx, SCMP_ACT_ERRNO (EAFNOSUPPORT), "socket", 1, fam,
                    err) < 0)
        return -1;
    }

  /* SOCK_RAW in any family but AF_NETLINK: raw IP sockets can forge
     packets.  The type is masked to its low four bits (SOCK_TYPE_MASK),
     as the kernel does, so SOCK_CLOEXEC / SOCK_NONBLOCK do not hide it.
     EPERM is the kernel's own answer without CAP_NET_RAW, which ping
     copes with by using ICMP datagram sockets instead.  Netlink sockets
     are SOCK_RAW by convention (glibc's getaddrinfo and getifaddrs,
     iproute2, Go's net package) and carry no such power, hence the
     exception.  A 64-bit "!=" cannot be masked, but that errs on the safe
     side: AF_NETLINK with junk in the high bits is refused too. */
  const struct scmp_arg_cmp raw[] = {
    SCMP_CMP (0, SCMP_CMP_NE, AF_NETLINK, 0),
    SCMP_CMP (1, SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW),
  };
  if (add_rule (ctx, SCMP_ACT_ERRNO (EPERM), "socket", 2, raw, err) < 0)
    return -1;

  return 0;
}

/* A hint for the most likely reason the kernel refused a filter. */
static const char *
load_hint (int errnum)
{
  if (errnum == EACCES && prctl (PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0)
    return " (neither no_new_privs nor CAP_SYS_ADMIN in the user namespace)";
  return "";
}

/* The compiled programs, built once in the daemon.  A sandbox's first
   process is a fork-like clone of a multi-threaded daemon and may not call
   malloc, which libseccomp does: it only loads these. */
static struct sock_filter allow_prog[8192], except_prog[2048];
static unsigned short allow_len, except_len;
static pthread_once_t prepare_once = PTHREAD_ONCE_INIT;
static struct sbx_err prepare_err;
static int prepare_ret;

/* Export CTX's BPF program into BUF via a memfd. */
static int
export_bpf (scmp_filter_ctx ctx, struct sock_filter *buf, size_t max, unsigned short *len, const char *what,
            struct sbx_err *err)
{
  cleanup_close int fd = memfd_create ("sbxd-seccomp", MFD_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "seccomp: memfd for the %s filter", what);
  int ret = seccomp_export_bpf (ctx, fd);
  if (ret < 0)
    return sbx_fail (err, -ret, "seccomp: export the %s filter", what);
  off_t size = lseek (fd, 0, SEEK_END);
  if (size <= 0 || (size_t) size > max * sizeof *buf || size % sizeof *buf)
    return sbx_failx (err, E2BIG, "seccomp: the %s filter has an unexpected size (%lld)", what, (long long) size);
  if (pread (fd, buf, (size_t) size, 0) != size)
    return sbx_fail (err, errno, "seccomp: read back the %s filter", what);
  *len = (unsigned short) (size / sizeof *buf);
  return 0;
}

static void
prepare_once_fn (void)
{
  cleanup_scmp scmp_filter_ctx allow = NULL;
  cleanup_scmp scmp_filter_ctx except = NULL;
  struct sbx_err *err = &prepare_err;
  prepare_ret = -1;
  if (new_filter (&allow, SCMP_ACT_ERRNO (EPERM), "allow-list", err) < 0 || build_allow_filter (allow, err) < 0)
    return;
  if (new_filter (&except, SCMP_ACT_ALLOW, "exception", err) < 0 || build_exception_filter (except, err) < 0)
    return;
  if (export_bpf (allow, allow_prog, sizeof allow_prog / sizeof allow_prog[0], &allow_len, "allow-list", err) < 0
      || export_bpf (except, except_prog, sizeof except_prog / sizeof except_prog[0], &except_len, "exception", err)
             < 0)
    return;
  prepare_ret = 0;
}

int
sbx_seccomp_prepare (struct sbx_err *err)
{
  pthread_once (&prepare_once, prepare_once_fn);
  if (prepare_ret < 0 && err)
    *err = prepare_err;
  return prepare_ret;
}

int
sbx_seccomp_apply (struct sbx_err *err)
{
  if (allow_len == 0 || except_len == 0)
    return sbx_failx (err, EINVAL, "seccomp: filters not prepared");
  /* The allow-list goes first: should the second load fail, the stricter
     filter is already in place (the caller must still give up).  The
     order does not change any verdict: the exception filter only errors
     calls the allow-list allows, so the two never both answer ERRNO. */
  struct sock_fprog a = { allow_len, allow_prog }, x = { except_len, except_prog };
  if (syscall (SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &a) < 0)
    return sbx_fail (err, errno, "seccomp: load allow-list filter%s", load_hint (errno));
  if (syscall (SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &x) < 0)
    return sbx_fail (err, errno, "seccomp: load exception filter%s", load_hint (errno));
  return 0;
}

int
sbx_seccomp_load (struct sbx_err *err)
{
  if (sbx_seccomp_prepare (err) < 0)
    return -1;
  return sbx_seccomp_apply (err);
}
