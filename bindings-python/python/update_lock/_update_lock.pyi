"""Type stubs of the native module ``update_lock._update_lock`` (pyo3)."""

import os
from types import TracebackType
from typing import List, Literal, Optional, Sequence, Tuple, Type, TypeVar, Union

from typing_extensions import disjoint_base, final

_Path = Union[str, "os.PathLike[str]"]
_L = TypeVar("_L", bound="NativeLock")

STATUS_SCHEMA: int
SUPERVISOR_UID: int
__version__: str
__all__ = [
    "CancelToken",
    "NativeLock",
    "STATUS_SCHEMA",
    "SUPERVISOR_UID",
    "__version__",
    "default_handover_paths",
    "default_lock_paths",
    "error_codes",
    "handover_complete",
    "status_json",
]

@final
class CancelToken:
    """Cancels every wait using it, now and later (``cancel()`` is safe from any thread)."""

    def __new__(cls) -> "CancelToken": ...
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
    ) -> _L: ...
    def acquire(self: _L, *, cancel: Optional[CancelToken] = None) -> _L:
        """Take the lock (GIL released while waiting; Ctrl-C interrupts)."""
    def _acquire_blocking(self, cancel: CancelToken) -> None: ...
    def release(self) -> None:
        """Release (idempotent)."""
    def check(self) -> None:
        """Raise LockLostError if overridden, NotHeldError if not held."""
    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
    @property
    def paths(self) -> List[str]:
        """The lock paths, in locking order."""
    @property
    def _reclaimed(self) -> List[Tuple[str, str]]: ...
    def __enter__(self: _L) -> _L: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]: ...

def status_json(
    paths: Optional[Sequence[_Path]] = None,
    legacy: bool = True,
    handover_paths: Optional[Sequence[_Path]] = None,
    handover_legacy: bool = True,
) -> str:
    """The report of ``lockctl status --json`` as JSON text."""

def handover_complete(
    paths: Optional[Sequence[_Path]] = None, legacy: bool = True
) -> List[str]:
    """Write the hand-over signal(s); returns the paths written."""

def default_lock_paths(legacy: bool = True) -> List[str]:
    """The default lock paths."""

def default_handover_paths(legacy: bool = True) -> List[str]:
    """The default hand-over signal paths."""

def error_codes() -> List[Tuple[str, int]]:
    """Every core error code as ``(code, number)``."""
