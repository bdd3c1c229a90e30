/*
 * models.c - the model providers (models.h): Anthropic's Messages API
 * and OpenAI-compatible chat completions, over libcurl.
 *
 * A reply is parsed defensively: only text blocks and tool_use blocks
 * with a string id and name and an object input are kept; anything else
 * a provider sends is dropped.  The answer is read into memory up to
 * SBX_MODEL_REPLY_MAX bytes.  An error the provider explains
 * ({"error": {"message"}}, both APIs) is shown with its status, cut to a
 * few hundred bytes; the key is never part of any message.
 */
#include "models.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"

#define ERROR_SHOWN_MAX 300
#define ANTHROPIC_VERSION "2023-06-01"

static void
provider_from_env (struct sbx_provider *p, const char *key_var, const char *base_var, const char *base_default)
{
  const char *key = getenv (key_var), *base = getenv (base_var);
  memset (p, 0, sizeof *p);
  p->on = (key && *key) || (base && *base);
  snprintf (p->key, sizeof p->key, "%s", key ? key : "");
  snprintf (p->base, sizeof p->base, "%s", base && *base ? base : base_default);
  size_t n = strlen (p->base);
  while (n > 0 && p->base[n - 1] == '/')
    p->base[--n] = '\0';
}

void
sbx_models_from_env (struct sbx_models *m)
{
  memset (m, 0, sizeof *m);
  provider_from_env (&m->anthropic, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com");
  provider_from_env (&m->openai, "OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1");
  /* the operator's own URLs: every range is open to them */
  sbx_outbound_allow (&m->trusted, "::/0");
  if (m->anthropic.on)
    sbx_log_fields (SBX_LOG_INFO, "model provider", "name", "anthropic", "base_url", m->anthropic.base, NULL);
  if (m->openai.on)
    sbx_log_fields (SBX_LOG_INFO, "model provider", "name", "openai", "base_url", m->openai.base, NULL);
}

static bool
is_claude (const char *model)
{
  return strncmp (model, "claude", 6) == 0;
}

const char *
sbx_models_provider (const struct sbx_models *m, const char *model)
{
  if (model == NULL || *model == '\0')
    return NULL;
  if (is_claude (model))
    return m->anthropic.on ? "anthropic" : NULL;
  return m->openai.on ? "openai" : NULL;
}

/* ---- HTTP ---- */

struct reply_buf {
  char *data;
  size_t len, cap;
  bool too_big;
};

static size_t
collect (char *p, size_t size, size_t nmemb, void *ud)
{
  struct reply_buf *b = ud;
  size_t n = size * nmemb;
  if (b->len + n + 1 > SBX_MODEL_REPLY_MAX)
    {
      b->too_big = true;
      return 0;
    }
  if (sbx_reserve (&b->data, &b->cap, b->len + n + 1, 4096) < 0)
    return 0;
  memcpy (b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return n;
}

static int
progress (void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
  (void) dlt;
  (void) dln;
  (void) ult;
  (void) uln;
  const volatile bool *cancel = ud;
  return cancel && *cancel ? 1 : 0;
}

/* The provider's explanation of an error answer, if it gives one. */
static void
error_detail (const char *body, char *out, size_t n)
{
  out[0] = '\0';
  json_t *j = body ? json_loads (body, 0, NULL) : NULL;
  json_t *e = j ? json_object_get (j, "error") : NULL;
  const char *msg = json_string_value (json_object_get (e, "message"));
  const char *type = json_string_value (json_object_get (e, "type"));
  if (msg == NULL && json_is_string (e))
    msg = json_string_value (e);
  if (msg)
    snprintf (out, n, "%s%s%.*s", type ? type : "", type ? ": " : "", ERROR_SHOWN_MAX, msg);
  json_decref (j);
}

/* POST BODY to URL with HEADERS; *REPLY gets the parsed 2xx answer. */
static int
post_json (const struct sbx_models *m, const struct sbx_model_request *rq, const char *url, struct curl_slist *headers,
           json_t *body, json_t **reply, struct sbx_err *err)
{
  *reply = NULL;
  cleanup_free char *text = json_dumps (body, JSON_COMPACT);
  if (text == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "cannot encode the model request");
  CURL *curl = curl_easy_init ();
  if (curl == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "curl_easy_init failed");
  struct sbx_outbound_target t;
  struct reply_buf b = { 0 };
  int ret = -1;
  if (sbx_outbound_open (&m->trusted, url, curl, &t, err) < 0)
    {
      sbx_err_wrap (err, "model provider");
      err->kind = SBX_E_UNAVAILABLE;
      goto out;
    }
  curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt (curl, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) strlen (text));
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, (long) rq->timeout_ms);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT_MS, (long) (rq->timeout_ms < 30000 ? rq->timeout_ms : 30000));
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt (curl, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt (curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt (curl, CURLOPT_XFERINFOFUNCTION, progress);
  curl_easy_setopt (curl, CURLOPT_XFERINFODATA, (void *) rq->cancel);
  curl_easy_setopt (curl, CURLOPT_ACCEPT_ENCODING, "");
  char cerr[CURL_ERROR_SIZE] = "";
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, cerr);
  CURLcode rc = curl_easy_perform (curl);
  long status = 0;
  if (rc == CURLE_OK)
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_OPERATION_TIMEDOUT)
    sbx_failk (err, SBX_E_UNAVAILABLE, "model provider: no answer within %u s", rq->timeout_ms / 1000);
  else if (rc == CURLE_ABORTED_BY_CALLBACK)
    sbx_failk (err, SBX_E_UNAVAILABLE, "model request cancelled");
  else if (b.too_big)
    sbx_failk (err, SBX_E_UNAVAILABLE, "model provider: answer larger than %u bytes", SBX_MODEL_REPLY_MAX);
  else if (rc != CURLE_OK)
    sbx_failk (err, SBX_E_UNAVAILABLE, "model provider: %s", cerr[0] ? cerr : curl_easy_strerror (rc));
  else if (status < 200 || status > 299)
    {
      char detail[ERROR_SHOWN_MAX + 64];
      error_detail (b.data, detail, sizeof detail);
      sbx_failk (err, SBX_E_UNAVAILABLE, "model provider answered HTTP %ld%s%s", status, detail[0] ? ": " : "",
                 detail);
    }
  else if ((*reply = json_loads (b.data ? b.data : "", 0, NULL)) == NULL || !json_is_object (*reply))
    {
      json_decref (*reply);
      *reply = NULL;
      sbx_failk (err, SBX_E_UNAVAILABLE, "model provider: the answer is not a JSON object");
    }
  else
    ret = 0;
