"""The composition root: the one module that builds the layers (the store, the engine, the API
listener and its clients, the TUI) and hands them to one another. `stepflow.main` parses the command
line and calls in here. It sits outside the layers: `stepflow_tui` and `api_compat` never import each
other, nor this package (tests/test_layers.py).

- The data directory, the store and the engine every command runs on: `exec`, `run`, `rerun`, `tui`,
  `serve` and `worker` get their engine from `start_engine` / `running_engine`, so an option added to
  the engine is wired once; `ls`, `show` and `logs` read the file through `read_store` (sqlite3
  alone: no engine, no SQLAlchemy, no asyncio). The
  process-wide tuning (the garbage collector) is done here too: it belongs to the program, not to the
  engine library, which tests and embedders use in processes of their own.
- The API listener (`start_api` for the TUI, `cmd_serve`), its tokens (`cmd_token`), the remote
  client of `tui --connect` (`connect`) and the executr worker (`cmd_worker`).

Every layer is imported where a command needs it, not at the top: `stepflow ls` or `--version` must
not pay for the engine, SQLAlchemy or the API (tests/test_startup_imports.py counts what they import).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.defaults import DEFAULT_MAX_RUNNING
from stepflow_tui.cli.data_dir import ensure_data_dir
from stepflow_tui.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.store import Store
    from stepflow_tui.launch import RemoteClient, RunningApi
    from storage.read_only import ReadOnlyStore


def resolve_data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    from storage.paths import default_data_dir

    return default_data_dir()


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
    from engine.engine import Engine, EngineConfig

    targets = options.targets if options.targets is not None else load_targets_config(options.targets_file)
    config = EngineConfig(targets=targets, max_running=max_running_of(options.max_running),
                          adopt_queued=options.adopt_queued)
    if options.kill_grace is not None:
        config.kill_grace = options.kill_grace
    return Engine(make_store(data_dir), data_dir, config)


def pause_collector() -> None:
    """No cyclic GC while a command that runs an engine imports its modules and starts it: they
    are objects for the process's life, and the collector's passes over them were ~5% of
    `stepflow exec`'s start-up (issue 16). `freeze_startup_objects` turns it back on."""
    gc.disable()


#: container objects allocated (net) between two passes over the youngest generation (Python's
#: default: 700). A command printing markers makes hundreds of thousands of short-lived events and
#: steps a second; at 700 the collector ran ~2,100 young and ~190 middle passes for 100,000 marker
#: steps, 0.3-0.4 s of the event loop's CPU; at 10,000, ~60 and 5 passes, ~0.1-0.18 s; at 50,000
#: none during such a run (the objects alive at once: ~20,000). Loop CPU, 100k pairs, interleaved:
#: 1.80/1.73/1.84 s at 10,000, 1.70/1.60/1.67/1.75 s at 50,000 or more; peak RSS the same, 66-67 MB
#: (issue 16). What waits longer for a pass is only garbage in reference cycles: at most this many
#: objects' worth.
YOUNG_OBJECTS = 50_000


def freeze_startup_objects() -> None:
    """What exists once the store is open (modules, schemas, compiled SQL...) lives as long as the
    process: out of the cyclic GC's sight, whose full passes over it stalled the loop for 100-150 ms
    each while a workflow of short steps ran (0.3 ms per step on average). The collector is on
    after (`pause_collector` turned it off), passing over the young objects less often
    (`YOUNG_OBJECTS`)."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)
    gc.enable()


#: the interpreter's switch interval in a process running an engine (Python's default: 5 ms)
GIL_SWITCH_INTERVAL = 0.001


def share_the_interpreter() -> None:
    """The store's writer thread gives Python's GIL up for each call into SQLite
    (storage.write_connection: a batch is a few statements, storage.writes) and, while the event
    loop's thread is busy, waited up to the whole switch interval to take it back after each: with
    a command printing markers, that kept the writer a step behind, and the two threads ran one after
    the other. 1 ms: ~10% less wall time for 100,000 marker steps (bench/markers.py, issue 16)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


async def start_engine(data_dir: Path, options: EngineOptions = EngineOptions()) -> Engine:
    """Build the engine, start it (open the store, mark what a dead engine left as lost) and tune the
    process for a long run. The caller shuts it down (or uses `running_engine`)."""
    engine = build_engine(data_dir, options)
    await engine.start()
    freeze_startup_objects()
    share_the_interpreter()
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


