//! Hand-over between two releases of a service (`io.balena.update.strategy: hand-over`):
//! the new version takes over state and open descriptors from the old one
//! (`ul_handover_take`, `ul_inheritance`), the old version serves them
//! (`ul_handover_server`, `ul_handover_request`). The protocol lives in the core
//! (`docs/handover-protocol.md`); this module only translates.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use lockcore::{
    take_over_with, HandoverRequest, HandoverServer, Inheritance, PeerInfo, RendezvousOptions,
    WaitControl,
};

use crate::cancel::ul_cancel_token;
use crate::error::{guard, guard_value, ul_result, Failure};
use crate::options::path_list;
use crate::strings::copy_truncated;
use crate::versioned::{self, Versioned};

/// How the old and the new version find each other, and how long each step may take.
/// Used by both sides (`ul_handover_take` and `ul_handover_server_bind`). Caller-owned;
/// initialise it with `ul_rendezvous_options_init`, then change the fields you need.
/// Versioned by `struct_size` like `ul_options`.
///
/// ```c
/// ul_rendezvous_options ro;
/// ul_rendezvous_options_init(&ro, sizeof ro);
/// ro.release = "v2";                         // how this version names itself
/// ro.socket = "/tmp/balena/handover.sock";   // or NULL: the default
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_rendezvous_options {
    /// Size of the caller's struct in bytes; set by `ul_rendezvous_options_init`.
    pub struct_size: usize,
    /// The hand-over socket (a Unix domain socket in the directory the old and the new
    /// container share). NULL or "" (default): `handover.sock` beside the handover-complete
    /// signal, i.e. beside `$BALENA_SERVICE_HANDOVER_COMPLETE_PATH` (by default
    /// `/tmp/balena/handover.sock`). Borrowed for each call only.
    pub socket: *const c_char,
    /// How this version names itself to the other (release name, version, commit), UTF-8.
    /// NULL (default) means "".
    pub release: *const c_char,
    /// How long the peer may take to answer one protocol step, in milliseconds; must be
    /// positive. Default 5000.
    pub step_timeout_ms: i64,
    /// How long the successor waits for the old version's release step and its state, in
    /// milliseconds; must be positive. Default 10000 (the Supervisor's default stop grace
    /// period). Only used by `ul_handover_take`.
    pub release_timeout_ms: i64,
    /// The largest state either side accepts, in bytes (default 1 MiB; at most 64 MiB is
    /// used).
    pub max_state: usize,
    /// Whether a successful `ul_handover_take` writes the handover-complete signal
    /// (default true). Where: `signal_paths` if given, else `handover-complete` beside an
    /// explicit `socket`, else the Supervisor's default signal paths.
    pub signal: bool,
    /// The handover-complete signal paths to write (`signal_path_count` entries). NULL or a
    /// count of 0 (default): see `signal`. Borrowed for each call only.
    pub signal_paths: *const *const c_char,
    /// Number of entries in `signal_paths`.
    pub signal_path_count: usize,
    /// A token that ends a waiting `ul_handover_take` with `UL_ERR_CANCELLED` (nothing is
    /// taken, the old version keeps its resources). NULL (default): no cancellation.
    /// Borrowed: it must stay alive until the call returns. Ignored by
    /// `ul_handover_server_bind` (`ul_handover_server_accept` takes its own token).
    pub cancel: *const ul_cancel_token,
    /// Other uids the peer may run as, besides ours and root (`peer_uid_count` entries).
    /// NULL or a count of 0 (default): none. A peer is who `SO_PEERCRED` says it is: a
    /// successor takes nothing from a process of another uid (possibly an impostor at the
    /// socket path; `UL_ERR_HANDOVER` reason "uid", naming its pid and uid), and a server
    /// refuses such a successor. Borrowed for each call only.
    pub peer_uids: *const u32,
    /// Number of entries in `peer_uids`.
    pub peer_uid_count: usize,
}

