//! `lockctl-rehearse` (run as `lockctl rehearse`): a local rehearsal of the Supervisor's
//! update of one service, faithful to what the device does (see `docs/rehearse.md`). A
//! binary of its own, so that its HTTP server and client stay out of `lockctl`, the binary
//! that runs as PID 1 in users' containers.

#[macro_use]
extern crate lockctl;

mod api_server;
mod args;
mod cleanup;
mod config;
mod monitor;
mod plan;
mod probe;
mod reboot;
mod render;
mod report;
mod summary;
mod supervisor_lock;
mod timeline;
mod update;
mod version;

use std::time::Duration;

use serde::Serialize;

use crate::args::RehearseArgs;
use crate::config::{on_path, Config, EXIT_CANNOT_RUN};
use crate::plan::Strategy;
use crate::report::{Report, REPORT_SCHEMA};
use lockctl::failure::{Failure, EXIT_USAGE};

/// The `--compare --json` document.
#[derive(Serialize)]
struct Comparison<'a> {
    schema: u32,
    compare: bool,
    runs: &'a [Report],
    ok: bool,
}

/// The command line: `lockctl rehearse` passes its arguments on unchanged.
#[derive(clap::Parser)]
#[command(
    name = "lockctl rehearse",
    bin_name = "lockctl rehearse",
    version,
    about = "Rehearse a Supervisor update of one service locally: the old version, the update with one strategy (or all four with --compare), the locks, hand-over, downtime.",
    after_help = args::REHEARSE_HELP,
    args_override_self = true
)]
struct Cli {
    #[command(flatten)]
    args: RehearseArgs,
}

fn main() {
    use clap::Parser as _;
    lockctl::failure::main_with(Cli::try_parse, |cli: Cli| rehearse(cli.args))
}

/// Run the rehearsal.
fn rehearse(a: RehearseArgs) -> Result<i32, Failure> {
    let cfg = config(&a)?;
    preflight(&cfg)?;
    cleanup::on_signals().map_err(|e| {
        Failure::other(
            EXIT_CANNOT_RUN,
            format!("could not set up signal handling: {e}"),
        )
    })?;
    let result = run_all(&a, &cfg);
    cleanup::everything();
    let reports = result?;
    let ok = reports.iter().all(|r| r.ok);
    write_pictures(&a, &reports)?;
    let json = if a.compare {
        serde_json::to_string_pretty(&Comparison {
            schema: REPORT_SCHEMA,
            compare: true,
            runs: &reports,
            ok,
        })
    } else {
        serde_json::to_string_pretty(&reports[0])
    }
    .map_err(|e| Failure::other(1, format!("could not write the report: {e}")))?;
    if let Some(p) = &a.report {
        std::fs::write(p, format!("{json}\n"))
            .map_err(|e| Failure::other(1, format!("could not write {}: {e}", p.display())))?;
    }
    if a.json {
        out!("{json}");
    } else if a.compare {
        out!("{}", render::compare_table(&reports));
        for r in &reports {
            for p in &r.problems {
                out!("{}: problem: {p}", r.strategy);
            }
        }
    } else {
        out!("{}", render::text_summary(&reports[0]));
    }
    Ok(if ok { 0 } else { 1 })
}

fn run_all(a: &RehearseArgs, cfg: &Config) -> Result<Vec<Report>, Failure> {
    if a.compare {
        let mut v = Vec::new();
        for s in Strategy::ALL {
            let mut c = cfg.clone();
            c.requested_strategy = s.name().into();
            v.push(update::rehearse(&c, s, false)?);
        }
        Ok(v)
    } else {
        let (s, fell_back) = Strategy::from_label(&a.strategy);
        Ok(vec![update::rehearse(cfg, s, fell_back)?])
    }
}

fn write_pictures(a: &RehearseArgs, reports: &[Report]) -> Result<(), Failure> {
    if let Some(p) = &a.svg {
        std::fs::write(p, render::svg(reports))
            .map_err(|e| Failure::other(1, format!("could not write {}: {e}", p.display())))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, render::html(reports))
            .map_err(|e| Failure::other(1, format!("could not write {}: {e}", p.display())))?;
    }
    Ok(())
}

