"""The load test of hostile traffic (tests/loadgen.py tells the scenario):
2,000 idle keyless connections and 50 hostile sandboxes (DNS floods,
connection floods through the HTTP/TLS filter, output floods) while a
well-behaved organisation keeps creating, executing and resolving.

What it asserts:
  * every idle connection is accepted (none needs a thread of the daemon's
    own, and the per-address cap is not what stops them);
  * every create and exec of the well-behaved organisation succeeds
    meanwhile, and at least 90% of its DNS queries are answered (the rest
    were lost in a receive queue the daemon does not bound per sandbox:
    the DNS socket its slot shares with others, or the upstream's; a
    resolver asks again);
  * the daemon's resident memory stays under RSS_BOUND_MIB throughout;
  * every output-flood answer is cut at the cap and says so.
Its latencies, quiet and under the floods, and their ratios are printed
(run with -s) and by the benchmark (scripts/bench_load.py), which is where
speed is judged, not here.
"""
import ctypes
import json
import os
import struct
import subprocess

import pytest

from conftest import SBXD, Sbxd
from loadgen import scenario

RSS_BOUND_MIB = 512


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, peers):
    d = Sbxd(str(tmp_path_factory.mktemp("load") / "state")).start(args=["--dns-upstream", peers.dns1])
    subprocess.run([SBXD, "orgs", "create", "hostile", "--plan", "scale", "--max-sandboxes", "60",
                    "--state-dir", d.state_dir], check=True, capture_output=True)
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


SCHED_DEADLINE, SCHED_FLAG_RECLAIM = 6, 0x02
SYS_SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}


def sched_attr(tid):
    """(policy, flags, nice, runtime, deadline, period) of thread TID, by
    sched_getattr(2), which Python does not wrap."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(48)
    if libc.syscall(SYS_SCHED_GETATTR[os.uname().machine], tid, buf, 48, 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_getattr")
    _size, policy, flags, nice, _prio, runtime, deadline, period = struct.unpack("=IIQiIQQQ", buf.raw)
    return policy, flags, nice, runtime, deadline, period


def test_the_filters_loops_run_above_the_normal_priority(daemon):
    """The DNS and HTTP/TLS filters' loops, which every sandbox shares,
    run at nice -10: at 0, behind the floods below, the DNS loop fell
    behind, the kernel dropped every sandbox's queries at its socket and
    test_hostile_load failed 4 runs of 6 on a 2-core machine.  The DNS
    loop is also a SCHED_DEADLINE thread (0.5 ms of every 10 ms
    reserved, unused CPU reclaimed, threads it starts back to the normal
    policy), so a query does not wait for a core behind other sandboxes'
    floods; the HTTP/TLS loop has the normal policy."""
    pid = daemon.proc.pid
    nice, tids = {}, {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            stat = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        nice[comm] = int(stat[16])
        tids.setdefault(comm, []).append(int(tid))
    assert nice.get("sbx-dns") == -10 and nice.get("sbx-filter") == -10, nice
    # and the rest of the daemon at the normal priority
    assert nice.get("sbxd") == 0 and nice.get("sbx-reaper") == 0, nice
    (dns,), (flt,) = tids["sbx-dns"], tids["sbx-filter"]
    policy, flags, _nice, runtime, deadline, period = sched_attr(dns)
    assert (policy, runtime, deadline, period) == (SCHED_DEADLINE, 500_000, 10_000_000, 10_000_000)
    assert flags & SCHED_FLAG_RECLAIM
    assert os.sched_getscheduler(dns) == SCHED_DEADLINE | os.SCHED_RESET_ON_FORK
    assert os.sched_getscheduler(flt) == os.SCHED_OTHER
    assert "refused it a deadline reservation" not in daemon.logs()


def test_hostile_load(daemon):
    bad_key = daemon.new_key(org="hostile")
    out = scenario(daemon.url, daemon.key, bad_key, daemon.proc.pid)
    print(json.dumps(out, indent=1))
    assert out["idle_held"] == out["idle_connections"], out
    for phase in ("empty", "quiet", "load"):
        errors = [e for e in out[phase]["errors"] if not e.startswith("dns ")]
        assert not errors, (phase, out)
        assert out[phase]["dns_answered"] >= 0.9, (phase, out)
    assert out["rss_peak_mib"] < RSS_BOUND_MIB, out
    assert out["output_flood_calls"] > 0 and out["output_flood_truncated"] == out["output_flood_calls"], out
    assert daemon.proc.poll() is None
