//! Why a call to the Supervisor API failed, as a stable reason.

use std::fmt;

/// The reason of an [`Error::Api`](crate::Error::Api). Stable strings, shared by every binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiFailure {
    /// No address or key in the environment: not on a device, or the service lacks the
    /// `io.balena.features.supervisor-api` label.
    NotConfigured,
    /// Nobody answers at the address (connection refused, no route, bad address).
    Unreachable,
    /// The Supervisor did not answer within the call's timeout.
    Timeout,
    /// The key was refused (HTTP 401 or 403).
    Unauthorized,
    /// Another HTTP error status.
    HttpStatus,
    /// The answer could not be understood.
    BadResponse,
}

impl ApiFailure {
    /// Every reason, in a stable order.
    pub const ALL: [ApiFailure; 6] = [
        ApiFailure::NotConfigured,
        ApiFailure::Unreachable,
        ApiFailure::Timeout,
        ApiFailure::Unauthorized,
        ApiFailure::HttpStatus,
        ApiFailure::BadResponse,
    ];

    /// The stable string, e.g. `"not-configured"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFailure::NotConfigured => "not-configured",
            ApiFailure::Unreachable => "unreachable",
            ApiFailure::Timeout => "timeout",
            ApiFailure::Unauthorized => "unauthorized",
            ApiFailure::HttpStatus => "http-status",
            ApiFailure::BadResponse => "bad-response",
        }
    }

    /// What to do about it.
    pub fn next_step(self) -> &'static str {
        match self {
            ApiFailure::NotConfigured => {
                "add the label io.balena.features.supervisor-api: '1' to the service (the Supervisor then sets BALENA_SUPERVISOR_ADDRESS and BALENA_SUPERVISOR_API_KEY); off a device, `lockctl rehearse` serves the API"
            }
            ApiFailure::Unreachable => {
                "check BALENA_SUPERVISOR_ADDRESS; a service on a bridge network reaches the Supervisor only with the supervisor-api label (host networking uses 127.0.0.1:48484)"
            }
            ApiFailure::Timeout => "the Supervisor may be busy applying an update: try again later or give the call a longer timeout",
            ApiFailure::Unauthorized => {
                "the API key was refused: use BALENA_SUPERVISOR_API_KEY as the Supervisor sets it (it changes when the Supervisor restarts)"
            }
            ApiFailure::HttpStatus => "see the Supervisor's answer above; the Supervisor's log has more",
            ApiFailure::BadResponse => "the address may not be a balena Supervisor",
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
