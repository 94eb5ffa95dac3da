"""The results screen on the demo's runs: each tab, the completion diff and a rank's profile as snapshots (the
summary on narrow terminals, the run list hidden), and under a Pilot the diff and the profile opened and closed,
a run with nothing collected, the run chosen up front, the cache, the run list hiding when narrow or alone, the
performance tab's rows with and without an analysis, and a run whose reference failed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent, Tabs

from cockpit.analysis.correctness import choose_reference
from cockpit.analysis.report import score_rows
from cockpit.analysis.results import CompletionPair, RunResults, run_results
from cockpit.tui.demo import DemoSource, demo_performance, demo_runs
from cockpit.tui.results_cells import WARNING, bottleneck_lines, divergence_line, marked, performance_cells
from cockpit.tui.screens.results import NO_PERFORMANCE, CompletionDiffScreen, ProfileScreen, ResultsScreen
from tests.snapshot.test_app_shell import COMMON, SIZE, fake_app, settle
from tests.unit.test_report import PP, fake_out_of_memory_run

DIVERGING_ROW = 3  # tiny_pp1_tp2_n2 on the 4k prompt 1, the one completion that parts from the reference
RATIO, BOTTLENECK = 3, 8  # the performance table's measured/predicted and bottleneck columns


async def loaded(pilot: Pilot) -> None:
    """Until the screen's workers are done (the runs worker starts the results worker)."""
    while any(w.group in ("runs", "results") and w.is_running for w in pilot.app.workers):
        await settle(pilot)
    await settle(pilot)


async def open_results(pilot: Pilot, run_dir: Path | None = None) -> ResultsScreen:
    """The results screen on the app's source, on `run_dir` (None: the newest run with results)."""
    await settle(pilot)
    screen = ResultsScreen(pilot.app.source, run_dir)
    pilot.app.push_screen(screen)
    await loaded(pilot)
    return screen


async def show_tab(pilot: Pilot, tab: str) -> None:
    pilot.app.screen.query_one(TabbedContent).active = tab
    await pilot.pause()


async def enter_on_row(pilot: Pilot, tab: str, table_id: str, row: int) -> None:
    """Enter on a row of a tab's table."""
    await show_tab(pilot, tab)
    table = pilot.app.screen.query_one(table_id, DataTable)
    table.focus()
    table.move_cursor(row=row)
    await pilot.press("enter")
    await pilot.pause()


async def open_profile(pilot: Pilot, row: int = 0) -> None:
    """Enter on a row of the profiles tab (0: TP's rank 0, its torch trace)."""
    await enter_on_row(pilot, "profiles-tab", "#profiles", row)


async def open_diff(pilot: Pilot) -> None:
    await enter_on_row(pilot, "completions-tab", "#completions", DIVERGING_ROW)


@pytest.mark.parametrize("size", [COMMON, (60, 20)], ids=["80x24", "60x20"])
def test_summary_snapshot(snap_compare, size: tuple[int, int]) -> None:
    """Narrow: no run list, the results the whole width, [ and ] in the footer."""
    assert snap_compare(fake_app(), terminal_size=size, run_before=open_results)


@pytest.mark.parametrize("tab", ["plots-tab", "completions-tab", "performance-tab", "profiles-tab"])
def test_tab_snapshot(snap_compare, tab: str) -> None:
    async def open_tab(pilot: Pilot) -> None:
        await open_results(pilot)
        await show_tab(pilot, tab)

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=open_tab)


def test_no_performance_snapshot(snap_compare) -> None:
    async def no_analysis(pilot: Pilot) -> None:
        await open_results(pilot, demo_runs()[1].run_dir)  # running: no analysis, and why
        await show_tab(pilot, "performance-tab")

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=no_analysis)


def test_no_profiles_snapshot(snap_compare) -> None:
    async def no_profiles(pilot: Pilot) -> None:
        await open_results(pilot, demo_runs()[1].run_dir)  # running: nothing profiled, and how to
        await show_tab(pilot, "profiles-tab")

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=no_profiles)


def test_profiles_scrolled_snapshot(snap_compare) -> None:
    """The profiles table's right-hand columns: the top operator (or why there is none), size, path."""

    async def scrolled(pilot: Pilot) -> None:
        await open_results(pilot)
        await show_tab(pilot, "profiles-tab")
        table = pilot.app.screen.query_one("#profiles", DataTable)
        table.scroll_to(x=sum(column.get_render_width(table) for column in list(table.columns.values())[1:10]))
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=scrolled)


def test_profile_snapshot(snap_compare) -> None:
    async def profile(pilot: Pilot) -> None:
        await open_results(pilot)
        await open_profile(pilot)

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=profile)


