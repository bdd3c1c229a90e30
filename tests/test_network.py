"""End-to-end tests of sandbox networking: the modes (internet, none), the
egress rules (allowOut / denyOut: addresses, CIDR blocks, names and
wildcard names), what no sandbox may ever reach (the host, private
networks, cloud metadata, other sandboxes, IPv6), the tricks that try to
get past domain rules, changing the rules of a running sandbox, the API's
network fields, and cleaning up on delete.

The peers (tests/netpeers.py) are real servers in two network namespaces
on this machine: an "internet" (198.51.100.0/24 with a resolver at
198.51.100.53) and a "private network" (10.77.0.10, 192.168.77.10, ...,
169.254.169.254), plus servers on the host itself.  The daemon forwards
the sandboxes' DNS to 198.51.100.53 (--dns-upstream), so every name used
here resolves only in this test world.

A negative check never relies on a connection error alone: it asserts
that the peer's own answer (which names the peer) never came back, so a
filter that accepts the connection and then closes it passes, and a
leak fails.  Timeouts inside sandboxes are short (3 s).
"""
import ipaddress
import json
import re
import subprocess
import time

import pytest

from conftest import ROOT, SBXD, Sbxd
from netpeers import DNS_CODE  # the peers fixture comes from conftest.py

UPSTREAM = "198.51.100.53"
WEB1, WEB2, WEB6 = "198.51.100.10", "198.51.100.11", "2001:db8:100::10"
HOST_INET, HOST_PRIV = "198.51.100.1", "10.77.0.1"
PRIVATE = ["10.77.0.10", "192.168.77.10", "172.16.77.10", "100.64.77.10", "169.254.169.254"]
MISSING = "sbx_0000000000000000000a"   # well formed, never created
DENY_ALL = ["0.0.0.0/0"]

# the rules of the sandboxes the tests share (created on first use)
MODES = {
    "internet": {},
    "none": {"allow_internet_access": False},
    # 198.51.100.0/24 holds the host's own 198.51.100.1: an allowOut never opens the host
    "cidr": {"network": {"allowOut": ["198.51.100.0/24"], "denyOut": DENY_ALL}},
    "domain": {"network": {"allowOut": ["allowed.test"], "denyOut": DENY_ALL}},
    "wildcard": {"network": {"allowOut": ["*.allowed.test"], "denyOut": DENY_ALL}},
    # exact and wildcard: rebind.allowed.test and hostaddr.allowed.test are allowed names
    "domains": {"network": {"allowOut": ["allowed.test", "*.allowed.test"], "denyOut": DENY_ALL}},
    "deny11": {"network": {"denyOut": ["198.51.100.11/32"]}},
    "allow11": {"network": {"allowOut": ["198.51.100.11"], "denyOut": ["198.51.100.0/24"]}},
}

# The answers the peers give (netpeers.py)
HTTP10 = "host=allowed.test addr=198.51.100.10\n"
HTTPS10 = "sni=allowed.test host=allowed.test addr=198.51.100.10\n"


# ---------------------------------------------------------------- helpers


def rules(entries):
    """Rules as the API gives them back: each entry in its canonical form
    (a /32 block as a bare address), the set of them (order is not kept)."""
    return sorted(e[:-3] if e.endswith("/32") else e for e in entries)

def assert_error(r, status):
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    return body["message"]


def create(d, expect=201, **fields):
    """POST /sandboxes; the created sandbox object (or the answer)."""
    body = {"templateID": "base", "timeout": 1200}
    body.update(fields)
    r = d.req("POST", "/sandboxes", json=body)
    assert r.status_code == expect, r.text
    return r.json() if expect == 201 else r


def network_of(d, sid):
    r = d.get(sid)
    assert r.status_code == 200, r.text
    return r.json()["network"]


def put_network(d, sid, body, expect=204):
    r = d.req("PUT", f"/sandboxes/{sid}/network", json=body)
    assert r.status_code == expect, r.text
    return r


def curl(d, sid, *args, timeout=3):
    """curl in the sandbox: (exit code, body)."""
    r = d.run(sid, "curl", "-sS", "-m", str(timeout), "--noproxy", "*", *args, timeout=30)
    return r["exitCode"], r["stdout"]


def fetch_ok(d, sid, url, expected, *args):
    code, out = curl(d, sid, *args, url)
    assert (code, out) == (0, expected), (url, args, code, out)


def fetch_fails(d, sid, url, marker, *args):
    """The peer's answer (MARKER is part of it) never comes."""
    code, out = curl(d, sid, *args, url)
    assert code != 0 or marker not in out, (url, args, code, out)


# Probes run inside a sandbox, all at once, each with a short timeout.
# A target is {"name", "proto": "tcp"|"udp", "host", "port", "send"}; the
# result is "answer:<what came back>" or how it failed.
PROBE = r'''
import errno, json, socket, sys, threading
targets = json.loads(sys.argv[1])
out = {}
def one(t):
    data = b""
    try:
        fam = socket.AF_INET6 if ":" in t["host"] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM if t["proto"] == "udp" else socket.SOCK_STREAM)
        s.settimeout(t.get("timeout", 3))
        if t["proto"] == "udp":
            s.sendto(t["send"].encode(), (t["host"], t["port"]))
            data = s.recvfrom(65535)[0]
        else:
            s.connect((t["host"], t["port"]))
            if t.get("send"):
                s.sendall(t["send"].encode())
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        out[t["name"]] = "answer:" + data.decode(errors="replace")
    except socket.timeout:
        out[t["name"]] = ("answer:" + data.decode(errors="replace")) if data else "timeout"
    except OSError as e:
        out[t["name"]] = ("answer:" + data.decode(errors="replace")) if data else \
            errno.errorcode.get(e.errno, str(e))
threads = [threading.Thread(target=one, args=(t,)) for t in targets]
for th in threads:
    th.start()
for th in threads:
    th.join()
print(json.dumps(out))
'''


def probe(d, sid, targets):
    r = d.run(sid, "python3", "-c", PROBE, json.dumps(targets), timeout=60)
    assert r["exitCode"] == 0, r
    return json.loads(r["stdout"])


def http_target(name, host, port=80, host_header=None):
    return {"name": name, "proto": "tcp", "host": host, "port": port,
            "send": f"GET / HTTP/1.0\r\nHost: {host_header or host}\r\n\r\n"}


