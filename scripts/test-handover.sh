#!/usr/bin/env bash
# Hand-over across languages (issue 6): the cross-language matrix (an old version in Python,
# Node.js, C or lockctl hands its listening socket and state to a new version in each of
# them: 16 pairs) and the example services under HTTP load (examples/handover/test.sh).
# Needs the Python wheel (scripts/test-python.sh) and the Node.js addon (scripts/test-node.sh)
# built first, as scripts/test.sh does; fails, never skips, when one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac

export PY=$TARGET/py-venv/bin/python
"$PY" -c 'import update_lock' || { echo "test-handover: the update_lock wheel is missing: run scripts/test-python.sh first" >&2; exit 1; }
ls bindings-node/*.node >/dev/null 2>&1 || { echo "test-handover: the Node.js addon is not built: run scripts/test-node.sh first" >&2; exit 1; }

echo "==> build lockctl, libupdate_lock and the C peer"
cargo build -q -p lockctl -p update-lock-c
OUT=$TARGET/handover-matrix
mkdir -p "$OUT/lib" "$OUT/node_modules"
ln -sf "$TARGET/debug/libupdate_lock.so" "$OUT/lib/libupdate_lock.so.0"
ln -sfn "$ROOT/bindings-node" "$OUT/node_modules/update-lock"
gcc -std=c99 -O1 -Wall -Werror -Ibindings-c/include bindings-c/tests/handover_peer.c \
  -L"$TARGET/debug" -lupdate_lock -Wl,-rpath,"$OUT/lib" -pthread -o "$OUT/c_peer"
export C_PEER=$OUT/c_peer LOCKCTL=$TARGET/debug/lockctl NODE_PATH=$OUT/node_modules

echo "==> cross-language matrix"
timeout 300 python3 tests/handover/matrix.py

echo "==> hand-over example under HTTP load"
PYTHON=$PY timeout 300 bash examples/handover/test.sh

echo "hand-over: all tests passed"
