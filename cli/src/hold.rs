//! `lockctl acquire` / `lockctl release`: a lock that spans several shell commands.
//!
//! `acquire` forks a small holder process that takes the lock (reporting success or the
//! error back through a pipe), then detaches and keeps the lock files and their flocks until
//! `release` sends it SIGTERM. If the holder is killed, its flocks vanish with it, so the
//! lock is reported stale and can be reclaimed (`release` clears it too).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::{fork, getppid, pipe2, setsid, ForkResult, Pid};
use update_lock::{
    status, ErrorCode, HandoverOptions, HolderRecord, LockOptions, LockState, UpdateLock,
};

use crate::failure::{Failure, EXIT_OTHER};

/// The program name `lockctl acquire` writes in its holder record; `release` only signals
/// holders with this name.
pub const HOLDER_PROGRAM: &str = "lockctl acquire";

/// How long `release` waits for the holder to let go.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

pub fn acquire(opts: &LockOptions) -> Result<i32, Failure> {
    let opts = opts.clone().program(HOLDER_PROGRAM);
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Failure::other(EXIT_OTHER, format!("cannot create a pipe: {e}")))?;
    let parent = nix::unistd::getpid();
    // SAFETY: lockctl is single-threaded here (no thread has been started yet).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(write_end);
            let mut msg = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut msg);
            let paths: Vec<String> = opts
                .lock_paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            parent_report(&msg, &paths)
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            holder(&opts, parent, write_end)
        }
        Err(e) => Err(Failure::other(
            EXIT_OTHER,
            format!("cannot start the holder process: {e}"),
        )),
    }
}

fn parent_report(msg: &str, paths: &[String]) -> Result<i32, Failure> {
    let mut lines = msg.lines();
    match lines.next() {
        Some("ok") => {
            for l in lines {
                say!("lockctl: {l}");
            }
            Ok(0)
        }
        Some(head) if head.starts_with("err ") => {
            let code = head[4..].trim().parse().unwrap_or(EXIT_OTHER);
            Err(Failure::other(code, lines.collect::<Vec<_>>().join(" ")))
        }
        _ => Err(Failure::other(
            EXIT_OTHER,
            format!(
                "the holder process died before it could take the lock on {}; run again, and check `lockctl status` for what stands there",
                paths.join(", ")
            ),
        )),
    }
}

/// The holder process: take the lock, report, detach, hold until SIGTERM/SIGINT/SIGHUP.
fn holder(opts: &LockOptions, parent: Pid, report: OwnedFd) -> ! {
    // Die with `lockctl acquire` while still waiting (Ctrl-C, `timeout`), so a lock is never
    // taken after nobody is left to report it.
    // SAFETY: plain prctl call.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if getppid() != parent {
        std::process::exit(EXIT_OTHER);
    }
    let mut stop = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        stop.add(s);
    }
    let _ = stop.thread_block();
    detach_stdio();
    let mut out = std::fs::File::from(report);
    let mut lock = match UpdateLock::acquire(opts) {
        Ok(lock) => lock,
        Err(e) => {
            let _ = write!(
                out,
                "err {}\nerror[{}]: {e}\n",
                e.code().exit_status(),
                e.code()
            );
            std::process::exit(e.code().exit_status());
        }
    };
    // SAFETY: plain prctl call.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    let _ = setsid();
    let _ = std::env::set_current_dir("/");
    let mut msg = String::from("ok\n");
    for r in lock.reclaimed() {
        msg.push_str(&format!(
            "took over {} from a dead holder ({})\n",
            r.path.display(),
            r.previous.summary()
        ));
    }
    let _ = out.write_all(msg.as_bytes());
    drop(out);
    let _ = stop.wait();
    let _ = lock.release();
    std::process::exit(0);
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

pub fn release(opts: &LockOptions) -> Result<i32, Failure> {
    let report = status(opts, &HandoverOptions::new());
    let mut holders: Vec<HolderRecord> = Vec::new();
    let mut stale = false;
    for l in &report.locks {
        match (l.state, &l.holder) {
            (LockState::Free, _) => {}
            (LockState::Stale, _) => stale = true,
            (LockState::HeldByApp, Some(r)) if r.program == HOLDER_PROGRAM => {
                if !r.same_pid_namespace {
                    return Err(Failure::other(
                        ErrorCode::Held.exit_status(),
                        format!(
                            "{} is held by `lockctl acquire` in another container (pid namespace {}); run `lockctl release` in that container",
                            l.path.display(),
                            r.pid_ns.map(|n| n.to_string()).unwrap_or_default()
                        ),
                    ));
                }
                if !holders.iter().any(|h| h.pid == r.pid) {
                    holders.push(r.clone());
                }
            }
            _ => {
                return Err(Failure::other(
                    ErrorCode::Held.exit_status(),
                    format!(
                        "{}: not released: {}; `lockctl release` only ends locks taken by `lockctl acquire`",
                        l.path.display(),
                        l.message
                    ),
                ))
            }
        }
    }
    for h in &holders {
        end_holder(h)?;
    }
    if stale {
        // Take the dead holder's lock over (race-free, in core) and let it go at once.
        // If someone else took it in between, it is theirs now: nothing to do.
        match UpdateLock::try_acquire(&opts.clone().reclaim_stale(true)) {
            Ok(mut lock) => {
                let _ = lock.release();
            }
            Err(e) if e.code() == ErrorCode::Held => {}
            Err(e) => return Err(e.into()),
        }
    }
    if holders.is_empty() && !stale {
        say!("lockctl: nothing to release: the lock is not held");
        return Ok(0);
    }
    // Right after this a waiting app, or the Supervisor, may well take the lock: that is
    // the point of releasing it, so what stands at the paths afterwards is not checked.
    let paths: Vec<String> = report
        .locks
        .iter()
        .filter(|l| l.state != LockState::Free)
        .map(|l| l.path.display().to_string())
        .collect();
    say!("lockctl: released {}", paths.join(", "));
    Ok(0)
}

/// Ask the holder to release (SIGTERM) and wait until it has exited.
fn end_holder(record: &HolderRecord) -> Result<(), Failure> {
    let pid = Pid::from_raw(record.pid);
    if !record.is_running() {
        return Ok(()); // Gone already (or its pid was reused).
    }
    let pidfd = open_pidfd(pid);
    match kill(pid, Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => {
            return Err(Failure::other(
                ErrorCode::Permission.exit_status(),
                format!("cannot signal the lock holder (pid {pid}): {e}; run `lockctl release` as the user that ran `lockctl acquire`, or as root"),
            ))
        }
    }
    match pidfd {
        // Readable once the process has exited (reaped or not).
        Some(fd) => {
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&fd),
                PollFlags::POLLIN,
            )];
            let ms =
                PollTimeout::try_from(RELEASE_WAIT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, ms);
        }
        // Kernels before 5.3: look every few milliseconds.
        None => {
            let deadline = std::time::Instant::now() + RELEASE_WAIT;
            while record.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    if record.is_running() {
        return Err(Failure::other(
            EXIT_OTHER,
            format!(
                "the lock holder (pid {pid}) did not exit within {} s; check `lockctl status`",
                RELEASE_WAIT.as_secs()
            ),
        ));
    }
    Ok(())
}

fn open_pidfd(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
