/*
 * output.h - a process's output kept for a JSON answer (a synchronous
 * exec, a run), bounded after encoding and by a daemon-wide budget.
 *
 * Output is untrusted: a process printing control bytes would grow six
 * times when its bytes become JSON string text (\u0001), and invalid UTF-8
 * three times (U+FFFD).  So the cap of a capture counts the bytes its
 * output takes once encoded, and every capture takes its memory from one
 * budget shared by all requests (sbx_output_budget); past either, the
 * rest of the output is dropped and the capture says it was truncated.
 */
#ifndef SBX_SERVICE_OUTPUT_H
#define SBX_SERVICE_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/util.h"

/* What buffered output of all requests together may hold at once: the
   captures below, the interpreter's protocol lines, and large answers
   waiting to be sent. */
#define SBX_OUTPUT_BUDGET (256u << 20)

extern struct sbx_budget sbx_output_budget;

/* A capture past this many encoded bytes makes its thread bulk work
   (sbx_thread_bulk): lower priority for the rest of its request. */
#define SBX_BULK_BYTES (1u << 20)

/* One output stream kept for a JSON string.  With ESCAPED, DATA holds the
   JSON text itself (the string's contents without its quotes, exactly as
   jansson's json_dumps would write text_json of the raw bytes), ready to
   be sent; otherwise DATA holds the raw bytes (NUL-terminated), no more
   than their encoding allows. */
struct sbx_capture {
  char *data;
  size_t len, alloc;
  size_t max;            /* the cap, in encoded bytes */
  size_t encoded;        /* what DATA takes encoded */
  unsigned char carry[4]; /* a UTF-8 character cut by the end of a piece */
  size_t ncarry;
  bool escaped;
  bool truncated;        /* output was dropped (cap, budget or memory) */
};

void sbx_capture_init (struct sbx_capture *c, size_t max, bool escaped);
/* Add N bytes of output. */
void sbx_capture_add (struct sbx_capture *c, const void *d, size_t n);
/* The output ended: a character left incomplete counts as invalid. */
void sbx_capture_end (struct sbx_capture *c);
/* Take DATA (never NULL: "" when nothing came), giving its memory back to
   the budget: the caller's answer is bounded by the cap from here on. */
char *sbx_capture_take (struct sbx_capture *c, size_t *len);
void sbx_capture_free (struct sbx_capture *c);

/* The size of raw bytes S once encoded as a JSON string's contents. */
size_t sbx_json_text_size (const void *s, size_t n);

/* What a command printed and how it ended, collected from the engine's
   events by sbx_proc_capture_event (a sbx_exec callback, UD this), for the
   answers that wait for the end (seed 004's exec, the run_command tool).
   OUT and ERR are sbx_capture_init'ed by the caller. */
struct sbx_proc_event;
struct sbx_proc_capture {
  struct sbx_capture out, err;
  bool ended, timed_out;
  int exit_code, signal;
};
int sbx_proc_capture_event (const struct sbx_proc_event *ev, void *ud);

#endif
