"""The MCP server at /mcp (Streamable HTTP).

test_sdk runs tests/mcp/mcp.test.mjs, the official MCP TypeScript SDK
(@modelcontextprotocol/sdk, pinned with its lock file, installed with
`npm ci` when node_modules is missing) against a fresh daemon: tools,
run_command, run_code with a chart, files, sandboxes, tool errors, and a
second organisation that cannot reach the first's sandboxes.
test_sdk_stdio runs tests/mcp/stdio.test.mjs: the SDK's
StdioClientTransport spawns `build/sbx mcp`, and the same calls go over
stdio through it.  The other
tests speak HTTP to /mcp themselves, for what a well-behaved client never
sends.
"""
import os
import subprocess

import pytest
import requests

from conftest import node_tool, npm_ci

HERE = os.path.dirname(os.path.abspath(__file__))
MCP_DIR = os.path.join(HERE, "mcp")
SBX = os.environ.get("SBX_BIN") or os.path.join(os.path.dirname(HERE), "build", "sbx")  # SBX_BIN: a sanitizer build
NODE_TIMEOUT = 300
SESSIONS_PER_ORG = 32  # MCP_SESSIONS_PER_ORG in src/api/mcp.c
ACCEPT = "application/json, text/event-stream"


def _tail(text, limit=40000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _node_test(sbxd, script, **extra):
    node_tool("node")
    npm_ci(MCP_DIR)
    env = dict(os.environ, SBXD_URL=sbxd.url, SBXD_API_KEY=sbxd.key,
               SBXD_API_KEY_OTHER=sbxd.new_key(org="mcp-other"), NO_COLOR="1", **extra)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    cmd = [node_tool("node"), "--test", "--test-reporter=spec", script]
    try:
        r = subprocess.run(cmd, cwd=MCP_DIR, env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT)
        out, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, code = str(e.stdout or "") + str(e.stderr or ""), f"timeout after {NODE_TIMEOUT} s"
    if code != 0:
        pytest.fail(f"`node --test {script}` failed ({code}):\n{_tail(out)}\n"
                    f"--- sbxd log (tail) ---\n{_tail(sbxd.logs(), 8000)}", pytrace=False)


def test_sdk(sbxd):
    _node_test(sbxd, "mcp.test.mjs")


def test_sdk_stdio(sbxd):
    """The SDK's StdioClientTransport spawns `sbx mcp` (as a desktop agent
    does), with SBXD_URL and SBXD_API_KEY in its environment."""
    assert os.access(SBX, os.X_OK), f"{SBX} is not built"
    _node_test(sbxd, "stdio.test.mjs", SBX=SBX)


# ---- HTTP ----

def post(sbxd, body, key=None, session=None, raw=None, headers=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    if key is not False:
        h["Authorization"] = f"Bearer {key or sbxd.key}"
    if session:
        h["Mcp-Session-Id"] = session
        h["MCP-Protocol-Version"] = "2025-06-18"
    h.update(headers or {})
    return requests.post(sbxd.url + "/mcp", json=body if raw is None else None, data=raw, headers=h, timeout=60)


def initialize(sbxd, key=None, version="2025-06-18"):
    r = post(sbxd, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": version, "capabilities": {},
                               "clientInfo": {"name": "pytest", "version": "1"}}}, key=key)
    return r


def session(sbxd, key=None):
    r = initialize(sbxd, key)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert post(sbxd, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key=key,
                session=sid).status_code == 202
    return sid


def rpc_error(r, status, code):
    assert r.status_code == status, r.text
    j = r.json()
    assert j["jsonrpc"] == "2.0" and j["error"]["code"] == code, j
    return j


def test_without_a_key_401(sbxd):
    r = post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, key=False)
    j = rpc_error(r, 401, -32000)
    assert j["id"] is None
    assert "Mcp-Session-Id" not in r.headers
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, key="sk-sb-nosuchkey"), 401, -32000)
    # X-API-Key is a key too
    r = requests.post(sbxd.url + "/mcp", headers={"X-API-Key": sbxd.key, "Accept": ACCEPT},
                      json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18"}}, timeout=30)
    assert r.status_code == 200 and len(r.headers["Mcp-Session-Id"]) == 32


def test_initialize_negotiates_the_version(sbxd):
    r = initialize(sbxd, version="2025-03-26")
    assert r.json()["result"]["protocolVersion"] == "2025-03-26"
    r = initialize(sbxd, version="2099-01-01")
    assert r.json()["result"]["protocolVersion"] == "2025-06-18"
    assert r.json()["id"] == 0
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": "i", "method": "initialize", "params": {}}), 200, -32602)


def test_bad_json_rpc(sbxd):
    sid = session(sbxd)
    j = rpc_error(post(sbxd, None, session=sid, raw=b'{"jsonrpc": "2.0", "id": 1, "method": '), 400, -32700)
    assert j["id"] is None
    rpc_error(post(sbxd, None, session=sid, raw=b'\xff\xfe'), 400, -32700)
    rpc_error(post(sbxd, None, session=sid, raw=b'{"id": 1, "id": 2, "jsonrpc": "2.0", "method": "ping"}'), 400, -32700)
    # batches are gone since 2025-06-18
    rpc_error(post(sbxd, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], session=sid), 400, -32600)
    for bad in ("ping", 42, None, {"jsonrpc": "1.0", "id": 1, "method": "ping"}, {"id": 1, "method": "ping"},
                {"jsonrpc": "2.0", "id": True, "method": "ping"}, {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
                {"jsonrpc": "2.0", "id": 1, "method": 7}, {"jsonrpc": "2.0", "id": 1, "method": ""},
                {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}):
        rpc_error(post(sbxd, None, session=sid, raw=__import__("json").dumps(bad)), 400, -32600)
    j = rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": "x", "method": "tools/call", "params": [1]}, session=sid),
                  200, -32602)
    assert j["id"] == "x"
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}},
                   session=sid), 200, -32602)
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "run_command", "arguments": [1]}}, session=sid), 200, -32602)
    # wrong media types
    r = post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid, headers={"Content-Type": "text/plain"})
    rpc_error(r, 415, -32000)
    r = post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid, headers={"Accept": "text/html"})
    rpc_error(r, 406, -32000)
    r = post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid,
             headers={"MCP-Protocol-Version": "1900-01-01"})
    rpc_error(r, 400, -32000)
    # the session still works
    r = post(sbxd, {"jsonrpc": "2.0", "id": 9, "method": "ping"}, session=sid)
    assert r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": 9, "result": {}}


