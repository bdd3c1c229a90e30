#!/usr/bin/env python3
"""bench_snapshot - E2B's snapshots and forks on a running daemon: the
latency of POST /sandboxes/:id/snapshots, of a create from the snapshot,
and of POST /sandboxes/:id/fork with 1 and with 10 copies, for a sandbox
that changed 10 MB and 1 GB of files (random bytes, so nothing compresses
or dedupes), and the 10 MB snapshot of a larger template (its time must
not grow with the template's size).  Printed as JSON.  Numbers, not
pass/fail.

usage: bench_snapshot.py URL KEY STATE_DIR [ROUNDS]
  STATE_DIR: the daemon's, to let its default organisation hold the eleven
  sandboxes a fork of ten makes (`sbxd orgs set`).
"""
import json
import os
import subprocess
import sys
import time

import requests

URL, KEY, STATE = sys.argv[1], sys.argv[2], sys.argv[3]
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
SBXD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "sbxd")
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "min_ms": round(min(xs), 1), "max_ms": round(max(xs), 1), "n": len(xs)} if xs else None


def call(method, path, body=None, want=(200, 201, 204)):
    r = S.request(method, URL + path, json=body, timeout=600)
    if r.status_code not in want:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json() if r.content else None


def timed(method, path, body=None):
    t0 = time.perf_counter()
    out = call(method, path, body)
    return (time.perf_counter() - t0) * 1000, out


def sandbox(template, changed_mb):
    sid = call("POST", "/sandboxes", {"templateID": template, "timeout": 1800})["sandboxID"]
    # written in 64 MB pieces; synced so that the copy finds it on disk
    script = (f"set -e; n={changed_mb}; i=0; while [ $n -gt 0 ]; do c=$(( n > 64 ? 64 : n )); "
              f"head -c $((c * 1048576)) /dev/urandom > /home/user/blob.$i; n=$((n - c)); i=$((i + 1)); done; sync")
    r = call("POST", f"/sandboxes/{sid}/processes", {"cmd": "bash", "args": ["-c", script], "timeout": 600})
    if r["exitCode"] != 0:
        raise RuntimeError(f"writing {changed_mb} MB: {r['stderr']}")
    return sid


def bench(template, changed_mb, rounds, forks=True):
    sid = sandbox(template, changed_mb)
    snap, create, fork1, fork10 = [], [], [], []
    try:
        for _ in range(rounds):
            ms, out = timed("POST", f"/sandboxes/{sid}/snapshots", {})
            snap.append(ms)
            ms, sb = timed("POST", "/sandboxes", {"templateID": out["snapshotID"], "timeout": 300})
            create.append(ms)
            call("DELETE", f"/sandboxes/{sb['sandboxID']}")
            call("DELETE", f"/templates/{out['snapshotID']}")
        for _ in range(rounds if forks else 0):
            for count, xs in ((1, fork1), (10, fork10)):
                ms, res = timed("POST", f"/sandboxes/{sid}/fork", {"count": count, "timeout": 300})
                made = [r["sandbox"]["sandboxID"] for r in res if "sandbox" in r]
                if len(made) != count:
                    raise RuntimeError(f"fork of {count}: {res}")
                xs.append(ms)
                for f in made:
                    call("DELETE", f"/sandboxes/{f}")
    finally:
        call("DELETE", f"/sandboxes/{sid}")
    out = {"snapshot": summary(snap), "create_from_snapshot": summary(create)}
    if forks:
        out.update({"fork_1": summary(fork1), "fork_10": summary(fork10)})
    return out


def main():
    subprocess.run([SBXD, "orgs", "set", "default", "--state-dir", STATE, "--max-sandboxes", "30"], check=True,
                   capture_output=True)
    res = {
        "base_10MB": bench("base", 10, ROUNDS),
        "base_1GB": bench("base", 1024, max(3, ROUNDS // 2)),
    }
    templates = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")
    if os.path.isdir(os.path.join(templates, "code_interpreter")):
        res["code_interpreter_10MB"] = bench("code_interpreter", 10, ROUNDS, forks=False)
    print(json.dumps({"snapshot_and_fork": res}, indent=2))


if __name__ == "__main__":
    main()
