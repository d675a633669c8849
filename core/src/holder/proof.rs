//! Proof that a process holds a lock, before anyone signals it.
//!
//! A holder record is a hint written into a world-writable directory: anyone can write
//! `pid=1` into a file. Before a process is signalled as "the holder", this module proves
//! from the kernel's own tables that it is one:
//!
//! * it is pinned with a pidfd first (`pidfd_open`), so a pid recycled meanwhile is never
//!   hit, and every later fact is checked while the pidfd says the process still runs;
//! * it holds `flock(LOCK_EX)` on that very inode (`/proc/PID/fdinfo/N`: the `ino:` of one
//!   of its descriptors and a `lock: ... FLOCK ... WRITE ... MAJ:MIN:INO` line on it);
//! * its start time is the one in the record, and its effective uid owns the file.
//!
//! Only a [`ProvenHolder`] can be signalled, and only through its pidfd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::holder::HolderRecord;
use crate::inspection::FileId;
use crate::lock::lock_dir::open_lock_dir;
use crate::paths::split;

/// A process proven to hold a lock, pinned by a pidfd: signalling it can never hit another
/// process that got its pid later.
#[derive(Debug)]
pub struct ProvenHolder {
    pid: i32,
    uid: u32,
    pidfd: OwnedFd,
}

/// Why a process could not be proven to be the holder. Nothing was signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unproven {
    /// The pid that was examined, when there was one.
    pub pid: Option<i32>,
    /// What could not be proven, in words.
    pub reason: String,
}

impl std::fmt::Display for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

fn unproven(pid: Option<i32>, reason: impl Into<String>) -> Unproven {
    Unproven {
        pid,
        reason: reason.into(),
    }
}

impl ProvenHolder {
    /// The holder's pid (in the caller's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The holder's effective uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The holder's command line, arguments separated by spaces (printable characters
    /// only); empty when it cannot be read.
    pub fn command_line(&self) -> Vec<String> {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the holder runs the same executable file as the calling process.
    pub fn runs_same_executable(&self) -> bool {
        let theirs = std::fs::metadata(format!("/proc/{}/exe", self.pid));
        let ours = std::fs::metadata("/proc/self/exe");
        match (theirs, ours) {
            (Ok(t), Ok(o)) => t.dev() == o.dev() && t.ino() == o.ino(),
            _ => false,
        }
    }

    /// Whether the process has exited.
    pub fn has_exited(&self) -> bool {
        exited(&self.pidfd, Duration::ZERO)
    }

    /// Send `signal` through the pidfd and wait up to `wait` for the process to exit.
    /// `Ok(true)` when it exited in time.
    pub fn signal_and_wait(&self, signal: i32, wait: Duration) -> io::Result<bool> {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(true);
            }
            return Err(e);
        }
        Ok(exited(&self.pidfd, wait))
    }
}

