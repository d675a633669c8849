'use strict'
// Shared helpers of the Node.js binding's tests: temporary service directories made the way
// the Supervisor makes them, the device's two real readers (procmail `lockfile` as uid 65534,
// the reboot script's `flock -nx`), `lockctl`, and child Node processes that report progress
// on stdout (tests wait for those lines, never for fixed sleeps).

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const readline = require('node:readline')

const PKG = path.resolve(__dirname, '..')
const ROOT = path.resolve(PKG, '..')
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target')
const LOCKCTL = process.env.LOCKCTL || path.join(TARGET, 'debug', 'lockctl')
const CHILD = path.join(__dirname, 'fixtures', 'child.js')

// Tests probe with the Supervisor's real lockfile; each probe of a held lock is an attempt
// that later acquisitions (here, in child processes and in lockctl) would yield to. The yield
// has its own tests (update_waiting.test.js), which turn it back on.
process.env.UPDATE_LOCK_YIELD_TO_UPDATES = '0'

/** A service directory (mode 1777, like the Supervisor's) inside a fresh 0755 temp dir. */
function serviceDir(t) {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'update-lock-node-'))
  fs.chmodSync(base, 0o755)
  const svc = path.join(base, 'svc')
  fs.mkdirSync(svc)
  fs.chmodSync(svc, 0o1777)
  if (t) {
    t.after(() => {
      // A `lockctl acquire` holder a test left behind is a detached process: end it before
      // its directory goes (release is a no-op when nothing is held).
      for (const p of ['updates.lock', 'resin-updates.lock']) {
        spawnSync(LOCKCTL, ['release', '--path', path.join(svc, p)], { stdio: 'ignore' })
      }
      fs.rmSync(base, { recursive: true, force: true })
    })
  }
  return {
    base,
    svc,
    lock: path.join(svc, 'updates.lock'),
    legacy: path.join(svc, 'resin-updates.lock'),
    handover: path.join(svc, 'handover-complete'),
    get both() {
      return [this.lock, this.legacy]
    },
  }
}

/** The Supervisor's check: `lockfile -r 0 PATH` as uid 65534. Returns its exit status; when
 * it got the lock (0) its file is removed again, as the Supervisor would on release. */
function supervisorProbe(p) {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'lockfile', '-r', '0', p], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  if (r.error) throw r.error
  if (r.status === 0) fs.rmSync(p, { force: true })
  return r.status
}

/** Have the Supervisor take the lock for real (file left in place, owned by 65534). */
function supervisorTake(p) {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'lockfile', '-r', '0', p])
  if (r.status !== 0) throw new Error(`lockfile -r 0 ${p} exited ${r.status}: ${r.stderr}`)
}

/** The host OS reboot's check: `flock -nx FILE -c true` on a fresh descriptor. Exit status
 * 0 = it could lock it (nothing holds off the reboot), 1 = held. */
function rebootProbe(p) {
  const r = spawnSync('flock', ['-nx', p, '-c', 'true'], { stdio: 'ignore' })
  if (r.error) throw r.error
  return r.status
}

function lockctl(args, opts = {}) {
  const r = spawnSync(LOCKCTL, args, { encoding: 'utf8', ...opts })
  if (r.error) throw r.error
  return r
}

/** A child process whose stdout lines can be awaited one by one. */
class Kid {
  constructor(cmd, args, opts = {}) {
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts })
    this.lines = []
    this.waiters = []
    this.stderr = ''
    this.proc.stderr.on('data', (d) => (this.stderr += d))
    readline.createInterface({ input: this.proc.stdout }).on('line', (l) => {
      const w = this.waiters.shift()
      if (w) w.resolve(l)
      else this.lines.push(l)
    })
    this.exited = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        for (const w of this.waiters.splice(0)) {
          w.reject(new Error(`child exited (code ${code}, signal ${signal}) before printing a line; stderr:\n${this.stderr}`))
        }
        resolve({ code, signal })
      })
    })
  }
  get pid() {
    return this.proc.pid
  }
  /** The next stdout line. */
  line() {
    if (this.lines.length) return Promise.resolve(this.lines.shift())
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
      return Promise.reject(new Error(`child already exited; stderr:\n${this.stderr}`))
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }))
  }
  /** Wait for a line starting with `prefix` (earlier lines are returned in `skipped`). */
  async expect(prefix) {
    for (;;) {
      const l = await this.line()
      if (l.startsWith(prefix)) return l
    }
  }
  send(text) {
    this.proc.stdin.write(`${text}\n`)
  }
  kill(signal) {
    this.proc.kill(signal)
  }
}

/** A Node child running test/fixtures/child.js with `args`. */
function nodeKid(args, opts = {}) {
  return new Kid(process.execPath, [CHILD, ...args], opts)
}

/** `lockctl acquire` (a detached holder); returns when the lock is held. */
function lockctlAcquire(paths) {
  const r = lockctl(['acquire', '--no-wait', ...paths.flatMap((p) => ['--path', p])])
  if (r.status !== 0) throw new Error(`lockctl acquire failed (${r.status}): ${r.stderr}`)
}

function lockctlRelease(paths) {
  const r = lockctl(['release', ...paths.flatMap((p) => ['--path', p])])
  if (r.status !== 0) throw new Error(`lockctl release failed (${r.status}): ${r.stderr}`)
}

function lockctlStatus(paths, handoverPaths = []) {
  const r = lockctl([
    'status',
    '--json',
    ...paths.flatMap((p) => ['--path', p]),
    ...handoverPaths.flatMap((p) => ['--handover-path', p]),
  ])
  // 0 free, 73 held (as the Supervisor's lockfile), 74 could not look.
  if (![0, 73, 74].includes(r.status)) throw new Error(`lockctl status failed (${r.status}): ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** Names in `dir`, sorted, but the `update-waiting` note a holder leaves when it sees the
 * Supervisor's attempt. */
function listing(dir) {
  return fs
    .readdirSync(dir)
    .filter((n) => n !== 'update-waiting')
    .sort()
}

/** Whether process `pid` has an inotify descriptor open (it waits for a lock then). */
function kidIsWaiting(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:inotify'
      } catch {
        return false
      }
    })
  } catch {
    return false
  }
}

/** Poll `fn` (a real condition, e.g. a /proc entry) until it returns something truthy. */
async function waitFor(fn) {
  for (let i = 0; i < 2000; i++) {
    const v = fn()
    if (v) return v
    await new Promise((r) => setTimeout(r, 5))
  }
  throw new Error('condition never came true')
}


module.exports = {
  kidIsWaiting,
  waitFor,
  PKG,
  ROOT,
  LOCKCTL,
  CHILD,
  serviceDir,
  supervisorProbe,
  supervisorTake,
  rebootProbe,
  lockctl,
  lockctlAcquire,
  lockctlRelease,
  lockctlStatus,
  Kid,
  nodeKid,
  listing,
}
