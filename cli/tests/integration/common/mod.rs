//! Helpers shared by the `lockctl` integration tests: the real binary, the real readers of a
//! lock (procmail's `lockfile` as uid 65534 for the Supervisor, `flock -nx` for the host OS
//! reboot), and child processes that we synchronise with through lines on a pipe and
//! process exits, never through sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The binary under test.
pub const LOCKCTL: &str = env!("CARGO_BIN_EXE_lockctl");

/// How long any single step may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(15);

/// Environment variables that would change lockctl's default paths.
const PATH_VARS: [&str; 4] = [
    "BALENA_APP_LOCK_PATH",
    "RESIN_APP_LOCK_PATH",
    "BALENA_SERVICE_HANDOVER_COMPLETE_PATH",
    "RESIN_SERVICE_KILL_ME_PATH",
];

/// `lockctl rehearse` runs the companion binary `lockctl-rehearse` from beside lockctl.
/// Cargo builds it with `cargo build` (the test command does, before the tests), not for
/// this package's tests: fail at once, saying so, when it is missing or older than its
/// sources, rather than test a stale rehearsal.
pub fn require_rehearse_binary() {
    let bin = Path::new(LOCKCTL).with_file_name("lockctl-rehearse");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build it first: cargo build -p lockctl-rehearse (scripts/test.sh does)",
                bin.display()
            )
        });
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rehearse/src");
    for entry in std::fs::read_dir(&sources).expect("rehearse/src") {
        let path = entry.expect("rehearse/src entry").path();
        let changed = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap();
        assert!(
            changed <= built,
            "{} is older than {}: rebuild it: cargo build -p lockctl-rehearse (scripts/test.sh does)",
            bin.display(),
            path.display()
        );
    }
}

/// A `lockctl` command with a clean environment (no path variables set by the caller).
pub fn lockctl() -> Command {
    command(LOCKCTL)
}

/// Any command, with the same clean environment. The yield to updates is off: tests probe
/// with the Supervisor's real `lockfile`, and each probe of a held lock is an attempt a
/// later acquisition would yield to (the yield has its own tests, which turn it back on).
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    for v in PATH_VARS {
        c.env_remove(v);
    }
    c.env(update_lock::YIELD_TO_UPDATES_ENV, "0");
    c
}

/// A per-test service directory with the Supervisor's mode 1777 (so `lockfile` as uid 65534
/// and a uid-1000 app can create files in it, as on a device).
pub fn service_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lockctl-test.")
        .tempdir_in("/tmp")
        .expect("create a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod 1777");
    dir
}

/// Run a command to completion (stdin closed) within [`STEP`]; return (status, stdout,
/// stderr).
pub fn output(cmd: &mut Command) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn_with(cmd, false);
    let st = p.wait();
    let out = p.rest_of_stdout();
    let err = p.stderr();
    (st, out, err)
}

/// Exit code of a finished command, panicking (with its stderr) when it died of a signal.
pub fn code(st: ExitStatus) -> i32 {
    st.code()
        .unwrap_or_else(|| panic!("process died of a signal: {st:?}"))
}

/// The Supervisor taking its lock: `lockfile -r 0 PATH` run as uid 65534; its exit code
/// (0 taken, 73 "updates locked") and stderr. A lock it takes is left in place.
pub fn supervisor_lockfile(path: &Path) -> (i32, String) {
    let (st, _, err) = output(
        command("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "lockfile",
                "-r",
                "0",
            ])
            .arg(path),
    );
    (code(st), err)
}

/// What the Supervisor sees: `lockfile -r 0 PATH` run as uid 65534. 73 means "updates
/// locked". When it succeeds it has created the lock itself, which we remove again.
pub fn supervisor_probe(path: &Path) -> i32 {
    let (c, err) = supervisor_lockfile(path);
    if c == 0 {
        std::fs::remove_file(path).expect("remove the probe's own lock file");
    } else {
        assert_eq!(c, 73, "lockfile failed for another reason: {err}");
    }
    c
}

/// What the host OS update reboot sees: `flock -nx PATH true` on a fresh descriptor; 1 means
/// someone holds the flock. flock(1) creates a missing file: removed again afterwards.
pub fn reboot_probe(path: &Path) -> i32 {
    let existed = std::fs::symlink_metadata(path).is_ok();
    let (st, _, err) = output(command("flock").arg("-nx").arg(path).arg("true"));
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    let c = code(st);
    assert!(
        c == 0 || c == 1,
        "flock failed for another reason ({c}): {err}"
    );
    c
}

/// Both readers see the lock as held.
pub fn assert_held(path: &Path) {
    assert_eq!(
        supervisor_probe(path),
        73,
        "the Supervisor would not see {} as locked",
        path.display()
    );
    assert_eq!(
        reboot_probe(path),
        1,
        "the host OS reboot would not see {} as locked",
        path.display()
    );
}

/// Both readers see the lock as free (and nothing was left at the path).
pub fn assert_free(path: &Path) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{} was left behind",
        path.display()
    );
    assert_eq!(
        supervisor_probe(path),
        0,
        "Supervisor blocked on {}",
        path.display()
    );
    assert_eq!(
        reboot_probe(path),
        0,
        "reboot blocked on {}",
        path.display()
    );
}

/// Names in a directory, sorted, but the `update-waiting` note a holder leaves when it sees
/// the Supervisor's attempt (tests that probe with the Supervisor's `lockfile` make one).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != update_lock::UPDATE_WAITING_NOTE_NAME)
        .collect();
    v.sort();
    v
}

/// The `pid=` line of a holder record.
pub fn record_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).expect("read the lock file");
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid= line in {}: {text:?}", path.display()))
        .parse()
        .expect("numeric pid")
}

