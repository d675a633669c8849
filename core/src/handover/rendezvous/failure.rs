//! Why a hand-over did not happen: one stable string per reason, shown with
//! [`ErrorCode::Handover`](crate::ErrorCode::Handover).

use std::fmt;

/// The reason of an [`Error::Handover`](crate::Error::Handover). The strings of
/// [`as_str`](Self::as_str) are stable and exposed by every binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandoverFailure {
    /// The peer did not answer a step within its timeout.
    Stalled,
    /// The peer closed the connection in the middle of the hand-over (it crashed or exited).
    PeerGone,
    /// Another successor has already taken over from this version.
    Taken,
    /// The peer runs as a user that is not ours, not root and not in `peer_uids`.
    Uid,
    /// The two versions share no protocol version.
    Version,
    /// The peer sent something that is not the hand-over protocol.
    Protocol,
    /// The old version's app refused or failed its release step; it keeps serving.
    Refused,
    /// Another process already serves hand-over on this socket.
    AlreadyServing,
    /// This server has already handed over (or was closed); it serves no one any more.
    Finished,
    /// The state or the descriptors exceed the limits.
    TooLarge,
    /// Something that is not a live hand-over server we may use stands at the socket path
    /// or its companion lock (a file, fifo, symlink, a dead socket or a lock of another
    /// user): it is never removed unless provably stale and ours.
    Blocked,
}

impl HandoverFailure {
    /// The stable string, e.g. `"stalled"` or `"peer-gone"`.
    ///
    /// ```
    /// assert_eq!(update_lock::HandoverFailure::PeerGone.as_str(), "peer-gone");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverFailure::Stalled => "stalled",
            HandoverFailure::PeerGone => "peer-gone",
            HandoverFailure::Taken => "taken",
            HandoverFailure::Uid => "uid",
            HandoverFailure::Version => "version",
            HandoverFailure::Protocol => "protocol",
            HandoverFailure::Refused => "refused",
            HandoverFailure::AlreadyServing => "already-serving",
            HandoverFailure::Finished => "finished",
            HandoverFailure::TooLarge => "too-large",
            HandoverFailure::Blocked => "blocked",
        }
    }

    /// Parse [`as_str`](Self::as_str) back (used for REFUSE frames).
    pub fn from_str_opt(s: &str) -> Option<HandoverFailure> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Every reason.
    pub const ALL: [HandoverFailure; 11] = [
        HandoverFailure::Stalled,
        HandoverFailure::PeerGone,
        HandoverFailure::Taken,
        HandoverFailure::Uid,
        HandoverFailure::Version,
        HandoverFailure::Protocol,
        HandoverFailure::Refused,
        HandoverFailure::AlreadyServing,
        HandoverFailure::Finished,
        HandoverFailure::TooLarge,
        HandoverFailure::Blocked,
    ];

    /// What the user should do next; part of the error message.
    pub(crate) fn next_step(self) -> &'static str {
        match self {
            HandoverFailure::Stalled => "nothing was handed over and the old version keeps its resources; check that it still serves (it may be blocked in its release step), or raise the step timeout",
            HandoverFailure::PeerGone => "nothing was handed over: the old version keeps its resources and keeps serving, or, if it was the old version that died, start fresh as on a first start",
            HandoverFailure::Taken => "another instance of the new release already took over; this one should exit or start without the old version's resources",
            HandoverFailure::Uid => "run the old and the new version as the same user (or one of them as root); if the other release really runs as that uid, allow it with peer_uids (lockctl --peer-uid UID)",
            HandoverFailure::Version => "the two releases use incompatible update-lock versions; upgrade the SDK in the new release, or start fresh",
            HandoverFailure::Protocol => "check that the socket path is the hand-over socket of this service and not some other program's",
            HandoverFailure::Refused => "the old version keeps its resources and keeps serving; retry later or start fresh",
            HandoverFailure::AlreadyServing => "only one process per service may serve hand-over; stop the other one, or wait until it has handed over",
            HandoverFailure::Finished => "bind a new server to serve the next release",
            HandoverFailure::TooLarge => "send less state (the limit is RendezvousOptions::max_state) or fewer descriptors (at most 64)",
            HandoverFailure::Blocked => "start without hand-over this time, and remove what stands there (it is not a live hand-over server of this service) or choose another socket path",
        }
    }
}

impl fmt::Display for HandoverFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
