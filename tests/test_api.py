"""End-to-end tests of sbxd's REST API beyond the sandbox engine: API keys
and organisations, per-organisation limits, sandbox records, file uploads
and downloads, lifecycle events, webhooks and their delivery (retries,
signatures, kill -9 of the daemon), and bad input.

Each test talks HTTP to a real daemon (conftest.Sbxd).  The webhook tests
use a daemon of their own started with SBXD_WEBHOOK_RETRY_SCALE=0.01 so
that retries come after ~0.1 s, 0.3 s, 0.6 s ..., and with
--outbound-allow 127.0.0.1/32 so that it may deliver to an in-process
receiver (http.server) that records what it gets and answers from a
scripted list of statuses.  (What a daemon without that flag refuses is
in test_webhook_ssrf.py.)
"""
import base64
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests

from conftest import SBXD, Sbxd

MB = 1024 * 1024
UPLOAD_MAX = 100 * MB
EVENT_TYPES = ["sandbox.lifecycle.created", "sandbox.lifecycle.updated", "sandbox.lifecycle.paused",
               "sandbox.lifecycle.resumed", "sandbox.lifecycle.killed"]
EVENT_KEYS = {"version", "id", "type", "timestamp", "sandboxId", "sandboxTeamId", "sandboxTemplateId",
              "sandboxBuildId", "sandboxExecutionId", "eventData"}
WEBHOOK_KEYS = {"id", "teamID", "name", "createdAt", "enabled", "url", "events"}
DELIVERY_KEYS = {"id", "eventID", "state", "attempts", "lastStatus", "lastError", "nextAttemptAt"}
MISSING = "sbx_0000000000000000000a"   # well formed, never created
SCALE_ENV = "SBXD_WEBHOOK_RETRY_SCALE"


# ---------------------------------------------------------------- helpers

