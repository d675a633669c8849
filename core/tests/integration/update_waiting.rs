//! "An update is waiting" and the yield to it, against the Supervisor's real `lockfile`
//! run as uid 65534, and co-tenants of another uid forging its traces.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use update_lock::{
    ErrorCode, Holder, LockOptions, UpdateLock, UpdateWaiting, DEFAULT_YIELD_TO_UPDATES,
    UPDATE_WAITING_NOTE_NAME,
};

use crate::common::*;

/// The options of `common`, with the yield at its default.
fn guarded(path: &Path) -> LockOptions {
    opts(&[path]).yield_to_updates(DEFAULT_YIELD_TO_UPDATES)
}

/// Options whose hook sends each piece of news down a channel and counts the calls.
fn with_news(o: LockOptions) -> (LockOptions, mpsc::Receiver<UpdateWaiting>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let o = o.on_update_waiting(move |w| {
        n.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(w.clone());
    });
    (o, rx, calls)
}

fn news(rx: &mpsc::Receiver<UpdateWaiting>) -> UpdateWaiting {
    rx.recv_timeout(REPLY_TIMEOUT)
        .expect("the holder never heard of the Supervisor's attempt")
}

/// As the Supervisor releases: it deletes its own lock file, as uid 65534.
fn supervisor_release(path: &Path) {
    assert_eq!(exit_code(as_uid(NOBODY, "rm").arg(path)), 0);
}

#[test]
fn the_holder_hears_of_each_hold_once() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let (o, rx, calls) = with_news(guarded(&path).shared(true));
    let first = UpdateLock::acquire(&o).unwrap();
    assert!(!first.update_waiting());
    assert_eq!(supervisor_lockfile(&path), 73);
    let w = news(&rx);
    assert_eq!(w.path, path);
    assert!(w.temp_name.starts_with('_'), "{w:?}");
    assert!(
        w.describe().contains("an update is waiting"),
        "{}",
        w.describe()
    );
    assert!(first.update_waiting());
    assert_eq!(first.update_waiting_news(), Some(w));
    // A second attempt tells nobody new; a new hold hears of the third.
    assert_eq!(supervisor_lockfile(&path), 73);
    let (o2, rx2, _) = with_news(guarded(&path).shared(true));
    let second = UpdateLock::acquire(&o2).unwrap();
    assert!(!second.update_waiting(), "news are per hold");
    assert_eq!(supervisor_lockfile(&path), 73);
    news(&rx2);
    // Events are handled in order: the second attempt was handled before the third.
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the hook runs once per hold"
    );
    drop((first, second));
}

#[test]
fn a_forged_attempt_of_another_uid_is_ignored() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let (o, rx, _) = with_news(guarded(&path));
    let lock = UpdateLock::acquire(&o).unwrap();
    // A co-tenant makes a file shaped like lockfile's temp file, and leaves it there.
    let forged = dir.path().join("_ab.cdefgh.host");
    assert_eq!(exit_code(as_uid(APP_UID, "touch").arg(&forged)), 0);
    assert_eq!(supervisor_lockfile(&path), 73);
    let w = news(&rx);
    assert_ne!(
        w.temp_name, "_ab.cdefgh.host",
        "the forged file was taken for an attempt"
    );
    assert!(exists(&forged), "nothing is deleted");
    drop(lock);
}

