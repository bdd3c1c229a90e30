/*
 * fuzz_name.h - what the harnesses of the network filter's name parsers
 * (SNI, HTTP Host) require of every name those parsers return.
 */
#ifndef SBX_FUZZ_NAME_H
#define SBX_FUZZ_NAME_H

#include <stdlib.h>
#include <string.h>

#include "core/netproxy_internal.h"

/* A name the filter judges: 1..SBX_NETPROXY_NAME_MAX bytes of lower-case
   letters, digits, '-' and '_' in labels of 1..63, no dot at either end;
   anything else aborts (a finding). */
static void
fuzz_check_name (const char *name)
{
  size_t len = strlen (name), label = 0;
  if (len == 0 || len > SBX_NETPROXY_NAME_MAX || name[0] == '.' || name[len - 1] == '.')
    abort ();
  for (size_t i = 0; i < len; i++)
    {
      char c = name[i];
      if (c == '.')
        {
          if (label == 0)
            abort ();
          label = 0;
        }
      else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') || ++label > 63)
        abort ();
    }
}

#endif