def assert_error(r, status, message=None, prefix=None, contains=None):
    """An error answer: STATUS and {"code": STATUS, "message": ...}."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == status, body
    if message is not None:
        assert body["message"] == message, body
    if prefix is not None:
        assert body["message"].startswith(prefix), body
    if contains is not None:
        assert contains in body["message"], body
    return body["message"]


def call(d, key, method, path, header="bearer", **kw):
    """A request with KEY only (not the session's key)."""
    kw.setdefault("timeout", 120)
    headers = dict(kw.pop("headers", {}))
    if key is not None:
        if header == "bearer":
            headers["Authorization"] = "Bearer " + key
        else:
            headers["X-API-Key"] = key
    return requests.request(method, d.url + path, headers=headers, **kw)


def create_as(d, key, expect=201, **fields):
    body = {"templateID": "base", "timeout": 300}
    body.update(fields)
    r = call(d, key, "POST", "/sandboxes", json=body)
    assert r.status_code == expect, r.text
    return r.json()["sandboxID"] if expect == 201 else r


def delete_quietly(d, key, sid):
    try:
        call(d, key, "DELETE", f"/sandboxes/{sid}", timeout=60)
    except requests.RequestException:
        pass


def live(d, key=None):
    """The caller's running and paused sandboxes."""
    out = []
    for status in ("running", "paused"):
        r = call(d, key or d.key, "GET", f"/sandboxes?status={status}")
        assert r.status_code == 200, r.text
        out += r.json()
    return out


def key_id(d, org):
    """The id of the (only) key of ORG, from `sbxd keys list`."""
    out = subprocess.run([SBXD, "keys", "list", "--state-dir", d.state_dir],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    ids = [row[0] for row in rows if row[1] == org]
    assert len(ids) == 1, out
    return ids[0], out


def events(d, key, sid=None, **params):
    path = "/events/sandboxes" + (f"/{sid}" if sid else "")
    r = call(d, key, "GET", path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def parse_ts(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.strptime(text.replace("Z", "+00:00") if "." in text else text[:-1] + ".000+00:00",
                             "%Y-%m-%dT%H:%M:%S.%f%z")


def wait_for(pred, timeout, step=0.05, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def signature(secret, body):
    return base64.b64encode(hashlib.sha256(secret.encode() + body).digest()).decode().rstrip("=")


class Multipart:
    """A multipart/form-data body built by hand, streamed (file-like with a
    length, so requests sends a Content-Length and reads it in blocks).
    PARTS are ("field", name, text) or ("file", name, filename, chunks)
    where chunks are bytes or paths of files whose content follows."""

    def __init__(self, parts, boundary="sbxdtestboundary7d91f"):
        self.boundary = boundary
        self.items = []
        for p in parts:
            if p[0] == "field":
                _, name, value = p
                self.items.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
            else:
                _, name, filename, chunks = p
                self.items.append(
                    (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n").encode())
                self.items += list(chunks)
                self.items.append(b"\r\n")
        self.items.append(f"--{boundary}--\r\n".encode())
        self.length = sum(len(i) if isinstance(i, bytes) else os.path.getsize(i) for i in self.items)
        self.pos = 0
        self.cur = None

    @property
    def content_type(self):
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self):
        return self.length

    def read(self, n=-1):
        if n is None or n < 0:
            n = 1 << 62
        out = []
        while n > 0 and (self.cur is not None or self.pos < len(self.items)):
            if self.cur is None:
                item = self.items[self.pos]
                self.pos += 1
                self.cur = open(item, "rb") if isinstance(item, str) else io.BytesIO(item)
            data = self.cur.read(min(n, 1 << 20))
            if not data:
                self.cur.close()
                self.cur = None
                continue
            out.append(data)
            n -= len(data)
        return b"".join(out)


def upload(d, sid, body, key=None, **kw):
    headers = {"Content-Type": body.content_type}
    if key is not None:
        return call(d, key, "POST", f"/sandboxes/{sid}/files", data=body, headers=headers, timeout=600, **kw)
    return d.req("POST", f"/sandboxes/{sid}/files", data=body, headers=headers, timeout=600, **kw)


def download_sha256(d, sid, path):
    h = hashlib.sha256()
    n = 0
    with d.req("GET", f"/sandboxes/{sid}/files", params={"path": path}, stream=True, timeout=600) as r:
        assert r.status_code == 200, r.text
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def random_file(size, dir=None):
    f = tempfile.NamedTemporaryFile(delete=False, dir=dir, prefix="sbxd-upload-")
    h = hashlib.sha256()
    left = size
    while left:
        chunk = os.urandom(min(left, 4 * MB))
        h.update(chunk)
        f.write(chunk)
        left -= len(chunk)
    f.close()
    return f.name, h.hexdigest()


class Receiver:
    """A webhook receiver in this process: records every POST (headers,
    raw body, the status it answered) and answers from SCRIPT, then with
    DEFAULT."""

    def __init__(self, script=(), default=200):
        self.script = list(script)
        self.default = default
        self.got = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rec.lock:
                    status = rec.script.pop(0) if rec.script else rec.default
                    rec.got.append({"t": time.time(), "path": self.path, "status": status, "body": body,
                                    "headers": {k.lower(): v for k, v in self.headers.items()}})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def received(self):
        with self.lock:
            return list(self.got)

    def ok(self):
        """The requests answered with a 2xx, as parsed events."""
        return [json.loads(g["body"]) for g in self.received() if 200 <= g["status"] < 300]

    def wait(self, n, timeout, ok_only=True, what=None):
        return wait_for(lambda: len(self.ok() if ok_only else self.received()) >= n, timeout,
                        what=what or f"{n} webhook requests (got {len(self.received())})")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def webhook(d, key, url, events=None, secret="", **fields):
    body = {"name": "test", "url": url, "events": events or EVENT_TYPES, "signatureSecret": secret}
    body.update(fields)
    r = call(d, key, "POST", "/events/webhooks", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(d, key, wid):
    r = call(d, key, "GET", f"/events/webhooks/{wid}/deliveries")
    assert r.status_code == 200, r.text
    out = r.json()
    for x in out:
        assert set(x) == DELIVERY_KEYS, x
    return out


def check_signed(g, secret, wid):
    h = g["headers"]
    assert h["e2b-webhook-id"] == wid, h
    assert h["e2b-signature-version"] == "v1", h
    assert h["e2b-signature"] == signature(secret, g["body"]), (h, g["body"])
    assert h["content-type"].startswith("application/json"), h
    assert h.get("e2b-delivery-id"), h


# The receivers are on this host's loopback, which the outbound guard
# refuses unless the operator opens it.
OPEN_LOOPBACK = ["--outbound-allow", "127.0.0.1/32"]


def start_webhook_daemon(state_dir, port=None):
    d = Sbxd(state_dir, port=port)
    return d.start(env=dict(os.environ, **{SCALE_ENV: "0.01"}), args=OPEN_LOOPBACK)


# --------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def orgb(sbxd):
    """A key of a second organisation on the module's daemon."""
    return sbxd.new_key(org="orgb")


@pytest.fixture(scope="module")
def whd(tmp_path_factory):
    """A daemon whose webhook retries are 100 times faster, and which
    may deliver to 127.0.0.1."""
    d = start_webhook_daemon(str(tmp_path_factory.mktemp("whd") / "state"))
    yield d
    try:
        d.cleanup()
        for w in d.req("GET", "/events/webhooks").json():
            d.req("DELETE", f"/events/webhooks/{w['id']}")
    finally:
        d.stop()


# ------------------------------------------------------------------- auth

def test_health_and_openapi_need_no_key(sbxd):
    r = requests.get(sbxd.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = requests.get(sbxd.url + "/openapi.yaml", timeout=10)
    assert r.status_code in (200, 404), r.text  # never 401
    if r.status_code == 404:
        assert_error(r, 404, "openapi.yaml not found")


def test_requests_without_a_key_are_refused(sbxd):
    sid = sbxd.create()
    try:
        for method, path in [("GET", "/sandboxes"), ("POST", "/sandboxes"), ("GET", f"/sandboxes/{sid}"),
                             ("DELETE", f"/sandboxes/{sid}"), ("POST", f"/sandboxes/{sid}/pause"),
                             ("GET", f"/sandboxes/{sid}/files?path=/etc/hostname"),
                             ("GET", "/events/sandboxes"), ("GET", f"/events/sandboxes/{sid}"),
                             ("GET", "/events/webhooks"), ("POST", "/events/webhooks"),
                             ("GET", "/nowhere")]:
            r = requests.request(method, sbxd.url + path, timeout=30)
            assert_error(r, 401, "missing API key")
        # empty and non-Bearer credentials are no key either
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"},
                        {"X-API-Key": ""}):
            r = requests.get(sbxd.url + "/sandboxes", headers=headers, timeout=30)
            assert_error(r, 401, "missing API key")
        # the upload endpoint authenticates before reading the body
        body = Multipart([("field", "path", "/home/user/x"), ("file", "file", "x", [b"hello"])])
        r = requests.post(f"{sbxd.url}/sandboxes/{sid}/files", data=body,
                          headers={"Content-Type": body.content_type}, timeout=30)
        assert_error(r, 401, "missing API key")
        # nothing happened to the sandbox
        assert sbxd.get(sid).json()["status"] == "running"
        assert sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/home/user/x"}).status_code == 404
    finally:
        sbxd.delete(sid)


def test_unknown_keys_are_refused(sbxd):
    for key in ("sk-sb-" + "0" * 40, "e2b_" + "0" * 40, "nonsense", sbxd.key + "x", sbxd.key[:-1]):
        for header in ("bearer", "x-api-key"):
            r = call(sbxd, key, "GET", "/sandboxes", header=header)
            assert_error(r, 401, "invalid API key")
    r = call(sbxd, "e2b_" + "0" * 40, "POST", "/sandboxes", json={"templateID": "base"})
    assert_error(r, 401, "invalid API key")


def test_key_header_forms_and_e2b_keys(sbxd):
    e2b = sbxd.new_key(org="default", e2b=True)
    assert re.fullmatch(r"e2b_[0-9a-f]{40}", e2b), e2b
    sid = None
    try:
        for key in (sbxd.key, e2b):
            for header in ("bearer", "x-api-key"):
                r = call(sbxd, key, "GET", "/sandboxes", header=header)
                assert r.status_code == 200, r.text
                assert isinstance(r.json(), list)
        # a sandbox made with one key of the organisation is the organisation's
        sid = create_as(sbxd, e2b)
        r = call(sbxd, sbxd.key, "GET", f"/sandboxes/{sid}", header="x-api-key")
        assert r.status_code == 200 and r.json()["sandboxID"] == sid
        assert sid in [s["sandboxID"] for s in sbxd.req("GET", "/sandboxes").json()]
        r = call(sbxd, e2b, "DELETE", f"/sandboxes/{sid}", header="x-api-key")
        assert r.status_code == 204, r.text
        sid = None
    finally:
        if sid:
            sbxd.delete(sid)


def test_revoked_key_is_refused(sbxd):
    key = sbxd.new_key(org="revoking")
    other = sbxd.new_key(org="revoking-other")
    sid = create_as(sbxd, key)
    try:
        assert call(sbxd, key, "GET", f"/sandboxes/{sid}").status_code == 200
        kid, listing = key_id(sbxd, "revoking")
        assert f"{kid}\trevoking\t" in listing and listing.split(kid, 1)[1].splitlines()[0].endswith("\tvalid")
        subprocess.run([SBXD, "keys", "revoke", kid, "--state-dir", sbxd.state_dir],
                       capture_output=True, text=True, check=True)
        _, listing = key_id(sbxd, "revoking")
        assert listing.split(kid, 1)[1].splitlines()[0].endswith("\trevoked"), listing
        for header in ("bearer", "x-api-key"):
            for method, path in [("GET", "/sandboxes"), ("GET", f"/sandboxes/{sid}"),
                                 ("DELETE", f"/sandboxes/{sid}"), ("GET", "/events/sandboxes")]:
                assert_error(call(sbxd, key, method, path, header=header), 401, "API key revoked")
        body = Multipart([("field", "path", "/home/user/x"), ("file", "file", "x", [b"hello"])])
        r = call(sbxd, key, "POST", f"/sandboxes/{sid}/files", data=body,
                 headers={"Content-Type": body.content_type})
        assert_error(r, 401, "API key revoked")
        # the revoked key's DELETE did nothing; other keys still work
        assert sbxd.get(sid).status_code == 404  # another organisation's
        assert call(sbxd, other, "GET", "/sandboxes").status_code == 200
        assert sbxd.req("GET", "/sandboxes").status_code == 200
        still = subprocess.run([SBXD, "keys", "list", "--state-dir", sbxd.state_dir],
                               capture_output=True, text=True, check=True).stdout
        assert [l for l in still.splitlines() if "\trevoking-other\t" in l][0].endswith("\tvalid")
    finally:
        # the sandbox's organisation has no valid key left: a new one cleans up
        k2 = sbxd.new_key(org="revoking")
        r = call(sbxd, k2, "GET", f"/sandboxes/{sid}")
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        assert call(sbxd, k2, "DELETE", f"/sandboxes/{sid}").status_code == 204


# ---------------------------------------------------------------- tenancy

def test_other_organisation_cannot_touch_a_sandbox(sbxd, orgb):
    a = sbxd.create(metadata={"owner": "a"})
    b = create_as(sbxd, orgb, metadata={"owner": "b"})
    try:
        sbxd.write(a, "/home/user/secret.txt", "A's secret")
        before = sbxd.get(a).json()
        not_found = [
            ("GET", f"/sandboxes/{a}", {}),
            ("DELETE", f"/sandboxes/{a}", {}),
            ("POST", f"/sandboxes/{a}/pause", {}),
            ("POST", f"/sandboxes/{a}/connect", {"json": {}}),
            ("POST", f"/sandboxes/{a}/resume", {"json": {}}),
            ("POST", f"/sandboxes/{a}/timeout", {"json": {"timeout": 5}}),
            ("GET", f"/sandboxes/{a}/metrics", {}),
            ("GET", f"/sandboxes/{a}/processes", {}),
            ("POST", f"/sandboxes/{a}/processes", {"json": {"cmd": "rm", "args": ["-f", "/home/user/secret.txt"]}}),
            ("GET", f"/sandboxes/{a}/filesystem", {"params": {"path": "/home/user/secret.txt"}}),
            ("GET", f"/sandboxes/{a}/filesystem/list", {"params": {"path": "/home/user"}}),
            ("GET", f"/sandboxes/{a}/filesystem/stat", {"params": {"path": "/home/user/secret.txt"}}),
            ("POST", f"/sandboxes/{a}/filesystem",
             {"json": {"path": "/home/user/secret.txt", "content": base64.b64encode(b"B was here").decode()}}),
            ("DELETE", f"/sandboxes/{a}/filesystem", {"params": {"path": "/home/user/secret.txt"}}),
            ("GET", f"/sandboxes/{a}/files", {"params": {"path": "/home/user/secret.txt"}}),
            ("GET", f"/events/sandboxes/{a}", {}),
        ]
        for header in ("bearer", "x-api-key"):
            for method, path, kw in not_found:
                r = call(sbxd, orgb, method, path, header=header, **kw)
                assert_error(r, 404, "sandbox not found")
            body = Multipart([("field", "path", "/home/user/secret.txt"), ("file", "file", "s", [b"B was here"])])
            assert_error(upload(sbxd, a, body, key=orgb), 404, "sandbox not found")
        # B's lists do not show A's sandbox or its events
        listed = call(sbxd, orgb, "GET", "/sandboxes").json()
        assert [s["sandboxID"] for s in listed] == [b]
        for status in ("running", "stopped"):
            assert a not in [s["sandboxID"] for s in call(sbxd, orgb, "GET", f"/sandboxes?status={status}").json()]
        b_events = events(sbxd, orgb, limit=100)
        assert b_events and all(e["sandboxId"] == b for e in b_events), b_events
        a_events = events(sbxd, sbxd.key, a)
        assert a_events and {e["sandboxTeamId"] for e in a_events} != {e["sandboxTeamId"] for e in b_events}
        # and A's sandbox is untouched: running, same lifetime, same file
        after = sbxd.get(a).json()
        assert after["status"] == "running" and after["endAt"] == before["endAt"]
        assert sbxd.read(a, "/home/user/secret.txt") == b"A's secret"
        # symmetric: A cannot see B's
        assert_error(sbxd.get(b), 404, "sandbox not found")
        assert_error(sbxd.delete(b), 404, "sandbox not found")
        assert_error(sbxd.req("GET", f"/events/sandboxes/{b}"), 404, "sandbox not found")
        assert b not in sbxd.sandbox_ids()
        assert b not in [e["sandboxId"] for e in events(sbxd, sbxd.key, limit=100)]
        assert call(sbxd, orgb, "GET", f"/sandboxes/{b}").json()["status"] == "running"
    finally:
        sbxd.delete(a)
        delete_quietly(sbxd, orgb, b)


# ----------------------------------------------------------------- limits

def test_concurrent_sandbox_limit_per_organisation(sbxd, orgb):
    existing = live(sbxd)
    assert len(existing) < 10, existing
    made = []
    other = None
    try:
        for _ in range(10 - len(existing)):
            made.append(sbxd.create())
        # a paused sandbox counts as well
        assert sbxd.req("POST", f"/sandboxes/{made[0]}/pause").status_code == 204
        r = sbxd.create(expect=429)
        assert_error(r, 429, "concurrent sandbox limit reached")
        r = call(sbxd, sbxd.key, "POST", "/sandboxes", json={"templateID": "base"}, header="x-api-key")
        assert_error(r, 429, "concurrent sandbox limit reached")
        assert len(live(sbxd)) == 10
        # another organisation is not affected
        other = create_as(sbxd, orgb)
        # a stopped sandbox does not count
        assert sbxd.delete(made.pop()).status_code == 204
        made.append(sbxd.create())
        assert_error(sbxd.create(expect=429), 429, "concurrent sandbox limit reached")
        # deleting the paused one frees a place too
        assert sbxd.delete(made.pop(0)).status_code == 204
        made.append(sbxd.create())
        assert_error(sbxd.create(expect=429), 429, "concurrent sandbox limit reached")
    finally:
        for sid in made:
            sbxd.delete(sid)
        if other:
            delete_quietly(sbxd, orgb, other)


def test_concurrent_creates_cannot_pass_the_limit(sbxd):
    key = sbxd.new_key(org="burst")
    with ThreadPoolExecutor(14) as pool:
        rs = list(pool.map(lambda _: call(sbxd, key, "POST", "/sandboxes", json={"templateID": "base"}),
                           range(14)))
    made = [r.json()["sandboxID"] for r in rs if r.status_code == 201]
    try:
        assert sorted(r.status_code for r in rs) == [201] * 10 + [429] * 4, [r.text for r in rs]
        for r in rs:
            if r.status_code == 429:
                assert_error(r, 429, "concurrent sandbox limit reached")
        assert len(live(sbxd, key)) == 10
    finally:
        for sid in made:
            delete_quietly(sbxd, key, sid)
    assert live(sbxd, key) == []


def test_timeout_bounds(sbxd):
    for t in (3601, 0, -1, 10 ** 12):
        assert_error(sbxd.create(timeout=t, expect=400), 400, "timeout must be between 1 and 3600")
    sid = sbxd.create(timeout=3600)
    try:
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 3601}), 400,
                     "timeout must be between 1 and 3600")
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={}), 400, "timeout is required")
        assert sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 3600}).status_code == 204
    finally:
        sbxd.delete(sid)


