"""The composition root's builders: the data directory, the store and the engine every command runs on.

`exec`, `run`, `rerun`, `tui` and `serve` (and `worker` when it comes) all get their engine from
`start_engine` / `running_engine` here, so an option added to the engine is wired once; `ls`, `show`
and `logs` read the store through `read_store`. The process-wide tuning (the garbage collector) is
done here too: it belongs to the program, not to the engine library, which tests and embedders use
in processes of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.engine import Engine, EngineConfig
from engine.errors import StoreFull
from engine.store import Store
from stepflow_tui.cli.errors import EXIT_USAGE, CliError


def resolve_data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    from storage.paths import default_data_dir

    return default_data_dir()


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory; a path that cannot be one (a file, no permission) is a CliError."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
        raise CliError(f"cannot use {data_dir} as the data directory: {reason} "
                       f"(choose another with --data-dir or STEPFLOW_STORAGE_PATH)", EXIT_USAGE) from None
    return data_dir


def make_store(data_dir: Path) -> Store:
    from storage import SqliteStore
    from storage.paths import database_path

    ensure_data_dir(data_dir)
    return SqliteStore(database_path(data_dir))


def load_targets_config(path: Path | None = None) -> dict:
    """The targets of the targets file (`path`, else the user's: see engine.targets_path)."""
    from engine.targets_path import user_targets_path

    try:
        (path or user_targets_path()).stat()
    except FileNotFoundError:
        return {}  # no file, no targets: without importing the reader and its models (~0.1 s)
    except OSError:
        pass  # the reader says what is wrong with it
    try:
        from engine.targets_file import load_user_targets
    except ImportError:
        return {}
    return load_user_targets(path)


#: executions an engine runs at once when neither --max-running nor STEPFLOW_MAX_RUNNING says
DEFAULT_MAX_RUNNING = EngineConfig().max_running


def max_running_arg(text: str) -> int:
    """`--max-running N` (and STEPFLOW_MAX_RUNNING): a whole number, 0 or more (0 queues everything)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"wants a whole number of executions (0 or more), not {text!r}")
    return value


def max_running_of(given: int | None) -> int:
    """`given` (--max-running), else $STEPFLOW_MAX_RUNNING, else the default."""
    if given is not None:
        return given
    text = os.environ.get("STEPFLOW_MAX_RUNNING", "").strip()
    if not text:
        return DEFAULT_MAX_RUNNING
    try:
        return max_running_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"STEPFLOW_MAX_RUNNING: {exc}", EXIT_USAGE) from None


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """What a command may set of the engine it runs on; None leaves the engine's default."""

    #: seconds between SIGTERM and SIGKILL when stopping a command (`--kill-grace`)
    kill_grace: float | None = None
    #: the targets file (None: the user's, `$STEPFLOW_TARGETS_FILE` or the XDG one)
    targets_file: Path | None = None
    #: targets by name instead of reading a file (a test's, an embedder's)
    targets: dict[str, Any] | None = None
    #: executions run at once, more wait queued (`--max-running`; None: $STEPFLOW_MAX_RUNNING, else
    #: the default)
    max_running: int | None = None
    #: queue what stopped engines left queued (a one-shot `run`/`exec` does not: it would stop them
    #: at its end)
    adopt_queued: bool = True


def build_engine(data_dir: Path, options: EngineOptions = EngineOptions()) -> Engine:
    """The engine on the SQLite store of `data_dir`, not started."""
    targets = options.targets if options.targets is not None else load_targets_config(options.targets_file)
    config = EngineConfig(targets=targets, max_running=max_running_of(options.max_running),
                          adopt_queued=options.adopt_queued)
    if options.kill_grace is not None:
        config.kill_grace = options.kill_grace
    return Engine(make_store(data_dir), data_dir, config)


def freeze_startup_objects() -> None:
    """What exists once the store is open (modules, schemas, compiled SQL...) lives as long as the
    process: out of the cyclic GC's sight, whose full passes over it stalled the loop for 100-150 ms
    each while a workflow of short steps ran (0.3 ms per step on average)."""
    gc.freeze()


async def start_engine(data_dir: Path, options: EngineOptions = EngineOptions()) -> Engine:
    """Build the engine, start it (open the store, mark what a dead engine left as lost) and tune the
    process for a long run. The caller shuts it down (or uses `running_engine`)."""
    engine = build_engine(data_dir, options)
    await engine.start()
    freeze_startup_objects()
    return engine


@contextlib.asynccontextmanager
async def running_engine(data_dir: Path, *, kill_grace: float | None = None,
                         options: EngineOptions | None = None) -> AsyncIterator[Engine]:
    """A started engine for the length of a command, shut down after (`kill_grace`: `--kill-grace`)."""
    options = options or EngineOptions()
    if kill_grace is not None:
        options = replace(options, kill_grace=kill_grace)
    # one execution and gone: what other engines left queued waits for a lasting one (tui, serve),
    # and that one execution runs whatever STEPFLOW_MAX_RUNNING says
    options = replace(options, adopt_queued=False, max_running=max(max_running_of(options.max_running), 1))
    engine = await start_engine(data_dir, options)
    try:
        yield engine
    finally:
        await engine.shutdown()


@contextlib.asynccontextmanager
async def read_store(data_dir: Path) -> AsyncIterator[Store]:
    """The store of `data_dir` opened for the reading commands (`ls`, `show`, `logs`), no engine."""
    from engine.engine import mark_lost

    store = make_store(data_dir)
    await store.open()
    # executions of an engine that died show as failed ("engine lost"), not as running forever, and
    # what they left running is stopped
    try:
        await mark_lost(store)
    except StoreFull as exc:  # reading needs no room: go on, saying why some may show as running
        print(f"stepflow: {exc.message}; executions of engines that died may still show as running",
              file=sys.stderr)
    try:
        yield store
    finally:
        await store.close()
