//! The one error type of the SDK, with a stable machine code per kind.
//!
//! Every binding (Python, Node.js, C, `lockctl`) exposes [`ErrorCode::as_str`] and
//! [`ErrorCode::number`] unchanged, so a code seen in a log means the same thing in every
//! language.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::handover::rendezvous::HandoverFailure;
use crate::holder::Holder;
use crate::supervisor_api::ApiFailure;

/// Stable, machine-readable error kinds. Numbers are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The lock is held by someone else (the Supervisor, another app, a dead holder with
    /// reclaim turned off, or a file update-lock did not create).
    Held = 1,
    /// The lock stayed held for the whole timeout.
    Timeout = 2,
    /// A lock we held was deleted or replaced (the Supervisor's lock override does this).
    Lost = 3,
    /// The operating system refused an operation (read-only or foreign-owned directory).
    Permission = 4,
    /// The process runs as uid 65534, whose lock files the Supervisor treats as its own.
    SupervisorUid = 5,
    /// The path cannot be used as a lock path (empty, NUL byte, not UTF-8, too long,
    /// directory missing, symlinked directory in a world-writable place).
    InvalidPath = 6,
    /// Any other operating-system error (out of file descriptors, I/O error, ...).
    Io = 7,
    /// A wait was cancelled by the caller (cancel token, signal, interrupt check).
    Cancelled = 8,
    /// The operation needs a held lock, but this handle has been released.
    NotHeld = 9,
    /// A hand-over between the old and the new version did not happen (the peer stalled,
    /// crashed, refused, runs as another user, or another successor won); see
    /// [`HandoverFailure`](crate::HandoverFailure) for the reason.
    Handover = 10,
    /// A call to the Supervisor API failed (not configured, unreachable, timed out, key
    /// refused, an error answer); see [`ApiFailure`](crate::ApiFailure) for the reason. A
    /// refusal because an update lock is held (HTTP 423) is [`ErrorCode::Held`] instead.
    Api = 11,
    /// The lock could not be looked at (out of file descriptors, a directory we may not
    /// search, ...): whether it is held is unknown, and nothing was changed or deleted.
    Unknown = 12,
    /// This process already holds the lock path (through another handle, thread or task),
    /// and the two cannot share it: an exclusive flock on a second descriptor would wait
    /// for our own forever. Reuse the lock, or take both in shared mode.
    AlreadyHeld = 13,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Held,
        ErrorCode::Timeout,
        ErrorCode::Lost,
        ErrorCode::Permission,
        ErrorCode::SupervisorUid,
        ErrorCode::InvalidPath,
        ErrorCode::Io,
        ErrorCode::Cancelled,
        ErrorCode::NotHeld,
        ErrorCode::Handover,
        ErrorCode::Api,
        ErrorCode::Unknown,
        ErrorCode::AlreadyHeld,
    ];

    /// The stable string code, e.g. `"held"` or `"supervisor-uid"`.
    ///
    /// ```
    /// assert_eq!(update_lock::ErrorCode::SupervisorUid.as_str(), "supervisor-uid");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Held => "held",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Lost => "lost",
            ErrorCode::Permission => "permission",
            ErrorCode::SupervisorUid => "supervisor-uid",
            ErrorCode::InvalidPath => "invalid-path",
            ErrorCode::Io => "io",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::NotHeld => "not-held",
            ErrorCode::Handover => "handover",
            ErrorCode::Api => "api",
            ErrorCode::Unknown => "unknown",
            ErrorCode::AlreadyHeld => "already-held",
        }
    }

    /// The stable number of the code (never reused; 0 is reserved for success in C).
    pub fn number(self) -> u32 {
        self as u32
    }

    /// The `lockctl` exit status for this kind: 73 held or timed out (what the
    /// Supervisor's own `lockfile` returns), 77 permission or uid problem, 64 bad input,
    /// 130 cancelled, 69 hand-over failed or Supervisor API unavailable (EX_UNAVAILABLE),
    /// 74 the lock could not be looked at (EX_IOERR), 75 the lock was lost (taken over:
    /// EX_TEMPFAIL, acquire again later), 1 anything else.
    pub const fn exit_status(self) -> i32 {
        match self {
            ErrorCode::Held | ErrorCode::Timeout => 73,
            ErrorCode::Permission | ErrorCode::SupervisorUid => 77,
            ErrorCode::InvalidPath => 64,
            ErrorCode::Cancelled => 130,
            ErrorCode::Handover | ErrorCode::Api => 69,
            ErrorCode::Unknown => 74,
            ErrorCode::Lost => 75,
            ErrorCode::Io | ErrorCode::NotHeld | ErrorCode::AlreadyHeld => 1,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every failure of the SDK. Messages name the path, who holds it, and the next step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock is held by someone else and no wait was asked for.
    #[error("{}: the update lock is {}{}; {}", .path.display(), .holder.describe(), note(.not_joined), .holder.next_step(.path))]
    Held {
        /// The lock path that is held.
        path: PathBuf,
        /// Who holds it.
        holder: Box<Holder>,
        /// In shared mode: why the holder's lock could not be joined.
        not_joined: Option<String>,
    },
    /// The lock stayed held for the whole timeout.
    #[error("timed out after {} waiting for {}: the update lock is {}{}; {}", fmt_secs(*.waited), .path.display(), .holder.describe(), note(.not_joined), .holder.next_step(.path))]
    Timeout {
        /// The lock path that blocked last.
        path: PathBuf,
        /// Who held it when the timeout ran out.
        holder: Box<Holder>,
        /// How long we waited.
        waited: Duration,
        /// In shared mode: why the holder's lock could not be joined.
        not_joined: Option<String>,
    },
    /// A lock we held was deleted or replaced by someone else.
    #[error("lost the update lock on {}: {}; the Supervisor's lock override (BALENA_SUPERVISOR_OVERRIDE_LOCK, or an update/reboot with force) deletes app locks, so an update may be under way: bring the critical section to a safe stop, then acquire again", join_paths(.paths), .detail)]
    Lost {
        /// The paths that are no longer ours.
        paths: Vec<PathBuf>,
        /// What was found instead.
        detail: String,
    },
    /// The operating system refused an operation on a path.
    #[error("{}: cannot {operation}: permission denied ({source}); {hint}", .path.display())]
    Permission {
        /// The path concerned.
        path: PathBuf,
        /// What we tried to do, e.g. "create the lock file".
        operation: &'static str,
        /// What to do about it.
        hint: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The process runs as uid 65534.
    #[error("refusing to take the update lock as uid 65534 (nobody): the Supervisor treats lock files owned by uid 65534 as its own, ignores them and deletes them when it releases, so updates would not be held off{}; run the app as another user (root, or e.g. `USER 1000` in the Dockerfile)", .path.as_ref().map(|p| format!(" ({} would be owned by 65534)", p.display())).unwrap_or_default())]
    SupervisorUid {
        /// The path that would have been created, when known.
        path: Option<PathBuf>,
    },
    /// The path cannot be used as a lock path.
    #[error("{}: invalid {what}: {reason}", display_lossy(.path))]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// What the path was meant to be: "lock path", "hand-over socket path".
        what: &'static str,
        /// Why it cannot be used and what to do instead.
        reason: String,
    },
    /// Any other operating-system error.
    #[error("{}: cannot {operation}: {source}{}", .path.display(), io_hint(.source))]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What we tried to do.
        operation: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A wait was cancelled.
    #[error("waiting for {waiting_for} on {} was cancelled{}; nothing was taken", .path.display(), .by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default())]
    Cancelled {
        /// The path we were waiting for (a lock path, or the hand-over socket).
        path: PathBuf,
        /// What we were waiting for: [`Error::WAITING_FOR_LOCK`] or
        /// [`Error::WAITING_FOR_HANDOVER`].
        waiting_for: &'static str,
        /// What cancelled it, when known (e.g. "SIGINT").
        by: Option<String>,
    },
    /// A hand-over with the other version did not happen.
    #[error("{}: hand-over failed ({reason}): {detail}; {}", .socket.display(), .reason.next_step())]
    Handover {
        /// The hand-over socket.
        socket: PathBuf,
        /// Why, as a stable reason.
        reason: HandoverFailure,
        /// What happened, in words.
        detail: String,
    },
    /// A call to the Supervisor API failed. The message never contains the API key.
    #[error("Supervisor API {call}: {reason}: {detail}; {}", .reason.next_step())]
    Api {
        /// The call, e.g. `GET /v1/device`.
        call: String,
        /// Why, as a stable reason.
        reason: ApiFailure,
        /// What happened, in words.
        detail: String,
    },
    /// The Supervisor refused because an update lock is held (HTTP 423): the `held` kind.
    #[error("Supervisor API {call}: refused (HTTP 423) because an update lock is held{}; release the lock at a safe point and try again, or call with force to override the lock", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    ApiLocked {
        /// The call, e.g. `POST /v1/reboot`.
        call: String,
        /// The Supervisor's answer.
        detail: String,
    },
    /// A lock path could not be looked at, so whether it is (still) ours or held is
    /// unknown; nothing was changed or deleted.
    #[error("{}: could not check the update lock: {reason}; nothing was deleted or changed: fix the cause (free file descriptors, make the directory searchable) and try again", .path.display())]
    Unchecked {
        /// The path that could not be looked at.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// This process already holds the path in a way the new acquisition cannot share.
    #[error("{}: the update lock is already held by this process (pid {pid}) {}; {}", .path.display(), if *.held_shared { "in shared mode" } else { "exclusively" }, already_held_next_step(*.held_shared, *.wanted_shared))]
    AlreadyHeld {
        /// The lock path.
        path: PathBuf,
        /// This process.
        pid: u32,
        /// Whether this process holds it in shared mode.
        held_shared: bool,
        /// Whether the new acquisition asked for shared mode.
        wanted_shared: bool,
    },
    /// The handle has been released.
    #[error("this update lock handle was already released{}; acquire a new lock", .path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    NotHeld {
        /// The first path of the released lock, when known.
        path: Option<PathBuf>,
    },
}

