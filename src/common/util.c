/*
 * util.c - see util.h.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void
sbx_cleanup_freep (void *p)
{
  void **pp = (void **) p;
  free (*pp);
}

void
sbx_cleanup_closep (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
    }
}

ssize_t
sbx_write_full (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  size_t done = 0;
  while (done < len)
    {
      ssize_t n = write (fd, p + done, len - done);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      done += (size_t) n;
    }
  return (ssize_t) done;
}

ssize_t
sbx_read_full (int fd, void *buf, size_t len)
{
  return sbx_read_by (fd, buf, len, 0);
}

ssize_t
sbx_read_by (int fd, void *buf, size_t len, uint64_t deadline_ns)
{
  char *p = buf;
  size_t done = 0;
  while (done < len)
    {
      if (deadline_ns)
        {
          uint64_t now = sbx_now_ns ();
          if (now >= deadline_ns)
            {
              errno = ETIMEDOUT;
              return -1;
            }
          uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
          struct pollfd pf = { fd, POLLIN, 0 };
          int pr = poll (&pf, 1, left_ms > INT_MAX ? INT_MAX : (int) left_ms);
          if (pr < 0 && errno != EINTR)
            return -1;
          if (pr <= 0)
            continue;
        }
      ssize_t n = read (fd, p + done, len - done);
      if (n < 0)
        {
          if (errno == EINTR || (deadline_ns && errno == EAGAIN))
            continue;
          return -1;
        }
      if (n == 0)
        break;
      done += (size_t) n;
    }
  return (ssize_t) done;
}

int
sbx_write_file_at (int dirfd, const char *path, const char *data, struct sbx_err *err)
{
  cleanup_close int fd = openat (dirfd, path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "open %s", path);
  if (sbx_write_full (fd, data, strlen (data)) < 0)
    return sbx_fail (err, errno, "write %s", path);
  return 0;
}

int
sbx_read_file_at (int dirfd, const char *path, char **out, size_t max, struct sbx_err *err)
{
  cleanup_close int fd = openat (dirfd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sbx_fail (err, errno, "open %s", path);
  /* sized by the file when it says (a small file must not cost a
     buffer of MAX: at 1 MiB that is an mmap and an munmap, whose TLB
     shootdown interrupts every core the daemon runs on), grown if it
     grows meanwhile */
  struct stat st;
  size_t cap = max;
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode) && (uint64_t) st.st_size < max)
    cap = st.st_size < 4096 ? 4096 : (size_t) st.st_size + 1; /* /proc's files say 0 */
  if (cap > max)
    cap = max;
  cleanup_free char *buf = malloc (cap + 1);
  if (buf == NULL)
    return sbx_fail (err, ENOMEM, "read %s", path);
  size_t n = 0;
  for (;;)
    {
      ssize_t k = sbx_read_full (fd, buf + n, cap - n);
      if (k < 0)
        return sbx_fail (err, errno, "read %s", path);
      n += (size_t) k;
      if (n < cap || cap == max)
        break;
      size_t more = cap * 2 < max ? cap * 2 : max;
      char *b = realloc (buf, more + 1);
      if (b == NULL)
        return sbx_fail (err, ENOMEM, "read %s", path);
      buf = b;
      cap = more;
    }
  buf[n] = '\0';
  *out = steal_pointer (&buf);
  return 0;
}

int
sbx_mkdir_p (const char *path, mode_t mode, struct sbx_err *err)
{
  char buf[4096];
  if (snprintf (buf, sizeof buf, "%s", path) >= (int) sizeof buf)
    return sbx_failx (err, ENAMETOOLONG, "path too long: %s", path);
  for (char *p = buf + 1; *p; p++)
    {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir (buf, mode) < 0 && errno != EEXIST)
        return sbx_fail (err, errno, "mkdir %s", buf);
      *p = '/';
    }
  if (mkdir (buf, mode) < 0 && errno != EEXIST)
    return sbx_fail (err, errno, "mkdir %s", buf);
  return 0;
}

static int
rm_one (const char *fpath, const struct stat *sb, int typeflag, struct FTW *ftw)
{
  (void) sb;
  (void) ftw;
  int r = typeflag == FTW_DP ? rmdir (fpath) : unlink (fpath);
  if (r < 0 && errno != ENOENT)
    return -1;
  return 0;
}

