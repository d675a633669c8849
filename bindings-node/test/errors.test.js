'use strict'
// Every error code of the core, as the Node.js binding exposes it: an Error (instanceof
// UpdateLockError) whose `code` is the core's stable string, `errno` its number, `message`
// the core's message, `path`, and for held/timeout the holder's details. Bad input also
// checks that nothing was created or deleted.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const ul = require('update-lock')
const h = require('./helpers')

function check(e, code, fragments = []) {
  assert.ok(e instanceof ul.UpdateLockError, `not an UpdateLockError: ${e?.stack}`)
  assert.ok(e instanceof Error)
  assert.equal(e.name, 'UpdateLockError')
  assert.equal(e.code, code)
  assert.equal(e.errno, ul.codes[code])
  for (const f of fragments) assert.ok(e.message.includes(f), `message lacks ${JSON.stringify(f)}: ${e.message}`)
  return true
}

/** The keys of the core's holder object (`error.holder`), in order. */
const HOLDER_KEYS = ['state', 'description', 'record', 'owner_uid', 'flock_held', 'foreign_kind', 'symlink_target']

test('codes: the core table, numbers 1..13', () => {
  assert.deepEqual(ul.codes, {
    held: 1,
    timeout: 2,
    lost: 3,
    permission: 4,
    'supervisor-uid': 5,
    'invalid-path': 6,
    io: 7,
    cancelled: 8,
    'not-held': 9,
    handover: 10,
    api: 11,
    unknown: 12,
    'already-held': 13,
  })
  assert.ok(Object.isFrozen(ul.codes))
})

test('held: a foreign file (touch) is reported with its kind and never deleted', async (t) => {
  const d = h.serviceDir(t)
  fs.writeFileSync(d.legacy, '')
  const before = fs.statSync(d.legacy).ino
  for (const attempt of [() => ul.lockSync({ paths: d.both, timeout: 0 }), () => ul.lock({ paths: d.both, timeout: 0 })]) {
    let e
    try {
      await attempt()
    } catch (x) {
      e = x
    }
    check(e, 'held', [d.legacy, 'empty file', 'rm '])
    assert.equal(e.path, d.legacy)
    // The core's canonical holder object, keys in its order.
    assert.deepEqual(e.holder, {
      state: 'foreign',
      description: e.holder.description,
      record: null,
      owner_uid: 0,
      flock_held: false,
      foreign_kind: 'empty-file',
      symlink_target: null,
    })
    assert.deepEqual(Object.keys(e.holder), HOLDER_KEYS)
    assert.match(e.holder.description, /empty file/)
  }
  // Still there, untouched; the first path, taken before the conflict, was undone.
  assert.equal(fs.statSync(d.legacy).ino, before)
  assert.deepEqual(h.listing(d.svc), ['resin-updates.lock'])
})

test('timeout: still held when the time runs out, with the holder', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  const e = await ul.lock({ paths: d.lock, timeout: 100 }).catch((x) => x)
  check(e, 'timeout', ['timed out after', d.lock, 'held by another app'])
  assert.equal(e.path, d.lock)
  assert.ok(e.waitedMs >= 100, `waited ${e.waitedMs} ms`)
  assert.equal(e.holder.state, 'held-by-app')
  assert.equal(e.holder.record.program, 'lockctl acquire')
  assert.equal(e.holder.owner_uid, e.holder.record.uid)
  assert.equal(e.holder.flock_held, true)
  assert.deepEqual(Object.keys(e.holder), HOLDER_KEYS)
  // The record is the status report's holder record, field for field.
  assert.deepEqual(e.holder.record, ul.status({ paths: d.lock }).locks[0].holder)
  const e2 = (() => {
    try {
      ul.lockSync({ paths: d.lock, timeout: 50 })
    } catch (x) {
      return x
    }
  })()
  check(e2, 'timeout', [d.lock])
})

test('lost: the lock file was deleted or replaced (lock override); release leaves the new file alone', (t) => {
  const d = h.serviceDir(t)
  const l = ul.lockSync({ paths: d.both })
  fs.rmSync(d.lock)
  fs.writeFileSync(d.lock, 'someone else\n')
  let e
  try {
    l.check()
  } catch (x) {
    e = x
  }
  check(e, 'lost', [d.lock, 'override'])
  assert.deepEqual(e.paths, [d.lock])
  assert.equal(l.held, true)
  try {
    l.release()
    assert.fail('release must report the loss')
  } catch (x) {
    check(x, 'lost', [d.lock])
  }
  assert.equal(l.held, false)
  // The replacement is left alone; the legacy path (still ours) was released.
  assert.deepEqual(h.listing(d.svc), ['updates.lock'])
  assert.equal(fs.readFileSync(d.lock, 'utf8'), 'someone else\n')
})

test('withLock: a lock lost during the critical section is reported after it succeeded', async (t) => {
  const d = h.serviceDir(t)
  await assert.rejects(
    ul.withLock(() => fs.rmSync(d.lock), { paths: d.lock }),
    (e) => check(e, 'lost', [d.lock]),
  )
})

test('not-held: check() after release', (t) => {
  const d = h.serviceDir(t)
  const l = ul.lockSync({ paths: d.lock })
  l.release()
  let e
  try {
    l.check()
  } catch (x) {
    e = x
  }
  check(e, 'not-held', ['already released', d.lock])
  assert.equal(e.path, d.lock)
})

