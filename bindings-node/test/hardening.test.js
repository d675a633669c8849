'use strict'
// Hardening promises seen from Node.js, tried as a process of another uid meets them.
// G: when the lock cannot be looked at, status() says 'unknown' (never 'free') and
// release() throws code 'unknown' and deletes nothing.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const ul = require('update-lock')
const h = require('./helpers')

function privateDir(t) {
  const d = h.serviceDir(t)
  const dir = path.join(d.svc, 'private')
  fs.mkdirSync(dir)
  fs.chmodSync(dir, 0o1777)
  return { dir, lock: path.join(dir, 'updates.lock') }
}

test('G: status says unknown when it cannot look', async (t) => {
  const { dir, lock } = privateDir(t)
  const held = ul.lockSync({ paths: [lock], timeout: 0 })
  fs.chmodSync(dir, 0o700) // uid 1000 may no longer search it
  const kid = h.nodeKid(['status-as-uid', '1000', lock])
  const seen = JSON.parse((await kid.expect('status ')).slice('status '.length))
  assert.equal((await kid.exited).code, 0)
  fs.chmodSync(dir, 0o1777)
  assert.equal(seen.state, 'unknown')
  assert.match(seen.error, /ermission denied/)
  assert.match(seen.message, /could not look/)
  held.release()
  assert.equal(ul.status({ paths: [lock], legacy: false }).locks[0].state, 'free')
})

test('G: a release that cannot check throws unknown and deletes nothing', async (t) => {
  const { dir, lock } = privateDir(t)
  const kid = h.nodeKid(['hold-release-as-uid', '1000', lock])
  await kid.expect('held')
  const before = fs.statSync(lock)
  fs.chmodSync(dir, 0o700) // the holder (uid 1000) can no longer look at its own lock
  kid.send('release')
  const err = JSON.parse((await kid.expect('released ')).slice('released '.length))
  assert.equal((await kid.exited).code, 0)
  fs.chmodSync(dir, 0o1777)
  assert.equal(err.code, 'unknown')
  assert.equal(err.errno, 12)
  assert.match(err.message, /could not check the update lock/)
  assert.match(err.message, /nothing was deleted/)
  assert.ok(err.message.includes(lock), err.message)
  const after = fs.statSync(lock)
  assert.deepEqual([after.ino, after.uid], [before.ino, 1000], 'the lock file was touched')
  assert.equal(ul.status({ paths: [lock], legacy: false }).locks[0].state, 'stale')
})
