"""E2B's sandbox logs (GET /v2/sandboxes/:id/logs and v1's
/sandboxes/:id/logs): lifecycle events and egress decisions, merged by
time, with v2's filters."""
import time


def test_logs_show_lifecycle_and_egress(sbxd):
    sid = sbxd.create(allow_internet_access=False, network={"allowOut": ["allowed.example"]})
    try:
        out = sbxd.py(sid, "import socket\ntry:\n  socket.getaddrinfo('blocked.example', 80)\nexcept OSError:\n  print('no')")
        assert out["stdout"] == "no\n", out
        r = sbxd.req("POST", f"/sandboxes/{sid}/timeout", json={"timeout": 200})
        assert r.status_code == 204, r.text
        logs = sbxd.req("GET", f"/v2/sandboxes/{sid}/logs").json()["logs"]
        assert set(logs[0]) == {"timestamp", "level", "message", "fields"}
        messages = [e["message"] for e in logs]
        assert messages[0] == "sandbox created (request)" or messages[0].startswith("sandbox created"), messages
        egress = [e for e in logs if e["fields"].get("logger") == "egress"]
        assert any(e["fields"]["name"] == "blocked.example" and e["level"] == "warn"
                   and e["fields"]["verdict"] == "denied" for e in egress), logs
        assert any(e["message"].startswith("sandbox updated") for e in logs), messages
        stamps = [e["timestamp"] for e in logs]
        assert stamps == sorted(stamps)
        # filters: level, search, limit, direction, cursor
        warn = sbxd.req("GET", f"/v2/sandboxes/{sid}/logs", params={"level": "warn"}).json()["logs"]
        assert warn and all(e["level"] == "warn" for e in warn)
        found = sbxd.req("GET", f"/v2/sandboxes/{sid}/logs", params={"search": "blocked.example"}).json()["logs"]
        assert found and all("blocked.example" in e["message"] for e in found)
        one = sbxd.req("GET", f"/v2/sandboxes/{sid}/logs", params={"limit": 1, "direction": "backward"}).json()
        assert len(one["logs"]) == 1 and one["logs"][0]["timestamp"] == stamps[-1]
        future = int(time.time() * 1000) + 60000
        assert sbxd.req("GET", f"/v2/sandboxes/{sid}/logs", params={"cursor": future}).json()["logs"] == []
        for params in [{"limit": 1001}, {"direction": "sideways"}, {"level": "loud"}, {"cursor": "x"}]:
            assert sbxd.req("GET", f"/v2/sandboxes/{sid}/logs", params=params).status_code == 400, params
        # v1: lines and entries
        v1 = sbxd.req("GET", f"/sandboxes/{sid}/logs").json()
        assert set(v1) == {"logs", "logEntries"} and len(v1["logs"]) == len(v1["logEntries"])
        assert set(v1["logs"][0]) == {"timestamp", "line"}
    finally:
        sbxd.delete(sid)
    # after the kill: the lifecycle stays, with how it ended
    logs = sbxd.req("GET", f"/v2/sandboxes/{sid}/logs").json()["logs"]
    assert logs[-1]["message"] == "sandbox killed (request)", logs
    assert sbxd.req("GET", "/v2/sandboxes/sbx_notmine0/logs").status_code == 404
