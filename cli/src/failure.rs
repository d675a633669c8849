//! How `lockctl` fails: one line on stderr saying what happened and what to do, and a
//! documented exit status.

use update_lock::Error;

pub const EXIT_USAGE: i32 = 64;
pub const EXIT_OTHER: i32 = 1;
/// A lock path could not be looked at (EX_IOERR): whether it is held is unknown.
pub const EXIT_UNKNOWN: i32 = update_lock::ErrorCode::Unknown.exit_status();
/// `release`: the record names a holder that could not be proven to hold the lock
/// (EX_DATAERR); nothing was signalled or deleted.
pub const EXIT_UNPROVEN: i32 = 65;
/// `release`: the lock had been taken over (the Supervisor's override) before release;
/// the holder was ended and nothing of the new owner's was touched (EX_TEMPFAIL).
pub const EXIT_LOST: i32 = update_lock::ErrorCode::Lost.exit_status();

/// Report a command-line syntax error on one line (what is wrong, with the arguments it
/// names, and the command's usage) and return [`EXIT_USAGE`].
pub fn usage(e: &clap::Error) -> i32 {
    let text = e.render().to_string();
    let usage_line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| format!("; usage: {u}"))
        .unwrap_or_default();
    // The first line, with what it announces ("...not provided:" and the list below it).
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let mut first = lines
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ")
        .to_string();
    if first.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        first = format!("{first} {}", listed.join(", "));
    }
    say!("lockctl: error[usage]: {first}{usage_line}; see `lockctl --help` (or `lockctl COMMAND --help`)");
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

/// The whole of a command-line `main`: parse with `parse`, run with `run`, report a failure
/// in one line, and exit with the documented status. `--help`/`--version` succeed; a
/// missing command prints the help as a usage error (64).
pub fn main_with<C>(
    parse: impl FnOnce() -> Result<C, clap::Error>,
    run: impl FnOnce(C) -> Result<i32, Failure>,
) -> ! {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            std::process::exit(EXIT_USAGE);
        }
        Err(e) => std::process::exit(usage(&e)),
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(f) => f.report(),
    };
    std::process::exit(code)
}
