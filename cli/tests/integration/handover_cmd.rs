//! `lockctl handover take | serve | run`: descriptors and state handed across real
//! processes, socket activation for the command, SIGTERM semantics, bad input.
//!
//! The commands lockctl runs are this test binary itself in "probe" mode (the `probe` test
//! below, selected with `LOCKCTL_PROBE`): it reports what it was given on stdout, one
//! `key=value` line each, so the assertions look at what a real program sees.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use nix::sys::signal::Signal;

// ---------------------------------------------------------------------------------------
// The probe: what a program started by lockctl sees.

static STATE_FD: AtomicI32 = AtomicI32::new(-1);
const APP_STATE: &[u8] = b"sessions=3\n";

extern "C" fn on_term(_: libc::c_int) {
    let fd = STATE_FD.load(Ordering::Relaxed);
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        if fd >= 0 {
            libc::write(fd, APP_STATE.as_ptr().cast(), APP_STATE.len());
        }
        libc::write(1, b"app=got-term\n".as_ptr().cast(), 13);
        libc::_exit(0);
    }
}

/// Not a test of its own: the command lockctl runs in the tests below (a no-op otherwise).
/// `LOCKCTL_PROBE=report`: report and exit; `=accept`: report, then answer one connection
/// on descriptor 3; `=app`: report, say `ready`, then run until SIGTERM (writing
/// `APP_STATE` to `$PROBE_STATE_FILE`) or the end of stdin.
#[test]
fn probe() {
    let Ok(mode) = std::env::var("LOCKCTL_PROBE") else {
        return;
    };
    if mode == "app" {
        if let Ok(p) = std::env::var("PROBE_STATE_FILE") {
            let f = std::fs::File::create(p).expect("create the state file");
            STATE_FD.store(f.into_raw_fd(), Ordering::Relaxed);
        }
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    }
    // After libtest's "test probe ... " (no newline).
    let mut out = String::from("\nprobe=start\n");
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
    for k in [
        "UPDATE_LOCK_HANDOVER",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "UPDATE_LOCK_PREDECESSOR_RELEASE",
    ] {
        out.push_str(&format!("{k}={}\n", var(k)));
    }
    let pid_ok = var("LISTEN_PID") == std::process::id().to_string();
    out.push_str(&format!("listen_pid_is_mine={pid_ok}\n"));
    let n: i32 = var("LISTEN_FDS").parse().unwrap_or(0);
    for fd in 3..3 + n {
        out.push_str(&format!("fd{fd}={}\n", describe_fd(fd)));
    }
    if let Ok(n) = var("UPDATE_LOCK_HANDOVER_STATE_FD").parse::<RawFd>() {
        // SAFETY: lockctl gave us this descriptor.
        let mut f = unsafe { std::fs::File::from_raw_fd(n) };
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read the state memfd");
        out.push_str(&format!("state_fd={n}\nstate={}\n", s.trim_end()));
    }
    out.push_str("probe=end\n");
    print!("{out}");
    std::io::stdout().flush().unwrap();
    match mode.as_str() {
        "accept" => {
            // SAFETY: descriptor 3 is the inherited listener.
            let l = unsafe { TcpListener::from_raw_fd(3) };
            let (mut c, _) = l.accept().expect("accept on the inherited listener");
            c.write_all(b"hello from the successor\n").unwrap();
        }
        "app" => {
            println!("ready");
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
                line.clear();
            }
        }
        _ => {}
    }
    std::process::exit(0);
}

