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
from conftest import node_tool
from test_domain import run_sdk_on_domain


def test_e2b_desktop_sdk(tmp_path):
    run_sdk_on_domain(tmp_path, "desktop.test.mjs", 420, node=node_tool("node"), node_args=("--experimental-websocket",))
