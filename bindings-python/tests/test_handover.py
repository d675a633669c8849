"""Hand-over between an old and a new Python process (issue 6): state and descriptors over
the core's rendezvous socket, and every failure with a clear outcome.

Old and new versions are separate processes (tests/handover_child.py) synchronised through
lines on pipes, process exits and /proc (a process blocked in poll), never sleeps. The
raw-protocol peer below is written from docs/handover-protocol.md."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import update_lock
from conftest import STEP, Child, spawn, wait_until

HO_CHILD = str(Path(__file__).with_name("handover_child.py"))
APP_UID = 1000


@pytest.fixture
def sock(service_dir: Path) -> Path:
    return service_dir / "handover.sock"


def ho(children: List[Child], role: str, *args: object, uid: int = 0) -> Child:
    prefix: Tuple[str, ...] = ()
    if uid:
        prefix = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups")
    c = spawn(children, role, *args, script=HO_CHILD, prefix=prefix)
    if role == "take":
        assert int(c.expect("taking")) == c.pid  # setpriv execs: same pid
    return c


def fetch(port: int) -> bytes:
    """One request to the service on loopback: what it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as c:
        data = b""
        while True:
            chunk = c.recv(64)
            if not chunk:
                return data
            data += chunk


def in_poll(pid: int) -> bool:
    """Process `pid`'s main thread is blocked in poll/ppoll (x86_64 numbers 7, 271)."""
    try:
        first = open(f"/proc/{pid}/task/{pid}/syscall").read().split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return first in ("7", "271")


def error_of(c: Child) -> Dict[str, Any]:
    e: Dict[str, Any] = json.loads(c.expect("error"))
    return e


def assert_handover_error(e: Dict[str, Any], reason: str, sock: Path, *fragments: str) -> None:
    assert (e["class"], e["code"], e["number"], e["reason"]) == ("HandoverError", "handover", 10, reason), e
    assert e["path"] == str(sock)
    assert e["message"].startswith(f"{sock}: hand-over failed ({reason}): "), e["message"]
    for f in fragments:
        assert f in e["message"], (f, e["message"])


# --- raw protocol peer -------------------------------------------------------------------


def frame(kind: int, payload: bytes) -> bytes:
    return b"ULHO" + bytes([1, kind, 0, 0]) + struct.pack(">I", len(payload)) + payload


def read_frame(s: socket.socket) -> Tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed")
            buf += chunk
        return buf

    h = exact(12)
    assert h[:4] == b"ULHO"
    return h[5], exact(struct.unpack(">I", h[8:])[0])


