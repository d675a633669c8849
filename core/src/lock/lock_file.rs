//! One lock path held by us: how it is created (atomically, with the flock already held
//! and the record already written), joined in shared mode, reclaimed from a dead holder,
//! checked and released (in shared mode, by the last one out).

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::linkat;

use crate::error::os_err;
use crate::error::{Error, Result};
use crate::holder::SUPERVISOR_UID;
use crate::inspection::{stat_at, FileId};
use crate::lock::flock::{lock_exclusive, lock_shared, try_lock_exclusive, try_lock_shared};
use crate::lock::held_here::{register, HeldAs, LockOwner, Registration};
use crate::lock::removal::{remove_exact, Removal, RemovalError};

/// Mode of app lock files: readable by all so `lockctl status` of any user can show the holder.
const LOCK_MODE: u32 = 0o644;

/// A lock path we hold: the directory, the name, and the open, flocked file (`LOCK_SH` in
/// shared mode, else `LOCK_EX`), noted in this process's table while it is open.
#[derive(Debug)]
pub(crate) struct HeldPath {
    pub path: PathBuf,
    pub dir: Arc<OwnedFd>,
    pub name: std::ffi::CString,
    pub file: File,
    pub id: FileId,
    pub shared: bool,
    pub _here: Registration,
}

/// What one create attempt gave.
pub(crate) enum Created {
    Held(HeldPath),
    /// The name is taken (EEXIST).
    Exists,
}

/// Create `dir/name` holding `record`, with flock(LOCK_EX) held, so that the name never
/// appears without its record and flock (an unnamed O_TMPFILE inode, flocked and written,
/// then linked in; linkat fails with EEXIST and never follows a symlink at the target).
/// Falls back to `O_CREAT|O_EXCL|O_NOFOLLOW` + flock + write on file systems without
/// O_TMPFILE (there a crash between create and write leaves an empty file, reported as
/// foreign and never reclaimed automatically).
pub(crate) fn create(
    dir: &Arc<OwnedFd>,
    name: &CStr,
    full: &Path,
    record: &[u8],
    mode: Holding,
) -> Result<Created> {
    let shared = mode.shared;
    let tmp_flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
    let fd = match openat(
        dir.as_fd(),
        c".",
        tmp_flags,
        Mode::from_bits_truncate(LOCK_MODE),
    ) {
        Ok(fd) => File::from(fd),
        Err(Errno::EOPNOTSUPP) | Err(Errno::EISDIR) | Err(Errno::EINVAL) => {
            return create_excl(dir, name, full, record, mode)
        }
        Err(e) => return Err(create_err(full, e)),
    };
    let id = prepare(&fd, full, record, shared)?;
    match link_into_place(&fd, dir, name) {
        Ok(()) => Ok(Created::Held(held_path(
            dir,
            name,
            full,
            fd.into(),
            id,
            mode,
        ))),
        Err(Errno::EEXIST) => Ok(Created::Exists),
        // No /proc to link through: use the portable way.
        Err(Errno::ENOENT) if !Path::new("/proc/self/fd").exists() => {
            create_excl(dir, name, full, record, mode)
        }
        Err(e) => Err(create_err(full, e)),
    }
}

/// 0: not tried yet, 1: `AT_EMPTY_PATH` works (CAP_DAC_READ_SEARCH), 2: link via /proc.
static LINK_WAY: AtomicU8 = AtomicU8::new(0);

