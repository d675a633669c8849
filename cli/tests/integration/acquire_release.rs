//! `lockctl acquire` / `lockctl release`: a lock that outlives the calling shell, stdio
//! detached, and what happens when the holder is killed.

use crate::common::*;

/// `sh -c 'lockctl acquire ARGS'`: the lock is taken from a shell that then exits.
fn acquire_in_shell(args: &str) -> (i32, String, String) {
    let script = format!("\"$0\" acquire {args}");
    let (st, out, err) = output(command("sh").args(["-c", &script, LOCKCTL]));
    (code(st), out, err)
}

fn release_in_shell(args: &str) -> (i32, String, String) {
    let script = format!("\"$0\" release {args}");
    let (st, out, err) = output(command("sh").args(["-c", &script, LOCKCTL]));
    (code(st), out, err)
}

fn quoted(p: &std::path::Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn lock_outlives_the_shell_until_release() {
    let dir = service_dir();
    let (main, legacy) = (at(&dir, "updates.lock"), at(&dir, "resin-updates.lock"));
    let args = format!("--path {} --path {}", quoted(&main), quoted(&legacy));
    let _guard = HolderGuard(main.clone());
    let (c, out, err) = acquire_in_shell(&args);
    assert_eq!(c, 0, "acquire: {err}");
    assert_eq!(out, "");
    let holder = record_pid(&main);
    assert_eq!(record_pid(&legacy), holder, "one holder for both paths");
    // The shell that ran `acquire` is gone; the lock is still held for both readers.
    assert_held(&main);
    assert_held(&legacy);
    let st = status_json(&[&main, &legacy], &[]);
    assert_eq!(st["locks"][0]["state"], "held-by-app");
    assert_eq!(st["locks"][0]["holder"]["program"], "lockctl acquire");
    assert_eq!(st["blocks_host_reboot"], true);

    // A second acquire (without waiting) is refused and does not disturb the first.
    let (c, _, err) = acquire_in_shell(&format!("--no-wait {args}"));
    assert_eq!(c, 73, "{err}");
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert_eq!(record_pid(&main), holder);

    let holder_fd = pidfd(holder).expect("holder running");
    let (c, _, err) = release_in_shell(&args);
    assert_eq!(c, 0, "release: {err}");
    assert!(err.contains("released"), "{err}");
    wait_pidfd(&holder_fd, "the holder after release");
    assert_free(&main);
    assert_free(&legacy);
    assert!(entries(dir.path()).is_empty());

    // Releasing again is fine and says so.
    let (c, _, err) = release_in_shell(&args);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("nothing to release"), "{err}");
}

/// `release --pid` names the exclusive holder too (the one its record proves); a pid that
/// holds nothing is refused and nothing is ended.
#[test]
fn release_pid_of_the_exclusive_holder_ends_it() {
    let dir = service_dir();
    let main = at(&dir, "updates.lock");
    let args = format!("--path {}", quoted(&main));
    let _guard = HolderGuard(main.clone());
    let (c, _, err) = acquire_in_shell(&args);
    assert_eq!(c, 0, "{err}");
    let holder = record_pid(&main);
    let (c, _, err) = release_in_shell(&format!("--pid {} {args}", holder + 100_000));
    assert_eq!(c, 64, "{err}");
    assert!(
        err.contains("no `lockctl acquire` process with pid"),
        "{err}"
    );
    assert_held(&main);
    let fd = pidfd(holder).expect("holder running");
    let (c, _, err) = release_in_shell(&format!("--pid {holder} {args}"));
    assert_eq!(c, 0, "{err}");
    wait_pidfd(&fd, "the holder after release --pid");
    assert_free(&main);
}

