"""benchlib.py: what the create benchmarks share (bench_burst.py,
bench_scale.py, bench_churn.py): a keep-alive client of the E2B dialect
and the percentiles they print; and, run as a script (`benchlib.py
quiet`), a wait until the host is quiet, which scripts/bench does before
its first measurement."""
import http.client
import json
import sys
import time


class Client:
    """One keep-alive connection to the daemon (http.client: no pool to
    warm, little work per call, so the numbers are the daemon's).
    CREATE_BODY is what create() posts.  The connection is opened at once,
    so that a timed call does not pay for it."""

    def __init__(self, port, key, create_body, timeout=300):
        self.port, self.timeout, self.body = port, timeout, create_body
        self.h = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
        self.c = None
        self.reopen()

    def reopen(self):
        if self.c:
            self.c.close()
        self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self.c.connect()

    def call(self, method, path, body=None):
        try:
            self.c.request(method, path, body=body, headers=self.h)
        except (BrokenPipeError, ConnectionResetError):
            # the daemon closed the kept-alive connection (--conn-timeout):
            # nothing was sent, so once more on a new one
            self.reopen()
            self.c.request(method, path, body=body, headers=self.h)
        r = self.c.getresponse()
        return r.status, r.read()

    def create(self):
        st, b = self.call("POST", "/sandboxes", self.body)
        if st != 201:
            raise RuntimeError(f"create: HTTP {st}: {b[:300].decode(errors='replace')}")
        return json.loads(b)["sandboxID"]

    def delete(self, sid):
        st, b = self.call("DELETE", f"/sandboxes/{sid}")
        if st != 204:
            raise RuntimeError(f"destroy: HTTP {st}: {b[:300].decode(errors='replace')}")

    def exec_true(self, sid):
        st, b = self.call("POST", f"/sandboxes/{sid}/processes", json.dumps({"cmd": "true"}))
        if st != 200 or json.loads(b).get("exitCode") != 0:
            raise RuntimeError(f"exec: HTTP {st}: {b[:300].decode(errors='replace')}")

    def close(self):
        self.c.close()


def pct(v, q):
    """The Q quantile of V (None when V is empty)."""
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else None


def ms(s):
    """Seconds S in milliseconds, two decimals."""
    return None if s is None else round(s * 1000, 2)


def host_busy(window_s):
    """The host's busy fraction of all its cores over WINDOW_S seconds
    (/proc/stat: everything but idle and iowait)."""
    def ticks():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = ticks()
    time.sleep(window_s)
    b1, t1 = ticks()
    return (b1 - b0) / max(1, t1 - t0)


def host_quiet(limit_s=120, below=0.05, hold=2):
    """Wait until the host's CPUs are busy less than BELOW for HOLD
    seconds in a row, at most LIMIT_S: what ran before (the test suite,
    and what the kernel may still be freeing of its sandboxes) would
    otherwise be measured as sbxd's.
    Returns the seconds waited and the busy fraction of the first second."""
    start, first, calm = time.time(), None, 0
    while time.time() - start < limit_s and calm < hold:
        busy = host_busy(1.0)
        first = busy if first is None else first
        calm = calm + 1 if busy < below else 0
    return {"waited_s": round(time.time() - start, 1), "busy_first_s": round(first, 3), "quiet": calm >= hold}


if __name__ == "__main__" and sys.argv[1:] == ["quiet"]:
    print(json.dumps({"host_quiet": host_quiet()}), flush=True)
