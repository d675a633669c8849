//! `ul_status`: what each reader of the lock sees, into caller-owned structs.

use std::ffi::{c_char, c_int};

use lockcore::PathStatus;

use crate::error::{guard, guard_value, ul_result, Failure};
use crate::holder::{
    fill_record, foreign_of, path_bytes, state_of, ul_foreign_kind, ul_holder_record, ul_lock_state,
};
use crate::options::{handover_options, lock_options, ul_handover_options, ul_options};
use crate::strings::StringArena;

/// One lock path as both readers see it (one entry of `locks` in `lockctl status --json`).
/// Strings point into the caller's string buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_path_status {
    /// The lock path.
    pub path: *const c_char,
    /// Its state.
    pub state: ul_lock_state,
    /// The Supervisor would defer application updates (the path exists).
    pub blocks_app_updates: bool,
    /// The host OS update reboot would wait (named `updates.lock`, flock held).
    pub blocks_host_reboot: bool,
    /// Someone holds flock(2) on it.
    pub flock_held: bool,
    /// `owner_uid` is known (the path exists).
    pub has_owner_uid: bool,
    /// Owner uid of the path (not followed).
    pub owner_uid: u32,
    /// `holder` is filled (held-by-app and stale).
    pub has_holder: bool,
    /// The holder record.
    pub holder: ul_holder_record,
    /// What it is, for foreign paths (`UL_FOREIGN_NONE` otherwise).
    pub foreign_kind: ul_foreign_kind,
    /// Where it points, for a symlink; NULL otherwise.
    pub symlink_target: *const c_char,
    /// A sentence for humans: who holds it and what to do.
    pub message: *const c_char,
    /// Why the path could not be inspected, or NULL.
    pub error: *const c_char,
}

/// One hand-over signal path.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_handover_status {
    /// The signal path (in the caller's string buffer).
    pub path: *const c_char,
    /// The signal exists and the Supervisor has not consumed it yet.
    pub pending: bool,
}

/// The status report, caller-owned: the caller provides the arrays and the string buffer
/// (the "in" fields), `ul_status` fills them and the "out" fields. Initialise it with
/// `ul_status_report_init`. Versioned by `struct_size` like `ul_options`.
///
/// ```c
/// ul_path_status locks[4];
/// ul_handover_status handover[4];
/// char strings[8192];
/// ul_status_report report;
/// ul_status_report_init(&report, sizeof report);
/// report.locks = locks;       report.lock_capacity = 4;
/// report.handover = handover; report.handover_capacity = 4;
/// report.strings = strings;   report.strings_capacity = sizeof strings;
/// if (ul_status(&opts, &hopts, &report) == UL_OK)
///     for (size_t i = 0; i < report.lock_count; i++)
///         printf("%s: %s\n", locks[i].path, ul_state_name(locks[i].state));
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ul_status_report {
    /// Size of the caller's struct in bytes; set by `ul_status_report_init`.
    pub struct_size: usize,
    /// In: array of `lock_capacity` entries to fill (may be NULL when the capacity is 0).
    pub locks: *mut ul_path_status,
    /// In: entries in `locks`.
    pub lock_capacity: usize,
    /// In: array of `handover_capacity` entries to fill (may be NULL when the capacity
    /// is 0).
    pub handover: *mut ul_handover_status,
    /// In: entries in `handover`.
    pub handover_capacity: usize,
    /// In: buffer every string of the report is written into (may be NULL when the
    /// capacity is 0).
    pub strings: *mut c_char,
    /// In: bytes in `strings`.
    pub strings_capacity: usize,
    /// Out: layout version of the report (1, as `schema` in `lockctl status --json`).
    pub schema: u32,
    /// Out: number of lock paths (entries needed in `locks`).
    pub lock_count: usize,
    /// Out: number of hand-over signal paths (entries needed in `handover`).
    pub handover_count: usize,
    /// Out: string bytes needed in `strings`.
    pub strings_needed: usize,
    /// Out: any lock path blocks application updates.
    pub blocks_app_updates: bool,
    /// Out: any lock path blocks the host OS update reboot.
    pub blocks_host_reboot: bool,
}

