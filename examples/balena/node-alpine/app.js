// A worker that holds the update lock only around each unit of work that must not be cut
// short, and lets updates through in between. Environment: WORK_SECONDS (2) for each unit,
// INTERVAL_SECONDS (10) between units. SIGTERM (an update, `docker stop`) lets the unit in
// progress finish, then exits 0.
const { setTimeout: sleep } = require('node:timers/promises')
const { withLock } = require('update-lock')

const work = Number(process.env.WORK_SECONDS ?? 2) * 1000
const interval = Number(process.env.INTERVAL_SECONDS ?? 10) * 1000
const stop = new AbortController()
process.on('SIGTERM', () => stop.abort())

async function main() {
  while (!stop.signal.aborted) {
    try {
      await withLock(
        async (lock) => {
          console.log(`holding the update lock: ${lock.paths.join(' ')}`)
          await sleep(work) // the work an update must not interrupt
        },
        { timeout: 60_000 },
      )
      console.log('released the update lock')
    } catch (e) {
      console.log(`skipped a unit of work: ${e.message} [${e.code}]`)
    }
    await sleep(interval, undefined, { signal: stop.signal }).catch(() => {})
  }
}

main()
