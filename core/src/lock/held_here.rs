//! The lock files this process holds, by whom and how: so that a nested acquisition (the
//! same thread or task taking a path it already holds) fails fast instead of waiting for
//! itself forever (a second flock on another descriptor conflicts with our own), and two
//! shared holds of the same owner join.
//!
//! The key is the file's device and inode, and an entry lives exactly as long as the open
//! descriptor that holds the flock: while it is open, that inode number cannot be reused,
//! so "the file at the name is one this owner holds" is a fact, not a guess from a holder
//! record. Entries carry the pid that made them: a child created by `fork()` inherits the
//! memory, never the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::inspection::FileId;

/// Who asks for a lock inside this process, for the nesting check: by default the calling
/// thread; an async binding passes its task (a Python asyncio task, a Node.js async
/// context), since one task may wait on several threads and one thread run many tasks.
/// Threads and tasks with different owners wait for each other as separate holders do.
///
/// ```
/// use update_lock::LockOwner;
/// assert_eq!(LockOwner::current_thread(), LockOwner::current_thread());
/// assert_ne!(LockOwner::new(), LockOwner::new());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockOwner(u64);

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_OWNER: LockOwner = LockOwner::new();
}

impl LockOwner {
    /// A new owner, different from every other (for a task or async context).
    #[allow(clippy::new_without_default)]
    pub fn new() -> LockOwner {
        LockOwner(NEXT_OWNER.fetch_add(1, Ordering::Relaxed))
    }

    /// The calling thread (the default owner).
    pub fn current_thread() -> LockOwner {
        THREAD_OWNER.with(|o| *o)
    }

    /// The number that identifies this owner (for a binding to keep it in its language).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The owner a binding kept as [`as_u64`](Self::as_u64).
    pub fn from_u64(n: u64) -> LockOwner {
        LockOwner(n)
    }
}

/// How a lock file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldAs {
    /// `LOCK_EX`: nobody else may join.
    Exclusive,
    /// `LOCK_SH`: other shared holders of the app may join.
    Shared,
}

struct Entry {
    id: FileId,
    pid: u32,
    owner: LockOwner,
    how: HeldAs,
}

static HELD: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// An entry in the table, removed when dropped (with the descriptor it stands for).
#[derive(Debug)]
pub(crate) struct Registration {
    id: FileId,
    pid: u32,
    owner: LockOwner,
}

/// Note that `owner` in this process now holds the file `id` as `how`.
pub(crate) fn register(id: FileId, owner: LockOwner, how: HeldAs) -> Registration {
    let pid = std::process::id();
    table().push(Entry {
        id,
        pid,
        owner,
        how,
    });
    Registration { id, pid, owner }
}

/// How `owner` in this process holds the file `id`, if it does (exclusive wins).
pub(crate) fn held_by(id: FileId, owner: LockOwner) -> Option<HeldAs> {
    let pid = std::process::id();
    let t = table();
    let mut found = None;
    for e in t
        .iter()
        .filter(|e| e.id == id && e.pid == pid && e.owner == owner)
    {
        if e.how == HeldAs::Exclusive {
            return Some(HeldAs::Exclusive);
        }
        found = Some(e.how);
    }
    found
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = table();
        if let Some(i) = t
            .iter()
            .position(|e| e.id == self.id && e.pid == self.pid && e.owner == self.owner)
        {
            t.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_as_long_as_its_registration_and_belongs_to_its_owner() {
        let id = FileId {
            dev: u64::MAX,
            ino: 7,
        };
        let (me, other) = (LockOwner::current_thread(), LockOwner::new());
        assert_eq!(held_by(id, me), None);
        let shared = register(id, me, HeldAs::Shared);
        let again = register(id, me, HeldAs::Shared);
        assert_eq!(held_by(id, me), Some(HeldAs::Shared));
        assert_eq!(held_by(id, other), None, "another owner holds nothing");
        drop(shared);
        assert_eq!(
            held_by(id, me),
            Some(HeldAs::Shared),
            "one shared hold left"
        );
        drop(again);
        assert_eq!(held_by(id, me), None);
        let ex = register(id, other, HeldAs::Exclusive);
        assert_eq!(held_by(id, other), Some(HeldAs::Exclusive));
        assert_eq!(held_by(id, me), None);
        drop(ex);
        assert_eq!(held_by(id, other), None);
    }
}
