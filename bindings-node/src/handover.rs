//! Hand-over between two releases (issue 6): the native half of `takeOver`, `takeOverSync`
//! and `HandoverServer`. Only translation: options into the core's `RendezvousOptions`,
//! core handles into JavaScript classes, descriptors into plain numbers. Waiting never
//! blocks the event loop: the blocking core steps run on tokio's blocking pool, cancelled
//! through the core's `CancelToken` when the caller's `AbortSignal` fires.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use update_lock::{
    take_over as core_take_over, take_over_with, CancelToken, Error as CoreError, HandoverRequest,
    HandoverServer, Inheritance, PeerInfo, RendezvousOptions, ServeError, WaitControl,
};

pub use crate::peer::{GrantFd, Peer};
use crate::{build_error, js_error, path_str, CancelState, Canceller};

/// Hand-over options as the JavaScript wrapper passes them (already validated there).
#[napi(object)]
pub struct RendezvousInit {
    /// The hand-over socket (missing: `handover.sock` beside the handover-complete file).
    pub socket: Option<String>,
    /// How this version names itself to the other (release name, version).
    pub release: Option<String>,
    /// Timeout of one protocol step, in milliseconds (default 5000).
    pub step_timeout_ms: Option<f64>,
    /// How long the successor waits for the old version's release step, in ms (default 10000).
    pub release_timeout_ms: Option<f64>,
    /// The largest state accepted, in bytes (default 1 MiB).
    pub max_state: Option<f64>,
    /// Write the handover-complete signal after a take-over (default true).
    pub signal: Option<bool>,
    /// Write exactly these handover-complete paths.
    pub signal_paths: Option<Vec<String>>,
    /// Program name shown to the other version.
    pub program: Option<String>,
    /// Other uids the peer may run as, besides ours and root.
    pub peer_uids: Option<Vec<u32>>,
}

fn millis(ms: Option<f64>, name: &str) -> Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some(v) if v.is_nan() || v < 0.0 => Err(Error::new(
            Status::InvalidArg,
            format!("{name} must be a number of milliseconds >= 0, got {v}"),
        )),
        // Infinite or too long to represent: as good as forever (a year).
        Some(v) => Ok(Some(
            Duration::try_from_secs_f64(v / 1000.0).unwrap_or(Duration::from_secs(365 * 24 * 3600)),
        )),
    }
}

fn rendezvous_options(init: RendezvousInit) -> Result<RendezvousOptions> {
    let mut o = RendezvousOptions::new();
    if let Some(s) = init.socket {
        o = o.socket(s);
    }
    if let Some(r) = init.release {
        o = o.release(r);
    }
    if let Some(d) = millis(init.step_timeout_ms, "stepTimeout")? {
        o = o.step_timeout(d);
    }
    if let Some(d) = millis(init.release_timeout_ms, "releaseTimeout")? {
        o = o.release_timeout(d);
    }
    if let Some(m) = init.max_state {
        if m.is_nan() || m < 0.0 {
            return Err(Error::new(
                Status::InvalidArg,
                format!("maxState must be a number of bytes >= 0, got {m}"),
            ));
        }
        o = o.max_state(m.min(usize::MAX as f64) as usize);
    }
    if let Some(on) = init.signal {
        o = o.signal(on);
    }
    if let Some(paths) = init.signal_paths {
        o = o.signal_paths(paths.into_iter().map(PathBuf::from));
    }
    if let Some(p) = init.program {
        o = o.program(p);
    }
    if let Some(uids) = init.peer_uids {
        o = o.peer_uids(uids);
    }
    Ok(o)
}

/// One received descriptor: its label, the raw number (now owned by JavaScript) and
/// whether it is a socket.
#[napi(object)]
pub struct InheritedFdData {
    /// The label the old version gave it.
    pub label: String,
    /// The descriptor number (close-on-exec set); the app owns it.
    pub fd: i32,
    /// Whether it is a socket.
    pub is_socket: bool,
}

/// What the new version got from the old one (the core's `Inheritance`). The wrapper reads
/// it once into a plain object; `takeFds()` hands the descriptors over to JavaScript.
#[napi]
pub struct NativeInheritance {
    inner: Mutex<Option<Inheritance>>,
    predecessor: PeerInfo,
    state: Vec<u8>,
    signalled: Vec<String>,
}

