// The unmodified SDKs given only E2B_DOMAIN (the daemon's --domain, with
// its port) and E2B_API_KEY: the control plane at https://api.DOMAIN,
// envd at https://49983-ID.DOMAIN, the interpreter at 49999-ID.DOMAIN and
// the sandbox's own ports at getHost(PORT).  Run by tests/test_domain.py
// with the test's CA (NODE_EXTRA_CA_CERTS) and loopback-dns.mjs preloaded.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Sandbox } from 'e2b'
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter'

const DOMAIN = process.env.E2B_DOMAIN
assert.ok(DOMAIN && process.env.E2B_API_KEY, 'E2B_DOMAIN and E2B_API_KEY must be set')
for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_DEBUG']) {
  assert.equal(process.env[name], undefined, `${name} must not be set: the domain alone must do`)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function fetchUntil(url, opts, want = 200) {
  let r
  for (let i = 0; i < 50; i++) {
    r = await fetch(url, opts)
    if (r.status === want) return r
    await sleep(200)
  }
  return r
}

test('envd through 49983-ID.DOMAIN: commands and files', async () => {
  const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
  try {
    assert.equal(sbx.sandboxDomain, DOMAIN)
    assert.equal(sbx.getHost(49983), `49983-${sbx.sandboxId}.${DOMAIN}`)
    const r = await sbx.commands.run('echo hi from $HOSTNAME')
    assert.match(r.stdout, /^hi from /)
    await sbx.files.write('/home/user/a.txt', 'through the domain')
    assert.equal(await sbx.files.read('/home/user/a.txt'), 'through the domain')
    assert.ok((await sbx.files.list('/home/user')).some((e) => e.name === 'a.txt'))
    assert.equal(await sbx.isRunning(), true)
  } finally {
    await sbx.kill()
  }
})

test('getHost(port) reaches a server in the sandbox, public and private', async () => {
  const pub = await Sandbox.create('base', { timeoutMs: 120_000 })
  const priv = await Sandbox.create('base', { timeoutMs: 120_000, network: { allowPublicTraffic: false } })
  try {
    for (const sbx of [pub, priv]) {
      await sbx.files.write('/home/user/site/index.html', `hello from ${sbx.sandboxId}`)
      await sbx.commands.run('cd /home/user/site && python3 -m http.server 3000', { background: true })
    }
    const host = pub.getHost(3000)
    assert.equal(host, `3000-${pub.sandboxId}.${DOMAIN}`)
    const r = await fetchUntil(`https://${host}/index.html`)
    assert.equal(r.status, 200)
    assert.equal(await r.text(), `hello from ${pub.sandboxId}`)

    assert.ok(priv.trafficAccessToken, 'a private sandbox has a traffic token')
    const url = `https://${priv.getHost(3000)}/index.html`
    const headers = { 'e2b-traffic-access-token': priv.trafficAccessToken }
    const ok = await fetchUntil(url, { headers })
    assert.equal(ok.status, 200)
    assert.equal(await ok.text(), `hello from ${priv.sandboxId}`)
    const refused = await fetch(url)
    assert.equal(refused.status, 403)
    const wrong = await fetch(url, { headers: { 'e2b-traffic-access-token': pub.trafficAccessToken } })
    assert.equal(wrong.status, 403)
    const info = await priv.getInfo()
    assert.equal(info.network.allowPublicTraffic, false)
  } finally {
    await pub.kill()
    await priv.kill()
  }
})

test('the code interpreter through 49999-ID.DOMAIN', async () => {
  const sbx = await CodeSandbox.create({ timeoutMs: 120_000 })
  try {
    const ex = await sbx.runCode('x = 6 * 7\nx')
    assert.equal(ex.error, undefined)
    assert.equal(ex.text, '42')
    const ctx = await sbx.createCodeContext()
    assert.ok(ctx.id)
  } finally {
    await sbx.kill()
  }
})
