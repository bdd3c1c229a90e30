/*
 * test_output.c - output kept for JSON answers (src/service/output.c):
 * its encoding is jansson's, byte for byte, however the output is cut
 * into pieces; the cap counts encoded bytes and cuts only between
 * characters; the daemon-wide budget bounds all captures together and
 * gets everything back.  Also the end report's signal (proto.c), which
 * an untrusted agent could make huge.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/proto.h"
#include "service/output.h"

/* The answer path: api/sandbase.c's text_json (invalid UTF-8 becomes
   U+FFFD), then json_dumps.  The string's text, without its quotes. */
static char *
reference (const unsigned char *s, size_t n)
{
  json_t *j = json_stringn ((const char *) s, n);
  if (j == NULL)
    {
      char *clean = malloc (n * 3 + 1);
      size_t o = 0;
      for (size_t i = 0; i < n;)
        {
          unsigned char ch = s[i];
          size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
          json_t *probe = len && i + len <= n ? json_stringn ((const char *) s + i, len) : NULL;
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
    }
  char *text = json_dumps (j, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref (j);
  size_t len = strlen (text);
  memmove (text, text + 1, len - 2);
  text[len - 2] = '\0';
  return text;
}

/* Random output that hits every case: text, controls, quotes, valid
   characters of every length, cut ones, overlong and surrogate forms. */
static size_t
random_output (unsigned char *buf, size_t max)
{
  static const char *const pieces[]
      = { "a",        "\"",           "\\",           "\n",           "\t",       "\x01",     "\x1f",         "\x7f",
          "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
          "\xff",     "\x80",         "\xe2\x82",     "\xf0\x9f",     "\xc3",     "/",        "\xe2\x80\xa8" };
  size_t n = 0;
  size_t want = (size_t) rand () % max;
  while (n < want)
    {
      const char *p = pieces[rand () % (int) (sizeof pieces / sizeof pieces[0])];
      size_t l = strlen (p);
      if (*p == '\0')
        l = 1;
      if (n + l > max)
        break;
      memcpy (buf + n, p, l);
      n += l;
    }
  if (rand () % 4 == 0 && n < max)
    buf[n++] = '\0'; /* a NUL byte: \u0000 */
  return n;
}

static void
test_same_as_jansson (void)
{
  unsigned char buf[512];
  int same = 0, raw_same = 0, runs = 3000;
  for (int r = 0; r < runs; r++)
    {
      size_t n = random_output (buf, sizeof buf);
      char *want = reference (buf, n);
      struct sbx_capture esc, raw;
      sbx_capture_init (&esc, 1 << 20, true);
      sbx_capture_init (&raw, 1 << 20, false);
      /* cut into pieces of 1 to 7 bytes */
      for (size_t i = 0; i < n;)
        {
          size_t k = 1 + (size_t) rand () % 7;
          if (k > n - i)
            k = n - i;
          sbx_capture_add (&esc, buf + i, k);
          sbx_capture_add (&raw, buf + i, k);
          i += k;
        }
      sbx_capture_end (&esc);
      sbx_capture_end (&raw);
      size_t len;
      char *got = sbx_capture_take (&esc, &len);
      same += len == strlen (want) && memcmp (got, want, len) == 0 && !esc.truncated;
      raw_same += raw.len == n && memcmp (raw.data ? raw.data : "", buf, n) == 0 && raw.encoded == strlen (want)
                  && sbx_json_text_size (buf, n) == strlen (want);
      free (got);
      sbx_capture_free (&raw);
      free (want);
    }
  CHECK (same == runs);
  CHECK (raw_same == runs);
}

static void
test_cap_counts_encoded_bytes (void)
{
  /* 17 MiB of control bytes: six times that encoded; kept to the cap */
  size_t n = 17u << 20;
  unsigned char *flood = malloc (n);
  memset (flood, 1, n);
  struct sbx_capture c;
  sbx_capture_init (&c, 1u << 20, true);
  for (size_t i = 0; i < n; i += 65536)
    sbx_capture_add (&c, flood + i, 65536);
  sbx_capture_end (&c);
  CHECK (c.truncated);
  CHECK (c.len <= 1u << 20 && c.len > (1u << 20) - 6);
  CHECK (c.len % 6 == 0); /* whole \u0001 escapes only */
  CHECK (c.alloc <= (1u << 20) + 1);
  /* what was kept is a valid JSON string */
  char *doc = malloc (c.len + 3);
  doc[0] = '"';
  memcpy (doc + 1, c.data, c.len);
  memcpy (doc + 1 + c.len, "\"", 2);
  json_t *j = json_loads (doc, JSON_DECODE_ANY, NULL);
  CHECK (j && json_string_length (j) == c.len / 6);
  json_decref (j);
  free (doc);
  sbx_capture_free (&c);

  /* raw: the bytes kept encode within the cap */
  sbx_capture_init (&c, 1000, false);
  sbx_capture_add (&c, flood, 5000);
  CHECK (c.truncated && c.len == 166 && c.encoded == 996);
  sbx_capture_free (&c);

  /* a cut never splits a character */
  sbx_capture_init (&c, 10, true);
  sbx_capture_add (&c, "abcdefghi\xe2\x82\xac", 12);
  CHECK (c.truncated && c.len == 9);
  sbx_capture_free (&c);
  free (flood);
}

static void
test_budget_bounds_all_captures (void)
{
  size_t max = sbx_output_budget.max;
  CHECK (sbx_output_budget.used == 0);
  sbx_output_budget.max = 1u << 20;
  struct sbx_capture c[4];
  char text[4096];
  memset (text, 'x', sizeof text);
  for (int i = 0; i < 4; i++)
    {
      sbx_capture_init (&c[i], 16u << 20, true);
      for (int k = 0; k < 256; k++)
        sbx_capture_add (&c[i], text, sizeof text);
    }
  size_t kept = 0;
  for (int i = 0; i < 4; i++)
    kept += c[i].alloc;
  CHECK (kept <= 1u << 20);
  CHECK (sbx_output_budget.used == kept);
  /* the first took all 1 MiB (its NUL needs the last byte), the others
     found no room at all */
  CHECK (c[0].len == (1u << 20) - 1 && c[0].truncated);
  CHECK (c[3].len == 0 && c[3].truncated);
  for (int i = 0; i < 4; i++)
    sbx_capture_free (&c[i]);
  CHECK (sbx_output_budget.used == 0);
  sbx_output_budget.max = max;

  struct sbx_budget b = { .max = 100 };
  CHECK (sbx_budget_take (&b, 60));
  CHECK (!sbx_budget_take (&b, 41));
  CHECK (sbx_budget_take (&b, 40));
  CHECK (!sbx_budget_take (&b, (size_t) -1));
  sbx_budget_give (&b, 100);
  CHECK (b.used == 0);
}

static void
test_termsig_is_a_real_signal (void)
{
  static const struct {
    bool present;
    uint32_t value;
    int want;
  } cases[] = { { false, 0, 0 }, { true, 0, 0 }, { true, 9, 9 }, { true, 64, 64 }, { true, 65, -1 },
                { true, 0x7fffffff, -1 }, { true, 0xffffffff, -1 } };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_END);
      sbx_msg_put_u32 (&m, SBX_T_EXIT, 0);
      if (cases[i].present)
        sbx_msg_put_u32 (&m, SBX_T_TERMSIG, cases[i].value);
      CHECK (sbx_msg_termsig (&m) == cases[i].want);
      sbx_msg_free (&m);
    }
}

int
main (void)
{
  srand (12);
  test_same_as_jansson ();
  test_cap_counts_encoded_bytes ();
  test_budget_bounds_all_captures ();
  test_termsig_is_a_real_signal ();
  printf ("output: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
