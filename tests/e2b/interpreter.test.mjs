// The unmodified `@e2b/code-interpreter` SDK (2.8.0) against sbxd: the
// sandbox comes from its default template (code-interpreter-v1) and
// runCode talks to POST /execute on port 49999 (E2b-Sandbox-Port).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'

import { Sandbox } from '@e2b/code-interpreter'

import { PNG_MAGIC } from './helpers.mjs'

const T = { timeout: 120_000 }

let sbx
before(async () => {
  // no template argument: the SDK asks for its default, code-interpreter-v1
  sbx = await Sandbox.create({ timeoutMs: 600_000 })
})

after(async () => {
  if (sbx) await sbx.kill().catch(() => false)
})

test('the sandbox comes from the code interpreter template', T, async () => {
  const info = await sbx.getInfo()
  assert.ok(
    ['code-interpreter-v1', 'code_interpreter'].includes(info.templateId),
    `templateId ${info.templateId}`,
  )
})

test('runCode keeps state across calls', T, async () => {
  const first = await sbx.runCode('x = 41')
  assert.equal(first.error, undefined, JSON.stringify(first.error))
  const exec = await sbx.runCode('x + 1')
  assert.equal(exec.error, undefined, JSON.stringify(exec.error))
  assert.equal(exec.text, '42')
  assert.equal(exec.results.length, 1, JSON.stringify(exec.results))
  assert.equal(exec.results[0].text, '42')
  assert.equal(exec.results[0].isMainResult, true)
})

test('runCode: stdout goes to logs', T, async () => {
  const exec = await sbx.runCode('print("hello from python")\nprint(x * 2)')
  assert.equal(exec.error, undefined, JSON.stringify(exec.error))
  assert.equal(exec.logs.stdout.join(''), 'hello from python\n82\n')
  assert.deepEqual(exec.logs.stderr, [])
})

test('runCode: a matplotlib chart comes back as a PNG', T, async () => {
  const code = [
    'import matplotlib.pyplot as plt',
    'fig, ax = plt.subplots()',
    'ax.plot([1, 2, 3], [1, 4, 9])',
    'plt.show()',
  ].join('\n')
  const exec = await sbx.runCode(code)
  assert.equal(exec.error, undefined, JSON.stringify(exec.error))
  assert.ok(exec.results.length >= 1, `no results: ${JSON.stringify(exec)}`)
  const png = exec.results[0].png
  assert.equal(typeof png, 'string', `results[0] has no png: ${JSON.stringify(exec.results[0])}`)
  const bytes = Buffer.from(png, 'base64')
  assert.ok(bytes.length > 100, `png is ${bytes.length} bytes`)
  assert.ok(bytes.subarray(0, 8).equals(PNG_MAGIC), 'results[0].png is not base64 of a PNG')
})

test('runCode: a runtime error is reported as execution.error', T, async () => {
  const exec = await sbx.runCode('1/0')
  assert.ok(exec.error, `no error: ${JSON.stringify(exec)}`)
  assert.equal(exec.error.name, 'ZeroDivisionError')
  assert.match(exec.error.value, /division by zero/)
  assert.match(exec.error.traceback, /ZeroDivisionError/)
  // the kernel survives the error
  const next = await sbx.runCode('x')
  assert.equal(next.text, '41')
})
