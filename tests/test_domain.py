"""Sandbox ports by host name (sbxd serve --domain D): PORT-ID.D reaches
PORT inside sandbox ID through the daemon, as E2B's getHost(PORT) does.

Names are never looked up: requests go to the daemon's loopback address
with the Host header (requests, raw sockets), or through curl --resolve
for HTTPS, so no resolver outside the machine is asked anything.
"""
import base64
import hashlib
import json
import os
import socket
import subprocess
import time

import pytest
import requests

from conftest import Sbxd, npm_ci

DOMAIN = "sbx.localhost"

# The server the tests start inside a sandbox: plain Python, no packages.
#   GET /hello        -> JSON of what it was sent (Host, X-Forwarded-*, the path)
#   POST /echo        -> the body back (Content-Length or chunked)
#   GET /stream?n=N   -> N lines, one every 0.3 s, chunked
#   GET /ws           -> a WebSocket that echoes every message
SERVER = r'''
import base64, hashlib, json, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            out = b""
            while True:
                n = int(self.rfile.readline().strip(), 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))
    def send(self, code, data, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.startswith("/stream"):
            n = int(self.path.split("n=")[1])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                line = ("line %d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/ws":
            return self.ws()
        seen = {"path": self.path, "host": self.headers.get("Host"),
                "xff": self.headers.get("X-Forwarded-For"), "xfh": self.headers.get("X-Forwarded-Host"),
                "token": self.headers.get("e2b-traffic-access-token"), "peer": self.client_address[0]}
        self.send(200, json.dumps(seen).encode())
    def do_POST(self):
        data = self.body()
        self.send(200, data, "application/octet-stream")
    def ws(self):
        key = self.headers["Sec-WebSocket-Key"]
        acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", acc.decode())
        self.end_headers()
        self.wfile.flush()
        r = self.rfile
        while True:
            h = r.read(2)
            if len(h) < 2:
                return
            op, n = h[0] & 15, h[1] & 127
            if n == 126:
                n = struct.unpack(">H", r.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", r.read(8))[0]
            mask = r.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            hdr = bytes([0x80 | op]) + (bytes([n]) if n < 126 else b"\x7e" + struct.pack(">H", n))
            self.wfile.write(hdr + data)
            self.wfile.flush()

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
'''


@pytest.fixture(scope="module")
def dsbxd(tmp_path_factory):
    d = tmp_path_factory.mktemp("domain")
    server = Sbxd(str(d / "state"))
    server.start(args=["--domain", DOMAIN])
    yield server
    try:
        server.cleanup()
    finally:
        server.stop()


