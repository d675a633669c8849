//! `ul_options` and `ul_handover_options`: caller-owned, versioned by `struct_size`.

use std::ffi::{c_char, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use lockcore::{CancelToken, HandoverOptions, LockOptions};

use crate::cancel::ul_cancel_token;
use crate::error::{guard, ul_result, Failure};
use crate::versioned::{self, Versioned};

/// What to lock and how. Caller-owned; initialise it with `ul_options_init` (which sets
/// `struct_size` and the defaults), then change the fields you need.
///
/// Fields may be added at the end in later versions. The library reads the fields of the
/// version `struct_size` names and gives newer fields their defaults, so a program built
/// against an older header keeps working; a larger struct (a newer header) is accepted
/// when the fields this library does not know are zero, and refused otherwise.
///
/// ```c
/// const char *paths[] = { "/tmp/balena/updates.lock" };
/// ul_options opts;
/// ul_options_init(&opts, sizeof opts);
/// opts.paths = paths;
/// opts.path_count = 1;
/// opts.timeout_ms = 30000;
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_options {
    /// Size of the caller's struct in bytes (`sizeof(ul_options)`); set by `ul_options_init`.
    pub struct_size: usize,
    /// The lock paths, in locking order (`path_count` entries). NULL or a count of 0 means
    /// the defaults: `$BALENA_APP_LOCK_PATH` (else `$RESIN_APP_LOCK_PATH`, else
    /// `/tmp/balena/updates.lock`) plus, with `legacy`, `/tmp/resin/resin-updates.lock`.
    /// Borrowed for the duration of each call only.
    pub paths: *const *const c_char,
    /// Number of entries in `paths`.
    pub path_count: usize,
    /// With the default paths, also lock the legacy `/tmp/resin/resin-updates.lock`.
    /// Default true; ignored when `paths` are given.
    pub legacy: bool,
    /// How long `ul_acquire` waits: negative waits forever (default -1), 0 tries once,
    /// otherwise milliseconds (monotonic clock).
    pub timeout_ms: i64,
    /// Take over locks left by dead holders (our record, nobody holds its flock). Default
    /// true.
    pub reclaim_stale: bool,
    /// Create a missing lock directory with mode 1777, as the Supervisor does. Default true.
    pub create_dir: bool,
    /// Program name written in the holder record (UTF-8), shown by `lockctl status`. NULL
    /// (default) means this process's name.
    pub program: *const c_char,
    /// A token that cancels a waiting `ul_acquire` from another thread or a signal handler
    /// (`ul_cancel_token_cancel`). NULL (default): no cancellation. Borrowed: it must stay
    /// alive until the call returns.
    pub cancel: *const ul_cancel_token,
    /// Shared mode (default false: exclusive): other shared holders of the app (threads with
    /// their own handle, processes, containers of the same uid) hold the lock at the same
    /// time, and the last one out removes it. The Supervisor and the reboot still see it
    /// held; an exclusive holder, another uid's lock and the Supervisor's are waited for.
    /// (Added in 0.2: a program built against the 0.1 header passes the smaller size and
    /// gets exclusive mode.)
    pub shared: bool,
    /// Called when `ul_acquire` has to wait: who holds the lock, once when the wait starts
    /// and every 10 s while it goes on, on the waiting thread, with `on_wait_data`. NULL
    /// (default): nothing is called. The callback must return promptly and must not call
    /// `ul_acquire` on the same paths. (Added in 0.2.)
    pub on_wait: ul_wait_fn,
    /// Passed to `on_wait` as is. (Added in 0.2.)
    pub on_wait_data: *mut c_void,
    /// Called once per hold when the balena Supervisor tries to take the lock while it is
    /// held (an update waits for this program to release it), with
    /// `on_update_waiting_data`. It runs on a **background thread of the library**, not on
    /// the thread that took the lock: make it thread-safe and short (set a flag the program
    /// looks at). NULL (default): nothing is called; `ul_lock_update_waiting` still
    /// answers. (Added in 0.2.)
    pub on_update_waiting: ul_update_waiting_fn,
    /// Passed to `on_update_waiting` as is. (Added in 0.2.)
    pub on_update_waiting_data: *mut c_void,
    /// After the Supervisor was seen trying to take the lock, how long `ul_acquire` waits
    /// at most, in milliseconds, while the lock is free, so that the update gets in first
    /// (default 60000, or `$UPDATE_LOCK_YIELD_TO_UPDATES` seconds when set; 0 never
    /// yields). The yield ends when the Supervisor's lock appears;
    /// it counts against `timeout_ms` (a try-once acquisition gets `UL_ERR_HELD` with the
    /// holder state `UL_STATE_UPDATE_WAITING`). A held lock is never taken away by this.
    /// (Added in 0.2.)
    pub yield_to_updates_ms: u32,
}

/// What `ul_options.on_wait` is told while `ul_acquire` waits. Every pointer is valid only
/// during the call.
#[repr(C)]
#[derive(Debug)]
pub struct ul_wait_info {
    /// The lock path that blocks the acquisition.
    pub path: *const c_char,
    /// The holder's state, as `ul_state_name` spells it ("held-by-app",
    /// "held-by-supervisor", "stale", "foreign", "changing"): a static string.
    pub state: *const c_char,
    /// One line for people: who holds it and for how long we have waited.
    pub message: *const c_char,
    /// How long the acquisition has waited so far, in milliseconds.
    pub waited_ms: u64,
}

/// What `ul_options.on_update_waiting` is told. Every pointer is valid only during the call.
#[repr(C)]
#[derive(Debug)]
pub struct ul_update_waiting_info {
    /// The held lock path (the first one in the directory where the attempt was seen).
    pub path: *const c_char,
    /// The name of the Supervisor's `lockfile` temp file seen in the lock directory.
    pub temp_name: *const c_char,
    /// One line for people.
    pub message: *const c_char,
    /// When the attempt was seen, in milliseconds since the Unix epoch.
    pub seen_unix_ms: u64,
    /// The temp file was still there and owned by uid 65534 (false: it was gone before it
    /// could be looked at; its name alone says it was `lockfile`'s).
    pub proven: bool,
}

/// The `on_update_waiting` callback: `info` is valid during the call only; `data` is
/// `on_update_waiting_data`. Runs on a background thread of the library.
pub type ul_update_waiting_fn =
    Option<unsafe extern "C" fn(info: *const ul_update_waiting_info, data: *mut c_void)>;

/// The caller's update-waiting callback and data.
struct UpdateWaitingCallback {
    f: unsafe extern "C" fn(*const ul_update_waiting_info, *mut c_void),
    data: *mut c_void,
}

// SAFETY: the documentation of `ul_options.on_update_waiting` tells the caller that the
// callback runs on a background thread with this data: thread safety is the caller's
// promise; the pointer is passed through untouched.
unsafe impl Send for UpdateWaitingCallback {}
// SAFETY: as above: the callback is only ever called, never shared for mutation.
unsafe impl Sync for UpdateWaitingCallback {}

impl UpdateWaitingCallback {
    fn call(&self, w: &lockcore::UpdateWaiting) {
        let text = |s: String| CString::new(s.replace('\0', "?")).unwrap_or_default();
        let path = text(w.path.display().to_string());
        let temp_name = text(w.temp_name.clone());
        let message = text(w.describe());
        let seen = w
            .seen_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let info = ul_update_waiting_info {
            path: path.as_ptr(),
            temp_name: temp_name.as_ptr(),
            message: message.as_ptr(),
            seen_unix_ms: seen.min(u64::MAX as u128) as u64,
            proven: w.proven,
        };
        // SAFETY: a C function pointer the caller gave for exactly this call, with a valid
        // info for the duration of the call and the caller's own data.
        unsafe { (self.f)(&info, self.data) }
    }
}

/// The `on_wait` callback: `info` is valid during the call only; `data` is `on_wait_data`.
pub type ul_wait_fn = Option<unsafe extern "C" fn(info: *const ul_wait_info, data: *mut c_void)>;

/// The caller's callback and data, called from the waiting thread (the caller promised the
/// callback may run there, as the struct documents).
struct WaitCallback {
    f: unsafe extern "C" fn(*const ul_wait_info, *mut c_void),
    data: *mut c_void,
}

// SAFETY: the hook runs on the thread that called `ul_acquire` (the core waits on the
// caller's thread), which the documentation of `ul_options.on_wait` makes the caller's
// promise; the pointer is passed through untouched.
unsafe impl Send for WaitCallback {}
// SAFETY: as above: the callback is only ever called, never shared for mutation.
unsafe impl Sync for WaitCallback {}

impl WaitCallback {
    fn call(&self, p: &lockcore::WaitProgress<'_>) {
        let text = |s: String| CString::new(s.replace('\0', "?")).unwrap_or_default();
        let path = text(p.path.display().to_string());
        let message = text(p.describe());
        let state = CString::new(p.holder.state_name()).unwrap_or_default();
        let info = ul_wait_info {
            path: path.as_ptr(),
            state: state.as_ptr(),
            message: message.as_ptr(),
            waited_ms: p.waited.as_millis().min(u64::MAX as u128) as u64,
        };
        // SAFETY: a C function pointer the caller gave for exactly this call, with a valid
        // info for the duration of the call and the caller's own data.
        unsafe { (self.f)(&info, self.data) }
    }
}

/// Which hand-over signal files `ul_handover_complete` writes (and `ul_status` reports).
/// Caller-owned; initialise it with `ul_handover_options_init`. Versioned by `struct_size`
/// like `ul_options`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_handover_options {
    /// Size of the caller's struct in bytes; set by `ul_handover_options_init`.
    pub struct_size: usize,
    /// The signal paths (`path_count` entries). NULL or a count of 0 means the defaults:
    /// `$BALENA_SERVICE_HANDOVER_COMPLETE_PATH` (else `$RESIN_SERVICE_KILL_ME_PATH`, else
    /// `/tmp/balena/handover-complete`) plus, with `legacy`, `/tmp/resin/resin-kill-me` and
    /// `/data/resin-kill-me` when `/data` exists. Borrowed for each call only.
    pub paths: *const *const c_char,
    /// Number of entries in `paths`.
    pub path_count: usize,
    /// With the default paths, also write the legacy signals. Default true.
    pub legacy: bool,
}

