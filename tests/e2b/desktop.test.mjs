// The unmodified E2B Desktop SDK (@e2b/desktop 2.4.0) against the
// `desktop` template, given only E2B_DOMAIN and E2B_API_KEY: envd and the
// stream through PORT-ID.DOMAIN, as on E2B.  Run by tests/test_desktop.py
// with the test's CA (NODE_EXTRA_CA_CERTS), loopback-dns.mjs preloaded
// and Node's WebSocket client (--experimental-websocket).  Nothing leaves
// the machine: the page Chromium opens is served inside the sandbox.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { inflateSync } from 'node:zlib'
import { Sandbox } from '@e2b/desktop'

// (not helpers.mjs: it wants E2B_API_URL, which the domain replaces)
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const W = 1024
const H = 768

/** Decode an 8-bit, non-interlaced RGB or RGBA PNG (what scrot writes). */
function decodePng(buf) {
  assert.ok(buf.subarray(0, 8).equals(PNG_MAGIC), 'not a PNG')
  let pos = 8
  let width, height, type
  const idat = []
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos)
    const kind = buf.toString('latin1', pos + 4, pos + 8)
    const data = buf.subarray(pos + 8, pos + 8 + len)
    if (kind === 'IHDR') {
      width = data.readUInt32BE(0)
      height = data.readUInt32BE(4)
      assert.equal(data[8], 8, 'bit depth')
      type = data[9]
      assert.ok(type === 2 || type === 6, `colour type ${type}`)
      assert.equal(data[12], 0, 'interlaced')
    } else if (kind === 'IDAT') idat.push(data)
    else if (kind === 'IEND') break
    pos += 12 + len
  }
  const bpp = type === 6 ? 4 : 3
  const raw = inflateSync(Buffer.concat(idat))
  const stride = width * bpp
  const px = Buffer.alloc(width * height * 3)
  let prev = Buffer.alloc(stride)
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)]
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)))
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? line[i - bpp] : 0
      const b = prev[i]
      const c = i >= bpp ? prev[i - bpp] : 0
      let p = 0
      if (f === 1) p = a
      else if (f === 2) p = b
      else if (f === 3) p = (a + b) >> 1
      else if (f === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c)
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
      }
      line[i] = (line[i] + p) & 255
    }
    for (let x = 0; x < width; x++) line.copy(px, (y * width + x) * 3, x * bpp, x * bpp + 3)
    prev = line
  }
  return { width, height, px }
}

/** The bounding box and count of the pixels close to [r, g, b]. */
function findColour({ width, height, px }, [r, g, b]) {
  let n = 0, x0 = width, y0 = height, x1 = -1, y1 = -1
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3
      if (Math.abs(px[i] - r) < 12 && Math.abs(px[i + 1] - g) < 12 && Math.abs(px[i + 2] - b) < 12) {
        n++
        if (x < x0) x0 = x
        if (x > x1) x1 = x
        if (y < y0) y0 = y
        if (y > y1) y1 = y
      }
    }
  return { n, x0, y0, x1, y1 }
}

// The page: one big green button; a click turns it blue and shows a text
// field; Enter in the field puts what was typed in the window's title.
const PAGE = `<!doctype html><html><head><title>sbxd desktop test</title><style>
html, body { margin: 0; height: 100%; }
#b { position: fixed; inset: 0; width: 100%; height: 100%; border: 0; background: rgb(0, 200, 0); }
#b.clicked { background: rgb(0, 0, 200); }
#t { position: fixed; top: 10px; left: 10px; width: 300px; display: none; }
</style></head><body>
<button id="b"></button><input id="t">
<script>
const b = document.getElementById('b'), t = document.getElementById('t')
b.addEventListener('click', () => { b.className = 'clicked'; t.style.display = 'block'; t.focus() })
t.addEventListener('keydown', (e) => { if (e.key === 'Enter') document.title = 'typed: ' + t.value })
</script></body></html>`

const GREEN = [0, 200, 0]
const BLUE = [0, 0, 200]

let desktop
before(async () => {
  desktop = await Sandbox.create({ timeoutMs: 300_000 })
})
after(async () => {
  await desktop?.kill().catch(() => {})
})

