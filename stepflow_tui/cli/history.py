"""The read commands of the CLI: `ls`, `show` and `logs` (`-f` follows a running execution written
by another process). They read a store the composition root (`stepflow.wiring`) opens for them:
synchronous reads of the file (storage.read_only), no engine, no asyncio. They are typed at every
start, often in a loop by a script: what they import is their start-up time (a test counts it)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Protocol

from engine.model import (
    Artifact,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    Stream,
)
from engine.queue_order import is_queued, queue_places, stored_queue_now
from stepflow_tui.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from stepflow_tui.cli.json_views import artifact_json, execution_json, step_json
from stepflow_tui.formatting import fmt_clock


class ReadStore(Protocol):
    """The reads of the engine's `Store`, synchronous (storage.read_only.ReadOnlyStore)."""

    def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]: ...
    def get_execution(self, execution_id: str) -> Execution | None: ...
    def resolve_execution_id(self, prefix: str) -> list[str]: ...
    def get_steps(self, execution_id: str) -> list[Step]: ...
    def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]: ...
    def get_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = ..., after_seq: int = ...,
                      limit: int | None = ...) -> list[LogLine]: ...


#: opens the store of a data directory for reading (the composition root's `read_store`)
StoreOpener = Callable[[Path], contextlib.AbstractContextManager[ReadStore]]


def _resolve(store: ReadStore, prefix: str) -> str:
    matches = store.resolve_execution_id(prefix)
    if not matches:
        raise CliError(f"no execution with id {prefix!r} (stepflow ls lists them)", EXIT_FAILED)
    if prefix in matches:
        return prefix
    if len(matches) > 1:
        raise CliError(f"{prefix!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}", EXIT_FAILED)
    return matches[0]


def cmd_ls(args: argparse.Namespace, data_dir: Path, read_store: StoreOpener) -> int:
    status = None
    if args.status:
        try:
            status = ExecutionStatus(args.status)
        except ValueError:
            raise CliError(
                f"--status must be one of {', '.join(s.value for s in ExecutionStatus)}"
            ) from None
    with read_store(data_dir) as store:
        executions, total = store.list_executions(
            ExecutionFilter(status=status, user=args.user, text=args.filter, limit=args.limit)
        )
        # a queued one's place counts every queued execution, not only those listed
        places = queue_places(stored_queue_now(store)) if any(map(is_queued, executions)) else {}
    if args.json:
        print(json.dumps([execution_json(e) for e in executions], indent=2))
    elif not executions:
        print("no executions yet: try  stepflow run sample_workflows/build-and-test.yaml", file=sys.stderr)
    else:
        from stepflow_tui.cli import read_views as out  # rich: for the table alone, not for --json

        out.render_list(out.CliConsole(highlight=False), executions, places)
        if total > len(executions):
            print(f"({len(executions)} of {total}; --limit N shows more)", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, data_dir: Path, read_store: StoreOpener) -> int:
    with read_store(data_dir) as store:
        execution_id = _resolve(store, args.id)
        execution = store.get_execution(execution_id)
        steps = store.get_steps(execution_id)
        artifacts, _ = store.list_artifacts(ArtifactFilter(execution_id=execution_id, limit=10_000))
    assert execution is not None
    if args.json:
        print(json.dumps({
            "execution": execution_json(execution),
            "steps": [step_json(s) for s in steps],
            "artifacts": [artifact_json(a) for a in artifacts],
        }, indent=2))
    else:
        from stepflow_tui.cli import read_views as out

        out.render_show(out.CliConsole(highlight=False), execution, steps, artifacts)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, data_dir: Path, read_store: StoreOpener) -> int:
    with read_store(data_dir) as store:
        execution_id = _resolve(store, args.id)
        step_ids = None
        steps = store.get_steps(execution_id)
        if args.step:
            wanted = [s for s in steps if s.name == args.step or s.id == args.step]
            if not wanted:
                names = sorted({s.name for s in steps})
                raise CliError(f"no step {args.step!r} in {execution_id[:8]} (steps: {', '.join(names)})",
                               EXIT_FAILED)
            # a step's lines include those of the steps below it
            ids = {s.id for s in wanted}
            grew = True
            while grew:
                grew = False
                for s in steps:
                    if s.parent_id in ids and s.id not in ids:
                        ids.add(s.id)
                        grew = True
            step_ids = sorted(ids)
        # lines of several branches say their target (`[web] ...`), lines of several workflow steps
        # (which may run in parallel) their step (`[test] ...`): else they interleave with nothing to
        # tell them apart
        shown = [s for s in steps if step_ids is None or s.id in step_ids]
        several_targets = sum(1 for s in steps if s.kind is StepKind.BRANCH) > 1
        several_steps = len({s.name for s in shown if s.kind is StepKind.WORKFLOW}) > 1
        labels = _line_labels(steps, by_target=several_targets, by_step=several_steps)
        after = -1
        write = sys.stdout.write
        changes = _database_changes(data_dir) if args.follow else None
        try:
            while True:
                batch = store.get_log_lines(execution_id, step_ids=step_ids, after_seq=after, limit=10_000)
                for line in batch:
                    prefix = ""
                    if args.timestamps:
                        prefix = fmt_clock(line.timestamp) + " "
                    if (several_targets or several_steps) and line.step_id is not None:
                        if line.step_id not in labels:  # a marker step added since (-f)
                            labels = _line_labels(store.get_steps(execution_id),
                                                  by_target=several_targets, by_step=several_steps)
                            labels.setdefault(line.step_id, "")  # a step that is gone: read once
                        prefix += labels.get(line.step_id, "")
                    if line.stream is Stream.SYSTEM:
                        prefix += "[stepflow] "
                    write(prefix + line.text + "\n")
                if batch:
                    after = batch[-1].seq
                    if len(batch) == 10_000:
                        continue
                if changes is None:
                    break
                execution = store.get_execution(execution_id)
                if execution is None or execution.status.is_terminal:
                    # one last read: lines written just before the status changed
                    if not batch:
                        break
                    continue
                sys.stdout.flush()
                # another process writes: wait until the database files change (or a second passes)
                next(changes)
        finally:
            if changes is not None:
                changes.close()
    sys.stdout.flush()
    return EXIT_OK


def _line_labels(steps: list[Step], *, by_target: bool, by_step: bool) -> dict[str, str]:
    """The prefix of each step's lines: `[target] ` and/or `[workflow step] ` (a marker step's lines
    carry the workflow step they run under; a branch's own lines no step)."""
    by_id = {s.id: s for s in steps}
    labels = {}
    for step in steps:
        label = f"[{step.target}] " if by_target and step.target else ""
        if by_step:
            current: Step | None = step
            while current is not None and current.kind is not StepKind.WORKFLOW:
                current = by_id.get(current.parent_id) if current.parent_id else None
            if current is not None:
                label += f"[{current.name}] "
        labels[step.id] = label
    return labels


def _database_changes(data_dir: Path) -> Generator[object, None, None]:
    """Yields whenever the database files change, and at least once a second."""
    import watchfiles

    yield from watchfiles.watch(data_dir, debounce=50, step=20, rust_timeout=1000, yield_on_timeout=True,
                                recursive=False)
