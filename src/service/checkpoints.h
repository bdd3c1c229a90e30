/*
 * checkpoints.h - what service.c and checkpoints.c share inside the
 * service layer (the public calls are in service.h).
 */
#ifndef SBX_SERVICE_CHECKPOINTS_H
#define SBX_SERVICE_CHECKPOINTS_H

#include "service.h"

/* Where checkpoints and artifacts are kept and the quota on them
   (checkpoints.c); the service holds it (service.c). */
struct sbx_saves;
void sbx_saves_free (struct sbx_saves *s);
void sbx_service_put_saves (struct sbx_service *svc, struct sbx_saves *s);
struct sbx_saves *sbx_service_saves (struct sbx_service *svc);

/* ORG's checkpoint ID exists: 0, else SBX_E_NOT_FOUND "Checkpoint not
   found".  For a create, before it takes anything. */
int sbx_service_checkpoint_check (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                                  struct sbx_err *err);
/* What a new sandbox starts with and keeps, from SPEC: the checkpoint's
   workspace written into it, its settings recorded, /artifacts made.
   Called by the create after the engine's and before the answer. */
int sbx_service_storage_start (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                               const struct sbx_sandbox_spec *spec, struct sbx_err *err);

#endif
