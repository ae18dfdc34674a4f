"""The data directory as the command line uses it: made when missing, or a clear CliError."""

from __future__ import annotations

from pathlib import Path

from stepflow_tui.cli.errors import EXIT_USAGE, CliError


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory; a path that cannot be one (a file, no permission) is a CliError."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
        raise CliError(f"cannot use {data_dir} as the data directory: {reason} "
                       f"(choose another with --data-dir or STEPFLOW_STORAGE_PATH)", EXIT_USAGE) from None
    return data_dir
