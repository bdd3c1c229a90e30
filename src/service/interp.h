/*
 * interp.h - code interpreter contexts: stateful Python processes inside a
 * sandbox, one per context, that run cells and stream their output.
 *
 * The module owns what the daemon knows of them (the contexts of each
 * sandbox, a lock per context that serialises its executions) and the
 * kernels themselves (found in the sandbox's process list by their tag,
 * started from share/kernel.py, killed).  It knows no HTTP and no API
 * dialect: src/api/interp.c translates E2B's /execute and /contexts into
 * these calls and the execution's events into its NDJSON lines.
 *
 * Use: open a sandbox's box, get or make a context in it (a reference),
 * run an execution on it, put the context and close the box.
 */
#ifndef SBX_SERVICE_INTERP_H
#define SBX_SERVICE_INTERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"

struct sbx_engine;

#define SBX_INTERP_ID_MAX 40    /* a context id, with its NUL */
#define SBX_INTERP_LANG_MAX 16
#define SBX_INTERP_CWD_MAX 1024
#define SBX_INTERP_DEFAULT_CWD "/home/user"
#define SBX_INTERP_LANGUAGE "python" /* the only language */

struct sbx_interp;      /* the contexts of all sandboxes */
struct sbx_interp_box;  /* the contexts of one sandbox (a reference) */
struct sbx_interp_ctx;  /* one context (a reference) */
struct sbx_interp_exec; /* one execution, prepared */

/* What a caller sees of a context. */
struct sbx_interp_ctx_info {
  char id[SBX_INTERP_ID_MAX];
  char language[SBX_INTERP_LANG_MAX];
  char cwd[SBX_INTERP_CWD_MAX]; /* never empty: the default cwd if none was given */
};

/* KERNEL_PATH is share/kernel.py, read at every kernel start. */
int sbx_interp_new (struct sbx_engine *engine, const char *kernel_path, struct sbx_interp **out,
                    struct sbx_err *err);
/* Only once no box, context or execution is in use. */
void sbx_interp_free (struct sbx_interp *ip);

/* Is S[0..N) a well-formed context id? */
bool sbx_interp_valid_ctx_id (const char *s, size_t n);

/* The box of sandbox SID, its contexts learnt from its process list the
   first time.  Fails SBX_E_INTERNAL "out of memory", or with kind
   SBX_E_UNAVAILABLE "cannot list the sandbox's contexts: ..." when the
   process list cannot be read. */
int sbx_interp_box_open (struct sbx_interp *ip, const char *sid, struct sbx_interp_box **out, struct sbx_err *err);
void sbx_interp_box_close (struct sbx_interp_box *b);

/* The live contexts, in creation order; *OUT is freed with free(). */
int sbx_interp_ctx_list (struct sbx_interp_box *b, struct sbx_interp_ctx_info **out, size_t *n,
                         struct sbx_err *err);

/* SBX_E_INVALID unless CWD (NULL or "": the default) can be a context's
   working directory. */
int sbx_interp_check_cwd (const char *cwd, struct sbx_err *err);

/* A new context working in CWD (NULL or "": the default) and its kernel
   started.  Fails SBX_E_INVALID for a bad cwd; other failures are system
   ones, "out of memory" when the table cannot grow. */
int sbx_interp_ctx_create (struct sbx_interp_box *b, const char *cwd, struct sbx_interp_ctx_info *out,
                           struct sbx_err *err);

/* Context CID, or with CID NULL the default context (made if there is
   none; its kernel starts with the first execution).  SBX_E_NOT_FOUND
   "Context CID not found". */
int sbx_interp_ctx_get (struct sbx_interp_box *b, const char *cid, struct sbx_interp_ctx **out,
                        struct sbx_err *err);
void sbx_interp_ctx_put (struct sbx_interp_box *b, struct sbx_interp_ctx *c);
void sbx_interp_ctx_info (struct sbx_interp_box *b, struct sbx_interp_ctx *c, struct sbx_interp_ctx_info *out);

/* Remove context CID (its kernel killed), or restart it (killed and a
   fresh one started, after the execution the kill ended has let go).
   SBX_E_NOT_FOUND "Context CID not found"; any later failure has kind
   SBX_E_UNAVAILABLE. */
int sbx_interp_ctx_delete (struct sbx_interp_box *b, const char *cid, struct sbx_err *err);
int sbx_interp_ctx_restart (struct sbx_interp_box *b, const char *cid, struct sbx_err *err);


/* ---- executions ---- */

struct sbx_interp_env {
  const char *name;
  const char *value;
  size_t value_len;
};

/* Why an execution ended without its kernel's end line. */
enum sbx_interp_failure {
  SBX_INTERP_NO_KERNEL,   /* the kernel could not be started */
  SBX_INTERP_KERNEL_DIED, /* the kernel died (or the context was removed or restarted) */
  SBX_INTERP_CUT_SHORT,   /* the execution stopped before its end */
};

enum sbx_interp_event_kind {
  SBX_INTERP_LINE,      /* one output line of the kernel (a JSON object), its end line last */
  SBX_INTERP_DROPPED,   /* an output line over the bound was dropped */
  SBX_INTERP_KEEPALIVE, /* nothing for a while */
  SBX_INTERP_FAILED,    /* failure and message: the execution ended early */
  SBX_INTERP_END,       /* after FAILED: the end of the execution */
};

struct sbx_interp_event {
  enum sbx_interp_event_kind kind;
  const char *data; /* LINE: the kernel's line; FAILED: the message */
  size_t len;
  enum sbx_interp_failure failure;
};

/* Gets the execution's events in order; returns <0 when the client has
   gone, which interrupts the cell (SIGINT) and stops the events. */
typedef int (*sbx_interp_event_fn) (const struct sbx_interp_event *ev, void *ud);

/* An execution of CODE (CODE_LEN bytes, NULs allowed) with extra
   environment variables ENV (N_ENV of them). */
int sbx_interp_exec_new (const char *code, size_t code_len, const struct sbx_interp_env *env, size_t n_env,
                         struct sbx_interp_exec **out, struct sbx_err *err);

/* Run X on context C of box B, blocking until it ends, the kernel dies, or
   the client has gone and the cell has stopped (or ignored the interrupt
   for 10 s).  One execution at a time per context: others wait. */
void sbx_interp_exec_run (struct sbx_interp_exec *x, struct sbx_interp_box *b, struct sbx_interp_ctx *c,
                          sbx_interp_event_fn fn, void *ud);
void sbx_interp_exec_free (struct sbx_interp_exec *x);

#endif
