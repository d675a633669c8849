#!/usr/bin/env bash
# Supervisor API client benchmark (issue 8): GET /v1/device against one HTTP server on
# loopback, side by side in one run: update-lock from Python (SupervisorApi.device, and the
# gate's safe_point, which is one such call), Python's own urllib, a raw socket request (the
# floor), `lockctl device` (a process per call) and curl. Writes bench/results/api.md.
# Not part of CI (timings). Debug builds, like the other binding benchmarks.
#   bash bench/api.sh [CALLS]     (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-300}
[ -x target/py-venv/bin/python ] || bash scripts/test-python.sh
cargo build -q -p lockctl
mkdir -p bench/results
target/py-venv/bin/python bench/api_bench.py "$CALLS" "$PWD/target/debug/lockctl" bench/results/api.md
