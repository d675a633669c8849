"""The device's real readers see a Python-held lock: the Supervisor's ``lockfile`` as uid
65534 exits 73, the reboot script's ``flock -nx`` fails; after release both are free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import update_lock
from conftest import assert_free, assert_held, reboot_probe, supervisor_probe


def test_with_block_is_seen_by_both_readers(two_paths: List[Path]) -> None:
    with update_lock.lock(paths=two_paths, timeout=5) as lk:
        assert lk.held
        assert lk.paths == [str(p) for p in two_paths]
        assert_held(two_paths[0])
        # The legacy name is only read by the Supervisor (the reboot looks at updates.lock).
        assert supervisor_probe(two_paths[1]) == 73
        assert reboot_probe(two_paths[1]) == 1  # flocked all the same
        record = two_paths[0].read_text()
        assert record.startswith("update-lock holder v1\n")
        assert f"pid={os.getpid()}\n" in record
        assert os.stat(two_paths[0]).st_uid == os.geteuid() != 65534
    assert not lk.held
    for p in two_paths:
        assert_free(p)


def test_acquire_release_and_reuse(lock_path: Path) -> None:
    lk = update_lock.lock(paths=lock_path, timeout=0)
    for _ in range(3):
        assert lk.acquire() is lk
        assert_held(lock_path)
        lk.check()
        lk.release()
        lk.release()  # idempotent
        assert_free(lock_path)


def test_decorator_holds_during_each_call(lock_path: Path) -> None:
    seen = []

    @update_lock.lock(paths=[lock_path], timeout=5)
    def critical(x: int) -> int:
        """Doc kept."""
        seen.append((supervisor_probe(lock_path), reboot_probe(lock_path)))
        return x * 2

    assert critical(21) == 42
    assert critical(1) == 2
    assert seen == [(73, 1), (73, 1)]
    assert critical.__doc__ == "Doc kept."
    assert_free(lock_path)


def test_exception_in_block_releases(lock_path: Path) -> None:
    class Boom(Exception):
        pass

    try:
        with update_lock.lock(paths=lock_path, timeout=0):
            raise Boom()
    except Boom:
        pass
    assert_free(lock_path)


def test_status_and_program_name(lock_path: Path) -> None:
    with update_lock.lock(paths=lock_path, timeout=0, program="worker.py"):
        report = update_lock.status(lock_path)
        (entry,) = report.locks
        assert entry.state == "held-by-app"
        assert entry.blocks_app_updates and entry.blocks_host_reboot and entry.flock_held
        assert entry.holder is not None and entry.holder.program == "worker.py"
        assert entry.holder.same_process and entry.holder.pid == os.getpid()
        assert report.blocks_app_updates and report.blocks_host_reboot
    report = update_lock.status(lock_path)
    assert report.locks[0].state == "free" and not report.blocks_app_updates
