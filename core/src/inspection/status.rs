//! What each reader of the lock sees right now, for `lockctl status` and the bindings.

use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{Mode, SFlag};

use crate::handover::signal::HandoverOptions;
use crate::holder::{ForeignKind, Holder, HolderRecord};
use crate::inspection::{inspect, stat_at};
use crate::lock::flock::try_lock_exclusive;
use crate::lock::lock_dir::open_lock_dir;
use crate::lock::options::LockOptions;
use crate::paths::split;

/// Version of the status report layout (`schema` in `lockctl status --json`).
pub const STATUS_SCHEMA: u32 = 1;

/// The state of one lock path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum LockState {
    /// Nothing there.
    Free,
    /// Held by the Supervisor (owner uid 65534).
    HeldBySupervisor,
    /// Held by a live app.
    HeldByApp,
    /// Left by a dead holder (reclaimable).
    Stale,
    /// Something update-lock did not create.
    Foreign,
    /// Lock files kept appearing and disappearing while we looked; look again.
    Changing,
    /// The path could not be looked at (out of file descriptors, a directory we may not
    /// search, ...): whether it blocks updates is unknown. `error` says why. Never read
    /// this as free.
    Unknown,
}

/// One lock path as both readers see it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PathStatus {
    /// The lock path.
    pub path: PathBuf,
    /// Its state.
    pub state: LockState,
    /// The Supervisor would defer application updates (the path exists).
    pub blocks_app_updates: bool,
    /// The host OS update reboot would wait (named `updates.lock`, flock held).
    pub blocks_host_reboot: bool,
    /// Someone holds flock(2) on it.
    pub flock_held: bool,
    /// Owner uid of the path (not followed), when it exists.
    pub owner_uid: Option<u32>,
    /// The holder record, for app and stale locks.
    pub holder: Option<HolderRecord>,
    /// What it is, for foreign paths.
    pub foreign_kind: Option<ForeignKind>,
    /// Where it points, for a symlink.
    pub symlink_target: Option<PathBuf>,
    /// A sentence for humans: who holds it and what to do.
    pub message: String,
    /// Set when the path could not be inspected.
    pub error: Option<String>,
}

/// One hand-over signal path.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HandoverStatus {
    /// The signal path.
    pub path: PathBuf,
    /// The signal exists and the Supervisor has not consumed it yet.
    pub pending: bool,
}

/// Everything `lockctl status` shows.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StatusReport {
    /// [`STATUS_SCHEMA`].
    pub schema: u32,
    /// Each lock path.
    pub locks: Vec<PathStatus>,
    /// Each hand-over signal path.
    pub handover: Vec<HandoverStatus>,
    /// Any lock path blocks application updates.
    pub blocks_app_updates: bool,
    /// Any lock path blocks the host OS update reboot.
    pub blocks_host_reboot: bool,
}

/// Look at every lock path and hand-over signal without changing anything.
///
/// ```
/// use update_lock::{status, HandoverOptions, LockOptions, LockState, UpdateLock};
/// let dir = tempfile::tempdir().unwrap();
/// let opts = LockOptions::new().paths([dir.path().join("updates.lock")]);
/// let _lock = UpdateLock::acquire(&opts).unwrap();
/// let report = status(&opts, &HandoverOptions::new().paths([dir.path().join("handover-complete")]));
/// assert_eq!(report.locks[0].state, LockState::HeldByApp);
/// assert!(report.blocks_app_updates && report.blocks_host_reboot);
/// ```
pub fn status(locks: &LockOptions, handover: &HandoverOptions) -> StatusReport {
    let locks: Vec<PathStatus> = locks.lock_paths().into_iter().map(path_status).collect();
    let handover = handover
        .handover_paths()
        .into_iter()
        .map(|path| HandoverStatus {
            pending: std::fs::symlink_metadata(&path).is_ok(),
            path,
        })
        .collect();
    StatusReport {
        schema: STATUS_SCHEMA,
        blocks_app_updates: locks.iter().any(|l| l.blocks_app_updates),
        blocks_host_reboot: locks.iter().any(|l| l.blocks_host_reboot),
        locks,
        handover,
    }
}

fn path_status(path: PathBuf) -> PathStatus {
    let mut st = PathStatus {
        path: path.clone(),
        state: LockState::Free,
        blocks_app_updates: false,
        blocks_host_reboot: false,
        flock_held: false,
        owner_uid: None,
        holder: None,
        foreign_kind: None,
        symlink_target: None,
        message: "free: nothing blocks updates".into(),
        error: None,
    };
    let looked = split(&path).and_then(|s| match open_lock_dir(&s.dir, false) {
        Ok(dir) => {
            // Drop any flock probe of ours before the reboot-script probe below.
            let holder = inspect(dir.as_fd(), &s.name, &s.full)?.into_holder();
            let meta = stat_at(dir.as_fd(), &s.name, &s.full)?;
            // What the reboot script's `flock -nx` would find, on a fresh descriptor.
            let flock_held = match &meta {
                Some(m)
                    if SFlag::from_bits_truncate(m.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG =>
                {
                    let flags =
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                    match openat(dir.as_fd(), s.name.as_c_str(), flags, Mode::empty()) {
                        Ok(fd) => matches!(try_lock_exclusive(&std::fs::File::from(fd)), Ok(false)),
                        Err(_) => false,
                    }
                }
                _ => false,
            };
            Ok(Some((holder, meta.map(|m| m.st_uid), flock_held)))
        }
        // A missing directory holds no lock; one we cannot look up is unknown, not free.
        Err(crate::Error::InvalidPath { .. }) if dir_is_missing(&s.dir) => Ok(None),
        Err(e) => Err(e),
    });
    match looked {
        Ok(Some((Some(holder), owner, flock_held))) => {
            st.blocks_app_updates = true;
            st.flock_held = flock_held;
            st.blocks_host_reboot =
                flock_held && path.file_name().is_some_and(|n| n == "updates.lock");
            st.owner_uid = owner;
            st.message = format!("{}; {}", holder.describe(), holder.next_step(&path));
            st.state = match &holder {
                Holder::Supervisor => LockState::HeldBySupervisor,
                Holder::App(_) => LockState::HeldByApp,
                Holder::Stale(_) => LockState::Stale,
                Holder::Foreign { .. } => LockState::Foreign,
                Holder::Changing => LockState::Changing,
                // Never found by a look at the path (only an acquisition yields).
                Holder::UpdateWaiting => LockState::Free,
            };
            match holder {
                Holder::App(r) | Holder::Stale(r) => st.holder = Some(r),
                Holder::Foreign {
                    kind,
                    symlink_target,
                    ..
                } => {
                    st.foreign_kind = Some(kind);
                    st.symlink_target = symlink_target;
                }
                Holder::Supervisor | Holder::Changing | Holder::UpdateWaiting => {}
            }
        }
        Ok(_) => {}
        Err(e) => {
            st.state = LockState::Unknown;
            st.message = format!(
                "unknown: could not look at it ({e}); whether it blocks updates cannot be told: fix that and look again"
            );
            st.error = Some(e.to_string());
        }
    }
    st
}

/// Whether `dir` provably does not exist (ENOENT on it or a parent), as opposed to "could
/// not be looked up" (EACCES, EMFILE, ...).
fn dir_is_missing(dir: &std::path::Path) -> bool {
    matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}