def start_server(sbxd, sid, port=8000, bind="127.0.0.1"):
    sbxd.write(sid, "/tmp/server.py", SERVER)
    sbxd.run(sid, "python3", "/tmp/server.py", bind, str(port), background=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        r = sbxd.sh(sid, f"python3 -c 'import socket; socket.create_connection((\"{bind}\", {port}))'")
        if r["exitCode"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the server in the sandbox did not start")


@pytest.fixture(scope="module")
def box(dsbxd):
    """A public sandbox with the server on 127.0.0.1:8000."""
    sid = dsbxd.create()
    start_server(dsbxd, sid)
    yield sid
    dsbxd.delete(sid)


def host(sid, port=8000, sbxd=None):
    return f"{port}-{sid}.{DOMAIN}" + (f":{sbxd.port}" if sbxd else "")


def get(sbxd, sid, path="/hello", port=8000, headers=None, **kw):
    h = {"Host": host(sid, port, sbxd)}
    h.update(headers or {})
    return requests.get(sbxd.url + path, headers=h, timeout=30, **kw)


def test_http_get_reaches_a_server_on_the_sandbox_loopback(dsbxd, box):
    r = get(dsbxd, box, "/hello?q=a%20b&x=%2F+y")
    assert r.status_code == 200, r.text
    seen = r.json()
    # the request target exactly as sent, not decoded and re-encoded
    assert seen["path"] == "/hello?q=a%20b&x=%2F+y"
    # the Host as the client sent it; the client's address forwarded
    assert seen["host"] == host(box, 8000, dsbxd)
    assert seen["xff"] == "127.0.0.1"
    assert seen["xfh"] == host(box, 8000, dsbxd)
    assert seen["peer"] == "127.0.0.1"  # inside the sandbox: its own loopback
    # the answer's own headers come through
    assert r.headers["Content-Type"] == "application/json"


def test_create_answer_carries_the_domain(dsbxd, box):
    r = dsbxd.req("POST", f"/sandboxes/{box}/connect", json={})
    assert r.status_code in (200, 201), r.text
    j = r.json()
    assert j["domain"] == DOMAIN
    assert len(j["trafficAccessToken"]) == 64 and j["trafficAccessToken"] != j["envdAccessToken"]
    # shown as the create said it (E2B's SDK compares getInfo's network)
    assert "allowPublicTraffic" not in dsbxd.get(box).json()["network"]


def test_post_bodies_both_framings(dsbxd, box):
    data = os.urandom(3 << 20)  # more than the proxy's buffers
    r = requests.post(dsbxd.url + "/echo", data=data, headers={"Host": host(box, 8000, dsbxd)}, timeout=60)
    assert r.status_code == 200 and r.content == data

    def gen():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]
    r = requests.post(dsbxd.url + "/echo", data=gen(), headers={"Host": host(box, 8000, dsbxd)}, timeout=60)
    assert r.status_code == 200 and r.content == data


def test_answer_streams_as_the_server_writes(dsbxd, box):
    t0 = time.time()
    r = get(dsbxd, box, "/stream?n=6", stream=True)
    assert r.status_code == 200
    lines = r.iter_lines()
    first = next(lines)
    first_at = time.time() - t0
    rest = list(lines)
    total = time.time() - t0
    assert first == b"line 0" and rest == [b"line %d" % i for i in range(1, 6)]
    # the first line arrives long before the server's last (1.5 s later)
    assert first_at < 1.0 and total > 1.4, (first_at, total)


def ws_frame(data, op=1):
    mask = os.urandom(4)
    n = len(data)
    hdr = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else b"\xfe" + n.to_bytes(2, "big"))
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def read_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        assert b, "connection closed"
        out += b
    return out


def ws_read(s):
    h = read_exact(s, 2)
    n = h[1] & 127
    if n == 126:
        n = int.from_bytes(read_exact(s, 2), "big")
    return h[0] & 15, read_exact(s, n)


def test_websocket_echo(dsbxd, box):
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", dsbxd.port), timeout=10)
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host(box, 8000, dsbxd)}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
              # a first message right behind the request, before any answer
              + ws_frame(b"early"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert b"Sec-WebSocket-Accept: " + accept in head, head
    assert ws_read(s) == (1, b"early")
    for msg in (b"hello", os.urandom(3000), b"x" * 60000):
        s.sendall(ws_frame(msg, 2))
        assert ws_read(s) == (2, msg)
    s.sendall(ws_frame(b"", 8))
    assert ws_read(s)[0] == 8
    s.close()


def test_many_idle_websockets_hold_no_threads(dsbxd, box):
    pid = dsbxd.proc.pid
    threads = lambda: len(os.listdir(f"/proc/{pid}/task"))  # noqa: E731
    before = threads()
    socks = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", dsbxd.port), timeout=10)
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host(box, 8000, dsbxd)}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        socks.append(s)
    time.sleep(0.5)
    # the sandbox's server has a thread per connection; the daemon does not
    assert threads() - before < 10, (before, threads())
    for s in socks:
        s.sendall(ws_frame(b"still here"))
        assert ws_read(s) == (1, b"still here")
        s.close()


def test_a_port_with_nothing_listening(dsbxd, box):
    r = get(dsbxd, box, port=8001)
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": "The sandbox is running but port is not open",
                        "sandboxId": box, "port": 8001}


