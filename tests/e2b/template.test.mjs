// The unmodified `e2b` SDK's Template class (build API v2/v3) against sbxd.
// Builds start FROM the shipped `base` template, so no Debian download is
// needed. Run with `node --test template.test.mjs` and the environment
// described in helpers.mjs.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { Sandbox, Template, waitForFile } from 'e2b'

import { killAll, sleep, uniqueTag } from './helpers.mjs'

const T = { timeout: 300_000 }
const created = []
let ctx

before(() => {
  // the local files COPY steps upload
  ctx = fs.mkdtempSync(path.join(os.tmpdir(), 'sbxd-tpl-'))
  fs.writeFileSync(path.join(ctx, 'hello.txt'), 'hello from the build context\n')
  fs.mkdirSync(path.join(ctx, 'conf'))
  fs.writeFileSync(path.join(ctx, 'conf', 'a.ini'), 'a=1\n')
  fs.writeFileSync(path.join(ctx, 'conf', 'b.ini'), 'b=2\n')
})

const built = []

// DELETE /templates/{id} (the SDK has no call for it): removes the
// template and the layers only its builds made
async function deleteTemplate(id) {
  const r = await fetch(`${process.env.E2B_API_URL}/templates/${encodeURIComponent(id)}`, {
    method: 'DELETE',
    headers: { 'X-API-KEY': process.env.E2B_API_KEY },
  })
  return r.status
}

after(async () => {
  await killAll(Sandbox, created)
  for (const id of built) await deleteTemplate(id)
  fs.rmSync(ctx, { recursive: true, force: true })
})

async function create(template) {
  const sbx = await Sandbox.create(template, { timeoutMs: 300_000 })
  created.push(sbx.sandboxId)
  return sbx
}

function layered() {
  return Template({ fileContextPath: ctx })
    .fromTemplate('base')
    .setEnvs({ GREETING: 'hello', SECOND: 'two' })
    .copy('hello.txt', '/home/user/app/')
    .copy('conf', '/etc/myconf')
    .setWorkdir('/home/user/app')
    .runCmd('echo "$GREETING from $(whoami) in $(pwd)" > made.txt')
    .setUser('root')
    .runCmd('touch /opt/rootfile && rm -f /etc/motd')
    .setUser('user')
    .makeSymlink('/home/user/app/hello.txt', '/home/user/app/link.txt')
}

