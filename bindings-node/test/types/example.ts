// A small typed program against the public declarations; `tsc --noEmit` must accept it, and
// the @ts-expect-error lines prove the types are not just `any`.
import { lock, lockSync, withLock, status, handoverComplete, prepare, codes, UpdateLockError } from 'update-lock'
import type { UpdateLock, StatusReport, ErrorCode, LockOptionsInit } from 'update-lock'
import { SupervisorApi, UpdateGate } from 'update-lock'
import type { ApiReason, DeviceState, SafePoint } from 'update-lock'

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
  const state: 'free' | 'held-by-app' | 'held-by-supervisor' | 'stale' | 'foreign' | 'changing' | 'unknown' = report.locks[0].state
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

// Hand-over (issue 6).
import { takeOver, takeOverSync, HandoverServer, listenerFd } from 'update-lock'
import type { Inheritance, Peer, HandoverReason, HandoverRequest } from 'update-lock'
import * as net from 'node:net'

async function handover(): Promise<void> {
  const ac = new AbortController()
  const inh: Inheritance | null = await takeOver({ socket: '/tmp/svc/handover.sock', release: 'v2', stepTimeout: 500, abortSignal: ac.signal })
  if (inh !== null) {
    const fd: number = inh.fds[0].fd
    const state: Buffer = inh.state
    const ownPid: number = inh.predecessor.own_pid
    net.createServer().listen({ fd })
    void state, ownPid
  }
  takeOverSync({ handoverComplete: false, signalPaths: ['/tmp/a'] })
  await takeOver({ signal: ac.signal, handoverComplete: true })
  // @ts-expect-error takeOverSync is not cancellable
  takeOverSync({ signal: ac.signal })
  // @ts-expect-error handoverComplete is a boolean
  takeOverSync({ handoverComplete: 'yes' })

  const tcp = net.createServer()
  const server = HandoverServer.bind({ release: 'v1' })
  const req: HandoverRequest | null = await server.accept({ timeout: 1000 })
  if (req !== null) {
    const who: Peer = req.successor
    const peer: Peer = await server.grant(req, { state: 'x', fds: [{ label: 'http', fd: listenerFd(tcp) }] })
    void who, peer
  }
  const done: Peer | null = await server.serve(async () => ({ state: Buffer.from('s') }), { timeout: 5000, resume: () => {} })
  try {
    await takeOver()
  } catch (e) {
    if (e instanceof UpdateLockError && e.code === 'handover') {
      // `reason` is a HandoverReason for code 'handover' and an ApiReason for code 'api'.
      const reason = e.reason as HandoverReason | undefined
      void reason
    }
  }
  const api = new SupervisorApi({ timeout: 2000 })
  const device: DeviceState = await api.device()
  const gate = await UpdateGate.acquire({ api, retake: true, settleTimeout: 60000 })
  const outcome: SafePoint = await gate.safePoint()
  gate.release()
  try {
    await api.reboot({ force: false })
  } catch (e) {
    if (e instanceof UpdateLockError && e.code === 'api') {
      const why = e.reason as ApiReason | undefined
      void why
    }
  }
  void device.update_pending, outcome
  // @ts-expect-error not a reason
  const badReason: HandoverReason = 'gone'
  void done, badReason, server.socketPath, server.serving
}

void handover
