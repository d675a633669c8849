//! Who holds a lock path: the holder record we write, and the classification of whatever
//! occupies a lock path (Supervisor, live app, dead holder, or a foreign file).

pub(crate) mod identity;
pub(crate) mod proof;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timefmt;

/// The uid the Supervisor runs `lockfile` as; files it owns are the Supervisor's locks.
pub const SUPERVISOR_UID: u32 = 65534;

/// The first line of every holder record; the version follows.
pub const RECORD_MAGIC: &str = "update-lock holder v";

/// The record version this library writes.
pub const RECORD_VERSION: u32 = 1;

/// The holder record written into every app lock file we create.
///
/// It is informational: liveness is decided by flock, never by the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HolderRecord {
    /// Record format version.
    pub version: u32,
    /// Process id of the holder, in its own PID namespace.
    pub pid: i32,
    /// Inode of the holder's PID namespace (`/proc/<pid>/ns/pid`).
    pub pid_ns: Option<u64>,
    /// Kernel boot id when the lock was taken.
    pub boot_id: Option<String>,
    /// Holder's start time in clock ticks since boot (tells a reused pid apart).
    pub start_time: Option<u64>,
    /// Effective uid of the holder.
    pub uid: u32,
    /// Host (container) name of the holder.
    pub hostname: String,
    /// Program name of the holder.
    pub program: String,
    /// When the lock was taken, milliseconds since the Unix epoch.
    pub acquired_at_ms: Option<u64>,
    /// The holder is in the caller's PID namespace (so `pid` means something here).
    pub same_pid_namespace: bool,
    /// The holder is the calling process itself (another handle in this process).
    pub same_process: bool,
}

impl HolderRecord {
    /// A record describing the calling process, taking the lock now.
    pub(crate) fn for_current_process(program: Option<&str>) -> HolderRecord {
        let id = identity::current();
        HolderRecord {
            version: RECORD_VERSION,
            pid: id.pid,
            pid_ns: id.pid_ns,
            boot_id: id.boot_id,
            start_time: id.start_time,
            uid: nix::unistd::geteuid().as_raw(),
            hostname: id.hostname,
            program: program.map(str::to_string).unwrap_or(id.program),
            acquired_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            same_pid_namespace: true,
            same_process: true,
        }
    }

    /// The record bytes for the calling process taking a lock now. Everything but the time
    /// is built once per process (and program name) and reused.
    pub(crate) fn current_bytes(program: Option<&str>) -> Vec<u8> {
        /// (pid, program, record bytes without `acquired_at`).
        type Prefix = (u32, Option<String>, Vec<u8>);
        static PREFIX: Mutex<Option<Prefix>> = Mutex::new(None);
        let pid = std::process::id();
        let mut bytes = {
            let mut cache = PREFIX.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some((p, prog, prefix)) if *p == pid && prog.as_deref() == program => {
                    prefix.clone()
                }
                _ => {
                    let mut r = HolderRecord::for_current_process(program);
                    r.acquired_at_ms = None;
                    let mut prefix = r.to_bytes();
                    let tail = b"acquired_at=\n";
                    if prefix.ends_with(tail) {
                        prefix.truncate(prefix.len() - tail.len());
                    }
                    *cache = Some((pid, program.map(str::to_string), prefix.clone()));
                    prefix
                }
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        bytes.reserve(40);
        bytes.extend_from_slice(b"acquired_at=");
        bytes.extend_from_slice(timefmt::format_unix_ms(now).as_bytes());
        bytes.push(b'\n');
        bytes
    }

    /// Serialise as the versioned text record (a magic line, then `key=value` lines).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{RECORD_MAGIC}{}\n", self.version);
        let mut kv = |k: &str, v: &str| {
            let clean: String = v
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            s.push_str(k);
            s.push('=');
            s.push_str(&clean);
            s.push('\n');
        };
        kv("pid", &self.pid.to_string());
        kv("pid_ns", &opt(self.pid_ns));
        kv("boot_id", self.boot_id.as_deref().unwrap_or(""));
        kv("start_time", &opt(self.start_time));
        kv("uid", &self.uid.to_string());
        kv("hostname", &self.hostname);
        kv("program", &self.program);
        kv(
            "acquired_at",
            &self
                .acquired_at_ms
                .map(timefmt::format_unix_ms)
                .unwrap_or_default(),
        );
        s.into_bytes()
    }

