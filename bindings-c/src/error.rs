//! Result codes, the thread's last error, and the guard every entry point runs in.

use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lockcore::{ApiFailure, ErrorCode, HandoverFailure, Holder};

use crate::holder::{fill_holder, ul_holder};
use crate::strings::{copy_truncated, StringArena};

/// Result of every fallible `ul_` function. The numbers are stable and never reused.
///
/// 1 to 13 are the core's error kinds, with the core's numbers (`ul_result_name` gives the
/// core's code string, e.g. "held"); 100 and up are errors of the C binding itself.
/// After any code but `UL_OK`, `ul_last_error_message` gives the core's message (which path,
/// who holds it, what to do next).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ul_result {
    /// Success.
    UL_OK = 0,
    /// "held": the lock is held by someone else (the Supervisor, another app, a dead holder
    /// with reclaim turned off, or a file update-lock did not create), and no wait was asked
    /// for. `ul_last_error_holder` says who.
    UL_ERR_HELD = 1,
    /// "timeout": the lock stayed held for the whole timeout. `ul_last_error_holder` says who
    /// held it last.
    UL_ERR_TIMEOUT = 2,
    /// "lost": a lock we held was deleted or replaced (the Supervisor's lock override does
    /// this).
    UL_ERR_LOST = 3,
    /// "permission": the operating system refused (read-only or foreign-owned directory).
    UL_ERR_PERMISSION = 4,
    /// "supervisor-uid": the process runs as uid 65534, whose lock files the Supervisor
    /// treats as its own.
    UL_ERR_SUPERVISOR_UID = 5,
    /// "invalid-path": empty, not UTF-8, too long, not a file name, directory missing, or a
    /// symlinked directory in a world-writable place.
    UL_ERR_INVALID_PATH = 6,
    /// "io": any other operating-system error (out of file descriptors, disk full, ...).
    UL_ERR_IO = 7,
    /// "cancelled": the wait was cancelled through a `ul_cancel_token`; nothing was taken.
    UL_ERR_CANCELLED = 8,
    /// "not-held": the handle does not hold the lock (in a child created by fork()).
    UL_ERR_NOT_HELD = 9,
    /// "handover": a hand-over between the old and the new version did not happen (the
    /// peer stalled, crashed, refused, runs as another user, or another successor won).
    UL_ERR_HANDOVER = 10,
    /// "api": a call to the Supervisor API failed (not configured, unreachable, timed out,
    /// key refused, an error answer); `ul_last_error_api_reason()` says why. A refusal
    /// because an update lock is held (HTTP 423) is `UL_ERR_HELD`.
    UL_ERR_API = 11,
    /// "unknown": the lock could not be looked at (out of file descriptors, a directory
    /// that may not be searched): whether it is held is unknown, and nothing was changed or
    /// deleted. Never read it as free.
    UL_ERR_UNKNOWN = 12,
    /// "already-held": this process already holds the lock path (another handle or
    /// thread), and the two cannot share it. Reuse the handle you hold, or take both with
    /// `shared` set in `ul_options`.
    UL_ERR_ALREADY_HELD = 13,
    /// "null-argument": a required pointer argument was NULL.
    UL_ERR_NULL_ARGUMENT = 100,
    /// "invalid-argument": an argument is malformed (a struct_size smaller than the struct
    /// this library knows, a program name that is not UTF-8).
    UL_ERR_INVALID_ARGUMENT = 101,
    /// "buffer-too-small": the caller's arrays or string buffer are too small; the call
    /// reports the sizes it needs.
    UL_ERR_BUFFER_TOO_SMALL = 102,
    /// "panic": an internal error (a bug in update-lock) was caught at the FFI boundary.
    UL_ERR_PANIC = 199,
}

