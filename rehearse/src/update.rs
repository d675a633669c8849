//! One rehearsal: start the old version, update it to the new one step by step as the
//! Supervisor would with the chosen strategy, watch the result, and clean everything up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::api_server::ApiServer;
use super::config::{service_dir, Config, EXIT_CANNOT_RUN};
use super::monitor::Monitor;
use super::plan::{Step, Strategy};
use super::probe::{Probe, ProbeKind};
use super::reboot::{wait_for_flock, RebootWait};
use super::report::{Actor, Lane, Report, Settings, REPORT_SCHEMA};
use super::summary::{summarize, Measured};
use super::supervisor_lock::{LockSettings, NotTaken, SupervisorLock};
use super::timeline::Timeline;
use super::version::{describe_status, secs, Launch, Version};
use lockctl::failure::Failure;

/// The hand-over signal names the Supervisor watches in the service directory.
const SIGNAL_NAMES: [&str; 2] = ["handover-complete", "resin-kill-me"];
/// How often the Supervisor looks for the hand-over signal.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Image bytes on disk, modelled from the sizes: what each strategy needs at its peak.
struct Disk {
    now: u64,
    peak: u64,
}

impl Disk {
    fn add(&mut self, b: u64) {
        self.now += b;
        self.peak = self.peak.max(self.now);
    }
    fn remove(&mut self, b: u64) {
        self.now = self.now.saturating_sub(b);
    }
}

