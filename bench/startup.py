"""Start-up of the `stepflow` command as a user runs it: installed with pip (not editable) into a venv,
bytecode compiled, on a database of 10,000 executions. Prints each command's wall-clock median (and
CPU) beside `python -c pass` measured in the same run, against the goals of issue 16:
`ls`, `show ID`, `logs ID`, `--help`, `--version` <= 120 ms and <= 10x `python -c pass`;
`exec -- true` <= 200 ms.

    .venv/bin/python bench/startup.py [--runs 15] [--executions 10000] [--baseline main]

Each variant is this source tree, as it is in the worktree (or `--baseline REF`, a git ref of this repository, built from
`git archive`: nothing is written in another worktree) built into a wheel, installed with pip into
a venv of its own, which finds the dependencies in this venv's site-packages (one `.pth` line): both
run on the same libraries. The runs of the variants interleave, so a busy machine slows them alike.

A benchmark, not a test: run it by hand, alone.

Measured here (2 shared cores, load average 2.0, 15 runs, medians, wall / CPU; python -c pass 13.8 ms),
when the read commands were made lean:
                  main (before)        this tree (after)
  ls              527 ms / 524 ms      87.5 ms / 87.1 ms   6.3x pass
  ls --json       558 ms / 556 ms      63.3 ms / 62.8 ms   4.6x
  show ID         506 ms / 504 ms     101.3 ms / 100.8 ms  7.3x
  logs ID         552 ms / 546 ms      72.3 ms / 71.8 ms   5.2x
  --help          196 ms / 195 ms      47.5 ms / 47.0 ms   3.4x
  --version       206 ms / 206 ms      51.3 ms / 50.8 ms   3.7x
  exec -- true    439 ms / 430 ms     379 ms / 374 ms      (goal 200 ms: not met)

`exec` ran the engine's store, which was SQLAlchemy's. Measured, SQLAlchemy could not stay on its
path: `import sqlalchemy` (Core) alone was 906M of the 1.78G instructions `exec -- true` took
(callgrind), ~0.2 s, the whole 200 ms budget, and its asyncio package imported the ORM (264M more).
So (as issue 16 allows when a figure shows it) the engine's store opens and does what an engine does
in plain sqlite3 (storage.connections: the schema's revision by one SELECT, Alembic only to migrate;
the lost executions' sweep, the queue, the registry, the batches' upserts from storage.upserts), and
makes SQLAlchemy's async engine only for what `serve` and the TUI ask (figures, OpsConductor's
writes); tests/test_startup_imports.py checks that `exec` imports none of it. Then: 806M instructions
(callgrind), and in one run beside main at 67baf1a (load average 3.4, 15 runs, medians, wall / CPU;
python -c pass 12.1 ms):
                  67baf1a (before)     this tree (after)
  ls               86.8 ms / 83.8 ms   88.2 ms / 83.7 ms   7.3x pass
  ls --json        64.1 ms / 63.3 ms   64.4 ms / 60.6 ms   5.3x
  show ID          96.9 ms / 93.9 ms   95.0 ms / 92.9 ms   7.8x
  logs ID          68.5 ms / 64.8 ms   68.0 ms / 65.9 ms   5.6x
  --help           47.6 ms / 45.3 ms   49.1 ms / 46.8 ms   4.0x
  --version        45.7 ms / 44.0 ms   45.8 ms / 44.4 ms   3.8x
  exec -- true    442.4 ms / 398.0 ms 199.6 ms / 167.1 ms  (goal 200 ms: met, barely on a busy machine;
                                                           another run, load 2.4: 193.3 ms against 422.8)
What is left of `exec`'s start is mostly importing the engine (~50 ms: its events, model and store
protocols, dataclasses each), rich (~13 ms) and asyncio (~20 ms).

Then what `exec` imported and never used left its path (tests/test_startup_imports.py guards it): the
executr jobs and the worker targets' pool (the engine makes them at their first use), the queue's
adoption and workflow planning, and the records and statements of OpsConductor, the work queue and
the registry (the store's methods call storage.opsconductor_sql / queue_sql / registry_sql, imported
at the first call; engine.store's protocols sit in modules of their own, its records are found there
at their first use). 814M -> 716M instructions (callgrind, -12%). Runs on a quieter machine (15 runs,
medians, wall / CPU; python -c pass 9.7-10.9 ms):
                  before               this tree (after)
  beside main at 194d9ae, load 2.2:
  exec -- true    175.7 ms / 160.1 ms  161.5 ms / 151.1 ms
  beside 67baf1a, load 1.7 and 1.4 (the read commands as before, within noise):
  exec -- true    397.4 ms / 389.4 ms  157.5 ms / 148.7 ms
                  387.6 ms / 379.0 ms  155.4 ms / 145.6 ms
  ls               77.8 ms /  77.4 ms   79.7 ms /  79.2 ms
  ls --json        57.2 ms /  56.8 ms   58.1 ms /  57.7 ms
  show ID          86.7 ms /  86.3 ms   87.9 ms /  87.3 ms
  logs ID          62.8 ms /  62.2 ms   64.2 ms /  63.8 ms
  --help           43.5 ms /  43.1 ms   43.9 ms /  43.6 ms
  --version        42.3 ms /  41.8 ms   42.9 ms /  42.5 ms
On a loaded machine (load 3-7) the walls mean little: `exec` 219-325 ms wall, 150-153 ms CPU.
What is left: the engine's dataclasses (its events, model, marker tree: most of the ~50 ms above),
rich (the plain printer prints through its Console), asyncio, psutil (~4 ms: `this_engine` needs the
process's create time), the CI dialects of engine.markers (~1 ms: its parser imports them all), and
~10 ms of waits beyond the CPU (the watchdog's and the command's spawn, SQLite's syncs at the first
commit and the last close).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the goals, in seconds of wall-clock median
READ_GOAL = 0.120
EXEC_GOAL = 0.200
#: the read commands' goal in multiples of `python -c pass`
RATIO_GOAL = 10

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Variant:
    name: str
    python: Path
    stepflow: Path
    times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def build_variant(name: str, source: Path, work: Path) -> Variant:
    """A wheel of `source`, installed (compiled) into a venv of its own under `work`."""
    wheels = work / f"wheels-{name}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, stdout=subprocess.DEVNULL)
    venv = work / f"venv-{name}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # the dependencies: this venv's (after the variant's own site-packages on sys.path)
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("stepflow-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", "--compile", str(wheel)], check=True)
    return Variant(name, python, venv / "bin" / "stepflow")


def source_of(ref: str, work: Path) -> Path:
    """The tree of git `ref` in a folder under `work` (git archive: the repository is only read)."""
    out = work / f"src-{ref.replace('/', '_')}"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


async def seed(data_dir: Path, executions: int) -> tuple[str, str]:
    """`executions` finished executions; the newest has a few steps, 2,000 log lines and an
    artifact-less tree (what `show` and `logs` read). Returns (id of it, id of an old one)."""
    from engine.events import (
        ExecutionCreated,
        ExecutionFinished,
        ExecutionStarted,
        LinesLogged,
        StepAdded,
        StepFinished,
    )
    from engine.model import Execution, ExecutionStatus, Step, StepKind, StepStatus, Stream
    from storage import SqliteStore, database_path

    def with_(ex: Execution, **changes: object) -> Execution:
        return Execution(**{**{f: getattr(ex, f) for f in ex.__dataclass_fields__}, **changes})

    store = SqliteStore(database_path(data_dir))
    await store.open()
    batch: list = []
    last = None
    for i in range(executions):
        ex = Execution(id=f"{i:08x}-bench-{i:06d}", name=f"job {i}", command=f"./job.sh {i}",
                       created_at=T0 + timedelta(seconds=i), targets=["local"])
        status = ExecutionStatus.FAILED if i % 17 == 0 else ExecutionStatus.COMPLETED
        batch += [ExecutionCreated(ex),
                  ExecutionStarted(with_(ex, status=ExecutionStatus.RUNNING, started_at=ex.created_at)),
                  ExecutionFinished(with_(ex, status=status, started_at=ex.created_at,
                                          completed_at=ex.created_at + timedelta(seconds=3),
                                          exit_code=1 if status is ExecutionStatus.FAILED else 0))]
        last = ex
        if len(batch) >= 3000:
            await store.apply(batch)
            batch = []
    await store.apply(batch)
    assert last is not None
    branch = Step(id=f"{last.id}-branch", execution_id=last.id, name="local", kind=StepKind.BRANCH)
    steps = [Step(id=f"{last.id}-s{k}", execution_id=last.id, name=f"step {k}", index=k, parent_id=branch.id,
                  kind=StepKind.MARKER, status=StepStatus.RUNNING, started_at=last.created_at) for k in range(5)]
    events: list = [StepAdded(branch)] + [StepAdded(s) for s in steps]
    for k, s in enumerate(steps):
        events.append(LinesLogged(last.id, s.id, Stream.STDOUT, k * 400, last.created_at,
                                  tuple(f"line {k * 400 + j} of {s.name}" for j in range(400))))
        events.append(StepFinished(Step(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                                           "status": StepStatus.COMPLETED,
                                           "completed_at": last.created_at + timedelta(seconds=k)})))
    await store.apply(events)
    await store.close()
    return last.id, f"{0:08x}-bench-{0:06d}"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + sys of the child, to the microsecond) seconds of one run; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--baseline", metavar="REF", help="also measure this git ref (e.g. main), interleaved")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stepflow-startup-"))
    try:
        variants = []
        if args.baseline:
            variants.append(build_variant(args.baseline, source_of(args.baseline, work), work))
        # a copy: building in place would leave build/ and *.egg-info here
        tree = work / "src-this"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"))
        variants.append(build_variant("this tree", tree, work))
        data = work / "data"
        data.mkdir()
        newest, oldest = asyncio.run(seed(data, args.executions))
        # a copy of the database each (a variant may migrate it: the baseline of a newer schema)
        envs = {}
        for variant in variants:
            own = work / f"data-{len(envs)}"
            shutil.copytree(data, own)
            envs[variant.name] = {**os.environ, "STEPFLOW_STORAGE_PATH": str(own),
                                  "STEPFLOW_TARGETS_FILE": str(work / "none.yaml")}
            envs[variant.name].pop("STEPFLOW_LOG_LEVEL", None)
        env = envs[variants[-1].name]
        commands = {
            "ls": ["ls"],
            "ls --json": ["ls", "--json"],
            "show ID": ["show", newest[:8]],
            "logs ID": ["logs", newest[:8]],
            "--help": ["--help"],
            "--version": ["--version"],
            "exec -- true": ["exec", "--plain", "--", "true"],
        }
        baseline_python = variants[-1].python
        pass_times: list[tuple[float, float]] = []
        # one warm-up of each, then the runs, interleaved (a busy machine slows all of them alike)
        for variant in variants:
            for argv in commands.values():
                timed([str(variant.stepflow), *argv], envs[variant.name])
        for _ in range(args.runs):
            pass_times.append(timed([str(baseline_python), "-c", "pass"], env))
            for variant in variants:
                for name, argv in commands.items():
                    variant.times.setdefault(name, []).append(
                        timed([str(variant.stepflow), *argv], envs[variant.name]))
        del oldest

        def med(samples: list[tuple[float, float]], i: int) -> float:
            return statistics.median(s[i] for s in samples)

        base = med(pass_times, 0)
        print(f"{args.executions:,} executions, {args.runs} runs each, medians; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"python -c pass: {base * 1000:6.1f} ms wall, {med(pass_times, 1) * 1000:5.1f} ms CPU")
        header = f"{'command':<14}" + "".join(f"{v.name + ' wall':>16}{'CPU':>9}{'x pass':>8}" for v in variants)
        print(header + "   goal")
        for name in commands:
            row = f"{name:<14}"
            for variant in variants:
                wall, cpu = med(variant.times[name], 0), med(variant.times[name], 1)
                row += f"{wall * 1000:13.1f} ms{cpu * 1000:7.1f}ms{wall / base:7.1f}x"
            goal = EXEC_GOAL if name.startswith("exec") else READ_GOAL
            wall = med(variants[-1].times[name], 0)
            ok = wall <= goal and (name.startswith("exec") or wall <= RATIO_GOAL * base)
            row += f"   <= {goal * 1000:.0f} ms{'' if name.startswith('exec') else f', {RATIO_GOAL}x'}: "
            row += "met" if ok else "NOT met"
            print(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
