// The older `e2b` SDK line (2.50.x), which creates sandboxes through
// POST /sandboxes instead of POST /v2/sandboxes. Run with
// `node --test sdk-old.test.mjs` and the environment described in
// ../helpers.mjs.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

import { Sandbox, CommandExitError } from 'e2b'

import { killAll } from '../helpers.mjs'

const T = { timeout: 120_000 }
const created = []

after(async () => {
  await killAll(Sandbox, created)
})

test('the SDK under test is the 2.50 line', () => {
  const require = createRequire(import.meta.url)
  const { version } = require('e2b/package.json')
  assert.match(version, /^2\.50\./)
})

let sbx

test('old SDK: create', T, async () => {
  sbx = await Sandbox.create('base', { timeoutMs: 300_000, metadata: { line: 'old' }, envs: { LINE: 'old' } })
  created.push(sbx.sandboxId)
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.state, 'running')
  assert.equal(info.templateId, 'base')
  assert.equal(info.metadata.line, 'old')
})

test('old SDK: commands.run', T, async () => {
  assert.ok(sbx, 'no sandbox: create failed')
  const r = await sbx.commands.run('echo out $LINE; echo err >&2')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'out old\n')
  assert.equal(r.stderr, 'err\n')
  await assert.rejects(sbx.commands.run('exit 5'), (err) => {
    assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err}`)
    assert.equal(err.exitCode, 5)
    return true
  })
})

test('old SDK: files write/read', T, async () => {
  assert.ok(sbx, 'no sandbox: create failed')
  await sbx.files.write('/home/user/old.txt', 'from the 2.50 SDK\n')
  assert.equal(await sbx.files.read('/home/user/old.txt'), 'from the 2.50 SDK\n')
  assert.equal((await sbx.commands.run('cat /home/user/old.txt')).stdout, 'from the 2.50 SDK\n')
  const bytes = Uint8Array.from({ length: 256 }, (_, i) => i)
  await sbx.files.write('/home/user/old.bin', bytes)
  const back = await sbx.files.read('/home/user/old.bin', { format: 'bytes' })
  assert.deepEqual(Buffer.from(back), Buffer.from(bytes))
})

test('old SDK: kill', T, async () => {
  assert.ok(sbx, 'no sandbox: create failed')
  assert.equal(await sbx.kill(), true)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
})