impl Versioned for ul_rendezvous_options {
    const NAME: &'static str = "ul_rendezvous_options";
    /// Version 1 ended at `cancel`; version 2 added `peer_uids` and `peer_uid_count`.
    const VERSIONS: &'static [(usize, usize)] = &[
        crate::versioned::version_ending_at!(ul_rendezvous_options, cancel, *const ul_cancel_token),
        crate::versioned::version_ending_at!(ul_rendezvous_options, peer_uid_count, usize),
    ];
    fn defaults() -> Self {
        ul_rendezvous_options {
            struct_size: std::mem::size_of::<Self>(),
            socket: std::ptr::null(),
            release: std::ptr::null(),
            step_timeout_ms: millis(lockcore::DEFAULT_STEP_TIMEOUT),
            release_timeout_ms: millis(lockcore::DEFAULT_RELEASE_TIMEOUT),
            max_state: lockcore::DEFAULT_MAX_STATE,
            signal: true,
            signal_paths: std::ptr::null(),
            signal_path_count: 0,
            cancel: std::ptr::null(),
            peer_uids: std::ptr::null(),
            peer_uid_count: 0,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What one side of a hand-over knows about the other. Strings are UTF-8, owned by the
/// handle the struct came from. Fixed for soname 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_peer_info {
    /// The peer's pid as the kernel reports it to us (SO_PEERCRED); 0 when the peer is in
    /// a PID namespace we cannot see (another container).
    pub pid: i32,
    /// The pid the peer reports for itself (in its own PID namespace).
    pub own_pid: i32,
    /// The peer's uid (SO_PEERCRED).
    pub uid: u32,
    /// The protocol version both sides agreed on.
    pub protocol: u32,
    /// The release name the peer gave (`ul_rendezvous_options.release`); may be "".
    pub release: *const c_char,
    /// The peer's program name.
    pub program: *const c_char,
}

/// One descriptor to hand over with `ul_handover_server_grant`. Fixed for soname 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_handover_fd {
    /// The label the successor sees (e.g. "http"), UTF-8; line breaks become spaces.
    pub label: *const c_char,
    /// The descriptor (borrowed: it stays the caller's, the successor gets a copy).
    pub fd: c_int,
}

/// A `ul_peer_info` with the strings it points to.
struct CPeer {
    info: ul_peer_info,
    _release: CString,
    _program: CString,
}

fn c_string(s: &str) -> CString {
    // Peer strings come off the wire: drop any NUL rather than fail.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn c_path(p: &std::path::Path) -> CString {
    // Core rejects paths with NUL bytes, so this never falls back.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

impl CPeer {
    fn new(p: &PeerInfo) -> CPeer {
        let release = c_string(&p.release);
        let program = c_string(&p.program);
        CPeer {
            info: ul_peer_info {
                pid: p.pid,
                own_pid: p.own_pid,
                uid: p.uid,
                protocol: p.protocol,
                // The heap buffers of the CStrings do not move when the CStrings do.
                release: release.as_ptr(),
                program: program.as_ptr(),
            },
            _release: release,
            _program: program,
        }
    }
}

/// A UTF-8 string argument, or `None` for NULL.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
pub(crate) unsafe fn utf8_arg<'a>(
    s: *const c_char,
    func: &str,
    arg: &str,
) -> Result<Option<&'a str>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: NUL-terminated by the caller's guarantee.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map(Some).map_err(|_| {
        Failure::invalid(format!(
            "{func}: {arg} is not valid UTF-8 ({}); pass a UTF-8 string",
            c.to_string_lossy()
        ))
    })
}

fn positive_ms(ms: i64, func: &str, field: &str) -> Result<Duration, Failure> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Failure::invalid(format!(
                "{func}: opts->{field} is {ms}; it must be a positive number of milliseconds"
            ))
        })
}

/// Core options and the cancel token from a caller's `ul_rendezvous_options`.
///
/// # Safety
/// `opts` is NULL or a valid `ul_rendezvous_options` whose pointers follow its
/// documentation.
unsafe fn rendezvous_options(
    opts: *const ul_rendezvous_options,
    func: &str,
) -> Result<(RendezvousOptions, Option<lockcore::CancelToken>), Failure> {
    // SAFETY: forwarded from the caller.
    let o = unsafe { versioned::read(opts, func, "opts") }?;
    let mut ro = RendezvousOptions::new()
        .step_timeout(positive_ms(o.step_timeout_ms, func, "step_timeout_ms")?)
        .release_timeout(positive_ms(
            o.release_timeout_ms,
            func,
            "release_timeout_ms",
        )?)
        .max_state(o.max_state);
    if !o.socket.is_null() {
        // SAFETY: NUL-terminated by the caller's guarantee. Bytes as given: the core
        // reports a path it cannot use.
        let bytes = unsafe { CStr::from_ptr(o.socket) }.to_bytes();
        ro = ro.socket(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)));
    }
    // SAFETY: NULL or NUL-terminated, by the caller's guarantee.
    if let Some(release) = unsafe { utf8_arg(o.release, func, "opts->release") }? {
        ro = ro.release(release);
    }
    // SAFETY: forwarded from the caller.
    let signal_paths = unsafe {
        path_list(
            o.signal_paths,
            o.signal_path_count,
            func,
            "opts (signal_paths)",
        )
    }?;
    ro = if !o.signal {
        ro.signal(false)
    } else if signal_paths.is_empty() {
        ro
    } else {
        ro.signal_paths(signal_paths)
    };
    if !o.peer_uids.is_null() && o.peer_uid_count > 0 {
        // SAFETY: `peer_uid_count` readable entries, by the caller's guarantee.
        let uids = unsafe { std::slice::from_raw_parts(o.peer_uids, o.peer_uid_count) };
        ro = ro.peer_uids(uids.iter().copied());
    }
    // SAFETY: NULL or a live token, by the caller's guarantee.
    let cancel = unsafe { o.cancel.as_ref() }.map(|t| t.inner.clone());
    Ok((ro, cancel))
}