fn fill_path(p: &PathStatus, arena: &mut StringArena) -> ul_path_status {
    ul_path_status {
        path: arena.put(path_bytes(&p.path)),
        state: state_of(p.state),
        blocks_app_updates: p.blocks_app_updates,
        blocks_host_reboot: p.blocks_host_reboot,
        flock_held: p.flock_held,
        has_owner_uid: p.owner_uid.is_some(),
        owner_uid: p.owner_uid.unwrap_or(0),
        has_holder: p.holder.is_some(),
        holder: fill_record(p.holder.as_ref(), arena),
        foreign_kind: foreign_of(p.foreign_kind.as_ref()),
        symlink_target: p
            .symlink_target
            .as_deref()
            .map_or(std::ptr::null(), |t| arena.put(path_bytes(t))),
        message: arena.put(p.message.as_bytes()),
        error: p
            .error
            .as_ref()
            .map_or(std::ptr::null(), |e| arena.put(e.as_bytes())),
    }
}

/// Zero `*report` and set `report->struct_size = struct_size`; then set its "in" fields.
/// Call it as `ul_status_report_init(&report, sizeof report)`. Returns `UL_OK`,
/// `UL_ERR_NULL_ARGUMENT`, `UL_ERR_INVALID_ARGUMENT` (`struct_size` too small).
/// Thread-safe.
///
/// # Safety
/// `report` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ul_status_report_init(
    report: *mut ul_status_report,
    struct_size: usize,
) -> ul_result {
    guard("ul_status_report_init", || {
        if report.is_null() {
            return Err(Failure::null("ul_status_report_init", "report"));
        }
        let ours = std::mem::size_of::<ul_status_report>();
        if struct_size < ours {
            return Err(Failure::invalid(format!(
                "ul_status_report_init: struct_size is {struct_size}, but ul_status_report has {ours} bytes in this library: pass sizeof(ul_status_report)"
            )));
        }
        // SAFETY: `struct_size` writable bytes, by the caller's guarantee; all-zero is a
        // valid ul_status_report (NULL pointers, zero counts, false flags).
        unsafe {
            std::ptr::write_bytes(report.cast::<u8>(), 0, struct_size);
            report.cast::<usize>().write(struct_size);
        }
        Ok(())
    })
}