impl ul_result {
    /// The stable string code: the core's for core kinds.
    pub(crate) fn name(self) -> &'static std::ffi::CStr {
        match self {
            ul_result::UL_OK => c"ok",
            ul_result::UL_ERR_HELD => c"held",
            ul_result::UL_ERR_TIMEOUT => c"timeout",
            ul_result::UL_ERR_LOST => c"lost",
            ul_result::UL_ERR_PERMISSION => c"permission",
            ul_result::UL_ERR_SUPERVISOR_UID => c"supervisor-uid",
            ul_result::UL_ERR_INVALID_PATH => c"invalid-path",
            ul_result::UL_ERR_IO => c"io",
            ul_result::UL_ERR_CANCELLED => c"cancelled",
            ul_result::UL_ERR_NOT_HELD => c"not-held",
            ul_result::UL_ERR_HANDOVER => c"handover",
            ul_result::UL_ERR_API => c"api",
            ul_result::UL_ERR_UNKNOWN => c"unknown",
            ul_result::UL_ERR_ALREADY_HELD => c"already-held",
            ul_result::UL_ERR_NULL_ARGUMENT => c"null-argument",
            ul_result::UL_ERR_INVALID_ARGUMENT => c"invalid-argument",
            ul_result::UL_ERR_BUFFER_TOO_SMALL => c"buffer-too-small",
            ul_result::UL_ERR_PANIC => c"panic",
        }
    }

    pub(crate) const ALL: [ul_result; 18] = [
        ul_result::UL_OK,
        ul_result::UL_ERR_HELD,
        ul_result::UL_ERR_TIMEOUT,
        ul_result::UL_ERR_LOST,
        ul_result::UL_ERR_PERMISSION,
        ul_result::UL_ERR_SUPERVISOR_UID,
        ul_result::UL_ERR_INVALID_PATH,
        ul_result::UL_ERR_IO,
        ul_result::UL_ERR_CANCELLED,
        ul_result::UL_ERR_NOT_HELD,
        ul_result::UL_ERR_HANDOVER,
        ul_result::UL_ERR_API,
        ul_result::UL_ERR_UNKNOWN,
        ul_result::UL_ERR_ALREADY_HELD,
        ul_result::UL_ERR_NULL_ARGUMENT,
        ul_result::UL_ERR_INVALID_ARGUMENT,
        ul_result::UL_ERR_BUFFER_TOO_SMALL,
        ul_result::UL_ERR_PANIC,
    ];
}

impl From<ErrorCode> for ul_result {
    fn from(code: ErrorCode) -> ul_result {
        match code {
            ErrorCode::Held => ul_result::UL_ERR_HELD,
            ErrorCode::Timeout => ul_result::UL_ERR_TIMEOUT,
            ErrorCode::Lost => ul_result::UL_ERR_LOST,
            ErrorCode::Permission => ul_result::UL_ERR_PERMISSION,
            ErrorCode::SupervisorUid => ul_result::UL_ERR_SUPERVISOR_UID,
            ErrorCode::InvalidPath => ul_result::UL_ERR_INVALID_PATH,
            ErrorCode::Io => ul_result::UL_ERR_IO,
            ErrorCode::Cancelled => ul_result::UL_ERR_CANCELLED,
            ErrorCode::NotHeld => ul_result::UL_ERR_NOT_HELD,
            ErrorCode::Handover => ul_result::UL_ERR_HANDOVER,
            ErrorCode::Api => ul_result::UL_ERR_API,
            ErrorCode::Unknown => ul_result::UL_ERR_UNKNOWN,
            ErrorCode::AlreadyHeld => ul_result::UL_ERR_ALREADY_HELD,
        }
    }
}

/// Why an entry point failed: a core error, or a problem with the C call itself.
#[derive(Debug)]
pub(crate) enum Failure {
    Core(lockcore::Error),
    Binding(ul_result, String),
}

impl From<lockcore::Error> for Failure {
    fn from(e: lockcore::Error) -> Failure {
        Failure::Core(e)
    }
}

impl Failure {
    pub(crate) fn null(func: &str, arg: &str) -> Failure {
        Failure::Binding(
            ul_result::UL_ERR_NULL_ARGUMENT,
            format!("{func}: the argument `{arg}` is NULL; pass a valid pointer"),
        )
    }

    pub(crate) fn invalid(message: String) -> Failure {
        Failure::Binding(ul_result::UL_ERR_INVALID_ARGUMENT, message)
    }
}

