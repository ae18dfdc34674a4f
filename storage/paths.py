"""Where stepflow keeps its data: the database file and the artifact store, under one directory."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STEPFLOW_STORAGE_PATH"


def default_data_dir() -> Path:
    """`$STEPFLOW_STORAGE_PATH`, else `$XDG_DATA_HOME/stepflow`, else `~/.local/share/stepflow`."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # the XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "stepflow"
    return Path.home() / ".local" / "share" / "stepflow"


def database_path(data_dir: Path) -> Path:
    return Path(data_dir) / "stepflow.db"


def artifacts_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "artifacts"
