"""Marker steps at full speed: a command printing N pairs (STEP_START:s<i> / a line / STEP_COMPLETE:s<i>)
through `stepflow exec` end to end, beside the same producer into a file, in the same run.

Prints markers/s, the steps stored (a raw sqlite3 count) and the peak RSS of the stepflow process,
sampled while it runs (so the growth shows: RSS at each quarter of the run).

    .venv/bin/python bench/markers.py [--pairs 10000 100000] [--live] [--no-compile]

`--live` runs exec under a pseudo-terminal (its live tree display) instead of plain lines.

Measured here (2 shared cores), peak RSS of stepflow, start-up alone 56-58 MB:
  before (every step kept live):  10k pairs 88 MB, 100k 290 MB (growing all run), ~7.7-8.3k markers/s;
                                  --live: 1k pairs 70 s (each redraw laid out every step), 10k > 10 min
  after (finished steps leave once stored): 10k 69 MB, 100k 81 MB, 1M 81 MB (flat from the first
                                  quarter), ~7.5-8.6k markers/s; --live: 10k pairs 8.7 s, 70 MB
  one event per run of lines, counters once per block, a step added and ended in one batch one insert
  (issue 16, load ~4 on the 2 cores, same run): 100k pairs CPU 20.9 s before, 10.9 s after
  (9.6k → 18.4k markers per CPU-second); wall 24-29 s before, 12.8-22 s after; RSS unchanged
  issue 16, second round (load 9-10 on the 2 cores, main's tree beside, same session): 100k pairs CPU
  11.5 s → 8.0 s (17.4k → 25.1k markers per CPU-second); 50k pairs interleaved main/branch, twice:
  CPU 5.4/5.8 s → 3.9/4.3 s, wall 9.0/15.0 s → 7.1/10.3 s. Wall figures swing 2x from run to run on
  that machine (the raw sqlite3 baseline: 10.1 s, then 4.6 s). Goal 50,000 markers/s not reached.
  issue 16, third round (quiet machine, load ~1, interleaved with main's tree just before): the store's
  writer thread waited for the GIL after each call into SQLite (a row each, with executemany), so it
  and the event loop took turns; a table's rows now go as one JSON statement of up to 500 rows, and an
  engine process switches threads every 1 ms: 100k pairs 5.9/6.1/6.7 s (30-34k markers/s) before,
  4.7/4.9/5.0 s (38-42.5k) after, raw sqlite3 2.2-2.3 s (87-90k) beside; peak RSS 84-85 MB.
  issue 16, third round (load 3.5-5 on the 2 cores; main's tree beside, interleaved, 100k pairs, 4 runs
  each): CPU 8.15/7.91/7.96/7.66 s → 6.03/5.96/6.33/6.16 s (~25.0k → ~32.6k markers per CPU-second);
  wall 12.3/12.7/8.8/8.7 s → 6.2/7.7/11.0/7.1 s (wall follows the machine's load: 16-23k → 18-32k
  markers/s); peak RSS 93 → 91 MB. The command's pump alone (in-process, 100k pairs): 34.6 → ~21 µs a
  pair; the store's writer thread ~2.2-2.5 s of CPU (steps upsert ~1.0 s, lines and spans ~0.6 s).
  Goal 50,000 markers/s still not reached (4 s wall would take ~35 µs of CPU a pair for everything).
  issue 16, fourth round (quiet machine, load ~1; the session's start, 360cfbb, beside, interleaved, 3 runs
  each): the store writer's rows as multi-row VALUES statements with bound parameters (JSON's
  json_each/->> cost SQLite twice the work), the rest of a batch in one statement filled up with its
  last row, its WAL checkpoints on a thread of their own, its page cache 2 MB; the event loop's marker
  steps made and closed the short way while a block's events are held, cheaper ids, events and
  parsing; the --plain printer by a table of handlers; a new database's schema from plain SQL; the
  collector's young passes every 50,000 objects:
    100k pairs: 4.17/4.34/4.53 s (44-48k markers/s) -> 2.47/2.47/2.55 s (78-81k markers/s),
                CPU 5.45-5.87 -> 2.78-2.89 s; raw sqlite3 beside 1.95-2.14 s (94-102k)
    50k pairs (100,000 marker lines): 2.27-2.30 s (43.5-44k) -> 1.28-1.38 s (72.5-78k)
    peak RSS 83-84 MB -> 56-60 MB; `exec -- true` on a new data dir 0.27-0.31 -> 0.15-0.17 s
  Goal 50,000 markers/s reached.
"""

