// The unmodified `@e2b/code-interpreter` SDK (2.8.0) against sbxd: the
// sandbox comes from its default template (code-interpreter-v1) and
// runCode talks to POST /execute on port 49999 (E2b-Sandbox-Port), which
// sbxd forwards to the interpreter server inside the sandbox (real Jupyter
// kernels: ipykernel, tslab, IRkernel, a bash kernel).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'

import { Sandbox } from '@e2b/code-interpreter'

import { PNG_MAGIC, sleep } from './helpers.mjs'

const T = { timeout: 120_000 }

let sbx
before(async () => {
  // no template argument: the SDK asks for its default, code-interpreter-v1
  sbx = await Sandbox.create({ timeoutMs: 900_000 })
})

after(async () => {
  if (sbx) await sbx.kill().catch(() => false)
})

function ok(exec) {
  assert.equal(exec.error, undefined, JSON.stringify(exec.error))
  return exec
}

test('the sandbox comes from the code interpreter template', T, async () => {
  const info = await sbx.getInfo()
  assert.ok(
    ['code-interpreter-v1', 'code_interpreter'].includes(info.templateId),
    `templateId ${info.templateId}`,
  )
})

test('runCode keeps state across calls', T, async () => {
  ok(await sbx.runCode('x = 41'))
  const exec = ok(await sbx.runCode('x + 1'))
  assert.equal(exec.text, '42')
  assert.equal(exec.results.length, 1, JSON.stringify(exec.results))
  assert.equal(exec.results[0].text, '42')
  assert.equal(exec.results[0].isMainResult, true)
  assert.ok(exec.executionCount >= 2, `executionCount ${exec.executionCount}`)
})

test('runCode: stdout goes to logs', T, async () => {
  const exec = ok(await sbx.runCode('print("hello from python")\nprint(x * 2)'))
  assert.equal(exec.logs.stdout.join(''), 'hello from python\n82\n')
  assert.deepEqual(exec.logs.stderr, [])
})

test('runCode: the code is dedented', T, async () => {
  const exec = ok(await sbx.runCode('\n    y = 5\n    if y:\n        print(y * 2)\n    y\n'))
  assert.equal(exec.logs.stdout.join(''), '10\n')
  assert.equal(exec.text, '5')
})

test('runCode: envs apply to one execution', T, async () => {
  const code = 'import os\nos.environ.get("SBXD_E2B_VAR", "unset")'
  assert.equal(ok(await sbx.runCode(code, { envs: { SBXD_E2B_VAR: 'on' } })).text, 'on')
  assert.equal(ok(await sbx.runCode(code)).text, 'unset')
})

test('runCode: a runtime error is reported as execution.error', T, async () => {
  const exec = await sbx.runCode('1/0')
  assert.ok(exec.error, `no error: ${JSON.stringify(exec)}`)
  assert.equal(exec.error.name, 'ZeroDivisionError')
  assert.match(exec.error.value, /division by zero/)
  assert.match(exec.error.traceback, /ZeroDivisionError/)
  assert.match(exec.error.traceback, /1\/0/)
  const raised = await sbx.runCode('def f():\n    raise ValueError("bad thing")\nf()')
  assert.equal(raised.error.name, 'ValueError')
  assert.equal(raised.error.value, 'bad thing')
  assert.match(raised.error.traceback, /in f\b/)
  // the kernel survives the errors
  assert.equal((await sbx.runCode('x')).text, '41')
})

test('languages: javascript, typescript, r and bash run in real kernels; java is refused', T, async () => {
  const js = ok(await sbx.runCode('const a = 20; console.log("js says", a); a * 2 + 2', { language: 'javascript' }))
  assert.equal(js.logs.stdout.join(''), 'js says 20\n')
  assert.equal(js.text, '42')
  const ts = ok(
    await sbx.runCode('const n: number = 40\nfunction add(a: number, b: number): number { return a + b }\nadd(n, 2)', {
      language: 'typescript',
    }),
  )
  assert.equal(ts.text, '42')
  const tsErr = await sbx.runCode('const s: string = 1', { language: 'typescript' })
  assert.ok(tsErr.error, 'a TypeScript type error is an error')
  const r = ok(await sbx.runCode('v <- c(1, 2, 3)\nsum(v) * 7', { language: 'r' }))
  assert.match(r.text, /42/)
  const bash = ok(await sbx.runCode('N=6\necho "bash $((N * 7))"\ncd /tmp', { language: 'bash' }))
  assert.equal(bash.logs.stdout.join(''), 'bash 42\n')
  const bash2 = ok(await sbx.runCode('echo "$N $(pwd)"', { language: 'bash' }))
  assert.equal(bash2.logs.stdout.join(''), '6 /tmp\n', 'bash keeps its state')
  const failed = await sbx.runCode('false', { language: 'bash' })
  assert.ok(failed.error, 'a failing command is an error')
  assert.equal(failed.error.value, '1')
  await assert.rejects(sbx.runCode('System.out.println(1);', { language: 'java' }), /400/)
  await assert.rejects(sbx.runCode('1', { language: 'cobol' }), /400/)
})

