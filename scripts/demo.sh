#!/usr/bin/env bash
# The main job: take an update lock inside an emulated service container and show it the
# way the device sees it - the Supervisor (`lockfile -r 0` as uid 65534: does the file
# exist?) and the host OS update reboot (`flock -nx` on every updates.lock).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root: it emulates a container (unshare) and runs the Supervisor's lockfile as uid 65534" >&2
  exit 1
fi
bash scripts/setup.sh
cargo build -q -p lockctl
LOCKCTL="$PWD/target/debug/lockctl"

# The host side, as on a device: one directory per service, mode 1777.
ROOT=$(mktemp -d /tmp/update-lock-demo.XXXXXX)
chmod 755 "$ROOT"   # uid 65534 (the Supervisor's lockfile) must reach the service directory
SERVICES="$ROOT/balena-supervisor/services"
SVC="$SERVICES/1234567/main"
mkdir -p "$SVC" && chmod 1777 "$SVC" && chmod -R go+rx "$ROOT/balena-supervisor"

# The service container: own mount + PID namespace, the service directory bind-mounted at
# /tmp/balena and /tmp/resin (same directory, two names), the Supervisor's variables set.
READY="$ROOT/container-ready"
mkfifo "$READY"
unshare -m -p -f --mount-proc --kill-child sh -c '
  mount --make-rprivate / && mkdir -p /tmp/balena /tmp/resin &&
  mount --bind "$1" /tmp/balena && mount --bind "$1" /tmp/resin &&
  echo up > "$2" && exec sleep infinity' demo "$SVC" "$READY" </dev/null >/dev/null 2>&1 &
CONTAINER=$!
read -r _ < "$READY"
SLEEPER=$(pgrep -P "$CONTAINER" sleep)
cleanup() { kill -KILL "$SLEEPER" 2>/dev/null || true; wait "$CONTAINER" 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT

in_container() {
  nsenter -t "$SLEEPER" -m -p -- env \
    BALENA_APP_LOCK_PATH=/tmp/balena/updates.lock RESIN_APP_LOCK_PATH=/tmp/balena/updates.lock \
    BALENA_SERVICE_HANDOVER_COMPLETE_PATH=/tmp/balena/handover-complete \
    RESIN_SERVICE_KILL_ME_PATH=/tmp/balena/handover-complete "$@"
}
supervisor_view() {
  local rc=0
  setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$SVC/updates.lock" 2>/dev/null || rc=$?
  if [ $rc -eq 0 ]; then
    rm -f "$SVC/updates.lock"   # it got the lock: give it back
    echo "  Supervisor  (lockfile -r 0 as uid 65534): got the lock  -> application update may proceed"
  else
    echo "  Supervisor  (lockfile -r 0 as uid 65534): exit $rc        -> application update deferred"
  fi
}
reboot_view() {
  local blocked=0 f
  while IFS= read -r f; do
    flock -nx "$f" true || blocked=1
  done < <(find "$SERVICES" -name updates.lock)
  if [ $blocked -eq 1 ]; then
    echo "  Host OS reboot (flock -nx on updates.lock): busy       -> reboot waits"
  else
    echo "  Host OS reboot (flock -nx on updates.lock): free       -> reboot may proceed"
  fi
}
device_view() { supervisor_view; reboot_view; }
say() { printf '\n== %s\n' "$*"; }

say "1. No lock: the device may update and reboot"
device_view

say "2. The app takes the lock inside its container: lockctl acquire (default paths)"
in_container "$LOCKCTL" acquire
in_container "$LOCKCTL" status
echo "  host view of the service directory:"; ls -l "$SVC" | sed 's/^/    /'
device_view

say "3. The app releases: lockctl release"
in_container "$LOCKCTL" release
device_view

say "4. A crashed app: the holder is killed with SIGKILL"
in_container "$LOCKCTL" acquire
pkill -9 --ns "$SLEEPER" --nslist pid -f "lockctl acquire"
in_container "$LOCKCTL" status --no-legacy
device_view
echo "  -> the Supervisor stays blocked until the stale lock is cleared; the next lock takes it over:"
in_container "$LOCKCTL" run -- sh -c 'echo "  critical section runs with the lock"'

say "5. The Supervisor holds the lock (an update is being applied): the app waits, flock(1) does not"
setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$SVC/updates.lock"
rc=0; in_container "$LOCKCTL" run --no-wait -- true || rc=$?
echo "  lockctl run --no-wait: exit $rc (73 = held)"
if in_container flock -nx /tmp/balena/updates.lock true; then
  echo "  flock(1) -nx: 'took' the lock although the Supervisor holds it (why this SDK exists)"
fi
rm -f "$SVC/updates.lock"

say "6. Hand-over: the new release signals that it has taken over"
in_container "$LOCKCTL" handover complete --no-legacy
ls -l "$SVC" | sed 's/^/    /'
echo
echo "demo finished"
