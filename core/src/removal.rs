//! Removing a name from the shared lock directory only when it names the very file we mean.
//!
//! `unlink` takes a name, not a file: between a check ("the path is still our inode") and
//! the unlink, the Supervisor's override can delete our file and put its own lock at the
//! name, and the unlink would then delete the Supervisor's fresh lock. So removal goes
//! through a private name instead:
//!
//! 1. `renameat2(name -> private, RENAME_NOREPLACE)`: atomically takes *whatever* is at the
//!    name away from it (the private name is random; `NOREPLACE` never clobbers a file
//!    someone planted there).
//! 2. `fstatat(private)`: is it the inode we mean? Then `unlink(private)`: nobody else
//!    knows that name, so this deletes exactly our file.
//! 3. Otherwise the file is put back under its name with `RENAME_NOREPLACE`, untouched.
//!
//! The window that remains: only when the name was swapped between our last look and the
//! rename (which needs root, since the directory is sticky: the Supervisor's override), the
//! other file is absent from its name for the two syscalls until it is put back. If
//! somebody creates a new file at the name in exactly those microseconds, the first file
//! is swapped back in with `RENAME_EXCHANGE` (its holder was there first) and the
//! newcomer's file stays at a private name ending in `.displaced`, which is reported and
//! never deleted. Nothing is ever deleted that is not the inode asked for.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::inspect::{stat_at, FileId};

/// What a removal did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// The name named our inode and is gone now.
    Removed,
    /// Nothing was at the name any more.
    Gone,
    /// Another file stands at the name; it was left alone (or put back). The string says
    /// what it is.
    NotOurs(String),
}

/// Remove `dir/name` only if it is the file `id`. `Err` only for an operating-system
/// failure other than "not ours" (the message names the path and what to do).
pub(crate) fn remove_exact(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
    id: FileId,
) -> std::result::Result<Removal, RemovalError> {
    let private = match take_away(dir, name, full)? {
        Some(p) => p,
        None => return Ok(Removal::Gone),
    };
    let now = stat_at(dir, &private, full).map_err(|e| RemovalError::Check(e.to_string()))?;
    match now {
        Some(st) if FileId::from(&st) == id => {
            match unlinkat(dir, private.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(Removal::Removed),
                Err(e) => Err(RemovalError::Os {
                    path: full.with_file_name(lossy(&private)),
                    op: "delete our lock file (moved aside for removal)",
                    errno: e,
                }),
            }
        }
        Some(st) => {
            let what = describe_other(st.st_uid);
            put_back(dir, &private, name, full).map(|note| {
                Removal::NotOurs(match note {
                    Some(n) => format!("{what}; {n}"),
                    None => what,
                })
            })
        }
        // Somebody who may (root) removed it from the private name: nothing of ours is there.
        None => Ok(Removal::Gone),
    }
}

/// Why a removal could not be completed.
#[derive(Debug)]
pub(crate) enum RemovalError {
    /// The directory refused the rename (a sticky directory: the file is another uid's).
    NotPermitted(Errno),
    /// The name could not be looked at.
    Check(String),
    /// Another operating-system error.
    Os {
        /// The path concerned.
        path: PathBuf,
        /// What we tried to do.
        op: &'static str,
        /// The error.
        errno: Errno,
    },
}

impl std::fmt::Display for RemovalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemovalError::NotPermitted(e) => write!(f, "not permitted to move it ({e})"),
            RemovalError::Check(s) => write!(f, "could not check it: {s}"),
            RemovalError::Os { path, op, errno } => {
                write!(f, "{}: cannot {op}: {errno}", path.display())
            }
        }
    }
}

fn describe_other(uid: u32) -> String {
    if uid == crate::holder::SUPERVISOR_UID {
        "it now belongs to the Supervisor (owner uid 65534)".into()
    } else {
        format!("it was replaced by another file (owner uid {uid})")
    }
}