def reach_tcp(d, sid, host, port, send=None):
    """What a TCP connection from the sandbox gets ("answer:..." or an error)."""
    return probe(d, sid, [{"name": "t", "proto": "tcp", "host": host, "port": port, "send": send}])["t"]


def reach_udp(d, sid, host, port, payload):
    return probe(d, sid, [{"name": "u", "proto": "udp", "host": host, "port": port, "send": payload}])["u"]


def answered(result, marker):
    return result.startswith("answer:") and marker in result


def assert_unreached(results, marker):
    leaks = {k: v for k, v in results.items() if answered(v, marker)}
    assert not leaks, f"reached: {leaks}"


def getent(d, sid, db, name):
    """The addresses `getent DB NAME` gives in the sandbox ([] when it fails)."""
    r = d.run(sid, "timeout", "8", "getent", db, name, timeout=30)
    if r["exitCode"] != 0:
        return []
    return sorted({line.split()[0] for line in r["stdout"].splitlines() if line.strip()})


def dns_in_sandbox(d, sid, server, name, qtype="A", tcp=False):
    """A raw DNS query from the sandbox: [rcode, addresses] or "no answer: ..."."""
    code = DNS_CODE + (
        "\nimport json, sys\n"
        "try:\n"
        "    print(json.dumps(list(dns_query(sys.argv[1], sys.argv[2], sys.argv[3], tcp=sys.argv[4] == '1'))))\n"
        "except OSError as e:\n"
        "    print(json.dumps('no answer: ' + repr(e)))\n")
    r = d.run(sid, "python3", "-c", code, server, name, qtype, "1" if tcp else "0", timeout=30)
    assert r["exitCode"] == 0, r
    return json.loads(r["stdout"])


def host_addresses():
    """The host's IPv4 addresses on the link of its default route (this
    machine's own address: connecting to it stays on the machine)."""
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    if "dev" not in route:
        return []
    dev = route[route.index("dev") + 1]
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev], capture_output=True, text=True).stdout
    return re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)


def links_with(addr):
    """(ifindex, name) of the host links that hold ADDR."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return [(int(line.split(":")[0]), line.split()[1].split("@")[0]) for line in out.splitlines()
            if re.search(rf"\binet {re.escape(addr)}/", line)]


def sbxh_links():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                  if line.split(":")[1].strip().startswith("sbxh"))


# --------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def netd(peers, tmp_path_factory):
    """A daemon whose sandboxes resolve through the test resolver."""
    d = Sbxd(str(tmp_path_factory.mktemp("netd") / "state")).start(args=["--dns-upstream", UPSTREAM])
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


@pytest.fixture(scope="module")
def boxes(netd):
    """boxes(mode) -> a sandbox with MODES[mode]'s rules, shared by the
    module's tests (which must not change its rules)."""
    made = {}

    def get(mode):
        if mode not in made:
            made[mode] = create(netd, **MODES[mode])["sandboxID"]
        return made[mode]
    yield get
    for sid in made.values():
        netd.delete(sid)


@pytest.fixture(scope="module")
def target_box(netd):
    """Another sandbox (internet mode) serving HTTP on 0.0.0.0:8000, and its address."""
    sb = create(netd)
    sid, addr = sb["sandboxID"], sb["network"]["address"]
    netd.run(sid, "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", background=True)
    # it answers on its own address, from inside
    deadline = time.time() + 20
    while True:
        code, out = curl(netd, sid, f"http://{addr}:8000/")
        if code == 0 and "Directory listing" in out:
            break
        assert time.time() < deadline, (code, out)
        time.sleep(0.2)
    yield sid, addr
    netd.delete(sid)


# ------------------------------------------------------------ the peers

def test_peers_reachable_from_host(peers):
    """The fixture itself: every peer answers the host, and the UDP log
    tells the ports apart."""
    peers.check()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "sbxt-inet" in ns and "sbxt-priv" in ns, ns
    token = peers.token("host")
    assert peers.udp_host(WEB1, 9999, token) == b"udp ok"
    assert peers.udp_seen(token, port=9999) and not peers.udp_seen(token, port=443)


# ------------------------------------------------------------ modes

def test_internet_mode_reaches_the_internet(netd, peers, boxes):
    sid = boxes("internet")
    assert getent(netd, sid, "ahostsv4", "allowed.test") == [WEB1]
    fetch_ok(netd, sid, "http://allowed.test/", HTTP10)
    fetch_ok(netd, sid, "https://allowed.test/", HTTPS10, "-k")
    fetch_ok(netd, sid, f"http://{WEB2}/", f"host={WEB2} addr={WEB2}\n")
    fetch_ok(netd, sid, "http://other.test/", f"host=other.test addr={WEB2}\n")
    payload = peers.token("internet")
    r = probe(netd, sid, [{"name": "tcp", "proto": "tcp", "host": WEB1, "port": 8080},
                          {"name": "udp", "proto": "udp", "host": WEB1, "port": 9999, "send": payload}])
    assert r == {"tcp": "answer:tcp ok\n", "udp": "answer:udp ok"}, r
    assert peers.udp_seen(payload, port=9999)


def test_none_mode_has_loopback_only(netd, peers, boxes):
    sid = boxes("none")
    assert getent(netd, sid, "ahostsv4", "allowed.test") == []
    fetch_fails(netd, sid, f"http://{WEB1}/", "host=")
    payload = peers.token("none")
    assert not answered(reach_udp(netd, sid, WEB1, 9999, payload), "udp ok")
    assert not peers.udp_seen(payload)
    got = dns_in_sandbox(netd, sid, UPSTREAM, "allowed.test")
    assert isinstance(got, str) and got.startswith("no answer"), got
    # loopback still works
    r = netd.sh(sid, "python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 & "
                     "for i in $(seq 100); do "
                     "  curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:8123/ && break; sleep 0.1; "
                     "done; kill $!")
    assert r["stdout"].endswith("200"), r  # "000" until the server listens


# ------------------------------------------------------ never reachable

