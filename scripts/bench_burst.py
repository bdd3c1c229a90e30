#!/usr/bin/env python3
"""bench_burst.py: create latency alone and in bursts, as JSON.

Starts a daemon of its own on a fresh state directory (the default
organisation's limit raised so that a burst of 100 fits), then measures:
  - one create at a time: POST /sandboxes of template base, p50 and p90,
    beside a `bwrap --unshare-all ... true` one-shot on the same tree,
    measured in the same run (the issue's floor);
  - bursts: 20 and 100 concurrent POST /sandboxes, each answered once its
    sandbox runs; per burst the wall time until the last answer, and the
    p50 and max of the single answers, over a few rounds (sandboxes
    destroyed and the spare pool given time to refill between rounds);
  - with --idle N, the single-create p50 again with N idle sandboxes alive;
  - the first burst of 100 of a second daemon that keeps only 4 spares
    when idle (sbxd serve --spares-min 4), so that most of its creates
    prepare their sandboxes inline: what a burst beyond the pool costs.
The first daemon runs with the default pool (100 spares when idle); the
first burst of a size finds the pool at its idle size; it grows with the
demand (sbxd serve --spares-max), so the later rounds show a warm pool
(spares_before: the spares ready as each round started).
Numbers, not pass/fail.

usage: bench_burst.py [--rounds R] [--idle N] [--spares-max M]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from conftest import SBXD, Sbxd  # noqa: E402
from benchlib import Client, ms, pct  # noqa: E402

BODY = json.dumps({"templateID": "base", "timeout": 600})


def bwrap_once(rootfs):
    t0 = time.perf_counter()
    subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/", "--proc", "/proc",
                    "--dev", "/dev", "--tmpfs", "/tmp", "true"], check=True)
    return time.perf_counter() - t0


def spares(d):
    """Sandboxes prepared ahead (spares): directories no live one owns."""
    dirs = set(os.listdir(os.path.join(d.state_dir, "sandboxes")))
    live = {s["sandboxID"] for s in d.req("GET", "/sandboxes?status=running").json()}
    return len(dirs - live)


def settle(d, limit=30):
    """Wait until the pool stops changing (its refill would share the CPU
    with what is measured next)."""
    deadline, last, same = time.time() + limit, -1, 0
    while time.time() < deadline and same < 4:
        n = spares(d)
        same = same + 1 if n == last else 0
        last = n
        time.sleep(0.25)


def single(d, rounds):
    """ROUNDS creates one at a time, each destroyed before the next."""
    c = Client(d.port, d.key, BODY)
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sid = c.create()
        t.append(time.perf_counter() - t0)
        c.call("DELETE", f"/sandboxes/{sid}")
        time.sleep(0.02)
    c.close()
    return t


def burst(d, n):
    """N concurrent creates; returns (wall, [each]) and destroys them."""
    clients = [Client(d.port, d.key, BODY) for _ in range(n)]
    each, ids, errors = [0.0] * n, [None] * n, []
    go = threading.Barrier(n + 1)

    def one(i):
        go.wait()
        t0 = time.perf_counter()
        try:
            ids[i] = clients[i].create()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(str(e))
        each[i] = time.perf_counter() - t0

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    for i, sid in enumerate(ids):
        if sid:
            clients[i].call("DELETE", f"/sandboxes/{sid}")
        clients[i].close()
    if errors:
        raise RuntimeError(f"burst of {n}: {len(errors)} failed: {errors[0]}")
    return wall, each


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="bursts of each size")
    ap.add_argument("--single", type=int, default=30, help="creates one at a time")
    ap.add_argument("--idle", type=int, default=0, help="also measure with this many idle sandboxes")
    ap.add_argument("--spares-max", type=int, default=0, help="the daemon's --spares-max (0: its default)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sbxd-bench-burst-")
    d = None
    out = {}
    try:
        # its sandboxes write nothing: promise their 10 GB disks many times
        # over, so that 100 fit on a machine with little free disk
        args = ["--disk-overcommit", "200"] + (["--spares-max", str(a.spares_max)] if a.spares_max else [])
        # the daemon's own pool, not the test suite's smaller one
        d = Sbxd(os.path.join(tmp, "state")).start(args=args, suite_pool=False)
        subprocess.run([SBXD, "orgs", "set", "default", "--max-sandboxes", str(max(200, a.idle + 120)),
                        "--state-dir", d.state_dir], check=True, capture_output=True)
        time.sleep(1)  # the first spares
        rootfs = "/var/lib/sbxd/templates/base/rootfs"
        bw = [bwrap_once(rootfs) for _ in range(a.single)]
        one = single(d, a.single)
        out["single"] = {"create_p50_ms": ms(pct(one, 0.5)), "create_p90_ms": ms(pct(one, 0.9)),
                         "bwrap_true_p50_ms": ms(pct(bw, 0.5)),
                         "create_over_bwrap": round(pct(one, 0.5) / pct(bw, 0.5), 2)}
        for n in (20, 100):
            walls, alls, ready = [], [], []
            for _ in range(a.rounds):
                time.sleep(3)  # the pool refills to what the last burst asked
                ready.append(spares(d))
                wall, each = burst(d, n)
                walls.append(wall)
                alls += each
            out[f"burst_{n}"] = {"wall_ms": [ms(w) for w in walls], "wall_p50_ms": ms(statistics.median(walls)),
                                 "each_p50_ms": ms(pct(alls, 0.5)), "each_max_ms": ms(max(alls)),
                                 "spares_before": ready}
        if a.idle:
            c = Client(d.port, d.key, BODY)
            idle = [c.create() for _ in range(a.idle)]
            settle(d)
            one = single(d, a.single)
            out[f"single_at_{a.idle}_idle"] = {"create_p50_ms": ms(pct(one, 0.5)),
                                               "create_p90_ms": ms(pct(one, 0.9)),
                                               "over_empty": round(pct(one, 0.5) / (out["single"]["create_p50_ms"] / 1000), 2)}
            for sid in idle:
                c.call("DELETE", f"/sandboxes/{sid}")
            c.close()
        # a pool smaller than the burst (sbxd serve --spares-min 4): the
        # first burst of 100 prepares most of its sandboxes inline
        d.cleanup()
        d.stop()
        d = Sbxd(os.path.join(tmp, "state-min")).start(args=["--disk-overcommit", "200", "--spares-min", "4"])
        subprocess.run([SBXD, "orgs", "set", "default", "--max-sandboxes", "200", "--state-dir", d.state_dir],
                       check=True, capture_output=True)
        # one create of base first: the pool boots its spares ahead for the
        # template last created (docs/architecture.md, "Booted spares")
        c = Client(d.port, d.key, BODY)
        c.delete(c.create())
        c.close()
        deadline = time.time() + 120
        while spares(d) < 4 and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # the boots ahead: the count does not show them
        settle(d)
        ready = spares(d)
        wall, each = burst(d, 100)
        out["first_burst_100_spares_min_4"] = {"wall_ms": ms(wall), "each_p50_ms": ms(pct(each, 0.5)),
                                               "each_max_ms": ms(max(each)), "spares_before": ready}
        print(json.dumps({"burst": out}))
    finally:
        if d:
            try:
                d.cleanup()
            finally:
                d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
