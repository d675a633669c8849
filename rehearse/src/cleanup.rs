//! Nothing is left behind: every process group and emulated container a rehearsal starts,
//! every lock file its Supervisor takes and its temporary service directory are registered
//! here, and removed at the end, on an error, and on SIGINT/SIGTERM/SIGHUP.

use std::path::PathBuf;
use std::sync::Mutex;

use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// What to remove.
#[derive(Default)]
struct Registry {
    /// Process groups to SIGKILL (a plain version, or the `unshare` of an emulated container,
    /// whose death takes the whole PID namespace with it).
    groups: Vec<i32>,
    /// Lock files the simulated Supervisor created (owner-checked before removal by the caller).
    files: Vec<PathBuf>,
    /// Temporary service directories.
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    groups: Vec::new(),
    files: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remember a process group to kill.
pub fn add_group(pgid: i32) {
    registry().groups.push(pgid);
}

/// Forget a process group (it has been reaped and killed).
pub fn remove_group(pgid: i32) {
    registry().groups.retain(|g| *g != pgid);
}

/// Remember a lock file created by the simulated Supervisor.
pub fn add_file(path: PathBuf) {
    registry().files.push(path);
}

/// Forget a lock file (released).
pub fn remove_file(path: &std::path::Path) {
    registry().files.retain(|f| f != path);
}

/// Remember a temporary directory to delete.
pub fn add_dir(path: PathBuf) {
    registry().dirs.push(path);
}

/// Kill every registered group and remove every registered file and directory.
pub fn everything() {
    let (groups, files, dirs) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.groups),
            std::mem::take(&mut r.files),
            std::mem::take(&mut r.dirs),
        )
    };
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(g), Signal::SIGKILL);
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The signals that end a rehearsal early.
const STOPPING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Block SIGINT/SIGTERM/SIGHUP in this (still single-threaded) process and start a thread
/// that, when one arrives, removes everything registered and exits with 128+N.
pub fn on_signals() -> std::io::Result<()> {
    let mut set = SigSet::empty();
    for s in STOPPING {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("rehearse-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                say!("lockctl rehearse: {sig} received: stopping both versions and cleaning up");
                everything();
                std::process::exit(128 + sig as i32);
            }
        })?;
    Ok(())
}

/// Unblock the stopping signals (in a child before exec).
pub fn unblock_in_child() {
    let mut set = SigSet::empty();
    for s in STOPPING {
        set.add(s);
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}
