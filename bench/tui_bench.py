"""TUI speed: a list of 10,000 executions, an execution with 1,000,000 log lines, live follow of a
command printing ~20,000 lines/s. Headless (Textual's Pilot), real SQLite store, real engine.

    .venv/bin/python bench/tui_bench.py [--executions 10000] [--lines 1000000] [--rate 20000]

Goals (issue 3): list opens in <= 1 s; the 1M-line execution shows its tail in <= 1 s without
loading all lines; during live follow a key press is answered within 100 ms; RSS < 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from textual import events  # noqa: E402

from engine.engine import Engine, EngineConfig  # noqa: E402
from engine.events import ExecutionCreated, ExecutionFinished, ExecutionStarted, LinesLogged  # noqa: E402
from engine.model import Execution, ExecutionStatus, Step, StepKind, Stream  # noqa: E402
from engine.submission import SubmitRequest  # noqa: E402
from stepflow_tui.app import StepflowApp  # noqa: E402
from stepflow_tui.bridge import EngineBridge  # noqa: E402
from stepflow_tui.screens.execution import ExecutionScreen  # noqa: E402
from stepflow_tui.widgets.execution_list import ExecutionList  # noqa: E402
from stepflow_tui.widgets.log_view import LogView  # noqa: E402
from storage import SqliteStore  # noqa: E402
from storage.paths import database_path  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


async def seed(data_dir: Path, executions: int, lines: int) -> str:
    store = SqliteStore(database_path(data_dir))
    await store.open()
    batch = []
    for i in range(executions):
        ex = Execution(id=f"ex-{i:06d}", name=f"job {i}", command=f"./job.sh {i}",
                       created_at=T0 + timedelta(seconds=i), targets=["local"])
        batch += [ExecutionCreated(ex),
                  ExecutionStarted(Execution(**{**_fields(ex), "status": ExecutionStatus.RUNNING,
                                                "started_at": ex.created_at})),
                  ExecutionFinished(Execution(**{**_fields(ex), "status": ExecutionStatus.COMPLETED,
                                                 "started_at": ex.created_at,
                                                 "completed_at": ex.created_at + timedelta(seconds=3)}))]
        if len(batch) >= 3000:
            await store.apply(batch)
            batch = []
    big = Execution(id="big", name="one million lines", created_at=T0 + timedelta(days=1), targets=["local"])
    branch = Step(id="big-branch", execution_id="big", name="local", kind=StepKind.BRANCH)
    batch.append(ExecutionCreated(big, (branch,)))
    await store.apply(batch)
    chunk = 10_000
    for start in range(0, lines, chunk):
        n = min(chunk, lines - start)
        await store.apply([LinesLogged("big", branch.id, Stream.STDOUT, start, T0,
                                       tuple(f"line {start + i} of the big log" for i in range(n)))])
    await store.close()
    return big.id


def _fields(ex: Execution) -> dict:
    return {f: getattr(ex, f) for f in ex.__dataclass_fields__}


async def until(pilot, predicate, limit: float = 30.0) -> float:
    # plain sleeps: Pilot.pause waits for the app to be idle, which a busy live view never is
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > limit:
            raise TimeoutError
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


async def bench_store(data_dir: Path, big_id: str, results: dict) -> None:
    async with Engine(SqliteStore(database_path(data_dir)), data_dir) as engine:
        app = StepflowApp(engine, sample_machine=False, watch_workflows=False)
        start = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: bool(app.screen.query(ExecutionList))
                        and app.screen.query_one(ExecutionList).loaded)
            await pilot.pause(0)  # one frame painted
            results["list_open_s"] = time.perf_counter() - start
            results["list_total"] = app.screen.query_one(ExecutionList).total
            await pilot.press("pagedown", "pagedown", "end")
            t = time.perf_counter()
            lst = app.screen.query_one(ExecutionList)
            await until(pilot, lambda: lst.current is not None and lst.cursor == lst.total - 1)
            results["list_jump_to_end_s"] = time.perf_counter() - t
            lst.cursor = 0
            await pilot.pause(0.1)
            t = time.perf_counter()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen.query(LogView))
            log = app.screen.query_one(LogView)
            await until(pilot, lambda: log.window is not None and log.window.opened
                        and log.window.line(log.total - 1) is not None)
            await pilot.pause(0)
            results["log_1M_open_tail_s"] = time.perf_counter() - t
            results["log_1M_total"] = log.total
            results["log_loaded_lines"] = log.window.loaded_lines
            t = time.perf_counter()
            await pilot.press("home")
            await until(pilot, lambda: log.window.line(0) is not None)
            results["log_jump_to_top_s"] = time.perf_counter() - t
            t = time.perf_counter()
            middle = log.total // 2
            log.scroll_to(y=middle, animate=False, force=True)
            await until(pilot, lambda: log.window.line(middle + 10) is not None)
            results["log_jump_to_middle_s"] = time.perf_counter() - t
            results["log_loaded_lines_after_jumps"] = log.window.loaded_lines
            results["rss_after_store_views_mb"] = rss_mb()


async def bench_live(data_dir: Path, rate: int, seconds: float, results: dict) -> None:
    async with Engine(SqliteStore(database_path(data_dir)), data_dir, EngineConfig(kill_grace=1)) as engine:
        app = StepflowApp(engine, sample_machine=False, watch_workflows=False)
        messages = []
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            await pilot.pause(0.2)
            per_tick = rate // 100
            script = (f"import sys,time\nn=0\nend=time.time()+{seconds}\n"
                      f"while time.time()<end:\n    sys.stdout.write(''.join(f'live line {{n+i}}\\n' for i in range({per_tick})))\n"
                      f"    sys.stdout.flush(); n+={per_tick}; time.sleep(0.01)\n")
            (data_dir / "spam.py").write_text(script)
            ex = await engine.submit(SubmitRequest(command=f"{sys.executable} {data_dir / 'spam.py'}"))
            app.open_execution(ex)
            await until(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen.query(LogView))
            log = app.screen.query_one(LogView)
            # the view is up when it has the focus (keys go to it) and follows the live lines; the
            # screen being built before that is not live follow
            await until(pilot, lambda: log.has_focus and log.window is not None and log.window.opened
                        and log.total > 0)
            latencies = []
            t_end = time.perf_counter() + seconds - 0.5
            await asyncio.sleep(0.5)
            while not latencies or time.perf_counter() < t_end:
                before = log.timestamps
                t = time.perf_counter()
                # a key as the terminal driver delivers it, without waiting for idle
                app.post_message(events.Key("t", "t"))
                await until(pilot, lambda before=before: log.timestamps != before, limit=5)
                latencies.append(time.perf_counter() - t)
                await asyncio.sleep(0.1)
            final = await engine.wait(ex.id)
            stored = await engine.count_log_lines(final.id)
            await until(pilot, lambda: log.total >= stored)
            latencies.sort()
            results["live_key_presses"] = len(latencies)
            results["live_key_latency_ms_max"] = latencies[-1] * 1000
            results["live_key_latency_ms_p90"] = latencies[int(len(latencies) * 0.9)] * 1000
            results["live_key_latency_ms_median"] = latencies[len(latencies) // 2] * 1000
            results["live_lines"] = log.total
            results["live_lines_per_s"] = log.total / seconds
            results["live_bridge_messages"] = sum(isinstance(m, EngineBridge.Changed) for m in messages)
            results["rss_after_live_mb"] = rss_mb()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        t = time.perf_counter()
        big_id = await seed(data_dir, args.executions, args.lines)
        print(f"seeded {args.executions} executions and {args.lines} lines in {time.perf_counter() - t:.1f}s",
              flush=True)
        results["rss_before_mb"] = rss_mb()
        await bench_store(data_dir, big_id, results)
    with tempfile.TemporaryDirectory() as tmp:
        await bench_live(Path(tmp), args.rate, args.seconds, results)
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000
    for key, value in results.items():
        print(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    asyncio.run(main())
