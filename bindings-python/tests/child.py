"""Child processes for the tests: ``python child.py ROLE ARGS...``.

Every child reports through lines on stdout and takes orders on stdin (a line, or EOF).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

import update_lock


def say(*parts: object) -> None:
    print(*parts, flush=True)


def hold(*paths: str) -> None:
    """Take the lock, say "held PID", release when told (a line or EOF)."""
    lk = update_lock.lock(paths=list(paths), timeout=30, program="child-holder")
    lk.acquire()
    say("held", os.getpid())
    sys.stdin.readline()
    lk.release()
    say("released")


def hold_shared(*paths: str) -> None:
    """Take the lock in shared mode without waiting, say "held PID" (or the error), release
    when told (a line or EOF)."""
    lk = update_lock.lock(paths=list(paths), timeout=0, shared=True)
    try:
        lk.acquire()
    except update_lock.UpdateLockError as e:
        say("error", json.dumps(describe(e)))
        return
    say("held", os.getpid())
    sys.stdin.readline()
    lk.release()
    say("released")


def wait(*paths: str) -> None:
    """Wait for the lock (30 s), say "acquired", release when told."""
    lk = update_lock.lock(paths=list(paths), timeout=30)
    say("waiting")
    lk.acquire()
    say("acquired", json.dumps([r.previous.pid for r in lk.reclaimed]))
    sys.stdin.readline()
    lk.release()
    say("released")


def interrupt(*paths: str) -> None:
    """Wait forever for a held lock; Ctrl-C must end the wait with KeyboardInterrupt.
    SIGUSR1 runs a handler that does not raise: the wait must go on."""
    seen = []
    signal.signal(signal.SIGUSR1, lambda *_: seen.append("usr1"))
    lk = update_lock.lock(paths=list(paths))
    say("waiting")
    try:
        lk.acquire()
    except KeyboardInterrupt:
        say("interrupted", json.dumps({"held": lk.held, "seen": seen}))
        return
    say("acquired", json.dumps({"held": lk.held, "seen": seen}))
    sys.stdin.readline()
    lk.release()


def as_uid(uid: str, path: str) -> None:
    """Drop to `uid` (as setpriv does: groups cleared, gid = uid) after importing the module,
    try the lock once, report the error as JSON."""
    n = int(uid)
    os.setgroups([])
    os.setresgid(n, n, n)
    os.setresuid(n, n, n)
    try:
        update_lock.lock(paths=[path], timeout=0).acquire()
        say("acquired")
    except update_lock.UpdateLockError as e:
        say("error", json.dumps(describe(e)))


def drop_to(uid: str) -> None:
    n = int(uid)
    os.setgroups([])
    os.setresgid(n, n, n)
    os.setresuid(n, n, n)


def status_as_uid(uid: str, path: str) -> None:
    """Drop to `uid`, then report what status() sees of `path`."""
    drop_to(uid)
    st = update_lock.status(paths=[path]).locks[0]
    say("status", json.dumps({"state": st.state, "error": st.error, "message": st.message}))


def hold_then_release_as_uid(uid: str, path: str) -> None:
    """Drop to `uid`, take the lock, say "held", and when told release it and report."""
    drop_to(uid)
    lk = update_lock.lock(paths=[path], timeout=0).acquire()
    say("held")
    sys.stdin.readline()
    try:
        lk.release()
        say("released", json.dumps({}))
    except update_lock.UpdateLockError as e:
        say("released", json.dumps(describe(e)))


def out_of_fds(path: str) -> None:
    """Use up every file descriptor, then try the lock."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    lk = update_lock.lock(paths=[path], timeout=0)
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    try:
        lk.acquire()
        result = {"acquired": True}
    except update_lock.UpdateLockError as e:
        result = describe(e)
    for fd in fds:
        os.close(fd)
    say("error", json.dumps(result))


def fork_gc(path: str) -> None:
    """Hold the lock, fork; the child drops its copy of the lock object through normal
    interpreter exit (garbage collection), the parent checks its files are still there."""
    lk = update_lock.lock(paths=[path], timeout=0).acquire()
    before = os.stat(path).st_ino
    pid = os.fork()
    if pid == 0:
        # Child: the object goes away with the interpreter; release() too must do nothing.
        ok = (not lk.held) and lk.release() is None
        sys.exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    after = os.stat(path).st_ino if os.path.exists(path) else None
    say("child-exit", os.waitstatus_to_exitcode(status), json.dumps(before == after), json.dumps(lk.held))
    sys.stdin.readline()
    lk.release()
    say("released")


def describe(e: update_lock.UpdateLockError) -> dict:
    return {
        "class": type(e).__name__,
        "code": e.code,
        "number": e.number,
        "message": str(e),
        "path": e.path,
        "errno": getattr(e, "errno", None),
        "bases": [c.__name__ for c in type(e).__mro__],
    }


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    {
        "hold": hold,
        "hold-shared": hold_shared,
        "wait": wait,
        "interrupt": interrupt,
        "as-uid": as_uid,
        "status-as-uid": status_as_uid,
        "hold-then-release-as-uid": hold_then_release_as_uid,
        "out-of-fds": out_of_fds,
        "fork-gc": fork_gc,
    }[role](*args)


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
