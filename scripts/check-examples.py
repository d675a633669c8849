#!/usr/bin/env python3
"""Checks examples/balena without a Docker engine.

Always (`--parse-only` stops here; the test command runs this part):
  * every service of docker-compose.yml builds from its own folder with a Dockerfile.template,
    and every such folder is a service; build args are ARGs of that Dockerfile;
  * every Dockerfile.template, resolved for each balena architecture (amd64, aarch64,
    armv7hf), parses: known instructions, known base images, COPY sources inside the build
    context, `--from` naming an earlier stage, JSON CMD/ENTRYPOINT, a command in the last
    stage, no template variable left; the update-lock version is the workspace's;
  * the Debian and Alpine variants of an app carry the same app files.

With `--dist DIR` (run by `scripts/dist.sh --check`, as root in a private mount namespace:
`unshare -m --propagation private`), each example whose stages are all Debian is built and
run in a Debian bookworm root made with debootstrap, for each `--arch` (amd64 natively;
aarch64 and armv7hf through qemu-user registered with binfmt_misc). Each stage is an overlay on that
root; the official image a stage starts FROM is stood in for by a layer made once (Python
3.11: Debian's python3 in a venv at /usr/local; Node.js 20: the official build from the npm
registry's node-linux-ARCH and npm packages, at /usr/local as in the node image). RUN steps
run in a chroot with pip, npm and the release download URL pointed at dist/, served on
127.0.0.1 by scripts/dist-server.py, as they are once published. The last stage's command
then runs with /tmp/balena and /tmp/resin bound to one host directory, as on a device, and
the device's readers are asked from outside: the Supervisor's `lockfile -r 0` as uid 65534
and the reboot script's `flock -nx` must see the lock held while the app says it holds it,
and free once it says it released it; SIGTERM must end it with status 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import tomllib
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "balena"
WORK = ROOT / "target" / "examples-root"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ARCHES = {"amd64": "amd64", "aarch64": "arm64", "armv7hf": "armhf"}  # balena arch -> Debian
MACHINES = {"amd64": "genericx86-64-ext", "aarch64": "raspberrypi4-64", "armv7hf": "raspberrypi3"}
# The official Node.js builds that stand in for the node:20 image (npm's node-linux-ARCH):
# the newest 20.x there, which for armv7l is 20.11.0 (the image has a newer 20.x; npm warns
# that 20.11.0 is below the package's engines, and installs it).
NODE_VERSIONS = {"x64": "20.20.2", "arm64": "20.20.2", "armv7l": "20.11.0"}
NPM_VERSION = "10.8.2"
# Base images the examples may start from: which libc family, and the stand-in layer.
BASES = {
    "debian:bookworm-slim": ("debian", None),
    "python:3.11-slim-bookworm": ("debian", "python"),
    "node:20-bookworm-slim": ("debian", "node"),
    "alpine:3.20": ("alpine", None),
    "python:3.11-alpine3.20": ("alpine", None),
    "node:20-alpine3.20": ("alpine", None),
}
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CheckError(Exception):
    """A finding: the file and what is wrong."""


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: pathlib.Path
    args_before_from: dict[str, str]
    stages: list[Stage]


def workspace_version() -> str:
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def resolve_template(text: str, arch: str, where: pathlib.Path) -> str:
    text = text.replace("%%BALENA_ARCH%%", arch).replace("%%BALENA_MACHINE_NAME%%", MACHINES[arch])
    left = re.findall(r"%%[A-Z_]+%%", text)
    if left:
        raise CheckError(f"{where}: unknown template variable(s) {sorted(set(left))}")
    return text


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with continuations joined and comment lines dropped (Docker's rules)."""
    out: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(stripped)
        out.append((start, " ".join(p.strip() for p in current if p.strip())))
        current = []
    if current:
        raise CheckError(f"line {start}: the file ends inside a continued instruction")
    return out