    /// Parse a record. `None` when the content does not start with our magic line.
    /// Unknown keys (from newer versions) are ignored; missing ones stay empty.
    pub(crate) fn parse(content: &[u8]) -> Option<HolderRecord> {
        let text = std::str::from_utf8(content).ok()?;
        let mut lines = text.lines();
        let version = lines
            .next()?
            .strip_prefix(RECORD_MAGIC)?
            .trim()
            .parse()
            .ok()?;
        let me = identity::current();
        let mut r = HolderRecord {
            version,
            pid: 0,
            pid_ns: None,
            boot_id: None,
            start_time: None,
            uid: u32::MAX,
            hostname: String::new(),
            program: String::new(),
            acquired_at_ms: None,
            same_pid_namespace: false,
            same_process: false,
        };
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "pid" => r.pid = v.parse().unwrap_or(0),
                "pid_ns" => r.pid_ns = v.parse().ok(),
                "boot_id" => r.boot_id = Some(printable(v)).filter(|s| !s.is_empty()),
                "start_time" => r.start_time = v.parse().ok(),
                "uid" => r.uid = v.parse().unwrap_or(u32::MAX),
                "hostname" => r.hostname = printable(v),
                "program" => r.program = printable(v),
                "acquired_at" => r.acquired_at_ms = timefmt::parse_unix_ms(v),
                _ => {}
            }
        }
        r.same_pid_namespace = r.pid_ns.is_some() && r.pid_ns == me.pid_ns;
        r.same_process = r.same_pid_namespace && r.pid == me.pid && r.start_time == me.start_time;
        Some(r)
    }

    /// Whether the holder process is still running, as far as this process can see: only
    /// meaningful when [`same_pid_namespace`](Self::same_pid_namespace) is true (false
    /// otherwise). Liveness of the *lock* is decided by flock, not by this.
    pub fn is_running(&self) -> bool {
        self.same_pid_namespace && identity::is_running(self.pid, self.start_time)
    }

    /// `acquired_at` as RFC 3339 UTC, when known.
    pub fn acquired_at(&self) -> Option<String> {
        self.acquired_at_ms.map(timefmt::format_unix_ms)
    }

    /// One-line human description: pid, program, host, since when.
    pub fn summary(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        if !self.same_pid_namespace {
            s.push_str(" in another container (pid namespace)");
        }
        if !self.program.is_empty() {
            s.push_str(&format!(", program '{}'", self.program));
        }
        if !self.hostname.is_empty() {
            s.push_str(&format!(", host '{}'", self.hostname));
        }
        s.push_str(&format!(", uid {}", self.uid));
        if let Some(at) = self.acquired_at() {
            s.push_str(&format!(", since {at}"));
        }
        s
    }
}

/// Longest text field kept from a record (a hostname is at most 64, a program name short).
const MAX_FIELD_CHARS: usize = 256;

