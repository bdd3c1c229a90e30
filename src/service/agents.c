/*
 * agents.c - seed 000's agents, sessions and the agent loop (agents.h).
 *
 * Records are in the store (store_agents.c).  What is only in memory is
 * which sessions have a loop running now (at most SBX_AGENT_LOOPS_MAX,
 * one per session), and a generation counter with a condition variable
 * that wakes the streams following sessions whenever an event is added or
 * a loop ends.
 *
 * The conversation a model gets is rebuilt from the session's events at
 * every turn (they are the one truth, restarts included), in Anthropic's
 * shapes (models.h): user messages and tool results are "user" blocks,
 * assistant text and tool calls "assistant" blocks, consecutive blocks of
 * one role merged into one message.  A tool call without a result (a
 * daemon that stopped while the tool ran) gets an error result there, so
 * the conversation stays one the providers accept.
 */
#include "agents.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "encode.h"
#include "mcp_client.h"
#include "models.h"
#include "outbound.h"
#include "tools.h"

#define DEFAULT_MAX_TURNS 25u
#define DEFAULT_TIMEOUT_S 600u
#define DEFAULT_MAX_TOKENS 1000000ll
#define DEFAULT_MODEL_TIMEOUT_S 120u
#define DEFAULT_MCP_TIMEOUT_S 60u
#define DEFAULT_REPLY_TOKENS 4096u
#define DEFAULT_SESSION_TIMEOUT_S 300u
#define DEFAULT_TEMPLATE "code_interpreter"

struct sbx_agents {
  struct sbx_service *svc;
  struct sbx_store *store;
  struct sbx_models models;
  struct sbx_outbound outbound; /* what the operator opened to tenants' URLs */
  uint32_t max_turns, timeout_s, model_timeout_s, mcp_timeout_s;
  int64_t max_tokens;
  volatile bool stopping;
  pthread_mutex_t lock;
  pthread_cond_t changed;      /* an event was added or a loop ended */
  uint64_t generation;
  char running[SBX_AGENT_LOOPS_MAX][SBX_STORE_ID_MAX]; /* sessions with a loop, "" free */
};

struct sbx_agent_run {
  struct sbx_agents *a;
  struct sbx_org org;
  struct sbx_session_rec s;
  json_t *agent;               /* the session's copy of the agent */
  json_t *tools;               /* offered to the model: [{name, description, input_schema}] */
  json_t *routes;              /* offered name: {server: index or -1 (built-in), tool: the server's name} */
  struct remote {
    const char *name;          /* in agent */
    struct sbx_mcp_client *client; /* NULL: not reached */
  } remote[SBX_AGENT_SERVERS_MAX];
  size_t n_remote, n_remote_tools;
  uint64_t deadline_ns;
  int64_t in_tokens, out_tokens, turns;
};

static uint32_t
env_u32 (const char *name, uint32_t def, uint32_t lo, uint32_t hi)
{
  const char *v = getenv (name);
  if (v == NULL || *v == '\0')
    return def;
  char *end;
  errno = 0;
  unsigned long long n = strtoull (v, &end, 10);
  if (errno || *end || n < lo || n > hi)
    {
      sbx_log_fields (SBX_LOG_WARN, "ignoring a setting out of range", "name", name, "value", v, NULL);
      return def;
    }
  return (uint32_t) n;
}

/* ---- the running set ---- */

static void
notify (struct sbx_agents *a)
{
  pthread_mutex_lock (&a->lock);
  a->generation++;
  pthread_cond_broadcast (&a->changed);
  pthread_mutex_unlock (&a->lock);
}

static int
running_find (struct sbx_agents *a, const char *id)
{
  for (unsigned i = 0; i < SBX_AGENT_LOOPS_MAX; i++)
    if (strcmp (a->running[i], id) == 0)
      return (int) i;
  return -1;
}

bool
sbx_session_running (struct sbx_agents *a, const char *id)
{
  pthread_mutex_lock (&a->lock);
  bool r = running_find (a, id) >= 0;
  pthread_mutex_unlock (&a->lock);
  return r;
}

/* Take a place for session ID's loop. */
static int
running_take (struct sbx_agents *a, const char *id, struct sbx_err *err)
{
  pthread_mutex_lock (&a->lock);
  int r = 0;
  if (running_find (a, id) >= 0)
    r = sbx_failk (err, SBX_E_CONFLICT, "the session is answering another message; wait for it to end");
  else if (a->stopping)
    r = sbx_failk (err, SBX_E_UNAVAILABLE, "the daemon is stopping");
  else
    {
      int slot = running_find (a, "");
      if (slot < 0)
        r = sbx_failk (err, SBX_E_UNAVAILABLE, "%u agent loops are running; retry later", SBX_AGENT_LOOPS_MAX);
      else
        snprintf (a->running[slot], sizeof a->running[slot], "%s", id);
    }
  pthread_mutex_unlock (&a->lock);
  return r;
}

static void
running_drop (struct sbx_agents *a, const char *id)
{
  pthread_mutex_lock (&a->lock);
  int slot = running_find (a, id);
  if (slot >= 0)
    a->running[slot][0] = '\0';
  a->generation++;
  pthread_cond_broadcast (&a->changed);
  pthread_mutex_unlock (&a->lock);
}

void
sbx_session_wait (struct sbx_agents *a, const char *id, int64_t after, uint32_t timeout_ms)
{
  int64_t last = 0;
  struct sbx_err err;
  if (sbx_store_session_last_seq (a->store, id, &last, &err) == 0 && last > after)
    return;
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L)
    {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
  pthread_mutex_lock (&a->lock);
  uint64_t gen = a->generation;
  while (gen == a->generation && running_find (a, id) >= 0)
    if (pthread_cond_timedwait (&a->changed, &a->lock, &ts) != 0)
      break;
  pthread_mutex_unlock (&a->lock);
}

/* ---- open and close ---- */

static void
add_event (struct sbx_agents *a, const char *session_id, const char *type, json_t *fields)
{
  if (fields == NULL)
    return;
  cleanup_free char *text = json_dumps (fields, JSON_COMPACT);
  json_decref (fields);
  struct sbx_session_event e;
  struct sbx_err err;
  if (text == NULL || sbx_store_session_event_add (a->store, session_id, type, text, &e, &err) < 0)
    sbx_log_fields (SBX_LOG_WARN, "cannot record a session event", "session", session_id, "type", type, "error",
                    text ? err.msg : "out of memory", NULL);
  notify (a);
}

