"""Seed 004's terminal: an interactive PTY shell over a WebSocket, driven by
a real WebSocket client (python3-websockets) against a real daemon.

The terminalUrl comes from the sandbox object of GET /v1/sandboxes?id=
when this server has it, otherwise from POST /v1/sandboxes/terminal
{id}, which gives a fresh one (docs/api.md).  Sandboxes are made through
the E2B-compatible API (POST /sandboxes), the dialect-neutral way to get
one here.
"""
import asyncio
import json
import re
import time
import urllib.parse

import pytest
import requests
import websockets

from conftest import Sbxd


def terminal_url(sbxd, sid):
    r = sbxd.req("GET", "/v1/sandboxes", params={"id": sid})
    if r.status_code == 200 and isinstance(r.json().get("terminalUrl"), str):
        return r.json()["terminalUrl"]
    r = sbxd.req("POST", "/v1/sandboxes/terminal", json={"id": sid})
    assert r.status_code == 200, r.text
    return r.json()["terminalUrl"]


def with_query(url, **changes):
    """URL with its query parameters changed (None removes one)."""
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def http_url(ws_url):
    return "http" + ws_url[2:]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Term:
    """One open terminal and what it printed so far."""

    def __init__(self, ws):
        self.ws = ws
        self.out = b""

    async def until(self, pattern, timeout=10):
        """Read until PATTERN (bytes regex) is in the output; its match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.out)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen in {self.out[-500:]!r}")
            try:
                msg = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            self.out += msg if isinstance(msg, bytes) else msg.encode()

    async def type(self, text):
        await self.ws.send(text)


async def closed_code(ws, timeout=10):
    """Read until the server closes; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


def refused(url):
    """The status and body of a terminal URL refused before the upgrade."""
    async def go():
        try:
            async with websockets.connect(url):
                pass
        except websockets.InvalidStatusCode as e:
            return e.status_code
        raise AssertionError("the upgrade was accepted")
    status = run(go())
    got = refused_http(url)
    assert got[0] == status
    return got


def refused_http(url):
    """The same, asked with requests (the answer's body)."""
    r = requests.get(http_url(url), headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                              "Sec-WebSocket-Version": "13",
                                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
                     timeout=30)
    return r.status_code, r.json()


def procs(sbxd, sid):
    return sbxd.sh(sid, "ps -eo args")["stdout"]


def test_echo_round_trip_and_url(sbxd, sandbox):
    url = terminal_url(sbxd, sandbox)
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/v1/sandboxes/terminal\?id=sbx[a-z0-9]{20}&token=\d+\.[0-9a-f]{64}", url)
    assert f"id={sandbox}&" in url

    async def go():
        async with websockets.connect(url) as ws:
            t = Term(ws)
            await t.type("echo round$((6*7))trip\r")            # a text frame is typed
            await t.until(rb"round42trip")
            await ws.send(b"whoami; echo bin$((1+1))ary\r")     # so is a binary one
            await t.until(rb"bin2ary")
            assert b"user\r\n" in t.out                          # the template's default user
            await t.type("exit\r")
            return await closed_code(ws)
    # the shell exiting closes the socket normally
    assert run(go()) == 1000


def test_wss_behind_tls_proxy(sbxd, sandbox):
    r = sbxd.req("POST", "/v1/sandboxes/terminal", json={"id": sandbox},
                 headers={"X-Forwarded-Proto": "https", "Host": "sbx.example.com"})
    assert r.status_code == 200, r.text
    assert r.json()["terminalUrl"].startswith("wss://sbx.example.com/v1/sandboxes/terminal?id=")
    assert r.json()["expiresAt"] > time.time() * 1000


def test_full_screen_program(sbxd, sandbox):
    async def go():
        async with websockets.connect(terminal_url(sbxd, sandbox)) as ws:
            t = Term(ws)
            await t.type(json.dumps({"type": "resize", "cols": 90, "rows": 20}))
            await t.type("watch -n 0.2 'echo ti$((6*7))ck; tput cols lines'\r")  # ncurses, full screen
            await t.until(rb"\x1b\[\?1049h")        # the alternate screen
            await t.until(rb"(?s)ti42ck.{0,20}90.{0,20}20")
            await t.type("\x03")                     # ^C
            await t.until(rb"\x1b\[\?1049l")        # back
            await t.type("echo after$((2+3))watch\r")
            await t.until(rb"after5watch")
    run(go())


