/*
 * fuzz_http_host.c - fuzz harness for the HTTP side of the name filter
 * (src/core/netproxy.c): sbx_http_host_parse, which reads the Host of the
 * first request a sandbox sends, and the tracker of the requests after it
 * on the same connection (sbx_http_stream_client and _server), which must
 * see every later request head whatever the framing between them.
 *
 * An input's first byte chooses: even, the rest is the first bytes of a
 * connection, for sbx_http_host_parse; odd, the rest goes to the tracker
 * (allowed host "example.com") in pieces of (first byte / 2) % 31 + 1
 * bytes, and whenever it waits for the answer to an Upgrade, the next 12
 * bytes are the server's.
 *
 * What it checks besides the sanitizers: a Host given is a plain host name
 * (as fuzz_sni.c checks it); the tracker never takes more than it was
 * offered, and takes less only while it waits for the server.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/http_host
 *   build-clang/fuzz_http_host -max_total_time=600 build/fuzz-corpus/http_host tests/fuzz/corpus/http_host
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
  if (size == 0)
    return 0;
  if (data[0] % 2 == 0)
    {
      char name[SBX_NETPROXY_NAME_MAX + 1];
      int r = sbx_http_host_parse (data + 1, size - 1, name, sizeof name);
      if (r < -1 || r > 1)
        abort ();
      if (r == 1)
        fuzz_check_name (name);
      return 0;
    }
  size_t piece = (size_t) (data[0] / 2) % 31 + 1;
  struct sbx_http_stream *hs = malloc (sizeof *hs);
  if (hs == NULL)
    return 0;
  sbx_http_stream_init (hs, "example.com");
  for (size_t off = 1; off < size;)
    {
      size_t k = size - off < piece ? size - off : piece;
      if (sbx_http_stream_waiting (hs))
        {
          k = size - off < 12 ? size - off : 12;
          sbx_http_stream_server (hs, data + off, k);
          off += k;
          continue;
        }
      ssize_t r = sbx_http_stream_client (hs, data + off, k);
      if (r < 0)
        break;
      if ((size_t) r > k || ((size_t) r < k && !sbx_http_stream_waiting (hs)))
        abort ();
      off += (size_t) r;
    }
  free (hs);
  return 0;
}
