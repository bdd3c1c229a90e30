#!/usr/bin/env python3
"""bench_v1 - seed 004's /v1/sandboxes on a running daemon, per runtime:
create-to-ready (POST, then the first GET that answers "ready"), pause and
resume (the request, then the first GET in the state it leads to), printed
as JSON.  The terminal's round trip per runtime is bench_terminal.py's.
Numbers, not pass/fail.

usage: bench_v1.py URL KEY [ROUNDS]
"""
import json
import sys
import time

import requests

URL, KEY = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 10
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 2)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "p90_ms": pct(xs, 0.9), "n": len(xs)} if xs else None


def wait_status(sid, want, t0, limit=120):
    """ms from T0 until GET answers status WANT (polled every 2 ms)."""
    while True:
        r = S.get(URL + "/v1/sandboxes", params={"id": sid}, timeout=30)
        r.raise_for_status()
        st = r.json()["status"]
        if st == want:
            return (time.perf_counter() - t0) * 1000, r.json()
        if st in ("failed", "ended") or time.perf_counter() - t0 > limit:
            raise RuntimeError(f"{sid}: {st} while waiting for {want}")
        time.sleep(0.002)


def post(path, body):
    r = S.post(URL + path, json=body, timeout=120)
    if r.status_code >= 300:
        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
    return r.json()



def bench(runtime, rounds):
    ready, pause, resume = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sid = post("/v1/sandboxes", {"runtime": runtime})["id"]
        try:
            ready.append(wait_status(sid, "ready", t0)[0])
            t0 = time.perf_counter()
            post("/v1/sandboxes/pause", {"id": sid})
            pause.append(wait_status(sid, "paused", t0)[0])
            t0 = time.perf_counter()
            post("/v1/sandboxes/resume", {"id": sid})
            resume.append(wait_status(sid, "ready", t0)[0])
        finally:
            S.delete(URL + "/v1/sandboxes", params={"id": sid}, timeout=60)
            time.sleep(0.05)  # let the spare sandboxes refill
    return {"create_to_ready": summary(ready), "pause": summary(pause), "resume": summary(resume)}


def main():
    out = {}
    for runtime in ("bun", "python", "base"):
        try:
            out[runtime] = bench(runtime, ROUNDS)
        except Exception as e:  # a runtime without its template: say so, go on
            out[runtime] = {"error": str(e)[:300]}
    print(json.dumps({"seed004": out}, indent=1))


if __name__ == "__main__":
    main()
