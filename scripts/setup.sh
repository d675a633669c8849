#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian machine with Rust.
# Idempotent: does nothing that is already there.
set -euo pipefail

need_apt=()
command -v lockfile >/dev/null 2>&1 || need_apt+=(procmail)      # the Supervisor's `lockfile`
command -v flock >/dev/null 2>&1 || need_apt+=(util-linux)        # `flock -nx`: the reboot probe
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need ${need_apt[*]} (apt-get) but not running as root" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PyYAML: the check of examples/balena reads its docker-compose.yml.
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "setup: installing PyYAML" >&2
  { [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null 2>&1; } || true
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
fi

# The minimum supported Rust version (rust-version in Cargo.toml), checked by the test command.
MSRV=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
if ! rustup run "$MSRV" rustc --version >/dev/null 2>&1; then
  echo "setup: installing Rust $MSRV (the declared MSRV)" >&2
  rustup toolchain install "$MSRV" --profile minimal >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
