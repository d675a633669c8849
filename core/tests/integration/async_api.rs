//! Waiting that can be interrupted: the async API never blocks the runtime and leaves
//! nothing behind when its future is dropped; a CancelToken ends a blocking wait.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use update_lock::{CancelToken, ErrorCode, UpdateLock, WaitControl};

/// The tests of this file count this process's descriptors: under `cargo test` (one
/// process, tests on threads) they must not run at the same time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Two-path set where only the second (legacy) path is held by another handle, so a
/// waiter must take the first path and undo it on every try: the all-or-nothing case.
fn second_path_held(dir: &std::path::Path) -> (Vec<PathBuf>, UpdateLock) {
    let paths = two_paths(dir);
    let holder = UpdateLock::acquire(&opts(&paths[1..])).unwrap();
    (paths, holder)
}

/// One wait on `paths` cancelled through a CancelToken once it is really waiting.
fn one_cancelled_wait(paths: &[PathBuf]) {
    let token = CancelToken::new().unwrap();
    let (tx, waiting) = mpsc::channel();
    let (o, t) = (opts(paths).timeout(Some(LONG)), token.clone());
    let waiter = std::thread::spawn(move || {
        let ctl =
            WaitControl::new()
                .cancel_on(t)
                .check_every(Duration::from_secs(3600), move || {
                    let _ = tx.send(());
                    Ok(())
                });
        UpdateLock::acquire_with(&o, ctl)
    });
    until_waiting(&waiting);
    token.cancel();
    let err = waiter.join().unwrap().unwrap_err();
    assert_err(
        &err,
        ErrorCode::Cancelled,
        &["cancelled", "nothing was taken"],
    );
    assert!(token.is_cancelled());
    assert!(!exists(&paths[0]), "the first path was left taken");
}

#[test]
fn cancel_token_ends_a_blocking_wait_and_leaves_nothing() {
    let _serial = serial();
    let dir = tmpdir();
    let (paths, holder) = second_path_held(dir.path());
    let held_id = inode(&paths[1]);
    // The library keeps a few descriptors on purpose (directory cache, inotify pool):
    // measure after a first wait, then no further wait may add any.
    one_cancelled_wait(&paths);
    let fds = fd_count();
    for _ in 0..2 {
        one_cancelled_wait(&paths);
    }
    assert_eq!(fd_count(), fds, "descriptors leaked by cancelled waits");
    assert_eq!(inode(&paths[1]), held_id);
    drop(holder);
    UpdateLock::try_acquire(&opts(&paths)).unwrap();
}

#[test]
fn a_check_error_ends_the_wait_with_that_error() {
    let _serial = serial();
    let dir = tmpdir();
    let (paths, _holder) = second_path_held(dir.path());
    let ctl = WaitControl::new().check_every(Duration::from_millis(1), || {
        Err(update_lock::Error::Cancelled {
            path: PathBuf::from("x"),
            waiting_for: update_lock::Error::WAITING_FOR_LOCK,
            by: Some("SIGINT".into()),
        })
    });
    // Another owner than this thread (which holds the second path): it waits.
    let o = opts(&paths)
        .timeout(Some(LONG))
        .owner(update_lock::LockOwner::new());
    let err = UpdateLock::acquire_with(&o, ctl).unwrap_err();
    assert_err(&err, ErrorCode::Cancelled, &["by SIGINT"]);
    assert!(!exists(&paths[0]));
}

