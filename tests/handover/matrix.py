"""Cross-language hand-over matrix: an old version in one language hands its listening TCP
socket and its state to a new version in another, for every pair of Python, Node.js, C and
lockctl (16 pairs). Per pair: the new version reports the old one's release name and state
("port=PORT"), a client connection on that port is answered by the new version, the old
version exits 0, the socket file is gone and handover-complete exists beside it.

    python3 matrix.py        (env: PY, NODE_PATH with update-lock, C_PEER, LOCKCTL)

Synchronisation is on the peers' output lines and exits; every wait has a deadline.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LANGS = {
    "python": lambda mode, sock, rel: [os.environ["PY"], os.path.join(HERE, "peer.py"), mode, sock, rel],
    "node": lambda mode, sock, rel: ["node", os.path.join(HERE, "peer.js"), mode, sock, rel],
    "c": lambda mode, sock, rel: [os.environ["C_PEER"], mode, sock, rel] + (["grant"] if mode == "serve" else []),
    "lockctl": lambda mode, sock, rel: ["bash", os.path.join(HERE, "lockctl_peer.sh"), mode, sock, rel],
}
DEADLINE = 30.0


class Peer:
    def __init__(self, lang: str, mode: str, sock: str, release: str) -> None:
        self.name = f"{lang} {mode}"
        self.proc = subprocess.Popen(
            LANGS[lang](mode, sock, release),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def line(self) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(DEADLINE):
            raise AssertionError(f"{self.name}: no output within {DEADLINE} s")
        line = self.proc.stdout.readline().strip()
        if not line:
            raise AssertionError(f"{self.name}: ended without output; stderr: {self.stderr()}")
        return line

    def stderr(self) -> str:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read()

    def finish(self) -> int:
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def pair(old: str, new: str) -> float:
    with tempfile.TemporaryDirectory(prefix="handover-matrix-") as d:
        os.chmod(d, 0o1777)
        sock = os.path.join(d, "handover.sock")
        peers = []
        try:
            o = Peer(old, "serve", sock, f"{old}-old")
            peers.append(o)
            ready = o.line()
            assert ready.startswith("ready "), f"{old} serve said {ready!r}"
            port = int(ready.split()[1])
            t0 = time.monotonic()
            n = Peer(new, "take", sock, f"{new}-new")
            peers.append(n)
            taken = n.line()
            assert taken == f"taken {old}-old port={port}", f"{new} take said {taken!r}, want 'taken {old}-old port={port}'"
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
                c.sendall(b"hi\n")
                answer = c.makefile("rb").readline().decode().strip()
            assert answer == f"hello from {new}-new", f"the client got {answer!r}"
            took = time.monotonic() - t0
            rc = o.finish()
            assert rc == 0, f"{old} serve exited {rc}; stderr: {o.stderr()}"
            rc = n.finish()
            assert rc == 0, f"{new} take exited {rc}; stderr: {n.stderr()}"
            assert not os.path.exists(sock), "the socket file outlived its server"
            assert os.path.exists(os.path.join(d, "handover-complete")), "no handover-complete signal"
            return took
        finally:
            for p in peers:
                p.kill()


def main() -> int:
    langs = sys.argv[1:] or list(LANGS)
    failures = 0
    print(f"{'old -> new':<22} result")
    for old in langs:
        for new in langs:
            try:
                took = pair(old, new)
                print(f"{old + ' -> ' + new:<22} ok ({took * 1000:.0f} ms from the new process's start to the client's answer)", flush=True)
            except Exception as e:  # report every pair, then fail
                failures += 1
                print(f"{old + ' -> ' + new:<22} FAILED: {e}", flush=True)
    total = len(langs) ** 2
    print(f"cross-language hand-over: {total - failures}/{total} pairs passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
