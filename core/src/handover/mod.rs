//! The hand-over between two releases: the handover-complete signal the Supervisor waits for
//! (`signal`), and the rendezvous on a Unix socket through which the old release passes its
//! listening sockets and state to the new one (`rendezvous`).

pub(crate) mod rendezvous;
pub(crate) mod signal;