int
sbx_agents_open (struct sbx_service *svc, const struct sbx_outbound *ob, struct sbx_agents **out,
                 struct sbx_err *err)
{
  struct sbx_agents *a = calloc (1, sizeof *a);
  if (a == NULL)
    return sbx_fail (err, ENOMEM, "agents");
  a->svc = svc;
  if (ob)
    a->outbound = *ob;
  a->store = sbx_service_store (svc);
  pthread_mutex_init (&a->lock, NULL);
  pthread_cond_init (&a->changed, NULL);
  sbx_models_from_env (&a->models);
  a->max_turns = env_u32 ("SBXD_AGENT_MAX_TURNS", DEFAULT_MAX_TURNS, 1, SBX_AGENT_TURNS_CAP);
  a->timeout_s = env_u32 ("SBXD_AGENT_TIMEOUT_S", DEFAULT_TIMEOUT_S, 1, 86400);
  a->model_timeout_s = env_u32 ("SBXD_MODEL_TIMEOUT_S", DEFAULT_MODEL_TIMEOUT_S, 1, 3600);
  a->mcp_timeout_s = env_u32 ("SBXD_MCP_TIMEOUT_S", DEFAULT_MCP_TIMEOUT_S, 1, 3600);
  a->max_tokens = env_u32 ("SBXD_AGENT_MAX_TOKENS", DEFAULT_MAX_TOKENS, 1, 100000000);

  /* loops a previous daemon left running */
  struct sbx_session_rec *v;
  size_t n;
  if (sbx_store_session_list (a->store, NULL, NULL, "running", &v, &n, err) < 0)
    {
      sbx_agents_close (a);
      return -1;
    }
  for (size_t i = 0; i < n; i++)
    {
      add_event (a, v[i].id, "failed",
                 json_pack ("{s:s}", "reason", "the daemon restarted while the agent was answering"));
      struct sbx_err e2;
      sbx_store_session_status (a->store, v[i].id, "idle", NULL, 0, &e2);
    }
  sbx_session_recs_free (v, n);
  *out = a;
  return 0;
}

void
sbx_agents_stop (struct sbx_agents *a)
{
  if (a)
    {
      a->stopping = true;
      notify (a);
    }
}

void
sbx_agents_close (struct sbx_agents *a)
{
  if (a == NULL)
    return;
  pthread_cond_destroy (&a->changed);
  pthread_mutex_destroy (&a->lock);
  free (a);
}

/* ---- agents ---- */

static bool
text_ok (const char *s, size_t max)
{
  return s && strnlen (s, max + 1) <= max;
}

static bool
server_name_ok (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n > SBX_AGENT_SERVER_NAME_MAX || strstr (s, "__") || s[n - 1] == '_')
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
      return false;
  return true;
}

static bool
server_name_taken (json_t *tools, const char *name)
{
  size_t i;
  json_t *t;
  json_array_foreach (tools, i, t)
  {
    if (strcmp (json_string_value (json_object_get (t, "name")) ?: "", name) == 0)
      return true;
  }
  return strcmp (name, SBX_AGENT_BUILTIN_SERVER) == 0;
}

/* Entry I of an agent's tools, T, checked: the agent's copy of it (a new
   reference), or NULL with ERR.  TOOLS: the entries checked before it. */
static json_t *
tool_check (struct sbx_agents *a, json_t *t, size_t i, json_t *tools, size_t *n_remote, struct sbx_err *err)
{
  const char *type = json_string_value (json_object_get (t, "type"));
  const char *server = json_string_value (json_object_get (t, "server"));
  json_t *url = json_object_get (t, "url");
  if (!json_is_object (t) || type == NULL || strcmp (type, "mcp") != 0)
    {
      sbx_failk (err, SBX_E_INVALID,
                 "tools[%zu]: only {\"type\": \"mcp\", \"server\": \"%s\"} and {\"type\": \"mcp\", \"url\": URL} are known",
                 i, SBX_AGENT_BUILTIN_SERVER);
      return NULL;
    }
  if (url == NULL)
    {
      if (server == NULL || strcmp (server, SBX_AGENT_BUILTIN_SERVER) != 0 || json_object_get (t, "server_url"))
        {
          sbx_failk (err, SBX_E_INVALID,
                     "tools[%zu]: \"server\" names the built-in %s server; other MCP servers are given by \"url\"", i,
                     SBX_AGENT_BUILTIN_SERVER);
          return NULL;
        }
      return json_pack ("{s:s, s:s}", "type", "mcp", "server", SBX_AGENT_BUILTIN_SERVER);
    }
  if (server)
    {
      sbx_failk (err, SBX_E_INVALID, "tools[%zu]: give \"server\" (the built-in one) or \"url\", not both", i);
      return NULL;
    }
  if (++*n_remote > SBX_AGENT_SERVERS_MAX)
    {
      sbx_failk (err, SBX_E_INVALID, "an agent has at most %u remote MCP servers", SBX_AGENT_SERVERS_MAX);
      return NULL;
    }
  if (!json_is_string (url))
    {
      sbx_failk (err, SBX_E_INVALID, "tools[%zu].url must be an http or https URL", i);
      return NULL;
    }
  /* as webhooks' URLs: a literal address the platform denies, or a
     loopback name, is refused now; names are resolved and checked at
     each request */
  struct sbx_outbound_target target;
  int r = sbx_outbound_parse (&a->outbound, json_string_value (url), &target, err);
  char host[sizeof target.host];
  snprintf (host, sizeof host, "%s", target.host);
  sbx_outbound_target_free (&target);
  if (r < 0)
    {
      sbx_err_wrap (err, "tools[%zu].url", i);
      err->kind = SBX_E_INVALID;
      return NULL;
    }
  json_t *jname = json_object_get (t, "name");
  char name[SBX_AGENT_SERVER_NAME_MAX + 1];
  if (jname && !json_is_null (jname))
    {
      if (!json_is_string (jname) || !server_name_ok (json_string_value (jname)))
        {
          sbx_failk (err, SBX_E_INVALID,
                     "tools[%zu].name: 1 to %u letters, digits, '-' and '_' (no \"__\", not ending with '_')", i,
                     SBX_AGENT_SERVER_NAME_MAX);
          return NULL;
        }
      snprintf (name, sizeof name, "%s", json_string_value (jname));
    }
  else
    {
      /* the host, as a name: "mcp.example.com" gives "mcp-example-com" */
      size_t n = 0;
      for (const char *p = host; *p && n < SBX_AGENT_SERVER_NAME_MAX; p++)
        {
          bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
          if (ok || (n && name[n - 1] != '-'))
            name[n++] = ok ? *p : '-';
        }
      while (n && name[n - 1] == '-')
        n--;
      name[n] = '\0';
      if (n == 0)
        snprintf (name, sizeof name, "mcp%zu", i);
    }
  if (server_name_taken (tools, name))
    {
      sbx_failk (err, SBX_E_INVALID, "tools[%zu]: another tool is named \"%s\" (give each server a \"name\")", i, name);
      return NULL;
    }
  json_t *headers = json_object_get (t, "headers");
  if (sbx_mcp_headers_check (headers, err) < 0)
    {
      sbx_err_wrap (err, "tools[%zu].headers", i);
      return NULL;
    }
  json_t *out = json_pack ("{s:s, s:O, s:s}", "type", "mcp", "url", url, "name", name);
  if (out && json_object_size (headers))
    json_object_set (out, "headers", headers);
  if (out == NULL)
    sbx_failk (err, SBX_E_INVALID, "tools[%zu].url must be UTF-8 text", i);
  return out;
}

