#!/usr/bin/env python3
"""bench_desktop - the `desktop` template on a running daemon: per round,
create-to-ready (POST /sandboxes with templateID desktop, which answers
once the template's ready command sees the xfce4 session up) and
create-to-first-screenshot (that, then `scrot` in the sandbox, as
@e2b/desktop's screenshot() runs it, and the PNG downloaded), printed as
JSON.  Numbers, not pass/fail.

usage: bench_desktop.py URL KEY [ROUNDS]
"""
import json
import sys
import time

import requests

URL, KEY = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "max_ms": round(max(xs), 1), "n": len(xs)} if xs else None


def main():
    ready, shot = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        r = S.post(URL + "/sandboxes", json={"templateID": "desktop", "timeout": 300}, timeout=120)
        r.raise_for_status()
        ready.append((time.perf_counter() - t0) * 1000)
        sid = r.json()["sandboxID"]
        try:
            p = S.post(URL + f"/sandboxes/{sid}/processes", timeout=120,
                       json={"cmd": "scrot", "args": ["--pointer", "/tmp/first.png"], "timeout": 60}).json()
            assert p["exitCode"] == 0, p
            png = S.get(URL + f"/sandboxes/{sid}/files", params={"path": "/tmp/first.png"}, timeout=60)
            png.raise_for_status()
            assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
            shot.append((time.perf_counter() - t0) * 1000)
        finally:
            S.delete(URL + "/sandboxes/" + sid, timeout=60)
    print(json.dumps({"desktop": {"create_to_ready": summary(ready),
                                  "create_to_first_screenshot": summary(shot)}}, indent=2))


if __name__ == "__main__":
    main()
