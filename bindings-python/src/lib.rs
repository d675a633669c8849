//! Python binding of update-lock: the native module `update_lock._update_lock`.
//!
//! It only translates. Every lock semantic (paths, all-or-nothing, waiting, stale reclaim,
//! release checks, fork safety) is the core crate's; this module converts options, wraps
//! `UpdateLock` in a Python object, turns core errors into the exception classes defined in
//! `update_lock/_errors.py`, releases the GIL while a call waits and checks for Python
//! signals (Ctrl-C) during the wait. The pure-Python package `update_lock` adds the idioms
//! (decorator, asyncio, dataclasses).
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple};

use update_lock::{
    CancelToken, Error, ErrorCode, HandoverOptions, LockOptions, UpdateLock, WaitControl,
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
fn build_exception(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
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
        _ => {}
    }
    let code = e.code();
    let path = e.path().map(|p| py_path(py, p));
    let exc = factory.bind(py).call1((
        code.as_str(),
        code.number(),
        e.to_string(),
        path,
        serde_json::Value::Object(extra).to_string(),
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

/// What a `NativeLock` holds right now.
#[derive(Default)]
struct Slot {
    lock: Option<UpdateLock>,
    /// The thread that took it (to refuse a second blocking acquire from the same thread).
    owner: Option<ThreadId>,
}

/// The native lock object; `update_lock.Lock` and `update_lock.AsyncLock` subclass it.
///
/// It keeps its options (built once) and at most one held core `UpdateLock`. It may be
/// shared between threads: an acquire from another thread waits until the holder releases.
#[pyclass(subclass, frozen, module = "update_lock._update_lock")]
pub struct NativeLock {
    opts: LockOptions,
    slot: Mutex<Slot>,
}

impl NativeLock {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, lock: UpdateLock) {
        let previous = {
            let mut s = self.slot();
            s.owner = Some(std::thread::current().id());
            s.lock.replace(lock)
        };
        // A previous lock can only still be here if it was lost (the new one could not have
        // been taken otherwise); dropping it closes its descriptors and deletes nothing that
        // is not its own.
        drop(previous);
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
    #[pyo3(signature = (paths=None, timeout=None, legacy=true, reclaim_stale=true, program=None))]
    fn new(
        paths: Option<Vec<PathBuf>>,
        timeout: Option<f64>,
        legacy: bool,
        reclaim_stale: bool,
        program: Option<String>,
    ) -> PyResult<Self> {
        let mut opts = LockOptions::new()
            .legacy(legacy)
            .timeout(timeout_from(timeout)?)
            .reclaim_stale(reclaim_stale);
        if let Some(p) = paths {
            opts = opts.paths(p);
        }
        if let Some(p) = program {
            opts = opts.program(p);
        }
        Ok(NativeLock {
            opts,
            slot: Mutex::new(Slot::default()),
        })
    }

    /// Take the lock, waiting as the lock's timeout says, with the GIL released.
    #[pyo3(signature = (*, cancel=None))]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        cancel: Option<PyRef<'py, NativeCancelToken>>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        let again = {
            let s = this.slot();
            s.owner == Some(std::thread::current().id())
                && s.lock.as_ref().is_some_and(UpdateLock::is_held)
        };
        let got = if again {
            // The same thread acquiring again would wait for itself forever: one
            // non-blocking attempt gives the core's own verdict ("held by this same
            // process through another lock handle").
            UpdateLock::try_acquire(&this.opts)
        } else {
            acquire_detached(py, &this.opts, cancel.map(|t| t.token.clone()), true)?
        };
        this.store(got.map_err(|e| to_py(py, e))?);
        Ok(slf.clone())
    }

    /// For `AsyncLock`, on a helper thread: wait with the GIL released until taken or
    /// `cancel` is cancelled; no signal checks (signals belong to the main thread).
    fn _acquire_blocking(
        &self,
        py: Python<'_>,
        cancel: PyRef<'_, NativeCancelToken>,
    ) -> PyResult<()> {
        let token = cancel.token.clone();
        let got = acquire_detached(py, &self.opts, Some(token), false)?;
        self.store(got.map_err(|e| to_py(py, e))?);
        Ok(())
    }

    /// Release (idempotent). Raises `LockLostError` when a path was no longer ours (the
    /// other paths are still released). In a child created by `fork()` it only closes the
    /// child's copies of the descriptors: the parent keeps its lock.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let taken = {
            let mut s = self.slot();
            s.owner = None;
            s.lock.take()
        };
        match taken {
            Some(mut lock) => lock.release().map_err(|e| to_py(py, e)),
            None => Ok(()),
        }
    }

    /// Whether this object holds the lock now (false in a forked child).
    #[getter]
    fn held(&self) -> bool {
        self.slot().lock.as_ref().is_some_and(UpdateLock::is_held)
    }

    /// Raise `LockLostError` if a path was deleted or replaced (the Supervisor's override
    /// does that), `NotHeldError` if not held.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        let verdict = match self.slot().lock.as_ref() {
            Some(lock) => lock.check(),
            None => Err(self.not_held()),
        };
        verdict.map_err(|e| to_py(py, e))
    }

    /// The lock paths, in locking order.
    #[getter]
    fn paths<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        match self.slot().lock.as_ref() {
            Some(lock) => py_paths(py, lock.paths()),
            None => py_paths(py, &self.opts.lock_paths()),
        }
    }

    /// Paths taken over from dead holders by the current acquisition: a list of
    /// `(path, previous holder record as JSON)`.
    #[getter]
    fn _reclaimed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let s = self.slot();
        let items = s
            .lock
            .as_ref()
            .map(|l| l.reclaimed())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let record = serde_json::to_string(&r.previous).unwrap_or_default();
                PyTuple::new(
                    py,
                    [py_path(py, &r.path), PyString::new(py, &record).into_any()],
                )
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

/// The report of `lockctl status --json`, as JSON text (same fields, same values).
#[pyfunction]
#[pyo3(signature = (paths=None, legacy=true, handover_paths=None, handover_legacy=true))]
fn status_json(
    paths: Option<Vec<PathBuf>>,
    legacy: bool,
    handover_paths: Option<Vec<PathBuf>>,
    handover_legacy: bool,
) -> PyResult<String> {
    let mut locks = LockOptions::new().legacy(legacy);
    if let Some(p) = paths {
        locks = locks.paths(p);
    }
    let mut handover = HandoverOptions::new().legacy(handover_legacy);
    if let Some(p) = handover_paths {
        handover = handover.paths(p);
    }
    let report = update_lock::status(&locks, &handover);
    serde_json::to_string(&report)
        .map_err(|e| PyValueError::new_err(format!("cannot encode the status report: {e}")))
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

/// Every core error code as `(code, number)`, in numeric order.
#[pyfunction]
fn error_codes() -> Vec<(&'static str, u32)> {
    ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str(), c.number()))
        .collect()
}

/// The native module.
#[pymodule]
fn _update_lock(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeLock>()?;
    m.add_class::<NativeCancelToken>()?;
    m.add_function(wrap_pyfunction!(status_json, m)?)?;
    m.add_function(wrap_pyfunction!(handover_complete, m)?)?;
    m.add_function(wrap_pyfunction!(default_lock_paths, m)?)?;
    m.add_function(wrap_pyfunction!(default_handover_paths, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add("STATUS_SCHEMA", update_lock::STATUS_SCHEMA)?;
    m.add("SUPERVISOR_UID", update_lock::SUPERVISOR_UID)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