fn exited(pidfd: &OwnedFd, wait: Duration) -> bool {
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return n > 0,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn pidfd_open(pid: i32) -> std::result::Result<OwnedFd, Unproven> {
    if pid <= 0 {
        return Err(unproven(Some(pid), "not a valid pid"));
    }
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(unproven(
            Some(pid),
            match e.raw_os_error() {
                Some(libc::ESRCH) => "no such process".to_string(),
                _ => format!("cannot pin the process with a pidfd ({e})"),
            },
        ));
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The lock file at `path`: its identity, owner and holder record, read through one
/// descriptor opened without following links.
fn lock_file(path: &Path) -> std::result::Result<(FileId, u32, Option<HolderRecord>), Unproven> {
    let s = split(path).map_err(|e| unproven(None, e.to_string()))?;
    let dir = open_lock_dir(&s.dir, false).map_err(|e| unproven(None, e.to_string()))?;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir.as_fd(), s.name.as_c_str(), flags, Mode::empty())
        .map_err(|e| unproven(None, format!("cannot open {}: {e}", path.display())))?;
    let st = fstat(&fd).map_err(|e| unproven(None, format!("cannot inspect it: {e}")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(unproven(None, "it is not a regular file"));
    }
    let mut content = Vec::new();
    use std::io::Read;
    let _ = std::fs::File::from(fd).take(4096).read_to_end(&mut content);
    Ok((FileId::from(&st), st.st_uid, HolderRecord::parse(&content)))
}

/// Prove that the holder named in the record at `path` holds it. Returns the pinned
/// holder and the record it was proven against.
///
/// Proof, all checked while the pidfd shows the process running: the record is readable
/// and its uid owns the file; the pid lives in our PID namespace; its start time is the
/// record's; its effective uid owns the file; one of its descriptors holds
/// `flock(LOCK_EX)` on exactly this inode.
pub fn prove_lock_holder(
    path: &Path,
) -> std::result::Result<(ProvenHolder, HolderRecord), Unproven> {
    let (id, owner, record) = lock_file(path)?;
    let record =
        record.ok_or_else(|| unproven(None, "the file holds no update-lock holder record"))?;
    let pid = Some(record.pid);
    if record.uid != owner {
        return Err(unproven(
            pid,
            format!(
                "the record says uid {} but the file is owned by uid {owner}",
                record.uid
            ),
        ));
    }
    if !record.same_pid_namespace {
        return Err(unproven(pid, "the record names a process in another PID namespace (container), which cannot be examined from here"));
    }
    let Some(start) = record.start_time else {
        return Err(unproven(
            pid,
            "the record has no start time, so a reused pid could not be told apart",
        ));
    };
    let pidfd = pidfd_open(record.pid)?;
    let facts = ProcFacts::read(record.pid).map_err(|r| unproven(pid, r))?;
    if facts.start_time != start {
        return Err(unproven(
            pid,
            "that process started at another time than the record says: its pid was reused",
        ));
    }
    if facts.euid != owner {
        return Err(unproven(
            pid,
            format!(
                "that process runs as uid {}, but the lock file is owned by uid {owner}",
                facts.euid
            ),
        ));
    }
    if !holds_exclusive_flock(record.pid, id) {
        return Err(unproven(
            pid,
            "that process does not hold flock on this lock file",
        ));
    }
    if exited(&pidfd, Duration::ZERO) {
        return Err(unproven(pid, "that process exited while it was examined"));
    }
    Ok((
        ProvenHolder {
            pid: record.pid,
            uid: facts.euid,
            pidfd,
        },
        record,
    ))
}

/// Every process in our PID namespace that holds a shared flock (`LOCK_SH`, shared mode) on
/// the lock file at `path`, proven and pinned. Shared holds have no record of their own
/// (the file's record names only the holder that created it), so each holder is found by
/// the kernel's own tables (one of its descriptors holds `LOCK_SH` on exactly this inode),
/// pinned by a pidfd, and must run as the file's owner or root (the only uids that may
/// join it); the flock is checked again once it is pinned. An exclusive holder is proven by
/// its record instead ([`prove_lock_holder`]). Only processes the caller may examine (its
/// own uid, or all as root) are found.
pub fn shared_lock_holders(path: &Path) -> std::result::Result<Vec<ProvenHolder>, Unproven> {
    let (id, owner, _) = lock_file(path)?;
    let pids = other_pids().map_err(|e| unproven(None, format!("cannot read /proc: {e}")))?;
    let mut found = Vec::new();
    for pid in pids {
        if !holds_flock(pid, id, "READ") {
            continue;
        }
        let Ok(pidfd) = pidfd_open(pid) else {
            continue;
        };
        let Ok(facts) = ProcFacts::read(pid) else {
            continue;
        };
        if (facts.euid != owner && facts.euid != 0)
            || !holds_flock(pid, id, "READ")
            || exited(&pidfd, Duration::ZERO)
        {
            continue;
        }
        found.push(ProvenHolder {
            pid,
            uid: facts.euid,
            pidfd,
        });
    }
    Ok(found)
}

/// Processes in our PID namespace that hold `flock(LOCK_EX)` on a file that was created in
/// the directory of `path` and has since been deleted: holders whose lock was taken from
/// them (the Supervisor's override deletes app lock files). Only processes the caller may
/// examine (its own uid, or all as root) are found; each is pinned by a pidfd.
pub fn lost_lock_holders(path: &Path) -> Vec<ProvenHolder> {
    let Ok(s) = split(path) else {
        return Vec::new();
    };
    let Ok(dir_meta) = std::fs::metadata(&s.dir) else {
        return Vec::new();
    };
    let Ok(pids) = other_pids() else {
        return Vec::new();
    };
    pids.filter_map(|pid| lost_holder(pid, (dir_meta.dev(), dir_meta.ino())))
        .collect()
}

/// Every pid in `/proc` (our PID namespace) but our own.
fn other_pids() -> io::Result<impl Iterator<Item = i32>> {
    let me = std::process::id() as i32;
    Ok(std::fs::read_dir("/proc")?.flatten().filter_map(move |e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|pid| *pid != me)
    }))
}

