/*
 * v1.c - seed 004's dialect: /v1/sandboxes with runtimes, states and
 * queueing, pause and resume, commands, code and files, checkpoints and
 * artifacts, and the usage of the organisation's plan.
 *
 * Sandboxes are named by an "id" in the query (GET, DELETE) or in the JSON
 * body (POST), never in the path, so the router cannot check ownership
 * from the headers: every handler calls v1_sandbox.  Errors are
 * {"error": "message"} with the seed's messages word for word; a missing or
 * invalid key is 401 "Invalid or missing API key".
 */
#include "api.h"

#include <string.h>

static json_t *
v1_error_body (unsigned status, const char *msg)
{
  (void) status;
  return json_pack ("{s:s}", "error", msg);
}

const struct dialect dialect_v1 = {
  .name = "v1",
  .status = { [SBX_E_SYSTEM] = 500,    [SBX_E_INVALID] = 400,   [SBX_E_NOT_FOUND] = 404, [SBX_E_CONFLICT] = 409,
              [SBX_E_PAUSED] = 409,    [SBX_E_STOPPED] = 409,   [SBX_E_LIMIT] = 429,     [SBX_E_FORBIDDEN] = 403,
              [SBX_E_TOO_LARGE] = 413, [SBX_E_NO_SPACE] = 507,  [SBX_E_UNAVAILABLE] = 503, [SBX_E_INTERNAL] = 500 },
  .bad_sandbox_id = 404,
  .error_body = v1_error_body,
  .unauthorized = "Invalid or missing API key",
};

bool
v1_sandbox (struct call *k, const char *id, struct sbx_sandbox_rec *rec, enum MHD_Result *ret)
{
  if (id == NULL || *id == '\0')
    {
      *ret = send_error (k->c, 400, "Missing sandbox id");
      return false;
    }
  snprintf (k->rq->sandbox_id, sizeof k->rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, id);
  if (!valid_id (id))
    {
      *ret = send_error (k->c, 404, "Sandbox not found");
      return false;
    }
  struct sbx_err err;
  if (sbx_service_sandbox_get (k->h->svc, &k->rq->org, id, rec, &err) < 0)
    {
      *ret = sbx_err_kind (&err) == SBX_E_NOT_FOUND ? send_error (k->c, 404, "Sandbox not found")
                                                    : send_fail (k->c, &err);
      return false;
    }
  return true;
}
