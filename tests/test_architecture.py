"""No import circle among persona_sweep's modules, counting imports inside functions (grimp,
which import-linter uses, sees those too). The layers contract in pyproject.toml lets modules of
one layer import each other; this test finds a circle anywhere.

    .venv/bin/python tests/test_architecture.py    # lists each circle and its imports
"""
from __future__ import annotations

import sys

import grimp


def import_cycles(package: str = "persona_sweep") -> list[list[str]]:
    """Each strongly connected group of modules (more than one, or one that imports itself),
    and one path through it, so the message names the imports to cut."""
    graph = grimp.build_graph(package, cache_dir=None)
    modules = sorted(graph.modules)
    imports = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in modules}
    cycles = []
    for group in strongly_connected(modules, imports):
        if len(group) > 1 or group[0] in imports[group[0]]:
            cycles.append(sorted(group))
    return cycles


def strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a deep graph)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(group)
    return groups


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "\n".join(line for group in cycles for line in cycle_edges(group))


def cycle_edges(group: list[str], package: str = "persona_sweep") -> list[str]:
    """The imports inside one group, `a -> b (line)`, to see which to cut."""
    graph = grimp.build_graph(package, cache_dir=None)
    members = set(group)
    lines = []
    for module in group:
        for imported in sorted(graph.find_modules_directly_imported_by(module) & members):
            details = graph.get_import_details(importer=module, imported=imported)
            where = ", ".join(str(d["line_number"]) for d in details)
            lines.append(f"  {module} -> {imported} (line {where})")
    return lines


if __name__ == "__main__":
    found = import_cycles()
    for number, group in enumerate(found, 1):
        print(f"cycle {number}: {len(group)} modules")
        print("\n".join(cycle_edges(group)))
    print(f"{len(found)} import cycle(s)")
    sys.exit(1 if found else 0)