impl NativeInheritance {
    fn new(inh: Inheritance) -> Self {
        NativeInheritance {
            predecessor: inh.predecessor().clone(),
            state: inh.state().to_vec(),
            signalled: inh.signalled().iter().map(|p| path_str(p)).collect(),
            inner: Mutex::new(Some(inh)),
        }
    }
}

#[napi]
impl NativeInheritance {
    /// Who handed over.
    #[napi(getter)]
    pub fn predecessor(&self) -> Peer {
        Peer::from(&self.predecessor)
    }

    /// The state blob.
    #[napi(getter)]
    pub fn state(&self) -> Buffer {
        Buffer::from(self.state.clone())
    }

    /// The handover-complete files written.
    #[napi(getter)]
    pub fn signalled(&self) -> Vec<String> {
        self.signalled.clone()
    }

    /// Why writing the handover-complete signal failed, or null.
    #[napi(getter, ts_return_type = "Error | null")]
    pub fn signal_error<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref().and_then(Inheritance::signal_error) {
            Some(e) => build_error(env, e).map(|o| o.to_unknown()),
            None => Null.into_unknown(env),
        }
    }

    /// The descriptors, as numbers the caller now owns (it must close them or give them
    /// to `net.Server.listen({ fd })`). Only the first call returns them; later calls
    /// return an empty list.
    #[napi]
    pub fn take_fds(&self) -> Vec<InheritedFdData> {
        let inh = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(inh) = inh else {
            return Vec::new();
        };
        let (_, _, fds) = inh.into_parts();
        fds.into_iter()
            .map(|f| {
                let is_socket = f.is_socket();
                let (label, fd) = f.into_parts();
                InheritedFdData {
                    label,
                    fd: fd.into_raw_fd(),
                    is_socket,
                }
            })
            .collect()
    }
}

/// Take over, blocking the calling thread (scripts). `null` when there is no predecessor.
#[napi]
pub fn take_over_sync(env: &Env, options: RendezvousInit) -> Result<Option<NativeInheritance>> {
    let opts = rendezvous_options(options)?;
    match core_take_over(&opts) {
        Ok(found) => Ok(found.map(NativeInheritance::new)),
        Err(e) => Err(js_error(env, &e)),
    }
}

