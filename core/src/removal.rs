//! Removing a name from the shared lock directory only when it names the very file we mean.
//!
//! `unlink` takes a name, not a file: between a check ("the path is still our inode") and
//! the unlink, the Supervisor's override can delete our file and put its own lock at the
//! name, and the unlink would then delete the Supervisor's fresh lock. So removal never
//! unlinks the public name after looking at it:
//!
//! 1. A placeholder (an empty file of ours) is created under a private random name, and
//!    swapped with whatever stands at the name by `renameat2(RENAME_EXCHANGE)`: atomically,
//!    the name now holds the placeholder and the private name holds the file that stood
//!    there. The name is never empty, so nobody can slip a new file in meanwhile.
//! 2. `fstatat(private)`: is it the inode we mean?
//!    * Yes: it is unlinked under the private name (nobody else knows it), and the
//!      placeholder is then taken away from the name (renamed to another private name,
//!      checked to be the placeholder, unlinked). Only then is the name free, as a release
//!      should leave it.
//!    * No: the two are swapped back (`RENAME_EXCHANGE`), so the other file stands at its
//!      name again, never having left it empty, and the placeholder is deleted.
//!
//! What remains: only root can replace files of others in the sticky directory (the
//! Supervisor's override and its release, which unlinks by name). If root acts on the name
//! in the microseconds between two of these steps, the other file is never deleted and never
//! replaces a newer one: when root emptied the name while that file was aside (it meant to
//! remove it), it stays aside under a `.displaced` private name; when somebody took the
//! empty name meanwhile, likewise. Both are reported. Nothing is ever deleted that is not
//! the inode asked for, or our own placeholder.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
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
    let (holder, placeholder) = make_placeholder(dir, name, full)?;
    let outcome = match renameat2(
        dir,
        holder.as_c_str(),
        dir,
        name,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => swapped(dir, name, full, id, &holder, placeholder),
        Err(Errno::ENOENT) => Ok(Removal::Gone),
        // A sticky directory lets only the owner (or root) move a file: the file we mean
        // belongs to another uid (a dead holder's: we may not remove it), or what stands
        // there now is not ours.
        Err(e @ (Errno::EPERM | Errno::EACCES)) => match stat_at(dir, name, full) {
            Ok(Some(st)) if FileId::from(&st) == id => Err(RemovalError::NotPermitted(e)),
            Ok(Some(st)) => Ok(Removal::NotOurs(describe_other(st.st_uid))),
            _ => Ok(Removal::Gone),
        },
        // A file system without RENAME_EXCHANGE (not tmpfs, ext4, xfs, btrfs or overlayfs,
        // which all have it): the plain check-then-unlink, with its window.
        Err(Errno::EINVAL) => unlink_after_check(dir, name, full, id),
        Err(e) => Err(RemovalError::Os {
            path: full.to_path_buf(),
            op: "swap the lock file with a placeholder to remove it",
            errno: e,
        }),
    };
    // The placeholder is ours and, whatever happened, no longer at the public name.
    remove_if(dir, &holder, placeholder);
    outcome
}

/// After the exchange: `holder` (private) names what stood at `name`, and `name` our
/// placeholder.
fn swapped(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
    id: FileId,
    holder: &CStr,
    placeholder: FileId,
) -> std::result::Result<Removal, RemovalError> {
    let was = stat_at(dir, holder, full).map_err(|e| RemovalError::Check(e.to_string()))?;
    match was {
        Some(st) if FileId::from(&st) == id => {
            // Our lock file, now only under the private name: delete it there. Then free
            // the public name of the placeholder (moved aside, checked, deleted).
            match unlinkat(dir, holder, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(RemovalError::Os {
                        path: full.with_file_name(lossy(holder)),
                        op: "delete our lock file (swapped aside for removal)",
                        errno: e,
                    })
                }
            }
            take_placeholder_away(dir, name, full, placeholder)?;
            Ok(Removal::Removed)
        }
        other => {
            // Not ours: swap back, so it stands at its name again (never left empty).
            let what = match other {
                Some(st) => describe_other(st.st_uid),
                None => "it was deleted meanwhile".into(),
            };
            match renameat2(dir, holder, dir, name, RenameFlags::RENAME_EXCHANGE) {
                Ok(()) => Ok(Removal::NotOurs(what)),
                // Root emptied the name meanwhile (the Supervisor releasing what it took for
                // its own lock): it meant that file to go. It stays aside, never deleted and
                // never brought back as a lock nobody holds.
                Err(Errno::ENOENT) => {
                    let note = displace(dir, holder, name, full);
                    Ok(Removal::NotOurs(format!("{what}; {note}")))
                }
                Err(e) => Err(RemovalError::Os {
                    path: full.to_path_buf(),
                    op: "swap a lock file that is not ours back into place",
                    errno: e,
                }),
            }
        }
    }
}

