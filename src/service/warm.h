/*
 * warm.h - started warm pools per template (warm.c): sandboxes created
 * and started (their template's start command run, its ready command
 * succeeded) before anyone asks, owned by no organisation, handed to the
 * first create they fit.
 */
#ifndef SBX_SERVICE_WARM_H
#define SBX_SERVICE_WARM_H

#include <stdbool.h>
#include <stdint.h>

#include "service.h"

#define SBX_WARM_TEMPLATES_MAX 16 /* templates with a pool */
#define SBX_WARM_COUNT_MAX 16     /* sandboxes of one pool */
#define SBX_WARM_BACKOFF_MIN_MS 1000u
#define SBX_WARM_BACKOFF_MAX_MS 60000u

/* `sbxd serve --warm TEMPLATE=N` */
struct sbx_warm_want {
  char template_name[64];
  uint32_t count; /* 1..SBX_WARM_COUNT_MAX */
};

/* Parse TEMPLATE=N into *W: -1 when malformed. */
int sbx_warm_parse (const char *arg, struct sbx_warm_want *w);

/* Start keeping the pools WANT (N of them; templates named twice add up
   to at most SBX_WARM_COUNT_MAX): a thread of its own fills them, one
   sandbox at a time.  After the start-up reconciliation (which destroys
   the sandboxes an earlier daemon left in its pools: they have no
   record), before the API serves. */
int sbx_warm_start (struct sbx_service *svc, const struct sbx_warm_want *want, size_t n, struct sbx_err *err);
/* Stop filling and destroy every sandbox still in a pool.  Before the
   queue (placement.c) and the engine close. */
void sbx_warm_stop (void);

/* Take a pooled sandbox for a create of SPEC, if one fits it (warm.c says
   what fits), and give it what SPEC asks (sbx_claim), with CPU weight
   CPU_WEIGHT (0: keep): 1 with its id in ID, 0 when none fits (the
   create takes the normal path).  The sandbox keeps the place on the
   machine it held in the pool (placement.c), resized to its new memory
   limit.  The caller records it or destroys it. */
int sbx_warm_claim (struct sbx_service *svc, const struct sbx_sandbox_spec *spec, unsigned cpu_weight,
                    char id[SBX_ID_MAX]);
/* Whether a claim for SPEC could find anything (pools are kept, and
   SPEC asks nothing a pooled sandbox cannot be given): a create
   asks no more of the pools, nor of the store, when not. */
bool sbx_warm_may_claim (const struct sbx_sandbox_spec *spec);

/* One pool as the operator's metrics show it. */
struct sbx_warm_stat {
  char template_name[64];
  unsigned ready, target;
  uint64_t claims;   /* creates served from the pool */
  uint64_t failures; /* preparations that failed */
};
/* Up to MAX pools into OUT; how many. */
size_t sbx_warm_stats (struct sbx_warm_stat *out, size_t max);

#endif
