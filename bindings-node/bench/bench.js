'use strict'
// Acquire+release per second from Node.js: update-lock (sync and async) against npm
// `lockfile` (lockSync/unlockSync: O_EXCL create + close, unlink) and `proper-lockfile`
// (async lock/release: mkdir of the lock path + mtime refresh timer, rmdir), like for like on
// the same lock path(s). Rounds are interleaved (the contender order rotates every round);
// per contender the median of the rounds' rates is reported, with ratios.
//
//   node bench.js DIR [ROUNDS] [SECONDS_PER_SAMPLE]
// Writes a JSON summary on stdout. The update-lock addon is the one NAPI_RS_NATIVE_LIBRARY_PATH
// names (bench/node.sh points it at the release build).
const fs = require('node:fs')
const path = require('node:path')
const ul = require('update-lock')
const lockfile = require('lockfile')
const properLockfile = require('proper-lockfile')

const dir = process.argv[2]
const ROUNDS = Number(process.argv[3] || 15)
const SAMPLE_S = Number(process.argv[4] || 0.25)
fs.mkdirSync(dir, { recursive: true })
const one = [path.join(dir, 'updates.lock')]
const two = [path.join(dir, 'updates.lock'), path.join(dir, 'resin-updates.lock')]

function contenders(paths) {
  const plain = { paths, timeout: 0 }
  const prepared = ul.prepare(plain)
  const plOpts = paths.map((p) => ({ realpath: false, lockfilePath: p, retries: 0 }))
  return {
    'update-lock lockSync (options object)': { sync: true, op: () => ul.lockSync({ paths, timeout: 0 }).release() },
    'update-lock lockSync (prepared options)': { sync: true, op: () => ul.lockSync(prepared).release() },
    'lockfile lockSync/unlockSync': {
      sync: true,
      op: () => {
        for (const p of paths) lockfile.lockSync(p)
        for (let i = paths.length - 1; i >= 0; i--) lockfile.unlockSync(paths[i])
      },
    },
    'update-lock lock() async (options object)': { op: async () => (await ul.lock(plain)).release() },
    'update-lock lock() async (prepared options)': { op: async () => (await ul.lock(prepared)).release() },
    'proper-lockfile lock/release': {
      op: async () => {
        const releases = []
        for (let i = 0; i < paths.length; i++) releases.push(await properLockfile.lock(paths[i], plOpts[i]))
        for (let i = releases.length - 1; i >= 0; i--) await releases[i]()
      },
    },
  }
}

// Runs op for about SAMPLE_S seconds; ops per second.
async function sample(c) {
  const end = process.hrtime.bigint() + BigInt(Math.round(SAMPLE_S * 1e9))
  let n = 0
  const t0 = process.hrtime.bigint()
  let t = t0
  if (c.sync) {
    while (t < end) {
      for (let i = 0; i < 50; i++) c.op()
      n += 50
      t = process.hrtime.bigint()
    }
  } else {
    while (t < end) {
      for (let i = 0; i < 10; i++) await c.op()
      n += 10
      t = process.hrtime.bigint()
    }
  }
  return n / (Number(t - t0) / 1e9)
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

async function run(label, paths) {
  const cs = contenders(paths)
  const names = Object.keys(cs)
  const rates = Object.fromEntries(names.map((n) => [n, []]))
  // Warm-up (JIT, inotify pool, page cache), then check each leaves nothing behind.
  for (const n of names) {
    await sample({ ...cs[n] })
    if (fs.readdirSync(dir).length) throw new Error(`${n} left ${fs.readdirSync(dir)}`)
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < names.length; k++) {
      const n = names[(r + k) % names.length]
      rates[n].push(await sample(cs[n]))
    }
  }
  const med = Object.fromEntries(names.map((n) => [n, median(rates[n])]))
  const spread = Object.fromEntries(names.map((n) => [n, [Math.min(...rates[n]), Math.max(...rates[n])]]))
  return { label, paths: paths.length, median: med, spread }
}

;(async () => {
  const results = [await run('one path (legacy off)', one), await run('two paths (default set)', two)]
  process.stdout.write(`${JSON.stringify({ rounds: ROUNDS, sampleSeconds: SAMPLE_S, results }, null, 2)}\n`)
  // proper-lockfile's refresh timers are gone once released; nothing keeps us alive.
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
