#!/usr/bin/env python3
"""Checks that every `crate::X` path in src/ points to a module of the same or a lower layer.

The layers are read from the table in docs/ARCHITECTURE.md, so the document and the code
cannot drift: a new top-level module must be given a layer there. Loops inside one layer are
left to module-cycles.py.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
table = (root / "docs" / "ARCHITECTURE.md").read_text()
layer = {}
for num, mods in re.findall(r"^\| (\d) \| (.+) \|$", table, re.M):
    for m in re.findall(r"`([a-z_]+)`", mods):
        layer[m] = int(num)
if not layer:
    sys.exit("docs/ARCHITECTURE.md: no layer table found")

src = root / "src"
problems = []
for path in sorted(src.rglob("*.rs")):
    rel = path.relative_to(src)
    top = rel.parts[0].removesuffix(".rs")
    if top in ("main", "lib"):
        continue
    if top not in layer:
        problems.append(f"src/{rel}: module `{top}` has no layer in docs/ARCHITECTURE.md")
        continue
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//", 1)[0]
        for target in re.findall(r"crate::([a-z_]+)", code):
            if target == top or target not in layer:
                continue
            if layer[target] > layer[top]:
                problems.append(
                    f"src/{rel}:{n}: `{top}` (layer {layer[top]}) imports "
                    f"`{target}` (layer {layer[target]})"
                )
for p in problems:
    print(p)
print(f"{len(layer)} modules in {max(layer.values())} layers, {len(problems)} upward imports")
sys.exit(1 if problems else 0)
