"""Seed 002's sandbox API (/api/sandbox/*) against a real daemon: the seed's
example as written, every field and error, runs (synchronous, asynchronous,
timeouts, across a restart), the filesystem, network and resource policies
enforced by the kernel, and the free plan's concurrency limit."""
import datetime
import glob
import os
import subprocess
import time

import pytest
import requests

from conftest import SBXD, Sbxd

# The seed's create example, verbatim.
SEED_EXAMPLE = {
    "agent_id": "data-processor",
    "mode": "container",
    "config": {
        "image": "agentcop/agent-sandbox:latest",
        "filesystem": {
            "read_only": ["/workspace/data"],
            "read_write": ["/workspace/output"],
            "blocked": ["/etc", "/root"]
        },
        "network": {
            "allow": ["api.company.com"],
            "block_outbound": True
        },
        "resources": {
            "cpu": "0.5",
            "memory": "512m",
            "timeout": 30
        }
    }
}


def create(sbxd, body, expect=201):
    r = sbxd.req("POST", "/api/sandbox/create", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def run(sbxd, sid, code, expect=200, **fields):
    body = {"code": code}
    body.update(fields)
    r = sbxd.req("POST", f"/api/sandbox/{sid}/run", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def status(sbxd, sid):
    r = sbxd.req("GET", f"/api/sandbox/{sid}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


def destroy(sbxd, sid):
    r = sbxd.req("DELETE", f"/api/sandbox/{sid}")
    assert r.status_code == 204, r.text


def assert_error(r, status_code, code, contains=None):
    """Seed 002's error shape: {"error": {"code", "message"}}."""
    assert r.status_code == status_code, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if contains:
        assert contains in body["error"]["message"], body


def parse_time(s):
    assert s.endswith("Z") and "." not in s, s
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")


def cgroup_value(sid, v1, v2):
    """A cgroup file of sandbox SID: the v1 path if the controller is there,
    else the v2 one."""
    for pattern in v1 + v2:
        for path in glob.glob(pattern.format(sid=sid)):
            return open(path).read().strip()
    raise AssertionError(f"no cgroup file for {sid}")


def test_the_seeds_example_as_written(sbxd):
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
    body = create(sbxd, SEED_EXAMPLE)
    assert set(body) == {"sandbox_id", "status", "mode", "created_at", "expires_at"}, body
    assert body["status"] == "ready" and body["mode"] == "container"
    assert body["sandbox_id"].startswith("sbx")
    created, expires = parse_time(body["created_at"]), parse_time(body["expires_at"])
    # the field table: timeout is in seconds, so it expires 30 s later
    assert (expires - created).total_seconds() == 30
    assert abs((created - before).total_seconds()) <= 5
    sid = body["sandbox_id"]
    try:
        # /etc and /root are blocked, yet python3 runs
        out = run(sbxd, sid, "print(6 * 7)")
        assert out["status"] == "completed", out
        assert out["stdout"] == "42\n" and out["exit_code"] == 0
        assert set(out) >= {"run_id", "status", "stdout", "stderr", "exit_code", "duration_ms"}
        # the seed's run example: agent is not defined, so the run fails
        out = run(sbxd, sid, "result = agent.run('analyze sales data')", timeout=30)
        assert out["status"] == "failed" and out["exit_code"] == 1
        assert "NameError" in out["stderr"]
        got = sbxd.req("GET", f"/api/sandbox/{sid}").json()
        assert got["agent_id"] == "data-processor" and got["status"] == "ready"
        assert got["image"] == "base"
    finally:
        destroy(sbxd, sid)


def test_filesystem_policy_is_enforced_by_the_kernel(sbxd):
    sid = create(sbxd, SEED_EXAMPLE)["sandbox_id"]
    try:
        code = r'''
import errno, os
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print("out", attempt(lambda: open("/workspace/output/r.txt", "w").write("x")))
print("data-write", attempt(lambda: open("/workspace/data/r.txt", "w").write("x")))
print("data-list", attempt(lambda: os.listdir("/workspace/data")))
print("etc-read", attempt(lambda: open("/etc/hostname").read()))
print("etc-list", attempt(lambda: os.listdir("/etc")))
print("etc-write", attempt(lambda: open("/etc/x", "w").write("x")))
print("root-list", attempt(lambda: os.listdir("/root")))
print("via-dotdot", attempt(lambda: open("/workspace/../etc/hostname").read()))
print("via-proc", attempt(lambda: open("/proc/self/root/etc/hostname").read()))
print("etc-cd", attempt(lambda: os.chdir("/etc")))
print("via-proc-cwd", attempt(lambda: os.listdir("/proc/1/cwd/etc")))
os.symlink("/etc/hostname", "/workspace/output/link")
print("via-link", attempt(lambda: open("/workspace/output/link").read()))
'''
        out = run(sbxd, sid, code)
        assert out["status"] == "completed", out
        seen = dict(line.split(" ", 1) for line in out["stdout"].splitlines())
        assert seen["out"] == "ok"
        assert seen["data-write"] == "EROFS"
        assert seen["data-list"] == "ok"
        for key in ("etc-read", "etc-list", "etc-write", "root-list", "via-dotdot", "via-proc", "via-link", "etc-cd",
                    "via-proc-cwd"):
            assert seen[key] in ("EACCES", "EPERM", "ENOENT"), (key, seen[key])
        assert seen["etc-read"] != "ok"
        # the files API obeys the same policy
        r = sbxd.req("GET", f"/sandboxes/{sid}/filesystem", params={"path": "/etc/hostname"})
        assert r.status_code in (403, 404), r.text
        r = sbxd.req("GET", f"/sandboxes/{sid}/filesystem", params={"path": "/workspace/output/r.txt"})
        assert r.status_code == 200, r.text
    finally:
        destroy(sbxd, sid)


def test_resources_are_the_cgroups_limits(sbxd):
    body = {"config": {"resources": {"cpu": "0.5", "memory": "512m", "timeout": 60}}}
    sid = create(sbxd, body)["sandbox_id"]
    try:
        mem = cgroup_value(sid, ["/sys/fs/cgroup/memory/sbxd/{sid}/memory.limit_in_bytes"],
                           ["/sys/fs/cgroup/sbxd/{sid}/memory.max"])
        assert int(mem) == 512 << 20
        quota = cgroup_value(sid, ["/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.cfs_quota_us"],
                             ["/sys/fs/cgroup/sbxd/{sid}/cpu.max"])
        period = cgroup_value(sid, ["/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.cfs_period_us"],
                              ["/sys/fs/cgroup/sbxd/{sid}/cpu.max"])
        q, p = int(quota.split()[0]), int(period.split()[-1])
        assert q * 2 == p, (quota, period)
        # a process that goes past 512 MB is killed by the kernel
        out = run(sbxd, sid, "x = bytearray(900 << 20)\nfor i in range(0, len(x), 4096): x[i] = 1\nprint('alive')",
                  timeout=60)
        assert "alive" not in out["stdout"] and out["status"] == "failed", out
    finally:
        destroy(sbxd, sid)
    sid = create(sbxd, {"config": {"resources": {"memory": "2g"}}})["sandbox_id"]
    try:
        mem = cgroup_value(sid, ["/sys/fs/cgroup/memory/sbxd/{sid}/memory.limit_in_bytes"],
                           ["/sys/fs/cgroup/sbxd/{sid}/memory.max"])
        assert int(mem) == 2 << 30
        got = sbxd.req("GET", f"/api/sandbox/{sid}").json()
        # no timeout: the default of 1800 s
        assert (parse_time(got["expires_at"]) - parse_time(got["created_at"])).total_seconds() == 1800
    finally:
        destroy(sbxd, sid)


@pytest.mark.parametrize("body, contains", [
    ({"mode": "vm"}, "mode"),
    ({"mode": 3}, "mode"),
    ({"agent_id": 7}, "agent_id"),
    ({"agent_id": "a" * 200}, "agent_id"),
    ({"config": []}, "config"),
    ({"config": {"image": "ubuntu:latest"}}, "agentcop/agent-sandbox:latest"),
    ({"config": {"image": "ubuntu:latest"}}, "not an approved image"),
    ({"config": {"resources": {"cpu": "9999"}}}, "config.resources.cpu"),
    ({"config": {"resources": {"cpu": "0.01"}}}, "config.resources.cpu"),
    ({"config": {"resources": {"cpu": "half"}}}, "config.resources.cpu"),
    ({"config": {"resources": {"memory": "lots"}}}, "config.resources.memory"),
    ({"config": {"resources": {"memory": "1m"}}}, "config.resources.memory"),
    ({"config": {"resources": {"memory": "64g"}}}, "config.resources.memory"),
    ({"config": {"resources": {"timeout": 0}}}, "config.resources.timeout"),
    ({"config": {"resources": {"timeout": 3601}}}, "config.resources.timeout"),
    ({"config": {"resources": {"timeout": "30"}}}, "config.resources.timeout"),
    ({"config": {"resources": 5}}, "config.resources"),
    ({"config": {"filesystem": {"blocked": "/etc"}}}, "config.filesystem.blocked"),
    ({"config": {"filesystem": {"read_only": ["relative/path"]}}}, "config.filesystem"),
    ({"config": {"filesystem": {"read_only": ["/a/../etc"]}}}, "config.filesystem"),
    ({"config": {"filesystem": {"blocked": ["/"]}}}, "config.filesystem"),
    ({"config": {"filesystem": {"read_only": ["/x"], "blocked": ["/x"]}}}, "config.filesystem"),
    ({"config": {"filesystem": {"blocked": [f"/d{i}" for i in range(65)]}}}, "config.filesystem"),
    ({"config": {"network": {"allow": "example.com"}}}, "allow"),
    ({"config": {"network": {"allow": ["not a name!"], "block_outbound": True}}}, "not a name!"),
    ({"config": {"network": {"block_outbound": "yes"}}}, "block_outbound"),
])
def test_create_refuses_bad_fields_naming_them(sbxd, body, contains):
    before = len(sbxd.req("GET", "/api/sandbox").json()["sandboxes"])
    r = sbxd.req("POST", "/api/sandbox/create", json=body)
    assert_error(r, 400, "invalid_request", contains)
    # nothing half-made is left behind
    assert len(sbxd.req("GET", "/api/sandbox").json()["sandboxes"]) == before


def test_malformed_bodies_and_unknown_ids(sbxd):
    r = sbxd.req("POST", "/api/sandbox/create", data="{not json")
    assert_error(r, 400, "invalid_request", "JSON")
    r = sbxd.req("POST", "/api/sandbox/create", data="[1]")
    assert_error(r, 400, "invalid_request")
    for path in ["/api/sandbox/sbx_doesnotexist0", "/api/sandbox/not-an-id", "/api/sandbox/sbx_doesnotexist0/runs"]:
        assert_error(sbxd.req("GET", path), 404, "not_found")
    assert_error(sbxd.req("DELETE", "/api/sandbox/sbx_doesnotexist0"), 404, "not_found")
    assert_error(sbxd.req("POST", "/api/sandbox/sbx_doesnotexist0/run", json={"code": "1"}), 404, "not_found")
    assert_error(sbxd.req("PUT", "/api/sandbox/create", json={}), 405, "method_not_allowed")
    assert_error(sbxd.req("GET", "/api/nothing/here"), 404, "not_found")


def test_a_key_is_required_and_checked(sbxd):
    for method, path in [("POST", "/api/sandbox/create"), ("GET", "/api/sandbox/sbx_x1"),
                         ("GET", "/api/sandbox"), ("POST", "/api/sandbox/sbx_x1/run")]:
        r = requests.request(method, sbxd.url + path, json={}, timeout=30)
        assert_error(r, 401, "unauthorized", "missing API key")
        r = requests.request(method, sbxd.url + path, json={}, headers={"X-API-Key": "sk-sb-wrong"}, timeout=30)
        assert_error(r, 401, "unauthorized", "invalid API key")
    # both header forms work
    r = requests.get(sbxd.url + "/api/sandbox", headers={"X-API-Key": sbxd.key}, timeout=30)
    assert r.status_code == 200, r.text


def test_another_organisations_sandbox_does_not_exist(sbxd):
    sid = create(sbxd, {})["sandbox_id"]
    other = {"Authorization": "Bearer " + sbxd.new_key(org="other002")}
    try:
        for method, path, body in [("GET", f"/api/sandbox/{sid}", None), ("DELETE", f"/api/sandbox/{sid}", None),
                                   ("POST", f"/api/sandbox/{sid}/run", {"code": "print(1)"}),
                                   ("GET", f"/api/sandbox/{sid}/runs", None)]:
            r = requests.request(method, sbxd.url + path, json=body, headers=other, timeout=30)
            assert_error(r, 404, "not_found")
        assert status(sbxd, sid) == "ready"
    finally:
        destroy(sbxd, sid)


def test_runs_sync_async_timeout_and_listing(sbxd):
    sid = create(sbxd, {"agent_id": "runner"})["sandbox_id"]
    try:
        out = run(sbxd, sid, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(3)")
        assert out["status"] == "failed" and out["exit_code"] == 3
        assert out["stdout"] == "to out\n" and out["stderr"] == "to err\n"
        assert out["duration_ms"] >= 0
        # timeout: killed, status "timeout"
        t0 = time.time()
        out = run(sbxd, sid, "while True: pass", timeout=1)
        assert out["status"] == "timeout", out
        assert time.time() - t0 < 15
        # async: 202 running, the sandbox reads "running", then the same object
        r = sbxd.req("POST", f"/api/sandbox/{sid}/run", json={"code": "import time\ntime.sleep(2)\nprint('done')",
                                                               "async": True})
        assert r.status_code == 202, r.text
        assert set(r.json()) == {"run_id", "status"} and r.json()["status"] == "running"
        rid = r.json()["run_id"]
        assert status(sbxd, sid) == "running"
        deadline = time.time() + 30
        while True:
            got = sbxd.req("GET", f"/api/sandbox/{sid}/run/{rid}").json()
            if got["status"] != "running" or time.time() > deadline:
                break
            time.sleep(0.2)
        assert got["status"] == "completed" and got["stdout"] == "done\n", got
        assert set(got) >= {"run_id", "status", "stdout", "stderr", "exit_code", "duration_ms"}
        assert status(sbxd, sid) == "ready"
        runs = sbxd.req("GET", f"/api/sandbox/{sid}/runs").json()["runs"]
        assert [x["run_id"] for x in runs][0] == rid and len(runs) == 3
        assert_error(sbxd.req("GET", f"/api/sandbox/{sid}/run/run_nope"), 404, "not_found")
        # bad run bodies
        for body, contains in [({}, "code"), ({"code": 5}, "code"), ({"code": "1", "timeout": 601}, "timeout"),
                               ({"code": "1", "timeout": 0}, "timeout"), ({"code": "1", "async": "no"}, "async")]:
            assert_error(sbxd.req("POST", f"/api/sandbox/{sid}/run", json=body), 400, "invalid_request", contains)
        # filtering the list by agent
        listed = sbxd.req("GET", "/api/sandbox", params={"agent_id": "runner"}).json()["sandboxes"]
        assert [s["sandbox_id"] for s in listed] == [sid]
        assert sbxd.req("GET", "/api/sandbox", params={"agent_id": "nobody"}).json()["sandboxes"] == []
    finally:
        destroy(sbxd, sid)


def test_destroy_ends_runs_and_keeps_the_record(sbxd):
    sid = create(sbxd, {})["sandbox_id"]
    r = sbxd.req("POST", f"/api/sandbox/{sid}/run", json={"code": "import time\ntime.sleep(60)", "async": True})
    rid = r.json()["run_id"]
    time.sleep(0.5)
    destroy(sbxd, sid)
    got = sbxd.req("GET", f"/api/sandbox/{sid}").json()
    assert got["status"] == "destroyed" and got["destroy_reason"] == "request"
    assert "destroyed_at" in got
    deadline = time.time() + 20
    while sbxd.req("GET", f"/api/sandbox/{sid}/run/{rid}").json()["status"] == "running" and time.time() < deadline:
        time.sleep(0.2)
    run_now = sbxd.req("GET", f"/api/sandbox/{sid}/run/{rid}").json()
    assert run_now["status"] == "failed", run_now
    # a run on a destroyed sandbox is a conflict; destroying again changes nothing
    assert_error(sbxd.req("POST", f"/api/sandbox/{sid}/run", json={"code": "print(1)"}), 409, "conflict")
    destroy(sbxd, sid)


def test_expiry_destroys_at_the_timeout(sbxd):
    sid = create(sbxd, {"config": {"resources": {"timeout": 2}}})["sandbox_id"]
    deadline = time.time() + 20
    while status(sbxd, sid) != "destroyed" and time.time() < deadline:
        time.sleep(0.25)
    got = sbxd.req("GET", f"/api/sandbox/{sid}").json()
    assert got["status"] == "destroyed" and got["destroy_reason"] == "timeout", got


def test_network_block_outbound_and_the_egress_log(sbxd):
    body = {"config": {"network": {"allow": ["api.company.com"], "block_outbound": True}}}
    sid = create(sbxd, body)["sandbox_id"]
    try:
        code = r'''
import socket
try:
    socket.getaddrinfo("not-allowed.example", 80)
    print("resolved")
except socket.gaierror:
    print("refused")
'''
        out = run(sbxd, sid, code)
        assert out["stdout"] == "refused\n", out
        log = sbxd.req("GET", f"/api/sandbox/{sid}/network/log").json()
        names = [(r["name"], r["verdict"]) for r in log["records"]]
        assert ("not-allowed.example", "denied") in names, log
        assert_error(sbxd.req("GET", f"/api/sandbox/{sid}/network/log", params={"limit": "0"}), 400,
                     "invalid_request")
    finally:
        destroy(sbxd, sid)


def test_free_plan_allows_one_at_once(tmp_path):
    """Seed 002 says "up to 3" on Free plans, seed 004 1; the plans are seed
    004's (docs/architecture.md, "Plans")."""
    server = Sbxd(str(tmp_path / "state")).start()
    try:
        subprocess.run([SBXD, "orgs", "set", "default", "--plan", "free", "--state-dir", server.state_dir],
                       check=True, capture_output=True)
        ids = [create(server, {})["sandbox_id"]]
        r = server.req("POST", "/api/sandbox/create", json={})
        assert_error(r, 429, "limit_exceeded", "concurrent sandbox limit reached: your plan allows 1 at once")
        # the free plan's longest sandbox is 5 minutes
        assert_error(server.req("POST", "/api/sandbox/create", json={"config": {"resources": {"timeout": 600}}}),
                     400, "invalid_request", "timeout")
        destroy(server, ids[0])
        ids[0] = create(server, {})["sandbox_id"]
        for sid in ids:
            destroy(server, sid)
    finally:
        server.stop()


def test_runs_and_records_survive_a_restart(tmp_path):
    server = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = create(server, {"agent_id": "survivor"})["sandbox_id"]
        done = run(server, sid, "print('before')")
        r = server.req("POST", f"/api/sandbox/{sid}/run", json={"code": "import time\ntime.sleep(120)",
                                                                 "async": True})
        pending = r.json()["run_id"]
        time.sleep(0.5)
        server.kill9()
        server.start()
        got = server.req("GET", f"/api/sandbox/{sid}/run/{done['run_id']}").json()
        assert got["status"] == "completed" and got["stdout"] == "before\n"
        cut = server.req("GET", f"/api/sandbox/{sid}/run/{pending}").json()
        assert cut["status"] == "failed" and "restart" in cut["error"], cut
        assert status(server, sid) == "ready"
        assert server.req("GET", f"/api/sandbox/{sid}").json()["agent_id"] == "survivor"
        assert run(server, sid, "print('after')")["stdout"] == "after\n"
        destroy(server, sid)
    finally:
        server.stop()


def test_the_operator_chooses_the_approved_images(tmp_path):
    server = Sbxd(str(tmp_path / "state")).start(args=["--image", "corp/python:3=base"])
    try:
        sid = create(server, {"config": {"image": "corp/python:3"}})["sandbox_id"]
        destroy(server, sid)
        sid = create(server, {})["sandbox_id"]
        assert server.req("GET", f"/api/sandbox/{sid}").json()["image"] == "base"
        destroy(server, sid)
        r = server.req("POST", "/api/sandbox/create", json={"config": {"image": "agentcop/agent-sandbox:latest"}})
        assert_error(r, 400, "invalid_request", "approved images: corp/python:3")
    finally:
        server.stop()
    bad = subprocess.run([SBXD, "serve", "--image", "no-equals-sign"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--image" in bad.stderr


def test_a_stop_during_a_run_ends_cleanly(tmp_path):
    server = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = create(server, {})["sandbox_id"]
        rid = server.req("POST", f"/api/sandbox/{sid}/run",
                         json={"code": "import time\ntime.sleep(120)", "async": True}).json()["run_id"]
        time.sleep(0.5)
        t0 = time.time()
        server.stop()
        assert server.proc.returncode == 0 and time.time() - t0 < 15, open(server.log_path).read()[-2000:]
        server.start()
        cut = server.req("GET", f"/api/sandbox/{sid}/run/{rid}").json()
        assert cut["status"] == "failed" and "restart" in cut["error"], cut
        destroy(server, sid)
    finally:
        server.stop()


def test_the_readme_example_is_the_seeds(sbxd):
    import json
    from conftest import ROOT
    with open(os.path.join(ROOT, "docs", "examples", "seed002-create.json")) as f:
        assert json.load(f) == SEED_EXAMPLE


def test_wasm_mode_runs_python_in_pyodide(sbxd):
    body = {"mode": "wasm", "agent_id": "wasm-agent",
            "config": {"filesystem": {"read_only": ["/workspace/data"], "read_write": ["/workspace/output"],
                                      "blocked": ["/etc"]}}}
    made = create(sbxd, body)
    assert made["mode"] == "wasm" and made["status"] == "ready"
    sid = made["sandbox_id"]
    try:
        got = sbxd.req("GET", f"/api/sandbox/{sid}").json()
        assert got["mode"] == "wasm" and got["image"] == "pyodide"
        # Python, but not the container's: the interpreter is WebAssembly
        out = run(sbxd, sid, "import sys\nprint(sys.platform, 6 * 7)")
        assert out["status"] == "completed" and out["stdout"] == "emscripten 42\n", out
        # the filesystem policy is what the program sees
        out = run(sbxd, sid, "open('/workspace/output/r.txt', 'w').write('kept')\n"
                             "print(open('/workspace/output/r.txt').read())")
        assert out["stdout"] == "kept\n", out
        out = run(sbxd, sid, "open('/workspace/data/x', 'w')")
        assert out["status"] == "failed" and "Read-only file system" in out["stderr"], out
        out = run(sbxd, sid, "open('/etc/hostname')")
        assert out["status"] == "failed" and "No such file" in out["stderr"], out
        # errors, exit codes, timeouts
        out = run(sbxd, sid, "raise ValueError('boom')")
        assert out["status"] == "failed" and out["exit_code"] == 1 and "ValueError: boom" in out["stderr"]
        assert run(sbxd, sid, "import sys\nsys.exit(4)")["exit_code"] == 4
        out = run(sbxd, sid, "while True: pass", timeout=3)
        assert out["status"] == "timeout", out
        # no network unless asked: not even a name
        out = run(sbxd, sid, "import socket\ntry:\n  socket.create_connection(('198.51.100.1', 80), 2)\n"
                             "  print('connected')\nexcept Exception as e:\n  print('refused')")
        assert out["stdout"] == "refused\n", out
    finally:
        destroy(sbxd, sid)
    # the sandbox under Pyodide is a container sandbox with the same rules
    assert sbxd.req("GET", f"/api/sandbox/{sid}").json()["status"] == "destroyed"


@pytest.mark.parametrize("mode, network, want", [
    ("container", None, {"mode": "internet", "allowOut": [], "denyOut": []}),
    ("container", {"block_outbound": False, "allow": ["x.example"]}, {"mode": "internet", "allowOut": [], "denyOut": []}),
    ("container", {"block_outbound": True, "allow": ["x.example", "198.51.100.7"]},
     {"mode": "internet", "allowOut": ["198.51.100.7", "x.example"], "denyOut": ["0.0.0.0/0"]}),
    # nothing allowed: everything refused, and each attempt in the egress log
    ("container", {"block_outbound": True}, {"mode": "internet", "allowOut": [], "denyOut": ["0.0.0.0/0"]}),
    ("wasm", None, {"mode": "none", "allowOut": [], "denyOut": []}),
    ("wasm", {"block_outbound": False}, {"mode": "internet", "allowOut": [], "denyOut": []}),
    ("wasm", {"block_outbound": True, "allow": ["x.example"]},
     {"mode": "internet", "allowOut": ["x.example"], "denyOut": ["0.0.0.0/0"]}),
])
def test_network_config_becomes_the_sandboxs_rules(sbxd, mode, network, want):
    body = {"mode": mode, "config": {"network": network} if network is not None else {}}
    sid = create(sbxd, body)["sandbox_id"]
    try:
        net = sbxd.get(sid).json()["network"]
        assert {k: net[k] for k in want} == want, net
    finally:
        destroy(sbxd, sid)


def test_large_code_goes_in_whole_and_too_large_is_refused(sbxd):
    sid = create(sbxd, {})["sandbox_id"]
    try:
        # about 1 MB of code reaches the interpreter whole, in many pieces
        code = "x = 0\n" + "x += 1\n" * 140000 + "print(x)\n"
        assert len(code) < 1 << 20
        out = run(sbxd, sid, code, timeout=120)
        assert out["status"] == "completed" and out["stdout"] == "140000\n", out
        r = sbxd.req("POST", f"/api/sandbox/{sid}/run", json={"code": "#" * ((1 << 20) + 1)})
        assert_error(r, 413, "payload_too_large")
    finally:
        destroy(sbxd, sid)
