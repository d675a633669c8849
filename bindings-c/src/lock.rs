//! `ul_lock`: acquire, check, release; the hand-over signal; the version.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::time::Duration;

use lockcore::{handover_complete, LockOptions, UpdateLock, WaitControl};

use crate::error::{guard, guard_value, ul_result, Failure};
use crate::options::{handover_options, lock_options, ul_handover_options, ul_options};

/// A held update lock (opaque). Made by `ul_acquire` / `ul_try_acquire`, released and freed
/// by `ul_release`.
///
/// While held, every lock path exists (the Supervisor defers application updates) and the
/// library holds flock(2) on each (the host OS update reboot waits). The descriptors are
/// close-on-exec.
///
/// Threads: a handle may be used from any thread; the `const ul_lock *` functions may run
/// concurrently, but `ul_release` must not run concurrently with any other use of the same
/// handle. Fork: a child created by fork() inherits the handle but never owns the lock:
/// `ul_check` gives `UL_ERR_NOT_HELD` there and `ul_release` only closes the child's copies
/// of the descriptors (the parent keeps its lock).
pub struct ul_lock {
    inner: UpdateLock,
    /// The paths as C strings, made on first use by `ul_lock_path`.
    c_paths: OnceLock<Vec<CString>>,
}

/// # Safety
/// `out` NULL or writable; `opts` as documented on `ul_options`.
unsafe fn acquire(
    func: &'static str,
    opts: *const ul_options,
    out: *mut *mut ul_lock,
    adjust: impl FnOnce(LockOptions) -> LockOptions,
) -> ul_result {
    guard(func, || {
        if out.is_null() {
            return Err(Failure::null(func, "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: forwarded from the caller.
        let (lo, cancel) = unsafe { lock_options(opts, func, "opts") }?;
        let lo = adjust(lo);
        let ctl = match cancel {
            Some(token) => WaitControl::new().cancel_on(token),
            None => WaitControl::new(),
        };
        let inner = UpdateLock::acquire_with(&lo, ctl)?;
        let lock = Box::into_raw(Box::new(ul_lock {
            inner,
            c_paths: OnceLock::new(),
        }));
        // SAFETY: as above.
        unsafe { out.write(lock) };
        Ok(())
    })
}

/// Take the update lock on every path of `opts`, all-or-nothing, waiting as long as
/// `opts->timeout_ms` says (the wait sleeps on inotify, it does not poll; it can be ended
/// with `opts->cancel`). A lock left by a dead holder is taken over when
/// `opts->reclaim_stale` is set.
///
/// On success `*out` owns the new handle: release it with `ul_release`. On failure `*out`
/// is NULL and nothing was taken. Returns `UL_OK`, `UL_ERR_HELD` (timeout 0),
/// `UL_ERR_TIMEOUT`, `UL_ERR_CANCELLED`, `UL_ERR_PERMISSION`, `UL_ERR_SUPERVISOR_UID`,
/// `UL_ERR_INVALID_PATH`, `UL_ERR_IO`, `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT`;
/// details in `ul_last_error_message` and, for held/timeout, `ul_last_error_holder`.
///
/// Blocks the calling thread while waiting; signals do not end the wait (use a cancel token,
/// whose `ul_cancel_token_cancel` is async-signal-safe). Thread-safe: a second acquisition
/// of the same paths by another thread waits for, or fails against, the first like any
/// other holder; by the same thread it fails at once with `UL_ERR_ALREADY_HELD` (it would
/// wait for itself), unless both are shared. `opts` and everything it points to are only
/// borrowed during the call.
///
/// ```c
/// ul_lock *lock = NULL;
/// if (ul_acquire(&opts, &lock) != UL_OK) {
///     char msg[512];
///     ul_last_error_message(msg, sizeof msg);
///     fprintf(stderr, "error[%s]: %s\n", ul_result_name(ul_last_error_code()), msg);
///     return 1;
/// }
/// // critical section: no application update, no host OS reboot in here
/// ul_release(lock);
/// ```
///
/// # Safety
/// `opts` must be NULL or a valid `ul_options`; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_acquire(opts: *const ul_options, out: *mut *mut ul_lock) -> ul_result {
    // SAFETY: forwarded from the caller.
    unsafe { acquire("ul_acquire", opts, out, |lo| lo) }
}

/// `ul_acquire` without waiting, whatever `opts->timeout_ms` says: `UL_ERR_HELD` when any
/// path is held. Same ownership and thread safety as `ul_acquire`.
///
/// # Safety
/// As `ul_acquire`.
#[no_mangle]
pub unsafe extern "C" fn ul_try_acquire(
    opts: *const ul_options,
    out: *mut *mut ul_lock,
) -> ul_result {
    // SAFETY: forwarded from the caller.
    unsafe {
        acquire("ul_try_acquire", opts, out, |lo| {
            lo.timeout(Some(Duration::ZERO))
        })
    }
}

/// Release the lock and free the handle; NULL is accepted (returns `UL_OK`).
///
/// Each path is deleted if it is still ours, then its flock is dropped. Returns `UL_OK`, or
/// `UL_ERR_LOST` when a path was no longer ours (the Supervisor's lock override deletes app
/// locks): that file is left alone, the other paths are still released. Either way the
/// handle is freed: never use it again. In a forked child it only closes the child's
/// descriptors and returns `UL_OK`.
///
/// Must not run concurrently with any other use of the same handle.
///
/// # Safety
/// `lock` must be NULL or a handle from `ul_acquire`/`ul_try_acquire` not released yet.
#[no_mangle]
pub unsafe extern "C" fn ul_release(lock: *mut ul_lock) -> ul_result {
    guard("ul_release", || {
        if lock.is_null() {
            return Ok(());
        }
        // SAFETY: made by `Box::into_raw` in `acquire`, released once.
        let mut lock = unsafe { Box::from_raw(lock) };
        lock.inner.release()?;
        Ok(())
    })
}

/// Whether the handle still holds every path: `UL_OK`; `UL_ERR_LOST` when a path was
/// deleted or replaced (the Supervisor's override does that; bring the critical section to
/// a safe stop); `UL_ERR_NOT_HELD` in a forked child; `UL_ERR_NULL_ARGUMENT`.
/// Thread-safe (may run concurrently with other `const` uses of the handle).
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_check(lock: *const ul_lock) -> ul_result {
    guard("ul_check", || {
        // SAFETY: NULL or live, by the caller's guarantee.
        let lock = unsafe { lock.as_ref() }.ok_or_else(|| Failure::null("ul_check", "lock"))?;
        lock.inner.check()?;
        Ok(())
    })
}

/// Whether this handle holds the lock in this process (false for NULL, and in a forked
/// child). Does not look at the files (that is `ul_check`). Thread-safe.
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_is_held(lock: *const ul_lock) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { lock.as_ref() }.is_some_and(|l| l.inner.is_held())
    })
}

