#!/usr/bin/env python3
"""bench_scale.py: the idle ramp, as JSON and PNG plots.

Starts a daemon of its own on a fresh state directory and creates idle
sandboxes of template base, one organisation holding them (its limit
raised to N), until N are alive (N: --n, else SBXD_BENCH_SCALE_N, else
300 when CI=true, else 10,000).  At 0, 100, 1,000 and N idle sandboxes
(those of them not above N) it measures:
  - create: p50 and p90 of PROBES single POST /sandboxes (each destroyed
    again), by a second organisation, so the ramp's limit is not in the
    way;
  - exec: p50 and p90 of PROBES POST /sandboxes/:id/processes `true` in
    idle sandboxes picked at random;
  - memory per idle sandbox, two ways (explained in docs/operations.md,
    "Measuring the scale"):
      * charged: the daemon's RSS growth since 0, plus the memory the
        sandboxes' cgroups are charged (memory.current on cgroup v2,
        memory.usage_in_bytes on v1: user pages, page cache and the
        kernel objects charged to the cgroup, slab included), divided by
        the count;
      * host: the drop of the host's MemAvailable since 0, divided by the
        count (everything, uncharged kernel objects too, but noisy on a
        shared machine);
  - the daemon's descriptors and threads.
Where a create fails before N, the ramp stops: the JSON says the count
reached and the error, and so does a line on stderr.  After the ramp
every sandbox (at most 500 picked at random when there are more) runs
`true` (are they all reachable?); the daemon is restarted with all of
them (restart: seconds until the API answers again, and 20 picked at
random run `true` after); then all are destroyed one at a time, each
DELETE timed (destroy p50, p90, max).

Plots (gnuplot, next to the JSON in --out): create and exec p50 against
the idle count (scale_latency.png), memory per idle sandbox against the
idle count (scale_memory.png), and, when bench_burst.py's JSON line was
saved as --burst-json, create latency against concurrency
(scale_burst.png).  Numbers, not pass/fail.

usage: bench_scale.py [--n N] [--out DIR] [--burst-json FILE] [--probes K] [--workers W]
"""
import argparse
import json
import os
import random
import shutil
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
from loadgen import settle  # noqa: E402

BODY = json.dumps({"templateID": "base", "timeout": 7200})
ORG_CAP = 10000  # SBX_PLAN_MAX_SANDBOXES_CAP
# idle sandboxes write nothing: their disks are promised many times over
# (the ramp stops with the daemon's own error where even that does not fit)
DAEMON_ARGS = ["--disk-overcommit", "10000", "--metrics-interval-ms", "5000"]


def timed(fn, *a):
    t = time.perf_counter()
    r = fn(*a)
    return time.perf_counter() - t, r


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def cgroup_bytes(ids):
    """The memory charged to the sandboxes' cgroups, found by their ids
    in the memory hierarchy (v2's unified one, or v1's memory
    controller); each sandbox counted once, at its topmost cgroup."""
    ids = set(ids)
    roots = [r for r in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup") if os.path.exists(os.path.join(r, "memory.stat"))
             or os.path.exists(os.path.join(r, "cgroup.controllers"))]
    total, seen = 0, set()
    for root in roots[:1]:
        for d, subdirs, _ in os.walk(root):
            name = os.path.basename(d)
            sid = next((i for i in ids if i in name), None)
            if sid is None or sid in seen:
                continue
            seen.add(sid)
            subdirs[:] = []  # its children are in its own charge
            for f in ("memory.current", "memory.usage_in_bytes"):
                try:
                    with open(os.path.join(d, f)) as fh:
                        total += int(fh.read())
                    break
                except OSError:
                    continue
    return total, len(seen)