/// `port:N` for a TCP listener, else the target of /proc/self/fd/N.
fn describe_fd(fd: RawFd) -> String {
    // SAFETY: only looked at, then released again without closing.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let addr = l.local_addr();
    let _ = l.into_raw_fd();
    match addr {
        Ok(a) => format!("port:{}", a.port()),
        Err(_) => std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("closed ({e})")),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// The probe as a command line: this test binary running only `probe`.
fn probe_cmd(mode: &str) -> Vec<String> {
    let _ = mode;
    vec![
        std::env::current_exe()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        "handover_cmd::probe".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// `lockctl handover ARGS -- probe` with stderr merged into stdout (so lockctl's own
/// progress lines can be waited for), as one process: `sh` execs lockctl.
fn handover(args: &[&str], probe: Option<&str>) -> Command {
    let mut c = command("sh");
    c.args(["-c", "exec \"$@\" 2>&1", "sh", LOCKCTL, "handover"]);
    c.args(args);
    if let Some(mode) = probe {
        c.arg("--").args(probe_cmd(mode)).env("LOCKCTL_PROBE", mode);
    }
    c
}

/// Give the child `fds[i].0` at number `fds[i].1` (without close-on-exec).
fn pass_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) {
    let fds = fds.to_vec();
    // SAFETY: fcntl/dup2/close only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = Vec::new();
            for (src, _) in &fds {
                let d = libc::fcntl(*src, libc::F_DUPFD, 200);
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp.push(d);
            }
            for (d, (_, target)) in tmp.iter().zip(&fds) {
                if libc::dup2(*d, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*d);
            }
            Ok(())
        })
    };
}

/// Read `key=value` lines of the probe (between probe=start and probe=end).
fn probe_report(p: &mut Proc) -> std::collections::HashMap<String, String> {
    p.expect_line("probe=start");
    let mut m = std::collections::HashMap::new();
    loop {
        let l = p.line();
        if l == "probe=end" {
            return m;
        }
        if let Some((k, v)) = l.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        }
    }
}

/// Read lines until one contains `needle`.
fn expect_containing(p: &mut Proc, needle: &str) -> String {
    loop {
        let l = p.line();
        if l.contains(needle) {
            return l;
        }
    }
}

/// Wait until `path` exists (the server has bound its socket): a state, not a duration.
fn wait_for_path(path: &Path, p: &mut Proc) {
    let deadline = Instant::now() + STEP;
    while std::fs::symlink_metadata(path).is_err() {
        assert!(!p.exited(), "lockctl exited before serving");
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn sock(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("handover.sock")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn take_without_predecessor_execs_with_new_listeners() {
    let dir = service_dir();
    let socket = sock(&dir);
    let mut p = Proc::spawn(&mut handover(
        &[
            "take",
            "--socket",
            s(&socket),
            "--json",
            "--listen",
            "http=127.0.0.1:0",
            "--listen",
            "metrics=127.0.0.1:0",
        ],
        Some("report"),
    ));
    let pid = p.pid();
    let json = expect_containing(&mut p, "\"handover\"");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON line");
    assert_eq!(v["handover"], "none");
    assert_eq!(v["fds"][0]["label"], "http");
    assert_eq!(v["fds"][1]["fd"], 4);
    assert_eq!(v["fds"][1]["socket"], true);
    let r = probe_report(&mut p);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "none");
    assert_eq!(r["LISTEN_FDS"], "2");
    assert_eq!(r["LISTEN_FDNAMES"], "http:metrics");
    assert_eq!(r["listen_pid_is_mine"], "true");
    assert!(!r.contains_key("state_fd"), "{r:?}");
    for fd in ["fd3", "fd4"] {
        assert!(
            r[fd].starts_with("port:") && r[fd] != "port:0",
            "{fd}: {}",
            r[fd]
        );
    }
    assert_eq!(code(p.wait()), 0);
    assert_eq!(p.pid(), pid);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn serve_hands_listener_and_state_to_take() {
    let dir = service_dir();
    let socket = sock(&dir);
    let state_file = dir.path().join("state");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // Old version: lockctl holds the listener (as descriptor 5) and runs the app with it.
    let mut serve_cmd = handover(
        &[
            "serve",
            "--socket",
            s(&socket),
            "--release",
            "v1",
            "--fd",
            "http=5",
            "--state-file",
            s(&state_file),
        ],
        Some("app"),
    );
    serve_cmd.env("PROBE_STATE_FILE", &state_file);
    pass_fds(&mut serve_cmd, &[(listener.as_raw_fd(), 5)]);
    let mut old = Proc::spawn(&mut serve_cmd);
    drop(listener);
    let r = probe_report(&mut old);
    assert_eq!(r["LISTEN_FDS"], "1");
    assert_eq!(r["LISTEN_FDNAMES"], "http");
    assert_eq!(r["listen_pid_is_mine"], "true");
    assert_eq!(r["fd3"], format!("port:{port}"));
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "-", "plain serve does not say");
    old.expect_line("ready");

    // New version takes over, then answers a connection on the inherited listener.
    let mut new = Proc::spawn(&mut handover(
        &["take", "--socket", s(&socket), "--release", "v2"],
        Some("accept"),
    ));
    let r = probe_report(&mut new);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "taken");
    assert_eq!(r["LISTEN_FDS"], "1");
    assert_eq!(r["LISTEN_FDNAMES"], "http");
    assert_eq!(r["listen_pid_is_mine"], "true");
    assert_eq!(
        r["fd3"],
        format!("port:{port}"),
        "the same listening socket"
    );
    assert_eq!(r["state_fd"], "4");
    assert_eq!(r["state"], "sessions=3");
    assert_eq!(r["UPDATE_LOCK_PREDECESSOR_RELEASE"], "v1");
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(STEP)).unwrap();
    let mut line = String::new();
    BufReader::new(&mut c).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the successor\n");
    assert_eq!(code(new.wait()), 0);

    // The old app got SIGTERM as the release step; lockctl exits 0 (handed over).
    expect_containing(&mut old, "app=got-term");
    assert_eq!(code(old.wait()), 0, "{}", old.rest_of_stdout());
    assert!(
        dir.path().join("handover-complete").exists(),
        "the Supervisor is told"
    );
    assert!(!socket.exists(), "socket removed after the hand-over");
}

