/*
 * fuzz_egress_packet.c - fuzz harness for sbx_egress_packet_parse
 * (src/core/egress.c), which reads the headers of packets a sandbox sent
 * (as NFLOG hands them to the daemon) for the egress log.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/egress_packet
 *   build-clang/fuzz_egress_packet -max_total_time=600 build/fuzz-corpus/egress_packet tests/fuzz/corpus/egress_packet
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/egress.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct sbx_egress_packet pk;
  if (sbx_egress_packet_parse (data, size, &pk) == 0)
    {
      /* what it gives must come from the bytes there */
      size_t ihl = (size_t) (data[0] & 0x0f) * 4;
      if (size < 20 || ihl < 20 || ihl > size || (data[0] >> 4) != 4)
        abort ();
      if (pk.port != 0 && size < ihl + 4)
        abort ();
      (void) sbx_egress_proto_name (pk.proto);
    }
  return 0;
}
