"""Sandbox life cycle against a real daemon: create, exec, files, pause and
resume, lifetime expiry, destroy without traces, and limits on input."""
import json
import re
import os
import time

import requests

from conftest import host_traces, wait_until


def test_create_returns_the_sandbox_object(sbxd):
    sid = sbxd.create(metadata={"project": "x"}, envVars={"MY_VAR": "value"})
    try:
        s = sbxd.get(sid).json()
        assert s["sandboxID"] == sid and re.fullmatch(r"sbx[0-9a-z]{20}", sid)
        assert s["templateID"] == "base"
        assert s["status"] == "running"
        assert s["metadata"] == {"project": "x"}
        assert s["cpuCount"] == 2 and s["memoryMB"] == 2048 and s["diskSizeMB"] == 10240
        assert s["startedAt"] < s["endAt"]
        assert sbxd.sh(sid, "echo $MY_VAR")["stdout"] == "value\n"
    finally:
        assert sbxd.delete(sid).status_code == 204


def test_exec_reports_stdout_stderr_and_exit_code(sbxd, sandbox):
    r = sbxd.sh(sandbox, "echo out; echo err >&2; exit 7")
    assert (r["stdout"], r["stderr"], r["exitCode"], r["timedOut"]) == ("out\n", "err\n", 7, False)
    r = sbxd.run(sandbox, "python3", "-c", "print(2+2)")
    assert r["stdout"] == "4\n" and r["exitCode"] == 0


def test_exec_env_cwd_and_user(sbxd, sandbox):
    r = sbxd.sh(sandbox, "id -un; pwd; echo $HOME $FOO", envs={"FOO": "bar"})
    assert r["stdout"] == "user\n/home/user\n/home/user bar\n"
    r = sbxd.sh(sandbox, "id -u; pwd", user="root", cwd="/tmp")
    assert r["stdout"] == "0\n/tmp\n"
    r = sbxd.run(sandbox, "pwd", cwd="/does/not/exist")
    assert r["exitCode"] == 126 and "/does/not/exist" in r["stderr"]


def test_exec_of_a_missing_command_is_127(sbxd, sandbox):
    r = sbxd.run(sandbox, "no-such-command-xyz")
    assert r["exitCode"] == 127 and "No such file" in r["stderr"]


def test_virtualenv_is_active_and_workspace_writable(sbxd, sandbox):
    r = sbxd.sh(sandbox, "which python3 pip; touch /workspace/x && echo ok")
    assert r["stdout"] == "/opt/venv/bin/python3\n/opt/venv/bin/pip\nok\n", r


def test_exec_timeout_is_reported_distinctly(sbxd, sandbox):
    t0 = time.time()
    r = sbxd.sh(sandbox, "echo started; sleep 30", timeout=1)
    assert time.time() - t0 < 10
    assert r["timedOut"] is True and r["stdout"] == "started\n"
    r = sbxd.sh(sandbox, "exit 0", timeout=5)
    assert r["timedOut"] is False


def test_root_can_modify_template_files(sbxd, sandbox):
    r = sbxd.sh(sandbox, "echo extra >> /etc/passwd && tail -1 /etc/passwd && stat -c %U /etc/passwd", user="root")
    assert r["stdout"] == "extra\nroot\n", r


