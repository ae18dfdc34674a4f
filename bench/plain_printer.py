"""The printer of `stepflow exec --plain` alone: the events of a command printing marker steps,
recorded once from an engine in this process, fed to ProgressPrinter (plain lines, not a terminal:
what `exec --plain > file` prints) as `follow_execution` feeds them; CPU per marker pair.

    .venv/bin/python bench/plain_printer.py [--pairs 20000] [--fail-every 0] [--runs 5] [--verbose]
                                            [--terminal] [--baseline /work/wt/base3]

`--baseline DIR`: the same recorded events fed to DIR's printer too (another tree: main's), in
processes of their own, interleaved; and whether the two printed the same bytes. `--fail-every K`:
every K-th step fails (STEP_ERROR), so that failed tails and the summary's lines are compared too.
`--verbose`: `exec --plain -v` (the command's lines too); `--terminal`: `--plain` on a terminal (rich
lays the lines out, in colour).

Measured (issue 16, goal 4; load ~2.8 on the 2 shared cores; main 360cfbb beside): 20,000 pairs
5.99 µs a pair → 2.71 µs (0.45x), every 100th failing 6.13 → 2.87 µs (0.47x), the same bytes; the
classes of events dispatched by a dictionary instead of a `match`, the burst's loop in
ProgressPrinter.show, `StepKind.BRANCH` and the like (an Enum's member through its class: ~0.1 µs
on Python 3.11) as module names, durations' texts kept. `--terminal`: 120 → 95 µs a pair (rich).
Through `exec --plain` (100,000 pairs, /work/wt/thr.py, interleaved with main, 3 runs each): the
event loop's CPU 3.83/3.89/3.51 s → 3.37/3.46/3.13 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def producer(n: int, fail_every: int) -> str:
    """bench/markers.py's command (n pairs, a line of output in each); every `fail_every`-th step
    fails instead of completing."""
    end = (f"if ({fail_every} > 0 && i % {fail_every} == {fail_every} - 1) print \"STEP_ERROR:boom \" i; "
           "else print \"STEP_COMPLETE:s\" i")
    return (f"awk 'BEGIN{{for(i=0;i<{n};i++){{print \"STEP_START:s\" i; print \"line \" i; {end}}}}}'")


def record(n: int, fail_every: int, path: Path) -> None:
    """Run the command in an engine of this process; pickle (execution, steps, events) to `path`."""
    sys.path.insert(0, str(ROOT))
    from engine.events import ExecutionFinished
    from engine.model import ExecutionKind
    from engine.submission import SubmitRequest
    from stepflow.wiring import running_engine

    async def run(data: Path) -> tuple[object, object, list[object]]:
        async with running_engine(data) as engine:
            subscription = engine.subscribe(maxsize=100 * n + 1_000)  # none dropped
            execution = await engine.submit(SubmitRequest(
                kind=ExecutionKind.COMMAND, source="bench", command=producer(n, fail_every), targets=["local"]))
            steps = await engine.get_steps(execution.id)
            events = []
            try:
                async for event in subscription:
                    if event.execution_id == execution.id:
                        events.append(event)
                        if isinstance(event, ExecutionFinished):
                            break
            finally:
                subscription.close()
            return execution, steps, events

    with tempfile.TemporaryDirectory() as tmp:
        recorded = asyncio.run(run(Path(tmp)))
    with path.open("wb") as f:
        pickle.dump(recorded, f, protocol=pickle.HIGHEST_PROTOCOL)


class Queued:
    """The recorded events as a subscription gives them (engine.hub.Subscriber's `get_nowait`), in
    bursts of BURST: what follow_execution takes at once."""

    BURST = 256

    def __init__(self, events: list[object]) -> None:
        self._events = events
        self._at = 0
        self._items: collections.deque[object] = collections.deque()

    def more(self) -> bool:
        self._items.extend(self._events[self._at:self._at + self.BURST])
        self._at += self.BURST
        return bool(self._items)

    def get_nowait(self) -> object | None:
        if self._items:
            return self._items.popleft()
        return None


def follow_before_show(printer, execution_id: str, queued: Queued) -> bool:  # noqa: ANN001
    """follow_execution's loop over a burst before ProgressPrinter.show (a baseline's printer)."""
    from engine.events import ExecutionFinished

    event = queued.get_nowait()
    while event is not None:
        if event.execution_id == execution_id:  # type: ignore[attr-defined]
            printer.handle(event)
            if isinstance(event, ExecutionFinished):
                return True
        event = queued.get_nowait()
    return False


def replay(path: Path, runs: int, out: Path | None, verbose: bool = False, terminal: bool = False) -> list[float]:
    """CPU seconds of each run of the printer over the recorded events (this process's tree's
    printer); the text printed by the first goes to `out`."""
    from engine.events import ExecutionFinished
    from stepflow_tui.cli import output

    with path.open("rb") as f:
        execution, steps, events = pickle.load(f)
    final = next(e.execution for e in reversed(events) if isinstance(e, ExecutionFinished))
    times = []
    for run in range(runs):
        buffer = io.StringIO()
        console = output.CliConsole(file=buffer, highlight=False, force_terminal=terminal or None,
                                    color_system="truecolor" if terminal else None, width=100)
        printer = output.ProgressPrinter(execution, list(steps), console=console, live=False, verbose=verbose)
        queued = Queued(events)
        started = time.process_time()
        with printer:
            # as follow_execution's loop: bursts of queued events, flushed after each
            while queued.more():
                if hasattr(printer, "show"):
                    if printer.show(queued.get_nowait(), queued.get_nowait):
                        break
                elif follow_before_show(printer, execution.id, queued):
                    break
                printer.flush()
        times.append(time.process_time() - started)
        printer.summary(final)
        if run == 0 and out is not None:
            out.write_text(buffer.getvalue())
    return times


def replay_in(tree: Path, path: Path, runs: int, out: Path, how: str) -> list[float]:
    """`replay` in a process of its own with `tree`'s packages (its own .venv if it has one)."""
    python = tree / ".venv" / "bin" / "python"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "import plain_printer as b; from pathlib import Path; "
            "print(*b.replay(Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), 'v' in sys.argv[6], 't' in sys.argv[6]))")
    result = subprocess.run(
        [str(python if python.exists() else sys.executable), "-c", code, str(tree), str(ROOT / "bench"),
         str(path), str(runs), str(out), how],
        cwd=tree, env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"replay in {tree} failed: {result.stderr[-2000:]}")
    return [float(x) for x in result.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="the printer of `exec --plain -v` (lines too)")
    parser.add_argument("--terminal", action="store_true",
                        help="`exec --plain` on a terminal: the lines laid out by rich, in colour")
    parser.add_argument("--baseline", type=Path, help="another tree whose printer runs beside this one's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.pickle"
        record(args.pairs, args.fail_every, events)
        trees = [("this tree", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
        best = {name: float("inf") for name, _tree in trees}
        texts: dict[str, bytes] = {}
        for _round in range(args.runs):  # interleaved: the machine's load falls on both alike
            for name, tree in trees:
                out = Path(tmp) / f"{name}.txt"
                times = replay_in(tree, events, 3, out, "-" + "v" * args.verbose + "t" * args.terminal)
                best[name] = min(best[name], *times)
                texts[name] = out.read_bytes()
        n = args.pairs
        for name, tree in trees:
            print(f"{name:10} ({tree}): best of {args.runs}x3 {best[name]:.3f} s CPU, "
                  f"{best[name] / n * 1e6:.2f} µs a marker pair ({n:,} pairs, every "
                  f"{args.fail_every or 'no'} failing), {len(texts[name]):,} bytes printed")
        if args.baseline:
            same = texts["this tree"] == texts["baseline"]
            print(f"same bytes printed: {'yes' if same else 'NO'}; "
                  f"CPU {best['this tree'] / best['baseline']:.2f}x the baseline's")


if __name__ == "__main__":
    main()
