/*
 * output.c - a process's output kept for a JSON answer (see output.h).
 *
 * The encoding is jansson's: json_dumps of text_json (api/sandbase.c) of
 * the raw bytes, that is, every byte that does not start a valid UTF-8
 * character (as jansson checks them) becomes U+FFFD, and the string's
 * text escapes '"', '\\', \b \f \n \r \t and writes the other control
 * bytes as \u00XX.  It is written out here, character by character,
 * because jansson encodes only whole strings: a capture must know what
 * each piece of output costs as it arrives and where it may be cut (never
 * inside a character or an escape), and must not hold the whole output
 * twice to find out.  tests/unit/test_output.c checks it against jansson.
 */
#include "output.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sandbox.h"

struct sbx_budget sbx_output_budget = { .max = SBX_OUTPUT_BUDGET };

/* The next character of S (N bytes, N > 0): its raw length in *RAW and
   its JSON text in OUT (at most 6 bytes), whose length is returned.  0
   when S holds only the start of a character that more bytes could
   complete (never when END). */
static size_t
next_char (const unsigned char *s, size_t n, bool end, size_t *raw, char out[6])
{
  unsigned char ch = s[0];
  *raw = 1;
  if (ch < 0x80)
    {
      const char *esc = NULL;
      switch (ch)
        {
        case '"':
          esc = "\\\"";
          break;
        case '\\':
          esc = "\\\\";
          break;
        case '\b':
          esc = "\\b";
          break;
        case '\f':
          esc = "\\f";
          break;
        case '\n':
          esc = "\\n";
          break;
        case '\r':
          esc = "\\r";
          break;
        case '\t':
          esc = "\\t";
          break;
        default:
          break;
        }
      if (esc)
        {
          memcpy (out, esc, 2);
          return 2;
        }
      if (ch < 0x20)
        {
          static const char hex[] = "0123456789ABCDEF";
          memcpy (out, "\\u00", 4);
          out[4] = hex[ch >> 4];
          out[5] = hex[ch & 15];
          return 6;
        }
      out[0] = (char) ch;
      return 1;
    }
  /* jansson's utf8_check_first and utf8_check_full */
  size_t len = ch >= 0xC2 && ch <= 0xDF ? 2 : ch >= 0xE0 && ch <= 0xEF ? 3 : ch >= 0xF0 && ch <= 0xF4 ? 4 : 0;
  if (len == 0)
    goto bad;
  uint32_t v = ch & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < len; i++)
    {
      if (i >= n)
        {
          if (end)
            goto bad;
          return 0;
        }
      if (s[i] < 0x80 || s[i] > 0xBF)
        goto bad;
      v = v << 6 | (s[i] & 0x3Fu);
    }
  if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (len == 3 && v < 0x800) || (len == 4 && v < 0x10000))
    goto bad;
  memcpy (out, s, len);
  *raw = len;
  return len;
bad:
  memcpy (out, "\xef\xbf\xbd", 3);
  return 3;
}

size_t
sbx_json_text_size (const void *s, size_t n)
{
  const unsigned char *p = s;
  size_t size = 0, raw;
  char out[6];
  for (size_t i = 0; i < n; i += raw)
    size += next_char (p + i, n - i, true, &raw, out);
  return size;
}

void
sbx_capture_init (struct sbx_capture *c, size_t max, bool escaped)
{
  memset (c, 0, sizeof *c);
  c->max = max;
  c->escaped = escaped;
}

/* Room for NEED bytes, from the budget; false when there is none. */
static bool
room (struct sbx_capture *c, size_t need)
{
  if (need <= c->alloc)
    return true;
  size_t n = c->alloc ? c->alloc * 2 : 4096;
  if (n < need)
    n = need;
  if (n > c->max + 1)
    n = c->max + 1 > need ? c->max + 1 : need;
  if (!sbx_budget_take (&sbx_output_budget, n - c->alloc))
    return false;
  char *nb = realloc (c->data, n);
  if (nb == NULL)
    {
      sbx_budget_give (&sbx_output_budget, n - c->alloc);
      return false;
    }
  c->data = nb;
  c->alloc = n;
  return true;
}

