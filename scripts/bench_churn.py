#!/usr/bin/env python3
"""bench_churn.py: create/destroy churn, and what it leaves behind, as JSON.

Starts a daemon of its own on a fresh state directory and runs N cycles
(N: --cycles, else SBXD_BENCH_CHURN_N, else 1,000 when CI=true, else
10,000) of POST /sandboxes (template base) then DELETE of the same
sandbox, W at a time (--workers, 8), each worker on a keep-alive
connection of its own.  It prints:
  - cycles done, failures (and the first error), wall seconds, cycles/s,
    create and delete p50/p90 during the churn, and how many creates took
    a spare (spare_hits) or prepared their sandbox inline (spare_misses);
  - the daemon's RSS, descriptors and threads at the start and at the
    end, each read once the daemon is idle again: no teardown pending
    (they run after DELETE answers), the spare pool back at its idle size
    (it grows with the demand and halves after 10 s without a create, so
    this takes tens of seconds; the JSON says how long), the sandbox
    directories holding still, the request handler threads the load
    started ended (30 s after their last request), and the descriptor
    count holding still.  The pool is asked on a metrics address of its
    own (--metrics-listen), whose thread is the daemon's whatever the
    load: it is counted at both ends.  The daemon's spare cap is 2W
    (--spares-max: W cycles at once take at most W spares at a time, and
    a larger cap only lengthens the way back to the idle size).  The
    start is read after a warm-up of 2W cycles (--warmup), so that what
    the first concurrent requests make once (handler threads, the store's
    first pages) is not counted as growth;
  - the RSS growth, in KiB and per 1,000 cycles, the climb per 1,000
    cycles in the churn's second half (from the RSS read during it), and
    whether the growth was within RSS_BOUND_KIB (stated in
    docs/operations.md);
  - what the churn's sandboxes left on the host, by kind (directories,
    mounts, loop devices, cgroups, processes, id-range files, veths,
    nftables chains and map elements: tests/test_scale.py's leftovers()).
Numbers, not pass/fail (the exit status is 0 whatever they are).

usage: bench_churn.py [--cycles N] [--workers W] [--out DIR] [--spares-max M] [--warmup K]
"""
import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from conftest import Sbxd, free_port  # noqa: E402
from benchlib import Client, ms, pct  # noqa: E402
from test_scale import journals, no_leftovers, raise_org_limit, settle, stable_counts  # noqa: E402

BODY = json.dumps({"templateID": "base", "timeout": 600})
# The daemon's RSS growth over a churn of up to 10,000 cycles that
# docs/operations.md states as its bound ("Measuring the churn"), pro rata
# beyond: what is bounded by design (the 256 stopped sandboxes the core
# remembers, SQLite's page cache, the allocator's arenas) fills within the
# first few hundred cycles, so growth past it is a leak.
RSS_BOUND_KIB = 16384
IDLE_LIMIT_S = 180  # how long to wait for the daemon to be idle again
# The API's request handler threads are started on demand; those above
# the four kept idle end after 30 s without a request (HANDLER_IDLE_S in
# src/api/server.c): the thread count is read once they have.
HANDLER_IDLE_S = 31
# the kinds of leftovers() findings, by their first words
KINDS = ("dir", "mount", "loop", "cgroup", "process", "id range", "link", "chain", "map element")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def thread_names(pid):
    """The daemon's threads by name (what grew, when the count did)."""
    names = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                k = f.read().strip()
        except OSError:
            continue
        names[k] = names.get(k, 0) + 1
    return dict(sorted(names.items()))


def pool(metrics_port, counters=None):
    """The spare pool's size and target, from GET /metrics on the
    daemon's metrics address (answered by a thread of its own, so that
    asking does not keep the API's request handlers awake)."""
    c = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=30)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        st, b = r.status, r.read()
    finally:
        c.close()
    if st != 200:
        raise RuntimeError(f"metrics: HTTP {st}")
    got = {}
    for line in b.decode().splitlines():
        k, _, v = line.partition(" ")
        if k in ("sbxd_spares", "sbxd_spares_target", "sbxd_spare_hits_total", "sbxd_spare_misses_total"):
            got[k] = int(float(v))
    if counters is not None:
        counters.update(hits=got.get("sbxd_spare_hits_total"), misses=got.get("sbxd_spare_misses_total"))
    return got["sbxd_spares"], got["sbxd_spares_target"]


def idle(d, metrics_port, idle_size, quiet_since):
    """Wait until the daemon is idle again, then read its RSS, descriptors
    and threads: no teardown pending, the pool at IDLE_SIZE spares and
    aiming at no more, the sandbox directories holding still for a
    second, HANDLER_IDLE_S passed since the last API request at
    QUIET_SINCE (time.time()), then the descriptor and thread counts
    holding still.  Returns what it read and how long it waited."""
    t0 = time.time()
    deadline = t0 + IDLE_LIMIT_S
    counters = {}
    while True:
        spares, target = pool(metrics_port, counters)
        if spares == target == idle_size and not journals(d):
            break
        if time.time() > deadline:
            raise RuntimeError(f"not idle after {IDLE_LIMIT_S} s: {spares} spares, target {target},"
                               f" {len(journals(d))} teardowns pending")
        time.sleep(0.5)
    dirs = settle(d, None, max(10, deadline - time.time()))
    time.sleep(max(0, quiet_since + HANDLER_IDLE_S - time.time()))
    fds, threads, _ = stable_counts(d)
    return {"rss_kib": rss_kib(d.proc.pid), "fds": fds, "threads": threads,
            "threads_by_name": thread_names(d.proc.pid), "spares": len(dirs),
            "spare_hits": counters["hits"], "spare_misses": counters["misses"],
            "waited_s": round(time.time() - t0, 1)}


