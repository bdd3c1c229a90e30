"""The sandboxes' metrics history (service/samples.c), E2B's getMetrics.

One sampler thread samples every running sandbox each interval (here the
suite's 1 s, SUITE_METRICS_ARGS; E2B's 5 s by default) and keeps the last
720 samples of each: GET /sandboxes/:id/metrics answers those within
?start= and ?end= (unix seconds, each covering its whole second, or
milliseconds), oldest first; GET /sandboxes/metrics?sandbox_ids= the
newest of each named sandbox of the caller's.  A paused sandbox gets no
samples.  The ring's bound is tests/unit/test_samples.c's.  The
histories are kept in the store too: a restarted daemon answers for the
time before it started.
"""
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import SBXD, Sbxd, sample_time

E2B_FIELDS = {"timestamp": str, "timestampUnix": int, "cpuCount": int, "cpuUsedPct": (int, float),
              "memUsed": int, "memTotal": int, "memCache": int, "diskUsed": int, "diskTotal": int}


def history(sbxd, sid, **params):
    r = sbxd.req("GET", f"/sandboxes/{sid}/metrics", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_samples(sbxd, sid, n, timeout=20):
    deadline = time.time() + timeout
    while True:
        h = history(sbxd, sid)
        if len(h) >= n:
            return h
        assert time.time() < deadline, h
        time.sleep(0.3)


@pytest.fixture(scope="module")
def box(sbxd):
    sid = sbxd.create(memoryMB=512)
    yield sid
    sbxd.delete(sid)


def test_history_grows_in_time_order_at_the_interval(sbxd, box):
    h = wait_for_samples(sbxd, box, 4)
    times = [sample_time(m) for m in h]
    assert times == sorted(times) and len(set(times)) == len(times), times
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    # one sample a second: the median gap, whatever the machine's noise
    assert 0.7 < gaps[len(gaps) // 2] < 2.0, gaps
    for m in h:
        for k, t in E2B_FIELDS.items():
            assert isinstance(m[k], t), (k, m)
        assert m["timestampUnix"] == int(sample_time(m)), m
        assert m["cpuCount"] == 2 and m["memTotal"] == 512 << 20 and 0 < m["memUsed"] < m["memTotal"]
        assert 0 <= m["cpuUsedPct"] <= 100 and m["diskTotal"] > m["diskUsed"] > 0


def test_memory_allocated_inside_shows_in_the_next_samples(sbxd, box):
    before = history(sbxd, box)[-1]["memUsed"]
    r = sbxd.run(box, "python3", "-c", "import time; x = b'\\1' * (200 << 20); time.sleep(30)", background=True)
    pid = r["pid"]
    try:
        deadline = time.time() + 20
        while True:
            m = sbxd.metrics_after(box, time.time())[-1]
            if m["memUsed"] >= before + (150 << 20):
                break
            assert time.time() < deadline, (before, m)
        assert m["memUsed"] < m["memTotal"]
    finally:
        sbxd.req("POST", f"/sandboxes/{box}/processes/{pid}/signal", json={"signal": "SIGKILL"})


def test_start_and_end_select_a_window(sbxd, box):
    h = wait_for_samples(sbxd, box, 5)
    # in seconds (what the SDKs send): a second covers all its samples
    sec = h[2]["timestampUnix"]
    want = [m for m in h if m["timestampUnix"] == sec]
    assert history(sbxd, box, start=sec, end=sec) == want
    # in milliseconds: exactly the samples between
    ms = [int(round(sample_time(m) * 1000)) for m in h]
    assert history(sbxd, box, start=ms[1], end=ms[3]) == h[1:4]
    assert history(sbxd, box, start=ms[1] + 1, end=ms[3] - 1) == h[2:3]
    # open ends, and windows with nothing in them
    assert history(sbxd, box, end=h[1]["timestampUnix"])[0] == h[0]
    assert history(sbxd, box, start=sec)[0]["timestampUnix"] == sec
    now = int(time.time())
    assert history(sbxd, box, start=0, end=now - 3600) == []
    assert history(sbxd, box, start=now + 3600) == []
    assert history(sbxd, box, start=(now + 3600) * 1000) == []


@pytest.mark.parametrize("params,msg", [
    ({"start": "soon"}, "start must be a unix time in seconds"),
    ({"end": "-5"}, "end must be a unix time in seconds"),
    ({"end": "+5"}, "end must be a unix time in seconds"),
    ({"start": "99999999999999999999"}, "start must be a unix time in seconds"),
    ({"start": "200", "end": "100"}, "start must not be after end"),
])
def test_bad_windows_are_refused(sbxd, box, params, msg):
    r = sbxd.req("GET", f"/sandboxes/{box}/metrics", params=params)
    assert r.status_code == 400 and r.json()["message"] == msg, r.text


def test_a_paused_sandbox_gets_no_samples(sbxd):
    sid = sbxd.create()
    try:
        wait_for_samples(sbxd, sid, 2)
        assert sbxd.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        paused_at = time.time()
        time.sleep(0.5)  # a sample the sampler was taking as the pause came
        n = len(history(sbxd, sid))
        time.sleep(3)
        h = history(sbxd, sid)
        assert len(h) == n and all(sample_time(m) <= paused_at + 0.5 for m in h), h
        r = sbxd.req("POST", f"/sandboxes/{sid}/connect", json={"timeout": 300})
        assert r.status_code in (200, 201), r.text
        after = sbxd.metrics_after(sid, time.time())
        assert after and len(history(sbxd, sid)) > n
    finally:
        sbxd.delete(sid)


def test_first_sample_is_there_at_once_and_the_history_ends_with_the_sandbox(sbxd):
    sid = sbxd.create()
    h = history(sbxd, sid)
    assert len(h) >= 1 and h[0]["memUsed"] > 0, h
    assert sbxd.delete(sid).status_code == 204
    r = sbxd.req("GET", f"/sandboxes/{sid}/metrics")
    assert r.status_code in (404, 409), r.text


def test_metrics_of_several_sandboxes(sbxd, box):
    other_key = {"Authorization": "Bearer " + sbxd.new_key(org="metrics-other")}
    r = sbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 120}, headers=other_key)
    assert r.status_code == 201, r.text
    foreign = r.json()["sandboxID"]
    mine = sbxd.create()
    try:
        wait_for_samples(sbxd, mine, 1)
        r = sbxd.req("GET", "/sandboxes/metrics", params={"sandbox_ids": f"{box},{mine},{foreign},sbx_nosuch"})
        assert r.status_code == 200, r.text
        got = r.json()["sandboxes"]
        # another organisation's sandbox is as unknown as one that does not exist
        assert sorted(got) == sorted([box, mine]), got
        for sid in (box, mine):
            for k, t in E2B_FIELDS.items():
                assert isinstance(got[sid][k], t), (k, got[sid])
            # the newest sample of the history
            assert sample_time(got[sid]) >= sample_time(history(sbxd, sid)[-1]) - 2.5
        r = sbxd.req("GET", "/sandboxes/metrics", params={"sandbox_ids": foreign}, headers=other_key)
        assert list(r.json()["sandboxes"]) == [foreign], r.text
    finally:
        sbxd.delete(mine)
        sbxd.req("DELETE", f"/sandboxes/{foreign}", headers=other_key)


