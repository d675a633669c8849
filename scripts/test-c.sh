#!/usr/bin/env bash
# Tests of the C binding (bindings-c/) and its example (examples/c/): builds libupdate_lock
# (debug), checks the checked-in header against cbindgen, runs the Rust unit tests, the C
# tests (valgrind, ASan/UBSan, a C++ translation unit) and the example's test.
# Assumes scripts/setup.sh has run (procmail, util-linux, nextest); installs the C tools it
# needs (gcc, g++, make, pkg-config, valgrind) with apt-get when missing. Run as root from
# anywhere. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-c: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# ASan/UBSan runtimes come with gcc on Debian (libasan, libubsan); check they link.
if ! echo 'int main(void){return 0;}' | gcc -x c -fsanitize=address,undefined -o /dev/null - 2>/dev/null; then
  echo "test-c: installing the sanitizer runtimes" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libasan8 libubsan1 >/dev/null
fi

echo "==> Rust tests of update-lock-c (header drift, string helpers)"
cargo nextest run -p update-lock-c --no-fail-fast

echo "==> C tests"
bash bindings-c/tests/run.sh

echo "==> C example"
bash examples/c/test.sh

echo "C binding: all tests passed"
