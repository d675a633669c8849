//! Interop with the two real readers of the lock, run as the real tools: procmail's
//! `lockfile -r 0` as uid 65534 (the Supervisor) and `flock -nx` (the host OS reboot
//! script); the classification of what those tools and others leave behind; and the lock
//! taken by other users (uid 1000, uid 65534, the Supervisor role).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use update_lock::{ErrorCode, ForeignKind, Holder, LockState, UpdateLock, RECORD_MAGIC};

#[test]
fn held_lock_blocks_both_real_readers_and_release_frees_both() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let mut lock = UpdateLock::acquire(&opts(&[&path])).unwrap();
    let id = inode(&path);

    assert_eq!(
        supervisor_lockfile(&path),
        73,
        "the Supervisor's lockfile must see the lock as held"
    );
    assert_eq!(
        reboot_probe(&path),
        1,
        "the reboot probe must find the flock held"
    );
    // Neither probe changed or added anything.
    assert_eq!(inode(&path), id);
    assert_eq!(listing(dir.path()), ["updates.lock"]);
    let content = fs::read_to_string(&path).unwrap();
    assert!(
        content.starts_with(RECORD_MAGIC),
        "holder record: {content}"
    );
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), 0, "the app lock is owned by the app's uid");
    lock.check().unwrap();

    lock.release().unwrap();
    assert!(!exists(&path), "release deletes the lock file");

    assert_eq!(
        reboot_probe(&path),
        0,
        "the reboot probe succeeds after release"
    );
    // flock(1) created an empty file (O_CREAT); remove it before the next check.
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    fs::remove_file(&path).unwrap();
    assert_eq!(
        supervisor_lockfile(&path),
        0,
        "the Supervisor gets the lock after release"
    );
    let m = fs::metadata(&path).unwrap();
    assert_eq!(m.uid(), NOBODY);
    fs::remove_file(&path).unwrap();
}

#[test]
fn default_two_path_lock_blocks_both_readers() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let (main, legacy) = (&paths[0], &paths[1]);
    let o = opts(&paths);
    let mut lock = UpdateLock::acquire(&o).unwrap();
    assert_eq!(lock.paths(), &paths[..]);
    assert!(
        exists(main) && exists(legacy),
        "both files exist while held"
    );
    for p in &paths {
        assert_eq!(
            supervisor_lockfile(p),
            73,
            "{} must block the Supervisor",
            p.display()
        );
    }
    assert_eq!(reboot_probe(main), 1, "updates.lock must block the reboot");

    let report = status_of(&o, dir.path());
    assert!(report.blocks_app_updates && report.blocks_host_reboot);
    assert_eq!(report.locks[0].state, LockState::HeldByApp);
    assert_eq!(report.locks[1].state, LockState::HeldByApp);
    assert!(report.locks[0].blocks_host_reboot);
    assert!(
        !report.locks[1].blocks_host_reboot,
        "the reboot script only looks at files named updates.lock"
    );
    assert_eq!(
        report.locks[0].holder.as_ref().unwrap().pid,
        std::process::id() as i32
    );

    lock.release().unwrap();
    assert!(!exists(main) && !exists(legacy));
    let report = status_of(&o, dir.path());
    assert!(!report.blocks_app_updates && !report.blocks_host_reboot);
    for p in &paths {
        assert_eq!(supervisor_lockfile(p), 0);
        fs::remove_file(p).unwrap();
    }
    assert_eq!(reboot_probe(main), 0);
    fs::remove_file(main).unwrap();
}

#[test]
fn supervisor_lockfile_lock_is_reported_and_waited_for() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let o = opts(&[&path]);
    assert_eq!(supervisor_lockfile(&path), 0);
    let id = inode(&path);

    let err = UpdateLock::try_acquire(&o).unwrap_err();
    assert_err(&err, ErrorCode::Held, &["Supervisor", "updates.lock"]);
    assert_eq!(err.holder(), Some(&Holder::Supervisor));
    let st = status_of(&o, dir.path());
    assert_eq!(st.locks[0].state, LockState::HeldBySupervisor);
    assert!(st.blocks_app_updates && !st.blocks_host_reboot);

    // A bounded wait times out and leaves the Supervisor's file alone.
    let err =
        UpdateLock::acquire(&o.clone().timeout(Some(Duration::from_millis(100)))).unwrap_err();
    assert_err(&err, ErrorCode::Timeout, &["Supervisor"]);
    assert_eq!(err.holder(), Some(&Holder::Supervisor));
    assert_eq!(inode(&path), id);

    // A waiter gets the lock once the Supervisor releases (deletes its file).
    let (waiter, waiting) = spawn_waiter(o.clone().timeout(Some(LONG)));
    until_waiting(&waiting);
    assert_eq!(
        inode(&path),
        id,
        "the waiter must not touch the Supervisor's lock"
    );
    assert_eq!(fs::metadata(&path).unwrap().uid(), NOBODY);
    fs::remove_file(&path).unwrap();
    let mut lock = waiter.join().unwrap().expect("the waiter gets the lock");
    assert!(lock.reclaimed().is_empty());
    assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
    assert!(fs::read_to_string(&path).unwrap().starts_with(RECORD_MAGIC));
    assert_eq!(supervisor_lockfile(&path), 73);
    lock.release().unwrap();
    assert!(!exists(&path));
}

