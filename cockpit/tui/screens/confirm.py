"""A yes/no modal for actions that cannot be taken back: it dismisses with True to go ahead, False not to."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class _Choice(Button, can_focus=False):
    """A button that takes no focus: keys go to the modal's bindings, so enter always confirms."""


class ConfirmScreen(ModalScreen[bool]):
    """Asks `question`, with `detail` under it (what the action does); y or enter confirms, n or escape does not."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Confirm"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text(self.question), id="confirm-question")
            if self.detail:
                yield Static(Text(self.detail), id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield _Choice("Confirm (y/enter)", variant="error", id="confirm-yes")
                yield _Choice("Cancel (n/escape)", id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
