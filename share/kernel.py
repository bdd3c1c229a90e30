"""sbxd code interpreter kernel: one long-running Python process per context.

sbxd (src/daemon/api_interp.c) starts this file's text inside a sandbox as

    python3 -u -c BOOTSTRAP N

where the short BOOTSTRAP reads exactly N bytes (this source) from stdin and
runs them, so the kernel never has to be written to the sandbox's disk and
its process list shows a short command line.

The protocol, one line each way:

  daemon -> kernel (stdin)   {"id": RID, "code": "...", "env_vars": {...}}
                             {"id": RID, "ping": true}
  kernel -> daemon (stdout)  RID SP JSON

where JSON is one of the E2B /execute stream objects (stdout, stderr,
result, error, number_of_executions, end_of_execution); a request ends with
exactly `RID {"type":"end_of_execution"}`.  The daemon forwards the JSON of
the lines that carry its request's RID.

The protocol channel is kept apart from what the user's code writes: the
kernel keeps private duplicates of its original stdin and stdout, points
fds 0 at /dev/null and 1 and 2 at pipes, and reader threads turn whatever
arrives on those pipes (Python's prints as well as the output of
subprocesses and C libraries) into stdout and stderr messages.  Before a
result, an error or the end of a cell, a unique marker is written to each
pipe and the kernel waits until the readers have seen it, so everything
written earlier is forwarded first.

SIGINT interrupts the running cell (KeyboardInterrupt); between cells it is
ignored.
"""

import ast
import base64
import builtins
import codecs
import datetime
import importlib.abc
import importlib.machinery
import inspect
import json
import linecache
import os
import queue
import select
import signal
import sys
import threading
import traceback
import types

KERNEL_FILE = "<sbxd-kernel>"
END_OF_EXECUTION = {"type": "end_of_execution"}

# ---- the private channels ----

PROTO_FD = os.dup(1)  # protocol messages to the daemon (not inherited)
REQ_FD = os.dup(0)  # requests from the daemon
DIAG_FD = os.dup(2)  # the kernel's own complaints

_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
_out_r, _out_w = os.pipe()
_err_r, _err_w = os.pipe()
os.dup2(_out_w, 1)
os.dup2(_err_w, 2)
# private write ends for the sync markers: they reach the same pipes even if
# the user's code re-points fds 1 and 2
SYNC_OUT = _out_w
SYNC_ERR = _err_w
os.set_inheritable(SYNC_OUT, False)
os.set_inheritable(SYNC_ERR, False)

for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.reconfigure(errors="backslashreplace")
    except Exception:  # noqa: BLE001
        pass

_proto_lock = threading.Lock()
_current = [None]  # the id of the request being executed
_running = [False]  # the user's code is running (SIGINT interrupts it)


