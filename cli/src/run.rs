//! `lockctl run -- CMD`: take the lock, run the command, forward signals, release, and exit
//! with the command's status. Works as a container entrypoint (PID 1 reaps zombies).

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use update_lock::{CancelToken, Error, LockOptions, UpdateLock, WaitControl};

use crate::failure::{Failure, EXIT_OTHER};
use crate::signals::Forwarder;

/// "An update is waiting" while the command runs: one line on stderr, and the signal asked
/// for (once), as soon as the command is running.
struct UpdateNews {
    signal: Option<Signal>,
    child: AtomicI32,
    seen: AtomicBool,
    sent: AtomicBool,
}

impl UpdateNews {
    /// Send the signal if the news came and the command runs, once.
    fn pass_on(&self) {
        let (Some(sig), pid) = (self.signal, self.child.load(Ordering::SeqCst)) else {
            return;
        };
        if pid > 0 && self.seen.load(Ordering::SeqCst) && !self.sent.swap(true, Ordering::SeqCst) {
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) => say!(
                    "lockctl: sent {} to the command (pid {pid}): an update is waiting",
                    sig.as_str()
                ),
                Err(e) => say!(
                    "lockctl: warning: could not send {} to the command (pid {pid}): {e}",
                    sig.as_str()
                ),
            }
        }
    }
}

pub fn run(
    opts: &LockOptions,
    command: &[OsString],
    update_signal: Option<Signal>,
) -> Result<i32, Failure> {
    let news = Arc::new(UpdateNews {
        signal: update_signal,
        child: AtomicI32::new(0),
        seen: AtomicBool::new(false),
        sent: AtomicBool::new(false),
    });
    let told = news.clone();
    let opts = &opts.clone().on_update_waiting(move |w| {
        say!("lockctl: {}", w.describe());
        told.seen.store(true, Ordering::SeqCst);
        told.pass_on();
    });
    let cancel = CancelToken::new()
        .map_err(|e| Failure::other(EXIT_OTHER, format!("cannot create an eventfd: {e}")))?;
    let fwd = Forwarder::start(cancel.clone())
        .map_err(|e| Failure::other(EXIT_OTHER, format!("cannot set up signal forwarding: {e}")))?;
    let mut lock = match UpdateLock::acquire_with(opts, WaitControl::new().cancel_on(cancel)) {
        Ok(lock) => lock,
        Err(Error::Cancelled { path, .. }) => {
            let sig = fwd.early_signal();
            let e = Error::Cancelled {
                path,
                waiting_for: Error::WAITING_FOR_LOCK,
                by: sig.map(|s| s.as_str().to_string()),
            };
            say!("lockctl: error[{}]: {e}", e.code());
            return Ok(128 + sig.map(|s| s as i32).unwrap_or(2));
        }
        Err(e) => return Err(e.into()),
    };
    for r in lock.reclaimed() {
        say!(
            "lockctl: took over {} from a dead holder ({})",
            r.path.display(),
            r.previous.summary()
        );
    }
    if let Some(sig) = fwd.early_signal() {
        // Interrupted right after the lock was taken: do not start the command.
        release(&mut lock);
        return Ok(128 + sig as i32);
    }

    let (program, rest) = command
        .split_first()
        .ok_or_else(|| Failure::other(64, "no command given"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // The command inherits the lock's descriptors, as with flock(1): the flock (what the
    // host OS reboot checks) then lives while the command or its children run, even if
    // lockctl itself is killed, so nobody can take the lock over from a critical section
    // that is still running. The files are still deleted by lockctl when the command exits.
    let lock_fds = lock.raw_fds();
    // SAFETY: the hook only calls pthread_sigmask and fcntl, which are async-signal-safe,
    // on descriptors that are open in the child.
    unsafe {
        cmd.pre_exec(move || {
            crate::signals::unblock_all();
            for &fd in &lock_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            release(&mut lock);
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Err(Failure::other(
                code,
                format!(
                    "cannot run {}: {e}; check the command name and that it is executable (the lock was released)",
                    program.to_string_lossy()
                ),
            ));
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    fwd.set_child(pid);
    news.child.store(pid.as_raw(), Ordering::SeqCst);
    news.pass_on();
    let status = wait_for(pid, child);
    news.child.store(0, Ordering::SeqCst);
    release(&mut lock);
    Ok(status)
}

/// Wait for our command. As PID 1 (a container entrypoint) also reap every orphan that the
/// kernel re-parents to us, so no zombie is left.
fn wait_for(pid: Pid, mut child: std::process::Child) -> i32 {
    if std::process::id() != 1 {
        return match child.wait() {
            Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
            Err(_) => EXIT_OTHER,
        };
    }
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return EXIT_OTHER,
        }
    }
}

fn release(lock: &mut UpdateLock) {
    if let Err(e) = lock.release() {
        say!("lockctl: warning[{}]: {e}", e.code());
    }
}
