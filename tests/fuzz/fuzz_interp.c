/*
 * fuzz_interp.c - fuzz harness for the code interpreter's parsers of
 * bytes that come out of a sandbox (src/service/interp.c): the tags of
 * kernel processes in the process list (parse_tag), and the kernel's
 * output split into protocol lines (lines_feed, line_for, is_end).
 *
 * The harness includes interp.c itself, to reach its static functions.
 * An input's first byte chooses: even, the rest is a process tag; odd,
 * the rest is kernel output, fed in pieces of (first byte / 2) % 17 + 1
 * bytes, and every line delivered is checked (no newline in it, within
 * the line bound) and matched against a request id.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/interp
 *   build-clang/fuzz_interp -max_total_time=600 build/fuzz-corpus/interp tests/fuzz/corpus/interp
 */
#include "service/interp.c"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int
check_line (const char *line, size_t n, void *ud)
{
  size_t *count = ud;
  if (memchr (line, '\n', n) || n > LINE_MAX_BYTES)
    abort ();
  const char *p;
  size_t pn;
  if (line_for (line, n, "0123456789abcdef0123456789abcdef", &p, &pn))
    {
      if (p < line || p + pn != line + n)
        abort ();
      (void) is_end (p, pn);
    }
  return ++*count > 100000 ? -1 : 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  if (data[0] % 2 == 0)
    {
      char *tag = strndup ((const char *) data + 1, size - 1);
      if (tag == NULL)
        return 0;
      struct kproc k;
      memset (&k, 0, sizeof k);
      if (parse_tag (tag, &k))
        {
          /* what was parsed fits and makes the same tag again */
          if (strlen (k.id) >= sizeof k.id || strlen (k.lang) >= sizeof k.lang || strlen (k.cwd) >= sizeof k.cwd
              || strstr (tag, k.id) == NULL)
            abort ();
        }
      free (tag);
      return 0;
    }
  size_t piece = (size_t) (data[0] / 2) % 17 + 1, count = 0;
  struct lines l;
  memset (&l, 0, sizeof l);
  for (size_t off = 1; off < size; off += piece)
    if (lines_feed (&l, data + off, off + piece <= size ? piece : size - off, check_line, &count) < 0)
      break;
  lines_free (&l);
  return 0;
}
