"""Timings for bench/api.sh: per-call latency of GET /v1/device, p50 and p99, and the ratio
to the raw-socket floor, all against the same server in the same run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, List, Tuple

import update_lock

KEY = "bench-key"
BODY = json.dumps({"status": "Idle", "update_pending": False, "update_downloaded": False,
                   "update_failed": False, "download_progress": None, "commit": "c"}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *a: object) -> None:
        pass


def timed(n: int, f: Callable[[], object]) -> List[float]:
    for _ in range(5):
        f()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    n, lockctl, out_path = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    addr = f"http://127.0.0.1:{port}"
    api = update_lock.SupervisorApi(addr, KEY)
    req = f"GET /v1/device HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n".encode()

    def raw() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(req)
            while s.recv(65536):
                pass

    def urllib_call() -> None:
        r = urllib.request.Request(f"{addr}/v1/device", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(r, timeout=5) as resp:
            json.loads(resp.read())

    d = tempfile.mkdtemp()
    gate = update_lock.UpdateGate(api, paths=[os.path.join(d, "updates.lock")]).acquire()
    env = dict(os.environ, BALENA_SUPERVISOR_ADDRESS=addr, BALENA_SUPERVISOR_API_KEY=KEY)
    rows: List[Tuple[str, List[float]]] = [
        ("raw socket request (floor)", timed(n, raw)),
        ("update-lock SupervisorApi.device() (Python)", timed(n, api.device)),
        ("update-lock UpdateGate.safe_point(), no update (Python)", timed(n, gate.safe_point)),
        ("urllib.request + json (Python stdlib)", timed(n, urllib_call)),
        ("lockctl device (a process per call)", timed(max(n // 5, 20), lambda: subprocess.run([lockctl, "device"], env=env, check=True, capture_output=True))),
    ]
    if shutil.which("curl"):
        rows.append(("curl (a process per call)", timed(max(n // 5, 20), lambda: subprocess.run(
            ["curl", "-sf", "-H", f"Authorization: Bearer {KEY}", f"{addr}/v1/device"], check=True, capture_output=True))))
    gate.release()
    shutil.rmtree(d)
    floor = statistics.median(rows[0][1])
    lines = [
        "# Supervisor API client: GET /v1/device on loopback",
        "",
        f"One `ThreadingHTTPServer` on loopback, {n} calls each (processes: {max(n // 5, 20)}), same run; "
        "debug build of the core. Ratio = p50 / p50 of the raw socket request.",
        "",
        "| client | p50 ms | p99 ms | ratio to floor |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, v in rows:
        v.sort()
        p50, p99 = statistics.median(v), v[min(len(v) - 1, int(len(v) * 0.99))]
        lines.append(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / floor:.2f}x |")
    text = "\n".join(lines) + "\n"
    out_path.write_text(text)
    print(text)
    server.shutdown()


if __name__ == "__main__":
    main()
