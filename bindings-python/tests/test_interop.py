"""Python and ``lockctl`` exclude each other (same core, same files): Python holds while
lockctl waits, and the reverse; ``status()`` equals ``lockctl status --json``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import (
    LOCKCTL,
    STEP,
    Child,
    assert_free,
    assert_held,
    clean_env,
    run,
    spawn,
    wait_for_waiter,
)


def lockctl_paths(paths: List[Path]) -> List[str]:
    out: List[str] = []
    for p in paths:
        out += ["--path", str(p)]
    return out


def test_python_holds_lockctl_waits(two_paths: List[Path]) -> None:
    lk = update_lock.lock(paths=two_paths, timeout=0).acquire()
    r = run([LOCKCTL, "run", "--no-wait", *lockctl_paths(two_paths), "--", "true"])
    assert r.returncode == 73, r.stderr
    assert "error[held]" in r.stderr and "held by another app" in r.stderr

    waiter = subprocess.Popen(
        [LOCKCTL, "run", "--timeout", str(STEP), *lockctl_paths(two_paths), "--", "true"],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_waiter(waiter.pid)
        assert waiter.poll() is None
        lk.release()
        assert waiter.wait(STEP) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
    for p in two_paths:
        assert_free(p)


def test_lockctl_holds_python_waits(two_paths: List[Path], children: List[Child]) -> None:
    r = run([LOCKCTL, "acquire", *lockctl_paths(two_paths)])
    assert r.returncode == 0, r.stderr
    try:
        assert_held(two_paths[0])
        with pytest.raises(update_lock.LockHeldError) as info:
            update_lock.lock(paths=two_paths, timeout=0).acquire()
        e = info.value
        assert e.code == "held" and e.path == str(two_paths[0])
        assert e.holder is not None and e.holder.state == "held-by-app"
        assert e.holder.program == "lockctl acquire" and not e.holder.record.same_process  # type: ignore[union-attr]

        c = spawn(children, "wait", *two_paths)
        c.expect("waiting")
        wait_for_waiter(c.pid)
        r = run([LOCKCTL, "release", *lockctl_paths(two_paths)])
        assert r.returncode == 0, r.stderr
        assert c.expect("acquired") == "[]"  # taken after a release, nothing reclaimed
        assert_held(two_paths[0])
        c.send("release")
        c.expect("released")
        assert c.wait() == 0
    finally:
        run([LOCKCTL, "release", *lockctl_paths(two_paths)])
    for p in two_paths:
        assert_free(p)


def lockctl_status(path: Path) -> dict:
    r = run([LOCKCTL, "status", "--json", "--path", str(path)])
    report = json.loads(r.stdout)
    # 0 free, 73 held (as the Supervisor's lockfile): the exit status says what it reports.
    held = any(lock["blocks_app_updates"] for lock in report["locks"])
    assert r.returncode == (73 if held else 0), r.stderr
    return report


def test_status_equals_lockctl_json(lock_path: Path, children: List[Child]) -> None:
    # free
    assert update_lock.status(lock_path).to_dict() == lockctl_status(lock_path)
    # held by another process (so "same_process" is false for both viewers)
    c = spawn(children, "hold", lock_path)
    c.expect("held")
    ours, theirs = update_lock.status(lock_path).to_dict(), lockctl_status(lock_path)
    assert ours == theirs
    assert ours["locks"][0]["state"] == "held-by-app"
    assert ours["locks"][0]["holder"]["program"] == "child-holder"
    assert set(ours["locks"][0]["holder"]) == set(theirs["locks"][0]["holder"])
    # stale: the holder was killed
    c.proc.kill()
    c.wait()
    ours, theirs = update_lock.status(lock_path).to_dict(), lockctl_status(lock_path)
    assert ours == theirs and ours["locks"][0]["state"] == "stale"
    os.unlink(lock_path)
    # foreign: an empty file (touch); hand-over signal pending beside it
    lock_path.touch()
    update_lock.handover_complete(lock_path.with_name("handover-complete"))
    ours, theirs = update_lock.status(lock_path).to_dict(), lockctl_status(lock_path)
    assert ours == theirs
    assert ours["locks"][0]["foreign_kind"] == "empty-file"
    assert ours["handover"] == [{"path": str(lock_path.with_name("handover-complete")), "pending": True}]


def test_status_of_the_supervisors_lock(lock_path: Path) -> None:
    r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "lockfile", "-r", "0", str(lock_path)])
    assert r.returncode == 0, r.stderr
    ours = update_lock.status(lock_path)
    assert ours.to_dict() == lockctl_status(lock_path)
    assert ours.locks[0].state == "held-by-supervisor" and ours.locks[0].owner_uid == 65534
    assert ours.blocks_app_updates and not ours.blocks_host_reboot
