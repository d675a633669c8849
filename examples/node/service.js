'use strict'
// A small device service: it applies configuration to a piece of hardware attached to the
// device (a multi-step write that must not be cut off by an application update or a host OS
// reboot), so each apply runs inside withLock(). Everything else (HTTP, status) runs unlocked.
//
//   POST /apply   body = the new configuration; written to $DEVICE_PATH under the update lock
//   GET  /status  what the Supervisor and the host OS reboot see right now (lockctl's JSON)
//
// Environment: PORT (default 8080; 0 = any), DEVICE_PATH (default /data/device.conf),
// LOCK_TIMEOUT_MS (how long an apply waits for the lock, default 60000), UPDATE_LOCK_PATHS
// (space-separated lock paths; leave unset on a device: the default is the Supervisor's
// $BALENA_APP_LOCK_PATH plus the legacy /tmp/resin/resin-updates.lock).
const fs = require('node:fs/promises')
const http = require('node:http')
const path = require('node:path')
const { withLock, status, UpdateLockError } = require('update-lock')

const PORT = Number(process.env.PORT ?? 8080)
const DEVICE_PATH = process.env.DEVICE_PATH ?? '/data/device.conf'
const LOCK_TIMEOUT_MS = Number(process.env.LOCK_TIMEOUT_MS ?? 60000)
const LOCK_PATHS = process.env.UPDATE_LOCK_PATHS?.split(/\s+/).filter(Boolean)

// Aborted on SIGTERM (docker stop, an update): applies still waiting for the lock give up;
// one already inside its critical section finishes first.
const shutdown = new AbortController()
let running = Promise.resolve()

async function apply(config) {
  return withLock(
    async (lock) => {
      // Step 1: stage the new configuration next to the old one.
      const staged = path.join(path.dirname(DEVICE_PATH), `.${path.basename(DEVICE_PATH)}.staged`)
      await fs.writeFile(staged, config)
      // Step 2: push it to the hardware (here: write the device node / file).
      await fs.writeFile(DEVICE_PATH, config)
      // Still ours? The Supervisor's lock override deletes app locks; then stop here.
      lock.check()
      // Step 3: commit.
      await fs.rm(staged, { force: true })
      return { bytes: Buffer.byteLength(config) }
    },
    { paths: LOCK_PATHS, timeout: LOCK_TIMEOUT_MS, signal: shutdown.signal },
  )
}

function reply(res, code, body) {
  res.writeHead(code, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body) + '\n')
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === 'GET' && req.url === '/status') return reply(res, 200, status({ paths: LOCK_PATHS }))
    if (req.method === 'POST' && req.url === '/apply') {
      let body = ''
      for await (const chunk of req) body += chunk
      const job = apply(body)
      running = job.catch(() => {})
      return reply(res, 200, { ok: true, ...(await job) })
    }
    reply(res, 404, { error: 'not found' })
  } catch (e) {
    if (e?.name === 'AbortError') {
      // Our shutdown signal ended the wait for the lock (it rejects with the signal's
      // reason, as fetch() does): nothing was taken.
      return reply(res, 503, { error: 'cancelled', message: 'the service is shutting down' })
    }
    if (e instanceof UpdateLockError) {
      // held / timeout: an update is in progress; lost: the lock was overridden mid-apply.
      // The message says who holds it and what to do.
      console.error(`apply failed: [${e.code}] ${e.message}`)
      return reply(res, 503, { error: e.code, message: e.message })
    }
    console.error(e)
    reply(res, 500, { error: String(e) })
  }
})

process.on('SIGTERM', async () => {
  console.log('SIGTERM: finishing the running apply, then exiting')
  shutdown.abort()
  server.close()
  await running
  process.exit(0)
})

server.listen(PORT, () => console.log(`listening ${server.address().port}`))
