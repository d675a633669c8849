"""The Supervisor API (``io.balena.features.supervisor-api``) and the update gate: hold the
update lock all the time and let an update in only at a safe point.

The calls are the core's (``update_lock`` never speaks HTTP itself); every call has a timeout,
and the key never appears in a message or a ``repr``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Dict, Optional, Type

from . import _update_lock as _native
from ._lock import PathArg, _path_list


@dataclass(frozen=True)
class DeviceState:
    """What ``GET /v1/device`` says (fields the Supervisor leaves out are ``None``/``False``)."""

    status: Optional[str]
    update_pending: bool
    update_downloaded: bool
    update_failed: bool
    download_progress: Optional[int]
    commit: Optional[str]
    os_version: Optional[str]
    supervisor_version: Optional[str]
    ip_address: Optional[str]

    @property
    def update_waiting(self) -> bool:
        """An update has been downloaded and waits (for the update lock)."""
        return self.update_pending and self.update_downloaded

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict (the same keys as ``lockctl device --json``)."""
        return asdict(self)


class SupervisorApi:
    """A client of the Supervisor API.

    Args:
        address: e.g. ``http://127.0.0.1:48484``; default ``$BALENA_SUPERVISOR_ADDRESS``.
        key: default ``$BALENA_SUPERVISOR_API_KEY``.
        timeout: seconds each call may take.

    Raises:
        SupervisorApiError: ``reason == "not-configured"`` when there is no address or key
            (not on a device, or the service lacks the ``io.balena.features.supervisor-api``
            label). Calls raise ``SupervisorApiError`` (``unreachable``, ``timeout``,
            ``unauthorized``, ``http-status``, ``bad-response``) or, when the Supervisor
            refuses because an update lock is held (HTTP 423), ``LockHeldError``.
    """

    def __init__(
        self, address: Optional[str] = None, key: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> None:
        self._native = _native.SupervisorApi(address, key, timeout)

    @property
    def address(self) -> str:
        """The address it calls."""
        return self._native.address

    @property
    def timeout(self) -> float:
        """Seconds each call may take."""
        return self._native.timeout

    def ping(self) -> None:
        """``GET /ping``: is the Supervisor there?"""
        self._native.ping()

    def device(self) -> DeviceState:
        """``GET /v1/device``: the device state, including whether an update is pending."""
        return DeviceState(**self._native.device())

    def update(self, force: bool = False) -> None:
        """``POST /v1/update``: check for an update now; ``force`` overrides update locks."""
        self._native.update(force)

    def reboot(self, force: bool = False) -> None:
        """``POST /v1/reboot``; refused (``LockHeldError``) while a lock is held, unless
        ``force``."""
        self._native.reboot(force)

    def restart_service(
        self, service: str, *, app_id: Optional[int] = None, force: bool = False
    ) -> None:
        """``POST /v2/applications/{app_id}/restart-service`` (``app_id`` defaults to
        ``$BALENA_APP_ID``)."""
        self._native.restart_service(app_id, service, force)

    def __repr__(self) -> str:
        return repr(self._native)


class UpdateGate:
    """The update lock, held until a downloaded update waits **and** the app calls
    :meth:`safe_point`. A context manager::

        with update_lock.UpdateGate() as gate:
            while True:
                do_one_unit_of_work()
                if gate.safe_point() == "released":
                    break          # the Supervisor now stops this service to update it

    :meth:`safe_point` returns ``"no-update"`` (the lock stays held), ``"released"``, or
    with ``retake=True`` ``"retaken"`` (the update finished and the lock is held again) or
    ``"retaken-unsettled"`` (``settle_timeout`` ran out first). When the API cannot be asked
    it raises and **keeps the lock**: the app decides.

    Args:
        api: the client (default: ``SupervisorApi()`` from the environment).
        paths, timeout, legacy, reclaim_stale, program: as for :func:`update_lock.lock`.
        retake: take the lock again after the update (for updates that do not replace this
            service).
        settle_timeout: longest wait for the update to finish before retaking.
        poll_interval: how often to ask while waiting.
    """

    def __init__(
        self,
        api: Optional[SupervisorApi] = None,
        *,
        paths: PathArg = None,
        timeout: Optional[float] = None,
        legacy: bool = True,
        reclaim_stale: bool = True,
        program: Optional[str] = None,
        retake: bool = False,
        settle_timeout: Optional[float] = None,
        poll_interval: Optional[float] = None,
    ) -> None:
        self.api = api if api is not None else SupervisorApi()
        self._native = _native.UpdateGate(
            self.api._native,
            _path_list(paths),
            timeout,
            legacy,
            reclaim_stale,
            program,
            retake,
            settle_timeout,
            poll_interval,
        )

    def acquire(self) -> UpdateGate:
        """Take the lock (waits as ``timeout`` says)."""
        self._native.acquire()
        return self

    def safe_point(self) -> str:
        """The app is at a safe point: let a downloaded update in (see the class)."""
        return self._native.safe_point()

    def update_waiting(self) -> bool:
        """Whether a downloaded update waits (one API call)."""
        return self._native.update_waiting()

    @property
    def held(self) -> bool:
        """Whether the lock is held now."""
        return self._native.held

    def release(self) -> None:
        """Release for good (idempotent)."""
        self._native.release()

    def __enter__(self) -> UpdateGate:
        return self.acquire()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()
