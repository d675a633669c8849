//! The async hand-over API (feature `tokio`): the same protocol, run on tokio's blocking
//! pool so the runtime is never blocked. Dropping a returned future cancels the wait (the
//! blocking step sees its cancel token at once) and leaves the server serving.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::options::{PeerInfo, RendezvousOptions};
use super::server::{HandoverRequest, HandoverServer};
use super::successor::{take_over_with, Inheritance};
use crate::error::{Error, Result};
use crate::lock::wait::{CancelToken, WaitControl};

/// Cancels its token when dropped (the future that owned it was dropped).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn run_blocking<T: Send + 'static>(
    what: &std::path::Path,
    f: impl FnOnce(WaitControl<'static>) -> Result<T> + Send + 'static,
) -> Result<T> {
    let token = CancelToken::new()
        .map_err(|e| Error::from_os(what, "create an eventfd", e, String::new))?;
    let guard = CancelOnDrop(token.clone());
    let joined = tokio::task::spawn_blocking(move || f(WaitControl::new().cancel_on(token))).await;
    // Finished normally: the token is no longer needed (cancelling it is harmless).
    drop(guard);
    joined.unwrap_or_else(|e| {
        Err(Error::from_os(
            what,
            "run the hand-over step",
            std::io::Error::other(e.to_string()),
            String::new,
        ))
    })
}

/// Take over from the old version without blocking the runtime; see
/// [`take_over`](crate::take_over).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), update_lock::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let opts = update_lock::RendezvousOptions::new().socket(dir.path().join("handover.sock"));
/// assert!(update_lock::take_over_async(&opts).await?.is_none()); // first start
/// # Ok(()) }
/// ```
pub async fn take_over_async(opts: &RendezvousOptions) -> Result<Option<Inheritance>> {
    let opts = opts.clone();
    let path = opts.socket_path();
    run_blocking(&path, move |ctl| take_over_with(&opts, ctl)).await
}

impl HandoverServer {
    /// [`accept`](Self::accept) without blocking the runtime.
    pub async fn accept_async(&self, timeout: Option<Duration>) -> Result<Option<HandoverRequest>> {
        let me = self.clone();
        let path = self.socket_path().to_path_buf();
        run_blocking(&path, move |ctl| me.accept_with(timeout, ctl)).await
    }

    /// [`grant`](Self::grant) without blocking the runtime. The descriptors are given as
    /// owned copies (e.g. from `try_clone`), closed once sent; the app keeps its own.
    pub async fn grant_async(
        &self,
        req: HandoverRequest,
        state: Vec<u8>,
        fds: Vec<(String, OwnedFd)>,
    ) -> Result<PeerInfo> {
        let me = self.clone();
        let path = self.socket_path().to_path_buf();
        run_blocking(&path, move |ctl| {
            let borrowed: Vec<(&str, std::os::fd::BorrowedFd<'_>)> =
                fds.iter().map(|(l, fd)| (l.as_str(), fd.as_fd())).collect();
            me.grant_with(req, &state, &borrowed, ctl)
        })
        .await
    }
}
