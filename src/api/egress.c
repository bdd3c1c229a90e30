/*
 * egress.c - a sandbox's egress audit log (sbx_egress_log) as JSON, the
 * same in every dialect (GET /sandboxes/:id/network/log and seed 002's
 * GET /api/sandbox/:id/network/log):
 *
 *   {"records": [{"seq", "time", "protocol", "address", "port", "name",
 *                 "verdict": "allowed"|"denied", "rule"}, ...],
 *    "dropped": N}
 *
 * oldest first; ?after=SEQ gives only newer records, ?limit=N at most N
 * (at most SBX_EGRESS_LOG_MAX, the default).
 */
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../service/encode.h"

/* A non-negative decimal query parameter, or DEF when absent; -1 when
   malformed. */
static long long
query_count (struct MHD_Connection *c, const char *key, long long def)
{
  const char *v = query (c, key);
  if (v == NULL || *v == '\0')
    return def;
  char *end;
  errno = 0;
  long long x = strtoll (v, &end, 10);
  if (errno || *end || x < 0 || *v == '-' || *v == '+')
    return -1;
  return x;
}

enum MHD_Result
egress_log_route (struct call *k)
{
  struct http_server *h = k->h;
  struct MHD_Connection *c = k->c;
  const char *id = k->arg[0];
  long long after = query_count (c, "after", 0), limit = query_count (c, "limit", SBX_EGRESS_LOG_MAX);
  if (after < 0)
    return send_error (c, 400, "after must be a record's seq (a non-negative integer)");
  if (limit < 1 || limit > SBX_EGRESS_LOG_MAX)
    return send_error (c, 400, "limit must be between 1 and %d", SBX_EGRESS_LOG_MAX);
  struct sbx_egress_record *rec = NULL;
  size_t n = 0;
  uint64_t dropped = 0;
  struct sbx_err err;
  /* a destroyed sandbox's log went with it: nothing to show */
  if (sbx_egress_log (h->engine, id, (uint64_t) after, (size_t) limit, &rec, &n, &dropped, &err) < 0
      && strcmp (k->rec.status, "stopped") != 0)
    return send_fail (c, &err);
  json_t *list = json_array ();
  for (size_t i = 0; i < n; i++)
    {
      char when[40];
      sbx_rfc3339 (rec[i].time_ms, when, sizeof when);
      json_array_append_new (
          list, json_pack ("{s:I, s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "seq", (json_int_t) rec[i].seq, "time", when,
                           "protocol", rec[i].proto, "address", rec[i].addr, "port", (int) rec[i].port, "name",
                           rec[i].name, "verdict", rec[i].verdict == SBX_EGRESS_ALLOWED ? "allowed" : "denied", "rule",
                           rec[i].rule));
    }
  free (rec);
  return send_json (c, 200, json_pack ("{s:s, s:o, s:I}", "sandbox_id", id, "records", list, "dropped", (json_int_t) dropped));
}
