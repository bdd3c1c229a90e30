/*
 * tools.c - the built-in code-execution tools (tools.h): run_code,
 * run_command, read_file, write_file, list_files, create_sandbox and
 * kill_sandbox.
 *
 * Every tool reaches a sandbox through the service: the sandbox is looked
 * up as the caller's organisation's (another's does not exist for it),
 * creates and kills go through the service's quota and records, and only
 * then does a tool ask the engine to run something or touch a file, as
 * the HTTP dialects do.  What a tool gives back is bounded: a command's
 * stdout and stderr TOOL_OUTPUT_MAX each (counted as JSON text), a file
 * read TOOL_READ_MAX, a listing TOOL_LIST_MAX entries, a cell's images
 * TOOL_IMAGES_MAX and TOOL_IMAGE_BYTES_MAX together.
 *
 * A failure of the tool (a bad argument, a sandbox of someone else, a
 * command that cannot start, a limit) is a result with isError true and a
 * one-line text, for the model or the client to read; -1 is kept for the
 * daemon failing to build any answer.
 */
#include "tools.h"

#include <errno.h>
#include <http_parser.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/util.h"
#include "encode.h"
#include "interp.h"
#include "output.h"
#include "plans.h"

#define TOOL_OUTPUT_MAX (1u << 20)         /* a command's stdout, and its stderr, as JSON text */
#define TOOL_READ_MAX (4u << 20)           /* the bytes read_file gives */
#define TOOL_LIST_MAX 1000u                /* the entries list_files shows */
#define TOOL_LIST_DEPTH_MAX 4u
#define TOOL_IMAGES_MAX 16u                /* images of one run_code */
#define TOOL_IMAGE_BYTES_MAX (16u << 20)   /* their base64 together */
#define TOOL_RESULTS_MAX 64u               /* results of one run_code kept as text */
#define TOOL_TIMEOUT_S 60u                 /* run_command and run_code without a timeout */
#define TOOL_ARGS_MAX 1024u                /* run_command's args */
#define TOOL_ENV_MAX 256u                  /* run_command's env */
#define TOOL_DEFAULT_TEMPLATE "code_interpreter"

#define TOOL_LINE_MAX (24u << 20)          /* one line of the interpreter's answer (an image, say) */

/* ---- the tools' descriptions ---- */

static const char sandbox_id_doc[] = "The sandbox (an id create_sandbox gave); may be left out when the tools are "
                                     "bound to one";

/* The inputSchema of a tool: an object of PROPS, REQUIRED (a NULL-ended
   list) required. */
static json_t *
schema (json_t *props, const char *const *required)
{
  json_t *req = json_array ();
  for (size_t i = 0; required && required[i]; i++)
    json_array_append_new (req, json_string (required[i]));
  return json_pack ("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props, "required", req,
                    "additionalProperties", 0);
}

static json_t *
prop (const char *type, const char *doc)
{
  return json_pack ("{s:s, s:s}", "type", type, "description", doc);
}

static json_t *
tool (const char *name, const char *title, const char *doc, json_t *input, json_t *output, bool read_only,
      bool destructive)
{
  json_t *t = json_pack ("{s:s, s:s, s:s, s:o, s:{s:s, s:b, s:b, s:b}}", "name", name, "title", title,
                         "description", doc, "inputSchema", input, "annotations", "title", title, "readOnlyHint",
                         read_only, "destructiveHint", destructive, "openWorldHint", 0);
  if (t && output)
    json_object_set_new (t, "outputSchema", output);
  else
    json_decref (output);
  return t;
}

