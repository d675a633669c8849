//! The hand-over protocol between processes: a real old version (a child process serving on
//! the socket) and a real new version (another child, or a hand-written raw client that
//! misbehaves on purpose). Every outcome the issue names: first start, success with a
//! listening socket, either side crashing mid-transfer, stalls, two successors racing,
//! refusal, wrong uid, stale sockets, bad input.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use update_lock::{
    take_over, take_over_with, CancelToken, ErrorCode, HandoverFailure, HandoverServer,
    RendezvousOptions, WaitControl,
};

fn args() -> Vec<String> {
    std::env::var("UL_CHILD_ARGS")
        .unwrap_or_default()
        .split('\n')
        .map(str::to_string)
        .collect()
}

fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "UL:{msg}").unwrap();
    out.flush().unwrap();
}

fn read_order() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim().to_string()),
    }
}

fn handover_err_line(e: &update_lock::Error) -> String {
    format!(
        "err {} reason={} {}",
        e.code().as_str(),
        e.handover_failure().map(|r| r.as_str()).unwrap_or("-"),
        e.to_string().replace('\n', " ")
    )
}

/// Allowed peer uids from an optional argument "U1,U2" (empty: none).
fn peer_uids(a: &[String], i: usize) -> Vec<u32> {
    a.get(i)
        .map(|l| l.split(',').filter_map(|u| u.parse().ok()).collect())
        .unwrap_or_default()
}

/// `ho-serve SOCKET STATE STEP_MS MODE [PEER_UIDS]`: bind, open a TCP listener, say `serving port=P`,
/// then per successor say `request from=R` and (MODE `orders`) obey stdin: `grant`,
/// `refuse`, `die` (SIGKILL ourselves in the release step); MODE `auto` grants at once.
/// A failed grant says the error, then `resumed`, and serves again.
pub(crate) fn role_serve() {
    let a = args();
    let step = Duration::from_millis(a[2].parse().unwrap());
    let opts = RendezvousOptions::new()
        .socket(&a[0])
        .release("old")
        .step_timeout(step)
        .peer_uids(peer_uids(&a, 4));
    let server = match HandoverServer::bind(&opts) {
        Ok(s) => s,
        Err(e) => return say(handover_err_line(&e)),
    };
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    say(format!("serving port={}", tcp.local_addr().unwrap().port()));
    loop {
        let req = match server.accept(None) {
            Ok(Some(r)) => r,
            Ok(None) => unreachable!("no timeout"),
            Err(e) => return say(handover_err_line(&e)),
        };
        say(format!("request from={}", req.successor().release));
        let order = if a[3] == "auto" {
            "grant".to_string()
        } else {
            read_order().unwrap_or_default()
        };
        match order.as_str() {
            "grant" => match server.grant(req, a[1].as_bytes(), &[("http", tcp.as_fd())]) {
                Ok(p) => {
                    say(format!("granted to={} program={}", p.release, p.program));
                    return;
                }
                Err(e) => {
                    say(handover_err_line(&e));
                    // The app still has its listener: prove it by checking it still listens.
                    assert!(tcp.local_addr().is_ok());
                    say(format!("resumed serving={}", server.is_serving()));
                }
            },
            "refuse" => {
                server.refuse(req, "a backup is running").unwrap();
                say("refused");
            }
            "die" => unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            },
            other => panic!("unknown order {other}"),
        }
    }
}

