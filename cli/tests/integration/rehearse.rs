//! `lockctl rehearse`: the Supervisor's update of one service, rehearsed with real processes,
//! procmail's `lockfile` as uid 65534 and `flock -nx` as the host OS reboot. Each strategy's
//! order of events is checked against `docs/device-contract.md` (the
//! expected orders below are written from that file, not from the implementation).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A token unique to this test process and call, to find leftover processes by.
fn token() -> String {
    format!(
        "{}.{}{}",
        9000 + NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        7
    )
}

/// A service version that stops cleanly on SIGTERM (also as a container's PID 1) and whose
/// command line carries `tok`.
fn service(tok: &str) -> String {
    format!("trap 'exit 0' TERM; sleep {tok} & wait")
}

/// Run `lockctl rehearse --json -q ARGS`: exit code, report, stderr.
fn rehearse(args: &[&str]) -> (i32, Value, String) {
    require_rehearse_binary();
    let (st, out, err) = output(lockctl().arg("rehearse").args(["--json", "-q"]).args(args));
    let report = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code(st), report, err)
}

/// The fast settings every test uses (a short download, run-up and watch).
const FAST: [&str; 8] = [
    "--download",
    "0.2s",
    "--update-after",
    "0.2s",
    "--observe",
    "0.3s",
    "--stop-grace",
    "5s",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = FAST.to_vec();
    v.extend_from_slice(extra);
    v
}

/// `(actor, kind)` of every event.
fn events(r: &Value) -> Vec<(String, String)> {
    r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The events among `wanted` kinds, in order, as "actor:kind".
fn order(r: &Value, wanted: &[&str]) -> Vec<String> {
    events(r)
        .into_iter()
        .filter(|(a, k)| wanted.contains(&format!("{a}:{k}").as_str()))
        .map(|(a, k)| format!("{a}:{k}"))
        .collect()
}

fn event_detail<'a>(r: &'a Value, kind: &str) -> Vec<&'a str> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap())
        .collect()
}

fn spans(r: &Value, lane: &str) -> Vec<(f64, f64)> {
    r["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["lane"] == lane)
        .map(|s| (s["from_ms"].as_f64().unwrap(), s["to_ms"].as_f64().unwrap()))
        .collect()
}

/// No process whose command line carries `tok` is left (waiting on a pidfd for any that
/// is still on its way out).
fn assert_nothing_left(tok: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(tok) {
            if let Some(fd) = pidfd(pid) {
                wait_pidfd(&fd, &format!("leftover process {pid} ({tok})"));
            }
        }
    }
}

const ORDER_KINDS: [&str; 13] = [
    "supervisor:update-start",
    "download:download-start",
    "download:download-done",
    "supervisor:lock-taken",
    "supervisor:stop-sent",
    "old:exited",
    "supervisor:old-image-removed",
    "new:started",
    "supervisor:handover-wait",
    "supervisor:handover-wait-skipped",
    "supervisor:handover-complete-seen",
    "supervisor:lock-released",
    "supervisor:update-settled",
];

