"""The commands that run something and follow it live: `run` (a workflow file), `exec` (a command)
and `rerun`. They start an engine through the opener the composition root (`stepflow.wiring`) gives
them: building one needs the SQLite store, which this layer may not import."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import shutil
import signal
from pathlib import Path
from typing import Protocol

from engine.engine import Engine
from engine.model import ExecutionKind, ExecutionStatus
from engine.submission import SubmitRequest
from stepflow_tui.cli import output as out
from stepflow_tui.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError

#: the surface executions submitted here come from
SOURCE = "cli"


class EngineOpener(Protocol):
    """Starts an engine on a data directory and shuts it down after (the composition root's
    `running_engine`)."""

    def __call__(self, data_dir: Path, *,
                 kill_grace: float | None = None) -> contextlib.AbstractAsyncContextManager[Engine]: ...


async def follow_execution(engine: Engine, submit, *, verbose: bool, plain: bool) -> int:  # noqa: ANN001
    """Submit (a coroutine function returning the Execution), show progress, return the exit code."""
    console = out.CliConsole(highlight=False)
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
            async for first in subscription:
                # what is queued is handled at once, then flushed: a command printing markers
                # makes thousands of events a second
                if printer.show(first, subscription.get_nowait):
                    break
                printer.flush()
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
    code = final.exit_code
    if final.status is ExecutionStatus.FAILED and final.kind is ExecutionKind.COMMAND and code and 0 < code < 256:
        return code  # `exec` ends as its command did (127: not found), as shells do
    return EXIT_FAILED


async def cmd_run(args: argparse.Namespace, data_dir: Path, running_engine: EngineOpener) -> int:
    targets = args.target or ()
    async with running_engine(data_dir, kill_grace=args.kill_grace) as engine:
        return await follow_execution(
            engine,
            lambda: engine.submit(SubmitRequest(kind=ExecutionKind.WORKFLOW, source=SOURCE, workflow_path=args.file,
                                                targets=targets, name=args.name)),
            verbose=args.verbose,
            plain=args.plain,
        )


async def cmd_exec(args: argparse.Namespace, data_dir: Path, running_engine: EngineOpener) -> int:
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
            lambda: engine.submit(SubmitRequest(
                kind=ExecutionKind.COMMAND, source=SOURCE, command=command_arg, name=args.name, cwd=args.cwd,
                env=env, targets=[args.target or "local"], markers="lenient" if args.lenient_markers else "strict",
                secrets=args.secret or (), tags=args.tag or (),
            )),
            verbose=args.verbose,
            plain=args.plain,
        )


async def cmd_rerun(args: argparse.Namespace, data_dir: Path, running_engine: EngineOpener) -> int:
    async with running_engine(data_dir, kill_grace=args.kill_grace) as engine:
        execution_id = await engine.resolve_execution_id(args.id)
        return await follow_execution(
            engine,
            lambda: engine.rerun(execution_id, from_failed=args.from_failed),
            verbose=args.verbose,
            plain=args.plain,
        )
