#!/usr/bin/env python3
"""bench_templates - create-to-ready per template on a running daemon:
POST /sandboxes until it answers (the sandbox runs, and a template's
`start` command has passed its `ready` check: the browser template's
Chromium serves CDP), then the first command's round trip (`true`), and
the same for each template named.  Every create takes a spare from the
warm pool, as `base` does (spares are prepared up to the point where the
template matters).  Numbers, not pass/fail; a template that is not built
is reported as such.  Seed 000 quotes ~2 s for claude and codex.

With SBXD_BENCH_WARM set (bench_warm.py), each template that has a
started warm pool on that daemon is measured there too: "warm" next to
"cold" (this daemon, which keeps none).

usage: bench_templates.py URL KEY ROUNDS TEMPLATE...
"""
import json
import sys
import time

import requests

from bench_warm import warm_daemon

URL, KEY, ROUNDS, NAMES = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def summary(xs):
    xs = sorted(xs)
    return {"p50_ms": round(xs[len(xs) // 2], 1), "max_ms": round(xs[-1], 1), "n": len(xs)} if xs else None


def bench(name, url=URL, session=S, warm=None):
    ready, first, served = [], [], 0
    for _ in range(ROUNDS):
        claims = warm.wait_pool(name) if warm else None
        t0 = time.perf_counter()
        r = session.post(url + "/sandboxes", json={"templateID": name, "timeout": 300}, timeout=120)
        if r.status_code != 201:
            return {"error": f"{r.status_code} {r.text[:200]}"}
        ms = (time.perf_counter() - t0) * 1000
        sid = r.json()["sandboxID"]
        try:
            if warm is None or warm.metric("sbxd_warm_claims_total", name) == claims + 1:
                ready.append(ms)
                served += warm is not None
            t1 = time.perf_counter()
            p = session.post(f"{url}/sandboxes/{sid}/processes", json={"cmd": "true"}, timeout=60)
            p.raise_for_status()
            first.append((time.perf_counter() - t1) * 1000)
        finally:
            session.delete(f"{url}/sandboxes/{sid}", timeout=60)
        time.sleep(0.3)  # let the pool make its next spare, as between real creates
    out = {"create_to_ready": summary(ready), "first_command": summary(first)}
    if warm:
        out["served_warm"] = served
    return out


def both(name):
    cold = bench(name)
    warm = warm_daemon()
    if warm is None or not warm.has_pool(name) or "error" in cold:
        return cold
    return {"cold": cold, "warm": bench(name, warm.url, warm.session, warm)}


print(json.dumps({"templates": {n: both(n) for n in NAMES}}, indent=2))