#[test]
fn the_next_acquisition_yields_until_the_supervisor_got_in() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let (o, rx, _) = with_news(guarded(&path));
    let mut lock = UpdateLock::acquire(&o).unwrap();
    assert_eq!(supervisor_lockfile(&path), 73);
    news(&rx);
    lock.release().unwrap();
    assert!(!exists(&path));
    let note = dir.path().join(UPDATE_WAITING_NOTE_NAME);
    assert!(
        exists(&note),
        "the dated note for the app's other processes"
    );

    // The lock is free, but this process lets the update in first.
    let err = UpdateLock::try_acquire(&o).unwrap_err();
    assert_err(
        &err,
        ErrorCode::Held,
        &["kept for the balena Supervisor", "yield_to_updates"],
    );
    assert_eq!(err.holder(), Some(&Holder::UpdateWaiting));
    assert!(!exists(&path), "a yield creates nothing");
    // yield_to_updates(0) turns it off.
    UpdateLock::try_acquire(&o.clone().yield_to_updates(Duration::ZERO))
        .unwrap()
        .release()
        .unwrap();

    let (waiter, waiting) = spawn_waiter(o.clone().timeout(Some(LONG)));
    until_waiting(&waiting);
    assert_eq!(
        supervisor_lockfile(&path),
        0,
        "the Supervisor gets in while we yield"
    );
    supervisor_release(&path);
    let mut got = waiter
        .join()
        .unwrap()
        .expect("the waiter gets the lock after the update");
    assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
    got.release().unwrap();
    // The update got in: nothing to yield to any more.
    UpdateLock::try_acquire(&o).unwrap().release().unwrap();
}

fn write_note_as(uid: u32, note: &Path, seen_ms: u128) {
    let body = format!("update-lock update-waiting 1\nseen_unix_ms={seen_ms}\n");
    let script = format!("printf '{}' > \"$0\"", body.replace('\n', "\\n"));
    assert_eq!(
        exit_code(as_uid(uid, "sh").arg("-c").arg(script).arg(note)),
        0
    );
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn another_uids_note_delays_at_most_yield_to_updates() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let note = dir.path().join(UPDATE_WAITING_NOTE_NAME);
    let o = guarded(&path);
    // A date far in the future counts as now: never a longer yield than our own limit.
    write_note_as(APP_UID, &note, now_ms() + 86_400_000);
    let err = UpdateLock::try_acquire(&o).unwrap_err();
    assert_eq!(err.holder(), Some(&Holder::UpdateWaiting));
    let short = o
        .clone()
        .yield_to_updates(Duration::from_millis(200))
        .timeout(Some(LONG));
    UpdateLock::acquire(&short).unwrap().release().unwrap();
    assert_eq!(
        fs::metadata(&note).unwrap().uid(),
        APP_UID,
        "another uid's note is left alone"
    );

    // An old note, a malformed one and a symbolic link are no reason to yield.
    write_note_as(APP_UID, &note, now_ms() - 120_000);
    UpdateLock::try_acquire(&o).unwrap().release().unwrap();
    fs::remove_file(&note).unwrap();
    write_note_as(APP_UID, &note, 0);
    fs::write(&note, "update-lock update-waiting 1\nseen_unix_ms=soon\n").unwrap();
    UpdateLock::try_acquire(&o).unwrap().release().unwrap();
    fs::remove_file(&note).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::write(
        &elsewhere,
        format!("update-lock update-waiting 1\nseen_unix_ms={}\n", now_ms()),
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, &note).unwrap();
    UpdateLock::try_acquire(&o).unwrap().release().unwrap();
    assert!(exists(&note) && exists(&elsewhere));
}

/// Without a hook no thread reads the news: asking reads what the kernel queued (the
/// attempt is queued before `lockfile` exits), and a release notes it for later acquirers.
#[test]
fn without_a_hook_the_news_are_read_when_asked() {
    require_root();
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    let o = guarded(&path);
    let mut lock = UpdateLock::acquire(&o).unwrap();
    assert!(!lock.update_waiting());
    assert_eq!(supervisor_lockfile(&path), 73);
    assert!(lock.update_waiting());
    let w = lock.update_waiting_news().expect("the first attempt");
    assert!(w.temp_name.starts_with('_'), "{w:?}");
    lock.release().unwrap();
    assert!(!lock.update_waiting(), "false once released");
    assert!(exists(&dir.path().join(UPDATE_WAITING_NOTE_NAME)));
    assert_eq!(
        UpdateLock::try_acquire(&o).unwrap_err().holder(),
        Some(&Holder::UpdateWaiting)
    );
}
