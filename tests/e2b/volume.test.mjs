// Volumes with the unmodified `e2b` SDK (2.51.0) against sbxd: the Volume
// class (create, getInfo, list, destroy, and its file calls through the
// volume's own token) and Sandbox.create({volumeMounts}). Run with
// `node --test volume.test.mjs`, the environment of helpers.mjs, and
// E2B_VOLUME_API_URL (the daemon's URL, where the SDK sends file calls)
// and E2B_OTHER_API_KEY (a key of another organisation).
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'

import { Sandbox, Volume, VolumeError, VolumeNotFoundError, VolumePathNotFoundError } from 'e2b'

import { killAll, uniqueTag } from './helpers.mjs'

const OTHER = process.env.E2B_OTHER_API_KEY
assert.ok(OTHER, 'E2B_OTHER_API_KEY must be set (see tests/test_e2b_sdk.py)')
assert.ok(process.env.E2B_VOLUME_API_URL, 'E2B_VOLUME_API_URL must be set')

const T = { timeout: 180_000 }
const created = []
const volumes = []

after(async () => {
  await killAll(Sandbox, created)
  await Promise.all(volumes.map((id) => Volume.destroy(id).catch(() => false)))
})

function volName(prefix) {
  return uniqueTag(prefix).replace(/[^A-Za-z0-9_-]/g, '-')
}

async function newVolume(prefix = 'vol') {
  const v = await Volume.create(volName(prefix))
  volumes.push(v.volumeId)
  return v
}

