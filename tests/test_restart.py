"""sbxd can die at any moment (kill -9) and start again: every sandbox, its
files and its running processes are still there and controllable."""
import base64
import json
import os
import signal
import subprocess
import time

from conftest import Sbxd, host_traces, wait_until


def test_kill9_and_restart_keeps_everything(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        a = d.create(metadata={"k": "v"}, timeout=600)
        b = d.create(timeout=600)
        d.write(a, "/home/user/keep.txt", "kept across restarts")
        r = d.run(a, "bash", background=True,
                  args=["-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; "
                        "echo tick $i; sleep 0.1; done"])   # renamed into place: never read empty
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


def test_a_record_that_shrinks_is_kept_whole_across_a_restart(tmp_path):
    """A sandbox's record file is written over its previous bytes: one
    shorter than before (a long network policy replaced by a short one)
    must not keep the old tail, or the restarted daemon cannot read it
    and loses the sandbox."""
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=600)
        long_rules = [f"198.51.100.{i}/32" for i in range(1, 60)]
        # each record file is written every other save: two long ones, so
        # that the short one goes over a long one whichever comes first
        for rules in (long_rules, long_rules, ["198.51.100.2/32"]):
            r = d.req("PUT", f"/sandboxes/{sid}/network", json={"denyOut": rules})
            assert r.status_code == 204, r.text
        with open(os.path.join(d.state_dir, "sandboxes", sid, "sandbox.json")) as f:
            rec = json.load(f)   # whole: no tail of the longer record before
        assert rec["network"]["deny"] == ["198.51.100.2"], rec

        d.kill9()
        d.start()
        assert sid in d.sandbox_ids()
        assert d.get(sid).json()["status"] == "running"
        assert d.run(sid, "true")["exitCode"] == 0
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
        assert wait_until(lambda: not os.path.exists(os.path.join(d.state_dir, "sandboxes", sid)))
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


# ------------------------------------------------- what a crash leaves behind

IDMAP = "/run/sbxd/idmap"


def range_files():
    """{slot: (owner, mtime)} of the machine's claimed uid ranges."""
    out = {}
    for name in os.listdir(IDMAP):
        try:
            with open(os.path.join(IDMAP, name)) as f:
                out[int(name)] = (f.read().strip(), os.stat(f.fileno()).st_mtime)
        except (FileNotFoundError, ValueError):
            pass
    return out


