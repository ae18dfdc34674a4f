"""Where the user's targets file is (engine.targets_file reads it). Apart from the reader, which
brings the workflow models (pydantic, ~0.1 s to import), so that a start-up without a targets file
does not pay for them."""

from __future__ import annotations

import os
from pathlib import Path

#: names the targets file, overriding the XDG location
TARGETS_FILE_ENV = "STEPFLOW_TARGETS_FILE"


def user_targets_path() -> Path:
    """`$STEPFLOW_TARGETS_FILE`, else `$XDG_CONFIG_HOME/stepflow/targets.yaml`, else
    `~/.config/stepflow/targets.yaml` (the file need not exist)."""
    explicit = os.environ.get(TARGETS_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config_home).expanduser() if config_home else Path.home() / ".config"
    return base / "stepflow" / "targets.yaml"
