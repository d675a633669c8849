//! The Supervisor API client and the update gate against a real HTTP server on loopback
//! (the Supervisor's endpoints, answering as the test says), and against servers that are
//! not there or never answer.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use update_lock::{ApiFailure, ErrorCode, LockOptions, SafePoint, SupervisorApi, UpdateGate};

const KEY: &str = "0123456789abcdef-secret-key";

/// What the fake Supervisor says, and what it was asked.
#[derive(Default)]
struct Fake {
    pending: AtomicBool,
    downloaded: AtomicBool,
    /// `/v1/device` calls until `pending` turns false by itself (0: never).
    settle_after: AtomicU32,
    device_calls: AtomicU32,
    locked: AtomicBool,
    last_body: Mutex<String>,
    last_auth: Mutex<String>,
    /// Answer every authorised call with this (status, body) instead.
    reply: Mutex<Option<(u16, String)>>,
}

struct Served {
    api: SupervisorApi,
    fake: Arc<Fake>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn serve() -> Served {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let fake = Arc::new(Fake::default());
    {
        let (server, fake) = (Arc::clone(&server), Arc::clone(&fake));
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                *fake.last_auth.lock().unwrap() = auth.clone();
                *fake.last_body.lock().unwrap() = body.clone();
                let forced = fake.reply.lock().unwrap().clone();
                let (code, text) = if auth != format!("Bearer {KEY}") {
                    (401, "Unauthorized".to_string())
                } else if let Some(r) = forced {
                    r
                } else if req.url() == "/v1/device" {
                    let n = fake.device_calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let settle = fake.settle_after.load(Ordering::SeqCst);
                    if settle > 0 && n >= settle {
                        fake.pending.store(false, Ordering::SeqCst);
                    }
                    (
                        200,
                        serde_json::json!({
                            "status": "Idle",
                            "update_pending": fake.pending.load(Ordering::SeqCst),
                            "update_downloaded": fake.downloaded.load(Ordering::SeqCst),
                            "update_failed": false,
                            "download_progress": null,
                            "commit": "abc",
                        })
                        .to_string(),
                    )
                } else if req.url() == "/v1/reboot"
                    && fake.locked.load(Ordering::SeqCst)
                    && !body.contains("true")
                {
                    (
                        423,
                        r#"{"status":"failed","message":"Updates are locked"}"#.to_string(),
                    )
                } else if req.url() == "/v1/update"
                    || req.url() == "/v1/reboot"
                    || req.url() == "/ping"
                {
                    (202, "OK".to_string())
                } else if req.url().starts_with("/v2/applications/1/restart-service") {
                    (200, "OK".to_string())
                } else {
                    (404, "no such thing".to_string())
                };
                let _ = req.respond(tiny_http::Response::from_string(text).with_status_code(code));
            }
        });
    }
    let api = SupervisorApi::new(&format!("http://127.0.0.1:{port}"), KEY).unwrap();
    Served { api, fake, server }
}

#[test]
fn device_state_and_calls_carry_the_key_in_a_header_only() {
    let s = serve();
    s.api.ping().unwrap();
    let d = s.api.device().unwrap();
    assert!(!d.update_pending && !d.update_waiting());
    assert_eq!(d.commit.as_deref(), Some("abc"));
    assert_eq!(*s.fake.last_auth.lock().unwrap(), format!("Bearer {KEY}"));
    s.api.update(true).unwrap();
    let body =
        || serde_json::from_str::<serde_json::Value>(&s.fake.last_body.lock().unwrap()).unwrap();
    assert_eq!(body(), serde_json::json!({"force": true}));
    s.api.reboot(false).unwrap();
    assert_eq!(body(), serde_json::json!({"force": false}));
    s.api.restart_service(1, "main", false).unwrap();
    assert_eq!(
        body(),
        serde_json::json!({"serviceName": "main", "force": false})
    );
    assert!(
        !format!("{:?}", s.api).contains(KEY),
        "Debug redacts the key"
    );
}

