"""Dispatch overhead: a workflow of N sequential `true` steps vs a bash loop running /bin/true N times.

    .venv/bin/python bench/dispatch.py [--steps 500]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.engine import Engine, EngineConfig  # noqa: E402
from storage import SqliteStore  # noqa: E402
from storage.paths import database_path  # noqa: E402


def workflow_text(n: int) -> str:
    lines = ["name: dispatch", "steps:"]
    for i in range(n):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  - {{name: s{i}, run: /bin/true{needs}}}")
    return "\n".join(lines) + "\n"


async def run_engine(n: int, data: Path) -> float:
    engine = Engine(SqliteStore(database_path(data)), data, EngineConfig())
    await engine.start()
    try:
        started = time.perf_counter()
        ex = await engine.submit_workflow("dispatch.yaml", text=workflow_text(n))
        done = await engine.wait(ex.id)
        elapsed = time.perf_counter() - started
        assert done.status.value == "completed", done.error_message
        return elapsed
    finally:
        await engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    n = args.steps
    started = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do bash -c /bin/true; done"], check=True)
    loop_bash_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        engine_s = asyncio.run(run_engine(n, Path(tmp)))
    print(f"steps: {n}")
    print(f"bash loop of /bin/true          : {loop_s:7.3f} s  {loop_s / n * 1000:6.2f} ms/step")
    print(f"bash loop of bash -c /bin/true  : {loop_bash_s:7.3f} s  {loop_bash_s / n * 1000:6.2f} ms/step")
    print(f"stepflow workflow (in-process)  : {engine_s:7.3f} s  {engine_s / n * 1000:6.2f} ms/step")
    print(f"overhead over the /bin/true loop: {(engine_s - loop_s) / n * 1000:6.2f} ms/step")


if __name__ == "__main__":
    main()
