"""Watching directories through envd's filesystem service.

E2B's polled watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher)
keep at most 10,000 events and 4 MiB of them until they are fetched: a
sandbox that changes files faster than its client fetches ends its watcher
with an error (resource_exhausted), instead of growing the daemon.  A watch
is in place when its call answers, and a recursive one reports what was
made in a new directory before that directory's own watch was added."""
import json
import struct
import time

import requests


def new_sandbox(d):
    r = d.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300})
    assert r.status_code == 201, r.text
    return r.json()["sandboxID"], r.json()["envdAccessToken"]


def connect(d, sid, token, method, body):
    return requests.post(d.url + "/filesystem.Filesystem/" + method, json=body, timeout=60,
                         headers={"E2b-Sandbox-Id": sid, "X-Access-Token": token,
                                  "Content-Type": "application/json"})


# a directory 4 levels of 250-character names deep: every event's name is
# over 1,000 bytes, so 5,000 of them pass 4 MiB long before 10,000 events
DEEP = "/home/user/w/" + "/".join(c * 250 for c in "abcd")


def test_watcher_queue_is_bounded_and_overflow_is_its_error(sbxd):
    sid, token = new_sandbox(sbxd)
    try:
        assert sbxd.sh(sid, f"mkdir -p {DEEP}")["exitCode"] == 0
        r = connect(sbxd, sid, token, "CreateWatcher", {"path": "/home/user/w", "recursive": True})
        assert r.status_code == 200, r.text
        wid = r.json()["watcherId"]

        # a few events are kept and fetched as usual
        assert sbxd.sh(sid, f"cd {DEEP} && : > first")["exitCode"] == 0
        deadline, events = time.time() + 10, []
        while not events and time.time() < deadline:
            r = connect(sbxd, sid, token, "GetWatcherEvents", {"watcherId": wid})
            assert r.status_code == 200, r.text
            events = r.json()["events"]
            time.sleep(0.1)
        assert events and events[0]["name"].endswith("/first") and events[0]["type"] == "EVENT_TYPE_CREATE"

        # then a flood nobody fetches (5,000 events of over 1,000 bytes)
        assert sbxd.sh(sid, f"cd {DEEP} && for i in $(seq 5000); do : > f$i; done")["exitCode"] == 0
        time.sleep(3)  # for the daemon to take them all
        r = connect(sbxd, sid, token, "GetWatcherEvents", {"watcherId": wid})
        assert r.status_code == 429, r.text[:300]
        assert r.json()["code"] == "resource_exhausted" and "overflowed" in r.json()["message"], r.text
        # it stays ended, and can be removed
        r = connect(sbxd, sid, token, "GetWatcherEvents", {"watcherId": wid})
        assert r.status_code == 429, r.text[:300]
        assert connect(sbxd, sid, token, "RemoveWatcher", {"watcherId": wid}).status_code == 200
        assert connect(sbxd, sid, token, "GetWatcherEvents", {"watcherId": wid}).status_code == 404
    finally:
        sbxd.delete(sid)


# A recursive watch over many directories takes a while to arm inside the
# sandbox: a change made as soon as the watch call answers must be seen.
TREE, DIRS = "/home/user/t", 6000


def envelope(body):
    data = json.dumps(body).encode()
    return b"\0" + struct.pack(">I", len(data)) + data


def envelopes(stream):
    """Yield (flags, message) from a Connect stream as they arrive."""
    buf = b""
    for chunk in stream.iter_content(chunk_size=None):
        buf += chunk
        while len(buf) >= 5 and len(buf) >= 5 + struct.unpack(">I", buf[1:5])[0]:
            n = struct.unpack(">I", buf[1:5])[0]
            yield buf[0], json.loads(buf[5:5 + n])
            buf = buf[5 + n:]


def make_tree(d, sid):
    r = d.sh(sid, f"mkdir -p {TREE} && cd {TREE} && mkdir $(seq -f d%g {DIRS})")
    assert r["exitCode"] == 0, r


def touch_all(d, sid):
    # the last directories first, in case the watch is armed in name order
    r = d.sh(sid, f"cd {TREE} && for i in $(seq {DIRS} -1 1); do : > d$i/x; done")
    assert r["exitCode"] == 0, r


