//! Bad input: every case gives its error code, a message that says what is wrong, and
//! deletes or creates nothing.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use crate::common::*;
use update_lock::{ErrorCode, ForeignKind, HandoverOptions, Holder, LockOptions, UpdateLock};

fn try_once(path: &Path) -> update_lock::Error {
    UpdateLock::try_acquire(&opts(&[path])).expect_err("must fail")
}

#[test]
fn missing_directory_that_cannot_be_created() {
    let dir = tmpdir();
    let path = dir.path().join("missing").join("sub").join("updates.lock");
    let err = try_once(&path);
    assert_err(&err, ErrorCode::InvalidPath, &["does not exist", "missing"]);
    assert_eq!(listing(dir.path()), Vec::<String>::new());

    // With directory creation turned off, a missing directory is an error too.
    let path = dir.path().join("missing").join("updates.lock");
    let err = UpdateLock::try_acquire(&opts(&[path]).create_dir(false)).unwrap_err();
    assert_err(&err, ErrorCode::InvalidPath, &["does not exist"]);
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
fn missing_directory_is_created_1777_whatever_the_umask() {
    let dir = tmpdir();
    let sub = dir.path().join("balena");
    let path = sub.join("updates.lock");
    let lock = UpdateLock::try_acquire(&opts(&[&path])).unwrap();
    assert_eq!(
        fs::metadata(&sub).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    drop(lock);
    assert!(!exists(&path));

    // An existing directory is never chmod-ed.
    let own = dir.path().join("own");
    fs::create_dir(&own).unwrap();
    fs::set_permissions(&own, fs::Permissions::from_mode(0o750)).unwrap();
    drop(UpdateLock::try_acquire(&opts(&[own.join("updates.lock")])).unwrap());
    assert_eq!(
        fs::metadata(&own).unwrap().permissions().mode() & 0o7777,
        0o750
    );
}

#[test]
fn read_only_directory_for_an_ordinary_user() {
    require_root();
    let dir = tmpdir();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::write(ro.join("keep"), "x").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let path = ro.join("updates.lock");
    let mut kid = Kid::spawn_as(APP_UID, "try", &[path.display().to_string()]);
    let (code, msg) = parse_err(&kid.line());
    assert_eq!(code, "permission", "{msg}");
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains(&ro.display().to_string()), "{msg}");
    kid.finish();
    assert_eq!(listing(&ro), ["keep"]);
}

#[test]
fn read_only_file_system_for_root() {
    require_root();
    let dir = tmpdir();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let path = mnt.join("updates.lock");
    // The child runs in its own mount namespace with a read-only tmpfs on `mnt`.
    let mut pre = Command::new("unshare");
    pre.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o ro none \"$0\" && exec \"$@\"")
        .arg(&mnt);
    let mut kid = Kid::start(
        child_command("try", &[path.display().to_string()], Some(pre)),
        "try",
        None,
    );
    let (code, msg) = parse_err(&kid.line());
    assert_eq!(code, "permission", "{msg}");
    assert!(msg.contains("Read-only file system"), "{msg}");
    kid.finish();
    assert_eq!(listing(&mnt), Vec::<String>::new());
}

/// `path` is occupied by something that is not a lock file: Held, foreign of `kind`, and
/// it is still there, unchanged, afterwards.
fn assert_foreign_kept(path: &Path, kind: ForeignKind, fragment: &str) -> Holder {
    let id = inode(path);
    let err = try_once(path);
    assert_err(
        &err,
        ErrorCode::Held,
        &[fragment, "not created by update-lock"],
    );
    let holder = err.holder().unwrap().clone();
    match &holder {
        Holder::Foreign { kind: k, .. } => assert_eq!(k, &kind),
        other => panic!("expected a foreign holder, got {other:?}"),
    }
    assert_eq!(inode(path), id, "{} must not be touched", path.display());
    holder
}

