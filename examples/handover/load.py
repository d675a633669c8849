"""Continuous HTTP load on loopback, bounded in count and time, counting failed requests.

    python3 load.py PORT STOPFILE [MAX_SECONDS] [MAX_REQUESTS]

Sends sequential GET requests (a fresh connection each, 5 s timeout) until STOPFILE exists,
MAX_SECONDS (default 30) pass or MAX_REQUESTS (default 100000) were sent. Prints one line:
``release R`` the first time release R answers (a readiness signal for the driver), then at
the end ``ok=N failed=M releases=v1,v2`` (the releases that answered, in order of first
answer); the first few errors go to stderr.
"""

import os
import socket
import sys
import time

port, stopfile = int(sys.argv[1]), sys.argv[2]
max_s = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
max_n = int(sys.argv[4]) if len(sys.argv) > 4 else 100000
ok = failed = 0
releases: list = []
end = time.monotonic() + max_s
print("load started", flush=True)
while ok + failed < max_n and time.monotonic() < end and not os.path.exists(stopfile):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
            raise ValueError(f"bad answer {head[:40]!r}")
        rel = body.split()[0].decode()
        if rel not in releases:
            releases.append(rel)
            print(f"release {rel}", flush=True)
        ok += 1
    except Exception as e:  # every failure counts: refused, reset, timeout, bad answer
        failed += 1
        if failed <= 5:
            print(f"load: request failed: {e!r}", file=sys.stderr, flush=True)
print(f"ok={ok} failed={failed} releases={','.join(releases)}", flush=True)
