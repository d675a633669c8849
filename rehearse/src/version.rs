//! One version of the service, run as a container would be: the command in `sh -c`, the
//! Supervisor's environment, and (as root) its own mount and PID namespace with the service
//! directory at /tmp/balena and /tmp/resin. Stopped like `docker stop`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::cleanup;
use super::report::{Actor, Lane};
use super::timeline::Timeline;

/// Lines of output kept from each version, for the report when it fails.
const TAIL_LINES: usize = 12;

/// Mount the service directory as a container sees it, then run the version's command.
const CONTAINER_INIT: &str = "mkdir -p /tmp/balena /tmp/resin && \
mount --bind \"$1\" /tmp/balena && mount --bind \"$1\" /tmp/resin && \
echo \"$3\" >&2 && exec sh -c \"$2\"";

/// The line the emulated container's init prints on stderr right before it execs the
/// version's command: from then on the version runs (never shown, never kept).
const STARTED_MARK: &str = "--lockctl-rehearse: the container is set up, starting the command--";

/// How long the exit of a version waits for its output to be read to the end (a process
/// that left the group could keep the pipe open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How a version is run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Own mount and PID namespace (root only).
    pub namespaced: bool,
    /// The host path of the service directory.
    pub service_dir: std::path::PathBuf,
    /// Print the version's output on stderr.
    pub show_output: bool,
    /// More environment (the Supervisor API's address and key).
    pub extra_env: Vec<(String, String)>,
}

impl Launch {
    /// The directory as the version sees it.
    pub fn dir_inside(&self) -> std::path::PathBuf {
        if self.namespaced {
            "/tmp/balena".into()
        } else {
            self.service_dir.clone()
        }
    }

    /// The Supervisor's environment for a version.
    pub fn environment(&self, role: Actor) -> Vec<(String, String)> {
        let d = self.dir_inside();
        let lock = d.join("updates.lock").display().to_string();
        let signal = d.join("handover-complete").display().to_string();
        let mut v: Vec<(String, String)> = vec![
            ("BALENA_APP_LOCK_PATH".into(), lock.clone()),
            ("RESIN_APP_LOCK_PATH".into(), lock),
            (
                "BALENA_SERVICE_HANDOVER_COMPLETE_PATH".into(),
                signal.clone(),
            ),
            ("RESIN_SERVICE_KILL_ME_PATH".into(), signal),
            ("BALENA".into(), "1".into()),
            ("BALENA_SERVICE_NAME".into(), "main".into()),
            ("UPDATE_LOCK_REHEARSAL".into(), role.name().into()),
        ];
        v.extend(self.extra_env.iter().cloned());
        v
    }
}

#[derive(Default)]
struct ExitState {
    status: Option<ExitStatus>,
    /// The command itself runs (the container is set up), or the version has ended.
    started: bool,
}

/// A running (or finished) version.
pub struct Version {
    role: Actor,
    /// The process we spawned: `unshare` (namespaced) or `sh` (plain); also its group id.
    leader: i32,
    /// Pid (host numbering) of the version's first process: the container's PID 1.
    init: i32,
    namespaced: bool,
    exit: Arc<(Mutex<ExitState>, Condvar)>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// How a version ended, in words: "exit 0", "signal 9 (SIGKILL)".
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(name) => format!("signal {sig} ({name})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown status".into(),
    }
}

