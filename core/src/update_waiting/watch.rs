//! One inotify instance for the whole process, read by one background thread, watching each
//! lock directory this process has taken a lock in. It sees:
//! * the Supervisor's attempts (its `lockfile` temp files, [`super::attempt`]) while this
//!   process holds a lock there: every hold in that directory learns "an update is
//!   waiting" (its hook is called once), the directory remembers the attempt for the yield
//!   guard, and the dated note is written for the app's other processes;
//! * the Supervisor's own lock appearing at a lock name (a regular file of uid 65534): the
//!   update got in, so the remembered attempt and the note are cleared.
//!
//! Events are read when someone asks: a hold's `update_waiting()`, `check()` and release,
//! and an acquisition looking for an attempt or yielding. A background thread reads them
//! as they come only once a hold has an `on_update_waiting` hook (so a process that never
//! asks for one runs no thread of ours). Read late, a `lockfile` temp file is gone and its
//! name alone counts ([`super::attempt::Sighting::NameOnly`]).
//!
//! The instance (and the thread) live as long as the process (closing an inotify
//! descriptor costs a kernel grace period; a forked child makes its own). A directory stays
//! watched while a hold or a yielding acquisition uses it, or an attempt is remembered; a
//! deleted directory's watch goes with it.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

use super::attempt::{self, Sighting};
use super::note;
use super::{UpdateWaiting, UpdateWaitingHook};
use crate::inspection::FileId;

/// How long an attempt is remembered for the yield guard at most (longer than any sensible
/// `yield_to_updates`; the guard uses its own, shorter, limit).
const REMEMBER: Duration = Duration::from_secs(3600);
/// Idle directories (no hold, no remembered attempt) kept watched at most.
const IDLE_MAX: usize = 16;

/// A hold's view of the watch: whether an update is waiting, and its hook.
pub(crate) struct HoldWatch {
    seen: AtomicBool,
    first: Mutex<Option<UpdateWaiting>>,
    hook: Option<UpdateWaitingHook>,
    path: PathBuf,
}

impl HoldWatch {
    /// Whether the Supervisor tried to take the lock since this hold began.
    pub(crate) fn update_waiting(&self) -> bool {
        self.seen.load(Ordering::Acquire)
    }

    /// The first attempt seen during this hold.
    pub(crate) fn first(&self) -> Option<UpdateWaiting> {
        lock(&self.first).clone()
    }

    fn tell(&self, what: &UpdateWaiting) {
        {
            let mut first = lock(&self.first);
            if first.is_some() {
                return;
            }
            *first = Some(UpdateWaiting {
                path: self.path.clone(),
                ..what.clone()
            });
        }
        self.seen.store(true, Ordering::Release);
        if let Some(hook) = &self.hook {
            if let Some(w) = self.first() {
                hook(&w);
            }
        }
    }
}

/// A directory's part in the watch.
struct DirWatch {
    wd: WatchDescriptor,
    id: FileId,
    dir: Arc<OwnedFd>,
    /// Lock names in this directory whose appearance as a 65534 file means "the update got in".
    lock_names: Vec<CString>,
    holds: Vec<Arc<HoldWatch>>,
    /// Acquisitions of this process yielding in this directory right now.
    yielders: usize,
    /// The last attempt seen while this process held a lock here, until the Supervisor's
    /// lock appeared.
    pending: Option<Instant>,
    /// When the Supervisor's lock last appeared here.
    supervisor_in: Option<Instant>,
    last_used: Instant,
}

impl DirWatch {
    fn idle(&self) -> bool {
        self.holds.is_empty()
            && self.yielders == 0
            && self.pending.is_none_or(|p| p.elapsed() > REMEMBER)
    }
}

struct Registry {
    inotify: Arc<Inotify>,
    dirs: Vec<DirWatch>,
    /// The background reader runs (a hook asked for news as they come).
    reader: bool,
}

