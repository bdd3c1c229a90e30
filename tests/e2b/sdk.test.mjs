// The unmodified `e2b` SDK (2.51.0, which creates through POST /v2/sandboxes)
// against sbxd. Run with `node --test sdk.test.mjs` and the environment
// described in helpers.mjs.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'

import { Sandbox, CommandExitError, InvalidArgumentError, TimeoutError } from 'e2b'

import { MISSING_ID, killAll, sleep, uniqueTag } from './helpers.mjs'

const TEMPLATE = 'base'
const T = { timeout: 120_000 }

const created = []
async function create(opts = {}) {
  const sbx = await Sandbox.create(TEMPLATE, { timeoutMs: 600_000, ...opts })
  created.push(sbx.sandboxId)
  return sbx
}

after(async () => {
  await killAll(Sandbox, created)
})

describe('sandbox with metadata and envs', () => {
  test('create with metadata and envs: a command sees the env, getInfo shows the metadata', T, async () => {
    const tag = uniqueTag('meta')
    const sbx = await create({ metadata: { suite: 'e2b-sdk', tag }, envs: { SBXD_E2B_TEST: 'hello-env' } })
    assert.match(sbx.sandboxId, /\S/)

    const r = await sbx.commands.run('echo "$SBXD_E2B_TEST"')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'hello-env\n')

    // envs given to one command add to (and override) the sandbox's
    const r2 = await sbx.commands.run('echo "$SBXD_E2B_TEST $OTHER"', { envs: { OTHER: 'x' } })
    assert.equal(r2.stdout, 'hello-env x\n')

    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.metadata.suite, 'e2b-sdk')
    assert.equal(info.metadata.tag, tag)
  })
})

