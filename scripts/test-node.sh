#!/usr/bin/env bash
# Node.js binding (bindings-node/, npm package `update-lock`): installs the npm dev tools
# (npm ci, from the committed package-lock.json), builds the addon (debug, napi build), runs
# its tests (node --test) and the example's test. Exits non-zero on any failure, including a
# failed build. Assumes `bash scripts/setup.sh` has run (procmail, util-linux) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  step "installing nodejs and npm (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
for tool in lockfile flock setpriv prlimit; do
  command -v "$tool" >/dev/null || { echo "test-node: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

step "lockctl (for the interop tests)"
cargo build -q -p lockctl
export LOCKCTL="${CARGO_TARGET_DIR:-$ROOT/target}/debug/lockctl"

cd bindings-node
# npm ci only when node_modules does not match the lock file (it wipes node_modules).
if ! cmp -s package-lock.json node_modules/.update-lock-installed 2>/dev/null; then
  step "npm ci (bindings-node)"
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.update-lock-installed
fi

step "lint: biome (bindings-node/biome.json)"
npm run lint

step "napi build (debug)"
npm run build

step "node --test (bindings-node/test)"
npm test

cd "$ROOT"
step "Node example (examples/node)"
bash examples/node/test.sh
