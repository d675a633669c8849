#!/usr/bin/env bash
# lockctl torture holder (see holder.py): `lockctl run` around inside.py, forever. A lost lock
# shows as lockctl's "warning[lost]" line.
set -u
d=$1 marker=$2 hold=$3
inside=$(dirname "$0")/inside.py
err=$(mktemp)
trap 'rm -f "$err"' EXIT
while :; do
  echo acquiring
  "$LOCKCTL" run --timeout 10 --path "$d/updates.lock" --path "$d/resin-updates.lock" -- \
    python3 "$inside" "$marker" "$d/updates.lock" "$hold" 2> "$err" &
  lp=$!
  echo "holder-pid $lp"   # the pid in this round's lock record
  wait $lp
  rc=$?
  if [ $rc -eq 73 ]; then echo "err timeout"; continue; fi
  grep -q "took over" "$err" && echo "reclaimed 1"
  if grep -q "warning\[lost\]" "$err"; then echo "done lost"; else echo "done ok"; fi
  sleep "0.$((RANDOM % 400))"   # a gap the Supervisor can take the lock in
done
