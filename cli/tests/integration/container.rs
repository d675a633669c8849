//! `lockctl` inside emulated service containers: a mount + PID namespace with the service
//! directory bind-mounted at /tmp/balena and /tmp/resin (one directory, two names, as on a
//! device), using the default paths; and `lockctl` as PID 1 (a container entrypoint).

use std::path::Path;

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Prepares the container's mounts; `$L` is lockctl. The rest of the script follows.
const SETUP: &str = r#"set -e
mkdir -p /tmp/balena /tmp/resin
mount --bind "$1" /tmp/balena
mount --bind "$1" /tmp/resin
L="$2"
set +e
"#;

/// A "service container" on `svc` running `script` (as PID 1 of its namespace). Dropping
/// it (or killing `unshare`) kills the whole namespace (`--kill-child`).
fn container(svc: &Path, script: &str) -> Proc {
    Proc::spawn(
        command("unshare")
            .args(["-m", "-p", "-f", "--mount-proc", "--kill-child", "sh", "-c"])
            .arg(format!("{SETUP}{script}"))
            .arg("container")
            .arg(svc)
            .arg(LOCKCTL),
    )
}

/// SIGKILL the namespace's init (killing everything in it) and wait until all of it is gone:
/// `unshare` returns only once its child, the init, is reaped, and an init exits only after
/// every other process of its namespace.
fn kill_container(c: &mut Proc) {
    let inits = children_of(c.pid());
    assert_eq!(inits.len(), 1, "one init in the container: {inits:?}");
    kill(Pid::from_raw(inits[0]), Signal::SIGKILL).unwrap();
    let st = c.wait();
    assert!(st.code() != Some(0), "container ended normally: {st:?}");
}

#[test]
fn default_paths_land_in_the_service_directory_under_both_names() {
    let svc = service_dir();
    let (main, legacy) = (at(&svc, "updates.lock"), at(&svc, "resin-updates.lock"));
    let mut c = container(
        svc.path(),
        r#""$L" run -- sh -c 'echo ready; read x; exit 4'; echo "rc=$?"; ls -A /tmp/balena | grep -vx update-waiting; echo end"#,
    );
    c.expect_line("ready");
    assert_eq!(
        entries(svc.path()),
        ["resin-updates.lock", "updates.lock"],
        "one lock per name in the shared directory"
    );
    assert_held(&main);
    assert_eq!(supervisor_probe(&legacy), 73);
    let st = status_json(&[&main, &legacy], &[]);
    for l in st["locks"].as_array().unwrap() {
        assert_eq!(l["state"], "held-by-app", "{l}");
        assert_eq!(l["holder"]["same_pid_namespace"], false, "{l}");
    }
    c.send("go");
    assert_eq!(
        c.expect_line("end"),
        ["rc=4"],
        "nothing left in the directory"
    );
    assert_eq!(code(c.wait()), 0);
    assert!(entries(svc.path()).is_empty());
    assert_free(&main);
}

