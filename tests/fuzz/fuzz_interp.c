/*
 * fuzz_interp.c - fuzz harness for the code interpreter proxy's parsers
 * of bytes that come out of a sandbox (src/api/interp.c): the head of the
 * interpreter server's answer (parse_head) and the line tracking of an
 * execution's stream (track), which decides where a keepalive line may go
 * and whether the stream ended with end_of_execution.
 *
 * The harness includes interp.c itself, to reach its static functions.
 * An input's first byte chooses: even, the rest is an answer's head;
 * odd, the rest is a stream, fed in pieces of (first byte / 2) % 17 + 1
 * bytes, and the tracker's state is checked against a simple model after
 * every piece.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/interp
 *   build-clang/fuzz_interp -max_total_time=600 build/fuzz-corpus/interp tests/fuzz/corpus/interp
 */
#include "api/interp.c"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  const char *p = (const char *) data + 1;
  size_t n = size - 1;
  if (data[0] % 2 == 0)
    {
      size_t head_len = 0;
      unsigned status = parse_head (p, n, &head_len);
      if (status != 0 && (status < 100 || status > 599 || head_len < 4 || head_len > n
                          || memcmp (p + head_len - 4, "\r\n\r\n", 4) != 0))
        abort ();
      return 0;
    }
  size_t piece = (size_t) (data[0] / 2) % 17 + 1;
  struct line_state ls = { .at_line_start = true };
  for (size_t off = 0; off < n; off += piece)
    {
      size_t k = off + piece <= n ? piece : n - off;
      track (&ls, p + off, k);
      /* the model: the stream so far ends a line, and its last line */
      size_t end = off + k;
      bool at_start = p[end - 1] == '\n';
      if (ls.at_line_start != at_start)
        abort ();
      if (at_start)
        {
          size_t s = end - 1;
          while (s > 0 && p[s - 1] != '\n')
            s--;
          bool is_end = end - 1 - s == strlen (END_JSON) && memcmp (p + s, END_JSON, strlen (END_JSON)) == 0;
          if (ls.saw_end != is_end)
            abort ();
        }
    }
  return 0;
}
