//! Hold the update lock all the time, and let an update in only at a safe point.

use std::time::{Duration, Instant};

use super::client::SupervisorApi;
use crate::error::Result;
use crate::lock::options::LockOptions;
use crate::lock::UpdateLock;

/// What happened at a safe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafePoint {
    /// No downloaded update is waiting: the lock stays held; carry on.
    NoUpdate,
    /// An update was waiting: the lock was released (and not retaken).
    Released,
    /// The lock was released for an update and taken again: `settled` says whether the
    /// Supervisor reported the update done before the settle timeout.
    Retaken {
        /// The update was no longer pending when the lock was retaken.
        settled: bool,
    },
}

impl SafePoint {
    /// The stable name every binding uses: `no-update`, `released`, `retaken`,
    /// `retaken-unsettled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SafePoint::NoUpdate => "no-update",
            SafePoint::Released => "released",
            SafePoint::Retaken { settled: true } => "retaken",
            SafePoint::Retaken { settled: false } => "retaken-unsettled",
        }
    }
}

/// How long a gate that retakes the lock waits for an update to settle, unless set
/// otherwise ([`UpdateGate::retake`]).
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a gate asks the Supervisor while waiting, unless set otherwise
/// ([`UpdateGate::poll_interval`]).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The update lock, held until an update has been downloaded **and** the app says it is at
/// a safe point ([`UpdateGate::safe_point`]).
///
/// ```no_run
/// use update_lock::{LockOptions, SafePoint, SupervisorApi, UpdateGate};
/// let mut gate = UpdateGate::acquire(&LockOptions::new(), SupervisorApi::from_env()?)?;
/// loop {
///     // ... a unit of work that must not be cut off ...
///     if gate.safe_point()? == SafePoint::Released {
///         break; // the Supervisor now stops this service to update it
///     }
/// }
/// # Ok::<(), update_lock::Error>(())
/// ```
#[derive(Debug)]
pub struct UpdateGate {
    api: SupervisorApi,
    opts: LockOptions,
    lock: Option<UpdateLock>,
    retake: bool,
    settle_timeout: Duration,
    poll: Duration,
}

impl UpdateGate {
    /// Take the lock (as [`UpdateLock::acquire`] with `opts`) and keep it until a safe point
    /// lets a downloaded update in.
    pub fn acquire(opts: &LockOptions, api: SupervisorApi) -> Result<UpdateGate> {
        let lock = UpdateLock::acquire(opts)?;
        Ok(UpdateGate {
            api,
            opts: opts.clone(),
            lock: Some(lock),
            retake: false,
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
            poll: DEFAULT_POLL_INTERVAL,
        })
    }

    /// After releasing for an update, take the lock again once the Supervisor reports the
    /// update done (no longer pending), or after `settle_timeout` at the latest. For updates
    /// that do not replace this service (another service, a config change).
    pub fn retake(mut self, retake: bool, settle_timeout: Duration) -> UpdateGate {
        self.retake = retake;
        self.settle_timeout = settle_timeout;
        self
    }

    /// How often to ask the Supervisor while waiting for an update to settle (default 2 s).
    pub fn poll_interval(mut self, poll: Duration) -> UpdateGate {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Whether the lock is held now.
    pub fn held(&self) -> bool {
        self.lock.is_some()
    }

    /// The client the gate asks.
    pub fn api(&self) -> &SupervisorApi {
        &self.api
    }

    /// Whether a downloaded update is waiting (one API call).
    pub fn update_waiting(&self) -> Result<bool> {
        Ok(self.api.device()?.update_waiting())
    }

    /// The app is at a safe point: if a downloaded update waits, release the lock (and
    /// with [`retake`](Self::retake), wait for the update and take the lock again).
    ///
    /// If the API cannot be asked, the lock **stays held** and the error is returned: the
    /// app decides whether to carry on or to release.
    pub fn safe_point(&mut self) -> Result<SafePoint> {
        if self.lock.is_none() {
            if !self.retake {
                return Ok(SafePoint::Released);
            }
            self.lock = Some(UpdateLock::acquire(&self.opts)?);
        }
        if !self.api.device()?.update_waiting() {
            return Ok(SafePoint::NoUpdate);
        }
        if let Some(mut lock) = self.lock.take() {
            lock.release()?;
        }
        if !self.retake {
            return Ok(SafePoint::Released);
        }
        let deadline = Instant::now() + self.settle_timeout;
        let mut settled = false;
        while Instant::now() < deadline {
            std::thread::sleep(
                self.poll
                    .min(deadline.saturating_duration_since(Instant::now())),
            );
            // While the Supervisor applies the update it may not answer: keep asking.
            if let Ok(d) = self.api.device() {
                if !d.update_pending {
                    settled = true;
                    break;
                }
            }
        }
        self.lock = Some(UpdateLock::acquire(&self.opts)?);
        Ok(SafePoint::Retaken { settled })
    }

    /// Release the lock for good.
    pub fn release(mut self) -> Result<()> {
        match self.lock.take() {
            Some(mut l) => l.release(),
            None => Ok(()),
        }
    }
}
