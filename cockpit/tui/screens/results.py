"""The results screen: the runs on disk, and for the highlighted one its strategy table, two plots, every
completion beside the reference's, each strategy measured against the performance model, and the ranks' profiler
outputs; enter on a completion shows where the two part, enter on a profile what the rank's trace says."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich import box
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from cockpit.analysis.bottlenecks import SPLIT_PARTS, Performance
from cockpit.analysis.results import CompletionPair, RunInfo, RunResults
from cockpit.analysis.summary import EXACT_MATCH_LIM, NAN, format_cell, human_bytes
from cockpit.sweep.collect import TraceFile, how_to_open
from cockpit.sweep.manifest import MANIFEST_NAME
from runtime.contract import PROFILE_RANGES, ProfileSummary

if TYPE_CHECKING:
    from cockpit.tui.app import CockpitApp
    from cockpit.tui.sources import ClusterSource

RUN_COLUMNS = ("run", "state", "collected")
RUN_STYLE = {"completed": "green", "running": "yellow", "failed": "bold red", "cancelled": "dim", "planned": "dim"}
# RunSummary.table() column -> header
SUMMARY_COLUMNS = {
    "strategy": "strategy",
    "kind": "kind",
    "tp": "tp",
    "pp": "pp",
    "nodes": "nodes",
    "exact_match_rate": "exact match %",
    "similarity": "similarity",
    "latency_p50_ms": "p50 ms",
    "latency_p95_ms": "p95 ms",
    "ttft_p50_ms": "TTFT ms",
    "tokens_per_s": "tok/s",
    "energy_per_token_j": "J/token",
    "speedup": "speedup",
}
TEXT_COLUMNS = ("strategy", "kind")
COMPLETION_COLUMNS = ("strategy", "variant", "prompt", "match", "first divergence")
DIVERGED = "reverse red"
PERFORMANCE_COLUMNS = (
    "strategy",
    "pred tok/s",
    "meas tok/s",
    "meas/pred",
    "pred TTFT ms",
    "meas TTFT ms",
    "pred comm %",
    "compute/comm/idle %",
    "bottleneck",
)
RATIO_RANGE = (0.5, 2.0)  # measured over predicted tokens/s outside this: the model misses something
WARNING = "bold yellow"
NO_PERFORMANCE = "no performance analysis for this run"
WHAT_IF_TITLE = "What if · predicted tok/s on other links and twice the nodes"
PROFILE_COLUMNS = (
    "strategy",
    "rank",
    "host",
    "tool",
    "steps",
    "window ms",
    "comm %",
    "idle %",
    "gaps · longest",
    "device busy %",
    "top operator",
    "size",
    "path",
)
NO_PROFILES = (
    "no profiles for this run: start a sweep with profiling (cluster sweep run --profile, or the form's profile box)"
)
PROFILE_KEYS = "enter: the rank's profile · c: copy its path"
TOP_OP_WIDTH = 40  # the profiles table's top-operator cells, cut with an ellipsis; the profile screen has them whole


def _table(table_id: str, columns: tuple[str, ...], fixed_columns: int = 0) -> DataTable:
    table: DataTable = DataTable(id=table_id, cursor_type="row", zebra_stripes=True, fixed_columns=fixed_columns)
    for column in columns:
        table.add_column(column, key=column)
    return table


def run_cells(run: RunInfo) -> tuple[Text, Text, str]:
    """A run's row: its id, its state (an unreadable manifest as 'unreadable'), strategies collected / all."""
    state = run.state.split(":", 1)[0]
    style = "bold red" if state == "unreadable" else RUN_STYLE.get(state, "")
    return Text(run.run_id), Text(state, style=style), f"{run.collected}/{run.strategies}"


def summary_cells(row: dict[str, object]) -> tuple[Text, ...]:
    """One strategy of the table as the summary shows it, numbers right-aligned, unknowns as '—'."""
    return tuple(
        Text(format_cell(column, row[column]), justify="left" if column in TEXT_COLUMNS else "right")
        for column in SUMMARY_COLUMNS
    )


