//! Shared helpers for the multi-process integration tests.
//!
//! Child processes are this same test binary re-executed with `UL_CHILD_ROLE` set: it runs
//! only the ignored `child_entry` test, which dispatches to [`child_entry`]. A child talks
//! to the parent through lines `UL:<message>` on its stdout and takes orders on its stdin,
//! so every step is synchronised by a real signal (a line read, a pipe closed), never by
//! sleeping.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use update_lock::{
    Error, ErrorCode, HandoverOptions, LockOptions, StatusReport, UpdateLock, WaitControl,
};

/// The uid the Supervisor runs `lockfile` as.
pub const NOBODY: u32 = 65534;
/// An ordinary app user.
pub const APP_UID: u32 = 1000;

const ROLE_ENV: &str = "UL_CHILD_ROLE";
const ARGS_ENV: &str = "UL_CHILD_ARGS";
const MARK: &str = "UL:";

/// How long the parent waits for any one line from a child before failing the test (a
/// child that hangs becomes a test failure, not a hung test run).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for acquisitions that must succeed (a broken lock fails with Timeout, not hangs).
pub const LONG: Duration = Duration::from_secs(30);

/// Fail loudly unless we run as root.
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "these tests must run as root (CI does): they run the Supervisor's `lockfile` as uid 65534 \
         and children as other uids"
    );
}

/// A fresh temporary directory, mode 1777 like a service directory on a device (so that
/// uid 65534 and uid 1000 can use it too).
pub fn tmpdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("ul-test-")
        .tempdir()
        .expect("create a temp dir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    d
}

/// A sub-directory of `base`, mode 1777.
pub fn subdir(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    fs::create_dir(&p).expect("mkdir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    p
}

/// The default two-path lock set (`updates.lock` and `resin-updates.lock`) in two
/// directories under `base`, like `/tmp/balena` and `/tmp/resin`.
pub fn two_paths(base: &Path) -> Vec<PathBuf> {
    vec![
        subdir(base, "balena").join("updates.lock"),
        subdir(base, "resin").join("resin-updates.lock"),
    ]
}

/// Options for `paths`, without the yield to updates: tests probe with the Supervisor's
/// real `lockfile`, and each probe of a held lock is an attempt a later acquisition would
/// yield to (the yield has its own tests, in `update_waiting`).
pub fn opts<P: AsRef<Path>>(paths: &[P]) -> LockOptions {
    LockOptions::new()
        .paths(paths.iter().map(|p| p.as_ref().to_path_buf()))
        .yield_to_updates(Duration::ZERO)
}

/// Sorted names in `dir`, but the `update-waiting` note.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The dated note a holder leaves when it sees the Supervisor's attempt (written by
        // its watch thread, a moment after the attempt: tests that look for it wait).
        .filter(|n| n != update_lock::UPDATE_WAITING_NOTE_NAME)
        .collect();
    v.sort();
    v
}

/// (device, inode) of `p`, not following a symlink; panics when it is missing.
pub fn inode(p: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{} should exist: {e}", p.display()));
    (m.dev(), m.ino())
}

pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Number of open descriptors of this process.
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Run a command to completion (output captured) and return its exit code.
pub fn exit_code(cmd: &mut Command) -> i32 {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    out.status
        .code()
        .unwrap_or_else(|| panic!("{cmd:?} died of a signal: {:?}", out.status))
}

/// `setpriv` prefix running a command as `uid` (group = uid, no supplementary groups).
pub fn as_uid(uid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

/// The Supervisor's own probe/lock: procmail `lockfile -r 0 PATH` as uid 65534.
/// 0 = it took the lock (created the file), 73 = the path exists (updates locked).
pub fn supervisor_lockfile(path: &Path) -> i32 {
    exit_code(as_uid(NOBODY, "lockfile").arg("-r").arg("0").arg(path))
}

/// The host OS reboot script's probe: `flock -nx PATH true`, on a fresh descriptor in a
/// separate process. 0 = nobody holds flock, 1 = someone does. NOTE: flock(1) creates the
/// file when it is missing.
pub fn reboot_probe(path: &Path) -> i32 {
    exit_code(Command::new("flock").arg("-nx").arg(path).arg("true"))
}

pub fn status_of(o: &LockOptions, dir: &Path) -> StatusReport {
    update_lock::status(
        o,
        &HandoverOptions::new().paths([dir.join("handover-complete")]),
    )
}

/// Assert `err` has `code` and its message contains every fragment.
#[track_caller]
pub fn assert_err(err: &Error, code: ErrorCode, fragments: &[&str]) {
    assert_eq!(err.code(), code, "wrong code for error: {err}");
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "message should mention {f:?}: {msg}");
    }
}