#[test]
fn lock_path_that_is_a_directory() {
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), "x").unwrap();
    assert_foreign_kept(&path, ForeignKind::Directory, "a directory");
    assert!(fs::metadata(&path).unwrap().is_dir());
    assert_eq!(listing(&path), ["inside"]);
    let err = try_once(&path);
    assert!(err.to_string().contains("rmdir"), "{err}");
}

#[test]
fn lock_path_that_is_a_symlink_or_a_dangling_symlink() {
    let dir = tmpdir();
    let target = dir.path().join("target");
    fs::write(&target, "precious").unwrap();
    let link = dir.path().join("updates.lock");
    symlink(&target, &link).unwrap();
    let holder = assert_foreign_kept(&link, ForeignKind::Symlink, "symbolic link");
    assert!(matches!(holder, Holder::Foreign { symlink_target: Some(t), .. } if t == target));
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let nowhere = dir.path().join("nowhere");
    let dangling = dir.path().join("dangling.lock");
    symlink(&nowhere, &dangling).unwrap();
    assert_foreign_kept(&dangling, ForeignKind::Symlink, "symbolic link");
    assert!(!exists(&nowhere), "never create a file through a symlink");
    assert!(fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn lock_path_that_is_a_fifo_does_not_block() {
    let dir = tmpdir();
    let path = dir.path().join("updates.lock");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // Opening a fifo for reading blocks until a writer comes: run the attempt on a thread
    // so that a regression fails here instead of hanging the run.
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(assert_foreign_kept(&p, ForeignKind::Fifo, "fifo"));
    });
    rx.recv_timeout(REPLY_TIMEOUT)
        .expect("classifying a fifo must not block");
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
}

#[test]
fn invalid_paths() {
    let dir = tmpdir();
    let base = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (base.join("a".repeat(300)), "300 bytes"),
        (
            PathBuf::from(format!("{}/{}", base.display(), "d/".repeat(2100))).join("x.lock"),
            "over the limit",
        ),
        // Each name short enough, but one directory component is over NAME_MAX: the kernel
        // says ENAMETOOLONG.
        (base.join("b".repeat(300)).join("updates.lock"), "too long"),
        (
            PathBuf::from(OsString::from_vec(
                format!("{}/up\0dates.lock", base.display()).into_bytes(),
            )),
            "NUL",
        ),
        (
            PathBuf::from(OsString::from_vec(
                [base.as_os_str().as_encoded_bytes(), b"/\xffupdates.lock"].concat(),
            )),
            "UTF-8",
        ),
        (PathBuf::new(), "empty"),
        (base.join("dir/"), "does not name a file"),
        (base.join(".."), "does not name a file"),
    ];
    for (path, fragment) in cases {
        let err = UpdateLock::try_acquire(&LockOptions::new().paths([&path])).unwrap_err();
        assert_err(&err, ErrorCode::InvalidPath, &[fragment]);
    }
    assert_eq!(listing(base), Vec::<String>::new(), "nothing created");
}