/// Move whatever is at `name` to a fresh private name. `None` when nothing is there.
fn take_away(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
) -> std::result::Result<Option<CString>, RemovalError> {
    for _ in 0..8 {
        let private = private_name(name, "removing");
        match renameat2(
            dir,
            name,
            dir,
            private.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(Some(private)),
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::EEXIST) => continue, // someone planted a file at that name: pick another
            Err(e @ (Errno::EPERM | Errno::EACCES)) => return Err(RemovalError::NotPermitted(e)),
            Err(e) => {
                return Err(RemovalError::Os {
                    path: full.to_path_buf(),
                    op: "move the lock file aside to remove it",
                    errno: e,
                })
            }
        }
    }
    Err(RemovalError::Os {
        path: full.to_path_buf(),
        op: "find a free private name beside the lock file",
        errno: Errno::EEXIST,
    })
}

/// Put a file that is not ours back at `name`. `Some(note)` when that was impossible
/// because a newcomer took the name meanwhile.
fn put_back(
    dir: BorrowedFd<'_>,
    private: &CStr,
    name: &CStr,
    full: &Path,
) -> std::result::Result<Option<String>, RemovalError> {
    let failed = |e| RemovalError::Os {
        path: full.with_file_name(lossy(private)),
        op: "put back a lock file that is not ours",
        errno: e,
    };
    for _ in 0..8 {
        match renameat2(dir, private, dir, name, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(None),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(failed(e)),
        }
        // A newcomer took the name meanwhile. The first file goes back where it was; the
        // newcomer's file moves aside (never deleted).
        match renameat2(dir, private, dir, name, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {}
            Err(Errno::ENOENT) => continue, // the newcomer's file went away again
            Err(e) => return Err(failed(e)),
        }
        let displaced = private_name(name, "displaced");
        let shown = match renameat2(
            dir,
            private,
            dir,
            displaced.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => lossy(&displaced),
            Err(_) => lossy(private),
        };
        return Ok(Some(format!(
            "a file created at that name in the same instant was moved to {} (not deleted): check who created it",
            full.with_file_name(shown).display()
        )));
    }
    Err(failed(Errno::EAGAIN))
}

/// `.NAME.update-lock-KIND.PID.N`: never `updates.lock` (the reboot script's `find` skips
/// it) and never procmail's `_XX.*` temp names.
fn private_name(name: &CStr, kind: &str) -> CString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let s = format!(
        ".{}.update-lock-{kind}.{}.{n}{nanos:x}",
        name.to_string_lossy(),
        std::process::id()
    );
    // No NUL can appear: the name had none and the rest is ASCII.
    CString::new(s).unwrap_or_else(|_| CString::from(c".update-lock-private"))
}

fn lossy(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

/// Used by tests: whether a directory entry is one of our private names.
#[cfg(test)]
pub(crate) fn is_private_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".update-lock-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    fn setup() -> (tempfile::TempDir, std::os::fd::OwnedFd, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(
            tmp.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let path = tmp.path().join("updates.lock");
        (tmp, dir, path)
    }

    fn id_of(p: &Path) -> FileId {
        let m = std::fs::symlink_metadata(p).unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[test]
    fn removes_the_file_it_was_asked_to_remove() {
        let (tmp, dir, path) = setup();
        std::fs::write(&path, "x").unwrap();
        let id = id_of(&path);
        let r = remove_exact(dir.as_fd(), c"updates.lock", &path, id).unwrap();
        assert_eq!(r, Removal::Removed);
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    }

    #[test]
    fn puts_back_a_file_that_is_not_the_one_asked_for() {
        let (tmp, dir, path) = setup();
        // Our file lives on under another name, so its inode number cannot be reused.
        let kept = tmp.path().join("kept");
        std::fs::write(&kept, "ours").unwrap();
        let ours = id_of(&kept);
        std::fs::write(&path, "theirs").unwrap();
        let theirs = id_of(&path);
        let r = remove_exact(dir.as_fd(), c"updates.lock", &path, ours).unwrap();
        assert!(matches!(r, Removal::NotOurs(_)), "{r:?}");
        assert_eq!(
            id_of(&path),
            theirs,
            "the other file must stand at its name again"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no private name left behind");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "ours");
    }

    #[test]
    fn a_missing_name_is_gone_and_a_planted_private_name_is_never_clobbered() {
        let (tmp, dir, path) = setup();
        let id = FileId { dev: 0, ino: 0 };
        assert_eq!(
            remove_exact(dir.as_fd(), c"updates.lock", &path, id).unwrap(),
            Removal::Gone
        );
        assert!(is_private_name(&lossy(&private_name(
            c"updates.lock",
            "removing"
        ))));
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    }
}
