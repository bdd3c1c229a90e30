// Snapshots, forks and the lifecycle (autoPause, autoResume, pause without
// memory, connect) with the unmodified `e2b` SDK (2.51.0) against sbxd. Run
// with `node --test snapshot.test.mjs` and the environment described in
// helpers.mjs.
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'

import { Sandbox, SandboxNotFoundError } from 'e2b'

import { killAll, sleep, uniqueTag } from './helpers.mjs'

const TEMPLATE = 'base'
const T = { timeout: 180_000 }

const created = []
const snapshots = []
function keep(sbx) {
  created.push(sbx.sandboxId)
  return sbx
}
async function create(template = TEMPLATE, opts = {}) {
  return keep(await Sandbox.create(template, { timeoutMs: 600_000, ...opts }))
}

after(async () => {
  await killAll(Sandbox, created)
  await Promise.all(snapshots.map((id) => Sandbox.deleteSnapshot(id).catch(() => false)))
})

/** What makes a sandbox itself: its machine id, host name and token. */
async function identity(sbx) {
  const r = await sbx.commands.run('cat /etc/machine-id; hostname')
  const [machineId, hostname] = r.stdout.trim().split('\n')
  assert.match(machineId, /^[0-9a-f]{32}$/)
  return { machineId, hostname, token: sbx.envdAccessToken }
}

/** Wait until getInfo says STATE (the timeout's pause is asynchronous). */
async function waitState(id, state, ms = 20_000) {
  const until = Date.now() + ms
  for (;;) {
    const info = await Sandbox.getInfo(id)
    if (info.state === state) return info
    if (Date.now() > until) assert.fail(`sandbox ${id} is ${info.state}, not ${state}, after ${ms} ms`)
    await sleep(200)
  }
}

describe('snapshots', () => {
  test('createSnapshot, listSnapshots, Sandbox.create(snapshotId) sees the files, deleteSnapshot', T, async () => {
    const src = await create()
    const payload = randomBytes(200_000).toString('hex')
    await src.files.write('/home/user/data/payload.txt', payload)
    await src.commands.run('mkdir -p /home/user/data/sub && ln -s payload.txt /home/user/data/link')
    await src.commands.run('rm -f /etc/hostname', { user: 'root' })

    const name = uniqueTag('snap').replace(/[^A-Za-z0-9._-]/g, '-')
    const snap = await src.createSnapshot({ name })
    snapshots.push(snap.snapshotId)
    assert.match(snap.snapshotId, /\S/)
    assert.deepEqual(snap.names, [name])

    // the source goes on running, unchanged
    assert.equal((await src.getInfo()).state, 'running')
    assert.equal((await src.commands.run('echo alive')).stdout, 'alive\n')

    // listed for the organisation, and by the source sandbox
    const all = await Sandbox.listSnapshots().nextItems()
    assert.ok(all.some((s) => s.snapshotId === snap.snapshotId))
    const mine = await src.listSnapshots().nextItems()
    assert.deepEqual(mine.map((s) => s.snapshotId), [snap.snapshotId])

    // a sandbox from it has the files (by id and by name), as the same users
    for (const ref of [snap.snapshotId, name]) {
      const copy = await create(ref)
      assert.equal(await copy.files.read('/home/user/data/payload.txt'), payload)
      const r = await copy.commands.run(
        'stat -c %U /home/user/data/payload.txt; readlink /home/user/data/link; test -e /etc/hostname || echo gone')
      assert.equal(r.stdout, 'user\npayload.txt\ngone\n')
      // and it writes as any sandbox does
      await copy.files.write('/home/user/data/new.txt', 'new')
      assert.equal(await copy.files.read('/home/user/data/new.txt'), 'new')
      const a = await identity(copy), b = await identity(src)
      assert.notEqual(a.machineId, b.machineId)
      assert.notEqual(a.hostname, b.hostname)
    }

    // the snapshot survives its source
    await src.kill()
    const late = await create(snap.snapshotId)
    assert.equal(await late.files.read('/home/user/data/payload.txt'), payload)

    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false)
    await assert.rejects(Sandbox.create(snap.snapshotId, { timeoutMs: 60_000 }))
    // a sandbox made from it goes on with its files
    assert.equal(await late.files.read('/home/user/data/payload.txt'), payload)
  })
})

