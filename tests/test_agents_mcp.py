"""Agents' remote MCP servers: tools {type:"mcp", url, name, headers}.

A scripted MCP server on loopback (Streamable HTTP, 2025-06-18: JSON
answers for initialize, SSE streams for tools/list and tools/call, a
session id) serves tools that echo, fail and hang.  Loopback is a range
the platform denies, so the server is refused as a webhook's URL is: at
the agent's creation (a literal address) and at the first use after the
operator closed the range again.  With `--outbound-allow 127.0.0.1/32`
the scripted model is offered the server's tools as NAME__TOOL, calls
them, and gets their results, errors and time-outs as tool results while
the session goes on."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Sbxd
from test_agents import ScriptedModel, claude_text, claude_tool, daemon_env, last_tool_result, of_type, result_text

TEMPLATE = "base"
ALLOW = ["--outbound-allow", "127.0.0.1/32"]
MCP_TIMEOUT_S = 2
TOOLS = [
    {"name": "echo", "description": "Echo the text back.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "fail", "description": "Always fails.", "inputSchema": {"type": "object"}},
    {"name": "hang", "description": "Never answers in time.", "inputSchema": {"type": "object"}},
    {"name": "soft.error", "description": "A tool error (isError).", "inputSchema": {"type": "object"}},
    {"name": "forget", "description": "Forgets the MCP session.", "inputSchema": {"type": "object"}},
    # not offered: a schema over the bound, a schema that is not an object
    {"name": "huge", "inputSchema": {"type": "object", "description": "x" * 20000}},
    {"name": "odd", "inputSchema": {"type": "string"}},
]


class ScriptedMcp:
    """An MCP server on loopback speaking Streamable HTTP at /mcp."""

    def __init__(self):
        self.requests = []        # (method, path, headers, body or None)
        self.sessions = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body=None, sse=False, headers=()):
                data = b""
                if body is not None:
                    msg = json.dumps(body)
                    # an SSE answer starts with a notification, as servers may
                    data = (": hello\n\nevent: message\ndata: " + json.dumps(
                        {"jsonrpc": "2.0", "method": "notifications/message",
                         "params": {"level": "info", "data": "working"}}) +
                        "\n\nevent: message\ndata: " + msg + "\n\n").encode() if sse else msg.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_DELETE(self):
                srv.requests.append(("DELETE", self.path, dict(self.headers), None))
                self.reply(200)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                srv.requests.append(("POST", self.path, dict(self.headers), body))
                method, rid = body.get("method"), body.get("id")
                if method == "initialize":
                    srv.sessions += 1
                    return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                        "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "scripted", "version": "1"}}},
                        headers=[("Mcp-Session-Id", f"sess-{srv.sessions}")])
                if self.headers.get("Mcp-Session-Id") != f"sess-{srv.sessions}":
                    return self.reply(404, {"jsonrpc": "2.0", "id": None,
                                            "error": {"code": -32001, "message": "Session not found"}})
                if method == "notifications/initialized":
                    return self.reply(202)
                if method == "tools/list":
                    return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}}, sse=True)
                if method == "tools/call":
                    name, args = body["params"]["name"], body["params"].get("arguments", {})
                    if name == "echo":
                        text = (f"echo: {args.get('text')} auth={self.headers.get('Authorization')} "
                                f"version={self.headers.get('MCP-Protocol-Version')}")
                        return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                            "content": [{"type": "text", "text": text}], "isError": False}}, sse=True)
                    if name == "fail":
                        return self.reply(200, {"jsonrpc": "2.0", "id": rid,
                                                "error": {"code": -32603, "message": "backend exploded"}})
                    if name == "forget":  # as a restarted server does
                        srv.sessions += 1
                        return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                            "content": [{"type": "text", "text": "forgotten"}]}})
                    if name == "soft.error":
                        return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                            "content": [{"type": "text", "text": "no such row"}], "isError": True}})
                    if name == "hang":
                        time.sleep(MCP_TIMEOUT_S + 3)
                        return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {"content": []}})
                self.reply(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "unknown"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def model():
    m = ScriptedModel()
    yield m
    m.close()


@pytest.fixture(scope="module")
def mcp():
    s = ScriptedMcp()
    yield s
    s.close()


def env(model):
    return daemon_env(model, SBXD_MCP_TIMEOUT_S=str(MCP_TIMEOUT_S))


@pytest.fixture(scope="module")
def allowing(tmp_path_factory, model):
    d = Sbxd(str(tmp_path_factory.mktemp("sbxd") / "state")).start(env=env(model), args=ALLOW)
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


def agent(d, tools, expect=201):
    r = d.req("POST", "/default/v1/agents", json={"name": "remote", "model": {"name": "claude-sonnet-4"},
                                                  "tools": tools})
    assert r.status_code == expect, r.text
    return r.json()


def session(d, a):
    r = d.req("POST", "/default/v1/sessions", json={"agent_id": a["id"], "environment": {"template_id": TEMPLATE}})
    assert r.status_code == 201, r.text
    return r.json()


def say(d, s, content):
    r = d.req("POST", f"/default/v1/sessions/{s['id']}/events", json={"content": content}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_refused_at_creation_and_at_first_use_unless_opened(tmp_path, model, mcp):
    d = Sbxd(str(tmp_path / "state")).start(env=env(model), args=ALLOW)
    # this host's name: it resolves to loopback or to one of this host's
    # addresses, which the guard refuses as well, but only when it resolves
    host = socket.gethostname()
    by_name = mcp.url.replace("127.0.0.1", host)
    try:
        a = agent(d, [{"type": "mcp", "url": mcp.url, "name": "remote"},
                      {"type": "mcp", "url": by_name, "name": "byname"}])
        s = session(d, a)
        # the operator closes the range: the next message cannot reach the
        # server, says why, and the loop goes on without its tools
        d.stop()
        d.start(env=env(model))
        for url, why in [(mcp.url, "tools[0].url: 127.0.0.1 is a loopback address: refused"),
                         ("http://localhost:1/mcp", "tools[0].url: localhost is a loopback name: refused"),
                         ("http://169.254.169.254/mcp", "the cloud metadata address: refused"),
                         ("ftp://example.com/mcp", "only http and https URLs are allowed")]:
            r = d.req("POST", "/default/v1/agents", json={"name": "x", "model": {"name": "claude-sonnet-4"},
                                                          "tools": [{"type": "mcp", "url": url}]})
            assert r.status_code == 400 and why in r.json()["message"], r.text
        seen = {}
        model.script(lambda b: (seen.setdefault("tools", b.get("tools", [])), claude_text("no tools"))[1])
        before = len(mcp.requests)
        out = say(d, s, "hello")
        assert not model.errors, model.errors
        errors = of_type(out["events"], "mcp_server_error")
        assert [e["server"] for e in errors] == ["remote", "byname"], out
        assert "127.0.0.1 is a loopback address: refused" in errors[0]["reason"]
        # the addresses a name resolves to are not shown (the daemon's log has them)
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror:
            assert f"cannot resolve {host}" in errors[1]["reason"]
        else:
            assert errors[1]["reason"] == f"initialize: {host}: refused (it resolves to an address the platform denies)"
            assert f"{host} resolves to" in d.logs()
        assert seen["tools"] == [] and out["stop_reason"] == "end_turn"
        assert len(mcp.requests) == before  # nothing was sent
        d.req("DELETE", f"/default/v1/sessions/{s['id']}")
    finally:
        d.cleanup()
        d.stop()


def test_agent_definitions_of_remote_servers(allowing, mcp):
    a = agent(allowing, [{"type": "mcp", "server": "code-exec"},
                         {"type": "mcp", "url": mcp.url, "headers": {"Authorization": "Bearer s3cret"}}])
    # the name defaults to the host's; header values are never shown
    assert a["tools"][1] == {"type": "mcp", "url": mcp.url, "name": "127-0-0-1",
                             "headers": {"Authorization": "<redacted>"}}
    assert "s3cret" not in allowing.req("GET", f"/default/v1/agents/{a['id']}").text
    bad = [
        ([{"type": "mcp", "url": mcp.url, "server": "code-exec"}], "not both"),
        ([{"type": "mcp", "url": mcp.url, "name": "a__b"}], "tools[0].name"),
        ([{"type": "mcp", "url": mcp.url, "name": "code-exec"}], "another tool is named"),
        ([{"type": "mcp", "url": mcp.url, "name": "x"}, {"type": "mcp", "url": mcp.url, "name": "x"}],
         "another tool is named"),
        ([{"type": "mcp", "url": mcp.url, "headers": {"Mcp-Session-Id": "x"}}], "set by the daemon"),
        ([{"type": "mcp", "url": mcp.url, "headers": {"X-A": "a\r\nHost: evil"}}], "one line"),
        ([{"type": "mcp", "url": 7}], "tools[0].url"),
        ([{"type": "mcp", "url": mcp.url, "name": f"s{i}"} for i in range(5)], "at most 4 remote MCP servers"),
        ([{"type": "mcp", "server": "other"}], "other MCP servers are given by \"url\""),
    ]
    for tools, msg in bad:
        r = allowing.req("POST", "/default/v1/agents", json={"name": "x", "model": {"name": "claude-sonnet-4"},
                                                             "tools": tools})
        assert r.status_code == 400 and msg in r.json()["message"], (tools, r.text)


def test_remote_tools_are_offered_called_and_their_failures_are_tool_errors(allowing, model, mcp):
    a = agent(allowing, [{"type": "mcp", "url": mcp.url, "name": "remote",
                          "headers": {"Authorization": "Bearer s3cret"}}])
    s = session(allowing, a)
    seen = {}

    def first(body):
        seen["tools"] = {t["name"]: t for t in body["tools"]}
        return claude_tool("remote__echo", {"text": "hi there"}, call_id="toolu_1")

    def step(name, key, call_id):
        def f(body):
            seen[key] = last_tool_result(body)
            return claude_tool(name, {}, call_id=call_id)
        return f

    def last(body):
        seen["hang"] = last_tool_result(body)
        return claude_text("all done")
    model.script(first, step("remote__forget", "echo", "toolu_2"), step("remote__fail", "forget", "toolu_3"),
                 step("remote__soft_error", "fail", "toolu_4"), step("remote__hang", "soft", "toolu_5"), last)
    before = len(mcp.requests)
    t0 = time.monotonic()
    out = say(allowing, s, "use the remote tools")
    took = time.monotonic() - t0
    assert not model.errors, model.errors
    # offered: the server's tools, namespaced, within the bounds; no built-in ones
    assert sorted(seen["tools"]) == ["remote__echo", "remote__fail", "remote__forget", "remote__hang",
                                     "remote__soft_error"]
    assert seen["tools"]["remote__echo"]["input_schema"] == TOOLS[0]["inputSchema"]
    assert seen["tools"]["remote__echo"]["description"] == "Echo the text back."
    # the echo: through an SSE answer, with the agent's header and the protocol version
    assert not seen["echo"].get("is_error")
    assert result_text(seen["echo"]) == "echo: hi there auth=Bearer s3cret version=2025-06-18"
    assert result_text(seen["forget"]) == "forgotten"
    # a JSON-RPC error (after the forgotten session was opened again), a
    # tool's own error and a time-out: tool errors
    assert seen["fail"]["is_error"] is True and "backend exploded" in result_text(seen["fail"])
    assert "MCP server remote" in result_text(seen["fail"])
    assert seen["soft"]["is_error"] is True and result_text(seen["soft"]) == "no such row"
    assert seen["hang"]["is_error"] is True and f"no answer within {MCP_TIMEOUT_S}" in result_text(seen["hang"])
    assert took < 60
    assert out["stop_reason"] == "end_turn" and out["events"][-2]["content"] == "all done"
    calls = of_type(out["events"], "tool_call")
    assert [(c["name"], c["server"]) for c in calls] == [
        ("remote__echo", "remote"), ("remote__forget", "remote"), ("remote__fail", "remote"),
        ("remote__soft_error", "remote"), ("remote__hang", "remote")]
    results = of_type(out["events"], "tool_result")
    assert [r["is_error"] for r in results] == [False, False, True, True, True]
    assert results[0]["server"] == "remote" and "echo: hi there" in results[0]["text"]
    # the server saw an MCP session (initialize, initialized, list, calls),
    # a call in the forgotten one (404), a new session for it, and its end
    sent = mcp.requests[before:]
    methods = [(m, b and b.get("method")) for m, _, _, b in sent]
    call = ("POST", "tools/call")
    assert methods == [("POST", "initialize"), ("POST", "notifications/initialized"), ("POST", "tools/list"),
                       call, call, call, ("POST", "initialize"), ("POST", "notifications/initialized"),
                       call, call, call, ("DELETE", None)], methods
    first_sid, second_sid = sent[1][2]["Mcp-Session-Id"], sent[7][2]["Mcp-Session-Id"]
    assert first_sid != second_sid and "Mcp-Session-Id" not in sent[6][2]
    assert [h.get("Mcp-Session-Id") for _, _, h, _ in sent[1:6]] == [first_sid] * 5
    assert [h.get("Mcp-Session-Id") for _, _, h, _ in sent[7:]] == [second_sid] * 5
    assert sent[8][3]["params"]["name"] == sent[5][3]["params"]["name"] == "fail"  # sent again
    assert all(h.get("MCP-Protocol-Version") == "2025-06-18" for _, _, h, _ in sent[1:6] + sent[7:])
    assert all(h.get("Authorization") == "Bearer s3cret" for _, _, h, _ in sent)
    assert "text/event-stream" in sent[0][2]["Accept"] and "application/json" in sent[0][2]["Accept"]
    # the session goes on
    model.script(lambda b: claude_text("still here"))
    assert say(allowing, s, "again")["events"][-2]["content"] == "still here"
    allowing.req("DELETE", f"/default/v1/sessions/{s['id']}")


def test_a_server_that_cannot_be_reached(allowing, model):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening
    try:
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/mcp"
        a = agent(allowing, [{"type": "mcp", "server": "code-exec"}, {"type": "mcp", "url": url, "name": "gone"}])
        s = session(allowing, a)
        seen = {}
        model.script(lambda b: (seen.setdefault("tools", [t["name"] for t in b["tools"]]), claude_text("ok"))[1])
        out = say(allowing, s, "hello")
        assert not model.errors, model.errors
        err = of_type(out["events"], "mcp_server_error")
        assert len(err) == 1 and err[0]["server"] == "gone" and "initialize" in err[0]["reason"], out
        assert "run_command" in seen["tools"] and not any(t.startswith("gone__") for t in seen["tools"])
        assert out["stop_reason"] == "end_turn"
        allowing.req("DELETE", f"/default/v1/sessions/{s['id']}")
    finally:
        closed.close()
