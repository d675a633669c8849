//! Starting the command of `serve` / `run` with its descriptors at 3.. .
//!
//! LISTEN_PID must be the pid of the process that runs the command, which is only known
//! after fork. So the command is started through lockctl itself (`lockctl handover
//! __exec --place N,M,... -- CMD`, a hidden helper): the child inherits the descriptors
//! where they are (only their close-on-exec flag is cleared between fork and exec), and the
//! helper, a fresh single-threaded process, moves them to 3.., sets LISTEN_PID to its own
//! pid and execs CMD, which keeps that pid.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::Pid;

use crate::failure::{Failure, EXIT_OTHER, EXIT_USAGE};
use crate::handover_take::exec_failure;
use crate::listen_fds::{self, ChildFds};

/// Start `command` with `fds`; its pid.
pub fn spawn(command: &[OsString], fds: &ChildFds) -> Result<Pid, Failure> {
    let sources = fds.sources();
    let list: Vec<String> = sources.iter().map(|n| n.to_string()).collect();
    // /proc/self/exe, opened by the child itself: lockctl's own binary, even if it was
    // replaced or removed on disk meanwhile.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("lockctl")
        .args(["handover", "__exec", "--place", &list.join(","), "--"])
        .args(command);
    fds.apply_env(&mut cmd);
    let keep = sources.clone();
    // SAFETY: only pthread_sigmask and fcntl, both async-signal-safe, on descriptors open
    // in the child; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            crate::signals::unblock_all();
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let child = cmd.spawn().map_err(|e| {
        Failure::other(
            EXIT_OTHER,
            format!("cannot start {}: {e}", listen_fds::show(command)),
        )
    })?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// The hidden helper: place the descriptors at 3.., set LISTEN_PID, exec the command.
pub fn exec_helper(place: &str, command: &[OsString]) -> Failure {
    let sources: Result<Vec<RawFd>, _> = place
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let Ok(sources) = sources else {
        return Failure::other(EXIT_USAGE, "error[usage]: bad --place list");
    };
    let Some((program, rest)) = command.split_first() else {
        return Failure::other(EXIT_USAGE, "error[usage]: no command given after --");
    };
    // The inherited copies must not reach the command at their old numbers.
    for &fd in &sources {
        // SAFETY: fcntl on a descriptor number; a failure only leaves it open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    if let Err(e) = listen_fds::place(&sources) {
        return Failure::other(
            EXIT_OTHER,
            format!("error[io]: cannot place the descriptors at 3..: {e}"),
        );
    }
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if std::env::var_os("LISTEN_FDS").is_some() {
        cmd.env("LISTEN_PID", std::process::id().to_string());
    }
    let e = cmd.exec();
    exec_failure(program, &e)
}
