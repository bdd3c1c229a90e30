/*
 * plans.h - the plans an organisation can be on, and the limits each
 * carries: concurrent sandboxes, the longest sandbox lifetime, and the
 * sandbox hours a month.
 *
 * A plan only gives an organisation its starting limits: the limits live
 * in the organisation's record (see store.h), where the operator may
 * override each one (`sbxd orgs set`).  The numbers come from the specs
 * the API dialects follow; see docs/architecture.md, "Plans".
 */
#ifndef SBX_SERVICE_PLANS_H
#define SBX_SERVICE_PLANS_H

#include <stdint.h>

/* The longest sandbox lifetime any organisation may be given (the scale
   plan's); the daemon's engine is opened with this cap, so per-organisation
   limits are the cap that matters. */
#define SBX_PLAN_TIMEOUT_CAP 7200

/* Bounds of the operator's overrides. */
#define SBX_PLAN_MAX_SANDBOXES_CAP 10000
#define SBX_PLAN_MONTHLY_HOURS_CAP 10000000

struct sbx_plan {
  const char *name;          /* default, free, builder, pro, scale */
  uint32_t max_sandboxes;    /* concurrent (running + paused) */
  uint32_t max_timeout_s;    /* longest sandbox lifetime */
  uint32_t monthly_hours;    /* sandbox hours per calendar month; 0: unlimited */
};

/* The plan called NAME, or NULL. */
const struct sbx_plan *sbx_plan_find (const char *name);
/* The plan new organisations get ("default"). */
const struct sbx_plan *sbx_plan_default (void);
/* The plans, NULL-terminated, in the order they are listed to operators. */
const struct sbx_plan *const *sbx_plans (void);
/* "default, free, builder, pro, scale": for messages. */
const char *sbx_plan_names (void);
/* The start of NOW_MS's calendar month in UTC, in ms since the epoch: the
   window of monthly sandbox hours. */
int64_t sbx_plan_month_start_ms (int64_t now_ms);

#endif
