"""The lock objects: :class:`Lock` (blocking, context manager, decorator) and
:class:`AsyncLock` (asyncio)."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Iterable,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import _update_lock as _native
from ._types import Holder, HolderRecord, Reclaimed

PathArg = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], None]
"""One lock path, several, or ``None`` for the Supervisor's defaults."""

_F = TypeVar("_F", bound=Callable[..., Any])
_R = TypeVar("_R")


@dataclass(frozen=True)
class Waiting:
    """What an ``on_wait`` hook is told while an acquisition waits: once when the wait
    starts, then every 10 s."""

    path: str
    """The lock path that blocks the acquisition."""
    holder: Optional[Holder]
    """Who holds it."""
    waited: float
    """Seconds waited so far."""
    message: str
    """One line for people: who holds it and for how long we have waited."""


OnWait = Callable[[Waiting], None]
"""An ``on_wait`` hook (it runs on the waiting thread; an exception is reported, and the
wait goes on)."""


def _on_wait_adapter(on_wait: Optional[OnWait]) -> Optional[Callable[[str, Any, float, str], None]]:
    if on_wait is None:
        return None
    if not callable(on_wait):
        raise TypeError(f"on_wait must be callable, not {type(on_wait).__name__}")

    def call(path: str, holder: Any, waited: float, message: str) -> None:
        on_wait(Waiting(path, Holder._from_native(holder), waited, message))

    return call


@dataclass(frozen=True)
class UpdateWaiting:
    """What an ``on_update_waiting`` hook is told: the balena Supervisor tried to take the
    lock while it is held (an update, or a reboot it needs, waits for the app)."""

    path: str
    """The held lock path."""
    temp_name: str
    """The name of the Supervisor's ``lockfile`` temp file, seen in the lock directory."""
    seen_at: float
    """When it was seen (seconds since the Unix epoch, as ``time.time()``)."""
    proven: bool
    """The temp file was still there and owned by uid 65534 (``False``: it was gone before
    it could be looked at, and its name alone says it was ``lockfile``'s)."""
    message: str
    """One line for people."""


OnUpdateWaiting = Callable[[UpdateWaiting], None]
"""An ``on_update_waiting`` hook. It runs once per hold on a background thread of the SDK
(not the thread that holds the lock): keep it short and thread-safe, for example set a
``threading.Event`` the worker looks at. An exception is reported and ignored."""


def _on_update_waiting_adapter(
    hook: Optional[OnUpdateWaiting],
) -> Optional[Callable[[str, str, float, bool, str], None]]:
    if hook is None:
        return None
    if not callable(hook):
        raise TypeError(f"on_update_waiting must be callable, not {type(hook).__name__}")

    def call(path: str, temp_name: str, seen_at: float, proven: bool, message: str) -> None:
        hook(UpdateWaiting(path, temp_name, seen_at, proven, message))

    return call


def _path_list(paths: PathArg) -> Optional[List[Union[str, os.PathLike[str]]]]:
    if paths is None:
        return None
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if isinstance(paths, bytes):
        raise TypeError("lock paths must be str or os.PathLike, not bytes")
    return list(paths)


def _default_program() -> Optional[str]:
    """The script name, so ``lockctl status`` shows ``worker.py`` rather than ``python3``."""
    main = sys.modules.get("__main__")
    name: Optional[str] = getattr(main, "__file__", None)
    if not name and sys.argv and sys.argv[0] not in ("", "-c", "-m"):
        name = sys.argv[0]
    if not name or name.startswith("<"):
        return None  # core uses the process name
    base = os.path.basename(name)
    if base == "__main__.py":  # python -m package: the package name
        base = os.path.basename(os.path.dirname(os.path.abspath(name))) or base
    return base


def _reclaimed(native: _native.NativeLock) -> List[Reclaimed]:
    out = []
    for path, record in native._reclaimed:
        previous = HolderRecord._from_native(record)
        assert previous is not None
        out.append(Reclaimed(path=path, previous=previous))
    return out


