// Watching directories (WatchDir stream and the watcher calls) and signed
// file URLs, through the unmodified e2b SDK.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'
import { killAll, sleep } from './helpers.mjs'

test('watchDir streams create, write and remove events, recursively', async () => {
  const sbx = await Sandbox.create('base')
  try {
    await sbx.files.makeDir('/home/user/w')
    const seen = []
    const handle = await sbx.files.watchDir('/home/user/w', (e) => seen.push(`${e.type}:${e.name}`), { recursive: true })
    await sbx.files.write('/home/user/w/a.txt', 'x')
    await sbx.commands.run('mkdir /home/user/w/sub && echo y > /home/user/w/sub/b.txt && rm /home/user/w/a.txt')
    for (let i = 0; i < 50 && !seen.includes('remove:a.txt'); i++) await sleep(100)
    await handle.stop()
    assert.ok(seen.includes('create:a.txt'), JSON.stringify(seen))
    assert.ok(seen.includes('create:sub'), JSON.stringify(seen))
    assert.ok(seen.includes('create:sub/b.txt'), JSON.stringify(seen))
    assert.ok(seen.includes('write:sub/b.txt'), JSON.stringify(seen))
    assert.ok(seen.includes('remove:a.txt'), JSON.stringify(seen))
    assert.ok(!seen.some((s) => s.includes('.sbxd-')), 'temporary files of atomic writes are not reported')
    // a missing directory: the stream itself carries not_found (HTTP 200)
    await assert.rejects(sbx.files.watchDir('/home/user/nope', () => {}), (err) => {
      assert.equal(err.constructor.name, 'FileNotFoundError', `${err.constructor.name}: ${err}`)
      return true
    })
    const res = await fetch(`${process.env.E2B_SANDBOX_URL}/filesystem.Filesystem/WatchDir`, {
      method: 'POST',
      headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': sbx.envdAccessToken,
        'Content-Type': 'application/connect+json', 'Connect-Protocol-Version': '1' },
      body: (() => { const j = Buffer.from(JSON.stringify({ path: '/home/user/nope' })); const h = Buffer.alloc(5); h.writeUInt32BE(j.length, 1); return Buffer.concat([h, j]) })(),
    })
    assert.equal(res.status, 200)
    const body = Buffer.from(await res.arrayBuffer())
    assert.equal(body[0], 2, 'one end-of-stream envelope')
    assert.equal(JSON.parse(body.subarray(5).toString()).error.code, 'not_found')
  } finally {
    await killAll(Sandbox, [sbx])
  }
})

test('watchDir reports WRITE when files.write rewrites an existing file', async () => {
  const sbx = await Sandbox.create('base')
  try {
    await sbx.files.write('/home/user/rw/f.txt', 'one')
    const seen = []
    const handle = await sbx.files.watchDir('/home/user/rw', (e) => seen.push(`${e.type}:${e.name}`))
    await sbx.files.write('/home/user/rw/f.txt', 'two')
    await sbx.files.write('/home/user/rw/new.txt', 'three')
    for (let i = 0; i < 50 && !seen.includes('create:new.txt'); i++) await sleep(100)
    await handle.stop()
    assert.ok(seen.includes('write:f.txt'), JSON.stringify(seen))
    assert.ok(!seen.includes('create:f.txt'), `a rewrite is no create: ${JSON.stringify(seen)}`)
    assert.ok(seen.includes('create:new.txt'), JSON.stringify(seen))
  } finally {
    await killAll(Sandbox, [sbx])
  }
})

test('signed upload and download URLs work without headers and only when signed', async () => {
  const sbx = await Sandbox.create('base')
  try {
    const up = await sbx.uploadUrl('/home/user/up.txt')
    const form = new FormData()
    form.append('file', new Blob(['signed upload']), 'up.txt')
    assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
    const down = await sbx.downloadUrl('/home/user/up.txt', { useSignatureExpiration: 60 })
    const res = await fetch(down)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'signed upload')
    assert.equal((await fetch(down.replace(/signature=v1_[^&]+/, 'signature=v1_forged'))).status, 401)
    // a read signature does not allow a write
    const form2 = new FormData()
    form2.append('file', new Blob(['x']), 'up.txt')
    assert.notEqual((await fetch(down, { method: 'POST', body: form2 })).status, 200)
    // an expired signature: E2B's 401 and message
    const old = await sbx.downloadUrl('/home/user/up.txt', { useSignatureExpiration: 1 })
    await sleep(2100)
    const gone = await fetch(old)
    assert.equal(gone.status, 401)
    assert.deepEqual(await gone.json(), { code: 401, message: 'signature is already expired' })
    const forged = await fetch(down.replace(/signature=v1_[^&]+/, 'signature=v1_forged'))
    assert.deepEqual(await forged.json(), { code: 401, message: 'invalid signature' })
  } finally {
    await killAll(Sandbox, [sbx])
  }
})