/// Start `acquire_with` on another thread; the receiver gets a message each time the wait
/// loop checks in, i.e. once the waiter is really blocked waiting (the check interval is
/// long so it does not shorten the waiter's own wake-up path).
pub fn spawn_waiter(
    o: LockOptions,
) -> (
    JoinHandle<update_lock::Result<UpdateLock>>,
    mpsc::Receiver<()>,
) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let ctl = WaitControl::new().check_every(Duration::from_secs(3600), move || {
            let _ = tx.send(());
            Ok(())
        });
        UpdateLock::acquire_with(&o, ctl)
    });
    (h, rx)
}

/// Block until the waiter reported that it is waiting.
pub fn until_waiting(rx: &mpsc::Receiver<()>) {
    rx.recv_timeout(REPLY_TIMEOUT)
        .expect("the waiter never started waiting (or it finished early)");
}

// ---------------------------------------------------------------------------------------
// Child processes

/// A child process running a role of [`child_entry`].
pub struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    pub pid: u32,
    role: String,
}

/// The command that runs `role` with `args` in a re-executed copy of this test binary.
/// `prefix` (e.g. `setpriv ...` or `unshare ...`) is put in front when given.
pub fn child_command(role: &str, args: &[String], prefix: Option<Command>) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let harness = [
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ];
    let mut cmd = match prefix {
        Some(mut p) => {
            p.arg(&exe);
            p
        }
        None => Command::new(&exe),
    };
    cmd.args(harness)
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join("\n"))
        .env_remove("BALENA_APP_LOCK_PATH")
        .env_remove("RESIN_APP_LOCK_PATH");
    cmd
}

impl Kid {
    /// Run `role` as root.
    pub fn spawn(role: &str, args: &[String]) -> Kid {
        Kid::start(child_command(role, args, None), role, None)
    }

    /// Run `role` as `uid` (through setpriv).
    pub fn spawn_as(uid: u32, role: &str, args: &[String]) -> Kid {
        let mut pre = Command::new("setpriv");
        pre.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups");
        Kid::start(child_command(role, args, Some(pre)), role, None)
    }

    /// Start `cmd` (from [`child_command`]); `stdin` defaults to a pipe we keep.
    pub fn start(mut cmd: Command, role: &str, stdin: Option<Stdio>) -> Kid {
        let piped = stdin.is_none();
        cmd.stdin(stdin.unwrap_or_else(Stdio::piped))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find(MARK) {
                    if tx.send(line[i + MARK.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = if piped { child.stdin.take() } else { None };
        Kid {
            pid: child.id(),
            child,
            stdin,
            lines,
            stderr,
            role: role.to_string(),
        }
    }

    /// The next protocol line from the child.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                // Give the stderr reader a moment only in this failure path.
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "child '{}' (pid {}) sent no line ({e:?}); exit status {status:?}; stderr:\n{}",
                    self.role,
                    self.pid,
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    /// The next line, which must start with `prefix`; returns the rest.
    #[track_caller]
    pub fn expect(&mut self, prefix: &str) -> String {
        let l = self.line();
        match l.strip_prefix(prefix) {
            Some(rest) => rest.trim().to_string(),
            None => panic!(
                "child '{}' said {l:?}, expected {prefix:?}; stderr:\n{}",
                self.role,
                self.stderr.lock().unwrap()
            ),
        }
    }

    pub fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("child stdin");
        writeln!(s, "{line}").expect("write to child");
        s.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL the child and reap it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL child");
        let st = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "child should die of SIGKILL"
        );
    }

    /// Close stdin and wait for the child to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.close_stdin();
        self.child.wait().unwrap()
    }

