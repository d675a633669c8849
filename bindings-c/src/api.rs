//! The Supervisor API client (`ul_api_*`) and the update gate (`ul_update_gate_*`).
//!
//! Ownership: `ul_api_new` and `ul_update_gate_acquire` return handles the caller frees
//! with `ul_api_free` / `ul_update_gate_free`. Thread safety: a `ul_api` may be used from
//! several threads at once (each call is independent); a `ul_update_gate` from one thread at
//! a time. Every call has the client's timeout; the key never appears in a message.

use std::ffi::c_char;
use std::time::Duration;

use lockcore::{SafePoint, SupervisorApi, UpdateGate};

use crate::error::{guard, ul_result, Failure};
use crate::options::{lock_options, ul_options};
use crate::rendezvous::utf8_arg;
use crate::strings::copy_truncated;

/// A Supervisor API client. Opaque; made by `ul_api_new`, freed by `ul_api_free`.
pub struct ul_api {
    inner: SupervisorApi,
}

/// What `GET /v1/device` says. Filled by `ul_api_device`; strings are truncated to fit
/// (always NUL-terminated) and empty when the Supervisor left them out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_device_state {
    /// An update is waiting to be applied.
    pub update_pending: bool,
    /// Its images are downloaded (with `update_pending`: the moment to let it in).
    pub update_downloaded: bool,
    /// The last update failed.
    pub update_failed: bool,
    /// Download progress in percent, or -1.
    pub download_progress: i32,
    /// The Supervisor's status, e.g. "Idle", "Downloading".
    pub status: [c_char; 32],
    /// The release the device runs.
    pub commit: [c_char; 72],
}

/// What `ul_update_gate_safe_point` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ul_safe_point {
    /// No downloaded update waits: the lock is still held.
    UL_SAFE_POINT_NO_UPDATE = 0,
    /// An update waited: the lock was released (the Supervisor may now stop this service).
    UL_SAFE_POINT_RELEASED = 1,
    /// Released for the update, which finished, and taken again.
    UL_SAFE_POINT_RETAKEN = 2,
    /// Released, and taken again when the settle timeout ran out before the update finished.
    UL_SAFE_POINT_RETAKEN_UNSETTLED = 3,
}

/// The update lock, held until a downloaded update waits and the app calls
/// `ul_update_gate_safe_point`. Opaque; freed by `ul_update_gate_free`.
pub struct ul_update_gate {
    inner: Option<UpdateGate>,
}

/// The default of `ul_api_new`'s `timeout_ms`: 10 s (the same default in every language).
pub const UL_API_TIMEOUT_DEFAULT_MS: u32 = 10_000;
/// The default of `ul_update_gate_acquire`'s `settle_timeout_ms`: 10 minutes.
pub const UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS: u32 = 600_000;
/// The default of `ul_update_gate_acquire`'s `poll_ms`: 2 s.
pub const UL_GATE_POLL_DEFAULT_MS: u32 = 2_000;