test('screenshot: a PNG of the screen size, not blank; the screen size and cursor as the SDK reads them', async () => {
  const png = Buffer.from(await desktop.screenshot())
  const img = decodePng(png)
  assert.equal(img.width, W)
  assert.equal(img.height, H)
  // a desktop (wallpaper, panel) has many colours; a blank screen has one
  const colours = new Set()
  for (let i = 0; i < img.px.length; i += 3 * 97) colours.add(img.px.readUIntBE(i, 3))
  assert.ok(colours.size > 20, `only ${colours.size} colours: the screen looks blank`)
  assert.deepEqual(await desktop.getScreenSize(), { width: W, height: H })
  await desktop.moveMouse(123, 456)
  assert.deepEqual(await desktop.getCursorPosition(), { x: 123, y: 456 })
})

test('open() a page served in the sandbox in Chromium, click it, type into it', { timeout: 180_000 }, async () => {
  await desktop.files.write('/tmp/site/index.html', PAGE)
  const server = await desktop.commands.run('python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/site', {
    background: true,
    timeoutMs: 0,
  })
  for (let i = 0; i < 50; i++) {
    const r = await desktop.commands.run('curl -sf -o /dev/null http://127.0.0.1:8000/', { timeoutMs: 10_000 }).catch((e) => e)
    if (r.exitCode === 0) break
    await sleep(100)
  }
  await desktop.open('http://127.0.0.1:8000/index.html')

  // the page shows: a large green area
  let img, green
  for (let i = 0; i < 120; i++) {
    img = decodePng(Buffer.from(await desktop.screenshot()))
    green = findColour(img, GREEN)
    if (green.n > (W * H) / 4) break
    await sleep(500)
  }
  assert.ok(green.n > (W * H) / 4, `the page did not show (${green.n} green pixels)`)
  const windows = (await desktop.getApplicationWindows('chromium')).filter(Boolean)
  assert.ok(windows.length >= 1, 'no Chromium window listed')
  const titles = await Promise.all(windows.map((w) => desktop.getWindowTitle(w)))
  assert.ok(titles.some((t) => t.includes('sbxd desktop test')), JSON.stringify(titles))
  assert.match(await desktop.getCurrentWindowId(), /^\d+$/)

  // a click in the middle of the button (xdotool) turns it blue
  const cx = Math.round((green.x0 + green.x1) / 2)
  const cy = Math.round((green.y0 + green.y1) / 2)
  await desktop.leftClick(cx, cy)
  let blue
  for (let i = 0; i < 40; i++) {
    img = decodePng(Buffer.from(await desktop.screenshot()))
    blue = findColour(img, BLUE)
    if (blue.n > green.n * 0.8) break
    await sleep(250)
  }
  assert.ok(blue.n > green.n * 0.8, `after the click: ${blue.n} blue pixels, ${green.n} green before`)
  assert.ok(findColour(img, GREEN).n < green.n * 0.05, 'the page is still green')
  assert.ok(blue.x0 <= cx && cx <= blue.x1 && blue.y0 <= cy && cy <= blue.y1)

  // write() and press() type into the field the click focused
  await desktop.write('hello desktop')
  await desktop.press('enter')
  let title = ''
  for (let i = 0; i < 40 && !title.includes('typed: hello desktop'); i++) {
    title = await desktop.getWindowTitle(await desktop.getCurrentWindowId())
    if (!title.includes('typed: hello desktop')) await sleep(250)
  }
  assert.match(title, /typed: hello desktop/)
  await server.kill()
})

test("a window started by a command outlives the command's timeout, as on E2B (open() relies on it)", { timeout: 60_000 }, async () => {
  // open() runs xdg-open with the SDK's default timeout of 60 s; envd's
  // timeout kills the command's own process, not the application it
  // started.  The same, with a short timeout and the text editor started
  // by the shell that the timeout kills:
  await desktop.files.write('/tmp/note.txt', 'a note\n')
  const h = await desktop.commands.run('mousepad /tmp/note.txt; true', { background: true, timeoutMs: 3000 })
  let windows = []
  for (let i = 0; i < 60 && windows.length === 0; i++) {
    windows = (await desktop.getApplicationWindows('mousepad').catch(() => [])).filter(Boolean)
    if (windows.length === 0) await sleep(250)
  }
  assert.ok(windows.length >= 1, 'no mousepad window')
  await assert.rejects(h.wait())
  await sleep(500)
  const after = (await desktop.getApplicationWindows('mousepad')).filter(Boolean)
  assert.deepEqual(after, windows, 'the window went with the timed-out command')
  assert.match(await desktop.getWindowTitle(after[0]), /note\.txt/)
  await desktop.commands.run('pkill -x mousepad || true')
})

/** RFB (VNC) over a WebSocket: connect, read the server's version and
 * security types; the rest is up to `then`. */