@pytest.mark.parametrize("kind", ["host", "private", "sandbox"])
@pytest.mark.parametrize("mode", ["internet", "none", "cidr", "domain"])
def test_never_reachable(netd, peers, boxes, target_box, mode, kind):
    """Whatever the rules: not the host (any of its addresses), not private
    ranges or metadata, not another sandbox."""
    sid = boxes(mode)
    if kind == "host":
        gateway = network_of(netd, sid).get("gateway")
        addrs = [HOST_INET, HOST_PRIV] + host_addresses() + ([gateway] if gateway else [])
        targets = [http_target(f"{a}:{peers.host_port}", a, peers.host_port) for a in addrs]
        targets += [http_target(f"{a}:80", a) for a in (HOST_INET, HOST_PRIV)]
        # the sandbox's own loopback is not the host's
        targets.append(http_target(f"127.0.0.1:{peers.host_port}", "127.0.0.1", peers.host_port))
        # the host does answer on each of them (so a refusal is the daemon's doing)
        for a in addrs:
            assert peers.http_host(a, port=peers.host_port) == "host ok\n", a
        assert_unreached(probe(netd, sid, targets), "host ok")
    elif kind == "private":
        assert_unreached(probe(netd, sid, [http_target(a, a) for a in PRIVATE]), "private ok")
    else:
        _, addr = target_box
        assert_unreached(probe(netd, sid, [http_target(addr, addr, 8000)]), "Directory listing")


# ------------------------------------------------------------ address rules

def test_deny_cidr(netd, boxes):
    sid = boxes("deny11")
    fetch_fails(netd, sid, f"http://{WEB2}/", f"addr={WEB2}")
    fetch_ok(netd, sid, f"http://{WEB1}/", f"host={WEB1} addr={WEB1}\n")


def test_allow_wins_over_deny(netd, boxes):
    sid = boxes("allow11")
    fetch_ok(netd, sid, f"http://{WEB2}/", f"host={WEB2} addr={WEB2}\n")
    fetch_fails(netd, sid, f"http://{WEB1}/", f"addr={WEB1}")


# ------------------------------------------------------------ domain rules

def test_domain_rule(netd, boxes):
    sid = boxes("domain")
    fetch_ok(netd, sid, "http://allowed.test/", HTTP10)
    fetch_ok(netd, sid, "https://allowed.test/", HTTPS10, "-k")
    # other.test: not resolved, or resolved and not connected
    fetch_fails(netd, sid, "http://other.test/", "host=other.test")
    fetch_fails(netd, sid, "https://other.test/", "sni=other.test", "-k")
    fetch_fails(netd, sid, f"http://{WEB2}/", f"addr={WEB2}")
    # "allowed.test" is that name only, not the names below it
    fetch_fails(netd, sid, "http://api.allowed.test/", "host=api.allowed.test")


def test_wildcard_rule(netd, boxes):
    sid = boxes("wildcard")
    for name in ("api.allowed.test", "deep.api.allowed.test"):
        fetch_ok(netd, sid, f"http://{name}/", f"host={name} addr={WEB1}\n")
        fetch_ok(netd, sid, f"https://{name}/", f"sni={name} host={name} addr={WEB1}\n", "-k")
    # "*.allowed.test" matches the names below allowed.test and NOT
    # allowed.test itself (although it has the same address as api.allowed.test)
    fetch_fails(netd, sid, "http://allowed.test/", "host=allowed.test")
    fetch_fails(netd, sid, "https://allowed.test/", "sni=allowed.test", "-k")
    fetch_fails(netd, sid, "http://other.test/", "host=other.test")


# ------------------------------------------------------------ the tricks
# Under allowOut ["allowed.test"] + denyOut 0.0.0.0/0 ("domain"), and
# with "*.allowed.test" allowed too ("domains"), where rebind.allowed.test
# and hostaddr.allowed.test are allowed names.

DOMAIN_MODES = ["domain", "domains"]


@pytest.mark.parametrize("mode", DOMAIN_MODES)
def test_trick_allowed_name_pointing_at_private_or_host(netd, peers, boxes, mode):
    sid = boxes(mode)
    if mode == "domains":
        # the resolver gives the private address; connecting must fail anyway
        assert getent(netd, sid, "ahostsv4", "rebind.allowed.test") in ([], ["10.77.0.10"])
    fetch_fails(netd, sid, "http://rebind.allowed.test/", "private ok")
    fetch_fails(netd, sid, "http://hostaddr.allowed.test/", "host ok")
    fetch_fails(netd, sid, f"http://hostaddr.allowed.test:{peers.host_port}/", "host ok")


@pytest.mark.parametrize("mode", DOMAIN_MODES)
def test_trick_other_host_or_sni_on_allowed_address(netd, boxes, mode):
    sid = boxes(mode)
    # controls: after resolving allowed.test, its address works with its name
    assert getent(netd, sid, "ahostsv4", "allowed.test") == [WEB1]
    fetch_ok(netd, sid, f"http://{WEB1}/", HTTP10, "-H", "Host: allowed.test")
    fetch_ok(netd, sid, "https://allowed.test/", HTTPS10, "-k", "--resolve", f"allowed.test:443:{WEB1}")
    # another Host or SNI to the allowed address
    fetch_fails(netd, sid, f"http://{WEB1}/", "host=other.test", "-H", "Host: other.test")
    fetch_fails(netd, sid, "https://other.test/", "sni=other.test", "-k", "--resolve", f"other.test:443:{WEB1}")
    # the allowed name sent to another address
    fetch_fails(netd, sid, "https://allowed.test/", f"addr={WEB2}", "-k", "--resolve", f"allowed.test:443:{WEB2}")
    fetch_fails(netd, sid, "http://allowed.test/", f"addr={WEB2}", "--resolve", f"allowed.test:80:{WEB2}")


@pytest.mark.parametrize("mode", DOMAIN_MODES)
def test_trick_other_resolvers(netd, peers, boxes, mode):
    sid = boxes(mode)
    # plain DNS to another resolver (and to the upstream itself), UDP and TCP
    for server in ("198.51.100.54", UPSTREAM):
        for tcp in (False, True):
            name = peers.token("q") + ".other.test"
            got = dns_in_sandbox(netd, sid, server, name, tcp=tcp)
            assert isinstance(got, str) and got.startswith("no answer"), (server, tcp, got)
            assert not peers.dns_seen(name, server=server), (server, tcp)
    # the other resolver's answer for allowed.test never arrives either
    assert dns_in_sandbox(netd, sid, "198.51.100.54", "allowed.test") != [0, [WEB2]]
    # DNS over TLS
    assert not answered(reach_tcp(netd, sid, WEB1, 853), "dot ok")
    # DNS over HTTPS to a name that is not allowed
    fetch_fails(netd, sid, "https://doh.test/dns-query", "sni=doh.test", "-k")
    fetch_fails(netd, sid, "https://doh.test/dns-query", "sni=doh.test", "-k", "--resolve", f"doh.test:443:{WEB2}")