def _diag(msg):
    try:
        os.write(DIAG_FD, ("sbxd-kernel: %s\n" % msg).encode("utf-8", "replace"))
    except OSError:
        pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def _clean(obj):
    """Replace what JSON cannot carry (NaN, infinities) with null."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _dumps(obj):
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_clean(obj), separators=(",", ":"), allow_nan=False, default=str)


def send_to(rid, obj):
    if rid is None:
        return
    line = ("%s %s\n" % (rid, _dumps(obj))).encode("utf-8", "backslashreplace")
    with _proto_lock:
        _write_all(PROTO_FD, line)


def send(obj):
    send_to(_current[0], obj)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# ---- output readers ----

MARK = b"\x00\x1esbxd-sync:"
MARK_END = b"\x1e\x00"
MAX_TOKEN = 40


class Reader(threading.Thread):
    """Reads one of the user's output pipes and sends what arrives."""

    def __init__(self, fd, kind):
        super().__init__(name="sbxd-" + kind, daemon=True)
        self.fd = fd
        self.kind = kind
        self.buf = bytearray()
        self.dec = codecs.getincrementaldecoder("utf-8")("replace")
        self.cond = threading.Condition()
        self.seen = set()

    def emit(self, data, final=False):
        text = self.dec.decode(bytes(data), final)
        if text:
            send({"type": self.kind, "text": text, "timestamp": _now()})

    def marked(self, token):
        with self.cond:
            self.seen.add(token)
            self.cond.notify_all()

    def wait(self, token, timeout):
        with self.cond:
            ok = self.cond.wait_for(lambda: token in self.seen, timeout)
            self.seen.discard(token)
            return ok

    def process(self, idle):
        buf = self.buf
        start = 0
        while True:
            i = buf.find(MARK, start)
            if i < 0:
                break
            j = buf.find(MARK_END, i + len(MARK), i + len(MARK) + MAX_TOKEN + len(MARK_END))
            if j < 0:
                if len(buf) - i < len(MARK) + MAX_TOKEN + len(MARK_END):
                    # maybe a marker still arriving: send what precedes it
                    if i > 0:
                        self.emit(buf[:i])
                        del buf[:i]
                    return
                start = i + 1  # not a marker after all
                continue
            token = bytes(buf[i + len(MARK):j])
            self.emit(buf[:i], final=True)
            del buf[:j + len(MARK_END)]
            start = 0
            self.marked(token)
        # hold back a tail that may be the beginning of a marker
        keep = 0
        for k in range(min(len(MARK) - 1, len(buf)), 0, -1):
            if buf.endswith(MARK[:k]):
                keep = k
                break
        end = len(buf) - keep
        if not idle and end < 65536:
            nl = buf.rfind(b"\n", 0, end)
            end = nl + 1 if nl >= 0 else 0
        if end > 0:
            self.emit(buf[:end])
            del buf[:end]

    def run(self):
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.05 if self.buf else None)
                if ready:
                    data = os.read(self.fd, 65536)
                    if not data:
                        return
                    self.buf += data
                    self.process(idle=False)
                else:
                    self.process(idle=True)
            except Exception as e:  # noqa: BLE001
                _diag("reader %s: %r" % (self.kind, e))


READERS = [Reader(_out_r, "stdout"), Reader(_err_r, "stderr")]
for _r in READERS:
    _r.start()


