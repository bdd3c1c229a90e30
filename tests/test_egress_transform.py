"""E2B's request transforms (network "rules": headers set on a host's
requests) and egress proxy (network "egressProxy": a SOCKS5 proxy that
carries the sandbox's outbound TCP), end to end against the network test
peers (tests/netpeers.py): the peers' web servers echo the headers they
got (GET /headers), and their SOCKS5 proxy (198.51.100.10:1080) logs
every CONNECT it is asked for.

Headers are set on HTTPS too: for a host with rules the filter
terminates the sandbox's TLS with the daemon's egress CA (which every
sandbox trusts) and talks TLS to the destination itself, verifying it
against the system's roots and --egress-ca-file (here the peers' test
CA).  Run with the peers lock held (flock /tmp/sbxd-peers.lock), as every
module that uses the peers.
"""
import os
import stat

import pytest

from conftest import Sbxd

UPSTREAM = "198.51.100.53"
WEB1, WEB2 = "198.51.100.10", "198.51.100.11"
PROXY = "198.51.100.10:1080"
DENY_ALL = ["0.0.0.0/0"]


@pytest.fixture(scope="module")
def netd(peers, tmp_path_factory):
    d = Sbxd(str(tmp_path_factory.mktemp("xform") / "state")).start(
        args=["--dns-upstream", UPSTREAM, "--egress-ca-file", peers.ca_file])
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


def create(d, network, expect=201):
    r = d.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 600, "network": network})
    assert r.status_code == expect, r.text
    return r.json()


def curl(d, sid, *args, timeout=5):
    r = d.run(sid, "curl", "-sS", "-m", str(timeout), "--noproxy", "*", *args, timeout=30)
    return r["exitCode"], r["stdout"]


def headers_seen(d, sid, url, *args):
    """The headers the peer got for a GET of URL from the sandbox."""
    code, out = curl(d, sid, *args, url)
    assert code == 0, (url, code, out)
    lines = out.splitlines()
    return lines[0], {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}


RULES = {
    "allowed.test": [{"transform": {"headers": {"Authorization": "Bearer secret-1", "X-Team": "a"}}},
                     {"transform": {"headers": {"x-team": "b"}}}],
    "*.allowed.test": [{"transform": {"headers": {"X-Wild": "yes"}}}],
}


@pytest.mark.parametrize("network", [
    {"allowOut": ["allowed.test", "*.allowed.test"], "denyOut": DENY_ALL, "rules": RULES},
    {"rules": RULES},  # the open internet: the rules alone send port 80 through the filter
], ids=["domains", "internet"])
def test_rules_set_headers_on_plain_http(netd, network):
    sid = create(netd, network)["sandboxID"]
    try:
        # the sandbox's own Authorization is replaced, the later rule's X-Team wins
        first, h = headers_seen(netd, sid, "http://allowed.test/headers", "-H", "Authorization: mine",
                                "-H", "X-Keep: 1")
        assert first == f"host=allowed.test addr={WEB1}", first
        assert h["authorization"] == "Bearer secret-1" and h["x-team"] == "b" and h["x-keep"] == "1", h
        assert "x-wild" not in h
        # an exact key comes first; a wildcard covers the names below only
        _, h = headers_seen(netd, sid, "http://api.allowed.test/headers")
        assert h.get("x-wild") == "yes" and "authorization" not in h, h
        # every request of a kept-alive connection, each by its own host's rules
        code, out = curl(netd, sid, "http://allowed.test/headers", "http://allowed.test/headers")
        assert code == 0 and out.count("Authorization: Bearer secret-1") == 2, out
        # a POST with a body: the framing stays right
        code, out = curl(netd, sid, "-d", "x" * 50000, "http://allowed.test/headers",
                         "http://allowed.test/headers")
        assert code == 0 and out.count("Authorization: Bearer secret-1") == 2, out
        # HTTPS as well (test_rules_over_https has the details)
        code, out = curl(netd, sid, "https://allowed.test/headers", "-H", "Authorization: mine")
        assert code == 0 and "Authorization: Bearer secret-1" in out and "host=allowed.test" in out, out
        # the rules come back as given (lower-cased keys), with the lists
        net = netd.get(sid).json()["network"]
        assert net["rules"] == RULES, net
    finally:
        netd.delete(sid)


