"""The files API moves regular files (and lists directories) only: a named
pipe, a socket or a device is refused at once with 400 in every dialect,
for reads and writes, and leaves no worker behind in the sandbox.  Asking
about one (stat, a listing, remove) still works."""
import base64
import time

import pytest
import requests

# long enough for a loaded machine, far shorter than a blocked request
QUICK = 15

SETUP = r'''
set -e
cd /home/user
mkfifo fifo
ln -s fifo fifo-link
python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('/home/user/sock')"
stat -c '%F' fifo sock
'''

# sbx-init processes of the sandbox: PID 1, the shepherd of this command,
# and any file worker still running
WORKERS = r'''grep -l '^sbx-init$' /proc/[0-9]*/comm 2>/dev/null | wc -l'''


@pytest.fixture
def special(sbxd):
    r = sbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 300})
    assert r.status_code == 201, r.text
    sid, token = r.json()["sandboxID"], r.json()["envdAccessToken"]
    out = sbxd.sh(sid, SETUP, user="user")
    assert out["exitCode"] == 0 and out["stdout"].split("\n")[:2] == ["fifo", "socket"], out
    yield sid, token
    sbxd.delete(sid)


def envd(sbxd, sid, token):
    return {"E2b-Sandbox-Id": sid, "X-Access-Token": token}


def refused(r, what):
    assert r.status_code == 400, (r.status_code, r.text)
    msg = r.json()["message"]
    assert what in msg and "not a regular file" in msg, msg


SPECIAL = [("/home/user/fifo", "a named pipe (FIFO)"),
           ("/home/user/fifo-link", "a named pipe (FIFO)"),
           ("/home/user/sock", "a socket"),
           ("/dev/null", "a character device"),
           ("/dev/zero", "a character device"),
           ("/dev/urandom", "a character device")]


def test_reads_of_special_files_are_refused_at_once(sbxd, special):
    sid, token = special
    baseline = int(sbxd.sh(sid, WORKERS)["stdout"])
    for path, what in SPECIAL:
        t0 = time.time()
        # seed 001: the JSON read, and the raw download
        refused(sbxd.req("GET", f"/sandboxes/{sid}/filesystem", params={"path": path}, timeout=QUICK), what)
        refused(sbxd.req("GET", f"/sandboxes/{sid}/files", params={"path": path}, timeout=QUICK), what)
        # E2B's envd
        refused(requests.get(sbxd.url + "/files", params={"path": path, "username": "user"},
                             headers=envd(sbxd, sid, token), timeout=QUICK), what)
        assert time.time() - t0 < QUICK
    # nothing waits inside for a writer that never comes
    assert int(sbxd.sh(sid, WORKERS)["stdout"]) == baseline
    # and the pipe still works for the sandbox's own programs
    r = sbxd.sh(sid, "cd /home/user; (echo through > fifo &) ; cat fifo", timeout=10)
    assert r["stdout"] == "through\n", r


def test_writes_onto_special_files_are_refused(sbxd, special):
    sid, token = special
    for path, what in [SPECIAL[0], SPECIAL[2], SPECIAL[3]]:
        body = {"path": path, "content": base64.b64encode(b"data").decode()}
        refused(sbxd.req("POST", f"/sandboxes/{sid}/filesystem", json=body, timeout=QUICK), what)
        refused(sbxd.req("POST", f"/sandboxes/{sid}/files", data={"path": path},
                         files={"file": ("f", b"data")}, timeout=QUICK), what)
        refused(requests.post(sbxd.url + "/files", params={"path": path, "username": "user"}, data=b"data",
                              headers={**envd(sbxd, sid, token), "Content-Type": "application/octet-stream"},
                              timeout=QUICK), what)
    # they are what they were
    out = sbxd.sh(sid, "stat -c '%F' /home/user/fifo /home/user/sock /dev/null")["stdout"].split("\n")
    assert out[:3] == ["fifo", "socket", "character special file"], out
    # a symlink is replaced, as a write replaces any link: the pipe stays
    assert sbxd.write(sid, "/home/user/fifo-link", "plain")["type"] == "file"
    assert sbxd.sh(sid, "stat -c '%F' /home/user/fifo")["stdout"] == "fifo\n"


def test_stat_list_and_remove_of_special_files_work(sbxd, special):
    sid, token = special
    h = {**envd(sbxd, sid, token), "Content-Type": "application/json"}
    r = sbxd.req("GET", f"/sandboxes/{sid}/filesystem/stat", params={"path": "/home/user/fifo"}, timeout=QUICK)
    assert r.status_code == 200 and r.json()["type"] == "other", r.text
    r = requests.post(sbxd.url + "/filesystem.Filesystem/Stat", json={"path": "/home/user/sock"}, headers=h,
                      timeout=QUICK)
    assert r.status_code == 200, r.text
    r = requests.post(sbxd.url + "/filesystem.Filesystem/ListDir", json={"path": "/home/user"}, headers=h,
                      timeout=QUICK)
    assert r.status_code == 200 and {"fifo", "sock"} <= {e["name"] for e in r.json()["entries"]}, r.text
    r = requests.post(sbxd.url + "/filesystem.Filesystem/ListDir", json={"path": "/home/user/fifo"}, headers=h,
                      timeout=QUICK)
    assert r.status_code == 400, r.text
    r = requests.post(sbxd.url + "/filesystem.Filesystem/Remove", json={"path": "/home/user/fifo"}, headers=h,
                      timeout=QUICK)
    assert r.status_code == 200, r.text
    assert sbxd.req("DELETE", f"/sandboxes/{sid}/filesystem", params={"path": "/home/user/sock"},
                    timeout=QUICK).status_code == 204
    assert sbxd.sh(sid, "ls /home/user")["stdout"].split() == ["fifo-link"]
