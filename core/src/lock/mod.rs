//! The update lock: all-or-nothing across the lock paths, waiting without polling, stale
//! reclaim, release that never touches a file that is not ours.

#[cfg(feature = "tokio")]
pub(crate) mod async_lock;
pub(crate) mod flock;
pub(crate) mod held_here;
pub(crate) mod lock_dir;
pub(crate) mod lock_file;
pub(crate) mod options;
pub(crate) mod removal;
pub(crate) mod removal_turn;
pub(crate) mod rename;
pub(crate) mod wait;
pub(crate) mod wait_report;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::holder::{Holder, HolderRecord, SUPERVISOR_UID};
use crate::inspection::{inspect, stat_at, FileId, Seen};
use crate::lock::held_here::{held_by, HeldAs, LockOwner};
use crate::lock::lock_dir::lock_dir;
use crate::lock::options::LockOptions;
use crate::paths::{split, SplitPath};
use crate::update_waiting::watch::{self, Subscription, WatchedName};
use crate::update_waiting::yield_guard::YieldGuard;
use crate::update_waiting::UpdateWaitingHook;
use lock_file::{may_join, Created, HeldPath, Holding, Joined};
use wait::{WaitControl, Watcher};
use wait_report::{OnWait, Reporter, WaitProgress};

/// A lock path taken over from a dead holder.
#[derive(Debug, Clone)]
pub struct Reclaimed {
    /// The path that was reclaimed.
    pub path: PathBuf,
    /// The record the dead holder left.
    pub previous: HolderRecord,
}

/// A held update lock. Dropping it releases it (errors are ignored then; call
/// [`release`](UpdateLock::release) to see them).
///
/// While held, every path exists (so the Supervisor defers application updates) and we hold
/// flock on each (so the host OS update reboot waits).
///
/// ```
/// use update_lock::{LockOptions, UpdateLock};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("updates.lock");
/// let opts = LockOptions::new().paths([&path]);
///
/// let mut lock = UpdateLock::acquire(&opts).unwrap();
/// assert!(path.exists());
/// lock.check().unwrap(); // still ours: nobody overrode it
/// lock.release().unwrap();
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct UpdateLock {
    held: Vec<HeldPath>,
    paths: Vec<PathBuf>,
    owner_pid: u32,
    reclaimed: Vec<Reclaimed>,
    /// Whether the Supervisor tried to take the lock during this hold.
    updates: Option<Subscription>,
}

impl UpdateLock {
    /// Take the lock, waiting as long as `opts` says.
    pub fn acquire(opts: &LockOptions) -> Result<UpdateLock> {
        Self::acquire_with(opts, WaitControl::new())
    }

    /// Take the lock without waiting, whatever timeout `opts` has.
    ///
    /// ```
    /// use update_lock::{ErrorCode, LockOptions, UpdateLock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = LockOptions::new().paths([dir.path().join("updates.lock")]);
    /// let first = UpdateLock::try_acquire(&opts).unwrap();
    /// // Another thread is another holder: it finds the lock held.
    /// let other = opts.clone();
    /// let err = std::thread::spawn(move || UpdateLock::try_acquire(&other).unwrap_err());
    /// assert_eq!(err.join().unwrap().code(), ErrorCode::Held);
    /// // This thread again would wait for itself: it fails at once.
    /// let err = UpdateLock::acquire(&opts).unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::AlreadyHeld);
    /// drop(first);
    /// UpdateLock::try_acquire(&opts).unwrap();
    /// ```
    pub fn try_acquire(opts: &LockOptions) -> Result<UpdateLock> {
        Self::acquire(&opts.clone().timeout(Some(Duration::ZERO)))
    }

    /// Take the lock; the wait can also be ended through `ctl` (a cancel token, or a check
    /// called periodically).
    pub fn acquire_with(opts: &LockOptions, mut ctl: WaitControl<'_>) -> Result<UpdateLock> {
        let mut acq = Acquirer::new(opts)?;
        loop {
            if let Some(lock) = acq.step()? {
                return Ok(lock);
            }
            acq.report_wait();
            wait::block(
                acq.watcher.as_ref(),
                acq.wake_by(),
                &mut ctl,
                acq.blocked_path(),
            )?;
        }
    }

