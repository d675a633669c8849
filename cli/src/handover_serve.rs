//! `lockctl handover serve --fd LABEL=N ... [-- CMD]`: serve the hand-over of descriptors
//! lockctl holds (with `-- CMD`, while CMD runs with them) until a successor takes them.
//!
//! Choices, also in `--help`:
//! - the release step for a successor is: SIGTERM to CMD, wait at most `--release-grace` for
//!   it to exit, read `--state-file`, hand over (even if CMD still runs: the descriptors are
//!   lockctl's own copies);
//! - SIGTERM/SIGINT to lockctl do not stop it (a device sends SIGTERM to the old container
//!   right after starting the new one): it keeps serving `--term-grace` more seconds; a
//!   second signal stops at once;
//! - a failed hand-over restarts nothing: lockctl says so and keeps serving (CMD may still
//!   run if it ignored SIGTERM);
//! - CMD exiting on its own (before any hand-over) ends serving with CMD's status.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};

use update_lock::{
    ErrorCode, HandoverServer, PeerInfo, ReleaseAnswer, RendezvousOptions, ServeError, ServeHooks,
    WaitControl,
};

use crate::failure::{Failure, EXIT_OTHER, EXIT_USAGE};
use crate::handover_args::{duplicate, FdSpec, ServeArgs};
use crate::listen_fds::ChildFds;
use crate::serve_events::{Events, Stop};

/// Exit status when nothing was handed over (`ErrorCode::Handover`'s).
pub const EXIT_NOT_HANDED_OVER: i32 = 69;

/// `serve`: adopt the `--fd` descriptors, then serve them.
pub fn run(
    opts: &RendezvousOptions,
    specs: &[FdSpec],
    args: &ServeArgs,
    command: &[OsString],
) -> Result<i32, Failure> {
    let fds = adopt(specs)?;
    let child = ChildFds {
        fds,
        taken: None,
        report_handover: false,
        ready: None,
        notify: None,
        ready_timeout: std::time::Duration::ZERO,
    };
    serve(opts, child, args, command)
}

/// Take our own close-on-exec copies of the `--fd` descriptors (checking each is open);
/// the originals (3 and up) are closed so CMD only sees the copies placed at 3.. .
fn adopt(specs: &[FdSpec]) -> Result<Vec<(String, OwnedFd)>, Failure> {
    if let Some(l) = duplicate(specs.iter().map(|s| s.label.as_str())) {
        return Err(Failure::other(
            EXIT_USAGE,
            format!("error[usage]: --fd label '{l}' is given twice; every label must be unique"),
        ));
    }
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        // SAFETY: fcntl on a descriptor number; EBADF when it is not open.
        let copy = unsafe { libc::fcntl(s.fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::other(
                EXIT_USAGE,
                format!(
                    "error[usage]: --fd {}={}: descriptor {} is not open in lockctl ({e}); start lockctl with it open, e.g. from a shell `lockctl handover serve --fd {}={} ... {}<>FILE`",
                    s.label, s.fd, s.fd, s.label, s.fd, s.fd
                ),
            ));
        }
        // SAFETY: the copy is new and ours.
        out.push((s.label.clone(), unsafe { OwnedFd::from_raw_fd(copy) }));
    }
    let mut originals: Vec<i32> = specs.iter().map(|s| s.fd).filter(|n| *n > 2).collect();
    originals.sort_unstable();
    originals.dedup();
    for n in originals {
        // SAFETY: an inherited descriptor that nothing in lockctl owns; we have a copy.
        unsafe { libc::close(n) };
    }
    Ok(out)
}

