//! The async API (feature `tokio`): the same acquisition, waiting on the inotify descriptor
//! through the tokio reactor, so the runtime is never blocked. Dropping the future cancels
//! the wait and leaves nothing taken.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::error::Result;
use crate::lock::held_here::LockOwner;
use crate::lock::options::LockOptions;
use crate::lock::wait;
use crate::lock::{Acquirer, UpdateLock};

/// The watcher's descriptor, borrowed for the reactor (it is closed by the watcher).
struct Borrowed(RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl UpdateLock {
    /// Take the lock without blocking the tokio runtime; waits as long as `opts` says.
    /// Cancel by dropping the future (e.g. with `tokio::time::timeout` or `select!`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), update_lock::Error> {
    /// use update_lock::{LockOptions, UpdateLock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = LockOptions::new().paths([dir.path().join("updates.lock")]);
    /// let lock = UpdateLock::acquire_async(&opts).await?;
    /// assert!(lock.is_held());
    /// # Ok(()) }
    /// ```
    pub async fn acquire_async(opts: &LockOptions) -> Result<UpdateLock> {
        // The owner, for the nesting check, is this task (it may move between threads).
        let owned;
        let opts = match (opts.owner, tokio::task::try_id()) {
            (None, Some(task)) => {
                owned = opts.clone().owner(task_owner(task));
                &owned
            }
            _ => opts,
        };
        let mut acq = Acquirer::new(opts)?;
        let mut reactor: Option<AsyncFd<Borrowed>> = None;
        loop {
            if let Some(lock) = acq.step()? {
                return Ok(lock);
            }
            acq.report_wait();
            if reactor.is_none() {
                if let Some(w) = &acq.watcher {
                    // SAFETY: the descriptor belongs to `acq.watcher`, which is set once and
                    // outlives `reactor` (declared later, so dropped first).
                    reactor = unsafe { AsyncFd::register(Borrowed(w.fd().as_raw_fd())) }.ok();
                }
            }
            let slice = wait::slice(acq.wake_by());
            match &reactor {
                Some(r) => {
                    if let Ok(Ok(mut guard)) = tokio::time::timeout(slice, r.readable()).await {
                        if let Some(w) = &acq.watcher {
                            w.drain();
                        }
                        guard.clear_ready();
                    }
                }
                None => tokio::time::sleep(slice).await,
            }
        }
    }
}

/// The [`LockOwner`] of a tokio task, derived from its id (nothing is kept per task, so
/// nothing grows with the number of tasks). The top bit keeps it apart from the owners
/// [`LockOwner::new`] counts up from 1.
fn task_owner(task: tokio::task::Id) -> LockOwner {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    task.hash(&mut h);
    LockOwner::from_u64(h.finish() | (1 << 63))
}