    /// Whether this handle still holds the lock (false after release, and in a child
    /// created by `fork()`, which never owns its parent's lock).
    pub fn is_held(&self) -> bool {
        !self.held.is_empty() && self.owner_pid == std::process::id()
    }

    /// The open, flocked descriptors of the lock files (close-on-exec), in locking order;
    /// empty once released. For a launcher that hands them to a child process (clearing
    /// close-on-exec in the child only), so that the flock, which the host OS reboot
    /// checks, lives as long as the child does, as `flock(1)` does for its command. Never
    /// close them yourself: release (or drop) the lock.
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        if !self.is_held() {
            return Vec::new();
        }
        self.held.iter().map(|h| h.file.as_raw_fd()).collect()
    }

    /// The paths this lock covers, in locking order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Whether the balena Supervisor has tried to take the lock since it was taken: an
    /// update (or a reboot it needs) waits for this app to release it. `false` after
    /// release. See [`LockOptions::on_update_waiting`] for a hook, and
    /// [`crate::update_waiting`] for how it is seen.
    ///
    /// ```
    /// use update_lock::{LockOptions, UpdateLock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let lock = UpdateLock::acquire(&LockOptions::new().paths([dir.path().join("updates.lock")])).unwrap();
    /// assert!(!lock.update_waiting(), "nobody tried to take it");
    /// ```
    pub fn update_waiting(&self) -> bool {
        if !self.is_held() {
            return false;
        }
        watch::catch_up();
        self.updates
            .as_ref()
            .is_some_and(|s| s.hold().update_waiting())
    }

    /// The first Supervisor attempt seen during this hold, if any.
    pub fn update_waiting_news(&self) -> Option<crate::UpdateWaiting> {
        watch::catch_up();
        self.updates.as_ref().and_then(|s| s.hold().first())
    }

    /// Locks taken over from dead holders while acquiring.
    pub fn reclaimed(&self) -> &[Reclaimed] {
        &self.reclaimed
    }

    /// Whether we still hold every path: `Err(Lost)` when a path was deleted or replaced
    /// (the Supervisor's override does that), `Err(NotHeld)` after release.
    pub fn check(&self) -> Result<()> {
        if !self.is_held() {
            return Err(Error::NotHeld {
                path: self.paths.first().cloned(),
            });
        }
        watch::catch_up();
        lost_paths(
            self.held
                .iter()
                .map(|h| (h.path.clone(), lock_file::still_ours(h))),
        )
    }

    /// Release every path: delete it if it is still ours, then drop the flock. Idempotent.
    /// `Err(Lost)` when a path was no longer ours; that file is left alone and the other
    /// paths are still released. In a forked child this only closes the inherited
    /// descriptors: the parent keeps its lock.
    pub fn release(&mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        if self.updates.is_some() && !held.is_empty() {
            // Attempts seen during the hold are remembered (and noted for the app's other
            // processes) before the files go.
            watch::catch_up();
        }
        self.updates = None;
        if self.owner_pid != std::process::id() {
            return Ok(());
        }
        lost_paths(
            held.into_iter()
                .rev()
                .map(|h| (h.path.clone(), lock_file::release(h))),
        )
    }
}