@pytest.mark.parametrize("mode", ["internet", "cidr"] + DOMAIN_MODES)
def test_trick_ipv6(netd, boxes, mode):
    """Sandboxes are IPv4-only, whatever their rules."""
    sid = boxes(mode)
    fetch_fails(netd, sid, f"http://[{WEB6}]/", f"addr={WEB6}", "-6")
    assert not answered(reach_tcp(netd, sid, WEB6, 80, send="GET / HTTP/1.0\r\n\r\n"), f"addr={WEB6}")
    # AAAA answers carry no address (v4-mapped ones from the A record are fine)
    addrs = getent(netd, sid, "ahostsv6", "v6.allowed.test")
    real6 = [a for a in addrs if ipaddress.ip_address(a).version == 6 and ipaddress.ip_address(a).ipv4_mapped is None]
    assert real6 == [], addrs
    gateway = network_of(netd, sid)["gateway"]
    got = dns_in_sandbox(netd, sid, gateway, "v6.allowed.test", "AAAA")
    assert isinstance(got, str) or got[1] == [], got


@pytest.mark.parametrize("mode", DOMAIN_MODES)
def test_trick_udp_and_quic(netd, peers, boxes, mode):
    sid = boxes(mode)
    payloads = {port: peers.token(f"udp{port}") for port in (443, 9999)}
    r = probe(netd, sid, [{"name": str(port), "proto": "udp", "host": WEB1, "port": port, "send": p}
                          for port, p in payloads.items()])
    assert_unreached(r, "udp ok")
    for port, p in payloads.items():
        assert not peers.udp_seen(p), port


@pytest.mark.parametrize("mode", DOMAIN_MODES)
def test_trick_other_port_of_allowed_name(netd, boxes, mode):
    sid = boxes(mode)
    assert getent(netd, sid, "ahostsv4", "allowed.test") == [WEB1]
    r = probe(netd, sid, [{"name": "name", "proto": "tcp", "host": "allowed.test", "port": 8080},
                          {"name": "addr", "proto": "tcp", "host": WEB1, "port": 8080}])
    assert_unreached(r, "tcp ok")


# ------------------------------------------------------------ changing rules

def test_put_network_takes_effect_at_once(netd):
    sid = create(netd)["sandboxID"]
    try:
        netd.write(sid, "/home/user/before.txt", "still here")
        sleeper = netd.run(sid, "sleep", "3600", background=True)["pid"]
        init_start = netd.sh(sid, "cut -d' ' -f22 /proc/1/stat")["stdout"]
        fetch_ok(netd, sid, f"http://{WEB2}/", f"host={WEB2} addr={WEB2}\n")

        put_network(netd, sid, {"allowOut": ["allowed.test"], "denyOut": DENY_ALL})
        fetch_fails(netd, sid, f"http://{WEB2}/", f"addr={WEB2}")
        fetch_fails(netd, sid, "http://other.test/", "host=other.test")
        fetch_ok(netd, sid, "http://allowed.test/", HTTP10)
        fetch_ok(netd, sid, "https://allowed.test/", HTTPS10, "-k")

        put_network(netd, sid, {})
        fetch_ok(netd, sid, f"http://{WEB2}/", f"host={WEB2} addr={WEB2}\n")
        fetch_ok(netd, sid, "http://other.test/", f"host=other.test addr={WEB2}\n")
        fetch_ok(netd, sid, "http://allowed.test/", HTTP10)

        # the same sandbox all along
        assert netd.read(sid, "/home/user/before.txt") == b"still here"
        assert netd.sh(sid, f"kill -0 {sleeper} && echo alive")["stdout"] == "alive\n"
        assert netd.sh(sid, "cut -d' ' -f22 /proc/1/stat")["stdout"] == init_start
    finally:
        netd.delete(sid)


def test_put_allow_internet_access_false_then_true(netd, peers):
    sid = create(netd)["sandboxID"]
    try:
        fetch_ok(netd, sid, f"http://{WEB1}/", f"host={WEB1} addr={WEB1}\n")
        put_network(netd, sid, {"allow_internet_access": False})
        assert network_of(netd, sid)["mode"] == "none"
        fetch_fails(netd, sid, f"http://{WEB1}/", f"addr={WEB1}")
        payload = peers.token("off")
        assert not answered(reach_udp(netd, sid, WEB1, 9999, payload), "udp ok")
        assert not peers.udp_seen(payload)
        put_network(netd, sid, {"allow_internet_access": True})
        assert network_of(netd, sid)["mode"] == "internet"
        fetch_ok(netd, sid, f"http://{WEB1}/", f"host={WEB1} addr={WEB1}\n")
    finally:
        netd.delete(sid)


# ------------------------------------------------------------ the API

CREATE_FORMS = [
    # (create fields, mode, allowOut, denyOut, allowInternetAccess)
    ({}, "internet", [], [], None),
    ({"allow_internet_access": True}, "internet", [], [], True),
    ({"allow_internet_access": False}, "none", [], [], False),
    ({"allow_internet_access": False, "network": {"allowOut": ["allowed.test"]}},
     "internet", ["allowed.test"], DENY_ALL, False),
    ({"network": {"allowOut": ["allowed.test", "198.51.100.11"], "denyOut": ["198.51.100.0/24"]}},
     "internet", ["allowed.test", "198.51.100.11"], ["198.51.100.0/24"], None),
    # seed 002's form
    ({"network": {"allow": ["allowed.test"], "block_outbound": True}}, "internet", ["allowed.test"], DENY_ALL, None),
]


@pytest.mark.parametrize("fields,mode,allow,deny,access", CREATE_FORMS,
                         ids=["default", "access-true", "access-false", "access-false-allow", "rules", "seed002"])
