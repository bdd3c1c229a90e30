/*
 * fuzz_mcp.c - fuzz harness for the MCP server's JSON-RPC bodies (POST
 * /mcp, src/api/mcp.c): mcp_message_parse on its own, then the same bytes
 * through the real server (fake_daemon.h), sessions, tools/list and
 * tools/call into the tools (src/service/tools.c) against the fake
 * sandbox FAKE_ID, whose agent answers what the daemon asks.
 *
 * An input's first byte chooses the headers (its value modulo 4): the
 * harness's own session, no session, that session asking for an SSE
 * answer, an unknown session; the rest is the body.  Whatever it holds,
 * the answer is JSON-RPC: a 2xx with a message of version "2.0" (or 202
 * with nothing), an error with an error member.  Calls of kill_sandbox
 * are left out, so the fake sandbox stays for the next input.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/mcp
 *   build-clang/fuzz_mcp -max_total_time=600 build/fuzz-corpus/mcp tests/fuzz/corpus/mcp
 */
#include "fake_daemon.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static char session[64];

/* The harness's session, opened once. */
static void
open_session (void)
{
  char head[512];
  snprintf (head, sizeof head,
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n",
            fake_key);
  static const char body[]
      = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}";
  char *answer;
  size_t alen;
  int status = fake_request (head, body, sizeof body - 1, &answer, &alen);
  const char *h = strcasestr (answer, "\r\nMcp-Session-Id: ");
  if (status != 200 || h == NULL || sscanf (h + 18, "%63[0-9a-f]", session) != 1)
    {
      fprintf (stderr, "fuzz_mcp: no session: %.300s\n", answer);
      abort ();
    }
  free (answer);
}

/* The answer is JSON-RPC, whatever the body was. */
static void
check_rpc (int status, const char *answer)
{
  fake_check_answer (status, answer);
  const char *body = fake_answer_body (answer);
  if (status == 202)
    {
      if (body && *body)
        abort ();
      return;
    }
  if (body == NULL || strcasestr (answer, "Transfer-Encoding: chunked"))
    return;
  if (strncmp (body, "event: message\ndata: ", 21) == 0)
    body += 21;
  json_t *j = json_loads (body, JSON_DISABLE_EOF_CHECK, NULL);
  const char *v = json_string_value (json_object_get (j, "jsonrpc"));
  bool shaped = v && strcmp (v, "2.0") == 0
                && (status == 200 ? json_object_get (j, "result") || json_object_get (j, "error")
                                  : json_is_object (json_object_get (j, "error")));
  if (!shaped)
    {
      fprintf (stderr, "fuzz_mcp: an answer that is no JSON-RPC message: %.300s\n", answer);
      abort ();
    }
  json_decref (j);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (fake_http == NULL)
    {
      fake_daemon_start ();
      open_session ();
    }
  if (size == 0)
    return 0;
  const char *body = (const char *) data + 1;
  size_t len = size - 1;

  /* the parser alone: what it says is consistent */
  struct mcp_message m;
  int r = mcp_message_parse (body, len, &m);
  if ((r == 0) != (m.kind != MCP_MSG_INVALID && m.error[0] == '\0')
      || (m.kind == MCP_MSG_REQUEST && (m.id == NULL || m.method == NULL))
      || (m.kind == MCP_MSG_NOTIFICATION && (m.id != NULL || m.method == NULL))
      || (m.params && !json_is_object (m.params) && r == 0))
    abort ();
  const char *tool = json_string_value (json_object_get (m.params, "name"));
  bool kill = tool && strcmp (tool, "kill_sandbox") == 0;
  mcp_message_free (&m);
  if (kill)
    return 0;

  char head[512];
  int variant = data[0] % 4;
  int n = snprintf (head, sizeof head, "POST /mcp HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                    "Accept: %s\r\n", fake_key, variant == 2 ? "text/event-stream" : "application/json, text/event-stream");
  if (variant != 1)
    snprintf (head + n, sizeof head - (size_t) n, "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-06-18\r\n",
              variant == 3 ? "00000000000000000000000000000000" : session);
  char *answer;
  size_t alen;
  int status = fake_request (head, body, len, &answer, &alen);
  check_rpc (status, answer);
  free (answer);
  return 0;
}
