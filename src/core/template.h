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

#include "../common/error.h"

struct sbx_template {
  char name[64];
  char rootfs[4096];   /* absolute path of the rootfs directory */
  char **env;          /* NULL-terminated "KEY=VALUE" list, from the spec */
  char user[32];       /* default user of commands, e.g. "user" */
  char workdir[256];   /* default working directory, e.g. "/home/user" */
  uint32_t cpu_count;  /* default vCPUs */
  uint32_t memory_mb;  /* default memory limit */
  uint32_t disk_mb;    /* default disk quota */
  bool internet;       /* sandboxes have outbound internet unless asked otherwise */
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

#endif