#[test]
fn a_locked_answer_is_the_held_kind() {
    let s = serve();
    s.fake.locked.store(true, Ordering::SeqCst);
    let e = s.api.reboot(false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Held);
    let m = e.to_string();
    assert!(
        m.contains("POST /v1/reboot") && m.contains("HTTP 423") && m.contains("force"),
        "{m}"
    );
    s.api.reboot(true).unwrap();
}

#[test]
fn a_wrong_key_is_unauthorized_and_never_shown() {
    let s = serve();
    let wrong = SupervisorApi::new(s.api.address(), "not-the-key-xyz").unwrap();
    let e = wrong.device().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Api);
    assert_eq!(e.api_failure(), Some(ApiFailure::Unauthorized));
    let m = e.to_string();
    assert!(
        m.contains("unauthorized") && m.contains("BALENA_SUPERVISOR_API_KEY"),
        "{m}"
    );
    assert!(!m.contains("not-the-key-xyz") && !m.contains(KEY), "{m}");
}

#[test]
fn a_server_that_never_answers_times_out_and_nobody_there_is_unreachable() {
    // Bound and listening (connections complete in the backlog) but never answering.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let api = SupervisorApi::new(&addr, KEY)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let e = api.device().unwrap_err();
    assert_eq!(e.api_failure(), Some(ApiFailure::Timeout), "{e}");
    assert!(e.to_string().contains("within 0.3 s"), "{e}");
    drop(silent);
    // Nothing listening any more on that port.
    let gone = SupervisorApi::new(&addr, KEY).unwrap();
    let e = gone.ping().unwrap_err();
    assert_eq!(e.api_failure(), Some(ApiFailure::Unreachable), "{e}");
    assert!(!e.to_string().contains(KEY));
}

#[test]
fn bad_configuration_says_what_to_do() {
    for (addr, key, want) in [
        ("127.0.0.1:48484", KEY, "not an http:// address"),
        ("https://x", KEY, "not an http:// address"),
        ("http://127.0.0.1:48484", "", "key is empty"),
    ] {
        let e = SupervisorApi::new(addr, key).unwrap_err();
        assert_eq!(e.api_failure(), Some(ApiFailure::NotConfigured));
        assert!(e.to_string().contains(want), "{e}");
        assert!(
            e.to_string().contains("io.balena.features.supervisor-api"),
            "{e}"
        );
    }
}

fn lock_opts(dir: &tempfile::TempDir) -> LockOptions {
    LockOptions::new()
        .paths([dir.path().join("updates.lock")])
        .legacy(false)
}

#[test]
fn the_gate_holds_until_a_downloaded_update_waits_then_releases_at_a_safe_point() {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("updates.lock");
    let mut gate = UpdateGate::acquire(&lock_opts(&dir), s.api.clone()).unwrap();
    assert!(gate.held() && lock.exists());
    assert_eq!(gate.safe_point().unwrap(), SafePoint::NoUpdate);
    // Pending but not downloaded yet: keep holding.
    s.fake.pending.store(true, Ordering::SeqCst);
    assert_eq!(gate.safe_point().unwrap(), SafePoint::NoUpdate);
    assert!(lock.exists());
    s.fake.downloaded.store(true, Ordering::SeqCst);
    assert!(gate.update_waiting().unwrap());
    assert_eq!(gate.safe_point().unwrap(), SafePoint::Released);
    assert!(
        !gate.held() && !lock.exists(),
        "the lock is gone for the Supervisor"
    );
    assert_eq!(gate.safe_point().unwrap(), SafePoint::Released);
    gate.release().unwrap();
}

#[test]
fn the_gate_retakes_the_lock_once_the_update_has_settled() {
    let s = serve();
    s.fake.pending.store(true, Ordering::SeqCst);
    s.fake.downloaded.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("updates.lock");
    let mut gate = UpdateGate::acquire(&lock_opts(&dir), s.api.clone())
        .unwrap()
        .retake(true, Duration::from_secs(30))
        .poll_interval(Duration::from_millis(10));
    // The third /v1/device call reports the update done.
    s.fake.settle_after.store(3, Ordering::SeqCst);
    assert_eq!(
        gate.safe_point().unwrap(),
        SafePoint::Retaken { settled: true }
    );
    assert!(gate.held() && lock.exists());
    gate.release().unwrap();
    assert!(!lock.exists());
}

