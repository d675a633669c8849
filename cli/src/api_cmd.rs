//! `lockctl device`, `lockctl update`, `lockctl reboot`: the Supervisor API from a shell, and
//! the API line of `lockctl status`. The address and key come from the environment the
//! Supervisor gives a service with the `io.balena.features.supervisor-api` label; the key
//! is never printed.

use std::time::Duration;

use update_lock::{DeviceState, SupervisorApi};

use crate::failure::{Failure, EXIT_OTHER};

fn client(timeout: Duration) -> Result<SupervisorApi, Failure> {
    let api = SupervisorApi::from_env()?;
    Ok(api.with_timeout(timeout.clamp(Duration::from_millis(1), Duration::from_secs(3600))))
}

/// One line about a device state: "update pending (downloaded), status Idle".
pub fn describe(d: &DeviceState) -> String {
    let update = match (d.update_pending, d.update_downloaded, d.update_failed) {
        (true, true, _) => {
            "an update is downloaded and waiting (for the update lock to be released)".to_string()
        }
        (true, false, _) => match d.download_progress {
            Some(p) => format!("an update is pending, downloading ({p}%)"),
            None => "an update is pending".to_string(),
        },
        (false, _, true) => "the last update failed".to_string(),
        (false, _, false) => "no update pending".to_string(),
    };
    match &d.status {
        Some(s) => format!("{update}; Supervisor status {s}"),
        None => update,
    }
}

/// `lockctl device [--json]`.
pub fn device(json: bool, timeout: Duration) -> Result<i32, Failure> {
    let d = client(timeout)?.device()?;
    if json {
        let text = serde_json::to_string_pretty(&d).map_err(|e| {
            Failure::other(EXIT_OTHER, format!("cannot encode the device state: {e}"))
        })?;
        out!("{text}");
    } else {
        out!("{}", describe(&d));
        if let Some(c) = &d.commit {
            out!("release {c}");
        }
    }
    Ok(0)
}

/// `lockctl update [--force]`.
pub fn update(force: bool, timeout: Duration) -> Result<i32, Failure> {
    client(timeout)?.update(force)?;
    say!(
        "lockctl: the Supervisor will check for an update now{}",
        if force {
            " (force: it overrides update locks)"
        } else {
            ""
        }
    );
    Ok(0)
}

/// `lockctl reboot [--force]`.
pub fn reboot(force: bool, timeout: Duration) -> Result<i32, Failure> {
    client(timeout)?.reboot(force)?;
    say!(
        "lockctl: the Supervisor is rebooting the device{}",
        if force { " (force)" } else { "" }
    );
    Ok(0)
}

/// The API line of `lockctl status` (text form): only when the API is configured.
pub fn status_line() -> Option<String> {
    let api = SupervisorApi::from_env()
        .ok()?
        .with_timeout(Duration::from_secs(3));
    Some(match api.device() {
        Ok(d) => format!("Supervisor API {}: {}", api.address(), describe(&d)),
        Err(e) => format!(
            "Supervisor API {}: not answering ({})",
            api.address(),
            e.api_failure().map(|r| r.as_str()).unwrap_or("error")
        ),
    })
}