fn wait_control(cancel: Option<lockcore::CancelToken>) -> WaitControl<'static> {
    match cancel {
        Some(token) => WaitControl::new().cancel_on(token),
        None => WaitControl::new(),
    }
}

/// Fill `*opts` with the defaults and set `opts->struct_size = struct_size`: `socket` NULL
/// (the default socket), `release` NULL (""), `step_timeout_ms` 5000, `release_timeout_ms`
/// 10000, `max_state` 1 MiB, `signal` true, `signal_paths` NULL (0), `cancel` NULL,
/// `peer_uids` NULL (0).
///
/// Call it as `ul_rendezvous_options_init(&opts, sizeof opts)`. Results as
/// `ul_options_init`. Thread-safe.
///
/// # Safety
/// `opts` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_rendezvous_options_init(
    opts: *mut ul_rendezvous_options,
    struct_size: usize,
) -> ul_result {
    guard("ul_rendezvous_options_init", || {
        if opts.is_null() {
            return Err(Failure::null("ul_rendezvous_options_init", "opts"));
        }
        // SAFETY: the caller guarantees `struct_size` writable bytes.
        unsafe { versioned::init(opts, struct_size) }
    })
}

/* ------------------------------------------------------------------------------------ */
/* The new version: take over */

/// One inherited descriptor.
struct CFd {
    label: CString,
    is_socket: bool,
    /// `None` once the caller took it with `ul_inheritance_take_fd`.
    fd: Option<OwnedFd>,
}

/// What the new version got from the old one (opaque): the predecessor, the app's state
/// bytes and the descriptors, each with its label. Made by `ul_handover_take`, freed by
/// `ul_inheritance_free`, which closes every descriptor not taken with
/// `ul_inheritance_take_fd`.
///
/// Threads: the `const ul_inheritance *` functions may run concurrently;
/// `ul_inheritance_take_fd` and `ul_inheritance_free` must not run concurrently with any
/// other use of the same handle.
pub struct ul_inheritance {
    predecessor: CPeer,
    state: Vec<u8>,
    fds: Vec<CFd>,
    signalled: Vec<CString>,
    signal_error: Option<(ul_result, CString)>,
}

impl ul_inheritance {
    fn new(inh: Inheritance) -> ul_inheritance {
        let signalled = inh.signalled().iter().map(|p| c_path(p)).collect();
        let signal_error = inh
            .signal_error()
            .map(|e| (ul_result::from(e.code()), c_string(&e.to_string())));
        let (peer, state, fds) = inh.into_parts();
        let fds = fds
            .into_iter()
            .map(|f| {
                let is_socket = f.is_socket();
                let (label, fd) = f.into_parts();
                CFd {
                    label: c_string(&label),
                    is_socket,
                    fd: Some(fd),
                }
            })
            .collect();
        ul_inheritance {
            predecessor: CPeer::new(&peer),
            state,
            fds,
            signalled,
            signal_error,
        }
    }
}

