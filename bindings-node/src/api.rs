//! The Supervisor API client and the update gate for Node.js. Every call runs the core's on
//! tokio's blocking pool and settles a Promise, so the event loop never waits on HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use update_lock::{SupervisorApi, UpdateGate};

use crate::{js_error, PreparedOptions};

/// Options of `new SupervisorApi()` as the JavaScript wrapper passes them.
#[napi(object)]
pub struct ApiInit {
    /// e.g. `http://127.0.0.1:48484`; missing: `$BALENA_SUPERVISOR_ADDRESS`.
    pub address: Option<String>,
    /// Missing: `$BALENA_SUPERVISOR_API_KEY`.
    pub key: Option<String>,
    /// How long each call may take, in milliseconds (default 10000).
    pub timeout_ms: Option<f64>,
}

fn millis(name: &str, ms: f64) -> Result<Duration> {
    if ms > 0.0 {
        if let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0) {
            return Ok(d);
        }
    }
    Err(Error::new(
        Status::InvalidArg,
        format!("{name} must be a positive number of milliseconds, got {ms}"),
    ))
}

/// Run a blocking core call on tokio's blocking pool and settle a Promise with its result.
fn blocking<'env, T, F>(env: &'env Env, f: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: FnOnce() -> update_lock::Result<T> + Send + 'static,
{
    let fut = async move {
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => Ok(r),
            Err(e) => Ok(Err(update_lock::Error::Api {
                call: "run".into(),
                reason: update_lock::ApiFailure::BadResponse,
                detail: e.to_string(),
            })),
        }
    };
    env.spawn_future_with_callback(fut, |env, r: update_lock::Result<T>| {
        r.map_err(|e| js_error(env, &e))
    })
}

/// The core's Supervisor API client.
#[napi]
pub struct NativeSupervisorApi {
    api: SupervisorApi,
}

#[napi]
impl NativeSupervisorApi {
    /// A client; throws `api` (`not-configured`) without an address or key.
    #[napi(constructor)]
    pub fn new(env: Env, init: ApiInit) -> Result<Self> {
        // Unset: core's default, the same in every binding.
        let timeout = match init.timeout_ms {
            Some(ms) => millis("timeout", ms)?,
            None => update_lock::DEFAULT_API_TIMEOUT,
        };
        let api = SupervisorApi::configure(init.address.as_deref(), init.key.as_deref())
            .map_err(|e| js_error(&env, &e))?;
        Ok(NativeSupervisorApi {
            api: api.with_timeout(timeout),
        })
    }

    /// The address it calls.
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.api.address().to_string()
    }

    /// Milliseconds each call may take.
    #[napi(getter)]
    pub fn timeout_ms(&self) -> f64 {
        self.api.timeout().as_secs_f64() * 1000.0
    }

    /// `GET /ping`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ping<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let api = self.api.clone();
        blocking(env, move || api.ping())
    }

    /// `GET /v1/device`, as a JavaScript object (the `DeviceState` fields of core).
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub fn device<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, serde_json::Value>> {
        let api = self.api.clone();
        blocking(env, move || {
            let d = api.device()?;
            Ok(serde_json::to_value(&d).unwrap_or_default())
        })
    }

    /// `POST /v1/update`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn update<'env>(&self, env: &'env Env, force: bool) -> Result<PromiseRaw<'env, ()>> {
        let api = self.api.clone();
        blocking(env, move || api.update(force))
    }

    /// `POST /v1/reboot`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn reboot<'env>(&self, env: &'env Env, force: bool) -> Result<PromiseRaw<'env, ()>> {
        let api = self.api.clone();
        blocking(env, move || api.reboot(force))
    }

    /// `POST /v2/applications/{appId}/restart-service` (`appId` null: this app, from
    /// `$BALENA_APP_ID`, read by core).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn restart_service<'env>(
        &self,
        env: &'env Env,
        app_id: Option<u32>,
        service: String,
        force: bool,
    ) -> Result<PromiseRaw<'env, ()>> {
        let api = self.api.clone();
        blocking(env, move || {
            api.restart_service_of(app_id.map(u64::from), &service, force)
        })
    }
}

/// Options of the update gate beyond the lock's.
#[napi(object)]
pub struct GateInit {
    /// Take the lock again after the update (default false).
    pub retake: Option<bool>,
    /// Longest wait for the update to finish before retaking, ms (default 600000).
    pub settle_timeout_ms: Option<f64>,
    /// How often to ask while waiting, ms (default 2000).
    pub poll_interval_ms: Option<f64>,
}

/// The core's update gate.
#[napi]
pub struct NativeUpdateGate {
    gate: Arc<Mutex<Option<UpdateGate>>>,
    api: SupervisorApi,
}

fn slot(g: &Mutex<Option<UpdateGate>>) -> std::sync::MutexGuard<'_, Option<UpdateGate>> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// Take the lock (on the blocking pool) and resolve with the gate.
#[napi(ts_return_type = "Promise<NativeUpdateGate>")]
pub fn update_gate_acquire<'env>(
    env: &'env Env,
    api: &NativeSupervisorApi,
    lock: &PreparedOptions,
    gate: GateInit,
) -> Result<PromiseRaw<'env, NativeUpdateGate>> {
    let opts = lock.inner.clone();
    let retake = gate.retake.unwrap_or(false);
    // Unset: core's defaults, the same in every binding.
    let settle = match gate.settle_timeout_ms {
        Some(ms) => millis("settleTimeout", ms)?,
        None => update_lock::DEFAULT_SETTLE_TIMEOUT,
    };
    let poll = match gate.poll_interval_ms {
        Some(ms) => millis("pollInterval", ms)?,
        None => update_lock::DEFAULT_POLL_INTERVAL,
    };
    let api = api.api.clone();
    blocking(env, move || {
        let g = UpdateGate::acquire(&opts, api.clone())?
            .retake(retake, settle)
            .poll_interval(poll);
        Ok(NativeUpdateGate {
            gate: Arc::new(Mutex::new(Some(g))),
            api,
        })
    })
}

#[napi]
impl NativeUpdateGate {
    /// At a safe point: "no-update", "released", "retaken" or "retaken-unsettled".
    #[napi(ts_return_type = "Promise<string>")]
    pub fn safe_point<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, String>> {
        let cell = Arc::clone(&self.gate);
        blocking(env, move || {
            let Some(mut g) = slot(&cell).take() else {
                return Err(update_lock::Error::NotHeld { path: None });
            };
            let r = g.safe_point();
            *slot(&cell) = Some(g);
            Ok(r?.as_str().to_string())
        })
    }

    /// Whether a downloaded update waits (one API call).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn update_waiting<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, bool>> {
        let api = self.api.clone();
        blocking(env, move || Ok(api.device()?.update_waiting()))
    }

    /// Whether the lock is held now.
    #[napi(getter)]
    pub fn held(&self) -> bool {
        slot(&self.gate).as_ref().is_some_and(|g| g.held())
    }

    /// Release for good (idempotent).
    #[napi]
    pub fn release(&self, env: Env) -> Result<()> {
        let g = slot(&self.gate).take();
        match g {
            Some(g) => g.release().map_err(|e| js_error(&env, &e)),
            None => Ok(()),
        }
    }
}
