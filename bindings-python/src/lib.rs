//! Python binding of update-lock: the native module `update_lock._update_lock`.
//!
//! It only translates. Every lock semantic (paths, all-or-nothing, waiting, stale reclaim,
//! release checks, fork safety) is the core crate's; this module converts options, wraps
//! `UpdateLock` in a Python object, turns core errors into the exception classes defined in
//! `update_lock/_errors.py`, releases the GIL while a call waits and checks for Python
//! signals (Ctrl-C) during the wait. The pure-Python package `update_lock` adds the idioms
//! (decorator, asyncio, dataclasses). Hand-over (`handover_take`, `HandoverServer`) is the
//! core's rendezvous: this module passes descriptors as plain numbers and the Python layer
//! turns them into `socket.socket` / file objects.
#![deny(missing_docs)]

mod api;
mod serve;

use std::os::fd::{BorrowedFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use update_lock::{
    CancelToken, Error, ErrorCode, HandoverFailure, HandoverOptions, HandoverRequest,
    HandoverServer, LockOptions, LockOwner, PeerInfo, RendezvousOptions, ServeError, UpdateLock,
    WaitControl,
};

/// How often a waiting call looks for pending Python signals (Ctrl-C): well inside the
/// 100 ms the API promises.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// `update_lock._errors._from_native`, looked up once.
static ERROR_FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A path as a Python `str` (file-system encoding, surrogate escapes for odd bytes, as
/// `os.fsdecode` does).
fn py_path<'py>(py: Python<'py>, p: &Path) -> Bound<'py, PyAny> {
    match p.to_str() {
        Some(s) => PyString::new(py, s).into_any(),
        None => p
            .as_os_str()
            .into_pyobject(py)
            .map(Bound::into_any)
            .unwrap_or_else(|_| PyString::new(py, &p.to_string_lossy()).into_any()),
    }
}

fn py_paths<'py>(py: Python<'py>, paths: &[PathBuf]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, paths.iter().map(|p| py_path(py, p)))
}

/// Build the Python exception for a core error (class chosen by code in `_errors.py`).
pub(crate) fn build_exception(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let factory = ERROR_FACTORY.get_or_try_init(py, || {
        py.import("update_lock._errors")?
            .getattr("_from_native")
            .map(Bound::unbind)
    })?;
    let mut extra = serde_json::Map::new();
    if let Some(h) = e.holder() {
        // The core's canonical holder object (`update_lock.Holder` mirrors it).
        extra.insert(
            "holder".into(),
            serde_json::to_value(h).unwrap_or(serde_json::Value::Null),
        );
    }
    match e {
        Error::Timeout { waited, .. } => {
            extra.insert("waited".into(), waited.as_secs_f64().into());
        }
        Error::Lost { paths, .. } => {
            let list = paths
                .iter()
                .map(|p| serde_json::Value::from(p.to_string_lossy().into_owned()))
                .collect();
            extra.insert("paths".into(), serde_json::Value::Array(list));
        }
        Error::Permission {
            source, operation, ..
        }
        | Error::Io {
            source, operation, ..
        } => {
            extra.insert("operation".into(), (*operation).into());
            if let Some(n) = source.raw_os_error() {
                extra.insert("errno".into(), n.into());
            }
        }
        Error::Cancelled { by: Some(by), .. } => {
            extra.insert("by".into(), by.clone().into());
        }
        Error::Handover { reason, .. } => {
            extra.insert("reason".into(), reason.as_str().into());
        }
        Error::Api { reason, .. } => {
            extra.insert("reason".into(), reason.as_str().into());
        }
        _ => {}
    }
    let code = e.code();
    let path = e.path().map(|p| py_path(py, p));
    let exc = factory.bind(py).call1((
        code.as_str(),
        code.number(),
        e.to_string(),
        path,
        pythonize::pythonize(py, &serde_json::Value::Object(extra))?,
    ))?;
    Ok(PyErr::from_value(exc))
}

/// A core error as a Python exception (if even building that fails, that failure).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    build_exception(py, &e).unwrap_or_else(|err| err)
}