fn lost_holder(pid: i32, dir: (u64, u64)) -> Option<ProvenHolder> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        let link = fd.path();
        let Ok(target) = std::fs::read_link(&link) else {
            continue;
        };
        let Some(text) = target.to_str().and_then(|t| t.strip_suffix(" (deleted)")) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&link) else {
            continue;
        };
        if !meta.is_file() || meta.nlink() != 0 {
            continue;
        }
        let in_dir = Path::new(text)
            .parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| (m.dev(), m.ino()) == dir);
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if !in_dir || !holds_exclusive_flock(pid, id) {
            continue;
        }
        let pidfd = pidfd_open(pid).ok()?;
        let facts = ProcFacts::read(pid).ok()?;
        // Checked again now that the process is pinned.
        if !holds_exclusive_flock(pid, id) || exited(&pidfd, Duration::ZERO) {
            return None;
        }
        return Some(ProvenHolder {
            pid,
            uid: facts.euid,
            pidfd,
        });
    }
    None
}

/// What `/proc/PID` says of a process.
struct ProcFacts {
    start_time: u64,
    euid: u32,
}

impl ProcFacts {
    fn read(pid: i32) -> std::result::Result<ProcFacts, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
        let after = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .ok_or("unreadable /proc stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
            return Err("that process has exited (zombie)".into());
        }
        let start_time = fields
            .get(19)
            .and_then(|f| f.parse().ok())
            .ok_or("no start time in /proc stat")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .ok_or("no uid in /proc status")?;
        Ok(ProcFacts { start_time, euid })
    }
}

/// Whether one of `pid`'s descriptors holds `flock(LOCK_EX)` on inode `id`.
fn holds_exclusive_flock(pid: i32, id: FileId) -> bool {
    holds_flock(pid, id, "WRITE")
}

/// Whether one of `pid`'s descriptors holds a flock of `kind` (`WRITE`: `LOCK_EX`, `READ`:
/// `LOCK_SH`) on inode `id`, from `/proc/PID/fdinfo` (the `lock:` lines of a descriptor
/// are the locks owned by that open file, so this is the holder, not just a process that
/// has the file open).
fn holds_flock(pid: i32, id: FileId, kind: &str) -> bool {
    let dev = format!(
        "{:02x}:{:02x}:{}",
        libc::major(id.dev),
        libc::minor(id.dev),
        id.ino
    );
    let Ok(infos) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    infos.flatten().any(|info| {
        let Ok(text) = std::fs::read_to_string(info.path()) else {
            return false;
        };
        let same_inode = text
            .lines()
            .find_map(|l| l.strip_prefix("ino:"))
            .is_some_and(|v| v.trim() == id.ino.to_string());
        same_inode
            && text
                .lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    // "->" marks a process blocked waiting for the lock, not holding it.
                    !words.contains(&"->")
                        && words.contains(&"FLOCK")
                        && words.contains(&kind)
                        && words.contains(&dev.as_str())
                })
    })
}
