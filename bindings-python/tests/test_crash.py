"""A Python holder killed with SIGKILL: the files stay (the Supervisor still sees a lock),
the flock dies with it (the reboot does not wait), and the next acquisition takes it over."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import Child, assert_free, identity, reboot_probe, spawn, supervisor_probe


def test_sigkill_then_reclaim(two_paths: List[Path], children: List[Child]) -> None:
    c = spawn(children, "hold", *two_paths)
    dead_pid = int(c.expect("held"))
    c.proc.send_signal(signal.SIGKILL)
    assert c.wait() == -signal.SIGKILL

    for p in two_paths:
        assert supervisor_probe(p) == 73  # the file is still there
        assert reboot_probe(p) == 0  # but nobody holds its flock
    report = update_lock.status(two_paths)
    assert [entry.state for entry in report.locks] == ["stale", "stale"]
    assert report.locks[0].holder is not None and report.locks[0].holder.pid == dead_pid

    # Reclaim turned off: held, naming the dead holder; nothing touched.
    before = [identity(p) for p in two_paths]
    with pytest.raises(update_lock.LockHeldError) as info:
        update_lock.lock(paths=two_paths, timeout=0, reclaim_stale=False).acquire()
    assert info.value.holder is not None and info.value.holder.state == "stale"
    assert info.value.holder.pid == dead_pid and info.value.holder.flock_held is False
    assert "dead holder" in str(info.value)
    assert [identity(p) for p in two_paths] == before

    # Default: taken over.
    with update_lock.lock(paths=two_paths, timeout=0) as lk:
        assert sorted(r.path for r in lk.reclaimed) == sorted(str(p) for p in two_paths)
        assert {r.previous.pid for r in lk.reclaimed} == {dead_pid}
        assert supervisor_probe(two_paths[0]) == 73 and reboot_probe(two_paths[0]) == 1
    for p in two_paths:
        assert_free(p)


def test_killed_holder_wakes_a_python_waiter(two_paths: List[Path], children: List[Child]) -> None:
    holder = spawn(children, "hold", *two_paths)
    dead_pid = int(holder.expect("held"))
    waiter = spawn(children, "wait", *two_paths)
    waiter.expect("waiting")
    from conftest import wait_for_waiter

    wait_for_waiter(waiter.pid)
    holder.proc.send_signal(signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL
    reclaimed = json.loads(waiter.expect("acquired"))
    assert reclaimed and set(reclaimed) == {dead_pid}
    waiter.send("release")
    waiter.expect("released")
    assert waiter.wait() == 0
    for p in two_paths:
        assert_free(p)