def test_resize(sbxd, sandbox):
    async def go():
        async with websockets.connect(terminal_url(sbxd, sandbox)) as ws:
            t = Term(ws)
            await t.type(json.dumps({"type": "resize", "cols": 111, "rows": 33}))
            await t.type("stty size\r")
            await t.until(rb"\r33 111\r\n")
            # a resize that is not valid is dropped, not typed
            await t.type('{"type":"resize","cols":0,"rows":5}')
            await t.type('{"type":"resize","cols":"80","rows":5}')
            await t.type("stty size; echo resized\r")
            await t.until(rb"\r33 111\r\nresized\r\n")
            assert b'"type"' not in t.out
            # any other text, JSON or not, is typed
            await t.type('{"type":"other"}\r')
            await t.until(rb'(?s)\$ \{"type":"other"\}\r\n.*\{type:other\}: command not found')
    run(go())


def test_closing_the_socket_ends_the_shell(sbxd, sandbox):
    async def go():
        async with websockets.connect(terminal_url(sbxd, sandbox)) as ws:
            t = Term(ws)
            await t.type("sleep 4242 & setsid sleep 4343 & echo start$((1))ed; sleep 4444\r")
            await t.until(rb"start1ed")
            deadline = time.monotonic() + 10
            while "sleep 4444" not in procs(sbxd, sandbox) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            ps = procs(sbxd, sandbox)
            assert "/bin/bash -l" in ps and "sleep 4242" in ps and "sleep 4343" in ps and "sleep 4444" in ps
    run(go())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ps = procs(sbxd, sandbox)
        if not re.search(r"/bin/bash -l|sleep 4[234]4[234]", ps):
            break
        time.sleep(0.1)
    assert not re.search(r"/bin/bash -l|sleep 4[234]4[234]", ps), ps


def test_ping_and_oversized_message(sbxd, sandbox):
    async def go():
        async with websockets.connect(terminal_url(sbxd, sandbox), max_size=None) as ws:
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 10)
            await ws.send(b"x" * (64 * 1024 + 1))
            return await closed_code(ws)
    assert run(go()) == 1009  # message too big


def test_another_sandboxes_token_is_refused(sbxd, sandbox):
    other = sbxd.create()
    try:
        mine, theirs = terminal_url(sbxd, sandbox), terminal_url(sbxd, other)
        token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(theirs).query))["token"]
        status, body = refused(with_query(mine, token=token))
        assert (status, body) == (403, {"error": "Terminal token is not valid for this sandbox"})
    finally:
        sbxd.delete(other)


def test_bad_tokens(sbxd, sandbox):
    url = terminal_url(sbxd, sandbox)
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["token"]
    exp, mac = token.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    for bad, want in [
        (None, (401, "Missing or malformed terminal token")),
        ("", (401, "Missing or malformed terminal token")),
        ("nonsense", (401, "Missing or malformed terminal token")),
        (f"{exp}.{mac[:-2]}", (401, "Missing or malformed terminal token")),
        (f"{exp}.{flipped}", (403, "Terminal token is not valid for this sandbox")),
        (f"{int(exp) + 3600}.{mac}", (403, "Terminal token is not valid for this sandbox")),  # a longer life
        (f"{exp}.{mac.upper()}", (403, "Terminal token is not valid for this sandbox")),
    ]:
        status, body = refused(with_query(url, token=bad))
        assert (status, body) == (want[0], {"error": want[1]}), bad
    assert refused(with_query(url, id=None))[0] == 400
    assert refused(with_query(url, id="sbx_doesnotexist"))[0] == 403
    # the route takes no API key, and an API key is no token
    r = sbxd.req("GET", "/v1/sandboxes/terminal", params={"id": sandbox})
    assert r.status_code == 401 and r.json() == {"error": "Missing or malformed terminal token"}
    # a plain GET with a good token is told it is a WebSocket
    r = requests.get(http_url(url), timeout=30)
    assert r.status_code == 426 and "WebSocket" in r.json()["error"]
    # a fresh URL needs the sandbox's owner
    r = requests.post(sbxd.url + "/v1/sandboxes/terminal", json={"id": sandbox}, timeout=30)
    assert r.status_code == 401 and r.json() == {"error": "Invalid or missing API key"}
    r = sbxd.req("POST", "/v1/sandboxes/terminal", json={"id": "sbx_doesnotexist"})
    assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}