fn strategy_run(strategy: &str, extra: &[&str]) -> Value {
    let (t1, t2) = (token(), token());
    let (old, new) = (service(&t1), service(&t2));
    let mut a = args(&["--strategy", strategy, "--old", &old, "--new", &new]);
    a.extend_from_slice(extra);
    let (c, r, err) = rehearse(&a);
    assert_eq!(c, 0, "{strategy}: {err}\n{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["schema"], 1);
    assert_eq!(
        r["summary"]["old_exit"], "exit 0",
        "SIGTERM stops it: {r:#}"
    );
    assert_eq!(r["summary"]["new_running"], true);
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
    r
}

#[test]
fn download_then_kill_downloads_while_the_old_version_runs_then_locks_and_stops_it() {
    let r = strategy_run("download-then-kill", &[]);
    assert_eq!(r["settings"]["supervisor_uid_65534"], true);
    assert_eq!(
        order(&r, &ORDER_KINDS),
        [
            "supervisor:update-start",
            "download:download-start",
            "download:download-done",
            "supervisor:lock-taken",
            "supervisor:stop-sent",
            "old:exited",
            "new:started",
            "supervisor:lock-released",
            "supervisor:old-image-removed",
            "supervisor:update-settled",
        ]
    );
    assert_eq!(
        r["summary"]["peak_disk_bytes"], 200_000_000u64,
        "both images at once"
    );
}

#[test]
fn when_it_stops_a_version_the_supervisor_holds_lockfiles_owned_by_65534_that_the_app_sees() {
    // On SIGTERM the old version looks at the lock as an app would: the Supervisor's files
    // (procmail format: "0", mode 0444, uid 65534) and lockctl refusing with exit 73.
    let (t1, t2) = (token(), token());
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let old = format!(
        "trap 'stat -c \"%u %a %s\" /tmp/balena/updates.lock /tmp/balena/resin-updates.lock > /tmp/balena/at-stop; \
         {LOCKCTL} run --no-wait -- true 2> /tmp/balena/app-view; echo $? >> /tmp/balena/app-view; exit 0' TERM; sleep {t1} & wait"
    );
    let (c, r, err) = rehearse(&args(&[
        "--service-dir",
        d,
        "--old",
        &old,
        "--new",
        &service(&t2),
    ]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    let at_stop = std::fs::read_to_string(dir.path().join("at-stop")).unwrap();
    assert_eq!(
        at_stop, "65534 444 1\n65534 444 1\n",
        "lockfile writes \"0\" as uid 65534, mode 0444"
    );
    let app = std::fs::read_to_string(dir.path().join("app-view")).unwrap();
    assert!(app.contains("held by the balena Supervisor"), "{app}");
    assert!(app.trim_end().ends_with("73"), "{app}");
    // Released when the update settled: nothing of the Supervisor's is left.
    for name in ["updates.lock", "resin-updates.lock"] {
        assert!(
            std::fs::symlink_metadata(dir.path().join(name)).is_err(),
            "{name} left behind"
        );
    }
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn kill_then_download_stops_the_old_version_before_the_download() {
    let r = strategy_run("kill-then-download", &[]);
    assert_eq!(
        order(&r, &ORDER_KINDS),
        [
            "supervisor:update-start",
            "supervisor:lock-taken",
            "supervisor:stop-sent",
            "old:exited",
            "download:download-start",
            "download:download-done",
            "new:started",
            "supervisor:lock-released",
            "supervisor:old-image-removed",
            "supervisor:update-settled",
        ]
    );
}

#[test]
fn delete_then_download_removes_the_old_image_first_and_needs_the_least_disk() {
    let r = strategy_run(
        "delete-then-download",
        &["--old-image-size", "300MB", "--image-size", "200MB"],
    );
    assert_eq!(
        order(&r, &ORDER_KINDS),
        [
            "supervisor:update-start",
            "supervisor:lock-taken",
            "supervisor:stop-sent",
            "old:exited",
            "supervisor:old-image-removed",
            "download:download-start",
            "download:download-done",
            "new:started",
            "supervisor:lock-released",
            "supervisor:update-settled",
        ]
    );
    assert_eq!(
        r["summary"]["peak_disk_bytes"], 300_000_000u64,
        "never both images"
    );
}

#[test]
fn hand_over_documented_starts_the_new_version_beside_the_old_and_waits_for_the_signal() {
    // The new version signals completion with lockctl, as an app would.
    let (t1, t2) = (token(), token());
    let old = service(&t1);
    let new = format!("{LOCKCTL} handover complete && {}", service(&t2));
    let (c, r, err) = rehearse(&args(&[
        "--strategy",
        "hand-over",
        "--supervisor",
        "documented",
        "--expect-handover",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    assert_eq!(
        order(&r, &ORDER_KINDS),
        [
            "supervisor:update-start",
            "download:download-start",
            "download:download-done",
            "new:started",
            "supervisor:handover-wait",
            "supervisor:handover-complete-seen",
            "supervisor:stop-sent",
            "old:exited",
            "supervisor:old-image-removed",
            "supervisor:update-settled",
        ]
    );
    assert!(
        events(&r).iter().all(|(_, k)| !k.starts_with("lock-")),
        "hand-over takes no lock"
    );
    assert!(r["summary"]["handover_latency_ms"].as_f64().is_some());
    assert!(
        r["summary"]["peak_processes"].as_u64().unwrap() >= 4,
        "both versions at once: {r:#}"
    );
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn hand_over_current_stops_the_old_version_right_after_the_new_one_starts() {
    // This new version never signals: a current Supervisor does not wait anyway.
    let r = strategy_run(
        "hand-over",
        &["--supervisor", "current", "--handover-timeout", "60000"],
    );
    assert_eq!(
        order(&r, &ORDER_KINDS),
        [
            "supervisor:update-start",
            "download:download-start",
            "download:download-done",
            "new:started",
            "supervisor:handover-wait-skipped",
            "supervisor:stop-sent",
            "old:exited",
            "supervisor:old-image-removed",
            "supervisor:update-settled",
        ]
    );
    assert!(
        r["summary"]["update_ms"].as_f64().unwrap() < 30_000.0,
        "did not wait 60 s"
    );
}

#[test]
fn hand_over_documented_without_a_signal_waits_the_whole_timeout() {
    let (t1, t2) = (token(), token());
    let (old, new) = (service(&t1), service(&t2));
    let (c, r, err) = rehearse(&args(&[
        "--strategy",
        "hand-over",
        "--supervisor",
        "documented",
        "--handover-timeout",
        "700",
        "--expect-handover",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 1, "the expectation is not met: {err}");
    let kinds: Vec<String> = events(&r).into_iter().map(|(_, k)| k).collect();
    let wait = kinds.iter().position(|k| k == "handover-wait").unwrap();
    let timeout = kinds.iter().position(|k| k == "handover-timeout").unwrap();
    let stop = kinds.iter().position(|k| k == "stop-sent").unwrap();
    assert!(wait < timeout && timeout < stop, "{kinds:?}");
    let t = |k: &str| {
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == k)
            .unwrap()["t_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(t("handover-timeout") - t("handover-wait") >= 700.0);
    assert_eq!(r["expectations"][0]["name"], "expect-handover");
    assert_eq!(r["expectations"][0]["met"], false);
    assert!(
        r["notes"]
            .to_string()
            .contains("never wrote handover-complete"),
        "{r:#}"
    );
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn the_supervisor_waits_with_backoff_while_the_app_holds_the_lock() {
    // The old version holds the lock for its first 1.5 s, then keeps running unlocked.
    let (t1, t2) = (token(), token());
    let old = format!("{LOCKCTL} run -- sleep 1.5; {}", service(&t1));
    let new = service(&t2);
    let (c, r, err) = rehearse(&args(&[
        "--update-after",
        "0",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    let held = event_detail(&r, "lock-held");
    assert!(!held.is_empty(), "{r:#}");
    assert!(
        held[0].contains("held by the app") && held[0].contains("program 'lockctl'"),
        "names the holder: {held:?}"
    );
    assert!(held[0].ends_with("retry in 500 ms"), "{held:?}");
    if held.len() > 1 {
        assert!(held[1].ends_with("retry in 1 s"), "{held:?}");
    }
    // The Supervisor's lock never overlaps the app's.
    let app = spans(&r, "app-lock");
    let sup = spans(&r, "supervisor-lock");
    assert_eq!(sup.len(), 1);
    assert!(
        app.iter().all(|(_, end)| *end <= sup[0].0 + 15.0),
        "app {app:?} supervisor {sup:?}"
    );
    assert!(r["summary"]["blocked_by_lock_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(r["summary"]["lock_attempts"], held.len() as u64 + 1);
    assert_nothing_left(&t1);
}

#[test]
fn an_update_still_blocked_at_the_deadline_is_reported_with_the_holder_and_nothing_is_deleted() {
    let (t1, t2) = (token(), token());
    let old = format!("{LOCKCTL} run -- sleep {t1}");
    let new = service(&t2);
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let (c, r, err) = rehearse(&args(&[
        "--timeout",
        "1.2s",
        "--service-dir",
        d,
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 1, "{err}");
    assert_eq!(r["ok"], false);
    let problem = r["problems"][0].as_str().unwrap();
    assert!(problem.contains("still blocked after"), "{problem}");
    assert!(problem.contains("updates.lock"), "{problem}");
    assert!(problem.contains("--force"), "says what to do: {problem}");
    let held = event_detail(&r, "lock-held");
    assert_eq!(
        held.len(),
        2,
        "attempts at 0, 0.5 and 1.5 s; gave up at 1.2 s: {held:?}"
    );
    assert!(event_detail(&r, "lock-gave-up").len() == 1);
    // The summary counts the attempts of a Supervisor that never got in (it said 0).
    assert_eq!(r["summary"]["lock_attempts"], 3, "{}", r["summary"]);
    assert!(
        !order(&r, &["new:started"]).contains(&"new:started".to_string()),
        "never started"
    );
    // The app's lock files are still there (left by the killed holder), the Supervisor's gone.
    for name in ["updates.lock", "resin-updates.lock"] {
        let md =
            std::fs::symlink_metadata(dir.path().join(name)).expect("the app's lock file stays");
        assert_ne!(std::os::unix::fs::MetadataExt::uid(&md), 65534);
    }
    assert_nothing_left(&t1);
}

#[test]
fn force_deletes_the_apps_lock_files_as_the_supervisor_does() {
    let (t1, t2) = (token(), token());
    let old = format!("{LOCKCTL} run -- sleep {t1}");
    let new = service(&t2);
    let (c, r, err) = rehearse(&args(&[
        "--force",
        "--stop-grace",
        "0.5s",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    let deleted = event_detail(&r, "override-deleted");
    assert_eq!(deleted.len(), 2, "both names: {deleted:?}");
    assert!(
        deleted[0].contains("lock override: deleted updates.lock"),
        "{deleted:?}"
    );
    assert!(
        deleted[0].contains("held by the app"),
        "names whose lock it was: {deleted:?}"
    );
    assert!(event_detail(&r, "lock-held").is_empty());
    assert_eq!(r["summary"]["lock_attempts"], 1);
    assert_eq!(r["summary"]["blocked_by_lock_ms"], 0.0);
    assert_nothing_left(&t1);
}

#[test]
fn an_unknown_strategy_falls_back_to_download_then_kill_as_on_a_device() {
    let r = strategy_run("rolling", &[]);
    assert_eq!(r["strategy"], "download-then-kill");
    assert_eq!(r["settings"]["requested_strategy"], "rolling");
    assert!(r["notes"][0]
        .as_str()
        .unwrap()
        .contains("unknown strategy 'rolling'"));
    assert_eq!(
        order(&r, &["download:download-start", "supervisor:lock-taken"]),
        ["download:download-start", "supervisor:lock-taken"]
    );
}

#[test]
fn a_version_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (t1, t2) = (token(), token());
    // As the container's PID 1, a shell without a TERM trap ignores SIGTERM.
    let old = format!("sleep {t1} & wait");
    let new = service(&t2);
    let (c, r, err) = rehearse(&args(&[
        "--stop-grace",
        "0.4s",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["summary"]["old_killed"], true);
    assert_eq!(r["summary"]["old_exit"], "signal 9 (SIGKILL)");
    let t = |k: &str| {
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == k)
            .unwrap()["t_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(t("kill-sent") - t("stop-sent") >= 400.0);
    assert!(r["notes"].to_string().contains("handle SIGTERM"), "{r:#}");
    assert_nothing_left(&t1);
}

#[test]
fn a_command_that_does_not_start_ends_with_a_clear_report() {
    let t2 = token();
    let new = service(&t2);
    let (c, r, err) = rehearse(&args(&["--old", "/nonexistent/app --serve", "--new", &new]));
    assert_eq!(c, 1, "{err}");
    let p = r["problems"][0].as_str().unwrap();
    assert!(
        p.contains("the old version ended (exit 127) before the update began"),
        "{p}"
    );
    assert!(p.contains("/nonexistent/app"), "shows its output: {p}");
    assert_nothing_left(&t2);
}

#[test]
fn a_new_version_that_crashes_is_reported_with_its_output() {
    let t1 = token();
    let old = service(&t1);
    let (c, r, err) = rehearse(&args(&[
        "--old",
        &old,
        "--new",
        "echo 'config missing' >&2; exit 3",
    ]));
    assert_eq!(c, 1, "{err}");
    let p = r["problems"][0].as_str().unwrap();
    assert!(
        p.contains("the new version ended (exit 3) after the update"),
        "{p}"
    );
    assert!(p.contains("config missing"), "{p}");
    assert_eq!(r["summary"]["new_running"], false);
    assert_nothing_left(&t1);
}

#[test]
fn a_probe_that_never_succeeds_ends_the_rehearsal_with_what_to_check() {
    let t1 = token();
    let old = service(&t1);
    let (c, r, err) = rehearse(&args(&[
        "--probe",
        "tcp:127.0.0.1:9",
        "--ready-timeout",
        "0.5s",
        "--old",
        &old,
        "--new",
        "true",
    ]));
    assert_eq!(c, 1, "{err}");
    let p = r["problems"][0].as_str().unwrap();
    assert!(p.contains("the old version never became ready: the probe tcp:127.0.0.1:9 did not succeed within 500 ms (--ready-timeout)"), "{p}");
    assert!(
        order(&r, &["supervisor:update-start"]).is_empty(),
        "no update without a ready old version"
    );
    assert_nothing_left(&t1);
}

#[test]
fn bad_command_lines_are_usage_errors_that_say_what_to_do() {
    for (a, want) in [
        (vec!["--old", " ", "--new", "true"], "--old is empty"),
        (
            vec!["--old", "true", "--new", "true", "--probe", "ping"],
            "is not a probe: use tcp:",
        ),
        (
            vec![
                "--old",
                "true",
                "--new",
                "true",
                "--expect-max-downtime",
                "0",
            ],
            "needs --probe",
        ),
        (
            vec!["--old", "true", "--new", "true", "--stop-grace", "soon"],
            "not a duration",
        ),
        (
            vec!["--old", "true", "--new", "true", "--supervisor", "legacy"],
            "legacy",
        ),
        (
            vec![
                "--old",
                "true",
                "--new",
                "true",
                "--service-dir",
                "/nonexistent/dir",
            ],
            "--service-dir /nonexistent/dir",
        ),
    ] {
        let (c, r, err) = rehearse(&a);
        assert_eq!(c, 64, "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(r, Value::Null, "no report on stdout");
    }
}

#[test]
fn the_probe_measures_the_downtime_of_a_stop_then_start_update() {
    // A file probe: each version creates `ready` when up and removes it when it stops.
    let (t1, t2) = (token(), token());
    let v = |tok: &str| {
        format!("touch \"$BALENA_SERVICE_HANDOVER_COMPLETE_PATH.ready\"; trap 'rm -f \"$BALENA_SERVICE_HANDOVER_COMPLETE_PATH.ready\"; exit 0' TERM; sleep {tok} & wait")
    };
    let (old, new) = (v(&t1), v(&t2));
    let (c, r, err) = rehearse(&args(&[
        "--strategy",
        "kill-then-download",
        "--download",
        "0.5s",
        "--probe",
        "file:handover-complete.ready",
        "--expect-max-downtime",
        "100",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 1, "the 500 ms download is downtime: {err}");
    let down = r["summary"]["downtime_ms"].as_f64().unwrap();
    assert!(down >= 500.0, "{down}");
    assert_eq!(r["summary"]["outages"], 1);
    assert_eq!(r["expectations"][0]["met"], false);
    assert_eq!(r["expectations"][0]["actual"].as_f64().unwrap(), down);
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn reboot_waits_while_the_new_version_holds_flock_on_updates_lock() {
    let (t1, t2) = (token(), token());
    let old = service(&t1);
    // The new version holds the lock for 2 s, then runs unlocked.
    let new = format!("{LOCKCTL} run -- sleep 2; {}", service(&t2));
    let (c, r, err) = rehearse(&args(&[
        "--reboot",
        "--reboot-poll",
        "0.2s",
        "--old",
        &old,
        "--new",
        &new,
    ]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    let o = order(
        &r,
        &[
            "supervisor:update-settled",
            "reboot:reboot-requested",
            "reboot:reboot-deferred",
            "reboot:reboot",
            "reboot:rebooted",
        ],
    );
    assert_eq!(
        o,
        [
            "supervisor:update-settled",
            "reboot:reboot-requested",
            "reboot:reboot-deferred",
            "reboot:reboot",
            "reboot:rebooted"
        ]
    );
    let waited = r["summary"]["reboot_blocked_ms"].as_f64().unwrap();
    assert!(waited > 0.0);
    // The reboot went ahead only after the app's flock was gone.
    let app = spans(&r, "app-lock");
    let reboot_t = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "reboot")
        .unwrap()["t_ms"]
        .as_f64()
        .unwrap();
    assert!(
        app.iter().all(|(_, end)| *end <= reboot_t + 15.0),
        "{app:?} {reboot_t}"
    );
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn without_namespaces_the_versions_see_the_service_directory_itself() {
    let (t1, t2) = (token(), token());
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let old = format!(
        "echo \"$BALENA_APP_LOCK_PATH\" > {d}/seen; {}",
        service(&t1)
    );
    let (c, r, err) = rehearse(&args(&[
        "--no-namespaces",
        "--service-dir",
        d,
        "--old",
        &old,
        "--new",
        &service(&t2),
    ]));
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["settings"]["namespaces"], false);
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), format!("{d}/updates.lock"));
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn in_a_container_the_versions_see_the_service_directory_at_tmp_balena_and_tmp_resin() {
    let (t1, t2) = (token(), token());
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let old = format!(
        "echo \"$BALENA_APP_LOCK_PATH $BALENA_SERVICE_HANDOVER_COMPLETE_PATH $UPDATE_LOCK_REHEARSAL $$\" > /tmp/balena/seen; stat -c %i /tmp/resin/seen >> /tmp/balena/seen; {}",
        service(&t1)
    );
    let (c, r, err) = rehearse(&args(&[
        "--service-dir",
        d,
        "--old",
        &old,
        "--new",
        &service(&t2),
    ]));
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["settings"]["namespaces"], true);
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    let mut lines = seen.lines();
    assert_eq!(
        lines.next().unwrap(),
        "/tmp/balena/updates.lock /tmp/balena/handover-complete old 1",
        "PID 1 in its own namespace"
    );
    let ino =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.path().join("seen")).unwrap());
    assert_eq!(
        lines.next().unwrap(),
        ino.to_string(),
        "/tmp/resin is the same directory"
    );
}

#[test]
fn sigterm_to_the_rehearsal_stops_both_versions_and_removes_its_directory() {
    require_rehearse_binary();
    let t1 = token();
    let old = service(&t1);
    let mut child = lockctl()
        .args([
            "rehearse",
            "--update-after",
            "30s",
            "--old",
            &old,
            "--new",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut dir = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("service directory ").nth(1) {
            dir = rest.split(' ').next().map(std::path::PathBuf::from);
        }
        if line.contains("the old version started") {
            break;
        }
    }
    let dir = dir.expect("the start event names the directory");
    assert!(dir.is_dir());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(code(st), 128 + 15);
    assert!(!dir.exists(), "{} removed", dir.display());
    assert_nothing_left(&t1);
}

#[test]
fn compare_runs_all_four_strategies_and_writes_the_pictures() {
    let (t1, t2) = (token(), token());
    let (old, new) = (service(&t1), service(&t2));
    let dir = service_dir();
    let svg = dir.path().join("t.svg");
    let html = dir.path().join("t.html");
    let (c, r, err) = rehearse(&args(&[
        "--compare",
        "--old-image-size",
        "300MB",
        "--image-size",
        "200MB",
        "--old",
        &old,
        "--new",
        &new,
        "--svg",
        svg.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]));
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["compare"], true);
    let runs = r["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|x| x["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "download-then-kill",
            "kill-then-download",
            "delete-then-download",
            "hand-over"
        ]
    );
    let disk: Vec<u64> = runs
        .iter()
        .map(|x| x["summary"]["peak_disk_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(disk, [500_000_000, 500_000_000, 300_000_000, 500_000_000]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..40.min(svg.len())]
    );
    for name in names {
        assert!(svg.contains(name));
    }
    let html = std::fs::read_to_string(html).unwrap();
    assert!(html.contains("<svg") && html.contains("<table"));
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn a_tcp_probe_counts_the_update_outage_and_not_the_teardown() {
    // Each version listens through lockctl (a plain listener: nothing is handed over under
    // download-then-kill), so the port is closed between the old and the new version; the
    // new one takes 0.3 s to start, longer than many probe intervals.
    let (t1, t2) = (token(), token());
    let port = 18400 + (std::process::id() % 500) as u16;
    let v = |tok: &str| {
        format!("exec {LOCKCTL} handover run --term-grace 0 --listen tcp=127.0.0.1:{port} -- sleep {tok}")
    };
    let (old, new) = (v(&t1), format!("sleep 0.3; {}", v(&t2)));
    let probe = format!("tcp:{port}");
    let (c, r, err) = rehearse(&args(&["--probe", &probe, "--old", &old, "--new", &new]));
    assert_eq!(c, 0, "{err}\n{r:#}");
    assert_eq!(
        r["summary"]["outages"], 1,
        "one outage, during the update: {r:#}"
    );
    assert!(r["summary"]["downtime_ms"].as_f64().unwrap() >= 300.0);
    let down = spans(&r, "down");
    let at = |k: &str| {
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == k)
            .unwrap()["t_ms"]
            .as_f64()
            .unwrap()
    };
    // It begins when the old version stops and ends once the new one listens, long before
    // the teardown kills the new version (which is not downtime).
    assert!(
        down[0].0 >= at("stop-sent") && down[0].1 < at("teardown"),
        "{down:?}"
    );
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}

#[test]
fn a_service_dir_the_supervisor_cannot_reach_is_refused_before_anything_runs() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let d = parent.path().join("svc");
    std::fs::create_dir(&d).unwrap();
    let (c, r, err) = rehearse(&[
        "--service-dir",
        d.to_str().unwrap(),
        "--old",
        "true",
        "--new",
        "true",
    ]);
    assert_eq!(c, 64, "{err}");
    assert!(
        err.contains("uid 65534 (the Supervisor's lockfile) cannot reach it")
            && err.contains("mode 700"),
        "{err}"
    );
    assert_eq!(r, Value::Null);
}

#[test]
fn the_download_time_follows_from_the_image_size_and_rate() {
    let (t1, t2) = (token(), token());
    let (old, new) = (service(&t1), service(&t2));
    let (c, r, err) = rehearse(&[
        "--image-size",
        "50MB",
        "--download-rate",
        "250MB",
        "--update-after",
        "0.1s",
        "--observe",
        "0.1s",
        "--old",
        &old,
        "--new",
        &new,
    ]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["summary"]["download_ms"], 200.0, "50 MB at 250 MB/s");
    assert_eq!(r["settings"]["new_image_bytes"], 50_000_000u64);
    let (c, _, err) = rehearse(&["--download-rate", "0", "--old", &old, "--new", &new]);
    assert_eq!(c, 64);
    assert!(
        err.contains("--download-rate 0 would never finish"),
        "{err}"
    );
    assert_nothing_left(&t1);
    assert_nothing_left(&t2);
}
