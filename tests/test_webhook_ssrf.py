"""End-to-end tests of the outbound guard on webhooks (src/service/outbound.c):
a tenant's webhook URL must not reach this host's loopback services, the
private networks around it or a cloud metadata service, however the
address is written, whatever its name resolves to, and even when the name
resolves elsewhere between the check and the connect (DNS rebinding).

Two daemons:

  * `guarded`, with nothing opened: every literal form of a denied address
    is refused at registration (400), while a listener this test holds on
    127.0.0.1 and [::1] sees no connection at all.

  * `resolving`, started with `--outbound-allow 127.0.0.1/32` in a mount
    namespace of its own whose /etc/hosts and /etc/resolv.conf are this
    test's: names come from that hosts file and from a DNS server this test
    runs on 127.0.83.1:53 (scripted answers, rebinding included).  The
    opened address gets its deliveries, written in any numeric form; names
    that resolve to a denied address (127.0.0.2, ::1, the metadata
    address), or to an opened and a denied one, are refused at delivery
    with "refused" in the delivery log and the detail only in the daemon's
    log; a name that first resolves to the opened address and then to a
    denied one is delivered to the address that was checked.

No packet leaves this host: the only peers are listeners on loopback and
the DNS server above.
"""
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
import requests

import conftest
from conftest import SBXD, Sbxd

SCALE_ENV = "SBXD_WEBHOOK_RETRY_SCALE"
DNS_ADDR = "127.0.83.1"
CREATED = ["sandbox.lifecycle.created"]


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Listener:
    """A TCP listener on (ADDR, PORT) that records every connection and
    every HTTP request on it and answers 200."""

    def __init__(self, addr, port=0):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = []  # (request line, Host header)
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            head = data.split(b"\r\n\r\n")[0].decode("latin-1")
            lines = head.split("\r\n")
            hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            n = int(hdrs.get("content-length", "0"))
            body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
            while len(body) < n:
                chunk = c.recv(4096)
                if not chunk:
                    break
                body += chunk
            with self.lock:
                self.requests.append((lines[0], hdrs.get("host")))
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def seen(self):
        with self.lock:
            return self.connections, list(self.requests)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def listeners_on_one_port(addrs):
    """One Listener per address in ADDRS, all on the same free port."""
    for _ in range(50):
        first = Listener(addrs[0])
        out = [first]
        try:
            for a in addrs[1:]:
                out.append(Listener(a, first.port))
            return out
        except OSError:
            for x in out:
                x.close()
    raise RuntimeError("no port free on all of " + ", ".join(addrs))


def register(d, url, events=CREATED, **fields):
    return d.req("POST", "/events/webhooks", json=dict({"name": "ssrf", "url": url, "events": events}, **fields))


def deliveries(d, wid):
    r = d.req("GET", f"/events/webhooks/{wid}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------- the DNS server

def dns_name(msg, i):
    labels = []
    while msg[i]:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels).lower(), i + 1


class DnsServer:
    """Answers A queries from ANSWERS: name -> list of address lists; the
    Nth query of a name gets the Nth list (the last one repeats).  AAAA
    and unknown names get an empty NOERROR.  Every query is recorded."""

    def __init__(self, addr, answers):
        self.answers = answers
        self.queries = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 53))
        self.sock.settimeout(0.1)
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def count(self, name, qtype=1):
        with self.lock:
            return sum(1 for q in self.queries if q == (name, qtype))

    def loop(self):
        while not self.stop:
            try:
                msg, peer = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            try:
                qid, = struct.unpack("!H", msg[:2])
                name, i = dns_name(msg, 12)
                qtype, qclass = struct.unpack("!HH", msg[i:i + 4])
            except (struct.error, IndexError):
                continue
            question = msg[12:i + 4]
            with self.lock:
                n = sum(1 for q in self.queries if q == (name, qtype))
                self.queries.append((name, qtype))
            addrs = []
            if qtype == 1 and name in self.answers:
                lists = self.answers[name]
                addrs = lists[min(n, len(lists) - 1)]
            flags = 0x8180  # a response, recursion desired and available, NOERROR
            out = struct.pack("!HHHHHH", qid, flags, 1, len(addrs), 0, 0) + question
            for a in addrs:
                out += struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(a)
            self.sock.sendto(out, peer)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


# ------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A daemon with nothing opened to outbound requests."""
    d = Sbxd(str(tmp_path_factory.mktemp("guarded") / "state"))
    d.start(env=dict(os.environ, **{SCALE_ENV: "0.01"}))
    yield d
    d.stop()


@pytest.fixture
def loopback():
    """Listeners on one port of 127.0.0.1 and [::1]."""
    ls = listeners_on_one_port(["127.0.0.1", "::1"])
    yield ls
    for x in ls:
        x.close()


# --------------------------------------------------------------- tests

def test_outbound_allow_flag_is_checked(tmp_path):
    for bad in ("bogus", "10.0.0.0/33", "0x7f000001", "fe80::/129", "127.1"):
        p = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:1",
                            "--outbound-allow", bad], capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (bad, p)
        assert f"invalid --outbound-allow {bad}" in p.stderr, p.stderr


