"""`sbx`, the users' command line (src/cli/, docs/cli.md), against a real
daemon: every command, its exit codes, its --json output and its one-line
errors; `sbx shell` driven through tmux (a real terminal: raw mode,
resize, Ctrl-C); `sbx cp` both ways with 20 MB; `sbx mcp` against a
scripted Streamable HTTP peer on loopback (and the daemon's own /mcp once
it serves one)."""
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest

from conftest import ROOT

SBX = os.environ.get("SBX_BIN") or os.path.join(ROOT, "build", "sbx")  # SBX_BIN: a sanitizer build


def env_for(sbxd, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBX")}
    env.update(SBXD_URL=sbxd.url, SBXD_API_KEY=sbxd.key, XDG_CONFIG_HOME="/nonexistent-sbx-config")
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def sbx(sbxd, *args, input=None, env=None, timeout=120):
    e = env if env is not None else env_for(sbxd)
    return subprocess.run([SBX, *args], input=input, capture_output=True, env=e, timeout=timeout)


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.decode()


def one_error_line(r, code, *words):
    """A failure: exit CODE and exactly one line on stderr, naming WORDS."""
    err = r.stderr.decode()
    assert r.returncode == code, (r.returncode, r.stdout, err)
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("sbx: "), err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def box(sbxd):
    sid = ok(sbx(sbxd, "create", "base", "--timeout", "900")).strip()
    yield sid
    sbxd.delete(sid)


# ---- sandboxes ----

def test_create_ls_info_kill(sbxd):
    out = ok(sbx(sbxd, "create", "--timeout", "120", "--env", "FOO=bar baz", "--env", "N=1",
                 "--metadata", "project=cli", "--metadata", "owner=me"))
    sid = out.strip()
    assert sid.startswith("sbx") and "\n" not in sid
    got = sbxd.get(sid).json()
    assert got["metadata"] == {"project": "cli", "owner": "me"}
    assert got["templateID"] == "base"

    table = ok(sbx(sbxd, "ls")).splitlines()
    assert table[0].split()[:3] == ["SANDBOX", "ID", "TEMPLATE"]
    row = [line for line in table if line.startswith(sid)]
    assert len(row) == 1 and "running" in row[0] and "project=cli" in row[0]
    listed = json.loads(ok(sbx(sbxd, "--json", "ls")))
    assert sid in [s["sandboxID"] for s in listed]

    info = ok(sbx(sbxd, "info", sid))
    assert f"id             {sid}" in info and "status         running" in info
    assert json.loads(ok(sbx(sbxd, "info", sid, "--json")))["sandboxID"] == sid
    # the environment reaches every command
    assert ok(sbx(sbxd, "exec", sid, "--", "sh", "-c", 'echo "$FOO/$N"')) == "bar baz/1\n"

    assert ok(sbx(sbxd, "kill", sid)) == ""
    assert sbxd.get(sid).json()["status"] == "stopped"
    assert sid not in ok(sbx(sbxd, "ls"))
    assert sid in ok(sbx(sbxd, "ls", "--all"))
    one_error_line(sbx(sbxd, "kill", sid), 1, "sandbox not found", "404")


def test_create_from_an_unknown_template_and_bad_values(sbxd):
    one_error_line(sbx(sbxd, "create", "no-such-template"), 1, "unknown template")
    one_error_line(sbx(sbxd, "create", "--timeout", "99999"), 1, "timeout", "400")
    one_error_line(sbx(sbxd, "create", "--timeout", "ten"), 2, "--timeout")
    one_error_line(sbx(sbxd, "create", "--env", "NOEQUALS"), 2, "KEY=VALUE")


def test_pause_resume_logs(sbxd):
    sid = ok(sbx(sbxd, "create", "--timeout", "120")).strip()
    try:
        assert ok(sbx(sbxd, "pause", sid)) == ""
        assert sbxd.get(sid).json()["status"] == "paused"
        assert "paused" in [line for line in ok(sbx(sbxd, "ls")).splitlines() if sid in line][0]
        one_error_line(sbx(sbxd, "exec", sid, "--", "true"), 1, "paused", "409")
        one_error_line(sbx(sbxd, "pause", sid), 1, "already paused")
        assert json.loads(ok(sbx(sbxd, "--json", "resume", sid, "--timeout", "200")))["status"] == "running"
        assert ok(sbx(sbxd, "exec", sid, "--", "echo", "back")) == "back\n"

        logs = ok(sbx(sbxd, "logs", sid))
        lines = logs.splitlines()
        assert any(line.endswith("sandbox created") for line in lines), logs
        assert any(line.endswith("sandbox paused") for line in lines), logs
        assert any(line.endswith("sandbox resumed") for line in lines), logs
        entries = json.loads(ok(sbx(sbxd, "logs", sid, "--json")))["logs"]
        assert [e["message"] for e in entries][:3] == ["sandbox created", "sandbox paused", "sandbox resumed"]

        # --follow prints as it comes and ends when the sandbox does
        f = subprocess.Popen([SBX, "logs", "--follow", sid], stdout=subprocess.PIPE, env=env_for(sbxd))
        time.sleep(1.5)
        sbxd.delete(sid)
        out, _ = f.communicate(timeout=20)
        assert f.returncode == 0
        assert out.decode().splitlines()[-1].endswith("sandbox killed (request)"), out
    finally:
        sbxd.delete(sid)


# ---- exec ----

def test_exec_exit_codes_and_streams(sbxd, box):
    r = sbx(sbxd, "exec", box, "--", "bash", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3 and r.stdout == b"out\n" and r.stderr == b"err\n"
    assert sbx(sbxd, "exec", box, "--", "true").returncode == 0
    assert sbx(sbxd, "exec", box, "--", "no-such-command-here").returncode == 127
    assert sbx(sbxd, "exec", box, "--", "bash", "-c", "kill -9 $$").returncode == 137
    # options before the id, cwd, user, env
    out = ok(sbx(sbxd, "exec", "--cwd", "/tmp", "--user", "root", "--env", "X=y", box, "--",
                 "sh", "-c", 'echo "$(pwd) $(id -un) $X"'))
    assert out == "/tmp root y\n"
    r = sbx(sbxd, "exec", "--timeout", "1", box, "--", "sleep", "30")
    assert r.returncode == 137
    one_error_line(r, 137, "timed out")
    # binary output passes unchanged
    out = sbx(sbxd, "exec", box, "--", "head", "-c", "300000", "/dev/urandom").stdout
    assert len(out) == 300000
    # --json: the daemon's events, one a line
    r = sbx(sbxd, "--json", "exec", box, "--", "sh", "-c", "echo hi; exit 4")
    assert r.returncode == 4
    lines = r.stdout.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert events[0]["type"] == "start" and events[-1] == {"type": "end", "exitCode": 4, "signal": 0,
                                                            "timedOut": False}


def test_exec_streams_output_as_it_comes(sbxd, box):
    p = subprocess.Popen([SBX, "exec", box, "--", "sh", "-c", "echo first; sleep 3; echo second"],
                         stdout=subprocess.PIPE, env=env_for(sbxd))
    t0 = time.monotonic()
    assert p.stdout.readline() == b"first\n"
    assert time.monotonic() - t0 < 2.5  # before the command ended
    assert p.stdout.readline() == b"second\n"
    assert p.wait(timeout=20) == 0


def test_exec_stdin_and_ctrl_c(sbxd, box):
    data = os.urandom(200000)
    r = sbx(sbxd, "exec", "-i", box, "--", "sha256sum", input=data)
    assert r.returncode == 0 and r.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()
    # without -i the command's stdin is empty, whatever sbx's is
    assert ok(sbx(sbxd, "exec", box, "--", "wc", "-c", input=b"ignored")) == "0\n"
    # SIGINT to sbx goes to the command, which ends with its code
    p = subprocess.Popen([SBX, "exec", box, "--", "sleep", "100"], env=env_for(sbxd))
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=15) == 130
    ps = sbxd.run(box, "ps", "-eo", "args")["stdout"]
    assert "sleep 100" not in ps


# ---- cp ----

def test_cp_20mb_both_ways(sbxd, box, tmp_path):
    data = os.urandom(20 * 1000 * 1000)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    assert ok(sbx(sbxd, "cp", str(src), f"{box}:/tmp/big.bin")) == ""
    remote = sbxd.run(box, "sha256sum", "/tmp/big.bin")["stdout"].split()[0]
    assert remote == hashlib.sha256(data).hexdigest()

    back = tmp_path / "back.bin"
    assert ok(sbx(sbxd, "cp", f"{box}:/tmp/big.bin", str(back))) == ""
    assert back.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["back.bin", "big.bin"]  # no temporary file left

    # a directory as either destination keeps the name; - is stdin or stdout
    ok(sbx(sbxd, "cp", str(src), f"{box}:/tmp/dir/"))
    assert sbxd.run(box, "stat", "-c", "%s", "/tmp/dir/big.bin")["stdout"] == "20000000\n"
    d = tmp_path / "d"
    d.mkdir()
    ok(sbx(sbxd, "cp", f"{box}:/tmp/dir/big.bin", str(d)))
    assert (d / "big.bin").read_bytes() == data
    ok(sbx(sbxd, "cp", "-", f"{box}:notes.txt", input=b"from stdin\n"))
    assert sbx(sbxd, "cp", f"{box}:notes.txt", "-").stdout == b"from stdin\n"
    entry = json.loads(ok(sbx(sbxd, "--json", "cp", str(src), f"{box}:/tmp/j.bin")))
    assert entry[0]["path"] == "/tmp/j.bin" and entry[0]["size"] == len(data)


def test_cp_errors(sbxd, box, tmp_path):
    dest = tmp_path / "x"
    one_error_line(sbx(sbxd, "cp", f"{box}:/tmp/not-there", str(dest)), 1, "404")
    assert os.listdir(tmp_path) == []
    one_error_line(sbx(sbxd, "cp", str(tmp_path / "missing"), f"{box}:/tmp/m"), 4, "No such file")
    one_error_line(sbx(sbxd, "cp", "a", "b"), 2, "ID:PATH")
    one_error_line(sbx(sbxd, "cp", f"{box}:/a", f"{box}:/b"), 2, "ID:PATH")
    one_error_line(sbx(sbxd, "cp", f"{box}:/etc", str(dest)), 1, "400")


# ---- shell, through a real terminal ----

def tmux(*args, check=True):
    return subprocess.run(["tmux", "-L", "sbx-test", *args], capture_output=True, text=True, check=check)


def pane_text():
    return tmux("capture-pane", "-p", "-t", "sbxcli").stdout


def wait_pane(pred, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = pane_text()
        if pred(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in the pane:\n{pane_text()}")


@pytest.fixture
def tmux_session(sbxd, tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/deps.sh installs it)")
    rc_file = tmp_path / "rc"
    env = env_for(sbxd)
    exports = " ".join(f"{k}='{env[k]}'" for k in ("SBXD_URL", "SBXD_API_KEY", "XDG_CONFIG_HOME"))

    def start(command):
        tmux("new-session", "-d", "-s", "sbxcli", "-x", "120", "-y", "40",
             f"env {exports} TERM=xterm-256color {command}; echo rc=$? > {rc_file}; sleep 60")
        tmux("set-option", "-t", "sbxcli", "status", "off")
        tmux("set-option", "-t", "sbxcli", "window-size", "manual")
        return rc_file

    yield start
    tmux("kill-server", check=False)


def test_shell_through_tmux(sbxd, box, tmux_session):
    rc_file = tmux_session(f"{SBX} shell {box}")
    wait_pane(lambda t: t.rstrip().endswith(":~$"), "the prompt")
    tmux("send-keys", "-t", "sbxcli", "echo hi-$((6*7)); stty size", "Enter")
    wait_pane(lambda t: "hi-42\n40 120" in t, "the command's output and the first size")

    tmux("resize-window", "-t", "sbxcli", "-x", "100", "-y", "30")
    time.sleep(0.5)
    tmux("send-keys", "-t", "sbxcli", "clear; stty size", "Enter")
    wait_pane(lambda t: "30 100" in t, "the new size")

    # Ctrl-C is a keystroke for the sandbox's terminal: it interrupts the
    # sleep and the shell goes on
    tmux("send-keys", "-t", "sbxcli", "sleep 100", "Enter")
    wait_pane(lambda t: "sleep 100" in t, "the sleep")
    time.sleep(0.5)
    t0 = time.monotonic()
    tmux("send-keys", "-t", "sbxcli", "C-c")
    tmux("send-keys", "-t", "sbxcli", "echo after-$((1+1))", "Enter")
    wait_pane(lambda t: "^C" in t and "after-2" in t, "the interrupted sleep", timeout=10)
    assert time.monotonic() - t0 < 10
    assert "sleep 100" not in sbxd.run(box, "ps", "-eo", "args")["stdout"]

    tmux("send-keys", "-t", "sbxcli", "exit 7", "Enter")
    deadline = time.time() + 15
    while not rc_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert rc_file.read_text().strip() == "rc=7"


def test_cp_progress_bar_on_a_terminal(sbxd, box, tmp_path, tmux_session):
    src = tmp_path / "p.bin"
    src.write_bytes(os.urandom(5 * 1000 * 1000))
    rc_file = tmux_session(f"{SBX} cp {src} {box}:/tmp/p.bin")
    deadline = time.time() + 30
    while not rc_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert rc_file.read_text().strip() == "rc=0"
    text = pane_text()
    assert "p.bin [" in text and "100%" in text and "5.0/5.0 MB" in text, text
    # not on a pipe
    r = sbx(sbxd, "cp", str(src), f"{box}:/tmp/p2.bin")
    assert r.returncode == 0 and r.stderr == b""


# ---- template build ----

def test_template_build_through_the_api(sbxd, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("copied in\n")
    (ctx / "Dockerfile").write_text(
        "FROM base\n"
        "USER root\n"
        "# a comment\n"
        "RUN echo built > /etc/sbx-cli-test && \\\n"
        "    echo twice >> /etc/sbx-cli-test\n"
        "COPY hello.txt /opt/hello.txt\n"
        "ENV GREETING=\"hi there\"\n")
    name = "cli-" + uuid.uuid4().hex[:8]
    try:
        build_and_check(sbxd, tmp_path, ctx, name)
    finally:
        # the templates go, and with them the layers only their builds made
        for n in (name, name + "b", name + "c"):
            r = sbxd.req("GET", f"/templates/aliases/{n}")
            if r.status_code == 200:
                assert sbxd.req("DELETE", f"/templates/{r.json()['templateID']}").status_code == 204


def build_and_check(sbxd, tmp_path, ctx, name):
    r = sbx(sbxd, "template", "build", name, "--file", str(ctx / "Dockerfile"), "--tag", "v1")
    out = ok(r)
    assert "RUN echo built" in out and "COPY hello.txt" in out, out
    assert out.splitlines()[-1].startswith(f"{name}: ready (template ")
    sid = ok(sbx(sbxd, "create", f"{name}:v1")).strip()
    try:
        out = ok(sbx(sbxd, "exec", sid, "--", "sh", "-c", 'cat /etc/sbx-cli-test /opt/hello.txt; echo "$GREETING"'))
        assert out == "built\ntwice\ncopied in\nhi there\n"
    finally:
        sbxd.delete(sid)

    # options as steps, --json, and a failing step: exit 1, one line
    st = json.loads(ok(sbx(sbxd, "--json", "template", "build", name + "b", "--run", "true")))
    assert st["status"] == "ready"
    r = sbx(sbxd, "template", "build", name + "c", "--run", "echo no > /etc/x")
    one_error_line(r, 1, "build failed")
    assert "Permission denied" in r.stdout.decode()
    one_error_line(sbx(sbxd, "template", "build"), 2, "usage")
    bad = tmp_path / "Bad"
    bad.write_text("FROM base\nHEALTHCHECK CMD true\n")
    one_error_line(sbx(sbxd, "template", "build", "x", "-f", str(bad)), 2, "HEALTHCHECK")


# ---- errors and configuration ----

def test_errors_are_one_line_with_distinct_codes(sbxd, box, tmp_path):
    one_error_line(sbx(sbxd, "ls", env=env_for(sbxd, SBXD_API_KEY="sk-sb-" + "0" * 40)), 1, "invalid API key", "401")
    one_error_line(sbx(sbxd, "ls", env=env_for(sbxd, SBXD_API_KEY=None)), 2, "no API key")
    one_error_line(sbx(sbxd, "info", "not an id"), 2, "invalid sandbox id")
    one_error_line(sbx(sbxd, "info", "sbx00000000000000000000"), 1, "sandbox not found")
    one_error_line(sbx(sbxd, "info"), 2, "usage")
    one_error_line(sbx(sbxd, "frobnicate"), 2, "unknown command")
    one_error_line(sbx(sbxd, "ls", "--bogus"), 2, "--bogus")
    one_error_line(sbx(sbxd, "exec", box), 2, "usage")
    one_error_line(sbx(sbxd, "exec", box, "ls", "-l"), 2, "-l")
    one_error_line(sbx(sbxd, "ls", env=env_for(sbxd, SBXD_URL="ftp://x")), 2, "http://")
    closed = f"http://127.0.0.1:{free_port_nobody_listens()}"
    one_error_line(sbx(sbxd, "ls", env=env_for(sbxd, SBXD_URL=closed)), 3, "cannot reach")
    assert sbx(sbxd, "--help").returncode == 0 and b"sbx exec" in sbx(sbxd, "--help").stdout


def free_port_nobody_listens():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_file(sbxd, tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "sbx").mkdir(parents=True)
    (home / ".config" / "sbx" / "config").write_text(
        f"# sbx\nurl = {sbxd.url}/\napi_key = \"{sbxd.key}\"\n")
    env = env_for(sbxd, SBXD_URL=None, SBXD_API_KEY=None, SBX_CONFIG=None, XDG_CONFIG_HOME=None, HOME=str(home))
    assert json.loads(ok(sbx(sbxd, "--json", "ls", env=env))) is not None
    # the environment wins over the file
    env["SBXD_API_KEY"] = "sk-sb-" + "1" * 40
    one_error_line(sbx(sbxd, "ls", env=env), 1, "invalid API key")
    bad = tmp_path / "bad-config"
    bad.write_text("url: nope\n")
    one_error_line(sbx(sbxd, "ls", env=env_for(sbxd, SBX_CONFIG=str(bad), SBXD_API_KEY=None)), 2, "KEY = VALUE")


# ---- mcp ----

class ScriptedMcp(http.server.BaseHTTPRequestHandler):
    """A Streamable HTTP MCP server of a few lines: initialize gives a
    session, tools/list answers over SSE (after a notification of its
    own), `slow` takes a second, `boom` fails with 500; everything seen is
    recorded."""
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self):
        ScriptedMcp.seen.append(("DELETE", None, dict(self.headers)))
        self.reply(204 if self.headers.get("Mcp-Session-Id") == "sess-1" else 404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = json.loads(body)
        ScriptedMcp.seen.append(("POST", msg, dict(self.headers)))
        if self.headers.get("Authorization") != "Bearer sk-sb-scripted":
            return self.reply(401, b'{"code":401,"message":"invalid API key"}')
        if "text/event-stream" not in self.headers.get("Accept", ""):
            return self.reply(406, b'{"message":"accept"}')
        method = msg.get("method")
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "scripted", "version": "1"}}
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result},
                                              indent=2).encode(), headers=[("Mcp-Session-Id", "sess-1")])
        if self.headers.get("Mcp-Session-Id") != "sess-1":
            return self.reply(400, b'{"message":"no session"}')
        if "id" not in msg:
            return self.reply(202)
        if method == "tools/list":
            note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
            res = {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": [{"name": "run_code"}]}}
            sse = f"event: message\ndata: {json.dumps(note)}\n\nevent: message\ndata: {json.dumps(res)}\n\n"
            return self.reply(200, sse.encode(), ctype="text/event-stream")
        if method == "slow":
            time.sleep(1.5)
        if method == "boom":
            return self.reply(500, b'{"code":500,"message":"scripted failure"}')
        self.reply(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"method": method}}).encode())


