"""Monthly sandbox hours against a real daemon, with limits of a few
seconds (`sbxd orgs set --monthly-hours 0.001`): sandbox time grows while
a sandbox runs and not while it is paused, survives a kill -9 of the
daemon without being lost or counted twice, a create or a resume after
the hours ran out answers 429 `Monthly sandbox hours limit reached` in
every dialect, and a sandbox running when they run out is ended (stop
reason "quota", with its killed event).  Also the free plan's single
concurrent sandbox.
"""
import subprocess
import time

import requests

from conftest import SBXD, Sbxd

HOURS_LIMIT = "Monthly sandbox hours limit reached"


def orgs(d, *args):
    r = subprocess.run([SBXD, "orgs", *args, "--state-dir", d.state_dir], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def used_s(d, org="default"):
    """The organisation's sandbox time this month, in seconds, as `sbxd
    orgs list` shows it (USED_HOURS, the last column)."""
    for line in orgs(d, "list").splitlines()[1:]:
        cols = line.split()
        if cols[0] == org:
            return float(cols[-1]) * 3600
    raise AssertionError(f"no organisation {org}")


def wait_status(d, sid, want, within=15):
    deadline = time.time() + within
    while time.time() < deadline:
        j = d.get(sid).json()
        if j["status"] == want:
            return j
        time.sleep(0.1)
    raise AssertionError(f"{sid} is {d.get(sid).json()}, not {want}")


# The CLI shows hours to 7 decimals: 0.36 ms.
EPS = 0.01


def test_time_counts_while_running_not_paused_and_survives_a_restart(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        orgs(d, "set", "default", "--monthly-hours", "1")
        assert used_s(d) == 0
        t_create = time.time()
        sid = d.create(timeout=600)
        t_created = time.time()
        time.sleep(1.5)
        t_pause = time.time()
        assert d.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        t_paused = time.time()
        ran = used_s(d)
        assert t_pause - t_created - EPS <= ran <= t_paused - t_create + EPS

        # paused: not a millisecond more, however long
        time.sleep(1.5)
        assert used_s(d) == ran

        t_resume = time.time()
        assert d.req("POST", f"/sandboxes/{sid}/connect", json={}).json()["status"] == "running"
        t_resumed = time.time()
        time.sleep(1)
        now = time.time()
        u = used_s(d)
        assert ran + (now - t_resumed) - EPS <= u <= ran + (time.time() - t_resume) + EPS

        # the daemon dies with the sandbox running; it keeps running, and
        # that time counts once, not twice, and is not lost
        d.kill9()
        time.sleep(2)
        d.start()
        assert d.get(sid).json()["status"] == "running"
        time.sleep(0.5)
        before = time.time()
        u = used_s(d)
        after = time.time()
        assert ran + (before - t_resumed) - EPS <= u <= ran + (after - t_resume) + EPS

        # a clean stop and start too; then the end closes the interval
        d.stop()
        d.start()
        assert d.delete(sid).status_code == 204
        t_end = time.time()
        u = used_s(d)
        assert ran + (t_end - t_resumed) - 1 <= u <= ran + (t_end - t_resume) + EPS
        time.sleep(1)
        assert used_s(d) == u
    finally:
        d.cleanup()
        d.stop()


def test_hours_run_out_every_dialect_refuses_and_the_running_sandbox_ends(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        orgs(d, "set", "default", "--monthly-hours", "0.001")   # 3.6 s
        out = orgs(d, "list")
        assert out.splitlines()[1].split()[-2:] == ["0.001", "0"], out
        r = d.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 600, "secure": True,
                                              "autoPause": True, "autoResume": {"enabled": True}})
        assert r.status_code == 201, r.text
        paused, token = r.json()["sandboxID"], r.json()["envdAccessToken"]
        assert d.req("POST", f"/sandboxes/{paused}/pause").status_code == 204
        running = d.create(timeout=600)
        t0 = time.time()

        # the meter ends the running one once the hours are used up
        j = wait_status(d, running, "stopped", within=20)
        assert 2 <= time.time() - t0, "ended before the hours ran out"
        assert j["stopReason"] == "quota"
        events = d.req("GET", f"/events/sandboxes/{running}").json()
        killed = [e for e in events if e["type"] == "sandbox.lifecycle.killed"]
        assert len(killed) == 1 and killed[0]["eventData"]["reason"] == "quota", events
        used = used_s(d)
        assert 3.6 <= used <= 3.6 + 2.5, used   # the meter looks once a second
        # the paused one stays paused, and may not resume
        assert d.get(paused).json()["status"] == "paused"
        r = d.req("POST", f"/sandboxes/{paused}/connect", json={})
        assert r.status_code == 429 and r.json() == {"code": 429, "message": HOURS_LIMIT}, r.text
        assert d.get(paused).json()["status"] == "paused"
        # nor wake up by itself (autoResume) on a request to its envd
        r = requests.get(d.url + "/files", params={"path": "/etc/hostname"}, timeout=30,
                         headers={"E2b-Sandbox-Id": paused, "E2b-Sandbox-Port": "49983", "X-Access-Token": token})
        assert r.status_code == 502 and "paused" in r.text, r.text
        assert d.get(paused).json()["status"] == "paused"
        time.sleep(1)
        assert used_s(d) == used

        # no create in any dialect; the E2B/SandBase shape
        r = d.req("POST", "/sandboxes", json={"templateID": "base"})
        assert r.status_code == 429 and r.json() == {"code": 429, "message": HOURS_LIMIT}, r.text
        # seed 002's shape
        r = d.req("POST", "/api/sandbox/create", json={})
        assert r.status_code == 429, r.text
        assert r.json() == {"error": {"code": "limit_exceeded", "message": HOURS_LIMIT}}, r.text
        assert [s["sandboxID"] for s in d.req("GET", "/sandboxes?status=running").json()] == []

        # more hours: creates and resumes work again
        orgs(d, "set", "default", "--monthly-hours", "1")
        assert d.req("POST", f"/sandboxes/{paused}/connect", json={}).json()["status"] == "running"
        d.delete(d.create(timeout=60))
    finally:
        d.cleanup()
        d.stop()


def test_v1_create_after_the_hours_ran_out(tmp_path):
    """Seed 004's own dialect (the /v1 routes): {error: message}, 429."""
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        orgs(d, "set", "default", "--monthly-hours", "0.0002")   # 0.72 s
        sid = d.create(timeout=600)
        wait_status(d, sid, "stopped", within=20)
        r = d.req("POST", "/v1/sandboxes", json={})
        assert r.status_code == 429 and r.json() == {"error": HOURS_LIMIT}, r.text
    finally:
        d.cleanup()
        d.stop()


def test_free_plan_runs_one_sandbox_at_once(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        orgs(d, "set", "default", "--plan", "free")
        out = orgs(d, "list").splitlines()[1].split()
        assert out[2:6] == ["free", "1", "300", "5"], out
        first = d.create(timeout=300)
        r = d.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300})
        assert r.status_code == 429 and r.json()["message"] == "concurrent sandbox limit reached", r.text
        r = d.req("POST", "/api/sandbox/create", json={})
        assert r.status_code == 429 and "your plan allows 1 at once" in r.json()["error"]["message"], r.text
        # a paused sandbox still holds the place
        assert d.req("POST", f"/sandboxes/{first}/pause").status_code == 204
        d.create(timeout=300, expect=429)
        d.delete(first)
        d.delete(d.create(timeout=300))
    finally:
        d.cleanup()
        d.stop()
