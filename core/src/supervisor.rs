//! The Supervisor's own way of taking a lock (procmail `lockfile -r 0` as uid 65534), for
//! tests and update rehearsals: a temp file with content `0`, mode 0444, owned by 65534,
//! linked to the lock name so it appears atomically. No flock, like the Supervisor.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{fchown, geteuid, linkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::os_err;
use crate::error::{Error, Result};
use crate::held::{Created, HeldPath};
use crate::holder::SUPERVISOR_UID;
use crate::inspect::FileId;

/// Create `dir/name` as the Supervisor would. `Exists` when the name is taken.
pub(crate) fn create(dir: &Arc<OwnedFd>, name: &CStr, full: &Path) -> Result<Created> {
    let euid = geteuid().as_raw();
    if euid != 0 && euid != SUPERVISOR_UID {
        return Err(Error::Permission {
            path: full.to_path_buf(),
            operation: "take the lock in the Supervisor role",
            hint: "the Supervisor role makes files owned by uid 65534: run as root or as uid 65534"
                .into(),
            source: std::io::Error::from(Errno::EPERM),
        });
    }
    let tmp = temp_name(name);
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY;
    let fd = openat(
        dir.as_fd(),
        tmp.as_c_str(),
        flags,
        Mode::from_bits_truncate(0o444),
    )
    .map_err(|e| os_err(full, "create the Supervisor's temporary lock file", e))?;
    let outcome = (|| {
        let mut f = std::fs::File::from(
            fd.try_clone()
                .map_err(|e| Error::from_os(full, "duplicate a descriptor", e, String::new))?,
        );
        f.write_all(b"0").map_err(|e| {
            Error::from_os(full, "write the Supervisor's lock file", e, String::new)
        })?;
        if euid != SUPERVISOR_UID {
            let who = Some(Uid::from_raw(SUPERVISOR_UID));
            fchown(&fd, who, Some(Gid::from_raw(SUPERVISOR_UID)))
                .map_err(|e| os_err(full, "give the Supervisor's lock file to uid 65534", e))?;
        }
        match linkat(
            dir.as_fd(),
            tmp.as_c_str(),
            dir.as_fd(),
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(os_err(
                full,
                "link the Supervisor's lock file into place",
                e,
            )),
        }
    })();
    let _ = unlinkat(dir.as_fd(), tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
    if !outcome? {
        return Ok(Created::Exists);
    }
    held(dir, name, full, fd)
}

/// Adopt an existing Supervisor lock (owned by 65534), as the Supervisor does with its own.
pub(crate) fn adopt(dir: &Arc<OwnedFd>, name: &CStr, full: &Path) -> Result<Option<HeldPath>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ELOOP) => return Ok(None),
        Err(e) => return Err(os_err(full, "open the Supervisor's lock file", e)),
    };
    match held(dir, name, full, fd)? {
        Created::Held(h) => Ok(Some(h)),
        Created::Exists => Ok(None),
    }
}

fn held(dir: &Arc<OwnedFd>, name: &CStr, full: &Path, fd: OwnedFd) -> Result<Created> {
    let st = fstat(&fd).map_err(|e| os_err(full, "inspect the Supervisor's lock file", e))?;
    if st.st_uid != SUPERVISOR_UID {
        return Ok(Created::Exists);
    }
    Ok(Created::Held(HeldPath {
        path: full.to_path_buf(),
        dir: dir.clone(),
        name: name.to_owned(),
        file: fd,
        id: FileId::from(&st),
    }))
}

fn temp_name(name: &CStr) -> CString {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base: String = name.to_string_lossy().chars().take(64).collect();
    // Unique per call, also between threads of one process.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s = format!(".{}.{}.{nanos:x}.{seq}.lk", base, std::process::id());
    CString::new(s).unwrap_or_else(|_| CString::from(c".update-lock.tmp"))
}
