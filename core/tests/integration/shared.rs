//! Shared mode (issue 18, item 1): holders of the same app hold the lock at once, the
//! readers (the Supervisor's `lockfile` as 65534, the reboot's `flock -nx`) see it held
//! while any is inside, the last one out removes it; what is not ours to join is waited
//! for; and a nested acquisition by the same owner fails fast instead of waiting for
//! itself.

use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use update_lock::{ErrorCode, LockOwner, UpdateLock};

fn held_for_both_readers(path: &std::path::Path) {
    assert_eq!(
        supervisor_lockfile(path),
        73,
        "the Supervisor must see the lock"
    );
    assert_eq!(reboot_probe(path), 1, "the reboot probe must see a flock");
}

#[test]
fn two_processes_hold_at_once_and_the_last_one_out_removes_it() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let args = |t: &str| vec![t.to_string(), path.display().to_string()];
    let mut first = Kid::spawn("hold-shared", &args("none"));
    first.expect("acquired");
    // Try once: a shared hold joins at once instead of waiting.
    let mut second = Kid::spawn("hold-shared", &args("0"));
    second.expect("acquired");
    held_for_both_readers(&path);
    first.send("release");
    assert_eq!(first.line(), "ok");
    assert!(exists(&path), "the second holder is still inside");
    held_for_both_readers(&path);
    second.send("release");
    assert_eq!(second.line(), "ok");
    assert!(!exists(&path), "the last one out removes the lock");
    assert_eq!(
        listing(dir.path()),
        Vec::<String>::new(),
        "nothing left behind"
    );
    assert_eq!(supervisor_lockfile(&path), 0, "the Supervisor gets in now");
    first.finish();
    second.finish();
}

#[test]
fn exclusive_and_shared_wait_for_each_other() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let p = path.display().to_string();
    let mut exclusive = Kid::spawn("hold", &["none".into(), p.clone()]);
    exclusive.expect("acquired");
    let mut shared = Kid::spawn("hold-shared", &["0".into(), p.clone()]);
    let (code, msg) = parse_err(&shared.line());
    assert_eq!(code, "held", "{msg}");
    assert!(
        msg.contains("held exclusively, so a shared hold waits"),
        "{msg}"
    );
    shared.finish();
    exclusive.send("release");
    assert_eq!(exclusive.line(), "ok");
    exclusive.finish();
    let mut shared = Kid::spawn("hold-shared", &["0".into(), p.clone()]);
    shared.expect("acquired");
    let mut exclusive = Kid::spawn("hold", &["0".into(), p.clone()]);
    let (code, msg) = parse_err(&exclusive.line());
    assert_eq!(code, "held", "{msg}");
    exclusive.finish();
    shared.send("release");
    assert_eq!(shared.line(), "ok");
    assert!(!exists(&path));
    shared.finish();
}

#[test]
fn another_uids_shared_lock_is_waited_for_and_the_message_says_why() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let p = path.display().to_string();
    let mut app = Kid::spawn_as(APP_UID, "hold-shared", &["none".into(), p.clone()]);
    app.expect("acquired");
    // uid 1001 could not remove uid 1000's file as the last one out: it must not join.
    let mut other = Kid::spawn_as(1001, "hold-shared", &["0".into(), p.clone()]);
    let (code, msg) = parse_err(&other.line());
    assert_eq!(code, "held", "{msg}");
    assert!(
        msg.contains("belongs to uid 1000 and we run as uid 1001"),
        "{msg}"
    );
    other.finish();
    // Root may join (it can remove any file of the sticky directory), and as the last one
    // out it removes uid 1000's file.
    let mut root = Kid::spawn("hold-shared", &["0".into(), p.clone()]);
    root.expect("acquired");
    app.send("release");
    assert_eq!(app.line(), "ok");
    assert!(exists(&path), "root is still inside");
    root.send("release");
    assert_eq!(root.line(), "ok");
    assert!(!exists(&path), "root, the last one out, removed it");
    app.finish();
    root.finish();
}

