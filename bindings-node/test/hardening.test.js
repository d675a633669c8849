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

// D: a hand-over peer is who SO_PEERCRED says it is; whatever is planted at the socket is
// left alone and reported as 'blocked'.
const { spawn, spawnSync } = require('node:child_process')
const readline = require('node:readline')

function coTenantServer(socket) {
  // A real hand-over server (lockctl) running as uid 1000: another user's process to us.
  const p = spawn('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', h.LOCKCTL, 'handover', 'run', '--socket', socket, '--', 'sh', '-c', 'echo ready; read x'], { stdio: ['pipe', 'pipe', 'ignore'] })
  const ready = new Promise((resolve) => readline.createInterface({ input: p.stdout }).once('line', resolve))
  return { p, ready }
}

test('D: a root successor takes nothing from another uid unless allowed', async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const { p, ready } = coTenantServer(socket)
  t.after(() => p.kill('SIGKILL'))
  assert.equal(await ready, 'ready')
  assert.throws(
    () => ul.takeOverSync({ socket, stepTimeout: 2000, handoverComplete: false }),
    (e) => e.code === 'handover' && e.reason === 'uid' && e.message.includes('uid 1000') && e.message.includes(`pid ${p.pid}`) && e.message.includes('refusing to take anything from it'),
  )
  assert.equal(p.exitCode, null, 'the server was disturbed')
  const got = await ul.takeOver({ socket, stepTimeout: 2000, handoverComplete: false, peerUids: [1000] })
  assert.equal(got.predecessor.uid, 1000)
})

test('D: something planted at the socket is blocked and left alone', (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  assert.equal(spawnSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'mkfifo', socket]).status, 0)
  const before = fs.lstatSync(socket)
  for (const attempt of [() => ul.takeOverSync({ socket, handoverComplete: false }), () => ul.HandoverServer.bind({ socket })]) {
    assert.throws(attempt, (e) => e.code === 'handover' && e.reason === 'blocked' && e.message.includes('a named pipe (fifo) owned by uid 1000'))
  }
  const after = fs.lstatSync(socket)
  assert.deepEqual([after.ino, after.uid], [before.ino, 1000])
  assert.throws(() => ul.takeOverSync({ socket, peerUids: [-1] }), (e) => e.code === 'ERR_INVALID_ARG_TYPE' || /peerUids/.test(e.message))
})

test("E: listenBacklog() is the kernel's limit", () => {
  assert.equal(ul.listenBacklog(), Number(fs.readFileSync('/proc/sys/net/core/somaxconn', 'utf8')))
})