/// Check, then unlink: only where the file system cannot swap names atomically.
fn unlink_after_check(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
    id: FileId,
) -> std::result::Result<Removal, RemovalError> {
    match stat_at(dir, name, full).map_err(|e| RemovalError::Check(e.to_string()))? {
        Some(st) if FileId::from(&st) == id => {
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => Ok(Removal::Removed),
                Err(Errno::ENOENT) => Ok(Removal::Gone),
                Err(e) => Err(RemovalError::Os {
                    path: full.to_path_buf(),
                    op: "delete the lock file",
                    errno: e,
                }),
            }
        }
        Some(st) => Ok(Removal::NotOurs(describe_other(st.st_uid))),
        None => Ok(Removal::Gone),
    }
}

/// Create our placeholder under a fresh private name; its name and identity. Made with
/// `mknodat`, which needs no descriptor: a release must work when the process has none left.
fn make_placeholder(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
) -> std::result::Result<(CString, FileId), RemovalError> {
    for _ in 0..8 {
        let private = private_name(name, "removing");
        match mknodat(
            dir,
            private.as_c_str(),
            SFlag::S_IFREG,
            Mode::from_bits_truncate(0o600),
            0,
        ) {
            Ok(()) => {
                let st =
                    stat_at(dir, &private, full).map_err(|e| RemovalError::Check(e.to_string()))?;
                return match st {
                    Some(st) => Ok((private, FileId::from(&st))),
                    None => Err(RemovalError::Os {
                        path: full.with_file_name(lossy(&private)),
                        op: "find the placeholder just made",
                        errno: Errno::ENOENT,
                    }),
                };
            }
            Err(Errno::EEXIST) => continue, // someone planted a file at that name
            Err(e @ (Errno::EPERM | Errno::EACCES)) => return Err(RemovalError::NotPermitted(e)),
            Err(e) => {
                return Err(RemovalError::Os {
                    path: full.to_path_buf(),
                    op: "create a placeholder beside the lock file to remove it",
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

/// Free the public name of our placeholder: move whatever is there to a private name; if it
/// is the placeholder, delete it, else put it back (it is someone else's).
fn take_placeholder_away(
    dir: BorrowedFd<'_>,
    name: &CStr,
    full: &Path,
    placeholder: FileId,
) -> std::result::Result<(), RemovalError> {
    let aside = private_name(name, "removing");
    match renameat2(
        dir,
        name,
        dir,
        aside.as_c_str(),
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EPERM | Errno::EACCES) => return Ok(()), // someone else's file: not ours to move
        Err(e) => {
            return Err(RemovalError::Os {
                path: full.to_path_buf(),
                op: "take the placeholder away from the lock name",
                errno: e,
            })
        }
    }
    if !remove_if(dir, &aside, placeholder) {
        put_back(dir, &aside, name, full)?;
    }
    Ok(())
}

/// Delete `dir/private` if it is `id`; whether it was.
fn remove_if(dir: BorrowedFd<'_>, private: &CStr, id: FileId) -> bool {
    match nix::sys::stat::fstatat(dir, private, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if FileId::from(&st) == id => {
            let _ = unlinkat(dir, private, UnlinkatFlags::NoRemoveDir);
            true
        }
        _ => false,
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

/// Put a file that is not ours back at `name`, if the name is still empty. `Some(note)`
/// when it stays at a `.displaced` private name instead: somebody took the name meanwhile,
/// and its file is never replaced. Never deleted either way.
fn put_back(
    dir: BorrowedFd<'_>,
    private: &CStr,
    name: &CStr,
    full: &Path,
) -> std::result::Result<Option<String>, RemovalError> {
    match renameat2(dir, private, dir, name, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(None),
        Err(Errno::EEXIST) => Ok(Some(displace(dir, private, name, full))),
        Err(e) => Err(RemovalError::Os {
            path: full.with_file_name(lossy(private)),
            op: "put back a lock file that is not ours",
            errno: e,
        }),
    }
}

/// Leave the file at `private` under a `.displaced` name (reported, never deleted).
fn displace(dir: BorrowedFd<'_>, private: &CStr, name: &CStr, full: &Path) -> String {
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
    format!(
        "the name changed hands while it was looked at; the file that stood there is kept at {} (not deleted): check who created it",
        full.with_file_name(shown).display()
    )
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