def sync():
    """Wait until everything written so far to fds 1 and 2 has been sent."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001
            pass
    token = os.urandom(12).hex().encode()
    for fd in (SYNC_OUT, SYNC_ERR):
        try:
            _write_all(fd, MARK + token + MARK_END)
        except OSError:
            pass
    for r in READERS:
        if not r.wait(token, 10):
            _diag("output of %s not drained" % r.kind)


# ---- rich output ----

_REPR_METHODS = (
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_pdf_", "pdf"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
    ("_repr_javascript_", "javascript"),
)
_MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}
_BINARY = ("png", "jpeg", "pdf")


def _as_field(key, value):
    if isinstance(value, tuple) and value:
        value = value[0]  # (data, metadata)
    if value is None:
        return None
    if key in _BINARY and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if key == "json":
        return value
    return value if isinstance(value, str) else str(value)


def _figure_png(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _is_figure(obj):
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def format_object(obj):
    """The E2B result fields of OBJ: text plus whatever rich forms it has."""
    d = {}
    if _is_figure(obj):
        try:
            d["png"] = _figure_png(obj)
        except Exception as e:  # noqa: BLE001
            _diag("figure to png: %r" % e)
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close(obj)  # shown: not again at the end of the cell
            except Exception:  # noqa: BLE001
                pass
    elif not isinstance(obj, type):
        bundle = getattr(obj, "_repr_mimebundle_", None)
        if callable(bundle):
            try:
                b = bundle()
                if isinstance(b, tuple):
                    b = b[0]
                for mime, value in (b or {}).items():
                    key = _MIME.get(mime)
                    if key and key not in d:
                        v = _as_field(key, value)
                        if v is not None:
                            d[key] = v
            except Exception as e:  # noqa: BLE001
                _diag("_repr_mimebundle_: %r" % e)
        for method, key in _REPR_METHODS:
            if key in d:
                continue
            fn = getattr(obj, method, None)
            if not callable(fn):
                continue
            try:
                v = _as_field(key, fn())
            except Exception:  # noqa: BLE001
                continue
            if v is not None:
                d[key] = v
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(obj, pandas.DataFrame) and obj.size <= 100000:
            try:
                data = obj.to_dict(orient="list")
                for k, col in data.items():
                    data[k] = [v.isoformat() if isinstance(v, pandas.Timestamp) else v for v in col]
                d["data"] = {str(k): v for k, v in data.items()}
            except Exception:  # noqa: BLE001
                pass
        if "json" not in d and isinstance(obj, dict):
            try:
                json.dumps(obj, allow_nan=False)
                d["json"] = obj
            except (TypeError, ValueError):
                pass
    if "text" not in d:
        try:
            d["text"] = repr(obj)
        except Exception as e:  # noqa: BLE001
            d["text"] = "<repr failed: %s: %s>" % (type(e).__name__, e)
    t = d["text"]
    # like E2B: a quoted repr (a string) is given without its quotes
    if isinstance(t, str) and len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        d["text"] = t[1:-1]
    return d


def display_value(obj, main=False):
    if _current[0] is None:
        return
    sync()
    msg = {"type": "result"}
    msg.update(format_object(obj))
    msg["is_main_result"] = main
    send(msg)


def display(*objs, **_kwargs):
    """Show objects as results (like IPython's display)."""
    for obj in objs:
        display_value(obj)


builtins.display = display


def show_figures():
    """Send every open matplotlib figure as a PNG result and close them."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None or _current[0] is None:
        return
    try:
        from matplotlib._pylab_helpers import Gcf

        figs = [m.canvas.figure for m in Gcf.get_all_fig_managers()]
    except Exception as e:  # noqa: BLE001
        _diag("figures: %r" % e)
        return
    for fig in figs:
        try:
            display_value(fig)
        except Exception as e:  # noqa: BLE001
            _diag("figure: %r" % e)
    try:
        plt.close("all")
    except Exception:  # noqa: BLE001
        pass


def _patch_pyplot(plt):
    def show(*_args, **_kwargs):
        show_figures()

    show.__doc__ = "Show the open figures as PNG results (sbxd)."
    plt.show = show


class _PyplotHook(importlib.abc.MetaPathFinder):
    """Patch pyplot.show as soon as matplotlib.pyplot is imported."""

    def find_spec(self, name, path, target=None):
        if name != "matplotlib.pyplot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _patch_pyplot(module)

        spec.loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _PyplotHook())
os.environ.setdefault("MPLBACKEND", "Agg")

# ---- running cells ----

_main = types.ModuleType("__main__")
_main.__dict__["__builtins__"] = builtins
sys.modules["__main__"] = _main
NS = _main.__dict__
sys.argv = [""]
_loop = [None]
_count = [0]


def _on_sigint(_sig, _frame):
    if _running[0]:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)


def _run_async(co):
    import asyncio

    if _loop[0] is None or _loop[0].is_closed():
        _loop[0] = asyncio.new_event_loop()
    return _loop[0].run_until_complete(co)


def _eval(code_obj):
    r = eval(code_obj, NS)  # noqa: S307 - running the user's code is the point
    if code_obj.co_flags & inspect.CO_COROUTINE:
        r = _run_async(r)
    return r


def _strip_kernel_frames(tb):
    while tb is not None and tb.tb_frame.f_code.co_filename == KERNEL_FILE:
        tb = tb.tb_next
    return tb


def report_error(e):
    sync()
    tb = None if isinstance(e, SyntaxError) else _strip_kernel_frames(e.__traceback__)
    try:
        text = "".join(traceback.format_exception(type(e), e, tb))
    except Exception:  # noqa: BLE001
        text = "%s: %s\n" % (type(e).__name__, e)
    try:
        value = str(e)
    except Exception:  # noqa: BLE001
        value = ""
    send({"type": "error", "name": type(e).__name__, "value": value, "traceback": text})


def _ends_with_semicolon(code, node):
    lines = code.splitlines()
    try:
        end = lines[node.end_lineno - 1].encode("utf-8")[node.end_col_offset:]
        rest = [end.decode("utf-8", "replace")] + lines[node.end_lineno:]
    except (IndexError, TypeError):
        return False
    for line in rest:
        s = line.strip()
        if s.startswith("#") or not s:
            continue
        return s.startswith(";")
    return False


def _magic(name, arg):
    """The few IPython line magics generated code often uses."""
    import shlex
    import subprocess

    if name == "!":
        subprocess.run(arg, shell=True)  # its output goes to fds 1 and 2
    elif name == "pip":
        subprocess.run([sys.executable, "-m", "pip"] + shlex.split(arg))
    elif name == "cd":
        os.chdir(os.path.expanduser(arg or "~"))
        print(os.getcwd())
    # %matplotlib: figures are always shown inline


builtins._sbxd_magic = _magic
_MAGICS = ("pip", "cd", "matplotlib")


def _transform_magics(code):
    """Code with `!cmd`, `%pip ...`, `%cd ...` and `%matplotlib ...` lines
    made Python, or None when there are none."""
    out = []
    changed = False
    for line in code.split("\n"):
        s = line.lstrip()
        indent = line[: len(line) - len(s)]
        if s.startswith("!"):
            line = "%s_sbxd_magic('!', %r)" % (indent, s[1:].strip())
            changed = True
        elif s.startswith("%") and not s.startswith("%%"):
            name, _, arg = s[1:].partition(" ")
            if name in _MAGICS:
                line = "%s_sbxd_magic(%r, %r)" % (indent, name, arg.strip())
                changed = True
        out.append(line)
    return "\n".join(out) if changed else None


def _parse(code, filename):
    try:
        return ast.parse(code, filename, "exec"), code
    except SyntaxError:
        alt = _transform_magics(code)
        if alt is None:
            raise
        try:
            return ast.parse(alt, filename, "exec"), alt
        except SyntaxError:
            pass
        raise


def run_cell(code, n):
    filename = "<cell-%d>" % n
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    flags = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    value = None
    has_value = False
    try:
        tree, source = _parse(code, filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            node = tree.body.pop()
            if not _ends_with_semicolon(source, node):
                last = ast.Expression(node.value)
            else:
                tree.body.append(node)
        body = compile(tree, filename, "exec", flags=flags)
        tail = compile(last, filename, "eval", flags=flags) if last is not None else None
        try:
            _running[0] = True
            _eval(body)
            if tail is not None:
                value = _eval(tail)
                has_value = True
        finally:
            _running[0] = False
    except BaseException as e:  # noqa: BLE001 - the user's errors, exits and interrupts
        report_error(e)
        return
    if has_value and value is not None:
        NS["_"] = value
        try:
            display_value(value, main=True)
        except Exception as e:  # noqa: BLE001
            report_error(e)


def handle(req):
    rid = req.get("id")
    if not isinstance(rid, str) or not rid:
        return
    if req.get("ping"):
        send_to(rid, END_OF_EXECUTION)
        return
    _count[0] += 1
    n = _count[0]
    _current[0] = rid
    saved = {}
    try:
        send({"type": "number_of_executions", "execution_count": n})
        env = req.get("env_vars") or {}
        for k, v in env.items():
            if isinstance(k, str) and k and "=" not in k and "\0" not in k:
                saved[k] = os.environ.get(k)
                os.environ[k] = str(v)
        code = req.get("code")
        run_cell(code if isinstance(code, str) else "", n)
    except BaseException as e:  # noqa: BLE001
        _diag("cell: %r" % e)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            show_figures()
        except BaseException as e:  # noqa: BLE001
            _diag("figures: %r" % e)
        try:
            sync()
        except BaseException as e:  # noqa: BLE001
            _diag("sync: %r" % e)
        _current[0] = None
        send_to(rid, END_OF_EXECUTION)


_requests = queue.Queue()


def _read_requests():
    f = os.fdopen(REQ_FD, "rb", buffering=1 << 16)
    for line in f:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            _diag("bad request: %r" % e)
            continue
        if isinstance(req, dict):
            _requests.put(req)
    _requests.put(None)


def main():
    threading.Thread(target=_read_requests, name="sbxd-requests", daemon=True).start()
    while True:
        try:
            req = _requests.get()
        except KeyboardInterrupt:
            continue
        if req is None:
            break
        try:
            handle(req)
        except KeyboardInterrupt:
            continue
    os._exit(0)


main()
