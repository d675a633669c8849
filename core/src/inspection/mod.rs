//! Classify whatever occupies a lock path, without following symlinks and without ever
//! blocking (a fifo is opened non-blocking, flock is only tried).

pub(crate) mod status;

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::error::os_err;
use crate::error::Result;
use crate::holder::{ForeignKind, Holder, HolderRecord, SUPERVISOR_UID};
use crate::lock::flock::try_lock_exclusive;

/// Largest record we read; ours is about 250 bytes.
const MAX_RECORD: u64 = 4096;

/// What a look at a lock path found.
pub(crate) enum Seen {
    /// Nothing is there.
    Vacant,
    /// Someone or something holds it.
    Occupied(Holder),
    /// Our record with no live flock: `probe` now holds that flock, on inode `id`.
    Stale {
        record: HolderRecord,
        probe: OwnedFd,
        id: FileId,
    },
}

/// Device and inode of a file: what "the same file" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl From<&FileStat> for FileId {
    fn from(st: &FileStat) -> FileId {
        // `st_ino` is 32 bits wide on 32-bit targets (armv7): widen, never truncate.
        #[allow(clippy::useless_conversion)]
        FileId {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
        }
    }
}

/// The file currently at `dir/name`, not followed. `None` when nothing is there.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr, full: &Path) -> Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(os_err(full, "look up the lock file", e)),
    }
}

/// Classify `dir/name`. The flock probe on a stale file is kept (in [`Seen::Stale`]) so a
/// reclaimer can go on without a window; everyone else's probe is dropped at once.
pub(crate) fn inspect(dir: BorrowedFd<'_>, name: &CStr, full: &Path) -> Result<Seen> {
    // A file may be swapped between our stat and our open: look again a few times.
    for _ in 0..8 {
        let Some(st) = stat_at(dir, name, full)? else {
            return Ok(Seen::Vacant);
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let foreign = |kind: ForeignKind, flock_held: bool, symlink_target: Option<PathBuf>| {
            Seen::Occupied(Holder::Foreign {
                kind,
                owner_uid: st.st_uid,
                flock_held,
                symlink_target,
            })
        };
        match kind {
            SFlag::S_IFREG => {}
            SFlag::S_IFLNK => {
                let target = readlinkat(dir, name).ok().map(PathBuf::from);
                return Ok(foreign(ForeignKind::Symlink, false, target));
            }
            SFlag::S_IFDIR => return Ok(foreign(ForeignKind::Directory, false, None)),
            SFlag::S_IFIFO => return Ok(foreign(ForeignKind::Fifo, false, None)),
            SFlag::S_IFSOCK => return Ok(foreign(ForeignKind::Socket, false, None)),
            _ => return Ok(foreign(ForeignKind::Device, false, None)),
        }
        if st.st_uid == SUPERVISOR_UID {
            return Ok(Seen::Occupied(Holder::Supervisor));
        }
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            // Unreadable (mode 0600 of another user, say): we cannot tell what it is.
            Err(Errno::EACCES) | Err(Errno::EPERM) => {
                return Ok(foreign(ForeignKind::UnknownContent, false, None))
            }
            Err(e) => {
                return Err(os_err(
                    full,
                    "open the existing lock file to see who holds it",
                    e,
                ))
            }
        };
        let now = fstat(&fd).map_err(|e| os_err(full, "inspect the existing lock file", e))?;
        // Not the file we looked at: swapped meanwhile. The inode number alone does not say
        // so: a file deleted between our stat and our open frees its number, and another
        // remover's placeholder directory made at once may get it (seen in the race loop).
        let still_regular =
            SFlag::from_bits_truncate(now.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        if FileId::from(&now) != FileId::from(&st) || !still_regular || now.st_uid == SUPERVISOR_UID
        {
            continue;
        }
        let mut content = Vec::with_capacity(512);
        let file = std::fs::File::from(fd);
        (&file)
            .take(MAX_RECORD)
            .read_to_end(&mut content)
            .map_err(|e| {
                crate::Error::from_os(full, "read the existing lock file", e, String::new)
            })?;
        let unlocked = try_lock_exclusive(&file)
            .map_err(|e| os_err(full, "probe the flock of the existing lock file", e))?;
        let fd = OwnedFd::from(file);
        // A record is someone else's data: one whose uid is not the file's owner was not
        // written by update-lock for that holder (a forged or copied record). Treat it as
        // foreign: never reclaimed, never trusted.
        let record = HolderRecord::parse(&content).filter(|r| r.uid == now.st_uid);
        return Ok(match record {
            Some(record) if unlocked => Seen::Stale {
                record,
                probe: fd,
                id: FileId::from(&now),
            },
            Some(record) => Seen::Occupied(Holder::App(record)),
            None => {
                let kind = match content.as_slice() {
                    b"" => ForeignKind::EmptyFile,
                    b"0" => ForeignKind::LockfileFormat,
                    _ => ForeignKind::UnknownContent,
                };
                foreign(kind, !unlocked, None)
            }
        });
    }
    // Still changing under us after several looks: the caller waits and looks again.
    Ok(Seen::Occupied(Holder::Changing))
}

impl Seen {
    /// The holder, treating a stale lock as [`Holder::Stale`] (dropping the probe).
    pub(crate) fn into_holder(self) -> Option<Holder> {
        match self {
            Seen::Vacant => None,
            Seen::Occupied(h) => Some(h),
            Seen::Stale { record, .. } => Some(Holder::Stale(record)),
        }
    }
}
