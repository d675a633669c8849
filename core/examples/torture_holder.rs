//! The Rust holder of the cross-language torture suite (`tests/torture/`): acquire, run the
//! shared critical section (`inside.py`), check, release, forever. Prints `acquiring`,
//! `reclaimed N`, `done ok|lost` or `err CODE`, one per line.
//!
//! `cargo run -p update-lock --example torture_holder -- DIR MARKER HOLD_MS INSIDE_PY`

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use update_lock::{ErrorCode, LockOptions, UpdateLock};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 4 {
        eprintln!("usage: torture_holder DIR MARKER HOLD_MS INSIDE_PY");
        std::process::exit(64);
    }
    let dir = PathBuf::from(&a[0]);
    let paths = [dir.join("updates.lock"), dir.join("resin-updates.lock")];
    let opts = LockOptions::new()
        .paths(&paths)
        .timeout(Some(Duration::from_secs(10)));
    let mut out = std::io::stdout();
    loop {
        let _ = writeln!(out, "acquiring");
        let mut lock = match UpdateLock::acquire(&opts) {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "err {}", e.code());
                continue;
            }
        };
        if !lock.reclaimed().is_empty() {
            let _ = writeln!(out, "reclaimed {}", lock.reclaimed().len());
        }
        let _ = Command::new("python3")
            .args([&a[3], &a[1]])
            .arg(&paths[0])
            .arg(&a[2])
            .status();
        let mut lost = matches!(lock.check(), Err(e) if e.code() == ErrorCode::Lost);
        if matches!(lock.release(), Err(e) if e.code() == ErrorCode::Lost) {
            lost = true;
        }
        let _ = writeln!(out, "{}", if lost { "done lost" } else { "done ok" });
        // A gap the Supervisor can take the lock in (0-400 ms, from the clock's nanoseconds).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_micros(u64::from(nanos % 400_000)));
    }
}
