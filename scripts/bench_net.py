#!/usr/bin/env python3
"""bench_net.py URL KEY: throughput from a sandbox to a peer, as JSON.

The peer is a network namespace this script makes (sbxb-peer, 203.0.113.10
behind a veth from the host, with a DNS server for peer.test) and removes
at the end; no traffic goes anywhere else.  The running sbxd at URL must use
203.0.113.53 as its DNS upstream.  It measures 512 MiB sent over TCP:
  direct   internet mode, forwarded and masqueraded by the kernel
  filtered allowOut ["peer.test"] + denyOut ["0.0.0.0/0"], port 80, through
           the daemon's HTTP/TLS filter
"""
import json
import subprocess
import sys
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
                            "--address=/peer.test/203.0.113.10"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = subprocess.Popen(["ip", "netns", "exec", NS, "/usr/bin/python3", "-c", SINK],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sink.stdout.readline().strip() == "ready"
    return [dns, sink]


def main():
    url, key = sys.argv[1], sys.argv[2]
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + key
    procs = peer_up()
    out = {}
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
    finally:
        for p in procs:
            p.kill()
            p.wait()
        peer_down()
    print(json.dumps({"network_throughput": dict(out, mib_sent=MIB)}, indent=2))


if __name__ == "__main__":
    main()