#[test]
fn sigterm_before_the_successor_still_hands_over() {
    let dir = service_dir();
    let socket = sock(&dir);
    let devfile = dir.path().join("device");
    std::fs::write(&devfile, "dev").unwrap();
    let dev = std::fs::File::open(&devfile).unwrap();
    let mut cmd = handover(
        &[
            "serve",
            "--socket",
            s(&socket),
            "--fd",
            "dev=3",
            "--term-grace",
            "60",
        ],
        None,
    );
    pass_fds(&mut cmd, &[(dev.as_raw_fd(), 3)]);
    let mut old = Proc::spawn(&mut cmd);
    expect_containing(&mut old, "serving hand-over");
    old.signal(Signal::SIGTERM);
    expect_containing(&mut old, "got SIGTERM; still serving");
    assert!(!old.exited());

    let mut new = Proc::spawn(&mut handover(
        &["take", "--socket", s(&socket), "--no-signal"],
        Some("report"),
    ));
    let r = probe_report(&mut new);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "taken");
    assert_eq!(r["LISTEN_FDNAMES"], "dev");
    assert_eq!(r["fd3"], devfile.display().to_string());
    assert_eq!(r["state"], "");
    assert_eq!(code(new.wait()), 0);
    assert_eq!(code(old.wait()), 0);
    assert!(
        !dir.path().join("handover-complete").exists(),
        "--no-signal"
    );
}

#[test]
fn nobody_comes_exit_69_and_child_status_is_passed_on() {
    let dir = service_dir();
    let socket = sock(&dir);
    // --timeout with nobody taking over.
    let (st, out, _) = output(&mut handover(
        &["serve", "--socket", s(&socket), "--timeout", "0.05"],
        None,
    ));
    assert_eq!(code(st), 69, "{out}");
    assert!(out.contains("nobody took over"), "{out}");
    assert!(!socket.exists());

    // The grace after SIGTERM runs out: the command is stopped, exit 69.
    let mut old = Proc::spawn(&mut handover(
        &["serve", "--socket", s(&socket), "--term-grace", "0.05"],
        Some("app"),
    ));
    old.expect_line("ready");
    old.signal(Signal::SIGTERM);
    expect_containing(&mut old, "app=got-term");
    assert_eq!(code(old.wait()), 69);
    assert!(!socket.exists());

    // The command exits on its own: its status, serving ends.
    let (st, out, _) = output(&mut handover(
        &["serve", "--socket", s(&socket), "--", "sh", "-c", "exit 7"],
        None,
    ));
    assert_eq!(code(st), 7, "{out}");
    assert!(!socket.exists());

    // A second SIGTERM stops at once: 128+15.
    let mut old = Proc::spawn(&mut handover(
        &["serve", "--socket", s(&socket), "--term-grace", "60"],
        None,
    ));
    expect_containing(&mut old, "serving hand-over");
    old.signal(Signal::SIGTERM);
    expect_containing(&mut old, "got SIGTERM");
    old.signal(Signal::SIGTERM);
    assert_eq!(code(old.wait()), 128 + 15);
}