/// ` (why)` after the holder, when shared mode could not join it.
fn note(not_joined: &Option<String>) -> String {
    not_joined
        .as_ref()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default()
}

/// What to do about [`Error::AlreadyHeld`].
fn already_held_next_step(held_shared: bool, wanted_shared: bool) -> &'static str {
    match (held_shared, wanted_shared) {
        (false, false) => "an update lock keeps updates out for the whole process and is not a mutex between its own threads or tasks: reuse the lock you hold, or take both in shared mode (the `shared` option)",
        (false, true) => "a shared hold cannot join this process's exclusive one: reuse the lock you hold, or take that one in shared mode too",
        _ => "an exclusive lock would wait for this process's own shared one forever: take this one in shared mode too, or release the shared one first",
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `waiting_for` of a cancelled wait for the update lock.
    pub const WAITING_FOR_LOCK: &'static str = "the update lock";
    /// `waiting_for` of a cancelled wait in a hand-over (accept, take-over).
    pub const WAITING_FOR_HANDOVER: &'static str = "the hand-over";

    /// The stable machine code of this error.
    ///
    /// ```
    /// use update_lock::{Error, ErrorCode};
    /// let e = Error::SupervisorUid { path: None };
    /// assert_eq!(e.code(), ErrorCode::SupervisorUid);
    /// assert!(e.to_string().contains("65534"));
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Held { .. } => ErrorCode::Held,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::Lost { .. } => ErrorCode::Lost,
            Error::Permission { .. } => ErrorCode::Permission,
            Error::SupervisorUid { .. } => ErrorCode::SupervisorUid,
            Error::InvalidPath { .. } => ErrorCode::InvalidPath,
            Error::Io { .. } => ErrorCode::Io,
            Error::Cancelled { .. } => ErrorCode::Cancelled,
            Error::NotHeld { .. } => ErrorCode::NotHeld,
            Error::Handover { .. } => ErrorCode::Handover,
            Error::Api { .. } => ErrorCode::Api,
            Error::ApiLocked { .. } => ErrorCode::Held,
            Error::Unchecked { .. } => ErrorCode::Unknown,
            Error::AlreadyHeld { .. } => ErrorCode::AlreadyHeld,
        }
    }

    /// Who holds the lock, for [`Error::Held`] and [`Error::Timeout`].
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            Error::Held { holder, .. } | Error::Timeout { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// The hand-over failure reason, for [`Error::Handover`].
    pub fn handover_failure(&self) -> Option<HandoverFailure> {
        match self {
            Error::Handover { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The Supervisor API failure reason, for [`Error::Api`].
    pub fn api_failure(&self) -> Option<ApiFailure> {
        match self {
            Error::Api { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The path this error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Held { path, .. }
            | Error::Timeout { path, .. }
            | Error::Permission { path, .. }
            | Error::InvalidPath { path, .. }
            | Error::Io { path, .. }
            | Error::Cancelled { path, .. }
            | Error::Unchecked { path, .. }
            | Error::AlreadyHeld { path, .. } => Some(path),
            Error::Handover { socket, .. } => Some(socket),
            Error::Lost { paths, .. } => paths.first().map(PathBuf::as_path),
            Error::SupervisorUid { path } | Error::NotHeld { path } => path.as_deref(),
            Error::Api { .. } | Error::ApiLocked { .. } => None,
        }
    }

    /// Map an OS error on `path` to the right kind: permission problems become
    /// [`Error::Permission`] with `hint`, the rest [`Error::Io`].
    pub(crate) fn from_os(
        path: &Path,
        operation: &'static str,
        source: io::Error,
        hint: impl FnOnce() -> String,
    ) -> Error {
        match source.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => Error::Permission {
                path: path.to_path_buf(),
                operation,
                hint: hint(),
                source,
            },
            Some(libc::ENAMETOOLONG) => Error::InvalidPath {
                path: path.to_path_buf(),
                what: "lock path",
                reason: "the path is too long for the file system; use a shorter one".into(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                operation,
                source,
            },
        }
    }

    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> Error {
        Error::InvalidPath {
            path: path.to_path_buf(),
            what: "lock path",
            reason: reason.into(),
        }
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "; the process is out of file descriptors: close unused files or raise the limit (ulimit -n)"
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "; the file system is full: free some space",
        Some(libc::ENOENT) => "; the directory disappeared while we used it: try again",
        _ => "",
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_lossy(p: &Path) -> String {
    format!("{:?}", p.as_os_str()).trim_matches('"').to_string()
}

/// An operating-system error on `path` while doing `op`, with the usual next step for a
/// lock directory we may not write to.
pub(crate) fn os_err(path: &Path, op: &'static str, e: nix::errno::Errno) -> Error {
    Error::from_os(path, op, std::io::Error::from(e), || {
        format!(
            "run as a user that may write to {}, or make it mode 1777 as the Supervisor does on a device",
            path.display()
        )
    })
}
