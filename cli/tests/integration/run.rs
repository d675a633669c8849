//! `lockctl run`: the lock as both real readers see it, exit statuses, signal forwarding,
//! `--no-wait` / `--timeout`, and usage errors.

use std::path::Path;
use std::time::Instant;

use crate::common::*;
use nix::sys::signal::Signal;

/// A command that says it runs, then waits for a line on stdin and exits 5.
const HOLD: &str = "echo ready; read x; exit 5";

/// Traps every forwarded signal (reporting it on stdout) and exits 42 on a `quit` line.
/// dash's `read` returns 1 when a trapped signal interrupts it, as at end of input: the
/// `sig` flag tells the two apart.
const TRAPS: &str = r#"
for s in INT TERM HUP QUIT USR1 USR2; do trap "echo got $s; sig=1" $s; done
echo ready
while :; do
  if read x; then [ "$x" = quit ] && exit 42; continue; fi
  if [ -n "$sig" ]; then sig=; continue; fi
  exit 1
done
"#;

#[test]
fn lock_is_held_for_both_readers_while_the_command_runs() {
    let dir = service_dir();
    let (main, legacy) = (at(&dir, "updates.lock"), at(&dir, "resin-updates.lock"));
    let mut p = run_under_lock(&[&main, &legacy], HOLD);
    p.expect_line("ready");
    assert_held(&main);
    assert_held(&legacy);
    assert_eq!(record_pid(&main), p.pid(), "record names lockctl as holder");
    assert_eq!(record_pid(&legacy), p.pid());
    p.send("go");
    assert_eq!(code(p.wait()), 5, "exit status is the command's");
    assert_free(&main);
    assert_free(&legacy);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn exit_status_is_the_commands_and_128_plus_signal() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    for (script, want) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
        ("kill -USR1 $$", 128 + 10),
    ] {
        let (st, _, err) = output(
            lockctl()
                .args(["run", "--path"])
                .arg(&path)
                .args(["--", "sh", "-c", script]),
        );
        assert_eq!(code(st), want, "{script}: {err}");
        assert!(entries(dir.path()).is_empty(), "{script} left the lock");
    }
}

#[test]
fn missing_or_unexecutable_command_fails_and_releases() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let (st, _, err) = output(lockctl().args(["run", "--path"]).arg(&path).args([
        "--",
        "/nonexistent/no-such-command",
        "arg",
    ]));
    assert_eq!(code(st), 127, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("/nonexistent/no-such-command"), "{err}");
    assert!(err.contains("released"), "{err}");
    assert!(entries(dir.path()).is_empty());
    assert_free(&path);

    let script = at(&dir, "not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--path"])
            .arg(&path)
            .arg("--")
            .arg(&script),
    );
    assert_eq!(code(st), 126, "{err}");
    assert!(!path.exists(), "lock left after a failed exec");
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut p = run_under_lock(&[&path], TRAPS);
    p.expect_line("ready");
    for (sig, name) in [
        (Signal::SIGINT, "INT"),
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
    ] {
        p.signal(sig);
        assert_eq!(p.line(), format!("got {name}"), "{sig} not forwarded");
        // lockctl itself must still be there, holding the lock.
        assert!(!p.exited(), "lockctl exited on {sig}");
        assert_held(&path);
    }
    p.send("quit");
    assert_eq!(code(p.wait()), 42);
    assert_free(&path);
}

#[test]
fn signal_while_waiting_for_a_held_lock_ends_the_wait_and_takes_nothing() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut holder = run_under_lock(&[&path], HOLD);
    holder.expect_line("ready");
    for (sig, want) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let mut waiter = run_under_lock(&[&path], "echo got-lock");
        wait_until_waiting(waiter.pid());
        waiter.signal(sig);
        assert_eq!(code(waiter.wait()), want, "{sig}: {}", waiter.stderr());
        assert_eq!(waiter.rest_of_stdout(), "", "the command must not run");
        let err = waiter.stderr();
        assert!(err.contains("cancelled"), "{err}");
        assert!(err.contains(sig.as_str()), "{err}");
        // Who held it when the wait started, then the cancellation.
        assert_eq!(err.trim_end().lines().count(), 2, "{err:?}");
        assert!(err.starts_with("lockctl: waiting for "), "{err}");
        // The holder's lock is untouched.
        assert_eq!(record_pid(&path), holder.pid());
        assert_held(&path);
        assert_eq!(entries(dir.path()), ["updates.lock"]);
    }
    holder.send("go");
    assert_eq!(code(holder.wait()), 5);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn no_wait_and_timeout_on_a_held_lock_exit_73_naming_path_and_holder() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut holder = run_under_lock(&[&path], HOLD);
    holder.expect_line("ready");
    let pid = holder.pid();

    for flags in [&["--no-wait"][..], &["--timeout", "0"][..]] {
        let (st, out, err) = output(
            lockctl()
                .arg("run")
                .args(flags)
                .arg("--path")
                .arg(&path)
                .args(["--", "echo", "ran"]),
        );
        assert_eq!(code(st), 73, "{flags:?}: {err}");
        assert_eq!(out, "", "command ran although the lock is held");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(&format!("pid {pid}")), "holder pid: {err}");
        assert!(err.contains("lockctl"), "holder program: {err}");
    }

    let started = Instant::now();
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--timeout", "0.2", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    let waited = started.elapsed();
    assert_eq!(code(st), 73, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    // One line when the wait starts (the next would come after 10 s), one for the timeout.
    assert_eq!(err.trim_end().lines().count(), 2, "two lines: {err:?}");
    assert!(err.starts_with("lockctl: waiting for "), "{err}");
    assert!(waited.as_millis() >= 200, "gave up after {waited:?}");

    assert_eq!(record_pid(&path), pid, "the holder's lock is untouched");
    holder.send("go");
    assert_eq!(code(holder.wait()), 5);
    assert_free(&path);
}

