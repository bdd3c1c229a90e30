/*
 * util.h - small helpers shared by the daemon, the core and the init agent:
 * cleanup attributes (one way to free), full reads and writes, file
 * helpers and a monotonic clock.
 */
#ifndef SBX_UTIL_H
#define SBX_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

void sbx_cleanup_freep (void *p);
void sbx_cleanup_closep (int *fd);

#define cleanup_free __attribute__ ((cleanup (sbx_cleanup_freep)))
#define cleanup_close __attribute__ ((cleanup (sbx_cleanup_closep)))

/* Move ownership out of a cleanup variable. */
#define steal_pointer(pp) __extension__ ({ __typeof__ (*(pp)) _p = *(pp); *(pp) = NULL; _p; })
#define steal_fd(fdp) __extension__ ({ int _fd = *(fdp); *(fdp) = -1; _fd; })

/* write(2)/read(2) until done; EINTR is retried.  read_full returns the
   number of bytes read (short only at EOF) or -1. */
ssize_t sbx_write_full (int fd, const void *buf, size_t len);
ssize_t sbx_read_full (int fd, void *buf, size_t len);
/* The same, but giving up with ETIMEDOUT at DEADLINE_NS (sbx_now_ns; 0:
   never), however much has come by then. */
ssize_t sbx_read_by (int fd, void *buf, size_t len, uint64_t deadline_ns);

/* Write a whole string to a file at PATH (relative to DIRFD), O_WRONLY. */
int sbx_write_file_at (int dirfd, const char *path, const char *data, struct sbx_err *err);
/* Read a small file (at most MAX bytes) into a NUL-terminated buffer. */
int sbx_read_file_at (int dirfd, const char *path, char **out, size_t max, struct sbx_err *err);

/* mkdir -p of an absolute host path, mode for every created level. */
int sbx_mkdir_p (const char *path, mode_t mode, struct sbx_err *err);
/* rm -rf below a host path; does not follow symlinks or cross mounts. */
int sbx_rm_rf (const char *path, struct sbx_err *err);

uint64_t sbx_now_ns (void);       /* CLOCK_MONOTONIC */
int64_t sbx_wall_ms (void);       /* CLOCK_REALTIME in ms */

/* Fill BUF with N random bytes from getrandom(2). */
int sbx_random_bytes (void *buf, size_t n);

/* When process PID started (field 22 of /proc/PID/stat, in clock ticks
   since boot): with its pid, what names one process for good.  0 when
   there is no such process.  Safe in any thread.  sbx_proc_stat_start
   reads it from the text STAT of such a file (NUL-terminated). */
unsigned long long sbx_proc_start_time (pid_t pid);
unsigned long long sbx_proc_stat_start (const char *stat);



/* snprintf into BUF for paths; returns -1 (ENAMETOOLONG) on truncation. */
int sbx_path (char *buf, size_t n, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));
/* mountinfo escapes blanks, tabs, newlines and backslashes as \ooo; decode
   in place. */
void sbx_unescape_octal (char *s);

/* Make room for one more element of ELEM bytes in *V (holding *N of *CAP);
   returns the new element (zeroed) or NULL when out of memory. */
void *sbx_grow (void *v, size_t *n, size_t *cap, size_t elem);

/* Make the byte buffer *BUFP (of *CAP bytes) hold at least NEED bytes,
   doubling from MIN; 0, or -1 when out of memory (the buffer is then
   unchanged). */
int sbx_reserve (void *bufp, size_t *cap, size_t need, size_t min);

/* An allowance of bytes that concurrent requests take from and give back
   (buffered output, request bodies): a bound on their sum, whatever each
   request does.  Lock-free; USED never exceeds MAX. */
struct sbx_budget {
  size_t max;
  size_t used;
};
/* Take N bytes; false (nothing taken) when they would pass the bound. */
bool sbx_budget_take (struct sbx_budget *b, size_t n);
void sbx_budget_give (struct sbx_budget *b, size_t n);

/* Free a NULL-terminated list of strings and the list (NULL is fine). */
void sbx_strv_free (char **v);

/* Run FN (ARG) in a detached thread; false when it cannot start. */
bool sbx_start_detached (void *(*fn) (void *), void *arg);

/* Bulk work (a request moving megabytes of output) runs at a lower CPU
   priority than small calls, so that one tenant's floods cannot take the
   daemon's time from another tenant's creates and execs.  It applies to
   the calling thread only (Linux's nice is per thread); ON false gives
   the thread its normal priority back. */
#define SBX_BULK_NICE 10
/* The filters' loops (DNS, HTTP/TLS), which every sandbox's traffic
   shares, run above the normal priority: a loop that waits for the CPU
   behind floods lets the shared DNS socket's queue overflow, and the
   kernel then drops every sandbox's queries alike (measured under the
   hostile load: half the loop's time spent waiting to run, hundreds of
   thousands of queries dropped, a well-behaved sandbox's unanswered for a
   minute).  What they do is bounded per sandbox by the filters' quotas. */
#define SBX_FILTER_NICE (-10)
/* The DNS filter's loop also asks the kernel for SCHED_DEADLINE: a
   reservation of SBX_DNS_RUNTIME_NS in every SBX_DNS_PERIOD_NS, with the
   CPU that other deadline threads leave unused reclaimed on top (GRUB),
   up to the kernel's real-time share of a core (95% by default).  A
   deadline thread is run ahead of every normal thread when it wakes, so
   a sandbox's query no longer waits for a core behind the floods' threads
   (measured under the hostile load on two cores: DNS p50 1.3 to 1.5 ms, 4.7
   to 26 ms at nice -10 alone); its share of the CPU stays about what nice
   -10 gave it, and what it does is bounded per sandbox by the filters'
   quotas.  The reservation is small so that many daemons on one machine
   fit the kernel's admission test; without the privilege, or refused,
   the loop stays at SBX_FILTER_NICE. */
#define SBX_DNS_RUNTIME_NS 500000ULL    /* 0.5 ms */
#define SBX_DNS_PERIOD_NS 10000000ULL   /* 10 ms */
/* The calling thread under SCHED_DEADLINE with RUNTIME_NS of every
   PERIOD_NS (deadline = period), reclaiming unused bandwidth; threads it
   starts get the normal policy back.  0, or -errno. */
int sbx_thread_deadline (uint64_t runtime_ns, uint64_t period_ns);
/* The same for the thread TID of any process (0: the calling thread). */
int sbx_task_deadline (pid_t tid, uint64_t runtime_ns, uint64_t period_ns);
/* The calling thread back under the normal policy at nice 0 if it is
   under a deadline (set by either); otherwise nothing changes.  0, or
   -errno. */
int sbx_thread_normal (void);
void sbx_thread_bulk (bool on);
/* Between these (they nest) a bulk thread runs at the normal priority:
   around a lock that requests wait for.  Preempted there at nice 10 on
   a busy machine, it held the lock, and the creates behind it, for tens
   of milliseconds (a priority inversion: nice is not inherited through a
   mutex). */
void sbx_thread_hold_begin (void);
void sbx_thread_hold_end (void);

#endif
