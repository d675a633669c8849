//! The yield of one acquisition: after the Supervisor was seen trying to take the lock
//! (by this process, or by another of the app that left the dated note), wait while the lock
//! is free, until the Supervisor's lock appears or `yield_to_updates` has passed since the
//! attempt.

use std::time::{Duration, Instant, SystemTime};

use super::watch::{self, WatchedName, Yielding};
use crate::inspection::FileId;

/// The yield state of one acquisition.
pub(crate) struct YieldGuard {
    /// When the yield ends at the latest; `None`: not yielding (off, nothing was seen, the
    /// Supervisor got in, or the time is over).
    end: Option<Instant>,
    /// The attempt the yield is for: a Supervisor lock seen after it ends the yield.
    since: Instant,
    dirs: Vec<FileId>,
    watching: Option<Yielding>,
}

impl YieldGuard {
    /// Look for a recent attempt in the directories of `names` (this process's memory and
    /// the notes). `limit` zero: never yield.
    pub(crate) fn new(limit: Duration, names: &[WatchedName<'_>]) -> YieldGuard {
        let now = Instant::now();
        let mut guard = YieldGuard {
            end: None,
            since: now,
            dirs: Vec::new(),
            watching: None,
        };
        if limit.is_zero() {
            return guard;
        }
        watch::catch_up();
        let wall = SystemTime::now();
        let mut latest: Option<Instant> = None;
        for n in names {
            if guard.dirs.contains(&n.id) {
                continue;
            }
            guard.dirs.push(n.id);
            let (pending, supervisor_in) = watch::known(n.id);
            let noted = watch::note_date(n.dir, n.id).and_then(|seen| {
                // A date in the future counts as now: a note can never stretch the yield.
                let ago = wall.duration_since(seen).unwrap_or(Duration::ZERO);
                now.checked_sub(ago)
            });
            for at in [pending, noted].into_iter().flatten() {
                if supervisor_in.is_some_and(|s| s >= at) {
                    continue; // the update got in after that attempt
                }
                latest = Some(latest.map_or(at, |l| l.max(at)));
            }
        }
        if let Some(at) = latest {
            let end = (at + limit).min(now + limit);
            if end > now {
                guard.end = Some(end);
                guard.since = at;
            }
        }
        guard
    }

    /// Until when this acquisition yields now, if it does.
    pub(crate) fn active(&mut self) -> Option<Instant> {
        let end = self.end?;
        watch::catch_up();
        let got_in = self
            .dirs
            .iter()
            .any(|id| watch::known(*id).1.is_some_and(|s| s >= self.since));
        if got_in || Instant::now() >= end {
            self.stop();
            return None;
        }
        Some(end)
    }

    /// The acquisition really waits: watch the directories so that the Supervisor's lock is
    /// seen even if it comes and goes between two looks.
    pub(crate) fn watch(&mut self, names: &[WatchedName<'_>]) {
        if self.watching.is_none() {
            self.watching = Some(watch::yielding(names));
        }
    }

    /// The yield is over (the Supervisor's lock was seen).
    pub(crate) fn stop(&mut self) {
        self.end = None;
        self.watching = None;
    }
}
