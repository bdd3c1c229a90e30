/*
 * fuzz_mcp_client.c - fuzz harness for what a remote MCP server sends the
 * daemon's client (src/service/mcp_client.c): the answer to a request as
 * a JSON body or an SSE stream, cut into events and JSON-RPC messages by
 * the client's own reader (sbx_mcp_answer_parse, the code the transfers
 * feed).  The server is the tenant's: it controls every byte.
 *
 * An input's first byte chooses the media type (odd: text/event-stream,
 * even: application/json) and its second the request id (0 to 255); the
 * rest is the body.  What it checks besides the sanitizers: an answer
 * found is a JSON-RPC response to that id.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/mcp_client
 *   build-clang/fuzz_mcp_client -max_total_time=600 build/fuzz-corpus/mcp_client tests/fuzz/corpus/mcp_client
 */
#include <stdint.h>
#include <stdlib.h>

#include "service/mcp_client.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  const char *ctype = data[0] & 1 ? "text/event-stream; charset=utf-8" : "application/json";
  json_int_t id = data[1];
  json_t *msg = NULL;
  struct sbx_err err;
  if (sbx_mcp_answer_parse (ctype, (const char *) data + 2, size - 2, id, &msg, &err) == 0)
    {
      json_t *jid = json_object_get (msg, "id");
      if (!json_is_integer (jid) || json_integer_value (jid) != id
          || (json_object_get (msg, "result") == NULL && json_object_get (msg, "error") == NULL))
        abort ();
      json_decref (msg);
    }
  else if (msg != NULL)
    abort ();
  return 0;
}