def test_unknown_method(sbxd):
    sid = session(sbxd)
    for m in ("resources/list", "prompts/list", "nope", "tools/list/x"):
        j = rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 7, "method": m}, session=sid), 200, -32601)
        assert j["id"] == 7
    # notifications of any name, and responses, are taken without an answer
    for msg in ({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
                {"jsonrpc": "2.0", "method": "whatever"},
                {"jsonrpc": "2.0", "id": 5, "result": {}}):
        r = post(sbxd, msg, session=sid)
        assert r.status_code == 202 and r.content == b"", r.text


def test_sessions(sbxd):
    # no session header, an unknown one, another organisation's
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), 400, -32000)
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session="0" * 32), 404, -32001)
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session="x"), 404, -32001)
    sid = session(sbxd)
    other = sbxd.new_key(org="mcp-sessions-other")
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, key=other, session=sid), 404, -32001)
    assert post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session=sid).status_code == 200
    # GET opens no stream here; DELETE ends the session
    h = {"Authorization": f"Bearer {sbxd.key}", "Mcp-Session-Id": sid, "Accept": "text/event-stream"}
    r = requests.get(sbxd.url + "/mcp", headers=h, timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "POST, DELETE"
    r = requests.delete(sbxd.url + "/mcp", headers={**h, "Authorization": f"Bearer {other}"}, timeout=30)
    rpc_error(r, 404, -32001)
    assert requests.delete(sbxd.url + "/mcp", headers=h, timeout=30).status_code == 204
    rpc_error(post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session=sid), 404, -32001)
    rpc_error(requests.delete(sbxd.url + "/mcp", headers=h, timeout=30), 404, -32001)


def test_too_many_sessions(sbxd):
    key = sbxd.new_key(org="mcp-many")
    sids = [session(sbxd, key) for _ in range(SESSIONS_PER_ORG)]
    assert len(set(sids)) == SESSIONS_PER_ORG
    j = rpc_error(initialize(sbxd, key), 429, -32000)
    assert "too many MCP sessions" in j["error"]["message"]
    # another organisation is not held back by this one
    assert initialize(sbxd, sbxd.new_key(org="mcp-many-other")).status_code == 200
    # ending one makes room for one
    h = {"Authorization": f"Bearer {key}", "Mcp-Session-Id": sids[0]}
    assert requests.delete(sbxd.url + "/mcp", headers=h, timeout=30).status_code == 204
    assert initialize(sbxd, key).status_code == 200
    rpc_error(initialize(sbxd, key), 429, -32000)
    # the sessions still open still work
    assert post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, key=key, session=sids[-1]).status_code == 200


def test_sse_answer_and_origin(sbxd):
    sid = session(sbxd)
    r = post(sbxd, {"jsonrpc": "2.0", "id": 4, "method": "ping"}, session=sid,
             headers={"Accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert r.text == 'event: message\ndata: {"jsonrpc":"2.0","id":4,"result":{}}\n\n'
    # DNS rebinding: a page of another site is refused, loopback pages are not
    r = post(sbxd, {"jsonrpc": "2.0", "id": 4, "method": "ping"}, session=sid,
             headers={"Origin": "http://evil.example"})
    rpc_error(r, 403, -32000)
    r = post(sbxd, {"jsonrpc": "2.0", "id": 4, "method": "ping"}, session=sid,
             headers={"Origin": "http://localhost:6274"})
    assert r.status_code == 200


def test_tool_errors_over_http(sbxd):
    sid = session(sbxd)

    def call(name, args):
        r = post(sbxd, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": name, "arguments": args}}, session=sid)
        assert r.status_code == 200, r.text
        return r.json()["result"]

    for name, args, text in (
            ("run_command", {"sandbox_id": "sbx" + "0" * 20, "cmd": "true"}, "not found"),
            ("run_command", {"sandbox_id": "../../etc", "cmd": "true"}, "not found"),
            ("run_command", {"sandbox_id": "x" * 5000, "cmd": "true"}, "not found"),
            ("read_file", {"sandbox_id": 7, "path": "a"}, "sandbox_id must be a string"),
            ("write_file", {"path": "a", "content": "b"}, "sandbox_id is required"),
            ("create_sandbox", {"timeout": 10 ** 9}, "timeout must be between"),
            ("create_sandbox", {"template": "base", "timeout": 7200}, "timeout"),
            ("nope", {}, "unknown tool")):
        res = call(name, args)
        assert res["isError"] is True, (name, res)
        assert text in res["content"][0]["text"], (name, res)
