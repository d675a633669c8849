"""asyncio: waiting never blocks the event loop; cancelling a waiting task leaves nothing
taken."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import STEP, assert_free, assert_held, identity, thread_in_poll, wait_until


def waiting_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "update-lock-wait"]


async def until_waiting() -> threading.Thread:
    """Until the helper thread of a lock_async() wait is blocked in poll."""
    loop = asyncio.get_running_loop()

    def check() -> None:
        wait_until(lambda: any(t.native_id and thread_in_poll(t.native_id) for t in waiting_threads()), "the helper waits")

    await loop.run_in_executor(None, check)
    (t,) = [t for t in waiting_threads() if t.native_id and thread_in_poll(t.native_id)]
    return t


def test_loop_keeps_running_while_waiting(two_paths: List[Path]) -> None:
    async def main() -> int:
        holder = update_lock.lock(paths=two_paths, timeout=0).acquire()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while ticks < 5:
                await asyncio.sleep(0.01)
                ticks += 1
            holder.release()  # only reachable if the loop ran while the other task waited

        async def take() -> None:
            async with update_lock.lock_async(paths=two_paths, timeout=STEP) as lk:
                assert lk.held and ticks >= 5
                assert_held(two_paths[0])

        await asyncio.wait_for(asyncio.gather(take(), ticker()), STEP)
        return ticks

    assert asyncio.run(main()) >= 5
    for p in two_paths:
        assert_free(p)


def test_cancel_while_waiting_leaves_nothing(lock_path: Path) -> None:
    async def main() -> None:
        holder = update_lock.lock(paths=lock_path, timeout=0).acquire()
        before = identity(lock_path)
        lk = update_lock.lock_async(paths=lock_path)  # would wait forever
        task = asyncio.ensure_future(lk.acquire())
        helper = await until_waiting()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            # Bounded: a wait the cancellation did not end would keep the task waiting.
            await asyncio.wait_for(task, STEP)
        helper.join(STEP)  # the wait ended (cancel token), it was not abandoned
        assert not helper.is_alive()
        assert not lk.held and identity(lock_path) == before
        holder.release()
        assert_free(lock_path)  # nothing of ours is left either

    asyncio.run(main())
    assert waiting_threads() == []


def test_cancel_racing_a_release_leaves_nothing(lock_path: Path) -> None:
    """The holder releases and the waiting task is cancelled in the same loop step: whether
    the helper thread got the lock or not, nothing is held afterwards."""

    async def main() -> None:
        for _ in range(20):
            holder = update_lock.lock(paths=lock_path, timeout=0).acquire()
            lk = update_lock.lock_async(paths=lock_path, timeout=STEP)
            task = asyncio.ensure_future(lk.acquire())
            await until_waiting()
            holder.release()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:  # the task had already finished: it holds the lock and says so
                assert lk.held
                lk.release()
            assert not lk.held
            assert not os.path.lexists(lock_path)
            for t in waiting_threads():
                t.join(STEP)

    asyncio.run(main())
    assert_free(lock_path)


def test_cancelled_again_while_the_helper_hands_over_leaves_nothing(lock_path: Path) -> None:
    """The task is cancelled, and cancelled again while it waits for the helper to finish,
    and the helper took the lock in between: the helper's hand-over (not the task) must
    release it. The loop's queue fixes the order: the task's first cancellation, the second
    one, then the helper's result."""

    async def main() -> None:
        holder = update_lock.lock(paths=lock_path, timeout=0).acquire()
        lk = update_lock.lock_async(paths=lock_path)
        task = asyncio.ensure_future(lk.acquire())
        helper = await until_waiting()
        loop = asyncio.get_running_loop()
        task.cancel()  # the task runs its except branch on the next loop step...
        loop.call_soon(task.cancel)  # ...and is cancelled again right after, in `await done`
        holder.release()
        helper.join(STEP)  # the helper took the lock (its token is not cancelled yet)
        assert not helper.is_alive()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, STEP)
        assert not lk.held
        assert_free(lock_path)

    asyncio.run(main())


def test_async_errors_and_exclusion(lock_path: Path, service_dir: Path) -> None:
    async def main() -> None:
        async with update_lock.lock_async(paths=lock_path, timeout=0):
            # The same task again would wait for itself: it fails at once.
            with pytest.raises(update_lock.AlreadyHeldError):
                await update_lock.lock_async(paths=lock_path).acquire()

            # Other tasks are other holders: they see it held, or wait and time out.
            async def other_task() -> None:
                with pytest.raises(update_lock.LockHeldError):
                    await update_lock.lock_async(paths=lock_path, timeout=0).acquire()
                with pytest.raises(update_lock.LockTimeoutError) as info:
                    await update_lock.lock_async(paths=lock_path, timeout=0.2).acquire()
                assert info.value.code == "timeout"

            await asyncio.create_task(other_task())

        inside = 0
        counter = service_dir / "counter"
        counter.write_text("0")

        @update_lock.lock_async(paths=lock_path, timeout=STEP)
        async def bump() -> None:
            nonlocal inside
            inside += 1
            assert inside == 1
            value = int(counter.read_text())
            await asyncio.sleep(0)
            counter.write_text(str(value + 1))
            inside -= 1

        await asyncio.wait_for(asyncio.gather(*(bump() for _ in range(10))), STEP)
        assert counter.read_text() == "10"

    asyncio.run(main())
    assert_free(lock_path)


def test_decorators_refuse_the_wrong_kind() -> None:
    async def coro() -> None:
        pass

    with pytest.raises(TypeError):
        update_lock.lock(paths="/tmp/never-used/updates.lock")(coro)
    with pytest.raises(TypeError):
        update_lock.lock_async(paths="/tmp/never-used/updates.lock")(lambda: None)  # type: ignore[arg-type]
