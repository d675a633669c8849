'use strict'
// The lock as the device's two real readers see it: the Supervisor's `lockfile -r 0` run as
// uid 65534 (exit 73 = held) and the host OS reboot's `flock -nx` (fails while held).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const ul = require('update-lock')
const { serviceDir, supervisorProbe, rebootProbe, listing } = require('./helpers')

for (const mode of ['lock', 'lockSync']) {
  test(`${mode}: both readers see the lock on both paths while held, neither after release`, async (t) => {
    const d = serviceDir(t)
    const held = mode === 'lock' ? await ul.lock({ paths: d.both }) : ul.lockSync({ paths: d.both })
    assert.equal(held.held, true)
    assert.deepEqual(held.paths, d.both)
    assert.deepEqual(listing(d.svc), ['resin-updates.lock', 'updates.lock'])
    for (const p of d.both) assert.equal(supervisorProbe(p), 73, `lockfile must see ${p} as held`)
    assert.notEqual(rebootProbe(d.lock), 0, 'flock -nx must fail while held')
    held.check()

    held.release()
    assert.equal(held.held, false)
    assert.deepEqual(listing(d.svc), [])
    for (const p of d.both) assert.equal(supervisorProbe(p), 0, `lockfile must get ${p} after release`)
    // The probe removed its own file again; the reboot probe on a fresh file succeeds.
    fs.writeFileSync(d.lock, '')
    assert.equal(rebootProbe(d.lock), 0)
    held.release() // idempotent
  })
}

test('withLock: the critical section runs under the lock, which is released afterwards', async (t) => {
  const d = serviceDir(t)
  const seen = await ul.withLock(
    async (l) => {
      assert.equal(l.held, true)
      await new Promise((r) => setImmediate(r))
      return [supervisorProbe(d.lock), supervisorProbe(d.legacy), rebootProbe(d.lock)]
    },
    { paths: d.both },
  )
  assert.equal(seen[0], 73)
  assert.equal(seen[1], 73)
  assert.notEqual(seen[2], 0)
  assert.deepEqual(listing(d.svc), [])
})

test('withLock releases when the critical section throws, and rethrows its error', async (t) => {
  const d = serviceDir(t)
  const boom = new Error('boom')
  let inside
  await assert.rejects(
    ul.withLock(
      async (l) => {
        inside = l
        await null
        throw boom
      },
      { paths: d.both },
    ),
    (e) => e === boom,
  )
  assert.equal(inside.held, false)
  assert.deepEqual(listing(d.svc), [])
  // A synchronous throw too.
  await assert.rejects(
    ul.withLock(() => {
      throw boom
    }, { paths: d.lock }),
    (e) => e === boom,
  )
  assert.deepEqual(listing(d.svc), [])
})

test('Symbol.asyncDispose and Symbol.dispose release the lock', async (t) => {
  const d = serviceDir(t)
  const a = await ul.lock({ paths: d.lock })
  assert.equal(typeof a[Symbol.asyncDispose], 'function')
  await a[Symbol.asyncDispose]()
  assert.equal(a.held, false)
  assert.deepEqual(listing(d.svc), [])
  const b = ul.lockSync({ paths: d.lock })
  b[Symbol.dispose]()
  assert.equal(b.held, false)
  assert.deepEqual(listing(d.svc), [])
})

test('a Supervisor lock (file owned by 65534) holds us off, and we never touch it', async (t) => {
  const d = serviceDir(t)
  const { supervisorTake } = require('./helpers')
  supervisorTake(d.lock)
  const before = fs.lstatSync(d.lock)
  await assert.rejects(ul.lock({ paths: d.both, timeout: 0 }), (e) => {
    assert.equal(e.code, 'held')
    assert.equal(e.holder.state, 'held-by-supervisor')
    assert.equal(e.holder.owner_uid, 65534)
    assert.equal(e.holder.flock_held, false)
    assert.equal(e.holder.record, null)
    assert.match(e.message, /Supervisor/)
    return true
  })
  const after = fs.lstatSync(d.lock)
  assert.equal(after.ino, before.ino)
  assert.equal(after.uid, 65534)
  // All-or-nothing: the legacy path, which comes after, was not left behind either.
  assert.deepEqual(listing(d.svc), ['updates.lock'])
})
