//! What to lock and how: paths, legacy name, timeout, stale reclaim.

use std::path::PathBuf;
use std::time::Duration;

use crate::paths;

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
#[derive(Debug, Clone)]
pub struct LockOptions {
    pub(crate) paths: Option<Vec<PathBuf>>,
    pub(crate) legacy: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) reclaim_stale: bool,
    pub(crate) program: Option<String>,
    pub(crate) create_dir: bool,
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

    /// The lock paths these options name, in locking order.
    pub fn lock_paths(&self) -> Vec<PathBuf> {
        match &self.paths {
            Some(p) => p.clone(),
            None => paths::default_lock_paths(self.legacy),
        }
    }
}
