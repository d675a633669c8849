"""update-lock for Python: hold off updates on a balena device during a critical section.

On a device two readers decide whether an app is "locked": the balena Supervisor
(application updates) looks whether the lock file *exists*; the host OS update reboot looks
whether someone holds *flock(2)* on ``updates.lock``. A held :class:`Lock` does both on
every lock path, all-or-nothing, and takes over locks whose holder died::

    import update_lock

    with update_lock.lock(timeout=30):
        ...  # no application update, no host OS reboot in here

    async with update_lock.lock_async(timeout=30):
        ...

For the ``hand-over`` update strategy, :class:`HandoverServer` (old version) and
:func:`handover_take` (new version) pass state and open descriptors (a listening socket)
from one release to the next and signal handover-complete.

Every error is an :class:`UpdateLockError` with the core's stable ``.code``; see the
subclasses for each kind. All lock semantics live in the Rust core (``update-lock``); this
package only translates.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Union

from . import _update_lock as _native
from ._api import DeviceState, SupervisorApi, UpdateGate
from ._errors import (
    ERRORS_BY_CODE,
    AlreadyHeldError,
    HandoverError,
    InvalidPathError,
    LockCancelledError,
    LockHeldError,
    LockIOError,
    LockLostError,
    LockStateUnknownError,
    LockTimeoutError,
    NotHeldError,
    PermissionDeniedError,
    SupervisorApiError,
    SupervisorUidError,
    UpdateLockError,
)
from ._handover import (
    HANDOVER_REASONS,
    FdLike,
    HandoverRequest,
    HandoverServer,
    Inheritance,
    InheritedObject,
    Peer,
    handover_take,
)
from ._lock import (
    AsyncLock,
    Lock,
    OnUpdateWaiting,
    OnWait,
    PathArg,
    UpdateWaiting,
    Waiting,
    _path_list,
    lock,
    lock_async,
)
from ._types import (
    HandoverStatus,
    Holder,
    HolderRecord,
    PathStatus,
    Reclaimed,
    StatusReport,
)

CancelToken = _native.CancelToken
"""Cancels a blocking ``acquire(cancel=token)`` from any thread: ``token.cancel()``."""

STATUS_SCHEMA: int = _native.STATUS_SCHEMA
"""Version of the status report layout (``schema``)."""

SUPERVISOR_UID: int = _native.SUPERVISOR_UID
"""The uid the Supervisor takes its locks as (65534); an app must never run as it."""

HANDOVER_MAX_FDS: int = _native.HANDOVER_MAX_FDS
"""The most descriptors one hand-over may pass (64)."""

HANDOVER_PROTOCOL_VERSION: int = _native.HANDOVER_PROTOCOL_VERSION
"""The newest hand-over protocol version this build speaks."""

__version__: str = _native.__version__

__all__ = [
    "ERRORS_BY_CODE",
    "HANDOVER_MAX_FDS",
    "HANDOVER_PROTOCOL_VERSION",
    "HANDOVER_REASONS",
    "STATUS_SCHEMA",
    "SUPERVISOR_UID",
    "AlreadyHeldError",
    "AsyncLock",
    "CancelToken",
    "DeviceState",
    "FdLike",
    "HandoverError",
    "HandoverRequest",
    "HandoverServer",
    "HandoverStatus",
    "Holder",
    "HolderRecord",
    "Inheritance",
    "InheritedObject",
    "InvalidPathError",
    "Lock",
    "LockCancelledError",
    "LockHeldError",
    "LockIOError",
    "LockLostError",
    "LockStateUnknownError",
    "LockTimeoutError",
    "NotHeldError",
    "OnUpdateWaiting",
    "OnWait",
    "PathStatus",
    "Peer",
    "PermissionDeniedError",
    "Reclaimed",
    "StatusReport",
    "SupervisorApi",
    "SupervisorApiError",
    "SupervisorUidError",
    "UpdateGate",
    "UpdateLockError",
    "UpdateWaiting",
    "Waiting",
    "default_handover_paths",
    "default_handover_socket",
    "default_lock_paths",
    "handover_complete",
    "handover_take",
    "listen_backlog",
    "lock",
    "lock_async",
    "status",
]


def status(
    paths: PathArg = None,
    legacy: bool = True,
    handover_paths: PathArg = None,
) -> StatusReport:
    """What the Supervisor and the host OS reboot see on every lock path right now, and
    whether a hand-over signal is pending. Changes nothing.

    Same fields and values as ``lockctl status --json``; like it, with explicit ``paths``
    the hand-over signal looked at is ``handover-complete`` beside the first path unless
    ``handover_paths`` are given.
    """
    return StatusReport._from_native(_native.status(_path_list(paths), legacy, _path_list(handover_paths), True))


def handover_complete(
    paths: Union[str, os.PathLike[str], Iterable[Union[str, os.PathLike[str]]], None] = None,
    legacy: bool = True,
) -> List[str]:
    """Tell the Supervisor the new release has taken over (hand-over strategy): write each
    signal file atomically. Default: ``$BALENA_SERVICE_HANDOVER_COMPLETE_PATH`` (else
    ``$RESIN_SERVICE_KILL_ME_PATH``, else ``/tmp/balena/handover-complete``) plus, with
    ``legacy``, ``/tmp/resin/resin-kill-me`` and ``/data/resin-kill-me`` when ``/data``
    exists (failures on those extras are ignored). Idempotent. Returns the paths written.
    """
    return _native.handover_complete(_path_list(paths), legacy)


def default_lock_paths(legacy: bool = True) -> List[str]:
    """The default lock paths (from the Supervisor's environment variables)."""
    return _native.default_lock_paths(legacy)


def default_handover_paths(legacy: bool = True) -> List[str]:
    """The default hand-over signal paths."""
    return _native.default_handover_paths(legacy)



def default_handover_socket() -> str:
    """The default hand-over socket: ``handover.sock`` beside the handover-complete signal
    (``$BALENA_SERVICE_HANDOVER_COMPLETE_PATH``, by default ``/tmp/balena/handover.sock``)."""
    return _native.default_handover_socket()


def listen_backlog() -> int:
    """The listen backlog to give a listener that may be handed over: the kernel's limit
    (``net.core.somaxconn``). Connections that arrive during a switch, while no release
    accepts, then wait instead of being dropped (a dropped SYN costs the client a second)::

        listener = socket.create_server(("0.0.0.0", 80), backlog=update_lock.listen_backlog())
    """
    return _native.listen_backlog()