/// Whether the calling thread is the process's main thread, the one Python runs signal
/// handlers on.
fn on_main_thread() -> bool {
    // SAFETY: getpid and gettid have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// Take the lock with the GIL released. On the main thread, pending Python signals are
/// checked every [`SIGNAL_CHECK`]: a handler that raises (Ctrl-C's `KeyboardInterrupt`)
/// ends the wait with nothing taken and its exception is returned as the outer `Err`.
fn acquire_detached(
    py: Python<'_>,
    opts: &LockOptions,
    cancel: Option<CancelToken>,
    check_signals: bool,
) -> PyResult<Result<UpdateLock, Error>> {
    let mut interrupted: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut ctl = WaitControl::new();
        if let Some(token) = cancel {
            ctl = ctl.cancel_on(token);
        }
        if check_signals {
            let interrupted = &mut interrupted;
            ctl = ctl.check_every(SIGNAL_CHECK, move || {
                if !on_main_thread() {
                    return Ok(());
                }
                match Python::attach(|py| py.check_signals()) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        *interrupted = Some(e);
                        Err(Error::Cancelled {
                            path: PathBuf::new(),
                            waiting_for: Error::WAITING_FOR_LOCK,
                            by: Some("a Python signal handler".into()),
                        })
                    }
                }
            });
        }
        UpdateLock::acquire_with(opts, ctl)
    });
    match interrupted {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// `timeout` in seconds (`None` or infinity: wait forever, 0: try once).
fn timeout_from(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_infinite() && s > 0.0 => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be None (wait forever), 0 (try once) or a positive number of seconds, not {s}"
            ))
        }),
    }
}

/// Core lock options from the arguments of `lock()` (shared by `NativeLock` and the gate).
fn lock_options(
    paths: Option<Vec<PathBuf>>,
    timeout: Option<f64>,
    legacy: bool,
    reclaim_stale: bool,
    program: Option<String>,
    shared: bool,
) -> PyResult<LockOptions> {
    let mut opts = LockOptions::new()
        .legacy(legacy)
        .timeout(timeout_from(timeout)?)
        .reclaim_stale(reclaim_stale)
        .shared(shared);
    if let Some(p) = paths {
        opts = opts.paths(p);
    }
    if let Some(p) = program {
        opts = opts.program(p);
    }
    Ok(opts)
}

/// The hooks and the yield of `lock()`:
/// * `on_wait(path, holder_dict, waited_seconds, message)`: called (with the GIL taken back)
///   when a wait starts and every 10 s;
/// * `on_update_waiting(path, temp_name, seen_unix_seconds, proven, message)`: called once
///   per hold, from the SDK's watch thread, when the Supervisor tries to take the lock;
/// * `yield_to_updates`: seconds, `None` for the core's default.
///
/// An exception a hook raises is reported as unraisable; nothing else changes.
fn with_hooks(
    mut opts: LockOptions,
    on_wait: Option<Py<PyAny>>,
    on_update_waiting: Option<Py<PyAny>>,
    yield_to_updates: Option<f64>,
) -> PyResult<LockOptions> {
    if let Some(y) = yield_to_updates {
        if !y.is_finite() || y < 0.0 {
            return Err(PyValueError::new_err(format!(
                "yield_to_updates must be a finite number of seconds, 0 or more (0 never yields), not {y}"
            )));
        }
        opts = opts.yield_to_updates(Duration::from_secs_f64(y.min(1e9)));
    }
    if let Some(hook) = on_update_waiting {
        opts = opts.on_update_waiting(move |w| {
            // Not during interpreter shutdown: then nobody is left to tell.
            Python::try_attach(|py| {
                let seen = w
                    .seen_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                let called = hook.bind(py).call1((
                    py_path(py, &w.path),
                    w.temp_name.as_str(),
                    seen,
                    w.proven,
                    w.describe(),
                ));
                if let Err(e) = called {
                    e.write_unraisable(py, None);
                }
            });
        });
    }
    if let Some(hook) = on_wait {
        opts = opts.on_wait(update_lock::DEFAULT_WAIT_REPORT, move |p| {
            Python::attach(|py| {
                let called = pythonize::pythonize(py, p.holder)
                    .map_err(PyErr::from)
                    .and_then(|holder| {
                        hook.bind(py).call1((
                            py_path(py, p.path),
                            holder,
                            p.waited.as_secs_f64(),
                            p.describe(),
                        ))
                    });
                if let Err(e) = called {
                    e.write_unraisable(py, None);
                }
            })
        });
    }
    Ok(opts)
}