/// Take over from the old version serving on `opts->socket`, if there is one: connect,
/// say who we are, wait (up to `opts->release_timeout_ms`) while the old version runs its
/// release step, receive its state and descriptors, acknowledge, and write the
/// handover-complete signal (unless `opts->signal` is false).
///
/// `*out` receives the new handle (free it with `ul_inheritance_free`), or NULL when the
/// call returns `UL_OK` with **no predecessor**: a first start (no socket, no directory), or
/// a stale socket left by a crashed old version (it is removed). On failure `*out` is NULL
/// and nothing was taken: the old version keeps its resources.
///
/// Returns `UL_OK`, `UL_ERR_HANDOVER` (`ul_last_error_handover_reason()` says why:
/// "stalled", "peer-gone", "refused", "taken", "uid", "version", "protocol", "too-large"),
/// `UL_ERR_CANCELLED` (`opts->cancel`), `UL_ERR_PERMISSION`, `UL_ERR_IO`,
/// `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT` (struct_size, a timeout not positive,
/// `release` not UTF-8).
///
/// A failure to write the handover-complete signal does not fail the call (the resources
/// are ours): `ul_inheritance_signal_result` reports it.
///
/// Blocks the calling thread (every step bounded by the timeouts). Thread-safe. `opts` and
/// everything it points to are only borrowed during the call.
///
/// # Safety
/// `opts` must be NULL or a valid `ul_rendezvous_options`; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_take(
    opts: *const ul_rendezvous_options,
    out: *mut *mut ul_inheritance,
) -> ul_result {
    const F: &str = "ul_handover_take";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: forwarded from the caller.
        let (ro, cancel) = unsafe { rendezvous_options(opts, F) }?;
        if let Some(inh) = take_over_with(&ro, wait_control(cancel))? {
            let handle = Box::into_raw(Box::new(ul_inheritance::new(inh)));
            // SAFETY: as above.
            unsafe { out.write(handle) };
        }
        Ok(())
    })
}

/// Who handed over: points into the handle (valid until `ul_inheritance_free`, never free
/// it). NULL for a NULL handle. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_predecessor(
    inh: *const ul_inheritance,
) -> *const ul_peer_info {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }.map_or(std::ptr::null(), |i| &i.predecessor.info)
    })
}

/// The app-defined state bytes the old version sent; `*len` (if `len` is not NULL)
/// receives their number. The bytes are owned by the handle (valid until
/// `ul_inheritance_free`) and are not NUL-terminated. Returns NULL (and `*len` 0) for a
/// NULL handle; with `*len` 0 the pointer must not be read. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_state(
    inh: *const ul_inheritance,
    len: *mut usize,
) -> *const u8 {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        let (p, n) = unsafe { inh.as_ref() }
            .map_or((std::ptr::null(), 0), |i| (i.state.as_ptr(), i.state.len()));
        if !len.is_null() {
            // SAFETY: checked non-NULL; writable by the caller's guarantee.
            unsafe { len.write(n) };
        }
        p
    })
}

/// Number of descriptors received (0 for NULL), including those already taken.
/// Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_fd_count(inh: *const ul_inheritance) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }.map_or(0, |i| i.fds.len())
    })
}

/// The label of the `index`-th descriptor (in the order the old version sent them), owned
/// by the handle (valid until `ul_inheritance_free`, never free it). NULL for a NULL handle
/// or an index out of range. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_fd_label(
    inh: *const ul_inheritance,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }
            .and_then(|i| i.fds.get(index))
            .map_or(std::ptr::null(), |f| f.label.as_ptr())
    })
}

/// The `index`-th descriptor, still owned by the handle (`ul_inheritance_free` closes it;
/// never close it yourself, take it with `ul_inheritance_take_fd` instead). -1 for a NULL
/// handle, an index out of range, or a descriptor already taken. Received descriptors are
/// close-on-exec. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_fd(inh: *const ul_inheritance, index: usize) -> c_int {
    guard_value(-1, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }
            .and_then(|i| i.fds.get(index))
            .and_then(|f| f.fd.as_ref())
            .map_or(-1, |fd| fd.as_raw_fd())
    })
}

/// Whether the `index`-th descriptor is a socket (e.g. a listening TCP socket: use it with
/// accept(2) directly); false for other descriptors (files, devices, pipes), a NULL handle
/// or an index out of range. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_fd_is_socket(
    inh: *const ul_inheritance,
    index: usize,
) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }
            .and_then(|i| i.fds.get(index))
            .is_some_and(|f| f.is_socket)
    })
}

/// Take ownership of the `index`-th descriptor: the caller must close it, and
/// `ul_inheritance_free` no longer does (`ul_inheritance_fd` then gives -1 for it). Returns
/// the descriptor, or -1 for a NULL handle, an index out of range, or a descriptor already
/// taken. It is close-on-exec (clear FD_CLOEXEC to pass it to a program you exec).
///
/// Must not run concurrently with any other use of the same handle.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_take_fd(inh: *mut ul_inheritance, index: usize) -> c_int {
    guard_value(-1, || {
        // SAFETY: NULL or live, by the caller's guarantee; not shared during this call.
        unsafe { inh.as_mut() }
            .and_then(|i| i.fds.get_mut(index))
            .and_then(|f| f.fd.take())
            .map_or(-1, |fd| fd.into_raw_fd())
    })
}

