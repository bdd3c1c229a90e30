"""Tests of the first start: `scripts/sbxd-up` serves as soon as its first
template is ready and builds the others in the background, showing their
progress; a template that is finished while the daemon runs can be used
at once, without a restart; a failed build is reported and the daemon
keeps serving; stopping sbxd-up stops the daemon and any build still
running.  A create naming a template whose build is running answers 503
"still being built" rather than "unknown template".

No template is really built here: that needs a Debian mirror, and tests
talk only to this machine.  The template directory is a temporary one
whose `base` is a hard-linked copy of the machine's (sandboxes write to
their own overlay, never to the tree), and `mmdebstrap` is replaced, on
PATH, by a stand-in that takes a few seconds, prints progress, and then
produces a hard-linked copy of that same tree (or fails, when asked to).
"""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import ROOT, SUITE_DISK_ARGS, Sbxd, free_port

MACHINE_TEMPLATES = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")
SBXD_UP = os.path.join(ROOT, "scripts", "sbxd-up")

FAKE_MMDEBSTRAP = """#!/bin/sh
# stands in for mmdebstrap: the last argument is the tree to make
for a; do target="$a"; done
i=0
while [ "$i" -lt "${FAKE_SECONDS:-3}" ]; do echo "fake mmdebstrap: step $i"; sleep 1; i=$((i+1)); done
if [ -n "$FAKE_FAIL" ]; then echo "fake mmdebstrap: failing as asked"; exit 3; fi
mkdir "$target" && cp -al "$FAKE_FROM/." "$target/"
echo "fake mmdebstrap: done"
"""


def publish_copy_of_base(tdir, name, spec_dir=None):
    """NAME as a hard-linked copy of the machine's base, put in place with
    one rename as a build does; with SPEC_DIR, recorded as built from
    NAME's spec there (as scripts/deps.sh records a build)."""
    src = os.path.join(MACHINE_TEMPLATES, "base")
    tmp = os.path.join(tdir, f".copy-{name}")
    os.makedirs(tmp)
    subprocess.run(["cp", "-al", os.path.join(src, "rootfs"), os.path.join(tmp, "rootfs")], check=True)
    shutil.copy(os.path.join(src, "template.json"), tmp)
    os.rename(tmp, os.path.join(tdir, name))
    if spec_dir:
        env = dict(os.environ, SBXD_ROOT=ROOT, SBXD_TEMPLATE_DIR=tdir, SBXD_SPEC_DIR=str(spec_dir))
        subprocess.run(["bash", "-c", f'. "$SBXD_ROOT/scripts/deps.sh"; sbxd_template_built {name}'], env=env,
                       check=True)


@pytest.fixture
def tdir(tmp_path):
    if not os.path.isfile(os.path.join(MACHINE_TEMPLATES, "base", "template.json")):
        pytest.skip("the machine's base template is not built")
    d = tmp_path / "templates"
    d.mkdir()
    yield str(d)
    subprocess.run(["rm", "-rf", "--one-file-system", str(d)])


def test_template_finished_while_the_daemon_runs_is_used_without_restart(tmp_path, tdir):
    d = Sbxd(str(tmp_path / "state")).start(args=["--template-dir", tdir])
    try:
        pid = d.proc.pid
        r = d.create(template="base", timeout=60, expect=400)
        assert "unknown template: base" in r.json()["message"]
        publish_copy_of_base(tdir, "base")
        sid = d.create(template="base", timeout=60)
        assert d.sh(sid, "echo ready")["stdout"] == "ready\n"
        d.delete(sid)
        assert d.proc.pid == pid and d.proc.poll() is None
    finally:
        d.cleanup()
        d.stop()


