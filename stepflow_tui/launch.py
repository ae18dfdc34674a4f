"""The TUI's start: the app on the local engine (with the API listener the composition root
starts for it) or on a remote one (`--connect`, through the API client the composition root hands in:
the TUI imports no API code)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.client import EngineClient
from engine.engine import Engine
from engine.workflow.issues import WorkflowError
from stepflow_tui.cli.errors import CliError

if TYPE_CHECKING:
    from stepflow_tui.app import StepflowApp

ROOT = Path(__file__).resolve().parent.parent


class RunningApi(Protocol):
    """A started API listener, as the TUI sees it."""

    @property
    def url(self) -> str: ...

    async def stop(self) -> None: ...


#: starts the API listener on the engine, its data directory and the folders the TUI offers workflows
#: from (the only ones whose files the API runs by path); a CliError says why it did not
StartApi = Callable[[Engine, Path, list[Path]], Awaitable[RunningApi]]
#: builds and starts the engine on a data directory (the composition root's `start_engine`)
StartEngine = Callable[[Path], Awaitable[Engine]]


class RemoteClient(EngineClient, Protocol):
    """An engine client over a server's API, as `--connect` uses it: started (connected) before
    the app runs, closed after."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


#: the client of the server at a URL (with a bearer token or None), not started yet
Connect = Callable[[str, str | None], RemoteClient]


def connected_app(client: EngineClient, workflow_dirs: list[Path], **options: Any) -> StepflowApp:
    """The app of `stepflow tui --connect` (`options`: the tests' keys file, no file watching)."""
    from stepflow_tui.app import StepflowApp

    # this machine's CPU and memory (and targets file) would say nothing of the server's: the status
    # strip shows the connection to it instead; quitting leaves the server's executions running
    return StepflowApp(client, data_dir_label=client.description, workflow_dirs=workflow_dirs,
                       quit_stops_executions=False, sample_machine=False, engine_is_here=False, **options)


async def run_tui(args: argparse.Namespace, *, data_dir: Path, start_engine: StartEngine,
                  start_api: StartApi | None = None, connect: Connect | None = None) -> int:
    from stepflow_tui.app import StepflowApp

    workflow_dirs = [Path(d) for d in args.workflow_dirs] or [ROOT / "sample_workflows", Path.cwd()]
    if args.connect:
        if connect is None:
            raise CliError("this build cannot connect to a server (no API client)", 1)
        client = connect(args.connect, args.token)
        try:
            await client.start()
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise CliError(message, 1) from None
        try:
            await connected_app(client, workflow_dirs).run_async()
        finally:
            await client.close()
        return 0

    try:
        engine = await start_engine(data_dir)
    except (CliError, WorkflowError):  # a data directory that cannot be one, a wrong targets file
        raise
    except Exception as exc:
        raise CliError(f"cannot open the data directory {data_dir}: {exc}", 1) from None
    listener: RunningApi | None = None
    startup_notes: list[tuple[str, str]] = []
    if not args.no_api and start_api is not None:
        try:
            listener = await start_api(engine, data_dir, workflow_dirs)
        except CliError as exc:
            startup_notes.append(("API listener not started", str(exc)))
    try:
        app = StepflowApp(engine, data_dir_label=str(data_dir), workflow_dirs=workflow_dirs)
        for title, message in startup_notes:
            app.startup_notes.append((title, message))
        if listener is not None:
            app.api_url = listener.url
        await app.run_async()
    finally:
        if listener is not None:
            await listener.stop()
        await engine.shutdown()
    if app.return_code:
        return int(app.return_code)
    return 0