def test_file_round_trip_and_listing(sbxd, sandbox):
    data = bytes(range(256)) * 100
    e = sbxd.write(sandbox, "/home/user/dir/sub/data.bin", data)
    assert e["size"] == len(data) and e["owner"] == "user" and e["type"] == "file"
    assert sbxd.read(sandbox, "/home/user/dir/sub/data.bin") == data
    assert sbxd.sh(sandbox, "sha256sum < dir/sub/data.bin")["stdout"].split()[0] == \
        __import__("hashlib").sha256(data).hexdigest()
    listing = sbxd.req("GET", f"/sandboxes/{sandbox}/filesystem/list",
                       params={"path": "/home/user/dir"}).json()
    assert [(x["name"], x["type"], x["path"]) for x in listing] == [("sub", "dir", "/home/user/dir/sub")]
    deep = sbxd.req("GET", f"/sandboxes/{sandbox}/filesystem/list",
                    params={"path": "/home/user/dir", "depth": 2}).json()
    assert {x["path"] for x in deep} == {"/home/user/dir/sub", "/home/user/dir/sub/data.bin"}
    # atomic replace keeps the mode of the file it replaces
    sbxd.sh(sandbox, "chmod 600 dir/sub/data.bin")
    e = sbxd.write(sandbox, "/home/user/dir/sub/data.bin", b"new")
    assert e["mode"] == "0600" and sbxd.read(sandbox, "/home/user/dir/sub/data.bin") == b"new"
    # move, stat, mkdir and delete
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/filesystem/move",
                 json={"from": "/home/user/dir/sub/data.bin", "to": "/home/user/moved.bin"})
    assert r.status_code == 200 and r.json()["path"] == "/home/user/moved.bin"
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/filesystem/mkdir", json={"path": "/home/user/a/b/c"})
    assert r.status_code == 200 and r.json()["type"] == "dir"
    r = sbxd.req("DELETE", f"/sandboxes/{sandbox}/filesystem", params={"path": "/home/user/dir"})
    assert r.status_code == 204
    assert sbxd.read(sandbox, "/home/user/dir/sub/data.bin", expect=404)["code"] == 404
    st = sbxd.req("GET", f"/sandboxes/{sandbox}/filesystem/stat", params={"path": "/home/user/moved.bin"}).json()
    assert st["size"] == 3


def test_file_errors(sbxd, sandbox):
    assert sbxd.read(sandbox, "/etc/shadow", expect=403)["code"] == 403  # as user
    assert sbxd.read(sandbox, "/etc/shadow", user="root")  # root may
    sbxd.sh(sandbox, "head -c 1048577 /dev/zero > big")
    r = sbxd.read(sandbox, "/home/user/big", expect=400)
    assert "1 MB" in r["message"]
    sbxd.sh(sandbox, "head -c 1048576 /dev/zero > fits")
    assert len(sbxd.read(sandbox, "/home/user/fits")) == 1048576
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/filesystem", json={"path": "/home/user/x", "content": "not base64!"})
    assert r.status_code == 400 and r.json()["message"] == "content must be base64"
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/filesystem", json={"path": "/etc/x", "content": ""})
    assert r.status_code == 403
    r = sbxd.req("GET", f"/sandboxes/{sandbox}/filesystem")
    assert r.status_code == 400 and r.json() == {"code": 400, "message": "path is required"}


def test_pause_freezes_and_resume_continues(sbxd, sandbox):
    # the counter is renamed into place: a read between a plain write's
    # truncation and its write (or a pause there) would find it empty
    r = sbxd.run(sandbox, "bash", "-c",
                 "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; "
                 "sleep 0.05; done", background=True)
    assert r["pid"] > 0
    time.sleep(0.5)
    assert sbxd.req("POST", f"/sandboxes/{sandbox}/pause").status_code == 204
    assert sbxd.get(sandbox).json()["status"] == "paused"
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/pause")
    assert r.status_code == 409
    # while paused nothing runs: the counter on disk does not move
    root = f"/proc/{init_pid(sbxd, sandbox)}/root/tmp/counter"
    before = open(root).read()
    time.sleep(1.0)
    assert open(root).read() == before
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes", json={"cmd": "true"})
    assert r.status_code == 409
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/connect", json={"timeout": 120})
    assert r.status_code == 200 and r.json()["status"] == "running"
    time.sleep(0.5)
    after = int(sbxd.read(sandbox, "/tmp/counter"))
    assert after > int(before)
    # it continued from where it was, not from zero
    assert after < int(before) + 40


def init_pid(sbxd, sid):
    with open(os.path.join(sbxd.state_dir, "sandboxes", sid, "sandbox.json")) as f:
        return json.load(f)["init_pid"]


