"""Stand-ins that swap the lock name under an app releasing or reclaiming it.

Run as root by core/tests/hardening_removal_races.rs. Modes:

* ``override``: the Supervisor's lock override, as the real one does it: whenever an app
  lock (not owned by uid 65534) stands at PATH, unlink it and put the Supervisor's own lock
  there the way procmail ``lockfile`` does (a temp file owned by 65534, mode 0444, content
  ``0``, ``link()``ed to PATH).
* ``reclaim``: a co-tenant of uid 1000 plants a stale holder record at PATH (update-lock's
  format, no flock: it looks left by a dead holder, so apps reclaim it), then deletes it
  (it is the owner) and the Supervisor takes the name at once.

Either way the Supervisor then holds its lock for a moment and checks that its file is
still at PATH. A file moved aside for a moment (an app's removal found it was not its own
and puts it back) is counted as ``moved_aside``; one still missing 50 ms later was deleted
by an app (``supervisor_locks_deleted``, must be 0). Prints one JSON line with the counts.
"""
import json
import os
import sys
import time

mode, path, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = os.path.dirname(path)
NOBODY = 65534
CO_TENANT = 1000
swaps = deleted = attempts = moved_aside = 0


def supervisor_temp():
    """procmail's temp file, made before the race so that the link follows the unlink at once."""
    tmp = os.path.join(d, "_sv.%d.%d.host" % (os.getpid(), attempts))
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o444)
    os.fchown(fd, NOBODY, NOBODY)
    os.write(fd, b"0")
    ino = os.fstat(fd).st_ino
    os.close(fd)
    return tmp, ino


def supervisor_lock(tmp, ino):
    try:
        os.link(tmp, path)
    except FileExistsError:
        ino = None
    os.unlink(tmp)
    return ino


def stale_record():
    tmp = os.path.join(d, "_ct.%d.%d" % (os.getpid(), attempts))
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.fchown(fd, CO_TENANT, CO_TENANT)
    os.write(fd, b"update-lock holder v1\npid=1\npid_ns=1\nboot_id=\nstart_time=1\nuid=1000\n"
                 b"hostname=x\nprogram=crafted\nacquired_at=\n")
    os.close(fd)
    try:
        os.link(tmp, path)
        ok = True
    except FileExistsError:
        ok = False
    os.unlink(tmp)
    return ok


def still_mine(ino):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == ino and st.st_uid == NOBODY


while swaps < want:
    attempts += 1
    tmp, ino = supervisor_temp()
    if mode == "override":
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.unlink(tmp)
            continue
        if st.st_uid == NOBODY:
            os.unlink(tmp)
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            os.unlink(tmp)
            continue
    else:
        if not stale_record():
            os.unlink(tmp)
            continue
        # Give reclaimers a moment to probe it, then take it back and lock at once.
        for _ in range(int(attempts % 7)):
            os.sched_yield()
        # The co-tenant really is another uid here: in the sticky directory it can only
        # delete its own file, never an app's lock that replaced it.
        os.seteuid(CO_TENANT)
        try:
            os.unlink(path)
        except (FileNotFoundError, PermissionError):
            pass
        finally:
            os.seteuid(0)
    mine = supervisor_lock(tmp, ino)
    if mine is None:
        continue
    swaps += 1
    for _ in range(3):
        os.sched_yield()
    if not still_mine(mine):
        moved_aside += 1
        # Back within 50 ms, or deleted (waiting for a state that never signals: polled).
        for _ in range(500):
            time.sleep(0.0001)
            if still_mine(mine):
                break
        else:
            deleted += 1
            continue
    # Release: an app may have it moved aside for an instant right now: wait until it is back.
    for _ in range(500):
        try:
            os.unlink(path)
            break
        except FileNotFoundError:
            moved_aside += 1
            time.sleep(0.0001)
    else:
        deleted += 1

print(json.dumps({"swaps": swaps, "attempts": attempts, "moved_aside": moved_aside,
                  "supervisor_locks_deleted": deleted}))
