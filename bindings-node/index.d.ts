// Public API of the `update-lock` package (the wrapper in index.js). The native layer's
// declarations are generated from the Rust source by napi-rs: native.d.ts.

/** Options for `lock`, `lockSync` and `withLock`. */
export interface LockOptionsInit {
  /**
   * Lock exactly these paths, in this order (a string is one path). Default: the
   * Supervisor's `$BALENA_APP_LOCK_PATH` (else `$RESIN_APP_LOCK_PATH`, else
   * `/tmp/balena/updates.lock`) plus the legacy `/tmp/resin/resin-updates.lock`.
   */
  paths?: string | readonly string[]
  /** With the default paths, also lock the legacy `/tmp/resin/resin-updates.lock` (default true). */
  legacy?: boolean
  /**
   * How long to wait, in milliseconds: `0` tries once (fails with `held`), a number waits up
   * to that long (fails with `timeout`), `undefined`/`null`/`Infinity` (default) wait forever.
   */
  timeout?: number | null
  /** Take over locks left by dead holders (our record, nobody holds its flock). Default true. */
  reclaimStale?: boolean
  /** Program name written in the holder record (default: the script's file name). */
  program?: string
  /**
   * Shared mode (default false): other shared holders of the app (other `lock()` calls,
   * processes, containers of the same uid) hold it at the same time, and the last one out
   * removes it. The Supervisor and the reboot still see it held; an exclusive holder,
   * another uid's lock and the Supervisor's are waited for.
   */
  shared?: boolean
  /**
   * Called when the acquisition has to wait: who holds the lock, once when the wait starts
   * and every 10 s while it goes on. With `lockSync` it runs once the call has returned (the
   * thread is blocked meanwhile). An exception it throws becomes a process warning.
   */
  onWait?: (info: WaitInfo) => void
  /**
   * Called once per hold when the balena Supervisor tries to take the lock while it is held
   * (an update, or a reboot it needs, waits for the app): release when you can. Runs on the
   * event loop, soon after the SDK's watch thread saw the attempt. An exception it throws
   * becomes a process warning. `UpdateLock.updateWaiting` says the same without a function.
   */
  onUpdateWaiting?: (info: UpdateWaitingInfo) => void
  /**
   * After the Supervisor was seen trying to take the lock (by this process, or by another of
   * the app that left the dated `update-waiting` note), how many milliseconds an acquisition
   * waits at most while the lock is free, so the update gets in first; it ends when the
   * Supervisor's lock appears. 0 never yields; default `$UPDATE_LOCK_YIELD_TO_UPDATES`
   * seconds, else 60000. It counts against `timeout` (trying once fails with `held` while it
   * would yield). A held lock is never taken away by this.
   */
  yieldToUpdates?: number
  /**
   * Cancels a pending `lock()`: it rejects with the signal's `reason` (an `AbortError`
   * `DOMException` by default, as `fetch()` does), nothing taken. Not for `lockSync`.
   */
  signal?: AbortSignal
}

/** What `onUpdateWaiting` is told: the Supervisor tried to take the lock while it is held. */
export interface UpdateWaitingInfo {
  /** The held lock path. */
  path: string
  /** The name of the Supervisor's `lockfile` temp file seen in the lock directory. */
  tempName: string
  /** When it was seen, in milliseconds since the Unix epoch (as `Date.now()`). */
  seenAt: number
  /** The temp file was still there and owned by uid 65534 (false: it was already gone). */
  proven: boolean
  /** One line for people. */
  message: string
}

/** What `onWait` is told while an acquisition waits. */
export interface WaitInfo {
  /** The lock path that blocks the acquisition. */
  path: string
  /** Who holds it (the core's holder object, as in errors). */
  holder: HolderDetails
  /** How long it has waited so far, in milliseconds. */
  waitedMs: number
  /** One line for people: who holds it and for how long we have waited. */
  message: string
}

/** Lock options validated and converted once by `prepare()`; pass them instead of a plain object. */
export declare class LockOptions {
  private constructor()
  /** The lock paths, in locking order. */
  readonly paths: string[]
  /** The AbortSignal given with the options, if any. */
  readonly signal: AbortSignal | undefined
}

