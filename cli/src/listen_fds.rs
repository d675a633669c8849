//! Descriptors for a command in systemd socket-activation form: the labelled descriptors at
//! 3, 4, ... (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), then the hand-over state in a memfd
//! (UPDATE_LOCK_HANDOVER_STATE_FD), plus the UPDATE_LOCK_* variables saying what was taken.

use std::ffi::OsString;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use update_lock::PeerInfo;

/// The first descriptor number of socket activation.
pub const FIRST_FD: RawFd = 3;

/// Environment variables this module sets or clears.
const VARS: [&str; 9] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "UPDATE_LOCK_HANDOVER",
    "UPDATE_LOCK_HANDOVER_STATE_FD",
    "UPDATE_LOCK_PREDECESSOR_RELEASE",
    "UPDATE_LOCK_PREDECESSOR_PID",
    "UPDATE_LOCK_PREDECESSOR_PROGRAM",
    "UPDATE_LOCK_PREDECESSOR_UID",
];

/// What a command is given: labelled descriptors, and what was handed over, if anything.
#[derive(Debug, Default)]
pub struct ChildFds {
    /// Labelled descriptors, in LISTEN_FDS order (owned, close-on-exec).
    pub fds: Vec<(String, OwnedFd)>,
    /// `Some` after a take-over: who handed over and the state memfd.
    pub taken: Option<(PeerInfo, OwnedFd)>,
    /// Whether to set UPDATE_LOCK_HANDOVER at all (`take`, `run`; not plain `serve`).
    pub report_handover: bool,
    /// After a take-over: held until the command serves, then dropped (the old version
    /// may stop its own command then).
    pub ready: Option<update_lock::ReadySignal>,
    /// `--ready notify`: the `NOTIFY_SOCKET` address for the command and the socket
    /// lockctl receives READY=1 on.
    pub notify: Option<(String, std::os::unix::net::UnixDatagram)>,
    /// The longest wait for READY=1.
    pub ready_timeout: std::time::Duration,
}

impl ChildFds {
    /// The number the state memfd gets in the command, if there is one.
    pub fn state_fd_number(&self) -> Option<RawFd> {
        self.taken
            .as_ref()
            .map(|_| FIRST_FD + self.fds.len() as RawFd)
    }

    /// The descriptors to place at 3, 4, ... in order (labelled ones, then the state).
    pub fn sources(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        if let Some((_, state)) = &self.taken {
            v.push(state.as_raw_fd());
        }
        v
    }

    /// Set the environment on `cmd` (LISTEN_PID is left to the caller: it must be the pid
    /// of the process that runs the command). Stale variables from our own environment are
    /// removed.
    pub fn apply_env(&self, cmd: &mut Command) {
        for v in VARS {
            cmd.env_remove(v);
        }
        if !self.fds.is_empty() {
            // ':' separates the names; a label from an old version in another language
            // might contain one.
            let names: Vec<String> = self.fds.iter().map(|(l, _)| l.replace(':', "_")).collect();
            cmd.env("LISTEN_FDS", self.fds.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        cmd.env_remove("NOTIFY_SOCKET");
        if let Some((n, _)) = &self.notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        if self.report_handover {
            cmd.env(
                "UPDATE_LOCK_HANDOVER",
                if self.taken.is_some() {
                    "taken"
                } else {
                    "none"
                },
            );
        }
        if let (Some((peer, _)), Some(n)) = (&self.taken, self.state_fd_number()) {
            cmd.env("UPDATE_LOCK_HANDOVER_STATE_FD", n.to_string())
                .env("UPDATE_LOCK_PREDECESSOR_RELEASE", &peer.release)
                .env("UPDATE_LOCK_PREDECESSOR_PID", peer.own_pid.to_string())
                .env("UPDATE_LOCK_PREDECESSOR_PROGRAM", &peer.program)
                .env("UPDATE_LOCK_PREDECESSOR_UID", peer.uid.to_string());
        }
    }
}

/// A memfd holding `state`, positioned at its start (close-on-exec until placed).
pub fn state_memfd(state: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name returns a new descriptor or -1.
    let raw =
        unsafe { libc::memfd_create(c"update-lock-handover-state".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and ours.
    let mut file = unsafe { std::fs::File::from_raw_fd(raw) };
    file.write_all(state)?;
    file.rewind()?;
    Ok(file.into())
}

/// Put `sources[i]` at descriptor `3 + i` without close-on-exec. Only async-signal-safe
/// calls (fcntl, dup2, close), no allocation: usable between fork and exec. Descriptors
/// already in the target range are first moved above it so none is overwritten before it
/// has been copied. The source descriptors themselves stay open (close-on-exec).
pub fn place(sources: &[RawFd]) -> std::io::Result<()> {
    let n = sources.len() as RawFd;
    let above = FIRST_FD + n;
    // Copy everything above the target range first (at most 64 + 1 descriptors).
    let mut moved = [0 as RawFd; 80];
    if sources.len() > moved.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
    }
    for (i, &src) in sources.iter().enumerate() {
        // SAFETY: fcntl on a descriptor number; failure is reported.
        let d = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above) };
        if d < 0 {
            return Err(std::io::Error::last_os_error());
        }
        moved[i] = d;
    }
    for (i, &d) in moved[..sources.len()].iter().enumerate() {
        let target = FIRST_FD + i as RawFd;
        // SAFETY: dup2 onto a number in our target range (whatever was there, all
        // close-on-exec, is replaced); the new descriptor is not close-on-exec.
        if unsafe { libc::dup2(d, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: d is the temporary copy made above.
        unsafe { libc::close(d) };
    }
    Ok(())
}

/// Render an OsString list for messages.
pub fn show(command: &[OsString]) -> String {
    command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}
