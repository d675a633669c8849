//! `lockctl status`: every lock path as the Supervisor and the host OS reboot see it.

use std::fmt::Write as _;
use std::io::Write as _;

use update_lock::{status as core_status, ErrorCode, HandoverOptions, LockOptions, LockState};

use crate::failure::{Failure, EXIT_OTHER, EXIT_UNKNOWN};

/// Print the report (nothing with `quiet`). Exit 0 when every path is free, 73 (what the
/// Supervisor's `lockfile` returns) when any path holds off application updates (held by
/// anyone, stale, foreign), [`EXIT_UNKNOWN`] when a path could not be looked at (a script
/// must never read "could not look" as "free"), so `if lockctl status -q; then ...` works.
pub fn status(
    locks: &LockOptions,
    handover: &HandoverOptions,
    json: bool,
    quiet: bool,
) -> Result<i32, Failure> {
    let report = core_status(locks, handover);
    let code = if report.locks.iter().any(|l| l.state == LockState::Unknown) {
        EXIT_UNKNOWN
    } else if report.locks.iter().any(|l| l.blocks_app_updates) {
        ErrorCode::Held.exit_status()
    } else {
        0
    };
    if quiet {
        return Ok(code);
    }
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::other(EXIT_OTHER, format!("cannot encode the report: {e}")))?;
        print_all(&format!("{text}\n"));
        return Ok(code);
    }
    let mut out = String::new();
    for l in &report.locks {
        let state = match l.state {
            LockState::Free => "free",
            LockState::HeldBySupervisor => "HELD by the Supervisor",
            LockState::HeldByApp => "HELD by an app",
            LockState::Stale => "STALE (holder died)",
            LockState::Foreign => "FOREIGN (not ours)",
            LockState::Changing => "CHANGING (being taken and released right now)",
            LockState::Unknown => "UNKNOWN (could not look: do not treat as free)",
        };
        let _ = writeln!(out, "{}: {state}", l.path.display());
        if l.state == LockState::Unknown {
            let _ = writeln!(
                out,
                "  application updates: unknown   host OS reboot: unknown"
            );
            let _ = writeln!(out, "  {}", l.message);
            continue;
        }
        let _ = writeln!(
            out,
            "  application updates: {}   host OS reboot: {}",
            if l.blocks_app_updates {
                "blocked"
            } else {
                "allowed"
            },
            if l.blocks_host_reboot {
                "blocked"
            } else {
                "allowed"
            }
        );
        if l.state != LockState::Free || l.error.is_some() {
            let _ = writeln!(out, "  {}", l.message);
        }
    }
    for h in &report.handover {
        let _ = writeln!(
            out,
            "hand-over signal {}: {}",
            h.path.display(),
            if h.pending {
                "pending (not yet seen by the Supervisor)"
            } else {
                "none"
            }
        );
    }
    if let Some(line) = crate::api_cmd::status_line() {
        let _ = writeln!(out, "{line}");
    }
    print_all(&out);
    Ok(code)
}

/// Print, ignoring a closed pipe (`lockctl status | head`).
fn print_all(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
