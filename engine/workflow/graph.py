"""What a schema cannot check: the references between a workflow's parts. Step names are unique;
`needs` name other steps and form no cycle (the steps make a DAG); `runs_on` names known targets.
And the order the DAG lets the steps run in."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from engine.workflow.issues import Loc, did_you_mean
from engine.workflow.model import LOCAL, Workflow
from engine.workflow.schema import TARGET_MODELS
from engine.workflow.yaml_reader import Reader


def topological_order(workflow: Workflow) -> list[str]:
    """Step names, each after every step it needs; among steps free to go, file order first."""
    index = {step.name: i for i, step in enumerate(workflow.steps)}
    waiting_on = {step.name: {n for n in step.needs if n in index} for step in workflow.steps}
    dependents: dict[str, list[str]] = {name: [] for name in index}
    for name, needs in waiting_on.items():
        for need in needs:
            dependents[need].append(name)
    ready = [index[name] for name, needs in waiting_on.items() if not needs]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = workflow.steps[heapq.heappop(ready)].name
        order.append(name)
        for dependent in dependents[name]:
            waiting_on[dependent].discard(name)
            if not waiting_on[dependent]:
                heapq.heappush(ready, index[dependent])
    if len(order) < len(index):
        stuck = [name for name in index if name not in order]
        raise ValueError(f"the needs of these steps form a cycle: {', '.join(stuck)}")
    return order


def check_references(raw: dict[str, Any], reader: Reader, known_targets: Collection[str]) -> None:
    """Step names, needs, cycles and target names, on the values as read (valid or not), so that
    these mistakes are reported together with the schema's."""
    steps: list[Any] = raw["steps"] if isinstance(raw.get("steps"), list) else []
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        name = step.get("name") if isinstance(step, dict) else None
        if not isinstance(name, str) or not name.strip():
            continue
        if name in index:
            first = reader.line(("steps", index[name], "name"))
            reader.issue(
                reader.mark(("steps", i, "name")),
                ("steps", i, "name"),
                f"duplicate step name '{name}' (first on line {first})",
            )
        else:
            index[name] = i

    # needs: name -> [(needed name, where it is written)]
    needs: dict[str, list[tuple[str, Loc]]] = {name: [] for name in index}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        own = step.get("name")
        for need, loc in _strings(step.get("needs"), ("steps", i, "needs")):
            if need == own:
                reader.issue(reader.mark(loc), ("steps", i, "needs"), f"step '{own}' needs itself")
            elif need not in index:
                hint = did_you_mean(need, index)
                reader.issue(reader.mark(loc), ("steps", i, "needs"), f"unknown step '{need}'{hint}")
            elif isinstance(own, str) and index.get(own) == i:
                needs[own].append((need, loc))
    _check_cycles(needs, index, reader)

    targets: dict[str, Any] = raw["targets"] if isinstance(raw.get("targets"), dict) else {}
    local = targets.get(LOCAL)
    if isinstance(local, dict) and local.get("type") in TARGET_MODELS and local.get("type") != "local":
        reader.issue(
            reader.mark(("targets", LOCAL), key=True),
            ("targets",),
            f"'{LOCAL}' is the built-in local target; give this {local['type']} target another name",
        )
    known = {LOCAL, *targets, *known_targets}
    holders: list[tuple[Loc, Any]] = [((), raw), *((("steps", i), step) for i, step in enumerate(steps))]
    for holder, values in holders:
        if not isinstance(values, dict):
            continue
        where: Loc = (*holder, "runs_on")
        for target, loc in _strings(values.get("runs_on"), where):
            if target not in known:
                reader.issue(
                    reader.mark(loc), where, f"unknown target '{target}'{did_you_mean(target, known)}"
                )


def _strings(value: Any, loc: Loc) -> list[tuple[str, Loc]]:
    """The names in a "string or list of strings" value, with where each is."""
    if isinstance(value, str):
        return [(value, loc)] if value.strip() else []
    if isinstance(value, list):
        return [(item, (*loc, i)) for i, item in enumerate(value) if isinstance(item, str) and item.strip()]
    return []


def _has_cycle(needs: Mapping[str, list[tuple[str, Loc]]], needed_by: Mapping[str, set[str]]) -> bool:
    """Whether some steps need one another: Kahn's algorithm cannot order them all."""
    waiting = {name: len({need for need, _ in edges}) for name, edges in needs.items()}
    ready = [name for name, count in waiting.items() if not count]
    ordered = 0
    while ready:
        name = ready.pop()
        ordered += 1
        for dependent in needed_by[name]:
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
    return ordered < len(needs)


def _check_cycles(needs: dict[str, list[tuple[str, Loc]]], index: dict[str, int], reader: Reader) -> None:
    """One message per group of steps that need one another (a strongly connected component),
    showing the shortest cycle through the group's first step in the file."""
    needed_by: dict[str, set[str]] = {name: set() for name in needs}
    for name, edges in needs.items():
        for need, _ in edges:
            needed_by[need].add(name)
    if not _has_cycle(needs, needed_by):
        return  # the usual case, found in linear time (the search below is quadratic on a chain)

    def reachable(start: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(edges[name])
        return seen

    successors = {name: [need for need, _ in edges] for name, edges in needs.items()}
    reported: set[str] = set()
    for start in sorted(needs, key=index.__getitem__):
        if start in reported:
            continue
        ahead = reachable(start, successors)
        if start not in ahead:
            continue
        group = (ahead & reachable(start, needed_by)) | {start}
        reported |= group
        # shortest way back to `start`, breadth first, inside the group
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following: list[str] = []
            for name in frontier:
                for need in successors[name]:
                    if need in group and need not in came_from:
                        came_from[need] = name
                        following.append(need)
            frontier = following
        cycle = [start]
        while len(cycle) == 1 or cycle[-1] != start:
            cycle.append(came_from[cycle[-1]])
        cycle.reverse()
        loc = next(loc for need, loc in needs[start] if need == cycle[1])
        reader.issue(reader.mark(loc), ("steps", index[start], "needs"), f"cycle: {' -> '.join(cycle)}")
