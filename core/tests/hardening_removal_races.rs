//! Hardening C: our lock is removed atomically with the check that it is ours.
//!
//! A Supervisor stand-in (`support/swapper.py`, a separate process run as root that makes
//! its locks the way procmail `lockfile` does, owned by uid 65534) swaps the name under an
//! app that releases (the override) or reclaims a stale lock (a co-tenant's crafted record).
//! Before the fix, the app's stat-then-unlink deleted the Supervisor's fresh lock.
//! `UL_RACE_SWAPS` sets the number of swaps per loop (default 100,000).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use update_lock::{ErrorCode, UpdateLock};

fn swaps() -> u64 {
    std::env::var("UL_RACE_SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Run the stand-in in `mode` against `path` while `app` loops in two threads; return
/// the stand-in's counts and the app's loop count.
fn race(mode: &str, reclaim: bool) -> (serde_json::Value, u64) {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/swapper.py");
    let stand_in = Command::new("python3")
        .arg(script)
        .arg(mode)
        .arg(&path)
        .arg(swaps().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3 (the Supervisor stand-in)");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let apps: Vec<_> = (0..2)
        .map(|_| {
            let (stop, rounds, o) = (stop.clone(), rounds.clone(), opts(&[&path]));
            let o = o.reclaim_stale(reclaim).timeout(Some(Duration::ZERO));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match UpdateLock::acquire(&o) {
                        Ok(mut lock) => {
                            rounds.fetch_add(1, Ordering::Relaxed);
                            match lock.release() {
                                Ok(()) => {}
                                Err(e) => assert_eq!(e.code(), ErrorCode::Lost, "{e}"),
                            }
                        }
                        Err(e) => assert!(
                            matches!(e.code(), ErrorCode::Held | ErrorCode::Permission),
                            "{e}"
                        ),
                    }
                }
            })
        })
        .collect();
    let out = stand_in.wait_with_output().expect("wait for the stand-in");
    stop.store(true, Ordering::Relaxed);
    for a in apps {
        a.join().expect("app thread panicked");
    }
    assert!(out.status.success(), "stand-in failed: {:?}", out.status);
    let counts: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the stand-in's JSON line");
    let leftovers: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| n.contains(".update-lock-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "private names left behind: {leftovers:?}"
    );
    eprintln!(
        "{mode}: {counts} ; app rounds {}",
        rounds.load(Ordering::Relaxed)
    );
    (counts, rounds.load(Ordering::Relaxed))
}

#[test]
fn release_never_deletes_the_supervisors_lock_put_in_its_place_by_an_override() {
    let (counts, rounds) = race("override", false);
    assert_eq!(counts["swaps"].as_u64(), Some(swaps()));
    assert!(rounds > 0, "the app never took the lock");
    assert_eq!(
        counts["supervisor_locks_deleted"].as_u64(),
        Some(0),
        "an app release deleted the Supervisor's lock: {counts}"
    );
}

#[test]
fn reclaim_never_deletes_the_supervisors_lock_that_replaced_a_stale_one() {
    let (counts, rounds) = race("reclaim", true);
    assert_eq!(counts["swaps"].as_u64(), Some(swaps()));
    assert!(rounds > 0, "the app never took the lock");
    assert_eq!(
        counts["supervisor_locks_deleted"].as_u64(),
        Some(0),
        "an app reclaim deleted the Supervisor's lock: {counts}"
    );
}
