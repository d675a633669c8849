//! The device state the Supervisor reports on `GET /v1/device`.

use serde_json::Value;

/// What `GET /v1/device` says (fields the Supervisor leaves out are `None`/`false`).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceState {
    /// The Supervisor's status, e.g. `"Idle"`, `"Downloading"`, `"Installing"`.
    pub status: Option<String>,
    /// An update is waiting to be applied (for instance, deferred by an update lock).
    pub update_pending: bool,
    /// The images of the pending update have been downloaded.
    pub update_downloaded: bool,
    /// The last update failed.
    pub update_failed: bool,
    /// Download progress in percent, while downloading.
    pub download_progress: Option<u32>,
    /// The release the device runs.
    pub commit: Option<String>,
    /// The host OS version.
    pub os_version: Option<String>,
    /// The Supervisor's version.
    pub supervisor_version: Option<String>,
    /// The device's IP addresses (space-separated, as the Supervisor gives them).
    pub ip_address: Option<String>,
}

impl DeviceState {
    /// An update has been downloaded and waits: the moment an app at a safe point should
    /// let it in.
    pub fn update_waiting(&self) -> bool {
        self.update_pending && self.update_downloaded
    }

    /// Read the Supervisor's JSON answer.
    pub(crate) fn from_json(v: &Value) -> Option<DeviceState> {
        let obj = v.as_object()?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        Some(DeviceState {
            status: text("status"),
            update_pending: flag("update_pending"),
            update_downloaded: flag("update_downloaded"),
            update_failed: flag("update_failed"),
            download_progress: obj
                .get("download_progress")
                .and_then(Value::as_u64)
                .map(|p| p.min(100) as u32),
            commit: text("commit"),
            os_version: text("os_version"),
            supervisor_version: text("supervisor_version"),
            ip_address: text("ip_address"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_supervisors_answer_and_tolerates_missing_fields() {
        let v: Value = serde_json::from_str(
            r#"{"api_port":48484,"ip_address":"10.0.0.2","commit":"abc","status":"Idle",
                "download_progress":null,"os_version":"balenaOS 6","supervisor_version":"17.0.0",
                "update_pending":true,"update_downloaded":true,"update_failed":false}"#,
        )
        .unwrap();
        let d = DeviceState::from_json(&v).unwrap();
        assert!(d.update_waiting());
        assert_eq!(d.status.as_deref(), Some("Idle"));
        assert_eq!(d.download_progress, None);
        let partial = DeviceState::from_json(&serde_json::json!({"update_pending": true})).unwrap();
        assert!(!partial.update_waiting());
        assert!(DeviceState::from_json(&serde_json::json!([1])).is_none());
    }
}
