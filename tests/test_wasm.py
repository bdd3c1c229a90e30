"""The pyodide template and its runner (docs/wasm.md): Python compiled to
WebAssembly, run by Node.js inside a sandbox made from `pyodide`.

Everything goes through the daemon's current API: the program is written
into the sandbox, then `node /opt/sbxd/wasm-run.mjs` runs it with the
filesystem policy in SBXD_WASM_* variables.  The template must have been
built (scripts/test does it); without it these tests fail, they do not skip.
"""
import os
import time

import pytest


TEMPLATES = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")
RUNNER = "/opt/sbxd/wasm-run.mjs"
PROG = "/tmp/prog.py"
WEB1 = "198.51.100.10"           # an HTTP peer on the test "internet" (netpeers.py)
POLICY = {"SBXD_WASM_RO": "/workspace/data",
          "SBXD_WASM_RW": "/workspace/output",
          # blocking Pyodide's own /proc and /tmp is allowed (they are not the sandbox's)
          "SBXD_WASM_BLOCKED": "/workspace/data/secret:/workspace/output/hidden:/proc:/tmp"}


# Both ways of running: restoring Pyodide in the runner's own process, and
# handing the program to the warm server (the default).
MODES = {"cold": {"SBXD_WASM_WARM": "0"}, "warm": {}}


def wasm(d, box, code, envs=None, **fields):
    """Run CODE in Pyodide in BOX (sandbox id, mode); the processes API's
    result."""
    sid, mode = box
    d.write(sid, PROG, code)
    return d.run(sid, "node", RUNNER, PROG, envs={**MODES[mode], **(envs or {})}, **fields)


def procs(d, sid):
    """pid -> (command line, CPU seconds so far) of the sandbox's processes."""
    r = d.run(sid, "sh", "-c", "for p in /proc/[0-9]*; do "
                               "echo \"${p#/proc/} $(cut -d' ' -f14,15 $p/stat 2>/dev/null) "
                               "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; done")
    out = {}
    for line in r["stdout"].splitlines():
        pid, ut, st, cmd = (line.split(" ", 3) + [""])[:4]
        if ut.isdigit():
            out[int(pid)] = (cmd, (int(ut) + int(st)) / os.sysconf("SC_CLK_TCK"))
    return out


@pytest.fixture(scope="module", params=list(MODES))
def box(sbxd, request):
    """A pyodide sandbox (the template's default: no internet) with a
    data directory holding a file and a secret below it, and the mode its
    programs run in.  A warm server per policy stays for a minute, hence
    the memory."""
    sid = sbxd.create("pyodide", memoryMB=1024)
    # the template has no bash; its shell is dash
    r = sbxd.run(sid, "sh", "-c", "mkdir -p /workspace/data/secret && echo hello > /workspace/data/in.txt "
                                  "&& echo key > /workspace/data/secret/k && echo top > /workspace/top.txt",
                 user="root")
    assert r["exitCode"] == 0, r
    yield sid, request.param
    sbxd.delete(sid)


def test_template_is_built():
    assert os.path.isfile(os.path.join(TEMPLATES, "pyodide", "template.json")), \
        "build it with: build/sbxd template build pyodide"


def test_no_cpython_in_the_template(sbxd, box):
    r = sbxd.run(box[0], "sh", "-c", "command -v python3 || command -v python || echo none")
    assert r["stdout"] == "none\n", r
    r = sbxd.run(box[0], "node", "--version")
    assert r["exitCode"] == 0 and r["stdout"].startswith("v18."), r


def test_print(sbxd, box):
    r = wasm(sbxd, box, "import sys\nprint(1 + 1)\nprint('to err', file=sys.stderr)\nprint(sys.platform)\n")
    assert r["exitCode"] == 0, r
    assert r["stdout"] == "2\nemscripten\n"
    assert r["stderr"] == "to err\n"


def test_stdin_program_and_environment(sbxd, box):
    sbxd.write(box[0], PROG, "import os\nprint(os.environ.get('GREETING'), os.getcwd())\n")
    r = sbxd.run(box[0], "sh", "-c", f"node {RUNNER} < {PROG}", envs={"GREETING": "hi", **MODES[box[1]]})
    assert r == {**r, "exitCode": 0, "stdout": "hi /workspace\n"}, r


