//! The C form of "who holds a lock path": its state, what a foreign file is, the holder
//! record. Shared by `ul_status` and by the last error (`ul_last_error_holder`).

use std::ffi::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lockcore::{ForeignKind, Holder, HolderRecord, LockState};

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
    /// "update-waiting": free, but an acquisition yields to a waiting update (the
    /// Supervisor was seen trying to take the lock; `yield_to_updates_ms`). Only in the
    /// holder of a `UL_ERR_HELD`/`UL_ERR_TIMEOUT` error, never in a status. (Added in 0.2.)
    UL_STATE_UPDATE_WAITING = 7,
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
    /// `UL_STATE_FOREIGN`, `UL_STATE_CHANGING`, `UL_STATE_UPDATE_WAITING`; `UL_STATE_FREE`
    /// when there is no holder.
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

pub(crate) fn state_of(s: LockState) -> ul_lock_state {
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

pub(crate) fn foreign_of(k: Option<&ForeignKind>) -> ul_foreign_kind {
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

pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub(crate) fn empty_record() -> ul_holder_record {
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

pub(crate) fn fill_record(r: Option<&HolderRecord>, arena: &mut StringArena) -> ul_holder_record {
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
        Holder::UpdateWaiting => h.state = ul_lock_state::UL_STATE_UPDATE_WAITING,
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