/// `ho-take SOCKET RELEASE_TIMEOUT_MS STEP_MS NAME [PEER_UIDS]`: take over; say `none`, an error, or
/// `took from=R state=S labels=L port=P socket=B signalled=N`; then on `accept` accept one
/// TCP connection on the inherited listener and say `accepted`.
pub(crate) fn role_take() {
    let a = args();
    let opts = RendezvousOptions::new()
        .socket(&a[0])
        .release(a[3].clone())
        .program("taker")
        .release_timeout(Duration::from_millis(a[1].parse().unwrap()))
        .step_timeout(Duration::from_millis(a[2].parse().unwrap()))
        .peer_uids(peer_uids(&a, 4));
    let got = match take_over(&opts) {
        Ok(None) => return say("none"),
        Ok(Some(g)) => g,
        Err(e) => return say(handover_err_line(&e)),
    };
    let labels: Vec<&str> = got.fds().iter().map(|f| f.label()).collect();
    let labels = labels.join(",");
    let is_socket = got.fds().first().is_some_and(|f| f.is_socket());
    let from = got.predecessor().release.clone();
    let state = String::from_utf8_lossy(got.state()).to_string();
    let signalled = got.signalled().len();
    let (_, _, mut fds) = got.into_parts();
    let fd: OwnedFd = fds.remove(0).into_fd();
    let tcp = TcpListener::from(fd);
    say(format!(
        "took from={from} state={state} labels={labels} port={} socket={is_socket} signalled={signalled}",
        tcp.local_addr().unwrap().port()
    ));
    if read_order().as_deref() == Some("accept") {
        let (mut c, _) = tcp.accept().unwrap();
        c.write_all(b"new\n").unwrap();
        say("accepted");
    }
}

fn serve_kid(socket: &Path, mode: &str) -> (Kid, u16) {
    let mut kid = Kid::spawn(
        "ho-serve",
        &[
            socket.display().to_string(),
            "sessions=3".into(),
            "1000".into(),
            mode.into(),
        ],
    );
    let port = kid.expect("serving port=").parse().unwrap();
    (kid, port)
}

fn take_kid(socket: &Path, name: &str) -> Kid {
    Kid::spawn(
        "ho-take",
        &[
            socket.display().to_string(),
            "10000".into(),
            "5000".into(),
            name.into(),
        ],
    )
}

/// `ho-serve` as `uid` (auto grant, 1 s steps), allowing `peers` ("U1,U2" or ""); returns
/// once it serves.
fn serve_kid_as(uid: u32, socket: &Path, peers: &str) -> Kid {
    let mut kid = Kid::spawn_as(
        uid,
        "ho-serve",
        &[
            socket.display().to_string(),
            "s".into(),
            "1000".into(),
            "auto".into(),
            peers.into(),
        ],
    );
    kid.expect("serving port=");
    kid
}

/// `ho-take` as `uid` (2 s steps) under release name `name`, allowing `peers`.
fn take_kid_as(uid: u32, socket: &Path, name: &str, peers: &str) -> Kid {
    Kid::spawn_as(
        uid,
        "ho-take",
        &[
            socket.display().to_string(),
            "2000".into(),
            "2000".into(),
            name.into(),
            peers.into(),
        ],
    )
}

fn opts(socket: &Path) -> RendezvousOptions {
    RendezvousOptions::new()
        .socket(socket)
        .step_timeout(Duration::from_millis(500))
}

fn is_socket(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[track_caller]
fn assert_handover_err(line: &str, reason: HandoverFailure, fragments: &[&str]) {
    let want = format!("err handover reason={} ", reason.as_str());
    assert!(line.starts_with(&want), "expected {want:?}, got {line:?}");
    for f in fragments {
        assert!(line.contains(f), "{f:?} missing from {line:?}");
    }
}

// --- raw protocol peer, written from docs/handover-protocol.md, not from the library ---

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = b"ULHO".to_vec();
    v.extend_from_slice(&[1, kind, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Read one frame: (type, nfds announced, payload).
fn read_frame(s: &mut UnixStream) -> std::io::Result<(u8, u8, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h)?;
    assert_eq!(&h[..4], b"ULHO");
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p)?;
    Ok((h[5], h[6], p))
}

fn raw_hello(socket: &Path, min: u32, max: u32) -> (UnixStream, u8, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let hello =
        format!("protocol-min={min}\nprotocol-max={max}\npid=1\nrelease=raw\nprogram=raw\n");
    s.write_all(&frame(1, hello.as_bytes())).unwrap();
    let (kind, _, p) = read_frame(&mut s).unwrap();
    (s, kind, String::from_utf8(p).unwrap())
}

// --- tests ---

#[test]
fn first_start_has_no_predecessor() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    assert!(take_over(&opts(&sock)).unwrap().is_none());
    // A missing service directory is a first start too.
    let missing = dir.path().join("nope").join("handover.sock");
    assert!(take_over(&opts(&missing)).unwrap().is_none());
    assert!(listing(dir.path()).is_empty(), "nothing created");
}

