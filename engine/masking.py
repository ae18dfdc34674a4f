"""Secret masking: values declared secret (or announced with ::add-mask::) become *** in every
stored and streamed line from then on, and in every other text taken from a command's output
(step names, messages, errors, metadata, artifact descriptions, progress text)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any, TypeVar

MASK = "***"

_Record = TypeVar("_Record")


class Masker:
    def __init__(self, values: list[str] | None = None) -> None:
        self._values: list[str] = []
        for value in values or []:
            self.add(value)

    def add(self, value: str) -> None:
        value = value.strip("\r\n")
        # very short values would mask ordinary text everywhere; GitHub masks them anyway, we don't
        if len(value) < 3 or value in self._values:
            return
        self._values.append(value)
        # longest first, so a secret containing another is masked whole
        self._values.sort(key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def mask_env(self, env: dict[str, str]) -> dict[str, str]:
        return {k: self.mask(v) for k, v in env.items()}

    def mask_value(self, value: Any) -> Any:
        """`value` with its text masked: a string, or the strings (keys too) of a dict, list or tuple."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_value(k): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.mask_value(v) for v in value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # a marker parameter that parsed as a number ("[pin=123456]") is shown as one
            text = str(value)
            masked = self.mask(text)
            return masked if masked != text else value
        return value

    def mask_fields(self, record: _Record, *, keep: Collection[str] = ()) -> _Record:
        """A copy of the dataclass `record` with the text of every field masked (strings, and what
        dicts, lists and tuples hold), but those named in `keep`; `record` itself when there is
        nothing to mask."""
        if not self._values:
            return record
        changes = {}
        for f in dataclasses.fields(record):  # type: ignore[arg-type]
            if f.name in keep:
                continue
            value = getattr(record, f.name)
            # a typed number field (an id, a line number, a percentage) stays a number
            if not isinstance(value, str | dict | list | tuple):
                continue
            masked = self.mask_value(value)
            if masked != value:
                changes[f.name] = masked
        return dataclasses.replace(record, **changes) if changes else record  # type: ignore[type-var]
