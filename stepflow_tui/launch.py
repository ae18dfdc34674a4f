"""The composition root for the long-running commands: `tui`, `serve`, `token`, `targets`.
It alone builds the store, the engine, the API listener and the app, and hands them to one another."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api_compat import ApiConfig, ApiListener, ConfigError, ListenerError, serve
from api_compat import create_token as mint_token
from engine.engine import Engine, EngineConfig
from stepflow_tui.cli import CliError, ensure_data_dir, load_targets_config, make_store, resolve_data_dir

if TYPE_CHECKING:
    from stepflow_tui.app import StepflowApp
    from stepflow_tui.remote import RemoteEngine

ROOT = Path(__file__).resolve().parent.parent


def _api_config(args: argparse.Namespace, data_dir: Path, *, host: str | None, port: int | None,
                ws_port: int | None) -> ApiConfig:
    # `--host` binds the WebSocket's own port there too (unless STEPFLOW_WEBSOCKET_HOST says
    # otherwise): `serve --host 0.0.0.0` left it on loopback, out of reach of the remote clients
    ws_host = host if host is not None and not os.environ.get("STEPFLOW_WEBSOCKET_HOST") else None
    try:
        config = ApiConfig.from_env(host=host, port=port, ws_port=ws_port, data_dir=data_dir, ws_host=ws_host)
        config.check()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return config


async def run_serve(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    config = _api_config(args, data_dir, host=args.host, port=args.port, ws_port=args.ws_port)
    engine = Engine(make_store(data_dir), data_dir, EngineConfig(targets=load_targets_config()))
    await engine.start()

    def ready(listener: ApiListener) -> None:
        print(f"stepflow serving {listener.url}", flush=True)
        if listener.ws_url:
            print(f"WebSocket        {listener.ws_url}", flush=True)
        print(f"data             {data_dir}", flush=True)
        print("Ctrl-C or SIGTERM stops (running executions are cancelled and recorded)", flush=True)

    try:
        await serve(engine, config, shutdown_engine=engine.shutdown, on_ready=ready)
    except (ListenerError, ConfigError) as exc:
        raise CliError(str(exc), 1) from None
    finally:
        await engine.shutdown()
    return 0


def create_token(args: argparse.Namespace) -> int:
    if getattr(args, "token_command", None) != "create":
        raise CliError("usage: stepflow token create [--subject NAME] [--days N]")
    if not args.days > 0:  # also NaN: a token that has expired when it is printed is no use
        raise CliError(f"--days must be a positive number of days, not {args.days:g}")
    data_dir = ensure_data_dir(resolve_data_dir(args.data_dir))
    kwargs: dict[str, object] = {"expires_in": args.days * 86400}
    if args.subject:
        kwargs["subject"] = args.subject
    print(mint_token(data_dir, **kwargs))  # type: ignore[arg-type]
    return 0


def targets_command(args: argparse.Namespace) -> int:
    from stepflow_tui.targets_cli import run_targets

    return run_targets(args)


def connected_app(client: RemoteEngine, workflow_dirs: list[Path], **options: Any) -> StepflowApp:
    """The app of `stepflow tui --connect` (`options`: the tests' keys file, no file watching)."""
    from stepflow_tui.app import StepflowApp

    # this machine's CPU and memory would say nothing of the server's: the status strip shows the
    # connection to it instead; quitting leaves the server's executions running
    return StepflowApp(client, data_dir_label=client.base_url, workflow_dirs=workflow_dirs,
                       quit_stops_executions=False, sample_machine=False, **options)


async def run_tui(args: argparse.Namespace) -> int:
    from stepflow_tui.app import StepflowApp

    workflow_dirs = [Path(d) for d in args.workflow_dirs] or [ROOT / "sample_workflows", Path.cwd()]
    if args.connect:
        from stepflow_tui.remote import RemoteEngine

        client = RemoteEngine(args.connect, token=args.token)
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

    data_dir = resolve_data_dir(args.data_dir)
    engine = Engine(make_store(data_dir), data_dir, EngineConfig(targets=load_targets_config()))
    try:
        await engine.start()
    except Exception as exc:
        raise CliError(f"cannot open the data directory {data_dir}: {exc}", 1) from None
    listener: ApiListener | None = None
    startup_notes: list[tuple[str, str]] = []
    if not args.no_api:
        try:
            config = ApiConfig.from_env(host=args.api_host, port=args.api_port, data_dir=data_dir)
            config.check()
            listener = ApiListener(engine, config)
            await listener.start()
        except (ListenerError, ConfigError, OSError) as exc:
            listener = None
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_tui(argparse.Namespace())))
