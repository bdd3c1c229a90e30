"""The two shipped templates: base and code_interpreter (alias
code-interpreter-v1), and the template command line."""
import subprocess
import time

from conftest import SBXD, wait_until


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


def test_removed_template_stays_until_its_last_sandbox_is_gone(tmp_path):
    """A rebuilt or removed template's tree is retired, not deleted, while a
    sandbox still runs on it; `template gc` deletes it afterwards."""
    import json
    import os
    import shutil
    from conftest import Sbxd
    src = "/var/lib/sbxd/templates/base"
    tdir = tmp_path / "templates"
    (tdir / "mini").mkdir(parents=True)
    subprocess.run(["cp", "-a", src + "/rootfs", str(tdir / "mini" / "rootfs")], check=True)
    meta = json.load(open(src + "/template.json"))
    meta["name"] = "mini"
    meta["aliases"] = []
    json.dump(meta, open(tdir / "mini" / "template.json", "w"))
    env = dict(os.environ, SBXD_TEMPLATE_DIR=str(tdir))
    d = Sbxd(str(tmp_path / "state"))
    d_env = os.environ.get("SBXD_TEMPLATE_DIR")
    os.environ["SBXD_TEMPLATE_DIR"] = str(tdir)
    try:
        d.start()
    finally:
        if d_env is None:
            del os.environ["SBXD_TEMPLATE_DIR"]
        else:
            os.environ["SBXD_TEMPLATE_DIR"] = d_env
    try:
        sid = d.create(template="mini")
        # the spare pool has booted spares for mini meanwhile: they hold its
        # tree too, until the pool finds it gone
        time.sleep(2)
        r = subprocess.run([SBXD, "template", "rm", "mini"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not (tdir / "mini").exists()
        retired = os.listdir(tdir / ".retired")
        assert len(retired) == 1
        # the sandbox still reads files that only its lower layer has
        assert d.sh(sid, "cat /usr/lib/os-release | head -1")["stdout"].startswith("PRETTY_NAME")
        assert d.create(template="mini", expect=400).json()["message"] == "unknown template: mini"
        subprocess.run([SBXD, "template", "gc"], env=env, check=True)
        assert os.listdir(tdir / ".retired") == retired  # still in use
        d.delete(sid)

        def collected():
            subprocess.run([SBXD, "template", "gc"], env=env, check=True)
            return os.listdir(tdir / ".retired") == []
        assert wait_until(collected, 10, 0.5)
    finally:
        d.cleanup()
        d.stop()
        shutil.rmtree(tdir, ignore_errors=True)