impl Versioned for ul_options {
    const NAME: &'static str = "ul_options";
    const VERSIONS: &'static [(usize, usize)] = &[
        // 0.1
        crate::versioned::version_ending_at!(ul_options, cancel, *const ul_cancel_token),
        // 0.2: `shared`, `on_wait`, `on_wait_data`, `on_update_waiting`,
        // `on_update_waiting_data`, `yield_to_updates_ms`
        crate::versioned::version_ending_at!(ul_options, yield_to_updates_ms, u32),
    ];
    fn defaults() -> Self {
        ul_options {
            struct_size: std::mem::size_of::<Self>(),
            paths: std::ptr::null(),
            path_count: 0,
            legacy: true,
            timeout_ms: -1,
            reclaim_stale: true,
            create_dir: true,
            program: std::ptr::null(),
            cancel: std::ptr::null(),
            shared: false,
            on_wait: None,
            on_wait_data: std::ptr::null_mut(),
            on_update_waiting: None,
            on_update_waiting_data: std::ptr::null_mut(),
            yield_to_updates_ms: lockcore::default_yield_to_updates()
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
        }
    }
}

impl Versioned for ul_handover_options {
    const NAME: &'static str = "ul_handover_options";
    const VERSIONS: &'static [(usize, usize)] = &[crate::versioned::version_ending_at!(
        ul_handover_options,
        legacy,
        bool
    )];
    fn defaults() -> Self {
        ul_handover_options {
            struct_size: std::mem::size_of::<Self>(),
            paths: std::ptr::null(),
            path_count: 0,
            legacy: true,
        }
    }
}

