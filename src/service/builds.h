/*
 * builds.h - templates built through E2B's build API: their records,
 * their builds on a bounded pool of workers, the files uploaded for COPY
 * steps, and what a sandbox created from one needs (start and ready
 * commands).
 *
 * A build is a list of steps (RUN, COPY, ENV, WORKDIR, USER) on a base:
 * an existing template (fromTemplate) or a Debian suite (fromImage
 * "debian:bookworm").  Each step that changes files runs in a sandbox of
 * its own organisation's build, as every sandbox does (namespaces,
 * seccomp, cgroups, its egress filter), and its result is published as a
 * layer (core/template.h) keyed by the hash of the parent layer, the
 * step and its inputs: a step whose key is already built is not redone.
 * Keys start from the organisation, so no build ever reuses another
 * organisation's layer.  The `sbxd template build` command and these
 * builds share the builder of core/template.c.
 */
#ifndef SBX_BUILDS_H
#define SBX_BUILDS_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/error.h"
#include "store.h"

struct sbx_service;

#define SBX_BUILD_STEPS_MAX 256u          /* steps of one build */
#define SBX_BUILD_ARGS_MAX 64u            /* arguments of one step */
#define SBX_BUILD_MS (30u * 60 * 1000)    /* one build, all its steps */
#define SBX_BUILD_DISK_MB 10240u          /* what one build's steps may write */
#define SBX_BUILD_LOG_MAX (4u << 20)      /* log bytes kept per build */
#define SBX_BUILD_FILE_MAX (64u << 20)    /* one uploaded COPY archive */
#define SBX_BUILD_READY_MS 60000u         /* a start command's ready check */
#define SBX_BUILD_WORKERS 1u              /* builds at once (sbxd serve --build-workers) */
#define SBX_BUILD_QUEUE_MAX 64u           /* builds waiting for a worker */

enum sbx_step_kind { SBX_STEP_RUN, SBX_STEP_COPY, SBX_STEP_ENV, SBX_STEP_WORKDIR, SBX_STEP_USER };

struct sbx_build_step {
  enum sbx_step_kind kind;
  char **args;          /* owned */
  size_t n_args;
  char files_hash[65];  /* COPY: the uploaded archive (64 hex digits) */
  bool force;           /* rebuild this step and the ones after it */
};

struct sbx_build_spec {
  char *from_image;     /* owned; one of from_image and from_template */
  char *from_template;
  struct sbx_build_step *steps;
  size_t n_steps;
  char *start_cmd, *ready_cmd; /* owned, may be NULL */
  bool force;           /* rebuild every step */
};

void sbx_build_spec_free (struct sbx_build_spec *s);
/* The kind of step TYPE ("RUN", ...); -1 for one sbxd does not know. */
int sbx_step_kind_parse (const char *type);

/* Start WORKERS build workers (0: SBX_BUILD_WORKERS); builds the last
   daemon left unfinished are recorded failed.  Uploads are kept in
   STATE_DIR/build-files, logs in STATE_DIR/builds, layers in TMPL_DIR. */
int sbx_builds_start (struct sbx_service *svc, const char *state_dir, const char *tmpl_dir, uint32_t workers,
                      struct sbx_err *err);
/* Stop the workers: a running build is failed where it is. */
void sbx_builds_stop (void);

/* POST /v3/templates: ORG's template NAME ("name" or "name:tag", made if
   new) and a new build of it, waiting for its steps; TAGS (and the one in
   NAME, else "default") are given to the build when it is ready. */
int sbx_service_template_request (struct sbx_service *svc, const struct sbx_org *org, const char *name,
                                  const char *const *tags, size_t n_tags, uint32_t cpu_count, uint32_t memory_mb,
                                  struct sbx_tmpl_rec *t, struct sbx_build_rec *b, struct sbx_err *err);
