/*
 * wasm-run.mjs - run one Python program in Pyodide (CPython compiled to
 * WebAssembly) on Node.js; installed as /opt/sbxd/wasm-run.mjs by
 * templates/pyodide.spec.  The protocol is described in docs/wasm.md.
 *
 *   node /opt/sbxd/wasm-run.mjs [FILE]          program from FILE, or stdin
 *   node /opt/sbxd/wasm-run.mjs --make-snapshot PATH   (template build)
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
import fs from "node:fs";
import path from "node:path";

/* SBXD_WASM_HOME: where Pyodide and the snapshot are (default /opt/sbxd). */
const HOME = process.env.SBXD_WASM_HOME || "/opt/sbxd";
const PYODIDE_DIR = HOME + "/pyodide";
const SNAPSHOT = HOME + "/pyodide.snap";
const EXIT_RUNNER = 125;
const WORKDIR = "/workspace";

/* Emscripten's errno numbers (WASI's), not Linux's. */
const ENOENT = 44, EROFS = 69;
const O_ACCMODE = 3;

/* Where Pyodide keeps its own files; mounting over them would break it. */
const RESERVED = ["/lib", "/dev", "/proc", "/tmp"];

function die (msg)
{
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

function pathList (name)
{
  const v = process.env[name];
  if (!v)
    return [];
  return v.split (":").filter ((p) => p !== "").map ((p) => {
    if (!p.startsWith ("/"))
      die (`${name}: not an absolute path: ${p}`);
    const n = path.posix.normalize (p).replace (/\/+$/, "");
    if (n === "" || RESERVED.some ((r) => n === r || n.startsWith (r + "/")))
      die (`${name}: ${p} cannot be mounted (reserved by the runtime)`);
    return n;
  });
}

function readPolicy ()
{
  const rw = pathList ("SBXD_WASM_RW"), ro = pathList ("SBXD_WASM_RO");
  const blocked = pathList ("SBXD_WASM_BLOCKED");
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
  return blocked.some ((b) => p === b || p.startsWith (b + "/"));
}

/* A file system type that is Emscripten's NODEFS with the policy applied
   to every node it creates: read-only mounts refuse every change, and
   blocked paths below a mount do not exist. */
function policyFS (FS, blocked)
{
  const NODEFS = FS.filesystems.NODEFS;
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
def _sbxd_setenv(env):
    # a memory snapshot carries the environment it was made with
    import os
    os.environ.update(env)
_sbxd_run
`;

async function load (options)
{
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

async function run (file)
{
  const policy = readPolicy ();
  let source;
  try
    {
      source = fs.readFileSync (file ?? 0, "utf8");
    }
  catch (e)
    {
      die (`cannot read ${file ?? "stdin"}: ${e.message}`);
    }

  let snapshot;
  try
    {
      snapshot = fs.readFileSync (SNAPSHOT);
    }
  catch
    {
      /* no snapshot: a full start, a couple of seconds slower */
    }
  const env = { ...process.env };
  for (const k of Object.keys (env))
    if (k.startsWith ("SBXD_WASM_"))
      delete env[k];
  delete env.HOME;
  const py = await load (snapshot ? { _loadSnapshot: snapshot } : {});
  py.setStdout ({ write: (buf) => writeAll (1, buf) });
  py.setStderr ({ write: (buf) => writeAll (2, buf) });
  py.setStdin ({ stdin: () => undefined });
  mountPolicy (py, policy);
  const runner = py.runPython (RUN_PY);
  py.globals.get ("_sbxd_setenv") (py.toPy (env));
  const status = await runner (source, file ?? "<stdin>");
  process.exit (status);
}

const args = process.argv.slice (2);
try
  {
    if (args[0] === "--make-snapshot" && args.length === 2)
      await makeSnapshot (args[1]);
    else if (args.length <= 1 && !(args[0] ?? "").startsWith ("-"))
      await run (args[0]);
    else
      die ("usage: wasm-run.mjs [FILE] | --make-snapshot PATH");
  }
catch (e)
  {
    die (e.stack ?? String (e));
  }
