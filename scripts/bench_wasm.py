#!/usr/bin/env python3
"""bench_wasm.py URL KEY [ROUNDS]: Python in WebAssembly against Python in
a container, through a running sbxd's API, as JSON.

For each kind, ROUNDS times (default 5): create a sandbox, run print(1+1)
three times, read the sandbox's memory while idle before and after the
runs (and, for wasm_warm, once more after the warm server's expiry),
delete it.  The kinds:
  wasm_cold  template pyodide: SBXD_WASM_WARM=0 node /opt/sbxd/wasm-run.mjs,
             the program on stdin (docs/wasm.md); each run restores Pyodide
  wasm_warm  the same in the default mode: the first run starts a server
             that keeps Pyodide loaded (and in memory) for the next ones,
             until it has been idle for a while (here 5 s)
  container  template base: python3 -c
Latencies are of the whole API request, in milliseconds (median, and
min/max over the rounds); memory is the cgroup's memUsed from
GET /sandboxes/ID/metrics (its first sample a second after the request
before), in MiB.  The daemon keeps spare sandboxes of
some templates ready, which makes their create faster; "create" says
what a client sees either way.
"""
import json
import statistics
import sys
import time

import requests

PROGRAM = "print(1+1)"
# The warm server's idle expiry, shortened here so that the memory of a
# sandbox whose server has gone can be measured in seconds.
EXPIRY_S = 5
KINDS = {
    "wasm_cold": ("pyodide", ["sh", "-c", f"echo '{PROGRAM}' | SBXD_WASM_WARM=0 node /opt/sbxd/wasm-run.mjs"], False),
    "wasm_warm": ("pyodide", ["sh", "-c", f"echo '{PROGRAM}' | SBXD_WASM_IDLE_SECONDS={EXPIRY_S} "
                                          "node /opt/sbxd/wasm-run.mjs"], True),
    "container": ("base", ["python3", "-c", PROGRAM], False),
}


def summary(values):
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


def timed(fn):
    t = time.monotonic()
    r = fn()
    return r, (time.monotonic() - t) * 1000


def memory_mib(http, url, sid):
    # the first sample of the metrics history taken once whatever the last
    # request started has settled for a second
    settled_ms = int(time.time() * 1000) + 1000
    deadline = time.time() + 30
    while True:
        samples = http.get(f"{url}/sandboxes/{sid}/metrics", params={"start": settled_ms}, timeout=30).json()
        if samples or time.time() > deadline:
            break
        time.sleep(0.2)
    return samples[0]["memUsed"] / 2**20


def bench(http, url, template, cmd, expires, rounds):
    out = {"create": [], "run1": [], "run2": [], "run3": [], "idle_mib_before_runs": [], "idle_mib_after_runs": []}
    if expires:
        out["idle_mib_after_expiry"] = []
    for _ in range(rounds):
        r, ms = timed(lambda: http.post(f"{url}/sandboxes", json={"templateID": template, "timeout": 300},
                                        timeout=120))
        assert r.status_code == 201, r.text
        sid = r.json()["sandboxID"]
        try:
            out["create"].append(ms)
            out["idle_mib_before_runs"].append(memory_mib(http, url, sid))
            for n in ("run1", "run2", "run3"):
                r, ms = timed(lambda: http.post(f"{url}/sandboxes/{sid}/processes",
                                                json={"cmd": cmd[0], "args": cmd[1:], "timeout": 60}, timeout=120))
                res = r.json()
                assert r.status_code == 200 and res["stdout"] == "2\n" and res["exitCode"] == 0, r.text
                out[n].append(ms)
            out["idle_mib_after_runs"].append(memory_mib(http, url, sid))
            if expires:
                time.sleep(EXPIRY_S)
                out["idle_mib_after_expiry"].append(memory_mib(http, url, sid))
        finally:
            http.delete(f"{url}/sandboxes/{sid}", timeout=60)
    return {k: summary(v) for k, v in out.items()}


def main():
    url, key = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + key
    result = {"rounds": rounds, "program": PROGRAM, "unit": {"latency": "ms", "memory": "MiB"}}
    for kind, (template, cmd, expires) in KINDS.items():
        result[kind] = dict(template=template, **bench(http, url, template, cmd, expires, rounds))
    print(json.dumps({"wasm_vs_container": result}, indent=2))


if __name__ == "__main__":
    main()
