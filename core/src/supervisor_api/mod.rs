//! The Supervisor's local HTTP API (`io.balena.features.supervisor-api`): is an update
//! waiting, trigger an update or a reboot, and an update lock that lets an update in only at
//! a safe point.

//!
//! The client (and its HTTP dependency) is compiled only with the `supervisor-api` feature;
//! the failure reasons are always there, as every binding's error codes are.

#[cfg(feature = "supervisor-api")]
mod client;
#[cfg(feature = "supervisor-api")]
mod device;
mod failure;
#[cfg(feature = "supervisor-api")]
mod gate;

#[cfg(feature = "supervisor-api")]
pub use client::{app_id_from_env, SupervisorApi, DEFAULT_API_TIMEOUT};
#[cfg(feature = "supervisor-api")]
pub use device::DeviceState;
pub use failure::ApiFailure;
#[cfg(feature = "supervisor-api")]
pub use gate::{SafePoint, UpdateGate, DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE_TIMEOUT};
