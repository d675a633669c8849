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
//! watched once this process took a lock there (adding and removing a watch for every hold
//! would cost more than reading the events of its own lock files); beyond a few directories
//! the idle ones (no hold, no yielding acquisition, no remembered attempt) are dropped; a
//! deleted directory's watch goes with it. The watch also tells whether an `update-waiting`
//! note may have appeared, so acquisitions look for one only then.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::attempt::{self, Sighting};
use super::note;
use super::{UpdateWaiting, UpdateWaitingHook};
use crate::inspection::FileId;

/// How long an attempt is remembered for the yield guard at most (longer than any sensible
/// `yield_to_updates`; the guard uses its own, shorter, limit).
const REMEMBER: Duration = Duration::from_secs(3600);

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

    /// Record the news; `true` the first time (then the hook is due).
    fn mark(&self, what: &UpdateWaiting) -> bool {
        {
            let mut first = lock(&self.first);
            if first.is_some() {
                return false;
            }
            *first = Some(UpdateWaiting {
                path: self.path.clone(),
                ..what.clone()
            });
        }
        self.seen.store(true, Ordering::Release);
        true
    }

    fn call_hook(&self) {
        if let (Some(hook), Some(w)) = (&self.hook, self.first()) {
            hook(&w);
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
    /// When this process last wrote the `update-waiting` note here.
    noted: Option<Instant>,
    /// An `update-waiting` note may stand here (unknown at first; set again when one is
    /// created, or a writer's private name for one): while false, acquisitions need not
    /// look for one. (A note renamed in from another name goes unseen: it can only delay
    /// acquisitions, so missing one errs on the app's side.)
    note_maybe: bool,
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
    /// Held while events are read and handled, so that whoever asks (`catch_up`) also waits
    /// for events another thread has read but not yet handled.
    draining: Mutex<()>,
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
            draining: Mutex::new(()),
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

/// Apply `f` to the watched directories among `ids` (none if nothing was started), and
/// return what it gave for the last one.
fn with_dirs<T>(ids: &[FileId], mut f: impl FnMut(&mut DirWatch) -> T) -> Option<T> {
    let mut reg = started();
    let reg = reg.as_mut()?;
    let mut last = None;
    for d in reg.dirs.iter_mut().filter(|d| ids.contains(&d.id)) {
        last = Some(f(d));
    }
    last
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

thread_local! {
    /// A read buffer per thread, reused (no allocation or zeroing per read).
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 4096]);
}

/// Read and handle every queued event; then call the hooks that are due (outside the
/// drain, so a hook may ask `update_waiting()` itself).
fn drain(c: &Cell, inotify: &Inotify) {
    let mut due = Vec::new();
    {
        let _draining = lock(&c.draining);
        BUFFER.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => drain_into(c, inotify, &mut buf, &mut due),
            Err(_) => drain_into(c, inotify, &mut vec![0; 4096], &mut due),
        });
    }
    for h in due {
        h.call_hook();
    }
}

fn drain_into(c: &Cell, inotify: &Inotify, buf: &mut [u8], due: &mut Vec<Arc<HoldWatch>>) {
    for _ in 0..READS_PER_DRAIN {
        match nix::unistd::read(inotify.as_fd(), buf) {
            Ok(n) if n > 0 => {
                for_each_event(&buf[..n], |wd, mask, name| on_event(c, wd, mask, name, due))
            }
            _ => return,
        }
    }
}

/// The events in what one `read` returned: `struct inotify_event` (wd, mask, cookie, len,
/// then `len` bytes of NUL-padded name), one after the other.
fn for_each_event(mut bytes: &[u8], mut f: impl FnMut(i32, u32, Option<&CStr>)) {
    const HEADER: usize = 16;
    let word = |b: &[u8], at: usize| -> [u8; 4] {
        let mut w = [0; 4];
        w.copy_from_slice(&b[at..at + 4]);
        w
    };
    while bytes.len() >= HEADER {
        let wd = i32::from_ne_bytes(word(bytes, 0));
        let mask = u32::from_ne_bytes(word(bytes, 4));
        let len = u32::from_ne_bytes(word(bytes, 12)) as usize;
        let Some(name) = bytes.get(HEADER..HEADER + len) else {
            return;
        };
        let name = CStr::from_bytes_until_nul(name)
            .ok()
            .filter(|n| !n.is_empty());
        f(wd, mask, name);
        bytes = &bytes[HEADER + len..];
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
            if reg.dirs.len() >= WATCHED_MAX {
                unwatch_idle(reg);
            }
            // Creations only: renames would add four events per release of our own (the
            // placeholder's exchange), for nothing.
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
                noted: None,
                note_maybe: true,
            });
            reg.dirs.len() - 1
        }
    };
    let d = &mut reg.dirs[i];
    if !d.lock_names.iter().any(|n| n.as_c_str() == name) {
        d.lock_names.push(name.to_owned());
    }
    Some(d)
}

/// How often the note is rewritten at most while attempts go on (the Supervisor retries
/// after 0.5 s at the soonest).
const NOTE_EVERY: Duration = Duration::from_millis(500);

/// Reads per drain at most: a directory flooded with events (a co-tenant making names
/// without end) cannot keep whoever drains from returning; the rest waits for the next.
const READS_PER_DRAIN: usize = 8;

