"""The sweep form: the [sweep] settings a run may override, prefilled, checked before anything starts; a box
turns profiling on (the [sweep] profilers, on every rank)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from cockpit.config import SweepSection

# what the form offers, in order: the same keys `cluster sweep run` takes as options
FIELDS = ("nodes", "gpus_per_node", "prompt_limit", "batch_size", "max_new_tokens", "time_limit")
TYPES = {f.name: f.type for f in fields(SweepSection)}
MINIMUM = {"prompt_limit": 0}  # 0: every prompt; the other numbers start at 1
LABELS = {"prompt_limit": "prompts (0: all)"}
SHORT = 32  # lines: the form with its three-line fields and buttons takes 29


def parse_overrides(values: dict[str, str], defaults: SweepSection) -> dict[str, Any]:
    """The fields that differ from the defaults, typed; a ValueError naming the field for bad input."""
    out: dict[str, Any] = {}
    for name, text in values.items():
        text = text.strip()
        if TYPES[name] in ("int", int):
            least = MINIMUM.get(name, 1)
            if not text.isdigit() or int(text) < least:
                raise ValueError(f"{name}: expected a whole number of at least {least}, got {text!r}")
            value: Any = int(text)
        else:
            if not text:
                raise ValueError(f"{name}: empty")
            value = text
        if value != getattr(defaults, name):
            out[name] = value
    return out


class SweepFormScreen(ModalScreen[dict[str, Any] | None]):
    """Returns the overrides to start a sweep with, or None when dismissed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT, "-tall")]  # under SHORT lines, every field takes one

    def __init__(self, defaults: SweepSection, backend: str) -> None:
        super().__init__()
        self.defaults, self.backend = defaults, backend

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-form"):
            yield Static(f"Start a sweep ({self.backend} scheduler)", id="sweep-form-title")
            for name in FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(LABELS.get(name, name.replace("_", " ")), classes="form-label")
                    yield Input(str(getattr(self.defaults, name)), id=f"field-{name}", classes="form-input")
            profilers = ", ".join(self.defaults.profilers)
            yield Checkbox(f"profile every rank ({profilers})", self.defaults.profile, id="field-profile")
            yield Static("", id="sweep-form-error")
            with Horizontal(id="sweep-form-buttons"):
                yield Button("Start", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.submit()

    def on_input_submitted(self) -> None:
        self.submit()

    def submit(self) -> None:
        values = {name: self.query_one(f"#field-{name}", Input).value for name in FIELDS}
        try:
            overrides = parse_overrides(values, self.defaults)
        except ValueError as err:
            self.query_one("#sweep-form-error", Static).update(f"⚠ {err}")
            return
        profile = self.query_one("#field-profile", Checkbox).value
        self.dismiss({**overrides, **({"profile": profile} if profile != self.defaults.profile else {})})
