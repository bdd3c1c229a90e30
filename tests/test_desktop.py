"""The `desktop` template driven by the unmodified E2B Desktop SDK.

tests/e2b/desktop.test.mjs runs @e2b/desktop (2.4.0, pinned in
tests/e2b/package.json) against a daemon with --domain and its own TLS, as
tests/test_domain.py's SDK test does: the SDK is given only E2B_DOMAIN and
a key, so envd and the desktop's stream (noVNC on port 6080) are reached
at https://PORT-ID.DOMAIN, names under the domain resolving to loopback
inside the Node process.  Screenshots, xdotool clicks and typing, a page
that Chromium opens (served inside the sandbox), and the VNC stream with
and without its password.
"""
import os
import subprocess

import requests

from conftest import Sbxd, node_tool, npm_ci
from test_domain import DOMAIN, make_cert

HERE = os.path.dirname(os.path.abspath(__file__))
E2B = os.path.join(HERE, "e2b")


def test_e2b_desktop_sdk(tmp_path):
    node = node_tool("node")
    npm_ci(E2B)
    cert, key = make_cert(str(tmp_path))
    server = Sbxd(str(tmp_path / "state"))
    server.url = f"https://127.0.0.1:{server.port}"
    orig_get = requests.get
    requests.get = lambda url, **kw: orig_get(url, verify=cert, **kw)
    try:
        server.start(args=["--domain", f"{DOMAIN}:{server.port}", "--tls-cert", cert, "--tls-key", key])
    finally:
        requests.get = orig_get
    server.req = lambda method, path, **kw: Sbxd.req(server, method, path, verify=cert, **kw)
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("E2B_") and k.lower() not in ("http_proxy", "https_proxy")}
        env.update({"E2B_API_KEY": server.new_key(e2b=True), "E2B_DOMAIN": f"{DOMAIN}:{server.port}",
                    "NODE_EXTRA_CA_CERTS": cert, "NO_COLOR": "1"})
        r = subprocess.run([node, "--experimental-websocket", "--import", "./loopback-dns.mjs", "--test",
                            "--test-reporter=spec", "desktop.test.mjs"],
                           cwd=E2B, env=env, capture_output=True, text=True, timeout=420)
        assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:] + "\n--- sbxd log ---\n" + server.logs()[-5000:]
    finally:
        try:
            server.cleanup()
        finally:
            server.stop()