out:
  free (b.data);
  curl_easy_cleanup (curl);
  sbx_outbound_close (&t);
  return ret;
}

static bool
tool_use_ok (json_t *id, json_t *name, json_t *input)
{
  return json_is_string (id) && json_string_length (id) > 0 && json_string_length (id) <= 256
         && json_is_string (name) && json_string_length (name) > 0 && json_string_length (name) <= 128
         && json_is_object (input);
}

/* ---- Anthropic's Messages API ---- */

static int
call_anthropic (const struct sbx_models *m, const struct sbx_model_request *rq, struct sbx_model_reply *out,
                struct sbx_err *err)
{
  const struct sbx_provider *p = &m->anthropic;
  char url[SBX_OUTBOUND_URL_MAX + 32], key[600];
  snprintf (url, sizeof url, "%s/v1/messages", p->base);
  json_t *body = json_pack ("{s:s, s:i, s:O}", "model", rq->model, "max_tokens", (json_int_t) rq->max_tokens,
                            "messages", rq->messages);
  if (body == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "cannot build the model request");
  if (rq->system && *rq->system)
    json_object_set_new (body, "system", json_string (rq->system));
  if (rq->tools && json_array_size (rq->tools))
    json_object_set (body, "tools", rq->tools);
  struct curl_slist *h = curl_slist_append (NULL, "Content-Type: application/json");
  h = curl_slist_append (h, "anthropic-version: " ANTHROPIC_VERSION);
  if (p->key[0])
    {
      snprintf (key, sizeof key, "x-api-key: %s", p->key);
      h = curl_slist_append (h, key);
    }
  json_t *reply;
  int r = post_json (m, rq, url, h, body, &reply, err);
  curl_slist_free_all (h);
  json_decref (body);
  if (r < 0)
    return -1;
  out->content = json_array ();
  json_t *content = json_object_get (reply, "content"), *blk;
  size_t i;
  json_array_foreach (content, i, blk)
  {
    const char *type = json_string_value (json_object_get (blk, "type"));
    if (type && strcmp (type, "text") == 0 && json_is_string (json_object_get (blk, "text")))
      json_array_append_new (out->content, json_pack ("{s:s, s:O}", "type", "text", "text",
                                                      json_object_get (blk, "text")));
    else if (type && strcmp (type, "tool_use") == 0)
      {
        json_t *id = json_object_get (blk, "id"), *name = json_object_get (blk, "name"),
               *input = json_object_get (blk, "input");
        if (tool_use_ok (id, name, input))
          json_array_append_new (out->content, json_pack ("{s:s, s:O, s:O, s:O}", "type", "tool_use", "id", id,
                                                          "name", name, "input", input));
      }
  }
  snprintf (out->stop_reason, sizeof out->stop_reason, "%s",
            json_string_value (json_object_get (reply, "stop_reason")) ?: "");
  json_t *usage = json_object_get (reply, "usage");
  out->input_tokens = json_integer_value (json_object_get (usage, "input_tokens"));
  out->output_tokens = json_integer_value (json_object_get (usage, "output_tokens"));
  json_decref (reply);
  return 0;
}

