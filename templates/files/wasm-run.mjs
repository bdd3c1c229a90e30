/*
 * wasm-run.mjs - run one Python program in Pyodide (CPython compiled to
 * WebAssembly) on Node.js; installed as /opt/sbxd/wasm-run.mjs by
 * templates/pyodide.spec.  The protocol is described in docs/wasm.md.
 *
 *   node /opt/sbxd/wasm-run.mjs [FILE]          program from FILE, or stdin
 *   node /opt/sbxd/wasm-run.mjs --make-snapshot PATH   (template build)
 *   node /opt/sbxd/wasm-run.mjs --serve SOCKET  (the warm server, below)
 *
 * The program's stdout and stderr go to ours as they are written.  Exit
 * status: 0 on success, 1 after an uncaught exception (its traceback on
 * stderr), N for sys.exit(N) (modulo 256, as for CPython), and 125 when
 * the runner itself cannot start (bad policy, missing Pyodide).
 *
 * Filesystem policy.  Pyodide's filesystem is in memory; the program sees
 * a host directory only if it is named here (colon-separated lists of
 * absolute paths, mounted at the same path):
 *
 *   SBXD_WASM_RW       read-write
 *   SBXD_WASM_RO       read-only: writes fail with EROFS inside Pyodide
 *   SBXD_WASM_BLOCKED  never mounted, and hidden (ENOENT) when below a
 *                      mounted directory
 *
 * The working directory is /workspace (in memory unless mounted).  This is
 * a policy for the Python program, not the security boundary: Pyodide's
 * JavaScript FFI can reach Node's own APIs, so the node process must run
 * inside a container sandbox that has the same mounts at kernel level and
 * no network unless allowed, which is how sbxd runs it.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import v8 from "node:v8";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

/* SBXD_WASM_HOME: where Pyodide and the snapshot are (default /opt/sbxd). */
const HOME = process.env.SBXD_WASM_HOME || "/opt/sbxd";
const PYODIDE_DIR = HOME + "/pyodide";
const SNAPSHOT = HOME + "/pyodide.snap";
const EXIT_RUNNER = 125;
const WORKDIR = "/workspace";

/* Emscripten's errno numbers (WASI's), not Linux's. */
const EACCES = 2, ENOENT = 44, EROFS = 69;
const O_ACCMODE = 3;

/* Where Pyodide keeps its own files; mounting over them would break it. */
const RESERVED = ["/lib", "/dev", "/proc", "/tmp"];

function die (msg)
{
  if (!isMainThread)
    throw new Error (msg); /* reported to the server, see workerMain */
  writeAll (2, Buffer.from (`wasm-run: ${msg}\n`));
  process.exit (EXIT_RUNNER);
}

/* fd 1 and 2 may be non-blocking pipes: retry EAGAIN rather than lose
   output. */
const pause = new Int32Array (new SharedArrayBuffer (4));
function writeAll (fd, buf)
{
  let off = 0;
  while (off < buf.length)
    {
      try
        {
          off += fs.writeSync (fd, buf, off, buf.length - off);
        }
      catch (e)
        {
          if (e.code !== "EAGAIN")
            throw e;
          Atomics.wait (pause, 0, 0, 5);
        }
    }
  return buf.length;
}

/* The paths in variable NAME, normalised and without duplicates; MOUNTED:
   they are to be mounted, so they may not cover Pyodide's own. */
function pathList (name, mounted)
{
  const v = process.env[name];
  if (!v)
    return [];
  const out = v.split (":").filter ((p) => p !== "").map ((p) => {
    if (!p.startsWith ("/"))
      die (`${name}: not an absolute path: ${p}`);
    const n = path.posix.normalize (p).replace (/\/+$/, "");
    if (mounted && (n === "" || RESERVED.some ((r) => n === r || n.startsWith (r + "/"))))
      die (`${name}: ${p} cannot be mounted (reserved by the runtime)`);
    return n === "" ? "/" : n;
  });
  return [ ...new Set (out) ];
}

function readPolicy ()
{
  const rw = pathList ("SBXD_WASM_RW", true), ro = pathList ("SBXD_WASM_RO", true);
  const blocked = pathList ("SBXD_WASM_BLOCKED", false);
  for (const p of rw)
    if (ro.includes (p))
      die (`${p} is both read-only and read-write`);
  const mounts = [ ...ro.map ((p) => ({ path: p, ro: true })), ...rw.map ((p) => ({ path: p, ro: false })) ];
  /* parents before children, so a nested mount lands on top */
  mounts.sort ((a, b) => a.path.split ("/").length - b.path.split ("/").length);
  return { mounts, blocked };
}

