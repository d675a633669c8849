//! The Supervisor's update lock, taken the way it takes it: procmail's `lockfile -r 0` as
//! uid 65534 on `updates.lock` and `resin-updates.lock` in the service directory, all or
//! nothing, retried with backoff `min(2^n * 500 ms, poll interval)` while the app holds it.
//! With the lock override it first deletes the app's lock files, as the Supervisor does.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use update_lock::{HandoverOptions, LockOptions, SUPERVISOR_UID};

use super::cleanup;
use super::report::{Actor, Lane};
use super::timeline::Timeline;

/// The names the Supervisor locks in a service directory.
pub const LOCK_NAMES: [&str; 2] = ["updates.lock", "resin-updates.lock"];

/// procmail's exit status when the lock file already exists.
const LOCKFILE_HELD: i32 = 73;

/// The lock files the Supervisor holds: path, inode.
pub struct SupervisorLock {
    held: Vec<(PathBuf, u64)>,
}

/// How the Supervisor takes its lock.
pub struct LockSettings {
    /// Run `lockfile` as uid 65534 (needs root); else as the current user.
    pub as_65534: bool,
    /// Lock override: delete the app's lock files first.
    pub force: bool,
    /// The override asked for later, through the API (`POST /v1/update {"force": true}`).
    pub force_flag: Arc<AtomicBool>,
    /// Longest pause between attempts.
    pub poll_interval: Duration,
    /// Give up (report the update as blocked) after this long.
    pub timeout: Duration,
}

/// How the Supervisor's attempts went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempts {
    /// Attempts made (the last one took the lock, unless blocked).
    pub made: u32,
    /// How often the app's lock file between two failed attempts was a new one: the app
    /// released the lock and took it again while the Supervisor waited out its backoff.
    pub retaken: u32,
}

/// Why the lock was not taken.
pub enum NotTaken {
    /// Still held by the app at the deadline: who holds it, and the attempts.
    Blocked(String, Attempts),
    /// `lockfile` failed in another way.
    Failed(String),
}

impl SupervisorLock {
    /// Take the lock, retrying with the Supervisor's backoff. Opens the "update blocked"
    /// span while it waits and the "Supervisor lock" span once held.
    pub fn take(
        dir: &Path,
        s: &LockSettings,
        timeline: &Timeline,
    ) -> Result<(SupervisorLock, Attempts), NotTaken> {
        // The Supervisor makes the service directory world-writable (sticky) before it locks.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut retaken: u32 = 0;
        let mut last_lock: Option<u64> = None;
        loop {
            if s.force || s.force_flag.load(Ordering::SeqCst) {
                delete_app_locks(dir, timeline);
            }
            attempt += 1;
            match try_once(dir, s.as_65534)? {
                Ok(held) => {
                    timeline.close(Lane::BlockedByLock);
                    timeline.open(Lane::SupervisorLock);
                    let how = if s.as_65534 {
                        "as uid 65534"
                    } else {
                        "as this user (not root)"
                    };
                    timeline.event(
                        Actor::Supervisor,
                        "lock-taken",
                        format!("took updates.lock and resin-updates.lock with lockfile {how} (attempt {attempt})"),
                    );
                    return Ok((
                        SupervisorLock { held },
                        Attempts {
                            made: attempt,
                            retaken,
                        },
                    ));
                }
                Err(held_path) => {
                    let who = holder(&held_path);
                    let inode = held_path.symlink_metadata().ok().map(|m| m.ino());
                    if last_lock.is_some() && inode.is_some() && inode != last_lock {
                        retaken += 1;
                    }
                    last_lock = inode.or(last_lock);
                    // What the holder can hear: lockfile's temp file appeared beside the
                    // lock (update-lock tells on_update_waiting / lockctl run).
                    timeline.event(
                        Actor::Old,
                        "update-waiting",
                        "an update is waiting: lockfile's attempt is visible in the lock directory (on_update_waiting, onUpdateWaiting, lockctl run --update-signal)",
                    );
                    let pause = backoff(attempt - 1, s.poll_interval);
                    let waited = started.elapsed();
                    if waited >= s.timeout {
                        timeline.event(
                            Actor::Supervisor,
                            "lock-gave-up",
                            format!("still locked after {:.1} s: {who}", waited.as_secs_f64()),
                        );
                        return Err(NotTaken::Blocked(format!(
                            "the update was still blocked after {:.0} s: {}: {who}; a device keeps retrying (up to every {:.0} s) until the app releases it: release the lock at a safe point, or rehearse the override with --force",
                            waited.as_secs_f64(),
                            held_path.display(),
                            s.poll_interval.as_secs_f64()
                        ), Attempts { made: attempt, retaken }));
                    }
                    timeline.open(Lane::BlockedByLock);
                    timeline.event(
                        Actor::Supervisor,
                        "lock-held",
                        format!(
                            "updates locked: {who}; retry in {}",
                            super::version::secs(pause)
                        ),
                    );
                    std::thread::sleep(
                        pause.min(s.timeout.saturating_sub(waited) + Duration::from_millis(1)),
                    );
                }
            }
        }
    }

