"""Test peers for the network tests: a small "internet", a "private
network" with a cloud metadata address, and services on the host itself.

    from netpeers import peers          # the session fixture

Peers.up() builds, from the host's root network namespace:

  netns sbxt-inet, "the internet" (veth sbxt-inet0 = 198.51.100.1/24 and
  2001:db8:100::1/64 on the host, eth0 inside):
    198.51.100.10, .11    HTTP :80 -> "host=<Host> addr=<local addr>\\n"
                          HTTPS :443 -> "sni=<SNI> host=<Host> addr=<local addr>\\n",
                              with a certificate for allowed.test,
                              *.allowed.test, other.test and doh.test from
                              the peers' own test CA (ca_file); for the
                              SNI untrusted.test, a self-signed one
    [2001:db8:100::10]    HTTP :80 as above
    198.51.100.10:8080    TCP, "tcp ok\\n" then close
    198.51.100.10:853     TCP, "dot ok\\n" then close (a DNS-over-TLS stand-in)
    GET /headers          as above, then every request header, "Name: value\\n"
    198.51.100.10:1080    a SOCKS5 proxy (RFC 1928; no authentication, or
                          user "sbxt" password "sbxt-pass", RFC 1929) that
                          resolves names from RECORDS and logs each CONNECT
                          (socks_seen)
    198.51.100.10:443/udp and :9999/udp
                          "udp ok" back, and every payload is logged
                          (udp_seen) so a test can tell a datagram never came
    198.51.100.53:53      dnsmasq, the upstream resolver (RECORDS below)
    198.51.100.54:53      dnsmasq, "another resolver" (OTHER_RECORDS)

  netns sbxt-priv, private networks and metadata (veth sbxt-priv0 =
  10.77.0.1/24 on the host; inside 10.77.0.10/24, 192.168.77.10/24,
  172.16.77.10/24, 100.64.77.10/24, 169.254.169.254/16, reached from the
  host through routes via 10.77.0.10): HTTP :80 -> "private ok\\n".

  on the host: HTTP on 0.0.0.0:<host_port> -> "host ok\\n", and on
  198.51.100.1:80 and 10.77.0.1:80 (the host's addresses on the peers'
  links) -> "host ok\\n".

Both namespaces route everything else back to the host, so a sandbox that
the daemon wrongly lets through gets its answer and the test fails.  The
peers need no forwarding on the host (net.ipv4.ip_forward is left as it
is; the daemon turns it on for its sandboxes).
up() cleans what a crashed run left, then checks every peer from the
host, so a test that expects "unreachable" cannot pass because a peer is
down.  Nothing here sends a packet anywhere but loopback and these two
namespaces: every check first asks the kernel which link it would use.
"""
import http.client
import http.server
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

INET_NS, PRIV_NS = "sbxt-inet", "sbxt-priv"
INET_HOST_IF, PRIV_HOST_IF = "sbxt-inet0", "sbxt-priv0"
HOST_INET = "198.51.100.1"          # the host's address on the "internet" link
HOST_INET6 = "2001:db8:100::1"
HOST_PRIV = "10.77.0.1"             # the host's address on the private link
WEB1, WEB2 = "198.51.100.10", "198.51.100.11"
WEB6 = "2001:db8:100::10"
DNS1, DNS2 = "198.51.100.53", "198.51.100.54"
PRIVATE = ["10.77.0.10", "192.168.77.10", "172.16.77.10", "100.64.77.10", "169.254.169.254"]
PRIVATE_ROUTES = ["192.168.77.0/24", "172.16.77.0/24", "100.64.77.0/24", "169.254.169.254/32"]
UDP_PORTS = (443, 9999)
STATE = os.path.join(tempfile.gettempdir(), "sbxt-peers")

# name -> (A, AAAA) served by the upstream resolver; anything else NXDOMAIN
RECORDS = {
    "allowed.test": (WEB1, None),
    "api.allowed.test": (WEB1, None),
    "deep.api.allowed.test": (WEB1, None),
    "other.test": (WEB2, None),
    "rebind.allowed.test": ("10.77.0.10", None),     # an allowed name, a private address
    "hostaddr.allowed.test": (HOST_INET, None),      # an allowed name, the host's address
    "v6.allowed.test": (WEB1, WEB6),
    "doh.test": (WEB2, None),
    "untrusted.test": (WEB1, None),                  # HTTPS with a certificate no one trusts
}
# the other resolver answers differently, so its answer is recognisable
OTHER_RECORDS = {"allowed.test": (WEB2, None), "other.test": (WEB2, None)}