/// Number of handover-complete signal files the take-over wrote (0 when signalling was off
/// or failed, and for NULL). Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_signalled_count(inh: *const ul_inheritance) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }.map_or(0, |i| i.signalled.len())
    })
}

/// The `index`-th handover-complete signal file written, owned by the handle (valid until
/// `ul_inheritance_free`). NULL for a NULL handle or an index out of range. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_signalled_path(
    inh: *const ul_inheritance,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { inh.as_ref() }
            .and_then(|i| i.signalled.get(index))
            .map_or(std::ptr::null(), |p| p.as_ptr())
    })
}

/// Whether writing the handover-complete signal worked: `UL_OK` (written, or signalling
/// was off), else the error's code (`UL_ERR_PERMISSION`, `UL_ERR_INVALID_PATH`,
/// `UL_ERR_IO`); `UL_ERR_NULL_ARGUMENT` for NULL. The hand-over itself succeeded either way
/// (the resources are ours); without the signal the Supervisor stops the old version only
/// after its hand-over timeout. If `buf` is not NULL the error message is copied into it
/// as `ul_last_error_message` does ("" on success). Does not change the thread's last
/// error. Thread-safe.
///
/// # Safety
/// `inh` must be NULL or a live handle; `buf` NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_signal_result(
    inh: *const ul_inheritance,
    buf: *mut c_char,
    len: usize,
) -> ul_result {
    guard_value(ul_result::UL_ERR_PANIC, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        let Some(i) = (unsafe { inh.as_ref() }) else {
            return ul_result::UL_ERR_NULL_ARGUMENT;
        };
        let (code, msg) = match &i.signal_error {
            Some((code, msg)) => (*code, msg.as_bytes()),
            None => (ul_result::UL_OK, &b""[..]),
        };
        // SAFETY: the caller guarantees the buffer.
        unsafe { copy_truncated(msg, buf, len) };
        code
    })
}

/// Free the handle and close every descriptor not taken with `ul_inheritance_take_fd`.
/// NULL is ignored. Must not run concurrently with any other use of the handle.
///
/// # Safety
/// `inh` must be NULL or a handle from `ul_handover_take` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ul_inheritance_free(inh: *mut ul_inheritance) {
    guard_value((), || {
        if !inh.is_null() {
            // SAFETY: made by `Box::into_raw` in `ul_handover_take`, freed once.
            drop(unsafe { Box::from_raw(inh) });
        }
    })
}

/* ------------------------------------------------------------------------------------ */
/* The old version: serve */

/// The old version's hand-over server (opaque): it listens on the socket (mode 0600, only
/// the same uid or root may take over) from `ul_handover_server_bind` until it has handed
/// over (`ul_handover_server_grant` succeeded) or is closed or freed, which removes the
/// socket.
///
/// Serving is two calls so that the app runs its own release step in between:
/// `ul_handover_server_accept` waits for a successor, then the app stops using its
/// resources (stops accepting, closes its database, ...), then `ul_handover_server_grant`
/// sends the state and descriptors and waits for the successor's acknowledgement. If that
/// fails, nothing was handed over, the server keeps serving, and the app still has its
/// descriptors: it should resume its work.
///
/// Keep serving after SIGTERM: on a device the Supervisor stops the old container right
/// after starting the new one, and SIGKILLs it after the stop grace period (10 s default).
///
/// Threads: every function but `ul_handover_server_free` may be called from any thread,
/// concurrently (`ul_handover_server_close` from one thread ends an accept waiting in
/// another). `ul_handover_server_free` must not run concurrently with any other use.
pub struct ul_handover_server {
    inner: HandoverServer,
    socket: CString,
    /// Who took over, after a successful grant (only one can succeed per server).
    successor: OnceLock<CPeer>,
}

/// A successor that asked to take over and was welcomed (opaque). Made by
/// `ul_handover_server_accept`; answer it with `ul_handover_server_grant` or
/// `ul_handover_server_refuse`, which consume (free) it, or drop it unanswered with
/// `ul_handover_request_free` (the successor then sees the connection close, reason
/// "peer-gone"). Use it from one thread at a time.
pub struct ul_handover_request {
    inner: HandoverRequest,
    successor: CPeer,
}

