//! `lockctl`: update locks for shell scripts and container entrypoints.

#[macro_use]
extern crate lockctl;

mod acquire_cmd;
#[cfg(feature = "supervisor-api")]
mod api_cmd;
#[cfg(not(feature = "supervisor-api"))]
#[path = "api_cmd_absent.rs"]
mod api_cmd;
mod args;
mod companion;
mod handover;
mod handover_args;
mod handover_serve;
mod handover_take;
mod listen_fds;
mod run;
mod serve_child;
mod serve_events;
mod signals;
mod status_cmd;
mod tcp_listen;

use clap::Parser;

use lockctl::{duration, failure};

use crate::args::{Cli, Command};
use crate::failure::Failure;

fn main() {
    failure::main_with(Cli::try_parse, |cli: Cli| dispatch(cli.command))
}

fn dispatch(command: Command) -> Result<i32, Failure> {
    match command {
        Command::Run {
            lock,
            shared,
            quiet,
            update_signal,
            command,
        } => {
            let mut opts = lock.options().shared(shared);
            if !quiet {
                opts = opts.on_wait(update_lock::DEFAULT_WAIT_REPORT, |p| {
                    say!("lockctl: {}", p.describe())
                });
            }
            run::run(&opts, &command, update_signal)
        }
        Command::Acquire { lock, shared } => acquire_cmd::acquire(&lock.options().shared(shared)),
        Command::Release { paths, pid } => acquire_cmd::release(&paths.options(), pid),
        Command::Status {
            paths,
            handover_paths,
            json,
            quiet,
        } => {
            // Without signal paths: the one core chooses for these lock paths.
            let locks = paths.options();
            let handover = if handover_paths.is_empty() {
                update_lock::HandoverOptions::for_locks(&locks)
            } else {
                args::handover_options(&handover_paths, false)
            };
            status_cmd::status(&locks, &handover, json, quiet)
        }
        Command::Handover { action } => handover::dispatch(*action),
        Command::Rehearse { args } => companion::exec("lockctl-rehearse", &args),
        Command::Device { json, timeout } => api_cmd::device(json, timeout),
        Command::Update { force, timeout } => api_cmd::update(force, timeout),
        Command::Reboot { force, timeout } => api_cmd::reboot(force, timeout),
    }
}