/* ORG's template by id or name (or a public one by id); SBX_E_NOT_FOUND. */
int sbx_service_template_get (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                              struct sbx_tmpl_rec *t, struct sbx_err *err);
int sbx_service_template_set_public (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                                     bool is_public, struct sbx_tmpl_rec *t, struct sbx_err *err);
/* Delete ORG's template, its builds and tags, and the layers only its
   builds use. */
int sbx_service_template_delete (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                                 struct sbx_err *err);
/* Whether NAME is a template of the machine (a built one in the template
   directory that is not a layer), which every organisation can start. */
bool sbx_service_template_shipped (struct sbx_service *svc, const char *name);

/* Whether ORG's upload HASH (64 hex digits) for template TEMPLATE_ID is
   kept already. */
int sbx_service_build_file_present (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                                    const char *hash, bool *present, struct sbx_err *err);
/* Keep DATA as ORG_ID's upload HASH. */
int sbx_service_build_file_put (struct sbx_service *svc, const char *org_id, const char *hash, const void *data,
                                size_t len, struct sbx_err *err);

/* POST /v2/templates/{id}/builds/{buildID}: check SPEC and queue the
   build (SPEC is taken over, also on failure).  SBX_E_INVALID for an
   image that cannot be had here, an unknown base or step, a COPY whose
   files were not uploaded; SBX_E_CONFLICT for a build already started. */
int sbx_service_build_begin (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                             const char *build_id, struct sbx_build_spec *spec, struct sbx_err *err);
/* ORG's build BUILD_ID of template TEMPLATE_ID (id or name). */
int sbx_service_build_get (struct sbx_service *svc, const struct sbx_org *org, const char *template_id,
                           const char *build_id, struct sbx_build_rec *b, struct sbx_err *err);

struct sbx_build_log {
  int64_t ms;
  char level[8];        /* debug, info, warn, error */
  char step[16];        /* "", "base", "1"..., "finalize" */
  char *msg;            /* owned */
};
void sbx_build_logs_free (struct sbx_build_log *v, size_t n);
/* Entries OFFSET.. of build BUILD_ID's log (at most LIMIT), oldest first. */
int sbx_service_build_logs (struct sbx_service *svc, const char *build_id, size_t offset, size_t limit,
                            struct sbx_build_log **v, size_t *n, struct sbx_err *err);

/* Tags.  TARGET is "name:tag" (the source build; no tag: "default"). */
int sbx_service_tags_assign (struct sbx_service *svc, const struct sbx_org *org, const char *target,
                             const char *const *tags, size_t n_tags, char build_id[SBX_BUILD_ID_MAX],
                             struct sbx_err *err);
int sbx_service_tags_remove (struct sbx_service *svc, const struct sbx_org *org, const char *name,
                             const char *const *tags, size_t n_tags, struct sbx_err *err);
int sbx_service_tags_list (struct sbx_service *svc, const struct sbx_org *org, const char *id_or_name,
                           struct sbx_tag_rec **v, size_t *n, struct sbx_err *err);

/* A create's template NAME for ORG: 1 and the layer to start in TREE when
   NAME ("name", "name:tag", an id) is one of ORG's built templates (or a
   public one), 0 when it is not (NAME is the engine's), -1 on failure
   (SBX_E_INVALID for the layers' own names, SBX_E_UNAVAILABLE for a
   template with no finished build). */
int sbx_builds_resolve (struct sbx_service *svc, const struct sbx_org *org, const char *name, char *tree, size_t n,
                        struct sbx_err *err);
/* After sandbox ID of template TREE is created: its start command runs in
   the background and its ready command is polled until it succeeds
   (SBX_BUILD_READY_MS; SBX_E_UNAVAILABLE past it).  Nothing for a
   template without one. */
int sbx_builds_started (struct sbx_service *svc, const char *id, const char *tree, struct sbx_err *err);
/* Has template TREE a start command? */
bool sbx_builds_has_start (struct sbx_service *svc, const char *tree);

#endif
