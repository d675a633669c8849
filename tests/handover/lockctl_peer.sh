#!/usr/bin/env bash
# lockctl peer of the cross-language hand-over matrix (interface: see peer.py), for programs
# in any language: the old side is `lockctl handover run` with a child that serves on the
# listener lockctl created (LISTEN_FDS) and writes its state file; the new side is
# `lockctl handover take -- CMD`, CMD reading LISTEN_FDS and the state memfd.
#   lockctl_peer.sh serve|take SOCKET RELEASE      ($LOCKCTL: the lockctl binary)
set -euo pipefail
mode=$1 sock=$2 release=$3
LOCKCTL=${LOCKCTL:?set LOCKCTL}
if [ "$mode" = serve ]; then
  state=$(mktemp)
  trap 'rm -f "$state"' EXIT
  # The child prints "ready PORT" once lockctl serves (it binds before starting the child),
  # keeps the state file, and exits on the SIGTERM of lockctl's release step.
  "$LOCKCTL" handover run --socket "$sock" --release "$release" --no-signal \
    --listen http=127.0.0.1:0 --state-file "$state" --timeout 30 -- python3 -c '
import os, signal, socket, sys
assert os.environ["LISTEN_FDS"] == "1" and os.environ["UPDATE_LOCK_HANDOVER"] == "none"
port = socket.socket(fileno=3).getsockname()[1]
open(sys.argv[1], "w").write(f"port={port}")
print(f"ready {port}", flush=True)
signal.sigwait([signal.SIGTERM])
' "$state"
  echo "granted ?"   # lockctl exits 0 only once it has handed over
else
  exec "$LOCKCTL" handover take --socket "$sock" --release "$release" -- python3 -c '
import os, socket, sys
if os.environ["UPDATE_LOCK_HANDOVER"] != "taken":
    print("none", flush=True); sys.exit(4)
assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_FDNAMES"] == "http"
assert os.environ["LISTEN_PID"] == str(os.getpid())
state = os.read(int(os.environ["UPDATE_LOCK_HANDOVER_STATE_FD"]), 65536).decode()
pred = os.environ["UPDATE_LOCK_PREDECESSOR_RELEASE"]
print(f"taken {pred} {state}", flush=True)
listener = socket.socket(fileno=3)
listener.setblocking(True)  # descriptors keep O_NONBLOCK as the old version set it
conn, _ = listener.accept()
conn.makefile("rb").readline()
conn.sendall(f"hello from {sys.argv[1]}\n".encode())
' "$release"
fi
