#!/usr/bin/env python3
"""Import cycles between the modules (files) of each Rust crate of the workspace.

A module is one file under `src/` (`a/mod.rs` and `a.rs` are module `a`; `a/b.rs` is `a::b`).
An edge a -> b is a `crate::b...` path in a (a `use`, or a path in code). A cycle is a strongly
connected component of more than one module. Prints them; exits 1 when there is any, so the
test command keeps the house free of them. `--count` prints only the number.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["core", "cli", "bindings-c", "bindings-node", "bindings-python", "rehearse"]
PATH_RE = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)


def module_of(src: pathlib.Path, f: pathlib.Path) -> str:
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def resolve(modules: set, path: list) -> str | None:
    # The longest prefix of the path that names a module.
    for n in range(len(path), 0, -1):
        m = "::".join(path[:n])
        if m in modules:
            return m
    return None


def crate_graph(src: pathlib.Path) -> dict:
    files = sorted(src.rglob("*.rs"))
    mods = {module_of(src, f): f for f in files}
    modules = set(mods)
    graph = {m: set() for m in modules}
    for m, f in mods.items():
        text = strip_comments(f.read_text())
        # #[cfg(test)] blocks count too: a test that reaches back is still a cycle.
        paths = [p.split("::")[1:] for p in PATH_RE.findall(text)]
        for group in USE_GROUP_RE.findall(text):
            for item in re.split(r",\s*", group):
                head = re.match(r"\s*([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", item)
                if head:
                    paths.append(head.group(1).split("::"))
        # `super::x` in a submodule `a::b` names the sibling `a::x`.
        parent = m.split("::")[:-1]
        if parent:
            for p in re.findall(r"\bsuper((?:::[a-z_][a-z0-9_]*)+)", text):
                paths.append(parent + p.split("::")[1:])
        for p in paths:
            target = resolve(modules, p)
            if target and target != m and not m.startswith(target + "::") and not target.startswith(m + "::"):
                graph[m].add(target)
    return graph


def sccs(graph: dict) -> list:
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = []
    for crate in CRATES:
        src = ROOT / crate / "src"
        if src.is_dir():
            for comp in sccs(crate_graph(src)):
                found.append((crate, comp))
    if "--count" in sys.argv:
        print(len(found))
    else:
        for crate, comp in found:
            print(f"{crate}: cycle among {', '.join(comp)}")
        print(f"{len(found)} import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