/// What a `NativeLock` holds right now: one core `UpdateLock` per entered hold (at most one
/// in exclusive mode; in shared mode each `with` of the same object holds its own, and the
/// core's last one out removes the lock).
#[derive(Default)]
struct Slot {
    locks: Vec<UpdateLock>,
}

/// The native lock object; `update_lock.Lock` and `update_lock.AsyncLock` subclass it.
///
/// It keeps its options (built once) and the core `UpdateLock`s it holds. It may be shared
/// between threads: in exclusive mode an acquire from another thread waits until the
/// holder releases (the same thread fails at once with `already-held`); in shared mode
/// every thread holds it at once.
#[pyclass(subclass, frozen, module = "update_lock._update_lock")]
pub struct NativeLock {
    opts: LockOptions,
    shared: bool,
    slot: Mutex<Slot>,
}

impl NativeLock {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, lock: UpdateLock) {
        let previous = {
            let mut s = self.slot();
            let previous = if self.shared {
                Vec::new()
            } else {
                std::mem::take(&mut s.locks)
            };
            s.locks.push(lock);
            previous
        };
        // In exclusive mode a previous lock can only still be here if it was lost (the new
        // one could not have been taken otherwise); dropping it closes its descriptors and
        // deletes nothing that is not its own.
        drop(previous);
    }

    /// The most recent hold, for `check`, `paths` and `reclaimed`.
    fn with_last<T>(&self, f: impl FnOnce(Option<&UpdateLock>) -> T) -> T {
        f(self.slot().locks.last())
    }

    fn not_held(&self) -> Error {
        Error::NotHeld {
            path: self.opts.lock_paths().into_iter().next(),
        }
    }
}

