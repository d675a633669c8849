"""Type stubs of the native module ``update_lock._update_lock`` (pyo3)."""

import os
from types import TracebackType
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Type, TypeVar, Union

from typing_extensions import disjoint_base, final

from ._errors import UpdateLockError

_Path = Union[str, "os.PathLike[str]"]
_L = TypeVar("_L", bound="NativeLock")
_Peer = Tuple[int, int, int, str, str, int]

HANDOVER_MAX_FDS: int
HANDOVER_PROTOCOL_VERSION: int
STATUS_SCHEMA: int
SUPERVISOR_UID: int
__version__: str
__all__ = [
    "HANDOVER_MAX_FDS",
    "HANDOVER_PROTOCOL_VERSION",
    "STATUS_SCHEMA",
    "SUPERVISOR_UID",
    "CancelToken",
    "HandoverRequest",
    "HandoverServer",
    "NativeLock",
    "SupervisorApi",
    "UpdateGate",
    "__version__",
    "default_handover_paths",
    "default_handover_socket",
    "default_lock_paths",
    "error_codes",
    "handover_complete",
    "handover_reasons",
    "handover_take",
    "listen_backlog",
    "new_lock_owner",
    "status",
]

@final
class CancelToken:
    """Cancels every wait using it, now and later (``cancel()`` is safe from any thread)."""

    def __new__(cls) -> CancelToken: ...
    def cancel(self) -> None:
        """Cancel every wait using this token."""
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""

@disjoint_base
class NativeLock:
    """The native lock object; ``update_lock.Lock`` subclasses it."""

    def __new__(
        cls: Type[_L],
        paths: Optional[Sequence[_Path]] = None,
        timeout: Optional[float] = None,
        legacy: bool = True,
        reclaim_stale: bool = True,
        program: Optional[str] = None,
        shared: bool = False,
        on_wait: Optional[Callable[[str, Any, float, str], None]] = None,
        on_update_waiting: Optional[Callable[[str, str, float, bool, str], None]] = None,
        yield_to_updates: Optional[float] = None,
    ) -> _L: ...
    def acquire(self: _L, *, cancel: Optional[CancelToken] = None) -> _L:
        """Take the lock (GIL released while waiting; Ctrl-C interrupts)."""
    def _acquire_blocking(self, cancel: CancelToken, owner: int) -> None: ...
    @property
    def shared(self) -> bool:
        """Whether holds of this object are shared."""
    def release(self) -> None:
        """Release (idempotent)."""
    def check(self) -> None:
        """Raise LockLostError if overridden, NotHeldError if not held."""
    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
    @property
    def update_waiting(self) -> bool:
        """Whether the Supervisor has tried to take the lock since it was taken."""
    @property
    def paths(self) -> List[str]:
        """The lock paths, in locking order."""
    @property
    def _reclaimed(self) -> List[Tuple[str, Dict[str, Any]]]: ...
    def __enter__(self: _L) -> _L: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]: ...

def status(
    paths: Optional[Sequence[_Path]] = None,
    legacy: bool = True,
    handover_paths: Optional[Sequence[_Path]] = None,
    handover_legacy: bool = True,
) -> Dict[str, Any]:
    """The report of ``lockctl status --json``, as Python objects."""

def handover_complete(
    paths: Optional[Sequence[_Path]] = None, legacy: bool = True
) -> List[str]:
    """Write the hand-over signal(s); returns the paths written."""

def new_lock_owner() -> int:
    """A new lock owner for an asyncio task."""

def default_lock_paths(legacy: bool = True) -> List[str]:
    """The default lock paths."""

def default_handover_paths(legacy: bool = True) -> List[str]:
    """The default hand-over signal paths."""

def error_codes() -> List[Tuple[str, int]]:
    """Every core error code as ``(code, number)``."""

def listen_backlog() -> int:
    """The listen backlog for a listener that may be handed over (the kernel's limit)."""

