#!/usr/bin/env python3
"""bench_terminal - seed 004's terminal on a running daemon: the round trip
of a keystroke (sent in a WebSocket message, echoed by the shell's line
editor through the PTY, back in a binary message), p50/p90/p99 per
template, and the time to open a terminal (the upgrade until the prompt),
printed as JSON.  Numbers, not pass/fail.

usage: bench_terminal.py URL KEY [KEYSTROKES] [TEMPLATE...]   (default: 200 base)
"""
import asyncio
import json
import string
import sys
import time

import requests
import websockets

URL, KEY = sys.argv[1], sys.argv[2]
KEYS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
TEMPLATES = sys.argv[4:] or ["base"]
S = requests.Session()
S.headers["Authorization"] = "Bearer " + KEY


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3)


def terminal_url(sid):
    r = S.get(URL + "/v1/sandboxes", params={"id": sid}, timeout=60)
    if r.status_code == 200 and isinstance(r.json().get("terminalUrl"), str):
        return r.json()["terminalUrl"]
    r = S.post(URL + "/v1/sandboxes/terminal", json={"id": sid}, timeout=60)
    r.raise_for_status()
    return r.json()["terminalUrl"]


async def read_until(ws, needle, timeout=10):
    got = b""
    while needle not in got:
        m = await asyncio.wait_for(ws.recv(), timeout)
        got += m if isinstance(m, bytes) else m.encode()
    return got


async def measure(url):
    t0 = time.perf_counter()
    async with websockets.connect(url, compression=None) as ws:
        await ws.send("PS1='rea''dy> '\r")
        await read_until(ws, b"ready> ")
        opened = (time.perf_counter() - t0) * 1000
        rtts = []
        letters = string.ascii_lowercase
        for i in range(KEYS):
            c = letters[i % len(letters)].encode()
            t = time.perf_counter()
            await ws.send(c)
            await read_until(ws, c)
            rtts.append((time.perf_counter() - t) * 1000)
            if i % 40 == 39:
                await ws.send("\x15")  # ^U: an empty line again
                await asyncio.sleep(0.05)
                while True:
                    try:
                        await asyncio.wait_for(ws.recv(), 0.05)
                    except asyncio.TimeoutError:
                        break
        return opened, rtts


def bench(template):
    r = S.post(URL + "/sandboxes", json={"templateID": template, "timeout": 300}, timeout=120)
    if r.status_code != 201:
        return {"error": f"create {template}: {r.status_code} {r.text[:200]}"}
    sid = r.json()["sandboxID"]
    try:
        opened, rtts = asyncio.run(measure(terminal_url(sid)))
    finally:
        S.delete(f"{URL}/sandboxes/{sid}", timeout=60)
    return {"keystroke_echo_ms": {"p50": pct(rtts, 0.5), "p90": pct(rtts, 0.9), "p99": pct(rtts, 0.99),
                                  "n": len(rtts)},
            "open_to_prompt_ms": round(opened, 2)}


print(json.dumps({"terminal": {t: bench(t) for t in TEMPLATES}}, indent=2))
