/*
 * fuzz_fspolicy.c - fuzz harness for sbx_fs_rules_check and
 * sbx_fs_rules_encode (src/core/fspolicy.c), which take a sandbox's
 * filesystem rules as clients send them.
 *
 * An input is one rule a line: the first byte chooses the access (its
 * value modulo 4: read-only, read-write, blocked, or an invalid one), the
 * rest of the line is the path.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/fspolicy
 *   build-clang/fuzz_fspolicy -max_total_time=600 build/fuzz-corpus/fspolicy tests/fuzz/corpus/fspolicy
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fspolicy.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static size_t
depth (const char *p)
{
  size_t d = 0;
  for (; *p; p++)
    d += *p == '/';
  return d;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct sbx_fs_rule rules[SBX_FS_RULES_MAX + 8];
  char *paths[SBX_FS_RULES_MAX + 8];
  size_t n = 0;
  for (size_t i = 0; i < size && n < SBX_FS_RULES_MAX + 8;)
    {
      const uint8_t *nl = memchr (data + i, '\n', size - i);
      size_t end = nl ? (size_t) (nl - data) : size;
      size_t len = end > i ? end - i - 1 : 0;
      int a = end > i ? data[i] % 4 : 0;
      /* exact-size copies: a read past the end of a path is caught */
      paths[n] = malloc (len + 1);
      if (len)
        memcpy (paths[n], data + i + 1, len);
      paths[n][len] = '\0';
      rules[n].path = paths[n];
      rules[n].access = a == 3 ? (enum sbx_fs_access) 7 : (enum sbx_fs_access) a;
      n++;
      i = end + 1;
    }
  struct sbx_err err;
  int ok = sbx_fs_rules_check (rules, n, &err) == 0;
  char *enc = NULL;
  size_t enc_len = 0;
  if ((sbx_fs_rules_encode (rules, n, &enc, &enc_len, &err) == 0) != ok)
    abort ();
  if (ok)
    {
      /* what was accepted is what fspolicy.h promises */
      size_t total = 0;
      for (size_t i = 0; i < n; i++)
        {
          const char *p = rules[i].path;
          size_t l = strlen (p);
          if (p[0] != '/' || l < 2 || l >= SBX_FS_PATH_MAX || p[l - 1] == '/' || strstr (p, "//")
              || strstr (p, "/./") || strstr (p, "/../") || (l >= 2 && strcmp (p + l - 2, "/.") == 0)
              || (l >= 3 && strcmp (p + l - 3, "/..") == 0) || (strncmp (p, "/proc", 5) == 0 && (p[5] == '/' || !p[5])))
            abort ();
          for (size_t c = 0; c < l; c++)
            if ((unsigned char) p[c] < 0x20 || p[c] == 0x7f)
              abort ();
          total += l + 2;
        }
      /* every rule encoded once, shallowest first */
      if (enc_len != total || (n && enc[enc_len - 1] != '\0'))
        abort ();
      size_t last = 0, k = 0;
      for (size_t off = 0; off < enc_len; k++)
        {
          if (enc[off] != 'r' && enc[off] != 'w' && enc[off] != 'b')
            abort ();
          size_t d = depth (enc + off + 1);
          if (d < last)
            abort ();
          last = d;
          off += strlen (enc + off + 1) + 2;
        }
      if (k != n)
        abort ();
    }
  else if (err.code != EINVAL)
    abort ();
  free (enc);
  for (size_t i = 0; i < n; i++)
    free (paths[i]);
  return 0;
}
