//! The update strategies (`io.balena.update.strategy`) and the order of the Supervisor's steps
//! in each, as `docs/device-contract.md` describes them.

/// One of the four strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Download the new image while the old version runs, then stop it and start the new one.
    DownloadThenKill,
    /// Stop the old version, then download, then start the new one.
    KillThenDownload,
    /// Stop the old version and delete its image before downloading (least disk).
    DeleteThenDownload,
    /// Download, start the new version beside the old one, wait for hand-over, stop the old.
    HandOver,
}

/// One step of the Supervisor's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetch the new image.
    Download,
    /// Take the update lock (lockfile as uid 65534), retrying with backoff while the app holds it.
    TakeLock,
    /// docker stop the old version: SIGTERM, SIGKILL after the grace period.
    StopOld,
    /// Remove the old image.
    RemoveOldImage,
    /// Start the new version.
    StartNew,
    /// Wait for handover-complete (documented) or not at all (current Supervisors).
    WaitHandover,
    /// Release the lock once the update has settled.
    ReleaseLock,
}

impl Strategy {
    /// All four, in the order `--compare` runs them.
    pub const ALL: [Strategy; 4] = [
        Strategy::DownloadThenKill,
        Strategy::KillThenDownload,
        Strategy::DeleteThenDownload,
        Strategy::HandOver,
    ];

    /// The strategy a label value selects; unknown values select the default
    /// (`download-then-kill`), as on a device. The flag says whether it fell back.
    pub fn from_label(label: &str) -> (Strategy, bool) {
        match label {
            "download-then-kill" => (Strategy::DownloadThenKill, false),
            "kill-then-download" => (Strategy::KillThenDownload, false),
            "delete-then-download" => (Strategy::DeleteThenDownload, false),
            "hand-over" => (Strategy::HandOver, false),
            _ => (Strategy::DownloadThenKill, true),
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::DownloadThenKill => "download-then-kill",
            Strategy::KillThenDownload => "kill-then-download",
            Strategy::DeleteThenDownload => "delete-then-download",
            Strategy::HandOver => "hand-over",
        }
    }

    /// The Supervisor's steps, in order. The lock is taken before a version is stopped and
    /// released when the update has settled; hand-over does not take it.
    pub fn steps(self) -> &'static [Step] {
        use Step::*;
        match self {
            Strategy::DownloadThenKill => &[
                Download,
                TakeLock,
                StopOld,
                StartNew,
                ReleaseLock,
                RemoveOldImage,
            ],
            Strategy::KillThenDownload => &[
                TakeLock,
                StopOld,
                Download,
                StartNew,
                ReleaseLock,
                RemoveOldImage,
            ],
            Strategy::DeleteThenDownload => &[
                TakeLock,
                StopOld,
                RemoveOldImage,
                Download,
                StartNew,
                ReleaseLock,
            ],
            Strategy::HandOver => &[Download, StartNew, WaitHandover, StopOld, RemoveOldImage],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_labels_fall_back_to_the_default() {
        assert_eq!(
            Strategy::from_label("hand-over"),
            (Strategy::HandOver, false)
        );
        assert_eq!(
            Strategy::from_label("handover"),
            (Strategy::DownloadThenKill, true)
        );
        assert_eq!(Strategy::from_label(""), (Strategy::DownloadThenKill, true));
        for s in Strategy::ALL {
            assert_eq!(Strategy::from_label(s.name()), (s, false));
        }
    }
}
