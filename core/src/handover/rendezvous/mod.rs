//! Hand-over between two releases of a service: the old version serves on a Unix domain
//! socket in the directory both containers share, the new version connects and takes over
//! the app's state and open descriptors (listening sockets, device files), then signals
//! handover-complete to the Supervisor.
//!
//! The wire protocol is specified in `docs/handover-protocol.md`. In short: the successor
//! says HELLO, the old version answers WELCOME, runs the app's release step and sends STATE
//! with the descriptors attached (SCM_RIGHTS); the successor answers ACK, the old version
//! stops serving (socket removed, later successors told "taken") and says BYE. Every step
//! has a timeout; only a peer running as the same uid, or root, is accepted (SO_PEERCRED).
//!
//! ```
//! use std::os::fd::AsFd;
//! use update_lock::{take_over, HandoverServer, RendezvousOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = RendezvousOptions::new().socket(dir.path().join("handover.sock"));
//!
//! // First start: nobody to take from.
//! assert!(take_over(&opts)?.is_none());
//!
//! // The running (old) version serves ...
//! let server = HandoverServer::bind(&opts.clone().release("v1"))?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let old = std::thread::spawn(move || -> update_lock::Result<()> {
//!     let req = server.accept(None)?.expect("no timeout given");
//!     // ... stop using the resources here (the app's release step) ...
//!     server.grant(req, b"sessions=3", &[("http", listener.as_fd())])?;
//!     Ok(())
//! });
//!
//! // ... and the new version takes over.
//! let got = take_over(&opts.clone().release("v2"))?.expect("a predecessor is serving");
//! assert_eq!(got.state(), b"sessions=3");
//! assert_eq!(got.predecessor().release, "v1");
//! assert_eq!(got.fds()[0].label(), "http");
//! old.join().unwrap()?;
//! # Ok::<(), update_lock::Error>(())
//! ```

mod conn;
mod failure;
mod options;
mod serve_loop;
mod server;
mod socket_file;
mod successor;
#[cfg(feature = "tokio")]
mod tokio_api;
mod wire;

pub use failure::HandoverFailure;
pub use options::{
    default_socket_path, listen_backlog, PeerInfo, RendezvousOptions, DEFAULT_MAX_STATE,
    DEFAULT_RELEASE_TIMEOUT, DEFAULT_STEP_TIMEOUT, SOCKET_NAME,
};
pub use serve_loop::{ReleaseAnswer, ServeError, ServeHooks};
pub use server::{HandoverRequest, HandoverServer};
pub use successor::{take_over, take_over_with, Inheritance, InheritedFd, ReadySignal};
#[cfg(feature = "tokio")]
pub use tokio_api::take_over_async;
pub use wire::{MAX_FDS, PROTOCOL_VERSION};
