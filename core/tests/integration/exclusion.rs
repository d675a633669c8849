//! Mutual exclusion, checked by an invariant (an O_EXCL marker and a read-modify-write
//! counter inside the critical section), not by timing: many processes, and threads inside
//! one process each with its own handle.

use std::fs;
use std::sync::{Arc, Barrier};

use crate::common::*;
use update_lock::{ErrorCode, Holder, UpdateLock};

const PROCS: usize = 6;
const ROUNDS: usize = 100;

#[test]
fn processes_never_overlap_on_the_two_path_lock() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let data = subdir(dir.path(), "data");
    let marker = data.join("inside");
    let counter = data.join("counter");
    let mut args = vec![
        ROUNDS.to_string(),
        marker.display().to_string(),
        counter.display().to_string(),
    ];
    args.extend(path_args(&paths));

    let mut kids: Vec<Kid> = (0..PROCS).map(|_| Kid::spawn("exclusion", &args)).collect();
    for k in &mut kids {
        assert_eq!(k.line(), "ready");
    }
    for k in &mut kids {
        k.send("go");
    }
    let mut violations = 0;
    for k in &mut kids {
        let done = k.expect("done violations=");
        violations += done.parse::<usize>().unwrap();
        k.finish();
    }
    assert_eq!(
        violations, 0,
        "two holders were inside the critical section at once"
    );
    let total: usize = fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        PROCS * ROUNDS,
        "lost updates: the lock let writers overlap"
    );
    assert!(!exists(&marker));
    for p in &paths {
        assert!(!exists(p), "{} left behind", p.display());
    }
}

#[test]
fn threads_with_their_own_handles_never_overlap() {
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let data = subdir(dir.path(), "data");
    let marker = data.join("inside");
    let counter = data.join("counter");
    const THREADS: usize = 4;
    const ROUNDS: usize = 50;
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (o, marker, counter, start) = (
                opts(&paths).timeout(Some(LONG)),
                marker.clone(),
                counter.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut violations = 0;
                for _ in 0..ROUNDS {
                    let mut lock = UpdateLock::acquire(&o).expect("acquire");
                    violations += critical_section(&marker, &counter, &lock);
                    if lock.release().is_err() {
                        violations += 1;
                    }
                }
                violations
            })
        })
        .collect();
    let violations: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        violations, 0,
        "two threads were inside the critical section at once"
    );
    let total: usize = fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, THREADS * ROUNDS);
    for p in &paths {
        assert!(!exists(p));
    }
}

#[test]
fn a_second_handle_in_the_same_process_fails_clearly_and_deletes_nothing() {
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let o = opts(&paths);
    let mut first = UpdateLock::acquire(&o).unwrap();
    let ids: Vec<_> = paths.iter().map(|p| inode(p)).collect();
    // The same thread: it would wait for itself, so it fails at once (even without a
    // timeout), naming the way out.
    let err = UpdateLock::acquire(&o).unwrap_err();
    assert_err(
        &err,
        ErrorCode::AlreadyHeld,
        &["already held by this process", "reuse the lock you hold"],
    );
    // Another thread waits for it like any other holder, and its message says so.
    let other = o.clone().timeout(Some(std::time::Duration::ZERO));
    let err = std::thread::spawn(move || UpdateLock::acquire(&other).unwrap_err())
        .join()
        .unwrap();
    assert_err(
        &err,
        ErrorCode::Held,
        &["this same process", "release the other handle"],
    );
    match err.holder() {
        Some(Holder::App(r)) => assert!(r.same_process),
        other => panic!("expected our own app record, got {other:?}"),
    }
    // The failed attempt undid nothing of the first handle's.
    assert_eq!(paths.iter().map(|p| inode(p)).collect::<Vec<_>>(), ids);
    first.check().unwrap();
    first.release().unwrap();
    UpdateLock::try_acquire(&o).unwrap();
}