def _number(value: float, spec: str = ",.1f", suffix: str = "", style: str = "") -> Text:
    """A number right-aligned, '—' when unknown."""
    return Text(NAN if math.isnan(value) else f"{value:{spec}}{suffix}", style=style, justify="right")


def performance_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    """One strategy of `Performance.table()`: tokens/s and TTFT predicted and measured, their ratio (warning
    style outside RATIO_RANGE), shares of time in percent, the bottleneck (marked when oversubscribed)."""
    ratio = row["ratio"]
    off = not math.isnan(ratio) and not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]
    split = [row[f"measured_{part.removesuffix('_s')}_share"] for part in SPLIT_PARTS]
    bottleneck = Text(row["bottleneck"])
    if row["oversubscribed"]:
        bottleneck.append(" ⚠ oversubscribed", style=WARNING)
    return (
        Text(row["strategy"]),
        _number(row["predicted_tokens_per_s"]),
        _number(row["measured_tokens_per_s"]),
        _number(ratio, ".2f", "x", WARNING if off else ""),
        _number(row["predicted_ttft_ms"]),
        _number(row["measured_ttft_ms"]),
        _number(row["predicted_comm_share"] * 100, ".0f"),
        Text(NAN if any(math.isnan(v) for v in split) else "/".join(f"{v * 100:.0f}" for v in split), justify="right"),
        bottleneck,
    )


def bottleneck_lines(performance: Performance) -> Table:
    """Each strategy's bottleneck sentence, then why any strategy has no prediction, as a bulleted list."""
    lines = Table.grid(padding=(0, 1))
    lines.add_column(width=1)
    lines.add_column(ratio=1)
    for strategy in performance.strategies:
        lines.add_row("•", strategy.sentence)
    for why in performance.skipped:
        lines.add_row("•", Text(why, style="dim"))
    return lines


def completion_cells(pair: CompletionPair) -> tuple[str | Text, ...]:
    match = Text("✓", style="green") if pair.exact_match else Text("✗", style="bold red")
    if pair.first_divergence is None and pair.divergence_char is None:
        where = NAN
    else:
        token = NAN if pair.first_divergence is None else str(pair.first_divergence)
        char = NAN if pair.divergence_char is None else str(pair.divergence_char)
        where = f"token {token} · char {char}"
    return pair.strategy, pair.variant, str(pair.prompt_id), match, where


def divergence_line(pair: CompletionPair) -> str:
    """'first divergence at token N, character M', 'identical', or which of tokens and text agree."""
    if pair.first_divergence is None and pair.divergence_char is None:
        return "identical"
    token, char = pair.first_divergence, pair.divergence_char
    tokens = "tokens identical" if token is None else f"first divergence at token {token}"
    return f"{tokens}, {'text identical' if char is None else f'character {char}'}"


def trace_key(trace: TraceFile) -> str:
    return f"{trace.strategy_id}/{trace.rank}/{trace.tool}"


def _percent(share: float | None) -> Text:
    """A share of the window in percent, right-aligned; '—' when unknown (a device share on the CPU)."""
    return _number(math.nan if share is None else share * 100, ".0f")


def _gaps(summary: ProfileSummary) -> str:
    return f"{summary.gaps} · {summary.longest_gap_ms:.2f} ms" if summary.gaps else "0"


