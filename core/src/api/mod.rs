//! The Supervisor's local HTTP API (`io.balena.features.supervisor-api`): is an update
//! waiting, trigger an update or a reboot, and an update lock that lets an update in only at
//! a safe point.

mod client;
mod device;
mod failure;
mod gate;

pub use client::{SupervisorApi, DEFAULT_API_TIMEOUT};
pub use device::DeviceState;
pub use failure::ApiFailure;
pub use gate::{SafePoint, UpdateGate, DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE_TIMEOUT};
