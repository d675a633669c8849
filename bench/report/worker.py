"""Python worker of the side-by-side benchmark report (bench/report.sh), run with the bench
venv's interpreter (update_lock release build, filelock, lockfile). Same protocol as the
other language workers:

    rate DIR SAMPLE_MS WARMUP_MS NAME...   one round; prints {"NAME": ops_per_s, ...}
    hold NAME PATH                         take the lock, print "ready"; per stdin line
                                           "r": t = CLOCK_MONOTONIC, release, print t;
                                           "a": take it again, print "ready"; EOF: exit
    wait NAME PATH                         print "start", take the lock in NAME's waiting
                                           mode, print CLOCK_MONOTONIC just after, release

Contenders (rate: each on DIR/NAME/updates.lock):
    ours      update_lock.lock(paths=P) (one Lock object, `with lk:`); waits on inotify
    soft      filelock.SoftFileLock(P); waits by polling every poll_interval (default 50 ms)
    filelock  filelock.FileLock(P) (flock-based); waits by polling LOCK_NB, 50 ms
    lockfile  lockfile.LinkLockFile (PyPI `lockfile`); acquire(timeout=None) sleeps 100 ms
    raw       os.open(O_CREAT|O_EXCL) + fcntl.flock + os.write; os.unlink + os.close
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from typing import Any, Callable, Dict

RECORD = b"x" * 200  # about the size of update-lock's holder record


def make(name: str, path: str, wait: bool) -> Any:
    """An object with acquire() and release() for contender NAME on PATH. Each library is
    imported only when used, so a holding process's memory is its own library's."""
    if name == "ours":
        import update_lock

        return update_lock.lock(paths=path, timeout=None if wait else 0)
    if name == "soft":
        import filelock

        return filelock.SoftFileLock(path, timeout=-1 if wait else 0)
    if name == "filelock":
        import filelock

        return filelock.FileLock(path, timeout=-1 if wait else 0)
    if name == "lockfile":
        from lockfile.linklockfile import LinkLockFile

        assert path.endswith(".lock")
        lk = LinkLockFile(path[: -len(".lock")])  # it appends ".lock" itself
        assert lk.lock_file == path, lk.lock_file
        return _LinkLock(lk, wait)
    if name == "raw":
        return _Raw(path)
    raise SystemExit(f"unknown contender {name}")


class _LinkLock:
    def __init__(self, lk: Any, wait: bool) -> None:
        self.lk, self.timeout = lk, None if wait else 0

    def acquire(self) -> None:
        self.lk.acquire(timeout=self.timeout)

    def release(self) -> None:
        self.lk.release()


class _Raw:
    FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC

    def __init__(self, path: str) -> None:
        self.path, self.fd = path, -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, self.FLAGS, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.write(self.fd, RECORD)

    def release(self) -> None:
        os.unlink(self.path)
        os.close(self.fd)


def cycles(lk: Any) -> Callable[[int], None]:
    acquire, release = lk.acquire, lk.release

    def run(n: int) -> None:
        for _ in range(n):
            acquire()
            release()

    return run


def rate(d: str, sample_ms: str, warmup_ms: str, *names: str) -> None:
    out: Dict[str, float] = {}
    for name in names:
        # Each contender in its own directory: filelock.FileLock leaves its file behind.
        os.makedirs(os.path.join(d, name), exist_ok=True)
        path = os.path.join(d, name, "updates.lock")
        run = cycles(make(name, path, wait=False))
        end = time.perf_counter() + float(warmup_ms) / 1000
        while time.perf_counter() < end:
            run(20)
        n = 0
        t0 = time.perf_counter()
        end = t0 + float(sample_ms) / 1000
        while (t := time.perf_counter()) < end:
            run(20)
            n += 20
        out[name] = n / (t - t0)
    print(json.dumps(out), flush=True)


def hold(name: str, path: str) -> None:
    lk = make(name, path, wait=True)
    lk.acquire()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("r"):
            t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            lk.release()
            print(t, flush=True)
        elif line.startswith("a"):
            lk.acquire()
            print("ready", flush=True)


def wait(name: str, path: str) -> None:
    lk = make(name, path, wait=True)
    print("start", flush=True)
    lk.acquire()
    t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    print(t, flush=True)
    lk.release()


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "rate":
        rate(*args)
    elif mode == "hold":
        hold(*args)
    elif mode == "wait":
        wait(*args)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
