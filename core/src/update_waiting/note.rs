//! The dated note `update-waiting` beside the lock, which carries "the Supervisor tried to
//! update" from the process that saw it to the app's later acquirers (a shell loop of
//! `lockctl run` starts a new process for every hold).
//!
//! The note is other users' data in a world-writable directory: it is read without
//! following a symbolic link, only when it is a small regular file, and its date is only
//! ever used to *delay* an acquisition, by at most the reader's own `yield_to_updates`
//! (a date in the future counts as "now"). It never unlocks or deletes anything but itself.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::inspection::FileId;
use crate::lock::removal::remove_exact;

/// The note's file name, beside the lock files.
pub const UPDATE_WAITING_NOTE_NAME: &str = "update-waiting";
pub(crate) const NAME: &CStr = c"update-waiting";
/// The start of the private name a note is written under before it is renamed into place.
pub(crate) const TEMP_PREFIX: &[u8] = b".update-waiting.";
const MAGIC: &str = "update-lock update-waiting 1";
const MAX_LEN: usize = 256;

/// Write (or replace) the note: the Supervisor tried to take the lock at `seen`. A note
/// of another uid cannot be replaced in the sticky directory; it is left as it is.
pub(crate) fn write(dir: BorrowedFd<'_>, seen: SystemTime) {
    let ms = seen
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let tmp = format!(".update-waiting.{}.{:x}", std::process::id(), rand());
    debug_assert!(tmp.as_bytes().starts_with(TEMP_PREFIX));
    let Ok(tmp) = std::ffi::CString::new(tmp) else {
        return;
    };
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let Ok(fd) = openat(
        dir,
        tmp.as_c_str(),
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) else {
        return;
    };
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd.into_raw_fd()) };
    let _ = fchmod(file.as_fd(), Mode::from_bits_truncate(0o644));
    let body = format!("{MAGIC}\nseen_unix_ms={ms}\npid={}\n", std::process::id());
    let written = file.write_all(body.as_bytes()).is_ok();
    drop(file);
    if !written || renameat(dir, tmp.as_c_str(), dir, NAME).is_err() {
        let _ = unlinkat(dir, tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
}

/// When the note says the Supervisor tried, if there is a well-formed note.
pub(crate) fn read(dir: BorrowedFd<'_>) -> Option<SystemTime> {
    read_with_owner(dir).map(|(seen, _, _)| seen)
}

fn read_with_owner(dir: BorrowedFd<'_>) -> Option<(SystemTime, u32, FileId)> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, NAME, flags, Mode::empty()).ok()?;
    let st = fstat(fd.as_fd()).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
        || st.st_size as usize > MAX_LEN
    {
        return None;
    }
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd.into_raw_fd()) };
    let mut text = String::new();
    file.take(MAX_LEN as u64).read_to_string(&mut text).ok()?;
    Some((parse(&text)?, st.st_uid, FileId::from(&st)))
}

/// The date in a note's text; `None` unless it is exactly what [`write`] writes.
fn parse(text: &str) -> Option<SystemTime> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let ms = lines
        .next()?
        .strip_prefix("seen_unix_ms=")?
        .parse::<u64>()
        .ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// The Supervisor took its lock at `supervisor_in`: remove a note dated before that, if we
/// may (ours, or we are root), with the same atomic removal as a lock file (only the inode
/// that was read goes; a note written meanwhile stays).
pub(crate) fn clear_before(dir: BorrowedFd<'_>, supervisor_in: SystemTime) {
    let Some((seen, owner, id)) = read_with_owner(dir) else {
        return;
    };
    let me = geteuid().as_raw();
    if seen <= supervisor_in && (owner == me || me == 0) {
        // Only the very note that was read: a newer one written meanwhile stays.
        let _ = remove_exact(dir, NAME, Path::new(UPDATE_WAITING_NOTE_NAME), id);
    }
}

fn rand() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_and_a_bad_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(read(d.as_fd()), None);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        write(d.as_fd(), at);
        assert_eq!(read(d.as_fd()), Some(at));
        let path = dir.path().join(UPDATE_WAITING_NOTE_NAME);
        for bad in [
            "",
            "seen_unix_ms=1\n",
            "update-lock update-waiting 1\nseen_unix_ms=x\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(read(d.as_fd()), None, "{bad:?}");
        }
        std::fs::write(&path, "x".repeat(MAX_LEN + 1)).unwrap();
        assert_eq!(read(d.as_fd()), None);
    }

    #[test]
    fn a_symlink_note_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, format!("{MAGIC}\nseen_unix_ms=5\n")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(UPDATE_WAITING_NOTE_NAME)).unwrap();
        assert_eq!(read(d.as_fd()), None);
        // Clearing never touches what is not a note.
        clear_before(d.as_fd(), SystemTime::now());
        assert!(dir
            .path()
            .join(UPDATE_WAITING_NOTE_NAME)
            .symlink_metadata()
            .is_ok());
    }

    #[test]
    fn clearing_removes_only_an_older_note() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let at = SystemTime::now();
        write(d.as_fd(), at);
        clear_before(d.as_fd(), at - Duration::from_secs(1));
        assert!(read(d.as_fd()).is_some(), "a newer note stays");
        clear_before(d.as_fd(), at + Duration::from_secs(1));
        assert_eq!(read(d.as_fd()), None);
    }
}