def test_uncaught_exception(sbxd, box):
    r = wasm(sbxd, box, "print('before')\nx = {}\nx['missing']\n")
    assert r["exitCode"] == 1, r
    assert r["stdout"] == "before\n"
    assert r["stderr"].startswith("Traceback (most recent call last):\n")
    assert f'File "{PROG}", line 3, in <module>' in r["stderr"]
    assert "    x['missing']\n" in r["stderr"]       # the program's own line
    assert r["stderr"].endswith("KeyError: 'missing'\n")
    assert "_sbxd_run" not in r["stderr"]


def test_syntax_error(sbxd, box):
    r = wasm(sbxd, box, "def f(:\n")
    assert r["exitCode"] == 1 and "SyntaxError" in r["stderr"], r


def test_sys_exit(sbxd, box):
    r = wasm(sbxd, box, "import sys\nprint('out')\nsys.exit(3)\n")
    assert (r["exitCode"], r["stdout"]) == (3, "out\n"), r
    assert wasm(sbxd, box, "import sys; sys.exit()")["exitCode"] == 0
    r = wasm(sbxd, box, "import sys; sys.exit('bye')")
    assert (r["exitCode"], r["stderr"]) == (1, "bye\n"), r
    assert wasm(sbxd, box, "raise SystemExit(256 + 7)")["exitCode"] == 7


def test_top_level_await(sbxd, box):
    r = wasm(sbxd, box, "import asyncio\nawait asyncio.sleep(0.01)\nprint('awaited')\n")
    assert (r["exitCode"], r["stdout"]) == (0, "awaited\n"), r


def test_read_write_mount(sbxd, box):
    code = ("import errno, os\n"
            "open('/workspace/output/result.txt', 'w').write('from wasm')\n"
            "os.mkdir('/workspace/output/sub')\n"
            "print(sorted(os.listdir('/workspace/output')))\n"
            # nothing can be made at a blocked path below a mount
            "for make in (lambda: os.mkdir('/workspace/output/hidden'),\n"
            "             lambda: os.rename('/workspace/output/sub', '/workspace/output/hidden'),\n"
            "             lambda: os.symlink('/x', '/workspace/output/hidden')):\n"
            "    try:\n"
            "        make()\n"
            "        print('made')\n"
            "    except OSError as e:\n"
            "        print(errno.errorcode[e.errno])\n")
    r = wasm(sbxd, box, code, envs=POLICY)
    assert (r["exitCode"], r["stdout"]) == (0, "['result.txt', 'sub']\n" + "EACCES\n" * 3), r
    # written through to the sandbox's own filesystem, with the usual modes
    assert sbxd.read(box[0], "/workspace/output/result.txt") == b"from wasm"
    r = sbxd.run(box[0], "sh", "-c", "cd /workspace/output && stat -c '%n %a %U' result.txt sub && ls")
    assert r["stdout"] == "result.txt 644 user\nsub 755 user\nresult.txt\nsub\n", r


def test_read_only_mount(sbxd, box):
    code = ("import errno, os\n"
            "print(open('/workspace/data/in.txt').read(), end='')\n"
            "tries = [lambda: open('/workspace/data/in.txt', 'w'),\n"
            "         lambda: open('/workspace/data/in.txt', 'a'),\n"
            "         lambda: open('/workspace/data/new.txt', 'w'),\n"
            "         lambda: os.remove('/workspace/data/in.txt'),\n"
            "         lambda: os.rename('/workspace/data/in.txt', '/workspace/data/x'),\n"
            "         lambda: os.mkdir('/workspace/data/d'),\n"
            "         lambda: os.chmod('/workspace/data/in.txt', 0o777)]\n"
            "for t in tries:\n"
            "    try:\n"
            "        t()\n"
            "        print('changed')\n"
            "    except OSError as e:\n"
            "        print(errno.errorcode[e.errno])\n")
    r = wasm(sbxd, box, code, envs=POLICY)
    assert r["exitCode"] == 0, r
    assert r["stdout"] == "hello\n" + "EROFS\n" * 7
    assert sbxd.read(box[0], "/workspace/data/in.txt") == b"hello\n"
    r = sbxd.run(box[0], "sh", "-c", "ls /workspace/data")
    assert r["stdout"] == "in.txt\nsecret\n", r


def test_only_mounted_paths_are_visible(sbxd, box):
    code = ("import os\n"
            "for p in ['/workspace/data/secret', '/workspace/data/secret/k', '/workspace/top.txt',\n"
            "          '/etc/passwd', '/opt/sbxd', '/home/user', '/proc/1/environ']:\n"
            "    print(p, os.path.exists(p))\n"
            "print(os.listdir('/workspace/data'))\n")
    r = wasm(sbxd, box, code, envs=POLICY)
    assert r["exitCode"] == 0, r
    assert r["stdout"] == ("/workspace/data/secret False\n/workspace/data/secret/k False\n"
                           "/workspace/top.txt False\n/etc/passwd False\n/opt/sbxd False\n"
                           "/home/user False\n/proc/1/environ False\n['in.txt']\n")
    # without a policy nothing of the sandbox is there at all
    r = wasm(sbxd, box, "import os; print(os.path.exists('/workspace/data'), os.listdir('/workspace'))")
    assert r["stdout"] == "False []\n", r


