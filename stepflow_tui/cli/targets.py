"""`stepflow targets list` and `stepflow targets test NAME`: the targets of the user's targets file
(and the built-in `local`), and whether one answers."""

from __future__ import annotations

import argparse
import asyncio
import sys

from engine.runners.probe import describe_where, probe_target
from engine.targets_file import load_user_targets, user_targets_path
from engine.workflow.load import LOCAL, LocalTarget, Target, WorkflowError
from stepflow_tui import formatting

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run_targets(args: argparse.Namespace) -> int:
    action = getattr(args, "targets_command", None)
    if action not in ("list", "test"):
        print("usage: stepflow targets list | stepflow targets test NAME", file=sys.stderr)
        return EXIT_USAGE
    path = user_targets_path()
    try:
        targets = load_user_targets(path)
    except WorkflowError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if action == "list":
        return _list(targets, str(path), exists=path.exists())
    return _test(targets, args.name)


def _known(targets: dict[str, Target], source: str) -> list[tuple[str, Target, str]]:
    rows: list[tuple[str, Target, str]] = [(LOCAL, LocalTarget(), "built-in")]
    rows += [(name, target, source) for name, target in targets.items() if name != LOCAL]
    return rows


def _list(targets: dict[str, Target], source: str, *, exists: bool) -> int:
    rows = [("NAME", "TYPE", "WHERE", "SOURCE")]
    rows += [(name, target.type, describe_where(target), src) for name, target, src in _known(targets, source)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    if not exists:
        print(f"(no targets file at {source}; workflows can still define their own targets)", file=sys.stderr)
    return EXIT_OK


def _test(targets: dict[str, Target], name: str) -> int:
    known = {row[0]: row[1] for row in _known(targets, "")}
    target = known.get(name)
    if target is None:
        print(f"stepflow: unknown target {name!r} (known: {', '.join(sorted(known))})", file=sys.stderr)
        return EXIT_USAGE
    probe = asyncio.run(probe_target(target))
    verdict = "ok" if probe.ok else "FAILED"
    print(f"{name}: {verdict}: {probe.message} ({formatting.duration(probe.seconds)})")
    return EXIT_OK if probe.ok else EXIT_FAILED