/// The thread's last error.
struct LastError {
    code: ul_result,
    message: String,
    path: Vec<u8>,
    holder: Option<Holder>,
    handover: Option<HandoverFailure>,
    api: Option<ApiFailure>,
}

thread_local! {
    static LAST: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn set_last(err: Option<LastError>) {
    // `try_with`: during thread teardown the slot may be gone; nothing to record then.
    let _ = LAST.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = err;
        }
    });
}

fn with_last<R>(f: impl Fn(Option<&LastError>) -> R) -> R {
    LAST.try_with(|l| l.try_borrow().ok().map(|slot| f(slot.as_ref())))
        .ok()
        .flatten()
        .unwrap_or_else(|| f(None))
}

fn record(failure: Failure) -> ul_result {
    let last = match failure {
        Failure::Core(e) => LastError {
            code: e.code().into(),
            message: e.to_string(),
            path: e
                .path()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .unwrap_or_default(),
            holder: e.holder().cloned(),
            handover: e.handover_failure(),
            api: e.api_failure(),
        },
        Failure::Binding(code, message) => LastError {
            code,
            message,
            path: Vec::new(),
            holder: None,
            handover: None,
            api: None,
        },
    };
    let code = last.code;
    set_last(Some(last));
    code
}

fn panic_message(func: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("{func}: internal error (panic: {what}); this is a bug in update-lock, please report it; no lock was taken by this call")
}

/// Run an entry point: catch any panic, record the thread's last error on failure and clear
/// it on success.
pub(crate) fn guard(func: &'static str, f: impl FnOnce() -> Result<(), Failure>) -> ul_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last(None);
            ul_result::UL_OK
        }
        Ok(Err(failure)) => record(failure),
        Err(payload) => {
            let message = panic_message(func, payload.as_ref());
            // Dropping the payload could itself panic: hand it to a guard of its own.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            record(Failure::Binding(ul_result::UL_ERR_PANIC, message))
        }
    }
}

/// Run a function that returns a value instead of a `ul_result` (accessors): a panic gives
/// `fallback`; the thread's last error is left alone.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The static name of a result code: "ok", the core's code string for 1 to 10 ("held",
/// "timeout", "lost", "permission", "supervisor-uid", "invalid-path", "io", "cancelled",
/// "not-held", "handover"), "null-argument", "invalid-argument", "buffer-too-small",
/// "panic", and "unknown" for any other number.
///
/// Takes an `int` so that any number can be passed. The string is static: never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn ul_result_name(code: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        ul_result::ALL
            .iter()
            .find(|r| **r as c_int == code)
            .map(|r| r.name())
            .unwrap_or(c"unknown")
            .as_ptr()
    })
}

/// The result code of this thread's last failed `ul_` call, or `UL_OK` if the last call
/// that returns a `ul_result` succeeded (or none was made yet).
///
/// Thread-safe: every thread has its own last error.
#[no_mangle]
pub extern "C" fn ul_last_error_code() -> ul_result {
    guard_value(ul_result::UL_OK, || {
        with_last(|l| l.map(|l| l.code).unwrap_or(ul_result::UL_OK))
    })
}

/// Copy this thread's last error message (the core's message: the path, who holds it, what
/// to do next) into `buf`, a caller-owned buffer of `len` bytes; nothing to free.
///
/// Returns the full length of the message in bytes, without the terminating NUL: the
/// message was truncated when the return value is `>= len` (call again with a buffer of
/// return value + 1 bytes). With `len > 0` the buffer always ends with a NUL, and a
/// truncated message is cut at a UTF-8 character boundary; bytes after the NUL are left
/// alone. `buf` may be NULL when `len` is 0 (to ask for the length). The message is ""
/// (length 0) when the last call succeeded.
///
/// Does not change the thread's last error. Thread-safe (per-thread message).
///
/// # Safety
/// `buf` must be NULL or point to at least `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        with_last(|l| {
            let msg = l.map(|l| l.message.as_bytes()).unwrap_or(b"");
            // SAFETY: the caller guarantees `buf` has `len` writable bytes (or is NULL).
            unsafe { copy_truncated(msg, buf, len) }
        })
    })
}

