"""The mistakes found in a workflow file, and how each is worded: `file:line:column: message`.

A message never quotes a value of the file, only says what kind it is ("expected an integer, got a
string"): a file that is not a workflow (a key, a token) must not come back in an error, over the API
least of all. The place says where to look. Names the author gives to refer to things (keys, step and
target names) are quoted, as a mapping with `steps` is a workflow and those names are its words."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import yaml

from engine.errors import InvalidRequest

#: where a value is in the file: the keys and list indexes leading to it from the top
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, order=True)
class WorkflowIssue:
    """One mistake in a workflow file; `line` and `column` are 1-based."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class WorkflowError(InvalidRequest):
    """A workflow file that cannot run; `issues` holds every mistake found, in file order."""

    title = "Invalid workflow"

    def __init__(self, issues: Iterable[WorkflowIssue]) -> None:
        self.issues: list[WorkflowIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues,))


# PyYAML quotes what it found: a character, an alias, an anchor or a tag handle of the file
# ("found character '@' that cannot start any token", "found undefined alias 'x'"); the names of
# tokens it quotes are its own words ("but found '<block end>'")
_FOUND = re.compile(r"""(\bfound\b(?: [a-z ]*?)?) ?(?:'(?!<)(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _without_content(text: str) -> str:
    text = _FOUND.sub(r"\1", text).rstrip()
    return text + " another character" if text.endswith(" found") else text


def syntax_issue(filename: str, exc: yaml.MarkedYAMLError) -> WorkflowIssue:
    """A YAML syntax error, at its problem's place, in PyYAML's words without the file's."""
    mark = exc.problem_mark or exc.context_mark
    problem = _without_content(exc.problem) if exc.problem else None
    context = _without_content(exc.context) if exc.context else None
    message = f"invalid YAML: {problem or context or 'cannot parse'}"
    if context and problem and problem.startswith("but "):
        # "expected a single document in the stream" + "but found another document"
        message = f"invalid YAML: {context}, {problem}"
    elif context and problem:
        message += f" ({context}"
        if exc.context_mark is not None and exc.context_mark is not mark:
            message += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message += ")"
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return WorkflowIssue(filename, line, column, message)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def validation_message(error: Mapping[str, Any], loc: Loc) -> str:
    """A pydantic validation error, worded for the author of the file."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        return f"expected {ctx.get('expected')}, got {describe(value)}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": f"at least {_number(ctx.get('ge'))}",
            "greater_than": f"greater than {_number(ctx.get('gt'))}",
            "less_than_equal": f"at most {_number(ctx.get('le'))}",
            "less_than": f"less than {_number(ctx.get('lt'))}",
        }[kind]
        return f"must be {bound}"
    if kind == "too_short":
        return "at least one step is required" if loc == ("steps",) else "must not be empty"
    if kind == "string_too_short":
        return "must not be empty"
    return str(error["msg"])


def describe(value: Any) -> str:
    """What kind of value was read from the file, as a message shows it; never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date (quote it to make it a string)"
    return "a value of another kind"


def _number(bound: Any) -> str:
    """A bound of the schema (not of the file)."""
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_loc(loc: Loc) -> str:
    """``steps[2].needs``"""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
