"""An HTTP service that hands its listening socket to the next release (update-lock hand-over).

On start it takes the listening socket over from the running release, if there is one, else it
binds PORT (first start). It answers every request with its release name and pid. For the
next release it serves the hand-over: when a successor asks, it stops accepting, finishes the
requests in flight, hands over the socket and its request count, and exits 0. A listening
socket handed over is the same kernel socket, so no connection is refused during the switch.

On SIGTERM (the Supervisor sends it right after it started the new release) it keeps serving
the hand-over and its clients for GRACE seconds (default 8, inside the 10 s stop grace
period), then exits 0.

Environment: RELEASE (name), HOST (default 0.0.0.0), PORT (default 8080), GRACE (seconds), and
the Supervisor's
BALENA_SERVICE_HANDOVER_COMPLETE_PATH (the socket is handover.sock beside it).
"""

import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import update_lock

RELEASE = os.environ.get("RELEASE", "dev")
PORT = int(os.environ.get("PORT", "8080"))
GRACE = float(os.environ.get("GRACE", "8"))
served = 0


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        global served
        served += 1
        body = f"{RELEASE} {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def log(msg: str) -> None:
    print(f"[{RELEASE}] {msg}", file=sys.stderr, flush=True)


got = update_lock.handover_take(release=RELEASE)
if got is None:
    listener = socket.create_server(
        (os.environ.get("HOST", "0.0.0.0"), PORT), backlog=update_lock.listen_backlog()
    )
    log("first start: no predecessor")
else:
    listener = got.fds["http"]
    listener.listen(update_lock.listen_backlog())  # the old release may have used a small one
    served = int(got.state or b"0")
    log(f"took over from {got.predecessor.release} (it had served {served})")

httpd = ThreadingHTTPServer(listener.getsockname()[:2], Hello, bind_and_activate=False)
httpd.socket = listener
httpd.daemon_threads = False  # server_close() waits for requests in flight
http_thread = threading.Thread(target=httpd.serve_forever, args=(0.05,))
http_thread.start()
print(f"ready {RELEASE} {listener.getsockname()[1]}", flush=True)


def release_step(successor: update_lock.Peer):
    log(f"{successor.release} asks to take over: stop accepting, finish requests in flight")
    httpd.shutdown()  # stop accepting; returns once serve_forever has stopped
    return str(served).encode(), {"http": listener}


def resume(error: update_lock.UpdateLockError) -> None:
    global http_thread
    log(f"hand-over failed ({error.code}/{getattr(error, 'reason', '')}); serving on")
    http_thread = threading.Thread(target=httpd.serve_forever, args=(0.05,))
    http_thread.start()


with update_lock.HandoverServer(release=RELEASE) as server:
    # Keep serving after SIGTERM until the grace runs out, then close (accept returns).
    signal.signal(signal.SIGTERM, lambda *_: threading.Timer(GRACE, server.close).start())
    successor = server.serve(release_step, resume=resume)

if successor is None:
    log("no successor came: stopping")
    httpd.shutdown()
http_thread.join()
httpd.server_close()  # waits for the request threads
log(f"exiting after {served} requests" + (f", handed over to {successor.release}" if successor else ""))
os._exit(0)  # the grace timer thread must not keep us alive
