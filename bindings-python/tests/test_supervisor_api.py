"""The Supervisor API client and the update gate from Python: against a real HTTP server on
loopback that answers as the Supervisor does, against addresses nobody answers on, and end to
end under ``lockctl rehearse`` (which serves the API to the versions it runs)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import update_lock
from conftest import LOCKCTL

KEY = "py-test-key-0123456789"


class FakeSupervisor(BaseHTTPRequestHandler):
    state: Dict[str, Any] = {}

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._answer(401, {"status": "failed", "message": "Unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if self._authorized() and self.path == "/v1/device":
            self._answer(200, {"status": "Idle", "update_pending": self.state["pending"],
                               "update_downloaded": self.state["downloaded"], "update_failed": False,
                               "download_progress": None, "commit": "c0ffee"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.state["last"] = (self.path, body)
        if not self._authorized():
            return
        if self.path == "/v1/reboot" and self.state["locked"] and not body.get("force"):
            self._answer(423, {"status": "failed", "message": "Updates are locked"})
        else:
            self._answer(202, "OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def supervisor() -> Iterator[Tuple[update_lock.SupervisorApi, Dict[str, Any]]]:
    FakeSupervisor.state = {"pending": False, "downloaded": False, "locked": False}
    server = HTTPServer(("127.0.0.1", 0), FakeSupervisor)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    api = update_lock.SupervisorApi(f"http://127.0.0.1:{server.server_address[1]}", KEY, timeout=5)
    yield api, FakeSupervisor.state
    server.shutdown()
    server.server_close()


def test_device_state_update_and_reboot(supervisor: Tuple[update_lock.SupervisorApi, Dict[str, Any]]) -> None:
    api, state = supervisor
    d = api.device()
    assert isinstance(d, update_lock.DeviceState)
    assert d.commit == "c0ffee" and not d.update_waiting
    state.update(pending=True, downloaded=True)
    assert api.device().update_waiting
    api.update(force=True)
    assert state["last"] == ("/v1/update", {"force": True})
    state["locked"] = True
    with pytest.raises(update_lock.LockHeldError) as e:
        api.reboot()
    assert e.value.code == "held" and "HTTP 423" in str(e.value) and "force" in str(e.value)
    api.reboot(force=True)
    assert state["last"] == ("/v1/reboot", {"force": True})
    assert KEY not in repr(api)


def test_a_wrong_key_is_unauthorized_and_not_shown(supervisor: Tuple[update_lock.SupervisorApi, Dict[str, Any]]) -> None:
    api, _ = supervisor
    wrong = update_lock.SupervisorApi(api.address, "wrong-key-456")
    with pytest.raises(update_lock.SupervisorApiError) as e:
        wrong.device()
    assert e.value.code == "api" and e.value.number == 11 and e.value.reason == "unauthorized"
    assert "BALENA_SUPERVISOR_API_KEY" in str(e.value)
    assert "wrong-key-456" not in str(e.value) and KEY not in str(e.value)


def test_nobody_answering_times_out_and_not_configured_says_which_label(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        api = update_lock.SupervisorApi(f"http://127.0.0.1:{silent.getsockname()[1]}", KEY, timeout=0.3)
        with pytest.raises(update_lock.SupervisorApiError) as e:
            api.ping()
        assert e.value.reason == "timeout" and "within 0.3 s" in str(e.value)
    finally:
        silent.close()
    for v in ("BALENA_SUPERVISOR_ADDRESS", "RESIN_SUPERVISOR_ADDRESS"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(update_lock.SupervisorApiError) as e:
        update_lock.SupervisorApi()
    assert e.value.reason == "not-configured"
    assert "io.balena.features.supervisor-api" in str(e.value)
    with pytest.raises(ValueError):
        update_lock.SupervisorApi("http://127.0.0.1:1", KEY, timeout=0)


def test_the_gate_releases_only_at_a_safe_point_with_a_downloaded_update(
    supervisor: Tuple[update_lock.SupervisorApi, Dict[str, Any]], tmp_path: Path
) -> None:
    api, state = supervisor
    lock = tmp_path / "updates.lock"
    with update_lock.UpdateGate(api, paths=[lock]) as gate:
        assert gate.held and lock.exists()
        assert gate.safe_point() == "no-update"
        state["pending"] = True
        assert gate.safe_point() == "no-update", "pending but not downloaded: keep holding"
        state["downloaded"] = True
        assert gate.update_waiting()
        assert gate.safe_point() == "released"
        assert not gate.held and not lock.exists()
    assert not lock.exists()


def test_the_gate_keeps_the_lock_when_the_api_fails(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        api = update_lock.SupervisorApi(f"http://127.0.0.1:{silent.getsockname()[1]}", KEY, timeout=0.2)
        lock = tmp_path / "updates.lock"
        with update_lock.UpdateGate(api, paths=[lock]) as gate:
            with pytest.raises(update_lock.SupervisorApiError):
                gate.safe_point()
            assert gate.held and lock.exists()
    finally:
        silent.close()


GATE_APP = """
import sys, time, update_lock
with update_lock.UpdateGate(poll_interval=0.05) as gate:
    print("holding", flush=True)
    while True:
        time.sleep(0.05)              # one unit of work, never cut off
        outcome = gate.safe_point()
        if outcome != "no-update":
            print(outcome, flush=True)
            break
time.sleep(1000)
"""


def test_end_to_end_under_lockctl_rehearse(tmp_path: Path) -> None:
    # (The service directory must be reachable by uid 65534, unlike pytest's tmp_path.)
    """The gate app holds the lock from its start; the Supervisor of the rehearsal is let in
    at the first safe point after the download."""
    app = tmp_path / "gate_app.py"
    app.write_text(GATE_APP)
    svc = Path(tempfile.mkdtemp(prefix="rehearse-gate.", dir="/tmp"))
    svc.chmod(0o1777)
    cmd = f"exec {sys.executable} {app}"
    r = subprocess.run(
        [LOCKCTL, "rehearse", "--json", "-q", "--service-dir", str(svc), "--download", "0.5s",
         "--update-after", "0.3s", "--observe", "0.2s", "--stop-grace", "2s",
         "--old", cmd, "--new", "trap 'exit 0' TERM; sleep 100 & wait"],
        capture_output=True, text=True, timeout=120,
    )
    shutil.rmtree(svc, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    kinds = [e["kind"] for e in report["events"]]
    assert kinds.index("download-done") < kinds.index("lock-taken")
    # Held off until the download was done, then let in at the next safe point: the
    # Supervisor's first retry (0.5 s) finds the lock free.
    assert report["summary"]["lock_attempts"] <= 2, report["summary"]
    assert report["summary"]["blocked_by_lock_ms"] < 1000
    app_lock = [s for s in report["spans"] if s["lane"] == "app-lock"]
    download_done = next(e["t_ms"] for e in report["events"] if e["kind"] == "download-done")
    near = [(round(e["t_ms"]), e["actor"], e["kind"], e.get("detail", "")[:120]) for e in report["events"]
            if app_lock and abs(e["t_ms"] - app_lock[0]["to_ms"]) < 80]
    assert app_lock and app_lock[0]["to_ms"] >= download_done - 20, f"held through the download: {app_lock} {near} {r.stderr}"