@contextlib.contextmanager
def read_store(data_dir: Path) -> Iterator[ReadOnlyStore]:
    """The file of `data_dir` opened for the reading commands (`ls`, `show`, `logs`): no engine, no
    SQLAlchemy, no asyncio (storage.read_only). A new or older file is brought to this stepflow's
    schema first; one of a newer stepflow is refused (storage.schema.SchemaTooNew, an EngineError)."""
    from storage.paths import database_path
    from storage.read_only import ReadOnlyStore

    store = ReadOnlyStore.open(database_path(ensure_data_dir(data_dir)))
    try:
        # executions of an engine that died show as failed ("engine lost"), not as running forever,
        # and what they left running is stopped: through the engine's store, only when one is found
        held = store.held_executions()
        if held:
            from engine.ownership import owner_is_alive

            if not all(owner_is_alive(owner) for _id, owner in held):
                import asyncio
                import logging

                if not logging.getLogger().handlers:  # main leaves it to the work that logs
                    from stepflow_tui.cli.log_setup import setup_logging

                    setup_logging(data_dir, to_file=False)
                asyncio.run(_mark_lost(data_dir))
        yield store
    finally:
        store.close()


async def _mark_lost(data_dir: Path) -> None:
    from engine.engine import mark_lost
    from engine.errors import StoreFull

    store = make_store(data_dir)
    await store.open()
    try:
        await mark_lost(store)
    except StoreFull as exc:  # reading needs no room: go on, saying why some may show as running
        print(f"stepflow: {exc.message}; executions of engines that died may still show as running",
              file=sys.stderr)
    finally:
        await store.close()


