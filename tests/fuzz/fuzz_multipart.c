/*
 * fuzz_multipart.c - fuzz harness for uploads (src/api/files.c):
 * libmicrohttpd's post processor reading a multipart/form-data body and
 * our field handling (on_field: the path, user and file fields, spooling
 * when the path comes last, the size limit), through the real server
 * (fake_daemon.h), into the sandbox's agent.
 *
 * An input: one byte choosing the endpoint (bit 0 clear: POST
 * /sandboxes/:id/files with the API key; set: E2B's envd POST /files with
 * the access token and ?path=, or without it when bit 3 is set) and the
 * headers (bit 1: Content-Encoding: gzip, so the body goes through the
 * upload's gunzip first; bit 2: X-Metadata-* headers), one line (up to
 * '\n') that is the Content-Type, then the body.
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
  const char *extra = (data[0] & 6) == 6   ? "Content-Encoding: gzip\r\nX-Metadata-Author: a\r\nx-metadata-b: \r\n"
                      : (data[0] & 6) == 2 ? "Content-Encoding: gzip\r\n"
                      : (data[0] & 6) == 4 ? "X-Metadata-Author: a\r\nX-Metadata-: dropped\r\n"
                                           : "";
  if (data[0] % 2 == 0)
    snprintf (head, sizeof head,
              "POST /sandboxes/%s/files HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n%s", FAKE_ID,
              fake_key, ct, extra);
  else
    snprintf (head, sizeof head,
              "POST /files%s HTTP/1.1\r\nE2b-Sandbox-Id: %s\r\nX-Access-Token: %s\r\n"
              "Content-Type: %s\r\n%s",
              data[0] & 8 ? "?username=user" : "?path=/home/user/up&username=user", FAKE_ID, fake_token, ct, extra);
  char *answer;
  size_t alen;
  int status = fake_request (head, nl + 1, size - (size_t) (nl + 1 - data), &answer, &alen);
  fake_check_answer (status, answer);
  free (answer);
  return 0;
}