def test_bad_policy(sbxd, box):
    r = wasm(sbxd, box, "print(1)", envs={"SBXD_WASM_RW": "relative/path"})
    assert r["exitCode"] == 125 and "not an absolute path" in r["stderr"], r
    r = wasm(sbxd, box, "print(1)", envs={"SBXD_WASM_RW": "/lib"})
    assert r["exitCode"] == 125 and "reserved" in r["stderr"], r
    r = wasm(sbxd, box, "print(1)", envs={"SBXD_WASM_RO": "/x", "SBXD_WASM_RW": "/x"})
    assert r["exitCode"] == 125, r


def test_timeout_kills_a_busy_loop(sbxd, box):
    t0 = time.time()
    r = wasm(sbxd, box, "while True:\n    pass\n", timeout=3)
    assert r["timedOut"] is True and r["exitCode"] == 137, r
    assert time.time() - t0 < 15
    # the next program runs, and nothing spins: the cold runner is gone,
    # a warm server has replaced its busy worker
    assert wasm(sbxd, box, "print('again')")["stdout"] == "again\n"
    before = procs(sbxd, box[0])
    time.sleep(2)
    after = procs(sbxd, box[0])
    runners = {p: v for p, v in after.items() if "wasm-run" in v[0]}
    if box[1] == "cold":
        assert runners == {}, runners
    else:
        assert len(runners) >= 1 and all("--serve" in c for c, _ in runners.values()), runners
        for pid, (_, cpu) in runners.items():
            assert cpu - before.get(pid, ("", 0))[1] < 0.5, (pid, before, after)


def test_each_run_has_a_fresh_main(sbxd, box):
    wasm(sbxd, box, "x = 42\nimport json\n")
    r = wasm(sbxd, box, "print('x' in globals(), __name__)")
    assert r["stdout"] == "False __main__\n", r


FETCH = (f"import js, urllib.request\n"
         f"try:\n"
         f"    urllib.request.urlopen('http://{WEB1}/', timeout=3)\n"
         f"    print('urllib reached')\n"
         f"except OSError:\n"
         f"    print('urllib failed')\n"
         # Pyodide's FFI reaches Node's own fetch: only the sandbox's
         # network rules stop it (docs/wasm.md)
         f"fetch = js.constructor.constructor('return fetch')()\n"
         f"try:\n"
         f"    r = await fetch('http://{WEB1}/')\n"
         f"    print('fetch', await r.text(), end='')\n"
         f"except Exception:\n"
         f"    print('fetch failed')\n")


def test_no_network(sbxd, box, peers):
    r = wasm(sbxd, box, FETCH, timeout=30)
    assert (r["exitCode"], r["stdout"]) == (0, "urllib failed\nfetch failed\n"), r


def test_network_when_allowed(sbxd, peers):
    """The control for test_no_network: with internet access the same
    program does reach the peer (through Node, not through urllib, which
    has no sockets in WebAssembly)."""
    sid = sbxd.create("pyodide", allow_internet_access=True)
    try:
        r = wasm(sbxd, (sid, "cold"), FETCH, timeout=30)
        assert r["exitCode"] == 0, r
        assert r["stdout"].startswith("urllib failed\nfetch host="), r
    finally:
        sbxd.delete(sid)


def test_warm_server_gives_back_what_a_big_program_took(sbxd):
    """WebAssembly memory never shrinks: after a program that grew it past
    256 MiB, the warm server replaces its interpreter."""
    sid = sbxd.create("pyodide", memoryMB=1024)
    try:
        def mem_mib():
            time.sleep(1)
            return sbxd.metrics_after(sid, time.time())[-1]["memUsed"] / 2**20
        r = wasm(sbxd, (sid, "warm"), "x = bytearray(400 * 2**20); print(len(x))")
        assert (r["exitCode"], r["stdout"]) == (0, f"{400 * 2**20}\n"), r
        assert wasm(sbxd, (sid, "warm"), "print('small')")["stdout"] == "small\n"
        assert 60 < mem_mib() < 350       # a fresh interpreter is about 150 MiB
    finally:
        sbxd.delete(sid)
