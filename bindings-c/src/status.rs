//! `ul_status`: what each reader of the lock sees, into caller-owned structs.

use std::ffi::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lockcore::{ForeignKind, Holder, HolderRecord, LockState, PathStatus};

use crate::error::{guard, guard_value, ul_result, Failure};
use crate::options::{handover_options, lock_options, ul_handover_options, ul_options};
use crate::strings::StringArena;

/// The state of one lock path (`state` in `lockctl status --json`; `ul_state_name` gives
/// that string).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ul_lock_state {
    /// "free": nothing there.
    UL_STATE_FREE = 0,
    /// "held-by-supervisor": a regular file owned by uid 65534: an update or reboot is in
    /// progress.
    UL_STATE_HELD_BY_SUPERVISOR = 1,
    /// "held-by-app": our holder record, and its flock is held.
    UL_STATE_HELD_BY_APP = 2,
    /// "stale": our holder record, nobody holds its flock (the holder died); reclaimable.
    UL_STATE_STALE = 3,
    /// "foreign": something update-lock did not create (see `ul_foreign_kind`).
    UL_STATE_FOREIGN = 4,
    /// "changing": lock files kept appearing and disappearing while we looked; look again.
    UL_STATE_CHANGING = 5,
    /// "unknown": the path could not be looked at (`error` says why); whether it blocks
    /// updates is unknown. Never read it as free.
    UL_STATE_UNKNOWN = 6,
}

/// What a foreign lock path is (`foreign_kind` in `lockctl status --json`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ul_foreign_kind {
    /// Not a foreign path (JSON null).
    UL_FOREIGN_NONE = 0,
    /// "empty-file": as made by `touch` or `flock(1)`.
    UL_FOREIGN_EMPTY_FILE = 1,
    /// "lockfile-format": content `0`, procmail `lockfile` run by a uid other than 65534.
    UL_FOREIGN_LOCKFILE_FORMAT = 2,
    /// "unknown-content": a regular file with content we do not recognise.
    UL_FOREIGN_UNKNOWN_CONTENT = 3,
    /// "directory".
    UL_FOREIGN_DIRECTORY = 4,
    /// "symlink" (never followed; `symlink_target` says where it points).
    UL_FOREIGN_SYMLINK = 5,
    /// "fifo".
    UL_FOREIGN_FIFO = 6,
    /// "socket".
    UL_FOREIGN_SOCKET = 7,
    /// "device".
    UL_FOREIGN_DEVICE = 8,
}

/// The holder record update-lock writes into every lock file it creates (informational:
/// liveness is decided by flock, never by the pid). Strings point into the caller's string
/// buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_holder_record {
    /// Record format version.
    pub version: u32,
    /// Process id of the holder, in its own PID namespace (only meaningful when
    /// `same_pid_namespace`).
    pub pid: i32,
    /// `pid_ns` is known.
    pub has_pid_ns: bool,
    /// Inode of the holder's PID namespace.
    pub pid_ns: u64,
    /// Kernel boot id when the lock was taken, or NULL.
    pub boot_id: *const c_char,
    /// `start_time` is known.
    pub has_start_time: bool,
    /// Holder's start time in clock ticks since boot.
    pub start_time: u64,
    /// Effective uid of the holder.
    pub uid: u32,
    /// Host (container) name of the holder ("" if unknown).
    pub hostname: *const c_char,
    /// Program name of the holder ("" if unknown).
    pub program: *const c_char,
    /// `acquired_at_ms` is known.
    pub has_acquired_at: bool,
    /// When the lock was taken, milliseconds since the Unix epoch.
    pub acquired_at_ms: u64,
    /// The holder is in the caller's PID namespace.
    pub same_pid_namespace: bool,
    /// The holder is the calling process itself (another handle in this process).
    pub same_process: bool,
}

/// Who holds a lock path, as reported by `ul_last_error_holder`. Strings point into the
/// caller's string buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_holder {
    /// `UL_STATE_HELD_BY_SUPERVISOR`, `UL_STATE_HELD_BY_APP`, `UL_STATE_STALE`,
    /// `UL_STATE_FOREIGN`, `UL_STATE_CHANGING`; `UL_STATE_FREE` when there is no holder.
    pub state: ul_lock_state,
    /// `record` is filled (app and stale holders).
    pub has_record: bool,
    /// The holder record.
    pub record: ul_holder_record,
    /// What a foreign path is (`UL_FOREIGN_NONE` otherwise).
    pub foreign_kind: ul_foreign_kind,
    /// `owner_uid` is known (every state but `UL_STATE_CHANGING`).
    pub has_owner_uid: bool,
    /// Whose lock it is: the record's uid for app and stale holders, 65534 for the
    /// Supervisor, the path's owner (not followed) for foreign paths.
    pub owner_uid: u32,
    /// Someone holds flock(2) on it (live app holders, and foreign files with a flock).
    pub flock_held: bool,
    /// Where a foreign symlink points, or NULL.
    pub symlink_target: *const c_char,
    /// Who holds it, as a phrase ("held by the balena Supervisor ..."), or "" without a
    /// holder.
    pub description: *const c_char,
}

