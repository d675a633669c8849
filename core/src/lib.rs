//! # update-lock
//!
//! Update locks and hand-over signals for apps on balena devices, correct for both readers
//! of the lock:
//!
//! * the **Supervisor** (application updates) treats the lock as held when the lock file
//!   *exists*;
//! * the **host OS update reboot** (`safe_reboot`) treats it as held when someone holds
//!   *flock(2)* on `updates.lock`.
//!
//! An [`UpdateLock`] does both on every lock path (by default
//! `$BALENA_APP_LOCK_PATH` and the legacy `/tmp/resin/resin-updates.lock`), all-or-nothing:
//! the file appears atomically with its holder record and its flock already held, is never
//! owned by uid 65534 (the Supervisor would take it for its own and delete it), and a lock
//! left by a crashed holder is recognised (nobody holds its flock) and taken over safely.
//!
//! ```
//! use std::time::Duration;
//! use update_lock::{LockOptions, UpdateLock};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("updates.lock");
//! let opts = LockOptions::new()
//!     .paths([&path]) // on a device: leave out, the Supervisor's paths are the default
//!     .timeout(Some(Duration::from_secs(30)));
//! {
//!     let _lock = UpdateLock::acquire(&opts)?;
//!     // critical section: no application update, no host OS reboot in here
//! } // released here
//! # Ok::<(), update_lock::Error>(())
//! ```
//!
//! Errors carry a stable [`ErrorCode`]; every binding exposes the same codes.
#![deny(missing_docs)]

// The house, by the concepts of the README: the lock itself, who holds it (the holder
// record and its proof), inspection (what each reader sees), the hand-over between
// releases, and the Supervisor's HTTP API. `docs/architecture.md` walks through them.
mod error;
mod handover;
mod holder;
mod inspection;
mod lock;
mod paths;
mod supervisor_api;
mod timefmt;
pub mod update_waiting;

pub use error::{Error, ErrorCode, Result};
#[cfg(feature = "tokio")]
pub use handover::rendezvous::take_over_async;
pub use handover::rendezvous::{
    default_socket_path, listen_backlog, take_over, take_over_with, HandoverFailure,
    HandoverRequest, HandoverServer, Inheritance, InheritedFd, PeerInfo, ReadySignal,
    ReleaseAnswer, RendezvousOptions, ServeError, ServeHooks, DEFAULT_MAX_STATE,
    DEFAULT_RELEASE_TIMEOUT, DEFAULT_STEP_TIMEOUT, MAX_FDS, PROTOCOL_VERSION, SOCKET_NAME,
};
pub use handover::signal::{handover_complete, HandoverOptions, HANDOVER_SIGNAL_NAME};
pub use holder::proof::{
    lost_lock_holders, prove_lock_holder, shared_lock_holders, ProvenHolder, Unproven,
};
pub use holder::{ForeignKind, Holder, HolderRecord, RECORD_MAGIC, RECORD_VERSION, SUPERVISOR_UID};
pub use inspection::status::{
    status, HandoverStatus, LockState, PathStatus, StatusReport, STATUS_SCHEMA,
};
pub use lock::held_here::LockOwner;
pub use lock::options::{default_yield_to_updates, LockOptions, YIELD_TO_UPDATES_ENV};
pub use lock::wait::{CancelToken, WaitControl};
pub use lock::wait_report::{WaitProgress, DEFAULT_WAIT_REPORT};
pub use lock::{Reclaimed, UpdateLock};
pub use paths::{
    default_handover_paths, default_lock_paths, primary_handover_path, primary_lock_path,
    DATA_HANDOVER_PATH, DEFAULT_HANDOVER_PATH, DEFAULT_LOCK_PATH, LEGACY_HANDOVER_PATH,
    LEGACY_LOCK_PATH,
};
pub use supervisor_api::ApiFailure;
#[cfg(feature = "supervisor-api")]
pub use supervisor_api::{
    app_id_from_env, DeviceState, SafePoint, SupervisorApi, UpdateGate, DEFAULT_API_TIMEOUT,
    DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE_TIMEOUT,
};
pub use update_waiting::{UpdateWaiting, DEFAULT_YIELD_TO_UPDATES, UPDATE_WAITING_NOTE_NAME};
