"""Shared fixtures: a real sbxd on a free loopback port with a fresh state
directory, and a small client for its HTTP API.

The daemon under test is build/sbxd (the test command builds it first); the
templates come from the machine's template directory (SBXD_TEMPLATE_DIR or
/var/lib/sbxd/templates), where the test command builds `base`.
"""
import base64
import datetime
import json
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

# The network test peers (netpeers.py), one set for the whole session: a
# test module that imported the fixture itself would get a second set,
# whose start tears down the first one's namespaces under it.
from netpeers import peers  # noqa: F401,E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBXD = os.path.join(ROOT, "build", "sbxd")


# Disk admission (docs/architecture.md) promises every sandbox its whole
# disk, 10 GB by default, out of the state file system's free space.  The
# suite's daemons keep their state on the machine's own disk, whatever its
# size and whoever else uses it, and hold up to a dozen sandboxes at once
# (test_network's shared boxes, the concurrency limits of test_api): 120 GB
# of promises, of which they write a few hundred MB.  They overcommit
# knowingly, so the suite runs on a machine with about 8 GB free beyond the
# reserve; tests/test_disk.py checks admission at the default ratio (1) on
# a small file system of its own.
SUITE_DISK_ARGS = ["--disk-overcommit", "16"]

# The suite's daemons sample the sandboxes' metrics every second rather
# than every 5 s (E2B's, the default), so a test waits at most about a
# second for a sample taken after what it did (Sbxd.metrics_after).
SUITE_METRICS_ARGS = ["--metrics-interval-ms", "1000"]

# The suite's daemons keep 4 spare sandboxes when idle, not the default
# 100 (sized for a burst of 100 creates): hundreds of daemons start and
# stop in a run, and each spare is a network namespace the kernel frees
# in a worker of its own.  test_spares.py checks the default.
SUITE_POOL_MIN = 4


def sample_time(m):
    """A metrics sample's time, unix seconds with its milliseconds."""
    return datetime.datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).timestamp()


