//! lockctl keeps working when nobody reads its output any more (a closed pipe): a lost log
//! line must not turn into a panic (exit 101) in a process that holds or hands over a lock.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use crate::common::*;

/// A pipe whose read end is already closed: writing to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two new descriptors that we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

#[test]
fn a_closed_stderr_or_stdout_does_not_crash_lockctl() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("updates.lock");
    // "nothing to release" goes to stderr; the exit status stays the documented one.
    let st = Command::new(LOCKCTL)
        .args(["release", "--path"])
        .arg(&lock)
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    // A held lock reported on a closed stdout (`lockctl status | head -0`).
    let st = Command::new(LOCKCTL)
        .args(["run", "--path"])
        .arg(&lock)
        .args(["--", "true"])
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let st = Command::new(LOCKCTL)
        .args(["handover", "complete", "--path"])
        .arg(dir.path().join("handover-complete"))
        .stdout(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(dir.path().join("handover-complete").exists());
}
