"""Every error kind: raised with the core's code, number and message, as the documented
class and builtin, and nothing was deleted."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import pytest
import update_lock
from conftest import (
    STEP,
    Child,
    assert_free,
    assert_held,
    identity,
    make_service_dir,
    run,
    spawn,
    thread_in_poll,
    wait_until,
)
from update_lock import _update_lock as native


def test_table_matches_the_core() -> None:
    assert {c: cls.number for c, cls in update_lock.ERRORS_BY_CODE.items()} == dict(native.error_codes())
    assert [n for _, n in native.error_codes()] == list(range(1, 14))


def listing(d: Path) -> dict:
    return {p.name: identity(p) for p in d.iterdir()}


def test_held_by_another_app(lock_path: Path, children: List[Child]) -> None:
    c = spawn(children, "hold", lock_path)
    pid = int(c.expect("held"))
    before = identity(lock_path)
    with pytest.raises(update_lock.LockHeldError) as info:
        update_lock.lock(paths=lock_path, timeout=0).acquire()
    e = info.value
    assert isinstance(e, update_lock.UpdateLockError) and isinstance(e, BlockingIOError)
    assert (e.code, e.number, e.path) == ("held", 1, str(lock_path))
    assert str(e).startswith(f"{lock_path}: the update lock is held by another app (pid {pid}")
    assert "wait for it" in str(e)
    assert e.holder is not None
    assert (e.holder.state, e.holder.pid, e.holder.program, e.holder.uid) == ("held-by-app", pid, "child-holder", 0)
    assert e.holder.record is not None and e.holder.record.pid == pid
    assert (e.holder.owner_uid, e.holder.flock_held) == (0, True)
    assert (e.holder.foreign_kind, e.holder.symlink_target) == (None, None)
    assert e.holder.description.startswith(f"held by another app (pid {pid}")
    assert identity(lock_path) == before
    # Picklable with everything (multiprocessing hands exceptions between processes).
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is update_lock.LockHeldError
    assert (str(again), again.code, again.holder) == (str(e), e.code, e.holder)


def test_held_by_the_supervisor(lock_path: Path) -> None:
    r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "lockfile", "-r", "0", str(lock_path)])
    assert r.returncode == 0
    before = identity(lock_path)
    with pytest.raises(update_lock.LockHeldError) as info:
        update_lock.lock(paths=lock_path, timeout=0).acquire()
    e = info.value
    assert e.holder is not None and e.holder.state == "held-by-supervisor" and e.holder.uid == 65534
    assert (e.holder.record, e.holder.owner_uid, e.holder.flock_held) == (None, 65534, False)
    assert "held by the balena Supervisor" in str(e)
    assert identity(lock_path) == before  # the Supervisor's file is never touched


def test_held_by_a_foreign_file(lock_path: Path) -> None:
    lock_path.touch()
    before = identity(lock_path)
    with pytest.raises(update_lock.LockHeldError) as info:
        update_lock.lock(paths=lock_path, timeout=0).acquire()
    e = info.value
    assert e.holder is not None and (e.holder.state, e.holder.foreign_kind) == ("foreign", "empty-file")
    assert (e.holder.record, e.holder.owner_uid, e.holder.flock_held, e.holder.symlink_target) == (None, 0, False, None)
    assert "not created by update-lock" in str(e) and f"rm {lock_path}" in str(e)
    assert identity(lock_path) == before


def test_holder_is_the_cores_canonical_object(lock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Holder`` has exactly the keys of the core's holder object, in its order."""
    seen: List[Dict[str, Any]] = []
    real = update_lock.Holder._from_native.__func__  # type: ignore[attr-defined]

    def spy(cls: Type[update_lock.Holder], data: Optional[Dict[str, Any]]) -> Optional[update_lock.Holder]:
        if data is not None:
            seen.append(dict(data))
        return real(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(update_lock.Holder, "_from_native", classmethod(spy))
    lock_path.symlink_to("/nowhere/at-all")
    with pytest.raises(update_lock.LockHeldError) as info:
        update_lock.lock(paths=lock_path, timeout=0).acquire()
    assert [list(d) for d in seen] == [[f.name for f in dataclasses.fields(update_lock.Holder)]]
    assert list(seen[0]) == [
        "state",
        "description",
        "record",
        "owner_uid",
        "flock_held",
        "foreign_kind",
        "symlink_target",
    ]
    h = info.value.holder
    assert h is not None
    assert (h.state, h.foreign_kind, h.symlink_target, h.owner_uid, h.flock_held) == (
        "foreign",
        "symlink",
        "/nowhere/at-all",
        0,
        False,
    )
    assert h.description == seen[0]["description"] and "/nowhere/at-all" in h.description
    assert lock_path.is_symlink()  # left alone


def test_timeout(two_paths: List[Path], children: List[Child]) -> None:
    c = spawn(children, "hold", two_paths[1])  # the second path is the one held
    c.expect("held")
    before = identity(two_paths[1])
    with pytest.raises(update_lock.LockTimeoutError) as info:
        update_lock.lock(paths=two_paths, timeout=0.3).acquire()
    e = info.value
    assert isinstance(e, TimeoutError) and isinstance(e, update_lock.UpdateLockError)
    assert (e.code, e.number, e.path) == ("timeout", 2, str(two_paths[1]))
    assert e.waited is not None and e.waited >= 0.3
    assert str(e).startswith("timed out after ")
    assert e.holder is not None and e.holder.program == "child-holder"
    assert identity(two_paths[1]) == before
    assert not os.path.lexists(two_paths[0])  # all-or-nothing: the first path was undone
    c.send("release")
    c.expect("released")
    for p in two_paths:
        assert_free(p)


def test_lost(two_paths: List[Path]) -> None:
    lk = update_lock.lock(paths=two_paths, timeout=0).acquire()
    # The Supervisor's override deletes app locks and takes its own.
    os.unlink(two_paths[0])
    two_paths[0].write_text("0")
    replacement = identity(two_paths[0])
    with pytest.raises(update_lock.LockLostError) as info:
        lk.check()
    e = info.value
    assert (e.code, e.number, e.paths) == ("lost", 3, [str(two_paths[0])])
    assert "lock override" in str(e)
    with pytest.raises(update_lock.LockLostError):
        lk.release()
    assert identity(two_paths[0]) == replacement  # left alone
    assert_free(two_paths[1])  # the other path was still released
    assert not lk.held


def test_lost_in_a_with_block(lock_path: Path) -> None:
    with pytest.raises(update_lock.LockLostError), update_lock.lock(paths=lock_path, timeout=0):
        os.unlink(lock_path)
    assert not os.path.lexists(lock_path)
    # An exception already propagating is not replaced by the lost lock.
    with pytest.raises(KeyError), update_lock.lock(paths=lock_path, timeout=0):
        os.unlink(lock_path)
        raise KeyError("mine")


def child_error(children: List[Child], *args: object) -> dict:
    c = spawn(children, *args)  # type: ignore[arg-type]
    out = json.loads(c.expect("error"))
    assert c.wait() == 0
    return out


def test_permission(children: List[Child]) -> None:
    d = make_service_dir()
    try:
        os.chmod(d, 0o755)  # root's, not writable for uid 1000
        (d / "keep").write_text("x")
        before = listing(d)
        e = child_error(children, "as-uid", 1000, d / "updates.lock")
        assert (e["class"], e["code"], e["number"]) == ("PermissionDeniedError", "permission", 4)
        assert "PermissionError" in e["bases"] and e["errno"] == errno.EACCES
        assert e["message"].startswith(f"{d}/updates.lock: cannot ") and "permission denied" in e["message"]
        assert listing(d) == before
    finally:
        os.chmod(d, 0o700)
        import shutil

        shutil.rmtree(d)


def test_supervisor_uid(service_dir: Path, children: List[Child]) -> None:
    (service_dir / "keep").write_text("x")
    before = listing(service_dir)
    e = child_error(children, "as-uid", 65534, service_dir / "updates.lock")
    assert (e["class"], e["code"], e["number"]) == ("SupervisorUidError", "supervisor-uid", 5)
    assert "PermissionError" in e["bases"]
    assert e["message"].startswith("refusing to take the update lock as uid 65534")
    assert listing(service_dir) == before


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: "", "invalid lock path"),
        (lambda d: f"{d}/a\0b", "NUL byte"),
        (lambda d: f"{d}/missing/deeper/updates.lock", "invalid lock path"),
        (lambda d: f"{d}/{'x' * 300}", "over the limit of 255"),
    ],
)
def test_invalid_path(service_dir: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    (service_dir / "keep").write_text("x")
    before = listing(service_dir)
    bad = make(service_dir)
    with pytest.raises(update_lock.InvalidPathError) as info:
        update_lock.lock(paths=[bad], timeout=0).acquire()
    e = info.value
    assert isinstance(e, ValueError)
    assert (e.code, e.number) == ("invalid-path", 6)
    assert reason in str(e), str(e)
    assert listing(service_dir) == before


def test_io_out_of_descriptors(service_dir: Path, children: List[Child]) -> None:
    (service_dir / "keep").write_text("x")
    before = listing(service_dir)
    e = child_error(children, "out-of-fds", service_dir / "updates.lock")
    assert (e["class"], e["code"], e["number"]) == ("LockIOError", "io", 7)
    assert "OSError" in e["bases"] and e["errno"] == errno.EMFILE
    assert "out of file descriptors" in e["message"]
    assert listing(service_dir) == before


def test_cancelled_from_another_thread(lock_path: Path, children: List[Child]) -> None:
    c = spawn(children, "hold", lock_path)
    c.expect("held")
    before = identity(lock_path)
    token = update_lock.CancelToken()
    lk = update_lock.lock(paths=lock_path)  # would wait forever
    caught: List[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            lk.acquire(cancel=token)
        except BaseException as e:
            caught.append(e)

    t = threading.Thread(target=wait)
    t.start()
    started.wait(STEP)
    assert t.native_id is not None
    wait_until(lambda: thread_in_poll(t.native_id), "the waiting thread is in poll")  # type: ignore[arg-type]
    assert not token.cancelled
    token.cancel()
    t.join(STEP)
    assert not t.is_alive() and token.cancelled
    (e,) = caught
    assert isinstance(e, update_lock.LockCancelledError)
    assert (e.code, e.number, e.path) == ("cancelled", 8, str(lock_path))
    assert "was cancelled; nothing was taken" in str(e)
    assert not lk.held and identity(lock_path) == before
    assert_held(lock_path)


def test_not_held(lock_path: Path) -> None:
    lk = update_lock.lock(paths=lock_path, timeout=0)
    with pytest.raises(update_lock.NotHeldError) as info:
        lk.check()
    assert isinstance(info.value, RuntimeError)
    assert (info.value.code, info.value.number, info.value.path) == ("not-held", 9, str(lock_path))
    assert "already released" in str(info.value)
    lk.acquire()
    lk.release()
    with pytest.raises(update_lock.NotHeldError):
        lk.check()
    assert_free(lock_path)


@pytest.mark.parametrize("bad", [-1, float("nan"), -0.5])
def test_bad_timeout(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout must be"):
        update_lock.lock(paths="/tmp/never-used/updates.lock", timeout=bad)


def test_handover_complete(service_dir: Path) -> None:
    signal_path = service_dir / "handover-complete"
    assert update_lock.handover_complete(signal_path) == [str(signal_path)]
    assert update_lock.handover_complete([signal_path]) == [str(signal_path)]  # idempotent
    assert signal_path.read_text().startswith("update-lock handover v1\n")
    blocked = service_dir / "blocked"
    blocked.mkdir()
    with pytest.raises(update_lock.InvalidPathError) as info:
        update_lock.handover_complete(blocked)
    assert "a directory occupies the hand-over signal path" in str(info.value)
    assert blocked.is_dir()