def mapped_slots():
    """Slots some user namespace on the machine maps (uid_map of every process)."""
    slots = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            lines = open(f"/proc/{pid}/uid_map").read().splitlines()
        except OSError:
            continue
        for line in lines:
            inside, outside, count = (int(x) for x in line.split())
            if outside >= 100000 and (outside - 100000) % 65536 == 0:
                slots.add((outside - 100000) // 65536)
    return slots


def free_slot(taken):
    """A slot nobody claims or maps, for a planted range file."""
    used = set(range_files()) | mapped_slots() | taken
    for k in range(29999, 20000, -1):
        if k not in used:
            taken.add(k)
            return k
    raise RuntimeError("no free slot")


def plant(slot, owner, age_s=0):
    path = os.path.join(IDMAP, str(slot))
    with open(path, "x") as f:
        f.write(owner)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def nft_table():
    return subprocess.run(["nft", "list", "table", "inet", "sbxd"], capture_output=True, text=True).stdout


def nft_slot_rules(slot):
    """What the shared nftables table holds for SLOT: its chains and map entries."""
    found = []
    for kind in "oin":
        r = subprocess.run(["nft", "list", "chain", "inet", "sbxd", f"{kind}{slot}"], capture_output=True)
        if r.returncode == 0:
            found.append(f"chain {kind}{slot}")
    if f'"sbxh{slot}"' in nft_table():
        found.append(f"map entry sbxh{slot}")
    if subprocess.run(["ip", "link", "show", f"sbxh{slot}"], capture_output=True).returncode == 0:
        found.append(f"link sbxh{slot}")
    return found


def test_startup_sweep_releases_id_ranges_whose_owner_is_gone(tmp_path):
    """A range file names its sandbox; the next start releases the ranges of
    sandboxes that are gone (with their slot's rules), keeps what another
    instance or a claim in progress may hold."""
    d = Sbxd(str(tmp_path / "state")).start()
    planted = []
    try:
        d.stop()
        sandboxes = os.path.join(d.state_dir, "sandboxes")
        other = tmp_path / "other" / "sandboxes" / "sbx_othersandbox00000000"
        other.mkdir(parents=True)
        taken = set()
        # a record that cannot be read, as a crash mid-create leaves it
        broken = os.path.join(sandboxes, "sbx_brokenrecord00000000")
        os.makedirs(broken)
        with open(os.path.join(broken, "sandbox.json"), "w") as f:
            f.write('{"id": "sbx_brok')
        k_broken = free_slot(taken)
        planted.append(plant(k_broken, broken + "\n"))
        # ours, for a sandbox with no directory at all; with rules left for its slot
        k_ours = free_slot(taken)
        planted.append(plant(k_ours, os.path.join(sandboxes, "sbx_neverrecorded0000000") + "\n"))
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            f"add chain inet sbxd o{k_ours}\nadd chain inet sbxd i{k_ours}\nadd chain inet sbxd n{k_ours}\n"
            f'add element inet sbxd out_map {{ "sbxh{k_ours}" : jump o{k_ours} }}\n'))
        # another instance's, whose sandbox is gone and which nothing maps
        k_gone = free_slot(taken)
        planted.append(plant(k_gone, "/nonexistent/state/sandboxes/sbx_gone\n", age_s=120))
        # an older sbxd's (no owner), that nothing maps
        k_old = free_slot(taken)
        planted.append(plant(k_old, "", age_s=120))
        # kept: another instance's whose sandbox is there; an ownerless one
        # young enough to be being claimed
        k_other = free_slot(taken)
        planted.append(plant(k_other, str(other) + "\n", age_s=120))
        k_young = free_slot(taken)
        planted.append(plant(k_young, ""))

        d.start()
        d.stop()
        left = range_files()
        for k in (k_broken, k_ours, k_gone, k_old):
            assert k not in left, (k, left.get(k))
        assert k_other in left and k_young in left
        assert not os.path.exists(broken)
        assert nft_slot_rules(k_ours) == []
        assert "releasing an id range whose sandbox is gone" in d.logs()
    finally:
        for p in planted:
            if os.path.exists(p):
                os.unlink(p)
        d.stop()


def test_spares_of_a_killed_daemon_whose_directory_is_gone_leave_no_cgroups(tmp_path):
    """A daemon killed with spares: their inits end with it (a spare is
    nobody's yet), their cgroups stay, empty.  When its state directory is
    gone before it starts again, another instance's start releases their
    id ranges once nothing maps them, and must remove those cgroups too:
    nothing else ever would (it released the ranges and left the cgroups,
    one per hierarchy, for good)."""
    a = Sbxd(str(tmp_path / "a")).start()
    b = Sbxd(str(tmp_path / "b"))
    try:
        sandboxes = os.path.join(a.state_dir, "sandboxes")
        assert wait_until(lambda: sum(1 for sid in os.listdir(sandboxes) if host_traces(sid)) >= 2, 10)
        a.kill9()
        spares = os.listdir(sandboxes)
        assert sum(1 for sid in spares if host_traces(sid)) >= 2, spares
        subprocess.run(["rm", "-rf", a.state_dir], check=True)
        ours = [slot for slot, (owner, _) in range_files().items() if owner.startswith(sandboxes + "/")]
        # the spares' processes end with their daemon, a little after it
        assert wait_until(lambda: not set(ours) & mapped_slots(), 10), set(ours) & mapped_slots()
        old = time.time() - 120   # past the grace of a range being claimed
        for slot in ours:
            os.utime(os.path.join(IDMAP, str(slot)), (old, old))
        b.start()
        assert not [o for o, _ in range_files().values() if o.startswith(sandboxes + "/")], range_files()
        left = {sid: t for sid in spares if (t := host_traces(sid))}
        assert left == {}, left
    finally:
        b.stop()
        if os.path.isdir(a.state_dir):   # failed before its removal: its start removes its spares
            a.start()
            a.stop()


