"""The help modal: the key bindings active on the screen below it, grouped by who owns them: that screen's own first
("Dashboard"), then the app's ("Everywhere"), then what every Textual app has ("General": focus, copy, ctrl+q),
then the focused widget's ("Tables": cursor and paging) last."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

KeyGroups = list[tuple[str, list[tuple[str, str]]]]  # (group title, [(key, what it does)])
FIRST = ("Everywhere", "General")  # after the screen's own group; the widgets' groups come last
GENERIC = {
    (key, b.action) for b in (*App.BINDINGS, *Screen.BINDINGS) if isinstance(b, Binding) for key in b.key.split(",")
}


def _screen_title(screen: Screen) -> str:
    return type(screen).__name__.removesuffix("Screen")


def _group_title(node: DOMNode, binding: Binding) -> str:
    if (binding.key, binding.action) in GENERIC:
        return "General"
    if isinstance(node, Screen):
        return _screen_title(node)
    if isinstance(node, DataTable):
        return "Tables"
    return "Everywhere" if node is node.app else type(node).__name__


def key_groups(screen: Screen) -> KeyGroups:
    """The enabled, described bindings of `screen`'s binding chain, by group: the screen's first, the focused
    widgets' last."""
    app = screen.app
    groups: dict[str, list[tuple[str, str]]] = {}
    for node, binding, enabled, _ in screen.active_bindings.values():
        if enabled and binding.description:
            title = _group_title(node, binding)
            groups.setdefault(title, []).append((app.get_key_display(binding), binding.description))
    first = [_screen_title(screen), *FIRST]
    return sorted(groups.items(), key=lambda group: first.index(group[0]) if group[0] in first else len(first))


class HelpScreen(ModalScreen[None]):
    """Lists key bindings by group; any of escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, groups: KeyGroups) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static("Keys", id="help-title")
            table: DataTable[str | Text] = DataTable(show_cursor=False, id="help-keys")
            table.add_columns("key", "action")
            for title, keys in self.groups:
                table.add_row(Text(title, style="bold"), "")
                for key, description in keys:
                    table.add_row(key, description)
            yield table
            yield Static("escape closes", id="help-hint")
