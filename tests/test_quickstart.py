"""The README's quick start (the seed's Python example) works as written
against a real daemon."""
import os
import subprocess
import sys

from conftest import ROOT


def test_seed_quickstart_runs(sbxd, tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    env = dict(os.environ, SBXD_URL=sbxd.url, SBXD_API_KEY=sbxd.key)
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "docs", "examples", "quickstart.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].count(".") == 2  # the pandas version
    assert "Rows: 2, Columns: ['a', 'b']" in r.stdout
    assert "mean" in r.stdout
    # it cleaned up after itself
    assert sbxd.req("GET", "/sandboxes?status=running").json() == []
