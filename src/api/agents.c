/*
 * agents.c - seed 000's agents and sessions, /default/v1/... (service
 * side: service/agents.c).  The seed is SandBase's, as seed 001 is, so
 * errors take that dialect's shape ({code, message}).
 *
 *   POST   /default/v1/agents              {name, model{name, max_tokens}, system, tools[], max_turns}
 *   GET    /default/v1/agents[/{id}]       DELETE /default/v1/agents/{id}
 *   POST   /default/v1/sessions            {agent_id, environment{template_id, timeout}}
 *   GET    /default/v1/sessions[/{id}]     DELETE /default/v1/sessions/{id} (kills its sandbox)
 *   POST   /default/v1/sessions/{id}/events  {type:"message", role:"user", content}
 *   GET    /default/v1/sessions/{id}/events  [?after=SEQ&limit=N] [?stream=true]
 *
 * A message's POST runs the agent loop and answers the events it made
 * (the user's message first, a "done" event last); with ?stream=true it
 * answers at once with Server-Sent Events, one per event as it happens,
 * the loop running on a thread of its own (it goes on if the client
 * leaves).  GET ?stream=true sends the events after ?after= and follows
 * the session while a loop runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"
#include "../service/agents.h"
#include "../service/encode.h"
#include "api.h"

#define EVENTS_PAGE_MAX 1000u
#define STREAMS_MAX 64u              /* event streams open at once */
#define KEEPALIVE_MS 15000u

static unsigned streams_open;

static json_t *
agent_json (const struct sbx_agent_doc *d)
{
  json_t *j = json_loads (d->json, 0, NULL);
  if (j == NULL)
    j = json_object ();
  char ts[40];
  sbx_rfc3339 (d->created_ms, ts, sizeof ts);
  json_object_set_new (j, "id", json_string (d->id));
  json_object_set_new (j, "created_at", json_string (ts));
  /* headers given for remote MCP servers hold credentials: their values
     are never shown back */
  size_t i;
  json_t *t;
  json_array_foreach (json_object_get (j, "tools"), i, t)
  {
    const char *name;
    json_t *v;
    json_object_foreach (json_object_get (t, "headers"), name, v)
    {
      json_string_set (v, "<redacted>");
    }
  }
  return j;
}

static json_t *
session_json (const struct sbx_session_rec *s)
{
  char created[40], ended[40];
  sbx_rfc3339 (s->created_ms, created, sizeof created);
  if (s->ended_ms)
    sbx_rfc3339 (s->ended_ms, ended, sizeof ended);
  return json_pack ("{s:s, s:s, s:s, s:s, s:{s:s, s:i}, s:s, s:s?, s:s?, s:{s:I, s:I, s:I}}", "id", s->id, "agent_id",
                    s->agent_id, "sandbox_id", s->sandbox_id, "status", s->status, "environment", "template_id",
                    s->template_id, "timeout", (json_int_t) s->timeout_s, "created_at", created, "ended_at",
                    s->ended_ms ? ended : NULL, "end_reason", s->end_reason[0] ? s->end_reason : NULL, "usage",
                    "input_tokens", (json_int_t) s->input_tokens, "output_tokens", (json_int_t) s->output_tokens,
                    "model_turns", (json_int_t) s->model_turns);
}

/* ---- agents ---- */

enum MHD_Result
agents_create (struct call *k)
{
  struct MHD_Connection *c = k->c;
  enum MHD_Result ret;
  json_t *b = body_object (c, k->rq, &ret);
  if (b == NULL)
    return ret;
  struct sbx_agent_def def = { 0 };
  long long max_turns = 0, max_tokens = 0;
  json_t *model = json_object_get (b, "model");
  ret = MHD_NO;
  if (opt_string (c, b, "name", &def.name, &ret) < 0 || opt_string (c, b, "system", &def.system, &ret) < 0
      || opt_int (c, b, "max_turns", 1, SBX_AGENT_TURNS_CAP, &max_turns, &ret) < 0)
    goto out;
  if (json_is_string (model))
    def.model = json_string_value (model); /* "model": "NAME" as a shorthand */
  else if (json_is_object (model))
    {
      if (opt_string (c, model, "name", &def.model, &ret) < 0
          || opt_int (c, model, "max_tokens", 1, SBX_AGENT_REPLY_TOKENS_MAX, &max_tokens, &ret) < 0)
        goto out;
    }
  else if (model && !json_is_null (model))
    {
      ret = send_error (c, 400, "model must be an object: {\"name\": \"...\"}");
      goto out;
    }
  def.tools = json_object_get (b, "tools");
  if (def.tools && !json_is_null (def.tools) && !json_is_array (def.tools))
    {
      ret = send_error (c, 400, "tools must be an array");
      goto out;
    }
  def.max_turns = (uint32_t) max_turns;
  def.max_tokens = (uint32_t) max_tokens;
  struct sbx_agent_doc d;
  struct sbx_err err;
  if (sbx_agent_create (k->h->agents, &k->rq->org, &def, &d, &err) < 0)
    {
      ret = send_fail (c, &err);
      goto out;
    }
  ret = send_json (c, 201, agent_json (&d));
  free (d.json);
out:
  json_decref (b);
  return ret;
}

