"""The unmodified E2B JavaScript SDKs against sbxd.

The tests themselves are Node scripts under tests/e2b (node:test): the `e2b`
(2.51.0) and `@e2b/code-interpreter` (2.8.0) packages in tests/e2b, and the
older `e2b` 2.50 line, which creates through POST /sandboxes, in
tests/e2b/old. Each script runs as one pytest test against a fresh daemon,
with E2B_API_KEY (an e2b_ key), E2B_API_URL and E2B_SANDBOX_URL pointing at
it. The npm packages come from the lock files (`npm ci`) when node_modules
is missing.
"""
import os
import subprocess
import time

import pytest

from conftest import SBXD, node_tool, npm_ci

HERE = os.path.dirname(os.path.abspath(__file__))
E2B_DIR = os.path.join(HERE, "e2b")
OLD_DIR = os.path.join(E2B_DIR, "old")
NODE_TIMEOUT = 300

TEST_FILES = [
    ("sdk", E2B_DIR, "sdk.test.mjs"),
    ("interpreter", E2B_DIR, "interpreter.test.mjs"),
    ("watch_and_signed_urls", E2B_DIR, "watch.test.mjs"),
    ("template", E2B_DIR, "template.test.mjs"),
    ("old_sdk", OLD_DIR, "sdk-old.test.mjs"),
]


@pytest.fixture(scope="module")
def e2b_env(sbxd):
    node_tool("node")
    for d in (E2B_DIR, OLD_DIR):
        npm_ci(d)
    env = dict(os.environ)
    env.update({
        "E2B_API_KEY": sbxd.new_key(e2b=True),
        "E2B_API_URL": sbxd.url,
        "E2B_SANDBOX_URL": sbxd.url,
        "NO_COLOR": "1",
    })
    # the SDKs must not wander off to e2b.app or through a proxy
    for k in ("E2B_DOMAIN", "E2B_ACCESS_TOKEN", "E2B_DEBUG", "HTTP_PROXY", "HTTPS_PROXY",
              "http_proxy", "https_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _run_node(directory, script, env):
    cmd = [node_tool("node"), "--test", "--test-reporter=spec", script]
    try:
        r = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT)
        return r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        def s(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return s(e.stdout) + s(e.stderr), f"timeout after {NODE_TIMEOUT} s"


def _tail(text, limit=40000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


@pytest.mark.parametrize("directory,script", [(d, s) for _, d, s in TEST_FILES],
                         ids=[name for name, _, _ in TEST_FILES])
def test_e2b_sdk(sbxd, e2b_env, directory, script):
    out, code = _run_node(directory, script, e2b_env)
    if code != 0:
        pytest.fail(f"`node --test {script}` in {os.path.relpath(directory, HERE)} failed ({code}):\n"
                    f"{_tail(out)}\n--- sbxd log (tail) ---\n{_tail(sbxd.logs(), 8000)}", pytrace=False)


def test_e2b_snapshots_and_lifecycle(sbxd, e2b_env):
    """snapshot.test.mjs, as an organisation of its own that may hold the
    dozen sandboxes a fork of ten makes (the default plan holds ten)."""
    subprocess.run([SBXD, "orgs", "create", "snapshots", "--state-dir", sbxd.state_dir, "--max-sandboxes", "30"],
                   check=True, capture_output=True)
    env = dict(e2b_env, E2B_API_KEY=sbxd.new_key(org="snapshots", e2b=True))
    out, code = _run_node(E2B_DIR, "snapshot.test.mjs", env)
    if code != 0:
        pytest.fail(f"`node --test snapshot.test.mjs` failed ({code}):\n"
                    f"{_tail(out)}\n--- sbxd log (tail) ---\n{_tail(sbxd.logs(), 8000)}", pytrace=False)


def test_e2b_volumes(sbxd, e2b_env):
    """volume.test.mjs, with a second organisation for the isolation
    checks; then nothing of the volumes stays on the host: no image, and
    no loop device (so no mount) of one."""
    subprocess.run([SBXD, "orgs", "create", "volumes-other", "--state-dir", sbxd.state_dir],
                   check=True, capture_output=True)
    env = dict(e2b_env, E2B_OTHER_API_KEY=sbxd.new_key(org="volumes-other", e2b=True),
               E2B_VOLUME_API_URL=sbxd.url)
    out, code = _run_node(E2B_DIR, "volume.test.mjs", env)
    if code != 0:
        pytest.fail(f"`node --test volume.test.mjs` failed ({code}):\n"
                    f"{_tail(out)}\n--- sbxd log (tail) ---\n{_tail(sbxd.logs(), 8000)}", pytrace=False)
    captures = os.path.join(sbxd.state_dir, "captures")
    assert not [n for n in os.listdir(captures) if "vol_" in n]
    # a killed sandbox's mounts go with its namespaces, which may take a
    # moment after the kill's answer
    deadline = time.time() + 15
    while True:
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        left = [line for line in loops.splitlines() if captures in line and "vol_" in line]
        if not left or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not left, loops