/// One lock path as both readers see it (one entry of `locks` in `lockctl status --json`).
/// Strings point into the caller's string buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_path_status {
    /// The lock path.
    pub path: *const c_char,
    /// Its state.
    pub state: ul_lock_state,
    /// The Supervisor would defer application updates (the path exists).
    pub blocks_app_updates: bool,
    /// The host OS update reboot would wait (named `updates.lock`, flock held).
    pub blocks_host_reboot: bool,
    /// Someone holds flock(2) on it.
    pub flock_held: bool,
    /// `owner_uid` is known (the path exists).
    pub has_owner_uid: bool,
    /// Owner uid of the path (not followed).
    pub owner_uid: u32,
    /// `holder` is filled (held-by-app and stale).
    pub has_holder: bool,
    /// The holder record.
    pub holder: ul_holder_record,
    /// What it is, for foreign paths (`UL_FOREIGN_NONE` otherwise).
    pub foreign_kind: ul_foreign_kind,
    /// Where it points, for a symlink; NULL otherwise.
    pub symlink_target: *const c_char,
    /// A sentence for humans: who holds it and what to do.
    pub message: *const c_char,
    /// Why the path could not be inspected, or NULL.
    pub error: *const c_char,
}

/// One hand-over signal path.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_handover_status {
    /// The signal path (in the caller's string buffer).
    pub path: *const c_char,
    /// The signal exists and the Supervisor has not consumed it yet.
    pub pending: bool,
}

/// The status report, caller-owned: the caller provides the arrays and the string buffer
/// (the "in" fields), `ul_status` fills them and the "out" fields. Initialise it with
/// `ul_status_report_init`. Versioned by `struct_size` like `ul_options`.
///
/// ```c
/// ul_path_status locks[4];
/// ul_handover_status handover[4];
/// char strings[8192];
/// ul_status_report report;
/// ul_status_report_init(&report, sizeof report);
/// report.locks = locks;       report.lock_capacity = 4;
/// report.handover = handover; report.handover_capacity = 4;
/// report.strings = strings;   report.strings_capacity = sizeof strings;
/// if (ul_status(&opts, &hopts, &report) == UL_OK)
///     for (size_t i = 0; i < report.lock_count; i++)
///         printf("%s: %s\n", locks[i].path, ul_state_name(locks[i].state));
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_status_report {
    /// Size of the caller's struct in bytes; set by `ul_status_report_init`.
    pub struct_size: usize,
    /// In: array of `lock_capacity` entries to fill (may be NULL when the capacity is 0).
    pub locks: *mut ul_path_status,
    /// In: entries in `locks`.
    pub lock_capacity: usize,
    /// In: array of `handover_capacity` entries to fill (may be NULL when the capacity
    /// is 0).
    pub handover: *mut ul_handover_status,
    /// In: entries in `handover`.
    pub handover_capacity: usize,
    /// In: buffer every string of the report is written into (may be NULL when the
    /// capacity is 0).
    pub strings: *mut c_char,
    /// In: bytes in `strings`.
    pub strings_capacity: usize,
    /// Out: layout version of the report (1, as `schema` in `lockctl status --json`).
    pub schema: u32,
    /// Out: number of lock paths (entries needed in `locks`).
    pub lock_count: usize,
    /// Out: number of hand-over signal paths (entries needed in `handover`).
    pub handover_count: usize,
    /// Out: string bytes needed in `strings`.
    pub strings_needed: usize,
    /// Out: any lock path blocks application updates.
    pub blocks_app_updates: bool,
    /// Out: any lock path blocks the host OS update reboot.
    pub blocks_host_reboot: bool,
}