def handover_take(
    socket: Optional[str] = None,
    release: Optional[str] = None,
    step_timeout: Optional[float] = None,
    release_timeout: Optional[float] = None,
    max_state: Optional[int] = None,
    signal: bool = True,
    signal_paths: Optional[Sequence[str]] = None,
    program: Optional[str] = None,
    peer_uids: Optional[Sequence[int]] = None,
) -> Optional[
    Tuple[_Peer, bytes, List[Tuple[str, int, bool]], List[str], Optional[UpdateLockError]]
]:
    """Take over; ``None`` without a predecessor, else ``(peer, state, [(label, fd,
    is_socket)], signalled, signal_error)``."""

def handover_reasons() -> List[str]:
    """Every hand-over failure reason."""

def default_handover_socket() -> str:
    """The default hand-over socket path."""

@final
class HandoverRequest:
    """A successor waiting for grant or refuse."""

    @property
    def successor(self) -> _Peer:
        """``(pid, own_pid, uid, release, program, protocol)``."""
    @property
    def answered(self) -> bool:
        """Whether grant or refuse was called."""

@final
class HandoverServer:
    """The old version's hand-over server."""

    def __new__(
        cls,
        socket: Optional[str] = None,
        release: Optional[str] = None,
        step_timeout: Optional[float] = None,
        max_state: Optional[int] = None,
        program: Optional[str] = None,
        peer_uids: Optional[Sequence[int]] = None,
    ) -> HandoverServer: ...
    def accept(self, timeout: Optional[float] = None) -> Optional[HandoverRequest]:
        """Wait for a successor (GIL released; Ctrl-C interrupts)."""
    def grant(
        self, request: HandoverRequest, state: bytes, fds: Sequence[Tuple[str, int]]
    ) -> _Peer:
        """Send state and descriptors, wait for the acknowledgement."""
    def refuse(self, request: HandoverRequest, message: str) -> None:
        """Turn the successor away."""
    def serve(
        self,
        release: Callable[[_Peer], Tuple[bytes, Sequence[Tuple[str, int]], object]],
        timeout: Optional[float] = None,
        resume: Optional[Callable[[UpdateLockError], object]] = None,
    ) -> Optional[_Peer]:
        """The core's serve loop; a hook's exception propagates unchanged."""
    def close(self) -> None:
        """Stop serving; idempotent."""
    @property
    def serving(self) -> bool:
        """Whether it still serves."""
    @property
    def socket_path(self) -> str:
        """The socket path."""

@final
class SupervisorApi:
    """The core's Supervisor API client."""

    def __new__(
        cls, address: Optional[str] = None, key: Optional[str] = None, timeout: Optional[float] = None
    ) -> SupervisorApi: ...
    @property
    def address(self) -> str:
        """The address it calls."""
    @property
    def timeout(self) -> float:
        """Seconds each call may take."""
    def ping(self) -> None:
        """GET /ping."""
    def device(self) -> Dict[str, Any]:
        """GET /v1/device, as a dict."""
    def update(self, force: bool = False) -> None:
        """POST /v1/update."""
    def reboot(self, force: bool = False) -> None:
        """POST /v1/reboot."""
    def restart_service(self, app_id: Optional[int], service: str, force: bool = False) -> None:
        """POST /v2/applications/{app_id}/restart-service (None: this app, $BALENA_APP_ID)."""

@final
class UpdateGate:
    """The core's update gate."""

    def __new__(
        cls,
        api: SupervisorApi,
        paths: Optional[Sequence[_Path]] = None,
        timeout: Optional[float] = None,
        legacy: bool = True,
        reclaim_stale: bool = True,
        program: Optional[str] = None,
        retake: bool = False,
        settle_timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> UpdateGate: ...
    def acquire(self) -> None:
        """Take the lock."""
    def safe_point(self) -> str:
        """no-update, released, retaken or retaken-unsettled."""
    def update_waiting(self) -> bool:
        """Whether a downloaded update waits."""
    @property
    def held(self) -> bool:
        """Whether the lock is held."""
    def release(self) -> None:
        """Release for good."""