class Lock(_native.NativeLock):
    """An update lock: while held, every lock path exists (the Supervisor defers application
    updates) and is flocked (the host OS update reboot waits).

    Make one with :func:`lock`. Nothing is taken until :meth:`acquire` or ``with``::

        with update_lock.lock(timeout=30):
            ...  # critical section

        @update_lock.lock()
        def write_state(): ...

    Methods (native, the GIL is released while waiting):

    * ``acquire(*, cancel=None) -> Lock`` — take it, waiting as the lock's timeout says;
      Ctrl-C interrupts the wait (``KeyboardInterrupt``, nothing taken); a
      :class:`CancelToken` cancelled from another thread ends it with
      :class:`LockCancelledError`. Returns the lock itself.
    * ``release()`` — release; idempotent; :class:`LockLostError` if a path was no longer
      ours. In a child made by ``os.fork()`` it does nothing to the files.
    * ``check()`` — :class:`LockLostError` if the lock was overridden,
      :class:`NotHeldError` if not held.
    * ``held`` — whether this object holds the lock now (``False`` in a forked child).
    * ``update_waiting`` — whether the Supervisor has tried to take the lock since it was
      taken: an update waits for this app (see ``on_update_waiting``).
    * ``paths`` — the lock paths in locking order.

    One object may be shared by threads: an ``acquire()`` from another thread waits for the
    holder's ``release()``. The same thread acquiring twice gets :class:`AlreadyHeldError`
    at once (it would wait for itself). With ``shared=True`` every thread (and every
    process and container of the app) holds it at once, each ``with`` counting once; the
    last one out removes the lock.
    """

    __slots__ = ()

    @property
    def reclaimed(self) -> List[Reclaimed]:
        """Paths the last acquisition took over from dead holders."""
        return _reclaimed(self)

    def __call__(self, func: _F) -> _F:
        """Use the lock as a decorator: every call of ``func`` runs with the lock held."""
        if inspect.iscoroutinefunction(func):
            raise TypeError(
                "use update_lock.lock_async() to decorate a coroutine function"
            )

        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return locked  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<update_lock.Lock {state} paths={self.paths!r}>"


class AsyncLock:
    """The asyncio form of :class:`Lock` (make one with :func:`lock_async`)::

        async with update_lock.lock_async(timeout=30):
            ...

    Waiting never blocks the event loop: the core's wait runs on a helper thread and
    completes the awaiting task. Cancelling the task ends that wait at once (a cancel
    token) and whatever was taken is released before ``CancelledError`` propagates.
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        timeout: Optional[float] = None,
        paths: PathArg = None,
        legacy: bool = True,
        reclaim_stale: bool = True,
        *,
        program: Optional[str] = None,
        shared: bool = False,
        on_wait: Optional[OnWait] = None,
        on_update_waiting: Optional[OnUpdateWaiting] = None,
        yield_to_updates: Optional[float] = None,
    ) -> None:
        self._native = _native.NativeLock(
            _path_list(paths),
            timeout,
            legacy,
            reclaim_stale,
            program if program is not None else _default_program(),
            shared,
            _on_wait_adapter(on_wait),
            _on_update_waiting_adapter(on_update_waiting),
            yield_to_updates,
        )

    async def acquire(self) -> AsyncLock:
        """Take the lock without blocking the event loop; returns the lock itself."""
        # Imported here: asyncio (and ssl through it) costs ~55 ms and ~10 MiB at import,
        # which sync-only apps should not pay.
        import asyncio

        loop = asyncio.get_running_loop()
        done: asyncio.Future[Optional[BaseException]] = loop.create_future()
        token = _native.CancelToken()
        native = self._native

        def settle(outcome: Optional[BaseException]) -> None:
            # On the event loop. A task that was cancelled meanwhile no longer wants it.
            if done.cancelled():
                if outcome is None:
                    _release_quietly(native)
            else:
                done.set_result(outcome)

        owner = _task_owner(asyncio.current_task())

        def wait() -> None:
            outcome: Optional[BaseException]
            try:
                native._acquire_blocking(token, owner)
                outcome = None
            except BaseException as e:  # delivered to the awaiting task
                outcome = e
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop is closed: nobody will use the lock
                if outcome is None:
                    _release_quietly(native)

        threading.Thread(target=wait, name="update-lock-wait", daemon=True).start()
        try:
            outcome = await asyncio.shield(done)
        except asyncio.CancelledError:
            token.cancel()  # ends the wait at once
            # Wait for the helper (it is about to finish), and let go of a lock it got
            # anyway; cancelled again meanwhile, `settle` releases it.
            outcome = await done
            if outcome is None:
                _release_quietly(native)
            raise
        if outcome is not None:
            raise outcome
        return self

    def release(self) -> None:
        """Release (idempotent); :class:`LockLostError` if a path was no longer ours."""
        self._native.release()

    def check(self) -> None:
        """:class:`LockLostError` if the lock was overridden, :class:`NotHeldError` if not
        held."""
        self._native.check()

    @property
    def update_waiting(self) -> bool:
        """Whether the Supervisor has tried to take the lock since it was taken."""
        return self._native.update_waiting

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now (``False`` in a forked child)."""
        return self._native.held

    @property
    def paths(self) -> List[str]:
        """The lock paths, in locking order."""
        return self._native.paths

    @property
    def reclaimed(self) -> List[Reclaimed]:
        """Paths the last acquisition took over from dead holders."""
        return _reclaimed(self._native)

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._native.__exit__(exc_type, exc, tb)

    def __call__(
        self, func: Callable[..., Awaitable[_R]]
    ) -> Callable[..., Awaitable[_R]]:
        """Use the lock as a decorator of a coroutine function."""
        if not inspect.iscoroutinefunction(func):
            raise TypeError("lock_async() decorates coroutine functions; use lock()")

        @functools.wraps(func)
        async def locked(*args: Any, **kwargs: Any) -> _R:
            async with self:
                return await func(*args, **kwargs)

        return locked

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<update_lock.AsyncLock {state} paths={self.paths!r}>"


