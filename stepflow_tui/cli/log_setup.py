"""Where the CLI's log records go: the TUI's file, or stderr as one `stepflow: message` line per
warning or error (detailed with `-v`, for `serve`, or with STEPFLOW_LOG_LEVEL=INFO or DEBUG).

Apart from `main`: `logging` costs a few milliseconds to import, which the read commands (`ls`,
`show`, `logs`) do not pay unless something of theirs may log (see main.main)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: loggers whose warnings and errors `run`/`exec` already print as the execution's notices
#: (`error: artifact refused: …`): said once is enough
NOTICE_LOGGERS = ("engine.execution.command_pump",)


class BriefFormatter(logging.Formatter):
    """`stepflow: message`, for a person at a terminal: the time, level, logger and traceback come
    with `-v` (or STEPFLOW_LOG_LEVEL=INFO or DEBUG)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"stepflow: {record.getMessage()}"


def setup_logging(data_dir: Path | None, *, to_file: bool, detailed: bool = False,
                  notices_shown: bool = False) -> None:
    """Logging to the TUI's file, or to stderr: detailed for `serve` and with `detailed` (`-v`),
    else one `stepflow: message` line per warning or error."""
    level_name = os.environ.get("STEPFLOW_LOG_LEVEL", "WARNING").upper()
    level = getattr(logging, level_name, None)
    if not isinstance(level, int):
        print(f"stepflow: STEPFLOW_LOG_LEVEL={level_name!r} is not a level; using WARNING", file=sys.stderr)
        level = logging.WARNING
    root = logging.getLogger()
    root.setLevel(level)
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    detailed = detailed or to_file or level < logging.WARNING
    if to_file and data_dir is not None:
        from stepflow_tui.cli.data_dir import ensure_data_dir

        ensure_data_dir(data_dir)
        handler: logging.Handler = logging.FileHandler(data_dir / "stepflow.log")
    else:
        handler = logging.StreamHandler(sys.stderr)
        # a full disk: the command says so itself, in one line (main's EngineError)
        handler.addFilter(lambda record: not getattr(record, "store_full", False))
        if notices_shown and not detailed:
            handler.addFilter(lambda record: not record.name.startswith(NOTICE_LOGGERS))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s") if detailed
                         else BriefFormatter())
    root.addHandler(handler)
