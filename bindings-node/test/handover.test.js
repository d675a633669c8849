'use strict'
// Hand-over between two releases, with real processes: an old Node version serving its
// listening TCP socket and state on the hand-over socket, a new Node version taking it over
// and serving the same port through net.Server.listen({ fd }). Every outcome of the
// protocol (first start, crash of either side, stall, stale socket, race, refusal, abort)
// with its code, reason and message. Synchronisation: readiness lines on stdout, stdin
// commands, process exit and /proc/net/unix; every wait is bounded by the test timeout.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const net = require('node:net')
const http = require('node:http')
const path = require('node:path')
const ul = require('update-lock')
const h = require('./helpers')

const FIXTURE = path.join(__dirname, 'fixtures', 'handover.js')
const TIMEOUT = { timeout: 30000 }

function kid(args, t) {
  const k = new h.Kid(process.execPath, [FIXTURE, ...args], { cwd: h.PKG })
  if (t) t.after(() => k.proc.exitCode === null && k.proc.signalCode === null && k.kill('SIGKILL'))
  return k
}

const payload = (line, word) => {
  assert.ok(line.startsWith(`${word} `), `expected "${word} ...", got: ${line}`)
  return JSON.parse(line.slice(word.length + 1))
}

/** Connect to 127.0.0.1:port and read the one line the server answers. */
function ask(port) {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1')
    let data = ''
    c.setEncoding('utf8')
    c.on('data', (d) => (data += d))
    c.on('end', () => resolve(data.trim()))
    c.on('error', reject)
  })
}

/** One HTTP GET on 127.0.0.1:port: the body, trimmed. */
function get(port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve(body.trim()))
      })
      .on('error', reject)
  })
}

function checkHandoverError(e, reason, fragments = []) {
  assert.equal(e.name, 'UpdateLockError')
  assert.equal(e.code, 'handover')
  assert.equal(e.errno, 10)
  assert.equal(e.reason, reason)
  assert.ok(e.message.includes(`hand-over failed (${reason})`), e.message)
  for (const f of fragments) assert.ok(e.message.includes(f), `message lacks ${JSON.stringify(f)}: ${e.message}`)
}

/** Connections queued on the hand-over socket of server process `pid`: the /proc/net/unix
 * entries sharing the address of its listening Unix socket (the core binds through
 * /proc/self/fd/N/..., so the address is not the socket's path), minus the listener. */
function queued(pid) {
  const inodes = new Set()
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1])
    } catch {
      // closed meanwhile
    }
  }
  const rows = fs
    .readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
  // Columns: Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
  const listener = rows.find((r) => r.length >= 8 && inodes.has(r[6]) && r[3] === '00010000')
  if (!listener) return 0
  return rows.filter((r) => r[7] === listener[7]).length - 1
}

test('first start: no predecessor -> null at once (async and sync), nothing written', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  assert.equal(await ul.takeOver({ socket }), null)
  assert.equal(ul.takeOverSync({ socket }), null)
  // The directory does not even exist: still a first start.
  assert.equal(await ul.takeOver({ socket: path.join(d.base, 'nowhere', 'handover.sock') }), null)
  assert.deepEqual(h.listing(d.svc), [])
})

