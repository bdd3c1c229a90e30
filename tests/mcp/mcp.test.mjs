// sbxd's MCP server (/mcp) through the official MCP TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in package.json) over Streamable HTTP.
// SBXD_URL, SBXD_API_KEY and SBXD_API_KEY_OTHER (a key of another
// organisation) come from tests/test_mcp.py.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const URL_ = new URL('/mcp', process.env.SBXD_URL);

async function connect(key, name = 'sbxd-test') {
  const client = new Client({ name, version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(URL_, {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

function text(result) {
  return result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
}

let a; // the first organisation's client
let b; // another organisation's
let sandbox; // a code_interpreter sandbox of the first

before(async () => {
  a = await connect(process.env.SBXD_API_KEY);
  b = await connect(process.env.SBXD_API_KEY_OTHER, 'other-org');
  const r = await a.client.callTool({ name: 'create_sandbox', arguments: { template: 'code_interpreter', timeout: 300 } });
  assert.equal(r.isError, false, text(r));
  sandbox = r.structuredContent.sandbox_id;
  assert.match(sandbox, /^sbx[0-9a-z]+$/);
});

after(async () => {
  if (sandbox) await a.client.callTool({ name: 'kill_sandbox', arguments: { sandbox_id: sandbox } }).catch(() => {});
  await a?.transport.terminateSession().catch(() => {});
  await a?.client.close();
  await b?.client.close();
});

test('the session and the tools', async () => {
  assert.match(a.transport.sessionId, /^[0-9a-f]{32}$/);
  assert.equal(a.client.getServerVersion().name, 'sbxd');
  assert.ok(a.client.getServerCapabilities().tools);
  const { tools } = await a.client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(),
    ['create_sandbox', 'kill_sandbox', 'list_files', 'read_file', 'run_code', 'run_command', 'write_file']);
  for (const t of tools) assert.equal(t.inputSchema.type, 'object', t.name);
  await a.client.ping();
});

test('run_command: stdout, stderr and exit_code, as text and structured', async () => {
  const r = await a.client.callTool({
    name: 'run_command',
    arguments: { sandbox_id: sandbox, cmd: 'echo "out $FOO"; echo err >&2; pwd; exit 3', cwd: '/tmp', env: { FOO: 'bar' } },
  });
  assert.equal(r.isError, false);
  assert.deepEqual(r.structuredContent, { stdout: 'out bar\n/tmp\n', stderr: 'err\n', exit_code: 3 });
  assert.deepEqual(JSON.parse(text(r)), r.structuredContent);

  const argv = await a.client.callTool({
    name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'printf', args: ['%s|', 'a b', '$HOME'] },
  });
  assert.equal(argv.structuredContent.stdout, 'a b|$HOME|');
  assert.equal(argv.structuredContent.exit_code, 0);

  const slow = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'sleep 30', timeout: 1 } });
  assert.equal(slow.structuredContent.exit_code, 124);
  assert.equal(slow.structuredContent.timed_out, true);
});

test('run_code: output, results and a chart as a PNG image', async () => {
  const r = await a.client.callTool({
    name: 'run_code',
    arguments: {
      sandbox_id: sandbox,
      language: 'python',
      code: 'import matplotlib.pyplot as plt\n'
        + 'plt.plot([1, 2, 3], [4, 1, 9])\nplt.title("sbxd")\nplt.show()\nprint("sum", sum(range(10)))\nx = 6 * 7\nx',
    },
  });
  assert.equal(r.isError, false, text(r));
  assert.equal(r.structuredContent.stdout, 'sum 45\n');
  assert.ok(r.structuredContent.results.includes('42'), JSON.stringify(r.structuredContent.results));
  const images = r.content.filter((c) => c.type === 'image');
  assert.equal(images.length, 1);
  assert.equal(images[0].mimeType, 'image/png');
  const png = Buffer.from(images[0].data, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(png.length > 5000, `a real chart, not ${png.length} bytes`);

  // the kernel keeps its state between calls
  const again = await a.client.callTool({ name: 'run_code', arguments: { sandbox_id: sandbox, code: 'x + 1' } });
  assert.deepEqual(again.structuredContent.results, ['43']);

  const bad = await a.client.callTool({ name: 'run_code', arguments: { sandbox_id: sandbox, code: '1 / 0' } });
  assert.equal(bad.isError, true);
  assert.equal(bad.structuredContent.error.name, 'ZeroDivisionError');

  // a cell past its timeout is interrupted, and the kernel goes on
  const t0 = Date.now();
  const slow = await a.client.callTool({
    name: 'run_code', arguments: { sandbox_id: sandbox, code: 'import time\nprint("start", flush=True)\ntime.sleep(60)', timeout: 1 },
  });
  assert.ok(Date.now() - t0 < 15000, `interrupted after ${Date.now() - t0} ms`);
  assert.equal(slow.isError, true);
  assert.equal(slow.structuredContent.timed_out, true);
  assert.equal(slow.structuredContent.error.name, 'TimeoutError');
  assert.equal(slow.structuredContent.stdout, 'start\n');
  const after = await a.client.callTool({ name: 'run_code', arguments: { sandbox_id: sandbox, code: 'x' } });
  assert.deepEqual(after.structuredContent.results, ['42']);
});

test('write_file, then read_file and list_files', async () => {
  const w = await a.client.callTool({
    name: 'write_file', arguments: { sandbox_id: sandbox, path: 'mcp/notes.txt', content: 'written through MCP\n' },
  });
  assert.equal(w.isError, false, text(w));
  const r = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: '/home/user/mcp/notes.txt' } });
  assert.equal(r.isError, false);
  assert.equal(text(r), 'written through MCP\n');

  // what the sandbox itself sees
  const cat = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'cat mcp/notes.txt' } });
  assert.equal(cat.structuredContent.stdout, 'written through MCP\n');

  const bin = Buffer.from([0, 1, 2, 255, 254]);
  await a.client.callTool({
    name: 'write_file', arguments: { sandbox_id: sandbox, path: 'mcp/data.bin', content: bin.toString('base64'), encoding: 'base64' },
  });
  const rb = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'mcp/data.bin' } });
  assert.equal(rb.content[0].type, 'resource');
  assert.deepEqual(Buffer.from(rb.content[0].resource.blob, 'base64'), bin);

  const l = await a.client.callTool({ name: 'list_files', arguments: { sandbox_id: sandbox, path: 'mcp' } });
  assert.equal(l.isError, false);
  assert.equal(text(l), 'f 5 /home/user/mcp/data.bin\nf 20 /home/user/mcp/notes.txt\n');
});