# -------------------------------------------------------- sandbox records

def test_deleted_sandbox_keeps_a_stopped_record(sbxd):
    sid = sbxd.create(metadata={"rec": "1"})
    r = sbxd.delete(sid)
    assert r.status_code == 204 and r.content == b""
    r = sbxd.get(sid)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["sandboxID"] == sid and s["status"] == "stopped" and s["state"] == "stopped"
    assert s["stopReason"] == "request" and s["metadata"] == {"rec": "1"}
    stopped = sbxd.req("GET", "/sandboxes", params={"status": "stopped"}).json()
    assert sid in [x["sandboxID"] for x in stopped]
    assert all(x["status"] == "stopped" for x in stopped)
    assert sid not in [x["sandboxID"] for x in sbxd.req("GET", "/sandboxes?status=running").json()]
    assert sid not in [x["sandboxID"] for x in sbxd.req("GET", "/sandboxes?status=paused").json()]
    assert_error(sbxd.delete(sid), 404, "sandbox not found")
    # E2B: a killed sandbox is not found by a connect
    assert_error(sbxd.req("POST", f"/sandboxes/{sid}/connect", json={}), 404, "sandbox not found")
    assert_error(sbxd.req("GET", "/sandboxes?status=bogus"), 400, "invalid status: bogus")


# ------------------------------------------------------------------ files

def test_filesystem_read_refuses_files_over_1mb(sbxd):
    sid = sbxd.create()
    try:
        r = sbxd.sh(sid, "head -c 1048576 /dev/urandom > /home/user/one && "
                         "head -c 1048577 /dev/urandom > /home/user/over && sha256sum /home/user/one /home/user/over")
        assert r["exitCode"] == 0, r
        sums = dict(reversed(line.split()) for line in r["stdout"].splitlines())
        data = sbxd.read(sid, "/home/user/one")
        assert len(data) == MB and hashlib.sha256(data).hexdigest() == sums["/home/user/one"]
        r = sbxd.req("GET", f"/sandboxes/{sid}/filesystem", params={"path": "/home/user/over"})
        assert_error(r, 400, contains="1 MB")
        # the raw download has no such limit
        assert download_sha256(sbxd, sid, "/home/user/over") == (sums["/home/user/over"], MB + 1)
    finally:
        sbxd.delete(sid)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path, digest = random_file(UPLOAD_MAX, dir=str(tmp_path_factory.mktemp("upload")))
    yield path, digest
    os.unlink(path)


