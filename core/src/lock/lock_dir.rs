//! Opening the directory a lock lives in: created 1777 like the Supervisor does when it is
//! missing (off-device), never chmod-ed when it already existed, and never reached through a
//! symlink that sits in a world-writable directory, at any depth of the path.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, lstat, mkdirat, Mode, SFlag};

use crate::error::os_err;
use crate::error::{Error, Result};
use crate::inspection::FileId;

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
///
/// The path is walked one component at a time ([`walk`]): a symbolic link anywhere in it
/// that sits in a world-writable directory is refused, because anyone could redirect it.
pub(crate) fn open_lock_dir(dir: &Path, create: bool) -> Result<OwnedFd> {
    match walk(dir) {
        Ok(fd) => Ok(fd),
        Err(Walked::Missing { last: true }) if create => create_dir(dir),
        Err(Walked::Missing { .. }) => Err(Error::invalid(
            dir,
            "the lock directory does not exist; create it or pass a lock path in an existing directory",
        )),
        Err(Walked::NotDirectory) => Err(Error::invalid(
            dir,
            "the lock directory exists but is not a directory; pass a lock path inside a directory",
        )),
        Err(Walked::UnsafeSymlink { link, parent }) => Err(Error::invalid(
            dir,
            format!(
                "{} is a symbolic link inside the world-writable {}, which anyone could redirect; update-lock never follows such links: pass the real directory",
                link.display(),
                parent.display()
            ),
        )),
        Err(Walked::Os(e)) => Err(os_err(dir, "open the lock directory", e)),
    }
}

/// Why [`walk`] stopped.
enum Walked {
    /// A component does not exist (`last`: only the final one is missing).
    Missing { last: bool },
    /// A component is not a directory.
    NotDirectory,
    /// `link` is a symbolic link in the world-writable directory `parent`.
    UnsafeSymlink { link: PathBuf, parent: PathBuf },
    /// Another error.
    Os(Errno),
}

/// The most symbolic links followed in one path (as the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Open the directory `dir` names, resolving it one component at a time with `openat`: a
/// symbolic link is followed only when the directory holding it is not world-writable
/// (its target is walked the same way); anything else is opened with `O_NOFOLLOW`. So
/// no link that another user could plant or swap is ever followed, at any depth.
fn walk(dir: &Path) -> std::result::Result<OwnedFd, Walked> {
    use std::os::unix::ffi::OsStrExt;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let start = |absolute: bool| {
        open(if absolute { "/" } else { "." }, flags, Mode::empty()).map_err(Walked::Os)
    };
    let mut cur = start(dir.is_absolute())?;
    // Where we are, for messages (as the path was written, links unexpanded).
    let mut shown = if dir.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    let mut todo = names_in(dir);
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        let last = todo.is_empty();
        let cname =
            std::ffi::CString::new(name.as_bytes()).map_err(|_| Walked::Os(Errno::EINVAL))?;
        let st = match fstatat(&cur, cname.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Err(Walked::Missing { last }),
            Err(e) => return Err(Walked::Os(e)),
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                cur = match openat(&cur, cname.as_c_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => return Err(Walked::Missing { last }),
                    // Swapped for a link or a file since we looked: never followed.
                    Err(e) => return Err(Walked::Os(e)),
                };
                shown.push(&name);
            }
            SFlag::S_IFLNK => {
                let here = fstat(&cur).map_err(Walked::Os)?;
                if here.st_mode & 0o002 != 0 {
                    return Err(Walked::UnsafeSymlink {
                        link: shown.join(&name),
                        parent: if shown.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            shown.clone()
                        },
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Walked::Os(Errno::ELOOP));
                }
                let target = readlinkat(&cur, cname.as_c_str()).map_err(Walked::Os)?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    cur = start(true)?;
                }
                let mut expanded = names_in(&target);
                expanded.extend(todo);
                todo = expanded;
                shown.push(&name);
            }
            _ => return Err(Walked::NotDirectory),
        }
    }
    Ok(cur)
}

/// The names a path walks through, in order (`..` kept, `.` and the root dropped).
fn names_in(path: &Path) -> std::collections::VecDeque<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            std::path::Component::ParentDir => Some(std::ffi::OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn create_dir(dir: &Path) -> Result<OwnedFd> {
    // Created inside its parent as walked (no link followed), by name.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = dir.file_name() else {
        return Err(Error::invalid(dir, "the lock directory has no name"));
    };
    let pfd = match walk(parent) {
        Ok(fd) => fd,
        Err(Walked::Missing { .. }) => {
            return Err(Error::invalid(
                dir,
                format!(
                    "the lock directory does not exist and cannot be created because {} does not exist either; create it, or pass a lock path in an existing directory",
                    parent.display()
                ),
            ))
        }
        Err(_) => return open_lock_dir(parent, false).and_then(|_| open_lock_dir(dir, false)),
    };
    match mkdirat(&pfd, name, Mode::from_bits_truncate(0o1777)) {
        Ok(()) => {
            let fd = openat(
                &pfd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| os_err(dir, "open the new lock directory", e))?;
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
        Err(e) => Err(os_err(dir, "create the lock directory", e)),
    }
}
