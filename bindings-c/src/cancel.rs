//! `ul_cancel_token`: ends a waiting `ul_acquire` from another thread or a signal handler.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lockcore::CancelToken;

use crate::error::{guard, guard_value, ul_result, Failure};

/// A cancellation token (opaque; wraps the core's `CancelToken`, an eventfd). Created by
/// `ul_cancel_token_new`, freed by `ul_cancel_token_free`. Put it in `ul_options.cancel`;
/// `ul_cancel_token_cancel` then ends any wait using it with `UL_ERR_CANCELLED` (nothing is
/// taken). Once cancelled it stays cancelled: make a new token for the next wait.
pub struct ul_cancel_token {
    pub(crate) inner: CancelToken,
}

/// Create a token. On success `*out` owns it (free it with `ul_cancel_token_free`); on
/// failure `*out` is NULL. Returns `UL_OK`, `UL_ERR_NULL_ARGUMENT` or `UL_ERR_IO` (no
/// eventfd could be made, e.g. out of file descriptors). Thread-safe.
///
/// # Safety
/// `out` must be NULL or point to a writable `ul_cancel_token *`.
#[no_mangle]
pub unsafe extern "C" fn ul_cancel_token_new(out: *mut *mut ul_cancel_token) -> ul_result {
    guard("ul_cancel_token_new", || {
        if out.is_null() {
            return Err(Failure::null("ul_cancel_token_new", "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        let inner = CancelToken::new().map_err(|e| {
            Failure::Binding(
                ul_result::UL_ERR_IO,
                format!("ul_cancel_token_new: cannot create an eventfd: {e}"),
            )
        })?;
        let token = Box::into_raw(Box::new(ul_cancel_token { inner }));
        // SAFETY: as above.
        unsafe { out.write(token) };
        Ok(())
    })
}

/// Cancel every wait using `token`, now and later. NULL is ignored.
///
/// Safe to call from any thread and from a signal handler: it is one write(2) to an
/// eventfd, allocates nothing, takes no lock and does not touch the thread's last error.
///
/// # Safety
/// `token` must be NULL or a live token from `ul_cancel_token_new`.
#[no_mangle]
pub unsafe extern "C" fn ul_cancel_token_cancel(token: *const ul_cancel_token) {
    // Not `guard`: no thread-local access here (signal handlers).
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: NULL or live, by the caller's guarantee.
        if let Some(t) = unsafe { token.as_ref() } {
            t.inner.cancel();
        }
    }));
}

/// Whether `ul_cancel_token_cancel` was called on `token` (false for NULL). Thread-safe.
///
/// # Safety
/// `token` must be NULL or a live token from `ul_cancel_token_new`.
#[no_mangle]
pub unsafe extern "C" fn ul_cancel_token_is_cancelled(token: *const ul_cancel_token) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { token.as_ref() }.is_some_and(|t| t.inner.is_cancelled())
    })
}

/// Free a token. NULL is ignored. Only call it once no call using the token is running
/// (a `ul_acquire` that was given it must have returned) and no other thread or signal
/// handler can still cancel it.
///
/// # Safety
/// `token` must be NULL or a token from `ul_cancel_token_new` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ul_cancel_token_free(token: *mut ul_cancel_token) {
    guard_value((), || {
        if !token.is_null() {
            // SAFETY: made by `Box::into_raw` in `ul_cancel_token_new`, freed once.
            drop(unsafe { Box::from_raw(token) });
        }
    })
}