def test_diff_snapshot(snap_compare) -> None:
    async def diff(pilot: Pilot) -> None:
        await open_results(pilot)
        await open_diff(pilot)

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=diff)


async def test_enter_opens_the_diff_and_escape_returns() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        results = await open_results(pilot)
        await open_diff(pilot)
        assert isinstance(app.screen, CompletionDiffScreen)
        pair = app.screen.pair
        assert (pair.strategy, pair.variant, pair.prompt_id) == ("tiny_pp1_tp2_n2", "4k", 1)
        title = str(app.screen.query_one("#diff-title", Static).render())
        assert title.endswith("first divergence at token 21, character 73")
        await pilot.press("escape")
        assert app.screen is results
        await pilot.press("escape")
        assert not isinstance(app.screen, ResultsScreen)


async def test_enter_opens_a_profile_and_escape_returns() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        results = await open_results(pilot)
        await open_profile(pilot, row=3)  # PP's rank 1: a torch trace too torn to summarize
        assert isinstance(app.screen, ProfileScreen)
        assert str(app.screen.query_one("#profile-title", Static).render()) == "tiny_pp2_tp1_n2 · rank 1 · — · torch"
        assert "not a Chrome trace (not JSON" in str(app.screen.query_one("#profile-why", Static).render())
        assert not app.screen.query("#profile-ops")
        await pilot.press("escape")
        assert app.screen is results


async def test_c_copies_the_highlighted_trace_path_on_the_profiles_tab() -> None:
    app = fake_app()
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_results(pilot)
        await pilot.press("c")  # the summary tab: nothing to copy
        assert copied == [] and "c" not in screen.active_bindings  # nor in the footer
        await show_tab(pilot, "profiles-tab")
        assert "c" in screen.active_bindings
        screen.query_one("#profiles", DataTable).move_cursor(row=1)  # TP's rank 0, its perf file
        await pilot.press("c")
        assert copied == [f"{demo_runs()[0].run_dir}/tiny_pp1_tp2_n2/profiling/rank_0/perf.data"]
        screen.query_one("#runs", DataTable).move_cursor(row=1)  # running: no profiles, nothing to copy
        await loaded(pilot)
        assert not screen.query_one("#profiles", DataTable).display
        await pilot.press("c")
        assert len(copied) == 1


async def test_a_run_with_nothing_collected_shows_why() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_results(pilot)
        error, tabs = screen.query_one("#results-error", Static), screen.query_one(TabbedContent)
        assert not error.display and tabs.display
        screen.query_one("#runs", DataTable).move_cursor(row=2)  # planned, nothing collected
        await loaded(pilot)
        assert error.display and not tabs.display
        assert "run_20261122-080000: no strategy has been collected yet" in str(error.render())
        screen.query_one("#runs", DataTable).move_cursor(row=3)  # a torn manifest
        await loaded(pilot)
        assert "manifest.json: not valid JSON" in str(error.render())
        screen.query_one("#runs", DataTable).move_cursor(row=1)  # running, the reference collected
        await loaded(pilot)
        assert not error.display and tabs.display
        assert screen.query_one("#summary", DataTable).row_count == 1
        assert screen.query_one("#completions", DataTable).row_count == 0


async def test_the_run_asked_for_is_shown_and_results_are_cached() -> None:
    app = fake_app()
    source: DemoSource = app.source  # type: ignore[assignment]
    asked: list[str] = []
    results = source.results

    async def counted(run_dir):
        asked.append(run_dir.name)
        return await results(run_dir)

    source.results = counted  # type: ignore[method-assign]
    running = demo_runs()[1]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_results(pilot, running.run_dir)
        runs = screen.query_one("#runs", DataTable)
        assert runs.cursor_row == 1 and asked == [running.run_id]
        runs.move_cursor(row=0)
        await loaded(pilot)
        runs.move_cursor(row=1)
        await loaded(pilot)
        assert asked == [running.run_id, "run_20261124-093000"]  # the second visit came from the cache
        await pilot.press("r")
        await loaded(pilot)
        assert runs.cursor_row == 1 and asked[-1] == running.run_id and len(asked) == 3


