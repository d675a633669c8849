//! `renameat2(2)` with its two flags, called through the system call itself: glibc and
//! musl (Alpine) both have the kernel's call (Linux 3.15 and later), but not every libc
//! version has a wrapper for it, and the `nix` crate offers it on glibc only.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// How the rename treats the target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameFlags {
    /// Fail with `EEXIST` instead of replacing an existing target.
    NoReplace,
    /// Swap the two names atomically (both must exist).
    Exchange,
}

impl RenameFlags {
    fn bits(self) -> libc::c_uint {
        match self {
            RenameFlags::NoReplace => 1, // RENAME_NOREPLACE
            RenameFlags::Exchange => 2,  // RENAME_EXCHANGE
        }
    }
}

/// `renameat2(from_dir, from, to_dir, to, flags)`, retried on `EINTR`.
pub(crate) fn renameat2(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: RenameFlags,
) -> Result<(), Errno> {
    loop {
        // SAFETY: both directory descriptors are borrowed (open for the call) and both names
        // are NUL-terminated C strings that outlive it; the kernel reads nothing else.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                from_dir.as_raw_fd(),
                from.as_ptr(),
                to_dir.as_raw_fd(),
                to.as_ptr(),
                flags.bits(),
            )
        };
        match Errno::result(r) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