def sample(d, probe_key, idle, base):
    """The measurements at len(IDLE) idle sandboxes."""
    n = len(idle)
    probe = Client(d.port, probe_key, BODY)
    creates, execs = [], []
    # execs first: after the creates, their teardowns and the pool's
    # refill run in the background for a while, and the execs measured
    # that work (16 ms p50 at 1,000 idle against 2.4 ms on a quiet daemon)
    if idle:
        ex = Client(d.port, d.key, BODY)
        for sid in random.sample(idle, min(ARGS.probes, n)) * (1 + ARGS.probes // max(1, n)):
            t, _ = timed(ex.exec_true, sid)
            execs.append(t)
        ex.close()
    else:
        sid = probe.create()
        for _ in range(ARGS.probes):
            t, _ = timed(probe.exec_true, sid)
            execs.append(t)
        probe.delete(sid)
        settle(d.proc.pid)
    for _ in range(ARGS.probes):
        t, sid = timed(probe.create)
        creates.append(t)
        probe.delete(sid)
    probe.close()
    st = proc_status(d.proc.pid)
    cg, cg_n = cgroup_bytes(idle) if idle else (0, 0)
    avail = mem_available_kb()
    out = {"idle": n, "create_p50_ms": ms(pct(creates, 0.5)), "create_p90_ms": ms(pct(creates, 0.9)),
           "exec_p50_ms": ms(pct(execs, 0.5)), "exec_p90_ms": ms(pct(execs, 0.9)),
           "daemon_rss_mib": round(st["VmRSS"] / 1024, 1), "daemon_fds": st["fds"], "daemon_threads": st["Threads"]}
    if n:
        rss_growth = (st["VmRSS"] - base["rss_kb"]) * 1024
        out["cgroups_found"] = cg_n
        out["charged_per_sandbox_kib"] = round((rss_growth + cg) / n / 1024, 1)
        out["daemon_growth_per_sandbox_kib"] = round(rss_growth / n / 1024, 1)
        out["cgroup_per_sandbox_kib"] = round(cg / max(1, cg_n) / 1024, 1)
        out["host_per_sandbox_kib"] = round((base["avail_kb"] - avail) / n, 1)
        out["fds_per_sandbox"] = round((st["fds"] - base["fds"]) / n, 2)
    print(f"bench_scale: {json.dumps(out)}", file=sys.stderr)
    return out


def ramp_to(d, idle, target, stop):
    """Create sandboxes with ARGS.workers connections until IDLE holds
    TARGET; on the first failure, STOP gets its message."""
    lock = threading.Lock()

    def worker():
        c = Client(d.port, d.key, BODY)
        try:
            while True:
                with lock:
                    if stop or len(idle) + worker.inflight >= target:
                        return
                    worker.inflight += 1
                try:
                    sid = c.create()
                except Exception as e:  # noqa: BLE001 - the message is the result
                    with lock:
                        worker.inflight -= 1
                        if not stop:
                            stop.append(str(e))
                    return
                with lock:
                    worker.inflight -= 1
                    idle.append(sid)
        finally:
            c.close()

    worker.inflight = 0
    ts = [threading.Thread(target=worker) for _ in range(ARGS.workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def gnuplot(script):
    if shutil.which("gnuplot") is None:
        print("bench_scale: no gnuplot (Debian's gnuplot-nox): no plots", file=sys.stderr)
        return False
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        print(f"bench_scale: gnuplot: {p.stderr.strip()}", file=sys.stderr)
    return p.returncode == 0


def plots(out_dir, samples, burst):
    made = []
    dat = os.path.join(out_dir, "scale.dat")
    with open(dat, "w") as f:
        f.write("# idle create_p50_ms exec_p50_ms charged_kib host_kib\n")
        for s in samples:
            f.write(f"{max(1, s['idle'])} {s['create_p50_ms'] or 'NaN'} {s['exec_p50_ms'] or 'NaN'} "
                    f"{s.get('charged_per_sandbox_kib', 'NaN')} {s.get('host_per_sandbox_kib', 'NaN')}\n")
    common = "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key top left\n" \
             "set logscale x\nset xlabel 'idle sandboxes (0 drawn at 1)'\n"
    png = os.path.join(out_dir, "scale_latency.png")
    if gnuplot(common + f"set output '{png}'\nset ylabel 'p50 (ms)'\nset yrange [0:*]\n"
               f"set title 'create and exec p50 against the idle count'\n"
               f"plot '{dat}' using 1:2 with linespoints title 'POST /sandboxes', "
               f"'' using 1:3 with linespoints title 'exec true'\n"):
        made.append(png)
    png = os.path.join(out_dir, "scale_memory.png")
    if gnuplot(common + f"set output '{png}'\nset ylabel 'KiB per idle sandbox'\nset yrange [0:*]\n"
               f"set title 'host memory per idle sandbox'\n"
               f"plot '{dat}' using 1:4 with linespoints title 'daemon RSS growth + cgroups', "
               f"'' using 1:5 with linespoints title 'MemAvailable drop'\n"):
        made.append(png)
    if burst:
        bdat = os.path.join(out_dir, "burst.dat")
        rows = []
        single = burst.get("single", {})
        if single.get("create_p50_ms") is not None:
            rows.append((1, single["create_p50_ms"], single["create_p50_ms"]))
        for k, v in sorted(burst.items()):
            if k.startswith("burst_") and k[6:].isdigit():
                rows.append((int(k[6:]), v.get("each_p50_ms"), v.get("wall_p50_ms")))
        rows.sort()
        with open(bdat, "w") as f:
            f.write("# concurrency each_p50_ms wall_p50_ms\n")
            for r in rows:
                f.write(" ".join("NaN" if x is None else str(x) for x in r) + "\n")
        png = os.path.join(out_dir, "scale_burst.png")
        if rows and gnuplot("set terminal pngcairo size 900,560 noenhanced\nset grid\nset key top left\n"
                            f"set output '{png}'\nset xlabel 'concurrent creates'\nset ylabel 'ms'\n"
                            "set yrange [0:*]\nset title 'create latency against concurrency'\n"
                            f"plot '{bdat}' using 1:2 with linespoints title 'each answer p50', "
                            f"'' using 1:3 with linespoints title 'all answered (wall) p50'\n"):
            made.append(png)
    return made


def main():
    env_n = os.environ.get("SBXD_BENCH_SCALE_N")
    default_n = int(env_n) if env_n else (300 if os.environ.get("CI") == "true" else 10000)
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=default_n)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "build", "bench"))
    ap.add_argument("--burst-json", default=None, help="bench_burst.py's JSON line (default: OUT/burst.json)")
    ap.add_argument("--probes", type=int, default=15)
    ap.add_argument("--workers", type=int, default=4)
    global ARGS
    ARGS = ap.parse_args()
    n = max(1, min(ARGS.n, ORG_CAP))
    os.makedirs(ARGS.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="sbxd-bench-scale-")
    d = None
    result = {"n": n, "points": [], "reached": 0, "stopped_by": None}
    idle = []
    try:
        # the metrics sampler at its default interval (5 s), not the test
        # suite's 1 s: each pass reads every sandbox's cgroup
        d = Sbxd(os.path.join(tmp, "state")).start(args=DAEMON_ARGS)
        # no monthly sandbox hours either: 10,000 sandboxes use up the
        # scale plan's 5,000 in half an hour, and the quota ends them
        subprocess.run([SBXD, "orgs", "set", "default", "--plan", "scale", "--max-sandboxes", str(n),
                        "--monthly-hours", "0", "--state-dir", d.state_dir], check=True, capture_output=True)
        probe_key = d.new_key(org="bench-probe")
        subprocess.run([SBXD, "orgs", "set", "bench-probe", "--plan", "scale", "--max-sandboxes", "20",
                        "--monthly-hours", "0", "--state-dir", d.state_dir], check=True, capture_output=True)
        time.sleep(1)  # the first spares
        st = proc_status(d.proc.pid)
        base = {"rss_kb": st["VmRSS"], "avail_kb": mem_available_kb(), "fds": st["fds"]}
        stop = []
        t0 = time.time()
        for point in sorted({0, 100, 1000, n}):
            if point > n:
                continue
            ramp_to(d, idle, point, stop)
            # settle: the ramp grew the spare pool, whose refill would share
            # the CPU with the probes (it took exec from 5 to 14 ms at 300
            # idle); the daemon's CPU standing still says it is done, and the
            # memory counters catch up meanwhile
            settle(d.proc.pid)
            try:
                result["points"].append(sample(d, probe_key, idle, base))
            except Exception as e:  # noqa: BLE001 - the message is the result
                stop.append(f"measuring at {len(idle)}: {e}")
            if stop:
                break
        result["ramp_s"] = round(time.time() - t0, 1)
        result["reached"] = len(idle)
        if stop:
            result["stopped_by"] = stop[0]
            print(f"bench_scale: the ramp stopped at {len(idle)} of {n} idle sandboxes: {stop[0]}", file=sys.stderr)
        # all reachable?
        check = idle if len(idle) <= 500 else random.sample(idle, 500)
        ex = Client(d.port, d.key, BODY)
        unreachable = []
        for sid in check:
            try:
                ex.exec_true(sid)
            except Exception as e:  # noqa: BLE001
                unreachable.append(f"{sid}: {e}")
                ex.close()
                ex = Client(d.port, d.key, BODY)
        ex.close()
        result["reachable"] = {"checked": len(check), "failed": len(unreachable), "first_errors": unreachable[:3]}
        # a restart with all of them: how long until the API answers again
        # (each sandbox taken back, the network rules renewed), and do they
        # still run commands?
        d.stop()
        t0 = time.time()
        d.start(args=DAEMON_ARGS, wait_s=1800)
        answering_s = round(time.time() - t0, 1)
        again = random.sample(idle, min(20, len(idle)))
        ex = Client(d.port, d.key, BODY)
        failed = 0
        for sid in again:
            try:
                ex.exec_true(sid)
            except Exception:  # noqa: BLE001
                failed += 1
                ex.close()
                ex = Client(d.port, d.key, BODY)
        ex.close()
        result["restart"] = {"answering_s": answering_s, "checked": len(again), "failed": failed}
        # destroy, one at a time
        c = Client(d.port, d.key, BODY)
        times = []
        refused = []  # a sandbox that ended by itself meanwhile: which, and what the API says of it
        for sid in list(idle):
            try:
                t, _ = timed(c.delete, sid)
                times.append(t)
            except RuntimeError as e:
                st, b = c.call("GET", f"/sandboxes/{sid}")
                refused.append(f"{sid}: {e}; GET: HTTP {st} {b[:200].decode(errors='replace')}")
            idle.remove(sid)
        c.close()
        result["destroy"] = {"count": len(times), "p50_ms": ms(pct(times, 0.5)), "p90_ms": ms(pct(times, 0.9)),
                             "max_ms": ms(max(times) if times else None),
                             "all_s": round(sum(times), 2), "refused": len(refused),
                             "first_refused": refused[:3]}
        burst_path = ARGS.burst_json or os.path.join(ARGS.out, "burst.json")
        burst = None
        if os.path.exists(burst_path):
            with open(burst_path) as f:
                lines = [json.loads(x) for x in f if x.strip().startswith("{")]
            burst = next((x["burst"] for x in lines if "burst" in x), None)
        result["plots"] = plots(ARGS.out, result["points"], burst)
        with open(os.path.join(ARGS.out, "scale.json"), "w") as f:
            json.dump({"scale": result}, f, indent=1)
        print(json.dumps({"scale": result}))
    finally:
        if d:
            try:
                c = Client(d.port, d.key, BODY)
                for sid in idle:
                    try:
                        c.delete(sid)
                    except Exception:  # noqa: BLE001
                        c.close()
                        c = Client(d.port, d.key, BODY)
                c.close()
            finally:
                d.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