#[test]
fn bad_input_is_a_usage_error_and_nothing_is_deleted() {
    let dir = service_dir();
    let socket = sock(&dir);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", "--fd", "http"], "LABEL=VALUE"),
        (vec!["serve", "--fd", "http=x"], "descriptor number"),
        (vec!["serve", "--fd", "a=0", "--fd", "a=1"], "twice"),
        (vec!["serve", "--fd", "http=77"], "not open"),
        (
            vec!["take", "--listen", "http=nonsense", "--", "true"],
            "HOST:PORT",
        ),
        (
            vec!["take", "--listen", "http=127.0.0.1:99999", "--", "true"],
            "HOST:PORT",
        ),
        (
            vec!["take", "--listen", "a:b=127.0.0.1:1", "--", "true"],
            "label",
        ),
        (
            vec!["take", "--step-timeout", "forever", "--", "true"],
            "seconds",
        ),
    ];
    for (args, want) in cases {
        let mut a = args.clone();
        a.splice(1..1, ["--socket", s(&socket)]);
        let (st, out, _) = output(&mut handover(&a, None));
        assert_eq!(code(st), 64, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
        assert_eq!(out.trim_end().lines().count(), 1, "one line: {out:?}");
    }
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // Something that is not a socket at the socket path: never touched, and (hardening D)
    // it never keeps the command from running: it starts fresh / runs without serving.
    std::fs::write(&socket, "precious").unwrap();
    let (st, out, _) = output(&mut handover(
        &["take", "--socket", s(&socket), "--", "echo", "ran"],
        None,
    ));
    assert_eq!(code(st), 0, "{out}");
    assert!(out.contains("instead of a socket"), "{out}");
    assert!(out.contains("starting fresh"), "{out}");
    assert!(out.contains("ran"), "{out}");
    let (st, out, _) = output(&mut handover(
        &[
            "serve",
            "--socket",
            s(&socket),
            "--fd",
            "in=0",
            "--",
            "echo",
            "ran",
        ],
        None,
    ));
    assert_eq!(code(st), 0, "{out}");
    assert!(out.contains("not serving hand-over"), "{out}");
    assert!(out.contains("ran"), "{out}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn fds_are_placed_in_order_even_when_their_numbers_cross() {
    let dir = service_dir();
    let socket = sock(&dir);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let (fa, fb) = (
        std::fs::File::open(&a).unwrap(),
        std::fs::File::open(&b).unwrap(),
    );
    // a arrives at 4 and b at 3, but a is listed first: the command must see a at 3.
    let mut cmd = handover(
        &[
            "serve",
            "--socket",
            s(&socket),
            "--fd",
            "a=4",
            "--fd",
            "b=3",
        ],
        Some("app"),
    );
    pass_fds(&mut cmd, &[(fa.as_raw_fd(), 4), (fb.as_raw_fd(), 3)]);
    let mut old = Proc::spawn(&mut cmd);
    let r = probe_report(&mut old);
    assert_eq!(r["LISTEN_FDNAMES"], "a:b");
    assert_eq!(r["fd3"], a.display().to_string());
    assert_eq!(r["fd4"], b.display().to_string());
    old.expect_line("ready");
    old.close_stdin();
    assert_eq!(code(old.wait()), 0, "the app's own exit status");
}

#[test]
fn run_starts_fresh_then_hands_over_to_the_next_run() {
    let dir = service_dir();
    let socket = sock(&dir);
    let args = [
        "run",
        "--socket",
        s(&socket),
        "--listen",
        "http=127.0.0.1:0",
        "--term-grace",
        "60",
    ];
    let mut v1 = Proc::spawn(&mut handover(&args, Some("app")));
    let r = probe_report(&mut v1);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "none");
    assert_eq!(r["listen_pid_is_mine"], "true");
    let port = r["fd3"].clone();
    assert!(port.starts_with("port:"), "{port}");
    v1.expect_line("ready");
    wait_for_path(&socket, &mut v1);

    let mut v2 = Proc::spawn(&mut handover(&args, Some("app")));
    let r = probe_report(&mut v2);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "taken");
    assert_eq!(r["fd3"], port, "the same listener");
    assert_eq!(r["listen_pid_is_mine"], "true");
    v2.expect_line("ready");
    expect_containing(&mut v1, "app=got-term");
    assert_eq!(code(v1.wait()), 0);
    // v2 now serves the next version in turn.
    wait_for_path(&socket, &mut v2);
    v2.close_stdin();
    assert_eq!(code(v2.wait()), 0);
}

