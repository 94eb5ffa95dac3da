"""A node's own view (`enter` on its row in the dashboard's nodes table): its GPUs' utilisation, memory,
temperature and power over the last minutes as plots, one line per GPU, from the readings the dashboard's polls
left in the node board (it probes nothing itself); its Slurm state and the jobs on it, from the queue feed; its
runtime build and whether it lacks the model; its recent probe failures. A figure the node does not report is
said to be unknown, with the telemetry's reason where it gives one. It redraws when the app says the nodes or the
queue changed, and only while shown. `S` asks the app for an ssh shell on the node."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from cockpit.errors import BadInput
from cockpit.jobs.queue import QueueRow
from cockpit.nodes.nodeset import expand_list
from cockpit.nodes.telemetry import GpuTelemetry, fixed, gib_pair, gpu_label
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.screens.dashboard import DashboardScreen, duration

# a plotted figure: its GpuTelemetry field, the plot's title, the scale from the field's unit, its words in a line
FIGURES = (
    ("util_pct", "utilisation %", 1.0, "util"),
    ("memory_used_mib", "memory GiB", 1 / 1024, "memory"),
    ("temperature_c", "temperature °C", 1.0, "temperature"),
    ("power_w", "power W", 1.0, "power"),
)
JOBS_SHOWN = 3
POINTS = 60  # at most this many points a line: plotext's cost grows with them, and a plot has few columns
REPLOT_S = 6.0  # the plots' least interval (of the node's answers): four plotext figures cost ~50 ms to draw
COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red")  # GPU i's line in the plots and its name above them


def unknown(gpu: GpuTelemetry, field: str, words: str) -> str:
    """`power unknown`, with the telemetry's reason when it gives one (`power unknown (no hwmon power file)`)."""
    reason = (getattr(gpu, "unknown", None) or {}).get(field)
    return f"{words} unknown ({reason})" if reason else f"{words} unknown"


def colour(index: int) -> str:
    """GPU `index`'s colour: its line in every plot, and its name in the lines above (so the plots need no legend)."""
    return COLOURS[index % len(COLOURS)]


def gpu_line(gpu: GpuTelemetry) -> Text:
    """A GPU's latest readings on one line: where they come from, then each figure or why it is unknown."""
    parts = [
        f"util {fixed(gpu.util_pct)} %" if gpu.util_pct is not None else unknown(gpu, "util_pct", "util"),
        f"mem {gib_pair(gpu.memory_used_mib, gpu.memory_total_mib)} GiB"
        if gpu.memory_used_mib is not None
        else unknown(gpu, "memory_used_mib", "memory"),
        f"{fixed(gpu.temperature_c)} °C"
        if gpu.temperature_c is not None
        else unknown(gpu, "temperature_c", "temperature"),
        f"{fixed(gpu.power_w)} W" if gpu.power_w is not None else unknown(gpu, "power_w", "power"),
    ]
    text = Text(f"gpu {gpu_label(gpu)}", style=f"bold {colour(gpu.index)}")
    text.append(f" ({gpu.source}): ", style="dim")
    for i, part in enumerate(parts):
        text.append(" · " if i else "")
        text.append(part, style="yellow" if "unknown" in part else "")
    return text


def thinned(points: list[tuple[float, float]], most: int = POINTS) -> list[tuple[float, float]]:
    """At most `most` points: runs of consecutive ones, counted back from the latest, each averaged into one (time
    and value)."""
    stride = math.ceil(len(points) / most)
    if stride <= 1:
        return points
    runs = [points[max(0, end - stride) : end] for end in range(len(points), 0, -stride)][::-1]
    return [(sum(t for t, _ in run) / len(run), sum(v for _, v in run) / len(run)) for run in runs]


def runs_on(row: QueueRow, node: str) -> bool:
    """Whether the job's node list names `node`."""
    try:
        return node in expand_list(row.nodes or "")
    except BadInput:  # a list this cockpit cannot read: look for the name itself
        return node in (row.nodes or "").split(",")


