"""E2B's template build API over plain HTTP: its errors, and that a
template belongs to the organisation that built it.  The happy paths as
the SDK drives them are in tests/e2b/template.test.mjs."""
import hashlib
import time
import urllib.parse

import pytest
import requests

BASE_BUILD = {"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["echo built > /tmp/marker"]}]}


class Client:
    def __init__(self, sbxd, org):
        self.sbxd = sbxd
        self.key = sbxd.new_key(org=org, e2b=True)

    def req(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        headers = kw.pop("headers", {})
        headers["X-API-KEY"] = self.key
        return requests.request(method, self.sbxd.url + path, headers=headers, **kw)

    def new_build(self, name):
        r = self.req("POST", "/v3/templates", json={"name": name})
        assert r.status_code == 202, r.text
        return r.json()

    def build(self, name, body=BASE_BUILD):
        t = self.new_build(name)
        r = self.req("POST", f"/v2/templates/{t['templateID']}/builds/{t['buildID']}", json=body)
        assert r.status_code == 202, r.text
        deadline = time.time() + 240
        while time.time() < deadline:
            s = self.req("GET", f"/templates/{t['templateID']}/builds/{t['buildID']}/status").json()
            if s["status"] in ("ready", "error"):
                return t, s
            time.sleep(0.2)
        raise AssertionError("build did not finish")


@pytest.fixture(scope="module")
def orgs(sbxd):
    a, b = Client(sbxd, "tpl-a"), Client(sbxd, "tpl-b")
    yield a, b
    for c in (a, b):
        for t in c.req("GET", "/v2/templates").json():
            c.req("DELETE", f"/templates/{t['templateID']}")


@pytest.fixture(scope="module")
def built(orgs):
    a, _ = orgs
    t, s = a.build("owned")
    assert s["status"] == "ready", s
    return t


def test_request_errors(orgs):
    a, _ = orgs
    assert a.req("POST", "/v3/templates", json={}).status_code == 400
    r = a.req("POST", "/v3/templates", json={"name": "../etc"})
    assert r.status_code == 400 and "invalid template name" in r.json()["message"]
    assert a.req("POST", "/v3/templates", json={"name": "ok:bad tag"}).status_code == 400
    assert a.req("POST", "/v3/templates", json={"name": "x", "cpuCount": 0}).status_code == 400
    # a template of the machine is not anyone's to build over
    r = a.req("POST", "/v3/templates", json={"name": "base"})
    assert r.status_code == 409, r.text


@pytest.mark.parametrize("body,message", [
    ({"fromImage": "ubuntu:22.04"}, "fromImage 'ubuntu:22.04' cannot be pulled here"),
    ({"fromImage": "debian:bookworm", "fromImageRegistry": {"type": "registry", "username": "u",
                                                            "password": "p"}}, "fromImageRegistry"),
    ({"fromTemplate": "no-such-template"}, "unknown template 'no-such-template'"),
    ({"fromTemplate": "base", "steps": [{"type": "CMD", "args": ["x"]}]}, "unknown type 'CMD'"),
    ({"fromTemplate": "base", "steps": [{"type": "RUN", "args": []}]}, "wrong number of arguments"),
    ({"fromTemplate": "base", "steps": [{"type": "ENV", "args": ["1BAD", "x"]}]}, "invalid variable name"),
    ({"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["a", "/a"], "filesHash": "0" * 64}]},
     "were not uploaded"),
    ({"fromTemplate": "base", "fromImage": "debian:bookworm"}, "not both"),
])
def test_build_start_errors(orgs, body, message):
    a, _ = orgs
    t = a.new_build("bad-start")
    r = a.req("POST", f"/v2/templates/{t['templateID']}/builds/{t['buildID']}", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"], r.text


def test_build_twice_conflicts_and_logs(orgs, built):
    a, _ = orgs
    tid, bid = built["templateID"], built["buildID"]
    r = a.req("POST", f"/v2/templates/{tid}/builds/{bid}", json=BASE_BUILD)
    assert r.status_code == 409, r.text
    s = a.req("GET", f"/templates/{tid}/builds/{bid}/status").json()
    assert s["status"] == "ready" and s["templateID"] == tid and s["buildID"] == bid
    msgs = [e["message"] for e in s["logEntries"]]
    assert any(m.startswith("[1/1] RUN echo built") for m in msgs), msgs
    assert len(s["logs"]) == len(msgs)
    # logsOffset skips what was read; past the end nothing
    s2 = a.req("GET", f"/templates/{tid}/builds/{bid}/status?logsOffset=1").json()
    assert [e["message"] for e in s2["logEntries"]] == msgs[1:]
    assert a.req("GET", f"/templates/{tid}/builds/{bid}/status?logsOffset=100000").json()["logEntries"] == []
    assert a.req("GET", f"/templates/{tid}/builds/{bid}/status?logsOffset=-1").status_code == 400
    logs = a.req("GET", f"/templates/{tid}/builds/{bid}/logs?limit=2").json()["logs"]
    assert [e["message"] for e in logs] == msgs[:2]
    back = a.req("GET", f"/templates/{tid}/builds/{bid}/logs?direction=backward&limit=1").json()["logs"]
    assert back[0]["message"].startswith("Build finished")
    assert a.req("GET", f"/templates/{tid}/builds/{bid}/logs?level=error").json()["logs"] == []
    assert a.req("GET", f"/templates/{tid}/builds/{bid}/logs?direction=up").status_code == 400


def test_failed_build_reason(orgs):
    a, _ = orgs
    _, s = a.build("fails", {"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["exit 7"]}]})
    assert s["status"] == "error"
    assert s["reason"]["message"] == "the RUN step failed with exit code 7"
    assert s["reason"]["step"] == "1"


def test_templates_belong_to_their_organisation(sbxd, orgs, built):
    a, b = orgs
    tid, bid = built["templateID"], built["buildID"]
    # the owner sees it
    assert a.req("GET", "/templates/aliases/owned").status_code == 200
    assert a.req("GET", f"/templates/{tid}").json()["builds"][0]["buildID"] == bid
    assert [t["names"] for t in a.req("GET", "/v2/templates").json() if t["templateID"] == tid] == [["owned"]]
    # nobody else does
    assert b.req("GET", "/templates/aliases/owned").status_code == 404
    for method, path in [("GET", f"/templates/{tid}"), ("GET", f"/templates/{tid}/tags"),
                         ("GET", f"/templates/{tid}/builds/{bid}/status"),
                         ("GET", f"/templates/{tid}/builds/{bid}/logs"),
                         ("GET", f"/templates/{tid}/files/{'a' * 64}"),
                         ("PATCH", f"/v2/templates/{tid}"), ("DELETE", f"/templates/{tid}")]:
        r = b.req(method, path, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
    assert b.req("POST", "/templates/tags", json={"target": "owned", "tags": ["x"]}).status_code == 404
    assert b.req("DELETE", "/templates/tags", json={"name": "owned", "tags": ["default"]}).status_code == 404
    assert all(t["templateID"] != tid for t in b.req("GET", "/v2/templates").json())
    # nor can start it, by name or id; the owner can
    for name in ("owned", tid):
        r = b.req("POST", "/v2/sandboxes", json={"templateID": name, "timeout": 60})
        assert r.status_code == 400 and "unknown template" in r.json()["message"], r.text
    r = a.req("POST", "/v2/sandboxes", json={"templateID": "owned", "timeout": 60})
    assert r.status_code == 201, r.text
    a.req("DELETE", f"/sandboxes/{r.json()['sandboxID']}")
    # the same name is free in another organisation
    t2, s2 = b.build("owned")
    assert s2["status"] == "ready" and t2["templateID"] != tid
    # public: others may start it by its id
    assert a.req("PATCH", f"/v2/templates/{tid}", json={"public": True}).json() == {"names": ["owned"]}
    r = b.req("POST", "/v2/sandboxes", json={"templateID": tid, "timeout": 60})
    assert r.status_code == 201, r.text
    b.req("DELETE", f"/sandboxes/{r.json()['sandboxID']}")
    assert a.req("PATCH", f"/templates/{tid}", json={"public": False}).status_code == 200


def test_layers_are_not_names(orgs, built):
    a, _ = orgs
    for name in ("_l-" + "0" * 40, "_i-debian-bookworm"):
        r = a.req("POST", "/v2/sandboxes", json={"templateID": name, "timeout": 60})
        assert r.status_code == 400 and "unknown template" in r.json()["message"], r.text


def test_uploads_need_their_signature(orgs, built):
    a, b = orgs
    tid = built["templateID"]
    data = b"not really a tarball"
    h = hashlib.sha256(data).hexdigest()
    link = a.req("GET", f"/templates/{tid}/files/{h}")
    assert link.status_code == 201, link.text
    assert link.json()["present"] is False
    url = link.json()["url"]
    assert url.startswith(a.sbxd.url + f"/templates/{tid}/files/{h}?")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    plain = a.sbxd.url + f"/templates/{tid}/files/{h}"
    # no signature, a wrong one, a changed expiry, another hash: 401, nothing kept
    bad = [plain, url.replace(q["signature"][0], "0" * 64),
           url.replace("expires=" + q["expires"][0], "expires=" + str(int(q["expires"][0]) + 1)),
           url.replace(h, "b" * 64)]
    for u in bad:
        r = requests.put(u, data=data, timeout=30)
        assert r.status_code == 401, (u, r.text)
    assert a.req("GET", f"/templates/{tid}/files/{h}").json()["present"] is False
    assert a.req("GET", f"/templates/{tid}/files/nothex").status_code == 400
    r = requests.put(url, data=data, timeout=30)
    assert r.status_code == 200, r.text
    assert a.req("GET", f"/templates/{tid}/files/{h}").json()["present"] is True
    # uploads are the organisation's: another one's build cannot use it
    t = b.new_build("copy-other")
    r = b.req("POST", f"/v2/templates/{t['templateID']}/builds/{t['buildID']}",
              json={"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["x", "/x"], "filesHash": h}]})
    assert r.status_code == 400 and "were not uploaded" in r.json()["message"], r.text


def test_tags_errors(orgs, built):
    a, _ = orgs
    assert a.req("POST", "/templates/tags", json={"target": "owned"}).status_code == 400
    assert a.req("POST", "/templates/tags", json={"target": "owned", "tags": ["bad tag"]}).status_code == 400
    r = a.req("POST", "/templates/tags", json={"target": "owned:nope", "tags": ["x"]})
    assert r.status_code == 404 and "no tag 'nope'" in r.json()["message"], r.text
    r = a.req("DELETE", "/templates/tags", json={"name": "owned", "tags": ["nope"]})
    assert r.status_code == 404, r.text
    r = a.req("POST", "/templates/tags", json={"target": "owned", "tags": ["t1"]})
    assert r.status_code == 201 and r.json() == {"buildID": built["buildID"], "tags": ["t1"]}, r.text
    tags = {t["tag"]: t["buildID"] for t in a.req("GET", "/templates/owned/tags").json()}
    assert tags == {"default": built["buildID"], "t1": built["buildID"]}
    assert a.req("DELETE", "/templates/tags", json={"name": "owned", "tags": ["t1"]}).status_code == 204