#[test]
fn old_process_hands_its_listening_socket_and_state_to_a_new_process() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, port) = serve_kid(&sock, "orders");
    assert!(is_socket(&sock));
    let mode = fs::symlink_metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket must not be world-accessible");

    let mut new = take_kid(&sock, "new");
    assert_eq!(old.expect("request from="), "new");
    old.send("grant");
    let took = new.expect("took ");
    assert!(took.contains(" state=sessions=3 "), "{took}");
    assert_eq!(
        took,
        format!("from=old state=sessions=3 labels=http port={port} socket=true signalled=1")
    );
    assert_eq!(old.expect("granted to="), "new program=taker");
    old.finish();
    // The old version is gone; the new one accepts on the very same listening socket.
    new.send("accept");
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "new\n");
    new.expect("accepted");
    new.finish();
    // The socket is gone with its server; the signal is beside it for the Supervisor.
    assert!(!sock.exists());
    let signal = fs::read_to_string(dir.path().join("handover-complete")).unwrap();
    assert!(signal.starts_with("update-lock handover v1\n"), "{signal}");
}

#[test]
fn new_version_crashing_mid_transfer_leaves_the_old_one_serving() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, port) = serve_kid(&sock, "orders");

    // A successor that receives the state and the descriptor, then dies without ACK.
    let (mut raw, kind, _) = raw_hello(&sock, 1, 1);
    assert_eq!(kind, 2, "WELCOME");
    assert_eq!(old.expect("request from="), "raw");
    old.send("grant");
    let (kind, nfds, _) = read_frame(&mut raw).unwrap();
    assert_eq!((kind, nfds), (4, 1), "STATE with one descriptor");
    drop(raw);
    assert_handover_err(
        &old.line(),
        HandoverFailure::PeerGone,
        &["closed the connection", "keeps its resources"],
    );
    assert_eq!(old.expect("resumed "), "serving=true");
    assert!(is_socket(&sock), "still serving");

    // The next successor gets everything.
    let mut new = take_kid(&sock, "second");
    assert_eq!(old.expect("request from="), "second");
    old.send("grant");
    assert!(new.expect("took ").contains(&format!("port={port}")));
    old.expect("granted to=");
    old.finish();
    new.finish();
}

#[test]
fn a_successor_that_stalls_before_acknowledging_times_out_and_the_old_one_keeps_serving() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let (mut raw, _, _) = raw_hello(&sock, 1, 1);
    old.expect("request from=");
    let t0 = Instant::now();
    old.send("grant");
    let _state = read_frame(&mut raw).unwrap();
    // Never ACK: the old version's step timeout (1 s) ends the wait.
    assert_handover_err(&old.line(), HandoverFailure::Stalled, &["in time"]);
    assert!(t0.elapsed() < LONG);
    assert_eq!(old.expect("resumed "), "serving=true");
    drop(raw);
}

#[test]
fn old_version_crashing_mid_transfer_fails_the_successor_and_leaves_a_stale_socket_that_is_cleaned_up(
) {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let mut new = take_kid(&sock, "new");
    old.expect("request from=");
    old.send("die");
    let st = old.wait();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert_handover_err(
        &new.line(),
        HandoverFailure::PeerGone,
        &["closed the connection", "start fresh"],
    );
    new.finish();
    // The dead server's socket is still there, but nobody holds its companion lock: the
    // next successor finds no predecessor and removes it; nothing else is touched.
    assert!(is_socket(&sock));
    assert!(take_over(&opts(&sock)).unwrap().is_none());
    assert!(!sock.exists(), "stale socket removed");
    assert!(
        !dir.path().join("handover-complete").exists(),
        "no signal without a hand-over"
    );
    // A new server can serve on the name again.
    let s = HandoverServer::bind(&opts(&sock)).unwrap();
    assert!(is_socket(&sock));
    drop(s);
    assert!(!sock.exists(), "a dropped server removes its socket");
}