test('invalid-path: bad paths are refused, nothing is created', (t) => {
  const d = h.serviceDir(t)
  const cases = [
    [path.join(d.svc, 'up\0dates.lock'), 'NUL'],
    [path.join(d.svc, 'a'.repeat(300)), '300 bytes'],
    [path.join(d.base, 'missing', 'sub', 'updates.lock'), 'does not exist'],
    [`${d.svc}/`, 'does not name a file'],
    [`${d.svc}/..`, 'does not name a file'],
    ['', 'empty'],
  ]
  for (const [p, fragment] of cases) {
    let e
    try {
      ul.lockSync({ paths: p, timeout: 0 })
    } catch (x) {
      e = x
    }
    check(e, 'invalid-path', [fragment])
  }
  assert.deepEqual(h.listing(d.svc), [])
  assert.deepEqual(h.listing(d.base), ['svc'])
})

test('invalid-path from the async path too', async (t) => {
  const d = h.serviceDir(t)
  await assert.rejects(ul.lock({ paths: path.join(d.base, 'missing', 'sub', 'updates.lock') }), (e) =>
    check(e, 'invalid-path', ['does not exist']),
  )
  assert.deepEqual(h.listing(d.base), ['svc'])
})

test('bad option types are TypeErrors (Node conventions), nothing is created', async (t) => {
  const d = h.serviceDir(t)
  const bad = [
    [{ paths: d.lock, timeout: 'soon' }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ paths: d.lock, timeout: -1 }, RangeError, 'ERR_OUT_OF_RANGE'],
    [{ paths: d.lock, timeout: NaN }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ paths: [d.lock, 7] }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ paths: d.lock, legacy: 'no' }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ paths: d.lock, reclaimStale: 1 }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ paths: d.lock, timeOut: 5 }, TypeError, 'ERR_INVALID_ARG_VALUE'],
    [{ paths: d.lock, signal: {} }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    ['updates.lock', TypeError, 'ERR_INVALID_ARG_TYPE'],
  ]
  for (const [opts, cls, code] of bad) {
    assert.throws(() => ul.lockSync(opts), (e) => e instanceof cls && e.code === code)
    await assert.rejects(ul.lock(opts), (e) => e instanceof cls && e.code === code)
  }
  await assert.rejects(ul.withLock('not a function', { paths: d.lock }), TypeError)
  assert.throws(() => ul.lockSync({ paths: d.lock, signal: AbortSignal.abort() }), TypeError)
  assert.throws(() => ul.status({ path: d.lock }), TypeError)
  assert.deepEqual(h.listing(d.svc), [])
})

// Runs the fixture as another user (the package directory is world-readable).
function asUser(uid, args) {
  const r = spawnSync(
    'setpriv',
    [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, h.CHILD, ...args],
    { encoding: 'utf8' },
  )
  assert.equal(r.status, 0, r.stderr)
  return r.stdout.trim()
}

function parseError(line) {
  assert.match(line, /^error /)
  return JSON.parse(line.slice(6))
}

test('permission: a directory the user may not write (uid 1000)', (t) => {
  const d = h.serviceDir(t)
  fs.chmodSync(d.svc, 0o755) // root's, not writable by uid 1000
  const e = parseError(asUser(1000, ['try', d.lock]))
  assert.equal(e.code, 'permission')
  assert.equal(e.errno, 4)
  assert.equal(e.name, 'UpdateLockError')
  assert.equal(e.path, d.lock)
  assert.match(e.message, /permission denied/)
  assert.deepEqual(h.listing(d.svc), [])
})

test('supervisor-uid: running as uid 65534 is refused', (t) => {
  const d = h.serviceDir(t)
  const e = parseError(asUser(65534, ['try', d.lock]))
  assert.equal(e.code, 'supervisor-uid')
  assert.equal(e.errno, 5)
  assert.match(e.message, /65534/)
  assert.deepEqual(h.listing(d.svc), [])
})

test('io: out of file descriptors', (t) => {
  const d = h.serviceDir(t)
  const r = spawnSync('prlimit', ['--nofile=128:128', process.execPath, h.CHILD, 'nofile', ...d.both], {
    encoding: 'utf8',
  })
  assert.equal(r.status, 0, r.stderr)
  const lines = r.stdout.trim().split('\n')
  assert.equal(lines.pop(), 'done')
  let failures = 0
  let successes = 0
  for (const l of lines) {
    const m = /^budget (\d+) (ok|error (.*))$/.exec(l)
    assert.ok(m, l)
    if (m[2] === 'ok') {
      successes++
      continue
    }
    failures++
    const e = JSON.parse(m[3])
    assert.equal(e.code, 'io', l)
    assert.equal(e.errno, 7)
    assert.match(e.message, /out of file descriptors/)
  }
  assert.ok(failures >= 1, 'no budget made it fail')
  assert.ok(successes >= 1, 'no budget was enough: the test does not measure anything')
  assert.deepEqual(h.listing(d.svc), [])
})

test('cancelled: an aborted lock() rejects with the signal\'s reason (see abort.test.js)', async (t) => {
  const d = h.serviceDir(t)
  const e = await ul.lock({ paths: d.lock, signal: AbortSignal.abort() }).catch((x) => x)
  assert.ok(e instanceof DOMException && e.name === 'AbortError', String(e))
  assert.deepEqual(h.listing(d.svc), [], 'nothing was taken')
})
