"""Started warm pools (`sbxd serve --warm TEMPLATE=N`, src/service/warm.c):
sandboxes of a template created and started ahead of any request, owned by
nobody, handed to the creates they fit.  code_interpreter is the cheapest
template with a start command (its server on port 49999)."""
import os
import re
import subprocess
import time

import pytest
import requests

from conftest import SBXD, Sbxd, host_traces, wait_until
from test_seed002 import cgroup_value

TOKEN = "warm-metrics-token-0123456789"
WARM_ARGS = ["--warm", "code_interpreter=1", "--log-level", "debug", "--metrics-token", TOKEN,
             "--image", "ci=code_interpreter"]


def metric(d, name, template="code_interpreter"):
    r = requests.get(d.url + "/metrics", headers={"Authorization": "Bearer " + TOKEN}, timeout=10)
    assert r.status_code == 200, r.text
    m = re.search(r'^%s\{template="%s"\} (\d+)$' % (name, template), r.text, re.M)
    assert m, r.text
    return int(m.group(1))


def wait_ready(d, n=1, seconds=60):
    assert wait_until(lambda: metric(d, "sbxd_warm_ready") >= n, seconds, 0.1), d.logs()[-3000:]


def pool_ids(d):
    """Every sandbox a pool of D made, from its debug log."""
    return re.findall(r"warm sandbox ready template=\S+ sandbox=(\S+)", d.logs())


def claimed(d, sid):
    return re.search(r"warm sandbox claimed template=code_interpreter sandbox=%s\b" % sid, d.logs()) is not None


def interp_health(d, sid, token):
    """The interpreter's /health through the envd dialect, asked once."""
    h = {"E2b-Sandbox-Id": sid, "X-Access-Token": token, "E2b-Sandbox-Port": "49999"}
    return requests.get(d.url + "/health", headers=h, timeout=10).status_code


def leftovers(d, ids):
    """What of sandboxes IDS is still on the host: state directories,
    cgroups, mounts, loop devices."""
    out = []
    for sid in ids:
        if os.path.exists(os.path.join(d.state_dir, "sandboxes", sid)):
            out.append(sid + " directory")
        out += host_traces(sid)
    return out


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    d = Sbxd(str(tmp_path_factory.mktemp("warm") / "state")).start(args=WARM_ARGS)
    yield d
    try:
        if d.proc.poll() is None:  # the last test stops it
            d.cleanup()
    finally:
        d.stop()


def test_no_list_shows_a_pooled_sandbox(wd):
    wait_ready(wd)
    assert pool_ids(wd)
    assert wd.req("GET", "/sandboxes").json() == []
    assert wd.req("GET", "/v2/sandboxes").json() == []
    assert wd.req("GET", "/api/sandbox").json()["sandboxes"] == []
    assert wd.req("GET", "/v1/sandboxes").json()["items"] == []
    for sid in pool_ids(wd):
        assert wd.get(sid).status_code == 404


