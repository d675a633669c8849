'use strict'
// Mutual exclusion across several Node processes and against `lockctl`, and status() against
// `lockctl status --json`.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')
const ul = require('update-lock')
const h = require('./helpers')

test('several Node processes and lockctl run never overlap (no lost counter updates)', async (t) => {
  const d = h.serviceDir(t)
  const counter = path.join(d.base, 'counter')
  fs.writeFileSync(counter, '0')
  const kids = [1, 2, 3].map(() => h.nodeKid(['count', '25', counter, ...d.both]))
  // lockctl run around the same read-increment-write, from a shell loop.
  const script = `for i in $(seq 1 20); do "$LOCKCTL" run --timeout 60 --path "$P1" --path "$P2" -- sh -c 'n=$(cat "$C"); echo $((n+1)) > "$C.sh"; mv "$C.sh" "$C"' || exit 1; done`
  const sh = spawn('sh', ['-c', script], {
    env: { ...process.env, LOCKCTL: h.LOCKCTL, P1: d.lock, P2: d.legacy, C: counter },
    stdio: 'inherit',
  })
  const shDone = new Promise((resolve) => sh.on('close', resolve))
  for (const k of kids) assert.equal(await k.line(), 'done', k.stderr)
  for (const k of kids) assert.deepEqual(await k.exited, { code: 0, signal: null })
  assert.equal(await shDone, 0)
  assert.equal(fs.readFileSync(counter, 'utf8').trim(), String(3 * 25 + 20))
  assert.deepEqual(h.listing(d.svc), [])
})

test('lockctl holds: we get held (holder named), then the lock once lockctl releases', async (t) => {
  const d = h.serviceDir(t)
  h.lockctlAcquire(d.both)
  t.after(() => h.lockctl(['release', '--path', d.lock, '--path', d.legacy]))
  await assert.rejects(ul.lock({ paths: d.both, timeout: 0 }), (e) => {
    assert.ok(e instanceof ul.UpdateLockError)
    assert.equal(e.code, 'held')
    assert.equal(e.errno, 1)
    assert.equal(e.path, d.lock)
    assert.equal(e.holder.state, 'held-by-app')
    assert.equal(e.holder.record.program, 'lockctl acquire')
    assert.equal(e.holder.record.same_process, false)
    assert.equal(typeof e.holder.record.pid, 'number')
    assert.equal(e.holder.pid, undefined) // nested under `record`, not flattened
    assert.match(e.message, /held by another app/)
    assert.ok(e.message.includes(d.lock))
    return true
  })
  const waiting = ul.lock({ paths: d.both, timeout: 30000 })
  h.lockctlRelease(d.both)
  const held = await waiting
  assert.equal(held.held, true)
  // Now lockctl is the one held off.
  const r = h.lockctl(['run', '--no-wait', '--path', d.lock, '--path', d.legacy, '--', 'true'])
  assert.equal(r.status, 73, r.stderr)
  assert.match(r.stderr, /error\[held\]/)
  held.release()
  assert.equal(h.lockctl(['run', '--no-wait', '--path', d.lock, '--', 'true']).status, 0)
})

test('a lock held by another Node process: held with its program name, then acquired when it releases', async (t) => {
  const d = h.serviceDir(t)
  const kid = h.nodeKid(['hold', 'async', 'stdin', ...d.both])
  assert.match(await kid.line(), /^locked /)
  const e = await ul.lock({ paths: d.both, timeout: 0 }).catch((x) => x)
  assert.equal(e.code, 'held')
  assert.equal(e.holder.record.program, 'child.js')
  assert.equal(e.holder.record.pid, kid.pid)
  const waiting = ul.lock({ paths: d.both })
  kid.send('release')
  assert.equal(await kid.line(), 'released')
  const held = await waiting
  assert.equal(held.held, true)
  held.release()
  await kid.exited
})

test('status() reports exactly what lockctl status --json reports', async (t) => {
  const d = h.serviceDir(t)
  const opts = { paths: d.both, handoverPaths: [d.handover] }
  // Free.
  assert.deepEqual(ul.status(opts), h.lockctlStatus(d.both, [d.handover]))
  // Held by lockctl, and a hand-over signal pending.
  h.lockctlAcquire(d.both)
  t.after(() => h.lockctl(['release', '--path', d.lock, '--path', d.legacy]))
  assert.deepEqual(ul.handoverComplete({ paths: d.handover }), [d.handover])
  const ours = ul.status(opts)
  assert.deepEqual(ours, h.lockctlStatus(d.both, [d.handover]))
  assert.equal(ours.schema, 1)
  assert.equal(ours.locks[0].state, 'held-by-app')
  assert.equal(ours.locks[0].holder.program, 'lockctl acquire')
  assert.equal(ours.blocks_host_reboot, true)
  assert.equal(ours.handover[0].pending, true)
  // Field order as in the JSON too.
  assert.deepEqual(Object.keys(ours), Object.keys(h.lockctlStatus(d.both, [d.handover])))
  h.lockctlRelease(d.both)
  // Held by us: the same, seen from lockctl (which is another process).
  const held = ul.lockSync({ paths: d.both })
  const theirs = h.lockctlStatus(d.both, [d.handover])
  assert.equal(theirs.locks[0].holder.pid, process.pid)
  assert.equal(theirs.locks[0].holder.program, path.basename(process.argv[1]))
  const mine = ul.status(opts)
  assert.equal(mine.locks[0].holder.same_process, true)
  assert.equal(mine.locks[0].state, 'held-by-app')
  held.release()
})

test('handoverComplete() writes the signal atomically and is idempotent', (t) => {
  const d = h.serviceDir(t)
  const signal2 = path.join(d.svc, 'resin-kill-me')
  assert.deepEqual(ul.handoverComplete({ paths: [d.handover, signal2] }), [d.handover, signal2])
  assert.deepEqual(ul.handoverComplete({ paths: [d.handover, signal2] }), [d.handover, signal2])
  assert.deepEqual(h.listing(d.svc), ['handover-complete', 'resin-kill-me'])
  assert.match(fs.readFileSync(d.handover, 'utf8'), /^update-lock handover v1\n/)
  assert.equal(ul.status({ paths: d.lock, handoverPaths: d.handover }).handover[0].pending, true)
})
