"""Artifacts of an execution: a table (name, type, size, step) and a preview of text artifacts."""

from __future__ import annotations

from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import DataTable, Static

from engine.model import Artifact, ArtifactFilter
from stepflow_tui import formatting

PREVIEW_LIMIT = 256 * 1024


def looks_textual(artifact: Artifact, data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return False
    mime = artifact.mime_type or ""
    if mime.startswith("text/") or any(k in mime for k in ("json", "xml", "yaml", "javascript", "toml")):
        return True
    try:
        data[:8192].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ArtifactTable(DataTable):
    BINDINGS = [
        Binding("s", "save", "Save copy", id="artifacts.save"),
    ]

    @dataclass
    class SaveRequested(Message):
        artifact: Artifact

    def action_save(self) -> None:
        pane = self.parent
        while pane is not None and not isinstance(pane, ArtifactPane):
            pane = pane.parent
        if pane is not None and pane.current is not None:
            self.post_message(self.SaveRequested(pane.current))


class ArtifactPane(Vertical):
    """The store's list of an execution's artifacts, merged with what the events told (the app's
    `LiveCache`): the store writer commits a moment after an artifact's event, and events that came
    before this pane opened were seen by the cache only. An artifact known from the events alone
    is read all the same: the engine waits for its store writer when the store misses one."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.execution_id: str | None = None
        self.step_names: dict[str, str] = {}
        self.artifacts: list[Artifact] = []
        #: the store's rows at its last read, and their ids
        self._stored_rows: list[Artifact] = []
        self._stored: set[str] = set()

    def compose(self) -> ComposeResult:
        table = ArtifactTable(id="artifact-table", cursor_type="row", zebra_stripes=False)
        table.add_columns("Name", "Type", "Size", "Step")
        yield table
        with VerticalScroll(id="artifact-preview-scroll"):
            yield Static(Text("Select an artifact to preview it.", style="dim"), id="artifact-preview")

    @property
    def client(self):
        return self.app.client  # type: ignore[attr-defined]

    @property
    def current(self) -> Artifact | None:
        table = self.query_one(ArtifactTable)
        if not self.artifacts or table.cursor_row < 0 or table.cursor_row >= len(self.artifacts):
            return None
        return self.artifacts[table.cursor_row]

    def show(self, execution_id: str, step_names: dict[str, str]) -> None:
        self.execution_id = execution_id
        self.step_names = step_names
        self._fill(self._merged())
        self.reload()

    def changed(self, step_names: dict[str, str]) -> None:
        """Artifacts were added or deleted (the app's live cache has them): shown at once, whatever
        the store holds yet; the store is read again after."""
        self.step_names = step_names
        if self.execution_id is not None:
            self._fill(self._merged())
            self.reload()

    def _merged(self) -> list[Artifact]:
        live = getattr(self.app, "live", None)
        entry = live.get(self.execution_id) if live is not None and self.execution_id else None
        if entry is None:
            return list(self._stored_rows)
        rows = [a for a in self._stored_rows if a.id not in entry.deleted_artifacts]
        rows += [a for a in entry.artifacts.values() if a.id not in self._stored]
        return sorted(rows, key=lambda a: (a.created_at, a.id))

    @work(group="artifacts-load", exclusive=True)
    async def reload(self) -> None:
        if self.execution_id is None:
            return
        execution_id = self.execution_id
        try:
            rows, _total = await self.client.list_artifacts(ArtifactFilter(execution_id=execution_id, limit=1000))
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        if execution_id != self.execution_id:
            return
        self._stored_rows = rows
        self._stored = {a.id for a in rows}
        self._fill(self._merged())

    def _fill(self, rows: list[Artifact]) -> None:
        try:
            table = self.query_one(ArtifactTable)
            preview = self.query_one("#artifact-preview", Static)
        except NoMatches:
            return  # closed (back, quit) while reading: its widgets are being removed
        if [a.id for a in rows] == [a.id for a in self.artifacts] and table.row_count == len(rows):
            self.artifacts = rows
            return  # the same rows: keep the cursor and the preview
        cursor = table.cursor_row
        self.artifacts = rows
        table.clear()
        for a in rows:
            table.add_row(a.name, a.artifact_type.value, formatting.size(a.file_size),
                          self.step_names.get(a.step_id or "", "—"), key=a.id)
        if not rows:
            preview.update(Text("No artifacts.", style="dim"))
        elif 0 <= cursor < len(rows):
            table.move_cursor(row=cursor)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        artifact = self.current
        if artifact is not None:
            self._preview(artifact)

    @work(group="artifact-preview", exclusive=True)
    async def _preview(self, artifact: Artifact) -> None:
        preview = self.query_one("#artifact-preview", Static)
        if artifact.id not in self._stored:
            # told by the events only: the read waits for the store writer to commit it
            preview.update(Text(f"{artifact.name}: being stored…", style="dim"))
        try:
            data = await self.client.read_artifact(artifact.id)
        except Exception as exc:
            preview.update(Text(f"Cannot read {artifact.name}: {getattr(exc, 'message', exc)}", style="red"))
            return
        if not looks_textual(artifact, data):
            preview.update(Text(f"{artifact.name}: {artifact.mime_type}, {formatting.size(artifact.file_size)} "
                                "(binary, no preview; s saves a copy)", style="dim"))
            return
        text = data[:PREVIEW_LIMIT].decode("utf-8", errors="replace")
        lexer = Syntax.guess_lexer(artifact.file_name, text)
        preview.update(Syntax(text, lexer, line_numbers=True, word_wrap=False, theme="ansi_dark"))