test('contexts: the defaults are listed; cwd is honoured, /root included; remove and restart', T, async () => {
  const before = await sbx.listCodeContexts()
  const langs = before.map((c) => c.language)
  assert.ok(langs.includes('python') && langs.includes('javascript'), JSON.stringify(before))

  const tmp = await sbx.createCodeContext({ cwd: '/tmp' })
  assert.equal(tmp.cwd, '/tmp')
  assert.equal(tmp.language, 'python')
  assert.equal(ok(await sbx.runCode('import os\nos.getcwd()', { context: tmp })).text, '/tmp')
  ok(await sbx.runCode('mine = 7', { context: tmp }))
  const other = await sbx.runCode('mine')
  assert.equal(other.error?.name, 'NameError', 'contexts are independent')

  const root = await sbx.createCodeContext({ cwd: '/root', language: 'python' })
  assert.equal(ok(await sbx.runCode('import os\nos.getcwd(), os.getuid()', { context: root })).text, "('/root', 0)")

  const js = await sbx.createCodeContext({ cwd: '/tmp', language: 'javascript' })
  assert.equal(js.language, 'javascript')
  assert.equal(ok(await sbx.runCode('process.cwd()', { context: js })).text, '/tmp')

  const ids = (await sbx.listCodeContexts()).map((c) => c.id)
  for (const c of [tmp, root, js]) assert.ok(ids.includes(c.id))

  await sbx.restartCodeContext(tmp)
  assert.equal((await sbx.runCode('mine', { context: tmp })).error?.name, 'NameError')
  for (const c of [tmp, root, js]) await sbx.removeCodeContext(c)
  const left = (await sbx.listCodeContexts()).map((c) => c.id)
  for (const c of [tmp, root, js]) assert.ok(!left.includes(c.id))
  await assert.rejects(sbx.runCode('1', { context: tmp }), /not found/i)
})

