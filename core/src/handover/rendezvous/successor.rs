//! The new version's side: take over from the old version, if one is serving.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::stat::{fstat, SFlag};

use super::conn::fail;
use super::failure::HandoverFailure;
use super::options::{PeerInfo, RendezvousOptions};
use super::socket_file::{connect_socket, Found};
use super::wire::{self, Kind, Text, MAX_TEXT, PROTOCOL_MIN, PROTOCOL_VERSION};
use crate::error::{Error, Result};
use crate::handover::signal::handover_complete;
use crate::holder::identity;
use crate::lock::wait::WaitControl;

/// A descriptor received from the old version, with the label it was sent under.
#[derive(Debug)]
pub struct InheritedFd {
    label: String,
    fd: OwnedFd,
}

impl InheritedFd {
    /// The label the old version gave it (e.g. `"http"`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the descriptor is a socket (else a file, pipe or device).
    pub fn is_socket(&self) -> bool {
        fstat(&self.fd).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
        })
    }

    /// Take the descriptor (close-on-exec is set).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The label and the descriptor.
    pub fn into_parts(self) -> (String, OwnedFd) {
        (self.label, self.fd)
    }
}

impl AsFd for InheritedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for InheritedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What the new version got from the old one.
#[derive(Debug)]
pub struct Inheritance {
    predecessor: PeerInfo,
    state: Vec<u8>,
    fds: Vec<InheritedFd>,
    signalled: Vec<PathBuf>,
    signal_error: Option<Error>,
    link: Option<ReadySignal>,
}

/// The still-open hand-over connection after a take-over, for an old version that keeps
/// its app serving on the shared listeners until the new one serves too (as
/// `lockctl handover serve` does without a state file): dropping it, or
/// [`ready`](Self::ready), tells the old version it may stop its app now. Old versions that
/// do not wait ignore it.
#[derive(Debug)]
pub struct ReadySignal {
    /// Held open only: closing it is the signal.
    _conn: super::conn::Conn,
}

impl ReadySignal {
    /// Our app now serves on the inherited listeners: the old version may stop its own.
    pub fn ready(self) {}
}

impl Inheritance {
    /// Who handed over.
    pub fn predecessor(&self) -> &PeerInfo {
        &self.predecessor
    }

    /// The app-defined state blob.
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// The descriptors, in the order they were sent.
    pub fn fds(&self) -> &[InheritedFd] {
        &self.fds
    }

    /// The handover-complete signal files written (empty when signalling is off or failed).
    pub fn signalled(&self) -> &[PathBuf] {
        &self.signalled
    }

    /// Why writing the handover-complete signal failed, if it did. The hand-over itself
    /// succeeded (the resources are ours); the Supervisor then stops the old version after
    /// its hand-over timeout instead of at once.
    pub fn signal_error(&self) -> Option<&Error> {
        self.signal_error.as_ref()
    }

    /// Take everything: predecessor, state, descriptors. The old version is told it may
    /// stop (see [`ready_signal`](Self::ready_signal)).
    pub fn into_parts(self) -> (PeerInfo, Vec<u8>, Vec<InheritedFd>) {
        (self.predecessor, self.state, self.fds)
    }

    /// Keep the old version's app serving until our app serves too: the returned signal
    /// holds the hand-over connection open until it is dropped or
    /// [`ReadySignal::ready`] is called. Without it, the connection closes when this
    /// inheritance is taken apart or dropped.
    pub fn ready_signal(&mut self) -> Option<ReadySignal> {
        self.link.take()
    }
}

/// Take over from the old version serving on the options' socket. `Ok(None)` when there is
/// no predecessor (first start, or only a stale socket, which is removed). On success the
/// handover-complete signal is written (unless turned off) and the descriptors are ours.
pub fn take_over(opts: &RendezvousOptions) -> Result<Option<Inheritance>> {
    take_over_with(opts, WaitControl::new())
}

