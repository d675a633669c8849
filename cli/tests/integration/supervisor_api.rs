//! `lockctl device|update|reboot` and `lockctl status` against the Supervisor API that
//! `lockctl rehearse` serves to its versions (a wrong key, a force update while the app holds
//! its lock, a reboot refused while locked), and against no API at all.

use crate::common::*;
use serde_json::Value;

fn rehearse(args: &[&str]) -> (i32, Value, String) {
    require_rehearse_binary();
    let (st, out, err) = output(
        lockctl()
            .arg("rehearse")
            .args(["--json", "-q", "--observe", "0.2s", "--stop-grace", "5s"])
            .args(args),
    );
    (
        code(st),
        serde_json::from_str(&out).unwrap_or(Value::Null),
        err,
    )
}

const SERVICE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

fn read(dir: &tempfile::TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kinds(r: &Value) -> Vec<String> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_version_sees_the_update_pending_then_downloaded() {
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    // Before the update, then (polling, as an app would) once the download is done.
    let old = format!(
        "{LOCKCTL} device --json > /tmp/balena/before; \
         until {LOCKCTL} device | grep -q downloaded; do sleep 0.05; done; \
         {LOCKCTL} device --json > /tmp/balena/after; {LOCKCTL} status > /tmp/balena/status; {SERVICE}"
    );
    let (c, r, err) = rehearse(&[
        "--service-dir",
        d,
        "--download",
        "0.5s",
        "--update-after",
        "0.1s",
        "--old",
        &old,
        "--new",
        SERVICE,
    ]);
    assert_eq!(c, 0, "{err}\n{r:#}");
    let before: Value = serde_json::from_str(&read(&dir, "before")).unwrap();
    assert_eq!(before["update_pending"], false);
    let after: Value = serde_json::from_str(&read(&dir, "after")).unwrap();
    assert_eq!(
        (
            after["update_pending"].clone(),
            after["update_downloaded"].clone()
        ),
        (Value::Bool(true), Value::Bool(true))
    );
    let status = read(&dir, "status");
    assert!(
        status.contains("Supervisor API http://127.0.0.1:")
            && status.contains("downloaded and waiting"),
        "{status}"
    );
    assert!(r["settings"]["api_address"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
}

#[test]
fn a_wrong_key_is_refused_with_what_to_do_and_the_key_never_shows() {
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let old = format!(
        "echo \"$BALENA_SUPERVISOR_API_KEY\" > /tmp/balena/key; \
         BALENA_SUPERVISOR_API_KEY=wrong-key-123 {LOCKCTL} device > /tmp/balena/out 2> /tmp/balena/err; echo $? > /tmp/balena/rc; {SERVICE}"
    );
    let (c, r, err) = rehearse(&["--service-dir", d, "--old", &old, "--new", SERVICE]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(read(&dir, "rc").trim(), "69");
    let msg = read(&dir, "err");
    assert!(
        msg.starts_with("lockctl: error[api]: Supervisor API GET /v1/device: unauthorized"),
        "{msg}"
    );
    assert!(
        msg.contains("BALENA_SUPERVISOR_API_KEY as the Supervisor sets it"),
        "{msg}"
    );
    let key = read(&dir, "key");
    assert_eq!(
        key.trim().len(),
        32,
        "the rehearsal's key: 16 random bytes in hex"
    );
    assert!(
        !msg.contains(key.trim()) && !msg.contains("wrong-key-123"),
        "{msg}"
    );
    assert!(read(&dir, "out").is_empty());
    assert!(kinds(&r).contains(&"api-unauthorized".to_string()));
}

#[test]
fn a_force_update_from_the_app_overrides_its_own_lock() {
    // The app holds its lock for good and asks for a forced update: the Supervisor deletes
    // the app's lock files and updates.
    let old = format!("{LOCKCTL} run -- sh -c '{LOCKCTL} update --force; exec sleep 1000'");
    let (c, r, err) = rehearse(&[
        "--update-after",
        "0.3s",
        "--timeout",
        "20s",
        "--old",
        &old,
        "--new",
        SERVICE,
    ]);
    assert_eq!(c, 0, "{err}\n{r:#}");
    let k = kinds(&r);
    let api = k
        .iter()
        .position(|x| x == "api-update")
        .expect("api-update");
    let deleted = k
        .iter()
        .position(|x| x == "override-deleted")
        .expect("override-deleted");
    let taken = k.iter().position(|x| x == "lock-taken").unwrap();
    assert!(api < deleted && deleted < taken, "{k:?}");
    assert_eq!(r["summary"]["new_running"], true);
}

#[test]
fn a_reboot_is_refused_while_the_app_holds_its_lock_unless_forced() {
    let dir = service_dir();
    let d = dir.path().to_str().unwrap();
    let old = format!(
        "{LOCKCTL} run -- sh -c '{LOCKCTL} reboot 2> /tmp/balena/err; echo $? > /tmp/balena/rc; \
         {LOCKCTL} reboot --force; echo $? > /tmp/balena/forced'; {SERVICE}"
    );
    let (c, r, err) = rehearse(&["--service-dir", d, "--old", &old, "--new", SERVICE]);
    assert_eq!(c, 0, "{err}\n{r:#}");
    assert_eq!(
        read(&dir, "rc").trim(),
        "73",
        "held, as for the lock itself"
    );
    let msg = read(&dir, "err");
    assert!(
        msg.contains("error[held]") && msg.contains("POST /v1/reboot") && msg.contains("HTTP 423"),
        "{msg}"
    );
    assert_eq!(read(&dir, "forced").trim(), "0");
    let k = kinds(&r);
    assert!(
        k.contains(&"api-reboot-locked".to_string()) && k.contains(&"api-reboot".to_string()),
        "{k:?}"
    );
}

#[test]
fn without_the_api_lockctl_says_which_label_to_add() {
    let (st, out, err) = output(
        lockctl()
            .args(["device"])
            .env_remove("BALENA_SUPERVISOR_ADDRESS")
            .env_remove("RESIN_SUPERVISOR_ADDRESS"),
    );
    assert_eq!(code(st), 69);
    assert!(out.is_empty());
    assert!(
        err.contains("error[api]")
            && err.contains("not-configured")
            && err.contains("io.balena.features.supervisor-api"),
        "{err}"
    );
    // Nobody listening: unreachable, quickly.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    drop(silent);
    let (st, _, err) = output(
        lockctl()
            .args(["update", "--force"])
            .env("BALENA_SUPERVISOR_ADDRESS", &addr)
            .env("BALENA_SUPERVISOR_API_KEY", "k3y-never-shown"),
    );
    assert_eq!(code(st), 69);
    assert!(
        err.contains("unreachable") && !err.contains("k3y-never-shown"),
        "{err}"
    );
    // A server that never answers: the call's timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let (st, _, err) = output(
        lockctl()
            .args(["reboot", "--timeout", "0.3"])
            .env("BALENA_SUPERVISOR_ADDRESS", &addr)
            .env("BALENA_SUPERVISOR_API_KEY", "k"),
    );
    assert_eq!(code(st), 69);
    assert!(
        err.contains("timeout: no answer from") && err.contains("within 0.3 s"),
        "{err}"
    );
}
