"""The agent templates (templates/claude.spec, codex.spec, browser.spec)
doing real work, with no internet:

- `claude -p` and `codex exec` run for real against a scripted model
  server (tests/model_server.py) that this module starts in the test
  peers' "internet" namespace (tests/netpeers.py), which the sandboxes
  reach through their allow list.  The server asks for a tool call that
  writes a script into the workspace, then one that runs it; the test
  checks the script, the file the run wrote, and that the CLI sent the
  key the sandbox was given and returned the run's output to the model.
- `--version` of both; `npm install` at run time through the sandbox's
  network, from an npm registry the model server also plays.
- Playwright (playwright-core, in the browser template) drives the
  template's headless Chromium over CDP, and a Chromium of its own, to a
  page served inside the same sandbox, and reads its title.

Templates that are not built on this machine are skipped (the test
command builds them: SBXD_TEST_TEMPLATES in scripts/deps.sh).  Uses the
session's network peers: run as
`flock /tmp/sbxd-peers.lock /usr/bin/python3 -m pytest ... tests/test_agent_templates.py`.
"""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import Sbxd
import model_server

TEMPLATES = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")
MODEL_ADDR, MODEL_PORT = "198.51.100.10", 8787      # netpeers.WEB1, a port no other peer uses
MODEL_URL = f"http://{MODEL_ADDR}:{MODEL_PORT}"
UPSTREAM = "198.51.100.53"                          # netpeers.DNS1
# only the model server: what an operator's allow list for an agent looks like
ALLOW_MODEL = {"allowOut": [MODEL_ADDR], "denyOut": ["0.0.0.0/0"]}
PROMPT = "Write hello.py in the workspace and run it."


def need(template):
    if not os.path.exists(os.path.join(TEMPLATES, template, "template.json")):
        pytest.skip(f"the {template} template is not built on this machine (sbxd template build {template})")


