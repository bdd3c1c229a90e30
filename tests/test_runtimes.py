"""The runtime templates (templates/bun.spec, python.spec, documents.spec),
used through the E2B API (POST /sandboxes with templateID bun, python or
documents): Bun runs TypeScript and JavaScript and `bun add`s packages,
pip installs into the user's venv, root installs .deb files with apt-get,
and LibreOffice converts documents to PDF headless.

Nothing here reaches the internet: the sandboxes have no internet access,
and every package they install is one the test writes (a directory, a
tarball, a .deb built with dpkg-deb, a file: apt repository)."""
import io
import os
import zipfile

import pytest

TEMPLATE_DIR = os.environ.get("SBXD_TEMPLATE_DIR", "/var/lib/sbxd/templates")


def offline(sbxd, template):
    return sbxd.create(template=template, allow_internet_access=False)


def ok(sbxd, sid, script, user="user", timeout=180):
    """Run a bash script; fail with its output unless it exits 0."""
    r = sbxd.sh(sid, "set -e\n" + script, user=user, timeout=timeout)
    assert r["exitCode"] == 0, (r["stdout"], r["stderr"])
    return r["stdout"]


@pytest.fixture(scope="module")
def bun_box(sbxd):
    sid = offline(sbxd, "bun")
    yield sid
    sbxd.delete(sid)


@pytest.fixture(scope="module")
def python_box(sbxd):
    sid = offline(sbxd, "python")
    yield sid
    sbxd.delete(sid)


@pytest.fixture(scope="module")
def documents_box(sbxd):
    sid = offline(sbxd, "documents")
    yield sid
    sbxd.delete(sid)


# ------------------------------------------------------------------ base


def test_base_has_the_common_cli_tools(sbxd):
    sid = offline(sbxd, "base")
    try:
        out = ok(sbxd, sid, "for t in bash curl git less nano vi wget zip unzip xz bzip2 jq file tree patch ps; do\n"
                 "  command -v $t >/dev/null || echo missing $t\ndone\n"
                 "echo '{\"a\": [1, 2]}' | jq -c '.a | length'\n"
                 "cd /tmp && echo hi > f && zip -q f.zip f && rm f && unzip -q f.zip && cat f\n")
        assert out.split() == ["2", "hi"], out
    finally:
        sbxd.delete(sid)


def test_default_user_has_sudo(sbxd):
    sid = offline(sbxd, "base")
    try:
        out = ok(sbxd, sid, "sudo -n id -u\nsudo -n touch /etc/made-by-sudo && stat -c %u /etc/made-by-sudo\n"
                 "getent hosts $(hostname) | awk '{print $1}'\n")
        assert out.split() == ["0", "0", "127.0.0.1"], out
        r = sbxd.sh(sid, "sudo -n true", user="user")
        assert "unable to resolve host" not in r["stderr"], r
    finally:
        sbxd.delete(sid)


# ------------------------------------------------------------------- bun

def test_bun_runs_typescript_and_javascript(sbxd, bun_box):
    out = ok(sbxd, bun_box, "command -v bun bunx; bun --version; bunx --version")
    assert out.splitlines()[:2] == ["/usr/local/bin/bun", "/usr/local/bin/bunx"]
    assert out.splitlines()[2] == out.splitlines()[3] == "1.4.5"
    sbxd.write(bun_box, "/workspace/a.ts",
               "interface P { n: number }\nconst p: P = { n: 40 + 2 };\nconsole.log(`ts ${p.n}`);\n")
    sbxd.write(bun_box, "/workspace/b.js", "console.log('js', [1, 2, 3].map((x) => x * 2).join(','));\n")
    assert ok(sbxd, bun_box, "cd /workspace; bun a.ts; bun run b.js") == "ts 42\njs 2,4,6\n"
    # the user's own: nothing in a run needs root
    assert ok(sbxd, bun_box, "id -u") == "1000\n"


