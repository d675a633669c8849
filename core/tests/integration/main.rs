//! The multi-process tests of the core crate, one module per area, linked as one test
//! binary. Child processes re-run this binary as `child_entry` with a role
//! (`UL_CHILD_ROLE`); see `common`.

mod async_api;
mod bad_input;
mod common;
mod crash;
mod exclusion;
mod handover;
mod hardening_removal_races;
mod ownership;
mod readers;
mod rendezvous;
mod shared;
#[cfg(feature = "supervisor-api")]
mod supervisor_api;
mod update_waiting;

/// Entry point of child processes (run through `common::child_command`).
#[test]
#[ignore = "entry point of child processes"]
fn child_entry() {
    match std::env::var("UL_CHILD_ROLE").as_deref() {
        Ok("ho-serve") => rendezvous::role_serve(),
        Ok("ho-take") => rendezvous::role_take(),
        Ok("swapper") => hardening_removal_races::swapper(),
        _ => common::child_entry(),
    }
}
