"""The spare pool: a burst of concurrent creates all runs, the pool grows
with the demand within --spares-max, and shrinks back when idle."""
import datetime
import glob
import os
import subprocess
import threading
import time

import pytest
import requests

from conftest import SBXD, Sbxd, free_port, wait_until
from test_seed002 import cgroup_value

CAP = 10  # --spares-max of the daemon under test
MIN = 4   # the pool's size when idle


def spares(d):
    """Prepared sandboxes: the directories in STATE/sandboxes that no live
    sandbox owns (a spare is a directory with its disk, cgroups and a
    waiting process), less those of destroyed sandboxes being torn down."""
    root = os.path.join(d.state_dir, "sandboxes")
    # a destroyed sandbox's directory stays, journaled, until its teardown ends
    # (whose directory is renamed .gone-ID at its end, then removed: the
    # journal is looked for first, the directory after)
    dirs = {n for n in os.listdir(root)
            if not n.startswith(".") and not os.path.exists(os.path.join(root, n, "destroying"))
            and os.path.isdir(os.path.join(root, n))}
    live = {s["sandboxID"] for st in ("running", "paused")
            for s in d.req("GET", f"/sandboxes?status={st}").json()}
    return len(dirs - live)


def wait_spares(d, pred, timeout):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        seen.append(spares(d))
        if pred(seen[-1]):
            return seen
        time.sleep(0.2)
    pytest.fail(f"spares over time: {seen}")


@pytest.fixture(scope="module")
def poold(tmp_path_factory):
    d = Sbxd(str(tmp_path_factory.mktemp("pool") / "state")).start(
        args=["--spares-max", str(CAP), "--log-level", "debug"])
    subprocess.run([SBXD, "orgs", "set", "default", "--max-sandboxes", "40", "--state-dir", d.state_dir],
                   check=True, capture_output=True)
    try:
        yield d
    finally:
        try:
            d.cleanup()
        finally:
            d.stop()


def test_burst_of_20_creates_all_run_then_the_pool_grows_and_shrinks(poold):
    d = poold
    wait_spares(d, lambda n: n == MIN, 30)
    ids, errors = [None] * 20, []
    go = threading.Barrier(20)

    def create(i):
        s = requests.Session()
        s.headers["Authorization"] = "Bearer " + d.key
        go.wait()
        r = s.post(d.url + "/sandboxes", json={"templateID": "base", "timeout": 300}, timeout=120)
        if r.status_code == 201:
            ids[i] = r.json()["sandboxID"]
        else:
            errors.append(r.text)

    ts = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    try:
        assert errors == [], errors
        assert len(set(ids)) == 20
        # each one runs its own commands, as itself
        for sid in ids:
            out = d.run(sid, "hostname")
            assert out["exitCode"] == 0 and out["stdout"].strip() == sid, out
        # the burst raised the pool's target: it refills beyond its idle
        # size, up to the cap and never above it
        seen = wait_spares(d, lambda n: n >= CAP, 60)
        assert max(seen) <= CAP, seen
        assert "spare pool grows" in d.logs()
    finally:
        for sid in ids:
            if sid:
                d.delete(sid)
    # idle: it halves every 10 s down to its idle size, discarding spares
    seen = wait_spares(d, lambda n: n == MIN, 60)
    assert max(seen) <= CAP, seen
    time.sleep(1)
    assert spares(d) == MIN
    assert "spare pool shrinks" in d.logs()
    # spares a burst made serve the creates after it like any other
    sid = d.create()
    assert d.run(sid, "true")["exitCode"] == 0
    d.delete(sid)