#[pymethods]
impl NativeLock {
    /// Options are validated here and built once; nothing is taken yet.
    #[new]
    #[pyo3(signature = (paths=None, timeout=None, legacy=true, reclaim_stale=true, program=None, shared=false, on_wait=None, on_update_waiting=None, yield_to_updates=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        paths: Option<Vec<PathBuf>>,
        timeout: Option<f64>,
        legacy: bool,
        reclaim_stale: bool,
        program: Option<String>,
        shared: bool,
        on_wait: Option<Py<PyAny>>,
        on_update_waiting: Option<Py<PyAny>>,
        yield_to_updates: Option<f64>,
    ) -> PyResult<Self> {
        let opts = lock_options(paths, timeout, legacy, reclaim_stale, program, shared)?;
        let opts = with_hooks(opts, on_wait, on_update_waiting, yield_to_updates)?;
        Ok(NativeLock {
            opts,
            shared,
            slot: Mutex::new(Slot::default()),
        })
    }

    /// Whether holds of this object are shared.
    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }

    /// Take the lock, waiting as the lock's timeout says, with the GIL released.
    #[pyo3(signature = (*, cancel=None))]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        cancel: Option<PyRef<'py, NativeCancelToken>>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        // The owner is this thread (the core's default): the same thread acquiring again
        // fails at once with `already-held` instead of waiting for itself.
        let got = acquire_detached(py, &this.opts, cancel.map(|t| t.token.clone()), true)?;
        this.store(got.map_err(|e| to_py(py, e))?);
        Ok(slf.clone())
    }

    /// For `AsyncLock`, on a helper thread: wait with the GIL released until taken or
    /// `cancel` is cancelled; no signal checks (signals belong to the main thread).
    /// `owner` is the asyncio task's (`new_lock_owner()`), which the nesting check uses
    /// instead of this helper thread.
    fn _acquire_blocking(
        &self,
        py: Python<'_>,
        cancel: PyRef<'_, NativeCancelToken>,
        owner: u64,
    ) -> PyResult<()> {
        let token = cancel.token.clone();
        let opts = self.opts.clone().owner(LockOwner::from_u64(owner));
        let got = acquire_detached(py, &opts, Some(token), false)?;
        self.store(got.map_err(|e| to_py(py, e))?);
        Ok(())
    }

    /// Release (idempotent). Raises `LockLostError` when a path was no longer ours (the
    /// other paths are still released). In a child created by `fork()` it only closes the
    /// child's copies of the descriptors: the parent keeps its lock.
    /// In shared mode one hold is released (the most recent); the core removes the lock
    /// when the last hold of the app leaves.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.slot().locks.pop();
        match taken {
            Some(mut lock) => lock.release().map_err(|e| to_py(py, e)),
            None => Ok(()),
        }
    }

    /// Whether this object holds the lock now (false in a forked child).
    #[getter]
    fn held(&self) -> bool {
        self.slot().locks.iter().any(UpdateLock::is_held)
    }

    /// Whether the balena Supervisor has tried to take the lock since it was taken (by any
    /// hold of this object): an update waits for the app to release it.
    #[getter]
    fn update_waiting(&self) -> bool {
        self.slot().locks.iter().any(UpdateLock::update_waiting)
    }

    /// Raise `LockLostError` if a path was deleted or replaced (the Supervisor's override
    /// does that), `NotHeldError` if not held.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        let verdict = self.with_last(|l| match l {
            Some(lock) => lock.check(),
            None => Err(self.not_held()),
        });
        verdict.map_err(|e| to_py(py, e))
    }

    /// The lock paths, in locking order.
    #[getter]
    fn paths<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.with_last(|l| match l {
            Some(lock) => py_paths(py, lock.paths()),
            None => py_paths(py, &self.opts.lock_paths()),
        })
    }

    /// Paths taken over from dead holders by the current acquisition: a list of
    /// `(path, previous holder record as a dict)`.
    #[getter]
    fn _reclaimed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let s = self.slot();
        let items = s
            .locks
            .last()
            .map(|l| l.reclaimed())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let record = pythonize::pythonize(py, &r.previous)?;
                PyTuple::new(py, [py_path(py, &r.path), record])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// `with lock:` takes the lock (the `as` target is the lock).
    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        Self::acquire(slf, None)
    }

    /// Leaving the `with` block releases; a lost lock raises `LockLostError` unless another
    /// exception is already propagating (that one is not replaced).
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match self.release(py) {
            Err(e) if exc_type.is_none() => Err(e),
            _ => Ok(false),
        }
    }
}

/// A cancel token for waits (core `CancelToken`): `cancel()` from any thread ends every
/// wait using it, now and later.
#[pyclass(frozen, name = "CancelToken", module = "update_lock._update_lock")]
pub struct NativeCancelToken {
    token: CancelToken,
}

#[pymethods]
impl NativeCancelToken {
    /// A new, uncancelled token.
    #[new]
    fn new() -> PyResult<Self> {
        CancelToken::new()
            .map(|token| NativeCancelToken { token })
            .map_err(|e| PyOSError::new_err(format!("cannot create a cancel token: {e}")))
    }

    /// Cancel every wait using this token (safe from any thread).
    fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The report of `lockctl status --json`, as Python objects (same fields, same values).
#[pyfunction]
#[pyo3(signature = (paths=None, legacy=true, handover_paths=None, handover_legacy=true))]
fn status<'py>(
    py: Python<'py>,
    paths: Option<Vec<PathBuf>>,
    legacy: bool,
    handover_paths: Option<Vec<PathBuf>>,
    handover_legacy: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut locks = LockOptions::new().legacy(legacy);
    if let Some(p) = paths {
        locks = locks.paths(p);
    }
    // Without signal paths: the one core chooses for these lock paths.
    let handover = match handover_paths {
        Some(p) => HandoverOptions::new().legacy(handover_legacy).paths(p),
        None => HandoverOptions::for_locks(&locks),
    };
    let report = update_lock::status(&locks, &handover);
    Ok(pythonize::pythonize(py, &report)?)
}