#[test]
fn listen_labels_come_first_and_a_label_not_handed_over_is_created() {
    let dir = service_dir();
    let socket = sock(&dir);
    let devfile = dir.path().join("device");
    std::fs::write(&devfile, "dev").unwrap();
    let dev = std::fs::File::open(&devfile).unwrap();
    let mut cmd = handover(&["serve", "--socket", s(&socket), "--fd", "dev=3"], None);
    pass_fds(&mut cmd, &[(dev.as_raw_fd(), 3)]);
    let mut old = Proc::spawn(&mut cmd);
    expect_containing(&mut old, "serving hand-over");

    // The new release also listens on http, which the old one did not have.
    let mut new = Proc::spawn(&mut handover(
        &[
            "take",
            "--socket",
            s(&socket),
            "--no-signal",
            "--listen",
            "http=127.0.0.1:0",
        ],
        Some("report"),
    ));
    let r = probe_report(&mut new);
    assert_eq!(r["UPDATE_LOCK_HANDOVER"], "taken");
    assert_eq!(r["LISTEN_FDS"], "2");
    assert_eq!(r["LISTEN_FDNAMES"], "http:dev", "--listen labels first");
    assert!(r["fd3"].starts_with("port:"), "{}", r["fd3"]);
    assert_eq!(r["fd4"], devfile.display().to_string());
    assert_eq!(r["state_fd"], "5");
    assert_eq!(code(new.wait()), 0);
    assert_eq!(code(old.wait()), 0);
}

#[test]
fn a_refused_hand_over_fails_take_with_69_and_serving_goes_on() {
    let dir = service_dir();
    let socket = sock(&dir);
    // The state file cannot be read (a directory): the old side refuses the successor.
    let bad_state = dir.path().join("state.d");
    std::fs::create_dir(&bad_state).unwrap();
    let mut old = Proc::spawn(&mut handover(
        &[
            "serve",
            "--socket",
            s(&socket),
            "--state-file",
            s(&bad_state),
            "--term-grace",
            "60",
        ],
        Some("app"),
    ));
    old.expect_line("ready");
    let (st, out, _) = output(&mut handover(
        &["take", "--socket", s(&socket), "--", "echo", "ran"],
        None,
    ));
    assert_eq!(code(st), 69, "{out}");
    assert!(out.contains("error[handover]"), "{out}");
    assert!(out.contains("state file"), "the old side's reason: {out}");
    assert!(!out.contains("ran"), "{out}");
    expect_containing(&mut old, "still serving");
    assert!(!old.exited(), "still serving");
    assert!(socket.exists());
    assert!(!dir.path().join("handover-complete").exists());
    old.signal(Signal::SIGTERM);
    expect_containing(&mut old, "got SIGTERM");
    old.signal(Signal::SIGINT);
    assert_eq!(code(old.wait()), 128 + 2);
    assert!(!socket.exists());
}