async def test_the_run_list_hides_when_narrow_or_alone_and_brackets_step_through_runs() -> None:
    app = fake_app()
    source: DemoSource = app.source  # type: ignore[assignment]
    async with app.run_test(size=COMMON) as pilot:
        screen = await open_results(pilot)
        runs_pane, title = screen.query_one("#runs-pane"), screen.query_one("#results-title", Static)
        assert not runs_pane.display and isinstance(app.focused, Tabs)  # the hidden list gave its focus away
        await pilot.press("right_square_bracket")
        await loaded(pilot)
        assert str(title.render()) == "run_20261123-101500 · running · 1/3 collected"
        await pilot.press("left_square_bracket", "left_square_bracket")  # the first run stays the first
        await loaded(pilot)
        assert str(title.render()).startswith("run_20261124-093000 · completed")
        await pilot.resize_terminal(*SIZE)
        await settle(pilot)
        assert runs_pane.display and "right_square_bracket" not in screen.active_bindings
        source.runs = lambda: asyncio.sleep(0, demo_runs()[:1])  # type: ignore[method-assign]
        await pilot.press("r")
        await loaded(pilot)
        assert not runs_pane.display and "right_square_bracket" not in screen.active_bindings


async def test_performance_tab_marks_the_strategy_the_model_misses() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_results(pilot)
        await show_tab(pilot, "performance-tab")
        table, what_if = screen.query_one("#performance", DataTable), screen.query_one("#what-if", DataTable)
        assert table.row_count == 3 and what_if.row_count == 3 and len(what_if.columns) == 9
        ratios = [table.get_row_at(row)[RATIO] for row in range(table.row_count)]
        assert [r.plain for r in ratios] == ["0.93x", "1.24x", "0.47x"]
        assert [str(r.style) for r in ratios] == ["", "", WARNING]  # PP: under half the predicted tokens/s
        assert table.get_row_at(2)[BOTTLENECK].plain == "memory bandwidth"
        assert not screen.query_one("#performance-reason", Static).display
        screen.query_one("#runs", DataTable).move_cursor(row=1)  # running: no analysis
        await loaded(pilot)
        reason = screen.query_one("#performance-reason", Static)
        assert reason.display and not screen.query_one("#performance-body").display
        assert str(reason.render()).startswith("no prediction: /srv/cockpit/models/tiny/config.json")
        screen._performance(None)
        assert str(reason.render()) == NO_PERFORMANCE


def test_performance_cells_mark_oversubscription_and_skipped_strategies() -> None:
    performance = demo_performance(["tiny_pp1_tp1_n1", "tiny_pp1_tp2_n2", "tiny_pp2_tp1_n2"])
    assert not isinstance(performance, str)
    row = performance.table().to_dict(orient="records")[1] | {"oversubscribed": True, "ratio": float("nan")}
    cells = performance_cells(row)
    assert [c.plain for c in cells[1:]] == [
        "35.6",
        "44.1",
        "—",
        "290.0",
        "270.0",
        "38",
        "52/31/17",
        "link latency ⚠ oversubscribed",
    ]
    assert [str(s.style) for s in cells[BOTTLENECK].spans] == [WARNING]
    skipped = replace(performance, skipped=["tiny_pp4_tp1_n4: no prediction, its ranks did not time their send_recv"])
    assert bottleneck_lines(skipped).row_count == 4


def test_diff_text() -> None:
    text = marked("the cat sat", 4)
    assert text.plain == "the cat sat"
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [(4, 11, "reverse red")]
    assert marked("the", 3).plain == "the∎ ends here"  # the shorter text ends where the other goes on
    assert marked("same", None).spans == []
    pair = CompletionPair("tp", "2k", 0, "a b", "a c", False, 1, 2)
    assert divergence_line(pair) == "first divergence at token 1, character 2"
    assert divergence_line(replace(pair, first_divergence=None, divergence_char=None)) == "identical"
    assert divergence_line(replace(pair, first_divergence=None)) == "tokens identical, character 2"


async def test_a_fake_out_of_memory_reference_shows_the_majority_it_was_judged_by() -> None:
    app = fake_app()
    source: DemoSource = app.source  # type: ignore[assignment]
    rows, metrics = fake_out_of_memory_run()
    no_baseline = pd.DataFrame(columns=["prompt_id", "variant", "local_completion"])
    reference = choose_reference(rows, no_baseline, fate="the single-device run failed: OUT_OF_MEMORY")

    async def failed(run_dir: Path) -> RunResults:
        return run_results(run_dir, score_rows(rows, metrics, no_baseline, run_dir.name, None, reference), {})

    source.results = failed  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_results(pilot)
        assert screen.query_one("#summary", DataTable).row_count == 3
        shown = str(screen.query_one("#completions-reference", Static).render())
        assert shown == reference.sentence and "the strategies' majority" in shown
        assert screen.query_one("#completions", DataTable).row_count == 12  # every strategy beside the majority
        await enter_on_row(pilot, "completions-tab", "#completions", 11)  # PP on the 4k prompt 1
        assert isinstance(app.screen, CompletionDiffScreen)
        assert (app.screen.pair.strategy, app.screen.pair.exact_match) == (PP, False)
        assert app.screen.query(".diff-pane").first().border_title == "reference: the strategies' majority"
