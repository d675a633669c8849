//! Watches what the Supervisor cannot see from the timeline alone, every 10 ms: the
//! processes and resident memory of both versions (from /proc), whether an app holds the
//! lock (the file exists, owned by the app, and /proc/locks shows a FLOCK on it), and when
//! the new version writes handover-complete.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use update_lock::SUPERVISOR_UID;

use super::report::{Actor, Lane};
use super::timeline::Timeline;

const EVERY: Duration = Duration::from_millis(10);

/// What the monitor measured.
#[derive(Debug, Default, Clone)]
pub struct Peaks {
    /// Most processes of both versions at once.
    pub processes: u32,
    /// Most resident memory of both versions at once.
    pub memory_bytes: u64,
    /// When handover-complete (or resin-kill-me) first appeared, ms.
    pub handover_seen_ms: Option<f64>,
}

/// The running monitor.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    roots: Arc<Mutex<Vec<i32>>>,
    peaks: Arc<Mutex<Peaks>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Start watching the service directory.
    pub fn start(service_dir: PathBuf, timeline: Arc<Timeline>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let roots = Arc::new(Mutex::new(Vec::new()));
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let thread = {
            let (stop, roots, peaks) = (Arc::clone(&stop), Arc::clone(&roots), Arc::clone(&peaks));
            std::thread::spawn(move || {
                let page = page_size();
                let mut signal_present = false;
                while !stop.load(Ordering::Relaxed) {
                    let roots = roots.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let (procs, rss_pages) = tree_usage(&roots);
                    let signal = ["handover-complete", "resin-kill-me"]
                        .iter()
                        .any(|n| service_dir.join(n).symlink_metadata().is_ok());
                    if signal && !signal_present {
                        let t = timeline.event(
                            Actor::New,
                            "handover-complete-written",
                            "handover-complete appeared in the service directory",
                        );
                        let mut p = peaks.lock().unwrap_or_else(|p| p.into_inner());
                        p.handover_seen_ms.get_or_insert(t);
                    }
                    signal_present = signal;
                    {
                        let mut p = peaks.lock().unwrap_or_else(|p| p.into_inner());
                        p.processes = p.processes.max(procs);
                        p.memory_bytes = p.memory_bytes.max(rss_pages * page);
                    }
                    if app_holds_lock(&service_dir.join("updates.lock")) {
                        timeline.open(Lane::AppLock);
                    } else {
                        timeline.close(Lane::AppLock);
                    }
                    std::thread::sleep(EVERY);
                }
            })
        };
        Monitor {
            stop,
            roots,
            peaks,
            thread: Some(thread),
        }
    }

    /// Count the processes under `pid` (a version's PID 1) from now on.
    pub fn watch(&self, pid: i32) {
        self.roots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid);
    }

    /// Record that the Supervisor saw the hand-over signal (if the monitor missed it).
    pub fn handover_seen(&self, t_ms: f64) {
        let mut p = self.peaks.lock().unwrap_or_else(|p| p.into_inner());
        if p.handover_seen_ms.is_none_or(|old| t_ms < old) {
            p.handover_seen_ms = Some(t_ms);
        }
    }

    /// Stop and return the peaks.
    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let p = self.peaks.lock().unwrap_or_else(|p| p.into_inner());
        p.clone()
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Processes and resident pages of every process at or under one of `roots`.
fn tree_usage(roots: &[i32]) -> (u32, u64) {
    if roots.is_empty() {
        return (0, 0);
    }
    let mut parent: HashMap<i32, i32> = HashMap::new();
    let mut rss: HashMap<i32, u64> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) closed by ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest: state ppid ... ; rss is field 24 of stat, i.e. index 21 here.
        if f.first() == Some(&"Z") {
            continue;
        }
        if let (Some(ppid), Some(pages)) = (f.get(1), f.get(21)) {
            parent.insert(pid, ppid.parse().unwrap_or(0));
            rss.insert(pid, pages.parse().unwrap_or(0));
        }
    }
    let mut procs = 0;
    let mut pages = 0;
    for (&pid, &p) in &rss {
        let mut cur = pid;
        let mut hops = 0;
        let inside = loop {
            if roots.contains(&cur) {
                break true;
            }
            match parent.get(&cur) {
                Some(&pp) if pp > 0 && hops < 64 => {
                    cur = pp;
                    hops += 1;
                }
                _ => break false,
            }
        };
        if inside {
            procs += 1;
            pages += p;
        }
    }
    (procs, pages)
}

/// An app (not the Supervisor) holds `path`: it exists, is not owned by 65534, and a
/// FLOCK lock is on its inode (read from /proc/locks, which takes no lock itself).
fn app_holds_lock(path: &std::path::Path) -> bool {
    let Ok(md) = path.symlink_metadata() else {
        return false;
    };
    if md.uid() == SUPERVISOR_UID || !md.file_type().is_file() {
        return false;
    }
    flock_held_on(md.dev(), md.ino())
}

/// Whether /proc/locks lists a FLOCK lock on (dev, ino).
pub fn flock_held_on(dev: u64, ino: u64) -> bool {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    std::fs::read_to_string("/proc/locks")
        .map(|s| {
            s.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF" (blocked waiters have "->")
                f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())
            })
        })
        .unwrap_or(false)
}
