//! The settings of a rehearsal and the places it needs: its service directory and the
//! programs the device would run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockctl::failure::Failure;

/// Exit status when the rehearsal itself cannot run.
pub const EXIT_CANNOT_RUN: i32 = 70;

/// Everything a rehearsal needs to know, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shell command of the old version.
    pub old: String,
    /// Shell command of the new version.
    pub new: String,
    /// The strategy label as given.
    pub requested_strategy: String,
    /// A documented Supervisor (waits for handover-complete) rather than a current one.
    pub documented: bool,
    /// The handover-timeout label.
    pub handover_timeout: Duration,
    /// docker stop grace period.
    pub stop_grace: Duration,
    /// Lock override from the start.
    pub force: bool,
    /// The readiness probe, as given.
    pub probe: Option<String>,
    /// How often the probe runs.
    pub probe_interval: Duration,
    /// How long one probe may take.
    pub probe_timeout: Duration,
    /// How long a version may take to become ready.
    pub ready_timeout: Duration,
    /// How long the old version runs before the update.
    pub update_after: Duration,
    /// How long the new version is watched after the update.
    pub observe: Duration,
    /// Simulated download time.
    pub download: Duration,
    /// Old image size, bytes.
    pub old_image: u64,
    /// New image size, bytes.
    pub new_image: u64,
    /// The Supervisor's longest pause between lock attempts.
    pub poll_interval: Duration,
    /// Rehearse a host OS reboot after the update.
    pub reboot: bool,
    /// safe_reboot's pause between probes.
    pub reboot_poll: Duration,
    /// Give up on an update or reboot still blocked after this long.
    pub timeout: Duration,
    /// Each version in its own mount and PID namespace.
    pub namespaced: bool,
    /// The Supervisor's lockfile runs as uid 65534.
    pub as_65534: bool,
    /// The service directory given (else a temporary one).
    pub service_dir: Option<PathBuf>,
    /// Print the timeline and the versions' output live.
    pub live: bool,
    /// --expect-max-downtime, ms.
    pub expect_max_downtime: Option<f64>,
    /// --expect-max-blocked, ms.
    pub expect_max_blocked: Option<f64>,
    /// --expect-handover.
    pub expect_handover: bool,
}

/// A service directory for one run: the one given, or a new private one under /tmp.
pub fn service_dir(cfg: &Config) -> Result<PathBuf, Failure> {
    if let Some(d) = &cfg.service_dir {
        let md = d.symlink_metadata().map_err(|e| {
            Failure::other(
                lockctl::failure::EXIT_USAGE,
                format!("--service-dir {}: {e}", d.display()),
            )
        })?;
        if !md.is_dir() {
            return Err(Failure::other(
                lockctl::failure::EXIT_USAGE,
                format!(
                    "--service-dir {} is not a directory (a symlink is not followed)",
                    d.display()
                ),
            ));
        }
        if cfg.as_65534 {
            use std::os::unix::fs::PermissionsExt;
            // The Supervisor's lockfile runs as uid 65534: it must reach the directory.
            let abs = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            for a in abs.ancestors().skip(1) {
                let mode = a
                    .metadata()
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o755);
                if mode & 0o001 == 0 {
                    return Err(Failure::other(
                        lockctl::failure::EXIT_USAGE,
                        format!(
                            "--service-dir {}: uid 65534 (the Supervisor's lockfile) cannot reach it: {} is mode {:o}; use a directory under /tmp, or chmod o+x {}",
                            d.display(),
                            a.display(),
                            mode & 0o7777,
                            a.display()
                        ),
                    ));
                }
            }
        }
        return Ok(d.clone());
    }
    for n in 0..1000u32 {
        let p = std::env::temp_dir().join(format!("lockctl-rehearse.{}.{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => {
                super::cleanup::add_dir(p.clone());
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777));
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Failure::other(
                    EXIT_CANNOT_RUN,
                    format!(
                        "could not create a service directory in {}: {e}",
                        std::env::temp_dir().display()
                    ),
                ))
            }
        }
    }
    Err(Failure::other(
        EXIT_CANNOT_RUN,
        "could not create a service directory",
    ))
}

/// Whether `name` is an executable on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(name))))
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
