//! `lockctl status --json` for every state, and `lockctl handover complete`.

use std::os::unix::fs::MetadataExt;

use crate::common::*;
use serde_json::Value;

const HOLD: &str = "echo ready; read x";

fn assert_no_holder(l: &Value) {
    assert!(l["holder"].is_null(), "{l}");
}

#[test]
fn free_paths_and_pending_handover() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let signal = at(&dir, "handover-complete");
    let st = status_json(&[&path], &[&signal]);
    assert_eq!(st["schema"], 1);
    assert_eq!(st["locks"].as_array().unwrap().len(), 1);
    let l = &st["locks"][0];
    assert_eq!(l["path"], path.display().to_string());
    assert_eq!(l["state"], "free");
    assert_eq!(l["blocks_app_updates"], false);
    assert_eq!(l["blocks_host_reboot"], false);
    assert_eq!(l["flock_held"], false);
    assert!(l["owner_uid"].is_null(), "{l}");
    assert_no_holder(l);
    assert!(l["foreign_kind"].is_null(), "{l}");
    assert!(l["message"].as_str().is_some_and(|m| !m.is_empty()), "{l}");
    assert_eq!(st["handover"][0]["path"], signal.display().to_string());
    assert_eq!(st["handover"][0]["pending"], false);
    assert_eq!(st["blocks_app_updates"], false);
    assert_eq!(st["blocks_host_reboot"], false);
    assert!(entries(dir.path()).is_empty(), "status created something");

    let (s, out, err) = output(
        lockctl()
            .args(["handover", "complete", "--path"])
            .arg(&signal),
    );
    assert_eq!(code(s), 0, "{err}");
    assert!(out.contains(&signal.display().to_string()), "{out}");
    let st = status_json(&[&path], &[&signal]);
    assert_eq!(st["handover"][0]["pending"], true);

    // The text form says the same.
    let (s, out, _) = output(
        lockctl()
            .args(["status", "--path"])
            .arg(&path)
            .arg("--handover-path")
            .arg(&signal),
    );
    assert_eq!(code(s), 0, "free: exit 0");
    assert!(out.contains("free"), "{out}");
    assert!(out.contains("pending"), "{out}");
    let (s, out, _) = output(lockctl().args(["status", "--quiet", "--path"]).arg(&path));
    assert_eq!((code(s), out.as_str()), (0, ""));
}

#[test]
fn held_by_app() {
    let dir = service_dir();
    let (main, legacy) = (at(&dir, "updates.lock"), at(&dir, "resin-updates.lock"));
    let mut p = run_under_lock(&[&main, &legacy], HOLD);
    p.expect_line("ready");
    let st = status_json(&[&main, &legacy], &[]);
    for (i, path) in [&main, &legacy].into_iter().enumerate() {
        let l = &st["locks"][i];
        assert_eq!(l["path"], path.display().to_string());
        assert_eq!(l["state"], "held-by-app", "{l}");
        assert_eq!(l["blocks_app_updates"], true);
        assert_eq!(l["flock_held"], true);
        assert_eq!(l["owner_uid"], 0);
        assert!(l["foreign_kind"].is_null());
        let h = &l["holder"];
        assert_eq!(h["pid"], p.pid(), "{h}");
        assert_eq!(h["program"], "lockctl");
        assert_eq!(h["uid"], 0);
        assert_eq!(h["same_pid_namespace"], true);
        assert_eq!(h["same_process"], false);
        assert!(h["hostname"].is_string());
        assert!(h["acquired_at_ms"].as_u64().is_some_and(|t| t > 0), "{h}");
        assert!(h["pid_ns"].as_u64().is_some(), "{h}");
        let msg = l["message"].as_str().unwrap();
        assert!(msg.contains(&format!("pid {}", p.pid())), "{msg}");
    }
    // Only a file named updates.lock is probed by the host OS reboot.
    assert_eq!(st["locks"][0]["blocks_host_reboot"], true);
    assert_eq!(st["locks"][1]["blocks_host_reboot"], false);
    assert_eq!(st["blocks_app_updates"], true);
    assert_eq!(st["blocks_host_reboot"], true);

    let (s, out, _) = output(
        lockctl()
            .args(["status", "--path"])
            .arg(&main)
            .arg("--path")
            .arg(&legacy),
    );
    assert_eq!(code(s), 73, "held: exit 73, as the Supervisor's lockfile");
    assert!(out.contains("HELD by an app"), "{out}");
    assert!(out.contains("host OS reboot: blocked"), "{out}");
    let (s, out, _) = output(
        lockctl()
            .args(["status", "-q", "--path"])
            .arg(&main)
            .arg("--path")
            .arg(&legacy),
    );
    assert_eq!((code(s), out.as_str()), (73, ""), "--quiet prints nothing");

    p.send("go");
    assert_eq!(code(p.wait()), 0);
    let st = status_json(&[&main, &legacy], &[]);
    assert_eq!(st["locks"][0]["state"], "free");
    assert_eq!(st["locks"][1]["state"], "free");
    assert_eq!(st["blocks_app_updates"], false);
}

