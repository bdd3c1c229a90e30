"""Seed 000's agents and sessions: the agent loop against scripted model
servers on loopback (one speaking Anthropic's Messages API, one OpenAI's
chat completions), running real code in the session's real sandbox
through the built-in code-exec tools.

The scripted model is a list of steps, one per model request: each step
gets the request's JSON (and may check it) and returns (status, JSON).
The tests check that what the model is sent back as tool results is the
sandbox's own output (a value only the sandbox could know, read again
through the sandbox API)."""
import base64
import json
import os
import queue
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import Sbxd

TEMPLATE = "code_interpreter"


class ScriptedModel:
    """A model server on loopback: Anthropic's /v1/messages and OpenAI's
    /v1/chat/completions, answering from a script of steps."""

    def __init__(self):
        self.steps = queue.Queue()
        self.requests = []          # (path, headers, body) as received
        self.errors = []            # failures of the steps' own checks
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                model.requests.append((self.path, dict(self.headers), body))
                try:
                    step = model.steps.get(timeout=5)
                except queue.Empty:
                    step = lambda b: (500, {"error": {"type": "api_error", "message": "script ran out"}})
                try:
                    status, out = step(body)
                except Exception as e:  # a check of the step failed
                    model.errors.append(repr(e))
                    status, out = 500, {"error": {"type": "test_error", "message": repr(e)}}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def script(self, *steps):
        self.requests.clear()
        self.errors.clear()
        while not self.steps.empty():
            self.steps.get_nowait()
        for s in steps:
            self.steps.put(s)

    def close(self):
        self.server.shutdown()


# ---- Anthropic's and OpenAI's reply shapes ----

def claude_tool(name, args, text=None, call_id="toolu_01"):
    content = ([{"type": "text", "text": text}] if text else []) + \
        [{"type": "tool_use", "id": call_id, "name": name, "input": args}]
    return 200, {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                 "content": content, "stop_reason": "tool_use",
                 "usage": {"input_tokens": 100, "output_tokens": 20}}


