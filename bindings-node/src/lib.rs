//! Node.js binding of update-lock (napi-rs): the native layer.
//!
//! This crate only translates: options from JavaScript into [`LockOptions`], core handles
//! into a JavaScript class, core errors into JavaScript `Error` objects carrying the core's
//! stable code. Every lock semantic lives in the core crate. The public, idiomatic API
//! (`lock`, `lockSync`, `withLock`, AbortSignal wiring, exit-time release) is the thin
//! JavaScript wrapper in `index.js`; the TypeScript declarations of this layer
//! (`native.d.ts`) are generated from this file by `napi build`.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::{Env, JsValue};
use napi_derive::napi;
use serde_json::{Map, Number, Value};
pub mod api;
pub mod handover;
pub mod peer;
pub mod serve;

use update_lock::{
    handover_complete as core_handover_complete, status as core_status, Error as CoreError,
    ErrorCode, HandoverOptions, LockOptions, LockOwner, Reclaimed, UpdateLock,
};

/// Lock options as the JavaScript wrapper passes them (already validated there).
#[napi(object, object_to_js = false)]
pub struct LockOptionsInit {
    /// Lock exactly these paths, in this order (empty or missing: the defaults).
    pub paths: Option<Vec<String>>,
    /// With the default paths, also lock the legacy `/tmp/resin/resin-updates.lock`.
    pub legacy: Option<bool>,
    /// How long to wait in milliseconds: missing or infinite waits forever, 0 tries once.
    pub timeout_ms: Option<f64>,
    /// Take over locks left by dead holders (default true).
    pub reclaim_stale: Option<bool>,
    /// Program name written in the holder record.
    pub program: Option<String>,
    /// Shared mode (default false: exclusive).
    pub shared: Option<bool>,
    /// Called when the acquisition has to wait (who holds the lock): once when the wait
    /// starts, then every 10 s (index.js wraps the app's function so it never throws).
    #[napi(ts_type = "(info: WaitInfo) => void")]
    pub on_wait: Option<WaitHook>,
    /// Called once per hold when the balena Supervisor tries to take the lock (an update
    /// waits for the app); index.js wraps the app's function so it never throws.
    #[napi(ts_type = "(info: UpdateWaitingInfo) => void")]
    pub on_update_waiting: Option<UpdateWaitingHook>,
    /// How long an acquisition yields to a waiting update at most, in milliseconds (0 never
    /// yields; missing: the core's default).
    pub yield_to_updates_ms: Option<f64>,
}

/// What `onUpdateWaiting` is told: the Supervisor tried to take the lock while it is held.
#[napi(object)]
pub struct UpdateWaitingInfo {
    /// The held lock path.
    pub path: String,
    /// The name of the Supervisor's `lockfile` temp file seen in the lock directory.
    pub temp_name: String,
    /// When it was seen, in milliseconds since the Unix epoch (as `Date.now()`).
    pub seen_at: f64,
    /// The temp file was still there and owned by uid 65534 (false: it was gone before it
    /// could be looked at; its name alone says it was `lockfile`'s).
    pub proven: bool,
    /// One line for people.
    pub message: String,
}

/// The `onUpdateWaiting` function, called from the SDK's watch thread; weak: it never
/// keeps the process alive.
pub type UpdateWaitingHook = napi::threadsafe_function::ThreadsafeFunction<
    UpdateWaitingInfo,
    napi::bindgen_prelude::Unknown<'static>,
    UpdateWaitingInfo,
    Status,
    false,
    true,
>;

/// What `onWait` is told while an acquisition waits.
#[napi(object)]
pub struct WaitInfo {
    /// The lock path that blocks the acquisition.
    pub path: String,
    /// Who holds it (the core's holder object, as in errors).
    pub holder: Value,
    /// How long it has waited so far, in milliseconds.
    pub waited_ms: f64,
    /// One line for people: who holds it and for how long we have waited.
    pub message: String,
}

/// The `onWait` function, called from the waiting thread; weak: it never keeps the process
/// alive.
pub type WaitHook = napi::threadsafe_function::ThreadsafeFunction<
    WaitInfo,
    napi::bindgen_prelude::Unknown<'static>,
    WaitInfo,
    Status,
    false,
    true,
>;