/// The watch of one process. A forked child makes its own cell and never touches its
/// parent's: the parent's watch thread did not come along, and may have held the mutex at
/// the moment of the fork.
struct Cell {
    pid: u32,
    registry: Mutex<Option<Registry>>,
    /// The parent's cell, inherited through `fork` (kept reachable: memory checkers would
    /// otherwise report it, and what it holds, as leaked in the child).
    _parent: *mut Cell,
}

// SAFETY: `_parent` is never dereferenced; it only keeps the parent's cell reachable.
unsafe impl Sync for Cell {}

static CELL: AtomicPtr<Cell> = AtomicPtr::new(std::ptr::null_mut());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's cell (made on first use; a parent's cell, inherited through `fork`, is
/// left as it is: one small leak per forked child that takes a lock).
fn cell() -> &'static Cell {
    let me = std::process::id();
    loop {
        let p = CELL.load(Ordering::Acquire);
        // SAFETY: cells are leaked, never freed: a non-null pointer stays valid.
        if let Some(c) = unsafe { p.as_ref() }.filter(|c| c.pid == me) {
            return c;
        }
        let fresh: &'static mut Cell = Box::leak(Box::new(Cell {
            pid: me,
            registry: Mutex::new(None),
            _parent: p,
        }));
        let fresh_ptr: *mut Cell = fresh;
        match CELL.compare_exchange(p, fresh_ptr, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return fresh,
            // Another thread of this process was quicker: use its cell.
            // SAFETY: ours was never shared; it goes back to the allocator.
            Err(_) => drop(unsafe { Box::from_raw(fresh_ptr) }),
        }
    }
}

/// This process's registry, started on first use. `None` inside when inotify cannot be had
/// (then nothing is watched; a later call tries again).
fn registry() -> MutexGuard<'static, Option<Registry>> {
    let c = cell();
    let mut reg = lock(&c.registry);
    if reg.is_none() {
        *reg = start(c);
    }
    reg
}

/// This process's registry if it was started.
fn started() -> MutexGuard<'static, Option<Registry>> {
    lock(&cell().registry)
}

fn start(_c: &'static Cell) -> Option<Registry> {
    let flags = InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK;
    Some(Registry {
        inotify: Arc::new(Inotify::init(flags).ok()?),
        dirs: Vec::new(),
        reader: false,
    })
}

/// Start the background reader (once per process), for hooks that want news as they come.
fn start_reader(c: &'static Cell, reg: &mut Registry) {
    if reg.reader {
        return;
    }
    let inotify = reg.inotify.clone();
    let (running, started) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("update-lock-watch".into())
        .spawn(move || {
            let _ = running.send(());
            read_forever(c, &inotify)
        });
    // Until the thread runs, what it owns is only known to the kernel.
    reg.reader = spawned.is_ok() && started.recv().is_ok();
}

/// Handle what the kernel has queued for this process, without waiting.
pub(crate) fn catch_up() {
    let c = cell();
    let inotify = match lock(&c.registry).as_ref() {
        Some(r) => r.inotify.clone(),
        None => return,
    };
    drain(c, &inotify);
}

fn drain(c: &Cell, inotify: &Inotify) {
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            return;
        }
        for ev in events {
            on_event(c, &ev);
        }
    }
}

/// The directory's entry, watched from now on (`None` if it cannot be watched).
fn dir_entry<'r>(
    reg: &'r mut Registry,
    dir: &Arc<OwnedFd>,
    id: FileId,
    name: &CStr,
) -> Option<&'r mut DirWatch> {
    let i = match reg.dirs.iter().position(|d| d.id == id) {
        Some(i) => i,
        None => {
            prune(reg);
            let mask = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
            let wd = reg.inotify.add_watch(path.as_str(), mask).ok()?;
            reg.dirs.push(DirWatch {
                wd,
                id,
                dir: dir.clone(),
                lock_names: Vec::new(),
                holds: Vec::new(),
                yielders: 0,
                pending: None,
                supervisor_in: None,
                last_used: Instant::now(),
            });
            reg.dirs.len() - 1
        }
    };
    let d = &mut reg.dirs[i];
    if !d.lock_names.iter().any(|n| n.as_c_str() == name) {
        d.lock_names.push(name.to_owned());
    }
    d.last_used = Instant::now();
    Some(d)
}