#[test]
fn acquire_output_can_be_captured_without_hanging() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    // `$(...)` only returns when every writer of the pipe has closed it: the holder must
    // have detached its stdio. (A hang fails the test after a deadline.)
    let script = format!(
        "x=$(\"$0\" acquire --path {} 2>&1); echo \"rc=$? out=[$x]\"",
        quoted(&path)
    );
    let _guard = HolderGuard(path.clone());
    let mut p = Proc::spawn(command("sh").args(["-c", &script, LOCKCTL]));
    p.close_stdin();
    assert_eq!(p.line(), "rc=0 out=[]");
    assert_eq!(code(p.wait()), 0);
    assert_eq!(p.rest_of_stdout(), "", "stdout closed");
    assert_held(&path);

    // Same through a pipe on stderr alone.
    let (c, _, err) = release_in_shell(&format!("--path {}", quoted(&path)));
    assert_eq!(c, 0, "{err}");
    let mut p = Proc::spawn(lockctl().args(["acquire", "--path"]).arg(&path));
    assert_eq!(code(p.wait()), 0);
    assert_eq!(p.rest_of_stdout(), "", "holder kept stdout open");
    assert_eq!(p.stderr(), "", "holder kept stderr open");
    let (c, _, err) = release_in_shell(&format!("--path {}", quoted(&path)));
    assert_eq!(c, 0, "{err}");
    assert_free(&path);
}

#[test]
fn killed_holder_is_stale_and_release_clears_it() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let args = format!("--path {}", quoted(&path));
    let _guard = HolderGuard(path.clone());
    let (c, _, err) = acquire_in_shell(&args);
    assert_eq!(c, 0, "{err}");
    let holder = record_pid(&path);
    kill_and_wait(holder, "the holder");

    let st = status_json(&[&path], &[]);
    let l = &st["locks"][0];
    assert_eq!(l["state"], "stale", "{st}");
    assert_eq!(l["blocks_app_updates"], true);
    assert_eq!(l["blocks_host_reboot"], false);
    assert_eq!(l["flock_held"], false);
    assert_eq!(l["holder"]["pid"], holder);
    assert_eq!(st["blocks_app_updates"], true);
    assert_eq!(st["blocks_host_reboot"], false);
    // As the readers see it: the file still holds off updates, the reboot may go ahead.
    assert_eq!(supervisor_probe(&path), 73);
    assert_eq!(reboot_probe(&path), 0);

    let (c, _, err) = release_in_shell(&args);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("released"), "{err}");
    assert_free(&path);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn killed_holder_is_reclaimed_by_run() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let _guard = HolderGuard(path.clone());
    let (c, _, err) = acquire_in_shell(&format!("--path {}", quoted(&path)));
    assert_eq!(c, 0, "{err}");
    let holder = record_pid(&path);
    kill_and_wait(holder, "the holder");

    // With reclaim turned off the stale lock blocks.
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--no-reclaim", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 73, "{err}");
    assert!(err.contains("dead holder"), "{err}");

    let mut p = Proc::spawn(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "sh", "-c", "echo ready; read x"]),
    );
    p.expect_line("ready");
    assert_eq!(record_pid(&path), p.pid(), "the new holder's record");
    assert_held(&path);
    p.send("go");
    assert_eq!(code(p.wait()), 0);
    let err = p.stderr();
    assert!(err.contains("took over"), "{err}");
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert_free(&path);
}