def test_create_takes_a_started_sandbox_with_what_it_asked(wd):
    wait_ready(wd)
    claims = metric(wd, "sbxd_warm_claims_total")
    before = time.time()
    r = wd.req("POST", "/sandboxes", json={"templateID": "code_interpreter", "timeout": 123,
                                           "envVars": {"WARM_VAR": "from-create"},
                                           "metadata": {"purpose": "warm"}})
    assert r.status_code == 201, r.text
    j = r.json()
    sid = j["sandboxID"]
    try:
        assert claimed(wd, sid) and metric(wd, "sbxd_warm_claims_total") == claims + 1
        # started: the server answers at once, no retry
        assert interp_health(wd, sid, j["envdAccessToken"]) == 204
        # the caller's, listed, with its metadata and lifetime from now
        assert sid in wd.sandbox_ids()
        other = Sbxd(wd.state_dir, wd.port)
        other.http.headers["Authorization"] = "Bearer " + wd.new_key(org="someone-else")
        assert other.get(sid).status_code == 404
        got = wd.get(sid).json()
        assert got["metadata"] == {"purpose": "warm"}
        started = time.mktime(time.strptime(got["startedAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert abs(started - before) < 5, got
        end = time.mktime(time.strptime(got["endAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert round(end - started) == 123, got
        # a later command sees the create's environment
        assert wd.sh(sid, "echo $WARM_VAR")["stdout"] == "from-create\n"
        # metered: its time counts from the claim, not from the pool's start
        used = wd.req("GET", "/v1/usage").json()["usedMs"]
        time.sleep(1)
        ran = time.time() - before
        used = wd.req("GET", "/v1/usage").json()["usedMs"] - used
        assert 800 <= used <= 1500, used
        assert wd.req("GET", "/v1/usage").json()["usedMs"] <= ran * 1000 + 500
    finally:
        wd.delete(sid)


def test_the_pool_refills_and_serves_again(wd):
    wait_ready(wd)
    claims = metric(wd, "sbxd_warm_claims_total")
    sids = []
    try:
        sids.append(wd.create("code_interpreter", timeout=60))
        wait_ready(wd)
        sids.append(wd.create("code-interpreter-v1", timeout=60))  # its alias
        assert all(claimed(wd, s) for s in sids)
        assert metric(wd, "sbxd_warm_claims_total") == claims + 2
    finally:
        for s in sids:
            wd.delete(s)


def test_what_a_running_sandbox_cannot_take_goes_the_normal_way(wd):
    wait_ready(wd)
    claims = metric(wd, "sbxd_warm_claims_total")
    # another disk size
    r = wd.req("POST", "/sandboxes", json={"templateID": "code_interpreter", "timeout": 60, "diskSizeMB": 4096})
    assert r.status_code == 201, r.text
    j = r.json()
    try:
        assert j["diskSizeMB"] == 4096 and not claimed(wd, j["sandboxID"])
        assert interp_health(wd, j["sandboxID"], j["envdAccessToken"]) == 204
    finally:
        wd.delete(j["sandboxID"])
    # filesystem rules (seed 002)
    body = {"agent_id": "a", "mode": "container",
            "config": {"image": "ci", "filesystem": {"blocked": ["/srv"]}, "resources": {"timeout": 60}}}
    r = wd.req("POST", "/api/sandbox/create", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    try:
        assert not claimed(wd, sid)
        assert wd.sh(sid, "ls /srv", expect=200)["exitCode"] != 0
    finally:
        wd.delete(sid)
    assert metric(wd, "sbxd_warm_claims_total") == claims
    assert metric(wd, "sbxd_warm_ready") == 1
    # seed 002 without them is served warm, with its limits and policy
    body["config"] = {"image": "ci", "network": {"block_outbound": True},
                      "resources": {"cpu": "0.5", "memory": "1024m", "timeout": 60}}
    r = wd.req("POST", "/api/sandbox/create", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    try:
        assert claimed(wd, sid)
        got = wd.get(sid).json()
        assert got["memoryMB"] == 1024 and got["cpuCount"] == 1, got
        mem = cgroup_value(sid, ["/sys/fs/cgroup/memory/sbxd/{sid}/memory.limit_in_bytes"],
                           ["/sys/fs/cgroup/sbxd/{sid}/memory.max"])
        assert int(mem) == 1024 << 20
        quota = cgroup_value(sid, ["/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.cfs_quota_us"],
                             ["/sys/fs/cgroup/sbxd/{sid}/cpu.max"])
        period = cgroup_value(sid, ["/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.cfs_period_us"],
                              ["/sys/fs/cgroup/sbxd/{sid}/cpu.max"])
        assert int(quota.split()[0]) * 2 == int(period.split()[-1]), (quota, period)
    finally:
        wd.delete(sid)
    # a network policy is applied to the running sandbox
    wait_ready(wd)
    r = wd.req("POST", "/sandboxes", json={"templateID": "code_interpreter", "timeout": 60,
                                           "allowInternetAccess": False})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        got = wd.get(sid).json()
        assert claimed(wd, sid) and got["network"]["mode"] == "none" and got["allowInternetAccess"] is False, got
    finally:
        wd.delete(sid)


def test_pooled_sandboxes_do_not_outlive_the_daemon(wd, tmp_path):
    wait_ready(wd)
    wd.cleanup()
    ids = pool_ids(wd)
    wd.stop()
    assert wait_until(lambda: not leftovers(wd, ids), 30, 0.2), leftovers(wd, ids)
    # a daemon that could not destroy its pool (killed): the next start does
    d = Sbxd(str(tmp_path / "state")).start(args=WARM_ARGS)
    try:
        wait_ready(d)
        ids = pool_ids(d)
        d.kill9()
        assert [s for s in ids if os.path.exists(os.path.join(d.state_dir, "sandboxes", s))]
        d.start(args=["--log-level", "debug"])
        assert wait_until(lambda: not leftovers(d, ids), 30, 0.2), leftovers(d, ids)
        assert d.req("GET", "/sandboxes").json() == []
    finally:
        d.stop()


def test_a_pool_that_cannot_fill_retries_with_backoff(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--warm", "no_such_template=2", "--metrics-token", TOKEN])
    try:
        time.sleep(3.5)
        tries = d.logs().count("cannot prepare a warm sandbox")
        # after 0, 1 and 3 s (the delay doubles), not a hot loop
        assert 2 <= tries <= 3, d.logs()[-2000:]
        assert metric(d, "sbxd_warm_failures_total", "no_such_template") == tries
        assert metric(d, "sbxd_warm_ready", "no_such_template") == 0
        assert d.create("base", timeout=30)  # the daemon serves meanwhile
    finally:
        d.cleanup()
        d.stop()


@pytest.mark.parametrize("arg", ["code_interpreter", "code_interpreter=0", "code_interpreter=17", "=1", "a b=1"])
def test_a_malformed_warm_flag_is_refused(tmp_path, arg):
    r = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path), "--warm", arg], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "--warm" in r.stderr, r.stderr