class Up:
    """scripts/sbxd-up on a free port with temporary directories, the
    stand-in mmdebstrap first on PATH."""

    def __init__(self, tmp_path, tdir, templates, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        fake = bindir / "mmdebstrap"
        fake.write_text(FAKE_MMDEBSTRAP)
        fake.chmod(0o755)
        specs = tmp_path / "specs"
        specs.mkdir(exist_ok=True)
        # written once: a test may change one between two starts
        for name in ("later", "slow", "failing"):
            if not (specs / f"{name}.spec").exists():
                (specs / f"{name}.spec").write_text(f"name: {name}\nuser: user\nworkdir: /home/user\n")
        if not (specs / "broken.spec").exists():
            (specs / "broken.spec").write_text("name: broken\ncolour: blue\n")
        self.log_dir = str(tmp_path / "logs")
        self.err_path = str(tmp_path / "sbxd-up.err")
        full = dict(os.environ)
        full.update({
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "SBXD_LISTEN": f"127.0.0.1:{self.port}",
            "SBXD_STATE_DIR": str(tmp_path / "state"),
            "SBXD_TEMPLATE_DIR": tdir,
            "SBXD_SPEC_DIR": str(specs),
            "SBXD_LOG_DIR": self.log_dir,
            "SBXD_TEMPLATES": templates,
            "SBXD_PROGRESS_EVERY": "2",
            "SBXD_SERVE_ARGS": " ".join(["--dns-upstream", "127.0.0.1:9"] + SUITE_DISK_ARGS),
            "FAKE_FROM": os.path.join(MACHINE_TEMPLATES, "base", "rootfs"),
        })
        full.update(env)
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([SBXD_UP], stdout=subprocess.DEVNULL, stderr=self.err, env=full)
        self.key = None

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def wait_for(self, pattern, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.stderr())
            if m:
                return m
            assert self.proc.poll() is None, f"sbxd-up exited:\n{self.stderr()}"
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} in sbxd-up's stderr:\n{self.stderr()}")

    def wait_serving(self):
        self.key = self.wait_for(r"sbxd: API key (\S+)").group(1)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        pytest.fail(f"sbxd-up does not serve:\n{self.stderr()}")

    def call(self, method, path, **kw):
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {self.key}"},
                                timeout=60, **kw)

    def create(self, template):
        return self.call("POST", "/sandboxes", json={"templateID": template, "timeout": 60})

    def run(self, sid, script):
        r = self.call("POST", f"/sandboxes/{sid}/processes", json={"cmd": "bash", "args": ["-c", script]})
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.err.close()


def serving(url):
    try:
        requests.get(url + "/health", timeout=1)
        return True
    except requests.ConnectionError:
        return False


def test_sbxd_up_serves_first_then_builds_the_rest(tmp_path, tdir):
    publish_copy_of_base(tdir, "base", tmp_path / "specs")
    up = Up(tmp_path, tdir, "base later broken", FAKE_SECONDS="6")
    made = []
    try:
        up.wait_serving()
        err = up.stderr()
        assert "sbxd: template base: ready" in err
        assert "sbxd: building in the background: later broken" in err
        # base is usable while `later` is still being built
        assert not os.path.exists(os.path.join(tdir, "later"))
        r = up.create("base")
        assert r.status_code == 201, r.text
        made.append(r.json()["sandboxID"])
        # naming it meanwhile says it is coming, not that it is unknown
        up.wait_for(r"sbxd: template later: building \(log")
        r = up.create("later")
        assert r.status_code == 503, r.text
        assert r.json()["message"] == "template later is still being built; try again when it is done"
        r = up.create("never")
        assert r.status_code == 400 and "unknown template: never" in r.text
        # progress: the template, the seconds, the build's last line
        up.wait_for(r"sbxd: template later: building, \d+ s \(fake mmdebstrap: step \d\)")
        up.wait_for(r"sbxd: template later: done in \d+ s")
        # usable now, from the same daemon
        r = up.create("later")
        assert r.status_code == 201, r.text
        made.append(r.json()["sandboxID"])
        assert up.run(made[-1], "id -un; pwd")["stdout"] == "user\n/home/user\n"
        # a failed build says so and where to look; the daemon keeps serving
        m = up.wait_for(r"sbxd: template broken: FAILED after \d+ s \(exit 1\); the end of (\S+):")
        assert m.group(1) == os.path.join(up.log_dir, "template-broken.log")
        # the log's last lines follow (a write of their own: wait for them)
        up.wait_for(re.escape(m.group(0)) + r"\n(    .*\n)*    .*colour", timeout=10)
        assert "every template is ready" not in up.stderr()
        assert serving(up.url)
        r = up.create("broken")
        assert r.status_code == 400
        for sid in made:
            assert up.call("DELETE", f"/sandboxes/{sid}").status_code == 204
        made = []
    finally:
        for sid in made:
            up.call("DELETE", f"/sandboxes/{sid}")
        status = up.stop()
    assert status == 0, up.stderr()
    assert not serving(up.url)
    assert "stopping the template builds" not in up.stderr()


