#!/usr/bin/env python3
"""bench_net.py URL KEY: throughput from a sandbox to a peer, and DNS
latency under another sandbox's flood, as JSON.

The peer is a network namespace this script makes (sbxb-peer, 203.0.113.10
behind a veth from the host, with a DNS server for peer.test that sends
names under slow.test to a server that never answers, in the same
namespace) and removes at the
end; no traffic goes anywhere else.  The running sbxd at URL must use
203.0.113.53 as its DNS upstream.  It measures 512 MiB sent over TCP:
  direct   internet mode, forwarded and masqueraded by the kernel
  filtered allowOut ["peer.test"] + denyOut ["0.0.0.0/0"], port 80, through
           the daemon's HTTP/TLS filter
and the latency of sandbox B's DNS answers (peer.test, 10 queries one
after the other), quiet and while sandbox A sends 600 names under
slow.test a second (each would hold a slot of the DNS filter for 4 s).
"""
import json
import subprocess
import sys
import threading
import time

import requests

NS = "sbxb-peer"
MIB = 512

SINK = r"""
import socket, sys, threading
def serve(port):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("203.0.113.10", port)); l.listen(16)
    while True:
        c, _ = l.accept()
        def drain(c=c):
            while c.recv(1 << 20):
                pass
            c.sendall(b"done"); c.close()
        threading.Thread(target=drain, daemon=True).start()
for p in (80, 9000):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
def blackhole():
    # the DNS server of slow.test: reads every query, answers none
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("203.0.113.10", 5353))
    while True:
        u.recv(4096)
threading.Thread(target=blackhole, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

SENDER = r"""
import socket, sys, time
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
buf = b"\0" * (1 << 20)
t = time.monotonic()
if port == 80:
    s.sendall(b"POST / HTTP/1.1\r\nHost: peer.test\r\nContent-Length: %d\r\n\r\n" % (mib << 20))
for _ in range(mib):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
assert s.recv(4) == b"done"
print(mib / (time.monotonic() - t))
"""


# In sandbox A: RATE names under slow.test a second for SECONDS.
DNS_FLOOD = r"""
import os, socket, struct, sys, time
seconds, rate = float(sys.argv[1]), int(sys.argv[2])
server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
tag = os.urandom(4).hex()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
t0, sent = time.monotonic(), 0
while time.monotonic() - t0 < seconds:
    while sent < int((time.monotonic() - t0) * rate):
        q = struct.pack(">HHHHHH", sent & 0xFFFF, 0x0100, 1, 0, 0, 0)
        for label in (f"s{sent}-{tag}", "slow", "test"):
            q += bytes([len(label)]) + label.encode()
        try:
            s.sendto(q + b"\0" + struct.pack(">HH", 1, 1), (server, 53))
        except BlockingIOError:
            pass
        sent += 1
    try:
        while s.recv(4096):
            pass
    except BlockingIOError:
        time.sleep(0.002)
"""

# In sandbox B: N queries for peer.test, one after the other; each one's
# latency in ms (null: no answer in 1 s).
DNS_PROBE = r"""
import json, os, socket, struct, sys, time
server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
out = []
for i in range(int(sys.argv[1])):
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x04peer\x04test\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    t = time.monotonic()
    try:
        s.sendto(q, (server, 53))
        while s.recv(4096)[:2] != q[:2]:
            pass
        out.append(round((time.monotonic() - t) * 1000, 2))
    except OSError:
        out.append(None)
    s.close()
    time.sleep(0.05)
print(json.dumps(out))
"""


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def peer_down():
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", "sbxb0", check=False)


def peer_up():
    peer_down()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", "sbxb0", "type", "veth", "peer", "name", "eth0", "netns", NS)
    sh("ip", "addr", "add", "203.0.113.1/24", "dev", "sbxb0")
    sh("ip", "link", "set", "sbxb0", "up")
    for a in ("203.0.113.10/24", "203.0.113.53/24"):
        sh("ip", "-n", NS, "addr", "add", a, "dev", "eth0")
    sh("ip", "-n", NS, "link", "set", "eth0", "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "route", "add", "default", "via", "203.0.113.1")
    dns = subprocess.Popen(["ip", "netns", "exec", NS, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                            "--bind-interfaces", "--listen-address=203.0.113.53", "--pid-file=",
                            "--address=/peer.test/203.0.113.10", "--server=/slow.test/203.0.113.10#5353",
                            "--dns-forward-max=20000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = subprocess.Popen(["ip", "netns", "exec", NS, "/usr/bin/python3", "-c", SINK],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sink.stdout.readline().strip() == "ready"
    return [dns, sink]


def dns_fairness(url, http):
    """B's DNS latency (ms), quiet and under A's flood of slow names."""
    sids = []
    try:
        for _ in range(2):
            r = http.post(url + "/sandboxes", json={"templateID": "base", "timeout": 120}, timeout=60)
            r.raise_for_status()
            sids.append(r.json()["sandboxID"])
        a, b = sids

        def run(sid, code, *args):
            r = http.post(url + f"/sandboxes/{sid}/processes", timeout=120,
                          json={"cmd": "python3", "args": ["-c", code, *map(str, args)]})
            return r.json()

        def stats(xs):
            got = sorted(x for x in xs if x is not None)
            return {"p50_ms": got[len(got) // 2] if got else None, "max_ms": got[-1] if got else None,
                    "unanswered": len(xs) - len(got)}
        quiet = json.loads(run(b, DNS_PROBE, 10)["stdout"])
        flood = threading.Thread(target=run, args=(a, DNS_FLOOD, 15, 600))
        flood.start()
        time.sleep(2)
        busy = json.loads(run(b, DNS_PROBE, 10)["stdout"])
        flood.join()
        return {"b_quiet": stats(quiet), "b_under_a_flood": stats(busy)}
    except (requests.RequestException, ValueError, KeyError) as e:
        print(f"bench_net: dns fairness: {e}", file=sys.stderr)
        return None
    finally:
        for sid in sids:
            http.delete(url + f"/sandboxes/{sid}", timeout=60)


def main():
    url, key = sys.argv[1], sys.argv[2]
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + key
    procs = peer_up()
    out, dns = {}, None
    try:
        time.sleep(0.3)
        for name, body, port in (("direct_mib_per_s", {}, 9000),
                                 ("filtered_mib_per_s", {"network": {"allowOut": ["peer.test"],
                                                                     "denyOut": ["0.0.0.0/0"]}}, 80)):
            r = http.post(url + "/sandboxes", json=dict(templateID="base", timeout=120, **body), timeout=60)
            r.raise_for_status()
            sid = r.json()["sandboxID"]
            try:
                host = "peer.test" if port == 80 else "203.0.113.10"
                r = http.post(url + f"/sandboxes/{sid}/processes", timeout=120,
                              json={"cmd": "python3", "args": ["-c", SENDER, host, str(port), str(MIB)]})
                res = r.json()
                if res.get("exitCode") != 0:
                    out[name] = None
                    print(f"bench_net: {name}: {res.get('stderr', '')[-300:]}", file=sys.stderr)
                else:
                    out[name] = round(float(res["stdout"].strip()), 1)
            finally:
                http.delete(url + f"/sandboxes/{sid}", timeout=60)
        dns = dns_fairness(url, http)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        peer_down()
    print(json.dumps({"network_throughput": dict(out, mib_sent=MIB), "dns_latency_under_flood": dns}, indent=2))


if __name__ == "__main__":
    main()
