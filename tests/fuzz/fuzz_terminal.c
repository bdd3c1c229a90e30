/*
 * fuzz_terminal.c - fuzz harness for seed 004's terminal (src/api/terminal.c):
 * the bytes a WebSocket client sends, framed by wslay with the terminal's
 * bounds (terminal_ws_new), and the messages they carry (terminal_message:
 * typed input, or the {"type":"resize","cols":N,"rows":M} JSON).
 *
 * The first byte of an input chooses: even, the rest is one message
 * (bit 1: text, else binary) given to terminal_message directly; odd, the
 * rest is the client's byte stream, read in pieces whose sizes come from
 * the first byte, through the same wslay context and callbacks the daemon
 * uses, with the server's answers (pongs, closes) written to nowhere.
 * What comes out must be within the terminal's bounds.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/terminal
 *   build-clang/fuzz_terminal -max_total_time=600 build/fuzz-corpus/terminal tests/fuzz/corpus/terminal
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/terminal.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

struct feed {
  const uint8_t *p;
  size_t n, off;
  size_t piece;   /* bytes given per read */
  size_t sent;    /* bytes the server wrote back */
  size_t typed, resizes, messages;
};

static ssize_t
feed_recv (void *ud, uint8_t *buf, size_t len)
{
  struct feed *f = ud;
  if (f->off == f->n)
    return -1; /* the client is gone */
  size_t k = f->n - f->off;
  if (k > len)
    k = len;
  if (k > f->piece)
    k = f->piece;
  memcpy (buf, f->p + f->off, k);
  f->off += k;
  return (ssize_t) k;
}

static ssize_t
feed_send (void *ud, const uint8_t *buf, size_t len)
{
  struct feed *f = ud;
  (void) buf;
  f->sent += len;
  return (ssize_t) len;
}

static void
feed_input (void *ud, const uint8_t *data, size_t len)
{
  struct feed *f = ud;
  if (len == 0 || len > TERM_IN_MSG_MAX)
    abort ();
  /* every byte is read: a message that is not all there is caught */
  volatile uint8_t x = 0;
  for (size_t i = 0; i < len; i++)
    x ^= data[i];
  (void) x;
  f->typed += len;
}

static void
feed_resize (void *ud, unsigned rows, unsigned cols)
{
  struct feed *f = ud;
  if (rows < 1 || rows > TERM_SIZE_MAX || cols < 1 || cols > TERM_SIZE_MAX)
    abort ();
  f->resizes++;
}

static void
feed_activity (void *ud, bool data)
{
  struct feed *f = ud;
  (void) data;
  f->messages++;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  if ((mode & 1) == 0)
    {
      /* exact-size copy: a read past the end is caught */
      uint8_t *msg = malloc (size ? size : 1);
      memcpy (msg, data, size);
      unsigned rows = 0, cols = 0;
      enum term_msg m = terminal_message (mode & 2 ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME, msg, size, &rows, &cols);
      if (m == TERM_MSG_RESIZE && (rows < 1 || rows > TERM_SIZE_MAX || cols < 1 || cols > TERM_SIZE_MAX))
        abort ();
      if (m == TERM_MSG_RESIZE && ((mode & 2) == 0 || size > TERM_RESIZE_MSG_MAX))
        abort (); /* only a short text message may resize */
      if (m == TERM_MSG_NONE && size > 0 && ((mode & 2) == 0 || msg[0] != '{'))
        abort (); /* anything else non-empty is typed */
      free (msg);
      return 0;
    }
  struct feed f = { .p = data, .n = size, .piece = (size_t) (mode >> 1) * 97 + 1 };
  struct term_io io = { feed_recv, feed_send, feed_input, feed_resize, feed_activity, &f };
  wslay_event_context_ptr ws = terminal_ws_new (&io);
  if (ws == NULL)
    return 0;
  while (wslay_event_want_read (ws) || wslay_event_want_write (ws))
    {
      size_t before = f.off;
      if (wslay_event_want_read (ws) && wslay_event_recv (ws) != 0)
        break;
      if (wslay_event_want_write (ws) && wslay_event_send (ws) != 0)
        break;
      if (f.off == before && f.off == f.n && !wslay_event_want_write (ws))
        break;
    }
  if (f.typed > size || f.resizes > size)
    abort ();
  wslay_event_context_free (ws);
  return 0;
}
