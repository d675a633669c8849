""""An update is waiting" and the yield to it, against the Supervisor's real lockfile (uid
65534): the holder hears of the attempt (hook and property), the next acquisition lets the
update in first, in this process and, through the dated note, in another (lockctl)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import LOCKCTL, STEP, clean_env, run, supervisor_probe


def test_the_holder_hears_of_the_attempt_once_per_hold(lock_path: Path) -> None:
    news: List[update_lock.UpdateWaiting] = []
    heard = threading.Event()

    def hook(w: update_lock.UpdateWaiting) -> None:
        news.append(w)
        heard.set()

    lk = update_lock.lock(lock_path, on_update_waiting=hook, yield_to_updates=60)
    with lk:
        assert not lk.update_waiting
        assert supervisor_probe(lock_path) == 73
        assert heard.wait(STEP), "no news of the Supervisor's attempt"
        assert lk.update_waiting
        w = news[0]
        assert w.path == str(lock_path)
        assert w.temp_name.startswith("_")
        assert "an update is waiting" in w.message
        assert w.seen_at > 0
        assert supervisor_probe(lock_path) == 73
    assert not lk.update_waiting, "false once released"
    assert len(news) == 1, news  # once per hold, whatever the attempts


def test_the_next_acquisition_yields_and_the_note_reaches_lockctl(lock_path: Path) -> None:
    heard = threading.Event()
    with update_lock.lock(lock_path, on_update_waiting=lambda w: heard.set(), yield_to_updates=60):
        assert supervisor_probe(lock_path) == 73
        assert heard.wait(STEP)
    assert not lock_path.exists()

    with pytest.raises(update_lock.LockHeldError) as e:
        update_lock.lock(lock_path, timeout=0, yield_to_updates=60).acquire()
    assert e.value.holder is not None and e.value.holder.state == "update-waiting"
    assert "kept for the balena Supervisor" in str(e.value)
    assert not lock_path.exists(), "a yield creates nothing"

    # Another process of the app (a new lockctl, default yield) honours the dated note.
    env = {k: v for k, v in clean_env().items() if k != "UPDATE_LOCK_YIELD_TO_UPDATES"}
    r = run([LOCKCTL, "run", "--no-wait", "--path", str(lock_path), "--", "true"], env=env)
    assert r.returncode == 73, r.stderr
    assert "kept for the balena Supervisor" in r.stderr

    with update_lock.lock(lock_path, timeout=0, yield_to_updates=0):
        assert lock_path.exists()


def test_bad_yield_is_a_value_error_and_takes_nothing(lock_path: Path) -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="yield_to_updates"):
            update_lock.lock(lock_path, yield_to_updates=bad)
    with pytest.raises(TypeError, match="on_update_waiting must be callable"):
        update_lock.lock(lock_path, on_update_waiting=42)  # type: ignore[arg-type]
    assert not lock_path.exists()
    assert os.listdir(lock_path.parent) == []


def test_async_lock_says_update_waiting(lock_path: Path) -> None:
    heard = threading.Event()
    lk = update_lock.lock_async(lock_path, on_update_waiting=lambda w: heard.set())

    async def main() -> None:
        async with lk:
            assert not lk.update_waiting
            assert supervisor_probe(lock_path) == 73
            assert heard.wait(STEP)
            assert lk.update_waiting

    asyncio.run(main())