#[test]
fn held_second_path_leaves_nothing_of_the_first() {
    let dir = service_dir();
    let (main, legacy) = (at(&dir, "updates.lock"), at(&dir, "resin-updates.lock"));
    let mut holder = run_under_lock(&[&legacy], HOLD);
    holder.expect_line("ready");
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&main)
            .arg("--path")
            .arg(&legacy)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 73, "{err}");
    assert!(err.contains("resin-updates.lock"), "{err}");
    assert_eq!(
        entries(dir.path()),
        ["resin-updates.lock"],
        "all-or-nothing"
    );
    assert_free(&main);
    holder.send("go");
    assert_eq!(code(holder.wait()), 5);
}

#[test]
fn bad_timeouts_are_usage_errors() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    for bad in ["-1", "abc", "NaN", "1e12", "", "inf5"] {
        for sub in ["run", "acquire"] {
            let mut c = lockctl();
            c.arg(sub)
                .arg(format!("--timeout={bad}"))
                .arg("--path")
                .arg(&path);
            if sub == "run" {
                c.args(["--", "true"]);
            }
            let (st, _, err) = output(&mut c);
            assert_eq!(code(st), 64, "{sub} --timeout={bad:?}: {err}");
            assert!(err.contains("--timeout"), "{err}");
            assert!(err.contains(&format!("'{bad}'")), "names the value: {err}");
        }
    }
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn unknown_flags_and_missing_arguments_are_usage_errors() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock").display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "--bogus", "--", "true"],
        vec!["run", "--path", &path, "--bogus", "--", "true"],
        vec!["run", "--path", &path],
        vec![
            "run",
            "--path",
            &path,
            "--no-wait",
            "--timeout",
            "1",
            "--",
            "true",
        ],
        vec!["acquire", "--bogus"],
        vec!["release", "--bogus"],
        vec!["status", "--frobnicate"],
        vec!["handover", "complete", "--bogus"],
        vec!["handover"],
        vec!["frobnicate"],
        vec![],
    ];
    for args in cases {
        let (st, out, err) = output(lockctl().args(&args));
        assert_eq!(code(st), 64, "{args:?}: out {out:?} err {err:?}");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        // One line saying what is wrong, except when no command is given at all (then the
        // help is shown).
        if !args.is_empty() && args != ["handover"] {
            assert_eq!(
                err.trim().lines().count(),
                1,
                "{args:?}: not one line: {err}"
            );
            assert!(err.starts_with("lockctl: error[usage]: "), "{err}");
        }
        assert!(entries(dir.path()).is_empty(), "{args:?} created something");
    }
    // A missing argument is named, with the command's usage.
    let (st, _, err) = output(lockctl().args(["run", "--path", &path]));
    assert_eq!(code(st), 64);
    assert!(
        err.contains("required arguments were not provided: <CMD>...; usage: lockctl run "),
        "{err}"
    );
    let (st, out, _) = output(lockctl().arg("--help"));
    assert_eq!(code(st), 0);
    assert!(out.contains("73"), "help documents the exit codes: {out}");
}

/// Like flock(1), the command inherits the lock's descriptors: if lockctl itself is
/// SIGKILLed while the command is still in its critical section, the lock keeps blocking
/// both readers (the file stays, the command holds the flock) and nobody can take it over;
/// once the command is gone too, the lock is stale and the next `run` reclaims it.
#[test]
fn killed_lockctl_keeps_the_lock_while_its_command_runs() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut p = run_under_lock(&[&path], "echo ready $$; read x; echo done");
    let ready = p.line();
    let cmd_pid: i32 = ready
        .strip_prefix("ready ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
    let cmd = pidfd(cmd_pid).expect("the command runs");
    p.signal(Signal::SIGKILL);
    p.wait();
    assert_held(&path);
    assert_eq!(
        status_json(&[&path], &[])["locks"][0]["state"],
        "held-by-app"
    );
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(
        code(st),
        73,
        "taken over from a running critical section: {err}"
    );

    p.send("go"); // the command still reads lockctl's stdin
    wait_pidfd(&cmd, "the command");
    assert_eq!(status_json(&[&path], &[])["locks"][0]["state"], "stale");
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 0, "{err}");
    assert!(err.contains("took over"), "{err}");
    assert_free(&path);
}