def parse(path: pathlib.Path, arch: str) -> Dockerfile:
    text = resolve_template(path.read_text(), arch, path)
    args_before: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        where = f"{path.relative_to(ROOT)}:{number}"
        if keyword not in INSTRUCTIONS:
            raise CheckError(f"{where}: unknown instruction {keyword}")
        if keyword == "FROM":
            words = rest.split()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise CheckError(f"{where}: FROM IMAGE [AS NAME], got {rest!r}")
            if words[0] not in BASES and words[0] not in {s.name for s in stages}:
                raise CheckError(f"{where}: base image {words[0]} is not one the examples are checked with")
            stages.append(Stage(words[0], words[2] if len(words) == 3 else None))
            continue
        if not stages:
            if keyword != "ARG":
                raise CheckError(f"{where}: {keyword} before the first FROM")
            name, _, default = rest.partition("=")
            args_before[name.strip()] = default
            continue
        if keyword in ("CMD", "ENTRYPOINT", "RUN", "SHELL") and rest.startswith("["):
            try:
                value = json.loads(rest)
            except json.JSONDecodeError as e:
                raise CheckError(f"{where}: {keyword} is not valid JSON: {e}") from None
            if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                raise CheckError(f"{where}: {keyword} must be a JSON list of strings")
        if keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if len(paths) < 2:
                raise CheckError(f"{where}: {keyword} needs a source and a destination")
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage not in {s.name for s in stages[:-1]}:
                    raise CheckError(f"{where}: --from={source_stage} names no earlier stage")
            else:
                for src in paths[:-1]:
                    target = (path.parent / src).resolve()
                    if not str(target).startswith(str(path.parent.resolve())):
                        raise CheckError(f"{where}: {src} is outside the build context {path.parent.name}/")
                    if not glob.glob(str(target)):
                        raise CheckError(f"{where}: {src} does not exist in the build context")
        stages[-1].instructions.append(Instruction(keyword, rest, number))
    if not stages:
        raise CheckError(f"{path}: no FROM")
    if not any(i.keyword in ("CMD", "ENTRYPOINT") for i in stages[-1].instructions):
        raise CheckError(f"{path}: the last stage has no CMD or ENTRYPOINT")
    return Dockerfile(path, args_before, stages)


def declared_args(df: Dockerfile) -> dict[str, str]:
    out = dict(df.args_before_from)
    for stage in df.stages:
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                out[name.strip()] = default
    return out


def check_static() -> list[str]:
    """The parse-only checks; returns one line per checked thing."""
    report: list[str] = []
    version = workspace_version()
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())
    services = compose.get("services") or {}
    contexts: dict[str, dict] = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            raise CheckError(f"docker-compose.yml: service {name} has no build")
        context = build if isinstance(build, str) else build.get("context")
        folder = (EXAMPLES / context).resolve()
        if folder.parent != EXAMPLES.resolve() or not (folder / "Dockerfile.template").is_file():
            raise CheckError(f"docker-compose.yml: service {name} builds {context}: not a folder of examples/balena with a Dockerfile.template")
        if not isinstance(build, str) and "dockerfile" in build:
            raise CheckError(f"docker-compose.yml: service {name} names a dockerfile; balena resolves Dockerfile.template")
        contexts[folder.name] = build.get("args", {}) if isinstance(build, dict) else {}
    folders = {p.parent.name for p in EXAMPLES.glob("*/Dockerfile.template")}
    if folders - set(contexts):
        raise CheckError(f"docker-compose.yml: no service builds {sorted(folders - set(contexts))}")
    for folder, build_args in sorted(contexts.items()):
        path = EXAMPLES / folder / "Dockerfile.template"
        for arch in ARCHES:
            df = parse(path, arch)
            args = declared_args(df)
            unknown = set(build_args) - set(args)
            if unknown:
                raise CheckError(f"docker-compose.yml: build args {sorted(unknown)} are not ARGs of {folder}/Dockerfile.template")
            if "UPDATE_LOCK_VERSION" in args and args["UPDATE_LOCK_VERSION"] != version:
                raise CheckError(f"{folder}/Dockerfile.template: UPDATE_LOCK_VERSION={args['UPDATE_LOCK_VERSION']} (workspace: {version})")
        package = EXAMPLES / folder / "package.json"
        if package.exists():
            wanted = json.loads(package.read_text()).get("dependencies", {}).get("update-lock")
            if wanted != version:
                raise CheckError(f"{folder}/package.json: update-lock {wanted} (workspace: {version})")
        families = {BASES[s.image][0] for s in df.stages if s.image in BASES}
        report.append(f"ok      {folder}/Dockerfile.template parses for {', '.join(ARCHES)} ({'/'.join(sorted(families))}, {len(df.stages)} stage(s))")
    for folder in sorted(folders):
        if folder.endswith("-alpine"):
            twin = EXAMPLES / folder.removesuffix("-alpine")
            for f in (EXAMPLES / folder).iterdir():
                if f.name != "Dockerfile.template" and (twin / f.name).read_bytes() != f.read_bytes():
                    raise CheckError(f"{folder}/{f.name} differs from {twin.name}/{f.name}: the variants run the same app")
            report.append(f"ok      {folder}/ runs the same app files as {twin.name}/")
    report.append(f"ok      docker-compose.yml: {len(services)} services, each built from its own folder")
    return report