/// Run `f` on tokio's blocking pool with a cancel token fired by `cancel`; waits for `f` to
/// finish in every case (so a result that arrived anyway is never lost).
async fn run_cancellable<T: Send + 'static>(
    socket: PathBuf,
    cancel: Option<Arc<CancelState>>,
    f: impl FnOnce(WaitControl<'static>) -> update_lock::Result<T> + Send + 'static,
) -> std::result::Result<(update_lock::Result<T>, bool), CoreError> {
    let token = CancelToken::new().map_err(|e| CoreError::Io {
        path: socket.clone(),
        operation: "create an eventfd",
        source: e,
    })?;
    let aborted_now = |c: &Option<Arc<CancelState>>| {
        c.as_ref()
            .is_some_and(|c| c.cancelled.load(std::sync::atomic::Ordering::SeqCst))
    };
    if aborted_now(&cancel) {
        // Aborted before it started: do not even connect.
        return Ok((
            Err(CoreError::Cancelled {
                path: socket,
                waiting_for: CoreError::WAITING_FOR_HANDOVER,
                by: Some("an AbortSignal".to_string()),
            }),
            true,
        ));
    }
    let t2 = token.clone();
    let mut job = tokio::task::spawn_blocking(move || f(WaitControl::new().cancel_on(t2)));
    let joined = match &cancel {
        None => job.await,
        Some(c) => {
            tokio::select! {
                r = &mut job => r,
                _ = c.notify.notified() => {
                    token.cancel();
                    job.await
                }
            }
        }
    };
    let aborted = aborted_now(&cancel);
    match joined {
        Ok(r) => Ok((r, aborted)),
        Err(e) => Err(CoreError::Io {
            path: socket,
            operation: "run the hand-over step",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn by_abort(e: CoreError, aborted: bool) -> CoreError {
    match e {
        CoreError::Cancelled {
            path,
            waiting_for,
            by: None,
        } if aborted => CoreError::Cancelled {
            path,
            waiting_for,
            by: Some("an AbortSignal".to_string()),
        },
        other => other,
    }
}

/// Take over without blocking the event loop. `canceller` ends the wait with code
/// `cancelled` and nothing taken (the old version keeps its resources) — unless the
/// take-over had already been acknowledged, which cannot be undone: then it resolves.
#[napi(ts_return_type = "Promise<NativeInheritance | null>")]
pub fn take_over<'env>(
    env: &'env Env,
    options: RendezvousInit,
    canceller: Option<&Canceller>,
) -> Result<PromiseRaw<'env, Option<NativeInheritance>>> {
    let opts = rendezvous_options(options)?;
    let cancel = canceller.map(|c| c.state.clone());
    let socket = opts.socket_path();
    let fut = async move {
        let r = run_cancellable(socket, cancel, move |ctl| take_over_with(&opts, ctl)).await;
        Ok(match r {
            Ok((Ok(found), _)) => Ok(found.map(NativeInheritance::new)),
            Ok((Err(e), aborted)) => Err(by_abort(e, aborted)),
            Err(e) => Err(e),
        })
    };
    env.spawn_future_with_callback(fut, |env, result| result.map_err(|e| js_error(env, &e)))
}

/// A successor waiting for an answer (the core's `HandoverRequest`): answer it once with
/// `grant` or `refuse`.
#[napi]
pub struct NativeRequest {
    inner: Arc<Mutex<Option<HandoverRequest>>>,
    successor: PeerInfo,
}

#[napi]
impl NativeRequest {
    /// Who asks to take over.
    #[napi(getter)]
    pub fn successor(&self) -> Peer {
        Peer::from(&self.successor)
    }

    /// Whether it is still unanswered.
    #[napi(getter)]
    pub fn pending(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl NativeRequest {
    fn take(&self) -> Result<HandoverRequest> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                Error::new(
                    Status::InvalidArg,
                    "this hand-over request was already answered (grant or refuse); accept the next one",
                )
            })
    }
}

/// The old version's hand-over server (the core's `HandoverServer`).
#[napi]
pub struct NativeHandoverServer {
    inner: HandoverServer,
}

#[napi]
impl NativeHandoverServer {
    /// Start serving on the socket the options name (`already-serving` when another
    /// process does).
    #[napi(factory)]
    pub fn bind(env: &Env, options: RendezvousInit) -> Result<NativeHandoverServer> {
        let opts = rendezvous_options(options)?;
        HandoverServer::bind(&opts)
            .map(|inner| NativeHandoverServer { inner })
            .map_err(|e| js_error(env, &e))
    }

    /// The socket path.
    #[napi(getter)]
    pub fn socket_path(&self) -> String {
        path_str(self.inner.socket_path())
    }

    /// Whether it still serves (not handed over, not closed).
    #[napi(getter)]
    pub fn serving(&self) -> bool {
        self.inner.is_serving()
    }

    /// Stop serving without handing over (idempotent); removes the socket.
    #[napi]
    pub fn close(&self) {
        self.inner.close();
    }

    /// Wait up to `timeoutMs` (missing: forever) for a successor, without blocking the
    /// event loop; `null` when the timeout ran out. `canceller` ends the wait with
    /// `cancelled`; the server keeps serving.
    #[napi(ts_return_type = "Promise<NativeRequest | null>")]
    pub fn accept<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
        canceller: Option<&Canceller>,
    ) -> Result<PromiseRaw<'env, Option<NativeRequest>>> {
        let timeout = millis(timeout_ms, "timeout")?;
        let server = self.inner.clone();
        let cancel = canceller.map(|c| c.state.clone());
        let socket = self.inner.socket_path().to_path_buf();
        let fut = async move {
            let r = run_cancellable(socket.clone(), cancel, move |ctl| {
                server.accept_with(timeout, ctl)
            })
            .await;
            Ok(match r {
                // Aborted just as a successor arrived: turn it away (it sees the
                // connection closed and the server keeps serving).
                Ok((Ok(Some(_req)), true)) => Err(CoreError::Cancelled {
                    path: socket,
                    waiting_for: CoreError::WAITING_FOR_HANDOVER,
                    by: Some("an AbortSignal".to_string()),
                }),
                Ok((Ok(found), _)) => Ok(found.map(|req| NativeRequest {
                    successor: req.successor().clone(),
                    inner: Arc::new(Mutex::new(Some(req))),
                })),
                Ok((Err(e), aborted)) => Err(by_abort(e, aborted)),
                Err(e) => Err(e),
            })
        };
        env.spawn_future_with_callback(fut, |env, result| result.map_err(|e| js_error(env, &e)))
    }

    /// Send `state` and copies of `fds` to the request's successor and wait for its
    /// acknowledgement, without blocking the event loop. Resolves to the successor: the
    /// server has stopped serving and the app may exit. Rejects when nothing was handed
    /// over: the server keeps serving and the app keeps its descriptors.
    #[napi(ts_return_type = "Promise<Peer>")]
    pub fn grant<'env>(
        &self,
        env: &'env Env,
        request: &NativeRequest,
        state: Buffer,
        fds: Vec<GrantFd>,
    ) -> Result<PromiseRaw<'env, Peer>> {
        // Copy the descriptors now, on the caller's thread: the app may close its own as
        // soon as this returns.
        let mut copies: Vec<(String, OwnedFd)> = Vec::with_capacity(fds.len());
        for g in fds {
            let copy = g
                .copy()
                .map_err(|why| Error::new(Status::InvalidArg, why))?;
            copies.push((g.label, copy));
        }
        let req = request.take()?;
        let state = state.to_vec();
        let server = self.inner.clone();
        let fut = async move {
            Ok(server
                .grant_async(req, state, copies)
                .await
                .map(|p| Peer::from(&p)))
        };
        env.spawn_future_with_callback(fut, |env, result| result.map_err(|e| js_error(env, &e)))
    }

    /// Serve until a successor took over (the core's serve loop), without blocking the
    /// event loop: `release(successor)` and `resume(error)` are index.js's wrappers of the
    /// app's functions (they never throw). Resolves to the successor, or `null` when
    /// `timeoutMs` ran out or the server was closed; `canceller` ends it with `cancelled`.
    #[napi(
        ts_args_type = "release: (successor: Peer) => Promise<ReleaseReply>, resume: (error: Error) => Promise<string | null>, timeoutMs?: number | undefined | null, canceller?: Canceller | undefined | null",
        ts_return_type = "Promise<Peer | null>"
    )]
    pub fn serve<'env>(
        &self,
        env: &'env Env,
        release: crate::serve::ReleaseFn,
        resume: crate::serve::ResumeFn,
        timeout_ms: Option<f64>,
        canceller: Option<&Canceller>,
    ) -> Result<PromiseRaw<'env, Option<Peer>>> {
        let timeout = millis(timeout_ms, "timeout")?;
        let server = self.inner.clone();
        let cancel = canceller.map(|c| c.state.clone());
        let socket = self.inner.socket_path().to_path_buf();
        let fut = async move {
            let mut hooks = crate::serve::NodeHooks {
                release,
                resume,
                runtime: tokio::runtime::Handle::current(),
            };
            let r = run_cancellable(socket, cancel, move |ctl| {
                match server.serve(timeout, ctl, &mut hooks) {
                    Ok(peer) => Ok(Ok(peer)),
                    Err(ServeError::Hook(e)) => Ok(Err(e)),
                    Err(ServeError::Handover(e)) => Err(e),
                }
            })
            .await;
            Ok(match r {
                Ok((Ok(Ok(peer)), _)) => Ok(Ok(peer.as_ref().map(Peer::from))),
                Ok((Ok(Err(hook)), _)) => Ok(Err(hook.0)),
                Ok((Err(e), aborted)) => Err(by_abort(e, aborted)),
                Err(e) => Err(e),
            })
        };
        env.spawn_future_with_callback(fut, |env, result| match result {
            Ok(Ok(peer)) => Ok(peer),
            Ok(Err(message)) => Err(Error::new(Status::GenericFailure, message)),
            Err(e) => Err(js_error(env, &e)),
        })
    }

    /// Turn the request's successor away with `message` (it gets reason `refused`); the
    /// server keeps serving.
    #[napi]
    pub fn refuse(&self, env: &Env, request: &NativeRequest, message: String) -> Result<()> {
        let req = request.take()?;
        self.inner
            .refuse(req, &message)
            .map_err(|e| js_error(env, &e))
    }
}
