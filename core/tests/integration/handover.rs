//! The hand-over signal: appears atomically, idempotent, replaces a symlink without
//! following it, fails clearly on a directory.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;
use update_lock::{handover_complete, ErrorCode, HandoverOptions, LockOptions};

const BODY_START: &str = "update-lock handover v1\n";

#[test]
fn signal_is_created_and_creating_it_again_is_fine() {
    let dir = tmpdir();
    let sig = dir.path().join("handover-complete");
    let o = HandoverOptions::new().paths([&sig]);
    assert_eq!(handover_complete(&o).unwrap(), vec![sig.clone()]);
    let body = fs::read_to_string(&sig).unwrap();
    assert!(body.starts_with(BODY_START), "{body}");
    assert!(
        body.contains(&format!("pid={}\n", std::process::id())),
        "{body}"
    );
    assert_eq!(handover_complete(&o).unwrap(), vec![sig.clone()]);
    assert_eq!(
        listing(dir.path()),
        ["handover-complete"],
        "no temp file left"
    );

    let st = update_lock::status(&LockOptions::new().paths([dir.path().join("u.lock")]), &o);
    assert!(st.handover[0].pending);
    // The Supervisor consumes it (unlinks); signalling again works.
    fs::remove_file(&sig).unwrap();
    let st = update_lock::status(&LockOptions::new().paths([dir.path().join("u.lock")]), &o);
    assert!(!st.handover[0].pending);
    handover_complete(&o).unwrap();
    assert!(exists(&sig));
}

#[test]
fn missing_directory_is_created_1777() {
    let dir = tmpdir();
    let sig = dir.path().join("balena").join("handover-complete");
    handover_complete(&HandoverOptions::new().paths([&sig])).unwrap();
    assert!(exists(&sig));
    let mode = fs::metadata(sig.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o1777);
}

#[test]
fn a_reader_never_sees_a_partial_signal() {
    let dir = tmpdir();
    let sig = dir.path().join("handover-complete");
    let o = HandoverOptions::new().paths([&sig]);
    handover_complete(&o).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (s, p) = (stop.clone(), sig.clone());
    // Watch the file while it is rewritten: with temp + rename every read sees a whole
    // body; writing in place would show an empty or partial one now and then.
    let reader = std::thread::spawn(move || {
        let mut bad = Vec::new();
        let mut reads = 0u64;
        while !s.load(Ordering::SeqCst) {
            match fs::read_to_string(&p) {
                Ok(body) => {
                    reads += 1;
                    if !(body.starts_with(BODY_START)
                        && body.ends_with('\n')
                        && body.contains("at="))
                    {
                        bad.push(body);
                    }
                }
                Err(e) => bad.push(format!("missing: {e}")),
            }
        }
        (reads, bad)
    });
    for _ in 0..300 {
        handover_complete(&o).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, bad) = reader.join().unwrap();
    assert!(reads > 0);
    assert!(
        bad.is_empty(),
        "a reader saw {} partial signals: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    assert_eq!(listing(dir.path()), ["handover-complete"]);
}

#[test]
fn a_symlink_at_the_name_is_replaced_not_followed() {
    let dir = tmpdir();
    let target = dir.path().join("target");
    fs::write(&target, "precious").unwrap();
    let sig = dir.path().join("handover-complete");
    symlink(&target, &sig).unwrap();
    handover_complete(&HandoverOptions::new().paths([&sig])).unwrap();
    let m = fs::symlink_metadata(&sig).unwrap();
    assert!(m.file_type().is_file(), "the signal is a regular file now");
    assert!(fs::read_to_string(&sig).unwrap().starts_with(BODY_START));
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "precious",
        "the target was written through"
    );

    let nowhere = dir.path().join("nowhere");
    let sig2 = dir.path().join("resin-kill-me");
    symlink(&nowhere, &sig2).unwrap();
    handover_complete(&HandoverOptions::new().paths([&sig2])).unwrap();
    assert!(fs::symlink_metadata(&sig2).unwrap().file_type().is_file());
    assert!(!exists(&nowhere), "a dangling symlink's target was created");
}

#[test]
fn a_directory_at_the_name_fails_clearly() {
    let dir = tmpdir();
    let sig = dir.path().join("handover-complete");
    fs::create_dir(&sig).unwrap();
    fs::write(sig.join("inside"), "x").unwrap();
    let err = handover_complete(&HandoverOptions::new().paths([&sig])).unwrap_err();
    assert_err(
        &err,
        ErrorCode::InvalidPath,
        &["handover-complete", "directory", "rmdir"],
    );
    assert!(fs::metadata(&sig).unwrap().is_dir());
    assert_eq!(listing(&sig), ["inside"]);
    assert_eq!(
        listing(dir.path()),
        ["handover-complete"],
        "temp file left behind"
    );

    // An empty directory too: rename(2) never replaces a directory with a file.
    let empty = dir.path().join("empty-dir");
    fs::create_dir(&empty).unwrap();
    let err = handover_complete(&HandoverOptions::new().paths([&empty])).unwrap_err();
    assert_err(&err, ErrorCode::InvalidPath, &["directory"]);
    assert!(fs::metadata(&empty).unwrap().is_dir());
}

#[test]
fn every_explicit_path_must_succeed() {
    let dir = tmpdir();
    let good = dir.path().join("handover-complete");
    let bad = dir
        .path()
        .join("missing")
        .join("deeper")
        .join("resin-kill-me");
    let err = handover_complete(&HandoverOptions::new().paths([&good, &bad])).unwrap_err();
    assert_err(&err, ErrorCode::InvalidPath, &["does not exist"]);
}

#[test]
fn concurrent_signals_from_threads_of_one_process_all_succeed() {
    let dir = tmpdir();
    let sig = dir.path().join("handover-complete");
    let o = HandoverOptions::new().paths([&sig]);
    let start = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (o, start) = (o.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..100)
                    .filter_map(|_| handover_complete(&o).err().map(|e| e.to_string()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        errors.is_empty(),
        "{} concurrent signals failed, e.g. {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(listing(dir.path()), ["handover-complete"]);
}
