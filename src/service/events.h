/*
 * events.h - from sandbox changes to records, lifecycle events and
 * webhook deliveries (events.c).
 */
#ifndef SBX_DAEMON_EVENTS_H
#define SBX_DAEMON_EVENTS_H

#include "../core/sandbox.h"
#include "store.h"
#include "webhook.h"

struct sbx_events {
  struct sbx_store *store;
  struct sbx_webhooks *webhooks; /* may be NULL until started */
};

/* The engine's event callback (sbx_engine_config.on_event); UD is a
   struct sbx_events. */
void sbx_events_on_change (void *ud, struct sbx_engine *e, const char *id, enum sbx_event_kind kind,
                           const char *reason);

/* The store record of a sandbox the engine knows. */
void sbx_events_record (const struct sbx_info *in, struct sbx_sandbox_rec *r);

#endif