def test_expired_token(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--terminal-ttl", "1"])
    try:
        sid = d.create()
        url = terminal_url(d, sid)
        exp = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["token"].split(".")[0])
        assert exp <= time.time() + 2
        time.sleep(max(0, exp + 1.2 - time.time()))
        assert refused(url) == (401, {"error": "Terminal token has expired"})

        async def fresh():
            async with websockets.connect(terminal_url(d, sid)) as ws:
                await ws.send("echo fre$((5))sh\r")
                await Term(ws).until(rb"fre5sh")
        run(fresh())
        d.delete(sid)
    finally:
        d.stop()


def test_limit_per_sandbox(sbxd, sandbox):
    async def go():
        open_ = [await websockets.connect(terminal_url(sbxd, sandbox)) for _ in range(4)]
        try:
            for i, ws in enumerate(open_):
                await ws.send(f"echo term$(({i}+100))\r")
                await Term(ws).until(b"term%d" % (i + 100))
            try:
                await websockets.connect(terminal_url(sbxd, sandbox))
                raise AssertionError("a fifth terminal was opened")
            except websockets.InvalidStatusCode as e:
                assert e.status_code == 429
            status, body = refused_http(terminal_url(sbxd, sandbox))
            assert (status, body) == (429, {"error": "Too many terminals open in this sandbox (at most 4)"})
            # another sandbox is not affected
            other = sbxd.create()
            try:
                async with websockets.connect(terminal_url(sbxd, other)) as ws:
                    await ws.send("echo other$((1))\r")
                    await Term(ws).until(rb"other1")
            finally:
                sbxd.delete(other)
            # closing one frees its slot
            await open_.pop().close()
            deadline = time.monotonic() + 10
            while True:
                try:
                    ws = await websockets.connect(terminal_url(sbxd, sandbox))
                    open_.append(ws)
                    break
                except websockets.InvalidStatusCode as e:
                    assert e.status_code == 429 and time.monotonic() < deadline
                    await asyncio.sleep(0.1)
        finally:
            for ws in open_:
                await ws.close()
    run(go())


def test_paused_and_ended_sandboxes(sbxd):
    sid = sbxd.create()
    url = terminal_url(sbxd, sid)
    assert sbxd.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
    assert refused(url) == (409, {"error": "Sandbox is paused: resume it to open a terminal"})
    assert sbxd.req("POST", f"/sandboxes/{sid}/resume", json={}).status_code in (200, 201)

    async def go():
        async with websockets.connect(url) as ws:
            t = Term(ws)
            await t.type("echo back$((1))\r")
            await t.until(rb"back1")
            # the sandbox going away closes the terminal
            assert sbxd.delete(sid).status_code == 204
            return await closed_code(ws)
    assert run(go()) == 1001
    status, body = refused(url)
    assert status in (404, 409) and body["error"] in ("Sandbox not found", "Sandbox has ended")


def test_active_while_open(sbxd, sandbox):
    """Seed 004's "active": a sandbox with an open terminal is executing."""
    r = sbxd.req("GET", "/v1/sandboxes", params={"id": sandbox})
    if r.status_code != 200 or "status" not in r.json():
        pytest.skip("GET /v1/sandboxes?id= is not on this server")

    async def go():
        async with websockets.connect(terminal_url(sbxd, sandbox)) as ws:
            await ws.send("echo o$((1))pen\r")
            await Term(ws).until(rb"o1pen")
            return sbxd.req("GET", "/v1/sandboxes", params={"id": sandbox}).json()["status"]
    assert run(go()) == "active"
    deadline = time.monotonic() + 10
    while sbxd.req("GET", "/v1/sandboxes", params={"id": sandbox}).json()["status"] == "active":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_daemon_stop_closes_terminals(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create()

        async def go():
            async with websockets.connect(terminal_url(d, sid)) as ws:
                t = Term(ws)
                await t.type("sleep 4545 & echo st$((1))op\r")
                await t.until(rb"st1op")
                stopping = asyncio.get_running_loop().run_in_executor(None, d.stop)
                code = await closed_code(ws)
                await stopping
                return code
        assert run(go()) == 1001
        assert d.proc.returncode == 0, d.logs()[-2000:]
        # the sandbox lives on, without the shell or what it started
        d.start()
        ps = d.sh(sid, "ps -eo args")["stdout"]
        assert "sleep 4545" not in ps and "/bin/bash -l" not in ps, ps
        d.delete(sid)
    finally:
        d.stop()