# Broken Dockerfiles the parser must reject, with the words its message must contain.
BROKEN = [
    ("FROM debian:bookworm-slim\nFETCH x\nCMD [\"true\"]\n", "unknown instruction FETCH"),
    ("FROM ubuntu:24.04\nCMD [\"true\"]\n", "base image ubuntu:24.04 is not one"),
    ("FROM debian:bookworm-slim\nCOPY ../app.py /app.py\nCMD [\"true\"]\n", "outside the build context"),
    ("FROM debian:bookworm-slim\nCOPY missing.py /app.py\nCMD [\"true\"]\n", "does not exist in the build context"),
    ("FROM debian:bookworm-slim\nCOPY --from=build /a /a\nCMD [\"true\"]\n", "--from=build names no earlier stage"),
    ("FROM debian:bookworm-slim\nCMD [\"true\",]\n", "CMD is not valid JSON"),
    ("FROM debian:bookworm-slim\nRUN echo %%BALENA_ARCHH%%\nCMD [\"true\"]\n", "unknown template variable"),
    ("FROM debian:bookworm-slim\nRUN echo \\\n", "ends inside a continued instruction"),
    ("FROM debian:bookworm-slim AS a\nRUN true\n", "has no CMD or ENTRYPOINT"),
    ("RUN true\nFROM debian:bookworm-slim\nCMD [\"true\"]\n", "RUN before the first FROM"),
]


def self_test() -> list[str]:
    """The parser rejects each broken Dockerfile with the right message (so the parse
    check can fail), and accepts a good one."""
    (ROOT / "target").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as tmp:
        folder = pathlib.Path(tmp) / "ctx"
        folder.mkdir()
        (folder / "app.py").write_text("")
        path = folder / "Dockerfile.template"
        for text, words in BROKEN:
            path.write_text(text)
            try:
                parse(path, "amd64")
            except CheckError as e:
                if words not in str(e):
                    raise CheckError(f"self-test: {text!r} was rejected with {e}, not {words!r}") from None
            else:
                raise CheckError(f"self-test: {text!r} was accepted")
        path.write_text("FROM debian:bookworm-slim AS b\nCOPY app.py /a\nFROM debian:bookworm-slim\nCOPY --from=b /a /a\nCMD [\"true\"]\n")
        parse(path, "amd64")
    return [f"ok      the parser rejects {len(BROKEN)} broken Dockerfiles with the right message"]


# ---- building and running the Debian examples -------------------------------------------


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def debian_root(deb_arch: str) -> pathlib.Path:
    """debootstrap's bookworm minbase root for the architecture, made once."""
    root = WORK / f"{SUITE}-{deb_arch}"
    if (root / "usr" / "bin" / "apt-get").exists() and not (root / "debootstrap").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    if shutil.which("debootstrap") is None:
        run(["apt-get", "install", "-y", "-qq", "debootstrap"], stdout=subprocess.DEVNULL)
    print(f"        debootstrap {SUITE} {deb_arch} (once)", flush=True)
    foreign = deb_arch != host_deb_arch()
    run(["debootstrap", "--variant=minbase", f"--arch={deb_arch}", *(["--foreign"] if foreign else []),
         SUITE, str(root), MIRROR], stdout=subprocess.DEVNULL)
    if foreign:
        run(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], stdout=subprocess.DEVNULL)
    return root


def host_deb_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def register_binfmt(deb_arch: str) -> None:
    """Foreign binaries in the chroot run through qemu-user; the F flag keeps the
    interpreter usable inside it. Registered once per boot, left registered."""
    name = {"arm64": "aarch64", "armhf": "arm"}.get(deb_arch)
    if name is None:
        return
    binfmt = pathlib.Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    if not (binfmt / f"qemu-{name}").exists():
        conf = pathlib.Path(f"/usr/lib/binfmt.d/qemu-{name}.conf").read_text().splitlines()[0]
        (binfmt / "register").write_text(conf)