/* ---- OpenAI-compatible chat completions ---- */

/* A tool_result block's content as text: its text blocks, and a note for
   each image (a tool message carries text only). */
static json_t *
result_text (json_t *blk)
{
  json_t *c = json_object_get (blk, "content");
  if (json_is_string (c))
    return json_copy (c);
  size_t cap = 0, len = 0, i;
  char *s = NULL;
  json_t *part;
  json_array_foreach (c, i, part)
  {
    const char *type = json_string_value (json_object_get (part, "type"));
    char note[96];
    const char *t = NULL;
    if (type && strcmp (type, "text") == 0)
      t = json_string_value (json_object_get (part, "text"));
    else if (type && strcmp (type, "image") == 0)
      {
        snprintf (note, sizeof note, "[image %s]",
                  json_string_value (json_object_get (json_object_get (part, "source"), "media_type")) ?: "");
        t = note;
      }
    if (t == NULL)
      continue;
    size_t n = strlen (t);
    if (sbx_reserve (&s, &cap, len + n + 2, 256) < 0)
      break;
    if (len)
      s[len++] = '\n';
    memcpy (s + len, t, n);
    len += n;
    s[len] = '\0';
  }
  json_t *j = json_stringn (s ? s : "", len);
  free (s);
  return j;
}

/* Anthropic's messages as chat completion messages. */
static json_t *
openai_messages (const struct sbx_model_request *rq)
{
  json_t *out = json_array ();
  if (rq->system && *rq->system)
    json_array_append_new (out, json_pack ("{s:s, s:s}", "role", "system", "content", rq->system));
  size_t i, j;
  json_t *msg, *blk;
  json_array_foreach (rq->messages, i, msg)
  {
    const char *role = json_string_value (json_object_get (msg, "role"));
    json_t *content = json_object_get (msg, "content");
    if (role == NULL)
      continue;
    if (json_is_string (content))
      {
        json_array_append_new (out, json_pack ("{s:s, s:O}", "role", role, "content", content));
        continue;
      }
    if (strcmp (role, "assistant") == 0)
      {
        json_t *calls = json_array ();
        json_t *text = NULL;
        json_array_foreach (content, j, blk)
        {
          const char *type = json_string_value (json_object_get (blk, "type"));
          if (type && strcmp (type, "text") == 0 && text == NULL)
            text = json_copy (json_object_get (blk, "text"));
          else if (type && strcmp (type, "tool_use") == 0)
            {
              char *args = json_dumps (json_object_get (blk, "input"), JSON_COMPACT);
              json_array_append_new (calls, json_pack ("{s:O, s:s, s:{s:O, s:s}}", "id", json_object_get (blk, "id"),
                                                       "type", "function", "function", "name",
                                                       json_object_get (blk, "name"), "arguments", args ? args : "{}"));
              free (args);
            }
        }
        json_t *m = json_pack ("{s:s, s:o}", "role", "assistant", "content", text ? text : json_null ());
        if (json_array_size (calls))
          json_object_set (m, "tool_calls", calls);
        json_decref (calls);
        json_array_append_new (out, m);
        continue;
      }
    json_array_foreach (content, j, blk)
    {
      const char *type = json_string_value (json_object_get (blk, "type"));
      if (type && strcmp (type, "text") == 0)
        json_array_append_new (out, json_pack ("{s:s, s:O}", "role", "user", "content", json_object_get (blk, "text")));
      else if (type && strcmp (type, "tool_result") == 0)
        json_array_append_new (out, json_pack ("{s:s, s:O, s:o}", "role", "tool", "tool_call_id",
                                               json_object_get (blk, "tool_use_id"), "content", result_text (blk)));
    }
  }
  return out;
}

