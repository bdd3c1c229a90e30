"""E2B's envd file transfer at the HTTP level: gzip-encoded uploads (and a
"gzip bomb" that must fail cleanly), X-Metadata-* headers kept as
user.e2b.* extended attributes, the upload answer's exact shape, several
files in one multipart body, signed URLs that expired, and the control
plane's answers to ids of other shapes and to bad list and metrics
filters.  The SDK's view of the same is in tests/e2b (sdk.test.mjs)."""
import base64
import gzip
import hashlib
import io
import json
import time
import zlib

import pytest
import requests

MAX_UPLOAD = 100 << 20  # the seeds' limit, which envd uploads get


@pytest.fixture(scope="module")
def box(sbxd):
    r = sbxd.req("POST", "/sandboxes", json={"templateID": "base", "timeout": 600})
    assert r.status_code == 201, r.text
    sid, token = r.json()["sandboxID"], r.json()["envdAccessToken"]
    yield sbxd, sid, token
    sbxd.delete(sid)


def envd(box, method, path, **kw):
    d, sid, token = box
    headers = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}
    headers.update(kw.pop("headers", {}))
    return requests.request(method, d.url + path, headers=headers, timeout=120, **kw)


def upload_raw(box, path, data, **headers):
    headers.setdefault("Content-Type", "application/octet-stream")
    return envd(box, "POST", "/files", params={"path": path}, data=data, headers=headers)


def stat(box, path):
    r = envd(box, "POST", "/filesystem.Filesystem/Stat", json={"path": path},
             headers={"Connect-Protocol-Version": "1"})
    assert r.status_code == 200, r.text
    return r.json()["entry"]


def no_temp_files(box, directory="/home/user"):
    d, sid, _ = box
    r = d.sh(sid, f"ls -A {directory} | grep -c '^\\.sbxd-' || true")
    return r["stdout"].strip() == "0"