int
sbx_agent_create (struct sbx_agents *a, const struct sbx_org *org, const struct sbx_agent_def *def,
                  struct sbx_agent_doc *d, struct sbx_err *err)
{
  memset (d, 0, sizeof *d);
  if (def->name == NULL || *def->name == '\0' || !text_ok (def->name, 256))
    return sbx_failk (err, SBX_E_INVALID, "name is required (at most 256 bytes)");
  if (def->model == NULL || *def->model == '\0' || !text_ok (def->model, SBX_MODEL_NAME_MAX))
    return sbx_failk (err, SBX_E_INVALID, "model.name is required (at most %d bytes)", SBX_MODEL_NAME_MAX);
  if (sbx_models_provider (&a->models, def->model) == NULL)
    return sbx_failk (err, SBX_E_INVALID,
                      "no model provider serves \"%s\" (the operator configures them: claude models through "
                      "ANTHROPIC_API_KEY, others through OPENAI_API_KEY or OPENAI_BASE_URL)",
                      def->model);
  if (def->system && !text_ok (def->system, SBX_AGENT_TEXT_MAX))
    return sbx_failk (err, SBX_E_INVALID, "system is longer than %u bytes", SBX_AGENT_TEXT_MAX);
  if (def->max_turns > SBX_AGENT_TURNS_CAP)
    return sbx_failk (err, SBX_E_INVALID, "max_turns must be 1 to %u", SBX_AGENT_TURNS_CAP);
  if (def->max_tokens > SBX_AGENT_REPLY_TOKENS_MAX)
    return sbx_failk (err, SBX_E_INVALID, "model.max_tokens must be 1 to %u", SBX_AGENT_REPLY_TOKENS_MAX);
  json_t *tools = json_array ();
  size_t i;
  json_t *t;
  if (def->tools && json_array_size (def->tools) > SBX_AGENT_TOOLS_MAX)
    {
      json_decref (tools);
      return sbx_failk (err, SBX_E_INVALID, "an agent has at most %u tools", SBX_AGENT_TOOLS_MAX);
    }
  size_t n_remote = 0;
  json_array_foreach (def->tools, i, t)
  {
    json_t *tool = tool_check (a, t, i, tools, &n_remote, err);
    if (tool == NULL)
      {
        json_decref (tools);
        return -1;
      }
    json_array_append_new (tools, tool);
  }
  json_t *doc = json_pack ("{s:s, s:{s:s, s:i}, s:s?, s:o, s:i}", "name", def->name, "model", "name", def->model,
                           "max_tokens", (json_int_t) (def->max_tokens ? def->max_tokens : DEFAULT_REPLY_TOKENS),
                           "system", def->system, "tools", tools, "max_turns",
                           (json_int_t) (def->max_turns ? def->max_turns : a->max_turns));
  if (doc == NULL)
    return sbx_failk (err, SBX_E_INVALID, "name, model and system must be UTF-8 text");
  d->json = json_dumps (doc, JSON_COMPACT);
  json_decref (doc);
  if (d->json == NULL)
    return sbx_fail (err, ENOMEM, "agent");
  d->created_ms = sbx_wall_ms ();
  if (sbx_store_agent_put (a->store, org->id, d, err) < 0)
    {
      free (d->json);
      d->json = NULL;
      return -1;
    }
  return 0;
}

/* ---- sessions ---- */

/* Bring session S up to date with its sandbox: ended when the sandbox
   has. */
static void
session_refresh (struct sbx_agents *a, const struct sbx_org *org, struct sbx_session_rec *s)
{
  if (strcmp (s->status, "ended") == 0)
    return;
  struct sbx_sandbox_rec rec;
  struct sbx_err err;
  char reason[sizeof s->end_reason] = "";
  int64_t at = sbx_wall_ms ();
  if (sbx_service_sandbox_get (a->svc, org, s->sandbox_id, &rec, &err) < 0)
    {
      if (sbx_err_kind (&err) != SBX_E_NOT_FOUND)
        return;
      snprintf (reason, sizeof reason, "sandbox gone");
    }
  else
    {
      if (strcmp (rec.status, "stopped") == 0 || strcmp (rec.status, "error") == 0)
        {
          snprintf (reason, sizeof reason, "%s", rec.stop_reason[0] ? rec.stop_reason : "stopped");
          if (rec.stopped_ms > 0)
            at = rec.stopped_ms;
        }
      sbx_sandbox_rec_free (&rec);
    }
  if (reason[0] && sbx_store_session_status (a->store, s->id, "ended", reason, at, &err) == 0)
    {
      snprintf (s->end_reason, sizeof s->end_reason, "%s", reason);
      snprintf (s->status, sizeof s->status, "ended");
      s->ended_ms = at;
      notify (a);
    }
}