#[test]
fn a_stale_socket_from_a_killed_server_is_replaced_when_a_new_server_binds() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let before = inode(&sock);
    old.kill();
    assert!(is_socket(&sock), "SIGKILL leaves the socket file");
    let s = HandoverServer::bind(&opts(&sock)).unwrap();
    assert_ne!(inode(&sock), before, "replaced by a live socket");
    assert!(s.is_serving());
}

#[test]
fn an_old_version_that_stalls_in_its_release_step_times_the_successor_out() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let mut new = Kid::spawn(
        "ho-take",
        &[
            sock.display().to_string(),
            "300".into(),
            "5000".into(),
            "new".into(),
        ],
    );
    old.expect("request from=");
    // The old one never answers within the 300 ms release timeout.
    assert_handover_err(
        &new.line(),
        HandoverFailure::Stalled,
        &["in time", "keeps its resources"],
    );
    new.finish();
    // When the old version finally grants, its successor is gone: it keeps serving.
    old.send("grant");
    assert_handover_err(&old.line(), HandoverFailure::PeerGone, &[]);
    assert_eq!(old.expect("resumed "), "serving=true");
}

#[test]
fn two_successors_racing_exactly_one_wins() {
    require_root();
    for _ in 0..5 {
        let dir = tmpdir();
        let sock = dir.path().join("handover.sock");
        let (mut old, port) = serve_kid(&sock, "auto");
        let mut a = take_kid(&sock, "a");
        let mut b = take_kid(&sock, "b");
        let (la, lb) = (a.line(), b.line());
        let won: Vec<&String> = [&la, &lb]
            .into_iter()
            .filter(|l| l.starts_with("took "))
            .collect();
        assert_eq!(won.len(), 1, "exactly one winner: {la:?} / {lb:?}");
        assert!(won[0].contains(&format!("port={port}")));
        let lost = if la.starts_with("took ") { &lb } else { &la };
        // The loser either was told "taken" or came after the socket was gone.
        assert!(
            lost == "none" || lost.starts_with("err handover reason=taken "),
            "loser: {lost:?}"
        );
        old.expect("request from=");
        old.expect("granted to=");
        old.finish();
    }
}

#[test]
fn a_successor_queued_while_another_takes_over_is_told_taken() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let mut first = take_kid(&sock, "first");
    assert_eq!(old.expect("request from="), "first");
    // A second successor connects and says HELLO while the first is being served.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(&frame(1, b"protocol-min=1\nprotocol-max=1\nrelease=late\n"))
        .unwrap();
    old.send("grant");
    first.expect("took ");
    let (kind, _, p) = read_frame(&mut s).unwrap();
    assert_eq!(kind, 3, "REFUSE");
    let p = String::from_utf8(p).unwrap();
    assert!(
        p.contains("reason=taken\n") && p.contains("release first"),
        "{p}"
    );
    old.expect("granted to=");
}

#[test]
fn a_refusal_reaches_the_successor_and_the_old_version_keeps_serving() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "orders");
    let mut new = take_kid(&sock, "new");
    old.expect("request from=");
    old.send("refuse");
    old.expect("refused");
    assert_handover_err(
        &new.line(),
        HandoverFailure::Refused,
        &["a backup is running"],
    );
    assert!(is_socket(&sock));
}