describe('fork', () => {
  test('fork 1 and 10: the parent\'s files, a machine id, host name and token of their own', T, async () => {
    const parent = await create()
    await parent.files.write('/home/user/state.txt', 'before fork')
    const before = (await parent.getInfo()).endAt
    const ids = [await identity(parent)]

    const [one] = await parent.fork({ count: 1, timeoutMs: 300_000 })
    assert.ok(one instanceof Sandbox, String(one))
    keep(one)
    assert.equal(await one.files.read('/home/user/state.txt'), 'before fork')
    ids.push(await identity(one))

    // the parent goes on, its end unchanged, and its later writes are its own
    assert.equal((await parent.getInfo()).state, 'running')
    assert.equal((await parent.getInfo()).endAt.getTime(), before.getTime())
    await parent.files.write('/home/user/state.txt', 'after fork')
    assert.equal(await one.files.read('/home/user/state.txt'), 'before fork')

    const ten = await Sandbox.fork(parent.sandboxId, { count: 10 })
    assert.equal(ten.length, 10)
    for (const f of ten) {
      assert.ok(f instanceof Sandbox, String(f))
      keep(f)
    }
    const seen = await Promise.all(ten.map(async (f) => {
      assert.equal(await f.files.read('/home/user/state.txt'), 'after fork')
      return identity(f)
    }))
    ids.push(...seen)
    for (const key of ['machineId', 'hostname', 'token']) {
      assert.equal(new Set(ids.map((i) => i[key])).size, ids.length, `${key}s are not all distinct`)
    }
    // a fork's writes stay its own
    await ten[0].files.write('/home/user/state.txt', 'fork 0')
    assert.equal(await ten[1].files.read('/home/user/state.txt'), 'after fork')
    assert.equal(await parent.files.read('/home/user/state.txt'), 'after fork')

    // fresh entropy: no shared random state
    const rnd = await Promise.all(ten.slice(0, 3).map((f) => f.commands.run('head -c 16 /dev/urandom | od -An -tx1')))
    assert.equal(new Set(rnd.map((r) => r.stdout)).size, 3)
  })

  test('fork of a sandbox that is gone: SandboxNotFoundError', T, async () => {
    const sbx = await create()
    await sbx.kill()
    await assert.rejects(Sandbox.fork(sbx.sandboxId, { count: 1 }), SandboxNotFoundError)
  })
})

describe('lifecycle', () => {
  test('onTimeout pause with autoResume: paused at its timeout, a command resumes it with files and processes', T, async () => {
    const sbx = await create(TEMPLATE, { timeoutMs: 4_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
    const info = await sbx.getInfo()
    assert.deepEqual(info.lifecycle, { onTimeout: 'pause', autoResume: true })
    await sbx.files.write('/home/user/kept.txt', 'kept')
    await sbx.commands.run('sleep 1000', { background: true })

    await waitState(sbx.sandboxId, 'paused')
    // an envd call resumes it
    const r = await sbx.commands.run('cat /home/user/kept.txt; echo; pgrep -x sleep >/dev/null && echo running')
    assert.equal(r.stdout, 'kept\nrunning\n')
    assert.equal((await sbx.getInfo()).state, 'running')
  })

  test('onTimeout pause: connect resumes it with its files and processes', T, async () => {
    const sbx = await create(TEMPLATE, { timeoutMs: 3_000, lifecycle: { onTimeout: 'pause' } })
    assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: 'pause', autoResume: false })
    await sbx.files.write('/home/user/kept.txt', 'kept')
    await sbx.commands.run('sleep 1000', { background: true })
    await waitState(sbx.sandboxId, 'paused')
    // without autoResume a call does not wake it
    await assert.rejects(sbx.commands.run('true', { requestTimeoutMs: 10_000 }))
    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
    assert.equal((await again.getInfo()).state, 'running')
    const r = await again.commands.run('cat /home/user/kept.txt; echo; pgrep -x sleep >/dev/null && echo running')
    assert.equal(r.stdout, 'kept\nrunning\n')
  })

  test('pause({keepMemory: false}): processes end, files stay, the next connect starts fresh', T, async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/kept.txt', 'kept')
    await sbx.commands.run('sleep 1000', { background: true })
    const before = await sbx.commands.run('cat /etc/machine-id')
    assert.equal(await sbx.pause({ keepMemory: false }), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    assert.equal(await sbx.pause({ keepMemory: false }), false) // already paused
    const again = await Sandbox.connect(sbx.sandboxId)
    const r = await again.commands.run('cat /home/user/kept.txt; echo; pgrep -x sleep || echo none')
    assert.equal(r.stdout, 'kept\nnone\n')
    // the same machine, started again
    assert.equal((await again.commands.run('cat /etc/machine-id')).stdout, before.stdout)
  })

  test('onTimeout {action: pause, keepMemory: false}: paused without its processes', T, async () => {
    const sbx = await create(TEMPLATE, { timeoutMs: 3_000, lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } })
    await sbx.files.write('/home/user/kept.txt', 'kept')
    await sbx.commands.run('sleep 1000', { background: true })
    await waitState(sbx.sandboxId, 'paused')
    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
    const r = await again.commands.run('cat /home/user/kept.txt; echo; pgrep -x sleep || echo none')
    assert.equal(r.stdout, 'kept\nnone\n')
  })

  test('connect to a killed sandbox: SandboxNotFoundError (404)', T, async () => {
    const sbx = await create()
    await sbx.kill()
    await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError)
  })

  test('connect with a shorter timeout never brings the end closer; a longer one extends it', T, async () => {
    const sbx = await create(TEMPLATE, { timeoutMs: 600_000 })
    const end0 = (await sbx.getInfo()).endAt.getTime()
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 30_000 })
    const end1 = (await sbx.getInfo()).endAt.getTime()
    assert.equal(end1, end0)
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 1_200_000 })
    const end2 = (await sbx.getInfo()).endAt.getTime()
    assert.ok(end2 > end0 + 500_000, `end ${end2} not extended past ${end0}`)
  })
})
