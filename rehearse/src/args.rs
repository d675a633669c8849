//! Command-line syntax of `lockctl rehearse`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use lockctl::duration::parse_duration;

/// Options of `lockctl rehearse`.
#[derive(Debug, Args)]
pub struct RehearseArgs {
    /// Shell command of the old version (the release running before the update).
    #[arg(long, value_name = "CMD")]
    pub old: String,
    /// Shell command of the new version.
    #[arg(long, value_name = "CMD")]
    pub new: String,
    /// io.balena.update.strategy: download-then-kill (default), kill-then-download,
    /// delete-then-download or hand-over. Unknown values fall back to the default, as on a
    /// device.
    #[arg(long, default_value = "download-then-kill", value_name = "S")]
    pub strategy: String,
    /// Rehearse all four strategies one after the other and compare them.
    #[arg(long, conflicts_with = "strategy")]
    pub compare: bool,
    /// io.balena.update.handover-timeout, in milliseconds (as the label).
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    pub handover_timeout: u64,
    /// Which Supervisor: `documented` waits for handover-complete before it stops the old
    /// version; `current` (v14.13.10 and later) stops it right after the new one starts.
    #[arg(long, default_value = "current", value_parser = ["documented", "current"])]
    pub supervisor: String,
    /// Lock override (BALENA_SUPERVISOR_OVERRIDE_LOCK, or `POST /v1/update {"force": true}`):
    /// the Supervisor deletes the app's lock files and takes its own.
    #[arg(long)]
    pub force: bool,
    /// docker stop grace period: SIGTERM, then SIGKILL after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub stop_grace: Duration,
    /// Readiness probe: `tcp:[HOST:]PORT`, `http://HOST:PORT/PATH`, `file:PATH` (in the
    /// service directory when relative) or `cmd:SHELL-COMMAND` (ready when it exits 0).
    #[arg(long, value_name = "PROBE")]
    pub probe: Option<String>,
    /// How often the probe runs.
    #[arg(long, default_value = "20ms", value_parser = parse_duration, value_name = "DURATION")]
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as a failure.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub probe_timeout: Duration,
    /// How long a version may take to become ready (with --probe).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub ready_timeout: Duration,
    /// How long the old version runs (after it is ready) before the update begins.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub update_after: Duration,
    /// How long to watch the new version after the update settled.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub observe: Duration,
    /// Simulated download time of the new image (default: --image-size / --download-rate,
    /// else 1 s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub download: Option<Duration>,
    /// Size of the new image (and of the old one unless --old-image-size), e.g. 200MB.
    #[arg(long, default_value = "100MB", value_parser = parse_size, value_name = "SIZE")]
    pub image_size: u64,
    /// Size of the old image.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub old_image_size: Option<u64>,
    /// Download rate per second, e.g. 10MB.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub download_rate: Option<u64>,
    /// The Supervisor's poll interval: the longest pause between lock attempts.
    #[arg(long, default_value = "900s", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Duration,
    /// After the update, rehearse a host OS update reboot (safe_reboot: waits while any
    /// process holds flock on updates.lock, probing every --reboot-poll).
    #[arg(long)]
    pub reboot: bool,
    /// safe_reboot's pause between probes.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub reboot_poll: Duration,
    /// Give up on an update (or reboot) still blocked by a lock after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Run both versions as plain processes even as root (no mount/PID namespaces).
    #[arg(long)]
    pub no_namespaces: bool,
    /// Service directory to use (default: a new temporary one, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub service_dir: Option<PathBuf>,
    /// Fail unless the probe saw at most this much downtime (ms).
    #[arg(long, value_name = "MS")]
    pub expect_max_downtime: Option<f64>,
    /// Fail unless the update was blocked by locks for at most this long (ms).
    #[arg(long, value_name = "MS")]
    pub expect_max_blocked: Option<f64>,
    /// Fail unless the new version signalled handover-complete.
    #[arg(long)]
    pub expect_handover: bool,
    /// Write the timeline picture as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write a self-contained HTML page (picture, summary, events).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print the JSON report (schema 1) on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE (the text summary still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Do not show the versions' output and the live timeline on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How `rehearse` ends.
pub const REHEARSE_HELP: &str = "Each version runs with the Supervisor's environment
(BALENA_APP_LOCK_PATH, RESIN_APP_LOCK_PATH, BALENA_SERVICE_HANDOVER_COMPLETE_PATH,
RESIN_SERVICE_KILL_ME_PATH) and UPDATE_LOCK_REHEARSAL=old|new. As root, each version runs in its
own mount and PID namespace with the service directory at /tmp/balena and /tmp/resin, and the
Supervisor takes its lock with procmail's lockfile as uid 65534, as on a device.

Exit codes:
  0    the update went through and every --expect-* was met
  1    it did not: the report says what went wrong (problems) and which expectation failed
  64   usage error
  70   the rehearsal could not run (e.g. procmail's lockfile or unshare is missing)";

/// A size in bytes: `512`, `100MB`, `1.5GiB`, `800k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = split_unit(t);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512, 100MB, 1.5GiB)"))?;
    let mult: f64 = match unit.to_ascii_lowercase().trim_end_matches("/s") {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use B, kB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = v * mult;
    if !bytes.is_finite() || !(0.0..=1e15).contains(&bytes) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(bytes as u64)
}

fn split_unit(t: &str) -> (&str, &str) {
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (&t[..at], t[at..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10MB/s"), Ok(10_000_000));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }
}