    /// Release: delete the files it created (only those still owned by it, same inode).
    pub fn release(self, timeline: &Timeline) {
        for (path, ino) in &self.held {
            if let Ok(md) = path.symlink_metadata() {
                if md.ino() == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
            cleanup::remove_file(path);
        }
        timeline.close(Lane::SupervisorLock);
        timeline.event(
            Actor::Supervisor,
            "lock-released",
            "released its lock: the update has settled",
        );
    }
}

/// `min(2^n * 500 ms, poll interval)`.
pub fn backoff(n: u32, poll: Duration) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << n.min(40));
    Duration::from_millis(ms).min(poll)
}

/// One all-or-nothing attempt. Ok(Ok(files)) taken; Ok(Err(path)) that path is held.
#[allow(clippy::type_complexity)]
fn try_once(dir: &Path, as_65534: bool) -> Result<Result<Vec<(PathBuf, u64)>, PathBuf>, NotTaken> {
    let mut held = Vec::new();
    for name in LOCK_NAMES {
        let path = dir.join(name);
        let mut cmd = if as_65534 {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "lockfile",
            ]);
            c
        } else {
            Command::new("lockfile")
        };
        let out = cmd
            .args(["-r", "0"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| NotTaken::Failed(format!("could not run lockfile (procmail): {e}")))?;
        match out.status.code() {
            Some(0) => {
                let ino = path.symlink_metadata().map(|m| m.ino()).unwrap_or(0);
                cleanup::add_file(path.clone());
                held.push((path, ino));
            }
            Some(LOCKFILE_HELD) => {
                // All or nothing: give back what this attempt took.
                SupervisorLock { held }.drop_quietly();
                return Ok(Err(path));
            }
            _ => {
                SupervisorLock { held }.drop_quietly();
                return Err(NotTaken::Failed(format!(
                    "lockfile -r 0 {} failed ({}): {}",
                    path.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(Ok(held))
}

impl SupervisorLock {
    fn drop_quietly(self) {
        for (path, ino) in &self.held {
            if path.symlink_metadata().map(|m| m.ino()).ok() == Some(*ino) {
                let _ = std::fs::remove_file(path);
            }
            cleanup::remove_file(path);
        }
    }
}

/// The override: the Supervisor unlinks the app's lock files (not its own).
fn delete_app_locks(dir: &Path, timeline: &Timeline) {
    for name in LOCK_NAMES {
        let path = dir.join(name);
        let Ok(md) = path.symlink_metadata() else {
            continue;
        };
        if md.uid() == SUPERVISOR_UID {
            continue;
        }
        let who = holder(&path);
        if std::fs::remove_file(&path).is_ok() || std::fs::remove_dir(&path).is_ok() {
            timeline.event(
                Actor::Supervisor,
                "override-deleted",
                format!("lock override: deleted {name} ({who})"),
            );
        }
    }
}

/// Who holds a lock path, in the SDK's words.
fn holder(path: &Path) -> String {
    let opts = LockOptions::new().paths([path.to_path_buf()]).legacy(false);
    let report = update_lock::status(&opts, &HandoverOptions::new().paths(Vec::<PathBuf>::new()));
    report
        .locks
        .first()
        // The sentence is written for an app; the Supervisor's view is its first clause.
        .map(|p| {
            let first = p.message.split(';').next().unwrap_or(&p.message);
            first.replace("held by another app", "held by the app")
        })
        .unwrap_or_else(|| format!("{} exists", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_the_poll_interval() {
        let poll = Duration::from_secs(900);
        let got: Vec<u64> = (0..6)
            .map(|n| backoff(n, poll).as_millis() as u64)
            .collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(backoff(30, poll), poll);
        assert_eq!(backoff(3, Duration::from_secs(1)), Duration::from_secs(1));
    }
}
