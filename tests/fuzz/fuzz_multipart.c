/*
 * fuzz_multipart.c - fuzz harness for uploads (src/api/files.c):
 * libmicrohttpd's post processor reading a multipart/form-data body and
 * our field handling (on_field: the path, user and file fields, spooling
 * when the path comes last, the size limit), through the real server
 * (fake_daemon.h), into the sandbox's agent.
 *
 * An input: one byte choosing the endpoint (even: POST
 * /sandboxes/:id/files with the API key; odd: E2B's envd POST /files with
 * the access token and ?path=), one line (up to '\n') that is the
 * Content-Type, then the body.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/multipart
 *   build-clang/fuzz_multipart -max_total_time=600 build/fuzz-corpus/multipart tests/fuzz/corpus/multipart
 */
#include "fake_daemon.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (fake_http == NULL)
    fake_daemon_start ();
  if (size == 0)
    return 0;
  const uint8_t *nl = memchr (data + 1, '\n', size - 1);
  if (nl == NULL)
    return 0;
  size_t ctl = (size_t) (nl - data - 1);
  char ct[256];
  if (ctl >= sizeof ct)
    return 0;
  memcpy (ct, data + 1, ctl);
  ct[ctl] = '\0';
  for (size_t i = 0; i < ctl; i++)
    if (ct[i] == '\r' || ct[i] == '\0')
      return 0; /* one header line */
  char head[1024];
  if (data[0] % 2 == 0)
    snprintf (head, sizeof head,
              "POST /sandboxes/%s/files HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n", FAKE_ID,
              fake_key, ct);
  else
    snprintf (head, sizeof head,
              "POST /files?path=/home/user/up&username=user HTTP/1.1\r\nE2b-Sandbox-Id: %s\r\nX-Access-Token: %s\r\n"
              "Content-Type: %s\r\n",
              FAKE_ID, fake_token, ct);
  char *answer;
  size_t alen;
  int status = fake_request (head, nl + 1, size - (size_t) (nl + 1 - data), &answer, &alen);
  fake_check_answer (status, answer);
  free (answer);
  return 0;
}