/// [`take_over`], interruptible through `ctl` (cancel token, periodic check).
pub fn take_over_with(
    opts: &RendezvousOptions,
    mut ctl: WaitControl<'_>,
) -> Result<Option<Inheritance>> {
    let socket = opts.socket_path();
    let step = opts.step_timeout;
    let conn = match connect_socket(&socket, opts, Instant::now() + step, &mut ctl)? {
        Found::Server(c) => c,
        Found::NoPredecessor => return Ok(None),
    };
    let (uid, pid) = conn.peer_cred()?;
    if !opts.peer_allowed(uid) {
        // Whoever listens there is not our old version as far as the kernel can tell: it
        // gets nothing from us and we take nothing from it.
        return Err(fail(
            &socket,
            HandoverFailure::Uid,
            format!(
                "the process serving hand-over there ({}uid {uid}) runs as neither our uid {}, root, nor an allowed peer uid; refusing to take anything from it",
                if pid > 0 { format!("pid {pid}, ") } else { "in another container, ".into() },
                nix::unistd::geteuid()
            ),
        ));
    }
    let me = identity::current();
    let hello = wire::encode_text(&[
        ("protocol-min", &PROTOCOL_MIN.to_string()),
        ("protocol-max", &PROTOCOL_VERSION.to_string()),
        ("pid", &me.pid.to_string()),
        ("release", &opts.release),
        ("program", opts.program.as_deref().unwrap_or(&me.program)),
    ]);
    if let Err(e) = conn.send(Kind::Hello, &hello, &[], Instant::now() + step, &mut ctl) {
        // A server that refuses us at once (our uid) answers and closes before our HELLO
        // is out: its REFUSE is still there to read, and says why.
        if e.handover_failure() == Some(HandoverFailure::PeerGone) {
            let soon = Instant::now() + std::time::Duration::from_millis(100);
            if let Ok(f) = conn.recv(MAX_TEXT, "say why it closed", soon, &mut ctl) {
                expect(&socket, f.header.kind, &f.payload, Kind::Welcome)?;
            }
        }
        return Err(e);
    }
    let welcome = conn.recv(
        MAX_TEXT,
        "answer our HELLO",
        Instant::now() + step,
        &mut ctl,
    )?;
    let text = expect(
        &socket,
        welcome.header.kind,
        &welcome.payload,
        Kind::Welcome,
    )?;
    let predecessor = PeerInfo {
        pid,
        own_pid: text.get_i32("pid").unwrap_or(0),
        uid,
        release: text.get("release").unwrap_or_default().to_string(),
        program: text.get("program").unwrap_or_default().to_string(),
        protocol: text.get_u32("protocol").unwrap_or(PROTOCOL_VERSION),
    };
    let max = opts.max_state + MAX_TEXT + 4;
    let frame = conn.recv(
        max,
        "release its resources and send its state",
        Instant::now() + opts.release_timeout,
        &mut ctl,
    )?;
    if frame.header.kind != Kind::State {
        expect(&socket, frame.header.kind, &frame.payload, Kind::State)?;
    }
    let (labels, state) = wire::decode_state(&frame.payload, frame.fds.len())
        .map_err(|d| fail(&socket, HandoverFailure::Protocol, d))?;
    if state.len() > opts.max_state {
        return Err(fail(
            &socket,
            HandoverFailure::TooLarge,
            format!(
                "the old version sent {} bytes of state, more than the {} allowed",
                state.len(),
                opts.max_state
            ),
        ));
    }
    let fds = labels
        .into_iter()
        .zip(frame.fds)
        .map(|(label, fd)| InheritedFd { label, fd })
        .collect();
    conn.send(Kind::Ack, &[], &[], Instant::now() + step, &mut ctl)?;
    // The old version says BYE once it stopped serving; wait for it (or its exit) so the
    // socket name is free when we return, for our own server.
    let _ = conn.recv_optional("say BYE", Instant::now() + step, &mut ctl);
    let link = Some(ReadySignal { _conn: conn });
    let (signalled, signal_error) = match opts.signal_options() {
        None => (Vec::new(), None),
        Some(sig) => match handover_complete(&sig) {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e)),
        },
    };
    Ok(Some(Inheritance {
        predecessor,
        state,
        fds,
        signalled,
        signal_error,
        link,
    }))
}

/// The text of a `want` frame, or the error a REFUSE (or anything else) means.
fn expect(socket: &std::path::Path, got: Kind, payload: &[u8], want: Kind) -> Result<Text> {
    if got == want {
        return Text::decode(payload).map_err(|d| fail(socket, HandoverFailure::Protocol, d));
    }
    if got == Kind::Refuse {
        let text = Text::decode(payload).ok();
        let reason = text
            .as_ref()
            .and_then(|t| t.get("reason"))
            .and_then(HandoverFailure::from_str_opt)
            .unwrap_or(HandoverFailure::Refused);
        let msg = text
            .as_ref()
            .and_then(|t| t.get("message"))
            .unwrap_or("no reason given")
            .to_string();
        return Err(fail(
            socket,
            reason,
            format!("the old version refused: {msg}"),
        ));
    }
    Err(fail(
        socket,
        HandoverFailure::Protocol,
        format!("expected {}, got {}", want.name(), got.name()),
    ))
}
