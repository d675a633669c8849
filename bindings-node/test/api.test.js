'use strict'
// The Supervisor API client and the update gate from Node.js: against a real HTTP server on
// loopback answering as the Supervisor does, against addresses nobody answers on, and end to
// end under `lockctl rehearse`.
const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const net = require('node:net')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFile } = require('node:child_process')
const ul = require('..')

const KEY = 'node-test-key-0123456789'

function fakeSupervisor(state) {
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      state.last = [req.url, body]
      const send = (code, obj) => {
        res.writeHead(code, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify(obj))
      }
      if (req.headers.authorization !== `Bearer ${KEY}`) return send(401, { status: 'failed', message: 'Unauthorized' })
      if (req.url === '/v1/device') {
        return send(200, { status: 'Idle', update_pending: state.pending, update_downloaded: state.downloaded, update_failed: false, download_progress: null, commit: 'c0ffee' })
      }
      if (req.url === '/v1/reboot' && state.locked && !JSON.parse(body || '{}').force) {
        return send(423, { status: 'failed', message: 'Updates are locked' })
      }
      send(202, 'OK')
    })
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

async function withSupervisor(fn) {
  const state = { pending: false, downloaded: false, locked: false }
  const server = await fakeSupervisor(state)
  try {
    const api = new ul.SupervisorApi({ address: `http://127.0.0.1:${server.address().port}`, key: KEY, timeout: 5000 })
    await fn(api, state)
  } finally {
    server.close()
  }
}

test('device, update with force, a locked reboot is code held', () =>
  withSupervisor(async (api, state) => {
    const d = await api.device()
    assert.equal(d.commit, 'c0ffee')
    assert.equal(d.update_pending, false)
    await api.update({ force: true })
    assert.deepEqual(state.last, ['/v1/update', '{"force":true}'])
    state.locked = true
    await assert.rejects(api.reboot(), (e) => {
      assert.ok(e instanceof ul.UpdateLockError)
      assert.equal(e.code, 'held')
      assert.match(e.message, /HTTP 423/)
      return true
    })
    await api.reboot({ force: true })
    assert.ok(!require('node:util').inspect(api).includes(KEY))
    assert.ok(!JSON.stringify(api).includes(KEY))
  }))

test('a wrong key: code api, reason unauthorized, no key in the message', () =>
  withSupervisor(async (api) => {
    const wrong = new ul.SupervisorApi({ address: api.address, key: 'wrong-key-789' })
    await assert.rejects(wrong.device(), (e) => {
      assert.equal(e.code, 'api')
      assert.equal(e.errno, 11)
      assert.equal(e.reason, 'unauthorized')
      assert.ok(!e.message.includes('wrong-key-789') && !e.message.includes(KEY), e.message)
      return true
    })
  }))

test('nobody answering times out; not configured says which label', async () => {
  const silent = net.createServer(() => {}) // accepts, never answers
  await new Promise((r) => silent.listen(0, '127.0.0.1', r))
  try {
    const api = new ul.SupervisorApi({ address: `http://127.0.0.1:${silent.address().port}`, key: KEY, timeout: 300 })
    await assert.rejects(api.ping(), (e) => e.code === 'api' && e.reason === 'timeout' && /within 0.3 s/.test(e.message))
  } finally {
    silent.close()
  }
  const saved = [process.env.BALENA_SUPERVISOR_ADDRESS, process.env.RESIN_SUPERVISOR_ADDRESS]
  delete process.env.BALENA_SUPERVISOR_ADDRESS
  delete process.env.RESIN_SUPERVISOR_ADDRESS
  try {
    assert.throws(() => new ul.SupervisorApi(), (e) => e.code === 'api' && e.reason === 'not-configured' && /io\.balena\.features\.supervisor-api/.test(e.message))
  } finally {
    if (saved[0] !== undefined) process.env.BALENA_SUPERVISOR_ADDRESS = saved[0]
    if (saved[1] !== undefined) process.env.RESIN_SUPERVISOR_ADDRESS = saved[1]
  }
  assert.throws(() => new ul.SupervisorApi({ address: 'http://127.0.0.1:1', key: KEY, timeout: 0 }), RangeError)
})