/** The stable error codes of the core, the same in every binding and in `lockctl`. */
export type ErrorCode =
  | 'held'
  | 'timeout'
  | 'lost'
  | 'permission'
  | 'supervisor-uid'
  | 'invalid-path'
  | 'io'
  | 'cancelled'
  | 'not-held'
  | 'handover'
  | 'api'
  /** The lock could not be looked at: held or free is unknown; nothing was changed. */
  | 'unknown'
  /**
   * The same `withLock()` scope (or thread, for `lockSync`) already holds these paths and
   * the two cannot share: it would wait for itself. Reuse the lock, or use `shared: true`.
   */
  | 'already-held'

/**
 * Why a Supervisor API call failed (`err.reason` with code `api`); stable strings, the same
 * in every binding and in `lockctl`. A refusal because an update lock is held (HTTP 423) has
 * code `held` instead.
 */
export type ApiReason =
  | 'not-configured'
  | 'unreachable'
  | 'timeout'
  | 'unauthorized'
  | 'http-status'
  | 'bad-response'

/**
 * Why a hand-over did not happen (`err.reason` with code `handover`); stable strings, the
 * same in every binding and in `lockctl`.
 */
export type HandoverReason =
  | 'stalled'
  | 'peer-gone'
  | 'taken'
  | 'uid'
  | 'version'
  | 'protocol'
  | 'refused'
  | 'already-serving'
  | 'finished'
  | 'too-large'
  | 'blocked'

/** The holder record written into every app lock file (field names of `lockctl status --json`). */
export interface HolderRecord {
  version: number
  pid: number
  pid_ns: number | null
  boot_id: string | null
  start_time: number | null
  uid: number
  hostname: string
  program: string
  acquired_at_ms: number | null
  same_pid_namespace: boolean
  same_process: boolean
}

/** What occupies a lock path that update-lock did not create. */
export type ForeignKind =
  | 'empty-file'
  | 'lockfile-format'
  | 'unknown-content'
  | 'directory'
  | 'symlink'
  | 'fifo'
  | 'socket'
  | 'device'

/** The state of one lock path (as in `lockctl status --json`). */
/** `unknown`: the path could not be looked at (`error` says why); never read it as free. */
export type LockState = 'free' | 'held-by-app' | 'held-by-supervisor' | 'stale' | 'foreign' | 'changing' | 'unknown'

/**
 * Who holds the lock, on `held` and `timeout` errors: the core's canonical holder object,
 * the same in every binding (Python: `e.holder`), keys in this order.
 *
 * | `state` | `record` | `owner_uid` | `flock_held` | `foreign_kind`, `symlink_target` |
 * | --- | --- | --- | --- | --- |
 * | `held-by-app` | the record | `record.uid` | `true` | `null` |
 * | `stale` | the record | `record.uid` | `false` | `null` |
 * | `held-by-supervisor` | `null` | `65534` | `false` | `null` |
 * | `foreign` | `null` | owner of the path | as observed | what it is; where a symlink points |
 * | `changing` | `null` | `null` | `null` | `null` |
 * | `update-waiting` | `null` | `null` | `null` | `null` |
 */
export interface HolderDetails {
  /**
   * As in the status JSON (`held-by-app`, `held-by-supervisor`, `stale`, `foreign`,
   * `changing`), or `update-waiting`: free, but the acquisition lets a waiting update in
   * first (`yieldToUpdates`).
   */
  state: Exclude<LockState, 'free'> | 'update-waiting'

  /** The core's phrase, e.g. "held by another app (pid 7, ...)". */
  description: string
  /** The holder record, for `held-by-app` and `stale`. */
  record: HolderRecord | null
  /** The uid that owns the lock: the record's uid, 65534 for the Supervisor, the path's owner for `foreign`. */
  owner_uid: number | null
  /** Someone holds flock(2) on it (false for the Supervisor's `lockfile`). */
  flock_held: boolean | null
  /** What a `foreign` path is. */
  foreign_kind: ForeignKind | null
  /** Where a `foreign` symlink points. */
  symlink_target: string | null
}

