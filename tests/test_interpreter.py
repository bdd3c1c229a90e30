"""The code interpreter (E2B's port 49999): POST /execute streams NDJSON
from a stateful context (a Jupyter kernel); the contexts API creates,
lists, restarts and removes contexts.  Calls go through the envd dialect:
headers E2b-Sandbox-Id, X-Access-Token and E2b-Sandbox-Port: 49999, which
the daemon forwards to the interpreter server inside the sandbox
(templates/files/interpreter/server.py).  The SDK's own view of it is
tests/e2b/interpreter.test.mjs."""
import base64
import json
import time

import pytest
import requests

from conftest import Sbxd

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Interp:
    """A client for one sandbox's code interpreter."""

    def __init__(self, url, sid, token):
        self.url = url
        self.sid = sid
        self.headers = {"E2b-Sandbox-Id": sid, "X-Access-Token": token, "E2b-Sandbox-Port": "49999"}

    def req(self, method, path, **kw):
        kw.setdefault("timeout", 120)
        return requests.request(method, self.url + path, headers=self.headers, **kw)

    def execute(self, code, **fields):
        """Run CODE; returns the list of stream events (end included)."""
        body = {"code": code}
        body.update(fields)
        r = self.req("POST", "/execute", json=body)
        assert r.status_code == 200, r.text
        events = [json.loads(line) for line in r.text.splitlines() if line]
        assert events and events[-1] == {"type": "end_of_execution"}, events
        assert all(e["type"] != "end_of_execution" for e in events[:-1])
        return [e for e in events if e["type"] != "keepalive"]

    def main_text(self, code, **fields):
        events = self.execute(code, **fields)
        errors = [e for e in events if e["type"] == "error"]
        assert not errors, errors
        main = [e for e in events if e["type"] == "result" and e["is_main_result"]]
        assert len(main) == 1, events
        return main[0]["text"]

    def create_context(self, **fields):
        r = self.req("POST", "/contexts", json=fields)
        assert r.status_code == 200, r.text
        return r.json()

    def context_ids(self):
        r = self.req("GET", "/contexts")
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()]


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def start_sandbox(d):
    r = d.req("POST", "/sandboxes", json={"templateID": "code_interpreter", "timeout": 600})
    assert r.status_code == 201, r.text
    j = r.json()
    return Interp(d.url, j["sandboxID"], j["envdAccessToken"])


@pytest.fixture(scope="module")
def interp(sbxd):
    it = start_sandbox(sbxd)
    yield it
    sbxd.delete(it.sid)


def test_state_persists_between_executions(interp):
    events = interp.execute("x = 41")
    assert not of_type(events, "result") and not of_type(events, "error")
    assert of_type(events, "number_of_executions")[0]["execution_count"] >= 1
    assert interp.main_text("x + 1") == "42"
    interp.execute("import math")
    assert interp.main_text("math.floor(x / 2)") == "20"


def test_print_is_stdout_before_the_end(interp):
    events = interp.execute('print("hello")\nprint("world")')
    out = of_type(events, "stdout")
    assert "".join(e["text"] for e in out) == "hello\nworld\n"
    assert all(e["timestamp"] for e in out)
    assert events.index(out[-1]) < len(events) - 1


def test_stderr(interp):
    events = interp.execute('import sys\nprint("oops", file=sys.stderr)')
    assert "".join(e["text"] for e in of_type(events, "stderr")) == "oops\n"
    assert not of_type(events, "stdout")


def test_runtime_error_then_later_calls_work(interp):
    events = interp.execute("z = 5\n1/0")
    (err,) = of_type(events, "error")
    assert err["name"] == "ZeroDivisionError"
    assert err["value"] == "division by zero"
    assert isinstance(err["traceback"], str) and "ZeroDivisionError" in err["traceback"]
    assert "1/0" in err["traceback"]
    assert interp.main_text("z * 2") == "10"
    (err,) = of_type(interp.execute("def f(:\n  pass"), "error")
    assert err["name"] == "SyntaxError"
    assert interp.main_text("z") == "5"


def test_matplotlib_chart_is_a_png_result(interp):
    events = interp.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    pngs = [e for e in of_type(events, "result") if "png" in e]
    assert len(pngs) == 1, events
    assert base64.b64decode(pngs[0]["png"]).startswith(PNG_SIGNATURE)
    assert pngs[0]["is_main_result"] is False
    # a figure left open at the end of the cell is shown too, then closed
    events = interp.execute("plt.figure()\nplt.bar([1, 2], [3, 4]);")
    pngs = [e for e in of_type(events, "result") if "png" in e]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]["png"]).startswith(PNG_SIGNATURE)
    assert interp.main_text("len(plt.get_fignums())") == "0"


