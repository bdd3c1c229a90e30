"""Seed 004's checkpoints and artifacts against a real daemon.

Sandboxes are created through the E2B API (POST /sandboxes, template
base): /v1's own create is another part of the issue, and v1_sandbox
accepts any sandbox of the caller.  What a sandbox holds is hostile: the
tests put symlinks to /etc/shadow, FIFOs, hard links, sparse files far past
the bounds and traversal paths in front of the daemon, and check that
nothing of the host comes out and nothing half made stays behind.
"""
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Sbxd

QUOTA_MB = 64


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("sbxd-storage")
    server = Sbxd(str(d / "state")).start(args=["--storage-quota-mb", str(QUOTA_MB)])
    yield server
    try:
        server.cleanup()
    finally:
        server.stop()


def v1(srv, method, path, key=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = "Bearer " + key
    return srv.req(method, "/v1" + path, headers=headers, **kw)


def captures(srv):
    d = os.path.join(srv.state_dir, "captures")
    return sorted(os.listdir(d))


def root(srv, sid, script):
    r = srv.sh(sid, script, user="root")
    assert r["exitCode"] == 0, r
    return r


def user(srv, sid, script):
    r = srv.sh(sid, script)
    assert r["exitCode"] == 0, r
    return r


def checkpoints(srv, key=None):
    r = v1(srv, "GET", "/checkpoints", key=key)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_checkpoint_create_list_delete_frees_its_disk(srv):
    sid = srv.create()
    user(srv, sid, "cd /workspace && printf hello > a.txt && mkdir -p sub/deep && head -c 70000 /dev/urandom"
                   " > sub/deep/b.bin && ln -s a.txt link")
    root(srv, sid, "printf secret > /workspace/root-only && chmod 600 /workspace/root-only")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 200, r.text
    c = r.json()
    assert set(c) == {"checkpointId", "createdAt", "sizeBytes"}
    assert c["sizeBytes"] == 5 + 70000 + 6
    assert abs(c["createdAt"] - time.time() * 1000) < 60000
    cid = c["checkpointId"]
    items = {i["checkpointId"]: i for i in checkpoints(srv)}
    assert items[cid]["sandboxId"] == sid
    assert items[cid]["sizeBytes"] == c["sizeBytes"]
    # a.txt, sub, sub/deep, sub/deep/b.bin, link, root-only
    assert items[cid]["files"] == 6
    assert cid in captures(srv)
    # the content is kept by the daemon under names of its own, 0600
    d = os.path.join(srv.state_dir, "captures", cid)
    assert sorted(os.listdir(d)) == ["1", "2", "3"]
    assert all(os.stat(os.path.join(d, n)).st_mode & 0o077 == 0 for n in os.listdir(d))

    r = v1(srv, "DELETE", "/checkpoints", params={"id": cid})
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert cid not in {i["checkpointId"] for i in checkpoints(srv)}
    assert cid not in captures(srv)
    r = v1(srv, "DELETE", "/checkpoints", params={"id": cid})
    assert r.status_code == 404 and r.json() == {"error": "Checkpoint not found"}
    r = v1(srv, "DELETE", "/checkpoints")
    assert r.status_code == 400 and "error" in r.json()
    srv.delete(sid)


def test_errors_in_v1_shape(srv):
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={})
    assert r.status_code == 400 and r.json() == {"error": "Missing sandbox id"}
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": "sbx_nope"})
    assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}
    r = v1(srv, "GET", "/sandboxes/artifacts", params={"id": "../../etc"})
    assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}
    r = v1(srv, "GET", "/checkpoints", key="sk-sb-wrong")
    assert r.status_code == 401 and r.json() == {"error": "Invalid or missing API key"}


def test_another_organisations_checkpoint_and_artifacts_are_404(srv):
    sid = srv.create()
    user(srv, sid, "echo mine > /workspace/f")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 200, r.text
    cid = r.json()["checkpointId"]
    other = srv.new_key(org="storage-other")
    assert cid not in {i["checkpointId"] for i in checkpoints(srv, key=other)}
    r = v1(srv, "DELETE", "/checkpoints", key=other, params={"id": cid})
    assert r.status_code == 404 and r.json() == {"error": "Checkpoint not found"}
    r = v1(srv, "POST", "/sandboxes/checkpoint", key=other, json={"id": sid})
    assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}
    for path in ("/sandboxes/artifacts", "/sandboxes/artifacts/file"):
        r = v1(srv, "GET", path, key=other, params={"id": sid, "path": "x"})
        assert r.status_code == 404 and r.json() == {"error": "Sandbox not found"}
    # still there for its owner
    assert cid in {i["checkpointId"] for i in checkpoints(srv)}
    assert v1(srv, "DELETE", "/checkpoints", params={"id": cid}).status_code == 200
    srv.delete(sid)


