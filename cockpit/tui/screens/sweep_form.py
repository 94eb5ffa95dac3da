"""The sweep form: the [sweep] settings a run may override, prefilled, checked before anything starts; a box
turns profiling on (the [sweep] profilers, on every rank). A size select fills the fields with a quick look (a
prompt a file, a few tokens, no warm-up: the default on the built-in model) or the [sweep] settings as configured.
Below the fields, the memory plan the sweep would make (cockpit.sweep.memory), made again off the event loop as
the fields change: a line in all, and on a tall terminal a line per strategy (fits, a smaller batch, or skipped
and why). `start_hint` is what the dashboard says while nothing runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, get_args

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from cockpit.config import Settings, SweepSection
from cockpit.errors import CockpitError
from cockpit.sweep.memory import gib
from cockpit.sweep.strategies import strategy_kinds
from runtime.contract import Precision
from runtime.schema import InputError

if TYPE_CHECKING:
    from cockpit.nodes.telemetry import NodeTelemetry
    from cockpit.sweep.plan import MemoryPreview

# what the form offers, in order: the same keys `cluster sweep run` takes as options
FIELDS = ("nodes", "gpus_per_node", "prompt_limit", "batch_size", "max_new_tokens", "precision", "time_limit")
CHOICES: dict[str, tuple[str, ...]] = {"precision": get_args(Precision)}  # a select; the other fields are typed in
TYPES = {f.name: f.type for f in fields(SweepSection)}
MINIMUM = {"prompt_limit": 0}  # 0: every prompt; the other numbers start at 1
LABELS = {"prompt_limit": "prompts (0: all)"}
SHORT = 42  # lines: the form with its three-line fields and buttons, and a plan line per strategy, takes 40
QUICK: dict[str, Any] = {"prompt_limit": 1, "max_new_tokens": 8, "warmup_batches": 0}  # the quick look's settings
SIZES = {"quick": "quick: 1 prompt a file, no warm-up", "full": "full: the [sweep] settings"}
# the built-in model's quick look, `s` to the results screen: `cluster sweep run` with QUICK took 79 s on an idle
# 2-core VM with the 8,192-entry tokenizer (198 s with the old one, whose 4k prompt was ~10k tokens); the five
# strategies' process starts and the 4k prompt's prefill dominate: measure again when either changes
QUICK_TAKES = "about a minute and a half on 2 CPU cores"
# the memory plan's summary: how many strategies got each verdict, and where the memory figure comes from
VERDICT_WORDS = {"fits": "fit", "shrunk": "with a smaller batch", "skipped": "skipped", "unchecked": "not checked"}
VERDICT_STYLE = {"shrunk": "yellow", "skipped": "red"}
SOURCE_WORDS = {
    "telemetry": "from telemetry",
    "inventory": "from the inventory",
    "cluster": "from [cluster] device_memory_gib",
    "this machine": "from the OS",
}


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


def make_preview(
    settings: Settings, overrides: dict[str, Any], telemetry: Mapping[str, NodeTelemetry]
) -> MemoryPreview:
    """The memory plan for the form's fields, in the worker's thread: cockpit.sweep.plan is imported here, on first
    use, as it brings pandas (the prompt table), which the app's first paint does without."""
    from cockpit.sweep.plan import preview_memory

    return preview_memory(settings, overrides, telemetry)


def plan_summary(preview: MemoryPreview, model: str) -> str:
    """One line: each verdict's count and the memory held against ('node0's Arc A770: 16.0 GiB, from telemetry'),
    or why nothing was checked."""
    if preview.memory is None:
        return "memory plan: not checked (no memory figure for the nodes: set [cluster] device_memory_gib)"
    plans = [plan for _, plan in preview.plans]
    if all(plan.verdict == "unchecked" for plan in plans):
        return f"memory plan: not checked (no config.json in {model})"
    counts = Counter(plan.verdict for plan in plans)
    said = ", ".join(f"{counts[v]} {words}" for v, words in VERDICT_WORDS.items() if counts[v])
    m = preview.memory
    return f"memory plan: {said} · {m.node}'s {m.device}: {gib(m.bytes)}, {SOURCE_WORDS[m.source]}"


