//! Telling the Supervisor's lock attempts from other files in the lock directory.
//!
//! For every attempt, procmail's `lockfile` (which the Supervisor runs as uid 65534) first
//! creates a temp file beside the lock, named `_`, a few characters, `.`, random characters,
//! `.` and the host name (`_FQ.TVZErB.3f1a2b`), with `O_CREAT|O_EXCL`, mode 0444, owned by 65534.
//! Then it `link()`s it to the lock name (which fails while the app holds the lock) and
//! unlinks it, microseconds later. inotify reports the creation even when the file is gone
//! by the time anyone looks.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, SFlag};

use crate::holder::SUPERVISOR_UID;

/// Whether `name` has the shape of a `lockfile` temp name: `_`, 1 to 8 characters of
/// procmail's number alphabet (`0-9A-Za-z`, `_`, `-`, `+`), `.`, 1 to 16 more of them, `.`,
/// then a non-empty host name (which may hold dots). The first part is not always two
/// characters long (it encodes a number: `_FQ.TVZErB.vm`, `_WjB.FdZErB.vm` were both seen
/// from Debian's procmail). No name this SDK makes has that shape: its own private names
/// start with `.`.
pub(crate) fn looks_like_lockfile_temp(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"_") else {
        return false;
    };
    let Some((first, rest)) = word(rest, 8) else {
        return false;
    };
    let Some((second, host)) = word(rest, 16) else {
        return false;
    };
    !first.is_empty() && !second.is_empty() && !host.is_empty()
}

/// Split `s` at its first `.`: up to `max` number characters before it, and what follows.
fn word(s: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let dot = s.iter().position(|&c| c == b'.')?;
    let (w, rest) = (&s[..dot], &s[dot + 1..]);
    let number = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+');
    (w.len() <= max && w.iter().all(number)).then_some((w, rest))
}

/// What a look at such a temp file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Still there, a regular file owned by 65534: the Supervisor's `lockfile`, for sure.
    Proven,
    /// Already gone (as it is a few microseconds after its creation): the name alone says
    /// it was `lockfile`'s.
    NameOnly,
    /// Still there but not a regular file of uid 65534: not the Supervisor's (another
    /// program of the app, or a co-tenant imitating one). Ignored.
    NotTheSupervisors,
}

/// Look at the temp file `name` in `dir` without following a symbolic link.
pub(crate) fn look(dir: BorrowedFd<'_>, name: &CStr) -> Sighting {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if st.st_uid == SUPERVISOR_UID
                && SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG =>
        {
            Sighting::Proven
        }
        Ok(_) => Sighting::NotTheSupervisors,
        Err(Errno::ENOENT) => Sighting::NameOnly,
        Err(_) => Sighting::NotTheSupervisors,
    }
}

/// Whether `name` in `dir` is now a regular file owned by 65534: the Supervisor's own
/// lock, just taken.
pub(crate) fn is_supervisor_lock(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    matches!(
        fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        Ok(st) if st.st_uid == SUPERVISOR_UID
            && SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
    )
}

#[cfg(test)]
mod tests {
    use super::looks_like_lockfile_temp as temp;

    #[test]
    fn lockfile_temp_names_are_recognised() {
        for name in [
            "_FQ.TVZErB.vm",
            "_WjB.FdZErB.vm",
            "_a1.x.host.example.com",
            "_Zz.0123456789.3f1a2b",
        ] {
            assert!(temp(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn other_names_are_not() {
        for name in [
            "updates.lock",
            "resin-updates.lock",
            "handover-complete",
            "update-waiting",
            ".update-waiting.123.abc",
            "_FQ.TVZErB.",
            "_FQ..vm",
            "_.Q.TVZErB.vm",
            "_ab/c.TVZErB.vm",
            "_abcdefghi.TVZErB.vm",
            "_FQTVZErB.vm",
            "FQ.TVZErB.vm",
            "_FQ.TVZErB",
            "",
        ] {
            assert!(!temp(name.as_bytes()), "{name}");
        }
    }
}