def trace_cells(trace: TraceFile, run_dir: Path) -> tuple[Text, ...]:
    """One profiler output's row: who wrote it, what its summary says ('—' without one: nsys, perf; a torch
    trace that could not be read shows why in the top-operator column, in warning style, cut to TOP_OP_WIDTH),
    its size and its path under the run folder."""
    summary = trace.summary
    who = (Text(trace.strategy_id), _number(trace.rank, "d"), Text(summary.hostname if summary else NAN))
    file = (Text(human_bytes(trace.bytes), justify="right"), Text(str(trace.path.relative_to(run_dir))))
    if summary is None:
        why = Text(trace.problem.removeprefix(f"{trace.path}: "), style=WARNING) if trace.problem else Text(NAN)
        why.truncate(TOP_OP_WIDTH, overflow="ellipsis")
        return (*who, Text(trace.tool), *(_number(math.nan) for _ in range(6)), why, *file)
    top = summary.top_ops[0] if summary.top_ops else None
    top_op = Text(f"{top.name} {top.share:.0%}" if top else NAN)
    top_op.truncate(TOP_OP_WIDTH, overflow="ellipsis")
    return (
        *who,
        Text(trace.tool),
        _number(summary.steps, "d"),
        _number(summary.window_ms),
        _percent(summary.comm_share),
        _percent(summary.idle_share),
        Text(_gaps(summary), justify="right"),
        _percent(summary.device_busy_share),
        top_op,
        *file,
    )


def viewers_lines(traces: Iterable[TraceFile]) -> str:
    """What opens each tool's files, a line for each tool present, then the tab's keys."""
    return "\n".join((*how_to_open(traces), PROFILE_KEYS))


def profile_title(trace: TraceFile) -> str:
    """'<strategy> · rank N · <host> · <tool>'."""
    host = trace.summary.hostname if trace.summary else NAN
    return f"{trace.strategy_id} · rank {trace.rank} · {host} · {trace.tool}"


def no_summary_line(trace: TraceFile) -> Text:
    """Why a trace has no summary: what reading it said (warning style), or that only torch traces have one."""
    if trace.problem:
        return Text(trace.problem, style=WARNING)
    return Text(f"no summary: the cockpit reads torch traces only; open this one with {trace.opens_with}")


def window_lines(summary: ProfileSummary) -> str:
    """The profiled window, and how the named ranges below nest."""
    step = summary.window_ms / summary.steps if summary.steps else math.nan
    return (
        f"window: {summary.steps} decode steps in {summary.window_ms:,.1f} ms ({step:,.1f} ms a step)\n"
        "time in the named ranges (all_reduce nests in compute, send_recv in sampling):"
    )


def ranges_table(summary: ProfileSummary) -> Table:
    """Time in each named range, in ms and percent of the window."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("range")
    table.add_column("ms", justify="right")
    table.add_column("% of window", justify="right")
    for name in PROFILE_RANGES:
        ms = summary.ranges_ms.get(name, math.nan)
        table.add_row(name, _number(ms), _percent(ms / summary.window_ms if summary.window_ms else math.nan))
    return table


def shares_lines(summary: ProfileSummary) -> str:
    """The comm share, the idle share with its gaps, the device's busy share."""
    share = summary.device_busy_share
    busy = f"{NAN} (no device kernels: a CPU run)" if share is None else f"{share:.0%}"
    return "\n".join(
        (
            f"comm: {summary.comm_share:.0%} of the window in all_reduce and send_recv",
            f"idle: {summary.idle_share:.0%} of the window outside every range, {summary.gaps} gaps of "
            f"{summary.gap_threshold_ms:g} ms or more, the longest {summary.longest_gap_ms:.2f} ms",
            f"device busy: {busy}",
        )
    )


def ops_table(summary: ProfileSummary) -> Table:
    """The operators with the most self time, most first."""
    table = Table(box=box.SIMPLE_HEAD, title="top operators by self time", title_justify="left")
    table.add_column("operator")
    for column in ("calls", "self ms", "share %"):
        table.add_column(column, justify="right")
    for op in summary.top_ops:
        table.add_row(Text(op.name), _number(op.calls, ",d"), _number(op.self_ms), _percent(op.share))
    return table


def marked(text: str, at: int | None) -> Text:
    """`text` with everything from character `at` on highlighted (a marker where it ends early)."""
    if at is None:
        return Text(text)
    out = Text(text[:at])
    out.append(text[at:] or "∎ ends here", style=DIVERGED)
    return out


def manifest_mtime(run_dir: Path) -> float | None:
    """When the run's manifest last changed (None if it cannot be read): a run's results are cached per value."""
    try:
        return (run_dir / MANIFEST_NAME).stat().st_mtime
    except OSError:
        return None


