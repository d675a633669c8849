//! Waiting for a lock without polling: inotify on the lock directories wakes a waiter when a
//! lock file is deleted or renamed, or when a holder's descriptor closes (a holder dying).
//! A slow fallback check covers anything inotify cannot see.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::error::{Error, Result};

/// How often a waiter looks again even without an inotify event (covers file systems
/// without inotify support and holders in another mount namespace on odd setups).
pub(crate) const FALLBACK_CHECK: Duration = Duration::from_millis(250);

/// inotify on the lock directories.
///
/// Closing an inotify descriptor makes the kernel wait for a grace period (several
/// milliseconds), which would land on the waiter right after it got the lock. So instances
/// are kept in a small per-process pool: a finished watcher removes its watches (fast) and
/// goes back to the pool instead of being closed.
pub(crate) struct Watcher {
    /// Always present; only taken out in `drop` to go back to the pool.
    inotify: ManuallyDrop<Inotify>,
    watches: Vec<WatchDescriptor>,
}

/// Idle inotify instances of this process (tagged with the pid that made them, so a forked
/// child never shares its parent's event queue).
static POOL: Mutex<Vec<(u32, Inotify)>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 4;

impl Watcher {
    /// Watch every directory in `dirs` (deduplicated by the kernel: one inode, one watch).
    pub(crate) fn new<'a>(dirs: impl IntoIterator<Item = &'a Arc<OwnedFd>>) -> Option<Watcher> {
        let inotify = pooled()
            .or_else(|| Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok())?;
        let mut w = Watcher {
            inotify: ManuallyDrop::new(inotify),
            watches: Vec::new(),
        };
        let mask = AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        for d in dirs {
            // Watch the directory we opened (not the name, which could be swapped).
            let path = format!("/proc/self/fd/{}", d.as_raw_fd());
            let wd = w.inotify.add_watch(path.as_str(), mask).ok()?;
            w.watches.push(wd);
        }
        Some(w)
    }

    /// Forget queued events (after we looked at the directories anyway).
    pub(crate) fn drain(&self) {
        drain(&self.inotify);
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: `inotify` is never used again after this.
        let inotify = unsafe { ManuallyDrop::take(&mut self.inotify) };
        for wd in self.watches.drain(..) {
            let _ = inotify.rm_watch(wd);
        }
        drain(&inotify);
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push((std::process::id(), inotify));
        }
    }
}

fn pooled() -> Option<Inotify> {
    let me = std::process::id();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    // Instances inherited from a parent process are dropped (their close is cheap: the
    // parent still holds them).
    pool.retain(|(pid, _)| *pid == me);
    let (_, inotify) = pool.pop()?;
    drain(&inotify);
    Some(inotify)
}

fn drain(inotify: &Inotify) {
    while let Ok(ev) = inotify.read_events() {
        if ev.is_empty() {
            break;
        }
    }
}

/// A token that cancels a blocking or async wait from another thread (or a signal handler
/// thread). Cloning shares the token.
///
/// ```
/// use update_lock::CancelToken;
/// let token = CancelToken::new().unwrap();
/// token.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Debug)]
pub struct CancelToken {
    event: Arc<EventFd>,
}

impl CancelToken {
    /// A new, uncancelled token.
    pub fn new() -> std::io::Result<CancelToken> {
        let event =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(CancelToken {
            event: Arc::new(event),
        })
    }

    /// Cancel every wait using this token, now and later. Async-signal-safe in effect (one
    /// `write(2)`), so it may be called from a signal-handling thread.
    pub fn cancel(&self) {
        let _ = self.event.write(1);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        let mut fds = [PollFd::new(self.event.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}

/// How a blocking wait may be interrupted: a [`CancelToken`], and/or a check called at
/// least every `every` (for example a binding that must look for Ctrl-C); a check that
/// returns `Err` ends the wait with that error.
#[derive(Default)]
pub struct WaitControl<'a> {
    pub(crate) cancel: Option<CancelToken>,
    #[allow(clippy::type_complexity)]
    pub(crate) check: Option<(Duration, Box<dyn FnMut() -> Result<()> + 'a>)>,
}

impl<'a> WaitControl<'a> {
    /// No way to interrupt the wait but its timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel the wait when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Call `check` at least every `every` while waiting; its `Err` ends the wait.
    pub fn check_every(mut self, every: Duration, check: impl FnMut() -> Result<()> + 'a) -> Self {
        self.check = Some((every, Box::new(check)));
        self
    }
}

/// How long one wait may last: until the fallback check or the deadline, whichever is first.
pub(crate) fn slice(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => FALLBACK_CHECK.min(d.saturating_duration_since(Instant::now())),
        None => FALLBACK_CHECK,
    }
}

/// Block until the watcher fires, the fallback interval or the deadline passes, or the
/// wait is cancelled (then `Err(Cancelled)`, or the check's error). The caller looks again
/// and decides whether the timeout has run out.
pub(crate) fn block(
    watcher: Option<&Watcher>,
    deadline: Option<Instant>,
    ctl: &mut WaitControl<'_>,
    path: &std::path::Path,
) -> Result<()> {
    let mut slice = slice(deadline);
    if let Some((every, _)) = &ctl.check {
        slice = slice.min(*every);
    }
    let mut fds = Vec::with_capacity(2);
    if let Some(w) = watcher {
        fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
    }
    if let Some(t) = &ctl.cancel {
        fds.push(PollFd::new(t.fd(), PollFlags::POLLIN));
    }
    // Round up so a sub-millisecond remainder does not spin.
    let ms = (slice.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32;
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => {
            return Err(crate::error::os_err(
                path,
                "wait for the lock directory to change",
                e,
            ))
        }
    }
    drop(fds);
    if let Some(t) = &ctl.cancel {
        if t.is_cancelled() {
            return Err(Error::Cancelled {
                path: path.to_path_buf(),
                waiting_for: Error::WAITING_FOR_LOCK,
                by: None,
            });
        }
    }
    if let Some((_, check)) = &mut ctl.check {
        check()?;
    }
    if let Some(w) = watcher {
        w.drain();
    }
    Ok(())
}