int
sbx_rm_rf (const char *path, struct sbx_err *err)
{
  if (nftw (path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && errno != ENOENT)
    return sbx_fail (err, errno, "remove %s", path);
  return 0;
}

uint64_t
sbx_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

int64_t
sbx_wall_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
sbx_random_bytes (void *buf, size_t n)
{
  char *p = buf;
  while (n > 0)
    {
      ssize_t r = getrandom (p, n, 0);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      p += r;
      n -= (size_t) r;
    }
  return 0;
}

unsigned long long
sbx_proc_stat_start (const char *stat)
{
  /* the command name, in parentheses, may hold blanks and ')': the
     fields counted start after the last ')'.  No strtok: the boots of
     concurrent creates read their inits' start times at once, and
     strtok's one hidden position let a thread count on through another
     thread's line (a start time recorded wrong, so a later start took a
     live sandbox for a dead one and cleaned it up) */
  const char *p = strrchr (stat, ')');
  if (p == NULL)
    return 0;
  p++;
  for (int field = 3; field < 22; field++) /* past fields 3 to 21 */
    {
      while (*p == ' ')
        p++;
      p = strchr (p, ' ');
      if (p == NULL)
        return 0;
    }
  while (*p == ' ')
    p++;
  if (*p < '0' || *p > '9')
    return 0;
  errno = 0;
  unsigned long long start = strtoull (p, NULL, 10);
  return errno ? 0 : start;
}

unsigned long long
sbx_proc_start_time (pid_t pid)
{
  char path[64], buf[1024];
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = sbx_read_full (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  return sbx_proc_stat_start (buf);
}

int
sbx_path (char *buf, size_t n, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = vsnprintf (buf, n, fmt, ap);
  va_end (ap);
  if (r < 0 || (size_t) r >= n)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  return 0;
}

void
sbx_unescape_octal (char *s)
{
  char *w = s;
  for (char *r = s; *r; r++)
    {
      if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7')
        {
          *w++ = (char) (((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
          r += 3;
        }
      else
        *w++ = *r;
    }
  *w = '\0';
}

int
sbx_reserve (void *bufp, size_t *cap, size_t need, size_t min)
{
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : min;
  while (ncap < need)
    ncap *= 2;
  void **bp = bufp;
  void *nb = realloc (*bp, ncap);
  if (nb == NULL)
    return -1;
  *bp = nb;
  *cap = ncap;
  return 0;
}

void *
sbx_grow (void *v, size_t *n, size_t *cap, size_t elem)
{
  void **vp = v;
  if (*n == *cap)
    {
      size_t ncap = *cap ? *cap * 2 : 16;
      void *nv = realloc (*vp, ncap * elem);
      if (nv == NULL)
        return NULL;
      *vp = nv;
      *cap = ncap;
    }
  void *slot = (char *) *vp + (*n)++ * elem;
  memset (slot, 0, elem);
  return slot;
}

bool
sbx_start_detached (void *(*fn) (void *), void *arg)
{
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  bool ok = pthread_create (&th, &attr, fn, arg) == 0;
  pthread_attr_destroy (&attr);
  return ok;
}

void
sbx_strv_free (char **v)
{
  for (char **p = v; p && *p; p++)
    free (*p);
  free (v);
}

bool
sbx_budget_take (struct sbx_budget *b, size_t n)
{
  size_t used = __atomic_load_n (&b->used, __ATOMIC_RELAXED);
  do
    if (n > b->max || used > b->max - n)
      return false;
  while (!__atomic_compare_exchange_n (&b->used, &used, used + n, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return true;
}

void
sbx_budget_give (struct sbx_budget *b, size_t n)
{
  __atomic_fetch_sub (&b->used, n, __ATOMIC_RELAXED);
}

static __thread bool bulk;      /* asked for (sbx_thread_bulk) */
static __thread unsigned held;  /* sbx_thread_hold_begin's depth */
static __thread bool lowered;   /* at SBX_BULK_NICE now */

/* The priority the thread should have now: bulk unless it holds a lock.
   Best effort: a thread left at its priority only loses the fairness. */
static void
thread_nice_apply (void)
{
  bool want = bulk && held == 0;
  if (want != lowered && setpriority (PRIO_PROCESS, (id_t) gettid (), want ? SBX_BULK_NICE : 0) == 0)
    lowered = want;
}

/* glibc has no sched_setattr, and <linux/sched/types.h> (the kernel's
   struct sched_attr) clashes with <sched.h>; this is the kernel's first
   version of the structure (SCHED_ATTR_SIZE_VER0, 48 bytes). */
struct sbx_sched_attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
};

int
sbx_task_deadline (pid_t tid, uint64_t runtime_ns, uint64_t period_ns)
{
  struct sbx_sched_attr a = {
    .size = sizeof a,
    .sched_policy = SCHED_DEADLINE,
    .sched_flags = SCHED_FLAG_RECLAIM | SCHED_FLAG_RESET_ON_FORK,
    .sched_runtime = runtime_ns,
    .sched_deadline = period_ns,
    .sched_period = period_ns,
  };
  return syscall (SYS_sched_setattr, tid, &a, 0) == 0 ? 0 : -errno;
}

int
sbx_thread_deadline (uint64_t runtime_ns, uint64_t period_ns)
{
  return sbx_task_deadline (0, runtime_ns, period_ns);
}

int
sbx_thread_normal (void)
{
  int p = sched_getscheduler (0);
  if (p < 0)
    return -errno;
  if ((p & ~SCHED_RESET_ON_FORK) != SCHED_DEADLINE)
    return 0;
  /* without the privilege a thread may not clear the flag its deadline
     set, so it keeps it: what it starts gets the normal policy anyway */
  struct sbx_sched_attr a = { .size = sizeof a, .sched_policy = SCHED_OTHER, .sched_flags = SCHED_FLAG_RESET_ON_FORK };
  return syscall (SYS_sched_setattr, 0, &a, 0) == 0 ? 0 : -errno;
}

void
sbx_thread_bulk (bool on)
{
  bulk = on;
  thread_nice_apply ();
}

void
sbx_thread_hold_begin (void)
{
  if (held++ == 0 && lowered)
    thread_nice_apply ();
}

void
sbx_thread_hold_end (void)
{
  if (held > 0 && --held == 0 && bulk)
    thread_nice_apply ();
}