test('old Node -> new Node: listening socket + state handed over, new serves the same port', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'grant'], t)
  const port = Number((await old.expect('ready ')).split(' ')[1])
  assert.equal(await ask(port), `old ${old.pid}`)
  assert.equal(fs.statSync(socket).mode & 0o777, 0o600, 'the socket is not world-accessible')
  // The Supervisor stops the old container right after starting the new one: SIGTERM must
  // not stop the hand-over (the old app keeps serving until the grace period runs out).
  old.kill('SIGTERM')
  assert.equal(await old.line(), 'sigterm')
  assert.equal(await ask(port), `old ${old.pid}`)

  const started = Date.now()
  const neu = kid(['new', socket], t)
  const took = payload(await neu.expect('took '), 'took')
  const granted = payload(await old.expect('granted '), 'granted')
  assert.deepEqual(await old.exited, { code: 0, signal: null })
  const elapsed = Date.now() - started

  assert.equal(took.state, 'sessions=3')
  assert.equal(took.predecessor.release, 'v1')
  assert.equal(took.predecessor.pid, old.pid)
  assert.equal(took.predecessor.own_pid, old.pid)
  assert.equal(took.predecessor.uid, process.getuid())
  assert.equal(took.predecessor.program, 'handover.js')
  assert.equal(took.predecessor.protocol, 1)
  assert.equal(took.fds.length, 1)
  assert.equal(took.fds[0].label, 'http')
  assert.equal(took.fds[0].isSocket, true)
  assert.equal(typeof took.fds[0].fd, 'number')
  assert.equal(granted.release, 'v2')
  assert.equal(granted.pid, neu.pid)
  // handover-complete written beside the socket (explicit socket path).
  assert.deepEqual(took.signalled, [d.handover])
  assert.equal(took.signalError, null)
  assert.ok(fs.existsSync(d.handover))
  assert.ok(!fs.existsSync(socket), 'the old version removed its socket')

  // Same port, now served by the new process through net.Server.listen({ fd }); the old one
  // has exited, and no connection is refused.
  assert.equal(Number((await neu.expect('listening ')).split(' ')[1]), port)
  for (let i = 0; i < 5; i++) assert.equal(await ask(port), `new ${neu.pid}`)
  neu.send('exit')
  assert.deepEqual(await neu.exited, { code: 0, signal: null })
  t.diagnostic(`hand-over (new process start to old exit): ${elapsed} ms`)
})

test('connections queued in the backlog during the hand-over are served, none refused', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'wait-go'], t)
  const port = Number((await old.expect('ready ')).split(' ')[1])
  const neu = kid(['new', socket], t)
  await old.expect('accepted ')
  // Clients arriving in the middle of the hand-over: served by whichever process accepts.
  const during = Array.from({ length: 10 }, () => ask(port))
  old.send('go')
  await old.expect('granted ')
  await neu.expect('listening ')
  const answers = await Promise.all(during)
  for (const a of answers) assert.match(a, new RegExp(`^(old ${old.pid}|new ${neu.pid})$`))
  await old.exited
  assert.equal(await ask(port), `new ${neu.pid}`)
  neu.send('exit')
  await neu.exited
})

test('old crashes mid-transfer: new gets handover/peer-gone, nothing taken', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'crash'], t)
  await old.expect('ready ')
  const neu = kid(['new', socket], t)
  await old.expect('accepted')
  assert.deepEqual(await old.exited, { code: null, signal: 'SIGKILL' })
  const e = payload(await neu.expect('error '), 'error')
  checkHandoverError(e, 'peer-gone', [socket, 'start fresh'])
  assert.equal(e.path, socket)
  assert.ok(!fs.existsSync(d.handover), 'no handover-complete after a failed hand-over')
  await neu.exited
})

test('new crashes mid-transfer: old grant rejects, old keeps serving, a second successor succeeds', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'wait-go'], t)
  const port = Number((await old.expect('ready ')).split(' ')[1])
  const first = kid(['new', socket], t)
  const seen = payload(await old.expect('accepted '), 'accepted')
  assert.equal(seen.pid, first.pid)
  first.kill('SIGKILL')
  await first.exited
  old.send('go')
  assert.equal(await old.expect('grant-failed '), 'grant-failed handover peer-gone true')
  // Still serving its port and the hand-over socket.
  assert.equal(await ask(port), `old ${old.pid}`)
  assert.ok(fs.existsSync(socket))
  assert.ok(!fs.existsSync(d.handover))

  const second = kid(['new', socket], t)
  assert.equal(await old.expect('releasing '), 'releasing v2')
  const took = payload(await second.expect('took '), 'took')
  assert.equal(took.state, 'sessions=3')
  const granted = payload(await old.expect('granted '), 'granted')
  assert.equal(granted.pid, second.pid)
  await old.exited
  await second.expect('listening ')
  assert.equal(await ask(port), `new ${second.pid}`)
  second.send('exit')
  await second.exited
})

