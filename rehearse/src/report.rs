//! What a rehearsal found: the timeline, the spans drawn in the picture, the summary and the
//! expectations. Serialised as the `--json` report (schema [`REPORT_SCHEMA`]).

use serde::Serialize;

/// Version of the JSON layout of `lockctl rehearse --json`.
pub const REPORT_SCHEMA: u32 = 1;

/// Who did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    /// The simulated balena Supervisor.
    Supervisor,
    /// The old version (the release running before the update).
    Old,
    /// The new version.
    New,
    /// The readiness probe.
    Probe,
    /// The simulated image download.
    Download,
    /// The host OS update reboot (`safe_reboot`).
    Reboot,
    /// The rehearsal itself (start, end, clean-up).
    Rehearsal,
}

impl Actor {
    /// The name used in the text timeline and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Actor::Supervisor => "supervisor",
            Actor::Old => "old",
            Actor::New => "new",
            Actor::Probe => "probe",
            Actor::Download => "download",
            Actor::Reboot => "reboot",
            Actor::Rehearsal => "rehearsal",
        }
    }
}

/// One thing that happened, `t_ms` milliseconds after the rehearsal started.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the start of the rehearsal.
    pub t_ms: f64,
    /// Who did it.
    pub actor: Actor,
    /// Stable machine name of the event, e.g. `lock-taken`, `stop-sent`, `exited`.
    pub kind: String,
    /// A sentence for humans.
    pub detail: String,
}

/// The lanes of the picture, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// The old version's processes run.
    OldRunning,
    /// The new version's processes run.
    NewRunning,
    /// The simulated download of the new image.
    Download,
    /// The Supervisor holds its lock (files owned by 65534).
    SupervisorLock,
    /// An app holds the lock (file owned by the app, flock held).
    AppLock,
    /// The Supervisor waits for the app's lock (retrying with backoff).
    BlockedByLock,
    /// The readiness probe fails after the service was first ready: downtime.
    Down,
    /// The host OS reboot waits for flock on updates.lock.
    RebootWaiting,
}

impl Lane {
    /// All lanes in drawing order.
    pub const ALL: [Lane; 8] = [
        Lane::OldRunning,
        Lane::NewRunning,
        Lane::Download,
        Lane::SupervisorLock,
        Lane::AppLock,
        Lane::BlockedByLock,
        Lane::Down,
        Lane::RebootWaiting,
    ];

    /// Label of the lane in the picture.
    pub fn label(self) -> &'static str {
        match self {
            Lane::OldRunning => "old version",
            Lane::NewRunning => "new version",
            Lane::Download => "download",
            Lane::SupervisorLock => "Supervisor lock",
            Lane::AppLock => "app lock",
            Lane::BlockedByLock => "update blocked",
            Lane::Down => "downtime",
            Lane::RebootWaiting => "reboot waits",
        }
    }

    /// What a bar on the lane means, for the picture's legend.
    pub fn meaning(self) -> &'static str {
        match self {
            Lane::OldRunning => "the old version's processes run",
            Lane::NewRunning => "the new version's processes run",
            Lane::Download => "the new image downloads (simulated)",
            Lane::SupervisorLock => "the Supervisor holds its lock (files owned by uid 65534)",
            Lane::AppLock => "an app holds the update lock (its file and flock)",
            Lane::BlockedByLock => {
                "the Supervisor waits for the app's lock (retrying with backoff)"
            }
            Lane::Down => "the readiness probe fails after the service was first ready",
            Lane::RebootWaiting => "the host OS reboot waits for flock on updates.lock",
        }
    }
}

/// A stretch of time on one lane.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// Which lane.
    pub lane: Lane,
    /// Start, ms since the start of the rehearsal.
    pub from_ms: f64,
    /// End, ms since the start of the rehearsal.
    pub to_ms: f64,
}

/// The figures of one rehearsal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Total downtime seen by the probe after the service was first ready (None: no probe).
    pub downtime_ms: Option<f64>,
    /// How many separate outages the probe saw.
    pub outages: u32,
    /// How long the Supervisor waited for the app's lock before it could stop a version.
    pub blocked_by_lock_ms: f64,
    /// How many times the Supervisor tried to take its lock.
    pub lock_attempts: u32,
    /// New version started -> handover-complete appeared (None: no hand-over signal).
    pub handover_latency_ms: Option<f64>,
    /// From the first step of the update to the new version running and locks released.
    pub update_ms: Option<f64>,
    /// Simulated download time.
    pub download_ms: f64,
    /// Most processes of both versions alive at once.
    pub peak_processes: u32,
    /// Most resident memory of both versions at once (measured, bytes).
    pub peak_memory_bytes: u64,
    /// Most image bytes on disk at once (modelled from the image sizes).
    pub peak_disk_bytes: u64,
    /// How the old version ended: "exit 0", "signal 9 (SIGKILL after 10 s)", ...
    pub old_exit: Option<String>,
    /// The old version had to be killed (it did not exit within the stop grace period).
    pub old_killed: bool,
    /// The new version was still running at the end of the update.
    pub new_running: bool,
    /// How long the host OS reboot waited for flock on updates.lock (None: no --reboot).
    pub reboot_blocked_ms: Option<f64>,
    /// Length of the whole rehearsal.
    pub total_ms: f64,
}

/// One expectation given on the command line and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct Expectation {
    /// Its option, e.g. `expect-max-downtime`.
    pub name: String,
    /// The limit given (ms, or 1 for a yes/no expectation).
    pub limit: f64,
    /// What was measured (None: could not be measured, which does not meet it).
    pub actual: Option<f64>,
    /// Met or not.
    pub met: bool,
}

/// The settings a rehearsal ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The strategy asked for (as given).
    pub requested_strategy: String,
    /// `documented` or `current`.
    pub supervisor: String,
    /// Each version in its own mount and PID namespace (needs root).
    pub namespaces: bool,
    /// The Supervisor's lock taken as uid 65534 (needs root).
    pub supervisor_uid_65534: bool,
    /// The handover-timeout label, ms.
    pub handover_timeout_ms: u64,
    /// docker stop grace period, ms.
    pub stop_grace_ms: u64,
    /// Lock override (`--force`).
    pub force: bool,
    /// Old and new image sizes, bytes.
    pub old_image_bytes: u64,
    /// New image size, bytes.
    pub new_image_bytes: u64,
    /// The probe, as given.
    pub probe: Option<String>,
    /// A host OS reboot was rehearsed after the update.
    pub reboot: bool,
    /// Where the rehearsal served the Supervisor API (the key is not reported).
    pub api_address: String,
}

/// Everything about one rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// The strategy the Supervisor applied (unknown values fall back to download-then-kill).
    pub strategy: String,
    /// How it ran.
    pub settings: Settings,
    /// Every event, in time order.
    pub events: Vec<Event>,
    /// The stretches drawn in the picture.
    pub spans: Vec<Span>,
    /// The figures.
    pub summary: Summary,
    /// What went wrong in the update (a version that did not start, crashed, never became
    /// ready, an update still blocked at the deadline ...), each with what to do.
    pub problems: Vec<String>,
    /// Notes that are not failures (a fallback strategy, a version killed by SIGKILL ...).
    pub notes: Vec<String>,
    /// The expectations given and whether they were met.
    pub expectations: Vec<Expectation>,
    /// No problem and every expectation met: the exit status is 0.
    pub ok: bool,
}