#[cfg(feature = "tokio")]
mod tokio_api {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Run `f` on a thread and fail (instead of hanging the run) if it does not finish:
    /// a waiter that blocks the runtime would never finish.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(REPLY_TIMEOUT)
            .expect("the async test did not finish: the runtime was blocked")
    }

    #[test]
    fn waiting_does_not_block_a_current_thread_runtime() {
        let _serial = serial();
        let dir = tmpdir();
        let (paths, holder) = second_path_held(dir.path());
        let o = opts(&paths).timeout(Some(LONG));
        let ok = bounded(move || {
            current_thread().block_on(async move {
                let ticks = Arc::new(AtomicU64::new(0));
                let t = ticks.clone();
                let ticker = tokio::spawn(async move {
                    loop {
                        t.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                });
                let waiter = tokio::spawn(async move { UpdateLock::acquire_async(&o).await });
                // The ticker runs on the same (only) thread as the waiting acquisition.
                let before = ticks.load(Ordering::SeqCst);
                while ticks.load(Ordering::SeqCst) < before + 1000 {
                    tokio::task::yield_now().await;
                }
                assert!(
                    !waiter.is_finished(),
                    "acquired while the other handle held it"
                );
                drop(holder);
                let mut lock = waiter.await.unwrap().expect("acquired after release");
                lock.check().unwrap();
                ticker.abort();
                lock.release().is_ok()
            })
        });
        assert!(ok);
    }

    /// One acquire_async on `paths` (held elsewhere) dropped while it waits.
    fn one_dropped_future(paths: &[PathBuf]) {
        let o = opts(paths); // wait forever: only the drop ends it
        let p = paths.to_vec();
        bounded(move || {
            current_thread().block_on(async move {
                let r =
                    tokio::time::timeout(Duration::from_millis(100), UpdateLock::acquire_async(&o))
                        .await;
                assert!(r.is_err(), "the future should still be waiting: {r:?}");
                assert!(
                    !exists(&p[0]),
                    "the dropped future left the first path taken"
                );
            })
        });
    }

    #[test]
    fn dropping_the_future_leaves_nothing_taken() {
        let _serial = serial();
        let dir = tmpdir();
        let (paths, holder) = second_path_held(dir.path());
        let held_id = inode(&paths[1]);
        one_dropped_future(&paths);
        let fds = fd_count();
        for _ in 0..3 {
            one_dropped_future(&paths);
        }
        assert_eq!(fd_count(), fds, "descriptors leaked by dropped futures");
        assert_eq!(inode(&paths[1]), held_id);
        drop(holder);
        assert!(!exists(&paths[1]));
        UpdateLock::try_acquire(&opts(&paths)).unwrap();
    }

    /// The owner for the nesting check is the task: the same task taking the lock again
    /// fails at once (no timeout given: a regression would wait for itself); another task
    /// of the same thread is another holder and sees it held.
    #[test]
    fn the_same_task_cannot_nest_another_task_waits() {
        let _serial = serial();
        let dir = tmpdir();
        let path = dir.path().join("updates.lock");
        let o = opts(&[&path]);
        let (nested, other) = bounded(move || {
            current_thread().block_on(async move {
                let held = UpdateLock::acquire_async(&o).await.unwrap();
                let nested = UpdateLock::acquire_async(&o).await.unwrap_err();
                let o2 = o.clone().timeout(Some(Duration::ZERO));
                let other =
                    tokio::task::spawn(
                        async move { UpdateLock::acquire_async(&o2).await.unwrap_err() },
                    )
                    .await
                    .unwrap();
                drop(held);
                (nested, other)
            })
        });
        assert_err(
            &nested,
            ErrorCode::AlreadyHeld,
            &["already held by this process"],
        );
        assert_err(&other, ErrorCode::Held, &["this same process"]);
        assert!(!exists(&path));
    }

    #[test]
    fn async_timeout_and_immediate_acquire() {
        let _serial = serial();
        let dir = tmpdir();
        let (paths, holder) = second_path_held(dir.path());
        let o = opts(&paths);
        let (a, b) = (o.clone(), o.clone());
        let err = bounded(move || {
            current_thread().block_on(async move {
                UpdateLock::acquire_async(&a.timeout(Some(Duration::from_millis(50))))
                    .await
                    .unwrap_err()
            })
        });
        assert_err(
            &err,
            ErrorCode::Timeout,
            &["resin-updates.lock", "this same process"],
        );
        assert!(!exists(&paths[0]));
        drop(holder);
        let held = bounded(move || {
            current_thread().block_on(async move {
                UpdateLock::acquire_async(&b.timeout(Some(Duration::ZERO)))
                    .await
                    .map(|l| l.is_held())
            })
        });
        assert!(held.unwrap());
        assert!(!exists(&paths[0]), "the lock was released on drop");
    }
}