# -- the API listener, its tokens and the executr worker: api_compat is wired here, and only here ---------------------------------
async def start_api(engine: Engine, data_dir: Path, args: argparse.Namespace,
                     offered: Sequence[Path] = ()) -> RunningApi:
    """The TUI's embedded listener; a CliError says why it did not start (the TUI notes it).
    It runs workflow files by path from the folders given to `tui`, else STEPFLOW_WORKFLOW_DIRS, else
    the folders the TUI `offered` by default."""
    from api_compat import ApiConfig, ApiListener, ConfigError, ListenerError

    given = getattr(args, "workflow_dirs", None)
    folders = [Path(d) for d in given] if given else None if os.environ.get("STEPFLOW_WORKFLOW_DIRS") else offered
    try:
        config = ApiConfig.from_command_line(data_dir=data_dir, host=args.api_host, port=args.api_port,
                                             workflow_dirs=None if folders is None else tuple(folders))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    listener = ApiListener(engine, config,
                           port_option="--api-port", ws_port_option="STEPFLOW_WEBSOCKET_PORT")
    try:
        await listener.start()
    except (ListenerError, OSError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    return listener


def connect(url: str, token: str | None) -> RemoteClient:
    """`tui --connect`: the StepFlow Monitor API client, handed to the TUI as an engine client."""
    from api_compat.monitor.client import RemoteEngine

    return RemoteEngine(url, token=token)


async def cmd_serve(args: argparse.Namespace) -> int:
    from api_compat import ApiConfig, ApiListener, ConfigError, ListenerError, serve

    data_dir = resolve_data_dir(args.data_dir)
    # `--host` binds the WebSocket's own port there too (unless STEPFLOW_WEBSOCKET_HOST says
    # otherwise): `serve --host 0.0.0.0` left it on loopback, out of reach of the remote clients
    ws_host = args.host if args.host is not None and not os.environ.get("STEPFLOW_WEBSOCKET_HOST") else None
    for folder in args.workflows or ():
        if not folder.is_dir():
            raise CliError(f"--workflows {folder}: not a folder")
    try:
        config = ApiConfig.from_command_line(
            data_dir=data_dir, host=args.host, port=args.port, ws_port=args.ws_port, ws_host=ws_host,
            allowed_hosts=args.allowed_host or (), workflow_dirs=None if args.workflows is None else tuple(args.workflows),
            monitor_shape=args.monitor_shape, executr_heartbeat_timeout=args.executr_heartbeat_timeout,
            rate_limits=args.rate_limit or ())
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    engine = await start_engine(data_dir, EngineOptions(max_running=args.max_running))

    def ready(listener: ApiListener) -> None:
        print(f"stepflow serving {listener.url}", flush=True)
        if listener.ws_url:
            print(f"WebSocket        {listener.ws_url}", flush=True)
        print(f"data             {data_dir}", flush=True)
        folders = ", ".join(str(d) for d in config.workflow_dirs) or "none (clients send the workflow's text)"
        print(f"workflow files   {folders}", flush=True)
        print("Ctrl-C or SIGTERM stops (running executions are cancelled and recorded)", flush=True)

    try:
        await serve(engine, config, shutdown_engine=engine.shutdown, on_ready=ready)
    except (ListenerError, ConfigError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        await engine.shutdown()
    return EXIT_OK


_LIFETIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_TOKEN_LIFETIME = "7d"


def _token_lifetime(args: argparse.Namespace) -> tuple[float | None, str]:
    """Seconds a new token lives (None: never) and how to say it, from `--expires 1h|7d|never` or
    the older `--days N`."""
    if args.days is not None:
        if args.expires is not None:
            raise CliError("give --expires or --days, not both")
        if not args.days > 0:  # also NaN: a token that has expired when it is printed is no use
            raise CliError(f"--days must be a positive number of days, not {args.days:g}")
        from stepflow_tui.cli.read_views import plural

        return float(args.days) * 86400, f"expires in {plural(args.days, 'day')}"
    text = (args.expires or DEFAULT_TOKEN_LIFETIME).strip().lower()
    if text == "never":
        return None, "never expires"
    number, unit = text[:-1], text[-1:]
    try:
        seconds = float(number) * _LIFETIME_UNITS[unit]
    except (KeyError, ValueError):
        seconds = float("nan")
    if not seconds >= 1:
        raise CliError(f"--expires {args.expires!r}: write a lifetime like 30m, 1h, 7d, 4w, or never")
    return seconds, f"expires in {text}"


def cmd_token(args: argparse.Namespace) -> int:
    from api_compat import AuthError, create_token, revoke_token, token_id
    from api_compat.api_keys import create_api_key

    action = getattr(args, "token_command", None)
    if action not in ("create", "revoke"):
        raise CliError("usage: stepflow token create [--user NAME] [--role standard|administrator] [--api-key] "
                       "[--expires 1h|7d|never] | stepflow token revoke ID")
    data_dir = ensure_data_dir(resolve_data_dir(args.data_dir))
    if action == "revoke":
        try:
            jti, new = revoke_token(data_dir, args.token_id)
        except AuthError as exc:
            raise CliError(str(exc)) from None
        what = "API key" if jti.startswith("sfk_") else "token"
        print(f"revoked {what} {jti}" if new else f"{what} {jti} was already revoked", file=sys.stderr)
        return EXIT_OK
    user = args.subject or "stepflow"
    role = args.role or "administrator"
    if args.api_key:
        # a key lives until revoked unless --expires says otherwise
        expires_in, lifetime = (_token_lifetime(args) if args.expires is not None or args.days is not None
                                else (None, "never expires"))
        key, key_id = create_api_key(data_dir, user=user, role=role, expires_in=expires_in)
        print(key)
        print(f"API key {key_id} ({lifetime}) for {user} as {role}; it is shown this once and stored hashed; "
              f"`stepflow token revoke {key_id}` revokes it", file=sys.stderr)
        return EXIT_OK
    expires_in, lifetime = _token_lifetime(args)
    token = create_token(data_dir, subject=user, expires_in=expires_in, role=role)
    print(token)
    # stdout holds the token alone (for `$(stepflow token create)`); what to revoke goes to stderr
    jti = token_id(token)
    print(f"token id {jti} ({lifetime}) for {user} as {role}; `stepflow token revoke {jti}` revokes it",
          file=sys.stderr)
    return EXIT_OK


async def cmd_worker(args: argparse.Namespace) -> int:
    """`stepflow worker`: claim and run jobs from an executr queue (api_compat/executr/worker.py)."""
    from api_compat.config import DEFAULT_PORT
    from api_compat.executr.worker import WorkerError, WorkerOptions, default_executor_id, run_worker

    if args.concurrency < 1:
        raise CliError(f"--concurrency must be at least 1, not {args.concurrency}")
    if not args.heartbeat > 0:
        raise CliError(f"--heartbeat must be a positive number of seconds, not {args.heartbeat:g}")
    server = args.server or os.environ.get("STEPFLOW_SERVER") or f"http://127.0.0.1:{DEFAULT_PORT}"
    options = WorkerOptions(server=server, token=args.token or os.environ.get("STEPFLOW_TOKEN") or None,
                            concurrency=args.concurrency, executor_id=args.id or default_executor_id(),
                            heartbeat=args.heartbeat, grace=args.grace, long_poll=args.wait,
                            poll_interval=args.poll_interval, quiet=args.quiet, stream=args.stream,
                            cache_max_bytes=int(args.cache_max_mb * 1024 * 1024))
    if args.cache_dir:
        options.cache_dir = args.cache_dir
    if args.work_dir:
        options.work_dir = args.work_dir
    try:
        if args.rustci_runner:
            from api_compat.rustci.worker import RunnerWorker

            return await run_worker(options, RunnerWorker(options, args.rustci_runner))
        return await run_worker(options)
    except (WorkerError, ValueError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
