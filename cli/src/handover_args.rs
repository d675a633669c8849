//! Command-line syntax of `lockctl handover take | serve | run`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use update_lock::RendezvousOptions;

use crate::duration::{parse_duration as parse_secs, parse_timeout};

/// Where the two versions meet, and how this one names itself.
#[derive(Debug, Args)]
pub struct RendezvousArgs {
    /// Hand-over socket (default: handover.sock beside $BALENA_SERVICE_HANDOVER_COMPLETE_PATH,
    /// i.e. /tmp/balena/handover.sock).
    #[arg(long, value_name = "P")]
    pub socket: Option<PathBuf>,
    /// Name of this release as the other version sees it (e.g. a version or commit).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub release: String,
    /// Seconds the peer may take for one protocol step [default: 5, core's].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub step_timeout: Option<Duration>,
    /// Largest state accepted or sent, in bytes [default: 1048576, core's].
    #[arg(long, value_name = "BYTES")]
    pub max_state: Option<usize>,
    /// Also hand over to / take over from a process of this uid (repeatable). By default
    /// only our own uid and root take part: a peer is who SO_PEERCRED says it is.
    #[arg(long = "peer-uid", value_name = "UID")]
    pub peer_uids: Vec<u32>,
}

impl RendezvousArgs {
    /// The core options these arguments name.
    pub fn options(&self) -> RendezvousOptions {
        // Unset: core's defaults, the same in every surface.
        let mut o = RendezvousOptions::new()
            .release(self.release.clone())
            .peer_uids(self.peer_uids.iter().copied());
        if let Some(t) = self.step_timeout {
            o = o.step_timeout(t);
        }
        if let Some(m) = self.max_state {
            o = o.max_state(m);
        }
        if let Some(s) = &self.socket {
            o = o.socket(s.clone());
        }
        o
    }
}

/// The successor's side: `take` (and the first half of `run`).
#[derive(Debug, Args)]
pub struct TakeArgs {
    #[command(flatten)]
    pub rendezvous: RendezvousArgs,
    /// Seconds to wait for the old version's release step and its state [default: 10, core's].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub release_timeout: Option<Duration>,
    /// Do not write the handover-complete signal after taking over.
    #[arg(long)]
    pub no_signal: bool,
    /// Write this handover-complete signal path instead of the default (repeatable).
    #[arg(long = "signal-path", value_name = "P", conflicts_with = "no_signal")]
    pub signal_paths: Vec<PathBuf>,
    /// A TCP listener CMD needs, as LABEL=HOST:PORT (repeatable): inherited from the old
    /// version under LABEL, or created by lockctl (SO_REUSEADDR) when there is none.
    #[arg(long = "listen", value_name = "LABEL=HOST:PORT", value_parser = parse_listen)]
    pub listen: Vec<ListenSpec>,
    /// Listen backlog of the --listen listeners, created or inherited: connections that
    /// arrive while no version accepts wait in it instead of being dropped (SYN
    /// retransmits cost a second). Default: the kernel's limit (net.core.somaxconn).
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// (`run`) When to tell the old version that CMD serves, so that it stops its own
    /// command (which, without --state-file, keeps accepting on the shared listeners until
    /// then, so a switch has no pause): `notify` (default), when CMD sends READY=1 to
    /// $NOTIFY_SOCKET (systemd's sd_notify protocol), or after --ready-timeout if it never
    /// does; `started`, as soon as CMD is started (connections wait while CMD starts up).
    #[arg(long, value_enum, default_value = "notify")]
    pub ready: ReadyWhen,
    /// (`run --ready notify`) The longest wait for READY=1.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "5")]
    pub ready_timeout: Duration,
}

/// When the new version's command counts as serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadyWhen {
    /// As soon as it is started.
    Started,
    /// When it sends READY=1 to $NOTIFY_SOCKET.
    Notify,
}

impl TakeArgs {
    /// The core options of the take-over.
    pub fn options(&self) -> RendezvousOptions {
        let mut o = self.rendezvous.options();
        if let Some(t) = self.release_timeout {
            o = o.release_timeout(t);
        }
        o = o.signal(!self.no_signal);
        if !self.signal_paths.is_empty() {
            o = o.signal_paths(self.signal_paths.clone());
        }
        o
    }
}