json_t *
sbx_tools_list (void)
{
  static const char *const code_req[] = { "code", NULL };
  static const char *const cmd_req[] = { "cmd", NULL };
  static const char *const path_req[] = { "path", NULL };
  static const char *const write_req[] = { "path", "content", NULL };
  json_t *a = json_array ();
  json_array_append_new (
      a, tool ("run_code", "Run code",
               "Run a cell of code in the sandbox's code interpreter (a Jupyter kernel of the language that keeps "
               "its state between calls). Returns stdout, stderr, the results (the last expression's value, "
               "display() calls) and charts as PNG images (matplotlib figures are shown by plt.show() or at the "
               "end of the cell).",
               schema (json_pack ("{s:o, s:o, s:o, s:o}", "sandbox_id", prop ("string", sandbox_id_doc), "language",
                                  json_pack ("{s:s, s:[s, s, s, s, s], s:s}", "type", "string", "enum", "python",
                                             "javascript", "typescript", "r", "bash", "description",
                                             "The language (python, the default)"),
                                  "code", prop ("string", "The code to run"), "timeout",
                                  json_pack ("{s:s, s:i, s:i, s:s}", "type", "integer", "minimum", 1, "maximum",
                                             SBX_PLAN_TIMEOUT_CAP, "description",
                                             "Seconds before the cell is interrupted (default 60)")),
                       code_req),
               json_pack ("{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s, s:{s:s}}, s:{s:[s, s]}, s:{s:s}}, s:[s, s, s]}", "type",
                          "object", "properties", "stdout", "type", "string", "stderr", "type", "string", "results",
                          "type", "array", "items", "type", "string", "error", "type", "object", "null", "timed_out",
                          "type", "boolean", "required", "stdout", "stderr", "results"),
               false, false));
  json_array_append_new (
      a, tool ("run_command", "Run a command",
               "Run a command in the sandbox and wait for it to end. Without args, cmd is a shell command line "
               "(/bin/sh -c); with args (even empty), cmd is the program and args its arguments. Returns stdout, "
               "stderr and exit_code (124 when the timeout killed it, 128+N when signal N did).",
               schema (json_pack ("{s:o, s:o, s:{s:s, s:{s:s}, s:s}, s:o, s:{s:s, s:{s:s}, s:s}, s:o}", "sandbox_id",
                                  prop ("string", sandbox_id_doc), "cmd",
                                  prop ("string", "The command line, or the program when args are given"), "args",
                                  "type", "array", "items", "type", "string", "description",
                                  "The program's arguments", "cwd", prop ("string", "The working directory"), "env",
                                  "type", "object", "additionalProperties", "type", "string", "description",
                                  "Environment variables", "timeout",
                                  json_pack ("{s:s, s:i, s:i, s:s}", "type", "integer", "minimum", 1, "maximum",
                                             SBX_PLAN_TIMEOUT_CAP, "description",
                                             "Seconds before the command is killed (default 60)")),
                       cmd_req),
               json_pack ("{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}, s:[s, s, s]}", "type", "object",
                          "properties", "stdout", "type", "string", "stderr", "type", "string", "exit_code", "type",
                          "integer", "timed_out", "type", "boolean", "truncated", "type", "boolean", "required",
                          "stdout", "stderr", "exit_code"),
               false, false));
  json_array_append_new (
      a, tool ("read_file", "Read a file",
               "Read a file of the sandbox (at most 4 MiB): text as text, images as images, other bytes as a "
               "base64 resource.",
               schema (json_pack ("{s:o, s:o}", "sandbox_id", prop ("string", sandbox_id_doc), "path",
                                  prop ("string", "The file's path (relative: to the user's home)")),
                       path_req),
               NULL, true, false));
  json_array_append_new (
      a, tool ("write_file", "Write a file",
               "Write a file of the sandbox, replacing it whole; missing directories are made.",
               schema (json_pack ("{s:o, s:o, s:o, s:{s:s, s:[s, s], s:s}}", "sandbox_id",
                                  prop ("string", sandbox_id_doc), "path",
                                  prop ("string", "The file's path (relative: to the user's home)"), "content",
                                  prop ("string", "The content"), "encoding", "type", "string", "enum", "utf8",
                                  "base64", "description", "How content is given (utf8, the default, or base64)"),
                       write_req),
               NULL, false, true));
  json_array_append_new (
      a, tool ("list_files", "List files",
               "List a directory of the sandbox: one line per entry, its type (d directory, f file, l symlink, "
               "o other), size and path.",
               schema (json_pack ("{s:o, s:o, s:{s:s, s:i, s:i, s:s}}", "sandbox_id", prop ("string", sandbox_id_doc),
                                  "path", prop ("string", "The directory (default: the user's home)"), "depth",
                                  "type", "integer", "minimum", 1, "maximum", TOOL_LIST_DEPTH_MAX, "description",
                                  "Levels to list (default 1)"),
                       NULL),
               NULL, true, false));
  json_array_append_new (
      a, tool ("create_sandbox", "Create a sandbox",
               "Create a sandbox of the caller's organisation, within its limits. Returns its sandbox_id, for the "
               "other tools.",
               schema (json_pack ("{s:{s:s, s:s}, s:{s:s, s:i, s:i, s:s}}", "template", "type", "string",
                                  "description", "The template (default code_interpreter)", "timeout", "type",
                                  "integer", "minimum", 1, "maximum", SBX_PLAN_TIMEOUT_CAP, "description",
                                  "Seconds the sandbox lives (default 300, at most the plan's)"),
                       NULL),
               json_pack ("{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}}, s:[s, s, s]}", "type", "object", "properties",
                          "sandbox_id", "type", "string", "template", "type", "string", "end_at", "type", "string",
                          "required", "sandbox_id", "template", "end_at"),
               false, false));
  json_array_append_new (
      a, tool ("kill_sandbox", "Kill a sandbox", "Kill a sandbox of the caller's organisation, and all it runs.",
               schema (json_pack ("{s:o}", "sandbox_id", prop ("string", sandbox_id_doc)), NULL), NULL, false,
               true));
  return a;
}

/* ---- results ---- */


static json_t *
text_content (json_t *text)
{
  return text ? json_pack ("{s:s, s:o}", "type", "text", "text", text) : NULL;
}