#[test]
fn lock_directory_that_is_a_file() {
    let dir = tmpdir();
    let file = dir.path().join("notadir");
    fs::write(&file, "x").unwrap();
    let err = try_once(&file.join("updates.lock"));
    assert_err(&err, ErrorCode::InvalidPath, &["not a directory"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn symlinked_lock_directory_in_a_world_writable_directory_is_refused() {
    let dir = tmpdir(); // 1777: anyone could swap the link
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let err = try_once(&link.join("updates.lock"));
    assert_err(
        &err,
        ErrorCode::InvalidPath,
        &["symbolic link", "world-writable"],
    );
    assert_eq!(listing(&real), Vec::<String>::new());
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // In a directory only its owner can write to, a symlinked directory is fine.
    let safe = dir.path().join("safe");
    fs::create_dir(&safe).unwrap();
    fs::set_permissions(&safe, fs::Permissions::from_mode(0o755)).unwrap();
    let link = safe.join("link");
    symlink(&real, &link).unwrap();
    let lock = UpdateLock::try_acquire(&opts(&[link.join("updates.lock")])).unwrap();
    assert_eq!(listing(&real), ["updates.lock"]);
    drop(lock);
    assert_eq!(listing(&real), Vec::<String>::new());
}

/// Hardening H: a symbolic link in an *intermediate* component, inside a world-writable
/// directory, is refused too (it used to be followed); one in a directory only its owner
/// may write is followed, at any depth.
#[test]
fn symlink_in_an_intermediate_component_in_a_world_writable_directory_is_refused() {
    let dir = tmpdir(); // 1777
    let real = dir.path().join("real");
    fs::create_dir_all(real.join("sub")).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    for path in [
        link.join("sub").join("updates.lock"),
        link.join("sub").join("..").join("sub").join("updates.lock"),
    ] {
        let err = try_once(&path);
        assert_err(
            &err,
            ErrorCode::InvalidPath,
            &[
                "link is a symbolic link inside the world-writable",
                "never follows",
            ],
        );
        assert_eq!(listing(&real.join("sub")), Vec::<String>::new());
        let st = update_lock::status(&opts(&[&path]), &HandoverOptions::new());
        assert_eq!(
            st.locks[0].state,
            update_lock::LockState::Unknown,
            "{:?}",
            st.locks[0]
        );
    }

    // A link in a 0755 directory, pointing back into the 1777 one: followed; but a link
    // met inside the target's world-writable directory is refused again.
    let safe = dir.path().join("safe");
    fs::create_dir(&safe).unwrap();
    fs::set_permissions(&safe, fs::Permissions::from_mode(0o755)).unwrap();
    symlink(dir.path(), safe.join("up")).unwrap();
    let ok = safe
        .join("up")
        .join("real")
        .join("sub")
        .join("updates.lock");
    let lock = UpdateLock::try_acquire(&opts(&[&ok])).unwrap();
    assert_eq!(listing(&real.join("sub")), ["updates.lock"]);
    drop(lock);
    let bad = safe
        .join("up")
        .join("link")
        .join("sub")
        .join("updates.lock");
    assert_err(
        &try_once(&bad),
        ErrorCode::InvalidPath,
        &["symbolic link inside the world-writable"],
    );
    assert_eq!(listing(&real.join("sub")), Vec::<String>::new());
}

#[test]
fn out_of_file_descriptors() {
    require_root();
    let dir = tmpdir();
    let paths = two_paths(dir.path());
    let mut kid = Kid::spawn("nofile", &path_args(&paths));
    let mut failures = 0;
    let mut successes = 0;
    loop {
        let line = kid.line();
        if line == "done" {
            break;
        }
        assert!(
            !line.starts_with("leftover"),
            "a failed attempt left a file: {line}"
        );
        let rest = line.strip_prefix("budget ").unwrap();
        let (budget, result) = rest.split_once(' ').unwrap();
        if result == "ok" {
            successes += 1;
            continue;
        }
        failures += 1;
        let (code, msg) = parse_err(result);
        assert_eq!(code, "io", "budget {budget}: {msg}");
        assert!(
            msg.contains("out of file descriptors"),
            "budget {budget}: {msg}"
        );
        assert!(msg.contains("ulimit -n"), "budget {budget}: {msg}");
    }
    kid.finish();
    assert!(failures >= 1, "no descriptor budget made the attempt fail");
    assert!(
        successes >= 1,
        "no descriptor budget was enough: the test is not measuring"
    );
    for p in &paths {
        assert_eq!(listing(p.parent().unwrap()), Vec::<String>::new());
    }
}

#[test]
fn directory_owned_by_someone_else_that_we_may_not_write() {
    require_root();
    // uid 1000 in a root-owned 0755 directory: a clear permission error, nothing touched.
    let dir = tmpdir();
    let d = dir.path().join("root-only");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::metadata(&d).unwrap().uid(), 0);
    let mut kid = Kid::spawn_as(
        APP_UID,
        "try",
        &[d.join("updates.lock").display().to_string()],
    );
    let (code, msg) = parse_err(&kid.line());
    assert_eq!(code, "permission", "{msg}");
    assert!(msg.contains("uid 1000") && msg.contains("1777"), "{msg}");
    kid.finish();
    assert_eq!(listing(&d), Vec::<String>::new());
}
