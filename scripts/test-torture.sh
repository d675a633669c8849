#!/usr/bin/env bash
# Cross-language torture (issue 9): holders in Rust, Python, Node.js, C and lockctl contend for
# one lock directory under SIGKILL chaos, the Supervisor's lockfile (uid 65534), reboot probes
# (flock -nx) and lock overrides; checked by invariant (tests/torture/README.md). Bounded by
# TORTURE_SECONDS (default 45) plus start-up; the run is cut at
# TORTURE_SECONDS + 50 s, and every process it started is killed on any exit. Needs the Python wheel (scripts/test-python.sh)
# and the Node.js addon (scripts/test-node.sh) first; fails, never skips, when one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
export PY=$TARGET/py-venv/bin/python
"$PY" -c 'import update_lock' || { echo "test-torture: the update_lock wheel is missing: run scripts/test-python.sh first" >&2; exit 1; }
ls bindings-node/*.node >/dev/null 2>&1 || { echo "test-torture: the Node.js addon is not built: run scripts/test-node.sh first" >&2; exit 1; }
command -v lockfile >/dev/null && command -v setpriv >/dev/null && command -v flock >/dev/null \
  || { echo "test-torture: needs procmail (lockfile) and util-linux (setpriv, flock): run scripts/setup.sh" >&2; exit 1; }

echo "==> build the holders: lockctl, the Rust example holder, libupdate_lock and the C holder"
cargo build -q -p lockctl -p update-lock-c
cargo build -q -p update-lock --example torture_holder
OUT=$TARGET/torture
mkdir -p "$OUT/lib" "$OUT/node_modules"
ln -sf "$TARGET/debug/libupdate_lock.so" "$OUT/lib/libupdate_lock.so.0"
ln -sfn "$ROOT/bindings-node" "$OUT/node_modules/update-lock"
gcc -std=c99 -D_DEFAULT_SOURCE -O1 -Wall -Werror -Ibindings-c/include tests/torture/holder.c \
  -L"$TARGET/debug" -lupdate_lock -Wl,-rpath,"$OUT/lib" -o "$OUT/c_holder"
export C_HOLDER=$OUT/c_holder RUST_HOLDER=$TARGET/debug/examples/torture_holder \
  LOCKCTL=$TARGET/debug/lockctl NODE_PATH=$OUT/node_modules

SECS=${TORTURE_SECONDS:-45}
SECS=${SECS%.*}
echo "==> torture (${SECS} s)"
# The orchestrator leads its own process group (setsid); each holder leads another one, and
# the orchestrator kills those on any exit it can catch. The trap covers the rest (a SIGKILL
# of the orchestrator, ^C of this script): its group, then every holder group it recorded in
# TORTURE_PGID_FILE (one line per holder started).
TORTURE_PID=
export TORTURE_PGID_FILE=$OUT/pgids
: > "$TORTURE_PGID_FILE"
cleanup() {
  if [ -n "$TORTURE_PID" ]; then
    kill -KILL -- "-$TORTURE_PID" 2>/dev/null || true
  fi
  while read -r g; do kill -KILL -- "-$g" 2>/dev/null || true; done < "$TORTURE_PGID_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
setsid timeout -k 5 $(( SECS + 50 )) python3 tests/torture/torture.py &
TORTURE_PID=$!
wait "$TORTURE_PID"