def raw_hello(path: Path) -> socket.socket:
    """Connect, say HELLO, read WELCOME; then the caller stalls or vanishes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(STEP)
    s.connect(str(path))
    s.sendall(frame(1, b"protocol-min=1\nprotocol-max=1\npid=1\nrelease=raw\nprogram=raw\n"))
    kind, _ = read_frame(s)
    assert kind == 2, "expected WELCOME"
    return s


# --- the normal path ---------------------------------------------------------------------


def test_first_start_has_no_predecessor(sock: Path) -> None:
    t = time.monotonic()
    assert update_lock.handover_take(sock, release="v2") is None
    assert time.monotonic() - t < 1.0
    assert not os.path.lexists(sock.parent / "handover-complete")
    # Nor in a directory that does not exist yet.
    assert update_lock.handover_take(sock.parent / "missing" / "h.sock") is None


def test_old_process_hands_its_listening_socket_and_state_to_a_new_process(
    sock: Path, children: List[Child]
) -> None:
    old = ho(children, "serve", sock, "v1", "grant")
    port = int(old.expect("serving"))
    assert fetch(port) == b"old\n"
    assert os.stat(sock).st_mode & 0o777 == 0o600
    t0 = time.monotonic()
    new = ho(children, "take", sock, "v2")
    new_pid = new.pid
    req = json.loads(old.expect("request"))
    assert (req["own_pid"], req["pid"], req["uid"], req["release"]) == (new_pid, new_pid, 0, "v2")
    assert (req["program"], req["protocol"]) == ("handover_child.py", 1)  # the script name
    took = json.loads(new.expect("took"))
    assert json.loads(old.expect("granted"))["release"] == "v2"
    assert old.wait() == 0
    print(f"hand-over from spawn of the new process to the old one's exit: {(time.monotonic() - t0) * 1000:.0f} ms")
    assert took["from"]["release"] == "v1" and took["from"]["own_pid"] == old.pid
    assert took["state"] == "sessions=3"
    assert took["order"] == ["http", "log", "pipe"]
    # The listening socket is a socket.socket on the same port; files keep their mode.
    assert took["fds"] == {
        "http": ["socket", "AF_INET", "SOCK_STREAM", port],
        "log": ["file", "ab", "FileIO"],
        "pipe": ["file", "rb", "FileIO"],
    }
    # handover-complete written beside the socket, the socket removed by the old version.
    signal_file = sock.parent / "handover-complete"
    assert took["signalled"] == [str(signal_file)] and took["signal_error"] is None
    assert signal_file.exists()
    assert not os.path.lexists(sock)
    # The old process is gone; the port answers, from the new process.
    assert fetch(port) == b"new\n"
    new.expect("served")
    assert new.expect("pipe") == "through the pipe"
    new.send("exit")
    assert new.wait() == 0


def test_grant_takes_sockets_files_and_ints_and_sends_copies(sock: Path, service_dir: Path) -> None:
    """The old side in this process, the new one in a child: the app keeps its own objects."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    f = open(service_dir / "data.bin", "w+b")
    r, w = os.pipe()
    with update_lock.HandoverServer(sock, release="old-py") as server:
        assert server.serving and server.socket_path == str(sock)
        result: List[Any] = []

        def old() -> None:
            req = server.accept(timeout=STEP)
            assert req is not None and not req.answered
            result.append(server.grant(req, b"\x00state\xff", {"l": listener, "f": f, "w": w}))
            assert req.answered

        t = threading.Thread(target=old)
        t.start()
        children: List[Child] = []
        try:
            new = ho(children, "take", sock, "new-py")
            took = json.loads(new.expect("took"))
            t.join(STEP)
            assert not t.is_alive()
            assert took["state_hex"] == b"\x00state\xff".hex()
            assert took["fds"] == {
                "l": ["socket", "AF_INET", "SOCK_STREAM", port],
                "f": ["file", "rb+", "FileIO"],
                "w": ["file", "wb", "FileIO"],
            }
            assert result[0].release == "new-py" and result[0].pid == new.pid
            assert not server.serving
        finally:
            for c in children:
                c.kill()
    # Our own objects are untouched and still work.
    assert listener.fileno() >= 0 and f.fileno() >= 0
    os.write(w, b"x")
    assert os.read(r, 1) == b"x"
    for x in (listener, f):
        x.close()
    for fd in (r, w):
        os.close(fd)


def test_default_socket_is_beside_the_handover_complete_file(monkeypatch: pytest.MonkeyPatch, service_dir: Path) -> None:
    monkeypatch.setenv("BALENA_SERVICE_HANDOVER_COMPLETE_PATH", str(service_dir / "handover-complete"))
    assert update_lock.default_handover_socket() == str(service_dir / "handover.sock")
    with update_lock.HandoverServer() as server:
        assert server.socket_path == str(service_dir / "handover.sock")
        assert os.path.exists(server.socket_path)
    assert not os.path.lexists(service_dir / "handover.sock")


# --- crashes, stalls, races --------------------------------------------------------------


def test_old_version_killed_mid_transfer(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "kill-in-release")
    old.expect("serving")
    new = ho(children, "take", sock, "v2")
    old.expect("releasing")
    assert old.wait() == -signal.SIGKILL
    e = error_of(new)
    assert_handover_error(e, "peer-gone", sock, "nothing was handed over")
    # Nothing half-done: no handover-complete signal; the dead server's socket is stale and
    # the next successor starts fresh (the socket is removed), and a new server can bind.
    assert not os.path.lexists(sock.parent / "handover-complete")
    assert os.path.lexists(sock)
    assert update_lock.handover_take(sock) is None
    assert not os.path.lexists(sock)
    with update_lock.HandoverServer(sock):
        assert os.path.exists(sock)


def test_new_version_killed_mid_transfer_the_old_one_keeps_serving(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "wait-go")
    port = int(old.expect("serving"))
    first = ho(children, "take", sock, "v2-crashing")
    assert json.loads(old.expect("releasing"))["release"] == "v2-crashing"
    first.proc.kill()  # after its HELLO, before its ACK
    assert first.wait() == -signal.SIGKILL
    old.send("go")
    code, reason, message = old.expect("resumed").split(" ", 2)
    assert (code, reason) == ("handover", "peer-gone")
    assert "keeps serving" in json.loads(message)
    # The old version still has everything: serving HTTP and hand-over.
    assert fetch(port) == b"old\n"
    assert os.path.exists(sock)
    assert not os.path.lexists(sock.parent / "handover-complete")
    second = ho(children, "take", sock, "v2")
    assert json.loads(old.expect("releasing"))["release"] == "v2"
    old.send("go")
    took = json.loads(second.expect("took"))
    assert took["state"] == "sessions=3" and took["fds"]["http"][3] == port
    assert json.loads(old.expect("granted"))["release"] == "v2"
    assert old.wait() == 0
    assert fetch(port) == b"new\n"
    second.expect("served")


