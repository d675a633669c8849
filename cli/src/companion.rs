//! Commands served by a companion binary installed beside `lockctl`, so that what only a
//! developer runs (the rehearsal, with its HTTP server and client) is not linked into the
//! binary that runs as PID 1 in every container.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::failure::Failure;

/// Exit status when the companion is not installed (as `lockctl rehearse` when it cannot
/// run).
pub const EXIT_NOT_INSTALLED: i32 = 70;

/// Replace this process by `name` (beside our own executable, else on `PATH`) with `args`:
/// its exit status, output and signals are the command's own.
pub fn exec(name: &str, args: &[OsString]) -> Result<i32, Failure> {
    let program = locate(name).ok_or_else(|| {
        Failure::other(
            EXIT_NOT_INSTALLED,
            format!(
                "error[not-installed]: `{name}` was not found beside lockctl or on PATH: it is a separate binary so that the entrypoint stays small; install it beside lockctl (from a release archive, or `cargo build -p {name}` in the source tree)"
            ),
        )
    })?;
    let e = std::process::Command::new(&program).args(args).exec();
    Err(Failure::other(
        EXIT_NOT_INSTALLED,
        format!(
            "error[not-installed]: cannot run {}: {e}",
            program.display()
        ),
    ))
}

fn locate(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    beside.into_iter().chain(on_path).find(|p| p.is_file())
}
