#!/usr/bin/env bash
# Runs the Python example worker for real against a temporary service directory and checks
# what the device would see: inside each write the Supervisor's `lockfile -r 0` (uid 65534)
# and the reboot's `flock -nx` find the lock held; between writes and after exit, free.
#
#   PYTHON=target/py-venv/bin/python bash examples/python/test.sh
#
# PYTHON must have update_lock installed (scripts/test-python.sh does that). Exits non-zero
# if anything failed.
set -uo pipefail
# The test probes with the Supervisor's real lockfile; a probe of a held lock is an attempt
# that the example's next acquisition would yield to (up to 60 s). The yield has its own
# tests; here it is off.
export UPDATE_LOCK_YIELD_TO_UPDATES=0

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/target/py-venv/bin/python}
LOCKCTL=${LOCKCTL:-$ROOT/target/debug/lockctl}
"$PYTHON" -c 'import update_lock' || { echo "test.sh: $PYTHON cannot import update_lock" >&2; exit 1; }
[ -x "$LOCKCTL" ] || { echo "test.sh: $LOCKCTL missing (cargo build -p lockctl)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/python-example.XXXXXX)
chmod 0755 "$WORK"   # uid 65534 (the Supervisor's lockfile) must reach the service directory
SVC="$WORK/svc"
mkdir -p "$SVC" "$WORK/data"
chmod 1777 "$SVC"
unset RESIN_APP_LOCK_PATH RESIN_SERVICE_KILL_ME_PATH BALENA_APP_LOCK_PATH BALENA_SERVICE_HANDOVER_COMPLETE_PATH
export UPDATE_LOCK_PATHS="$SVC/updates.lock $SVC/resin-updates.lock"
export STATE_FILE="$WORK/data/state.json"
LOCK_ARGS=(--path "$SVC/updates.lock" --path "$SVC/resin-updates.lock")
cleanup() {
  "$LOCKCTL" release "${LOCK_ARGS[@]}" >/dev/null 2>&1
  [ -n "${WPID:-}" ] && kill "$WPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# What both readers see, one line (Supervisor on both names, reboot on updates.lock).
cat > "$WORK/probe" <<PROBE
#!/bin/sh
out=""
for name in updates.lock resin-updates.lock; do
  setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$SVC/\$name" 2>/dev/null
  rc=\$?
  [ "\$rc" = 0 ] && rm -f "$SVC/\$name"
  out="\$out supervisor=\$rc"
done
existed=0; [ -e "$SVC/updates.lock" ] && existed=1
flock -nx "$SVC/updates.lock" true; rc=\$?
[ "\$existed" = 0 ] && rm -f "$SVC/updates.lock"
echo "\$out reboot=\$rc"
PROBE
chmod 0755 "$WORK/probe"
HELD=" supervisor=73 supervisor=73 reboot=1"
FREE=" supervisor=0 supervisor=0 reboot=0"

passed=0 failed=0
check() { # NAME ACTUAL EXPECTED
  if [ "$2" == "$3" ]; then passed=$((passed + 1)); echo "ok   $1"
  else failed=$((failed + 1)); printf 'FAIL %s\n  expected: %s\n  actual:   %s\n' "$1" "$3" "$2"; fi
}

# 1. Three writes, each probed from inside the critical section (before the rename).
out=$(INTERVAL=0 ITERATIONS=3 LOCK_TIMEOUT=10 INSIDE_HOOK="$WORK/probe >> $WORK/inside" \
      "$PYTHON" "$HERE/worker.py" 2>&1)
check "worker exits 0 after 3 writes" "$?" "0"
check "each write was under the lock, as both readers see it" "$(cat "$WORK/inside")" "$HELD
$HELD
$HELD"
check "state file has 3 writes" "$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["writes"])' "$STATE_FILE")" "3"
check "lock free after the worker" "$("$WORK/probe")" "$FREE"
check "no temp files left" "$(ls -A "$WORK/data")" "state.json"
[[ "$out" == *"state written (3 writes)"* ]] || { failed=$((failed + 1)); echo "FAIL log: $out"; }

# 2. An update in progress (the lock held by someone else): the round is skipped, the state
#    untouched, the other holder's lock untouched.
out=$("$LOCKCTL" acquire "${LOCK_ARGS[@]}" 2>&1) || { echo "lockctl acquire failed: $out"; exit 1; }
before=$(cat "$STATE_FILE")
out=$(INTERVAL=0 ITERATIONS=1 LOCK_TIMEOUT=0.3 "$PYTHON" "$HERE/worker.py" 2>&1)
check "held lock: worker exits 0 after its one round" "$?" "0"
case "$out" in
  *"update in progress, skipping this round [timeout]"*"held by another app"*) passed=$((passed + 1)); echo "ok   held lock: round skipped with the core's message" ;;
  *) failed=$((failed + 1)); echo "FAIL held lock: $out" ;;
esac
check "state untouched while held" "$(cat "$STATE_FILE")" "$before"
check "the holder's lock untouched" "$("$WORK/probe")" "$HELD"
out=$("$LOCKCTL" release "${LOCK_ARGS[@]}" 2>&1) || { echo "lockctl release failed: $out"; exit 1; }

# 3. SIGTERM (docker stop) while idle between writes: exits 0 at once, nothing held.
coproc WORKER { INTERVAL=600 ITERATIONS=0 LOCK_TIMEOUT=10 exec "$PYTHON" "$HERE/worker.py" 2>&1; }
WPID=$WORKER_PID
got=""
while read -r -t 20 line <&"${WORKER[0]}"; do
  [[ "$line" == *"state written"* ]] && { got=yes; break; }
done
check "long-running worker wrote once" "$got" "yes"
check "idle between writes: lock free" "$("$WORK/probe")" "$FREE"
kill -TERM "$WPID"
wait "$WPID"
check "SIGTERM: exit 0" "$?" "0"
WPID=""
check "after SIGTERM: lock free" "$("$WORK/probe")" "$FREE"

echo "python example: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
