//! The old version's side: serve hand-over on the socket until one successor has taken over.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{accept4, SockFlag};

use super::conn::{fail, wait_any, Conn};
use super::failure::HandoverFailure;
use super::options::{PeerInfo, RendezvousOptions};
use super::socket_file::{bind_socket, Bound};
use super::wire::{self, Kind, Text, MAX_FDS, MAX_TEXT, PROTOCOL_MIN, PROTOCOL_VERSION};
use crate::error::os_err;
use crate::error::Result;
use crate::holder::identity;
use crate::lock::wait::{CancelToken, WaitControl};

/// The most connections [`HandoverServer::accept`] greets at once; beyond that the oldest
/// is dropped.
pub const MAX_PENDING: usize = 64;

/// The old version's hand-over server: it listens on the socket (mode 0600) from
/// [`bind`](Self::bind) until it has handed over ([`grant`](Self::grant) succeeded) or is
/// closed or dropped, which removes the socket.
///
/// Serving is two calls so the app runs its own release step in between, in its own
/// language: [`accept`](Self::accept) waits for a successor (checking its uid and protocol
/// version), then [`grant`](Self::grant) sends the state and descriptors and waits for the
/// successor's acknowledgement. If the successor fails in between, `grant` returns the error
/// and the server keeps serving: the app still has its descriptors (they were only copied)
/// and should resume its work.
///
/// Methods take `&self`; a server can be shared between threads (`close` from one thread
/// ends an `accept` waiting in another).
#[derive(Clone)]
pub struct HandoverServer {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    opts: RendezvousOptions,
    bound: Mutex<Option<Arc<Bound>>>,
    /// Connections accepted but not greeted yet (their HELLO has not arrived), kept across
    /// `accept` calls and told "taken" when another successor wins.
    pending: Mutex<Vec<(Conn, Instant)>>,
    /// The connection of the successor we handed over to, for
    /// [`HandoverServer::wait_successor_ready`].
    granted: Mutex<Option<Conn>>,
    closed: CancelToken,
    me: PeerInfo,
}

/// A successor that said HELLO and was welcomed; answer it with
/// [`HandoverServer::grant`] or [`HandoverServer::refuse`].
pub struct HandoverRequest {
    conn: Conn,
    successor: PeerInfo,
}

impl HandoverRequest {
    /// Who asks to take over.
    pub fn successor(&self) -> &PeerInfo {
        &self.successor
    }
}

impl std::fmt::Debug for HandoverRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoverRequest")
            .field("successor", &self.successor)
            .finish()
    }
}

