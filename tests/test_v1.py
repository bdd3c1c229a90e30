"""Seed 004's API (/v1/sandboxes) against a real daemon: every endpoint, the
seed's messages word for word, the states a sandbox goes through (queueing
under a small operator capacity included), pause and resume keeping files
and processes, maxDurationMs, commands, code and files, and ownership.
"""
import base64
import json
import os
import subprocess
import threading
import time
from datetime import datetime

import pytest
import requests

from conftest import SBXD, Sbxd, host_traces

OBJECT_KEYS = {"id", "status", "runtime", "size", "region", "terminalUrl", "previewBaseUrl", "capabilities",
               "pairedBrowser", "opencode", "browserPreview", "humanHandoff", "artifacts", "duration",
               "createdAt", "startedAt"}
ITEM_KEYS = {"id", "status", "runtime", "size", "region", "createdAt", "startedAt"}
TEMPLATES = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")


def have_template(name):
    return os.path.exists(os.path.join(TEMPLATES, name))


# The seed's default runtime is bun; where its template is not built the
# tests use base, which every machine running the suite has.
RUNTIME = "bun" if have_template("bun") else "base"


def orgs(server, *args):
    subprocess.run([SBXD, "orgs", *args, "--state-dir", server.state_dir], check=True, capture_output=True)