def test_dataframe_has_html(interp):
    events = interp.execute("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    (res,) = of_type(events, "result")
    assert res["is_main_result"] is True
    assert "<table" in res["html"]
    assert "a" in res["text"] and "x" in res["text"]


def test_string_result_and_display(interp):
    assert interp.main_text("'hello'") == "hello"
    events = interp.execute("display(1)\ndisplay('two')\n3")
    results = of_type(events, "result")
    assert [(r["text"], r["is_main_result"]) for r in results] == [("1", False), ("two", False), ("3", True)]


def test_subprocess_output_is_stdout(interp):
    events = interp.execute("import subprocess\n_ = subprocess.run(['echo', 'sub'])\nimport os\n_ = os.system('echo err >&2')")
    assert "".join(e["text"] for e in of_type(events, "stdout")) == "sub\n"
    assert "".join(e["text"] for e in of_type(events, "stderr")) == "err\n"


def test_shell_and_pip_magics(interp):
    events = interp.execute("!echo from-shell\nimport os\n%cd /tmp\nos.getcwd()")
    # IPython runs `!` commands on a terminal: its lines end in \r\n
    assert "".join(e["text"] for e in of_type(events, "stdout")).replace("\r\n", "\n") == "from-shell\n/tmp\n"
    assert [e["text"] for e in of_type(events, "result")] == ["/tmp"]
    events = interp.execute("%pip --version")
    assert "pip" in "".join(e["text"] for e in of_type(events, "stdout"))
    interp.execute("%cd /home/user")


def test_kernels_have_the_template_environment(interp):
    code = "import os, shutil\n(os.getuid(), os.environ['HOME'], os.environ.get('LANG'), shutil.which('python'))"
    assert interp.main_text(code) == "(0, '/root', 'C.UTF-8', '/opt/venv/bin/python')"


def test_env_vars_apply_to_one_execution(interp):
    code = "import os\nos.environ.get('SBXD_TEST_VAR', 'unset')"
    assert interp.main_text(code, env_vars={"SBXD_TEST_VAR": "on"}) == "on"
    assert interp.main_text(code) == "unset"


def test_stream_is_incremental(interp):
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    t0 = time.monotonic()
    r = interp.req("POST", "/execute", json={"code": code}, stream=True)
    assert r.status_code == 200
    seen = []
    for line in r.iter_lines():
        if line:
            seen.append((json.loads(line), time.monotonic() - t0))
    first = next(t for e, t in seen if e["type"] == "stdout" and e["text"] == "first\n")
    end = next(t for e, t in seen if e["type"] == "end_of_execution")
    assert end - first >= 1.0, seen
    assert seen[-1][0] == {"type": "end_of_execution"}


def test_contexts_create_list_restart_remove(interp):
    ctx = interp.create_context(language="python", cwd="/tmp")
    assert ctx["language"] == "python" and ctx["cwd"] == "/tmp" and ctx["id"]
    cid = ctx["id"]
    assert cid in interp.context_ids()
    assert interp.main_text("import os\nv = 7\nos.getcwd()", context_id=cid) == "/tmp"
    assert interp.main_text("v", context_id=cid) == "7"

    assert interp.req("POST", f"/contexts/{cid}/restart").status_code == 204
    (err,) = of_type(interp.execute("v", context_id=cid), "error")
    assert err["name"] == "NameError"
    assert cid in interp.context_ids()

    assert interp.req("DELETE", f"/contexts/{cid}").status_code == 204
    assert cid not in interp.context_ids()
    r = interp.req("POST", "/execute", json={"code": "1", "context_id": cid})
    assert r.status_code == 404 and "message" in r.json()
    assert interp.req("DELETE", f"/contexts/{cid}").status_code == 404
    assert interp.req("POST", f"/contexts/{cid}/restart").status_code == 404


def test_contexts_are_independent(interp):
    a = interp.create_context()["id"]
    b = interp.create_context(language="python")["id"]
    try:
        interp.execute("whose = 'a'", context_id=a)
        interp.execute("whose = 'b'", context_id=b)
        assert interp.main_text("whose", context_id=a) == "a"
        assert interp.main_text("whose", context_id=b) == "b"
        (err,) = of_type(interp.execute("whose"), "error")  # the default context
        assert err["name"] == "NameError"
    finally:
        for cid in (a, b):
            interp.req("DELETE", f"/contexts/{cid}")


def test_languages(interp):
    r = interp.req("POST", "/contexts", json={"language": "java"})
    assert r.status_code == 400
    assert set(r.json()) == {"code", "message"} and "Java" in r.json()["message"]
    r = interp.req("POST", "/execute", json={"code": "1", "language": "cobol"})
    assert r.status_code == 400 and "python" in r.json()["message"]
    assert interp.main_text("1 + 1", language="python") == "2"
    assert interp.main_text("[1, 2].length", language="javascript") == "2"
    assert interp.main_text("nchar('abc')", language="r") == "[1] 3"
    events = interp.execute("echo one; echo two >&2", language="bash")
    assert "".join(e["text"] for e in of_type(events, "stdout")) == "one\n"
    assert "".join(e["text"] for e in of_type(events, "stderr")) == "two\n"
    r = interp.req("POST", "/execute", json={"code": "1", "language": "python", "context_id": "abc"})
    assert r.status_code == 400
    r = interp.req("POST", "/execute", json={"code": 1})
    assert r.status_code == 400
    langs = sorted(c["language"] for c in interp.req("GET", "/contexts").json())
    assert "python" in langs and "javascript" in langs


def test_bounds(interp):
    r = interp.req("POST", "/contexts", json={"cwd": "relative/path"})
    assert r.status_code == 400
    r = interp.req("POST", "/execute", json={"code": "1", "env_vars": {"A": 1}})
    assert r.status_code == 400
    r = interp.req("GET", "/contexts/" + "x" * 65)
    assert r.status_code == 404
    r = interp.req("GET", "/nothing-here")
    assert r.status_code == 404


def test_kernel_death_is_reported_and_recovered(interp):
    cid = interp.create_context()["id"]
    try:
        interp.execute("doomed = 1", context_id=cid)
        events = interp.execute("import os\nos._exit(3)", context_id=cid)
        (err,) = of_type(events, "error")
        assert err["name"] == "ContextRestarting"
        assert cid in interp.context_ids()
        assert interp.main_text("'doomed' in dir()", context_id=cid) == "False"  # a fresh process
        assert interp.main_text("6 * 7", context_id=cid) == "42"
    finally:
        interp.req("DELETE", f"/contexts/{cid}")


def test_disconnect_interrupts_the_cell(interp):
    cid = interp.create_context()["id"]
    try:
        r = interp.req("POST", "/execute", json={"code": "import time\ntime.sleep(60)\ndone = True",
                                                  "context_id": cid}, stream=True)
        assert r.status_code == 200
        next(r.iter_lines())  # started
        r.close()
        t0 = time.monotonic()
        assert interp.main_text("'done' in dir()", context_id=cid) == "False"
        assert time.monotonic() - t0 < 30
    finally:
        interp.req("DELETE", f"/contexts/{cid}")


def test_a_template_without_an_interpreter(sbxd):
    sid = sbxd.create(template="base")
    try:
        token = sbxd.get(sid).json()["envdAccessToken"]
        it = Interp(sbxd.url, sid, token)
        r = it.req("POST", "/execute", json={"code": "1"})
        assert r.status_code == 502
        assert "has no code interpreter" in r.json()["message"]
    finally:
        sbxd.delete(sid)


def test_access_token_is_required(interp):
    headers = dict(interp.headers)
    del headers["X-Access-Token"]
    r = requests.post(interp.url + "/execute", headers=headers, json={"code": "1"}, timeout=30)
    assert r.status_code == 401


def test_contexts_survive_a_daemon_restart(tmp_path):
    """The daemon keeps no state of its own: the contexts (and their
    variables) are found again from the sandbox's process list."""
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        it = start_sandbox(d)
        it.execute("kept = 'yes'")
        cid = it.create_context(cwd="/tmp")["id"]
        it.execute("other = 1", context_id=cid)
        before = it.req("GET", "/contexts").json()
        d.stop()
        d.start()
        after = it.req("GET", "/contexts").json()
        assert sorted(before, key=lambda c: c["id"]) == sorted(after, key=lambda c: c["id"])
        assert {"id": cid, "language": "python", "cwd": "/tmp"} in after
        assert it.main_text("kept") == "yes"
        assert it.main_text("other", context_id=cid) == "1"
        d.delete(it.sid)
    finally:
        d.cleanup()
        d.stop()