/// Copy the path this thread's last error is about (e.g. the lock path that is held) into
/// `buf`, exactly like `ul_last_error_message`. "" when the error names no path.
///
/// Does not change the thread's last error. Thread-safe (per-thread).
///
/// # Safety
/// `buf` must be NULL or point to at least `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_last_error_path(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        with_last(|l| {
            let path = l.map(|l| l.path.as_slice()).unwrap_or(b"");
            // SAFETY: as in `ul_last_error_message`.
            unsafe { copy_truncated(path, buf, len) }
        })
    })
}

/// Who holds the lock, for this thread's last error when it was `UL_ERR_HELD` or
/// `UL_ERR_TIMEOUT`.
///
/// Fills `*out` (caller-owned). Its strings are written into `strings`, a caller-owned
/// buffer of `strings_len` bytes, and point into it (valid as long as that buffer is).
/// `*needed` (if `needed` is not NULL) receives the number of string bytes needed.
/// When the last error names no holder, `out->state` is `UL_STATE_FREE` and the call
/// returns `UL_OK`.
///
/// Returns `UL_OK`, `UL_ERR_NULL_ARGUMENT` (`out` is NULL, or `strings` is NULL with
/// `strings_len > 0`) or `UL_ERR_BUFFER_TOO_SMALL` (then `*out` is not filled: call again
/// with `*needed` bytes; 2048 bytes are enough for typical holders).
/// Unlike other functions it does NOT change the thread's last error, so it can be called
/// repeatedly. Thread-safe (per-thread).
///
/// # Safety
/// `out` must point to a writable `ul_holder`; `strings` must be NULL or point to
/// `strings_len` writable bytes; `needed` must be NULL or point to a writable size_t.
#[no_mangle]
pub unsafe extern "C" fn ul_last_error_holder(
    out: *mut ul_holder,
    strings: *mut c_char,
    strings_len: usize,
    needed: *mut usize,
) -> ul_result {
    guard_value(ul_result::UL_ERR_PANIC, || {
        if out.is_null() || (strings.is_null() && strings_len > 0) {
            return ul_result::UL_ERR_NULL_ARGUMENT;
        }
        with_last(|l| {
            let holder = l.and_then(|l| l.holder.as_ref());
            // SAFETY: the caller guarantees the buffer.
            let mut arena = unsafe { StringArena::new(strings, strings_len) };
            // Measuring pass: nothing is written, only sizes are added up.
            let mut measure = StringArena::measure();
            let _ = fill_holder(holder, &mut measure);
            if !needed.is_null() {
                // SAFETY: checked non-NULL; the caller guarantees it is writable.
                unsafe { needed.write(measure.needed()) };
            }
            if measure.needed() > strings_len {
                return ul_result::UL_ERR_BUFFER_TOO_SMALL;
            }
            let filled = fill_holder(holder, &mut arena);
            // SAFETY: checked non-NULL; the caller guarantees it is writable.
            unsafe { out.write(filled) };
            ul_result::UL_OK
        })
    })
}

/// The stable string of a hand-over failure reason, as a static C string.
pub(crate) fn handover_reason_name(reason: HandoverFailure) -> &'static std::ffi::CStr {
    const NAMES: [&std::ffi::CStr; 11] = [
        c"stalled",
        c"peer-gone",
        c"taken",
        c"uid",
        c"version",
        c"protocol",
        c"refused",
        c"already-serving",
        c"finished",
        c"too-large",
        c"blocked",
    ];
    NAMES
        .into_iter()
        .find(|n| n.to_bytes() == reason.as_str().as_bytes())
        .unwrap_or(c"unknown")
}