def test_unknown_and_ended_sandboxes(dsbxd):
    r = get(dsbxd, "sbx_nosuchsandbox00000000")
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": "The sandbox was not found", "sandboxId": "sbx_nosuchsandbox00000000"}
    r = get(dsbxd, "not-an-id")
    assert r.status_code == 502 and r.json()["message"] == "The sandbox was not found"
    sid = dsbxd.create()
    assert dsbxd.delete(sid).status_code == 204
    r = get(dsbxd, sid)
    assert r.status_code == 502 and r.json()["message"] == "The sandbox was not found"
    # a port out of range is no sandbox port
    r = requests.get(dsbxd.url + "/", headers={"Host": f"70000-{sid}.{DOMAIN}"}, timeout=10)
    assert r.status_code == 400
    # other names under the domain are the API's (E2B's api.DOMAIN)
    r = requests.get(dsbxd.url + "/health", headers={"Host": f"api.{DOMAIN}"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_paused_sandbox_is_refused_until_resumed(dsbxd):
    sid = dsbxd.create()
    start_server(dsbxd, sid)
    assert dsbxd.req("POST", f"/sandboxes/{sid}/pause", json={}).status_code == 204
    r = get(dsbxd, sid)
    assert r.status_code == 409 and r.json()["message"] == "The sandbox is paused"
    assert dsbxd.req("POST", f"/sandboxes/{sid}/connect", json={}).status_code in (200, 201)
    assert get(dsbxd, sid).status_code == 200
    dsbxd.delete(sid)


def test_auto_resume_sandbox_is_resumed_by_a_request(dsbxd):
    r = dsbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300, "autoPause": True,
                                                "autoResume": {"enabled": True}})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        start_server(dsbxd, sid)
        assert dsbxd.req("POST", f"/sandboxes/{sid}/pause", json={}).status_code == 204
        r = get(dsbxd, sid)
        assert r.status_code == 200 and r.json()["path"] == "/hello", r.text
        assert dsbxd.req("GET", f"/sandboxes/{sid}").json()["state"] == "running"
    finally:
        dsbxd.delete(sid)


@pytest.fixture(scope="module")
def private_box(dsbxd):
    """A sandbox with allowPublicTraffic false and a masked Host."""
    r = dsbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300,
                                              "network": {"allowPublicTraffic": False,
                                                          "maskRequestHost": "localhost:${PORT}"}})
    assert r.status_code == 201, r.text
    j = r.json()
    start_server(dsbxd, j["sandboxID"], port=3000)
    yield j
    dsbxd.delete(j["sandboxID"])


def test_private_ports_need_the_traffic_token(dsbxd, private_box):
    sid, tok = private_box["sandboxID"], private_box["trafficAccessToken"]
    info = dsbxd.get(sid).json()
    assert info["network"]["allowPublicTraffic"] is False
    assert info["network"]["maskRequestHost"] == "localhost:${PORT}"
    # the egress rules were left to the template
    assert info["network"]["mode"] == "internet"
    r = get(dsbxd, sid, port=3000)
    assert r.status_code == 403 and "missing traffic access token" in r.json()["message"]
    r = get(dsbxd, sid, port=3000, headers={"e2b-traffic-access-token": "0" * 64})
    assert r.status_code == 403 and r.json()["message"] == "invalid traffic access token"
    # the envd token is not the traffic token, nor is an API key
    r = get(dsbxd, sid, port=3000, headers={"e2b-traffic-access-token": private_box["envdAccessToken"],
                                           "Authorization": "Bearer " + dsbxd.key})
    assert r.status_code == 403
    r = get(dsbxd, sid, port=3000, headers={"E2B-Traffic-Access-Token": tok})
    assert r.status_code == 200, r.text
    seen = r.json()
    # maskRequestHost: the server sees the mask, ${PORT} filled in; the
    # token is not passed on
    assert seen["host"] == "localhost:3000" and seen["token"] is None