fn state_of(s: LockState) -> ul_lock_state {
    match s {
        LockState::Free => ul_lock_state::UL_STATE_FREE,
        LockState::HeldBySupervisor => ul_lock_state::UL_STATE_HELD_BY_SUPERVISOR,
        LockState::HeldByApp => ul_lock_state::UL_STATE_HELD_BY_APP,
        LockState::Stale => ul_lock_state::UL_STATE_STALE,
        LockState::Foreign => ul_lock_state::UL_STATE_FOREIGN,
        LockState::Changing => ul_lock_state::UL_STATE_CHANGING,
        LockState::Unknown => ul_lock_state::UL_STATE_UNKNOWN,
    }
}

fn foreign_of(k: Option<&ForeignKind>) -> ul_foreign_kind {
    match k {
        None => ul_foreign_kind::UL_FOREIGN_NONE,
        Some(ForeignKind::EmptyFile) => ul_foreign_kind::UL_FOREIGN_EMPTY_FILE,
        Some(ForeignKind::LockfileFormat) => ul_foreign_kind::UL_FOREIGN_LOCKFILE_FORMAT,
        Some(ForeignKind::UnknownContent) => ul_foreign_kind::UL_FOREIGN_UNKNOWN_CONTENT,
        Some(ForeignKind::Directory) => ul_foreign_kind::UL_FOREIGN_DIRECTORY,
        Some(ForeignKind::Symlink) => ul_foreign_kind::UL_FOREIGN_SYMLINK,
        Some(ForeignKind::Fifo) => ul_foreign_kind::UL_FOREIGN_FIFO,
        Some(ForeignKind::Socket) => ul_foreign_kind::UL_FOREIGN_SOCKET,
        Some(ForeignKind::Device) => ul_foreign_kind::UL_FOREIGN_DEVICE,
    }
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn empty_record() -> ul_holder_record {
    ul_holder_record {
        version: 0,
        pid: 0,
        has_pid_ns: false,
        pid_ns: 0,
        boot_id: std::ptr::null(),
        has_start_time: false,
        start_time: 0,
        uid: 0,
        hostname: std::ptr::null(),
        program: std::ptr::null(),
        has_acquired_at: false,
        acquired_at_ms: 0,
        same_pid_namespace: false,
        same_process: false,
    }
}

fn fill_record(r: Option<&HolderRecord>, arena: &mut StringArena) -> ul_holder_record {
    let Some(r) = r else {
        return empty_record();
    };
    ul_holder_record {
        version: r.version,
        pid: r.pid,
        has_pid_ns: r.pid_ns.is_some(),
        pid_ns: r.pid_ns.unwrap_or(0),
        boot_id: r
            .boot_id
            .as_ref()
            .map_or(std::ptr::null(), |b| arena.put(b.as_bytes())),
        has_start_time: r.start_time.is_some(),
        start_time: r.start_time.unwrap_or(0),
        uid: r.uid,
        hostname: arena.put(r.hostname.as_bytes()),
        program: arena.put(r.program.as_bytes()),
        has_acquired_at: r.acquired_at_ms.is_some(),
        acquired_at_ms: r.acquired_at_ms.unwrap_or(0),
        same_pid_namespace: r.same_pid_namespace,
        same_process: r.same_process,
    }
}

/// A `ul_holder` for `holder` (state free when `None`), strings in `arena`.
pub(crate) fn fill_holder(holder: Option<&Holder>, arena: &mut StringArena) -> ul_holder {
    let mut h = ul_holder {
        state: ul_lock_state::UL_STATE_FREE,
        has_record: false,
        record: empty_record(),
        foreign_kind: ul_foreign_kind::UL_FOREIGN_NONE,
        has_owner_uid: false,
        owner_uid: 0,
        flock_held: false,
        symlink_target: std::ptr::null(),
        description: std::ptr::null(),
    };
    let Some(holder) = holder else {
        h.description = arena.put(b"");
        return h;
    };
    h.description = arena.put(holder.describe().as_bytes());
    h.flock_held = holder.flock_held().unwrap_or(false);
    if let Some(uid) = holder.owner_uid() {
        h.has_owner_uid = true;
        h.owner_uid = uid;
    }
    match holder {
        Holder::Changing => h.state = ul_lock_state::UL_STATE_CHANGING,
        Holder::Supervisor => h.state = ul_lock_state::UL_STATE_HELD_BY_SUPERVISOR,
        Holder::App(r) | Holder::Stale(r) => {
            h.state = if matches!(holder, Holder::App(_)) {
                ul_lock_state::UL_STATE_HELD_BY_APP
            } else {
                ul_lock_state::UL_STATE_STALE
            };
            h.has_record = true;
            h.record = fill_record(Some(r), arena);
        }
        Holder::Foreign {
            kind,
            symlink_target,
            ..
        } => {
            h.state = ul_lock_state::UL_STATE_FOREIGN;
            h.foreign_kind = foreign_of(Some(kind));
            h.symlink_target = symlink_target
                .as_deref()
                .map_or(std::ptr::null(), |t| arena.put(path_bytes(t)));
        }
    }
    h
}

fn fill_path(p: &PathStatus, arena: &mut StringArena) -> ul_path_status {
    ul_path_status {
        path: arena.put(path_bytes(&p.path)),
        state: state_of(p.state),
        blocks_app_updates: p.blocks_app_updates,
        blocks_host_reboot: p.blocks_host_reboot,
        flock_held: p.flock_held,
        has_owner_uid: p.owner_uid.is_some(),
        owner_uid: p.owner_uid.unwrap_or(0),
        has_holder: p.holder.is_some(),
        holder: fill_record(p.holder.as_ref(), arena),
        foreign_kind: foreign_of(p.foreign_kind.as_ref()),
        symlink_target: p
            .symlink_target
            .as_deref()
            .map_or(std::ptr::null(), |t| arena.put(path_bytes(t))),
        message: arena.put(p.message.as_bytes()),
        error: p
            .error
            .as_ref()
            .map_or(std::ptr::null(), |e| arena.put(e.as_bytes())),
    }
}

/// Zero `*report` and set `report->struct_size = struct_size`; then set its "in" fields.
/// Call it as `ul_status_report_init(&report, sizeof report)`. Returns `UL_OK`,
/// `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT` (`struct_size` too small).
/// Thread-safe.
///
/// # Safety
/// `report` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_status_report_init(
    report: *mut ul_status_report,
    struct_size: usize,
) -> ul_result {
    guard("ul_status_report_init", || {
        if report.is_null() {
            return Err(Failure::null("ul_status_report_init", "report"));
        }
        let ours = std::mem::size_of::<ul_status_report>();
        if struct_size < ours {
            return Err(Failure::invalid(format!(
                "ul_status_report_init: struct_size is {struct_size}, but ul_status_report has {ours} bytes in this library: pass sizeof(ul_status_report)"
            )));
        }
        // SAFETY: `struct_size` writable bytes, by the caller's guarantee; all-zero is a
        // valid ul_status_report (NULL pointers, zero counts, false flags).
        unsafe {
            std::ptr::write_bytes(report.cast::<u8>(), 0, struct_size);
            report.cast::<usize>().write(struct_size);
        }
        Ok(())
    })
}

