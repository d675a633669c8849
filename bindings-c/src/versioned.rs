//! Caller-owned structs versioned by `struct_size` (their first field).
//!
//! Fields are only ever added at the end. Each struct lists its published versions: the
//! `sizeof` a caller's header gave it, and how many bytes of it that version's fields
//! cover (the rest is padding, never read). The rules, the same for every struct:
//! * the size of an older version: its fields are read, every newer field takes its
//!   default (a program built against an older header keeps working);
//! * this library's size: everything is read;
//! * larger (a newer header): accepted when every byte this library does not know is zero
//!   (a newer field left at its default), refused otherwise: the caller asked for something
//!   this library cannot do;
//! * any other size: refused, naming the `_init` call to make.

use crate::error::Failure;

/// A struct versioned by `struct_size`.
pub(crate) trait Versioned: Copy {
    /// Its C name, for messages.
    const NAME: &'static str;
    /// `(sizeof, bytes its fields cover)` of every published version, oldest first; the
    /// last is this library's.
    const VERSIONS: &'static [(usize, usize)];
    /// The defaults `NAME_init` fills in (its `struct_size` is overwritten).
    fn defaults() -> Self;
}

/// The bytes of `T` that a caller's `size` covers, or why that size is refused.
fn covered<T: Versioned>(size: usize, func: &str, arg: &str) -> Result<usize, Failure> {
    let ours = std::mem::size_of::<T>();
    if size >= ours {
        return Ok(ours);
    }
    match T::VERSIONS.iter().find(|(sizeof, _)| *sizeof == size) {
        Some((_, fields)) => Ok(*fields),
        None => {
            let known: Vec<String> = T::VERSIONS.iter().map(|(s, _)| s.to_string()).collect();
            Err(Failure::invalid(format!(
                "{func}: {arg}struct_size is {size}, which is not the size of any version of {name} (known: {}): initialise it with {name}_init(p, sizeof *p)",
                known.join(", "),
                name = T::NAME,
            )))
        }
    }
}

/// Fill a caller's struct of `struct_size` bytes with the defaults of the version that size
/// names (a larger struct gets its unknown tail zeroed) and set its `struct_size`.
///
/// # Safety
/// `p` is non-NULL and points to `struct_size` writable bytes.
pub(crate) unsafe fn init<T: Versioned>(p: *mut T, struct_size: usize) -> Result<(), Failure> {
    let func = format!("{}_init", T::NAME);
    let n = covered::<T>(struct_size, &func, "")?;
    let value = T::defaults();
    // SAFETY: `struct_size` writable bytes; `n <= struct_size` and `n <= size_of::<T>()`.
    unsafe {
        std::ptr::write_bytes(p.cast::<u8>(), 0, struct_size);
        std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), p.cast::<u8>(), n);
        p.cast::<usize>().write(struct_size);
    }
    Ok(())
}

/// Read a caller's struct by the rules above.
///
/// # Safety
/// `p` is NULL or points to a struct whose first field is a `size_t struct_size` and that
/// has at least that many readable bytes.
pub(crate) unsafe fn read<T: Versioned>(p: *const T, func: &str, arg: &str) -> Result<T, Failure> {
    if p.is_null() {
        return Err(Failure::null(func, arg));
    }
    // SAFETY: every versioned struct starts with `size_t struct_size`.
    let size = unsafe { p.cast::<usize>().read() };
    let n = covered::<T>(size, func, &format!("{arg}->"))?;
    let ours = std::mem::size_of::<T>();
    if size > ours {
        // SAFETY: the caller's struct has `size` readable bytes.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if let Some(at) = tail.iter().position(|b| *b != 0) {
            return Err(Failure::invalid(format!(
                "{func}: {arg} sets a field this library does not know (byte {} of {size}; {} has {ours} bytes here): use a library at least as new as your header, or leave newer fields at their defaults",
                ours + at,
                T::NAME
            )));
        }
    }
    let mut value = T::defaults();
    // SAFETY: `n` bytes are readable from the caller and fit in `value`.
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), n);
    }
    Ok(value)
}

/// `(sizeof, bytes covered)` of a version whose last field is `$last` of type `$t`:
/// `sizeof` rounds the end of that field up to the struct's alignment.
macro_rules! version_ending_at {
    ($t:ty, $last:ident, $last_ty:ty) => {{
        let end = std::mem::offset_of!($t, $last) + std::mem::size_of::<$last_ty>();
        let align = std::mem::align_of::<$t>();
        (end.div_ceil(align) * align, end)
    }};
}
pub(crate) use version_ending_at;