/// Write the hand-over signal(s); returns the paths written.
#[pyfunction]
#[pyo3(signature = (paths=None, legacy=true))]
fn handover_complete<'py>(
    py: Python<'py>,
    paths: Option<Vec<PathBuf>>,
    legacy: bool,
) -> PyResult<Bound<'py, PyList>> {
    let mut opts = HandoverOptions::new().legacy(legacy);
    if let Some(p) = paths {
        opts = opts.paths(p);
    }
    let written = update_lock::handover_complete(&opts).map_err(|e| to_py(py, e))?;
    py_paths(py, &written)
}

/// The default lock paths (from the Supervisor's environment variables).
/// A new lock owner (core `LockOwner`) for an asyncio task: the nesting check treats the
/// task, not the helper thread that waits for it, as who holds the lock.
#[pyfunction]
fn new_lock_owner() -> u64 {
    LockOwner::new().as_u64()
}

#[pyfunction]
#[pyo3(signature = (legacy=true))]
fn default_lock_paths(py: Python<'_>, legacy: bool) -> PyResult<Bound<'_, PyList>> {
    py_paths(py, &update_lock::default_lock_paths(legacy))
}

/// The default hand-over signal paths.
#[pyfunction]
#[pyo3(signature = (legacy=true))]
fn default_handover_paths(py: Python<'_>, legacy: bool) -> PyResult<Bound<'_, PyList>> {
    py_paths(py, &update_lock::default_handover_paths(legacy))
}

// ---------------------------------------------------------------------------------------
// Hand-over (issue 6): the core's rendezvous, translated.
// ---------------------------------------------------------------------------------------

/// Run a blocking core call with the GIL released and, on the main thread, Python signals
/// checked every [`SIGNAL_CHECK`]. A handler that raises (Ctrl-C) cancels the call; its
/// exception is returned as the outer `Err` when the call failed (nothing was done). When
/// the call got past its point of no return and succeeded anyway, the success is returned
/// and a `KeyboardInterrupt` is raised again at the next opportunity (another handler's
/// exception is reported as unraisable), so neither the result nor the Ctrl-C is lost.
fn detached_interruptible<T: Send>(
    py: Python<'_>,
    call: impl for<'c> FnOnce(WaitControl<'c>) -> Result<T, Error> + Send,
) -> PyResult<Result<T, Error>> {
    let mut interrupted: Option<PyErr> = None;
    let result = py.detach(|| {
        let slot = &mut interrupted;
        let ctl = WaitControl::new().check_every(SIGNAL_CHECK, move || {
            if !on_main_thread() {
                return Ok(());
            }
            match Python::attach(|py| py.check_signals()) {
                Ok(()) => Ok(()),
                Err(e) => {
                    *slot = Some(e);
                    Err(Error::Cancelled {
                        path: PathBuf::new(),
                        waiting_for: Error::WAITING_FOR_HANDOVER,
                        by: Some("a Python signal handler".into()),
                    })
                }
            }
        });
        call(ctl)
    });
    match (interrupted, result) {
        (Some(e), Err(_)) => Err(e),
        (Some(e), Ok(v)) => {
            if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                // SAFETY: PyErr_SetInterrupt only sets a flag; we hold the GIL.
                unsafe { pyo3::ffi::PyErr_SetInterrupt() };
            } else {
                e.write_unraisable(py, None);
            }
            Ok(Ok(v))
        }
        (None, r) => Ok(r),
    }
}

/// A positive, finite number of seconds (`name` for the message).
fn seconds_arg(name: &str, s: f64) -> PyResult<Duration> {
    if s > 0.0 {
        if let Ok(d) = Duration::try_from_secs_f64(s) {
            return Ok(d);
        }
    }
    Err(PyValueError::new_err(format!(
        "{name} must be a positive number of seconds, not {s}"
    )))
}

