//! What to lock and how: paths, legacy name, timeout, stale reclaim, shared mode.

use std::path::PathBuf;
use std::time::Duration;

use crate::lock::held_here::LockOwner;
use crate::lock::wait_report::{OnWait, WaitProgress};
use crate::paths;
use crate::update_waiting::{UpdateWaiting, UpdateWaitingHook, DEFAULT_YIELD_TO_UPDATES};

/// Options for taking an update lock. Defaults: the Supervisor's paths from the environment
/// plus the legacy name, wait forever, reclaim stale locks.
///
/// ```
/// use std::time::Duration;
/// use update_lock::LockOptions;
/// let opts = LockOptions::new()
///     .paths(["/tmp/example-service/updates.lock"])
///     .timeout(Some(Duration::from_secs(5)));
/// assert_eq!(opts.lock_paths().len(), 1);
/// ```
#[derive(Clone)]
pub struct LockOptions {
    pub(crate) paths: Option<Vec<PathBuf>>,
    pub(crate) legacy: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) reclaim_stale: bool,
    pub(crate) program: Option<String>,
    pub(crate) create_dir: bool,
    pub(crate) shared: bool,
    pub(crate) owner: Option<LockOwner>,
    pub(crate) on_wait: Option<OnWait>,
    pub(crate) on_update_waiting: Option<UpdateWaitingHook>,
    pub(crate) yield_to_updates: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            paths: None,
            legacy: true,
            timeout: None,
            reclaim_stale: true,
            program: None,
            create_dir: true,
            shared: false,
            owner: None,
            on_wait: None,
            on_update_waiting: None,
            yield_to_updates: default_yield_to_updates(),
        }
    }
}