class CompletionDiffScreen(Screen[None]):
    """A strategy's completion and the reference's, stacked; the text from the first difference on highlighted."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, pair: CompletionPair) -> None:
        super().__init__()
        self.pair = pair

    def compose(self) -> ComposeResult:
        pair = self.pair
        yield Header(icon="◆")
        title = f"{pair.strategy} · {pair.variant} prompt {pair.prompt_id} · {divergence_line(pair)}"
        yield Static(title, id="diff-title", classes="panel-title")
        with VerticalScroll(classes="diff-pane") as reference:
            reference.border_title = "reference"
            yield Static(marked(pair.reference, pair.divergence_char), id="diff-reference")
        with VerticalScroll(classes="diff-pane") as completion:
            completion.border_title = pair.strategy
            yield Static(marked(pair.completion, pair.divergence_char), id="diff-completion")
        yield Footer()


def copy_path(screen: Screen[None], trace: TraceFile) -> None:
    """The trace's absolute path to the terminal's clipboard (OSC 52: works over ssh too), and a note saying so."""
    screen.app.copy_to_clipboard(str(trace.path))
    screen.notify(f"copied: {trace.path}")


class ProfileScreen(Screen[None]):
    """One rank's profiler output: its path and what opens it, and for a torch trace what its summary says."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("c", "copy_path", "Copy path")]

    def __init__(self, trace: TraceFile) -> None:
        super().__init__()
        self.trace = trace

    def compose(self) -> ComposeResult:
        trace, summary = self.trace, self.trace.summary
        yield Header(icon="◆")
        yield Static(Text(profile_title(trace)), id="profile-title", classes="panel-title")
        yield Static(Text(f"{trace.path}\nopen with {trace.opens_with} · c: copy the path"), id="profile-path")
        with VerticalScroll(id="profile-body"):
            if summary is None:
                yield Static(no_summary_line(trace), id="profile-why")
            else:
                yield Static(Text(window_lines(summary)), id="profile-window")
                yield Static(ranges_table(summary), id="profile-ranges")
                yield Static(Text(shares_lines(summary)), id="profile-shares")
                yield Static(ops_table(summary), id="profile-ops")
        yield Footer()

    def action_copy_path(self) -> None:
        copy_path(self, self.trace)


