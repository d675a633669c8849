//! The figures of a rehearsal, computed from its timeline, and the user's expectations.

use super::config::Config;
use super::monitor::Peaks;
use super::report::{Event, Expectation, Lane, Span, Summary};

/// What the run measured directly (the rest comes from the timeline).
#[derive(Debug, Default)]
pub struct Measured {
    /// Processes, memory and the hand-over signal, from the monitor.
    pub peaks: Peaks,
    /// Most image bytes at once (modelled).
    pub peak_disk: u64,
    /// The Supervisor's lock attempts.
    pub lock_attempts: u32,
    /// Simulated download time.
    pub download_ms: f64,
    /// When the new version started.
    pub new_started_ms: Option<f64>,
    /// When the update began.
    pub update_start_ms: Option<f64>,
    /// When it settled.
    pub update_end_ms: Option<f64>,
    /// How the old version ended.
    pub old_exit: Option<String>,
    /// The old version needed SIGKILL.
    pub old_killed: bool,
    /// The new version ran through the observation.
    pub new_running: bool,
    /// How long the reboot waited.
    pub reboot_blocked_ms: Option<f64>,
}

fn total(spans: &[Span], lane: Lane) -> (f64, u32) {
    spans
        .iter()
        .filter(|s| s.lane == lane)
        .fold((0.0, 0), |(t, n), s| (t + (s.to_ms - s.from_ms), n + 1))
}

/// Summary and expectations.
pub fn summarize(
    cfg: &Config,
    events: &[Event],
    spans: &[Span],
    m: &Measured,
) -> (Summary, Vec<Expectation>) {
    let (down, outages) = total(spans, Lane::Down);
    let (blocked, _) = total(spans, Lane::BlockedByLock);
    let handover_latency_ms = match (m.new_started_ms, m.peaks.handover_seen_ms) {
        (Some(start), Some(seen)) if seen >= start => Some(seen - start),
        _ => None,
    };
    let summary = Summary {
        downtime_ms: cfg.probe.as_ref().map(|_| down),
        outages,
        blocked_by_lock_ms: blocked,
        lock_attempts: m.lock_attempts,
        handover_latency_ms,
        update_ms: match (m.update_start_ms, m.update_end_ms) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        download_ms: m.download_ms,
        peak_processes: m.peaks.processes,
        peak_memory_bytes: m.peaks.memory_bytes,
        peak_disk_bytes: m.peak_disk,
        old_exit: m.old_exit.clone(),
        old_killed: m.old_killed,
        new_running: m.new_running,
        reboot_blocked_ms: m.reboot_blocked_ms,
        total_ms: events.last().map(|e| e.t_ms).unwrap_or(0.0),
    };
    let mut ex = Vec::new();
    if let Some(limit) = cfg.expect_max_downtime {
        let actual = summary.downtime_ms;
        ex.push(Expectation {
            name: "expect-max-downtime".into(),
            limit,
            actual,
            met: actual.is_some_and(|a| a <= limit),
        });
    }
    if let Some(limit) = cfg.expect_max_blocked {
        ex.push(Expectation {
            name: "expect-max-blocked".into(),
            limit,
            actual: Some(blocked),
            met: blocked <= limit,
        });
    }
    if cfg.expect_handover {
        let seen = handover_latency_ms.is_some();
        ex.push(Expectation {
            name: "expect-handover".into(),
            limit: 1.0,
            actual: Some(if seen { 1.0 } else { 0.0 }),
            met: seen,
        });
    }
    (summary, ex)
}