/** Every failure of update-lock. */
export declare class UpdateLockError extends Error {
  name: 'UpdateLockError'
  /** The core's stable code. */
  code: ErrorCode
  /** The code's stable number (1..12, docs/error-codes.md), see `codes`. */
  errno: number
  /** The path the error is about (the first one for `lost`), or null. */
  path: string | null
  /** `lost`: every path that is no longer ours. */
  paths?: string[]
  /** `held`, `timeout`: who holds it. */
  holder?: HolderDetails
  /** `timeout`: how long it waited, in milliseconds. */
  waitedMs?: number
  /** `cancelled`: what cancelled the wait (e.g. "an AbortSignal"). */
  cancelledBy?: string | null
  /** `permission`, `io`: the operating system's errno. */
  osErrno?: number
  /** `cancelled` by an AbortSignal: the signal's reason. */
  cause?: unknown
  /** `handover`: why the hand-over did not happen; `api`: why the API call failed. */
  reason?: HandoverReason | ApiReason
}

/** A taken-over lock left by a dead holder. */
export interface Reclaimed {
  path: string
  previous: HolderRecord
}

/**
 * A held update lock: every lock path exists (the Supervisor defers application updates)
 * and is flocked (the host OS update reboot waits). Release with `release()`; held locks are
 * also released when the process exits (normally, uncaught exception, SIGINT/SIGTERM without
 * an app handler). Losing the last reference does not release it.
 */
export declare class UpdateLock {
  private constructor()
  /** Whether this handle still holds the lock. */
  readonly held: boolean
  /** The paths this lock covers, in locking order. */
  readonly paths: string[]
  /**
   * Whether the balena Supervisor has tried to take the lock since it was taken: an update
   * waits for this app (see `onUpdateWaiting`). False after release.
   */
  readonly updateWaiting: boolean
  /** Locks taken over from dead holders while acquiring. */
  readonly reclaimed: Reclaimed[]
  /** Release (synchronous, idempotent). Throws `lost` if a path was no longer ours. */
  release(): void
  /** Throws `lost` if a path was deleted or replaced, `not-held` after release. */
  check(): void
  [Symbol.dispose](): void
  [Symbol.asyncDispose](): Promise<void>
}

/** Take the lock without blocking the event loop. */
export declare function lock(options?: LockOptionsInit | LockOptions): Promise<UpdateLock>

/** Take the lock, blocking the thread while waiting (scripts; give a `timeout`). */
export declare function lockSync(options?: Omit<LockOptionsInit, 'signal'> | LockOptions): UpdateLock

/** Run `fn` inside the lock; always released afterwards, even if `fn` throws. */
export declare function withLock<T>(
  fn: (lock: UpdateLock) => T | PromiseLike<T>,
  options?: LockOptionsInit | LockOptions,
): Promise<Awaited<T>>

/** Validate and convert options once, for hot paths. */
export declare function prepare(options?: LockOptionsInit): LockOptions

/** Options for `status()`. */
export interface StatusOptions {
  /** Lock paths to look at (default: the Supervisor's paths, as for `lock`). */
  paths?: string | readonly string[]
  /** With the default paths, include the legacy names (default true). */
  legacy?: boolean
  /** Hand-over signal paths (default: beside the first of `paths`, else the Supervisor's). */
  handoverPaths?: string | readonly string[]
}

/** One lock path as both readers see it. */
export interface PathStatus {
  path: string
  state: LockState
  /** The Supervisor would defer application updates (the path exists). */
  blocks_app_updates: boolean
  /** The host OS update reboot would wait (named updates.lock, flock held). */
  blocks_host_reboot: boolean
  flock_held: boolean
  owner_uid: number | null
  holder: HolderRecord | null
  foreign_kind: ForeignKind | null
  symlink_target: string | null
  message: string
  error: string | null
}

/** The report of `lockctl status --json` (schema 1), field for field. */
export interface StatusReport {
  schema: 1
  locks: PathStatus[]
  handover: { path: string; pending: boolean }[]
  blocks_app_updates: boolean
  blocks_host_reboot: boolean
}

/** What each reader of the lock sees right now (nothing is changed). */
export declare function status(options?: StatusOptions): StatusReport

/** Options for `handoverComplete()`. */
export interface HandoverOptions {
  /** Signal paths (default: `$BALENA_SERVICE_HANDOVER_COMPLETE_PATH` etc., plus legacy ones). */
  paths?: string | readonly string[]
  /** With the default paths, also write the legacy signals (default true). */
  legacy?: boolean
}

/** Tell the Supervisor the hand-over is complete; returns the paths written. Idempotent. */
export declare function handoverComplete(options?: HandoverOptions): string[]

/** Every code and its stable number: `{ held: 1, timeout: 2, ... }`. */
export declare const codes: Readonly<Record<ErrorCode, number>>

