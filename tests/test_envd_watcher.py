"""E2B's polled watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher)
keep at most 10,000 events and 4 MiB of them until they are fetched: a
sandbox that changes files faster than its client fetches ends its watcher
with an error (resource_exhausted), instead of growing the daemon."""
import time

import requests


def connect(d, sid, token, method, body):
    return requests.post(d.url + "/filesystem.Filesystem/" + method, json=body, timeout=60,
                         headers={"E2b-Sandbox-Id": sid, "X-Access-Token": token,
                                  "Content-Type": "application/json"})


# a directory 4 levels of 250-character names deep: every event's name is
# over 1,000 bytes, so 5,000 of them pass 4 MiB long before 10,000 events
DEEP = "/home/user/w/" + "/".join(c * 250 for c in "abcd")


def test_watcher_queue_is_bounded_and_overflow_is_its_error(sbxd):
    r = sbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300})
    assert r.status_code == 201, r.text
    sid, token = r.json()["sandboxID"], r.json()["envdAccessToken"]
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