/// Everything is still there, with the same inode, after trying (once and with a wait)
/// with stale reclaim on. Returns the holder reported.
fn classify_without_deleting(path: &Path) -> Holder {
    let id = inode(path);
    let o = opts(&[path]).reclaim_stale(true);
    let err = UpdateLock::try_acquire(&o).unwrap_err();
    assert_err(&err, ErrorCode::Held, &["not created by update-lock"]);
    let holder = err.holder().unwrap().clone();
    let err = UpdateLock::acquire(&o.timeout(Some(Duration::from_millis(50)))).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert_eq!(err.holder(), Some(&holder));
    assert_eq!(
        inode(path),
        id,
        "a foreign file must never be deleted or replaced"
    );
    holder
}

fn foreign(kind: ForeignKind, owner_uid: u32, flock_held: bool) -> Holder {
    Holder::Foreign {
        kind,
        owner_uid,
        flock_held,
        symlink_target: None,
    }
}

#[test]
fn touch_flock_and_lockfile_format_files_are_foreign_and_kept() {
    require_root();
    let dir = tmpdir();

    let touched = dir.path().join("touched.lock");
    assert_eq!(exit_code(Command::new("touch").arg(&touched)), 0);
    assert_eq!(
        classify_without_deleting(&touched),
        foreign(ForeignKind::EmptyFile, 0, false)
    );

    // flock(1) leaves an empty file behind after its command ran.
    let flocked = dir.path().join("flocked.lock");
    assert_eq!(
        exit_code(Command::new("flock").arg(&flocked).arg("true")),
        0
    );
    assert_eq!(
        classify_without_deleting(&flocked),
        foreign(ForeignKind::EmptyFile, 0, false)
    );

    // ... and while flock(1) still runs its command, the flock shows.
    let mut running = Command::new("flock")
        .arg(&flocked)
        .args(["sh", "-c", "echo locked; cat >/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(running.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let held = classify_without_deleting(&flocked);
    assert_eq!(held, foreign(ForeignKind::EmptyFile, 0, true));
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());

    // `echo -n 0 > f` by an ordinary user: lockfile's format, but not the Supervisor's.
    let zero = dir.path().join("zero.lock");
    let mut sh = as_uid(APP_UID, "sh");
    sh.arg("-c").arg("echo -n 0 > \"$0\"").arg(&zero);
    assert_eq!(exit_code(&mut sh), 0);
    assert_eq!(fs::read(&zero).unwrap(), b"0");
    assert_eq!(
        classify_without_deleting(&zero),
        foreign(ForeignKind::LockfileFormat, APP_UID, false)
    );

    let junk = dir.path().join("junk.lock");
    fs::write(&junk, "hello\n").unwrap();
    assert_eq!(
        classify_without_deleting(&junk),
        foreign(ForeignKind::UnknownContent, 0, false)
    );
    // A record-lookalike with the wrong magic is not ours either.
    let fake = dir.path().join("fake.lock");
    fs::write(&fake, "update-lock holder\npid=1\n").unwrap();
    assert_eq!(
        classify_without_deleting(&fake),
        foreign(ForeignKind::UnknownContent, 0, false)
    );

    let st = status_of(&opts(&[&touched]), dir.path());
    assert_eq!(st.locks[0].state, LockState::Foreign);
    assert_eq!(st.locks[0].foreign_kind, Some(ForeignKind::EmptyFile));
    assert!(st.blocks_app_updates);
}

#[test]
fn app_user_1000_in_a_1777_directory_holds_for_both_readers() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let mut kid = Kid::spawn_as(
        APP_UID,
        "hold",
        &["none".into(), path.display().to_string()],
    );
    let said = kid.expect("acquired");
    assert!(said.contains(&format!("pid={}", kid.pid)), "{said}");
    assert_eq!(fs::metadata(&path).unwrap().uid(), APP_UID);
    assert_eq!(supervisor_lockfile(&path), 73);
    assert_eq!(reboot_probe(&path), 1);

    let err = UpdateLock::try_acquire(&opts(&[&path])).unwrap_err();
    assert_err(&err, ErrorCode::Held, &["held by another app", "uid 1000"]);
    match err.holder() {
        Some(Holder::App(r)) => {
            assert_eq!(r.uid, APP_UID);
            assert_eq!(r.pid as u32, kid.pid);
            assert!(r.same_pid_namespace && !r.same_process);
        }
        other => panic!("expected an app holder, got {other:?}"),
    }

    kid.send("release");
    assert_eq!(kid.expect(""), "ok");
    assert!(!exists(&path));
    kid.finish();
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
fn uid_65534_is_refused_and_creates_nothing() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let missing = dir.path().join("sub").join("updates.lock");
    for p in [&path, &missing] {
        let mut kid = Kid::spawn_as(NOBODY, "try", &[p.display().to_string()]);
        let (code, msg) = parse_err(&kid.line());
        assert_eq!(code, "supervisor-uid", "{msg}");
        assert!(msg.contains("65534") && msg.contains("Supervisor"), "{msg}");
        kid.finish();
        assert_eq!(
            listing(dir.path()),
            Vec::<String>::new(),
            "nothing may be created as uid 65534"
        );
    }
}
