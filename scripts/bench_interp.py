#!/usr/bin/env python3
"""bench_interp - the code interpreter on a running daemon: per language
(python, javascript, typescript, r, bash), the latency of the first
runCode in a fresh code_interpreter sandbox (POST /execute to its
end_of_execution: the kernel's start included, the python one excepted,
which starts with the sandbox) and of the next one, printed as JSON.
Numbers, not pass/fail.

usage: bench_interp.py URL KEY [ROUNDS]
"""
import json
import sys
import time

import requests

URL, KEY = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
CODE = {
    "python": "1 + 1",
    "javascript": "1 + 1",
    "typescript": "const n: number = 1; n + 1",
    "r": "1 + 1",
    "bash": "echo 2",
}
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1)


def summary(xs):
    return {"p50_ms": pct(xs, 0.5), "max_ms": round(max(xs), 1), "n": len(xs)} if xs else None


def execute(sid, token, lang):
    h = {"E2b-Sandbox-Id": sid, "X-Access-Token": token, "E2b-Sandbox-Port": "49999"}
    t0 = time.perf_counter()
    r = S.post(URL + "/execute", headers=h, json={"code": CODE[lang], "language": lang}, timeout=300)
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert lines[-1] == {"type": "end_of_execution"}, lines
    assert not [x for x in lines if x["type"] == "error"], lines
    return ms


def main():
    first = {lang: [] for lang in CODE}
    second = {lang: [] for lang in CODE}
    ready = []
    for _ in range(ROUNDS):
        r = S.post(URL + "/sandboxes", json={"templateID": "code_interpreter", "timeout": 600}, timeout=120)
        r.raise_for_status()
        sid, token = r.json()["sandboxID"], r.json()["envdAccessToken"]
        try:
            # the server is up once /contexts answers; the python kernel
            # starts with it
            t0 = time.perf_counter()
            h = {"E2b-Sandbox-Id": sid, "X-Access-Token": token, "E2b-Sandbox-Port": "49999"}
            S.get(URL + "/contexts", headers=h, timeout=60).raise_for_status()
            ready.append((time.perf_counter() - t0) * 1000)
            for lang in CODE:
                first[lang].append(execute(sid, token, lang))
                second[lang].append(execute(sid, token, lang))
        finally:
            S.delete(URL + "/sandboxes/" + sid, timeout=60)
    print(json.dumps({"interpreter": {
        "server_answers_after_create": summary(ready),
        "first_run_code": {lang: summary(v) for lang, v in first.items()},
        "next_run_code": {lang: summary(v) for lang, v in second.items()},
    }}, indent=2))


if __name__ == "__main__":
    main()