/// Give the unnamed file `fd` the name `dir/name` (EEXIST if taken; never follows a link).
fn link_into_place(fd: &File, dir: &OwnedFd, name: &CStr) -> std::result::Result<(), Errno> {
    if LINK_WAY.load(Ordering::Relaxed) != 2 {
        match linkat(fd.as_fd(), c"", dir.as_fd(), name, AtFlags::AT_EMPTY_PATH) {
            Ok(()) => {
                LINK_WAY.store(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(Errno::EEXIST) => return Err(Errno::EEXIST),
            // Without CAP_DAC_READ_SEARCH the kernel answers ENOENT: use /proc from now on.
            Err(_) => LINK_WAY.store(2, Ordering::Relaxed),
        }
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    linkat(
        AT_FDCWD,
        proc_path.as_str(),
        dir.as_fd(),
        name,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
}

fn create_excl(
    dir: &Arc<OwnedFd>,
    name: &CStr,
    full: &Path,
    record: &[u8],
    mode: Holding,
) -> Result<Created> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDWR;
    let fd = match openat(
        dir.as_fd(),
        name,
        flags,
        Mode::from_bits_truncate(LOCK_MODE),
    ) {
        Ok(fd) => File::from(fd),
        Err(Errno::EEXIST) => return Ok(Created::Exists),
        Err(e) => return Err(create_err(full, e)),
    };
    match prepare(&fd, full, record, mode.shared) {
        Ok(id) => Ok(Created::Held(held_path(
            dir,
            name,
            full,
            fd.into(),
            id,
            mode,
        ))),
        Err(e) => {
            // The name is ours (O_EXCL): take it back before reporting, if still ours.
            if let Ok(st) = fstat(&fd) {
                let _ = remove_exact(dir.as_fd(), name, full, FileId::from(&st));
            }
            Err(e)
        }
    }
}

/// Take the flock (blocking: only a reboot probe or a classifier can hold a brand-new file,
/// and only for an instant), refuse uid 65534 ownership, and write the record; in shared
/// mode, then turn the flock into `LOCK_SH` (atomic: we are its only holder).
fn prepare(fd: &File, full: &Path, record: &[u8], shared: bool) -> Result<FileId> {
    lock_exclusive(fd).map_err(|e| os_err(full, "take flock on the new lock file", e))?;
    let st = fstat(fd).map_err(|e| os_err(full, "inspect the new lock file", e))?;
    if st.st_uid == SUPERVISOR_UID {
        // E.g. a user namespace without a uid mapping: files show up as 65534.
        return Err(Error::SupervisorUid {
            path: Some(full.to_path_buf()),
        });
    }
    let mut rest = record;
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(0) => return Err(os_err(full, "write the holder record", Errno::EIO)),
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(os_err(full, "write the holder record", e)),
        }
    }
    if shared {
        lock_shared(fd).map_err(|e| os_err(full, "share the flock of the new lock file", e))?;
    }
    Ok(FileId::from(&st))
}

/// How a lock path is to be held, and by whom in this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holding {
    pub shared: bool,
    pub owner: LockOwner,
}

#[cfg(test)]
impl Holding {
    /// Exclusive, by the calling thread.
    pub(crate) fn exclusive_here() -> Holding {
        Holding {
            shared: false,
            owner: LockOwner::current_thread(),
        }
    }
}

fn held_path(
    dir: &Arc<OwnedFd>,
    name: &CStr,
    full: &Path,
    fd: OwnedFd,
    id: FileId,
    mode: Holding,
) -> HeldPath {
    let how = if mode.shared {
        HeldAs::Shared
    } else {
        HeldAs::Exclusive
    };
    HeldPath {
        path: full.to_path_buf(),
        dir: dir.clone(),
        name: name.to_owned(),
        file: File::from(fd),
        id,
        shared: mode.shared,
        _here: register(id, mode.owner, how),
    }
}

/// What an attempt to join a shared lock gave.
pub(crate) enum Joined {
    /// We hold `LOCK_SH` on the file at the name.
    Held(HeldPath),
    /// Someone holds it exclusively (or is removing it): wait.
    Exclusive,
    /// Not ours to join: the Supervisor's, another uid's (we could not remove it as the
    /// last one out), not a regular file. The reason, in words.
    NotJoinable(String),
    /// The name changed while we looked: look again.
    Moved,
}

/// Whether a shared hold may join a lock owned by `uid`: our own, or any when we are root
/// (in the sticky directory only the owner and root can remove it as the last one out).
pub(crate) fn may_join(uid: u32) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    uid == me || me == 0
}