class Mounts:
    """Mounts made for one example, undone in reverse order."""

    def __init__(self) -> None:
        self.points: list[str] = []

    def mount(self, *args: str) -> None:
        run(["mount", *args])
        self.points.append(args[-1])

    def undo(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", point], check=False)
        self.points.clear()


def overlay(lowers: list[pathlib.Path], scratch: pathlib.Path, mounts: Mounts) -> pathlib.Path:
    """A writable root over the read-only layers (first is the top), with /proc and /dev."""
    for d in ("upper", "work", "merged"):
        (scratch / d).mkdir(parents=True, exist_ok=True)
    merged = scratch / "merged"
    lower = ":".join(str(p) for p in lowers)
    mounts.mount("-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={scratch / 'upper'},workdir={scratch / 'work'}", str(merged))
    mounts.mount("-t", "proc", "proc", str(merged / "proc"))
    mounts.mount("--rbind", "/dev", str(merged / "dev"))
    shutil.copy("/etc/resolv.conf", merged / "etc" / "resolv.conf")
    return merged


def chroot_sh(root: pathlib.Path, script: str, env: dict[str, str], cwd: str = "/") -> None:
    """Runs a shell script in the root; its output is shown only when it fails."""
    done = subprocess.run(["chroot", str(root), "/bin/sh", "-c", f"cd {shlex.quote(cwd)} || exit 1\n{script}"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-40:])
        raise CheckError(f"exit status {done.returncode} of: {script[:200]}\n{tail}")


def layer(name: str, deb_arch: str, base: pathlib.Path, mounts: Mounts) -> pathlib.Path:
    """The stand-in for an official image's own layer, made once."""
    path = WORK / f"layer-{name}-{deb_arch}"
    done = path / ".done"
    if done.exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"layer-{name}-", dir=WORK))
    try:
        print(f"        making the {name} layer for {deb_arch} (once)", flush=True)
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
        root = overlay([base], scratch, mounts)
        if name == "python":
            chroot_sh(root, "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null"
                      " && rm -rf /var/lib/apt/lists/* && python3 -m venv /usr/local && /usr/local/bin/pip --version", env)
        elif name == "node":
            node_arch = {"amd64": "x64", "arm64": "arm64", "armhf": "armv7l"}[deb_arch]
            packs = pathlib.Path(tempfile.mkdtemp(dir=WORK))
            run(["npm", "pack", "--silent", "--pack-destination", str(packs), f"node-linux-{node_arch}@{NODE_VERSIONS[node_arch]}", f"npm@{NPM_VERSION}"],
                stdout=subprocess.DEVNULL)
            local = root / "usr" / "local"
            run(["tar", "-xzf", str(next(packs.glob("node-linux-*.tgz"))), "-C", str(local), "--strip-components=1",
                 "package/bin", "package/include", "package/share"])
            (local / "lib" / "node_modules" / "npm").mkdir(parents=True, exist_ok=True)
            run(["tar", "-xzf", str(next(packs.glob("npm-*.tgz"))), "-C", str(local / "lib" / "node_modules" / "npm"), "--strip-components=1"])
            for tool in ("npm", "npx"):
                (local / "bin" / tool).symlink_to(f"../lib/node_modules/npm/bin/{tool}-cli.js")
            shutil.rmtree(packs)
            if deb_arch == "armhf":
                # The armv7l build needs libatomic, which the node image keeps installed there.
                chroot_sh(root, "apt-get update -qq && apt-get install -y -qq --no-install-recommends libatomic1 >/dev/null"
                          " && rm -rf /var/lib/apt/lists/*", env)
            chroot_sh(root, "node --version && npm --version", env)
        mounts.undo()
        (scratch / "upper").rename(path)
        done.touch()
    finally:
        mounts.undo()
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def copy_into(sources: list[pathlib.Path], dest: pathlib.Path, dest_is_dir: bool) -> None:
    if dest_is_dir or len(sources) > 1:
        dest.mkdir(parents=True, exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
    for src in sources:
        target = dest / src.name if dest.is_dir() else dest
        if src.is_dir():
            shutil.copytree(src, dest if not dest_is_dir else target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target, follow_symlinks=False)


@dataclass
class Built:
    root: pathlib.Path
    env: dict[str, str]
    workdir: str
    command: list[str]


def build(df: Dockerfile, deb_arch: str, build_args: dict[str, str], inject: dict[str, str],
          scratch: pathlib.Path, mounts: Mounts) -> Built:
    """Runs every stage's instructions in an overlay root; returns the last stage's."""
    base = debian_root(deb_arch)
    roots: dict[str, pathlib.Path] = {}
    built: Built | None = None
    for index, stage in enumerate(df.stages):
        kind, extra = BASES[stage.image]
        if kind != "debian":
            raise CheckError(f"{df.path}: stage {index} is not Debian")
        lowers = [layer(extra, deb_arch, base, mounts), base] if extra else [base]
        root = overlay(lowers, scratch / f"stage{index}", mounts)
        env = {"PATH": DEFAULT_PATH, "HOME": "/root"}

        args: dict[str, str] = {}
        workdir = "/"
        entrypoint: list[str] = []
        cmd: list[str] = []
        for ins in stage.instructions:
            scope = {**args, **env}
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                args[name.strip()] = build_args.get(name.strip(), expand(default, scope))
            elif ins.keyword == "ENV":
                for pair in shlex.split(ins.args):
                    key, _, value = pair.partition("=")
                    env[key] = expand(value, scope)
            elif ins.keyword == "WORKDIR":
                workdir = os.path.join(workdir, expand(ins.args, scope))
                (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "RUN":
                print(f"        RUN {ins.args[:100]}{'...' if len(ins.args) > 100 else ''}", flush=True)
                chroot_sh(root, ins.args, {**scope, **inject}, workdir)
            elif ins.keyword in ("COPY", "ADD"):
                words = [expand(w, scope) for w in shlex.split(ins.args)]
                flags = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                origin = roots[source_stage] if source_stage else df.path.parent
                sources = [pathlib.Path(p) for s in paths[:-1]
                           for p in sorted(glob.glob(str(origin / s.lstrip("/"))))]
                dest = paths[-1] if paths[-1].startswith("/") else os.path.join(workdir, paths[-1])
                copy_into(sources, root / dest.lstrip("/"), paths[-1].endswith("/"))
            elif ins.keyword == "ENTRYPOINT":
                entrypoint = json.loads(ins.args)
                cmd = []
            elif ins.keyword == "CMD":
                cmd = json.loads(ins.args)
            elif ins.keyword in ("STOPSIGNAL", "EXPOSE", "LABEL", "VOLUME"):
                pass
            else:
                raise CheckError(f"{df.path}:{ins.line}: {ins.keyword} is not emulated here")
        if stage.name:
            roots[stage.name] = root
        built = Built(root, env, workdir, entrypoint + cmd)
    assert built is not None
    return built


def probe(lock: pathlib.Path) -> tuple[bool, bool]:
    """What the device's readers see: (Supervisor finds it locked, reboot finds it locked).
    The Supervisor's probe that gets the lock removes it again, as the Supervisor does."""
    supervisor = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 "lockfile", "-r", "0", str(lock)], capture_output=True)
    if supervisor.returncode == 0:
        lock.unlink()
    reboot = subprocess.run(["flock", "-nx", str(lock), "true"], capture_output=True) if lock.exists() else None
    return supervisor.returncode != 0, reboot is not None and reboot.returncode != 0