def test_hostile_workspace_symlink_fifo_hardlink(srv):
    """The daemon copies what the sandbox's agent reads inside the sandbox:
    a symlink to /etc/shadow is kept as a link (its target never read), a
    FIFO is skipped without hanging, a hard link is the sandbox's own
    file.  Nothing of the host's /etc/shadow reaches the daemon's files."""
    sid = srv.create()
    root(srv, sid, "cd /workspace && ln -s /etc/shadow shadow-link && mkfifo pipe && ln /etc/shadow hard"
                   " && ln -s / rootlink && printf ok > plain")
    t0 = time.time()
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 200, r.text
    assert time.time() - t0 < 30
    cid = r.json()["checkpointId"]
    items = {i["checkpointId"]: i for i in checkpoints(srv)}
    assert items[cid]["files"] == 4  # shadow-link, hard, rootlink, plain; no FIFO
    host_shadow = open("/etc/shadow", "rb").read()
    d = os.path.join(srv.state_dir, "captures", cid)
    blobs = [open(os.path.join(d, n), "rb").read() for n in os.listdir(d)]
    assert b"ok" in blobs
    assert host_shadow not in blobs
    assert all(not os.path.islink(os.path.join(d, n)) for n in os.listdir(d))
    assert v1(srv, "DELETE", "/checkpoints", params={"id": cid}).status_code == 200
    srv.delete(sid)


def test_over_the_bounds_fails_and_leaves_nothing(srv):
    sid = srv.create()
    before = captures(srv)
    n_before = len(checkpoints(srv))
    # a sparse file far past the bound of one checkpoint (1 GiB)
    user(srv, sid, "truncate -s 3G /workspace/huge")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 413, r.text
    assert "larger than" in r.json()["error"]
    assert captures(srv) == before and len(checkpoints(srv)) == n_before
    # past the organisation's quota (QUOTA_MB): the first fits, the second not
    user(srv, sid, "rm /workspace/huge && head -c 40M /dev/zero > /workspace/big")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 200, r.text
    first = r.json()["checkpointId"]
    after_first = captures(srv)
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 429, r.text
    assert "storage" in r.json()["error"]
    assert captures(srv) == after_first
    assert not [n for n in captures(srv) if n.startswith(".tmp-")]
    # deleting frees the quota
    assert v1(srv, "DELETE", "/checkpoints", params={"id": first}).status_code == 200
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 200, r.text
    assert v1(srv, "DELETE", "/checkpoints", params={"id": r.json()["checkpointId"]}).status_code == 200
    # too many files
    user(srv, sid, "rm /workspace/big && mkdir /workspace/many && cd /workspace/many && seq 10001 | xargs touch")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 413, r.text
    assert "entries" in r.json()["error"]
    # too deep
    user(srv, sid, "rm -rf /workspace/many && mkdir -p /workspace/$(printf 'd/%.0s' $(seq 40))")
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 413, r.text
    assert "deeper" in r.json()["error"]
    assert captures(srv) == before and len(checkpoints(srv)) == n_before
    srv.delete(sid)


def put_artifacts(srv, sid):
    data = os.urandom(100000)
    root(srv, sid, "mkdir -p /artifacts/sub && chmod 1777 /artifacts /artifacts/sub")
    srv.write(sid, "/artifacts/sub/data.bin", data)
    user(srv, sid, "printf 'the report' > /artifacts/report.txt && ln -s /etc/shadow /artifacts/shadow"
                   " && mkfifo /artifacts/pipe && ln -s /etc /artifacts/etc")
    return data


def artifacts(srv, sid, key=None):
    r = v1(srv, "GET", "/sandboxes/artifacts", key=key, params={"id": sid})
    assert r.status_code == 200, r.text
    return r.json()


def download(srv, sid, path):
    return v1(srv, "GET", "/sandboxes/artifacts/file", params={"id": sid, "path": path})