/// `run --shared`: two jobs hold the lock at once (the second does not wait), both readers
/// see it held until the last one leaves, which removes it; an exclusive `run` waits.
#[test]
fn shared_runs_hold_at_once_and_the_last_one_out_removes_the_lock() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let shared = |p: &Path| {
        let mut c = lockctl();
        c.args(["run", "--shared", "--no-wait", "--path"])
            .arg(p)
            .args(["--", "sh", "-c", HOLD]);
        Proc::spawn(&mut c)
    };
    let mut first = shared(&path);
    first.expect_line("ready");
    let mut second = shared(&path);
    second.expect_line("ready");
    assert_held(&path);
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--no-wait", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 73, "an exclusive run must not get in: {err}");
    assert!(err.contains("held by another app"), "{err}");
    first.send("go");
    assert_eq!(code(first.wait()), 5);
    assert_held(&path);
    second.send("go");
    assert_eq!(code(second.wait()), 5);
    assert_free(&path);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// `run` is not silent while it waits: it says who holds the lock when the wait starts (and
/// every 10 s); `--quiet` turns that off.
#[test]
fn waiting_says_who_holds_the_lock_unless_quiet() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut holder = run_under_lock(&[&path], HOLD);
    holder.expect_line("ready");
    let (st, _, err) = output(
        lockctl()
            .args(["run", "--timeout", "0.3", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 73, "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "lockctl: waiting for {}: the update lock is held by another app (pid {}",
            path.display(),
            holder.pid()
        )),
        "{err}"
    );
    let (st, _, err) = output(
        lockctl()
            .args(["run", "-q", "--timeout", "0.3", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(code(st), 73, "{err}");
    assert!(!err.contains("lockctl: waiting for"), "--quiet: {err}");
    assert_eq!(err.trim().lines().count(), 1, "only the error: {err}");
    holder.send("go");
    assert_eq!(code(holder.wait()), 5);
}

/// The command learns that an update is waiting (a line on stderr and `--update-signal`);
/// the next `lockctl run`, a new process, honours the dated note and lets the update in
/// first; once the Supervisor got in and out, nothing is yielded to any more.
#[test]
fn a_waiting_update_is_passed_on_and_the_next_run_yields() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let lockctl = || {
        let mut c = lockctl();
        c.env_remove(update_lock::YIELD_TO_UPDATES_ENV);
        c
    };
    let mut job = Proc::spawn(
        lockctl()
            .args(["run", "--update-signal", "usr1", "--path"])
            .arg(&path)
            .args([
                "--",
                "sh",
                "-c",
                // Finishes only when told: quicker, the release could let the very attempt
                // that caused the signal in, before lockfile's link().
                "trap 'kill $!; echo update-waiting; read x; exit 0' USR1; echo ready; sleep 60 & wait",
            ]),
    );
    job.expect_line("ready");
    assert_eq!(supervisor_lockfile(&path).0, 73);
    job.expect_line("update-waiting");
    job.send("done");
    assert_eq!(code(job.wait()), 0);
    let err = job.stderr();
    assert!(
        err.contains("an update is waiting") && err.contains("sent SIGUSR1"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&path).is_err(), "released");

    let run_now = |extra: &[&str]| {
        let mut c = lockctl();
        c.args(["run", "--no-wait"])
            .args(extra)
            .arg("--path")
            .arg(&path);
        output(c.args(["--", "true"]))
    };
    let (st, _, err) = run_now(&[]);
    assert_eq!(code(st), 73, "{err}");
    assert!(err.contains("kept for the balena Supervisor"), "{err}");
    let (st, _, err) = run_now(&["--yield-to-updates", "0"]);
    assert_eq!(code(st), 0, "{err}");

    // The Supervisor gets in while the app yields; a waiting run takes the lock after it.
    let mut waiter = Proc::spawn(
        lockctl()
            .args(["run", "--timeout", "30", "--path"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(supervisor_lockfile(&path).0, 0, "the app must yield");
    wait_until_waiting(waiter.pid());
    let (st, _, err) = output(
        command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "rm"])
            .arg(&path),
    );
    assert_eq!(code(st), 0, "{err}");
    assert_eq!(code(waiter.wait()), 0, "{}", waiter.stderr());
    let (st, _, err) = run_now(&[]);
    assert_eq!(code(st), 0, "the update got in: no more yielding; {err}");
}

#[test]
fn a_bad_update_signal_is_a_usage_error() {
    let (st, _, err) = output(lockctl().args(["run", "--update-signal", "NOPE", "--", "true"]));
    assert_eq!(code(st), 64, "{err}");
    assert!(err.contains("not a signal name"), "{err}");
}
