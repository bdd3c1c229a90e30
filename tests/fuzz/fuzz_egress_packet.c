/*
 * fuzz_egress_packet.c - fuzz harness for sbx_egress_packet_parse
 * (src/core/egress.c), which reads the headers of packets a sandbox sent
 * (as NFLOG hands them to the daemon) for the egress log.
 *
 * libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DSBX_LIBFUZZER -D_GNU_SOURCE -Isrc \
 *     -o /tmp/fuzz_egress_packet tests/fuzz/fuzz_egress_packet.c src/core/egress.c \
 *     && mkdir -p /tmp/fuzz-new && /tmp/fuzz_egress_packet /tmp/fuzz-new tests/fuzz/corpus/egress_packet
 * Plain driver (gcc), replaying the corpus files named (or every file of
 * the directories named), then random mutations of them:
 *   gcc -std=c17 -g -O1 -fsanitize=address,undefined -D_GNU_SOURCE -Isrc \
 *     -o /tmp/fuzz_egress_packet tests/fuzz/fuzz_egress_packet.c src/core/egress.c \
 *     && /tmp/fuzz_egress_packet tests/fuzz/corpus/egress_packet
 * (libFuzzer adds what it finds to the first directory named: a scratch
 * one, so the corpus here stays as it is.)
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

#define FUZZ_INPUT_MAX 4096
#define FUZZ_ROUNDS 200000
#define FUZZ_SPECIAL { 0, 0xff, 0x45, 6, 17 }
#include "driver.h"