#[test]
fn the_supervisors_lock_is_never_joined() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    assert_eq!(supervisor_lockfile(&path), 0);
    let before = inode(&path);
    let err = UpdateLock::try_acquire(&opts(&[&path]).shared(true)).unwrap_err();
    assert_err(&err, ErrorCode::Held, &["balena Supervisor"]);
    assert_eq!(inode(&path), before, "the Supervisor's lock is untouched");
}

/// Many shared holders coming and going at once, in several processes: the last one out
/// never leaves the lock behind, and nobody fails.
#[test]
fn the_last_one_out_never_leaves_a_lock_behind() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let mut args = vec!["300".to_string()];
    args.extend(path_args(std::slice::from_ref(&path)));
    let mut kids: Vec<Kid> = (0..4).map(|_| Kid::spawn("shared-rounds", &args)).collect();
    for k in &mut kids {
        assert_eq!(k.line(), "ready");
    }
    for k in &mut kids {
        k.send("go");
    }
    for k in &mut kids {
        assert_eq!(k.expect("done errors="), "0");
        k.finish();
    }
    assert!(!exists(&path), "a shared lock was left behind");
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

/// The same owner (this thread) taking a path it holds: an exclusive flock on a second
/// descriptor would wait for our own forever. It fails at once, names the process and the
/// way out, and deletes nothing; two shared holds of the same owner join.
#[test]
fn a_nested_acquisition_by_the_same_owner_fails_fast_unless_both_are_shared() {
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    // On a thread, so that a regression (a wait for ourselves) fails the test, not hangs it.
    std::thread::spawn(move || {
        let exclusive = opts(&[&p]); // no timeout: would wait forever
        let shared = exclusive.clone().shared(true);
        let outer = UpdateLock::acquire(&exclusive).unwrap();
        let id = inode(&p);
        let e1 = UpdateLock::acquire(&exclusive).unwrap_err();
        let e2 = UpdateLock::acquire(&shared).unwrap_err();
        assert_eq!(inode(&p), id, "nothing deleted or replaced");
        drop(outer);
        let outer = UpdateLock::acquire(&shared).unwrap();
        let e3 = UpdateLock::acquire(&exclusive).unwrap_err();
        let inner = UpdateLock::acquire(&shared).unwrap();
        drop(outer);
        let still = exists(&p);
        drop(inner);
        tx.send((e1, e2, e3, still, exists(&p))).unwrap();
    });
    let (e1, e2, e3, still, after) = rx
        .recv_timeout(REPLY_TIMEOUT)
        .expect("a nested acquisition waited for itself");
    assert_err(
        &e1,
        ErrorCode::AlreadyHeld,
        &[
            "already held by this process",
            "exclusively",
            "not a mutex",
            "shared",
        ],
    );
    assert_eq!(e1.code().number(), 13);
    assert_err(
        &e2,
        ErrorCode::AlreadyHeld,
        &["cannot join this process's exclusive one"],
    );
    assert_err(
        &e3,
        ErrorCode::AlreadyHeld,
        &[
            "in shared mode",
            "wait for this process's own shared one forever",
        ],
    );
    assert!(still, "the inner shared hold kept the lock");
    assert!(!after, "the last shared hold removed it");
}

/// Other owners in the process (threads, tasks) wait for each other as processes do.
#[test]
fn another_owner_in_the_process_waits_instead_of_failing() {
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let first = UpdateLock::acquire(&opts(&[&path])).unwrap();
    let other = opts(&[&path])
        .owner(LockOwner::new())
        .timeout(Some(Duration::ZERO));
    let err = UpdateLock::acquire(&other).unwrap_err();
    assert_err(&err, ErrorCode::Held, &["this same process"]);
    drop(first);
    UpdateLock::acquire(&other).unwrap();
}
