"""The two shipped templates: base and code_interpreter (alias
code-interpreter-v1), and the template command line."""
import subprocess

from conftest import SBXD


def test_template_list_shows_both(sbxd):
    out = subprocess.run([SBXD, "template", "list"], capture_output=True, text=True, check=True).stdout
    names = {line.split("\t")[0] for line in out.splitlines()}
    assert {"base", "code_interpreter"} <= names


def test_code_interpreter_stack(sbxd):
    sid = sbxd.create(template="code-interpreter-v1")
    try:
        s = sbxd.get(sid).json()
        assert s["templateID"] == "code_interpreter" and s["memoryMB"] == 2048
        code = ("import numpy, pandas, scipy, matplotlib, seaborn, plotly, sklearn, xgboost, requests, bs4, "
                "httpx, PIL, openpyxl, yaml, jinja2\n"
                "import matplotlib.pyplot as plt\n"
                "plt.plot([1, 2, 3]); plt.savefig('/home/user/chart.png')\n"
                "print(pandas.DataFrame({'x': [1, 2, 3]})['x'].sum())\n")
        r = sbxd.py(sid, code)
        assert r["exitCode"] == 0, r["stderr"]
        assert r["stdout"] == "6\n"
        assert sbxd.read(sid, "/home/user/chart.png")[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        sbxd.delete(sid)


def test_unknown_template_command_fails(sbxd):
    r = subprocess.run([SBXD, "template", "build", "no-such-template"], capture_output=True, text=True)
    assert r.returncode != 0 and "no-such-template" in r.stderr
