"""The sweep form: the [sweep] settings a run may override, prefilled, checked before anything starts; a box
turns profiling on (the [sweep] profilers, on every rank). A size select fills the fields with a quick look (a
prompt a file, a few tokens, no warm-up: the default on the built-in model) or the [sweep] settings as configured.
`start_hint` is what the dashboard says while nothing runs."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from cockpit.config import Settings, SweepSection
from cockpit.sweep.strategies import strategy_kinds

# what the form offers, in order: the same keys `cluster sweep run` takes as options
FIELDS = ("nodes", "gpus_per_node", "prompt_limit", "batch_size", "max_new_tokens", "time_limit")
TYPES = {f.name: f.type for f in fields(SweepSection)}
MINIMUM = {"prompt_limit": 0}  # 0: every prompt; the other numbers start at 1
LABELS = {"prompt_limit": "prompts (0: all)"}
SHORT = 32  # lines: the form with its three-line fields and buttons takes 29
QUICK: dict[str, Any] = {"prompt_limit": 1, "max_new_tokens": 8, "warmup_batches": 0}  # the quick look's settings
SIZES = {"quick": "quick: 1 prompt a file, no warm-up", "full": "full: the [sweep] settings"}
# the built-in model's quick look, `s` to the results screen: `cluster sweep run` with QUICK took 79 s on an idle
# 2-core VM with the 8,192-entry tokenizer (198 s with the old one, whose 4k prompt was ~10k tokens); the five
# strategies' process starts and the 4k prompt's prefill dominate: measure again when either changes
QUICK_TAKES = "about a minute and a half on 2 CPU cores"


def start_hint(settings: Settings, read_only: bool) -> str:
    """What to do on a cluster where nothing runs: `s` and what it starts (how long, on the built-in model)."""
    shape = settings.sweep
    kinds = len(strategy_kinds(shape.nodes, shape.gpus_per_node)) - 1
    what = f"the {kinds} parallelism strategies and the reference" if kinds else "the reference"
    if read_only:
        start = "read-only: a sweep starts with `cluster sweep run`, or in a cockpit without --read-only"
    elif settings.embedded:
        start = f"press s to run {what} on the built-in model here: a quick look takes {QUICK_TAKES}"
    else:
        start = f"press s to run {what} on {settings.file.model.name} ({settings.cluster.scheduler} scheduler)"
    return f"Nothing running or queued: {start}. o opens past results."


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
    """Returns the overrides to start a sweep with, or None when dismissed; opens on the quick look when `quick`."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT, "-tall")]  # under SHORT lines, every field takes one
    AUTO_FOCUS = "Input"  # enter starts the sweep as it comes: the size select above does not take it

    def __init__(self, defaults: SweepSection, backend: str, quick: bool = False) -> None:
        super().__init__()
        self.defaults, self.backend = defaults, backend
        self.chosen = "quick" if quick else "full"

    def sized(self) -> SweepSection:
        """The settings the chosen size fills the fields with."""
        return replace(self.defaults, **QUICK) if self.chosen == "quick" else self.defaults

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-form"):
            yield Static(f"Start a sweep ({self.backend} scheduler)", id="sweep-form-title")
            with Horizontal(classes="form-row"):
                yield Label("size", classes="form-label")
                options = [(Text(label), size) for size, label in SIZES.items()]
                yield Select(options, value=self.chosen, allow_blank=False, id="field-size", classes="form-input")
            for name in FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(LABELS.get(name, name.replace("_", " ")), classes="form-label")
                    yield Input(str(getattr(self.sized(), name)), id=f"field-{name}", classes="form-input")
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

    def on_select_changed(self, event: Select.Changed) -> None:
        self.chosen = str(event.value)
        for name in FIELDS:
            self.query_one(f"#field-{name}", Input).value = str(getattr(self.sized(), name))

    def submit(self) -> None:
        values = {name: self.query_one(f"#field-{name}", Input).value for name in FIELDS}
        try:
            overrides = parse_overrides(values, self.defaults)
        except ValueError as err:
            self.query_one("#sweep-form-error", Static).update(f"⚠ {err}")
            return
        quick = self.chosen == "quick"  # it also sets what no field shows (the warm-up)
        hidden = {k: v for k, v in QUICK.items() if quick and k not in FIELDS and v != getattr(self.defaults, k)}
        profile = self.query_one("#field-profile", Checkbox).value
        self.dismiss({**hidden, **overrides, **({"profile": profile} if profile != self.defaults.profile else {})})
