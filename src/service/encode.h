/*
 * encode.h - encodings the API and the service share: base64 (OpenSSL's codec) and
 * RFC 3339 time formatting.
 */
#ifndef SBX_SERVICE_ENCODE_H
#define SBX_SERVICE_ENCODE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A JSON string of the N bytes at S (NULL: ""), which must be UTF-8:
   invalid bytes become U+FFFD (output and file names come from the
   sandbox). */
json_t *sbx_json_text (const char *s, size_t n);

/* Newly allocated base64 text of DATA. */
char *sbx_b64_encode (const void *data, size_t len);
/* Decode base64 TEXT; returns a new buffer and its length in *LEN, or NULL
   when TEXT is not valid base64. */
uint8_t *sbx_b64_decode (const char *text, size_t *len);
/* base64 of SHA-256(A || B), without '=' padding, into OUT (E2B's
   webhook and file URL signatures). */
void sbx_sha256_b64 (const void *a, size_t alen, const void *b, size_t blen, char *out, size_t n);
/* "2026-07-01T10:00:00.123Z" into BUF (at least 32 bytes). */
void sbx_rfc3339 (int64_t ms, char *buf, size_t n);
/* "2026-12-01T10:00:00Z", whole seconds, into BUF (at least 32 bytes). */
void sbx_rfc3339_s (int64_t ms, char *buf, size_t n);

#endif