/// Stop watching the least recently used idle directories beyond [`IDLE_MAX`].
fn prune(reg: &mut Registry) {
    let idle = reg.dirs.iter().filter(|d| d.idle()).count();
    if idle < IDLE_MAX {
        return;
    }
    let mut order: Vec<(Instant, usize)> = reg
        .dirs
        .iter()
        .enumerate()
        .filter(|(_, d)| d.idle())
        .map(|(i, d)| (d.last_used, i))
        .collect();
    order.sort();
    let drop_n = idle + 1 - IDLE_MAX;
    let mut gone: Vec<usize> = order.into_iter().take(drop_n).map(|(_, i)| i).collect();
    gone.sort_unstable_by(|a, b| b.cmp(a));
    for i in gone {
        let d = reg.dirs.swap_remove(i);
        let _ = reg.inotify.rm_watch(d.wd);
    }
}

/// A lock directory, its identity and the lock name in it.
pub(crate) struct WatchedName<'a> {
    pub dir: &'a Arc<OwnedFd>,
    pub id: FileId,
    pub name: &'a CStr,
}

/// A hold being watched; dropping it ends the watch for this hold.
pub(crate) struct Subscription {
    hold: Arc<HoldWatch>,
    dirs: Vec<FileId>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("update_waiting", &self.hold.update_waiting())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn hold(&self) -> &HoldWatch {
        &self.hold
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut reg = started();
        let Some(reg) = reg.as_mut() else {
            return;
        };
        for d in reg.dirs.iter_mut().filter(|d| self.dirs.contains(&d.id)) {
            d.holds.retain(|h| !Arc::ptr_eq(h, &self.hold));
            d.last_used = Instant::now();
        }
    }
}

/// Watch a new hold of `names` (the first one's path names it in the news).
pub(crate) fn subscribe(
    names: &[WatchedName<'_>],
    path: PathBuf,
    hook: Option<UpdateWaitingHook>,
) -> Option<Subscription> {
    let hold = Arc::new(HoldWatch {
        seen: AtomicBool::new(false),
        first: Mutex::new(None),
        hook,
        path,
    });
    let wants_reader = hold.hook.is_some();
    let mut guard = registry();
    let reg = guard.as_mut()?;
    if wants_reader {
        start_reader(cell(), reg);
    }
    let mut dirs = Vec::with_capacity(names.len());
    for n in names {
        if let Some(d) = dir_entry(reg, n.dir, n.id, n.name) {
            if !d.holds.iter().any(|h| Arc::ptr_eq(h, &hold)) {
                d.holds.push(hold.clone());
                dirs.push(n.id);
            }
        }
    }
    Some(Subscription { hold, dirs })
}

/// An acquisition yielding to an update in these directories; dropping it ends that.
pub(crate) struct Yielding {
    dirs: Vec<FileId>,
}

impl Drop for Yielding {
    fn drop(&mut self) {
        let mut reg = started();
        let Some(reg) = reg.as_mut() else {
            return;
        };
        for d in reg.dirs.iter_mut().filter(|d| self.dirs.contains(&d.id)) {
            d.yielders = d.yielders.saturating_sub(1);
        }
    }
}

/// Watch these directories while an acquisition yields (so that the Supervisor's lock
/// appearing is seen even if it is gone again before the acquisition looks).
pub(crate) fn yielding(names: &[WatchedName<'_>]) -> Yielding {
    let mut dirs = Vec::new();
    if let Some(reg) = registry().as_mut() {
        for n in names {
            if let Some(d) = dir_entry(reg, n.dir, n.id, n.name) {
                if !dirs.contains(&n.id) {
                    d.yielders += 1;
                    dirs.push(n.id);
                }
            }
        }
    }
    Yielding { dirs }
}

/// What this process knows about a directory: the last attempt it saw while holding a
/// lock there (not yet followed by the Supervisor's lock), and when the Supervisor's lock
/// last appeared.
pub(crate) fn known(id: FileId) -> (Option<Instant>, Option<Instant>) {
    let reg = started();
    reg.as_ref()
        .and_then(|r| r.dirs.iter().find(|d| d.id == id))
        .map(|d| (d.pending, d.supervisor_in))
        .unwrap_or((None, None))
}

/// The Supervisor's lock was seen in this directory (by an acquisition's own look).
pub(crate) fn supervisor_seen(dir: &Arc<OwnedFd>, id: FileId) {
    {
        let mut reg = started();
        if let Some(d) = reg
            .as_mut()
            .and_then(|r| r.dirs.iter_mut().find(|d| d.id == id))
        {
            d.pending = None;
            d.supervisor_in = Some(Instant::now());
        }
    }
    note::clear_before(dir.as_fd(), SystemTime::now());
}

fn read_forever(c: &'static Cell, inotify: &Inotify) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => drain(c, inotify),
            // A poll error on our own instance: news then come only when someone asks.
            Err(_) => return,
        }
    }
}

