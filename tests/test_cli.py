"""Tests of the operator's command line, `sbxd orgs`: organisations, their
plans and limits, in a temporary state directory; the errors it gives for
bad input; that it reads a state directory written before plans existed;
and that a running daemon obeys a change at its next request, with no
restart.  Also `sbxd serve`'s log options: text lines by default, JSON
lines with --log-format json, and --log-level.
"""
import json
import os
import re
import sqlite3
import subprocess

import pytest

from conftest import SBXD, Sbxd

HEADER = ["NAME", "ID", "PLAN", "MAX_SANDBOXES", "MAX_TIMEOUT_S", "MONTHLY_HOURS", "USED_HOURS"]
PLANS = {   # name: (concurrent sandboxes, max timeout s, monthly hours; 0 unlimited)
    "default": (10, 3600, 0),
    "free": (1, 300, 5),
    "builder": (3, 1800, 50),
    "pro": (10, 3600, 500),
    "scale": (50, 7200, 5000),
}


def orgs(state, *args):
    return subprocess.run([SBXD, "orgs", *args, "--state-dir", str(state)], capture_output=True, text=True)


def table(out):
    """The rows of an `orgs` table as dicts; checks the header."""
    lines = out.strip().splitlines()
    assert lines[0].split() == HEADER
    rows = {}
    for line in lines[1:]:
        name, oid, plan, sandboxes, timeout, hours, used = line.split()
        rows[name] = {"id": oid, "plan": plan, "max_sandboxes": int(sandboxes), "max_timeout": int(timeout),
                      "monthly_hours": 0 if hours == "unlimited" else float(hours), "used_hours": float(used)}
    return rows


def limits(row):
    return (row["max_sandboxes"], row["max_timeout"], row["monthly_hours"])


def test_list_of_a_new_state_dir_is_empty(tmp_path):
    r = orgs(tmp_path / "s", "list")
    assert r.returncode == 0, r.stderr
    assert table(r.stdout) == {}


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_create_on_each_plan_takes_its_limits(tmp_path, plan):
    r = orgs(tmp_path, "create", "acme", "--plan", plan)
    assert r.returncode == 0, r.stderr
    row = table(r.stdout)["acme"]
    assert row["plan"] == plan and limits(row) == PLANS[plan]
    assert row["id"].startswith("org_")
    listed = table(orgs(tmp_path, "list").stdout)
    assert listed["acme"] == row


def test_create_without_plan_is_default_and_flags_override(tmp_path):
    row = table(orgs(tmp_path, "create", "a").stdout)["a"]
    assert row["plan"] == "default" and limits(row) == (10, 3600, 0)
    r = orgs(tmp_path, "create", "b", "--plan", "free", "--max-sandboxes", "1", "--monthly-hours", "0")
    assert r.returncode == 0, r.stderr
    row = table(r.stdout)["b"]
    assert row["plan"] == "free" and limits(row) == (1, 300, 0)
    # the daemon's first start and `keys create --org` make default-plan orgs too
    subprocess.run([SBXD, "keys", "create", "--state-dir", str(tmp_path), "--org", "c"], check=True,
                   capture_output=True)
    rows = table(orgs(tmp_path, "list").stdout)
    assert list(rows) == ["a", "b", "c"]
    assert rows["c"]["plan"] == "default" and limits(rows["c"]) == (10, 3600, 0)