def curl_v(d, sid, *args):
    """curl -v: the exit code, the body and curl's account of the TLS session."""
    r = d.run(sid, "curl", "-sSv", "-m", "5", "--noproxy", "*", *args, timeout=30)
    return r["exitCode"], r["stdout"], r["stderr"]


@pytest.mark.parametrize("network", [
    {"allowOut": ["allowed.test", "*.allowed.test"], "denyOut": DENY_ALL, "rules": RULES},
    {"rules": RULES},
], ids=["domains", "internet"])
def test_rules_over_https(netd, network):
    sid = create(netd, network)["sandboxID"]
    try:
        # curl trusts the daemon's CA through the sandbox's bundle: no -k;
        # HTTP/1.1 is all that is offered, whatever the client would like
        code, out, err = curl_v(netd, sid, "--http2", "-H", "Authorization: mine", "-H", "X-Keep: 1",
                                "https://allowed.test/headers")
        assert code == 0, (out, err)
        assert "issuer: O=sbxd; CN=sbxd egress CA" in err and "subject: CN=allowed.test" in err, err
        assert "ALPN: server accepted http/1.1" in err, err
        lines = out.splitlines()
        assert lines[0] == f"sni=allowed.test host=allowed.test addr={WEB1}", out
        h = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        assert h["authorization"] == "Bearer secret-1" and h["x-team"] == "b" and h["x-keep"] == "1", h
        # a wildcard's name gets its own leaf and its own rules
        code, out, err = curl_v(netd, sid, "https://api.allowed.test/headers")
        assert code == 0 and "X-Wild: yes" in out and "Authorization" not in out, out
        assert "subject: CN=api.allowed.test" in err, err
        # kept alive, with a body: each request rewritten, the framing right
        code, out = curl(netd, sid, "-d", "x" * 50000, "https://allowed.test/headers",
                         "https://allowed.test/headers")
        assert code == 0 and out.count("Authorization: Bearer secret-1") == 2, out
        # Python too (the bundle, through SSL_CERT_FILE)
        r = netd.py(sid, "import urllib.request\n"
                    "print(urllib.request.urlopen('https://allowed.test/headers', timeout=5).read().decode())",
                    timeout=30)
        assert r["exitCode"] == 0 and "Authorization: Bearer secret-1" in r["stdout"], r
    finally:
        netd.delete(sid)


def test_https_without_rules_passes_through(netd):
    """A host without rules: the sandbox talks TLS with the destination
    itself and sees its real certificate."""
    sid = create(netd, {"rules": RULES})["sandboxID"]
    try:
        code, out, err = curl_v(netd, sid, "-k", "https://other.test/headers")
        assert code == 0 and out.startswith(f"sni=other.test host=other.test addr={WEB2}"), out
        assert "issuer: CN=sbxt test CA" in err and "sbxd egress CA" not in err, err
        # the sandbox does not trust the test CA: a pass-through is not verified by anyone but it
        code, out, err = curl_v(netd, sid, "https://other.test/headers")
        assert code != 0 and "host=" not in out, out
    finally:
        netd.delete(sid)