/// Join the live lock at `dir/name` in shared mode: open it (never following a link),
/// check it is a regular file we could remove ourselves, take `LOCK_SH`, then check the
/// name still names that inode (it may have been removed by the last one out meanwhile).
pub(crate) fn join(
    dir: &Arc<OwnedFd>,
    name: &CStr,
    full: &Path,
    owner: LockOwner,
) -> Result<Joined> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(Joined::Moved),
        Err(Errno::ELOOP) => return Ok(Joined::NotJoinable("it is a symbolic link".into())),
        Err(Errno::EACCES) | Err(Errno::EPERM) => {
            return Ok(Joined::NotJoinable("we may not open it".into()))
        }
        Err(e) => return Err(os_err(full, "open the lock file to join it", e)),
    };
    let st = fstat(&fd).map_err(|e| os_err(full, "inspect the lock file to join it", e))?;
    let me = nix::unistd::geteuid().as_raw();
    if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFREG
    {
        return Ok(Joined::NotJoinable("it is not a regular file".into()));
    }
    if st.st_uid == SUPERVISOR_UID {
        return Ok(Joined::NotJoinable(
            "it is the Supervisor's (owner uid 65534)".into(),
        ));
    }
    if !may_join(st.st_uid) {
        return Ok(Joined::NotJoinable(format!(
            "it belongs to uid {} and we run as uid {me}: shared holds join only a lock of their own uid (or root), which they could remove as the last one out",
            st.st_uid
        )));
    }
    if !try_lock_shared(&fd).map_err(|e| os_err(full, "take a shared flock on the lock file", e))? {
        return Ok(Joined::Exclusive);
    }
    let id = FileId::from(&st);
    match stat_at(dir.as_fd(), name, full)? {
        Some(now) if FileId::from(&now) == id => {
            let mode = Holding {
                shared: true,
                owner,
            };
            Ok(Joined::Held(held_path(
                dir,
                name,
                full,
                fd.into(),
                id,
                mode,
            )))
        }
        // Removed meanwhile (the last one out, or the Supervisor's override): our flock is
        // on a file without that name; let it go and look again.
        _ => Ok(Joined::Moved),
    }
}

fn create_err(full: &Path, e: Errno) -> Error {
    let dir = full.parent().unwrap_or(Path::new("."));
    Error::from_os(
        full,
        "create the lock file",
        std::io::Error::from(e),
        || {
            format!(
            "the directory {} is not writable for uid {}: run as a user that may write there, or make it mode 1777 as the Supervisor does on a device",
            dir.display(),
            nix::unistd::geteuid()
        )
        },
    )
}

/// Delete a stale lock whose flock `probe` holds, only if the path still names that same
/// inode, atomically with that check (see [`crate::lock::removal`]). `true` when we deleted it.
/// Two reclaimers can never both delete: the second gets the flock only after the first
/// closed it, and by then the name is gone or names a new file.
pub(crate) fn reclaim_stale(
    dir: &OwnedFd,
    name: &CStr,
    full: &Path,
    probe: OwnedFd,
    id: FileId,
) -> Result<bool> {
    let still = stat_at(dir.as_fd(), name, full)?;
    let deleted = match still {
        Some(st) if FileId::from(&st) == id => {
            match remove_exact(dir.as_fd(), name, full, id) {
                Ok(Removal::Removed) => true,
                Ok(Removal::Gone) | Ok(Removal::NotOurs(_)) => false,
                Err(RemovalError::NotPermitted(e)) => {
                    return Err(Error::Permission {
                        path: full.to_path_buf(),
                        operation: "take over the stale lock file",
                        hint: format!(
                            "it was left by a dead holder running as uid {}, and in a sticky (1777) directory only that uid or root may delete it: run as that user or root, or delete it by hand",
                            st.st_uid
                        ),
                        source: std::io::Error::from(e),
                    })
                }
                Err(e) => {
                    return Err(Error::Io {
                        path: full.to_path_buf(),
                        operation: "delete the stale lock file",
                        source: std::io::Error::other(e.to_string()),
                    })
                }
            }
        }
        _ => false,
    };
    drop(probe);
    Ok(deleted)
}

/// Why a path we held is not (or may not be) ours any more.
#[derive(Debug)]
pub(crate) enum NotOurs {
    /// It was deleted or replaced: what stands there now, in words.
    Lost(String),
    /// We could not look (EMFILE, EACCES on the directory, ...): nothing was deleted.
    Unchecked(Error),
}

