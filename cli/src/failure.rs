//! How `lockctl` fails: one line on stderr saying what happened and what to do, and a
//! documented exit status.

use update_lock::Error;

pub const EXIT_USAGE: i32 = 64;
pub const EXIT_OTHER: i32 = 1;

/// Report a command-line syntax error on one line and return [`EXIT_USAGE`].
pub fn usage(e: &clap::Error) -> i32 {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ");
    say!("lockctl: error[usage]: {first}; see `lockctl --help` (or `lockctl COMMAND --help`)");
    EXIT_USAGE
}

/// A failure to report.
#[derive(Debug)]
pub enum Failure {
    /// An error from the core library.
    Lock(Error),
    /// Something else, with its exit status.
    Other { code: i32, message: String },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lock(e)
    }
}

impl Failure {
    pub fn other(code: i32, message: impl Into<String>) -> Failure {
        Failure::Other {
            code,
            message: message.into(),
        }
    }

    /// Print the one-line message and return the exit status.
    pub fn report(self) -> i32 {
        match self {
            Failure::Lock(e) => {
                say!("lockctl: error[{}]: {e}", e.code());
                e.code().exit_status()
            }
            Failure::Other { code, message } => {
                say!("lockctl: {message}");
                code
            }
        }
    }
}