def test_set_plan_resets_limits_then_flags_override(tmp_path):
    orgs(tmp_path, "create", "acme", "--plan", "free")
    oid = table(orgs(tmp_path, "list").stdout)["acme"]["id"]
    # one limit, plan kept
    row = table(orgs(tmp_path, "set", "acme", "--max-timeout", "120").stdout)["acme"]
    assert row["plan"] == "free" and limits(row) == (1, 120, 5)
    # a plan replaces all three, overrides win over the plan
    row = table(orgs(tmp_path, "set", "acme", "--plan", "scale", "--max-sandboxes", "7").stdout)["acme"]
    assert row["plan"] == "scale" and limits(row) == (7, 7200, 5000)
    row = table(orgs(tmp_path, "set", "acme", "--plan", "builder").stdout)["acme"]
    assert row["plan"] == "builder" and limits(row) == PLANS["builder"]
    row = table(orgs(tmp_path, "set", "acme", "--monthly-hours", "0").stdout)["acme"]
    assert limits(row) == (3, 1800, 0)
    # a fraction of an hour, kept to the millisecond
    r = orgs(tmp_path, "set", "acme", "--monthly-hours", "0.005")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["0.005", "0"]
    row = table(r.stdout)["acme"]
    assert limits(row) == (3, 1800, 0.005) and row["used_hours"] == 0
    db = sqlite3.connect(tmp_path / "sbxd.db")
    assert db.execute("SELECT monthly_ms FROM orgs WHERE name = 'acme'").fetchone()[0] == 18000
    db.close()
    row = table(orgs(tmp_path, "set", "acme", "--monthly-hours", "0").stdout)["acme"]
    assert row["id"] == oid
    assert table(orgs(tmp_path, "list").stdout)["acme"] == row


