#!/usr/bin/env python3
"""berth's module graph, read from the code's own `crate::` paths.

Prints, for the files under src/ (each file one node; a `mod.rs` stands for its folder):
  - the circles: groups of files that import each other, directly or around a loop
    (strongly connected components of more than one file);
  - the imports that run up the layers (LAYERS below: a file may import from its own
    layer and those under it);
  - the longest functions (lines from `fn` to its closing brace, rustfmt-formatted code).

Usage: scripts/module-graph.py [--longest N]
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Lower layers first. A module not listed is its parent's layer; a listed submodule
# (`notify::send`) has its own.
LAYERS = [
    ["diag", "text", "redact", "shutdown", "report", "graph", "exit"],
    ["notify"],
    ["spec"],
    ["hash", "build_context"],
    ["runtime", "probe"],
    ["store", "lock"],
    ["observe", "plan", "images", "preflight", "check", "gate", "evidence", "logs", "notify::send", "diff"],
    ["migrate", "backup"],
    ["converge", "swarm"],
    ["reconcile"],
    ["status"],
    ["git"],
    ["daemon"],
    ["cli", "bin", "cmd"],
]


def layer_of(module):
    """The layer of the longest listed prefix of `module` (`a::b::c`: `a::b`, then `a`)."""
    parts = module.split("::")
    for n in range(len(parts), 0, -1):
        prefix = "::".join(parts[:n])
        for i, names in enumerate(LAYERS):
            if prefix in names:
                return i
    return None


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def files():
    for d, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def strip_tests(text):
    """The code without its `#[cfg(test)] mod tests { ... }` block, and without comments
    (a doc comment that names a module is no import)."""
    i = text.find("#[cfg(test)]\nmod tests")
    text = text if i < 0 else text[:i]
    return re.sub(r"^\s*//.*$", "", text, flags=re.M)


def edges(modules):
    known = set(modules)
    out = defaultdict(set)
    for mod, path in modules.items():
        text = strip_tests(open(path).read())
        # `use crate::{a, b::c}` groups and plain `crate::a::b` paths alike.
        refs = set()
        for m in re.finditer(r"crate::\{([^}]*)\}", text):
            for item in re.split(r",\s*", m.group(1)):
                refs.add(item.strip().split("::{")[0])
        for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
            refs.add(m.group(1))
        for r in refs:
            parts = [p for p in r.split("::") if p]
            # The longest prefix that is a module of ours.
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in known:
                    if cand != mod:
                        out[mod].add(cand)
                    break
    return out


def circles(nodes, out):
    index, low, stack, on, res = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in out.get(v, ()):
            if w not in index:
                strong(w)
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
                res.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            strong(v)
    return res


def longest(modules, n):
    found = []
    for mod, path in modules.items():
        lines = strip_tests(open(path).read()).split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)(pub(\([^)]*\))? )?(async )?fn ([a-z_0-9]+)", line)
            if not m:
                continue
            indent = m.group(1)
            # A declaration without a body (a trait's) ends with `;` before any `{`.
            k = i
            while k < len(lines) and "{" not in lines[k] and not lines[k].rstrip().endswith(";"):
                k += 1
            if k < len(lines) and "{" not in lines[k]:
                continue
            for j in range(i + 1, len(lines)):
                if lines[j] == indent + "}":
                    found.append((j - i + 1, f"{mod}::{m.group(5)}", f"{os.path.relpath(path, os.path.join(ROOT, '..'))}:{i + 1}"))
                    break
    found.sort(reverse=True)
    return found[:n]


def main():
    n = 20
    if "--longest" in sys.argv:
        n = int(sys.argv[sys.argv.index("--longest") + 1])
    modules = {module_of(p): p for p in files()}
    modules.pop("", None)
    out = edges(modules)
    cs = circles(sorted(modules), out)
    print(f"files: {len(modules)}; import edges: {sum(len(v) for v in out.values())}")
    print(f"circles: {len(cs)}")
    for c in cs:
        print("  " + " <-> ".join(c))
    up = []
    for a, bs in sorted(out.items()):
        for b in sorted(bs):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                up.append((a, b))
    print(f"imports up the layers: {len(up)}")
    for a, b in up:
        print(f"  {a} -> {b}")
    long = longest(modules, n)
    over = sum(1 for l, _, _ in longest(modules, 10000) if l > 120)
    print(f"functions over 120 lines: {over}; the longest {n}:")
    for l, name, at in long:
        print(f"  {l:4}  {name}  ({at})")


if __name__ == "__main__":
    main()
