//! Telling a waiting caller who holds the lock: once when the wait starts, then every
//! interval, so that a program that waits is never silent about why.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::holder::Holder;

/// How often `on_wait` hooks are called while a wait goes on, unless told otherwise.
pub const DEFAULT_WAIT_REPORT: Duration = Duration::from_secs(10);

/// What a waiting acquisition tells its `on_wait` hook.
#[derive(Debug)]
pub struct WaitProgress<'a> {
    /// The lock path that blocks the acquisition.
    pub path: &'a Path,
    /// Who holds it (the same holder an error would name).
    pub holder: &'a Holder,
    /// How long the acquisition has waited so far.
    pub waited: Duration,
}

impl WaitProgress<'_> {
    /// One line for people: "waiting for PATH: the update lock is held by ... (N s so far)".
    pub fn describe(&self) -> String {
        format!(
            "waiting for {}: the update lock is {} ({:.0} s so far)",
            self.path.display(),
            self.holder.describe(),
            self.waited.as_secs_f64()
        )
    }
}

/// The hook type (shared, so that options stay cheap to clone).
pub(crate) type WaitHook = Arc<dyn Fn(&WaitProgress<'_>) + Send + Sync>;

/// A hook and its interval, as kept in the options.
#[derive(Clone)]
pub(crate) struct OnWait {
    pub every: Duration,
    pub hook: WaitHook,
}

impl std::fmt::Debug for OnWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnWait")
            .field("every", &self.every)
            .finish()
    }
}

/// When the next report is due during one acquisition.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    next: Option<Instant>,
}

impl Reporter {
    /// Call the hook if a report is due (the first time the wait blocks, then every
    /// interval).
    pub(crate) fn report(&mut self, on_wait: Option<&OnWait>, p: &WaitProgress<'_>) {
        let Some(on_wait) = on_wait else {
            return;
        };
        let now = Instant::now();
        if self.next.is_none_or(|n| now >= n) {
            (on_wait.hook)(p);
            self.next = Some(now + on_wait.every.max(Duration::from_millis(1)));
        }
    }

    /// How long a wait may sleep before the next report is due (`None`: no hook).
    pub(crate) fn until_next(&self) -> Option<Duration> {
        self.next
            .map(|n| n.saturating_duration_since(Instant::now()))
    }
}