def test_spares_max_0_keeps_no_spares(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--spares-max", "0"])
    try:
        time.sleep(1)
        assert spares(d) == 0
        sid = d.create()  # prepared inline
        assert d.run(sid, "true")["exitCode"] == 0
        time.sleep(0.5)
        assert spares(d) == 0
        d.delete(sid)
    finally:
        d.stop()
    r = subprocess.run([SBXD, "serve", "--spares-max", "5000"], capture_output=True, text=True)
    assert r.returncode == 2 and "--spares-max" in r.stderr, r.stderr
    r = subprocess.run([SBXD, "serve", "--spares-min", "20", "--spares-max", "10"], capture_output=True, text=True)
    assert r.returncode == 2 and "--spares-min 20 is over --spares-max 10" in r.stderr, r.stderr
    r = subprocess.run([SBXD, "serve", "--spares-min", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--spares-min" in r.stderr, r.stderr


def test_spares_min_is_the_pools_idle_size(tmp_path):
    """--spares-min N: the pool holds N when idle, and goes back to N (not
    to the suite's 4) after a burst has grown it."""
    d = Sbxd(str(tmp_path / "state")).start(args=["--spares-min", "12", "--spares-max", "30"])
    subprocess.run([SBXD, "orgs", "set", "default", "--max-sandboxes", "40", "--state-dir", d.state_dir],
                   check=True, capture_output=True)
    try:
        wait_spares(d, lambda n: n == 12, 60)
        time.sleep(2)
        assert spares(d) == 12
        ids = [d.create() for _ in range(12)]
        wait_spares(d, lambda n: n > 12, 30)  # grown with the demand
        for sid in ids:
            d.delete(sid)
        wait_spares(d, lambda n: n == 12, 60)  # the target halves every 10 s, to 12
    finally:
        d.cleanup()
        d.stop()


def test_default_pool_is_sized_for_a_burst_of_100(tmp_path):
    """Without --spares-min the pool keeps 100 spares when idle (sized for
    the burst of 100 creates the benchmark measures), and a burst of
    concurrent creates takes spares: none is prepared inline."""
    d = Sbxd(str(tmp_path / "state"))
    d.metrics_port = free_port()
    d.start(args=["--metrics-listen", f"127.0.0.1:{d.metrics_port}"], suite_pool=False)
    subprocess.run([SBXD, "orgs", "set", "default", "--max-sandboxes", "40", "--state-dir", d.state_dir],
                   check=True, capture_output=True)
    try:
        assert scrape(d, "sbxd_spares_target") == 100
        wait_spares(d, lambda n: n == 100, 60)
        time.sleep(2)
        assert spares(d) == 100
        misses = scrape(d, "sbxd_spare_misses_total")
        ids, errors = [], []

        def one():
            try:
                ids.append(d.create())
            except Exception as e:  # noqa: BLE001 - asserted below
                errors.append(e)

        ts = [threading.Thread(target=one) for _ in range(30)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors and len(ids) == 30, errors
        assert scrape(d, "sbxd_spare_misses_total") == misses
        assert d.run(ids[-1], "true")["exitCode"] == 0
    finally:
        d.cleanup()
        d.stop()
    # the stop discarded every spare: nothing of them is left on disk
    assert os.listdir(os.path.join(d.state_dir, "sandboxes")) == []


def scrape(d, name):
    text = requests.get(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")


def policies(d, sid):
    """The scheduling policies of SID's init and of a command in SID."""
    out = d.sh(sid, "chrt -p 1; chrt -p $$")["stdout"]
    return [line.split(": ", 1)[1] for line in out.splitlines() if "policy" in line]


def claimed_policy(d, sid):
    """What SID's init should say after its claim: the flag its deadline
    left, unless the kernel refused the deadline (its admission test,
    with other daemons' deadline threads on this machine): the daemon
    says so in its debug log."""
    refused = any("claim at the normal policy" in line and f"sandbox={sid}" in line for line in d.logs().splitlines())
    return "SCHED_OTHER" if refused else "SCHED_OTHER|SCHED_RESET_ON_FORK"


def test_spares_are_booted_ahead_for_the_template_last_created(tmp_path):
    """After a create of base the pool boots its spares for base; a create
    of base takes one and gets what it asked (environment, limits, network)
    from the running sandbox; other creates take a plain spare; the pool
    follows the template asked for."""
    d = Sbxd(str(tmp_path / "state"))
    d.metrics_port = free_port()
    d.start(args=["--metrics-listen", f"127.0.0.1:{d.metrics_port}", "--log-level", "debug"])
    ids = []
    try:
        ids.append(d.create())
        assert wait_until(lambda: scrape(d, "sbxd_spares_booted") >= 2, 30)
        # nothing runs in a booted spare but its init
        hits = scrape(d, "sbxd_spare_booted_hits_total")
        time.sleep(3)
        asked = time.time()
        sid = d.create(envVars={"ASKED": "yes", "PATH": "/opt/x:/usr/bin:/bin"}, memoryMB=512, cpuCount=1,
                       allowInternetAccess=False)
        ids.append(sid)
        assert scrape(d, "sbxd_spare_booted_hits_total") == hits + 1
        out = d.sh(sid, 'echo "$ASKED $PATH"; hostname')
        assert out["stdout"].split() == ["yes", "/opt/x:/usr/bin:/bin", sid], out
        assert set(d.sh(sid, "ps -eo comm=")["stdout"].split()) - {"bash"} == {"ps", "sbx-init"}
        # the pool's work runs below requests, but its sandboxes do not
        assert d.sh(sid, "ps -o ni= -p 1,$$")["stdout"].split() == ["0", "0"]
        # init answered the claim under a deadline and went back to the
        # normal policy itself: the flag that came with the deadline stays
        # (init may not clear it), and what runs in the sandbox has neither
        assert policies(d, sid) == [claimed_policy(d, sid), "SCHED_OTHER"]
        mem = cgroup_value(sid, ["/sys/fs/cgroup/memory/sbxd/{sid}/memory.limit_in_bytes"],
                           ["/sys/fs/cgroup/sbxd/{sid}/memory.max"])
        assert int(mem) == 512 << 20
        quota = cgroup_value(sid, ["/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.cfs_quota_us"],
                             ["/sys/fs/cgroup/sbxd/{sid}/cpu.max"])
        assert int(quota.split()[0]) == 100000, quota
        got = d.get(sid).json()
        assert got["memoryMB"] == 512 and got["cpuCount"] == 1 and got["allowInternetAccess"] is False, got
        assert got["network"]["mode"] == "none", got
        # its life starts at the claim, not at the boot
        started = datetime.datetime.fromisoformat(got["startedAt"].replace("Z", "+00:00")).timestamp()
        assert started >= asked - 1, (got["startedAt"], asked)
        # what a boot alone gives goes the plain way
        hits = scrape(d, "sbxd_spare_booted_hits_total")
        ids.append(d.create(diskSizeMB=2048))
        ids.append(d.create("python"))
        assert scrape(d, "sbxd_spare_booted_hits_total") == hits
        assert d.run(ids[-1], "python3", "-c", "print(6*7)")["stdout"] == "42\n"
        assert d.sh(ids[-1], "ps -o ni= -p 1,$$")["stdout"].split() == ["0", "0"]
        assert policies(d, ids[-1]) == ["SCHED_OTHER", "SCHED_OTHER"]
        # the pool now boots for python, and a create of it takes one
        for sid in ids:
            d.delete(sid)
        ids = []
        assert wait_until(lambda: scrape(d, "sbxd_spares_booted") >= 2, 30)
        ids.append(d.create("python"))
        assert scrape(d, "sbxd_spare_booted_hits_total") == hits + 1
        assert d.run(ids[-1], "python3", "-c", "print(6*7)")["stdout"] == "42\n"
        # a daemon that dies (kill -9) takes its booted spares with it, not
        # the sandboxes it gave out
        assert wait_until(lambda: scrape(d, "sbxd_spares_booted") >= 2, 30)
        live = set(ids)
        root = os.path.join(d.state_dir, "sandboxes")
        spare_ids = {n for n in os.listdir(root) if n.startswith("sbx")} - live
        d.kill9()

        def procs(sid):
            return sum(len(open(p).read().split()) for p in glob.glob(f"/sys/fs/cgroup/*/sbxd/{sid}/cgroup.procs"))
        assert wait_until(lambda: not any(procs(s) for s in spare_ids), 10), \
            {s: procs(s) for s in spare_ids if procs(s)}
        assert all(procs(s) for s in live)
        d.start()
    finally:
        for sid in ids:
            d.delete(sid)
        d.stop()


def children(pid):
    """(pid, comm, state) of PID's children."""
    out = []
    for p in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(p).read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        f = text[text.rindex(")") + 2:].split()
        if int(f[1]) == pid:
            out.append((int(p.split("/")[2]), comm, f[0]))
    return out


def spawner_of(d):
    got = [p for p, comm, _ in children(d.proc.pid) if comm == "sbx-spawner"]
    assert len(got) == 1, children(d.proc.pid)
    return got[0]


def test_sandboxes_are_cloned_by_the_spawner_which_a_kill_does_not_stop(tmp_path):
    """Sandboxes are cloned from the spawner, a helper process of the
    daemon, which the kernel reaps them for (no zombies).  Killed, it is
    started again at the next create; the sandboxes it made go on, the
    spares it made and that had not booted are replaced, and the creates
    after it all work.  It ends with the daemon."""
    d = Sbxd(str(tmp_path / "state")).start()
    ids = []
    try:
        ids.append(d.create())
        sp = spawner_of(d)
        # the sandbox, and the spares (booted, or waiting in a copy of the spawner)
        kids = children(sp)
        assert any(comm == "sbx-init" for _, comm, _ in kids), kids
        assert all(comm in ("sbx-init", "sbx-spawner") or comm.startswith("memfd:") for _, comm, _ in kids), kids
        # none is the daemon's own (its children: the spawner, and mkfs.ext4 at times)
        assert not [p for p, comm, _ in children(d.proc.pid) if comm == "sbx-init" or comm.startswith("memfd:")], \
            children(d.proc.pid)
        # a sandbox destroyed leaves no zombie behind
        gone = d.create()
        d.delete(gone)
        assert wait_until(lambda: not [k for k in children(sp) if k[2] == "Z"], 10), children(sp)
        assert wait_until(lambda: spares(d) >= MIN, 30)
        os.kill(sp, 9)
        # gone, or a zombie until the daemon next needs it
        assert wait_until(lambda: not [k for k in children(d.proc.pid) if k[0] == sp and k[2] not in "ZX"], 10), \
            children(d.proc.pid)
        # more creates than the pool held, each running
        for _ in range(MIN + 4):
            sid = d.create()
            ids.append(sid)
            assert d.run(sid, "true")["exitCode"] == 0
        assert d.run(ids[0], "true")["exitCode"] == 0  # made before the kill
        again = spawner_of(d)
        assert again != sp
        assert "the spawner has ended; starting another" in d.logs()
        for sid in ids:
            d.delete(sid)
        ids = []
    finally:
        for sid in ids:
            d.delete(sid)
        d.stop()
    assert wait_until(lambda: not os.path.exists(f"/proc/{again}"), 10)