def test_upload_100mb_and_download_it_back(sbxd, big_file):
    path, digest = big_file
    sid = sbxd.create()
    try:
        body = Multipart([("field", "path", "/workspace/data.bin"), ("file", "file", "data.bin", [path])])
        r = upload(sbxd, sid, body)
        assert r.status_code == 200, r.text
        entries = r.json()
        assert isinstance(entries, list) and len(entries) == 1, entries
        e = entries[0]
        assert (e["name"], e["type"], e["path"], e["size"]) == ("data.bin", "file", "/workspace/data.bin", UPLOAD_MAX)
        assert download_sha256(sbxd, sid, "/workspace/data.bin") == (digest, UPLOAD_MAX)
        out = sbxd.sh(sid, "sha256sum /workspace/data.bin")["stdout"]
        assert out.split()[0] == digest
    finally:
        sbxd.delete(sid)


def test_upload_over_100mb_is_refused(sbxd, big_file):
    path, _ = big_file
    sid = sbxd.create()
    try:
        body = Multipart([("field", "path", "/workspace/too-big.bin"),
                          ("file", "file", "too-big.bin", [path, b"x"])])
        r = upload(sbxd, sid, body)
        assert_error(r, 413, prefix="upload too large")
        # nothing is left behind, and the sandbox still takes uploads
        assert_error(sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/workspace/too-big.bin"}), 404)
        r = sbxd.req("POST", f"/sandboxes/{sid}/files", files={"file": ("small.txt", b"small")},
                     data={"path": "/workspace/small.txt"})
        assert r.status_code == 200, r.text
        assert r.json()[0]["size"] == 5
    finally:
        sbxd.delete(sid)


def test_upload_with_requests(sbxd):
    sid = sbxd.create()
    try:
        payload = os.urandom(300 * 1024)
        with tempfile.TemporaryFile() as f:
            f.write(payload)
            f.seek(0)
            r = sbxd.req("POST", f"/sandboxes/{sid}/files", files={"file": ("data.bin", f)},
                         data={"path": "/workspace/data.bin"})
        assert r.status_code == 200, r.text
        [e] = r.json()
        assert (e["name"], e["type"], e["path"], e["size"]) == ("data.bin", "file", "/workspace/data.bin",
                                                                 len(payload))
        r = sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/workspace/data.bin"})
        assert r.status_code == 200 and r.content == payload
        # replacing an existing file, creating missing parents
        body = Multipart([("field", "path", "/workspace/data.bin"), ("file", "file", "data.bin", [b"new"])])
        assert upload(sbxd, sid, body).status_code == 200
        assert sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/workspace/data.bin"}).content == b"new"
        body = Multipart([("field", "path", "/workspace/a/b/c.txt"), ("file", "file", "c.txt", [b"deep"])])
        r = upload(sbxd, sid, body)
        assert r.status_code == 200 and r.json()[0]["path"] == "/workspace/a/b/c.txt", r.text
        assert sbxd.read(sid, "/workspace/a/b/c.txt") == b"deep"
    finally:
        sbxd.delete(sid)


def test_upload_with_path_after_file(sbxd):
    """The path field may follow the file (the daemon spools the bytes)."""
    sid = sbxd.create()
    try:
        later = os.urandom(200 * 1024) + b"\r\n--not-a-boundary\r\n"
        body = Multipart([("file", "file", "later.bin", [later]), ("field", "path", "/workspace/sub/later.bin")])
        r = upload(sbxd, sid, body)
        assert r.status_code == 200, r.text
        [e] = r.json()
        assert (e["name"], e["type"], e["path"], e["size"]) == ("later.bin", "file", "/workspace/sub/later.bin",
                                                                 len(later))
        r = sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/workspace/sub/later.bin"})
        assert r.status_code == 200 and r.content == later
    finally:
        sbxd.delete(sid)


def test_upload_and_download_errors(sbxd):
    sid = sbxd.create()
    try:
        # no file field
        body = Multipart([("field", "path", "/workspace/nothing.bin")])
        assert_error(upload(sbxd, sid, body), 400, "the file field is missing")
        r = sbxd.req("POST", f"/sandboxes/{sid}/files", data={"path": "/workspace/nothing.bin"},
                     files={"other": ("x", b"x")})
        assert_error(r, 400, "the file field is missing")
        # not multipart at all
        r = sbxd.req("POST", f"/sandboxes/{sid}/files", json={"path": "/workspace/x"})
        assert_error(r, 400, "expected multipart/form-data with a file field")
        assert_error(sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/workspace/nothing.bin"}), 404)
        # downloads
        assert_error(sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/home/user/missing.txt"}), 404)
        assert_error(sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": "/home/user"}), 400,
                     "/home/user is a directory")
        assert_error(sbxd.req("GET", f"/sandboxes/{sid}/files"), 400, "path is required")
        # unknown and invalid sandboxes
        body = Multipart([("field", "path", "/workspace/x"), ("file", "file", "x", [b"x"])])
        assert_error(upload(sbxd, MISSING, body), 404, "sandbox not found")
        body = Multipart([("field", "path", "/workspace/x"), ("file", "file", "x", [b"x"])])
        assert_error(upload(sbxd, "sbx_NOT-VALID", body), 404, "sandbox not found")
        body = Multipart([("field", "path", "/workspace/x"), ("file", "file", "x", [b"x"])])
        assert_error(upload(sbxd, "sbx_not.valid", body), 400, "invalid sandbox id")
        assert_error(sbxd.req("GET", f"/sandboxes/{MISSING}/files", params={"path": "/etc/hostname"}), 404,
                     "sandbox not found")
    finally:
        sbxd.delete(sid)


# ----------------------------------------------------------------- events

def test_lifecycle_events_listing(sbxd, orgb):
    sid = sbxd.create(metadata={"purpose": "events"}, timeout=600)
    try:
        assert sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 900}).status_code == 204
        assert sbxd.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        r = sbxd.req("POST", f"/sandboxes/{sid}/connect", json={})
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        for t in range(7):
            assert sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 1000 + t}).status_code == 204
    finally:
        assert sbxd.delete(sid).status_code == 204
    expect = (["sandbox.lifecycle.created", "sandbox.lifecycle.updated", "sandbox.lifecycle.paused",
               "sandbox.lifecycle.resumed"] + ["sandbox.lifecycle.updated"] * 7 + ["sandbox.lifecycle.killed"])
    asc = events(sbxd, sbxd.key, sid, orderAsc="true", limit=100)
    assert [e["type"] for e in asc] == expect
    team = asc[0]["sandboxTeamId"]
    assert team
    for e in asc:
        assert set(e) == EVENT_KEYS, e
        assert e["version"] == "v2" and e["sandboxId"] == sid and e["sandboxTeamId"] == team
        assert e["sandboxTemplateId"] == "base"
        assert isinstance(e["sandboxBuildId"], str) and isinstance(e["sandboxExecutionId"], str)
        assert isinstance(e["eventData"], dict) and e["eventData"]["sandbox_metadata"] == {"purpose": "events"}
    assert len({e["id"] for e in asc}) == len(asc)
    times = [parse_ts(e["timestamp"]) for e in asc]
    assert times == sorted(times)
    assert asc[-1]["eventData"]["reason"] == "request"
    # newest first by default, 10 at most
    desc = events(sbxd, sbxd.key, sid)
    assert desc == list(reversed(asc))[:10]
    assert events(sbxd, sbxd.key, sid, orderAsc="false", limit=100) == list(reversed(asc))
    # offset and limit
    assert events(sbxd, sbxd.key, sid, limit=2) == list(reversed(asc))[:2]
    assert events(sbxd, sbxd.key, sid, offset=1, limit=3, orderAsc="true") == asc[1:4]
    assert events(sbxd, sbxd.key, sid, offset=11, limit=5, orderAsc="true") == asc[11:]
    assert events(sbxd, sbxd.key, sid, offset=12) == []
    assert events(sbxd, sbxd.key, sid, limit=100) == list(reversed(asc))
    # type filters, repeatable or comma separated
    killed = events(sbxd, sbxd.key, sid, types="sandbox.lifecycle.killed")
    assert killed == [asc[-1]]
    both = events(sbxd, sbxd.key, sid, types=["sandbox.lifecycle.paused", "sandbox.lifecycle.resumed"],
                  orderAsc="true")
    assert [e["type"] for e in both] == ["sandbox.lifecycle.paused", "sandbox.lifecycle.resumed"]
    assert both == asc[2:4]
    assert events(sbxd, sbxd.key, sid, types="sandbox.lifecycle.paused,sandbox.lifecycle.resumed",
                  orderAsc="true") == both
    assert len(events(sbxd, sbxd.key, sid, types="sandbox.lifecycle.updated", limit=100)) == 8
    # the organisation's list has them, newest first
    org = events(sbxd, sbxd.key, limit=100)
    assert [e for e in org if e["sandboxId"] == sid] == list(reversed(asc))
    ts = [parse_ts(e["timestamp"]) for e in org]
    assert ts == sorted(ts, reverse=True)
    assert len(events(sbxd, sbxd.key)) == 10
    assert [e["id"] for e in events(sbxd, sbxd.key, types="sandbox.lifecycle.killed", limit=100)
            if e["sandboxId"] == sid] == [asc[-1]["id"]]
    assert all(e["type"] == "sandbox.lifecycle.killed"
               for e in events(sbxd, sbxd.key, types="sandbox.lifecycle.killed", limit=100))
    # another organisation sees none of them
    assert sid not in [e["sandboxId"] for e in events(sbxd, orgb, limit=100)]
    assert_error(call(sbxd, orgb, "GET", f"/events/sandboxes/{sid}"), 404, "sandbox not found")
    # bad parameters
    lim = "limit must be an integer between 1 and 100"
    for params, msg in [({"limit": 101}, lim), ({"limit": "ten"}, lim), ({"limit": -1}, lim), ({"limit": 0}, lim),
                        ({"limit": ""}, lim), ({"offset": "x"}, "offset must be an integer between 0 and 1073741824"),
                        ({"offset": -1}, "offset must be an integer between 0 and 1073741824"), ({"orderAsc": "yes"}, "orderAsc must be true or false"),
                        ({"types": "sandbox.lifecycle.exploded"}, "unknown event type: sandbox.lifecycle.exploded")]:
        assert_error(sbxd.req("GET", f"/events/sandboxes/{sid}", params=params), 400, msg)
        assert_error(sbxd.req("GET", "/events/sandboxes", params=params), 400, msg)
    assert_error(sbxd.req("GET", f"/events/sandboxes/{MISSING}"), 404, "sandbox not found")
    assert_error(sbxd.req("GET", "/events/sandboxes/not_an_id"), 400, "invalid sandbox id")


