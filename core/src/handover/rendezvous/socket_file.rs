//! The socket file in the shared service directory: binding it for the old version,
//! connecting to it for the new one, and telling a live server from a stale socket left by a
//! crashed one.
//!
//! A server holds `flock` on a companion file (`<socket>.lock`) for as long as it serves, so
//! a socket whose companion nobody has locked is provably stale and may be replaced or
//! removed, and two servers never race for the name. The socket is created under a temporary
//! name (through `/proc/self/fd/<dir>`, so no symlink is followed), made mode 0600 and
//! renamed into place only once it listens: the name never refers to a socket nobody listens on
//! while its server lives.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::poll::PollFlags;
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{fchmodat, FchmodatFlags, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::conn::{fail, wait_ready, Conn};
use super::failure::HandoverFailure;
use crate::error::os_err;
use crate::error::{Error, Result};
use crate::inspection::{stat_at, FileId};
use crate::lock::flock::try_lock_exclusive;
use crate::lock::lock_dir::open_lock_dir;
use crate::lock::wait::WaitControl;
use crate::paths::split;

use super::options::RendezvousOptions;

/// A bound, listening socket file and the companion flock that proves it is live.
pub(crate) struct Bound {
    pub listener: OwnedFd,
    pub dir: OwnedFd,
    pub name: CString,
    pub id: FileId,
    /// The companion file, flocked while we serve (taken out when serving ends).
    pub guard: std::sync::Mutex<Option<OwnedFd>>,
    pub path: PathBuf,
    /// The process that bound it: a forked child never removes its parent's socket.
    pub pid: u32,
}

fn companion_name(name: &CStr) -> Result<CString> {
    let mut v = name.to_bytes().to_vec();
    v.extend_from_slice(b".lock");
    CString::new(v).map_err(|_| Error::invalid(Path::new(""), "socket name"))
}

fn is_socket(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
}

/// Check the final component fits in a socket address reached through `/proc/self/fd`.
fn check_name(path: &Path, name: &CStr) -> Result<()> {
    // sun_path holds 108 bytes; "/proc/self/fd/NNNNNNNNNN/" takes at most 25, and the
    // temporary name adds 24.
    if name.to_bytes().len() > 58 {
        return Err(Error::invalid(
            path,
            "the socket's file name is too long for a Unix socket address (at most 58 bytes); use a shorter name",
        ));
    }
    Ok(())
}

fn via_dir(dir: BorrowedFd<'_>, name: &CStr) -> Result<UnixAddr> {
    let p = format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        name.to_string_lossy()
    );
    UnixAddr::new(p.as_str()).map_err(|e| os_err(Path::new(&p), "build the socket address", e))
}

