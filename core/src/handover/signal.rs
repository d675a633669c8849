//! The hand-over signal: the file whose appearance tells the Supervisor that the new release
//! has taken over, so it may stop the old one.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::os_err;
use crate::error::{Error, Result};
use crate::lock::lock_dir::open_lock_dir;
use crate::lock::options::LockOptions;
use crate::paths::{self, split};
use crate::timefmt;

/// The file name of the hand-over signal (`handover-complete`), beside the lock files and
/// the hand-over socket in the service directory.
pub const HANDOVER_SIGNAL_NAME: &str = "handover-complete";

/// Which hand-over signal files to write.
///
/// Default: `$BALENA_SERVICE_HANDOVER_COMPLETE_PATH` (else `$RESIN_SERVICE_KILL_ME_PATH`,
/// else `/tmp/balena/handover-complete`), plus the legacy `/tmp/resin/resin-kill-me` and,
/// when `/data` exists, `/data/resin-kill-me`. Failures on the legacy extras are ignored;
/// explicitly given paths must all succeed.
#[derive(Debug, Clone)]
pub struct HandoverOptions {
    paths: Option<Vec<PathBuf>>,
    legacy: bool,
}

impl Default for HandoverOptions {
    fn default() -> Self {
        HandoverOptions {
            paths: None,
            legacy: true,
        }
    }
}

impl HandoverOptions {
    /// The hand-over signal that goes with explicit lock paths: `handover-complete` beside
    /// the first of them (on a device both live in the service directory), or the
    /// Supervisor's defaults when `locks` uses the default paths. What `lockctl status`, and
    /// `status()` in every language, look at when no signal paths are given.
    pub fn for_locks(locks: &LockOptions) -> HandoverOptions {
        match locks.paths.as_ref().and_then(|p| p.first()) {
            Some(first) => HandoverOptions::new()
                .paths([first.with_file_name(HANDOVER_SIGNAL_NAME)])
                .legacy(false),
            None => HandoverOptions::new(),
        }
    }

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write exactly these paths instead of the defaults (an empty list means the defaults).
    pub fn paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.paths = paths::path_list(paths);
        self
    }

    /// With the default paths, also write the legacy signals (default true).
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// The signal paths these options name.
    pub fn handover_paths(&self) -> Vec<PathBuf> {
        match &self.paths {
            Some(p) => p.clone(),
            None => paths::default_handover_paths(self.legacy),
        }
    }
}

/// Signal that the hand-over is complete: create each signal file atomically (temp file,
/// then rename over the name; a symlink at the name is replaced, never followed).
/// Idempotent. Returns the paths written.
///
/// ```
/// use update_lock::{handover_complete, HandoverOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let signal = dir.path().join("handover-complete");
/// let opts = HandoverOptions::new().paths([&signal]);
/// assert_eq!(handover_complete(&opts).unwrap(), vec![signal.clone()]);
/// handover_complete(&opts).unwrap(); // again: still fine
/// assert!(signal.exists());
/// ```
pub fn handover_complete(opts: &HandoverOptions) -> Result<Vec<PathBuf>> {
    let strict_all = opts.paths.is_some();
    let mut written = Vec::new();
    for (i, path) in opts.handover_paths().into_iter().enumerate() {
        match write_signal(&path) {
            Ok(()) => written.push(path),
            Err(e) if strict_all || i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    Ok(written)
}

fn write_signal(path: &std::path::Path) -> Result<()> {
    let s = split(path)?;
    let dir = open_lock_dir(&s.dir, true)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Temp names are unique per call within a process (pid + counter); the old and the new
    // container of a service share this directory and may both be pid 1, so a name taken
    // by the other one is simply skipped (O_EXCL tells us).
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY;
    let mut attempt = 0;
    let (tmp, fd) = loop {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = CString::new(format!(
            ".handover.{}.{now:x}.{nanos:x}.{seq}.tmp",
            std::process::id()
        ))
        .map_err(|_| Error::invalid(path, "temporary name"))?;
        match openat(
            dir.as_fd(),
            tmp.as_c_str(),
            flags,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => break (tmp, fd),
            Err(Errno::EEXIST) if attempt < 16 => attempt += 1,
            Err(e) => return Err(os_err(path, "create the hand-over signal", e)),
        }
    };
    let body = format!(
        "update-lock handover v1\npid={}\nat={}\n",
        std::process::id(),
        timefmt::format_unix_ms(now)
    );
    let result = std::fs::File::from(fd)
        .write_all(body.as_bytes())
        .map_err(|e| Error::from_os(path, "write the hand-over signal", e, String::new))
        .and_then(|()| match renameat(dir.as_fd(), tmp.as_c_str(), dir.as_fd(), s.name.as_c_str()) {
            Ok(()) => Ok(()),
            Err(Errno::EISDIR) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => Err(Error::invalid(
                path,
                "a directory occupies the hand-over signal path; remove it (rmdir) so the Supervisor can see the signal",
            )),
            Err(e) => Err(os_err(path, "move the hand-over signal into place", e)),
        });
    if result.is_err() {
        let _ = unlinkat(dir.as_fd(), tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}