def test_processes_of_a_sandbox_whose_directory_was_removed_end_before_its_range_is_freed(tmp_path):
    """A sandbox directory removed from outside while the daemon was down:
    its processes run on with its uid range, which must not go to another
    sandbox while they do.  The next start ends them with its cgroup,
    then releases the range (it released the range and left them running)."""
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=600)
        with open(os.path.join(d.state_dir, "sandboxes", sid, "sandbox.json")) as f:
            rec = json.load(f)
        init, slot = rec["init_pid"], rec["uid_slot"]
        d.stop()  # its sandboxes keep running
        assert os.path.exists(f"/proc/{init}")
        assert slot in mapped_slots() and slot in range_files()
        subprocess.run(["rm", "-rf", os.path.join(d.state_dir, "sandboxes", sid)], check=True)
        d.start(args=d.args)
        assert wait_until(lambda: not os.path.exists(f"/proc/{init}"), 10), "its init still runs"
        assert slot not in mapped_slots()
        assert wait_until(lambda: slot not in range_files(), 10), range_files().get(slot)
        assert wait_until(lambda: host_traces(sid) == [], 10), host_traces(sid)
    finally:
        d.cleanup()
        d.stop()


def test_kill9_during_creates_leaves_nothing_behind(tmp_path):
    """kill -9 while sandboxes are being created (and once between creates),
    again and again: after a restart and the destruction of what survived,
    no uid range, cgroup, loop device, mount, link or nftables rule of any of
    its sandboxes is left."""
    import random
    import threading

    import requests
    state = str(tmp_path / "state")
    sandboxes = os.path.join(state, "sandboxes")
    d = Sbxd(state).start()
    before = set(range_files())
    seen, slots, kills = set(), set(), []

    def snapshot():
        if os.path.isdir(sandboxes):
            seen.update(n for n in os.listdir(sandboxes) if n.startswith("sbx"))
        for k, (owner, _) in range_files().items():
            if owner.startswith(sandboxes + "/"):
                slots.add(k)

    def creator(stop):
        s = requests.Session()
        s.headers.update(d.http.headers)
        while not stop.is_set():
            try:
                r = s.post(d.url + "/sandboxes", json={"templateID": "base", "timeout": 120}, timeout=10)
                if r.status_code == 201 and random.random() < 0.5:
                    s.delete(d.url + "/sandboxes/" + r.json()["sandboxID"], timeout=10)
            except requests.RequestException:
                time.sleep(0.02)

    try:
        for round in range(6):
            stop = threading.Event()
            threads = [threading.Thread(target=creator, args=(stop,)) for _ in range(3)]
            idle = round == 5  # the last kill falls between creates
            if not idle:
                for t in threads:
                    t.start()
            deadline = time.time() + random.uniform(0.3, 1.2)
            while time.time() < deadline:
                snapshot()
                time.sleep(0.01)
            snapshot()
            kills.append(time.time())
            d.kill9()
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join()
            snapshot()
            d.start()
            snapshot()
        d.cleanup()
        d.stop()
        snapshot()
        assert seen

        def leftovers():
            left = []
            files = range_files()
            mapped = mapped_slots()
            for k, (owner, mtime) in files.items():
                if owner.startswith(sandboxes + "/"):
                    left.append(f"range {k} of {owner}")
                elif k not in before and owner == "" and k not in mapped \
                        and any(abs(mtime - t) < 3 for t in kills):
                    left.append(f"ownerless range {k}")   # as an older sbxd leaked them
            for root, _, _ in os.walk("/sys/fs/cgroup"):   # v1 and unified
                name = os.path.basename(root)
                if name in seen:
                    left.append(f"cgroup {root}")
            left += [f"{sid}: directory" for sid in seen if os.path.exists(os.path.join(sandboxes, sid))]
            loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
            left += [line for line in loops.splitlines() if state in line]
            left += ["mount " + line for line in open("/proc/self/mountinfo").read().splitlines() if state in line]
            for k in slots:
                if k not in files:   # free again (not claimed by anyone since)
                    left += nft_slot_rules(k)
            return left

        deadline = time.time() + 10
        while leftovers() and time.time() < deadline:
            time.sleep(0.5)
        assert leftovers() == []
    finally:
        if d.proc and d.proc.poll() is None:
            d.cleanup()
            d.stop()