fn on_event(c: &Cell, ev: &InotifyEvent) {
    if ev.mask.intersects(
        AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED,
    ) {
        forget(c, ev.wd);
        return;
    }
    let Some(name) = ev.name.as_deref() else {
        return;
    };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    if attempt::looks_like_lockfile_temp(name.as_bytes()) {
        on_attempt(c, ev.wd, &name);
    } else {
        on_create(c, ev.wd, &name);
    }
}

fn forget(c: &Cell, wd: WatchDescriptor) {
    let mut reg = lock(&c.registry);
    if let Some(reg) = reg.as_mut() {
        reg.dirs.retain(|d| d.wd != wd);
    }
}

/// A `lockfile` temp file appeared: while we hold a lock here, an update is waiting.
fn on_attempt(c: &Cell, wd: WatchDescriptor, name: &CStr) {
    let (holds, dir) = {
        let mut reg = lock(&c.registry);
        let Some(d) = reg
            .as_mut()
            .and_then(|r| r.dirs.iter_mut().find(|d| d.wd == wd))
        else {
            return;
        };
        // Without a hold here the attempt is not kept from its lock (or is not about us).
        if d.holds.is_empty() {
            return;
        }
        let proven = match attempt::look(d.dir.as_fd(), name) {
            Sighting::Proven => true,
            Sighting::NameOnly => false,
            Sighting::NotTheSupervisors => return,
        };
        d.pending = Some(Instant::now());
        let what = UpdateWaiting {
            path: PathBuf::new(),
            seen_at: SystemTime::now(),
            temp_name: OsStr::from_bytes(name.to_bytes())
                .to_string_lossy()
                .into_owned(),
            proven,
        };
        (
            d.holds
                .iter()
                .map(|h| (h.clone(), what.clone()))
                .collect::<Vec<_>>(),
            d.dir.clone(),
        )
    };
    note::write(dir.as_fd(), SystemTime::now());
    for (h, what) in holds {
        h.tell(&what);
    }
}

/// A name appeared: a lock name turning into a 65534 file is the Supervisor getting in.
fn on_create(c: &Cell, wd: WatchDescriptor, name: &CStr) {
    let dir = {
        let mut reg = lock(&c.registry);
        let Some(d) = reg
            .as_mut()
            .and_then(|r| r.dirs.iter_mut().find(|d| d.wd == wd))
        else {
            return;
        };
        if !d.lock_names.iter().any(|n| n.as_c_str() == name)
            || !attempt::is_supervisor_lock(d.dir.as_fd(), name)
        {
            return;
        }
        d.pending = None;
        d.supervisor_in = Some(Instant::now());
        d.dir.clone()
    };
    note::clear_before(dir.as_fd(), SystemTime::now());
}
