"""The spare pool: a burst of concurrent creates all runs, the pool grows
with the demand within --spares-max, and shrinks back when idle."""
import os
import subprocess
import threading
import time

import pytest
import requests

from conftest import SBXD, Sbxd

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
