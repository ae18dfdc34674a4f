"""The `stepflow` command: the composition root that builds the store, the engine, the API listener
and the TUI, and hands them to one another."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from engine.engine import Engine, EngineConfig
from engine.errors import EngineError
from engine.events import ExecutionFinished
from engine.model import ExecutionFilter, ExecutionStatus, StepKind, Stream
from engine.store import Store
from engine.views import artifact_dict, execution_dict, step_dict
from engine.workflow_issues import WorkflowError
from stepflow_tui import cli_output as out

if TYPE_CHECKING:
    from watchfiles import Change

log = logging.getLogger("stepflow")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- wiring ---------------------------------------------------------------------------------------
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


def setup_logging(data_dir: Path | None, *, to_file: bool) -> None:
    level_name = os.environ.get("STEPFLOW_LOG_LEVEL", "WARNING").upper()
    level = getattr(logging, level_name, None)
    if not isinstance(level, int):
        print(f"stepflow: STEPFLOW_LOG_LEVEL={level_name!r} is not a level; using WARNING", file=sys.stderr)
        level = logging.WARNING
    root = logging.getLogger()
    root.setLevel(level)
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    if to_file and data_dir is not None:
        ensure_data_dir(data_dir)
        handler: logging.Handler = logging.FileHandler(data_dir / "stepflow.log")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def make_store(data_dir: Path) -> Store:
    from storage import SqliteStore
    from storage.paths import database_path

    ensure_data_dir(data_dir)
    return SqliteStore(database_path(data_dir))


def load_targets_config() -> dict:
    from engine.targets_path import user_targets_path

    try:
        user_targets_path().stat()
    except FileNotFoundError:
        return {}  # no file, no targets: without importing the reader and its models (~0.1 s)
    except OSError:
        pass  # the reader says what is wrong with it
    try:
        from engine.targets_file import load_user_targets
    except ImportError:
        return {}
    return load_user_targets()


@contextlib.asynccontextmanager
async def running_engine(data_dir: Path, *, kill_grace: float | None = None) -> AsyncIterator[Engine]:
    config = EngineConfig(targets=load_targets_config())
    if kill_grace is not None:
        config.kill_grace = kill_grace
    engine = Engine(make_store(data_dir), data_dir, config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


@contextlib.asynccontextmanager
async def read_store(data_dir: Path) -> AsyncIterator[Store]:
    from engine.engine import owner_alive

    store = make_store(data_dir)
    await store.open()
    # executions of an engine that died show as failed ("engine lost"), not as running forever
    await store.mark_lost(owner_alive)
    try:
        yield store
    finally:
        await store.close()


# -- run / exec ---------------------------------------------------------------------------------------
async def follow_execution(engine: Engine, submit, *, verbose: bool, plain: bool) -> int:  # noqa: ANN001
    """Submit (a coroutine function returning the Execution), show progress, return the exit code."""
    console = Console(highlight=False)
    subscription = engine.subscribe(maxsize=50_000)
    execution = await submit()
    steps = await engine.get_steps(execution.id)
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:
            return
        interrupted = True
        console.print("[yellow]cancelling… (the commands get SIGTERM, then SIGKILL after the grace period)[/]")
        loop.create_task(engine.cancel(execution.id))

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    loop.add_signal_handler(signal.SIGTERM, on_sigint)
    printer = out.ProgressPrinter(execution, steps, console=console, live=False if plain else None,
                                  verbose=verbose)
    try:
        with printer:
            async for event in subscription:
                if event.execution_id != execution.id:
                    continue
                printer.handle(event)
                if isinstance(event, ExecutionFinished):
                    break
    finally:
        subscription.close()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    final = await engine.wait(execution.id)
    printer.summary(final)
    if final.status is ExecutionStatus.COMPLETED:
        return EXIT_OK
    if final.status is ExecutionStatus.CANCELLED and interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED


async def cmd_run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    targets = args.target or None
    async with running_engine(data_dir, kill_grace=args.kill_grace) as engine:
        return await follow_execution(
            engine,
            lambda: engine.submit_workflow(args.file, targets=targets, name=args.name),
            verbose=args.verbose,
            plain=args.plain,
        )


async def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("stepflow exec: give a command after --, e.g. stepflow exec -- ./build.sh")
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"stepflow exec: --env wants KEY=VALUE, not {item!r}")
        env[key] = value
    data_dir = resolve_data_dir(args.data_dir)
    command_arg: str | list[str] = command[0] if args.shell else command
    if args.shell and len(command) > 1:
        raise CliError("stepflow exec --shell takes the command as one quoted argument")
    if not args.shell and len(command) == 1 and len(command[0].split()) > 1 and (args.target or "local") == "local" \
            and shutil.which(command[0]) is None:
        # `stepflow exec -- 'make && make test'`: one word that is not a program; it would only
        # fail with "command not found"
        raise CliError(f"{command[0]!r} is not a program; to run it through a shell: "
                       f"stepflow exec --shell -- {shlex.quote(command[0])}")
    async with running_engine(data_dir, kill_grace=args.kill_grace) as engine:
        return await follow_execution(
            engine,
            lambda: engine.submit_command(
                command_arg, name=args.name, cwd=args.cwd, env=env, target=args.target,
                markers="lenient" if args.lenient_markers else "strict", secrets=args.secret or (),
                tags=args.tag or (),
            ),
            verbose=args.verbose,
            plain=args.plain,
        )


async def cmd_rerun(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    async with running_engine(data_dir, kill_grace=args.kill_grace) as engine:
        execution_id = await engine.resolve_execution_id(args.id)
        return await follow_execution(
            engine,
            lambda: engine.rerun(execution_id, from_failed=args.from_failed),
            verbose=args.verbose,
            plain=args.plain,
        )


# -- validate / schema ---------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from engine.workflow import load_workflow

    known = set(load_targets_config())
    bad = 0
    for path in args.files:
        try:
            workflow = load_workflow(path, known_targets=known)
        except WorkflowError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
            continue
        print(f"{path}: ok ({len(workflow.steps)} steps, targets: {', '.join(workflow.runs_on)})")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.workflow import workflow_json_schema

    print(json.dumps(workflow_json_schema(), indent=2))
    return EXIT_OK


# -- reads -----------------------------------------------------------------------------------------
async def _resolve(store: Store, prefix: str) -> str:
    matches = await store.resolve_execution_id(prefix)
    if not matches:
        raise CliError(f"no execution with id {prefix!r} (stepflow ls lists them)", EXIT_FAILED)
    if prefix in matches:
        return prefix
    if len(matches) > 1:
        raise CliError(f"{prefix!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}", EXIT_FAILED)
    return matches[0]


async def cmd_ls(args: argparse.Namespace) -> int:
    status = None
    if args.status:
        try:
            status = ExecutionStatus(args.status)
        except ValueError:
            raise CliError(
                f"--status must be one of {', '.join(s.value for s in ExecutionStatus)}"
            ) from None
    async with read_store(resolve_data_dir(args.data_dir)) as store:
        executions, total = await store.list_executions(
            ExecutionFilter(status=status, user=args.user, text=args.filter, limit=args.limit)
        )
    if args.json:
        print(json.dumps([execution_dict(e) for e in executions], indent=2))
    elif not executions:
        print("no executions yet: try  stepflow run sample_workflows/build-and-test.yaml", file=sys.stderr)
    else:
        out.render_list(Console(highlight=False), executions)
        if total > len(executions):
            print(f"({len(executions)} of {total}; --limit N shows more)", file=sys.stderr)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace) -> int:
    from engine.model import ArtifactFilter

    async with read_store(resolve_data_dir(args.data_dir)) as store:
        execution_id = await _resolve(store, args.id)
        execution = await store.get_execution(execution_id)
        steps = await store.get_steps(execution_id)
        artifacts, _ = await store.list_artifacts(ArtifactFilter(execution_id=execution_id, limit=10_000))
    assert execution is not None
    if args.json:
        print(json.dumps({
            "execution": execution_dict(execution),
            "steps": [step_dict(s) for s in steps],
            "artifacts": [artifact_dict(a) for a in artifacts],
        }, indent=2))
    else:
        out.render_show(Console(highlight=False), execution, steps, artifacts)
    return EXIT_OK


async def cmd_logs(args: argparse.Namespace) -> int:
    async with read_store(resolve_data_dir(args.data_dir)) as store:
        execution_id = await _resolve(store, args.id)
        step_ids = None
        steps = await store.get_steps(execution_id)
        # several branches: each line says its target (`[web] ...`), or lines of hosts interleave
        # with nothing to tell them apart
        several = sum(1 for s in steps if s.kind is StepKind.BRANCH) > 1
        target_of = {s.id: s.target for s in steps}
        if args.step:
            wanted = [s for s in steps if s.name == args.step or s.id == args.step]
            if not wanted:
                names = sorted({s.name for s in steps})
                raise CliError(f"no step {args.step!r} in {execution_id[:8]} (steps: {', '.join(names)})",
                               EXIT_FAILED)
            # a step's lines include those of the steps below it
            ids = {s.id for s in wanted}
            grew = True
            while grew:
                grew = False
                for s in steps:
                    if s.parent_id in ids and s.id not in ids:
                        ids.add(s.id)
                        grew = True
            step_ids = sorted(ids)
        after = -1
        write = sys.stdout.write
        changes = _database_changes(resolve_data_dir(args.data_dir)) if args.follow else None
        try:
            while True:
                batch = await store.get_log_lines(execution_id, step_ids=step_ids, after_seq=after, limit=10_000)
                for line in batch:
                    prefix = ""
                    if args.timestamps:
                        prefix = line.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3] + " "
                    if several and line.step_id is not None:
                        if line.step_id not in target_of:  # a marker step added since (-f)
                            target_of.update({s.id: s.target for s in await store.get_steps(execution_id)})
                        if target := target_of.get(line.step_id):
                            prefix += f"[{target}] "
                    if line.stream is Stream.SYSTEM:
                        prefix += "[stepflow] "
                    write(prefix + line.text + "\n")
                if batch:
                    after = batch[-1].seq
                    if len(batch) == 10_000:
                        continue
                if changes is None:
                    break
                execution = await store.get_execution(execution_id)
                if execution is None or execution.status.is_terminal:
                    # one last read: lines written just before the status changed
                    if not batch:
                        break
                    continue
                sys.stdout.flush()
                # another process writes: wait until the database files change (or a second passes)
                await anext(changes)
        finally:
            if changes is not None:
                await changes.aclose()
    sys.stdout.flush()
    return EXIT_OK


async def _database_changes(data_dir: Path) -> AsyncGenerator[set[tuple[Change, str]], None]:
    """Yields whenever the database files change, and at least once a second."""
    import watchfiles

    async for changed in watchfiles.awatch(data_dir, debounce=50, step=20, rust_timeout=1000,
                                           yield_on_timeout=True, recursive=False):
        yield changed


# -- TUI / serve ----------------------------------------------------------------------------------------
async def cmd_tui(args: argparse.Namespace) -> int:
    from stepflow_tui.launch import run_tui

    return await run_tui(args)


async def cmd_serve(args: argparse.Namespace) -> int:
    from stepflow_tui.launch import run_serve

    return await run_serve(args)


def cmd_token(args: argparse.Namespace) -> int:
    from stepflow_tui.launch import create_token

    return create_token(args)


def cmd_targets(args: argparse.Namespace) -> int:
    from stepflow_tui.launch import targets_command

    return targets_command(args)


# -- parser ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", metavar="DIR",
                        help="where the database and artifacts live (default: $STEPFLOW_STORAGE_PATH, "
                             "else $XDG_DATA_HOME/stepflow)")
    parser = argparse.ArgumentParser(
        prog="stepflow",
        description="Run commands and YAML workflows and watch them live.",
        epilog="Start with:  stepflow tui   or   stepflow run sample_workflows/build-and-test.yaml",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def live_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="store_true", help="print the commands' output too")
        p.add_argument("--plain", action="store_true", help="plain lines instead of a live display")
        p.add_argument("--kill-grace", type=float, metavar="SECONDS",
                       help="seconds between SIGTERM and SIGKILL when cancelling (default 10)")

    p = sub.add_parser("run", parents=[common], help="run a workflow file and show its progress")
    p.add_argument("file", help="the workflow YAML file")
    p.add_argument("--target", action="append", metavar="NAME", help="run on this target instead of runs_on "
                   "(repeatable)")
    p.add_argument("--name", help="a name for this execution")
    live_opts(p)
    p.set_defaults(func=cmd_run, is_async=True)

    p = sub.add_parser("exec", parents=[common], help="run any command; its markers become steps",
                       description="Run a command: stepflow exec [options] -- CMD [ARGS...]")
    p.add_argument("--name", help="a name for this execution")
    p.add_argument("--cwd", help="working directory (default: the current one)")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set an environment variable")
    p.add_argument("--secret", action="append", metavar="VAR", help="mask this env var's value in the logs")
    p.add_argument("--tag", action="append", metavar="TAG", help="tag the execution")
    p.add_argument("--target", default="local", help="where to run it (default: local)")
    p.add_argument("--shell", action="store_true", help="run the one argument through bash -c")
    p.add_argument("--lenient-markers", action="store_true",
                   help="match markers anywhere in a line, in any case (the reference's behaviour)")
    live_opts(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_exec, is_async=True)

    p = sub.add_parser("rerun", parents=[common], help="run an execution's command or workflow again")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--from-failed", action="store_true",
                   help="skip the workflow steps that completed; run the failed ones and what follows")
    live_opts(p)
    p.set_defaults(func=cmd_rerun, is_async=True)

    p = sub.add_parser("validate", help="check workflow files without running them")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate, is_async=False)

    p = sub.add_parser("ls", parents=[common], help="list executions, newest first")
    p.add_argument("--status", help="only this status (pending, running, completed, failed, cancelled)")
    p.add_argument("--user", help="only this user's")
    p.add_argument("--filter", metavar="TEXT", help="name or command contains TEXT")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls, is_async=True)

    p = sub.add_parser("show", parents=[common], help="show an execution's tree, durations and errors")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show, is_async=True)

    p = sub.add_parser("logs", parents=[common], help="print an execution's log")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--step", help="only this step (and the steps below it)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the execution ends")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.set_defaults(func=cmd_logs, is_async=True)

    p = sub.add_parser("schema", help="print the workflow files' JSON Schema")
    p.set_defaults(func=cmd_schema, is_async=False)

    p = sub.add_parser("tui", parents=[common], help="the terminal UI (the default)")
    p.add_argument("--no-api", action="store_true", help="do not start the embedded API listener")
    p.add_argument("--api-host", default=None, help="API listener address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=None, help="API listener port (default 8080)")
    p.add_argument("--connect", metavar="URL", help="attach to a remote engine (http://HOST:8080)")
    p.add_argument("--token", help="bearer token for --connect")
    p.add_argument("workflow_dirs", nargs="*", metavar="DIR", help="folders to offer workflows from")
    p.set_defaults(func=cmd_tui, is_async=True)

    p = sub.add_parser("serve", parents=[common], help="run the engine headless with its HTTP/WebSocket API")
    p.add_argument("--host", default=None, help="address to bind, the API's and the WebSocket's (default 127.0.0.1; "
                   "STEPFLOW_WEBSOCKET_HOST sets the WebSocket's apart)")
    p.add_argument("--port", type=int, default=None, help="port of the HTTP API (default 8080)")
    p.add_argument("--ws-port", type=int, default=None, help="port of the WebSocket (default 8765)")
    p.set_defaults(func=cmd_serve, is_async=True)

    p = sub.add_parser("token", parents=[common], help="API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tp = tsub.add_parser("create", parents=[common], help="mint a bearer token and print it")
    tp.add_argument("--subject", default=None, help="who the token is for (default: the current user)")
    tp.add_argument("--days", type=float, default=30.0, help="days until it expires (default 30)")
    p.set_defaults(func=cmd_token, is_async=False)

    p = sub.add_parser("targets", parents=[common], help="list or check targets")
    tsub = p.add_subparsers(dest="targets_command", metavar="ACTION")
    tsub.add_parser("list", help="list the known targets")
    tp = tsub.add_parser("test", help="check that a target answers")
    tp.add_argument("name")
    p.set_defaults(func=cmd_targets, is_async=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["tui"]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    data_dir = resolve_data_dir(getattr(args, "data_dir", None)) if hasattr(args, "data_dir") else None
    try:
        setup_logging(data_dir, to_file=args.command in ("tui",))
        if args.is_async:
            code = asyncio.run(args.func(args))
        else:
            code = args.func(args)
    except CliError as exc:
        print(f"stepflow: {exc}", file=sys.stderr)
        return exc.code
    except WorkflowError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except EngineError as exc:
        print(f"stepflow: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `stepflow logs ID | head`: the reader left; not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_OK
    return int(code or 0)


if __name__ == "__main__":
    # `python -m stepflow_tui.cli`: run the imported module's main, not this `__main__` copy, whose
    # CliError is another class than the one the commands (stepflow_tui.launch...) raise
    from stepflow_tui.cli import main as _main

    raise SystemExit(_main())
