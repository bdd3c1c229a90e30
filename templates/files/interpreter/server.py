"""sbxd code interpreter server: E2B's code interpreter protocol on port
49999, over real Jupyter kernels.

It runs inside every sandbox of the code_interpreter template, as root,
started by the template's start command (start.sh, which starts it again
whenever it ends).  sbxd forwards the SDK's calls to port 49999 here (one
HTTP/1.0 request a connection); /health also answers from inside the
sandbox.

  GET    /health                 204
  POST   /execute                {code, context_id?, language?, env_vars?}
                                 -> NDJSON: stdout, stderr, result, error,
                                    number_of_executions, keepalive,
                                    end_of_execution (last)
  GET    /contexts               [{id, language, cwd}]
  POST   /contexts               {language?, cwd?} -> {id, language, cwd}
  DELETE /contexts/ID            204
  POST   /contexts/ID/restart    204

A context is one kernel (jupyter_client's AsyncKernelManager) with its own
state and working directory.  The default contexts (python and javascript)
are listed from the start; the python one's kernel starts with the server,
the others' with their first execution.  An execution without context_id
runs in the default context of its language (python when none is given).
Executions of one context run one at a time.

Bounds: MAX_CONTEXTS contexts, MAX_BODY bytes of request, MAX_LINE bytes a
stream line (a longer output message is replaced by a note on stderr).
When the client goes away during an execution the kernel is interrupted.
"""

import asyncio
import datetime
import json
import logging
import os
import signal
import sys
import textwrap
import uuid

import tornado.httpserver
import tornado.ioloop
import tornado.iostream
import tornado.web
from jupyter_client.manager import AsyncKernelManager

PORT = 49999
RUNTIME_DIR = "/run/sbxd-interpreter"  # the kernels' connection files
DEFAULT_CWD = "/home/user"
MAX_CONTEXTS = 32
MAX_BODY = 16 << 20
MAX_LINE = 64 << 20
KEEPALIVE_S = 2.0
START_TIMEOUT_S = 90
INTERRUPT_GRACE_S = 10

# language -> kernel name (JUPYTER_PATH/kernels/NAME/kernel.json; not
# "python3" or "python", which jupyter_client takes for ipykernel's own
# spec)
KERNELS = {
    "python": "sbxd-python",
    "javascript": "javascript",
    "typescript": "typescript",
    "r": "r",
    "bash": "bash",
}
ALIASES = {"python3": "python", "py": "python", "js": "javascript", "ts": "typescript", "sh": "bash"}
DEFAULT_LANGUAGES = ("python", "javascript")
UNAVAILABLE = {
    "java": "no Jupyter kernel for Java is packaged in Debian or npm",
}

# Jupyter MIME types -> E2B result fields; other types keep their MIME name
# (the SDK puts them in `extra`).
MIME_FIELDS = {
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
    "application/vnd.sbxd.chart+json": "chart",
    "application/vnd.sbxd.data+json": "data",
}

log = logging.getLogger("sbxd-interpreter")


class HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def language_of(lang):
    """The canonical language name, or HTTPError 400."""
    if lang is None:
        return None
    if not isinstance(lang, str):
        raise HTTPError(400, "language must be a string")
    name = lang.strip().lower()
    if not name:
        return None
    name = ALIASES.get(name, name)
    if name in KERNELS:
        return name
    if name in UNAVAILABLE:
        raise HTTPError(400, 'language "%s" is not supported: %s' % (name[:64], UNAVAILABLE[name]))
    raise HTTPError(400, 'language "%s" is not supported: the code interpreter runs %s'
                    % (name[:64], ", ".join(KERNELS)))


# ---- env_vars: set for one execution, then restored ----

def _js_str(s):
    return json.dumps(s)


