'use strict'
// Held locks are released when the process exits: normally, on an uncaught exception or
// unhandled rejection, on process.exit(), and on SIGINT/SIGTERM when the app has no handler
// of its own (the process still dies of the signal). On SIGKILL the lock stays as the core
// documents: stale (flock gone, files left), reported so, and reclaimed by the next locker.
const test = require('node:test')
const assert = require('node:assert/strict')
const ul = require('update-lock')
const h = require('./helpers')

const cases = [
  ['exit', { code: 0, signal: null }],
  ['throw', { code: 1, signal: null }],
  ['reject', { code: 1, signal: null }],
  ['process-exit', { code: 5, signal: null }],
]

for (const mode of ['async', 'sync']) {
  for (const [then, status] of cases) {
    test(`${mode} lock, then ${then}: released at exit`, async (t) => {
      const d = h.serviceDir(t)
      const kid = h.nodeKid(['hold', mode, then, ...d.both])
      assert.match(await kid.line(), /^locked /)
      assert.deepEqual(await kid.exited, status)
      assert.deepEqual(h.listing(d.svc), [], `left behind; stderr: ${kid.stderr}`)
      if (then === 'throw') assert.match(kid.stderr, /boom \(uncaught, on purpose\)/)
    })
  }

  for (const signal of ['SIGINT', 'SIGTERM']) {
    test(`${mode} lock, then ${signal} (no app handler): released, and the process dies of ${signal}`, async (t) => {
      const d = h.serviceDir(t)
      const kid = h.nodeKid(['hold', mode, 'wait', ...d.both])
      assert.match(await kid.line(), /^locked /)
      assert.equal(await kid.line(), 'waiting')
      assert.equal(h.supervisorProbe(d.lock), 73)
      kid.kill(signal)
      assert.deepEqual(await kid.exited, { code: null, signal })
      assert.deepEqual(h.listing(d.svc), [])
    })
  }
}

test('SIGTERM with the app\'s own handler: the app decides; its process.exit() releases', async (t) => {
  const d = h.serviceDir(t)
  const kid = h.nodeKid(['hold', 'async', 'own-handler', ...d.both])
  assert.match(await kid.line(), /^locked /)
  assert.equal(await kid.line(), 'waiting')
  kid.kill('SIGTERM')
  // Our hook did not act first: the app's handler still saw the lock held.
  assert.equal(await kid.line(), 'app handler held=true')
  assert.deepEqual(await kid.exited, { code: 3, signal: null })
  assert.deepEqual(h.listing(d.svc), [])
})

test('no signal listener stays installed once every lock is released', async (t) => {
  const d = h.serviceDir(t)
  const before = [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]
  const a = await ul.lock({ paths: d.lock })
  const b = ul.lockSync({ paths: d.legacy })
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')], [before[0] + 1, before[1] + 1])
  a.release()
  a.release()
  await new Promise((r) => setImmediate(r))
  assert.equal(process.listenerCount('SIGINT'), before[0] + 1, 'b is still held')
  b.release()
  // Removed on the next turn of the event loop (not per release: that costs system calls).
  await new Promise((r) => setImmediate(r))
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')], before)
  // A failed acquisition leaves none either.
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  await assert.rejects(ul.lock({ paths: d.lock, timeout: 0 }), { code: 'held' })
  await assert.rejects(ul.lock({ paths: d.lock, timeout: 20 }), { code: 'timeout' })
  await new Promise((r) => setImmediate(r))
  assert.deepEqual([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')], before)
})

test('SIGKILL leaves a stale lock (files kept, flock gone); the next lock() reclaims it', async (t) => {
  const d = h.serviceDir(t)
  const kid = h.nodeKid(['hold', 'async', 'wait', ...d.both])
  assert.match(await kid.line(), /^locked /)
  assert.equal(await kid.line(), 'waiting')
  kid.kill('SIGKILL')
  assert.deepEqual(await kid.exited, { code: null, signal: 'SIGKILL' })
  // As core documents: the Supervisor still sees the files, the reboot no flock.
  assert.deepEqual(h.listing(d.svc), ['resin-updates.lock', 'updates.lock'])
  assert.equal(h.supervisorProbe(d.lock), 73)
  assert.equal(h.rebootProbe(d.lock), 0)
  const st = ul.status({ paths: d.both })
  assert.equal(st.locks[0].state, 'stale')
  assert.equal(st.locks[0].holder.pid, kid.pid)
  assert.deepEqual(st, h.lockctlStatus(d.both))
  // With reclaim off it is `held` (stale) and left alone.
  const e = await ul.lock({ paths: d.both, timeout: 0, reclaimStale: false }).catch((x) => x)
  assert.equal(e.code, 'held')
  assert.equal(e.holder.state, 'stale')
  assert.equal(e.holder.record.pid, kid.pid)
  assert.equal(e.holder.flock_held, false)
  assert.deepEqual(h.listing(d.svc), ['resin-updates.lock', 'updates.lock'])
  // Default: taken over.
  const l = await ul.lock({ paths: d.both, timeout: 0 })
  assert.deepEqual(
    l.reclaimed.map((r) => [r.path, r.previous.pid, r.previous.program]),
    d.both.map((p) => [p, kid.pid, 'child.js']),
  )
  assert.equal(h.supervisorProbe(d.lock), 73)
  assert.notEqual(h.rebootProbe(d.lock), 0)
  l.release()
  assert.deepEqual(h.listing(d.svc), [])
})

test('a signal while lock() is still waiting ends the process with nothing taken', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  const kid = h.nodeKid(['hold', 'async', 'wait', d.lock, d.legacy])
  await h.waitFor(() => h.kidIsWaiting(kid.pid))
  kid.kill('SIGTERM')
  assert.deepEqual(await kid.exited, { code: null, signal: 'SIGTERM' })
  assert.equal(ul.status({ paths: d.lock }).locks[0].holder.program, 'lockctl acquire')
  assert.deepEqual(h.listing(d.svc), ['updates.lock'])
})