function isBlocked (blocked, p)
{
  return blocked.some ((b) => b === "/" || p === b || p.startsWith (b + "/"));
}

/* A file system type that is Emscripten's NODEFS with the policy applied
   to every node it creates: read-only mounts refuse every change, and
   blocked paths below a mount do not exist. */
function policyFS (FS, blocked)
{
  const NODEFS = FS.filesystems.NODEFS;
  const UMASK = 0o022;
  const fresh = new WeakSet ();
  const erofs = () => {
    throw new FS.ErrnoError (EROFS);
  };
  const ops = (ro) => {
    const node_ops = {
      ...NODEFS.node_ops,
      lookup (parent, name) {
        /* before NODEFS's lookup, which caches the node it makes */
        if (isBlocked (blocked, path.posix.join (FS.getPath (parent), name)))
          throw new FS.ErrnoError (ENOENT);
        return tag (NODEFS.node_ops.lookup (parent, name), ro);
      },
      readdir (node) {
        const dir = FS.getPath (node);
        return NODEFS.node_ops.readdir (node).filter ((n) => !isBlocked (blocked, path.posix.join (dir, n)));
      },
      /* nothing may be made at a blocked path, and what is made carries
         the policy like what is looked up */
      mknod (parent, name, mode, dev) {
        refuseBlocked (parent, name);
        const node = tag (NODEFS.node_ops.mknod (parent, name, mode & ~UMASK, dev), ro);
        fresh.add (node);
        return node;
      },
      /* Emscripten has no umask, and its open() sets the mode of a file it
         creates right after making it: apply the usual 022 there, or every
         new file would be 0666 in the sandbox */
      setattr (node, attr) {
        if (fresh.delete (node) && attr.mode !== undefined)
          attr = { ...attr, mode: attr.mode & ~UMASK };
        return NODEFS.node_ops.setattr (node, attr);
      },
      symlink (parent, name, target) {
        refuseBlocked (parent, name);
        return NODEFS.node_ops.symlink (parent, name, target);
      },
      rename (node, dir, name) {
        refuseBlocked (dir, name);
        return NODEFS.node_ops.rename (node, dir, name);
      },
    };
    const stream_ops = { ...NODEFS.stream_ops };
    if (ro)
      {
        for (const op of [ "setattr", "mknod", "rename", "unlink", "rmdir", "symlink" ])
          node_ops[op] = erofs;
        stream_ops.open = (stream) => {
          if ((stream.flags & O_ACCMODE) !== 0)
            erofs ();
          return NODEFS.stream_ops.open (stream);
        };
        stream_ops.write = erofs;
        stream_ops.msync = erofs;
      }
    return { node_ops, stream_ops };
  };
  function refuseBlocked (parent, name)
  {
    if (isBlocked (blocked, path.posix.join (FS.getPath (parent), name)))
      throw new FS.ErrnoError (EACCES);
  }
  const rw = ops (false), ro = ops (true);
  function tag (node, readOnly)
  {
    const o = readOnly ? ro : rw;
    node.node_ops = o.node_ops;
    if (FS.isFile (node.mode))
      node.stream_ops = o.stream_ops;
    return node;
  }
  return {
    ...NODEFS,
    mount (mount) {
      return tag (NODEFS.mount (mount), !!mount.opts.readOnly);
    },
  };
}

function mountPolicy (py, policy)
{
  const FS = py.FS;
  const type = policyFS (FS, policy.blocked);
  for (const m of policy.mounts)
    {
      if (isBlocked (policy.blocked, m.path))
        continue;
      try
        {
          /* The directory exists in the sandbox (the runtime creates the
             policy's paths); for a read-write one, make it if missing. */
          if (!m.ro)
            fs.mkdirSync (m.path, { recursive: true });
          if (!fs.statSync (m.path).isDirectory ())
            die (`${m.path} is not a directory`);
        }
      catch (e)
        {
          die (`${m.path}: ${e.message}`);
        }
      FS.mkdirTree (m.path);
      FS.mount (type, { root: m.path, readOnly: m.ro }, m.path);
    }
  FS.mkdirTree (WORKDIR);
  FS.chdir (WORKDIR);
}

/* Runs SOURCE as __main__ in a fresh module and returns (a promise of)
   the exit status; defined once per interpreter. */