def test_bun_add_local_directory_and_tarball(sbxd, bun_box):
    """`bun add` of a package directory and of a packed tarball, offline,
    as the default user, whose cache (~/.bun/install/cache) is writable."""
    sbxd.write(bun_box, "/tmp/lib/greet/package.json", '{"name": "greet", "version": "1.0.0", "main": "index.js"}')
    sbxd.write(bun_box, "/tmp/lib/greet/index.js", "module.exports = (n) => `hello ${n}`;\n")
    sbxd.write(bun_box, "/tmp/lib/shout/package.json", '{"name": "shout", "version": "2.0.0", "main": "index.js"}')
    sbxd.write(bun_box, "/tmp/lib/shout/index.js", "module.exports = (s) => s.toUpperCase() + '!';\n")
    out = ok(sbxd, bun_box, """
        cd /tmp/lib && tar -czf shout.tgz --transform 's,^shout,package,' shout
        mkdir -p /workspace/app && cd /workspace/app && echo '{"name": "app"}' > package.json
        bun add /tmp/lib/greet
        bun add /tmp/lib/shout.tgz
        echo 'import greet from "greet"; import shout from "shout"; console.log(shout(greet("bun")))' > main.ts
        bun main.ts
        ls ~/.bun/install/cache | grep -c .
        stat -c %U ~/.bun/install/cache
    """)
    lines = out.splitlines()
    assert "HELLO BUN!" in lines, out
    assert int(lines[-2]) >= 1 and lines[-1] == "user", out
    deps = ok(sbxd, bun_box, "cd /workspace/app && bun -e 'console.log(Object.keys(require(\"./package.json\").dependencies).sort().join(\",\"))'")
    assert deps == "greet,shout\n"


# ---------------------------------------------------------------- python

def test_python_pip_installs_local_packages_into_the_venv(sbxd, python_box):
    """pip, as the default user, installs a pure-Python package and one
    with a C extension (built with the template's compiler) from local
    sources, without an index."""
    sbxd.write(python_box, "/tmp/src/mypkg/pyproject.toml",
               '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
               '[project]\nname = "mypkg"\nversion = "0.1"\n')
    sbxd.write(python_box, "/tmp/src/mypkg/mypkg/__init__.py", "def hi():\n    return 'hi from mypkg'\n")
    sbxd.write(python_box, "/tmp/src/cext/setup.py",
               'from setuptools import setup, Extension\n'
               'setup(name="cext", version="0.1", ext_modules=[Extension("cext", ["cext.c"])])\n')
    sbxd.write(python_box, "/tmp/src/cext/cext.c", r"""
#include <Python.h>
static PyObject *answer (PyObject *self, PyObject *args) { return PyLong_FromLong (42); }
static PyMethodDef methods[] = { { "answer", answer, METH_NOARGS, "" }, { 0 } };
static struct PyModuleDef mod = { PyModuleDef_HEAD_INIT, "cext", 0, -1, methods };
PyMODINIT_FUNC PyInit_cext (void) { return PyModule_Create (&mod); }
""")
    out = ok(sbxd, python_box, """
        python3 --version; python --version
        pip install --no-index --no-build-isolation /tmp/src/mypkg /tmp/src/cext >/dev/null
        cd /
        python -c 'import mypkg, cext; print(mypkg.hi(), cext.answer()); print(mypkg.__file__)'
    """, timeout=300)
    lines = out.splitlines()
    assert lines[0].startswith("Python 3.") and lines[1] == lines[0]
    assert lines[2] == "hi from mypkg 42"
    assert lines[3].startswith("/opt/venv/lib/python3"), out


# ------------------------------------------------------------------- apt

DEB_SCRIPT = r"""
deb() {  # NAME VERSION DEPENDS: a package with /usr/bin/NAME printing "NAME VERSION"
    d=/tmp/debs/$1; mkdir -p $d/DEBIAN $d/usr/bin $d/usr/share/$1
    printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: Test <t@example.com>\n%bDescription: test package\n' \
        "$1" "$2" "${3:+Depends: $3\n}" > $d/DEBIAN/control
    printf '#!/bin/sh\necho %s %s\n' "$1" "$2" > $d/usr/bin/$1; chmod 755 $d/usr/bin/$1
    echo data > $d/usr/share/$1/data
}
deb sbxd-one 1.0
# a maintainer script that makes a system user and hands it a directory:
# useradd, chown to an id the template never had
deb sbxd-two 2.0 sbxd-one
printf '#!/bin/sh\nset -e\nuseradd --system --home-dir /var/lib/sbxd-two sbxdtwo\ninstall -d -o sbxdtwo -g sbxdtwo /var/lib/sbxd-two\n' \
    > /tmp/debs/sbxd-two/DEBIAN/postinst
chmod 755 /tmp/debs/sbxd-two/DEBIAN/postinst
mkdir -p /tmp/repo
for p in sbxd-one sbxd-two; do dpkg-deb --build --root-owner-group /tmp/debs/$p /tmp/repo/$p.deb >/dev/null; done
"""