/* Keep one character: RAW bytes of it, TEXT its encoding of K bytes;
   false once the capture is full. */
static bool
keep (struct sbx_capture *c, const unsigned char *raw, size_t rawlen, const char *text, size_t k)
{
  size_t add = c->escaped ? k : rawlen;
  if (c->encoded + k > c->max || !room (c, c->len + add + 1))
    {
      c->truncated = true;
      c->ncarry = 0;
      return false;
    }
  memcpy (c->data + c->len, c->escaped ? (const void *) text : (const void *) raw, add);
  c->len += add;
  c->data[c->len] = '\0';
  c->encoded += k;
  return true;
}

void
sbx_capture_add (struct sbx_capture *c, const void *d, size_t n)
{
  const unsigned char *s = d;
  size_t raw;
  char out[6];
  if (c->truncated || n == 0)
    return;
  if (c->encoded >= SBX_BULK_BYTES)
    sbx_thread_bulk (true);
  if (c->ncarry)
    {
      /* finish the character the previous piece cut */
      unsigned char tmp[8];
      size_t t = c->ncarry, take = n < 4 ? n : 4, pos = 0;
      memcpy (tmp, c->carry, t);
      memcpy (tmp + t, s, take);
      c->ncarry = 0;
      while (pos < t)
        {
          size_t k = next_char (tmp + pos, t + take - pos, false, &raw, out);
          if (k == 0)
            {
              /* still cut: this whole (short) piece joins it */
              c->ncarry = t + take - pos;
              memcpy (c->carry, tmp + pos, c->ncarry);
              return;
            }
          if (!keep (c, tmp + pos, raw, out, k))
            return;
          pos += raw;
        }
      s += pos - t;
      n -= pos - t;
    }
  for (size_t i = 0; i < n; i += raw)
    {
      size_t k = next_char (s + i, n - i, false, &raw, out);
      if (k == 0)
        {
          c->ncarry = n - i;
          memcpy (c->carry, s + i, c->ncarry);
          return;
        }
      if (!keep (c, s + i, raw, out, k))
        return;
    }
}

void
sbx_capture_end (struct sbx_capture *c)
{
  size_t raw;
  char out[6];
  for (size_t i = 0; i < c->ncarry && !c->truncated; i += raw)
    {
      size_t k = next_char (c->carry + i, c->ncarry - i, true, &raw, out);
      if (!keep (c, c->carry + i, raw, out, k))
        break;
    }
  c->ncarry = 0;
}

char *
sbx_capture_take (struct sbx_capture *c, size_t *len)
{
  char *d = c->data ? c->data : strdup ("");
  if (len)
    *len = d ? c->len : 0;
  sbx_budget_give (&sbx_output_budget, c->alloc);
  c->data = NULL;
  c->len = c->alloc = 0;
  return d;
}

void
sbx_capture_free (struct sbx_capture *c)
{
  free (c->data);
  sbx_budget_give (&sbx_output_budget, c->alloc);
  c->data = NULL;
  c->len = c->alloc = 0;
}

int
sbx_proc_capture_event (const struct sbx_proc_event *ev, void *ud)
{
  struct sbx_proc_capture *r = ud;
  switch (ev->kind)
    {
    case SBX_PROC_STDOUT:
    case SBX_PROC_PTY:
      sbx_capture_add (&r->out, ev->data, ev->len);
      break;
    case SBX_PROC_STDERR:
      sbx_capture_add (&r->err, ev->data, ev->len);
      break;
    case SBX_PROC_END:
      r->ended = true;
      r->exit_code = ev->exit_code;
      r->signal = ev->signal;
      r->timed_out = ev->timed_out;
      break;
    default:
      break;
    }
  return 0;
}