const RUN_PY = `
async def _sbxd_run(source, filename):
    import ast, inspect, linecache, sys, traceback, types
    # the program is not a file Python can read: let tracebacks quote it
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    main = types.ModuleType("__main__")
    main.__file__ = filename
    sys.modules["__main__"] = main
    try:
        # top-level await is allowed, as in Pyodide's own REPL: JavaScript
        # promises can only be waited for that way
        code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        result = eval(code, main.__dict__)
        if inspect.iscoroutine(result):
            await result
        return 0
    except SystemExit as e:
        c = e.code
        if c is None:
            return 0
        if isinstance(c, int):
            return c & 0xFF
        print(c, file=sys.stderr)
        return 1
    except BaseException as e:
        tb = e.__traceback__
        # start the traceback at the program, not at this function
        if tb is not None and tb.tb_frame.f_code is _sbxd_run.__code__:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        return 1
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
_sbxd_base_env = None
def _sbxd_setenv(env):
    # a memory snapshot carries the environment it was made with; a warm
    # interpreter, the previous run's
    import os
    global _sbxd_base_env
    if _sbxd_base_env is None:
        _sbxd_base_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(_sbxd_base_env)
    os.environ.update(env)
_sbxd_run
`;

async function load (options)
{
  /* Compile Pyodide's WebAssembly with V8's baseline compiler only: start-
     up takes about a third less CPU (no optimising compiler running
     alongside, which a sandbox with one vCPU feels) for about 20% slower
     Python.  Most programs sent to a sandbox are short. */
  v8.setFlagsFromString ("--liftoff-only");
  let mod;
  try
    {
      mod = await import (PYODIDE_DIR + "/pyodide.mjs");
    }
  catch (e)
    {
      die (`cannot load Pyodide from ${PYODIDE_DIR}: ${e.message}`);
    }
  /* jsglobals: the program's "js" module is an empty object rather than
     Node's globalThis (a nuisance barrier only, see the top). */
  return mod.loadPyodide ({ indexURL: PYODIDE_DIR + "/", jsglobals: {}, ...options });
}

async function makeSnapshot (out)
{
  const py = await load ({ _makeSnapshot: true });
  py.runPython (RUN_PY);
  const snap = py.makeMemorySnapshot ();
  fs.writeFileSync (out + ".tmp", snap);
  fs.renameSync (out + ".tmp", out);
}

/* The environment a program gets: ours, without the runner's settings and
   HOME (Pyodide has its own). */
function programEnv ()
{
  const env = { ...process.env };
  for (const k of Object.keys (env))
    if (k.startsWith ("SBXD_WASM_"))
      delete env[k];
  delete env.HOME;
  return env;
}

function readSource (file)
{
  try
    {
      return fs.readFileSync (file ?? 0, "utf8");
    }
  catch (e)
    {
      die (`cannot read ${file ?? "stdin"}: ${e.message}`);
    }
}

/* An interpreter restored from the snapshot, policy mounted, output sent
   to WRITE (fd, bytes); returns { run(source, filename, env) -> status }. */
async function interpreter (policy, write)
{
  let snapshot;
  try
    {
      snapshot = fs.readFileSync (SNAPSHOT);
    }
  catch
    {
      /* no snapshot: a full start, a couple of seconds slower */
    }
  const py = await load (snapshot ? { _loadSnapshot: snapshot } : {});
  py.setStdout ({ write: (buf) => write (1, buf) });
  py.setStderr ({ write: (buf) => write (2, buf) });
  py.setStdin ({ stdin: () => undefined });
  mountPolicy (py, policy);
  const runner = py.runPython (RUN_PY);
  const setenv = py.globals.get ("_sbxd_setenv");
  return {
    memory: () => py._module.HEAPU8.length,
    async run (source, filename, env)
    {
      py.FS.chdir (WORKDIR);
      const e = py.toPy (env);
      setenv (e);
      e.destroy ();
      return runner (source, filename);
    },
  };
}

async function runHere (file)
{
  const policy = readPolicy ();
  const source = readSource (file);
  const py = await interpreter (policy, writeAll);
  process.exit (await py.run (source, file ?? "<stdin>", programEnv ()));
}

/* ------------------------------------------------------------ warm mode

   Restoring Pyodide costs more than a second of CPU (compiling its
   WebAssembly, restoring the snapshot), so by default (SBXD_WASM_WARM
   unset or 1) the first run starts a server, this file with --serve,
   that keeps an interpreter loaded in a worker thread; later runs hand
   their program to it over a Unix socket and cost a Node start and a
   message.  The price is memory: a loaded interpreter is about 150 MiB,
   so the server exits after SBXD_WASM_IDLE_SECONDS (default 60) without a
   run, and an idle sandbox is small again.  SBXD_WASM_WARM=0 runs the
   program in this process instead.

   One server per user and policy; it runs one program at a time, each in
   a fresh __main__ (modules it imported and files it left in Pyodide's
   memory stay for the next run).  When a client goes away mid-run (its
   timeout killed it) the server terminates the worker, whatever Python
   was doing, and loads a new one.

   Socket protocol: the client sends one JSON line {source, filename, env};
   the server answers JSON lines {fd: 1|2, data: base64}... then
   {exit: N}. */

