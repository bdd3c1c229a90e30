/*
 * terminal.h - the inside of seed 004's terminal (terminal.c) that the
 * server and the fuzz harness (tests/fuzz/fuzz_terminal.c) reach: the
 * terminals' life next to the server's, and the handling of a client's
 * WebSocket bytes and messages.
 */
#ifndef SBX_API_TERMINAL_H
#define SBX_API_TERMINAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "../common/error.h"

struct http_server;

#define TERMINALS_PER_SANDBOX 4        /* open (or opening) at once in one sandbox */
#define TERMINALS_MAX 64               /* in the daemon: each has a thread */
#define TERM_IN_MSG_MAX (64u << 10)    /* one message from the client (wslay buffers it whole) */
#define TERM_OUT_MAX (256u << 10)      /* queued for the client before the shell's output waits */
#define TERM_RESIZE_MSG_MAX 256        /* a longer text message is typed, never parsed */
#define TERM_SIZE_MAX 1000             /* rows and columns of a resize */

/* ---- the server's side ---- */

int terminals_start (struct http_server *h, struct sbx_err *err);
/* End every terminal (their shells are killed, their sockets closed) and
   wait up to GRACE_S for them; false when some are still at work. */
bool terminals_stop (struct http_server *h, int grace_s);
void terminals_free (struct http_server *h);
/* The request SEQ (struct request's terminal) is over: a terminal still
   waiting for its upgrade never gets it. */
void terminal_request_done (struct http_server *h, uint64_t seq);

/* ---- a client's messages ---- */

enum term_msg {
  TERM_MSG_NONE,   /* nothing to do (empty, a control frame, a malformed resize) */
  TERM_MSG_INPUT,  /* the bytes are typed */
  TERM_MSG_RESIZE, /* *ROWS and *COLS, each 1..TERM_SIZE_MAX */
};

/* What a complete message (wslay's OPCODE and its bytes) asks: binary and
   text messages are typed, except a text message that is exactly a JSON
   object whose "type" is "resize" (with integer "cols" and "rows"). */
enum term_msg terminal_message (uint8_t opcode, const uint8_t *data, size_t len, unsigned *rows, unsigned *cols);

/* The WebSocket side of a terminal, over any transport: RECV gives the
   client's bytes (>0, 0 when none are there now, -1 at the end or on a
   failure), SEND takes bytes for it (how many, 0 when it cannot now, -1
   on a failure).  INPUT and RESIZE get what terminal_message found;
   ACTIVITY is told of every message (DATA: a text or binary one). */
struct term_io {
  ssize_t (*recv) (void *ud, uint8_t *buf, size_t len);
  ssize_t (*send) (void *ud, const uint8_t *buf, size_t len);
  void (*input) (void *ud, const uint8_t *data, size_t len);
  void (*resize) (void *ud, unsigned rows, unsigned cols);
  void (*activity) (void *ud, bool data);
  void *ud;
};

/* A wslay server context on IO (which must outlive it), with the
   terminal's bounds (TERM_IN_MSG_MAX); NULL when out of memory. */
wslay_event_context_ptr terminal_ws_new (struct term_io *io);

#endif
