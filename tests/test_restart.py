"""sbxd can die at any moment (kill -9) and start again: every sandbox, its
files and its running processes are still there and controllable."""
import base64
import json
import os
import time

from conftest import Sbxd, host_traces


def test_kill9_and_restart_keeps_everything(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        a = d.create(metadata={"k": "v"}, timeout=600)
        b = d.create(timeout=600)
        d.write(a, "/home/user/keep.txt", "kept across restarts")
        r = d.run(a, "bash", background=True,
                  args=["-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; echo tick $i; sleep 0.1; done"])
        pid = r["pid"]
        assert d.req("POST", f"/sandboxes/{b}/pause").status_code == 204
        time.sleep(0.5)

        d.kill9()
        # the sandboxes keep running while no daemon is there
        time.sleep(0.5)
        with open(os.path.join(d.state_dir, "sandboxes", a, "sandbox.json")) as f:
            init = json.load(f)["init_pid"]
        n1 = int(open(f"/proc/{init}/root/tmp/n").read())
        time.sleep(0.5)
        n2 = int(open(f"/proc/{init}/root/tmp/n").read())
        assert n2 > n1, "the process stopped when the daemon died"

        d.start()
        ids = d.sandbox_ids()
        assert a in ids and b in ids
        sa, sb = d.get(a).json(), d.get(b).json()
        assert sa["status"] == "running" and sa["metadata"] == {"k": "v"}
        assert sb["status"] == "paused"
        assert d.read(a, "/home/user/keep.txt") == b"kept across restarts"
        procs = d.req("GET", f"/sandboxes/{a}/processes").json()
        assert [p["pid"] for p in procs] == [pid]
        # re-attach to the process and see it still producing output
        stream = d.req("GET", f"/sandboxes/{a}/processes/{pid}/stream", stream=True)
        lines = stream.iter_lines()
        assert json.loads(next(lines)) == {"type": "start", "pid": pid}
        ev = json.loads(next(lines))
        assert ev["type"] == "stdout" and base64.b64decode(ev["data"]).startswith(b"tick ")
        assert d.req("POST", f"/sandboxes/{a}/processes/{pid}/signal", json={"signal": "SIGTERM"}).status_code == 204
        end = [json.loads(x) for x in lines][-1]
        assert end == {"type": "end", "exitCode": 143, "signal": 15, "timedOut": False}
        # the paused one resumes, the running one still runs commands
        assert d.req("POST", f"/sandboxes/{b}/connect", json={}).json()["status"] == "running"
        assert d.sh(b, "echo back")["stdout"] == "back\n"
        assert d.sh(a, "cat keep.txt")["stdout"] == "kept across restarts"
        # and it can still destroy them completely
        for sid in (a, b):
            assert d.delete(sid).status_code == 204
        deadline = time.time() + 5
        while (host_traces(a) or host_traces(b)) and time.time() < deadline:
            time.sleep(0.1)
        assert host_traces(a) == [] and host_traces(b) == []
    finally:
        d.cleanup()
        d.stop()


def test_sandbox_that_expired_while_the_daemon_was_down_is_cleaned_up(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=1)
        d.kill9()
        time.sleep(2)
        d.start()
        deadline = time.time() + 5
        while d.get(sid).json()["status"] != "stopped" and time.time() < deadline:
            time.sleep(0.1)
        assert d.get(sid).json()["status"] == "stopped"
        assert not os.path.exists(os.path.join(d.state_dir, "sandboxes", sid))
    finally:
        d.cleanup()
        d.stop()


def test_spares_of_a_killed_daemon_leave_nothing(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    time.sleep(1.5)  # let it prepare its spare sandboxes
    spares = os.listdir(os.path.join(d.state_dir, "sandboxes"))
    assert spares, "the daemon keeps prepared sandboxes"
    d.kill9()
    d.start()
    d.stop()
    for sid in spares:
        assert host_traces(sid) == [] or time.sleep(1) or host_traces(sid) == []
        assert not os.path.exists(os.path.join(d.state_dir, "sandboxes", sid))


def test_sandbox_that_died_while_the_daemon_was_down_is_recorded(tmp_path):
    import signal
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=600)
        with open(os.path.join(d.state_dir, "sandboxes", sid, "sandbox.json")) as f:
            init = json.load(f)["init_pid"]
        d.kill9()
        os.kill(init, signal.SIGKILL)  # the sandbox dies with no daemon to see it
        time.sleep(0.5)
        d.start()
        s = d.get(sid).json()
        assert s["status"] == "stopped" and s["stopReason"] == "died"
        killed = d.req("GET", f"/events/sandboxes/{sid}", params={"types": "sandbox.lifecycle.killed"}).json()
        assert len(killed) == 1 and killed[0]["eventData"]["reason"] == "died"
        assert host_traces(sid) == [] or time.sleep(1) or host_traces(sid) == []
    finally:
        d.cleanup()
        d.stop()