def test_https_upstream_that_does_not_verify_is_refused(netd):
    rules = {"untrusted.test": [{"transform": {"headers": {"Authorization": "Bearer secret-2"}}}],
             "*.allowed.test": [{"transform": {"headers": {"X-Wild": "yes"}}}]}
    sid = create(netd, {"rules": rules})["sandboxID"]
    try:
        # a self-signed certificate; a name its certificate does not cover
        # (*.allowed.test is one label deep): closed, even to a client that
        # would not check
        for url in ("https://untrusted.test/headers", "https://deep.api.allowed.test/headers"):
            code, out = curl(netd, sid, "-k", url)
            assert code != 0 and "host=" not in out, (url, out)
        log = netd.req("GET", f"/sandboxes/{sid}/network/log").json()["records"]
        denied = [r for r in log if r["protocol"] == "tls" and r["verdict"] == "denied"]
        assert any(r["name"] == "untrusted.test" and "does not verify" in r["rule"] for r in denied), log
        assert any(r["name"] == "deep.api.allowed.test" and "does not verify" in r["rule"] for r in denied), log
        # the same destination with a good name still works
        _, h = headers_seen(netd, sid, "https://api.allowed.test/headers")
        assert h.get("x-wild") == "yes", h
    finally:
        netd.delete(sid)


def test_egress_ca_is_trusted_inside_and_its_key_stays_outside(netd):
    ca_dir = os.path.join(netd.state_dir, "egress-ca")
    key = os.path.join(ca_dir, "ca.key")
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    with open(os.path.join(ca_dir, "ca.crt")) as f:
        ca = f.read()
    with open(key) as f:
        key_body = "".join(f.read().splitlines()[1:-1])
    sid = create(netd, {})["sandboxID"]
    try:
        assert netd.read(sid, "/usr/local/share/ca-certificates/sbxd-egress-ca.crt").decode() == ca
        bundle = netd.read(sid, "/etc/ssl/certs/ca-certificates.crt").decode()
        assert bundle.endswith(ca) and bundle.count(ca) == 1 and bundle.count("BEGIN CERTIFICATE") > 100
        r = netd.sh(sid, "echo $NODE_EXTRA_CA_CERTS $SSL_CERT_FILE $REQUESTS_CA_BUNDLE")
        assert r["stdout"].split() == ["/usr/local/share/ca-certificates/sbxd-egress-ca.crt",
                                       "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt"]
        # the key is nowhere inside: not at its host path, not in any file
        # the sandbox was given (a scan of /etc, /usr/local and /root)
        r = netd.sh(sid, f"cat {key}; grep -lF 'PRIVATE' /usr/local/share/ca-certificates/* /etc/ssl/certs/*.crt;"
                         f" grep -rlF '{key_body[:40]}' /etc /usr/local /root")
        assert r["stdout"] == "" and "No such file" in r["stderr"], r
    finally:
        netd.delete(sid)


def test_template_builds_do_not_keep_the_egress_ca(netd):
    """A build's sandbox becomes a template layer: the daemon's CA must not
    end up in it (templates are shared; a sandbox of another daemon would
    trust this one's CA).  Sandboxes of the new template get it at boot."""
    import requests
    import time
    hdr = {"X-API-KEY": netd.key}  # the default organisation's, so netd's helpers see the sandbox
    t = requests.post(netd.url + "/v3/templates", json={"name": "tls-build"}, headers=hdr, timeout=60).json()
    tid = t["templateID"]
    try:
        body = {"fromTemplate": "base", "steps": [{"type": "RUN", "args": [
            "ls /usr/local/share/ca-certificates > /tmp/ca-files; tail -c 100 /etc/ssl/certs/ca-certificates.crt"
            " > /tmp/bundle-end; echo \"$SSL_CERT_FILE\" > /tmp/ca-env"]}]}
        r = requests.post(f"{netd.url}/v2/templates/{tid}/builds/{t['buildID']}", json=body, headers=hdr, timeout=60)
        assert r.status_code == 202, r.text
        deadline = time.time() + 240
        while True:
            st = requests.get(f"{netd.url}/templates/{tid}/builds/{t['buildID']}/status", headers=hdr,
                              timeout=60).json()
            if st["status"] in ("ready", "error") or time.time() > deadline:
                break
            time.sleep(0.2)
        assert st["status"] == "ready", st
        r = requests.post(netd.url + "/sandboxes", json={"templateID": tid, "timeout": 120}, headers=hdr, timeout=60)
        assert r.status_code == 201, r.text
        sid = r.json()["sandboxID"]
        try:
            with open(os.path.join(netd.state_dir, "egress-ca", "ca.crt")) as f:
                ca = f.read()
            assert netd.read(sid, "/tmp/ca-files") == b"" and netd.read(sid, "/tmp/ca-env") == b"\n"
            assert "END CERTIFICATE" in netd.read(sid, "/tmp/bundle-end").decode()
            assert ca[-100:] != netd.read(sid, "/tmp/bundle-end").decode()
            bundle = netd.read(sid, "/etc/ssl/certs/ca-certificates.crt").decode()
            assert bundle.endswith(ca) and bundle.count(ca) == 1
        finally:
            netd.delete(sid)
    finally:
        requests.delete(f"{netd.url}/templates/{tid}", headers=hdr, timeout=60)


