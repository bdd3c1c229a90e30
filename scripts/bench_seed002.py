#!/usr/bin/env python3
"""bench_seed002 - seed 002's API on a running daemon: create latency
(container and wasm), run latency, and the memory an idle sandbox holds
(its cgroup's usage), printed as JSON.  Numbers, not pass/fail.

usage: bench_seed002.py URL KEY [ROUNDS]
"""
import glob
import json
import statistics
import sys
import time

import requests

URL, KEY = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 20
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 2)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99), "n": len(xs)} if xs else None


def create(mode):
    t0 = time.perf_counter()
    r = S.post(URL + "/api/sandbox/create", json={"mode": mode}, timeout=120)
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return r.json()["sandbox_id"], ms


def run(sid, code):
    t0 = time.perf_counter()
    r = S.post(f"{URL}/api/sandbox/{sid}/run", json={"code": code, "timeout": 120}, timeout=180)
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    assert r.json()["status"] == "completed", r.text
    return ms


def destroy(sid):
    S.delete(f"{URL}/api/sandbox/{sid}", timeout=60)


def cgroup_bytes(sid):
    for pattern in ("/sys/fs/cgroup/memory/sbxd/{}/memory.usage_in_bytes", "/sys/fs/cgroup/sbxd/{}/memory.current"):
        for path in glob.glob(pattern.format(sid)):
            return int(open(path).read())
    return None


def bench(mode, rounds):
    creates, first, second = [], [], []
    for _ in range(rounds):
        sid, ms = create(mode)
        creates.append(ms)
        try:
            first.append(run(sid, "print(1 + 1)"))
            second.append(run(sid, "print(2 + 2)"))
        finally:
            destroy(sid)
        time.sleep(0.02)  # let the spare sandboxes refill, as the other benchmarks do
    # memory of idle sandboxes: created, one run done, then left alone
    idle = []
    ids = []
    try:
        for _ in range(5):
            sid, _ = create(mode)
            ids.append(sid)
            run(sid, "x = 1")
        time.sleep(1)
        idle = [b for b in (cgroup_bytes(s) for s in ids) if b is not None]
    finally:
        for sid in ids:
            destroy(sid)
    return {"create": summary(creates), "first_run": summary(first), "next_run": summary(second),
            "idle_memory_mib": round(statistics.median(idle) / 2**20, 2) if idle else None}


out = {"seed002": {"container": bench("container", ROUNDS)}}
try:
    out["seed002"]["wasm"] = bench("wasm", max(3, ROUNDS // 4))
except requests.HTTPError as e:
    out["seed002"]["wasm"] = {"error": e.response.text[:200]}
print(json.dumps(out))
