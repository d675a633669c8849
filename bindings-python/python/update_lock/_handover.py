"""Zero-downtime hand-over between the old and the new version of a service.

The old version serves on a Unix socket in the directory both containers share
(:class:`HandoverServer`); the new version takes over with :func:`handover_take`: it gets the
old version's state blob and open descriptors (listening sockets, device files) and writes
the handover-complete signal for the Supervisor. The protocol, its timeouts and every
failure are the Rust core's (``docs/handover-protocol.md``); this module turns descriptors
into ``socket.socket`` / file objects and back.
"""

from __future__ import annotations

import fcntl
import io
import os
import socket as _socket
import warnings
from dataclasses import dataclass, field
from types import TracebackType
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Type,
    Union,
)

from . import _update_lock as _native
from ._errors import UpdateLockError
from ._lock import _default_program

_PathLike = Union[str, "os.PathLike[str]"]


class HasFileno(Protocol):
    """Anything with a ``fileno()``: sockets, files, selectors' keys ..."""

    def fileno(self) -> int: ...


FdLike = Union[int, HasFileno]
"""What :meth:`HandoverServer.grant` accepts for a descriptor: an ``int`` or an object with
``fileno()`` (``socket.socket``, a file object)."""

InheritedObject = Union[_socket.socket, io.FileIO]
"""What a received descriptor becomes: a ``socket.socket`` for a socket, else an unbuffered
binary file object (``io.FileIO``) opened with the descriptor's own access mode."""

HANDOVER_REASONS: Tuple[str, ...] = tuple(_native.handover_reasons())
"""Every :attr:`HandoverError.reason`, in the core's order."""


@dataclass(frozen=True)
class Peer:
    """The other side of a hand-over."""

    pid: int
    """Its pid as the kernel reports it to us (SO_PEERCRED); 0 when it runs in a PID
    namespace we cannot see (another container)."""
    own_pid: int
    """The pid it reports for itself, in its own PID namespace."""
    uid: int
    """Its uid (SO_PEERCRED)."""
    release: str
    """The release name it gave (``release=``); may be empty."""
    program: str
    """Its program name."""
    protocol: int
    """The protocol version both sides agreed on."""

    @classmethod
    def _from_native(cls, t: Tuple[int, int, int, str, str, int]) -> Peer:
        return cls(*t)


@dataclass(frozen=True)
class Inheritance:
    """What the new version got from the old one (:func:`handover_take`).

    The objects in :attr:`fds` are the new version's: close them (or hand them on) when done.
    ``with inheritance:`` closes every one still open on exit; :meth:`detach` takes one out.
    """

    predecessor: Peer
    """Who handed over."""
    state: bytes
    """The app-defined state blob."""
    fds: Dict[str, InheritedObject] = field(default_factory=dict)
    """The descriptors by label, in the order they were sent: ``socket.socket`` for sockets
    (family and type from the socket itself), ``io.FileIO`` (binary, unbuffered, the access
    mode of the open file description) for anything else. A label sent more than once keeps
    every descriptor: the later ones are named ``label#2``, ``label#3`` ..."""
    signalled: List[str] = field(default_factory=list)
    """The handover-complete files written (empty with ``signal=False`` or when it failed)."""
    signal_error: Optional[UpdateLockError] = None
    """Why writing the handover-complete signal failed, if it did. The hand-over itself
    succeeded; the Supervisor then stops the old version only after its hand-over timeout."""

    def close(self) -> None:
        """Close every inherited object."""
        for obj in self.fds.values():
            obj.close()

    def __enter__(self) -> Inheritance:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