def test_rules_grant_nothing(netd):
    """A host with rules is not allowed by them."""
    sid = create(netd, {"allowOut": ["allowed.test"], "denyOut": DENY_ALL, "rules": RULES})["sandboxID"]
    try:
        code, out = curl(netd, sid, "http://other.test/headers")
        assert "host=" not in out, out
    finally:
        netd.delete(sid)


def test_put_network_replaces_rules(netd):
    sid = create(netd, {"rules": RULES})["sandboxID"]
    try:
        r = netd.req("PUT", f"/sandboxes/{sid}/network",
                     json={"rules": {"allowed.test": [{"transform": {"headers": {"X-New": "1"}}}]}})
        assert r.status_code == 204, r.text
        _, h = headers_seen(netd, sid, "http://allowed.test/headers")
        assert h.get("x-new") == "1" and "authorization" not in h, h
        # HTTPS too: every sandbox trusts the egress CA, rules or not at create
        _, h = headers_seen(netd, sid, "https://allowed.test/headers")
        assert h.get("x-new") == "1", h
        assert netd.req("PUT", f"/sandboxes/{sid}/network", json={}).status_code == 204
        _, h = headers_seen(netd, sid, "http://allowed.test/headers")
        assert "x-new" not in h, h
    finally:
        netd.delete(sid)


@pytest.mark.parametrize("network,what", [
    ({"rules": {"*": [{"transform": {"headers": {"a": "b"}}}]}}, "*"),
    ({"rules": {"allowed.test": [{"transform": {"headers": {"Bad Name": "b"}}}]}}, "Bad Name"),
    ({"rules": {"allowed.test": [{"transform": {"headers": {"X": "a\r\nInjected: 1"}}}]}}, "X"),
    ({"rules": {"allowed.test": [{"transform": {"headers": {"Content-Length": "5"}}}]}}, "Content-Length"),
    ({"rules": {"allowed.test": {"transform": {}}}}, "list"),
    ({"rules": {"allowed.test": [{"transform": {"headers": {"X": "x" * 9000}}}]}}, "bytes"),
    ({"egressProxy": {"address": "nocolon"}}, "host:port"),
    ({"egressProxy": {"address": "198.51.100.10:99999"}}, "host:port"),
    ({"egressProxy": {"address": PROXY, "password": "p"}}, "username"),
    ({"egressProxy": {"address": PROXY, "username": "u" * 256}}, "255"),
], ids=["bare-star", "header-name", "crlf", "framing", "not-a-list", "too-big", "no-port", "bad-port",
        "password-alone", "long-user"])
def test_invalid_rules_and_proxies_are_refused(netd, network, what):
    r = create(netd, network, expect=400)
    assert what in r["message"], r


