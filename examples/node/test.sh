#!/usr/bin/env bash
# Test of the Node.js example service (examples/node): runs it for real against a temporary
# service directory and checks it with the device's readers. Needs the addon built
# (npm run build in bindings-node/; scripts/test-node.sh does that first) and lockctl.
set -euo pipefail
# The test probes with the Supervisor's real lockfile; a probe of a held lock is an attempt
# that the example's next acquisition would yield to (up to 60 s). The yield has its own
# tests; here it is off.
export UPDATE_LOCK_YIELD_TO_UPDATES=0
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ls "$ROOT"/bindings-node/*.node >/dev/null 2>&1 || { echo "examples/node: build the addon first (cd bindings-node && npm run build)" >&2; exit 1; }
export LOCKCTL=${LOCKCTL:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/lockctl}
[ -x "$LOCKCTL" ] || (cd "$ROOT" && cargo build -q -p lockctl)
# What `npm install` does for the "file:" dependency: link the package (no network needed).
mkdir -p "$HERE/node_modules"
ln -sfn ../../../bindings-node "$HERE/node_modules/update-lock"
cd "$HERE"
node --test test/