/// Options for `status()` and `handoverComplete()`.
#[napi(object)]
pub struct InspectOptionsInit {
    /// Lock paths to look at (empty or missing: the defaults).
    pub paths: Option<Vec<String>>,
    /// With the default paths, include the legacy names.
    pub legacy: Option<bool>,
    /// Hand-over signal paths (empty or missing: the defaults).
    pub handover_paths: Option<Vec<String>>,
}

/// Lock options converted once into the core's type, so repeated locking with the same
/// options does not convert them again.
#[napi]
pub struct PreparedOptions {
    inner: LockOptions,
    /// The timeout is not zero: a held lock is waited for.
    waits: bool,
}

#[napi]
impl PreparedOptions {
    /// Convert `init` into core options. A negative or NaN timeout is a `TypeError`.
    #[napi(constructor)]
    pub fn new(init: LockOptionsInit) -> Result<Self> {
        let waits = init.timeout_ms != Some(0.0);
        Ok(PreparedOptions {
            inner: lock_options(init)?,
            waits,
        })
    }

    /// The lock paths these options name, in locking order.
    #[napi(getter)]
    pub fn paths(&self) -> Vec<String> {
        self.inner
            .lock_paths()
            .iter()
            .map(|p| path_str(p))
            .collect()
    }
}