/* A failed tool: isError and the message. */
static int
tool_error (json_t **result, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
static int
tool_error (json_t **result, const char *fmt, ...)
{
  char msg[SBX_ERR_MSG_MAX + 128];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  *result = json_pack ("{s:[o], s:b}", "content", text_content (sbx_json_text (msg, strlen (msg))), "isError", 1);
  return 0;
}

/* A result whose structuredContent is S (taken), repeated as JSON text
   (as MCP advises, for clients that read only content), then EXTRA
   content (taken, may be NULL); isError as given. */
static int
structured_result (json_t **result, json_t *s, json_t *extra, bool is_error)
{
  char *text = s ? json_dumps (s, JSON_COMPACT) : NULL;
  json_t *content = json_array ();
  if (text == NULL || content == NULL || json_array_append_new (content, text_content (json_string (text))) < 0)
    {
      free (text);
      json_decref (s);
      json_decref (extra);
      json_decref (content);
      return -1;
    }
  free (text);
  if (extra)
    json_array_extend (content, extra);
  json_decref (extra);
  *result = json_pack ("{s:o, s:o, s:b}", "content", content, "structuredContent", s, "isError", is_error);
  return *result ? 0 : -1;
}

static int
text_result (json_t **result, const char *text, size_t n)
{
  *result = json_pack ("{s:[o], s:b}", "content", text_content (sbx_json_text (text, n)), "isError", 0);
  return *result ? 0 : -1;
}

/* ---- arguments ---- */

/* Optional string KEY of ARGS into *OUT; false after an error result. */
static bool
arg_string (json_t *args, const char *key, bool required, const char **out, json_t **result)
{
  json_t *v = json_object_get (args, key);
  if (v == NULL || json_is_null (v))
    {
      if (required)
        tool_error (result, "invalid arguments: %s is required", key);
      return !required;
    }
  if (!json_is_string (v))
    {
      tool_error (result, "invalid arguments: %s must be a string", key);
      return false;
    }
  if (strlen (json_string_value (v)) != json_string_length (v))
    {
      tool_error (result, "invalid arguments: %s holds a NUL character", key);
      return false;
    }
  *out = json_string_value (v);
  return true;
}

/* Optional integer KEY in [LO, HI] into *OUT; false after an error
   result. */
static bool
arg_int (json_t *args, const char *key, long long lo, long long hi, long long *out, json_t **result)
{
  json_t *v = json_object_get (args, key);
  if (v == NULL || json_is_null (v))
    return true;
  /* models write 30.0 too */
  if (json_is_real (v) && json_real_value (v) == (double) (long long) json_real_value (v))
    *out = (long long) json_real_value (v);
  else if (json_is_integer (v))
    *out = json_integer_value (v);
  else
    {
      tool_error (result, "invalid arguments: %s must be an integer", key);
      return false;
    }
  if (*out < lo || *out > hi)
    {
      tool_error (result, "invalid arguments: %s must be between %lld and %lld", key, lo, hi);
      return false;
    }
  return true;
}

/* The sandbox a tool works on, as ORG's record; false after an error
   result.  BOUND (a session's sandbox) wins; ARGS may name it again. */
static bool
tool_sandbox (struct sbx_service *svc, const struct sbx_org *org, const char *bound, json_t *args,
              struct sbx_sandbox_rec *rec, json_t **result)
{
  const char *id = NULL;
  if (!arg_string (args, "sandbox_id", false, &id, result))
    return false;
  if (bound && id && *id && strcmp (bound, id) != 0)
    {
      tool_error (result, "these tools are bound to sandbox %s; sandbox %.64s cannot be used", bound, id);
      return false;
    }
  if (bound)
    id = bound;
  if (id == NULL || *id == '\0')
    {
      tool_error (result, "invalid arguments: sandbox_id is required (create_sandbox gives one)");
      return false;
    }
  struct sbx_err err;
  if (!sbx_id_wellformed (id) || sbx_service_sandbox_get (svc, org, id, rec, &err) < 0)
    {
      if (sbx_id_wellformed (id) && sbx_err_kind (&err) != SBX_E_NOT_FOUND)
        tool_error (result, "sandbox %s: %s", id, err.msg);
      else
        tool_error (result, "sandbox %.64s not found", id);
      return false;
    }
  return true;
}

/* Whether sandbox REC runs (so it can run something or give files);
   false after an error result. */
static bool
tool_running (const struct sbx_sandbox_rec *rec, json_t **result)
{
  if (strcmp (rec->status, "running") == 0)
    return true;
  if (strcmp (rec->status, "paused") == 0)
    tool_error (result, "sandbox %s is paused; resume it first", rec->id);
  else if (strcmp (rec->status, "creating") == 0)
    tool_error (result, "sandbox %s is not ready yet", rec->id);
  else
    tool_error (result, "sandbox %s has ended%s%s%s", rec->id, rec->stop_reason[0] ? " (" : "", rec->stop_reason,
                rec->stop_reason[0] ? ")" : "");
  return false;
}

/* ---- run_command ---- */

/* ENV (an object of strings) as "KEY=VALUE" strings into *OUT (NULL when
   none); false after an error result. */
static bool
command_env (json_t *args, char ***out, json_t **result)
{
  *out = NULL;
  json_t *env = json_object_get (args, "env");
  if (env == NULL || json_is_null (env))
    return true;
  if (!json_is_object (env) || json_object_size (env) > TOOL_ENV_MAX)
    {
      tool_error (result, "invalid arguments: env must be an object of at most %u strings", TOOL_ENV_MAX);
      return false;
    }
  char **v = calloc (json_object_size (env) + 1, sizeof *v);
  if (v == NULL)
    {
      tool_error (result, "out of memory");
      return false;
    }
  size_t i = 0;
  const char *k;
  json_t *val;
  json_object_foreach (env, k, val)
  {
    if (!json_is_string (val) || *k == '\0' || strchr (k, '=') || strlen (json_string_value (val)) != json_string_length (val))
      {
        sbx_strv_free (v);
        tool_error (result, "invalid arguments: env must map names (without '=') to strings without NUL");
        return false;
      }
    if (asprintf (&v[i], "%s=%s", k, json_string_value (val)) < 0)
      {
        v[i] = NULL;
        sbx_strv_free (v);
        tool_error (result, "out of memory");
        return false;
      }
    i++;
  }
  *out = v;
  return true;
}

static int
run_command (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, json_t *args, json_t **result)
{
  const char *cmd = NULL, *cwd = NULL;
  long long timeout = TOOL_TIMEOUT_S;
  if (!arg_string (args, "cmd", true, &cmd, result) || !arg_string (args, "cwd", false, &cwd, result)
      || !arg_int (args, "timeout", 1, SBX_PLAN_TIMEOUT_CAP, &timeout, result))
    return 0;
  if (*cmd == '\0')
    return tool_error (result, "invalid arguments: cmd is empty");
  if (cwd && *cwd == '\0')
    cwd = NULL;
  json_t *jargs = json_object_get (args, "args");
  if (jargs && !json_is_null (jargs) && (!json_is_array (jargs) || json_array_size (jargs) > TOOL_ARGS_MAX))
    return tool_error (result, "invalid arguments: args must be an array of at most %u strings", TOOL_ARGS_MAX);
  bool shell = jargs == NULL || json_is_null (jargs);
  size_t n_args = shell ? 0 : json_array_size (jargs);
  cleanup_free const char **argv = calloc (n_args + 4, sizeof *argv);
  if (argv == NULL)
    return tool_error (result, "out of memory");
  if (shell)
    {
      argv[0] = "/bin/sh";
      argv[1] = "-c";
      argv[2] = cmd;
    }
  else
    {
      argv[0] = cmd;
      for (size_t i = 0; i < n_args; i++)
        {
          json_t *a = json_array_get (jargs, i);
          if (!json_is_string (a) || strlen (json_string_value (a)) != json_string_length (a))
            return tool_error (result, "invalid arguments: args must be strings without NUL");
          argv[i + 1] = json_string_value (a);
        }
    }
  char **env;
  if (!command_env (args, &env, result))
    return 0;
  if (!tool_running (rec, result))
    {
      sbx_strv_free (env);
      return 0;
    }

  struct sbx_proc_capture r = { 0 };
  sbx_capture_init (&r.out, TOOL_OUTPUT_MAX, false);
  sbx_capture_init (&r.err, TOOL_OUTPUT_MAX, false);
  struct sbx_exec_opts o = { .argv = argv,
                             .env = (const char *const *) env,
                             .cwd = cwd,
                             .timeout_ms = (uint32_t) timeout * 1000u,
                             .tag = "sbxd-mcp" };
  struct sbx_err err;
  sbx_service_busy_begin (rec->id);
  int rc = sbx_service_exec (svc, rec->id, &o, sbx_proc_capture_event, &r, &err);
  sbx_service_busy_end (rec->id);
  sbx_strv_free (env);
  if (rc < 0 || !r.ended)
    {
      sbx_capture_free (&r.out);
      sbx_capture_free (&r.err);
      if (rc < 0)
        return tool_error (result, "cannot run %.200s: %s", cmd, err.msg);
      return tool_error (result, "the command ended without a status");
    }
  sbx_capture_end (&r.out);
  sbx_capture_end (&r.err);
  size_t no, ne;
  char *so = sbx_capture_take (&r.out, &no), *se = sbx_capture_take (&r.err, &ne);
  int code = r.timed_out ? 124 : r.signal ? 128 + r.signal : r.exit_code;
  json_t *s = json_pack ("{s:o, s:o, s:i}", "stdout", sbx_json_text (so, no), "stderr", sbx_json_text (se, ne),
                         "exit_code", code);
  free (so);
  free (se);
  if (s && r.timed_out)
    json_object_set_new (s, "timed_out", json_true ());
  if (s && (r.out.truncated || r.err.truncated))
    json_object_set_new (s, "truncated", json_true ());
  sbx_capture_free (&r.out);
  sbx_capture_free (&r.err);
  return structured_result (result, s, NULL, false);
}

/* ---- run_code ---- */

struct code_run {
  struct sbx_capture out, err;
  json_t *results;      /* the results' text */
  json_t *images;       /* image content */
  size_t image_bytes;
  json_t *error;        /* the cell's error, or a failure of the execution */
  bool dropped;         /* images or results over the bounds */
  bool timed_out;
  uint64_t deadline_ns;
};

static void
code_image (struct code_run *r, json_t *line, const char *key, const char *mime)
{
  json_t *v = json_object_get (line, key);
  if (!json_is_string (v))
    return;
  size_t n = json_string_length (v);
  if (json_array_size (r->images) >= TOOL_IMAGES_MAX || r->image_bytes + n > TOOL_IMAGE_BYTES_MAX)
    {
      r->dropped = true;
      return;
    }
  json_t *img = json_pack ("{s:s, s:O, s:s}", "type", "image", "data", v, "mimeType", mime);
  if (img && json_array_append_new (r->images, img) == 0)
    r->image_bytes += n;
}

static void
code_line (struct code_run *r, const char *data, size_t len)
{
  json_t *line = json_loadb (data, len, 0, NULL);
  const char *type = json_string_value (json_object_get (line, "type"));
  if (type == NULL)
    {
      json_decref (line);
      return;
    }
  json_t *text = json_object_get (line, "text");
  if (strcmp (type, "stdout") == 0 || strcmp (type, "stderr") == 0)
    {
      if (json_is_string (text))
        sbx_capture_add (type[3] == 'o' ? &r->out : &r->err, json_string_value (text), json_string_length (text));
    }
  else if (strcmp (type, "result") == 0)
    {
      code_image (r, line, "png", "image/png");
      code_image (r, line, "jpeg", "image/jpeg");
      if (json_is_string (text) && json_array_size (r->results) < TOOL_RESULTS_MAX
          && json_string_length (text) <= TOOL_OUTPUT_MAX)
        json_array_append (r->results, text);
      else if (json_is_string (text))
        r->dropped = true;
    }
  else if (strcmp (type, "error") == 0 && r->error == NULL)
    {
      r->error = json_pack ("{s:O?, s:O?, s:O?}", "name", json_object_get (line, "name"), "value",
                            json_object_get (line, "value"), "traceback", json_object_get (line, "traceback"));
    }
  json_decref (line);
}

/* The interpreter server's answer to POST /execute (templates/files/
   interpreter/server.py): an HTTP/1.1 response whose body is one JSON
   object a line (E2B's stream).  http_parser (Debian's, as the port proxy
   uses) takes the framing apart; each complete line goes to code_line.
   The bytes come from inside the sandbox: a line is bounded, and so is
   the time. */
struct code_http {
  struct code_run *r;
  unsigned status;
  char *line;
  size_t len, cap;
  bool too_long, done;
};

static int
code_on_body (http_parser *p, const char *at, size_t n)
{
  struct code_http *h = p->data;
  while (n > 0)
    {
      const char *nl = memchr (at, '\n', n);
      size_t take = nl ? (size_t) (nl - at) : n;
      if (!h->too_long && h->len + take > TOOL_LINE_MAX)
        {
          h->too_long = true;
          h->r->dropped = true;
        }
      if (!h->too_long && take > 0)
        {
          if (h->len + take > h->cap)
            {
              size_t cap = h->cap ? h->cap : 4096;
              while (cap < h->len + take)
                cap *= 2;
              char *nb = realloc (h->line, cap);
              if (nb == NULL)
                return -1;
              h->line = nb;
              h->cap = cap;
            }
          memcpy (h->line + h->len, at, take);
          h->len += take;
        }
      if (nl == NULL)
        break;
      if (!h->too_long && h->status == 200 && h->len > 0)
        code_line (h->r, h->line, h->len);
      h->len = 0;
      h->too_long = false;
      at = nl + 1;
      n -= take + 1;
    }
  return 0;
}

static int
code_on_headers (http_parser *p)
{
  struct code_http *h = p->data;
  h->status = p->status_code;
  return 0;
}

static int
code_on_done (http_parser *p)
{
  struct code_http *h = p->data;
  h->done = true;
  return 0;
}

/* Send the cell and read its stream until it ends, the deadline passes
   (then the connection is closed, which interrupts the cell) or the
   server breaks off.  A non-200 answer's body (the server's error) goes to
   *FAILURE. */
static void
code_exchange (int fd, json_t *body, struct code_run *r, char **failure)
{
  char *text = json_dumps (body, JSON_COMPACT);
  if (text == NULL)
    {
      *failure = strdup ("out of memory");
      return;
    }
  size_t blen = strlen (text);
  char head[256];
  int hn = snprintf (head, sizeof head,
                     "POST /execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     blen);
  bool sent = sbx_write_full (fd, head, (size_t) hn) == (ssize_t) hn && sbx_write_full (fd, text, blen) == (ssize_t) blen;
  free (text);
  if (!sent)
    {
      *failure = strdup ("the code interpreter closed the connection");
      return;
    }
  struct code_http h = { .r = r };
  http_parser p;
  http_parser_init (&p, HTTP_RESPONSE);
  p.data = &h;
  http_parser_settings set = { .on_headers_complete = code_on_headers, .on_body = code_on_body,
                               .on_message_complete = code_on_done };
  char buf[65536];
  while (!h.done)
    {
      uint64_t now = sbx_now_ns ();
      if (now >= r->deadline_ns)
        {
          r->timed_out = true;
          break;
        }
      struct pollfd pfd = { .fd = fd, .events = POLLIN };
      int64_t left_ms = (int64_t) ((r->deadline_ns - now) / 1000000u) + 1;
      int pr = poll (&pfd, 1, left_ms > 60000 ? 60000 : (int) left_ms);
      if (pr < 0 && errno == EINTR)
        continue;
      if (pr <= 0)
        continue;
      ssize_t n = read (fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      size_t got = n > 0 ? (size_t) n : 0;
      size_t used = http_parser_execute (&p, &set, buf, got);
      if (p.http_errno != HPE_OK || used != got)
        {
          if (*failure == NULL)
            *failure = strdup ("the code interpreter's answer is malformed");
          break;
        }
      if (n <= 0)
        break; /* the end (http_parser took the EOF) or an error */
    }
  if (h.status != 200 && *failure == NULL)
    {
      /* the server's own error: {"error": "..."} or text */
      json_t *e = h.len ? json_loadb (h.line, h.len, 0, NULL) : NULL;
      const char *msg = json_string_value (json_object_get (e, "error"));
      if (msg == NULL)
        msg = json_string_value (json_object_get (e, "message"));
      if (h.status == 0)
        *failure = strdup (r->timed_out ? "" : "the code interpreter gave no answer");
      else if (msg)
        *failure = strdup (msg);
      else if (asprintf (failure, "the code interpreter answered %u", h.status) < 0)
        *failure = NULL;
      json_decref (e);
    }
  free (h.line);
}

/* A language the interpreter runs, or nothing (python); the interpreter
   itself refuses the ones it has no kernel for. */
static bool
code_language (json_t *args, const char **lang, json_t **result)
{
  *lang = NULL;
  if (!arg_string (args, "language", false, lang, result))
    return false;
  if (*lang && strlen (*lang) > 64)
    {
      tool_error (result, "invalid arguments: language is too long");
      return false;
    }
  return true;
}

static int
run_code (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, json_t *args, json_t **result)
{
  long long timeout = TOOL_TIMEOUT_S;
  const char *lang;
  if (!code_language (args, &lang, result) || !arg_int (args, "timeout", 1, SBX_PLAN_TIMEOUT_CAP, &timeout, result))
    return 0;
  json_t *jcode = json_object_get (args, "code");
  if (!json_is_string (jcode))
    return tool_error (result, "invalid arguments: code is required, a string");
  if (!tool_running (rec, result))
    return 0;

  struct code_run r = { .results = json_array (), .images = json_array (),
                        .deadline_ns = sbx_now_ns () + (uint64_t) timeout * 1000000000ull };
  sbx_capture_init (&r.out, TOOL_OUTPUT_MAX, false);
  sbx_capture_init (&r.err, TOOL_OUTPUT_MAX, false);
  struct sbx_err err;
  int ret = 0, fd = -1;
  char *failure = NULL;
  json_t *body = json_pack ("{s:O, s:s}", "code", jcode, "language", lang ? lang : "python");
  if (r.results == NULL || r.images == NULL || body == NULL)
    {
      ret = tool_error (result, "out of memory");
      goto out;
    }
  if (sbx_interp_connect (svc, rec->id, &fd, &err) < 0)
    {
      ret = tool_error (result, "cannot run the code: %s", err.msg);
      goto out;
    }
  sbx_service_busy_begin (rec->id);
  code_exchange (fd, body, &r, &failure);
  sbx_service_busy_end (rec->id);
  if (failure && *failure)
    {
      ret = tool_error (result, "cannot run the code: %s", failure);
      goto out;
    }

  if (r.timed_out && r.error == NULL)
    r.error = json_pack ("{s:s, s:s, s:s}", "name", "TimeoutError", "value",
                         "the cell was interrupted at its timeout", "traceback", "");
  sbx_capture_end (&r.out);
  sbx_capture_end (&r.err);
  size_t no, ne;
  char *so = sbx_capture_take (&r.out, &no), *se = sbx_capture_take (&r.err, &ne);
  json_t *s = json_pack ("{s:o, s:o, s:O, s:O}", "stdout", sbx_json_text (so, no), "stderr", sbx_json_text (se, ne),
                         "results", r.results, "error", r.error ? r.error : json_null ());
  free (so);
  free (se);
  if (s && r.timed_out)
    json_object_set_new (s, "timed_out", json_true ());
  if (s && (r.out.truncated || r.err.truncated || r.dropped))
    json_object_set_new (s, "truncated", json_true ());
  ret = structured_result (result, s, json_incref (r.images), r.error != NULL || r.timed_out);

out:
  if (fd >= 0)
    close (fd);
  free (failure);
  json_decref (body);
  sbx_capture_free (&r.out);
  sbx_capture_free (&r.err);
  json_decref (r.results);
  json_decref (r.images);
  json_decref (r.error);
  return ret;
}

/* ---- files ---- */

struct file_buf {
  char *data;
  size_t len;
};

static int
file_collect (const void *d, size_t n, void *ud)
{
  struct file_buf *b = ud;
  char *p = realloc (b->data, b->len + n + 1);
  if (p == NULL)
    return -1;
  memcpy (p + b->len, d, n);
  b->data = p;
  b->len += n;
  p[b->len] = '\0';
  return 0;
}

/* The image type of the bytes, or NULL. */
static const char *
image_mime (const unsigned char *d, size_t n)
{
  if (n >= 8 && memcmp (d, "\x89PNG\r\n\x1a\n", 8) == 0)
    return "image/png";
  if (n >= 3 && memcmp (d, "\xff\xd8\xff", 3) == 0)
    return "image/jpeg";
  if (n >= 6 && (memcmp (d, "GIF87a", 6) == 0 || memcmp (d, "GIF89a", 6) == 0))
    return "image/gif";
  if (n >= 12 && memcmp (d, "RIFF", 4) == 0 && memcmp (d + 8, "WEBP", 4) == 0)
    return "image/webp";
  return NULL;
}

/* "file://" and PATH, percent-encoded but for unreserved bytes and '/'. */
static char *
file_uri (const char *path)
{
  size_t n = strlen (path);
  char *u = malloc (8 + n * 3 + 1);
  if (u == NULL)
    return NULL;
  size_t o = (size_t) sprintf (u, "file://%s", path[0] == '/' ? "" : "/");
  for (size_t i = 0; i < n; i++)
    {
      unsigned char ch = (unsigned char) path[i];
      if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr ("/-._~", ch))
        u[o++] = (char) ch;
      else
        o += (size_t) sprintf (u + o, "%%%02X", ch);
    }
  u[o] = '\0';
  return u;
}

static int
read_file (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, json_t *args, json_t **result)
{
  const char *path = NULL;
  if (!arg_string (args, "path", true, &path, result))
    return 0;
  if (*path == '\0')
    return tool_error (result, "invalid arguments: path is empty");
  if (!tool_running (rec, result))
    return 0;
  struct file_buf b = { 0 };
  struct sbx_entry en;
  struct sbx_err err;
  if (sbx_file_read (sbx_service_engine (svc), rec->id, path, NULL, TOOL_READ_MAX, &en, file_collect, &b, &err) < 0)
    {
      free (b.data);
      if (sbx_err_kind (&err) == SBX_E_TOO_LARGE)
        return tool_error (result, "%.512s is larger than %u MiB", path, TOOL_READ_MAX >> 20);
      return tool_error (result, "cannot read the file: %s", err.msg);
    }
  sbx_entry_free (&en);
  const char *data = b.data ? b.data : "";
  json_t *text = memchr (data, '\0', b.len) ? NULL : json_stringn (data, b.len);
  int ret;
  if (text)
    {
      *result = json_pack ("{s:[o], s:b}", "content", text_content (text), "isError", 0);
      ret = *result ? 0 : -1;
    }
  else
    {
      const char *mime = image_mime ((const unsigned char *) data, b.len);
      cleanup_free char *b64 = sbx_b64_encode (data, b.len);
      cleanup_free char *uri = file_uri (path);
      if (b64 == NULL || uri == NULL)
        ret = -1;
      else if (mime)
        {
          *result = json_pack ("{s:[{s:s, s:s, s:s}], s:b}", "content", "type", "image", "data", b64, "mimeType", mime,
                               "isError", 0);
          ret = *result ? 0 : -1;
        }
      else
        {
          *result = json_pack ("{s:[{s:s, s:{s:s, s:s, s:s}}], s:b}", "content", "type", "resource", "resource",
                               "uri", uri, "mimeType", "application/octet-stream", "blob", b64, "isError", 0);
          ret = *result ? 0 : -1;
        }
    }
  free (b.data);
  return ret;
}

static int
write_file (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, json_t *args, json_t **result)
{
  const char *path = NULL, *encoding = NULL;
  if (!arg_string (args, "path", true, &path, result) || !arg_string (args, "encoding", false, &encoding, result))
    return 0;
  json_t *content = json_object_get (args, "content");
  if (*path == '\0')
    return tool_error (result, "invalid arguments: path is empty");
  if (!json_is_string (content))
    return tool_error (result, "invalid arguments: content is required, a string");
  bool b64 = encoding && strcmp (encoding, "base64") == 0;
  if (encoding && !b64 && strcmp (encoding, "utf8") != 0 && strcmp (encoding, "utf-8") != 0)
    return tool_error (result, "invalid arguments: encoding must be utf8 or base64");
  if (!tool_running (rec, result))
    return 0;
  size_t len = json_string_length (content);
  cleanup_free uint8_t *decoded = NULL;
  if (b64 && (decoded = sbx_b64_decode (json_string_value (content), &len)) == NULL)
    return tool_error (result, "invalid arguments: content is not valid base64");
  struct sbx_entry en;
  struct sbx_err err;
  if (sbx_file_write (sbx_service_engine (svc), rec->id, path, NULL,
                      decoded ? (const void *) decoded : json_string_value (content), len, &en, &err) < 0)
    return tool_error (result, "cannot write the file: %s", err.msg);
  char msg[4200];
  int n = snprintf (msg, sizeof msg, "wrote %zu bytes to %.4096s", len, en.path ? en.path : path);
  sbx_entry_free (&en);
  return text_result (result, msg, n < (int) sizeof msg ? (size_t) n : sizeof msg - 1);
}

static int
list_files (struct sbx_service *svc, const struct sbx_sandbox_rec *rec, json_t *args, json_t **result)
{
  const char *path = NULL;
  long long depth = 1;
  if (!arg_string (args, "path", false, &path, result)
      || !arg_int (args, "depth", 1, TOOL_LIST_DEPTH_MAX, &depth, result))
    return 0;
  if (path == NULL || *path == '\0')
    path = ".";
  if (!tool_running (rec, result))
    return 0;
  struct sbx_entry *v;
  size_t n;
  struct sbx_err err;
  if (sbx_file_list (sbx_service_engine (svc), rec->id, path, NULL, (uint32_t) depth, &v, &n, &err) < 0)
    return tool_error (result, "cannot list the directory: %s", err.msg);
  /* "T SIZE PATH" lines; paths are at most 4096 bytes (the agent's bound) */
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&text, &len);
  if (f == NULL)
    {
      sbx_entries_free (v, n);
      return -1;
    }
  for (size_t i = 0; i < n && i < TOOL_LIST_MAX; i++)
    {
      char t = v[i].type == SBX_FT_DIR ? 'd' : v[i].type == SBX_FT_FILE ? 'f' : v[i].type == SBX_FT_SYMLINK ? 'l' : 'o';
      fprintf (f, "%c %llu %s", t, (unsigned long long) v[i].size, v[i].path ? v[i].path : v[i].name ? v[i].name : "");
      if (v[i].link)
        fprintf (f, " -> %s", v[i].link);
      fputc ('\n', f);
    }
  if (n > TOOL_LIST_MAX)
    fprintf (f, "... and %zu more entries\n", n - TOOL_LIST_MAX);
  if (n == 0)
    fputs ("(empty)\n", f);
  fclose (f);
  sbx_entries_free (v, n);
  int ret = text ? text_result (result, text, len) : -1;
  free (text);
  return ret;
}

/* ---- sandboxes ---- */

static int
create_sandbox (struct sbx_service *svc, const struct sbx_org *org, json_t *args, json_t **result)
{
  const char *template = NULL;
  long long timeout = 0;
  if (!arg_string (args, "template", false, &template, result)
      || !arg_int (args, "timeout", 1, SBX_PLAN_TIMEOUT_CAP, &timeout, result))
    return 0;
  if (template == NULL || *template == '\0')
    template = TOOL_DEFAULT_TEMPLATE;
  if (strlen (template) > 128)
    return tool_error (result, "invalid arguments: template is too long");
  struct sbx_sandbox_spec spec = { .template_name = template, .timeout_s = (uint32_t) timeout };
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  if (sbx_service_sandbox_create (svc, org, &spec, &rec, &err) < 0)
    return tool_error (result, "cannot create a sandbox of %.128s: %s", template, err.msg);
  char end[40];
  sbx_rfc3339 (rec.end_ms, end, sizeof end);
  json_t *s = json_pack ("{s:s, s:s, s:s}", "sandbox_id", rec.id, "template", rec.template_id, "end_at", end);
  sbx_sandbox_rec_free (&rec);
  return structured_result (result, s, NULL, false);
}

static int
kill_sandbox (struct sbx_service *svc, const struct sbx_org *org, const struct sbx_sandbox_rec *rec, json_t **result)
{
  struct sbx_err err;
  if (sbx_service_sandbox_kill (svc, org, rec->id, &err) < 0)
    {
      if (sbx_err_kind (&err) == SBX_E_STOPPED)
        return tool_error (result, "sandbox %s has already ended", rec->id);
      return tool_error (result, "cannot kill sandbox %s: %s", rec->id, err.msg);
    }
  char msg[96];
  int n = snprintf (msg, sizeof msg, "killed sandbox %s", rec->id);
  return text_result (result, msg, (size_t) n);
}

/* ---- calls ---- */

/* The tools that work on a sandbox of the caller's. */
enum sandbox_tool {
  TOOL_RUN_CODE,
  TOOL_RUN_COMMAND,
  TOOL_READ_FILE,
  TOOL_WRITE_FILE,
  TOOL_LIST_FILES,
  TOOL_KILL_SANDBOX,
};

static int
sandbox_tool (const char *name)
{
  static const char *const names[] = { [TOOL_RUN_CODE] = "run_code",     [TOOL_RUN_COMMAND] = "run_command",
                                       [TOOL_READ_FILE] = "read_file",   [TOOL_WRITE_FILE] = "write_file",
                                       [TOOL_LIST_FILES] = "list_files", [TOOL_KILL_SANDBOX] = "kill_sandbox" };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp (name, names[i]) == 0)
      return (int) i;
  return -1;
}

