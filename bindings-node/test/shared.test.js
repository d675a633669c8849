'use strict'
// Shared mode (`shared: true`): holders of the app hold the lock at once (calls in this
// process, other processes), the Supervisor's `lockfile` (uid 65534) and the reboot's
// `flock -nx` see it held while any is inside, the last one out removes it. And nesting:
// a withLock() taking the same lock again fails at once with `already-held` instead of
// waiting for itself; other calls still wait.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const h = require('./helpers.js')
const ul = require('../index.js')

const TIMEOUT = { timeout: 20000 }

test('two shared holds in one process and a lockctl run --shared hold at once; the last one out removes the lock', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const opts = { paths: [d.lock], shared: true, timeout: 0 }
  const a = await ul.lock(opts)
  const b = await ul.lock(opts) // joins: no wait, no `held`
  assert.equal(h.supervisorProbe(d.lock), 73, 'the Supervisor sees it held')
  assert.equal(h.rebootProbe(d.lock), 1, 'the reboot probe sees a flock')
  // Another process of the app joins too, and an exclusive one does not get in.
  assert.equal(h.lockctl(['run', '--shared', '--no-wait', '--path', d.lock, '--', 'true']).status, 0)
  const excl = h.lockctl(['run', '--no-wait', '--path', d.lock, '--', 'true'])
  assert.equal(excl.status, 73, excl.stderr)
  a.release()
  assert.ok(fs.existsSync(d.lock), 'b is still inside')
  assert.equal(h.supervisorProbe(d.lock), 73)
  b.release()
  assert.equal(fs.existsSync(d.lock), false, 'the last one out removed it')
  assert.deepEqual(h.listing(d.svc), [])
})

test('a shared hold waits for an exclusive holder and says why', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const held = await ul.lock({ paths: [d.lock] })
  await assert.rejects(ul.lock({ paths: [d.lock], shared: true, timeout: 0 }), (e) => {
    assert.equal(e.code, 'held')
    assert.match(e.message, /held exclusively, so a shared hold waits/)
    return true
  })
  held.release()
})

test('a nested exclusive withLock fails at once with already-held; separate calls wait for each other', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const paths = [d.lock]
  // No timeout: a regression (waiting for itself) would hang this test until its timeout.
  await ul.withLock(async () => {
    await assert.rejects(
      ul.withLock(() => 'inner', { paths }),
      (e) => {
        assert.ok(e instanceof ul.UpdateLockError)
        assert.equal(e.code, 'already-held')
        assert.equal(e.errno, ul.codes['already-held'])
        assert.equal(e.errno, 13)
        assert.match(e.message, /already held by this process/)
        return true
      },
    )
    assert.throws(() => ul.lockSync({ paths }), (e) => e.code === 'already-held')
  }, { paths })
  // lockSync() blocks the thread: a second one of a path it holds fails at once too.
  const sync = ul.lockSync({ paths })
  assert.throws(() => ul.lockSync({ paths }), (e) => e.code === 'already-held')
  sync.release()
  assert.equal(fs.existsSync(d.lock), false)
  const inner = await ul.withLock(
    () => ul.withLock(() => 'joined', { paths, shared: true }),
    { paths, shared: true },
  )
  assert.equal(inner, 'joined')
  assert.equal(fs.existsSync(d.lock), false)
  // Two separate withLock calls (two requests of a server) are two holders: the second
  // sees the lock held (not already-held) and, waiting, gets in once the first is out.
  let releaseFirst
  const first = ul.withLock(
    () =>
      new Promise((resolve) => {
        releaseFirst = resolve
      }),
    { paths },
  )
  while (releaseFirst === undefined) await new Promise((r) => setImmediate(r))
  await assert.rejects(ul.withLock(() => 'no', { paths, timeout: 0 }), (e) => e.code === 'held')
  const waiting = ul.withLock(() => 'second in', { paths })
  releaseFirst()
  await first
  assert.equal(await waiting, 'second in')
  assert.equal(fs.existsSync(d.lock), false)
})

test('onWait says who holds the lock when the wait starts (lock() and withLock())', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  const seen = []
  await assert.rejects(ul.lock({ paths: [d.lock], timeout: 300, onWait: (info) => seen.push(info) }), (e) => e.code === 'timeout')
  // The call was queued on the event loop when the wait started: let it run.
  while (seen.length === 0) await new Promise((r) => setImmediate(r))
  assert.equal(seen.length, 1, 'once when the wait starts (the next would come after 10 s)')
  assert.equal(seen[0].path, d.lock)
  assert.equal(seen[0].holder.state, 'held-by-app')
  assert.equal(seen[0].holder.record.program, 'lockctl acquire')
  assert.ok(seen[0].waitedMs < 300)
  assert.match(seen[0].message, /^waiting for .*updates\.lock: the update lock is held by another app/)
  // A function that throws becomes a warning; the wait goes on to its timeout.
  const warned = []
  const onWarning = (w) => warned.push(String(w.message))
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  await assert.rejects(
    ul.withLock(() => 'no', {
      paths: [d.lock],
      timeout: 200,
      onWait: () => {
        throw new Error('hook failed')
      },
    }),
    (e) => e.code === 'timeout',
  )
  while (!warned.some((w) => w.includes('hook failed'))) await new Promise((r) => setImmediate(r))
  await assert.rejects(ul.lock({ paths: [d.lock], onWait: 'print' }), /onWait must be a function/)
})
