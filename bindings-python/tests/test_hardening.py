"""Hardening promises seen from Python, tried as a process of another uid would meet them.

G: when the lock cannot be looked at, ``status()`` says ``unknown`` (never ``free``) and
``release()`` raises :class:`LockStateUnknownError` and deletes nothing.
D: a hand-over peer is who SO_PEERCRED says it is; whatever is planted at the socket is
left alone and reported as ``blocked``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List

import pytest
import update_lock
from conftest import LOCKCTL, STEP, Child, assert_held, spawn


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


def _co_tenant_server(socket_path: Path) -> subprocess.Popen[str]:
    """A real hand-over server (lockctl) running as uid 1000: to a root successor it is
    another user's process, possibly an impostor."""
    p = subprocess.Popen(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", LOCKCTL, "handover", "run",
         "--socket", str(socket_path), "--", "sh", "-c", "echo ready; read x"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_d_a_root_successor_takes_nothing_from_another_uid_unless_allowed(service_dir: Path) -> None:
    sock = service_dir / "handover.sock"
    server = _co_tenant_server(sock)
    try:
        with pytest.raises(update_lock.HandoverError) as info:
            update_lock.handover_take(sock, step_timeout=2, handover_complete=False)
        e = info.value
        assert e.reason == "uid", e
        assert "uid 1000" in str(e) and f"pid {server.pid}" in str(e), e
        assert "refusing to take anything from it" in str(e), e
        assert server.poll() is None, "the server was disturbed"
        got = update_lock.handover_take(sock, step_timeout=2, handover_complete=False, peer_uids=[1000])
        assert got is not None and got.predecessor.uid == 1000
        got.close()
    finally:
        server.kill()
        server.wait(timeout=STEP)


def test_d_something_planted_at_the_socket_is_blocked_and_left_alone(service_dir: Path) -> None:
    sock = service_dir / "handover.sock"
    subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "mkfifo", str(sock)],
                   check=True)
    before = os.lstat(sock)
    for attempt in (lambda: update_lock.handover_take(sock, handover_complete=False),
                    lambda: update_lock.HandoverServer(sock)):
        with pytest.raises(update_lock.HandoverError) as info:
            attempt()
        assert info.value.reason == "blocked", info.value
        assert "a named pipe (fifo) owned by uid 1000" in str(info.value)
    after = os.lstat(sock)
    assert (after.st_ino, after.st_uid) == (before.st_ino, 1000)


def test_e_listen_backlog_is_the_kernels_limit() -> None:
    with open("/proc/sys/net/core/somaxconn") as f:
        assert update_lock.listen_backlog() == int(f.read())
