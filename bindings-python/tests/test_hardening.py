"""Hardening promises seen from Python, tried as a process of another uid would meet them.

G: when the lock cannot be looked at, ``status()`` says ``unknown`` (never ``free``) and
``release()`` raises :class:`LockStateUnknownError` and deletes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import update_lock

from conftest import Child, assert_held, spawn


def private_dir(service_dir: Path) -> Path:
    d = service_dir / "private"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


def test_g_status_says_unknown_when_it_cannot_look(service_dir: Path, children: List[Child]) -> None:
    d = private_dir(service_dir)
    path = d / "updates.lock"
    with update_lock.lock(paths=path, timeout=0):
        os.chmod(d, 0o700)  # uid 1000 may no longer search it
        c = spawn(children, "status-as-uid", 1000, path)
        seen = json.loads(c.expect("status"))
        assert c.wait() == 0
        os.chmod(d, 0o1777)
        assert seen["state"] == "unknown", seen
        assert "ermission denied" in seen["error"], seen
        assert "could not look" in seen["message"], seen
    # And as root (who can look) it is plain free again.
    assert update_lock.status(paths=[path]).locks[0].state == "free"


def test_g_release_that_cannot_check_raises_unknown_and_deletes_nothing(
    service_dir: Path, children: List[Child]
) -> None:
    d = private_dir(service_dir)
    path = d / "updates.lock"
    c = spawn(children, "hold-then-release-as-uid", 1000, path)
    c.expect("held")
    before = os.stat(path)
    os.chmod(d, 0o700)  # the holder (uid 1000) can no longer look at its own lock
    c.send("release")
    err = json.loads(c.expect("released"))
    assert c.wait() == 0
    os.chmod(d, 0o1777)
    assert (err["class"], err["code"], err["number"]) == ("LockStateUnknownError", "unknown", 12), err
    assert "could not check the update lock" in err["message"], err
    assert "nothing was deleted" in err["message"], err
    assert str(path) in err["message"], err
    after = os.stat(path)
    assert (after.st_ino, after.st_uid) == (before.st_ino, 1000), "the lock file was touched"
    # The holder has exited: its flock is gone, the file is left for a stale reclaim.
    st = update_lock.status(paths=[path]).locks[0]
    assert st.state == "stale", st
    with update_lock.lock(paths=path, timeout=0) as lk:
        assert [r.path for r in lk.reclaimed] == [str(path)]
        assert_held(path)