@pytest.mark.parametrize("args,code,message", [
    (["set", "nobody", "--plan", "pro"], 1, "organisation nobody not found"),
    (["set", "acme", "--plan", "gold"], 2, "unknown plan gold (one of: default, free, builder, pro, scale)"),
    (["create", "x", "--plan", "Free"], 2, "unknown plan Free"),
    (["set", "acme"], 2, "nothing to change"),
    (["set", "acme", "--max-sandboxes", "0"], 2, "invalid --max-sandboxes 0"),
    (["set", "acme", "--max-sandboxes", "-1"], 2, "invalid --max-sandboxes -1"),
    (["set", "acme", "--max-sandboxes", "3x"], 2, "invalid --max-sandboxes 3x"),
    (["set", "acme", "--max-sandboxes", ""], 2, "invalid --max-sandboxes"),
    (["set", "acme", "--max-sandboxes", "99999999999999999999"], 2, "invalid --max-sandboxes"),
    (["set", "acme", "--max-timeout", "7201"], 2, "invalid --max-timeout 7201 (want a whole number from 1 to 7200)"),
    (["set", "acme", "--monthly-hours", "lots"], 2, "invalid --monthly-hours lots"),
    (["set", "acme", "--monthly-hours", "-1"], 2, "invalid --monthly-hours -1"),
    (["set", "acme", "--monthly-hours", "1e3"], 2, "invalid --monthly-hours 1e3"),
    (["set", "acme", "--monthly-hours", "0.0000001"], 2, "at least a millisecond"),
    (["set", "acme", "--monthly-hours", "10000000.5"], 2, "invalid --monthly-hours"),
    (["create", "acme"], 1, "organisation acme already exists"),
    (["create"], 2, "usage:"),
    (["create", "a", "b"], 2, "usage:"),
    (["list", "--plan", "pro"], 2, "usage:"),
    (["rename", "acme"], 2, "usage:"),
    (["create", "n" * 128], 1, "organisation name is too long"),
])
def test_bad_input_is_refused_and_changes_nothing(tmp_path, args, code, message):
    orgs(tmp_path, "create", "acme", "--plan", "pro")
    before = orgs(tmp_path, "list").stdout
    r = orgs(tmp_path, *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert r.stdout == ""
    assert orgs(tmp_path, "list").stdout == before


def test_state_dir_from_before_plans(tmp_path):
    """A database of schema version 1 (no plan columns) still opens; its
    organisations read as the default plan with no monthly cap."""
    db = sqlite3.connect(tmp_path / "sbxd.db")
    db.executescript(
        "CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, max_sandboxes INTEGER NOT NULL,"
        " max_timeout_s INTEGER NOT NULL, max_upload_bytes INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
        "INSERT INTO orgs VALUES ('org_legacy', 'legacy', 4, 900, 1000, 1);"
        "PRAGMA user_version = 1;")
    db.close()
    row = table(orgs(tmp_path, "list").stdout)["legacy"]
    assert row == {"id": "org_legacy", "plan": "default", "max_sandboxes": 4, "max_timeout": 900,
                   "monthly_hours": 0, "used_hours": 0}
    row = table(orgs(tmp_path, "set", "legacy", "--plan", "pro").stdout)["legacy"]
    assert limits(row) == PLANS["pro"]
    db = sqlite3.connect(tmp_path / "sbxd.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    # version 3: seed 004's checkpoints and artifacts
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"captures", "capture_files", "sandbox_storage"} <= tables
    db.close()


def test_running_daemon_obeys_a_change_without_restart(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        pid = d.proc.pid
        r = orgs(d.state_dir, "set", "default", "--max-sandboxes", "1")
        assert r.returncode == 0, r.stderr
        first = d.create(timeout=60)
        r = d.create(timeout=60, expect=429)
        assert "concurrent sandbox limit" in r.json()["message"]
        # raising it again lets the next create through
        orgs(d.state_dir, "set", "default", "--max-sandboxes", "2")
        second = d.create(timeout=60)
        d.delete(second)
        d.delete(first)

        # the plan's duration cap: free allows 300 s, scale 7200 s
        orgs(d.state_dir, "set", "default", "--plan", "free")
        r = d.create(timeout=301, expect=400)
        sid = d.create(timeout=300)
        d.delete(sid)
        orgs(d.state_dir, "set", "default", "--plan", "scale")
        sid = d.create(timeout=7200)
        assert d.get(sid).status_code == 200
        d.delete(sid)
        d.create(timeout=7201, expect=400)
        assert d.proc.pid == pid and d.proc.poll() is None
    finally:
        d.cleanup()
        d.stop()


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) \S")


def test_serve_logs_text_lines_by_default(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start()
    try:
        sid = d.create(timeout=60)
        d.delete(sid)
    finally:
        d.stop()
    lines = d.logs().splitlines()
    assert lines and all(TEXT_LINE.match(l) for l in lines), lines
    assert any(" info listening url=http://127.0.0.1:" in l for l in lines), lines
    assert any(f" info sandbox sandbox={sid} change=killed" in l for l in lines), lines
    assert any(re.search(r" info request method=POST route=\S+ status=201 ms=[\d.]+ org=default", l) for l in lines), lines
    assert any(" info stopping;" in l for l in lines), lines


def test_serve_logs_json_lines(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--log-format", "json", "--log-level", "debug"])
    try:
        sid = d.create(timeout=60)
        d.delete(sid)
    finally:
        d.stop()
    records = [json.loads(l) for l in d.logs().splitlines()]   # every line is one JSON object
    assert records
    for r in records:
        assert list(r)[:3] == ["time", "level", "msg"], r
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", r["time"])
        assert r["level"] in ("debug", "info", "warn", "error")
    listening = [r for r in records if r["msg"] == "listening"]
    assert listening and listening[0]["url"] == d.url and listening[0]["state_dir"] == d.state_dir
    changes = [r["change"] for r in records if r["msg"] == "sandbox" and r.get("sandbox") == sid]
    assert changes[0] == "created" and changes[-1] == "killed", changes
    requests_ = [r for r in records if r["msg"] == "request"]
    assert {"method", "route", "status", "ms", "org"} <= set(requests_[0]), requests_
    assert any(r["msg"].startswith("created an API key") and r["key_id"].startswith("key_") for r in records)


def test_serve_log_level_filters(tmp_path):
    d = Sbxd(str(tmp_path / "state")).start(args=["--log-level", "error"])
    try:
        d.delete(d.create(timeout=60))
    finally:
        d.stop()
    assert d.logs() == ""


@pytest.mark.parametrize("args,message", [
    (["--log-level", "loud"], "invalid --log-level loud (debug, info, warn or error)"),
    (["--log-format", "xml"], "invalid --log-format xml (text or json)"),
])
def test_serve_refuses_bad_log_options(tmp_path, args, message):
    r = subprocess.run([SBXD, "serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:1"] + args,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and message in r.stderr