/// A record field as safe to print: records are other users' data, so control characters
/// (terminal escapes, newlines, bells) and the invisible characters that reorder or hide
/// text (bidirectional overrides, zero-width characters) become `?`, and overlong values
/// are cut.
fn printable(v: &str) -> String {
    v.chars()
        .take(MAX_FIELD_CHARS)
        .map(|c| {
            if c.is_control() || hides_text(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Unicode format characters that change how the text around them is shown: the
/// bidirectional marks, embeddings, overrides and isolates, zero-width characters and the
/// byte-order mark ("Trojan Source" style spoofing of a holder's name).
fn hides_text(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// What kind of thing occupies a lock path that update-lock did not create.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ForeignKind {
    /// An empty regular file (`touch`, `flock(1)`, or a crash inside another tool).
    EmptyFile,
    /// Content `0`: procmail `lockfile` run by a uid other than the Supervisor's.
    LockfileFormat,
    /// A regular file with content we do not recognise (or cannot read).
    UnknownContent,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character or block device.
    Device,
}

impl ForeignKind {
    fn describe(&self) -> &'static str {
        match self {
            ForeignKind::EmptyFile => "an empty file (as made by `touch` or `flock(1)`)",
            ForeignKind::LockfileFormat => "a procmail `lockfile` lock (content `0`)",
            ForeignKind::UnknownContent => "a file with unrecognised content",
            ForeignKind::Directory => "a directory",
            ForeignKind::Symlink => "a symbolic link",
            ForeignKind::Fifo => "a named pipe (fifo)",
            ForeignKind::Socket => "a Unix socket",
            ForeignKind::Device => "a device node",
        }
    }
}

/// Who occupies a lock path.
///
/// With the `serde` feature it serialises as one object, the same for every kind and in
/// every binding (the `holder` of `held` and `timeout` errors in Python and Node.js), with
/// these keys in this order:
///
/// ```json
/// {
///   "state": "held-by-app",
///   "description": "held by another app (pid 7, program 'worker', ...)",
///   "record": { "version": 1, "pid": 7, "...": "the HolderRecord, or null" },
///   "owner_uid": 1000,
///   "flock_held": true,
///   "foreign_kind": null,
///   "symlink_target": null
/// }
/// ```
///
/// * `state`: [`state_name`](Self::state_name); `description`: [`describe`](Self::describe).
/// * `record`: the [`HolderRecord`] for app and stale holders, else `null`.
/// * `owner_uid`, `flock_held`: [`owner_uid`](Self::owner_uid) and
///   [`flock_held`](Self::flock_held), `null` when unknown.
/// * `foreign_kind` (kebab-case [`ForeignKind`]) and `symlink_target` (the path as a string,
///   lossy UTF-8): for foreign holders, else `null`.
///
/// | kind | `record` | `owner_uid` | `flock_held` | `foreign_kind`, `symlink_target` |
/// | --- | --- | --- | --- | --- |
/// | `held-by-app` | record | `record.uid` | `true` | `null` |
/// | `stale` | record | `record.uid` | `false` | `null` |
/// | `held-by-supervisor` | `null` | `65534` | `false` | `null` |
/// | `foreign` | `null` | owner of the path | as observed | kind, target or `null` |
/// | `changing` | `null` | `null` | `null` | `null` |
/// | `update-waiting` | `null` | `null` | `null` | `null` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Files kept appearing and disappearing at the path while we looked (other processes
    /// are taking and releasing it right now): nobody could be named; look again.
    Changing,
    /// Nobody: the path is free, but this acquisition lets a waiting update in first. The
    /// Supervisor was seen trying to take the lock (by this process, or by another process
    /// of the app that left the `update-waiting` note), and the acquisition yields until
    /// the Supervisor's lock appears or `yield_to_updates` has passed
    /// ([`crate::update_waiting`]).
    UpdateWaiting,
    /// The balena Supervisor (a regular file owned by uid 65534): an update or reboot is in
    /// progress; wait for it.
    Supervisor,
    /// A live app: our holder record, and its flock is held.
    App(HolderRecord),
    /// A dead holder: our holder record, but nobody holds its flock.
    Stale(HolderRecord),
    /// Something update-lock did not create.
    Foreign {
        /// What it is.
        kind: ForeignKind,
        /// Owner uid of the path itself (not followed).
        owner_uid: u32,
        /// Someone holds flock(2) on it (only for regular files).
        flock_held: bool,
        /// Where a symlink points, for [`ForeignKind::Symlink`].
        symlink_target: Option<PathBuf>,
    },
}

impl Holder {
    /// The state name used in `lockctl status --json`: `held-by-supervisor`,
    /// `held-by-app`, `stale`, `foreign`, `changing` or `update-waiting`.
    pub fn state_name(&self) -> &'static str {
        match self {
            Holder::Changing => "changing",
            Holder::UpdateWaiting => "update-waiting",
            Holder::Supervisor => "held-by-supervisor",
            Holder::App(_) => "held-by-app",
            Holder::Stale(_) => "stale",
            Holder::Foreign { .. } => "foreign",
        }
    }

    /// The holder record, for app and stale holders.
    pub fn record(&self) -> Option<&HolderRecord> {
        match self {
            Holder::App(r) | Holder::Stale(r) => Some(r),
            _ => None,
        }
    }

    /// The uid that owns the lock: the record's uid for app and stale holders,
    /// [`SUPERVISOR_UID`] for the Supervisor, the owner of the path for foreign ones; `None`
    /// when it is [`Changing`](Holder::Changing).
    pub fn owner_uid(&self) -> Option<u32> {
        match self {
            Holder::App(r) | Holder::Stale(r) => Some(r.uid),
            Holder::Supervisor => Some(SUPERVISOR_UID),
            Holder::Foreign { owner_uid, .. } => Some(*owner_uid),
            Holder::Changing | Holder::UpdateWaiting => None,
        }
    }

    /// Whether someone holds flock(2) on the path: `true` for a live app, `false` for a
    /// stale holder and for the Supervisor (its `lockfile` takes no flock), as observed for a
    /// foreign path; `None` when it is [`Changing`](Holder::Changing).
    pub fn flock_held(&self) -> Option<bool> {
        match self {
            Holder::App(_) => Some(true),
            Holder::Stale(_) | Holder::Supervisor => Some(false),
            Holder::Foreign { flock_held, .. } => Some(*flock_held),
            Holder::Changing | Holder::UpdateWaiting => None,
        }
    }

    /// Who holds it, as a phrase ("held by the balena Supervisor ...").
    pub fn describe(&self) -> String {
        match self {
            Holder::Changing => {
                "changing too fast to tell who holds it (other processes are taking and releasing it right now)".into()
            }
            Holder::Supervisor => {
                "held by the balena Supervisor (file owned by uid 65534): an update or reboot is in progress".into()
            }
            Holder::UpdateWaiting => {
                "free, but kept for the balena Supervisor: it tried to take the lock for an update, and this app lets it in first (yield_to_updates)".into()
            }
            Holder::App(r) if r.same_process => {
                format!("held by this same process through another lock handle ({})", r.summary())
            }
            Holder::App(r) => format!("held by another app ({})", r.summary()),
            Holder::Stale(r) => format!(
                "left behind by a dead holder ({}; nobody holds its flock any more)",
                r.summary()
            ),
            Holder::Foreign {
                kind,
                owner_uid,
                flock_held,
                symlink_target,
            } => {
                let mut s = format!(
                    "occupied by {} owned by uid {owner_uid}, not created by update-lock",
                    kind.describe()
                );
                if let Some(t) = symlink_target {
                    s.push_str(&format!(" (pointing to {})", t.display()));
                }
                if *flock_held {
                    s.push_str("; someone holds flock on it");
                }
                s.push_str("; the Supervisor treats any existing path as a held lock");
                s
            }
        }
    }

    /// What the user should do next about this holder on `path`.
    pub fn next_step(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            Holder::Supervisor => "wait for the update to settle (acquire with a timeout) and try again".into(),
            Holder::UpdateWaiting => "wait for the update (acquire with a timeout), or set yield_to_updates to 0 to take the lock at once".into(),
            Holder::Changing => {
                "acquire with a timeout to wait for it; `lockctl status` names the holder once it settles".into()
            }
            Holder::App(r) if r.same_process => {
                "release the other handle first; a process cannot hold the lock twice".into()
            }
            Holder::App(_) => {
                "wait for it (acquire with a timeout), or stop that program; `lockctl status` shows the holder".into()
            }
            Holder::Stale(_) => format!(
                "acquire with stale reclaim turned on (the default) to take it over, or delete it by hand (rm {p})"
            ),
            Holder::Foreign { kind: ForeignKind::Directory, .. } => {
                format!("if nothing uses it, remove it (rmdir {p})")
            }
            Holder::Foreign { flock_held: true, .. } => {
                "wait for the program holding its flock to finish, then delete the file if it stays behind".into()
            }
            Holder::Foreign { .. } => format!(
                "if no program uses it, delete it (rm {p}); update-lock never deletes files it cannot prove are its own"
            ),
        }
    }
}

