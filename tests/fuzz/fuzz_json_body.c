/*
 * fuzz_json_body.c - fuzz harness for the JSON request bodies of the HTTP
 * API: jansson's parse and our validation of what it gives (server.c's
 * body_object, opt_int, opt_string, opt_bool, env_list; network.c's
 * body_network; the create bodies of sandbase.c, seed002.c and E2B's v2,
 * and the bodies of timeouts, execs, process actions, files, networks,
 * seed 002's runs, the code interpreter, and seed 004's creates, execs,
 * code and file writes, seed 000's agents, sessions and messages),
 * through the real server
 * (fake_daemon.h): whatever a body holds, the caller gets an answer in
 * its dialect's shape.
 *
 * An input's first byte chooses the route (its value modulo the number
 * of routes below), the rest is the body.  Creates get as far as the
 * engine's template lookup, which finds none: no sandbox is made.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/json_body
 *   build-clang/fuzz_json_body -max_total_time=600 build/fuzz-corpus/json_body tests/fuzz/corpus/json_body
 */
#include "fake_daemon.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* METHOD PATH (":id" is FAKE_ID), and whether it is an E2B envd call
   (access token and sandbox headers instead of the API key); PORT the
   envd port (49999: the code interpreter). */
static const struct
{
  const char *method, *path;
  bool envd;
  const char *port;
} routes[] = {
  { "POST", "/sandboxes", false, NULL },
  { "POST", "/v2/sandboxes", false, NULL },
  { "POST", "/sandboxes/:id/connect", false, NULL },
  { "POST", "/sandboxes/:id/timeout", false, NULL },
  { "POST", "/sandboxes/:id/refreshes", false, NULL },
  { "PUT", "/sandboxes/:id/network", false, NULL },
  { "POST", "/sandboxes/:id/snapshots", false, NULL },
  { "POST", "/sandboxes/:id/fork", false, NULL },
  { "POST", "/sandboxes/:id/processes", false, NULL },
  { "POST", "/sandboxes/:id/processes/stream", false, NULL },
  { "POST", "/sandboxes/:id/processes/42/signal", false, NULL },
  { "POST", "/sandboxes/:id/processes/42/stdin", false, NULL },
  { "POST", "/sandboxes/:id/processes/42/resize", false, NULL },
  { "POST", "/sandboxes/:id/filesystem", false, NULL },
  { "POST", "/sandboxes/:id/filesystem/mkdir", false, NULL },
  { "POST", "/sandboxes/:id/filesystem/move", false, NULL },
  { "POST", "/api/sandbox/create", false, NULL },
  { "POST", "/api/sandbox/:id/run", false, NULL },
  { "POST", "/contexts", true, "49999" },
  { "POST", "/execute", true, "49999" },
  { "POST", "/v1/sandboxes", false, NULL },
  { "POST", "/v1/sandboxes/exec", false, NULL },
  { "POST", "/v1/sandboxes/code", false, NULL },
  { "POST", "/v1/sandboxes/files", false, NULL },
  { "POST", "/v3/templates", false, NULL },
  { "POST", "/v2/templates/tplnosuchtemplate/builds/00000000-0000-4000-8000-000000000000", false, NULL },
  { "POST", "/templates/tags", false, NULL },
  { "DELETE", "/templates/tags", false, NULL },
  { "PATCH", "/v2/templates/tplnosuchtemplate", false, NULL },
  { "POST", "/default/v1/agents", false, NULL },
  { "POST", "/default/v1/sessions", false, NULL },
  { "POST", "/default/v1/sessions/sess_nosuchsession/events", false, NULL },
};

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (fake_http == NULL)
    fake_daemon_start ();
  if (size == 0)
    return 0;
  size_t r = data[0] % (sizeof routes / sizeof routes[0]);
  char path[256];
  const char *at = strstr (routes[r].path, ":id");
  if (at)
    snprintf (path, sizeof path, "%.*s%s%s", (int) (at - routes[r].path), routes[r].path, FAKE_ID, at + 3);
  else
    snprintf (path, sizeof path, "%s", routes[r].path);
  char head[1024];
  if (routes[r].envd)
    snprintf (head, sizeof head,
              "%s %s HTTP/1.1\r\nE2b-Sandbox-Id: %s\r\nE2b-Sandbox-Port: %s\r\nX-Access-Token: %s\r\n"
              "Content-Type: application/json\r\n",
              routes[r].method, path, FAKE_ID, routes[r].port, fake_token);
  else
    snprintf (head, sizeof head, "%s %s HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n",
              routes[r].method, path, fake_key);
  char *answer;
  size_t alen;
  int status = fake_request (head, data + 1, size - 1, &answer, &alen);
  fake_check_answer (status, answer);
  free (answer);
  return 0;
}
