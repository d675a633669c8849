//! Command-line syntax of `lockctl`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use update_lock::{HandoverOptions, LockOptions};

/// Update locks for balena devices, correct for both the Supervisor (the lock file exists)
/// and the host OS update reboot (flock on updates.lock).
#[derive(Debug, Parser)]
#[command(name = "lockctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "Exit codes:
  0    success
  73   the lock is held by someone else (after any wait); the Supervisor's lockfile uses 73 too
  77   permission or uid problem (e.g. running as uid 65534)
  64   usage error or invalid path
  1    anything else
  126/127  (run) the command could not be executed / was not found
  128+N    (run) the command died of signal N, or the wait was interrupted by signal N";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take the lock, run CMD, release when it exits; exits with CMD's status.
    Run {
        #[command(flatten)]
        lock: LockArgs,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Take the lock and keep it held in the background until `lockctl release`.
    Acquire {
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Release a lock taken by `lockctl acquire` (or clear one whose holder died).
    Release {
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Show every lock path as the Supervisor and the host OS reboot see it.
    Status {
        #[command(flatten)]
        paths: PathArgs,
        /// Hand-over signal path to show (repeatable; default: the Supervisor's).
        #[arg(long = "handover-path", value_name = "P")]
        handover_paths: Vec<PathBuf>,
        /// Print the stable JSON report (schema 1) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hand-over signals.
    Handover {
        #[command(subcommand)]
        action: HandoverAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum HandoverAction {
    /// Tell the Supervisor that the new release has taken over (create handover-complete).
    Complete {
        /// Signal path (repeatable; default: the Supervisor's, plus legacy names).
        #[arg(long = "path", value_name = "P")]
        paths: Vec<PathBuf>,
        /// Do not write the legacy resin-kill-me signals.
        #[arg(long)]
        no_legacy: bool,
    },
}

/// Which lock paths.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Lock path (repeatable; default: $BALENA_APP_LOCK_PATH, else /tmp/balena/updates.lock,
    /// plus /tmp/resin/resin-updates.lock).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<PathBuf>,
    /// Leave out the legacy /tmp/resin/resin-updates.lock.
    #[arg(long)]
    pub no_legacy: bool,
}

/// Which lock paths, and how to wait.
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    /// Wait at most SECS seconds (0 = try once, 'forever' = no limit; default forever).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, conflicts_with = "no_wait")]
    pub timeout: Option<Timeout>,
    /// Fail at once if the lock is held (same as --timeout 0).
    #[arg(long)]
    pub no_wait: bool,
    /// Do not take over locks left by dead holders.
    #[arg(long)]
    pub no_reclaim: bool,
}

/// A parsed `--timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub Option<Duration>);

/// Seconds as a non-negative finite number (fractions allowed), or `forever`.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    let t = s.trim();
    if matches!(t, "forever" | "inf" | "infinity" | "never") {
        return Ok(Timeout(None));
    }
    let secs: f64 = t.parse().map_err(|_| {
        format!("'{s}' is not a number of seconds; use e.g. 5, 0.5, 0 (try once) or 'forever'")
    })?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "'{s}' must be a finite number of seconds, 0 or more (or 'forever')"
        ));
    }
    if secs > 1e9 {
        return Err(format!(
            "'{s}' is over 10^9 seconds; use 'forever' to wait without a limit"
        ));
    }
    Ok(Timeout(Some(Duration::from_secs_f64(secs))))
}

impl PathArgs {
    pub fn options(&self) -> LockOptions {
        LockOptions::new()
            .paths(self.paths.clone())
            .legacy(!self.no_legacy)
    }
}

impl LockArgs {
    pub fn options(&self) -> LockOptions {
        let timeout = if self.no_wait {
            Some(Duration::ZERO)
        } else {
            self.timeout.and_then(|t| t.0)
        };
        self.paths
            .options()
            .timeout(timeout)
            .reclaim_stale(!self.no_reclaim)
    }
}

pub fn handover_options(paths: &[PathBuf], no_legacy: bool) -> HandoverOptions {
    HandoverOptions::new()
        .paths(paths.to_vec())
        .legacy(!no_legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("0").unwrap().0, Some(Duration::ZERO));
        assert_eq!(
            parse_timeout("1.5").unwrap().0,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_timeout("forever").unwrap().0, None);
        for bad in ["-1", "abc", "NaN", "inf5", "1e12", "", "infs"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
