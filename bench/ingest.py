"""Log ingestion: a command printing N lines (a STEP_START marker every 1,000) through `stepflow exec`
into the database, end to end, beside `seq N > file` and raw sqlite3 executemany in the same run.

    .venv/bin/python bench/ingest.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "storage", "api_compat", "stepflow_tui")


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.lines
    generator = (f"awk 'BEGIN{{for(i=0;i<{n};i++){{ if(i%1000==0) print \"STEP_START:chunk-\" i; "
                 f"else print \"line \" i \" of the benchmark output\"}}}}'")
    # An installed program has its bytecode (pip compiles it; an editable install writes it at
    # the first start) unless PYTHONDONTWRITEBYTECODE is set, as on some CI machines: then every
    # start compiles the project from source (~0.25 s here). Measure the installed program.
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set; the project's bytecode was compiled beforehand")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # baseline 1: the shell writing the same count of lines to a file
        seq_s = timed(lambda: subprocess.run(f"seq {n} > {tmp_path / 'seq.txt'}", shell=True, check=True))
        # baseline 2: the generator alone, into /dev/null
        gen_s = timed(lambda: subprocess.run(f"{generator} > /dev/null", shell=True, check=True))
        # baseline 3: raw sqlite3 executemany of the same rows (WAL, synchronous=NORMAL), in batches
        db = sqlite3.connect(tmp_path / "raw.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE log_lines (execution_id TEXT, seq INTEGER, step_id TEXT, stream TEXT, "
                   "ts TEXT, text TEXT, PRIMARY KEY (execution_id, seq)) WITHOUT ROWID")

        def raw() -> None:
            batch = 10_000
            for start in range(0, n, batch):
                rows = [("e", i, "s", "stdout", "2026-01-01T00:00:00Z", f"line {i} of the benchmark output")
                        for i in range(start, min(n, start + batch))]
                with db:
                    db.executemany("INSERT INTO log_lines VALUES (?,?,?,?,?,?)", rows)

        raw_s = timed(raw)
        db.close()
        # stepflow's start-up and shut-down alone: `true` through exec, in a data dir of its own
        def stepflow(data: Path, command: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
            """Wall and CPU seconds (user + system, the command's included) of one `stepflow exec`."""
            env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
            cmd = [sys.executable, "-m", "stepflow.main", "exec", "--plain", "--name", "ingest", "--shell",
                   "--", command]
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
            return wall, cpu, proc

        startup_s, startup_cpu, _ = stepflow(tmp_path / "startup", "true")
        # stepflow, end to end: a fresh process, its own data dir
        data = tmp_path / "data"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        stepflow_s, stepflow_cpu, proc = stepflow(data, generator)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            sys.exit(f"stepflow exec failed ({proc.returncode}): {proc.stderr[-2000:]}")
        check = sqlite3.connect(data / "stepflow.db")
        stored = check.execute("SELECT count(*) FROM log_lines").fetchone()[0]
        steps = check.execute("SELECT count(*) FROM steps WHERE kind = 'marker'").fetchone()[0]
        check.close()
    print(f"lines: {n:,}")
    print(f"seq {n} > file            : {seq_s:7.3f} s  {n / seq_s:12,.0f} lines/s")
    print(f"generator > /dev/null     : {gen_s:7.3f} s  {n / gen_s:12,.0f} lines/s")
    print(f"raw sqlite3 executemany   : {raw_s:7.3f} s  {n / raw_s:12,.0f} lines/s")
    print(f"stepflow exec (end to end): {stepflow_s:7.3f} s  {n / stepflow_s:12,.0f} lines/s "
          f"(start-up included; CPU {stepflow_cpu:.2f} s, the generator's included)")
    print(f"stepflow exec -- true     : {startup_s:7.3f} s  (start-up and shut-down alone; CPU {startup_cpu:.2f} s)")
    print(f"stepflow exec, less that  : {stepflow_s - startup_s:7.3f} s  "
          f"{n / max(stepflow_s - startup_s, 1e-9):12,.0f} lines/s")
    print(f"stored lines: {stored:,} (every line: {'yes' if stored == n else 'NO'}), marker steps: {steps:,}")
    print(f"peak RSS of stepflow: {max(peak_kb, before) / 1024:.0f} MB")


if __name__ == "__main__":
    main()