int
sbx_session_create (struct sbx_agents *a, const struct sbx_org *org, const char *agent_id, const char *tmpl,
                    uint32_t timeout_s, struct sbx_session_rec *out, struct sbx_err *err)
{
  memset (out, 0, sizeof *out);
  struct sbx_agent_doc d;
  if (agent_id == NULL || *agent_id == '\0')
    return sbx_failk (err, SBX_E_INVALID, "agent_id is required");
  if (sbx_store_agent_get (a->store, org->id, agent_id, &d, err) < 0)
    {
      if (sbx_err_kind (err) == SBX_E_NOT_FOUND)
        err->kind = SBX_E_INVALID; /* a body naming an unknown agent */
      return -1;
    }
  if (tmpl == NULL || *tmpl == '\0')
    tmpl = DEFAULT_TEMPLATE;
  if (timeout_s == 0)
    timeout_s = DEFAULT_SESSION_TIMEOUT_S;
  if (sbx_store_session_new_id (out->id, sizeof out->id, err) < 0)
    {
      free (d.json);
      return -1;
    }
  char meta[160];
  snprintf (meta, sizeof meta, "{\"session_id\":\"%s\",\"agent_id\":\"%s\"}", out->id, d.id);
  struct sbx_sandbox_spec spec = { .template_name = tmpl, .timeout_s = timeout_s, .metadata_json = meta };
  struct sbx_sandbox_rec rec;
  if (sbx_service_sandbox_create (a->svc, org, &spec, &rec, err) < 0)
    {
      free (d.json);
      return -1;
    }
  snprintf (out->org_id, sizeof out->org_id, "%s", org->id);
  snprintf (out->agent_id, sizeof out->agent_id, "%s", d.id);
  snprintf (out->sandbox_id, sizeof out->sandbox_id, "%s", rec.id);
  snprintf (out->template_id, sizeof out->template_id, "%s", tmpl);
  snprintf (out->status, sizeof out->status, "idle");
  out->timeout_s = timeout_s;
  out->created_ms = sbx_wall_ms ();
  out->agent_json = d.json;
  sbx_sandbox_rec_free (&rec);
  if (sbx_store_session_put (a->store, out, err) < 0)
    {
      struct sbx_err e2;
      sbx_service_sandbox_kill (a->svc, org, out->sandbox_id, &e2);
      sbx_session_rec_free (out);
      return -1;
    }
  return 0;
}

int
sbx_session_get (struct sbx_agents *a, const struct sbx_org *org, const char *id, struct sbx_session_rec *out,
                 struct sbx_err *err)
{
  if (sbx_store_session_get (a->store, org->id, id, out, err) < 0)
    return -1;
  session_refresh (a, org, out);
  return 0;
}

int
sbx_session_list (struct sbx_agents *a, const struct sbx_org *org, struct sbx_session_rec **v, size_t *n,
                  struct sbx_err *err)
{
  if (sbx_store_session_list (a->store, org->id, NULL, NULL, v, n, err) < 0)
    return -1;
  for (size_t i = 0; i < *n; i++)
    session_refresh (a, org, &(*v)[i]);
  return 0;
}

int
sbx_session_delete (struct sbx_agents *a, const struct sbx_org *org, const char *id, struct sbx_err *err)
{
  struct sbx_session_rec s;
  if (sbx_session_get (a, org, id, &s, err) < 0)
    return -1;
  if (strcmp (s.status, "ended") != 0)
    {
      struct sbx_err e2;
      if (sbx_service_sandbox_kill (a->svc, org, s.sandbox_id, &e2) < 0 && sbx_err_kind (&e2) != SBX_E_STOPPED
          && sbx_err_kind (&e2) != SBX_E_NOT_FOUND)
        {
          *err = e2;
          sbx_session_rec_free (&s);
          return -1;
        }
      sbx_store_session_status (a->store, s.id, "ended", "deleted", sbx_wall_ms (), &e2);
      notify (a);
    }
  sbx_session_rec_free (&s);
  return 0;
}

/* ---- events ---- */

json_t *
sbx_session_event_json (const struct sbx_session_event *e)
{
  json_t *j = json_loads (e->json, 0, NULL);
  if (j == NULL || !json_is_object (j))
    {
      json_decref (j);
      j = json_object ();
    }
  char ts[40];
  sbx_rfc3339 (e->created_ms, ts, sizeof ts);
  json_object_set_new (j, "id", json_string (e->id));
  json_object_set_new (j, "seq", json_integer (e->seq));
  json_object_set_new (j, "type", json_string (e->type));
  json_object_set_new (j, "created_at", json_string (ts));
  return j;
}

/* ---- the conversation ---- */

struct convo {
  json_t *messages;
  json_t *pending;             /* ids of tool calls without a result yet */
  size_t bytes;
};

static void
convo_add (struct convo *c, const char *role, json_t *block)
{
  /* tool calls left without a result get one before anything else */
  if (json_array_size (c->pending) && !(strcmp (role, "user") == 0
                                        && strcmp (json_string_value (json_object_get (block, "type")) ?: "",
                                                   "tool_result") == 0))
    {
      json_t *ids = c->pending;
      c->pending = json_array ();
      size_t i;
      json_t *id;
      json_array_foreach (ids, i, id)
      {
        convo_add (c, "user",
                   json_pack ("{s:s, s:O, s:s, s:b}", "type", "tool_result", "tool_use_id", id, "content",
                              "the tool did not run to its end (the daemon stopped)", "is_error", 1));
      }
      json_decref (ids);
    }
  size_t n = json_array_size (c->messages);
  json_t *last = n ? json_array_get (c->messages, n - 1) : NULL;
  if (last && strcmp (json_string_value (json_object_get (last, "role")), role) == 0)
    json_array_append_new (json_object_get (last, "content"), block);
  else
    json_array_append_new (c->messages, json_pack ("{s:s, s:[o]}", "role", role, "content", block));
}

static void
convo_remove_pending (struct convo *c, const char *id)
{
  size_t i;
  json_t *v;
  json_array_foreach (c->pending, i, v)
  {
    if (strcmp (json_string_value (v), id) == 0)
      {
        json_array_remove (c->pending, i);
        return;
      }
  }
}

