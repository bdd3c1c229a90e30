"""The CPU shared between organisations (src/service/fairshare.c): every
organisation's live sandboxes weigh the same in total, so an organisation
running many busy sandboxes cannot take the CPU from one running a single
sandbox.

Org "many" keeps four sandboxes spinning; org "one" spins in one sandbox
for three seconds and reports the CPU time it got.  With equal weights per
sandbox that is a fifth of the machine's two cores (0.4 CPU-seconds a
second); with the fair share it is what one process can use (1.0).  The
weights themselves are read from the sandboxes' real cgroups.
"""
import glob
import os
import subprocess
import time

import pytest
import requests

from conftest import SBXD, Sbxd

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass\nprint(time.process_time())"


def cpu_weight(sid):
    """The sandbox's weight in cgroup v2 units, from whichever hierarchy
    has the cpu controller (v1's cpu.shares is 10.24 times it)."""
    for path in glob.glob(f"/sys/fs/cgroup/cpu*/sbxd/{sid}/cpu.shares"):
        return round(int(open(path).read()) * 100 / 1024)
    for path in glob.glob(f"/sys/fs/cgroup/sbxd/{sid}/cpu.weight"):
        return int(open(path).read())
    pytest.skip("no cpu controller for sandboxes on this host")


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