/// Directories watched at most before the idle ones are dropped (a process that locks in
/// many directories, such as a test suite, does not collect watches).
const WATCHED_MAX: usize = 16;

/// Stop watching the directories nobody here needs now (no hold, no yielding acquisition,
/// no remembered attempt).
fn unwatch_idle(reg: &mut Registry) {
    let inotify = reg.inotify.clone();
    reg.dirs.retain(|d| {
        let keep = !d.idle();
        if !keep {
            let _ = inotify.rm_watch(d.wd);
        }
        keep
    });
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
        with_dirs(&self.dirs, |d| {
            d.holds.retain(|h| !Arc::ptr_eq(h, &self.hold))
        });
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
        with_dirs(&self.dirs, |d| d.yielders = d.yielders.saturating_sub(1));
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
    with_dirs(&[id], |d| (d.pending, d.supervisor_in)).unwrap_or((None, None))
}

/// The date of the `update-waiting` note in this directory, if a well-formed one stands
/// there. Not looked for while this process's watch says none has appeared since the last
/// look found none.
pub(crate) fn note_date(dir: &Arc<OwnedFd>, id: FileId) -> Option<SystemTime> {
    if with_dirs(&[id], |d| !d.note_maybe) == Some(true) {
        return None;
    }
    let date = note::read(dir.as_fd());
    if date.is_none() {
        with_dirs(&[id], |d| d.note_maybe = false);
    }
    date
}

/// The Supervisor's lock was seen in this directory (by an acquisition's own look).
pub(crate) fn supervisor_seen(dir: &Arc<OwnedFd>, id: FileId) {
    with_dirs(&[id], |d| {
        d.pending = None;
        d.supervisor_in = Some(Instant::now());
    });
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

fn on_event(c: &Cell, wd: i32, mask: u32, name: Option<&CStr>, due: &mut Vec<Arc<HoldWatch>>) {
    let gone =
        AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED;
    if AddWatchFlags::from_bits_truncate(mask).intersects(gone) {
        forget(c, wd);
        return;
    }
    let Some(name) = name else {
        return;
    };
    if attempt::looks_like_lockfile_temp(name.to_bytes()) {
        on_attempt(c, wd, name, due);
    } else {
        on_create(c, wd, name);
    }
}

/// The watched directory behind an event's watch descriptor.
fn by_wd(reg: &mut Option<Registry>, wd: i32) -> Option<&mut DirWatch> {
    reg.as_mut()?.dirs.iter_mut().find(|d| d.wd.as_raw() == wd)
}

fn forget(c: &Cell, wd: i32) {
    let mut reg = lock(&c.registry);
    if let Some(reg) = reg.as_mut() {
        reg.dirs.retain(|d| d.wd.as_raw() != wd);
    }
}

/// A `lockfile` temp file appeared: while we hold a lock here, an update is waiting.
fn on_attempt(c: &Cell, wd: i32, name: &CStr, due: &mut Vec<Arc<HoldWatch>>) {
    let (holds, dir, write_note) = {
        let mut reg = lock(&c.registry);
        let Some(d) = by_wd(&mut reg, wd) else {
            return;
        };
        // Without a hold here the attempt is not kept from its lock (or is not about us).
        // Holds that already heard need nothing more but the remembered time (a flood of
        // such names, real or not, costs no more than that).
        if d.holds.is_empty() {
            return;
        }
        let all_heard = d.holds.iter().all(|h| h.update_waiting());
        let write_note = d.noted.is_none_or(|t| t.elapsed() >= NOTE_EVERY);
        if all_heard && !write_note {
            d.pending = Some(Instant::now());
            return;
        }
        let proven = match attempt::look(d.dir.as_fd(), name) {
            Sighting::Proven => true,
            Sighting::NameOnly => false,
            Sighting::NotTheSupervisors => return,
        };
        d.pending = Some(Instant::now());
        if write_note {
            d.noted = Some(Instant::now());
        }
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
            write_note,
        )
    };
    if write_note {
        note::write(dir.as_fd(), SystemTime::now());
    }
    for (h, what) in holds {
        if h.mark(&what) && h.hook.is_some() {
            due.push(h);
        }
    }
}

/// A name appeared: a lock name turning into a 65534 file is the Supervisor getting in.
fn on_create(c: &Cell, wd: i32, name: &CStr) {
    let dir = {
        let mut reg = lock(&c.registry);
        let Some(d) = by_wd(&mut reg, wd) else {
            return;
        };
        // A note is written under a private name (`.update-waiting.*`, created) and renamed
        // into place; one made in place is created under its own name.
        if name == note::NAME || name.to_bytes().starts_with(note::TEMP_PREFIX) {
            d.note_maybe = true;
            return;
        }
        // While this process holds a lock here the new lock file is ours (or a shared
        // holder's): the Supervisor cannot get in. And the Supervisor getting in only
        // matters while an attempt is remembered, an acquisition yields, or a note may need
        // clearing: otherwise the look is saved (other holders of the app create lock files
        // here all the time).
        let matters = d.pending.is_some() || d.yielders > 0 || d.note_maybe;
        if !d.holds.is_empty()
            || !matters
            || !d.lock_names.iter().any(|n| n.as_c_str() == name)
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