/* What the model is shown of a tool result event E. */
static json_t *
result_blocks (json_t *e)
{
  json_t *content = json_array ();
  const char *text = json_string_value (json_object_get (e, "text"));
  if (text && *text)
    json_array_append_new (content, json_pack ("{s:s, s:s}", "type", "text", "text", text));
  else
    json_array_append_new (content, json_pack ("{s:s, s:s}", "type", "text", "text", "(no output)"));
  size_t i;
  json_t *img;
  json_array_foreach (json_object_get (e, "images"), i, img)
  {
    json_array_append_new (content, json_pack ("{s:s, s:{s:s, s:O, s:O}}", "type", "image", "source", "type", "base64",
                                               "media_type", json_object_get (img, "media_type"), "data",
                                               json_object_get (img, "data")));
  }
  return content;
}

/* The session's conversation from its events. */
static int
convo_build (struct sbx_agents *a, const char *session_id, struct convo *c, struct sbx_err *err)
{
  c->messages = json_array ();
  c->pending = json_array ();
  c->bytes = 0;
  int64_t after = 0;
  for (;;)
    {
      struct sbx_session_event *v;
      size_t n;
      if (sbx_store_session_events (a->store, session_id, after, 500, &v, &n, err) < 0)
        return -1;
      for (size_t i = 0; i < n; i++)
        {
          after = v[i].seq;
          c->bytes += strlen (v[i].json);
          json_t *e = json_loads (v[i].json, 0, NULL);
          if (e == NULL)
            continue;
          const char *type = v[i].type;
          if (strcmp (type, "message") == 0)
            {
              const char *role = json_string_value (json_object_get (e, "role"));
              json_t *content = json_object_get (e, "content");
              if (role && json_is_string (content) && json_string_length (content) > 0
                  && (strcmp (role, "user") == 0 || strcmp (role, "assistant") == 0))
                convo_add (c, role, json_pack ("{s:s, s:O}", "type", "text", "text", content));
            }
          else if (strcmp (type, "tool_call") == 0)
            {
              json_t *id = json_object_get (e, "tool_call_id");
              if (json_is_string (id))
                {
                  convo_add (c, "assistant",
                             json_pack ("{s:s, s:O, s:O, s:O}", "type", "tool_use", "id", id, "name",
                                        json_object_get (e, "name"), "input", json_object_get (e, "input")));
                  json_array_append (c->pending, id);
                }
            }
          else if (strcmp (type, "tool_result") == 0)
            {
              const char *id = json_string_value (json_object_get (e, "tool_call_id"));
              if (id)
                {
                  convo_add (c, "user",
                             json_pack ("{s:s, s:s, s:o, s:b}", "type", "tool_result", "tool_use_id", id, "content",
                                        result_blocks (e), "is_error", json_is_true (json_object_get (e, "is_error"))));
                  convo_remove_pending (c, id);
                }
            }
          json_decref (e);
        }
      sbx_session_events_free (v, n);
      if (c->bytes > SBX_AGENT_CONTEXT_MAX)
        return sbx_failk (err, SBX_E_TOO_LARGE, "the conversation is larger than %u MB",
                          SBX_AGENT_CONTEXT_MAX >> 20);
      if (n < 500)
        break;
    }
  if (json_array_size (c->pending))
    convo_add (c, "user", json_pack ("{s:s, s:s}", "type", "text", "text", "(continue)"));
  return 0;
}

static void
convo_free (struct convo *c)
{
  json_decref (c->messages);
  json_decref (c->pending);
}

/* ---- tools ---- */

/* S cut to at most MAX bytes on a UTF-8 character boundary. */
static json_t *
cut_text (const char *s, size_t len, size_t max, bool *cut)
{
  *cut = len > max;
  if (*cut)
    {
      len = max;
      while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
        len--;
    }
  return json_stringn (s, len);
}

static bool
uses_builtin (json_t *agent)
{
  size_t i;
  json_t *t;
  json_array_foreach (json_object_get (agent, "tools"), i, t)
  {
    if (strcmp (json_string_value (json_object_get (t, "server")) ?: "", SBX_AGENT_BUILTIN_SERVER) == 0)
      return true;
  }
  return false;
}

/* The built-in tools the model is offered (when the agent names the
   built-in server): those bound to the session's sandbox (not
   create_sandbox and kill_sandbox), without a sandbox_id argument.  Each
   gets a route in ROUTES. */
static json_t *
offered_tools (json_t *agent, json_t *routes)
{
  json_t *out = json_array ();
  if (!uses_builtin (agent))
    return out;
  json_t *list = sbx_tools_list (), *t;
  size_t i;
  json_array_foreach (list, i, t)
  {
    const char *name = json_string_value (json_object_get (t, "name"));
    if (name == NULL || strcmp (name, "create_sandbox") == 0 || strcmp (name, "kill_sandbox") == 0)
      continue;
    json_t *schema = json_deep_copy (json_object_get (t, "inputSchema"));
    if (!json_is_object (schema))
      {
        json_decref (schema);
        schema = json_pack ("{s:s}", "type", "object");
      }
    json_object_del (json_object_get (schema, "properties"), "sandbox_id");
    json_t *req = json_object_get (schema, "required");
    size_t j;
    json_t *r;
    json_array_foreach (req, j, r)
    {
      if (strcmp (json_string_value (r) ?: "", "sandbox_id") == 0)
        {
          json_array_remove (req, j);
          break;
        }
    }
    const char *desc = json_string_value (json_object_get (t, "description"));
    json_array_append_new (out, json_pack ("{s:s, s:s, s:o}", "name", name, "description", desc ? desc : name,
                                           "input_schema", schema));
    json_object_set_new (routes, name, json_pack ("{s:i}", "server", -1));
  }
  json_decref (list);
  return out;
}

/* The name the model is offered for tool TOOL of server SERVER
   ("SERVER__TOOL", within the 64 bytes providers take, characters
   outside [A-Za-z0-9_-] as '_'), or false when it does not fit. */
static bool
remote_tool_name (const char *server, const char *tool, char *out, size_t n)
{
  size_t sl = strlen (server), tl = strlen (tool);
  if (tl == 0 || sl + 2 + tl > 64 || sl + 2 + tl >= n)
    return false;
  memcpy (out, server, sl);
  memcpy (out + sl, "__", 2);
  for (size_t i = 0; i < tl; i++)
    {
      char ch = tool[i];
      bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-';
      out[sl + 2 + i] = ok ? ch : '_';
    }
  out[sl + 2 + tl] = '\0';
  return true;
}

