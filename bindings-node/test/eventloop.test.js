'use strict'
// Waiting for the lock never blocks the event loop, and many waiters do not starve libuv's
// thread pool (4 threads by default): timers fire and fs I/O completes while they wait.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const ul = require('update-lock')
const h = require('./helpers')
const { kidIsWaiting, waitFor } = h

test('timers and fs I/O keep running while 8 lock() calls wait', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire(d.both)
  t.after(() => h.lockctl(['release', '--path', d.lock, '--path', d.legacy]))

  const WAITERS = 8 // twice libuv's default thread pool
  let settled = 0
  const order = []
  const waiters = Array.from({ length: WAITERS }, (_, i) =>
    ul.lock({ paths: d.both }).then((l) => {
      settled++
      order.push(i)
      // Each one holds it briefly, then lets the next one in.
      setImmediate(() => l.release())
      return i
    }),
  )

  // Timers: wait for 10 ticks of a 5 ms interval (a blocked loop would hang here and the
  // test would time out).
  await new Promise((resolve) => {
    let ticks = 0
    const iv = setInterval(() => {
      if (++ticks === 10) {
        clearInterval(iv)
        resolve()
      }
    }, 5)
  })
  // fs I/O on the thread pool: more concurrent operations than it has threads.
  const files = Array.from({ length: 16 }, (_, i) => path.join(d.base, `f${i}`))
  await Promise.all(files.map((f, i) => fs.promises.writeFile(f, `data ${i}`)))
  const contents = await Promise.all(files.map((f) => fs.promises.readFile(f, 'utf8')))
  assert.deepEqual(contents, files.map((_, i) => `data ${i}`))
  await fs.promises.stat(d.lock)
  // All that happened while every waiter was still waiting.
  assert.equal(settled, 0)
  assert.deepEqual(ul.status({ paths: d.lock }).locks[0].holder.program, 'lockctl acquire')

  h.lockctlRelease(d.both)
  const got = await Promise.all(waiters)
  assert.deepEqual(got.sort((a, b) => a - b), [...Array(WAITERS).keys()])
  assert.equal(order.length, WAITERS)
  // Let the last release run, then nothing is left.
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(h.listing(d.svc), [])
})

test('a pending lock() keeps the process alive until it is acquired', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire([d.lock])
  t.after(() => h.lockctl(['release', '--path', d.lock]))
  // The child has nothing else to do but wait for the lock; it must not exit early.
  const kid = h.nodeKid(['hold', 'async', 'exit', d.lock])
  // Make sure the child is up and waiting (its inotify watch is in place) before releasing:
  // it cannot print while waiting, so look at its wait channel instead.
  await waitFor(() => kidIsWaiting(kid.pid))
  h.lockctlRelease([d.lock])
  assert.match(await kid.line(), /^locked /)
  assert.deepEqual(await kid.exited, { code: 0, signal: null })
  assert.deepEqual(h.listing(d.svc), [])
})
