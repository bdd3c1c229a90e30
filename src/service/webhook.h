/*
 * webhook.h - delivery of lifecycle events to webhooks (webhook.c).
 */
#ifndef SBX_SERVICE_WEBHOOK_H
#define SBX_SERVICE_WEBHOOK_H

#include <jansson.h>
#include <stddef.h>

#include "../common/error.h"
#include "store.h"

struct sbx_webhooks;
struct sbx_outbound;

/* Start the delivery worker.  SCALE multiplies the retry delays (1.0 in
   production; tests use a small value).  OB (copied; NULL: nothing
   opened) is what the operator opened to outbound requests. */
int sbx_webhooks_start (struct sbx_store *store, double scale, const struct sbx_outbound *ob,
                        struct sbx_webhooks **out, struct sbx_err *err);
/* Wake the worker: a new event was queued. */
void sbx_webhooks_kick (struct sbx_webhooks *wh);
void sbx_webhooks_stop (struct sbx_webhooks *wh);

/* An event as JSON, in E2B's webhook payload shape. */
json_t *sbx_event_json (const struct sbx_event *ev);
/* e2b-signature: base64 (no '=' padding) of SHA-256(secret || body). */
void sbx_webhook_signature (const char *secret, const char *body, size_t len, char *out, size_t n);

#endif
