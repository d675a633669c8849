//! Writing strings into caller-owned buffers.

use std::ffi::c_char;

/// Copy `src` into `buf` (`len` bytes) as a NUL-terminated string, cut at a UTF-8 character
/// boundary if it does not fit; returns `src.len()`. Nothing is written when `buf` is NULL
/// or `len` is 0.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
pub(crate) unsafe fn copy_truncated(src: &[u8], buf: *mut c_char, len: usize) -> usize {
    if buf.is_null() || len == 0 {
        return src.len();
    }
    let mut n = src.len().min(len - 1);
    if n < src.len() {
        // Do not cut a multi-byte character: back up to the start of the cut one.
        while n > 0 && (src[n] & 0xC0) == 0x80 {
            n -= 1;
        }
    }
    // SAFETY: `n < len` bytes fit, plus the NUL at index `n < len`.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
    }
    src.len()
}

/// A bump allocator over a caller's string buffer, or a measuring pass without a buffer.
pub(crate) struct StringArena {
    buf: *mut c_char,
    cap: usize,
    used: usize,
    needed: usize,
}

impl StringArena {
    /// An arena over `cap` bytes at `buf`.
    ///
    /// # Safety
    /// `buf` must be NULL (then `cap` is treated as 0) or point to `cap` writable bytes
    /// that stay valid while the arena is used.
    pub(crate) unsafe fn new(buf: *mut c_char, cap: usize) -> StringArena {
        StringArena {
            buf,
            cap: if buf.is_null() { 0 } else { cap },
            used: 0,
            needed: 0,
        }
    }

    /// An arena that only counts.
    pub(crate) fn measure() -> StringArena {
        StringArena {
            buf: std::ptr::null_mut(),
            cap: 0,
            used: 0,
            needed: 0,
        }
    }

    /// Bytes needed so far (every string plus its NUL).
    pub(crate) fn needed(&self) -> usize {
        self.needed
    }

    /// Store `s` NUL-terminated; the pointer to it, or NULL if it does not fit (or when
    /// measuring). A NUL byte inside `s` (impossible for paths, which core validates)
    /// would simply end the C string early.
    pub(crate) fn put(&mut self, s: &[u8]) -> *const c_char {
        self.needed = self.needed.saturating_add(s.len().saturating_add(1));
        let room = self.cap - self.used;
        if self.buf.is_null() || s.len() >= room {
            return std::ptr::null();
        }
        // SAFETY: `used + s.len() + 1 <= cap` bytes of the caller's buffer.
        unsafe {
            let dst = self.buf.add(self.used);
            std::ptr::copy_nonoverlapping(s.as_ptr(), dst.cast::<u8>(), s.len());
            dst.add(s.len()).write(0);
            self.used += s.len() + 1;
            dst
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_char_boundaries_and_terminates() {
        let msg = "ab\u{e9}cd".as_bytes(); // é is 2 bytes: a b C3 A9 c d
        let mut buf = [b'#' as c_char; 8];
        for (len, want) in [
            (1, ""),
            (2, "a"),
            (3, "ab"),
            (4, "ab"),
            (5, "ab\u{e9}"),
            (7, "ab\u{e9}cd"),
        ] {
            buf.fill(b'#' as c_char);
            let n = unsafe { copy_truncated(msg, buf.as_mut_ptr(), len) };
            assert_eq!(n, msg.len());
            let got = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            assert_eq!(got.to_str().unwrap(), want, "len {len}");
            assert_eq!(buf[len], b'#' as c_char, "wrote past len {len}");
        }
        assert_eq!(
            unsafe { copy_truncated(msg, std::ptr::null_mut(), 0) },
            msg.len()
        );
    }

    #[test]
    fn arena_counts_and_refuses_overflow() {
        let mut buf = [0 as c_char; 6];
        let mut a = unsafe { StringArena::new(buf.as_mut_ptr(), buf.len()) };
        assert!(!a.put(b"abc").is_null());
        assert!(a.put(b"de").is_null());
        assert!(!a.put(b"d").is_null());
        assert_eq!(a.needed(), 4 + 3 + 2);
        let mut m = StringArena::measure();
        assert!(m.put(b"xyz").is_null());
        assert_eq!(m.needed(), 4);
    }
}
