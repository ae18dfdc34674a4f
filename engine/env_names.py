"""Environment variable names: one rule for workflow files and submitted commands (no pydantic
here, so a command's submission does not import the workflow schema)."""

from __future__ import annotations

import re

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name_problem(value: str) -> str | None:
    """What is wrong with `value` as an environment variable's name (None: nothing)."""
    if _ENV_NAME_RE.fullmatch(value):
        return None
    return f"invalid environment variable name {value!r} (letters, digits and _, not starting with a digit)"
