// A small typed program against the public declarations; `tsc --noEmit` must accept it, and
// the @ts-expect-error lines prove the types are not just `any`.
import { lock, lockSync, withLock, status, handoverComplete, prepare, codes, UpdateLockError } from 'update-lock'
import type { UpdateLock, StatusReport, ErrorCode, LockOptionsInit } from 'update-lock'

async function main(): Promise<number> {
  const ac = new AbortController()
  const opts: LockOptionsInit = { paths: ['/tmp/svc/updates.lock'], timeout: 30_000, signal: ac.signal }
  const held: UpdateLock = await lock(opts)
  const paths: string[] = held.paths
  held.check()
  held.release()

  {
    await using scoped = await lock({ timeout: 0 })
    const stillHeld: boolean = scoped.held
    void stillHeld
  }

  const n: number = await withLock(async (l) => l.paths.length, prepare({ legacy: false }))
  const s = lockSync({ paths: '/tmp/svc/updates.lock', timeout: 0, reclaimStale: false })
  s.release()

  const report: StatusReport = status({ paths })
  const state: 'free' | 'held-by-app' | 'held-by-supervisor' | 'stale' | 'foreign' | 'changing' = report.locks[0].state
  const pid: number | undefined = report.locks[0].holder?.pid
  const written: string[] = handoverComplete()

  try {
    await lock({ timeout: 0 })
  } catch (e) {
    if (e instanceof UpdateLockError) {
      const code: ErrorCode = e.code
      const num: number = codes[code]
      const who: string | undefined = e.holder?.record?.program
      const owner: number | null | undefined = e.holder?.owner_uid
      // @ts-expect-error the record is nested under `record`, not flattened
      const flat = e.holder?.program
      void owner, flat
      console.log(code, num, who, e.path, e.message)
    }
  }

  // @ts-expect-error timeout is a number of milliseconds
  await lock({ timeout: '5s' })
  // @ts-expect-error unknown option
  await lock({ timeOut: 5 })
  // @ts-expect-error lockSync takes no signal
  lockSync({ signal: ac.signal })
  // @ts-expect-error not a code
  const bad: ErrorCode = 'busy'

  void state, pid, written, bad
  return n
}

void main