/// Rehearse one update with `strategy`.
pub fn rehearse(cfg: &Config, strategy: Strategy, fell_back: bool) -> Result<Report, Failure> {
    let dir = service_dir(cfg)?;
    for n in SIGNAL_NAMES {
        let _ = std::fs::remove_file(dir.join(n));
    }
    let probe_kind = match &cfg.probe {
        Some(p) => Some(
            ProbeKind::parse(p, &dir)
                .map_err(|e| Failure::other(lockctl::failure::EXIT_USAGE, e))?,
        ),
        None => None,
    };
    let tl = Arc::new(Timeline::new(cfg.live));
    let api = ApiServer::start(dir.clone(), Arc::clone(&tl))
        .map_err(|e| Failure::other(EXIT_CANNOT_RUN, e))?;
    let supervisor = if cfg.documented {
        "documented"
    } else {
        "current"
    };
    tl.event(
        Actor::Rehearsal,
        "start",
        format!(
            "{} update, {supervisor} Supervisor, service directory {} ({})",
            strategy.name(),
            dir.display(),
            if cfg.namespaced {
                "each version in its own mount+PID namespace"
            } else {
                "plain processes"
            }
        ),
    );
    let mut run = Run {
        cfg,
        strategy,
        dir: dir.clone(),
        tl: Arc::clone(&tl),
        monitor: Monitor::start(dir.clone(), Arc::clone(&tl)),
        probe: probe_kind
            .map(|k| Probe::start(k, cfg.probe_interval, cfg.probe_timeout, Arc::clone(&tl))),
        launch: Launch {
            namespaced: cfg.namespaced,
            service_dir: dir.clone(),
            show_output: cfg.live,
            extra_env: api.environment(),
        },
        api,
        old: None,
        new: None,
        lock: None,
        disk: Disk {
            now: cfg.old_image,
            peak: cfg.old_image,
        },
        m: Measured::default(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    if fell_back {
        run.notes.push(format!(
            "unknown strategy '{}': the Supervisor falls back to download-then-kill",
            cfg.requested_strategy
        ));
        tl.event(
            Actor::Supervisor,
            "strategy-fallback",
            format!(
                "unknown strategy '{}': using download-then-kill",
                cfg.requested_strategy
            ),
        );
    }
    let outcome = run.go();
    let fatal = outcome.err();
    run.teardown();
    let Run {
        monitor,
        probe,
        api,
        mut m,
        problems,
        mut notes,
        disk,
        ..
    } = run;
    if let Some(p) = probe {
        p.finish();
    }
    let peaks = monitor.finish();
    let api_address = api.address().to_string();
    api.finish();
    let (events, spans) = tl.finish();
    if let Some(f) = fatal {
        return Err(f);
    }
    m.peaks = peaks;
    m.peak_disk = disk.peak;
    if cfg.probe.is_none() {
        notes.push("no --probe: downtime was not measured".into());
    }
    let settings = Settings {
        requested_strategy: cfg.requested_strategy.clone(),
        supervisor: supervisor.into(),
        namespaces: cfg.namespaced,
        supervisor_uid_65534: cfg.as_65534,
        handover_timeout_ms: cfg.handover_timeout.as_millis() as u64,
        stop_grace_ms: cfg.stop_grace.as_millis() as u64,
        force: cfg.force,
        old_image_bytes: cfg.old_image,
        new_image_bytes: cfg.new_image,
        probe: cfg.probe.clone(),
        reboot: cfg.reboot,
        api_address,
    };
    let (summary, expectations) = summarize(cfg, &events, &spans, &m);
    let ok = problems.is_empty() && expectations.iter().all(|e| e.met);
    Ok(Report {
        schema: REPORT_SCHEMA,
        strategy: strategy.name().into(),
        settings,
        events,
        spans,
        summary,
        problems,
        notes,
        expectations,
        ok,
    })
}

/// The state of one rehearsal in progress.
struct Run<'a> {
    cfg: &'a Config,
    strategy: Strategy,
    dir: PathBuf,
    tl: Arc<Timeline>,
    monitor: Monitor,
    probe: Option<Probe>,
    launch: Launch,
    api: ApiServer,
    old: Option<Version>,
    new: Option<Version>,
    lock: Option<SupervisorLock>,
    disk: Disk,
    m: Measured,
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Why the update stopped early: a problem has been recorded, or the rehearsal cannot run.
enum Stop {
    Problem,
    Fatal(Failure),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Fatal(f)
    }
}

impl Run<'_> {
    fn go(&mut self) -> Result<(), Failure> {
        match self.steps() {
            Ok(()) | Err(Stop::Problem) => Ok(()),
            Err(Stop::Fatal(f)) => Err(f),
        }
    }

    /// Warn when the app released the lock and took it again between the Supervisor's
    /// attempts: a lock cycled that way can keep an update out for as long as it goes on.
    fn warn_if_cycling(&mut self, a: super::supervisor_lock::Attempts) {
        if a.retaken == 0 {
            return;
        }
        let text = format!(
            "warning: the app released the update lock and took it again {} time(s) while the Supervisor waited between its attempts (its retries back off: 0.5 s, 1 s, 2 s ... up to the poll interval), so the update waited {} attempts; an app that cycles its lock can keep an update out as long as it goes on. update-lock lets a waiting update in first by default (yield_to_updates, 60 s; UPDATE_LOCK_YIELD_TO_UPDATES): keep it on, or release at a safe point for longer",
            a.retaken, a.made
        );
        self.tl
            .event(Actor::Rehearsal, "lock-cycling", text.clone());
        self.notes.push(text);
    }

    fn problem(&mut self, p: String) -> Stop {
        self.tl.event(Actor::Rehearsal, "problem", p.clone());
        self.problems.push(p);
        Stop::Problem
    }

    fn start(&mut self, role: Actor) -> Result<(), Stop> {
        let cmd = if role == Actor::Old {
            &self.cfg.old
        } else {
            &self.cfg.new
        };
        match Version::start(role, cmd, &self.launch, &self.tl) {
            Ok(v) => {
                // "Started" is when the command itself runs, not when the container's
                // set-up began: the wait for readiness and --update-after count from here.
                v.wait_started(self.cfg.ready_timeout);
                self.monitor.watch(v.root_pid());
                let t = self.tl.event(
                    role,
                    "started",
                    format!("the {} version started: {cmd}", role.name()),
                );
                if role == Actor::New {
                    self.m.new_started_ms = Some(t);
                }
                if role == Actor::Old {
                    self.old = Some(v);
                } else {
                    self.new = Some(v);
                }
                Ok(())
            }
            Err(e) => Err(Stop::Fatal(Failure::other(EXIT_CANNOT_RUN, e))),
        }
    }

    fn steps(&mut self) -> Result<(), Stop> {
        self.start(Actor::Old)?;
        self.wait_ready(Actor::Old)?;
        let Some(old) = &self.old else { return Ok(()) };
        if let Some(s) = old.wait_exit(self.cfg.update_after) {
            let out = old.last_output();
            return Err(self.problem(format!(
                "the old version ended ({}) before the update began; its last output: {out}",
                describe_status(s)
            )));
        }
        let t = self.tl.event(
            Actor::Supervisor,
            "update-start",
            format!("a new release is the target: {}", self.strategy.name()),
        );
        self.m.update_start_ms = Some(t);
        self.api.set(|s| {
            s.pending = true;
            s.status = "Downloading";
        });
        for &step in self.strategy.steps() {
            self.step(step)?;
        }
        let t = self.tl.event(
            Actor::Supervisor,
            "update-settled",
            "the device runs the target release",
        );
        self.m.update_end_ms = Some(t);
        let checked = self.check_new();
        // Downtime is the update's: stop probing before a reboot or the teardown stops the
        // new version on purpose.
        if let Some(p) = self.probe.take() {
            p.finish();
        }
        checked?;
        if self.cfg.reboot {
            self.reboot()?;
        }
        Ok(())
    }

    fn step(&mut self, step: Step) -> Result<(), Stop> {
        match step {
            Step::Download => self.download(),
            Step::TakeLock => {
                let settings = LockSettings {
                    as_65534: self.cfg.as_65534,
                    force: self.cfg.force,
                    force_flag: self.api.force_flag(),
                    poll_interval: self.cfg.poll_interval,
                    timeout: self.cfg.timeout,
                };
                self.tl.event(
                    Actor::Supervisor,
                    "lock-attempt",
                    "taking the update lock before stopping the old version",
                );
                match SupervisorLock::take(&self.dir, &settings, &self.tl) {
                    Ok((lock, attempts)) => {
                        self.m.lock_attempts = attempts.made;
                        self.warn_if_cycling(attempts);
                        self.lock = Some(lock);
                        Ok(())
                    }
                    Err(NotTaken::Blocked(why, attempts)) => {
                        // The summary counts the attempts of a Supervisor that never got in.
                        self.m.lock_attempts = attempts.made;
                        self.warn_if_cycling(attempts);
                        Err(self.problem(why))
                    }
                    Err(NotTaken::Failed(why)) => {
                        Err(Stop::Fatal(Failure::other(EXIT_CANNOT_RUN, why)))
                    }
                }
            }
            Step::StopOld => {
                if let Some(old) = &self.old {
                    let killed = old.stop(self.cfg.stop_grace, &self.tl, Actor::Supervisor);
                    self.m.old_killed = killed;
                    if killed {
                        self.notes.push(format!(
                            "the old version did not exit within the stop grace period ({}) and was killed: handle SIGTERM (as PID 1 a process without a handler ignores it)",
                            secs(self.cfg.stop_grace)
                        ));
                    }
                }
                Ok(())
            }
            Step::RemoveOldImage => {
                self.disk.remove(self.cfg.old_image);
                self.tl.event(
                    Actor::Supervisor,
                    "old-image-removed",
                    "removed the old image",
                );
                Ok(())
            }
            Step::StartNew => self.start(Actor::New),
            Step::WaitHandover => {
                self.wait_handover();
                Ok(())
            }
            Step::ReleaseLock => {
                if let Some(lock) = self.lock.take() {
                    lock.release(&self.tl);
                }
                Ok(())
            }
        }
    }

    fn download(&mut self) -> Result<(), Stop> {
        self.tl.open(Lane::Download);
        self.tl.event(
            Actor::Download,
            "download-start",
            format!(
                "fetching the new image ({:.1} MB, {})",
                self.cfg.new_image as f64 / 1e6,
                secs(self.cfg.download)
            ),
        );
        // Ten steps, so that the API reports the download's progress.
        for i in 1..=10u32 {
            std::thread::sleep(self.cfg.download / 10);
            self.api.set(|s| s.progress = Some(i * 10));
        }
        self.api.set(|s| {
            s.downloaded = true;
            s.progress = None;
            s.status = "Idle";
        });
        self.disk.add(self.cfg.new_image);
        self.tl.close(Lane::Download);
        self.tl
            .event(Actor::Download, "download-done", "the new image is on disk");
        self.m.download_ms = self.cfg.download.as_secs_f64() * 1000.0;
        Ok(())
    }

    /// Documented Supervisors poll for the signal every 100 ms (and remove it) until the
    /// handover-timeout; current ones return at once.
    fn wait_handover(&mut self) {
        if !self.cfg.documented {
            self.tl.event(
                Actor::Supervisor,
                "handover-wait-skipped",
                "current Supervisor (v14.13.10+): the wait for handover-complete returns at once",
            );
            return;
        }
        self.tl.event(
            Actor::Supervisor,
            "handover-wait",
            format!(
                "waiting for handover-complete (timeout {})",
                secs(self.cfg.handover_timeout)
            ),
        );
        let deadline = std::time::Instant::now() + self.cfg.handover_timeout;
        loop {
            for n in SIGNAL_NAMES {
                let p = self.dir.join(n);
                if p.symlink_metadata().is_ok() {
                    let _ = std::fs::remove_file(&p);
                    let t = self.tl.event(
                        Actor::Supervisor,
                        "handover-complete-seen",
                        format!("saw {n} and removed it"),
                    );
                    self.monitor.handover_seen(t);
                    return;
                }
            }
            if std::time::Instant::now() >= deadline {
                self.tl.event(
                    Actor::Supervisor,
                    "handover-timeout",
                    format!(
                        "no handover-complete within {}: stopping the old version anyway",
                        secs(self.cfg.handover_timeout)
                    ),
                );
                self.notes.push(format!(
                    "the new version never wrote handover-complete: the Supervisor waited the whole handover-timeout ({})",
                    secs(self.cfg.handover_timeout)
                ));
                return;
            }
            std::thread::sleep(SIGNAL_POLL);
        }
    }

    fn wait_ready(&mut self, role: Actor) -> Result<(), Stop> {
        let v = if role == Actor::Old {
            self.old.as_ref()
        } else {
            self.new.as_ref()
        };
        let (Some(probe), Some(v)) = (self.probe.as_ref(), v) else {
            return Ok(());
        };
        probe.mark();
        if probe.wait_up(self.cfg.ready_timeout, || v.status().is_some()) {
            return Ok(());
        }
        let why = match v.wait_exit(Duration::from_millis(100)) {
            Some(s) => format!(
                "the {} version ended ({}) before it was ready; its last output: {}",
                role.name(),
                describe_status(s),
                v.last_output()
            ),
            None => format!(
                "the {} version never became ready: the probe {} did not succeed within {} (--ready-timeout)",
                role.name(),
                self.cfg.probe.as_deref().unwrap_or(""),
                secs(self.cfg.ready_timeout)
            ),
        };
        Err(self.problem(why))
    }

    /// After the update: the new version must be ready and keep running for --observe.
    fn check_new(&mut self) -> Result<(), Stop> {
        if self.new.is_none() {
            return Ok(());
        }
        self.wait_ready(Actor::New)?;
        let Some(new) = &self.new else { return Ok(()) };
        if let Some(s) = new.wait_exit(self.cfg.observe) {
            let out = new.last_output();
            return Err(self.problem(format!(
                "the new version ended ({}) after the update; its last output: {out}",
                describe_status(s)
            )));
        }
        self.m.new_running = true;
        if let Some(p) = &self.probe {
            if !p.is_up() {
                return Err(self.problem("the new version stopped answering the probe".into()));
            }
        }
        Ok(())
    }

    fn reboot(&mut self) -> Result<(), Stop> {
        match wait_for_flock(&self.dir, self.cfg.reboot_poll, self.cfg.timeout, &self.tl) {
            RebootWait::Free(ms) => {
                self.m.reboot_blocked_ms = Some(ms);
                for v in [self.old.as_ref(), self.new.as_ref()].into_iter().flatten() {
                    v.stop(self.cfg.stop_grace, &self.tl, Actor::Reboot);
                }
                self.tl.event(
                    Actor::Reboot,
                    "rebooted",
                    "the device rebooted into the new host OS",
                );
                Ok(())
            }
            RebootWait::StillHeld(why) => {
                self.m.reboot_blocked_ms = Some(self.cfg.timeout.as_secs_f64() * 1000.0);
                Err(self.problem(why))
            }
            RebootWait::Failed(why) => Err(Stop::Fatal(Failure::other(EXIT_CANNOT_RUN, why))),
        }
    }

    /// Stop whatever still runs and give back the Supervisor's lock.
    fn teardown(&mut self) {
        if let Some(p) = self.probe.take() {
            p.finish();
        }
        let running: Vec<&Version> = [self.old.as_ref(), self.new.as_ref()]
            .into_iter()
            .flatten()
            .filter(|v| v.status().is_none())
            .collect();
        if !running.is_empty() {
            self.tl.event(
                Actor::Rehearsal,
                "teardown",
                "rehearsal over: killing what still runs",
            );
        }
        for v in &running {
            v.kill();
        }
        for v in &running {
            v.wait_exit(Duration::from_secs(10));
        }
        if let Some(old) = &self.old {
            self.m.old_exit = old.status().map(describe_status);
        }
        if let Some(lock) = self.lock.take() {
            lock.release(&self.tl);
        }
    }
}
