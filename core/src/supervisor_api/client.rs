//! A small client of the Supervisor's local HTTP API, on `ureq` (no hand-written HTTP).
//! The key travels in the `Authorization: Bearer` header, never in a URL, and never appears
//! in an error message or in `Debug` output.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::device::DeviceState;
use super::failure::ApiFailure;
use crate::error::{Error, Result};

/// How long one call may take unless told otherwise.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the Supervisor tells a service its API address (legacy name second).
const ADDRESS_VARS: [&str; 2] = ["BALENA_SUPERVISOR_ADDRESS", "RESIN_SUPERVISOR_ADDRESS"];
/// Where it puts the key.
const KEY_VARS: [&str; 2] = ["BALENA_SUPERVISOR_API_KEY", "RESIN_SUPERVISOR_API_KEY"];

/// A client of the Supervisor API.
///
/// ```
/// use update_lock::{ApiFailure, ErrorCode, SupervisorApi};
/// // Off a device nothing is configured, and the error says what to do.
/// # std::env::remove_var("BALENA_SUPERVISOR_ADDRESS"); std::env::remove_var("RESIN_SUPERVISOR_ADDRESS");
/// let e = SupervisorApi::from_env().unwrap_err();
/// assert_eq!(e.code(), ErrorCode::Api);
/// assert_eq!(e.api_failure(), Some(ApiFailure::NotConfigured));
/// assert!(e.to_string().contains("io.balena.features.supervisor-api"));
/// ```
#[derive(Clone)]
pub struct SupervisorApi {
    base: String,
    key: String,
    timeout: Duration,
    agent: ureq::Agent,
}

impl fmt::Debug for SupervisorApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorApi")
            .field("address", &self.base)
            .field("key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.trim().is_empty())
}

/// No connection pool: one fresh loopback connection per call. The Supervisor restarts
/// during updates (a pooled connection would be stale), and a pooled keep-alive connection
/// to a server that writes headers and body separately waits out the peer's delayed ACK
/// (40 ms a call, measured in `bench/api.sh`).
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
}

