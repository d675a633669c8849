//! [`HandoverServer::serve`]: the one serve loop. Python's `HandoverServer.serve`, Node's
//! `HandoverServer.serve` and `lockctl handover serve` all run it; only the app's release
//! step (and what to do when a hand-over failed) is theirs, as [`ServeHooks`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::failure::HandoverFailure;
use super::options::PeerInfo;
use super::server::HandoverServer;
use crate::error::{Error, ErrorCode};
use crate::lock::wait::WaitControl;

/// The app's answer to one successor, from [`ServeHooks::release`].
#[derive(Debug)]
pub enum ReleaseAnswer {
    /// Hand over `state` and copies of `fds` (each with the label the successor sees).
    /// The descriptors are sent and then closed; keep your own until the grant succeeded.
    Grant {
        /// The state the successor receives.
        state: Vec<u8>,
        /// The descriptors, each with its label.
        fds: Vec<(String, OwnedFd)>,
    },
    /// Turn this successor away with this message (it gets reason `refused`); serving goes
    /// on.
    Refuse(String),
}

/// The app's part of [`HandoverServer::serve`], in its own language.
pub trait ServeHooks {
    /// The app's own error (a Python exception, a JavaScript error, ...), returned by
    /// `serve` unchanged.
    type Error: std::fmt::Display;

    /// The app's release step for `successor`: stop using the resources, then say what to
    /// hand over, or refuse. An `Err` refuses the successor with the error's text
    /// (`the old version's release step failed: ...`) and ends `serve` with that error;
    /// the server still serves.
    fn release(&mut self, successor: &PeerInfo) -> Result<ReleaseAnswer, Self::Error>;

    /// The grant failed (`failure`): nothing was handed over, and serving goes on. Take the
    /// resources back into use. An `Err` ends `serve` with that error. By default nothing.
    fn resume(&mut self, failure: Error) -> Result<(), Self::Error> {
        let _ = failure;
        Ok(())
    }
}

/// Why [`HandoverServer::serve`] ended without a successor.
#[derive(Debug)]
pub enum ServeError<E> {
    /// A hook failed (its error, unchanged); the successor was refused and the server still
    /// serves.
    Hook(E),
    /// Serving failed: cancelled (code `cancelled`), or the socket failed.
    Handover(Error),
}

impl<E: std::fmt::Display> std::fmt::Display for ServeError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Hook(e) => write!(f, "the release step failed: {e}"),
            ServeError::Handover(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for ServeError<E> {}

impl HandoverServer {
    /// Serve until one successor has taken over, and return it; `Ok(None)` when `timeout`
    /// (`None`: no limit) ran out or the server was closed meanwhile.
    ///
    /// For each successor: [`accept`](Self::accept) (its uid and protocol checked), then
    /// `hooks.release(successor)`, then [`grant`](Self::grant) or [`refuse`](Self::refuse).
    /// A grant that fails hands nothing over: `hooks.resume(error)` runs and serving goes on
    /// (a cancelled grant ends `serve`). `ctl` interrupts every wait (not the hooks).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use update_lock::{take_over, HandoverServer, PeerInfo, ReleaseAnswer, RendezvousOptions,
    ///                   ServeHooks, WaitControl};
    ///
    /// struct App(std::net::TcpListener);
    /// impl ServeHooks for App {
    ///     type Error = std::io::Error;
    ///     fn release(&mut self, _successor: &PeerInfo) -> std::io::Result<ReleaseAnswer> {
    ///         // ... finish in-flight work here ...
    ///         let fd = self.0.as_fd().try_clone_to_owned()?;
    ///         Ok(ReleaseAnswer::Grant { state: b"v1 state".to_vec(), fds: vec![("http".into(), fd)] })
    ///     }
    /// }
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = RendezvousOptions::new().socket(dir.path().join("handover.sock"));
    /// let server = HandoverServer::bind(&opts)?;
    /// let mut app = App(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    /// let old = std::thread::spawn(move || server.serve(None, WaitControl::new(), &mut app));
    /// let got = take_over(&opts)?.expect("the old version serves");
    /// assert_eq!(got.state(), b"v1 state");
    /// assert!(old.join().unwrap().unwrap().is_some());
    /// # Ok::<(), update_lock::Error>(())
    /// ```
    pub fn serve<H: ServeHooks>(
        &self,
        timeout: Option<Duration>,
        mut ctl: WaitControl<'_>,
        hooks: &mut H,
    ) -> Result<Option<PeerInfo>, ServeError<H::Error>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let request = match self.accept_ctl(left, &mut ctl) {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(None),
                // Closed meanwhile (from another thread): nothing to serve any more.
                Err(e)
                    if e.handover_failure() == Some(HandoverFailure::Finished)
                        && !self.is_serving() =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(ServeError::Handover(e)),
            };
            let successor = request.successor().clone();
            let (state, fds) = match hooks.release(&successor) {
                Ok(ReleaseAnswer::Grant { state, fds }) => (state, fds),
                Ok(ReleaseAnswer::Refuse(message)) => {
                    // The successor may have gone already; serving goes on either way.
                    let _ = self.refuse(request, &message);
                    continue;
                }
                Err(e) => {
                    let _ = self.refuse(
                        request,
                        &format!("the old version's release step failed: {e}"),
                    );
                    return Err(ServeError::Hook(e));
                }
            };
            let borrowed: Vec<(&str, BorrowedFd<'_>)> =
                fds.iter().map(|(l, fd)| (l.as_str(), fd.as_fd())).collect();
            match self.grant_ctl(request, &state, &borrowed, &mut ctl) {
                Ok(peer) => return Ok(Some(peer)),
                Err(e) if e.code() == ErrorCode::Cancelled => return Err(ServeError::Handover(e)),
                // Nothing was handed over: the app takes its resources back into use, also
                // when the server was closed meanwhile (the next accept then ends the loop).
                Err(e) => hooks.resume(e).map_err(ServeError::Hook)?,
            }
        }
    }
}
