//! The tests of `lockctl` as users run it (the real binary, the real readers, real uids),
//! one module per area, linked as one test binary.

mod acquire_release;
mod closed_output;
mod common;
mod container;
mod handover_cmd;
mod hardening;
mod rehearse;
mod run;
mod status;
mod supervisor_api;
mod users;
