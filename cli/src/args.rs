//! Command-line syntax of `lockctl`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use update_lock::{HandoverOptions, LockOptions};

use crate::duration::{parse_duration, parse_timeout, Timeout};
use crate::handover_args::{parse_fd, FdSpec, RendezvousArgs, ServeArgs, TakeArgs};

/// Update locks for balena devices, correct for both the Supervisor (the lock file exists)
/// and the host OS update reboot (flock on updates.lock).
#[derive(Debug, Parser)]
#[command(name = "lockctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "Exit codes:
  0    success
  73   the lock is held by someone else (after any wait); (status) some path holds off
       application updates; the Supervisor's lockfile uses 73 too
  77   permission or uid problem (e.g. running as uid 65534)
  64   usage error or invalid path
  69   (handover take/serve/run) nothing was handed over; (device/update/reboot) the Supervisor
       API is not configured, unreachable, too slow or refused the key (the message says which)
  65   (release) the holder could not be proven to be lockctl's (nothing signalled or deleted)
  70   (rehearse) the rehearsal could not run (a missing tool, no namespaces), or
       lockctl-rehearse is not installed beside lockctl; (device/update/reboot) not built in
  74   a lock path could not be looked at: held or free is unknown (nothing was changed)
  75   (release) the lock was lost (taken over by the Supervisor or deleted); its holder ended
  1    anything else
  126/127  (run) the command could not be executed / was not found
  128+N    (run) the command died of signal N, or the wait was interrupted by signal N";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take the lock, run CMD, release when it exits; exits with CMD's status.
    Run {
        #[command(flatten)]
        lock: LockArgs,
        /// Hold the lock in shared mode: other shared holders of the app (other `run
        /// --shared` jobs, workers of the SDK in shared mode) hold it at the same time, and
        /// the last one out removes it. The Supervisor and the reboot still see it held.
        #[arg(long)]
        shared: bool,
        /// Say nothing while waiting for the lock (by default: who holds it, once when the
        /// wait starts and every 10 s, on stderr).
        #[arg(short, long)]
        quiet: bool,
        /// When the balena Supervisor tries to take the lock while CMD runs (an update is
        /// waiting), send SIG to CMD (`USR1`, `SIGTERM`, `15`, ...) besides the line printed
        /// on stderr, so it can finish early. Sent once per run.
        #[arg(long, value_name = "SIG", value_parser = parse_signal)]
        update_signal: Option<Signal>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Take the lock and keep it held in the background until `lockctl release`.
    Acquire {
        #[command(flatten)]
        lock: LockArgs,
        /// Hold it in shared mode (see `run --shared`); prints the holder's pid, which
        /// `lockctl release --pid` takes when several shared holders are running.
        #[arg(long)]
        shared: bool,
    },
    /// Release a lock taken by `lockctl acquire` (or clear one whose holder died).
    Release {
        #[command(flatten)]
        paths: PathArgs,
        /// End this `lockctl acquire` holder (the pid `acquire --shared` printed); needed
        /// when several shared holders are running.
        #[arg(long, value_name = "PID")]
        pid: Option<i32>,
    },
    /// Show every lock path as the Supervisor and the host OS reboot see it.
    Status {
        #[command(flatten)]
        paths: PathArgs,
        /// Hand-over signal path to show (repeatable; default: the Supervisor's).
        #[arg(long = "handover-path", value_name = "P")]
        handover_paths: Vec<PathBuf>,
        /// Print the stable JSON report (schema 1) instead of text.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// Print nothing; only the exit status says it (0 free, 73 held, 74 unknown).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Ask the Supervisor API for the device state: is an update pending or downloaded?
    /// (Needs the service label io.balena.features.supervisor-api.)
    Device {
        /// Print the device state as JSON.
        #[arg(long)]
        json: bool,
        /// How long the call may take (seconds, or e.g. 500ms).
        #[arg(long, default_value = "10", value_name = "DURATION", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Ask the Supervisor to check for an update now (POST /v1/update).
    Update {
        /// Override update locks: the Supervisor deletes the apps' lock files.
        #[arg(long)]
        force: bool,
        /// How long the call may take (seconds, or e.g. 500ms).
        #[arg(long, default_value = "10", value_name = "DURATION", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Ask the Supervisor to reboot the device (POST /v1/reboot); refused (exit 73) while an
    /// update lock is held, unless --force.
    Reboot {
        /// Override update locks.
        #[arg(long)]
        force: bool,
        /// How long the call may take (seconds, or e.g. 500ms).
        #[arg(long, default_value = "10", value_name = "DURATION", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Rehearse a Supervisor update of one service locally (see `lockctl rehearse --help`).
    ///
    /// Runs `lockctl-rehearse`, installed beside lockctl: the rehearsal (with its HTTP
    /// server and client) is not linked into the entrypoint binary.
    #[command(disable_help_flag = true)]
    Rehearse {
        /// The rehearsal's arguments, passed on unchanged.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Hand-over between two releases: take over, serve, or signal completion.
    Handover {
        #[command(subcommand)]
        action: Box<HandoverAction>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HandoverAction {
    /// Tell the Supervisor that the new release has taken over (create handover-complete).
    Complete {
        /// Signal path (repeatable; default: the Supervisor's, plus legacy names).
        #[arg(long = "path", value_name = "P")]
        paths: Vec<PathBuf>,
        /// Do not write the legacy resin-kill-me signals.
        #[arg(long)]
        no_legacy: bool,
    },
    /// New version: take over from the old one (or start fresh), then exec CMD with the
    /// inherited descriptors at 3.. (systemd socket-activation form) and the state.
    #[command(after_help = TAKE_HELP)]
    Take {
        #[command(flatten)]
        take: TakeArgs,
        /// Print what was inherited as one JSON line on stdout before exec'ing CMD.
        #[arg(long)]
        json: bool,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Old version: serve the hand-over of descriptors lockctl holds (with `-- CMD`, run CMD
    /// with them meanwhile) until a successor takes them over.
    #[command(after_help = SERVE_HELP)]
    Serve {
        #[command(flatten)]
        rendezvous: RendezvousArgs,
        /// A descriptor lockctl inherited, to hand over as LABEL (repeatable).
        #[arg(long = "fd", value_name = "LABEL=N", value_parser = parse_fd)]
        fds: Vec<FdSpec>,
        #[command(flatten)]
        serve: ServeArgs,
        /// The command to run with the descriptors (optional).
        #[arg(trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Both in one entrypoint: take over (or create the --listen listeners), run CMD with
    /// the descriptors, and serve them to the next version.
    #[command(after_help = RUN_HELP)]
    Run {
        #[command(flatten)]
        take: TakeArgs,
        #[command(flatten)]
        serve: ServeArgs,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Internal: place descriptors at 3.., set LISTEN_PID and exec CMD.
    #[command(name = "__exec", hide = true)]
    Exec {
        /// The descriptors to place at 3.., comma-separated, in order.
        #[arg(long, default_value = "")]
        place: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<OsString>,
    },
}

/// What `take` gives CMD, and its exit codes.
pub const TAKE_HELP: &str = "CMD gets:
  descriptors 3, 4, ...  the --listen labels first (in the order given: inherited, or created
                         when nobody handed them over), then every other inherited one
  LISTEN_FDS, LISTEN_FDNAMES (label:label), LISTEN_PID (CMD's pid: lockctl execs it)
  UPDATE_LOCK_HANDOVER   'taken' or 'none'
  UPDATE_LOCK_HANDOVER_STATE_FD  (taken) a memfd holding the old version's state, at offset 0
  UPDATE_LOCK_PREDECESSOR_RELEASE, _PID, _PROGRAM, _UID  (taken) who handed over
A --listen label the old version did not send is created here.

Exit codes (CMD replaces lockctl on success):
  64   usage error: bad --listen, duplicate label, something not a socket at the socket path
  69   the hand-over failed (the reason is in the message); CMD was not run
  1    anything else, e.g. a --listen address could not be bound
  126/127  CMD could not be executed / was not found";

/// How `serve` behaves, and its exit codes.
pub const SERVE_HELP: &str =
    "When a successor arrives: SIGTERM to CMD, wait at most --release-grace for it to exit,
read --state-file, hand the descriptors over (even if CMD still runs), then exit 0.
SIGTERM/SIGINT to lockctl do not stop serving (a device stops the old container right after
starting the new one): it serves --term-grace more seconds, then stops CMD and exits; a
second signal stops at once. A failed hand-over restarts nothing: lockctl reports it and
keeps serving. CMD gets the descriptors at 3.. with LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID.

Exit codes:
  0    handed over
  64   usage error: bad --fd, a descriptor that is not open, something not a socket at the
       socket path (never removed)
  69   nothing was handed over: nobody came before --timeout / --term-grace ran out, or
       another process already serves on the socket
  N    CMD exited on its own with status N (128+S for signal S) before anyone took over
  128+S  a second SIGTERM/SIGINT (S) stopped serving";

/// `run`'s exit codes.
pub const RUN_HELP: &str =
    "Exit codes: as `take` until CMD runs, then as `serve` (0 once handed over to the next
version, CMD's status if it exits on its own, 69 if nobody took over in time).";

/// Which lock paths.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Lock path (repeatable; default: $BALENA_APP_LOCK_PATH, else /tmp/balena/updates.lock,
    /// plus /tmp/resin/resin-updates.lock).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<PathBuf>,
    /// Leave out the legacy /tmp/resin/resin-updates.lock.
    #[arg(long)]
    pub no_legacy: bool,
}

/// Which lock paths, and how to wait.
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    /// Wait at most SECS seconds (0 = try once, 'forever' = no limit; default forever).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, conflicts_with = "no_wait")]
    pub timeout: Option<Timeout>,
    /// Fail at once if the lock is held (same as --timeout 0).
    #[arg(long)]
    pub no_wait: bool,
    /// Do not take over locks left by dead holders.
    #[arg(long)]
    pub no_reclaim: bool,
    /// After the Supervisor was seen trying to take the lock (by this or an earlier lockctl
    /// of the app), wait at most this long while the lock is free, so the update gets in
    /// first ('60s', '500ms', or seconds; 0 never yields; default
    /// $UPDATE_LOCK_YIELD_TO_UPDATES seconds, else 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub yield_to_updates: Option<Duration>,
}

impl PathArgs {
    pub fn options(&self) -> LockOptions {
        LockOptions::new()
            .paths(self.paths.clone())
            .legacy(!self.no_legacy)
    }
}

impl LockArgs {
    pub fn options(&self) -> LockOptions {
        let timeout = if self.no_wait {
            Some(Duration::ZERO)
        } else {
            self.timeout.and_then(|t| t.0)
        };
        let opts = self
            .paths
            .options()
            .timeout(timeout)
            .reclaim_stale(!self.no_reclaim);
        match self.yield_to_updates {
            Some(y) => opts.yield_to_updates(y),
            None => opts,
        }
    }
}

pub fn handover_options(paths: &[PathBuf], no_legacy: bool) -> HandoverOptions {
    HandoverOptions::new()
        .paths(paths.to_vec())
        .legacy(!no_legacy)
}

/// A signal by name (`USR1`, `SIGUSR1`, case-insensitive) or number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("'{s}' is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("'{s}' is not a signal name (USR1, TERM, INT, HUP, ...)"))
}