#[test]
fn when_the_api_fails_at_a_safe_point_the_gate_keeps_the_lock() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = SupervisorApi::new(&format!("http://{}", silent.local_addr().unwrap()), KEY)
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("updates.lock");
    let mut gate = UpdateGate::acquire(&lock_opts(&dir), api).unwrap();
    let e = gate.safe_point().unwrap_err();
    assert_eq!(e.api_failure(), Some(ApiFailure::Timeout));
    assert!(gate.held() && lock.exists(), "nothing was let in");
    gate.release().unwrap();
}

/// Hardening H: an answer that echoes the key, whole or in part, even where the message's
/// excerpt is cut, never brings any 8-character part of the key into a message.
#[test]
fn an_answer_echoing_the_key_never_puts_it_in_a_message() {
    let s = serve();
    let prefix8 = &KEY[..8];
    for (status, body) in [
        // The key straddles the 200-character cut of the excerpt.
        (500, format!("{}{KEY} and more", "x".repeat(190))),
        (500, format!("{}{KEY}", "y ".repeat(97))),
        // Only part of the key, as a server might echo it.
        (500, format!("auth was {} (truncated)", &KEY[..12])),
        // A device answer that is not JSON (the bad-response path).
        (200, format!("<html>{}{KEY}</html>", "z".repeat(195))),
    ] {
        *s.fake.reply.lock().unwrap() = Some((status, body.clone()));
        let e = if status == 200 {
            s.api.device().unwrap_err()
        } else {
            s.api.ping().unwrap_err()
        };
        let m = e.to_string();
        assert_eq!(e.code(), ErrorCode::Api, "{m}");
        assert!(!m.contains(prefix8), "part of the key in: {m}");
        assert!(
            m.contains("<key>") || !body[..body.len().min(200)].contains(prefix8),
            "{m}"
        );
    }
}

/// Hardening H: a key with a trailing newline (read from a file) works; one with white
/// space inside is refused as a bad key, not reported as an unreachable Supervisor.
#[test]
fn a_key_with_a_trailing_newline_works_and_a_broken_one_is_a_bad_key() {
    let s = serve();
    let addr = format!("http://{}", s.server.server_addr().to_ip().unwrap());
    let api = SupervisorApi::new(&addr, &format!("{KEY}\r\n")).unwrap();
    api.ping().unwrap();
    assert_eq!(*s.fake.last_auth.lock().unwrap(), format!("Bearer {KEY}"));
    let e = SupervisorApi::new(&addr, "abc def\x01").unwrap_err();
    assert_eq!(e.api_failure(), Some(ApiFailure::NotConfigured));
    let m = e.to_string();
    assert!(m.contains("bad API key"), "{m}");
    assert!(!m.contains("abc def"), "{m}");
}

/// `restart_service_of(None, ..)` is this app's service: the id comes from
/// `$BALENA_APP_ID`, read by core for every binding; missing or not a number is an error
/// that names the variable, and nothing is sent. (Each test runs in its own process, so
/// setting the environment here touches no other test.)
#[test]
fn this_apps_id_comes_from_balena_app_id_and_a_missing_one_says_so() {
    let s = serve();
    std::env::remove_var("BALENA_APP_ID");
    std::env::remove_var("RESIN_APP_ID");
    let e = s.api.restart_service_of(None, "main", false).unwrap_err();
    assert_eq!(e.api_failure(), Some(ApiFailure::NotConfigured), "{e}");
    assert!(e.to_string().contains("BALENA_APP_ID is not set"), "{e}");
    std::env::set_var("BALENA_APP_ID", "twelve");
    let e = s.api.restart_service_of(None, "main", false).unwrap_err();
    assert!(e.to_string().contains("BALENA_APP_ID is \"twelve\""), "{e}");
    assert!(
        s.fake.last_body.lock().unwrap().is_empty(),
        "nothing was sent"
    );
    std::env::set_var("BALENA_APP_ID", "1");
    s.api.restart_service_of(None, "main", true).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&s.fake.last_body.lock().unwrap()).unwrap(),
        serde_json::json!({"serviceName": "main", "force": true})
    );
}
