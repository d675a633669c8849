"""The exceptions: one base class carrying the core's stable code, one subclass per kind.

Each subclass also derives from the builtin exception a Python programmer would catch for
that situation (``TimeoutError``, ``PermissionError``, ...). ``str(e)`` is always the core's
message: which path, who holds it, what to do next.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ._types import Holder


class UpdateLockError(Exception):
    """Base of every update-lock error.

    Attributes:
        code: the core's stable code (``held``, ``timeout``, ``lost``, ``permission``,
            ``supervisor-uid``, ``invalid-path``, ``io``, ``cancelled``, ``not-held``,
            ``handover``, ``api``, ``unknown``, ``already-held``).
        number: the code's stable number (1..13).
        message: the core's message (also ``str(e)``).
        path: the lock path concerned, when there is one.
        holder: who holds the lock (:class:`Holder`), for ``held`` and ``timeout``.
        paths: every path concerned (for ``lost``: all paths that are no longer ours).
    """

    code: str = "unknown"
    number: int = 0

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        number: Optional[int] = None,
        path: Optional[str] = None,
        holder: Optional[Holder] = None,
        paths: Optional[List[str]] = None,
        waited: Optional[float] = None,
        errno: Optional[int] = None,
        operation: Optional[str] = None,
        by: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self._kwargs: Dict[str, Any] = dict(
            code=code,
            number=number,
            path=path,
            holder=holder,
            paths=paths,
            waited=waited,
            errno=errno,
            operation=operation,
            by=by,
            reason=reason,
        )
        self.message: str = message
        if code is not None:
            self.code = code
        if number is not None:
            self.number = number
        self.path: Optional[str] = path
        self.holder: Optional[Holder] = holder
        self.paths: List[str] = list(paths) if paths else ([path] if path else [])
        self.operation: Optional[str] = operation
        if isinstance(self, OSError):
            _fill_os_error(self, errno, path)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        # Picklable (multiprocessing sends exceptions between processes).
        return (_restore, (type(self), self.message, self._kwargs))


def _fill_os_error(e: OSError, errno: Optional[int], path: Optional[str]) -> None:
    """Set the OSError attributes (``errno``, ``strerror``, ``filename``); ``str(e)`` stays
    the core's message (``__str__`` is overridden)."""
    e.errno = errno
    e.strerror = os.strerror(errno) if errno is not None else None
    e.filename = path


def _restore(cls: Type[UpdateLockError], message: str, kwargs: Dict[str, Any]) -> UpdateLockError:
    return cls(message, **kwargs)


class LockHeldError(UpdateLockError, BlockingIOError):
    """``held`` (1): the lock is held by someone else and no wait was asked for
    (``timeout=0``). ``.holder`` says who. A ``BlockingIOError``, like
    ``fcntl.flock(fd, LOCK_EX | LOCK_NB)`` on a held lock."""

    code = "held"
    number = 1


class LockTimeoutError(UpdateLockError, TimeoutError):
    """``timeout`` (2): the lock stayed held for the whole timeout. ``.holder`` says who held
    it last, ``.waited`` how long we waited (seconds)."""

    code = "timeout"
    number = 2

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.waited: Optional[float] = kwargs.get("waited")


class LockLostError(UpdateLockError):
    """``lost`` (3): a lock we held was deleted or replaced (the Supervisor's lock override
    does this). ``.paths`` lists the paths that are no longer ours; whatever is there now
    was left alone."""

    code = "lost"
    number = 3


class PermissionDeniedError(UpdateLockError, PermissionError):
    """``permission`` (4): the OS refused (read-only or foreign-owned directory)."""

    code = "permission"
    number = 4


class SupervisorUidError(UpdateLockError, PermissionError):
    """``supervisor-uid`` (5): running as uid 65534, whose lock files the Supervisor treats
    as its own (ignores and deletes)."""

    code = "supervisor-uid"
    number = 5


class InvalidPathError(UpdateLockError, ValueError):
    """``invalid-path`` (6): the path cannot be used as a lock path (empty, NUL byte, too
    long, directory missing, symlinked directory in a world-writable place)."""

    code = "invalid-path"
    number = 6


class LockIOError(UpdateLockError, OSError):
    """``io`` (7): any other OS error (out of file descriptors, disk full, ...); ``.errno``
    is set."""

    code = "io"
    number = 7