impl SupervisorApi {
    /// A client for `address` (e.g. `http://127.0.0.1:48484`) with `key`.
    pub fn new(address: &str, key: &str) -> Result<SupervisorApi> {
        let base = address.trim().trim_end_matches('/').to_string();
        let rest = base.strip_prefix("http://").unwrap_or("");
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err(Error::Api {
                call: "configure".into(),
                reason: ApiFailure::NotConfigured,
                detail: format!("'{base}' is not an http:// address of the Supervisor"),
            });
        }
        // A key read from a file or a shell often carries a trailing newline: trim it. Any
        // other whitespace or control character cannot be part of a key (and would break
        // the header, which looked like an unreachable Supervisor).
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::Api {
                call: "configure".into(),
                reason: ApiFailure::NotConfigured,
                detail: "the API key is empty".into(),
            });
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Api {
                call: "configure".into(),
                reason: ApiFailure::NotConfigured,
                detail: "bad API key: it contains white space or control characters; pass the key exactly as the Supervisor gives it in BALENA_SUPERVISOR_API_KEY".into(),
            });
        }
        Ok(SupervisorApi {
            base,
            key: key.to_string(),
            timeout: DEFAULT_API_TIMEOUT,
            agent: agent(DEFAULT_API_TIMEOUT),
        })
    }

    /// The client the Supervisor configures for this service: `$BALENA_SUPERVISOR_ADDRESS`
    /// and `$BALENA_SUPERVISOR_API_KEY` (or their `RESIN_` names).
    pub fn from_env() -> Result<SupervisorApi> {
        let missing = |what: &str| {
            Error::Api {
            call: "configure".into(),
            reason: ApiFailure::NotConfigured,
            detail: format!("{what} is not set: not on a balena device, or the service has no Supervisor API access"),
        }
        };
        let address =
            first_env(&ADDRESS_VARS).ok_or_else(|| missing("BALENA_SUPERVISOR_ADDRESS"))?;
        let key = first_env(&KEY_VARS).ok_or_else(|| missing("BALENA_SUPERVISOR_API_KEY"))?;
        SupervisorApi::new(&address, &key)
    }

    /// A client from what the caller gives, the rest from the environment: `address` and
    /// `key` default (each on its own) to `$BALENA_SUPERVISOR_ADDRESS` and
    /// `$BALENA_SUPERVISOR_API_KEY` (or their `RESIN_` names). The bindings' constructors.
    pub fn configure(address: Option<&str>, key: Option<&str>) -> Result<SupervisorApi> {
        if address.is_none() && key.is_none() {
            return SupervisorApi::from_env();
        }
        let address = address
            .map(str::to_string)
            .or_else(|| first_env(&ADDRESS_VARS));
        let key = key.map(str::to_string).or_else(|| first_env(&KEY_VARS));
        SupervisorApi::new(
            address.as_deref().unwrap_or(""),
            key.as_deref().unwrap_or(""),
        )
    }

    /// The same client with another timeout for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> SupervisorApi {
        self.timeout = timeout;
        self.agent = agent(timeout);
        self
    }

    /// The address it calls.
    pub fn address(&self) -> &str {
        &self.base
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /ping`: is the Supervisor there?
    pub fn ping(&self) -> Result<()> {
        self.call("GET", "/ping", None).map(|_| ())
    }

    /// `GET /v1/device`: the device state, including whether an update is pending.
    pub fn device(&self) -> Result<DeviceState> {
        let call = "GET /v1/device";
        let body = self.call("GET", "/v1/device", None)?;
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| DeviceState::from_json(&v))
            .ok_or_else(|| Error::Api {
                call: call.into(),
                reason: ApiFailure::BadResponse,
                detail: format!("the answer is not a device state: {}", self.excerpt(&body)),
            })
    }

    /// `POST /v1/update`: ask the Supervisor to check for an update now. With `force` it
    /// overrides update locks (it deletes the apps' lock files).
    pub fn update(&self, force: bool) -> Result<()> {
        self.call(
            "POST",
            "/v1/update",
            Some(serde_json::json!({ "force": force })),
        )
        .map(|_| ())
    }

    /// `POST /v1/reboot`: reboot the device; refused with the `held` error kind while an
    /// update lock is held, unless `force`.
    pub fn reboot(&self, force: bool) -> Result<()> {
        self.call(
            "POST",
            "/v1/reboot",
            Some(serde_json::json!({ "force": force })),
        )
        .map(|_| ())
    }

    /// `POST /v2/applications/{app_id}/restart-service`: restart one service.
    pub fn restart_service(&self, app_id: u64, service: &str, force: bool) -> Result<()> {
        self.restart_service_of(Some(app_id), service, force)
    }

    /// [`restart_service`](Self::restart_service) of this app when `app_id` is `None`: the
    /// id the Supervisor gives every service in `$BALENA_APP_ID` (legacy
    /// `$RESIN_APP_ID`).
    pub fn restart_service_of(
        &self,
        app_id: Option<u64>,
        service: &str,
        force: bool,
    ) -> Result<()> {
        let app_id = match app_id {
            Some(id) => id,
            None => app_id_from_env()?,
        };
        let path = format!("/v2/applications/{app_id}/restart-service");
        self.call(
            "POST",
            &path,
            Some(serde_json::json!({ "serviceName": service, "force": force })),
        )
        .map(|_| ())
    }

    /// Never let the key into a message: the whole key, and any prefix of 8 characters or
    /// more of it (a server may echo part of what it was sent).
    fn scrub(&self, s: String) -> String {
        scrub_key(s, &self.key)
    }

    /// A short, one-line excerpt of an answer for a message: scrubbed first, then cut (a
    /// key cut at the boundary would otherwise survive in part).
    fn excerpt(&self, s: &str) -> String {
        let window = EXCERPT_CHARS + self.key.chars().count();
        let one: String = s
            .split_whitespace()
            .flat_map(|w| w.chars().chain(std::iter::once(' ')))
            .take(window)
            .collect();
        cut(self.scrub(one.trim_end().to_string()))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<String> {
        let call = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.key));
        let result = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        match result {
            Ok(resp) => resp.into_string().map_err(|e| Error::Api {
                call,
                reason: ApiFailure::BadResponse,
                detail: self.scrub(format!("could not read the answer: {e}")),
            }),
            Err(ureq::Error::Status(code, resp)) => {
                let text = self.excerpt(&resp.into_string().unwrap_or_default());
                Err(match code {
                    423 => Error::ApiLocked { call, detail: text },
                    401 | 403 => Error::Api {
                        call,
                        reason: ApiFailure::Unauthorized,
                        detail: format!("HTTP {code} {text}"),
                    },
                    _ => Error::Api {
                        call,
                        reason: ApiFailure::HttpStatus,
                        detail: format!("HTTP {code} {text}"),
                    },
                })
            }
            Err(ureq::Error::Transport(t)) => {
                let timed_out = is_timeout(&t);
                let reason = if timed_out {
                    ApiFailure::Timeout
                } else if t.kind() == ureq::ErrorKind::InvalidUrl {
                    ApiFailure::NotConfigured
                } else {
                    ApiFailure::Unreachable
                };
                let detail = if timed_out {
                    format!(
                        "no answer from {} within {:.1} s",
                        self.base,
                        self.timeout.as_secs_f64()
                    )
                } else {
                    format!("{} at {}", t.kind(), self.base)
                };
                Err(Error::Api {
                    call,
                    reason,
                    detail: self.scrub(detail),
                })
            }
        }
    }
}

fn is_timeout(t: &ureq::Transport) -> bool {
    use std::error::Error as _;
    let mut src = t.source();
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        src = e.source();
    }
    t.to_string().contains("timed out")
}

/// The start of an answer, on one line.
/// The length of an answer's excerpt in a message.
const EXCERPT_CHARS: usize = 200;

fn cut(one: String) -> String {
    if one.chars().count() > EXCERPT_CHARS {
        format!("{}...", one.chars().take(EXCERPT_CHARS).collect::<String>())
    } else {
        one
    }
}

/// The shortest part of a key that is scrubbed when it appears alone.
const MIN_KEY_PREFIX: usize = 8;

/// `s` with `key`, and every prefix of it of [`MIN_KEY_PREFIX`] characters or more,
/// replaced by `<key>`.
fn scrub_key(mut s: String, key: &str) -> String {
    if key.is_empty() {
        return s;
    }
    let ends: Vec<usize> = key
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .filter(|&end| key[..end].chars().count() >= MIN_KEY_PREFIX || end == key.len())
        .collect();
    // Longest first, so a whole key becomes one `<key>`.
    for &end in ends.iter().rev() {
        if s.contains(&key[..end]) {
            s = s.replace(&key[..end], "<key>");
        }
    }
    s
}

/// This app's id, as the Supervisor gives it to every service: `$BALENA_APP_ID` (legacy
/// `$RESIN_APP_ID`). An error naming the variable when it is missing or not a number.
pub fn app_id_from_env() -> Result<u64> {
    let (name, value) = ["BALENA_APP_ID", "RESIN_APP_ID"]
        .iter()
        .find_map(|n| std::env::var(n).ok().map(|v| (*n, v)))
        .ok_or_else(|| Error::Api {
            call: "restart-service".into(),
            reason: ApiFailure::NotConfigured,
            detail: "BALENA_APP_ID is not set: pass the app id explicitly (on a device the Supervisor sets it for every service)".into(),
        })?;
    value.trim().parse().map_err(|_| Error::Api {
        call: "restart-service".into(),
        reason: ApiFailure::NotConfigured,
        detail: format!("{name} is {value:?}, not an app id: pass the app id explicitly"),
    })
}