/// Start serving hand-over on `opts->socket` (`opts->release` names this version to
/// successors; `step_timeout_ms` and `max_state` apply). A stale socket left by a crashed
/// server is replaced; anything that is not a socket is never touched.
///
/// On success `*out` owns the new server (free it with `ul_handover_server_free`); on
/// failure `*out` is NULL. Returns `UL_OK`, `UL_ERR_HANDOVER` (reason "already-serving":
/// another process serves on that socket), `UL_ERR_PERMISSION`, `UL_ERR_INVALID_PATH`,
/// `UL_ERR_IO`, `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `opts` must be NULL or a valid `ul_rendezvous_options`; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_bind(
    opts: *const ul_rendezvous_options,
    out: *mut *mut ul_handover_server,
) -> ul_result {
    const F: &str = "ul_handover_server_bind";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: forwarded from the caller.
        let (ro, _) = unsafe { rendezvous_options(opts, F) }?;
        let inner = HandoverServer::bind(&ro)?;
        let socket = c_path(inner.socket_path());
        let server = Box::into_raw(Box::new(ul_handover_server {
            inner,
            socket,
            successor: OnceLock::new(),
        }));
        // SAFETY: as above.
        unsafe { out.write(server) };
        Ok(())
    })
}

/// Wait up to `timeout_ms` (negative: forever, 0: only look) for a successor. Successors
/// that run as another user, speak another protocol version or stall in their greeting
/// are turned away here and the wait goes on.
///
/// `*out` receives the request (answer it with `ul_handover_server_grant` or
/// `ul_handover_server_refuse`), or NULL when the call returns `UL_OK` because the timeout
/// ran out. Returns `UL_OK`, `UL_ERR_CANCELLED` (`cancel`, NULL for none; the server keeps
/// serving), `UL_ERR_HANDOVER` (reason "finished": the server has handed over or was
/// closed, also by `ul_handover_server_close` from another thread during the wait),
/// `UL_ERR_IO`, `UL_ERR_NULL_ARGUMENT`.
///
/// Blocks the calling thread. Thread-safe.
///
/// # Safety
/// `server` must be NULL or a live server; `cancel` NULL or a live token; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_accept(
    server: *const ul_handover_server,
    timeout_ms: i64,
    cancel: *const ul_cancel_token,
    out: *mut *mut ul_handover_request,
) -> ul_result {
    const F: &str = "ul_handover_server_accept";
    guard(F, || {
        if out.is_null() {
            return Err(Failure::null(F, "out"));
        }
        // SAFETY: checked non-NULL; writable by the caller's guarantee.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or live, by the caller's guarantee.
        let server = unsafe { server.as_ref() }.ok_or_else(|| Failure::null(F, "server"))?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        // SAFETY: NULL or a live token, by the caller's guarantee.
        let token = unsafe { cancel.as_ref() }.map(|t| t.inner.clone());
        if let Some(req) = server.inner.accept_with(timeout, wait_control(token))? {
            let successor = CPeer::new(req.successor());
            let handle = Box::into_raw(Box::new(ul_handover_request {
                inner: req,
                successor,
            }));
            // SAFETY: as above.
            unsafe { out.write(handle) };
        }
        Ok(())
    })
}

/// Who asks to take over: points into the request (valid until it is granted, refused or
/// freed). NULL for NULL.
///
/// # Safety
/// `request` must be NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_request_successor(
    request: *const ul_handover_request,
) -> *const ul_peer_info {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { request.as_ref() }.map_or(std::ptr::null(), |r| &r.successor.info)
    })
}

/// Free a request without answering it (the successor sees the connection close: reason
/// "peer-gone"; the server keeps serving). NULL is ignored.
///
/// # Safety
/// `request` must be NULL or a request from `ul_handover_server_accept` not consumed yet.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_request_free(request: *mut ul_handover_request) {
    guard_value((), || {
        if !request.is_null() {
            // SAFETY: made by `Box::into_raw` in `ul_handover_server_accept`, freed once.
            drop(unsafe { Box::from_raw(request) });
        }
    })
}

