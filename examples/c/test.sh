#!/usr/bin/env bash
# Test of the C example: installs libupdate_lock (debug build) into a temporary PREFIX with
# `make install`, builds sensor-logger against it through pkg-config (shared and static),
# and runs it against a temporary service directory while the device's real readers look:
# the Supervisor (`lockfile -r 0` as uid 65534) and the host OS update reboot (`flock -nx`).
#
#   bash examples/c/test.sh
#
# Ends with "c example: N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail
# The test probes with the Supervisor's real lockfile; a probe of a held lock is an attempt
# that the example's next acquisition would yield to (up to 60 s). The yield has its own
# tests; here it is off.
export UPDATE_LOCK_YIELD_TO_UPDATES=0
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

for tool in pkg-config cc make lockfile flock setpriv; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing" >&2; exit 1; }
done
cargo build -q -p lockctl || { echo "test.sh: cannot build lockctl" >&2; exit 1; }
LOCKCTL=$ROOT/target/debug/lockctl

WORK=$(mktemp -d /tmp/c-example.XXXXXX)
chmod 0755 "$WORK"
PREFIX=$WORK/prefix
SVC=$WORK/svc
mkdir -p "$SVC" "$WORK/build"
chmod 1777 "$SVC"
LOCK1=$SVC/updates.lock
LOCK2=$SVC/resin-updates.lock
cleanup() {
  "$LOCKCTL" release --path "$LOCK1" --path "$LOCK2" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1" >&2; }
check() { # check NAME COMMAND...
  local name=$1
  shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# 1. Install and build from the installed library only.
if ! make -s -C bindings-c install PROFILE=debug PREFIX="$PREFIX" >"$WORK/install.log" 2>&1; then
  cat "$WORK/install.log" >&2
  echo "test.sh: make install failed" >&2
  exit 1
fi
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
check "pkg-config finds update_lock $(pkg-config --modversion update_lock 2>/dev/null)" \
  pkg-config --exists update_lock
cp "$HERE/sensor_logger.c" "$HERE/Makefile" "$WORK/build/"
if ! make -s -C "$WORK/build" all static WARN="-Wall -Wextra -Werror -pedantic" \
    LDFLAGS="-Wl,-rpath,$PREFIX/lib"; then
  echo "test.sh: cannot build the example against the installed library" >&2
  exit 1
fi
LOGGER=$WORK/build/sensor-logger
STATIC=$WORK/build/sensor-logger-static
check "shared build links libupdate_lock.so.0" \
  sh -c "ldd '$LOGGER' | grep -q 'libupdate_lock.so.0 => $PREFIX/lib/'"
check "static build needs no libupdate_lock.so" \
  sh -c "! ldd '$STATIC' | grep -q libupdate_lock"

# A hook run inside the lock: what the two readers see during the write.
cat >"$WORK/probe.sh" <<'PROBE'
#!/bin/sh
for f in "$@"; do
  setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$f" 2>/dev/null
  rc=$?
  [ "$rc" = 0 ] && rm -f "$f"
  echo "supervisor $(basename "$f") $rc"
done
flock -nx "$1" -c true
echo "reboot $(basename "$1") $?"
echo "lines $(wc -l <"$SAMPLE_FILE")"
PROBE
chmod +x "$WORK/probe.sh"

# 2. Three samples, both lock names, readers probed inside each critical section.
for bin in "$LOGGER" "$STATIC"; do
  name=$(basename "$bin")
  data=$WORK/$name.csv
  out=$("$bin" -o "$data" -n 3 -i 0 -t 5000 -l "$LOCK1" -l "$LOCK2" \
    -x "$WORK/probe.sh $LOCK1 $LOCK2 >>$WORK/$name.probe" 2>"$WORK/$name.err")
  rc=$?
  check "$name: exits 0 after 3 samples" test "$rc" = 0
  check "$name: 3 samples written" test "$(wc -l <"$data")" = 3
  check "$name: printed 3 sample lines" test "$(printf '%s\n' "$out" | grep -c '^sample [123] written')" = 3
  check "$name: the Supervisor saw both locks held during every write" \
    test "$(grep -c 'supervisor .* 73$' "$WORK/$name.probe")" = 6
  check "$name: the reboot probe failed during every write" \
    test "$(grep -c '^reboot updates.lock 1$' "$WORK/$name.probe")" = 3
  check "$name: the data file was written before the hook ran" \
    sh -c "grep '^lines' '$WORK/$name.probe' | tr -d ' ' | paste -sd, - | grep -qx 'lines1,lines2,lines3'"
  check "$name: no lock left behind" test ! -e "$LOCK1" -a ! -e "$LOCK2"
  check "$name: CSV format" grep -qE '^[0-9]+\.[0-9]{3},3,[0-9]+\.[0-9]{2}$' "$data"
done

# 3. The Supervisor holds the legacy lock: the logger waits its timeout, writes nothing, 73.
setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$LOCK2"
data=$WORK/held.csv
"$LOGGER" -o "$data" -n 1 -t 200 -l "$LOCK1" -l "$LOCK2" 2>"$WORK/held.err" >/dev/null
rc=$?
check "held by the Supervisor: exit 73" test "$rc" = 73
check "held by the Supervisor: error[timeout] naming the Supervisor" \
  grep -q 'error\[timeout\]: timed out after .*held by the balena Supervisor' "$WORK/held.err"
check "held by the Supervisor: nothing written" test ! -e "$data"
check "held by the Supervisor: its lock untouched, ours undone" \
  test "$(stat -c %u "$LOCK2")" = 65534 -a ! -e "$LOCK1"
rm -f "$LOCK2"

# 4. SIGTERM while waiting for a lock held by lockctl: the wait is cancelled, exit 0.
"$LOCKCTL" acquire --path "$LOCK1" --no-legacy 2>/dev/null
fifo=$WORK/err.fifo
mkfifo "$fifo"
data=$WORK/cancel.csv
"$LOGGER" -o "$data" -n 1 -t -1 -l "$LOCK1" 2>"$fifo" >/dev/null &
pid=$!
exec 3<"$fifo"
seen=""
while IFS= read -r line <&3; do
  case $line in *"waiting for the update lock"*) seen=yes; break ;; esac
done
check "cancel: the logger reports that it waits" test "$seen" = yes
kill -TERM "$pid"
cat <&3 >"$WORK/cancel.err"
exec 3<&-
wait "$pid"
rc=$?
check "cancel: SIGTERM while waiting exits 0" test "$rc" = 0
check "cancel: says nothing was written" grep -q 'stopping while waiting for the lock' "$WORK/cancel.err"
check "cancel: nothing written" test ! -e "$data"
check "cancel: lockctl's lock untouched" sh -c "grep -q 'program=lockctl acquire' '$LOCK1'"
"$LOCKCTL" release --path "$LOCK1" --no-legacy 2>/dev/null

# 5. Usage errors.
"$LOGGER" -q >/dev/null 2>&1
check "usage error exits 64" test $? = 64

echo "c example: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