/// Look at every lock path of `locks` (its `paths` and `legacy`; the other fields are
/// ignored) and every hand-over signal of `handover` (NULL: `handover-complete` beside the
/// first explicit lock path, else the Supervisor's default signals: the same choice as
/// `lockctl status`), without changing anything, and fill
/// the caller-owned `*report` (see `ul_status_report`): the same content as
/// `lockctl status --json`. A path that cannot be inspected is reported in its entry's
/// `error`, not as a failure.
///
/// Always sets the "out" counts of `*report`. Returns `UL_OK`; `UL_ERR_BUFFER_TOO_SMALL`
/// when `lock_capacity < lock_count`, `handover_capacity < handover_count` or
/// `strings_capacity < strings_needed` (then no entry is written: enlarge and call again;
/// calling first with all capacities 0 asks for the sizes); `UL_ERR_NULL_ARGUMENT` (also
/// for a NULL array or buffer with a non-zero capacity); `UL_ERR_INVALID_ARGUMENT`.
/// Every string of the report lives in `report->strings`; nothing to free. Thread-safe.
///
/// # Safety
/// `locks`, `handover`, `report` must be NULL or valid; the arrays and the buffer in
/// `*report` must have the capacities it states.
#[no_mangle]
pub unsafe extern "C" fn ul_status(
    locks: *const ul_options,
    handover: *const ul_handover_options,
    report: *mut ul_status_report,
) -> ul_result {
    const F: &str = "ul_status";
    guard(F, || {
        // SAFETY: forwarded from the caller.
        let (lo, _) = unsafe { lock_options(locks, F, "locks") }?;
        // NULL: the signal core chooses for these lock paths (beside the first explicit
        // one, else the Supervisor's defaults), as `lockctl status` and every binding.
        let ho = if handover.is_null() {
            lockcore::HandoverOptions::for_locks(&lo)
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { handover_options(handover, F, "handover") }?
        };
        if report.is_null() {
            return Err(Failure::null(F, "report"));
        }
        // SAFETY: checked non-NULL; the first field is `size_t struct_size`.
        let size = unsafe { report.cast::<usize>().read() };
        let ours = std::mem::size_of::<ul_status_report>();
        if size < ours {
            return Err(Failure::invalid(format!(
                "{F}: report->struct_size is {size}, but ul_status_report has {ours} bytes in this library: initialise it with ul_status_report_init(&report, sizeof report)"
            )));
        }
        // SAFETY: a valid, writable ul_status_report of at least our size.
        let rep = unsafe { &mut *report };
        for (ptr_null, cap, name) in [
            (rep.locks.is_null(), rep.lock_capacity, "report->locks"),
            (
                rep.handover.is_null(),
                rep.handover_capacity,
                "report->handover",
            ),
            (
                rep.strings.is_null(),
                rep.strings_capacity,
                "report->strings",
            ),
        ] {
            if ptr_null && cap > 0 {
                return Err(Failure::null(
                    F,
                    &format!("{name} (with a capacity of {cap})"),
                ));
            }
        }

        let st = lockcore::status(&lo, &ho);
        let mut measure = StringArena::measure();
        for p in &st.locks {
            let _ = fill_path(p, &mut measure);
        }
        for h in &st.handover {
            let _ = measure.put(path_bytes(&h.path));
        }
        rep.schema = st.schema;
        rep.lock_count = st.locks.len();
        rep.handover_count = st.handover.len();
        rep.strings_needed = measure.needed();
        rep.blocks_app_updates = st.blocks_app_updates;
        rep.blocks_host_reboot = st.blocks_host_reboot;
        if rep.lock_capacity < rep.lock_count
            || rep.handover_capacity < rep.handover_count
            || rep.strings_capacity < rep.strings_needed
        {
            return Err(Failure::Binding(
                ul_result::UL_ERR_BUFFER_TOO_SMALL,
                format!(
                    "{F}: the report needs {} lock entries, {} hand-over entries and {} string bytes, but has room for {}, {} and {}; enlarge report->locks, report->handover or report->strings and call again",
                    rep.lock_count, rep.handover_count, rep.strings_needed,
                    rep.lock_capacity, rep.handover_capacity, rep.strings_capacity
                ),
            ));
        }
        // SAFETY: the caller's buffer of `strings_capacity` bytes, enough for everything.
        let mut arena = unsafe { StringArena::new(rep.strings, rep.strings_capacity) };
        for (i, p) in st.locks.iter().enumerate() {
            let entry = fill_path(p, &mut arena);
            // SAFETY: `i < lock_count <= lock_capacity` entries of the caller's array.
            unsafe { rep.locks.add(i).write(entry) };
        }
        for (i, h) in st.handover.iter().enumerate() {
            let entry = ul_handover_status {
                path: arena.put(path_bytes(&h.path)),
                pending: h.pending,
            };
            // SAFETY: `i < handover_count <= handover_capacity` entries.
            unsafe { rep.handover.add(i).write(entry) };
        }
        Ok(())
    })
}

/// The name of a lock state as in `lockctl status --json`: "free", "held-by-supervisor",
/// "held-by-app", "stale", "foreign", "changing", "update-waiting", "unknown" (also for
/// other numbers). Static
/// string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn ul_state_name(state: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        match state {
            0 => c"free",
            1 => c"held-by-supervisor",
            2 => c"held-by-app",
            3 => c"stale",
            4 => c"foreign",
            5 => c"changing",
            6 => c"unknown",
            7 => c"update-waiting",
            _ => c"unknown",
        }
        .as_ptr()
    })
}

/// The name of a foreign kind as in `lockctl status --json`: "empty-file",
/// "lockfile-format", "unknown-content", "directory", "symlink", "fifo", "socket",
/// "device"; "none" for `UL_FOREIGN_NONE`; "unknown" for other numbers. Static string:
/// never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn ul_foreign_kind_name(kind: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        match kind {
            0 => c"none",
            1 => c"empty-file",
            2 => c"lockfile-format",
            3 => c"unknown-content",
            4 => c"directory",
            5 => c"symlink",
            6 => c"fifo",
            7 => c"socket",
            8 => c"device",
            _ => c"unknown",
        }
        .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockcore::Holder;

    #[test]
    fn state_names_match_the_core() {
        let name = |s: ul_lock_state| unsafe {
            std::ffi::CStr::from_ptr(ul_state_name(s as c_int))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            name(ul_lock_state::UL_STATE_HELD_BY_SUPERVISOR),
            Holder::Supervisor.state_name()
        );
        assert_eq!(
            name(ul_lock_state::UL_STATE_CHANGING),
            Holder::Changing.state_name()
        );
        assert_eq!(
            name(ul_lock_state::UL_STATE_UPDATE_WAITING),
            Holder::UpdateWaiting.state_name()
        );
        assert_eq!(name(ul_lock_state::UL_STATE_FREE), "free");
    }
}
