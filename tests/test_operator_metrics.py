"""The operator's GET /metrics (api/metrics.c, docs/operations.md).

A real daemon serves it two ways: on the API's address with
--metrics-token (Bearer), and on an address of its own with
--metrics-listen (no credential).  Each scrape is parsed strictly by the
small parser below (the text exposition format 0.0.4: HELP and TYPE
before the samples of a family, names and label syntax, escapes, no
duplicate series, histograms cumulative with +Inf equal to _count) and
again by prometheus_client's parser (Debian's python3-prometheus-client).
Counters are checked to move with a create, an exec and a destroy in the
API, a failed create and exec, a denied DNS query and a failed webhook
attempt; a tenant's key never reads it.
"""
import math
import os
import re
import time

import pytest
import requests

from conftest import Sbxd, free_port

TOKEN = "operator-token-0123456789"
WEIRD_ORG = 'ops "blue"\\team'

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """{(name, ((label, value), ...)): float}, and {family: type}; asserts
    the format's rules on the way."""
    assert text.endswith("\n"), "the last line must end with a line feed"
    types, helps, samples = {}, {}, {}
    current = None
    for line in text[:-1].split("\n"):
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and doc, line
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and typ in TYPES, line
            assert name not in types, f"TYPE twice for {name}"
            types[name] = typ
            current = name
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(m.lastindex)
        fam = current
        assert fam is not None, f"sample before any TYPE: {line}"
        if types[fam] == "histogram":
            assert name in (fam + "_bucket", fam + "_sum", fam + "_count"), line
        else:
            assert name == fam, f"{name} under the TYPE of {fam}"
        if types[fam] == "counter":
            assert fam.endswith("_total"), fam
        pairs = tuple((k, unescape(v)) for k, v in re.findall(LABEL, labels))
        assert len({k for k, _ in pairs}) == len(pairs), f"a label twice: {line}"
        v = float(value)
        assert not math.isnan(v), line
        key = (name, pairs)
        assert key not in samples, f"series twice: {line}"
        samples[key] = v
    for fam, typ in types.items():
        assert fam in helps, f"no HELP for {fam}"
        if typ == "histogram":
            buckets = [(float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == fam + "_bucket"]
            assert buckets, fam
            assert [b for b, _ in buckets] == sorted(b for b, _ in buckets), f"{fam}: le not ascending"
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{fam}: buckets not cumulative"
            assert buckets[-1][0] == math.inf, fam
            assert buckets[-1][1] == samples[(fam + "_count", ())], fam
            assert samples[(fam + "_sum", ())] >= 0, fam
    return samples, types


def check_with_prometheus_client(text):
    parser = pytest.importorskip("prometheus_client.parser")
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert fams["sbxd_create_seconds"].type == "histogram"
    assert fams["sbxd_creates"].type == "counter"  # the client strips _total


def val(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))] if labels else samples[(name, ())]


def labelled(samples, name, **labels):
    key = tuple(labels.items())
    for (n, pairs), v in samples.items():
        if n == name and tuple(sorted(pairs)) == tuple(sorted(key)):
            return v
    raise KeyError((name, labels))


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    d = Sbxd(str(tmp_path_factory.mktemp("metrics") / "state"))
    d.metrics_port = free_port()
    d.start(env=dict(os.environ, SBXD_WEBHOOK_RETRY_SCALE="0.001"),
            args=["--metrics-token", TOKEN, "--metrics-listen", f"127.0.0.1:{d.metrics_port}",
                  "--outbound-allow", "127.0.0.1/32"])
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