/// Serve `child`'s descriptors (running `command` with them, if given) until a successor
/// has taken them or serving stops. The exit status.
pub fn serve(
    opts: &RendezvousOptions,
    child: ChildFds,
    args: &ServeArgs,
    command: &[OsString],
) -> Result<i32, Failure> {
    let events = Events::new().map_err(|e| io_failure("create an eventfd", e))?;
    let ev = events.clone();
    crate::signals::spawn_receiver(move |sig| ev.on_signal(sig))
        .map_err(|e| io_failure("set up signal handling", e))?;
    // Right after a take-over the name is already free: the old server releases it before
    // its BYE, and take_over returns only after BYE.
    let server = match HandoverServer::bind(opts) {
        Ok(server) => server,
        // Serving hand-over is for the next release; it must never keep this one from
        // running. With a command: run it without serving, and say why and what to do.
        Err(e) if !command.is_empty() => {
            say!(
                "lockctl: warning[{}]: not serving hand-over: {e}; the command runs without it, and the next release will start fresh",
                e.code()
            );
            return run_without_serving(&events, child, command);
        }
        Err(e) => return Err(e.into()),
    };
    say!(
        "lockctl: serving hand-over of {} descriptor(s) on {}",
        child.fds.len(),
        server.socket_path().display()
    );
    let mut child = child;
    if !command.is_empty() {
        let pid = crate::serve_child::spawn(command, &child)?;
        events
            .watch_child(pid)
            .map_err(|e| io_failure("start a thread", e))?;
        tell_predecessor_when_serving(&mut child);
    }
    // The command has its copies; drop the state memfd (`run`), keep the descriptors.
    let ChildFds { fds, .. } = child;
    events
        .start_watchdog(args.timeout.and_then(|t| t.0), args.term_grace)
        .map_err(|e| io_failure("start a thread", e))?;

    let mut step = ReleaseStep {
        events: &events,
        args,
        opts,
        fds: &fds,
        who: String::new(),
        overlapped: false,
    };
    let ctl = WaitControl::new().cancel_on(events.stop_token.clone());
    match server.serve(None, ctl, &mut step) {
        Ok(Some(peer)) if step.overlapped => {
            let serving = server.wait_successor_ready(args.overlap);
            say!(
                "lockctl: handed over to {}{}; stopping the command",
                peer.describe(),
                if serving {
                    ", which serves now"
                } else {
                    " (it did not say it serves within --overlap)"
                }
            );
            events.stop_child(args.release_grace);
            return Ok(0);
        }
        Ok(Some(peer)) => {
            say!("lockctl: handed over to {}", peer.describe());
            if events.child_running() {
                events.stop_child(args.release_grace);
            }
            return Ok(0);
        }
        // Closed, or cancelled by a stop event: why is in `stop_reason` below.
        Ok(None) => {}
        Err(ServeError::Handover(e)) if e.code() == ErrorCode::Cancelled => {}
        Err(ServeError::Handover(e)) => {
            server.close();
            events.stop_child(args.release_grace);
            return Err(e.into());
        }
        Err(ServeError::Hook(never)) => match never {},
    }
    server.close();
    Ok(match events.stop_reason() {
        Some(Stop::ChildExited(code)) => {
            say!(
                "lockctl: the command exited with status {code} before anyone took over; stopped serving"
            );
            code
        }
        Some(Stop::Signal(sig)) => {
            events.stop_child(args.release_grace);
            say!(
                "lockctl: stopped by a second {}; nothing was handed over",
                sig.as_str()
            );
            128 + sig as i32
        }
        Some(Stop::Deadline(what)) => {
            events.stop_child(args.release_grace);
            say!(
                "lockctl: error[handover]: nobody took over before {what} ran out; nothing was handed over"
            );
            EXIT_NOT_HANDED_OVER
        }
        None => EXIT_OTHER,
    })
}

/// lockctl's release step for each successor, run by the core's serve loop.
struct ReleaseStep<'a> {
    events: &'a Events,
    args: &'a ServeArgs,
    opts: &'a RendezvousOptions,
    fds: &'a [(String, OwnedFd)],
    /// Who asks now, for the messages.
    who: String,
    /// Handed over while the command keeps serving (no state to wait for).
    overlapped: bool,
}

