#!/usr/bin/env bash
# Builds libupdate_lock (debug) and lockctl, then runs the C tests:
#   1. the header alone compiles as C99/C11 and C++11/C++17 (-Wall -Wextra -Werror -pedantic);
#   2. test_update_lock.c against the shared library under valgrind (memcheck: no invalid
#      access, no definite leak); the hand-over tests' other side, handover_peer.c, runs
#      under valgrind too;
#   3. the same tests (and peer) against the static library built with ASan + UBSan;
#   4. a C++ translation unit including the header, under valgrind.
# Usage: bash bindings-c/tests/run.sh [TEST-NAME-SUBSTRING...]
# Needs: gcc, g++, valgrind, procmail (lockfile), util-linux (flock, setpriv); run as root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CRATE=$(cd "$HERE/.." && pwd)
ROOT=$(cd "$CRATE/.." && pwd)
cd "$ROOT"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LIBDIR=$TARGET_DIR/debug
OUT=$TARGET_DIR/c-tests
mkdir -p "$OUT"
CC=${CC:-gcc}
CXX=${CXX:-g++}
WARN=(-Wall -Wextra -Werror -pedantic)
status=0

step() { printf '\n--> %s\n' "$*"; }

step "cargo build -p update-lock-c -p lockctl (debug)"
cargo build -q -p update-lock-c -p lockctl
export LOCKCTL=$LIBDIR/lockctl
export UL_EXPECTED_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

# The library's soname is libupdate_lock.so.0 (what `make install` links): give the tests
# that name for the freshly built file.
mkdir -p "$OUT/lib"
ln -sf "$LIBDIR/libupdate_lock.so" "$OUT/lib/libupdate_lock.so.0"

step "header compiles as C99, C11, C++11, C++17"
for std in c99 c11; do
  "$CC" -std=$std "${WARN[@]}" -fsyntax-only -x c "$CRATE/include/update_lock.h"
done
for std in c++11 c++17; do
  "$CXX" -std=$std "${WARN[@]}" -fsyntax-only -x c++ "$CRATE/include/update_lock.h"
done
echo "header: 4 passed, 0 failed"

step "C tests, shared library, under valgrind"
"$CC" -std=c99 "${WARN[@]}" -g -O1 -I"$CRATE/include" "$HERE/test_update_lock.c" \
  -L"$LIBDIR" -lupdate_lock -Wl,-rpath,"$OUT/lib" -pthread -o "$OUT/test_update_lock"
"$CC" -std=c99 "${WARN[@]}" -g -O1 -I"$CRATE/include" "$HERE/handover_peer.c" \
  -L"$LIBDIR" -lupdate_lock -Wl,-rpath,"$OUT/lib" -pthread -o "$OUT/handover_peer"
# The peer under valgrind as well (exec keeps its pid, so the tests can signal it).
cat > "$OUT/handover_peer_vg" <<EOF
#!/bin/sh
exec valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --show-leak-kinds=definite "$OUT/handover_peer" "\$@"
EOF
chmod +x "$OUT/handover_peer_vg"
if ! UL_HANDOVER_PEER=$OUT/handover_peer_vg timeout 600 valgrind -q --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    "$OUT/test_update_lock" "$@"; then
  echo "C tests under valgrind FAILED" >&2
  status=1
fi

step "C tests, static library, ASan + UBSan"
"$CC" -std=c99 "${WARN[@]}" -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
  -fno-sanitize-recover=undefined -I"$CRATE/include" "$HERE/test_update_lock.c" \
  "$LIBDIR/libupdate_lock.a" -pthread -ldl -lm -o "$OUT/test_update_lock_asan"
"$CC" -std=c99 "${WARN[@]}" -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
  -fno-sanitize-recover=undefined -I"$CRATE/include" "$HERE/handover_peer.c" \
  "$LIBDIR/libupdate_lock.a" -pthread -ldl -lm -o "$OUT/handover_peer_asan"
if ! UL_HANDOVER_PEER=$OUT/handover_peer_asan \
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    timeout 600 "$OUT/test_update_lock_asan" "$@"; then
  echo "C tests under ASan/UBSan FAILED" >&2
  status=1
fi

step "C++ translation unit including the header, under valgrind"
"$CXX" -std=c++11 "${WARN[@]}" -g -I"$CRATE/include" "$HERE/cxx_smoke.cpp" \
  -L"$LIBDIR" -lupdate_lock -Wl,-rpath,"$OUT/lib" -o "$OUT/cxx_smoke"
if ! timeout 120 valgrind -q --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite "$OUT/cxx_smoke"; then
  echo "C++ test FAILED" >&2
  status=1
fi
exit $status
