//! "An update is waiting": the holder of the lock learns that the Supervisor tried to take
//! it, and, by default, a process that just saw that lets the update in before it takes the
//! lock again.
//!
//! **How an attempt is seen.** Every time the Supervisor tries to take the lock, procmail's
//! `lockfile` (run as uid 65534) creates a temp file beside the lock file (`_` + a few
//! characters + `.` + random + `.` + host name, mode 0444, owned by 65534), fails to
//! `link()` it to the lock name while the app holds it, and unlinks it. inotify on the lock
//! directory reports the creation. Told apart from other files by:
//! * the name's shape (nothing of this SDK, the Supervisor or `safe_reboot` makes such a
//!   name besides `lockfile`);
//! * the owner, when the file is still there to look at: a file of another uid is not the
//!   Supervisor's and is ignored. Usually it is already gone (microseconds later), and then
//!   the name alone counts: another program of the app that runs `lockfile` itself, or a
//!   co-tenant of another uid imitating the name, can make a holder believe an update
//!   waits. That only calls the holder's hook and makes this process's next acquisitions
//!   yield, at most `yield_to_updates` each; nothing is released or deleted because of it.
//!
//! **Yielding** ([`LockOptions::yield_to_updates`](crate::LockOptions::yield_to_updates),
//! default [`DEFAULT_YIELD_TO_UPDATES`]): an app that releases and retakes the lock in a
//! loop can keep winning against the Supervisor, whose retries back off
//! (`min(2^n x 500 ms, poll interval)`). After an attempt was seen, a new acquisition in this
//! process waits while the lock is free, until the Supervisor has taken its lock (then it
//! waits for its release, as always) or `yield_to_updates` has passed since the attempt,
//! whichever is first. Across processes (a shell loop of `lockctl run` starts a new process
//! for every hold) the holder that saw the attempt leaves the dated note
//! [`UPDATE_WAITING_NOTE_NAME`] beside the lock, which later acquirers honour the
//! same way; it is cleared when the Supervisor's lock appears. A held lock is never taken
//! away by any of this.

mod attempt;
mod note;
pub(crate) mod watch;
pub(crate) mod yield_guard;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use note::UPDATE_WAITING_NOTE_NAME;

/// How long an acquisition yields to a waiting update at most, unless told otherwise.
pub const DEFAULT_YIELD_TO_UPDATES: Duration = Duration::from_secs(60);

/// News for a holder: the Supervisor tried to take the lock (an update, or a reboot it
/// needs, is waiting for this app to release it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateWaiting {
    /// The held lock path (the first one of the hold in the directory where it was seen).
    pub path: PathBuf,
    /// When the attempt was seen.
    pub seen_at: SystemTime,
    /// The name of the Supervisor's `lockfile` temp file, as seen in the lock directory.
    pub temp_name: String,
    /// The temp file was still there and owned by uid 65534 (`false`: it was gone before
    /// anyone could look, and its name alone says it was `lockfile`'s).
    pub proven: bool,
}

impl UpdateWaiting {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "an update is waiting: the balena Supervisor tried to take the update lock {} ({}); release it when you can",
            self.path.display(),
            if self.proven {
                "its lockfile attempt, owned by uid 65534, was seen"
            } else {
                "a lockfile attempt was seen"
            }
        )
    }
}

/// The hook type (shared, so that options stay cheap to clone).
pub(crate) type UpdateWaitingHook = Arc<dyn Fn(&UpdateWaiting) + Send + Sync>;
