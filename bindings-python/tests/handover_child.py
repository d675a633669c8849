"""Child processes for the hand-over tests: ``python handover_child.py ROLE ARGS...``.

Every child reports through lines on stdout and takes orders on stdin (one line each).
The old version ("serve") serves HTTP-like requests on a TCP listener it created (each
connection gets ``old\\n``), the new version ("take") takes that listener over and answers
``new\\n`` on it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import update_lock


def say(*parts: object) -> None:
    print(*parts, flush=True)


def order() -> str:
    return sys.stdin.readline().strip()


def peer_json(p: update_lock.Peer) -> str:
    return json.dumps(
        {"pid": p.pid, "own_pid": p.own_pid, "uid": p.uid, "release": p.release, "program": p.program,
         "protocol": p.protocol}
    )


def error_json(e: update_lock.UpdateLockError) -> str:
    return json.dumps(
        {"class": type(e).__name__, "code": e.code, "number": e.number,
         "reason": getattr(e, "reason", None), "message": str(e), "path": e.path}
    )


class Answering:
    """Answers every connection on `listener` with `word` in a thread, until stopped."""

    def __init__(self, listener: socket.socket, word: bytes) -> None:
        self.listener = listener
        self.word = word
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                if self.stopped:
                    # Handed over meanwhile: not ours any more (the test never races this).
                    return
                conn.sendall(self.word)


def serve(sock: str, release: str, mode: str, step: str = "5") -> None:
    """The old version. Modes:

    * ``grant``: grant the first successor (state, the listener, a log file, a pipe's read
      end as an int), say "granted PEER", exit.
    * ``wait-go``: serve(): the release step says "releasing PEER" and waits for "go" on
      stdin; a failed grant says "resumed CODE REASON" and serving goes on; after success
      "granted PEER".
    * ``kill-in-release``: SIGKILL itself inside the release step.
    * ``refuse-first``: refuse the first successor ("a backup is running"), grant the next.
    * ``stall``: say "releasing" and never answer (until stdin closes).
    * ``interrupt``: say "waiting" and block in accept(); Ctrl-C must raise
      KeyboardInterrupt and leave the server serving; then grant the next successor.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log = open(os.path.join(os.path.dirname(sock), "app.log"), "ab")
    rfd, wfd = os.pipe()
    os.write(wfd, b"through the pipe")
    os.close(wfd)
    fds: Dict[str, update_lock.FdLike] = {"http": listener, "log": log, "pipe": rfd}
    server = update_lock.HandoverServer(sock, release=release, step_timeout=float(step))
    answering = Answering(listener, b"old\n")
    say("serving", port)

    def granted(peer: update_lock.Peer) -> None:
        answering.stopped = True
        say("granted", peer_json(peer))

    if mode == "grant":
        req = server.accept(timeout=20)
        assert req is not None
        say("request", peer_json(req.successor))
        granted(server.grant(req, b"sessions=3", fds))
        assert not server.serving and not os.path.lexists(sock)
        return
    if mode == "refuse-first":
        req = server.accept(timeout=20)
        assert req is not None
        server.refuse(req, "a backup is running")
        say("refused", server.serving)
        req = server.accept(timeout=20)
        assert req is not None
        granted(server.grant(req, b"after refusal", fds))
        return
    if mode == "interrupt":
        say("waiting")
        try:
            server.accept()
            say("accepted?!")
            return
        except KeyboardInterrupt:
            say("interrupted", json.dumps({"serving": server.serving, "socket": os.path.exists(sock)}))
        req = server.accept(timeout=20)
        assert req is not None
        granted(server.grant(req, b"after ctrl-c", {"pipe": rfd}))
        return

    def release_step(successor: update_lock.Peer) -> Tuple[bytes, Mapping[str, update_lock.FdLike]]:
        say("releasing", peer_json(successor))
        if mode == "kill-in-release":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "stall":
            sys.stdin.read()
        got = order()
        assert got == "go", got
        return b"sessions=3", fds

    def resume(e: update_lock.UpdateLockError) -> None:
        say("resumed", e.code, getattr(e, "reason", None), json.dumps(str(e)))

    peer = server.serve(release_step, timeout=30, resume=resume)
    if peer is None:
        say("timeout")
        return
    granted(peer)


def take(sock: str, release: str, step: str = "5", release_timeout: str = "10") -> None:
    """The new version: take over; say "none", "error JSON" or "took JSON"; with a listener,
    answer one connection on it with ``new\\n`` and say "served"; exit on a line or EOF."""
    say("taking", os.getpid())
    try:
        got = update_lock.handover_take(
            sock, release=release, step_timeout=float(step), release_timeout=float(release_timeout)
        )
    except update_lock.UpdateLockError as e:
        say("error", error_json(e))
        order()
        return
    except KeyboardInterrupt:
        say("interrupted")
        order()
        return
    if got is None:
        say("none")
        return
    kinds: Dict[str, Any] = {}
    for label, obj in got.fds.items():
        if isinstance(obj, socket.socket):
            kinds[label] = ["socket", obj.family.name, obj.type.name, obj.getsockname()[1]]
        else:
            kinds[label] = ["file", obj.mode, type(obj).__name__]
    say(
        "took",
        json.dumps(
            {"from": json.loads(peer_json(got.predecessor)), "state": got.state.decode(errors="backslashreplace"), "state_hex": got.state.hex(), "fds": kinds,
             "order": list(got.fds), "signalled": got.signalled,
             "signal_error": None if got.signal_error is None else str(got.signal_error)}
        ),
    )
    http: Optional[Any] = got.fds.get("http")
    if isinstance(http, socket.socket):
        conn, _ = http.accept()
        with conn:
            conn.sendall(b"new\n")
        say("served")
    pipe = got.fds.get("pipe")
    if pipe is not None and not isinstance(pipe, socket.socket):
        say("pipe", pipe.read().decode())
    got.close()
    order()


ROLES: Dict[str, Callable[..., None]] = {"serve": serve, "take": take}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