test('stalled old version (release step hangs): new gets handover/stalled after its release timeout', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'stall'], t)
  await old.expect('ready ')
  const started = Date.now()
  const neu = kid(['new', socket, '300'], t)
  await old.expect('accepted')
  const e = payload(await neu.expect('error '), 'error')
  const waited = Date.now() - started
  checkHandoverError(e, 'stalled', ['raise the step timeout'])
  assert.ok(waited >= 300, `gave up after ${waited} ms`)
  old.send('exit')
  await old.exited
  await neu.exited
})

test('stale socket of a crashed old version: null, socket removed, the new version can serve', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'stall'], t)
  await old.expect('ready ')
  old.kill('SIGKILL')
  await old.exited
  assert.ok(fs.statSync(socket).isSocket(), 'the crashed server left its socket behind')
  assert.equal(await ul.takeOver({ socket }), null)
  assert.ok(!fs.existsSync(socket), 'stale socket removed')
  // The new version serves the next one on the same path.
  const server = ul.HandoverServer.bind({ socket, release: 'v2' })
  t.after(() => server.close())
  assert.equal(server.serving, true)
  assert.equal(server.socketPath, socket)
  assert.ok(fs.statSync(socket).isSocket())
  // A second server on the same socket is turned away while the first serves.
  let e
  try {
    ul.HandoverServer.bind({ socket })
  } catch (x) {
    e = x
  }
  checkHandoverError(e, 'already-serving')
  server.close()
  server.close() // idempotent
  assert.equal(server.serving, false)
  assert.ok(!fs.existsSync(socket))
})

test('two successors racing: exactly one takes over, the other gets handover/taken', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'on-go'], t)
  const port = Number((await old.expect('ready ')).split(' ')[1])
  const a = kid(['new', socket], t)
  const b = kid(['new', socket], t)
  // Both are connected and queued on the hand-over socket before the old one accepts.
  await h.waitFor(() => queued(old.pid) === 2)
  old.send('go')
  const results = await Promise.all([a, b].map((k) => k.line()))
  const winners = results.filter((l) => l.startsWith('took '))
  const losers = results.filter((l) => l.startsWith('error '))
  assert.equal(winners.length, 1, results.join('\n'))
  assert.equal(losers.length, 1, results.join('\n'))
  const e = payload(losers[0], 'error')
  checkHandoverError(e, 'taken', ['took over first', 'release v2'])
  const winner = results[0].startsWith('took ') ? a : b
  const granted = payload(await old.expect('granted '), 'granted')
  assert.equal(granted.pid, winner.pid)
  await old.exited
  await winner.expect('listening ')
  assert.equal(await ask(port), `new ${winner.pid}`)
  winner.send('exit')
  await Promise.all([a.exited, b.exited])
})

test('refuse: new gets handover/refused with the message, old keeps serving until it closes', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'refuse'], t)
  await old.expect('ready ')
  const neu = kid(['new', socket], t)
  const e = payload(await neu.expect('error '), 'error')
  checkHandoverError(e, 'refused', ['busy migrating the database', 'keeps serving'])
  assert.equal(await old.expect('refused '), 'refused true')
  await old.exited
  await neu.exited
  assert.ok(!fs.existsSync(d.handover))
})

