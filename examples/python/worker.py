#!/usr/bin/env python3
"""A long-running worker that keeps a state file on the persistent /data volume and
replaces it atomically, holding the update lock only around each write.

While the lock is held the Supervisor defers application updates (it would otherwise stop
the container half-way through the write) and the host OS update reboot waits. Between
writes nothing is held, so updates go ahead.

Environment:
    STATE_FILE     the state file (default /data/state.json)
    INTERVAL       seconds between writes (default 10)
    ITERATIONS     stop after this many rounds (written or skipped); 0 = run until
                   SIGTERM (default 0)
    LOCK_TIMEOUT   seconds to wait for the lock before skipping a round (default 60)
    INSIDE_HOOK    a shell command run inside the critical section (for the example's test)
    UPDATE_LOCK_PATHS  space-separated lock paths instead of the Supervisor's (tests only;
                   leave unset on a device)

Exit status: 0 on SIGTERM/SIGINT or after ITERATIONS, 77 when the lock can never be taken
(permission or uid problem), 1 on other errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Optional

import update_lock

STATE_FILE = os.environ.get("STATE_FILE", "/data/state.json")
INTERVAL = float(os.environ.get("INTERVAL", "10"))
ITERATIONS = int(os.environ.get("ITERATIONS", "0"))
LOCK_TIMEOUT = float(os.environ.get("LOCK_TIMEOUT", "60"))
INSIDE_HOOK = os.environ.get("INSIDE_HOOK")
LOCK_PATHS = os.environ.get("UPDATE_LOCK_PATHS", "").split() or None

stop = threading.Event()


def log(msg: str) -> None:
    print(f"worker: {msg}", flush=True)


def load_state() -> Dict[str, Any]:
    try:
        with open(STATE_FILE) as f:
            state: Dict[str, Any] = json.load(f)
            return state
    except FileNotFoundError:
        return {"writes": 0}


def write_atomically(path: str, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over the old file, fsync the directory:
    a reader (or a reboot) sees the old state or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".state.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if INSIDE_HOOK:
            subprocess.run(INSIDE_HOOK, shell=True, check=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(lock: update_lock.Lock) -> Optional[int]:
    """One critical section: read, update and replace the state under the update lock.
    Returns the new write count, or None when an update kept the lock busy."""
    try:
        with lock:
            state = load_state()
            state["writes"] = int(state.get("writes", 0)) + 1
            state["updated_at"] = time.time()
            write_atomically(STATE_FILE, json.dumps(state).encode())
            lock.check()  # still ours? (the Supervisor's lock override deletes app locks)
            return int(state["writes"])
    except update_lock.LockTimeoutError as e:
        # The Supervisor (or another app) holds the lock: an update is under way. Skip this
        # round rather than queue up behind it.
        log(f"update in progress, skipping this round [{e.code}]: {e}")
        return None
    except update_lock.LockLostError as e:
        # The write itself completed (rename is atomic), but an update was forced meanwhile.
        log(f"warning [{e.code}]: {e}")
        return None


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = update_lock.lock(timeout=LOCK_TIMEOUT, paths=LOCK_PATHS)
    log(f"state in {STATE_FILE}, lock paths {lock.paths}")
    rounds = 0
    try:
        while not stop.is_set():
            writes = save(lock)
            rounds += 1
            if writes is not None:
                log(f"state written ({writes} writes)")
            if ITERATIONS and rounds >= ITERATIONS:
                break
            stop.wait(INTERVAL)
    except (update_lock.PermissionDeniedError, update_lock.SupervisorUidError) as e:
        log(f"error [{e.code}]: {e}")
        return 77
    except update_lock.UpdateLockError as e:
        log(f"error [{e.code}]: {e}")
        return 1
    log("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
