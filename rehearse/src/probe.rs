//! The readiness probe: is the service answering? It runs every `--probe-interval` for the
//! whole rehearsal. Failures after the service was first ready are downtime.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::report::{Actor, Lane};
use super::timeline::Timeline;

/// What the probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// A TCP connection is accepted.
    Tcp(String),
    /// An HTTP GET answers 2xx or 3xx.
    Http(String),
    /// A file exists.
    File(PathBuf),
    /// A shell command exits 0.
    Cmd(String),
}

impl ProbeKind {
    /// Parse `tcp:[HOST:]PORT`, `http://...`, `file:PATH`, `cmd:COMMAND`. Relative file
    /// paths are in the service directory.
    pub fn parse(s: &str, service_dir: &Path) -> Result<ProbeKind, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            let addr = if rest.parse::<u16>().is_ok() {
                format!("127.0.0.1:{rest}")
            } else {
                rest.to_string()
            };
            if addr
                .to_socket_addrs()
                .map(|mut a| a.next().is_none())
                .unwrap_or(true)
            {
                return Err(format!(
                    "--probe '{s}': '{rest}' is not HOST:PORT or PORT (example: tcp:8080)"
                ));
            }
            Ok(ProbeKind::Tcp(addr))
        } else if s.starts_with("http://") {
            Ok(ProbeKind::Http(s.to_string()))
        } else if s.starts_with("https://") {
            Err(format!(
                "--probe '{s}': https is not supported; probe the service over http:// or tcp:"
            ))
        } else if let Some(rest) = s.strip_prefix("file:").filter(|r| !r.is_empty()) {
            Ok(ProbeKind::File(service_dir.join(rest)))
        } else if let Some(rest) = s.strip_prefix("cmd:").filter(|r| !r.trim().is_empty()) {
            Ok(ProbeKind::Cmd(rest.to_string()))
        } else {
            Err(format!(
                "--probe '{s}' is not a probe: use tcp:[HOST:]PORT, http://HOST:PORT/PATH, file:PATH or cmd:COMMAND"
            ))
        }
    }
}

#[derive(Default)]
struct State {
    up: bool,
    ever_up: bool,
    /// Successes counted since `mark()`.
    ups_since_mark: u64,
}

/// The running probe.
pub struct Probe {
    stop: Arc<AtomicBool>,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    /// Start probing.
    pub fn start(
        kind: ProbeKind,
        every: Duration,
        timeout: Duration,
        timeline: Arc<Timeline>,
    ) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let thread = {
            let (stop, state) = (Arc::clone(&stop), Arc::clone(&state));
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(timeout)
                    .redirects(0)
                    .build();
                let mut answer = String::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (ok, said) = check(&kind, &agent, timeout);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (lock, cv) = &*state;
                    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if ok {
                        st.ups_since_mark += 1;
                        if !st.ever_up {
                            timeline.event(
                                Actor::Probe,
                                "ready",
                                format!("the service answers ({})", said_or(&said)),
                            );
                        } else if !st.up {
                            timeline.close(Lane::Down);
                            timeline.event(
                                Actor::Probe,
                                "up",
                                format!("the service answers again ({})", said_or(&said)),
                            );
                        } else if !said.is_empty() && said != answer {
                            timeline.event(
                                Actor::Probe,
                                "answer-changed",
                                format!("now answered by: {said}"),
                            );
                        }
                        if !said.is_empty() {
                            answer = said;
                        }
                        st.up = true;
                        st.ever_up = true;
                        cv.notify_all();
                    } else if st.up {
                        st.up = false;
                        timeline.open(Lane::Down);
                        timeline.event(
                            Actor::Probe,
                            "down",
                            format!("the service does not answer: {said}"),
                        );
                    }
                    drop(st);
                    let spent = started.elapsed();
                    if spent < every {
                        std::thread::sleep(every - spent);
                    }
                }
            })
        };
        Probe {
            stop,
            state,
            thread: Some(thread),
        }
    }

    /// Start counting successes anew (e.g. when the old version has gone).
    pub fn mark(&self) {
        let (lock, _) = &*self.state;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .ups_since_mark = 0;
    }

    /// Wait at most `timeout` for a success after the last `mark()`, giving up early when
    /// `gone()` says the version being waited for has ended. True when it succeeded.
    pub fn wait_up(&self, timeout: Duration, gone: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if st.ups_since_mark > 0 && st.up {
                return true;
            }
            if gone() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Wake up now and then to look at `gone()`.
            let slice = left.min(Duration::from_millis(50));
            st = cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether the last probe succeeded.
    pub fn is_up(&self) -> bool {
        let (lock, _) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).up
    }

    /// Stop probing.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn said_or(s: &str) -> &str {
    if s.is_empty() {
        "ok"
    } else {
        s
    }
}

/// One probe: success, and what the service said (HTTP: the first line of the body) or why
/// it failed.
fn check(kind: &ProbeKind, agent: &ureq::Agent, timeout: Duration) -> (bool, String) {
    match kind {
        ProbeKind::Tcp(addr) => {
            let target = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
            match target.map(|a| TcpStream::connect_timeout(&a, timeout)) {
                Some(Ok(_)) => (true, String::new()),
                Some(Err(e)) => (false, e.to_string()),
                None => (false, format!("{addr} does not resolve")),
            }
        }
        ProbeKind::Http(url) => match agent.get(url).call() {
            Ok(resp) if resp.status() < 400 => {
                let mut body = String::new();
                let _ = resp.into_reader().take(256).read_to_string(&mut body);
                let first: String = body
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(60)
                    .collect();
                (true, first)
            }
            Ok(resp) => (false, format!("HTTP {}", resp.status())),
            Err(ureq::Error::Status(code, _)) => (false, format!("HTTP {code}")),
            Err(e) => (false, e.to_string()),
        },
        ProbeKind::File(p) => {
            if p.symlink_metadata().is_ok() {
                (true, String::new())
            } else {
                (false, format!("{} does not exist", p.display()))
            }
        }
        ProbeKind::Cmd(c) => run_with_timeout(c, timeout),
    }
}

fn run_with_timeout(command: &str, timeout: Duration) -> (bool, String) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("could not run sh: {e}")),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return (true, String::new()),
            Ok(Some(s)) => return (false, format!("the probe command ended with {s}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, "the probe command timed out".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return (false, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_explains_bad_ones() {
        let d = Path::new("/svc");
        assert_eq!(
            ProbeKind::parse("tcp:8080", d),
            Ok(ProbeKind::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            ProbeKind::parse("tcp:127.0.0.1:81", d),
            Ok(ProbeKind::Tcp("127.0.0.1:81".into()))
        );
        assert_eq!(
            ProbeKind::parse("http://127.0.0.1:1/x", d),
            Ok(ProbeKind::Http("http://127.0.0.1:1/x".into()))
        );
        assert_eq!(
            ProbeKind::parse("file:ready", d),
            Ok(ProbeKind::File("/svc/ready".into()))
        );
        assert_eq!(
            ProbeKind::parse("cmd:true", d),
            Ok(ProbeKind::Cmd("true".into()))
        );
        assert!(ProbeKind::parse("tcp:nowhere", d)
            .unwrap_err()
            .contains("not HOST:PORT"));
        assert!(ProbeKind::parse("https://x", d)
            .unwrap_err()
            .contains("https is not supported"));
        assert!(ProbeKind::parse("ping", d)
            .unwrap_err()
            .contains("is not a probe"));
        assert!(ProbeKind::parse("cmd:", d)
            .unwrap_err()
            .contains("is not a probe"));
    }
}
