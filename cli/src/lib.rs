//! What `lockctl` shares with its companion binaries (`lockctl-rehearse`): the one-line
//! failure report with its exit codes, duration arguments, and output that never panics on a
//! closed pipe. The commands themselves live in the `lockctl` binary.

/// `eprintln!` that ignores a closed stderr instead of panicking: lockctl holds locks and
/// serves hand-overs, and must not die (exit 101) because nobody reads its log any more.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout (e.g. `lockctl status | head -1`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod duration;
pub mod failure;
