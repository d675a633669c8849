//! The Supervisor API, served on loopback for the versions of a rehearsal: the endpoints an
//! update-aware app uses (`/ping`, `/v1/device`, `/v1/update`, `/v1/reboot`,
//! `/v2/applications/:id/restart-service`), with a key, answering from the rehearsal's own
//! state (an update pending, downloading, downloaded) and taking the lock override from
//! `POST /v1/update {"force": true}` as the Supervisor does.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};
use update_lock::SUPERVISOR_UID;

use super::report::Actor;
use super::timeline::Timeline;

/// What `/v1/device` reports.
#[derive(Debug, Clone, Default)]
pub struct UpdateState {
    /// `update_pending`.
    pub pending: bool,
    /// `update_downloaded`.
    pub downloaded: bool,
    /// `download_progress`, percent.
    pub progress: Option<u32>,
    /// `status`, e.g. "Idle", "Downloading".
    pub status: &'static str,
}

/// The running API.
pub struct ApiServer {
    address: String,
    key: String,
    state: Arc<Mutex<UpdateState>>,
    force: Arc<AtomicBool>,
    server: Arc<Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn random_key() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ApiServer {
    /// Serve on 127.0.0.1 (a free port) for the service directory `dir`.
    pub fn start(dir: PathBuf, timeline: Arc<Timeline>) -> Result<ApiServer, String> {
        let server = Server::http("127.0.0.1:0")
            .map_err(|e| format!("could not serve the Supervisor API on loopback: {e}"))?;
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let server = Arc::new(server);
        let key = random_key();
        let state = Arc::new(Mutex::new(UpdateState {
            status: "Idle",
            ..UpdateState::default()
        }));
        let force = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, key, state, force) = (
                Arc::clone(&server),
                key.clone(),
                Arc::clone(&state),
                Arc::clone(&force),
            );
            std::thread::spawn(move || {
                for mut req in server.incoming_requests() {
                    let mut sent = String::new();
                    let _ = req.as_reader().take(64 * 1024).read_to_string(&mut sent);
                    let (code, body) = answer(&req, &sent, &key, &state, &force, &dir, &timeline);
                    let text = if body.is_null() {
                        String::new()
                    } else {
                        body.to_string()
                    };
                    let mut resp = Response::from_string(text).with_status_code(code);
                    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
                        resp = resp.with_header(h);
                    }
                    let _ = req.respond(resp);
                }
            })
        };
        Ok(ApiServer {
            address: format!("http://127.0.0.1:{port}"),
            key,
            state,
            force,
            server,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The environment the Supervisor gives a service with the supervisor-api label.
    pub fn environment(&self) -> Vec<(String, String)> {
        let port = self.address.rsplit(':').next().unwrap_or("").to_string();
        let mut v = Vec::new();
        for prefix in ["BALENA", "RESIN"] {
            v.push((format!("{prefix}_SUPERVISOR_ADDRESS"), self.address.clone()));
            v.push((format!("{prefix}_SUPERVISOR_API_KEY"), self.key.clone()));
            v.push((format!("{prefix}_SUPERVISOR_PORT"), port.clone()));
            v.push((format!("{prefix}_SUPERVISOR_HOST"), "127.0.0.1".into()));
            v.push((format!("{prefix}_APP_ID"), "1".into()));
        }
        v
    }

    /// The lock override asked for through `POST /v1/update {"force": true}`.
    pub fn force_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.force)
    }

    /// Change what `/v1/device` reports.
    pub fn set(&self, f: impl FnOnce(&mut UpdateState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Stop serving.
    pub fn finish(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn authorized(req: &tiny_http::Request, key: &str) -> bool {
    let bearer = format!("Bearer {key}");
    let header = req
        .headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == bearer);
    let query = req
        .url()
        .split_once('?')
        .map(|(_, q)| q.split('&').any(|kv| kv == format!("apikey={key}")))
        .unwrap_or(false);
    header || query
}

/// An app lock in the service directory (a file not owned by the Supervisor).
fn app_locked(dir: &std::path::Path) -> bool {
    ["updates.lock", "resin-updates.lock"].iter().any(|n| {
        dir.join(n)
            .symlink_metadata()
            .is_ok_and(|m| m.uid() != SUPERVISOR_UID)
    })
}

fn answer(
    req: &tiny_http::Request,
    sent: &str,
    key: &str,
    state: &Mutex<UpdateState>,
    force_flag: &AtomicBool,
    dir: &std::path::Path,
    tl: &Timeline,
) -> (u16, Value) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let post = *req.method() == Method::Post;
    if path == "/ping" {
        return (200, json!("OK"));
    }
    if !authorized(req, key) {
        tl.event(
            Actor::Supervisor,
            "api-unauthorized",
            format!("API {path}: refused a wrong or missing key (401)"),
        );
        return (401, json!({"status": "failed", "message": "Unauthorized"}));
    }
    let force = serde_json::from_str::<Value>(sent)
        .ok()
        .and_then(|v| v.get("force").and_then(Value::as_bool))
        .unwrap_or(false);
    let locked = || {
        (
            423,
            json!({"status": "failed", "message": "Updates are locked"}),
        )
    };
    match (post, path.as_str()) {
        (false, "/v1/device") => {
            let st = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            (
                200,
                json!({
                    "api_port": 48484,
                    "commit": "rehearsal",
                    "ip_address": "127.0.0.1",
                    "os_version": "rehearsal",
                    "supervisor_version": "rehearsal",
                    "status": st.status,
                    "download_progress": st.progress,
                    "update_pending": st.pending,
                    "update_downloaded": st.downloaded,
                    "update_failed": false,
                }),
            )
        }
        (true, "/v1/update") => {
            if force {
                force_flag.store(true, Ordering::SeqCst);
            }
            tl.event(
                Actor::Supervisor,
                "api-update",
                format!(
                    "API POST /v1/update{}",
                    if force {
                        " with force: the update lock will be overridden"
                    } else {
                        ""
                    }
                ),
            );
            (204, Value::Null)
        }
        (true, "/v1/reboot") => {
            if app_locked(dir) && !force {
                tl.event(
                    Actor::Supervisor,
                    "api-reboot-locked",
                    "API POST /v1/reboot refused: an update lock is held (423)",
                );
                return locked();
            }
            tl.event(
                Actor::Supervisor,
                "api-reboot",
                "API POST /v1/reboot accepted (the rehearsal does not reboot)",
            );
            (202, json!({"Data": "OK", "Error": ""}))
        }
        (true, p) if p.starts_with("/v2/applications/") && p.ends_with("/restart-service") => {
            if app_locked(dir) && !force {
                tl.event(
                    Actor::Supervisor,
                    "api-restart-locked",
                    "API restart-service refused: an update lock is held (423)",
                );
                return locked();
            }
            tl.event(
                Actor::Supervisor,
                "api-restart",
                "API restart-service accepted (the rehearsal does not restart)",
            );
            (200, json!("OK"))
        }
        _ => (
            404,
            json!({"status": "failed", "message": format!("the rehearsal does not serve {path}")}),
        ),
    }
}