def test_sandbox_object_network_fields(netd, fields, mode, allow, deny, access):
    sb = create(netd, **fields)
    sid = sb["sandboxID"]
    try:
        for obj in (sb, netd.get(sid).json()):
            assert obj["allowInternetAccess"] == access, obj
            net = obj["network"]
            assert (net["mode"], rules(net["allowOut"]), rules(net["denyOut"])) == (mode, rules(allow), rules(deny)), net
            if mode == "internet":
                addr, gw = ipaddress.IPv4Address(net["address"]), ipaddress.IPv4Address(net["gateway"])
                assert addr != gw, net
        if mode == "internet":
            # the sandbox's resolver is its gateway
            r = netd.sh(sid, "grep '^nameserver' /etc/resolv.conf")
            assert r["stdout"].split() == ["nameserver", net["gateway"]], r
            # and its address is the one the object gives
            r = netd.sh(sid, "cat /proc/net/fib_trie")
            assert re.search(rf"\b{re.escape(net['address'])}\n\s+/32 host LOCAL", r["stdout"]), r
    finally:
        netd.delete(sid)


BAD_RULES = [
    {"allowOut": ["999.1.1.1"]},
    {"allowOut": ["a..b"]},
    {"allowOut": ["1.2.3.0/33"]},
    {"denyOut": ["1.2.3.0/33"]},
    {"denyOut": ["allowed.test"]},         # names are for allowOut only
    {"denyOut": ["*.allowed.test"]},
    {"allowOut": "allowed.test"},          # not a list
    {"denyOut": "0.0.0.0/0"},
    {"allowOut": [5]},
]
BAD_IDS = ["bad-ip", "bad-name", "bad-prefix", "deny-bad-prefix", "deny-name", "deny-wildcard",
           "allow-not-list", "deny-not-list", "allow-number"]


@pytest.mark.parametrize("rules", BAD_RULES, ids=BAD_IDS)
def test_create_refuses_invalid_rules(netd, rules):
    before = set(netd.sandbox_ids())
    r = create(netd, expect=400, network=rules)
    assert_error(r, 400)
    assert set(netd.sandbox_ids()) == before


def test_put_network_reflected_and_errors(netd):
    sid = create(netd)["sandboxID"]
    try:
        put_network(netd, sid, {"allowOut": ["allowed.test", "*.allowed.test", "198.51.100.11"],
                                "denyOut": ["198.51.100.0/24", "0.0.0.0/0"]})
        net = network_of(netd, sid)
        assert net["mode"] == "internet", net
        assert rules(net["allowOut"]) == rules(["allowed.test", "*.allowed.test", "198.51.100.11"]), net
        assert rules(net["denyOut"]) == rules(["198.51.100.0/24", "0.0.0.0/0"]), net
        for bad in BAD_RULES:
            assert_error(put_network(netd, sid, bad, expect=400), 400)
            assert network_of(netd, sid) == net, bad            # unchanged
        put_network(netd, sid, {"denyOut": ["198.51.100.11/32"]})
        net = network_of(netd, sid)
        assert (net["mode"], net["allowOut"], net["denyOut"]) == ("internet", [], ["198.51.100.11"]), net
        put_network(netd, sid, {})
        net = network_of(netd, sid)
        assert (net["mode"], net["allowOut"], net["denyOut"]) == ("internet", [], []), net
        assert_error(netd.req("PUT", f"/sandboxes/{MISSING}/network", json={"denyOut": DENY_ALL}), 404)
    finally:
        netd.delete(sid)


# ------------------------------------------------------------ no leaks

def test_delete_removes_the_sandbox_link(netd):
    # let the daemon finish preparing spares (they get links too)
    def settled():
        last = sbxh_links()
        for _ in range(20):
            time.sleep(0.25)
            now = sbxh_links()
            if now == last:
                return now
            last = now
        return last

    sb = create(netd)
    sid, gw, addr = sb["sandboxID"], sb["network"]["gateway"], sb["network"]["address"]
    held = links_with(gw)
    assert len(held) == 1 and held[0][1].startswith("sbxh"), held
    index, name = held[0]
    settled()
    assert netd.delete(sid).status_code == 204
    time.sleep(0.5)
    settled()
    # that link is gone (a later sandbox may reuse the name and the address,
    # not the interface index)
    now = links_with(gw)
    assert all(i != index for i, _ in now), now
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not re.search(rf"^{index}:", out, re.M), out
    if not now:
        assert subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0, name
        # and no firewall rule still names its address
        rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        assert not re.search(rf"\b{re.escape(addr)}\b", rules), rules


def udp_ports(pid):
    """{port: sockets on 0.0.0.0} of the UDP sockets process PID holds."""
    out = subprocess.run(["ss", "-uanpH"], capture_output=True, text=True).stdout
    held = {}
    for line in out.splitlines():
        addr, port = line.split()[3].rsplit(":", 1)
        if f"pid={pid}," in line and addr == "0.0.0.0":
            held[int(port)] = held.get(int(port), 0) + 1
    return held


DNS_SOCKS = 64  # SBX_DNS_SOCKS (src/core/netproxy_internal.h)


def test_dns_queries_queue_in_their_slots_socket(netd):
    """The DNS filter's port is held by a group of sockets, and the kernel
    puts each sandbox's queries in its slot's (tests/unit/test_netproxy.c
    checks the steering): a flood queues apart from most sandboxes'
    queries.  A fixed number of descriptors, none per sandbox; queries
    over UDP and TCP are answered."""
    held = udp_ports(netd.proc.pid)
    assert list(held.values()) == [DNS_SOCKS], held
    sb = create(netd)
    sid, gw = sb["sandboxID"], sb["network"]["gateway"]
    assert dns_in_sandbox(netd, sid, gw, "allowed.test") == [0, [WEB1]]
    assert dns_in_sandbox(netd, sid, gw, "allowed.test", tcp=True) == [0, [WEB1]]
    assert udp_ports(netd.proc.pid) == held
    assert netd.delete(sid).status_code == 204


def test_put_cuts_an_open_flow(netd, peers):
    """Rules hold for every packet, not only for new connections: a UDP
    flow that was let through stops the moment a PUT denies it."""
    sid = create(netd)["sandboxID"]
    tok = peers.token("flow")
    try:
        # one socket, a datagram every 100 ms for 8 s: tok-0, tok-1, ...
        sender = ("import socket, sys, time\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9999))\n"
                  "for i in range(80):\n"
                  "    s.send(('%s-%d' % (sys.argv[2], i)).encode()); time.sleep(0.1)\n")
        netd.run(sid, "python3", "-c", sender, WEB1, tok, background=True)
        deadline = time.time() + 10
        while not peers.udp_seen(f"{tok}-5"):
            assert time.time() < deadline, "the flow never started"
            time.sleep(0.1)
        put_network(netd, sid, {"denyOut": ["198.51.100.10/32"]})
        time.sleep(1.5)
        later = [i for i in range(80) if peers.udp_seen(f"{tok}-{i}")]
        # what was sent after the PUT never arrives (allow a few in flight)
        assert later and max(later) < later[0] + 50, later
        time.sleep(6.5)  # the sender is done by now
        assert not peers.udp_seen(f"{tok}-79")
        assert max(i for i in range(80) if peers.udp_seen(f"{tok}-{i}")) == max(later)
    finally:
        netd.delete(sid)