/// The old version's side: `serve` (and the second half of `run`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Stop serving after SECS seconds without a successor ('forever' by default).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<crate::duration::Timeout>,
    /// After SIGTERM/SIGINT keep serving at most SECS more seconds (a device stops the old
    /// container right after starting the new one); a second signal stops at once.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "5")]
    pub term_grace: Duration,
    /// When a successor arrives: SIGTERM CMD, wait at most SECS for it to exit, then hand
    /// over (also how long CMD gets to exit when lockctl stops without a hand-over, before
    /// SIGKILL). With the --term-grace default, 5 + 3 s stays inside the Supervisor's 10 s
    /// stop grace period.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "3")]
    pub release_grace: Duration,
    /// File whose content is sent as the state, read after CMD has stopped (so CMD may
    /// write it on SIGTERM); a missing file sends no state. Without it, CMD is not stopped
    /// before the hand-over: it keeps accepting on the shared listeners beside the new
    /// version until that one serves (at most --overlap), so no connection waits.
    #[arg(long, value_name = "F")]
    pub state_file: Option<PathBuf>,
    /// Without --state-file: how long CMD keeps serving beside the new version at most,
    /// waiting for it to say it serves, before CMD gets SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "5")]
    pub overlap: Duration,
}

/// `--listen LABEL=HOST:PORT`.
#[derive(Debug, Clone)]
pub struct ListenSpec {
    /// The label (LISTEN_FDNAMES entry, hand-over label).
    pub label: String,
    /// What the user wrote after `=` (for messages).
    pub text: String,
    /// The resolved addresses (the first that binds is used).
    pub addrs: Vec<SocketAddr>,
}

/// `--fd LABEL=N`.
#[derive(Debug, Clone)]
pub struct FdSpec {
    /// The label the successor sees.
    pub label: String,
    /// The descriptor number lockctl inherited.
    pub fd: i32,
}

/// A label: what LISTEN_FDNAMES can carry (no ':', no control characters, at most 255
/// bytes, not empty).
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("the label before '=' is empty; use e.g. http=0.0.0.0:80".into());
    }
    if label.len() > 255 || label.contains(':') || label.chars().any(|c| c.is_control()) {
        return Err(format!(
            "label '{label}' must be at most 255 bytes without ':' or control characters (it becomes a LISTEN_FDNAMES entry)"
        ));
    }
    Ok(())
}

fn split_label(s: &str, example: &str) -> Result<(String, String), String> {
    let (label, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not LABEL=VALUE; use e.g. {example}"))?;
    check_label(label)?;
    Ok((label.to_string(), rest.to_string()))
}

/// Parse `LABEL=HOST:PORT` (HOST may be a name, an IPv4 address or a bracketed IPv6 one).
pub fn parse_listen(s: &str) -> Result<ListenSpec, String> {
    let (label, text) = split_label(s, "http=0.0.0.0:8080")?;
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| {
            format!("'{text}' is not a HOST:PORT address ({e}); use e.g. 0.0.0.0:8080 or [::]:8080")
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("'{text}' resolves to no address"));
    }
    Ok(ListenSpec { label, text, addrs })
}

/// Parse `LABEL=N`.
pub fn parse_fd(s: &str) -> Result<FdSpec, String> {
    let (label, n) = split_label(s, "http=3")?;
    let fd: i32 = n
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("'{n}' is not a descriptor number; use e.g. {label}=3"))?;
    Ok(FdSpec { label, fd })
}

/// The first label that appears twice, if any.
pub fn duplicate<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    labels.into_iter().find(|l| !seen.insert(*l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let l = parse_listen("http=127.0.0.1:8080").unwrap();
        assert_eq!(l.label, "http");
        assert_eq!(l.addrs[0].port(), 8080);
        assert!(parse_listen("[::1]:80").is_err());
        for bad in [
            "http=127.0.0.1",
            "http=:x",
            "=1.2.3.4:5",
            "a:b=1.2.3.4:5",
            "x",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        let f = parse_fd("dev=7").unwrap();
        assert_eq!((f.label.as_str(), f.fd), ("dev", 7));
        for bad in ["dev=-1", "dev=x", "dev", "=3"] {
            assert!(parse_fd(bad).is_err(), "{bad}");
        }
        assert_eq!(duplicate(["a", "b", "a"]), Some("a"));
        assert_eq!(duplicate(["a", "b"]), None);
        assert!(parse_secs("forever").is_err());
    }
}