def test_sigterm_on_any_thread_stops_the_daemon(tmp_path):
    """No thread blocks SIGTERM, so the kernel may run its handler on any of
    them: the daemon stops all the same (it once slept on in pause() until
    the SIGKILL after it, leaving its spares' id ranges and directories)."""
    import ctypes
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        pid = d.proc.pid
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        assert tids
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(234, pid, tids[-1], signal.SIGTERM) == 0  # tgkill
        d.proc.wait(timeout=15)
        assert "stopping; sandboxes keep running" in d.logs()
    finally:
        d.stop()


def test_sigterm_while_starting_stops_the_daemon(tmp_path):
    """A SIGTERM that comes while the daemon starts (here: at its first
    log line) stops it as one after the start does, not by the signal's
    default action (the handler was once set only after the API
    answered, and a SIGTERM right after the first answer killed it)."""
    d = Sbxd(str(tmp_path / "state")).start(wait=False)
    try:
        deadline = time.time() + 20
        while not os.path.getsize(d.log_path) and time.time() < deadline:
            time.sleep(0.001)
        assert os.path.getsize(d.log_path), "the daemon logged nothing"
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) == 0, d.logs()
        assert "stopping; sandboxes keep running" in d.logs()
    finally:
        d.stop()


def daemon_tag(state_dir):
    """The name of a daemon's nftables chains and sets: FNV-1a of its
    state directory (net.c, owner_tag)."""
    h = 2166136261
    for b in os.path.realpath(state_dir).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return "%08x" % h