describe('volumes', () => {
  test('data written in one sandbox is there in the next that mounts the volume', T, async () => {
    const vol = await newVolume()
    assert.match(vol.volumeId, /^vol_[0-9a-f]+$/)
    assert.ok(vol.token)

    const a = await Sandbox.create('base', { volumeMounts: { '/mnt/data': vol } })
    created.push(a.sandboxId)
    const payload = randomBytes(100_000).toString('hex')
    await a.files.write('/mnt/data/payload.txt', payload)
    // the default user may write in it, and owns what it writes
    const who = await a.commands.run('id -u; touch /mnt/data/by-user && stat -c %U /mnt/data/by-user')
    assert.equal(who.stdout.trim().split('\n')[1], 'user')
    const info = await a.getInfo()
    assert.deepEqual(info.volumeMounts, [{ name: vol.name, path: '/mnt/data' }])
    // a volume a sandbox mounts is not deleted under it
    await assert.rejects(Volume.destroy(vol.volumeId), (e) => e instanceof VolumeError && /mounted/.test(e.message))
    await a.kill()

    // by name, at another path
    const b = await Sandbox.create('base', { volumeMounts: { '/srv/vol': vol.name } })
    created.push(b.sandboxId)
    assert.equal(await b.files.read('/srv/vol/payload.txt'), payload)
    const r = await b.commands.run('stat -c %U /srv/vol/by-user; df -m /srv/vol | tail -1')
    assert.match(r.stdout, /^user\n/)
    // its size is the volume's own (1 GiB), not the sandbox's disk
    assert.ok(Number(r.stdout.trim().split('\n')[1].split(/\s+/)[1]) <= 1024, r.stdout)

    // the content API sees what the sandbox wrote, and the sandbox what it writes
    assert.equal(await vol.readFile('/payload.txt'), payload)
    const w = await vol.writeFile('/from-api/x.txt', 'hi').catch((e) => e)
    assert.ok(w instanceof VolumePathNotFoundError, String(w))
    const dir = await vol.makeDir('/from-api', { uid: 1000, gid: 1000 })
    assert.equal(dir.type, 'directory')
    assert.equal(dir.uid, 1000)
    const st = await vol.writeFile('/from-api/x.txt', 'hello', { mode: 0o640 })
    assert.equal(st.type, 'file')
    assert.equal(st.size, 5)
    assert.equal(st.mode, 0o640)
    assert.equal(st.path, '/from-api/x.txt')
    assert.equal((await b.commands.run('cat /srv/vol/from-api/x.txt', { user: 'root' })).stdout, 'hello')
    await b.commands.run('ln -s /etc/passwd /srv/vol/link')
    const names = (await vol.list('/')).map((e) => e.name)
    assert.deepEqual(names, ['by-user', 'from-api', 'link', 'payload.txt'])
    const deep = (await vol.list('/', { depth: 2 })).map((e) => e.path)
    assert.ok(deep.includes('/from-api/x.txt'), deep.join(' '))
    const link = await vol.getInfo('/link')
    assert.equal(link.type, 'symlink')
    assert.equal(link.target, '/etc/passwd')
    // a symlink is never followed on the host
    await assert.rejects(vol.readFile('/link'), VolumeError)
    await assert.rejects(vol.readFile('/../../../../etc/hostname'), VolumeError)
    assert.equal(await vol.exists('/nope'), false)
    const upd = await vol.updateMetadata('/from-api/x.txt', { mode: 0o600 })
    assert.equal(upd.mode, 0o600)
    await vol.remove('/from-api')
    assert.equal(await vol.exists('/from-api/x.txt'), false)
    await assert.rejects(vol.remove('/from-api'), VolumePathNotFoundError)
    await b.kill()

    // list, get, delete
    const listed = await Volume.list()
    assert.ok(listed.some((v) => v.volumeId === vol.volumeId && v.name === vol.name))
    const again = await Volume.getInfo(vol.volumeId)
    assert.equal(again.name, vol.name)
    assert.equal(again.token, vol.token)
    assert.equal(await Volume.destroy(vol.volumeId), true)
    assert.equal(await Volume.destroy(vol.volumeId), false)
    await assert.rejects(Volume.getInfo(vol.volumeId), VolumeNotFoundError)
    // its token dies with it
    await assert.rejects(vol.readFile('/payload.txt'), VolumeError)
  })

  test('names: E2B pattern, unique in an organisation', T, async () => {
    for (const bad of ['', 'a b', 'x/y', 'dots.not.allowed', 'é', 'a'.repeat(65)]) {
      await assert.rejects(Volume.create(bad), (e) => e instanceof VolumeError && !(e instanceof VolumeNotFoundError),
        `name ${JSON.stringify(bad)}`)
    }
    const v = await newVolume('dup')
    await assert.rejects(Volume.create(v.name), /already exists/)
    // mounting a volume that is not there, or at a bad path, is a 400
    await assert.rejects(Sandbox.create('base', { volumeMounts: { '/mnt/x': 'no-such-volume' } }), /not found/)
    await assert.rejects(Sandbox.create('base', { volumeMounts: { 'relative': v } }), /absolute/)
    await assert.rejects(Sandbox.create('base', { volumeMounts: { '/proc/x': v } }), /kernel file system/)
    await assert.rejects(Sandbox.create('base', { volumeMounts: { '/a': v, '/a/b': v } }), /below/)
  })

  test('another organisation sees none of them', T, async () => {
    const v = await newVolume('mine')
    const opts = { apiKey: OTHER }
    assert.ok(!(await Volume.list(opts)).some((x) => x.volumeId === v.volumeId))
    await assert.rejects(Volume.getInfo(v.volumeId, opts), VolumeNotFoundError)
    assert.equal(await Volume.destroy(v.volumeId, opts), false)
    await assert.rejects(Sandbox.create('base', { ...opts, volumeMounts: { '/mnt/v': v.name } }), /not found/)
    // a token of another volume opens nothing
    const theirs = await Volume.create(volName('theirs'), opts)
    try {
      const forged = new Volume(v.volumeId, v.name, theirs.token)
      await assert.rejects(forged.list('/'), (e) => e.name === 'AuthenticationError' && /invalid volume token/.test(e.message))
    } finally {
      await Volume.destroy(theirs.volumeId, opts)
    }
    assert.ok((await Volume.getInfo(v.volumeId)).token)
  })
})