impl LockOptions {
    /// The defaults (see the type's documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Lock exactly these paths, in this order, instead of the defaults (`legacy` is then
    /// ignored). An empty list means the defaults.
    pub fn paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.paths = paths::path_list(paths);
        self
    }

    /// With the default paths, also lock the legacy `/tmp/resin/resin-updates.lock`
    /// (default true).
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// How long to wait: `None` forever (default), `Some(Duration::ZERO)` try once,
    /// `Some(d)` up to `d` (monotonic clock).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Take over locks left by dead holders (our record, nobody holds its flock). Default true.
    pub fn reclaim_stale(mut self, reclaim: bool) -> Self {
        self.reclaim_stale = reclaim;
        self
    }

    /// Program name written in the holder record (default: this process's name). Bindings
    /// pass the script name here, so `lockctl status` shows `worker.py`, not `python3`.
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Create a missing lock directory with mode 1777, as the Supervisor does (default true).
    pub fn create_dir(mut self, create: bool) -> Self {
        self.create_dir = create;
        self
    }

    /// Shared mode (default false: exclusive). An update lock means "do not update now", not
    /// "exclude my other workers": shared holders of the same app (threads, processes,
    /// containers) hold it at once, and the last one out removes it. A shared hold joins a
    /// live lock only when it is shared too and owned by our uid (or we are root: in the
    /// sticky directory only they can remove it); the Supervisor's lock, another uid's and
    /// an exclusive one are waited for as always. The Supervisor sees the file and the
    /// reboot's `flock -nx` fails while any shared holder is inside.
    ///
    /// ```
    /// use update_lock::{LockOptions, UpdateLock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("updates.lock");
    /// let opts = LockOptions::new().paths([&path]).shared(true);
    /// let first = UpdateLock::acquire(&opts).unwrap();
    /// let second = UpdateLock::try_acquire(&opts).unwrap(); // joins, does not wait
    /// drop(first);
    /// assert!(path.exists(), "the second holder is still inside");
    /// drop(second);
    /// assert!(!path.exists(), "the last one out removed it");
    /// ```
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Who asks, for the nesting check (default: the calling thread). The same owner taking
    /// a path it already holds fails at once with
    /// [`ErrorCode::AlreadyHeld`](crate::ErrorCode::AlreadyHeld) (unless both are shared:
    /// then it joins); other owners wait as other processes do. Async bindings pass their
    /// task here.
    pub fn owner(mut self, owner: LockOwner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Call `hook` when an acquisition has to wait: once when the wait starts (who holds the
    /// lock, since when in its record), then every `every` while it waits
    /// ([`DEFAULT_WAIT_REPORT`](crate::DEFAULT_WAIT_REPORT), 10 s, is what `lockctl run`
    /// uses). The hook runs on the waiting thread (or task); keep it short.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use update_lock::{LockOptions, UpdateLock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("updates.lock");
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let opts = LockOptions::new()
    ///     .paths([&path])
    ///     .timeout(Some(Duration::from_millis(300)))
    ///     .on_wait(Duration::from_millis(100), move |p| log.lock().unwrap().push(p.describe()));
    /// let held = UpdateLock::acquire(&opts).unwrap();
    /// let other = opts.clone();
    /// std::thread::spawn(move || UpdateLock::acquire(&other).unwrap_err()).join().unwrap();
    /// let seen = seen.lock().unwrap();
    /// assert!(seen.len() >= 2, "at the start and every 100 ms: {seen:?}");
    /// assert!(seen[0].contains("held by this same process"), "{}", seen[0]);
    /// ```
    pub fn on_wait(
        mut self,
        every: Duration,
        hook: impl Fn(&WaitProgress<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_wait = Some(OnWait {
            every,
            hook: std::sync::Arc::new(hook),
        });
        self
    }

    /// Call `hook` when the balena Supervisor tries to take the lock while it is held (an
    /// update, or a reboot it needs, waits for this app): once per hold, on a background
    /// thread of this SDK, as soon as the Supervisor's attempt is seen (see
    /// [`UpdateWaiting`] and [`crate::update_waiting`] for how). Keep the hook short: it
    /// could set a flag the app's loop looks at, or start an orderly release.
    /// [`UpdateLock::update_waiting`](crate::UpdateLock::update_waiting) answers the same
    /// question without a hook.
    pub fn on_update_waiting(
        mut self,
        hook: impl Fn(&UpdateWaiting) + Send + Sync + 'static,
    ) -> Self {
        self.on_update_waiting = Some(std::sync::Arc::new(hook));
        self
    }

    /// After the Supervisor was seen trying to take the lock, how long a new acquisition
    /// waits at most while the lock is free, so that the update gets in before this app
    /// takes the lock again (zero: never yield). The default is
    /// `$UPDATE_LOCK_YIELD_TO_UPDATES` (seconds, for example `0` or `30`; set in a
    /// service's environment it changes every language and `lockctl` at once) when that
    /// is a number, else [`DEFAULT_YIELD_TO_UPDATES`], 60 s. The yield ends as soon as the Supervisor's lock appears (the acquisition
    /// then waits for its release, as always). It also honours the dated note another
    /// process of the app left ([`crate::UPDATE_WAITING_NOTE_NAME`]). It counts against
    /// the timeout: a try-once acquisition fails with `held` while it would yield. A held
    /// lock is never taken away by this.
    pub fn yield_to_updates(mut self, limit: Duration) -> Self {
        self.yield_to_updates = limit;
        self
    }

    /// Whether these options ask for shared mode.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The lock paths these options name, in locking order.
    pub fn lock_paths(&self) -> Vec<PathBuf> {
        match &self.paths {
            Some(p) => p.clone(),
            None => paths::default_lock_paths(self.legacy),
        }
    }
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("paths", &self.paths)
            .field("legacy", &self.legacy)
            .field("timeout", &self.timeout)
            .field("reclaim_stale", &self.reclaim_stale)
            .field("program", &self.program)
            .field("create_dir", &self.create_dir)
            .field("shared", &self.shared)
            .field("owner", &self.owner)
            .field("on_wait", &self.on_wait)
            .field("on_update_waiting", &self.on_update_waiting.is_some())
            .field("yield_to_updates", &self.yield_to_updates)
            .finish()
    }
}

/// The environment variable that sets the default of
/// [`LockOptions::yield_to_updates`], in seconds.
pub const YIELD_TO_UPDATES_ENV: &str = "UPDATE_LOCK_YIELD_TO_UPDATES";

/// The default of [`LockOptions::yield_to_updates`]: `$UPDATE_LOCK_YIELD_TO_UPDATES` when
/// it is a number of seconds (0 or more, at most a day), else [`DEFAULT_YIELD_TO_UPDATES`].
pub fn default_yield_to_updates() -> Duration {
    std::env::var(YIELD_TO_UPDATES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_YIELD_TO_UPDATES)
}
