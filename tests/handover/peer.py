"""Python peer of the cross-language hand-over matrix (same interface as
bindings-c/tests/handover_peer.c):

    peer.py serve SOCKET RELEASE   listen on 127.0.0.1:0, print "ready PORT", hand the
                                   listener ("http") and the state "port=PORT" to the first
                                   successor, print "granted SUCCESSOR", exit 0
    peer.py take SOCKET RELEASE    take over, print "taken PREDECESSOR STATE" (or "none"),
                                   accept one connection on the inherited listener, read a
                                   line, answer "hello from RELEASE", exit 0
"""

import os
import socket
import sys
import time

import update_lock

mode, sock, release = sys.argv[1:4]
if mode == "serve":
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with update_lock.HandoverServer(sock, release=release) as server:
        print(f"ready {port}", flush=True)
        req = server.accept(30)
        assert req is not None, "nobody came"
        peer = server.grant(req, f"port={port}".encode(), {"http": listener})
        if os.environ.get("HANDOVER_T0"):  # for bench/handover.sh: when the grant returned
            print(f"t1 {time.monotonic()}", flush=True)
        print(f"granted {peer.release}", flush=True)
else:
    if os.environ.get("HANDOVER_T0"):  # for bench/handover.sh: when the take call starts
        print(f"t0 {time.monotonic()}", flush=True)
    got = update_lock.handover_take(sock, release=release)
    if got is None:
        print("none", flush=True)
        sys.exit(4)
    print(f"taken {got.predecessor.release} {got.state.decode()}", flush=True)
    listener = got.fds["http"]
    assert isinstance(listener, socket.socket)
    listener.setblocking(True)  # a Node.js old version's listener arrives non-blocking
    conn, _ = listener.accept()
    with conn:
        conn.makefile("rb").readline()
        conn.sendall(f"hello from {release}\n".encode())
