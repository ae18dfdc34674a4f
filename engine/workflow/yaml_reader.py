"""Reading a YAML file into plain values while remembering the node each value came from, so that every
mistake found in a value, by the reader itself or later by the schema and the graph checks, points at
its place in the file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from engine.workflow.issues import (
    Loc,
    WorkflowError,
    WorkflowIssue,
    did_you_mean,
    format_loc,
    syntax_issue,
    validation_message,
)
from engine.workflow.schema import TARGET_MODELS, TARGET_TYPES, DefaultsModel, StepModel, WorkflowModel

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: what the reader returns for a node it already reported; validation errors about it are dropped
UNREADABLE = object()
# YAML scalars read as numbers or booleans; in `env` the text as written is kept instead
_TYPED_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool"))


#: the largest workflow (or targets) document read, file or text, in bytes (characters for a text):
#: a 500-step workflow is ~60 KB. The API's own bound is its JSON body cap (1 MiB).
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
#: the most YAML nodes a document may hold, and the most values it may expand to once its aliases
#: and merge keys are followed: a 2 KB "billion laughs" document expands to 10^9 values
MAX_VALUES = 100_000
#: the deepest nesting of lists and mappings (a workflow needs 5 levels); each level is a few Python
#: frames in the composer and the reader, so 20,000 levels of `[` would be a RecursionError
MAX_DEPTH = 100


class TooLarge(Exception):
    """A document beyond one of the bounds above, where the bound was crossed."""

    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message

    def issue(self, filename: str) -> WorkflowIssue:
        line, column = (self.mark.line + 1, self.mark.column + 1) if self.mark is not None else (1, 1)
        return WorkflowIssue(filename, line, column, self.message)


def too_large(size: int, filename: str) -> WorkflowError:
    """The refusal of a document of `size` bytes (or characters) beyond `MAX_DOCUMENT_BYTES`."""
    limit = MAX_DOCUMENT_BYTES // (1024 * 1024)
    message = f"the document is too large ({size / (1024 * 1024):.1f} MiB; at most {limit} MiB)"
    return WorkflowError([WorkflowIssue(filename, 1, 1, message)])


def decode(data: bytes, filename: str) -> str:
    """The text of a file's bytes (UTF-8, with or without a BOM). Raises `WorkflowError`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        # not the byte itself: messages never quote what the file holds
        raise WorkflowError([WorkflowIssue(filename, line, column, "the file is not UTF-8 text")]) from None