def env_code(lang, env):
    """Code that sets ENV (a value None: unset it) in a kernel of LANG."""
    items = list(env.items())
    if lang == "python":
        return "import os as _sbxd_os\n" + "".join(
            ("_sbxd_os.environ.pop(%r, None)\n" % k) if v is None else ("_sbxd_os.environ[%r] = %r\n" % (k, v))
            for k, v in items) + "del _sbxd_os\n"
    if lang in ("javascript", "typescript"):
        return "".join(("delete process.env[%s];\n" % _js_str(k)) if v is None
                       else ("process.env[%s] = %s;\n" % (_js_str(k), _js_str(v))) for k, v in items) + "undefined"
    if lang == "r":
        def rq(s):
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "invisible(NULL)\n" + "".join(("Sys.unsetenv(%s)\n" % rq(k)) if v is None
                                              else ("do.call(Sys.setenv, setNames(list(%s), %s))\n" % (rq(v), rq(k)))
                                              for k, v in items)
    if lang == "bash":
        def sq(s):
            return "'" + s.replace("'", "'\\''") + "'"
        return "".join(("unset %s\n" % k) if v is None else ("export %s=%s\n" % (k, sq(v))) for k, v in items)
    return ""


def env_snapshot_code(lang, names):
    """Code whose last expression is a JSON object of the current values of
    NAMES (null when unset), or None when the language cannot say."""
    if lang == "python":
        return "__import__('json').dumps({k: __import__('os').environ.get(k) for k in %r})" % (list(names),)
    if lang in ("javascript", "typescript"):
        return "JSON.stringify(Object.fromEntries(%s.map(k => [k, process.env[k] ?? null])))" % json.dumps(list(names))
    return None


def valid_env_name(k):
    return isinstance(k, str) and k != "" and all(c.isalnum() or c == "_" for c in k) and not k[0].isdigit()


# ---- contexts ----

class Context:
    def __init__(self, lang, cwd, is_default=False):
        self.id = str(uuid.uuid4())
        self.language = lang
        self.cwd = cwd
        self.is_default = is_default
        self.km = None
        self.kc = None
        self.lock = asyncio.Lock()   # one execution (or start) at a time
        self.start_lock = asyncio.Lock()
        self.generation = 0          # restarts and removals
        self.removed = False

    def info(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def ensure_started(self):
        async with self.start_lock:
            if self.removed:
                raise HTTPError(404, "Context %s not found" % self.id)
            if self.km is not None and await self.km.is_alive():
                return
            if self.km is not None:
                await self._stop()
            os.makedirs(self.cwd, exist_ok=True)
            # the manager's first use reads kernel specs and entry points:
            # on a thread, so that the server answers meanwhile
            km = await asyncio.get_running_loop().run_in_executor(None, self._manager)
            env = dict(os.environ)
            env.pop("JUPYTER_PATH", None)
            env.pop("JUPYTER_RUNTIME_DIR", None)
            env.update(km.kernel_spec.env or {})
            await km.start_kernel(cwd=self.cwd, env=env)
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=START_TIMEOUT_S)
            except BaseException:
                kc.stop_channels()
                await km.shutdown_kernel(now=True)
                raise
            self.km, self.kc = km, kc
            log.info("context %s: %s kernel started in %s", self.id, self.language, self.cwd)

    def _manager(self):
        from jupyter_client.provisioning import KernelProvisionerFactory

        km = AsyncKernelManager(kernel_name=KERNELS[self.language],
                                connection_file=os.path.join(RUNTIME_DIR, "kernel-%s.json" % self.id))
        km.kernel_spec  # noqa: B018 - loaded now
        KernelProvisionerFactory.instance()
        return km

    async def _stop(self):
        km, kc = self.km, self.kc
        self.km = self.kc = None
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            try:
                await km.shutdown_kernel(now=True)
            except Exception as e:  # noqa: BLE001
                log.warning("context %s: shutdown: %r", self.id, e)
            km.cleanup_resources()

    async def stop(self):
        async with self.start_lock:
            await self._stop()

    async def alive(self):
        return self.km is not None and await self.km.is_alive()

    async def interrupt(self):
        if self.km is not None:
            try:
                await self.km.interrupt_kernel()
            except Exception as e:  # noqa: BLE001
                log.warning("context %s: interrupt: %r", self.id, e)


CONTEXTS = {}   # id -> Context, in creation order
DEFAULTS = {}   # language -> id of its default context