def nft_set(name):
    r = subprocess.run(["nft", "list", "set", "inet", "sbxd", name], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def uid_slot(d, sid):
    with open(os.path.join(d.state_dir, "sandboxes", sid, "sandbox.json")) as f:
        return json.load(f)["uid_slot"]


# A DNS query to the sandbox's name server (the gateway, redirected to the
# daemon's DNS filter): prints "answered" when any answer comes back.
DNS_PROBE = r"""
import socket
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01'
s.sendto(q, (ns, 53))
print('answered' if s.recvfrom(512)[0][:2] == b'\x12\x34' else 'wrong')
"""


def loopback_dns():
    """A name server on loopback (the daemon's upstream) that answers every
    query NXDOMAIN: its port."""
    import socket
    import threading
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        while True:
            q, peer = sock.recvfrom(512)
            if len(q) >= 12:
                sock.sendto(q[:2] + b"\x81\x83" + q[4:], peer)
    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def test_plain_sandboxes_share_their_daemons_rules(tmp_path):
    """A sandbox with the default policy has no chains of its own: it is an
    element of its daemon's sets, and the daemon's chains carry its rules;
    one with a policy of its own has its chains.  The daemon's chains stay
    while sandboxes it left running use them (and work after it starts
    again), and go with it when it stops with none."""
    d = Sbxd(str(tmp_path / "state")).start(args=["--dns-upstream", f"127.0.0.1:{loopback_dns()}"])
    tag = daemon_tag(d.state_dir)
    try:
        plain = [d.create(timeout=600) for _ in range(3)]
        custom = d.create(timeout=600, network={"denyOut": ["192.0.2.0/24"]})
        table = nft_table()
        assert f"chain po_{tag} {{" in table and f"chain pi_{tag} {{" in table and f"chain pn_{tag} {{" in table
        assert f"@own_{tag} jump po_{tag}" in table
        own = nft_set(f"own_{tag}")
        for sid in plain + [custom]:
            assert f'"sbxh{uid_slot(d, sid)}" . ' in own, (sid, own)
        for sid in plain:
            assert f"chain o{uid_slot(d, sid)} {{" not in table
        k = uid_slot(d, custom)
        assert f"chain o{k} {{" in table and f"jump pi_{tag}" in table
        for sid in plain + [custom]:
            assert d.py(sid, DNS_PROBE)["stdout"].strip() == "answered"

        d.stop()  # the sandboxes keep running, and with them the rules
        assert f"chain po_{tag} {{" in nft_table()
        assert os.path.exists(f"/run/sbxd/nft/{tag}")
        d.start(args=d.args)
        for sid in plain + [custom]:
            assert d.py(sid, DNS_PROBE)["stdout"].strip() == "answered"
        # back to the default policy: its chains go
        assert d.req("PUT", f"/sandboxes/{custom}/network", json={}).status_code in (200, 204)
        assert f"chain o{k} {{" not in nft_table()
    finally:
        if d.proc.poll() is None:
            d.cleanup()
        d.stop()
    table = nft_table()
    assert f"po_{tag}" not in table and f"own_{tag}" not in table and f"chain o{k} {{" not in table
    assert not os.path.exists(f"/run/sbxd/nft/{tag}")


def plant_tag(tag, element=None):
    """Chains and sets as a daemon of TAG leaves them (with ELEMENT, a
    sandbox it left running, in its set)."""
    cmds = [f"add set inet sbxd own_{tag} {{ type ifname . ipv4_addr; }}",
            f"add set inet sbxd gw_{tag} {{ type ifname . ipv4_addr; }}"]
    cmds += [f"add chain inet sbxd p{k}_{tag}" for k in "oin"]
    cmds += [f"add rule inet sbxd po_{tag} accept"]
    if element:
        cmds += [f"add element inet sbxd own_{tag} {{ {element} }}"]
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input="\n".join(cmds) + "\n")


def test_a_gone_daemons_rules_go_once_no_sandbox_uses_them(tmp_path):
    """At start a daemon removes the chains and sets of a daemon that is gone
    (its lock file is free) and left no sandbox in its set; it keeps those
    of a daemon that runs (holds its lock) or left sandboxes running, and
    sends their sandboxes to them."""
    import fcntl
    gone, running, left = "0badc0de", "0badc0e0", "0badc0e1"
    d = Sbxd(str(tmp_path / "state"))
    os.makedirs("/run/sbxd/nft", exist_ok=True)
    held = open(f"/run/sbxd/nft/{running}", "w")
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        plant_tag(gone)
        plant_tag(running)
        plant_tag(left, '"sbxh32767" . 10.201.255.254')
        d.start()
        table = nft_table()
        assert f"po_{gone}" not in table and nft_set(f"own_{gone}") is None
        assert not os.path.exists(f"/run/sbxd/nft/{gone}")
        for t in (running, left):
            assert f"chain po_{t} {{" in table and f"@own_{t} jump po_{t}" in table
        # the sandbox it left is gone too: at the next stop its rules go
        subprocess.run(["nft", "flush", "set", "inet", "sbxd", f"own_{left}"], check=True)
        d.stop()
        table = nft_table()
        assert f"po_{left}" not in table and f"chain po_{running} {{" in table
        # and the running one's, once it is gone
        fcntl.flock(held, fcntl.LOCK_UN)
        d.start()
        d.stop()
        assert f"po_{running}" not in nft_table()
    finally:
        held.close()
        d.stop()
        # whatever is left of the planted tags goes at a start and stop
        for t in (gone, running, left):
            subprocess.run(["nft", "flush", "set", "inet", "sbxd", f"own_{t}"], capture_output=True)
        d.start()
        d.stop()
