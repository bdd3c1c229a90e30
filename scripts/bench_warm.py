"""bench_warm - what bench_templates.py and bench_desktop.py share to
measure creates served by a started warm pool (`sbxd serve --warm
TEMPLATE=N`, src/service/warm.c) next to the same creates on a daemon
without one.

scripts/bench starts a second daemon with `--warm desktop=1 --warm
browser=1 --warm code_interpreter=1 --metrics-token TOKEN` and names it in
SBXD_BENCH_WARM="URL KEY TOKEN".  Before each warm round the pool is
waited for (its sbxd_warm_ready gauge, GET /metrics), as a create finds it
between real requests; a round counts as warm only if the pool's
sbxd_warm_claims_total went up by one.
"""
import os
import re
import time

import requests


class WarmDaemon:
    def __init__(self, url, key, token):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + key
        self.token = token

    def metric(self, name, template):
        r = requests.get(self.url + "/metrics", headers={"Authorization": "Bearer " + self.token}, timeout=10)
        r.raise_for_status()
        m = re.search(r'^%s\{template="%s"\} (\d+)$' % (name, re.escape(template)), r.text, re.M)
        return int(m.group(1)) if m else None

    def has_pool(self, template):
        return self.metric("sbxd_warm_target", template) is not None

    def wait_pool(self, template, seconds=120):
        """Wait until TEMPLATE's pool has a sandbox ready; its claims so far."""
        deadline = time.time() + seconds
        while (self.metric("sbxd_warm_ready", template) or 0) < 1:
            if time.time() > deadline:
                raise RuntimeError(f"the warm pool of {template} did not fill in {seconds} s")
            time.sleep(0.1)
        return self.metric("sbxd_warm_claims_total", template)


def warm_daemon():
    """The warm daemon scripts/bench started, or None."""
    spec = os.environ.get("SBXD_BENCH_WARM", "").split()
    return WarmDaemon(*spec) if len(spec) == 3 else None