_TASK_OWNERS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_TASK_OWNERS_LOCK = threading.Lock()


def _task_owner(task: Any) -> int:
    """The core's lock owner of an asyncio task (one per task): the same task entering the
    same lock twice fails at once instead of waiting for itself; other tasks wait."""
    if task is None:
        return int(_native.new_lock_owner())
    with _TASK_OWNERS_LOCK:
        owner = _TASK_OWNERS.get(task)
        if owner is None:
            owner = int(_native.new_lock_owner())
            _TASK_OWNERS[task] = owner
        return owner


def _release_quietly(native: _native.NativeLock) -> None:
    try:
        native.release()
    except Exception:
        pass


def _old_positional_form(
    what: str,
    paths: Any,
    args: Tuple[Any, ...],
    timeout: Optional[float],
    legacy: bool,
    reclaim_stale: bool,
) -> Tuple[PathArg, Optional[float], bool, bool]:
    """``lock(30, "/path")``, the 0.1 order (timeout, paths, legacy, reclaim_stale): still
    accepted for one release, with a DeprecationWarning. Returns ``(paths, timeout, legacy,
    reclaim_stale)``."""
    number_first = isinstance(paths, (int, float)) and not isinstance(paths, bool)
    if not number_first and not (paths is None and args):
        if args:
            raise TypeError(
                f"{what}() takes the lock paths as its only positional argument; "
                "pass timeout=, legacy=, reclaim_stale= by name"
            )
        return paths, timeout, legacy, reclaim_stale
    warnings.warn(
        f"{what}(timeout, paths, ...) is the 0.1 order: write {what}(paths, timeout=...) "
        "(keyword arguments after the paths)",
        DeprecationWarning,
        stacklevel=3,
    )
    if timeout is not None:
        raise TypeError(f"{what}() got the timeout twice (first positional and timeout=)")
    rest = args[1:]
    return (
        args[0] if args else None,
        paths,
        rest[0] if rest else legacy,
        rest[1] if len(rest) > 1 else reclaim_stale,
    )