test('AbortSignal during accept: cancelled, the server keeps serving and hands over afterwards', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const server = ul.HandoverServer.bind({ socket, release: 'v1' })
  t.after(() => server.close())
  const ac = new AbortController()
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const pending = server.accept({ signal: ac.signal })
  await new Promise((r) => setTimeout(r, 50)) // the event loop keeps running meanwhile
  ac.abort(new Error('shutting down'))
  const e = await pending.catch((x) => x)
  clearInterval(timer)
  // Rejects with the signal's reason itself, as fetch() does.
  assert.equal(e.message, 'shutting down')
  assert.ok(!(e instanceof ul.UpdateLockError))
  assert.ok(ticks >= 5, `the event loop ran ${ticks} timer ticks while accept waited`)
  assert.equal(server.serving, true)
  // An already aborted signal rejects at once.
  const e2 = await server.accept({ signal: AbortSignal.abort() }).catch((x) => x)
  assert.equal(e2.name, 'AbortError')
  // A timeout is not an error: null.
  assert.equal(await server.accept({ timeout: 20 }), null)

  // Still serving: a successor process takes over (an in-process listener and a file).
  const tcp = net.createServer((c) => c.end('old\n'))
  await new Promise((r) => tcp.listen(0, '127.0.0.1', r))
  const port = tcp.address().port
  const neu = kid(['new', socket], t)
  const req = await server.accept({ timeout: 10000 })
  assert.equal(req.successor.pid, neu.pid)
  assert.equal(req.pending, true)
  const peer = await server.grant(req, { state: Buffer.from('s'), fds: [{ label: 'http', fd: ul.listenerFd(tcp) }] })
  assert.equal(peer.pid, neu.pid)
  assert.equal(req.pending, false)
  assert.equal(server.serving, false)
  // The app keeps its own descriptor: our listener still works until we close it.
  assert.ok(tcp.listening)
  tcp.close()
  await neu.expect('listening ')
  assert.equal(await ask(port), `new ${neu.pid}`)
  neu.send('exit')
  await neu.exited
  // Answering a request twice, or using a finished server, is an error.
  await assert.rejects(server.grant(req), /already answered/)
  await assert.rejects(server.accept({ timeout: 0 }), (x) => x.code === 'handover' && x.reason === 'finished')
})

test('AbortSignal during takeOver: cancelled with nothing taken; the old version keeps serving', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const old = kid(['old', socket, 'wait-go'], t)
  const port = Number((await old.expect('ready ')).split(' ')[1])
  const taker = kid(['abort-take', socket], t)
  await taker.expect('taking')
  await old.expect('accepted ')
  taker.send('abort')
  const ticks = Number((await taker.expect('ticks ')).split(' ')[1])
  const e = payload(await taker.expect('error '), 'error')
  assert.equal(e.name, 'AbortError')
  assert.ok(ticks > 0, 'the event loop ran while takeOver waited')
  await taker.exited
  // The old version's grant finds the successor gone and keeps serving.
  old.send('go')
  assert.equal(await old.expect('grant-failed '), 'grant-failed handover peer-gone true')
  assert.equal(await ask(port), `old ${old.pid}`)
  assert.ok(!fs.existsSync(d.handover))
  old.kill('SIGKILL')
  await old.exited
})

