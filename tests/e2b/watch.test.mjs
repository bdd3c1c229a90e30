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
    await assert.rejects(sbx.files.watchDir('/home/user/nope', () => {}))
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
  } finally {
    await killAll(Sandbox, [sbx])
  }
})