/// The canonical holder object (see [`Holder`]); every binding serialises holders with it.
#[cfg(feature = "serde")]
impl serde::Serialize for Holder {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (foreign_kind, symlink_target) = match self {
            Holder::Foreign {
                kind,
                symlink_target,
                ..
            } => (
                Some(kind),
                symlink_target
                    .as_deref()
                    .map(|t| t.to_string_lossy().into_owned()),
            ),
            _ => (None, None),
        };
        let mut s = serializer.serialize_struct("Holder", 7)?;
        s.serialize_field("state", self.state_name())?;
        s.serialize_field("description", &self.describe())?;
        s.serialize_field("record", &self.record())?;
        s.serialize_field("owner_uid", &self.owner_uid())?;
        s.serialize_field("flock_held", &self.flock_held())?;
        s.serialize_field("foreign_kind", &foreign_kind)?;
        s.serialize_field("symlink_target", &symlink_target)?;
        s.end()
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    fn record(uid: u32) -> HolderRecord {
        HolderRecord {
            version: RECORD_VERSION,
            pid: 7,
            pid_ns: Some(4026531836),
            boot_id: Some("b00t".into()),
            start_time: Some(42),
            uid,
            hostname: "box".into(),
            program: "worker".into(),
            acquired_at_ms: Some(1_700_000_000_000),
            same_pid_namespace: true,
            same_process: false,
        }
    }