def test_event_limit_zero_does_not_bypass_the_maximum(sbxd):
    """limit is 1..100: limit=0 must not mean "everything"."""
    sid = sbxd.create()
    try:
        for t in range(3):
            assert sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 100 + t}).status_code == 204
    finally:
        sbxd.delete(sid)
    for path in (f"/events/sandboxes/{sid}", "/events/sandboxes"):
        r = sbxd.req("GET", path, params={"limit": 0})
        assert_error(r, 400, "limit must be an integer between 1 and 100")


def test_expiry_is_a_killed_event_with_reason_timeout(sbxd):
    sid = sbxd.create(timeout=2)
    t0 = time.time()
    s = wait_for(lambda: (lambda j: j if j["status"] == "stopped" else None)(sbxd.get(sid).json()), 10,
                 step=0.1, what="the sandbox to expire")
    assert time.time() - t0 >= 1.5
    assert s["stopReason"] == "timeout"
    evs = events(sbxd, sbxd.key, sid, orderAsc="true")
    assert [e["type"] for e in evs] == ["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]
    assert evs[-1]["eventData"]["reason"] == "timeout"
    killed = events(sbxd, sbxd.key, sid, types="sandbox.lifecycle.killed")
    assert len(killed) == 1 and killed[0]["eventData"]["reason"] == "timeout"
    assert sid in [x["sandboxID"] for x in sbxd.req("GET", "/sandboxes?status=stopped").json()]
    assert_error(sbxd.delete(sid), 404, "sandbox not found")


# --------------------------------------------------------- webhooks: CRUD

def test_webhook_crud(whd):
    orgb = whd.new_key(org="crud-b")
    body = {"name": "crud", "url": "http://127.0.0.1:9/hook", "events": ["sandbox.lifecycle.killed"],
            "signatureSecret": "very-secret-value"}
    r = whd.req("POST", "/events/webhooks", json=body)
    assert r.status_code == 201, r.text
    w = r.json()
    assert set(w) == WEBHOOK_KEYS, w
    assert "very-secret-value" not in r.text
    assert (w["name"], w["url"], w["events"], w["enabled"]) == ("crud", body["url"], body["events"], True)
    assert w["id"] and w["teamID"]
    parse_ts(w["createdAt"])
    wid = w["id"]
    try:
        r = whd.req("GET", "/events/webhooks")
        assert r.status_code == 200 and w in r.json() and "very-secret-value" not in r.text
        r = whd.req("GET", f"/events/webhooks/{wid}")
        assert r.status_code == 200 and r.json() == w and "very-secret-value" not in r.text
        # PATCH replaces only the fields given
        r = whd.req("PATCH", f"/events/webhooks/{wid}", json={"name": "renamed", "enabled": False})
        assert r.status_code == 200, r.text
        assert r.json() == dict(w, name="renamed", enabled=False)
        r = whd.req("PATCH", f"/events/webhooks/{wid}",
                     json={"events": ["sandbox.lifecycle.created", "sandbox.lifecycle.paused"],
                           "url": "https://127.0.0.1:9/x", "signatureSecret": "another-secret"})
        assert r.status_code == 200, r.text
        w2 = r.json()
        assert w2 == dict(w, name="renamed", enabled=False, url="https://127.0.0.1:9/x",
                          events=["sandbox.lifecycle.created", "sandbox.lifecycle.paused"])
        assert "another-secret" not in r.text
        assert whd.req("GET", f"/events/webhooks/{wid}").json() == w2
        r = whd.req("PATCH", f"/events/webhooks/{wid}", json={"enabled": True})
        assert r.status_code == 200 and r.json() == dict(w2, enabled=True)
        # bad PATCHes change nothing
        assert_error(whd.req("PATCH", f"/events/webhooks/{wid}", json={"url": "ftp://x"}), 400,
                     "url must be an http or https URL")
        assert_error(whd.req("PATCH", f"/events/webhooks/{wid}", json={"events": ["nope"]}), 400,
                     "unknown event type: nope")
        assert_error(whd.req("PATCH", f"/events/webhooks/{wid}", json={"enabled": "yes"}), 400,
                     "enabled must be a boolean")
        assert whd.req("GET", f"/events/webhooks/{wid}").json() == dict(w2, enabled=True)
        r = whd.req("GET", f"/events/webhooks/{wid}/deliveries")
        assert r.status_code == 200 and isinstance(r.json(), list)
        # another organisation cannot see or change it
        for method, path, kw in [("GET", f"/events/webhooks/{wid}", {}),
                                 ("PATCH", f"/events/webhooks/{wid}", {"json": {"name": "b"}}),
                                 ("DELETE", f"/events/webhooks/{wid}", {}),
                                 ("GET", f"/events/webhooks/{wid}/deliveries", {})]:
            assert_error(call(whd, orgb, method, path, **kw), 404, "webhook not found")
        assert wid not in [x["id"] for x in call(whd, orgb, "GET", "/events/webhooks").json()]
        assert whd.req("GET", f"/events/webhooks/{wid}").json() == dict(w2, enabled=True)
    finally:
        r = whd.req("DELETE", f"/events/webhooks/{wid}")
    assert r.status_code == 204 and r.content == b""
    assert_error(whd.req("GET", f"/events/webhooks/{wid}"), 404, "webhook not found")
    assert_error(whd.req("DELETE", f"/events/webhooks/{wid}"), 404, "webhook not found")
    assert_error(whd.req("PATCH", f"/events/webhooks/{wid}", json={"name": "x"}), 404, "webhook not found")
    assert_error(whd.req("GET", f"/events/webhooks/{wid}/deliveries"), 404, "webhook not found")
    assert wid not in [x["id"] for x in whd.req("GET", "/events/webhooks").json()]


def test_webhook_validation(whd):
    before = whd.req("GET", "/events/webhooks").json()
    good = {"name": "v", "url": "http://127.0.0.1:9/", "events": ["sandbox.lifecycle.created"]}
    cases = [
        (dict(good, url="ftp://example.com/"), "url must be an http or https URL"),
        (dict(good, url="127.0.0.1:9/hook"), "url must be an http or https URL"),
        (dict(good, url=""), "url must be an http or https URL"),
        (dict(good, url=5), "url must be a string"),
        (dict(good, events=["sandbox.lifecycle.exploded"]), "unknown event type: sandbox.lifecycle.exploded"),
        (dict(good, events=["sandbox.lifecycle.created", "created"]), "unknown event type: created"),
        (dict(good, events=[]), "events must be a non-empty array of event types"),
        (dict(good, events="sandbox.lifecycle.created"), "events must be a non-empty array of event types"),
        ({k: v for k, v in good.items() if k != "url"}, "url is required"),
        ({k: v for k, v in good.items() if k != "events"}, "events is required"),
        (dict(good, enabled="yes"), "enabled must be a boolean"),
        (dict(good, name=7), "name must be a string"),
        (dict(good, signatureSecret=["x"]), "signatureSecret must be a string"),
    ]
    for body, msg in cases:
        assert_error(whd.req("POST", "/events/webhooks", json=body), 400, msg)
    assert_error(whd.req("POST", "/events/webhooks", data="{not json"), 400, prefix="malformed JSON body: ")
    assert_error(whd.req("POST", "/events/webhooks", data="[1]"), 400, "request body must be a JSON object")
    assert_error(whd.req("PUT", "/events/webhooks", json=good), 405, "method not allowed")
    assert whd.req("GET", "/events/webhooks").json() == before
    # enabled=false is kept
    r = whd.req("POST", "/events/webhooks", json=dict(good, enabled=False))
    assert r.status_code == 201 and r.json()["enabled"] is False and r.json()["name"] == "v"
    assert whd.req("DELETE", f"/events/webhooks/{r.json()['id']}").status_code == 204


# ----------------------------------------------------- webhooks: delivery

def test_webhook_receives_every_event_once_in_order_signed(whd):
    secret = "s3cr3t-\u00e9"
    allr, killr, offr, borg = Receiver(), Receiver(), Receiver(), Receiver()
    bkey = whd.new_key(org="whorgb")
    hooks = []
    try:
        w_all = webhook(whd, whd.key, allr.url, secret=secret)
        w_kill = webhook(whd, whd.key, killr.url, events=["sandbox.lifecycle.killed"], secret="k")
        w_off = webhook(whd, whd.key, offr.url, enabled=False)
        w_b = webhook(whd, bkey, borg.url, secret="b")
        hooks = [(whd.key, w_all), (whd.key, w_kill), (whd.key, w_off), (bkey, w_b)]
        sid = whd.create(metadata={"hook": "yes"})
        bsid = create_as(whd, bkey)
        assert whd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 600}).status_code == 204
        assert whd.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        assert whd.req("POST", f"/sandboxes/{sid}/connect", json={}).status_code == 200
        assert whd.delete(sid).status_code == 204
        assert call(whd, bkey, "DELETE", f"/sandboxes/{bsid}").status_code == 204
        allr.wait(5, 15)
        killr.wait(1, 15)
        borg.wait(2, 15)
        time.sleep(1.0)  # anything extra would come now
        evs = events(whd, whd.key, sid, orderAsc="true")
        assert [e["type"] for e in evs] == EVENT_TYPES
        got = allr.received()
        assert [json.loads(g["body"]) for g in got] == evs, whd.logs()
        assert all(g["status"] == 200 and g["path"] == "/hook" for g in got)
        for g in got:
            check_signed(g, secret, w_all["id"])
        assert len({g["headers"]["e2b-delivery-id"] for g in got}) == 5
        d = deliveries(whd, whd.key, w_all["id"])
        assert [x["eventID"] for x in d] == [e["id"] for e in evs]
        assert all(x["state"] == "delivered" and x["attempts"] == 1 and x["lastStatus"] == 200 for x in d), d
        # only the types asked for, only enabled webhooks, only the organisation's events
        kg = killr.received()
        assert [json.loads(g["body"]) for g in kg] == [evs[-1]]
        check_signed(kg[0], "k", w_kill["id"])
        assert offr.received() == []
        bg = borg.received()
        assert [json.loads(g["body"])["sandboxId"] for g in bg] == [bsid, bsid]
        assert [json.loads(g["body"])["type"] for g in bg] == ["sandbox.lifecycle.created",
                                                               "sandbox.lifecycle.killed"]
        check_signed(bg[0], "b", w_b["id"])
        assert all(json.loads(g["body"])["sandboxId"] == sid for g in got + kg)
    finally:
        for key, w in hooks:
            call(whd, key, "DELETE", f"/events/webhooks/{w['id']}")
        for r in (allr, killr, offr, borg):
            r.close()


