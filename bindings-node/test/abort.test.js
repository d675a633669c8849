'use strict'
// A pending lock() is cancelled by an AbortSignal: it rejects with the signal's reason (an
// AbortError DOMException by default, as fetch() and timers/promises do) and leaves nothing
// taken, also when the abort races the acquisition.
const test = require('node:test')
const assert = require('node:assert/strict')
const ul = require('update-lock')
const h = require('./helpers')
const { kidIsWaiting, waitFor } = h

function assertCancelled(e, _path, reason) {
  if (reason !== undefined) {
    assert.equal(e, reason, 'rejects with the signal\'s reason itself')
  } else {
    assert.ok(e instanceof DOMException, String(e))
    assert.equal(e.name, 'AbortError')
  }
  return true
}

test('abort while waiting: rejects with cancelled, nothing taken', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire(d.both)
  t.after(() => h.lockctl(['release', '--path', d.lock, '--path', d.legacy]))
  const ac = new AbortController()
  const p = ul.lock({ paths: d.both, signal: ac.signal })
  await new Promise((r) => setTimeout(r, 20)) // let it start waiting (not a synchronisation)
  const reason = new Error('shutting down')
  ac.abort(reason)
  await assert.rejects(p, (e) => assertCancelled(e, d.lock, reason))
  h.lockctlRelease(d.both)
  // Nothing of ours appears later either: the lock is free and we can take it at once.
  assert.deepEqual(h.listing(d.svc), [])
  const l = await ul.lock({ paths: d.both, timeout: 0 })
  l.release()
})

test('an already aborted signal rejects without creating anything, even when the lock is free', async (t) => {
  const d = h.serviceDir(t)
  const reason = new Error('too late')
  await assert.rejects(ul.lock({ paths: d.both, signal: AbortSignal.abort(reason) }), (e) =>
    assertCancelled(e, d.lock, reason),
  )
  assert.deepEqual(h.listing(d.svc), [])
  await assert.rejects(ul.withLock(() => assert.fail('must not run'), { paths: d.lock, signal: AbortSignal.abort() }), (e) =>
    assertCancelled(e, d.lock),
  )
  assert.deepEqual(h.listing(d.svc), [])
})

test('AbortSignal.timeout() ends a wait', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  const signal = AbortSignal.timeout(30)
  await assert.rejects(ul.lock({ paths: d.lock, signal }), (e) => assertCancelled(e, d.lock, signal.reason))
})

test('abort racing the acquisition: either we hold it (and release) or nothing is left', async (t) => {
  const d = h.serviceDir(t)
  let won = 0
  let cancelled = 0
  const schedules = [
    (f) => f(),
    (f) => queueMicrotask(f),
    (f) => process.nextTick(f),
    (f) => setImmediate(f),
    (f) => setTimeout(f, 0),
  ]
  for (let i = 0; i < 250; i++) {
    // Another handle holds it, so lock() has to wait on the native side; the release wakes
    // that wait while the abort lands at a different moment each round.
    const first = ul.lockSync({ paths: d.both })
    const ac = new AbortController()
    const p = ul.lock({ paths: d.both, signal: ac.signal })
    first.release()
    schedules[i % schedules.length](() => ac.abort())
    try {
      const l = await p
      won++
      assert.equal(l.held, true)
      l.release()
    } catch (e) {
      assertCancelled(e, d.lock)
      cancelled++
    }
    assert.deepEqual(h.listing(d.svc), [], `round ${i}: something was left`)
  }
  assert.ok(cancelled > 0, 'no abort landed before the acquisition')
  t.diagnostic(`acquired ${won}, cancelled ${cancelled}`)
})

test('an uncontended lock() with a signal that aborts later: held, then released normally', async (t) => {
  const d = h.serviceDir(t)
  const ac = new AbortController()
  const l = await ul.lock({ paths: d.lock, signal: ac.signal })
  ac.abort()
  assert.equal(l.held, true)
  l.release()
  assert.deepEqual(h.listing(d.svc), [])
})

test('abort racing a release by another process: nothing is left', async (t) => {
  const d = h.serviceDir(t)
  for (let i = 0; i < 20; i++) {
    const kid = h.nodeKid(['hold', 'sync', 'stdin', ...d.both])
    assert.match(await kid.line(), /^locked /)
    const ac = new AbortController()
    const p = ul.lock({ paths: d.both, signal: ac.signal })
    kid.send('go')
    assert.equal(await kid.line(), 'released')
    if (i % 2) setImmediate(() => ac.abort())
    else ac.abort()
    try {
      ;(await p).release()
    } catch (e) {
      assertCancelled(e, d.lock)
    }
    await kid.exited
    assert.deepEqual(h.listing(d.svc), [], `round ${i}`)
  }
})

test('abort in another process while it waits: cancelled, nothing taken', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  const kid = h.nodeKid(['wait-abort', d.lock])
  assert.equal(await kid.line(), 'waiting')
  await waitFor(() => kidIsWaiting(kid.pid))
  kid.send('abort')
  const line = await kid.line()
  const e = JSON.parse(line.replace(/^error /, ''))
  assert.equal(e.name, 'AbortError')
  assert.deepEqual(await kid.exited, { code: 0, signal: null })
  assert.equal(ul.status({ paths: d.lock }).locks[0].holder.program, 'lockctl acquire')
})
