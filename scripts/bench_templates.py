#!/usr/bin/env python3
"""bench_templates - create-to-ready per template on a running daemon:
POST /sandboxes until it answers (the sandbox runs, and a template's
`start` command has passed its `ready` check: the browser template's
Chromium serves CDP), then the first command's round trip (`true`), and
the same for each template named.  Every create takes a spare from the
warm pool, as `base` does (spares are prepared up to the point where the
template matters).  Numbers, not pass/fail; a template that is not built
is reported as such.  Seed 000 quotes ~2 s for claude and codex.

usage: bench_templates.py URL KEY ROUNDS TEMPLATE...
"""
import json
import sys
import time

import requests

URL, KEY, ROUNDS, NAMES = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def summary(xs):
    xs = sorted(xs)
    return {"p50_ms": round(xs[len(xs) // 2], 1), "max_ms": round(xs[-1], 1), "n": len(xs)} if xs else None


def bench(name):
    ready, first = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        r = S.post(URL + "/sandboxes", json={"templateID": name, "timeout": 300}, timeout=120)
        if r.status_code != 201:
            return {"error": f"{r.status_code} {r.text[:200]}"}
        ready.append((time.perf_counter() - t0) * 1000)
        sid = r.json()["sandboxID"]
        try:
            t1 = time.perf_counter()
            p = S.post(f"{URL}/sandboxes/{sid}/processes", json={"cmd": "true"}, timeout=60)
            p.raise_for_status()
            first.append((time.perf_counter() - t1) * 1000)
        finally:
            S.delete(f"{URL}/sandboxes/{sid}", timeout=60)
        time.sleep(0.3)  # let the pool make its next spare, as between real creates
    return {"create_to_ready": summary(ready), "first_command": summary(first)}


print(json.dumps({"templates": {n: bench(n) for n in NAMES}}, indent=2))