const IDLE_SECONDS = Math.min (Math.max (Number (process.env.SBXD_WASM_IDLE_SECONDS) || 60, 1), 3600);
const JOB_MAX = 64 << 20;
/* A warm interpreter whose WebAssembly memory grew past this is replaced
   after its run (a fresh one has 20 MiB). */
const MEMORY_KEEP = 256 << 20;

function socketPath ()
{
  const key = [ "SBXD_WASM_RO", "SBXD_WASM_RW", "SBXD_WASM_BLOCKED" ].map ((k) => process.env[k] ?? "").join ("\0");
  const dir = `/tmp/.sbxd-wasm-${process.getuid ()}`;
  fs.mkdirSync (dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync (dir);
  if (!st.isDirectory () || st.uid !== process.getuid () || (st.mode & 0o077) !== 0)
    die (`${dir} is not a private directory`);
  return `${dir}/${createHash ("sha256").update (key).digest ("hex").slice (0, 16)}.sock`;
}

function connect (sock)
{
  return new Promise ((resolve) => {
    const c = net.connect (sock);
    c.once ("connect", () => resolve (c));
    c.once ("error", () => resolve (null));
  });
}

/* Calls ON_LINE for every complete line; at most MAX bytes buffered. */
function lines (stream, max, onLine, onOverflow)
{
  let buf = "";
  stream.setEncoding ("utf8");
  stream.on ("data", (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf ("\n")) >= 0)
      {
        const line = buf.slice (0, nl);
        buf = buf.slice (nl + 1);
        onLine (line);
      }
    if (buf.length > max)
      onOverflow ();
  });
}

/* Connects to the server for the current policy, starting it if need be. */
async function connectWarm (sock)
{
  let conn = await connect (sock);
  if (conn !== null)
    return conn;
  spawn (process.execPath, [ fileURLToPath (import.meta.url), "--serve", sock ],
         { detached: true, stdio: "ignore", env: process.env }).unref ();
  for (let i = 0; i < 1200 && conn === null; i++)
    {
      await new Promise ((r) => setTimeout (r, 25));
      conn = await connect (sock);
    }
  if (conn === null)
    die ("the warm runner did not start");
  return conn;
}

async function runWarm (file)
{
  readPolicy (); /* a bad policy fails here, not in the server */
  await sendWarm (socketPath (), readSource (file), file ?? "<stdin>", 1);
}

async function sendWarm (sock, source, filename, attempt)
{
  const conn = await connectWarm (sock);
  let status = null, heard = false;
  lines (conn, JOB_MAX, (line) => {
    const m = JSON.parse (line);
    heard = true;
    if (m.exit !== undefined)
      status = m.exit;
    else if (m.fd !== undefined)
      writeAll (m.fd, Buffer.from (m.data, "base64"));
  }, () => die ("the warm runner sent a line too long"));
  conn.on ("error", () => {});
  conn.on ("close", () => {
    if (status !== null)
      process.exit (status);
    /* a server that was just exiting (idle) took the connection: the
       program has not started, try again with a new one */
    if (!heard && attempt < 3)
      return sendWarm (sock, source, filename, attempt + 1);
    die ("the warm runner went away");
  });
  conn.write (JSON.stringify ({ source, filename, env: programEnv () }) + "\n");
}

