// Shared by the E2B SDK tests: the environment they need and small helpers.
//
// The tests talk to sbxd exactly as the unmodified SDKs talk to E2B; they
// need E2B_API_KEY (an e2b_ key), E2B_API_URL and E2B_SANDBOX_URL (both
// http://127.0.0.1:PORT of the daemon under test).
import assert from 'node:assert/strict'

for (const name of ['E2B_API_KEY', 'E2B_API_URL', 'E2B_SANDBOX_URL']) {
  assert.ok(process.env[name], `${name} must be set (see tests/test_e2b_sdk.py)`)
}

/** A per-run unique tag, for metadata filters that must not see other runs. */
export function uniqueTag(prefix = 't') {
  return `${prefix}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`
}

/** A valid-looking sandbox id that no sandbox has. */
export const MISSING_ID = 'sbx_nosuchsandbox0000000'

/** Kill sandboxes, ignoring errors (cleanup after a failure). */
export async function killAll(SandboxClass, sandboxes) {
  await Promise.all(
    sandboxes.filter(Boolean).map((s) =>
      SandboxClass.kill(typeof s === 'string' ? s : s.sandboxId).catch(() => false),
    ),
  )
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** PNG files start with these 8 bytes. */
export const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
