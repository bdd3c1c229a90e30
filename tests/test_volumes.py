"""E2B's volumes across a daemon restart: sandboxes outlive the daemon,
and a volume that one of them mounts must not be mounted again through a
second loop device (two ext4 superblocks over one image would corrupt
it). The restarted daemon finds the device the running sandbox holds and
mounts that one: both sandboxes see each other's writes at once. The SDK
side of volumes is tests/e2b/volume.test.mjs."""
import subprocess

from conftest import Sbxd


def exec_out(sbxd, sid, script):
    r = sbxd.req("POST", f"/sandboxes/{sid}/processes", json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 200, r.text
    return r.json()["stdout"]


def volume_loops(state_dir):
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in loops.splitlines() if state_dir in line and "vol_" in line]


def test_volume_shared_across_a_daemon_restart(tmp_path):
    state = str(tmp_path / "state")
    first = Sbxd(state).start()
    second = None
    try:
        vol = first.req("POST", "/volumes", json={"name": "shared"})
        assert vol.status_code == 201, vol.text
        mounts = [{"name": "shared", "path": "/data"}]
        r = first.req("POST", "/sandboxes", json={"templateID": "base", "volumeMounts": mounts})
        assert r.status_code == 201, r.text
        a = r.json()["sandboxID"]
        exec_out(first, a, "echo one > /data/one")
        first.stop()  # the sandbox keeps running, its volume mounted

        second = Sbxd(state, port=first.port).start()
        second.key = first.key
        second.http.headers["Authorization"] = "Bearer " + first.key
        r = second.req("POST", "/sandboxes", json={"templateID": "base", "volumeMounts": mounts})
        assert r.status_code == 201, r.text
        b = r.json()["sandboxID"]
        assert exec_out(second, b, "cat /data/one; echo two > /data/two") == "one\n"
        assert exec_out(second, a, "cat /data/two") == "two\n"
        assert len(volume_loops(state)) == 1, volume_loops(state)
        # the content API mounts it through the same device too
        token = second.req("GET", f"/volumes/{vol.json()['volumeID']}").json()["token"]
        got = second.http.get(f"{second.url}/volumecontent/{vol.json()['volumeID']}/file",
                              params={"path": "/two"}, headers={"Authorization": "Bearer " + token}, timeout=30)
        assert got.status_code == 200 and got.text == "two\n", got.text
        assert len(volume_loops(state)) == 1, volume_loops(state)
    finally:
        for s in (second, first):
            if s and s.proc.poll() is None:
                s.cleanup()
                s.stop()
        if second is None:
            # the first daemon stopped under a failure: start one to kill what runs
            s = Sbxd(state, port=first.port).start()
            s.http.headers["Authorization"] = "Bearer " + first.key
            s.cleanup()
            s.stop()