/// The caller's path list.
///
/// # Safety
/// `paths` is NULL or points to `count` pointers, each NULL or a NUL-terminated string.
pub(crate) unsafe fn path_list(
    paths: *const *const c_char,
    count: usize,
    func: &str,
    arg: &str,
) -> Result<Vec<PathBuf>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if paths.is_null() {
        return Err(Failure::null(
            func,
            &format!("{arg}->paths (with path_count {count})"),
        ));
    }
    let mut v = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the caller guarantees `count` entries.
        let p = unsafe { paths.add(i).read() };
        if p.is_null() {
            return Err(Failure::null(func, &format!("{arg}->paths[{i}]")));
        }
        // Bytes as given: core rejects paths that are not UTF-8 with `invalid-path`.
        // SAFETY: a NUL-terminated string, by the caller's guarantee.
        let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
        v.push(PathBuf::from(OsStr::from_bytes(bytes)));
    }
    Ok(v)
}

/// Core options (and the cancel token) from a caller's `ul_options`.
///
/// # Safety
/// `opts` is NULL or a valid `ul_options` whose pointers follow its documentation.
pub(crate) unsafe fn lock_options(
    opts: *const ul_options,
    func: &str,
    arg: &str,
) -> Result<(LockOptions, Option<CancelToken>), Failure> {
    // SAFETY: forwarded from the caller.
    let o = unsafe { versioned::read(opts, func, arg) }?;
    // SAFETY: forwarded from the caller.
    let paths = unsafe { path_list(o.paths, o.path_count, func, arg) }?;
    let mut lo = LockOptions::new()
        .paths(paths)
        .legacy(o.legacy)
        .timeout(u64::try_from(o.timeout_ms).ok().map(Duration::from_millis))
        .reclaim_stale(o.reclaim_stale)
        .create_dir(o.create_dir)
        .shared(o.shared)
        .yield_to_updates(Duration::from_millis(u64::from(o.yield_to_updates_ms)));
    if let Some(f) = o.on_update_waiting {
        let cb = UpdateWaitingCallback {
            f,
            data: o.on_update_waiting_data,
        };
        lo = lo.on_update_waiting(move |w| cb.call(w));
    }
    if let Some(f) = o.on_wait {
        let cb = WaitCallback {
            f,
            data: o.on_wait_data,
        };
        lo = lo.on_wait(lockcore::DEFAULT_WAIT_REPORT, move |p| cb.call(p));
    }
    if !o.program.is_null() {
        // SAFETY: a NUL-terminated string, by the caller's guarantee.
        let program = unsafe { CStr::from_ptr(o.program) };
        let program = program.to_str().map_err(|_| {
            Failure::invalid(format!(
                "{func}: {arg}->program is not valid UTF-8 ({}); pass a UTF-8 program name or NULL",
                program.to_string_lossy()
            ))
        })?;
        lo = lo.program(program);
    }
    // SAFETY: NULL or a live token, by the caller's guarantee.
    let cancel = unsafe { o.cancel.as_ref() }.map(|t| t.inner.clone());
    Ok((lo, cancel))
}