/// Hardening D: a peer is who SO_PEERCRED says it is. Our uid or root by default; another
/// uid only when allowed. A root successor no longer takes over from a process of another
/// uid (which could be an impostor at the socket path).
#[test]
fn d_only_our_uid_root_or_an_allowed_peer_uid_take_part_in_a_hand_over() {
    require_root();
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = dir.path().join("handover.sock");
    // The old version runs as uid 1000: uid 1001 may not even connect (mode 0600).
    let mut old = serve_kid_as(APP_UID, &sock, "");
    let take_as = |uid: u32, peers: &str| take_kid_as(uid, &sock, "x", peers);
    let mut other = take_as(APP_UID + 1, "");
    assert_handover_err(
        &other.line(),
        HandoverFailure::Uid,
        &["uid 1000", "same user"],
    );
    other.finish();
    // Root, without uid 1000 allowed: it takes nothing from a process of another user.
    let mut root = take_as(0, "");
    assert_handover_err(
        &root.line(),
        HandoverFailure::Uid,
        &[
            "uid 1000",
            "refusing to take anything from it",
            "--peer-uid",
        ],
    );
    root.finish();
    assert!(is_socket(&sock), "nothing was removed");
    // Root with uid 1000 allowed takes over.
    let mut root = take_as(0, "1000");
    assert!(root.expect("took ").starts_with("from=old "));
    old.expect("request from=");
    old.expect("granted to=");
}

/// Hardening D: an allow-list lets two releases of different uids hand over (the server's
/// socket is then connectable by all, and SO_PEERCRED decides).
#[test]
fn d_an_allowed_peer_uid_may_take_over_and_another_is_refused_by_the_server() {
    require_root();
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = dir.path().join("handover.sock");
    let mut old = serve_kid_as(APP_UID, &sock, "1001");
    let take_as = |uid: u32| take_kid_as(uid, &sock, "new", "1000");
    let mut stranger = take_as(APP_UID + 2);
    assert_handover_err(
        &stranger.line(),
        HandoverFailure::Uid,
        &["uid 1002", "may not take over from uid 1000"],
    );
    stranger.finish();
    let mut allowed = take_as(APP_UID + 1);
    assert!(allowed.expect("took ").starts_with("from=old "));
    old.expect("request from=new");
    old.expect("granted to=");
}

/// Hardening D: silent connections (same uid, never saying HELLO) cannot starve a real
/// successor: greetings are served concurrently.
#[test]
fn d_silent_connections_never_delay_a_real_successor() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let (mut old, _) = serve_kid(&sock, "auto");
    let silent: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    // Half a frame on some of them too.
    for s in silent.iter().take(10) {
        (&*s).write_all(b"ULHO\x01").unwrap();
    }
    let started = std::time::Instant::now();
    // A 1 s step: one silent connection greeted in turn would already use it up.
    let mut new = Kid::spawn(
        "ho-take",
        &[
            sock.display().to_string(),
            "2000".into(),
            "1000".into(),
            "new".into(),
        ],
    );
    assert!(new.expect("took ").starts_with("from=old "), "took over");
    old.expect("request from=new");
    old.expect("granted to=");
    eprintln!(
        "took over in {:?} with 40 silent connections",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn a_root_server_refuses_an_unprivileged_successor() {
    require_root();
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = dir.path().join("handover.sock");
    let (_old, _) = serve_kid(&sock, "auto");
    let mut other = Kid::spawn_as(
        APP_UID,
        "ho-take",
        &[
            sock.display().to_string(),
            "2000".into(),
            "2000".into(),
            "x".into(),
        ],
    );
    assert_handover_err(&other.line(), HandoverFailure::Uid, &["uid 0"]);
}

#[test]
fn a_second_server_on_the_same_socket_is_refused() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let s = HandoverServer::bind(&opts(&sock)).unwrap();
    let e = HandoverServer::bind(&opts(&sock)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Handover);
    assert_eq!(e.handover_failure(), Some(HandoverFailure::AlreadyServing));
    assert!(
        e.to_string().contains("only one process per service"),
        "{e}"
    );
    // It names the process serving (this one: the first server lives here).
    let me = std::process::id();
    assert!(e.to_string().contains(&format!("(pid {me}, uid ")), "{e}");
    assert!(s.is_serving() && is_socket(&sock));
}