def test_lifetime_expiry_stops_and_cleans_up(sbxd):
    sid = sbxd.create(timeout=2)
    pid = init_pid(sbxd, sid)
    deadline = time.time() + 10
    while time.time() < deadline and sbxd.get(sid).json()["status"] != "stopped":
        time.sleep(0.2)
    s = sbxd.get(sid).json()
    assert s["status"] == "stopped" and s["stopReason"] == "timeout"
    # torn down after it was recorded stopped
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert wait_until(lambda: not os.path.exists(os.path.join(sbxd.state_dir, "sandboxes", sid)))
    assert wait_no_traces(sid) == []


def test_sandboxes_whose_init_is_killed_are_recorded_died_and_cleaned_up(sbxd):
    """The reaper learns of an init's death from the kernel (its pidfd):
    three killed at once from the host all end as died; a fourth, left
    alone, still runs."""
    sids = [sbxd.create() for _ in range(4)]
    pids = [init_pid(sbxd, sid) for sid in sids]
    for pid in pids[:3]:
        os.kill(pid, 9)
    for sid in sids[:3]:
        assert wait_until(lambda: sbxd.get(sid).json()["status"] == "stopped", 10), sbxd.get(sid).json()
        assert sbxd.get(sid).json()["stopReason"] == "died"
        assert wait_until(lambda: not os.path.exists(os.path.join(sbxd.state_dir, "sandboxes", sid)))
        assert wait_no_traces(sid) == []
    assert sbxd.sh(sids[3], "echo alive")["stdout"] == "alive\n"
    assert sbxd.delete(sids[3]).status_code == 204


def wait_no_traces(sid, seconds=5):
    deadline = time.time() + seconds
    while True:
        t = host_traces(sid)
        if not t or time.time() > deadline:
            return t
        time.sleep(0.1)


