//! Who owns a held lock: a lock deleted under us (the Supervisor's override) is reported
//! lost and whatever replaced it is never deleted; a forked child never releases its
//! parent's lock; descriptors do not leak into executed programs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::*;
use update_lock::{ErrorCode, UpdateLock};

#[test]
fn override_deletion_is_lost_and_the_supervisors_new_lock_is_kept() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let mut lock = UpdateLock::acquire(&opts(&[&path])).unwrap();
    lock.check().unwrap();

    // The Supervisor's override unlinks the app's lock file.
    fs::remove_file(&path).unwrap();
    let err = lock.check().unwrap_err();
    assert_err(
        &err,
        ErrorCode::Lost,
        &["updates.lock", "was deleted", "override"],
    );
    assert!(lock.is_held(), "the handle still has to be released");

    // ... then takes its own lock at the same name.
    assert_eq!(supervisor_lockfile(&path), 0);
    let id = inode(&path);
    let err = lock.check().unwrap_err();
    assert_err(&err, ErrorCode::Lost, &["Supervisor"]);

    let err = lock.release().unwrap_err();
    assert_err(&err, ErrorCode::Lost, &["updates.lock"]);
    assert_eq!(err.path(), Some(path.as_path()));
    assert_eq!(
        inode(&path),
        id,
        "the Supervisor's lock must not be deleted"
    );
    assert_eq!(fs::metadata(&path).unwrap().uid(), NOBODY);
    // Released for good: idempotent, and check says so.
    lock.release().unwrap();
    assert_eq!(lock.check().unwrap_err().code(), ErrorCode::NotHeld);
    drop(lock);
    assert_eq!(inode(&path), id);
}

#[test]
fn losing_one_path_still_releases_the_others_and_keeps_another_apps_lock() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let (main, legacy) = (paths[0].clone(), paths[1].clone());
    let mut lock = UpdateLock::acquire(&opts(&paths)).unwrap();

    fs::remove_file(&legacy).unwrap();
    // Another app (another process) now takes the legacy name.
    let mut other = Kid::spawn("hold", &["none".into(), legacy.display().to_string()]);
    other.expect("acquired");
    let id = inode(&legacy);

    let err = lock.check().unwrap_err();
    assert_err(
        &err,
        ErrorCode::Lost,
        &["resin-updates.lock", "replaced by another file"],
    );
    let err = lock.release().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Lost);
    assert_eq!(err.path(), Some(legacy.as_path()));
    assert!(!exists(&main), "the path still ours was released");
    assert_eq!(reboot_probe(&main), 0);
    fs::remove_file(&main).unwrap();
    assert_eq!(
        inode(&legacy),
        id,
        "the other app's lock must not be deleted"
    );

    other.send("check");
    assert_eq!(other.line(), "ok", "the other app still holds its lock");
    other.send("release");
    assert_eq!(other.line(), "ok");
    other.finish();
    assert!(!exists(&legacy));
}

#[test]
fn dropping_a_lost_lock_leaves_the_new_file_alone() {
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let lock = UpdateLock::acquire(&opts(&[&path])).unwrap();
    fs::remove_file(&path).unwrap();
    fs::write(&path, "someone else's").unwrap();
    let id = inode(&path);
    drop(lock);
    assert_eq!(inode(&path), id);
    assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's");
}

#[test]
fn forked_child_never_releases_the_parents_lock() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let mut lock = UpdateLock::acquire(&opts(&paths)).unwrap();
    let ids: Vec<_> = paths.iter().map(|p| inode(p)).collect();

    // SAFETY: the child only drops the inherited handle (close(2), free) and _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = (|| {
                if lock.is_held() {
                    return 10; // a forked child must not think it holds the lock
                }
                if lock.release().is_err() {
                    return 11;
                }
                drop(lock);
                0
            })();
            // SAFETY: leave without running the test harness's exit path.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    assert_eq!(paths.iter().map(|p| inode(p)).collect::<Vec<_>>(), ids);
    assert_eq!(reboot_probe(&paths[0]), 1, "the parent still holds flock");
    assert_eq!(supervisor_lockfile(&paths[0]), 73);
    assert!(lock.is_held());
    lock.check().unwrap();
    lock.release().unwrap();
    for p in &paths {
        assert!(!exists(p));
    }
}

#[test]
fn lock_descriptors_do_not_leak_into_executed_programs() {
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let lock = UpdateLock::acquire(&opts(&paths)).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("for f in /proc/self/fd/*; do readlink \"$f\"; done; ls -l /proc/self/fd")
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(seen.contains("/proc/"), "the probe listed nothing: {seen}");
    for p in &paths {
        let d = p.parent().unwrap().display().to_string();
        assert!(
            !seen.contains(&d),
            "a lock descriptor leaked into a child: {seen}"
        );
    }
    drop(lock);
}
