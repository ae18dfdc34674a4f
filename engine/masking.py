"""Secret masking: values declared secret (or announced with ::add-mask::) become *** in every
stored and streamed line from then on."""

from __future__ import annotations

MASK = "***"


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
