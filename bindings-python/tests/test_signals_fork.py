"""Ctrl-C during a blocking wait, and os.fork() children that must never release or delete
their parent's lock."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import List

import update_lock
from conftest import (
    Child,
    assert_free,
    assert_held,
    identity,
    spawn,
    wait_for_waiter,
)


def test_ctrl_c_ends_a_wait_and_takes_nothing(two_paths: List[Path], children: List[Child]) -> None:
    holder = update_lock.lock(paths=two_paths[1:], timeout=0).acquire()  # the second path blocks
    before = identity(two_paths[1])
    c = spawn(children, "interrupt", *two_paths)
    c.expect("waiting")
    wait_for_waiter(c.pid)
    sent = time.monotonic()
    os.kill(c.pid, signal.SIGINT)
    result = json.loads(c.expect("interrupted"))
    latency = time.monotonic() - sent
    assert result == {"held": False, "seen": []}
    assert c.wait() == 0
    print(f"Ctrl-C ended the wait after {latency * 1000:.1f} ms")
    # Nothing half-taken: the first path was never left behind, the holder's file untouched.
    assert not os.path.lexists(two_paths[0])
    assert identity(two_paths[1]) == before
    assert_held(two_paths[1], reboot=False)
    holder.release()
    for p in two_paths:
        assert_free(p)


def test_signal_handler_that_does_not_raise_keeps_waiting(lock_path: Path, children: List[Child]) -> None:
    holder = update_lock.lock(paths=lock_path, timeout=0).acquire()
    c = spawn(children, "interrupt", lock_path)
    c.expect("waiting")
    wait_for_waiter(c.pid)
    os.kill(c.pid, signal.SIGUSR1)
    holder.release()
    assert json.loads(c.expect("acquired")) == {"held": True, "seen": ["usr1"]}
    assert_held(lock_path)
    c.send("release")
    assert c.wait() == 0
    assert_free(lock_path)


def test_forked_child_never_releases_the_parents_lock(two_paths: List[Path]) -> None:
    lk = update_lock.lock(paths=two_paths, timeout=0).acquire()
    before = [identity(p) for p in two_paths]
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            ok = not lk.held
            ok = ok and lk.release() is None  # documented: does nothing to the files
            try:
                lk.check()
                ok = False
            except update_lock.NotHeldError:
                pass
            ok = ok and all(os.path.exists(p) for p in two_paths)
            del lk
            gc.collect()
            code = 0 if ok else 2
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [identity(p) for p in two_paths] == before
    assert lk.held
    lk.check()
    assert_held(two_paths[0])
    lk.release()
    for p in two_paths:
        assert_free(p)


def test_forked_child_exiting_normally(lock_path: Path, children: List[Child]) -> None:
    """The child ends through normal interpreter exit (the lock object is collected)."""
    c = spawn(children, "fork-gc", lock_path)
    assert c.expect("child-exit") == "0 true true"
    assert_held(lock_path)
    c.send("release")
    c.expect("released")
    assert c.wait() == 0
    assert_free(lock_path)