def default_context(lang):
    cid = DEFAULTS.get(lang)
    ctx = CONTEXTS.get(cid) if cid else None
    if ctx is None:
        check_room()
        ctx = Context(lang, DEFAULT_CWD, is_default=True)
        CONTEXTS[ctx.id] = ctx
        DEFAULTS[lang] = ctx.id
    return ctx


def check_room():
    if len(CONTEXTS) >= MAX_CONTEXTS:
        raise HTTPError(400, "too many contexts: at most %d in a sandbox; remove one first" % MAX_CONTEXTS)


def check_cwd(cwd):
    if cwd is None or cwd == "":
        return DEFAULT_CWD
    if not isinstance(cwd, str):
        raise HTTPError(400, "cwd must be a string")
    if len(cwd.encode()) >= 1024 or not cwd.startswith("/") or any(ord(c) < 0x20 for c in cwd):
        raise HTTPError(400, "cwd must be an absolute path of at most 1023 bytes")
    return os.path.normpath(cwd)


# ---- turning kernel messages into E2B's lines ----

def strip_quotes(text):
    # like E2B: a string result is given without the quotes of its repr
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def result_line(lang, content, main):
    out = {"type": "result"}
    for mime, value in (content.get("data") or {}).items():
        field = MIME_FIELDS.get(mime, mime)
        if field == "text" and lang in ("python", "javascript", "typescript") and isinstance(value, str):
            value = strip_quotes(value)
        out[field] = value
    out["is_main_result"] = main
    return out


def dumps(obj):
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_clean(obj), separators=(",", ":"), allow_nan=False, default=str)


def _clean(obj):
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


async def drain_replies(kc):
    """Read the execute_replies waiting on the shell channel (everything
    this server needs comes on iopub), so they do not pile up."""
    while True:
        try:
            await kc.get_shell_msg(timeout=0)
        except Exception:  # noqa: BLE001 - queue.Empty
            return


# ---- HTTP ----

class Base(tornado.web.RequestHandler):
    def check_xsrf_cookie(self):
        pass

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")

    def fail(self, status, message):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"code": status, "message": message}))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"code": status_code, "message": str(exc) if exc else self._reason}))

    def body_object(self):
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise HTTPError(400, "malformed JSON body")
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    def _handle_request_exception(self, e):
        if isinstance(e, HTTPError):
            if not self._finished:
                self.clear()
                self.fail(e.status, e.message)
            return
        super()._handle_request_exception(e)


class Health(Base):
    def get(self):
        self.set_status(204)
        self.finish()


class Contexts(Base):
    def get(self):
        self.finish(json.dumps([c.info() for c in CONTEXTS.values() if not c.removed]))

    async def post(self):
        body = self.body_object()
        lang = language_of(body.get("language")) or "python"
        cwd = check_cwd(body.get("cwd"))
        check_room()
        ctx = Context(lang, cwd)
        CONTEXTS[ctx.id] = ctx
        try:
            await ctx.ensure_started()
        except HTTPError:
            raise
        except Exception as e:  # noqa: BLE001
            CONTEXTS.pop(ctx.id, None)
            raise HTTPError(500, "Failed to create context: %s" % e)
        self.finish(json.dumps(ctx.info()))


class OneContext(Base):
    def find(self, cid):
        ctx = CONTEXTS.get(cid)
        if ctx is None or ctx.removed:
            raise HTTPError(404, "Context %s not found" % cid[:64])
        return ctx

    async def delete(self, cid):
        ctx = self.find(cid)
        ctx.removed = True
        ctx.generation += 1
        CONTEXTS.pop(cid, None)
        for lang, did in list(DEFAULTS.items()):
            if did == cid:
                del DEFAULTS[lang]
        await ctx.stop()
        self.set_status(204)
        self.finish()

    async def post(self, cid, action):
        if action != "restart":
            raise HTTPError(404, "not found")
        ctx = self.find(cid)
        ctx.generation += 1
        await ctx.stop()
        try:
            await ctx.ensure_started()
        except Exception as e:  # noqa: BLE001
            raise HTTPError(500, "Failed to restart context %s: %s" % (cid, e))
        self.set_status(204)
        self.finish()