# The peers' servers, one script: `inet STATE` or `priv STATE`.
SERVERS = r'''
import http.server, os, socket, socketserver, ssl, sys, threading

mode, state = sys.argv[1], sys.argv[2]
lock = threading.Lock()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tls = None

    def server_bind(self):
        # not HTTPServer's: it looks the address up in DNS (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass                      # aborted handshakes and resets are normal here


class Server6(Server):
    address_family = socket.AF_INET6


class Handler(http.server.BaseHTTPRequestHandler):
    # keep-alive, like a real server: a connection can carry more requests
    protocol_version = "HTTP/1.1"
    timeout = 10

    def setup(self):
        if self.server.tls is not None:
            self.request.settimeout(10)
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def answer(self):
        # a request's body is read, so the next request on the connection is one
        if self.headers.get("Content-Length", "").isdigit():
            self.rfile.read(int(self.headers["Content-Length"]))
        addr = self.request.getsockname()[0]
        if mode == "priv":
            body = "private ok\n"
        else:
            body = f"host={self.headers.get('Host', '')} addr={addr}\n"
            if self.server.tls is not None:
                body = f"sni={getattr(self.request, 'sbxt_sni', None) or ''} " + body
            if self.path == "/headers":
                body += "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_OPTIONS = answer

    def log_message(self, *a):
        pass


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def tcp_banner(addr, port, text):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)

    def loop():
        while True:
            c, _ = s.accept()
            try:
                c.sendall(text)
            except OSError:
                pass
            c.close()
    threading.Thread(target=loop, daemon=True).start()


def udp_echo(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    log = os.path.join(state, "udp.log")

    def loop():
        while True:
            data, peer = s.recvfrom(65535)
            with lock, open(log, "a") as f:
                f.write(f"{port} {peer[0]} {data.hex()}\n")
            try:
                s.sendto(b"udp ok", peer)
            except OSError:
                pass
    threading.Thread(target=loop, daemon=True).start()


if mode == "inet":
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(os.path.join(state, "cert.pem"), os.path.join(state, "key.pem"))

    untrusted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    untrusted.load_cert_chain(os.path.join(state, "untrusted.pem"), os.path.join(state, "untrusted-key.pem"))

    def sni(sock, name, ctx):
        sock.sbxt_sni = name
        if name == "untrusted.test":
            sock.context = untrusted
    tls.sni_callback = sni
    for addr in ("198.51.100.10", "198.51.100.11"):
        serve(Server((addr, 80), Handler))
        s = Server((addr, 443), Handler)
        s.tls = tls
        serve(s)
    serve(Server6(("2001:db8:100::10", 80), Handler))
    tcp_banner("198.51.100.10", 8080, b"tcp ok\n")
    tcp_banner("198.51.100.10", 853, b"dot ok\n")
    for port in (443, 9999):
        udp_echo("198.51.100.10", port)
else:
    serve(Server(("0.0.0.0", 80), Handler))


def socks5(addr, port, names):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    log = os.path.join(state, "socks.log")

    def read(c, n):
        data = b""
        while len(data) < n:
            more = c.recv(n - len(data))
            if not more:
                raise OSError("closed")
            data += more
        return data

    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def serve(c):
        try:
            c.settimeout(10)
            ver, n = read(c, 2)
            methods = read(c, n)
            user = ""
            if 2 in methods:
                c.sendall(b"\x05\x02")
                read(c, 1)
                user = read(c, read(c, 1)[0]).decode()
                password = read(c, read(c, 1)[0]).decode()
                ok = (user, password) == ("sbxt", "sbxt-pass")
                c.sendall(b"\x01\x00" if ok else b"\x01\x01")
                if not ok:
                    return
            elif 0 in methods:
                c.sendall(b"\x05\x00")
            else:
                c.sendall(b"\x05\xff")
                return
            ver, cmd, _, atyp = read(c, 4)
            if atyp == 1:
                dst = socket.inet_ntoa(read(c, 4))
                ip = dst
            elif atyp == 3:
                dst = read(c, read(c, 1)[0]).decode()
                ip = names.get(dst)
            else:
                return
            dport = int.from_bytes(read(c, 2), "big")
            with lock, open(log, "a") as f:
                f.write(f"user={user} atyp={atyp} dst={dst}:{dport}\n")
            if ip is None:
                c.sendall(b"\x05\x04\x00\x01" + bytes(6))
                return
            u = socket.create_connection((ip, dport), timeout=5)
            c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(addr) + port.to_bytes(2, "big"))
            c.settimeout(None)
            u.settimeout(None)
            threading.Thread(target=pipe, args=(u, c), daemon=True).start()
            pipe(c, u)
        except (OSError, ValueError):
            c.close()

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


if mode == "inet":
    socks5("198.51.100.10", 1080, NAMES)

open(os.path.join(state, mode + ".ready"), "w").close()
threading.Event().wait()
'''
# the names the SOCKS5 proxy resolves: the upstream resolver's
SERVERS = SERVERS.replace("\nmode, state = sys.argv[1], sys.argv[2]\n",
                          "\nmode, state = sys.argv[1], sys.argv[2]\nNAMES = "
                          + repr({k: a for k, (a, _) in RECORDS.items()}) + "\n")