/// The descriptors of a grant, each duplicated (so a descriptor the caller closes during
/// the call cannot be confused with another one), with their labels.
///
/// # Safety
/// `fds` is NULL or points to `nfds` entries whose labels are NULL or NUL-terminated.
unsafe fn grant_fds(
    fds: *const ul_handover_fd,
    nfds: usize,
    func: &str,
) -> Result<Vec<(String, OwnedFd)>, Failure> {
    if nfds == 0 {
        return Ok(Vec::new());
    }
    if fds.is_null() {
        return Err(Failure::null(func, &format!("fds (with nfds {nfds})")));
    }
    let mut out = Vec::with_capacity(nfds.min(lockcore::MAX_FDS + 1));
    for i in 0..nfds {
        // SAFETY: the caller guarantees `nfds` entries.
        let f = unsafe { fds.add(i).read() };
        if f.label.is_null() {
            return Err(Failure::null(func, &format!("fds[{i}].label")));
        }
        // SAFETY: NUL-terminated by the caller's guarantee.
        let label = unsafe { utf8_arg(f.label, func, &format!("fds[{i}].label")) }?
            .unwrap_or_default()
            .to_string();
        let not_open = || {
            Failure::invalid(format!(
                "{func}: fds[{i}].fd ({}) is not an open descriptor; pass the descriptor to hand over (e.g. the listening socket)",
                f.fd
            ))
        };
        if f.fd < 0 {
            return Err(not_open());
        }
        // SAFETY: non-negative; only used to duplicate it, which fails (EBADF) if it is
        // not open.
        let borrowed = unsafe { BorrowedFd::borrow_raw(f.fd) };
        let owned = borrowed.try_clone_to_owned().map_err(|_| not_open())?;
        out.push((label, owned));
    }
    Ok(out)
}

/// Hand over to `request`'s successor: send `state` (`state_len` bytes, NULL when 0) and
/// the `nfds` descriptors of `fds` (each with its label; the descriptors stay the
/// caller's, the successor gets copies of them, sharing the same open file: a listening
/// socket keeps queueing connections, none is refused), then wait for the successor's
/// acknowledgement.
///
/// `request` is consumed in every case, also on failure (never use it again). On an
/// argument error the successor is refused with the message.
///
/// On `UL_OK` the successor owns the resources: the server has stopped serving (socket
/// removed, successors still waiting are told "taken"); the app should stop using the
/// descriptors (e.g. stop accepting), finish in-flight work, and exit. `*successor` (if
/// `successor` is not NULL) then points to who took over, owned by the server (valid until
/// `ul_handover_server_free`); it is NULL after a failure.
///
/// On failure nothing was handed over and the server keeps serving: resume work and wait
/// for the next successor. Returns `UL_ERR_HANDOVER` (reason "stalled", "peer-gone",
/// "protocol", "too-large": more than `max_state` bytes or 64 descriptors, "finished"),
/// `UL_ERR_CANCELLED`, `UL_ERR_IO`, `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT` (a
/// label not UTF-8, a descriptor not open).
///
/// Blocks the calling thread (bounded by the step timeout). Thread-safe.
///
/// ```c
/// ul_handover_fd fds[] = { { "http", listen_fd } };
/// const ul_peer_info *who = NULL;
/// if (ul_handover_server_grant(server, req, "sessions=3", 10, fds, 1, &who) == UL_OK)
///     printf("handed over to %s\n", who->release);
/// ```
///
/// # Safety
/// `server` must be NULL or a live server; `request` NULL or an unconsumed request from
/// this server; `state` NULL or `state_len` readable bytes; `fds` NULL or `nfds` readable
/// entries; `successor` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_grant(
    server: *const ul_handover_server,
    request: *mut ul_handover_request,
    state: *const c_void,
    state_len: usize,
    fds: *const ul_handover_fd,
    nfds: usize,
    successor: *mut *const ul_peer_info,
) -> ul_result {
    const F: &str = "ul_handover_server_grant";
    guard(F, || {
        // Consumed whatever happens below.
        let request = (!request.is_null()).then(|| {
            // SAFETY: made by `Box::into_raw` in `ul_handover_server_accept`, consumed once.
            unsafe { Box::from_raw(request) }
        });
        if !successor.is_null() {
            // SAFETY: checked non-NULL; writable by the caller's guarantee.
            unsafe { successor.write(std::ptr::null()) };
        }
        // SAFETY: NULL or live, by the caller's guarantee.
        let server = unsafe { server.as_ref() }.ok_or_else(|| Failure::null(F, "server"))?;
        let request = request.ok_or_else(|| Failure::null(F, "request"))?;
        let args = (|| {
            if state.is_null() && state_len > 0 {
                return Err(Failure::null(
                    F,
                    &format!("state (with state_len {state_len})"),
                ));
            }
            // SAFETY: forwarded from the caller.
            let fds = unsafe { grant_fds(fds, nfds, F) }?;
            Ok(fds)
        })();
        let owned = match args {
            Ok(v) => v,
            Err(failure) => {
                let msg = match &failure {
                    Failure::Binding(_, m) => m.clone(),
                    Failure::Core(e) => e.to_string(),
                };
                let _ = server.inner.refuse(
                    request.inner,
                    &format!("the old version could not hand over: {msg}"),
                );
                return Err(failure);
            }
        };
        let bytes: &[u8] = if state_len == 0 {
            &[]
        } else {
            // SAFETY: non-NULL with `state_len` readable bytes, by the caller's guarantee.
            unsafe { std::slice::from_raw_parts(state.cast::<u8>(), state_len) }
        };
        let borrowed: Vec<(&str, BorrowedFd<'_>)> = owned
            .iter()
            .map(|(l, fd)| (l.as_str(), fd.as_fd()))
            .collect();
        let peer = server.inner.grant(request.inner, bytes, &borrowed)?;
        let stored = server.successor.get_or_init(|| CPeer::new(&peer));
        if !successor.is_null() {
            // SAFETY: as above.
            unsafe { successor.write(&stored.info) };
        }
        Ok(())
    })
}

/// Turn `request`'s successor away: the app cannot release its resources now. The
/// successor gets `UL_ERR_HANDOVER` with reason "refused" and `message` (UTF-8; NULL for
/// none); the server keeps serving. `request` is consumed in every case.
///
/// Returns `UL_OK`, `UL_ERR_HANDOVER` / `UL_ERR_IO` (the refusal could not be delivered; the
/// successor sees the connection close), `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT`
/// (`message` not UTF-8; the successor is refused without it). Thread-safe.
///
/// # Safety
/// `server` must be NULL or a live server; `request` NULL or an unconsumed request from
/// this server; `message` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_refuse(
    server: *const ul_handover_server,
    request: *mut ul_handover_request,
    message: *const c_char,
) -> ul_result {
    const F: &str = "ul_handover_server_refuse";
    guard(F, || {
        let request = (!request.is_null()).then(|| {
            // SAFETY: made by `Box::into_raw` in `ul_handover_server_accept`, consumed once.
            unsafe { Box::from_raw(request) }
        });
        // SAFETY: NULL or live, by the caller's guarantee.
        let server = unsafe { server.as_ref() }.ok_or_else(|| Failure::null(F, "server"))?;
        let request = request.ok_or_else(|| Failure::null(F, "request"))?;
        // SAFETY: NULL or NUL-terminated, by the caller's guarantee.
        match unsafe { utf8_arg(message, F, "message") } {
            Ok(m) => {
                server.inner.refuse(request.inner, m.unwrap_or(""))?;
                Ok(())
            }
            Err(failure) => {
                let _ = server.inner.refuse(request.inner, "");
                Err(failure)
            }
        }
    })
}