class V1:
    """A client of /v1 with one API key."""

    def __init__(self, server, key):
        self.s = server
        self.http = requests.Session()
        self.http.headers["Authorization"] = "Bearer " + key

    def req(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        return self.http.request(method, self.s.url + path, **kw)

    def create(self, expect=200, **body):
        body.setdefault("runtime", RUNTIME)
        r = self.req("POST", "/v1/sandboxes", json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def get(self, sid, expect=200):
        r = self.req("GET", "/v1/sandboxes", params={"id": sid})
        assert r.status_code == expect, r.text
        return r.json()

    def status(self, sid):
        return self.get(sid)["status"]

    def wait(self, sid, want, timeout=30):
        want = {want} if isinstance(want, str) else set(want)
        seen = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status(sid)
            if not seen or seen[-1] != st:
                seen.append(st)
            if st in want:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"{sid} never reached {want}: {seen}")

    def ready(self, **body):
        sid = self.create(**body)["id"]
        self.wait(sid, "ready")
        return sid

    def delete(self, sid, expect=200):
        r = self.req("DELETE", "/v1/sandboxes", params={"id": sid})
        assert r.status_code == expect, r.text
        return r.json()

    def exec(self, sid, command, expect=200, **fields):
        r = self.req("POST", "/v1/sandboxes/exec", json={"id": sid, "command": command, **fields})
        assert r.status_code == expect, r.text
        return r.json()

    def code(self, sid, language, code, expect=200):
        r = self.req("POST", "/v1/sandboxes/code", json={"id": sid, "language": language, "code": code})
        assert r.status_code == expect, r.text
        return r.json()

    def post(self, path, body, expect=200):
        r = self.req("POST", path, json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def end_all(self):
        for it in self.req("GET", "/v1/sandboxes").json()["items"]:
            if it["status"] not in ("ended", "failed", "ending"):
                self.delete(it["id"])


@pytest.fixture(scope="module")
def v1(sbxd):
    c = V1(sbxd, sbxd.key)
    yield c
    c.end_all()


@pytest.fixture(scope="module")
def other(sbxd):
    return V1(sbxd, sbxd.new_key(org="v1-other"))


@pytest.fixture
def box(v1):
    sid = v1.ready()
    yield sid
    v1.delete(sid)


# ---- keys and routes ----

def test_missing_or_invalid_key_is_401_with_the_seeds_message(sbxd):
    for path, method in [("/v1/sandboxes", "GET"), ("/v1/sandboxes", "POST"), ("/v1/usage", "GET"),
                         ("/v1/sandboxes/exec", "POST"), ("/v1/no/such/path", "GET")]:
        for headers in [{}, {"Authorization": "Bearer sk-sb-nope"}, {"Authorization": "Basic abc"}]:
            r = requests.request(method, sbxd.url + path, headers=headers, json={}, timeout=10)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json() == {"error": "Invalid or missing API key"}


def test_unknown_v1_path_with_a_key_is_404_in_the_dialects_shape(v1):
    r = v1.req("GET", "/v1/no/such/path")
    assert r.status_code == 404
    assert set(r.json()) == {"error"}


# ---- create and read ----

def test_empty_body_creates_bun_standard_ephemeral_answered_queued(v1):
    if not have_template("bun"):
        pytest.skip("the bun template is not built on this machine")
    t0 = int(time.time() * 1000)
    r = v1.req("POST", "/v1/sandboxes", json={})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a == {"id": a["id"], "status": "queued", "runtime": "bun", "size": "standard", "capabilities": None}
    seen = v1.wait(a["id"], "ready")
    assert set(seen) <= {"queued", "assigning", "ready"}, seen
    o = v1.get(a["id"])
    assert set(o) == OBJECT_KEYS
    assert o["id"] == a["id"] and o["status"] == "ready" and o["runtime"] == "bun" and o["size"] == "standard"
    assert o["region"] is None and o["capabilities"] is None and o["previewBaseUrl"] is None
    assert o["duration"] is None and o["artifacts"] is None and o["pairedBrowser"] is None
    assert t0 - 1000 <= o["createdAt"] <= o["startedAt"] <= int(time.time() * 1000) + 1000
    assert v1.exec(a["id"], "bun --version")["exitCode"] == 0
    v1.delete(a["id"])


def test_get_and_list_show_the_seeds_fields(v1):
    sid = v1.ready(region="iad", capabilities={"storage": {"workspace": "checkpointed", "artifactPrefix": "p/"}})
    o = v1.get(sid)
    assert set(o) == OBJECT_KEYS
    assert o["region"] == "iad" and o["runtime"] == RUNTIME
    assert o["capabilities"] == {"storage": {"workspace": "checkpointed", "artifactPrefix": "p/"}}
    items = v1.req("GET", "/v1/sandboxes").json()["items"]
    mine = [i for i in items if i["id"] == sid]
    assert len(mine) == 1 and set(mine[0]) == ITEM_KEYS
    assert mine[0]["status"] == "ready" and mine[0]["region"] == "iad" and isinstance(mine[0]["startedAt"], int)
    v1.delete(sid)


@pytest.mark.parametrize("body,status,message", [
    ({"runtime": "node"}, 400, "Invalid runtime. Must be one of: bun, python, base"),
    ({"runtime": 7}, 400, "Invalid runtime. Must be one of: bun, python, base"),
    ({"runtime": ""}, 400, "Invalid runtime. Must be one of: bun, python, base"),
    ({"size": "large"}, 400, "Invalid size: 'large'. Must be one of: standard"),
    ({"size": 4}, 400, "Invalid size: '4'. Must be one of: standard"),
    ({"maxDurationMs": 0}, 400, "Invalid maxDurationMs"),
    ({"maxDurationMs": -5}, 400, "Invalid maxDurationMs"),
    ({"maxDurationMs": "60000"}, 400, "Invalid maxDurationMs"),
    ({"maxDurationMs": 3600001}, 400, "Invalid maxDurationMs"),  # the default plan: 3600 s
    ({"region": "IAD"}, 400, "Invalid region: must match /^[a-z]{3}$/"),
    ({"region": "iadx"}, 400, "Invalid region: must match /^[a-z]{3}$/"),
    ({"region": 1}, 400, "Invalid region: must match /^[a-z]{3}$/"),
    ({"capabilities": []}, 400, "capabilities must be an object"),
    ({"capabilities": {"gpu": {}}}, 400,
     "Invalid capability: 'gpu'. Must be one of: opencode, browser, documents, storage"),
    ({"capabilities": {"documents": {"libreofficeHeadless": "yes"}}}, 400,
     "capabilities.documents.libreofficeHeadless must be a boolean"),
    ({"capabilities": {"storage": {"quota": 1}}}, 400, "Invalid field capabilities.storage.quota"),
    ({"capabilities": {"storage": {"workspace": "forever"}}}, 400,
     "Invalid capabilities.storage.workspace: 'forever'. Must be one of: ephemeral, checkpointed"),
    ({"capabilities": {"browser": {"mode": "paired-banata-browser"}}}, 403,
     "Paired browser is not available on your current plan. Upgrade to Pro or higher."),
    ({"capabilities": {"opencode": {"enabled": True}}}, 403,
     "OpenCode is not available on your current plan. Upgrade to Pro or higher."),
    ({"env": {"A": 1}}, 400, "env: invalid variable A"),
    ({"ephemeral": "no"}, 400, "ephemeral must be a boolean"),
])
def test_create_validation_messages(v1, body, status, message):
    before = len(v1.req("GET", "/v1/sandboxes").json()["items"])
    r = v1.req("POST", "/v1/sandboxes", json=body)
    assert r.status_code == status, r.text
    assert r.json() == {"error": message}
    assert len(v1.req("GET", "/v1/sandboxes").json()["items"]) == before


def test_artifact_prefix_is_checked(v1):
    for bad in ["/abs", "a/../b", "", "a//b", "x" * 201, "sp ace/"]:
        r = v1.req("POST", "/v1/sandboxes", json={"capabilities": {"storage": {"artifactPrefix": bad}}})
        assert r.status_code == 400, bad
        assert "artifactPrefix" in r.json()["error"]


def test_opencode_on_pro_says_this_server_has_no_template(sbxd):
    c = V1(sbxd, sbxd.new_key(org="v1-pro"))
    orgs(sbxd, "set", "v1-pro", "--plan", "pro")
    r = c.req("POST", "/v1/sandboxes", json={"capabilities": {"opencode": {"enabled": True}}})
    assert r.status_code == 400 and "no opencode template" in r.json()["error"]
    # a disabled opencode asks for nothing
    sid = c.create(capabilities={"opencode": {"enabled": False}})["id"]
    c.wait(sid, "ready")
    c.delete(sid)
    # the browser and documents capabilities are different templates
    r = c.req("POST", "/v1/sandboxes", json={"capabilities": {"browser": {"mode": "paired-banata-browser"},
                                                              "documents": {"libreofficeHeadless": True}}})
    assert r.status_code == 400 and "cannot be combined" in r.json()["error"], r.text


def test_browser_capability_on_pro_runs_on_the_browser_template(sbxd):
    """A paired browser: the sandbox runs on the browser template, whose
    headless Chromium serves CDP on the sandbox's loopback when it is
    ready; pairedBrowser says where."""
    if not have_template("browser"):
        pytest.skip("the browser template is not built on this machine")
    c = V1(sbxd, sbxd.new_key(org="v1-probrowser"))
    orgs(sbxd, "set", "v1-probrowser", "--plan", "pro")
    caps = {"browser": {"mode": "paired-banata-browser", "recording": True, "streamPreview": True}}
    sid = c.create(capabilities=caps)["id"]
    try:
        c.wait(sid, "ready")
        o = c.get(sid)
        assert o["runtime"] == RUNTIME and o["capabilities"] == caps
        assert o["pairedBrowser"] == {"mode": "paired-banata-browser", "cdpUrl": "http://127.0.0.1:9222"}
        r = requests.get(f"{sbxd.url}/sandboxes/{sid}", headers=c.http.headers, timeout=10).json()
        assert r["templateID"] == "browser"
        r = requests.post(f"{sbxd.url}/sandboxes/{sid}/processes", headers=c.http.headers, timeout=60,
                          json={"cmd": "curl", "args": ["-fsS", o["pairedBrowser"]["cdpUrl"] + "/json/version"]})
        assert r.status_code == 200 and r.json()["exitCode"] == 0, r.text
        assert "Chrome/" in json.loads(r.json()["stdout"])["Browser"]
        # without the capability, no paired browser
        plain = c.create()["id"]
        assert c.get(plain)["pairedBrowser"] is None
        c.delete(plain)
    finally:
        c.delete(sid)


def test_max_duration_over_the_plans_limit_is_refused_and_the_default_is_the_plans(sbxd):
    c = V1(sbxd, sbxd.new_key(org="v1-free"))
    orgs(sbxd, "set", "v1-free", "--plan", "free")
    r = c.req("POST", "/v1/sandboxes", json={"runtime": RUNTIME, "maxDurationMs": 300001})
    assert r.status_code == 400 and r.json() == {"error": "Invalid maxDurationMs"}
    sid = c.create()["id"]
    c.wait(sid, "ready")
    # seed 001's view of the same sandbox shows the lifetime it got: the free plan's 300 s
    r = requests.get(f"{sbxd.url}/sandboxes/{sid}", headers=c.http.headers, timeout=10).json()
    start, end = (datetime.fromisoformat(r[k].replace("Z", "+00:00")) for k in ("startedAt", "endAt"))
    assert abs((end - start).total_seconds() - 300) < 2
    c.delete(sid)


def test_documents_capability_selects_the_documents_template(v1, sbxd):
    if not have_template("documents"):
        pytest.skip("the documents template is not built on this machine")
    sid = v1.ready(runtime="python", capabilities={"documents": {"libreofficeHeadless": True}})
    r = requests.get(f"{sbxd.url}/sandboxes/{sid}", headers=v1.http.headers, timeout=10).json()
    assert r["templateID"] == "documents"
    assert v1.get(sid)["runtime"] == "python"
    v1.delete(sid)


def test_concurrent_limit_is_429_at_once_with_the_seeds_message(sbxd):
    c = V1(sbxd, sbxd.new_key(org="v1-one"))
    orgs(sbxd, "set", "v1-one", "--max-sandboxes", "1")
    sid = c.create()["id"]  # queued or not, it counts
    r = c.req("POST", "/v1/sandboxes", json={"runtime": RUNTIME})
    assert r.status_code == 429 and r.json() == {"error": "Concurrent sandbox limit reached"}
    c.wait(sid, "ready")
    c.delete(sid)
    c.wait(sid, "ended")
    c.delete(c.create()["id"])


# ---- running things ----

def test_exec_runs_in_a_shell_with_cwd_env_and_exit_code(v1, box):
    a = v1.exec(box, "echo out; echo err >&2; echo $FOO; pwd; exit 3", cwd="/tmp", env={"FOO": "bar"})
    assert a["stdout"] == "out\nbar\n/tmp\n" and a["stderr"] == "err\n" and a["exitCode"] == 3
    assert isinstance(a["durationMs"], int) and a["durationMs"] >= 0
    a = v1.exec(box, "sleep 0.3; echo done")
    assert a["stdout"] == "done\n" and a["durationMs"] >= 300
    a = v1.exec(box, "sleep 10", timeoutMs=300)
    assert a["exitCode"] == 124 and a["durationMs"] < 5000
    for body, msg in [({"id": box}, "command is required"), ({"id": box, "command": 1}, "command must be a string"),
                      ({"id": box, "command": "true", "timeoutMs": 0}, "timeoutMs must be between"),
                      ({"command": "true"}, "Missing sandbox id")]:
        r = v1.req("POST", "/v1/sandboxes/exec", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith(msg), r.text


def test_a_sandbox_is_active_while_a_command_executes(v1, box):
    t = threading.Thread(target=v1.exec, args=(box, "sleep 1.5"))
    t.start()
    try:
        v1.wait(box, "active", timeout=5)
    finally:
        t.join()
    assert v1.status(box) == "ready"


def test_code_in_python(v1, box):
    a = v1.code(box, "python", "import sys\nprint(6 * 7)\nprint('e', file=sys.stderr)\nsys.exit(2)")
    assert a["stdout"] == "42\n" and a["stderr"] == "e\n" and a["exitCode"] == 2 and a["durationMs"] >= 0
    r = v1.req("POST", "/v1/sandboxes/code", json={"id": box, "language": "ruby", "code": "1"})
    assert r.status_code == 400
    assert r.json() == {"error": "Invalid language: 'ruby'. Must be one of: python, javascript, typescript"}
    # the code's file does not stay behind
    assert v1.exec(box, "ls /tmp/.sbxd-code-* 2>/dev/null | wc -l")["stdout"] == "0\n"


def test_code_in_javascript_and_typescript_runs_on_bun(v1):
    if not have_template("bun"):
        pytest.skip("the bun template is not built on this machine")
    sid = v1.ready(runtime="bun")
    a = v1.code(sid, "javascript", "console.log([1, 2, 3].map(x => x * 2).join(','))")
    assert a == {**a, "stdout": "2,4,6\n", "exitCode": 0}
    a = v1.code(sid, "typescript", "const n: number = 6 * 7;\nconsole.log(`${n}`);")
    assert a["stdout"] == "42\n" and a["exitCode"] == 0
    a = v1.code(sid, "typescript", "throw new Error('boom')")
    assert a["exitCode"] != 0 and "boom" in a["stderr"]
    v1.delete(sid)


# ---- files ----

def test_files_write_read_list_delete(v1, box):
    w = v1.post("/v1/sandboxes/files", {"id": box, "path": "/workspace/d/a.txt", "content": "héllo\n"})
    assert w["ok"] is True and w["size"] == len("héllo\n".encode())
    r = v1.req("GET", "/v1/sandboxes/files", params={"id": box, "path": "/workspace/d/a.txt"}).json()
    assert r["content"] == "héllo\n" and r["encoding"] == "utf8"
    blob = bytes(range(256))
    v1.post("/v1/sandboxes/files", {"id": box, "path": "/workspace/d/b.bin",
                                    "content": base64.b64encode(blob).decode(), "encoding": "base64"})
    r = v1.req("GET", "/v1/sandboxes/files", params={"id": box, "path": "/workspace/d/b.bin"}).json()
    assert r["encoding"] == "base64" and base64.b64decode(r["content"]) == blob
    r = v1.req("GET", "/v1/sandboxes/files", params={"id": box, "path": "/workspace/d/a.txt",
                                                    "encoding": "base64"}).json()
    assert base64.b64decode(r["content"]) == "héllo\n".encode()
    listing = v1.req("GET", "/v1/sandboxes/files/list", params={"id": box, "path": "/workspace/d"}).json()
    assert sorted(e["name"] for e in listing["entries"]) == ["a.txt", "b.bin"]
    assert v1.exec(box, "cat /workspace/d/a.txt")["stdout"] == "héllo\n"
    r = v1.req("DELETE", "/v1/sandboxes/files", params={"id": box, "path": "/workspace/d/a.txt"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    r = v1.req("GET", "/v1/sandboxes/files", params={"id": box, "path": "/workspace/d/a.txt"})
    assert r.status_code == 404 and set(r.json()) == {"error"}
    for params in [{"id": box}, {"path": "/x"}]:
        assert v1.req("GET", "/v1/sandboxes/files", params=params).status_code == 400
    r = v1.req("POST", "/v1/sandboxes/files", json={"id": box, "path": "/x", "content": "@@", "encoding": "base64"})
    assert r.status_code == 400
    r = v1.req("POST", "/v1/sandboxes/files", json={"id": box, "path": "/x", "content": "a", "encoding": "latin1"})
    assert r.status_code == 400 and r.json() == {"error": "Invalid encoding: 'latin1'. Must be one of: utf8, base64"}


# ---- life cycle ----

def test_pause_and_resume_keep_files_and_processes(v1):
    sid = v1.ready()
    v1.post("/v1/sandboxes/files", {"id": sid, "path": "/workspace/keep.txt", "content": "kept"})
    v1.exec(sid, "nohup sleep 1000 >/dev/null 2>&1 & echo $! > /workspace/pid")
    pid = v1.exec(sid, "cat /workspace/pid")["stdout"].strip()
    p = v1.post("/v1/sandboxes/pause", {"id": sid})
    assert set(p) == OBJECT_KEYS and p["status"] == "paused"
    assert v1.status(sid) == "paused"
    r = v1.req("POST", "/v1/sandboxes/exec", json={"id": sid, "command": "true"})
    assert r.status_code == 409 and r.json() == {"error": "Sandbox is paused; resume it first"}
    r = v1.req("POST", "/v1/sandboxes/pause", json={"id": sid})
    assert r.status_code == 409 and r.json() == {"error": "Sandbox is already paused"}
    r = v1.post("/v1/sandboxes/resume", {"id": sid})
    assert r["status"] in ("queued", "assigning", "ready")
    seen = v1.wait(sid, "ready")
    assert set(seen) <= {"queued", "assigning", "ready"}
    assert v1.exec(sid, "cat /workspace/keep.txt")["stdout"] == "kept"
    assert v1.exec(sid, f"kill -0 {pid} && echo alive")["stdout"] == "alive\n"
    v1.delete(sid)


def test_delete_is_ok_then_ending_then_ended_with_nothing_left(v1):
    sid = v1.ready()
    assert v1.delete(sid) == {"ok": True}
    seen = v1.wait(sid, "ended")
    assert set(seen) <= {"ending", "ended"}, seen
    o = v1.get(sid)
    assert o["status"] == "ended" and isinstance(o["duration"], int) and o["terminalUrl"] is None
    assert host_traces(sid) == []
    assert v1.delete(sid) == {"ok": True}  # ending an ended sandbox does nothing
    r = v1.req("POST", "/v1/sandboxes/exec", json={"id": sid, "command": "true"})
    assert r.status_code == 409 and r.json() == {"error": "Sandbox has ended"}


def test_a_sandbox_ends_at_max_duration(v1):
    sid = v1.ready(maxDurationMs=1500)
    v1.wait(sid, "ended", timeout=10)
    assert host_traces(sid) == []


def test_another_organisations_sandbox_is_404(v1, other, box):
    assert other.get(box, expect=404) == {"error": "Sandbox not found"}
    for method, path, kw in [("DELETE", "/v1/sandboxes", {"params": {"id": box}}),
                             ("POST", "/v1/sandboxes/exec", {"json": {"id": box, "command": "true"}}),
                             ("POST", "/v1/sandboxes/pause", {"json": {"id": box}}),
                             ("POST", "/v1/sandboxes/code", {"json": {"id": box, "language": "python", "code": "1"}}),
                             ("GET", "/v1/sandboxes/files", {"params": {"id": box, "path": "/etc/hostname"}}),
                             ("GET", "/v1/sandboxes/files/list", {"params": {"id": box, "path": "/"}})]:
        r = other.req(method, path, **kw)
        assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}, (path, r.text)
    assert box not in [i["id"] for i in other.req("GET", "/v1/sandboxes").json()["items"]]
    assert v1.status(box) == "ready"
    assert v1.get("sbx_nosuchsandbox000000", expect=404) == {"error": "Sandbox not found"}
    assert v1.get("../etc", expect=404) == {"error": "Sandbox not found"}


def test_usage_of_the_month(v1):
    u = v1.req("GET", "/v1/usage").json()
    assert set(u) == {"month", "usedMs", "usedHours", "limitHours", "limitMs"}
    assert u["month"] == time.strftime("%Y-%m", time.gmtime())
    assert u["usedMs"] >= 0 and abs(u["usedHours"] - u["usedMs"] / 3600000) < 1e-6
    assert u["limitHours"] is None  # the default plan: unlimited


# ---- the queue under an operator capacity of one sandbox ----

@pytest.fixture(scope="module")
def cap1(tmp_path_factory):
    d = tmp_path_factory.mktemp("sbxd-cap1")
    server = Sbxd(str(d / "state")).start(args=["--capacity-sandboxes", "1"])
    c = V1(server, server.key)
    yield c
    try:
        c.end_all()
        server.cleanup()
    finally:
        server.stop()


def test_creates_wait_queued_in_order_for_the_operators_capacity(cap1):
    c = cap1
    a = c.ready()
    b = c.create()["id"]
    d = c.create()["id"]
    time.sleep(1)
    assert c.status(b) == "queued" and c.status(d) == "queued"
    o = c.get(b)  # readable while queued, under the id the create answered
    assert o["startedAt"] is None and o["terminalUrl"] is None and o["id"] == b
    r = c.req("POST", "/v1/sandboxes/exec", json={"id": b, "command": "true"})
    assert r.status_code == 409 and r.json() == {"error": "Sandbox is not ready yet (queued)"}
    c.delete(a)
    seen = c.wait(b, "ready")
    assert seen[0] == "queued" and set(seen) <= {"queued", "assigning", "ready"}
    assert c.status(d) == "queued"  # first in, first out
    # a paused sandbox gives its place back, and a resume queues for one
    c.post("/v1/sandboxes/files", {"id": b, "path": "/workspace/f", "content": "still here"})
    c.post("/v1/sandboxes/pause", {"id": b})
    c.wait(d, "ready")
    assert c.post("/v1/sandboxes/resume", {"id": b})["status"] == "queued"
    time.sleep(1)
    assert c.status(b) == "queued"
    # ending a queued sandbox takes it out of the queue
    e = c.create()["id"]
    assert c.status(e) == "queued"
    assert c.delete(e) == {"ok": True}
    assert c.status(e) == "ended"
    c.delete(d)
    seen = c.wait(b, "ready")
    assert seen[0] in ("queued", "assigning")
    assert c.exec(b, "cat /workspace/f")["stdout"] == "still here"
    c.delete(b)


def test_other_dialects_wait_a_bounded_time_then_503(cap1):
    c = cap1
    a = c.ready()
    t0 = time.time()
    r = c.s.req("POST", "/sandboxes", json={"templateID": "base"})
    waited = time.time() - t0
    assert r.status_code == 503 and "at capacity" in r.json()["message"], r.text
    assert 9 <= waited < 20
    # once there is room, seed 001's create goes at once
    c.delete(a)
    c.wait(a, "ended")
    sid = c.s.create()
    assert c.status(sid) == "ready"  # seed 001's sandbox, seen by /v1
    c.s.delete(sid)


def test_a_queued_create_cut_off_by_a_restart_is_failed(cap1):
    c = cap1
    a = c.ready()
    b = c.create()["id"]
    assert c.status(b) == "queued"
    c.s.kill9()
    c.s.start(args=c.s.args)
    assert c.status(b) == "failed"
    assert c.status(a) == "ready"
    c.delete(a)
