//! `lockctl handover take -- CMD`: take over from the old version (or start fresh), then
//! exec CMD with what was inherited in socket-activation form.

use std::ffi::OsString;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::stat::{fstat, SFlag};
use serde_json::json;
use update_lock::{take_over, HandoverFailure};

use crate::failure::{Failure, EXIT_USAGE};
use crate::handover_args::{duplicate, ReadyWhen, TakeArgs};
use crate::listen_fds::{self, ChildFds, FIRST_FD};
use crate::tcp_listen;

/// Take over (or not) and set up the descriptors the command gets. Warnings (the
/// handover-complete signal could not be written) go to stderr.
pub fn take(args: &TakeArgs) -> Result<(ChildFds, serde_json::Value), Failure> {
    if let Some(l) = duplicate(args.listen.iter().map(|s| s.label.as_str())) {
        return Err(Failure::other(
            EXIT_USAGE,
            format!(
                "error[usage]: --listen label '{l}' is given twice; every label must be unique"
            ),
        ));
    }
    let opts = args.options();
    let socket = opts.socket_path();
    let mut fresh_said = false;
    let mut ready = None;
    let got = match take_over(&opts) {
        Ok(got) => got,
        // Something that is not our old version stands at the socket path: it must never
        // keep the app from starting. Start fresh and say what to do.
        Err(e) if starts_fresh_after(&e) => {
            say!(
                "lockctl: warning[{}]: no hand-over: {e}; starting fresh",
                e.code()
            );
            fresh_said = true;
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut report = json!({
        "schema": 1,
        "socket": socket,
        "handover": if got.is_some() { "taken" } else { "none" },
        "predecessor": null,
        "state_bytes": 0,
        "state_fd": null,
        "signalled": [],
        "signal_error": null,
    });
    let (taken, inherited) = match got {
        None => {
            if !fresh_said {
                say!(
                    "lockctl: no predecessor serves hand-over on {}; starting fresh",
                    socket.display()
                );
            }
            (None, Vec::new())
        }
        Some(mut inh) => {
            ready = inh.ready_signal();
            if let Some(e) = inh.signal_error() {
                say!(
                    "lockctl: warning[{}]: took over, but the handover-complete signal failed: {e}",
                    e.code()
                );
                report["signal_error"] = json!(e.to_string());
            }
            report["signalled"] = json!(inh.signalled());
            let (peer, state, fds) = inh.into_parts();
            say!(
                "lockctl: took over from {}: {} descriptor(s), {} byte(s) of state",
                peer.describe(),
                fds.len(),
                state.len()
            );
            report["predecessor"] = json!(peer);
            report["state_bytes"] = json!(state.len());
            let memfd = listen_fds::state_memfd(&state).map_err(|e| {
                Failure::other(
                    crate::failure::EXIT_OTHER,
                    format!("error[io]: cannot create a memfd for the hand-over state: {e}"),
                )
            })?;
            let fds: Vec<(String, OwnedFd)> = fds.into_iter().map(|f| f.into_parts()).collect();
            (Some((peer, memfd)), fds)
        }
    };
    let fds = tcp_listen::arrange(&args.listen, inherited, taken.is_some(), args.backlog)?;
    let notify = match (&ready, args.ready) {
        (Some(_), ReadyWhen::Notify) => Some(notify_socket().map_err(|e| {
            Failure::other(
                crate::failure::EXIT_OTHER,
                format!("error[io]: cannot create the NOTIFY_SOCKET for --ready notify: {e}"),
            )
        })?),
        _ => None,
    };
    let child = ChildFds {
        fds,
        taken,
        report_handover: true,
        ready,
        notify,
        ready_timeout: args.ready_timeout,
    };
    report["state_fd"] = json!(child.state_fd_number());
    report["fds"] = child
        .fds
        .iter()
        .enumerate()
        .map(|(i, (label, fd))| {
            json!({"label": label, "fd": FIRST_FD + i as i32, "socket": is_socket(fd)})
        })
        .collect();
    Ok((child, report))
}

/// A datagram socket for sd_notify's READY=1, at a fresh abstract address: the
/// `NOTIFY_SOCKET` value (`@name`) and the socket.
fn notify_socket() -> std::io::Result<(String, std::os::unix::net::UnixDatagram)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "update-lock-notify-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    Ok((format!("@{name}"), sock))
}

/// Failures after which the app starts as on a first start: the socket path is blocked by
/// something that is not a live hand-over server (a file, fifo, symlink, another user's
/// dead socket), or the process serving there is not a peer we may take from (another
/// uid: possibly an impostor). A real old version of ours that stalls or refuses is not
/// among them: then nothing starts, as the old version still has the resources.
fn starts_fresh_after(e: &update_lock::Error) -> bool {
    matches!(
        e.handover_failure(),
        Some(HandoverFailure::Blocked) | Some(HandoverFailure::Uid)
    )
}

/// Whether a descriptor is a socket.
pub fn is_socket(fd: &OwnedFd) -> bool {
    fstat(fd.as_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
}

/// `take`: take over, then replace lockctl by the command (exec keeps the pid, so
/// LISTEN_PID is ours).
pub fn run(args: &TakeArgs, json_out: bool, command: &[OsString]) -> Result<i32, Failure> {
    let (child, report) = take(args)?;
    if json_out {
        out!("{report}");
    }
    Err(exec(child, command))
}

/// Exec `command` with `child`'s descriptors at 3.. . Returns only on failure.
fn exec(child: ChildFds, command: &[OsString]) -> Failure {
    let Some((program, rest)) = command.split_first() else {
        return Failure::other(EXIT_USAGE, "error[usage]: no command given after --");
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    child.apply_env(&mut cmd);
    if !child.fds.is_empty() {
        cmd.env("LISTEN_PID", std::process::id().to_string());
    }
    let sources = child.sources();
    // The originals stay open (close-on-exec) until exec; placing may overwrite some of
    // their numbers, so they must never be closed by a drop afterwards.
    for (_, fd) in child.fds {
        let _ = fd.into_raw_fd();
    }
    if let Some((_, fd)) = child.taken {
        let _ = fd.into_raw_fd();
    }
    if let Err(e) = listen_fds::place(&sources) {
        return Failure::other(
            crate::failure::EXIT_OTHER,
            format!("error[io]: cannot place the descriptors at 3..: {e}"),
        );
    }
    let e = cmd.exec();
    exec_failure(program, &e)
}

/// The failure for a command that could not be executed: 127 not found, 126 otherwise.
pub fn exec_failure(program: &std::ffi::OsStr, e: &std::io::Error) -> Failure {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Failure::other(
        code,
        format!(
            "cannot run {}: {e}; check the command name and that it is executable",
            program.to_string_lossy()
        ),
    )
}
