//! `lockctl device`, `update`, `reboot` in a lockctl built without the Supervisor API client
//! (`--no-default-features`, the lock-only entrypoint): each says so and how to get it.

use std::time::Duration;

use crate::failure::Failure;

/// Exit status of a command this build does not have (as a missing companion binary).
const EXIT_NOT_BUILT: i32 = crate::companion::EXIT_NOT_INSTALLED;

fn not_built(command: &str) -> Result<i32, Failure> {
    Err(Failure::other(
        EXIT_NOT_BUILT,
        format!(
            "error[not-installed]: `lockctl {command}` needs the Supervisor API client, which this lockctl was built without (a lock-only build): use a release binary, or build with `cargo build -p lockctl` (the feature `supervisor-api` is on by default)"
        ),
    ))
}

/// `lockctl device` without the API client.
pub fn device(_json: bool, _timeout: Duration) -> Result<i32, Failure> {
    not_built("device")
}

/// `lockctl update` without the API client.
pub fn update(_force: bool, _timeout: Duration) -> Result<i32, Failure> {
    not_built("update")
}

/// `lockctl reboot` without the API client.
pub fn reboot(_force: bool, _timeout: Duration) -> Result<i32, Failure> {
    not_built("reboot")
}

/// No API line in `lockctl status`.
pub fn status_line() -> Option<String> {
    None
}