test('tool errors are results with isError, and the session goes on', async () => {
  const missing = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'no/such/file' } });
  assert.equal(missing.isError, true);
  assert.match(text(missing), /No such file or directory/);

  const unknown = await a.client.callTool({ name: 'no_such_tool', arguments: {} });
  assert.equal(unknown.isError, true);
  assert.match(text(unknown), /unknown tool/);

  const noId = await a.client.callTool({ name: 'run_command', arguments: { cmd: 'true' } });
  assert.equal(noId.isError, true);
  assert.match(text(noId), /sandbox_id is required/);

  const badArg = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'true', timeout: 'soon' } });
  assert.equal(badArg.isError, true);
  assert.match(text(badArg), /timeout must be an integer/);

  const lang = await a.client.callTool({ name: 'run_code', arguments: { sandbox_id: sandbox, language: 'cobol', code: 'x' } });
  assert.equal(lang.isError, true);

  const tpl = await a.client.callTool({ name: 'create_sandbox', arguments: { template: 'no-such-template' } });
  assert.equal(tpl.isError, true);

  const ok = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'echo still here' } });
  assert.equal(ok.structuredContent.stdout, 'still here\n');
});

test("another organisation's key cannot reach the first's sandboxes", async () => {
  for (const [name, args] of [
    ['run_command', { cmd: 'echo hacked > /tmp/x' }],
    ['run_code', { code: 'print(1)' }],
    ['read_file', { path: 'mcp/notes.txt' }],
    ['write_file', { path: 'mcp/notes.txt', content: 'overwritten' }],
    ['list_files', { path: '/' }],
    ['kill_sandbox', {}],
  ]) {
    const r = await b.client.callTool({ name, arguments: { sandbox_id: sandbox, ...args } });
    assert.equal(r.isError, true, name);
    assert.equal(text(r), `sandbox ${sandbox} not found`, name);
  }
  // nothing changed, and the sandbox still runs
  const r = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'mcp/notes.txt' } });
  assert.equal(text(r), 'written through MCP\n');

  // nor can it use the first's MCP session
  const res = await fetch(URL_, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${process.env.SBXD_API_KEY_OTHER}`, 'Content-Type': 'application/json',
      Accept: 'application/json, text/event-stream', 'Mcp-Session-Id': a.transport.sessionId,
      'MCP-Protocol-Version': '2025-06-18',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  assert.equal(res.status, 404);
});

test('create_sandbox and kill_sandbox', async () => {
  const c = await a.client.callTool({ name: 'create_sandbox', arguments: { template: 'base', timeout: 60 } });
  assert.equal(c.isError, false, text(c));
  const id = c.structuredContent.sandbox_id;
  assert.equal(c.structuredContent.template, 'base');
  assert.ok(Date.parse(c.structuredContent.end_at) > Date.now());
  const echo = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: id, cmd: 'hostname' } });
  assert.equal(echo.structuredContent.stdout.trim(), id);

  const k = await a.client.callTool({ name: 'kill_sandbox', arguments: { sandbox_id: id } });
  assert.equal(k.isError, false, text(k));
  const gone = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: id, cmd: 'true' } });
  assert.equal(gone.isError, true);
  assert.match(text(gone), /has ended/);
  const again = await a.client.callTool({ name: 'kill_sandbox', arguments: { sandbox_id: id } });
  assert.equal(again.isError, true);
});
