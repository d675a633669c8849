"""A worker that holds the update lock only around each unit of work that must not be cut
short, and lets updates through in between. Environment: WORK_SECONDS (2) for each unit,
INTERVAL_SECONDS (10) between units. SIGTERM (an update, `docker stop`) lets the unit in
progress finish, then exits 0."""

import os
import signal
import threading
import time

import update_lock

WORK = float(os.environ.get("WORK_SECONDS", "2"))
INTERVAL = float(os.environ.get("INTERVAL_SECONDS", "10"))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())

while not stop.is_set():
    try:
        with update_lock.lock(timeout=60) as held:
            print("holding the update lock:", " ".join(held.paths), flush=True)
            time.sleep(WORK)  # the work an update must not interrupt
        print("released the update lock", flush=True)
    except update_lock.UpdateLockError as e:
        print(f"skipped a unit of work: {e} [{e.code}]", flush=True)
    stop.wait(INTERVAL)