def test_a_successor_that_stalls_before_acknowledging(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "wait-go", 1)  # step timeout 1 s
    port = int(old.expect("serving"))
    raw = raw_hello(sock)
    old.expect("releasing")
    t = time.monotonic()
    old.send("go")  # the old version sends STATE; the raw peer never acknowledges
    code, reason, _message = old.expect("resumed").split(" ", 2)
    waited = time.monotonic() - t
    assert (code, reason) == ("handover", "stalled")
    assert 0.9 < waited < 1.0 + 3.0, waited
    kind, _ = read_frame(raw)
    assert kind == 4, "the raw peer got STATE"
    raw.close()
    assert fetch(port) == b"old\n" and os.path.exists(sock)
    new = ho(children, "take", sock, "v2")
    old.expect("releasing")
    old.send("go")
    assert json.loads(new.expect("took"))["state"] == "sessions=3"
    assert old.wait() == 0


def test_an_old_version_that_stalls_in_its_release_step(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "stall")
    old.expect("serving")
    t = time.monotonic()
    new = ho(children, "take", sock, "v2", 5, 1)  # release timeout 1 s
    old.expect("releasing")
    e = error_of(new)
    waited = time.monotonic() - t
    assert_handover_error(e, "stalled", sock, "release its resources", "old version keeps its resources")
    assert waited < 1.0 + 5.0, waited
    assert not os.path.lexists(sock.parent / "handover-complete")


def test_two_successors_racing_exactly_one_wins(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "wait-go")
    port = int(old.expect("serving"))
    a = ho(children, "take", sock, "a")
    b = ho(children, "take", sock, "b")
    pids = {a.pid: a, b.pid: b}
    winner_pid = json.loads(old.expect("releasing"))["own_pid"]
    winner = pids.pop(winner_pid)
    (loser_pid, loser), = pids.items()
    # The loser has connected and waits for its WELCOME (blocked in poll).
    wait_until(lambda: in_poll(loser_pid), f"the second successor {loser_pid} waits")
    old.send("go")
    took = json.loads(winner.expect("took"))
    assert took["fds"]["http"][3] == port
    e = error_of(loser)
    assert_handover_error(e, "taken", sock, "took over first", "another instance")
    assert old.wait() == 0
    assert fetch(port) == b"new\n"
    winner.expect("served")


def test_a_refusal_reaches_the_successor_and_the_old_one_keeps_serving(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "refuse-first")
    port = int(old.expect("serving"))
    with pytest.raises(update_lock.HandoverError) as info:
        update_lock.handover_take(sock, release="v2", handover_complete=False)
    e = info.value
    assert isinstance(e, update_lock.UpdateLockError)
    assert (e.code, e.number, e.reason, e.path) == ("handover", 10, "refused", str(sock))
    assert "a backup is running" in str(e) and "keeps serving" in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is update_lock.HandoverError
    assert (str(again), again.code, again.reason) == (str(e), "handover", "refused")
    assert old.expect("refused") == "True"
    assert fetch(port) == b"old\n"
    new = ho(children, "take", sock, "v2")
    assert json.loads(new.expect("took"))["state"] == "after refusal"
    assert old.wait() == 0


def test_only_the_same_uid_may_take_over(service_dir: Path, children: List[Child]) -> None:
    d = service_dir  # mode 1777, as the Supervisor makes it
    sock = d / "handover.sock"
    old = ho(children, "serve", sock, "v1", "grant", uid=APP_UID)
    port = int(old.expect("serving"))
    assert os.stat(sock).st_uid == APP_UID
    other = ho(children, "take", sock, "v2", uid=APP_UID + 1)
    e = error_of(other)
    assert_handover_error(e, "uid", sock, f"uid {APP_UID}", "same user")
    # Nothing was handed over: the old version still serves both.
    assert os.path.exists(sock) and fetch(port) == b"old\n"
    assert not os.path.lexists(d / "handover-complete")
    same = ho(children, "take", sock, "v2", uid=APP_UID)
    took = json.loads(same.expect("took"))
    assert took["from"]["uid"] == APP_UID and took["fds"]["http"][3] == port
    assert old.wait() == 0
    assert os.stat(d / "handover-complete").st_uid == APP_UID


