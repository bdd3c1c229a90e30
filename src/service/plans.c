/*
 * plans.c - the table of plans (see plans.h).
 *
 * default   what an organisation gets when nobody chose a plan: the
 *           E2B-style "10 concurrent per account" (seed 000), sandboxes
 *           of up to an hour, no monthly cap.
 * free, builder, pro, scale
 *           the plans of seed 004's tables (concurrency, monthly sandbox
 *           hours, maximum duration), exactly.  Seed 002 says "On Free
 *           plans, up to 3 concurrent sandboxes" where seed 004 says 1;
 *           the plans are seed 004's, so free allows 1 (an operator who
 *           wants seed 002's 3 sets --max-sandboxes 3).
 */
#include "plans.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct sbx_plan plan_default = { "default", 10, 3600, 0 };
static const struct sbx_plan plan_free = { "free", 1, 300, 5 };
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

/* By hand rather than strtod: the value must be exact to the millisecond
   whatever the locale's decimal point, and "1e3" or "0x10" must not pass
   as hours. */
int
sbx_plan_parse_hours (const char *text, int64_t *ms)
{
  const char *c = text;
  int64_t whole = 0, frac = 0, scale = 1;
  if (c == NULL || !(*c >= '0' && *c <= '9'))
    return -1;
  for (; *c >= '0' && *c <= '9'; c++)
    if ((whole = whole * 10 + (*c - '0')) > SBX_PLAN_MONTHLY_HOURS_CAP)
      return -1;
  if (*c == '.')
    {
      c++;
      if (!(*c >= '0' && *c <= '9'))
        return -1;
      /* digits past the 12th are below a millionth of a millisecond */
      for (; *c >= '0' && *c <= '9'; c++)
        if (scale < INT64_C (1000000000000))
          {
            frac = frac * 10 + (*c - '0');
            scale *= 10;
          }
    }
  if (*c != '\0')
    return -1;
  /* frac < 10^12, times 3.6e6 < 3.6e18: no overflow */
  int64_t v = whole * SBX_MS_PER_HOUR + (frac * SBX_MS_PER_HOUR + scale / 2) / scale;
  if (v > SBX_PLAN_MONTHLY_MS_CAP || (v == 0 && frac != 0))
    return -1;
  *ms = v;
  return 0;
}

void
sbx_plan_format_hours (int64_t ms, char *buf, size_t size)
{
  /* whole hours and ten-millionths of one, in integers: exact */
  int64_t whole = ms / SBX_MS_PER_HOUR, rest = ms % SBX_MS_PER_HOUR;
  int64_t frac = (rest * 10000000 + SBX_MS_PER_HOUR / 2) / SBX_MS_PER_HOUR;
  if (frac == 10000000)
    {
      whole++;
      frac = 0;
    }
  if (frac == 0)
    {
      snprintf (buf, size, "%" PRId64, whole);
      return;
    }
  int digits = 7;
  for (; frac % 10 == 0; frac /= 10)
    digits--;
  snprintf (buf, size, "%" PRId64 ".%0*" PRId64, whole, digits, frac);
}
