//! `lockctl acquire` / `lockctl release`: a lock that spans several shell commands.
//!
//! `acquire` forks a small holder process that takes the lock (reporting success or the
//! error back through a pipe), then detaches and keeps the lock files and their flocks until
//! `release` sends it SIGTERM. If the holder is killed, its flocks vanish with it, so the
//! lock is reported stale and can be reclaimed (`release` clears it too).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, getppid, pipe2, setsid, ForkResult, Pid};
use update_lock::{
    lost_lock_holders, prove_lock_holder, shared_lock_holders, status, ErrorCode, HandoverOptions,
    LockOptions, LockState, ProvenHolder, UpdateLock,
};

use crate::failure::{Failure, EXIT_LOST, EXIT_OTHER, EXIT_UNKNOWN, EXIT_UNPROVEN};

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
    if opts.is_shared() {
        msg.push_str(&format!(
            "holding it shared in process {} (`lockctl release --pid {}` ends this hold)\n",
            std::process::id(),
            std::process::id()
        ));
    }
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

/// `lockctl release`: end the `lockctl acquire` holder of these paths.
///
/// Nothing is signalled that is not proven to be that holder (see
/// [`update_lock::prove_lock_holder`]): a holder record is only a hint. When the lock was
/// taken over (the Supervisor's override), the holder that still runs on the deleted file
/// is found and ended, and the new owner's file is left alone.
pub fn release(opts: &LockOptions, only: Option<i32>) -> Result<i32, Failure> {
    let report = status(opts, &HandoverOptions::new());
    if let Some(l) = report.locks.iter().find(|l| l.state == LockState::Unknown) {
        return Err(Failure::other(
            EXIT_UNKNOWN,
            format!(
                "{}: could not check the lock ({}); nothing was released, signalled or deleted: fix that and run `lockctl release` again",
                l.path.display(),
                l.error.as_deref().unwrap_or("unknown error")
            ),
        ));
    }
    let mut holders: Vec<ProvenHolder> = Vec::new();
    let mut stale = false;
    let mut lost: Vec<String> = Vec::new();
    for l in &report.locks {
        let mut ours = if l.state == LockState::HeldByApp {
            shared_acquire_holders(&l.path, only)?
        } else {
            Vec::new()
        };
        match (l.state, &l.holder) {
            (LockState::Free, _) => {
                // Deleted under a holder of ours (and nobody took it since)?
                let gone = lost_acquire_holders(&l.path);
                if !gone.is_empty() {
                    lost.push(format!("{} was deleted by someone else", l.path.display()));
                    add_holders(&mut holders, gone);
                }
            }
            (LockState::Stale, _) => stale = true,
            // Our holders among the processes that hold its flock (shared holds: the record
            // names only the holder that created the file).
            (LockState::HeldByApp, _) if !ours.is_empty() => {
                add_holders(&mut holders, std::mem::take(&mut ours));
            }
            // `--pid` that is not the exclusive holder the record names (which the next arm
            // proves and ends, as without `--pid`).
            (LockState::HeldByApp, r)
                if only.is_some()
                    && !r
                        .as_ref()
                        .is_some_and(|r| r.program == HOLDER_PROGRAM && only == Some(r.pid)) =>
            {
                return Err(Failure::other(
                    crate::failure::EXIT_USAGE,
                    format!(
                        "error[usage]: no `lockctl acquire` process with pid {} holds {}; `lockctl status` shows who does",
                        only.unwrap_or_default(),
                        l.path.display()
                    ),
                ));
            }
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
                add_holders(&mut holders, vec![prove_acquire_holder(&l.path)?]);
            }
            _ => {
                // Not ours now. Was it ours before? A holder of ours that still runs on a
                // deleted file in this directory lost it to whoever stands there now.
                let gone = lost_acquire_holders(&l.path);
                if gone.is_empty() {
                    return Err(Failure::other(
                        ErrorCode::Held.exit_status(),
                        format!(
                            "{}: not released: {}; `lockctl release` only ends locks taken by `lockctl acquire`",
                            l.path.display(),
                            l.message
                        ),
                    ));
                }
                lost.push(format!("{} is now {}", l.path.display(), l.message));
                add_holders(&mut holders, gone);
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
    if !lost.is_empty() {
        let pids: Vec<String> = holders.iter().map(|h| h.pid().to_string()).collect();
        return Err(Failure::other(
            EXIT_LOST,
            format!(
                "the lock had been lost before release: {}; ended the `lockctl acquire` holder (pid {}) and left the new owner's file alone; an update may be under way: bring the work to a safe stop, then acquire again",
                lost.join("; "),
                pids.join(", ")
            ),
        ));
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

/// The `lockctl acquire --shared` processes that hold a shared flock on the lock file at
/// `path` (proven by the kernel's tables, pinned by pidfds): `only` that pid when given. Several without
/// `--pid` is a usage error that lists them: each `acquire --shared` is one hold.
fn shared_acquire_holders(
    path: &std::path::Path,
    only: Option<i32>,
) -> Result<Vec<ProvenHolder>, Failure> {
    let mut found: Vec<ProvenHolder> = shared_lock_holders(path)
        .unwrap_or_default()
        .into_iter()
        .filter(is_acquire_holder)
        .collect();
    if let Some(pid) = only {
        found.retain(|h| h.pid() == pid);
    }
    if found.len() > 1 {
        let pids: Vec<String> = found.iter().map(|h| h.pid().to_string()).collect();
        return Err(Failure::other(
            crate::failure::EXIT_USAGE,
            format!(
                "error[usage]: {} is held by {} `lockctl acquire --shared` holders (pids {}); say which hold to end with `lockctl release --pid PID`",
                path.display(),
                found.len(),
                pids.join(", ")
            ),
        ));
    }
    Ok(found)
}

/// `lockctl acquire` holders that still hold flock on a deleted file of the directory of
/// `path`: they lost their lock to an override.
fn lost_acquire_holders(path: &std::path::Path) -> Vec<ProvenHolder> {
    lost_lock_holders(path)
        .into_iter()
        .filter(is_acquire_holder)
        .collect()
}

fn add_holders(holders: &mut Vec<ProvenHolder>, more: Vec<ProvenHolder>) {
    for h in more {
        if !holders.iter().any(|k| k.pid() == h.pid()) {
            holders.push(h);
        }
    }
}

/// Whether a proven holder is a `lockctl acquire` holder process: this same executable,
/// started as `lockctl acquire`.
fn is_acquire_holder(h: &ProvenHolder) -> bool {
    h.runs_same_executable() && h.command_line().get(1).map(String::as_str) == Some("acquire")
}

/// Prove that the record at `path` names a live `lockctl acquire` holder of it.
fn prove_acquire_holder(path: &std::path::Path) -> Result<ProvenHolder, Failure> {
    let unproven = |why: String| {
        Failure::other(
            EXIT_UNPROVEN,
            format!(
                "{}: not released: the holder record names a `lockctl acquire` process, but {why}; a record is only a hint and anyone who may write the directory can write one, so nothing was signalled or deleted: look at `lockctl status` and end the real holder yourself",
                path.display()
            ),
        )
    };
    let (proven, _) = prove_lock_holder(path).map_err(|u| unproven(u.to_string()))?;
    if !is_acquire_holder(&proven) {
        return Err(unproven(format!(
            "pid {} is not a `lockctl acquire` holder (another program holds the lock)",
            proven.pid()
        )));
    }
    Ok(proven)
}

/// Ask the holder to release (SIGTERM through its pidfd) and wait until it has exited.
fn end_holder(h: &ProvenHolder) -> Result<(), Failure> {
    match h.signal_and_wait(libc::SIGTERM, RELEASE_WAIT) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::other(
            EXIT_OTHER,
            format!(
                "the lock holder (pid {}) did not exit within {} s; check `lockctl status`",
                h.pid(),
                RELEASE_WAIT.as_secs()
            ),
        )),
        Err(e) => Err(Failure::other(
            ErrorCode::Permission.exit_status(),
            format!(
                "cannot signal the lock holder (pid {}): {e}; run `lockctl release` as the user that ran `lockctl acquire`, or as root",
                h.pid()
            ),
        )),
    }
}