#[test]
fn bad_input_is_rejected_and_nothing_is_deleted() {
    let dir = tmpdir();
    // A regular file at the socket path: neither side touches it.
    let file = dir.path().join("handover.sock");
    fs::write(&file, "someone's data").unwrap();
    for e in [
        HandoverServer::bind(&opts(&file)).unwrap_err(),
        take_over(&opts(&file)).unwrap_err(),
    ] {
        assert_err(
            &e,
            ErrorCode::Handover,
            &[
                "handover.sock",
                "a regular file owned by uid 0",
                "instead of a socket",
            ],
        );
        assert_eq!(e.handover_failure(), Some(HandoverFailure::Blocked));
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "someone's data");
    // A symlink at the socket path is not followed, not replaced.
    let target = dir.path().join("target");
    fs::write(&target, "t").unwrap();
    let link = dir.path().join("link.sock");
    symlink(&target, &link).unwrap();
    let e = HandoverServer::bind(&opts(&link)).unwrap_err();
    assert_err(
        &e,
        ErrorCode::Handover,
        &["a symbolic link (to ", "instead of a socket"],
    );
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap(), "t");
    // A name too long for a socket address.
    let long = dir.path().join("x".repeat(80));
    let e = HandoverServer::bind(&opts(&long)).unwrap_err();
    assert_err(
        &e,
        ErrorCode::InvalidPath,
        &["too long for a Unix socket address"],
    );
    // An empty path means the default, so try a directory-only path.
    let e = take_over(&opts(Path::new("/"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidPath);
}

#[test]
fn garbage_and_old_protocols_are_turned_away_and_the_server_keeps_serving() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    let srv = server.clone();
    let t = std::thread::spawn(move || srv.accept(Some(LONG)));
    // Garbage: dropped without an answer.
    let mut g = UnixStream::connect(&sock).unwrap();
    g.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    g.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    assert!(buf.is_empty(), "no answer to garbage");
    // A successor that only speaks protocol 2..3.
    let (_s, kind, text) = raw_hello(&sock, 2, 3);
    assert_eq!(kind, 3, "REFUSE");
    assert!(text.contains("reason=version\n"), "{text}");
    // A proper successor is still served.
    let (_s, kind, text) = raw_hello(&sock, 1, 7);
    assert_eq!(kind, 2, "WELCOME");
    assert!(text.contains("protocol=1\n"), "{text}");
    let req = t.join().unwrap().unwrap().expect("request");
    assert_eq!(req.successor().release, "raw");
    assert_eq!(req.successor().program, "raw");
    assert_eq!(req.successor().protocol, 1);
}

#[test]
fn a_server_that_speaks_something_else_is_a_protocol_error() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut h = [0u8; 12];
        c.read_exact(&mut h).unwrap();
        c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    let e = take_over(&opts(&sock)).unwrap_err();
    assert_eq!(e.handover_failure(), Some(HandoverFailure::Protocol));
    assert!(e.to_string().contains("does not speak"), "{e}");
    t.join().unwrap();
    assert!(is_socket(&sock), "someone else's socket is left alone");
}

#[test]
fn state_over_the_limit_is_refused_on_both_sides() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock).max_state(16)).unwrap();
    let srv = server.clone();
    let t = std::thread::spawn(move || {
        let req = srv.accept(Some(LONG)).unwrap().unwrap();
        srv.grant(req, &[0u8; 17], &[])
    });
    let e = take_over(&opts(&sock).signal(false)).unwrap_err();
    assert_eq!(e.handover_failure(), Some(HandoverFailure::TooLarge));
    let e2 = t.join().unwrap().unwrap_err();
    assert_eq!(e2.handover_failure(), Some(HandoverFailure::TooLarge));
    assert!(e2.to_string().contains("at most 16 bytes"), "{e2}");
    assert!(server.is_serving());
}