@pytest.mark.parametrize("ids,msg", [
    (None, "sandbox_ids is required"),
    ("", "sandbox_ids is required"),
    ("a,,b", "sandbox_ids must be sandbox ids separated by commas"),
    ("x" * 64, "sandbox_ids must be sandbox ids separated by commas"),
    ("a,b,a", "sandbox_ids must not repeat an id"),
    (",".join(f"sbx_{i}" for i in range(101)), "sandbox_ids may name at most 100 sandboxes"),
])
def test_bad_sandbox_id_lists_are_refused(sbxd, ids, msg):
    params = {} if ids is None else {"sandbox_ids": ids}
    r = sbxd.req("GET", "/sandboxes/metrics", params=params)
    assert r.status_code == 400 and r.json()["message"] == msg, r.text


def test_hundred_ids_are_answered(sbxd, box):
    ids = [box] + [f"sbx_{i}" for i in range(99)]
    r = sbxd.req("GET", "/sandboxes/metrics", params={"sandbox_ids": ",".join(ids)})
    assert r.status_code == 200 and list(r.json()["sandboxes"]) == [box], r.text


@pytest.mark.parametrize("value", ["50", "600001", "1s", ""])
def test_the_interval_flag_is_bounded(value, tmp_path):
    r = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path), "--metrics-interval-ms", value],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and f"invalid --metrics-interval-ms {value}" in r.stderr, r.stderr


def stored_samples(state_dir, sid):
    db = sqlite3.connect(os.path.join(state_dir, "sbxd.db"))
    try:
        return db.execute("SELECT COUNT(*) FROM sandbox_samples WHERE sandbox_id = ?", (sid,)).fetchone()[0]
    finally:
        db.close()


def test_history_survives_a_daemon_restart(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=600)
        other = d.create(timeout=600)
        before = wait_for_samples(d, sid, 3)
        # kill -9: what each pass took is already written
        time.sleep(1.5)
        d.kill9()
        d.start()
        t0 = int(sample_time(before[0]))
        after = history(d, sid, start=t0, end=int(time.time()) + 1)
        kept = {m["timestamp"] for m in after}
        assert {m["timestamp"] for m in before} <= kept, (before, after)
        assert [sample_time(m) for m in after] == sorted(sample_time(m) for m in after)
        # and the history goes on after the restart
        n = len(after)
        deadline = time.time() + 20
        while len(history(d, sid, start=t0)) < n + 2:
            assert time.time() < deadline
            time.sleep(0.3)
        # a killed sandbox's rows go with it; the other's stay
        assert stored_samples(d.state_dir, sid) > 0
        assert d.delete(sid).status_code in (200, 204)
        deadline = time.time() + 5
        while stored_samples(d.state_dir, sid) and time.time() < deadline:
            time.sleep(0.2)
        assert stored_samples(d.state_dir, sid) == 0
        assert stored_samples(d.state_dir, other) > 0
    finally:
        d.cleanup()
        d.stop()
