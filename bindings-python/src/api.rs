//! The Supervisor API client and the update gate, translated: every call runs the core's
//! with the GIL released; results come back as JSON text or plain values.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;

use update_lock::{LockOptions, SupervisorApi, UpdateGate};

use crate::{seconds_arg, to_py};

/// The core's Supervisor API client.
#[pyclass(frozen, name = "SupervisorApi", module = "update_lock._update_lock")]
pub struct NativeSupervisorApi {
    api: SupervisorApi,
}

#[pymethods]
impl NativeSupervisorApi {
    /// `address`/`key` default to the Supervisor's environment variables.
    #[new]
    #[pyo3(signature = (address=None, key=None, timeout=None))]
    fn new(
        py: Python<'_>,
        address: Option<String>,
        key: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        // None: core's default, the same in every binding.
        let timeout = match timeout {
            Some(t) => seconds_arg("timeout", t)?,
            None => update_lock::DEFAULT_API_TIMEOUT,
        };
        let api = SupervisorApi::configure(address.as_deref(), key.as_deref())
            .map_err(|e| to_py(py, e))?;
        Ok(NativeSupervisorApi {
            api: api.with_timeout(timeout),
        })
    }

    /// The address it calls.
    #[getter]
    fn address(&self) -> String {
        self.api.address().to_string()
    }

    /// Seconds each call may take.
    #[getter]
    fn timeout(&self) -> f64 {
        self.api.timeout().as_secs_f64()
    }

    /// `GET /ping`.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.api.ping()).map_err(|e| to_py(py, e))
    }

    /// `GET /v1/device` as a dict (the Python layer builds `DeviceState`).
    fn device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = py.detach(|| self.api.device()).map_err(|e| to_py(py, e))?;
        Ok(pythonize::pythonize(py, &d)?)
    }

    /// `POST /v1/update`.
    #[pyo3(signature = (force=false))]
    fn update(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        py.detach(|| self.api.update(force))
            .map_err(|e| to_py(py, e))
    }

    /// `POST /v1/reboot`.
    #[pyo3(signature = (force=false))]
    fn reboot(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        py.detach(|| self.api.reboot(force))
            .map_err(|e| to_py(py, e))
    }

    /// `POST /v2/applications/{app_id}/restart-service` (`app_id` None: this app, from
    /// `$BALENA_APP_ID`, read by core).
    #[pyo3(signature = (app_id, service, force=false))]
    fn restart_service(
        &self,
        py: Python<'_>,
        app_id: Option<u64>,
        service: String,
        force: bool,
    ) -> PyResult<()> {
        py.detach(|| self.api.restart_service_of(app_id, &service, force))
            .map_err(|e| to_py(py, e))
    }

    fn __repr__(&self) -> String {
        format!(
            "SupervisorApi(address={:?}, timeout={})",
            self.api.address(),
            self.api.timeout().as_secs_f64()
        )
    }
}

/// The core's update gate; `update_lock.UpdateGate` wraps it.
#[pyclass(frozen, name = "UpdateGate", module = "update_lock._update_lock")]
pub struct NativeUpdateGate {
    opts: LockOptions,
    api: SupervisorApi,
    retake: bool,
    settle: Duration,
    poll: Duration,
    gate: Mutex<Option<UpdateGate>>,
}

impl NativeUpdateGate {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<UpdateGate>> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl NativeUpdateGate {
    /// Options as for `lock()`, plus the gate's; nothing is taken yet.
    #[new]
    #[pyo3(signature = (api, paths=None, timeout=None, legacy=true, reclaim_stale=true, program=None, retake=false, settle_timeout=None, poll_interval=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        api: PyRef<'_, NativeSupervisorApi>,
        paths: Option<Vec<PathBuf>>,
        timeout: Option<f64>,
        legacy: bool,
        reclaim_stale: bool,
        program: Option<String>,
        retake: bool,
        settle_timeout: Option<f64>,
        poll_interval: Option<f64>,
    ) -> PyResult<Self> {
        let opts = crate::lock_options(paths, timeout, legacy, reclaim_stale, program, false)?;
        Ok(NativeUpdateGate {
            opts,
            api: api.api.clone(),
            retake,
            // None: core's defaults, the same in every binding.
            settle: settle_timeout
                .map(|t| seconds_arg("settle_timeout", t))
                .transpose()?
                .unwrap_or(update_lock::DEFAULT_SETTLE_TIMEOUT),
            poll: poll_interval
                .map(|t| seconds_arg("poll_interval", t))
                .transpose()?
                .unwrap_or(update_lock::DEFAULT_POLL_INTERVAL),
            gate: Mutex::new(None),
        })
    }

    /// Take the lock (GIL released). A second acquire while held is a no-op.
    fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        if self.slot().is_some() {
            return Ok(());
        }
        let gate = py
            .detach(|| UpdateGate::acquire(&self.opts, self.api.clone()))
            .map_err(|e| to_py(py, e))?
            .retake(self.retake, self.settle)
            .poll_interval(self.poll);
        *self.slot() = Some(gate);
        Ok(())
    }

    /// At a safe point: "no-update", "released", "retaken" or "retaken-unsettled".
    fn safe_point(&self, py: Python<'_>) -> PyResult<&'static str> {
        let Some(mut gate) = self.slot().take() else {
            return Err(to_py(
                py,
                update_lock::Error::NotHeld {
                    path: self.opts.lock_paths().into_iter().next(),
                },
            ));
        };
        let result = py.detach(|| gate.safe_point());
        *self.slot() = Some(gate);
        Ok(result.map_err(|e| to_py(py, e))?.as_str())
    }

    /// Whether a downloaded update waits (one API call).
    fn update_waiting(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.api.device().map(|d| d.update_waiting()))
            .map_err(|e| to_py(py, e))
    }

    /// Whether the lock is held now.
    #[getter]
    fn held(&self) -> bool {
        self.slot().as_ref().is_some_and(|g| g.held())
    }

    /// Release for good (idempotent).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let gate = self.slot().take();
        match gate {
            Some(g) => py.detach(|| g.release()).map_err(|e| to_py(py, e)),
            None => Ok(()),
        }
    }
}