def claude_text(text):
    return 200, {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                 "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                 "usage": {"input_tokens": 150, "output_tokens": 10}}


def openai_tool(name, args, call_id="call_1"):
    return 200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "tool_calls": [{
            "id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5}}


def openai_text(text):
    return 200, {"id": "chatcmpl-2", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 6}}


def last_tool_result(body):
    """The last tool_result block of an Anthropic request."""
    for m in reversed(body["messages"]):
        if m["role"] == "user" and isinstance(m["content"], list):
            for b in reversed(m["content"]):
                if b.get("type") == "tool_result":
                    return b
    raise AssertionError("no tool_result in the request")


def result_text(block):
    return "\n".join(p["text"] for p in block["content"] if p.get("type") == "text")


# ---- fixtures ----

@pytest.fixture(scope="module")
def model():
    m = ScriptedModel()
    yield m
    m.close()


def daemon_env(model, **extra):
    env = dict(os.environ)
    for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(k, None)
    env.update({"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "sk-ant-test-key",
                "OPENAI_BASE_URL": model.url + "/v1", "OPENAI_API_KEY": "sk-openai-test-key",
                "SBXD_MODEL_TIMEOUT_S": "5"})
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def sbxd(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("sbxd")
    server = Sbxd(str(d / "state")).start(env=daemon_env(model))
    yield server
    try:
        server.cleanup()
    finally:
        server.stop()


def make_agent(sbxd, model_name="claude-sonnet-4", **fields):
    body = {"name": "Data Analyst", "model": {"name": model_name}, "system": "You run code.",
            "tools": [{"type": "mcp", "server": "code-exec"}]}
    body.update(fields)
    r = sbxd.req("POST", "/default/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def session(sbxd):
    made = []

    def make(agent=None, **agent_fields):
        agent = agent or make_agent(sbxd, **agent_fields)
        r = sbxd.req("POST", "/default/v1/sessions",
                     json={"agent_id": agent["id"], "environment": {"template_id": TEMPLATE, "timeout": 300}})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()
    yield make
    for sid in made:
        sbxd.req("DELETE", f"/default/v1/sessions/{sid}")


def say(sbxd, session, content, **params):
    r = sbxd.req("POST", f"/default/v1/sessions/{session['id']}/events", params=params,
                 json={"type": "message", "role": "user", "content": content})
    assert r.status_code == 200, r.text
    return r.json()


def of_type(events, t):
    return [e for e in events if e["type"] == t]


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UUID_CMD = {"cmd": "sh", "args": ["-c", "cat /proc/sys/kernel/random/uuid | tee /tmp/made-here"]}


# ---- agents ----

def test_agents_crud_and_errors(sbxd):
    a = make_agent(sbxd, max_turns=3)
    assert a["id"].startswith("agent_") and a["name"] == "Data Analyst"
    assert a["model"]["name"] == "claude-sonnet-4" and a["max_turns"] == 3
    assert a["tools"] == [{"type": "mcp", "server": "code-exec"}]
    assert sbxd.req("GET", f"/default/v1/agents/{a['id']}").json() == a
    assert a["id"] in [x["id"] for x in sbxd.req("GET", "/default/v1/agents").json()["data"]]
    bad = [
        ({"name": "x", "tools": []}, "model.name is required"),
        ({"name": "x", "model": {"name": "claude-x"}, "tools": [{"type": "mcp", "url": "http://10.0.0.1/mcp"}]},
         "tools[0].url: 10.0.0.1 is a private address: refused"),
        ({"name": "x", "model": {"name": "claude-x"}, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"name": "x", "model": {"name": "claude-x"}, "max_turns": 0}, "max_turns"),
        ({"model": {"name": "claude-x"}}, "name is required"),
        ({"name": "x", "model": 7}, "model must be an object"),
    ]
    for body, msg in bad:
        r = sbxd.req("POST", "/default/v1/agents", json=body)
        assert r.status_code == 400 and msg in r.json()["message"], (body, r.text)
        assert r.json()["code"] == 400
    assert sbxd.req("DELETE", f"/default/v1/agents/{a['id']}").status_code == 204
    r = sbxd.req("GET", f"/default/v1/agents/{a['id']}")
    assert r.status_code == 404 and "not found" in r.json()["message"]
    assert sbxd.req("DELETE", f"/default/v1/agents/{a['id']}").status_code == 404
    # another organisation sees none of it
    other = {"Authorization": "Bearer " + sbxd.new_key(org="agents-other")}
    b = make_agent(sbxd)
    assert requests.get(f"{sbxd.url}/default/v1/agents/{b['id']}", headers=other).status_code == 404
    r = requests.post(f"{sbxd.url}/default/v1/sessions", headers=other, json={"agent_id": b["id"]})
    assert r.status_code == 400 and "not found" in r.json()["message"]


def test_no_provider_serves_the_model(tmp_path, model):
    """A model name no configured provider serves answers 400."""
    env = daemon_env(model)
    for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        env.pop(k)
    d = Sbxd(str(tmp_path / "state")).start(env=env)
    try:
        r = d.req("POST", "/default/v1/agents", json={"name": "x", "model": {"name": "gpt-4o"}})
        assert r.status_code == 400 and 'no model provider serves "gpt-4o"' in r.json()["message"]
        r = d.req("POST", "/default/v1/agents", json={"name": "x", "model": {"name": "claude-sonnet-4"}})
        assert r.status_code == 201
    finally:
        d.stop()


# ---- sessions and the loop ----

def test_tool_use_runs_real_code_in_the_session_sandbox(sbxd, model, session):
    s = session()
    assert s["status"] == "idle" and s["sandbox_id"].startswith("sbx")
    assert s["environment"] == {"template_id": TEMPLATE, "timeout": 300}
    sb = sbxd.get(s["sandbox_id"]).json()
    assert sb["status"] == "running" and sb["metadata"]["session_id"] == s["id"]
    seen = {}

    def second(body):
        res = last_tool_result(body)
        seen["text"] = result_text(res)
        assert res["tool_use_id"] == "toolu_01" and not res.get("is_error")
        return claude_text("The sandbox made " + UUID_RE.search(seen["text"]).group(0))
    model.script(lambda b: claude_tool("run_command", UUID_CMD, text="Let me run it."), second)
    out = say(sbxd, s, "Make a UUID in your sandbox")
    assert not model.errors, model.errors
    made = sbxd.read(s["sandbox_id"], "/tmp/made-here").decode().strip()
    assert len(made) == 36 and made in seen["text"]
    ev = out["events"]
    assert [e["type"] for e in ev] == ["message", "message", "tool_call", "tool_result", "message", "done"]
    assert ev[0]["role"] == "user" and ev[0]["content"] == "Make a UUID in your sandbox"
    assert ev[1] == {**ev[1], "role": "assistant", "content": "Let me run it."}
    assert ev[2]["name"] == "run_command" and ev[2]["input"] == UUID_CMD and ev[2]["tool_call_id"] == "toolu_01"
    tr = ev[3]
    assert tr["is_error"] is False and tr["exit_code"] == 0 and tr["stdout"].strip() == made
    assert tr["stderr"] == "" and tr["images"] == []
    assert ev[4]["content"] == "The sandbox made " + made
    assert out["stop_reason"] == "end_turn" and ev[5]["stop_reason"] == "end_turn"
    assert out["usage"] == {"input_tokens": 250, "output_tokens": 30, "model_turns": 2}
    # the request the model got: Anthropic's headers, system, tools
    path, headers, body = model.requests[0]
    assert path == "/v1/messages"
    assert headers.get("x-api-key") == "sk-ant-test-key" and headers.get("anthropic-version") == "2023-06-01"
    assert body["model"] == "claude-sonnet-4" and body["system"] == "You run code."
    names = {t["name"] for t in body["tools"]}
    assert "run_command" in names and "create_sandbox" not in names and "kill_sandbox" not in names
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Make a UUID in your sandbox"}]}]
    # the events are kept, the tokens recorded
    listed = sbxd.req("GET", f"/default/v1/sessions/{s['id']}/events").json()
    assert [e["id"] for e in listed["data"]] == [e["id"] for e in ev] and listed["running"] is False
    got = sbxd.req("GET", f"/default/v1/sessions/{s['id']}").json()
    assert got["usage"] == {"input_tokens": 250, "output_tokens": 30, "model_turns": 2}
    # the API key never reaches an event
    assert "sk-ant-test-key" not in json.dumps(listed)


def test_chat_completions_provider(sbxd, model, session):
    s = session(model_name="local-llama")
    seen = {}

    def second(body):
        tool = [m for m in body["messages"] if m["role"] == "tool"]
        seen["text"] = tool[-1]["content"]
        assert tool[-1]["tool_call_id"] == "call_1"
        assert body["messages"][0] == {"role": "system", "content": "You run code."}
        calls = [m for m in body["messages"] if m["role"] == "assistant"][-1]["tool_calls"]
        assert json.loads(calls[0]["function"]["arguments"]) == UUID_CMD
        return openai_text("done: " + UUID_RE.search(seen["text"]).group(0))
    model.script(lambda b: openai_tool("run_command", UUID_CMD), second)
    out = say(sbxd, s, "uuid please")
    assert not model.errors, model.errors
    made = sbxd.read(s["sandbox_id"], "/tmp/made-here").decode().strip()
    assert made in seen["text"]
    path, headers, body = model.requests[0]
    assert path == "/v1/chat/completions" and headers.get("Authorization") == "Bearer sk-openai-test-key"
    assert body["model"] == "local-llama"
    assert any(t["type"] == "function" and t["function"]["name"] == "run_command" for t in body["tools"])
    assert of_type(out["events"], "tool_result")[0]["stdout"].strip() == made
    assert out["events"][-2]["content"] == "done: " + made
    assert out["usage"] == {"input_tokens": 110, "output_tokens": 11, "model_turns": 2}


def test_provider_error_is_a_failed_event_and_the_session_goes_on(sbxd, model, session):
    s = session()
    model.script(lambda b: (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    out = say(sbxd, s, "hello")
    failed = of_type(out["events"], "failed")
    assert len(failed) == 1 and "HTTP 529" in failed[0]["reason"] and "Overloaded" in failed[0]["reason"]
    assert out["stop_reason"] == "provider_error" and out["status"] == "idle"
    # a provider that does not answer in time (SBXD_MODEL_TIMEOUT_S=5)
    model.script(lambda b: (time.sleep(7), claude_text("late"))[1])
    t = time.time()
    out = say(sbxd, s, "are you there?")
    assert time.time() - t < 7
    assert "no answer within 5 s" in of_type(out["events"], "failed")[0]["reason"]
    # the session survives both: the next message is answered, with the
    # whole conversation (the unanswered messages included)
    model.script(lambda b: claude_text("yes"))
    out = say(sbxd, s, "again")
    assert [e["type"] for e in out["events"]] == ["message", "message", "done"]
    msgs = model.requests[-1][2]["messages"]
    assert len(msgs) == 1 and [b["text"] for b in msgs[0]["content"]] == ["hello", "are you there?", "again"]


def test_tool_errors_go_back_to_the_model(sbxd, model, session):
    s = session()
    seen = []

    def check(body):
        res = last_tool_result(body)
        seen.append(res)
        return claude_tool("run_command", {"cmd": 5}, call_id="toolu_02") if len(seen) == 1 \
            else claude_text("both failed")
    model.script(lambda b: claude_tool("no_such_tool", {"x": 1}), check, check)
    out = say(sbxd, s, "break things")
    assert not model.errors, model.errors
    results = of_type(out["events"], "tool_result")
    assert results[0]["is_error"] is True and "unknown tool: no_such_tool" in results[0]["text"]
    assert seen[0]["is_error"] is True and "unknown tool" in result_text(seen[0])
    # a bad argument: an MCP tool error (isError), not a dropped loop
    assert results[1]["is_error"] is True and seen[1]["is_error"] is True
    assert "cmd" in results[1]["text"] and "cmd" in result_text(seen[1])
    assert out["stop_reason"] == "end_turn"


def test_turn_limit(sbxd, model, session):
    s = session(max_turns=2)
    model.script(*[lambda b: claude_tool("run_command", {"cmd": "true"})] * 5)
    out = say(sbxd, s, "loop forever")
    assert len(model.requests) == 2
    assert out["stop_reason"] == "max_turns"
    failed = of_type(out["events"], "failed")
    assert len(failed) == 1 and "limit of 2 model turns" in failed[0]["reason"]
    assert len(of_type(out["events"], "tool_result")) == 2


def read_sse(resp):
    """(event name, data, arrival time) of each Server-Sent Event."""
    name, data = None, []
    for line in resp.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield name, json.loads("\n".join(data)), time.time()
            name, data = None, []
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


def test_sse_streams_events_while_the_loop_runs(sbxd, model, session):
    s = session()

    def slow(body):
        time.sleep(1.5)
        return claude_text("slowly done")
    model.script(lambda b: claude_tool("run_command", {"cmd": "echo", "args": ["streamed"]}), slow)
    t0 = time.time()
    with sbxd.http.post(f"{sbxd.url}/default/v1/sessions/{s['id']}/events", params={"stream": "true"},
                        json={"type": "message", "role": "user", "content": "stream it"}, stream=True,
                        timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        got = list(read_sse(r))
    names = [n for n, _, _ in got]
    assert names == ["message", "tool_call", "tool_result", "message", "done"]
    tool_result_at = got[2][2]
    done_at = got[4][2]
    # the tool's result came while the model was still thinking
    assert done_at - tool_result_at > 1.0, (tool_result_at - t0, done_at - t0)
    assert got[2][1]["stdout"] == "streamed\n"
    # GET ?stream=true on an idle session sends what there is and ends
    with sbxd.http.get(f"{sbxd.url}/default/v1/sessions/{s['id']}/events", params={"stream": "true"},
                       stream=True, timeout=30) as r:
        again = list(read_sse(r))
    assert [d["id"] for _, d, _ in again] == [d["id"] for _, d, _ in got]
    # ... and a follower started during a loop sees its events as they come
    model.script(slow)
    last = got[-1][1]["seq"]
    th = threading.Thread(target=say, args=(sbxd, s, "once more"))
    th.start()
    time.sleep(0.5)
    with sbxd.http.get(f"{sbxd.url}/default/v1/sessions/{s['id']}/events",
                       params={"stream": "true", "after": str(last)}, stream=True, timeout=30) as r:
        followed = list(read_sse(r))
    th.join()
    assert [n for n, _, _ in followed] == ["message", "message", "done"]
    # a second message while one is being answered: 409
    model.script(slow)
    th = threading.Thread(target=say, args=(sbxd, s, "third"))
    th.start()
    time.sleep(0.5)
    r = sbxd.req("POST", f"/default/v1/sessions/{s['id']}/events", json={"type": "message", "content": "x"})
    th.join()
    assert r.status_code == 409 and "answering another message" in r.json()["message"]


def test_session_ends_with_its_sandbox_and_is_kept(sbxd, model, session):
    s = session()
    assert sbxd.req("DELETE", f"/default/v1/sessions/{s['id']}").status_code == 204
    got = sbxd.req("GET", f"/default/v1/sessions/{s['id']}").json()
    assert got["status"] == "ended" and got["end_reason"] == "deleted" and got["ended_at"]
    assert sbxd.get(s["sandbox_id"]).json().get("status") in ("stopped", "killed", None) or \
        sbxd.get(s["sandbox_id"]).status_code == 404
    r = sbxd.req("POST", f"/default/v1/sessions/{s['id']}/events", json={"type": "message", "content": "hi"})
    assert r.status_code == 409 and "has ended" in r.json()["message"]
    # a sandbox killed through another API ends its session too
    s2 = session()
    assert sbxd.delete(s2["sandbox_id"]).status_code == 204
    got = sbxd.req("GET", f"/default/v1/sessions/{s2['id']}").json()
    assert got["status"] == "ended"
    assert {x["id"] for x in sbxd.req("GET", "/default/v1/sessions").json()["data"]} >= {s["id"], s2["id"]}
    # bad bodies
    for body, msg in [({}, "agent_id is required"), ({"agent_id": "agent_nope"}, "not found"),
                      ({"agent_id": s["agent_id"], "environment": {"template_id": "nope"}}, "nope"),
                      ({"agent_id": s["agent_id"], "environment": 5}, "environment must be an object")]:
        r = sbxd.req("POST", "/default/v1/sessions", json=body)
        assert r.status_code == 400 and msg in r.json()["message"], r.text
    assert sbxd.req("GET", "/default/v1/sessions/sess_nope").status_code == 404
    # another organisation's key finds none of it
    other = {"Authorization": "Bearer " + sbxd.new_key(org="sessions-other")}
    assert requests.get(f"{sbxd.url}/default/v1/sessions/{s['id']}", headers=other).status_code == 404
    assert requests.get(f"{sbxd.url}/default/v1/sessions/{s['id']}/events", headers=other).status_code == 404
    r = requests.post(f"{sbxd.url}/default/v1/sessions/{s2['id']}/events", headers=other, json={"content": "x"})
    assert r.status_code == 404 and r.json()["message"].startswith("session")
    assert requests.delete(f"{sbxd.url}/default/v1/sessions/{s2['id']}", headers=other).status_code == 404
    assert requests.get(f"{sbxd.url}/default/v1/sessions", headers=other).json() == {"data": []}
    s3 = session()
    for body, msg in [({"content": ""}, "content is required"), ({"type": "note", "content": "x"}, "type must be"),
                      ({"role": "assistant", "content": "x"}, "role must be")]:
        r = sbxd.req("POST", f"/default/v1/sessions/{s3['id']}/events", json=body)
        assert r.status_code == 400 and msg in r.json()["message"], r.text


def test_restart_between_two_messages(tmp_path, model):
    d = Sbxd(str(tmp_path / "state")).start(env=daemon_env(model))
    try:
        agent = make_agent(d)
        s = d.req("POST", "/default/v1/sessions", json={"agent_id": agent["id"],
                  "environment": {"template_id": TEMPLATE, "timeout": 300}}).json()
        model.script(lambda b: claude_tool("run_command", UUID_CMD), lambda b: claude_text("made one"))
        first = say(d, s, "first")
        made = of_type(first["events"], "tool_result")[0]["stdout"].strip()
        d.stop()
        d.start(env=daemon_env(model))
        # the conversation comes back from the store, the sandbox is the same
        seen = {}

        def check(body):
            seen["messages"] = body["messages"]
            return claude_tool("run_command", {"cmd": "cat", "args": ["/tmp/made-here"]}, call_id="toolu_09")
        model.script(check, lambda b: (seen.setdefault("second", result_text(last_tool_result(b))),
                                       claude_text("it is still there"))[1])
        second = say(d, s, "second")
        assert not model.errors, model.errors
        roles = [m["role"] for m in seen["messages"]]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
        assert seen["messages"][1]["content"][0]["type"] == "tool_use"
        assert made in result_text(seen["messages"][2]["content"][0])
        assert made in seen["second"]
        listed = d.req("GET", f"/default/v1/sessions/{s['id']}/events").json()["data"]
        assert [e["id"] for e in listed] == [e["id"] for e in first["events"] + second["events"]]
        # a daemon killed while its loop waits on the model: the next one
        # records the loop failed, and the session answers again
        model.script(lambda b: (time.sleep(4), claude_text("never seen"))[1])
        def third():
            try:
                d.req("POST", f"/default/v1/sessions/{s['id']}/events", json={"content": "third"}, timeout=30)
            except requests.ConnectionError:
                pass  # the daemon is killed under it
        th = threading.Thread(target=third)
        th.start()
        time.sleep(1)
        d.kill9()
        th.join()
        d.start(env=daemon_env(model))
        got = d.req("GET", f"/default/v1/sessions/{s['id']}").json()
        assert got["status"] == "idle"
        events = d.req("GET", f"/default/v1/sessions/{s['id']}/events").json()["data"]
        assert events[-1]["type"] == "failed" and "restarted" in events[-1]["reason"]
        model.script(lambda b: claude_text("back"))
        assert say(d, s, "fourth")["events"][-2]["content"] == "back"
        d.req("DELETE", f"/default/v1/sessions/{s['id']}")
    finally:
        d.cleanup()
        d.stop()


def test_seed_example_as_written(sbxd, model):
    """Seed 000's example, its code as written, against the test daemon
    and the scripted model; the model draws a chart in the sandbox."""
    BASE = sbxd.url
    HEADERS = {"Authorization": f"Bearer {sbxd.key}"}

    chart_code = (
        "import pandas as pd\n"
        "import matplotlib\n"
        "import matplotlib.pyplot as plt\n"
        "df = pd.read_csv('/workspace/sales.csv')\n"
        "print(df['amount'].sum())\n"
        "df.plot(x='month', y='amount')\n"
        "plt.show()\n")
    seen = {}

    def first(body):
        assert body["model"] == "claude-sonnet-4" and "data analyst" in body["system"]
        return claude_tool("run_code", {"language": "python", "code": chart_code})

    def second(body):
        res = last_tool_result(body)
        seen["result"] = res
        return claude_text("Total sales are 60; the chart is above.")
    model.script(first, second)

    # --- the seed's code ---
    # Create an agent with sandbox access
    agent = requests.post(f"{BASE}/default/v1/agents", headers=HEADERS, json={
        "name": "Data Analyst",
        "model": {"name": "claude-sonnet-4"},
        "system": """You are a data analyst. When users ask questions about data,
write Python code to analyze it and execute it in your sandbox.
Always show your work and explain the results.""",
        "tools": [{"type": "mcp", "server": "code-exec"}]
    }).json()

    # Create a session with a sandbox environment
    session = requests.post(f"{BASE}/default/v1/sessions", headers=HEADERS, json={
        "agent_id": agent["id"],
        "environment": {
            "template_id": "code_interpreter",
            "timeout": 600
        }
    }).json()
    # --- (the user's data, put where the message says) ---
    sbxd.write(session["sandbox_id"], "/workspace/sales.csv", "month,amount\n1,10\n2,20\n3,30\n")

    # Now the agent can execute code in its sandbox
    response = requests.post(
        f"{BASE}/default/v1/sessions/{session['id']}/events",
        headers=HEADERS,
        json={
            "type": "message",
            "role": "user",
            "content": "Analyze the sales data in /workspace/sales.csv and create a chart"
        }
    ).json()
    # --- end of the seed's code ---

    assert not model.errors, model.errors
    types = [e["type"] for e in response["events"]]
    assert types == ["message", "tool_call", "tool_result", "message", "done"], response
    tr = response["events"][2]
    assert tr["is_error"] is False, tr
    assert "60" in (tr["stdout"] or tr["text"])
    assert tr["images"] and tr["images"][0]["media_type"] == "image/png"
    assert base64.b64decode(tr["images"][0]["data"])[:8] == b"\x89PNG\r\n\x1a\n"
    # the model got the chart as an image block
    imgs = [p for p in seen["result"]["content"] if p["type"] == "image"]
    assert imgs and imgs[0]["source"]["media_type"] == "image/png"
    assert response["events"][3]["content"].startswith("Total sales are 60")
    requests.delete(f"{BASE}/default/v1/sessions/{session['id']}", headers=HEADERS)