@pytest.mark.parametrize("template", ["bun", "python"])
def test_apt_get_installs_a_local_deb_as_root(sbxd, template, bun_box, python_box):
    sid = {"bun": bun_box, "python": python_box}[template]
    ok(sbxd, sid, DEB_SCRIPT + "chmod -R a+rX /tmp/repo", user="root")
    # the default user is not root: apt refuses it
    r = sbxd.sh(sid, "apt-get install -y /tmp/repo/sbxd-one.deb", user="user")
    assert r["exitCode"] != 0 and "root" in r["stderr"], r
    out = ok(sbxd, sid, """
        cd /tmp/repo && apt-get install -y ./sbxd-one.deb >/dev/null
        sbxd-one; dpkg-query -W -f '${Status}\n' sbxd-one
    """, user="root")
    assert out == "sbxd-one 1.0\ninstall ok installed\n"
    # apt-get update from a file: repository, then an install that pulls
    # a dependency and runs a maintainer script
    out = ok(sbxd, sid, r"""
        cd /tmp/repo
        for f in *.deb; do
            dpkg-deb -f $f; echo "Filename: ./$f"; echo "Size: $(stat -c %s $f)"
            echo "SHA256: $(sha256sum $f | cut -d' ' -f1)"; echo
        done > Packages
        apt-get remove -y sbxd-one >/dev/null
        mv /etc/apt/sources.list /etc/apt/sources.list.off
        echo 'deb [trusted=yes] file:/tmp/repo ./' > /etc/apt/sources.list.d/local.list
        apt-get update >/dev/null
        apt-get install -y sbxd-two >/dev/null
        sbxd-one; sbxd-two
        stat -c '%U:%G' /var/lib/sbxd-two
        apt-get remove -y sbxd-two sbxd-one >/dev/null
        test ! -e /usr/bin/sbxd-two && echo removed
    """, user="root")
    assert out == "sbxd-one 1.0\nsbxd-two 2.0\nsbxdtwo:sbxdtwo\nremoved\n", out


# ------------------------------------------------------------- documents

def docx(text):
    """A minimal Word document whose text asks for Calibri."""
    parts = {
        "[Content_Types].xml":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType='
            '"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        "_rels/.rels":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="word/document.xml"/></Relationships>',
        "word/document.xml":
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
            '<w:p><w:r><w:rPr><w:rFonts w:ascii="Calibri" w:hAnsi="Calibri"/></w:rPr>'
            f'<w:t>{text}</w:t></w:r></w:p></w:body></w:document>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_documents_convert_to_pdf_headless(sbxd, documents_box):
    """soffice --headless converts a .docx, a spreadsheet and an .odt to
    PDF, as the default user, with fonts that stand in for Office's."""
    sid = documents_box
    sbxd.write(sid, "/workspace/in/letter.docx", docx("Hello from a docx"))
    sbxd.write(sid, "/workspace/in/table.csv", "name,count\napples,3\npears,5\n")
    sbxd.write(sid, "/workspace/in/note.txt", "Hello from a text file\n")
    out = ok(sbxd, sid, """
        cd /workspace/in
        soffice --headless --convert-to xlsx table.csv >/dev/null
        soffice --headless --convert-to odt note.txt >/dev/null
        soffice --headless --convert-to pdf --outdir /workspace/out letter.docx table.xlsx note.odt >/dev/null
        ls /workspace/out
        bun --version
    """, timeout=300)
    assert out.splitlines() == ["letter.pdf", "note.pdf", "table.pdf", "1.4.5"], out
    for name in ("letter", "note", "table"):
        pdf = sbxd.read(sid, f"/workspace/out/{name}.pdf")
        assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:], name
        assert b"/Type/Page" in pdf.replace(b" ", b""), name
    # Calibri is rendered with its metric-compatible stand-in, embedded
    assert b"Carlito" in sbxd.read(sid, "/workspace/out/letter.pdf")


# ------------------------------------------------------------ the images

@pytest.mark.parametrize("template", ["bun", "python", "documents"])
def test_images_keep_no_build_host_resolver(template):
    """Setup lines resolve names with the build host's resolver (the bun
    spec downloads after base emptied resolv.conf), but the image keeps
    none of it: a sandbox gets its own at start."""
    path = os.path.join(TEMPLATE_DIR, template, "rootfs", "etc", "resolv.conf")
    assert os.path.getsize(path) == 0
