//! What may end `lockctl handover serve` while it waits for a successor: its command
//! exiting on its own, `--timeout`, the grace after SIGTERM/SIGINT, or a second such
//! signal. One watchdog thread decides, and cancels the wait for a successor; no decision
//! is taken while a hand-over is in progress.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use update_lock::CancelToken;

/// Why serving stopped without a hand-over.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// The command exited on its own with this status (128+N for signal N).
    ChildExited(i32),
    /// Nobody took over in time: `--timeout` ("timeout") or the grace after a signal.
    Deadline(&'static str),
    /// A second SIGTERM/SIGINT: stop at once.
    Signal(Signal),
}

#[derive(Default)]
struct State {
    child: Option<Pid>,
    child_status: Option<i32>,
    /// We signalled the command for a hand-over: its exit no longer ends serving.
    released: bool,
    /// A hand-over is in progress.
    busy: bool,
    signals: Vec<(Signal, Instant)>,
    stop: Option<Stop>,
    /// Not serving hand-over: every signal goes to the command as it is.
    forward_all: bool,
}

/// Shared between the main thread, the signal thread, the child's waiter and the watchdog.
#[derive(Clone)]
pub struct Events {
    inner: Arc<(Mutex<State>, Condvar)>,
    /// Cancelled once serving must stop.
    pub stop_token: CancelToken,
}

impl Events {
    /// New shared state (no thread yet: block signals first, see `signals::spawn_receiver`).
    pub fn new() -> std::io::Result<Events> {
        Ok(Events {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            stop_token: CancelToken::new()?,
        })
    }

    /// Start the watchdog: serve at most `timeout` (None: no limit) from now, and at most
    /// `term_grace` after the first SIGTERM/SIGINT.
    pub fn start_watchdog(
        &self,
        timeout: Option<Duration>,
        term_grace: Duration,
    ) -> std::io::Result<()> {
        let started = Instant::now();
        let w = self.clone();
        std::thread::Builder::new()
            .name("lockctl-watchdog".into())
            .spawn(move || w.watch(started, timeout, term_grace))?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.inner.1.notify_all();
    }

    fn watch(&self, started: Instant, timeout: Option<Duration>, term_grace: Duration) {
        let mut st = self.lock();
        loop {
            let term_deadline = st.signals.first().map(|(_, at)| *at + term_grace);
            let deadlines = [
                timeout.map(|t| (started + t, "--timeout")),
                term_deadline.map(|d| (d, "the grace after SIGTERM/SIGINT (--term-grace)")),
            ];
            let next = deadlines.into_iter().flatten().min_by_key(|(d, _)| *d);
            if !st.busy {
                let now = Instant::now();
                st.stop = match (st.child_status, st.released, st.signals.get(1), next) {
                    (Some(code), false, _, _) => Some(Stop::ChildExited(code)),
                    (_, _, Some((sig, _)), _) => Some(Stop::Signal(*sig)),
                    (_, _, _, Some((d, what))) if d <= now => Some(Stop::Deadline(what)),
                    _ => None,
                };
                if st.stop.is_some() {
                    self.stop_token.cancel();
                    self.notify();
                    return;
                }
            }
            st = match next {
                Some((d, _)) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    self.inner
                        .1
                        .wait_timeout(st, wait.max(Duration::from_millis(1)))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.inner.1.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Why serving stopped (after the stop token was cancelled).
    pub fn stop_reason(&self) -> Option<Stop> {
        self.lock().stop
    }

    /// A signal arrived for lockctl: SIGTERM/SIGINT start the grace (a second one stops at
    /// once); the others are sent on to the command.
    pub fn on_signal(&self, sig: Signal) {
        let mut st = self.lock();
        if matches!(sig, Signal::SIGTERM | Signal::SIGINT) && !st.forward_all {
            if st.signals.is_empty() {
                say!(
                    "lockctl: got {}; still serving hand-over until a successor takes over or the grace runs out",
                    sig.as_str()
                );
            }
            st.signals.push((sig, Instant::now()));
            self.notify();
        } else if let (Some(pid), None) = (st.child, st.child_status) {
            let _ = kill(pid, sig);
        }
    }

    /// Watch the command `pid`: record its exit status. As PID 1 (a container entrypoint)
    /// also reap every orphan the kernel re-parents to us.
    pub fn watch_child(&self, pid: Pid) -> std::io::Result<()> {
        self.lock().child = Some(pid);
        let ev = self.clone();
        std::thread::Builder::new()
            .name("lockctl-child".into())
            .spawn(move || {
                let reap_all = std::process::id() == 1;
                let code = loop {
                    let which = if reap_all { None } else { Some(pid) };
                    match waitpid(which, None) {
                        Ok(WaitStatus::Exited(p, code)) if p == pid => break code,
                        Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => break 128 + sig as i32,
                        Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break crate::failure::EXIT_OTHER,
                    }
                };
                ev.lock().child_status = Some(code);
                ev.notify();
                if reap_all {
                    while !matches!(waitpid(None, None), Err(nix::errno::Errno::ECHILD)) {}
                }
            })?;
        Ok(())
    }

    /// Not serving hand-over: send every signal on to the command (SIGTERM too, as
    /// `lockctl run` does). Call before the command starts.
    pub fn forward_every_signal(&self) {
        self.lock().forward_all = true;
    }

    /// Wait for the command to exit, however long; its status.
    pub fn wait_child_forever(&self) -> i32 {
        loop {
            if let Some(code) = self.wait_child(Duration::from_secs(3600)) {
                return code;
            }
        }
    }

    /// Begin a hand-over; false when serving is already stopping.
    pub fn begin_handover(&self) -> bool {
        let mut st = self.lock();
        if st.stop.is_some() {
            return false;
        }
        st.busy = true;
        true
    }

    /// The hand-over failed: serving goes on (and may now stop).
    pub fn end_handover(&self) {
        self.lock().busy = false;
        self.notify();
    }

    /// Whether the command is still running (false when there is none).
    pub fn child_running(&self) -> bool {
        let st = self.lock();
        st.child.is_some() && st.child_status.is_none()
    }

    /// Send `sig` to the command if it still runs; `released` marks that its exit is our
    /// doing (a hand-over), so it does not end serving.
    pub fn signal_child(&self, sig: Signal, released: bool) {
        let mut st = self.lock();
        st.released |= released;
        if let (Some(pid), None) = (st.child, st.child_status) {
            let _ = kill(pid, sig);
        }
    }

    /// Wait at most `limit` for the command to exit; its status, or None if it still runs.
    pub fn wait_child(&self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if st.child.is_none() || st.child_status.is_some() {
                return st.child_status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .inner
                .1
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stop the command: SIGTERM, at most `grace` to exit, then SIGKILL. Its status.
    pub fn stop_child(&self, grace: Duration) -> Option<i32> {
        self.signal_child(Signal::SIGTERM, true);
        if let Some(code) = self.wait_child(grace) {
            return Some(code);
        }
        if self.child_running() {
            say!(
                "lockctl: the command did not exit within {grace:?} after SIGTERM; sending SIGKILL"
            );
        }
        self.signal_child(Signal::SIGKILL, true);
        self.wait_child(Duration::from_secs(5))
    }
}
