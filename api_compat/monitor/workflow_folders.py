"""Which workflow files `POST /api/workflows {"path": ...}` may read: those inside the folders the
server was started with (`stepflow serve --workflows DIR`, `stepflow tui DIR`,
`STEPFLOW_WORKFLOW_DIRS`), never the data directory. Without folders no path is read at all; a
workflow sent as `text` needs none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from api_compat.monitor.envelope import ApiError

NO_FOLDERS = (
    "this server reads no workflow files: start it with `stepflow serve --workflows DIR` (or "
    "`stepflow tui DIR`, or STEPFLOW_WORKFLOW_DIRS) to allow the files of DIR, or send the "
    "workflow itself as 'text'"
)


def allowed_workflow_file(path: str, folders: Sequence[Path], data_dir: Path | None) -> Path:
    """`path` with its symlinks and `..` resolved, when that is inside one of `folders` and outside
    `data_dir`. Raises `ApiError` (400 without folders or for a path that is none, 403 outside).
    Whether the file exists is not told: the engine's reading says it, for allowed paths only."""
    try:
        resolved = Path(path).resolve()
    except ValueError as exc:  # a NUL byte: no path at all, with or without folders
        raise ApiError(400, f"cannot read the file: {exc}") from None
    except (OSError, RuntimeError):  # a symlink loop
        raise ApiError(400, "cannot read the file: too many levels of symbolic links") from None
    if not folders:
        raise ApiError(400, NO_FOLDERS)
    allowed = [folder.resolve() for folder in folders]
    inside = any(resolved.is_relative_to(folder) for folder in allowed)
    if not inside or (data_dir is not None and resolved.is_relative_to(data_dir.resolve())):
        names = ", ".join(str(folder) for folder in allowed)
        raise ApiError(403, f"'path' must name a file in the workflow folders of this server ({names})")
    return resolved