async function rfb(url, then) {
  const ws = new WebSocket(url, ['binary'])
  ws.binaryType = 'arraybuffer'
  let buf = Buffer.alloc(0)
  const waiters = []
  const wake = () => waiters.splice(0).forEach((w) => w())
  ws.onmessage = (ev) => {
    buf = Buffer.concat([buf, Buffer.from(ev.data)])
    wake()
  }
  let closed = false
  ws.onclose = () => {
    closed = true
    wake()
  }
  const opened = new Promise((resolve, reject) => {
    ws.onopen = resolve
    ws.onerror = (e) => reject(new Error(`WebSocket to ${url}: ${e.message || 'error'}`))
  })
  const read = async (n) => {
    const deadline = Date.now() + 15_000
    while (buf.length < n) {
      if (closed) throw new Error(`connection closed with ${buf.length} of ${n} bytes`)
      if (Date.now() > deadline) throw new Error(`timed out reading ${n} bytes`)
      await Promise.race([new Promise((r) => waiters.push(r)), sleep(500)])
    }
    const out = buf.subarray(0, n)
    buf = buf.subarray(n)
    return out
  }
  const send = (bytes) => ws.send(Buffer.from(bytes))
  try {
    await opened
    const version = (await read(12)).toString('latin1')
    assert.match(version, /^RFB 003\.00\d\n$/)
    send(Buffer.from('RFB 003.008\n', 'latin1'))
    const n = (await read(1))[0]
    assert.ok(n > 0, 'the server refused the connection')
    const types = [...(await read(n))]
    return await then({ types, read, send })
  } finally {
    ws.close()
  }
}

async function waitStreamStopped() {
  for (let i = 0; i < 50; i++) {
    const r = await desktop.commands.run('pgrep -x x11vnc || netstat -tln | grep ":6080 " || true')
    if (r.stdout.trim() === '') return
    await sleep(100)
  }
  assert.fail('the stream did not stop')
}

test('stream.start(): the noVNC page and a framebuffer update over its WebSocket, through PORT-ID.DOMAIN', { timeout: 120_000 }, async () => {
  await desktop.stream.start()
  try {
    const url = new URL(desktop.stream.getUrl())
    assert.equal(url.host, desktop.getHost(6080))
    assert.equal(url.searchParams.get('autoconnect'), 'true')
    const page = await fetch(url)
    assert.equal(page.status, 200)
    assert.match(await page.text(), /noVNC/)
    await rfb(`wss://${url.host}/websockify`, async ({ types, read, send }) => {
      assert.ok(types.includes(1), `no "None" security type without auth: ${types}`)
      send([1])
      assert.equal((await read(4)).readUInt32BE(0), 0, 'security result')
      send([1]) // ClientInit: shared
      const init = await read(24)
      assert.equal(init.readUInt16BE(0), W)
      assert.equal(init.readUInt16BE(2), H)
      await read(init.readUInt32BE(20)) // the desktop's name
      // FramebufferUpdateRequest of the whole screen, not incremental
      const req = Buffer.alloc(10)
      req[0] = 3
      req.writeUInt16BE(W, 6)
      req.writeUInt16BE(H, 8)
      send(req)
      const head = await read(4)
      assert.equal(head[0], 0, `message type ${head[0]}, not FramebufferUpdate`)
      assert.ok(head.readUInt16BE(2) >= 1, 'an update of no rectangles')
      const rect = await read(12)
      assert.ok(rect.readUInt16BE(4) > 0 && rect.readUInt16BE(6) > 0, 'an empty rectangle')
    })
  } finally {
    await desktop.stream.stop()
  }
})

test('stream.start({ requireAuth: true }): the key is in the URL; without it the server refuses', { timeout: 120_000 }, async () => {
  await waitStreamStopped()
  await desktop.stream.start({ requireAuth: true })
  try {
    const key = desktop.stream.getAuthKey()
    assert.match(key, /^[A-Za-z0-9]{16}$/)
    const url = new URL(desktop.stream.getUrl({ authKey: key }))
    assert.equal(url.searchParams.get('password'), key)
    await rfb(`wss://${url.host}/websockify`, async ({ types, read, send }) => {
      // VNC authentication only: no way in without the password
      assert.deepEqual(types, [2])
      send([2])
      const challenge = await read(16)
      assert.equal(challenge.length, 16)
      send(Buffer.alloc(16)) // not the password's answer
      assert.notEqual((await read(4)).readUInt32BE(0), 0, 'a wrong answer was accepted')
    })
  } finally {
    await desktop.stream.stop()
  }
})