/* Offer the tools LIST of remote server IDX: within the bounds, each
   with an object schema of at most SBX_AGENT_SCHEMA_MAX bytes; the others
   are counted in *SKIPPED. */
static void
offer_remote (struct sbx_agent_run *r, size_t idx, json_t *list, size_t *skipped)
{
  size_t i;
  json_t *t;
  json_array_foreach (list, i, t)
  {
    const char *tool = json_string_value (json_object_get (t, "name"));
    json_t *schema = json_object_get (t, "inputSchema");
    char name[80];
    cleanup_free char *stext = json_is_object (schema) ? json_dumps (schema, JSON_COMPACT) : NULL;
    if (tool == NULL || strlen (tool) > 128 || stext == NULL || strlen (stext) > SBX_AGENT_SCHEMA_MAX
        || strcmp (json_string_value (json_object_get (schema, "type")) ?: "", "object") != 0
        || !remote_tool_name (r->remote[idx].name, tool, name, sizeof name) || json_object_get (r->routes, name)
        || r->n_remote_tools >= SBX_AGENT_REMOTE_TOOLS_MAX)
      {
        ++*skipped;
        continue;
      }
    r->n_remote_tools++;
    const char *desc = json_string_value (json_object_get (t, "description"));
    bool cut;
    json_t *jdesc = desc ? cut_text (desc, strlen (desc), SBX_AGENT_DESCRIPTION_MAX, &cut) : json_string (tool);
    json_array_append_new (r->tools, json_pack ("{s:s, s:o, s:O}", "name", name, "description", jdesc,
                                                "input_schema", schema));
    json_object_set_new (r->routes, name, json_pack ("{s:I, s:s}", "server", (json_int_t) idx, "tool", tool));
  }
}

/* Timeout of one request to a remote server: the operator's, within what
   is left of the message's time. */
static uint32_t
remote_timeout_ms (struct sbx_agent_run *r)
{
  uint64_t now = sbx_now_ns ();
  uint64_t left_ms = r->deadline_ns > now ? (r->deadline_ns - now) / 1000000ull : 1;
  uint64_t ms = (uint64_t) r->a->mcp_timeout_s * 1000u;
  return (uint32_t) (left_ms < ms ? (left_ms ? left_ms : 1) : ms);
}

/* Open an MCP session with each of the agent's remote servers and offer
   their tools; a server not reached gives an "mcp_server_error" event. */
static void
remote_open (struct sbx_agent_run *r)
{
  size_t i;
  json_t *t;
  json_array_foreach (json_object_get (r->agent, "tools"), i, t)
  {
    const char *url = json_string_value (json_object_get (t, "url"));
    const char *name = json_string_value (json_object_get (t, "name"));
    if (url == NULL || name == NULL || r->n_remote >= SBX_AGENT_SERVERS_MAX)
      continue;
    size_t idx = r->n_remote++;
    r->remote[idx].name = name;
    struct sbx_err err;
    json_t *list = NULL;
    size_t skipped = 0;
    if (sbx_mcp_connect (&r->a->outbound, url, json_object_get (t, "headers"), remote_timeout_ms (r),
                         &r->a->stopping, &r->remote[idx].client, &err) < 0
        || sbx_mcp_list_tools (r->remote[idx].client, &list, &err) < 0)
      {
        add_event (r->a, r->s.id, "mcp_server_error",
                   json_pack ("{s:s, s:s}", "server", name, "reason", err.msg));
        sbx_mcp_close (r->remote[idx].client);
        r->remote[idx].client = NULL;
        continue;
      }
    offer_remote (r, idx, list, &skipped);
    if (skipped)
      {
        char n[24];
        snprintf (n, sizeof n, "%zu", skipped);
        sbx_log_fields (SBX_LOG_INFO, "remote MCP tools not offered (names, schemas or the bound)", "session", r->s.id,
                        "server", name, "tools", n, NULL);
      }
    json_decref (list);
  }
}

static void
remote_close (struct sbx_agent_run *r)
{
  for (size_t i = 0; i < r->n_remote; i++)
    sbx_mcp_close (r->remote[i].client);
  r->n_remote = 0;
}

/* The server (its name for events) of offered tool NAME; NULL when it is
   not offered.  *IDX: the remote server's index, or -1 for the built-in
   tools; *TOOL the server's own name of it. */
static const char *
tool_route (struct sbx_agent_run *r, const char *name, int *idx, const char **tool)
{
  json_t *route = name ? json_object_get (r->routes, name) : NULL;
  if (route == NULL)
    return NULL;
  json_int_t i = json_integer_value (json_object_get (route, "server"));
  *idx = (int) i;
  *tool = json_string_value (json_object_get (route, "tool")) ?: name;
  if (i < 0 || (size_t) i >= r->n_remote)
    {
      *idx = -1;
      return SBX_AGENT_BUILTIN_SERVER;
    }
  return r->remote[i].name;
}