class Execute(Base):
    def set_default_headers(self):
        pass

    async def emit(self, obj):
        line = dumps(obj)
        if len(line) > MAX_LINE:
            line = dumps({"type": "stderr", "text": "[sbxd: an output of more than %d MiB was dropped]\n"
                          % (MAX_LINE >> 20), "timestamp": now_iso()})
        self.write(line + "\n")
        await self.flush()

    async def post(self):
        body = self.body_object()
        code = body.get("code")
        if not isinstance(code, str):
            raise HTTPError(400, "code must be a string")
        cid = body.get("context_id") or None
        if cid is not None and not isinstance(cid, str):
            raise HTTPError(400, "context_id must be a string")
        lang = language_of(body.get("language"))
        if cid and lang:
            raise HTTPError(400, "Only one of context_id or language can be provided")
        env = body.get("env_vars")
        if env is None:
            env = {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise HTTPError(400, "env_vars must be an object of strings")
        if not all(valid_env_name(k) for k in env):
            raise HTTPError(400, "env_vars names must be letters, digits and _")
        if cid:
            ctx = CONTEXTS.get(cid)
            if ctx is None or ctx.removed:
                raise HTTPError(404, "Context %s not found" % cid[:64])
        else:
            ctx = default_context(lang or "python")

        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        async with ctx.lock:
            try:
                await self.run(ctx, textwrap.dedent(code), env)
            except tornado.iostream.StreamClosedError:
                return
            try:
                await self.emit({"type": "end_of_execution"})
            except tornado.iostream.StreamClosedError:
                return
        self.finish()

    async def run(self, ctx, code, env):
        generation = ctx.generation
        try:
            await ctx.ensure_started()
        except HTTPError as e:
            await self.emit({"type": "error", "name": "ContextError", "value": e.message, "traceback": ""})
            return
        except Exception as e:  # noqa: BLE001
            await self.emit({"type": "error", "name": "ContextError",
                             "value": "the %s kernel did not start: %s" % (ctx.language, e), "traceback": ""})
            return
        restore = None
        if env:
            restore = await self.snapshot_env(ctx, list(env))
            await self.quiet(ctx, env_code(ctx.language, env))
        try:
            await self.cell(ctx, code, generation)
        finally:
            if env and ctx.generation == generation and await ctx.alive():
                back = restore if restore is not None else {k: None for k in env}
                await self.quiet(ctx, env_code(ctx.language, back))

    async def quiet(self, ctx, code):
        """Run CODE in the kernel without output or history."""
        if not code:
            return None
        msg_id = ctx.kc.execute(code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False)
        value = None
        while True:
            try:
                msg = await ctx.kc.get_iopub_msg(timeout=30)
            except Exception:  # noqa: BLE001 - queue.Empty: give up on it
                return None
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = msg["msg_type"]
            if t == "execute_result":
                value = (msg["content"].get("data") or {}).get("text/plain")
            elif t == "status" and msg["content"].get("execution_state") == "idle":
                await drain_replies(ctx.kc)
                return value

    async def snapshot_env(self, ctx, names):
        code = env_snapshot_code(ctx.language, names)
        if code is None:
            return None
        text = await self.quiet(ctx, code)
        try:
            # a repr of a JSON string: Python's or JavaScript's quotes
            v = json.loads(json.loads(text) if text.startswith('"') else text[1:-1])
            return {k: v.get(k) for k in names}
        except Exception:  # noqa: BLE001
            return None

    async def cell(self, ctx, code, generation):
        kc = ctx.kc
        # IRkernel shows a cell's value as display_data, never as an
        # execute_result: its last display is taken as the main result,
        # held back until the cell ends
        self.held = None
        # stop_on_error=False: the kernel would otherwise refuse ("abort") the
        # requests that reach it just after an error or an interrupt, the
        # next cell included; executions here are one at a time anyway
        msg_id = kc.execute(code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False)
        interrupted_at = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg = await kc.get_iopub_msg(timeout=KEEPALIVE_S)
            except Exception:  # noqa: BLE001 - nothing for a while
                msg = None
            if ctx.generation != generation:
                name = "ContextRestarting"
                value = "Context was removed" if ctx.removed else "Context was restarted"
                await self.emit({"type": "error", "name": name, "value": value, "traceback": ""})
                return
            if msg is None:
                if not await ctx.alive():
                    await self.emit({"type": "error", "name": "ContextRestarting",
                                     "value": "The context's %s kernel died; its state is lost" % ctx.language,
                                     "traceback": ""})
                    try:
                        await ctx.ensure_started()  # a fresh one for the next execution
                    except Exception as e:  # noqa: BLE001
                        log.warning("context %s: restart: %r", ctx.id, e)
                    return
                if interrupted_at is not None and loop.time() - interrupted_at > INTERRUPT_GRACE_S:
                    return
                try:
                    await self.emit({"type": "keepalive"})
                except tornado.iostream.StreamClosedError:
                    if interrupted_at is None:
                        interrupted_at = loop.time()
                        await ctx.interrupt()
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            try:
                done = await self.forward(ctx, msg)
            except tornado.iostream.StreamClosedError:
                if interrupted_at is None:
                    interrupted_at = loop.time()
                    await ctx.interrupt()
                done = False
            if done:
                await drain_replies(kc)
                return

    async def forward(self, ctx, msg):
        """Pass one kernel message on; True at the end of the execution."""
        t = msg["msg_type"]
        c = msg["content"]
        if t == "stream":
            kind = "stderr" if c.get("name") == "stderr" else "stdout"
            await self.emit({"type": kind, "text": c.get("text", ""), "timestamp": now_iso()})
        elif t == "execute_input":
            await self.emit({"type": "number_of_executions", "execution_count": c.get("execution_count")})
        elif t == "display_data" and ctx.language == "r":
            held, self.held = self.held, c
            if held is not None:
                await self.emit(result_line(ctx.language, held, False))
        elif t in ("execute_result", "display_data"):
            await self.emit(result_line(ctx.language, c, t == "execute_result"))
        elif t == "error":
            await self.emit({"type": "error", "name": c.get("ename", ""), "value": c.get("evalue", ""),
                             "traceback": "\n".join(c.get("traceback") or [])})
        elif t == "status" and c.get("execution_state") == "idle":
            if self.held is not None:
                held, self.held = self.held, None
                await self.emit(result_line(ctx.language, held, True))
            return True
        return False


def make_app():
    return tornado.web.Application([
        (r"/health", Health),
        (r"/execute", Execute),
        (r"/contexts", Contexts),
        (r"/contexts/([A-Za-z0-9_-]{1,64})", OneContext),
        (r"/contexts/([A-Za-z0-9_-]{1,64})/([a-z]+)", OneContext),
    ])


async def start_defaults():
    for lang in DEFAULT_LANGUAGES:
        default_context(lang)
    try:
        await CONTEXTS[DEFAULTS["python"]].ensure_started()
    except Exception as e:  # noqa: BLE001
        log.warning("default python context: %r", e)


def kill_leftovers():
    """Kill the kernels of a previous server (killed, so it could not stop
    them): each runs in a session of its own and names its connection file,
    under RUNTIME_DIR, on its command line."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if (RUNTIME_DIR + "/kernel-").encode() in cmd:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except OSError:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
    for name in os.listdir(RUNTIME_DIR):
        try:
            os.unlink(os.path.join(RUNTIME_DIR, name))
        except OSError:
            pass


async def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    os.makedirs(RUNTIME_DIR, mode=0o700, exist_ok=True)
    os.environ["JUPYTER_RUNTIME_DIR"] = RUNTIME_DIR
    kill_leftovers()
    server = tornado.httpserver.HTTPServer(make_app(), max_body_size=MAX_BODY, idle_connection_timeout=3600)
    server.listen(PORT, address="0.0.0.0")
    log.info("listening on 0.0.0.0:%d", PORT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    asyncio.ensure_future(start_defaults())
    await stop.wait()
    for ctx in list(CONTEXTS.values()):
        await ctx.stop()


if __name__ == "__main__":
    asyncio.run(main())