#[test]
fn descriptors_keep_their_labels_order_and_kind() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    let data = dir.path().join("data.bin");
    fs::write(&data, "device").unwrap();
    let srv = server.clone();
    let t = std::thread::spawn(move || {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let file = fs::File::open(&data).unwrap();
        let req = srv.accept(Some(LONG)).unwrap().unwrap();
        let port = tcp.local_addr().unwrap().port();
        srv.grant(req, b"", &[("http", tcp.as_fd()), ("dev", file.as_fd())])
            .unwrap();
        port
    });
    let got = take_over(&opts(&sock).signal(false)).unwrap().unwrap();
    let port = t.join().unwrap();
    assert!(got.signalled().is_empty());
    let fds = got.fds();
    assert_eq!(fds.len(), 2);
    assert_eq!((fds[0].label(), fds[0].is_socket()), ("http", true));
    assert_eq!((fds[1].label(), fds[1].is_socket()), ("dev", false));
    // Received descriptors are close-on-exec.
    for f in fds {
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
    let (_, _, mut fds) = got.into_parts();
    let dev = fds.pop().unwrap().into_fd();
    let mut s = String::new();
    fs::File::from(dev).read_to_string(&mut s).unwrap();
    assert_eq!(s, "device");
    let tcp = TcpListener::from(fds.pop().unwrap().into_fd());
    assert_eq!(tcp.local_addr().unwrap().port(), port);
    assert!(!server.is_serving(), "finished after the hand-over");
    let e = server.accept(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.handover_failure(), Some(HandoverFailure::Finished));
}

#[test]
fn accept_times_out_is_cancelled_and_close_ends_it() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    assert!(server
        .accept(Some(Duration::from_millis(20)))
        .unwrap()
        .is_none());
    let token = CancelToken::new().unwrap();
    let (srv, tok) = (server.clone(), token.clone());
    let t = std::thread::spawn(move || srv.accept_with(None, WaitControl::new().cancel_on(tok)));
    token.cancel();
    let e = t.join().unwrap().unwrap_err();
    assert_err(
        &e,
        ErrorCode::Cancelled,
        &[
            "waiting for the hand-over on",
            "handover.sock",
            "nothing was taken",
        ],
    );
    assert!(
        server.is_serving(),
        "cancelling a wait does not stop serving"
    );
    // close() from another thread ends a waiting accept with "finished".
    let srv = server.clone();
    let t = std::thread::spawn(move || srv.accept(None));
    server.close();
    let e = t.join().unwrap().unwrap_err();
    assert_eq!(e.handover_failure(), Some(HandoverFailure::Finished));
    assert!(!sock.exists());
    server.close();
    // A successor now finds nobody.
    let tok = CancelToken::new().unwrap();
    assert!(
        take_over_with(&opts(&sock), WaitControl::new().cancel_on(tok))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_signal_goes_where_the_options_say() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let elsewhere = dir.path().join("sig").join("kill-me");
    fs::create_dir(dir.path().join("sig")).unwrap();
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    let srv = server.clone();
    let t = std::thread::spawn(move || {
        let req = srv.accept(Some(LONG)).unwrap().unwrap();
        srv.grant(req, b"x", &[]).unwrap()
    });
    let got = take_over(&opts(&sock).signal_paths([&elsewhere]))
        .unwrap()
        .unwrap();
    t.join().unwrap();
    assert_eq!(got.signalled(), std::slice::from_ref(&elsewhere));
    assert!(elsewhere.exists());
    assert!(!dir.path().join("handover-complete").exists());
    assert!(got.signal_error().is_none());
}

#[test]
fn a_signal_that_cannot_be_written_does_not_lose_the_inheritance() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    let srv = server.clone();
    let t = std::thread::spawn(move || {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let req = srv.accept(Some(LONG)).unwrap().unwrap();
        srv.grant(req, b"x", &[("http", tcp.as_fd())]).unwrap()
    });
    let bad: PathBuf = dir
        .path()
        .join("missing")
        .join("deeper")
        .join("handover-complete");
    let got = take_over(&opts(&sock).signal_paths([&bad]))
        .unwrap()
        .unwrap();
    t.join().unwrap();
    assert_eq!(got.fds().len(), 1, "the descriptors are ours anyway");
    let e = got.signal_error().expect("signal error");
    assert_eq!(e.code(), ErrorCode::InvalidPath);
}

