//! The plain objects both sides of the hand-over code pass to JavaScript: who the peer is,
//! and a descriptor to hand over.

use std::os::fd::{BorrowedFd, OwnedFd};

use napi_derive::napi;
use update_lock::PeerInfo;

/// What one side of a hand-over knows about the other (field names as in the core's
/// `PeerInfo` and in every binding).
#[napi(object)]
pub struct Peer {
    /// The peer's pid as the kernel reports it (0 when in another PID namespace).
    pub pid: i32,
    /// The pid the peer reports for itself (in its own PID namespace); `own_pid` in
    /// JavaScript too, as in every binding.
    #[napi(js_name = "own_pid")]
    pub own_pid: i32,
    /// The peer's uid.
    pub uid: u32,
    /// The peer's release name (may be empty).
    pub release: String,
    /// The peer's program name.
    pub program: String,
    /// The protocol version both sides agreed on.
    pub protocol: u32,
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Self {
        Peer {
            pid: p.pid,
            own_pid: p.own_pid,
            uid: p.uid,
            release: p.release.clone(),
            program: p.program.clone(),
            protocol: p.protocol,
        }
    }
}

/// A descriptor to hand over: its label and the app's descriptor number (a copy is sent;
/// the app keeps its own).
#[napi(object)]
pub struct GrantFd {
    /// The label the successor sees.
    pub label: String,
    /// The app's descriptor number.
    pub fd: i32,
}

impl GrantFd {
    /// Our own close-on-exec copy of the app's descriptor (sent, then closed; the app keeps
    /// its own), or why it cannot be had.
    pub(crate) fn copy(&self) -> Result<OwnedFd, String> {
        if self.fd < 0 {
            return Err(format!(
                "fd of '{}' must be a descriptor number >= 0, got {}",
                self.label, self.fd
            ));
        }
        // SAFETY: borrowed only for the duplication (fcntl F_DUPFD_CLOEXEC); a number that
        // is not open makes it fail with EBADF.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
            .try_clone_to_owned()
            .map_err(|e| {
                format!(
                    "fd {} of '{}' cannot be handed over: {e}",
                    self.fd, self.label
                )
            })
    }
}
