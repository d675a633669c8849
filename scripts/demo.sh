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
cargo build -q -p lockctl -p lockctl-rehearse
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
rc=0; in_container "$LOCKCTL" status || rc=$?
echo "  (lockctl status: exit $rc; 73 = something holds off application updates, as lockfile says)"
echo "  host view of the service directory:"; ls -l "$SVC" | sed 's/^/    /'
device_view

say "3. The app releases: lockctl release"
in_container "$LOCKCTL" release
device_view

say "3b. An update was waiting: the Supervisor tried while the app held the lock (step 2), so the app lets it in first"
# The holder saw that attempt and left the dated note update-waiting beside the lock; the
# app's next lock yields to it (up to 60 s) until the Supervisor's lock appears.
rc=0; in_container "$LOCKCTL" run --no-wait -- true 2>/dev/null || rc=$?
echo "  lockctl run --no-wait: exit $rc (73: the lock is free, but kept for the Supervisor)"
in_container "$LOCKCTL" run -q -- sh -c 'echo "  the app took the lock again, after the Supervisor"' &
APP=$!
while ! in_container sh -c 'for f in /proc/[0-9]*/fd/*; do [ "$(readlink "$f" 2>/dev/null)" = anon_inode:inotify ] && exit 0; done; exit 1'; do
  sleep 0.05   # until the app is waiting (it watches the lock directory)
done
setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$SVC/updates.lock"
echo "  Supervisor  (lockfile -r 0 as uid 65534): got the lock while the app waited"
sleep 0.3
setpriv --reuid=65534 --regid=65534 --clear-groups rm -f "$SVC/updates.lock"
echo "  Supervisor  released its lock (the update is done)"
wait "$APP"

say "4. A crashed app: the holder is killed with SIGKILL"
in_container "$LOCKCTL" acquire
pkill -9 --ns "$SLEEPER" --nslist pid -f "lockctl acquire"
rc=0; in_container "$LOCKCTL" status --no-legacy || rc=$?
echo "  (lockctl status: exit $rc)"
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

say "6. Hand-over (io.balena.update.strategy: hand-over): v1 passes its listening socket to v2"
# Each release is its own emulated container (mount + PID namespace, the same service
# directory at /tmp/balena), started the way the Supervisor does it: v2 while v1 still runs,
# then SIGTERM to v1 right away (current Supervisors do not wait for handover-complete).
PORT=18089
start_release() {
  unshare -m -p -f --mount-proc --kill-child sh -c '
    mount --make-rprivate / && mkdir -p /tmp/balena /tmp/resin &&
    mount --bind "$1" /tmp/balena && mount --bind "$1" /tmp/resin &&
    export BALENA_SERVICE_HANDOVER_COMPLETE_PATH=/tmp/balena/handover-complete &&
    exec "$2" handover run --release "$3" --listen "http=127.0.0.1:$4" -- python3 "$5" "$3"' \
    release "$SVC" "$LOCKCTL" "$1" "$PORT" "$PWD/scripts/demo_http.py" 2>&1 &
}
fetch() { python3 -c 'import sys,urllib.request; print("  GET ->", urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())' "http://127.0.0.1:$PORT/"; }
# docker stop: SIGTERM to the container's PID 1 (unshare does not pass signals on).
stop_container() { kill -TERM "$(pgrep -P "$1")" 2>/dev/null || true; }
start_release v1; V1=$!
for _ in $(seq 100); do fetch >/dev/null 2>&1 && break; sleep 0.05; done  # wait for v1 to listen
fetch
# A client on loopback keeps requesting through the whole update and counts failures.
python3 - "$PORT" > "$ROOT/load" <<'PY' &
import sys, time, urllib.request
ok = failed = 0; seen = []
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=5).read().decode()
        ok += 1
        who = body.split()[2]
        if not seen or seen[-1] != who: seen.append(who)
    except Exception:
        failed += 1
print(f"  load during the update: {ok} requests answered, {failed} failed; answered by {' then '.join(seen)}")
PY
LOAD=$!
sleep 0.5
start_release v2; V2=$!
stop_container "$V1"   # the Supervisor stops the old container right after starting the new one
wait "$V1" && echo "  v1 exited 0: it handed over"
wait "$LOAD"; cat "$ROOT/load"
fetch
echo "  host view of the service directory:"; ls -l "$SVC" | sed 's/^/    /'
stop_container "$V2"; wait "$V2" || true

say "7. Rehearse an update before it reaches a fleet: lockctl rehearse"
# The old release holds the update lock for its first 1.5 s (a critical section): the
# Supervisor's lockfile (uid 65534) is refused and retried with its backoff; then SIGTERM,
# the new release starts, the Supervisor releases its lock. Each release is an emulated
# container, exactly as in the acts above.
"$LOCKCTL" rehearse --update-after 0.2s --download 0.5s --stop-grace 2s --observe 0.5s \
  --old "$LOCKCTL run -- sleep 1.5; trap 'exit 0' TERM; sleep 60 & wait" \
  --new "trap 'exit 0' TERM; sleep 60 & wait" 2>&1 | sed 's/^/  /'
echo
echo "  The same HTTP service (the hand-over entrypoint of act 6) under all four strategies:"
svc() { echo "exec $LOCKCTL handover run --term-grace 1 --release $1 --listen http=127.0.0.1:$PORT -- python3 $PWD/scripts/demo_http.py $1"; }
"$LOCKCTL" rehearse -q --compare --old "$(svc v1)" --new "$(svc v2)" --probe "http://127.0.0.1:$PORT/" \
  --download 1s --svg target/rehearse-demo.svg | sed 's/^/  /'
echo "  (picture of the four timelines: target/rehearse-demo.svg; docs/rehearse.md explains every column)"

say "8. Update-aware locking: hold the lock until the Supervisor API says an update is downloaded"
# The rehearsal serves the Supervisor API to its versions (address and key in the
# environment, as the io.balena.features.supervisor-api label gives them). This old release
# holds its lock from the start and lets go only once `lockctl device` reports the update
# downloaded: the Supervisor is held off through the download, then let in at once. In an
# app, update_lock.UpdateGate (Python), UpdateGate (Node.js) or ul_update_gate (C) do this.
"$LOCKCTL" rehearse -q --report "$ROOT/gate.json" --update-after 0.2s --download 1s --stop-grace 2s --observe 0.3s \
  --old "$LOCKCTL acquire && until $LOCKCTL device | grep -q downloaded; do sleep 0.1; done && $LOCKCTL device && $LOCKCTL release; trap 'exit 0' TERM; sleep 60 & wait" \
  --new "trap 'exit 0' TERM; sleep 60 & wait" | sed 's/^/  /'
python3 - "$ROOT/gate.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print("  the Supervisor's side:")
for e in report["events"]:
    if e["kind"] in ("update-start", "download-done", "lock-held", "lock-taken", "lock-released"):
        print(f"    {e['t_ms'] / 1000:6.3f} s  {e['kind']:<14} {e['detail'][:100]}")
PY
echo
echo "demo finished"