/// `lockctl status --json` for the given lock paths (no hand-over paths unless given).
pub fn status_json(paths: &[&Path], handover: &[&Path]) -> serde_json::Value {
    let mut c = lockctl();
    c.arg("status").arg("--json");
    for p in paths {
        c.arg("--path").arg(p);
    }
    for p in handover {
        c.arg("--handover-path").arg(p);
    }
    let (st, out, err) = output(&mut c);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"));
    // The exit status says what the report says: 0 free, 73 held, 74 could not look.
    let locks = report["locks"].as_array().expect("locks");
    let want = if locks.iter().any(|l| l["state"] == "unknown") {
        74
    } else if locks.iter().any(|l| l["blocks_app_updates"] == true) {
        73
    } else {
        0
    };
    assert_eq!(code(st), want, "status exit status for {report}: {err}");
    report
}

/// A pidfd: readable once the process has exited. Works for processes that are not our
/// children (a detached `lockctl acquire` holder).
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Wait until the process behind `fd` has exited (its descriptors, and so its flocks, are
/// gone by then).
pub fn wait_pidfd(fd: &OwnedFd, what: &str) {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(STEP.as_millis() as i32).unwrap();
    loop {
        match poll(&mut fds, ms) {
            Ok(0) => panic!("{what} did not exit within {STEP:?}"),
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll on pidfd: {e}"),
        }
    }
}

/// SIGKILL a process that is not our child and wait until it is gone.
pub fn kill_and_wait(pid: i32, what: &str) {
    let fd = pidfd(pid).unwrap_or_else(|| panic!("{what} (pid {pid}) is not running"));
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    wait_pidfd(&fd, what);
}

/// Direct children of `pid` (from the host's /proc).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: i32 = after.split(' ').nth(1).unwrap().parse().unwrap();
            if ppid == pid {
                v.push(p);
            }
        }
    }
    v
}

/// Whether `pid` has an inotify descriptor open: `lockctl` creates its watch only after a
/// first attempt found the lock held, so this is the observable state "it is waiting".
fn has_inotify(pid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    rd.flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify")
    })
}

/// Wait until `pid` is blocked waiting for a lock (see [`has_inotify`]). This looks at a
/// state of the process, it does not guess a duration: the loop ends as soon as the state
/// is reached, and fails if the process exits or the state never comes.
pub fn wait_until_waiting(pid: i32) {
    let deadline = Instant::now() + STEP;
    loop {
        if has_inotify(pid) {
            return;
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} exited instead of waiting"
        );
        assert!(
            Instant::now() < deadline,
            "process {pid} never started waiting"
        );
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running child with its stdout read line by line on a thread (so every read has a
/// deadline) and its stderr collected. Killed (SIGKILL) when dropped still running.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawn with stdin, stdout and stderr on pipes.
    pub fn spawn(cmd: &mut Command) -> Proc {
        Self::spawn_with(cmd, true)
    }

    fn spawn_with(cmd: &mut Command, keep_stdin: bool) -> Proc {
        cmd.stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: erx,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line on stdout; fails the test at EOF or after [`STEP`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(STEP) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("no line on stdout within {STEP:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let st = self.wait();
                panic!(
                    "stdout closed before the expected line; exit {st:?}, stderr: {}",
                    self.stderr()
                )
            }
        }
    }

    /// Read lines until one equals `want` (returning the lines before it).
    pub fn expect_line(&mut self, want: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let l = self.line();
            if l == want {
                return before;
            }
            before.push(l);
        }
    }

    /// Write a line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the child's stdin");
        stdin.flush().unwrap();
    }

    /// Close the child's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("send signal");
    }

    /// Wait for the exit (at most [`STEP`]).
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let fd = pidfd(self.pid());
        if let Some(fd) = fd {
            wait_pidfd(&fd, "the child");
        }
        let st = self.child.wait().expect("wait");
        self.status = Some(st);
        st
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(st) => {
                self.status = Some(st);
                true
            }
            None => false,
        }
    }

    /// All that is left on stdout (after the child exited and every writer closed it).
    pub fn rest_of_stdout(&mut self) -> String {
        let mut s = String::new();
        loop {
            match self.lines.recv_timeout(STEP) {
                Ok(l) => {
                    s.push_str(&l);
                    s.push('\n');
                }
                Err(RecvTimeoutError::Disconnected) => return s,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("stdout still open {STEP:?} after the exit (a descendant kept it)")
                }
            }
        }
    }

    /// Everything written on stderr (after the child exited and every writer closed it).
    pub fn stderr(&mut self) -> String {
        self.stderr
            .recv_timeout(STEP)
            .unwrap_or_else(|_| "<stderr still open or already taken>".into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills the detached `lockctl acquire` holder named in the lock file at `path` (if any is
/// still running) when a test ends, even by a panic, so no holder outlives its test.
pub struct HolderGuard(pub PathBuf);

impl Drop for HolderGuard {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.0) else {
            return;
        };
        let Some(pid) = text
            .lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            return;
        };
        let is_lockctl = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == "lockctl");
        if let (true, Some(fd)) = (is_lockctl, pidfd(pid)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
        }
    }
}

/// A path in `dir`.
pub fn at(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// `lockctl run --path P... -- sh -c SCRIPT`, started (not waited for).
pub fn run_under_lock(paths: &[&Path], script: &str) -> Proc {
    let mut c = lockctl();
    c.arg("run");
    for p in paths {
        c.arg("--path").arg(p);
    }
    Proc::spawn(c.args(["--", "sh", "-c", script]))
}