def test_denied_literal_urls_are_refused_at_registration(guarded, loopback):
    port = loopback[0].port
    cases = [
        (f"http://127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://localhost:{port}/", "localhost is a loopback name"),
        (f"http://LOCALHOST.:{port}/", "is a loopback name"),
        (f"http://hooks.localhost:{port}/", "is a loopback name"),
        (f"http://[::ffff:127.0.0.1]:{port}/", "::ffff:127.0.0.1 is a loopback address"),
        (f"http://[0:0:0:0:0:ffff:7f00:1]:{port}/", "is a loopback address"),
        (f"http://0x7f000001:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://2130706433:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://0177.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://127.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://%31%32%37.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://example.com@127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"https://user:pw@127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        (f"http://[::1]:{port}/", "::1 is a loopback address"),
        (f"http://[::]:{port}/", ":: is the unspecified address"),
        (f"http://0:{port}/", "0.0.0.0 is a \"this network\" address"),
        (f"http://[::127.0.0.1]:{port}/", "IPv4-compatible"),
        (f"http://[64:ff9b::7f00:1]:{port}/", "NAT64 form"),
        (f"http://[2002:7f00:1::1]:{port}/", "6to4 form"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata address"),
        ("http://[fd00:ec2::254]/", "the cloud metadata address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://192.168.1.1:8080/", "private address"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fe80::1%25lo]/", "zone ids are not allowed"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://\u2460\u2461\u2466.0.0.1/", "ASCII"),
        ("gopher://example.com/", "url must be an http or https URL"),
        ("file:///etc/passwd", "url must be an http or https URL"),
        ("http://example.com:0/", "port 0 out of range"),
    ]
    before = guarded.req("GET", "/events/webhooks").json()
    for url, msg in cases:
        r = register(guarded, url)
        assert r.status_code == 400, (url, r.status_code, r.text)
        body = r.json()
        assert body["code"] == 400 and msg in body["message"], (url, body)
    # PATCH to such a URL is refused too, and changes nothing
    r = register(guarded, "http://hooks.example/ok", enabled=False)
    assert r.status_code == 201, r.text
    w = r.json()
    try:
        for url, msg in cases[:8]:
            r = guarded.req("PATCH", f"/events/webhooks/{w['id']}", json={"url": url})
            assert r.status_code == 400 and msg in r.json()["message"], (url, r.text)
        assert guarded.req("GET", f"/events/webhooks/{w['id']}").json() == w
    finally:
        assert guarded.req("DELETE", f"/events/webhooks/{w['id']}").status_code == 204
    assert guarded.req("GET", "/events/webhooks").json() == before
    time.sleep(0.3)
    for x in loopback:
        assert x.seen() == (0, []), x.seen()


def test_webhook_messages_name_the_reason(guarded):
    r = register(guarded, "http://0x7f000001:9/")
    assert r.json()["message"] == "url: 127.0.0.1 is a loopback address: refused", r.text


# ---------------------------------------------- delivery-time refusals

def ns_wrapper(tmp_path, hosts, resolv):
    """A command that runs sbxd in a mount namespace of its own whose
    /etc/hosts and /etc/resolv.conf are HOSTS and RESOLV."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    w = tmp_path / "sbxd-ns"
    w.write_text("#!/bin/sh\n"
                 f"exec unshare --mount --propagation private sh -c '"
                 f"mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && "
                 f"exec {SBXD} \"$@\"' sbxd \"$@\"\n")
    w.chmod(0o755)
    return str(w)


def test_names_are_checked_at_delivery_and_pinned(tmp_path, monkeypatch):
    # 127.0.0.1 is opened by the operator; 127.0.0.2 and ::1 stay denied
    good, bad, bad6 = listeners_on_one_port(["127.0.0.1", "127.0.0.2", "::1"])
    port = good.port
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        dns = DnsServer(DNS_ADDR, {
            "mixed.sbxt.test": [["127.0.0.1", "127.0.0.2"]],
            "rebind.sbxt.test": [["127.0.0.1"], ["127.0.0.2"]],
            "opened.sbxt.test": [["127.0.0.1"]],
        })
    except OSError as e:
        pytest.skip(f"cannot serve DNS on {DNS_ADDR}:53: {e}")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n"
                     "127.0.0.2 loop.sbxt.test\n"
                     "::1 loop6.sbxt.test\n"
                     "169.254.169.254 meta.sbxt.test\n"
                     "10.1.2.3 private.sbxt.test\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDR}\noptions timeout:2 attempts:2\n")
    monkeypatch.setattr(conftest, "SBXD", ns_wrapper(tmp_path, hosts, resolv))
    d = Sbxd(str(tmp_path / "state"))
    d.start(env=dict(os.environ, **{SCALE_ENV: "0.01"}), args=["--outbound-allow", "127.0.0.1/32"])
    monkeypatch.undo()
    sid = None
    try:
        # what the operator opened is reached, however it is written
        delivered = {
            "dotted": f"http://127.0.0.1:{port}/dotted",
            "hex": f"http://0x7f000001:{port}/hex",
            "decimal": f"http://2130706433:{port}/decimal",
            "short": f"http://127.1:{port}/short",
            "mapped": f"http://[::ffff:127.0.0.1]:{port}/mapped",
            "userinfo": f"http://example.com@127.0.0.1:{port}/userinfo",
            "name": f"http://opened.sbxt.test:{port}/name",
            "rebind": f"http://rebind.sbxt.test:{port}/rebind",
        }
        refused = {
            "loop": f"http://loop.sbxt.test:{port}/loop",
            "loop6": f"http://loop6.sbxt.test:{port}/loop6",
            "meta": "http://meta.sbxt.test/latest/meta-data/",
            "private": "http://private.sbxt.test/",
            "mixed": f"http://mixed.sbxt.test:{port}/mixed",
            "unresolved": "http://nowhere.sbxt.test/",
        }
        # still refused at registration although 127.0.0.1 is open
        for url in (f"http://127.0.0.2:{port}/", f"http://[::1]:{port}/", f"http://localhost:{port}/"):
            assert register(d, url).status_code == 400, url
        hooks = {}
        for name, url in list(delivered.items()) + list(refused.items()):
            r = register(d, url)
            assert r.status_code == 201, (url, r.text)
            hooks[name] = r.json()["id"]
        r = register(d, f"http://127.0.0.1:{closed_port}/closed")
        assert r.status_code == 201, r.text
        hooks["closed"] = r.json()["id"]

        sid = d.create()
        # (a request that wrongly reaches a denied listener counts too, so
        # that the assertions below say where it went)
        wait_for(lambda: sum(len(x.seen()[1]) for x in (good, bad, bad6)) >= len(delivered), 30,
                 f"{len(delivered)} deliveries")
        # every other webhook has made at least two attempts (or, wrongly,
        # delivered: the listeners then tell)
        def tried(n):
            dl = deliveries(d, hooks[n])
            return dl and (dl[0]["attempts"] >= 2 or dl[0]["state"] != "pending")
        wait_for(lambda: all(tried(n) for n in list(refused) + ["closed"]), 30,
                 "two attempts of each refused delivery")
        time.sleep(0.5)

        got = good.seen()[1]
        paths = sorted(line.split()[1] for line, _ in got)
        assert paths == sorted("/" + n for n in delivered), got
        hosts_seen = {line.split()[1]: host for line, host in got}
        assert hosts_seen["/name"] == f"opened.sbxt.test:{port}"
        assert hosts_seen["/rebind"] == f"rebind.sbxt.test:{port}"  # Host kept, address pinned
        assert hosts_seen["/hex"] == f"127.0.0.1:{port}"
        for n in delivered:
            dl = deliveries(d, hooks[n])
            assert [(x["state"], x["lastStatus"]) for x in dl] == [("delivered", 200)], (n, dl)
        # the rebinding name was asked once per attempt, and its second
        # answer (127.0.0.2) was never used: the POST went to the address
        # that was checked
        assert dns.count("rebind.sbxt.test") >= 1
        assert bad.seen() == (0, []), bad.seen()
        assert bad6.seen() == (0, []), bad6.seen()

        for n in refused:
            dl = deliveries(d, hooks[n])
            assert len(dl) == 1, (n, dl)
            x = dl[0]
            assert x["state"] == "pending" and x["lastStatus"] == 0 and x["lastError"] == "refused", (n, x)
        # an opened receiver that does not answer: no detail for the tenant
        x = deliveries(d, hooks["closed"])[0]
        assert x["lastStatus"] == 0 and x["lastError"] == "no answer", x
        # nothing of the refusals' detail reaches the tenant ...
        everything = " ".join(d.req("GET", f"/events/webhooks/{w}/deliveries").text for w in hooks.values())
        for secret in ("127.0.0.2", "::1", "169.254", "10.1.2.3", "loopback", "private", "Connection refused",
                       "Failed to connect"):
            assert secret not in everything, secret
        # ... and all of it is in the daemon's log
        logs = d.logs()
        for line in ("loop.sbxt.test resolves to 127.0.0.2, a loopback address: refused",
                     "loop6.sbxt.test resolves to ::1, a loopback address: refused",
                     "meta.sbxt.test resolves to 169.254.169.254, the cloud metadata address: refused",
                     "private.sbxt.test resolves to 10.1.2.3, a private address: refused",
                     "mixed.sbxt.test resolves to 127.0.0.2, a loopback address: refused",
                     "cannot resolve nowhere.sbxt.test"):
            assert line in logs, (line, logs[-4000:])
        assert re.search(r"Failed to connect to 127\.0\.0\.1 port %d" % closed_port, logs), logs[-4000:]
    finally:
        try:
            if sid:
                d.delete(sid)
        finally:
            d.stop()
            dns.close()
            closed.close()
            for x in (good, bad, bad6):
                x.close()
