// `sbx mcp` (MCP's stdio transport, bridged to the daemon's /mcp) through
// the official MCP TypeScript SDK's StdioClientTransport, which spawns it
// as a desktop agent does.  SBX (the sbx binary), SBXD_URL, SBXD_API_KEY
// and SBXD_API_KEY_OTHER (a key of another organisation) come from
// tests/test_mcp.py.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

let stderr = '';

async function spawn(key, name = 'sbxd-stdio-test') {
  const transport = new StdioClientTransport({
    command: process.env.SBX,
    args: ['mcp'],
    // only these: the SDK passes no other variable of ours on
    env: { PATH: process.env.PATH, HOME: process.env.HOME, SBXD_URL: process.env.SBXD_URL, SBXD_API_KEY: key },
    stderr: 'pipe',
  });
  transport.stderr?.on('data', (d) => { stderr += d; });
  const client = new Client({ name, version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

function text(result) {
  return result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
}

let a;
let sandbox;

before(async () => {
  a = await spawn(process.env.SBXD_API_KEY);
});

after(async () => {
  if (sandbox) await a.client.callTool({ name: 'kill_sandbox', arguments: { sandbox_id: sandbox } }).catch(() => {});
  await a?.client.close();
});

test('initialize and the tools, over stdio', async () => {
  assert.equal(a.client.getServerVersion().name, 'sbxd', stderr);
  assert.ok(a.client.getServerCapabilities().tools);
  const { tools } = await a.client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(),
    ['create_sandbox', 'kill_sandbox', 'list_files', 'read_file', 'run_code', 'run_command', 'write_file']);
  await a.client.ping();
});

test('a sandbox: run_command, run_code, write_file and read_file', async () => {
  const c = await a.client.callTool({ name: 'create_sandbox', arguments: { template: 'code_interpreter', timeout: 300 } });
  assert.equal(c.isError, false, text(c));
  sandbox = c.structuredContent.sandbox_id;
  assert.match(sandbox, /^sbx[0-9a-z]+$/);

  const cmd = await a.client.callTool({
    name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'echo "via stdio $(hostname)"; echo e >&2; exit 2' },
  });
  assert.equal(cmd.isError, false, text(cmd));
  assert.deepEqual(cmd.structuredContent, { stdout: `via stdio ${sandbox}\n`, stderr: 'e\n', exit_code: 2 });

  const code = await a.client.callTool({
    name: 'run_code', arguments: { sandbox_id: sandbox, language: 'python', code: 'print("py", 2 + 3)\n6 * 7' },
  });
  assert.equal(code.isError, false, text(code));
  assert.equal(code.structuredContent.stdout, 'py 5\n');
  assert.deepEqual(code.structuredContent.results, ['42']);

  const w = await a.client.callTool({
    name: 'write_file', arguments: { sandbox_id: sandbox, path: 'stdio/hello.txt', content: 'written over stdio\n' },
  });
  assert.equal(w.isError, false, text(w));
  const r = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'stdio/hello.txt' } });
  assert.equal(r.isError, false, text(r));
  assert.equal(text(r), 'written over stdio\n');
  // the code sees the file too
  const seen = await a.client.callTool({
    name: 'run_code', arguments: { sandbox_id: sandbox, code: 'print(open("/home/user/stdio/hello.txt").read().upper(), end="")' },
  });
  assert.equal(seen.structuredContent.stdout, 'WRITTEN OVER STDIO\n');

  // a tool error is a result, and the bridge goes on
  const missing = await a.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'no/such' } });
  assert.equal(missing.isError, true);
  const ok = await a.client.callTool({ name: 'run_command', arguments: { sandbox_id: sandbox, cmd: 'true' } });
  assert.equal(ok.structuredContent.exit_code, 0);
});

test("another organisation's key, over stdio, cannot reach the sandbox", async () => {
  const b = await spawn(process.env.SBXD_API_KEY_OTHER, 'other-org');
  try {
    const r = await b.client.callTool({ name: 'read_file', arguments: { sandbox_id: sandbox, path: 'stdio/hello.txt' } });
    assert.equal(r.isError, true);
    assert.equal(text(r), `sandbox ${sandbox} not found`);
  } finally {
    await b.client.close();
  }
});