def test_webhook_retries_until_2xx_then_continues_in_order(whd):
    rec = Receiver(script=[500, 500])
    w = webhook(whd, whd.key, rec.url, secret="retry")
    try:
        sid = whd.create()
        assert whd.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        assert whd.delete(sid).status_code == 204
        rec.wait(3, 20, what="created, paused and killed delivered")
        time.sleep(1.0)
        evs = events(whd, whd.key, sid, orderAsc="true")
        assert [e["type"] for e in evs] == ["sandbox.lifecycle.created", "sandbox.lifecycle.paused",
                                            "sandbox.lifecycle.killed"]
        got = rec.received()
        assert [g["status"] for g in got] == [500, 500, 200, 200, 200], whd.logs()
        assert got[0]["body"] == got[1]["body"] == got[2]["body"]
        assert [json.loads(g["body"]) for g in got[2:]] == evs
        for g in got:
            check_signed(g, "retry", w["id"])
        assert len({g["headers"]["e2b-delivery-id"] for g in got}) == 5
        # retries are spaced by the (scaled) schedule: 10 s and 30 s times 0.01
        assert got[1]["t"] - got[0]["t"] >= 0.08, [g["t"] for g in got]
        assert got[2]["t"] - got[1]["t"] >= 0.25, [g["t"] for g in got]
        d = deliveries(whd, whd.key, w["id"])
        assert [x["eventID"] for x in d] == [e["id"] for e in evs]
        assert [(x["state"], x["attempts"], x["lastStatus"]) for x in d] == \
            [("delivered", 3, 200), ("delivered", 1, 200), ("delivered", 1, 200)], d
    finally:
        whd.req("DELETE", f"/events/webhooks/{w['id']}")
        rec.close()


