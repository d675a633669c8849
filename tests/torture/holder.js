'use strict'
// Node.js torture holder (see holder.py).
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { lockSync } = require('update-lock')

const [d, marker, hold] = process.argv.slice(2)
const paths = [path.join(d, 'updates.lock'), path.join(d, 'resin-updates.lock')]
const inside = path.join(__dirname, 'inside.py')
const PY = process.env.PYTHON3 || 'python3'
for (;;) {
  console.log('acquiring')
  let lock
  try {
    lock = lockSync({ paths, timeout: 10000 })
  } catch (e) {
    console.log(`err ${e.code}`)
    continue
  }
  if (lock.reclaimed.length) console.log(`reclaimed ${lock.reclaimed.length}`)
  spawnSync(PY, [inside, marker, paths[0], hold], { stdio: ['ignore', 'inherit', 'inherit'] })
  let lost = false
  try {
    lock.check()
  } catch (e) {
    if (e.code !== 'lost') throw e
    lost = true
  }
  try {
    lock.release()
  } catch (e) {
    if (e.code !== 'lost') throw e
    lost = true
  }
  console.log(lost ? 'done lost' : 'done ok')
  // A gap the Supervisor can take the lock in.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.random() * 400)
}