/// `max_state` in bytes (at most 64 MiB, as the core caps it).
fn max_state_arg(n: i64) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| {
        PyValueError::new_err(format!("max_state must be a number of bytes >= 0, not {n}"))
    })
}

/// A peer as the tuple `update_lock.Peer` is built from:
/// `(pid, own_pid, uid, release, program, protocol)`.
type PeerTuple = (i32, i32, u32, String, String, u32);

pub(crate) fn peer_tuple(p: &PeerInfo) -> PeerTuple {
    (
        p.pid,
        p.own_pid,
        p.uid,
        p.release.clone(),
        p.program.clone(),
        p.protocol,
    )
}

/// Take over from the old version serving on `socket` (GIL released, Ctrl-C ends it with
/// nothing taken). `None`: no predecessor. Otherwise `(peer, state, [(label, fd,
/// is_socket)], signalled, signal_error)`: the descriptors are the caller's to close.
#[pyfunction]
#[pyo3(signature = (socket=None, release=None, step_timeout=None, release_timeout=None, max_state=None, signal=true, signal_paths=None, program=None, peer_uids=None))]
#[allow(clippy::too_many_arguments)]
fn handover_take<'py>(
    py: Python<'py>,
    socket: Option<PathBuf>,
    release: Option<String>,
    step_timeout: Option<f64>,
    release_timeout: Option<f64>,
    max_state: Option<i64>,
    signal: bool,
    signal_paths: Option<Vec<PathBuf>>,
    program: Option<String>,
    peer_uids: Option<Vec<u32>>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    // None: core's default (the same in every binding).
    let mut opts = RendezvousOptions::new()
        .release(release.unwrap_or_default())
        .program(program.unwrap_or_default())
        .signal(signal)
        .peer_uids(peer_uids.unwrap_or_default());
    if let Some(t) = step_timeout {
        opts = opts.step_timeout(seconds_arg("step_timeout", t)?);
    }
    if let Some(t) = release_timeout {
        opts = opts.release_timeout(seconds_arg("release_timeout", t)?);
    }
    if let Some(m) = max_state {
        opts = opts.max_state(max_state_arg(m)?);
    }
    if let Some(p) = socket {
        opts = opts.socket(p);
    }
    if signal {
        if let Some(p) = signal_paths {
            opts = opts.signal_paths(p);
        }
    }
    let got = detached_interruptible(py, |ctl| update_lock::take_over_with(&opts, ctl))?
        .map_err(|e| to_py(py, e))?;
    let Some(inh) = got else {
        return Ok(None);
    };
    let signalled = py_paths(py, inh.signalled())?;
    let signal_error = match inh.signal_error() {
        Some(e) => Some(build_exception(py, e)?.into_value(py)),
        None => None,
    };
    let (peer, state, fds) = inh.into_parts();
    let fds: Vec<(String, RawFd, bool)> = fds
        .into_iter()
        .map(|f| {
            let sock = f.is_socket();
            let (label, fd) = f.into_parts();
            (label, fd.into_raw_fd(), sock)
        })
        .collect();
    let out = (
        peer_tuple(&peer),
        PyBytes::new(py, &state),
        fds,
        signalled,
        signal_error,
    )
        .into_pyobject(py)?;
    Ok(Some(out))
}

/// The old version's hand-over server (core `HandoverServer`); `update_lock.HandoverServer`
/// wraps it.
#[pyclass(frozen, name = "HandoverServer", module = "update_lock._update_lock")]
pub struct NativeHandoverServer {
    server: HandoverServer,
}

/// A successor waiting for `grant` or `refuse` (core `HandoverRequest`); answered once.
#[pyclass(frozen, name = "HandoverRequest", module = "update_lock._update_lock")]
pub struct NativeHandoverRequest {
    request: Mutex<Option<HandoverRequest>>,
    successor: PeerTuple,
}