def check_hostile_paths(srv, sid):
    for bad in ("../etc/shadow", "/etc/shadow", "sub/../report.txt", "./report.txt", "sub//data.bin", "sub/"):
        r = download(srv, sid, bad)
        assert r.status_code == 400, (bad, r.text)
        assert "error" in r.json()
    for absent in ("shadow", "pipe", "etc/shadow", "etc/passwd", "nothing", "sub"):
        r = download(srv, sid, absent)
        assert r.status_code == 404, (absent, r.text)
        assert r.json() == {"error": "Artifact not found"}
    r = v1(srv, "GET", "/sandboxes/artifacts/file", params={"id": sid})
    assert r.status_code == 400 and r.json() == {"error": "Missing path"}


def check_listing(a, data):
    files = {i["path"]: i for i in a["items"]}
    assert set(files) == {"report.txt", "sub/data.bin"}
    assert files["report.txt"]["size"] == 10 and files["sub/data.bin"]["size"] == len(data)
    assert a["totalBytes"] == 10 + len(data)


@pytest.mark.parametrize("pause_first", [False, True])
def test_artifacts_live_then_kept_after_delete(srv, pause_first):
    sid = srv.create()
    data = put_artifacts(srv, sid)
    a = artifacts(srv, sid)
    assert a["kept"] is False
    check_listing(a, data)
    r = download(srv, sid, "sub/data.bin")
    assert r.status_code == 200 and r.content == data
    assert download(srv, sid, "/artifacts/report.txt").content == b"the report"
    check_hostile_paths(srv, sid)

    if pause_first:
        assert srv.req("POST", f"/sandboxes/{sid}/pause").status_code == 204
        r = v1(srv, "GET", "/sandboxes/artifacts", params={"id": sid})
        assert r.status_code == 409, r.text
    assert srv.delete(sid).status_code == 204
    a = artifacts(srv, sid)
    assert a["kept"] is True and a["keptAt"] > 0
    check_listing(a, data)
    r = download(srv, sid, "sub/data.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert download(srv, sid, "report.txt").content == b"the report"
    check_hostile_paths(srv, sid)
    # the kept set's content holds nothing of the host
    host_shadow = open("/etc/shadow", "rb").read()
    for name in captures(srv):
        for blob in os.listdir(os.path.join(srv.state_dir, "captures", name)):
            assert open(os.path.join(srv.state_dir, "captures", name, blob), "rb").read() != host_shadow


def test_artifacts_kept_after_timeout(srv):
    sid = srv.create(timeout=4)
    root(srv, sid, "mkdir /artifacts && echo late > /artifacts/out.txt")
    deadline = time.time() + 30
    while time.time() < deadline:
        a = artifacts(srv, sid)
        if a["kept"]:
            break
        time.sleep(0.5)
    assert a["kept"] is True, a
    assert [i["path"] for i in a["items"]] == ["out.txt"]
    assert download(srv, sid, "out.txt").content == b"late\n"
    # the set is kept before the teardown ends, and the sandbox's end logged
    deadline = time.time() + 15
    while "timeout" not in srv.logs() and time.time() < deadline:
        time.sleep(0.2)
    assert "timeout" in srv.logs()


def test_artifacts_of_sandboxes_destroyed_together_are_each_kept(srv):
    """Destroys that come together are torn down together (their ending
    hooks side by side, their network rules in one transaction): each
    sandbox's set is still its own."""
    n = 8
    with ThreadPoolExecutor(n) as pool:
        sids = list(pool.map(lambda _: srv.create(), range(n)))
    for sid in sids:
        root(srv, sid, f"mkdir /artifacts && echo {sid} > /artifacts/who.txt")
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda sid: srv.delete(sid).status_code, sids))
    assert codes == [204] * n
    for sid in sids:
        a = artifacts(srv, sid)
        assert a["kept"] is True and [i["path"] for i in a["items"]] == ["who.txt"], a
        assert download(srv, sid, "who.txt").content == f"{sid}\n".encode()
        assert not os.path.exists(os.path.join(srv.state_dir, "sandboxes", sid))


def test_nothing_kept_without_artifacts(srv):
    sid = srv.create()
    a = artifacts(srv, sid)
    assert a == {"items": [], "totalBytes": 0, "kept": False, "prefix": ""}
    n = len(captures(srv))
    assert srv.delete(sid).status_code == 204
    assert artifacts(srv, sid)["kept"] is False
    assert len(captures(srv)) == n
    r = v1(srv, "POST", "/sandboxes/checkpoint", json={"id": sid})
    assert r.status_code == 409, r.text


def test_sweep_removes_half_made_sets_at_start(tmp_path):
    server = Sbxd(str(tmp_path / "state")).start()
    try:
        d = os.path.join(server.state_dir, "captures")
        os.makedirs(os.path.join(d, ".tmp-ckpt_dead"))
        os.makedirs(os.path.join(d, "ckpt_norecord"))
        open(os.path.join(d, "ckpt_norecord", "1"), "w").write("x")
        server.stop()
        server.start()
        assert os.listdir(d) == []
    finally:
        server.stop()