impl std::fmt::Debug for HandoverServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoverServer")
            .field("socket", &self.inner.socket)
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl HandoverServer {
    /// Start serving hand-over on the socket the options name. A stale socket left by a
    /// crashed server is replaced; anything that is not a socket is never touched.
    ///
    /// Fails with [`HandoverFailure::AlreadyServing`] when another process serves on it.
    pub fn bind(opts: &RendezvousOptions) -> Result<HandoverServer> {
        let socket = opts.socket_path();
        let bound = bind_socket(&socket, opts)?;
        let closed = CancelToken::new()
            .map_err(|e| crate::Error::from_os(&socket, "create an eventfd", e, String::new))?;
        let id = identity::current();
        let me = PeerInfo {
            pid: id.pid,
            own_pid: id.pid,
            uid: nix::unistd::geteuid().as_raw(),
            release: opts.release.clone(),
            program: opts.program.clone().unwrap_or(id.program),
            protocol: PROTOCOL_VERSION,
        };
        Ok(HandoverServer {
            inner: Arc::new(Inner {
                socket,
                opts: opts.clone(),
                bound: Mutex::new(Some(Arc::new(bound))),
                pending: Mutex::new(Vec::new()),
                granted: Mutex::new(None),
                closed,
                me,
            }),
        })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket
    }

    /// Whether the server still serves (not handed over, not closed).
    pub fn is_serving(&self) -> bool {
        self.lock_bound().is_some()
    }

    fn lock_bound(&self) -> std::sync::MutexGuard<'_, Option<Arc<Bound>>> {
        self.inner.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bound(&self) -> Result<Arc<Bound>> {
        self.lock_bound().clone().ok_or_else(|| {
            fail(
                &self.inner.socket,
                HandoverFailure::Finished,
                "this server has already handed over or was closed",
            )
        })
    }

    /// Wait up to `timeout` (`None`: forever) for a successor. `Ok(None)` when the timeout
    /// ran out. Successors that run as another user, speak another protocol version or
    /// stall in their HELLO are turned away here, and the wait goes on.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Option<HandoverRequest>> {
        self.accept_with(timeout, WaitControl::new())
    }

    /// [`accept`](Self::accept), interruptible through `ctl` (cancel token, periodic check).
    /// Cancelling ends with [`ErrorCode::Cancelled`](crate::ErrorCode::Cancelled); the
    /// server keeps serving.
    ///
    /// Connections are greeted concurrently: a connection is only read once its whole HELLO
    /// has arrived, so connections that stay silent (or send half a frame) never delay a
    /// real successor; each is dropped after the step timeout, and at most
    /// `MAX_PENDING` (64) wait at once (the oldest goes first). A peer that is not our uid,
    /// root or an allowed peer uid is refused at once, by `SO_PEERCRED`.
    pub fn accept_with(
        &self,
        timeout: Option<Duration>,
        mut ctl: WaitControl<'_>,
    ) -> Result<Option<HandoverRequest>> {
        self.accept_ctl(timeout, &mut ctl)
    }

    /// [`accept_with`](Self::accept_with) with a control that outlives the call (the serve
    /// loop uses one for every step).
    pub(super) fn accept_ctl(
        &self,
        timeout: Option<Duration>,
        ctl: &mut WaitControl<'_>,
    ) -> Result<Option<HandoverRequest>> {
        let mut pending = std::mem::take(&mut *self.lock_pending());
        let got = self.accept_pending(&mut pending, timeout, ctl);
        self.lock_pending().append(&mut pending);
        got
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<(Conn, Instant)>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept_pending(
        &self,
        pending: &mut Vec<(Conn, Instant)>,
        timeout: Option<Duration>,
        ctl: &mut WaitControl<'_>,
    ) -> Result<Option<HandoverRequest>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let bound = self.bound()?;
            self.accept_queued(&bound, pending, ctl)?;
            let now = Instant::now();
            pending.retain(|(_, until)| *until > now);
            let mut i = 0;
            while i < pending.len() {
                if !pending[i].0.frame_ready() {
                    i += 1;
                    continue;
                }
                let (conn, _) = pending.remove(i);
                if let Some(req) = self.greet(conn, ctl)? {
                    return Ok(Some(req));
                }
            }
            // Wait for a new connection, data on a pending one, the earliest pending
            // deadline, the caller's deadline, or close().
            let wake = pending
                .iter()
                .map(|(_, until)| *until)
                .chain(deadline)
                .min();
            let mut fds: Vec<BorrowedFd<'_>> = vec![bound.listener.as_fd()];
            fds.extend(pending.iter().map(|(c, _)| c.fd()));
            let ready = wait_any(
                &fds,
                wake,
                ctl,
                &self.inner.socket,
                Some(self.inner.closed.fd()),
            )?;
            if !ready && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Accept every connection waiting in the backlog into `pending`, refusing peers of
    /// another user at once.
    fn accept_queued(
        &self,
        bound: &Bound,
        pending: &mut Vec<(Conn, Instant)>,
        ctl: &mut WaitControl<'_>,
    ) -> Result<()> {
        let step = self.inner.opts.step_timeout;
        loop {
            match accept4(
                bound.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(raw) => {
                    // SAFETY: accept4 returned a new descriptor that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    let conn = Conn::new(fd, &self.inner.socket);
                    let Ok((uid, pid)) = conn.peer_cred() else {
                        continue;
                    };
                    if !self.inner.opts.peer_allowed(uid) {
                        let msg = format!(
                            "uid {uid} (pid {pid}) may not take over from uid {}: only our uid, root or an allowed peer uid may; run both versions as the same user, or allow it with peer_uids (lockctl --peer-uid {uid})",
                            self.inner.me.uid
                        );
                        let _ = conn.send(
                            Kind::Refuse,
                            &wire::encode_text(&[
                                ("reason", HandoverFailure::Uid.as_str()),
                                ("message", &msg),
                            ]),
                            &[],
                            Instant::now() + Duration::from_millis(50),
                            ctl,
                        );
                        continue;
                    }
                    if pending.len() >= MAX_PENDING {
                        pending.remove(0);
                    }
                    pending.push((conn, Instant::now() + step));
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => {}
                Err(e) => {
                    return Err(os_err(
                        &self.inner.socket,
                        "accept on the hand-over socket",
                        e,
                    ))
                }
            }
        }
    }

    /// Check a new connection and exchange HELLO / WELCOME. `Ok(None)`: turned away.
    /// Only cancellation (or the caller's check) is an error here.
    fn greet(&self, conn: Conn, ctl: &mut WaitControl<'_>) -> Result<Option<HandoverRequest>> {
        let step = self.inner.opts.step_timeout;
        let Ok((uid, pid)) = conn.peer_cred() else {
            return Ok(None);
        };
        let hello = match conn.recv(MAX_TEXT, "send its HELLO", Instant::now() + step, ctl) {
            Ok(f) => f,
            Err(e) if is_interruption(&e) => return Err(e),
            Err(_) => return Ok(None),
        };
        if hello.header.kind != Kind::Hello {
            return Ok(None);
        }
        let Ok(text) = Text::decode(&hello.payload) else {
            return Ok(None);
        };
        let their_min = text.get_u32("protocol-min").unwrap_or(1);
        let their_max = text.get_u32("protocol-max").unwrap_or(1);
        let version = their_max.min(PROTOCOL_VERSION);
        if version < their_min.max(PROTOCOL_MIN) {
            let msg = format!(
                "the old version speaks hand-over protocol {PROTOCOL_MIN}..{PROTOCOL_VERSION}, the new one {their_min}..{their_max}"
            );
            let _ = conn.send(
                Kind::Refuse,
                &wire::encode_text(&[
                    ("reason", HandoverFailure::Version.as_str()),
                    ("message", &msg),
                ]),
                &[],
                Instant::now() + step,
                ctl,
            );
            return Ok(None);
        }
        let me = &self.inner.me;
        let welcome = wire::encode_text(&[
            ("protocol", &version.to_string()),
            ("pid", &me.own_pid.to_string()),
            ("release", &me.release),
            ("program", &me.program),
        ]);
        match conn.send(Kind::Welcome, &welcome, &[], Instant::now() + step, ctl) {
            Ok(()) => {}
            Err(e) if is_interruption(&e) => return Err(e),
            Err(_) => return Ok(None),
        }
        let successor = PeerInfo {
            pid,
            own_pid: text.get_i32("pid").unwrap_or(0),
            uid,
            release: text.get("release").unwrap_or_default().to_string(),
            program: text.get("program").unwrap_or_default().to_string(),
            protocol: version,
        };
        Ok(Some(HandoverRequest { conn, successor }))
    }

    /// Hand over to `req`'s successor: send `state` and the descriptors (each with a label
    /// the successor sees, e.g. `"http"`), then wait for its acknowledgement. On success the
    /// server stops serving (socket removed, successors still waiting are told "taken") and
    /// the app may exit. On failure nothing was handed over and the server keeps serving.
    pub fn grant(
        &self,
        req: HandoverRequest,
        state: &[u8],
        fds: &[(&str, BorrowedFd<'_>)],
    ) -> Result<PeerInfo> {
        self.grant_with(req, state, fds, WaitControl::new())
    }

    /// [`grant`](Self::grant), interruptible through `ctl`.
    pub fn grant_with(
        &self,
        req: HandoverRequest,
        state: &[u8],
        fds: &[(&str, BorrowedFd<'_>)],
        mut ctl: WaitControl<'_>,
    ) -> Result<PeerInfo> {
        self.grant_ctl(req, state, fds, &mut ctl)
    }

    /// [`grant_with`](Self::grant_with) with a control that outlives the call.
    pub(super) fn grant_ctl(
        &self,
        req: HandoverRequest,
        state: &[u8],
        fds: &[(&str, BorrowedFd<'_>)],
        ctl: &mut WaitControl<'_>,
    ) -> Result<PeerInfo> {
        let _bound = self.bound()?;
        let step = self.inner.opts.step_timeout;
        let max = self.inner.opts.max_state;
        if state.len() > max || fds.len() > MAX_FDS {
            let detail = format!(
                "{} bytes of state and {} descriptors given; at most {max} bytes and {MAX_FDS} descriptors may be sent",
                state.len(),
                fds.len()
            );
            let _ = self.refuse_as(req, HandoverFailure::TooLarge, &detail);
            return Err(fail(&self.inner.socket, HandoverFailure::TooLarge, detail));
        }
        let labels: Vec<&str> = fds.iter().map(|(l, _)| *l).collect();
        let raw: Vec<i32> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let payload = wire::encode_state(&labels, state);
        req.conn
            .send(Kind::State, &payload, &raw, Instant::now() + step, ctl)?;
        let ack = req.conn.recv(
            MAX_TEXT,
            "acknowledge the state",
            Instant::now() + step,
            ctl,
        )?;
        if ack.header.kind != Kind::Ack {
            return Err(fail(
                &self.inner.socket,
                HandoverFailure::Protocol,
                format!(
                    "the successor answered the state with {} instead of ACK",
                    ack.header.kind.name()
                ),
            ));
        }
        // The successor owns the resources now.
        self.finish(Some(HandoverFailure::Taken), &req.successor);
        let _ = req
            .conn
            .send(Kind::Bye, &[], &[], Instant::now() + step, ctl);
        *self.lock_last() = Some(req.conn);
        Ok(req.successor)
    }

    /// After a successful [`grant`](Self::grant): wait at most `patience` until the
    /// successor says its app serves (it closes the hand-over connection: a
    /// [`ReadySignal`](crate::ReadySignal) dropped, or a successor that does not wait).
    /// Meanwhile the old app may go on accepting on the shared listeners, so the switch
    /// has no pause. `true` when the successor said so in time.
    pub fn wait_successor_ready(&self, patience: Duration) -> bool {
        let Some(conn) = self.lock_last().take() else {
            return true;
        };
        let mut ctl = WaitControl::new();
        let deadline = Instant::now() + patience;
        loop {
            match conn.recv(MAX_TEXT, "say it serves", deadline, &mut ctl) {
                // Nothing more is expected; anything sent is ignored.
                Ok(_) => continue,
                Err(e) => return e.handover_failure() != Some(HandoverFailure::Stalled),
            }
        }
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.inner.granted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turn `req`'s successor away (the app cannot release its resources now); the server
    /// keeps serving and the successor gets [`HandoverFailure::Refused`] with `message`.
    pub fn refuse(&self, req: HandoverRequest, message: &str) -> Result<()> {
        self.refuse_as(req, HandoverFailure::Refused, message)
    }

    fn refuse_as(
        &self,
        req: HandoverRequest,
        reason: HandoverFailure,
        message: &str,
    ) -> Result<()> {
        let step = self.inner.opts.step_timeout;
        req.conn.send(
            Kind::Refuse,
            &wire::encode_text(&[("reason", reason.as_str()), ("message", message)]),
            &[],
            Instant::now() + step,
            &mut WaitControl::new(),
        )
    }

    /// Stop serving without handing over: the socket is removed and waiting successors find
    /// the connection closed. Idempotent.
    pub fn close(&self) {
        let nobody = self.inner.me.clone();
        self.finish(None, &nobody);
    }

    fn finish(&self, tell: Option<HandoverFailure>, winner: &PeerInfo) {
        let Some(bound) = self.lock_bound().take() else {
            return;
        };
        bound.retire();
        self.inner.closed.cancel();
        // Successors already connected hear why they lost (best effort, no waiting): those
        // accepted but not greeted yet, and those still in the listen backlog.
        let pending = std::mem::take(&mut *self.lock_pending());
        if let Some(reason) = tell {
            let msg = format!("{} took over first", winner.describe());
            let text = wire::encode_text(&[("reason", reason.as_str()), ("message", &msg)]);
            let queued = std::iter::from_fn(|| {
                accept4(
                    bound.listener.as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )
                .ok()
                // SAFETY: accept4 returned a new descriptor that we now own.
                .map(|raw| Conn::new(unsafe { OwnedFd::from_raw_fd(raw) }, &self.inner.socket))
            });
            for conn in pending.into_iter().map(|(c, _)| c).chain(queued) {
                let mut ctl = WaitControl::new();
                let soon = Instant::now() + Duration::from_millis(50);
                if conn
                    .recv(MAX_TEXT, "send its HELLO", soon, &mut ctl)
                    .is_ok()
                {
                    let _ = conn.send(Kind::Refuse, &text, &[], soon, &mut ctl);
                }
            }
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.unlink();
    }
}

fn is_interruption(e: &crate::Error) -> bool {
    !matches!(e, crate::Error::Handover { .. })
        && !matches!(
            e.code(),
            crate::ErrorCode::Io | crate::ErrorCode::Permission
        )
}