def test_rules_survive_a_daemon_restart(peers, tmp_path):
    """kill -9 of the daemon: the sandboxes keep their rules (they live in
    the kernel), and the restarted daemon's filters take over their DNS
    and name rules (their ports change).  The restart renews all
    sandboxes' rules in one transaction: each keeps its own."""
    d = Sbxd(str(tmp_path / "state")).start(args=["--dns-upstream", UPSTREAM])
    try:
        sid = create(d, **MODES["domain"])["sandboxID"]
        cidr = create(d, **MODES["cidr"])["sandboxID"]
        none = create(d, **MODES["none"])["sandboxID"]
        fetch_ok(d, sid, "http://allowed.test/", HTTP10)
        d.kill9()
        d.start(args=["--dns-upstream", UPSTREAM])
        assert rules(network_of(d, sid)["allowOut"]) == ["allowed.test"]
        fetch_ok(d, sid, "http://allowed.test/", HTTP10)
        fetch_ok(d, sid, "https://allowed.test/", HTTPS10, "-k")
        fetch_fails(d, sid, f"http://{WEB2}/", f"addr={WEB2}")
        fetch_fails(d, sid, "http://other.test/", "host=other.test")
        fetch_ok(d, cidr, f"http://{WEB2}/", f"host={WEB2} addr={WEB2}\n")
        fetch_fails(d, none, f"http://{WEB2}/", f"addr={WEB2}")
        d.cleanup()
    finally:
        d.stop()


def test_a_rule_never_opens_a_private_range(netd, peers):
    """allowOut of a private range or of the host is accepted but changes
    nothing: the platform's denials come first."""
    sid = create(netd, network={"allowOut": ["10.77.0.0/24", "192.168.77.10", "169.254.169.254"],
                                "denyOut": DENY_ALL})["sandboxID"]
    try:
        for addr in ("10.77.0.10", "192.168.77.10", "169.254.169.254"):
            fetch_fails(netd, sid, f"http://{addr}/", "private ok")
        fetch_fails(netd, sid, f"http://{HOST_PRIV}:{peers.host_port}/", "host ok")
    finally:
        netd.delete(sid)


def test_operator_range_opens_only_that_range(peers, tmp_path):
    """sbxd serve --net-allow CIDR: sandboxes reach that private range,
    and still neither other private ranges nor the host inside it."""
    d = Sbxd(str(tmp_path / "state")).start(args=["--dns-upstream", UPSTREAM, "--net-allow", "10.77.0.0/24"])
    try:
        sid = create(d)["sandboxID"]
        fetch_ok(d, sid, "http://10.77.0.10/", "private ok\n")
        fetch_fails(d, sid, "http://192.168.77.10/", "private ok")
        fetch_fails(d, sid, "http://169.254.169.254/", "private ok")
        fetch_fails(d, sid, f"http://{HOST_PRIV}:{peers.host_port}/", "host ok")
        # a sandbox's own rules still apply inside the operator's range
        ruled = create(d, network={"denyOut": ["10.77.0.10"]})["sandboxID"]
        fetch_fails(d, ruled, "http://10.77.0.10/", "private ok")
        d.cleanup()
    finally:
        d.stop()


def test_invalid_operator_range_is_refused(tmp_path):
    r = subprocess.run([SBXD, "serve",
                        "--state-dir", str(tmp_path / "s"), "--net-allow", "10.0.0.0/33"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 2 and "invalid --net-allow 10.0.0.0/33" in r.stderr, r


def test_spoofed_source_addresses_are_dropped(netd, peers, boxes, target_box):
    """A sandbox cannot send as another address: the kernel refuses a
    source that is not local without CAP_NET_ADMIN (which IP_TRANSPARENT
    needs; IP_FREEBIND alone does not let it through), and the host drops
    whatever comes from a sandbox's link with an address not its own
    (another sandbox's included), so nothing can come back to it either."""
    sid = boxes("internet")
    _, other = target_box
    payloads = {addr: peers.token("spoof") for addr in (other, "198.51.100.77")}
    code = ("import socket, sys\n"
            "for src, payload in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "    s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND\n"
            "    s.bind((src, 0))\n"
            "    try:\n"
            "        for _ in range(3):\n"
            "            s.sendto(payload.encode(), ('%s', 9999))\n"
            "        print(src, 'sent')\n"
            "    except OSError as e:\n"
            "        print(src, 'refused', e.errno)\n" % WEB1)
    args = [x for kv in payloads.items() for x in kv]
    r = netd.run(sid, "python3", "-c", code, *args)
    assert r["exitCode"] == 0, r
    # the same sandbox, from its own address: arrives (the check can fail)
    mine = peers.token("own")
    assert answered(reach_udp(netd, sid, WEB1, 9999, mine), "udp ok")
    time.sleep(0.5)
    assert peers.udp_seen(mine)
    for src, payload in payloads.items():
        assert not peers.udp_seen(payload), src


def test_no_network_daemon(tmp_path):
    """sbxd serve --no-network: sandboxes have their loopback only, no
    link and no network fields, and their rules cannot be set."""
    d = Sbxd(str(tmp_path / "state")).start(args=["--no-network"])
    try:
        before = sbxh_links()
        sb = create(d)
        sid = sb["sandboxID"]
        assert "network" not in sb and "network" not in d.get(sid).json(), sb
        r = d.py(sid, "import os; print(sorted(os.listdir('/sys/class/net')))")
        assert r["stdout"] == "['lo']\n", r
        assert sbxh_links() == before
        r = d.req("PUT", f"/sandboxes/{sid}/network", json={"denyOut": DENY_ALL})
        assert r.status_code == 409, r.text
        d.cleanup()
    finally:
        d.stop()


KEEPALIVE = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
def ask(host, close):
    s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (host, "Connection: close\r\n" if close else "")).encode())
