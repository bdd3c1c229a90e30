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

#include <stddef.h>
#include <stdint.h>

/* The longest sandbox lifetime any organisation may be given (the scale
   plan's); the daemon's engine is opened with this cap, so per-organisation
   limits are the cap that matters. */
#define SBX_PLAN_TIMEOUT_CAP 7200

/* Bounds of the operator's overrides. */
#define SBX_PLAN_MAX_SANDBOXES_CAP 10000
#define SBX_PLAN_MONTHLY_HOURS_CAP 10000000

#define SBX_MS_PER_HOUR INT64_C (3600000)
/* Monthly sandbox hours are kept to the millisecond (an operator may give
   an organisation a fraction of an hour, e.g. 0.005 for tests). */
#define SBX_PLAN_MONTHLY_MS_CAP (SBX_PLAN_MONTHLY_HOURS_CAP * SBX_MS_PER_HOUR)

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

/* TEXT, a decimal number of hours ("5", "0.005", "1.25"; no sign, no
   exponent), in whole milliseconds (rounded to the nearest) into *MS.
   -1 for anything else, above SBX_PLAN_MONTHLY_HOURS_CAP, or positive but
   under half a millisecond (which would read as 0: unlimited). */
int sbx_plan_parse_hours (const char *text, int64_t *ms);
/* MS as hours, at most 7 decimals and no trailing zeros ("5", "0.005"). */
void sbx_plan_format_hours (int64_t ms, char *buf, size_t size);

#endif
