"""The service of the switch benchmark under `lockctl handover run --listen http=...`:
serves HTTP on the inherited listener (fd 3, socket activation), answers with its release,
says READY=1 to $NOTIFY_SOCKET once it accepts (sd_notify), prints "ready", and on SIGTERM
stops accepting, finishes the requests in flight and exits 0 (as a well-behaved app does).
"""
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = os.environ.get("RELEASE", "?")
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
listener = socket.socket(fileno=3)


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = RELEASE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


httpd = ThreadingHTTPServer(listener.getsockname()[:2], Hello, bind_and_activate=False)
httpd.socket = listener
httpd.daemon_threads = False
t = threading.Thread(target=httpd.serve_forever, args=(0.01,))
t.start()
notify = os.environ.get("NOTIFY_SOCKET")
if notify:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", "\0" + notify[1:] if notify.startswith("@") else notify)
print("ready", flush=True)
signal.sigwait([signal.SIGTERM])
httpd.shutdown()
httpd.server_close()
sys.exit(0)