async function serve (sock)
{
  const policy = readPolicy ();
  let worker, ready, current = null, idle = null, open = 0, broken = null;
  const queue = [];

  function fail (conn)
  {
    const msg = Buffer.from (`wasm-run: ${broken}\n`).toString ("base64");
    conn.end (JSON.stringify ({ fd: 2, data: msg }) + "\n" + JSON.stringify ({ exit: EXIT_RUNNER }) + "\n");
  }

  function startWorker ()
  {
    worker = new Worker (new URL (import.meta.url), { workerData: { policy }, stdout: false, stderr: false });
    ready = new Promise ((resolve) => {
      worker.on ("message", (m) => {
        if (m.ready)
          return resolve ();
        if (m.fatal)
          {
            /* the policy cannot be mounted: every run fails the same way,
               so tell the waiting ones and let the next start afresh */
            broken = m.fatal;
            fs.rmSync (sock, { force: true });
            if (current !== null)
              fail (current);
            current = null;
            while (queue.length > 0)
              fail (queue.shift ().conn);
            return resolve ();
          }
        if (current === null)
          return;
        if (m.fd)
          current.write (JSON.stringify ({ fd: m.fd, data: Buffer.from (m.data).toString ("base64") }) + "\n");
        else if (m.exit !== undefined)
          {
            /* WebAssembly memory only grows: after a program that needed
               a lot, start again small rather than keep it until idle */
            if (m.memory > MEMORY_KEEP)
              restartWorker ();
            finish (m.exit);
          }
      });
    });
    worker.on ("error", (e) => {
      if (current !== null)
        current.write (JSON.stringify ({ fd: 2, data: Buffer.from (`wasm-run: ${e.message}\n`).toString ("base64") }) + "\n");
    });
    worker.on ("exit", (code) => {
      /* a failed start (the policy could not be mounted) or a crash */
      if (current !== null)
        finish (code === 0 ? EXIT_RUNNER : code);
      if (current === null && queue.length === 0)
        process.exit (0);
    });
  }

  function restartWorker ()
  {
    worker.removeAllListeners ("exit");
    worker.terminate ();
    startWorker ();
  }

  function finish (status)
  {
    const c = current;
    current = null;
    c.end (JSON.stringify ({ exit: status }) + "\n");
    pump ();
  }

  function armIdle ()
  {
    clearTimeout (idle);
    idle = setTimeout (() => {
      if (current === null && queue.length === 0 && open === 0)
        {
          fs.rmSync (sock, { force: true });
          process.exit (0);
        }
      armIdle ();
    }, IDLE_SECONDS * 1000);
  }

  async function pump ()
  {
    armIdle ();
    if (current !== null || queue.length === 0)
      return;
    const { conn, job } = queue.shift ();
    if (conn.destroyed)
      return pump ();
    if (broken !== null)
      {
        fail (conn);
        return pump ();
      }
    current = conn;
    await ready;
    if (broken !== null || current !== conn)
      return pump ();
    /* from here on the program may run: the client must not retry */
    conn.write (JSON.stringify ({ started: true }) + "\n");
    worker.postMessage (job);
  }

  const server = net.createServer ((conn) => {
    open++;
    conn.on ("error", () => {});
    lines (conn, JOB_MAX, (line) => {
      let job;
      try
        {
          job = JSON.parse (line);
        }
      catch
        {
          return conn.destroy ();
        }
      queue.push ({ conn, job });
      pump ();
    }, () => conn.destroy ());
    conn.on ("close", () => {
      open--;
      armIdle ();
      if (current === conn)
        {
          /* killed mid-run: Python may be in an endless loop */
          current = null;
          restartWorker ();
          pump ();
        }
    });
  });
  server.on ("error", async (e) => {
    if (e.code !== "EADDRINUSE")
      die (e.message);
    const other = await connect (sock);
    if (other !== null)
      {
        other.destroy ();
        process.exit (0); /* another server won the race */
      }
    fs.rmSync (sock, { force: true }); /* left by a server that was killed */
    server.listen (sock);
  });
  startWorker ();
  server.listen (sock);
  armIdle ();
}

async function workerMain ()
{
  /* in pieces, so that no protocol line gets near JOB_MAX */
  const send = (fd, buf) => {
    for (let off = 0; off < buf.length; off += 1 << 20)
      parentPort.postMessage ({ fd, data: buf.slice (off, off + (1 << 20)) });
    return buf.length;
  };
  let py;
  try
    {
      py = await interpreter (workerData.policy, send);
    }
  catch (e)
    {
      parentPort.postMessage ({ fatal: e.message });
      return;
    }
  parentPort.on ("message", async (job) => {
    const status = await py.run (job.source, job.filename, job.env ?? {});
    parentPort.postMessage ({ exit: status, memory: py.memory () });
  });
  parentPort.postMessage ({ ready: true });
}

const args = process.argv.slice (2);
try
  {
    if (!isMainThread)
      await workerMain ();
    else if (args[0] === "--make-snapshot" && args.length === 2)
      await makeSnapshot (args[1]);
    else if (args[0] === "--serve" && args.length === 2)
      await serve (args[1]);
    else if (args.length <= 1 && !(args[0] ?? "").startsWith ("-"))
      await (process.env.SBXD_WASM_WARM === "0" ? runHere (args[0]) : runWarm (args[0]));
    else
      die ("usage: wasm-run.mjs [FILE] | --make-snapshot PATH");
  }
catch (e)
  {
    die (e.stack ?? String (e));
  }
