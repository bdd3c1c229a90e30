#!/usr/bin/env python3
"""bench_load.py: the hostile-load figures (tests/loadgen.py) as JSON.

Starts the network test peers (tests/netpeers.py) and a daemon of its own
on a fresh state directory, with an organisation for the hostile
sandboxes, runs the scenario and prints the well-behaved organisation's
quiet and loaded p50s, their ratios and the daemon's memory.  Nothing
leaves this machine: the peers live in test network namespaces.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from conftest import SBXD, Sbxd  # noqa: E402
from loadgen import scenario  # noqa: E402
from netpeers import Peers  # noqa: E402


def main():
    idle = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    peers = Peers().up()
    tmp = tempfile.mkdtemp(prefix="sbxd-bench-load-")
    d = None
    try:
        d = Sbxd(os.path.join(tmp, "state")).start(args=["--dns-upstream", peers.dns1])
        subprocess.run([SBXD, "orgs", "create", "hostile", "--plan", "scale", "--max-sandboxes", "60",
                        "--state-dir", d.state_dir], check=True, capture_output=True)
        out = scenario(d.url, d.key, d.new_key(org="hostile"), d.proc.pid, idle=idle)
        print(json.dumps({"hostile_load": out}))
    finally:
        if d:
            try:
                d.cleanup()
            finally:
                d.stop()
        peers.down()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