    /// Close stdin, wait, and require a clean exit.
    #[track_caller]
    pub fn finish(&mut self) {
        let st = self.wait();
        assert!(
            st.success(),
            "child '{}' failed: {st:?}; stderr:\n{}",
            self.role,
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child's error line `err <code> <message>` split into (code, message).
#[track_caller]
pub fn parse_err(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("err ")
        .unwrap_or_else(|| panic!("expected an error line, got {line:?}"));
    let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    (code.to_string(), msg.to_string())
}

pub fn path_args(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Child side

fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

fn err_line(e: &Error) -> String {
    format!(
        "err {} {}",
        e.code().as_str(),
        e.to_string().replace('\n', " ")
    )
}

fn result_line(r: update_lock::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => err_line(&e),
    }
}

fn read_line() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim().to_string()),
    }
}

/// The body of each test binary's ignored `child_entry` test. Does nothing unless this
/// process was started by [`Kid`].
pub fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let args: Vec<String> = std::env::var(ARGS_ENV)
        .unwrap_or_default()
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match role.as_str() {
        "hold" => role_hold(&args, false),
        "hold-shared" => role_hold(&args, true),
        "shared-rounds" => role_shared_rounds(&args),
        "try" => role_try(&args),
        "exclusion" => role_exclusion(&args),
        "racer" => role_racer(&args),
        "nofile" => role_nofile(&args),
        other => panic!("unknown child role {other}"),
    }
}

fn paths_from(args: &[String]) -> Vec<PathBuf> {
    args.iter().map(PathBuf::from).collect()
}

/// `hold TIMEOUT_MS|none PATH...` (`hold-shared`: in shared mode): acquire, say
/// `acquired pid=P reclaimed=N`, then obey stdin: `check`, `release`; EOF ends (dropping
/// the lock).
fn role_hold(args: &[String], shared: bool) {
    let timeout = match args[0].as_str() {
        "none" => None,
        ms => Some(Duration::from_millis(ms.parse().unwrap())),
    };
    let o = opts(&paths_from(&args[1..]))
        .timeout(timeout)
        .shared(shared);
    let mut lock = match UpdateLock::acquire(&o) {
        Ok(l) => l,
        Err(e) => return say(err_line(&e)),
    };
    say(format!(
        "acquired pid={} reclaimed={}",
        std::process::id(),
        lock.reclaimed().len()
    ));
    while let Some(cmd) = read_line() {
        match cmd.as_str() {
            "check" => say(result_line(lock.check())),
            "release" => say(result_line(lock.release())),
            other => panic!("unknown order {other}"),
        }
    }
}

/// `shared-rounds ROUNDS PATH...`: say `ready`, wait for a line, then ROUNDS times take
/// and release the lock in shared mode; says `done errors=E` (any error counts).
fn role_shared_rounds(args: &[String]) {
    let rounds: usize = args[0].parse().unwrap();
    let o = opts(&paths_from(&args[1..]))
        .shared(true)
        .timeout(Some(LONG));
    say("ready");
    let _ = read_line();
    let mut errors = 0;
    for _ in 0..rounds {
        match UpdateLock::acquire(&o) {
            Ok(mut l) => errors += usize::from(l.release().is_err()),
            Err(_) => errors += 1,
        }
    }
    say(format!("done errors={errors}"));
}

/// `try PATH...`: try once, say `ok` (then release) or the error.
fn role_try(args: &[String]) {
    match UpdateLock::try_acquire(&opts(&paths_from(args))) {
        Ok(mut l) => say(result_line(l.release())),
        Err(e) => say(err_line(&e)),
    }
}

/// `exclusion ROUNDS MARKER COUNTER PATH...`: say `ready`, wait for a line, then ROUNDS
/// times: acquire, create MARKER with O_EXCL (failure = another holder is inside),
/// increment COUNTER by read-modify-write, remove MARKER, release. Says `done violations=V`.
fn role_exclusion(args: &[String]) {
    let rounds: usize = args[0].parse().unwrap();
    let marker = PathBuf::from(&args[1]);
    let counter = PathBuf::from(&args[2]);
    let o = opts(&paths_from(&args[3..])).timeout(Some(LONG));
    say("ready");
    let _ = read_line();
    let mut violations = 0;
    for _ in 0..rounds {
        let mut lock = match UpdateLock::acquire(&o) {
            Ok(l) => l,
            Err(e) => return say(err_line(&e)),
        };
        violations += critical_section(&marker, &counter, &lock);
        if lock.release().is_err() {
            violations += 1;
        }
    }
    say(format!("done violations={violations}"));
}