@pytest.fixture(scope="module")
def model(peers, tmp_path_factory):
    """The scripted model server, in the peers' internet namespace."""
    logs = tmp_path_factory.mktemp("model")
    tag = "tag" + uuid.uuid4().hex[:8]
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(["ip", "netns", "exec", peers.inet_ns, sys.executable,
                             os.path.join(here, "model_server.py"), MODEL_ADDR, str(MODEL_PORT), str(logs)],
                            env=dict(os.environ, MODEL_TAG=tag), stdin=subprocess.DEVNULL,
                            stdout=open(logs / "server.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 15
    while not (logs / "ready").exists():
        assert proc.poll() is None and time.time() < deadline, (logs / "server.log").read_text()
        time.sleep(0.05)

    class Model:
        url, log_dir = MODEL_URL, logs

        def requests(self):
            path = logs / "requests.jsonl"
            return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    m = Model()
    m.tag = tag
    yield m
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def agentd(peers, tmp_path_factory):
    """A daemon whose sandboxes resolve through the peers' resolver."""
    d = Sbxd(str(tmp_path_factory.mktemp("agentd") / "state")).start(args=["--dns-upstream", UPSTREAM])
    yield d
    try:
        d.cleanup()
    finally:
        d.stop()


def header(req, name):
    return {k.lower(): v for k, v in req["headers"].items()}.get(name.lower())


def check_workspace(d, sid, tag):
    """The script the model asked for is there, the user's, and its run's
    output is in result.txt."""
    ws = model_server.SCRIPT_DIR
    assert d.read(sid, ws + "/hello.py").decode() == model_server.SCRIPT_BODY
    assert d.read(sid, ws + "/result.txt").decode() == f"sum 42 {tag}\n"
    r = d.sh(sid, f"stat -c %U {ws}/hello.py {ws}/result.txt")
    assert r["stdout"].split() == ["user", "user"], r


def test_versions_tools_and_workspace(agentd):
    need("claude")
    need("codex")
    for template, cmd, want in (("claude", "claude --version", "2.1.332 (Claude Code)"),
                                ("codex", "codex --version", "codex-cli 0.171.0")):
        sid = agentd.create(template)
        try:
            # commands start in the workspace, the template's workdir
            r = agentd.sh(sid, f"{cmd} && stat -c '%n %U' \"$(pwd)\" && id -un && git --version && "
                               "rg --version | head -1 && gcc --version | head -1 && make --version | head -1 && "
                               "node --version && npm --version")
            assert r["exitCode"] == 0, r
            lines = r["stdout"].splitlines()
            assert lines[0] == want, r
            assert lines[1:3] == ["/home/user/workspace user", "user"], r
            assert lines[3].startswith("git version") and lines[4].startswith("ripgrep"), r
            assert lines[5].startswith("gcc") and lines[6].startswith("GNU Make"), r
            assert lines[7].startswith("v18."), r
        finally:
            agentd.delete(sid)


def test_claude_writes_a_file_and_runs_a_command(agentd, model):
    need("claude")
    key = "sk-ant-test-" + uuid.uuid4().hex
    sid = agentd.create("claude", envVars={"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": model.url},
                        network=ALLOW_MODEL)
    try:
        t = time.monotonic()
        r = agentd.run(sid, "claude", "-p", PROMPT, "--permission-mode", "bypassPermissions", timeout=180)
        print(f"claude -p: {time.monotonic() - t:.1f} s")
        assert r["exitCode"] == 0, r
        assert model_server.FINAL_TEXT in r["stdout"], r
        check_workspace(agentd, sid, model.tag)
        mine = [q for q in model.requests() if header(q, "x-api-key") == key]
        turns = [q for q in mine if q["path"].startswith("/v1/messages") and q["body"].get("stream")]
        assert len(turns) >= 3, [q["path"] for q in mine]
        # the Bash tool's result, what the command printed, went back to the model
        results = [c for q in turns for m in q["body"]["messages"] if isinstance(m.get("content"), list)
                   for c in m["content"] if c.get("type") == "tool_result"]
        assert any(f"sum 42 {model.tag}" in json.dumps(c.get("content")) for c in results), results
    finally:
        agentd.delete(sid)


def test_codex_writes_a_file_and_runs_a_command(agentd, model):
    need("codex")
    key = "sk-test-" + uuid.uuid4().hex
    sid = agentd.create("codex", envVars={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": model.url + "/v1"},
                        network=ALLOW_MODEL)
    try:
        t = time.monotonic()
        r = agentd.run(sid, "codex", "exec", "--skip-git-repo-check", PROMPT, timeout=180)
        print(f"codex exec: {time.monotonic() - t:.1f} s")
        assert r["exitCode"] == 0, r
        assert model_server.FINAL_TEXT in r["stdout"], r
        check_workspace(agentd, sid, model.tag)
        mine = [q for q in model.requests() if header(q, "authorization") == "Bearer " + key]
        turns = [q for q in mine if q["method"] == "POST" and q["path"] == "/v1/responses"]
        assert len(turns) >= 3, [(q["method"], q["path"]) for q in mine]
        outputs = [i for q in turns for i in q["body"]["input"]
                   if isinstance(i, dict) and i.get("type") == "custom_tool_call_output"]
        assert any(f"sum 42 {model.tag}" in json.dumps(i) for i in outputs), outputs
    finally:
        agentd.delete(sid)


def test_npm_installs_at_run_time_through_the_sandbox_network(agentd, model):
    need("claude")
    sid = agentd.create("claude", network=ALLOW_MODEL)
    try:
        reg = model.url + "/npm/"
        r = agentd.sh(sid, f"npm install --no-audit --no-fund --registry {reg} sbxd-hello && "
                           "node -e 'console.log(require(\"sbxd-hello\")())' && "
                           f"npm install -g --no-audit --no-fund --registry {reg} sbxd-hello && "
                           "test -f ~/.npm-global/lib/node_modules/sbxd-hello/index.js", timeout=120)
        assert r["exitCode"] == 0, r
        assert "hello from the npm peer\n" in r["stdout"], r
    finally:
        agentd.delete(sid)


PAGE = "<!doctype html><title>{title}</title><button id=b onclick=\"document.title+='!'\">go</button>"
PLAYWRIGHT = r"""
const { chromium } = require("playwright-core");
(async () => {
  const url = "http://127.0.0.1:8000/";
  // the template's Chromium, over CDP
  const b = await chromium.connectOverCDP(process.env.BROWSER_CDP_URL);
  const page = await (b.contexts()[0] || await b.newContext()).newPage();
  await page.goto(url);
  const t1 = await page.title();
  await page.click("#b");
  const t2 = await page.title();
  await page.close();
  await b.close();  // a CDP connection's close disconnects; Chromium stays
  // a Chromium of the script's own
  const own = await chromium.launch({ executablePath: process.env.CHROME_PATH });
  const p2 = await own.newPage();
  await p2.goto(url);
  const t3 = await p2.title();
  await own.close();
  console.log(JSON.stringify([t1, t2, t3]));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_playwright_drives_chromium_to_a_page_served_in_the_sandbox(agentd):
    need("browser")
    t = time.monotonic()
    sid = agentd.create("browser")
    print(f"browser create to ready: {time.monotonic() - t:.2f} s")
    try:
        title = "page-" + uuid.uuid4().hex[:8]
        agentd.write(sid, "/home/user/site/index.html", PAGE.format(title=title))
        agentd.write(sid, "/home/user/pw.js", PLAYWRIGHT)
        r = agentd.run(sid, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1",
                       "--directory", "/home/user/site", background=True)
        r = agentd.sh(sid, "for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:8000/ && exit 0; "
                           "sleep 0.1; done; exit 1")
        assert r["exitCode"] == 0, r
        r = agentd.run(sid, "node", "/home/user/pw.js", timeout=90)
        assert r["exitCode"] == 0, r
        assert json.loads(r["stdout"]) == [title, title + "!", title], r
        # the template's Chromium is still there for the next script
        r = agentd.sh(sid, 'curl -fsS "$BROWSER_CDP_URL/json/version"')
        assert r["exitCode"] == 0 and "Chrome/" in r["stdout"], r
    finally:
        agentd.delete(sid)
