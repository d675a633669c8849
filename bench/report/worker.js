'use strict'
// Node.js worker of the side-by-side benchmark report (bench/report.sh). Same protocol as
// the other language workers:
//   rate DIR SAMPLE_MS WARMUP_MS NAME...  one round; prints {"NAME": ops_per_s, ...}
//   hold NAME PATH                        take the lock, print "ready"; per stdin line "r":
//                                         t = CLOCK_MONOTONIC, release, print t; "a": take
//                                         it again, print "ready"; EOF: exit
//   wait NAME PATH                        print "start", take the lock in NAME's waiting
//                                         mode, print CLOCK_MONOTONIC just after, release
// Contenders (rate: each on DIR/NAME/updates.lock):
//   ours        update-lock lockSync(prepared) / release()   (waits: async lock(), inotify)
//   ours-async  update-lock (await lock(prepared)).release()
//   lockfile    npm lockfile lockSync/unlockSync (waits: lock() with retries, retryWait 100 ms)
//   proper      proper-lockfile lock/release (mkdir; waits: retries every 100 ms)
// The update-lock addon is the one NAPI_RS_NATIVE_LIBRARY_PATH names (the release build).
// process.hrtime is CLOCK_MONOTONIC on Linux, the clock of the other workers.
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const ROOT = path.resolve(__dirname, '..', '..')
const peers = path.join(ROOT, 'bindings-node', 'bench', 'node_modules')
// Each library is loaded only when used, so a holding process's memory is its own library's.
let ul, lockfile, properLockfile

const POLL_MS = 100
const now = () => process.hrtime.bigint().toString()

function make(name, p, wait) {
  let opts
  if (name.startsWith('ours')) {
    ul = ul || require(path.join(ROOT, 'bindings-node'))
    opts = ul.prepare({ paths: [p], timeout: wait ? null : 0 })
  } else if (name === 'lockfile') {
    lockfile = lockfile || require(path.join(peers, 'lockfile'))
  } else if (name === 'proper') {
    properLockfile = properLockfile || require(path.join(peers, 'proper-lockfile'))
  }
  const plOpts = { realpath: false, lockfilePath: p, retries: 0 }
  if (wait) plOpts.retries = { retries: 3000, factor: 1, minTimeout: POLL_MS, maxTimeout: POLL_MS }
  switch (name) {
    case 'ours': {
      let held = null
      if (wait) return { acquire: async () => { held = await ul.lock(opts) }, release: () => held.release() }
      return { sync: true, acquire: () => { held = ul.lockSync(opts) }, release: () => held.release() }
    }
    case 'ours-async': {
      let held = null
      return { acquire: async () => { held = await ul.lock(opts) }, release: () => held.release() }
    }
    case 'lockfile':
      if (wait) {
        return {
          acquire: () => new Promise((resolve, reject) =>
            lockfile.lock(p, { retries: 1e9, retryWait: POLL_MS }, (e) => (e ? reject(e) : resolve()))),
          release: () => lockfile.unlockSync(p),
        }
      }
      return { sync: true, acquire: () => lockfile.lockSync(p), release: () => lockfile.unlockSync(p) }
    case 'proper': {
      let rel = null
      return { acquire: async () => { rel = await properLockfile.lock(p, plOpts) }, release: () => rel() }
    }
    default:
      throw new Error(`unknown contender ${name}`)
  }
}

async function runFor(c, ms) {
  const end = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6))
  const t0 = process.hrtime.bigint()
  let n = 0
  let t
  do {
    if (c.sync) {
      for (let i = 0; i < 20; i++) { c.acquire(); c.release() }
    } else {
      for (let i = 0; i < 20; i++) { await c.acquire(); await c.release() }
    }
    n += 20
  } while ((t = process.hrtime.bigint()) < end)
  return n / (Number(t - t0) / 1e9)
}

async function main() {
  const [mode, ...args] = process.argv.slice(2)
  if (mode === 'rate') {
    const [dir, sampleMs, warmupMs, ...names] = args
    const out = {}
    for (const name of names) {
      fs.mkdirSync(path.join(dir, name), { recursive: true })
      const p = path.join(dir, name, 'updates.lock')
      const c = make(name, p, false)
      await runFor(c, Number(warmupMs))
      out[name] = await runFor(c, Number(sampleMs))
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  } else if (mode === 'hold') {
    const [name, p] = args
    const c = make(name, p, true)
    await c.acquire()
    process.stdout.write('ready\n')
    const rl = readline.createInterface({ input: process.stdin })
    for await (const line of rl) {
      if (line.startsWith('r')) {
        const t = now()
        await c.release()
        process.stdout.write(t + '\n')
      } else if (line.startsWith('a')) {
        await c.acquire()
        process.stdout.write('ready\n')
      }
    }
    process.exit(0)
  } else if (mode === 'wait') {
    const [name, p] = args
    const c = make(name, p, true)
    process.stdout.write('start\n')
    await c.acquire()
    const t = now()
    process.stdout.write(t + '\n')
    await c.release()
    process.exit(0)
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
}

main().catch((e) => { console.error(`report worker (Node): ${e && e.stack ? e.stack : e}`); process.exit(1) })
