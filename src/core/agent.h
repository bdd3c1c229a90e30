/*
 * agent.h - the daemon's side of the init agent protocol (proto.h): how
 * sbxd reads what a sandbox's agent answers.
 *
 * The agent is PID 1 of the sandbox, so a compromised sandbox controls
 * everything it sends: its replies are untrusted input.  Every reply is
 * bounded here in time, frames and bytes, and every field is checked
 * before the daemon keeps it:
 *
 *   - time: an answer (OK or ERROR and what comes before it) must be
 *     complete SBX_AGENT_ANSWER_MS after the request; in a stream
 *     (process output, a file's data, watch events) each frame must be
 *     complete SBX_AGENT_FRAME_MS after the daemon starts waiting for it
 *     (a stream itself lasts as long as its process, reader or watch);
 *   - frames: at most SBX_PROTO_MAX_FRAME each (proto.c); a call that
 *     answers with one entry takes SBX_AGENT_FRAMES_MAX frames before its
 *     answer, a listing SBX_AGENT_LIST_MAX entries, a process list
 *     SBX_AGENT_PROCS_MAX processes;
 *   - bytes: a name, path, owner or link target is at most
 *     SBX_AGENT_STR_MAX bytes and an entry must have a name and a path; a
 *     listing keeps at most SBX_AGENT_LIST_BYTES of strings, a process
 *     list SBX_AGENT_PROCS_BYTES, a read no more than its caller's limit.
 *
 * A violation (a malformed frame, a missing or oversized field, too many
 * frames, a deadline) ends the request with an error of kind internal
 * whose message starts with "sandbox agent", and is logged with the
 * sandbox's id.  A listing beyond its limits is the request's size, not
 * the agent's fault: it fails as too large.  A field is kept once: tags
 * that repeat where one is expected count only the first time, and
 * nothing a frame held outlives the function that read it unless it was
 * kept.
 *
 * This is separate from sandbox.c, which opens the connections, so that
 * a unit test can play a hostile agent on a socketpair
 * (tests/unit/test_agent.c).  Nothing outside src/core uses it.
 */
#ifndef SBX_AGENT_H
#define SBX_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/error.h"
#include "../common/proto.h"
#include "sandbox.h"

#define SBX_AGENT_ANSWER_MS 60000u         /* a whole answer */
#define SBX_AGENT_FRAME_MS 60000u          /* one frame of a stream */
#define SBX_AGENT_STR_MAX 4096u            /* a name, path, owner, group, link, tag or cwd */
#define SBX_AGENT_FRAMES_MAX 16u           /* before the answer of a call with one entry */
#define SBX_AGENT_LIST_MAX 100000u         /* entries of one listing */
#define SBX_AGENT_LIST_BYTES (64u << 20)   /* their strings */
#define SBX_AGENT_PROCS_MAX 16384u         /* processes of one list */
#define SBX_AGENT_PROCS_BYTES (16u << 20)  /* their strings (argv included) */

/* How long and how many: ANSWER_MS for the whole answer from the call on
   (0: no limit), FRAME_MS for each frame from when the daemon waits for it
   (0: no limit), MAX_FRAMES before the answer (0: no limit; the frame
   function then bounds what it keeps). */
struct sbx_agent_bounds {
  uint32_t answer_ms;
  uint32_t frame_ms;
  uint32_t max_frames;
};

/* One frame from the agent on FD, complete by DEADLINE_NS (sbx_now_ns's
   clock; 0: none).  0, or -1 with ERR: the agent hung up (kind stopped), a
   malformed frame or the deadline (kind internal, logged with SANDBOX). */
int sbx_agent_recv (int fd, const char *sandbox, uint64_t deadline_ns, struct sbx_msg *m, struct sbx_err *err);

/* ERR from an EV_ERROR frame (the agent's errno and message). */
int sbx_agent_error (const struct sbx_msg *m, struct sbx_err *err);

/* A frame before the answer: 0 to go on, -1 with ERR to end the call. */
typedef int (*sbx_agent_frame_fn) (const struct sbx_msg *m, void *ud, struct sbx_err *err);

/* Read the answer to a request already sent on FD: frames go to FN (NULL:
   they are skipped) until EV_OK (0) or EV_ERROR (-1, ERR from it), within
   bounds B.  A violation, FN's included when it says so (kind internal),
   is logged with SANDBOX. */
int sbx_agent_answer (int fd, const char *sandbox, const struct sbx_agent_bounds *b, sbx_agent_frame_fn fn,
                      void *ud, struct sbx_err *err);

/* The bounds of a plain answer: SBX_AGENT_ANSWER_MS, SBX_AGENT_FRAMES_MAX. */
extern const struct sbx_agent_bounds sbx_agent_plain;

/* Frame functions and what they fill (zero them first; free what they
   hold whether the call succeeded or not). */

/* The first EV_ENTRY of the answer (stat, mkdir, move, write). */
struct sbx_agent_one {
  struct sbx_entry en;
  bool have;
};
int sbx_agent_one_entry (const struct sbx_msg *m, void *ud, struct sbx_err *err);

/* Every EV_ENTRY of a listing. */
struct sbx_agent_entries {
  struct sbx_entry *v;
  size_t n, cap;
  uint64_t bytes;
};
int sbx_agent_collect_entry (const struct sbx_msg *m, void *ud, struct sbx_err *err);
/* The bounds of a listing (SBX_AGENT_ANSWER_MS; entries count themselves). */
extern const struct sbx_agent_bounds sbx_agent_listing;

/* Every EV_PROC of a process list. */
struct sbx_agent_procs {
  struct sbx_proc_info *v;
  size_t n, cap;
  uint64_t bytes;
};
int sbx_agent_collect_proc (const struct sbx_msg *m, void *ud, struct sbx_err *err);

/* A READ: first the file's entry into ST (size checked against MAX when it
   is not 0: larger is kind too large, and ST is then empty), or the agent's
   error; then its data, streamed to FN in chunks until EV_OK, MAX bytes at
   most in all (0: no limit; more is kind too large), each frame within
   SBX_AGENT_FRAME_MS.  FN returning <0 ends the read (ECANCELED). */
int sbx_agent_read_begin (int fd, const char *sandbox, uint64_t max, struct sbx_entry *st, struct sbx_err *err);
int sbx_agent_read_data (int fd, const char *sandbox, uint64_t max, sbx_data_fn fn, void *ud, struct sbx_err *err);

/* A watch's event (EV_FSEVENT): *TYPE and *NAME (kept by the caller), or
   -1 for a malformed one (logged with SANDBOX). */
int sbx_agent_fs_event (const struct sbx_msg *m, const char *sandbox, int *type, char **name, struct sbx_err *err);

#endif