/// Core hand-over options from a caller's `ul_handover_options`.
///
/// # Safety
/// `opts` is NULL or a valid `ul_handover_options`.
pub(crate) unsafe fn handover_options(
    opts: *const ul_handover_options,
    func: &str,
    arg: &str,
) -> Result<HandoverOptions, Failure> {
    // SAFETY: forwarded from the caller.
    let o = unsafe { versioned::read(opts, func, arg) }?;
    // SAFETY: forwarded from the caller.
    let paths = unsafe { path_list(o.paths, o.path_count, func, arg) }?;
    Ok(HandoverOptions::new().paths(paths).legacy(o.legacy))
}

/// Fill `*opts` with the defaults and set `opts->struct_size = struct_size`: default paths
/// (NULL, 0), `legacy` true, `timeout_ms` -1 (wait forever), `reclaim_stale` true,
/// `create_dir` true, `program` NULL, `cancel` NULL, `shared` false, callbacks NULL,
/// `yield_to_updates_ms` 60000 (or `$UPDATE_LOCK_YIELD_TO_UPDATES` seconds).
///
/// Call it as `ul_options_init(&opts, sizeof opts)`. Returns `UL_OK`,
/// `UL_ERR_NULL_ARGUMENT` or `UL_ERR_INVALID_ARGUMENT` (`struct_size` is not the size of
/// any version of `ul_options`). The size of an older version (an older header) gets that
/// version's fields; bytes past this library's struct (a newer header) are zeroed.
/// Thread-safe.
///
/// # Safety
/// `opts` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_options_init(opts: *mut ul_options, struct_size: usize) -> ul_result {
    guard("ul_options_init", || {
        if opts.is_null() {
            return Err(Failure::null("ul_options_init", "opts"));
        }
        // SAFETY: the caller guarantees `struct_size` writable bytes.
        unsafe { versioned::init(opts, struct_size) }
    })
}

/// Fill `*opts` with the defaults (default paths, `legacy` true) and set
/// `opts->struct_size = struct_size`. Call it as
/// `ul_handover_options_init(&opts, sizeof opts)`. Results as `ul_options_init`.
/// Thread-safe.
///
/// # Safety
/// `opts` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_options_init(
    opts: *mut ul_handover_options,
    struct_size: usize,
) -> ul_result {
    guard("ul_handover_options_init", || {
        if opts.is_null() {
            return Err(Failure::null("ul_handover_options_init", "opts"));
        }
        // SAFETY: the caller guarantees `struct_size` writable bytes.
        unsafe { versioned::init(opts, struct_size) }
    })
}
