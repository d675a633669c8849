//! The host OS update reboot, as `/usr/libexec/safe_reboot` does it: for every `updates.lock`
//! under the services directory run `flock -nx FILE true`; if any fails, wait and try again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::report::{Actor, Lane};
use super::timeline::Timeline;

/// How the reboot wait ended.
pub enum RebootWait {
    /// Nobody holds flock: the device reboots. The wait, in ms.
    Free(f64),
    /// Still held at the deadline: by what.
    StillHeld(String),
    /// `flock` could not be run.
    Failed(String),
}

/// Wait like safe_reboot until no process holds flock on `dir/updates.lock`.
pub fn wait_for_flock(
    dir: &Path,
    poll: Duration,
    timeout: Duration,
    timeline: &Timeline,
) -> RebootWait {
    let started = Instant::now();
    let t0 = timeline.event(
        Actor::Reboot,
        "reboot-requested",
        "host OS update installed: safe_reboot probes updates.lock with flock -nx",
    );
    let path = dir.join("updates.lock");
    let mut deferrals = 0u32;
    loop {
        let free = match probe(&path) {
            Ok(free) => free,
            Err(e) => return RebootWait::Failed(e),
        };
        if free {
            timeline.close(Lane::RebootWaiting);
            let t = timeline.event(
                Actor::Reboot,
                "reboot",
                format!("no process holds flock on updates.lock: rebooting (deferred {deferrals} times)"),
            );
            return RebootWait::Free(t - t0);
        }
        deferrals += 1;
        if started.elapsed() >= timeout {
            timeline.event(
                Actor::Reboot,
                "reboot-gave-up",
                "updates.lock still flocked at the deadline",
            );
            return RebootWait::StillHeld(format!(
                "the host OS reboot was still waiting after {:.0} s: a process holds flock on {} (safe_reboot waits forever): release the lock",
                started.elapsed().as_secs_f64(),
                path.display()
            ));
        }
        timeline.open(Lane::RebootWaiting);
        if deferrals == 1 {
            timeline.event(
                Actor::Reboot,
                "reboot-deferred",
                format!(
                    "flock -nx updates.lock failed: waiting, probing every {}",
                    super::version::secs(poll)
                ),
            );
        }
        std::thread::sleep(
            poll.min(timeout.saturating_sub(started.elapsed()) + Duration::from_millis(1)),
        );
    }
}

/// One safe_reboot probe: `flock -nx PATH true` on a fresh descriptor. A missing file, or one
/// that is not a regular file (we never open through a symlink), does not hold the reboot.
fn probe(path: &Path) -> Result<bool, String> {
    match path.symlink_metadata() {
        Ok(md) if md.file_type().is_file() => {}
        _ => return Ok(true),
    }
    let status = Command::new("flock")
        .args(["-nx"])
        .arg(path)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("could not run flock (util-linux): {e}"))?;
    Ok(status.success())
}