def test_webhook_failing_delivery_is_recorded(whd):
    rec = Receiver(default=503)
    w = webhook(whd, whd.key, rec.url)
    try:
        sid = whd.create()
        assert whd.delete(sid).status_code == 204
        rec.wait(2, 10, ok_only=False)
        d = wait_for(lambda: (lambda v: v if v and v[0]["attempts"] >= 2 else None)(deliveries(whd, whd.key, w["id"])),
                     10, what="two failed attempts recorded")
        first = d[0]
        assert first["state"] == "pending" and first["lastStatus"] == 503 and "503" in first["lastError"], d
        parse_ts(first["nextAttemptAt"])
        # the later event waits behind the first: nothing sent for it yet
        assert d[1]["state"] == "pending" and d[1]["attempts"] == 0, d
        assert {json.loads(g["body"])["type"] for g in rec.received()} == {"sandbox.lifecycle.created"}
        # a deleted webhook gets nothing more
        assert whd.req("DELETE", f"/events/webhooks/{w['id']}").status_code == 204
        time.sleep(0.3)
        n = len(rec.received())
        time.sleep(1.5)
        assert len(rec.received()) == n, rec.received()[n:]
    finally:
        whd.req("DELETE", f"/events/webhooks/{w['id']}")
        rec.close()


def test_webhook_deliveries_survive_kill9(tmp_path):
    d = start_webhook_daemon(str(tmp_path / "state"))
    rec = Receiver(default=500)
    try:
        w = webhook(d, d.key, rec.url, secret="crash")
        sid = d.create()
        assert d.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 600}).status_code == 204
        assert d.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        assert d.req("POST", f"/sandboxes/{sid}/connect", json={}).status_code == 200
        assert d.delete(sid).status_code == 204
        evs = events(d, d.key, sid, orderAsc="true")
        assert [e["type"] for e in evs] == EVENT_TYPES
        # wait for 5 failed attempts of the first event: the next one is due
        # 3 s later, so no attempt is in flight when the daemon dies
        dl = wait_for(lambda: (lambda v: v if v[0]["attempts"] >= 5 else None)(deliveries(d, d.key, w["id"])),
                      15, what="five failed attempts")
        n_before = len(rec.received())
        nxt = parse_ts(dl[0]["nextAttemptAt"]).timestamp()
        assert n_before == sum(x["attempts"] for x in dl) == 5, (dl, rec.received())
        assert nxt - time.time() > 1.0, dl
        assert [x["state"] for x in dl] == ["pending"] * 5
        d.kill9()
        assert len(rec.received()) == n_before
        rec.default = 200
        d.start(env=dict(os.environ, **{SCALE_ENV: "0.01"}), args=OPEN_LOOPBACK)
        rec.wait(5, 20, what="every event after the restart")
        time.sleep(1.5)
        got = rec.received()
        failed, ok = got[:n_before], got[n_before:]
        assert all(g["status"] == 500 for g in failed)
        assert {g["body"] for g in failed} == {failed[0]["body"]}
        assert [json.loads(g["body"]) for g in ok] == evs, d.logs()  # each once, in order
        for g in got:
            check_signed(g, "crash", w["id"])
        assert len({g["headers"]["e2b-delivery-id"] for g in got}) == len(got)
        dl = deliveries(d, d.key, w["id"])
        assert [(x["eventID"], x["state"], x["attempts"], x["lastStatus"]) for x in dl] == \
            [(evs[0]["id"], "delivered", 6, 200)] + [(e["id"], "delivered", 1, 200) for e in evs[1:]], dl
        # another kill -9 and restart sends nothing again
        d.kill9()
        d.start(env=dict(os.environ, **{SCALE_ENV: "0.01"}), args=OPEN_LOOPBACK)
        time.sleep(1.5)
        assert len(rec.received()) == len(got), rec.received()[len(got):]
        assert deliveries(d, d.key, w["id"]) == dl
    finally:
        try:
            d.cleanup()
        finally:
            d.stop()
            rec.close()


def test_kill9_keeps_keys_sandboxes_events_and_webhooks(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=OPEN_LOOPBACK)
    rec = Receiver()
    made = []
    try:
        bkey = d.new_key(org="persist-b", e2b=True)
        gone = d.new_key(org="persist-gone")
        kid, _ = key_id(d, "persist-gone")
        subprocess.run([SBXD, "keys", "revoke", kid, "--state-dir", d.state_dir], check=True, capture_output=True)
        a1 = d.create(metadata={"n": "1"}, timeout=900)
        a2 = d.create(timeout=900)
        a3 = d.create()
        b1 = create_as(d, bkey, metadata={"org": "b"})
        made = [(d.key, a1), (d.key, a2), (bkey, b1)]
        d.write(a1, "/home/user/f.txt", "persist")
        assert d.req("POST", f"/sandboxes/{a2}/pause").status_code == 204
        assert d.delete(a3).status_code == 204
        wa = webhook(d, d.key, rec.url, secret="p")
        wb = webhook(d, bkey, rec.url, events=["sandbox.lifecycle.killed"], enabled=False)
        assert d.req("POST", f"/sandboxes/{a1}/timeout", json={"timeout": 1200}).status_code == 204
        rec.wait(1, 15)
        time.sleep(0.3)

        def snapshot():
            return {
                "a_sandboxes": d.req("GET", "/sandboxes").json(),
                "a_stopped": d.req("GET", "/sandboxes?status=stopped").json(),
                "b_sandboxes": call(d, bkey, "GET", "/sandboxes", header="x-api-key").json(),
                "a_events": events(d, d.key, limit=100),
                "b_events": events(d, bkey, limit=100),
                "a_webhooks": d.req("GET", "/events/webhooks").json(),
                "b_webhooks": call(d, bkey, "GET", "/events/webhooks").json(),
                "a_deliveries": deliveries(d, d.key, wa["id"]),
                "sandboxes": {s: d.get(s).json() for s in (a1, a2, a3)},
            }

        before = snapshot()
        assert {s["sandboxID"]: s["status"] for s in before["a_sandboxes"]} == \
            {a1: "running", a2: "paused", a3: "stopped"}
        d.kill9()
        d.start(args=OPEN_LOOPBACK)
        after = snapshot()
        for k in before:
            assert after[k] == before[k], (k, before[k], after[k])
        assert after["sandboxes"][a3]["stopReason"] == "request"
        # keys still authenticate as before
        for header in ("bearer", "x-api-key"):
            assert call(d, d.key, "GET", "/sandboxes", header=header).status_code == 200
            assert call(d, bkey, "GET", f"/sandboxes/{b1}", header=header).json()["metadata"] == {"org": "b"}
            assert_error(call(d, gone, "GET", "/sandboxes", header=header), 401, "API key revoked")
            assert_error(call(d, "sk-sb-" + "1" * 40, "GET", "/sandboxes", header=header), 401, "invalid API key")
            assert_error(call(d, bkey, "GET", f"/sandboxes/{a1}", header=header), 404, "sandbox not found")
        # the sandboxes still work and the limits still count them
        assert d.read(a1, "/home/user/f.txt") == b"persist"
        n = len(rec.received())
        assert d.req("POST", f"/sandboxes/{a2}/connect", json={}).json()["status"] == "running"
        # and new events reach the webhook once, after the old ones
        assert d.delete(a2).status_code == 204
        rec.wait(n + 2, 15)
        time.sleep(0.5)
        new = [json.loads(g["body"]) for g in rec.received()[n:]]
        assert [(e["type"], e["sandboxId"]) for e in new] == [("sandbox.lifecycle.resumed", a2),
                                                               ("sandbox.lifecycle.killed", a2)], new
        got_ids = [json.loads(g["body"])["id"] for g in rec.received()]
        assert len(got_ids) == len(set(got_ids))
    finally:
        for key, sid in made:
            delete_quietly(d, key, sid)
        d.stop()
        rec.close()


# -------------------------------------------------------------- bad input