#[cfg(feature = "tokio")]
#[test]
fn async_api_hands_over_without_blocking_the_runtime() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let o = opts(&sock);
        assert!(update_lock::take_over_async(&o).await.unwrap().is_none());
        let server = HandoverServer::bind(&o).unwrap();
        // A dropped accept future cancels its wait and the server keeps serving.
        let r = tokio::time::timeout(Duration::from_millis(50), server.accept_async(None)).await;
        assert!(r.is_err(), "timed out");
        assert!(server.is_serving());
        let srv = server.clone();
        let old = tokio::spawn(async move {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let dup: OwnedFd = tcp.as_fd().try_clone_to_owned().unwrap();
            let req = srv.accept_async(None).await.unwrap().unwrap();
            srv.grant_async(req, b"async".to_vec(), vec![("http".into(), dup)])
                .await
                .unwrap();
            tcp.local_addr().unwrap().port()
        });
        let got = update_lock::take_over_async(&o.clone().release("new"))
            .await
            .unwrap()
            .unwrap();
        let port = old.await.unwrap();
        assert_eq!(got.state(), b"async");
        let (_, _, mut fds) = got.into_parts();
        let fd = fds.remove(0).into_fd();
        let tcp = TcpListener::from(fd);
        assert_eq!(tcp.local_addr().unwrap().port(), port);
    });
}

#[test]
fn a_forked_child_dropping_the_server_leaves_the_parents_socket() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let server = HandoverServer::bind(&opts(&sock)).unwrap();
    // SAFETY: the child only drops its copy and exits.
    match unsafe { libc::fork() } {
        0 => {
            server.close();
            drop(server);
            unsafe { libc::_exit(0) };
        }
        pid => {
            let mut st = 0;
            assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
        }
    }
    assert!(is_socket(&sock), "the parent still serves");
    assert!(server.is_serving());
}

#[test]
fn the_successor_can_serve_on_the_same_socket_as_soon_as_it_took_over() {
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let mut server = HandoverServer::bind(&opts(&sock).release("gen0")).unwrap();
    // The window this guards against (the old server keeping the name until after BYE) is
    // short: many generations make a regression show up.
    for generation in 1..=300 {
        let old = server.clone();
        let t = std::thread::spawn(move || {
            let req = old.accept(Some(LONG)).unwrap().unwrap();
            old.grant(req, b"", &[]).unwrap();
        });
        let name = format!("gen{generation}");
        let got = take_over(&opts(&sock).release(name.clone()).signal(false))
            .unwrap()
            .expect("a predecessor");
        assert_eq!(got.predecessor().release, format!("gen{}", generation - 1));
        // No retry: the old server released the name before it said BYE.
        server = HandoverServer::bind(&opts(&sock).release(name)).unwrap();
        t.join().unwrap();
    }
    drop(server);
    assert!(!sock.exists());
}

#[test]
fn a_refused_socket_path_leaves_no_companion_file_behind() {
    let dir = tmpdir();
    let file = dir.path().join("handover.sock");
    fs::write(&file, "x").unwrap();
    HandoverServer::bind(&opts(&file)).unwrap_err();
    assert_eq!(listing(dir.path()), ["handover.sock"]);
}

/// Hardening H/D: a symlink planted at the companion lock is described as what it is (not
/// a bare "permission denied"), never followed, and left alone.
#[test]
fn d_a_symlink_at_the_companion_lock_is_named_and_left_alone() {
    require_root();
    let dir = tmpdir();
    let sock = dir.path().join("handover.sock");
    let companion = dir.path().join("handover.sock.lock");
    let made = std::process::Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "ln",
            "-s",
            "/etc/passwd",
        ])
        .arg(&companion)
        .status()
        .unwrap();
    assert!(made.success());
    let e = HandoverServer::bind(&opts(&sock)).unwrap_err();
    assert_err(
        &e,
        ErrorCode::Handover,
        &[
            "a symbolic link (to /etc/passwd) owned by uid 1000",
            "companion lock",
            "remove it",
        ],
    );
    assert_eq!(e.handover_failure(), Some(HandoverFailure::Blocked));
    assert!(fs::symlink_metadata(&companion)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!sock.exists());
}