/// Stop serving without handing over: the socket is removed, successors waiting see the
/// connection close, an accept waiting in another thread ends (reason "finished").
/// Idempotent; NULL is ignored. Thread-safe. The server must still be freed with
/// `ul_handover_server_free`.
///
/// # Safety
/// `server` must be NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_close(server: *const ul_handover_server) {
    guard_value((), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        if let Some(s) = unsafe { server.as_ref() } {
            s.inner.close();
        }
    })
}

/// Whether the server still serves: not handed over, not closed (false for NULL).
/// Thread-safe.
///
/// # Safety
/// `server` must be NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_is_serving(server: *const ul_handover_server) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { server.as_ref() }.is_some_and(|s| s.inner.is_serving())
    })
}

/// The socket path the server listens on, owned by the server (valid until
/// `ul_handover_server_free`). NULL for NULL. Thread-safe.
///
/// # Safety
/// `server` must be NULL or a live server.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_socket_path(
    server: *const ul_handover_server,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live, by the caller's guarantee.
        unsafe { server.as_ref() }.map_or(std::ptr::null(), |s| s.socket.as_ptr())
    })
}

/// Close (as `ul_handover_server_close`) and free the server. NULL is ignored. Requests
/// it accepted stay valid on their own: free them with `ul_handover_request_free`. Must not
/// run concurrently with any other use of the server.
///
/// # Safety
/// `server` must be NULL or a server from `ul_handover_server_bind` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ul_handover_server_free(server: *mut ul_handover_server) {
    guard_value((), || {
        if !server.is_null() {
            // SAFETY: made by `Box::into_raw` in `ul_handover_server_bind`, freed once.
            let server = unsafe { Box::from_raw(server) };
            server.inner.close();
        }
    })
}

/// The listen backlog to give a listener that may be handed over: the kernel's limit
/// (`/proc/sys/net/core/somaxconn`; 4096 when it cannot be read), e.g.
/// `listen(fd, (int)ul_listen_backlog())`. Connections that arrive during a switch, while
/// no release accepts, then wait instead of being dropped. Thread-safe.
#[no_mangle]
pub extern "C" fn ul_listen_backlog() -> u32 {
    crate::error::guard_value(4096, lockcore::listen_backlog)
}
