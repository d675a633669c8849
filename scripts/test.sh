#!/usr/bin/env bash
# Every test of every language, installing what the tests need first.
# This is the command the README gives and the one .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "test: the suite tests as root, uid 1000 and uid 65534 (setpriv) and emulates containers (unshare): run it as root" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lint"
python3 scripts/module-cycles.py
python3 scripts/check-versions.py
python3 scripts/check-examples.py --parse-only   # examples/balena (built and run by dist.sh --check)
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The lock-only builds: core without the Supervisor API client, lockctl as a lock-only
# entrypoint (no HTTP client; `lockctl rehearse` is a companion binary in any build).
cargo clippy -p update-lock -p lockctl --no-default-features -- -D warnings

MSRV=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
step "MSRV: everything builds with Rust $MSRV (rust-version in Cargo.toml)"
cargo "+$MSRV" check --workspace --all-targets --all-features

step "Rust tests (core, lockctl, binding crates)"
# The binaries the tests run: lockctl (cargo builds it for its tests) and its companion
# lockctl-rehearse, which `lockctl rehearse` runs from beside it (cargo does not build
# another package's binary for a package's tests).
cargo build -q -p lockctl -p lockctl-rehearse
cargo nextest run --workspace --all-features --no-fail-fast

step "race loops of atomic removal (hardening C): 100,000 Supervisor swaps per loop, run alone"
UL_RACE_SWAPS=100000 cargo nextest run -p update-lock --all-features --test integration \
  --run-ignored only -E 'test(c_release_and_reclaim_never_delete_the_supervisors_lock)' --no-capture

step "doc tests"
cargo test --workspace --all-features --doc

step "shell examples"
bash examples/shell/test.sh

step "Python binding (pytest, types, example)"
bash scripts/test-python.sh

step "Node.js binding (node --test, tsc, example)"
bash scripts/test-node.sh

step "C binding (valgrind, ASan/UBSan, C++, header drift, example)"
bash scripts/test-c.sh

step "hand-over across languages (matrix, example under HTTP load)"
bash scripts/test-handover.sh

step "rehearse: the examples updated as the Supervisor would (lockctl rehearse)"
bash scripts/test-rehearse.sh

step "torture: every language at once under chaos, the Supervisor, reboot probes, overrides"
bash scripts/test-torture.sh

step "demo: the README's main job runs to its end (it stopped once, unnoticed, when a status exit code changed)"
bash scripts/demo.sh > "${CARGO_TARGET_DIR:-target}/demo.log" 2>&1 || { tail -40 "${CARGO_TARGET_DIR:-target}/demo.log"; echo "demo failed" >&2; exit 1; }
tail -1 "${CARGO_TARGET_DIR:-target}/demo.log"

echo
echo "all tests passed"
