#!/usr/bin/env bash
# Hand-over latency benchmark (issue 6): successor start -> old version's exit, p50/p99, for
# Python, Node.js, C and lockctl. Writes bench/results/handover.md. Not part of CI.
#   bash bench/handover.sh [RUNS]      (default 40; builds what scripts/test-handover.sh builds)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-40}
[ -x target/py-venv/bin/python ] || bash scripts/test-python.sh
ls bindings-node/*.node >/dev/null 2>&1 || bash scripts/test-node.sh
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q -p lockctl -p update-lock-c
OUT=$TARGET/handover-matrix
mkdir -p "$OUT/lib" "$OUT/node_modules" bench/results
ln -sf "$TARGET/debug/libupdate_lock.so" "$OUT/lib/libupdate_lock.so.0"
ln -sfn "$PWD/bindings-node" "$OUT/node_modules/update-lock"
gcc -std=c99 -O1 -Ibindings-c/include bindings-c/tests/handover_peer.c \
  -L"$TARGET/debug" -lupdate_lock -Wl,-rpath,"$OUT/lib" -pthread -o "$OUT/c_peer"
PY=$TARGET/py-venv/bin/python C_PEER=$OUT/c_peer LOCKCTL=$TARGET/debug/lockctl NODE_PATH=$OUT/node_modules \
  python3 bench/handover/latency.py "$RUNS" bench/results/handover.md
