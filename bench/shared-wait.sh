#!/usr/bin/env bash
# How long a second container of the app waits for the update lock while the first is inside
# a 2 s critical section: exclusive (the default) against shared mode (`--shared`). Both
# "containers" are `unshare` mount+PID namespaces with the service directory bind-mounted at
# /tmp/balena and /tmp/resin, as on a device; both run `lockctl run` on the default paths.
#
#   bash bench/shared-wait.sh [ROUNDS]      (root; builds lockctl)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
cargo build -q -p lockctl
L=$PWD/target/debug/lockctl
svc=$(mktemp -d /tmp/shared-wait.XXXXXX)
chmod 1777 "$svc"
trap 'rm -rf "$svc"' EXIT
container() { # container CMD...: run CMD in a new mount+PID namespace with the service dir mounted
  unshare -m -p -f --mount-proc sh -c 'mkdir -p /tmp/balena /tmp/resin && mount --bind "$0" /tmp/balena && mount --bind "$0" /tmp/resin && exec "$@"' "$svc" "$@"
}
now() { date +%s.%N; }
for mode in exclusive shared; do
  flag=(); [ $mode = shared ] && flag=(--shared)
  waits=()
  for _ in $(seq "$ROUNDS"); do
    ready=$svc/first-inside
    rm -f "$ready"
    container "$L" run "${flag[@]}" -q -- sh -c "touch /tmp/balena/first-inside; sleep 2" &
    first=$!
    while [ ! -e "$ready" ]; do sleep 0.005; done   # the first container is inside
    t0=$(now)
    container "$L" run "${flag[@]}" -q -- true
    t1=$(now)
    waits+=("$(python3 -c "print(round(($t1 - $t0) * 1000))")")
    wait "$first"
    rm -f "$ready"
  done
  printf '%-10s second container waited (ms): %s\n' "$mode" "${waits[*]}"
done