ask("allowed.test", False)
got = b""
while b"\n" not in got.split(b"\r\n\r\n", 1)[-1]:   # the first answer's body line
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
try:
    ask(sys.argv[2], True)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError as e:
    got += b" error " + str(e).encode()
print(got.decode(errors="replace"))
"""


@pytest.mark.parametrize("mode", ["domain", "domains"])
def test_trick_second_request_on_a_kept_alive_connection(netd, boxes, mode):
    """One connection to an allowed name's server, a first request with its
    name, then a second with another: the filter checks every request of
    a plain HTTP connection, not the first alone."""
    sid = boxes(mode)
    r = netd.run(sid, "python3", "-c", KEEPALIVE, "allowed.test", "allowed.test")
    assert r["stdout"].count("host=allowed.test addr=198.51.100.10") == 2, r  # keep-alive passes
    r = netd.run(sid, "python3", "-c", KEEPALIVE, "allowed.test", "other.test")
    assert "host=allowed.test addr=198.51.100.10" in r["stdout"], r
    assert "host=other.test" not in r["stdout"], r


def test_trick_absolute_form_target(netd, boxes):
    """GET http://other.test/ with Host: allowed.test: a server takes the
    target's name over the Host header, so the filter refuses it."""
    sid = boxes("domain")
    code = ("import socket\n"
            "s = socket.create_connection(('allowed.test', 80), timeout=5)\n"
            "s.sendall(b'GET http://other.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n')\n"
            "got = b''\n"
            "try:\n"
            "    while True:\n"
            "        c = s.recv(4096)\n"
            "        if not c: break\n"
            "        got += c\n"
            "except OSError:\n"
            "    pass\n"
            "print(repr(got))\n")
    r = netd.run(sid, "python3", "-c", code)
    assert r["stdout"].strip() == "b''", r


# ------------------------------------------------------------ egress log

def egress_log(d, sid, after=0, expect=200):
    """The sandbox's egress log: {"records": [...], "dropped": N}."""
    r = d.req("GET", f"/sandboxes/{sid}/network/log", params={"after": after})
    assert r.status_code == expect, r.text
    body = r.json()
    if expect == 200:
        assert set(body) == {"sandbox_id", "records", "dropped"} and body["sandbox_id"] == sid, body
        seqs = [rec["seq"] for rec in body["records"]]
        assert seqs == sorted(seqs) and all(s > after for s in seqs), seqs
        for rec in body["records"]:
            assert set(rec) == {"seq", "time", "protocol", "address", "port", "name", "verdict", "rule"}, rec
            assert rec["verdict"] in ("allowed", "denied"), rec
    return body


def last_seq(d, sid):
    recs = egress_log(d, sid)["records"]
    return recs[-1]["seq"] if recs else 0


def logged(d, sid, after, **want):
    """The records after AFTER whose fields include WANT, waiting up to 5 s
    for one (the kernel's come through NFLOG, a moment later)."""
    deadline = time.time() + 5
    while True:
        recs = egress_log(d, sid, after)["records"]
        found = [r for r in recs if all(r[k] == v for k, v in want.items())]
        if found or time.time() > deadline:
            return found
        time.sleep(0.1)


def test_egress_log_dns(netd, peers, boxes):
    """The DNS filter's decisions: allowed names with the rule that allowed
    them, refused names with the rule that refused them (no address)."""
    sid = boxes("domains")
    gateway = network_of(netd, sid)["gateway"]
    start = last_seq(netd, sid)
    refused = peers.token("refused") + ".other.test"
    assert dns_in_sandbox(netd, sid, gateway, "api.allowed.test") == [0, [WEB1]]
    assert dns_in_sandbox(netd, sid, gateway, "allowed.test") == [0, [WEB1]]
    assert dns_in_sandbox(netd, sid, gateway, refused)[0] == 5
    ok = logged(netd, sid, start, protocol="dns", name="api.allowed.test")
    assert ok and ok[0]["verdict"] == "allowed" and ok[0]["rule"] == "allowOut *.allowed.test", ok
    assert (ok[0]["address"], ok[0]["port"]) == (UPSTREAM, 53), ok
    ok = logged(netd, sid, start, protocol="dns", name="allowed.test")
    assert ok and ok[0]["verdict"] == "allowed" and ok[0]["rule"] == "allowOut allowed.test", ok
    no = logged(netd, sid, start, protocol="dns", name=refused)
    assert no == [{**no[0], "verdict": "denied", "rule": "denyOut 0.0.0.0/0", "address": "", "port": 0}], no
    # times are the wall clock's, in order
    recs = egress_log(netd, sid, start)["records"]
    assert recs[0]["time"] <= recs[-1]["time"] and recs[0]["time"].endswith("Z"), recs
    # a sandbox without deny-all resolves any name: the default decides
    other = boxes("internet")
    start = last_seq(netd, other)
    name = peers.token("any") + ".other.test"
    dns_in_sandbox(netd, other, network_of(netd, other)["gateway"], name)
    got = logged(netd, other, start, protocol="dns", name=name)
    assert got and got[0]["verdict"] == "allowed" and got[0]["rule"] == "default internet", got


def test_egress_log_http_and_tls(netd, boxes):
    """The HTTP/TLS filter's decisions carry the Host or SNI, the original
    destination, and the rule."""
    sid = boxes("domain")
    start = last_seq(netd, sid)
    fetch_ok(netd, sid, "http://allowed.test/", HTTP10)
    fetch_ok(netd, sid, "https://allowed.test/", HTTPS10, "-k")
    fetch_fails(netd, sid, "http://other.test/", "host=other.test", "--resolve", f"other.test:80:{WEB2}")
    fetch_fails(netd, sid, "https://other.test/", "sni=other.test", "-k", "--resolve", f"other.test:443:{WEB2}")
    for proto, port in (("http", 80), ("tls", 443)):
        ok = logged(netd, sid, start, protocol=proto, name="allowed.test")
        assert ok and ok[0]["verdict"] == "allowed" and ok[0]["rule"] == "allowOut allowed.test", ok
        assert (ok[0]["address"], ok[0]["port"]) == (WEB1, port), ok
        no = logged(netd, sid, start, protocol=proto, name="other.test")
        assert no and no[0]["verdict"] == "denied" and no[0]["rule"] == "denyOut 0.0.0.0/0", no
        assert (no[0]["address"], no[0]["port"]) == (WEB2, port), no
    # an allowed name sent to an address it was not resolved to
    start = last_seq(netd, sid)
    fetch_fails(netd, sid, "http://allowed.test/", "host=allowed.test", "--resolve", f"allowed.test:80:{WEB2}")
    no = logged(netd, sid, start, protocol="http", name="allowed.test")
    assert no and no[0]["verdict"] == "denied" and no[0]["address"] == WEB2, no
    assert no[0]["rule"].startswith("denyOut 0.0.0.0/0") and "allowOut allowed.test" in no[0]["rule"], no


