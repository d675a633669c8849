//! Crashes: a holder killed with SIGKILL leaves its files (the Supervisor stays blocked)
//! but not its flock (the reboot is no longer held, status says stale); a new acquire
//! reclaims it, racing reclaimers never both win, and a waiter wakes when the holder dies.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;

use crate::common::*;
use update_lock::{ErrorCode, Holder, LockState, UpdateLock};

/// A holder child on `paths`, SIGKILLed once it holds the lock. Returns its pid.
fn kill_a_holder(paths: &[std::path::PathBuf]) -> u32 {
    let mut args = vec!["none".to_string()];
    args.extend(path_args(paths));
    let mut kid = Kid::spawn("hold", &args);
    kid.expect("acquired");
    assert_eq!(reboot_probe(&paths[0]), 1, "the live holder holds flock");
    kid.kill();
    kid.pid
}

#[test]
fn killed_holder_leaves_a_stale_lock_that_is_reclaimed() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let o = opts(&paths);
    let dead = kill_a_holder(&paths);
    let ids: Vec<_> = paths.iter().map(|p| inode(p)).collect();

    // The files stay: the Supervisor is still blocked (it only checks existence).
    for p in &paths {
        assert_eq!(supervisor_lockfile(p), 73, "{}", p.display());
    }
    // The flock died with the holder: the reboot probe (existing file, nothing created)
    // succeeds, and status says so.
    assert_eq!(reboot_probe(&paths[0]), 0);
    let st = status_of(&o, dir.path());
    for l in &st.locks {
        assert_eq!(l.state, LockState::Stale, "{}", l.path.display());
        assert!(l.blocks_app_updates && !l.blocks_host_reboot && !l.flock_held);
        assert_eq!(l.holder.as_ref().unwrap().pid as u32, dead);
        assert!(!l.holder.as_ref().unwrap().is_running());
    }
    assert!(st.blocks_app_updates && !st.blocks_host_reboot);

    // With reclaim off it is reported, not touched.
    let err = UpdateLock::try_acquire(&o.clone().reclaim_stale(false)).unwrap_err();
    assert_err(
        &err,
        ErrorCode::Held,
        &["dead holder", &format!("pid {dead}")],
    );
    match err.holder() {
        Some(Holder::Stale(r)) => assert_eq!(r.pid as u32, dead),
        other => panic!("expected a stale holder, got {other:?}"),
    }
    assert_eq!(paths.iter().map(|p| inode(p)).collect::<Vec<_>>(), ids);

    // A new acquire reclaims both paths and names the dead pid.
    let mut lock = UpdateLock::try_acquire(&o).unwrap();
    let got: Vec<_> = lock
        .reclaimed()
        .iter()
        .map(|r| (r.path.clone(), r.previous.pid as u32))
        .collect();
    assert_eq!(
        got,
        vec![(paths[0].clone(), dead), (paths[1].clone(), dead)]
    );
    for p in &paths {
        let rec = fs::read_to_string(p).unwrap();
        assert!(
            rec.contains(&format!("pid={}\n", std::process::id())),
            "{rec}"
        );
    }
    assert_eq!(reboot_probe(&paths[0]), 1);
    assert_eq!(
        status_of(&o, dir.path()).locks[0].state,
        LockState::HeldByApp
    );
    lock.release().unwrap();
    for p in &paths {
        assert!(!exists(p));
    }
}

/// Start `n` racers on `paths` with one shared stdin pipe, wait until every one is ready,
/// then close the pipe so that they all go at the same moment.
fn release_racers(n: usize, args: &[String]) -> Vec<Kid> {
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut kids: Vec<Kid> = (0..n)
        .map(|_| {
            let stdin = Stdio::from(rd.try_clone().unwrap());
            Kid::start(child_command("racer", args, None), "racer", Some(stdin))
        })
        .collect();
    drop(rd);
    for k in &mut kids {
        assert_eq!(k.line(), "ready");
    }
    drop(wr);
    kids
}

/// Collect `done violations=V reclaimed=...` from every racer: total violations, and every
/// `path@pid` reclaimed.
fn racer_results(kids: &mut [Kid]) -> (usize, Vec<String>) {
    let mut violations = 0;
    let mut reclaimed: Vec<String> = Vec::new();
    for k in kids.iter_mut() {
        let done = k.expect("done ");
        let (v, r) = done.split_once(' ').unwrap();
        violations += v
            .strip_prefix("violations=")
            .unwrap()
            .parse::<usize>()
            .unwrap();
        let r = r.strip_prefix("reclaimed=").unwrap();
        reclaimed.extend(r.split(',').filter(|s| !s.is_empty()).map(String::from));
        k.finish();
    }
    reclaimed.sort();
    (violations, reclaimed)
}

fn tagged(paths: &[PathBuf], pids: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = pids
        .iter()
        .flat_map(|pid| paths.iter().map(move |p| format!("{}@{pid}", p.display())))
        .collect();
    v.sort();
    v
}