impl NativeHandoverRequest {
    fn take(&self) -> PyResult<HandoverRequest> {
        self.request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                PyRuntimeError::new_err(
                    "this hand-over request was already answered (grant or refuse is called once per request)",
                )
            })
    }
}

#[pymethods]
impl NativeHandoverRequest {
    /// `(pid, own_pid, uid, release, program, protocol)` of the successor.
    #[getter]
    fn successor(&self) -> PeerTuple {
        self.successor.clone()
    }

    /// Whether `grant` or `refuse` was already called.
    #[getter]
    fn answered(&self) -> bool {
        self.request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

#[pymethods]
impl NativeHandoverServer {
    /// Bind the socket and start serving (a stale socket is replaced).
    #[new]
    #[pyo3(signature = (socket=None, release=None, step_timeout=None, max_state=None, program=None, peer_uids=None))]
    fn new(
        py: Python<'_>,
        socket: Option<PathBuf>,
        release: Option<String>,
        step_timeout: Option<f64>,
        max_state: Option<i64>,
        program: Option<String>,
        peer_uids: Option<Vec<u32>>,
    ) -> PyResult<Self> {
        // None: core's default (the same in every binding).
        let mut opts = RendezvousOptions::new()
            .release(release.unwrap_or_default())
            .program(program.unwrap_or_default())
            .peer_uids(peer_uids.unwrap_or_default());
        if let Some(t) = step_timeout {
            opts = opts.step_timeout(seconds_arg("step_timeout", t)?);
        }
        if let Some(m) = max_state {
            opts = opts.max_state(max_state_arg(m)?);
        }
        if let Some(p) = socket {
            opts = opts.socket(p);
        }
        let server = py
            .detach(|| HandoverServer::bind(&opts))
            .map_err(|e| to_py(py, e))?;
        Ok(NativeHandoverServer { server })
    }

    /// Wait for a successor (`None`: the timeout ran out). GIL released, Ctrl-C interrupts.
    #[pyo3(signature = (timeout=None))]
    fn accept(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Option<NativeHandoverRequest>> {
        let timeout = timeout_from(timeout)?;
        let server = &self.server;
        let got = detached_interruptible(py, |ctl| server.accept_with(timeout, ctl))?
            .map_err(|e| to_py(py, e))?;
        Ok(got.map(|request| NativeHandoverRequest {
            successor: peer_tuple(request.successor()),
            request: Mutex::new(Some(request)),
        }))
    }

    /// Send `state` and the descriptors `[(label, fd)]` (copies; the caller keeps its own)
    /// and wait for the acknowledgement. Returns the successor.
    fn grant(
        &self,
        py: Python<'_>,
        request: &NativeHandoverRequest,
        state: PyBackedBytes,
        fds: Vec<(String, RawFd)>,
    ) -> PyResult<PeerTuple> {
        for (label, fd) in &fds {
            // SAFETY: fcntl(F_GETFD) on any number is harmless; it tells whether it is open.
            if *fd < 0 || unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
                return Err(PyValueError::new_err(format!(
                    "descriptor {fd} given for {label:?} is not an open file descriptor"
                )));
            }
        }
        let req = request.take()?;
        let server = &self.server;
        let state: &[u8] = &state;
        let got = detached_interruptible(py, |ctl| {
            // SAFETY: each descriptor was checked open above and the caller's objects keep
            // it open for the duration of this call (documented in the Python wrapper).
            let borrowed: Vec<(&str, BorrowedFd<'_>)> = fds
                .iter()
                .map(|(l, fd)| (l.as_str(), unsafe { BorrowedFd::borrow_raw(*fd) }))
                .collect();
            server.grant_with(req, state, &borrowed, ctl)
        })?
        .map_err(|e| to_py(py, e))?;
        Ok(peer_tuple(&got))
    }

    /// Turn the successor away; it gets reason "refused" with `message`.
    fn refuse(
        &self,
        py: Python<'_>,
        request: &NativeHandoverRequest,
        message: String,
    ) -> PyResult<()> {
        let req = request.take()?;
        let server = &self.server;
        py.detach(|| server.refuse(req, &message))
            .map_err(|e| to_py(py, e))
    }

    /// Serve until a successor took over (the core's serve loop); `None` when `timeout`
    /// ran out or the server was closed. `release(successor)` returns
    /// `(state, [(label, fd)], keepalive)`; `resume(exception)` runs after a failed grant.
    /// A hook's exception ends it unchanged (the successor refused). GIL released while
    /// waiting; Ctrl-C interrupts.
    #[pyo3(signature = (release, timeout=None, resume=None))]
    fn serve(
        &self,
        py: Python<'_>,
        release: Py<PyAny>,
        timeout: Option<f64>,
        resume: Option<Py<PyAny>>,
    ) -> PyResult<Option<PeerTuple>> {
        let timeout = timeout_from(timeout)?;
        let mut hooks = serve::PyHooks { release, resume };
        let server = &self.server;
        let got = detached_interruptible(py, |ctl| match server.serve(timeout, ctl, &mut hooks) {
            Ok(peer) => Ok(Ok(peer)),
            Err(ServeError::Hook(e)) => Ok(Err(e)),
            Err(ServeError::Handover(e)) => Err(e),
        })?
        .map_err(|e| to_py(py, e))?;
        match got {
            Ok(peer) => Ok(peer.as_ref().map(peer_tuple)),
            Err(hook) => Err(hook.err),
        }
    }

    /// Stop serving (the socket is removed); idempotent.
    fn close(&self) {
        self.server.close();
    }

    /// Whether it still serves (not handed over, not closed).
    #[getter]
    fn serving(&self) -> bool {
        self.server.is_serving()
    }

    /// The socket path.
    #[getter]
    fn socket_path<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        py_path(py, self.server.socket_path())
    }
}

/// Every hand-over failure reason (`HandoverError.reason`), in the core's order.
#[pyfunction]
fn handover_reasons() -> Vec<&'static str> {
    HandoverFailure::ALL.iter().map(|r| r.as_str()).collect()
}

/// The default hand-over socket path (`handover.sock` beside the handover-complete file).
#[pyfunction]
fn default_handover_socket(py: Python<'_>) -> Bound<'_, PyAny> {
    py_path(py, &update_lock::default_socket_path())
}

/// Every core error code as `(code, number)`, in numeric order.
#[pyfunction]
fn error_codes() -> Vec<(&'static str, u32)> {
    ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str(), c.number()))
        .collect()
}