def _file_mode(fd: int) -> str:
    """The ``open()`` mode of descriptor ``fd``'s open file description (binary)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    acc = flags & os.O_ACCMODE
    if flags & os.O_APPEND:
        return "ab" if acc == os.O_WRONLY else "a+b"
    if acc == os.O_WRONLY:
        return "wb"
    if acc == os.O_RDWR:
        return "r+b"
    return "rb"


def _wrap(fd: int, is_socket: bool) -> InheritedObject:
    if is_socket:
        sock = _socket.socket(fileno=fd)
        # O_NONBLOCK belongs to the open socket, which the old version shares (a Node.js or
        # asyncio listener is non-blocking). Python's socket object must say so, else a
        # "blocking" accept() raises BlockingIOError; changing the flag here would change it
        # under the old version too. Call sock.setblocking(True) to block.
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
            sock.settimeout(0.0)
        return sock
    raw = os.fdopen(fd, _file_mode(fd), buffering=0)
    assert isinstance(raw, io.FileIO)
    return raw


def _wrap_all(items: List[Tuple[str, int, bool]]) -> Dict[str, InheritedObject]:
    out: Dict[str, InheritedObject] = {}
    pending = list(items)
    try:
        while pending:
            label, fd, is_socket = pending[0]
            name, n = label, 1
            while name in out:
                n += 1
                name = f"{label}#{n}"
            out[name] = _wrap(fd, is_socket)
            pending.pop(0)
    except BaseException:
        # Nothing leaks: the objects made so far and the numbers not yet wrapped are closed.
        for obj in out.values():
            obj.close()
        for _, fd, _ in pending:
            try:
                os.close(fd)
            except OSError:
                pass
        raise
    return out


def handover_take(
    socket: Optional[_PathLike] = None,
    *,
    release: str = "",
    step_timeout: Optional[float] = None,
    release_timeout: Optional[float] = None,
    max_state: Optional[int] = None,
    handover_complete: Optional[bool] = None,
    signal_paths: Optional[Iterable[_PathLike]] = None,
    peer_uids: Iterable[int] = (),
    signal: Optional[bool] = None,
) -> Optional[Inheritance]:
    """Take over from the old version serving hand-over on ``socket``, if one does.

    Returns ``None`` at once when there is no predecessor (first start: no socket, or only
    the stale socket of a crashed old version, which is removed). Otherwise the old version
    runs its release step and sends its state and descriptors; we acknowledge, and the
    handover-complete signal is written (unless ``handover_complete=False``; ``signal_paths``
    names the files, default ``handover-complete`` beside an explicit socket, else the
    Supervisor's). ``signal=`` is the deprecated name of ``handover_complete=`` (0.1; warns).

    * ``socket``: default ``handover.sock`` beside ``$BALENA_SERVICE_HANDOVER_COMPLETE_PATH``
      (``/tmp/balena/handover.sock``), the directory the old and new container share.
    * ``release``: how this version names itself to the old one.
    * ``step_timeout``: seconds the old version may take for one protocol step (default 5);
      ``release_timeout``: for its release step and state (default 10). None: the core's
      default, the same in every language.
    * ``max_state``: the largest state accepted, in bytes (default 1 MiB).
    * ``peer_uids``: other uids the old version may run as. By default only our own uid and
      root: a process of another uid serving at the socket (possibly an impostor) is
      refused with reason ``uid``, naming its pid and uid, and nothing is taken from it.

    Raises :class:`HandoverError` (``.reason``: ``stalled``, ``peer-gone``, ``uid``,
    ``refused``, ``taken``, ``blocked`` ...) when a predecessor exists but the hand-over
    failed, or something that is not a hand-over server stands at the socket (``blocked``:
    start fresh and remove it): nothing was taken, the old version keeps its resources. The GIL is released while waiting;
    Ctrl-C raises ``KeyboardInterrupt`` with nothing taken.
    """
    if signal is not None:
        warnings.warn(
            "handover_take(signal=...) is deprecated; use handover_complete=... (write the handover-complete signal)",
            DeprecationWarning,
            stacklevel=2,
        )
        if handover_complete is not None and handover_complete != signal:
            raise ValueError("handover_take: signal= (deprecated) and handover_complete= disagree")
        handover_complete = signal
    paths = None if signal_paths is None else [os.fspath(p) for p in signal_paths]
    got = _native.handover_take(
        None if socket is None else os.fspath(socket),
        release,
        step_timeout,
        release_timeout,
        max_state,
        True if handover_complete is None else handover_complete,
        paths,
        _default_program(),
        [int(u) for u in peer_uids],
    )
    if got is None:
        return None
    peer, state, fds, signalled, signal_error = got
    return Inheritance(
        predecessor=Peer._from_native(peer),
        state=state,
        fds=_wrap_all(fds),
        signalled=signalled,
        signal_error=signal_error,
    )


class HandoverRequest:
    """A successor waiting for :meth:`HandoverServer.grant` or
    :meth:`HandoverServer.refuse` (answer each request once)."""

    def __init__(self, native: _native.HandoverRequest) -> None:
        self._native = native
        self.successor: Peer = Peer._from_native(native.successor)
        """Who asks to take over."""

    @property
    def answered(self) -> bool:
        """Whether it was granted or refused already."""
        return self._native.answered

    def __repr__(self) -> str:
        return f"HandoverRequest(successor={self.successor!r})"


def _fileno(label: str, obj: FdLike) -> int:
    if isinstance(obj, bool):
        raise TypeError(f"descriptor for {label!r}: expected an int or an object with fileno(), not bool")
    if isinstance(obj, int):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(
            f"descriptor for {label!r}: expected an int or an object with fileno() "
            f"(socket, file), not {type(obj).__name__}"
        )
    fd = fileno()
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"descriptor for {label!r}: {obj!r} is closed")
    return fd


ReleaseHook = Callable[[Peer], Tuple[bytes, Mapping[str, FdLike]]]
"""The app's release step for :meth:`HandoverServer.serve`: given the successor, stop using
the resources and return ``(state, fds)``."""

ResumeHook = Callable[[UpdateLockError], None]
"""Called by :meth:`HandoverServer.serve` when a grant failed: take the resources back into
use (nothing was handed over)."""


class HandoverServer:
    """The old version's side: serve hand-over on ``socket`` (mode 0600) until a successor
    has taken over, or :meth:`close` (also on leaving ``with``, and on garbage collection).

    Serving is two calls so the app runs its release step in between::

        with update_lock.HandoverServer(release="v1") as server:
            request = server.accept()                 # a successor said hello
            httpd.stop_accepting()                    # the app's release step
            server.grant(request, state=b"...", fds={"http": listener})
            # handed over: finish in-flight work, then exit

    A failed :meth:`grant` raises :class:`HandoverError`; nothing was handed over (the
    descriptors were only copied, the app still has them) and the server keeps serving: the
    app resumes its work. :meth:`serve` does the whole loop.

    * ``socket``: default ``handover.sock`` beside ``$BALENA_SERVICE_HANDOVER_COMPLETE_PATH``.
    * ``release``: how this version names itself to successors.
    * ``step_timeout``: seconds a successor may take for one protocol step.
    * ``max_state``: the largest state :meth:`grant` may send, in bytes.
    * ``peer_uids``: other uids a successor may run as (default: only our uid and root; a
      successor is who ``SO_PEERCRED`` says it is).

    Raises :class:`HandoverError` with reason ``already-serving`` when another live process
    serves on the socket; a stale socket from a crashed server is replaced.
    """

    def __init__(
        self,
        socket: Optional[_PathLike] = None,
        *,
        release: str = "",
        step_timeout: Optional[float] = None,
        max_state: Optional[int] = None,
        peer_uids: Iterable[int] = (),
    ) -> None:
        self._native = _native.HandoverServer(
            None if socket is None else os.fspath(socket),
            release,
            step_timeout,
            max_state,
            _default_program(),
            [int(u) for u in peer_uids],
        )

    @property
    def serving(self) -> bool:
        """Whether it still serves (not handed over, not closed)."""
        return self._native.serving

    @property
    def socket_path(self) -> str:
        """The socket path."""
        return self._native.socket_path

    def accept(self, timeout: Optional[float] = None) -> Optional[HandoverRequest]:
        """Wait up to ``timeout`` seconds (``None``: forever) for a successor; ``None`` when
        the timeout ran out. Successors running as another user (neither root), speaking
        another protocol version or stalling in their hello are turned away here and the wait
        goes on. GIL released; Ctrl-C raises ``KeyboardInterrupt`` and the server keeps
        serving. After :meth:`close` (from another thread too) or a successful grant:
        :class:`HandoverError` with reason ``finished``."""
        got = self._native.accept(timeout)
        return None if got is None else HandoverRequest(got)

    def grant(
        self,
        request: HandoverRequest,
        state: bytes = b"",
        fds: Mapping[str, FdLike] = {},
    ) -> Peer:
        """Hand over to ``request``'s successor: send ``state`` and copies of ``fds`` (label ->
        socket, file object or int; at most 64), wait for the acknowledgement, return the
        successor. The app's own objects stay open: close them once done.

        On success the server stops serving (socket removed; successors still waiting are
        told ``taken``) and the app should finish in-flight work and exit. On failure
        (:class:`HandoverError`: ``peer-gone``, ``stalled``, ``too-large`` ...) nothing was
        handed over and the server keeps serving: resume and :meth:`accept` again. Keep the
        objects in ``fds`` open during the call."""
        try:
            pairs = [(str(label), _fileno(str(label), obj)) for label, obj in fds.items()]
        except (TypeError, ValueError) as e:
            # The successor hears why at once instead of waiting for its timeout.
            self.refuse(request, f"the old version passed a bad descriptor: {e}")
            raise
        peer = self._native.grant(request._native, bytes(state), pairs)
        return Peer._from_native(peer)

    def refuse(self, request: HandoverRequest, message: str) -> None:
        """Turn ``request``'s successor away (the app cannot release now); it gets a
        :class:`HandoverError` with reason ``refused`` and ``message``. The server keeps
        serving."""
        self._native.refuse(request._native, message)

    def close(self) -> None:
        """Stop serving without handing over (the socket is removed; a waiting
        :meth:`accept` in another thread ends). Idempotent."""
        self._native.close()

    def serve(
        self,
        release: ReleaseHook,
        *,
        timeout: Optional[float] = None,
        resume: Optional[ResumeHook] = None,
    ) -> Optional[Peer]:
        """Serve until a successor has taken over; returns it, or ``None`` when ``timeout``
        seconds (``None``: no limit) ran out or the server was closed.

        For each successor: ``release(successor)`` runs the app's release step and returns
        ``(state, fds)``; then :meth:`grant`. When the grant fails, nothing was handed over:
        ``resume(error)`` is called (take the resources back into use) and serving goes on.
        If ``release`` raises, the successor is refused with the exception's text and the
        exception propagates (the server still serves). Ctrl-C (``KeyboardInterrupt``)
        propagates too."""
        # The loop is the core's (the same in every language); this only translates.
        def native_release(successor: Tuple[int, int, int, str, str, int]) -> Tuple[bytes, List[Tuple[str, int]], object]:
            state, fds = release(Peer._from_native(successor))
            pairs = [(str(label), _fileno(str(label), obj)) for label, obj in fds.items()]
            # fds stays referenced until the core has copied the descriptors.
            return bytes(state), pairs, fds

        peer = self._native.serve(native_release, timeout, resume)
        return None if peer is None else Peer._from_native(peer)

    def __enter__(self) -> HandoverServer:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HandoverServer(socket_path={self.socket_path!r}, serving={self.serving})"