int
sbx_tool_call (struct sbx_service *svc, const struct sbx_org *org, const char *sandbox_id, const char *name,
               json_t *args, json_t **result, struct sbx_err *err)
{
  *result = NULL;
  json_t *empty = NULL;
  if (args == NULL || json_is_null (args))
    args = empty = json_object ();
  int r = 0;
  if (args == NULL)
    r = -1;
  else if (!json_is_object (args))
    r = tool_error (result, "invalid arguments: the arguments must be an object");
  else if (strcmp (name, "create_sandbox") == 0)
    r = create_sandbox (svc, org, args, result);
  else if (sandbox_tool (name) >= 0)
    {
      struct sbx_sandbox_rec rec;
      if (tool_sandbox (svc, org, sandbox_id, args, &rec, result))
        {
          switch (sandbox_tool (name))
            {
            case TOOL_RUN_CODE:
              r = run_code (svc, &rec, args, result);
              break;
            case TOOL_RUN_COMMAND:
              r = run_command (svc, &rec, args, result);
              break;
            case TOOL_READ_FILE:
              r = read_file (svc, &rec, args, result);
              break;
            case TOOL_WRITE_FILE:
              r = write_file (svc, &rec, args, result);
              break;
            case TOOL_LIST_FILES:
              r = list_files (svc, &rec, args, result);
              break;
            case TOOL_KILL_SANDBOX:
              r = kill_sandbox (svc, org, &rec, result);
              break;
            }
          sbx_sandbox_rec_free (&rec);
        }
    }
  else
    r = tool_error (result, "unknown tool: %.128s", name);
  json_decref (empty);
  if (r < 0 || *result == NULL)
    {
      json_decref (*result);
      *result = NULL;
      return sbx_fail (err, ENOMEM, "tool result");
    }
  return 0;
}