static int
call_openai (const struct sbx_models *m, const struct sbx_model_request *rq, struct sbx_model_reply *out,
             struct sbx_err *err)
{
  const struct sbx_provider *p = &m->openai;
  char url[SBX_OUTBOUND_URL_MAX + 32], key[600];
  snprintf (url, sizeof url, "%s/chat/completions", p->base);
  json_t *body = json_pack ("{s:s, s:i, s:o}", "model", rq->model, "max_tokens", (json_int_t) rq->max_tokens,
                            "messages", openai_messages (rq));
  if (body == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "cannot build the model request");
  if (rq->tools && json_array_size (rq->tools))
    {
      json_t *tools = json_array (), *t;
      size_t i;
      json_array_foreach (rq->tools, i, t)
      {
        json_array_append_new (tools, json_pack ("{s:s, s:{s:O, s:O, s:O}}", "type", "function", "function", "name",
                                                 json_object_get (t, "name"), "description",
                                                 json_object_get (t, "description"), "parameters",
                                                 json_object_get (t, "input_schema")));
      }
      json_object_set_new (body, "tools", tools);
    }
  struct curl_slist *h = curl_slist_append (NULL, "Content-Type: application/json");
  if (p->key[0])
    {
      snprintf (key, sizeof key, "Authorization: Bearer %s", p->key);
      h = curl_slist_append (h, key);
    }
  json_t *reply;
  int r = post_json (m, rq, url, h, body, &reply, err);
  curl_slist_free_all (h);
  json_decref (body);
  if (r < 0)
    return -1;
  json_t *choice = json_array_get (json_object_get (reply, "choices"), 0);
  json_t *msg = json_object_get (choice, "message");
  out->content = json_array ();
  json_t *text = json_object_get (msg, "content");
  if (json_is_string (text) && json_string_length (text))
    json_array_append_new (out->content, json_pack ("{s:s, s:O}", "type", "text", "text", text));
  json_t *call;
  size_t i;
  json_array_foreach (json_object_get (msg, "tool_calls"), i, call)
  {
    json_t *fn = json_object_get (call, "function");
    const char *args = json_string_value (json_object_get (fn, "arguments"));
    json_t *input = args ? json_loads (args, 0, NULL) : NULL;
    if (input == NULL || !json_is_object (input))
      {
        /* arguments that are not a JSON object: the tool is called with
           none and says what is missing */
        json_decref (input);
        input = json_object ();
      }
    json_t *id = json_object_get (call, "id"), *name = json_object_get (fn, "name");
    if (tool_use_ok (id, name, input))
      json_array_append_new (out->content, json_pack ("{s:s, s:O, s:O, s:O}", "type", "tool_use", "id", id, "name",
                                                      name, "input", input));
    json_decref (input);
  }
  const char *finish = json_string_value (json_object_get (choice, "finish_reason")) ?: "";
  snprintf (out->stop_reason, sizeof out->stop_reason, "%s",
            strcmp (finish, "tool_calls") == 0 ? "tool_use"
            : strcmp (finish, "length") == 0   ? "max_tokens"
            : strcmp (finish, "stop") == 0     ? "end_turn"
                                               : finish);
  json_t *usage = json_object_get (reply, "usage");
  out->input_tokens = json_integer_value (json_object_get (usage, "prompt_tokens"));
  out->output_tokens = json_integer_value (json_object_get (usage, "completion_tokens"));
  json_decref (reply);
  return 0;
}

int
sbx_model_call (const struct sbx_models *m, const struct sbx_model_request *rq, struct sbx_model_reply *out,
                struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  const char *p = sbx_models_provider (m, rq->model);
  if (p == NULL)
    return sbx_failk (err, SBX_E_INVALID, "no model provider serves \"%.128s\"", rq->model);
  int r = strcmp (p, "anthropic") == 0 ? call_anthropic (m, rq, out, err) : call_openai (m, rq, out, err);
  if (r == 0 && out->content == NULL)
    return sbx_failk (err, SBX_E_INTERNAL, "out of memory");
  if (out->input_tokens < 0)
    out->input_tokens = 0;
  if (out->output_tokens < 0)
    out->output_tokens = 0;
  return r;
}