def test_a_stale_socket_from_a_killed_server(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "grant")
    old.expect("serving")
    old.proc.kill()
    assert old.wait() == -signal.SIGKILL
    assert os.path.lexists(sock)
    t = time.monotonic()
    assert update_lock.handover_take(sock, release="v2") is None
    assert time.monotonic() - t < 1.0
    assert not os.path.lexists(sock), "the stale socket was removed"
    with update_lock.HandoverServer(sock, release="v2") as server:
        assert server.serving and os.path.exists(sock)


def test_a_second_server_on_the_same_socket_is_refused(sock: Path) -> None:
    with update_lock.HandoverServer(sock):
        with pytest.raises(update_lock.HandoverError) as info:
            update_lock.HandoverServer(sock)
        assert info.value.reason == "already-serving"
        assert os.path.exists(sock)


# --- signals and the Python API ----------------------------------------------------------


def test_ctrl_c_during_accept_keeps_serving(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "interrupt")
    old.expect("serving")
    old.expect("waiting")
    wait_until(lambda: in_poll(old.pid), "the old version waits in accept")
    t = time.monotonic()
    os.kill(old.pid, signal.SIGINT)
    assert json.loads(old.expect("interrupted")) == {"serving": True, "socket": True}
    print(f"Ctrl-C ended accept() after {(time.monotonic() - t) * 1000:.1f} ms")
    got = update_lock.handover_take(sock, release="v2", handover_complete=False)
    assert got is not None
    with got:
        assert got.state == b"after ctrl-c" and got.signalled == []
        pipe = got.fds["pipe"]
        assert not isinstance(pipe, socket.socket)
        assert pipe.read() == b"through the pipe"
    assert pipe.closed
    old.expect("granted")
    assert old.wait() == 0


def test_ctrl_c_during_take_takes_nothing(sock: Path, children: List[Child]) -> None:
    old = ho(children, "serve", sock, "v1", "wait-go")
    port = int(old.expect("serving"))
    new = ho(children, "take", sock, "v2", 5, 30)
    old.expect("releasing")
    wait_until(lambda: in_poll(new.pid), "the successor waits for the state")
    os.kill(new.pid, signal.SIGINT)
    new.expect("interrupted")
    old.send("go")
    code, reason, _ = old.expect("resumed").split(" ", 2)
    assert (code, reason) == ("handover", "peer-gone")
    assert fetch(port) == b"old\n" and os.path.exists(sock)
    assert not os.path.lexists(sock.parent / "handover-complete")


def test_serve_times_out_and_close_ends_accept(sock: Path) -> None:
    with update_lock.HandoverServer(sock) as server:
        t = time.monotonic()
        assert server.serve(lambda peer: (b"", {}), timeout=0.2) is None
        assert 0.15 < time.monotonic() - t < 5
        assert server.accept(timeout=0) is None
        closer = threading.Timer(0.1, server.close)
        closer.start()
        assert server.serve(lambda peer: (b"", {})) is None  # closed from another thread
        closer.join()
        assert not server.serving and not os.path.lexists(sock)
        with pytest.raises(update_lock.HandoverError) as info:
            server.accept(timeout=0)
        assert info.value.reason == "finished"


def test_serve_refuses_and_reraises_when_the_release_step_fails(sock: Path) -> None:
    """Same contract as Node's serve(): the successor hears why, the app gets its error."""

    def release(peer: update_lock.Peer) -> Tuple[bytes, Dict[str, int]]:
        raise RuntimeError("the database would not close")

    with update_lock.HandoverServer(sock, release="v1") as server:
        outcome: List[BaseException] = []

        def take() -> None:
            try:
                update_lock.handover_take(sock, release="v2", handover_complete=False)
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=take)
        t.start()
        with pytest.raises(RuntimeError, match="would not close"):
            server.serve(release)
        t.join(STEP * 4)
        assert not t.is_alive()
        assert isinstance(outcome[0], update_lock.HandoverError)
        assert outcome[0].reason == "refused"
        assert "release step failed" in str(outcome[0]) and "would not close" in str(outcome[0])
        assert server.serving


