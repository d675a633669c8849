"""The app of the demo's hand-over act: an HTTP server on the listening socket lockctl passes
in systemd form (LISTEN_FDS, fd 3). Answers "hello from <release>"; on SIGTERM it stops
accepting, finishes the request in flight and exits (the socket stays open in lockctl, which
hands it to the next release)."""

import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

RELEASE = sys.argv[1]
assert os.environ.get("LISTEN_FDS") == "1", "run me through lockctl handover run --listen"
listener = socket.socket(fileno=3)


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {RELEASE} (pid {os.getpid()} in its container)\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


httpd = HTTPServer(listener.getsockname(), Hello, bind_and_activate=False)
httpd.socket = listener
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
print(f"  [{RELEASE}] serving on {listener.getsockname()[1]}, "
      f"UPDATE_LOCK_HANDOVER={os.environ.get('UPDATE_LOCK_HANDOVER')}", flush=True)
httpd.serve_forever(0.05)