def watch_dir(d, sid, token, path):
    return requests.post(d.url + "/filesystem.Filesystem/WatchDir", stream=True, timeout=60,
                         data=envelope({"path": path, "recursive": True}),
                         headers={"E2b-Sandbox-Id": sid, "X-Access-Token": token,
                                  "Content-Type": "application/connect+json"})


def collect(stream, want):
    """Read "type:name" events from a started WatchDir stream until all of
    WANT are in, or 30 s passed (keepalives every 5 s bound each wait)."""
    seen, deadline = set(), time.time() + 30
    for flags, msg in stream:
        assert flags == 0, msg
        ev = msg.get("filesystem")
        if ev:
            seen.add(ev["type"].removeprefix("EVENT_TYPE_").lower() + ":" + ev["name"])
        if want <= seen or time.time() > deadline:
            break
    return seen


def test_watch_dir_is_armed_before_its_start_message(sbxd):
    sid, token = new_sandbox(sbxd)
    try:
        make_tree(sbxd, sid)
        want = {f"create:d{i}/x" for i in range(1, DIRS + 1)}
        with watch_dir(sbxd, sid, token, TREE) as r:
            assert r.status_code == 200, r.text
            stream = envelopes(r)
            assert next(stream) == (0, {"start": {}})
            touch_all(sbxd, sid)
            seen = collect(stream, want)
        assert not want - seen, f"{len(want - seen)} creates not reported, e.g. {sorted(want - seen)[:3]}"
    finally:
        sbxd.delete(sid)


def test_create_watcher_is_armed_when_it_answers(sbxd):
    sid, token = new_sandbox(sbxd)
    try:
        make_tree(sbxd, sid)
        r = connect(sbxd, sid, token, "CreateWatcher", {"path": TREE, "recursive": True})
        assert r.status_code == 200, r.text
        wid = r.json()["watcherId"]
        touch_all(sbxd, sid)
        want = {f"d{i}/x" for i in range(1, DIRS + 1)}
        seen, deadline = set(), time.time() + 30
        while want - seen and time.time() < deadline:
            r = connect(sbxd, sid, token, "GetWatcherEvents", {"watcherId": wid})
            assert r.status_code == 200, r.text
            seen |= {e["name"] for e in r.json()["events"] if e["type"] == "EVENT_TYPE_CREATE"}
            time.sleep(0.1)
        assert not want - seen, f"{len(want - seen)} creates not reported, e.g. {sorted(want - seen)[:3]}"
        assert connect(sbxd, sid, token, "RemoveWatcher", {"watcherId": wid}).status_code == 200
    finally:
        sbxd.delete(sid)


def test_watch_dir_reports_what_is_made_in_a_new_directory_at_once(sbxd):
    """A directory made and filled at once (mkdir d && echo y > d/f) gets
    its own watch only after its creation is seen: what is already in it
    then is reported as created, and a file with data as written."""
    sid, token = new_sandbox(sbxd)
    try:
        assert sbxd.sh(sid, "mkdir /home/user/n")["exitCode"] == 0
        n = 300
        want = set()
        for i in range(n):
            want |= {f"create:d{i}", f"create:d{i}/s", f"create:d{i}/s/f", f"write:d{i}/s/f", f"create:d{i}/e"}
        with watch_dir(sbxd, sid, token, "/home/user/n") as r:
            assert r.status_code == 200, r.text
            stream = envelopes(r)
            assert next(stream) == (0, {"start": {}})
            res = sbxd.sh(sid, f"cd /home/user/n && for i in $(seq 0 {n - 1}); do "
                               "mkdir -p d$i/s && echo y > d$i/s/f && : > d$i/e; done")
            assert res["exitCode"] == 0, res
            seen = collect(stream, want)
        assert not want - seen, f"{len(want - seen)} changes not reported, e.g. {sorted(want - seen)[:4]}"
        assert "write:" + "d0/e" not in seen, "an empty file found in a new directory is not reported written"
    finally:
        sbxd.delete(sid)
