"""Python torture holder: acquire, run inside.py, check, release, forever.
    holder.py DIR MARKER HOLD_MAX_MS   (lines: acquiring / done ok|lost / err CODE)"""
import os
import random
import subprocess
import sys
import time

import update_lock

d, marker, hold = sys.argv[1:4]
paths = [os.path.join(d, "updates.lock"), os.path.join(d, "resin-updates.lock")]
inside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inside.py")
while True:
    print("acquiring", flush=True)
    try:
        lock = update_lock.lock(timeout=10, paths=paths).acquire()
    except update_lock.UpdateLockError as e:
        print(f"err {e.code}", flush=True)
        continue
    if lock.reclaimed:
        print(f"reclaimed {len(lock.reclaimed)}", flush=True)
    subprocess.run([sys.executable, inside, marker, paths[0], hold])
    lost = False
    try:
        lock.check()
    except update_lock.LockLostError:
        lost = True
    try:
        lock.release()
    except update_lock.LockLostError:
        lost = True
    print("done lost" if lost else "done ok", flush=True)
    time.sleep(random.uniform(0, 0.4))  # a gap the Supervisor can take the lock in