/// Whether the balena Supervisor has tried to take the lock since this handle took it: an
/// update (or a reboot it needs) waits for this program to release it (false for NULL and
/// after release). Seen through inotify on the lock directory; see
/// `ul_options.on_update_waiting` for a callback. Thread-safe.
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_lock_update_waiting(lock: *const ul_lock) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { lock.as_ref() }.is_some_and(|l| l.inner.update_waiting())
    })
}

/// Number of lock paths the handle covers (0 for NULL). The same file reached by two names
/// is locked, and counted, once. Thread-safe.
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_lock_path_count(lock: *const ul_lock) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { lock.as_ref() }.map_or(0, |l| l.inner.paths().len())
    })
}

/// The `index`-th lock path (in locking order) as a NUL-terminated string owned by the
/// handle: valid until `ul_release`, never free it. NULL for a NULL handle or an index out
/// of range. Thread-safe.
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_lock_path(lock: *const ul_lock, index: usize) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        let Some(l) = (unsafe { lock.as_ref() }) else {
            return std::ptr::null();
        };
        let paths = l.c_paths.get_or_init(|| {
            l.inner
                .paths()
                .iter()
                // Core rejects paths with NUL bytes, so this never falls back.
                .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap_or_default())
                .collect()
        });
        paths.get(index).map_or(std::ptr::null(), |p| p.as_ptr())
    })
}

/// The open, flocked descriptor of the `index`-th lock file, or -1 (NULL handle, index out
/// of range, or not held in this process). Owned by the handle: never close it. It is
/// close-on-exec; a launcher that wants the flock to live as long as a child process may
/// clear that flag in the child only (after fork, before exec). Thread-safe.
///
/// # Safety
/// `lock` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_lock_fd(lock: *const ul_lock, index: usize) -> c_int {
    guard_value(-1, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { lock.as_ref() }
            .and_then(|l| l.inner.raw_fds().get(index).copied())
            .unwrap_or(-1)
    })
}

/// Signal that the hand-over is complete (`io.balena.update.strategy: hand-over`): write
/// each signal file of `opts` atomically (temp file, then rename; a symlink at the name is
/// replaced, never followed). Idempotent. With the default paths a failure on the legacy
/// extras is ignored; explicitly given paths must all succeed.
///
/// `*written` (if `written` is not NULL) receives the number of signal files written.
/// Returns `UL_OK`, `UL_ERR_PERMISSION`, `UL_ERR_INVALID_PATH`, `UL_ERR_IO`,
/// `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `opts` must be NULL or a valid `ul_handover_options`; `written` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_complete(
    opts: *const ul_handover_options,
    written: *mut usize,
) -> ul_result {
    guard("ul_handover_complete", || {
        if !written.is_null() {
            // SAFETY: checked non-NULL; writable by the caller's guarantee.
            unsafe { written.write(0) };
        }
        // SAFETY: forwarded from the caller.
        let ho = unsafe { handover_options(opts, "ul_handover_complete", "opts") }?;
        let paths = handover_complete(&ho)?;
        if !written.is_null() {
            // SAFETY: as above.
            unsafe { written.write(paths.len()) };
        }
        Ok(())
    })
}

/// The library version, e.g. "0.1.0" (static string: never free it). Thread-safe.
#[no_mangle]
pub extern "C" fn ul_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}
