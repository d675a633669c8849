#!/usr/bin/env python3
"""One version everywhere: the workspace's (Cargo.toml) is the version of every crate, of the
Python package (maturin reads it from its crate), of the npm package and of the C library.
Exits 1, naming each disagreeing file, when they differ. Run by the test command."""
import json
import pathlib
import re
import sys

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = cargo["workspace"]["package"]["version"]
    problems = []
    for crate in ["core", "cli", "rehearse", "bindings-python", "bindings-node", "bindings-c"]:
        pkg = tomllib.loads((ROOT / crate / "Cargo.toml").read_text())["package"]
        if pkg.get("version") != {"workspace": True}:
            problems.append(f"{crate}/Cargo.toml: version must be `version.workspace = true`")
    pyproject = tomllib.loads((ROOT / "bindings-python" / "pyproject.toml").read_text())
    if "version" not in pyproject["project"].get("dynamic", []):
        problems.append("bindings-python/pyproject.toml: the version must be dynamic (from the crate)")
    npm = json.loads((ROOT / "bindings-node" / "package.json").read_text())
    if npm["version"] != version:
        problems.append(f"bindings-node/package.json: {npm['version']} (Cargo.toml: {version})")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    # The newest numbered section is the version being built (changes since go under
    # "Unreleased" above it until the version is raised).
    released = re.findall(r"^## (\d+\.\d+\.\d+)", changelog, re.M)
    if not released or released[0] != version:
        problems.append(f"CHANGELOG.md: newest version section {released[:1]} (Cargo.toml: {version})")
    for p in problems:
        print(p)
    print(f"version {version}: " + ("consistent" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