def test_egress_log_direct_connections(netd, peers, boxes):
    """The kernel's decisions on connections to bare addresses, read
    through NFLOG: denied ones (denyOut, the platform's ranges, the host,
    mode none) and allowed ones, TCP and UDP."""
    deny_all = boxes("domain")
    start = last_seq(netd, deny_all)
    assert not answered(reach_tcp(netd, deny_all, WEB2, 8080), "tcp ok")
    assert not answered(reach_udp(netd, deny_all, WEB1, 9999, peers.token("u")), "udp ok")
    got = logged(netd, deny_all, start, protocol="tcp", address=WEB2, port=8080)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "denyOut 0.0.0.0/0", got
    assert got[0]["name"] == "", got
    got = logged(netd, deny_all, start, protocol="udp", address=WEB1, port=9999)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "denyOut 0.0.0.0/0", got

    internet = boxes("internet")
    gateway = network_of(netd, internet)["gateway"]
    start = last_seq(netd, internet)
    assert not answered(reach_tcp(netd, internet, "10.77.0.10", 80, "GET / HTTP/1.0\r\n\r\n"), "private ok")
    assert not answered(reach_tcp(netd, internet, gateway, peers.host_port), "host ok")
    assert answered(reach_tcp(netd, internet, WEB1, 8080), "tcp ok")
    got = logged(netd, internet, start, protocol="tcp", address="10.77.0.10", port=80)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "platform 10.0.0.0/8", got
    got = logged(netd, internet, start, protocol="tcp", address=gateway, port=peers.host_port)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "host", got
    got = logged(netd, internet, start, protocol="tcp", address=WEB1, port=8080)
    # one record for one connection (its later packets are not new)
    assert len(got) == 1 and got[0]["verdict"] == "allowed" and got[0]["rule"] == "default internet", got

    allow11 = boxes("allow11")
    start = last_seq(netd, allow11)
    reach_tcp(netd, allow11, WEB2, 8080)
    reach_tcp(netd, allow11, WEB1, 8080)
    got = logged(netd, allow11, start, protocol="tcp", address=WEB2, port=8080)
    assert got and got[0]["verdict"] == "allowed" and got[0]["rule"] == "allowOut 198.51.100.11", got
    got = logged(netd, allow11, start, protocol="tcp", address=WEB1, port=8080)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "denyOut 198.51.100.0/24", got

    none = boxes("none")
    start = last_seq(netd, none)
    assert not answered(reach_tcp(netd, none, WEB1, 8080), "tcp ok")
    got = logged(netd, none, start, protocol="tcp", address=WEB1, port=8080)
    assert got and got[0]["verdict"] == "denied" and got[0]["rule"] == "mode none", got


def test_egress_log_rate_limit_and_destroy(netd, peers):
    """A flood is cut to the log's rate (the rest counted as dropped), and
    the log goes with the sandbox."""
    sid = create(netd, network={"denyOut": DENY_ALL})["sandboxID"]
    try:
        flood = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "for i in range(3000):\n"
                 "    s.sendto(b'x', (sys.argv[1], 20000 + i % 1000))\n")
        t0 = time.time()
        r = netd.run(sid, "python3", "-c", flood, WEB1, timeout=60)
        took = time.time() - t0
        assert r["exitCode"] == 0, r
        time.sleep(1)
        body = egress_log(netd, sid)
        recs = [x for x in body["records"] if x["protocol"] == "udp" and x["address"] == WEB1]
        # the burst, then the rate; 3000 were sent
        assert 150 <= len(recs) <= 200 + 50 * (took + 1), (len(recs), took)
        assert all(x["verdict"] == "denied" for x in recs)
        assert body["dropped"] > 0, body["dropped"]
        # after and limit page through it
        page = netd.req("GET", f"/sandboxes/{sid}/network/log", params={"after": recs[9]["seq"], "limit": 5}).json()
        assert [x["seq"] for x in page["records"]] == [x["seq"] for x in body["records"]
                                                        if x["seq"] > recs[9]["seq"]][:5]
        assert netd.req("GET", f"/sandboxes/{sid}/network/log", params={"limit": 0}).status_code == 400
        assert netd.req("GET", f"/sandboxes/{sid}/network/log", params={"after": "x"}).status_code == 400
    finally:
        assert netd.delete(sid).status_code == 204
    r = netd.req("GET", f"/sandboxes/{sid}/network/log")
    assert r.status_code == 200 and r.json() == {"sandbox_id": sid, "records": [], "dropped": 0}, r.text
    assert netd.req("GET", f"/sandboxes/{MISSING}/network/log").status_code == 404


def test_egress_log_two_daemons(netd, peers, boxes, tmp_path):
    """Two daemons on one machine share the nftables table: each logs its
    own sandboxes' direct connections to an NFLOG group of its own, and
    reads them."""
    other = Sbxd(str(tmp_path / "state")).start(args=["--dns-upstream", UPSTREAM])
    try:
        sid2 = create(other, network={"denyOut": DENY_ALL})["sandboxID"]
        sid1 = boxes("domain")
        s1, s2 = last_seq(netd, sid1), last_seq(other, sid2)
        reach_tcp(netd, sid1, WEB2, 8080)
        reach_tcp(other, sid2, WEB1, 8080)
        assert logged(netd, sid1, s1, protocol="tcp", address=WEB2, port=8080, verdict="denied")
        assert logged(other, sid2, s2, protocol="tcp", address=WEB1, port=8080, verdict="denied")
        assert not logged(netd, sid1, s1, protocol="tcp", address=WEB1, port=8080)
        ruleset = subprocess.run(["nft", "list", "table", "inet", "sbxd"], capture_output=True, text=True).stdout
        assert len(set(re.findall(r"log prefix \"sbxd:.\" group (\d+)", ruleset))) >= 2, ruleset
        other.cleanup()
    finally:
        other.stop()
