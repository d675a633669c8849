//! Hardening of `lockctl` in the shared lock directory, tried as a co-tenant of another uid
//! and as the Supervisor would (issue "Hardening"): each test is named after the promise.
//!
//! A. `release` signals nothing that is not proven to hold the lock.
//! B. `release` after the Supervisor's override ends its own holder and touches nothing else.
//! G. `status` and `release` say "unknown" when they cannot look, never "free".

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn release(path: &Path) -> (i32, String) {
    let (st, _, err) = output(lockctl().arg("release").arg("--path").arg(path));
    (code(st), err)
}

fn acquire(path: &Path) -> i32 {
    let (st, _, err) = output(lockctl().arg("acquire").arg("--path").arg(path));
    assert_eq!(code(st), 0, "acquire: {err}");
    record_pid(path)
}

/// Kills a `lockctl` process at the end of a test, even on a panic.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let is_lockctl = std::fs::read_to_string(format!("/proc/{}/comm", self.0))
            .is_ok_and(|c| c.trim_end() == "lockctl");
        if is_lockctl {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// Field 22 of /proc/PID/stat.
fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn pid_ns() -> u64 {
    std::fs::metadata("/proc/self/ns/pid").unwrap().ino()
}

/// A co-tenant (uid 1000) plants a record that names `victim` as a `lockctl acquire`
/// holder and holds the flock of that file itself, so the lock looks live.
fn plant_forged_holder(path: &Path, victim: i32, start: Option<u64>) -> Proc {
    let record = format!(
        "update-lock holder v1\npid={victim}\npid_ns={}\nboot_id=\nstart_time={}\nuid=1000\nhostname=x\nprogram=lockctl acquire\nacquired_at=\n",
        pid_ns(),
        start.map(|s| s.to_string()).unwrap_or_default()
    );
    // Written by the co-tenant itself, then flocked by flock(1) for as long as it runs.
    let script =
        r#"umask 022; printf '%s' "$2" > "$1" && exec flock -x "$1" sh -c 'echo ready; read x'"#;
    let mut p = Proc::spawn(
        command("setpriv")
            .args([
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(path)
            .arg(record),
    );
    p.expect_line("ready");
    p
}

#[test]
fn a_release_never_signals_a_process_named_by_a_forged_record() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    // The victim runs as the co-tenant's own uid, and the record even has its start time:
    // only the flock proves who holds the lock, and the victim does not hold it.
    let mut victim = Proc::spawn(command("setpriv").args([
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        "sleep",
        "1000",
    ]));
    let vpid = victim.pid();
    let mut attacker = plant_forged_holder(&path, vpid, Some(start_time(vpid)));
    let before = std::fs::read(&path).unwrap();

    let (c, err) = release(&path);
    assert_eq!(c, 65, "{err}");
    assert!(
        err.contains("does not hold flock on this lock file"),
        "{err}"
    );
    assert!(err.contains("nothing was signalled or deleted"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(!victim.exited(), "release signalled the victim");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was touched"
    );

    attacker.close_stdin();
    attacker.wait();
    victim.signal(Signal::SIGKILL);
    victim.wait();
}

#[test]
fn a_release_never_signals_a_pid_whose_record_has_no_start_time() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut victim = Proc::spawn(command("sleep").arg("1000"));
    let mut attacker = plant_forged_holder(&path, victim.pid(), None);
    let (c, err) = release(&path);
    assert_eq!(c, 65, "{err}");
    assert!(err.contains("no start time"), "{err}");
    assert!(!victim.exited(), "release signalled the victim");
    assert!(path.exists());
    attacker.close_stdin();
    attacker.wait();
    victim.signal(Signal::SIGKILL);
    victim.wait();
}

#[test]
fn a_release_never_signals_a_real_holder_whose_record_was_rewritten_with_another_start_time() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let holder = acquire(&path);
    let _guard = KillOnDrop(holder);
    let holder_fd = pidfd(holder).expect("holder running");
    // As if the pid had been reused: same pid, another start time.
    let text = std::fs::read_to_string(&path).unwrap();
    let forged: String = text
        .lines()
        .map(|l| {
            if l.starts_with("start_time=") {
                "start_time=1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, forged + "\n").unwrap();
    let (c, err) = release(&path);
    assert_eq!(c, 65, "{err}");
    assert!(err.contains("pid was reused"), "{err}");
    assert!(pidfd(holder).is_some(), "the holder was signalled");
    assert_held(&path);
    // The real holder still answers to a proper release once the record is honest again.
    kill(Pid::from_raw(holder), Signal::SIGKILL).unwrap();
    wait_pidfd(&holder_fd, "the holder");
}

/// The Supervisor's override, as it does it: unlink the app's lock file (as root), then
/// take its own with procmail `lockfile` as uid 65534.
fn supervisor_override(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let (c, err) = supervisor_lockfile(path);
    assert_eq!(c, 0, "lockfile: {err}");
}

#[test]
fn b_release_after_an_override_ends_its_holder_and_leaves_the_supervisors_lock_alone() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let holder = acquire(&path);
    let _guard = KillOnDrop(holder);
    let holder_fd = pidfd(holder).expect("holder running");
    supervisor_override(&path);
    let supervisor_file = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(supervisor_file.uid(), 65534);

    let (c, err) = release(&path);
    assert_eq!(c, 75, "{err}");
    assert!(err.contains("lost before release"), "{err}");
    assert!(err.contains("Supervisor"), "{err}");
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    wait_pidfd(&holder_fd, "the holder after release");
    let now = std::fs::symlink_metadata(&path).expect("the Supervisor's lock was deleted");
    assert_eq!((now.ino(), now.uid()), (supervisor_file.ino(), 65534));
    // The Supervisor releases as it does (it deletes its own file): all free again.
    std::fs::remove_file(&path).unwrap();
    assert_free(&path);
}

#[test]
fn b_release_after_the_lock_file_was_deleted_ends_its_holder() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let holder = acquire(&path);
    let _guard = KillOnDrop(holder);
    let holder_fd = pidfd(holder).expect("holder running");
    std::fs::remove_file(&path).unwrap();
    let (c, err) = release(&path);
    assert_eq!(c, 75, "{err}");
    assert!(err.contains("was deleted by someone else"), "{err}");
    wait_pidfd(&holder_fd, "the holder after release");
    assert_free(&path);
}

#[test]
fn g_status_and_release_say_unknown_when_they_cannot_look() {
    let base = service_dir();
    let inner = base.path().join("private");
    std::fs::create_dir(&inner).unwrap();
    let path = inner.join("updates.lock");
    let holder = acquire(&path);
    let _guard = KillOnDrop(holder);
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();

    // As uid 1000 the 0700 directory cannot be searched: held or free cannot be told.
    let as_app = |args: &[&str]| {
        let (st, out, err) = output(
            command("setpriv")
                .args(["--reuid=1000", "--regid=1000", "--clear-groups", LOCKCTL])
                .args(args)
                .arg("--path")
                .arg(&path),
        );
        (code(st), out, err)
    };
    let (c, out, err) = as_app(&["status", "--json"]);
    assert_eq!(c, 74, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["locks"][0]["state"], "unknown");
    assert!(
        v["locks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{v}"
    );
    let (c, out, _) = as_app(&["status"]);
    assert_eq!(c, 74);
    assert!(out.contains("UNKNOWN"), "{out}");
    assert!(!out.contains(": free"), "{out}");

    let (c, _, err) = as_app(&["release"]);
    assert_eq!(c, 74, "{err}");
    assert!(err.contains("could not check the lock"), "{err}");
    assert!(
        err.contains("nothing was released, signalled or deleted"),
        "{err}"
    );
    assert!(pidfd(holder).is_some(), "the holder was ended");
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert_held(&path);
    let (c, err) = release(&path);
    assert_eq!(c, 0, "{err}");
}

#[test]
fn h_nan_infinite_negative_and_overflowing_durations_are_usage_errors() {
    require_rehearse_binary();
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let p = path.to_str().unwrap();
    for args in [
        vec!["device", "--timeout", "NaN"],
        vec!["update", "--timeout", "inf"],
        vec!["reboot", "--timeout", "-1"],
        vec!["run", "--timeout", "NaN", "--path", p, "--", "true"],
        vec!["acquire", "--timeout", "1e400", "--path", p],
        vec!["handover", "take", "--step-timeout", "-0.5", "--", "true"],
        vec![
            "rehearse",
            "--old",
            "true",
            "--new",
            "true",
            "--timeout",
            "1e10",
        ],
    ] {
        let (st, _, err) = output(lockctl().args(&args));
        assert_eq!(code(st), 64, "{args:?}: {err}");
        assert!(err.contains("error[usage]"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!path.exists(), "nothing was taken");
}