/* A tool result event's fields from an MCP CallToolResult RES. */
static json_t *
result_event (const char *call_id, const char *name, const char *server, json_t *res)
{
  json_t *e = json_pack ("{s:s, s:s, s:s, s:b}", "tool_call_id", call_id, "name", name, "server", server, "is_error",
                         json_is_true (json_object_get (res, "isError")));
  /* the text parts together, and the images */
  size_t cap = 0, len = 0, i;
  char *text = NULL;
  json_t *images = json_array (), *part;
  json_array_foreach (json_object_get (res, "content"), i, part)
  {
    const char *type = json_string_value (json_object_get (part, "type"));
    if (type && strcmp (type, "text") == 0 && json_is_string (json_object_get (part, "text")))
      {
        json_t *t = json_object_get (part, "text");
        size_t n = json_string_length (t);
        if (len + n + 1 > SBX_AGENT_RESULT_TEXT_MAX + 1 || sbx_reserve (&text, &cap, len + n + 2, 256) < 0)
          n = 0;
        if (n)
          {
            if (len)
              text[len++] = '\n';
            memcpy (text + len, json_string_value (t), n);
            len += n;
            text[len] = '\0';
          }
      }
    else if (type && strcmp (type, "image") == 0 && json_array_size (images) < SBX_AGENT_IMAGES_MAX)
      {
        json_t *data = json_object_get (part, "data");
        const char *mime = json_string_value (json_object_get (part, "mimeType"));
        if (json_is_string (data) && json_string_length (data) <= SBX_AGENT_IMAGE_MAX && mime
            && strncmp (mime, "image/", 6) == 0 && strlen (mime) < 64)
          json_array_append_new (images, json_pack ("{s:s, s:O}", "media_type", mime, "data", data));
      }
  }
  bool cut;
  json_object_set_new (e, "text", cut_text (text ? text : "", len, SBX_AGENT_RESULT_TEXT_MAX, &cut));
  free (text);
  json_object_set_new (e, "images", images);
  /* a command's or code's outcome, as the tool gives it */
  json_t *sc = json_object_get (res, "structuredContent");
  json_t *out = json_object_get (sc, "stdout"), *errs = json_object_get (sc, "stderr");
  json_t *code = json_object_get (sc, "exit_code");
  if (code == NULL)
    code = json_object_get (sc, "exitCode");
  bool c1 = false, c2 = false;
  json_object_set_new (e, "stdout",
                       json_is_string (out) ? cut_text (json_string_value (out), json_string_length (out),
                                                        SBX_AGENT_RESULT_TEXT_MAX, &c1)
                                            : json_null ());
  json_object_set_new (e, "stderr",
                       json_is_string (errs) ? cut_text (json_string_value (errs), json_string_length (errs),
                                                         SBX_AGENT_RESULT_TEXT_MAX, &c2)
                                             : json_null ());
  json_object_set_new (e, "exit_code", json_is_integer (code) ? json_copy (code) : json_null ());
  if (cut || c1 || c2)
    json_object_set_new (e, "truncated", json_true ());
  return e;
}

static json_t *
error_result_event (const char *call_id, const char *name, const char *server, const char *msg)
{
  return json_pack ("{s:s, s:s, s:s, s:b, s:s, s:[], s:n, s:n, s:n}", "tool_call_id", call_id, "name", name, "server",
                    server, "is_error", 1, "text", msg, "images", "stdout", "stderr", "exit_code");
}

/* ---- the loop ---- */

int
sbx_session_message (struct sbx_agents *a, const struct sbx_org *org, const char *id, const char *content,
                     struct sbx_agent_run **run, int64_t *before, struct sbx_err *err)
{
  *run = NULL;
  if (content == NULL || *content == '\0')
    return sbx_failk (err, SBX_E_INVALID, "content is required");
  if (!text_ok (content, SBX_AGENT_TEXT_MAX))
    return sbx_failk (err, SBX_E_TOO_LARGE, "content is longer than %u bytes", SBX_AGENT_TEXT_MAX);
  struct sbx_agent_run *r = calloc (1, sizeof *r);
  if (r == NULL)
    return sbx_fail (err, ENOMEM, "agent loop");
  if (sbx_session_get (a, org, id, &r->s, err) < 0)
    {
      free (r);
      return -1;
    }
  if (strcmp (r->s.status, "ended") == 0)
    {
      sbx_failk (err, SBX_E_STOPPED, "the session has ended (its sandbox: %s)", r->s.end_reason);
      goto fail;
    }
  if ((r->agent = json_loads (r->s.agent_json, 0, NULL)) == NULL)
    {
      sbx_failk (err, SBX_E_INTERNAL, "the session's agent cannot be read");
      goto fail;
    }
  if (running_take (a, id, err) < 0)
    goto fail;
  if (sbx_store_session_last_seq (a->store, id, before, err) < 0
      || sbx_store_session_status (a->store, id, "running", NULL, 0, err) < 0)
    {
      running_drop (a, id);
      goto fail;
    }
  /* the user's message, or no loop: a session at its events' bound
     takes no more */
  json_t *msg = json_pack ("{s:s, s:s}", "role", "user", "content", content);
  char *text = msg ? json_dumps (msg, JSON_COMPACT) : NULL;
  json_decref (msg);
  struct sbx_session_event e;
  int added = text ? sbx_store_session_event_add (a->store, id, "message", text, &e, err)
                   : sbx_failk (err, SBX_E_INVALID, "content must be UTF-8 text");
  free (text);
  if (added < 0)
    {
      struct sbx_err e2;
      sbx_store_session_status (a->store, id, "idle", NULL, 0, &e2);
      running_drop (a, id);
      goto fail;
    }
  notify (a);
  r->a = a;
  r->org = *org;
  r->routes = json_object ();
  r->tools = offered_tools (r->agent, r->routes);
  r->deadline_ns = sbx_now_ns () + (uint64_t) a->timeout_s * 1000000000ull;
  *run = r;
  return 0;
fail:
  json_decref (r->agent);
  sbx_session_rec_free (&r->s);
  free (r);
  return -1;
}

static const char *
run_cancelled (struct sbx_agent_run *r)
{
  if (r->a->stopping)
    return "the daemon is stopping";
  struct sbx_session_rec s;
  struct sbx_err err;
  if (sbx_store_session_get (r->a->store, r->org.id, r->s.id, &s, &err) == 0)
    {
      bool ended = strcmp (s.status, "ended") == 0;
      sbx_session_rec_free (&s);
      if (ended)
        return "the session has ended";
    }
  return NULL;
}