/// The listen backlog for a listener that may be handed over: the kernel's limit.
#[pyfunction]
fn listen_backlog() -> u32 {
    update_lock::listen_backlog()
}

/// The native module.
#[pymodule]
fn _update_lock(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeLock>()?;
    m.add_class::<NativeCancelToken>()?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(handover_complete, m)?)?;
    m.add_function(wrap_pyfunction!(default_lock_paths, m)?)?;
    m.add_function(wrap_pyfunction!(new_lock_owner, m)?)?;
    m.add_function(wrap_pyfunction!(default_handover_paths, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(listen_backlog, m)?)?;
    m.add_class::<NativeHandoverServer>()?;
    m.add_class::<api::NativeSupervisorApi>()?;
    m.add_class::<api::NativeUpdateGate>()?;
    m.add_class::<NativeHandoverRequest>()?;
    m.add_function(wrap_pyfunction!(handover_take, m)?)?;
    m.add_function(wrap_pyfunction!(handover_reasons, m)?)?;
    m.add_function(wrap_pyfunction!(default_handover_socket, m)?)?;
    m.add("HANDOVER_MAX_FDS", update_lock::MAX_FDS)?;
    m.add("HANDOVER_PROTOCOL_VERSION", update_lock::PROTOCOL_VERSION)?;
    m.add("STATUS_SCHEMA", update_lock::STATUS_SCHEMA)?;
    m.add("SUPERVISOR_UID", update_lock::SUPERVISOR_UID)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