def test_malformed_and_mistyped_bodies(sbxd):
    for data in ("{", '{"templateID": ', "nul", '{"templateID": "base",}', '{"a": 1} x',
                 '{"templateID": "base", "templateID": "base"}'):
        r = sbxd.req("POST", "/sandboxes", data=data, headers={"Content-Type": "application/json"})
        assert_error(r, 400, prefix="malformed JSON body: ")
    assert_error(sbxd.req("POST", "/sandboxes", data="[]"), 400, "request body must be a JSON object")
    assert_error(sbxd.req("POST", "/sandboxes", data='[{"templateID": "base"}]'), 400,
                 "request body must be a JSON object")
    for data in ('"base"', "42"):  # not even a JSON document to jansson
        assert_error(sbxd.req("POST", "/sandboxes", data=data), 400)
    for body, msg in [({"templateID": 5}, "templateID must be a string"),
                      ({}, "templateID is required"),
                      ({"templateID": ""}, "templateID is required"),
                      ({"templateID": "base", "timeout": "10"}, "timeout must be an integer"),
                      ({"templateID": "base", "timeout": 1.5}, "timeout must be an integer"),
                      ({"templateID": "base", "metadata": "x"}, "metadata must be an object"),
                      ({"templateID": "base", "metadata": [1]}, "metadata must be an object"),
                      ({"templateID": "base", "envVars": {"A": 1}}, "envVars: invalid variable A"),
                      ({"templateID": "base", "envVars": ["A=1"]}, "envVars must be an object of strings"),
                      ({"templateID": "base", "cpuCount": True}, "cpuCount must be an integer")]:
        assert_error(sbxd.req("POST", "/sandboxes", json=body), 400, msg)
    sid = sbxd.create()
    try:
        r = sbxd.req("POST", f"/sandboxes/{sid}/timeout", data="{oops")
        assert_error(r, 400, prefix="malformed JSON body: ")
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": "60"}), 400,
                     "timeout must be an integer")
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/processes", data="{"), 400, prefix="malformed JSON body: ")
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/processes", json={"cmd": 1}), 400, "cmd must be a string")
        assert_error(sbxd.req("POST", f"/sandboxes/{sid}/filesystem", json={"path": "/tmp/x", "content": "%%%"}),
                     400, "content must be base64")
        assert sbxd.get(sid).json()["status"] == "running"
    finally:
        sbxd.delete(sid)
    assert_error(sbxd.req("POST", "/events/webhooks", data="{"), 400, prefix="malformed JSON body: ")



def test_error_quoting_bytes_that_are_not_utf8_is_answered(sbxd):
    """An error message quoting what a client (or a sandbox) sent is
    answered in JSON even when those bytes are not UTF-8: they become
    U+FFFD, instead of the connection closing with no answer at all
    (found by tests/fuzz/fuzz_json_body.c, through a kernel's stderr)."""
    r = sbxd.req("GET", "/sandboxes?status=%FFx%C3")
    assert_error(r, 400, "invalid status: \ufffdx\ufffd")
    assert sbxd.req("GET", "/sandboxes").status_code == 200

def test_over_long_body_is_refused(sbxd):
    """JSON bodies may be 1 MiB; bodies carrying file contents (the
    filesystem write) 64 MiB."""
    before = len(live(sbxd))
    big = b'{"templateID": "base", "metadata": {"x": "' + b"a" * MB + b'"}}'
    r = sbxd.req("POST", "/sandboxes", data=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "request body too large (max 1048576 bytes)")
    assert len(live(sbxd)) == before
    r = sbxd.req("POST", "/events/webhooks", data=big)
    assert_error(r, 413, "request body too large (max 1048576 bytes)")
    sid = sbxd.create()
    try:
        huge = b'{"path": "/tmp/x", "content": "' + b"A" * (64 * MB) + b'"}'
        r = sbxd.req("POST", f"/sandboxes/{sid}/filesystem", data=huge)
        assert_error(r, 413, "request body too large (max 67108864 bytes)")
        # a write of 3 MiB is a body over 1 MiB on a route that takes it
        data = os.urandom(3 * MB)
        assert sbxd.write(sid, "/tmp/three", data)["size"] == len(data)
        assert sbxd.read(sid, "/tmp/three", expect=400)["message"].startswith("file too large")
    finally:
        # the daemon is fine afterwards
        assert sbxd.delete(sid).status_code == 204


def test_invalid_and_unknown_sandbox_ids(sbxd):
    # what cannot be an id is refused; an id of another shape (letters,
    # digits, '-' and '_': E2B's, say) is only unknown, as E2B answers it
    for bad, status in [("abc", 404), ("sbx_", 404), ("sbx_ABC", 404), ("SBX_abc", 404), ("sbx_a-b", 404),
                        ("sbx_a.b", 400), ("sbx_" + "a" * 200, 400), ("sbx_%C3%A9", 400), ("sbx_a%20b", 400)]:
        for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/connect"),
                               ("GET", "/processes"), ("GET", "/files?path=/etc/hostname"),
                               ("GET", "/filesystem?path=/etc/hostname")]:
            assert_error(sbxd.req(method, f"/sandboxes/{bad}{suffix}"), status,
                         "invalid sandbox id" if status == 400 else "sandbox not found")
    for method, suffix, kw in [("GET", "", {}), ("DELETE", "", {}), ("POST", "/pause", {}),
                               ("POST", "/connect", {"json": {}}), ("POST", "/timeout", {"json": {"timeout": 9}}),
                               ("GET", "/processes", {}), ("POST", "/processes", {"json": {"cmd": "true"}}),
                               ("GET", "/metrics", {}),
                               ("GET", "/files", {"params": {"path": "/etc/hostname"}}),
                               ("GET", "/filesystem", {"params": {"path": "/etc/hostname"}})]:
        assert_error(sbxd.req(method, f"/sandboxes/{MISSING}{suffix}", **kw), 404, "sandbox not found")


# ------------------------------------------------------------- robustness

def test_create_does_not_hang_while_clients_connect(tmp_path):
    """Sandboxes are created while other clients keep opening connections
    (every one a new connection thread in the daemon): each create answers
    within seconds."""
    d = Sbxd(str(tmp_path / "state")).start()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                requests.get(d.url + "/health", timeout=5)
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 20
        n = 0
        while time.time() < deadline:
            t0 = time.time()
            try:
                r = d.req("POST", "/sandboxes", json={"templateID": "base"}, timeout=15)
            except requests.ReadTimeout:
                pytest.fail(f"POST /sandboxes #{n + 1} got no answer in 15 s; daemon log:\n{d.logs()}")
            assert r.status_code == 201, r.text
            assert time.time() - t0 < 15
            assert d.delete(r.json()["sandboxID"]).status_code == 204
            n += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
        try:
            d.cleanup()
        except requests.RequestException:
            pass
        d.stop()
        # a sandbox process stuck before its exec outlives the daemon
        stuck = subprocess.run(["pgrep", "-f", f"state-dir {d.state_dir}$"], capture_output=True,
                               text=True).stdout.split()
        for pid in stuck:
            os.kill(int(pid), 9)
        if stuck:
            Sbxd(d.state_dir, port=d.port).start().stop()  # discards its spare sandboxes


def test_v2_paths_reach_the_v1_routes(sbxd):
    """E2B's SDK creates and connects through /v2/sandboxes; the routes it
    shares with v1 answer there too, beside v2's own list."""
    r = sbxd.req("POST", "/v2/sandboxes", json={"templateID": "base", "timeout": 60})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        assert sbxd.req("POST", f"/v2/sandboxes/{sid}/connect", json={"timeout": 60}).status_code == 200
        assert sbxd.req("GET", f"/v2/sandboxes/{sid}").json()["sandboxID"] == sid
        assert sid in [s["sandboxID"] for s in sbxd.req("GET", "/v2/sandboxes").json()]
        assert sbxd.req("PATCH", "/v2/sandboxes").status_code == 405
    finally:
        sbxd.delete(sid)