/// Look at every lock path of `locks` (its `paths` and `legacy`; the other fields are
/// ignored) and every hand-over signal of `handover`, without changing anything, and fill
/// the caller-owned `*report` (see `ul_status_report`): the same content as
/// `lockctl status --json`. A path that cannot be inspected is reported in its entry's
/// `error`, not as a failure.
///
/// Always sets the "out" counts of `*report`. Returns `UL_OK`; `UL_ERR_BUFFER_TOO_SMALL`
/// when `lock_capacity < lock_count`, `handover_capacity < handover_count` or
/// `strings_capacity < strings_needed` (then no entry is written: enlarge and call again;
/// calling first with all capacities 0 asks for the sizes); `UL_ERR_NULL_ARGUMENT` (also
/// for a NULL array or buffer with a non-zero capacity); `UL_ERR_INVALID_ARGUMENT`.
/// Every string of the report lives in `report->strings`; nothing to free. Thread-safe.
///
/// # Safety
/// `locks`, `handover`, `report` must be NULL or valid; the arrays and the buffer in
/// `*report` must have the capacities it states.
#[no_mangle]
pub unsafe extern "C" fn ul_status(
    locks: *const ul_options,
    handover: *const ul_handover_options,
    report: *mut ul_status_report,
) -> ul_result {
    const F: &str = "ul_status";
    guard(F, || {
        // SAFETY: forwarded from the caller.
        let (lo, _) = unsafe { lock_options(locks, F, "locks") }?;
        // SAFETY: forwarded from the caller.
        let ho = unsafe { handover_options(handover, F, "handover") }?;
        if report.is_null() {
            return Err(Failure::null(F, "report"));
        }
        // SAFETY: checked non-NULL; the first field is `size_t struct_size`.
        let size = unsafe { report.cast::<usize>().read() };
        let ours = std::mem::size_of::<ul_status_report>();
        if size < ours {
            return Err(Failure::invalid(format!(
                "{F}: report->struct_size is {size}, but ul_status_report has {ours} bytes in this library: initialise it with ul_status_report_init(&report, sizeof report)"
            )));
        }
        // SAFETY: a valid, writable ul_status_report of at least our size.
        let rep = unsafe { &mut *report };
        for (ptr_null, cap, name) in [
            (rep.locks.is_null(), rep.lock_capacity, "report->locks"),
            (
                rep.handover.is_null(),
                rep.handover_capacity,
                "report->handover",
            ),
            (
                rep.strings.is_null(),
                rep.strings_capacity,
                "report->strings",
            ),
        ] {
            if ptr_null && cap > 0 {
                return Err(Failure::null(
                    F,
                    &format!("{name} (with a capacity of {cap})"),
                ));
            }
        }

        let st = lockcore::status(&lo, &ho);
        let mut measure = StringArena::measure();
        for p in &st.locks {
            let _ = fill_path(p, &mut measure);
        }
        for h in &st.handover {
            let _ = measure.put(path_bytes(&h.path));
        }
        rep.schema = st.schema;
        rep.lock_count = st.locks.len();
        rep.handover_count = st.handover.len();
        rep.strings_needed = measure.needed();
        rep.blocks_app_updates = st.blocks_app_updates;
        rep.blocks_host_reboot = st.blocks_host_reboot;
        if rep.lock_capacity < rep.lock_count
            || rep.handover_capacity < rep.handover_count
            || rep.strings_capacity < rep.strings_needed
        {
            return Err(Failure::Binding(
                ul_result::UL_ERR_BUFFER_TOO_SMALL,
                format!(
                    "{F}: the report needs {} lock entries, {} hand-over entries and {} string bytes, but has room for {}, {} and {}; enlarge report->locks, report->handover or report->strings and call again",
                    rep.lock_count, rep.handover_count, rep.strings_needed,
                    rep.lock_capacity, rep.handover_capacity, rep.strings_capacity
                ),
            ));
        }
        // SAFETY: the caller's buffer of `strings_capacity` bytes, enough for everything.
        let mut arena = unsafe { StringArena::new(rep.strings, rep.strings_capacity) };
        for (i, p) in st.locks.iter().enumerate() {
            let entry = fill_path(p, &mut arena);
            // SAFETY: `i < lock_count <= lock_capacity` entries of the caller's array.
            unsafe { rep.locks.add(i).write(entry) };
        }
        for (i, h) in st.handover.iter().enumerate() {
            let entry = ul_handover_status {
                path: arena.put(path_bytes(&h.path)),
                pending: h.pending,
            };
            // SAFETY: `i < handover_count <= handover_capacity` entries.
            unsafe { rep.handover.add(i).write(entry) };
        }
        Ok(())
    })
}

