/*
 * fuzz_sni.c - fuzz harness for sbx_sni_parse (src/core/netproxy.c), which
 * reads the server_name of the TLS ClientHello a sandbox sends through the
 * HTTP/TLS name filter.  An input is the bytes of the connection so far.
 *
 * What it checks besides the sanitizers: a name given is one the filter
 * can compare (lower case letters, digits, '-', '_', dots between labels
 * of at most 63, 253 in all) and fits the buffer; the answer depends on
 * the first record only; a complete record's proper prefixes need more
 * bytes (0); a buffer too small for the name gives -1, never a cut name.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/sni
 *   build-clang/fuzz_sni -max_total_time=600 build/fuzz-corpus/sni tests/fuzz/corpus/sni
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/netproxy_internal.h"
#include "fuzz_name.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char name[SBX_NETPROXY_NAME_MAX + 1];
  int r = sbx_sni_parse (data, size, name, sizeof name);
  if (r < -1 || r > 1)
    abort ();
  if (r == 1)
    fuzz_check_name (name);
  if (r == 0 || size < 5)
    return 0;
  size_t rec = 5 + ((size_t) data[3] << 8 | data[4]);
  if (rec > size)
    return 0;
  /* only the first record counts: the same answer from it alone */
  char again[SBX_NETPROXY_NAME_MAX + 1];
  uint8_t *copy = malloc (rec);
  if (copy == NULL)
    return 0;
  memcpy (copy, data, rec);
  if (sbx_sni_parse (copy, rec, again, sizeof again) != r || (r == 1 && strcmp (name, again) != 0))
    abort ();
  if (r == 1)
    {
      /* a valid record's proper prefixes need more */
      size_t cuts[] = { 5, rec / 2, rec - 1 };
      for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        if (cuts[i] < rec && sbx_sni_parse (copy, cuts[i], again, sizeof again) != 0)
          abort ();
      /* a buffer one byte too small: no name at all */
      size_t len = strlen (name);
      if (sbx_sni_parse (copy, rec, again, len) != -1)
        abort ();
    }
  free (copy);
  return 0;
}