class NodeScreen(Screen[None]):
    """One node of `board`, and its jobs among the `feeds`' queue; with `read_only` no shell is offered."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("S", "shell", "ssh shell"),
    ]

    def __init__(
        self, node: str, board: NodeBoard, feeds: Mapping[str, Feed[Any]], scheduler: str, read_only: bool = False
    ) -> None:
        super().__init__()
        self.node = node
        self.board = board
        self.feeds = feeds
        self.scheduler = scheduler
        self.read_only = read_only
        self._jobs: tuple[object, list[QueueRow]] = (None, [])  # the queue's rows, and those on the node
        self._plotted: float | None = None  # when the plots' latest readings came in (-inf: none had; None: not drawn)

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static(id="node-facts")
        with Grid(id="node-plots"):
            for field, *_ in FIGURES:
                yield PlotextPlot(id=f"plot-{field}", classes="node-plot")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "shell" and self.read_only)

    def on_mount(self) -> None:
        self.sub_title = self.node
        self.show()

    def on_screen_resume(self) -> None:
        self.show()

    @on(DashboardScreen.PanelChanged)
    def _changed(self, message: DashboardScreen.PanelChanged) -> None:
        if message.panel in ("nodes", "queue") and self.is_current:
            self.show()

    def action_shell(self) -> None:
        self.post_message(DashboardScreen.ShellRequested(self.node))

    # ---- rendering

    def show(self) -> None:
        """Redraw the facts from the board and the queue feed, and the plots once the node's answers since they
        were drawn span REPLOT_S (the latest readings are in the facts at every poll; other feeds that change the
        nodes panel, and the queue, leave the plots as they are)."""
        with self.app.batch_update():
            self.query_one("#node-facts", Static).update(self.facts())
            answered = self.board.seen_at.get(self.node, -math.inf)
            if self._plotted is None or answered - self._plotted >= REPLOT_S:
                self._plotted = answered
                self._plot()

    def facts(self) -> Text:
        """What the node is: its state and readings, Slurm's word and its jobs, its runtime and model, its GPUs'
        latest readings, its probe failures."""
        board, name = self.board, self.node
        telemetry, sample = board.good.get(name), board.last.get(name)
        text = Text(name, style="bold")
        text.append(" · ").append_text(board.state_cell(name))
        if sample is not None and sample.rtt_ms is not None:
            text.append(f" · rtt {fixed(sample.rtt_ms)} ms")
        if telemetry is not None:
            load = " ".join(f"{x:.2f}" for x in telemetry.load) if telemetry.load else "-"
            text.append(f" · load {load} · memory {gib_pair(telemetry.memory_used_mib, telemetry.memory_total_mib)}")
            text.append(" GiB")
        text.append("\n").append_text(self._slurm())
        text.append("\n").append_text(self._runtime())
        for gpu in telemetry.gpus if telemetry else ():
            text.append("\n").append_text(gpu_line(gpu))
        text.append("\n").append_text(self._failures())
        return text

    def _slurm(self) -> Text:
        sample = self.board.last.get(self.node)
        if self.scheduler != "slurm":
            text = Text(f"{self.scheduler} scheduler")
        elif sample is not None and sample.slurm_problem:
            text = Text(f"Slurm: {sample.slurm_problem}", style="bold yellow")
        else:
            text = Text("Slurm: runs jobs" if sample is not None else "Slurm: not asked yet")
        queue = self.feeds["queue"]
        if self._jobs[0] is not queue.value:  # a new poll's rows: which run on the node (thousands, on a big queue)
            self._jobs = (queue.value, [row for row in queue.value or [] if runs_on(row, self.node)])
        jobs = self._jobs[1]
        if queue.error:
            return text.append(f" · jobs unknown ({queue.error})", style="yellow")
        if not jobs:
            return text.append(" · no job on it")
        shown = ", ".join(f"{row.job_id} {row.name} {row.state} {duration(row.elapsed_s)}" for row in jobs[:JOBS_SHOWN])
        more = f" (+{len(jobs) - JOBS_SHOWN} more)" if len(jobs) > JOBS_SHOWN else ""
        return text.append(f" · jobs: {shown}{more}")

    def _runtime(self) -> Text:
        board = self.board
        telemetry = board.good.get(self.node)
        installed = telemetry.runtime if telemetry else None
        if installed is None:
            text = Text("runtime: " + ("not reported yet" if board.runtime else "shared (not delivered per node)"))
        elif installed.build_id is None:
            text = Text(f"runtime: none ({installed.error})", style="yellow")
        else:
            text = Text(f"runtime: {installed.build_id} ({installed.device or 'device unknown'})")
            if board.control_build_read and installed.build_id != board.control_build:
                text.append(f" ≠ the build here ({board.control_build or 'none built'})", style="bold yellow")
        gap = board.model_gaps.get(self.node)
        return text.append(" · model: ").append(gap or "nothing missing", style="bold yellow" if gap else "")

    def _failures(self) -> Text:
        """The node's recent probe failures, latest first, and the sources that failed in its latest report."""
        board = self.board
        now = board.clock()
        failures = list(board.failures.get(self.node, ()))[::-1]
        text = Text("probe: " if failures else "probe: no failure seen")
        for i, failure in enumerate(failures[:2]):
            repeated = f", {failure.times} times since {now - failure.first_at:.0f} s ago" if failure.times > 1 else ""
            text.append("; " if i else "")
            text.append(f"{now - failure.last_at:.0f} s ago{repeated}: {failure.error}", style="red")
        telemetry = board.good.get(self.node)
        if telemetry is not None and telemetry.errors:
            text.append(" · failed in the latest report: ").append("; ".join(telemetry.errors), style="yellow")
        return text

    def _memory_total_gib(self) -> float | None:
        telemetry = self.board.good.get(self.node)
        totals = [gpu.memory_total_mib for gpu in telemetry.gpus if gpu.memory_total_mib] if telemetry else []
        return max(totals) / 1024 if totals else None

    def _plot(self) -> None:
        """Each figure over the last minutes, a line per GPU in its colour (x: minutes before now); no frame, legend
        or axis label, so that at 80x24 the lines keep most of the plot's rows. A GPU without the figure has no
        line (the lines above say why), a figure no GPU has says unknown."""
        board = self.board
        now = board.clock()
        traces = sorted((index, trace) for (node, index), trace in board.trace.items() if node == self.node)
        for field, title, scale, _ in FIGURES:
            widget = self.query_one(f"#plot-{field}", PlotextPlot)
            plt = widget.plt
            plt.clear_figure()
            earliest, drawn = -1.0, False  # the x axis spans the last minute at least
            for index, trace in traces:
                points = [(t, value) for t, gpu in trace if (value := getattr(gpu, field)) is not None]
                if not points:  # the lines above say why
                    continue
                xs, ys = zip(*((round((t - now) / 60, 3), value * scale) for t, value in thinned(points)), strict=True)
                plt.plot(xs, ys, marker="braille", color=colour(index))
                earliest, drawn = min(earliest, xs[0]), True
            top = {"util_pct": 100.0, "memory_used_mib": self._memory_total_gib()}.get(field)
            if top:
                plt.ylim(0, top)
            plt.xlim(earliest, 0)
            plt.title(f"{title}, minutes ago" if drawn else f"{title}: {'unknown' if traces else 'no readings yet'}")
            plt.frame(False)
            widget.refresh()