def test_set_timeout_is_measured_from_now(sbxd, sandbox):
    assert sbxd.req("POST", f"/sandboxes/{sandbox}/timeout", json={"timeout": 1000}).status_code == 204
    s = sbxd.get(sandbox).json()
    end = time.mktime(time.strptime(s["endAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(end - (time.time() + 1000)) < 5
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/timeout", json={"timeout": 4000})
    assert r.status_code == 400


def test_destroy_leaves_nothing_behind(sbxd):
    sid = sbxd.create()
    pid = init_pid(sbxd, sid)
    sbxd.sh(sid, "sleep 1000 & (setsid sleep 1001 &); dd if=/dev/zero of=f bs=1M count=10 2>/dev/null", timeout=5)
    assert host_traces(sid) != []  # the check sees a live sandbox
    assert sbxd.delete(sid).status_code == 204
    # gone for the API at once, torn down after the answer
    assert sbxd.get(sid).json()["status"] == "stopped"
    assert sbxd.delete(sid).status_code == 404
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert wait_until(lambda: not os.path.exists(os.path.join(sbxd.state_dir, "sandboxes", sid)))
    assert wait_no_traces(sid) == []
    r = sbxd.req("POST", f"/sandboxes/{sid}/processes", json={"cmd": "true"})
    assert r.status_code == 409


def test_list_filters_by_status_newest_first(sbxd):
    a = sbxd.create()
    b = sbxd.create()
    try:
        sbxd.req("POST", f"/sandboxes/{a}/pause")
        running = [s["sandboxID"] for s in sbxd.req("GET", "/sandboxes?status=running").json()]
        paused = [s["sandboxID"] for s in sbxd.req("GET", "/sandboxes?status=paused").json()]
        assert b in running and a not in running and a in paused
        all_ids = sbxd.sandbox_ids()
        assert all_ids.index(b) < all_ids.index(a)
        assert sbxd.req("GET", "/sandboxes?status=bogus").status_code == 400
    finally:
        sbxd.delete(a)
        sbxd.delete(b)


def test_bad_input_gets_clear_errors_and_no_half_made_sandbox(sbxd):
    before = set(os.listdir(os.path.join(sbxd.state_dir, "sandboxes")))
    cases = [
        ({"templateID": "nope"}, 400, "unknown template: nope"),
        ({"timeout": 10}, 400, "templateID is required"),
        ({"templateID": "base", "timeout": 3601}, 400, "timeout must be between 1 and 3600"),
        ({"templateID": "base", "timeout": "10"}, 400, "timeout must be an integer"),
        ({"templateID": "base", "envVars": {"A": 1}}, 400, "envVars: invalid variable A"),
        ({"templateID": "base", "metadata": []}, 400, "metadata must be an object"),
        ({"templateID": "../etc"}, 400, None),
    ]
    for body, status, msg in cases:
        r = sbxd.req("POST", "/sandboxes", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == status
        if msg:
            assert r.json()["message"] == msg
    r = sbxd.req("POST", "/sandboxes", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("malformed JSON body")
    r = sbxd.req("POST", "/sandboxes", data="x" * (65 << 20))
    assert r.status_code == 413
    assert sbxd.req("GET", "/sandboxes/not.an.id").json() == {"code": 400, "message": "invalid sandbox id"}
    assert sbxd.req("GET", "/sandboxes/not-an-id").json() == {"code": 404, "message": "sandbox not found"}
    assert sbxd.req("GET", "/sandboxes/sbx_doesnotexist").json() == {"code": 404, "message": "sandbox not found"}
    # nothing half-made: every directory left belongs to a known sandbox or spare
    time.sleep(0.5)
    after = set(os.listdir(os.path.join(sbxd.state_dir, "sandboxes")))
    known = set(sbxd.sandbox_ids())
    for d in after - before:
        rec = json.load(open(os.path.join(sbxd.state_dir, "sandboxes", d, "sandbox.json")))
        assert d in known or rec["state"] == "creating"


def test_exec_input_validation(sbxd, sandbox):
    for body, msg in [({}, "cmd is required"), ({"cmd": 1}, "cmd must be a string"),
                      ({"cmd": "ls", "args": "x"}, "args must be an array of strings"),
                      ({"cmd": "ls", "args": [1]}, "args must be an array of strings"),
                      ({"cmd": "ls", "timeout": -1}, "timeout must be between 0 and 3600")]:
        r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes", json=body)
        assert r.status_code == 400 and r.json()["message"] == msg, r.text


def test_streaming_exec_sees_output_before_the_end(sbxd, sandbox):
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/stream", stream=True,
                 json={"cmd": "bash", "args": ["-c", "echo one; sleep 1.5; echo two"]})
    assert r.status_code == 200
    t0 = time.time()
    events = []
    for line in r.iter_lines():
        ev = json.loads(line)
        events.append((ev["type"], round(time.time() - t0, 1)))
        if ev["type"] == "end":
            assert ev["exitCode"] == 0
    kinds = [k for k, _ in events]
    assert kinds == ["start", "stdout", "stdout", "end"]
    # the first line arrived well before the process ended
    assert events[1][1] < 1.0 and events[2][1] >= 1.0


def test_background_process_attach_signal_and_list(sbxd, sandbox):
    r = sbxd.run(sandbox, "bash", background=True,
                 args=["-c", "for i in $(seq 1 100); do echo tick $i; sleep 0.2; done"])
    pid = r["pid"]
    procs = sbxd.req("GET", f"/sandboxes/{sandbox}/processes").json()
    assert any(p["pid"] == pid and p["cmd"] == "bash" for p in procs)
    stream = sbxd.req("GET", f"/sandboxes/{sandbox}/processes/{pid}/stream", stream=True)
    lines = stream.iter_lines()
    first = json.loads(next(lines))
    assert first == {"type": "start", "pid": pid}
    assert json.loads(next(lines))["type"] == "stdout"
    assert sbxd.req("POST", f"/sandboxes/{sandbox}/processes/{pid}/signal",
                    json={"signal": "SIGKILL"}).status_code == 204
    end = [json.loads(x) for x in lines][-1]
    assert end["type"] == "end" and end["signal"] == 9
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/{pid}/signal", json={"signal": "SIGKILL"})
    assert r.status_code == 404


def test_stdin_of_a_background_process(sbxd, sandbox):
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/stream", stream=True,
                 json={"cmd": "python3", "args": ["-c", "import sys; print(sys.stdin.read().upper())"],
                       "stdin": True})
    lines = r.iter_lines()
    pid = json.loads(next(lines))["pid"]
    import base64
    r2 = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/{pid}/stdin",
                  json={"data": base64.b64encode(b"hello").decode(), "close": True})
    assert r2.status_code == 204, r2.text
    out = b""
    for line in lines:
        ev = json.loads(line)
        if ev["type"] == "stdout":
            out += base64.b64decode(ev["data"])
    assert out == b"HELLO\n"


def test_metrics_are_real(sbxd, sandbox):
    t0 = time.time()
    sbxd.sh(sandbox, "head -c 50000000 /dev/urandom > blob; timeout 1 sh -c 'while :; do :; done'; true")
    after = sbxd.metrics_after(sandbox, time.time())
    m = after[-1]
    assert m["memTotal"] == 2048 << 20
    assert 0 < m["memUsed"] < m["memTotal"]
    assert m["diskUsed"] >= 50000000 and m["diskTotal"] > 9 << 30
    assert m["cpuCount"] == 2
    # the busy second is in the samples taken since (each averages the CPU
    # since the one before)
    busy = [x["cpuUsedPct"] for x in sbxd.metrics_after(sandbox, t0)]
    assert max(busy) > 0, busy


def test_two_instances_do_not_touch_each_other(sbxd, tmp_path):
    from conftest import Sbxd
    other = Sbxd(str(tmp_path / "state2")).start()
    try:
        a = sbxd.create()
        b = other.create()
        assert b not in sbxd.sandbox_ids() and a not in other.sandbox_ids()
        assert other.get(a).status_code == 404
        other.stop()
        assert sbxd.sh(a, "echo alive")["stdout"] == "alive\n"
        other.start()
        assert b in other.sandbox_ids() and other.sh(b, "echo alive")["stdout"] == "alive\n"
        assert a in sbxd.sandbox_ids()
        other.delete(b)
        sbxd.delete(a)
    finally:
        other.cleanup()
        other.stop()


def test_pty_process(sbxd, sandbox):
    import base64
    r = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/stream", stream=True,
                 json={"cmd": "bash", "args": ["-c", "tty; stty size; read line; echo got:$line"],
                       "pty": {"rows": 30, "cols": 100}})
    lines = r.iter_lines()
    pid = json.loads(next(lines))["pid"]
    out = b""
    resized = False
    for line in lines:
        ev = json.loads(line)
        if ev["type"] == "pty":
            out += base64.b64decode(ev["data"])
            if b"30 100" in out and not resized:
                resized = True
                rr = sbxd.req("POST", f"/sandboxes/{sandbox}/processes/{pid}/resize",
                              json={"rows": 40, "cols": 120})
                assert rr.status_code == 204, rr.text
                sbxd.req("POST", f"/sandboxes/{sandbox}/processes/{pid}/stdin",
                         json={"data": base64.b64encode(b"hello\n").decode()})
        if ev["type"] == "end":
            assert ev["exitCode"] == 0
            break
    assert b"/dev/pts/0" in out and b"30 100" in out and b"got:hello" in out


def test_network_loopback_and_link(sbxd, sandbox):
    code = ("import socket, threading\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 8080)); s.listen()\n"
            "threading.Thread(target=lambda: s.accept()[0].sendall(b'pong'), daemon=True).start()\n"
            "c = socket.create_connection(('127.0.0.1', 8080)); print(c.recv(4).decode())\n"
            "import os; print(sorted(os.listdir('/sys/class/net')))\n"
            "print([l.split()[:3] for l in open('/proc/net/route').read().splitlines()[1:]])\n"
            "print(open('/proc/sys/net/ipv6/conf/eth0/disable_ipv6').read().strip())\n"
            "print(open('/etc/resolv.conf').read().split()[:2])\n")
    r = sbxd.py(sandbox, code)
    net = sbxd.get(sandbox).json()["network"]
    gw = "%08X" % int.from_bytes(bytes(int(x) for x in net["gateway"].split(".")), "little")
    lines = r["stdout"].splitlines()
    assert lines[:2] == ["pong", "['eth0', 'lo']"], r
    # a default route through the host side of the link, and the /30
    assert ["eth0", "00000000", gw] in eval(lines[2]), r
    assert lines[3] == "1", r  # IPv6 off
    assert eval(lines[4]) == ["nameserver", net["gateway"]], r
