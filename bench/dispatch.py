"""Dispatch overhead: a workflow of N sequential `true` steps vs a bash loop running /bin/true N times.

    .venv/bin/python bench/dispatch.py [--steps 500] [--runs 3]

The workflow's time runs from `submit` (parsing the YAML included) to the end of `wait`.
Besides wall time it prints the engine's CPU time (`time.process_time()`: this process, all its
threads, not the commands), which others' load on a shared machine disturbs much less.

The engine first runs a workflow of one step, timed apart ("first workflow"): the first workflow an
engine reads imports the workflow schema (pydantic, ~0.2 s of CPU here), a one-off that counted
~0.4 ms a step of 500 in the figure per step before.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.model import ExecutionKind  # noqa: E402
from engine.submission import SubmitRequest  # noqa: E402
from stepflow.wiring import EngineOptions, start_engine  # noqa: E402


def workflow_text(n: int) -> str:
    lines = ["name: dispatch", "steps:"]
    for i in range(n):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  - {{name: s{i}, run: /bin/true{needs}}}")
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class EngineTimes:
    #: wall seconds from submitting to the end of `wait`, and of that the submission alone
    wall: float
    submit_wall: float
    #: CPU seconds of the one-step workflow run first (its imports)
    first_cpu: float
    #: CPU seconds of this process over the same spans
    cpu: float
    submit_cpu: float


async def run_engine(n: int, data: Path) -> EngineTimes:
    # built as `stepflow run` builds it (the composition root's GC tuning included)
    engine = await start_engine(data, EngineOptions(targets={}))
    text = workflow_text(n)
    try:
        cpu_first = time.process_time()
        first = await engine.submit(SubmitRequest(kind=ExecutionKind.WORKFLOW, workflow_path="first.yaml",
                                                  workflow_text=workflow_text(1)))
        assert (await engine.wait(first.id)).status.value == "completed"
        first_cpu = time.process_time() - cpu_first
        started, cpu_started = time.perf_counter(), time.process_time()
        ex = await engine.submit(SubmitRequest(kind=ExecutionKind.WORKFLOW, workflow_path="dispatch.yaml",
                                               workflow_text=text))
        submitted, cpu_submitted = time.perf_counter(), time.process_time()
        done = await engine.wait(ex.id)
        ended, cpu_ended = time.perf_counter(), time.process_time()
        assert done.status.value == "completed", done.error_message
        return EngineTimes(ended - started, submitted - started, first_cpu, cpu_ended - cpu_started,
                           cpu_submitted - cpu_started)
    finally:
        await engine.shutdown()


def run_once(n: int) -> float:
    """One round: the baselines, then the engine; prints them, returns the overhead in ms/step."""
    started = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do bash -c /bin/true; done"], check=True)
    loop_bash_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(run_engine(n, Path(tmp)))
    engine_s = times.wall
    overhead = (engine_s - loop_s) / n * 1000
    print(f"steps: {n}")
    print(f"bash loop of /bin/true          : {loop_s:7.3f} s  {loop_s / n * 1000:6.2f} ms/step")
    print(f"bash loop of bash -c /bin/true  : {loop_bash_s:7.3f} s  {loop_bash_s / n * 1000:6.2f} ms/step")
    print(f"stepflow workflow (in-process)  : {engine_s:7.3f} s  {engine_s / n * 1000:6.2f} ms/step")
    print(f"  of which submitting (parse...): {times.submit_wall:7.3f} s  {times.submit_wall / n * 1000:6.2f} ms/step")
    print(f"engine CPU (this process)       : {times.cpu:7.3f} s  {times.cpu / n * 1000:6.2f} ms/step"
          f"  (submitting {times.submit_cpu / n * 1000:.2f})")
    print(f"overhead over the /bin/true loop: {overhead:6.2f} ms/step")
    print(f"first workflow (1 step, apart)  : CPU {times.first_cpu:.3f} s (its imports)")
    return overhead


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=1, help="rounds, each with its own baseline")
    args = parser.parse_args()
    overheads = [run_once(args.steps) for _ in range(args.runs)]
    if len(overheads) > 1:
        print(f"overhead over {len(overheads)} runs: median {statistics.median(overheads):.2f}, "
              f"min {min(overheads):.2f}, max {max(overheads):.2f} ms/step")


if __name__ == "__main__":
    main()