def churn(d, n, workers):
    """N create/destroy cycles, WORKERS at once; each worker's own
    connection.  Returns the made (id, uid slot) pairs, the create and
    delete times, the failures, the daemon's RSS after every tenth of
    the cycles ([cycles, KiB]: busy, so the spare pool's size varies, but
    a steady climb shows) and the wall time."""
    made, creates, deletes, errors, rss = [], [], [], [], []
    lock = threading.Lock()
    left = [n]
    every = max(1, n // 10)

    def worker():
        c = Client(d.port, d.key, BODY)
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                try:
                    t0 = time.perf_counter()
                    sid = c.create()
                    t1 = time.perf_counter()
                    with open(os.path.join(d.state_dir, "sandboxes", sid, "sandbox.json")) as f:
                        slot = json.load(f)["uid_slot"]
                    with lock:
                        made.append((sid, slot))
                    t2 = time.perf_counter()
                    c.delete(sid)
                    t3 = time.perf_counter()
                    with lock:
                        creates.append(t1 - t0)
                        deletes.append(t3 - t2)
                        if len(creates) % every == 0:
                            rss.append([len(creates), rss_kib(d.proc.pid)])
                except Exception as e:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(str(e))
                    c.reopen()
        finally:
            c.close()

    ts = [threading.Thread(target=worker) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return made, creates, deletes, errors, rss, time.perf_counter() - t0


def main():
    env_n = os.environ.get("SBXD_BENCH_CHURN_N")
    default_n = int(env_n) if env_n else (1000 if os.environ.get("CI") == "true" else 10000)
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=default_n)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out", default=None, help="also write churn.json there")
    ap.add_argument("--spares-max", type=int, default=-1,
                    help="the daemon's --spares-max (default: twice the workers; 0: the daemon's own default)")
    ap.add_argument("--warmup", type=int, default=-1, help="cycles before the start is read (default: twice the workers)")
    a = ap.parse_args()
    n, w = max(1, a.cycles), max(1, a.workers)
    tmp = tempfile.mkdtemp(prefix="sbxd-bench-churn-")
    metrics_port = free_port()
    d = None
    try:
        # W cycles at once never take more than W spares at a time; a larger
        # cap only makes the pool's way back to its idle size longer (it
        # halves every 10 s)
        spares_max = 2 * w if a.spares_max < 0 else a.spares_max
        warmup = 2 * w if a.warmup < 0 else a.warmup
        # its sandboxes write nothing: promise their 10 GB disks many times over
        args = ["--disk-overcommit", "200", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
        d = Sbxd(os.path.join(tmp, "state")).start(args=args + (["--spares-max", str(spares_max)] if spares_max else []))
        raise_org_limit(d, 4 * w)
        _, idle_size = pool(metrics_port)  # the target before any create: the pool's idle size
        if warmup:
            _, _, _, errors, _, _ = churn(d, warmup, w)
            if errors:
                raise RuntimeError(f"warm-up: {len(errors)} of {warmup} cycles failed: {errors[0]}")
        start = idle(d, metrics_port, idle_size, time.time())
        made, creates, deletes, errors, rss, wall = churn(d, n, w)
        end = idle(d, metrics_port, idle_size, time.time())
        found = no_leftovers(d, [m[0] for m in made], {m[1] for m in made})
        by_kind = {k: sum(1 for x in found if x.startswith(k + " ")) for k in KINDS}
        growth = end["rss_kib"] - start["rss_kib"]
        per_1k = round(growth * 1000 / len(creates), 1) if creates else None
        # the climb in the churn's second half, when the bounded things are full
        late = None
        if len(rss) >= 4:
            mid, last = rss[len(rss) // 2 - 1], rss[-1]
            late = round((last[1] - mid[1]) * 1000 / (last[0] - mid[0]), 1)
        out = {
            "cycles": n, "workers": w, "spares_max": spares_max or None, "warmup": warmup, "done": len(creates), "failed": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 1), "cycles_per_s": round(len(creates) / wall, 1),
            "create_p50_ms": ms(pct(creates, 0.5)), "create_p90_ms": ms(pct(creates, 0.9)),
            "delete_p50_ms": ms(pct(deletes, 0.5)), "delete_p90_ms": ms(pct(deletes, 0.9)),
            "spare_hits": end["spare_hits"] - start["spare_hits"],
            "spare_misses": end["spare_misses"] - start["spare_misses"],
            "start": start, "end": end,
            "fds_delta": end["fds"] - start["fds"], "threads_delta": end["threads"] - start["threads"],
            "rss_kib_during": rss, "rss_growth_kib": growth, "rss_growth_kib_per_1000": per_1k,
            "rss_growth_late_kib_per_1000": late,
            "rss_bound_kib": round(RSS_BOUND_KIB * max(n, 10000) / 10000),
            "rss_within_bound": growth <= RSS_BOUND_KIB * max(n, 10000) / 10000,
            "leftovers": len(found), "leftovers_by_kind": by_kind, "first_leftovers": found[:5],
        }
        line = json.dumps({"churn": out})
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "churn.json"), "w") as f:
                f.write(line + "\n")
        print(line)
    finally:
        if d:
            try:
                d.cleanup()
            finally:
                d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