def run_app(built: Built, lockdir: pathlib.Path, mounts: Mounts, job: bool) -> str:
    """Runs the image's command as a service container on a device would, asks the
    readers, stops it; returns a summary."""
    for name in ("balena", "resin"):
        point = built.root / "tmp" / name
        point.mkdir(parents=True, exist_ok=True)
        mounts.mount("--bind", str(lockdir), str(point))
    env = {**built.env, "BALENA_APP_LOCK_PATH": "/tmp/balena/updates.lock",
           "RESIN_APP_LOCK_PATH": "/tmp/balena/updates.lock", "UPDATE_LOCK_YIELD_TO_UPDATES": "0"}
    proc = subprocess.Popen(["chroot", str(built.root), "/bin/sh", "-c", 'cd "$0" && exec "$@"', built.workdir, *built.command],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    selector.register(proc.stdout, selectors.EVENT_READ)

    def wait_for(text: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not any(text in line for line in lines):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise CheckError(f"no {text!r} within {limit:.0f} s; output: {lines}")
            line = proc.stdout.readline()
            if not line:
                raise CheckError(f"the app ended (status {proc.wait()}) before {text!r}; output: {lines}")
            lines.append(line.rstrip())

    lock, legacy = lockdir / "updates.lock", lockdir / "resin-updates.lock"
    try:
        wait_for("holding the update lock", 180)
        held = probe(lock)
        if held != (True, True) or not legacy.exists():
            raise CheckError(f"while the app holds it: Supervisor sees held={held[0]}, reboot sees held={held[1]}, "
                             f"files {sorted(p.name for p in lockdir.iterdir())}; output: {lines}")
        if job:
            status = proc.wait(timeout=60)
            if status != 0:
                raise CheckError(f"the job exited {status}; output: {lines + proc.stdout.read().splitlines()}")
        else:
            wait_for("released the update lock", 60)
        if lock.exists() or legacy.exists():
            raise CheckError(f"released, but left {sorted(p.name for p in lockdir.iterdir())}")
        free = probe(lock)
        if free != (False, False):
            raise CheckError(f"after the release the Supervisor sees held={free[0]}")
        if not job:
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)
            if status != 0:
                raise CheckError(f"SIGTERM: exit status {status}")
        return f"held and released as the Supervisor's lockfile and the reboot's flock see it; {'the job exited 0' if job else 'SIGTERM: exit 0'}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_builds(dist: pathlib.Path, arches: list[str], only: list[str] | None) -> list[str]:
    report: list[str] = []
    server = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "dist-server.py"), str(dist)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())
    try:
        for arch in arches:
            deb_arch = ARCHES[arch]
            register_binfmt(deb_arch)
            for name, svc in compose["services"].items():
                if only and name not in only:
                    continue
                b = svc["build"]
                folder = EXAMPLES / (b if isinstance(b, str) else b["context"])
                df = parse(folder / "Dockerfile.template", arch)
                if any(BASES[s.image][0] != "debian" for s in df.stages if s.image in BASES):
                    continue
                build_args = dict(b.get("args", {})) if isinstance(b, dict) else {}
                # The release download URL, PyPI and npm: dist/ as it will be published.
                build_args["UPDATE_LOCK_RELEASES"] = url + "files"
                inject = {"PIP_INDEX_URL": url + "simple/", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                          "npm_config_registry": url, "npm_config_update_notifier": "false"}
                print(f"==> {name} ({folder.name}/) for {arch}", flush=True)
                mounts = Mounts()
                scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"example-{folder.name}-", dir=WORK))
                lockdir = pathlib.Path(tempfile.mkdtemp(prefix="balena-locks-"))
                lockdir.chmod(0o1777)  # as the Supervisor leaves the service's lock directory
                start = time.monotonic()
                try:
                    built = build(df, deb_arch, build_args, inject, scratch, mounts)
                    built_in = time.monotonic() - start
                    # A command wrapped by `lockctl run` holds the lock for its whole run.
                    summary = run_app(built, lockdir, mounts, job=built.command[:2] == ["lockctl", "run"])
                    report.append(f"ok      {folder.name} {arch}: built in {built_in:.0f} s in a debootstrap {SUITE} root"
                                  f"{' (qemu-user)' if deb_arch != host_deb_arch() else ''}; {summary}")
                except (CheckError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                    report.append(f"not ok  {folder.name} {arch}: {e}")
                finally:
                    mounts.undo()
                    shutil.rmtree(scratch, ignore_errors=True)
                    shutil.rmtree(lockdir, ignore_errors=True)
                print(report[-1], flush=True)
    finally:
        server.terminate()
        server.wait()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parse-only", action="store_true", help="only the checks that need no root and no dist/")
    parser.add_argument("--dist", type=pathlib.Path, help="the built artefacts (dist/) to install in the examples")
    parser.add_argument("--arch", default="amd64,aarch64,armv7hf", help="balena architectures to build and run for (amd64, aarch64, armv7hf)")
    parser.add_argument("--service", action="append", help="only these services of docker-compose.yml")
    opts = parser.parse_args()
    try:
        report = self_test() + check_static()
    except CheckError as e:
        print(f"not ok  {e}")
        return 1
    print("\n".join(report), flush=True)
    if opts.parse_only or opts.dist is None:
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    results = check_builds(opts.dist.resolve(), opts.arch.split(","), opts.service)
    return 0 if results and all(r.startswith("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
