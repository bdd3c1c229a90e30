/*
 * placement.h - inside the service: the machine's places for running
 * sandboxes (placement.c), as service.c takes and gives them back.
 *
 * A place is held by a sandbox while it runs (created and not paused);
 * a create or a resume asks for one first.  Holders are keyed by the
 * sandbox's id; a place asked for before the id exists is a ticket,
 * bound to the id once the create made it.
 */
#ifndef SBX_SERVICE_PLACEMENT_H
#define SBX_SERVICE_PLACEMENT_H

#include <stdint.h>

#include "service.h"

/* What a sandbox whose template decides its memory counts for (the
   engine's default limit). */
#define SBX_PLACE_DEFAULT_MEMORY_MB 2048
/* A create or resume of a dialect that answers synchronously waits this
   long in the queue at most, then fails with SBX_E_UNAVAILABLE. */
#define SBX_PLACE_WAIT_MS 10000
/* Creates and resumes of the queue running at once (one thread each). */
#define SBX_PLACE_ASSIGN_MAX 16

/* Wait (at most WAIT_MS, in the queue's order) for a place for a sandbox
   of MEMORY_MB; *TICKET then holds it until bound or cancelled. */
int sbx_place_admit (uint32_t memory_mb, uint32_t wait_ms, uint64_t *ticket, struct sbx_err *err);
/* The sandbox of TICKET is ID now (with its real memory limit); if ID
   already holds a place, the ticket's goes back. */
void sbx_place_bind (uint64_t ticket, const char *id, uint32_t memory_mb);
void sbx_place_cancel (uint64_t ticket);
/* ID runs (whether or not it asked): it holds a place from now on. */
void sbx_place_hold (const char *id, uint32_t memory_mb);
/* ID's place counts MEMORY_MB from now on (its limit changed); nothing
   when it holds none. */
void sbx_place_resize (const char *id, uint32_t memory_mb);
/* ID stopped running (paused, ended): its place goes to the queue. */
void sbx_place_release (const char *id);
/* ID is being torn down (ENDING true: from its killed event) or is done
   (false: its released event): seed 004 shows it `ending` meanwhile. */
void sbx_place_ending (const char *id, bool ending);

/* The second half of sbx_service_sandbox_create, for a placeholder RSV
   already taken (LIVE as it counted) and a place already given (TICKET):
   create the sandbox (with id WANT_ID when not NULL, whose placeholder is
   RSV itself and is left for the caller on failure), bind the place,
   record it. */
int sbx_service_create_reserved (struct sbx_service *svc, const struct sbx_org *org,
                                 const struct sbx_sandbox_spec *spec, const char *rsv, const char *want_id,
                                 uint32_t live, uint64_t ticket, struct sbx_sandbox_rec *rec, struct sbx_err *err);

/* The same for a create that a warm pool (warm.h) can serve: 1 when a
   pooled sandbox was claimed and recorded (REC), 0 when none fits (the
   placeholder stays the caller's), -1 on failure (ERR; the placeholder
   is dropped).  No place is asked for: the pooled sandbox holds its own. */
int sbx_service_create_warm (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                             const char *rsv, uint32_t live, struct sbx_sandbox_rec *rec, struct sbx_err *err);

#endif