    const RECORD_JSON: &str = r#"{"version":1,"pid":7,"pid_ns":4026531836,"boot_id":"b00t","start_time":42,"uid":1000,"hostname":"box","program":"worker","acquired_at_ms":1700000000000,"same_pid_namespace":true,"same_process":false}"#;

    /// The exact text: keys in the documented order.
    fn expect(h: &Holder, rest: &str) {
        let desc = serde_json::to_string(&h.describe()).unwrap();
        let want = format!(
            r#"{{"state":"{}","description":{desc},{rest}}}"#,
            h.state_name()
        );
        assert_eq!(serde_json::to_string(h).unwrap(), want);
    }

    #[test]
    fn every_kind_serialises_to_the_canonical_object() {
        expect(
            &Holder::App(record(1000)),
            &format!(
                r#""record":{RECORD_JSON},"owner_uid":1000,"flock_held":true,"foreign_kind":null,"symlink_target":null"#
            ),
        );
        expect(
            &Holder::Stale(record(1000)),
            &format!(
                r#""record":{RECORD_JSON},"owner_uid":1000,"flock_held":false,"foreign_kind":null,"symlink_target":null"#
            ),
        );
        expect(
            &Holder::Supervisor,
            r#""record":null,"owner_uid":65534,"flock_held":false,"foreign_kind":null,"symlink_target":null"#,
        );
        expect(
            &Holder::Foreign {
                kind: ForeignKind::EmptyFile,
                owner_uid: 0,
                flock_held: true,
                symlink_target: None,
            },
            r#""record":null,"owner_uid":0,"flock_held":true,"foreign_kind":"empty-file","symlink_target":null"#,
        );
        for h in [Holder::Changing, Holder::UpdateWaiting] {
            expect(
                &h,
                r#""record":null,"owner_uid":null,"flock_held":null,"foreign_kind":null,"symlink_target":null"#,
            );
        }
    }

    #[test]
    fn symlink_target_is_a_lossy_string() {
        use std::os::unix::ffi::OsStrExt;
        let target = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xffx"));
        let h = Holder::Foreign {
            kind: ForeignKind::Symlink,
            owner_uid: 1000,
            flock_held: false,
            symlink_target: Some(target),
        };
        let v: serde_json::Value = serde_json::to_value(&h).unwrap();
        assert_eq!(v["state"], "foreign");
        assert_eq!(v["foreign_kind"], "symlink");
        assert_eq!(v["symlink_target"], "/tmp/\u{fffd}x");
        assert_eq!(v["owner_uid"], 1000);
        assert_eq!(v["flock_held"], false);
        assert_eq!(v["description"], h.describe());
    }

    #[test]
    fn app_and_stale_owner_is_the_record_uid() {
        let h = Holder::App(record(0));
        assert_eq!((h.owner_uid(), h.flock_held()), (Some(0), Some(true)));
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["owner_uid"], v["record"]["uid"]);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    /// Hardening H: a record is other users' data; printing it must not drive the terminal.
    #[test]
    fn control_characters_in_a_record_never_reach_a_message() {
        let text = "update-lock holder v1\npid=7\nuid=1000\nhostname=a\u{1b}]0;pwned\u{7}b\nprogram=x\u{1b}[2Jy\r\nacquired_at=\n";
        let r = HolderRecord::parse(text.as_bytes()).expect("a record");
        assert_eq!(r.hostname, "a?]0;pwned?b");
        assert_eq!(r.program, "x?[2Jy");
        let shown = Holder::App(r).describe();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        // Characters that reorder or hide text (a program name that reads backwards).
        let text = "update-lock holder v1\nuid=0\nprogram=safe\u{202E}exe.live\u{2066}x\u{200B}y\u{FEFF}\n";
        let r = HolderRecord::parse(text.as_bytes()).expect("a record");
        assert_eq!(r.program, "safe?exe.live?x?y?");
        let long = format!(
            "update-lock holder v1\nuid=0\nprogram={}\n",
            "p".repeat(5000)
        );
        assert_eq!(
            HolderRecord::parse(long.as_bytes()).unwrap().program.len(),
            MAX_FIELD_CHARS
        );
    }
}