#[test]
fn release_refuses_locks_it_did_not_take() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut p = run_under_lock(&[&path], "echo ready; read x");
    p.expect_line("ready");
    let (c, _, err) = release_in_shell(&format!("--path {}", quoted(&path)));
    assert_eq!(c, 73, "{err}");
    assert!(err.contains("not released"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert_held(&path);
    assert!(!p.exited());
    p.send("go");
    assert_eq!(code(p.wait()), 0);

    // A foreign file is never deleted by release.
    std::fs::write(&path, "").unwrap();
    let (c, _, err) = release_in_shell(&format!("--path {}", quoted(&path)));
    assert_eq!(c, 73, "{err}");
    assert!(path.exists(), "release deleted a foreign file");
}

/// The rehearsal is a companion binary: without it beside lockctl (or on PATH), `lockctl
/// rehearse` says what is missing and how to get it, with exit 70, and runs nothing.
#[test]
fn rehearse_without_its_companion_binary_says_how_to_install_it() {
    require_rehearse_binary();
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("lockctl");
    std::fs::copy(LOCKCTL, &alone).unwrap();
    let (st, out, err) = output(
        command(alone.to_str().unwrap())
            .env("PATH", "/usr/bin:/bin")
            .args(["rehearse", "--old", "true", "--new", "true"]),
    );
    assert_eq!(code(st), 70, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("`lockctl-rehearse` was not found beside lockctl")
            && err.contains("install it beside lockctl"),
        "{err}"
    );
    // With it beside lockctl, the same arguments reach the rehearsal (its own usage check).
    let companion = std::path::Path::new(LOCKCTL).with_file_name("lockctl-rehearse");
    std::fs::copy(&companion, dir.path().join("lockctl-rehearse")).unwrap();
    let (st, _, err) = output(command(alone.to_str().unwrap()).args(["rehearse", "--old", "true"]));
    assert_eq!(code(st), 64, "{err}");
    assert!(err.contains("--new"), "{err}");
}

/// Every exit status lockctl documents in docs/lockctl.md is listed by `lockctl --help`,
/// and the other way round: one list, kept in step.
#[test]
fn help_and_docs_list_the_same_exit_codes() {
    let (st, help, _) = output(lockctl().arg("--help"));
    assert_eq!(code(st), 0);
    let in_help: std::collections::BTreeSet<String> = help
        .split("Exit codes:")
        .nth(1)
        .expect("an exit code section")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lockctl.md"))
        .expect("docs/lockctl.md");
    let in_docs: std::collections::BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| w.replace(" / ", "/"))
        .collect();
    assert_eq!(in_help, in_docs, "lockctl --help vs docs/lockctl.md");
    for must in ["65", "70", "74", "75"] {
        assert!(in_help.contains(must), "{must} missing: {in_help:?}");
    }
}

/// `acquire --shared`: two holds at once (each prints its holder's pid), `release` needs
/// `--pid` while there are several, ends exactly that hold (the lock stays for the other),
/// and the last release removes the lock.
#[test]
fn shared_acquires_hold_at_once_and_release_ends_one_hold_at_a_time() {
    let dir = service_dir();
    let main = at(&dir, "updates.lock");
    let args = format!("--path {}", quoted(&main));
    let _guard = HolderGuard(main.clone());
    let pid_of = |err: &str| -> i32 {
        err.split("holding it shared in process ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no holder pid in {err:?}"))
    };
    let (c, _, err) = acquire_in_shell(&format!("--shared --no-wait {args}"));
    assert_eq!(c, 0, "{err}");
    let first = pid_of(&err);
    let (c, _, err) = acquire_in_shell(&format!("--shared --no-wait {args}"));
    assert_eq!(c, 0, "the second shared acquire joins: {err}");
    let second = pid_of(&err);
    assert_held(&main);
    // An exclusive acquire does not get in.
    let (c, _, err) = acquire_in_shell(&format!("--no-wait {args}"));
    assert_eq!(c, 73, "{err}");

    let (c, _, err) = release_in_shell(&args);
    assert_eq!(c, 64, "{err}");
    assert!(err.contains("--pid"), "{err}");
    assert!(
        err.contains(&first.to_string()) && err.contains(&second.to_string()),
        "{err}"
    );
    assert_held(&main);

    let first_fd = pidfd(first).expect("first holder running");
    let (c, _, err) = release_in_shell(&format!("--pid {first} {args}"));
    assert_eq!(c, 0, "{err}");
    wait_pidfd(&first_fd, "the first shared holder after release");
    assert_held(&main); // the second holder is still inside
    assert!(pidfd(second).is_some(), "the other hold was not ended");

    // The ended holder is still named by the file's record (it created the file): its
    // pid is refused as unproven (65), and nothing is signalled.
    let (c, _, err) = release_in_shell(&format!("--pid {first} {args}"));
    assert_eq!(c, 65, "a pid that holds nothing is refused: {err}");
    assert!(err.contains("nothing was signalled or deleted"), "{err}");
    assert_held(&main);
    let second_fd = pidfd(second).expect("second holder running");
    let (c, _, err) = release_in_shell(&args);
    assert_eq!(c, 0, "one holder left: no --pid needed: {err}");
    wait_pidfd(&second_fd, "the second shared holder after release");
    assert_free(&main);
    assert!(entries(dir.path()).is_empty());
}
