/*
 * plans.c - the table of plans (see plans.h).
 *
 * default   what an organisation gets when nobody chose a plan: the
 *           E2B-style "10 concurrent per account" (seed 000), sandboxes
 *           of up to an hour, no monthly cap.
 * free, builder, pro, scale
 *           the plans of seed 004's tables (concurrency, monthly sandbox
 *           hours, maximum duration).  One exception: seed 004 gives the
 *           free plan 1 concurrent sandbox, seed 002 says "On Free plans,
 *           up to 3 concurrent sandboxes"; we take seed 002's 3, the more
 *           generous reading, so that a client written for either works.
 */
#include "plans.h"

#include <stddef.h>
#include <string.h>
#include <time.h>

static const struct sbx_plan plan_default = { "default", 10, 3600, 0 };
static const struct sbx_plan plan_free = { "free", 3, 300, 5 };
static const struct sbx_plan plan_builder = { "builder", 3, 1800, 50 };
static const struct sbx_plan plan_pro = { "pro", 10, 3600, 500 };
static const struct sbx_plan plan_scale = { "scale", 50, SBX_PLAN_TIMEOUT_CAP, 5000 };

static const struct sbx_plan *const plans[]
    = { &plan_default, &plan_free, &plan_builder, &plan_pro, &plan_scale, NULL };

const struct sbx_plan *
sbx_plan_find (const char *name)
{
  for (size_t i = 0; name && plans[i]; i++)
    if (strcmp (plans[i]->name, name) == 0)
      return plans[i];
  return NULL;
}

const struct sbx_plan *
sbx_plan_default (void)
{
  return &plan_default;
}

const struct sbx_plan *const *
sbx_plans (void)
{
  return plans;
}

const char *
sbx_plan_names (void)
{
  return "default, free, builder, pro, scale";
}

int64_t
sbx_plan_month_start_ms (int64_t now_ms)
{
  time_t t = (time_t) (now_ms / 1000);
  struct tm tm;
  gmtime_r (&t, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return (int64_t) timegm (&tm) * 1000;
}
