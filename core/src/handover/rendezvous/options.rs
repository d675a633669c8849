//! Options shared by both sides of a hand-over, and what each side learns of the other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::handover::signal::HandoverOptions;
use crate::paths;

/// File name of the hand-over socket when no path is given.
pub const SOCKET_NAME: &str = "handover.sock";

/// The default hand-over socket: `handover.sock` beside the handover-complete signal
/// (`$BALENA_SERVICE_HANDOVER_COMPLETE_PATH`, by default in `/tmp/balena`), i.e. in the
/// service directory the old and the new container share.
///
/// ```
/// let p = update_lock::default_socket_path();
/// assert!(p.ends_with("handover.sock"));
/// ```
pub fn default_socket_path() -> PathBuf {
    let signal = paths::primary_handover_path();
    match signal.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(SOCKET_NAME),
        _ => PathBuf::from(SOCKET_NAME),
    }
}

/// How to find the other version and how long each step may take. Used by both the old
/// version ([`HandoverServer::bind`](crate::HandoverServer::bind)) and the new one
/// ([`take_over`](crate::take_over)).
#[derive(Debug, Clone)]
pub struct RendezvousOptions {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) step_timeout: Duration,
    pub(crate) release_timeout: Duration,
    pub(crate) max_state: usize,
    pub(crate) release: String,
    pub(crate) program: Option<String>,
    pub(crate) signal: Signal,
    pub(crate) peer_uids: Vec<u32>,
}

/// How long the peer may take to answer one protocol step, unless set otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a successor waits for the old version's release step and its state: the
/// Supervisor's default stop grace period.
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest state either side accepts, in bytes, unless set otherwise.
pub const DEFAULT_MAX_STATE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// Beside the socket (explicit socket) or the Supervisor's defaults.
    Default,
    Off,
    Paths(Vec<PathBuf>),
}

impl Default for RendezvousOptions {
    fn default() -> Self {
        RendezvousOptions {
            socket: None,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
            max_state: DEFAULT_MAX_STATE,
            release: String::new(),
            program: None,
            signal: Signal::Default,
            peer_uids: Vec::new(),
        }
    }
}

impl RendezvousOptions {
    /// The defaults: [`default_socket_path`], 5 s per step, 10 s for the old version's
    /// release step, at most 1 MiB of state, signal handover-complete after a take-over.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this socket path instead of [`default_socket_path`]. The handover-complete
    /// signal then defaults to `handover-complete` beside it.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        let p = path.into();
        self.socket = if p.as_os_str().is_empty() {
            None
        } else {
            Some(p)
        };
        self
    }

    /// How long the peer may take to answer one protocol step (default 5 s).
    pub fn step_timeout(mut self, t: Duration) -> Self {
        self.step_timeout = t;
        self
    }

    /// How long the successor waits for the old version's release step and its state
    /// (default 10 s, the Supervisor's default stop grace period).
    pub fn release_timeout(mut self, t: Duration) -> Self {
        self.release_timeout = t;
        self
    }

    /// The largest state blob either side accepts, in bytes (default 1 MiB, at most 64 MiB).
    pub fn max_state(mut self, bytes: usize) -> Self {
        self.max_state = bytes.min(64 << 20);
        self
    }

    /// Other uids the peer may run as, besides our own and root (default none). A peer is
    /// who `SO_PEERCRED` says it is: the old version only hands over to, and the new one
    /// only takes over from, a process of our uid, root, or one of these. With any uid
    /// here the server's socket is made connectable by everyone (mode 0666): the peer check
    /// decides, not the file mode.
    ///
    /// ```
    /// let o = update_lock::RendezvousOptions::new().peer_uids([1000]);
    /// assert!(o.peer_allowed(1000) && o.peer_allowed(0) && !o.peer_allowed(1001));
    /// ```
    pub fn peer_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.peer_uids = uids.into_iter().collect();
        self.peer_uids.sort_unstable();
        self.peer_uids.dedup();
        self
    }

    /// Whether a peer running as `uid` may hand over to us or take over from us: our own
    /// uid, root, or one of [`peer_uids`](Self::peer_uids).
    pub fn peer_allowed(&self, uid: u32) -> bool {
        uid == nix::unistd::geteuid().as_raw() || uid == 0 || self.peer_uids.contains(&uid)
    }

    /// The most state bytes a successor accepts (and a server should send).
    pub fn state_limit(&self) -> usize {
        self.max_state
    }

    /// How this version names itself to the other (release name, version, commit).
    pub fn release(mut self, name: impl Into<String>) -> Self {
        self.release = name.into();
        self
    }

    /// The program name shown to the other version (default: this process's name, as in
    /// the lock's holder record). Bindings pass the script's name here.
    pub fn program(mut self, name: impl Into<String>) -> Self {
        let n = name.into();
        self.program = if n.is_empty() { None } else { Some(n) };
        self
    }

    /// Whether a successful take-over writes the handover-complete signal (default true).
    pub fn signal(mut self, on: bool) -> Self {
        self.signal = if on { Signal::Default } else { Signal::Off };
        self
    }

    /// Write exactly these handover-complete signal paths after a take-over.
    pub fn signal_paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.signal = match paths::path_list(paths) {
            Some(v) => Signal::Paths(v),
            None => Signal::Default,
        };
        self
    }

    /// The socket path these options name.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket_path)
    }

    /// The signal files a take-over writes, or `None` when signalling is off.
    pub fn signal_options(&self) -> Option<HandoverOptions> {
        match (&self.signal, &self.socket) {
            (Signal::Off, _) => None,
            (Signal::Paths(p), _) => Some(HandoverOptions::new().paths(p.clone())),
            (Signal::Default, None) => Some(HandoverOptions::new()),
            (Signal::Default, Some(sock)) => Some(
                HandoverOptions::new()
                    .paths([sibling(sock, crate::handover::signal::HANDOVER_SIGNAL_NAME)]),
            ),
        }
    }
}

fn sibling(path: &Path, name: &str) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// What one side of a hand-over knows about the other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerInfo {
    /// The peer's pid as the kernel reports it to us (SO_PEERCRED); 0 when the peer is in a
    /// PID namespace we cannot see (another container).
    pub pid: i32,
    /// The pid the peer reports for itself (in its own PID namespace).
    pub own_pid: i32,
    /// The peer's uid (SO_PEERCRED).
    pub uid: u32,
    /// The release name the peer gave ([`RendezvousOptions::release`]); may be empty.
    pub release: String,
    /// The peer's program name.
    pub program: String,
    /// The protocol version both sides agreed on.
    pub protocol: u32,
}

impl PeerInfo {
    /// A short description for messages: `"v2 (myapp, pid 12)"`.
    pub fn describe(&self) -> String {
        let name = if self.release.is_empty() {
            "release unnamed".to_string()
        } else {
            format!("release {}", self.release)
        };
        format!("{name} ({}, pid {})", self.program, self.own_pid)
    }
}

/// The listen backlog to give a listener that may be handed over: the kernel's limit
/// (`/proc/sys/net/core/somaxconn`; 4096 when it cannot be read). Connections that arrive
/// while no version accepts (during a switch) then wait in the queue instead of being
/// dropped, which would cost the client a SYN retransmit (a second or more).
///
/// ```
/// assert!(update_lock::listen_backlog() >= 128);
/// ```
pub fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4096)
}
