"""Pure functions over a task graph given as ``{task_id: parent_ids}``.

Validation (unknown dependency, cycle), topological order, children,
descendants and critical-path priorities. Linear in tasks + edges, so 20,000
tasks take milliseconds.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

from hpcorch.errors import WorkflowError

__all__ = [
    "Parents",
    "children_of",
    "critical_path",
    "descendants",
    "find_cycle",
    "priorities",
    "topological_order",
    "validate",
]

Parents = Mapping[str, Sequence[str]]


def validate(parents: Parents) -> None:
    """Raise :class:`WorkflowError` for an unknown dependency or a cycle."""
    for task_id, deps in parents.items():
        for dep in deps:
            if dep not in parents:
                close = difflib.get_close_matches(dep, list(parents), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise WorkflowError(f"task {task_id!r} depends on unknown task {dep!r}{hint}")
            if dep == task_id:
                raise WorkflowError(f"task {task_id!r} depends on itself: {task_id} -> {task_id}")
    topological_order(parents)


def children_of(parents: Parents) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {t: [] for t in parents}
    for task_id, deps in parents.items():
        for dep in deps:
            children[dep].append(task_id)
    return children


def topological_order(parents: Parents) -> list[str]:
    """Parents before children (Kahn); stable with respect to the input order."""
    indegree = {t: len(set(deps)) for t, deps in parents.items()}
    children = children_of(parents)
    ready = [t for t, n in indegree.items() if n == 0]
    order: list[str] = []
    i = 0
    while i < len(ready):
        task_id = ready[i]
        i += 1
        order.append(task_id)
        for child in dict.fromkeys(children[task_id]):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(parents):
        done = set(order)
        cycle = find_cycle({t: d for t, d in parents.items() if t not in done})
        raise WorkflowError(f"the workflow has a cycle: {' -> '.join(cycle)}")
    return order


def find_cycle(parents: Parents) -> list[str]:
    """One cycle as a path that ends where it starts, or [] when there is none."""
    # Iterative DFS along parent edges; the path is reversed to read in run order.
    state: dict[str, int] = {}  # 1 on the stack, 2 finished
    for root in parents:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            deps = [d for d in parents.get(node, ()) if d in parents]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                nxt = deps[i]
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    return cycle[::-1]
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return []


def descendants(children: Mapping[str, Sequence[str]], roots: Iterable[str]) -> set[str]:
    """Every task reachable from ``roots`` (roots excluded unless reachable)."""
    seen: set[str] = set()
    todo = [c for r in roots for c in children.get(r, ())]
    while todo:
        task_id = todo.pop()
        if task_id not in seen:
            seen.add(task_id)
            todo.extend(children.get(task_id, ()))
    return seen


def critical_path(parents: Parents, estimate: Mapping[str, float]) -> dict[str, float]:
    """Longest remaining path (own estimate included) from each task to a sink."""
    children = children_of(parents)
    rank: dict[str, float] = {}
    for task_id in reversed(topological_order(parents)):
        below = max((rank[c] for c in children[task_id]), default=0.0)
        rank[task_id] = estimate.get(task_id, 1.0) + below
    return rank


def priorities(
    parents: Parents, estimate: Mapping[str, float], user: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Dense integer priorities, higher runs first: user priority, then critical path."""
    rank = critical_path(parents, estimate)
    user = user or {}
    ordered = sorted(parents, key=lambda t: (user.get(t, 0), rank[t]))
    result: dict[str, int] = {}
    level = 0
    previous: tuple[int, float] | None = None
    for task_id in ordered:
        key = (user.get(task_id, 0), rank[task_id])
        if key != previous:
            level += 1
            previous = key
        result[task_id] = level
    return result