def test_create_from_checkpoint_and_kept_workspace_v1(srv):
    """POST /v1/sandboxes with ephemeral:false keeps the workspace when the
    sandbox ends; {checkpointId} starts a new one with it, owners and modes
    as they were.  Needs /v1/sandboxes (v1.c)."""
    r = v1(srv, "POST", "/sandboxes", json={"runtime": "base", "ephemeral": False,
                                            "capabilities": {"storage": {"workspace": "checkpointed",
                                                                         "artifactPrefix": "my-project/"}}})
    if r.status_code in (404, 405):
        pytest.skip("POST /v1/sandboxes is not served yet")
    assert r.status_code in (200, 201), r.text
    sid = r.json()["id"]

    def ready(i):
        deadline = time.time() + 60
        while time.time() < deadline:
            s = v1(srv, "GET", "/sandboxes", params={"id": i}).json()
            if s["status"] in ("ready", "active"):
                return s
            time.sleep(0.2)
        raise AssertionError("not ready")

    def ex(i, cmd):
        r = v1(srv, "POST", "/sandboxes/exec", json={"id": i, "command": cmd})
        assert r.status_code == 200, r.text
        return r.json()

    ready(sid)
    ex(sid, "cd /workspace && echo kept > f.txt && chmod 640 f.txt && mkdir d && echo in > d/g"
            " && ln -s f.txt l && echo art > /artifacts/a.txt")
    assert v1(srv, "DELETE", "/sandboxes", params={"id": sid}).json() == {"ok": True}
    deadline = time.time() + 30
    mine = []
    while time.time() < deadline and not mine:
        mine = [c for c in checkpoints(srv) if c["sandboxId"] == sid]
        time.sleep(0.2)
    assert len(mine) == 1
    a = artifacts(srv, sid)
    assert a["kept"] and [i["key"] for i in a["items"]] == ["my-project/a.txt"]
    r = v1(srv, "POST", "/sandboxes", json={"runtime": "base", "checkpointId": mine[0]["checkpointId"]})
    assert r.status_code in (200, 201), r.text
    new = r.json()["id"]
    ready(new)
    out = ex(new, "cd /workspace && cat f.txt d/g && stat -c '%U %a' f.txt && readlink l")
    assert out["stdout"] == "kept\nin\nuser 640\nf.txt\n", out
    r = v1(srv, "POST", "/sandboxes", json={"runtime": "base", "checkpointId": "ckpt_00000000000000000000"})
    assert r.status_code == 404, r.text
    v1(srv, "DELETE", "/sandboxes", params={"id": new})


def test_write_a_file_directly_under_the_root(srv):
    """Creating the parents of /name found nothing to make and failed
    (mkdirat of ""), so a write to the root directory answered 404; the
    service's /artifacts is made the same way."""
    sid = srv.create()
    srv.write(sid, "/at-root.txt", b"top", user="root")
    assert srv.read(sid, "/at-root.txt", user="root") == b"top"
    srv.delete(sid)


def test_kept_artifacts_can_be_deleted_and_free_their_room(srv):
    sid = srv.create()
    root(srv, sid, "mkdir /artifacts && echo kept > /artifacts/out.txt")
    # a live sandbox's /artifacts are its own files
    r = v1(srv, "DELETE", "/sandboxes/artifacts", params={"id": sid})
    assert r.status_code == 409, r.text
    before = set(captures(srv))
    assert srv.delete(sid).status_code == 204
    assert artifacts(srv, sid)["kept"] is True
    kept = set(captures(srv)) - before
    assert len(kept) == 1, kept
    # not another organisation's to delete
    other = srv.new_key(org="other-artifacts")
    r = v1(srv, "DELETE", "/sandboxes/artifacts", key=other, params={"id": sid})
    assert r.status_code == 404, r.text
    assert artifacts(srv, sid)["kept"] is True
    r = v1(srv, "DELETE", "/sandboxes/artifacts", params={"id": sid})
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert set(captures(srv)) == before
    assert artifacts(srv, sid) == {"items": [], "totalBytes": 0, "kept": False, "prefix": ""}
    r = v1(srv, "DELETE", "/sandboxes/artifacts", params={"id": sid})
    assert r.status_code == 404 and r.json() == {"error": "No artifacts kept"}, r.text
