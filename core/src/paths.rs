//! Where the locks and hand-over signals live: the Supervisor's environment variables and
//! defaults, and validation of caller-supplied paths.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Default lock path when neither `BALENA_APP_LOCK_PATH` nor `RESIN_APP_LOCK_PATH` is set.
pub const DEFAULT_LOCK_PATH: &str = "/tmp/balena/updates.lock";
/// The legacy lock path still honoured by the Supervisor (4.0 <= Supervisor < 7.22).
pub const LEGACY_LOCK_PATH: &str = "/tmp/resin/resin-updates.lock";
/// Default hand-over signal path.
pub const DEFAULT_HANDOVER_PATH: &str = "/tmp/balena/handover-complete";
/// Legacy hand-over signal beside the legacy lock.
pub const LEGACY_HANDOVER_PATH: &str = "/tmp/resin/resin-kill-me";
/// Hand-over signal watched by very old Supervisors; written only when `/data` exists.
pub const DATA_HANDOVER_PATH: &str = "/data/resin-kill-me";

/// The lock path the Supervisor gives this container: `$BALENA_APP_LOCK_PATH`, else
/// `$RESIN_APP_LOCK_PATH`, else `/tmp/balena/updates.lock`.
///
/// ```
/// let p = update_lock::primary_lock_path();
/// assert!(p.is_absolute() || std::env::var_os("BALENA_APP_LOCK_PATH").is_some());
/// ```
pub fn primary_lock_path() -> PathBuf {
    env_path(&["BALENA_APP_LOCK_PATH", "RESIN_APP_LOCK_PATH"])
        .unwrap_or_else(|| DEFAULT_LOCK_PATH.into())
}

/// The default lock set: [`primary_lock_path`] plus, when `legacy` is true and it differs,
/// [`LEGACY_LOCK_PATH`].
pub fn default_lock_paths(legacy: bool) -> Vec<PathBuf> {
    let mut v = vec![primary_lock_path()];
    if legacy && v[0] != Path::new(LEGACY_LOCK_PATH) {
        v.push(LEGACY_LOCK_PATH.into());
    }
    v
}

/// The hand-over signal the Supervisor watches: `$BALENA_SERVICE_HANDOVER_COMPLETE_PATH`,
/// else `$RESIN_SERVICE_KILL_ME_PATH`, else `/tmp/balena/handover-complete`.
pub fn primary_handover_path() -> PathBuf {
    env_path(&[
        "BALENA_SERVICE_HANDOVER_COMPLETE_PATH",
        "RESIN_SERVICE_KILL_ME_PATH",
    ])
    .unwrap_or_else(|| DEFAULT_HANDOVER_PATH.into())
}

/// The default hand-over signal set: the primary path, plus with `legacy` the
/// `resin-kill-me` beside the legacy lock and `/data/resin-kill-me` when `/data` exists.
pub fn default_handover_paths(legacy: bool) -> Vec<PathBuf> {
    let mut v = vec![primary_handover_path()];
    if legacy {
        for p in [LEGACY_HANDOVER_PATH, DATA_HANDOVER_PATH] {
            let p = PathBuf::from(p);
            let wanted = p != Path::new(DATA_HANDOVER_PATH) || Path::new("/data").is_dir();
            if wanted && !v.contains(&p) {
                v.push(p);
            }
        }
    }
    v
}

/// A caller's path list: `None` (use the defaults) when empty.
pub(crate) fn path_list<I, P>(paths: I) -> Option<Vec<PathBuf>>
where
    I: IntoIterator<Item = P>,
    P: Into<PathBuf>,
{
    let v: Vec<PathBuf> = paths.into_iter().map(Into::into).collect();
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

fn env_path(vars: &[&str]) -> Option<PathBuf> {
    vars.iter()
        .filter_map(std::env::var_os)
        .find(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A validated lock path split into its directory and its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitPath {
    pub full: PathBuf,
    pub dir: PathBuf,
    pub name: CString,
}

const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;

/// Check that `path` can name a lock file and split it. Rejects empty paths, NUL bytes,
/// non-UTF-8 bytes (status output and the bindings speak UTF-8), names that are not a
/// file (`/`, `.`, `..`, trailing `/`), and lengths over the kernel's limits.
pub(crate) fn split(path: &Path) -> Result<SplitPath> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(
            path,
            "the path is empty; pass a file path such as /tmp/balena/updates.lock",
        ));
    }
    if bytes.contains(&0) {
        return Err(Error::invalid(
            path,
            "the path contains a NUL byte, which no file name can hold",
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(Error::invalid(
            path,
            "the path is not valid UTF-8; use a UTF-8 (normally ASCII) path",
        ));
    }
    if bytes.len() > PATH_MAX {
        return Err(Error::invalid(
            path,
            format!(
                "the path is {} bytes long, over the limit of {PATH_MAX}; use a shorter one",
                bytes.len()
            ),
        ));
    }
    let name = match path.file_name() {
        Some(n) if !bytes.ends_with(b"/") => n,
        _ => return Err(Error::invalid(path, "the path does not name a file (it ends in '/', '.' or '..'); pass a file path such as /tmp/balena/updates.lock")),
    };
    if name.len() > NAME_MAX {
        return Err(Error::invalid(
            path,
            format!(
                "the file name is {} bytes long, over the limit of {NAME_MAX}; use a shorter one",
                name.len()
            ),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(SplitPath {
        full: path.to_path_buf(),
        dir,
        name: cstring(name),
    })
}

fn cstring(name: &OsStr) -> CString {
    // `split` rejected NUL bytes before we get here.
    CString::new(name.as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn splits_a_normal_path() {
        let s = split(Path::new("/tmp/balena/updates.lock")).unwrap();
        assert_eq!(s.dir, Path::new("/tmp/balena"));
        assert_eq!(s.name.as_bytes(), b"updates.lock");
        assert_eq!(split(Path::new("x.lock")).unwrap().dir, Path::new("."));
    }

    #[test]
    fn rejects_bad_paths_with_reasons() {
        let cases: Vec<(PathBuf, &str)> = vec![
            (PathBuf::new(), "empty"),
            (
                PathBuf::from(OsString::from_vec(b"/tmp/a\0b".to_vec())),
                "NUL",
            ),
            (
                PathBuf::from(OsString::from_vec(b"/tmp/\xff.lock".to_vec())),
                "UTF-8",
            ),
            (PathBuf::from("/tmp/x/"), "does not name a file"),
            (PathBuf::from("/"), "does not name a file"),
            (
                PathBuf::from(format!("/tmp/{}", "a".repeat(300))),
                "file name is 300 bytes",
            ),
            (
                PathBuf::from(format!("/{}", "a/".repeat(2100))),
                "over the limit",
            ),
        ];
        for (p, want) in cases {
            let e = split(&p).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidPath);
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
    }
}
