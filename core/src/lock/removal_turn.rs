//! Removers of one lock directory take turns.
//!
//! Two removers of this SDK at the same name at once (two reclaimers in different
//! processes, one of them late: the file it judged stale left the name meanwhile) would
//! swap each other's placeholder in and out of the name. One of them then puts the other's
//! placeholder back after its owner looked for it there, and the empty directory stays at
//! the lock name for good: the Supervisor never updates again. So a removal first takes
//! `flock(LOCK_EX)` on the lock directory itself, through a descriptor of its own (flock
//! belongs to an open file description: every removal, in every thread, process or
//! container sharing the directory, opens its own).
//!
//! The turn lasts a few system calls. It is never a reason to fail or to hang: when the
//! directory cannot be opened for reading, or when someone keeps the turn longer than
//! [`TURN_WAIT`] (a co-tenant holding it on purpose; it could as well hold the update lock
//! itself), the removal goes on without it, as safe as before against everyone but a
//! second remover of ours at that very instant.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::lock::flock::try_lock_exclusive;

/// How long a removal waits for its turn before it goes on without one.
pub(crate) const TURN_WAIT: Duration = Duration::from_secs(2);

/// This removal's turn at the directory; released when dropped (the descriptor closes).
pub(crate) struct RemovalTurn {
    _dir: Option<File>,
}

impl RemovalTurn {
    /// Wait for the turn at `dir` (at most [`TURN_WAIT`]); without one when it cannot be
    /// had.
    pub(crate) fn take(dir: BorrowedFd<'_>) -> RemovalTurn {
        let Ok(fd) = openat(
            dir,
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return RemovalTurn { _dir: None };
        };
        let file = File::from(fd);
        let until = Instant::now() + TURN_WAIT;
        let mut pause = Duration::from_micros(50);
        let mut tries = 0u32;
        loop {
            match try_lock_exclusive(&file) {
                Ok(true) => return RemovalTurn { _dir: Some(file) },
                Ok(false) if Instant::now() < until => {
                    // A turn lasts microseconds: yield first, then back off.
                    tries += 1;
                    if tries < 100 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(1));
                    }
                }
                _ => return RemovalTurn { _dir: None },
            }
        }
    }

    /// Whether this removal holds the turn.
    #[cfg(test)]
    pub(crate) fn held(&self) -> bool {
        self._dir.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_second_remover_waits_for_the_first_and_one_held_too_long_is_gone_around() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        let first = RemovalTurn::take(dir.as_fd());
        assert!(first.held());
        // Someone keeps the turn: the second removal goes on without it, after the wait.
        let started = Instant::now();
        let second = RemovalTurn::take(dir.as_fd());
        assert!(!second.held());
        assert!(started.elapsed() >= TURN_WAIT);
        drop(first);
        assert!(RemovalTurn::take(dir.as_fd()).held());
    }
}
