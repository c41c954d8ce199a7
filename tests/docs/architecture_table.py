#!/usr/bin/python3
"""docs/ARCHITECTURE.md's module table against the CMake link graph, and the house rules.

    /usr/bin/python3 tests/docs/architecture_table.py          check (ctest `architecture_table`)
    /usr/bin/python3 tests/docs/architecture_table.py --write  rewrite the "depends on" column

A module is a folder of src/ (its CMake targets: bulwark_<folder>, bulwark_<folder>_*, and for cli
the executable `bulwark`); it depends on the modules whose targets its targets name in
target_link_libraries. The check: one table row per module and none for anything else, each row's
"depends on" exactly that module's dependencies (in the reverse of CMakeLists.txt's add_subdirectory
order: highest layer first),
and no cycle. --write fills the column from the graph; the "what it holds" column stays by hand.
The house rules (issue 33): no file in src/ over 600 lines; child processes are started in one
place, core/subprocess (no fork(), exec or posix_spawn call elsewhere in src/).
"""
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "ARCHITECTURE.md")
ROW = re.compile(r"^\| `(\w+)` \| (.*) \| ([^|]*) \|$")


def statements(text, command):
    """The argument lists of every `command(...)` in a CMake file (comments dropped, lines joined)."""
    text = re.sub(r"#[^\n]*", "", text)
    out = []
    for m in re.finditer(r"\b" + command + r"\s*\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1].split())
    return out


def link_graph():
    """(modules in add_subdirectory order, {module: set of modules it links})."""
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        order = [a[0].split("/")[1] for a in statements(f.read(), "add_subdirectory") if a[0].startswith("src/")]
    target_module = {"bulwark": "cli"}
    links = {}
    for module in order:
        with open(os.path.join(REPO, "src", module, "CMakeLists.txt")) as f:
            text = f.read()
        for args in statements(text, "add_library") + statements(text, "add_executable"):
            target_module[args[0]] = module
        for args in statements(text, "target_link_libraries"):
            links.setdefault(args[0], set()).update(a for a in args[1:] if a.startswith("bulwark_"))
    deps = {m: set() for m in order}
    for target, named in links.items():
        if target not in target_module:
            raise SystemExit(f"target_link_libraries({target} ...) names a target no src/ module defines")
        for other in named:
            if other not in target_module:
                raise SystemExit(f"{target} links {other}, which no src/ module defines")
            if target_module[other] != target_module[target]:
                deps[target_module[target]].add(target_module[other])
    return order, deps


def cycle(order, deps):
    state = {}

    def visit(m, path):
        if state.get(m) == 1:
            return path[path.index(m):] + [m]
        if state.get(m) == 2:
            return None
        state[m] = 1
        for d in sorted(deps[m]):
            found = visit(d, path + [m])
            if found:
                return found
        state[m] = 2
        return None

    for m in order:
        found = visit(m, [])
        if found:
            return found
    return None


MAX_LINES = 600
SPAWN = re.compile(r"\b(fork|vfork|execv|execvp|execve|posix_spawn|posix_spawnp|popen|system)\s*\(")


def house_errors():
    errors = []
    src = os.path.join(REPO, "src")
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith((".cpp", ".h")):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, REPO)
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            n = text.count("\n")
            if n > MAX_LINES:
                errors.append(f"{rel}: {n} lines, over the {MAX_LINES} a file of src/ may have: split it")
            if not rel.startswith("src/core/"):
                for i, line in enumerate(text.split("\n"), 1):
                    code = line.split("//")[0]
                    m = SPAWN.search(code)
                    if m and "std::" + m.group(1) not in code:
                        errors.append(f"{rel}:{i}: {m.group(1)}() outside core/subprocess: start children with "
                                      "bulwark::Subprocess or run_process")
    return errors


def column(order, ds):
    """Highest layer first, as the table has always listed them."""
    return ", ".join(m for m in reversed(order) if m in ds) or "—"


def main():
    write = "--write" in sys.argv[1:]
    order, deps = link_graph()
    loop = cycle(order, deps)
    errors = [f"the link graph has a cycle: {' -> '.join(loop)}"] if loop else []
    errors += house_errors()
    with open(DOC) as f:
        lines = f.read().split("\n")
    rows = {}
    for i, line in enumerate(lines):
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = i
            if m.group(1) in deps and write:
                lines[i] = f"| `{m.group(1)}` | {m.group(2)} | {column(order, deps[m.group(1)])} |"
    for module in order:
        if module not in rows:
            errors.append(f"docs/ARCHITECTURE.md has no row for module `{module}` (src/{module}/)")
    for module, i in rows.items():
        if module not in deps:
            errors.append(f"docs/ARCHITECTURE.md has a row for `{module}`, which is no module of src/")
            continue
        documented = ROW.match(lines[i]).group(3).strip()
        expected = column(order, deps[module])
        if documented != expected:
            errors.append(f"`{module}` depends on: the table says '{documented}', the CMake link lists say "
                          f"'{expected}' (run tests/docs/architecture_table.py --write)")
    if write:
        with open(DOC, "w") as f:
            f.write("\n".join(lines))
        errors = [e for e in errors if "depends on:" not in e]
    for e in errors:
        print("architecture_table: " + e, file=sys.stderr)
    if not errors:
        print(f"architecture_table: {len(order)} modules, table and link graph agree, no cycle; "
              f"no file of src/ over {MAX_LINES} lines; children started only in core/subprocess")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