#[test]
fn held_by_supervisor_is_reported_and_waited_for() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    // Exactly what the Supervisor does.
    let (s, _, err) = output(
        command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["lockfile", "-r", "0"])
            .arg(&path),
    );
    assert_eq!(code(s), 0, "{err}");
    let st = status_json(&[&path], &[]);
    let l = &st["locks"][0];
    assert_eq!(l["state"], "held-by-supervisor", "{l}");
    assert_eq!(l["owner_uid"], 65534);
    assert_eq!(l["blocks_app_updates"], true);
    assert_eq!(l["blocks_host_reboot"], false);
    assert_eq!(l["flock_held"], false);
    assert_no_holder(l);
    assert!(l["foreign_kind"].is_null());
    assert!(l["message"].as_str().unwrap().contains("Supervisor"), "{l}");

    let (s, out, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "echo", "ran"]),
    );
    assert_eq!(code(s), 73, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("Supervisor"), "{err}");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.uid(), 65534, "the Supervisor's file was replaced");
    assert_eq!(std::fs::read(&path).unwrap(), b"0");

    // An app starting during an update waits until the Supervisor lets go.
    let mut waiter = Proc::spawn(
        lockctl()
            .args(["run", "--path"])
            .arg(&path)
            .args(["--", "sh", "-c", "echo got-lock; cat \"$0\"; read x"])
            .arg(&path),
    );
    wait_until_waiting(waiter.pid());
    assert!(!waiter.exited());
    std::fs::remove_file(&path).unwrap(); // the Supervisor releases
    waiter.expect_line("got-lock");
    assert_eq!(waiter.line(), "update-lock holder v1");
    assert_held(&path);
    waiter.send("go");
    assert_eq!(code(waiter.wait()), 0);
    assert_free(&path);
}

#[test]
fn foreign_files_are_reported_and_never_deleted() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");

    let (s, _, _) = output(command("touch").arg(&path));
    assert_eq!(code(s), 0);
    let st = status_json(&[&path], &[]);
    let l = &st["locks"][0];
    assert_eq!(l["state"], "foreign", "{l}");
    assert_eq!(l["foreign_kind"], "empty-file");
    assert_eq!(l["owner_uid"], 0);
    assert_eq!(l["blocks_app_updates"], true);
    assert_eq!(l["blocks_host_reboot"], false);
    assert_eq!(l["flock_held"], false);
    assert_no_holder(l);
    assert!(l["message"].as_str().unwrap().contains("touch"), "{l}");
    let (s, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(s), 73, "{err}");
    assert!(err.contains("not created by update-lock"), "{err}");
    assert!(path.exists(), "a foreign file was deleted");

    // The same empty file with flock(1) holding it blocks the host OS reboot.
    let mut f = Proc::spawn(command("flock").arg(&path).args(["sh", "-c", HOLD]));
    f.expect_line("ready");
    let st = status_json(&[&path], &[]);
    let l = &st["locks"][0];
    assert_eq!(l["state"], "foreign");
    assert_eq!(l["flock_held"], true);
    assert_eq!(l["blocks_host_reboot"], true);
    assert_eq!(st["blocks_host_reboot"], true);
    f.send("go");
    assert_eq!(code(f.wait()), 0);
    assert!(path.exists(), "flock(1) leaves its file behind");
    std::fs::remove_file(&path).unwrap();

    // procmail's lockfile run as root (not the Supervisor's uid): content `0`.
    let (s, _, _) = output(command("lockfile").args(["-r", "0"]).arg(&path));
    assert_eq!(code(s), 0);
    let l = &status_json(&[&path], &[])["locks"][0];
    assert_eq!(l["state"], "foreign");
    assert_eq!(l["foreign_kind"], "lockfile-format");
    std::fs::remove_file(&path).unwrap();

    std::fs::create_dir(&path).unwrap();
    let l = &status_json(&[&path], &[])["locks"][0];
    assert_eq!(l["foreign_kind"], "directory", "{l}");
    assert_eq!(l["blocks_app_updates"], true);
    std::fs::remove_dir(&path).unwrap();

    std::os::unix::fs::symlink("/nonexistent/target", &path).unwrap();
    let l = &status_json(&[&path], &[])["locks"][0];
    assert_eq!(l["foreign_kind"], "symlink", "{l}");
    assert_eq!(l["symlink_target"], "/nonexistent/target");
    assert_eq!(l["blocks_app_updates"], true);
    let (s, _, _) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(s), 73);
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!std::path::Path::new("/nonexistent/target").exists());
}

#[test]
fn handover_complete_creates_the_signal_idempotently() {
    let dir = service_dir();
    let signal = at(&dir, "handover-complete");
    let legacy = at(&dir, "resin-kill-me");
    for round in 0..2 {
        let (s, out, err) = output(
            lockctl()
                .args(["handover", "complete", "--path"])
                .arg(&signal)
                .arg("--path")
                .arg(&legacy),
        );
        assert_eq!(code(s), 0, "round {round}: {err}");
        assert!(signal.is_file() && legacy.is_file(), "round {round}");
        assert!(
            out.contains(&format!("hand-over signalled: {}", signal.display())),
            "{out}"
        );
        assert!(
            out.contains(&format!("hand-over signalled: {}", legacy.display())),
            "{out}"
        );
    }
    assert_eq!(
        entries(dir.path()),
        ["handover-complete", "resin-kill-me"],
        "no temporary files left"
    );
    // The Supervisor consumes it by unlinking; signalling again recreates it.
    std::fs::remove_file(&signal).unwrap();
    let (s, _, _) = output(
        lockctl()
            .args(["handover", "complete", "--path"])
            .arg(&signal),
    );
    assert_eq!(code(s), 0);
    assert!(signal.is_file());
}