def plan_lines(preview: MemoryPreview) -> Text:
    """A line per strategy: that it fits (needed of what there is), or the plan's sentence (a smaller batch, or
    skipped and what would fit); nothing where nothing was checked."""
    lines = Text()
    for label, plan in preview.plans:
        if plan.verdict == "unchecked":
            continue
        said = plan.sentence or f"{label}: fits, {gib(plan.needed_bytes)} of {gib(plan.capacity_bytes or 0)}"
        lines.append(f"{said}\n", style=VERDICT_STYLE.get(plan.verdict, ""))
    lines.rstrip()
    return lines


class SweepFormScreen(ModalScreen[dict[str, Any] | None]):
    """Returns the overrides to start a sweep with, or None when dismissed; opens on the quick look when `quick`.
    `telemetry` is the node board's last good reading of each node: the memory plan's first figure."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT, "-tall")]  # under SHORT lines, every field takes one
    AUTO_FOCUS = "Input"  # enter starts the sweep as it comes: the size select above does not take it

    def __init__(self, settings: Settings, telemetry: Mapping[str, NodeTelemetry], quick: bool = False) -> None:
        super().__init__()
        self.settings, self.telemetry = settings, telemetry
        self.defaults = settings.sweep
        self.chosen = "quick" if quick else "full"

    def sized(self) -> SweepSection:
        """The settings the chosen size fills the fields with."""
        return replace(self.defaults, **QUICK) if self.chosen == "quick" else self.defaults

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-form"):
            yield Static(f"Start a sweep ({self.settings.cluster.scheduler} scheduler)", id="sweep-form-title")
            with Horizontal(classes="form-row"):
                yield Label("size", classes="form-label")
                options = [(Text(label), size) for size, label in SIZES.items()]
                yield Select(options, value=self.chosen, allow_blank=False, id="field-size", classes="form-input")
            for name in FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(LABELS.get(name, name.replace("_", " ")), classes="form-label")
                    value = str(getattr(self.sized(), name))
                    if name in CHOICES:
                        choices = [(Text(choice), choice) for choice in CHOICES[name]]
                        yield Select(choices, value=value, allow_blank=False, id=f"field-{name}", classes="form-input")
                    else:
                        yield Input(value, id=f"field-{name}", classes="form-input")
            profilers = ", ".join(self.defaults.profilers)
            yield Checkbox(f"profile every rank ({profilers})", self.defaults.profile, id="field-profile")
            yield Static("memory plan: ...", id="sweep-form-plan")
            yield Static("", id="sweep-form-plan-lines")
            yield Static("", id="sweep-form-error")
            with Horizontal(id="sweep-form-buttons"):
                yield Button("Start", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.preview()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.submit()

    def on_input_submitted(self) -> None:
        self.submit()

    def on_input_changed(self) -> None:
        self.preview()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "field-size":
            self.chosen = str(event.value)
            for name in FIELDS:
                self.query_one(f"#field-{name}", Input | Select).value = str(getattr(self.sized(), name))
        self.preview()

    def overrides(self) -> dict[str, Any]:
        """What the form asks of the sweep: the changed fields, what the quick look sets that no field shows (the
        warm-up) and the profile box; a ValueError naming the field for bad input."""
        values = {name: str(self.query_one(f"#field-{name}", Input | Select).value) for name in FIELDS}
        overrides = parse_overrides(values, self.defaults)
        quick = self.chosen == "quick"
        hidden = {k: v for k, v in QUICK.items() if quick and k not in FIELDS and v != getattr(self.defaults, k)}
        profile = self.query_one("#field-profile", Checkbox).value
        return {**hidden, **overrides, **({"profile": profile} if profile != self.defaults.profile else {})}

    @work(exclusive=True, group="memory-plan")
    async def preview(self) -> None:
        """The memory plan for the fields as they are, made in a thread (it reads the model's config.json, the
        prompt files and the inventory); a newer change cancels the one under way."""
        summary, lines = self.query_one("#sweep-form-plan", Static), self.query_one("#sweep-form-plan-lines", Static)
        try:
            overrides = self.overrides()
            made = await asyncio.to_thread(make_preview, self.settings, overrides, dict(self.telemetry))
        except (ValueError, CockpitError, InputError) as err:  # what plan() would refuse, said as it would
            summary.update(Text(f"memory plan: not made ({err})", style="yellow"))
            lines.update("")
            return
        summary.update(Text(plan_summary(made, str(self.settings.model_path))))  # '[cluster]' is not markup
        lines.update(plan_lines(made))

    def submit(self) -> None:
        try:
            overrides = self.overrides()
        except ValueError as err:
            self.query_one("#sweep-form-error", Static).update(Text(f"⚠ {err}"))
            return
        self.dismiss(overrides)