fn lock_options(init: LockOptionsInit) -> Result<LockOptions> {
    let mut o = LockOptions::new();
    if let Some(paths) = init.paths {
        o = o.paths(paths);
    }
    if let Some(legacy) = init.legacy {
        o = o.legacy(legacy);
    }
    if let Some(ms) = init.timeout_ms {
        if ms.is_nan() || ms < 0.0 {
            return Err(Error::new(
                Status::InvalidArg,
                format!("timeout must be a number of milliseconds >= 0 or Infinity, got {ms}"),
            ));
        }
        // Infinite (or too long to represent): wait forever.
        o = o.timeout(Duration::try_from_secs_f64(ms / 1000.0).ok());
    }
    if let Some(reclaim) = init.reclaim_stale {
        o = o.reclaim_stale(reclaim);
    }
    if let Some(program) = init.program {
        o = o.program(program);
    }
    if let Some(shared) = init.shared {
        o = o.shared(shared);
    }
    if let Some(ms) = init.yield_to_updates_ms {
        if !ms.is_finite() || ms < 0.0 {
            return Err(Error::new(
                Status::InvalidArg,
                format!("yieldToUpdates must be a finite number of milliseconds >= 0, got {ms}"),
            ));
        }
        o = o.yield_to_updates(Duration::from_secs_f64(ms.min(1e12) / 1000.0));
    }
    if let Some(hook) = init.on_update_waiting {
        o = o.on_update_waiting(move |w| {
            let info = UpdateWaitingInfo {
                path: path_str(&w.path),
                temp_name: w.temp_name.clone(),
                seen_at: w
                    .seen_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0,
                proven: w.proven,
                message: w.describe(),
            };
            let _ = hook.call(
                info,
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
    }
    if let Some(hook) = init.on_wait {
        o = o.on_wait(update_lock::DEFAULT_WAIT_REPORT, move |p| {
            let info = WaitInfo {
                path: path_str(p.path),
                holder: serde_json::to_value(p.holder).unwrap_or(Value::Null),
                waited_ms: p.waited.as_secs_f64() * 1000.0,
                message: p.describe(),
            };
            let _ = hook.call(
                info,
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
    }
    Ok(o)
}

/// `options` with `owner` (index.js's async context: a `withLock` scope, or one per
/// `lock()` call) as who asks, for the core's nesting check.
fn owned(options: &PreparedOptions, owner: f64) -> LockOptions {
    options
        .inner
        .clone()
        .owner(LockOwner::from_u64(owner as u64))
}

/// A new lock owner (the core's `LockOwner`) for a JavaScript async context.
#[napi]
pub fn new_lock_owner() -> f64 {
    LockOwner::new().as_u64() as f64
}

fn handover_options(init: &InspectOptionsInit) -> HandoverOptions {
    let mut h = HandoverOptions::new();
    if let Some(paths) = &init.handover_paths {
        h = h.paths(paths.iter().map(PathBuf::from));
    }
    if let Some(legacy) = init.legacy {
        h = h.legacy(legacy);
    }
    h
}

pub(crate) fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every lock held through this binding, with the Node.js environment (main thread or
/// worker) that took it, so that `releaseAll()` at exit releases exactly that environment's
/// locks, including one whose `acquire()` finished but whose promise has not settled yet.
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Entry {
    id: u64,
    env: usize,
    lock: UpdateLock,
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keep `lock` in the registry under environment `env`; the handle to give to JavaScript.
fn register(env: usize, lock: UpdateLock) -> NativeLock {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let handle = NativeLock {
        id,
        paths: lock.paths().to_vec(),
        reclaimed: lock.reclaimed().to_vec(),
    };
    registry().push(Entry { id, env, lock });
    handle
}

fn env_key(env: &Env) -> usize {
    env.raw() as usize
}

/// A held update lock (the core's `UpdateLock`, kept in a per-process registry). It stays
/// held until `release()` or `releaseAll()` (the JavaScript wrapper calls that at exit), even
/// if this object is garbage-collected.
#[napi]
pub struct NativeLock {
    id: u64,
    paths: Vec<PathBuf>,
    reclaimed: Vec<Reclaimed>,
}

#[napi]
impl NativeLock {
    /// Release every path (idempotent). Throws `lost` when a path was no longer ours;
    /// the other paths are released all the same.
    #[napi]
    pub fn release(&self, env: &Env) -> Result<()> {
        let entry = {
            let mut reg = registry();
            let i = reg.iter().position(|e| e.id == self.id);
            i.map(|i| reg.swap_remove(i))
        };
        match entry {
            Some(mut e) => e.lock.release().map_err(|e| js_error(env, &e)),
            None => Ok(()),
        }
    }

    /// Throws `lost` when a path was deleted or replaced, `not-held` after release.
    #[napi]
    pub fn check(&self, env: &Env) -> Result<()> {
        let reg = registry();
        let result = match reg.iter().find(|e| e.id == self.id) {
            Some(e) => e.lock.check(),
            None => Err(CoreError::NotHeld {
                path: self.paths.first().cloned(),
            }),
        };
        drop(reg);
        result.map_err(|e| js_error(env, &e))
    }

    /// Whether this handle still holds the lock.
    #[napi(getter)]
    pub fn held(&self) -> bool {
        registry()
            .iter()
            .any(|e| e.id == self.id && e.lock.is_held())
    }

    /// Whether the balena Supervisor has tried to take the lock since it was taken.
    #[napi(getter)]
    pub fn update_waiting(&self) -> bool {
        registry()
            .iter()
            .any(|e| e.id == self.id && e.lock.update_waiting())
    }

    /// The paths this lock covers, in locking order.
    #[napi(getter)]
    pub fn paths(&self) -> Vec<String> {
        self.paths.iter().map(|p| path_str(p)).collect()
    }

    /// Locks taken over from dead holders while acquiring: `{ path, previous }`, where
    /// `previous` is the dead holder's record with the field names of `lockctl status --json`.
    #[napi(
        getter,
        ts_return_type = "Array<{ path: string; previous: Record<string, unknown> }>"
    )]
    pub fn reclaimed<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let list: Vec<Value> = self
            .reclaimed
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("path".into(), Value::String(path_str(&r.path)));
                m.insert(
                    "previous".into(),
                    serde_json::to_value(&r.previous).unwrap_or(Value::Null),
                );
                Value::Object(m)
            })
            .collect();
        to_js(env, Value::Array(list))
    }
}

/// Release every lock this Node.js environment (main thread or worker) still holds, ignoring
/// errors; returns how many were released. For exit handlers: it is synchronous.
#[napi]
pub fn release_all(env: &Env) -> u32 {
    let key = env_key(env);
    let mine: Vec<Entry> = {
        let mut reg = registry();
        let (mine, rest) = std::mem::take(&mut *reg)
            .into_iter()
            .partition(|e| e.env == key);
        *reg = rest;
        mine
    };
    let n = mine.len() as u32;
    for mut e in mine {
        let _ = e.lock.release();
    }
    n
}

/// How many locks this Node.js environment holds.
#[napi]
pub fn held_count(env: &Env) -> u32 {
    let key = env_key(env);
    registry().iter().filter(|e| e.env == key).count() as u32
}

/// Shared state of one cancellable `acquire`.
pub(crate) struct CancelState {
    pub(crate) cancelled: AtomicBool,
    pub(crate) notify: tokio::sync::Notify,
}

/// Cancels a pending `acquire()` (the JavaScript wrapper calls `cancel()` when the
/// caller's `AbortSignal` fires). The acquisition then rejects with code `cancelled` and
/// leaves nothing taken, even when it had just succeeded.
#[napi]
pub struct Canceller {
    pub(crate) state: Arc<CancelState>,
}

impl Default for Canceller {
    fn default() -> Self {
        Self::new()
    }
}

#[napi]
impl Canceller {
    /// A canceller that has not fired.
    #[napi(constructor)]
    pub fn new() -> Self {
        Canceller {
            state: Arc::new(CancelState {
                cancelled: AtomicBool::new(false),
                notify: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Cancel the acquisition (idempotent; from any callback).
    #[napi]
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::SeqCst);
        self.state.notify.notify_one();
    }

    /// Whether `cancel()` was called.
    #[napi(getter)]
    pub fn cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

fn cancelled_error(opts: &LockOptions, by: Option<String>) -> CoreError {
    CoreError::Cancelled {
        path: opts.lock_paths().into_iter().next().unwrap_or_default(),
        waiting_for: CoreError::WAITING_FOR_LOCK,
        by,
    }
}

/// Take the lock, blocking the calling thread while waiting (for scripts).
#[napi]
pub fn acquire_sync(env: &Env, options: &PreparedOptions, owner: f64) -> Result<NativeLock> {
    UpdateLock::acquire(&owned(options, owner))
        .map(|lock| register(env_key(env), lock))
        .map_err(|e| js_error(env, &e))
}

/// One non-blocking attempt on the calling thread (a few system calls, never a wait): the
/// lock, or `null` when it is held and `options` allow waiting (then call `acquire`). With a
/// zero timeout, a held lock throws `held` as usual; any other error throws.
#[napi]
pub fn try_acquire(env: &Env, options: &PreparedOptions, owner: f64) -> Result<Option<NativeLock>> {
    let wait_allowed = options.waits;
    match UpdateLock::try_acquire(&owned(options, owner)) {
        Ok(lock) => Ok(Some(register(env_key(env), lock))),
        Err(e) if wait_allowed && e.code() == ErrorCode::Held => Ok(None),
        Err(e) => Err(js_error(env, &e)),
    }
}

/// Take the lock without blocking the event loop: the wait runs on the tokio runtime
/// (inotify through its reactor), never on libuv's thread pool. `canceller` ends the wait
/// with code `cancelled` and nothing taken.
#[napi(ts_return_type = "Promise<NativeLock>")]
pub fn acquire<'env>(
    env: &'env Env,
    options: &PreparedOptions,
    owner: f64,
    canceller: Option<&Canceller>,
) -> Result<PromiseRaw<'env, NativeLock>> {
    let opts = owned(options, owner);
    let cancel = canceller.map(|c| c.state.clone());
    let key = env_key(env);
    let fut = async move {
        let result = match &cancel {
            None => UpdateLock::acquire_async(&opts).await,
            Some(c) => {
                let by = Some("an AbortSignal".to_string());
                if c.cancelled.load(Ordering::SeqCst) {
                    Err(cancelled_error(&opts, by))
                } else {
                    let r = tokio::select! {
                        biased;
                        _ = c.notify.notified() => Err(cancelled_error(&opts, by.clone())),
                        r = UpdateLock::acquire_async(&opts) => r,
                    };
                    match r {
                        // Cancelled while the last step was taking it: give it back.
                        Ok(mut lock) if c.cancelled.load(Ordering::SeqCst) => {
                            let _ = lock.release();
                            Err(cancelled_error(&opts, by))
                        }
                        other => other,
                    }
                }
            }
        };
        // Registered before the promise settles, so an exit in between still releases it.
        Ok(result.map(|lock| register(key, lock)))
    };
    env.spawn_future_with_callback(fut, |env, result| result.map_err(|e| js_error(env, &e)))
}

/// Look at every lock path and hand-over signal without changing anything. The result has
/// exactly the fields, names and order of `lockctl status --json`, as JavaScript objects.
///
/// Without `handoverPaths`, the hand-over signal looked at is the one core chooses for the
/// lock paths (`HandoverOptions::for_locks`), as in `lockctl status` and every binding.
#[napi]
pub fn status(options: InspectOptionsInit) -> Result<serde_json::Value> {
    let handover_paths = options.handover_paths.clone();
    let locks = lock_options(LockOptionsInit {
        paths: options.paths,
        legacy: options.legacy,
        timeout_ms: None,
        reclaim_stale: None,
        program: None,
        shared: None,
        on_wait: None,
        on_update_waiting: None,
        yield_to_updates_ms: None,
    })?;
    let handover = match handover_paths {
        Some(paths) => HandoverOptions::new().paths(paths.iter().map(PathBuf::from)),
        None => HandoverOptions::for_locks(&locks),
    };
    let report = core_status(&locks, &handover);
    serde_json::to_value(&report).map_err(|e| {
        Error::new(
            Status::GenericFailure,
            format!("cannot convert status: {e}"),
        )
    })
}

/// Write the hand-over signal (idempotent); returns the paths written.
#[napi]
pub fn handover_complete(env: &Env, options: InspectOptionsInit) -> Result<Vec<String>> {
    core_handover_complete(&handover_options(&options))
        .map(|paths| paths.iter().map(|p| path_str(p)).collect())
        .map_err(|e| js_error(env, &e))
}

/// The listen backlog for a listener that may be handed over: the kernel's limit
/// (`net.core.somaxconn`).
#[napi]
pub fn listen_backlog() -> u32 {
    update_lock::listen_backlog()
}

/// Every stable error code with its number, in numeric order: `[["held", 1], ...]`.
#[napi(ts_return_type = "Array<[string, number]>")]
pub fn error_codes() -> Vec<(String, u32)> {
    update_lock::ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), c.number()))
        .collect()
}

/// The core error as a JavaScript `Error`: `code` (stable string), `errno` (stable number),
/// `path`, plus `paths` (lost), `holder` (held, timeout), `waitedMs` (timeout), `cancelledBy`
/// (cancelled), `reason` (handover, api: the core's stable reason string) and `osErrno`
/// (permission, io) when they apply.
pub(crate) fn js_error(env: &Env, e: &CoreError) -> Error {
    match build_error(env, e) {
        Ok(obj) => Error::from(obj.to_unknown()),
        Err(_) => Error::new(Status::GenericFailure, format!("[{}] {e}", e.code())),
    }
}

pub(crate) fn build_error<'env>(env: &'env Env, e: &CoreError) -> Result<Object<'env>> {
    let mut obj = env.create_error(Error::new(Status::GenericFailure, e.to_string()))?;
    obj.set_named_property("name", "UpdateLockError")?;
    obj.set_named_property("code", e.code().as_str())?;
    obj.set_named_property("errno", e.code().number())?;
    match e.path() {
        Some(p) => obj.set_named_property("path", path_str(p))?,
        None => obj.set_named_property("path", Null)?,
    }
    if let Some(h) = e.holder() {
        // The core's canonical holder object: state, description, record, owner_uid,
        // flock_held, foreign_kind, symlink_target.
        let holder = serde_json::to_value(h).unwrap_or(Value::Null);
        obj.set_named_property("holder", to_js(env, holder)?)?;
    }
    match e {
        CoreError::Lost { paths, .. } => {
            let list: Vec<String> = paths.iter().map(|p| path_str(p)).collect();
            obj.set_named_property("paths", list)?;
        }
        CoreError::Timeout { waited, .. } => {
            obj.set_named_property("waitedMs", waited.as_secs_f64() * 1000.0)?;
        }
        CoreError::Cancelled { by, .. } => {
            obj.set_named_property("cancelledBy", by.clone())?;
        }
        CoreError::Handover { reason, .. } => {
            obj.set_named_property("reason", reason.as_str())?;
        }
        CoreError::Api { reason, .. } => {
            obj.set_named_property("reason", reason.as_str())?;
        }
        _ => {}
    }
    let os = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    if let Some(n) = os {
        obj.set_named_property("osErrno", n)?;
    }
    Ok(obj)
}

/// A JSON value as a JavaScript value; every number becomes a JS number (64-bit integers
/// such as `pid_ns` or `acquired_at_ms` fit exactly, as with `JSON.parse`).
fn to_js(env: &Env, v: Value) -> Result<Unknown<'_>> {
    env.to_js_value(&numbers_as_f64(v))
}

fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}
