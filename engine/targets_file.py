"""The user's targets file: named SSH hosts and Docker images every workflow and command may use.

The file holds the same mapping as a workflow's `targets:` key (a top-level `targets:` key around
it is accepted too, so that a block can be copied from a workflow as it is):

```yaml
web1: {type: ssh, host: 10.0.0.5, user: deploy}
py:   {type: docker, image: python:3.12-slim}
```

It is read with the workflow loader's reader and validated with the same models, so a mistake is
reported the same way, as `file:line:column: message`, before anything runs. Relative paths (a key
file, a known_hosts file) are relative to the targets file's folder. A workflow's own target of the
same name wins over the file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from engine.targets_path import TARGETS_FILE_ENV, user_targets_path
from engine.workflow.load import (
    _UNREADABLE,
    LOCAL,
    Target,
    WorkflowError,
    WorkflowIssue,
    _describe,
    _Reader,
    _target,
)
from engine.workflow.schema import NonEmptyStr, TargetModel
from engine.workflow.yaml_reader import compose, decode

__all__ = ["TARGETS_FILE_ENV", "load_user_targets", "parse_user_targets", "user_targets_path"]

_TARGETS = TypeAdapter(dict[NonEmptyStr, TargetModel])


def load_user_targets(path: Path | None = None) -> dict[str, Target]:
    """The targets of the user's targets file (`user_targets_path()` unless `path`), by name.

    A missing file is no targets. Raises `WorkflowError` listing every mistake in the file.
    """
    path = Path(path) if path is not None else user_targets_path()
    filename = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WorkflowError([WorkflowIssue(filename, 1, 1, f"cannot read the targets file: {reason}")]) from None
    text = decode(data, filename)
    return parse_user_targets(text, filename, base_dir=str(path.resolve().parent))


def parse_user_targets(text: str, filename: str = "<targets>", *, base_dir: str | None = None) -> dict[str, Target]:
    """Targets from the text of a targets file; `filename` is what messages name, `base_dir` the
    folder relative paths are resolved against (None: kept as written)."""
    reader = _TargetsReader(filename)
    # the workflow's composer: the same messages, and the same bounds on aliases and nesting
    root = compose(text, filename)
    if root is None:
        return {}
    if _is_wrapped(root):
        reader.wrapped = True
        root = root.value[0][1]
        if isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null":
            return {}
    raw = reader.read(root, ("targets",))
    if raw is _UNREADABLE:
        raise WorkflowError(reader.issues)
    if not isinstance(raw, dict):
        what = "'targets'" if reader.wrapped else "a targets file"
        reader.issue(root.start_mark, (), f"{what} must be a mapping of target names to targets "
                                             f"(web1: {{type: ssh, host: ...}}), got {_describe(raw)}")
        raise WorkflowError(reader.issues)
    models: dict[str, Any] | None = None
    try:
        models = _TARGETS.validate_python(raw, strict=True)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            error = {**error, "loc": ("targets", *error["loc"])}
            reader.report_validation_error(error, {"targets": raw})
    local = raw.get(LOCAL)
    if isinstance(local, dict) and local.get("type") != "local":
        kind = local.get("type") if isinstance(local.get("type"), str) else "other"
        reader.issue(
            reader.mark(("targets", LOCAL), key=True),
            (),
            f"'{LOCAL}' is the built-in local target; give this {kind} target another name",
        )
    if reader.issues or models is None:
        raise WorkflowError(sorted(set(reader.issues)))
    return {name: _target(name, model, base_dir) for name, model in models.items()}


def _is_wrapped(root: yaml.Node) -> bool:
    """A file whose only key is `targets:` holding the mapping (copied from a workflow), rather
    than a target named "targets" (which has a `type`)."""
    if not isinstance(root, yaml.MappingNode) or len(root.value) != 1:
        return False
    key, value = root.value[0]
    if not isinstance(key, yaml.ScalarNode) or key.value != "targets":
        return False
    if isinstance(value, yaml.ScalarNode):
        return value.tag == "tag:yaml.org,2002:null"
    if not isinstance(value, yaml.MappingNode):
        return False
    return not any(isinstance(k, yaml.ScalarNode) and k.value == "type" for k, _ in value.value)


class _TargetsReader(_Reader):
    """The workflow reader, naming places as the targets file has them: `web1.port`, not
    `targets.web1.port`, unless the file wraps its targets in a `targets:` key."""

    wrapped = False

    def issue(self, mark: yaml.Mark, loc: tuple[str | int, ...], message: str) -> None:
        if not self.wrapped and loc[:1] == ("targets",):
            loc = loc[1:]
        super().issue(mark, loc, message)