# A tiny DNS client; Peers uses it on the host and the tests run the same
# code inside sandboxes (it is plain standard-library Python).
DNS_CODE = r'''
import random as _random, socket as _socket, struct as _struct

QTYPES = {"A": 1, "AAAA": 28}


def dns_build(name, qtype="A", qid=None):
    qid = _random.randrange(65536) if qid is None else qid
    q = _struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + _struct.pack(">HH", QTYPES[qtype], 1)


def _skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def dns_parse(msg):
    """(rcode, [addresses of the A and AAAA answers])"""
    _, flags, qd, an, _, _ = _struct.unpack(">HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    out = []
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, _, _, rdlen = _struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        rdata = msg[i:i + rdlen]
        i += rdlen
        if rtype == 1 and rdlen == 4:
            out.append(_socket.inet_ntop(_socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            out.append(_socket.inet_ntop(_socket.AF_INET6, rdata))
    return flags & 0xF, out


def dns_query(server, name, qtype="A", tcp=False, timeout=3.0, port=53):
    """(rcode, addresses); raises OSError (socket.timeout included) when no
    answer comes."""
    q = dns_build(name, qtype)
    if tcp:
        with _socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(_struct.pack(">H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + _struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("connection closed")
                buf += chunk
            return dns_parse(buf[2:])
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == q[:2]:
                return dns_parse(data)
'''
_dns = {}
exec(DNS_CODE, _dns)
dns_build, dns_parse, dns_query = _dns["dns_build"], _dns["dns_parse"], _dns["dns_query"]


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def route_dev(addr):
    """The link the host would use to reach ADDR ('lo' for its own)."""
    out = sh("ip", "route", "get", addr, check=False).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else None


class HostHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"host ok\n")

    do_POST = do_HEAD = do_GET

    def log_message(self, *a):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # not HTTPServer's: it would look the address up in DNS (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass


class Peers:
    inet_ns, priv_ns = INET_NS, PRIV_NS
    host_inet, host_priv = HOST_INET, HOST_PRIV
    web1, web2, web6 = WEB1, WEB2, WEB6
    dns1, dns2 = DNS1, DNS2
    private = PRIVATE

    def __init__(self, state=STATE):
        self.state = state
        self.procs = []
        self.host_servers = []
        self.host_port = None

    # ------------------------------------------------------------ up/down
    def up(self):
        for tool, package in (("ip", "iproute2"), ("dnsmasq", "dnsmasq-base"), ("openssl", "openssl")):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                raise RuntimeError(f"the network test peers need {tool} (Debian package {package})")
        self.down()
        os.makedirs(self.state)
        try:
            self._links()
            self._cert()
            self._servers()
            self._host_servers()
            self.check()
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Stop everything and remove the namespaces; also what a crashed
        run left (the processes still in the namespaces)."""
        for srv in self.host_servers:
            srv.shutdown()
            srv.server_close()
        self.host_servers = []
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.procs = []
        for ns in (INET_NS, PRIV_NS):
            if os.path.exists(f"/run/netns/{ns}"):
                pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "del", ns, check=False)
        # the veth pairs go with their inner ends; a half-made pair may not
        for link in (INET_HOST_IF, PRIV_HOST_IF, "sbxt-inet1", "sbxt-priv1"):
            if os.path.exists(f"/sys/class/net/{link}"):
                sh("ip", "link", "del", link, check=False)
        shutil.rmtree(self.state, ignore_errors=True)

    def _links(self):
        ip = lambda *a: sh("ip", *a)                           # noqa: E731
        inet = lambda *a: sh("ip", "-n", INET_NS, *a)          # noqa: E731
        priv = lambda *a: sh("ip", "-n", PRIV_NS, *a)          # noqa: E731
        for ns, host_if in ((INET_NS, INET_HOST_IF), (PRIV_NS, PRIV_HOST_IF)):
            ip("netns", "add", ns)
            inner = host_if[:-1] + "1"
            ip("link", "add", host_if, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            sh("ip", "-n", ns, "link", "set", inner, "name", "eth0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        # the internet
        ip("addr", "add", f"{HOST_INET}/24", "dev", INET_HOST_IF)
        ip("addr", "add", f"{HOST_INET6}/64", "dev", INET_HOST_IF, "nodad")
        ip("link", "set", INET_HOST_IF, "up")
        for a in (WEB1, WEB2, DNS1, DNS2):
            inet("addr", "add", f"{a}/24", "dev", "eth0")
        inet("addr", "add", f"{WEB6}/64", "dev", "eth0", "nodad")
        inet("link", "set", "eth0", "up")
        inet("route", "add", "default", "via", HOST_INET)
        inet("-6", "route", "add", "default", "via", HOST_INET6)
        # the private networks and the metadata address
        ip("addr", "add", f"{HOST_PRIV}/24", "dev", PRIV_HOST_IF)
        ip("link", "set", PRIV_HOST_IF, "up")
        for a in ("10.77.0.10/24", "192.168.77.10/24", "172.16.77.10/24", "100.64.77.10/24",
                  "169.254.169.254/16"):
            priv("addr", "add", a, "dev", "eth0")
        priv("link", "set", "eth0", "up")
        priv("route", "add", "default", "via", HOST_PRIV)
        for net in PRIVATE_ROUTES:
            ip("route", "add", net, "via", "10.77.0.10", "dev", PRIV_HOST_IF)

    @property
    def ca_file(self):
        """The test CA that issued the peers' HTTPS certificate (PEM)."""
        return self.path("ca.pem")

    def _cert(self):
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        sh("openssl", "req", "-x509", *ec, "-keyout", self.path("ca-key.pem"), "-out", self.ca_file, "-days", "7",
           "-subj", "/CN=sbxt test CA")
        sh("openssl", "req", "-new", *ec, "-keyout", self.path("key.pem"), "-out", self.path("cert.csr"),
           "-subj", "/CN=allowed.test")
        with open(self.path("cert.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    "subjectAltName=DNS:allowed.test,DNS:*.allowed.test,DNS:other.test,DNS:doh.test\n")
        sh("openssl", "x509", "-req", "-in", self.path("cert.csr"), "-CA", self.ca_file,
           "-CAkey", self.path("ca-key.pem"), "-set_serial", "1", "-days", "7", "-extfile", self.path("cert.ext"),
           "-out", self.path("cert.pem"))
        sh("openssl", "req", "-x509", *ec, "-keyout", self.path("untrusted-key.pem"),
           "-out", self.path("untrusted.pem"), "-days", "7", "-subj", "/CN=untrusted.test",
           "-addext", "subjectAltName=DNS:untrusted.test")

    def _spawn(self, ns, name, argv):
        log = open(self.path(name + ".log"), "wb")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def _dnsmasq(self, name, addr, records):
        dnsmasq = shutil.which("dnsmasq", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        argv = [dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--bind-interfaces", f"--listen-address={addr}", "--except-interface=lo", "--port=53",
                "--local=/#/", "--log-queries", "--log-facility=-", "--cache-size=0",
                f"--pid-file={self.path(name + '.pid')}"]
        for host, (a, aaaa) in records.items():
            argv.append(f"--host-record={host},{a}" + (f",{aaaa}" if aaaa else ""))
        return self._spawn(INET_NS, name, argv)

    def _servers(self):
        with open(self.path("servers.py"), "w") as f:
            f.write(SERVERS)
        for mode, ns in (("inet", INET_NS), ("priv", PRIV_NS)):
            self._spawn(ns, mode, [sys.executable, self.path("servers.py"), mode, self.state])
        self._dnsmasq("dns1", DNS1, RECORDS)
        self._dnsmasq("dns2", DNS2, OTHER_RECORDS)
        deadline = time.time() + 15
        while not all(os.path.exists(self.path(m + ".ready")) for m in ("inet", "priv")):
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a peer exited: {p.args}: {self.logs()}")
            if time.time() > deadline:
                raise RuntimeError(f"peers did not start: {self.logs()}")
            time.sleep(0.05)

    def _host_servers(self):
        srv = QuietServer(("0.0.0.0", 0), HostHandler)
        self.host_port = srv.server_address[1]
        self.host_servers.append(srv)
        for addr in (HOST_INET, HOST_PRIV):
            self.host_servers.append(QuietServer((addr, 80), HostHandler))
        for s in self.host_servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    # ------------------------------------------------------------ checks
    def check(self):
        """Every peer answers the host (after checking that each address is
        on one of our links, so nothing leaves the machine)."""
        for addr in [WEB1, WEB2, WEB6, DNS1, DNS2]:
            assert route_dev(addr) == INET_HOST_IF, (addr, route_dev(addr))
        for addr in PRIVATE:
            assert route_dev(addr) == PRIV_HOST_IF, (addr, route_dev(addr))
        for addr in (WEB1, WEB2):
            assert self.http_host(addr) == f"host={addr} addr={addr}\n"
            assert self.http_host(addr, host="other.test") == f"host=other.test addr={addr}\n"
            assert self.https_host(addr, "allowed.test") == f"sni=allowed.test host=allowed.test addr={addr}\n"
        assert self.http_host(WEB6) == f"host=[{WEB6}] addr={WEB6}\n"
        assert self.tcp_host(WEB1, 8080) == b"tcp ok\n"
        assert self.tcp_host(WEB1, 853) == b"dot ok\n"
        for port in UDP_PORTS:
            payload = self.token("selftest")
            assert self.udp_host(WEB1, port, payload) == b"udp ok"
            assert self.udp_seen(payload)
        assert not self.udp_seen(self.token("never-sent"))
        for name, (a, aaaa) in RECORDS.items():
            assert self.dns_query_host(name) == (0, [a]), name
            assert self.dns_query_host(name, "AAAA") == (0, [aaaa] if aaaa else []), name
        assert self.dns_query_host("allowed.test", tcp=True) == (0, [WEB1])
        assert self.dns_query_host("nothing.test")[0] == 3                       # NXDOMAIN
        assert self.dns_query_host("allowed.test", server=DNS2) == (0, [WEB2])
        assert self.dns_query_host("other.test", server=DNS2) == (0, [WEB2])
        probe = self.token("probe") + ".test"
        self.dns_query_host(probe, server=DNS2)
        assert self.dns_seen(probe, server=DNS2) and not self.dns_seen(probe, server=DNS1)
        for addr in PRIVATE:
            assert self.http_host(addr) == "private ok\n", addr
        for addr in ("127.0.0.1", HOST_INET, HOST_PRIV):
            assert self.http_host(addr, port=self.host_port) == "host ok\n", addr
            if addr != "127.0.0.1":
                assert self.http_host(addr, port=80) == "host ok\n", addr

    # ------------------------------------------------------------ helpers
    def path(self, name):
        return os.path.join(self.state, name)

    def logs(self):
        out = []
        for name in ("inet", "priv", "dns1", "dns2"):
            try:
                with open(self.path(name + ".log")) as f:
                    out.append(f"--- {name}\n{f.read()[-2000:]}")
            except OSError:
                pass
        return "\n".join(out)

    @staticmethod
    def token(prefix="t"):
        """A payload or name no other test uses."""
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    def http_host(self, addr, host=None, port=80, path="/"):
        """GET from the host; the body."""
        c = http.client.HTTPConnection(addr, port, timeout=5)
        try:
            c.request("GET", path, headers={"Host": host} if host else {})
            return c.getresponse().read().decode()
        finally:
            c.close()

    def https_host(self, addr, sni, host=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((addr, 443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(f"GET / HTTP/1.0\r\nHost: {host or sni}\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode()

    def tcp_host(self, addr, port):
        with socket.create_connection((addr, port), timeout=5) as s:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data

    def udp_host(self, addr, port, payload):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(payload.encode() if isinstance(payload, str) else payload, (addr, port))
            return s.recvfrom(65535)[0]

    def udp_seen(self, payload, port=None):
        """Whether the UDP peer ever received PAYLOAD (on PORT, or any)."""
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            with open(self.path("udp.log")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False
        return any(data.hex() in line.split()[2] and (port is None or line.split()[0] == str(port))
                   for line in lines)

    def socks_seen(self, text):
        """Lines of the SOCKS5 proxy's log holding TEXT."""
        try:
            with open(self.path("socks.log")) as f:
                return [line.strip() for line in f if text in line]
        except FileNotFoundError:
            return []

    def dns_query_host(self, name, qtype="A", server=DNS1, tcp=False):
        """(rcode, addresses) from one of the resolvers, asked by the host."""
        assert route_dev(server) == INET_HOST_IF, server
        return dns_query(server, name, qtype, tcp=tcp, timeout=5)

    def dns_seen(self, name, server=DNS1):
        """Whether the resolver at SERVER was ever asked about NAME."""
        log = self.path("dns1.log" if server == DNS1 else "dns2.log")
        with open(log) as f:
            return any("query[" in line and f" {name} from " in line for line in f)


@pytest.fixture(scope="session")
def peers():
    p = Peers().up()
    yield p
    p.down()