/// The name of a lock state as in `lockctl status --json`: "free", "held-by-supervisor",
/// "held-by-app", "stale", "foreign", "changing", "unknown" (also for other numbers). Static
/// string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn ul_state_name(state: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        match state {
            0 => c"free",
            1 => c"held-by-supervisor",
            2 => c"held-by-app",
            3 => c"stale",
            4 => c"foreign",
            5 => c"changing",
            6 => c"unknown",
            _ => c"unknown",
        }
        .as_ptr()
    })
}

/// The name of a foreign kind as in `lockctl status --json`: "empty-file",
/// "lockfile-format", "unknown-content", "directory", "symlink", "fifo", "socket",
/// "device"; "none" for `UL_FOREIGN_NONE`; "unknown" for other numbers. Static string:
/// never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn ul_foreign_kind_name(kind: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        match kind {
            0 => c"none",
            1 => c"empty-file",
            2 => c"lockfile-format",
            3 => c"unknown-content",
            4 => c"directory",
            5 => c"symlink",
            6 => c"fifo",
            7 => c"socket",
            8 => c"device",
            _ => c"unknown",
        }
        .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_the_core() {
        let name = |s: ul_lock_state| unsafe {
            std::ffi::CStr::from_ptr(ul_state_name(s as c_int))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            name(ul_lock_state::UL_STATE_HELD_BY_SUPERVISOR),
            Holder::Supervisor.state_name()
        );
        assert_eq!(
            name(ul_lock_state::UL_STATE_CHANGING),
            Holder::Changing.state_name()
        );
        assert_eq!(name(ul_lock_state::UL_STATE_FREE), "free");
    }
}