def test_another_organisation_cannot_reach_private_ports(dsbxd, private_box):
    other = requests.Session()
    other.headers["Authorization"] = "Bearer " + dsbxd.new_key(org="other-org")
    r = other.post(dsbxd.url + "/sandboxes", json={"templateID": "base", "timeout": 120,
                                                   "network": {"allowPublicTraffic": False}}, timeout=60)
    assert r.status_code == 201, r.text
    theirs = r.json()
    try:
        # its own sandbox's token opens nothing of ours
        r = get(dsbxd, private_box["sandboxID"], port=3000,
                headers={"e2b-traffic-access-token": theirs["trafficAccessToken"]})
        assert r.status_code == 403
        # nor does its envd token open our envd
        r = requests.get(dsbxd.url + "/files", params={"path": "/tmp/server.py"}, timeout=10,
                         headers={"Host": host(private_box["sandboxID"], 49983, dsbxd),
                                  "X-Access-Token": theirs["envdAccessToken"]})
        assert r.status_code == 401
    finally:
        other.delete(dsbxd.url + f"/sandboxes/{theirs['sandboxID']}", timeout=60)


def test_envd_by_host_name(dsbxd, box):
    tok = dsbxd.req("POST", f"/sandboxes/{box}/connect", json={}).json()["envdAccessToken"]
    h = {"Host": host(box, 49983, dsbxd), "X-Access-Token": tok}
    r = requests.get(dsbxd.url + "/files", params={"path": "/tmp/server.py"}, headers=h, timeout=10)
    assert r.status_code == 200 and b"ThreadingHTTPServer" in r.content
    # a header naming another sandbox than the name does is refused
    r = requests.get(dsbxd.url + "/files", params={"path": "/tmp/server.py"}, timeout=10,
                     headers=dict(h, **{"E2b-Sandbox-Id": "sbx_someotherone"}))
    assert r.status_code == 400


def test_without_domain_hosts_are_not_routed(sbxd, sandbox):
    r = requests.get(sbxd.url + "/health", headers={"Host": f"8000-{sandbox}.{DOMAIN}"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/connect", json={})
    assert r.json()["domain"] is None


def test_bad_flags(tmp_path):
    for args in (["--domain", "bad..name"], ["--domain", "x.y:99999"], ["--tls-cert", "/nonexistent"]):
        r = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "build", "sbxd"), "serve", "--state-dir",
                            str(tmp_path / "s")] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)


# ---- HTTPS ----

def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={DOMAIN}", "-keyout", key, "-out", cert,
                    "-addext", f"subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN},IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_sbxd(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(str(d))
    server = Sbxd(str(d / "state"))
    server.cert = cert
    # the fixture's health check speaks plain HTTP: wait for the port here
    server.url = f"https://127.0.0.1:{server.port}"
    orig_get = requests.get
    requests.get = lambda url, **kw: orig_get(url, verify=cert, **kw)
    try:
        server.start(args=["--domain", f"{DOMAIN}:{server.port}", "--tls-cert", cert, "--tls-key", key])
    finally:
        requests.get = orig_get
    # (an explicit verify: REQUESTS_CA_BUNDLE would win over the session's)
    server.req = lambda method, path, **kw: Sbxd.req(server, method, path, verify=cert, **kw)
    yield server
    try:
        server.cleanup()
    finally:
        server.stop()


def curl(tls_sbxd, name, path, *extra):
    """curl to NAME on the daemon's port, resolved to loopback by curl
    itself; the name goes in SNI (sandbox ids are host name labels) and the
    certificate is checked against it."""
    return subprocess.run(["curl", "-sS", "--cacert", tls_sbxd.cert, "--resolve", f"{name}:{tls_sbxd.port}:127.0.0.1",
                           f"https://{name}:{tls_sbxd.port}{path}"] + list(extra),
                          capture_output=True, text=True, timeout=30)


