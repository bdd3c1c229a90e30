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
/* STATE/captures, and the organisation's quota in bytes (0: none); the
   snapshots (snapshots.c) are kept there too, under the same quota. */
const char *sbx_saves_dir (const struct sbx_saves *s);
uint64_t sbx_saves_quota (const struct sbx_saves *s);
/* A new id: PREFIX and 20 hex digits. */
int sbx_saved_new_id (const char *prefix, char out[SBX_STORE_ID_MAX], struct sbx_err *err);

/* ORG's checkpoint ID exists: 0, else SBX_E_NOT_FOUND "Checkpoint not
   found".  For a create, before it takes anything. */
int sbx_service_checkpoint_check (struct sbx_service *svc, const struct sbx_org *org, const char *id,
                                  struct sbx_err *err);
/* What a new sandbox starts with and keeps, from SPEC: the checkpoint's
   workspace written into it, its settings recorded, /artifacts made.
   Called by the create after the engine's and before the answer. */
int sbx_service_storage_start (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id,
                               const struct sbx_sandbox_spec *spec, struct sbx_err *err);

/* The volumes a create mounts (volumes.c): resolved from the spec's
   names before the engine is asked, and held (a delete waits) until the
   sandbox's mounts are recorded. */
struct sbx_volume_set;
int sbx_volumes_take (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_spec *spec,
                      struct sbx_volume_set **out, struct sbx_err *err);
/* Fill the engine's options: images and paths, owned by VS. */
void sbx_volumes_opts (const struct sbx_volume_set *vs, struct sbx_create_opts *o);
int sbx_volumes_record (struct sbx_service *svc, const struct sbx_volume_set *vs, const char *sandbox_id,
                        struct sbx_err *err);
/* Let go of VS (NULL: nothing). */
void sbx_volumes_give (struct sbx_volume_set *vs);

#endif