def test_a_bad_descriptor_is_refused_at_once(sock: Path) -> None:
    with update_lock.HandoverServer(sock) as server:
        errors: List[BaseException] = []

        def old() -> None:
            req = server.accept(timeout=STEP)
            assert req is not None
            closed = socket.socket()
            closed.close()
            try:
                server.grant(req, b"", {"gone": closed})
            except ValueError as e:
                errors.append(e)
            req2 = server.accept(timeout=STEP)
            assert req2 is not None
            try:
                server.grant(req2, b"", {"bad": "not a descriptor"})  # type: ignore[dict-item]
            except TypeError as e:
                errors.append(e)

        t = threading.Thread(target=old)
        t.start()
        for _ in range(2):
            with pytest.raises(update_lock.HandoverError) as info:
                update_lock.handover_take(sock, handover_complete=False)
            assert info.value.reason == "refused" and "bad descriptor" in str(info.value)
        t.join(STEP)
        assert [type(e) for e in errors] == [ValueError, TypeError]
        assert server.serving


def test_serve_refuses_a_bad_descriptor_and_raises_it(sock: Path) -> None:
    """A closed descriptor from the release step refuses the successor (who hears why) and
    raises ValueError in the app."""
    closed = socket.socket()
    closed.close()
    with update_lock.HandoverServer(sock) as server:
        outcome: List[BaseException] = []

        def take() -> None:
            try:
                update_lock.handover_take(sock, handover_complete=False)
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=take)
        t.start()
        with pytest.raises(ValueError, match=r"'gone'.* is closed"):
            server.serve(lambda peer: (b"", {"gone": closed}))
        t.join(STEP * 4)
        assert isinstance(outcome[0], update_lock.HandoverError) and outcome[0].reason == "refused"
        assert "release step failed" in str(outcome[0]) and "is closed" in str(outcome[0])
        assert server.serving


def test_the_deprecated_signal_argument_still_works_and_warns(sock: Path) -> None:
    """``signal=`` is the 0.1 name of ``handover_complete=``: it works for one release, with
    a DeprecationWarning; both given and disagreeing is a ValueError."""
    with pytest.warns(DeprecationWarning, match="use handover_complete"):
        assert update_lock.handover_take(sock, signal=False) is None
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        update_lock.handover_take(sock, signal=False, handover_complete=True)
    assert not sock.with_name("handover-complete").exists()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        update_lock.handover_take("/tmp/x.sock", step_timeout=0)
    with pytest.raises(ValueError):
        update_lock.handover_take("/tmp/x.sock", release_timeout=float("nan"))
    with pytest.raises(ValueError):
        update_lock.HandoverServer("/tmp/x.sock", max_state=-1)
    assert update_lock.HANDOVER_REASONS[:3] == ("stalled", "peer-gone", "taken")
    assert update_lock.HANDOVER_MAX_FDS == 64 and update_lock.HANDOVER_PROTOCOL_VERSION == 1


def test_state_over_the_limit(sock: Path) -> None:
    with update_lock.HandoverServer(sock, max_state=4) as server:
        seen: List[update_lock.UpdateLockError] = []
        t = threading.Thread(
            target=lambda: server.serve(lambda peer: (b"too much state", {}), timeout=STEP, resume=seen.append)
        )
        t.start()
        with pytest.raises(update_lock.HandoverError) as info:
            update_lock.handover_take(sock, handover_complete=False)
        assert info.value.reason == "too-large"
        server.close()
        t.join(STEP)
        assert [getattr(e, "reason", None) for e in seen] == ["too-large"]


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """No hand-over test may take long: every wait is bounded by STEP or a step timeout."""
    t = time.monotonic()
    yield
    assert time.monotonic() - t < 60


def test_a_non_blocking_socket_arrives_as_non_blocking(sock: Path) -> None:
    """O_NONBLOCK is shared with the sender: the socket object must not claim to block."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    with update_lock.HandoverServer(sock) as server:
        t = threading.Thread(
            target=lambda: server.grant(server.accept(30), b"", {"http": listener}), daemon=True
        )
        t.start()
        got = update_lock.handover_take(sock, handover_complete=False)
        t.join(30)
    assert got is not None
    inherited = got.fds["http"]
    assert isinstance(inherited, socket.socket)
    assert inherited.gettimeout() == 0.0
    with pytest.raises(BlockingIOError):
        inherited.accept()  # nothing pending, and the socket says it does not block
    inherited.setblocking(True)
    assert inherited.gettimeout() is None
    got.close()
    listener.close()