from __future__ import annotations

import argparse
import compileall
import os
import pty
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "storage", "api_compat", "stepflow_tui")


def producer(n: int) -> str:
    """A shell command printing `n` marker pairs, each with one line of output between."""
    return (f"awk 'BEGIN{{for(i=0;i<{n};i++){{print \"STEP_START:s\" i; print \"line \" i; "
            f"print \"STEP_COMPLETE:s\" i}}}}'")


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread, until it exits."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.samples: list[tuple[float, int]] = []
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:
                return
            if rss:  # a process that exited but was not yet waited for reads 0
                self.samples.append((time.perf_counter() - self._started, rss))
            time.sleep(self._interval)

    def join(self) -> None:
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((rss for _t, rss in self.samples), default=0)

    def quarters(self) -> list[int]:
        """RSS at 25, 50, 75 and 100 % of the run (the last sample before each mark)."""
        if not self.samples:
            return []
        end = self.samples[-1][0]
        out = []
        for q in (0.25, 0.5, 0.75, 1.0):
            before = [rss for t, rss in self.samples if t <= end * q]
            out.append(before[-1] if before else 0)
        return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stepflow(data: Path, command: str, live: bool) -> tuple[float, RssSampler, int]:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    cmd = [sys.executable, "-m", "stepflow.main", "exec", "--name", "markers", "--shell", "--", command]
    if not live:
        cmd[4:4] = ["--plain"]
    started = time.perf_counter()
    if live:
        # a terminal of its own: exec draws its live tree; what it draws is read and thrown away
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.chdir(ROOT)
            os.execve(cmd[0], cmd, env)
        sampler = RssSampler(pid)
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except OSError:
                break
        _pid, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    else:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = RssSampler(proc.pid)
        _out, err = proc.communicate()
        code = proc.returncode
        if code != 0:
            sys.exit(f"stepflow exec failed ({code}): {err.decode(errors='replace')[-2000:]}")
    wall = time.perf_counter() - started
    sampler.join()
    return wall, sampler, code


