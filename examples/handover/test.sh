#!/usr/bin/env bash
# Hand-over under load: continuous HTTP requests on loopback while release v1 of a service
# hands its listening socket to v2, as the current Supervisor runs it (v2 starts while v1
# runs; v1 gets SIGTERM right away). Target: 0 failed requests. Then the same load through a
# plain stop-then-start, to show what the hand-over saves (reported, not asserted).
# Needs the Python wheel in target/py-venv (scripts/test-python.sh) and the Node.js addon
# (scripts/test-node.sh); fails if either is missing. Bounded: every wait has a deadline.
set -euo pipefail
# The test probes with the Supervisor's real lockfile; a probe of a held lock is an attempt
# that the example's next acquisition would yield to (up to 60 s). The yield has its own
# tests; here it is off.
export UPDATE_LOCK_YIELD_TO_UPDATES=0
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$ROOT/target/py-venv/bin/python}
"$PY" -c 'import update_lock' || { echo "handover example: the update_lock wheel is missing (run scripts/test-python.sh)" >&2; exit 1; }
ls "$ROOT"/bindings-node/*.node >/dev/null 2>&1 || { echo "handover example: the Node.js addon is not built (run scripts/test-node.sh)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/handover-example.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/node_modules" && ln -s "$ROOT/bindings-node" "$WORK/node_modules/update-lock"
export NODE_PATH=$WORK/node_modules HOST=127.0.0.1

fail() { echo "FAIL: $*" >&2; exit 1; }

# start NAME LANG RELEASE GRACE: run the app with its stdout on a FIFO; sets $STARTED (pid)
# and waits for its "ready" line (the real readiness signal), at most 30 s.
start() {
  local name=$1 lang=$2 release=$3 grace=$4 fifo="$DIR/$1.out"
  mkfifo "$fifo"
  case $lang in
    python) RELEASE=$release GRACE=$grace "$PY" "$HERE/python/app.py" > "$fifo" 2>> "$DIR/log" & ;;
    node) RELEASE=$release GRACE=$grace node "$HERE/node/app.js" > "$fifo" 2>> "$DIR/log" & ;;
  esac
  STARTED=$!
  PIDS+=("$STARTED")
  local line
  exec {fd}< "$fifo"
  read -r -t 30 line <&"$fd" || fail "$name ($lang $release) did not get ready; log: $(cat "$DIR/log")"
  exec {fd}<&-
  case $line in "ready $release "*) ;; *) fail "$name said '$line'" ;; esac
  PORT=${line##* }
}

# wait_exit PID SECONDS: wait for the process to exit (we are its parent), bounded.
wait_exit() {
  local pid=$1 limit=$2
  sh -c 'sleep "$1"; kill -KILL "$2" 2>/dev/null' guard "$limit" "$pid" & local guard=$!
  local rc=0; wait "$pid" || rc=$?
  # SIGKILL: a forked child that has not exec'd yet would run this script's EXIT trap on
  # SIGTERM (and delete the work directory).
  kill -KILL "$guard" 2>/dev/null || true; wait "$guard" 2>/dev/null || true
  return $rc
}

# scenario NAME OLD_LANG NEW_LANG MODE: MODE handover or restart. Prints the load result.
RESULTS=()
scenario() {
  local name=$1 old=$2 new=$3 mode=$4
  DIR="$WORK/$name"; mkdir -p "$DIR"; chmod 1777 "$DIR"; : > "$DIR/log"
  export BALENA_SERVICE_HANDOVER_COMPLETE_PATH="$DIR/handover-complete"
  export PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local grace=8; [ "$mode" = restart ] && grace=0
  start v1 "$old" v1 "$grace"; local v1=$STARTED
  mkfifo "$DIR/load.fifo"
  "$PY" "$HERE/load.py" "$PORT" "$DIR/stop" 40 > "$DIR/load.fifo" & local load=$!
  PIDS+=("$load")
  local lfd line; exec {lfd}< "$DIR/load.fifo"
  read -r -t 10 line <&"$lfd" || fail "$name: load did not start"
  read -r -t 10 line <&"$lfd" && [ "$line" = "release v1" ] || fail "$name: v1 did not answer the load ($line)"
  if [ "$mode" = handover ]; then
    start v2 "$new" v2 0
    kill -TERM "$v1" 2>/dev/null || true    # the Supervisor stops the old release right away (it may be gone already)
    wait_exit "$v1" 15 || fail "$name: v1 did not exit 0 after handing over; log: $(cat "$DIR/log")"
    [ -e "$DIR/handover-complete" ] || fail "$name: no handover-complete signal; dir: $(ls -la "$DIR" 2>&1); log: $(cat "$DIR/log" 2>&1)"
  else
    kill -TERM "$v1"                        # plain stop ...
    wait_exit "$v1" 15 || fail "$name: v1 did not exit 0 on SIGTERM"
    start v2 "$new" v2 0                    # ... then start
  fi
  # Stop the load once v2 has answered it (v2 with GRACE=0 exits at once at the end).
  read -r -t 30 line <&"$lfd" && [ "$line" = "release v2" ] || fail "$name: v2 did not answer the load ($line)"
  touch "$DIR/stop"
  read -r -t 60 line <&"$lfd" || fail "$name: no load result"
  exec {lfd}<&-
  wait "$load" || true
  local answer; answer=$("$PY" -c 'import socket,sys; c=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=5); c.sendall(b"GET / HTTP/1.0\r\n\r\n"); print(c.makefile("rb").read().split(b"\r\n\r\n")[1].split()[0].decode())' "$PORT")
  [ "$answer" = v2 ] || fail "$name: after the update the service answered '$answer', not v2"
  kill -TERM "$STARTED"; wait_exit "$STARTED" 15 || true
  local ok=${line#ok=}; ok=${ok%% *}
  local failed=${line#*failed=}; failed=${failed%% *}
  [ "$ok" -gt 0 ] || fail "$name: the load made no successful request: $line"
  RESULTS+=("$(printf '%-28s %-9s %s' "$name" "$mode" "$line")")
  echo "ok   $name ($mode): $line"
  if [ "$mode" = handover ]; then
    [ "$failed" -eq 0 ] || fail "$name: $failed requests failed during the hand-over ($line); log: $(cat "$DIR/log")"
    case $line in *releases=v1,v2*) ;; *) fail "$name: expected v1 then v2 to answer: $line" ;; esac
  fi
}

scenario python-to-python python python handover
scenario node-to-node node node handover
scenario python-to-node python node handover
scenario node-to-python node python handover
scenario stop-then-start-python python python restart
scenario stop-then-start-node node node restart

echo
echo "failed requests per scenario (target for hand-over: 0):"
printf '  %s\n' "${RESULTS[@]}"
echo "handover example: all scenarios passed"