fn usage(msg: String) -> Failure {
    Failure::other(EXIT_USAGE, format!("error[usage]: {msg}"))
}

fn config(a: &RehearseArgs) -> Result<Config, Failure> {
    for (name, cmd) in [("--old", &a.old), ("--new", &a.new)] {
        if cmd.trim().is_empty() {
            return Err(usage(format!(
                "{name} is empty: give the command that runs that version"
            )));
        }
    }
    let root = nix::unistd::geteuid().is_root();
    let download = match (a.download, a.download_rate) {
        (Some(d), _) => d,
        (None, Some(0)) => return Err(usage("--download-rate 0 would never finish".into())),
        (None, Some(rate)) => Duration::from_secs_f64(a.image_size as f64 / rate as f64),
        (None, None) => Duration::from_secs(1),
    };
    if let Some(p) = &a.probe {
        // Validate early (a relative file: path is resolved per run).
        probe::ProbeKind::parse(p, std::path::Path::new("/")).map_err(usage)?;
    }
    if let (Some(d), true) = (a.expect_max_downtime, a.probe.is_none()) {
        return Err(usage(format!(
            "--expect-max-downtime {d} needs --probe: downtime is what the probe measures"
        )));
    }
    Ok(Config {
        old: a.old.clone(),
        new: a.new.clone(),
        requested_strategy: a.strategy.clone(),
        documented: a.supervisor == "documented",
        handover_timeout: Duration::from_millis(a.handover_timeout),
        stop_grace: a.stop_grace,
        force: a.force,
        probe: a.probe.clone(),
        probe_interval: a.probe_interval.max(Duration::from_millis(1)),
        probe_timeout: a.probe_timeout,
        ready_timeout: a.ready_timeout,
        update_after: a.update_after,
        observe: a.observe,
        download,
        old_image: a.old_image_size.unwrap_or(a.image_size),
        new_image: a.image_size,
        poll_interval: a.poll_interval.max(Duration::from_millis(1)),
        reboot: a.reboot,
        reboot_poll: a.reboot_poll.max(Duration::from_millis(1)),
        timeout: a.timeout,
        namespaced: root && !a.no_namespaces,
        as_65534: root,
        service_dir: a.service_dir.clone(),
        live: !a.quiet,
        expect_max_downtime: a.expect_max_downtime,
        expect_max_blocked: a.expect_max_blocked,
        expect_handover: a.expect_handover,
    })
}

/// The programs the device would run must be here; say how to get them.
fn preflight(cfg: &Config) -> Result<(), Failure> {
    let mut need = vec![("lockfile", "procmail (the Supervisor's lockfile)")];
    if cfg.as_65534 {
        need.push(("setpriv", "util-linux (setpriv)"));
    }
    if cfg.namespaced {
        need.push(("unshare", "util-linux (unshare)"));
    }
    if cfg.reboot {
        need.push(("flock", "util-linux (flock, what safe_reboot runs)"));
    }
    for (prog, pkg) in need {
        if !on_path(prog) {
            return Err(Failure::other(
                EXIT_CANNOT_RUN,
                format!(
                    "rehearse needs `{prog}` from {pkg}: install it (Debian: apt-get install {})",
                    pkg.split(' ').next().unwrap_or(pkg)
                ),
            ));
        }
    }
    if cfg.namespaced {
        let ok = std::process::Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--mount-proc", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(Failure::other(
                EXIT_CANNOT_RUN,
                "cannot create mount and PID namespaces here (unshare failed): run with --no-namespaces to rehearse with plain processes",
            ));
        }
    }
    if !cfg.as_65534 {
        say!("lockctl rehearse: not root: the Supervisor's lock is taken as this user, not uid 65534, and the versions run as plain processes (run as root for the faithful rehearsal)");
    }
    Ok(())
}
