"""What a crash of the engine loses: N printers run as the parallel steps of one `stepflow run`, each
printing numbered lines; the engine is killed with SIGKILL after ~2 s; the lines each printer had
written to its pipe by then are compared with those in the SQLite file (read with sqlite3).

Each printer keeps the number of its last line written (write() returned) in a small file it maps
in memory: a kill of any process leaves it there. What a printer wrote but the engine never read
(its pipe's buffer, ≤ 64 KiB) is lost too, and counted: no engine could keep it.

    .venv/bin/python bench/crash_loss.py [--printers 1 20 100] [--rate 10000] [--seconds 2]

--rate is lines per second per printer; 0 prints as fast as the pipe takes them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the printer: `printer.py NAME RATE COUNTER_FILE`; lines are "NAME N", N from 1
PRINTER = textwrap.dedent('''\
    import mmap, os, struct, sys, time
    name, rate, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "r+b") as f:
        counter = mmap.mmap(f.fileno(), 16)
    struct.pack_into("<q", counter, 8, os.getpid())
    block = 400     # lines per write(): ~4 KiB, as a program's stdio buffer sends them to a pipe
    n = 0
    started = time.monotonic()
    try:
        while True:
            data = "".join(f"{name} {i}\\n" for i in range(n + 1, n + block + 1)).encode()
            if rate:
                ahead = (n + block) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            while data:
                data = data[os.write(1, data):]
            n += block
            struct.pack_into("<q", counter, 0, n)
    except (BrokenPipeError, OSError):
        pass
''')


@dataclass
class Printer:
    name: str
    counter: Path

    def read(self) -> tuple[int, int]:
        """(lines written, pid)"""
        with self.counter.open("rb") as f:
            data = f.read(16)
        return struct.unpack("<qq", data)


@dataclass
class Outcome:
    printers: int
    seconds: float
    printed: int
    stored: int
    #: lines a printer wrote that its pipe still held (never read): at most this many per printer
    pipe_lines: int
    prefix_ok: bool
    rate: float

    @property
    def lost(self) -> int:
        return self.printed - self.stored

    @property
    def lost_share(self) -> float:
        return self.lost / self.printed if self.printed else 0.0

    @property
    def window_ms(self) -> float:
        """The lost lines in time: how long the printers took to print them."""
        return 1000.0 * self.lost / self.rate if self.rate else 0.0


def workflow_text(tmp: Path, printers: list[Printer], rate: int) -> str:
    steps = "\n".join(
        f"  - name: {p.name}\n    run: {sys.executable} {tmp / 'printer.py'} {p.name} {rate} {p.counter}"
        for p in printers
    )
    return f"name: crash-loss\nmax_parallel: {len(printers)}\nsteps:\n{steps}\n"


def run_once(tmp: Path, n_printers: int, rate: int, seconds: float, *, start_timeout: float = 60) -> Outcome:
    """Start the run, kill -9 the engine `seconds` after every printer printed, count."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "printer.py").write_text(PRINTER)
    printers = []
    for i in range(n_printers):
        counter = tmp / f"p{i}.count"
        counter.write_bytes(b"\0" * 16)
        printers.append(Printer(f"p{i}", counter))
    flow = tmp / "flow.yaml"
    flow.write_text(workflow_text(tmp, printers, rate))
    data = tmp / "data"
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    engine = subprocess.Popen([sys.executable, "-m", "stepflow.main", "run", "--plain", str(flow)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout
        while not all(p.read()[0] for p in printers):
            if time.monotonic() > deadline or engine.poll() is not None:
                raise RuntimeError("the printers did not all start")
            time.sleep(0.01)
        begun = time.monotonic()
        first = sum(p.read()[0] for p in printers)
        time.sleep(seconds)
        engine.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        engine.wait()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    # the printers end at their next write (their pipe has no reader now), or die with the engine
    pids = [p.read()[1] for p in printers]
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in pids:  # one still there is no printer of ours any more, or stuck: stop it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    printed_by = {p.name: p.read()[0] for p in printers}
    stored_by, prefix_ok = stored_lines(data / "stepflow.db", printed_by)
    printed, stored = sum(printed_by.values()), sum(stored_by.values())
    rate_seen = (printed - first) / (killed - begun) if killed > begun else 0.0
    line_bytes = max(len(f"p{n_printers} {max(printed_by.values(), default=1)}\n"), 1)
    return Outcome(n_printers, killed - begun, printed, stored, n_printers * 65536 // line_bytes,
                   prefix_ok, rate_seen)


def stored_lines(db: Path, printed_by: dict[str, int]) -> tuple[dict[str, int], bool]:
    """Per printer, the count of its lines stored, and whether every printer's stored lines are the
    first ones it printed (1..k, none missing, none beyond what it printed)."""
    numbers: dict[str, list[int]] = {name: [] for name in printed_by}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        for (text,) in conn.execute("SELECT text FROM log_lines"):
            m = re.fullmatch(r"(p\d+) (\d+)", text)
            if m and m.group(1) in numbers:
                numbers[m.group(1)].append(int(m.group(2)))
    prefix_ok = True
    for name, got in numbers.items():
        got.sort()
        if got != list(range(1, len(got) + 1)) or len(got) > printed_by[name]:
            prefix_ok = False
    return {name: len(got) for name, got in numbers.items()}, prefix_ok


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (its parent, the engine, is gone: init reaps it soon) counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--printers", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--rate", type=int, default=10_000, help="lines/s per printer; 0: full speed")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"kill -9 of `stepflow run` {args.seconds:g} s into N printers at "
          f"{args.rate or 'full speed'}{' lines/s each' if args.rate else ''}")
    print(f"{'printers':>8} {'printed':>10} {'stored':>10} {'lost':>8} {'lost %':>7} {'window':>9} "
          f"{'lines/s':>9} {'prefix':>6}   pipe buffers hold up to")
    for n in args.printers:
        with tempfile.TemporaryDirectory() as tmp:
            o = run_once(Path(tmp), n, args.rate, args.seconds)
        print(f"{o.printers:>8} {o.printed:>10,} {o.stored:>10,} {o.lost:>8,} {100 * o.lost_share:>6.1f}% "
              f"{o.window_ms:>7.0f}ms {o.rate:>9,.0f} {'yes' if o.prefix_ok else 'NO':>6}   {o.pipe_lines:,} lines")


if __name__ == "__main__":
    main()
