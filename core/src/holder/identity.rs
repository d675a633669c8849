//! Who this process is, for the holder record: pid, pid namespace, boot, start time.
//!
//! PIDs alone are useless across containers (each has its own PID namespace), so the record
//! carries the namespace id and boot id too; liveness itself is always decided by flock.

use std::sync::Mutex;

/// Facts about the current process that go into a holder record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub pid: i32,
    pub pid_ns: Option<u64>,
    pub boot_id: Option<String>,
    pub start_time: Option<u64>,
    pub hostname: String,
    pub program: String,
}

static CACHE: Mutex<Option<Identity>> = Mutex::new(None);

/// The identity of the calling process, computed once per pid (a forked child recomputes).
pub(crate) fn current() -> Identity {
    let pid = std::process::id() as i32;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    match cache.as_ref() {
        Some(id) if id.pid == pid => id.clone(),
        _ => {
            let id = compute(pid);
            *cache = Some(id.clone());
            id
        }
    }
}

fn compute(pid: i32) -> Identity {
    Identity {
        pid,
        pid_ns: pid_namespace_of("self"),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string()),
        // Through the main thread's task entry, which has the process's start time: an
        // emulator such as qemu-user rewrites `/proc/self/stat` (and `/proc/<own pid>/stat`)
        // with a start time a few ticks off, while another process reading ours sees the
        // kernel's; the task entry is the kernel's in both cases.
        start_time: start_time_of(&format!("self/task/{}", std::process::id())),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        program: program_name(),
    }
}

/// The inode number of `/proc/<proc>/ns/pid`, which identifies a PID namespace.
pub(crate) fn pid_namespace_of(proc_: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{proc_}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// Field 22 of `/proc/<proc>/stat`: start time in clock ticks since boot.
pub(crate) fn start_time_of(proc_: &str) -> Option<u64> {
    stat_fields(proc_)?.get(19)?.parse().ok()
}

/// Whether `pid` (in our PID namespace) is a running process (not a zombie) that started
/// at `start_time`.
pub(crate) fn is_running(pid: i32, start_time: Option<u64>) -> bool {
    let Some(fields) = stat_fields(&pid.to_string()) else {
        return false;
    };
    let alive = !matches!(
        fields.first().map(String::as_str),
        Some("Z") | Some("X") | None
    );
    let same = match start_time {
        Some(t) => fields.get(19).and_then(|f| f.parse::<u64>().ok()) == Some(t),
        None => true,
    };
    alive && same
}

/// The fields of `/proc/<proc>/stat` after the command name (so index 0 is the state).
fn stat_fields(proc_: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{proc_}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn program_name() -> String {
    let from_args = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    from_args
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/self/comm")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_has_namespace_and_start_time() {
        let id = current();
        assert_eq!(id.pid, std::process::id() as i32);
        assert!(id.pid_ns.is_some());
        assert!(id.start_time.is_some());
        assert!(id.boot_id.as_deref().is_some_and(|b| b.len() == 36));
    }
}
