/*
 * template.h - templates: root filesystems built from Debian packages.
 *
 * A template is described by a spec file in the repository
 * (templates/NAME.spec) and built once into the template directory, which
 * all sbxd instances on the machine share:
 *
 *   TEMPLATE_DIR/NAME/rootfs          the root-owned tree (lower layer)
 *   TEMPLATE_DIR/NAME/template.json   what sandboxes need to know of it
 *   TEMPLATE_DIR/ALIAS -> NAME        one symlink per alias
 *
 * The template directory is SBXD_TEMPLATE_DIR from the environment when
 * set, else /var/lib/sbxd/templates.
 */
#ifndef SBX_TEMPLATE_H
#define SBX_TEMPLATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "../common/error.h"

struct sbx_template {
  char name[64];
  char rootfs[4096];   /* absolute path of the rootfs directory */
  dev_t rootfs_dev;    /* and its identity: a rebuild or removal replaces it */
  ino_t rootfs_ino;
  char **env;          /* NULL-terminated "KEY=VALUE" list, from the spec */
  char user[32];       /* default user of commands, e.g. "user" */
  char workdir[256];   /* default working directory, e.g. "/home/user" */
  uint32_t cpu_count;  /* default vCPUs */
  uint32_t memory_mb;  /* default memory limit */
  uint32_t disk_mb;    /* default disk quota */
  bool internet;       /* sandboxes have outbound internet unless asked otherwise */
  char *start_cmd;     /* run in the background when a sandbox starts (built layers), or NULL */
  char *ready_cmd;     /* a sandbox is ready once this exits 0 (with start_cmd), or NULL */
};

/* Resolve the template directory into OUT. */
void sbx_template_dir (char *out, size_t n);

/* Load a built template by name or alias.  err->code is ENOENT when no such
   template is built. */
int sbx_template_load (const char *tmpl_dir, const char *name, struct sbx_template *t, struct sbx_err *err);
void sbx_template_free (struct sbx_template *t);

/* Build (or rebuild) template NAME from SPEC_DIR/NAME.spec, printing progress
   to PROGRESS.  The new tree replaces the old one atomically. */
int sbx_template_build (const char *spec_dir, const char *tmpl_dir, const char *name, FILE *progress,
                        struct sbx_err *err);

/* Print one line per built template ("NAME\tSIZE_MB\tALIASES") to OUT. */
int sbx_template_list (const char *tmpl_dir, FILE *out, struct sbx_err *err);

/* Delete the retired trees (replaced by a rebuild or removed) that no
   sandbox uses any more.  Sandboxes hold a shared flock on TREE/.inuse
   (TREE being the directory holding rootfs/) while they run. */
int sbx_template_gc (const char *tmpl_dir, struct sbx_err *err);

/* Remove a built template and its aliases (its tree is retired). */
int sbx_template_remove (const char *tmpl_dir, const char *name, struct sbx_err *err);

/* ---- layers: templates built step by step (the E2B build API) ----

   A layer is a template of its own, named SBX_LAYER_PREFIX and a key (40
   hex digits, a hash of everything that made it), whose tree is its
   parent's tree hard-linked (`cp -al`, so unchanged files cost an inode,
   not their size) with a sandbox's changes applied on top.  Layers are
   never modified once published, so hard links between them are safe:
   sandboxes only ever see a tree as the read-only lower layer of their
   overlay. */

#define SBX_LAYER_PREFIX "_l-"
#define SBX_IMAGE_PREFIX "_i-"

/* What a layer's template.json says (NULL and 0 fields: root, /, the
   defaults). */
struct sbx_layer_meta {
  const char *const *env;  /* NULL-terminated "KEY=VALUE", may be NULL */
  const char *user;
  const char *workdir;
  const char *start_cmd, *ready_cmd;
  uint32_t cpu_count, memory_mb, disk_mb;
  bool no_internet;
};

/* Whether template (or layer) NAME is built. */
bool sbx_template_exists (const char *tmpl_dir, const char *name);

/* Publish layer NAME: the tree of template BASE, hard-linked, with the
   overlay upper directory UPPER_FD (or nothing when -1) applied on top:
   whiteouts remove, opaque directories replace, everything else is
   copied, its owner shifted down by ID_BASE (the host uid of the
   sandbox's root).  Entries of the upper are opened relative to their
   directory, never followed (O_NOFOLLOW), and only regular files,
   directories and symlinks are taken; the sandbox that made UPPER_FD
   must be frozen meanwhile.  Succeeds at once when NAME exists. */
int sbx_layer_commit (const char *tmpl_dir, const char *name, const char *base, int upper_fd, uint32_t id_base,
                      const struct sbx_layer_meta *meta, FILE *progress, struct sbx_err *err);

/* Build NAME from Debian SUITE (mmdebstrap minbase, with user `user`,
   uid 1000, as the default user and /home/user as the workdir), as
   sbx_template_build does for a spec.  Succeeds at once when NAME exists. */
int sbx_template_build_suite (const char *tmpl_dir, const char *name, const char *suite, FILE *progress,
                              struct sbx_err *err);

/* The identity of a built template's current tree (its template.json's
   inode and change time), so a cache keyed on it notices a rebuild. */
int sbx_template_identity (const char *tmpl_dir, const char *name, char *out, size_t n, struct sbx_err *err);

#endif