def raw_sqlite(path: Path, n: int, per_transaction: int = 1_000) -> float:
    """Seconds for Python's sqlite3 alone to store what the run stores: `n` completed marker steps
    (the store's own upsert and rows, storage.rows) and their 3 lines each (one row per line), in
    transactions of `per_transaction` pairs, into a store made by SqliteStore (same schema and
    pragmas). The rows are made inside the timing, as the store must make them."""
    import asyncio

    from engine.events import ExecutionCreated
    from engine.execution.state import _marker_step_id
    from engine.model import Execution, Step, StepKind, StepStatus, utcnow
    from storage import SqliteStore
    from storage.pragmas import PRAGMAS
    from storage.rows import STEPS
    from storage.writes import INSERT_LINES, STEP_UPSERT

    execution = Execution(id=_marker_step_id(), name="raw")
    branch = Step(id=_marker_step_id(), execution_id=execution.id, name="local", kind=StepKind.BRANCH)

    async def make() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.apply([ExecutionCreated(execution, (branch,))])
        await store.close()

    asyncio.run(make())
    db = sqlite3.connect(path, isolation_level=None)
    for name, value in PRAGMAS:
        db.execute(f"PRAGMA {name}={value}")
    execution_pk = db.execute("SELECT pk FROM executions").fetchone()[0]
    started = time.perf_counter()
    seq = 0
    for first in range(0, n, per_transaction):
        now = utcnow()
        steps = [Step(id=_marker_step_id(), execution_id=execution.id, name=f"s{i}", kind=StepKind.MARKER,
                      parent_id=branch.id, index=i + 1, status=StepStatus.COMPLETED, created_at=now,
                      started_at=now, completed_at=now) for i in range(first, min(n, first + per_transaction))]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(STEP_UPSERT, [STEPS.values(step) for step in steps])
        ids = [step.id for step in steps]
        pks = dict(db.execute(f"SELECT id, pk FROM steps WHERE id IN ({','.join('?' * len(ids))})", ids))  # noqa: S608
        rows = []
        ts = now.timestamp()
        for step in steps:
            pk = pks[step.id]
            for text in (f"STEP_START:{step.name}", f"line {step.name[1:]}", f"STEP_COMPLETE:{step.name}"):
                rows.append((execution_pk, seq, pk, "stdout", ts, text))
                seq += 1
        db.executemany(INSERT_LINES, rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def mb(value: int) -> str:
    return f"{value / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--live", action="store_true", help="exec's live display, under a pseudo-terminal")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave the packages' bytecode as it is (a tree that must not be written: a baseline's)")
    args = parser.parse_args()
    if not args.no_compile:
        for package in PACKAGES:
            compileall.compile_dir(ROOT / package, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cpu_before = children_cpu()
        startup_s, startup, _ = run_stepflow(tmp_path / "startup", "true", args.live)
        startup_cpu = children_cpu() - cpu_before
        print(f"stepflow exec -- true: {startup_s:.2f} s, peak RSS {mb(startup.peak)} (start-up and shut-down alone)")
        for n in args.pairs:
            command = producer(n)
            started = time.perf_counter()
            subprocess.run(f"{command} > {tmp_path / 'out.txt'}", shell=True, check=True)
            file_s = time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run(f"{command} | cat > /dev/null", shell=True, check=True)
            cat_s = time.perf_counter() - started
            raw_s = raw_sqlite(tmp_path / f"raw-{n}.db", n)
            data = tmp_path / f"data-{n}"
            cpu_before = children_cpu()
            wall, sampler, code = run_stepflow(data, command, args.live)
            cpu = children_cpu() - cpu_before
            db = sqlite3.connect(data / "stepflow.db")
            steps = db.execute("SELECT count(*) FROM steps WHERE kind = 'marker'").fetchone()[0]
            done = db.execute("SELECT count(*) FROM steps WHERE kind = 'marker' AND status = 'completed'"
                              ).fetchone()[0]
            lines = db.execute("SELECT count(*) FROM log_lines").fetchone()[0]
            db.close()
            markers = 2 * n
            print(f"\n{n:,} pairs ({markers:,} markers, {3 * n:,} lines){' live' if args.live else ''}:")
            print(f"  producer > file      : {file_s:8.2f} s  {markers / file_s:12,.0f} markers/s")
            print(f"  producer | cat       : {cat_s:8.2f} s  {markers / cat_s:12,.0f} markers/s")
            print(f"  raw sqlite3 executemany: {raw_s:6.2f} s  {markers / raw_s:12,.0f} markers/s "
                  f"(the same steps and lines, transactions of 1,000 pairs, one thread)")
            print(f"  stepflow exec        : {wall:8.2f} s  {markers / wall:12,.0f} markers/s "
                  f"({wall / markers * 1e3:.3f} ms a marker, start-up included; exit {code})")
            print(f"  CPU of stepflow      : {cpu:8.2f} s  {markers / cpu:12,.0f} markers/CPU-s "
                  f"(the producer's included; start-up alone {startup_cpu:.2f} s)")
            print(f"  stored marker steps  : {steps:,} ({done:,} completed; every step: "
                  f"{'yes' if steps == n == done else 'NO'}), log lines {lines:,}")
            quarters = " → ".join(mb(q) for q in sampler.quarters())
            print(f"  peak RSS of stepflow : {mb(sampler.peak)} (over start-up alone: "
                  f"{mb(sampler.peak - startup.peak)}); at each quarter of the run: {quarters}")


if __name__ == "__main__":
    main()