impl ServeHooks for ReleaseStep<'_> {
    type Error = std::convert::Infallible;

    fn release(&mut self, successor: &PeerInfo) -> Result<ReleaseAnswer, Self::Error> {
        if !self.events.begin_handover() {
            return Ok(ReleaseAnswer::Refuse("the old version is stopping".into()));
        }
        let who = successor.describe();
        self.who = who.clone();
        let fds = match copies(self.fds) {
            Ok(fds) => fds,
            Err(e) => {
                let msg = format!("cannot copy the descriptors to hand over: {e}");
                say!("lockctl: {msg}; refusing {who} and still serving");
                self.events.end_handover();
                return Ok(ReleaseAnswer::Refuse(msg));
            }
        };
        self.overlapped = self.args.state_file.is_none() && self.events.child_running();
        if self.overlapped {
            // No state to wait for: hand over copies first, let the command go on accepting
            // beside the successor's until that one serves, then stop it.
            say!("lockctl: {who} asks to take over; handing over while the command keeps serving");
            return Ok(ReleaseAnswer::Grant {
                state: Vec::new(),
                fds,
            });
        }
        say!("lockctl: {who} asks to take over; releasing");
        if let Some(code) = release_step(self.events, self.args) {
            say!("lockctl: the command exited with status {code}");
        }
        match read_state(self.args, self.opts.state_limit()) {
            Ok(state) => Ok(ReleaseAnswer::Grant { state, fds }),
            Err(msg) => {
                say!("lockctl: {msg}; refusing {who} and still serving");
                self.events.end_handover();
                Ok(ReleaseAnswer::Refuse(msg))
            }
        }
    }

    fn resume(&mut self, failure: update_lock::Error) -> Result<(), Self::Error> {
        let what = if self.events.child_running() {
            "the command still runs"
        } else {
            "the command has stopped and is not restarted"
        };
        say!(
            "lockctl: warning[{}]: the hand-over to {} failed: {failure}; {what}; still serving the descriptors",
            failure.code(),
            self.who
        );
        self.events.end_handover();
        Ok(())
    }
}

/// Copies of our descriptors for one grant (ours stay open if it fails).
fn copies(fds: &[(String, OwnedFd)]) -> std::io::Result<Vec<(String, OwnedFd)>> {
    fds.iter()
        .map(|(l, fd)| Ok((l.clone(), fd.try_clone()?)))
        .collect()
}

/// After a take-over, tell the old version when our command serves (so it stops its own):
/// at once (`--ready started`), or on READY=1 from the command (`--ready notify`).
fn tell_predecessor_when_serving(child: &mut ChildFds) {
    let Some(signal) = child.ready.take() else {
        return;
    };
    let Some((_, sock)) = child.notify.take() else {
        signal.ready();
        return;
    };
    let limit = child.ready_timeout;
    let _ = std::thread::Builder::new()
        .name("lockctl-ready".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            let mut buf = [0u8; 4096];
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                    say!("lockctl: the command did not send READY=1 within {limit:?} (--ready-timeout); telling the old version anyway");
                    break;
                }
                match sock.recv(&mut buf) {
                    Ok(n) if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {}
                }
            }
            signal.ready();
        });
}

/// Run `command` with `child`'s descriptors and no hand-over server: forward signals,
/// exit with its status.
fn run_without_serving(
    events: &Events,
    child: ChildFds,
    command: &[OsString],
) -> Result<i32, Failure> {
    events.forward_every_signal();
    let pid = crate::serve_child::spawn(command, &child)?;
    events
        .watch_child(pid)
        .map_err(|e| io_failure("start a thread", e))?;
    drop(child);
    Ok(events.wait_child_forever())
}

/// SIGTERM the command and wait for it, at most `--release-grace`. Its status if it exited.
fn release_step(events: &Events, args: &ServeArgs) -> Option<i32> {
    if !events.child_running() {
        return None;
    }
    events.signal_child(nix::sys::signal::Signal::SIGTERM, true);
    let code = events.wait_child(args.release_grace);
    if code.is_none() {
        say!(
            "lockctl: the command still runs {:?} after SIGTERM (--release-grace); handing over anyway",
            args.release_grace
        );
    }
    code
}

/// The state to send: `--state-file`'s content (empty when not given or missing).
///
/// The file may sit in a directory others can write, so it is untrusted: it is opened
/// without following a symlink and without blocking (a fifo would hang serving), must be a
/// regular file, and may hold at most `limit` bytes (`--max-state`, the successor's limit).
fn read_state(args: &ServeArgs, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = &args.state_file else {
        return Ok(Vec::new());
    };
    let p = path.display();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!(
                "the state file {p} is a symbolic link, which is never followed; write the state to a regular file"
            ))
        }
        Err(e) => return Err(format!("cannot read the state file {p}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect the state file {p}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the state file {p} is not a regular file (a fifo, device or directory); write the state to a regular file"
        ));
    }
    let mut state = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut state)
        .map_err(|e| format!("cannot read the state file {p}: {e}"))?;
    if state.len() > limit {
        return Err(format!(
            "the state file {p} holds more than {limit} bytes (--max-state); keep the state smaller or raise --max-state on both versions"
        ));
    }
    Ok(state)
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    Failure::other(EXIT_OTHER, format!("error[io]: cannot {what}: {e}"))
}
