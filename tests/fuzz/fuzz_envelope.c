/*
 * fuzz_envelope.c - fuzz harness for E2B's envd protocol (src/api/
 * e2b_envd.c): the Connect envelopes of streaming calls (a flags byte, a
 * big-endian length, then JSON) and the JSON of unary ones, for the
 * process and filesystem services, through the real server
 * (fake_daemon.h) with the sandbox's access token.
 *
 * An input's first byte chooses the method (its value modulo the number
 * of methods below), the rest is the body as sent.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/envelope
 *   build-clang/fuzz_envelope -max_total_time=600 build/fuzz-corpus/envelope tests/fuzz/corpus/envelope
 */
#include "fake_daemon.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static const struct
{
  const char *path;
  bool stream; /* a Connect stream: the body is one envelope */
} methods[] = {
  { "/process.Process/Start", true },
  { "/process.Process/Connect", true },
  { "/process.Process/List", false },
  { "/process.Process/SendInput", false },
  { "/process.Process/SendSignal", false },
  { "/process.Process/CloseStdin", false },
  { "/process.Process/Update", false },
  { "/filesystem.Filesystem/Stat", false },
  { "/filesystem.Filesystem/ListDir", false },
  { "/filesystem.Filesystem/MakeDir", false },
  { "/filesystem.Filesystem/Move", false },
  { "/filesystem.Filesystem/Remove", false },
  { "/filesystem.Filesystem/WatchDir", true },
  { "/filesystem.Filesystem/CreateWatcher", false },
  { "/filesystem.Filesystem/GetWatcherEvents", false },
  { "/filesystem.Filesystem/RemoveWatcher", false },
};

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (fake_http == NULL)
    fake_daemon_start ();
  if (size == 0)
    return 0;
  size_t m = data[0] % (sizeof methods / sizeof methods[0]);
  char head[1024];
  snprintf (head, sizeof head,
            "POST %s HTTP/1.1\r\nE2b-Sandbox-Id: %s\r\nX-Access-Token: %s\r\nConnect-Protocol-Version: 1\r\n"
            "Content-Type: application/%s\r\n",
            methods[m].path, FAKE_ID, fake_token, methods[m].stream ? "connect+json" : "json");
  char *answer;
  size_t alen;
  int status = fake_request (head, data + 1, size - 1, &answer, &alen);
  fake_check_answer (status, answer);
  free (answer);
  return 0;
}
