//! Opening the directory a lock lives in: created 1777 like the Supervisor does when it is
//! missing (off-device), never chmod-ed when it already existed, and never reached through a
//! symlink that sits in a world-writable directory.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fchmod, fstat, lstat, Mode, SFlag};
use nix::unistd::mkdir;

use crate::error::{Error, Result};
use crate::inspect::FileId;

/// A lock directory opened earlier by this process, reused while the path still names it.
struct CachedDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    id: FileId,
}

static CACHE: Mutex<Vec<CachedDir>> = Mutex::new(Vec::new());
const CACHE_MAX: usize = 16;

/// [`open_lock_dir`], reusing a descriptor this process opened before when the path (not
/// followed) still names that same, still-linked directory. Saves an open/close pair per
/// acquisition. Returns the descriptor and the directory's identity.
pub(crate) fn lock_dir(dir: &Path, create: bool) -> Result<(Arc<OwnedFd>, FileId)> {
    let now = lstat(dir)
        .ok()
        .filter(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR);
    if let Some(st) = &now {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache
            .iter()
            .find(|c| c.path == dir && c.id == FileId::from(st))
        {
            // A deleted directory has no links; its inode number may have been reused.
            if fstat(c.fd.as_ref()).is_ok_and(|cst| cst.st_nlink > 0) {
                return Ok((c.fd.clone(), c.id));
            }
        }
    }
    let fd = Arc::new(open_lock_dir(dir, create)?);
    let st = fstat(fd.as_ref()).map_err(|e| os_err(dir, "inspect the lock directory", e))?;
    let id = FileId::from(&st);
    // Only cache a directory reached without a symlink (the fast path checks with lstat).
    if lstat(dir).is_ok_and(|l| FileId::from(&l) == id) {
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|c| c.path != dir);
        if cache.len() >= CACHE_MAX {
            cache.remove(0);
        }
        cache.push(CachedDir {
            path: dir.to_path_buf(),
            fd: fd.clone(),
            id,
        });
    }
    Ok((fd, id))
}

/// Open `dir` for `*at()` calls. With `create`, a missing directory (whose parent exists)
/// is created with mode 1777; a directory that already existed is never chmod-ed.
pub(crate) fn open_lock_dir(dir: &Path, create: bool) -> Result<OwnedFd> {
    match lstat(dir) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                refuse_symlink_in_world_writable(dir)?;
            } else if kind != SFlag::S_IFDIR {
                return Err(Error::invalid(
                    dir,
                    "the lock directory exists but is not a directory; pass a lock path inside a directory",
                ));
            }
            open_dir(dir, kind == SFlag::S_IFLNK)
        }
        Err(Errno::ENOENT) if create => create_dir(dir),
        Err(Errno::ENOENT) => Err(Error::invalid(
            dir,
            "the lock directory does not exist; create it or pass a lock path in an existing directory",
        )),
        Err(e) => Err(os_err(dir, "look up the lock directory", e)),
    }
}

fn refuse_symlink_in_world_writable(dir: &Path) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let st = lstat(parent).map_err(|e| os_err(parent, "look up the directory", e))?;
    if st.st_mode & 0o002 != 0 {
        return Err(Error::invalid(
            dir,
            format!(
                "the lock directory is a symbolic link inside the world-writable {}, which anyone could redirect; update-lock never follows such links: pass the real directory",
                parent.display()
            ),
        ));
    }
    Ok(())
}

fn open_dir(dir: &Path, follow: bool) -> Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    open(dir, flags, Mode::empty()).map_err(|e| os_err(dir, "open the lock directory", e))
}

fn create_dir(dir: &Path) -> Result<OwnedFd> {
    match mkdir(dir, Mode::from_bits_truncate(0o1777)) {
        Ok(()) => {
            let fd = open_dir(dir, false)?;
            // We created it: give it the Supervisor's mode whatever our umask removed.
            // Only if it is still the directory we made (owned by us, a directory).
            let st = fstat(&fd).map_err(|e| os_err(dir, "inspect the new lock directory", e))?;
            if st.st_uid == nix::unistd::geteuid().as_raw() {
                fchmod(&fd, Mode::from_bits_truncate(0o1777))
                    .map_err(|e| os_err(dir, "set mode 1777 on the new lock directory", e))?;
            }
            Ok(fd)
        }
        // Someone else created it in between: use it as it is, never chmod it.
        Err(Errno::EEXIST) => open_lock_dir(dir, false),
        Err(Errno::ENOENT) => Err(Error::invalid(
            dir,
            format!(
                "the lock directory does not exist and cannot be created because {} does not exist either; create it, or pass a lock path in an existing directory",
                dir.parent().unwrap_or(Path::new("/")).display()
            ),
        )),
        Err(e) => Err(os_err(dir, "create the lock directory", e)),
    }
}

pub(crate) fn os_err(path: &Path, op: &'static str, e: Errno) -> Error {
    Error::from_os(path, op, std::io::Error::from(e), || {
        format!(
            "run as a user that may write to {}, or make it mode 1777 as the Supervisor does on a device",
            path.display()
        )
    })
}
