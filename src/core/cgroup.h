/*
 * cgroup.h - one small interface over cgroup v1, v2 and hybrid hosts.
 *
 * The host layout is detected once (sbx_cgroup_detect).  A sandbox's cgroup
 * is named by a relative NAME such as "sbxd/sbx_abc123"; on a v1 or hybrid
 * host the same NAME is created under every controller hierarchy sbxd uses
 * (memory, cpu, cpuacct, pids, freezer) and, on hybrid hosts, also under the
 * controller-less unified hierarchy, whose cgroup.kill and cgroup.freeze are
 * used when present.  Callers never see which layout the host has.
 */
#ifndef SBX_CGROUP_H
#define SBX_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/error.h"

enum sbx_cgroup_mode { SBX_CGROUP_V1, SBX_CGROUP_HYBRID, SBX_CGROUP_V2 };

struct sbx_cgroup_limits {
  uint64_t memory_bytes;  /* 0 = no limit */
  uint32_t cpu_millis;    /* 1000 = one full CPU; 0 = no limit */
  uint32_t pids_max;      /* 0 = no limit */
};

struct sbx_cgroup_stats {
  uint64_t cpu_usage_ns;   /* cumulative CPU time of the whole cgroup */
  uint64_t memory_current; /* bytes in use */
  uint64_t memory_max;     /* the limit in bytes (0 when unlimited) */
  uint64_t memory_cache;   /* page cache bytes, when the host reports it */
  uint64_t oom_kills;      /* processes killed by the OOM killer so far */
  uint64_t pids_current;
  bool frozen;
};

/* Detect the host layout; idempotent and thread safe. */
int sbx_cgroup_detect (struct sbx_err *err);
enum sbx_cgroup_mode sbx_cgroup_mode (void);

/* Create NAME (parents included) in every hierarchy and apply LIM. */
int sbx_cgroup_create (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err);
/* Apply LIM's non-zero fields to existing NAME, whose processes go on:
   a lower memory limit makes the kernel reclaim (or kill, as a create
   with it would have) down to it. */
int sbx_cgroup_set_limits (const char *name, const struct sbx_cgroup_limits *lim, struct sbx_err *err);
/* NAME's share of the CPU against its siblings when they all want it, in
   cgroup v2's cpu.weight units (default 100, clamped to 1..10000; v1's
   cpu.shares is 10.24 times that). */
#define SBX_CPU_WEIGHT_MIN 1
#define SBX_CPU_WEIGHT_MAX 10000
int sbx_cgroup_set_cpu_weight (const char *name, unsigned weight, struct sbx_err *err);
/* Move PID (all its threads) into NAME in every hierarchy. */
int sbx_cgroup_enter (const char *name, pid_t pid, struct sbx_err *err);
/* Freeze (true) or thaw (false) the whole tree; returns once the kernel
   reports the new state (or fails after about 5 s). */
int sbx_cgroup_freeze (const char *name, bool frozen, struct sbx_err *err);
/* SIGKILL every process in NAME (thawing it if frozen). */
int sbx_cgroup_kill (const char *name, struct sbx_err *err);
/* SIGKILL every process in NAME but KEEP, and wait up to TIMEOUT_MS until
   they are gone; NAME is left thawed. */
int sbx_cgroup_kill_except (const char *name, pid_t keep, int timeout_ms, struct sbx_err *err);
/* Kill, wait up to TIMEOUT_MS for NAME to be empty, then remove it from every
   hierarchy.  A NAME that no longer exists is not an error. */
int sbx_cgroup_destroy (const char *name, int timeout_ms, struct sbx_err *err);
/* True when NAME exists in the first hierarchy. */
bool sbx_cgroup_exists (const char *name);
/* True when no process is left in NAME. */
bool sbx_cgroup_empty (const char *name);
int sbx_cgroup_stats (const char *name, struct sbx_cgroup_stats *st, struct sbx_err *err);

#endif
