"""The hierarchical serials: what each looks like, and the 422 a malformed one is answered with
(`details.field`, `expected_format`, `received`, as the document's error example shows).

Job `J20250001`, execution `J20250001.0001`, branch `J20250001.0001.0001`, target `T20250001`: a
letter, the year, a number of at least four digits (more once a year has 9,999); the parts after
the dots are numbered per job and per execution."""

from __future__ import annotations

import re
from dataclasses import dataclass

from api_compat.opsconductor.errors import OpsError


@dataclass(frozen=True, slots=True)
class SerialKind:
    field: str
    what: str
    example: str
    pattern: re.Pattern[str]

    def check(self, raw: str, *, field: str | None = None) -> str:
        """`raw` if it is such a serial, else the documented 422."""
        if self.pattern.fullmatch(raw) is None:
            raise OpsError(422, f"Invalid {self.what} format", {
                "field": field or self.field, "expected_format": self.example, "received": raw[:200]})
        return raw

    def matches(self, raw: str) -> bool:
        return self.pattern.fullmatch(raw) is not None


JOB = SerialKind("job_serial", "job serial", "J20250001", re.compile(r"J\d{8,}"))
EXECUTION = SerialKind("execution_serial", "execution serial", "J20250001.0001", re.compile(r"J\d{8,}\.\d{4,}"))
BRANCH = SerialKind("branch_serial", "branch serial", "J20250001.0001.0001",
                    re.compile(r"J\d{8,}\.\d{4,}\.\d{4,}"))
TARGET = SerialKind("target_serial", "target serial", "T20250001", re.compile(r"T\d{8,}"))


def execution_of(branch_serial: str) -> str:
    return branch_serial.rsplit(".", 1)[0]


def job_of(serial: str) -> str:
    return serial.split(".", 1)[0]


def branch_id(number: int) -> str:
    """The document's `branch_id`: the branch's number in its execution, three digits."""
    return f"{number:03d}"
