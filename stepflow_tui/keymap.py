"""User key remaps: a TOML file mapping binding ids to keys.

```toml
# ~/.config/stepflow/keys.toml
[keys]
"execution.cancel" = "x"          # one key
"log.search" = "slash,ctrl+f"     # several, comma separated
```

Every `Binding` in the app has a stable `id` (listed by `?`); Textual's keymap replaces the keys
of the bindings whose id appears here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


def default_keys_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stepflow" / "keys.toml"


@dataclass(slots=True)
class LoadedKeymap:
    keys: dict[str, str] = field(default_factory=dict)
    #: problems found in the file, for a notification (the app still starts)
    problems: list[str] = field(default_factory=list)


def load_keymap(path: Path | None = None, *, known_ids: set[str] | None = None) -> LoadedKeymap:
    """Read the remaps. A missing file is no remap; a broken one is reported, not fatal."""
    path = path or default_keys_path()
    loaded = LoadedKeymap()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return loaded
    except OSError as exc:
        loaded.problems.append(f"{path}: {exc.strerror or exc}")
        return loaded
    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        loaded.problems.append(f"{path}: {exc}")
        return loaded
    table = data.get("keys", data)
    if not isinstance(table, dict):
        loaded.problems.append(f"{path}: [keys] must be a table of binding id = \"key\"")
        return loaded
    for binding_id, keys in table.items():
        if isinstance(keys, list):
            keys = ",".join(str(k) for k in keys)
        if not isinstance(keys, str) or not keys.strip():
            loaded.problems.append(f"{path}: {binding_id}: keys must be a non-empty string")
            continue
        if known_ids is not None and binding_id not in known_ids:
            loaded.problems.append(f"{path}: unknown binding id {binding_id!r}")
            continue
        loaded.keys[binding_id] = keys.replace(" ", "")
    return loaded