def lock(
    paths: PathArg = None,
    *args: Any,
    timeout: Optional[float] = None,
    legacy: bool = True,
    reclaim_stale: bool = True,
    program: Optional[str] = None,
    shared: bool = False,
    on_wait: Optional[OnWait] = None,
    on_update_waiting: Optional[OnUpdateWaiting] = None,
    yield_to_updates: Optional[float] = None,
) -> Lock:
    """An update lock (not yet taken): use it with ``with``, as a decorator, or call
    ``acquire()``/``release()``::

        with update_lock.lock("/tmp/balena/updates.lock", timeout=30): ...

    The 0.1 order ``lock(30, paths)`` (a number first) still works, with a
    DeprecationWarning.

    Args:
        timeout: seconds to wait for the lock; ``None`` (default) waits forever, ``0``
            tries once (:class:`LockHeldError` when held), otherwise
            :class:`LockTimeoutError` when it runs out.
        paths: the lock path(s). Default: the Supervisor's ``$BALENA_APP_LOCK_PATH`` (else
            ``$RESIN_APP_LOCK_PATH``, else ``/tmp/balena/updates.lock``) plus, with
            ``legacy``, ``/tmp/resin/resin-updates.lock``. An empty list means the default.
        legacy: with the default paths, also lock the legacy path.
        reclaim_stale: take over locks left by dead holders (our record, nobody holds its
            flock).
        program: the program name written in the holder record (default: the script name).
        shared: hold it in shared mode: other shared holders of the app (threads, processes,
            containers of the same uid) hold it at the same time, each ``with`` counting
            once, and the last one out removes it. The Supervisor and the reboot still see
            it held. An exclusive holder, another uid's lock and the Supervisor's are waited
            for.
        on_wait: called with a :class:`Waiting` when the acquisition has to wait (who holds
            the lock), once when the wait starts and every 10 s while it goes on.
        on_update_waiting: called with an :class:`UpdateWaiting` once per hold when the
            balena Supervisor tries to take the lock (an update waits for the app), on a
            background thread of the SDK. ``Lock.update_waiting`` says the same without a
            hook.
        yield_to_updates: after the Supervisor was seen trying to take the lock (by this
            process, or by another of the app that left the dated ``update-waiting`` note),
            how many seconds an acquisition waits at most while the lock is free, so the
            update gets in first; it ends when the Supervisor's lock appears. ``0`` never
            yields; ``None`` (default) means ``$UPDATE_LOCK_YIELD_TO_UPDATES`` or 60. It
            counts against ``timeout`` (trying once raises :class:`LockHeldError` while it
            would yield). A held lock is never taken away by this.

    Raises:
        ValueError: a negative or NaN timeout or yield_to_updates.
    """
    paths, timeout, legacy, reclaim_stale = _old_positional_form(
        "lock", paths, args, timeout, legacy, reclaim_stale
    )
    return Lock(
        _path_list(paths),
        timeout,
        legacy,
        reclaim_stale,
        program if program is not None else _default_program(),
        shared,
        _on_wait_adapter(on_wait),
        _on_update_waiting_adapter(on_update_waiting),
        yield_to_updates,
    )


def lock_async(
    paths: PathArg = None,
    *args: Any,
    timeout: Optional[float] = None,
    legacy: bool = True,
    reclaim_stale: bool = True,
    program: Optional[str] = None,
    shared: bool = False,
    on_wait: Optional[OnWait] = None,
    on_update_waiting: Optional[OnUpdateWaiting] = None,
    yield_to_updates: Optional[float] = None,
) -> AsyncLock:
    """The asyncio form of :func:`lock` (same arguments): ``async with
    update_lock.lock_async(): ...``. The owner for the nesting check is the task: the
    same task entering it twice fails at once with :class:`AlreadyHeldError`."""
    paths, timeout, legacy, reclaim_stale = _old_positional_form(
        "lock_async", paths, args, timeout, legacy, reclaim_stale
    )
    return AsyncLock(
        timeout,
        paths,
        legacy,
        reclaim_stale,
        program=program,
        shared=shared,
        on_wait=on_wait,
        on_update_waiting=on_update_waiting,
        yield_to_updates=yield_to_updates,
    )