describe('with one shared sandbox', () => {
  let sbx
  before(async () => {
    sbx = await create()
  })

  test('commands.run: stdout, stderr and exit code', T, async () => {
    const r = await sbx.commands.run('echo out; echo err >&2; exit 0')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')

    const py = await sbx.commands.run('python3 -c "print(6*7)"')
    assert.equal(py.stdout.trim(), '42')
  })

  test('commands.run: a non-zero exit raises CommandExitError with exitCode', T, async () => {
    await assert.rejects(sbx.commands.run('echo before; echo oops >&2; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err?.constructor?.name}: ${err}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stdout, 'before\n')
      assert.equal(err.stderr, 'oops\n')
      return true
    })
  })

  test('commands.run: onStdout receives output before the command ends', T, async () => {
    const chunks = []
    let firstAt = null
    const started = Date.now()
    const r = await sbx.commands.run('echo first; sleep 2; echo second', {
      onStdout: (data) => {
        if (firstAt === null) firstAt = Date.now()
        chunks.push(data)
      },
    })
    const resolvedAt = Date.now()
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'first\nsecond\n')
    assert.equal(chunks.join(''), 'first\nsecond\n')
    assert.ok(firstAt !== null, 'onStdout was never called')
    assert.ok(
      resolvedAt - firstAt >= 1000,
      `the first onStdout came ${firstAt - started} ms after the start and only ` +
        `${resolvedAt - firstAt} ms before run() resolved (${resolvedAt - started} ms): output is not streamed`,
    )
  })

  test('commands: background, list, connect(pid) and kill(pid)', T, async () => {
    const handle = await sbx.commands.run('echo started; sleep 600', { background: true })
    const pid = handle.pid
    assert.ok(Number.isInteger(pid) && pid > 0, `pid ${pid}`)

    const procs = await sbx.commands.list()
    const mine = procs.find((p) => p.pid === pid)
    assert.ok(mine, `pid ${pid} not in commands.list(): ${JSON.stringify(procs)}`)
    assert.equal(mine.cmd, '/bin/bash')
    assert.ok(mine.args.some((a) => a.includes('sleep 600')), JSON.stringify(mine.args))

    // re-attach from a second handle; the first one stops listening
    await handle.disconnect()
    const attached = await sbx.commands.connect(pid)
    assert.equal(attached.pid, pid)
    assert.equal(attached.exitCode, undefined)

    assert.equal(await sbx.commands.kill(pid), true)

    // the re-attached handle sees the end: killed, so a non-zero exit
    await assert.rejects(attached.wait(), (err) => {
      assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err}`)
      assert.notEqual(err.exitCode, 0)
      return true
    })

    let still = true
    for (let i = 0; i < 50 && still; i++) {
      still = (await sbx.commands.list()).some((p) => p.pid === pid)
      if (still) await sleep(100)
    }
    assert.equal(still, false, `pid ${pid} still listed after kill`)
    assert.equal(await sbx.commands.kill(pid), false, 'killing a gone pid answers false')
  })

  test('commands: a timeout kills the command alone, as envd does; what it started lives on', T, async () => {
    // envd's timeout (Go's exec.CommandContext) kills the command's own
    // process: a child in its group, as a browser that xdg-open starts,
    // outlives it (@e2b/desktop's open() relies on it)
    const handle = await sbx.commands.run('sleep 601 & echo $! > /tmp/timeout-child; sleep 600', {
      background: true,
      timeoutMs: 1500,
    })
    const started = Date.now()
    await assert.rejects(handle.wait())
    assert.ok(Date.now() - started < 20_000, 'the timeout did not end the command')
    let still = true
    for (let i = 0; i < 50 && still; i++) {
      still = (await sbx.commands.list()).some((p) => p.pid === handle.pid)
      if (still) await sleep(100)
    }
    assert.equal(still, false, 'the timed-out command is still listed')
    const child = (await sbx.commands.run('cat /tmp/timeout-child')).stdout.trim()
    assert.match(child, /^\d+$/)
    const r = await sbx.commands.run(`ps -o args= -p ${child}`)
    assert.equal(r.stdout.trim(), 'sleep 601')
    await sbx.commands.run(`kill ${child}`)
  })

  test('files: write and read text', T, async () => {
    const info = await sbx.files.write('/home/user/hello.txt', 'héllo wörld\nline 2\n')
    assert.equal(info.path, '/home/user/hello.txt')
    assert.equal(info.name, 'hello.txt')
    assert.equal(await sbx.files.read('/home/user/hello.txt'), 'héllo wörld\nline 2\n')
    // the command side sees the same file
    const r = await sbx.commands.run('cat /home/user/hello.txt')
    assert.equal(r.stdout, 'héllo wörld\nline 2\n')
    // writes create missing parent directories
    await sbx.files.write('/home/user/deep/er/f.txt', 'x')
    assert.equal(await sbx.files.read('/home/user/deep/er/f.txt'), 'x')
  })

  test('files: list', T, async () => {
    await sbx.files.makeDir('/home/user/listme/sub')
    await sbx.files.write('/home/user/listme/a.txt', 'aaaa')
    const entries = await sbx.files.list('/home/user/listme')
    const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
    assert.deepEqual(Object.keys(byName).sort(), ['a.txt', 'sub'])
    assert.equal(byName['a.txt'].type, 'file')
    assert.equal(byName['a.txt'].path, '/home/user/listme/a.txt')
    assert.equal(byName['a.txt'].size, 4)
    assert.equal(byName['sub'].type, 'dir')
  })

  test('files: exists', T, async () => {
    await sbx.files.write('/home/user/exists.txt', 'yes')
    assert.equal(await sbx.files.exists('/home/user/exists.txt'), true)
    assert.equal(await sbx.files.exists('/home/user'), true)
    assert.equal(await sbx.files.exists('/home/user/does-not-exist.txt'), false)
  })

  test('files: makeDir', T, async () => {
    assert.equal(await sbx.files.makeDir('/home/user/newdir/a/b'), true)
    assert.equal(await sbx.files.makeDir('/home/user/newdir/a/b'), false, 'an existing directory answers false')
    const info = await sbx.files.getInfo('/home/user/newdir/a/b')
    assert.equal(info.type, 'dir')
  })

  test('files: remove', T, async () => {
    await sbx.files.write('/home/user/gone.txt', 'bye')
    await sbx.files.remove('/home/user/gone.txt')
    assert.equal(await sbx.files.exists('/home/user/gone.txt'), false)
    await sbx.files.write('/home/user/gonedir/x/y.txt', 'bye')
    await sbx.files.remove('/home/user/gonedir')
    assert.equal(await sbx.files.exists('/home/user/gonedir'), false)
  })

  test('files: rename', T, async () => {
    await sbx.files.write('/home/user/old-name.txt', 'moving')
    const entry = await sbx.files.rename('/home/user/old-name.txt', '/home/user/new-name.txt')
    assert.equal(entry.path, '/home/user/new-name.txt')
    assert.equal(entry.name, 'new-name.txt')
    assert.equal(await sbx.files.exists('/home/user/old-name.txt'), false)
    assert.equal(await sbx.files.read('/home/user/new-name.txt'), 'moving')
  })

  test('files: binary bytes round trip', T, async () => {
    const bytes = new Uint8Array(256)
    for (let i = 0; i < 256; i++) bytes[i] = i
    await sbx.files.write('/home/user/bytes.bin', bytes)
    const back = await sbx.files.read('/home/user/bytes.bin', { format: 'bytes' })
    assert.ok(back instanceof Uint8Array)
    assert.deepEqual(Buffer.from(back), Buffer.from(bytes))
    const r = await sbx.commands.run('sha256sum /home/user/bytes.bin | cut -c1-64')
    const { createHash } = await import('node:crypto')
    assert.equal(r.stdout.trim(), createHash('sha256').update(bytes).digest('hex'))
  })

  test('files: a 20 MB file written and read back identical', { timeout: 240_000 }, async () => {
    const big = randomBytes(20 * 1024 * 1024)
    const info = await sbx.files.write('/home/user/big.bin', big)
    assert.equal(info.path, '/home/user/big.bin')
    const st = await sbx.files.getInfo('/home/user/big.bin')
    assert.equal(st.size, big.length)
    const back = await sbx.files.read('/home/user/big.bin', { format: 'bytes' })
    assert.equal(back.length, big.length)
    assert.ok(Buffer.from(back).equals(big), '20 MB file came back different')
  })

  test('files.write([...]): several files in one multipart upload, answered as [{name, path, type}]', T, async () => {
    const written = await sbx.files.write([
      { path: '/home/user/multi/a.txt', data: 'first' },
      { path: '/home/user/multi/sub/b.bin', data: new Uint8Array([0, 1, 2, 255]) },
      { path: 'multi/c.txt', data: 'relative to home' },
    ])
    assert.deepEqual(written, [
      { name: 'a.txt', path: '/home/user/multi/a.txt', type: 'file', metadata: undefined },
      { name: 'b.bin', path: '/home/user/multi/sub/b.bin', type: 'file', metadata: undefined },
      { name: 'c.txt', path: '/home/user/multi/c.txt', type: 'file', metadata: undefined },
    ])
    assert.equal(await sbx.files.read('/home/user/multi/a.txt'), 'first')
    assert.deepEqual([...(await sbx.files.read('/home/user/multi/sub/b.bin', { format: 'bytes' }))], [0, 1, 2, 255])
    assert.equal(await sbx.files.read('/home/user/multi/c.txt'), 'relative to home')
    // two parts naming one path: E2B's error
    await assert.rejects(sbx.files.write([{ path: '/home/user/multi/d.txt', data: '1' },
      { path: '/home/user/multi/d.txt', data: '2' }]), InvalidArgumentError)
  })

  test('files: gzip upload and download', T, async () => {
    const text = 'compress me '.repeat(5000)
    const info = await sbx.files.write('/home/user/gz.txt', text, { gzip: true })
    assert.deepEqual(info, { name: 'gz.txt', path: '/home/user/gz.txt', type: 'file', metadata: undefined })
    assert.equal((await sbx.commands.run('wc -c < /home/user/gz.txt')).stdout.trim(), String(text.length))
    assert.equal(await sbx.files.read('/home/user/gz.txt', { gzip: true }), text)
    const bytes = randomBytes(300_000)
    await sbx.files.write('/home/user/gz.bin', bytes, { gzip: true })
    const back = await sbx.files.read('/home/user/gz.bin', { format: 'bytes', gzip: true })
    assert.ok(Buffer.from(back).equals(bytes), 'gzip round trip of random bytes')
  })

  test('files: metadata is kept as user.e2b.* attributes and returned in entries', T, async () => {
    const info = await sbx.files.write('/home/user/meta.txt', 'm', { metadata: { Author: 'ada', purpose: 'test run' } })
    assert.deepEqual(info.metadata, { author: 'ada', purpose: 'test run' })
    assert.deepEqual((await sbx.files.getInfo('/home/user/meta.txt')).metadata, { author: 'ada', purpose: 'test run' })
    const listed = (await sbx.files.list('/home/user')).find((e) => e.name === 'meta.txt')
    assert.deepEqual(listed.metadata, { author: 'ada', purpose: 'test run' })
    const r = await sbx.commands.run('getfattr -n user.e2b.author --only-values /home/user/meta.txt 2>/dev/null || ' +
      'python3 -c "import os; print(os.getxattr(\'/home/user/meta.txt\', \'user.e2b.author\').decode())"')
    assert.equal(r.stdout.trim(), 'ada')
    // rewriting replaces the whole set; a file without metadata has none
    await sbx.files.write('/home/user/meta.txt', 'm2', { metadata: { purpose: 'again' } })
    assert.deepEqual((await sbx.files.getInfo('/home/user/meta.txt')).metadata, { purpose: 'again' })
    assert.equal((await sbx.files.getInfo('/home/user/hello.txt')).metadata, undefined)
  })

  test('files: remove of a missing file is a no-op; listings in name order; symlinkTarget absolute', T, async () => {
    await sbx.files.remove('/home/user/never-existed.txt')
    await sbx.commands.run('mkdir -p /home/user/order && cd /home/user/order && touch b a C _u 10 9 && ln -s a link && ln -s ../hello.txt up')
    const names = (await sbx.files.list('/home/user/order')).map((e) => e.name)
    assert.deepEqual(names, ['10', '9', 'C', '_u', 'a', 'b', 'link', 'up'])
    const link = await sbx.files.getInfo('/home/user/order/link')
    assert.equal(link.symlinkTarget, '/home/user/order/a')
    const up = (await sbx.files.list('/home/user/order')).find((e) => e.name === 'up')
    assert.equal(up.symlinkTarget, '/home/user/hello.txt')
  })

  test('setTimeout', T, async () => {
    const before = await sbx.getInfo()
    await sbx.setTimeout(1_800_000)
    const info = await sbx.getInfo()
    const left = info.endAt.getTime() - Date.now()
    assert.ok(left > 1_700_000 && left <= 1_810_000, `endAt ${info.endAt.toISOString()} is ${left} ms away`)
    await sbx.setTimeout(600_000)
    const again = await sbx.getInfo()
    assert.ok(again.endAt.getTime() < info.endAt.getTime(), 'a shorter timeout moves endAt earlier')
    assert.ok(before.endAt instanceof Date)
  })

  test('getInfo', T, async () => {
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.equal(info.templateId, TEMPLATE)
    assert.ok(Number.isInteger(info.cpuCount) && info.cpuCount > 0, `cpuCount ${info.cpuCount}`)
    assert.ok(Number.isInteger(info.memoryMB) && info.memoryMB > 0, `memoryMB ${info.memoryMB}`)
    assert.ok(info.startedAt instanceof Date && !isNaN(info.startedAt))
    assert.ok(info.endAt > info.startedAt)
    assert.match(info.envdVersion, /^\d+\.\d+\.\d+/)
    assert.equal(await sbx.isRunning(), true)
  })

  test('getMetrics keeps a history: samples in order, memory allocated inside, start/end select a window', T, async () => {
    const before = Date.now()
    const hog = await sbx.commands.run(`python3 -c "import time; x = b'\\1' * (200 << 20); time.sleep(60)"`, { background: true })
    try {
      // samples come every 5 s at E2B (every second on the suite's daemon):
      // wait, for at most 20 s, for three taken since the memory was held
      let metrics = []
      for (const end = Date.now() + 20_000; Date.now() < end; await sleep(200)) {
        metrics = await sbx.getMetrics()
        const since = metrics.filter((m) => m.timestamp.getTime() >= before + 1000)
        if (since.length >= 3 && since[since.length - 1].memUsed >= 200 << 20) break
      }
      assert.ok(metrics.length >= 3, JSON.stringify(metrics))
      const times = metrics.map((m) => m.timestamp.getTime())
      for (let i = 1; i < times.length; i++) assert.ok(times[i] > times[i - 1], `not in time order: ${times}`)
      const last = metrics[metrics.length - 1]
      assert.ok(last.memUsed >= 200 << 20 && last.memUsed < last.memTotal, `memUsed ${last.memUsed} of ${last.memTotal}`)
      assert.ok(last.timestamp.getTime() >= before, `last sample ${last.timestamp.toISOString()}`)

      // a window of whole seconds holds exactly the samples taken in them
      // (seconds no new sample can fall in: the next comes after the newest)
      const from = Math.floor(times[times.length - 3] / 1000) * 1000
      const to = Math.floor(times[times.length - 2] / 1000) * 1000
      const inside = await sbx.getMetrics({ start: new Date(from), end: new Date(to) })
      const want = metrics.filter((m) => m.timestamp.getTime() >= from && m.timestamp.getTime() < to + 1000)
      assert.deepEqual(inside.map((m) => m.timestamp.getTime()), want.map((m) => m.timestamp.getTime()))
      const older = await sbx.getMetrics({ end: new Date(from - 1000) })
      assert.ok(older.every((m) => m.timestamp.getTime() < from), JSON.stringify(older))
      assert.equal(older.length, metrics.filter((m) => m.timestamp.getTime() < from).length)
    } finally {
      await hog.kill()
    }
    const now = Date.now()
    assert.deepEqual(await sbx.getMetrics({ start: new Date(now - 7_200_000), end: new Date(now - 3_600_000) }), [])
    assert.deepEqual(await sbx.getMetrics({ start: new Date(now + 1_800_000) }), [])
    await assert.rejects(sbx.getMetrics({ start: new Date(now), end: new Date(now - 60_000) }), /start must not be after end/)
  })

  test('getMetrics', T, async () => {
    const metrics = await sbx.getMetrics()
    assert.ok(Array.isArray(metrics) && metrics.length > 0, `metrics: ${JSON.stringify(metrics)}`)
    const m = metrics[metrics.length - 1]
    assert.ok(m.cpuCount > 0, `cpuCount ${m.cpuCount}`)
    assert.ok(m.memTotal > 0, `memTotal ${m.memTotal}`)
    assert.ok(m.diskTotal > 0, `diskTotal ${m.diskTotal}`)
    assert.equal(typeof m.cpuUsedPct, 'number')
    assert.ok(m.memUsed >= 0 && m.diskUsed >= 0)
    assert.ok(m.timestamp instanceof Date && !isNaN(m.timestamp))
  })
})

test('Sandbox.list: paging with limit 2 and a metadata filter', { timeout: 180_000 }, async () => {
  const tag = uniqueTag('page')
  // one after the other: this test is about paging, not concurrent creates
  const sbxs = []
  for (const i of [0, 1, 2]) sbxs.push(await create({ metadata: { pagetag: tag, idx: String(i) } }))
  const ids = sbxs.map((s) => s.sandboxId).sort()

  const paginator = Sandbox.list({ query: { metadata: { pagetag: tag } }, limit: 2 })
  assert.equal(paginator.hasNext, true)
  const page1 = await paginator.nextItems()
  assert.equal(page1.length, 2, `first page: ${JSON.stringify(page1)}`)
  assert.equal(paginator.hasNext, true, 'a second page is announced')
  const page2 = await paginator.nextItems()
  assert.equal(page2.length, 1, `second page: ${JSON.stringify(page2)}`)
  assert.equal(paginator.hasNext, false)
  const seen = [...page1, ...page2].map((s) => s.sandboxId).sort()
  assert.deepEqual(seen, ids, 'the pages hold each sandbox once')
  for (const s of [...page1, ...page2]) {
    assert.equal(s.metadata.pagetag, tag)
    assert.equal(s.state, 'running')
    assert.equal(s.templateId, TEMPLATE)
  }

  // a filter with two keys (AND) finds exactly one
  const one = await Sandbox.list({ query: { metadata: { pagetag: tag, idx: '1' } } }).nextItems()
  assert.equal(one.length, 1, JSON.stringify(one))
  assert.equal(one[0].metadata.idx, '1')
  // a value nobody has finds none
  const none = await Sandbox.list({ query: { metadata: { pagetag: tag + '-nope' } } }).nextItems()
  assert.deepEqual(none, [])

  await killAll(Sandbox, sbxs)
})

test('Sandbox.list: order, startedAfter and template', { timeout: 180_000 }, async () => {
  const tag = uniqueTag('order')
  const first = await create({ metadata: { ordertag: tag } })
  await sleep(1100)
  const cut = new Date()
  await sleep(50)
  const second = await create({ metadata: { ordertag: tag } })
  const q = { metadata: { ordertag: tag } }
  const ids = async (opts) => (await Sandbox.list(opts).nextItems()).map((s) => s.sandboxId)
  assert.deepEqual(await ids({ query: q }), [second.sandboxId, first.sandboxId], 'newest first by default')
  assert.deepEqual(await ids({ query: q, order: 'asc' }), [first.sandboxId, second.sandboxId])
  assert.deepEqual(await ids({ query: q, order: 'desc' }), [second.sandboxId, first.sandboxId])
  assert.deepEqual(await ids({ query: { ...q, startedAfter: cut } }), [second.sandboxId])
  assert.deepEqual(await ids({ query: { ...q, template: TEMPLATE } }), [second.sandboxId, first.sandboxId])
  assert.deepEqual(await ids({ query: { ...q, template: 'code_interpreter' } }), [])
  // paging keeps the order
  const p = Sandbox.list({ query: q, order: 'asc', limit: 1 })
  assert.deepEqual((await p.nextItems()).map((s) => s.sandboxId), [first.sandboxId])
  assert.deepEqual((await p.nextItems()).map((s) => s.sandboxId), [second.sandboxId])
  await killAll(Sandbox, [first, second])
})

test('killing a sandbox ends its open streams with the SDK\'s TimeoutError', T, async () => {
  const sbx = await create()
  const run = sbx.commands.run('sleep 60').then(() => null, (e) => e)
  const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
  const ptyDone = pty.wait().then(() => null, (e) => e)
  let watchExit
  const watchEnded = new Promise((resolve) => { watchExit = resolve })
  await sbx.files.watchDir('/home/user', () => {}, { onExit: (e) => watchExit(e) })
  await sleep(500)
  assert.equal(await Sandbox.kill(sbx.sandboxId), true)
  for (const [what, p] of [['commands.run', run], ['pty', ptyDone], ['watchDir', watchEnded]]) {
    const err = await Promise.race([p, sleep(15_000).then(() => 'still open')])
    assert.ok(err instanceof TimeoutError, `${what}: expected TimeoutError, got ${err?.constructor?.name}: ${err}`)
    assert.match(err.message, /was killed/)
  }
})

test('pause, then Sandbox.connect: files and processes intact', { timeout: 180_000 }, async () => {
  const sbx = await create()
  await sbx.files.write('/home/user/before-pause.txt', 'still here')
  const bg = await sbx.commands.run('sleep 900', { background: true })
  await bg.disconnect()

  assert.equal(await sbx.pause(), true)
  const paused = await Sandbox.getInfo(sbx.sandboxId)
  assert.equal(paused.state, 'paused')
  const pausedList = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  assert.ok(pausedList.some((s) => s.sandboxId === sbx.sandboxId), 'listed as paused')

  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 })
  assert.equal(again.sandboxId, sbx.sandboxId)
  assert.equal((await again.getInfo()).state, 'running')
  assert.equal(await again.files.read('/home/user/before-pause.txt'), 'still here')
  const procs = await again.commands.list()
  assert.ok(procs.some((p) => p.pid === bg.pid), `background sleep (pid ${bg.pid}) is gone: ${JSON.stringify(procs)}`)
  const r = await again.commands.run('echo alive')
  assert.equal(r.stdout, 'alive\n')

  // connecting to a running sandbox is fine too
  const third = await Sandbox.connect(sbx.sandboxId)
  assert.equal((await third.commands.run('echo ok')).stdout, 'ok\n')
})

test('kill: true, then Sandbox.kill of a killed or missing id: false', T, async () => {
  const sbx = await create()
  assert.equal(await sbx.kill(), true)
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  assert.equal(await Sandbox.kill(MISSING_ID), false)
  // ids of other shapes (E2B's own, say) name no sandbox either
  assert.equal(await Sandbox.kill('i7xq2m4k9w3b8n5p1r6t'), false)
  assert.equal(await Sandbox.kill('sbx_NOT-one-of-ours'), false)
  await assert.rejects(Sandbox.getInfo('i7xq2m4k9w3b8n5p1r6t'), /not found/i)
  const running = await Sandbox.list().nextItems()
  assert.ok(!running.some((s) => s.sandboxId === sbx.sandboxId), 'a killed sandbox is not listed')
})

// Egress rules through the SDK's own options.  No name is looked up and no
// address outside the machine is contacted: tests/test_network.py checks
// what the rules let through against peers of its own.
test('network: allowInternetAccess, network rules, updateNetwork and getInfo', T, async () => {
  const off = await create({ allowInternetAccess: false })
  let info = await off.getInfo()
  assert.equal(info.allowInternetAccess, false)
  assert.deepEqual(info.network, { allowOut: [], denyOut: [], rules: undefined, egressProxy: undefined,
    allowPublicTraffic: undefined, maskRequestHost: undefined, httpsPorts: undefined })
  // loopback only: even the sandbox's own DNS server (its gateway) refuses at once
  const t0 = Date.now()
  await assert.rejects(off.commands.run('getent hosts example.com'), CommandExitError)
  assert.ok(Date.now() - t0 < 5000, 'refused, not timed out')

  await off.updateNetwork({ allowOut: ['api.example.com', '198.51.100.0/24'], denyOut: ['0.0.0.0/0'] })
  info = await off.getInfo()
  assert.deepEqual([...info.network.allowOut].sort(), ['198.51.100.0/24', 'api.example.com'])
  assert.deepEqual(info.network.denyOut, ['0.0.0.0/0'])

  const ruled = await create({ network: { allowOut: ['*.example.org'], denyOut: ['0.0.0.0/0'] } })
  info = await ruled.getInfo()
  assert.deepEqual(info.network.allowOut, ['*.example.org'])
  assert.deepEqual(info.network.denyOut, ['0.0.0.0/0'])

  // an invalid entry is the caller's error, and changes nothing
  await assert.rejects(ruled.updateNetwork({ denyOut: ['example.org'] }))
  assert.deepEqual((await ruled.getInfo()).network.denyOut, ['0.0.0.0/0'])
})
