#!/usr/bin/env python3
"""bench_desktop - the `desktop` template on a running daemon: per round,
create-to-ready (POST /sandboxes with templateID desktop, which answers
once the template's ready command sees the xfce4 session up) and
create-to-first-screenshot (that, then `scrot` in the sandbox, as
@e2b/desktop's screenshot() runs it, and the PNG downloaded), printed as
JSON.  Numbers, not pass/fail.

With SBXD_BENCH_WARM set (bench_warm.py) and a started warm pool of
desktop on that daemon, the same is measured there: "warm" next to
"cold" (this daemon, which keeps none).

usage: bench_desktop.py URL KEY [ROUNDS]
"""
import json
import sys
import time

import requests

from bench_warm import warm_daemon

URL, KEY = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "max_ms": round(max(xs), 1), "n": len(xs)} if xs else None


def bench(url=URL, session=S, warm=None):
    ready, shot, served = [], [], 0
    for _ in range(ROUNDS):
        claims = warm.wait_pool("desktop") if warm else None
        t0 = time.perf_counter()
        r = session.post(url + "/sandboxes", json={"templateID": "desktop", "timeout": 300}, timeout=120)
        r.raise_for_status()
        ms = (time.perf_counter() - t0) * 1000
        sid = r.json()["sandboxID"]
        try:
            p = session.post(url + f"/sandboxes/{sid}/processes", timeout=120,
                             json={"cmd": "scrot", "args": ["--pointer", "/tmp/first.png"], "timeout": 60}).json()
            assert p["exitCode"] == 0, p
            png = session.get(url + f"/sandboxes/{sid}/files", params={"path": "/tmp/first.png"}, timeout=60)
            png.raise_for_status()
            assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
            if warm is None or warm.metric("sbxd_warm_claims_total", "desktop") == claims + 1:
                ready.append(ms)
                shot.append((time.perf_counter() - t0) * 1000)
                served += warm is not None
        finally:
            session.delete(url + "/sandboxes/" + sid, timeout=60)
    out = {"create_to_ready": summary(ready), "create_to_first_screenshot": summary(shot)}
    if warm:
        out["served_warm"] = served
    return out


def main():
    cold = bench()
    warm = warm_daemon()
    if warm is None or not warm.has_pool("desktop"):
        print(json.dumps({"desktop": cold}, indent=2))
        return
    print(json.dumps({"desktop": {"cold": cold, "warm": bench(warm.url, warm.session, warm)}}, indent=2))


if __name__ == "__main__":
    main()