/// Why this thread's last hand-over failed, when its last error is `UL_ERR_HANDOVER`: one
/// of the core's stable reason strings, the same in every binding and in `lockctl`:
///
/// * "stalled": the peer did not answer a step within its timeout;
/// * "peer-gone": the peer closed the connection mid-transfer (it crashed or exited);
/// * "taken": another successor already took over from that old version;
/// * "uid": the peer runs as a user that is not ours, not root and not in `peer_uids`;
/// * "version": the two versions share no protocol version;
/// * "protocol": the peer does not speak the hand-over protocol;
/// * "refused": the old version refused (`ul_handover_server_refuse`) or failed its release
///   step; it keeps serving;
/// * "already-serving": another process already serves hand-over on that socket;
/// * "finished": this server has already handed over or was closed;
/// * "too-large": the state or the descriptors exceed the limits;
/// * "blocked": something that is not a live hand-over server we may use (a file, fifo,
///   symlink, another user's dead socket or companion lock) stands at the socket path; it
///   is never removed: start without hand-over and remove it.
///
/// NULL when the last error is not `UL_ERR_HANDOVER` (or there is none). The string is
/// static: never free it. Does not change the thread's last error. Thread-safe (per-thread).
#[no_mangle]
pub extern "C" fn ul_last_error_handover_reason() -> *const c_char {
    guard_value(std::ptr::null(), || {
        with_last(|l| {
            l.and_then(|l| l.handover)
                .map_or(std::ptr::null(), |r| handover_reason_name(r).as_ptr())
        })
    })
}

/// The stable string of a Supervisor API failure reason, as a static C string.
pub(crate) fn api_reason_name(reason: ApiFailure) -> &'static std::ffi::CStr {
    const NAMES: [&std::ffi::CStr; 6] = [
        c"not-configured",
        c"unreachable",
        c"timeout",
        c"unauthorized",
        c"http-status",
        c"bad-response",
    ];
    NAMES
        .into_iter()
        .find(|n| n.to_bytes() == reason.as_str().as_bytes())
        .unwrap_or(c"unknown")
}

/// Why this thread's last Supervisor API call failed, when its last error is `UL_ERR_API`:
/// "not-configured" (no address or key: not on a device, or the service lacks the
/// `io.balena.features.supervisor-api` label), "unreachable", "timeout", "unauthorized"
/// (the key was refused), "http-status" (another error answer) or "bad-response".
///
/// NULL when the last error is not `UL_ERR_API` (or there is none). The string is static:
/// never free it. Does not change the thread's last error. Thread-safe (per-thread).
#[no_mangle]
pub extern "C" fn ul_last_error_api_reason() -> *const c_char {
    guard_value(std::ptr::null(), || {
        with_last(|l| {
            l.and_then(|l| l.api)
                .map_or(std::ptr::null(), |r| api_reason_name(r).as_ptr())
        })
    })
}

/// Test hook (debug builds only, not in the header): panics inside the guard, to show that
/// a panic becomes `UL_ERR_PANIC` instead of crossing into C.
#[cfg(debug_assertions)]
#[no_mangle]
pub extern "C" fn ul_debug_panic() -> ul_result {
    guard("ul_debug_panic", || {
        panic!("deliberate panic from ul_debug_panic")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C codes of core kinds are the core's numbers and names, so a code means the same
    /// in C as in lockctl and the other bindings.
    #[test]
    fn core_codes_keep_their_numbers_and_names() {
        for code in ErrorCode::ALL {
            let c = ul_result::from(code);
            assert_eq!(c as u32, code.number(), "{code}");
            assert_eq!(c.name().to_str().unwrap(), code.as_str());
            let name = unsafe { std::ffi::CStr::from_ptr(ul_result_name(c as c_int)) };
            assert_eq!(name.to_str().unwrap(), code.as_str());
        }
        // Every hand-over reason has its C string.
        for r in HandoverFailure::ALL {
            assert_eq!(handover_reason_name(r).to_str().unwrap(), r.as_str());
        }
        for r in ApiFailure::ALL {
            assert_eq!(api_reason_name(r).to_str().unwrap(), r.as_str());
        }
        // Binding-only codes stay clear of the core's range.
        for c in ul_result::ALL {
            let n = c as u32;
            assert!(n == 0 || (1..=13).contains(&n) || n >= 100, "{c:?}");
        }
    }
}
