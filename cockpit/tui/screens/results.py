"""The results screen: the runs on disk, and for the highlighted one its strategy table and the reference it was
judged against, two plots, every completion beside that reference's, each strategy measured against the
performance model, and the ranks' profiler outputs; enter on a completion shows where the two part (the
completion diff screen), enter on a profile what the rank's trace says (the profile screen). Their cells come
from `cockpit.tui.results_cells`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markdown import Markdown
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from cockpit.analysis.bottlenecks import Performance
from cockpit.analysis.results import CompletionPair, RunInfo, RunResults
from cockpit.analysis.summary import EXACT_MATCH_LIM
from cockpit.sweep.collect import TraceFile
from cockpit.sweep.manifest import MANIFEST_NAME
from cockpit.tui.results_cells import (
    COMPLETION_COLUMNS,
    PERFORMANCE_COLUMNS,
    PROFILE_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    bottleneck_lines,
    completion_cells,
    divergence_line,
    energy_notes,
    marked,
    no_summary_line,
    number_cell,
    ops_table,
    performance_cells,
    profile_title,
    ranges_table,
    run_cells,
    shares_lines,
    summary_cells,
    trace_cells,
    trace_key,
    viewers_lines,
    window_lines,
)

if TYPE_CHECKING:
    from cockpit.tui.sources import ClusterSource

NARROW = 100  # columns: below this the run list (46 of them) hides, leaving the whole width to the results
NO_PERFORMANCE = "no performance analysis for this run"
WHAT_IF_TITLE = "What if · predicted tok/s on other links and twice the nodes"
NO_PROFILES = (
    "no profiles for this run: start a sweep with profiling (cluster sweep run --profile, or the form's profile box)"
)


def _table(table_id: str, columns: tuple[str, ...], fixed_columns: int = 0) -> DataTable:
    table: DataTable = DataTable(id=table_id, cursor_type="row", zebra_stripes=True, fixed_columns=fixed_columns)
    for column in columns:
        table.add_column(column, key=column)
    return table


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
            reference.border_title = f"reference: {pair.against}"
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
    Narrower than NARROW columns, or with a single run, the run list hides (the results title names the run) and
    [ and ] step through the runs. Data comes from `source` in workers, one run's results at a time, cached until
    its manifest changes."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "reload", "Reload"),
        Binding("left_square_bracket", "step_run(-1)", "Prev run"),  # while the run list is hidden
        Binding("right_square_bracket", "step_run(1)", "Next run"),
        Binding("c", "copy_path", "Copy path"),  # on the profiles tab
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW, "-wide")]

    def __init__(self, source: ClusterSource, run_dir: Path | None = None) -> None:
        super().__init__()
        self.source = source
        self.selected = run_dir  # the run shown (or being loaded); None: the newest with results
        self.runs: dict[str, RunInfo] = {}  # by str(run_dir), newest first, as the runs table lists them
        self.cache: dict[tuple[Path, float | None], RunResults] = {}
        self.pairs: dict[str, CompletionPair] = {}  # the completions table's rows by key
        self.traces: dict[str, TraceFile] = {}  # the profiles table's rows by key

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
                    with TabPane("Summary", id="summary-tab"), VerticalScroll(id="summary-body"):  # scrolls when short
                        yield Static(id="winner")
                        yield _table("summary", tuple(SUMMARY_COLUMNS.values()), fixed_columns=1)  # strategy in view
                        yield Static(id="energy-notes")
                        yield Static(id="report-files")
                    with TabPane("Plots", id="plots-tab"):
                        yield PlotextPlot(id="latency-plot")
                        yield PlotextPlot(id="throughput-plot")
                    with TabPane("Completions", id="completions-tab"):
                        yield Static(id="completions-reference")
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
        self.set_class(len(runs) < 2, "-one-run")
        self.call_after_refresh(self._run_list_shown)
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
        self.query_one("#winner", Static).update(Markdown(f"{results.winner}\n\n{results.reference}"))
        summary = self.query_one("#summary", DataTable)
        summary.clear()
        for row in results.table.to_dict(orient="records"):
            summary.add_row(*summary_cells(row), key=str(row["strategy"]))
        self.query_one("#energy-notes", Static).update(energy_notes(results.energy))
        files = ", ".join(str(path.relative_to(results.run_dir)) for path in results.report_files.values())
        written = f"written: {files}" if files else "no summary files yet: `cluster report` writes them"
        self.query_one("#report-files", Static).update(Text(written))
        self._plot(results)
        self.query_one("#completions-reference", Static).update(Text(results.reference))
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
            what_if.add_row(Text(str(strategy)), *(number_cell(rate) for rate in rates), key=str(strategy))

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
        if action == "step_run":
            return self.has_class("-narrow") and len(self.runs) > 1
        return action != "copy_path" or (self.is_mounted and self.highlighted_trace() is not None)

    def on_resize(self) -> None:
        self.call_after_refresh(self._run_list_shown)  # once the breakpoint class has changed

    def _run_list_shown(self) -> None:
        """The run list shown or hidden: [ and ] come and go in the footer, and a hidden list gives its focus to
        the results' tabs."""
        self.refresh_bindings()
        if not self.query_one("#runs-pane").display and self.focused in (None, self.query_one("#runs")):
            self.query_one("#results-tabs Tabs").focus()

    def action_step_run(self, step: int) -> None:
        """The previous or next run, by the hidden run list's cursor (its highlight loads the run)."""
        table = self.query_one("#runs", DataTable)
        table.move_cursor(row=table.cursor_row + step)

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