class _BoundedComposer(Composer):
    """PyYAML's composer (same nodes, marks and tags) that stops at `MAX_DEPTH` levels and
    `MAX_VALUES` nodes, before the recursion or the memory runs out."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooLarge(self.peek_event().start_mark, f"nesting too deep (more than {MAX_DEPTH} levels)")
            if self._nodes > MAX_VALUES:
                raise TooLarge(self.peek_event().start_mark, f"too many values (more than {MAX_VALUES:,})")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


class _PureLoader(_BoundedComposer, yaml.SafeLoader):  # type: ignore[misc]
    """The pure-Python parser: slow, but its messages are the ones ours are worded from."""


#: libyaml whole (parser and composer in C): ten times faster than the pure-Python parser, which took
#: 0.3 ms per step of a 500-step workflow, as much as running the step; twice as fast as libyaml's
#: parser under our composer. Its composer has no bound but libyaml's 1,000 levels, so it is used up
#: to `_FAST_COMPOSE_CHARS` only (at most ~130,000 nodes, ~50 MB); the reader then holds what it
#: composed to `MAX_VALUES` and `MAX_DEPTH`.
_WholeCLoader: type[Any] | None = getattr(yaml, "CSafeLoader", None)
_FAST_COMPOSE_CHARS = 256 * 1024

_FastLoader: type[Any] | None = None
if _WholeCLoader is not None:
    from yaml.cyaml import CParser

    class _CLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's parser under the bounded composer, for larger documents."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)

    _FastLoader = _CLoader


def compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of ``text``; None for an empty document. Raises `WorkflowError`, also for
    a document beyond `MAX_DOCUMENT_BYTES`, `MAX_VALUES` nodes or `MAX_DEPTH` levels."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise too_large(len(text), filename)
    try:
        if _FastLoader is not None:
            fast = _WholeCLoader if len(text) <= _FAST_COMPOSE_CHARS else _FastLoader
            try:
                return yaml.compose(text, Loader=fast)
            except yaml.MarkedYAMLError as exc:
                if exc.problem_mark is not None and "maximum nesting depth" in (exc.problem or ""):
                    # libyaml's own bound (1,000), met while it looks ahead: the pure-Python parser
                    # would take seconds to get as far (it looks ahead the same way, more slowly)
                    nesting = f"nesting too deep (more than {MAX_DEPTH} levels)"
                    raise TooLarge(exc.problem_mark, nesting) from None
            except yaml.YAMLError:
                pass
            # the pure-Python parser says what is wrong, in the words our messages expect
        return yaml.compose(text, Loader=_PureLoader)
    except TooLarge as exc:
        raise WorkflowError([exc.issue(filename)]) from None
    except yaml.MarkedYAMLError as exc:
        raise WorkflowError([syntax_issue(filename, exc)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = "invalid YAML: a character YAML does not allow (a control character?)"
        raise WorkflowError([WorkflowIssue(filename, line, column, message)]) from None


@dataclass(frozen=True, slots=True)
class _Where:
    value: yaml.Node
    #: the key node, for a mapping's value
    key: yaml.Node | None = None


class Reader:
    """Turns YAML nodes into plain values and remembers the node each value came from."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.where: dict[Loc, _Where] = {}
        self.issues: list[WorkflowIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()
        #: values read so far, aliases and merge keys expanded: bounded by `MAX_VALUES`
        self._read = 0
        #: the nodes read, to tell a value read again through an alias
        self._seen: set[int] = set()
        self._aliased = False

    def issue(self, mark: yaml.Mark, loc: Loc, message: str) -> None:
        text = f"{format_loc(loc)}: {message}" if loc else message
        self.issues.append(WorkflowIssue(self.filename, mark.line + 1, mark.column + 1, text))

    def line(self, loc: Loc) -> int:
        return self.where[loc].value.start_mark.line + 1

    def read(self, node: yaml.Node, loc: Loc, key: yaml.Node | None = None) -> Any:
        self._count(node, loc)
        self.where[loc] = _Where(node, key)
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _TYPED_SCALAR_TAGS and _keeps_text(loc):
                return node.value
            try:
                return self._constructor.construct_object(node, deep=True)
            except Exception:  # noqa: BLE001 - a ConstructorError, or what a constructor's parsing raises
                # (`!!int x`: ValueError, `2024-02-30`: ValueError, `!!bool x`: KeyError, 5,000 digits)
                # neither the tag nor the value: messages never quote what the file holds
                message = "unsupported YAML tag" if node.tag.startswith("!") else "invalid value for its YAML type (quote it to make it a string)"
                self.issue(node.start_mark, loc, message)
                return UNREADABLE
        if id(node) in self._open:
            self.issue(node.start_mark, loc, "a YAML alias refers to a node that contains it")
            return UNREADABLE
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.read(item, (*loc, i)) for i, item in enumerate(node.value)]
            return {
                name: self.read(value, (*loc, name), key_node)
                for name, (key_node, value) in self._entries(node, loc).items()
            }
        finally:
            self._open.discard(id(node))

    def _entries(
        self, node: yaml.MappingNode, loc: Loc, *, merging: bool = False
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key, with `<<` merge keys applied (explicit keys win)."""
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: list[dict[str, tuple[yaml.Node, yaml.Node]]] = []
        for key_node, value_node in node.value:
            if merging:  # a merge bomb: each level of `<<: [*a, *a, ...]` multiplies these
                self._count(value_node, loc)
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    self._count(source, loc)
                    if isinstance(source, yaml.MappingNode) and id(source) not in self._open:
                        self._open.add(id(source))
                        try:
                            merged.append(self._entries(source, loc, merging=True))
                        finally:
                            self._open.discard(id(source))
                    else:
                        self.issue(source.start_mark, loc, "'<<' merges mappings only")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node.start_mark, loc, "a key must be a plain string, not a list or a mapping")
                continue
            name = key_node.value
            if name in entries:
                first = entries[name][0].start_mark.line + 1
                self.issue(key_node.start_mark, loc, f"duplicate key '{name}' (first on line {first})")
                continue
            entries[name] = (key_node, value_node)
        for source_entries in merged:
            for name, entry in source_entries.items():
                entries.setdefault(name, entry)
        return entries

    def _count(self, node: yaml.Node, loc: Loc) -> None:
        """Stop a document that expands beyond what any workflow needs: by its aliases and merge
        keys (a 2 KB "billion laughs" is 10^9 values), or as written when libyaml's composer,
        which has no such bounds, composed it."""
        self._read += 1
        if id(node) in self._seen:
            self._aliased = True
        else:
            self._seen.add(id(node))
        if self._read > MAX_VALUES:
            message = (f"too many aliases: the document expands to more than {MAX_VALUES:,} values"
                       if self._aliased else f"too many values (more than {MAX_VALUES:,})")
            raise WorkflowError([WorkflowIssue(self.filename, *_line_column(node), message)])
        if len(loc) >= MAX_DEPTH:
            message = f"nesting too deep (more than {MAX_DEPTH} levels)"
            raise WorkflowError([WorkflowIssue(self.filename, *_line_column(node), message)])

    def mark(self, loc: Loc, *, key: bool = False) -> yaml.Mark:
        """Where `loc` is in the file: its key or its value, else its nearest enclosing node."""
        while loc not in self.where and loc:
            loc, key = loc[:-1], False
        where = self.where.get(loc)
        if where is None:
            return yaml.Mark(self.filename, 0, 0, 0, None, None)
        if key and where.key is not None:
            return where.key.start_mark
        return where.value.start_mark

    # -- pydantic errors -------------------------------------------------------------------------

    def report_validation_error(self, error: Mapping[str, Any], raw: dict[str, Any]) -> None:
        if error.get("input") is UNREADABLE:
            return
        loc = _without_union_tags(tuple(error["loc"]))
        kind = error["type"]
        ctx = error.get("ctx") or {}
        value = error.get("input")
        if loc and loc[-1] == "[key]":
            key_loc = loc[:-1]
            self.issue(self.mark(key_loc, key=True), key_loc[:-1], validation_message(error, key_loc))
        elif kind == "missing":
            self.issue(self.mark(loc[:-1]), loc[:-1], f"missing required key '{loc[-1]}'")
        elif kind == "extra_forbidden":
            name = str(loc[-1])
            hint = did_you_mean(name, _allowed_keys(loc[:-1], raw))
            self.issue(self.mark(loc, key=True), loc[:-1], f"unknown key '{name}'{hint}")
        elif kind == "union_tag_not_found":
            types = ", ".join(f"'{t}'" for t in TARGET_TYPES)
            self.issue(self.mark(loc), loc, f"missing required key 'type' (one of {types})")
        elif kind == "union_tag_invalid":
            tag = str(ctx.get("tag", value))
            types = ", ".join(f"'{t}'" for t in TARGET_TYPES)
            hint = did_you_mean(tag, TARGET_TYPES)
            message = f"unknown target type '{tag}'{hint}; expected one of {types}"
            self.issue(self.mark((*loc, "type")), (*loc, "type"), message)
        else:
            self.issue(self.mark(loc), loc, validation_message(error, loc))


def _line_column(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _keeps_text(loc: Loc) -> bool:
    """An `env` value (workflow's or a step's): keep "0755", "yes", "1.10" as written."""
    return (len(loc) == 2 and loc[0] == "env") or (len(loc) == 4 and loc[0] == "steps" and loc[2] == "env")


def _without_union_tags(loc: Loc) -> Loc:
    # pydantic puts the discriminator's value in the path of a target's errors:
    # ("targets", "web1", "ssh", "port") is the file's targets.web1.port
    if len(loc) >= 3 and loc[0] == "targets" and loc[2] in TARGET_TYPES:
        return loc[:2] + loc[3:]
    return loc


def _allowed_keys(loc: Loc, raw: Any) -> list[str]:
    if loc == ():
        return list(WorkflowModel.model_fields)
    if loc == ("defaults",):
        return list(DefaultsModel.model_fields)
    if len(loc) == 2 and loc[0] == "steps":
        return list(StepModel.model_fields)
    if len(loc) == 2 and loc[0] == "targets":
        target = raw.get("targets", {}).get(loc[1]) if isinstance(raw.get("targets"), dict) else None
        kind = target.get("type") if isinstance(target, dict) else None
        if kind in TARGET_MODELS:
            return list(TARGET_MODELS[kind].model_fields)
        return sorted({name for model in TARGET_MODELS.values() for name in model.model_fields})
    return []