/* Run the tool calls of model reply CONTENT. */
static void
run_tools (struct sbx_agent_run *r, json_t *content)
{
  size_t i, calls = 0;
  json_t *blk;
  json_array_foreach (content, i, blk)
  {
    if (strcmp (json_string_value (json_object_get (blk, "type")), "tool_use") != 0)
      continue;
    const char *call_id = json_string_value (json_object_get (blk, "id"));
    const char *name = json_string_value (json_object_get (blk, "name"));
    json_t *input = json_object_get (blk, "input");
    json_t *ev;
    int idx = -1;
    const char *tool = name;
    const char *server = tool_route (r, name, &idx, &tool);
    if (++calls > SBX_AGENT_CALLS_MAX)
      ev = error_result_event (call_id, name, server ?: SBX_AGENT_BUILTIN_SERVER,
                               "too many tool calls in one turn; this one was not run");
    else if (server == NULL)
      {
        char msg[200];
        snprintf (msg, sizeof msg, "unknown tool: %.128s", name);
        ev = error_result_event (call_id, name, SBX_AGENT_BUILTIN_SERVER, msg);
      }
    else if (sbx_now_ns () >= r->deadline_ns)
      ev = error_result_event (call_id, name, server, "not run: the message's time limit was reached");
    else
      {
        json_t *res = NULL;
        struct sbx_err err;
        int rc = idx < 0 ? sbx_tool_call (r->a->svc, &r->org, r->s.sandbox_id, name, input, &res, &err)
                         : sbx_mcp_call_tool (r->remote[idx].client, tool, input, remote_timeout_ms (r), &res, &err);
        if (rc < 0 && idx >= 0)
          {
            /* the remote server's failure is the tool's, for the model */
            char msg[SBX_ERR_MSG_MAX + 64];
            snprintf (msg, sizeof msg, "MCP server %s: %s", server, err.msg);
            ev = error_result_event (call_id, name, server, msg);
          }
        else if (rc < 0)
          ev = error_result_event (call_id, name, server, err.msg);
        else
          ev = result_event (call_id, name, server, res);
        json_decref (res);
      }
    add_event (r->a, r->s.id, "tool_result", ev);
  }
}

void
sbx_agent_run_loop (struct sbx_agent_run *r)
{
  struct sbx_agents *a = r->a;
  const char *stop = "end_turn";
  char stop_buf[32], reason[SBX_ERR_MSG_MAX + 64] = "";
  json_t *model = json_object_get (r->agent, "model");
  const char *model_name = json_string_value (json_object_get (model, "name")) ?: "";
  uint32_t reply_tokens = (uint32_t) json_integer_value (json_object_get (model, "max_tokens"));
  uint32_t max_turns = (uint32_t) json_integer_value (json_object_get (r->agent, "max_turns"));
  if (max_turns == 0 || max_turns > SBX_AGENT_TURNS_CAP)
    max_turns = a->max_turns;
  const char *system = json_string_value (json_object_get (r->agent, "system"));
  remote_open (r);

  for (uint32_t turn = 0;; turn++)
    {
      const char *why = run_cancelled (r);
      if (why)
        {
          stop = "cancelled";
          snprintf (reason, sizeof reason, "%s", why);
          break;
        }
      if (turn >= max_turns)
        {
          stop = "max_turns";
          snprintf (reason, sizeof reason, "the agent reached its limit of %u model turns", max_turns);
          break;
        }
      uint64_t now = sbx_now_ns ();
      if (now >= r->deadline_ns)
        {
          stop = "timeout";
          snprintf (reason, sizeof reason, "the message's time limit of %u s was reached", a->timeout_s);
          break;
        }
      if (r->in_tokens + r->out_tokens >= a->max_tokens)
        {
          stop = "token_limit";
          snprintf (reason, sizeof reason, "the message used its %lld tokens", (long long) a->max_tokens);
          break;
        }
      struct convo c;
      struct sbx_err err;
      if (convo_build (a, r->s.id, &c, &err) < 0)
        {
          convo_free (&c);
          stop = "error";
          snprintf (reason, sizeof reason, "%s", err.msg);
          break;
        }
      uint64_t left_ms = (r->deadline_ns - now) / 1000000ull;
      uint32_t timeout_ms = a->model_timeout_s * 1000u;
      if (left_ms < timeout_ms)
        timeout_ms = (uint32_t) (left_ms ? left_ms : 1);
      struct sbx_model_request rq = { .model = model_name,
                                      .system = system,
                                      .messages = c.messages,
                                      .tools = r->tools,
                                      .max_tokens = reply_tokens ? reply_tokens : DEFAULT_REPLY_TOKENS,
                                      .timeout_ms = timeout_ms,
                                      .cancel = &a->stopping };
      struct sbx_model_reply reply;
      int rc = sbx_model_call (&a->models, &rq, &reply, &err);
      convo_free (&c);
      if (rc < 0)
        {
          stop = "provider_error";
          snprintf (reason, sizeof reason, "%s", err.msg);
          break;
        }
      r->turns++;
      r->in_tokens += reply.input_tokens;
      r->out_tokens += reply.output_tokens;
      sbx_store_session_usage (a->store, r->s.id, reply.input_tokens, reply.output_tokens, 1, &err);
      size_t i, uses = 0;
      json_t *blk;
      json_array_foreach (reply.content, i, blk)
      {
        const char *type = json_string_value (json_object_get (blk, "type"));
        if (strcmp (type, "text") == 0)
          add_event (a, r->s.id, "message",
                     json_pack ("{s:s, s:O}", "role", "assistant", "content", json_object_get (blk, "text")));
        else
          {
            uses++;
            int idx;
            const char *tool;
            const char *server = tool_route (r, json_string_value (json_object_get (blk, "name")), &idx, &tool);
            add_event (a, r->s.id, "tool_call",
                       json_pack ("{s:O, s:O, s:s, s:O}", "tool_call_id", json_object_get (blk, "id"), "name",
                                  json_object_get (blk, "name"), "server", server ?: SBX_AGENT_BUILTIN_SERVER,
                                  "input", json_object_get (blk, "input")));
          }
      }
      if (uses == 0)
        {
          snprintf (stop_buf, sizeof stop_buf, "%s",
                    reply.stop_reason[0] && strcmp (reply.stop_reason, "tool_use") ? reply.stop_reason : "end_turn");
          stop = stop_buf;
          json_decref (reply.content);
          break;
        }
      run_tools (r, reply.content);
      json_decref (reply.content);
    }

  if (reason[0])
    add_event (a, r->s.id, "failed", json_pack ("{s:s, s:s}", "reason", reason, "stop_reason", stop));
  add_event (a, r->s.id, "done",
             json_pack ("{s:s, s:{s:I, s:I, s:I}}", "stop_reason", stop, "usage", "input_tokens",
                        (json_int_t) r->in_tokens, "output_tokens", (json_int_t) r->out_tokens, "model_turns",
                        (json_int_t) r->turns));
  struct sbx_err err;
  remote_close (r);
  sbx_store_session_status (a->store, r->s.id, "idle", NULL, 0, &err);
  running_drop (a, r->s.id);
  json_decref (r->agent);
  json_decref (r->tools);
  json_decref (r->routes);
  sbx_session_rec_free (&r->s);
  free (r);
}