/// Open the companion file and try to take its flock. `Ok(None)` when someone holds it.
fn lock_companion(dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<Option<OwnedFd>> {
    let cname = companion_name(name)?;
    let cpath = PathBuf::from(format!("{}.lock", path.display()));
    let fd = openat(
        dir,
        cname.as_c_str(),
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| match e {
        // A symlink (ELOOP, or EACCES from the sticky-directory rules), or another user's
        // private file: say what is there instead of a bare "permission denied".
        Errno::ELOOP | Errno::EACCES | Errno::EPERM | Errno::ENXIO => {
            let what = match stat_at(dir, &cname, &cpath) {
                Ok(Some(st)) => describe_object(dir, &cname, &st),
                _ => format!("something we may not open ({e})"),
            };
            fail(
                path,
                HandoverFailure::Blocked,
                format!(
                    "{what} stands at the socket's companion lock {}; update-lock never follows or takes over such a file: remove it",
                    cpath.display()
                ),
            )
        }
        e => os_err(&cpath, "open the hand-over socket's companion lock", e),
    })?;
    let st = nix::sys::stat::fstat(&fd)
        .map_err(|e| os_err(&cpath, "inspect the hand-over socket's companion lock", e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(fail(
            path,
            HandoverFailure::Blocked,
            format!(
                "{} stands at the socket's companion lock {}: remove it",
                describe_object(dir, &cname, &st),
                cpath.display()
            ),
        ));
    }
    let file = std::fs::File::from(fd);
    match try_lock_exclusive(&file) {
        Ok(true) => Ok(Some(OwnedFd::from(file))),
        Ok(false) => Ok(None),
        Err(e) => Err(os_err(
            &cpath,
            "flock the hand-over socket's companion lock",
            e,
        )),
    }
}

/// What stands at `dir/name`, in words: kind and owner (and a symlink's target).
fn describe_object(dir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> String {
    let uid = st.st_uid;
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(dir, name)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            format!("a symbolic link (to {target}) owned by uid {uid}")
        }
        SFlag::S_IFREG => format!("a regular file owned by uid {uid}"),
        SFlag::S_IFDIR => format!("a directory owned by uid {uid}"),
        SFlag::S_IFIFO => format!("a named pipe (fifo) owned by uid {uid}"),
        SFlag::S_IFSOCK => format!("a socket owned by uid {uid}"),
        _ => format!("a device node owned by uid {uid}"),
    }
}

/// Path errors name the socket, not a lock.
fn socket_path_error(e: Error) -> Error {
    match e {
        Error::InvalidPath { path, reason, .. } => Error::InvalidPath {
            path,
            what: "hand-over socket path",
            reason,
        },
        e => e,
    }
}

/// Refuse anything at the socket path that is not a socket (never replaced or removed).
fn refuse_non_socket(dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<Option<FileStat>> {
    match stat_at(dir, name, path)? {
        Some(st) if !is_socket(&st) => Err(fail(
            path,
            HandoverFailure::Blocked,
            format!(
                "{} stands at the hand-over socket path instead of a socket; update-lock never replaces or removes it",
                describe_object(dir, name, &st)
            ),
        )),
        st => Ok(st),
    }
}

/// Who listens on the socket, for messages: " (pid P, uid U)", "" when unknown. The pid is
/// 0 when the server is in another PID namespace (another container).
fn serving_process(dir: BorrowedFd<'_>, name: &CStr) -> String {
    let Ok(addr) = via_dir(dir, name) else {
        return String::new();
    };
    let Ok(sock) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return String::new();
    };
    if connect(sock.as_raw_fd(), &addr).is_err() {
        return String::new();
    }
    // The server sees a connection that closes without HELLO and turns it away.
    match Conn::new(sock, Path::new("")).peer_cred() {
        Ok((uid, pid)) if pid > 0 => format!(" (pid {pid}, uid {uid})"),
        Ok((uid, _)) => format!(" (in another container, uid {uid})"),
        Err(_) => String::new(),
    }
}

/// Bind and listen on `path` for the old version.
pub(crate) fn bind_socket(path: &Path, opts: &RendezvousOptions) -> Result<Bound> {
    bind_socket_inner(path, opts).map_err(socket_path_error)
}

fn bind_socket_inner(path: &Path, opts: &RendezvousOptions) -> Result<Bound> {
    let s = split(path)?;
    check_name(path, &s.name)?;
    let dir = open_lock_dir(&s.dir, true)?;
    // Look before creating the companion lock, so a refused path leaves nothing behind.
    refuse_non_socket(dir.as_fd(), &s.name, path)?;
    let Some(guard) = lock_companion(dir.as_fd(), &s.name, path)? else {
        return Err(fail(
            path,
            HandoverFailure::AlreadyServing,
            format!(
                "another process{} holds the socket's companion lock and serves hand-over on it",
                serving_process(dir.as_fd(), &s.name)
            ),
        ));
    };
    // We hold the companion lock, so whatever socket is at the name is stale. Anything that
    // is not a socket is someone else's file: never replaced; nor is a stale socket of a
    // user that is not a peer of ours (not ours to remove).
    if let Some(st) = refuse_non_socket(dir.as_fd(), &s.name, path)? {
        if !opts.peer_allowed(st.st_uid) {
            return Err(fail(
                path,
                HandoverFailure::Blocked,
                format!(
                    "a dead socket of uid {} stands at the hand-over socket path; it is not ours to remove",
                    st.st_uid
                ),
            ));
        }
    }
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = CString::new(format!(".hs.{}.{seq}.tmp", std::process::id()))
        .map_err(|_| Error::invalid(path, "temporary name"))?;
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| os_err(path, "create the hand-over socket", e))?;
    // A temporary name left by a crashed process of the same pid would make bind fail.
    let _ = unlinkat(dir.as_fd(), tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
    bind(listener.as_raw_fd(), &via_dir(dir.as_fd(), &tmp)?)
        .map_err(|e| os_err(path, "bind the hand-over socket", e))?;
    let placed = (|| {
        // Only the owner (and root) may connect: 0600. With peer uids allowed, anyone may
        // connect and the SO_PEERCRED check decides.
        let mode = if opts.peer_uids.is_empty() {
            0o600
        } else {
            0o666
        };
        fchmodat(
            dir.as_fd(),
            tmp.as_c_str(),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| os_err(path, "make the hand-over socket private (mode 0600)", e))?;
        listen(&listener, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| os_err(path, "listen on the hand-over socket", e))?;
        renameat(dir.as_fd(), tmp.as_c_str(), dir.as_fd(), s.name.as_c_str())
            .map_err(|e| os_err(path, "move the hand-over socket into place", e))?;
        let st = stat_at(dir.as_fd(), &s.name, path)?
            .ok_or_else(|| os_err(path, "find the new hand-over socket", Errno::ENOENT))?;
        Ok(FileId::from(&st))
    })();
    let id = match placed {
        Ok(id) => id,
        Err(e) => {
            let _ = unlinkat(dir.as_fd(), tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
    };
    Ok(Bound {
        listener,
        dir,
        name: s.name,
        id,
        guard: std::sync::Mutex::new(Some(guard)),
        path: path.to_path_buf(),
        pid: std::process::id(),
    })
}

impl Bound {
    /// Stop serving on the name: remove the socket if it is still ours, then release the
    /// companion lock, so a successor may bind its own server at once (even while this
    /// process still has the listener open).
    pub(crate) fn retire(&self) {
        self.unlink();
        if let Ok(mut g) = self.guard.lock() {
            g.take();
        }
    }

    /// Remove the socket file if it is still ours (stops new successors from connecting).
    pub(crate) fn unlink(&self) {
        if self.pid != std::process::id() {
            return;
        }
        if let Ok(Some(st)) = stat_at(self.dir.as_fd(), &self.name, &self.path) {
            if FileId::from(&st) == self.id {
                let _ = unlinkat(
                    self.dir.as_fd(),
                    self.name.as_c_str(),
                    UnlinkatFlags::NoRemoveDir,
                );
            }
        }
    }
}

/// What a successor found at the socket path.
pub(crate) enum Found {
    /// A server accepted our connection.
    Server(Conn),
    /// Nobody to take from (no socket, no directory, or a stale socket, now removed).
    NoPredecessor,
}

/// Connect to the old version's socket.
pub(crate) fn connect_socket(
    path: &Path,
    opts: &RendezvousOptions,
    deadline: Instant,
    ctl: &mut WaitControl<'_>,
) -> Result<Found> {
    connect_socket_inner(path, opts, deadline, ctl).map_err(socket_path_error)
}

fn connect_socket_inner(
    path: &Path,
    opts: &RendezvousOptions,
    deadline: Instant,
    ctl: &mut WaitControl<'_>,
) -> Result<Found> {
    let s = split(path)?;
    check_name(path, &s.name)?;
    // No service directory: nobody ever served here (a first start off a device).
    if matches!(nix::sys::stat::lstat(&s.dir), Err(Errno::ENOENT)) {
        return Ok(Found::NoPredecessor);
    }
    let dir = open_lock_dir(&s.dir, false)?;
    let Some(st) = refuse_non_socket(dir.as_fd(), &s.name, path)? else {
        return Ok(Found::NoPredecessor);
    };
    let addr = via_dir(dir.as_fd(), &s.name)?;
    loop {
        let sock = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| os_err(path, "create a socket", e))?;
        match connect(sock.as_raw_fd(), &addr) {
            Ok(()) => return Ok(Found::Server(Conn::new(sock, path))),
            Err(Errno::ENOENT) => return Ok(Found::NoPredecessor),
            Err(Errno::ECONNREFUSED) => {
                // Nobody listens. Ours to remove (our uid or a peer's) and provably stale
                // (no server holds the companion lock): removed. Another user's: left
                // alone, and nobody to take over from.
                if opts.peer_allowed(st.st_uid) {
                    remove_if_stale(dir.as_fd(), &s.name, path, FileId::from(&st))?;
                }
                return Ok(Found::NoPredecessor);
            }
            // The listen backlog is full: the server is busy with other successors.
            Err(Errno::EAGAIN) => {
                if !wait_ready(sock.as_fd(), PollFlags::POLLOUT, Some(deadline), ctl, path)?
                    || Instant::now() >= deadline
                {
                    return Err(fail(
                        path,
                        HandoverFailure::Stalled,
                        "the old version's hand-over socket stayed busy (listen backlog full)",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(Errno::EACCES) | Err(Errno::EPERM) => {
                return Err(fail(
                    path,
                    HandoverFailure::Uid,
                    format!(
                        "the hand-over socket belongs to uid {} and is private (mode 0600)",
                        st.st_uid
                    ),
                ))
            }
            Err(e) => return Err(os_err(path, "connect to the hand-over socket", e)),
        }
    }
}

/// Remove a socket nobody listens on, but only when no server holds the companion lock and
/// the name still refers to the socket we looked at.
fn remove_if_stale(dir: BorrowedFd<'_>, name: &CStr, path: &Path, id: FileId) -> Result<()> {
    let guard = match lock_companion(dir, name, path) {
        Ok(Some(g)) => g,
        // A server is starting or stopping right now; leave the name to it.
        Ok(None) | Err(_) => return Ok(()),
    };
    if let Some(st) = stat_at(dir, name, path)? {
        if is_socket(&st) && FileId::from(&st) == id {
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
    }
    drop(guard);
    Ok(())
}