impl std::fmt::Display for NotOurs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOurs::Lost(what) => f.write_str(what),
            NotOurs::Unchecked(e) => write!(f, "{e}"),
        }
    }
}

/// How often a look that finds another file at our name is repeated: another process's
/// removal (see [`crate::lock::removal`]) swaps its placeholder in for a few microseconds when it
/// checks a name it took for its own, and swaps our file straight back.
const TRANSIENT_LOOKS: usize = 64;

/// Whether the path still names our inode, and what is there otherwise.
pub(crate) fn still_ours(h: &HeldPath) -> std::result::Result<(), NotOurs> {
    let mut verdict = look(h);
    for _ in 0..TRANSIENT_LOOKS {
        if !matches!(verdict, Err(NotOurs::Lost(_))) {
            break;
        }
        std::thread::yield_now();
        verdict = look(h);
    }
    verdict
}

fn look(h: &HeldPath) -> std::result::Result<(), NotOurs> {
    match stat_at(h.dir.as_fd(), &h.name, &h.path) {
        Ok(Some(st)) if FileId::from(&st) == h.id => Ok(()),
        Ok(Some(st)) if st.st_uid == SUPERVISOR_UID => Err(NotOurs::Lost(format!(
            "{} now belongs to the Supervisor (owner uid 65534)",
            h.path.display()
        ))),
        Ok(Some(st)) => Err(NotOurs::Lost(format!(
            "{} was replaced by another file (owner uid {})",
            h.path.display(),
            st.st_uid
        ))),
        Ok(None) => Err(NotOurs::Lost(format!("{} was deleted", h.path.display()))),
        Err(e) => Err(NotOurs::Unchecked(e)),
    }
}

/// Release: delete the name if it is still ours (atomically with that check, see
/// [`crate::lock::removal`]), then close (dropping the flock). Someone else's file is never
/// touched; `Err` says what is there instead, or why we could not check.
pub(crate) fn release(h: HeldPath) -> std::result::Result<(), NotOurs> {
    if h.shared && still_ours(&h).is_ok() && !last_one_out(&h) {
        // Other shared holders are still inside: they keep the file, the last one removes it.
        drop(h.file);
        return Ok(());
    }
    let verdict =
        still_ours(&h).and_then(
            |()| match remove_exact(h.dir.as_fd(), &h.name, &h.path, h.id) {
                Ok(Removal::Removed) => Ok(()),
                Ok(Removal::Gone) => {
                    Err(NotOurs::Lost(format!("{} was deleted", h.path.display())))
                }
                Ok(Removal::NotOurs(what)) => {
                    Err(NotOurs::Lost(format!("{}: {what}", h.path.display())))
                }
                Err(e) => Err(NotOurs::Unchecked(Error::Io {
                    path: h.path.clone(),
                    operation: "remove the lock file (nothing was deleted)",
                    source: std::io::Error::other(e.to_string()),
                })),
            },
        );
    drop(h.file);
    verdict
}

