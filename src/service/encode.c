/*
 * json.c - see json.h.
 */
#include "encode.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *
sbx_b64_encode (const void *data, size_t len)
{
  char *out = malloc (4 * ((len + 2) / 3) + 1);
  if (out == NULL)
    return NULL;
  /* EVP_EncodeBlock takes an int length: go in 3 KiB-aligned steps */
  size_t in = 0, o = 0;
  const unsigned char *p = data;
  while (in < len)
    {
      size_t n = len - in > (1u << 30) ? (1u << 30) : len - in;
      o += (size_t) EVP_EncodeBlock ((unsigned char *) out + o, p + in, (int) n);
      in += n;
    }
  out[o] = '\0';
  return out;
}

static int
b64_char (unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

uint8_t *
sbx_b64_decode (const char *text, size_t *len)
{
  size_t n = strlen (text);
  /* strict: only the alphabet, '=' padding at the end, length a multiple
     of 4; EVP_DecodeBlock alone would accept surrounding white space */
  if (n % 4 != 0 || n > (size_t) 1 << 31)
    return NULL;
  size_t pad = 0;
  for (size_t i = 0; i < n; i++)
    {
      unsigned char c = (unsigned char) text[i];
      if (c == '=')
        {
          if (i < n - 2)
            return NULL;
          pad++;
        }
      else if (!b64_char (c) || pad)
        return NULL;
    }
  uint8_t *out = malloc (n / 4 * 3 + 1);
  if (out == NULL)
    return NULL;
  int r = n ? EVP_DecodeBlock (out, (const unsigned char *) text, (int) n) : 0;
  if (r < 0)
    {
      free (out);
      return NULL;
    }
  *len = (size_t) r - pad;
  return out;
}

void
sbx_sha256_b64 (const void *a, size_t alen, const void *b, size_t blen, char *out, size_t n)
{
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  EVP_DigestUpdate (ctx, a, alen);
  EVP_DigestUpdate (ctx, b, blen);
  EVP_DigestFinal_ex (ctx, md, &mdlen);
  EVP_MD_CTX_free (ctx);
  char *b64 = sbx_b64_encode (md, mdlen);
  size_t l = b64 ? strlen (b64) : 0;
  while (l > 0 && b64[l - 1] == '=')
    l--;
  snprintf (out, n, "%.*s", (int) l, b64 ? b64 : "");
  free (b64);
}

void
sbx_rfc3339_s (int64_t ms, char *buf, size_t n)
{
  time_t t = (time_t) (ms / 1000);
  struct tm tm;
  gmtime_r (&t, &tm);
  strftime (buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
sbx_rfc3339 (int64_t ms, char *buf, size_t n)
{
  char base[32];
  sbx_rfc3339_s (ms, base, sizeof base);
  base[strlen (base) - 1] = '\0'; /* the Z goes after the milliseconds */
  snprintf (buf, n, "%s.%03dZ", base, (int) (ms % 1000));
}

/* JSON strings must be UTF-8: invalid bytes become U+FFFD (output and file
   names come from the sandbox). */
json_t *
sbx_json_text (const char *s, size_t n)
{
  json_t *j = json_stringn (s ? s : "", s ? n : 0);
  if (j || s == NULL)
    return j;
  char *clean = malloc (n * 3 + 1);
  if (clean == NULL)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;)
    {
      unsigned char ch = (unsigned char) s[i];
      size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
      json_t *probe = len && i + len <= n ? json_stringn (s + i, len) : NULL;
      if (probe)
        {
          memcpy (clean + o, s + i, len);
          o += len;
          i += len;
          json_decref (probe);
        }
      else
        {
          memcpy (clean + o, "\xef\xbf\xbd", 3);
          o += 3;
          i++;
        }
    }
  j = json_stringn (clean, o);
  free (clean);
  return j;
}
