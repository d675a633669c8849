//! The Python side of the core's serve loop: the app's `release` and `resume` callables as
//! [`ServeHooks`], called with the GIL taken back for each call.

use std::os::fd::{BorrowedFd, OwnedFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use update_lock::{Error, PeerInfo, ReleaseAnswer, ServeHooks};

use crate::{build_exception, peer_tuple};

/// `release(successor_tuple) -> (state, [(label, fd)], keepalive)` (the keepalive holds the
/// app's descriptor objects open until they are copied) and `resume(exception)`.
pub(crate) struct PyHooks {
    pub(crate) release: Py<PyAny>,
    pub(crate) resume: Option<Py<PyAny>>,
}

/// A Python exception raised by a hook, with its `repr` (what the refused successor reads).
pub(crate) struct HookError {
    pub(crate) err: PyErr,
    text: String,
}

impl HookError {
    fn new(py: Python<'_>, err: PyErr) -> HookError {
        let text = err
            .value(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| err.to_string());
        HookError { err, text }
    }
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl ServeHooks for PyHooks {
    type Error = HookError;

    fn release(&mut self, successor: &PeerInfo) -> Result<ReleaseAnswer, HookError> {
        Python::attach(|py| {
            let answer = || -> PyResult<ReleaseAnswer> {
                let out = self.release.bind(py).call1((peer_tuple(successor),))?;
                let (state, pairs, _keepalive): (
                    PyBackedBytes,
                    Vec<(String, i32)>,
                    Bound<'_, PyAny>,
                ) = out.extract()?;
                let fds = pairs
                    .into_iter()
                    .map(|(label, fd)| copy_fd(&label, fd).map(|c| (label, c)))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(ReleaseAnswer::Grant {
                    state: state.to_vec(),
                    fds,
                })
            };
            answer().map_err(|e| HookError::new(py, e))
        })
    }

    fn resume(&mut self, failure: Error) -> Result<(), HookError> {
        let Some(resume) = &self.resume else {
            return Ok(());
        };
        Python::attach(|py| {
            let exc = match build_exception(py, &failure) {
                Ok(e) => e,
                Err(e) => return Err(HookError::new(py, e)),
            };
            resume
                .bind(py)
                .call1((exc.value(py).clone(),))
                .map(|_| ())
                .map_err(|e| HookError::new(py, e))
        })
    }
}

/// Our own close-on-exec copy of the app's descriptor `fd` (sent, then closed; the app keeps
/// its own).
fn copy_fd(label: &str, fd: i32) -> PyResult<OwnedFd> {
    let bad = |why: String| {
        PyValueError::new_err(format!("bad descriptor {fd} given for {label:?}: {why}"))
    };
    if fd < 0 {
        return Err(bad("not a descriptor number".into()));
    }
    // SAFETY: borrowed only for the duplication (fcntl F_DUPFD_CLOEXEC); a number that is
    // not open makes it fail with EBADF. The keepalive holds the app's object open.
    unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|e| bad(format!("not an open file descriptor ({e})")))
}