test('display formats: html, markdown, svg, png, latex, json, javascript', T, async () => {
  const code = `
from IPython.display import display, HTML, Markdown, SVG, Latex, JSON, Javascript, Image
import io
from matplotlib.figure import Figure
display(HTML("<b>bold</b>"))
display(Markdown("# Title"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'))
buf = io.BytesIO(); Figure(figsize=(1, 1)).savefig(buf, format="png")
display(Image(data=buf.getvalue(), format="png"))
display(Latex(r"$\\frac{1}{2}$"))
display(JSON({"a": [1, 2]}))
display(Javascript("console.log(1)"))
`
  const exec = ok(await sbx.runCode(code))
  const r = exec.results
  assert.equal(r.length, 7, JSON.stringify(r.map((x) => x.formats())))
  assert.match(r[0].html, /<b>bold<\/b>/)
  assert.equal(r[1].markdown, '# Title')
  assert.match(r[2].svg, /<svg/)
  assert.ok(Buffer.from(r[3].png, 'base64').subarray(0, 8).equals(PNG_MAGIC))
  assert.match(r[4].latex, /frac/)
  assert.deepEqual(r[5].json, { a: [1, 2] })
  assert.match(r[6].javascript, /console\.log/)
  assert.ok(r.every((x) => x.isMainResult === false))
  // a DataFrame: html, and its columns as data
  const df = ok(await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": ["x", "y"]})'))
  assert.match(df.results[0].html, /<table/)
  assert.deepEqual(df.results[0].data, { a: [1, 2], b: ['x', 'y'] })
})

test('runCode: a matplotlib chart comes back as a PNG with its chart data', T, async () => {
  const code = [
    'import matplotlib.pyplot as plt',
    'fig, ax = plt.subplots()',
    'ax.plot([1, 2, 3], [1, 4, 9], label="squares")',
    'ax.set_title("Growth"); ax.set_xlabel("Time (s)"); ax.set_ylabel("Value")',
    'plt.show()',
  ].join('\n')
  const exec = ok(await sbx.runCode(code))
  assert.equal(exec.results.length, 1, JSON.stringify(exec.results.map((x) => x.formats())))
  const res = exec.results[0]
  const bytes = Buffer.from(res.png, 'base64')
  assert.ok(bytes.length > 100 && bytes.subarray(0, 8).equals(PNG_MAGIC), 'png')
  const c = res.chart
  assert.equal(c.type, 'line')
  assert.equal(c.title, 'Growth')
  assert.equal(c.x_label, 'Time (s)')
  assert.equal(c.x_unit, 's')
  assert.equal(c.x_scale, 'linear')
  assert.equal(c.elements.length, 1)
  assert.equal(c.elements[0].label, 'squares')
  assert.deepEqual(c.elements[0].points, [[1, 1], [2, 4], [3, 9]])
  assert.ok(c.x_ticks.length > 0 && c.x_tick_labels.length === c.x_ticks.length)
})

test('charts: scatter, bar, pie, box and whisker, and a figure of several axes', T, async () => {
  const code = `
import matplotlib.pyplot as plt
fig, ax = plt.subplots(); ax.scatter([1, 2], [3, 4], label="pts"); plt.show()
fig, ax = plt.subplots(); ax.bar(["a", "b", "c"], [3, 5, 2], label="sales"); ax.set_title("Bars"); plt.show()
fig, ax = plt.subplots(); ax.pie([1, 3], labels=["one", "three"]); ax.set_title("Pie"); plt.show()
fig, ax = plt.subplots(); ax.boxplot([[1, 2, 3, 4, 5, 30], [2, 3, 4]], labels=["A", "B"]); plt.show()
fig, (a1, a2) = plt.subplots(1, 2); fig.suptitle("Both"); a1.plot([1, 2], [2, 1]); a2.bar([1, 2], [5, 6]); plt.show()
`
  const exec = ok(await sbx.runCode(code))
  const charts = exec.results.map((r) => r.chart)
  assert.deepEqual(
    charts.map((c) => c?.type),
    ['scatter', 'bar', 'pie', 'box_and_whisker', 'superchart'],
    JSON.stringify(charts),
  )
  const [scatter, bar, pie, box, sup] = charts
  assert.deepEqual(scatter.elements, [{ label: 'pts', points: [[1, 3], [2, 4]] }])
  assert.equal(bar.title, 'Bars')
  assert.deepEqual(
    bar.elements.map((e) => [e.label, e.value, e.group]),
    [['a', 3, 'sales'], ['b', 5, 'sales'], ['c', 2, 'sales']],
  )
  assert.deepEqual(pie.elements.map((e) => e.label), ['one', 'three'])
  assert.ok(Math.abs(pie.elements[0].angle - 90) < 1e-6 && Math.abs(pie.elements[1].angle - 270) < 1e-6)
  assert.deepEqual(box.elements[0], {
    label: 'A', min: 1, first_quartile: 2.25, median: 3.5, third_quartile: 4.75, max: 5, outliers: [30],
  })
  assert.equal(box.elements[1].label, 'B')
  assert.equal(sup.title, 'Both')
  assert.deepEqual(sup.elements.map((c) => c.type), ['line', 'bar'])
})

test('the interpreter answers /health from inside the sandbox', T, async () => {
  const r = await sbx.commands.run('curl -s -o /dev/null -w "%{http_code}" http://localhost:49999/health')
  assert.equal(r.stdout, '204')
})

test('killing the interpreter server brings it back', T, async () => {
  ok(await sbx.runCode('kept = 1'))
  // the server alone: its supervisor starts a new one
  // ([i]: the pattern does not match the shell that runs pkill)
  await sbx.commands.run("pkill -KILL -f '[i]nterpreter/server.py'", { user: 'root' })
  let code = ''
  for (let i = 0; i < 100 && code !== '204'; i++) {
    await sleep(100)
    code = (await sbx.commands.run('curl -s -o /dev/null -w "%{http_code}" http://localhost:49999/health || true')).stdout
  }
  assert.equal(code, '204', 'the server is back')
  assert.equal((await sbx.runCode('kept')).error?.name, 'NameError', 'a fresh kernel')
  // the supervisor too: the daemon starts it again at the next call
  await sbx.commands.run("pkill -KILL -f '[s]tart.sh --locked'; pkill -KILL -f '[i]nterpreter/server.py'", {
    user: 'root',
  })
  assert.equal(ok(await sbx.runCode('6 * 7')).text, '42')
})

test('a sandbox made from a snapshot of this one runs code: the interpreter starts with it', T, async () => {
  ok(await sbx.runCode('open("/home/user/from_snapshot.txt", "w").write("kept")\nin_memory = 1'))
  const snap = await sbx.createSnapshot()
  let copy
  try {
    copy = await Sandbox.create(snap.snapshotId, { timeoutMs: 300_000 })
    // the files came; the memory did not (a fresh kernel)
    const exec = ok(await copy.runCode('print(open("/home/user/from_snapshot.txt").read())'))
    assert.equal(exec.logs.stdout.join(''), 'kept\n')
    assert.equal((await copy.runCode('in_memory')).error?.name, 'NameError')
    assert.equal(ok(await copy.runCode('6 * 7')).text, '42')
    const r = await copy.commands.run('curl -s -o /dev/null -w "%{http_code}" http://localhost:49999/health')
    assert.equal(r.stdout, '204')
  } finally {
    if (copy) await copy.kill().catch(() => false)
    await Sandbox.deleteSnapshot(snap.snapshotId).catch(() => false)
  }
})