// ---------------------------------------------------------------------------------------
// Hand-over between two releases (`io.balena.update.strategy: hand-over`)

/** What one side of a hand-over knows about the other (snake_case like the core's data). */
export interface Peer {
  /** The peer's pid as the kernel reports it (0 when it is in another PID namespace). */
  pid: number
  /** The pid the peer reports for itself, in its own PID namespace. */
  own_pid: number
  /** The peer's uid. */
  uid: number
  /** The peer's release name (may be empty). */
  release: string
  /** The peer's program name. */
  program: string
  /** The protocol version both sides agreed on. */
  protocol: number
}

/** Options for `takeOver` / `takeOverSync`. */
export interface TakeOverOptions {
  /** The hand-over socket (default: `handover.sock` beside the handover-complete file, i.e. `/tmp/balena/handover.sock`). */
  socket?: string
  /** How this version names itself (release name or version). */
  release?: string
  /** Timeout of one protocol step, in milliseconds (default 5000). */
  stepTimeout?: number
  /** How long to wait for the old version's release step and its state, in ms (default 10000). */
  releaseTimeout?: number
  /** The largest state accepted, in bytes (default 1 MiB). */
  maxState?: number
  /** Write the handover-complete signal after a take-over (default true). */
  handoverComplete?: boolean
  /**
   * Cancels a pending `takeOver()`: rejects with the signal's `reason`, nothing taken. Not for
   * `takeOverSync`. (A boolean here is the deprecated name of `handoverComplete`.)
   */
  signal?: AbortSignal | boolean
  /** Write exactly these handover-complete files (default: `handover-complete` beside an explicit socket, else the Supervisor's). */
  signalPaths?: string | readonly string[]
  /** Program name shown to the old version (default: the script's file name). */
  program?: string
  /** Other uids the old version may run as. Default: only ours and root; a process of another uid serving at the socket (maybe an impostor) is refused with reason `uid`. */
  peerUids?: number | readonly number[]
  /** @deprecated Use `signal`. */
  abortSignal?: AbortSignal
}

/** A descriptor received from the old version. The app owns `fd`: close it or give it to `net.Server.listen({ fd })`. */
export interface InheritedFd {
  /** The label the old version gave it (e.g. `"http"`). */
  label: string
  /** The descriptor number (close-on-exec set). */
  fd: number
  /** Whether it is a socket (else a file, pipe or device). */
  isSocket: boolean
}

/** What the new version got from the old one. */
export interface Inheritance {
  predecessor: Peer
  state: Buffer
  fds: InheritedFd[]
  /** The handover-complete files written. */
  signalled: string[]
  /** Why writing the handover-complete signal failed (the hand-over itself succeeded), or null. */
  signalError: UpdateLockError | null
}

/** Take over from the old version without blocking the event loop; `null` when there is none (first start, stale socket). */
export declare function takeOver(options?: TakeOverOptions): Promise<Inheritance | null>

/** `takeOver`, blocking the thread (scripts). */
export declare function takeOverSync(options?: Omit<TakeOverOptions, 'abortSignal' | 'signal'> & { signal?: boolean }): Inheritance | null

/**
 * The listen backlog to give a listener that may be handed over: the kernel's limit
 * (`net.core.somaxconn`). Use it as `server.listen({ port, backlog: listenBacklog() })`:
 * connections that arrive during a switch then wait instead of being dropped.
 */
export declare function listenBacklog(): number

/** The descriptor number of a listening `net.Server`, to hand it over. */
export declare function listenerFd(server: import('node:net').Server): number

/** Options for `HandoverServer.bind`. */
export interface HandoverServerOptions {
  /** The hand-over socket (default as for `takeOver`). */
  socket?: string
  /** How this version names itself. */
  release?: string
  /** Timeout of one protocol step, in milliseconds (default 5000). */
  stepTimeout?: number
  /** The largest state sent, in bytes (default 1 MiB). */
  maxState?: number
  /** Program name shown to the successor. */
  program?: string
  /** Other uids a successor may run as. Default: only ours and root (a successor is who SO_PEERCRED says it is). */
  peerUids?: number | readonly number[]
}

/** A descriptor to hand over (a copy is sent; the app keeps its own). */
export interface GrantFd {
  label: string
  fd: number
}

