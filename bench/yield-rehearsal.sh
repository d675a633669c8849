#!/usr/bin/env bash
# The Supervisor's wait for an app that cycles its lock (2 s holds, 0.3 s gaps: a shell loop
# of `lockctl run -- sleep 2`), with the yield to updates (the default, 60 s) and without it
# (UPDATE_LOCK_YIELD_TO_UPDATES=0), side by side, for several phases of the Supervisor's first
# attempt against the app's cycle. Each run is a `lockctl rehearse` (the Supervisor's real
# lockfile as uid 65534 with its backoff) that gives up after --timeout.
#
#   bash bench/yield-rehearsal.sh [TIMEOUT_S]      (root; builds lockctl and lockctl-rehearse)
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT=${1:-60}
cargo build -q -p lockctl -p lockctl-rehearse
L=$PWD/target/${CARGO_TARGET_DIR:+}debug/lockctl
cyc="while :; do $L run -q -- sleep 2; sleep 0.3; done"
out=$(mktemp -d /tmp/yield-rehearsal.XXXXXX)
printf '%-10s %-26s %-26s\n' "phase" "with yield (default)" "without (yield 0)"
for after in 0.5 0.8 1.1 1.4 1.7 2.0 2.3 2.6; do
  line=$(printf '%-10s' "${after}s")
  for y in 60 0; do
    timeout $((TIMEOUT + 60)) "$L" rehearse -q --json \
      --old "UPDATE_LOCK_YIELD_TO_UPDATES=$y exec sh -c '$cyc'" --new "sleep 600" \
      --download 0 --update-after "${after}s" --timeout "${TIMEOUT}s" --stop-grace 1s \
      > "$out/r-$after-$y.json" || true
    cell=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]
gave_up = any("still blocked" in p for p in r["problems"])
b, n = s["blocked_by_lock_ms"] / 1000, s["lock_attempts"]
print(f"{b:6.1f} s, {n} tries" + (" GAVE UP" if gave_up else ""))
' "$out/r-$after-$y.json")
    line+=$(printf ' %-26s' "$cell")
  done
  echo "$line"
done
echo "(reports in $out)"