def test_mcp_bridge_against_a_scripted_peer(sbxd, tmp_path):
    ScriptedMcp.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedMcp)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = env_for(sbxd, SBXD_URL=f"http://127.0.0.1:{srv.server_address[1]}", SBXD_API_KEY="sk-sb-scripted")
        p = subprocess.Popen([SBX, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)

        def send(m):
            p.stdin.write((json.dumps(m) + "\n").encode())
            p.stdin.flush()

        def recv():
            line = p.stdout.readline()
            assert line.endswith(b"\n"), line
            return json.loads(line)

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}})
        assert recv()["result"]["serverInfo"]["name"] == "scripted"  # pretty JSON made one line
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert recv()["method"] == "notifications/message"
        assert recv() == {"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "run_code"}]}}
        # requests run side by side: a ping is not held up by a slow call
        send({"jsonrpc": "2.0", "id": 3, "method": "slow"})
        time.sleep(0.2)
        send({"jsonrpc": "2.0", "id": 4, "method": "ping"})
        assert recv()["id"] == 4
        assert recv()["id"] == 3
        # a refusal is a JSON-RPC error for that id, not silence
        send({"jsonrpc": "2.0", "id": "b", "method": "boom"})
        err = recv()
        assert err["id"] == "b" and "scripted failure" in err["error"]["message"]
        p.stdin.write(b"not json\n")
        p.stdin.flush()
        assert recv()["error"]["code"] == -32700
        p.stdin.close()
        assert p.wait(timeout=15) == 0
        assert b"scripted failure" in p.stderr.read()
    finally:
        srv.shutdown()
    posts = [(m, h) for verb, m, h in ScriptedMcp.seen if verb == "POST"]
    assert "Mcp-Session-Id" not in posts[0][1]
    for m, h in posts[1:]:
        assert h["Mcp-Session-Id"] == "sess-1" and h["MCP-Protocol-Version"] == "2025-06-18", (m, h)
    assert posts[1][0] == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    # the end of stdin ends the session
    assert [(v, h.get("Mcp-Session-Id")) for v, _, h in ScriptedMcp.seen if v == "DELETE"] == [("DELETE", "sess-1")]


def test_mcp_bridge_reports_an_unreachable_daemon(sbxd):
    env = env_for(sbxd, SBXD_URL=f"http://127.0.0.1:{free_port_nobody_listens()}")
    msg = {"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}}
    r = sbx(sbxd, "mcp", input=(json.dumps(msg) + "\n").encode(), env=env)
    assert r.returncode == 0
    ans = json.loads(r.stdout)
    assert ans["id"] == 9 and "cannot reach" in ans["error"]["message"]


def test_mcp_bridge_against_the_daemon(sbxd):
    """The daemon's own /mcp (Streamable HTTP), where it serves one."""
    probe = sbxd.req("POST", "/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                     headers={"Accept": "application/json, text/event-stream"})
    if probe.status_code == 404:
        pytest.skip("this daemon has no /mcp yet")
    msgs = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    r = sbx(sbxd, "mcp", input="".join(json.dumps(m) + "\n" for m in msgs).encode())
    assert r.returncode == 0, r.stderr
    answers = {a.get("id"): a for a in map(json.loads, r.stdout.decode().splitlines())}
    assert answers[1]["result"]["protocolVersion"]
    names = [t["name"] for t in answers[2]["result"]["tools"]]
    assert "run_code" in names and "run_command" in names