def test_egress_proxy_carries_tcp(netd, peers):
    tok = peers.token("px")
    sid = create(netd, {"egressProxy": {"address": PROXY}})["sandboxID"]
    try:
        # HTTP to an address: through the proxy, by address
        code, out = curl(netd, sid, f"http://{WEB2}/{tok}")
        assert code == 0 and out == f"host={WEB2} addr={WEB2}\n", out
        assert peers.socks_seen(f"user= atyp=1 dst={WEB2}:80"), peers.socks_seen("")
        # any port, any protocol on TCP: the banner of 8080
        r = netd.run(sid, "python3", "-c", "import socket; s = socket.create_connection(('198.51.100.10', 8080), 3);"
                     " print(s.recv(100).decode(), end='')", timeout=30)
        assert r["stdout"] == "tcp ok\n", r
        assert peers.socks_seen(f"atyp=1 dst={WEB1}:8080")
        # the proxy is not visible from inside: the destination is the original one
        info = netd.get(sid).json()["network"]
        assert info["egressProxy"] == {"address": PROXY}, info
    finally:
        netd.delete(sid)


def test_egress_proxy_after_filtering_by_name_with_authentication(netd, peers):
    net = {"allowOut": ["allowed.test"], "denyOut": DENY_ALL, "rules": RULES,
           "egressProxy": {"address": PROXY, "username": "sbxt", "password": "sbxt-pass"}}
    sid = create(netd, net)["sandboxID"]
    try:
        before = len(peers.socks_seen("dst="))
        # a domain rule's flow: remote DNS (ATYP 3, the name), with the rules' headers
        first, h = headers_seen(netd, sid, "http://allowed.test/headers")
        assert first == f"host=allowed.test addr={WEB1}" and h["authorization"] == "Bearer secret-1", h
        assert peers.socks_seen("user=sbxt atyp=3 dst=allowed.test:80")
        code, out = curl(netd, sid, "-k", "https://allowed.test/")
        assert code == 0 and "sni=allowed.test" in out, out
        assert peers.socks_seen("user=sbxt atyp=3 dst=allowed.test:443")
        # what the filter denies never reaches the proxy
        n = len(peers.socks_seen("dst="))
        code, out = curl(netd, sid, "http://other.test/")
        assert "host=" not in out
        code, out = curl(netd, sid, f"http://{WEB2}:8080/")
        assert len(peers.socks_seen("dst=")) == n > before
        info = netd.get(sid).json()["network"]
        assert info["egressProxy"] == {"address": PROXY, "username": "sbxt"}, info
    finally:
        netd.delete(sid)


def test_egress_proxy_fails_closed(netd, peers):
    # a wrong password, and a port where no proxy listens: nothing goes straight out
    for proxy in ({"address": PROXY, "username": "sbxt", "password": "wrong"}, {"address": f"{WEB2}:1080"}):
        sid = create(netd, {"egressProxy": proxy})["sandboxID"]
        try:
            code, out = curl(netd, sid, f"http://{WEB2}/")
            assert code != 0 and "host=" not in out, (proxy, out)
        finally:
            netd.delete(sid)


def test_egress_proxy_in_a_private_range_is_never_dialled(netd):
    sid = create(netd, {"egressProxy": {"address": "10.77.0.10:80"}})["sandboxID"]
    try:
        code, out = curl(netd, sid, f"http://{WEB2}/")
        assert code != 0 and "ok" not in out, out
        log = netd.req("GET", f"/sandboxes/{sid}/network/log").json()["records"]
        assert any("egressProxy 10.77.0.10:80" in r["rule"] and r["verdict"] == "denied" for r in log), log
    finally:
        netd.delete(sid)


def test_rules_and_proxy_survive_a_daemon_restart(peers, tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--dns-upstream", UPSTREAM])
    try:
        net = {"allowOut": ["allowed.test"], "denyOut": DENY_ALL, "rules": RULES,
               "egressProxy": {"address": PROXY, "username": "sbxt", "password": "sbxt-pass"}}
        sid = create(d, net)["sandboxID"]
        d.kill9()
        d.start(args=["--dns-upstream", UPSTREAM])
        n = len(peers.socks_seen("user=sbxt atyp=3 dst=allowed.test:80"))
        _, h = headers_seen(d, sid, "http://allowed.test/headers")
        assert h["authorization"] == "Bearer secret-1", h
        assert len(peers.socks_seen("user=sbxt atyp=3 dst=allowed.test:80")) == n + 1
    finally:
        d.cleanup()
        d.stop()