/** What to send to the successor. */
export interface GrantOptions {
  /** The app-defined state (default empty). */
  state?: Buffer | Uint8Array | string
  /** Descriptors to send (at most 64). */
  fds?: readonly GrantFd[]
}

/** A successor waiting for an answer. */
export declare class HandoverRequest {
  private constructor()
  /** Who asks to take over. */
  readonly successor: Peer
  /** Not answered yet. */
  readonly pending: boolean
}

/** The old version's side of the hand-over. */
export declare class HandoverServer {
  private constructor()
  /** Start serving on the socket (throws `handover`/`already-serving` when another process does). */
  static bind(options?: HandoverServerOptions): HandoverServer
  /** Whether it still serves (not handed over, not closed). */
  readonly serving: boolean
  /** The socket path. */
  readonly socketPath: string
  /** Wait for a successor; `null` when `timeout` (ms) ran out; rejects with the signal's `reason` when `signal` aborts. */
  accept(options?: { timeout?: number; signal?: AbortSignal; /** @deprecated Use `signal`. */ abortSignal?: AbortSignal }): Promise<HandoverRequest | null>
  /** Send state and fds, wait for the acknowledgement; resolves to the successor (the server stopped serving). */
  grant(request: HandoverRequest, options?: GrantOptions): Promise<Peer>
  /** Turn the successor away (reason `refused`); the server keeps serving. */
  refuse(request: HandoverRequest, message?: string): void
  /** Stop serving without handing over (idempotent). */
  close(): void
  /** accept -> `release(successor)` -> grant until handed over (the successor), `timeout` ran out or the server was closed (`null`). A failed grant calls `resume(error)` and serving goes on; a release step that throws refuses the successor and rethrows. */
  serve(
    release: (successor: Peer) => GrantOptions | void | PromiseLike<GrantOptions | void>,
    options?: {
      timeout?: number
      resume?: (error: unknown) => unknown
      signal?: AbortSignal
      /** @deprecated Use `signal`. */
      abortSignal?: AbortSignal
    },
  ): Promise<Peer | null>
  [Symbol.dispose](): void
}

/** What `GET /v1/device` says (the field names of `lockctl device --json`). */
export interface DeviceState {
  status: string | null
  /** An update is waiting to be applied. */
  update_pending: boolean
  /** Its images are downloaded: with `update_pending`, the moment to let it in. */
  update_downloaded: boolean
  update_failed: boolean
  /** Percent, while downloading. */
  download_progress: number | null
  commit: string | null
  os_version: string | null
  supervisor_version: string | null
  ip_address: string | null
}

export interface SupervisorApiOptions {
  /** Default `$BALENA_SUPERVISOR_ADDRESS`. */
  address?: string
  /** Default `$BALENA_SUPERVISOR_API_KEY`. */
  key?: string
  /** Milliseconds each call may take (default 10000). */
  timeout?: number
}

/** A client of the Supervisor API; rejects with code `api` (see `ApiReason`) or `held` (HTTP 423). */
export declare class SupervisorApi {
  constructor(options?: SupervisorApiOptions)
  readonly address: string
  /** Milliseconds each call may take. */
  readonly timeout: number
  ping(): Promise<void>
  device(): Promise<DeviceState>
  update(options?: { force?: boolean }): Promise<void>
  reboot(options?: { force?: boolean }): Promise<void>
  restartService(service: string, options?: { appId?: number; force?: boolean }): Promise<void>
}

export interface UpdateGateOptions extends Omit<LockOptionsInit, 'signal'> {
  /** Default: `new SupervisorApi()` from the environment. */
  api?: SupervisorApi
  /** Take the lock again after the update. */
  retake?: boolean
  /** Longest wait for the update to finish before retaking, ms (default 600000). */
  settleTimeout?: number
  /** How often to ask while waiting, ms (default 2000). */
  pollInterval?: number
}

export type SafePoint = 'no-update' | 'released' | 'retaken' | 'retaken-unsettled'

/** The update lock, held until a downloaded update waits and the app is at a safe point. */
export declare class UpdateGate {
  private constructor()
  static acquire(options?: UpdateGateOptions): Promise<UpdateGate>
  readonly api: SupervisorApi
  /** Let a downloaded update in at this safe point; rejects (keeping the lock) when the API cannot be asked. */
  safePoint(): Promise<SafePoint>
  updateWaiting(): Promise<boolean>
  readonly held: boolean
  release(): void
}