class LockCancelledError(UpdateLockError):
    """``cancelled`` (8): the wait was cancelled through a :class:`CancelToken`; nothing was
    taken."""

    code = "cancelled"
    number = 8

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.by: Optional[str] = kwargs.get("by")


class NotHeldError(UpdateLockError, RuntimeError):
    """``not-held`` (9): the operation needs a held lock (``check()`` before ``acquire()``
    or after ``release()``). A ``RuntimeError``, like releasing an unlocked
    ``threading.Lock``."""

    code = "not-held"
    number = 9


class HandoverError(UpdateLockError):
    """``handover`` (10): a hand-over between the old and the new version did not happen.
    ``.reason`` says why, one of the core's stable strings:

    * ``stalled``: the peer did not answer a step within its timeout;
    * ``peer-gone``: the peer closed the connection mid-way (it crashed or exited);
    * ``taken``: another successor already took over from this old version;
    * ``uid``: the peer runs as a user that is not ours, not root and not in ``peer_uids``;
    * ``version``: the two versions share no protocol version;
    * ``protocol``: the peer does not speak the hand-over protocol;
    * ``refused``: the old version's app refused (``HandoverServer.refuse``);
    * ``already-serving``: another process already serves on this socket;
    * ``finished``: this server has already handed over or was closed;
    * ``too-large``: the state or the descriptors exceed the limits;
    * ``blocked``: something that is not a live hand-over server we may use (a file, fifo,
      symlink, another user's dead socket or companion lock) stands at the socket path; it
      is never removed: start without hand-over and remove it.

    Whatever the reason, nothing was handed over: the old version keeps its resources (and,
    for a failed ``grant``, keeps serving)."""

    code = "handover"
    number = 10

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason: Optional[str] = kwargs.get("reason")


class SupervisorApiError(UpdateLockError):
    """``api`` (11): a call to the Supervisor API failed. ``.reason`` says why:

    * ``not-configured``: no address or key (not on a device, or the service lacks the
      ``io.balena.features.supervisor-api`` label);
    * ``unreachable``: nobody answers at the address;
    * ``timeout``: no answer within the call's timeout;
    * ``unauthorized``: the key was refused;
    * ``http-status``: another error answer;
    * ``bad-response``: an answer that is not the Supervisor's.

    A refusal because an update lock is held (HTTP 423) raises :class:`LockHeldError`
    instead. The API key never appears in the message."""

    code = "api"
    number = 11

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason: Optional[str] = kwargs.get("reason")


class LockStateUnknownError(UpdateLockError, OSError):
    """``unknown`` (12): the lock could not be looked at (out of file descriptors, a
    directory that may not be searched): whether it is held, or still ours, is unknown.
    Nothing was changed or deleted. Never read it as free."""

    code = "unknown"
    number = 12


class AlreadyHeldError(UpdateLockError, RuntimeError):
    """``already-held`` (13): this process already holds the lock path (another ``Lock``,
    thread or task) and the two cannot share it: a second exclusive hold would wait for
    this process's own forever. Reuse the lock you hold, or take both with
    ``shared=True``."""

    code = "already-held"
    number = 13


ERRORS_BY_CODE: Dict[str, Type[UpdateLockError]] = {
    cls.code: cls
    for cls in (
        LockHeldError,
        LockTimeoutError,
        LockLostError,
        PermissionDeniedError,
        SupervisorUidError,
        InvalidPathError,
        LockIOError,
        LockCancelledError,
        NotHeldError,
        HandoverError,
        SupervisorApiError,
        LockStateUnknownError,
        AlreadyHeldError,
    )
}
"""Exception class for each core code."""


def _from_native(
    code: str, number: int, message: str, path: Optional[str], extra: Mapping[str, Any]
) -> UpdateLockError:
    """Called by the native module to build the exception for a core error (``extra``: the
    error's details, as native objects)."""
    cls = ERRORS_BY_CODE.get(code, UpdateLockError)
    return cls(
        message,
        code=code,
        number=number,
        path=path,
        holder=Holder._from_native(extra.get("holder")),
        paths=extra.get("paths"),
        waited=extra.get("waited"),
        errno=extra.get("errno"),
        operation=extra.get("operation"),
        by=extra.get("by"),
        reason=extra.get("reason"),
    )
