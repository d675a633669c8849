//! Rust worker of the side-by-side benchmark report (`bench/report.sh`), driven by
//! `bench/report/report.py`. Same protocol as the other language workers:
//!
//! * `rate DIR SAMPLE_MS WARMUP_MS NAME...`: one round; every NAME runs acquire+release
//!   cycles on `DIR/NAME/updates.lock` for SAMPLE_MS after a warm-up; prints `{"NAME": ops/s}`.
//!   `ours` is `UpdateLock::acquire` + `release` (one path, no wait); `excl` is the minimal
//!   std-only lock a Rust programmer would write (`create_new` + `File::lock` + write;
//!   remove + drop).
//! * `hold NAME PATH`: take the lock (`ours` or `flock`), print `ready`; per stdin line `r`:
//!   read CLOCK_MONOTONIC, release, print it; `a`: take it again, print `ready`; EOF: exit.
//! * `wait NAME PATH`: print `start`, take the lock waiting (`ours`: the core's inotify
//!   wait; `flock`: a blocking `flock(2)`), print CLOCK_MONOTONIC just after, release.

use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use update_lock::{LockOptions, UpdateLock};

/// CLOCK_MONOTONIC in nanoseconds, comparable across processes.
fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("report worker (Rust): {what}: {e}");
    std::process::exit(1)
}

/// A held lock of one of the kinds the worker knows.
enum Held {
    Ours(UpdateLock),
    File(File),
    None,
}

fn take(name: &str, path: &Path, wait: bool) -> Held {
    match name {
        "ours" => {
            let opts = LockOptions::new().paths([path]).timeout(if wait {
                None
            } else {
                Some(Duration::ZERO)
            });
            Held::Ours(UpdateLock::acquire(&opts).unwrap_or_else(|e| fail("acquire", e)))
        }
        "flock" => {
            let f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .unwrap_or_else(|e| fail("open", e));
            f.lock().unwrap_or_else(|e| fail("flock", e));
            Held::File(f)
        }
        other => fail("unknown lock", other),
    }
}

fn give(held: Held) {
    match held {
        Held::Ours(mut l) => l.release().unwrap_or_else(|e| fail("release", e)),
        Held::File(f) => drop(f),
        Held::None => {}
    }
}

fn excl_cycle(path: &Path, record: &[u8]) {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap_or_else(|e| fail("create_new", e));
    f.lock().unwrap_or_else(|e| fail("flock", e));
    f.write_all(record).unwrap_or_else(|e| fail("write", e));
    std::fs::remove_file(path).unwrap_or_else(|e| fail("remove", e));
    drop(f);
}

fn rate(args: &[String]) {
    let [dir, sample_ms, warmup_ms, names @ ..] = args else {
        fail("usage", "rate DIR SAMPLE_MS WARMUP_MS NAME...")
    };
    let ms = |s: &str| Duration::from_secs_f64(s.parse::<f64>().unwrap_or(250.0) / 1000.0);
    let (sample, warmup) = (ms(sample_ms), ms(warmup_ms));
    let record = vec![b'x'; 200];
    let mut out = Vec::new();
    for name in names {
        let sub = PathBuf::from(dir).join(name);
        std::fs::create_dir_all(&sub).unwrap_or_else(|e| fail("mkdir", e));
        let path = sub.join("updates.lock");
        let opts = LockOptions::new()
            .paths([&path])
            .timeout(Some(Duration::ZERO));
        let cycle = |n: usize| {
            for _ in 0..n {
                match name.as_str() {
                    "ours" => {
                        let mut l =
                            UpdateLock::acquire(&opts).unwrap_or_else(|e| fail("acquire", e));
                        l.release().unwrap_or_else(|e| fail("release", e));
                    }
                    "excl" => excl_cycle(&path, &record),
                    other => fail("unknown contender", other),
                }
            }
        };
        let t = Instant::now();
        while t.elapsed() < warmup {
            cycle(20);
        }
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed() < sample {
            cycle(20);
            n += 20;
        }
        out.push(format!(
            "\"{name}\": {:.1}",
            n as f64 / t.elapsed().as_secs_f64()
        ));
    }
    println!("{{{}}}", out.join(", "));
}

fn line(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rate") => rate(&args[1..]),
        Some("hold") if args.len() == 3 => {
            let (name, path) = (&args[1], Path::new(&args[2]));
            let mut held = take(name, path, true);
            line("ready");
            for l in std::io::stdin().lock().lines() {
                let Ok(l) = l else { break };
                if l.starts_with('r') {
                    let t = mono_ns();
                    give(std::mem::replace(&mut held, Held::None));
                    line(&t.to_string());
                } else if l.starts_with('a') {
                    held = take(name, path, true);
                    line("ready");
                }
            }
            give(held);
        }
        Some("wait") if args.len() == 3 => {
            let (name, path) = (&args[1], Path::new(&args[2]));
            line("start");
            let held = take(name, path, true);
            let t = mono_ns();
            line(&t.to_string());
            give(held);
        }
        _ => fail(
            "usage",
            "rate DIR SAMPLE_MS WARMUP_MS NAME... | hold NAME PATH | wait NAME PATH",
        ),
    }
}