#[test]
fn two_containers_exclude_each_other_and_reclaim_after_a_kill() {
    let svc = service_dir();
    let main = at(&svc, "updates.lock");
    let mut a = container(svc.path(), r#""$L" run -- sh -c 'echo ready; read x'"#);
    a.expect_line("ready");

    let mut b = container(
        svc.path(),
        r#""$L" status; echo "status-rc=$?"
"$L" run --no-wait -- true; echo "nowait-rc=$?"
exec 3<&0
"$L" run -- sh -c 'echo got-lock; cat /tmp/balena/updates.lock; read x' <&3 &
echo "started"
wait $!; echo "run-rc=$?""#,
    );
    let status = b.expect_line("status-rc=73").join("\n");
    assert!(
        status.contains("/tmp/balena/updates.lock: HELD by an app"),
        "{status}"
    );
    assert!(
        status.contains("/tmp/resin/resin-updates.lock: HELD by an app"),
        "{status}"
    );
    assert!(
        status.contains("in another container (pid namespace)"),
        "{status}"
    );
    b.expect_line("nowait-rc=73");

    // B's second `lockctl run` (started in the background, so that its process exists
    // once "started" is printed) is now blocked on A's lock.
    b.expect_line("started");
    let init = children_of(b.pid());
    assert_eq!(init.len(), 1, "{init:?}");
    let waiting = children_of(init[0]);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    wait_until_waiting(waiting[0]);
    assert_held(&main);

    kill_container(&mut a);
    b.expect_line("got-lock");
    assert_eq!(b.line(), "update-lock holder v1", "B's own record");
    let record: Vec<String> = (0..8).map(|_| b.line()).collect();
    assert!(
        record.contains(&"program=lockctl".to_string()),
        "{record:?}"
    );
    let l = &status_json(&[&main], &[])["locks"][0];
    assert_eq!(l["state"], "held-by-app", "{l}");
    assert_held(&main);
    b.send("go");
    b.expect_line("run-rc=0");
    assert_eq!(code(b.wait()), 0);
    let err = b.stderr();
    assert!(
        err.contains("took over /tmp/balena/updates.lock"),
        "reclaimed the main lock: {err}"
    );
    assert!(
        err.contains("took over /tmp/resin/resin-updates.lock"),
        "reclaimed the legacy lock: {err}"
    );
    assert!(entries(svc.path()).is_empty(), "{:?}", entries(svc.path()));
}

#[test]
fn killed_container_leaves_a_stale_lock_seen_from_the_other() {
    let svc = service_dir();
    let main = at(&svc, "updates.lock");
    let mut a = container(svc.path(), r#""$L" run -- sh -c 'echo ready; read x'"#);
    a.expect_line("ready");
    kill_container(&mut a);
    assert_eq!(supervisor_probe(&main), 73, "still holds off app updates");
    assert_eq!(reboot_probe(&main), 0, "no longer holds off the reboot");

    let mut b = container(
        svc.path(),
        r#""$L" status --json; "$L" release; echo "release-rc=$?"; ls -A /tmp/balena; echo end"#,
    );
    let json = b.expect_line("release-rc=0").join("\n");
    let st: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(st["locks"][0]["path"], "/tmp/balena/updates.lock");
    assert_eq!(st["locks"][0]["state"], "stale", "{st}");
    assert_eq!(st["locks"][0]["blocks_host_reboot"], false);
    assert_eq!(st["locks"][1]["path"], "/tmp/resin/resin-updates.lock");
    assert_eq!(st["locks"][1]["state"], "stale");
    assert_eq!(st["blocks_app_updates"], true);
    assert_eq!(b.expect_line("end"), Vec::<String>::new(), "cleared");
    assert_eq!(code(b.wait()), 0);
}

/// Spawns orphans (re-parented to PID 1 when their parent exits), waits until they have
/// all exited (they hold the pipe to `cat`), then counts zombies until PID 1 has reaped
/// them (bounded: a PID 1 that does not reap leaves them for good).
const PID1_SCRIPT: &str = r#"
for s in INT HUP QUIT USR1 USR2; do trap "echo got $s; sig=1" $s; done
trap 'echo got TERM; exit 7' TERM
( for i in 1 2 3 4 5; do ( sh -c 'exit 0' & ) ; done ) | cat
zombies() {
  n=0
  for f in /proc/[0-9]*/stat; do
    read -r l < "$f" 2>/dev/null || continue
    s=${l##*) }
    [ "${s%% *}" = Z ] && n=$((n+1))
  done
  echo $n
}
i=0
while [ "$(zombies)" != 0 ] && [ $i -lt 3000 ]; do i=$((i+1)); done
echo "zombies=$(zombies)"
echo "pid1=$(cat /proc/1/comm)"
echo ready
while :; do
  if read x; then continue; fi
  if [ -n "$sig" ]; then sig=; continue; fi
  exit 1
done
"#;

#[test]
fn as_pid_1_it_reaps_orphans_and_forwards_signals() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut c = Proc::spawn(
        command("unshare")
            .args(["-p", "-f", "--mount-proc", "--kill-child"])
            .arg(LOCKCTL)
            .args(["run", "--path"])
            .arg(&path)
            .args(["--", "sh", "-c", PID1_SCRIPT]),
    );
    assert_eq!(c.line(), "zombies=0", "orphans left as zombies");
    assert_eq!(c.line(), "pid1=lockctl");
    c.expect_line("ready");
    assert_held(&path);
    let init = children_of(c.pid());
    assert_eq!(init.len(), 1);
    let lockctl = Pid::from_raw(init[0]);
    for (sig, name) in [
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGTERM, "TERM"),
    ] {
        kill(lockctl, sig).unwrap();
        assert_eq!(
            c.line(),
            format!("got {name}"),
            "{sig} did not reach the command"
        );
    }
    assert_eq!(code(c.wait()), 7, "the command's status: {}", c.stderr());
    assert_free(&path);
}