/// In shared mode: whether we are the last holder, by turning our `LOCK_SH` into `LOCK_EX`
/// without waiting. Each flock call is atomic in the kernel, so of several holders leaving
/// at once exactly the last one succeeds (a failed conversion drops our shared lock: the
/// others' attempts then see one holder fewer). A joiner that comes in later finds the
/// name gone and creates anew.
fn last_one_out(h: &HeldPath) -> bool {
    try_lock_exclusive(&h.file) == Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspection::{inspect, Seen};
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;

    /// A lock path `updates.lock` in a fresh temporary directory.
    struct Fixture {
        _tmp: tempfile::TempDir,
        path: std::path::PathBuf,
        dir: Arc<OwnedFd>,
        name: CString,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let dir = Arc::new(nix::fcntl::open(tmp.path(), flags, Mode::empty()).unwrap());
            Fixture {
                path: tmp.path().join("updates.lock"),
                _tmp: tmp,
                dir,
                name: CString::new("updates.lock").unwrap(),
            }
        }

        fn take(&self, program: &str) -> HeldPath {
            let record = crate::HolderRecord::current_bytes(Some(program));
            let mode = Holding::exclusive_here();
            match create(&self.dir, &self.name, &self.path, &record, mode).unwrap() {
                Created::Held(h) => h,
                Created::Exists => panic!("name taken"),
            }
        }

        /// A dead holder's lock (our record, nobody holds its flock), probed as a
        /// reclaimer does: the probe now holds its flock.
        fn stale_probed(&self) -> (OwnedFd, FileId) {
            drop(self.take("dead holder").file); // the flock dies with the descriptor
            match inspect(self.dir.as_fd(), &self.name, &self.path).unwrap() {
                Seen::Stale { probe, id, .. } => (probe, id),
                _ => panic!("expected a stale lock"),
            }
        }
    }

    /// The reclaimer got the dead holder's flock, but meanwhile the name was given to
    /// another file (another reclaimer won and took the lock anew): it must not delete it.
    #[test]
    fn reclaim_never_deletes_a_file_that_replaced_the_stale_one() {
        let f = Fixture::new();
        let (probe, id) = f.stale_probed();
        std::fs::remove_file(&f.path).unwrap();
        let winner = f.take("winner");
        assert!(!reclaim_stale(&f.dir, &f.name, &f.path, probe, id).unwrap());
        let now = std::fs::metadata(&f.path).unwrap().ino();
        assert_eq!(now, winner.id.ino, "the winner's lock was deleted");
        release(winner).unwrap();
    }

    #[test]
    fn reclaim_deletes_the_stale_file_it_probed() {
        let f = Fixture::new();
        let (probe, id) = f.stale_probed();
        assert!(reclaim_stale(&f.dir, &f.name, &f.path, probe, id).unwrap());
        assert!(!f.path.exists());
    }

    /// Release leaves alone a file that replaced ours (the Supervisor's override deleted
    /// ours and something new stands at the name).
    #[test]
    fn release_never_deletes_a_replacement() {
        let f = Fixture::new();
        let h = f.take("app");
        std::fs::remove_file(&f.path).unwrap();
        std::fs::write(&f.path, b"0").unwrap();
        let err = release(h).unwrap_err();
        assert!(
            err.to_string().contains("replaced by another file"),
            "{err}"
        );
        assert_eq!(std::fs::read(&f.path).unwrap(), b"0");
    }

    /// The fallback for file systems without O_TMPFILE makes a lock both readers see: the
    /// file with its record (the Supervisor's `lockfile` fails) and its flock (the reboot
    /// script's `flock -nx` fails), and never follows a symlink at the name.
    #[test]
    fn fallback_create_is_seen_by_both_readers() {
        let f = Fixture::new();
        let record = crate::HolderRecord::current_bytes(Some("fallback"));
        let Created::Held(h) =
            create_excl(&f.dir, &f.name, &f.path, &record, Holding::exclusive_here()).unwrap()
        else {
            panic!("name taken");
        };
        assert_eq!(std::fs::read(&f.path).unwrap(), record);
        let probe = std::process::Command::new("flock")
            .arg("-nx")
            .arg(&f.path)
            .arg("true")
            .status()
            .unwrap();
        assert_eq!(
            probe.code(),
            Some(1),
            "the reboot probe must fail while held"
        );
        let lockfile = std::process::Command::new("lockfile")
            .args(["-r", "0"])
            .arg(&f.path)
            .status()
            .unwrap();
        assert_eq!(
            lockfile.code(),
            Some(73),
            "procmail's lockfile must see the lock"
        );
        assert!(matches!(
            create_excl(&f.dir, &f.name, &f.path, &record, Holding::exclusive_here()).unwrap(),
            Created::Exists
        ));
        release(h).unwrap();
        assert!(!f.path.exists());

        let target = f.path.with_file_name("target");
        std::os::unix::fs::symlink(&target, &f.path).unwrap();
        assert!(matches!(
            create_excl(&f.dir, &f.name, &f.path, &record, Holding::exclusive_here()).unwrap(),
            Created::Exists
        ));
        assert!(!target.exists(), "followed the symlink");
    }
}