def scrape(d):
    r = requests.get(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, _ = parse(r.text)
    return samples


def test_scrape_is_strict_text_format(md):
    r = requests.get(f"http://127.0.0.1:{md.metrics_port}/metrics", timeout=30)
    assert r.status_code == 200
    samples, types = parse(r.text)
    check_with_prometheus_client(r.text)
    for fam in ("sbxd_sandboxes", "sbxd_org_sandboxes", "sbxd_engine_sandboxes", "sbxd_spares",
                "sbxd_spare_misses_total", "sbxd_teardowns_pending", "sbxd_create_seconds",
                "sbxd_exec_start_seconds", "sbxd_destroy_seconds", "sbxd_filter_decisions_total",
                "sbxd_webhook_queue_depth", "sbxd_webhook_attempts_total", "process_open_fds",
                "process_threads", "process_resident_memory_bytes"):
        assert fam in types, fam
    # the daemon's own process, from /proc/self
    assert 10 < val(samples, "process_open_fds") <= val(samples, "process_max_fds")
    assert val(samples, "process_threads") > 4
    assert val(samples, "process_resident_memory_bytes") > 1 << 20
    # the separate address serves nothing else
    assert requests.get(f"http://127.0.0.1:{md.metrics_port}/health", timeout=10).status_code == 404
    assert requests.post(f"http://127.0.0.1:{md.metrics_port}/metrics", timeout=10).status_code == 405


def test_counters_move_with_create_exec_destroy(md):
    before = scrape(md)
    sid = md.create()
    md.run(sid, "true")
    during = scrape(md)
    assert md.delete(sid).status_code in (200, 204)
    after = scrape(md)
    assert val(after, "sbxd_creates_total") == val(before, "sbxd_creates_total") + 1
    assert val(after, "sbxd_create_seconds_count") == val(before, "sbxd_create_seconds_count") + 1
    assert val(after, "sbxd_create_seconds_sum") > val(before, "sbxd_create_seconds_sum")
    assert val(after, "sbxd_execs_total") == val(before, "sbxd_execs_total") + 1
    assert val(after, "sbxd_exec_start_seconds_count") == val(before, "sbxd_exec_start_seconds_count") + 1
    assert val(after, "sbxd_destroys_total") == val(before, "sbxd_destroys_total") + 1
    assert val(after, "sbxd_destroy_seconds_count") == val(before, "sbxd_destroy_seconds_count") + 1
    # the live sandbox in the census, by state and by its organisation
    assert val(during, "sbxd_sandboxes", state="running") == val(before, "sbxd_sandboxes", state="running") + 1
    assert labelled(during, "sbxd_org_sandboxes", org="default", state="running") >= 1
    assert val(during, "sbxd_engine_sandboxes") >= 1
    hits = val(after, "sbxd_spare_hits_total") + val(after, "sbxd_spare_misses_total")
    assert hits == val(before, "sbxd_spare_hits_total") + val(before, "sbxd_spare_misses_total") + 1


def test_failures_are_counted_by_kind(md):
    before = scrape(md)
    r = md.req("POST", "/sandboxes", json={"templateID": "no-such-template"})
    assert r.status_code == 400, r.text
    after = scrape(md)
    fail = dict(kind="invalid")
    assert val(after, "sbxd_create_failures_total", **fail) == val(before, "sbxd_create_failures_total", **fail) + 1
    assert val(after, "sbxd_creates_total") == val(before, "sbxd_creates_total")
    assert val(after, "sbxd_create_seconds_count") == val(before, "sbxd_create_seconds_count")


def test_filter_decisions_count_a_denied_name(md):
    before = scrape(md)
    sid = md.create(network={"denyOut": ["0.0.0.0/0"]})
    md.sh(sid, "getent hosts example.com || true", timeout=30)
    md.delete(sid)
    after = scrape(md)
    denied = dict(kind="dns", verdict="denied")
    assert labelled(after, "sbxd_filter_decisions_total", **denied) > \
        labelled(before, "sbxd_filter_decisions_total", **denied)


def test_webhook_failures_and_queue(md):
    closed = free_port()
    r = md.req("POST", "/events/webhooks", json={"name": "m", "url": f"http://127.0.0.1:{closed}/hook",
                                                 "events": ["sandbox.lifecycle.created"], "signatureSecret": ""})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    before = scrape(md)
    sid = md.create()
    md.delete(sid)
    deadline = time.time() + 30
    while True:
        now = scrape(md)
        tries = labelled(now, "sbxd_webhook_attempts_total", outcome="retry") + \
            labelled(now, "sbxd_webhook_attempts_total", outcome="failed")
        if tries > labelled(before, "sbxd_webhook_attempts_total", outcome="retry") + \
                labelled(before, "sbxd_webhook_attempts_total", outcome="failed"):
            break
        assert time.time() < deadline, "no failed webhook attempt counted"
        time.sleep(0.2)
    assert val(now, "sbxd_webhook_queue_depth") >= 0
    md.req("DELETE", f"/events/webhooks/{wid}")


def test_token_on_the_api_address(md):
    url = md.url + "/metrics"
    ok = requests.get(url, headers={"Authorization": "Bearer " + TOKEN}, timeout=30)
    assert ok.status_code == 200 and ok.text.startswith("# HELP"), ok.text[:200]
    parse(ok.text)
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer " + TOKEN + "x"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer " + TOKEN[:-1]}, timeout=10).status_code == 401
    # a tenant's key, either way it may be sent, is not the operator's
    assert requests.get(url, headers={"Authorization": "Bearer " + md.key}, timeout=10).status_code == 401
    assert requests.get(url, headers={"X-API-Key": md.key}, timeout=10).status_code == 401


def test_org_label_is_escaped(md):
    key = md.new_key(org=WEIRD_ORG)
    r = requests.post(md.url + "/sandboxes", json={"templateID": "base", "timeout": 120},
                      headers={"Authorization": "Bearer " + key}, timeout=60)
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        samples = scrape(md)
        assert labelled(samples, "sbxd_org_sandboxes", org=WEIRD_ORG, state="running") == 1
    finally:
        requests.delete(md.url + f"/sandboxes/{sid}", headers={"Authorization": "Bearer " + key}, timeout=60)


def test_without_a_token_the_path_does_not_exist(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        assert requests.get(d.url + "/metrics", timeout=10).status_code == 401
        r = d.req("GET", "/metrics")
        assert r.status_code == 404, r.text
        assert "sbxd_" not in r.text
    finally:
        d.stop()


def test_bad_flags_are_refused(tmp_path):
    import subprocess
    from conftest import SBXD
    for args in (["--metrics-token", "short"], ["--metrics-token", "has a space in it 0123"],
                 ["--metrics-listen", "nowhere"]):
        p = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:1"] + args,
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2 and "metrics" in p.stderr, (args, p.stderr)