/// A duration in milliseconds that cannot be zero: 0 is refused (in this API `0` always
/// means "no time", never "the default"; pass the `_DEFAULT_MS` constant for that).
fn nonzero_ms(ms: u32, func: &str, arg: &str, default: u32) -> Result<Duration, Failure> {
    if ms == 0 {
        return Err(Failure::invalid(format!(
            "{func}: {arg} is 0, but this wait cannot take no time (0 never means \"the default\" in this API): pass a number of milliseconds, e.g. {default} (the default)"
        )));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

/// Make a client. `address` (e.g. "http://127.0.0.1:48484") and `key` default, when NULL,
/// to `$BALENA_SUPERVISOR_ADDRESS` and `$BALENA_SUPERVISOR_API_KEY` (the Supervisor sets
/// them for services with the `io.balena.features.supervisor-api` label). `timeout_ms`
/// bounds every call: pass `UL_API_TIMEOUT_DEFAULT_MS` for the default; 0 is refused with
/// `UL_ERR_INVALID_ARGUMENT` (0 means "no time" throughout this API, never "the default"). Returns `UL_ERR_API` with reason "not-configured" when
/// there is no address or key.
///
/// # Safety
/// `address` and `key` are NULL or NUL-terminated strings; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn ul_api_new(
    address: *const c_char,
    key: *const c_char,
    timeout_ms: u32,
    out: *mut *mut ul_api,
) -> ul_result {
    const F: &str = "ul_api_new";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: forwarded from the caller.
        let a = unsafe { utf8_arg(address, F, "address") }?;
        // SAFETY: forwarded from the caller.
        let k = unsafe { utf8_arg(key, F, "key") }?;
        let timeout = nonzero_ms(timeout_ms, F, "timeout_ms", UL_API_TIMEOUT_DEFAULT_MS)?;
        let api = SupervisorApi::configure(a, k)?;
        let handle = Box::into_raw(Box::new(ul_api {
            inner: api.with_timeout(timeout),
        }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Free a client (NULL is accepted).
///
/// # Safety
/// `api` is NULL or a handle from `ul_api_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ul_api_free(api: *mut ul_api) {
    crate::error::guard_value((), || {
        if !api.is_null() {
            // SAFETY: made by Box::into_raw in ul_api_new, freed once.
            drop(unsafe { Box::from_raw(api) });
        }
    })
}

/// # Safety
/// `api` is NULL or a live handle.
unsafe fn client<'a>(api: *const ul_api, func: &str) -> Result<&'a SupervisorApi, Failure> {
    // SAFETY: NULL or live, by the caller's guarantee.
    unsafe { api.as_ref() }
        .map(|a| &a.inner)
        .ok_or_else(|| Failure::null(func, "api"))
}

/// `GET /ping`: is the Supervisor there?
///
/// # Safety
/// `api` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_api_ping(api: *const ul_api) -> ul_result {
    // SAFETY: forwarded from the caller.
    guard("ul_api_ping", || {
        Ok(unsafe { client(api, "ul_api_ping") }?.ping()?)
    })
}

/// `GET /v1/device` into `*out`.
///
/// # Safety
/// `api` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn ul_api_device(api: *const ul_api, out: *mut ul_device_state) -> ul_result {
    const F: &str = "ul_api_device";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: forwarded from the caller.
        let d = unsafe { client(api, F) }?.device()?;
        let mut s = ul_device_state {
            update_pending: d.update_pending,
            update_downloaded: d.update_downloaded,
            update_failed: d.update_failed,
            download_progress: d.download_progress.map_or(-1, |p| p as i32),
            status: [0; 32],
            commit: [0; 72],
        };
        // SAFETY: the arrays are ours and as long as given.
        unsafe {
            copy_truncated(
                d.status.as_deref().unwrap_or("").as_bytes(),
                s.status.as_mut_ptr(),
                s.status.len(),
            );
            copy_truncated(
                d.commit.as_deref().unwrap_or("").as_bytes(),
                s.commit.as_mut_ptr(),
                s.commit.len(),
            );
            out.write(s);
        }
        Ok(())
    })
}

/// `POST /v1/update`: check for an update now; `force` overrides update locks.
///
/// # Safety
/// `api` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_api_update(api: *const ul_api, force: bool) -> ul_result {
    // SAFETY: forwarded from the caller.
    guard("ul_api_update", || {
        Ok(unsafe { client(api, "ul_api_update") }?.update(force)?)
    })
}

/// `POST /v1/reboot`: `UL_ERR_HELD` (HTTP 423) while an update lock is held, unless `force`.
///
/// # Safety
/// `api` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_api_reboot(api: *const ul_api, force: bool) -> ul_result {
    // SAFETY: forwarded from the caller.
    guard("ul_api_reboot", || {
        Ok(unsafe { client(api, "ul_api_reboot") }?.reboot(force)?)
    })
}

/// `POST /v2/applications/{app_id}/restart-service` for `service` (UTF-8); `UL_ERR_HELD`
/// while an update lock is held, unless `force`.
///
/// # Safety
/// `api` is a live handle; `service` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ul_api_restart_service(
    api: *const ul_api,
    app_id: u64,
    service: *const c_char,
    force: bool,
) -> ul_result {
    // SAFETY: forwarded from the caller.
    unsafe { restart(api, Some(app_id), service, force, "ul_api_restart_service") }
}

/// Both restart calls: `app_id` `None` is this app's (core reads `$BALENA_APP_ID`).
///
/// # Safety
/// As theirs.
unsafe fn restart(
    api: *const ul_api,
    app_id: Option<u64>,
    service: *const c_char,
    force: bool,
    func: &'static str,
) -> ul_result {
    guard(func, || {
        // SAFETY: forwarded from the caller.
        let svc = unsafe { utf8_arg(service, func, "service") }?
            .ok_or_else(|| Failure::null(func, "service"))?;
        // SAFETY: forwarded from the caller.
        Ok(unsafe { client(api, func) }?.restart_service_of(app_id, svc, force)?)
    })
}

/// [`ul_api_restart_service`] for a service of this app: the app id is the one the
/// Supervisor gives every service in `$BALENA_APP_ID` (legacy `$RESIN_APP_ID`), read by
/// the core as in every language. `UL_ERR_API` with reason `not-configured` when it is
/// missing or not a number (the message names the variable).
///
/// # Safety
/// `api` is a live handle; `service` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ul_api_restart_this_service(
    api: *const ul_api,
    service: *const c_char,
    force: bool,
) -> ul_result {
    // SAFETY: forwarded from the caller.
    unsafe { restart(api, None, service, force, "ul_api_restart_this_service") }
}

