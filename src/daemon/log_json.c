/*
 * log_json.c - JSON lines for the logger (see log_json.h), built with
 * jansson, the daemon's one JSON library.
 */
#include "log_json.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A JSON string of S, cut to SBX_LOG_VALUE_MAX bytes on a character
   boundary (a "..." says so); bytes that are not valid UTF-8 become '?',
   since log values may come from sandboxes and clients. */
static json_t *
string_of (const char *s)
{
  s = s ? s : "";
  size_t n = strnlen (s, SBX_LOG_VALUE_MAX + 1);
  bool cut = n > SBX_LOG_VALUE_MAX;
  if (cut)
    for (n = SBX_LOG_VALUE_MAX; n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80; n--)
      ;
  json_t *j = cut ? NULL : json_string (s);
  if (j)
    return j;
  char *copy = malloc (n + 4);
  if (copy == NULL)
    return NULL;
  memcpy (copy, s, n);
  strcpy (copy + n, cut ? "..." : "");
  j = json_string (copy);
  if (j == NULL)
    {
      for (char *p = copy; *p; p++)
        if ((unsigned char) *p >= 0x80)
          *p = '?';
      j = json_string (copy);
    }
  free (copy);
  return j;
}

void
sbx_log_json_sink (const struct sbx_log_record *rec, void *ud)
{
  (void) ud;
  int saved = errno;
  char when[32];
  sbx_log_format_time (rec->time_ms, when, sizeof when);
  json_t *o = json_object ();
  if (o == NULL)
    return;
  json_object_set_new (o, "time", json_string (when));
  json_object_set_new (o, "level", json_string (sbx_log_level_name (rec->level)));
  json_object_set_new (o, "msg", string_of (rec->msg));
  for (size_t i = 0; i < rec->n_fields; i++)
    {
      const char *k = rec->fields[2 * i];
      if (k && json_object_get (o, k) == NULL)   /* first wins: time, level, msg stay */
        json_object_set_new (o, k, string_of (rec->fields[2 * i + 1]));
    }
  /* Control characters are escaped by jansson, so a record is one line. */
  char *text = json_dumps (o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref (o);
  if (text)
    {
      size_t n = strlen (text);
      text[n] = '\n';   /* replaces the terminator: write the line at once */
      sbx_log_write (text, n + 1);
      free (text);
    }
  errno = saved;
}