impl Drop for UpdateLock {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// `Err(Lost)` naming every path that is no longer ours, else `Ok`. A path we could not
/// look at (nothing was deleted there) wins over losses: its error says it could not check.
fn lost_paths(
    verdicts: impl Iterator<Item = (PathBuf, std::result::Result<(), lock_file::NotOurs>)>,
) -> Result<()> {
    let (mut paths, mut detail, mut unchecked) = (Vec::new(), Vec::new(), None);
    for (path, verdict) in verdicts {
        match verdict {
            Ok(()) => {}
            Err(lock_file::NotOurs::Lost(d)) => {
                paths.push(path);
                detail.push(d);
            }
            Err(lock_file::NotOurs::Unchecked(e)) => {
                unchecked.get_or_insert(Error::Unchecked {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    if let Some(e) = unchecked {
        return Err(e);
    }
    if paths.is_empty() {
        return Ok(());
    }
    Err(Error::Lost {
        paths,
        detail: detail.join("; "),
    })
}

/// A lock path with its opened directory.
struct Target {
    split: SplitPath,
    dir: Arc<OwnedFd>,
    dir_id: FileId,
}

impl Target {
    fn watched(&self) -> WatchedName<'_> {
        WatchedName {
            dir: &self.dir,
            id: self.dir_id,
            name: self.split.name.as_c_str(),
        }
    }
}

/// The state of one acquisition, shared by the blocking and the async API.
pub(crate) struct Acquirer {
    targets: Vec<Target>,
    paths: Vec<PathBuf>,
    program: Option<String>,
    reclaim: bool,
    shared: bool,
    owner: LockOwner,
    /// Why the holder that blocks us could not be joined (shared mode), for the message.
    not_joined: Option<String>,
    /// Who blocked us last, for the `on_wait` hook.
    last_holder: Option<Holder>,
    on_wait: Option<OnWait>,
    on_update_waiting: Option<UpdateWaitingHook>,
    /// Letting a waiting update in first.
    yield_guard: YieldGuard,
    /// Until when the current wait yields to an update.
    yield_end: Option<Instant>,
    pub(crate) reporter: Reporter,
    timeout: Option<Duration>,
    started: Instant,
    pub(crate) deadline: Option<Instant>,
    blocked: Option<usize>,
    reclaimed: Vec<Reclaimed>,
    pub(crate) watcher: Option<Watcher>,
    watch_started: bool,
}

enum Take {
    Held(HeldPath),
    Blocked(Holder),
}

enum Attempt {
    Taken(Vec<HeldPath>),
    Conflict(usize, Holder),
}

impl Acquirer {
    pub(crate) fn new(opts: &LockOptions) -> Result<Acquirer> {
        let paths = opts.lock_paths();
        let splits = paths.iter().map(|p| split(p)).collect::<Result<Vec<_>>>()?;
        if nix::unistd::geteuid().as_raw() == SUPERVISOR_UID {
            return Err(Error::SupervisorUid {
                path: paths.first().cloned(),
            });
        }
        let mut targets: Vec<Target> = Vec::with_capacity(splits.len());
        let mut seen: Vec<(FileId, Vec<u8>)> = Vec::new();
        for s in splits {
            let (dir, dir_id) = lock_dir(&s.dir, opts.create_dir)?;
            // The same file reached by two names (on a device /tmp/balena and /tmp/resin
            // are one directory) is locked once.
            let key = (dir_id, s.name.as_bytes().to_vec());
            if !seen.contains(&key) {
                seen.push(key);
                targets.push(Target {
                    split: s,
                    dir,
                    dir_id,
                });
            }
        }
        let kept = targets.iter().map(|t| t.split.full.clone()).collect();
        let names: Vec<WatchedName<'_>> = targets.iter().map(Target::watched).collect();
        let yield_guard = YieldGuard::new(opts.yield_to_updates, &names);
        drop(names);
        let started = Instant::now();
        Ok(Acquirer {
            targets,
            paths: kept,
            program: opts.program.clone(),
            reclaim: opts.reclaim_stale,
            shared: opts.shared,
            owner: opts.owner.unwrap_or_else(LockOwner::current_thread),
            not_joined: None,
            last_holder: None,
            on_wait: opts.on_wait.clone(),
            on_update_waiting: opts.on_update_waiting.clone(),
            yield_guard,
            yield_end: None,
            reporter: Reporter::default(),
            timeout: opts.timeout,
            started,
            deadline: opts.timeout.map(|t| started + t),
            blocked: None,
            reclaimed: Vec::new(),
            watcher: None,
            watch_started: false,
        })
    }

    /// When the wait must end at the latest: the deadline, the next `on_wait` report, or
    /// the end of a yield to an update.
    pub(crate) fn wake_by(&self) -> Option<Instant> {
        let report = self.reporter.until_next().map(|d| Instant::now() + d);
        [self.deadline, report, self.yield_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// Tell the `on_wait` hook who blocks us, if a report is due (called before each wait).
    pub(crate) fn report_wait(&mut self) {
        if self.on_wait.is_none() {
            return;
        }
        let Some(holder) = self.last_holder.clone() else {
            return;
        };
        let path = self.blocked_path().to_path_buf();
        let p = WaitProgress {
            path: &path,
            holder: &holder,
            waited: self.started.elapsed(),
        };
        self.reporter.report(self.on_wait.as_ref(), &p);
    }

    pub(crate) fn blocked_path(&self) -> &Path {
        let i = self
            .blocked
            .unwrap_or(0)
            .min(self.targets.len().saturating_sub(1));
        self.targets
            .get(i)
            .map(|t| t.split.full.as_path())
            .unwrap_or(Path::new(""))
    }

    /// One non-blocking round. `Ok(Some)` acquired; `Ok(None)` blocked, wait and call again;
    /// `Err` a hard error, or the timeout ran out.
    pub(crate) fn step(&mut self) -> Result<Option<UpdateLock>> {
        loop {
            let recheck = match self.blocked {
                _ if self.yield_end.is_some() => None,
                Some(k) => self.still_blocked(k)?.map(|h| (k, h)),
                None => None,
            };
            let conflict = match recheck {
                Some(c) => Some(c),
                None => self.yielding()?,
            };
            let (index, holder) = match conflict {
                Some(conflict) => conflict,
                None => match self.attempt()? {
                    Attempt::Taken(held) => return Ok(Some(self.make_lock(held))),
                    Attempt::Conflict(i, h) => (i, h),
                },
            };
            if holder == Holder::Supervisor {
                self.supervisor_seen(index);
            }
            self.blocked = Some(index);
            self.last_holder = Some(holder.clone());
            let path = self.targets[index].split.full.clone();
            let now = Instant::now();
            if self.timeout == Some(Duration::ZERO) {
                return Err(Error::Held {
                    path,
                    holder: Box::new(holder),
                    not_joined: self.not_joined.take(),
                });
            }
            if self.deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout {
                    path,
                    holder: Box::new(holder),
                    waited: now - self.started,
                    not_joined: self.not_joined.take(),
                });
            }
            if !self.watch_started {
                // Start watching, then look once more: a release between our look and the
                // watch would otherwise go unnoticed until the fallback check. Without
                // inotify (None) the fallback check alone wakes us.
                self.watch_started = true;
                self.watcher = Watcher::new(self.targets.iter().map(|t| &t.dir));
                continue;
            }
            return Ok(None);
        }
    }

    fn make_lock(&mut self, held: Vec<HeldPath>) -> UpdateLock {
        self.yield_guard.stop();
        let names: Vec<WatchedName<'_>> = self.targets.iter().map(Target::watched).collect();
        let first = self.paths.first().cloned().unwrap_or_default();
        let updates = watch::subscribe(&names, first, self.on_update_waiting.clone());
        UpdateLock {
            held,
            paths: self.paths.clone(),
            owner_pid: std::process::id(),
            reclaimed: std::mem::take(&mut self.reclaimed),
            updates,
        }
    }

    /// `Some` while this acquisition yields to a waiting update: every path is free, and
    /// the Supervisor was seen trying to take the lock, recently enough.
    fn yielding(&mut self) -> Result<Option<(usize, Holder)>> {
        self.yield_end = None;
        if self.yield_guard.active().is_none() {
            return Ok(None);
        }
        for (i, t) in self.targets.iter().enumerate() {
            match inspect(t.dir.as_fd(), &t.split.name, &t.split.full)? {
                Seen::Vacant => {}
                Seen::Occupied(Holder::Supervisor) => {
                    self.supervisor_seen(i);
                    return Ok(None);
                }
                // Someone holds it (or a dead holder's lock keeps the Supervisor out
                // anyway): the ordinary attempt decides.
                _ => return Ok(None),
            }
        }
        let names: Vec<WatchedName<'_>> = self.targets.iter().map(Target::watched).collect();
        self.yield_guard.watch(&names);
        self.yield_end = self.yield_guard.active();
        Ok(self.yield_end.map(|_| (0, Holder::UpdateWaiting)))
    }

    /// The Supervisor's lock stands at target `i`: the update got in.
    fn supervisor_seen(&mut self, i: usize) {
        self.yield_guard.stop();
        self.yield_end = None;
        let t = &self.targets[i];
        watch::supervisor_seen(&t.dir, t.dir_id);
    }

    /// Look at the path that blocked us last time without creating anything (creating and
    /// undoing earlier paths would wake every waiter, ourselves included). `Ok(None)` when
    /// it is free (or was reclaimed) and a full attempt should be made.
    fn still_blocked(&mut self, k: usize) -> Result<Option<Holder>> {
        let t = &self.targets[k];
        match inspect(t.dir.as_fd(), &t.split.name, &t.split.full)? {
            Seen::Vacant => Ok(None),
            Seen::Stale { .. } if self.reclaim => Ok(None),
            // Maybe shared now: a full attempt tries to join it.
            Seen::Occupied(Holder::App(r)) if self.shared && may_join(r.uid) => Ok(None),
            seen => Ok(seen.into_holder()),
        }
    }

    /// Try every path in order; on a conflict or error undo what was taken.
    fn attempt(&mut self) -> Result<Attempt> {
        // Made now, so `acquired_at` is when the lock is taken, not when waiting began.
        let record = HolderRecord::current_bytes(self.program.as_deref());
        self.not_joined = None;
        let mut taken: Vec<HeldPath> = Vec::with_capacity(self.targets.len());
        for i in 0..self.targets.len() {
            match self.take_one(i, &record) {
                Ok(Take::Held(h)) => taken.push(h),
                Ok(Take::Blocked(holder)) => {
                    undo(taken);
                    return Ok(Attempt::Conflict(i, holder));
                }
                Err(e) => {
                    undo(taken);
                    return Err(e);
                }
            }
        }
        Ok(Attempt::Taken(taken))
    }

    fn take_one(&mut self, i: usize, record: &[u8]) -> Result<Take> {
        let t = &self.targets[i];
        let (dir, name, full) = (&t.dir, t.split.name.as_c_str(), t.split.full.as_path());
        let mut last = None;
        for _ in 0..16 {
            let mode = Holding {
                shared: self.shared,
                owner: self.owner,
            };
            let created = lock_file::create(dir, name, full, record, mode)?;
            if let Created::Held(h) = created {
                return Ok(Take::Held(h));
            }
            // A file this very owner holds (the table knows it by its open descriptor):
            // join it when both are shared; otherwise a second flock would wait for our
            // own forever.
            if let Some(st) = stat_at(dir.as_fd(), name, full)? {
                match held_by(FileId::from(&st), self.owner) {
                    Some(HeldAs::Shared) if self.shared => {}
                    Some(how) => {
                        return Err(Error::AlreadyHeld {
                            path: full.to_path_buf(),
                            pid: std::process::id(),
                            held_shared: how == HeldAs::Shared,
                            wanted_shared: self.shared,
                        })
                    }
                    None => {}
                }
            }
            match inspect(dir.as_fd(), name, full)? {
                Seen::Vacant => continue,
                Seen::Stale { record, probe, id } if self.reclaim => {
                    if lock_file::reclaim_stale(dir, name, full, probe, id)? {
                        self.reclaimed.push(Reclaimed {
                            path: full.to_path_buf(),
                            previous: record,
                        });
                    }
                    continue;
                }
                Seen::Occupied(Holder::App(r)) if self.shared => {
                    match lock_file::join(dir, name, full, self.owner)? {
                        Joined::Held(h) => return Ok(Take::Held(h)),
                        Joined::Moved => continue,
                        Joined::Exclusive => {
                            self.not_joined =
                                Some("held exclusively, so a shared hold waits".into());
                        }
                        Joined::NotJoinable(why) => {
                            self.not_joined = Some(format!("not joined in shared mode: {why}"));
                        }
                    }
                    last = Some(Holder::App(r));
                    break;
                }
                seen => {
                    last = seen.into_holder();
                    break;
                }
            }
        }
        Ok(Take::Blocked(last.unwrap_or(Holder::Changing)))
    }
}

fn undo(taken: Vec<HeldPath>) {
    for h in taken.into_iter().rev() {
        let _ = lock_file::release(h);
    }
}
