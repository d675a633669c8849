#!/usr/bin/env bash
# The Python binding: build it (debug) and install it the way users do (`pip install
# ./bindings-python`, maturin as the PEP 517 backend), then run its pytest suite, the type
# checks (mypy --strict, stubtest of the native module's stubs) and the Python example's
# test. Exits non-zero on any failure, including a binding that does not build.
#
#   bash scripts/test-python.sh        (as root, after scripts/setup.sh; run from anywhere)
#
# Everything it installs goes into the venv target/py-venv (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "test-python: the tests run children as uid 1000 and 65534 and the Supervisor's lockfile as 65534: run as root" >&2
  exit 1
fi
for tool in lockfile flock setpriv; do
  command -v "$tool" >/dev/null || { echo "test-python: $tool is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
done

VENV="$ROOT/target/py-venv"
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  step "venv $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's system Python ships venv/ensurepip separately.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "mypy>=1.8" "ruff>=0.6,<1"

step "build lockctl (interop tests)"
cargo build -q -p lockctl

step "pip wheel ./bindings-python (maturin, debug profile) and install it"
# In-tree PEP 517 build (what `pip install ./bindings-python` runs): maturin builds the
# workspace member into the shared target/ dir. One abi3 wheel for every CPython >= 3.9.
WHEELS="$ROOT/target/py-wheels"
rm -rf "$WHEELS"
MATURIN_PEP517_ARGS="--profile dev" "${PIP[@]}" wheel --no-deps -w "$WHEELS" ./bindings-python
WHEEL=$(ls "$WHEELS"/update_lock-*-cp39-abi3-*.whl)
"${PIP[@]}" install --force-reinstall --no-deps "$WHEEL"
"$VENV/bin/python" -c 'import update_lock, sys; print("update_lock", update_lock.__version__, "on", sys.version.split()[0])'

# The same wheel on the oldest and newest CPython this machine has (pyenv), if any.
SMOKE='import sys, tempfile, update_lock
d = tempfile.mkdtemp()
with update_lock.lock(paths=d + "/updates.lock", timeout=0) as lk:
    try:
        update_lock.lock(paths=d + "/updates.lock", timeout=0).acquire()
        raise SystemExit("second acquire succeeded")
    except update_lock.AlreadyHeldError as e:
        assert e.code == "already-held" and e.number == 13 and isinstance(e, RuntimeError)
assert not lk.held
print("abi3 wheel works on", sys.version.split()[0])'
for v in 3.9 3.13; do
  py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$v.*/bin/python$v 2>/dev/null | tail -n 1 || true)
  [ -n "$py" ] && [ -x "$py" ] || continue
  sv="$ROOT/target/py$v-venv"
  [ -x "$sv/bin/python" ] || "$py" -m venv "$sv"
  "$sv/bin/python" -m pip --disable-pip-version-check -q install --force-reinstall --no-deps "$WHEEL"
  "$sv/bin/python" -c "$SMOKE"
done

step "pytest (bindings-python/tests)"
(cd bindings-python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout=120)

step "lint: ruff (every Python file of the repository, ruff.toml)"
"$VENV/bin/ruff" check "$ROOT"

step "types: mypy --strict, stubtest"
(cd bindings-python && "$VENV/bin/python" -m mypy --strict --no-incremental -p update_lock \
  && "$VENV/bin/python" -m mypy --strict --no-incremental ../examples/python/worker.py \
  && "$VENV/bin/python" -m mypy.stubtest update_lock._update_lock)

step "Python example"
PYTHON="$VENV/bin/python" bash examples/python/test.sh

echo
echo "python binding: all tests passed"
