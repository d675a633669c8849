//! `lockctl` as root, as an ordinary uid, as uid 65534, and in a read-only directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use crate::common::*;

/// `lockctl` run as `uid` (same gid, no supplementary groups).
fn lockctl_as(uid: u32) -> Command {
    let mut c = command("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(LOCKCTL);
    c
}

#[test]
fn as_root_the_lock_is_owned_by_root() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut p = run_under_lock(&[&path], "echo ready; read x");
    p.expect_line("ready");
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);
    assert_held(&path);
    p.send("go");
    assert_eq!(code(p.wait()), 0);
    assert_free(&path);
}

#[test]
fn as_uid_1000_in_a_1777_directory() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    let mut p = Proc::spawn(lockctl_as(1000).args(["run", "--path"]).arg(&path).args([
        "--",
        "sh",
        "-c",
        "id -u; echo ready; read x",
    ]));
    assert_eq!(p.line(), "1000", "the command runs as uid 1000");
    p.expect_line("ready");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), 1000, "the lock file is the app's own");
    assert_held(&path);
    let l = &status_json(&[&path], &[])["locks"][0];
    assert_eq!(l["state"], "held-by-app", "{l}");
    assert_eq!(l["owner_uid"], 1000);
    assert_eq!(l["holder"]["uid"], 1000);
    p.send("go");
    assert_eq!(code(p.wait()), 0);
    assert_free(&path);

    // acquire / release as uid 1000 too.
    let _guard = HolderGuard(path.clone());
    let (s, _, err) = output(lockctl_as(1000).args(["acquire", "--path"]).arg(&path));
    assert_eq!(code(s), 0, "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 1000);
    assert_held(&path);
    let (s, _, err) = output(lockctl_as(1000).args(["release", "--path"]).arg(&path));
    assert_eq!(code(s), 0, "{err}");
    assert_free(&path);
}

#[test]
fn as_uid_65534_is_refused_and_nothing_is_created() {
    let dir = service_dir();
    let path = at(&dir, "updates.lock");
    for sub in ["run", "acquire"] {
        let mut c = lockctl_as(65534);
        c.arg(sub).arg("--path").arg(&path);
        if sub == "run" {
            c.args(["--", "echo", "ran"]);
        }
        let (s, out, err) = output(&mut c);
        assert_eq!(code(s), 77, "{sub}: {err}");
        assert_eq!(out, "", "{sub}: the command must not run");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.contains("65534"), "{err}");
        assert!(err.contains("Supervisor"), "{err}");
        assert!(err.contains("as its own"), "{err}");
        assert!(
            entries(dir.path()).is_empty(),
            "{sub} created {:?}",
            entries(dir.path())
        );
    }
}

#[test]
fn read_only_directory_is_a_permission_error_naming_it() {
    let dir = service_dir();
    let ro = at(&dir, "read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = ro.join("updates.lock");
    for sub in ["run", "acquire"] {
        let mut c = lockctl_as(1000);
        c.arg(sub).arg("--path").arg(&path);
        if sub == "run" {
            c.args(["--", "echo", "ran"]);
        }
        let (s, out, err) = output(&mut c);
        assert_eq!(code(s), 77, "{sub}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(
            err.contains(&format!("the directory {} ", ro.display()))
                || err.contains(&format!("{}:", ro.display())),
            "names the directory: {err}"
        );
        assert!(entries(&ro).is_empty());
    }
}