#[test]
fn racing_reclaimers_never_both_hold() {
    require_root();
    const RACERS: usize = 5;
    const RACES: usize = 3;
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let marker = subdir(dir.path(), "data").join("inside");
    let mut args = vec![marker.display().to_string(), "release".to_string()];
    args.extend(path_args(&paths));

    for race in 0..RACES {
        let dead = kill_a_holder(&paths);
        let mut kids = release_racers(RACERS, &args);
        let (violations, reclaimed) = racer_results(&mut kids);
        assert_eq!(
            violations, 0,
            "race {race}: two reclaimers held the lock at once"
        );
        // Each stale file was taken over exactly once, from the killed holder.
        assert_eq!(reclaimed, tagged(&paths, &[dead]), "race {race}");
        for p in &paths {
            assert!(!exists(p));
        }
        assert!(!exists(&marker));
    }
}

#[test]
fn chain_of_crashing_holders_each_stale_lock_is_reclaimed_exactly_once() {
    require_root();
    const RACERS: usize = 6;
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let marker = subdir(dir.path(), "data").join("inside");
    let mut args = vec![marker.display().to_string(), "crash".to_string()];
    args.extend(path_args(&paths));

    // Every racer dies holding the lock, so every acquisition after the first holder's
    // death is a reclaim race among the racers still waiting.
    let first = kill_a_holder(&paths);
    let mut kids = release_racers(RACERS, &args);
    let pids: Vec<u32> = kids.iter().map(|k| k.pid).collect();
    let (violations, reclaimed) = racer_results(&mut kids);
    assert_eq!(violations, 0, "two holders at once");

    // The last racer's lock is stale too; take it over.
    let mut lock = UpdateLock::try_acquire(&opts(&paths)).unwrap();
    let mut last: Vec<String> = lock
        .reclaimed()
        .iter()
        .map(|r| format!("{}@{}", r.path.display(), r.previous.pid))
        .collect();
    lock.release().unwrap();
    assert_eq!(last.len(), paths.len());
    let last_pid: u32 = last[0].rsplit('@').next().unwrap().parse().unwrap();
    assert!(pids.contains(&last_pid));

    // Each dead holder's file on each path was reclaimed exactly once: nobody deleted a
    // lock twice, nobody deleted a live one (that would show as a missing or extra entry).
    let mut all = reclaimed;
    all.append(&mut last);
    all.sort();
    let mut dead = vec![first];
    dead.extend(pids.iter().copied());
    assert_eq!(all, tagged(&paths, &dead));
    assert!(!exists(&marker));
}

/// A child process holding the two-path lock, and a thread of ours waiting for it.
fn holder_and_waiter() -> (
    tempfile::TempDir,
    Kid,
    std::thread::JoinHandle<update_lock::Result<UpdateLock>>,
) {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let mut args = vec!["none".to_string()];
    args.extend(path_args(&paths));
    let mut holder = Kid::spawn("hold", &args);
    holder.expect("acquired");
    let (waiter, waiting) = spawn_waiter(opts(&paths).timeout(Some(LONG)));
    until_waiting(&waiting);
    (dir, holder, waiter)
}

#[test]
fn waiter_wakes_and_reclaims_when_the_holder_is_killed() {
    let (_dir, mut holder, waiter) = holder_and_waiter();
    holder.kill();
    let mut lock = waiter.join().unwrap().expect("the waiter takes the lock");
    let pids: Vec<u32> = lock
        .reclaimed()
        .iter()
        .map(|r| r.previous.pid as u32)
        .collect();
    assert_eq!(
        pids,
        vec![holder.pid, holder.pid],
        "both paths reclaimed from the dead holder"
    );
    lock.check().unwrap();
    lock.release().unwrap();
}

#[test]
fn waiter_gets_the_lock_when_a_live_holder_releases() {
    let (_dir, mut holder, waiter) = holder_and_waiter();
    holder.send("release");
    assert_eq!(holder.line(), "ok");
    let mut lock = waiter.join().unwrap().expect("the waiter takes the lock");
    assert!(lock.reclaimed().is_empty(), "a released lock is not stale");
    holder.finish();
    lock.release().unwrap();
}

#[test]
fn stale_lock_of_another_user_in_a_sticky_directory() {
    require_root();
    // A root holder died; uid 1000 may not unlink root's file in a 1777 (sticky) directory.
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let dead = kill_a_holder(std::slice::from_ref(&path));
    let id = inode(&path);
    let mut kid = Kid::spawn_as(APP_UID, "try", &[path.display().to_string()]);
    let (code, msg) = parse_err(&kid.line());
    kid.finish();
    assert_eq!(code, "permission", "{msg}");
    for f in ["updates.lock", "dead holder", "uid 0", "sticky"] {
        assert!(msg.contains(f), "message should mention {f:?}: {msg}");
    }
    assert_eq!(inode(&path), id, "the stale file is left as it was");
    // Root can take it over.
    let lock = UpdateLock::try_acquire(&opts(&[&path])).unwrap();
    assert_eq!(lock.reclaimed()[0].previous.pid as u32, dead);
}
