"""The critical section every torture holder runs while it holds the lock (as a child, so the
checks are the same in every language):

    inside.py MARKER LOCKPATH HOLD_MAX_MS     (owner = the parent: the holder)

0. If the lock files no longer carry the owner's pid, the override took the lock right after
   it was acquired: prints "gone" and stops (the holder's check() must say "lost").
1. Claim MARKER with O_EXCL, writing "OWNER ROUND" (ROUND: a random id of this critical
   section, printed first as "round ROUND"). If it exists with a live owner, prints
   "overlap PID ROUND" (the orchestrator requires that that round ended "lost": its lock was
   deleted by an override) and takes it over; a dead owner's marker (a killed holder) is
   simply replaced.
2. Prints "inside", then runs the reboot script's check on a fresh descriptor of LOCKPATH
   (flock(1) -nx on an fd opened without O_CREAT, as safe_reboot probes existing files):
   prints "probe RC" (1 = busy, as it must be; 0 = the reboot could proceed; 2 = no file).
3. Holds for a random time, then removes MARKER if it is still its own.
Dies with its holder (PR_SET_PDEATHSIG), so a SIGKILLed holder leaves only the marker.
"""

import ctypes
import os
import random
import subprocess
import sys
import time

ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
marker, lockpath, hold_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = os.getppid()
round_id = os.urandom(6).hex()
me = f"{owner} {round_id}\n".encode()
print(f"round {round_id}", flush=True)


def alive(pid: int) -> bool:
    """Running (a killed holder may linger as a zombie until it is reaped: dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def record_pids() -> set:
    pids = set()
    for p in (lockpath, os.path.join(os.path.dirname(lockpath), "resin-updates.lock")):
        pids |= {l[4:] for l in read(p).splitlines() if l.startswith("pid=")}
    return pids


# Our lock may already be gone (the override deleted it right after our acquire returned):
# then we are not a holder any more, and our check()/release() will say so.
if record_pids() != {str(owner)}:
    print("gone", flush=True)
    sys.exit(0)

while True:
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, me)
        os.close(fd)
        break
    except FileExistsError:
        content = read(marker)
        if not content.strip():
            continue  # being written or just removed: look again
        other, _, other_round = content.strip().partition(" ")
        if alive(int(other)):
            # Another process is inside. Fine only if the override deleted its lock: the
            # orchestrator checks at the end that that round ended "lost".
            print(f"overlap {other} {other_round}", flush=True)
        # Take the marker over atomically (a dead owner: a killed holder).
        tmp = f"{marker}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(me)
        os.rename(tmp, marker)
        break

print("inside", flush=True)
rc = subprocess.run(["bash", "-c", '{ exec 9<"$1"; } 2>/dev/null || exit 2; flock -nx 9', "probe", lockpath]).returncode
print(f"probe {rc}", flush=True)
time.sleep(random.uniform(0, hold_ms / 1000))
if read(marker) == me.decode():
    os.remove(marker)
