"""Shared mode: holders of the app hold the lock at once (threads, tasks, processes), the
Supervisor's ``lockfile`` and the reboot's ``flock -nx`` see it held while any is inside,
and the last one out removes it. What is not ours to join is waited for."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any, List

import pytest
import update_lock
from conftest import Child, assert_free, assert_held, run, spawn


def test_threads_hold_one_shared_lock_object_at_once(lock_path: Path) -> None:
    """Four threads in one ``with`` of the same object at the same time: a barrier inside
    the critical section would break if they were serialised."""
    lk = update_lock.lock(paths=lock_path, shared=True, timeout=5)
    inside = threading.Barrier(4, timeout=10)
    seen: List[bool] = []
    errors: List[BaseException] = []

    def work() -> None:
        try:
            with lk:
                inside.wait()  # all four are inside together
                assert_held(lock_path)
                seen.append(lk.held)
                inside.wait()  # nobody leaves before everyone looked
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert seen == [True] * 4
    assert not lk.held
    assert_free(lock_path)


def test_processes_share_and_the_last_one_out_removes_it(lock_path: Path, children: List[Child]) -> None:
    with update_lock.lock(paths=lock_path, shared=True, timeout=0):
        other = spawn(children, "hold-shared", lock_path)
        other.expect("held")  # joined without waiting (timeout=0)
        assert_held(lock_path)
    # We left first: the other process is still inside, so the lock stays.
    assert_held(lock_path)
    other.send("go")
    other.expect("released")
    assert_free(lock_path)


def test_an_exclusive_holder_is_waited_for_and_the_message_says_why(lock_path: Path, children: List[Child]) -> None:
    with update_lock.lock(paths=lock_path, timeout=0):
        other = spawn(children, "hold-shared", lock_path)
        err = json.loads(other.expect("error"))
        assert (err["class"], err["code"]) == ("LockHeldError", "held")
        assert "held exclusively, so a shared hold waits" in err["message"]
    assert_free(lock_path)


def test_the_supervisors_lock_is_never_joined(lock_path: Path) -> None:
    # The Supervisor (uid 65534) takes the lock, as it does before an update.
    supervisor = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert run([*supervisor, "lockfile", "-r", "0", str(lock_path)]).returncode == 0
    before = lock_path.stat().st_ino
    with pytest.raises(update_lock.LockHeldError, match="balena Supervisor"):
        update_lock.lock(paths=lock_path, shared=True, timeout=0).acquire()
    assert lock_path.stat().st_ino == before


def test_asyncio_tasks_share_and_the_same_task_cannot_nest_exclusively(lock_path: Path) -> None:
    async def main() -> None:
        shared = update_lock.lock_async(paths=lock_path, shared=True, timeout=5)
        both_inside = asyncio.Barrier(2)

        async def task() -> None:
            async with update_lock.lock_async(paths=lock_path, shared=True, timeout=5):
                await asyncio.wait_for(both_inside.wait(), 10)

        await asyncio.gather(task(), task())
        assert_free(lock_path)
        exclusive = update_lock.lock_async(paths=lock_path)  # no timeout: would wait forever
        async with exclusive:
            # The same task (awaited directly: wait_for would make a new task).
            with pytest.raises(update_lock.AlreadyHeldError):
                await update_lock.lock_async(paths=lock_path).acquire()

            async def other_task() -> None:
                with pytest.raises(update_lock.LockHeldError):
                    await update_lock.lock_async(paths=lock_path, timeout=0).acquire()

            await asyncio.wait_for(asyncio.create_task(other_task()), 10)
        async with shared:
            async with shared:  # the same object entered twice counts twice
                assert shared.held
            assert shared.held and lock_path.exists()
        assert not shared.held
        assert_free(lock_path)

    asyncio.run(main())


def test_paths_come_first_and_the_old_order_still_works_with_a_warning(lock_path: Path) -> None:
    """``lock(paths, *, timeout=...)``; the 0.1 order (a number first) works for one release,
    with a DeprecationWarning; anything else positional after the paths is a TypeError."""
    lk = update_lock.lock(lock_path, timeout=0)
    assert lk.paths == [str(lock_path)]
    with pytest.warns(DeprecationWarning, match="0.1 order"):
        old = update_lock.lock(0, lock_path)
    assert old.paths == [str(lock_path)]
    with old:
        # timeout 0 came through: a second holder (another thread) is told at once.
        errors: List[BaseException] = []

        def other() -> None:
            try:
                update_lock.lock(lock_path, timeout=0).acquire()
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert [type(e) for e in errors] == [update_lock.LockHeldError]
    with pytest.warns(DeprecationWarning):
        assert update_lock.lock_async(None, lock_path).paths == [str(lock_path)]
    with pytest.raises(TypeError, match="only positional argument"):
        update_lock.lock(lock_path, 30)  # type: ignore[misc]
    with pytest.raises(ValueError, match="not -1"):
        update_lock.lock(lock_path, timeout=-1)
    assert_free(lock_path)


def test_on_wait_says_who_holds_the_lock_when_the_wait_starts(
    lock_path: Path, children: List[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = spawn(children, "hold", lock_path)
    pid = int(other.expect("held"))
    seen: List[update_lock.Waiting] = []
    with pytest.raises(update_lock.LockTimeoutError):
        update_lock.lock(lock_path, timeout=0.3, on_wait=seen.append).acquire()
    assert len(seen) == 1, "once when the wait starts (the next would come after 10 s)"
    w = seen[0]
    assert w.path == str(lock_path) and w.waited < 0.3
    assert w.holder is not None and w.holder.record is not None and w.holder.record.pid == pid
    assert w.message.startswith(f"waiting for {lock_path}: the update lock is held by another app (pid {pid}")
    # A hook that raises is reported (unraisable) and the wait goes on to its timeout.
    def broken(_: update_lock.Waiting) -> None:
        raise RuntimeError("hook failed")

    reported: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with pytest.raises(update_lock.LockTimeoutError):
        update_lock.lock(lock_path, timeout=0.2, on_wait=broken).acquire()
    assert [type(r.exc_value) for r in reported] == [RuntimeError]
    with pytest.raises(TypeError, match="on_wait must be callable"):
        update_lock.lock(lock_path, on_wait="print")  # type: ignore[arg-type]
    other.send("go")
    other.expect("released")
