"""Latency through hand-over switches under constant HTTP load (hardening E).

    python3 switch_load.py IMPL [--switches N] [--rate R] [--json FILE]

IMPL: `lockctl` (`lockctl handover run --listen` around bench/handover/switch_app.py, which
says READY=1 by sd_notify), `lockctl-started` (the same with --ready started: the old
command is stopped as soon as the new one is started), `lockctl-128` (the old behaviour:
backlog 128 and a state file, so the command stops before the hand-over), `python` or
`node` (the hand-over example apps, examples/handover/). Each switch is run as the current Supervisor
runs it: the new release starts while the old one runs, the old one gets SIGTERM at once.

The load is open-loop: R requests a second on a schedule, each on a fresh connection (so a
full listen queue shows as SYN retransmits), latency measured from the scheduled time
(no coordinated omission), 5 s timeout. Reported per switch window (from the new
release's start to 300 ms after the old one's exit) and over the whole run: count, failed,
p50, p99, max, and the longest pause between two answers. Bounded: at most 40 s of load.
Runs on loopback only.
"""
import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
LOCKCTL = os.environ.get("LOCKCTL", os.path.join(TARGET, "debug", "lockctl"))
PY = os.environ.get("PY", os.path.join(TARGET, "py-venv", "bin", "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def version_cmd(impl: str, sock: str, port: int, state: str) -> list:
    app = [sys.executable, os.path.join(ROOT, "bench", "handover", "switch_app.py")]
    base = [LOCKCTL, "handover", "run", "--socket", sock, "--no-signal",
            "--listen", f"http=127.0.0.1:{port}"]
    if impl == "lockctl":
        return base + ["--"] + app
    if impl == "lockctl-started":
        return base + ["--ready", "started", "--"] + app
    if impl == "lockctl-128":
        return base + ["--backlog", "128", "--state-file", state, "--"] + app
    if impl == "python":
        return [PY, os.path.join(ROOT, "examples", "handover", "python", "app.py")]
    if impl == "node":
        return ["node", os.path.join(ROOT, "examples", "handover", "node", "app.js")]
    raise SystemExit(f"unknown IMPL {impl}")


def start(impl, sock, port, state, release, env):
    e = dict(env, RELEASE=release, PORT=str(port), HOST="127.0.0.1", GRACE="8")
    p = subprocess.Popen(version_cmd(impl, sock, port, state), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=e)
    return p


def wait_ready(p, limit=20.0):
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(limit)
    if not box or not box[0].startswith("ready"):
        raise SystemExit(f"a version did not get ready: {box}")
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()


def request(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    if b" 200 " not in data.split(b"\r\n", 1)[0] + b" ":
        raise ValueError("bad answer")


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def stats(rows):
    lat = [r[1] for r in rows if r[2]]
    done = sorted(r[0] + r[1] for r in rows if r[2])
    gaps = [b - a for a, b in zip(done, done[1:])]
    ms = lambda x: None if x is None else round(x * 1000, 2)
    return {"requests": len(rows), "failed": sum(1 for r in rows if not r[2]),
            "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)), "max_ms": ms(max(lat) if lat else None),
            "longest_pause_ms": ms(max(gaps) if gaps else None)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("impl")
    ap.add_argument("--switches", type=int, default=6)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="switch-load.")
    os.chmod(work, 0o1777)
    sock, state = os.path.join(work, "handover.sock"), os.path.join(work, "state")
    env = dict(os.environ, BALENA_SERVICE_HANDOVER_COMPLETE_PATH=os.path.join(work, "handover-complete"))
    if a.impl == "node" and "NODE_PATH" not in env:
        os.makedirs(os.path.join(work, "node_modules"))
        os.symlink(os.path.join(ROOT, "bindings-node"), os.path.join(work, "node_modules", "update-lock"))
        env["NODE_PATH"] = os.path.join(work, "node_modules")
    port = free_port()
    rows, lock = [], threading.Lock()
    tokens: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker():
        while True:
            t = tokens.get()
            if t is None:
                return
            ok = True
            try:
                request(port)
            except Exception:
                ok = False
            with lock:
                rows.append((t, time.monotonic() - t, ok))

    versions = [start(a.impl, sock, port, state, "v0", env)]
    wait_ready(versions[0])
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(300)]
    for w in workers:
        w.start()

    def schedule():
        t0 = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - t0 < 40:
            due = t0 + n / a.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            tokens.put(due)
            n += 1

    sched = threading.Thread(target=schedule)
    sched.start()
    time.sleep(1.0)  # steady state before the first switch (load, not synchronisation)
    windows = []
    for k in range(1, a.switches + 1):
        t_start = time.monotonic()
        new = start(a.impl, sock, port, state, f"v{k}", env)
        old = versions[-1]
        old.send_signal(signal.SIGTERM)  # the current Supervisor stops the old one at once
        wait_ready(new)
        old.wait(timeout=30)
        t_end = time.monotonic() + 0.3
        versions.append(new)
        time.sleep(0.6)  # let the window close under load before the next switch
        windows.append((t_start, t_end, old.returncode))
    stop.set()
    sched.join()
    for _ in workers:
        tokens.put(None)
    for w in workers:
        w.join(10)
    versions[-1].send_signal(signal.SIGTERM)
    try:
        versions[-1].wait(timeout=20)
    except subprocess.TimeoutExpired:
        versions[-1].kill()
    per = []
    for (s, e, rc) in windows:
        st = stats([r for r in rows if s <= r[0] <= e])
        st["old_exit"] = rc
        per.append(st)
    result = {"impl": a.impl, "rate": a.rate, "switches": per, "overall": stats(rows),
              "switch_p99_max_ms": max((w["p99_ms"] or 0) for w in per),
              "failed": sum(w["failed"] for w in per) + 0}
    result["failed"] = result["overall"]["failed"]
    print(json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