describe('Template', () => {
  const name = uniqueTag('tpl').toLowerCase()
  built.push(name, `${name}-bg`, `${name}-fails`)

  test('Template.exists: a shipped template yes, an unknown name no', T, async () => {
    assert.equal(await Template.exists('base'), true)
    assert.equal(await Template.exists(`${name}-never-built`), false)
  })

  test('build from base with RUN, COPY, ENV, WORKDIR, USER; the second build reuses the layers', T, async () => {
    const logs1 = []
    const t0 = Date.now()
    const info = await Template.build(layered(), `${name}:v1`, { onBuildLogs: (e) => logs1.push(e.message) })
    const first = Date.now() - t0
    assert.match(info.templateId, /\S/)
    assert.match(info.buildId, /^[0-9a-f-]{36}$/)
    assert.ok(logs1.some((m) => /^\[3\/9\] COPY conf/.test(m)), logs1.join('\n'))
    assert.ok(!logs1.some((m) => /CACHED/.test(m)), logs1.join('\n'))
    assert.equal(await Template.exists(name), true)

    const logs2 = []
    const t1 = Date.now()
    await Template.build(layered(), `${name}:v1`, { onBuildLogs: (e) => logs2.push(e.message) })
    const second = Date.now() - t1
    const cached = logs2.filter((m) => /^CACHED \[/.test(m))
    assert.ok(cached.length >= 5, logs2.join('\n'))
    assert.ok(logs2.some((m) => /^CACHED \[5\/9\] RUN echo/.test(m)), logs2.join('\n'))
    assert.ok(second < first, `second build ${second} ms, first ${first} ms`)

    // the steps took effect in a sandbox of the template
    const sbx = await create(name)
    // the last user and workdir of the template are the sandbox's defaults
    // (E2B: "persisted as a default to the sandbox execution"); another
    // user starts in its home, an explicit cwd wins
    assert.equal((await sbx.commands.run('pwd')).stdout, '/home/user/app\n')
    assert.equal((await sbx.commands.run('whoami')).stdout, 'user\n')
    assert.equal((await sbx.commands.run('pwd', { user: 'root' })).stdout, '/root\n')
    assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
    // a workdir that is gone: its user starts in its home instead
    await sbx.commands.run('mv /home/user/app /home/user/app.moved')
    assert.equal((await sbx.commands.run('pwd')).stdout, '/home/user\n')
    await sbx.commands.run('mv /home/user/app.moved /home/user/app')
    const r = await sbx.commands.run(
      'cd /home/user/app && cat made.txt hello.txt /etc/myconf/a.ini /etc/myconf/b.ini && readlink link.txt &&' +
        ' stat -c %U /opt/rootfile made.txt /etc/myconf/a.ini && echo "$GREETING $SECOND" &&' +
        ' { test -e /etc/motd || echo no-motd; }',
    )
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(
      r.stdout,
      'hello from user in /home/user/app\nhello from the build context\na=1\nb=2\n' +
        '/home/user/app/hello.txt\nroot\nuser\nuser\nhello two\nno-motd\n',
    )
  })

  test('tags: list, assign, start by tag, remove', T, async () => {
    const tags = await Template.getTags(name)
    assert.ok(tags.some((t) => t.tag === 'v1'), JSON.stringify(tags))
    const v1 = tags.find((t) => t.tag === 'v1')
    assert.ok(v1.createdAt instanceof Date && !isNaN(v1.createdAt))

    const assigned = await Template.assignTags(`${name}:v1`, ['prod', 'stable'])
    assert.equal(assigned.buildId, v1.buildId)
    assert.deepEqual(assigned.tags, ['prod', 'stable'])
    const after = (await Template.getTags(name)).map((t) => t.tag).sort()
    assert.deepEqual(after, ['prod', 'stable', 'v1'])

    const sbx = await create(`${name}:prod`)
    const r = await sbx.commands.run('cat /home/user/app/made.txt')
    assert.equal(r.stdout, 'hello from user in /home/user/app\n')

    await Template.removeTags(name, 'prod')
    assert.deepEqual((await Template.getTags(name)).map((t) => t.tag).sort(), ['stable', 'v1'])
    await assert.rejects(Sandbox.create(`${name}:prod`), /prod/)
  })

  test('a background build polled to completion; its start command runs in every sandbox', T, async () => {
    const bg = `${name}-bg`
    const tpl = Template()
      .fromTemplate('base')
      .runCmd('echo background > /home/user/bg.txt')
      .setStartCmd('echo started > /tmp/started; sleep 100000', waitForFile('/tmp/started'))
    const info = await Template.buildInBackground(tpl, bg)
    let status
    let offset = 0
    const logs = []
    for (let i = 0; i < 600; i++) {
      status = await Template.getBuildStatus(info, { logsOffset: offset })
      offset += status.logEntries.length
      logs.push(...status.logEntries.map((e) => e.message))
      if (status.status === 'ready' || status.status === 'error') break
      await sleep(200)
    }
    assert.equal(status.status, 'ready', JSON.stringify(status.reason) + '\n' + logs.join('\n'))
    assert.ok(logs.some((m) => /ready command succeeded/.test(m)), logs.join('\n'))

    const sbx = await create(bg)
    const r = await sbx.commands.run('cat /home/user/bg.txt /tmp/started; pgrep -f "sleep 100000" >/dev/null && echo up')
    assert.equal(r.stdout, 'background\nstarted\nup\n')
  })

  test('delete: the template is gone, its name free, a second delete 404', T, async () => {
    const gone = `${name}-gone`
    await Template.build(Template().fromTemplate('base').runCmd('echo x > /tmp/x'), gone)
    assert.equal(await Template.exists(gone), true)
    assert.equal(await deleteTemplate(gone), 204)
    assert.equal(await Template.exists(gone), false)
    await assert.rejects(Sandbox.create(gone), /gone/)
    assert.equal(await deleteTemplate(gone), 404)
  })

  test("fromImage 'ubuntu:22.04' cannot be pulled: a clear error", T, async () => {
    const tpl = Template().fromImage('ubuntu:22.04').runCmd('true')
    await assert.rejects(Template.build(tpl, `${name}-ubuntu`), (e) => {
      assert.equal(e.name, 'BuildError')
      assert.match(e.message, /fromImage 'ubuntu:22\.04' cannot be pulled here.*Debian/)
      return true
    })
  })

  test('a failing RUN fails the build with its step and output', T, async () => {
    const tpl = Template().fromTemplate('base').runCmd('echo about to fail; exit 3')
    const logs = []
    await assert.rejects(
      Template.build(tpl, `${name}-fails`, { onBuildLogs: (e) => logs.push(e.message) }),
      (e) => {
        assert.equal(e.name, 'BuildError')
        assert.match(e.message, /RUN step failed with exit code 3/)
        return true
      },
    )
    assert.ok(logs.includes('about to fail'), logs.join('\n'))
  })
})
