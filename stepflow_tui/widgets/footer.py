"""The footer, kept to what fits: at narrow widths the less needed keys give way (all of them stay
in `?` and the command palette) instead of the last ones, quit and help among them, being cut."""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

#: binding ids, the most needed first: shown while they fit, then the ids not listed
KEEP_ORDER = (
    "app.quit",
    "app.help",
    "execution.back",
    "execution.cancel",
    "list.open",
    "app.launch",
    "execution.artifacts",
    "tree.select",
    "log.search",
    "executions.filter",
    "log.follow",
    "log.markers",
    "log.hide_markers",
    "execution.rerun",
    "execution.delete",
    "log.wrap",
    "log.timestamps",
)
#: the command palette's key, docked right (its border and padding included)
PALETTE_WIDTH = 13


class FittingFooter(Footer):
    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        width = self.size.width or self.app.size.width
        keys = [w for w in widgets if isinstance(w, FooterKey) and not w.has_class("-command-palette")]
        room = width - (PALETTE_WIDTH if len(keys) < len(widgets) else 0)
        ids = {(b.key, b.action): b.id for _node, b, _enabled, _tip in self.screen.active_bindings.values()}
        rank = {binding_id: i for i, binding_id in enumerate(KEEP_ORDER)}

        def need(key: FooterKey) -> int:
            return cell_len(key.key_display) + cell_len(key.description) + 3

        # the most needed first, until one does not fit (a less needed one shown in place of a
        # more needed one would puzzle): unlisted ids come after the listed ones, in footer order
        order = sorted(range(len(keys)), key=lambda i: (rank.get(ids.get((keys[i].key, keys[i].action)) or "",
                                                              len(KEEP_ORDER)), i))
        shown: set[int] = set()
        for i in order:
            if need(keys[i]) > room:
                break
            shown.add(i)
            room -= need(keys[i])
        gone = {id(keys[i]) for i in range(len(keys)) if i not in shown}
        kept: list[Widget] = [w for w in widgets if id(w) not in gone]
        yield from kept

    def on_resize(self, event: events.Resize) -> None:
        if self._bindings_ready:
            self.call_after_refresh(self.recompose)
