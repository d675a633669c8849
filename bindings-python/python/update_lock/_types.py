"""Typed views of what the core reports: holder records, holders, status reports.

Field names and values are exactly those of ``lockctl status --json`` (schema 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

_T = TypeVar("_T")


def _build(cls: Type[_T], data: Mapping[str, Any]) -> _T:
    """An instance of the dataclass ``cls`` from the JSON object ``data`` (unknown keys from
    a newer schema are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class HolderRecord:
    """The record update-lock writes into every lock file it creates (informational:
    liveness is decided by flock, never by the pid)."""

    version: int
    """Record format version."""
    pid: int
    """Process id of the holder in its own PID namespace (meaningful only when
    ``same_pid_namespace``)."""
    pid_ns: Optional[int]
    """Inode of the holder's PID namespace."""
    boot_id: Optional[str]
    """Kernel boot id when the lock was taken."""
    start_time: Optional[int]
    """Holder's start time in clock ticks since boot."""
    uid: int
    """Effective uid of the holder."""
    hostname: str
    """Host (container) name of the holder."""
    program: str
    """Program name of the holder (for Python: the script name)."""
    acquired_at_ms: Optional[int]
    """When the lock was taken, milliseconds since the Unix epoch."""
    same_pid_namespace: bool
    """The holder is in the caller's PID namespace."""
    same_process: bool
    """The holder is the calling process itself."""

    @classmethod
    def _from_native(cls, data: Optional[Mapping[str, Any]]) -> Optional[HolderRecord]:
        return None if data is None else _build(cls, data)


@dataclass(frozen=True)
class Holder:
    """Who occupies a lock path (attached to :class:`LockHeldError` and
    :class:`LockTimeoutError` as ``.holder``).

    The fields are the core's canonical holder object, the same in every binding (Node.js:
    ``error.holder``), in its order: ``state``, ``description``, ``record``, ``owner_uid``,
    ``flock_held``, ``foreign_kind``, ``symlink_target``."""

    state: str
    """``held-by-app``, ``held-by-supervisor``, ``stale`` (the holder died), ``foreign``
    (a file update-lock did not create), ``changing`` or ``update-waiting`` (free, but an
    acquisition lets a waiting update in first) — the ``state`` names of
    ``lockctl status``."""
    description: str
    """The core's phrase for it, e.g. ``held by another app (pid 7, ...)``."""
    record: Optional[HolderRecord]
    """The holder record, for ``held-by-app`` and ``stale``."""
    owner_uid: Optional[int]
    """The uid that owns the lock: the record's ``uid`` for ``held-by-app`` and ``stale``,
    65534 for the Supervisor, the owner of the path for ``foreign``; ``None`` for
    ``changing``."""
    flock_held: Optional[bool]
    """Whether someone holds flock(2) on it: ``True`` for ``held-by-app``, ``False`` for
    ``stale`` and ``held-by-supervisor`` (its ``lockfile`` takes no flock), as observed for
    ``foreign``; ``None`` for ``changing``."""
    foreign_kind: Optional[str]
    """For ``foreign``: ``empty-file``, ``lockfile-format``, ``unknown-content``,
    ``directory``, ``symlink``, ``fifo``, ``socket`` or ``device``."""
    symlink_target: Optional[str]
    """Where a symlink points, for ``foreign_kind == "symlink"``."""

    @property
    def pid(self) -> Optional[int]:
        """The holder's pid (from the record), if any."""
        return self.record.pid if self.record else None

    @property
    def uid(self) -> Optional[int]:
        """The holder's uid (from the record; else ``owner_uid``: 65534 for the Supervisor,
        the owner of a foreign path), if known."""
        if self.record:
            return self.record.uid
        return self.owner_uid

    @property
    def program(self) -> Optional[str]:
        """The holder's program name (from the record), if any."""
        return self.record.program if self.record else None

    @property
    def hostname(self) -> Optional[str]:
        """The holder's host (container) name (from the record), if any."""
        return self.record.hostname if self.record else None

    @classmethod
    def _from_native(cls, data: Optional[Mapping[str, Any]]) -> Optional[Holder]:
        if data is None:
            return None
        fields = dict(data)
        fields["record"] = HolderRecord._from_native(fields.get("record"))
        return _build(cls, fields)


@dataclass(frozen=True)
class PathStatus:
    """One lock path as both readers of the lock see it (an element of ``locks`` in
    ``lockctl status --json``)."""

    path: str
    """The lock path."""
    state: str
    """``free``, ``held-by-app``, ``held-by-supervisor``, ``stale``, ``foreign``,
    ``changing``, or ``unknown`` (it could not be looked at: ``error`` says why; never read
    it as free)."""
    blocks_app_updates: bool
    """The Supervisor would defer application updates (the path exists)."""
    blocks_host_reboot: bool
    """The host OS update reboot would wait (named ``updates.lock``, flock held)."""
    flock_held: bool
    """Someone holds flock(2) on it."""
    owner_uid: Optional[int]
    """Owner uid of the path (not followed), when it exists."""
    holder: Optional[HolderRecord]
    """The holder record, for ``held-by-app`` and ``stale``."""
    foreign_kind: Optional[str]
    """What it is, for ``foreign``."""
    symlink_target: Optional[str]
    """Where it points, for a symlink."""
    message: str
    """Who holds it and what to do, for humans."""
    error: Optional[str]
    """Set when the path could not be inspected."""


@dataclass(frozen=True)
class HandoverStatus:
    """One hand-over signal path."""

    path: str
    """The signal path."""
    pending: bool
    """The signal exists and the Supervisor has not consumed it yet."""


@dataclass(frozen=True)
class StatusReport:
    """Everything ``lockctl status --json`` shows, with the same fields."""

    schema: int
    """Report layout version (1)."""
    locks: List[PathStatus]
    """Each lock path."""
    handover: List[HandoverStatus]
    """Each hand-over signal path."""
    blocks_app_updates: bool
    """Any lock path blocks application updates."""
    blocks_host_reboot: bool
    """Any lock path blocks the host OS update reboot."""

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain JSON-compatible data (what ``lockctl status --json`` prints)."""
        return dataclasses.asdict(self)

    @classmethod
    def _from_native(cls, report: Mapping[str, Any]) -> StatusReport:
        data = dict(report)
        locks = []
        for item in data["locks"]:
            item = dict(item)
            item["holder"] = HolderRecord._from_native(item.get("holder"))
            locks.append(_build(PathStatus, item))
        data["locks"] = locks
        data["handover"] = [_build(HandoverStatus, h) for h in data["handover"]]
        return _build(cls, data)


@dataclass(frozen=True)
class Reclaimed:
    """A lock path taken over from a dead holder while acquiring."""

    path: str
    """The path that was reclaimed."""
    previous: HolderRecord
    """The record the dead holder left."""