test('the gate releases only at a safe point with a downloaded update', () =>
  withSupervisor(async (api, state) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-gate-'))
    const lockPath = path.join(dir, 'updates.lock')
    try {
      const gate = await ul.UpdateGate.acquire({ api, paths: [lockPath] })
      assert.ok(gate.held && fs.existsSync(lockPath))
      assert.equal(await gate.safePoint(), 'no-update')
      state.pending = true
      assert.equal(await gate.safePoint(), 'no-update')
      state.downloaded = true
      assert.equal(await gate.updateWaiting(), true)
      assert.equal(await gate.safePoint(), 'released')
      assert.ok(!gate.held && !fs.existsSync(lockPath))
      gate.release()
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }))

test('end to end under lockctl rehearse: let in at the first safe point after the download', async () => {
  const lockctl = process.env.UPDATE_LOCK_LOCKCTL || path.join(__dirname, '..', '..', 'target', 'debug', 'lockctl')
  const svc = fs.mkdtempSync('/tmp/rehearse-node-gate.')
  fs.chmodSync(svc, 0o1777)
  const app = path.join(svc, 'app.js')
  fs.writeFileSync(
    app,
    `const ul = require(${JSON.stringify(path.join(__dirname, '..'))})
;(async () => {
  const gate = await ul.UpdateGate.acquire({ pollInterval: 50 })
  for (;;) {
    await new Promise((r) => setTimeout(r, 50)) // one unit of work
    const outcome = await gate.safePoint()
    if (outcome !== 'no-update') { console.log(outcome); break }
  }
  setInterval(() => {}, 1000)
})()
process.on('SIGTERM', () => process.exit(0))
`,
  )
  try {
    const out = await new Promise((resolve, reject) =>
      execFile(
        lockctl,
        ['rehearse', '--json', '-q', '--service-dir', svc, '--download', '0.5s', '--update-after', '0.3s', '--observe', '0.2s',
          '--stop-grace', '2s', '--old', `exec node ${app}`, '--new', "trap 'exit 0' TERM; sleep 100 & wait"],
        { timeout: 120000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}\n${stdout}`)) : resolve(stdout)),
      ),
    )
    const r = JSON.parse(out)
    const kinds = r.events.map((e) => e.kind)
    assert.ok(kinds.indexOf('download-done') < kinds.indexOf('lock-taken'))
    assert.ok(r.summary.lock_attempts <= 2, JSON.stringify(r.summary))
    assert.ok(r.summary.blocked_by_lock_ms < 1000)
    assert.equal(r.summary.old_exit, 'exit 0')
  } finally {
    fs.rmSync(svc, { recursive: true, force: true })
  }
})

test('a gate still held when the process exits is released (the file is gone, as for a lock)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-gate-exit-'))
  const lockPath = path.join(dir, 'updates.lock')
  const state = { pending: false, downloaded: false, locked: false }
  const server = await fakeSupervisor(state)
  try {
    const script = `const ul = require(${JSON.stringify(path.join(__dirname, '..'))})
;(async () => {
  const api = new ul.SupervisorApi({ address: 'http://127.0.0.1:${server.address().port}', key: '${KEY}' })
  const gate = await ul.UpdateGate.acquire({ api, paths: [${JSON.stringify(lockPath)}] })
  console.log(gate.held ? 'held' : 'not held')
  process.exit(0)
})()`
    const out = await new Promise((resolve, reject) =>
      execFile(process.execPath, ['-e', script], { timeout: 30000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    )
    assert.equal(out.trim(), 'held')
    assert.ok(!fs.existsSync(lockPath), 'released at exit')
  } finally {
    server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
