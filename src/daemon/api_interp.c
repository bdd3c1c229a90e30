/*
 * api_interp.c - the code interpreter (E2B's port 49999): stateful Python
 * contexts with /execute streaming NDJSON, and the contexts API.
 */
#include "http_internal.h"

enum MHD_Result
interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                const char *url, const char *id)
{
  (void) h;
  (void) rq;
  (void) method;
  (void) url;
  (void) id;
  return send_error (c, 501, "the code interpreter is not available yet");
}
