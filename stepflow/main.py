"""The `stepflow` command: its arguments and subcommands. What builds the store, the engine, the API
listener and the clients, and hands them to one another, is the composition root
(`stepflow.wiring`): this module imports no layer besides the engine and the TUI.

Each command imports what it runs on when it runs: `stepflow ls`, `show`, `logs`, `--help` and
`--version` start in a few tens of milliseconds, without asyncio, the engine, SQLAlchemy or the TUI
(tests/test_startup_imports.py checks it; bench/startup.py measures it)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from engine.errors import EngineError
from stepflow.wiring import (
    DEFAULT_MAX_RUNNING,
    DEFAULT_TOKEN_LIFETIME,
    cmd_serve,
    cmd_token,
    cmd_worker,
    load_targets_config,
    max_running_arg,
    pause_collector,
    read_store,
    resolve_data_dir,
    running_engine,
)
from stepflow_tui.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from engine.engine import Engine

# -- run / exec / rerun (stepflow_tui.cli.run) ----------------------------------------------------------
async def cmd_run(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import run as run_cli

    return await run_cli.cmd_run(args, resolve_data_dir(args.data_dir), running_engine)


async def cmd_exec(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import run as run_cli

    return await run_cli.cmd_exec(args, resolve_data_dir(args.data_dir), running_engine)


async def cmd_rerun(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import run as run_cli

    return await run_cli.cmd_rerun(args, resolve_data_dir(args.data_dir), running_engine)


# -- validate / schema ---------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from engine.workflow.issues import WorkflowError
    from engine.workflow.load import load_workflow
    from stepflow_tui.cli.read_views import plural

    known = set(load_targets_config())
    bad = 0
    for path in args.files:
        try:
            workflow = load_workflow(path, known_targets=known)
        except WorkflowError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
            continue
        print(f"{path}: ok ({plural(len(workflow.steps), 'step')}, targets: {', '.join(workflow.runs_on)})")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from engine.workflow.load import workflow_json_schema

    print(json.dumps(workflow_json_schema(), indent=2))
    return EXIT_OK


# -- reads (stepflow_tui.cli.history): synchronous, no asyncio ---------------------------------------
def cmd_ls(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import history as history_cli

    return history_cli.cmd_ls(args, resolve_data_dir(args.data_dir), read_store)


def cmd_show(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import history as history_cli

    return history_cli.cmd_show(args, resolve_data_dir(args.data_dir), read_store)


def cmd_logs(args: argparse.Namespace) -> int:
    from stepflow_tui.cli import history as history_cli

    return history_cli.cmd_logs(args, resolve_data_dir(args.data_dir), read_store)


#: the read commands: no asyncio, no engine, no logging unless needed (see `main`)
READS = (cmd_ls, cmd_show, cmd_logs)


# -- the TUI ------------------------------------------------------------------------------------------
async def cmd_tui(args: argparse.Namespace) -> int:
    from stepflow.wiring import EngineOptions, connect, start_api, start_engine
    from stepflow_tui.launch import run_tui

    def start(data_dir: Path) -> Awaitable[Engine]:
        return start_engine(data_dir, EngineOptions(max_running=args.max_running))

    return await run_tui(args, data_dir=resolve_data_dir(args.data_dir), start_engine=start,
                         start_api=lambda engine, data_dir, offered: start_api(engine, data_dir, args, offered),
                         connect=connect)


def cmd_targets(args: argparse.Namespace) -> int:
    from stepflow_tui.cli.targets import run_targets

    return run_targets(args)


def package_version() -> str:
    # pip puts the package's record beside it: read that (~1 ms) before asking importlib.metadata,
    # which costs ~40 ms to import and search sys.path (an editable install's record is elsewhere)
    installed = _version_beside_package()
    if installed:
        return installed
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stepflow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _version_beside_package() -> str | None:
    """`Version:` of the one stepflow-*.dist-info in the folder holding this package, if there is one."""
    site = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        infos = [name for name in os.listdir(site) if name.startswith("stepflow-") and name.endswith(".dist-info")]
        if len(infos) != 1:
            return None
        with open(os.path.join(site, infos[0], "METADATA"), encoding="utf-8") as metadata:
            for line in metadata:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip() or None
                if not line.strip():  # the end of the headers
                    break
    except OSError:
        pass
    return None


class VersionAction(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked (not at every start)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "print stepflow's version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"stepflow {package_version()}")
        parser.exit()


# -- parser ----------------------------------------------------------------------------------------------
class _Unparsed:
    """Stands for the parser of a subcommand that is not the one on the command line: what is added
    to it is dropped. Making the parsers of every subcommand, ~90 arguments, costs ~8 ms of each
    start; a command line naming one needs that one only (`stepflow --help`, naming none, gets all)."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass

    def set_defaults(self, **kwargs: object) -> None:
        pass

    def add_subparsers(self, **kwargs: object) -> _Unparsed:
        return self

    def add_parser(self, *args: object, **kwargs: object) -> _Unparsed:
        return self


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, the parser of that subcommand alone (a command line naming
    `only` is parsed, and its mistakes worded, the same)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", metavar="DIR",
                        help="where the database and artifacts live (default: $STEPFLOW_STORAGE_PATH, "
                             "else $XDG_DATA_HOME/stepflow)")
    parser = argparse.ArgumentParser(
        prog="stepflow",
        description="Run commands and YAML workflows and watch them live.",
        epilog="Start with:  stepflow tui   or   stepflow run sample_workflows/build-and-test.yaml",
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if only is None or only == name:
            return sub.add_parser(name, **kwargs)
        # not on this command line: not needed to parse it, nor to word its errors or its help
        return cast(argparse.ArgumentParser, _Unparsed())

    def live_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="store_true", help="print the commands' output too")
        p.add_argument("--plain", action="store_true", help="plain lines instead of a live display")
        p.add_argument("--kill-grace", type=float, metavar="SECONDS",
                       help="seconds between SIGTERM and SIGKILL when cancelling (default 10)")

    p = command("run", parents=[common], help="run a workflow file and show its progress")
    p.add_argument("file", help="the workflow YAML file")
    p.add_argument("--target", action="append", metavar="NAME", help="run on this target instead of runs_on "
                   "(repeatable)")
    p.add_argument("--name", help="a name for this execution")
    live_opts(p)
    p.set_defaults(func=cmd_run, is_async=True)

    p = command("exec", parents=[common], help="run any command; its markers become steps",
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

    p = command("rerun", parents=[common], help="run an execution's command or workflow again")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--from-failed", action="store_true",
                   help="skip the workflow steps that completed; run the failed ones and what follows")
    live_opts(p)
    p.set_defaults(func=cmd_rerun, is_async=True)

    p = command("validate", help="check workflow files without running them")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate, is_async=False)

    p = command("ls", parents=[common], help="list executions, newest first")
    p.add_argument("--status", help="only this status (pending, running, completed, failed, cancelled)")
    p.add_argument("--user", help="only this user's")
    p.add_argument("--filter", metavar="TEXT", help="name or command contains TEXT")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls, is_async=False)

    p = command("show", parents=[common], help="show an execution's tree, durations and errors")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show, is_async=False)

    p = command("logs", parents=[common], help="print an execution's log")
    p.add_argument("id", help="execution id (a unique prefix is enough)")
    p.add_argument("--step", help="only this step (and the steps below it)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the execution ends")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.set_defaults(func=cmd_logs, is_async=False)

    p = command("schema", help="print the workflow files' JSON Schema")
    p.set_defaults(func=cmd_schema, is_async=False)

    p = command("tui", parents=[common], help="the terminal UI (the default)")
    p.add_argument("--no-api", action="store_true", help="do not start the embedded API listener")
    p.add_argument("--api-host", default=None, help="API listener address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=None, help="API listener port (default 8080)")
    p.add_argument("--connect", metavar="URL", help="attach to a remote engine (http://HOST:8080)")
    p.add_argument("--token", help="bearer token for --connect")
    p.add_argument("workflow_dirs", nargs="*", metavar="DIR", help="folders to offer workflows from")
    p.add_argument("--max-running", type=max_running_arg, default=None, metavar="N",
                   help=f"executions run at once; more wait queued by priority (default "
                        f"$STEPFLOW_MAX_RUNNING, else {DEFAULT_MAX_RUNNING})")
    p.set_defaults(func=cmd_tui, is_async=True)

    p = command("serve", parents=[common], help="run the engine headless with its HTTP/WebSocket API")
    p.add_argument("--host", default=None, help="address to bind, the API's and the WebSocket's (default 127.0.0.1; "
                   "STEPFLOW_WEBSOCKET_HOST sets the WebSocket's apart)")
    p.add_argument("--port", type=int, default=None, help="port of the HTTP API (default 8080)")
    p.add_argument("--ws-port", type=int, default=None, help="port of the WebSocket (default 8765)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name to answer to besides the bound address and localhost (repeatable; "
                        "also STEPFLOW_ALLOWED_HOSTS); requests for other names are refused")
    p.add_argument("--workflows", action="append", type=Path, metavar="DIR",
                   help="a folder whose workflow files API clients may run by path (repeatable; default: "
                        "$STEPFLOW_WORKFLOW_DIRS, else none: clients send the workflow's text)")
    p.add_argument("--max-running", type=max_running_arg, default=None, metavar="N",
                   help=f"executions run at once; more wait queued by priority (default "
                        f"$STEPFLOW_MAX_RUNNING, else {DEFAULT_MAX_RUNNING})")
    p.add_argument("--monitor-shape", choices=("documented", "reference"), default=None,
                   help="the StepFlow Monitor answers: as its API document has them (the default), or the "
                        "older shape the reference web UI reads (also STEPFLOW_MONITOR_SHAPE)")
    p.add_argument("--rate-limit", action="append", default=[], metavar="SURFACE.CATEGORY[.ROLE]=LIMIT",
                   help="change a documented API's request limit, e.g. opsconductor.requests.standard=200/minute "
                        "or rustci.jobs=off (repeatable; added to STEPFLOW_RATE_LIMITS)")
    p.add_argument("--executr-heartbeat-timeout", type=float, default=None, metavar="SECONDS",
                   help="a running executr job with no heartbeat for this long goes back to the queue, or "
                        "fails past its retries (default 15; also STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT)")
    p.set_defaults(func=cmd_serve, is_async=True)

    p = command("worker", help="claim and run jobs from a `stepflow serve` (or executr) job queue",
                       description="Claim jobs from the executr job-queue API (/api/v1) of a `stepflow serve` "
                                   "or an executr server, run them here and report their output and exit code. "
                                   "Binaries are fetched from the job's binary_url (http, https or file), "
                                   "checked against binary_sha256 before anything runs, and cached by hash. "
                                   "A job gets its env_variables (and PATH) only, not the worker's environment. "
                                   "SIGTERM or Ctrl-C stops claiming and lets running jobs finish within "
                                   "--grace; a second one stops them at once (they fail: worker stopped).")
    p.add_argument("--server", default=None, metavar="URL",
                   help="the server (default $STEPFLOW_SERVER, else http://127.0.0.1:8080)")
    p.add_argument("--token", default=None,
                   help="bearer token when the server has auth on (default $STEPFLOW_TOKEN; "
                        "mint one with `stepflow token create` on the server's machine)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="jobs run at once (default 1)")
    p.add_argument("--rustci-runner", default=None, metavar="NAME",
                   help="serve a RustCI runner instead of the executr queue: register a runner of type "
                        "`worker` named NAME (its max_concurrent_jobs: --concurrency) and run its jobs' steps "
                        "(`sh -c`); NAME a runner_... id serves a runner registered already, --token then "
                        "being its registration token")
    p.add_argument("--id", "--name", dest="id", default=None, metavar="ID",
                   help="this worker's executor id (default HOST-PID-RANDOM)")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="where binaries are cached by sha256 (default $TMPDIR/stepflow-worker-cache)")
    p.add_argument("--cache-max-mb", type=float, default=1024, metavar="MB",
                   help="size the binary cache is kept under, least recently used out first (default 1024)")
    p.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help="where each job gets a fresh directory, removed after it (default "
                        "$TMPDIR/stepflow-worker-jobs); folders left by workers that died are removed "
                        "when a worker starts")
    p.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between heartbeats of a running job (default 5)")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="seconds running jobs get to finish after SIGTERM/Ctrl-C (default 30)")
    p.add_argument("--wait", type=float, default=20.0, metavar="SECONDS",
                   help="long-poll: seconds the server may hold a claim open until a job comes "
                        "(default 20; 0 polls; servers without long polls are polled anyway)")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between claims when the server has no long poll (default 1)")
    p.add_argument("--no-stream", dest="stream", action="store_false",
                   help="send a job's output with its result only, not line by line as it runs (servers "
                        "without live output, the reference executr, get it that way anyway)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_worker, is_async=True)

    p = command("token", parents=[common], help="API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tp = tsub.add_parser("create", parents=[common], help="mint a bearer token (or an API key) and print it")
    tp.add_argument("--user", "--subject", dest="subject", default=None, metavar="NAME",
                    help="who the token is for (default: stepflow)")
    tp.add_argument("--role", choices=("standard", "administrator"), default=None,
                    help="what it may do: administrator-only routes refuse standard (default administrator)")
    tp.add_argument("--api-key", action="store_true",
                    help="an API key (X-API-Key, for the APIs that accept one) instead of a JWT: printed "
                         "once, stored hashed")
    tp.add_argument("--expires", default=None, metavar="LIFETIME",
                    help=f"how long it is good for: 30m, 12h, 7d, 4w, or never (default {DEFAULT_TOKEN_LIFETIME})")
    tp.add_argument("--days", type=float, default=None, help=argparse.SUPPRESS)  # before --expires
    tp = tsub.add_parser("revoke", parents=[common], help="refuse a token from now on (running servers too)")
    tp.add_argument("token_id", metavar="ID", help="the token's id (printed by create), or the token itself; "
                    "an API key's sfk_... id, or the key")
    p.set_defaults(func=cmd_token, is_async=False)

    p = command("targets", parents=[common], help="list or check targets")
    tsub = p.add_subparsers(dest="targets_command", metavar="ACTION")
    tsub.add_parser("list", help="list the known targets")
    tp = tsub.add_parser("test", help="check that a target answers")
    tp.add_argument("name")
    p.set_defaults(func=cmd_targets, is_async=False)
    return parser


#: the subcommands build_parser makes (one missing here is parsed with the whole parser: the same, slower)
_COMMANDS = frozenset({"run", "exec", "rerun", "validate", "ls", "show", "logs", "schema", "tui", "serve", "worker",
                       "token", "targets"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["tui"]
    only = command_of(argv)
    parser = build_parser(only if only in _COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    data_dir = resolve_data_dir(getattr(args, "data_dir", None)) if hasattr(args, "data_dir") else None
    if args.func in (cmd_run, cmd_exec, cmd_rerun):
        pause_collector()  # until the engine has started
    try:
        # (not args.command: `exec` keeps its command's words there)
        if args.func not in READS or getattr(args, "follow", False) or "STEPFLOW_LOG_LEVEL" in os.environ:
            from stepflow_tui.cli.log_setup import setup_logging

            setup_logging(data_dir, to_file=args.func is cmd_tui,
                          detailed=args.func is cmd_serve or getattr(args, "verbose", False),
                          notices_shown=args.func in (cmd_run, cmd_exec, cmd_rerun))
        # else a read command, which logs nothing of its own: it starts without `logging` (the
        # composition root sets it up before the rare work that logs: wiring.read_store)
        if args.is_async:
            import asyncio

            code = asyncio.run(args.func(args))
        else:
            code = args.func(args)
    except CliError as exc:
        print(f"stepflow: {exc}", file=sys.stderr)
        return exc.code
    except EngineError as exc:
        if _is_workflow_error(exc):
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        print(f"stepflow: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `stepflow logs ID | head`: the reader left; not an error
        from stepflow_tui.cli.read_views import reader_gone

        reader_gone()
        return EXIT_OK
    return int(code or 0)


def _is_workflow_error(exc: EngineError) -> bool:
    """A WorkflowError (a workflow file's mistakes, printed as they are), without importing the
    workflow reader to ask: only a command that imported it can have raised one."""
    issues = sys.modules.get("engine.workflow.issues")
    return issues is not None and isinstance(exc, issues.WorkflowError)


if __name__ == "__main__":
    # `python -m stepflow.main`: run the imported module's main, not this `__main__` copy (its
    # functions and the commands' would be two copies of one module)
    from stepflow.main import main as _main

    raise SystemExit(_main())
