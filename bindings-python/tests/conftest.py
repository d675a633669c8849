"""Shared helpers: temporary service directories, the device's two real readers of a lock
(procmail ``lockfile`` as uid 65534 for the Supervisor, ``flock -nx`` for the host OS
reboot), ``lockctl``, and child processes synchronised through lines on pipes, process
exits and /proc (a waiter is waiting once it has an inotify descriptor), never sleeps."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKCTL = os.environ.get("UPDATE_LOCK_LOCKCTL", str(ROOT / "target" / "debug" / "lockctl"))
CHILD = str(Path(__file__).with_name("child.py"))

# Tests probe with the Supervisor's real lockfile; each probe of a held lock is an attempt
# that later acquisitions (here, in child processes and in lockctl) would yield to. The
# yield has its own tests (test_update_waiting.py), which turn it back on.
os.environ["UPDATE_LOCK_YIELD_TO_UPDATES"] = "0"

STEP = 20.0
"""Seconds any single step may take before the test fails instead of hanging."""

PATH_VARS = (
    "BALENA_APP_LOCK_PATH",
    "RESIN_APP_LOCK_PATH",
    "BALENA_SERVICE_HANDOVER_COMPLETE_PATH",
    "RESIN_SERVICE_KILL_ME_PATH",
)


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    env.update(extra or {})
    return env


@pytest.fixture(autouse=True)
def _no_default_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the machine's real /tmp/balena: every test passes explicit paths,
    and the variables that would change the defaults are cleared."""
    for v in PATH_VARS:
        monkeypatch.delenv(v, raising=False)


def make_service_dir(parent: Optional[str] = None) -> Path:
    d = Path(tempfile.mkdtemp(prefix="ul-py-test.", dir=parent or "/tmp"))
    os.chmod(d, 0o1777)  # as the Supervisor makes a service directory
    return d


@pytest.fixture
def service_dir() -> Iterator[Path]:
    d = make_service_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def lock_path(service_dir: Path) -> Path:
    return service_dir / "updates.lock"


@pytest.fixture
def two_paths(service_dir: Path) -> List[Path]:
    """The device's lock set in miniature: updates.lock and the legacy resin-updates.lock, in
    two directories (on a device /tmp/balena and /tmp/resin)."""
    a, b = service_dir / "balena", service_dir / "resin"
    for d in (a, b):
        d.mkdir()
        os.chmod(d, 0o1777)
    return [a / "updates.lock", b / "resin-updates.lock"]


def run(cmd: Sequence[str], timeout: float = STEP, **kw: object) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
    )  # type: ignore[call-overload]


def supervisor_probe(path: Path) -> int:
    """What the Supervisor sees: ``lockfile -r 0 PATH`` as uid 65534; 73 = locked. When it
    succeeds it made its own lock, which is removed again."""
    r = run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "lockfile", "-r", "0", str(path)]
    )
    if r.returncode == 0:
        os.unlink(path)
    else:
        assert r.returncode == 73, f"lockfile failed for another reason: {r.stderr}"
    return r.returncode


def reboot_probe(path: Path) -> int:
    """What the host OS reboot sees: ``flock -nx PATH true`` on a fresh descriptor; 1 = held.
    flock(1) creates a missing file: removed again."""
    existed = os.path.lexists(path)
    r = run(["flock", "-nx", str(path), "true"])
    if not existed and os.path.lexists(path):
        os.unlink(path)
    assert r.returncode in (0, 1), f"flock failed for another reason: {r.stderr}"
    return r.returncode


def assert_held(path: Path, reboot: bool = True) -> None:
    assert supervisor_probe(path) == 73, f"the Supervisor would not see {path} as locked"
    if reboot:
        assert reboot_probe(path) == 1, f"the host OS reboot would not see {path} as locked"


def assert_free(path: Path) -> None:
    assert not os.path.lexists(path), f"{path} was left behind"
    assert supervisor_probe(path) == 0, f"the Supervisor is blocked on {path}"
    assert reboot_probe(path) == 0, f"the host OS reboot is blocked on {path}"


def identity(path: Path) -> tuple:
    """(inode, owner, content) of a path, to show it was not touched."""
    st = os.lstat(path)
    content = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else b""
    return (st.st_ino, st.st_uid, content)


def has_inotify(pid: int, tid: Optional[int] = None) -> bool:
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return False
    for n in names:
        try:
            if os.readlink(f"{base}/{n}") == "anon_inode:inotify":
                return True
        except OSError:
            continue
    return False


def wait_until(predicate, what: str, timeout: float = STEP) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition the kernel exposes (no other signal exists for it) with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


def wait_for_waiter(pid: int) -> None:
    """Until process `pid` waits for a lock: a fresh process has no inotify descriptor until
    the core starts watching the lock directories."""
    wait_until(lambda: has_inotify(pid), f"process {pid} waits for the lock (inotify)")


def thread_in_poll(tid: int) -> bool:
    """Thread `tid` of this process is blocked in poll/ppoll (x86_64 numbers 7, 271)."""
    try:
        first = open(f"/proc/self/task/{tid}/syscall").read().split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return first in ("7", "271")


class Child:
    """A Python child process (tests/child.py ROLE ARGS...) that reports through lines on
    stdout and takes orders on stdin."""

    def __init__(
        self,
        role: str,
        *args: str,
        env: Optional[Dict[str, str]] = None,
        script: str = CHILD,
        prefix: Sequence[str] = (),
    ) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, script, role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=clean_env(env),
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = STEP) -> str:
        """The next line, which must start with `prefix`."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"child {self.pid}: no line {prefix!r} within {timeout} s") from None
        if line is None:
            rc = self.proc.wait(timeout=STEP)
            raise AssertionError(
                f"child {self.pid} exited ({rc}) instead of saying {prefix!r}: {self.stderr()}"
            )
        assert line.startswith(prefix), f"child said {line!r}, expected {prefix!r}; {self.stderr()}"
        return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = STEP) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STEP)


@pytest.fixture
def children() -> Iterator[List[Child]]:
    """Children started by a test; killed at the end whatever happened."""
    started: List[Child] = []
    yield started
    for c in started:
        c.kill()


def spawn(
    children: List[Child],
    role: str,
    *args: object,
    env: Optional[Dict[str, str]] = None,
    script: str = CHILD,
    prefix: Sequence[str] = (),
) -> Child:
    c = Child(role, *(str(a) for a in args), env=env, script=script, prefix=prefix)
    children.append(c)
    return c