impl Version {
    /// Start a version. Its output is prefixed and copied to stderr (unless quiet) and its
    /// last lines kept; its exit is recorded on the timeline when it happens.
    pub fn start(
        role: Actor,
        command: &str,
        launch: &Launch,
        timeline: &Arc<Timeline>,
    ) -> Result<Version, String> {
        let mut cmd = if launch.namespaced {
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
            ])
            .args(["sh", "-c", CONTAINER_INIT, "container"])
            .arg(&launch.service_dir)
            .arg(command)
            .arg(STARTED_MARK);
            c
        } else {
            let mut c = Command::new("sh");
            c.arg("-c").arg(command);
            c
        };
        cmd.envs(launch.environment(role))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, sigprocmask) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                cleanup::unblock_in_child();
                // If lockctl dies, its versions die with it (with --kill-child, the whole
                // emulated container).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            let prog = if launch.namespaced { "unshare" } else { "sh" };
            format!("could not start the {} version ({prog}: {e})", role.name())
        })?;
        let leader = child.id() as i32;
        cleanup::add_group(leader);
        let init = if launch.namespaced {
            first_child(leader).unwrap_or(leader)
        } else {
            leader
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let exit = Arc::new((
            Mutex::new(ExitState {
                status: None,
                started: !launch.namespaced,
            }),
            Condvar::new(),
        ));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut readers = 0;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            readers += 1;
            copy_output(
                role,
                stream,
                launch.show_output,
                Arc::clone(&tail),
                Arc::clone(&exit),
                done_tx.clone(),
            );
        }
        let version = Version {
            role,
            leader,
            init,
            namespaced: launch.namespaced,
            exit,
            tail,
        };
        version.reap_in_background(child, Arc::clone(timeline), (done_rx, readers));
        timeline.open(running_lane(role));
        Ok(version)
    }

    /// Record the exit when it happens, once the output has been read to its end (so the
    /// last lines are in the report), at most [`OUTPUT_DRAIN`] after the exit.
    fn reap_in_background(
        &self,
        mut child: Child,
        timeline: Arc<Timeline>,
        (readers_done, readers): (std::sync::mpsc::Receiver<()>, usize),
    ) {
        let exit = Arc::clone(&self.exit);
        let (role, leader, namespaced) = (self.role, self.leader, self.namespaced);
        std::thread::spawn(move || {
            let status = child.wait();
            // A container's processes all end with its PID 1: without namespaces, end the
            // rest of the process group the same way.
            if !namespaced {
                let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
            }
            let drained_by = Instant::now() + OUTPUT_DRAIN;
            for _ in 0..readers {
                let left = drained_by.saturating_duration_since(Instant::now());
                if readers_done.recv_timeout(left).is_err() {
                    break;
                }
            }
            cleanup::remove_group(leader);
            timeline.close(running_lane(role));
            let (lock, cv) = &*exit;
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(s) = status {
                timeline.event(
                    role,
                    "exited",
                    format!("the {} version ended: {}", role.name(), describe_status(s)),
                );
                st.status = Some(s);
            } else {
                st.status = Some(ExitStatus::from_raw(0x7f00));
            }
            st.started = true;
            cv.notify_all();
        });
    }

    /// The pid whose descendants are this version's processes (for memory accounting).
    pub fn root_pid(&self) -> i32 {
        self.init
    }

    /// How it ended, if it has.
    pub fn status(&self) -> Option<ExitStatus> {
        let (lock, _) = &*self.exit;
        lock.lock().unwrap_or_else(|p| p.into_inner()).status
    }

    /// Wait at most `timeout` until its command runs (an emulated container is set up
    /// first) or it has ended. `false` when neither happened in time.
    pub fn wait_started(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |st| st.started)
    }

    /// Wait at most `timeout` for it to end.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        self.wait_for(timeout, |st| st.status.is_some());
        self.status()
    }

    /// Wait at most `timeout` until `done` holds of its state; whether it does.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&ExitState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.exit;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The last lines it printed, for a report.
    pub fn last_output(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() {
            "(no output)".into()
        } else {
            t.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }

    /// docker stop: SIGTERM to the container's PID 1, SIGKILL to everything after `grace`.
    /// Returns whether it had to be killed.
    pub fn stop(&self, grace: Duration, timeline: &Timeline, actor: Actor) -> bool {
        if self.status().is_some() {
            return false;
        }
        timeline.event(
            actor,
            "stop-sent",
            format!(
                "SIGTERM to the {} version (grace period {})",
                self.role.name(),
                secs(grace)
            ),
        );
        let _ = kill(Pid::from_raw(self.init), Signal::SIGTERM);
        if self.wait_exit(grace).is_some() {
            return false;
        }
        timeline.event(
            actor,
            "kill-sent",
            format!(
                "the {} version did not exit within {}: SIGKILL",
                self.role.name(),
                secs(grace)
            ),
        );
        self.kill();
        self.wait_exit(Duration::from_secs(10));
        true
    }

    /// SIGKILL everything of this version (no grace).
    pub fn kill(&self) {
        if self.namespaced {
            // The namespace's init dies, and the kernel kills the rest of the namespace.
            let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(self.leader), Signal::SIGKILL);
    }
}

/// The lane that shows a version running.
pub fn running_lane(role: Actor) -> Lane {
    if role == Actor::Old {
        Lane::OldRunning
    } else {
        Lane::NewRunning
    }
}

/// "10 s", "250 ms".
pub fn secs(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// The first child of `pid` (unshare's forked child: the container's PID 1).
fn first_child(pid: i32) -> Option<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                if let Some(c) = s.split_whitespace().next().and_then(|c| c.parse().ok()) {
                    return Some(c);
                }
            }
            Err(_) => return None, // unshare already gone
        }
        // unshare forks right after it starts; this is a short wait for that fork.
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn copy_output(
    role: Actor,
    stream: Box<dyn Read + Send>,
    show: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
    exit: Arc<(Mutex<ExitState>, Condvar)>,
    done: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line == STARTED_MARK {
                let (lock, cv) = &*exit;
                lock.lock().unwrap_or_else(|p| p.into_inner()).started = true;
                cv.notify_all();
                continue;
            }
            if show {
                say!("  {:>3} | {line}", role.name());
            }
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
        let _ = done.send(());
    });
}