/// Take the update lock with `opts` (as `ul_acquire`) and keep it until a downloaded update
/// waits and the app calls `ul_update_gate_safe_point`. With `retake`, the lock is taken
/// again after the update (or after `settle_timeout_ms`; `UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS`
/// for the default), asking every `poll_ms` (`UL_GATE_POLL_DEFAULT_MS`). 0 for either is
/// refused with `UL_ERR_INVALID_ARGUMENT`. `api` is borrowed for this call only (the gate keeps its own copy).
///
/// # Safety
/// `opts` is NULL or a valid `ul_options`; `api` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn ul_update_gate_acquire(
    opts: *const ul_options,
    api: *const ul_api,
    retake: bool,
    settle_timeout_ms: u32,
    poll_ms: u32,
    out: *mut *mut ul_update_gate,
) -> ul_result {
    const F: &str = "ul_update_gate_acquire";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: checked non-NULL; writable.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: forwarded from the caller.
        let api = unsafe { client(api, F) }?.clone();
        // SAFETY: forwarded from the caller.
        let (lo, _cancel) = unsafe { lock_options(opts, F, "opts") }?;
        let settle = nonzero_ms(
            settle_timeout_ms,
            F,
            "settle_timeout_ms",
            UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS,
        )?;
        let poll = nonzero_ms(poll_ms, F, "poll_ms", UL_GATE_POLL_DEFAULT_MS)?;
        let gate = UpdateGate::acquire(&lo, api)?
            .retake(retake, settle)
            .poll_interval(poll);
        let handle = Box::into_raw(Box::new(ul_update_gate { inner: Some(gate) }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// The app is at a safe point: if a downloaded update waits, release the lock (and with
/// `retake`, wait for it and take the lock again). `*outcome` says what happened. When the
/// API cannot be asked it returns `UL_ERR_API` and the lock **stays held**.
///
/// # Safety
/// `gate` is a live handle used by one thread at a time; `outcome` is writable.
#[no_mangle]
pub unsafe extern "C" fn ul_update_gate_safe_point(
    gate: *mut ul_update_gate,
    outcome: *mut ul_safe_point,
) -> ul_result {
    const F: &str = "ul_update_gate_safe_point";
    guard(F, || {
        if outcome.is_null() {
            return Err(Failure::null(F, "outcome"));
        }
        // SAFETY: NULL or live, by the caller's guarantee.
        let g = unsafe { gate.as_mut() }.ok_or_else(|| Failure::null(F, "gate"))?;
        let inner = g
            .inner
            .as_mut()
            .ok_or(lockcore::Error::NotHeld { path: None })?;
        let o = match inner.safe_point()? {
            SafePoint::NoUpdate => ul_safe_point::UL_SAFE_POINT_NO_UPDATE,
            SafePoint::Released => ul_safe_point::UL_SAFE_POINT_RELEASED,
            SafePoint::Retaken { settled: true } => ul_safe_point::UL_SAFE_POINT_RETAKEN,
            SafePoint::Retaken { settled: false } => ul_safe_point::UL_SAFE_POINT_RETAKEN_UNSETTLED,
        };
        // SAFETY: checked non-NULL; writable.
        unsafe { outcome.write(o) };
        Ok(())
    })
}

/// Whether the gate holds the lock now (false for NULL).
///
/// # Safety
/// `gate` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_update_gate_held(gate: *const ul_update_gate) -> bool {
    crate::error::guard_value(false, || {
        // SAFETY: NULL or live.
        unsafe { gate.as_ref() }
            .and_then(|g| g.inner.as_ref())
            .is_some_and(|g| g.held())
    })
}

/// Release the lock (if held) and free the gate; NULL is accepted.
///
/// # Safety
/// `gate` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ul_update_gate_free(gate: *mut ul_update_gate) -> ul_result {
    guard("ul_update_gate_free", || {
        if gate.is_null() {
            return Ok(());
        }
        // SAFETY: made by Box::into_raw in ul_update_gate_acquire, freed once.
        let g = unsafe { Box::from_raw(gate) };
        match g.inner {
            Some(inner) => Ok(inner.release()?),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_constants_are_cores() {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap();
        assert_eq!(UL_API_TIMEOUT_DEFAULT_MS, ms(lockcore::DEFAULT_API_TIMEOUT));
        assert_eq!(
            UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS,
            ms(lockcore::DEFAULT_SETTLE_TIMEOUT)
        );
        assert_eq!(UL_GATE_POLL_DEFAULT_MS, ms(lockcore::DEFAULT_POLL_INTERVAL));
    }
}
