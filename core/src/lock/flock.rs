//! `flock(2)` on our files, through `fs4`: the lock the host OS reboot script probes
//! (`flock -nx`) and the proof that a lock's holder is alive (the lock dies with its
//! process, the file does not). Interrupted calls are retried.

use std::fs::File;

use fs4::fs_std::FileExt;
use nix::errno::Errno;

fn errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Take `LOCK_EX` on `file`, waiting for it.
pub(crate) fn lock_exclusive(file: &File) -> Result<(), Errno> {
    loop {
        match file.lock_exclusive() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Try `LOCK_EX | LOCK_NB` on `file`: `Ok(true)` when we now hold it, `Ok(false)` when
/// someone else does.
pub(crate) fn try_lock_exclusive(file: &File) -> Result<bool, Errno> {
    loop {
        match file.try_lock_exclusive() {
            Ok(got) => return Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Take `LOCK_SH` on `file`, waiting for it (on a file we hold `LOCK_EX` on, this converts
/// the lock atomically: nobody else can hold any lock on it meanwhile).
pub(crate) fn lock_shared(file: &File) -> Result<(), Errno> {
    loop {
        match FileExt::lock_shared(file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Try `LOCK_SH | LOCK_NB` on `file`: `Ok(true)` when we now hold it, `Ok(false)` when
/// someone holds `LOCK_EX`.
pub(crate) fn try_lock_shared(file: &File) -> Result<bool, Errno> {
    loop {
        match FileExt::try_lock_shared(file) {
            Ok(got) => return Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}
