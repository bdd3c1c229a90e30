"""Snapshots and forks (E2B's routes) against a real daemon: errors,
ownership, bounds, and that nothing is left behind (mounts, loop devices,
directories, disk blocks) once sandboxes and snapshots are gone.

The happy paths with the real E2B SDK are in tests/e2b/snapshot.test.mjs.
"""
import os
import subprocess
import time

import pytest

from conftest import SBXD, Sbxd, host_traces


def snapshot(sbxd, sid, expect=201, **body):
    r = sbxd.req("POST", f"/sandboxes/{sid}/snapshots", json=body)
    assert r.status_code == expect, r.text
    return r.json()["snapshotID"] if expect == 201 else r.json()


def fork(sbxd, sid, expect=201, **body):
    r = sbxd.req("POST", f"/sandboxes/{sid}/fork", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def snapshots(sbxd, key=None, **params):
    headers = {"Authorization": "Bearer " + key} if key else None
    r = sbxd.req("GET", "/snapshots", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def delete_snapshot(sbxd, ref):
    return sbxd.req("DELETE", f"/templates/{ref}").status_code


def loops_under(path):
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if path in line]


def mounts_under(path):
    return [line for line in open("/proc/self/mountinfo") if path in line]


def captures(sbxd):
    d = os.path.join(sbxd.state_dir, "captures")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_errors_in_e2b_shape(sbxd):
    sid = sbxd.create()
    for bad in ("", "snap_x", "a/b", "..", "x" * 65, "sp ace"):
        if bad == "":
            continue  # an empty name is no name
        body = snapshot(sbxd, sid, expect=400, name=bad)
        assert body["code"] == 400 and "name" in body["message"], body
    assert snapshot(sbxd, "sbx_nosuchsandbox0000000", expect=404)["code"] == 404
    for count in (0, 101, "3", -1):
        assert fork(sbxd, sid, expect=400, count=count)["code"] == 400
    assert fork(sbxd, sid, expect=400, count=1, timeout=10 ** 6)["code"] == 400
    assert fork(sbxd, "sbx_nosuchsandbox0000000", expect=404)["code"] == 404
    assert delete_snapshot(sbxd, "snap_00000000000000000000") == 404
    assert delete_snapshot(sbxd, "no-such-name") == 404
    r = sbxd.req("GET", "/snapshots", params={"limit": "0"})
    assert r.status_code == 400
    r = sbxd.req("GET", "/snapshots", params={"nextToken": "bogus"})
    assert r.status_code == 400
    # an ended sandbox is not found, for a snapshot, a fork and a connect
    assert sbxd.delete(sid).status_code == 204
    assert snapshot(sbxd, sid, expect=404)["code"] == 404
    assert fork(sbxd, sid, expect=404)["code"] == 404
    r = sbxd.req("POST", f"/sandboxes/{sid}/connect", json={"timeout": 60})
    assert r.status_code == 404, r.text


def test_snapshots_belong_to_their_organisation(sbxd):
    other = sbxd.new_key(org="other-snapshots")
    auth = {"Authorization": "Bearer " + other}
    mine = sbxd.create()
    sbxd.write(mine, "/home/user/secret.txt", "mine")
    snap = snapshot(sbxd, mine, name="private")
    try:
        theirs = sbxd.req("POST", "/sandboxes", json={"templateID": "base"}, headers=auth).json()["sandboxID"]
        # another organisation neither sees, uses, forks nor deletes it
        assert snapshots(sbxd, key=other) == []
        for ref in (snap, "private"):
            r = sbxd.req("POST", "/sandboxes", json={"templateID": ref}, headers=auth)
            assert r.status_code == 400, r.text
            r = sbxd.req("DELETE", f"/templates/{ref}", headers=auth)
            assert r.status_code == 404, r.text
        for path in (f"/sandboxes/{mine}/snapshots", f"/sandboxes/{mine}/fork"):
            r = sbxd.req("POST", path, json={}, headers=auth)
            assert r.status_code == 404, r.text
        # the same name is free in another organisation
        r = sbxd.req("POST", f"/sandboxes/{theirs}/snapshots", json={"name": "private"}, headers=auth)
        assert r.status_code == 201, r.text
        theirs_snap = r.json()["snapshotID"]
        assert theirs_snap != snap
        assert [s["snapshotID"] for s in snapshots(sbxd, key=other)] == [theirs_snap]
        assert [s["snapshotID"] for s in snapshots(sbxd, name="private")] == [snap]
        c = sbxd.create(template="private")
        assert sbxd.read(c, "/home/user/secret.txt") == b"mine"
        assert sbxd.req("DELETE", f"/templates/{theirs_snap}", headers=auth).status_code == 204
        sbxd.req("DELETE", f"/sandboxes/{theirs}", headers=auth)
    finally:
        assert delete_snapshot(sbxd, snap) == 204
        sbxd.cleanup()


def test_a_name_moves_to_the_newest_snapshot(sbxd):
    sid = sbxd.create()
    sbxd.write(sid, "/home/user/v.txt", "1")
    first = snapshot(sbxd, sid, name="moving")
    sbxd.write(sid, "/home/user/v.txt", "2")
    second = snapshot(sbxd, sid, name="moving")
    try:
        assert second == first  # E2B: a new build of the same template
        listed = snapshots(sbxd, sandboxID=sid)
        assert [s["snapshotID"] for s in listed] == [first] and listed[0]["names"] == ["moving"]
        c = sbxd.create(template="moving")
        assert sbxd.read(c, "/home/user/v.txt") == b"2"
        # paging
        extra = [snapshot(sbxd, sid) for _ in range(3)]
        seen, token = [], None
        while True:
            params = {"limit": 2, "sandboxID": sid}
            if token:
                params["nextToken"] = token
            r = sbxd.req("GET", "/snapshots", params=params)
            assert r.status_code == 200
            seen += [s["snapshotID"] for s in r.json()]
            token = r.headers.get("x-next-token")
            if not token:
                break
        assert sorted(seen) == sorted(extra + [first])
        for s in extra:
            assert delete_snapshot(sbxd, s) == 204
    finally:
        assert delete_snapshot(sbxd, "moving") == 204
        sbxd.cleanup()


def test_fork_chain_is_bounded(sbxd):
    """Each generation adds a layer; a snapshot holds at most 16."""
    sid = sbxd.create()
    try:
        for gen in range(16):
            sbxd.write(sid, f"/home/user/gen{gen}", str(gen))
            [res] = fork(sbxd, sid, count=1)
            assert "sandbox" in res, res
            # the parent may go: its child holds the layers it needs
            assert sbxd.delete(sid).status_code == 204
            sid = res["sandbox"]["sandboxID"]
        # the youngest sees every generation's file
        out = sbxd.sh(sid, "cat /home/user/gen*")
        assert out["stdout"] == "".join(str(g) for g in sorted(range(16), key=lambda g: f"gen{g}")), out
        body = snapshot(sbxd, sid, expect=429)
        assert "16 layers" in body["message"], body
        assert fork(sbxd, sid, expect=429)["code"] == 429
    finally:
        sbxd.cleanup()


def test_at_most_100_snapshots(sbxd):
    sid = sbxd.create()
    made = []
    try:
        made = [snapshot(sbxd, sid) for _ in range(100)]
        body = snapshot(sbxd, sid, expect=429)
        assert "100 snapshots" in body["message"], body
        assert len(captures(sbxd)) == 100
        # taking a name over is no new snapshot; a freed place is one
        assert delete_snapshot(sbxd, made.pop()) == 204
        made.append(snapshot(sbxd, sid, name="full"))
        assert snapshot(sbxd, sid, name="full") == made[-1]
        assert snapshot(sbxd, sid, expect=429)["code"] == 429
    finally:
        for ref in made:
            assert delete_snapshot(sbxd, ref) == 204
        assert captures(sbxd) == []
        sbxd.cleanup()


def test_storage_quota(tmp_path):
    """A snapshot's bytes count against the organisation's storage quota
    (shared with seed 004's checkpoints); past it nothing is kept."""
    s = Sbxd(str(tmp_path / "state")).start(args=["--storage-quota-mb", "64"])
    try:
        sid = s.create()
        s.sh(sid, "head -c 80000000 /dev/urandom > /home/user/big")
        body = snapshot(s, sid, expect=429)
        assert "storage" in body["message"], body
        assert captures(s) == []
        other = s.create()
        snap = snapshot(s, other)
        assert delete_snapshot(s, snap) == 204
    finally:
        s.cleanup()
        s.stop()


def test_nothing_left_behind(tmp_path):
    s = Sbxd(str(tmp_path / "state")).start()
    state = s.state_dir
    try:
        sid = s.create()
        s.sh(sid, "head -c 30000000 /dev/urandom > /home/user/blob")
        snap = snapshot(s, sid, name="leaks")
        snap_bytes = du(os.path.join(state, "captures"))
        assert snap_bytes >= 30_000_000, snap_bytes
        made = [s.create(template=snap)]
        made += [f["sandbox"]["sandboxID"] for f in fork(s, sid, count=3)]
        # each new sandbox mounts the layers read-only: a loop device each
        assert len(loops_under(state)) >= len(made) + 1
        # deleting the snapshot keeps the sandboxes made from it working
        assert delete_snapshot(s, snap) == 204
        assert captures(s) == []
        for m in made:
            assert s.sh(m, "wc -c < /home/user/blob")["stdout"].strip() == "30000000"
        # pause without memory, then a connect: only the files are left
        s.sh(made[0], "sleep 1000 &")
        r = s.req("POST", f"/sandboxes/{made[0]}/pause", json={"memory": False})
        assert r.status_code == 204, r.text
        r = s.req("POST", f"/sandboxes/{made[0]}/connect", json={"timeout": 60})
        assert r.status_code == 200, r.text
        ps = s.sh(made[0], "ps -eo comm=")["stdout"].split()
        assert "sleep" not in ps and "sbx-init" in ps, ps
        for m in made + [sid]:
            assert s.delete(m).status_code == 204
        # (the spare sandboxes, made ahead of creates, keep their disks)
        gone = [os.path.join(state, "captures")] + [os.path.join(state, "sandboxes", m) for m in made + [sid]]

        def left():
            return [x for g in gone for x in loops_under(g) + mounts_under(g)]
        deadline = time.time() + 10
        while time.time() < deadline and left():
            time.sleep(0.1)
        assert left() == []
        for m in made + [sid]:
            assert host_traces(m) == []
        for m in made + [sid]:
            assert not os.path.exists(os.path.join(state, "sandboxes", m))
        # the blob's blocks are held nowhere any more
        assert captures(s) == []
        assert du(state) < 30_000_000, du(state)  # the spares' fresh disks are a few MB each
    finally:
        s.cleanup()
        s.stop()


def test_a_snapshot_survives_a_restart(tmp_path):
    s = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = s.create()
        s.write(sid, "/home/user/kept.txt", "kept")
        snap = snapshot(s, sid, name="durable")
        s.stop()
        s.start()
        assert [x["snapshotID"] for x in snapshots(s)] == [snap]
        c = s.create(template="durable")
        assert s.read(c, "/home/user/kept.txt") == b"kept"
        # the source, re-attached, can still be snapshotted and forked
        [res] = fork(s, sid, count=1)
        assert s.read(res["sandbox"]["sandboxID"], "/home/user/kept.txt") == b"kept"
        assert delete_snapshot(s, snap) == 204
    finally:
        s.cleanup()
        s.stop()
