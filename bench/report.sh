#!/usr/bin/env bash
# Side-by-side benchmark report (issue 9): one command builds every contender (release
# builds), installs the peers, runs every benchmark as a child of one driver process
# (bench/report/report.py) and writes bench/results/report.md and bench/results/report.svg.
#
#   bash bench/report.sh            full run (several minutes of measuring)
#   QUICK=1 bash bench/report.sh    smoke run (few samples; figures indicative only)
#   OUT_DIR=DIR bash bench/report.sh   write report.md / report.svg there instead
#
# Contenders: the Rust core, the C API, the Python and Node.js bindings and lockctl, against
# filelock and PyPI lockfile (Python), npm lockfile and proper-lockfile (Node.js), procmail's
# lockfile + rm and flock(1) (shell), and the raw syscalls in C (the floor). Peers are
# installed here: apt-get (procmail, util-linux, gcc, ...), pip into target/report/venv,
# npm ci in bindings-node/bench. A language whose toolchain cannot be set up is left out of
# the report with a note (and the run fails), never silently.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
WORK=$TARGET/report
OUT_DIR=${OUT_DIR:-$ROOT/bench/results}
mkdir -p "$WORK" "$OUT_DIR"
case $OUT_DIR in /*) ;; *) OUT_DIR=$ROOT/$OUT_DIR ;; esac

step() { echo "==> $*" >&2; }
notes=()
skip() { echo "report.sh: WARNING: $*" >&2; notes+=("left out: $*"); }

# ---- system packages (a bare Debian machine works) -----------------------------------------
need=()
command -v lockfile >/dev/null 2>&1 || need+=(procmail)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v file >/dev/null 2>&1 || need+=(file)
command -v findmnt >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export FLOCK=$(command -v flock) LOCKFILE=$(command -v lockfile)
export PROCMAIL_VERSION=$(dpkg-query -W -f '${Version}' procmail 2>/dev/null || echo '?')

# ---- Rust: lockctl and the Rust worker (release profile) -----------------------------------
step "cargo build --release -p lockctl"
cargo build -q --release -p lockctl
export LOCKCTL=$TARGET/release/lockctl
step "cargo build --release (bench/report/rust: the Rust worker)"
if CARGO_TARGET_DIR=$TARGET cargo build -q --release --manifest-path bench/report/rust/Cargo.toml; then
  export WORKER_RS=$TARGET/release/ul-report-rs
else
  skip "Rust worker (bench/report/rust) did not build"
fi

# ---- C: libupdate_lock (release, as make builds it), the C worker and `now` -----------------
step "make -C bindings-c build; gcc bench/report/worker.c now.c"
gcc -std=c99 -O2 -Wall -Wextra -Werror -o "$WORK/now" bench/report/now.c
export NOW=$WORK/now
if make -s -C bindings-c build >&2; then
  mkdir -p "$WORK/lib"
  cp "$TARGET/release/libupdate_lock.so" "$WORK/lib/libupdate_lock.so.0"
  gcc -std=c99 -O2 -Wall -Wextra -Werror -pedantic -I bindings-c/include bench/report/worker.c \
    -L"$WORK/lib" -l:libupdate_lock.so.0 -Wl,-rpath,"$WORK/lib" -o "$WORK/worker-c"
  export WORKER_C=$WORK/worker-c LIB_C=$WORK/lib/libupdate_lock.so.0
else
  skip "C binding (make -C bindings-c build failed): no C rows, no floor, no shell rows"
fi

# ---- Python: venv with filelock, lockfile and the release update_lock wheel -----------------
VENV=$WORK/venv
step "Python venv $VENV: filelock, lockfile, update_lock (pip wheel ./bindings-python, release)"
if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } &&
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q) &&
  "${PIP[@]}" install "filelock>=3.12" "lockfile==0.12.2" &&
  rm -rf "$WORK/wheels" &&
  "${PIP[@]}" wheel --no-deps -w "$WORK/wheels" ./bindings-python &&
  "${PIP[@]}" install --force-reinstall --no-deps "$WORK"/wheels/update_lock-*.whl; then
  export PY=$VENV/bin/python WORKER_PY=$ROOT/bench/report/worker.py
  PY_EXT=$("$PY" -c 'import update_lock._update_lock as m; print(m.__file__)' 2>/dev/null || true)
  export PY_EXT
else
  skip "Python (venv, peers or the update_lock wheel could not be installed)"
fi

# ---- Node.js: release addon and the peers --------------------------------------------------
step "Node.js: npm ci, napi build --release, npm ci (bindings-node/bench peers)"
if (cd bindings-node && { cmp -s package-lock.json node_modules/.update-lock-installed 2>/dev/null ||
  { npm ci --no-audit --no-fund >&2 && cp package-lock.json node_modules/.update-lock-installed; }; }) &&
  (cd bindings-node && npx napi build --platform --release --no-js --output-dir "$WORK/node" >&2) &&
  (cd bindings-node/bench && npm ci --no-audit --no-fund >&2); then
  export NODE=$(command -v node) WORKER_JS=$ROOT/bench/report/worker.js
  export NAPI_RS_NATIVE_LIBRARY_PATH=$WORK/node/update-lock.linux-x64-gnu.node
  export NODE_ADDON=$NAPI_RS_NATIVE_LIBRARY_PATH NODE_PEERS=$ROOT/bindings-node/bench/node_modules
else
  skip "Node.js (npm ci or the addon build failed)"
fi

BUILD_NOTES=$(printf '%s\n' "release builds: lockctl, the Rust worker and libupdate_lock (cargo --release), the Python wheel (maturin release), the Node.js addon (napi build --release)" "${notes[@]}")
export BUILD_NOTES QUICK=${QUICK:-0}
export OUT_MD=$OUT_DIR/report.md OUT_SVG=$OUT_DIR/report.svg

# ---- run: one driver, every benchmark its child --------------------------------------------
step "running the benchmarks (QUICK=${QUICK})"
rc=0
python3 bench/report/report.py >/dev/null || rc=$?
step "wrote $OUT_MD and $OUT_SVG"
[ ${#notes[@]} -eq 0 ] || { echo "report.sh: some languages were left out (see the report's header)" >&2; exit 1; }
exit $rc