/// One critical section; returns the number of violations seen.
pub fn critical_section(marker: &Path, counter: &Path, lock: &UpdateLock) -> usize {
    let mut violations = 0;
    let mine = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .is_ok();
    if !mine {
        violations += 1;
    }
    if lock.check().is_err() {
        violations += 1;
    }
    let n: u64 = match fs::read_to_string(counter) {
        Ok(s) if s.is_empty() => 0,
        Ok(s) => match s.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                violations += 1;
                0
            }
        },
        Err(_) => 0,
    };
    std::thread::yield_now();
    fs::write(counter, format!("{}\n", n + 1)).unwrap();
    if mine && fs::remove_file(marker).is_err() {
        violations += 1;
    }
    violations
}

/// `racer MARKER release|crash PATH...`: say `ready`, wait for EOF on stdin (shared by all
/// racers), then acquire, check the marker invariant while holding for a moment, and either
/// release or die without releasing (`_exit`: the files stay, the flock goes, as in a
/// crash). Says `done violations=V reclaimed=P1@PID1,P2@PID2` (the paths this racer took
/// over from a dead holder, and that holder's pid) before it releases or dies.
fn role_racer(args: &[String]) {
    let marker = PathBuf::from(&args[0]);
    let crash = args[1] == "crash";
    let o = opts(&paths_from(&args[2..])).timeout(Some(LONG));
    say("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let mut lock = match UpdateLock::acquire(&o) {
        Ok(l) => l,
        Err(e) => return say(err_line(&e)),
    };
    let mut violations = 0;
    let mine = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok();
    if !mine {
        violations += 1;
    }
    // Stay inside for a moment so that a second holder, if the lock let one in, would
    // overlap with us (this widens the window; it synchronises nothing).
    std::thread::sleep(Duration::from_millis(5));
    if lock.check().is_err() {
        violations += 1;
    }
    if mine && fs::remove_file(&marker).is_err() {
        violations += 1;
    }
    let reclaimed: Vec<String> = lock
        .reclaimed()
        .iter()
        .map(|r| format!("{}@{}", r.path.display(), r.previous.pid))
        .collect();
    if crash {
        say(format!(
            "done violations={violations} reclaimed={}",
            reclaimed.join(",")
        ));
        // SAFETY: ends the process at once, like a crash (no destructor runs).
        unsafe { libc::_exit(0) }
    }
    if lock.release().is_err() {
        violations += 1;
    }
    say(format!(
        "done violations={violations} reclaimed={}",
        reclaimed.join(",")
    ));
}

/// `nofile PATH...`: lower RLIMIT_NOFILE, use up every descriptor, then for budgets of
/// 0, 1, 2, ... free descriptors try to take the lock. Says for each budget `budget K ok`
/// or `budget K err CODE MSG`, plus `leftover K NAMES` when an attempt left a file in a
/// lock directory; finally `done`.
fn role_nofile(args: &[String]) {
    let paths = paths_from(args);
    let dirs: Vec<PathBuf> = paths.iter().map(|p| p.parent().unwrap().into()).collect();
    let o = opts(&paths);
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: plain syscall with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    for budget in 0..=12 {
        let mut filler = Vec::new();
        while let Ok(f) = fs::File::open("/dev/null") {
            filler.push(f);
        }
        for _ in 0..budget {
            filler.pop();
        }
        let r = UpdateLock::try_acquire(&o).and_then(|mut l| l.release());
        drop(filler);
        match r {
            Ok(()) => say(format!("budget {budget} ok")),
            Err(e) => say(format!("budget {budget} {}", err_line(&e))),
        }
        for d in &dirs {
            let names = listing(d);
            if !names.is_empty() {
                say(format!("leftover {budget} {}", names.join(",")));
            }
        }
    }
    say("done");
}
