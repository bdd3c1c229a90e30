/*
 * tools.c - the built-in code-execution tools (tools.h).
 */
#include "tools.h"

#include <errno.h>

json_t *
sbx_tools_list (void)
{
  return json_array ();
}

int
sbx_tool_call (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, const char *name,
               json_t *args, json_t **result, struct sbx_err *err)
{
  (void) svc;
  (void) org;
  (void) sandbox_id;
  (void) args;
  (void) err;
  *result = json_pack ("{s:[{s:s, s:s+}], s:b}", "content", "type", "text", "text", "unknown tool: ", name,
                       "isError", 1);
  return *result ? 0 : sbx_fail (err, ENOMEM, "tool result");
}