def test_https_api_ports_and_websocket(tls_sbxd):
    # the API by name, with SNI
    r = subprocess.run(["curl", "-sS", "--cacert", tls_sbxd.cert, "--resolve",
                        f"api.{DOMAIN}:{tls_sbxd.port}:127.0.0.1", f"https://api.{DOMAIN}:{tls_sbxd.port}/health"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout) == {"status": "ok"}, r.stderr
    sid = tls_sbxd.create()
    try:
        start_server(tls_sbxd, sid)
        j = tls_sbxd.req("POST", f"/sandboxes/{sid}/connect", json={}).json()
        assert j["domain"] == f"{DOMAIN}:{tls_sbxd.port}"
        name = f"8000-{sid}.{DOMAIN}"
        r = curl(tls_sbxd, name, "/hello")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["path"] == "/hello"
        r = curl(tls_sbxd, name, "/stream?n=3")
        assert r.stdout == "line 0\nline 1\nline 2\n", r.stderr
        # WebSocket over TLS: libmicrohttpd's upgrade behind GnuTLS
        import ssl
        ctx = ssl.create_default_context(cafile=tls_sbxd.cert)
        raw = socket.create_connection(("127.0.0.1", tls_sbxd.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname=name)
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {name}:{tls_sbxd.port}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        for msg in (b"over tls", os.urandom(50000)):
            s.sendall(ws_frame(msg, 2))
            assert ws_read(s) == (2, msg)
        s.close()
    finally:
        tls_sbxd.delete(sid)


# ---- the E2B SDK with E2B_DOMAIN alone ----

def tls_daemon(tmp_path):
    """A daemon of its own with --domain and its own TLS (a certificate of
    the test's CA): the daemon and the CA's file."""
    cert, key = make_cert(str(tmp_path))
    server = Sbxd(str(tmp_path / "state"))
    server.url = f"https://127.0.0.1:{server.port}"
    orig_get = requests.get
    requests.get = lambda url, **kw: orig_get(url, verify=cert, **kw)
    try:
        server.start(args=["--domain", f"{DOMAIN}:{server.port}", "--tls-cert", cert, "--tls-key", key])
    finally:
        requests.get = orig_get
    server.req = lambda method, path, **kw: Sbxd.req(server, method, path, verify=cert, **kw)
    return server, cert


def test_killing_a_sandbox_ends_its_websockets_over_tls(tmp_path):
    """An upgraded connection to a sandbox's port, through the daemon's
    own TLS, ends when the sandbox is killed (it used to stay open until
    the client gave up: libmicrohttpd did not pass the relay's close on)."""
    import ssl
    server, cert = tls_daemon(tmp_path)
    try:
        sid = server.create(timeout=300)
        server.write(sid, "/tmp/ws.py", b"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000)); s.listen(5)
while True:
    c, _ = s.accept(); req = c.recv(4096)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n")
    if req.startswith(b"GET /bye"):
        c.sendall(b"last words " * 20000); c.close(); continue
    time.sleep(3600)
""")
        r = server.req("POST", f"/sandboxes/{sid}/processes",
                       json={"cmd": "sh", "args": ["-c", "nohup python3 /tmp/ws.py >/dev/null 2>&1 &"]})
        assert r.status_code == 200, r.text
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False

        def upgrade(path):
            """An upgraded connection to the sandbox's server, once it listens
            (it was just started: a 502 until then); the socket and what came
            first"""
            deadline = time.time() + 10
            while True:
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port)))
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 8000-{sid}.{DOMAIN}\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
                s.settimeout(10)
                head = s.recv(4096)
                if head.startswith(b"HTTP/1.1 101") or time.time() > deadline:
                    assert head.startswith(b"HTTP/1.1 101"), head
                    return s, head
                s.close()
                time.sleep(0.2)

        for _ in range(3):   # the relay's close raced with libmicrohttpd: not every time
            s, _ = upgrade("/")
            # the server side ends (as when the sandbox is killed): so does the client's
            assert server.req("POST", f"/sandboxes/{sid}/processes",
                              json={"cmd": "pkill", "args": ["-f", "ws.py"]}).status_code == 200
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except ssl.SSLError:
                pass   # an end without close_notify is an end too
            except socket.timeout:
                raise AssertionError("the upgraded connection outlived the sandbox's server by 10 s")
            s.close()
            r = server.req("POST", f"/sandboxes/{sid}/processes",
                           json={"cmd": "sh", "args": ["-c", "nohup python3 /tmp/ws.py >/dev/null 2>&1 &"]})
            assert r.status_code == 200, r.text
        # what the sandbox's side sends before it ends still arrives, whole
        for _ in range(3):
            # (the server was restarted above: this waits until it listens)
            s, got = upgrade("/bye")
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            except ssl.SSLError:
                pass
            s.close()
            body = got.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in got else b""
            assert got.startswith(b"HTTP/1.1 101") and body == b"last words " * 20000, (len(got), got[:80])
        # and a kill ends the one open now
        s, _ = upgrade("/")
        assert server.req("DELETE", f"/sandboxes/{sid}").status_code == 204
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except ssl.SSLError:
            pass
        except socket.timeout:
            raise AssertionError("the upgraded connection outlived its sandbox by 10 s")
    finally:
        try:
            server.cleanup()
        finally:
            server.stop()


def run_sdk_on_domain(tmp_path, script, timeout, node="node", node_args=()):
    """Run the Node test SCRIPT (in tests/e2b) with the unmodified SDK
    given E2B_DOMAIN and a key, nothing else, against a daemon of its own.
    The SDK speaks HTTPS to api.DOMAIN and PORT-ID.DOMAIN: the daemon's own
    TLS (--tls-cert, --tls-key) with the test's CA (NODE_EXTRA_CA_CERTS);
    names under the domain resolve to loopback inside the Node process."""
    e2b = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2b")
    npm_ci(e2b)
    server, cert = tls_daemon(tmp_path)
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("E2B_") and k.lower() not in ("http_proxy", "https_proxy")}
        env.update({"E2B_API_KEY": server.new_key(e2b=True), "E2B_DOMAIN": f"{DOMAIN}:{server.port}",
                    "NODE_EXTRA_CA_CERTS": cert, "NO_COLOR": "1"})
        try:
            r = subprocess.run([node, *node_args, "--import", "./loopback-dns.mjs", "--test",
                                "--test-reporter=spec", script], cwd=e2b, env=env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
            raise AssertionError(f"{script} ran past {timeout} s:\n{out[-20000:]}\n--- sbxd log ---\n"
                                 + server.logs()[-5000:]) from None
        assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:] + "\n--- sbxd log ---\n" + server.logs()[-5000:]
    finally:
        try:
            server.cleanup()
        finally:
            server.stop()


def test_e2b_sdk_with_only_the_domain(tmp_path):
    """tests/e2b/domain.test.mjs (run_sdk_on_domain)."""
    run_sdk_on_domain(tmp_path, "domain.test.mjs", 300)


def test_seed004_preview_base_url(dsbxd):
    r = dsbxd.req("POST", "/v1/sandboxes", json={"runtime": "base"})
    assert r.status_code in (200, 201, 202), r.text
    sid = r.json()["id"]
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            o = dsbxd.req("GET", "/v1/sandboxes", params={"id": sid}).json()
            if o["status"] in ("ready", "active"):
                break
            time.sleep(0.2)
        assert o["previewBaseUrl"] == f"http://{{port}}-{sid}.{DOMAIN}"
        # the base URL with a port filled in reaches that port
        start_server(dsbxd, sid, port=5173)
        r = get(dsbxd, sid, port=5173)
        assert r.status_code == 200 and r.json()["path"] == "/hello"
        # behind a TLS-terminating proxy the base URL says https
        o = dsbxd.req("GET", "/v1/sandboxes", params={"id": sid}, headers={"X-Forwarded-Proto": "https"}).json()
        assert o["previewBaseUrl"] == f"https://{{port}}-{sid}.{DOMAIN}"
    finally:
        dsbxd.req("DELETE", "/v1/sandboxes", params={"id": sid})