enum MHD_Result
agents_list (struct call *k)
{
  struct sbx_agent_doc *v;
  size_t n;
  struct sbx_err err;
  if (sbx_store_agent_list (k->h->store, k->rq->org.id, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, agent_json (&v[i]));
  sbx_agent_docs_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:o}", "data", arr));
}

enum MHD_Result
agents_get (struct call *k)
{
  struct sbx_agent_doc d;
  struct sbx_err err;
  if (sbx_store_agent_get (k->h->store, k->rq->org.id, k->arg[0], &d, &err) < 0)
    return send_fail (k->c, &err);
  enum MHD_Result ret = send_json (k->c, 200, agent_json (&d));
  free (d.json);
  return ret;
}

enum MHD_Result
agents_delete (struct call *k)
{
  struct sbx_err err;
  if (sbx_store_agent_delete (k->h->store, k->rq->org.id, k->arg[0], &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 204);
}

/* ---- sessions ---- */

enum MHD_Result
sessions_create (struct call *k)
{
  struct MHD_Connection *c = k->c;
  enum MHD_Result ret;
  json_t *b = body_object (c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *agent_id = NULL, *tmpl = NULL;
  long long timeout = 0;
  json_t *env = json_object_get (b, "environment");
  ret = MHD_NO;
  if (opt_string (c, b, "agent_id", &agent_id, &ret) < 0)
    goto out;
  if (env && !json_is_null (env) && !json_is_object (env))
    {
      ret = send_error (c, 400, "environment must be an object: {\"template_id\": ..., \"timeout\": ...}");
      goto out;
    }
  if (env && (opt_string (c, env, "template_id", &tmpl, &ret) < 0
              || opt_int (c, env, "timeout", 1, k->rq->org.max_timeout_s, &timeout, &ret) < 0))
    goto out;
  if (agent_id == NULL || *agent_id == '\0')
    {
      ret = send_error (c, 400, "agent_id is required");
      goto out;
    }
  struct sbx_session_rec s;
  struct sbx_err err;
  if (sbx_session_create (k->h->agents, &k->rq->org, agent_id, tmpl, (uint32_t) timeout, &s, &err) < 0)
    {
      ret = sbx_err_kind (&err) != SBX_E_LIMIT  ? send_fail (c, &err)
            : sbx_service_err_is_hours (&err) ? send_error (c, 429, "%s", err.msg)
                                              : send_error (c, 429, "concurrent sandbox limit reached");
      goto out;
    }
  snprintf (k->rq->sandbox_id, sizeof k->rq->sandbox_id, "%.*s", SBX_ID_MAX - 1, s.sandbox_id);
  ret = send_json (c, 201, session_json (&s));
  sbx_session_rec_free (&s);
out:
  json_decref (b);
  return ret;
}

enum MHD_Result
sessions_list (struct call *k)
{
  struct sbx_session_rec *v;
  size_t n;
  struct sbx_err err;
  if (sbx_session_list (k->h->agents, &k->rq->org, &v, &n, &err) < 0)
    return send_fail (k->c, &err);
  json_t *arr = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (arr, session_json (&v[i]));
  sbx_session_recs_free (v, n);
  return send_json (k->c, 200, json_pack ("{s:o}", "data", arr));
}

enum MHD_Result
sessions_get (struct call *k)
{
  struct sbx_session_rec s;
  struct sbx_err err;
  if (sbx_session_get (k->h->agents, &k->rq->org, k->arg[0], &s, &err) < 0)
    return send_fail (k->c, &err);
  enum MHD_Result ret = send_json (k->c, 200, session_json (&s));
  sbx_session_rec_free (&s);
  return ret;
}

enum MHD_Result
sessions_delete (struct call *k)
{
  struct sbx_err err;
  if (sbx_session_delete (k->h->agents, &k->rq->org, k->arg[0], &err) < 0)
    return send_fail (k->c, &err);
  return send_empty (k->c, 204);
}

/* ---- events ---- */

/* The session's events after AFTER (at most LIMIT) into ARR; the last
   seq into *LAST. */
static int
events_after (struct http_server *h, const char *id, int64_t after, uint32_t limit, json_t *arr, int64_t *last,
              struct sbx_err *err)
{
  struct sbx_session_event *v;
  size_t n;
  if (sbx_store_session_events (h->store, id, after, limit, &v, &n, err) < 0)
    return -1;
  *last = after;
  for (size_t i = 0; i < n; i++)
    {
      json_array_append_new (arr, sbx_session_event_json (&v[i]));
      *last = v[i].seq;
    }
  sbx_session_events_free (v, n);
  return (int) n;
}

struct follow {
  struct http_server *h;
  char session[SBX_STORE_ID_MAX];
  int64_t after;
  int fd;
  bool until_done;             /* a message's stream: ends after its "done" */
};

static bool
write_sse (int fd, json_t *ev)
{
  char *data = json_dumps (ev, JSON_COMPACT);
  if (data == NULL)
    return true;
  char head[128];
  int n = snprintf (head, sizeof head, "id: %lld\nevent: %s\ndata: ",
                    (long long) json_integer_value (json_object_get (ev, "seq")),
                    json_string_value (json_object_get (ev, "type")) ?: "event");
  bool ok = sbx_write_full (fd, head, (size_t) n) == n && sbx_write_full (fd, data, strlen (data)) >= 0
            && sbx_write_full (fd, "\n\n", 2) == 2;
  free (data);
  return ok;
}

/* Follow a session's events into the stream: every event after F->after,
   then the new ones while a loop runs (a keep-alive comment when nothing
   happens for a while); the stream ends when no loop runs and nothing is
   left to send (or, until_done, after the message's "done"), or when the
   client has gone. */
static void *
follow_main (void *arg)
{
  struct follow *f = arg;
  struct sbx_agents *a = f->h->agents;
  bool done = false, ok = true;
  while (ok && !done)
    {
      bool running = sbx_session_running (a, f->session);
      json_t *arr = json_array ();
      struct sbx_err err;
      int n = events_after (f->h, f->session, f->after, 100, arr, &f->after, &err);
      size_t i;
      json_t *ev;
      json_array_foreach (arr, i, ev)
      {
        if (ok)
          ok = write_sse (f->fd, ev);
        if (f->until_done && strcmp (json_string_value (json_object_get (ev, "type")) ?: "", "done") == 0)
          done = true;
      }
      json_decref (arr);
      if (n < 0)
        break;
      if (n == 100 || done)
        continue;
      if (!running)
        break;
      uint64_t before = sbx_now_ns ();
      sbx_session_wait (a, f->session, f->after, KEEPALIVE_MS);
      if (sbx_now_ns () - before >= (uint64_t) KEEPALIVE_MS * 1000000ull)
        ok = sbx_write_full (f->fd, ": keep-alive\n\n", 14) == 14;
    }
  close (f->fd);
  __atomic_sub_fetch (&streams_open, 1, __ATOMIC_SEQ_CST);
  free (f);
  return NULL;
}

/* Answer with a stream following session ID from AFTER. */
static enum MHD_Result
send_follow (struct call *k, const char *id, int64_t after, bool until_done)
{
  if (__atomic_add_fetch (&streams_open, 1, __ATOMIC_SEQ_CST) > STREAMS_MAX)
    {
      __atomic_sub_fetch (&streams_open, 1, __ATOMIC_SEQ_CST);
      return send_error (k->c, 503, "%u event streams are open; retry later", STREAMS_MAX);
    }
  struct follow *f = calloc (1, sizeof *f);
  int fds[2];
  if (f == NULL || pipe2 (fds, O_CLOEXEC) < 0)
    {
      free (f);
      __atomic_sub_fetch (&streams_open, 1, __ATOMIC_SEQ_CST);
      return send_error (k->c, 500, "cannot start the stream");
    }
  f->h = k->h;
  snprintf (f->session, sizeof f->session, "%s", id);
  f->after = after;
  f->fd = fds[1];
  f->until_done = until_done;
  if (!sbx_start_detached (follow_main, f))
    {
      close (fds[0]);
      close (fds[1]);
      free (f);
      __atomic_sub_fetch (&streams_open, 1, __ATOMIC_SEQ_CST);
      return send_error (k->c, 500, "cannot start the stream");
    }
  return send_pipe (k->c, fds[0], "text/event-stream", "Cache-Control", "no-cache", NULL);
}

static bool
want_stream (struct MHD_Connection *c)
{
  const char *s = query (c, "stream");
  return s && (strcmp (s, "true") == 0 || strcmp (s, "1") == 0);
}

static void *
loop_main (void *arg)
{
  sbx_agent_run_loop (arg);
  return NULL;
}

enum MHD_Result
session_events_post (struct call *k)
{
  struct MHD_Connection *c = k->c;
  enum MHD_Result ret;
  json_t *b = body_object (c, k->rq, &ret);
  if (b == NULL)
    return ret;
  const char *type = NULL, *role = NULL, *content = NULL;
  ret = MHD_NO;
  if (opt_string (c, b, "type", &type, &ret) < 0 || opt_string (c, b, "role", &role, &ret) < 0
      || opt_string (c, b, "content", &content, &ret) < 0)
    goto out;
  if (type && strcmp (type, "message") != 0)
    {
      ret = send_error (c, 400, "type must be \"message\"");
      goto out;
    }
  if (role && strcmp (role, "user") != 0)
    {
      ret = send_error (c, 400, "role must be \"user\"");
      goto out;
    }
  if (content == NULL || *content == '\0')
    {
      ret = send_error (c, 400, "content is required (a string)");
      goto out;
    }
  struct sbx_agent_run *run;
  int64_t before;
  struct sbx_err err;
  if (sbx_session_message (k->h->agents, &k->rq->org, k->arg[0], content, &run, &before, &err) < 0)
    {
      ret = send_fail (c, &err);
      goto out;
    }
  if (want_stream (c))
    {
      if (!sbx_start_detached (loop_main, run))
        {
          sbx_agent_run_loop (run); /* no thread: answer it here, then stream what it did */
        }
      ret = send_follow (k, k->arg[0], before, true);
      goto out;
    }
  sbx_agent_run_loop (run);
  json_t *arr = json_array ();
  int64_t last = before;
  for (;;)
    {
      int n = events_after (k->h, k->arg[0], last, EVENTS_PAGE_MAX, arr, &last, &err);
      if (n < 0)
        {
          json_decref (arr);
          ret = send_fail (c, &err);
          goto out;
        }
      if (n < (int) EVENTS_PAGE_MAX)
        break;
    }
  struct sbx_session_rec s;
  if (sbx_session_get (k->h->agents, &k->rq->org, k->arg[0], &s, &err) < 0)
    {
      json_decref (arr);
      ret = send_fail (c, &err);
      goto out;
    }
  /* the stop reason and usage of this message: its "done" event's */
  json_t *done = json_array_get (arr, json_array_size (arr) - 1);
  json_t *answer = json_pack ("{s:s, s:s, s:O?, s:O?, s:o}", "session_id", s.id, "status", s.status, "stop_reason",
                              json_object_get (done, "stop_reason"), "usage", json_object_get (done, "usage"),
                              "events", arr);
  sbx_session_rec_free (&s);
  ret = send_json (c, 200, answer);
out:
  json_decref (b);
  return ret;
}

enum MHD_Result
session_events_get (struct call *k)
{
  struct MHD_Connection *c = k->c;
  struct sbx_session_rec s;
  struct sbx_err err;
  if (sbx_session_get (k->h->agents, &k->rq->org, k->arg[0], &s, &err) < 0)
    return send_fail (c, &err);
  sbx_session_rec_free (&s);
  const char *after_s = query (c, "after"), *limit_s = query (c, "limit");
  char *end;
  long long after = 0, limit = EVENTS_PAGE_MAX;
  if (after_s)
    {
      errno = 0;
      after = strtoll (after_s, &end, 10);
      if (errno || *end || after < 0)
        return send_error (c, 400, "after must be an event's seq");
    }
  if (limit_s)
    {
      errno = 0;
      limit = strtoll (limit_s, &end, 10);
      if (errno || *end || limit < 1 || limit > EVENTS_PAGE_MAX)
        return send_error (c, 400, "limit must be between 1 and %u", EVENTS_PAGE_MAX);
    }
  if (want_stream (c))
    return send_follow (k, k->arg[0], after, false);
  json_t *arr = json_array ();
  int64_t last;
  if (events_after (k->h, k->arg[0], after, (uint32_t) limit, arr, &last, &err) < 0)
    {
      json_decref (arr);
      return send_fail (c, &err);
    }
  return send_json (c, 200, json_pack ("{s:o, s:b}", "data", arr, "running",
                                       sbx_session_running (k->h->agents, k->arg[0])));
}
