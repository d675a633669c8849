"""Mutual exclusion across multiprocessing processes and across threads (separate lock
objects, and one object shared by threads)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import STEP, assert_free

ROUNDS = 40


def critical_section(paths: List[str], counter: str, marker: str, lk: update_lock.Lock) -> None:
    """Read-modify-write a counter; an O_EXCL marker shows two holders at once."""
    with lk:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError = overlap
        os.close(fd)
        value = int(Path(counter).read_text())
        os.sched_yield()
        Path(counter).write_text(str(value + 1))
        os.unlink(marker)


def worker(paths: List[str], counter: str, marker: str) -> None:
    for _ in range(ROUNDS):
        critical_section(paths, counter, marker, update_lock.lock(paths=paths, timeout=STEP))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes(two_paths: List[Path], service_dir: Path, method: str) -> None:
    counter, marker = service_dir / "counter", service_dir / "inside"
    counter.write_text("0")
    paths = [str(p) for p in two_paths]
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=worker, args=(paths, str(counter), str(marker))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(STEP * 3)
        assert p.exitcode == 0, f"worker failed ({p.exitcode})"
    assert counter.read_text() == str(4 * ROUNDS)
    for p in two_paths:
        assert_free(p)


def run_threads(target, n: int = 4) -> None:  # type: ignore[no-untyped-def]
    errors: List[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STEP * 3)
        assert not t.is_alive()
    assert errors == []


def test_threads_with_their_own_objects(two_paths: List[Path], service_dir: Path) -> None:
    counter, marker = service_dir / "counter", service_dir / "inside"
    counter.write_text("0")
    paths = [str(p) for p in two_paths]
    run_threads(lambda: worker(paths, str(counter), str(marker)))
    assert counter.read_text() == str(4 * ROUNDS)
    for p in two_paths:
        assert_free(p)


def test_threads_sharing_one_object(two_paths: List[Path], service_dir: Path) -> None:
    counter, marker = service_dir / "counter", service_dir / "inside"
    counter.write_text("0")
    paths = [str(p) for p in two_paths]
    shared = update_lock.lock(paths=paths, timeout=STEP)

    def loop() -> None:
        for _ in range(ROUNDS):
            critical_section(paths, str(counter), str(marker), shared)

    run_threads(loop)
    assert counter.read_text() == str(4 * ROUNDS)
    assert not shared.held
    for p in two_paths:
        assert_free(p)


def test_same_thread_twice_fails_at_once(lock_path: Path) -> None:
    """A second acquire from the thread that holds it would wait for itself forever: it
    fails at once with AlreadyHeldError (code already-held, 13), deleting nothing."""
    lk = update_lock.lock(paths=lock_path)  # would wait forever
    with lk:
        before = os.stat(lock_path).st_ino
        with pytest.raises(update_lock.AlreadyHeldError) as info:
            lk.acquire()
        assert (info.value.code, info.value.number) == ("already-held", 13)
        assert "already held by this process" in str(info.value)
        assert "shared mode" in str(info.value)
        with pytest.raises(update_lock.AlreadyHeldError):
            update_lock.lock(paths=lock_path, shared=True).acquire()
        assert lk.held and os.stat(lock_path).st_ino == before
    assert_free(lock_path)
