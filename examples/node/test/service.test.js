'use strict'
// Runs the example service for real against a temporary service directory (mode 1777, as the
// Supervisor makes it) and checks its critical section the way the device does: procmail's
// `lockfile -r 0` as uid 65534 (exit 73 = held) and `flock -nx` on updates.lock. The
// "hardware" is a FIFO, so the apply stays inside its critical section until the test reads
// it: no sleeps.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync, execFileSync } = require('node:child_process')
const readline = require('node:readline')

const LOCKCTL = process.env.LOCKCTL || path.resolve(__dirname, '../../../target/debug/lockctl')

function setup(t) {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'node-example-'))
  fs.chmodSync(base, 0o755)
  const svc = path.join(base, 'svc')
  fs.mkdirSync(svc)
  fs.chmodSync(svc, 0o1777)
  const device = path.join(base, 'device')
  execFileSync('mkfifo', [device])
  t.after(() => {
    // End a `lockctl acquire` holder a test left behind (detached) before its directory goes.
    for (const p of ['updates.lock', 'resin-updates.lock']) {
      spawnSync(LOCKCTL, ['release', '--path', path.join(svc, p)], { stdio: 'ignore' })
    }
    fs.rmSync(base, { recursive: true, force: true })
  })
  return { base, svc, device, lock: path.join(svc, 'updates.lock'), legacy: path.join(svc, 'resin-updates.lock') }
}

// The service, with its lock paths (both names) in the temporary service directory: the real
// /tmp/balena and /tmp/resin of this machine are never touched.
async function start(d, env = {}) {
  const proc = spawn(process.execPath, [path.join(__dirname, '..', 'service.js')], {
    env: {
      ...process.env,
      PORT: '0',
      DEVICE_PATH: d.device,
      BALENA_APP_LOCK_PATH: d.lock,
      UPDATE_LOCK_PATHS: `${d.lock} ${d.legacy}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  proc.stderr.on('data', (c) => (stderr += c))
  const lines = readline.createInterface({ input: proc.stdout })
  const port = await new Promise((resolve, reject) => {
    lines.once('line', (l) => resolve(Number(/^listening (\d+)$/.exec(l)[1])))
    proc.once('exit', (c) => reject(new Error(`service exited ${c}: ${stderr}`)))
  })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  return { proc, port, exited, stderr: () => stderr, url: (p) => `http://127.0.0.1:${port}${p}` }
}

const supervisorProbe = (p) => {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'lockfile', '-r', '0', p])
  if (r.status === 0) fs.rmSync(p, { force: true })
  return r.status
}
const rebootProbe = (p) => spawnSync('flock', ['-nx', p, '-c', 'true']).status

test('an apply runs inside the update lock: both readers are held off until it is done', async (t) => {
  const d = setup(t)
  const s = await start(d)
  t.after(() => s.proc.kill('SIGKILL'))
  const pending = fetch(s.url('/apply'), { method: 'POST', body: 'gain=7\n' })
  // The service now blocks writing to the "hardware" (the FIFO) inside its critical section.
  // Wait until the lock file exists (it appears atomically, flocked): poll a real condition.
  while (!fs.existsSync(d.lock)) await new Promise((r) => setTimeout(r, 2))
  assert.equal(supervisorProbe(d.lock), 73)
  assert.equal(supervisorProbe(d.legacy), 73)
  assert.notEqual(rebootProbe(d.lock), 0)
  const st = await (await fetch(s.url('/status'))).json()
  assert.equal(st.locks[0].state, 'held-by-app')
  assert.equal(st.locks[0].holder.program, 'service.js')
  // Let the hardware take the configuration.
  const got = fs.readFileSync(d.device, 'utf8')
  assert.equal(got, 'gain=7\n')
  const res = await pending
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { ok: true, bytes: 7 })
  // Nothing left but the dated note the service made when it saw the Supervisor's attempts.
  assert.deepEqual(fs.readdirSync(d.svc).filter((n) => n !== 'update-waiting'), [])
  assert.equal(supervisorProbe(d.lock), 0)
  s.proc.kill('SIGTERM')
  assert.deepEqual(await s.exited, { code: 0, signal: null })
})

test('while an update holds the lock, an apply waits; on timeout it answers 503 timeout', async (t) => {
  const d = setup(t)
  const s = await start(d, { LOCK_TIMEOUT_MS: '200' })
  t.after(() => s.proc.kill('SIGKILL'))
  // The Supervisor takes the lock (as it does during an update).
  execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'lockfile', '-r', '0', d.lock])
  const res = await fetch(s.url('/apply'), { method: 'POST', body: 'x' })
  assert.equal(res.status, 503)
  const body = await res.json()
  assert.equal(body.error, 'timeout')
  assert.match(body.message, /Supervisor/)
  assert.equal(fs.statSync(d.lock).uid, 65534, 'the Supervisor lock is untouched')
  s.proc.kill('SIGTERM')
  assert.deepEqual(await s.exited, { code: 0, signal: null })
})

test('SIGTERM while an apply waits for the lock: the wait is cancelled, nothing taken, exit 0', async (t) => {
  const d = setup(t)
  const s = await start(d)
  t.after(() => s.proc.kill('SIGKILL'))
  const held = spawnSync(LOCKCTL, ['acquire', '--no-wait', '--path', d.lock])
  assert.equal(held.status, 0, String(held.stderr))
  t.after(() => spawnSync(LOCKCTL, ['release', '--path', d.lock]))
  const pending = fetch(s.url('/apply'), { method: 'POST', body: 'x' })
  // Wait until the service's apply is waiting on the lock (its inotify descriptor is open).
  const waiting = () =>
    fs.readdirSync(`/proc/${s.proc.pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${s.proc.pid}/fd/${fd}`) === 'anon_inode:inotify'
      } catch {
        return false
      }
    })
  while (!waiting()) await new Promise((r) => setTimeout(r, 2))
  s.proc.kill('SIGTERM')
  const res = await pending
  assert.equal(res.status, 503)
  assert.equal((await res.json()).error, 'cancelled')
  assert.deepEqual(await s.exited, { code: 0, signal: null })
  const st = JSON.parse(spawnSync(LOCKCTL, ['status', '--json', '--path', d.lock], { encoding: 'utf8' }).stdout)
  assert.equal(st.locks[0].holder.program, 'lockctl acquire')
})
