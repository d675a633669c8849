#!/usr/bin/env bash
# Python binding benchmark: acquire+release per second from Python, update_lock against
# filelock.SoftFileLock, lockfile.LinkLockFile and the raw syscalls in a Python loop, on one
# path and on the default two, interleaved; plus Ctrl-C latency of a blocked acquire().
# Writes bench/results/python.md. Not part of CI.
#
#   bash bench/python.sh
#
# Builds the release extension with `pip install ./bindings-python` (maturin fetched from
# PyPI as the build backend) into its own venv target/py-bench-venv, with the peers.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/py-bench-venv
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "filelock>=3.12" "lockfile==0.12.2"
echo "bench: building the release extension (pip install ./bindings-python)" >&2
"${PIP[@]}" install --force-reinstall --no-deps ./bindings-python
mkdir -p bench/results
"$VENV/bin/python" bench/python_bench.py bench/results/python.md