def test_sbxd_up_reports_every_template_ready(tmp_path, tdir):
    publish_copy_of_base(tdir, "base", tmp_path / "specs")
    up = Up(tmp_path, tdir, "base later", FAKE_SECONDS="1")
    try:
        up.wait_serving()
        up.wait_for(r"sbxd: template later: done in \d+ s")
        up.wait_for(r"sbxd: every template is ready")
    finally:
        assert up.stop() == 0
    # a second start finds them all built and builds nothing
    up2 = Up(tmp_path, tdir, "base later", FAKE_FAIL="1")
    try:
        up2.wait_serving()
        err = up2.stderr()
        assert "template base: ready" in err and "template later: ready" in err
        assert "building" not in err
    finally:
        assert up2.stop() == 0
    # a changed spec is built again; the others stay as they are
    with open(tmp_path / "specs" / "later.spec", "a") as f:
        f.write("env: CHANGED=1\n")
    up3 = Up(tmp_path, tdir, "base later", FAKE_SECONDS="1")
    try:
        up3.wait_serving()
        up3.wait_for(r"sbxd: template later: done in \d+ s")
        err = up3.stderr()
        assert "template base: ready" in err and "template later: building" in err
    finally:
        assert up3.stop() == 0


def test_stopping_sbxd_up_stops_the_builds_too(tmp_path, tdir):
    publish_copy_of_base(tdir, "base", tmp_path / "specs")
    up = Up(tmp_path, tdir, "base slow", FAKE_SECONDS="300")
    try:
        up.wait_serving()
        up.wait_for(r"sbxd: template slow: building, \d+ s")
        fake = [p for p in os.listdir("/proc") if p.isdigit() and fake_of(p, tmp_path)]
        assert fake, "the stand-in mmdebstrap is not running"
    finally:
        status = up.stop()
    assert status == 0, up.stderr()
    assert "stopping the template builds" in up.stderr()
    assert not serving(up.url)
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and fake_of(p, tmp_path) for p in fake):
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") and fake_of(p, tmp_path) for p in fake)
    assert not os.path.exists(os.path.join(tdir, "slow"))
    # what the stopped build left behind does not pass for a build
    d = Sbxd(str(tmp_path / "state2")).start(args=["--template-dir", tdir])
    try:
        r = d.create(template="slow", expect=400)
        assert r.json()["message"] == "unknown template: slow"
    finally:
        d.stop()


def test_sbxd_up_without_its_first_template_does_not_serve(tmp_path, tdir):
    up = Up(tmp_path, tdir, "failing base", FAKE_SECONDS="1", FAKE_FAIL="1")
    status = up.proc.wait(timeout=120)
    up.err.close()
    assert status == 1
    err = up.stderr()
    assert re.search(r"sbxd: template failing: FAILED after \d+ s", err), err
    assert "fake mmdebstrap: failing as asked" in err
    assert "sbxd: cannot serve without template failing" in err
    assert "API key" not in err


def fake_of(pid, tmp_path):
    """Whether process PID is this test's stand-in mmdebstrap."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(tmp_path / "bin" / "mmdebstrap").encode() in f.read()
    except OSError:
        return False