/// Hardening F: the state file is untrusted input. A fifo (which would hang serving), a
/// symlink (to /dev/zero: endless) and a file over `--max-state` are each refused with a
/// clear reason that reaches the successor, and the old version keeps serving.
#[test]
fn f_a_state_file_that_is_a_fifo_a_symlink_or_too_large_is_refused_and_serving_goes_on() {
    let dir = service_dir();
    let fifo = dir.path().join("state.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let link = dir.path().join("state.link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let big = dir.path().join("state.big");
    std::fs::write(&big, vec![b'x'; 4097]).unwrap();
    let cases = [
        (&fifo, "not a regular file"),
        (&link, "symbolic link, which is never followed"),
        (&big, "more than 4096 bytes"),
    ];
    for (i, (state, reason)) in cases.into_iter().enumerate() {
        let socket = dir.path().join(format!("handover{i}.sock"));
        let mut old = Proc::spawn(&mut handover(
            &[
                "serve",
                "--socket",
                s(&socket),
                "--state-file",
                s(state),
                "--max-state",
                "4096",
                "--term-grace",
                "60",
            ],
            Some("app"),
        ));
        old.expect_line("ready");
        let (st, out, _) = output(&mut handover(
            &[
                "take",
                "--socket",
                s(&socket),
                "--max-state",
                "4096",
                "--",
                "echo",
                "ran",
            ],
            None,
        ));
        assert_eq!(code(st), 69, "{out}");
        assert!(out.contains(reason), "{reason}: {out}");
        assert!(!out.contains("ran"), "{out}");
        expect_containing(&mut old, "still serving");
        assert!(!old.exited(), "still serving");
        old.signal(Signal::SIGTERM);
        expect_containing(&mut old, "got SIGTERM");
        old.signal(Signal::SIGINT);
        assert_eq!(code(old.wait()), 128 + 2);
    }
}

/// As uid 1000 (the co-tenant), in the 1777 service directory.
fn as_co_tenant(program: &str) -> Command {
    let mut c = command("setpriv");
    c.args(["--reuid=1000", "--regid=1000", "--clear-groups", program]);
    c
}

/// `lockctl handover run --socket S -- sh -c 'echo started; exit 7'` as root: the app must
/// start whatever stands at the socket path, with a warning that says what and what to do.
fn run_app_beside(socket: &Path) -> (i32, String) {
    let (st, out, _) = output(&mut handover(
        &[
            "run",
            "--socket",
            s(socket),
            "--step-timeout",
            "2",
            "--",
            "sh",
            "-c",
            "echo started; exit 7",
        ],
        None,
    ));
    (code(st), out)
}

/// Hardening D: a foreign or stale object at the socket path or its companion lock never
/// keeps the app from starting, and is never removed when it is not provably ours.
#[test]
fn d_whatever_a_co_tenant_plants_at_the_socket_path_the_app_still_starts() {
    use std::os::unix::fs::MetadataExt;
    let dir = service_dir();
    let planted = |name: &str, make: &dyn Fn(&Path)| -> (PathBuf, (u64, u32)) {
        let p = dir.path().join(name);
        make(&p);
        let m = std::fs::symlink_metadata(&p).unwrap();
        (p, (m.ino(), m.uid()))
    };
    let cases: Vec<(PathBuf, (u64, u32), &str)> = vec![
        {
            let (p, id) = planted("file.sock", &|p| {
                assert!(as_co_tenant("touch").arg(p).status().unwrap().success())
            });
            (p, id, "a regular file owned by uid 1000")
        },
        {
            let (p, id) = planted("fifo.sock", &|p| {
                assert!(as_co_tenant("mkfifo").arg(p).status().unwrap().success())
            });
            (p, id, "a named pipe (fifo) owned by uid 1000")
        },
        {
            let (p, id) = planted("link.sock", &|p| {
                assert!(as_co_tenant("ln")
                    .args(["-s", "/nonexistent/x"])
                    .arg(p)
                    .status()
                    .unwrap()
                    .success())
            });
            (p, id, "a symbolic link (to /nonexistent/x)")
        },
        {
            // A dead socket of uid 1000 (its server is gone).
            let (p, id) = planted("dead.sock", &|p| {
                drop(std::os::unix::net::UnixListener::bind(p).unwrap());
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    p,
                    Some(nix::unistd::Uid::from_raw(1000)),
                    Some(nix::unistd::Gid::from_raw(1000)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .unwrap();
            });
            (p, id, "a dead socket of uid 1000")
        },
    ];
    for (socket, id, what) in &cases {
        let (c, out) = run_app_beside(socket);
        assert_eq!(c, 7, "{what}: {out}");
        assert!(out.contains("started"), "{what}: {out}");
        assert!(out.contains("warning[handover]"), "{what}: {out}");
        assert!(out.contains(what), "{what}: {out}");
        let m = std::fs::symlink_metadata(socket).expect("the planted object was removed");
        assert_eq!((m.ino(), m.uid()), *id, "{what} was replaced");
    }
}

/// Hardening D: a process of another uid serving at the socket path (an impostor, or a
/// squatter of the companion lock) gets nothing from a root successor and cannot stop it.
#[test]
fn d_an_impostor_or_a_squatter_of_another_uid_cannot_stop_the_app() {
    let dir = service_dir();
    // The impostor: a real lockctl hand-over server, but running as uid 1000.
    let socket = sock(&dir);
    let mut impostor = Proc::spawn(
        as_co_tenant(LOCKCTL)
            .args(["handover", "run", "--socket"])
            .arg(&socket)
            .args(["--", "sh", "-c", "echo ready; read x"]),
    );
    impostor.expect_line("ready");
    let (c, out) = run_app_beside(&socket);
    assert_eq!(c, 7, "{out}");
    assert!(out.contains("started"), "{out}");
    assert!(out.contains("refusing to take anything from it"), "{out}");
    assert!(
        out.contains("--peer-uid 1000") || out.contains("--peer-uid UID"),
        "{out}"
    );
    assert!(
        !impostor.exited(),
        "the impostor was not asked for anything"
    );
    impostor.close_stdin();
    impostor.wait();

    // The squatter: holds the companion lock, no socket at all.
    let socket = dir.path().join("squat.sock");
    let companion = dir.path().join("squat.sock.lock");
    let mut squatter = Proc::spawn(as_co_tenant("flock").arg("-x").arg(&companion).args([
        "sh",
        "-c",
        "echo ready; read x",
    ]));
    squatter.expect_line("ready");
    let (c, out) = run_app_beside(&socket);
    assert_eq!(c, 7, "{out}");
    assert!(out.contains("started"), "{out}");
    assert!(out.contains("not serving hand-over"), "{out}");
    squatter.close_stdin();
    squatter.wait();
    assert!(companion.exists(), "the squatter's file was removed");
}

/// The listen backlog of the listening socket on `port`, as `ss` shows it (Send-Q).
fn backlog_of(port: u16) -> u32 {
    let (st, out, _) = output(command("ss").args(["-Hltn", &format!("sport = :{port}")]));
    assert_eq!(code(st), 0);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no listener on {port}: {out:?}"))
        .parse()
        .unwrap()
}

/// Hardening E: without a state file the old command keeps serving beside the new one
/// until the new one says it serves (sd_notify READY=1), so a switch has no pause; the
/// listeners get the kernel's backlog (or --backlog), inherited ones too.
#[test]
fn e_the_old_command_serves_until_the_new_one_says_ready_and_the_backlog_is_raised() {
    let dir = service_dir();
    let socket = sock(&dir);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("http=127.0.0.1:{port}");
    let old_app = "import signal, sys\n\
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n\
print('old up', flush=True)\n\
signal.sigwait([signal.SIGTERM])\n\
print('old got TERM', flush=True)\n";
    let mut old = Proc::spawn(&mut handover(
        &[
            "run",
            "--socket",
            s(&socket),
            "--listen",
            &listen,
            "--backlog",
            "300",
            "--",
            "python3",
            "-c",
            old_app,
        ],
        None,
    ));
    expect_containing(&mut old, "old up");
    assert_eq!(backlog_of(port), 300);
    let new_app = "import os, signal, socket, sys\n\
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n\
print('new up', flush=True)\n\
sys.stdin.readline()\n\
n = os.environ['NOTIFY_SOCKET']\n\
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', '\\0' + n[1:])\n\
print('new ready', flush=True)\n\
signal.sigwait([signal.SIGTERM])\n";
    let mut new = Proc::spawn(&mut handover(
        &[
            "run",
            "--socket",
            s(&socket),
            "--listen",
            &listen,
            "--",
            "python3",
            "-c",
            new_app,
        ],
        None,
    ));
    expect_containing(&mut new, "new up");
    // Inherited, and raised to the kernel's limit (the default).
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog_of(port), somaxconn);
    // The new command runs but has not said it serves: the old command must still run
    // (it used to get SIGTERM before the hand-over even began).
    assert!(
        !old.exited(),
        "the old version stopped before the new one served"
    );
    let kids = children_of(old.pid());
    assert_eq!(kids.len(), 1, "the old command is gone: {kids:?}");
    new.send("go");
    expect_containing(&mut new, "new ready");
    let line = expect_containing(&mut old, "old got TERM");
    assert!(line.contains("old got TERM"));
    assert_eq!(code(old.wait()), 0);
    new.signal(Signal::SIGTERM);
    new.signal(Signal::SIGINT);
    new.wait();
}