class ResultsScreen(Screen[None]):
    """Runs on the left; the highlighted run's summary, plots, completions, performance and profiles on the right.
    Data comes from the app's source in workers, one run's results at a time, cached until its manifest changes."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "reload", "Reload"),
        Binding("c", "copy_path", "Copy path"),  # on the profiles tab
    ]

    def __init__(self, run_dir: Path | None = None) -> None:
        super().__init__()
        self.selected = run_dir  # the run shown (or being loaded); None: the newest with results
        self.runs: dict[str, RunInfo] = {}  # by str(run_dir), newest first, as the runs table lists them
        self.cache: dict[tuple[Path, float | None], RunResults] = {}
        self.pairs: dict[str, CompletionPair] = {}  # the completions table's rows by key
        self.traces: dict[str, TraceFile] = {}  # the profiles table's rows by key

    @property
    def source(self) -> ClusterSource:
        return cast("CockpitApp", self.app).source

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        with Horizontal(id="results-body"):
            with Vertical(id="runs-pane"):
                yield Static("Runs", id="runs-title", classes="panel-title")
                yield _table("runs", RUN_COLUMNS)
            with Vertical(id="results-pane"):
                yield Static("Results", id="results-title", classes="panel-title")
                yield Static(id="results-error")
                with TabbedContent(id="results-tabs"):
                    with TabPane("Summary", id="summary-tab"):
                        yield Static(id="winner")
                        yield _table("summary", tuple(SUMMARY_COLUMNS.values()), fixed_columns=1)  # strategy in view
                        yield Static(id="report-files")
                    with TabPane("Plots", id="plots-tab"):
                        yield PlotextPlot(id="latency-plot")
                        yield PlotextPlot(id="throughput-plot")
                    with TabPane("Completions", id="completions-tab"):
                        yield _table("completions", COMPLETION_COLUMNS)
                    with TabPane("Performance", id="performance-tab"):
                        yield Static(id="performance-reason")
                        with VerticalScroll(id="performance-body"):
                            yield Static(id="hardware")
                            yield _table("performance", PERFORMANCE_COLUMNS, fixed_columns=1)
                            yield Static(id="bottlenecks")
                            yield Static(WHAT_IF_TITLE, id="what-if-title")
                            yield _table("what-if", (), fixed_columns=1)
                    with TabPane("Profiles", id="profiles-tab"):
                        yield Static(NO_PROFILES, id="profiles-none")
                        yield _table("profiles", PROFILE_COLUMNS, fixed_columns=1)
                        yield Static(id="profiles-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Read the runs again, and the shown run's results (the cache is dropped)."""
        self.cache.clear()
        self.run_worker(self._load_runs(), exclusive=True, group="runs")

    async def _load_runs(self) -> None:
        try:
            runs = await self.source.runs()
        except Exception as err:  # any source failure is shown, never raised into the app
            self._show_error(f"runs: {err}")
            return
        self.runs = {str(run.run_dir): run for run in runs}
        table = self.query_one("#runs", DataTable)
        table.clear()
        for key, run in self.runs.items():
            table.add_row(*run_cells(run), key=key)
        self.query_one("#runs-title", Static).update(f"Runs · {len(runs)}")
        if not runs:
            self._show_error("no sweep runs yet (start one: cluster sweep run)")
            return
        chosen = str(self.selected) if str(self.selected) in self.runs else None
        target = chosen or next((key for key, run in self.runs.items() if run.has_results), next(iter(self.runs)))
        table.move_cursor(row=list(self.runs).index(target))
        self.show_run(self.runs[target], force=True)

    @on(DataTable.RowHighlighted, "#runs")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row != event.data_table.cursor_row:
            return  # the cursor has moved on since (a table refill, or keys held down)
        run = self.runs.get(str(event.row_key.value))
        if run is not None:
            self.show_run(run)

    def show_run(self, run: RunInfo, force: bool = False) -> None:
        """Load and show `run`'s results, unless they are the ones shown already."""
        if run.run_dir == self.selected and not force:
            return
        self.selected = run.run_dir
        self.query_one("#results-title", Static).update(f"{run.run_id} · loading…")
        self.run_worker(self._load_results(run), exclusive=True, group="results")

    async def _load_results(self, run: RunInfo) -> None:
        try:
            key = (run.run_dir, await asyncio.to_thread(manifest_mtime, run.run_dir))
            results = self.cache.get(key)
            if results is None:
                results = self.cache[key] = await self.source.results(run.run_dir)
        except Exception as err:  # e.g. nothing collected yet: the message is shown, never raised
            self._show_error(str(err), run)
            return
        self._show_results(run, results)

    def _title(self, run: RunInfo | None) -> None:
        text = "Results" if run is None else f"{run.run_id} · {run.state} · {run.collected}/{run.strategies} collected"
        self.query_one("#results-title", Static).update(text)

    def _show_error(self, message: str, run: RunInfo | None = None) -> None:
        self._title(run)
        error = self.query_one("#results-error", Static)
        error.update(Text(message))
        error.display = True
        self.query_one("#results-tabs").display = False

    def _show_results(self, run: RunInfo, results: RunResults) -> None:
        self._title(run)
        self.query_one("#results-error").display = False
        self.query_one("#results-tabs").display = True
        self.query_one("#winner", Static).update(Markdown(results.winner))
        summary = self.query_one("#summary", DataTable)
        summary.clear()
        for row in results.table.to_dict(orient="records"):
            summary.add_row(*summary_cells(row), key=str(row["strategy"]))
        files = ", ".join(str(path.relative_to(results.run_dir)) for path in results.report_files.values())
        written = f"written: {files}" if files else "no summary files yet: `cluster report` writes them"
        self.query_one("#report-files", Static).update(Text(written))
        self._plot(results)
        completions = self.query_one("#completions", DataTable)
        completions.clear()
        self.pairs = {f"{p.strategy}/{p.variant}/{p.prompt_id}": p for p in results.completions}
        for key, pair in self.pairs.items():
            completions.add_row(*completion_cells(pair), key=key)
        self._performance(results.performance)
        self._profiles(results)

    def _performance(self, performance: Performance | str | None) -> None:
        """The performance tab: the analysis, or why there is none in place of its tables."""
        reason = self.query_one("#performance-reason", Static)
        body = self.query_one("#performance-body")
        if not isinstance(performance, Performance):
            reason.update(Text(performance or NO_PERFORMANCE))
            reason.display, body.display = True, False
            return
        reason.display, body.display = False, True
        self.query_one("#hardware", Static).update(Text(performance.hardware))
        table = self.query_one("#performance", DataTable)
        table.clear()
        for row in performance.table().to_dict(orient="records"):
            table.add_row(*performance_cells(row), key=str(row["strategy"]))
        self.query_one("#bottlenecks", Static).update(bottleneck_lines(performance))
        what_if = self.query_one("#what-if", DataTable)
        what_if.clear(columns=True)
        frame = performance.what_if_table()
        for column in frame.columns:
            what_if.add_column(str(column), key=str(column))
        for strategy, *rates in frame.itertuples(index=False):
            what_if.add_row(Text(str(strategy)), *(_number(rate) for rate in rates), key=str(strategy))

    def _profiles(self, results: RunResults) -> None:
        """The profiles tab: a row per profiler output and how to open them, or how to get some."""
        self.traces = {trace_key(trace): trace for trace in results.traces}
        table = self.query_one("#profiles", DataTable)
        table.clear()
        for key, trace in self.traces.items():
            table.add_row(*trace_cells(trace, results.run_dir), key=key)
        self.query_one("#profiles-hint", Static).update(Text(viewers_lines(results.traces)))
        self.query_one("#profiles-none").display = not self.traces
        table.display = self.query_one("#profiles-hint").display = bool(self.traces)
        self.refresh_bindings()

    def highlighted_trace(self) -> TraceFile | None:
        """The profiles table's highlighted trace, while that tab is shown."""
        tabs = self.query_one(TabbedContent)
        if not (tabs.display and tabs.active == "profiles-tab" and self.traces):
            return None
        table = self.query_one("#profiles", DataTable)
        return self.traces[str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "copy_path" or (self.is_mounted and self.highlighted_trace() is not None)

    @on(TabbedContent.TabActivated, "#results-tabs")
    def _tab_activated(self) -> None:
        self.refresh_bindings()  # 'c' comes and goes with the profiles tab

    def action_copy_path(self) -> None:
        trace = self.highlighted_trace()
        if trace is not None:
            copy_path(self, trace)

    def _plot(self, results: RunResults) -> None:
        latency = self.query_one("#latency-plot", PlotextPlot)
        plt = latency.plt
        plt.clear_figure()
        for strategy, rate, p50 in results.latency_points:
            plt.scatter([rate], [p50], label=strategy, marker="●")
        plt.xlim(*EXACT_MATCH_LIM)
        plt.title("latency p50 vs exact match")
        plt.xlabel("exact-match rate")
        plt.ylabel("p50 ms")
        latency.refresh()
        throughput = self.query_one("#throughput-plot", PlotextPlot)
        plt = throughput.plt
        plt.clear_figure()
        for strategy, lengths, rates in results.throughput_curves:
            plt.plot(lengths, rates, label=strategy, marker="braille")
        plt.title("throughput vs prompt length")
        plt.xlabel("prompt tokens")
        plt.ylabel("tokens/s")
        throughput.refresh()

    @on(DataTable.RowSelected, "#completions")
    def _completion_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(CompletionDiffScreen(self.pairs[str(event.row_key.value)]))

    @on(DataTable.RowSelected, "#profiles")
    def _profile_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(ProfileScreen(self.traces[str(event.row_key.value)]))