def test_gzip_upload_raw_and_multipart(box):
    text = b"compressible " * 10000
    r = upload_raw(box, "/home/user/gz/raw.txt", gzip.compress(text), **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json() == [{"name": "raw.txt", "path": "/home/user/gz/raw.txt", "type": "file"}]
    # the file holds the decompressed bytes
    back = envd(box, "GET", "/files", params={"path": "/home/user/gz/raw.txt"})
    assert back.status_code == 200 and back.content == text
    # two gzip members are one stream, as Go's reader takes them
    r = upload_raw(box, "/home/user/gz/two.txt", gzip.compress(b"one ") + gzip.compress(b"two"),
                   **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert envd(box, "GET", "/files", params={"path": "/home/user/gz/two.txt"}).content == b"one two"
    # a gzip-encoded multipart body with two files
    boundary = "XyZ"
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n".encode()
        + content + b"\r\n" for name, content in [("/home/user/gz/m1.txt", b"first"), ("/home/user/gz/m2.txt", b"second")]
    ) + f"--{boundary}--\r\n".encode()
    r = envd(box, "POST", "/files", data=gzip.compress(body),
             headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert [e["path"] for e in r.json()] == ["/home/user/gz/m1.txt", "/home/user/gz/m2.txt"]
    assert envd(box, "GET", "/files", params={"path": "/home/user/gz/m2.txt"}).content == b"second"


def test_gzip_download_when_accepted(box):
    text = b"download me " * 5000
    assert upload_raw(box, "/home/user/gzdown.txt", text).status_code == 200
    r = envd(box, "GET", "/files", params={"path": "/home/user/gzdown.txt"},
             headers={"Accept-Encoding": "gzip"}, stream=True)
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    raw = r.raw.read(decode_content=False)
    assert len(raw) < len(text) // 10 and gzip.decompress(raw) == text
    # not asked (or refused with q=0): plain bytes
    for ae in ("identity", "gzip;q=0"):
        r = envd(box, "GET", "/files", params={"path": "/home/user/gzdown.txt"},
                 headers={"Accept-Encoding": ae}, stream=True)
        assert "Content-Encoding" not in r.headers and r.raw.read(decode_content=False) == text


def test_gzip_bomb_fails_cleanly(box):
    d, sid, _ = box
    # 150 MB of zeros in about 150 KB: more than the upload limit once inflated
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    bomb = b"".join(z.compress(chunk) for _ in range(150)) + z.flush()
    assert len(bomb) < 1 << 20
    t0 = time.time()
    r = upload_raw(box, "/home/user/bomb.bin", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    assert r.json() == {"code": 413, "message": f"upload too large (max {MAX_UPLOAD} bytes once decompressed)"}
    assert time.time() - t0 < 60
    # nothing was left behind, and the daemon goes on
    assert d.sh(sid, "test -e /home/user/bomb.bin; echo $?")["stdout"].strip() == "1"
    assert no_temp_files(box)
    assert d.sh(sid, "echo alive")["stdout"] == "alive\n"


@pytest.mark.parametrize("body,msg", [
    (b"this is not gzip at all", "error decompressing request body: incorrect header check"),
    (gzip.compress(b"cut short " * 100)[:-12], "error decompressing request body: unexpected end of the gzip stream"),
    (gzip.compress(b"x") + b"trailing garbage", "error decompressing request body: incorrect header check"),
], ids=["not-gzip", "truncated", "trailing-garbage"])
def test_bad_gzip_is_400(box, body, msg):
    r = upload_raw(box, "/home/user/badgz.txt", body, **{"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text
    assert r.json() == {"code": 400, "message": msg}
    assert no_temp_files(box)


def test_unsupported_content_encoding_is_400(box):
    r = upload_raw(box, "/home/user/br.txt", b"x", **{"Content-Encoding": "br"})
    assert r.status_code == 400
    assert r.json() == {"code": 400, "message": "unsupported Content-Encoding: br, supported: [gzip]"}


def test_metadata_headers_become_user_e2b_attributes(box):
    d, sid, _ = box
    r = upload_raw(box, "/home/user/meta.txt", b"m",
                   **{"X-Metadata-Author": "ada", "x-metadata-Purpose": "a test", "X-Metadata-": "dropped"})
    assert r.status_code == 200, r.text
    # the upload answer: name, path, type, and the metadata the file has
    assert r.json() == [{"name": "meta.txt", "path": "/home/user/meta.txt", "type": "file",
                         "metadata": {"author": "ada", "purpose": "a test"}}]
    attrs = d.py(sid, "import os, json; p='/home/user/meta.txt'; "
                      "print(json.dumps({a: os.getxattr(p, a).decode() for a in os.listxattr(p)}))")
    assert json.loads(attrs["stdout"]) == {"user.e2b.author": "ada", "user.e2b.purpose": "a test"}
    assert stat(box, "/home/user/meta.txt")["metadata"] == {"author": "ada", "purpose": "a test"}
    # set inside the sandbox, seen outside; other namespaces are not metadata
    d.py(sid, "import os; os.setxattr('/home/user/meta.txt', 'user.e2b.origin', b'inside'); "
              "os.setxattr('/home/user/meta.txt', 'user.other', b'x')")
    assert stat(box, "/home/user/meta.txt")["metadata"] == {"author": "ada", "purpose": "a test", "origin": "inside"}
    # a rewrite replaces the set; without metadata headers the answer is exactly {name, path, type}
    r = upload_raw(box, "/home/user/meta.txt", b"m2")
    assert r.json() == [{"name": "meta.txt", "path": "/home/user/meta.txt", "type": "file"}]
    assert "metadata" not in stat(box, "/home/user/meta.txt")


@pytest.mark.parametrize("headers,msg", [
    ({"X-Metadata-k": "caf\u00e9".encode("latin-1")},
     'invalid metadata: metadata value for key "k" contains non-printable-ASCII byte 0xe9'),
    ({"X-Metadata-" + "k" * 247: "v"}, 'invalid metadata: metadata key "' + "k" * 64 + '..." exceeds 246 bytes'),
    ({"X-Metadata-k": "v" * 1025}, 'invalid metadata: metadata value for key "k" exceeds 1024 bytes'),
    ({f"X-Metadata-k{i}": "v" for i in range(65)}, "invalid metadata: more than 64 X-Metadata-* headers"),
], ids=["non-ascii", "long-key", "long-value", "too-many"])
def test_invalid_metadata_is_400(box, headers, msg):
    r = upload_raw(box, "/home/user/badmeta.txt", b"x", **headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"code": 400, "message": msg}
    d, sid, _ = box
    assert d.sh(sid, "test -e /home/user/badmeta.txt; echo $?")["stdout"].strip() == "1"


def sign(path, op, token, exp=None, user=""):
    raw = f"{path}:{op}:{user}:{token}" + (f":{exp}" if exp is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode().rstrip("=")


def test_signed_url_expired_and_invalid(box):
    d, sid, token = box
    assert upload_raw(box, "/home/user/signed.txt", b"signed").status_code == 200
    path = "/home/user/signed.txt"
    future = int(time.time()) + 60
    ok = requests.get(d.url + "/files", params={"path": path, "signature": sign(path, "read", token, future),
                                                "signature_expiration": future}, timeout=30)
    assert ok.status_code == 200 and ok.content == b"signed"
    past = int(time.time()) - 1
    r = requests.get(d.url + "/files", params={"path": path, "signature": sign(path, "read", token, past),
                                               "signature_expiration": past}, timeout=30)
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "signature is already expired"}
    r = requests.post(d.url + "/files", params={"path": path, "signature": sign(path, "write", token, past),
                                                "signature_expiration": past},
                      data=b"x", headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "signature is already expired"}
    # a signature nobody made, or a read signature used to write
    r = requests.get(d.url + "/files", params={"path": path, "signature": "v1_forged"}, timeout=30)
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "invalid signature"}
    r = requests.post(d.url + "/files", params={"path": path, "signature": sign(path, "read", token)},
                      data=b"x", headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "invalid signature"}
    assert envd(box, "GET", "/files", params={"path": path}).content == b"signed"


def test_several_files_in_one_multipart_upload(box):
    files = [("file", ("/home/user/several/a.txt", b"A")), ("file", ("/home/user/several/b.txt", b"")),
             ("file", ("/home/user/several/c.txt", b"C" * 100000))]
    r = envd(box, "POST", "/files", files=files)
    assert r.status_code == 200, r.text
    assert r.json() == [{"name": n, "path": f"/home/user/several/{n}", "type": "file"}
                        for n in ("a.txt", "b.txt", "c.txt")]
    for name, content in (("a.txt", b"A"), ("b.txt", b""), ("c.txt", b"C" * 100000)):
        assert envd(box, "GET", "/files", params={"path": f"/home/user/several/{name}"}).content == content
    # one path for several files is E2B's error
    r = envd(box, "POST", "/files", params={"path": "/home/user/several/one.txt"},
             files=[("file", ("x", b"1")), ("file", ("y", b"2"))])
    assert r.status_code == 400
    assert r.json()["message"].startswith("you cannot upload multiple files to the same path")


def test_ids_of_other_shapes_are_not_found(sbxd):
    # a well-formed id of another system names no sandbox: 404, as E2B answers
    for other in ("i7xq2m4k9w3b8n5p1r6t", "sbx_ABC", "sbx_a-b", "abc"):
        r = sbxd.req("DELETE", f"/sandboxes/{other}")
        assert r.status_code == 404 and r.json() == {"code": 404, "message": "sandbox not found"}, other
        assert sbxd.req("GET", f"/sandboxes/{other}").status_code == 404
    # what cannot be an id at all is still refused before anything is looked up
    for bad in ("sbx_a.b", "a" * 40, "sbx_%C3%A9", "sbx_a%20b"):
        r = sbxd.req("DELETE", f"/sandboxes/{bad}")
        assert r.status_code == 400 and r.json() == {"code": 400, "message": "invalid sandbox id"}, bad


def test_list_and_metrics_filters_are_checked(box):
    d, sid, _ = box
    r = d.req("GET", "/v2/sandboxes", params={"order": "sideways"})
    assert r.status_code == 400 and r.json()["message"] == "order must be asc or desc"
    r = d.req("GET", "/v2/sandboxes", params={"startedAfter": "yesterday"})
    assert r.status_code == 400
    assert r.json()["message"] == "startedAfter must be an RFC 3339 date-time (e.g. 2025-01-02T03:04:05Z)"
    ids = lambda **p: [s["sandboxID"] for s in d.req("GET", "/v2/sandboxes", params=p).json()]
    assert sid in ids(startedAfter="2000-01-01T00:00:00+02:00", startedBefore="2999-01-01T00:00:00.5Z")
    assert sid not in ids(startedBefore="2000-01-01T00:00:00Z")
    assert sid not in ids(template="pyodide") and sid in ids(template="base")
    for params, msg in [({"start": "soon"}, "start must be a unix time in seconds"),
                        ({"end": "-5"}, "end must be a unix time in seconds"),
                        ({"start": "200", "end": "100"}, "start must not be after end")]:
        r = d.req("GET", f"/sandboxes/{sid}/metrics", params=params)
        assert r.status_code == 400 and r.json()["message"] == msg, params
    now = int(time.time())
    assert len(d.req("GET", f"/sandboxes/{sid}/metrics", params={"start": now - 60, "end": now + 60}).json()) >= 1
    assert d.req("GET", f"/sandboxes/{sid}/metrics", params={"start": 0, "end": now - 600}).json() == []
