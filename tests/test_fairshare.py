"""The CPU shared between organisations (src/service/fairshare.c): every
organisation's live sandboxes weigh the same in total, so an organisation
running many busy sandboxes cannot take the CPU from one running a single
sandbox.

Org "many" keeps four sandboxes spinning; org "one" spins in one sandbox
for three seconds and reports the CPU time it got.  With equal weights per
sandbox that is a fifth of the machine's two cores (0.4 CPU-seconds a
second); with the fair share it is what one process can use (1.0).  The
weights themselves are read from the sandboxes' real cgroups.  Their
parent, which holds every sandbox, weighs less than one process of the
host (the daemon's threads among them).
"""
import glob
import os
import subprocess
import time

import pytest
import requests

from conftest import SBXD, Sbxd

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass\nprint(time.process_time())"


def cgroup_weight(name, new=None):
    """Cgroup NAME's weight in cgroup v2 units, from whichever hierarchy
    has the cpu controller (v1's cpu.shares is 10.24 times it); with NEW,
    set to that first."""
    for path in glob.glob(f"/sys/fs/cgroup/cpu*/{name}/cpu.shares"):
        if new is not None:
            open(path, "w").write(str(new * 1024 // 100))
        return round(int(open(path).read()) * 100 / 1024)
    for path in glob.glob(f"/sys/fs/cgroup/{name}/cpu.weight"):
        if new is not None:
            open(path, "w").write(str(new))
        return int(open(path).read())
    pytest.skip("no cpu controller for sandboxes on this host")


def cpu_weight(sid):
    """The sandbox's weight."""
    return cgroup_weight(f"sbxd/{sid}")


@pytest.fixture(scope="module")
def sbxd(tmp_path_factory):
    d = Sbxd(str(tmp_path_factory.mktemp("fair") / "state")).start()
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


def wait_for(cond, timeout=5):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline
        time.sleep(0.05)


def test_each_organisation_weighs_the_same(sbxd):
    many = [sbxd.create() for _ in range(4)]
    subprocess.run([SBXD, "orgs", "create", "one", "--state-dir", sbxd.state_dir], check=True, capture_output=True)
    key = sbxd.new_key(org="one")
    other = requests.Session()
    other.headers["Authorization"] = "Bearer " + key
    r = other.post(sbxd.url + "/sandboxes", json={"templateID": "base", "timeout": 300})
    assert r.status_code == 201, r.text
    single = r.json()["sandboxID"]
    try:
        # a new sandbox has its organisation's share from the start, not
        # only once the worker has weighed it
        assert cpu_weight(single) == 10000
        # four sandboxes share one organisation's weight; one has it whole
        wait_for(lambda: cpu_weight(single) == 4 * cpu_weight(many[0]))
        assert {cpu_weight(s) for s in many} == {cpu_weight(many[0])}
        assert cpu_weight(single) == 10000

        # and the kernel shares by it: org "many" spins in all four
        for sid in many:
            sbxd.run(sid, "bash", "-c", "setsid nohup python3 -c \"$0\" >/dev/null 2>&1 </dev/null &", SPIN.format(s=20))
        time.sleep(0.5)
        r = other.post(f"{sbxd.url}/sandboxes/{single}/processes",
                       json={"cmd": "python3", "args": ["-c", SPIN.format(s=3)]}, timeout=60)
        assert r.status_code == 200, r.text
        got = float(r.json()["stdout"])
        ncpu = os.cpu_count()
        # equal weights would give it 2/5 of a CPU on two cores; the fair
        # share gives what one process can take
        assert got >= 3 * 0.7 if ncpu >= 2 else got >= 3 * 0.4, got

        # a sandbox gone: the remaining three share the weight
        sbxd.delete(many[-1])
        wait_for(lambda: cpu_weight(many[0]) == 10000 // 3)
    finally:
        other.delete(f"{sbxd.url}/sandboxes/{single}")
        for sid in many:
            sbxd.delete(sid)


PINNED_SPIN = ("import os, time\nos.sched_setaffinity(0, {{0}})\nt = time.monotonic()\n"
               "while time.monotonic() - t < {s}: pass\nprint(time.process_time())")


def test_the_sandboxes_together_weigh_less_than_a_host_process(sbxd):
    """All sandboxes sit in one cgroup weighing 12 (a nice-0 process weighs
    100), so that on a busy machine the daemon answering one tenant is not
    queued behind other tenants' floods (scripts/bench_load.py measures
    it).  Here a sandbox and a process of the host spin on the same CPU:
    the sandbox gets about 12/112 of it, where equal weights gave half."""
    assert cgroup_weight("sbxd") == 12
    sid = sbxd.create()
    host = subprocess.Popen(["python3", "-c", PINNED_SPIN.format(s=6)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = sbxd.run(sid, "python3", "-c", PINNED_SPIN.format(s=4))
        got = float(r["stdout"])
        assert got < 4 * 0.3, got
    finally:
        host.kill()
        host.wait()
        sbxd.delete(sid)


def test_the_operator_sets_the_sandboxes_weight(tmp_path):
    for bad in ("0", "10001", "x"):
        p = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path / "s"), "--sandboxes-cpu-weight", bad],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--sandboxes-cpu-weight" in p.stderr, (bad, p.stderr)
    d = Sbxd(str(tmp_path / "state"))
    try:
        d.start(args=["--sandboxes-cpu-weight", "50"])
        assert cgroup_weight("sbxd") == 50
    finally:
        d.stop()
        cgroup_weight("sbxd", 12)  # the default, as the other tests' daemons have it