def node_tool(name):
    """The path of node or npm; fails the test when it is missing (the
    Node.js suites: E2B's SDKs, MCP's)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: the Node.js suites need Node.js 20+ and npm", pytrace=False)
    return path


def npm_ci(directory):
    """Install DIRECTORY's packages from its lock file, again only when the
    lock file changed (its hash is kept in node_modules/.sbxd-lock)."""
    with open(os.path.join(directory, "package-lock.json"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(directory, "node_modules", ".sbxd-lock")
    try:
        with open(stamp) as f:
            if f.read() == want:
                return
    except OSError:
        pass
    r = subprocess.run([node_tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=directory,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"npm ci in {directory} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}", pytrace=False)
    with open(stamp, "w") as f:
        f.write(want)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sbxd:
    """One sbxd process and a client for its API."""

    def __init__(self, state_dir, port=None):
        self.state_dir = state_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(state_dir + "-logs", f"sbxd-{self.port}.log")
        self.out_path = os.path.join(state_dir + "-logs", f"sbxd-{self.port}.out")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.http = requests.Session()
        self.key = None

    # -- process control --
    def start(self, env=None, args=None, suite_disk=True, suite_pool=True, wait_s=20, wait=True):
        """Start `sbxd serve`; ARGS are added to its command line.  Unless
        ARGS name one, the sandboxes' DNS goes to a closed port on the
        host's loopback, so that no test sends anything off this machine.
        SUITE_DISK adds SUITE_DISK_ARGS unless ARGS say --disk-overcommit;
        False leaves the daemon's own default.  SUITE_METRICS_ARGS are
        added unless ARGS say --metrics-interval-ms.  SUITE_POOL keeps
        SUITE_POOL_MIN spares when idle unless ARGS say --spares-min (or a
        --spares-max below it); False leaves the daemon's default.  It must
        answer within WAIT_S seconds, unless WAIT is false."""
        self.log = open(self.log_path, "ab")
        out = open(self.out_path, "wb")
        args = list(args or [])
        if "--dns-upstream" not in args:
            args += ["--dns-upstream", "127.0.0.1:9"]
        if suite_disk and "--disk-overcommit" not in args:
            args += SUITE_DISK_ARGS
        if "--metrics-interval-ms" not in args:
            args += SUITE_METRICS_ARGS
        if suite_pool and "--spares-min" not in args and (
                "--spares-max" not in args or int(args[args.index("--spares-max") + 1]) >= SUITE_POOL_MIN):
            args += ["--spares-min", str(SUITE_POOL_MIN)]
        self.args = args
        self.proc = subprocess.Popen(
            [SBXD, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state_dir] + args,
            stdout=out, stderr=self.log, env=env)
        out.close()
        if not wait:
            return self
        deadline = time.time() + wait_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sbxd exited: {open(self.log_path).read()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    # the first start on a fresh state directory prints a key
                    printed = open(self.out_path).read().split()
                    if printed:
                        self.key = printed[0]
                        self.http.headers["Authorization"] = "Bearer " + self.key
                    return self
            except (requests.ConnectionError, requests.Timeout):
                # not listening yet, or busy starting (a restart finishing
                # teardowns on a loaded machine): ask again
                time.sleep(0.05)
        raise RuntimeError("sbxd did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def new_key(self, org="default", e2b=False):
        """A new API key from the command line (`sbxd keys create`)."""
        cmd = [SBXD, "keys", "create", "--state-dir", self.state_dir, "--org", org] + (["--e2b"] if e2b else [])
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    # -- API --
    def req(self, method, path, **kw):
        kw.setdefault("timeout", 120)
        return self.http.request(method, self.url + path, **kw)

    def create(self, template="base", timeout=300, expect=201, **fields):
        body = {"templateID": template, "timeout": timeout}
        body.update(fields)
        r = self.req("POST", "/sandboxes", json=body)
        assert r.status_code == expect, r.text
        return r.json()["sandboxID"] if expect == 201 else r

    def get(self, sid):
        return self.req("GET", f"/sandboxes/{sid}")

    def delete(self, sid):
        return self.req("DELETE", f"/sandboxes/{sid}")

    def run(self, sid, cmd, *args, expect=200, **fields):
        body = {"cmd": cmd, "args": list(args)}
        body.update(fields)
        r = self.req("POST", f"/sandboxes/{sid}/processes", json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def sh(self, sid, script, **fields):
        """Run a bash script; returns the result object."""
        return self.run(sid, "bash", "-c", script, **fields)

    def py(self, sid, code, **fields):
        """Run python3 code; returns the result object."""
        return self.run(sid, "python3", "-c", code, **fields)

    def write(self, sid, path, data, expect=200, **fields):
        if isinstance(data, str):
            data = data.encode()
        body = {"path": path, "content": base64.b64encode(data).decode()}
        body.update(fields)
        r = self.req("POST", f"/sandboxes/{sid}/filesystem", json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def read(self, sid, path, expect=200, **params):
        params["path"] = path
        r = self.req("GET", f"/sandboxes/{sid}/filesystem", params=params)
        assert r.status_code == expect, r.text
        return base64.b64decode(r.json()["content"]) if expect == 200 else r.json()

    def metrics_after(self, sid, t, timeout=15):
        """The samples of SID's metrics history taken at or after unix time
        T (seconds, a float), once there is one; fails after TIMEOUT s."""
        deadline = time.time() + timeout
        while True:
            r = self.req("GET", f"/sandboxes/{sid}/metrics")
            assert r.status_code == 200, r.text
            after = [m for m in r.json() if sample_time(m) >= t]
            if after:
                return after
            assert time.time() < deadline, f"no sample of {sid} after {t}: {r.text[-500:]}"
            time.sleep(0.2)

    def sandbox_ids(self):
        return [s["sandboxID"] for s in self.req("GET", "/sandboxes").json()]

    def cleanup(self):
        for s in self.req("GET", "/sandboxes?status=running").json() + \
                self.req("GET", "/sandboxes?status=paused").json():
            self.delete(s["sandboxID"])


def wait_until(pred, seconds=10, step=0.05):
    """Whether PRED() holds within SECONDS: for what the daemon does after
    it answered (a destroyed sandbox's teardown)."""
    deadline = time.time() + seconds
    while not pred():
        if time.time() > deadline:
            return False
        time.sleep(step)
    return True


def host_traces(sid):
    """What a sandbox could leave on the host: cgroup dirs, processes whose
    cgroup names it, and mounts or loop devices naming it."""
    traces = []
    for root, _, _ in os.walk("/sys/fs/cgroup"):
        if sid in root:
            traces.append(root)
    mounts = open("/proc/self/mountinfo").read()
    if sid in mounts:
        traces.append("mount")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for line in loops.splitlines():
        if sid in line:
            traces.append(line)
    return traces


@pytest.fixture(scope="module")
def sbxd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sbxd")
    server = Sbxd(str(d / "state")).start()
    yield server
    try:
        server.cleanup()
    finally:
        server.stop()


@pytest.fixture
def sandbox(sbxd):
    sid = sbxd.create()
    yield sid
    sbxd.delete(sid)


# ---- the whole run leaves the machine as it found it ----
#
# Each test checks what its own sandboxes leave; this checks the machine
# once more after the last test, when every daemon of the run has
# stopped, for what no single test looks at: a sandbox of one daemon that
# another's start-up sweep was meant to clear (a killed daemon's spares
# once left their cgroups behind that way, found only by looking at the
# machine after a run).  What was there before the run is not counted;
# what a daemon outside the run makes meanwhile is (run the suite on a
# machine whose own sbxd is idle or stopped).

def cgroup_mounts():
    """The directories where this host's cgroup hierarchies (v1 and v2) are mounted."""
    out = []
    for line in open("/proc/self/mountinfo"):
        pre, _, post = line.partition(" - ")
        if post.split()[0] in ("cgroup", "cgroup2"):
            out.append(pre.split()[4])
    return out


def machine_sandbox_traces():
    """What sandboxes leave on the machine: their cgroups (every
    hierarchy, v1 or v2), uid range files, host-side links, init processes
    and loop devices of a state directory's disks."""
    traces = set()
    for mnt in cgroup_mounts():
        parent = os.path.join(mnt, "sbxd")
        if os.path.isdir(parent):
            traces.update(f"cgroup {parent}/{n}" for n in os.listdir(parent) if n.startswith("sbx"))
    if os.path.isdir("/run/sbxd/idmap"):
        traces.update(f"id range {n}" for n in os.listdir("/run/sbxd/idmap"))
    traces.update(f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith("sbxh"))
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and open(f"/proc/{pid}/comm").read().strip() == "sbx-init":
                traces.add(f"init {pid}")
        except OSError:
            pass
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    traces.update(f"loop {line.split(':')[0]}" for line in loops.splitlines() if "/sandboxes/sbx" in line)
    return traces


def pytest_sessionstart(session):
    session.config.sbxd_traces_before = machine_sandbox_traces()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "sbxd_traces_before", None)
    if before is None or session.config.option.collectonly:
        return
    # a stopped daemon's last teardowns and the kernel's reaping settle first
    wait_until(lambda: not machine_sandbox_traces() - before, 15, 0.5)
    left = machine_sandbox_traces() - before
    if left:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"the run left {len(left)} sandbox traces on the machine: " + ", ".join(sorted(left)[:40])
        if tr:
            tr.ensure_newline()
            tr.write_sep("!", "the machine is not as the run found it", red=True)
            tr.write_line(msg, red=True)
        else:
            print(msg)
        if session.exitstatus == 0:
            session.exitstatus = 1
