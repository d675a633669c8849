'use strict'
// "An update is waiting" and the yield to it, against the Supervisor's real lockfile (uid
// 65534): the holder hears of the attempt (onUpdateWaiting and updateWaiting), the next
// acquisition lets the update in first, in this process and, through the dated note, in
// another (lockctl).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const h = require('./helpers.js')
const ul = require('../index.js')

const TIMEOUT = { timeout: 20000 }

test('the holder hears of the Supervisor attempt once per hold', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const news = []
  let heard
  const told = new Promise((resolve) => {
    heard = resolve
  })
  const lock = await ul.lock({
    paths: [d.lock],
    yieldToUpdates: 60000,
    onUpdateWaiting: (info) => {
      news.push(info)
      heard()
    },
  })
  assert.equal(lock.updateWaiting, false)
  assert.equal(h.supervisorProbe(d.lock), 73)
  await told
  assert.equal(lock.updateWaiting, true)
  assert.equal(news[0].path, d.lock)
  assert.match(news[0].tempName, /^_/)
  assert.match(news[0].message, /an update is waiting/)
  assert.ok(news[0].seenAt > 0 && typeof news[0].proven === 'boolean')
  lock.release()
  assert.equal(lock.updateWaiting, false, 'false once released')
  assert.equal(news.length, 1)
})

test('the next acquisition yields, and the note reaches a new lockctl', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  let heard
  const told = new Promise((resolve) => {
    heard = resolve
  })
  const lock = await ul.lock({ paths: [d.lock], yieldToUpdates: 60000, onUpdateWaiting: () => heard() })
  assert.equal(h.supervisorProbe(d.lock), 73)
  await told
  lock.release()

  await assert.rejects(ul.lock({ paths: [d.lock], timeout: 0, yieldToUpdates: 60000 }), (e) => {
    assert.equal(e.code, 'held')
    assert.equal(e.holder.state, 'update-waiting')
    assert.match(e.message, /kept for the balena Supervisor/)
    return true
  })
  assert.equal(fs.existsSync(d.lock), false, 'a yield creates nothing')
  const env = { ...process.env }
  delete env.UPDATE_LOCK_YIELD_TO_UPDATES
  const r = h.lockctl(['run', '--no-wait', '--path', d.lock, '--', 'true'], { env })
  assert.equal(r.status, 73, r.stderr)
  assert.match(r.stderr, /kept for the balena Supervisor/)
  const taken = ul.lockSync({ paths: [d.lock], timeout: 0, yieldToUpdates: 0 })
  taken.release()
})

test('bad yieldToUpdates and onUpdateWaiting are refused, nothing taken', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, '60']) {
    assert.throws(() => ul.lockSync({ paths: [d.lock], yieldToUpdates: bad }), /yieldToUpdates/)
  }
  assert.throws(() => ul.lockSync({ paths: [d.lock], onUpdateWaiting: 42 }), /onUpdateWaiting must be a function/)
  assert.deepEqual(fs.readdirSync(d.svc), [])
})