test('the README example: run it, run it again, the second serves the same port', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const readme = fs.readFileSync(path.join(h.PKG, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Hand-over between releases'))
  const code = /```js\n([\s\S]*?)```/.exec(section)[1]
  const run = (release) => {
    const env = { ...process.env, RELEASE: release, HANDOVER_SOCKET: path.join(d.svc, 'handover.sock'), PORT: '0' }
    const k = new h.Kid(process.execPath, ['-e', code], { cwd: h.PKG, env })
    t.after(() => k.proc.exitCode === null && k.proc.signalCode === null && k.kill('SIGKILL'))
    return k
  }
  const v1 = run('v1')
  const port = Number((await v1.expect('listening on ')).split(' ')[2])
  assert.equal(await get(port), `v1 pid ${v1.pid} hit 1`)
  const v2 = run('v2')
  assert.equal(await v2.line(), `took over from v1 (pid ${v1.pid})`)
  assert.equal(await v2.line(), `listening on ${port}`)
  assert.equal(await v1.expect('handed over '), `handed over to v2 (pid ${v2.pid})`)
  assert.deepEqual(await v1.exited, { code: 0, signal: null })
  assert.equal(await get(port), `v2 pid ${v2.pid} hit 2`)
  assert.ok(fs.existsSync(d.handover))
  v2.kill('SIGKILL')
  await v2.exited
})

test('options are checked: unknown keys, signal is the AbortSignal, bad fds', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  await assert.rejects(ul.takeOver({ sockets: socket }), { code: 'ERR_INVALID_ARG_VALUE' })
  await assert.rejects(ul.takeOver({ socket, signal: {} }), /signal must be an AbortSignal/)
  await assert.rejects(ul.takeOver({ socket, signal: 'yes' }), /signal must be an AbortSignal/)
  const server = ul.HandoverServer.bind({ socket })
  t.after(() => server.close())
  await assert.rejects(server.accept({ signal: true }), /signal must be an AbortSignal/)
  await assert.rejects(ul.takeOver({ socket, signal: AbortSignal.abort() }), { name: 'AbortError' })
  await assert.rejects(ul.takeOver({ socket, stepTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => ul.takeOverSync({ socket, signal: new AbortController().signal }), /use takeOver/)
  assert.throws(() => ul.HandoverServer.bind({ socket, signal: true }), { code: 'ERR_INVALID_ARG_VALUE' })
  assert.throws(() => ul.listenerFd(net.createServer()), /listening net.Server/)
  assert.throws(() => new ul.HandoverServer(), TypeError)
  server.close()
  // Nothing but the server's companion lock (kept, as every closed server keeps it).
  assert.deepEqual(h.listing(d.svc), ['handover.sock.lock'])
})

test('serve(): a throwing release step refuses the successor and rethrows; close() ends it with null', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const server = ul.HandoverServer.bind({ socket, release: 'v1' })
  t.after(() => server.close())
  const serving = server.serve(() => {
    throw new Error('the database would not close')
  })
  const taker = ul.takeOver({ socket, release: 'v2', handoverComplete: false })
  // Both settle in either order: handle both at once.
  await Promise.all([
    assert.rejects(serving, /the database would not close/),
    assert.rejects(taker, (e) => {
      assert.equal(e.code, 'handover')
      assert.equal(e.reason, 'refused')
      assert.match(e.message, /release step failed: the database would not close/)
      return true
    }),
  ])
  assert.ok(server.serving, 'still serving after the refusal')
  // Closed from elsewhere while serving: resolves to null, as Python's serve returns None.
  const again = server.serve(() => ({}))
  setImmediate(() => server.close())
  assert.equal(await again, null)
  assert.equal(fs.existsSync(socket), false)
})

test('serve(): a failed grant runs resume with the error and serves on; the app\'s own error object is rethrown; an AbortSignal ends it', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const server = ul.HandoverServer.bind({ socket, release: 'v1', maxState: 4 })
  t.after(() => server.close())
  const seen = []
  const mine = new RangeError('resume could not restart')
  const serving = server.serve(() => ({ state: 'more than four bytes' }), {
    resume: (e) => {
      seen.push(e)
      throw mine
    },
  })
  await Promise.all([
    assert.rejects(serving, (e) => e === mine),
    assert.rejects(ul.takeOver({ socket, handoverComplete: false }), (e) => e.reason === 'too-large'),
  ])
  assert.equal(seen.length, 1)
  assert.ok(seen[0] instanceof ul.UpdateLockError)
  assert.equal(seen[0].code, 'handover')
  assert.equal(seen[0].reason, 'too-large')
  assert.ok(server.serving, 'nothing was handed over: still serving')
  const ac = new AbortController()
  const waiting = server.serve(() => ({}), { signal: ac.signal })
  setImmediate(() => ac.abort())
  await assert.rejects(waiting, (e) => e.name === 'AbortError')
  assert.ok(server.serving)
})

test('deprecated names keep working for one release, each with one DeprecationWarning', TIMEOUT, async (t) => {
  const d = h.serviceDir(t)
  const socket = path.join(d.svc, 'handover.sock')
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  // Nobody serves: null either way; the boolean `signal` is `handoverComplete`, so nothing
  // is written beside the socket.
  assert.equal(await ul.takeOver({ socket, signal: false }), null)
  assert.equal(await ul.takeOver({ socket, signal: false }), null)
  await assert.rejects(ul.takeOver({ socket, abortSignal: AbortSignal.abort() }), { name: 'AbortError' })
  await assert.rejects(ul.takeOver({ socket, signal: false, handoverComplete: true }), /disagree/)
  await assert.rejects(ul.takeOver({ socket, signal: AbortSignal.abort(), abortSignal: AbortSignal.abort() }), /once, as 'signal'/)
  await new Promise((resolve) => setImmediate(resolve))
  const codes = warnings.filter((w) => w.name === 'DeprecationWarning').map((w) => w.code)
  assert.deepEqual(codes.sort(), ['UPDATE_LOCK_DEP_ABORT_SIGNAL', 'UPDATE_LOCK_DEP_SIGNAL_BOOLEAN'])
  assert.deepEqual(h.listing(d.svc), [])
})
